"""Safe by default: no API keys unless configured, protected mode (loopback
clients only) while there are none, CurveZMQ encryption and server
authentication, and clients that send no key unless given one.

Everything runs on loopback against the real server; the test of a refused
non-loopback client runs in a network namespace it creates (netns_probe.py).
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest
import zmq

from conftest import BUILD, ROOT, SANITIZED, SANITIZER_MARKS, SERVER, unique
from wire import decode, encode, rand

TEST_CLIENT = os.path.join(BUILD, "faiss-proxy-test-client")
PROGRAM_C = os.path.join(BUILD, "program_c")
# An ASan-built library cannot be loaded into a Python without the ASan
# runtime (see test_python.py): the Python package uses the release build.
PY_LIB = os.path.join(os.path.join(ROOT, "build") if SANITIZED else BUILD, "libfaissproxy.so")
NO_REPLY_MS = 1500


def clean_env(**kv):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAISS_")}
    env.update(kv)
    return env


def keygen(path):
    r = subprocess.run([SERVER, "--curve-keygen", str(path)], capture_output=True, text=True,
                       timeout=60, env=clean_env())
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith("server public key: ")][0]
    return line.split(": ", 1)[1]


@pytest.fixture(scope="module")
def curve_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    public = keygen(d / "server.key")
    other = keygen(d / "other.key")
    return {"file": str(d / "server.key"), "pub": str(d / "server.key.pub"), "public": public,
            "other_public": other}


@pytest.fixture(scope="module")
def curve_server(tmp_path_factory, curve_keys):
    d = str(tmp_path_factory.mktemp("fpx")) + "/data"
    from conftest import Server
    s = Server(d, "", ["--curve-secret-key-file", curve_keys["file"]]).start()
    yield s
    s.stop()


def curve_client(endpoint, server_public, socktype=zmq.REQ, timeout_ms=120_000):
    """A pyzmq socket with CurveZMQ client keys of its own: independent of libfaissproxy."""
    sock = zmq.Context.instance().socket(socktype)
    pub, sec = zmq.curve_keypair()
    if server_public is not None:
        sock.curve_serverkey = server_public.encode()
        sock.curve_publickey = pub
        sock.curve_secretkey = sec
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def no_reply(sock, body):
    """True when a request gets no reply within NO_REPLY_MS."""
    sock.send(body)
    return sock.poll(NO_REPLY_MS, zmq.POLLIN) == 0


def run_test_client(endpoint, *args, env=None, timeout_ms=None):
    cmd = [TEST_CLIENT, "--server", endpoint, "--count", "50", "--dim", "8"] + list(args)
    if timeout_ms:
        cmd += ["--timeout-ms", str(timeout_ms)]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env=env if env is not None else clean_env())
    for mark in SANITIZER_MARKS:
        assert mark not in r.stderr, r.stderr
    return r, time.time() - t0


# ---- defaults and the start-up line -----------------------------------------------------


def test_startup_line_says_the_mode(make_server, tmp_path, curve_keys):
    def line(s):
        return [l for l in s.log().splitlines() if "listening on" in l][0]

    l = line(make_server(api_keys=None))
    assert " info " in l and "auth off, protected mode: loopback clients only" in l
    assert "transport plain (unencrypted)" in l
    l = line(make_server(api_keys=None, extra=["--allow-remote-unauthenticated"]))
    assert " warn " in l and "auth off, open to every address" in l
    l = line(make_server(api_keys="a:b"))
    assert "auth on (1 tenants)" in l and "protected" not in l
    l = line(make_server(extra=["--curve-secret-key-file", curve_keys["file"]]))
    assert "transport CurveZMQ, server public key %s" % curve_keys["public"] in l


def test_allow_remote_env_and_bad_values(make_server, tmp_path):
    env_on = clean_env(FAISS_PROXY_ALLOW_REMOTE_UNAUTHENTICATED="1", FAISS_PORT="0",
                       FAISS_BIND_ADDRESS="127.0.0.1", FAISS_DATA_DIR=str(tmp_path / "d"))
    proc = subprocess.Popen([SERVER], env=env_on, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        assert "open to every address" in first, first
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    for bad in ("yes", "2", "true"):
        r = subprocess.run([SERVER, "--data-dir", str(tmp_path / "d")], capture_output=True,
                           text=True, timeout=60,
                           env=clean_env(FAISS_PORT="0",
                                         FAISS_PROXY_ALLOW_REMOTE_UNAUTHENTICATED=bad))
        assert r.returncode == 2 and "FAISS_PROXY_ALLOW_REMOTE_UNAUTHENTICATED" in r.stderr


def test_clients_send_no_key_unless_told(make_server, tmp_path):
    """The server's old demo key key1 is configured here on purpose: the test client,
    the FAISS C API drop-in and the Python drop-in used to send it unasked."""
    s = make_server(api_keys="key1:tenant1")
    r, _ = run_test_client(s.endpoint)
    assert r.returncode == 1 and "authentication_error" in r.stderr, r.stdout + r.stderr
    r, _ = run_test_client(s.endpoint, env=clean_env(FAISS_PROXY_API_KEY="key1"))
    assert r.returncode == 0, r.stdout + r.stderr
    # libfaiss_c: a program written against FAISS's C API
    assert os.path.exists(PROGRAM_C)
    (tmp_path / "meta.txt").write_text("10 2 4\n")
    rand(10, 4, 1).tofile(tmp_path / "xb.bin")
    rand(2, 4, 2).tofile(tmp_path / "xq.bin")
    r = subprocess.run([PROGRAM_C, str(tmp_path)], capture_output=True, text=True, timeout=120,
                       env=clean_env(FAISS_PROXY_SERVER=s.endpoint))
    assert r.returncode == 1 and "missing api_key" in r.stderr, r.stdout + r.stderr
    r = subprocess.run([PROGRAM_C, str(tmp_path)], capture_output=True, text=True, timeout=120,
                       env=clean_env(FAISS_PROXY_SERVER=s.endpoint, FAISS_PROXY_API_KEY="key1"))
    assert "flat ntotal 10" in r.stdout and "api_key" not in r.stderr, r.stdout + r.stderr
    # the Python drop-in
    code = ("import faissproxy as faiss\n"
            "try:\n"
            "    faiss.IndexFlatL2(4)\n"
            "except faiss._lib.ServerError as e:\n"
            "    print(e.error_type)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=clean_env(FAISS_PROXY_SERVER=s.endpoint, FAISS_PROXY_LIB=PY_LIB,
                                     PYTHONPATH=os.path.join(ROOT, "python")))
    assert r.stdout.strip() == "authentication_error", r.stdout + r.stderr


# ---- CurveZMQ ----------------------------------------------------------------------------


def test_keygen_files(tmp_path):
    public = keygen(tmp_path / "k")
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "k.pub").st_mode) == 0o644
    assert "secret-key" not in (tmp_path / "k.pub").read_text()
    assert public in (tmp_path / "k.pub").read_text()
    assert len(public) == 40
    before = (tmp_path / "k").read_bytes()
    r = subprocess.run([SERVER, "--curve-keygen", str(tmp_path / "k")], capture_output=True,
                       text=True, timeout=60, env=clean_env())
    assert r.returncode == 2 and "exists" in r.stderr
    assert (tmp_path / "k").read_bytes() == before


def _bad_key_files(tmp_path, curve_keys):
    good = open(curve_keys["file"]).read()
    cases = {}

    def put(name, text, mode=0o600):
        p = tmp_path / name
        p.write_text(text)
        os.chmod(p, mode)
        cases[name] = str(p)

    put("group_readable", good, 0o640)
    put("world_readable", good, 0o604)
    put("malformed", good.replace('secret-key = "', 'secret-key = "x'))
    put("empty", "")
    put("public_only", open(curve_keys["pub"]).read())
    put("mismatched", good.replace(curve_keys["public"], curve_keys["other_public"]))
    cases["missing"] = str(tmp_path / "nothing-here")
    cases["directory"] = str(tmp_path)
    return cases


@pytest.mark.parametrize("case", ["group_readable", "world_readable", "malformed", "empty",
                                  "public_only", "mismatched", "missing", "directory"])
def test_bad_key_file_refuses_start(tmp_path, curve_keys, case):
    path = _bad_key_files(tmp_path, curve_keys)[case]
    for args, env in ((["--curve-secret-key-file", path], {}),
                      ([], {"FAISS_PROXY_CURVE_SECRET_KEY_FILE": path})):
        r = subprocess.run([SERVER, "--port", "0", "--data-dir", str(tmp_path / "d")] + args,
                           capture_output=True, text=True, timeout=60, env=clean_env(**env))
        assert r.returncode == 2, r.stderr
        assert "--curve-secret-key-file" in r.stderr and path in r.stderr, r.stderr
        assert "listening" not in r.stdout + r.stderr
        assert not (tmp_path / "d").exists()


def test_curve_right_key_works(curve_server, curve_keys):
    # the test client (libfaissproxy): create, add, search finds each vector itself
    for args, env in ((["--server-key", curve_keys["pub"]], clean_env()),
                      (["--server-key", curve_keys["public"]], clean_env()),
                      ([], clean_env(FAISS_PROXY_SERVER_KEY=curve_keys["pub"])),
                      ([], clean_env(FAISS_PROXY_SERVER_KEY=curve_keys["public"]))):
        r, _ = run_test_client(curve_server.endpoint, *args, env=env)
        assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
    # an independent CurveZMQ client (pyzmq): exact results of a flat index
    sock = curve_client(curve_server.endpoint, curve_keys["public"])
    name = unique("curve")
    x = rand(20, 4, 7)

    def call(h, data=b"", meta=None):
        sock.send(encode(h, data, meta))
        return decode(sock.recv())

    assert call({"operation": "create_index", "index_id": name, "dimension": 4})[0][
        "status"] == "ok"
    h, _, _ = call({"operation": "add_vectors", "index_id": name, "vector_shape": [20, 4]},
                   x.tobytes())
    assert h["status"] == "ok"
    h, data, _ = call({"operation": "search", "index_id": name, "k": 1,
                       "vector_shape": [3, 4]}, x[5:8].tobytes())
    import numpy as np
    labels = np.frombuffer(data[12:], dtype="int64")
    assert h["status"] == "ok" and list(labels) == [5, 6, 7]
    sock.close(0)


def test_curve_python_drop_in(curve_server, curve_keys):
    code = ("import numpy as np, faissproxy as faiss\n"
            "x = np.eye(4, dtype='float32')\n"
            "i = faiss.IndexFlatL2(4); i.add(x)\n"
            "print(i.search(x, 1)[1].ravel().tolist())\n")
    base = dict(FAISS_PROXY_SERVER=curve_server.endpoint, FAISS_PROXY_LIB=PY_LIB,
                PYTHONPATH=os.path.join(ROOT, "python"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=clean_env(FAISS_PROXY_SERVER_KEY=curve_keys["pub"], **base))
    assert r.returncode == 0 and r.stdout.strip() == "[0, 1, 2, 3]", r.stdout + r.stderr
    code2 = code.replace("import numpy as np, faissproxy as faiss\n",
                         "import numpy as np, faissproxy as faiss\n"
                         "faiss.configure(server_key=%r)\n" % curve_keys["public"])
    r = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True,
                       timeout=120, env=clean_env(**base))
    assert r.returncode == 0 and r.stdout.strip() == "[0, 1, 2, 3]", r.stdout + r.stderr


def test_curve_without_or_with_wrong_key_gets_no_answer(curve_server, curve_keys):
    # libfaissproxy, through the test client: a clear connection_error after the timeout
    for args, hint in (([], "plain connection"),
                       (["--server-key", curve_keys["other_public"]], "CurveZMQ")):
        r, took = run_test_client(curve_server.endpoint, *args, timeout_ms=NO_REPLY_MS)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "FAILED: ping: connection_error: no reply from %s within %d ms" % (
            curve_server.endpoint, NO_REPLY_MS) in r.stderr, r.stderr
        assert hint in r.stderr
        assert took < 60
    # the server's secret key file is refused as a client key: it does not belong there
    r, _ = run_test_client(curve_server.endpoint, "--server-key", curve_keys["file"])
    assert r.returncode == 2 and "holds a secret key" in r.stderr, r.stderr
    r, _ = run_test_client(curve_server.endpoint,
                           env=clean_env(FAISS_PROXY_SERVER_KEY="not-a-key-or-a-file"))
    assert r.returncode == 1 and "FAISS_PROXY_SERVER_KEY" in r.stderr, r.stderr
    # independent clients: plain REQ, CurveZMQ with another server's key
    body = encode({"operation": "ping"})
    for key in (None, curve_keys["other_public"]):
        sock = curve_client(curve_server.endpoint, key)
        assert no_reply(sock, body)
        sock.close(0)
    # the server kept serving a client that has the key
    sock = curve_client(curve_server.endpoint, curve_keys["public"])
    sock.send(body)
    assert decode(sock.recv())[0]["status"] == "ok"
    sock.close(0)
    assert curve_server.alive()


def test_curve_client_against_plain_server(server, curve_keys):
    """No fallback: a client told to expect a CurveZMQ server never talks plain text."""
    r, _ = run_test_client(server.endpoint, "--server-key", curve_keys["public"],
                           timeout_ms=NO_REPLY_MS)
    assert r.returncode == 1 and "connection_error: no reply" in r.stderr, r.stderr
    # and the plain server still serves plain clients, as before
    r, _ = run_test_client(server.endpoint)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- protected mode from another address, in a network namespace ------------------------


def _netns_unavailable():
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    for tool in ("unshare", "ip"):
        if not shutil.which(tool):
            return "%s is not installed" % tool
    r = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return "unshare --net is refused here: %s" % r.stderr.strip()
    return None


def test_protected_mode_refuses_other_addresses(tmp_path):
    why = _netns_unavailable()
    if why:
        pytest.skip(why)
    probe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netns_probe.py")
    r = subprocess.run(["unshare", "--net", sys.executable, probe, SERVER, str(tmp_path),
                        str(NO_REPLY_MS)],
                       capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for log in res["logs"]:
        for mark in SANITIZER_MARKS:
            assert mark not in log, log
    # no keys: loopback answered, the namespace's other address refused, logged once
    assert res["protected"]["loopback"] == "ok"
    assert res["protected"]["remote"] is None
    assert res["protected"]["remote_again"] == [None] * 5
    assert res["protected"]["remote_loopback_after"] == "ok"
    refusals = [l for l in res["logs"][0].splitlines()
                if "refused a connection from " + res["address"] in l]
    assert len(refusals) == 1, res["logs"][0]
    assert "--allow-remote-unauthenticated" in refusals[0]
    assert "FAISS_PROXY_API_KEYS" in refusals[0]
    # allowed by the operator: answered from the other address
    assert res["allowed"]["remote"] == "ok"
    # keys configured: no protected mode, the key decides
    assert res["keys"]["remote"] == "authentication_error"
    assert res["keys"]["remote_with_key"] == "ok"
    assert all(code == 0 for code in res["exit_codes"]), res
