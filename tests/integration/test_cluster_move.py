"""Moving a replica to another node (docs/cluster.md, "Moving a replica"):
three real nats-server processes and three nodes on loopback, and the
one-shot command `faiss-proxy-server --cluster URLS --move INDEX[/SHARD]
--from A --to B`.

Proves that a replica moved to a node that never held it catches up from a
peer's snapshot and serves; that searches and keyed adds from another
thread, through every node (the source too), keep being answered during
the move, and every acknowledged write is readable afterwards through every
node, with results equal to in-process FAISS; that the source drops its
replica and the placement names the target instead; that a shard of a
sharded index moves by its index and shard number; and that a node waiting for a
peer's snapshot that does not come still opens and serves other indexes;
and that a move to a node
already holding the replica, to an unknown node or to a dead one, or from a
node holding none, is refused with a clear message and changes nothing.
"""
import os
import signal
import subprocess
import threading
import time

import faiss
import pytest

from cluster import NATS_SERVER, Cluster, kv_value, node_of, same_as_faiss, synced
from conftest import SANITIZER_MARKS, SERVER, unique
from wire import Client, ServerError, rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")

D = 8
MOVE_TIMEOUT = 240


@pytest.fixture
def cl(tmp_path):
    c = Cluster(str(tmp_path))
    for node in c.nodes:  # snapshots every few records: the stream gets trimmed
        node.extra += ["--snapshot-bytes", "4096"]
    c.start()
    yield c
    c.stop()


def move(cl, spec, src, dst, tenant=None):
    args = [SERVER, "--cluster", cl.urls, "--move", spec, "--from", src, "--to", dst]
    if tenant:
        args += ["--move-tenant", tenant]
    p = subprocess.run(args, capture_output=True, text=True, timeout=MOVE_TIMEOUT)
    out = p.stdout + p.stderr
    for mark in SANITIZER_MARKS:  # the command runs under the sanitizers too
        assert mark not in out, out
    return p.returncode, out




def keyed(i, n):
    return [{"id": "k%d-%d" % (i, j), "metadata": {"batch": i}} for j in range(n)]


def test_move_under_traffic_catches_up_and_serves(cl):
    name = unique("mv")
    c1 = cl.nodes[0].client()
    info = c1.ok({"operation": "create_index", "index_id": name, "dimension": D,
                  "replicas": 2})[2]
    placed = info["replicas"]
    assert len(placed) == 2 and placed[0] == "node1"
    src = placed[1]
    dst = ({"node1", "node2", "node3"} - set(placed)).pop()
    ref = faiss.IndexFlatL2(D)
    for i in range(8):  # keyed adds through every node, before the move
        x = rand(10, D, i)
        cl.nodes[i % 3].client().add(name, x, keyed(i, 10))
        ref.add(x)
    synced([node_of(cl, n).client() for n in placed], name)

    # Traffic from other threads during the move: one writer (keyed adds,
    # through the nodes in turn, the source included) and one reader.
    stop = threading.Event()
    acked, errors = [], []
    q = rand(4, D, 999)

    def writer():
        cs = [node_of(cl, n).client() for n in ("node1", "node2", "node3")]
        cs.insert(0, node_of(cl, src).client())
        i = 100
        while not stop.is_set() and i < 100 + 2000:
            x = rand(5, D, i)
            try:
                cs[i % len(cs)].add(name, x, keyed(i, 5))
                acked.append(x)
            except Exception as e:  # noqa: BLE001 - recorded, asserted below
                errors.append("add: %r" % e)
                return
            i += 1

    def reader():
        cs = [node_of(cl, src).client(), node_of(cl, dst).client(), cl.nodes[0].client()]
        i = 0
        while not stop.is_set() and i < 100000:
            try:
                _, lab, _ = cs[i % len(cs)].search(name, q, 5)
                assert lab.shape == (4, 5) and (lab >= 0).all()
            except Exception as e:  # noqa: BLE001 - recorded, asserted below
                errors.append("search: %r" % e)
                return
            i += 1

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        rc, out = move(cl, name, src, dst)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert rc == 0, out
    assert "moved" in out, out
    assert not errors, errors[:5]
    assert len(acked) > 0
    for x in acked:
        ref.add(x)

    now = sorted([placed[0], dst])
    for n in cl.nodes:
        assert sorted(n.client().info(name)["replicas"]) == now
    synced([node_of(cl, n).client() for n in now], name)
    deadline = time.time() + 30
    while "dropped the replica of default/%s" % name not in node_of(cl, src).log():
        assert time.time() < deadline, node_of(cl, src).log()[-3000:]
        time.sleep(0.1)
    assert "took node" in node_of(cl, dst).log()  # started from a peer's snapshot
    for n in cl.nodes:  # every acknowledged write, through every node
        same_as_faiss(n.client(), name, ref, q)
        same_as_faiss(n.client(), name, ref, rand(3, D, 5))
    # keys moved with it: a key written before the move is deleted through the new node
    node_of(cl, dst).client().ok({"operation": "delete_vector", "index_id": name,
                               "vector_ids": ["k0-3"]})
    assert node_of(cl, dst).client().info(name)["ntotal"] == ref.ntotal - 1

