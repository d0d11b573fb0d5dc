"""FAISSx's wire format, served on our port.

A FAISSx client sends one msgpack map per message with an "action" key and
vectors as nested lists of float64 (docs/faissx.md). The client here is written
from that description (pyzmq REQ + msgpack); every reply is checked against
in-process FAISS on the same data, and data written this way is read back
through our own protocol and after a restart.
"""
import os
import subprocess
import sys

import faiss
import msgpack
import numpy as np
import pytest
import zmq

from conftest import AUTH_KEYS, unique
from wire import rand

TIMEOUT_MS = 20000


class FX:
    """A FAISSx-style client: REQ socket, one msgpack map each way."""

    def __init__(self, endpoint, api_key=None, tenant_id=None):
        self.endpoint = endpoint
        self.api_key = api_key
        self.tenant_id = tenant_id
        self.sock = None
        self.connect()

    def connect(self):
        if self.sock is not None:
            self.sock.close(0)
        self.sock = zmq.Context.instance().socket(zmq.REQ)
        for opt in (zmq.RCVTIMEO, zmq.SNDTIMEO):
            self.sock.setsockopt(opt, TIMEOUT_MS)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def close(self):
        self.sock.close(0)

    def raw(self, body):
        self.sock.send(body)
        return msgpack.unpackb(self.sock.recv(), raw=False)

    def req(self, action, **fields):
        m = {"action": action}
        if self.api_key:
            m["api_key"] = self.api_key
        if self.tenant_id:
            m["tenant_id"] = self.tenant_id
        m.update(fields)
        return self.raw(msgpack.packb(m))

    def ok(self, action, **fields):
        r = self.req(action, **fields)
        assert r["success"] is True, r
        assert isinstance(r["timestamp"], float) and isinstance(r["version"], str)
        return r

    def err(self, action, **fields):
        r = self.req(action, **fields)
        assert r["success"] is False, r
        assert isinstance(r["error"], str) and r["error"]
        return r


@pytest.fixture
def fx(server):
    c = FX(server.endpoint)
    yield c
    c.close()


def vl(x):
    """A matrix as FAISSx's client sends it: nested lists of float64."""
    return np.asarray(x, dtype=np.float64).tolist()


def results(r):
    D = np.array([q["distances"] for q in r["results"]], dtype=np.float32)
    I = np.array([q["indices"] for q in r["results"]], dtype=np.int64)
    return D, I


def test_detection_leaves_our_protocol_alone(server, fx):
    """Both formats on one port: ours still answers ours, FAISSx gets maps."""
    ours = server.client()
    assert ours.ping()["protocol"] == 1
    r = fx.ok("ping")
    assert r["message"] == "pong" and isinstance(r["time"], float)
    assert ours.ping()["protocol"] == 1


def test_flat_add_search_matches_faiss(fx):
    name, d = unique("fx-flat"), 8
    x, q = rand(200, d, 1), rand(5, d, 2)
    r = fx.ok("create_index", index_id=name, dimension=d, index_type="L2")
    assert r["index_id"] == name and r["dimension"] == d and r["type"] == "IndexFlatL2"
    assert r["is_trained"] is True
    r = fx.ok("add_vectors", index_id=name, vectors=vl(x))
    assert (r["ntotal"], r["total"], r["count"]) == (200, 200, 200)
    assert r["message"] == "Added 200 vectors to index %s" % name
    r = fx.ok("search", index_id=name, query_vectors=vl(q), k=4)
    assert r["num_queries"] == 5 and r["k"] == 4
    ref = faiss.IndexFlatL2(d)
    ref.add(x)
    D0, I0 = ref.search(q, 4)
    D, I = results(r)
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_allclose(D, D0, rtol=1e-5, atol=1e-5)
    # more neighbours than vectors: -1 and FLT_MAX, as FAISS
    r = fx.ok("search", index_id=name, query_vectors=vl(q[:1]), k=205)
    assert r["results"][0]["indices"][-1] == -1
    assert r["results"][0]["distances"][-1] == pytest.approx(3.4028234663852886e38)
    # a flat list is one vector
    r = fx.ok("add_vectors", index_id=name, vectors=vl(x[0]))
    assert r["count"] == 1 and r["ntotal"] == 201


