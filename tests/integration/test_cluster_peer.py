"""A replica that starts from a peer's snapshot, and streams trimmed below
every live replica's snapshot (docs/cluster.md, "Peer snapshots and
trimming"): three real nats-server processes and three nodes on loopback,
taking snapshots every few records (--snapshot-bytes).

Proves that the stream is trimmed (its first sequence, read over NATS, moves
past 1); that a node restarted on an empty data dir rebuilds from a peer's
snapshot plus the rest of the stream and answers as in-process FAISS given
the same vectors; that a node that was down while the stream was trimmed
past its state catches up through a peer; and that with every peer down such
a node answers unavailable, never stale data, and serves once a peer is back.
"""
import os
import re
import shutil
import time

import faiss
import pytest

import cluster
from cluster import NATS_SERVER, Cluster, js_read, streams, synced
from conftest import unique
from wire import ServerError, rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")

D = 8
# How long the tests wait for the heartbeats to report snapshots and trim
# (every 5 s), on a loaded machine or under sanitizers.
TRIM_TIMEOUT = 60


@pytest.fixture
def cl(tmp_path):
    c = Cluster(str(tmp_path))
    for node in c.nodes:  # a snapshot every few records
        node.extra += ["--snapshot-bytes", "2048"]
    c.start()
    yield c
    c.stop()


def stream_state(cl, stream):
    return js_read(cl.nats[0].port, "$JS.API.STREAM.INFO." + stream)["state"]


def create(cl, name):
    """Creates name through node1, on all three nodes; its stream's name."""
    before = streams(cl)
    info = cl.nodes[0].client().create(name, D)
    assert sorted(info["replicas"]) == ["node1", "node2", "node3"]
    new = streams(cl) - before
    assert len(new) == 1, new
    return new.pop()


def write(cl, name, ref, batches, seed, nodes=None):
    """Adds batches of 20 vectors through the nodes in turn, and to ref."""
    cs = [n.client() for n in (nodes or cl.nodes)]
    for i in range(batches):
        x = rand(20, D, seed + i)
        cs[i % len(cs)].add(name, x)
        ref.add(x)


def wait_trimmed(cl, stream, past):
    """Waits (bounded) until the stream's first sequence is above past."""
    deadline = time.time() + TRIM_TIMEOUT
    while True:
        st = stream_state(cl, stream)
        if st["first_seq"] > past:
            return st
        assert time.time() < deadline, "the stream was not trimmed past %d: %s" % (past, st)
        time.sleep(0.25)


def same_as_faiss(c, name, ref):
    cluster.same_as_faiss(c, name, ref, rand(5, D, 777))


def test_stream_trimmed_and_empty_node_rebuilds_from_peer(cl):
    """After writes and snapshots on every replica the stream is trimmed; a
    node restarted on an empty data dir then takes a peer's snapshot, applies
    the rest of the stream, and answers exactly as FAISS."""
    name = unique("peer")
    stream = create(cl, name)
    ref = faiss.IndexFlatL2(D)
    write(cl, name, ref, 12, 0)
    seq = synced([n.client() for n in cl.nodes], name)
    assert seq == 12
    st = wait_trimmed(cl, stream, 1)
    assert st["last_seq"] == 12
    write(cl, name, ref, 2, 100)  # records after every snapshot so far
    for n in cl.nodes:
        same_as_faiss(n.client(), name, ref)

    # node-only: a client asking for a node's state gets nothing
    h = cl.nodes[0].client().error({"operation": "peer_snapshot", "tenant": "default",
                                    "index_id": name, "uid": "00" * 16})
    assert h["error_type"] == "unsupported", h

    victim = cl.nodes[2]
    victim.stop()
    shutil.rmtree(victim.data_dir)
    victim.start()
    log = victim.log()
    assert "took node" in log and "snapshot at stream record" in log, log[-3000:]
    back = victim.client()
    assert back.info(name)["applied_seq"] == 14  # caught up before it served
    same_as_faiss(back, name, ref)
    write(cl, name, ref, 1, 200, [victim])  # and it goes on as a replica
    assert synced([n.client() for n in cl.nodes], name) == 15
    for n in cl.nodes:
        same_as_faiss(n.client(), name, ref)


