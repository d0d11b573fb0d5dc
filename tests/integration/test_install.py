"""make install: into a temporary prefix (and under DESTDIR), then a C
program built with nothing but `pkg-config --cflags --libs` for each library
runs against the real server, the installed server starts, and the Python
package installs with pip (offline, into a virtualenv) and works from any
directory."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import BUILD, ROOT, SANITIZED

pytestmark = pytest.mark.skipif(SANITIZED, reason="installs the release build")

CLIENT_PROGRAM = r"""
#include <faissproxy/client.h>
#include <stdio.h>
int main(int argc, char **argv) {
    fpx_client *c = fpx_client_new(argv[1], NULL, NULL);
    float x[8] = {0, 0, 1, 1, 2, 2, 3, 3}, q[2] = {2.1f, 2.1f}, d[2];
    int64_t l[2];
    if (!c || fpx_client_ping(c) || fpx_client_create_index(c, "installed", 2, "Flat", "L2", NULL) ||
        fpx_client_add(c, "installed", 4, 2, x, NULL, NULL, NULL) ||
        fpx_client_search(c, "installed", 1, 2, q, 2, NULL, d, l)) {
        fprintf(stderr, "%s\n", c ? fpx_client_errstr(c) : "no client");
        return 1;
    }
    printf("%lld %lld\n", (long long)l[0], (long long)l[1]);
    fpx_client_delete_index(c, "installed");
    fpx_client_free(c);
    return 0;
}
"""

FAISS_C_PROGRAM = r"""
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/error_c.h>
#include <stdio.h>
int main(void) {
    FaissIndex *ix = NULL;
    float x[8] = {0, 0, 1, 1, 2, 2, 3, 3}, q[2] = {0.9f, 0.9f}, d[2];
    idx_t l[2];
    if (faiss_index_factory(&ix, 2, "Flat", METRIC_L2) || faiss_Index_add(ix, 4, x) ||
        faiss_Index_search(ix, 1, q, 2, d, l)) {
        fprintf(stderr, "%s\n", faiss_get_last_error());
        return 1;
    }
    printf("%lld %lld\n", (long long)l[0], (long long)l[1]);
    faiss_Index_free(ix);
    return 0;
}
"""


def _run(args, **kw):
    p = subprocess.run(args, capture_output=True, timeout=600, **kw)
    assert p.returncode == 0, (args, p.stdout.decode()[-3000:], p.stderr.decode()[-3000:])
    return p.stdout.decode()


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    pre = str(tmp_path_factory.mktemp("prefix") / "usr")
    _run(["cmake", "--install", BUILD, "--prefix", pre])
    return pre


def _pkg(prefix, name, *what):
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
    return _run(["pkg-config"] + list(what) + [name], env=env).split()


def test_files_in_place(prefix):
    for f in ("bin/faiss-proxy-server", "bin/faiss-proxy-test-client", "bin/faiss-proxy",
              "share/man/man1/faiss-proxy.1", "include/faissproxy/client.h",
              "include/faiss-proxy/faiss/c_api/Index_c.h", "lib/faiss-proxy/libfaiss_c.so",
              "lib/pkgconfig/faissproxy.pc", "lib/pkgconfig/faiss-proxy-c.pc",
              "share/man/man1/faiss-proxy-server.1", "lib/systemd/system/faiss-proxy.service"):
        assert os.path.exists(os.path.join(prefix, f)), f
    # sonames: the versioned file, the soname link and the development link
    lib = os.path.join(prefix, "lib")
    assert os.path.islink(os.path.join(lib, "libfaissproxy.so"))
    assert os.path.realpath(os.path.join(lib, "libfaissproxy.so.0")).endswith(".so.0.1.0")
    out = _run(["objdump", "-p", os.path.join(lib, "libfaissproxy.so")])
    assert "SONAME               libfaissproxy.so.0" in out
    unit = open(os.path.join(prefix, "lib/systemd/system/faiss-proxy.service")).read()
    assert "ExecStart=%s/bin/faiss-proxy-server\n" % prefix in unit
    assert "DynamicUser=yes" in unit and "ProtectSystem=strict" in unit
    if shutil.which("man"):
        page = _run(["man", "-l", os.path.join(prefix, "share/man/man1/faiss-proxy-server.1")],
                    env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0"))
        page = re.sub(".\x08", "", page).replace("\u2010", "-")  # no overstrikes
        assert "--compact-min-dead" in page


def test_c_programs_built_with_pkg_config(prefix, server, tmp_path):
    src = tmp_path / "client.c"
    src.write_text(CLIENT_PROGRAM)
    exe = str(tmp_path / "client")
    _run(["cc", "-std=c11", "-Wall", "-Werror", str(src), "-o", exe]
         + _pkg(prefix, "faissproxy", "--cflags", "--libs"))
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(prefix, "lib"))
    assert _run([exe, server.endpoint], env=env).split() == ["2", "3"]

    src = tmp_path / "faiss_c.c"
    src.write_text(FAISS_C_PROGRAM)
    exe = str(tmp_path / "faiss_c")
    _run(["cc", "-std=c11", "-Wall", "-Werror", str(src), "-o", exe]
         + _pkg(prefix, "faiss-proxy-c", "--cflags", "--libs"))
    # no LD_LIBRARY_PATH: the .pc's rpath finds libfaiss_c, whose own finds libfaissproxy
    env = dict(os.environ, FAISS_PROXY_SERVER=server.endpoint)
    env.pop("LD_LIBRARY_PATH", None)
    assert _run([exe], env=env).split() == ["1", "0"]


def test_installed_server_and_test_client_run(prefix, tmp_path):
    p = subprocess.Popen([os.path.join(prefix, "bin", "faiss-proxy-server"), "--bind", "127.0.0.1",
                          "--port", "0", "--data-dir", str(tmp_path / "data")],
                         stderr=subprocess.PIPE)
    try:
        endpoint = None
        for line in p.stderr:
            line = line.decode()
            if "listening on" in line:
                endpoint = line.split("listening on ")[1].split(",")[0].replace("0.0.0.0",
                                                                                "127.0.0.1")
                break
        assert endpoint and endpoint.startswith("tcp://127.0.0.1:")
        out = _run([os.path.join(prefix, "bin", "faiss-proxy-test-client"), "--server", endpoint,
                    "--count", "50", "--dim", "8"])
        assert out.strip().endswith("OK")
        # the installed CLI finds the installed libfaissproxy through its rpath
        env = dict(os.environ)
        env.pop("LD_LIBRARY_PATH", None)
        out = _run([os.path.join(prefix, "bin", "faiss-proxy"), "--server", endpoint, "ping"],
                   env=env)
        assert out.startswith("pong from " + endpoint)
    finally:
        p.terminate()
        p.wait(timeout=60)


def test_destdir(tmp_path):
    dest = tmp_path / "stage"
    env = dict(os.environ, DESTDIR=str(dest))
    _run(["cmake", "--install", BUILD, "--prefix", "/opt/fpx"], env=env)
    assert (dest / "opt/fpx/bin/faiss-proxy-server").exists()
    assert (dest / "opt/fpx/lib/systemd/system/faiss-proxy.service").exists()
    unit = (dest / "opt/fpx/lib/systemd/system/faiss-proxy.service").read_text()
    assert "ExecStart=/opt/fpx/bin/faiss-proxy-server\n" in unit
    assert not os.path.exists("/opt/fpx")


def test_python_package_installs_with_pip(prefix, server, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    py = str(venv / "bin" / "python")
    src = tmp_path / "python"  # pip builds in the source folder: a copy keeps the tree clean
    shutil.copytree(os.path.join(ROOT, "python"), str(src),
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    _run([py, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--quiet", str(src)],
         cwd=str(tmp_path))
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(prefix, "lib"),
               FAISS_PROXY_SERVER=server.endpoint)
    for k in ("PYTHONPATH", "FPX_BUILD_DIR", "FAISS_PROXY_LIB"):
        env.pop(k, None)
    code = ("import faissproxy, numpy as np, os\n"
            "assert os.path.dirname(faissproxy.__file__).startswith(%r)\n"
            "ix = faissproxy.IndexFlatL2(2)\n"
            "ix.add(np.array([[0, 0], [1, 1], [2, 2]], dtype='float32'))\n"
            "D, I = ix.search(np.array([[1.9, 1.9]], dtype='float32'), 2)\n"
            "print(I.tolist(), faissproxy._lib._find_library())\n") % str(venv)
    out = _run([py, "-c", code], env=env, cwd=str(tmp_path))
    assert out.startswith("[[2, 1]] ")
    assert "libfaissproxy.so" in out  # the installed library, found by its soname
