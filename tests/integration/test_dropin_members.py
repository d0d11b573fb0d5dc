"""Members of FAISS's index classes read and called through the Python drop-in:
add_with_ids where FAISS refuses it, code_size, do_polysemous_training. Each answer is
compared with in-process faiss on the same index."""

import faiss as real
import numpy as np
import pytest


def data(n=1000, d=16, seed=0):
    return np.random.default_rng(seed).random((n, d), dtype="float32")


def test_add_with_ids_raises_where_faiss_refuses_it(fp):
    x = data(50)
    ids = np.arange(50, dtype="int64") + 100
    for make in (lambda m: m.IndexFlatL2(16), lambda m: m.IndexPQ(16, 4, 4),
                 lambda m: m.index_factory(16, "HNSW8"), lambda m: m.index_factory(16, "SQ8"),
                 lambda m: m.IndexRefineFlat(m.IndexFlatL2(16))):
        ref, got = make(real), make(fp)
        for index in (ref, got):
            if not index.is_trained:
                index.train(data(500, seed=1))
        with pytest.raises(RuntimeError, match="add_with_ids not implemented"):
            ref.add_with_ids(x, ids)
        with pytest.raises(RuntimeError, match="add_with_ids not implemented"):
            got.add_with_ids(x, ids)
        assert got.ntotal == ref.ntotal == 0
    # the classes that take ids still do
    for make in (lambda m: m.IndexIDMap(m.IndexFlatL2(16)),
                 lambda m: m.index_factory(16, "IVF4,Flat"),
                 lambda m: m.index_factory(16, "PCA8,IVF4,Flat")):
        ref, got = make(real), make(fp)
        for index in (ref, got):
            index.train(data(500, seed=2))
            index.add_with_ids(x, ids)
        D, I = got.search(x[:5], 3)
        Dr, Ir = ref.search(x[:5], 3)
        np.testing.assert_array_equal(I, Ir)
    bref, bgot = real.IndexBinaryFlat(64), fp.IndexBinaryFlat(64)
    bx = np.zeros((3, 8), dtype="uint8")
    for index in (bref, bgot):
        with pytest.raises(RuntimeError, match="add_with_ids not implemented"):
            index.add_with_ids(bx, np.arange(3, dtype="int64"))


def test_code_size(fp):
    xt = data(2000, seed=3)
    for desc in ("Flat", "SQ8", "SQ6", "PQ4x8", "IVF300,Flat", "IVF10,SQ4", "IVF10,PQ4x8",
                 "LSH"):
        ref, got = real.index_factory(16, desc), fp.index_factory(16, desc)
        assert got.code_size == real.downcast_index(ref).code_size, desc
    got = fp.IndexIVFPQ(fp.IndexFlatL2(16), 16, 300, 8, 8)
    assert got.code_size == real.IndexIVFPQ(real.IndexFlatL2(16), 16, 300, 8, 8).code_size
    for desc in ("BFlat", "BIVF8", "BHNSW8"):
        got = fp.index_binary_factory(64, desc)
        assert got.code_size == real.index_binary_factory(64, desc).code_size == 8
    with pytest.raises(NotImplementedError, match="code_size"):
        fp.index_factory(16, "HNSW8").code_size
    del xt


def test_do_polysemous_training(fp):
    for desc in ("PQ4", "PQ4np", "IVF10,PQ4", "IVF10,PQ4np", "IVF10,PQ4x6"):
        ref, got = real.index_factory(12, desc), fp.index_factory(12, desc)
        assert got.do_polysemous_training == real.downcast_index(ref).do_polysemous_training
    assert fp.IndexPQ(12, 4, 8).do_polysemous_training is \
        real.IndexPQ(12, 4, 8).do_polysemous_training
    assert fp.IndexIVFPQ(fp.IndexFlatL2(12), 12, 10, 4, 8).do_polysemous_training is False
    pq = fp.IndexPQ(12, 4, 8)
    pq.do_polysemous_training = True  # taken: its train then runs FAISS's polysemous training
    assert pq.do_polysemous_training is True


