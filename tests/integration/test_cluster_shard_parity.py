"""Sharded indexes against one plain server (docs/cluster.md, "Sharding"):
three real nats-server processes and three nodes on loopback beside one plain
server, the same requests to both.

Proves, through every node, for flat, IVF and PQ (trained once), L2 and inner
product, with and without an IDMap wrapper: that adds, keyed upserts,
delete_vector, remove_ids (by labels and by range), searches (plain, keyed
with metadata, filtered, with an id selector), range_search, list_keys (every
page, with small limits), reconstruct and the codecs (sa_encode, sa_decode)
answer exactly as one server; that remove_ids on a type whose labels FAISS
renumbers is refused, changing nothing; that export_index gives the
vectors one server exports; and that an add
whose part for one shard cannot be logged (NATS refuses it: that shard's
stream is at its message limit) is an error
saying what was added, never a success, also when sent again, and that once the
stream takes records again the same add sent again completes, applied once.
"""
import json
import socket
import time

import numpy as np
import pytest

from cluster import NATS_SERVER, Cluster
from conftest import unique
from wire import rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("parity"))).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    from conftest import _make
    s = _make(tmp_path_factory)
    yield s
    if s.proc is not None:
        s.stop()


def clients(cl):
    return [node.client() for node in cl.nodes if node.proc is not None]


def sorted_range(reply):
    """range_search results per query as sorted (label, distance) lists."""
    h, d, _ = reply
    nq, nres = h["nq"], h["nres"]
    lims = np.frombuffer(d[:(nq + 1) * 8], dtype="<i8")
    lab = np.frombuffer(d[(nq + 1) * 8:(nq + 1) * 8 + nres * 8], dtype="<i8")
    dist = np.frombuffer(d[(nq + 1) * 8 + nres * 8:], dtype="<f4")
    return [sorted(zip(lab[lims[q]:lims[q + 1]].tolist(), dist[lims[q]:lims[q + 1]].tolist()))
            for q in range(nq)]


def all_keys(c, name, limit):
    """Every list_keys page (bounded), as (pages' sizes, entries)."""
    out, sizes, cursor = [], [], None
    for _ in range(1000):
        h = {"operation": "list_keys", "index_id": name, "limit": limit}
        if cursor is not None:
            h["cursor"] = cursor
        m = c.ok(h)[2]
        sizes.append(len(m["items"]))
        out += m["items"]
        cursor = m["next"]
        if cursor is None:
            return sizes, out
    raise AssertionError("list_keys did not end")


def settled(cs, name):
    """Waits (bounded) until every node's replicas of the shards applied the
    same records: a node answers from its own replicas, which apply a write
    acknowledged through another node a moment later (docs/cluster.md, "What
    a read sees"). write_seq is summed over the shards, each only growing."""
    deadline = time.time() + 30
    while len({c.info(name)["write_seq"] for c in cs}) != 1:
        assert time.time() < deadline, "replicas did not converge"
        time.sleep(0.05)


