"""import_index in a cluster (docs/cluster.md, "Importing"): three real
nats-server processes (max_payload at NATS's 1 MB default, so that an import
of several MB takes several stream records) and three nodes on loopback.

Proves that an index written by in-process FAISS (Flat, IVF, HNSW) imported
through one node answers through every node exactly as FAISS does; that an
import larger than one NATS message is carried in several stream records and
rebuilt from them by a node restarted on an empty data dir (no peer holding
it) as well as from a peer's snapshot; that bad bytes get the single
server's error and leave nothing behind (no listed index, no definition in
the bucket, no stream); that an import with shards answers as one server
given the same import; and that the CLI's restore works against a cluster,
and its backup saves sharded indexes and restores them with their shards.
"""
import shutil
import time

import faiss
import numpy as np
import pytest

from cluster import (NATS_SERVER, Cluster, definition_stored, js_api, js_read, kv_delete,
                     streams, synced)
from conftest import unique
from wire import rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")

ONE_MB = 1 << 20


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cluster_import")), max_payload=ONE_MB)
    c.start()
    yield c
    c.stop()


def import_bytes(c, name, data, extra=None, meta=None):
    h = {"operation": "import_index", "index_id": name}
    h.update(extra or {})
    return c.call(h, data, meta)


def same_as_faiss(c, name, ref, d, params=None):
    q = rand(7, d, 4242)
    dist, lab, _ = c.search(name, q, 10, params=params)
    rd, rl = ref.search(q, 10)
    assert np.array_equal(lab, rl)
    assert np.allclose(dist, rd, rtol=1e-5, atol=1e-5)
    assert c.info(name)["ntotal"] == ref.ntotal


def build(kind, d, n, seed):
    x = rand(n, d, seed)
    if kind == "Flat":
        ix = faiss.IndexFlatL2(d)
    elif kind == "IVF":
        ix = faiss.index_factory(d, "IVF16,Flat")
        ix.train(x)
        ix.nprobe = 4
    else:
        ix = faiss.IndexHNSWFlat(d, 16)
    ix.add(x)
    return ix


@pytest.mark.parametrize("kind", ["Flat", "IVF", "HNSW"])
def test_import_served_by_every_node(cl, kind):
    """An index written by in-process FAISS, imported through node1, answers
    through every node as FAISS does, and goes on taking writes as one index."""
    d, name = 16, unique("imp" + kind.lower())
    ref = build(kind, d, 600, 1)
    cs = [n.client() for n in cl.nodes]
    h, _, info = import_bytes(cs[0], name, faiss.serialize_index(ref).tobytes())
    assert h["status"] == "ok", h
    assert info["ntotal"] == 600 and info["dimension"] == d
    assert sorted(info["replicas"]) == ["node1", "node2", "node3"]
    assert info["applied_seq"] == 1  # one stream record: it fits a NATS message
    for c in cs:
        same_as_faiss(c, name, ref, d)
    x = rand(40, d, 2)
    cs[1].add(name, x)
    # FAISS's HNSW add on more than one thread links the new vertices in the order
    # its threads reach them: the reference adds on one, as the nodes' build team
    # does on 2 cores (all cores but one).
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        ref.add(x)
    finally:
        faiss.omp_set_num_threads(threads)
    assert synced(cs, name) == 2
    for c in cs:
        same_as_faiss(c, name, ref, d)
    cs[2].drop(name)


