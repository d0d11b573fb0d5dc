"""durability "synced" in a cluster (docs/cluster.md, "Durability"): three real
nats-server processes and three nodes on loopback.

Proves that a synced write is acknowledged once two replicas reported over NATS
that they applied and synced its record (and that the durable record in the
bucket fpx_applied follows); that with two of three nodes killed (SIGKILL) a
synced write times out with unavailable and "published": true while an acked
write still succeeds, and that both are applied exactly once when the nodes
return (the vectors counted on every node, searches compared with FAISS); that
the server's --durability default and the sharded path behave the same; and
that a bad "durability" is refused, in a cluster and on one server.
"""
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from cluster import NATS_SERVER, SYNC_TIMEOUT, Cluster, synced
from conftest import BUILD, ROOT, unique
from dropin import PY_LIB
from wire import rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")

D = 8
# The synced wait of the cluster whose nodes get killed: short, so that the
# test waits little; sanitized builds are slower to apply.
SYNCED_MS = 4000 if os.environ.get("FPX_SANITIZED") == "1" else 2000


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("synced"))).start()
    yield c
    c.stop()


class NatsConn:
    """A raw connection speaking NATS's text protocol (no NATS client library
    is assumed in the test environment)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.s.makefile("rb")
        self.f.readline()  # INFO
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')

    def close(self):
        self.s.close()

    def ping(self):
        """Waits for the server's PONG: every line sent before is processed."""
        self.s.sendall(b"PING\r\n")
        for _ in range(1000):
            subject, payload = self.next_msg(30)
            if subject is None:
                return

    def next_msg(self, timeout):
        """(subject, payload) of the next MSG; (None, None) for a PONG; raises
        socket.timeout past timeout."""
        self.s.settimeout(timeout)
        while True:
            line = self.f.readline()
            assert line, "NATS closed the connection"
            if line.startswith(b"PING"):
                self.s.sendall(b"PONG\r\n")
            elif line.startswith(b"PONG"):
                return None, None
            elif line.startswith(b"MSG"):
                parts = line.split()
                payload = self.f.read(int(parts[-1]) + 2)[:-2]
                return parts[1].decode(), payload


def kv_get(port, bucket, key):
    """The value of key in a JetStream key-value bucket (a direct message get
    on the bucket's stream), or None when it has none."""
    n = NatsConn(port)
    try:
        req = json.dumps({"last_by_subj": "$KV.%s.%s" % (bucket, key)}).encode()
        n.s.sendall(b"SUB _INBOX.kvs 1\r\nPUB $JS.API.STREAM.MSG.GET.KV_%s _INBOX.kvs %d\r\n%s\r\n"
                    % (bucket.encode(), len(req), req))
        for _ in range(1000):
            subject, payload = n.next_msg(30)
            if subject is not None:
                reply = json.loads(payload)
                if "message" not in reply:
                    return None
                return base64.b64decode(reply["message"]["data"])
    finally:
        n.close()


def add(c, name, x, durability=None, **extra):
    h = {"operation": "add_vectors", "index_id": name, "vector_shape": list(x.shape)}
    if durability is not None:
        h["durability"] = durability
    h.update(extra)
    return c.call(h, x.astype(np.float32).tobytes())[0]


def test_synced_add_waits_for_two_replicas(cl):
    """A synced add through node1 is acknowledged once another replica has
    reported over NATS (fpx.durable.<uid>) that it applied and synced the
    add's stream record: the report is there when the reply is, and the
    durable record fpx_applied of two nodes reaches the sequence."""
    cs = [n.client() for n in cl.nodes]
    name = unique("sy")
    cs[0].ok({"operation": "create_index", "index_id": name, "dimension": D, "replicas": 3})
    assert add(cs[0], name, rand(5, D, 1), "acked")["status"] == "ok"
    synced(cs, name)
    watch = NatsConn(cl.nats[0].port)
    try:
        watch.s.sendall(b"SUB fpx.durable.* 1\r\n")
        watch.ping()
        time.sleep(0.5)  # the interest reaches the other NATS servers of the cluster
        h = add(cs[0], name, rand(7, D, 2), "synced")
        assert h["status"] == "ok", h
        seq = cs[0].info(name)["applied_seq"]
        # What the reply rests on: reports published before it (bounded wait
        # for their delivery to this connection too).
        reports, uid = {}, None
        deadline = time.time() + SYNC_TIMEOUT
        while time.time() < deadline:
            others = [n for n, s in reports.items() if n != "node1" and s >= seq]
            if others:
                break
            try:
                subject, payload = watch.next_msg(max(0.1, deadline - time.time()))
            except socket.timeout:
                break
            if subject is None:
                continue
            node, s = payload.decode().split()
            uid = subject.split(".")[-1]
            reports[node] = max(reports.get(node, 0), int(s))
        assert any(n != "node1" and s >= seq for n, s in reports.items()), (seq, reports)
    finally:
        watch.close()
    # The durable record in the bucket (written each heartbeat).
    deadline = time.time() + SYNC_TIMEOUT
    while True:
        got = {n: kv_get(cl.nats[0].port, "fpx_applied", "%s.%s" % (n, uid))
               for n in ("node1", "node2", "node3")}
        if sum(1 for v in got.values() if v is not None and int(v) >= seq) >= 2:
            break
        assert time.time() < deadline, (seq, got)
        time.sleep(0.2)
    # The reply of a synced write has the fields of an acked one.
    h = add(cs[1], name, rand(3, D, 3), "synced")
    assert h["status"] == "ok", h
    assert cs[1].ok({"operation": "get_index_info", "index_id": name})[2]["ntotal"] == 15
    cs[0].drop(name)


