"""Index settings and selector helpers of the Python drop-in give FAISS's answer or raise.

Each program runs against in-process faiss and against the real server: IVF `parallel_mode`,
binary flat/IVF `use_heap` and HNSW `search_bounded_queue` reach the server (set_params), which
validates them and keeps them across a restart (log replay and snapshot, as the other
settings); `by_residual` written after training is FAISS's member write, which later encodings
and searches follow; `nprobe` on an index with no IVF is a plain attribute, as FAISS's Python
object keeps it; `IDSelectorRange.find_sorted_ids_bounds` is FAISS's bisection. The wire-level
tests check the server's side with the independent client (wire.py)."""
import glob
import os

import faiss as real
import numpy as np
import pytest

from conftest import unique
from wire import rand


def data(n, d, nq, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype="float32"), rng.random((nq, d), dtype="float32")


def served_copy(fp, local):
    return fp.deserialize_index(real.serialize_index(local))


def test_ivf_parallel_mode_is_faiss_s(fp):
    xb, xq = data(3000, 16, 50, 1)
    local = real.index_factory(16, "IVF32,SQ8")
    local.train(xb)
    local.add(xb)
    local.nprobe = 4
    served = served_copy(fp, local)
    served.nprobe = 4
    assert served.parallel_mode == local.parallel_mode == 0
    for pm in (1, 2, 3, 0):
        local.parallel_mode = pm
        served.parallel_mode = pm
        assert served.parallel_mode == pm
        Dr, Ir = local.search(xq, 10)
        D, I = served.search(xq, 10)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
    # FAISS's search would throw on other modes, or return garbage for its internal flag
    for bad in (4, -1, 1024 | 1):
        with pytest.raises(RuntimeError, match="parallel_mode"):
            served.parallel_mode = bad
    assert served.parallel_mode == 0
    with pytest.raises(NotImplementedError, match="parallel_mode"):
        fp.index_binary_factory(64, "BIVF8").parallel_mode = 1


@pytest.mark.parametrize("description", ["BFlat", "BIVF4"])
def test_binary_use_heap_is_faiss_s(fp, description):
    rng = np.random.default_rng(2)
    xb = rng.integers(0, 256, (500, 8), dtype="uint8")
    xq = rng.integers(0, 256, (20, 8), dtype="uint8")
    local = real.index_binary_factory(64, description)
    local.train(xb)
    local.add(xb)
    served = fp.deserialize_index_binary(real.serialize_index_binary(local))
    if description != "BFlat":
        local.nprobe = served.nprobe = 4
    assert served.use_heap is True
    for k in (5, 40):
        local.use_heap = served.use_heap = False
        Dr, Ir = local.search(xq, k)
        D, I = served.search(xq, k)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)  # counting sort orders ties as FAISS's does
    assert served.use_heap is False
    with pytest.raises(NotImplementedError, match="use_heap"):
        fp.IndexBinaryHNSW(64).use_heap = False


def test_hnsw_unbounded_queue_is_faiss_s(fp):
    xb, xq = data(1000, 16, 30, 3)
    local = real.IndexHNSWFlat(16, 8)
    local.add(xb)
    served = served_copy(fp, local)
    assert served.hnsw.search_bounded_queue is True
    local.hnsw.efSearch = served.hnsw.efSearch = 4
    local.hnsw.search_bounded_queue = served.hnsw.search_bounded_queue = False
    Dr, Ir = local.search(xq, 10)
    D, I = served.search(xq, 10)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5)
    assert served.hnsw.search_bounded_queue is False


@pytest.mark.parametrize("metric", [real.METRIC_L2, real.METRIC_INNER_PRODUCT])
def test_by_residual_written_after_add_is_faiss_s(fp, metric):
    """FAISS's tests turn by_residual off on a filled IVF-PQ: its stored codes stay as they
    were encoded and its search decodes them without residuals. The server's index does the
    same, and an IndexIVFPQFastScan made from it copies the member."""
    xb, xq = data(2000, 16, 40, 4)
    local = real.index_factory(16, "IVF16,PQ8x4np", metric)
    local.train(xb)
    local.add(xb)
    served = served_copy(fp, local)
    local.nprobe = served.nprobe = 4
    local.by_residual = False
    served.by_residual = False
    assert served.by_residual is False
    Dr, Ir = local.search(xq, 10)
    D, I = served.search(xq, 10)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5)
    fs_local = real.IndexIVFPQFastScan(local)
    fs = fp.IndexIVFPQFastScan(served)
    assert fs.by_residual is False
    assert faiss_bytes(fp, fs) == real.serialize_index(fs_local).tobytes()


def faiss_bytes(fp, index):
    return fp.serialize_index(index).tobytes()


def test_nprobe_on_an_index_without_ivf_is_a_plain_attribute(fp):
    xb, xq = data(1000, 16, 20, 5)
    local = real.index_factory(16, "RQ4x4")
    local.train(xb)
    local.add(xb)
    served = served_copy(fp, local)
    local.nprobe = 16  # FAISS's Python object keeps it; no search reads it
    served.nprobe = 16
    assert served.nprobe == 16
    Dr, Ir = local.search(xq, 5)
    D, I = served.search(xq, 5)
    np.testing.assert_array_equal(I, Ir)
    # an IVF under a transform would take it in a user's mind: still refused there
    with pytest.raises(NotImplementedError, match="nprobe"):
        fp.index_factory(16, "PCA8,IVF8,Flat").nprobe = 4


@pytest.mark.parametrize("imin,imax,n", [(10, 20, 100), (-10, 20, 100), (10, 40, 100),
                                         (10, 20, 5), (30, 80, 2)])