def test_large_import_chunked_and_rebuilt(cl):
    """An import of about 6.4 MB (NATS's max_payload is 1 MB here) is written
    as several stream records; every node serves it; a node restarted on an
    empty data dir rebuilds it from a peer's snapshot, and the only node
    holding a replica (replicas 1), restarted on an empty data dir, rebuilds
    it from those stream records."""
    d = 64
    ref = build("Flat", d, 25000, 7)
    data = faiss.serialize_index(ref).tobytes()
    assert len(data) > 6 * ONE_MB
    cs = [n.client() for n in cl.nodes]
    name = unique("big")
    before = streams(cl)
    h, _, info = import_bytes(cs[0], name, data)
    assert h["status"] == "ok", h
    chunks = info["applied_seq"]
    assert chunks >= 7, info  # 6.4 MB in records under 1 MB
    new = streams(cl) - before
    assert len(new) == 1
    st = js_read(cl.nats[0].port, "$JS.API.STREAM.INFO." + new.pop())["state"]
    assert st["messages"] == chunks and st["first_seq"] == 1 and st["last_seq"] == chunks
    for c in cs:
        same_as_faiss(c, name, ref, d)
    assert synced(cs, name) == chunks

    # from a peer's snapshot
    victim = cl.nodes[1]
    victim.stop()
    shutil.rmtree(victim.data_dir)
    victim.start()
    back = victim.client()
    assert back.info(name)["applied_seq"] == chunks
    same_as_faiss(back, name, ref, d)

    # from the stream: node3 holds the only replica
    alone = unique("bigalone")
    c3 = cl.nodes[2].client()
    before = streams(cl)
    h, _, info = import_bytes(c3, alone, data, {"replicas": 1})
    assert h["status"] == "ok", h
    assert info["replicas"] == ["node3"]
    (stream,) = streams(cl) - before
    x = rand(30, d, 8)
    cs[0].add(alone, x)  # forwarded to node3: a record after the import
    ref.add(x)
    node = cl.nodes[2]
    node.kill9()  # no snapshot at the stop, and no trimming once it is down
    shutil.rmtree(node.data_dir)
    first = js_read(cl.nats[0].port, "$JS.API.STREAM.INFO." + stream)["state"]["first_seq"]
    node.start()
    back = node.client()
    if first == 1:
        log = node.log()
        assert "built from the import in stream records 1..%d" % chunks in log, log[-3000:]
        assert back.info(alone)["applied_seq"] == chunks + 1
        for c in [n.client() for n in cl.nodes]:
            same_as_faiss(c, alone, ref, d)
        back.drop(alone)
    else:
        # node3 trimmed the stream once its own snapshot covered the import
        # (every 5 s), before the kill: the only state is gone, and the index
        # says so rather than answer empty
        for c in [n.client() for n in cl.nodes]:
            e = c.call({"operation": "get_index_info", "index_id": alone})[0]
            assert e.get("error_type") == "unavailable" and "no state" in e["message"], e
        kv_delete(cl, "fpx_indexes", "default/" + alone)  # as an operator clears it
        js_api(cl.nats[0].port, "$JS.API.STREAM.DELETE." + stream)
    back.drop(name)


