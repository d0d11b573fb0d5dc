"""merge_from in a cluster (docs/cluster.md, "merge_from"): three real
nats-server processes and three nodes on loopback, beside one plain server.

Proves that merge_from through any node answers as one server's (Flat and a
trained IVF with add_id), the other index emptied on every node; that while
the other index is fenced its writes are refused, through any node, and a
fence whose node stopped before the merge (the stream record it writes
first, published here as that node would have) is finished by another node
within seconds: the vectors move once, the other is emptied and takes writes
again; and that a merge the target refuses, or that the other cannot give
(caller keys), leaves both indexes as they were and the other writable.
"""
import struct
import time

import faiss
import msgpack
import numpy as np
import pytest

from cluster import NATS_SERVER, Cluster, js_api, kv_value, synced
from conftest import unique
from wire import rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")

REC_MAGIC, WAL_FENCE = 0x52585046, 11  # src/cluster/log.c, src/server/store.h


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cluster_merge"))).start()
    yield c
    c.stop()


def clients(cl):
    return [n.client() for n in cl.nodes]


def ntotal_everywhere(cs, name, want, timeout=30):
    deadline = time.time() + timeout
    while True:
        got = [c.info(name)["ntotal"] for c in cs]
        if got == [want] * len(cs):
            return
        assert time.time() < deadline, (name, got, want)
        time.sleep(0.1)


def merge(c, a, b, add_id=None):
    h = {"operation": "merge_from", "index_id": a, "other": b}
    if add_id is not None:
        h["add_id"] = add_id
    return c.call(h)


@pytest.mark.parametrize("kind", ["Flat", "IVF"])
def test_merge_through_every_node_is_one_servers(cl, fresh_server, kind):
    plain, cs = fresh_server.client(), clients(cl)
    d = 8
    trained = None
    if kind == "IVF":  # both indexes of one training, as FAISS's merge needs
        ivf = faiss.index_factory(d, "IVF4,Flat")
        ivf.train(rand(200, d, 30))
        trained = faiss.serialize_index(ivf).tobytes()
    q = rand(5, d, 31)
    for i, via in enumerate(cs):
        a, b = unique("ma"), unique("mb")
        for c in (cs[0], plain):
            for name in (a, b):
                if trained is None:
                    c.create(name, d)
                else:
                    c.ok({"operation": "import_index", "index_id": name}, trained)
        xa, xb = rand(20, d, 32 + i), rand(12, d, 42 + i)
        for c in (cs[1], plain):
            c.add(a, xa)
            c.add(b, xb)
        ntotal_everywhere(cs, b, 12)
        add_id = 1000 if kind == "IVF" else None
        want = merge(plain, a, b, add_id)
        got = merge(via, a, b, add_id)
        assert want[0]["status"] == "ok" and got[2] == want[2], (got, want)
        assert got[2] == {"merged": 12, "ntotal": 32}
        ntotal_everywhere(cs, a, 32)
        ntotal_everywhere(cs, b, 0)
        params = {"nprobe": 4} if kind == "IVF" else None
        want_hits = plain.search(a, q, 6, params=params)
        for c in cs:
            D, I, _ = c.search(a, q, 6, params=params)
            assert np.array_equal(I, want_hits[1]) and np.array_equal(D, want_hits[0])
        # the other takes writes again, numbered as one server numbers them
        assert cs[2].add(b, xb[:3]) == plain.add(b, xb[:3])
        cs[0].drop(a)
        cs[0].drop(b)
        plain.drop(a)
        plain.drop(b)


def uid_of(cl, name):
    d = msgpack.unpackb(kv_value(cl, "fpx_indexes", "default/" + name), raw=False)
    return d["uid"]


def test_fence_left_by_a_stopped_node_is_finished(cl):
    """The target is held by node3 alone, so node3 alone can finish the merge;
    node3 restarts while the fence stands, and its replica of the other index
    keeps the fence (its snapshot carries it)."""
    cs = clients(cl)
    d = 8
    a, b = unique("fa"), unique("fb")
    cs[2].ok({"operation": "create_index", "index_id": a, "dimension": d, "replicas": 1})
    assert cs[0].info(a)["replicas"] == ["node3"]
    cs[0].create(b, d)
    xa, xb = rand(10, d, 50), rand(5, d, 51)
    cs[0].add(a, xa)
    cs[0].add(b, xb)
    synced(cs, b)
    # the first record of a merge of b into a, as a node writes it before it
    # stops: b's stream fenced, the merge itself never sent
    fence(cl, b, a, uid_of(cl, a), "ab" * 16)
    # b's writes are refused meanwhile, through any node; reads go on
    add1 = {"operation": "add_vectors", "index_id": b, "vector_shape": [1, d]}
    e = cs[1].error(add1, xb[:1].tobytes())
    assert e["error_type"] == "unavailable" and "being merged" in e["message"], e
    assert cs[0].error({"operation": "reset", "index_id": b})["error_type"] == "unavailable"
    assert cs[0].info(b)["ntotal"] == 5
    assert [c.info(b).get("merging_into") for c in cs] == [a] * 3
    assert "merging_into" not in cs[0].info(a)
    # node3 restarts (a clean stop snapshots its replicas): still fenced there
    cl.nodes[2].stop()
    cl.nodes[2].start()
    restarted = time.time()
    cs = clients(cl)
    e = cs[2].error(add1, xb[:1].tobytes())
    assert e["error_type"] == "unavailable" and "being merged" in e["message"], e
    # node3, holding both, finishes it after its grace (15 s): b's vectors in
    # a once, after a's, and b emptied
    ntotal_everywhere(cs, b, 0, timeout=90)
    assert time.time() - restarted > 10
    ntotal_everywhere(cs, a, 15)
    for c in cs:
        _, I, _ = c.search(a, xb, 1)
        assert I[:, 0].tolist() == list(range(10, 15))
    assert "finished a merge_from into '%s' that its node left undone" % a in cl.nodes[2].log()
    # and b takes writes again
    assert [c.info(b).get("merging_into") for c in cs] == [None] * 3
    assert cs[1].add(b, xb[:2])["ntotal"] == 2
    cs[0].drop(a)
    cs[0].drop(b)