def test_find_sorted_ids_bounds_is_faiss_s(fp, imin, imax, n):
    for seed in range(5):
        ids = np.sort(np.random.RandomState(seed).choice(30, n).astype("int64"))
        if n == 2:
            ids = np.array([12, 92], dtype="int64")
        got, ref = np.zeros(2, dtype="uint64"), np.zeros(2, dtype="uint64")
        fp.IDSelectorRange(imin, imax, True).find_sorted_ids_bounds(
            len(ids), fp.swig_ptr(ids), fp.swig_ptr(got[:1]), fp.swig_ptr(got[1:]))
        real.IDSelectorRange(imin, imax, True).find_sorted_ids_bounds(
            len(ids), real.swig_ptr(ids), real.swig_ptr(ref[:1]), real.swig_ptr(ref[1:]))
        np.testing.assert_array_equal(got, ref)
    with pytest.raises(RuntimeError, match="assume_sorted"):  # FAISS asserts (aborts)
        fp.IDSelectorRange(0, 5).find_sorted_ids_bounds(
            len(ids), fp.swig_ptr(ids), fp.swig_ptr(got[:1]), fp.swig_ptr(got[1:]))


# ---- the wire ------------------------------------------------------------------------------


def set_param(c, name, param, value):
    return c.call({"operation": "set_params", "index_id": name, "name": param, "value": value})


def knobs(c, name):
    return c.info(name)["params"]


def test_member_settings_validated_logged_snapshotted(make_server):
    s = make_server()
    c = s.client()
    ivf, hnsw, bflat = unique("ivf"), unique("hnsw"), unique("bflat")
    c.create(ivf, 8, "IVF4,Flat")
    c.create(hnsw, 8, "HNSW8")
    c.ok({"operation": "create_index", "index_id": bflat, "dimension": 64,
          "index_type": "BFlat", "metric": "Hamming"})
    assert knobs(c, ivf)["parallel_mode"] == 0
    assert knobs(c, hnsw)["search_bounded_queue"] == 1
    assert knobs(c, bflat)["use_heap"] == 1
    # bad values and index types: a clear error, the setting unchanged
    for name, param, value, why in [
            (ivf, "parallel_mode", 4, "parallel_mode"), (ivf, "parallel_mode", 1.5, "integer"),
            (ivf, "parallel_mode", 1025, "parallel_mode"), (hnsw, "parallel_mode", 1, "IVF"),
            (hnsw, "search_bounded_queue", 2, "search_bounded_queue"),
            (ivf, "search_bounded_queue", 0, "HNSW"), (ivf, "use_heap", 0, "binary"),
            (ivf, "quantizer_parallel_mode", 1, "quantizer_parallel_mode"),
            (bflat, "use_heap", -1, "use_heap")]:
        h, _, _ = set_param(c, name, param, value)
        assert h["status"] == "error" and why in h["message"], (param, value, h)
    assert knobs(c, ivf)["parallel_mode"] == 0
    xt = rand(200, 8, 1)
    c.ok({"operation": "set_params", "index_id": ivf, "name": "parallel_mode", "value": 2})
    c.train(ivf, xt)  # the trained index replaces the engine: the setting stays
    c.add(ivf, xt)
    c.ok({"operation": "set_params", "index_id": hnsw, "name": "search_bounded_queue",
          "value": 0})
    c.ok({"operation": "set_params", "index_id": bflat, "name": "use_heap", "value": 0})
    want = {ivf: ("parallel_mode", 2), hnsw: ("search_bounded_queue", 0),
            bflat: ("use_heap", 0)}
    for name, (param, value) in want.items():
        assert knobs(c, name)[param] == value
    D0, I0, _ = c.search(ivf, xt[-5:], 3)
    s.kill9()  # no snapshot: the log's set_params records replay them
    s.start()
    c = s.client()
    for name, (param, value) in want.items():
        assert knobs(c, name)[param] == value, (name, param)
    c.add(ivf, xt[:1])  # a new write: the clean shutdown snapshots every index
    c.add(hnsw, xt[:1])
    c.ok({"operation": "add_vectors", "index_id": bflat, "vector_shape": [1, 8],
          "dtype": "uint8"},
         np.zeros(8, dtype="uint8").tobytes())
    s.stop()  # clean shutdown: snapshots, which carry them (FAISS's bytes do not)
    for name in want:
        snap, = glob.glob(os.path.join(s.data_dir, "*", name, "snapshot"))
        assert b"settings" in open(snap, "rb").read()
    s.start()
    c = s.client()
    for name, (param, value) in want.items():
        assert knobs(c, name)[param] == value, (name, param)
    D1, I1, _ = c.search(ivf, xt[-5:], 3)
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_array_equal(D0, D1)


def test_by_residual_after_training_on_the_wire(client):
    c = client
    name = unique("ivfpq")
    c.create(name, 8, "IVF4,PQ4x4np")
    xt = rand(300, 8, 2)
    c.train(name, xt)
    c.add(name, xt)
    c.ok({"operation": "set_params", "index_id": name, "name": "by_residual", "value": 0})
    c.search(name, xt[:3], 2)  # FAISS's search of the same codes, decoded without residuals
    h, _, _ = set_param(c, name, "by_residual", 2)
    assert h["status"] == "error" and "by_residual" in h["message"]
    flat = unique("flat")
    c.create(flat, 8, "Flat")
    h, _, _ = set_param(c, flat, "by_residual", 0)
    assert h["status"] == "error" and "by_residual applies" in h["message"]


# ---- IndexPQ search types ------------------------------------------------------------------


