"""Configuration: the seed's environment variables, flags that override them,
--help and --version, refusal of bad values, the start-up line, and a clean
exit on SIGINT and SIGTERM."""
import os
import re
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from conftest import SANITIZED, SERVER, START_TIMEOUT, SANITIZER_MARKS
from wire import Client


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def clean_env(**kv):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAISS_",))}
    env.update(kv)
    return env


def start(args, env, log):
    proc = subprocess.Popen([SERVER] + args, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline:
        with open(log.name) as f:
            text = f.read()
        if "listening on" in text:
            return proc, text
        if proc.poll() is not None:
            raise AssertionError("server exited: " + text)
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not start")


def stop(proc, log, sig=signal.SIGTERM):
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 0
    with open(log.name) as f:
        text = f.read()
    for mark in SANITIZER_MARKS:
        assert mark not in text, text
    return text


def test_env_vars(tmp_path):
    port = free_port()
    data = tmp_path / "envdata"
    env = clean_env(FAISS_BIND_ADDRESS="127.0.0.1", FAISS_PORT=str(port),
                    FAISS_DATA_DIR=str(data), FAISS_PROXY_API_KEYS="secret:team")
    with open(tmp_path / "log", "w") as log:
        proc, text = start([], env, log)
        lines = [l for l in text.splitlines() if "listening on" in l]
        assert len(lines) == 1
        assert "tcp://127.0.0.1:%d" % port in lines[0]
        assert str(data) in lines[0] and "auth on" in lines[0]
        c = Client("tcp://127.0.0.1:%d" % port, "secret")
        c.create("i1", 2)
        c.close()
        assert (data / "team" / "i1").is_dir()
        text = stop(proc, log, signal.SIGINT)


def test_flags_override_env(tmp_path):
    port, other = free_port(), free_port()
    data = tmp_path / "flagdata"
    env = clean_env(FAISS_BIND_ADDRESS="127.0.0.1", FAISS_PORT=str(other),
                    FAISS_DATA_DIR=str(tmp_path / "unused"), FAISS_PROXY_API_KEYS="a:b")
    with open(tmp_path / "log", "w") as log:
        proc, text = start(["--port", str(port), "--data-dir", str(data), "--api-keys", ""],
                           env, log)
        assert "tcp://127.0.0.1:%d" % port in text and "auth off" in text
        c = Client("tcp://127.0.0.1:%d" % port)
        c.create("i1", 2)
        c.close()
        assert (data / "default" / "i1").is_dir()
        assert not (tmp_path / "unused").exists()
        stop(proc, log)


def test_help_and_version():
    r = subprocess.run([SERVER, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for word in ("FAISS_BIND_ADDRESS", "FAISS_PORT", "FAISS_DATA_DIR", "FAISS_PROXY_API_KEYS",
                 "--port", "--data-dir", "--api-keys"):
        assert word in r.stdout
    r = subprocess.run([SERVER, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and re.search(r"\d+\.\d+\.\d+", r.stdout)


@pytest.mark.parametrize("args,env", [
    (["--port", "70000"], {}),
    (["--port", "abc"], {}),
    (["--workers", "0"], {}),
    (["--max-message-size", "10"], {}),
    (["--api-keys", "nocolon"], {}),
    (["--api-keys", "k:../etc"], {}),
    (["--bogus"], {}),
    (["extra-arg"], {}),
    ([], {"FAISS_PORT": "-1"}),
    ([], {"FAISS_PROXY_WORKERS": "many"}),
    (["--replace-after", "-1"], {}),
    ([], {"FAISS_PROXY_REPLACE_AFTER": "soon"}),
])
def test_bad_settings_refused(tmp_path, args, env):
    r = subprocess.run([SERVER, "--data-dir", str(tmp_path / "d")] + args,
                       env=clean_env(**dict({"FAISS_PORT": "0"}, **env)), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert r.stderr.strip()


def test_port_in_use(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = subprocess.run([SERVER, "--bind", "127.0.0.1", "--port", str(port), "--data-dir",
                            str(tmp_path / "d"), "--api-keys", ""], env=clean_env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "bind" in r.stderr
    finally:
        s.close()


def thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return re.search(r"\[(\w+)\]", f.read()).group(1)
    except (OSError, AttributeError):
        return "never"


def huge_kb(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        return int(re.search(r"AnonHugePages:\s+(\d+) kB", f.read()).group(1))


def test_server_starts_itself_again_asking_for_huge_pages(tmp_path):
    """glibc reads its tunables only at start: the server starts itself again
    once with glibc.malloc.hugetlb=1 in GLIBC_TUNABLES, as the same process
    under its own name."""
    env = clean_env()
    env.pop("GLIBC_TUNABLES", None)
    with open(tmp_path / "log", "w") as log:
        proc, text = start(["--bind", "127.0.0.1", "--port", "0", "--data-dir",
                            str(tmp_path / "data")], env, log)
        try:
            with open("/proc/%d/environ" % proc.pid, "rb") as f:
                assert b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in f.read().split(b"\0")
            with open("/proc/%d/comm" % proc.pid) as f:
                assert f.read().strip() == os.path.basename(SERVER)[:15]
            assert text.count("listening on") == 1
        finally:
            stop(proc, log)


@pytest.mark.skipif(SANITIZED, reason="the sanitizers' allocator is not glibc's malloc")
@pytest.mark.skipif(thp_mode() == "never", reason="transparent huge pages are off here")
@pytest.mark.parametrize("given, huge", [
    (None, True),
    ("glibc.malloc.arena_max=4", True),  # the tunable is added to the others
    ("glibc.malloc.hugetlb=0", False),   # named already: kept, here turning it off
])
def test_large_buffers_in_huge_pages(tmp_path, given, huge):
    """A request of several MB and the index it grows are held in transparent
    huge pages, unless GLIBC_TUNABLES says otherwise."""
    if not huge and thp_mode() == "always":
        pytest.skip("every mapping may get huge pages here")
    env = clean_env()
    env.pop("GLIBC_TUNABLES", None)
    if given is not None:
        env["GLIBC_TUNABLES"] = given
    with open(tmp_path / "log", "w") as log:
        proc, text = start(["--bind", "127.0.0.1", "--port", "0", "--data-dir",
                            str(tmp_path / "data")], env, log)
        try:
            port = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", text).group(1)
            c = Client("tcp://127.0.0.1:%s" % port)
            c.create("big", 128)
            rng = np.random.default_rng(3)
            for _ in range(4):
                c.add("big", rng.random((16384, 128), dtype="float32"))  # 8 MB each
            c.close()
            kb = huge_kb(proc.pid)
            assert (kb >= 2048) if huge else (kb == 0), kb
        finally:
            stop(proc, log)
