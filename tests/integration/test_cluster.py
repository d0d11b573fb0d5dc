"""faiss-proxy as a cluster over NATS JetStream (docs/cluster.md): three real
nats-server processes and three nodes on loopback.

Proves that the cluster answers as one server given the same writes, whatever
node each request goes through; that train runs once (every replica holds the
same bytes); that a create's name is taken cluster-wide; that no acknowledged
write is lost when a node or a NATS server is killed with SIGKILL; that a
node restarted on an empty data dir rebuilds from the streams; and that a
replica a node could not open when its index was defined is opened by itself
once it can.
"""
import os
import shutil
import threading
import time

import numpy as np
import pytest
import zmq

from cluster import NATS_SERVER, SYNC_TIMEOUT, Cluster, synced
from conftest import unique
from wire import Client, ServerError, rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cluster"))).start()
    yield c
    c.stop()


def clients(cl):
    return [node.client() for node in cl.nodes if node.proc is not None]


def quick_client(endpoint, ms):
    """A client that gives up after ms: a killed node must not hang a writer."""
    return Client(endpoint, timeout_ms=ms)


def strip(info):
    return {k: v for k, v in info.items() if k not in ("replicas", "applied_seq")}


def reads(c, name, d, with_filter):
    """The answers of every read the test compares, as raw replies."""
    q = rand(4, d, 99)
    out = [c.call({"operation": "search", "index_id": name, "k": 5,
                   "vector_shape": [4, d], "include_metadata": True}, q.tobytes())]
    if with_filter:
        out.append(c.call({"operation": "search", "index_id": name, "k": 5,
                           "vector_shape": [4, d]}, q.tobytes(), {"color": "red"}))
    out.append(c.call({"operation": "range_search", "index_id": name, "radius": 0.6,
                       "vector_shape": [4, d]}, q.tobytes()))
    out.append(c.call({"operation": "reconstruct", "index_id": name, "label": 3}))
    out.append(c.call({"operation": "reconstruct_n", "index_id": name, "i0": 0, "n": 5}))
    return out


def test_flat_answers_as_one_server(cl, fresh_server):
    """The same writes through rotating nodes and to one plain server: every
    read through every node answers exactly (bit for bit) as the server."""
    plain = fresh_server.client()
    cs = clients(cl)
    d = 8
    keyed, bare = unique("keyed"), unique("bare")
    writes = []  # (header, data, meta), sent to both
    for name in (keyed, bare):
        writes.append(({"operation": "create_index", "index_id": name, "dimension": d}, b"", None))
    for i in range(6):
        x = rand(20, d, i)
        items = [{"id": "k%d" % (i * 20 + j),
                  "metadata": {"color": "red" if j % 3 == 0 else "blue", "i": i * 20 + j}}
                 for j in range(20)]
        writes.append(({"operation": "add_vectors", "index_id": keyed, "vector_shape": [20, d]},
                       x.tobytes(), items))
        writes.append(({"operation": "add_vectors", "index_id": bare, "vector_shape": [20, d]},
                       x.tobytes(), None))
    writes.append(({"operation": "delete_vector", "index_id": keyed,
                    "vector_ids": ["k1", "k5", "k40"]}, b"", None))
    writes.append(({"operation": "add_vectors", "index_id": keyed, "vector_shape": [1, d]},
                   rand(1, d, 77).tobytes(), [{"id": "k2", "metadata": {"color": "red"}}]))
    writes.append(({"operation": "remove_ids", "index_id": bare, "ids": [0, 7, 50]}, b"", None))
    writes.append(({"operation": "remove_ids", "index_id": bare, "range": [90, 95]}, b"", None))
    writes.append(({"operation": "delete_vector", "index_id": bare, "vector_id": 11}, b"", None))
    for i, (h, data, meta) in enumerate(writes):
        want = plain.call(h, data, meta)
        got = cs[i % len(cs)].call(h, data, meta)
        assert want[0]["status"] == "ok", want
        if h["operation"] == "create_index":
            assert strip(got[2]) == want[2]
            assert sorted(got[2]["replicas"]) == ["node1", "node2", "node3"]
        else:  # the reply of a write carries the same fields as on one server
            assert got == want, (h, got, want)
    for name, filt in ((keyed, True), (bare, False)):
        synced(cs, name)
        want = reads(plain, name, d, filt)
        for c in cs:
            assert reads(c, name, d, filt) == want
            assert strip(c.info(name)) == plain.info(name)
    for c in (cs[0], plain):
        c.drop(keyed)
        c.drop(bare)