def test_index_pq_search_type_and_polysemous_ht_are_faiss_s(fp):
    xb, xq = data(2000, 16, 40, 3)
    local = real.IndexPQ(16, 8, 8)
    local.train(xb)
    local.add(xb)
    served = served_copy(fp, local)
    assert fp.IndexPQ.ST_polysemous == real.IndexPQ.ST_polysemous
    assert fp.IndexPQ.ST_SDC == real.IndexPQ.ST_SDC
    assert served.search_type == local.search_type == real.IndexPQ.ST_PQ
    assert served.polysemous_ht == local.polysemous_ht == 65
    for st, ht in [(real.IndexPQ.ST_polysemous, 12), (real.IndexPQ.ST_polysemous, 0),
                   (real.IndexPQ.ST_polysemous_generalize, 12), (real.IndexPQ.ST_HE, 12),
                   (real.IndexPQ.ST_generalized_HE, 12), (real.IndexPQ.ST_PQ, 12)]:
        local.search_type, local.polysemous_ht = st, ht
        served.search_type, served.polysemous_ht = st, ht
        assert (served.search_type, served.polysemous_ht) == (st, ht)
        Dr, Ir = local.search(xq, 10)
        D, I = served.search(xq, 10)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
    # ParameterSpace's "ht" sets both, in FAISS as on the server
    real.ParameterSpace().set_index_parameter(local, "ht", 9)
    fp.ParameterSpace().set_index_parameter(served, "ht", 9)
    assert (served.search_type, served.polysemous_ht) == (local.search_type, 9)
    np.testing.assert_array_equal(served.search(xq, 5)[1], local.search(xq, 5)[1])
    # FAISS 1.7.3's IndexPQ never computes the symmetric distance table: its search throws
    local.search_type = served.search_type = real.IndexPQ.ST_SDC
    with pytest.raises(RuntimeError):
        local.search(xq, 5)
    with pytest.raises(RuntimeError):
        served.search(xq, 5)
    for bad in (6, -1):
        with pytest.raises((RuntimeError, OverflowError), match="search_type"):
            served.search_type = bad
    assert served.search_type == real.IndexPQ.ST_SDC
    # a search's own type: FAISS's checks, then FAISS's search with the params' type and
    # threshold, which leaves the index's own as they were
    with pytest.raises(RuntimeError, match="invalid search params"):
        served.search(xq, 5, params=fp.SearchParameters())
    with pytest.raises(RuntimeError, match="selector not supported"):
        served.search(xq, 5, params=fp.SearchParametersPQ(sel=fp.IDSelectorRange(0, 9)))
    local.search_type = served.search_type = real.IndexPQ.ST_PQ
    local.polysemous_ht = served.polysemous_ht = 30
    plain = local.search(xq, 10)[1]
    for st, ht in [(real.IndexPQ.ST_polysemous, 10), (real.IndexPQ.ST_polysemous, 0),
                   (real.IndexPQ.ST_polysemous_generalize, 14), (real.IndexPQ.ST_HE, 0),
                   (real.IndexPQ.ST_PQ, 10)]:
        Dr, Ir = local.search(xq, 10, params=real.SearchParametersPQ(search_type=st,
                                                                      polysemous_ht=ht))
        D, I = served.search(xq, 10, params=fp.SearchParametersPQ(search_type=st,
                                                                   polysemous_ht=ht))
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
        if st == real.IndexPQ.ST_polysemous and ht:
            assert not np.array_equal(Ir, plain)  # the params did change FAISS's answer
        assert (served.search_type, served.polysemous_ht) == (real.IndexPQ.ST_PQ, 30)
        np.testing.assert_array_equal(served.search(xq, 10)[1], plain)
    local.search_type = served.search_type = real.IndexPQ.ST_SDC
    with pytest.raises(RuntimeError):  # the params' type replaces the index's
        local.search(xq, 5, params=real.SearchParametersPQ(search_type=real.IndexPQ.ST_SDC))
    with pytest.raises(RuntimeError):
        served.search(xq, 5, params=fp.SearchParametersPQ(search_type=fp.IndexPQ.ST_SDC))
    np.testing.assert_array_equal(
        served.search(xq, 10, params=fp.SearchParametersPQ())[1],
        local.search(xq, 10, params=real.SearchParametersPQ())[1])
    # an index made here carries them in its bytes, as FAISS's write_index
    served.search_type, served.polysemous_ht = real.IndexPQ.ST_polysemous, 14
    back = real.deserialize_index(fp.serialize_index(served))
    assert (back.search_type, back.polysemous_ht) == (real.IndexPQ.ST_polysemous, 14)


