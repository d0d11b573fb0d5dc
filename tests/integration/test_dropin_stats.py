"""FAISS's search statistics (faiss.cvar.indexIVF_stats, ...) through the Python drop-in and
the search request's "stats" flag: a served search adds to the counters what in-process
FAISS adds for the same search of the same index (each index here is local faiss's, read
by the server from its bytes), also while another connection searches in a loop; a search
the server cannot count as FAISS leaves the counters unreadable until reset(); and
search_with_parameters / range_search_with_parameters report FAISS's ndis."""

import threading
import time

import faiss as real
import numpy as np
import pytest

import wire
from conftest import unique

IVF_FIELDS = ("nq", "nlist", "ndis", "nheap_updates")


def fdata(n, d, seed):
    return np.random.default_rng(seed).random((n, d), dtype="float32")


def bdata(n, nbytes, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype="uint8")


def counts(view, fields):
    return {f: int(getattr(view, f)) for f in fields}


def measure(view, fields, fn):
    view.reset()
    fn()
    return counts(view, fields)


def ivf_pair(fp, desc, d=16, nprobe=4):
    local = real.index_factory(d, desc)
    local.train(fdata(2000, d, 1))
    local.add(fdata(3000, d, 2))
    real.extract_index_ivf(local).nprobe = nprobe
    return local, fp.deserialize_index(real.serialize_index(local))


@pytest.mark.parametrize("desc", ["IVF16,Flat", "IVF16,PQ4np", "IVF16,SQ8", "IVF16,PQ8x4fs"])
def test_ivf_counters_are_faiss_counts(fp, desc):
    local, served = ivf_pair(fp, desc)
    xq = fdata(50, 16, 3)
    st = fp.cvar.indexIVF_stats
    fields = IVF_FIELDS if "fs" not in desc else ("nq", "nlist", "ndis")
    ref = measure(st, fields, lambda: local.search(xq, 10))
    got = measure(st, fields, lambda: served.search(xq, 10))
    assert ref["ndis"] > 0 and got == ref
    # one query, k=1 (FAISS's fast-scan IVF takes another path for it)
    ref = measure(st, fields, lambda: local.search(xq[:1], 1))
    assert measure(st, fields, lambda: served.search(xq[:1], 1)) == ref
    # the counts add to what local searches count, as in FAISS
    st.reset()
    local.search(xq, 5)
    served.search(xq, 5)
    assert st.nq == 2 * len(xq)
    assert real.cvar.indexIVF_stats.nq == 2 * len(xq)
    if "fs" not in desc:
        radius = float(np.median(local.search(xq, 20)[0][:, -1]))
        ref = measure(st, IVF_FIELDS, lambda: local.range_search(xq, radius))
        got = measure(st, IVF_FIELDS, lambda: served.range_search(xq, radius))
        assert ref["ndis"] > 0 and got == ref


def test_binary_ivf_counters(fp):
    local = real.IndexBinaryIVF(real.IndexBinaryFlat(64), 64, 16)
    local.nprobe = 3
    local.train(bdata(2000, 8, 1))
    local.add(bdata(3000, 8, 2))
    served = fp.deserialize_index_binary(real.serialize_index_binary(local))
    xq = bdata(40, 8, 3)
    st = fp.cvar.indexIVF_stats
    ref = measure(st, IVF_FIELDS, lambda: local.search(xq, 5))
    got = measure(st, IVF_FIELDS, lambda: served.search(xq, 5))
    assert ref["ndis"] > 0 and got == ref
    ref = measure(st, ("nq", "nlist", "ndis"), lambda: local.range_search(xq, 25))
    assert measure(st, ("nq", "nlist", "ndis"), lambda: served.range_search(xq, 25)) == ref


@pytest.mark.parametrize("nflip", [0, 2])
def test_binary_hash_counters(fp, nflip):
    xb, xq = bdata(2000, 16, 1), bdata(50, 16, 2)
    local = real.IndexBinaryHash(128, 10)
    local.nflip = nflip
    local.add(xb)
    served = fp.deserialize_index_binary(real.serialize_index_binary(local))
    st = fp.cvar.indexBinaryHash_stats
    fields = ("nq", "n0", "nlist", "ndis")
    ref = measure(st, fields, lambda: local.range_search(xq, 55))
    got = measure(st, fields, lambda: served.range_search(xq, 55))
    assert ref["nq"] == len(xq) and got == ref
    ref = measure(st, fields, lambda: local.search(xq, 4))
    assert measure(st, fields, lambda: served.search(xq, 4)) == ref


