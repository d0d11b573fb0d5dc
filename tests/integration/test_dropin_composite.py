"""FAISS's composite classes over served indexes through the Python drop-in, compared with
in-process faiss built the same way: IndexShards and IndexReplicas (float and binary) give
FAISS's merged results (ties, -1 labels and FAISS's neutral distances included), FAISS's
cached ntotal and is_trained, and FAISS's errors."""

import faiss as real
import numpy as np
import pytest


def tie_data(n, d, seed):
    # small integer coordinates: many equal distances, so the merge order of ties shows
    return np.random.default_rng(seed).integers(0, 3, (n, d)).astype("float32")


def both(fp, build):
    """build(module) with local faiss and with the drop-in."""
    return build(real), build(fp)


@pytest.mark.parametrize("metric", ["L2", "IP"])
def test_shards_merge_as_faiss(fp, metric):
    d = 8
    xb, xq = tie_data(50, d, 1), tie_data(30, d, 2)
    m = real.METRIC_L2 if metric == "L2" else real.METRIC_INNER_PRODUCT

    def build(f):
        shards = f.IndexShards(d)
        subs = []
        for i0, i1 in ((0, 3), (3, 30), (30, 50)):  # the first shard holds fewer than k
            sub = f.IndexFlat(d, m)
            sub.add(xb[i0:i1])
            shards.add_shard(sub)
            subs.append(sub)
        return shards, subs

    (ref, _), (got, subs) = both(fp, build)
    assert got.ntotal == ref.ntotal == 50 and got.count() == 3
    assert got.at(1) is subs[1] and got.metric_type == ref.metric_type
    for k in (1, 5, 60):  # 60: past every shard: -1 labels and FAISS's neutral distances
        Dr, Ir = ref.search(xq, k)
        D, I = got.search(xq, k)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_array_equal(D, Dr)
    assert (I == -1).any()


def test_shards_without_successive_ids_spread_the_add_as_faiss(fp):
    d = 8
    xb, xq = tie_data(101, d, 3), tie_data(20, d, 4)

    def build(f):
        shards = f.IndexShards(d, True, False)
        for _ in range(3):
            shards.add_shard(f.IndexIDMap(f.IndexFlatL2(d)))
        shards.add(xb[:60])
        shards.add(xb[60:])  # ids continue from ntotal
        return shards

    ref, got = both(fp, build)
    assert got.ntotal == ref.ntotal == 101 and not got.successive_ids
    assert [got.at(i).ntotal for i in range(3)] == [ref.at(i).ntotal for i in range(3)]
    Dr, Ir = ref.search(xq, 7)
    D, I = got.search(xq, 7)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    ids = np.arange(1000, 1010)
    got.add_with_ids(xq[:10], ids)
    ref.add_with_ids(xq[:10], ids)
    np.testing.assert_array_equal(got.search(xq, 3)[1], ref.search(xq, 3)[1])


def test_shards_flags_and_errors_as_faiss(fp):
    d, nlist = 16, 4
    xb = np.random.default_rng(5).random((400, d), dtype="float32")

    def build(f):
        shards = f.IndexShards(d, True)
        a, b = f.IndexIVFFlat(f.IndexFlatL2(d), d, nlist), f.IndexIVFFlat(f.IndexFlatL2(d), d,
                                                                          nlist)
        shards.add_shard(a)
        shards.add_shard(b)
        return shards, a, b

    (ref, ra, rb), (got, ga, gb) = both(fp, build)
    assert got.is_trained == ref.is_trained is False
    got.train(xb)
    ref.train(xb)
    assert got.is_trained == ref.is_trained is True
    got.add(xb)
    ref.add(xb)
    assert got.ntotal == ref.ntotal == 400 and ga.ntotal == ra.ntotal == 200
    with pytest.raises(RuntimeError, match="only add\\(\\) in a single pass"):
        got.add(xb)  # successive_ids: one add only, as in FAISS
    with pytest.raises(RuntimeError, match="no sense to pass in ids"):
        got.add_with_ids(xb[:2], np.arange(2))
    with pytest.raises(RuntimeError, match="range search not implemented"):
        got.range_search(xb[:2], 1.0)
    with pytest.raises(RuntimeError, match="don't know how to serialize"):
        fp.serialize_index(got)
    got.remove_shard(gb)
    ref.remove_shard(rb)
    assert got.ntotal == ref.ntotal == 200
    got.remove_shard(ga)
    ref.remove_shard(ra)
    assert got.ntotal == ref.ntotal == 0 and got.is_trained == ref.is_trained is False
    with pytest.raises(TypeError):
        got.add_shard(real.IndexFlatL2(d))  # a local faiss index is not served