def test_index_pq_search_type_on_the_wire(make_server):
    s = make_server()
    c = s.client()
    pq, flat = unique("pq"), unique("flat")
    c.create(pq, 16, "PQ8x8np")
    c.create(flat, 16, "Flat")
    assert knobs(c, pq)["search_type"] == 0 and knobs(c, pq)["polysemous_ht"] == 65
    assert "search_type" not in knobs(c, flat)
    for name, param, value, why in [
            (pq, "search_type", 6, "search_type"), (pq, "search_type", -1, "search_type"),
            (pq, "search_type", 1.5, "integer"), (pq, "polysemous_ht", -1, "polysemous_ht"),
            (pq, "polysemous_ht", 1 << 21, "polysemous_ht"),
            (pq, "quantizer_search_type", 1, "quantizer_search_type"),
            (flat, "search_type", 4, "IndexPQ"), (flat, "polysemous_ht", 4, "IndexPQ")]:
        h, _, _ = set_param(c, name, param, value)
        assert h["status"] == "error" and why in h["message"], (param, value, h)
    assert knobs(c, pq)["search_type"] == 0 and knobs(c, pq)["polysemous_ht"] == 65
    xt = rand(1000, 16, 4)
    c.train(pq, xt)
    c.add(pq, xt)
    D0, I0, _ = c.search(pq, xt[:5], 4)
    c.ok({"operation": "set_params", "index_id": pq, "name": "search_type", "value": 4})
    c.ok({"operation": "set_params", "index_id": pq, "name": "polysemous_ht", "value": 12})
    D1, I1, _ = c.search(pq, xt[:5], 4)
    s.kill9()  # the log's set_params records replay them
    s.start()
    c = s.client()
    assert knobs(c, pq)["search_type"] == 4 and knobs(c, pq)["polysemous_ht"] == 12
    c.add(pq, xt[:1] + 100)  # a new write, far from the queries: the clean shutdown
    s.stop()  # snapshots the index, whose FAISS bytes carry both
    s.start()
    c = s.client()
    assert knobs(c, pq)["search_type"] == 4 and knobs(c, pq)["polysemous_ht"] == 12
    D2, I2, _ = c.search(pq, xt[:5], 4)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    c.ok({"operation": "set_params", "index_id": pq, "name": "search_type", "value": 0})
    D3, I3, _ = c.search(pq, xt[:5], 4)
    np.testing.assert_array_equal(I0, I3)


def exported(c, name):
    blob = c.ok({"operation": "export_index", "index_id": name})[1]
    return real.deserialize_index(np.frombuffer(blob, dtype="uint8"))


def test_search_params_pq_and_quantizer_ef_search_on_the_wire(make_server):
    """Per-search search_type / polysemous_ht (IndexPQ) and quantizer_efSearch (an IVF over
    an HNSW quantizer) are validated, answer as FAISS's search with those params, are never
    batched with other searches, and leave the index's own settings as they were."""
    s = make_server()
    c = s.client()
    pq, pq4, flat, ivfh, ivf, bflat = (unique(n) for n in
                                        ("pq", "pq4", "flat", "ivfh", "ivf", "bflat"))
    xb, xq = data(3000, 16, 30, 11)
    for name, desc in [(pq, "PQ8x8np"), (pq4, "PQ4x4np"), (flat, "Flat"),
                       (ivfh, "IVF40_HNSW8,Flat"), (ivf, "IVF40,Flat")]:
        c.create(name, 16, desc)
        c.train(name, xb)
        c.add(name, xb)
    c.create(bflat, 16, "BFlat")
    assert knobs(c, ivfh)["quantizer_efSearch"] == 16  # the HNSW quantizer's own
    assert "quantizer_efSearch" not in knobs(c, ivf)
    for name, params, why in [
            (pq, {"search_type": 6}, "search_type"), (pq, {"search_type": -1}, "search_type"),
            (pq, {"search_type": "4"}, "search_type"),
            (pq, {"polysemous_ht": 1 << 21}, "polysemous_ht"),
            (pq, {"polysemous_ht": -1}, "polysemous_ht"),
            (flat, {"search_type": 4}, "IndexPQ"), (ivfh, {"polysemous_ht": 4}, "IndexPQ"),
            (ivf, {"quantizer_efSearch": 8}, "HNSW quantizer"),
            (pq, {"quantizer_efSearch": 8}, "HNSW quantizer"),
            (ivfh, {"quantizer_efSearch": 0}, "1..1048576"),
            (ivfh, {"quantizer_efSearch": 1 << 21}, "1..1048576"),
            (ivfh, {"quantizer_nprobe": 2}, "quantizer_efSearch"),
            # FAISS 1.7.3's generalized Hamming search asserts (ends the process) on codes
            # whose size is not a multiple of 8 bytes
            (pq4, {"search_type": 2}, "multiple of 8")]:
        h, _, _ = c.call({"operation": "search", "index_id": name, "k": 3,
                          "vector_shape": [1, 16], "params": params}, xq[:1].tobytes())
        assert h["status"] == "error" and why in h["message"], (name, params, h)
    c.ok({"operation": "add_vectors", "index_id": bflat, "vector_shape": [3, 2],
          "dtype": "uint8"}, bytes(6))
    h, _, _ = c.call({"operation": "search", "index_id": bflat, "k": 1, "vector_shape": [1, 2],
                      "dtype": "uint8", "params": {"search_type": 4}}, bytes(2))
    assert h["status"] == "error" and "per search" in h["message"], h
    local = exported(c, pq)  # in-process FAISS over the server's own codes
    for st, ht in [(4, 10), (5, 14), (1, 0), (0, 0)]:
        D, I, _ = c.search(pq, xq, 10, params={"search_type": st, "polysemous_ht": ht})
        Dr, Ir = local.search(xq, 10, params=real.SearchParametersPQ(search_type=st,
                                                                      polysemous_ht=ht))
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
    # the index's own settings are untouched, and searches without params use them
    assert knobs(c, pq)["search_type"] == 0 and knobs(c, pq)["polysemous_ht"] == 65
    np.testing.assert_array_equal(c.search(pq, xq, 10)[1], local.search(xq, 10)[1])
    # an IVF over an HNSW quantizer: FAISS's SearchParametersIVF.quantizer_params
    ref = exported(c, ivfh)
    changed = False
    for ef in (1, 3, 40):
        D, I, _ = c.search(ivfh, xq, 10, params={"nprobe": 4, "quantizer_efSearch": ef})
        Dr, Ir = ref.search(xq, 10, params=real.SearchParametersIVF(
            nprobe=4, quantizer_params=real.SearchParametersHNSW(efSearch=ef)))
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
        ref.nprobe = 4
        changed |= not np.array_equal(Ir, ref.search(xq, 10)[1])
    assert changed  # the quantizer's efSearch did change FAISS's answers
    assert knobs(c, ivfh)["quantizer_efSearch"] == 16
    # range_search hands them to the quantizer as well: FAISS's hits, query by query
    radius = float(np.median(ref.search(xq, 10)[0][:, -1]))
    changed = False
    for ef in (1, 40):
        h, d, _ = c.ok({"operation": "range_search", "index_id": ivfh, "radius": radius,
                        "vector_shape": list(xq.shape),
                        "params": {"nprobe": 4, "quantizer_efSearch": ef}}, xq.tobytes())
        nq, nres = h["nq"], h["nres"]
        lims = np.frombuffer(d[:(nq + 1) * 8], dtype="<i8")
        labels = np.frombuffer(d[(nq + 1) * 8:(nq + 1) * 8 + nres * 8], dtype="<i8")
        dist = np.frombuffer(d[(nq + 1) * 8 + nres * 8:], dtype="<f4")
        lr, dr, ir = ref.range_search(xq, radius, params=real.SearchParametersIVF(
            nprobe=4, quantizer_params=real.SearchParametersHNSW(efSearch=ef)))
        assert nres > 0 and list(lims) == list(lr)
        for q in range(nq):
            got = dict(zip(labels[lims[q]:lims[q + 1]], dist[lims[q]:lims[q + 1]]))
            want = dict(zip(ir[lr[q]:lr[q + 1]], dr[lr[q]:lr[q + 1]]))
            assert got.keys() == want.keys(), q
            np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=1e-5)
        ref.nprobe = 4
        changed |= not np.array_equal(lr, ref.range_search(xq, radius)[0])
    assert changed  # the quantizer's efSearch did change FAISS's hits
    # set_params quantizer_efSearch reads back, and survives a restart (FAISS's bytes)
    c.ok({"operation": "set_params", "index_id": ivfh, "name": "quantizer_efSearch",
          "value": 24})
    s.stop()
    s.start()
    c = s.client()
    assert knobs(c, ivfh)["quantizer_efSearch"] == 24


