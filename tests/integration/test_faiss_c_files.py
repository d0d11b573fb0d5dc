"""libfaiss_c's faiss_write_index_fname writes a temporary file and renames it
over the target: a write that fails (here: the disk fills up) leaves the old
file byte for byte and no temporary behind; one that succeeds replaces it
with what FAISS reads back."""
import os
import subprocess

import faiss
import numpy as np
import pytest

from conftest import BUILD, ROOT, SANITIZED

# The program is compiled here, plainly: it cannot load a sanitized libfaiss_c.
pytestmark = pytest.mark.skipif(SANITIZED, reason="links the release build's libfaiss_c")

PROGRAM = r"""
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    float *x = malloc(sizeof(float) * 64 * (size_t)n);
    for (long i = 0; i < 64 * n; i++)
        x[i] = (float)(i % 997) / 997.0f;
    FaissIndex *ix = NULL;
    if (faiss_index_factory(&ix, 64, "Flat", METRIC_L2) || faiss_Index_add(ix, n, x)) {
        fprintf(stderr, "setup: %s\n", faiss_get_last_error());
        return 2;
    }
    int rc = faiss_write_index_fname(ix, argv[1]);
    printf("%d %s\n", rc, rc ? faiss_get_last_error() : "");
    faiss_Index_free(ix);
    free(x);
    return 0;
}
"""


def test_write_index_fname_is_all_or_nothing(server, small_disk, tmp_path):
    src = tmp_path / "w.c"
    src.write_text(PROGRAM)
    exe = str(tmp_path / "w")
    subprocess.run(["cc", "-std=c11", "-I", os.path.join(ROOT, "include", "faiss-c"), str(src),
                    "-o", exe, "-L", BUILD, "-Wl,-rpath," + BUILD, "-lfaiss_c"], check=True)
    env = dict(os.environ, FAISS_PROXY_SERVER=server.endpoint)
    target = os.path.join(small_disk, "index.faiss")
    old = os.urandom(300000)
    with open(target, "wb") as f:
        f.write(old)

    def write(n):
        p = subprocess.run([exe, target, str(n)], env=env, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout.decode()

    out = write(20000)  # 5 MB: the 3 MiB disk is full long before
    assert not out.startswith("0 "), out
    assert "cannot write" in out
    with open(target, "rb") as f:
        assert f.read() == old
    assert os.listdir(small_disk) == ["index.faiss"]  # no temporary left

    assert write(100) == "0 \n"
    got = faiss.read_index(target)
    x = (np.arange(64 * 100) % 997 / 997.0).astype("float32").reshape(100, 64)
    assert got.ntotal == 100
    np.testing.assert_array_equal(got.reconstruct_n(0, 100), x)
    assert os.listdir(small_disk) == ["index.faiss"]
