"""The Python drop-in's fast-scan and additive-quantizer indexes give FAISS's answer or raise:
IndexPQFastScan and IndexIVFPQFastScan made from an IndexPQ / IndexIVFPQ are FAISS's own
(byte for byte), their search members (implem, qbs, norm_scale) reach the server, which
validates, logs and replays them, and by_residual of IVF additive-quantizer and fast-scan
indexes reaches the server (before training, or after it as FAISS takes it). Each program runs against in-process faiss and
against the real server, on the same data and the same trained bytes."""
import faiss as real
import numpy as np
import pytest

from dropin import faissproxy


def _use(server):
    faissproxy.configure(server=server.endpoint, api_key="")


def data(n, d, nq, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype="float32"), rng.random((nq, d), dtype="float32")


def trained(description, d, metric=real.METRIC_L2, seed=0, n=3000, by_residual=None):
    """An index trained and filled in-process, and its FAISS bytes."""
    xb, xq = data(n, d, 60, seed)
    ix = real.index_factory(d, description, metric)
    if by_residual is not None:
        ix.by_residual = by_residual
    ix.train(xb)
    ix.add(xb)
    return ix, xq


def same_results(D, I, Dr, Ir):
    """FAISS's answer: the same distances (to float rounding: the server's BLAS runs on one
    thread, which sums in another order) and the same ids, but for the order among ties."""
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-6)
    for q in np.nonzero((I != Ir).any(axis=1))[0]:
        for j in np.nonzero(I[q] != Ir[q])[0]:
            if j == len(I[q]) - 1:
                continue  # a tie with a hit past k, not returned
            tie = np.isclose(Dr[q], Dr[q, j], rtol=1e-5, atol=1e-6)
            assert tie.sum() > 1, (q, j)
            if not tie[-1]:  # a tie cut by k may keep other ids
                assert set(I[q][tie]) == set(Ir[q][tie]), (q, j)


def same_bytes(served, local):
    a = faissproxy.serialize_index(served).tobytes()
    b = real.serialize_index(local).tobytes()
    assert a == b


@pytest.mark.parametrize("d,bbs,metric", [(32, 32, real.METRIC_L2), (32, 64, real.METRIC_L2),
                                          (30, 32, real.METRIC_INNER_PRODUCT)])