def test_search_params_quantizer_params_are_faiss_s(fp):
    xb, xq = data(3000, 16, 40, 12)
    for key in ("IVF40_HNSW8,Flat", "IVF40,Flat", "PCA8,IVF40_HNSW8,Flat"):
        local = real.index_factory(16, key)
        served = fp.index_factory(16, key)
        for ix in (local, served):
            ix.train(xb)
            ix.add(xb)
        for ef in (2, 5, 64):
            pr = real.SearchParametersIVF(nprobe=6,
                                          quantizer_params=real.SearchParametersHNSW(efSearch=ef))
            ps = fp.SearchParametersIVF(nprobe=6,
                                        quantizer_params=fp.SearchParametersHNSW(efSearch=ef))
            Dr, Ir = local.search(xq, 10, params=pr)
            D, I = served.search(xq, 10, params=ps)
            np.testing.assert_array_equal(I, Ir, err_msg=key)
            np.testing.assert_allclose(D, Dr, rtol=1e-5)
    # FAISS's HNSW quantizer takes SearchParametersHNSW only
    ivfh = fp.index_factory(16, "IVF40_HNSW8,Flat")
    ivfh.train(xb)
    with pytest.raises(RuntimeError, match="params type invalid"):
        ivfh.search(xq, 3, params=fp.SearchParametersIVF(
            quantizer_params=fp.SearchParametersIVF()))
    with pytest.raises(NotImplementedError, match="selector"):
        ivfh.search(xq, 3, params=fp.SearchParametersIVF(
            quantizer_params=fp.SearchParametersHNSW(sel=fp.IDSelectorRange(0, 5))))


# ---- ZnLattice -----------------------------------------------------------------------------


def test_zn_lattice_radius_over_16_is_faiss_s(fp):
    """The 20 of "ZnLattice3x20_4" is a squared radius, not a code's bits."""
    xt, xb = data(500, 96, 100, 5)
    local = real.index_factory(96, "ZnLattice3x20_4")
    served = fp.index_factory(96, "ZnLattice3x20_4")
    local.train(xt)
    served.train(xt)
    assert served.sa_code_size() == local.sa_code_size()
    codes = served.sa_encode(xb)
    np.testing.assert_array_equal(codes, local.sa_encode(xb))
    np.testing.assert_array_equal(served.sa_decode(codes), local.sa_decode(codes))


def test_zn_lattice_bounds_on_the_wire(client):
    c = client
    for d, desc, why in [(9, "ZnLattice3x4_4", "power of 2"),  # FAISS would corrupt memory
                         (3, "ZnLattice3x4_4", "power of 2"),  # reads before its tables
                         (64, "ZnLattice1x2000_4", "2^63"),
                         # refused before FAISS or the count (quadratic in r2) runs
                         (64, "ZnLattice1x1048576_4", "MiB"),
                         (64, "ZnLattice8x3000_4", "MiB"),
                         (64, "ZnLattice2x20_40", "16 bits"),
                         (64, "PCA32,ZnLattice2x4_4", "whole description"),
                         (64, "PQ8x20", "16 bits"),
                         # FAISS's codec decodes past its points while it is built and
                         # aborts (Debian's build keeps asserts)
                         (2, "ZnLattice1x4000_4", "abort"),
                         (4, "ZnLattice1x6_4", "abort")]:
        h, _, _ = c.call({"operation": "create_index", "index_id": unique("lat"),
                          "dimension": d, "index_type": desc})
        assert h["status"] == "error" and why in h["message"], (desc, h)
    for d, desc in [(64, "ZnLattice2x24_4"),
                    (2, "ZnLattice1x5_4")]:  # decodes past its points, and survives it
        name = unique("lat")
        c.create(name, d, desc)
        assert c.info(name)["ntotal"] == 0
        _, blob, _ = c.ok({"operation": "export_index", "index_id": name})
        served = real.deserialize_index(np.frombuffer(blob, dtype="uint8"))
        assert served.sa_code_size() == real.index_factory(d, desc).sa_code_size()