def test_ip_and_hnsw_types(fx):
    d = 16
    x, q = rand(300, d, 3), rand(4, d, 4)
    for typ, ref, cls in (("IP", faiss.IndexFlatIP(d), "IndexFlatIP"),
                          ("HNSW16_IP", None, "IndexHNSWFlat"),
                          ("HNSW32", None, "IndexHNSWFlat")):
        name = unique("fx-t")
        r = fx.ok("create_index", index_id=name, dimension=d, index_type=typ)
        assert r["type"] == cls
        if typ.startswith("HNSW"):
            assert r["M"] == int(typ[4:6]) and r["efConstruction"] == 40 and r["efSearch"] == 16
            assert r["metric_type"] == (0 if typ.endswith("_IP") else 1)
        fx.ok("add_vectors", index_id=name, vectors=vl(x))
        r = fx.ok("search", index_id=name, query_vectors=vl(q), k=5,
                  params={"efSearch": 128})
        D, I = results(r)
        exact = faiss.IndexFlatIP(d) if typ.endswith("IP") else faiss.IndexFlatL2(d)
        exact.add(x)
        D0, I0 = exact.search(q, 5)
        if ref is not None:
            np.testing.assert_array_equal(I, I0)
        else:  # HNSW with efSearch 128 on 300 vectors finds the true top hit
            np.testing.assert_array_equal(I[:, 0], I0[:, 0])
            assert fx.ok("get_parameter", index_id=name, parameter="efSearch")[
                "param_value"] == 128  # written for good, as FAISSx does


def test_ivf_train_nprobe_and_untrained(fx):
    name, d = unique("fx-ivf"), 8
    x, q = rand(500, d, 5), rand(3, d, 6)
    r = fx.ok("create_index", index_id=name, dimension=d, index_type="IVF16")
    assert r["type"] == "IndexIVFFlat" and r["nlist"] == 16 and r["is_trained"] is False
    assert r["requires_training"] is True
    r = fx.err("add_vectors", index_id=name, vectors=vl(x))
    assert r["error_code"] == "NOT_TRAINED"
    assert r["error"] == "Index is not ready: Index requires training before use"
    r = fx.ok("train_index", index_id=name, training_vectors=vl(x))
    assert r["is_trained"] is True and r["trained_with"] == 500
    fx.ok("add_vectors", index_id=name, vectors=vl(x))
    r = fx.ok("search", index_id=name, query_vectors=vl(q), k=3, params={"nprobe": 16})
    exact = faiss.IndexFlatL2(d)
    exact.add(x)
    np.testing.assert_array_equal(results(r)[1], exact.search(q, 3)[1])  # nprobe = nlist
    assert fx.ok("get_parameter", index_id=name, parameter="nprobe")["param_value"] == 16
    r = fx.ok("set_parameter", index_id=name, parameter="nprobe", value=4)
    assert r["message"] == "Set nprobe=4 for index %s" % name
    assert fx.ok("get_parameter", index_id=name, parameter="nprobe")["param_value"] == 4
    r = fx.err("set_parameter", index_id=name, parameter="efSearch", value=4)
    assert "not supported" in r["error"]
    st = fx.ok("get_index_status", index_id=name)["status"]
    assert st["nlist"] == 16 and st["nprobe"] == 4 and st["index_type"] == "IndexIVFFlat"
    r = fx.ok("optimize_index", index_id=name, optimization_level=2)
    assert r["optimizations"] == ["set_nprobe_3"]
    # too few vectors to train: FAISSx's training error shape
    bad = unique("fx-ivf")
    fx.ok("create_index", index_id=bad, dimension=d, index_type="IVF16")
    r = fx.err("train_index", index_id=bad, training_vectors=vl(x[:5]))
    assert r["error_code"] == "TRAINING_ERROR" and r["error"].startswith("Training error:")
    assert r["error_details"] == {"index_id": bad, "vector_count": 5}
    # a flat index needs no training
    flat = unique("fx-f")
    fx.ok("create_index", index_id=flat, dimension=d)
    r = fx.ok("train_index", index_id=flat, training_vectors=vl(x[:5]))
    assert r["training_skipped"] is True


