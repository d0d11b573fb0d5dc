"""The transport: the preamble's three sizes, and messages over the size limit
(refused by the C client and the Python package before sending; dropped by the
server's transport without harm to any other connection)."""
import resource

import msgpack
import pytest

from wire import dealer, dealer_send

PING = msgpack.packb({"operation": "ping"})
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