def test_pq_fast_scan_from_an_index_pq_is_faiss_s(fp, d, bbs, metric):
    local, xq = trained("PQ%dx4np" % (d // 2), d, metric)
    served = fp.deserialize_index(real.serialize_index(local))
    fs_local = real.IndexPQFastScan(local, bbs)
    fs = fp.IndexPQFastScan(served, bbs)
    assert type(fs).__name__ == "IndexPQFastScan" and fs.bbs == bbs and fs.ntotal == local.ntotal
    same_bytes(fs, fs_local)  # the packed codes are FAISS's, to the byte
    # implem 2-4 read the codes unpacked (FAISS: from the IndexPQ); the server unpacks its own
    for implem, qbs in ((2, 0), (4, 0), (12, 0x33), (13, 0x223), (14, 0), (15, 0), (0, 0)):
        if implem in (12, 13) and bbs != 32:
            continue  # FAISS's implementations 12 and 13 need bbs 32
        if implem in (14, 15, 0) and bbs != 32:
            qbs = 2  # FAISS's default of 4 queries a block has no kernel for bbs 64
        fs.implem, fs_local.implem = implem, implem
        fs.qbs, fs_local.qbs = qbs, qbs
        same_results(*fs.search(xq, 10), *fs_local.search(xq, 10))
        assert fs.implem == implem and fs.qbs == qbs
    # the IndexPQ stays an index of its own
    np.testing.assert_array_equal(served.search(xq, 5)[1], local.search(xq, 5)[1])


def test_pq_fast_scan_constructor_and_bytes(fp):
    xb, xq = data(2000, 16, 30, 3)
    fs = fp.IndexPQFastScan(16, 8, 4, fp.METRIC_INNER_PRODUCT, 64)
    assert fs.bbs == 64 and fs.implem == 0 and not fs.is_trained
    fs.train(xb)
    fs.add(xb)
    fs.implem = 14
    # FAISS has no kernel for its default block of 4 queries with bbs 64, and throws from
    # inside its OpenMP region (in-process, the program ends): the server answers an error
    with pytest.raises(RuntimeError, match="not instantiated"):
        fs.search(xq, 5)
    fs.qbs = 2
    local = real.deserialize_index(fp.serialize_index(fs))
    assert type(local).__name__ == "IndexPQFastScan"
    assert (local.bbs, local.implem, local.metric_type) == (64, 14, real.METRIC_INNER_PRODUCT)
    D, I = fs.search(xq, 5)
    Dr, Ir = local.search(xq, 5)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    back = fp.deserialize_index(fp.serialize_index(fs))
    assert (back.implem, back.bbs, back.qbs) == (14, 64, 2)  # from the bytes, as FAISS reads
    with pytest.raises(RuntimeError, match="nbits == 4"):
        fp.IndexPQFastScan(16, 8, 8)
    with pytest.raises(NotImplementedError, match="bbs"):
        fs.bbs = 32  # fixed at construction


@pytest.mark.parametrize("by_residual,metric,d", [(True, real.METRIC_L2, 32),
                                                  (False, real.METRIC_L2, 30),
                                                  (True, real.METRIC_INNER_PRODUCT, 32)])
def test_ivfpq_fast_scan_from_an_ivfpq_is_faiss_s(fp, by_residual, metric, d):
    local, xq = trained("IVF16,PQ%dx4np" % (d // 2), d, metric, 4, by_residual=by_residual)
    local.nprobe = 4
    served = fp.deserialize_index(real.serialize_index(local))
    fs_local = real.IndexIVFPQFastScan(local)
    fs = fp.IndexIVFPQFastScan(served)
    assert fs.nprobe == 4 and fs.by_residual == by_residual and fs.nlist == 16
    same_bytes(fs, fs_local)
    # implem 1 and 2 read the lists unpacked (FAISS: the IndexIVFPQ's); the server its own
    for implem in (1, 2, 10, 11, 12, 13, 14, 15, 0):
        fs.implem, fs_local.implem = implem, implem
        same_results(*fs.search(xq, 10), *fs_local.search(xq, 10))
    fs.nprobe, fs_local.nprobe = 16, 16
    same_results(*fs.search(xq, 3), *fs_local.search(xq, 3))
    fs.by_residual = by_residual  # its own value: a no-op in FAISS, served
    # after training, as FAISS takes it: the packed codes stay, the search follows the member
    fs.by_residual, fs_local.by_residual = not by_residual, not by_residual
    same_results(*fs.search(xq, 3), *fs_local.search(xq, 3))


def test_ivfpq_fast_scan_over_given_centroids_is_faiss_s(fp):
    rng = np.random.default_rng(5)
    cent = rng.random((8, 16), dtype="float32")
    q_local = real.IndexFlatL2(16)
    q_local.add(cent)
    fs_local = real.IndexIVFPQFastScan(q_local, 16, 8, 8, 4, real.METRIC_L2, 64)
    q = fp.IndexFlatL2(16)
    q.add(cent)
    fs = fp.IndexIVFPQFastScan(q, 16, 8, 8, 4, fp.METRIC_L2, 64)
    assert fs.by_residual is False and fs.bbs == 64 and not fs.is_trained
    same_bytes(fs, fs_local)
    empty = fp.IndexIVFPQFastScan(fp.IndexFlatL2(16), 16, 8, 8, 4)
    empty.by_residual = True  # before training: reaches the server
    xb, _ = data(2000, 16, 1, 6)
    empty.train(xb)
    assert real.deserialize_index(fp.serialize_index(empty)).by_residual


def test_fast_scan_settings_are_validated_logged_and_replayed(make_server):
    s = make_server()
    _use(s)
    try:
        local, xq = trained("PQ16x4np", 32, seed=7)
        fs = faissproxy.IndexPQFastScan(faissproxy.deserialize_index(real.serialize_index(local)))
        fs.keep()
        name = fs.server_name
        for bad in (0x5, 0x103, -1, 0x444444444):
            with pytest.raises(RuntimeError, match="qbs"):
                fs.qbs = bad
        with pytest.raises(RuntimeError, match="implem"):
            fs.implem = 16
        fs.implem = 1  # FAISS has no implementation 1 here: its search says so
        with pytest.raises(RuntimeError, match="not implemented"):
            fs.search(xq, 3)
        with pytest.raises(RuntimeError, match="fast-scan"):
            faissproxy.index_factory(8, "Flat")._set_param("implem", 2)
        fs.implem = 2
        fs.qbs = 0x33
        D, I = fs.search(xq, 5)
        s.stop()
        s.start()
        _use(s)
        info = faissproxy._remote._lib.IndexInfo()
        h = faissproxy._lib.client()
        faissproxy._lib.check(faissproxy._lib.lib.fpx_client_get_index_info(
            h, name.encode(), faissproxy._remote.ctypes.byref(info)), h)
        back = faissproxy._remote._described(info, False)
        local_back = real.deserialize_index(faissproxy.serialize_index(back))
        assert (local_back.implem, local_back.qbs) == (2, 0x33)  # replayed from the log
        D2, I2 = back.search(xq, 5)  # implem 2 answers after the restart: codes unpacked
        np.testing.assert_array_equal(I, I2)
        np.testing.assert_array_equal(D, D2)
    finally:
        faissproxy._lib.Config.server = None
        faissproxy.configure()


@pytest.mark.parametrize("description", ["IVF8,RQ3x4_Nqint8", "IVF8,LSQ2x4_Nqint8",
                                         "IVF8,RQ3x4fs_32_Nrq2x4"])
def test_ivf_additive_by_residual_before_training_reaches_the_server(fp, description):
    xb, xq = data(1500, 8, 30, 8)
    ix = fp.index_factory(8, description)
    default = "fs" not in description
    assert ix.by_residual is default
    ix.by_residual = not default
    assert ix.by_residual is (not default)
    ix.train(xb)
    ix.add(xb)
    ix.nprobe = 8
    if "fs" in description:
        ix.implem = 12
    local = real.deserialize_index(fp.serialize_index(ix))
    assert local.by_residual is (not default)
    D, I = ix.search(xq, 3)
    Dr, Ir = local.search(xq, 3)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5)
    ix.by_residual = local.by_residual = default  # after training, as FAISS takes it
    D, I = ix.search(xq, 3)
    Dr, Ir = local.search(xq, 3)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5)


def test_additive_fast_scan_norm_scale_and_internals(fp):
    xb, xq = data(1500, 8, 30, 9)
    ix = fp.index_factory(8, "RQ3x4fs_Nrq2x4")
    assert type(ix).__name__ == "IndexResidualQuantizerFastScan" and ix.bbs == 32
    ix.train(xb)
    ix.add(xb)
    with pytest.raises(NotImplementedError, match="norm_scale"):
        ix.norm_scale  # training estimated it on the server
    ix.norm_scale = 3
    ix.implem = 14
    local = real.deserialize_index(fp.serialize_index(ix))
    assert (local.norm_scale, local.implem) == (3, 14)
    np.testing.assert_array_equal(ix.search(xq, 3)[1], local.search(xq, 3)[1])
    with pytest.raises(NotImplementedError, match="rq"):
        ix.rq
    with pytest.raises(NotImplementedError, match="rq"):
        fp.index_factory(8, "RQ2x4").rq
    with pytest.raises(RuntimeError, match="norm_scale"):
        fp.IndexPQFastScan(8, 4, 4)._set_param("norm_scale", 2)
    with pytest.raises(RuntimeError, match="Search type must be"):  # FAISS's check
        fp.IndexAdditiveQuantizerFastScan(fp.index_factory(8, "RQ2x4"))


def test_ivf_residual_quantizer_constructor(fp):
    xb, xq = data(1500, 8, 30, 10)
    ix = fp.IndexIVFResidualQuantizer(fp.IndexFlatL2(8), 8, 8, 2, 4)
    assert type(ix).__name__ == "IndexIVFResidualQuantizer" and ix.by_residual is True
    ix.by_residual = False
    ix.train(xb)
    ix.add(xb)
    ix.nprobe = 8
    local = real.deserialize_index(fp.serialize_index(ix))
    assert type(local).__name__ == "IndexIVFResidualQuantizer"
    assert (local.nlist, local.rq.M, local.by_residual) == (8, 2, False)
    np.testing.assert_array_equal(ix.search(xq, 3)[1], local.search(xq, 3)[1])
    with pytest.raises(NotImplementedError, match="rq"):
        ix.rq
    q = fp.IndexFlatL2(8)
    q.add(xb[:8])
    with pytest.raises(NotImplementedError, match="empty flat quantizer"):
        fp.IndexIVFResidualQuantizer(q, 8, 8, 2, 4)


def test_ivf_fastscan_read_from_bytes_orders_ties_as_faiss(fp):
    """FAISS breaks ties of (quantized) distance by position in the lists: an
    IVF read from bytes keeps its entries in the order of their ids there."""
    rng = np.random.default_rng(3)
    xt, xb = rng.random((2000, 32), dtype="float32"), rng.random((5000, 32), dtype="float32")
    xq = rng.random((50, 32), dtype="float32")
    out = []
    for m in (real, fp):
        index = m.index_factory(32, "IVF32,PQ16x4fs")
        index.train(xt)
        index.add(xb)
        index.nprobe = 4
        back = m.deserialize_index(m.serialize_index(index))
        out.append(back.search(xq, 10))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
