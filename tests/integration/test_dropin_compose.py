"""IndexPreTransform built from objects through the Python drop-in (local faiss's
transforms over a served index, the composition held by the server), the classes of the
objects index_factory gives, and FAISS's search statistics (faiss.cvar), which a served
search fills as FAISS's does. Each answer is compared with in-process faiss building the same index
from the same calls."""

import faiss as real
import numpy as np
import pytest


def data(nt=4000, nb=2000, nq=40, d=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((nt, d), dtype="float32"), rng.random((nb, d), dtype="float32"),
            rng.random((nq, d), dtype="float32"))


def same_search(a, b, xq, k=5):
    Da, Ia = a.search(xq, k)
    Db, Ib = b.search(xq, k)
    np.testing.assert_array_equal(Ia, Ib)
    np.testing.assert_array_equal(Da, Db)


def test_opq_over_ivfpq_trains_and_searches_as_faiss(fp):
    xt, xb, xq = data(seed=1)

    def build(m):
        sub = m.IndexIVFPQ(m.IndexFlatL2(32), 32, 20, 4, 8)
        sub.nprobe = 5  # given before the composition: kept in it
        opq = m.OPQMatrix(32, 4)
        opq.niter = 5  # a setting FAISS's bytes of an untrained OPQ do not carry
        index = m.IndexPreTransform(opq, sub)
        assert not index.is_trained
        index.train(xt)
        index.add(xb)
        return index, opq

    ref, ref_opq = build(real)
    got, opq = build(fp)
    assert got.__class__ is fp.IndexPreTransform
    assert (got.d, got.ntotal, got.is_trained) == (ref.d, ref.ntotal, True)
    same_search(ref, got, xq)
    # the program's transform object is the trained one, as FAISS's is
    assert opq.is_trained
    np.testing.assert_array_equal(real.vector_to_array(opq.A), real.vector_to_array(ref_opq.A))
    # the IVF below answers its search knobs through the composition
    fp.extract_index_ivf(got).nprobe = 9
    real.extract_index_ivf(ref).nprobe = 9
    same_search(ref, got, xq)


def test_pca_over_untrained_ivf_trains_with_the_constructors_settings(fp):
    # an IVF made by its constructor clusters with 10 k-means iterations; FAISS's reader
    # would give 25: the composition must train as the constructor's index does
    xt, xb, xq = data(seed=2)

    def build(m):
        index = m.IndexPreTransform(m.PCAMatrix(32, 16), m.IndexIVFFlat(m.IndexFlatL2(16), 16,
                                                                        30))
        index.train(xt)
        index.add(xb)
        return index

    ref, got = build(real), build(fp)
    real.extract_index_ivf(ref).nprobe = 4
    fp.extract_index_ivf(got).nprobe = 4
    same_search(ref, got, xq)
    lims, D, I = got.range_search(xq[:5], 0.5)
    rl, rD, rI = ref.range_search(xq[:5], 0.5)
    np.testing.assert_array_equal(lims, rl)
    np.testing.assert_array_equal(I, rI)


def test_centering_and_prepend_transform(fp):
    xt, xb, xq = data(seed=3, d=16)

    def centered(m):
        index = m.IndexPreTransform(m.CenteringTransform(16), m.IndexFlat(16))
        index.train(xb)
        index.add(xb)
        return index

    same_search(centered(real), centered(fp), xq)

    def prepended(m):
        sub = m.IndexFlatL2(16)
        index = m.IndexPreTransform(sub)
        index.prepend_transform(m.NormalizationTransform(16))
        index.add(xb)
        index.add(xb[:10])
        return index

    ref, got = prepended(real), prepended(fp)
    assert got.ntotal == ref.ntotal == len(xb) + 10
    same_search(ref, got, xq)
    np.testing.assert_array_equal(got.reconstruct(3), ref.reconstruct(3))


