"""Random index descriptions through create, train, add and search.

Each description joins a transform, a coarse quantizer, a core and a refinement from FAISS's
factory grammar, with numbers drawn near the edges FAISS's factory and the server's bounds take
(1, 2, powers of two and one past them, 2^20, 2^31, ...), at a random small dimension; binary
ones too. Every request must be answered, with "ok" or an error that names its reason and is
the client's or FAISS's (not the server's own failure); the server must keep serving and keep
its memory in bounds; a search that succeeds must return labels the index holds. These are the
requests that found the server ending or being killed on "ZnLattice1x-2_4", "RR65536,Flat" and
"HNSW1048576".

The CI run (short) is bounded by FPX_DESC_COUNT descriptions and FPX_DESC_SECONDS seconds;
people run it longer by raising both. FPX_DESC_SEED replays a run: the failure message names
the seed and the description."""
import os
import random
import time

import numpy as np
import zmq

from conftest import unique
from wire import Client

SANITIZED = bool(os.environ.get("FPX_SANITIZED"))
COUNT = int(os.environ.get("FPX_DESC_COUNT", "40" if SANITIZED else "150"))
SECONDS = float(os.environ.get("FPX_DESC_SECONDS", "90"))
SEED = int(os.environ.get("FPX_DESC_SEED", str(random.randrange(1 << 30))))
REPLY_MS = 30000
# the server's resident memory after any description: the data here is a few hundred small
# vectors, so past this an index's sizes came from its description unchecked
MAX_RSS = (12 if SANITIZED else 6) << 30
SMALL = [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64, 100, 256]
EDGE = [0, 65, 127, 128, 255, 257, 1023, 1024, 1025, 4096, 4097, 65536, 65537,
        1 << 20, (1 << 20) + 1, (1 << 31) - 1, 1 << 31, 1 << 32]
ERRORS = {"validation_error", "faiss_error", "limit_exceeded", "not_trained", "unsupported"}


def num(rng):
    return rng.choice(SMALL) if rng.random() < 0.8 else rng.choice(EDGE)


def bits(rng):
    return rng.choice([1, 2, 4, 5, 6, 8, 8, 8, 10, 12, 16, 17, 0, 32])


def few(rng):
    """Codebooks of additive quantizers: their training solves a system of (M * 2^bits)^2
    entries per iteration in FAISS, hours from M = 32 on; one worker would hold the run."""
    return rng.choice([1, 2, 3, 4])


def few_bits(rng):
    return rng.choice([1, 2, 4, 6])


def float_description(rng):
    n = lambda: num(rng)  # noqa: E731
    prefix = rng.choice(["", "", "", "PCA%d," % n(), "PCAR%d," % n(), "PCAW%d," % n(),
                         "RR%d," % n(), "OPQ%d," % n(), "OPQ%d_%d," % (n(), n()),
                         "ITQ%d," % n(), "Pad%d," % n(), "L2norm,"])
    coarse = rng.choice(["", "", "IVF%d," % n(), "IVF%d_HNSW%d," % (n(), n()),
                         "IMI2x%d," % bits(rng), "IVF%d(PQ%d)," % (n(), n())])
    core = rng.choice(["Flat", "PQ%d" % n(), "PQ%dx%d" % (n(), bits(rng)), "PQ%dx4fs" % n(),
                       "PQ%dnp" % n(), "SQ8", "SQ4", "SQ6", "SQfp16", "HNSW%d" % n(),
                       "HNSW%d_SQ8" % n(), "HNSW%d_PQ%d" % (n(), n()), "NSG%d" % n(),
                       "LSH", "LSHrt", "RQ%dx%d" % (few(rng), few_bits(rng)),
                       "LSQ%dx%d" % (few(rng), few_bits(rng)),
                       "PRQ%dx%dx%d" % (few(rng), few(rng), few_bits(rng)),
                       "ZnLattice%dx%d_%d" % (n(), n(), n()),
                       "Residual%dx%d,PQ%d" % (n(), bits(rng), n())])
    refine = rng.choice(["", "", "", ",RFlat", ",Refine(SQfp16)", ",Refine(PQ%d)" % n()])
    return prefix + coarse + core + refine