def test_an_imported_lattice_is_held_to_the_created_ones_bounds(client):
    """FAISS's reader builds an IndexLattice's codec from the bytes' numbers unchecked: the
    bytes of a valid one with their dimension changed to 12 (6 per sub-vector, not a power
    of 2: FAISS's codec would write past its buffers) are refused as create_index refuses
    that description, and a valid one is imported."""
    import struct
    c = client
    good = real.serialize_index(real.index_factory(8, "ZnLattice2x4_4")).tobytes()
    assert good[:4] == b"IxLa" and struct.unpack_from("<4i", good, 4) == (8, 2, 4, 4)
    bad = bytearray(good)
    struct.pack_into("<i", bad, 4, 12)  # IndexLattice's own d
    struct.pack_into("<i", bad, 20, 12)  # the index header's d
    h, _, _ = c.call({"operation": "import_index", "index_id": unique("lat")}, bytes(bad))
    assert h["status"] == "error" and "power of 2" in h["message"], h
    name = unique("lat")
    c.ok({"operation": "import_index", "index_id": name}, good)
    assert c.info(name)["dimension"] == 8


def test_check_ids_sorted_is_faiss_s(fp):
    xb, _ = data(600, 16, 1, 6)
    local = real.index_factory(16, "IVF8,Flat")
    local.train(xb)
    served = served_copy(fp, local)
    local.add(xb[:100])
    served.add(xb[:100])
    assert served.check_ids_sorted() is local.check_ids_sorted() is True
    ids = np.arange(1000, 900, -1).astype("int64")  # added in decreasing order
    local.add_with_ids(xb[100:200], ids)
    served.add_with_ids(xb[100:200], ids)
    assert served.check_ids_sorted() is local.check_ids_sorted() is False


# ---- IndexIVFPQ use_precomputed_table --------------------------------------------------------


@pytest.mark.parametrize("before", [-1, 0, 1])
@pytest.mark.parametrize("description,metric", [
    ("IVF16,PQ8x4np", real.METRIC_L2), ("IVF16,PQ8x4np", real.METRIC_INNER_PRODUCT),
    ("IMI2x3,PQ8x4np", real.METRIC_L2)])
def test_ivfpq_use_precomputed_table_is_faiss_s(fp, before, description, metric):
    xb, xq = data(2000, 16, 40, 7)
    local = real.index_factory(16, description, metric)
    served = fp.index_factory(16, description, metric)
    imi = description.startswith("IMI")
    for ix in (local, served):
        assert ix.use_precomputed_table == 0
        ix.use_precomputed_table = before  # before training: -1 and 1 kept, 0 chosen
        ix.train(xb)
        ix.add(xb)
        ix.nprobe = 4
    # training chose as FAISS chooses: 1 for L2 when left to it (2 over a
    # MultiIndexQuantizer), 0 for inner product
    assert served.use_precomputed_table == local.use_precomputed_table
    for after in (0, 1, -1, 1, 0) + ((2, 1, 2, -1, 2) if imi else ()):
        Dr, Ir = local.search(xq, 10)
        D, I = served.search(xq, 10)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
        local.use_precomputed_table = after
        if after >= 1:
            # FAISS's search reads the table whatever it holds (out of bounds when it
            # holds none, or the other type's): the server makes it when the value is
            # set, as precompute_table() does here
            local.precompute_table()
        served.use_precomputed_table = after
        assert served.use_precomputed_table == after
    if not imi:
        with pytest.raises(RuntimeError, match="MultiIndexQuantizer"):
            served.use_precomputed_table = 2
        assert served.use_precomputed_table == 0


