"""The Python drop-in gives FAISS's answer or raises, never a different answer: attribute
writes reach the server or raise, search parameters and id selectors are served, IDMap
wrappers keep their labels, and indexes composed from a quantizer or a sub-index behave as
FAISS's compositions. Each program runs against in-process faiss and against the real
server, on the same data."""

import faiss as real
import numpy as np
import pytest

from dropin import faissproxy




def data(n=2000, d=16, nq=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype="float32"), rng.random((nq, d), dtype="float32")


def exact(xb, xq, k):
    flat = real.IndexFlatL2(xb.shape[1])
    flat.add(xb)
    return flat.search(xq, k)


def recall(I, gt):
    return int((I[:, :1] == gt[:, :1]).sum())


# ---- 1. attribute writes ------------------------------------------------------------------


def test_imi_nprobe_reaches_the_server(fp):
    xb, xq = data(4000, 8, 200, 1)
    _, gt = exact(xb, xq, 1)
    ix = fp.index_factory(8, "IMI2x4,Flat")
    ix.train(xb)
    ix.add(xb)
    ix.nprobe = 256  # every list: exhaustive, as in faiss
    _, I = ix.search(xq, 1)
    assert recall(I, gt) == 200
    assert ix.nprobe == 256 and ix.nlist == 256


def test_binary_ivf_nprobe_reaches_the_server(fp):
    rng = np.random.default_rng(2)
    xb = rng.integers(0, 256, (3000, 8), dtype="uint8")
    xq = rng.integers(0, 256, (100, 8), dtype="uint8")
    flat = real.IndexBinaryFlat(64)
    flat.add(xb)
    Dgt, _ = flat.search(xq, 3)
    ix = fp.index_binary_factory(64, "BIVF16")
    ix.train(xb)
    ix.add(xb)
    ix.nprobe = 16
    D, _ = ix.search(xq, 3)
    np.testing.assert_array_equal(D, Dgt)  # Hamming ties: the distances say it


def test_attribute_writes_that_are_not_served_raise(fp):
    xb, _ = data(1000, 16, 1, 12)
    flat = fp.IndexFlatL2(16)
    with pytest.raises(NotImplementedError, match="metric_type"):
        flat.metric_type = fp.METRIC_INNER_PRODUCT
    assert flat.metric_type == fp.METRIC_L2
    with pytest.raises(NotImplementedError, match="ntotal"):
        flat.ntotal = 5
    # writing the value a member holds changes nothing in FAISS: nor here
    flat.metric_type = fp.METRIC_L2
    flat.is_trained = True
    flat.ntotal = np.int64(0)
    flat.d = 16.0
    with pytest.raises(NotImplementedError, match="is_trained"):
        flat.is_trained = False
    with pytest.raises(NotImplementedError, match="d is not served"):
        flat.d = "16"
    flat.nprob = 4  # not a member of FAISS's IndexFlatL2: FAISS keeps it, and reads it never
    assert flat.nprob == 4
    hnsw0 = fp.IndexHNSWFlat(16, 8)
    hnsw0.add(xb)
    before = hnsw0.search(xb[:20], 5)
    hnsw0.search_bounded_queue = False  # HNSW's member, not IndexHNSWFlat's: nothing changes
    assert not hasattr(real.IndexHNSWFlat, "search_bounded_queue")
    after = hnsw0.search(xb[:20], 5)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    hnsw = fp.IndexHNSWFlat(16, 8)
    with pytest.raises(NotImplementedError, match="upper_beam"):
        hnsw.hnsw.upper_beam = 2
    hnsw.hnsw.efConstruction = 80  # served: set_params
    assert hnsw.hnsw.efConstruction == 80
    flat.verbose = True  # only prints in faiss: kept here, changes no result


def test_by_residual_before_training_reaches_the_server(fp):
    xb, xq = data(2000, 16, 40, 13)
    out = []
    for faiss in (real, fp):
        ix = faiss.IndexIVFPQ(faiss.IndexFlatL2(16), 16, 8, 4, 8)
        ix.by_residual = False
        ix.train(xb)
        ix.add(xb)
        ix.nprobe = 8
        out.append(ix.search(xq, 5))
        assert ix.by_residual is False
    np.testing.assert_array_equal(out[0][1], out[1][1])
    sq = fp.index_factory(16, "IVF8,SQ8")
    sq.by_residual = False
    assert sq.by_residual is False
    flat_ivf = fp.index_factory(16, "IVF8,Flat")
    flat_ivf.by_residual = False  # not a member of FAISS's IndexIVFFlat: kept, read by nothing
    assert not hasattr(real.IndexIVFFlat, "by_residual") and flat_ivf.by_residual is False


