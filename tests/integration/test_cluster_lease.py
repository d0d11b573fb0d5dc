"""Leases in a cluster (docs/cluster.md, "Leases"): three real nats-server
processes and three nodes on loopback.

Proves that an index created with lease_seconds through one node stays while
renew_leases, or any request naming it, reaches it through another, and is gone from every node within
the lease plus the reapers' period once nobody renews it; that set_lease 0
keeps it; that a sharded leased index is dropped whole (every shard's
definition too); that bad values are refused as on one server; that a node
that cannot reach NATS answers a renewal unavailable; and that the Python
drop-in, with its default lease, works against a node and answers as
in-process faiss; that every node's info map reports the lease as one
server's does; and that a backup and restore through the CLI keep it.
"""
import json
import os
import subprocess
import time

import numpy as np
import pytest

from cluster import NATS_SERVER, Cluster
from conftest import BUILD, ROOT, SANITIZED, unique
from wire import rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")

LEASE = 3
# The lease, the reaper's period (1 s), and a margin for a loaded machine.
LAPSE_WAIT = LEASE + (30 if SANITIZED else 15)
PY_LIB = os.path.join(ROOT, "build" if SANITIZED else BUILD, "libfaissproxy.so")


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("lease"))).start()
    yield c
    c.stop()


def clients(cl):
    return [node.client() for node in cl.nodes if node.proc is not None]


def names(c):
    return {i["index_id"] for i in c.list()}


def create_leased(c, name, lease=LEASE, **extra):
    h = {"operation": "create_index", "index_id": name, "dimension": 4, "lease_seconds": lease}
    h.update(extra)
    return c.ok(h)[2]


def renew(c, *names_):
    return c.ok({"operation": "renew_leases", "index_ids": list(names_)})[2]