def test_bad_bytes_as_one_server_and_nothing_left(cl, client):
    """Bytes FAISS cannot read get the single server's error, through any
    node; no index is listed, no definition stored, no stream made. So are a
    taken name (also with shards) and a bad shards."""
    good = faiss.serialize_index(build("Flat", 8, 50, 3)).tobytes()
    bad = bytearray(good)
    bad[:4] = b"XXXX"
    cs = [n.client() for n in cl.nodes]
    had = streams(cl)
    for data in (bytes(bad), good[:len(good) // 2]):
        name = unique("bad")
        one, _, _ = import_bytes(client, name, data)
        assert one["status"] == "error", one
        for c in cs:
            h, _, _ = import_bytes(c, name, data)
            assert h["status"] == "error", h
            assert (h["error_type"], h["message"]) == (one["error_type"], one["message"])
            assert name not in [i["index_id"] for i in c.list()]
        assert not definition_stored(cl, name)
    name = unique("sharded")
    h, _, _ = import_bytes(cs[0], name, good, {"shards": 65})
    assert h["status"] == "error" and h["error_type"] == "validation_error", h
    assert "shards" in h["message"]
    assert not definition_stored(cl, name)
    assert streams(cl) == had

    name = unique("taken")
    cs[0].create(name, 8)
    assert definition_stored(cl, name)  # what the checks above would see
    had = streams(cl)
    for extra in (None, {"shards": 3}):
        h, _, _ = import_bytes(cs[1], name, good, extra)
        assert h["status"] == "error" and h["error_type"] == "already_exists", h
        assert streams(cl) == had
    assert cs[2].info(name)["ntotal"] == 0
    cs[0].drop(name)


def test_keys_and_metadata_come_with_the_import(cl):
    """The metadata section's items (a backup's keys) come with the import
    on every replica: searches give them, deletes by key work."""
    d, name = 8, unique("keyed")
    ref = build("Flat", d, 20, 5)
    items = [{"label": i, "id": "k%d" % i, "metadata": {"i": i}} for i in range(20)]
    cs = [n.client() for n in cl.nodes]
    h, _, info = import_bytes(cs[0], name, faiss.serialize_index(ref).tobytes(),
                              meta={"items": items})
    assert h["status"] == "ok", h
    assert info["has_keys"]
    q = rand(2, d, 6)
    want = cs[0].search(name, q, 3, include_metadata=True)
    for c in cs[1:]:
        got = c.search(name, q, 3, include_metadata=True)
        assert np.array_equal(got[1], want[1]) and got[2] == want[2]
    assert cs[1].delete(name, ["k3"])["deleted"] == 1
    synced(cs, name)
    for c in cs:
        assert c.info(name)["ntotal"] == 19
    cs[0].drop(name)


def test_cli_restore_into_cluster(cl, server, tmp_path):
    """A backup of one server (the CLI's backup) restores into the cluster
    through one node (restore imports), and every node answers as the
    server did."""
    from test_cli import ok as cli_ok
    one = server.client()
    d = 16
    x = rand(400, d, 11)
    plain, ivf = unique("rplain"), unique("rivf")
    one.create(plain, d)
    one.add(plain, x)
    one.create(ivf, d, "IVF8,Flat")
    one.train(ivf, x)
    one.add(ivf, x[:300], [{"id": "v%d" % i} for i in range(300)])
    q = x[:5] + 0.05
    before = {n: one.search(n, q, 4, include_metadata=True) for n in (plain, ivf)}
    bdir = str(tmp_path / "backup")
    cli_ok(server, "backup", bdir)
    r = cli_ok(cl.nodes[0], "restore", bdir)
    assert "restored" in r.stdout
    for c in [n.client() for n in cl.nodes]:
        for n in (plain, ivf):
            D, I, m = c.search(n, q, 4, include_metadata=True)
            assert np.array_equal(I, before[n][1]) and m == before[n][2]
            assert np.allclose(D, before[n][0], rtol=1e-6, atol=1e-6)
    c = cl.nodes[1].client()
    assert c.delete(ivf, ["v1"])["deleted"] == 1
    c.drop(plain)
    c.drop(ivf)


def test_cli_backup_of_sharded_indexes(cl, fresh_server, tmp_path):
    """The CLI's backup of a cluster's tenant saves its sharded indexes
    (export_index joins the shards), keys and metadata included: restored
    into one server, they answer as the cluster did."""
    from test_cli import ok as cli_ok
    cs = [n.client() for n in cl.nodes]
    d = 8
    x = rand(300, d, 21)
    flat, ivf = unique("bflat"), unique("bivf")
    cs[0].ok({"operation": "create_index", "index_id": flat, "dimension": d, "shards": 3})
    cs[0].add(flat, x[:100])
    cs[0].add(flat, x[100:200], [{"id": "f%d" % i, "metadata": {"i": i}} for i in range(100)])
    assert cs[0].delete(flat, ["f3", 7])["deleted"] == 2
    cs[1].ok({"operation": "create_index", "index_id": ivf, "dimension": d, "shards": 2,
              "index_type": "IVF4,Flat"})
    cs[1].train(ivf, x)
    cs[1].add(ivf, x, [{"id": "v%d" % i} for i in range(300)])
    q = x[:6] + 0.01
    for n in (flat, ivf):  # the replicas of every shard applied every write
        deadline = time.time() + 30
        while len({c.info(n)["write_seq"] for c in cs}) != 1:
            assert time.time() < deadline, "replicas did not converge"
            time.sleep(0.05)
    before = {n: cs[2].search(n, q, 5, include_metadata=True) for n in (flat, ivf)}
    bdir = str(tmp_path / "backup")
    cli_ok(cl.nodes[2], "backup", bdir)
    cli_ok(fresh_server, "restore", bdir)
    one = fresh_server.client()
    for n in (flat, ivf):
        D, I, m = one.search(n, q, 5, include_metadata=True)
        assert np.array_equal(I, before[n][1]) and m == before[n][2]
        assert np.allclose(D, before[n][0], rtol=1e-6, atol=1e-6)
    assert one.info(flat)["ntotal"] == 198 and one.info(ivf)["ntotal"] == 300
    assert one.delete(flat, ["f4"])["deleted"] == 1  # the keys came back
    # restored into the cluster, each index has its shards again
    cs[0].drop(flat)
    cs[0].drop(ivf)
    cli_ok(cl.nodes[1], "restore", bdir)
    for n, shards in ((flat, 3), (ivf, 2)):
        assert cs[2].info(n)["shards"] == shards
        for c in cs:
            D, I, m = c.search(n, q, 5, include_metadata=True)
            assert np.array_equal(I, before[n][1]) and m == before[n][2]
    cs[0].drop(flat)
    cs[0].drop(ivf)


def one_and_sharded(cl, server, name, blob, shards, meta=None):
    """The same import into one server and, with shards, into the cluster."""
    one = server.client()
    h = {"operation": "import_index", "index_id": name}
    one.ok(h, blob, meta)
    info = cl.nodes[0].client().ok(dict(h, shards=shards), blob, meta)[2]
    assert info["shards"] == shards and len(info["shard_map"]) == shards
    return one, [n.client() for n in cl.nodes]


def test_import_with_shards_answers_as_one_server(cl, fresh_server):
    """import_index with shards > 1 cuts FAISS's index into its shards
    (keyed vectors where their key routes them, others by label): every node
    answers as one server given the same import, before and after more adds
    (the label counter goes on from the imported labels)."""
    d = 8
    x = rand(400, d, 41)
    q = x[:6] + 0.02
    # a flat index with ids of its own, and an IVF trained in-process with
    # keys and metadata for some of its vectors
    ref = faiss.IndexIDMap(faiss.IndexFlatL2(d))
    ref.add_with_ids(x[:200], np.arange(200, dtype="int64") * 3 + 5)
    ivf = faiss.index_factory(d, "IVF4,Flat")
    ivf.train(x)
    ivf.add(x[:300])
    items = [{"label": i, "id": "v%d" % i, "metadata": {"i": i}} for i in range(0, 300, 2)]
    for name, idx, meta, shards in ((unique("ishflat"), ref, None, 3),
                                    (unique("ishivf"), ivf, {"items": items}, 2)):
        blob = faiss.serialize_index(idx).tobytes()
        one, cs = one_and_sharded(cl, fresh_server, name, blob, shards, meta)
        extra = {"params": {"nprobe": 4}} if idx is ivf else {}
        hd = dict({"operation": "search", "index_id": name, "k": 7, "vector_shape": [6, d],
                   "include_metadata": True}, **extra)
        want = one.call(hd, q.tobytes())
        assert want[0]["status"] == "ok"
        for c in cs:
            assert c.info(name)["ntotal"] == idx.ntotal
            assert c.call(hd, q.tobytes()) == want
        more = {"operation": "add_vectors", "index_id": name, "vector_shape": [20, d]}
        assert one.call(more, x[300:320].tobytes()) == cs[1].call(more, x[300:320].tobytes())
        deadline = time.time() + 30
        while len({c.info(name)["write_seq"] for c in cs}) != 1:
            assert time.time() < deadline, "replicas did not converge"
            time.sleep(0.05)
        want = one.call(hd, q.tobytes())
        for c in cs:
            assert c.call(hd, q.tobytes()) == want
        if meta:  # the keys came with their vectors, on their shards
            assert cs[2].delete(name, ["v4"])["deleted"] == one.delete(name, ["v4"])["deleted"] == 1
        one.drop(name)
        cs[0].drop(name)


def test_import_hnsw_over_codes_with_shards(cl, fresh_server):
    """An HNSW over SQ storage imported with shards is cut into its shards
    with its codes as they are (each shard's graph built from them): a
    search that visits every vector (efSearch past ntotal) answers as one
    server given the same import, distances included, and its export holds
    the imported codes."""
    d, name = 8, unique("ishhsq")
    idx = faiss.index_factory(d, "HNSW8,SQ8")
    x = rand(150, d, 44)
    idx.train(x)
    idx.add(x)
    blob = faiss.serialize_index(idx).tobytes()
    one, cs = one_and_sharded(cl, fresh_server, name, blob, 3)
    q = rand(5, d, 45)
    hd = {"operation": "search", "index_id": name, "k": 6, "vector_shape": [5, d],
          "params": {"efSearch": 256}}
    want = one.call(hd, q.tobytes())
    assert want[0]["status"] == "ok"
    for c in cs:
        assert c.call(hd, q.tobytes()) == want
    exp = faiss.deserialize_index(np.frombuffer(
        cs[1].ok({"operation": "export_index", "index_id": name})[1], "uint8").copy())
    codes = [faiss.vector_to_array(faiss.downcast_index(e.storage).codes) for e in (idx, exp)]
    assert np.array_equal(codes[0], codes[1])
    one.drop(name)
    cs[0].drop(name)


def test_import_with_shards_refused_whole(cl):
    """A type whose vectors cannot be left out cannot be cut into shards: a
    clear error, and nothing named."""
    d = 8
    idx = faiss.index_factory(d, "SQ8,RFlat")  # IndexRefine has no remove_ids
    x = rand(100, d, 43)
    idx.train(x)
    idx.add(x)
    name = unique("ishhnsw")
    c = cl.nodes[0].client()
    had = streams(cl)
    h = {"operation": "import_index", "index_id": name, "shards": 2}
    e = c.error(h, faiss.serialize_index(idx).tobytes())
    assert e["error_type"] == "unsupported" and "shards" in e["message"], e
    assert all(i["index_id"] != name for i in c.list())
    assert c.error({"operation": "get_index_info", "index_id": name})["error_type"] == "not_found"
    assert not definition_stored(cl, name) and streams(cl) == had


def test_merge_over_max_payload_refused_unfenced(cl):
    """A merge_from whose record would not fit NATS's max_payload (1 MB here)
    is refused before it is sent, and the other index is not left fenced: it
    takes writes at once, and neither index changed."""
    d = 64
    cs = [n.client() for n in cl.nodes]
    a, b = unique("mpa"), unique("mpb")
    cs[0].create(a, d)
    cs[0].create(b, d)
    for i in range(3):  # 1.5 MB in records under 1 MB
        cs[0].add(b, rand(2000, d, 80 + i))
    synced(cs, b)
    e = cs[1].error({"operation": "merge_from", "index_id": a, "other": b})
    assert e["error_type"] == "limit_exceeded" and "max_payload" in e["message"], e
    assert cs[2].add(b, rand(1, d, 90))["ntotal"] == 6001
    synced(cs, a)
    assert all(c.info(a)["ntotal"] == 0 for c in cs)
    cs[0].drop(a)
    cs[0].drop(b)