def test_pq_polysemous_counters(fp):
    d = 32
    local = real.IndexPQ(d, 8, 8)
    local.do_polysemous_training = True
    local.polysemous_training.n_iter = 2000
    local.polysemous_training.n_redo = 1
    local.train(fdata(3000, d, 1))
    local.add(fdata(2000, d, 2))
    local.search_type = real.IndexPQ.ST_polysemous
    local.polysemous_ht = 24
    served = fp.deserialize_index(real.serialize_index(local))
    xq = fdata(30, d, 3)
    st = fp.cvar.indexPQ_stats
    fields = ("nq", "ncode", "n_hamming_pass")
    ref = measure(st, fields, lambda: local.search(xq, 5))
    got = measure(st, fields, lambda: served.search(xq, 5))
    assert 0 < ref["n_hamming_pass"] < ref["ncode"] and got == ref


def test_hnsw_counters(fp):
    local = real.IndexHNSWFlat(16, 8)
    local.add(fdata(1500, 16, 1))
    served = fp.deserialize_index(real.serialize_index(local))
    xq = fdata(30, 16, 2)
    st = fp.cvar.hnsw_stats
    fields = ("n1", "n2", "n3", "ndis", "nreorder")
    ref = measure(st, fields, lambda: local.search(xq, 5))
    got = measure(st, fields, lambda: served.search(xq, 5))
    assert ref["n1"] == len(xq) and ref["n3"] > 0 and got == ref


def test_deleted_vectors_make_counters_unreadable_until_reset(fp):
    local, served = ivf_pair(fp, "IVF16,Flat")
    served.remove_ids(np.arange(10, dtype="int64"))  # tombstones until compaction
    st = fp.cvar.indexIVF_stats
    st.reset()
    served.search(fdata(5, 16, 3), 3)
    with pytest.raises(NotImplementedError, match="indexIVF_stats.ndis"):
        st.ndis
    st.reset()
    assert st.ndis == 0
    local.search(fdata(5, 16, 3), 3)  # local searches count again once reset
    assert st.nq == 5


def test_search_with_parameters_reports_faiss_ndis(fp):
    local, served = ivf_pair(fp, "IVF32,SQ8", d=20, nprobe=3)
    xq = fdata(60, 20, 3)
    params = real.IVFSearchParameters()
    params.nprobe = 3
    Dr, Ir, sr = real.search_with_parameters(local, xq, 7, params, output_stats=True)
    fparams = fp.IVFSearchParameters()
    fparams.nprobe = 3
    served.nprobe = 1  # the params' nprobe applies, not the index's
    st = fp.cvar.indexIVF_stats
    st.reset()
    D, I, s = fp.search_with_parameters(served, xq, 7, fparams, output_stats=True)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    assert s["ndis"] == sr["ndis"] > 0
    assert set(s) == set(sr)
    assert st.nq == 0  # FAISS's IVFlib search leaves indexIVF_stats alone
    radius = float(np.median(Dr[:, -1]))
    Lr, Dr, Ir, sr = real.range_search_with_parameters(local, xq, radius, params,
                                                       output_stats=True)
    L, D, I, s = fp.range_search_with_parameters(served, xq, radius, fparams,
                                                 output_stats=True)
    np.testing.assert_array_equal(L, Lr)
    np.testing.assert_array_equal(I, Ir)
    assert s["ndis"] == sr["ndis"] > 0


def test_counts_exact_while_another_connection_searches(fp, server):
    local, served = ivf_pair(fp, "IVF16,Flat")
    other_local, other = ivf_pair(fp, "IVF16,PQ4np")
    # a third index, searched only over the other connection
    name = unique("stats")
    c = wire.Client(server.endpoint)
    c.create(name, 16, "IVF8,Flat")
    c.train(name, fdata(500, 16, 5))
    c.add(name, fdata(1000, 16, 6))
    stop = threading.Event()
    done = [0]
    errors = []

    def hammer():
        cl = wire.Client(server.endpoint)
        try:
            q = fdata(8, 16, 7)
            t_end = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < t_end and done[0] < 20000:
                for ix in (served._name, other._name, name):
                    cl.search(ix, q, 5)
                done[0] += 1
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            cl.close()

    t = threading.Thread(target=hammer)
    t.start()
    try:
        xq = fdata(30, 16, 3)
        st = fp.cvar.indexIVF_stats
        ref = measure(st, IVF_FIELDS, lambda: local.search(xq, 10))
        ref2 = measure(st, IVF_FIELDS, lambda: other_local.search(xq, 10))
        deadline = time.monotonic() + 30
        rounds = 0
        while rounds < 20 and time.monotonic() < deadline:
            assert measure(st, IVF_FIELDS, lambda: served.search(xq, 10)) == ref
            assert measure(st, IVF_FIELDS, lambda: other.search(xq, 10)) == ref2
            rounds += 1
    finally:
        stop.set()
        t.join(90)
        c.close()
    assert not errors, errors
    assert done[0] > 0 and rounds > 0