def test_ivfpq_use_precomputed_table_validated_and_kept(make_server):
    s = make_server()
    c = s.client()
    ivf, flat, fresh, imi = unique("ivfpq"), unique("flat"), unique("fresh"), unique("imi")
    c.create(ivf, 8, "IVF4,PQ4x4np")
    c.create(flat, 8, "IVF4,Flat")
    c.create(fresh, 8, "IVF4,PQ4x4np")
    c.create(imi, 8, "IMI2x2,PQ4x4np")
    assert "use_precomputed_table" not in knobs(c, ivf)  # chosen by training
    for name, value, why in [(ivf, 2, "MultiIndexQuantizer"), (ivf, 3, "-1..2"),
                             (ivf, -2, "-1..2"),
                             (ivf, 0.5, "integer"), (flat, 1, "IndexIVFPQ"),
                             (ivf, 1, None)]:
        h, _, _ = set_param(c, name, "use_precomputed_table", value)
        if why is None:
            assert h["status"] == "ok", h
        else:
            assert h["status"] == "error" and why in h["message"], (value, h)
    h, _, _ = set_param(c, ivf, "quantizer_use_precomputed_table", 1)
    assert h["status"] == "error"
    xt = rand(300, 8, 3)
    c.train(ivf, xt)
    c.add(ivf, xt)
    c.train(fresh, xt)
    c.train(imi, xt)
    c.add(imi, xt)
    assert knobs(c, imi)["use_precomputed_table"] == 2  # FAISS's choice over an IMI
    assert knobs(c, ivf)["use_precomputed_table"] == 1
    assert knobs(c, fresh)["use_precomputed_table"] == 1  # FAISS's choice for L2
    D1, I1, _ = c.search(ivf, xt[:5], 3)
    c.ok({"operation": "set_params", "index_id": ivf, "name": "use_precomputed_table",
          "value": -1})
    c.ok({"operation": "set_params", "index_id": fresh, "name": "use_precomputed_table",
          "value": 0})
    D2, I2, _ = c.search(ivf, xt[:5], 3)
    np.testing.assert_array_equal(I1, I2)
    s.kill9()  # the log's records replay them (FAISS's reader would choose 1 again)
    s.start()
    c = s.client()
    assert knobs(c, ivf)["use_precomputed_table"] == -1
    assert knobs(c, fresh)["use_precomputed_table"] == 0
    c.add(ivf, xt[:1])
    c.add(fresh, xt[:1])
    c.add(imi, xt[:1])
    s.stop()  # snapshots carry them
    s.start()
    c = s.client()
    assert knobs(c, ivf)["use_precomputed_table"] == -1
    assert knobs(c, fresh)["use_precomputed_table"] == 0
    assert knobs(c, imi)["use_precomputed_table"] == 2  # its snapshot loads
    c.search(imi, xt[:5], 3)
    D3, I3, _ = c.search(ivf, xt[:5], 3)
    c.ok({"operation": "set_params", "index_id": ivf, "name": "use_precomputed_table",
          "value": 1})  # a table made again: FAISS's search by residual reads it
    D4, I4, _ = c.search(ivf, xt[:5], 3)
    np.testing.assert_array_equal(I3, I4)
    np.testing.assert_allclose(D3, D4, rtol=1e-5)


def test_max_codes_and_ivfpq_ht_kept_through_train_restart_and_compaction(make_server):
    """FAISS's write_index leaves out an IVF's max_codes and an IndexIVFPQ's polysemous_ht:
    a train (the trained index read back), a snapshot and a compaction kept them at
    FAISS's defaults, and the searches' answers changed without a word."""
    s = make_server(extra=("--compact-min-dead", "20"))
    c = s.client()
    name = unique("ivfpq")
    xb, xq = rand(3000, 16, 41), rand(30, 16, 42)
    c.create(name, 16, "IVF8,PQ8")
    for param, value in (("nprobe", 8), ("max_codes", 700), ("ht", 40)):
        c.ok({"operation": "set_params", "index_id": name, "name": param, "value": value})
    c.train(name, xb)  # the trained index replaces the engine: the settings stay
    c.add(name, xb, [{"id": "k%d" % i, "metadata": {}} for i in range(3000)])
    assert knobs(c, name)["max_codes"] == 700 and knobs(c, name)["polysemous_ht"] == 40

    def reference():
        _, data, _ = c.ok({"operation": "export_index", "index_id": name})
        ref = real.deserialize_index(np.frombuffer(data, dtype="uint8").copy())
        ref.nprobe = 8
        ref.max_codes = 700
        ref.polysemous_ht = 40
        return ref

    def check():
        ref = reference()
        Dr, Ir = ref.search(xq, 10)
        D, I, _ = c.search(name, xq, 10)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
        plain = reference()
        plain.max_codes, plain.polysemous_ht = 0, 0
        _, Ip = plain.search(xq, 10)
        assert not np.array_equal(Ip, Ir)  # the settings change FAISS's answers

    check()
    s.kill9()  # the log's records replay them
    s.start()
    c = s.client()
    check()
    c.add(name, xb[:1])
    s.stop()  # snapshot: FAISS's bytes leave them out, its settings carry them
    s.start()
    c = s.client()
    assert knobs(c, name)["max_codes"] == 700 and knobs(c, name)["polysemous_ht"] == 40
    check()
    c.delete(name, ["k%d" % i for i in range(0, 3000, 3)])
    line = "compacted default/%s" % name
    assert line in s.wait_log(line, 60)
    check()
    # polysemous_ht by its own name, on an IndexIVFPQ as on an IndexPQ
    c.ok({"operation": "set_params", "index_id": name, "name": "polysemous_ht", "value": 0})
    assert knobs(c, name)["polysemous_ht"] == 0
    flat = unique("flat")
    c.create(flat, 16, "Flat")
    h, _, _ = set_param(c, flat, "max_codes", 10)
    assert h["status"] == "error" and "IVF" in h["message"], h


def nested_ivf(inner, d, xb):
    """An IVF whose quantizer is itself an IVF (an IndexIVFFlat, or an IndexIVFPQ):
    FAISS's ParameterSpace reaches the quantizer's max_codes and ht as
    quantizer_max_codes and quantizer_ht, and its write_index leaves both out."""
    q0 = real.IndexFlatL2(d)
    q = real.IndexIVFFlat(q0, d, 4) if inner == "flat" else real.IndexIVFPQ(q0, d, 4, 4, 8)
    q.train(xb)
    index = real.IndexIVFFlat(q, d, 64)
    index.train(xb)
    index.add(xb)
    index.nprobe, q.nprobe = 8, 2  # in FAISS's bytes
    return real.serialize_index(index)


@pytest.mark.parametrize("inner,param,member,value", [
    ("flat", "quantizer_max_codes", "quantizer_max_codes", 20),
    ("pq", "quantizer_ht", "quantizer_polysemous_ht", 14)])