@pytest.mark.parametrize("typ,cls", [
    ("PQ4x8", "IndexPQ"), ("PQ4", "IndexPQ"), ("PQ2x4", "IndexPQ"), ("IVF4_SQ0", "IndexIVFScalarQuantizer"),
    ("IVF4_SQ8", "IndexIVFScalarQuantizer"), ("SQ8", "IndexScalarQuantizer"),
    ("SQ4", "IndexScalarQuantizer"), ("SQ16", "IndexScalarQuantizer"),
    ("IVF4_SQ2", "IndexIVFScalarQuantizer"), ("IVF4,PQ4x4", "IndexIVFPQ"),
    ("IVF8_IP", "IndexIVFFlat"), ("PCA4,L2", "IndexPreTransform"),
    ("NORM,L2", "IndexPreTransform"), ("FLAT", "IndexFlatL2"),
])
def test_index_type_strings(fx, typ, cls):
    name, d = unique("fx-ty"), 8
    x = rand(400, d, 7)
    r = fx.ok("create_index", index_id=name, dimension=d, index_type=typ)
    assert r["type"] == cls, r
    if cls == "IndexPQ":
        assert (r["M"], r["nbits"]) == ((2, 4) if typ == "PQ2x4" else (4, 8))
        if r["nbits"] == 8:  # 256 centroids a sub-quantizer: slow to train here
            return
    if not r["is_trained"]:
        fx.ok("train_index", index_id=name, training_vectors=vl(x))
    fx.ok("add_vectors", index_id=name, vectors=vl(x))
    r = fx.ok("search", index_id=name, query_vectors=vl(x[:3]), k=1)
    assert len(r["results"]) == 3 and all(len(q["indices"]) == 1 for q in r["results"])
    assert fx.ok("get_index_stats", index_id=name)["index_type"] == cls


def test_unsupported_type(fx):
    r = fx.err("create_index", index_id=unique("fx"), dimension=8, index_type="NOPE17")
    assert r["error"].startswith("Unsupported index type: ")
    r = fx.err("create_index", index_id=unique("fx"), dimension=0)
    assert "out of range" in r["error"]
    name = unique("fx")
    fx.ok("create_index", index_id=name, dimension="8")  # FAISSx int()s it
    assert fx.err("create_index", index_id=name, dimension=8)["error"] == \
        "Index %s already exists" % name


def test_idmap_ids_reconstruct_and_range(fx):
    d = 8
    x = rand(50, d, 8)
    base = unique("fx-base")
    fx.ok("create_index", index_id=base, dimension=d, index_type="L2")
    name = unique("fx-idm")
    r = fx.ok("create_index", index_id=name, dimension=d, index_type="IDMap:" + base)
    assert r["is_idmap"] is True and r["is_idmap2"] is False and r["base_index_id"] == base
    ids = np.arange(50, dtype=np.int64) * 10 + 1000
    r = fx.ok("add_with_ids", index_id=name, vectors=vl(x), ids=ids.tolist())
    assert r["count"] == 50 and r["total"] == 50
    r = fx.ok("search", index_id=name, query_vectors=vl(x[:3]), k=2)
    assert [q["indices"][0] for q in r["results"]] == ids[:3].tolist()
    r = fx.ok("reconstruct", index_id=name, id=int(ids[7]))
    np.testing.assert_allclose(r["vector"], x[7], rtol=1e-6)
    r = fx.err("reconstruct", index_id=name, id=5)
    assert "out of range" in r["error"]
    # batch_add_with_ids
    r = fx.ok("batch_add_with_ids", index_id=name, vectors=vl(x[:2] + 1), ids=[1, 2],
              batch_size=1)
    assert r["ntotal"] == 52 and r["count"] == 2
    # range_search: the superset shape; hits as in FAISS (L2: distance < radius)
    ref = faiss.IndexIDMap(faiss.IndexFlatL2(d))
    ref.add_with_ids(x, ids)
    ref.add_with_ids(x[:2] + 1, np.array([1, 2], dtype=np.int64))
    q = x[:4]
    radius = 0.5
    lims, D0, I0 = ref.range_search(q, radius)
    r = fx.ok("range_search", index_id=name, query_vectors=vl(q), radius=radius)
    assert r["lims"] == lims.tolist() and r["num_queries"] == 4
    assert sorted(r["indices"]) == sorted(I0.tolist())
    for i, qr in enumerate(r["results"]):
        assert qr["query_index"] == i and qr["num_results"] == qr["count"] == lims[i + 1] - lims[i]
        assert sorted(qr["indices"]) == sorted(I0[lims[i]:lims[i + 1]].tolist())
    # the IDMap2 form over a type
    r = fx.ok("create_index", index_id=unique("fx-idm2"), dimension=d, index_type="IDMap2:L2")
    assert r["is_idmap2"] is True


