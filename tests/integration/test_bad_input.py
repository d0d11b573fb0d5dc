"""Every kind of bad input gets a clear error reply of the right kind, changes
nothing, and the server keeps serving (checked after every case)."""
import os
import struct

import msgpack
import numpy as np
import pytest

from conftest import unique
from wire import dealer, decode, encode, rand

D = 8


@pytest.fixture(scope="module")
def idx(client):
    name = unique("bad")
    client.create(name, D)
    client.add(name, rand(20, D, 60), [{"id": "k%d" % i, "metadata": {"i": i}}
                                       for i in range(20)])
    return name


def still_serving(client, idx=None):
    assert client.ping()["protocol"] == 1
    if idx:
        assert client.info(idx)["ntotal"] == 20


def pre(hs, vs=0, ms=0):
    return msgpack.packb({"header_size": hs, "vector_size": vs, "metadata_size": ms})


PING = msgpack.packb({"operation": "ping"})

RAW_BODIES = {
    "empty": b"",
    "one zero byte": b"\x00",
    "reserved byte": b"\xc1",
    "random bytes": bytes(range(256)) * 4,
    "preamble not a map": msgpack.packb([1, 2, 3]) + PING,
    "preamble without header_size": msgpack.packb({"vector_size": 0}) + PING,
    "sizes too big": pre(len(PING) + 1) + PING,
    "sizes too small": pre(len(PING) - 1) + PING,
    "trailing bytes": pre(len(PING)) + PING + b"\x00",
    "vector size lies": pre(len(PING), 100) + PING + b"\x00" * 10,
    "metadata size lies": pre(len(PING), 0, 5) + PING + b"\x01",
    "huge sizes": pre(2**63, 2**63) + PING,
    "negative size": msgpack.packb({"header_size": -1}) + PING,
    "string size": msgpack.packb({"header_size": "16"}) + PING,
    "header not a map": pre(3) + msgpack.packb([1, 2]),
    "header a string": pre(4) + msgpack.packb("abc"),
    "header invalid msgpack": pre(2) + b"\xc1\xc1",
    "header truncated": pre(5) + b"\x82\xa1a\x01\xa1",
    "header two objects": pre(2) + b"\x80\x80",
    "array of 2^32-1 in 5 bytes": pre(5) + b"\xdd\xff\xff\xff\xff",
    "map of 2^31 in 5 bytes": pre(5) + b"\xdf\x7f\xff\xff\xff",
    "str32 past the end": pre(8) + b"\x81\xa1a\xdb\xff\xff\xff\xff",
    "nested 1000 deep": pre(1001) + b"\x91" * 1000 + b"\xc0",
    "nested 100000 deep preamble": b"\x91" * 100000 + b"\xc0",
    "missing operation": encode({"index_id": "x"}),
    "operation not a string": encode({"operation": 7}),
    "operation nil": encode({"operation": None}),
    "metadata invalid": pre(len(PING), 0, 1) + PING + b"\xc1",
}


@pytest.mark.parametrize("name", list(RAW_BODIES))
def test_malformed_bodies(client, idx, name):
    h, d, m = client.raw(RAW_BODIES[name])
    assert h["status"] == "error" and h["error_type"] == "protocol_error", h
    assert h["message"] and d == b"" and m is None
    still_serving(client, idx)


def test_unknown_operation(client):
    for op in ("frobnicate", "", "PING", "ping ", "search\x00"):
        h, _, _ = client.call({"operation": op})
        assert h["error_type"] == "unsupported", (op, h)
    still_serving(client)


def test_multi_frame_body(server, client):
    s = dealer(server.endpoint)
    try:
        s.send_multipart([b"", encode({"operation": "ping"}), b"extra"])
        frames = s.recv_multipart()
        h, _, _ = decode(frames[-1])
        assert h["error_type"] == "protocol_error"
        s.send_multipart([b""])  # a delimiter and no body at all
        h, _, _ = decode(s.recv_multipart()[-1])
        assert h["error_type"] == "protocol_error"
    finally:
        s.close(0)
    still_serving(client)


def search_h(idx, **kv):
    h = {"operation": "search", "index_id": idx, "k": 3, "vector_shape": [1, D]}
    h.update(kv)
    return h


