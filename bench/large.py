#!/usr/bin/python3
"""Indexes of the size users run: build time, memory, and the queries per
second one client and 16 clients reach at a given recall, server over
in-process FAISS (the same library), in one run.

    bench/large.py [--build build] [--out DIR] [--short]
                   [--specs "IVF1024,PQ64np:1000000,HNSW32:100000"]

Data: clustered vectors (2,000 Gaussian clusters in the unit cube, sigma
0.25 per dimension, so that clusters overlap and an IVF index must probe
several lists), 128 wide; 1,000 queries from the same clusters; the ground
truth is an exact search. Recall is FAISS's R@10 (its benchmarks' 1-recall@10):
the share of queries whose true nearest neighbour is among the 10 returned,
which a PQ index can reach (the overlap of two top-10 lists is bounded by
the PQ's distortion, not by the search). For each spec (FAISS
factory string : vectors):
- in-process: a child process trains on the first 64 vectors per IVF list
  (at least 16,384, for PQ's 256 centroids per sub-quantizer) and adds all
  of them, one OpenMP team as FAISS runs it; its RSS growth is the index's
  memory, after glibc's malloc_trim (FAISS's training and adding leave freed
  buffers in the heap that a process would otherwise count as the index's). It then sweeps nprobe (IVF) or efSearch (HNSW): recall@10
  of the 1,000 queries, and single-query searches for --seconds, one thread.
- server: a fresh faiss-proxy server gets the same create, train and adds
  (batches of 50,000) over the wire; its RSS growth is the index's memory.
  Then the same sweep through the wire protocol's per-search params, with
  one client and with 16 client processes (one connection each).
Both sides' clients are Python loops (tests/integration/wire.py for the
server, the faiss module in-process), so both pay Python per query.
Targets (bench/README.md): single-client QPS at recall 0.9 and 0.95 at least
0.95 of in-process; 16 clients at least 3x one client; RSS at most 1.1x
in-process plus 64 MB. The curves go to DIR/large.dat and, with gnuplot,
DIR/large.png.
"""
import argparse
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchlib import ROOT, rss_kb, start_server

D = 128
K = 10
NQ = 1000
BATCH = 50000