def test_remove_ids_and_replace_vector_as_faiss(fx):
    """The two actions FAISSx's IDMap client sends that its own server does not
    dispatch: served with FAISS's semantics, compared with IndexIDMap2."""
    d = 8
    x = rand(40, d, 21)
    name = unique("fx-rm")
    fx.ok("create_index", index_id=name, dimension=d, index_type="IDMap2:L2")
    ids = np.arange(40, dtype=np.int64) * 3 + 7
    fx.ok("add_with_ids", index_id=name, vectors=vl(x), ids=ids.tolist())
    ref = faiss.IndexIDMap2(faiss.IndexFlatL2(d))
    ref.add_with_ids(x, ids)
    gone = [int(ids[2]), int(ids[5]), 999999]  # the last is not held: not counted
    r = fx.ok("remove_ids", index_id=name, ids=gone)
    assert r["count"] == ref.remove_ids(np.array(gone, dtype=np.int64)) == 2
    assert r["ntotal"] == ref.ntotal == 38
    new = rand(1, d, 22)[0]
    r = fx.ok("replace_vector", index_id=name, id=int(ids[9]), vector=vl(new))
    assert r["ntotal"] == 38
    ref.remove_ids(np.array([ids[9]], dtype=np.int64))
    ref.add_with_ids(new.reshape(1, -1), np.array([ids[9]], dtype=np.int64))
    np.testing.assert_allclose(fx.ok("reconstruct", index_id=name, id=int(ids[9]))["vector"], new,
                               rtol=1e-6)
    q = np.vstack([x[:6], new.reshape(1, -1)])
    Dr, Ir = ref.search(q, 5)
    Dv, Iv = results(fx.ok("search", index_id=name, query_vectors=vl(q), k=5))
    assert Iv.tolist() == Ir.tolist()
    np.testing.assert_allclose(Dv, Dr, rtol=1e-5, atol=1e-5)
    # bad input: a clear error, nothing changed
    assert fx.err("remove_ids", index_id=name)["error"] == "Missing ids"
    assert "Invalid ids" in fx.err("remove_ids", index_id=name, ids="x")["error"]
    assert "Invalid ids" in fx.err("remove_ids", index_id=name, ids=[1, "a"])["error"]
    assert fx.err("remove_ids", index_id="missing-ix", ids=[1])["error"] == \
        "Index missing-ix not found"
    assert "dimension mismatch" in fx.err("replace_vector", index_id=name, id=7,
                                          vector=[1.0] * 3)["error"]
    assert "Invalid id" in fx.err("replace_vector", index_id=name, id=-1, vector=[1.0] * d)["error"]
    assert "Missing id" == fx.err("replace_vector", index_id=name, vector=[1.0] * d)["error"]
    assert fx.ok("get_index_stats", index_id=name)["ntotal"] == 38
    # a type that cannot remove says so, as FAISS does
    h = unique("fx-hnsw")
    fx.ok("create_index", index_id=h, dimension=d, index_type="HNSW16")
    fx.ok("add_vectors", index_id=h, vectors=vl(x[:5]))
    assert "Error removing ids" in fx.err("remove_ids", index_id=h, ids=[0])["error"]
    assert fx.ok("get_index_stats", index_id=h)["ntotal"] == 5


