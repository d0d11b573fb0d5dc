"""Compaction: once a quarter of an index's vectors are deleted (and at least
--compact-min-dead), the server drops the tombstoned vectors from the FAISS
structure in the background. Labels, keys, metadata and search results must
stay what they were (compared with in-process FAISS after remove_ids), also
after a restart, while searches and writes go on."""
import threading
import time

import faiss
import numpy as np
import pytest

from conftest import SANITIZED, unique
from wire import rand

WAIT = 60 if SANITIZED else 20


def _wait_tombstones(c, name, want, timeout=WAIT):
    """Polls get_index_info until its tombstones count is want; returns the info."""
    end = time.time() + timeout
    while True:
        info = c.info(name)
        if info["tombstones"] == want or time.time() > end:
            return info
        time.sleep(0.05)


def _keyed(c, name, xb):
    items = [{"id": "k%d" % i, "metadata": {"i": i}} for i in range(len(xb))]
    c.add(name, xb, items)


def _reference(kind, d, xb, gone):
    """In-process FAISS holding xb under labels 0..n-1, with gone removed."""
    if kind == "Flat":
        ref = faiss.IndexIDMap2(faiss.IndexFlatL2(d))
    else:
        ref = faiss.index_factory(d, kind)
        ref.train(xb)
    if kind.endswith("fs"):
        # FAISS 1.7.3's remove_ids on fast-scan lists ends the process: the
        # live vectors alone, added in order, are what it would leave
        live = np.array(sorted(set(range(len(xb))) - set(gone)), dtype="int64")
        ref.add_with_ids(xb[live], live)
        return ref
    ref.add_with_ids(xb, np.arange(len(xb), dtype="int64"))
    ref.remove_ids(np.array(sorted(gone), dtype="int64"))
    return ref


# IVF4,PQ4x4fs: FAISS's remove_ids on its lists would end the server's process
@pytest.mark.parametrize("kind", ["Flat", "IVF8,Flat", "HNSW16", "IVF4,PQ4x4fs"])
def test_compaction_keeps_every_answer(make_server, kind):
    srv = make_server(extra=("--compact-min-dead", "20"))
    c = srv.client()
    d, n = 16, 400
    xb = rand(n, d, 811)
    name = unique()
    c.create(name, d, kind)
    if kind.startswith("IVF"):
        c.train(name, xb)
    _keyed(c, name, xb)
    assert c.info(name)["tombstones"] == 0
    gone = [i for i in range(n) if i % 5 in (0, 3)]
    c.delete(name, ["k%d" % i for i in gone])
    info = _wait_tombstones(c, name, 0)
    assert info["tombstones"] == 0, info
    assert info["ntotal"] == n - len(gone)
    line = "compacted default/%s: %d deleted vectors gone" % (name, len(gone))
    assert line in srv.wait_log(line, WAIT)
    xq = rand(20, d, 812)
    live = sorted(set(range(n)) - set(gone))
    for _ in range(2):  # now, and from the snapshot written after the compaction
        D, I, meta = c.search(name, xq, 10, include_metadata=True)
        assert not set(I.ravel().tolist()) & set(gone)
        if kind == "HNSW16":
            # rebuilt from the live vectors: an HNSW's own answers, checked for recall
            _, Ie = faiss.knn(xq, xb[live], 10)
            exact = np.array(live)[Ie]
            hits = sum(len(set(a) & set(b)) for a, b in zip(I.tolist(), exact.tolist()))
            assert hits >= 0.9 * I.size
            for i in live[::7]:  # each live vector still finds itself
                _, Ii, _ = c.search(name, xb[i], 1)
                assert Ii[0, 0] == i
        else:
            Dr, Ir = _reference(kind, d, xb, gone).search(xq, 10)
            assert np.array_equal(I, Ir)
            np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-4)
        # keys and metadata came along with their vectors
        for row, hits in zip(I.tolist(), meta):
            for label, hit in zip(row, hits):
                assert hit == {"id": "k%d" % label, "metadata": {"i": label}}
        srv.restart()
        c = srv.client()
    assert c.info(name)["tombstones"] == 0
    # the next vector gets the next label; a deleted key can come back
    c.add(name, xb[:1], [{"id": "k0"}])
    _, I, meta = c.search(name, xb[0], 1, include_metadata=True)
    assert I[0, 0] == n and meta[0][0]["id"] == "k0"


def test_below_the_threshold_and_disabled(make_server):
    d, n = 8, 200
    xb = rand(n, d, 813)
    for extra, dead, stays in (("100", 60, True), ("0", 150, True), ("10", 60, False)):
        srv = make_server(extra=("--compact-min-dead", extra))
        c = srv.client()
        name = unique()
        c.create(name, d, "Flat")
        c.add(name, xb)
        c.delete(name, list(range(dead)))
        info = _wait_tombstones(c, name, 0, timeout=2 if stays else WAIT)
        assert info["tombstones"] == (dead if stays else 0), (extra, info)
        assert info["ntotal"] == n - dead
        _, I, _ = c.search(name, xb[dead:dead + 5], 1)
        assert I.ravel().tolist() == list(range(dead, dead + 5))


def test_type_that_cannot_be_compacted_keeps_serving(make_server):
    srv = make_server(extra=("--compact-min-dead", "5"))
    c = srv.client()
    d, n = 8, 300
    xb = rand(n, d, 814)
    name = unique()
    c.create(name, d, "HNSW8,SQ8")
    c.train(name, xb)
    c.add(name, xb)
    c.delete(name, list(range(0, n, 2)))
    c.add(name, xb[:1])  # another write: queued again, and not tried again
    assert srv.wait_log("keeps deleted vectors", WAIT).count("keeps deleted vectors") == 1
    assert c.info(name)["tombstones"] == n // 2
    _, I, _ = c.search(name, xb[1:40:2], 1)
    assert I.ravel().tolist() == list(range(1, 40, 2))


def test_searches_and_writes_during_compaction(make_server):
    """Searches running through a compaction never fail or return a deleted
    vector; writes arriving during one make it start over, and once they stop
    it lands, with every write kept."""
    srv = make_server(extra=("--compact-min-dead", "100"))
    c = srv.client()
    d, n = 32, 20000 if not SANITIZED else 5000
    xb = rand(n, d, 815)
    name = unique()
    c.create(name, d, "Flat")
    for s in range(0, n, 5000):
        c.add(name, xb[s:s + 5000])
    gone = set(range(0, n, 2))
    stop = threading.Event()
    errors = []

    def searcher():
        sc = srv.client()
        q = xb[1:200:2]
        rounds = 0
        while not stop.is_set() and rounds < 5000:
            rounds += 1
            try:
                _, I, _ = sc.search(name, q, 1)
                if I.ravel().tolist() != list(range(1, 200, 2)):
                    errors.append(I.ravel().tolist())
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))

    t = threading.Thread(target=searcher)
    t.start()
    try:
        c.delete(name, sorted(gone))  # one write: due from here on
        # writes while the compaction may be building: each one restarts it
        extra = rand(50, d, 816)
        for i in range(50):
            c.add(name, extra[i:i + 1])
        info = _wait_tombstones(c, name, 0, timeout=WAIT * 3)
    finally:
        stop.set()
        t.join(timeout=WAIT)
    assert not t.is_alive()
    assert errors == [], errors[:3]
    assert info["tombstones"] == 0 and info["ntotal"] == n - len(gone) + 50
    _, I, _ = c.search(name, extra, 1)
    assert I.ravel().tolist() == list(range(n, n + 50))