def fence(cl, other, to, to_uid, merge_id):
    """Publishes the fence record a node writes first when it merges other
    into to, as that node would, to other's stream."""
    meta = msgpack.packb({"merge_id": merge_id, "to": to, "to_uid": bytes.fromhex(to_uid),
                          "add_id": 0}, use_bin_type=True)
    rec = struct.pack("<IIIIQQQ", REC_MAGIC, WAL_FENCE, 0, 0, 0, 0, len(meta)) + meta
    ack = js_api(cl.nats[0].port, "fpx.log." + uid_of(cl, other), rec,
                 headers={"Nats-Msg-Id": "test-fence-" + merge_id})
    assert "seq" in ack, ack


def test_fence_of_a_deleted_target_is_lifted(cl):
    """A fence whose target is deleted (no merge into it can happen) is lifted
    by a node holding the other index after the grace: it keeps its vectors
    and takes writes again."""
    cs = clients(cl)
    d = 8
    b = unique("ob")
    cs[0].create(b, d)
    cs[0].add(b, rand(5, d, 55))
    synced(cs, b)
    fence(cl, b, "deleted-target", "cd" * 16, "ef" * 16)
    add1 = {"operation": "add_vectors", "index_id": b, "vector_shape": [1, d]}
    assert cs[1].error(add1, rand(1, d, 56).tobytes())["error_type"] == "unavailable"
    deadline = time.time() + 90
    while cs[1].call(add1, rand(1, d, 56).tobytes())[0]["status"] != "ok":
        assert time.time() < deadline, "the fence was not lifted"
        time.sleep(0.5)
    ntotal_everywhere(cs, b, 6)
    assert any("lifted the fence of a merge_from into 'deleted-target'" in n.log()
               for n in cl.nodes)
    cs[0].drop(b)


def test_refused_merges_leave_both_as_they_were(cl):
    cs = clients(cl)
    d = 8
    # the target refuses it: an IDMap index merges only with an IDMap index
    a, b = unique("ra"), unique("rb")
    cs[0].create(a, d, "IDMap,Flat")
    cs[0].create(b, d)
    cs[0].add(a, rand(4, d, 60), labels=[7, 8, 9, 10])
    cs[0].add(b, rand(6, d, 61))
    synced(cs, b)
    h, _, _ = merge(cs[1], a, b)
    assert h["status"] == "error" and h["error_type"] == "faiss_error", h
    # b not fenced: its writes go on at once, and nothing moved
    assert cs[2].add(b, rand(1, d, 62))["ntotal"] == 7
    ntotal_everywhere(cs, a, 4)
    # the other cannot give caller keys or metadata
    c2 = unique("rc")
    cs[0].create(c2, d)
    cs[0].add(c2, rand(2, d, 63), [{"id": "k1"}, {"id": "k2"}])
    synced(cs, c2)
    h, _, _ = merge(cs[0], b, c2)
    assert h["status"] == "error" and h["error_type"] == "validation_error", h
    assert "caller keys" in h["message"]
    assert cs[1].add(c2, rand(1, d, 64))["ntotal"] == 3
    ntotal_everywhere(cs, b, 7)
    # sharded indexes are not merged
    s = unique("rs")
    cs[0].ok({"operation": "create_index", "index_id": s, "dimension": d, "shards": 2})
    for x, y in ((s, b), (b, s)):
        h, _, _ = merge(cs[0], x, y)
        assert h["error_type"] == "unsupported" and "merge_from" in h["message"], h
    for name in (a, b, c2, s):
        cs[0].drop(name)


def test_merge_runs_on_a_node_holding_both(cl):
    """A node holding neither index, or one of them, sends merge_from to a node
    holding both; with no such node, it is unsupported, saying so."""
    cs = clients(cl)
    d = 8
    a, b = unique("pa"), unique("pb")
    for name in (a, b):
        cs[0].ok({"operation": "create_index", "index_id": name, "dimension": d, "replicas": 2})
    cs[0].add(a, rand(3, d, 70))
    cs[0].add(b, rand(4, d, 71))
    both = set(cs[0].info(a)["replicas"]) & set(cs[0].info(b)["replicas"])
    assert both  # two replicas each on three nodes
    via = [c for i, c in enumerate(cs) if "node%d" % (i + 1) not in both][0]
    h, _, m = merge(via, a, b)
    assert h["status"] == "ok" and m == {"merged": 4, "ntotal": 7}, (h, m)
    for c in cs:
        assert c.info(a)["ntotal"] == 7 and c.info(b)["ntotal"] == 0
    # one replica each, on two nodes (a node creating an index holds it first)
    x, y = unique("px"), unique("py")
    for c, name in ((cs[0], x), (cs[2], y)):
        c.ok({"operation": "create_index", "index_id": name, "dimension": d, "replicas": 1})
    assert cs[1].info(x)["replicas"] != cs[1].info(y)["replicas"]
    h, _, _ = merge(cs[1], x, y)
    assert h["error_type"] == "unsupported" and "holding replicas of both" in h["message"], h
    for name in (a, b, x, y):
        cs[0].drop(name)