def test_reconstruct_n_and_search_and_reconstruct(fx):
    name, d = unique("fx-rn"), 8
    x = rand(30, d, 9)
    fx.ok("create_index", index_id=name, dimension=d)
    fx.ok("add_vectors", index_id=name, vectors=vl(x))
    r = fx.ok("reconstruct", index_id=name, idx=5)  # the key FAISSx's server reads
    np.testing.assert_allclose(r["vector"], x[5], rtol=1e-6)
    r = fx.ok("reconstruct", index_id=name, id=6, idx=5)  # id wins
    np.testing.assert_allclose(r["vector"], x[6], rtol=1e-6)
    r = fx.ok("reconstruct_n", index_id=name, start_idx=10, num_vectors=5)
    np.testing.assert_allclose(r["vectors"], x[10:15], rtol=1e-6)
    assert r["start_idx"] == 10 and r["num_vectors"] == 5
    assert fx.err("reconstruct_n", index_id=name, start_idx=-1, num_vectors=2)["error"] == \
        "Starting index cannot be negative"
    assert fx.err("reconstruct_n", index_id=name, start_idx=0, num_vectors=0)["error"] == \
        "Number of vectors must be positive"
    assert fx.err("reconstruct_n", index_id=name, start_idx=25, num_vectors=10)["error"] == \
        "Range 25:35 exceeds index size 30"
    r = fx.ok("search_and_reconstruct", index_id=name, query_vectors=vl(x[:2]), k=3)
    for i, q in enumerate(r["results"]):
        assert q["indices"][0] == i
        np.testing.assert_allclose(q["vectors"][0], x[i], rtol=1e-6)
        assert len(q["vectors"]) == 3 and len(q["distances"]) == 3
    r = fx.ok("get_vectors", index_id=name, start_idx=28)
    assert r["count"] == 2
    # IVF: reconstruct needs a direct map, made on demand
    ivf = unique("fx-ivf")
    fx.ok("create_index", index_id=ivf, dimension=d, index_type="IVF2")
    fx.ok("train_index", index_id=ivf, training_vectors=vl(x))
    fx.ok("add_vectors", index_id=ivf, vectors=vl(x))
    r = fx.ok("search_and_reconstruct", index_id=ivf, query_vectors=vl(x[:1]), k=1,
              params={"nprobe": 2})
    np.testing.assert_allclose(r["results"][0]["vectors"][0], x[0], rtol=1e-6)
    # vectors added after that map was made are filed in it too (FAISS 1.7.3's own add
    # files them under ids it never sets)
    y = rand(10, d, 10)
    fx.ok("add_vectors", index_id=ivf, vectors=vl(y))
    r = fx.ok("search_and_reconstruct", index_id=ivf, query_vectors=vl(y), k=1,
              params={"nprobe": 2})
    for i, q in enumerate(r["results"]):
        assert q["indices"][0] == 30 + i
        np.testing.assert_allclose(q["vectors"][0], y[i], rtol=1e-6)
    np.testing.assert_allclose(fx.ok("reconstruct", index_id=ivf, idx=5)["vector"], x[5],
                               rtol=1e-6)


def test_binary_index(fx):
    name, d = unique("fx-bin"), 64
    rng = np.random.default_rng(10)
    bits = rng.integers(0, 2, size=(40, d)).astype(np.float64)
    r = fx.ok("create_index", index_id=name, dimension=d, index_type="BINARY_FLAT")
    assert r["is_binary"] is True and r["dimension_bytes"] == 8 and "index_id" not in r
    fx.ok("add_vectors", index_id=name, vectors=bits.tolist())
    r = fx.ok("search", index_id=name, query_vectors=bits[:3].tolist(), k=2)
    assert r["is_binary"] is True
    packed = np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")
    ref = faiss.IndexBinaryFlat(d)
    ref.add(packed)
    D0, I0 = ref.search(packed[:3], 2)
    D, I = results(r)
    np.testing.assert_array_equal(I[:, 0], I0[:, 0])
    np.testing.assert_array_equal(D, D0)
    r = fx.ok("reconstruct", index_id=name, id=3)
    assert r["vector"] == bits[3].tolist()


