"""Tenant quotas in a cluster (docs/cluster.md, "Limits"): three real
nats-server processes and three nodes on loopback, each node given a quota of
2 indexes per tenant (and, in a second cluster, of 100 vectors).

Proves that the quotas count the tenant's indexes over the whole cluster,
not the receiving node's replicas: with one replica each, two indexes made
through node1 and node2 leave node3 holding none, and a third made through
node3 is refused with the single server's limit_exceeded; a sharded index
counts once; deleting one frees the place again. Vectors held by another
node count once that node's usage reaches the receiving one, an index with
three replicas counts once, and deleting vectors frees their place.
"""
import time

import pytest

from cluster import NATS_SERVER, Cluster, kv_value
from conftest import unique
from wire import rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("quota")),
                extra=["--tenant-max-indexes", "2"]).start()
    yield c
    c.stop()


def create(c, name, **extra):
    h = {"operation": "create_index", "index_id": name, "dimension": 4, "replicas": 1}
    h.update(extra)
    return c.call(h)[0]


def test_the_quota_counts_the_whole_cluster(cl):
    cs = [node.client() for node in cl.nodes]
    a, b, c3 = unique("qa"), unique("qb"), unique("qc")
    assert create(cs[0], a)["status"] == "ok"
    assert create(cs[1], b, shards=2)["status"] == "ok"  # counts once
    # one replica, placed on the receiving node: node3 holds no replica of a
    assert cs[0].info(a)["replicas"] == ["node1"]
    h = create(cs[2], c3)
    assert h["status"] == "error" and h["error_type"] == "limit_exceeded", h
    assert "has 2 indexes" in h["message"] and "--tenant-max-indexes" in h["message"]
    assert c3 not in [i["index_id"] for i in cs[0].list()]
    cs[0].drop(a)
    deadline = time.time() + 30  # node3 sees the delete through its watch
    while (h := create(cs[2], c3))["status"] != "ok":
        assert h["error_type"] == "limit_exceeded" and time.time() < deadline, h
        time.sleep(0.1)
    assert cs[0].info(c3)["replicas"] == ["node3"]


@pytest.fixture(scope="module")
def vcl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("vquota")),
                extra=["--tenant-max-vectors", "100"]).start()
    yield c
    c.stop()


def add(c, name, n, seed, ids=None):
    meta = [{"id": "%s-%d" % (name, i)} for i in range(n)] if ids else None
    return c.call({"operation": "add_vectors", "index_id": name, "vector_shape": [n, 4]},
                  rand(n, 4, seed).tobytes(), meta)[0]


def reported(cl, node, vectors):
    """Waits (bounded) until node's usage entry in fpx_usage says, for tenant
    default, vectors in all, and a heartbeat more for the watches to carry it."""
    deadline = time.time() + 30
    while True:
        v = kv_value(cl, "fpx_usage", node) or b""
        got = sum(int(line.split()[2]) for line in v.decode().splitlines()
                  if line.split()[1] == "default")
        if got == vectors:
            break
        assert time.time() < deadline, (node, v)
        time.sleep(0.1)
    time.sleep(1.0)


def test_the_vector_quota_counts_the_whole_cluster(vcl):
    cs = [node.client() for node in vcl.nodes]
    a, b, r3 = unique("va"), unique("vb"), unique("vr")
    assert create(cs[0], a)["status"] == "ok"
    assert create(cs[1], b)["status"] == "ok"
    assert cs[0].info(a)["replicas"] == ["node1"] and cs[1].info(b)["replicas"] == ["node2"]
    assert add(cs[0], a, 60, 1, ids=True)["status"] == "ok"
    reported(vcl, "node1", 60)
    # node2 holds no replica of a: it counts a's 60 from node1's report
    h = add(cs[1], b, 50, 2)
    assert h["status"] == "error" and h["error_type"] == "limit_exceeded", h
    assert "holds 60 vectors" in h["message"] and "--tenant-max-vectors" in h["message"], h
    assert cs[1].info(b)["ntotal"] == 0  # the refused write changed nothing
    assert add(cs[1], b, 40, 3)["status"] == "ok"
    reported(vcl, "node2", 40)
    h = add(cs[0], a, 1, 4)
    assert h["status"] == "error" and h["error_type"] == "limit_exceeded", h
    assert "holds 100 vectors" in h["message"], h
    # deleting frees the place, wherever the deleted vectors were
    assert cs[0].delete(a, ["%s-%d" % (a, i) for i in range(30)])["deleted"] == 30
    reported(vcl, "node1", 30)
    assert add(cs[1], b, 30, 5)["status"] == "ok"
    cs[0].drop(a)
    cs[1].drop(b)
    reported(vcl, "node1", 0)
    reported(vcl, "node2", 0)
    # three replicas of one index count once: 90 vectors, not 270
    assert create(cs[2], r3, replicas=3)["status"] == "ok"
    assert add(cs[2], r3, 90, 6)["status"] == "ok"
    for n in ("node1", "node2", "node3"):
        reported(vcl, n, 90)
    assert add(cs[0], r3, 10, 7)["status"] == "ok"
    h = add(cs[0], r3, 1, 8)  # node1 applied its own add: it holds 100
    assert h["status"] == "error" and h["error_type"] == "limit_exceeded", h
    cs[2].drop(r3)
