"""Durable ingest with requests in flight: one connection's pipelined adds are
applied in the order sent, concurrent writers share fdatasyncs (group
commit) and still lose no acknowledged row to kill -9, libfaissproxy's
pipelined add says exactly which rows went in, and the CLI's pipelined
import resumes to exactly its file.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import faiss
import numpy as np
import zmq

import conftest
from conftest import BUILD, SANITIZED, unique
from wire import dealer, dealer_recv, dealer_send, encode, rand

CLI = os.path.join(BUILD, "faiss-proxy")
# the drop-in loads the release library even in the sanitizer run (as test_split_requests)
PY_LIB = os.path.join(conftest.ROOT, "build", "libfaissproxy.so") if SANITIZED \
    else os.path.join(BUILD, "libfaissproxy.so")
PY_ENV = dict(os.environ, FAISS_PROXY_LIB=PY_LIB, PYTHONPATH=os.path.join(conftest.ROOT, "python"))
WAIT = 120 if SANITIZED else 40


def add_body(name, x, rid, labels=None):
    h = {"operation": "add_vectors", "index_id": name, "vector_shape": list(x.shape),
         "request_id": rid}
    data = np.ascontiguousarray(x, dtype="float32").tobytes()
    if labels is not None:
        h["with_ids"] = True
        data += np.ascontiguousarray(labels, dtype="int64").tobytes()
    return encode(h, data)


def exported(client, name):
    """The index as FAISS reads its export_index bytes: (labels, vectors)."""
    h, data, _ = client.ok({"operation": "export_index", "index_id": name})
    ix = faiss.deserialize_index(np.frombuffer(data, dtype="uint8"))
    n = ix.ntotal
    if isinstance(ix, faiss.IndexIDMap):
        labels = faiss.vector_to_array(ix.id_map)
        vecs = faiss.downcast_index(ix.index).reconstruct_n(0, n)
    else:
        labels = np.arange(n)
        vecs = ix.reconstruct_n(0, n)
    return labels, vecs


# ---- order -----------------------------------------------------------------------


def test_pipelined_unkeyed_adds_get_labels_in_the_order_sent(make_server):
    """Many adds of one DEALER connection in flight at once, large and small
    mixed so that the workers handling them finish decoding at different
    times: the vectors must get the labels FAISS's add would give them in
    the order the requests were sent."""
    s = make_server(extra=["--workers", "4"])  # three of one connection at the workers
    c = s.client()
    name = unique("order")
    d = 16
    c.create(name, d)
    sock = dealer(s.endpoint)
    rng = np.random.default_rng(7)
    parts = []
    for i in range(80):
        n = 3000 if i % 3 == 0 else 1 + i % 5
        parts.append(rng.standard_normal((n, d)).astype("float32"))
    for i, x in enumerate(parts):
        dealer_send(sock, add_body(name, x, i))
    got = set()
    for _ in parts:
        h, _, m = dealer_recv(sock)
        assert h["status"] == "ok", h
        got.add(h["request_id"])
    sock.close()
    assert got == set(range(len(parts)))
    labels, vecs = exported(c, name)
    want = np.concatenate(parts)
    assert np.array_equal(labels, np.arange(len(want)))
    np.testing.assert_array_equal(vecs, want)


# ---- group commit --------------------------------------------------------------


def _metric(port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else 0.0


def test_concurrent_writers_share_fdatasyncs(make_server):
    """Eight writers adding to one index: every add is acknowledged and
    durable (after kill -9 they are all there), with fewer fdatasyncs than
    adds: writers appended while another's fdatasync ran share the next."""
    s = make_server(extra=["--workers", "16", "--metrics-port", "0"])
    port = s.metrics_port()
    name = unique("group")
    d = 32
    s.client().create(name, d)
    before = _metric(port, "faiss_proxy_wal_fsync_seconds_count")
    writers, rounds, rows = 8, 30, 50
    errors = []

    def write(w):
        try:
            cl = s.client()
            for r in range(rounds):
                base = (w * rounds + r) * rows
                cl.add(name, rand(rows, d, base), labels=np.arange(base, base + rows))
        except Exception as e:  # reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    assert not errors, errors
    syncs = _metric(port, "faiss_proxy_wal_fsync_seconds_count") - before
    adds = writers * rounds
    assert 0 < syncs < adds, (syncs, adds)
    s.restart(hard=True)
    labels, vecs = exported(s.client(), name)
    order = np.argsort(labels)
    assert np.array_equal(labels[order], np.arange(adds * rows))
    want = np.concatenate([rand(rows, d, b * rows) for b in range(adds)])
    np.testing.assert_array_equal(vecs[order], want)


