"""The transport: the preamble's three sizes, and messages over the size limit
(refused by the C client and the Python package before sending; dropped by the
server's transport without harm to any other connection)."""
import os
import resource
import subprocess
import sys

import msgpack
import pytest

import conftest
from wire import dealer, dealer_recv, dealer_send

PING = msgpack.packb({"operation": "ping"})
# An ASan-built library cannot be loaded into a Python not started with the
# ASan runtime: the Python package uses the release build's library.
PY_LIB = os.path.join(conftest.ROOT, "build", "libfaissproxy.so") if conftest.SANITIZED \
    else os.path.join(conftest.BUILD, "libfaissproxy.so")
SIZES = ("header_size", "vector_size", "metadata_size")


def preamble(**sizes):
    return msgpack.packb(sizes)


PARTIAL_PREAMBLES = {
    "header_size only": preamble(header_size=len(PING)),
    "no metadata_size": preamble(header_size=len(PING), vector_size=0),
    "no vector_size": preamble(header_size=len(PING), metadata_size=0),
    "a fourth key": preamble(header_size=len(PING), vector_size=0, metadata_size=0, crc=0),
    "a size under another name": preamble(header_size=len(PING), vector_size=0, meta_size=0),
}


@pytest.mark.parametrize("name", list(PARTIAL_PREAMBLES))
def test_preamble_needs_exactly_the_three_sizes(client, name):
    h, d, m = client.raw(PARTIAL_PREAMBLES[name] + PING)
    assert h["status"] == "error" and h["error_type"] == "protocol_error", h
    assert "preamble" in h["message"] and d == b"" and m is None
    # the same body with the contract's preamble is answered normally
    h, _, m = client.raw(preamble(header_size=len(PING), vector_size=0, metadata_size=0) + PING)
    assert h["status"] == "ok" and m["protocol"] == 1


def test_any_order_and_encoding_of_the_sizes(client):
    # keys in another order, sizes as uint64: still the contract's map
    pre = b"\x83" + b"".join(msgpack.packb(k) + b"\xcf" + (len(PING) if k == "header_size" else 0)
                             .to_bytes(8, "big") for k in reversed(SIZES))
    h, _, m = client.raw(pre + PING)
    assert h["status"] == "ok" and m["protocol"] == 1


def test_server_replies_carry_the_three_sizes(server):
    sock = dealer(server.endpoint)
    try:
        dealer_send(sock, preamble(header_size=len(PING), vector_size=0, metadata_size=0) + PING)
        frames = sock.recv_multipart()
        u = msgpack.Unpacker(raw=False)
        u.feed(frames[1])
        assert sorted(u.unpack()) == sorted(SIZES)
        dealer_send(sock, b"\x80" + PING)  # an error reply too
        frames = sock.recv_multipart()
        u = msgpack.Unpacker(raw=False)
        u.feed(frames[1])
        assert sorted(u.unpack()) == sorted(SIZES)
    finally:
        sock.close(0)


def open_files_limits(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    raise AssertionError("no open files line in /proc/%d/limits" % pid)


def test_open_files_soft_limit_is_raised_to_the_hard_limit(make_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the server
    try:
        s = make_server(extra=["--verbose"])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    want = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    assert open_files_limits(s.proc.pid) == (want, want)
    assert "open files limit: %s" % want in s.log()
    assert s.client().ping()["protocol"] == 1


# ---- messages over the size limit ------------------------------------------------

LIMIT = 65536


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    s = conftest.Server(str(tmp_path_factory.mktemp("fpx")) + "/data", "",
                        ["--max-message-size", str(LIMIT)]).start()
    yield s
    s.stop()


def test_ping_advertises_the_limit(small_server, server):
    assert small_server.client().ping()["max_message_size"] == LIMIT
    assert server.client().ping()["max_message_size"] == 256 << 20


def test_c_client_refuses_oversized_requests(small_server):
    r = subprocess.run([os.path.join(conftest.BUILD, "test_client_limits"),
                        small_server.endpoint, str(LIMIT)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert small_server.client().ping()["protocol"] == 1


def test_python_package_splits_oversized_adds(small_server):
    """An add over the limit goes in parts; one vector over it is refused by
    name, unsent."""
    env = dict(os.environ, FAISS_PROXY_LIB=PY_LIB,
               PYTHONPATH=os.path.join(conftest.ROOT, "python"))
    code = (
        "import numpy as np, faissproxy as faiss\n"
        "faiss.configure(server=%r, api_key='', timeout=20)\n"
        "index = faiss.IndexFlatL2(64)\n"
        "x = np.ones((%d, 64), dtype='float32')\n"
        "index.add(x)\n"
        "assert index.ntotal == len(x), index.ntotal\n"
        "wide = faiss.IndexFlatL2(%d)\n"
        "try:\n"
        "    wide.add(np.ones((1, wide.d), dtype='float32'))\n"
        "except RuntimeError as e:\n"
        "    assert e.error_type == 'limit_exceeded', e\n"
        "    assert 'max_message_size' in str(e), e\n"
        "    print('refused:', e)\n"
        "else:\n"
        "    raise SystemExit('a vector over the limit was not refused')\n"
        "assert wide.ntotal == 0\n"
        % (small_server.endpoint, 3 * LIMIT // 256 + 1, LIMIT // 4 + 1))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "refused: " in r.stdout


def test_oversized_message_drops_only_its_connection(small_server):
    """What the transport cannot answer: a message over the limit closes the
    connection that sent it (ZMQ_MAXMSGSIZE), unanswered; the server keeps
    serving every other client, and that client's socket reconnects."""
    other = small_server.client()
    other.create("survivor", 4)
    sock = dealer(small_server.endpoint)
    try:
        dealer_send(sock, preamble(header_size=len(PING), vector_size=0, metadata_size=0) + PING)
        assert dealer_recv(sock)[0]["status"] == "ok"  # connected
        big = b"\x00" * (LIMIT + 1)
        dealer_send(sock, big)
        assert other.info("survivor")["ntotal"] == 0
        assert other.ping()["protocol"] == 1
        # the dropped socket reconnects by itself and is served again
        dealer_send(sock, preamble(header_size=len(PING), vector_size=0, metadata_size=0) + PING)
        h, _, m = dealer_recv(sock)
        assert h["status"] == "ok" and m["max_message_size"] == LIMIT
    finally:
        sock.close(0)
    assert small_server.alive()
