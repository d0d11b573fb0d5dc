#!/usr/bin/python3
"""The cluster against one server, in one run on one machine: 3 nats-server
and 3 faiss-proxy nodes (docs/cluster.md) beside one plain server, the same
workloads through both.

    bench/cluster.py [--build build] [--n 20000] [--d 128] [--queries 2000] [--out DIR]
                     [--short] [--only sharded]

--short: n=5000 and 500 queries. --only sharded: the sharded figure alone (to
compare two builds of it without the rest).

Figures (ratios of two measurements of this run):
- ingest: vectors per second of keyless adds in batches of 1,000 through a node
  (every add is published to the index's stream, stored by a JetStream quorum and
  applied by the node's replica before it is acknowledged) over the same adds to
  the plain server;
- search p50 and p99 of single-query k=10 searches, through a node holding a
  replica, and through a node holding none (forwarded to a holder), over the same
  searches on the plain server;
- sharded search p50 and p99: the same searches on an index of 3 shards (one
  replica each, one per node) through a node, which asks its own shard and the
  two nodes holding the others and joins the hits, over the plain server's;
- sharded HNSW recall: 1-recall@1 and 10-recall@10 (against the exact
  neighbours) of HNSW32 at efSearch 16 and 64, 3 shards (each its own graph over
  a third of the vectors, searched for k, the hits joined) over one server's
  HNSW32 holding every vector;
- failover: after kill -9 of a NATS server, and after kill -9 of a node, the time
  until the first write and the first search that succeed through a surviving node
  (requests sent back to back from the kill on, each retried at once when it fails).

Clients speak the wire protocol from Python (tests/integration/wire.py) on both
sides. On a 2-core machine the 3 NATS servers, the 3 nodes and the client share
the cores, so the cluster's figures here are a floor, not a deployment's.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def pct(xs, p):
    return float(np.percentile(np.asarray(xs) * 1e3, p))


def ingest(clients, name, x, batch):
    """Vectors per second of each client's adds of x, batch by batch, the
    clients taking turns (so that both see the same machine)."""
    spent = [0.0] * len(clients)
    for i in range(0, len(x), batch):
        for j, c in enumerate(clients):
            t = time.perf_counter()
            c.add(name, x[i:i + batch])
            spent[j] += time.perf_counter() - t
    return [len(x) / s for s in spent]


def latencies(c, name, q, k=10):
    out = []
    for row in q:
        t = time.perf_counter()
        c.search(name, row.reshape(1, -1), k)
        out.append(time.perf_counter() - t)
    return out


def first_success(fn, limit=120.0):
    """Seconds from now until fn() first returns without raising (each failure
    retried at once); None past the limit."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        try:
            fn()
            return time.perf_counter() - t0
        except Exception:  # unavailable, or no reply from the killed peer
            time.sleep(0.001)
    return None