# ---- durability under kill -9 ---------------------------------------------------


def test_kill9_during_pipelined_ingest_keeps_every_acknowledged_row(make_server):
    """Four writers, each with eight adds in flight on its own connection, to
    one index; the server is killed with SIGKILL in the middle. After the
    restart every acknowledged add is there, whole; whatever else is there
    is a whole add that was sent (durable before its reply could go out),
    never part of one or anything not sent."""
    s = make_server(extra=["--workers", "8"])
    name = unique("kill")
    d, rows, window, writers = 24, 400, 8, 4
    s.client().create(name, d)
    acked = [[] for _ in range(writers)]
    sent = [[] for _ in range(writers)]
    stop = threading.Event()

    def vecs(b):
        return rand(rows, d, 100000 + b)

    def write(w):
        sock = dealer(s.endpoint)
        sock.setsockopt(zmq.RCVTIMEO, 200)
        inflight, b = 0, 0
        deadline = time.time() + 120
        try:
            while not stop.is_set() and time.time() < deadline:
                while inflight < window and not stop.is_set():
                    batch = w * 100000 + b
                    dealer_send(sock, add_body(name, vecs(batch), batch,
                                               np.arange(batch * rows, (batch + 1) * rows)))
                    sent[w].append(batch)
                    inflight += 1
                    b += 1
                try:
                    h, _, _ = dealer_recv(sock)
                except zmq.Again:
                    continue
                inflight -= 1
                if h.get("status") == "ok":
                    acked[w].append(h["request_id"])
        finally:
            sock.close()

    ts = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in ts:
        t.start()
    end = time.time() + WAIT
    while sum(map(len, acked)) < 60 and time.time() < end:
        time.sleep(0.01)
    s.kill9()  # with adds in flight on every connection
    stop.set()
    for t in ts:
        t.join(timeout=60)
    done = sorted(b for a in acked for b in a)
    assert len(done) >= 60, len(done)
    assert sum(map(len, sent)) > len(done)  # some were in flight at the kill

    s.start()
    labels, got = exported(s.client(), name)
    by_label = dict(zip(labels.tolist(), range(len(labels))))
    assert len(by_label) == len(labels)
    present = set()
    for lab in labels.tolist():
        present.add(lab // rows)
    for b in done:  # every acknowledged add, whole and exact
        idx = [by_label.get(b * rows + i) for i in range(rows)]
        assert None not in idx, "acknowledged add %d lost" % b
        np.testing.assert_array_equal(got[idx], vecs(b))
    everything_sent = {b for w in sent for b in w}
    for b in present - set(done):  # durable without a reply: whole, and sent
        assert b in everything_sent, b
        idx = [by_label.get(b * rows + i) for i in range(rows)]
        assert None not in idx, "add %d is there in part" % b
        np.testing.assert_array_equal(got[idx], vecs(b))


# ---- libfaissproxy: a pipelined add that fails says which rows went in ----------

FAILING_ADD = r'''
import sys
import numpy as np
import faissproxy
faissproxy.configure(server=sys.argv[1], api_key="", timeout=30)
x = np.random.default_rng(4).random((4000, 64), dtype="float32")
x[2100, 5] = np.nan   # one part is refused (validation_error)
index = faissproxy.IndexFlatL2(64)
index.keep()  # the test reads it from the server after this process ends
try:
    index.add(x)
except RuntimeError as e:
    print("error_type", e.error_type)
    print("message", str(e).replace("\n", " "))
print("ntotal", index.ntotal)
'''


def test_failed_part_of_a_pipelined_add_names_the_rows_added(make_server):
    s = make_server(extra=["--max-message-size", "65536"])
    r = subprocess.run([sys.executable, "-c", FAILING_ADD, s.endpoint], env=PY_ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    assert lines["error_type"] == "validation_error", r.stdout
    msg = lines["message"]
    m = re.search(r"the first (\d+) of 4000 vectors were added, rows (\d+)\.\.(\d+) failed", msg)
    assert m, msg
    first, lo, hi = map(int, m.groups())
    assert first == lo and lo <= 2100 <= hi, msg
    extra = 0
    m2 = re.search(r"rows ([0-9., ]+) \((\d+) vectors\), in flight when the failure came, "
                   r"were added too", msg)
    if m2:
        extra = int(m2.group(2))
    assert "the rest were not added" in msg, msg
    (info,) = s.client().list()
    assert info["ntotal"] == first + extra, (info, msg)


# ---- the CLI's import --------------------------------------------------------------


def cli(server, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAISS_PROXY_")}
    env["FAISS_PROXY_SERVER"] = server.endpoint
    r = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def same_as_faiss(client, name, xb):
    """The index answers as an in-process IndexFlatL2 holding exactly xb."""
    assert client.info(name)["ntotal"] == len(xb)
    ref = faiss.IndexFlatL2(xb.shape[1])
    ref.add(xb)
    q = xb[np.random.default_rng(5).choice(len(xb), 25, replace=False)] + 0.001
    D, I, _ = client.search(name, q, 10)
    Dr, Ir = ref.search(q, 10)
    assert np.array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5)
    labels, vecs = exported(client, name)
    assert np.array_equal(labels, np.arange(len(xb)))
    np.testing.assert_array_equal(vecs, xb)


def test_import_killed_mid_flight_resumes_to_exactly_the_file(server, client, tmp_path):
    n, d = 120000, 32
    xb = np.random.default_rng(11).standard_normal((n, d)).astype("float32")
    path = str(tmp_path / "big.npy")
    np.save(path, xb)
    name = unique("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAISS_PROXY_")}
    env["FAISS_PROXY_SERVER"] = server.endpoint
    p = subprocess.Popen([CLI, "import", path, "--index", name, "--create", "--chunk", "700",
                          "--window", "6"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    killed = False
    try:
        deadline = time.time() + WAIT
        while time.time() < deadline and p.poll() is None:
            try:
                nt = client.info(name)["ntotal"]
            except Exception:
                nt = 0
            if nt >= 8000:
                p.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)
    # chunks the server received before the kill are still being added: wait
    # until the size stays put
    before, end = -1, time.time() + WAIT
    while time.time() < end:
        now = client.info(name)["ntotal"]
        if now == before:
            break
        before = now
        time.sleep(0.5)
    if killed:
        assert before < n
    assert before % 700 == 0  # whole chunks, in order: a prefix of the file
    r = cli(server, "import", path, "--index", name, "--resume", "--chunk", "700",
            "--window", "6")
    assert "holds %d of the %d vectors" % (before, n) in r.stderr
    same_as_faiss(client, name, xb)


def test_refused_chunk_with_later_chunks_added_then_resume(server, client, tmp_path):
    """A chunk refused while later ones were in flight and added: the CLI
    stops, and --resume with the corrected file ends with exactly the file,
    each row once under its own number."""
    n, d, chunk = 6000, 8, 200
    good = np.random.default_rng(12).standard_normal((n, d)).astype("float32")
    bad = good.copy()
    bad[1234, 3] = np.inf  # chunk 6 is refused by the server
    bpath, gpath = str(tmp_path / "bad.npy"), str(tmp_path / "good.npy")
    np.save(bpath, bad)
    np.save(gpath, good)
    name = unique("gap")
    r = cli(server, "import", bpath, "--index", name, "--create", "--chunk", str(chunk),
            "--window", "8", check=False)
    assert r.returncode == 1, r.stderr
    assert "validation_error" in r.stderr and "import stopped at vector 1200" in r.stderr, r.stderr
    held = client.info(name)["ntotal"]
    assert held >= 1200
    r = cli(server, "import", gpath, "--index", name, "--resume", "--chunk", str(chunk),
            "--window", "8")
    same_as_faiss(client, name, good)