Q = rand(1, D, 61).tobytes()


@pytest.mark.parametrize("case,header,data,meta,kind", [
    ("k=0", dict(k=0), Q, None, "validation_error"),
    ("k=-1", dict(k=-1), Q, None, "validation_error"),
    ("k huge", dict(k=10**9), Q, None, "limit_exceeded"),
    ("k 2^63", dict(k=2**63), Q, None, "validation_error"),
    ("k float", dict(k=3.0), Q, None, "validation_error"),
    ("k string", dict(k="3"), Q, None, "validation_error"),
    ("k missing", dict(k=None), Q, None, "validation_error"),
    ("wrong dimension", dict(vector_shape=[1, D + 1]), rand(1, D + 1, 1).tobytes(), None,
     "validation_error"),
    ("shape vs size", dict(vector_shape=[2, D]), Q, None, "validation_error"),
    ("shape huge n", dict(vector_shape=[2**62, D]), Q, None, "validation_error"),
    ("shape negative", dict(vector_shape=[-1, D]), Q, None, "validation_error"),
    ("shape not a list", dict(vector_shape="1x8"), Q, None, "validation_error"),
    ("shape of 3", dict(vector_shape=[1, D, 1]), Q, None, "validation_error"),
    ("no data", dict(), b"", None, "validation_error"),
    ("odd bytes", dict(vector_shape=None, dimension=D), Q + b"\x00", None, "validation_error"),
    ("NaN", dict(), np.full(D, np.nan, "float32").tobytes(), None, "validation_error"),
    ("Inf", dict(), np.full(D, np.inf, "float32").tobytes(), None, "validation_error"),
    ("-Inf", dict(), np.full(D, -np.inf, "float32").tobytes(), None, "validation_error"),
    ("filter not a map", dict(), Q, [1, 2], "validation_error"),
    ("params not a map", dict(params=5), Q, None, "validation_error"),
    ("unknown param", dict(params={"nprobes": 2}), Q, None, "validation_error"),
    ("param negative", dict(params={"efSearch": -1}), Q, None, "validation_error"),
    ("nprobe on flat", dict(params={"nprobe": 2}), Q, None, "unsupported"),
    ("dtype uint8", dict(dtype="uint8"), Q, None, "validation_error"),
    ("dtype float64", dict(dtype="float64"), Q, None, "validation_error"),
    ("include_metadata not bool", dict(include_metadata=1), Q, None, "validation_error"),
    ("index_id missing", dict(index_id=None), Q, None, "validation_error"),
    ("index_id int", dict(index_id=5), Q, None, "validation_error"),
    ("foreign path", dict(index_id="../default"), Q, None, "validation_error"),
])
def test_bad_search(client, idx, case, header, data, meta, kind):
    h = search_h(idx, **header)
    h = {k: v for k, v in h.items() if v is not None}
    r = client.error(h, data, meta)
    assert r["error_type"] == kind, (case, r)
    still_serving(client, idx)


def add_h(idx, n=1, **kv):
    h = {"operation": "add_vectors", "index_id": idx, "vector_shape": [n, D]}
    h.update(kv)
    return {k: v for k, v in h.items() if v is not None}


X2 = rand(2, D, 62)