def exported(blob):
    """What FAISS reads from export_index's bytes: the classes (an IDMap
    wrapper and what it wraps), the IVF's centroids, and each label's code
    (with its list number in an IVF)."""
    import faiss
    idx = faiss.deserialize_index(np.frombuffer(blob, "uint8").copy())
    kinds, ids, outer = [type(idx).__name__], None, idx  # outer owns what it wraps
    if isinstance(idx, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        ids = faiss.vector_to_array(outer.id_map)
        idx = faiss.downcast_index(outer.index)
        kinds.append(type(idx).__name__)
    if isinstance(idx, faiss.IndexIVF):
        q = faiss.downcast_index(idx.quantizer)
        centroids = q.reconstruct_n(0, q.ntotal).tobytes()
        inv, cs, out = idx.invlists, idx.invlists.code_size, {}
        for ln in range(idx.nlist):
            n = inv.list_size(ln)
            lids = faiss.rev_swig_ptr(inv.get_ids(ln), n).copy()
            codes = faiss.rev_swig_ptr(inv.get_codes(ln), n * cs).copy()
            for j in range(n):
                out[int(lids[j])] = (ln, codes[j * cs:(j + 1) * cs].tobytes())
        return kinds, centroids, out
    codes = faiss.vector_to_array(idx.codes).reshape(idx.ntotal, -1)
    ids = ids if ids is not None else np.arange(idx.ntotal)
    return kinds, None, {int(i): codes[p].tobytes() for p, i in enumerate(ids)}


# index type, metric, training vectors (FAISS's k-means copies the training
# set when it holds exactly as many points as centroids: the same quantizer on
# one server and in the cluster), remove_ids served
CASES = [
    ("Flat", "IP", None, False),
    ("IDMap,Flat", "L2", None, True),
    ("IVF4,Flat", "IP", 4, True),
    ("PQ4np", "L2", 256, False),
    ("IVF4,PQ2np", "L2", 256, True),
    ("IVF4_HNSW4,Flat", "L2", 4, True),  # per-search quantizer_efSearch reaches every shard
]


@pytest.mark.parametrize("index_type,metric,ntrain,removes", CASES)
def test_sharded_answers_as_one_server(cl, plain_server, index_type, metric, ntrain, removes):
    plain = plain_server.client()
    cs = clients(cl)
    d, name = 8, unique("par")
    h = {"operation": "create_index", "index_id": name, "dimension": d,
         "index_type": index_type, "metric": metric}
    info = cs[0].ok(dict(h, shards=3))[2]
    plain.ok(h)
    assert info["shards"] == 3 and info["metric"] == metric
    if ntrain:
        t = rand(ntrain, d, 77)
        for c in (cs[1], plain):
            assert c.train(name, t)["is_trained"]
        # the adds through other nodes are checked against their own replicas,
        # which apply the trained index a moment later ("What a read sees")
        settled(cs, name)
    writes = []
    for i in range(3):
        writes.append(({"operation": "add_vectors", "index_id": name, "vector_shape": [20, d]},
                       rand(20, d, 300 + i).tobytes(), None))
        items = [{"id": "k%d" % (j % 25), "metadata": {"c": "red" if j % 3 else "blue",
                                                       "n": i * 20 + j}}
                 for j in range(20)]  # k0..k4 come again: upserts
        writes.append(({"operation": "add_vectors", "index_id": name, "vector_shape": [20, d]},
                       rand(20, d, 400 + i).tobytes(), items))
    # labels given: 7 replaces its vector, and the counter moves past 151
    writes.append(({"operation": "add_vectors", "index_id": name, "vector_shape": [3, d],
                    "with_ids": True},
                   rand(3, d, 600).tobytes() + np.array([150, 7, 151], "<i8").tobytes(),
                   [None, {"id": "w7"}, None]))
    writes.append(({"operation": "delete_vector", "index_id": name,
                    "vector_ids": ["k1", "k7", 2, 21, 999]}, b"", None))
    if removes:
        writes.append(({"operation": "remove_ids", "index_id": name, "ids": [0, 5, 44, 45, 999]},
                       b"", None))
        writes.append(({"operation": "remove_ids", "index_id": name, "range": [60, 70]}, b"",
                        None))
    writes.append(({"operation": "add_vectors", "index_id": name, "vector_shape": [5, d]},
                   rand(5, d, 500).tobytes(), [{"id": "k3"}, None, {"id": 17}, None,
                                               {"metadata": {"c": "red"}}]))
    for i, (hd, data, meta) in enumerate(writes):
        if hd.get("with_ids"):
            # Every label so far came from the counter: list_keys gives one
            # server's order (its slots' order, the order of writes) exactly.
            settled(cs, name)
            for c in cs:
                for limit in (1, 7, 100000):
                    assert all_keys(c, name, limit) == all_keys(plain, name, limit)
        want = plain.call(hd, data, meta)
        got = cs[i % 3].call(hd, data, meta)
        assert want[0]["status"] == "ok", (hd, want)
        assert got == want, (hd, got, want)
    if not removes:  # refused on the sharded index, nothing changed
        before = cs[0].info(name)["ntotal"]
        e = cs[1].error({"operation": "remove_ids", "index_id": name, "ids": [0, 1]})
        assert e["error_type"] == "unsupported" and "renumber" in e["message"]
        assert cs[2].info(name)["ntotal"] == before
    settled(cs, name)
    q = rand(6, d, 999)
    ntotal = plain.info(name)["ntotal"]
    for c in cs:
        assert c.info(name)["ntotal"] == ntotal
        for extra, filt in (({}, None), ({"include_metadata": True}, None),
                            ({"include_metadata": True}, {"c": "red"}),
                            ({"id_selector": {"range": [10, 80]}}, None)):
            hd = dict({"operation": "search", "index_id": name, "k": 9, "vector_shape": [6, d]},
                      **extra)
            if index_type.startswith("IVF"):
                hd["params"] = {"nprobe": 4}
            if "HNSW" in index_type:
                hd["params"]["quantizer_efSearch"] = 2
            assert c.call(hd, q.tobytes(), filt) == plain.call(hd, q.tobytes(), filt), hd
        if "HNSW" in index_type:  # refused as one server refuses it
            hd = {"operation": "search", "index_id": name, "k": 3, "vector_shape": [6, d],
                  "params": {"quantizer_efSearch": 0}}
            got, want = c.call(hd, q.tobytes()), plain.call(hd, q.tobytes())
            assert want[0]["status"] == "error" and got == want, (got, want)
        radius = 0.6 if metric == "L2" else 2.5
        hd = {"operation": "range_search", "index_id": name, "radius": radius,
              "vector_shape": [6, d]}
        got, want = c.call(hd, q.tobytes()), plain.call(hd, q.tobytes())
        if index_type.startswith("PQ"):  # FAISS: range search not implemented
            assert want[0]["status"] == "error" and got == want
        else:
            assert got[0] == want[0] and sorted_range(got) == sorted_range(want)
            assert want[0]["nres"] > 0
        if not index_type.startswith("IVF"):  # IVF: reconstruct needs a direct map
            for label in (1, 3, 44, 61, 100, 121):
                hd = {"operation": "reconstruct", "index_id": name, "label": label}
                assert c.call(hd) == plain.call(hd)
        # now that label 7 was given again, one server lists it where it was
        # written, a sharded index in label order: the same entries and pages
        for limit in (1, 7, 100000):
            (gs, got), (ws, want) = all_keys(c, name, limit), all_keys(plain, name, limit)
            assert gs == ws and got == sorted(want, key=lambda e: e["label"])
        x = rand(4, d, 5)
        hd = {"operation": "sa_encode", "index_id": name, "vector_shape": [4, d]}
        got, want = c.call(hd, x.tobytes()), plain.call(hd, x.tobytes())
        assert got == want
        if want[0]["status"] == "ok":
            hd = {"operation": "sa_decode", "index_id": name, "dtype": "uint8",
                  "vector_shape": want[0]["shape"]}
            assert c.call(hd, want[1]) == plain.call(hd, want[1])
    # export_index: one index of FAISS's, the vectors of every shard with
    # their labels, as one server exports them (label order where one server
    # keeps the order of writes: label 7 was given again)
    want = exported(plain.ok({"operation": "export_index", "index_id": name})[1])
    for c in cs:
        assert exported(c.ok({"operation": "export_index", "index_id": name})[1]) == want
    keys = all_keys(cs[0], name, 100000)[1]
    assert keys and [e["label"] for e in keys] == sorted(e["label"] for e in keys)
    bad = {"operation": "list_keys", "index_id": name, "limit": 0}
    assert cs[1].error(bad)["error_type"] == plain.error(bad)["error_type"] == "validation_error"
    cs[0].drop(name)
    plain.drop(name)


# ---- a shard's stream unreachable -----------------------------------------------

def nats_request(url, subject, payload=b"", timeout=10.0):
    """One request-reply over NATS's text protocol (no NATS client library
    needed): the reply's payload, decoded from JSON."""
    host, port = url[len("nats://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"INFO ")
        inbox = "_INBOX.fpxtest%d" % time.monotonic_ns()
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB %s 1\r\n'
                  b"PUB %s %s %d\r\n%s\r\nPING\r\n"
                  % (inbox.encode(), subject.encode(), inbox.encode(), len(payload), payload))
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = f.readline()
            assert line, "NATS closed the connection"
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                n = int(line.split()[-1])
                body = f.read(n + 2)[:n]
                return json.loads(body)
            elif line.startswith(b"-ERR"):
                raise AssertionError(line)
        raise AssertionError("no reply from NATS to %s" % subject)


def streams(url):
    return set(nats_request(url, "$JS.API.STREAM.NAMES", b"{}").get("streams") or [])


def set_max_msg_size(url, stream, limit):
    """Updates the stream's largest record (-1: no limit of its own): a larger
    record is refused. (A limit on the message count would not hold: the nodes
    trim a stream below what every replica's snapshot covers, at any time.)"""
    cfg = nats_request(url, "$JS.API.STREAM.INFO." + stream)["config"]
    cfg["max_msg_size"] = limit
    reply = nats_request(url, "$JS.API.STREAM.UPDATE." + stream, json.dumps(cfg).encode())
    assert "error" not in reply, reply


def test_add_with_a_shard_stream_refusing_is_an_error(cl):
    cs = clients(cl)
    url = cl.nats[0].url
    d, name = 4, unique("full")
    before = streams(url)
    cs[0].ok({"operation": "create_index", "index_id": name, "dimension": d, "shards": 3})
    mine = sorted(streams(url) - before)
    assert len(mine) == 3
    # Which stream is which shard: label L goes to shard L mod 3, so shard 1's
    # stream gets one record and shard 2's two.
    cs[0].add(name, rand(1, d, 1), labels=[1])
    cs[0].add(name, rand(1, d, 2), labels=[2])
    cs[0].add(name, rand(1, d, 3), labels=[5])
    count = {s: nats_request(url, "$JS.API.STREAM.INFO." + s)["state"]["messages"] for s in mine}
    shard2 = [s for s in mine if count[s] == 2]
    assert len(shard2) == 1, count
    set_max_msg_size(url, shard2[0], 64)  # shard 2's stream takes no add of 10 vectors
    x = rand(30, d, 4)
    h = {"operation": "add_vectors", "index_id": name, "vector_shape": [30, d],
         "client_id": "full-client", "request_id": 1}
    # 30 unkeyed vectors take labels 6..35: 10 to each shard, 20 to shards 0 and 1
    for c in (cs[1], cs[0]):  # sent again (through another node): the same error
        rh, data, meta = c.call(h, x.tobytes())
        assert rh["status"] == "error" and data == b"" and meta is None
        assert rh["error_type"] == "unavailable", rh
        assert "20 of 30 vectors were added (those routed to shards 0,1)" in rh["message"], rh
        assert "shard 2" in rh["message"]
        # what was added is what the message says, not more: the retry's parts
        # for shards 0 and 1 were dropped as duplicates by their streams
        settled(cs, name)
        assert [c.info(name)["ntotal"] for c in cs] == [3 + 20] * 3
    # once the stream takes records again, the same add sent again completes:
    # applied once, with the labels it took the first time
    set_max_msg_size(url, shard2[0], -1)
    rh, _, meta = cs[2].call(h, x.tobytes())
    assert rh["status"] == "ok" and meta == {"count": 30, "ntotal": 33}, (rh, meta)
    settled(cs, name)
    for c in cs:
        assert c.info(name)["ntotal"] == 33
        _, I, _ = c.search(name, x, 1)
        assert I[:, 0].tolist() == list(range(6, 36))
    cs[0].drop(name)
    assert all(i["index_id"] != name for i in cs[1].list())
