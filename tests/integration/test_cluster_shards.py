"""Sharded indexes in a cluster (docs/cluster.md, "Sharding"): three real
nats-server processes and three nodes on loopback.

Proves that an index of S shards answers add, search (filtered, keyed and
unkeyed), range_search, delete_vector and reconstruct exactly as one plain
server given the same requests, whatever node each request goes through;
that unkeyed labels are FAISS's numbering; that ntotal sums over the shards
and the shard map spreads shards over nodes; that an IVF is trained once
(every shard shares the quantizer) and answers as one server; that
operations not served on a sharded index say so; that export_index gives one
FAISS index of every shard's vectors; and that a node restarted
on an empty data dir rebuilds its shards from the streams.
"""
import shutil
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
    c = Cluster(str(tmp_path_factory.mktemp("shards"))).start()
    yield c
    c.stop()


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


def codes(n, d, seed):
    """n binary vectors of d bits."""
    return np.random.default_rng(seed).integers(0, 256, (n, d // 8), dtype="uint8")


def run_same(cs, plain, name, index_type, shards, d, train=None, binary=False):
    """The same requests to the cluster (rotating nodes) and to one server;
    binary: the index is a binary one, d in bits."""
    vec = codes if binary else rand
    width = d // 8 if binary else d
    kind = {"dtype": "uint8"} if binary else {}
    h = {"operation": "create_index", "index_id": name, "dimension": d,
         "index_type": index_type}
    info = cs[0].ok(dict(h, shards=shards))[2]
    plain.ok(h)
    assert info["shards"] == shards and len(info["shard_map"]) == shards
    assert len({tuple(n) for n in info["shard_map"]}) == min(shards, 3)  # spread
    if train is not None:
        hd = dict({"operation": "train", "index_id": name, "vector_shape": [len(train), width]},
                  **kind)
        got = cs[1].ok(hd, train.tobytes())
        assert got[2]["is_trained"]
        plain.ok(hd, train.tobytes())
    writes = []
    add = dict({"operation": "add_vectors", "index_id": name, "vector_shape": [30, width]},
               **kind)
    for i in range(4):
        writes.append((add, vec(30, d, 100 + i).tobytes(), None))
        items = [{"id": "k%d" % (i * 30 + j),
                  "metadata": {"color": "red" if j % 3 == 0 else "blue"}} for j in range(30)]
        writes.append((add, vec(30, d, 200 + i).tobytes(), items))
    writes.append(({"operation": "delete_vector", "index_id": name,
                    "vector_ids": ["k1", "k5", 3, 64]}, b"", None))
    for i, (hd, data, meta) in enumerate(writes):
        want = plain.call(hd, data, meta)
        got = cs[i % len(cs)].call(hd, data, meta)
        assert want[0]["status"] == "ok", want
        assert got == want, (hd, got, want)
    q = vec(5, d, 999)
    for c in cs:
        assert c.info(name)["ntotal"] == plain.info(name)["ntotal"] == 236
        for extra, filt in (({}, None), ({"include_metadata": True}, None), ({}, {"color": "red"})):
            hd = dict({"operation": "search", "index_id": name, "k": 7,
                       "vector_shape": [5, width]}, **kind, **extra)
            assert c.call(hd, q.tobytes(), filt) == plain.call(hd, q.tobytes(), filt)
        hd = dict({"operation": "range_search", "index_id": name,
                   "radius": d // 2 - 4 if binary else 1.2, "vector_shape": [5, width]}, **kind)
        got, want = c.call(hd, q.tobytes()), plain.call(hd, q.tobytes())
        assert got[0] == want[0] and sorted_range(got) == sorted_range(want)
        assert got[0]["nres"] > 0
        for label in (0, 7, 45, 119, 200):
            hd = {"operation": "reconstruct", "index_id": name, "label": label}
            assert c.call(hd) == plain.call(hd)
        hd = {"operation": "reconstruct_n", "index_id": name, "i0": 4, "n": 6}
        assert c.call(hd) == plain.call(hd)
    return q


def test_flat_answers_as_one_server_and_faiss(cl, fresh_server):
    import faiss
    plain = fresh_server.client()
    cs = clients(cl)
    d = 8
    for shards in (3, 2):
        name = unique("flat")
        q = run_same(cs, plain, name, "Flat", shards, d)
        # unkeyed labels are FAISS's numbering: the first add is labels 0..29
        # (label 3 was deleted since)
        ref = faiss.IndexIDMap(faiss.IndexFlatL2(d))
        keep = np.array([i for i in range(30) if i != 3], dtype="int64")
        ref.add_with_ids(rand(30, d, 100)[keep], keep)
        D, I = ref.search(q, 3)
        hd = {"operation": "search", "index_id": name, "k": 3, "vector_shape": [5, d],
              "id_selector": {"range": [0, 30]}}
        h, data, _ = cs[2].ok(hd, q.tobytes())
        assert np.array_equal(np.frombuffer(data[5 * 3 * 4:], dtype="<i8").reshape(5, 3), I)
        assert np.allclose(np.frombuffer(data[:5 * 3 * 4], dtype="<f4").reshape(5, 3), D,
                           rtol=1e-5)
        listed = [i for i in cs[1].list() if i["index_id"] == name]
        assert len(listed) == 1 and listed[0]["ntotal"] == 236 and listed[0]["shards"] == shards
        assert not any(i["index_id"].startswith(".") for i in cs[0].list())
        cs[0].drop(name)
        plain.drop(name)
        assert all(i["index_id"] != name for i in cs[2].list())


@pytest.mark.parametrize("index_type", ["IVF4,Flat", "PQ4np"])  # np: no polysemous annealing
def test_trained_once_answers_as_one_server(cl, index_type):
    cs = clients(cl)
    d = 8
    name = unique("trained")
    train = rand(400, d, 5)
    # One server's training differs from run to run: it is given the
    # cluster's trained quantizer instead, through export/import.
    cs[0].ok({"operation": "create_index", "index_id": name, "dimension": d,
              "index_type": index_type, "shards": 3})
    assert cs[1].train(name, train)["is_trained"]
    assert all(not i["index_id"].startswith(".") for i in cs[0].list())  # shards unlisted
    x = rand(300, d, 6)
    assert cs[2].add(name, x)["ntotal"] == 300
    # Every shard holds the one trained index: a search probing every list
    # of the IVF is exact, as FAISS's flat search of the same vectors.
    import faiss
    ref = faiss.IndexFlatL2(d)
    ref.add(x)
    q = rand(4, d, 7)
    D, I = ref.search(q, 5)
    answers = []
    for c in cs:
        # Read-your-writes holds through the node that took the add
        # (docs/cluster.md); another node's replicas may still be applying it.
        deadline = time.time() + 30
        while c.info(name)["ntotal"] != 300 and time.time() < deadline:
            time.sleep(0.05)
        info = c.info(name)
        assert info["is_trained"] and info["ntotal"] == 300
        if index_type.startswith("IVF"):
            _, got, _ = c.search(name, q, 5, params={"nprobe": 4})
            assert np.array_equal(got, I)
        answers.append(c.search(name, q, 5)[:2])
    # every node gives the same answer: one quantizer, the same shards
    for Dv, Iv in answers[1:]:
        assert np.array_equal(Dv, answers[0][0]) and np.array_equal(Iv, answers[0][1])
    # export_index: one FAISS index holding every shard's vectors, in the
    # order they were added (unkeyed labels 0..299), with the one training
    blob = cs[2].ok({"operation": "export_index", "index_id": name})[1]
    exp = faiss.deserialize_index(np.frombuffer(blob, "uint8").copy())
    assert type(exp).__name__ == ("IndexIVFFlat" if index_type.startswith("IVF") else "IndexPQ")
    assert exp.ntotal == 300
    if index_type.startswith("IVF"):
        exp.nprobe = 4
        assert np.array_equal(exp.search(q, 5)[1], I)
        qz = cs[0].ok({"operation": "export_index", "index_id": name, "part": "quantizer"})[1]
        assert faiss.deserialize_index(np.frombuffer(qz, "uint8").copy()).ntotal == 4
    else:
        codes = faiss.vector_to_array(exp.codes).reshape(300, -1)
        assert np.array_equal(codes, exp.sa_encode(x))
        assert np.array_equal(exp.search(q, 5)[1], answers[0][1])
    if index_type.startswith("IVF"):  # set_params reaches every shard
        cs[1].ok({"operation": "set_params", "index_id": name, "name": "nprobe", "value": 4})
        for c in cs:
            assert np.array_equal(c.search(name, q, 5)[1], I)
    cs[0].drop(name)


def test_binary_answers_as_one_server_and_faiss(cl, fresh_server):
    """A sharded binary index (rows of d/8 bytes, int32 Hamming distances)
    answers as one server; a binary IVF is trained once and, probing every
    list, finds FAISS's exact distances."""
    import faiss
    plain = fresh_server.client()
    cs = clients(cl)
    d = 64
    name = unique("bflat")
    run_same(cs, plain, name, "BFlat", 3, d, binary=True)
    # export_index: the codes FAISS reads back are one server's (FAISS 1.7.3
    # cannot merge binary flat indexes: the shards' codes are appended)
    want = plain.ok({"operation": "export_index", "index_id": name})[1]
    for c in cs:
        got = c.ok({"operation": "export_index", "index_id": name})[1]
        assert got == want
    h = cs[0].error({"operation": "remove_ids", "index_id": name, "ids": [1]})
    assert h["error_type"] == "unsupported"  # FAISS renumbers a binary flat
    cs[0].drop(name)
    plain.drop(name)

    name = unique("bivf")
    cs[0].ok({"operation": "create_index", "index_id": name, "dimension": d,
              "index_type": "BIVF4", "shards": 3})
    train = codes(200, d, 31)
    assert cs[1].ok({"operation": "train", "index_id": name, "vector_shape": [200, d // 8],
                     "dtype": "uint8"}, train.tobytes())[2]["is_trained"]
    x = codes(300, d, 32)
    got = cs[2].ok({"operation": "add_vectors", "index_id": name, "vector_shape": [300, d // 8],
                    "dtype": "uint8"}, x.tobytes())
    assert got[2]["ntotal"] == 300
    cs[2].ok({"operation": "set_params", "index_id": name, "name": "nprobe", "value": 4})
    removed = cs[0].ok({"operation": "remove_ids", "index_id": name, "ids": list(range(10))})
    assert removed[2]["removed"] == 10
    ref = faiss.IndexBinaryFlat(d)
    ref.add(x[10:])
    q = codes(4, d, 33)
    D, _ = ref.search(q, 5)
    hd = {"operation": "search", "index_id": name, "k": 5, "vector_shape": [4, d // 8],
          "dtype": "uint8"}
    answers = []
    for c in cs:
        deadline = time.time() + 30
        while c.info(name)["ntotal"] != 290 and time.time() < deadline:
            time.sleep(0.05)
        h, data, _ = c.ok(hd, q.tobytes())
        assert h["distance_dtype"] == "int32" and h["shape"] == [4, 5]
        Dg = np.frombuffer(data[:4 * 5 * 4], dtype="<i4").reshape(4, 5)
        Ig = np.frombuffer(data[4 * 5 * 4:], dtype="<i8").reshape(4, 5)
        assert np.array_equal(Dg, D)  # exact: every list probed
        assert Ig.min() >= 10
        for qi in range(4):  # each hit is at the distance reported
            for j in range(5):
                bits = np.unpackbits(np.bitwise_xor(q[qi], x[Ig[qi, j]])).sum()
                assert bits == Dg[qi, j]
        answers.append(data)
    assert all(a == answers[0] for a in answers)
    cs[0].drop(name)


def test_unkeyed_add_sent_again_is_applied_once(cl):
    """An unkeyed add sent again with the same client_id and request_id (a
    retry after unavailable, through any node) takes the labels it took the
    first time, so each shard drops it as a duplicate: applied once."""
    cs = clients(cl)
    d, name = 8, unique("again")
    cs[0].ok({"operation": "create_index", "index_id": name, "dimension": d, "shards": 3})
    x = rand(30, d, 11)
    h = {"operation": "add_vectors", "index_id": name, "vector_shape": [30, d],
         "client_id": "shard-retry-client", "request_id": 7}
    first = cs[0].call(h, x.tobytes())
    assert first[0]["status"] == "ok" and first[2]["ntotal"] == 30
    for c in cs:
        assert c.call(h, x.tobytes())[0]["status"] == "ok"
    for c in cs:
        assert c.info(name)["ntotal"] == 30
        _, I, _ = c.search(name, x, 1)
        assert I[:, 0].tolist() == list(range(30))  # the first labels, each vector once
    # another request_id is another add; the same request_id for another add is refused
    assert cs[1].call(dict(h, request_id=8), x.tobytes())[2]["ntotal"] == 60
    e = cs[2].error(dict(h, vector_shape=[5, d]), x[:5].tobytes())
    assert e["error_type"] == "validation_error" and "request_id" in e["message"]
    assert cs[0].info(name)["ntotal"] == 60
    cs[0].drop(name)


def test_unsupported_and_bad_shards(cl):
    c = clients(cl)[0]
    name = unique("bad")
    h = c.error({"operation": "create_index", "index_id": name, "dimension": 4, "shards": 65})
    assert h["error_type"] == "validation_error"
    c.ok({"operation": "create_index", "index_id": name, "dimension": 4, "shards": 2})
    h = c.error({"operation": "remove_ids", "index_id": name, "ids": [1]})
    assert h["error_type"] == "unsupported"
    c.add(name, rand(8, 4, 4))
    h = c.error({"operation": "search", "index_id": name, "k": 2, "vector_shape": [1, 4],
                 "reconstruct": True}, rand(1, 4, 5).tobytes())
    assert h["error_type"] == "unsupported" and "sharded" in h["message"], h
    h = c.error({"operation": "get_index_info", "index_id": ".shard-" + "0" * 32 + "-0"})
    assert h["error_type"] == "validation_error"
    c.drop(name)


def test_ivf_fast_scan_export_is_one_servers(cl, fresh_server):
    """A sharded IVF fast-scan index (lists of codes packed in blocks, which
    FAISS 1.7.3 cannot append to in a merge) exports what one server does:
    FAISS's own search of either export, probing every list for every
    vector, gives each label the same distance."""
    import faiss
    plain, cs = fresh_server.client(), clients(cl)
    d, name = 8, unique("ivffs")
    h = {"operation": "create_index", "index_id": name, "dimension": d,
         "index_type": "IVF2,PQ2x4fs"}
    cs[0].ok(dict(h, shards=3))
    plain.ok(h)
    t = rand(200, d, 18)
    for c in (cs[2], plain):
        assert c.train(name, t)["is_trained"]
        c.add(name, rand(80, d, 19))
        assert c.delete(name, [5, 60])["deleted"] == 2
    q = rand(4, d, 20)

    def distances(c):
        blob = c.ok({"operation": "export_index", "index_id": name})[1]
        exp = faiss.deserialize_index(np.frombuffer(blob, "uint8").copy())
        assert type(exp).__name__ == "IndexIVFPQFastScan" and exp.ntotal == 78
        exp.nprobe = 2
        D, I = exp.search(q, 78)
        return [dict(zip(I[i].tolist(), D[i].tolist())) for i in range(4)]

    want = distances(plain)
    assert all(len(w) == 78 and 5 not in w for w in want)
    assert distances(cs[1]) == want
    cs[0].drop(name)
    plain.drop(name)


def test_fast_scan_export_is_one_servers(cl, fresh_server):
    """A sharded PQ fast-scan index (codes packed in blocks) exports the codes
    one server holds, put in label order: FAISS decodes the same vectors under
    the same labels from both exports."""
    import faiss
    plain, cs = fresh_server.client(), clients(cl)
    d, name = 8, unique("pqfs")
    h = {"operation": "create_index", "index_id": name, "dimension": d, "index_type": "PQ2x4fs"}
    cs[0].ok(dict(h, shards=3))
    plain.ok(h)
    t = rand(16, d, 8)  # as many points as centroids: k-means keeps them, one codebook
    for c in (cs[0], plain):
        assert c.train(name, t)["is_trained"]
        c.add(name, rand(70, d, 9))
        assert c.delete(name, [3, 40])["deleted"] == 2

    def decoded(c):
        blob = c.ok({"operation": "export_index", "index_id": name})[1]
        exp = faiss.deserialize_index(np.frombuffer(blob, "uint8").copy())
        assert isinstance(exp, faiss.IndexIDMap)
        ids = faiss.vector_to_array(exp.id_map)
        inner = faiss.downcast_index(exp.index)  # exp, which owns it, stays alive
        assert type(inner).__name__ == "IndexPQFastScan"
        return dict(zip(ids.tolist(), inner.reconstruct_n(0, exp.ntotal).tolist()))

    want = decoded(plain)
    assert len(want) == 68 and 3 not in want
    assert decoded(cs[1]) == want
    cs[0].drop(name)
    plain.drop(name)


def test_hnsw_export_is_built_from_every_shard(cl):
    """A sharded HNSW over flat storage exports one HNSW index FAISS reads,
    holding every shard's exact vectors under their labels, built again in
    label order: FAISS's own search of it finds each vector first."""
    import faiss
    c = clients(cl)[1]
    d, name = 8, unique("hnsw")
    c.ok({"operation": "create_index", "index_id": name, "dimension": d, "shards": 3,
          "index_type": "HNSW8"})
    x = rand(90, d, 17)
    c.add(name, x)
    blob = c.ok({"operation": "export_index", "index_id": name})[1]
    exp = faiss.deserialize_index(np.frombuffer(blob, "uint8").copy())
    assert type(exp).__name__ == "IndexHNSWFlat" and exp.ntotal == 90
    assert np.array_equal(exp.reconstruct_n(0, 90), x)  # label order, exact vectors
    exp.hnsw.efSearch = 64
    _, I = exp.search(x, 1)
    assert np.array_equal(I[:, 0], np.arange(90))
    c.drop(name)


@pytest.mark.parametrize("index_type", ["HNSW8,SQ8", "HNSW8,PQ2np", "HNSW8_4+PQ2"])
def test_hnsw_over_codes_export_is_one_servers(cl, fresh_server, index_type):
    """A sharded HNSW over SQ, PQ or two-level storage exports what one server
    holding the same vectors does: the same codes, in label order, under the
    same training, in a graph FAISS builds from their decoded vectors. With
    efSearch past ntotal FAISS's search of either export visits every vector,
    so both answer alike, distances included."""
    import faiss
    plain, cs = fresh_server.client(), clients(cl)
    d, name = 8, unique("hnswc")
    h = {"operation": "create_index", "index_id": name, "dimension": d,
         "index_type": index_type}
    cs[0].ok(dict(h, shards=3))
    plain.ok(h)
    t, x = rand(600, d, 21), rand(90, d, 22)
    for c in (cs[1], plain):
        assert c.train(name, t)["is_trained"]
        c.add(name, x[:50])
        c.add(name, x[50:])

    def exported(c):
        blob = c.ok({"operation": "export_index", "index_id": name})[1]
        return faiss.deserialize_index(np.frombuffer(blob, "uint8").copy())

    want, got = exported(plain), exported(cs[2])
    assert type(got) is type(want) and got.ntotal == want.ntotal == 90
    codes = [faiss.vector_to_array(faiss.downcast_index(e.storage).codes) for e in (want, got)]
    assert np.array_equal(codes[0], codes[1])
    q = rand(6, d, 23)
    for e in (want, got):
        e.hnsw.efSearch = 128
    Dw, Iw = want.search(q, 5)
    Dg, Ig = got.search(q, 5)
    assert np.array_equal(Iw, Ig) and np.array_equal(Dw, Dg)
    cs[0].drop(name)
    plain.drop(name)


def test_restart_empty_rebuilds_shards(cl):
    cs = clients(cl)
    d = 4
    name = unique("rebuild")
    cs[0].ok({"operation": "create_index", "index_id": name, "dimension": d, "shards": 3,
              "replicas": 2})
    x = rand(50, d, 3)
    cs[0].add(name, x)
    q = rand(3, d, 4)
    hd = {"operation": "search", "index_id": name, "k": 5, "vector_shape": [3, d]}
    want = cs[0].call(hd, q.tobytes())
    node = cl.nodes[2]
    node.stop()
    shutil.rmtree(node.data_dir)
    node.start()
    c = node.client()
    deadline = time.time() + 30
    while c.info(name)["ntotal"] != 50:
        assert time.time() < deadline
        time.sleep(0.1)
    assert c.call(hd, q.tobytes()) == want
    cs[0].drop(name)


def trained_through(c, name):
    # read-your-writes holds through the node that trained (docs/cluster.md); another
    # node's replicas apply the trained record a moment later
    deadline = time.time() + 30
    while not c.info(name)["is_trained"]:
        assert time.time() < deadline, "the trained index did not reach every node"
        time.sleep(0.05)


@pytest.mark.parametrize("shards", [2, 1])
def test_clustering_parameters_reach_the_one_training(cl, shards):
    """An IVF's k-means settings (set_params cp_...) set through one node are the ones the
    index's single training runs with, whichever node trains it: its centroids are
    in-process FAISS's k-means with those settings."""
    import faiss
    cs = clients(cl)
    d, name = 8, unique("cp")
    cs[0].ok({"operation": "create_index", "index_id": name, "dimension": d,
              "index_type": "IVF8,Flat", "shards": shards})
    settings = {"niter": 3, "seed": 42, "nredo": 2, "max_points_per_centroid": 30}
    for field, value in settings.items():
        cs[0].ok({"operation": "set_params", "index_id": name, "name": "cp_" + field,
                  "value": value})
    train = rand(1000, d, 8)
    assert cs[1].train(name, train)["is_trained"]
    ref = faiss.index_factory(d, "IVF8,Flat")
    for field, value in settings.items():
        setattr(ref.cp, field, value)
    ref.train(train)
    want = faiss.downcast_index(ref.quantizer).reconstruct_n(0, 8)
    plain = faiss.index_factory(d, "IVF8,Flat")
    plain.train(train)
    assert not np.array_equal(faiss.downcast_index(plain.quantizer).reconstruct_n(0, 8), want)
    for c in cs:
        trained_through(c, name)
        blob = c.ok({"operation": "export_index", "index_id": name})[1]
        exp = faiss.deserialize_index(np.frombuffer(blob, "uint8").copy())
        got = faiss.downcast_index(exp.quantizer).reconstruct_n(0, 8)
        np.testing.assert_array_equal(got, want)
    cs[0].drop(name)
    # a setting in FAISS's bytes that training reads: an IVF-PQ's by_residual
    name = unique("cpres")
    cs[2].ok({"operation": "create_index", "index_id": name, "dimension": d,
              "index_type": "IVF4,PQ2np", "shards": shards})
    cs[2].ok({"operation": "set_params", "index_id": name, "name": "by_residual", "value": 0})
    assert cs[0].train(name, rand(300, d, 9))["is_trained"]
    for c in cs:
        trained_through(c, name)
        blob = c.ok({"operation": "export_index", "index_id": name})[1]
        assert not faiss.deserialize_index(np.frombuffer(blob, "uint8").copy()).by_residual
    cs[0].drop(name)