@pytest.mark.parametrize("index_type", ["IVF4,Flat", "PQ4np"])  # np: no polysemous annealing (30 s)
def test_trained_once(cl, index_type):
    """train through one node: every replica holds the same trained index (the
    export of each is the same bytes), and searches answer as FAISS itself
    given that trained index and the same adds."""
    import faiss
    cs = clients(cl)
    d, name = 16, unique("tr")
    cs[0].create(name, d, index_type)
    cs[1].train(name, rand(1000, d, 5))
    seq = synced(cs, name)
    exports = [c.ok({"operation": "export_index", "index_id": name})[1] for c in cs]
    assert exports[0] and all(e == exports[0] for e in exports)
    ref = faiss.deserialize_index(np.frombuffer(exports[0], "uint8").copy())
    xb = rand(300, d, 6)
    cs[2].add(name, xb[:150])
    cs[0].add(name, xb[150:])
    ivf = index_type.startswith("IVF")
    if ivf:
        cs[1].ok({"operation": "set_params", "index_id": name, "name": "nprobe", "value": 2})
        faiss.extract_index_ivf(ref).nprobe = 2
    ref.add(xb)
    assert synced(cs, name) == seq + 2 + ivf
    q = rand(8, d, 7)
    De, Ie = ref.search(q, 5)
    for c in cs:
        D, I, _ = c.search(name, q, 5)
        assert np.array_equal(D, De) and np.array_equal(I, Ie)
    cs[2].drop(name)


def test_names_and_options_cluster_wide(cl):
    cs = clients(cl)
    name = unique("dup")
    cs[0].create(name, 4)
    r = cs[1].error({"operation": "create_index", "index_id": name, "dimension": 4})
    assert r["error_type"] == "already_exists"
    r = cs[2].error({"operation": "create_index", "index_id": unique(), "dimension": 4,
                     "shards": 0})
    assert r["error_type"] == "validation_error" and "shard" in r["message"]
    r = cs[2].error({"operation": "create_index", "index_id": unique(), "dimension": 4,
                     "replicas": 4})
    assert r["error_type"] == "validation_error" and "replicas" in r["message"]
    # deleted through one node: gone on every node, and the name is free again
    cs[2].drop(name)
    deadline = time.time() + SYNC_TIMEOUT
    while any(name in [i["index_id"] for i in c.list()] for c in cs):
        assert time.time() < deadline
        time.sleep(0.05)
    cs[1].create(name, 4)
    cs[1].drop(name)


def wait_until(cond, what, timeout=SYNC_TIMEOUT):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, what
        time.sleep(0.1)


def test_replica_that_could_not_open_opens_later(cl):
    """A file stands where node3's folder of the new index goes: node3 cannot
    open its replica when the definition comes. Once the file is gone, node3
    opens it by itself and catches up, with no request naming the index sent
    to it (one would open it on the spot): the index gets its third replica
    back without help."""
    cs = clients(cl)
    name = unique("reopen")
    node = cl.nodes[2]
    folder = os.path.join(node.data_dir, "default", name)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with open(folder, "w") as f:
        f.write("in the way")
    cs[0].create(name, 4)  # replicas: all three nodes
    cs[0].add(name, rand(20, 4, 7))
    wait_until(lambda: "cannot open the replica of default/%s" % name in node.log(),
               "node3 did not try to open its replica")
    assert not os.path.isdir(folder)
    os.unlink(folder)
    wait_until(lambda: os.path.isdir(folder), "node3 did not open its replica by itself",
               SYNC_TIMEOUT + 30)
    wait_until(lambda: "opened the replica of default/%s\n" % name in node.log(),
               "node3 did not say it opened its replica")
    wait_until(lambda: cs[2].info(name)["ntotal"] == 20, "node3 did not catch up")
    assert cs[2].info(name)["applied_seq"] == cs[0].info(name)["applied_seq"]


def test_restart_with_empty_data_dir(cl):
    """A node restarted on an empty data dir rebuilds every replica from the
    streams before it serves."""
    cs = clients(cl)
    d, name = 8, unique("empty")
    cs[0].create(name, d)
    x = rand(50, d, 3)
    cs[0].add(name, x[:25], [{"id": "e%d" % i} for i in range(25)])
    cs[1].add(name, x[25:], [{"id": "e%d" % i} for i in range(25, 50)])
    cs[0].delete(name, ["e3", "e30"])
    seq = synced(cs, name)
    node = cl.nodes[2]
    node.stop()
    shutil.rmtree(node.data_dir)
    assert not os.path.exists(node.data_dir)
    node.start()
    c = node.client()
    assert c.info(name)["applied_seq"] == seq
    q = rand(5, d, 4)
    D, I, _ = c.search(name, q, 4)
    De, Ie, _ = cs[0].search(name, q, 4)
    assert np.array_equal(D, De) and np.array_equal(I, Ie)
    assert strip(c.info(name)) == strip(cs[0].info(name))
    c.drop(name)