@pytest.mark.parametrize("case,header,data,meta", [
    ("wrong dimension", dict(vector_shape=[2, D - 1]), rand(2, D - 1, 3).tobytes(), None),
    ("shape vs size", dict(vector_shape=[3, D]), X2.tobytes(), None),
    ("NaN in the middle", dict(vector_shape=[2, D]),
     np.where(np.arange(2 * D).reshape(2, D) == 11, np.nan, X2).astype("float32").tobytes(),
     None),
    ("metadata list too short", dict(vector_shape=[2, D]), X2.tobytes(), [{"id": "a"}]),
    ("metadata list too long", dict(vector_shape=[2, D]), X2.tobytes(), [None, None, None]),
    ("metadata not a list", dict(vector_shape=[2, D]), X2.tobytes(), {"id": "a"}),
    ("entry not a map", dict(vector_shape=[2, D]), X2.tobytes(), [1, 2]),
    ("id a float", dict(vector_shape=[2, D]), X2.tobytes(), [{"id": 1.5}, None]),
    ("id a list", dict(vector_shape=[2, D]), X2.tobytes(), [{"id": [1]}, None]),
    ("id empty", dict(vector_shape=[2, D]), X2.tobytes(), [{"id": ""}, None]),
    ("id too long", dict(vector_shape=[2, D]), X2.tobytes(), [{"id": "x" * 2000}, None]),
    ("metadata not a map", dict(vector_shape=[2, D]), X2.tobytes(), [{"metadata": 5}, None]),
    ("with_ids no labels", dict(vector_shape=[2, D], with_ids=True), X2.tobytes(), None),
    ("with_ids negative", dict(vector_shape=[2, D], with_ids=True),
     X2.tobytes() + struct.pack("<qq", 1, -1), None),
    ("with_ids not bool", dict(vector_shape=[2, D], with_ids=1),
     X2.tobytes() + struct.pack("<qq", 1, 2), None),
])
def test_bad_add_changes_nothing(client, idx, case, header, data, meta):
    r = client.error(add_h(idx, **header), data, meta)
    assert r["error_type"] == "validation_error", (case, r)
    still_serving(client, idx)  # ntotal still 20: nothing was added


@pytest.mark.parametrize("name", [
    "", ".", "..", "../x", "a/b", "/abs", ".hidden", "a\x00b", "x" * 129, "a b", "ü", "a\\b",
    5, None, ["x"],
])
def test_bad_index_names(server, client, name):
    h = {"operation": "create_index", "dimension": 4}
    if name is not None:
        h["index_id"] = name
    r = client.error(h)
    assert r["error_type"] == "validation_error", (name, r)
    for op in ("get_index_info", "delete_index"):
        hh = {"operation": op}
        if name is not None:
            hh["index_id"] = name
        r = client.error(hh)
        # a name that could never exist is refused as such, not looked up
        assert r["error_type"] == "validation_error", (name, op, r)
    # nothing appeared outside the tenant folder
    assert sorted(os.listdir(server.data_dir)) == ["default"]
    still_serving(client)


def test_name_limits(client):
    ok = unique("n") + "x" * 100
    ok = ok[:128]
    client.create(ok, 2)
    assert client.info(ok)["index_id"] == ok
    client.create("a-b_c.d" + unique(), 2)


@pytest.mark.parametrize("dim", [0, -1, 65537, 2**40, "8", 8.0, None, True])
def test_bad_dimension(client, dim):
    h = {"operation": "create_index", "index_id": unique(), "dimension": dim}
    if dim is None:
        del h["dimension"]
    r = client.error(h)
    assert r["error_type"] == "validation_error", (dim, r)


@pytest.mark.parametrize("index_type", [
    "IVF100000000,Flat", "garbage", "HNSW0", "HNSW1", "IVF0,Flat", "NSG0", "PQ8x30", "",
    "x" * 300, 5, "Flat,Flat", "IVF4,", "HNSW99999999999999999999999",
    # negative numbers: the lattice's counts were sized from one (the server aborted)
    "ZnLattice1x-2_4", "ZnLattice1x-1_4", "IVF-5,SQ8_uniform", "BHash-3x8", "PQ8x-4",
    # graphs of more than 1024 (2 x 1024) links a vector
    "HNSW1025", "IVF16_HNSW4096,Flat", "HNSW1048576,SQ8", "NSG2048",
])
def test_bad_index_types(client, index_type):
    name = unique()
    r = client.error({"operation": "create_index", "index_id": name, "dimension": 16,
                      "index_type": index_type})
    assert r["error_type"] == "validation_error", (index_type, r)
    assert client.error({"operation": "get_index_info",
                         "index_id": name})["error_type"] == "not_found"
    still_serving(client)


def test_bad_metric(client):
    for metric in ("L1", "", 1, "l2"):
        r = client.error({"operation": "create_index", "index_id": unique(), "dimension": 4,
                          "metric": metric})
        assert r["error_type"] == "validation_error", metric