def test_stats_flag_on_the_wire(server):
    c = wire.Client(server.endpoint)
    try:
        name = unique("stats")
        c.create(name, 8, "IVF4,Flat")
        c.train(name, fdata(400, 8, 1))
        c.add(name, fdata(500, 8, 2))
        q = fdata(3, 8, 3)
        h = {"operation": "search", "index_id": name, "k": 4, "vector_shape": [3, 8],
             "params": {"nprobe": 2}}
        rh, d, _ = c.ok(dict(h, stats=True), q.tobytes())
        s = rh["stats"]
        assert s["exact"] is True
        assert s["indexIVF_stats"]["nq"] == 3 and s["indexIVF_stats"]["ndis"] > 0
        assert s["indexIVF_stats"]["nlist"] <= 6
        assert s["hnsw_stats"]["ndis"] == 0 and s["indexPQ_stats"]["nq"] == 0
        assert len(d) == 3 * 4 * 12
        rh, _, _ = c.ok(h, q.tobytes())
        assert "stats" not in rh
        rh, _, _ = c.ok({"operation": "range_search", "index_id": name, "radius": 0.5,
                         "vector_shape": [3, 8], "stats": True}, q.tobytes())
        assert rh["stats"]["indexIVF_stats"]["nq"] == 3
        # a filter: not FAISS's search, said so
        rh, _, _ = c.ok(dict(h, stats=True), q.tobytes(), {"colour": "red"})
        assert rh["stats"]["exact"] is False
        e = c.error(dict(h, stats="yes"), q.tobytes())
        assert e["error_type"] == "validation_error" and "stats" in e["message"]
        c.ping()
    finally:
        c.close()


def _ivf_on_wire(c, name, n, d, seed):
    c.create(name, d, "IVF32,Flat")
    c.train(name, fdata(2000, d, seed))
    c.add(name, fdata(n, d, seed + 1))


def test_stats_are_never_counted_with_a_zero_wait(make_server):
    """--search-stats-wait-ms 0: a search asking for statistics is answered as any
    search, with its stats marked not exact (the drop-in then raises on reading)."""
    s = make_server(extra=["--search-stats-wait-ms", "0"])
    c = wire.Client(s.endpoint)
    try:
        name = unique("nostats")
        _ivf_on_wire(c, name, 3000, 8, 20)
        q = fdata(5, 8, 22)
        h = {"operation": "search", "index_id": name, "k": 4, "vector_shape": [5, 8],
             "params": {"nprobe": 4}}
        rh, d, _ = c.ok(dict(h, stats=True), q.tobytes())
        assert rh["stats"]["exact"] is False
        _, d2, _ = c.ok(h, q.tobytes())
        assert d == d2
    finally:
        c.close()


def test_a_counted_search_behind_a_long_search_is_answered_uncounted(make_server):
    """A search asking for statistics while another connection's long search runs (on
    another index) does not wait for it past --search-stats-wait-ms: it is answered,
    uncounted, while the long search still runs, and the long search is not held up."""
    s = make_server(extra=["--search-stats-wait-ms", "1"])
    c, long_c = wire.Client(s.endpoint), wire.Client(s.endpoint)
    try:
        big, small = unique("big"), unique("small")
        _ivf_on_wire(c, big, 20000, 32, 30)
        _ivf_on_wire(c, small, 2000, 32, 40)
        nq = 12000  # seconds of work here: it runs well past the counted search
        xq = fdata(nq, 32, 50)
        done = {}

        def long_search():
            long_c.ok({"operation": "search", "index_id": big, "k": 10,
                       "vector_shape": [nq, 32], "params": {"nprobe": 32}}, xq.tobytes())
            done["at"] = time.monotonic()

        t = threading.Thread(target=long_search)
        t.start()
        time.sleep(0.8)  # the long search is at FAISS
        q = fdata(2, 32, 51)
        rh, _, _ = c.ok({"operation": "search", "index_id": small, "k": 3,
                         "vector_shape": [2, 32], "stats": True}, q.tobytes())
        answered = time.monotonic()
        t.join(120)
        assert not t.is_alive() and "at" in done
        # answered while the long search ran, not after it: it did not wait
        assert answered < done["at"]
        assert rh["stats"]["exact"] is False
        # alone, it is counted
        rh, _, _ = c.ok({"operation": "search", "index_id": small, "k": 3,
                         "vector_shape": [2, 32], "stats": True}, q.tobytes())
        assert rh["stats"]["exact"] is True and rh["stats"]["indexIVF_stats"]["nq"] == 2
    finally:
        c.close()
        long_c.close()