def keyed_writers(endpoints, name, d, per_writer, retry_unavailable, stop_on_error, ms):
    """One writer thread per endpoint, each adding one keyed vector per request;
    returns {key: vector} of the acknowledged writes, the errors, and how many
    writes were sent again after an unavailable answer."""
    acked, lock = {}, threading.Lock()
    errors, retried = [], []

    def run(t, ep):
        c = quick_client(ep, ms)
        rng = np.random.default_rng(1000 + t)
        try:
            for i in range(per_writer):
                key = "w%d-%d" % (t, i)
                x = rng.random((1, d), dtype="float32")
                deadline = time.time() + 30
                while True:
                    try:
                        c.add(name, x, [{"id": key}])
                        with lock:
                            acked[key] = x[0]
                        break
                    except ServerError as e:
                        if retry_unavailable and e.error_type == "unavailable" \
                                and time.time() < deadline:
                            retried.append(key)
                            time.sleep(0.1)
                            continue
                        errors.append((key, e))
                        return
                    except zmq.ZMQError:
                        if stop_on_error:
                            return
                        raise
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(t, ep)) for t, ep in enumerate(endpoints)]
    return threads, acked, errors, retried


def missing(c, name, acked):
    """The acknowledged keys whose vector a search does not find as itself."""
    keys = sorted(acked)
    q = np.stack([acked[k] for k in keys])
    _, _, meta = c.search(name, q, 1, include_metadata=True)
    found = [hits[0]["id"] if hits and hits[0] else None for hits in meta]
    return [k for k, f in zip(keys, found) if k != f]


def test_node_killed_during_ingest(cl):
    """kill -9 of a node while three writers ingest: every acknowledged write is
    readable through every other node, and through the killed node once it is
    back (it catches up from its own files and the stream before it serves)."""
    cs = clients(cl)
    d, name = 8, unique("kill")
    assert sorted(cs[0].create(name, d)["replicas"]) == ["node1", "node2", "node3"]
    victim = cl.nodes[1]
    threads, acked, errors, _ = keyed_writers([n.endpoint for n in cl.nodes], name, d, 60,
                                           False, True, 10000)
    for t in threads:
        t.start()
    deadline = time.time() + 20
    while len(acked) < 30 and time.time() < deadline:
        time.sleep(0.01)
    victim.kill9()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    assert not errors, errors
    assert len(acked) >= 120  # the two other writers finished
    survivors = [n.client() for n in (cl.nodes[0], cl.nodes[2])]
    synced(survivors, name)
    for c in survivors:
        assert missing(c, name, acked) == []
    victim.start()
    back = victim.client()
    assert missing(back, name, acked) == []  # at once: it caught up before serving
    assert synced([back] + survivors, name) > 0
    back.drop(name)


def test_nats_server_killed_during_ingest(cl):
    """kill -9 of one of the three NATS servers during ingest: writes go on
    after JetStream's re-election (writers retry on unavailable, bounded),
    nothing acknowledged is lost, nothing is applied twice."""
    cs = clients(cl)
    d, name = 8, unique("natskill")
    assert sorted(cs[0].create(name, d)["replicas"]) == ["node1", "node2", "node3"]
    threads, acked, errors, retried = keyed_writers([n.endpoint for n in cl.nodes], name, d, 50,
                                           True, False, 30000)
    for t in threads:
        t.start()
    deadline = time.time() + 20
    while len(acked) < 20 and time.time() < deadline:
        time.sleep(0.01)
    cl.nats[0].kill9()
    for t in threads:
        t.join(timeout=150)
        assert not t.is_alive()
    assert not errors, errors
    assert len(acked) == 150
    cs = clients(cl)
    synced(cs, name)
    for c in cs:
        info = c.info(name)
        # One vector per key. The cluster applied no record twice: every record
        # of the stream is one request a client sent. A node that answered
        # unavailable may have stored the write anyway (its outcome is unknown,
        # docs/cluster.md), and the writer's retry of it then replaced the
        # vector (a tombstone); nothing else may.
        assert info["ntotal"] == 150, info
        assert info["tombstones"] <= len(retried), (info, retried)
        assert info["applied_seq"] == 150 + info["tombstones"], info
        assert missing(c, name, acked) == []
