"""Replacing a lost node (docs/cluster.md, "Replacing a lost node"): three
real nats-server processes and three nodes on loopback, with a short
--replace-after.

Proves that once a node has been gone (kill -9) for longer than
--replace-after, its replicas, of an index and of every shard of a sharded
index, are moved to the live node that held none, so that each index again
has as many live replicas as it was given; that every acknowledged write
is still there, answered as in-process FAISS answers, through every live
node; and that the lost node, started again, drops what was placed
elsewhere meanwhile and answers the same through forwarding. Also that a
node gone for less than --replace-after keeps its replicas.
"""
import time

import faiss
import pytest

from cluster import NATS_SERVER, Cluster, node_of, same_as_faiss, synced
from conftest import unique
from wire import rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")

D = 8
REPLACE = 3
WAIT = 120


@pytest.fixture
def cl(tmp_path):
    c = Cluster(str(tmp_path), extra=["--replace-after", str(REPLACE)])
    c.start()
    yield c
    c.stop()




def test_lost_node_replicas_move_to_the_live_node(cl):
    c1 = cl.nodes[0].client()
    plain, sharded = unique("lost"), unique("lostsh")
    placed = c1.ok({"operation": "create_index", "index_id": plain, "dimension": D,
                    "replicas": 2})[2]["replicas"]
    assert placed[0] == "node1" and len(placed) == 2
    lost = placed[1]
    spare = ({"node1", "node2", "node3"} - set(placed)).pop()
    c1.ok({"operation": "create_index", "index_id": sharded, "dimension": D, "shards": 3,
           "replicas": 2})
    refs = {plain: faiss.IndexFlatL2(D), sharded: faiss.IndexFlatL2(D)}
    for i, name in enumerate((plain, sharded)):
        for j in range(3):
            x = rand(100, D, 10 * i + j)
            items = [{"id": "k%d-%d" % (j, r), "metadata": {"j": j}} for r in range(100)]
            cl.nodes[j].client().add(name, x, items)
            refs[name].add(x)
    synced([c1, node_of(cl, lost).client()], plain)
    node_of(cl, lost).kill9()

    deadline = time.time() + WAIT
    while True:
        p = c1.info(plain)["replicas"]
        m = c1.info(sharded)["shard_map"]
        if lost not in p and all(lost not in s for s in m):
            break
        assert time.time() < deadline, (p, m, cl.nodes[0].log()[-3000:])
        time.sleep(0.2)
    assert sorted(p) == sorted(["node1", spare])
    assert all(len(s) == 2 and len(set(s)) == 2 for s in m), m
    logs = "".join(n.log() for n in cl.nodes if n.proc is not None)
    assert "moved node %s's replica of default/%s to node %s" % (lost, plain, spare) in logs
    q = rand(6, D, 99)
    for n in cl.nodes:
        if n.proc is not None:
            for name in (plain, sharded):
                same_as_faiss(n.client(), name, refs[name], q)

    back = node_of(cl, lost)
    back.start()
    c = back.client()
    for name in (plain, sharded):
        same_as_faiss(c, name, refs[name], q)
        assert lost not in str(c.info(name).get("replicas", c.info(name).get("shard_map")))
    assert "dropped the replica of default/%s: the cluster places it on other nodes" % plain \
        in back.log()
    # writes go on through every node, the returned one included
    x = rand(10, D, 77)
    c.add(plain, x)
    refs[plain].add(x)
    synced([c1, cl.nodes[1].client(), cl.nodes[2].client()], plain)
    for n in cl.nodes:
        same_as_faiss(n.client(), plain, refs[plain], q)


def test_node_back_within_the_limit_keeps_its_replicas(tmp_path):
    c = Cluster(str(tmp_path), extra=["--replace-after", "60"])
    c.start()
    try:
        c1 = c.nodes[0].client()
        name = unique("brief")
        placed = c1.ok({"operation": "create_index", "index_id": name, "dimension": D,
                        "replicas": 2})[2]["replicas"]
        x = rand(50, D, 3)
        c1.add(name, x)
        victim = node_of(c, placed[1])
        victim.kill9()
        time.sleep(8)  # its heartbeat lapsed (5 s): gone, for less than 60 s
        victim.start()
        assert c1.info(name)["replicas"] == placed
        ref = faiss.IndexFlatL2(D)
        ref.add(x)
        same_as_faiss(victim.client(), name, ref, rand(3, D, 4))
        assert "moving its replica" not in "".join(n.log() for n in c.nodes)
    finally:
        c.stop()
