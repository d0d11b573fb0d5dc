#!/usr/bin/python3
"""Where sharing should win: P processes that each hold their own in-process
copy of an index and send single-query searches, against P clients of one
faiss-proxy server holding one copy, in one run. Aggregate QPS, p99 and
memory of both, for a flat index and HNSW32 (the same index file on both
sides, so recall is equal by construction).

    bench/share.py [--build build] [--n 100000] [--d 128] [--procs 16] [--seconds 10]

Memory is reported two ways: the processes' whole RSS (Python interpreters
included, on both sides), and the RSS the index adds (after loading minus
before, summed over the in-process copies; the server's growth on import).
The server side's clients are Python processes searching through
libfaissproxy as the Python drop-in does (--client lib), or speaking the wire
protocol in Python (--client wire, tests/integration/wire.py); both sides pay
a Python loop per query.
"""
import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from benchlib import ROOT, rss_kb, start_server


def queries(n, d):
    return np.random.default_rng(99).random((n, d), dtype="float32")


def inproc_worker(path, d, seconds, start, out):
    import faiss
    faiss.omp_set_num_threads(1)
    before = rss_kb()
    ix = faiss.read_index(path)
    loaded = rss_kb()
    q = queries(1000, d)
    start.wait()
    lat, i, end = [], 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        ix.search(q[i % 1000:i % 1000 + 1], 10)
        lat.append(time.perf_counter() - t)
        i += 1
    out.put((lat, loaded, loaded - before))


def client_worker(endpoint, name, d, seconds, start, out):
    from wire import Client
    c = Client(endpoint)
    q = queries(1000, d)
    c.search(name, q[0], 10)  # connected before the clock starts
    start.wait()
    lat, i, end = [], 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        c.search(name, q[i % 1000], 10)
        lat.append(time.perf_counter() - t)
        i += 1
    out.put((lat, rss_kb(), 0))


def lib_worker(build, endpoint, name, d, seconds, start, out):
    """A client as the Python drop-in searches: libfaissproxy through ctypes,
    the arrays numpy's (faissproxy's Index.search without parameters)."""
    os.environ["FPX_BUILD_DIR"] = build
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import ctypes
    import faissproxy
    from faissproxy._lib import check, client, lib
    faissproxy.configure(server=endpoint)
    q = queries(1000, d)
    bname = name.encode()

    def search(x):
        D = np.empty((1, 10), dtype="float32")
        I = np.empty((1, 10), dtype="int64")
        h = client()
        check(lib.fpx_client_search(h, bname, 1, d, x.ctypes.data_as(ctypes.c_void_p), 10, None,
                                    D.ctypes.data_as(ctypes.c_void_p),
                                    I.ctypes.data_as(ctypes.c_void_p)), h)
        return D, I

    search(q[:1])  # connected before the clock starts
    start.wait()
    lat, i, end = [], 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        search(q[i % 1000:i % 1000 + 1])
        lat.append(time.perf_counter() - t)
        i += 1
    out.put((lat, rss_kb(), 0))


def run_side(target, args_of, procs, seconds):
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=target, args=args_of(start, out)) for _ in range(procs)]
    for p in ps:
        p.start()
    time.sleep(2 + procs * 0.3)  # every process loaded and connected
    start.set()
    res = [out.get(timeout=seconds + 600) for _ in ps]
    for p in ps:
        p.join(timeout=60)
    lat = sorted(x for r in res for x in r[0])
    return {"qps": len(lat) / seconds, "p50": lat[len(lat) // 2] * 1e3,
            "p99": lat[int(len(lat) * 0.99)] * 1e3, "rss": sum(r[1] for r in res) / 1024,
            "index": sum(r[2] for r in res) / 1024}


def serve(build, tmp, path, name):
    """A server holding the index file; returns (process, endpoint, rss growth MB)."""
    p, endpoint, c = start_server(build, os.path.join(tmp, "data"), "--max-message-size",
                                  str(1 << 30))
    before = rss_kb(p.pid)
    with open(path, "rb") as f:
        c.ok({"operation": "import_index", "index_id": name}, f.read())
    time.sleep(1)  # the import's transient buffers returned
    return p, endpoint, (rss_kb(p.pid) - before) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--types", default="Flat,HNSW32")
    ap.add_argument("--client", choices=("lib", "wire"), default="lib",
                    help="the server side's clients: libfaissproxy through ctypes, as the "
                         "Python drop-in searches (lib), or the wire protocol in Python (wire)")
    a = ap.parse_args()
    import faiss
    tmp = tempfile.mkdtemp(prefix="fpx-share-")
    xb = np.random.default_rng(1).random((a.n, a.d), dtype="float32")
    rows = []
    try:
        for t in a.types.split(","):
            ix = faiss.index_factory(a.d, t)
            t0 = time.time()
            ix.add(xb)
            build = time.time() - t0
            path = os.path.join(tmp, t + ".index")
            faiss.write_index(ix, path)
            del ix
            inproc = run_side(inproc_worker, lambda s, o: (path, a.d, a.seconds, s, o), a.procs,
                              a.seconds)
            p, endpoint, grown = serve(a.build, tmp, path, t.lower())
            try:
                if a.client == "lib":
                    srv = run_side(lib_worker, lambda s, o: (a.build, endpoint, t.lower(), a.d,
                                                             a.seconds, s, o),
                                   a.procs, a.seconds)
                else:
                    srv = run_side(client_worker,
                                   lambda s, o: (endpoint, t.lower(), a.d, a.seconds, s, o),
                                   a.procs, a.seconds)
                srv["server_rss"] = rss_kb(p.pid) / 1024
                srv["index"] = grown
            finally:
                p.terminate()
                p.wait(timeout=60)
                shutil.rmtree(os.path.join(tmp, "data"), ignore_errors=True)
            rows.append((t, build, inproc, srv))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d processes, %d x %d vectors, single-query k=10 searches for %.0f s each side\n"
          % (a.procs, a.n, a.d, a.seconds))
    print("| index | side | QPS | p50 ms | p99 ms | RSS MB (all processes) | index MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for t, build, i, s in rows:
        print("| %s | %d in-process copies | %.0f | %.2f | %.2f | %.0f | %.0f |"
              % (t, a.procs, i["qps"], i["p50"], i["p99"], i["rss"], i["index"]))
        print("| %s | one server, %d clients | %.0f | %.2f | %.2f | %.0f (server %.0f) | %.0f |"
              % (t, a.procs, s["qps"], s["p50"], s["p99"], s["rss"] + s["server_rss"],
                 s["server_rss"], s["index"]))
        print("| %s | **server over in-process** | **%.2fx** | | **%.2fx** | **%.2f** | **%.3f** |"
              % (t, s["qps"] / i["qps"], s["p99"] / i["p99"],
                 (s["rss"] + s["server_rss"]) / i["rss"], s["index"] / max(i["index"], 1e-9)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