def test_pretransform_what_is_not_served_raises(fp):
    xt, xb, xq = data(seed=4, d=16)
    with pytest.raises(NotImplementedError, match="IDMap"):
        fp.IndexPreTransform(fp.NormalizationTransform(16), fp.IndexIDMap(fp.IndexFlatL2(16)))
    index = fp.IndexPreTransform(fp.IndexFlatL2(16))
    index.add(xb)
    with pytest.raises(NotImplementedError, match="prepend_transform"):
        index.prepend_transform(fp.NormalizationTransform(16))
    # a transform of the wrong output dimension: FAISS's check
    with pytest.raises(RuntimeError):
        fp.IndexPreTransform(fp.PCAMatrix(16, 8), fp.IndexFlatL2(16))
    made = fp.index_factory(16, "PCA8,Flat")
    assert made.__class__ is fp.IndexPreTransform
    with pytest.raises(NotImplementedError, match="index_factory"):
        made.index


def test_factory_objects_are_of_faiss_classes(fp):
    xt, xb, xq = data(seed=5, d=16)
    for desc, cls in (("IVF16,Flat", fp.IndexIVFFlat), ("IDMap,Flat", fp.IndexIDMap),
                      ("IDMap2,Flat", fp.IndexIDMap2), ("Flat,IDMap2", fp.IndexIDMap2),
                      ("HNSW16", fp.IndexHNSWFlat), ("PQ4", fp.IndexPQ),
                      ("IVF8,PQ4", fp.IndexIVFPQ), ("OPQ4,IVF8,PQ4", fp.IndexPreTransform)):
        index = fp.index_factory(16, desc)
        assert index.__class__ is cls, desc
        assert isinstance(index, cls)
        ref = real.index_factory(16, desc)
        assert type(real.downcast_index(ref)).__name__ == cls.__name__, desc
    assert fp.index_binary_factory(64, "BIVF8").__class__ is fp.IndexBinaryIVF
    # and behave as FAISS's: an IVF from the factory takes polysemous_ht like a constructed one
    # ("np": no polysemous training, FAISS's simulated annealing, 20 s of each train here)
    ix, ref = fp.index_factory(16, "IVF8,PQ4x8np"), real.index_factory(16, "IVF8,PQ4x8np")
    for index in (ix, ref):
        index.train(xt)
        index.add(xb)
        index.nprobe = 4
        index.polysemous_ht = 12
    same_search(ref, ix, xq)
    ix2, ref2 = fp.index_factory(16, "IDMap,Flat"), real.index_factory(16, "IDMap,Flat")
    for index in (ix2, ref2):
        index.add_with_ids(xb, np.arange(len(xb), dtype="int64") * 7)
    same_search(ref2, ix2, xq)


def test_search_statistics_count_served_searches(fp):
    xt, xb, xq = data(seed=6, d=16)
    ref = real.index_factory(16, "IVF16,Flat")
    ref.train(xt)
    ref.add(xb)
    got = fp.deserialize_index(real.serialize_index(ref))
    st = fp.cvar.indexIVF_stats  # local faiss's object; served searches now add to it
    st.reset()
    ref.search(xq, 5)
    want = real.cvar.indexIVF_stats.ndis
    st.reset()
    got.search(xq, 5)
    assert real.cvar.indexIVF_stats.ndis == st.ndis == want > 0  # FAISS's count
    for name in ("IVFFastScan_stats", "FastScan_stats"):  # timers, not sent back
        with pytest.raises(NotImplementedError, match=name):
            getattr(fp.cvar, name)
    # FAISS's other globals are local faiss's, read and written there
    old = real.cvar.distance_compute_blas_threshold
    try:
        fp.cvar.distance_compute_blas_threshold = old + 3
        assert real.cvar.distance_compute_blas_threshold == old + 3
        assert fp.cvar.distance_compute_blas_threshold == old + 3
    finally:
        real.cvar.distance_compute_blas_threshold = old