def binary_description(rng):
    n = lambda: num(rng)  # noqa: E731
    return rng.choice(["BFlat", "BIVF%d" % n(), "BHNSW%d" % n(), "BHash%d" % n(),
                       "BHash%dx%d" % (n(), n()), "BIVF%d_HNSW%d" % (n(), n())])


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Run:
    def __init__(self, server):
        self.server = server
        self.c = Client(server.endpoint, timeout_ms=REPLY_MS)
        self.slow = []

    def call(self, what, header, data=b""):
        """The reply's header and data; None when it took longer than REPLY_MS (a FAISS
        training may: it holds one worker, and the server must go on serving)."""
        try:
            h, d, _ = self.c.call(header, data)
        except zmq.Again:
            self.slow.append(what)
            return None, b""
        if h["status"] != "ok":
            assert h.get("message"), (what, h)
            # FAISS asked for more memory than there is: refused, the server goes on
            oom = h.get("error_type") == "internal_error" and "out of memory" in h["message"]
            assert h.get("error_type") in ERRORS or oom, (what, h)
        return h, d

    def serving(self, what):
        assert self.server.alive(), (what, self.server.log()[-3000:])
        ping = Client(self.server.endpoint, timeout_ms=REPLY_MS)
        try:
            assert ping.ping()["protocol"] == 1, what
        finally:
            ping.close()
        rss = rss_bytes(self.server.proc.pid)
        assert rss < MAX_RSS, (what, rss)


def exercise(run, rng, desc, binary):
    d = rng.choice([8, 16, 32, 64]) if binary else rng.choice([1, 2, 3, 4, 8, 12, 16, 32])
    what = "seed %d: %r at dimension %d" % (SEED, desc, d)
    name = unique("fz")
    h, _ = run.call(what, {"operation": "create_index", "index_id": name, "dimension": d,
                           "index_type": desc})
    if h is None or h["status"] != "ok":
        return what, False
    n = rng.choice([1, 20, 300])
    if binary:
        x = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (n, d // 8),
                                                                   dtype="uint8")
        kind = {"dtype": "uint8"}
    else:
        x = np.random.default_rng(rng.randrange(1 << 30)).random((n, d), dtype="float32")
        kind = {}
    shape = list(x.shape)
    served = True
    for op in ("train", "add_vectors"):
        h, _ = run.call(what + " " + op, dict({"operation": op, "index_id": name,
                                               "vector_shape": shape}, **kind), x.tobytes())
        served = served and h is not None and h["status"] == "ok"
    if served:
        k = rng.choice([1, 5, 1000])
        h, data = run.call(what + " search", dict({"operation": "search", "index_id": name,
                                                   "k": k, "vector_shape": [3, shape[1]]},
                                                  **kind), x[:3].tobytes())
        if h is not None and h["status"] == "ok":
            assert h["shape"] == [3, k] and len(data) == 3 * k * 12, (what, h)
            labels = np.frombuffer(data[3 * k * 4:], dtype="<i8")
            assert ((labels == -1) | ((labels >= 0) & (labels < n))).all(), (what, labels)
    run.call(what + " delete", {"operation": "delete_index", "index_id": name})
    return what, True


def test_random_descriptions_are_served_or_refused(fresh_server):
    rng = random.Random(SEED)
    run = Run(fresh_server)
    deadline = time.monotonic() + SECONDS
    made = done = 0
    while done < COUNT and time.monotonic() < deadline:
        binary = rng.random() < 0.15
        desc = binary_description(rng) if binary else float_description(rng)
        what, created = exercise(run, rng, desc, binary)
        run.serving(what)
        made += created
        done += 1
    print("seed %d: %d descriptions, %d created; slower than %d ms: %s"
          % (SEED, done, made, REPLY_MS, run.slow))
    run.c.close()