def test_down_node_catches_up_through_peer(cl):
    """A node down while the stream was trimmed past its state takes a
    peer's snapshot when it comes back, and serves the same results."""
    name = unique("behind")
    stream = create(cl, name)
    ref = faiss.IndexFlatL2(D)
    write(cl, name, ref, 4, 0)
    had = synced([n.client() for n in cl.nodes], name)
    victim = cl.nodes[2]
    victim.stop()
    live = cl.nodes[:2]
    write(cl, name, ref, 12, 50, live)
    synced([n.client() for n in live], name)
    wait_trimmed(cl, stream, had + 1)  # the victim needs had + 1 and on: gone
    victim.start()
    log = victim.log()
    assert "older than the stream's first record" in log, log[-3000:]
    assert "took node" in log, log[-3000:]
    back = victim.client()
    assert back.info(name)["applied_seq"] == had + 12
    same_as_faiss(back, name, ref)


def test_every_peer_down_unavailable_not_stale(cl):
    """With the stream trimmed past its state and every other replica down,
    a node answers unavailable (never its old state); once a peer is back it
    takes that peer's snapshot and serves the right results."""
    name = unique("alone")
    stream = create(cl, name)
    ref = faiss.IndexFlatL2(D)
    write(cl, name, ref, 4, 0)
    had = synced([n.client() for n in cl.nodes], name)
    victim = cl.nodes[2]
    victim.stop()
    live = cl.nodes[:2]
    write(cl, name, ref, 12, 50, live)
    synced([n.client() for n in live], name)
    wait_trimmed(cl, stream, had + 1)
    for n in live:
        n.stop()
    victim.start()
    c = victim.client()
    q = rand(2, D, 5)
    for _ in range(2):  # asked again: still no peer, still unavailable
        with pytest.raises(ServerError) as e:
            c.search(name, q, 5)
        assert e.value.error_type == "unavailable", e.value.args[0]
        assert "gave its snapshot" in e.value.header["message"]
    cl.nodes[0].start()
    deadline = time.time() + 30
    while True:
        try:
            same_as_faiss(c, name, ref)
            break
        except ServerError as err:
            assert err.error_type == "unavailable", err.header
            assert time.time() < deadline, err.header
            time.sleep(0.2)
    assert c.info(name)["applied_seq"] == had + 12
    cl.nodes[1].start()


@pytest.fixture
def cl_parts(tmp_path):
    """Nodes whose messages are at most 64 KiB: a snapshot larger than that
    must travel in parts."""
    c = Cluster(str(tmp_path))
    for node in c.nodes:
        node.extra += ["--snapshot-bytes", "2048", "--max-message-size", str(64 << 10)]
    c.start()
    yield c
    c.stop()


def test_snapshot_larger_than_a_message_travels_in_parts(cl_parts):
    """A replica's snapshot of about 257 KB, four times the nodes' message
    size limit, reaches a node restarted on an empty data dir in parts, and
    that node answers exactly as FAISS; neither node keeps a file of it."""
    cl = cl_parts
    name = unique("parts")
    stream = create(cl, name)
    ref = faiss.IndexFlatL2(D)
    cs = [n.client() for n in cl.nodes]
    for i in range(40):  # 8000 vectors of 32 bytes, 200 per add
        x = rand(200, D, 1000 + i)
        cs[i % 3].add(name, x)
        ref.add(x)
    synced(cs, name)
    wait_trimmed(cl, stream, 1)
    victim = cl.nodes[2]
    victim.stop()
    shutil.rmtree(victim.data_dir)
    victim.start()
    log = victim.log()
    m = re.search(r"default/%s: node (node\d)'s snapshot came in (\d+) part\(s\), (\d+) bytes"
                  % name, log)
    assert m, log[-3000:]
    assert int(m.group(2)) >= 4 and int(m.group(3)) > 8000 * 4 * D, m.group(0)
    assert "took node %s's snapshot" % m.group(1) in log
    same_as_faiss(victim.client(), name, ref)
    for node in cl.nodes:
        left = [f for f in os.listdir(node.data_dir) if f.startswith(".peer-snapshot")]
        assert left == [], (node.data_dir, left)