def test_bad_durability_refused(cl, fresh_server):
    """durability other than "acked" / "synced" is a validation_error naming
    the field, on a cluster node and on one server, and nothing is written;
    on one server "synced" is accepted (what its log does anyway)."""
    name = unique("bad")
    for c in (cl.nodes[1].client(), fresh_server.client()):
        c.ok({"operation": "create_index", "index_id": name, "dimension": D})
        for bad in ("bogus", "SYNCED", 1, True, ["synced"], ""):
            e = c.error({"operation": "add_vectors", "index_id": name, "vector_shape": [2, D],
                         "durability": bad}, rand(2, D, 4).tobytes())
            assert e["error_type"] == "validation_error", e
            assert "durability" in e["message"], e
        e = c.error({"operation": "reset", "index_id": name, "durability": "fsync"})
        assert e["error_type"] == "validation_error" and "durability" in e["message"], e
        assert c.info(name)["ntotal"] == 0
        for mode in ("synced", "acked", None):
            assert add(c, name, rand(2, D, 5), mode)["status"] == "ok"
        assert c.info(name)["ntotal"] == 6
        c.drop(name)


def restart_cluster(tmp_path_factory):
    """A cluster whose node1 acknowledges a write without "durability" as
    synced (--durability synced), every node waiting SYNCED_MS for replicas."""
    c = Cluster(str(tmp_path_factory.mktemp("synced_kill")))
    for i, node in enumerate(c.nodes):
        node.extra += ["--synced-timeout-ms", str(SYNCED_MS)]
        if i == 0:
            node.extra += ["--durability", "synced", "--metrics-port", "0"]
    return c.start()


def failed_adds(node, op="add_vectors"):
    """How many requests of op node answered unavailable (its /metrics)."""
    m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", node.log())
    text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % m.group(1), timeout=10).read()
    return sum(int(n) for st, n in re.findall(
        rb'faiss_proxy_requests_total\{operation="%s",status="(\w+)"\} (\d+)' % op.encode(), text)
        if st == b"unavailable")


# The Python package's program: a keyed add asking for "synced".
PY_PROGRAM = """
import sys, numpy as np, faissproxy
try:
    db = faissproxy.connect(sys.argv[1], durability=sys.argv[3])
    ix = db.index(sys.argv[2])
    ix.upsert(["p1", "p2"], np.ones((2, %d), dtype="float32"))
    print("ok")
except Exception as e:
    print("error", e)
if len(sys.argv) > 4:  # a call the library would send again after unavailable
    try:
        ix.delete(["absent"])
        print("ok")
    except Exception as e:
        print("error", e)
""" % D