def test_search_and_reconstruct_as_faiss(fp):
    xt, xb, xq = data(seed=7)

    def ivfpq(m):
        index = m.IndexIVFPQ(m.IndexFlatL2(32), 32, 16, 8, 8)
        index.nprobe = 1
        return index

    def pca_ivf(m):
        return m.IndexPreTransform(m.PCAMatrix(32, 16), m.IndexIVFFlat(m.IndexFlatL2(16), 16, 16))

    for make in (lambda m: m.IndexFlatL2(32), ivfpq, pca_ivf):
        ref, got = make(real), make(fp)
        for index in (ref, got):
            index.train(xt)
            index.add(xb[:300])
        # k past what one probed list holds: FAISS's missing hits, with NaN vectors
        k = 60
        Dr, Ir, Rr = ref.search_and_reconstruct(xq, k)
        D, I, R = got.search_and_reconstruct(xq, k)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(R.view("uint32"), Rr.view("uint32"))
    assert (Ir == -1).any()


@pytest.mark.parametrize("desc", ["IVF16,Flat", "PCA16,IVF16,PQ8x4"])
def test_searches_after_remove_ids_as_faiss(fp, desc):
    # FAISS's IVF answers short where the probed lists hold fewer than k vectors after
    # remove_ids: so does the drop-in (the server's own searches would complete them),
    # FAISS's search statistics asked for or not
    xt, xb, xq = data(seed=9)
    ref, got = real.index_factory(32, desc), fp.index_factory(32, desc)
    gone = np.arange(0, 300, 3, dtype="int64")
    for index in (ref, got):
        index.train(xt)
        index.add(xb[:300])
        assert index.remove_ids(gone) == len(gone)
    Dr, Ir = ref.search(xq, 40)
    assert (Ir == -1).any() and not np.isin(Ir, gone).any()
    for counted in (False, True):
        if counted:  # (a program that reads them: the drop-in's searches ask for counts)
            fp.cvar.indexIVF_stats.reset()
        D, I = got.search(xq, 40)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_array_equal(D, Dr)
    Dr, Ir, Rr = ref.search_and_reconstruct(xq, 40)
    D, I, R = got.search_and_reconstruct(xq, 40)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(R.view("uint32"), Rr.view("uint32"))


def test_ivfpq_fastscan_over_the_quantizer_of_another_ivf(fp):
    xt, xb, xq = data(seed=8)

    def build(m):
        first = m.index_factory(32, "IVF16,PQ16x4np")
        first.train(xt)
        index = m.IndexIVFPQFastScan(first.quantizer, 32, 16, 16, 4, m.METRIC_L2, 32)
        index.by_residual = True
        index.train(xt)
        index.add(xb)
        index.nprobe = 4
        return index, first  # FAISS's index shares first's quantizer: first must live

    (ref, ref_first), (got, got_first) = build(real), build(fp)
    same_search(ref, got, xq)


def test_use_precomputed_table(fp):
    # served (test_dropin_params has the values): here, on an index composed over a quantizer
    xt, xb, xq = data(seed=9, d=16)
    out = []
    for m in (real, fp):
        index = m.IndexIVFPQ(m.IndexFlatL2(16), 16, 8, 8, 4)
        assert index.use_precomputed_table == 0
        index.use_precomputed_table = -1
        index.train(xt)
        assert index.use_precomputed_table == -1  # kept by training, as FAISS's is
        index.use_precomputed_table = 1
        if m is real:
            index.precompute_table()  # FAISS's search reads the table whatever it holds
        index.add(xb)
        out.append(index)
    same_search(out[0], out[1], xq, 10)


def test_ivf_spectral_hash_as_faiss(fp):
    xt, xb, xq = data(seed=10)
    for tt in range(4):  # Thresh_global, _centroid, _centroid_half, _median
        out = []
        for m in (real, fp):
            index = m.IndexIVFSpectralHash(m.IndexFlatL2(32), 32, 8, 32, 1.0)
            index.nprobe = 3
            index.threshold_type = tt
            index.train(xt)
            index.add(xb)
            out.append(index)
        assert out[1].__class__ is fp.IndexIVFSpectralHash
        same_search(out[0], out[1], xq, 10)
        with pytest.raises(NotImplementedError, match="trained"):
            out[1].threshold_type = (tt + 1) % 4
    # an untrained transform given to replace_vt trains in the program's object, as in FAISS
    x = data(nt=2000, seed=11, d=10)[0]
    out = []
    for m in (real, fp):
        index = m.IndexIVFSpectralHash(m.IndexFlat(10), 10, 20, 10, 1)
        vt = m.ITQTransform(10, 10)
        index.replace_vt(vt)
        assert index.vt is vt or m is real
        index.train(x)
        index.add(x)
        assert index.vt.is_trained and index.quantizer.ntotal == 20
        out.append(index)
    same_search(out[0], out[1], x[:20], 4)
    assert fp.index_factory(64, "IVF16,ITQ32,SH1.2").__class__ is fp.IndexIVFSpectralHash