def test_nprobe_under_a_transform_raises_and_extract_index_ivf_serves_it(fp):
    xb, xq = data(3000, 16, 100, 3)
    ix = fp.index_factory(16, "PCA8,IVF32,Flat")
    ix.train(xb)
    ix.add(xb)
    with pytest.raises(NotImplementedError, match="nprobe"):
        ix.nprobe = 32
    ref = real.index_factory(16, "PCA8,IVF32,Flat")
    ref.train(xb)
    ref.add(xb)
    real.extract_index_ivf(ref).nprobe = 32
    fp.extract_index_ivf(ix).nprobe = 32
    assert fp.extract_index_ivf(ix).nprobe == 32
    _, I = ix.search(xq, 1)
    _, Iref = ref.search(xq, 1)
    assert recall(I, Iref) >= 98  # both exhaustive in PCA space; training may differ a hair
    fp.ParameterSpace().set_index_parameter(ix, "nprobe", 1)
    assert fp.extract_index_ivf(ix).nprobe == 1
    with pytest.raises(RuntimeError, match="ivf"):
        fp.extract_index_ivf(fp.IndexFlatL2(4))


# ---- 2. selectors and search parameters ---------------------------------------------------


def both(fp, build):
    """build(faiss) on local faiss, and the same index moved to the server."""
    ref = build(real)
    return ref, fp.deserialize_index(real.serialize_index(ref))


def test_search_with_a_range_selector(fp):
    xb, xq = data()
    ref = real.IndexFlatL2(16)
    ref.add(xb)
    ix = fp.IndexFlatL2(16)
    ix.add(xb)
    for sel_ref, sel in [(real.IDSelectorRange(0, 100), fp.IDSelectorRange(0, 100)),
                         (real.IDSelectorRange(50, 90, True), fp.IDSelectorRange(50, 90, True)),
                         (real.IDSelectorNot(real.IDSelectorRange(0, 1990)),
                          fp.IDSelectorNot(fp.IDSelectorRange(0, 1990)))]:
        Dr, Ir = ref.search(xq, 20, params=real.SearchParameters(sel=sel_ref))
        D, I = ix.search(xq, 20, params=fp.SearchParameters(sel=sel))
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
    lr, Dr, Ir = ref.range_search(xq, 1.0, params=real.SearchParameters(
        sel=real.IDSelectorRange(0, 500)))
    lims, D, I = ix.range_search(xq, 1.0, params=fp.SearchParameters(
        sel=fp.IDSelectorRange(0, 500)))
    np.testing.assert_array_equal(lims, lr)
    np.testing.assert_array_equal(I, Ir)


def test_batch_selector_with_swig_ptr_selects_and_removes(fp):
    xb, xq = data(200)
    ids = np.array([3, 17, 150], dtype="int64")
    ref = real.IndexFlatL2(16)
    ref.add(xb)
    ix = fp.IndexFlatL2(16)
    ix.add(xb)
    Dr, Ir = ref.search(xq, 3, params=real.SearchParameters(
        sel=real.IDSelectorBatch(3, real.swig_ptr(ids))))
    D, I = ix.search(xq, 3, params=fp.SearchParameters(
        sel=fp.IDSelectorBatch(3, fp.swig_ptr(ids))))
    np.testing.assert_array_equal(I, Ir)
    arr = fp.IDSelectorArray(2, fp.swig_ptr(ids))
    _, I = ix.search(xq, 3, params=fp.SearchParameters(sel=arr))
    assert set(I.ravel()) == {3, 17, -1}
    assert ref.remove_ids(real.IDSelectorBatch(3, real.swig_ptr(ids))) == 3
    assert ix.remove_ids(fp.IDSelectorBatch(3, fp.swig_ptr(ids))) == 3
    assert ix.ntotal == ref.ntotal == 197