def run_py(endpoint, name, durability, *more):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), FAISS_PROXY_LIB=PY_LIB)
    env.pop("FAISS_PROXY_DURABILITY", None)
    r = subprocess.run([sys.executable, "-c", PY_PROGRAM, endpoint, name, durability] + list(more),
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def clients_resend_nothing(cl, keyed, tmp_dir):
    """With node2 and node3 down: the Python package (libfaissproxy) and the
    CLI ask for "synced", get the error, and send the add once (no retry:
    the reply says "published": true); a bad value is refused locally."""
    node = cl.nodes[0]
    before, deletes = failed_adds(node), failed_adds(node, "delete_vector")
    out = run_py(node.endpoint, keyed, "synced", "delete").splitlines()
    for line in out:
        assert line.startswith("error") and "synced" in line and "published" in line, out
    assert failed_adds(node) == before + 1
    # sent once, not FAISS_PROXY_RETRIES times more, as a delete answered
    # unavailable otherwise is
    assert failed_adds(node, "delete_vector") == deletes + 1
    out = run_py(node.endpoint, keyed, "fsync")
    assert "durability" in out, out
    path = os.path.join(tmp_dir, "three.npy")
    np.save(path, rand(3, D, 60))
    cli = os.path.join(BUILD, "faiss-proxy")
    r = subprocess.run([cli, "--server", node.endpoint, "--durability", "synced", "import", path,
                        "--index", keyed, "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "synced" in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert failed_adds(node) == before + 2
    r = subprocess.run([cli, "--server", node.endpoint, "--durability", "fsync", "import", path,
                        "--index", keyed], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "durability" in r.stderr, (r.returncode, r.stderr)


def test_synced_times_out_without_replicas(tmp_path_factory):
    """node2 and node3 killed (SIGKILL): a synced add through node1 (by its
    --durability default, or asked for) is answered unavailable with
    "published": true, saying the write is in the log; an acked add
    succeeds; a sharded index's synced add is answered the same. Restarted,
    the nodes apply every write exactly once: the vectors are counted and the
    searches answer as FAISS given the same vectors."""
    import faiss
    cl = restart_cluster(tmp_path_factory)
    try:
        cs = [n.client() for n in cl.nodes]
        name, sharded, keyed = unique("kill"), unique("ksh"), unique("kk")
        cs[0].ok({"operation": "create_index", "index_id": name, "dimension": D, "replicas": 3})
        cs[0].ok({"operation": "create_index", "index_id": keyed, "dimension": D, "replicas": 3})
        cs[0].ok({"operation": "create_index", "index_id": sharded, "dimension": D,
                  "replicas": 3, "shards": 2})
        xs = [rand(10, D, 10)]
        assert add(cs[0], name, xs[0])["status"] == "ok"  # node1's default: synced
        assert add(cs[0], sharded, xs[0], "synced")["status"] == "ok"
        synced(cs, name)
        cl.nodes[1].kill9()
        cl.nodes[2].kill9()
        c = cl.nodes[0].client()
        for mode in (None, "synced"):
            x = rand(4, D, 20 + len(xs))
            t0 = time.time()
            h = add(c, name, x, mode, client_id="synced-test-%d" % os.getpid(),
                    request_id=len(xs))
            assert h["status"] == "error" and h["error_type"] == "unavailable", h
            assert h.get("published") is True, h
            assert "synced" in h["message"] and "published" in h["message"], h
            assert time.time() - t0 >= SYNCED_MS / 1000.0 * 0.9  # it waited for the replicas
            xs.append(x)
        x = rand(6, D, 30)
        h = add(c, name, x, "acked")
        assert h["status"] == "ok" and h.get("published") is None, h
        xs.append(x)
        h = add(c, sharded, rand(6, D, 31), "synced")
        assert h["status"] == "error" and h["error_type"] == "unavailable", h
        assert h.get("published") is True, h
        # Nothing was published: refused as before, "published" not claimed.
        h = add(c, name, rand(2, D, 32), "bogus")
        assert h["error_type"] == "validation_error" and "published" not in h, h
        clients_resend_nothing(cl, keyed, str(tmp_path_factory.mktemp("files")))
        cl.nodes[1].start()
        cl.nodes[2].start()
        cs = [n.client() for n in cl.nodes]
        synced(cs, name)
        want = np.vstack(xs)
        flat = faiss.IndexFlatL2(D)
        flat.add(want)
        q = rand(5, D, 40)
        dist, lab = flat.search(q, 4)
        for cc in cs:
            assert cc.info(name)["ntotal"] == len(want)  # each write applied once
            got_d, got_i, _ = cc.search(name, q, 4)
            assert np.array_equal(got_i, lab), (got_i, lab)
            assert np.allclose(got_d, dist, rtol=1e-5, atol=1e-5)
        # With its replicas back, a synced write is acknowledged again.
        assert add(cs[0], name, rand(1, D, 50), "synced")["status"] == "ok"
        assert cs[0].info(sharded)["ntotal"] == 16
        synced(cs, keyed)
        for cc in cs:  # the Python package's 2 and the CLI's 3, once each
            assert cc.info(keyed)["ntotal"] == 5
        assert run_py(cs[1].endpoint, keyed, "synced") == "ok"  # replicas back: acknowledged
    finally:
        cl.stop()