def test_lists_stats_reset_clear_delete(fx):
    d = 8
    a, b = unique("fx-la"), unique("fx-lb")
    fx.ok("create_index", index_id=a, dimension=d)
    fx.ok("create_index", index_id=b, dimension=d, index_type="HNSW16")
    fx.ok("add_vectors", index_id=a, vectors=vl(rand(7, d, 11)))
    for action in ("list_indices", "list_indexes"):
        got = {i["index_id"]: i for i in fx.ok(action)["indexes"]}
        assert got[a]["vector_count"] == 7 and got[a]["dimension"] == d
        assert got[b]["index_type"] == "IndexHNSWFlat"
    r = fx.ok("get_index_stats", index_id=a)
    assert (r["index_id"], r["dimension"], r["ntotal"], r["is_trained"]) == (a, d, 7, True)
    r = fx.ok("get_index_info", index_id=a)
    assert r["status"]["ntotal"] == 7 and r["metrics"]["vectors_count"] == 7
    assert r["configuration"]["metric"] == "L2"
    st = fx.ok("get_index_status", index_id=b)["status"]
    assert st["hnsw_m"] == 16 and st["ef_search"] == 16 and st["ef_construction"] == 40
    assert fx.ok("reset", index_id=a)["message"] == "Index %s has been reset" % a
    assert fx.ok("get_index_stats", index_id=a)["ntotal"] == 0
    r = fx.ok("clear", index_id=b)
    assert r["type"] == "IndexFlatL2" and r["index_id"] == b
    r = fx.ok("delete_index", index_id=a)
    assert r["message"] == "Index %s deleted successfully" % a and r["index_id"] == a
    assert fx.err("delete_index", index_id=a)["error"] == "Index %s not found" % a
    assert fx.err("get_index_stats", index_id=a)["error"] == "Index %s not found" % a


def test_merge_hybrid_clustering(fx):
    d = 8
    x1, x2 = rand(20, d, 12), rand(30, d, 13)
    t, s1, s2 = unique("fx-mt"), unique("fx-ms"), unique("fx-ms")
    for n, x in ((t, None), (s1, x1), (s2, x2)):
        fx.ok("create_index", index_id=n, dimension=d)
        if x is not None:
            fx.ok("add_vectors", index_id=n, vectors=vl(x))
    r = fx.ok("merge_indices", target_index_id=t, source_index_ids=[s1, s2])
    assert r["ntotal"] == 50 and r["merged_stats"][s2]["vectors_added"] == 30
    r = fx.ok("reconstruct_n", index_id=t, start_idx=0, num_vectors=50)
    np.testing.assert_allclose(r["vectors"], np.vstack([x1, x2]), rtol=1e-6)
    assert fx.err("merge_indices", target_index_id=t, source_index_ids=[])["error"] == \
        "No source indices provided for merging"
    assert fx.err("merge_indices", target_index_id=t, source_index_ids=["nope-x"])["error"] == \
        "Source index nope-x not found"
    r = fx.ok("hybrid_search", index_id=t, query_vectors=vl(x1[:2]), k=1, vector_weight=0.5)
    assert [q["indices"][0] for q in r["results"]] == [0, 1]
    # k-means: two far-apart blobs are found
    rng = np.random.default_rng(14)
    pts = np.vstack([rng.normal(0, 0.1, (40, 4)), rng.normal(10, 0.1, (40, 4))])
    r = fx.ok("compute_clustering", vectors=vl(pts), n_clusters=2, niter=10)
    a = np.array(r["assignments"])
    assert len(set(a[:40])) == 1 and len(set(a[40:])) == 1 and a[0] != a[40]
    assert sorted(r["cluster_sizes"]) == [40, 40] and r["dimension"] == 4
    c = np.array(r["centroids"])
    np.testing.assert_allclose(sorted(c[:, 0]), [pts[:40, 0].mean(), pts[40:, 0].mean()],
                               atol=1e-3)
    assert r["obj"] > 0