def test_replicas_split_queries_as_faiss(fp):
    d = 8
    xb, xq = tie_data(40, d, 6), tie_data(23, d, 7)  # 23 queries over 4 replicas
    kept = []

    def build(f):
        reps = f.IndexReplicas(d)
        kept.extend(f.IndexFlatL2(d) for _ in range(4))  # FAISS's object keeps no reference
        for sub in kept[-4:]:
            reps.add_replica(sub)
        reps.add(xb)
        return reps

    ref, got = both(fp, build)
    assert got.ntotal == ref.ntotal == 40 and got.at(3).ntotal == 40
    Dr, Ir = ref.search(xq, 50)
    D, I = got.search(xq, 50)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(got.reconstruct(5), ref.reconstruct(5))
    late = fp.IndexFlatL2(d)
    with pytest.raises(RuntimeError, match="not have same number of vectors"):
        got.add_replica(late)
    got.remove_replica(late)
    got.remove_replica(got.at(0))
    assert got.ntotal == 40 and got.count() == 3
    with pytest.raises(RuntimeError, match="no replicas in index"):
        fp.IndexReplicas(d).search(xq, 1)


def test_binary_shards_and_replicas_as_faiss(fp):
    rng = np.random.default_rng(8)
    xb = rng.integers(0, 256, (200, 4), dtype="uint8")
    xq = rng.integers(0, 256, (50, 4), dtype="uint8")
    kept = []

    def shards(f):
        s = f.IndexBinaryShards(32)
        for i in range(5):
            sub = f.IndexBinaryFlat(32)
            sub.add(xb[i * 30:(i + 1) * 30])
            s.add_shard(sub)
        return s

    def replicas(f):
        r = f.IndexBinaryReplicas()
        kept.extend(f.IndexBinaryFlat(32) for _ in range(3))
        for sub in kept[-3:]:
            r.addIndex(sub)
        r.add(xb)
        return r

    for build in (shards, replicas):
        ref, got = both(fp, build)
        assert got.ntotal == ref.ntotal and got.d == ref.d == 32
        assert got.code_size == ref.code_size
        for k in (10, 250):
            Dr, Ir = ref.search(xq, k)
            D, I = got.search(xq, k)
            assert D.dtype == Dr.dtype
            np.testing.assert_array_equal(I, Ir)
            np.testing.assert_array_equal(D, Dr)
    with pytest.raises(TypeError):
        fp.IndexBinaryShards(32).add_shard(fp.IndexFlatL2(32))


def binary_to_float(x):
    n, d = x.shape
    bits = (x.reshape(n * d, 1) >> np.arange(8)) & 1
    return (2.0 * bits - 1).astype("float32").reshape(n, d * 8)


def test_binary_from_float_as_faiss(fp):
    rng = np.random.default_rng(9)
    xb = rng.integers(0, 256, (1500, 32), dtype="uint8")
    xq = rng.integers(0, 256, (100, 32), dtype="uint8")
    local = real.IndexBinaryFromFloat(real.IndexFlatL2(256))
    local.add(xb)
    flat = fp.IndexFlatL2(256)
    served = fp.IndexBinaryFromFloat(flat)
    assert served.d == 256 and served.code_size == 32 and served.is_trained
    served.add(xb)
    assert served.ntotal == flat.ntotal == 1500 and served.index is flat
    Dr, Ir = local.search(xq, 10)
    D, I = served.search(xq, 10)
    assert D.dtype == Dr.dtype
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)
    # FAISS's bytes, both ways
    assert bytes(fp.serialize_index_binary(served)) == bytes(real.serialize_index_binary(local))
    back = fp.deserialize_index_binary(real.serialize_index_binary(local))
    assert type(back) is fp.IndexBinaryFromFloat
    np.testing.assert_array_equal(back.search(xq, 10)[1], Ir)
    with pytest.raises(NotImplementedError):
        back.index  # noqa: B018 - the float index of one read from bytes is not served
    with pytest.raises(RuntimeError):
        flat.search(binary_to_float(xq), 1)  # it lives in the wrapper: served through it


def test_binary_from_float_hnsw_round_trip(fp, tmp_path):
    rng = np.random.default_rng(10)
    xb = rng.integers(0, 256, (500, 4), dtype="uint8")
    xq = rng.integers(0, 256, (50, 4), dtype="uint8")
    index = fp.IndexBinaryFromFloat(fp.IndexHNSWFlat(32, 16))
    index.add(xb)
    D, I = index.search(xq, 3)
    fp.write_index_binary(index, str(tmp_path / "x"))
    local = real.read_index_binary(str(tmp_path / "x"))  # FAISS reads what was written
    Dl, Il = local.search(xq, 3)
    np.testing.assert_array_equal(D, Dl)
    np.testing.assert_array_equal(I, Il)
    with pytest.raises(NotImplementedError):
        fp.IndexBinaryFromFloat(real.IndexFlatL2(32))  # a local faiss index is not served


