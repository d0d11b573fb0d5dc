"""Binary indexes through the Python drop-in, compared with in-process faiss: an IVF read
from FAISS's bytes orders equal-distance hits as FAISS's search of those bytes does (float
IVFs too), IndexBinaryHNSW, IndexBinaryIVF over an empty binary HNSW quantizer, the hash
indexes with their nflip, and code_size."""

import faiss as real
import numpy as np
import pytest


def bdata(n, nbytes, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype="uint8")


def test_binary_ivf_read_from_bytes_orders_ties_as_faiss(fp):
    # 32-bit codes: many hits at equal Hamming distance, which FAISS's heaps order by id
    xt, xb, xq = bdata(300, 4, 1), bdata(1500, 4, 2), bdata(200, 4, 3)
    local = real.IndexBinaryIVF(real.IndexBinaryFlat(32), 32, 8)
    local.cp.min_points_per_centroid = 5
    local.nprobe = 4
    local.train(xt)
    local.add(xb)
    served = fp.deserialize_index_binary(real.serialize_index_binary(local))
    D, I = served.search(xq, 3)
    Dr, Ir = local.search(xq, 3)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    # and a binary IVF made here, written and read back, answers as before
    made = fp.IndexBinaryIVF(fp.IndexBinaryFlat(32), 32, 8)
    made.nprobe = 4
    made.train(xt)
    made.add(xb)
    D1, I1 = made.search(xq, 3)
    back = fp.deserialize_index_binary(fp.serialize_index_binary(made))
    D2, I2 = back.search(xq, 3)
    np.testing.assert_array_equal(D1, D2)
    np.testing.assert_array_equal(I1, I2)


def test_float_ivf_read_from_bytes_orders_ties_as_faiss(fp):
    rng = np.random.default_rng(4)
    xb = rng.integers(0, 3, (2000, 4)).astype("float32")  # many equal distances
    xq = rng.integers(0, 3, (100, 4)).astype("float32")
    local = real.index_factory(4, "IVF8,Flat")
    local.train(xb)
    local.add(xb)
    local.nprobe = 3
    served = fp.deserialize_index(real.serialize_index(local))
    D, I = served.search(xq, 5)
    Dr, Ir = local.search(xq, 5)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_binary_hnsw_and_ivf_over_it(fp):
    xt, xb, xq = bdata(300, 4, 5), bdata(1500, 4, 6), bdata(100, 4, 7)
    h = fp.IndexBinaryHNSW(32)
    assert h.code_size == 4 and h.hnsw.efSearch == 16
    h.add(xb)
    D, I = h.search(xq, 3)
    back = fp.deserialize_index_binary(fp.serialize_index_binary(h))
    D2, I2 = back.search(xq, 3)
    np.testing.assert_array_equal(I, I2)
    np.testing.assert_array_equal(D, D2)
    loc = real.deserialize_index_binary(fp.serialize_index_binary(h))
    assert isinstance(loc, real.IndexBinaryHNSW) and loc.hnsw.nb_neighbors(0) == 64

    q = fp.IndexBinaryHNSW(32, 16)
    ivf = fp.IndexBinaryIVF(q, 32, 8)
    ivf.nprobe = 4
    ivf.train(xt)
    ivf.add(xb)
    assert q.ntotal == 8 and ivf.nlist == 8
    local = real.deserialize_index_binary(fp.serialize_index_binary(ivf))
    assert isinstance(real.downcast_IndexBinary(local.quantizer), real.IndexBinaryHNSW)
    D, I = ivf.search(xq, 3)
    Dr, Ir = local.search(xq, 3)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    with pytest.raises(NotImplementedError):
        q2 = fp.IndexBinaryHNSW(32)
        q2.add(xb[:10])
        fp.IndexBinaryIVF(q2, 32, 8)


@pytest.mark.parametrize("nhash", [0, 3])
def test_hash_indexes_with_nflip_answer_as_faiss(fp, nhash):
    xb, xq = bdata(2000, 16, 8), bdata(100, 16, 9)
    if nhash:
        served, local = fp.IndexBinaryMultiHash(128, nhash, 6), \
            real.IndexBinaryMultiHash(128, nhash, 6)
        assert served.nhash == nhash
    else:
        served, local = fp.IndexBinaryHash(128, 6), real.IndexBinaryHash(128, 6)
    assert served.b == 6 and served.code_size == 16 and served.nflip == 0
    for ix in (served, local):
        ix.add(xb)
        ix.nflip = 2
    D, I = served.search(xq, 10)
    Dr, Ir = local.search(xq, 10)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    back = real.deserialize_index_binary(fp.serialize_index_binary(served))
    assert back.nflip == 2
    again = fp.deserialize_index_binary(real.serialize_index_binary(local))
    assert again.nflip == 2 and again.b == 6
    D2, I2 = again.search(xq, 10)
    np.testing.assert_array_equal(I2, Ir)
    factory = fp.index_binary_factory(128, "BHash5x6" if nhash else "BHash6")
    assert factory.b == 6
    served.nflip = 6  # every bucket: as FAISS, whatever nflip beyond b
    local.nflip = 6
    np.testing.assert_array_equal(served.search(xq, 10)[1], local.search(xq, 10)[1])
    big = fp.IndexBinaryHash(128, 40)  # C(40, 20) buckets: refused, naming it
    with pytest.raises(RuntimeError, match="nflip 20 would probe"):
        big.nflip = 20