def test_quantizer_max_codes_and_ht_kept_through_a_snapshot(make_server, inner, param,
                                                            member, value):
    """An IVF quantizer's own max_codes and polysemous_ht are not in FAISS's bytes
    either: after a snapshot the server's answers were the ones without them."""
    d = 16
    xb, xq = rand(3000, d, 51), rand(30, d, 52)
    blob = nested_ivf(inner, d, xb)
    s = make_server()
    c = s.client()
    name = unique("nested")
    c.ok({"operation": "import_index", "index_id": name}, blob.tobytes())
    h, _, _ = set_param(c, name, param, value)
    assert h["status"] == "ok", h
    assert knobs(c, name)[member] == value

    def reference(on):
        ref = real.deserialize_index(blob)
        if on:
            real.ParameterSpace().set_index_parameter(ref, param, value)
        return ref

    def check():
        Dr, Ir = reference(True).search(xq, 10)
        D, I, _ = c.search(name, xq, 10)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
        _, Ip = reference(False).search(xq, 10)
        assert not np.array_equal(Ip, Ir)  # the setting changes FAISS's answers

    check()
    c.add(name, xb[:1])  # a change, so that the clean stop writes a snapshot
    s.stop()
    s.start()
    c = s.client()
    assert knobs(c, name)[member] == value
    _, data, _ = c.ok({"operation": "export_index", "index_id": name})
    blob = np.frombuffer(data, dtype="uint8").copy()  # the served index, with its new vector
    assert real.deserialize_index(blob).ntotal == len(xb) + 1
    check()
    # a quantizer's quantizer is not carried by snapshots: refused, not lost
    for deeper in ("quantizer_quantizer_max_codes", "quantizer_quantizer_ht"):
        h, _, _ = set_param(c, name, deeper, 3)
        assert h["status"] == "error" and h["error_type"] == "validation_error", h
        assert "quantizer's quantizer" in h["message"], h
    # and on an IVF whose quantizer is flat, the member is not there
    plain = unique("ivf")
    c.create(plain, d, "IVF4,Flat")
    h, _, _ = set_param(c, plain, "quantizer_max_codes", 3)
    assert h["status"] == "error" and "quantizer is itself an IVF" in h["message"], h


CP_SET = (("niter", 3), ("nredo", 2), ("seed", 77), ("max_points_per_centroid", 40),
          ("spherical", 1), ("int_centroids", 1))


def test_ivf_clustering_parameters_on_the_wire(make_server):
    """An IVF's ClusteringParameters (FAISS's index.cp, which its training's k-means
    reads and its write_index leaves out) are set_params settings: validated, logged,
    carried by a snapshot while the index is untrained, and trained with as FAISS
    trains with them."""
    s = make_server()
    c = s.client()
    d = 8
    xt = rand(2000, d, 61)
    ivf, pre, flat = unique("cpivf"), unique("cppre"), unique("cpflat")
    c.create(ivf, d, "IVF16,Flat")
    c.create(pre, d, "PCA4,IVF16,Flat")
    c.create(flat, d, "Flat")
    # the constructor's values read back while untrained (10 iterations, not 25)
    p = knobs(c, ivf)
    assert (p["cp_niter"], p["cp_nredo"], p["cp_seed"], p["cp_spherical"]) == (10, 1, 1234, 0)
    for name, param, value, why in [
            (ivf, "cp_niter", 0, "1..1048576"), (ivf, "cp_nredo", 0, "1..1048576"),
            (ivf, "cp_seed", 1 << 31, "cp_seed"), (ivf, "cp_spherical", 2, "cp_spherical"),
            (ivf, "cp_max_points_per_centroid", 0, "cp_max_points_per_centroid"),
            (ivf, "cp_niter", 2.5, "integer"), (ivf, "quantizer_cp_niter", 3, "does not accept"),
            (ivf, "cp_verbose", 1, "does not accept"), (flat, "cp_niter", 3, "float IVF")]:
        h, _, _ = set_param(c, name, param, value)
        assert h["status"] == "error" and why in h["message"], (param, value, h)
    for name in (ivf, pre):
        for field, value in CP_SET:
            h, _, _ = set_param(c, name, "cp_" + field, value)
            assert h["status"] == "ok", (field, h)
    # the log replays them, and a snapshot of the untrained index carries them
    s.kill9()
    s.start()
    c = s.client()
    c.ok({"operation": "set_params", "index_id": ivf, "name": "nprobe", "value": 4})
    s.stop()
    s.start()
    c = s.client()
    for name in (ivf, pre):
        p = knobs(c, name)
        assert all(p["cp_" + f] == v for f, v in CP_SET), p
    for name, key in ((ivf, "IVF16,Flat"), (pre, "PCA4,IVF16,Flat")):
        ref = real.index_factory(d, key)
        ivf_ref = real.extract_index_ivf(ref)
        for field, value in CP_SET:
            setattr(ivf_ref.cp, field, type(getattr(ivf_ref.cp, field))(value))
        ref.train(xt)
        c.train(name, xt)
        assert "cp_niter" not in knobs(c, name)  # trained: its train reads them no more
        whole = exported(c, name)  # owns what extract_index_ivf returns
        served = real.extract_index_ivf(whole)
        q_ref = real.downcast_index(ivf_ref.quantizer)
        q_srv = real.downcast_index(served.quantizer)
        np.testing.assert_array_equal(q_srv.reconstruct_n(0, 16), q_ref.reconstruct_n(0, 16))
        plain = real.index_factory(d, key)
        plain.train(xt)
        q_plain = real.downcast_index(real.extract_index_ivf(plain).quantizer)
        assert not np.array_equal(q_plain.reconstruct_n(0, 16), q_ref.reconstruct_n(0, 16))