def test_binary_ivf_over_binary_from_float_as_faiss(fp):
    rng = np.random.default_rng(11)
    xt = rng.integers(0, 256, (600, 8), dtype="uint8")
    xb = rng.integers(0, 256, (1000, 8), dtype="uint8")
    xq = rng.integers(0, 256, (50, 8), dtype="uint8")

    def build(f):
        ivf = f.IndexBinaryIVF(f.IndexBinaryFromFloat(f.IndexFlatL2(64)), 64, 8)
        assert not ivf.is_trained
        ivf.train(xt)
        ivf.add(xb)
        ivf.nprobe = 3
        return ivf

    ref, got = both(fp, build)
    assert got.is_trained and got.ntotal == 1000
    Dr, Ir = ref.search(xq, 5)
    D, I = got.search(xq, 5)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_io_objects_carry_faiss_bytes(fp, tmp_path):
    x = np.random.default_rng(12).random((300, 16), dtype="float32")
    index = fp.IndexFlatL2(16)
    index.add(x)
    w = real.VectorIOWriter()
    fp.write_index(index, w)
    data = real.vector_to_array(w.data)
    assert bytes(data) == bytes(fp.serialize_index(index))
    r = real.VectorIOReader()
    real.copy_array_to_vector(data, r.data)
    back = fp.read_index(r)
    assert isinstance(back, fp.IndexFlat) and back.ntotal == 300
    chunks = []
    fp.write_index(index, real.PyCallbackIOWriter(lambda b: chunks.append(bytes(b)) or len(b)))
    assert b"".join(chunks) == bytes(data)
    got = b"".join(chunks)
    pos = [0]

    def read(n):
        out = got[pos[0]:pos[0] + n]
        pos[0] += len(out)
        return out

    again = fp.read_index(real.BufferedIOReader(real.PyCallbackIOReader(read)))
    np.testing.assert_array_equal(again.search(x[:5], 3)[1], index.search(x[:5], 3)[1])
    # a damaged file: FAISS's RuntimeError names it
    fname = str(tmp_path / "cut.index")
    fp.write_index(index, fname)
    with open(fname, "r+b") as f:
        f.truncate(len(data) // 2)
    with pytest.raises(RuntimeError, match=fname):
        fp.read_index(fname)


def test_write_index_of_a_local_faiss_index(fp, tmp_path):
    # a class this package does not serve comes from local faiss; writing it gives its bytes
    x = np.random.default_rng(13).random((1500, 8), dtype="float32")
    nsg = fp.IndexNSGFlat(8, 16)
    nsg.add(x)
    fname = str(tmp_path / "nsg.index")
    fp.write_index(nsg, fname)
    served = fp.read_index(fname)
    assert served.server_name and served.ntotal == 1500
    np.testing.assert_array_equal(served.search(x[:20], 3)[1], nsg.search(x[:20], 3)[1])


def test_binary_idmap2_and_ivf_flat_dedup_as_faiss(fp, tmp_path):
    xb = np.zeros((10, 5), dtype="uint8")
    xb[:, 0] = np.arange(10) + 100
    out = []
    for f in (real, fp):
        index = f.IndexBinaryIDMap2(f.IndexBinaryFlat(40))
        index.add_with_ids(xb, np.arange(10, dtype="int64") + 1000)
        index.remove_ids(np.array([1003], dtype="int64"))
        with pytest.raises(RuntimeError):
            index.reconstruct(1003)
        fname = str(tmp_path / ("b%d" % len(out)))
        f.write_index_binary(index, fname)
        back = f.read_index_binary(fname)
        out.append((index.search(xb, 4), back.reconstruct(1004), type(back).__name__))
    np.testing.assert_array_equal(out[0][0][1], out[1][0][1])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    assert out[0][2] == out[1][2] == "IndexBinaryIDMap2"
    xt = np.random.default_rng(14).random((500, 10), dtype="float32")
    xt[201::2] = xt[200::2]  # duplicates, which the dedup IVF stores once

    def dedup(f):
        q = f.IndexFlatL2(10)
        index = f.IndexIVFFlatDedup(q, 10, 20)
        index.train(xt)
        index.nprobe = 5
        index.add(xt)
        return index, f.IndexIVFFlat(q, 10, 20)

    (ref, ref_ivf), (got, got_ivf) = both(fp, dedup)
    assert got_ivf.is_trained and got.ntotal == ref.ntotal
    Dr, Ir = ref.search(xt[:50], 6)
    D, I = got.search(xt[:50], 6)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