def test_ivf_params_with_selector_give_faiss_answer(fp):
    xb, xq = data(3000, 16, 40, 4)

    def build(faiss):
        ix = faiss.IndexIVFFlat(faiss.IndexFlatL2(16), 16, 32)
        ix.train(xb)
        ix.add(xb)
        return ix

    ref, ix = both(fp, build)
    ids = np.arange(0, 3000, 7, dtype="int64")
    # nprobe 2 over a sparse selection: FAISS returns fewer than k hits (-1), not more
    Dr, Ir = ref.search(xq, 30, params=real.SearchParametersIVF(
        nprobe=2, sel=real.IDSelectorBatch(ids)))
    D, I = ix.search(xq, 30, params=fp.SearchParametersIVF(nprobe=2, sel=fp.IDSelectorBatch(ids)))
    assert (Ir == -1).any()
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5)
    # SearchParametersIVF's own nprobe (default 1) replaces the index's, as in FAISS
    ref.nprobe = ix.nprobe = 8
    Dr, Ir = ref.search(xq, 5, params=real.SearchParametersIVF(sel=real.IDSelectorRange(0, 900)))
    D, I = ix.search(xq, 5, params=fp.SearchParametersIVF(sel=fp.IDSelectorRange(0, 900)))
    np.testing.assert_array_equal(I, Ir)
    with pytest.raises(RuntimeError, match="incorrect type"):
        ref.search(xq, 5, params=real.SearchParameters(sel=real.IDSelectorRange(0, 9)))
    with pytest.raises(RuntimeError, match="incorrect type"):
        ix.search(xq, 5, params=fp.SearchParameters(sel=fp.IDSelectorRange(0, 9)))


def test_hnsw_params_with_selector_give_faiss_answer(fp):
    xb, xq = data(1500, 16, 30, 5)

    def build(faiss):
        ix = faiss.IndexHNSWFlat(16, 16)
        ix.add(xb)
        return ix

    ref, ix = both(fp, build)
    assert ix.hnsw.efSearch == ref.hnsw.efSearch and ix.hnsw.efConstruction == 40
    other = build(real)
    other.hnsw.efSearch = 77
    again = fp.deserialize_index(real.serialize_index(other))
    assert again.hnsw.efSearch == 77  # what the bytes carry, as FAISS reads it
    Dr, Ir = ref.search(xq, 10, params=real.SearchParametersHNSW(
        efSearch=40, sel=real.IDSelectorRange(100, 800)))
    D, I = ix.search(xq, 10, params=fp.SearchParametersHNSW(
        efSearch=40, sel=fp.IDSelectorRange(100, 800)))
    np.testing.assert_array_equal(I, Ir)


def test_params_not_served_raise(fp):
    xb, xq = data(300)
    ix = fp.index_factory(16, "IDMap,Flat")
    ix.add_with_ids(xb, np.arange(300, dtype="int64") + 1000)
    with pytest.raises(RuntimeError, match="not supported"):  # as FAISS's IndexIDMap
        ix.search(xq, 3, params=fp.SearchParameters(sel=fp.IDSelectorRange(0, 5)))
    flat = fp.IndexFlatL2(16)
    with pytest.raises(TypeError):
        fp.SearchParameters(sel=real.IDSelectorRange(0, 5))
    with pytest.raises(TypeError):
        flat.search(xq, 3, params=real.SearchParameters())
    hn = fp.IndexHNSWFlat(16, 8)
    hn.add(xb)
    with pytest.raises(NotImplementedError, match="check_relative_distance"):
        hn.search(xq, 3, params=fp.SearchParametersHNSW(check_relative_distance=False))


# ---- 3. IDMap2 as a suffix ----------------------------------------------------------------


@pytest.mark.parametrize("desc", ["Flat,IDMap2", "IDMap2,Flat", "Flat,IDMap"])
def test_idmap_suffix_keeps_labels_after_remove(fp, desc):
    rng = np.random.default_rng(6)
    x = rng.random((10, 5), dtype="float32")
    ids = np.arange(100, 110, dtype="int64")
    ref = real.index_factory(5, desc)
    ix = fp.index_factory(5, desc)
    for i in (ref, ix):
        i.add_with_ids(x, ids)
        assert i.remove_ids(np.array([103], dtype="int64")) == 1
    _, Ir = ref.search(x[4:5], 1)
    _, I = ix.search(x[4:5], 1)
    assert Ir[0, 0] == I[0, 0] == 104
    if "IDMap2" in desc:
        np.testing.assert_array_equal(ix.reconstruct(104), ref.reconstruct(104))
        np.testing.assert_array_equal(ix.reconstruct(104), x[4])
    # the bytes carry the same wrapper both ways (only IndexIDMap2 can reconstruct)
    back = real.deserialize_index(fp.serialize_index(ix))
    assert type(back) is type(ref)
    assert type(fp.deserialize_index(real.serialize_index(ref))).__name__ == type(ref).__name__


# ---- 4. compositions ----------------------------------------------------------------------


