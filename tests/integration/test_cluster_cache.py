"""Forwarding reads no NATS per request (docs/cluster.md, "Forwarding"): the
index definitions and node heartbeats a forwarded request needs are watched
into memory. Three real nats-server processes (with their monitoring port,
which counts the messages each client sent) and three nodes on loopback.

Proves that forwarded searches make the forwarding node send no message to
NATS per request (before, two reads each), and that an index deleted, or
deleted and created again on another node, is never answered from the
forwarding node's cached definition: a request after the delete gets an
error, and after the new create only the new index's answers.
"""
import json
import urllib.request

import numpy as np
import pytest

from cluster import NATS_SERVER, Cluster
from conftest import unique
from wire import rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cache"))).start()
    yield c
    c.stop()


def sent_by(cl, node_id):
    """Messages the node's NATS connection has sent, summed over the servers."""
    total = 0
    for n in cl.nats:
        url = "http://127.0.0.1:%d/connz?limit=1024" % n.http_port
        with urllib.request.urlopen(url, timeout=10) as f:
            conns = json.load(f).get("connections") or []
        total += sum(c.get("in_msgs", 0) for c in conns if c.get("name") == node_id)
    return total


def test_forwarded_requests_read_no_nats(cl):
    c1, c3 = cl.nodes[0].client(), cl.nodes[2].client()
    d, name = 8, unique("fwd")
    c1.ok({"operation": "create_index", "index_id": name, "dimension": d, "replicas": 1})
    assert c1.info(name)["replicas"] == ["node1"]
    c1.add(name, rand(100, d, 1))
    q = rand(1, d, 2)
    want = c1.search(name, q, 5)[:2]
    got = c3.search(name, q, 5)[:2]  # warm: the forwarding socket is connected
    assert np.array_equal(got[1], want[1])
    n = 200
    before = sent_by(cl, "node3")
    for _ in range(n):
        D, I, _ = c3.search(name, q, 5)
        assert np.array_equal(I, want[1])
    after = sent_by(cl, "node3")
    # Reading the definition and the holder's heartbeat per request would be
    # 2n messages; what is left is node3's own heartbeat (one a second) and
    # its applied-sequence notes.
    assert after - before < n // 2, (before, after)
    c1.drop(name)


def test_deleted_or_moved_index_is_not_served_from_the_cache(cl):
    c1, c2, c3 = (node.client() for node in cl.nodes)
    d, name = 8, unique("mv")
    q = rand(3, d, 3)
    c1.ok({"operation": "create_index", "index_id": name, "dimension": d, "replicas": 1})
    c1.add(name, rand(50, d, 4))
    old = c3.search(name, q, 4)[:2]  # through node3: forwarded, its cache warm
    c1.drop(name)
    for c in (c3, c2):
        e = c.error({"operation": "search", "index_id": name, "k": 4, "vector_shape": [3, d]},
                    q.tobytes())
        assert e["error_type"] in ("not_found", "unavailable"), e
    # created again on node2 alone, with other vectors: node3's answers are
    # the new index's, or an error while its cache catches up, never the old
    c2.ok({"operation": "create_index", "index_id": name, "dimension": d, "replicas": 1})
    assert c2.info(name)["replicas"] == ["node2"]
    c2.add(name, rand(50, d, 5) + 10)
    new = c2.search(name, q, 4)[:2]
    assert not np.array_equal(new[0], old[0])
    served = 0
    for _ in range(200):
        h, data, _ = c3.call({"operation": "search", "index_id": name, "k": 4,
                              "vector_shape": [3, d]}, q.tobytes())
        if h["status"] != "ok":
            assert h["error_type"] in ("not_found", "unavailable"), h
            continue
        D = np.frombuffer(data[:3 * 4 * 4], dtype="<f4").reshape(3, 4)
        assert np.array_equal(D, new[0])
        served += 1
        if served >= 20:
            break
    assert served >= 20
    c2.drop(name)
