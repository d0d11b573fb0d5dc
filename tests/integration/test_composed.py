"""IndexIVFScalarQuantizer(quantizer, d, nlist, qtype[, metric, by_residual]) through the
Python drop-in, and IVF constructors given the quantizer of another IVF (FAISS's indexes
would share it): each index is compared with in-process faiss building the same one."""

import faiss as real
import numpy as np
import pytest





def data(n, d, seed):
    return np.random.default_rng(seed).random((n, d), dtype="float32")


def same(served, ref, xq, k=10):
    D, I = served.search(xq, k)
    Dr, Ir = ref.search(xq, k)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)


@pytest.mark.parametrize("mt", [1, 0])
def test_ivfsq_every_qtype_over_one_shared_quantizer(fp, mt):
    xt, xq = data(2000, 20, 1), data(30, 20, 2)
    q, rq = fp.IndexFlat(20, mt), real.IndexFlat(20, mt)
    for qtype in range(7):  # the first trains the quantizer, the others share it
        ix = fp.IndexIVFScalarQuantizer(q, 20, 16, qtype, mt)
        ref = real.IndexIVFScalarQuantizer(rq, 20, 16, qtype, mt)
        assert not ix.is_trained
        ix.train(xt)
        ref.train(xt)
        ix.add(xt[:800])
        ref.add(xt[:800])
        ix.nprobe = ref.nprobe = 4
        same(ix, ref, xq)
        assert q.ntotal == 16 and ix.is_trained


def test_ivfsq_without_residual_and_other_ivfs_over_a_shared_quantizer(fp):
    xt, xq = data(2000, 16, 3), data(25, 16, 4)
    q, rq = fp.IndexFlatL2(16), real.IndexFlatL2(16)
    first, rfirst = fp.IndexIVFFlat(q, 16, 8), real.IndexIVFFlat(rq, 16, 8)
    first.train(xt)
    rfirst.train(xt)
    sq = fp.IndexIVFScalarQuantizer(q, 16, 8, fp.ScalarQuantizer.QT_8bit_direct,
                                    fp.METRIC_L2, False)
    rsq = real.IndexIVFScalarQuantizer(rq, 16, 8, real.ScalarQuantizer.QT_8bit_direct,
                                       real.METRIC_L2, False)
    assert sq.by_residual is False
    pq = fp.IndexIVFPQ(q, 16, 8, 4, 8)
    rpq = real.IndexIVFPQ(rq, 16, 8, 4, 8)
    flat2 = fp.IndexIVFFlat(q, 16, 8)  # trained at once: its quantizer holds the centroids
    rflat2 = real.IndexIVFFlat(rq, 16, 8)
    assert flat2.is_trained and rflat2.is_trained
    for ix, ref in ((sq, rsq), (pq, rpq), (flat2, rflat2)):
        ix.train(xt)
        ref.train(xt)
        ix.add(xt[:500])
        ref.add(xt[:500])
        ix.nprobe = ref.nprobe = 3
        same(ix, ref, xq)
    # an untrained IVF's quantizer has no centroids yet: FAISS would train it through
    # either index, which the server cannot share
    fresh = fp.IndexIVFFlat(fp.IndexFlatL2(16), 16, 8)
    with pytest.raises(NotImplementedError):
        fp.IndexIVFScalarQuantizer(fresh.quantizer, 16, 8, 0)
    with pytest.raises(NotImplementedError):  # another number of lists
        fp.IndexIVFFlat(q, 16, 4)