def test_ivf_over_a_trained_quantizer(fp):
    xb, xq = data(2000, 16, 50, 7)
    cent = xb[:16].copy()
    qr = real.IndexFlatL2(16)
    qr.add(cent)
    ref = real.IndexIVFFlat(qr, 16, 16)
    q = fp.IndexFlatL2(16)
    q.add(cent)
    ix = fp.IndexIVFFlat(q, 16, 16)
    assert ix.is_trained == ref.is_trained is True
    ref.add(xb)
    ix.add(xb)
    ref.nprobe = ix.nprobe = 3
    Dr, Ir = ref.search(xq, 10)
    D, I = ix.search(xq, 10)
    np.testing.assert_array_equal(I, Ir)
    assert q.ntotal == qr.ntotal == 16


def test_ivfpq_over_a_trained_quantizer(fp):
    xb, xq = data(3000, 16, 50, 14)
    cent = xb[:8].copy()
    out = []
    for faiss in (real, fp):
        q = faiss.IndexFlatL2(16)
        q.add(cent)
        ix = faiss.IndexIVFPQ(q, 16, 8, 4, 8)
        assert ix.is_trained is False  # the product quantizer still needs training
        ix.train(xb)
        assert q.ntotal == 8 and ix.is_trained
        ix.add(xb)
        ix.nprobe = 4
        out.append(ix.search(xq, 5))
    np.testing.assert_array_equal(out[1][1], out[0][1])
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-5)


def test_quantizer_follows_the_ivf_it_was_given_to(fp):
    xb, _ = data(1000, 16, 1, 8)
    qr = real.IndexFlatL2(16)
    ref = real.IndexIVFFlat(qr, 16, 8)
    q = fp.IndexFlatL2(16)
    ix = fp.IndexIVFFlat(q, 16, 8)
    assert ix.is_trained == ref.is_trained is False
    ref.train(xb)
    ix.train(xb)
    assert q.ntotal == qr.ntotal == 8
    # the centroids live in the server's IVF: reads of them are answered from there
    loc = real.deserialize_index(faissproxy.serialize_index(ix))
    np.testing.assert_array_equal(q.search(xb[:5], 2)[1], loc.quantizer.search(xb[:5], 2)[1])
    with pytest.raises(RuntimeError, match="quantizer"):
        q.add(xb[:2])  # its content is trained with the IVF, on the server


def test_idmap2_sub_index_follows_the_wrapper(fp):
    xb, xq = data(100, 16, 5, 9)
    ids = np.arange(500, 600, dtype="int64")
    subr = real.IndexFlatL2(16)
    ref = real.IndexIDMap2(subr)
    sub = fp.IndexFlatL2(16)
    ix = fp.IndexIDMap2(sub)
    ref.add_with_ids(xb, ids)
    ix.add_with_ids(xb, ids)
    assert sub.ntotal == subr.ntotal == 100
    _, Ir = ref.search(xq, 4)
    _, I = ix.search(xq, 4)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(ix.reconstruct(550), ref.reconstruct(550))
    with pytest.raises(RuntimeError, match="sub-index"):
        sub.search(xq, 1)


def test_idmap_over_a_trained_ivf_keeps_its_training(fp):
    xb, xq = data(2000, 16, 20, 10)

    def build(faiss):
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(16), 16, 16)
        ivf.train(xb)
        return ivf

    ivf_ref, ivf = both(fp, build)
    ivf.nprobe = ivf_ref.nprobe = 16
    ref = real.IndexIDMap(ivf_ref)
    ix = fp.IndexIDMap(ivf)
    assert ix.is_trained == ref.is_trained is True
    ids = np.arange(2000, dtype="int64") * 3
    ref.add_with_ids(xb, ids)
    ix.add_with_ids(xb, ids)
    _, Ir = ref.search(xq, 5)
    _, I = ix.search(xq, 5)
    np.testing.assert_array_equal(I, Ir)


# ---- the wire: id_selector ----------------------------------------------------------------