def test_bad_input_gets_faissx_errors(server, fx):
    # not a map: a broken request of ours, answered as our contract says
    fx.sock.send(msgpack.packb([1, 2, 3]))
    assert fx.sock.recv()[:1] != b"\x00"
    ours = server.client()
    h, _, _ = ours.raw(msgpack.packb([1, 2, 3]))
    assert h["error_type"] == "protocol_error"
    assert fx.raw(msgpack.packb({"foo": 1}))["error"] == "Unknown action"
    r = fx.err("no_such_action")
    assert r["error"] == "Unknown action" and "version" in r
    r = fx.err("recluster_index", index_id="x")
    assert "not served" in r["error"] and "recluster_index" in r["error"]
    name, d = unique("fx-bad"), 8
    fx.ok("create_index", index_id=name, dimension=d)
    r = fx.err("add_vectors", index_id=name, vectors=vl(rand(2, 4, 1)))
    assert r["error"] == "Vector dimension mismatch: expected 8, got 4"
    r = fx.err("add_vectors", index_id=name, vectors=[[1.0] * 8, [1.0] * 7])
    assert "Invalid vectors" in r["error"]
    r = fx.err("add_vectors", index_id=name, vectors="nope")
    assert "Invalid vectors" in r["error"]
    r = fx.err("add_vectors", index_id=name, vectors=[["a"] * 8])
    assert "numbers" in r["error"]
    r = fx.err("add_vectors", index_id=name, vectors=[[float("nan")] * 8])
    r = fx.err("search", index_id=name, query_vectors=vl(rand(1, 3, 1)), k=1)
    assert r["error"] == "Query dimension mismatch: expected 8, got 3"
    assert fx.err("search", index_id=name, query_vectors=vl(rand(1, 8, 1)), k=0)["error"] == \
        "k=0 out of range (1-100000)"
    assert fx.err("search", index_id=name, query_vectors=vl(rand(1, 8, 1)), k="x")["error"] == \
        "Invalid k: must be an integer"
    assert fx.err("add_vectors", index_id="missing-ix", vectors=vl(rand(1, 8, 1)))["error"] == \
        "Index missing-ix does not exist"
    assert "Invalid index_id" in fx.err("add_vectors", index_id=5, vectors=[[1.0]])["error"]
    # nothing was added by the failures, and the server still serves both formats
    assert fx.ok("get_index_stats", index_id=name)["ntotal"] == 0
    assert server.client().ping()["protocol"] == 1
    assert server.alive()


def test_auth(make_server):
    s = make_server(api_keys=AUTH_KEYS)
    anon = FX(s.endpoint)
    assert anon.ok("ping")["message"] == "pong"  # exempt
    r = anon.err("list_indexes")
    assert (r["error"], r["error_code"]) == ("API key required", "AUTH_ERROR")
    assert "version" not in r
    r = FX(s.endpoint, api_key="nope").err("list_indexes")
    assert (r["error"], r["error_code"]) == ("Invalid API key", "AUTH_ERROR")
    r = anon.err("list_indexes", api_key=123)
    assert r["error"] == "Invalid API key"
    r = FX(s.endpoint, api_key="k1", tenant_id="bob").err("list_indexes")
    assert (r["error"], r["error_code"]) == ("Invalid tenant ID", "AUTH_ERROR")
    r = anon.err("no_such_action")  # auth first, as FAISSx
    assert r["error"] == "API key required"
    alice, bob = FX(s.endpoint, api_key="k1"), FX(s.endpoint, api_key="k2")
    alice.ok("create_index", index_id="docs", dimension=4)
    alice.ok("add_vectors", index_id="docs", vectors=[[1.0, 2, 3, 4]])
    # tenants are separate (FAISSx itself shares one namespace)
    assert [i["index_id"] for i in bob.ok("list_indexes")["indexes"]] == []
    assert bob.err("get_index_stats", index_id="docs")["error"] == "Index docs not found"
    bob.ok("create_index", index_id="docs", dimension=8)
    assert FX(s.endpoint, api_key="k3").ok("get_index_stats", index_id="docs")["ntotal"] == 1
    # our protocol sees alice's FAISSx index in alice's tenant
    info = s.client(api_key="k1").info("docs")
    assert info["ntotal"] == 1 and info["dimension"] == 4
    for c in (anon, alice, bob):
        c.close()


