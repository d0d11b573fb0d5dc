"""More of FAISS's Python API through the drop-in, each answer compared with in-process
faiss on the same trained index (the server's export read by faiss): fast-scan indexes
made from a served additive-quantizer index, IndexPQ's polysemous training and per-search
parameters, and the constructors and methods that are not served, which must raise naming
what is not served rather than answer differently."""
import faiss as real
import numpy as np
import pytest


def data(n, d, nq, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype="float32"), rng.random((nq, d), dtype="float32")


def served_and_local(fp, description, d, metric, xb, by_residual=None):
    """A served index trained and filled, and in-process faiss's copy of its bytes."""
    ix = fp.index_factory(d, description, metric)
    if by_residual is not None:
        ix.by_residual = by_residual
    ix.train(xb)
    ix.add(xb)
    return ix, real.deserialize_index(fp.serialize_index(ix))


@pytest.mark.parametrize("description,metric", [
    ("RQ6x4_Nrq2x4", real.METRIC_L2), ("RQ6x4", real.METRIC_INNER_PRODUCT),
    ("LSQ4x4_Nlsq2x4", real.METRIC_L2)])
def test_additive_fast_scan_from_a_served_index_is_faiss(fp, description, metric):
    xb, xq = data(2000, 16, 40, 3)
    ix, loc = served_and_local(fp, description, 16, metric, xb)
    fs = fp.IndexAdditiveQuantizerFastScan(ix)
    ref = real.IndexAdditiveQuantizerFastScan(loc)
    assert (fs.ntotal, fs.bbs, fs.implem, fs.qbs) == (ref.ntotal, 32, 0, 0)
    assert fs.norm_scale == ref.norm_scale and fs.metric_type == metric
    assert fp.IndexAdditiveQuantizerFastScan(ix, 64).bbs == 64
    np.testing.assert_array_equal(fs.reconstruct_n(0, 50), ref.reconstruct_n(0, 50))
    for implem in (0, 2, 3, 4, 12):
        fs.implem = ref.implem = implem
        D, I = fs.search(xq, 5)
        Dr, Ir = ref.search(xq, 5)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_array_equal(D, Dr)
    assert ix.ntotal == 2000  # the index given stays an index of its own
    assert ix.search(xq, 1)[1].shape == (40, 1)


@pytest.mark.parametrize("description,metric,by_residual", [
    ("IVF16,RQ4x4", real.METRIC_INNER_PRODUCT, True),
    ("IVF16,RQ4x4_Nrq2x4", real.METRIC_L2, False)])
def test_ivf_additive_fast_scan_from_a_served_index_is_faiss(fp, description, metric,
                                                             by_residual):
    xb, xq = data(2000, 16, 40, 4)
    ix, loc = served_and_local(fp, description, 16, metric, xb, by_residual)
    ix.nprobe = 4
    loc.nprobe = 4
    fs = fp.IndexIVFAdditiveQuantizerFastScan(ix)
    ref = real.IndexIVFAdditiveQuantizerFastScan(loc)
    assert (fs.ntotal, fs.nprobe, fs.by_residual, fs.nlist) == \
        (ref.ntotal, ref.nprobe, ref.by_residual, ref.nlist)
    for implem in (0, 1, 2, 10):
        fs.implem = ref.implem = implem
        D, I = fs.search(xq, 5)
        Dr, Ir = ref.search(xq, 5)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_array_equal(D, Dr)


def test_additive_fast_scan_refuses_what_faiss_refuses_or_is_not_served(fp):
    xb, _ = data(1000, 16, 1, 5)
    ix, _ = served_and_local(fp, "IVF16,RQ4x4_Nrq2x4", 16, real.METRIC_L2, xb, True)
    with pytest.raises(RuntimeError, match="by_residual"):  # FAISS's check
        fp.IndexIVFAdditiveQuantizerFastScan(ix)
    with pytest.raises(NotImplementedError, match="additive-quantizer"):
        fp.IndexAdditiveQuantizerFastScan(fp.IndexFlatL2(16))
    with pytest.raises(NotImplementedError, match="served"):
        fp.IndexAdditiveQuantizerFastScan(None, real.METRIC_L2)


