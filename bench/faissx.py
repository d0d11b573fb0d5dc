#!/usr/bin/python3
"""The same workload through FAISSx's own Python client, against FAISSx's own
server and against faiss-proxy (which serves FAISSx's wire format on its
port), in one run: ingest rate and single-query search latency, as ratios.

    FAISSX_SOURCE=/path/to/faissx-checkout bench/faissx.py [--build build] [--n 20000]

FAISSx is not a Debian package and none of its code is in this repository:
the run needs a checkout of it (its client and server import numpy, pyzmq,
msgpack and faiss, all Debian's). Without FAISSX_SOURCE it says so and exits
0. Results go to stdout as a Markdown table (bench/README.md keeps the last).
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# One client run: connect, ingest, search; prints "ingest_s p50_us p99_us mean_us".
CLIENT = r"""
import sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
from faissx import client as faiss
faiss.configure(server=sys.argv[2])
n, d, nq = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(7)
xb = rng.random((n, d), dtype="float32")
xq = rng.random((nq, d), dtype="float32")
ix = faiss.IndexFlatL2(d)
t0 = time.perf_counter()
ix.add(xb)
ingest = time.perf_counter() - t0
for i in range(20):  # warm up
    ix.search(xq[i:i + 1], 10)
lat = []
first = None
for i in range(nq):
    t = time.perf_counter()
    D, I = ix.search(xq[i:i + 1], 10)
    lat.append(time.perf_counter() - t)
    if first is None:
        first = I[0].tolist()
lat.sort()
print(ingest, lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6,
      sum(lat) / len(lat) * 1e6, " ".join(map(str, first)))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not listen on %d" % port)


def run_client(src, endpoint, n, d, nq):
    p = subprocess.run([sys.executable, "-c", CLIENT, src, endpoint, str(n), str(d), str(nq)],
                       capture_output=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode()[-3000:])
    f = p.stdout.decode().split()
    return float(f[0]), float(f[1]), float(f[2]), float(f[3]), f[4:]


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--nq", type=int, default=300)
    a = ap.parse_args()
    src = os.environ.get("FAISSX_SOURCE")
    if not src or not os.path.isdir(os.path.join(src, "faissx")):
        print("FAISSX_SOURCE does not name a FAISSx checkout: nothing to compare")
        return 0
    tmp = tempfile.mkdtemp(prefix="fpx-faissx-")
    rows = {}
    try:
        port = free_port()
        env = dict(os.environ, PYTHONPATH=src)
        p = subprocess.Popen([sys.executable, "-m", "faissx.server.server", "--port", str(port),
                              "--bind-address", "127.0.0.1"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, p)
            rows["FAISSx server"] = run_client(src, "tcp://127.0.0.1:%d" % port, a.n, a.d, a.nq)
        finally:
            stop(p)
        port = free_port()
        p = subprocess.Popen([os.path.join(a.build, "faiss-proxy-server"), "--bind", "127.0.0.1",
                              "--port", str(port), "--data-dir", os.path.join(tmp, "data")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, p)
            rows["faiss-proxy"] = run_client(src, "tcp://127.0.0.1:%d" % port, a.n, a.d, a.nq)
        finally:
            stop(p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fx, fp = rows["FAISSx server"], rows["faiss-proxy"]
    print("FAISSx's own client, IndexFlatL2 d=%d: add %d vectors, %d single-query k=10 "
          "searches\n" % (a.d, a.n, a.nq))
    print("| server | ingest (vectors/s) | search p50 (µs) | p99 (µs) | mean (µs) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print("| %s | %.0f | %.0f | %.0f | %.0f |" % (name, a.n / r[0], r[1], r[2], r[3]))
    print("| **faiss-proxy over FAISSx** | **%.1fx** | **%.1fx faster** | **%.1fx faster** | "
          "**%.1fx faster** |" % (fx[0] / fp[0], fx[1] / fp[1], fx[2] / fp[2], fx[3] / fp[3]))
    same = fx[4] == fp[4]
    print("\nfirst query's neighbours %s" % ("identical" if same else "DIFFER: %s vs %s"
                                               % (fx[4], fp[4])))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