def test_readable_through_ours_and_survives_restart(fresh_server):
    s = fresh_server
    fx = FX(s.endpoint)
    d = 8
    x = rand(100, d, 15)
    fx.ok("create_index", index_id="persist", dimension=d, index_type="IVF4")
    fx.ok("train_index", index_id="persist", training_vectors=vl(x))
    fx.ok("add_vectors", index_id="persist", vectors=vl(x))
    fx.ok("set_parameter", index_id="persist", parameter="nprobe", value=4)
    fx.ok("create_index", index_id="ids", dimension=d, index_type="IDMap:L2")
    fx.ok("add_with_ids", index_id="ids", vectors=vl(x[:5]), ids=[5, 6, 7, 8, 9])
    ours = s.client()
    D, I, _ = ours.search("persist", x[:3], 1)
    assert I[:, 0].tolist() == [0, 1, 2]
    fx.close()
    s.restart(hard=True)  # kill -9: the write-ahead log holds every acknowledged write
    fx = FX(s.endpoint)
    r = fx.ok("get_index_stats", index_id="persist")
    assert r["ntotal"] == 100 and r["is_trained"] is True
    assert fx.ok("get_parameter", index_id="persist", parameter="nprobe")["param_value"] == 4
    r = fx.ok("search", index_id="persist", query_vectors=vl(x[:3]), k=1)
    assert [q["indices"][0] for q in r["results"]] == [0, 1, 2]
    r = fx.ok("search", index_id="ids", query_vectors=vl(x[2:3]), k=1)
    assert r["results"][0]["indices"] == [7]
    fx.close()


FAISSX_SCRIPT = r"""
import sys, numpy as np
from faissx import client as faiss
faiss.configure(server=sys.argv[1])
d = 8
rng = np.random.default_rng(0)
x = rng.random((100, d)).astype("float32")
idx = faiss.IndexFlatL2(d)
idx.add(x)
assert idx.ntotal == 100, idx.ntotal
D, I = idx.search(x[:5], 3)
assert I[:, 0].tolist() == [0, 1, 2, 3, 4], I
v = idx.reconstruct(7)
assert np.allclose(v, x[7]), v
# IDMap2: ids, remove_ids and replace_vector, the last two sent as actions
# FAISSx's own server does not dispatch
m = faiss.IndexIDMap2(faiss.IndexFlatL2(d))
ids = np.arange(100, dtype="int64") * 10 + 5
m.add_with_ids(x, ids)
D, I = m.search(x[:3], 1)
assert I[:, 0].tolist() == ids[:3].tolist(), I
m.remove_ids(np.array([ids[0], ids[1]], dtype="int64"))
assert m.ntotal == 98, m.ntotal
D, I = m.search(x[:1], 1)
assert I[0, 0] not in (ids[0], ids[1]), I
new = rng.random(d).astype("float32")
m.replace_vector(int(ids[50]), new)
D, I = m.search(new.reshape(1, -1), 1)
assert I[0, 0] == ids[50] and D[0, 0] < 1e-6, (D, I)
print("FAISSX-CLIENT-OK")
"""


def test_faissx_own_client(server, tmp_path):
    """FAISSx's own Python client, when it is installed or FAISSX_SOURCE names a checkout."""
    env = dict(os.environ)
    src = os.environ.get("FAISSX_SOURCE")
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    probe = subprocess.run([sys.executable, "-c", "import faissx.client"], env=env,
                           capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("FAISSx's client is not importable (set FAISSX_SOURCE to a checkout)")
    script = tmp_path / "use_faissx.py"
    script.write_text(FAISSX_SCRIPT)
    p = subprocess.run([sys.executable, str(script), server.endpoint], env=env,
                       capture_output=True, timeout=120, text=True)
    assert p.returncode == 0 and "FAISSX-CLIENT-OK" in p.stdout, p.stdout + p.stderr