def gone_everywhere(cs, name, timeout=LAPSE_WAIT):
    """Polls every node until none lists name nor answers for it (bounded)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(name not in names(c) for c in cs) and all(
                c.call({"operation": "get_index_info", "index_id": name})[0].get("error_type")
                == "not_found" for c in cs):
            return True
        time.sleep(0.2)
    return False


def test_renewed_through_another_node_stays_then_lapses(cl):
    cs = clients(cl)
    name = unique("lease")
    create_leased(cs[0], name)
    cs[0].add(name, rand(10, 4, 1))
    # renewed through node2 for twice the lease: it stays on every node
    until = time.time() + 2 * LEASE
    while time.time() < until:
        assert renew(cs[1], name) == {"renewed": [name], "not_found": []}
        time.sleep(0.5)
    for c in cs:
        assert c.info(name)["ntotal"] == 10
    # not renewed any more: gone from every node within lease + reaper period
    t0 = time.time()
    assert gone_everywhere(cs, name)
    assert time.time() - t0 >= LEASE - 1.5  # not before its lease ended (clocks within ~1 s)
    assert renew(cs[2], name) == {"renewed": [], "not_found": [name]}
    # the name is free again, without a lease this time
    cs[2].create(name, 4)
    time.sleep(LEASE + 2)
    assert name in names(cs[0])
    cs[0].drop(name)


def test_requests_through_any_node_renew_it(cl):
    """Every request naming a leased index renews it, as on one server: searches
    and reads sent through a node holding no replica (forwarded) keep a plain
    index for three times its lease, and through any node a sharded one;
    once they stop, each lapses."""
    cs = clients(cl)
    x = rand(10, 4, 12)
    for shards in (1, 2):
        name = unique("ltouch")
        info = create_leased(cs[0], name, replicas=1, shards=shards)
        assert shards > 1 or info["replicas"] == ["node1"]
        cs[0].add(name, x)
        until = time.time() + 3 * LEASE
        while time.time() < until:
            cs[1].search(name, x[:1], 1)  # forwarded to node1 (or to the shards)
            cs[2].info(name)
            time.sleep(0.3)
        for c in cs:
            assert c.info(name)["ntotal"] == 10
        assert gone_everywhere(cs, name)


def test_set_lease_zero_keeps_it(cl):
    cs = clients(cl)
    name = unique("keep")
    create_leased(cs[0], name)
    info = cs[1].ok({"operation": "set_lease", "index_id": name, "lease_seconds": 0})[2]
    assert info["index_id"] == name if "index_id" in info else info["name"] == name
    time.sleep(LEASE + 3)
    for c in cs:
        assert name in names(c)
    # and set_lease gives it a lease again, which then lapses
    cs[2].ok({"operation": "set_lease", "index_id": name, "lease_seconds": 1})
    assert gone_everywhere(cs, name)
    assert cs[0].error({"operation": "set_lease", "index_id": name,
                        "lease_seconds": 5})["error_type"] == "not_found"


def test_sharded_leased_index_is_dropped_whole(cl):
    cs = clients(cl)
    name = unique("shl")
    info = create_leased(cs[0], name, shards=3)
    assert info["shards"] == 3
    cs[1].add(name, rand(30, 4, 2))
    # read-your-writes is promised through the node that took the add only:
    # another node shows it once its shards' replicas applied it (bounded)
    deadline = time.time() + 30
    while cs[2].info(name)["ntotal"] != 30:
        assert time.time() < deadline, cs[2].info(name)
        time.sleep(0.1)
    renew(cs[2], name)
    assert gone_everywhere(cs, name)
    # every shard went with it: no node keeps a folder of any shard (bounded wait:
    # a node drops its replica when its watcher sees the definition go)
    uid = info["uid"] if "uid" in info else None
    deadline = time.time() + LAPSE_WAIT
    while True:
        left = [d for node in cl.nodes for root, dirs, _ in os.walk(node.data_dir)
                for d in dirs if "shard-" in d and (uid is None or uid in d)]
        if not left or time.time() > deadline:
            break
        time.sleep(0.2)
    assert not left


def leased_as(c, name, secs, timeout=30):
    """Polls (bounded) until c's info map of name reports a lease of secs
    (none when secs is None: no lease fields); returns the info map."""
    deadline = time.time() + timeout
    while True:
        info = c.info(name)
        if info.get("lease_seconds") == secs:
            break
        assert time.time() < deadline, info
        time.sleep(0.1)
    if secs is None:
        assert "lease_remaining" not in info, info
    else:
        assert 0 < info["lease_remaining"] <= secs, info
    return info


def test_info_reports_the_lease_through_every_node(cl):
    """get_index_info, list_indexes and the replies carrying the info map report
    lease_seconds and lease_remaining through every node, as one server does,
    for a plain and a sharded index; set_lease's reply reports the new lease."""
    cs = clients(cl)
    name, sharded = unique("linfo"), unique("lsinfo")
    info = create_leased(cs[0], name, lease=600, replicas=2)
    assert info["lease_seconds"] == 600 and 595 < info["lease_remaining"] <= 600, info
    for c in cs:
        leased_as(c, name, 600)
        listed = [i for i in c.list() if i["index_id"] == name]
        assert len(listed) == 1 and listed[0]["lease_seconds"] == 600, listed
    # through the node holding no replica: its reply comes from a holder
    far = [c for i, c in enumerate(cs) if "node%d" % (i + 1) not in info["replicas"]]
    assert len(far) == 1
    got = far[0].ok({"operation": "set_lease", "index_id": name, "lease_seconds": 300})[2]
    assert got["lease_seconds"] == 300 and 295 < got["lease_remaining"] <= 300, got
    for c in cs:
        leased_as(c, name, 300)
    got = cs[2].ok({"operation": "set_lease", "index_id": name, "lease_seconds": 0})[2]
    assert "lease_seconds" not in got and "lease_remaining" not in got, got
    for c in cs:
        leased_as(c, name, None)
    info = create_leased(cs[1], sharded, lease=600, shards=2)
    assert info["lease_seconds"] == 600 and info["shards"] == 2, info
    for c in cs:
        leased_as(c, sharded, 600)
    got = cs[0].ok({"operation": "set_lease", "index_id": sharded, "lease_seconds": 120})[2]
    assert got["lease_seconds"] == 120 and 115 < got["lease_remaining"] <= 120, got
    cs[0].drop(name)
    cs[0].drop(sharded)


