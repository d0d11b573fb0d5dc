"""--tenant-max-indexes in a cluster (docs/cluster.md, "Limits"): three real
nats-server processes and three nodes on loopback, each node given a quota of
2 indexes per tenant.

Proves that the quota counts the tenant's indexes over the whole cluster,
not the receiving node's replicas: with one replica each, two indexes made
through node1 and node2 leave node3 holding none, and a third made through
node3 is refused with the single server's limit_exceeded; a sharded index
counts once; deleting one frees the place again.
"""
import time

import pytest

from cluster import NATS_SERVER, Cluster
from conftest import unique

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