def test_clustering_over_a_served_flat_index(fp):
    rng = np.random.default_rng(12)
    x = rng.random((600, 8), dtype="float32")
    weights = rng.random(600, dtype="float32")
    for make in (lambda m: m.IndexFlatL2(8), lambda m: m.IndexFlatIP(8)):
        out = []
        for m in (real, fp):
            clus = m.Clustering(8, 6)
            clus.niter = 8
            clus.nredo = 2
            index = make(m)
            clus.train(x, index, weights=weights)
            out.append((real.vector_to_array(clus.centroids), clus, index))
        np.testing.assert_array_equal(out[0][0], out[1][0])
        assert out[1][2].ntotal == out[0][2].ntotal == 6  # the centroids, as FAISS leaves them
        same_search(out[0][2], out[1][2], x[:20], 2)
        assert isinstance(out[1][1], fp.Clustering) and isinstance(out[1][1], real.Clustering)
    with pytest.raises(NotImplementedError, match="flat"):
        fp.Clustering(8, 6).train(x, fp.index_factory(8, "HNSW8"))


@pytest.mark.parametrize("by_residual", [True, False])
def test_ivf_over_a_quantizer_of_the_other_metric_as_faiss(fp, by_residual):
    """FAISS's TestPQFlavors: an L2 IndexIVFPQ over an empty inner-product quantizer, whose
    metric_type the program then writes (FAISS's k-means keeps the constructor's settings:
    not spherical), with polysemous training; and an IVF over a quantizer of the other
    metric that holds its centroids. The same answers as FAISS's."""
    xt, xb, xq = data(nt=2000, nb=1000, nq=50, d=32, seed=12)

    def build(m, mt):
        index = m.IndexIVFPQ(m.IndexFlat(32, mt), 32, 16, 4, 8)
        index.metric_type = mt
        index.by_residual = by_residual
        if by_residual:
            index.do_polysemous_training = True
            pt = m.PolysemousTraining()
            pt.n_iter, pt.n_redo = 5000, 1
            index.polysemous_training = pt
        index.train(xt)
        index.add(xb)
        index.nprobe = 4
        return index

    for mt in (real.METRIC_INNER_PRODUCT, real.METRIC_L2):
        served, ref = build(fp, mt), build(real, mt)
        assert served.metric_type == mt
        same_search(served, ref, xq, 10)
        with pytest.raises(NotImplementedError, match="untrained empty"):
            served.metric_type = real.METRIC_L2 + real.METRIC_INNER_PRODUCT - mt
        served.metric_type = mt  # the value it holds: taken, as FAISS takes it
    # an IVF whose quantizer, of the other metric, was trained by another IVF (FAISS's
    # test_id_remap_ivf): its training keeps those centroids
    outs = []
    for m in (real, fp):
        cq = m.IndexFlatIP(32)
        first = m.IndexIVFFlat(cq, 32, 16)
        first.nprobe = 4
        first.train(xt)
        first.add(xb)
        second = m.IndexIVFFlat(cq, 32, 16)
        second.nprobe = 4
        second.train(xt)
        second.add_with_ids(xb, np.arange(len(xb))[::-1].copy().astype("int64"))
        outs.append((first.search(xq, 10), second.search(xq, 10)))
    for (Dr, Ir), (D, I) in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
    assert np.array_equal(outs[1][1][1], len(xb) - 1 - outs[1][0][1])