def worst(writes, reads):
    """The longest first_success of each list, all run at once."""
    res = {}

    def run(key, fn):
        res[key] = first_success(fn)

    ts = [threading.Thread(target=run, args=(("w", i), f)) for i, f in enumerate(writes)]
    ts += [threading.Thread(target=run, args=(("r", i), f)) for i, f in enumerate(reads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    def top(kind):
        v = [res[k] for k in res if k[0] == kind]
        return None if None in v else max(v)

    return top("w"), top("r")


def sharded(p, n1, n2, a, x, q):
    """Single-query searches of an index of 3 shards (one replica each, one per
    node) through node2, which holds one shard and asks the nodes holding the
    other two, against the same searches on the plain server."""
    p.create("flat", a.d)
    n1.ok({"operation": "create_index", "index_id": "sh", "dimension": a.d, "shards": 3,
           "replicas": 1})
    for i in range(0, a.n, 5000):
        p.add("flat", x[i:i + 5000])
        n1.add("sh", x[i:i + 5000])
    for _ in range(2):  # warm up every path, then measure interleaved rounds
        latencies(p, "flat", q[:100])
        latencies(n2, "sh", q[:100])
    lp, ls = [], []
    for r in range(4):
        part = q[r::4]
        lp += latencies(p, "flat", part)
        ls += latencies(n2, "sh", part)
    return [("search %s, ms (3 shards, one per node)" % what, pct(lp, s), pct(ls, s),
             pct(ls, s) / pct(lp, s)) for what, s in (("p50", 50), ("p99", 99))]


def recall(I, gt, k):
    """k-recall@k: the share of the k true nearest found among the k returned."""
    return np.mean([len(set(I[i, :k]) & set(gt[i, :k])) / k for i in range(len(gt))])


def hnsw_recall(p, n1, n2, a, x, q):
    """Recall of an HNSW32 index of 3 shards against one server's, on the same
    vectors and queries (their exact neighbours from a flat index)."""
    p.ok({"operation": "create_index", "index_id": "hnsw", "dimension": a.d,
          "index_type": "HNSW32"})
    n1.ok({"operation": "create_index", "index_id": "hsh", "dimension": a.d, "shards": 3,
           "replicas": 1, "index_type": "HNSW32"})
    p.create("exact", a.d)
    for i in range(0, a.n, 5000):
        p.add("hnsw", x[i:i + 5000])
        n1.add("hsh", x[i:i + 5000])
        p.add("exact", x[i:i + 5000])
    nq = min(len(q), 500)
    _, gt, _ = p.search("exact", q[:nq], 10)
    rows = []
    for ef in (16, 64):
        _, Ip, _ = p.search("hnsw", q[:nq], 10, params={"efSearch": ef})
        _, Is, _ = n2.search("hsh", q[:nq], 10, params={"efSearch": ef})
        for k in (1, 10):
            one, sh = recall(Ip, gt, k), recall(Is, gt, k)
            rows.append(("HNSW32 %d-recall@%d, efSearch %d (3 shards)" % (k, k, ef), one, sh,
                         sh / one))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--out", default=None, help="write results.md here")
    ap.add_argument("--short", action="store_true", help="n=5000, 500 queries")
    ap.add_argument("--only", choices=["all", "sharded"], default="all")
    a = ap.parse_args()
    if a.short:
        a.n, a.queries = 5000, 500
    os.environ["FPX_BUILD_DIR"] = os.path.abspath(a.build)
    from cluster import NATS_SERVER, Cluster, synced
    from conftest import Server
    from wire import Client
    if NATS_SERVER is None:
        sys.exit("nats-server is not installed (make build installs it)")

    root = tempfile.mkdtemp(prefix="fpx-bench-cluster-")
    plain = Server(os.path.join(root, "plain", "data"), "").start()
    cl = Cluster(os.path.join(root, "cl")).start()
    rows = []
    try:
        rng = np.random.default_rng(5)
        x = rng.random((a.n, a.d), dtype="float32")
        q = rng.random((a.queries, a.d), dtype="float32")
        p = Client(plain.endpoint)
        n1, n2, n3 = (Client(n.endpoint) for n in cl.nodes)

        rows += sharded(p, n1, n2, a, x, q)
        rows += hnsw_recall(p, n1, n2, a, x, q)
        if a.only == "all":
            # ingest: the same keyless adds, a replica on every node
            p.create("ing", a.d)
            n1.create("ing", a.d)
            r_plain, r_node = ingest([p, n1], "ing", x, 1000)
            rows.append(("ingest, vectors/s (batches of 1,000)", r_plain, r_node, r_node / r_plain))

            # searches: through a holder, and through a node holding no replica
            n1.ok({"operation": "create_index", "index_id": "two", "dimension": a.d, "replicas": 2})
            for i in range(0, a.n, 5000):
                n1.add("two", x[i:i + 5000])
            placement = n1.info("two")["replicas"]
            far = [c for c, nd in zip((n1, n2, n3), ("node1", "node2", "node3"))
                   if nd not in placement][0]
            synced([n1, n2, n3], "ing")
            synced([Client(cl.nodes[int(nd[-1]) - 1].endpoint) for nd in placement], "two")
            for _ in range(2):  # warm up every path, then measure interleaved rounds
                latencies(p, "ing", q[:100])
                latencies(n1, "ing", q[:100])
                latencies(far, "two", q[:100])
            lp, ln, lf = [], [], []
            for r in range(4):
                part = q[r::4]
                lp += latencies(p, "ing", part)
                ln += latencies(n1, "ing", part)
                lf += latencies(far, "two", part)
            for what, s in (("p50", 50), ("p99", 99)):
                rows.append(("search %s, ms (node holding a replica)" % what, pct(lp, s), pct(ln, s),
                             pct(ln, s) / pct(lp, s)))
                rows.append(("search %s, ms (node holding none: forwarded)" % what, pct(lp, s),
                             pct(lf, s), pct(lf, s) / pct(lp, s)))

            # failover: kill -9 of a NATS server, then of a node
            probe = rng.random((1, a.d), dtype="float32")

            def write(c):
                return lambda: c.add("ing", probe)

            def read(c):
                return lambda: c.search("ing", probe, 10)

            stop = threading.Event()

            def background():  # the cluster keeps taking writes while it happens
                c = Client(cl.nodes[2].endpoint)
                while not stop.is_set():
                    try:
                        c.add("ing", probe)
                    except Exception:
                        time.sleep(0.01)

            t = threading.Thread(target=background)
            t.start()
            try:
                time.sleep(0.5)
                # every node, measured in parallel from the kill: the one connected
                # to the killed server must reconnect to another first (worst of 3)
                cl.nats[0].kill9()
                w, s = worst([write(Client(n.endpoint)) for n in cl.nodes],
                             [read(Client(n.endpoint)) for n in cl.nodes])
                rows.append(("after kill -9 of a NATS server: first write, s (worst node)", None, w,
                             None))
                rows.append(("after kill -9 of a NATS server: first search, s (worst node)", None, s,
                             None))
                cl.nats[0].start()
                time.sleep(3.0)
                cl.nodes[0].kill9()
                w, s = worst([write(Client(n.endpoint)) for n in cl.nodes[1:]],
                             [read(Client(n.endpoint)) for n in cl.nodes[1:]])
                rows.append(("after kill -9 of a node: first write through another, s", None, w, None))
                rows.append(("after kill -9 of a node: first search through another, s", None, s,
                             None))
            finally:
                stop.set()
                t.join(timeout=60)
    finally:
        try:
            for node in cl.nodes:
                if node.proc is not None:
                    node.kill9()
            for n in cl.nats:
                n.stop()
        finally:
            plain.stop()
            shutil.rmtree(root, ignore_errors=True)

    def fmt(v):
        return "" if v is None else ("%.3g" % v)

    lines = ["| figure | one server | cluster (3 nodes, R=3) | cluster over one server |",
             "|---|---:|---:|---:|"]
    for name, one, clu, ratio in rows:
        lines.append("| %s | %s | %s | %s |" % (name, fmt(one), fmt(clu),
                                                "" if ratio is None else "%.2fx" % ratio))
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "results.md"), "w") as f:
            f.write("Measured %s, n=%d, d=%d, %d queries.\n\n" % (
                time.strftime("%Y-%m-%d"), a.n, a.d, a.queries) + text)


if __name__ == "__main__":
    main()