def test_polysemous_training_settings_reach_the_training(fp):
    """do_polysemous_training and polysemous_training.n_iter/n_redo of an IndexPQ made by its
    constructor: the trained codebook and permutation are FAISS's for these settings."""
    xt, xq = data(3000, 16, 40, 6)
    xb, _ = data(1000, 16, 1, 7)
    out = []
    for mod in (real, fp):
        index = mod.IndexPQ(16, 8, 8)
        assert index.do_polysemous_training is False
        index.do_polysemous_training = True
        index.polysemous_training.n_iter = 20000
        index.polysemous_training.n_redo = 1
        index.search_type = mod.IndexPQ.ST_polysemous
        index.train(xt)
        index.add(xb)
        index.polysemous_ht = 30
        stats = mod.cvar.indexPQ_stats
        stats.reset()
        D, I = index.search(xq, 5)
        out.append((D, I, stats.n_hamming_pass, stats.ncode, index.search_type,
                    index.do_polysemous_training, index.ntotal))
        if mod is fp:
            served = bytes(fp.serialize_index(index))
        else:
            local = bytes(real.serialize_index(index))
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_array_equal(out[0][0], out[1][0])
    assert out[0][2:] == out[1][2:]
    assert served == local  # FAISS's bytes: the same training


@pytest.mark.parametrize("composed", [False, True])
def test_ivfpq_polysemous_training_settings_reach_the_training(fp, composed):
    """The same for an IndexIVFPQ (FAISS's TestPQFlavors): its own coarse quantizer trained
    with it, or one trained before (composed over it), and the settings FAISS's bytes leave
    out set before training (max_codes, use_precomputed_table) kept."""
    xt, xq = data(3000, 16, 40, 8)
    xb, _ = data(1500, 16, 1, 9)
    out = []
    for mod in (real, fp):
        quantizer = mod.IndexFlatL2(16)
        if composed:
            quantizer.add(xt[:12])
        index = mod.IndexIVFPQ(quantizer, 16, 12, 4, 8)
        index.max_codes = 900
        index.use_precomputed_table = -1
        index.do_polysemous_training = True
        pt = real.PolysemousTraining()  # local faiss's own object, as FAISS's test makes it
        pt.n_iter = 20000
        pt.n_redo = 1
        index.polysemous_training = pt
        index.train(xt)
        index.add(xb)
        index.nprobe = 4
        index.polysemous_ht = 20
        D, I = index.search(xq, 5)
        out.append((D, I, index.use_precomputed_table, index.max_codes, index.ntotal))
        data_ = bytes((fp if mod is fp else real).serialize_index(index))
        out[-1] += (data_,)
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_array_equal(out[0][0], out[1][0])
    assert out[0][2:5] == out[1][2:5] == (-1, 900, 1500)
    assert out[0][5] == out[1][5]  # FAISS's bytes: the same training


@pytest.mark.parametrize("name,make", [
    ("IndexHNSW2Level", lambda fp, q: fp.IndexHNSW2Level(q, 16, 4, 8)),
    ("Index2Layer", lambda fp, q: fp.Index2Layer(q, 16, 4)),
    ("IndexRowwiseMinMax", lambda fp, q: fp.IndexRowwiseMinMax(q)),
    ("IndexRowwiseMinMaxFP16", lambda fp, q: fp.IndexRowwiseMinMaxFP16(q))])
def test_unserved_classes_over_served_indexes_raise_naming_them(fp, name, make):
    with pytest.raises(NotImplementedError, match=name + " over a served index"):
        make(fp, fp.IndexFlatL2(16))
    # over local faiss's indexes they are local faiss's own classes, unchanged
    local = make(fp, real.IndexFlatL2(16))
    assert isinstance(local, getattr(real, name))


@pytest.mark.parametrize("description", ["MinMax,SQ8", "MinMaxFP16,SQ8"])
def test_rowwise_minmax_train_inplace_is_faiss(fp, description):
    """train_inplace trains as train does and leaves x as FAISS's leaves it (scaled to
    [0, 1] and back through each row's stored minimum and scale, so not bit-equal)."""
    d = 24
    rng = np.random.default_rng(8)
    xt = (rng.random((600, d), dtype="float32") - 0.5) * rng.random((600, 1), dtype="float32")
    xb = rng.random((100, d), dtype="float32")
    got, ref = fp.index_factory(d, description), real.index_factory(d, description)
    got_x, ref_x = xt.copy(), xt.copy()
    got.train_inplace(got_x)
    ref.train_inplace(ref_x)
    assert got.is_trained
    assert (ref_x != xt).sum() > 0  # FAISS's changes x ...
    np.testing.assert_array_equal(got_x, ref_x)  # ... and so does the drop-in's
    np.testing.assert_array_equal(got.sa_encode(xb), ref.sa_encode(xb))
    trained = real.index_factory(d, description)
    trained.train(xt)
    np.testing.assert_array_equal(got.sa_encode(xb), trained.sa_encode(xb))
    # an array that is not float32 is copied, as FAISS's is, and left alone
    x64 = xt.astype("float64")
    got.train_inplace(x64)
    np.testing.assert_array_equal(x64, xt.astype("float64"))