def cli(node, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAISS_PROXY_")}
    env["FAISS_PROXY_SERVER"] = node.endpoint
    r = subprocess.run([os.path.join(BUILD, "faiss-proxy")] + list(args), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def test_backup_and_restore_keep_the_lease(cl, tmp_path):
    """faiss-proxy backup through one node records a leased index's lease (from the
    info map), and restore through another gives the restored index that lease."""
    cs = clients(cl)
    for i in cs[0].list():  # what earlier tests of this module left
        cs[0].drop(i["index_id"])
    name = unique("lbak")
    create_leased(cs[0], name, lease=900)
    x = rand(20, 4, 11)
    cs[0].add(name, x)
    bdir = str(tmp_path / "bk")
    cli(cl.nodes[1], "backup", bdir)
    with open(os.path.join(bdir, "manifest.json")) as f:
        entry = [e for e in json.load(f)["indexes"] if e["index_id"] == name]
    assert len(entry) == 1 and entry[0]["lease_seconds"] == 900, entry
    cs[0].drop(name)
    assert gone_everywhere(cs, name, timeout=30)
    cli(cl.nodes[2], "restore", bdir)
    for c in cs:
        info = leased_as(c, name, 900)
        assert info["ntotal"] == 20
    assert cs[1].ok({"operation": "reconstruct_n", "index_id": name, "i0": 0,
                     "n": 20})[1] == x.tobytes()
    cs[0].drop(name)


@pytest.mark.parametrize("bad", [-1, 0, 86401, 1.5, "3", True])
def test_bad_lease_seconds(cl, bad):
    cs = clients(cl)
    name = unique("bad")
    h = cs[0].error({"operation": "create_index", "index_id": name, "dimension": 4,
                     "lease_seconds": bad})
    assert h["error_type"] == "validation_error"
    assert all(name not in names(c) for c in cs)
    cs[0].create(name, 4)
    h = cs[1].error({"operation": "set_lease", "index_id": name, "lease_seconds": -1})
    assert h["error_type"] == "validation_error"
    cs[0].drop(name)


def test_bad_renew_leases(cl):
    c = clients(cl)[0]
    for ids in (None, "x", [1], [".hidden"], ["a"] * 10001):
        h = {"operation": "renew_leases"}
        if ids is not None:
            h["index_ids"] = ids
        assert c.error(h)["error_type"] == "validation_error"


def test_python_dropin_with_its_default_lease(cl):
    """A FAISS program pointed at a node, FAISS_PROXY_LEASE_SECONDS unset."""
    code = (
        "import numpy as np, faissproxy as faiss\n"
        "rng = np.random.default_rng(5)\n"
        "xb = rng.random((500, 16), dtype='float32')\n"
        "xq = rng.random((20, 16), dtype='float32')\n"
        "ix = faiss.IndexFlatL2(16)\n"
        "ix.add(xb)\n"
        "D, I = ix.search(xq, 5)\n"
        "np.save('%s', I)\n"
        "print(ix.server_name)\n")
    out = os.path.join(cl.nodes[0].data_dir, "..", "dropin_I.npy")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAISS_PROXY_")}
    env.update(PYTHONPATH=os.path.join(ROOT, "python"), FAISS_PROXY_LIB=PY_LIB,
               FAISS_PROXY_SERVER=cl.nodes[1].endpoint)
    r = subprocess.run(["/usr/bin/python3", "-c", code % out], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    import faiss
    rng = np.random.default_rng(5)
    xb = rng.random((500, 16), dtype="float32")
    xq = rng.random((20, 16), dtype="float32")
    ref = faiss.IndexFlatL2(16)
    ref.add(xb)
    _, want = ref.search(xq, 5)
    assert (np.load(out) == want).all()
    # a program's index is made with the drop-in's lease: set_lease 0 through
    # any node finds it when it is still there (the drop-in may delete it at exit)
    server_name = r.stdout.strip().splitlines()[-1]
    c = clients(cl)[2]
    if server_name in names(c):
        c.drop(server_name)


def test_renewal_without_nats_is_unavailable(tmp_path):
    """A node cut from NATS answers renew_leases unavailable (never renewed), and
    stops promptly when asked."""
    c = Cluster(str(tmp_path)).start()
    try:
        cli = c.nodes[0].client()
        name = unique("cut")
        create_leased(cli, name, lease=60)
        assert renew(cli, name) == {"renewed": [name], "not_found": []}
        for n in c.nats:
            n.kill9()
        deadline = time.time() + 15
        while True:  # the node notices the lost connection within moments
            h = cli.call({"operation": "renew_leases", "index_ids": [name]})[0]
            if h.get("status") == "error" or time.time() > deadline:
                break
            time.sleep(0.1)
        assert h.get("error_type") == "unavailable", h
        h = cli.error({"operation": "set_lease", "index_id": name, "lease_seconds": 0})
        assert h["error_type"] == "unavailable"
        # Cut from NATS, a node still stops at once and cleanly (exit 0, clean log):
        # its NATS calls are not left to wait out their timeouts (30 s in all before),
        # and the replicas whose subscriptions end with the connection are freed once.
        for node in c.nodes:
            t0 = time.time()
            node.stop()
            assert time.time() - t0 < 15
            assert "stopping while cut from the cluster's NATS servers" in node.log()
    finally:
        c.stop()