def test_reconstruct_batch(fp):
    x = data(100, 32, seed=4)
    ref, got = real.IndexFlatL2(32), fp.IndexFlatL2(32)
    for index in (ref, got):
        index.add(x)
    subset = [4, 7, 45, 7]
    np.testing.assert_array_equal(got.reconstruct_batch(subset), ref.reconstruct_batch(subset))
    ref, got = real.index_factory(32, "IVF2,Flat"), fp.index_factory(32, "IVF2,Flat")
    for index in (ref, got):
        index.train(x)
        index.add(x)
        with pytest.raises(RuntimeError):  # no direct map
            index.reconstruct_batch(np.zeros(50, dtype=int))
    got.make_direct_map()
    ref.make_direct_map()
    np.testing.assert_array_equal(got.reconstruct_batch(subset), ref.reconstruct_batch(subset))


def test_nprobe_zero_is_taken_and_searches_raise(fp):
    xt = data(1000, 16, seed=5)
    ref = real.IndexIVFFlat(real.IndexFlatL2(16), 16, 8)
    got = fp.IndexIVFFlat(fp.IndexFlatL2(16), 16, 8)
    for index in (ref, got):
        index.train(xt)
        index.add(xt)
        index.nprobe = 0  # FAISS takes it ...
        assert index.nprobe == 0
        with pytest.raises(RuntimeError):  # ... and its search refuses it
            index.search(xt[:3], 4)
        with pytest.raises(RuntimeError):
            index.range_search(xt[:3], 0.5)
        index.nprobe = 3
    D, I = got.search(xt[:20], 4)
    Dr, Ir = ref.search(xt[:20], 4)
    np.testing.assert_array_equal(I, Ir)
    with pytest.raises(OverflowError):
        got.nprobe = -1


def test_reconstruct_through_an_idmap_as_faiss(fp):
    x = data(50, 8, seed=6)
    ids = np.arange(50, dtype="int64") * 3 + 1
    for desc in ("IDMap,Flat", "IDMap2,Flat"):
        ref, got = real.index_factory(8, desc), fp.index_factory(8, desc)
        for index in (ref, got):
            index.add_with_ids(x, ids)
        if desc.startswith("IDMap2"):
            np.testing.assert_array_equal(got.reconstruct(4), ref.reconstruct(4))
            D, I, R = got.search_and_reconstruct(x[:5], 3)
            Dr, Ir, Rr = ref.search_and_reconstruct(x[:5], 3)
            np.testing.assert_array_equal(R, Rr)
            continue
        # FAISS's IndexIDMap cannot reconstruct: neither can the served one (FAISS's
        # reconstruct_n and search_and_reconstruct call the same reconstruct; run in
        # parallel, its exception ends the process, so they are not called on ref here)
        for index in (ref, got):
            with pytest.raises(RuntimeError, match="not implemented"):
                index.reconstruct(4)
        with pytest.raises(RuntimeError, match="not implemented"):
            got.reconstruct_n(1, 2)
        with pytest.raises(RuntimeError, match="not implemented"):
            got.search_and_reconstruct(x[:5], 3)


def test_reset_of_an_index_that_never_held_a_vector(fp):
    # an index with no storage yet: the server's reset once passed a null bitmap to
    # memset (a crash under the sanitizers); it must answer, and keep serving
    x = data(20, 8, seed=7)
    ref, got = real.IndexFlatL2(8), fp.IndexFlatL2(8)
    for index in (ref, got):
        index.reset()
        assert index.ntotal == 0
        index.add(x)
        index.reset()
        index.add(x[:5])
    D, I = got.search(x[:3], 2)
    Dr, Ir = ref.search(x[:3], 2)
    np.testing.assert_array_equal(I, Ir)