def test_id_selector_on_the_wire(server, client):
    from conftest import unique
    name = unique("sel")
    client.create(name, 4)
    x = np.random.default_rng(11).random((50, 4), dtype="float32")
    client.add(name, x)
    q = x[:2]
    base = {"operation": "search", "index_id": name, "k": 5, "vector_shape": [2, 4]}
    for sel, want in [({"ids": [7, 9, 1000]}, {7, 9, -1}),
                      ({"range": [10, 12]}, {10, 11, -1}),
                      ({"and": [{"range": [0, 20]}, {"not": {"range": [2, 19]}}]}, {0, 1, 19, -1}),
                      ({"xor": [{"range": [0, 3]}, {"ids": [2, 3]}]}, {0, 1, 3, -1}),
                      ({"or": [{"ids": [4]}, {"ids": [5]}]}, {4, 5, -1}),
                      ({"all": True}, None)]:
        h, d, _ = client.ok(dict(base, id_selector=sel), q.tobytes())
        labels = set(np.frombuffer(d, "int64", 10, offset=40).tolist())
        if want is not None:
            assert labels == want, sel
    deep = {"all": True}
    for _ in range(20):
        deep = {"not": deep}
    for bad in [{"range": [1]}, {"range": [1, "x"]}, {"ids": ["a"]}, {"foo": 1}, [1, 2],
                {"and": [{"all": True}]}, {"all": False}, {"ids": [1], "range": [0, 1]}, deep]:
        h, _, _ = client.call(dict(base, id_selector=bad), q.tobytes())
        assert h["status"] == "error" and h["error_type"] == "validation_error", bad
        assert "id_selector" in h["message"]
    h, _, _ = client.call(dict(base, operation="range_search", radius=0.5,
                               id_selector={"ids": "no"}), q.tobytes())
    assert h["error_type"] == "validation_error"
    # params max_codes: an integer >= 0, on IVF indexes only
    h, _, _ = client.call(dict(base, params={"max_codes": -1}), q.tobytes())
    assert h["error_type"] == "validation_error"
    assert client.ping()  # still serving


def test_idmap_over_an_untrained_ivf_keeps_its_settings(fp):
    xb, xq = data(1000, 16, 10, 20)
    ids = np.arange(1000, dtype="int64") * 2
    out = []
    for faiss in (real, fp):
        q = faiss.IndexFlatL2(16)
        sub = faiss.IndexIVFFlat(q, 16, 8)
        sub.nprobe = 8
        ix = faiss.IndexIDMap(sub)
        assert not ix.is_trained
        ix.train(xb)
        ix.add_with_ids(xb, ids)
        assert q.ntotal == 8 and sub.ntotal == ix.ntotal == 1000
        assert faiss.extract_index_ivf(ix).nprobe == 8
        out.append(ix.search(xq, 4)[1])
        faiss.extract_index_ivf(ix).nprobe = 1
        out.append(ix.search(xq, 4)[1])
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[3])
    imported = fp.deserialize_index(real.serialize_index(real.index_factory(8, "PCA4,IVF4,Flat")))
    with pytest.raises(NotImplementedError, match="nprobe"):
        fp.extract_index_ivf(imported).nprobe  # the bytes' value is not read here


def test_methods_say_what_they_do(fp):
    """help(index.add) tells a FAISS user what FAISS's says first (FAISS's own
    test_documentation checks it)."""
    ix = fp.IndexFlatL2(8)
    assert "Adds vectors to the index" in ix.add.__doc__
    assert "Adds vectors to the index" in real.IndexFlatL2(8).add.__doc__
    assert "nearest" in ix.search.__doc__ and ix.train.__doc__ and ix.add_with_ids.__doc__


def test_update_vectors_raises_naming_itself(fp):
    ix = fp.index_factory(8, "IVF4,Flat")
    with pytest.raises(NotImplementedError, match="update_vectors"):
        ix.update_vectors(1, np.zeros(1, "int64"), np.zeros((1, 8), "float32"))


def test_thisown_reads_as_faiss_s(fp, tmp_path):
    rng = np.random.default_rng(5)
    xb = rng.integers(0, 256, (100, 8), dtype="uint8")
    index = fp.IndexBinaryFlat(64)
    index.add(xb)
    path = str(tmp_path / "b.index")
    fp.write_index_binary(index, path)
    index2 = fp.read_index_binary(path)
    assert index.thisown and index2.thisown  # as FAISS's objects: Python owns them
    kept = fp.IndexFlatL2(8).keep()
    assert not kept.thisown  # keep(): nothing deletes it
    kept.keep(False)
    # FAISS's quantizer handed over to the IVF that owns it: searches go on, and the
    # IVF holds what it needs of the quantizer
    quantizer = fp.IndexFlatL2(8)
    ivf = fp.IndexIVFFlat(quantizer, 8, 4)
    quantizer.thisown = False
    assert not quantizer.thisown
    x = rng.random((200, 8), dtype="float32")
    ivf.train(x)
    ivf.add(x)
    del quantizer
    D, I = ivf.search(x[:3], 1)
    assert list(I[:, 0]) == [0, 1, 2]