def test_move_refused_clearly(cl):
    name = unique("mvno")
    c1 = cl.nodes[0].client()
    placed = c1.ok({"operation": "create_index", "index_id": name, "dimension": D,
                    "replicas": 2})[2]["replicas"]
    other = ({"node1", "node2", "node3"} - set(placed)).pop()
    c1.add(name, rand(5, D, 1))
    cases = [
        ((name, placed[0], placed[1]), "already holds a replica"),
        ((name, placed[0], "nosuch"), "not a live node"),
        ((name, other, placed[0]), "holds no replica"),
        ((name, placed[0], placed[0]), "same node"),
        (("nosuch-" + name, placed[0], other), "not found"),
        ((name + "/1", placed[0], other), "not sharded"),
    ]
    for (spec, src, dst), why in cases:
        rc, out = move(cl, spec, src, dst)
        assert rc != 0 and why in out, (spec, src, dst, out)
    node_of(cl, other).stop()  # a dead node
    rc, out = move(cl, name, placed[0], other)
    assert rc != 0 and "not a live node" in out, out
    for n in placed:  # nothing changed
        assert sorted(node_of(cl, n).client().info(name)["replicas"]) == sorted(placed)
    node_of(cl, other).start()


def test_move_shard(cl):
    name = unique("mvshard")
    cs = [n.client() for n in cl.nodes]
    info = cs[0].ok({"operation": "create_index", "index_id": name, "dimension": D,
                     "shards": 2, "replicas": 1})[2]
    smap = info["shard_map"]
    assert smap[0] == ["node1"], smap
    ref = faiss.IndexFlatL2(D)
    for i in range(6):
        x = rand(10, D, 50 + i)
        cs[i % 3].add(name, x, keyed(i, 10))
        ref.add(x)
    dst = ({"node1", "node2", "node3"} - {smap[0][0], smap[1][0]}).pop()
    rc, out = move(cl, name, "node1", dst)  # a sharded index: name the shard
    assert rc != 0 and "shards" in out, out
    rc, out = move(cl, name + "/0", "node1", dst)
    assert rc == 0, out
    for c in cs:
        assert c.info(name)["shard_map"][0] == [dst]
    q = rand(4, D, 321)
    for c in cs:
        same_as_faiss(c, name, ref, q)
    x = rand(10, D, 77)
    cs[0].add(name, x)  # and it goes on taking writes
    ref.add(x)
    for c in cs:
        same_as_faiss(c, name, ref, q)


def test_moved_replica_survives_restart(cl):
    """The moved replica is the target's own: restarted, it answers the same."""
    name = unique("mvre")
    c1 = cl.nodes[0].client()
    placed = c1.ok({"operation": "create_index", "index_id": name, "dimension": D,
                    "replicas": 1})[2]["replicas"]
    assert placed == ["node1"]
    ref = faiss.IndexFlatL2(D)
    for i in range(4):
        x = rand(10, D, 10 + i)
        c1.add(name, x)
        ref.add(x)
    rc, out = move(cl, name, "node1", "node2")
    assert rc == 0, out
    q = rand(3, D, 4)
    for n in cl.nodes:
        assert n.client().info(name)["replicas"] == ["node2"]
        same_as_faiss(n.client(), name, ref, q)
    cl.nodes[1].stop()
    cl.nodes[1].start()
    same_as_faiss(cl.nodes[1].client(), name, ref, q)
    with pytest.raises(ServerError):  # node1 holds nothing, and node2's answer is relayed
        cl.nodes[0].client().info("nosuch-" + name)


def test_waiting_for_a_peers_snapshot_holds_up_no_other_index(cl):
    """The giver of a moved replica's snapshot is stopped (SIGSTOP) while the
    target waits for it: the target still creates, fills and searches
    another index meanwhile (opening one replica holds up only the requests
    for that index), and once the giver resumes the move ends and the moved
    replica answers as FAISS."""
    src, dst = cl.nodes[0], cl.nodes[2]
    name = unique("stalled")
    c1, c3 = src.client(), dst.client()
    placed = c1.ok({"operation": "create_index", "index_id": name, "dimension": D,
                    "replicas": 1})[2]["replicas"]
    assert placed == ["node1"]
    xb = rand(300, D, 71)
    c1.add(name, xb)
    c3.search(name, xb[:1], 1)  # forwarded to node1: node3 keeps a connection to it
    quick = Client(dst.endpoint, timeout_ms=15000)
    os.kill(src.proc.pid, signal.SIGSTOP)
    try:
        args = [SERVER, "--cluster", cl.urls, "--move", name, "--from", "node1", "--to", "node3"]
        mover = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        deadline = time.time() + 10  # the move placed it on node3: its watcher asks node1
        while b"node3" not in (kv_value(cl, "fpx_indexes", "default/" + name) or b""):
            assert time.time() < deadline and mover.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)
        other = unique("meanwhile")
        quick.ok({"operation": "create_index", "index_id": other, "dimension": D,
                  "replicas": 1})
        yb = rand(50, D, 72)
        quick.add(other, yb)
        _, lab, _ = quick.search(other, yb[:5], 1)
        assert lab[:, 0].tolist() == list(range(5))
        assert "default/%s: took node" % name not in dst.log()  # still waiting for node1
    finally:
        os.kill(src.proc.pid, signal.SIGCONT)
        quick.close()
    out, _ = mover.communicate(timeout=MOVE_TIMEOUT)
    assert mover.returncode == 0, out
    ref = faiss.IndexFlatL2(D)
    ref.add(xb)
    same_as_faiss(c3, name, ref, rand(4, D, 73))
    for mark in SANITIZER_MARKS:
        assert mark not in out, out