def test_not_found_everywhere(client):
    name = unique("nf")
    for h, data in [
        ({"operation": "search", "k": 1, "vector_shape": [1, D]}, Q),
        ({"operation": "add_vectors", "vector_shape": [1, D]}, Q),
        ({"operation": "train", "vector_shape": [1, D]}, Q),
        ({"operation": "delete_vector", "vector_id": 1}, b""),
        ({"operation": "delete_index"}, b""),
        ({"operation": "get_index_info"}, b""),
    ]:
        h["index_id"] = name
        assert client.error(h, data)["error_type"] == "not_found", h


def test_bad_delete(client, idx):
    for h in ({}, {"vector_id": 1, "vector_ids": [2]}, {"vector_ids": 5},
              {"vector_id": 1.5}, {"vector_ids": [[1]]}, {"vector_id": {"a": 1}}):
        h = dict(h, operation="delete_vector", index_id=idx)
        assert client.error(h)["error_type"] == "validation_error", h
    still_serving(client, idx)


def test_bad_train(client):
    name = unique()
    client.create(name, 4, "IVF4,Flat")
    assert client.error({"operation": "train", "index_id": name, "vector_shape": [0, 4]},
                        b"")["error_type"] == "validation_error"
    bad = np.full((8, 4), np.nan, "float32")
    assert client.error({"operation": "train", "index_id": name, "vector_shape": [8, 4]},
                        bad.tobytes())["error_type"] == "validation_error"
    assert client.info(name)["is_trained"] is False


def test_search_reply_too_large(make_server):
    s = make_server(extra=["--max-message-size", "65536"])
    c = s.client()
    c.create("big", 4)
    c.add("big", rand(10, 4, 63))
    r = c.error({"operation": "search", "index_id": "big", "k": 10000, "vector_shape": [1, 4]},
                rand(1, 4, 64).tobytes())
    assert r["error_type"] == "limit_exceeded"
    assert c.ping()["protocol"] == 1


def test_oversize_request_drops_only_that_connection(make_server):
    s = make_server(extra=["--max-message-size", "65536"])
    good = s.client()
    good.create("ix", 4)
    import zmq
    bad = zmq.Context.instance().socket(zmq.REQ)
    bad.setsockopt(zmq.LINGER, 0)
    bad.setsockopt(zmq.RCVTIMEO, 1000)
    bad.connect(s.endpoint)
    bad.send(encode({"operation": "ping"}, b"\x00" * 200000))
    with pytest.raises(zmq.Again):
        bad.recv()
    bad.close(0)
    assert good.ping()["protocol"] == 1
    assert good.info("ix")["ntotal"] == 0


def test_strings_that_are_not_utf8(client, idx):
    hdr = b"\x82\xa9operation\xa4ping\xaarequest_id\xa2\xff\xfe"
    body = pre(len(hdr)) + hdr
    h, _, m = client.raw(body)
    # the ping is served; only its request_id, not valid UTF-8, is not echoed
    assert h == {"status": "ok"}, h
    assert m == client.ping()  # {"version", "protocol", "max_message_size"}
    hdr = msgpack.packb({"operation": "search", "index_id": idx, "k": 1,
                         "vector_shape": [1, D]})
    meta = b"\x81\xa1c\xa2\xff\xfe"  # filter {"c": <invalid UTF-8>}
    h, _, _ = client.raw(pre(len(hdr), len(Q), len(meta)) + hdr + Q + meta)
    assert h["error_type"] == "validation_error"
    still_serving(client, idx)


def test_all_of_it_did_not_kill_the_server(server, client):
    assert server.alive()
    still_serving(client)


@pytest.mark.parametrize("row,col,value", [
    (0, 0, np.nan), (127, 7, np.inf), (128, 0, -np.inf), (299, 3, np.nan), (399, 7, np.nan),
])
def test_not_finite_named_exactly(client, idx, row, col, value):
    """The error names the first row and component that is NaN or infinite,
    wherever it lies among 400 rows (the scan goes by blocks of 1,024 floats:
    rows 127 and 128 sit on either side of one block's end); no row of the
    add lands."""
    x = rand(400, D, 63)
    x[row, col] = value
    x[399, 0] = np.nan  # a later one is not the one named
    r = client.error(add_h(idx, n=400), x.tobytes())
    assert r["error_type"] == "validation_error", r
    first = (row, col) if (row, col) < (399, 0) else (399, 0)
    assert "vector %d component %d is NaN or infinite" % first in r["message"], r
    still_serving(client, idx)