def clustered(n, seed, centers):
    """n vectors around the given centers (sigma 0.25 per dimension)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, D), dtype="float32")
    for lo in range(0, n, 100000):
        hi = min(n, lo + 100000)
        a = rng.integers(0, len(centers), hi - lo)
        out[lo:hi] = centers[a] + 0.25 * rng.standard_normal((hi - lo, D), dtype="float32")
    return out


def ntrain(factory, n):
    """Training vectors: 64 per IVF list, at least 16,384 (PQ's 256 centroids
    per sub-quantizer want 39 points each), at most n."""
    m = re.search(r"IVF(\d+)", factory)
    return min(n, max(16384, 64 * int(m.group(1)) if m else 0))


def sweep_of(factory, short):
    if factory.startswith("HNSW"):
        return "efSearch", ([16, 64] if short else [16, 24, 32, 48, 64, 96, 128, 256])
    return "nprobe", ([1, 8] if short else [1, 2, 4, 8, 16, 32, 64, 128, 256])


def recall(I, gt):
    """R@10: the share of queries whose true nearest neighbour was returned."""
    return float(np.mean([gt[i, 0] in I[i] for i in range(len(gt))]))


def single_loop(search, xq, seconds):
    """Queries per second of single-query searches in a loop for `seconds`."""
    search(xq[0:1])  # warm
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        search(xq[n % NQ:n % NQ + 1])
        n += 1
    return n / seconds


def inproc_child(factory, n, paths, short, seconds, out):
    import faiss
    xb = np.load(paths["xb"], mmap_mode="r")[:n]
    xb = np.ascontiguousarray(xb)
    xq = np.load(paths["xq"])
    gt = np.load(paths["gt_%d" % n])
    before = rss_kb()
    t0 = time.perf_counter()
    ix = faiss.index_factory(D, factory)
    if not ix.is_trained:
        ix.train(xb[:ntrain(factory, n)])
    ix.add(xb)
    build = time.perf_counter() - t0
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    grown = (rss_kb() - before) / 1024
    del xb
    param, values = sweep_of(factory, short)
    ps = faiss.ParameterSpace()
    faiss.omp_set_num_threads(1)
    rows = []
    for v in values:
        ps.set_index_parameter(ix, param, v)
        _, I = ix.search(xq, K)
        rows.append((v, recall(I, gt), single_loop(lambda q: ix.search(q, K), xq, seconds)))
    out.put({"build": build, "mb": grown, "rows": rows})


def client_child(endpoint, name, params, xq_path, seconds, start, out):
    from wire import Client
    c = Client(endpoint)
    xq = np.load(xq_path)
    c.search(name, xq[0], K, params=params)  # connected before the clock starts
    start.wait()
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        c.search(name, xq[n % NQ], K, params=params)
        n += 1
    out.put(n)


def many_clients(endpoint, name, params, xq_path, seconds, procs):
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=client_child,
                      args=(endpoint, name, params, xq_path, seconds, start, out))
          for _ in range(procs)]
    for p in ps:
        p.start()
    time.sleep(1 + procs * 0.3)  # every process connected
    start.set()
    total = sum(out.get(timeout=seconds + 600) for _ in ps)
    for p in ps:
        p.join(timeout=60)
    return total / seconds


def server_side(build_dir, tmp, factory, n, paths, short, seconds, clients):
    import wire
    data = os.path.join(tmp, "data")
    p, endpoint, c = start_server(build_dir, data)
    c.close()
    wire.TIMEOUT_MS = 3600 * 1000  # a build of minutes is one call
    c = wire.Client(endpoint)
    try:
        xb = np.load(paths["xb"], mmap_mode="r")
        xq = np.load(paths["xq"])
        gt = np.load(paths["gt_%d" % n])
        name = "large"
        before = rss_kb(p.pid)
        t0 = time.perf_counter()
        c.create(name, D, factory)
        if not factory.startswith("HNSW") and "Flat" != factory:
            c.train(name, np.ascontiguousarray(xb[:ntrain(factory, n)]))
        for lo in range(0, n, BATCH):
            c.add(name, np.ascontiguousarray(xb[lo:min(n, lo + BATCH)]))
        build = time.perf_counter() - t0
        time.sleep(2)  # the adds' transient buffers returned
        grown = (rss_kb(p.pid) - before) / 1024
        param, values = sweep_of(factory, short)
        rows = []
        for v in values:
            prm = {param: v}
            _, I, _ = c.search(name, xq, K, params=prm)
            r = recall(I, gt)
            one = single_loop(lambda q: c.search(name, q, K, params=prm), xq, seconds)
            many = many_clients(endpoint, name, prm, paths["xq"], seconds, clients)
            rows.append((v, r, one, many))
        return {"build": build, "mb": grown, "rows": rows}
    finally:
        p.terminate()
        p.wait(timeout=120)
        shutil.rmtree(data, ignore_errors=True)


def at_recall(rows, target, col):
    """QPS (column col) interpolated where recall (column 1) reaches target;
    None when the sweep never reaches it."""
    for a, b in zip(rows, rows[1:]):
        if a[1] < target <= b[1]:
            f = (target - a[1]) / (b[1] - a[1])
            return a[col] + f * (b[col] - a[col])
    if rows and rows[0][1] >= target:
        return rows[0][col]
    return None


def verdict(ok):
    return "ok" if ok else "MISSED"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--specs", default="IVF1024,PQ64np:1000000,HNSW32:100000")
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--short", action="store_true",
                    help="5,000 vectors, IVF16,PQ8np and HNSW16, two sweep points of 0.2 s, "
                         "2 clients: the code paths in seconds (CI)")
    a = ap.parse_args()
    specs = []
    # "IVF1024,PQ32:1000000,HNSW32:100000": factory strings hold commas, so
    # a spec is FACTORY:N and specs are separated by the comma after N.
    rest = a.specs
    while rest:
        factory, _, tail = rest.partition(":")
        num, _, rest = tail.partition(",")
        if a.short:
            factory = re.sub(r"HNSW\d+", "HNSW16", re.sub(r"IVF\d+,PQ\d+", "IVF16,PQ8", factory))
            num = 5000
        specs.append((factory, int(num)))
    if a.short:
        a.seconds, a.clients = 0.2, 2
    import faiss
    tmp = tempfile.mkdtemp(prefix="fpx-large-")
    t_start = time.time()
    results = []
    try:
        nmax = max(n for _, n in specs)
        rng = np.random.default_rng(5)
        centers = rng.random((2000, D), dtype="float32")
        xb = clustered(nmax, 6, centers)
        xq = clustered(NQ, 7, centers)
        paths = {"xb": os.path.join(tmp, "xb.npy"), "xq": os.path.join(tmp, "xq.npy")}
        np.save(paths["xb"], xb)
        np.save(paths["xq"], xq)
        for n in sorted({n for _, n in specs}):
            flat = faiss.IndexFlatL2(D)
            flat.add(xb[:n])
            _, gt = flat.search(xq, K)
            paths["gt_%d" % n] = os.path.join(tmp, "gt_%d.npy" % n)
            np.save(paths["gt_%d" % n], gt)
            del flat
        del xb
        for factory, n in specs:
            print("[large] %s on %d x %d: in-process" % (factory, n, D), flush=True)
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            child = ctx.Process(target=inproc_child,
                                args=(factory, n, paths, a.short, a.seconds, out))
            child.start()
            inp = out.get(timeout=7200)
            child.join(timeout=60)
            print("[large] %s on %d x %d: server" % (factory, n, D), flush=True)
            srv = server_side(a.build, tmp, factory, n, paths, a.short, a.seconds, a.clients)
            results.append((factory, n, inp, srv))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lines = ["Clustered %d-wide vectors, %d queries, k=%d, %d client processes for the 'many' "
             "column, %.1f s per point; whole run %.0f s.\n"
             % (D, NQ, K, a.clients, a.seconds, time.time() - t_start)]
    dat = []
    for factory, n, inp, srv in results:
        param, _ = sweep_of(factory, a.short)
        lines.append("### %s, %d vectors\n" % (factory, n))
        lines.append("| | in-process | server | server over in-process | target |")
        lines.append("|---|---:|---:|---:|---|")
        lines.append("| build (s) | %.1f | %.1f | %.2f | |" %
                     (inp["build"], srv["build"], srv["build"] / inp["build"]))
        limit = 1.1 * inp["mb"] + 64
        lines.append("| memory the index added (MB) | %.0f | %.0f | %.2f | <= 1.1x + 64 MB: %s |"
                     % (inp["mb"], srv["mb"], srv["mb"] / max(inp["mb"], 1e-9),
                        verdict(srv["mb"] <= limit)))
        lines.append("")
        lines.append("| %s | R@10 in-process | R@10 server | QPS in-process (1) | "
                     "QPS server (1) | server / in-process | QPS server (%d) | %d over 1 |"
                     % (param, a.clients, a.clients))
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (v, ri, qi), (_, rs, q1, qm) in zip(inp["rows"], srv["rows"]):
            lines.append("| %d | %.3f | %.3f | %.0f | %.0f | %.2f | %.0f | %.2f |"
                         % (v, ri, rs, qi, q1, q1 / qi, qm, qm / q1))
            dat.append("%s %d %.4f %.1f %.4f %.1f %.1f" % (factory.replace(",", "_"), v, ri, qi,
                                                            rs, q1, qm))
        lines.append("")
        for target in (0.9, 0.95):
            qi = at_recall(inp["rows"], target, 2)
            q1 = at_recall(srv["rows"], target, 2)
            qm = at_recall(srv["rows"], target, 3)
            if qi is None or q1 is None:
                lines.append("- recall %.2f: not reached by the sweep (%s)" %
                             (target, "in-process" if qi is None else "server"))
                continue
            lines.append("- recall %.2f: single client %.0f over %.0f QPS = **%.2f** "
                         "(target >= 0.95: %s); %d clients over 1: **%.2f** (target >= 3: %s)"
                         % (target, q1, qi, q1 / qi, verdict(q1 / qi >= 0.95), a.clients,
                            qm / q1, verdict(qm / q1 >= 3)))
        lines.append("")
    report = "\n".join(lines)
    print(report)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "large.md"), "w") as f:
            f.write(report + "\n")
        with open(os.path.join(a.out, "large.dat"), "w") as f:
            f.write("# index param recall_inproc qps_inproc recall_server qps_server_1 "
                    "qps_server_many\n" + "\n".join(dat) + "\n")
        if shutil.which("gnuplot"):
            plot(a.out, [f for f, _, _, _ in results], a.clients)
    return 0


def plot(out, factories, clients):
    """QPS against recall@10 per index, in-process and server, as a PNG."""
    cmds = ["set terminal png size 1000,%d" % (420 * len(factories)),
            "set output '%s'" % os.path.join(out, "large.png"),
            "set multiplot layout %d,1" % len(factories),
            "set logscale y", "set xlabel 'R@10 (true nearest neighbour among the 10 returned)' noenhanced", "set ylabel 'queries per second'",
            "set key left bottom", "set grid"]
    dat = os.path.join(out, "large.dat")
    for f in factories:
        tag = f.replace(",", "_")
        cmds.append("set title '%s'" % f)
        cmds.append("plot '< grep ^%s %s' using 3:4 with linespoints title 'in-process, 1 client', "
                    "'' using 5:6 with linespoints title 'server, 1 client', "
                    "'' using 5:7 with linespoints title 'server, %d clients'"
                    % (tag, dat, clients))
    cmds.append("unset multiplot")
    subprocess.run(["gnuplot"], input="\n".join(cmds).encode(), check=False)


if __name__ == "__main__":
    sys.exit(main())
