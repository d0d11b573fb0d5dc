"""What a create or delete stopped half-way leaves in NATS (docs/cluster.md,
"Failures"): three real nats-server processes and three nodes on loopback,
with --forward-timeout-ms 5000, so that the grace before an orphan goes is
40 s.

Proves that a sharded index whose own definition is gone (what a node killed
between defining its shards and itself, or while deleting it, leaves) loses
its shards' definitions, their streams and its label counter, and that a
stream no definition names goes, each after the grace; and that the indexes
that are defined (unsharded and sharded, one of them created while the
orphans wait) keep every stream and definition and answer as before.
"""
import json
import os
import time

import numpy as np
import pytest

from cluster import (NATS_SERVER, Cluster, definition_stored, js_api, kv_delete, stored_keys,
                     streams)
from conftest import SANITIZED, unique
from wire import rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")

FORWARD_MS = 5000
GRACE = 8 * FORWARD_MS / 1000
# the grace, a pass (an eighth of it) on each side, and a loaded machine's margin
WAIT = GRACE + 2 * GRACE / 8 + (60 if SANITIZED else 30)


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("orphans")),
                extra=["--forward-timeout-ms", str(FORWARD_MS)]).start()
    yield c
    c.stop()


def answers(c, name, n):
    assert c.info(name)["ntotal"] == n
    d, i, _ = c.search(name, rand(2, 4, 5), 3)
    assert (i >= 0).all() and np.isfinite(d).all()


def test_half_made_indexes_are_removed_after_the_grace(cl):
    cs = [node.client() for node in cl.nodes]
    kept, kept_sharded, lost = unique("kept"), unique("kepts"), unique("lost")
    cs[0].create(kept, 4)
    cs[0].add(kept, rand(10, 4, 1))
    shards_before = stored_keys(cl, "fpx_indexes", "default/=shard-")
    streams_before = streams(cl)
    cs[0].ok({"operation": "create_index", "index_id": lost, "dimension": 4, "shards": 2})
    cs[0].add(lost, rand(10, 4, 2))  # unkeyed: a label counter in fpx_labels
    lost_shards = stored_keys(cl, "fpx_indexes", "default/=shard-") - shards_before
    lost_streams = streams(cl) - streams_before
    assert len(lost_shards) == 2 and len(lost_streams) == 2, (lost_shards, lost_streams)
    # its own definition goes, as when the node deleting it was killed there
    kv_delete(cl, "fpx_indexes", "default/" + lost)
    # a stream no definition names, as when a create was killed before its definition
    hex_ = os.urandom(16).hex()
    stray = "FPX_" + hex_
    r = js_api(cl.nats[0].port, "$JS.API.STREAM.CREATE." + stray,
               json.dumps({"name": stray, "subjects": ["fpx.log." + hex_], "storage": "file",
                           "num_replicas": 1}).encode())
    assert "error" not in r, r
    # made while the orphans wait: named by its definition all along, it stays
    cs[1].ok({"operation": "create_index", "index_id": kept_sharded, "dimension": 4,
              "shards": 2})
    cs[1].add(kept_sharded, rand(12, 4, 3))
    kept_streams = streams(cl) - lost_streams - {stray}

    deadline = time.time() + WAIT
    while (streams(cl) & (lost_streams | {stray})
           or stored_keys(cl, "fpx_indexes", "default/=shard-") & lost_shards):
        assert time.time() < deadline, "orphans left: %s %s" % (
            streams(cl) & (lost_streams | {stray}),
            stored_keys(cl, "fpx_indexes", "default/=shard-") & lost_shards)
        time.sleep(1)
    # A removal is logged once all of it returned: NATS shows it done first, and under load
    # a JetStream API call of it (the stream's delete after the definition's) may take its
    # whole 5 s timeout to answer. (A delete whose acknowledgement was lost is seen done at
    # the next pass, unlogged.)
    for what in ("removed the orphaned stream " + stray,
                 "removed the orphaned shard definition default/=shard-",
                 "removed the orphaned label counter"):
        deadline = time.time() + GRACE
        while what not in "".join(n.log() for n in cl.nodes):
            assert time.time() < deadline, "not logged within %d s: %s" % (GRACE, what)
            time.sleep(1)
    # what is defined is untouched
    assert kept_streams <= streams(cl)
    assert definition_stored(cl, kept) and definition_stored(cl, kept_sharded)
    for c in cs:
        answers(c, kept, 10)
        answers(c, kept_sharded, 12)
        assert c.call({"operation": "get_index_info", "index_id": lost})[0]["error_type"] \
            == "not_found"
