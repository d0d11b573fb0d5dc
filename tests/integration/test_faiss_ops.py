"""FAISS's index API beyond the seed: range_search, reconstruct(_n),
remove_ids, reset, set_params, export_index/import_index, each compared with
in-process FAISS doing the same thing."""
import faiss
import numpy as np
import pytest

from conftest import unique
from wire import rand


def range_search(c, name, q, radius, filt=None, include_metadata=None):
    q = np.ascontiguousarray(q, dtype="float32").reshape(-1, q.shape[-1])
    h = {"operation": "range_search", "index_id": name, "radius": radius,
         "vector_shape": list(q.shape)}
    if include_metadata is not None:
        h["include_metadata"] = include_metadata
    rh, d, m = c.ok(h, q.tobytes(), filt)
    nq, nres = rh["nq"], rh["nres"]
    assert nq == q.shape[0] and len(d) == (nq + 1) * 8 + nres * 12
    lims = np.frombuffer(d[:(nq + 1) * 8], dtype="<i8")
    labels = np.frombuffer(d[(nq + 1) * 8:(nq + 1) * 8 + nres * 8], dtype="<i8")
    dist = np.frombuffer(d[(nq + 1) * 8 + nres * 8:], dtype="<f4")
    return lims, dist, labels, m


def reconstruct_n(c, name, i0, n):
    h, d, _ = c.ok({"operation": "reconstruct_n", "index_id": name, "i0": i0, "n": n})
    return np.frombuffer(d, dtype="<f4").reshape(h["shape"])


def export(c, name):
    _, d, info = c.ok({"operation": "export_index", "index_id": name})
    return faiss.deserialize_index(np.frombuffer(d, dtype="uint8").copy()), info


def import_(c, name, index, index_type=None):
    h = {"operation": "import_index", "index_id": name}
    if index_type:
        h["index_type"] = index_type
    return c.ok(h, faiss.serialize_index(index).tobytes())[2]


@pytest.mark.parametrize("metric", [faiss.METRIC_L2, faiss.METRIC_INNER_PRODUCT])
def test_range_search_flat_exact(client, metric):
    d = 8
    xb, xq = rand(500, d, 90), rand(6, d, 91)
    name = unique()
    client.create(name, d, "Flat", "IP" if metric == faiss.METRIC_INNER_PRODUCT else "L2")
    client.add(name, xb)
    ref = faiss.IndexFlat(d, metric)
    ref.add(xb)
    radius = 0.3 if metric == faiss.METRIC_L2 else 2.4
    L, D, I = ref.range_search(xq, radius)
    lims, dist, labels, meta = range_search(client, name, xq, radius)
    assert lims.tolist() == L.tolist() and lims[-1] > 0
    assert np.array_equal(labels, I) and np.array_equal(dist, D)
    assert meta is None


def test_range_search_hides_deleted_and_filters(client):
    d = 4
    xb = rand(300, d, 92)
    name = unique()
    client.create(name, d)
    client.add(name, xb, [{"id": i, "metadata": {"odd": i % 2}} for i in range(300)])
    client.delete(name, list(range(0, 300, 3)))
    lims, dist, labels, meta = range_search(client, name, xb[:4], 0.2)
    ref = faiss.IndexFlatL2(d)
    ref.add(xb)
    L, D, I = ref.range_search(xb[:4], 0.2)
    keep = I % 3 != 0
    assert sorted(labels.tolist()) == sorted(I[keep].tolist())
    assert [h["id"] for h in meta] == labels.tolist()
    lims, dist, labels, meta = range_search(client, name, xb[:4], 0.2, filt={"odd": 1})
    assert sorted(labels.tolist()) == sorted(i for i in I[keep].tolist() if i % 2)


def test_range_search_unsupported_type_is_faiss_error(client):
    name = unique()
    client.create(name, 4, "HNSW8")
    client.add(name, rand(10, 4, 93))
    r = client.error({"operation": "range_search", "index_id": name, "radius": 1.0,
                      "vector_shape": [1, 4]}, rand(1, 4, 94).tobytes())
    assert r["error_type"] == "faiss_error" and "not implemented" in r["message"]
    for bad in (float("nan"), "1", None):
        h = {"operation": "range_search", "index_id": name, "vector_shape": [1, 4]}
        if bad is not None:
            h["radius"] = bad
        assert client.error(h, rand(1, 4, 94).tobytes())["error_type"] == "validation_error"


def test_reconstruct(client):
    d = 8
    xb = rand(50, d, 95)
    name = unique()
    client.create(name, d)
    client.add(name, xb)
    h, data, _ = client.ok({"operation": "reconstruct", "index_id": name, "label": 7})
    assert h["shape"] == [1, d] and np.array_equal(np.frombuffer(data, "<f4"), xb[7])
    assert np.array_equal(reconstruct_n(client, name, 10, 5), xb[10:15])
    assert reconstruct_n(client, name, 0, 0).shape == (0, d)
    client.delete(name, 12)
    r = client.error({"operation": "reconstruct_n", "index_id": name, "i0": 10, "n": 5})
    assert r["error_type"] == "not_found"
    r = client.error({"operation": "reconstruct", "index_id": name, "label": 12})
    assert r["error_type"] == "not_found"


def test_reconstruct_ivf_needs_direct_map_like_faiss(client):
    d = 8
    xb = rand(400, d, 96)
    name = unique()
    client.create(name, d, "IVF4,Flat")
    client.train(name, xb)
    client.add(name, xb)
    ref = faiss.index_factory(d, "IVF4,Flat")
    ref.train(xb)
    ref.add(xb)
    with pytest.raises(RuntimeError) as exc:
        ref.reconstruct(3)
    r = client.error({"operation": "reconstruct", "index_id": name, "label": 3})
    assert r["error_type"] == "faiss_error"
    assert r["message"].split(":")[-1].strip() in str(exc.value)
    # reconstruct_n scans the lists, as FAISS's does
    assert np.array_equal(reconstruct_n(client, name, 5, 10), ref.reconstruct_n(5, 10))


def served_and_ref(client, desc, xb):
    """A served index and an in-process one of the same description, both trained on
    and holding xb."""
    name = unique()
    client.create(name, xb.shape[1], desc)
    ref = faiss.index_factory(xb.shape[1], desc)
    client.train(name, xb)
    ref.train(xb)
    client.add(name, xb)
    ref.add(xb)
    return name, ref


def test_reconstruct_n_through_a_transform_is_faiss(client):
    # FAISS takes the rows back through the PCA in one product: so does the server (to the
    # last bit where BLAS rounds a row by the size of the product it is in)
    d = 16
    xb = rand(400, d, 102)
    name, ref = served_and_ref(client, "PCA8,IVF4,Flat", xb)
    for i0, n in ((0, 400), (17, 150), (399, 1)):
        got = reconstruct_n(client, name, i0, n)
        np.testing.assert_array_equal(got.view("uint32"), ref.reconstruct_n(i0, n).view("uint32"))


def search_and_reconstruct(c, name, q, k, **extra):
    h = {"operation": "search", "index_id": name, "k": k, "vector_shape": list(q.shape),
         "reconstruct": True, **extra}
    rh, data, _ = c.ok(h, q.tobytes())
    nq, d = q.shape
    assert rh["shape"] == [nq, k] and len(data) == nq * k * (12 + 4 * d)
    D = np.frombuffer(data, "<f4", nq * k).reshape(nq, k)
    I = np.frombuffer(data, "<i8", nq * k, offset=4 * nq * k).reshape(nq, k)
    R = np.frombuffer(data, "<f4", nq * k * d, offset=12 * nq * k).reshape(nq, k, d)
    return D, I, R


@pytest.mark.parametrize("desc", ["IVF4,PQ4x4", "PCA8,IVF4,Flat", "HNSW8"])
def test_search_and_reconstruct_is_faiss(client, desc):
    # "reconstruct": FAISS's search_and_reconstruct of the served index, vectors and all;
    # an IVF needs no direct map, and k past what the probed lists hold gives FAISS's
    # missing hits (label -1, 0xFF bytes, through the PCA's reverse too)
    d = 16
    xb, xq = rand(400, d, 97), rand(30, d, 98)
    name, ref = served_and_ref(client, desc, xb)
    if desc.startswith("HNSW"):
        # (FAISS's HNSW cannot remove, and a graph built on several threads is not the
        # same twice: the served graph itself)
        ref = export(client, name)[0]
    else:
        client.ok({"operation": "remove_ids", "index_id": name, "ids": [12]})
        ref.remove_ids(np.array([12], dtype="int64"))
    Dr, Ir, Rr = ref.search_and_reconstruct(xq, 150)
    # (FAISS's answer, with its missing hits: not completed)
    D, I, R = search_and_reconstruct(client, name, xq, 150, complete=False)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(R.view("uint32"), Rr.view("uint32"))
    assert (Ir == -1).any()
    assert (Ir == 12).any() == desc.startswith("HNSW")


def test_search_and_reconstruct_refusals(client):
    d = 16
    xb = rand(300, d, 99)
    name, fs, binary = unique(), unique(), unique()
    client.create(name, d)
    client.add(name, xb)
    q = xb[:2]
    h = {"operation": "search", "index_id": name, "k": 3, "vector_shape": [2, d]}
    assert client.error({**h, "reconstruct": 1}, q.tobytes())["error_type"] == "validation_error"
    # the reply, vectors included, is held to the message size limit
    many = xb[:200]
    big = {**h, "k": 100000, "vector_shape": [200, d], "reconstruct": True}
    r = client.error(big, many.tobytes())
    assert r["error_type"] == "limit_exceeded" and "with their vectors" in r["message"]
    # FAISS 1.7.3's search_and_reconstruct reads a null list scanner on IVF fast-scan
    # indexes (a crash in process): refused, and the server serves on
    client.create(fs, d, "IVF4,PQ8x4fs")
    client.train(fs, xb)
    client.add(fs, xb)
    r = client.error({**h, "index_id": fs, "reconstruct": True}, q.tobytes())
    assert r["error_type"] == "unsupported" and "fast-scan" in r["message"]
    client.create(binary, 64, "BFlat")
    r = client.error({"operation": "search", "index_id": binary, "k": 1, "vector_shape": [1, 8],
                      "dtype": "uint8", "reconstruct": True}, bytes(8))
    assert r["error_type"] == "unsupported"
    assert search_and_reconstruct(client, name, q, 3)[1][:, 0].tolist() == [0, 1]


def test_uncompleted_search_is_faiss_after_remove_ids(client):
    # "complete": false: FAISS's answer after its own remove_ids, short queries left short;
    # by default the server completes them (k hits whenever k vectors are live)
    d = 16
    xb, xq = rand(400, d, 100), rand(30, d, 101)
    name, ref = served_and_ref(client, "IVF4,Flat", xb)
    gone = list(range(0, 400, 7))
    client.ok({"operation": "remove_ids", "index_id": name, "ids": gone})
    ref.remove_ids(np.array(gone, dtype="int64"))
    Dr, Ir = ref.search(xq, 120)
    h = {"operation": "search", "index_id": name, "k": 120, "vector_shape": [30, d]}
    rh, data, _ = client.ok({**h, "complete": False}, xq.tobytes())
    np.testing.assert_array_equal(np.frombuffer(data, "<i8", offset=30 * 120 * 4), Ir.ravel())
    np.testing.assert_array_equal(np.frombuffer(data, "<f4", 30 * 120), Dr.ravel())
    assert (Ir == -1).any() and not np.isin(Ir, gone).any()
    D, I, _ = client.search(name, xq, 120)
    assert (I >= 0).all() and not np.isin(I, gone).any()
    assert client.error({**h, "complete": 0}, xq.tobytes())["error_type"] == "validation_error"


def test_remove_ids_flat_renumbers_like_faiss(client):
    d = 8
    xb, xq = rand(100, d, 97), rand(5, d, 98)
    name = unique()
    client.create(name, d)
    client.add(name, xb)
    ref = faiss.IndexFlatL2(d)
    ref.add(xb)
    for ids in ([3, 50, 99, 1000], [0]):
        n = ref.remove_ids(np.array(ids, dtype="int64"))
        m = client.ok({"operation": "remove_ids", "index_id": name, "ids": ids})[2]
        assert m == {"removed": n, "ntotal": ref.ntotal}
    n = ref.remove_ids(faiss.IDSelectorRange(10, 20))
    m = client.ok({"operation": "remove_ids", "index_id": name, "range": [10, 20]})[2]
    assert m == {"removed": n, "ntotal": ref.ntotal}
    extra = rand(3, d, 99)
    ref.add(extra)
    client.add(name, extra)
    Dr, Ir = ref.search(xq, 10)
    D, I, _ = client.search(name, xq, 10)
    assert np.array_equal(I, Ir) and np.allclose(D, Dr)
    assert np.array_equal(reconstruct_n(client, name, 0, ref.ntotal),
                          ref.reconstruct_n(0, ref.ntotal))


def test_remove_ids_idmap_keeps_labels(client):
    d = 8
    xb, xq = rand(60, d, 100), rand(4, d, 101)
    ids = np.arange(60, dtype="int64") * 10 + 7
    name = unique()
    client.create(name, d, "IDMap,Flat")
    client.add(name, xb, labels=ids)
    ref = faiss.IndexIDMap(faiss.IndexFlatL2(d))
    ref.add_with_ids(xb, ids)
    sel = np.array([17, 27, 5], dtype="int64")
    assert ref.remove_ids(sel) == 2
    m = client.ok({"operation": "remove_ids", "index_id": name, "ids": sel.tolist()})[2]
    assert m["removed"] == 2
    Dr, Ir = ref.search(xq, 8)
    D, I, _ = client.search(name, xq, 8)
    assert np.array_equal(I, Ir)


def test_remove_ids_hnsw_fails_like_faiss(client):
    name = unique()
    client.create(name, 4, "HNSW8")
    client.add(name, rand(10, 4, 102))
    ref = faiss.IndexHNSWFlat(4, 8)
    with pytest.raises(RuntimeError) as exc:
        ref.remove_ids(np.array([1], dtype="int64"))
    r = client.error({"operation": "remove_ids", "index_id": name, "ids": [1]})
    assert r["error_type"] == "faiss_error" and r["message"] in str(exc.value)
    assert client.info(name)["ntotal"] == 10
    # the seed's delete_vector still works on HNSW (tombstones)
    assert client.delete(name, 1)["deleted"] == 1
    for bad in ({}, {"ids": [1], "range": [0, 1]}, {"ids": ["a"]}, {"range": [1]}):
        h = dict(bad, operation="remove_ids", index_id=name)
        # malformed requests are refused as such before FAISS is asked anything
        assert client.error(h)["error_type"] == "validation_error", bad


def test_reset(client):
    d = 8
    xb = rand(300, d, 103)
    name = unique()
    client.create(name, d, "IVF4,Flat")
    client.train(name, xb)
    client.add(name, xb, [{"id": "k%d" % i} for i in range(300)])
    m = client.ok({"operation": "reset", "index_id": name})[2]
    assert m == {"ntotal": 0}
    info = client.info(name)
    assert info["ntotal"] == 0 and info["is_trained"] is True and info["has_keys"] is False
    client.add(name, xb[:5])
    _, I, _ = client.search(name, xb[:5], 1, params={"nprobe": 4})
    assert list(I[:, 0]) == [0, 1, 2, 3, 4]


def test_set_params(client):
    d = 16
    xb, xq = rand(2000, d, 104), rand(20, d, 105)
    name = unique()
    client.create(name, d, "IVF32,Flat")
    client.train(name, xb)
    client.add(name, xb)
    ref = faiss.index_factory(d, "IVF32,Flat")
    ref.train(xb)
    ref.add(xb)
    client.ok({"operation": "set_params", "index_id": name, "name": "nprobe", "value": 7})
    faiss.ParameterSpace().set_index_parameter(ref, "nprobe", 7)
    Dr, Ir = ref.search(xq, 5)
    D, I, _ = client.search(name, xq, 5)
    assert np.array_equal(I, Ir)
    r = client.error({"operation": "set_params", "index_id": name, "name": "efSearch",
                      "value": 3})
    assert r["error_type"] == "validation_error"
    for bad in ({"name": "nprobe"}, {"name": "a=b", "value": 1}, {"value": 1},
                {"name": "nprobe", "value": "7"}):
        h = dict(bad, operation="set_params", index_id=name)
        assert client.error(h)["error_type"] == "validation_error", bad


def test_export_matches_faiss(client):
    d = 8
    xb, xq = rand(300, d, 106), rand(5, d, 107)
    for index_type in ("Flat", "HNSW8", "IVF4,Flat", "SQ8", "PQ2x6np", "PCA4,Flat"):
        name = unique()
        info = client.create(name, d, index_type)
        if not info["is_trained"]:
            client.train(name, xb)
        client.add(name, xb)
        idx, meta = export(client, name)
        assert idx.ntotal == 300 and meta["index_id"] == name
        Dr, Ir = idx.search(xq, 5)
        D, I, _ = client.search(name, xq, 5)
        assert np.array_equal(I, Ir), index_type
        assert np.allclose(D, Dr, rtol=1e-5), index_type
        # and the server takes it back
        back = unique()
        import_(client, back, idx, index_type)
        D2, I2, _ = client.search(back, xq, 5)
        assert np.array_equal(I2, Ir), index_type


def test_export_after_deletes_and_labels(client):
    d = 8
    xb, xq = rand(100, d, 108), rand(5, d, 109)
    name = unique()
    client.create(name, d)
    client.add(name, xb)
    client.delete(name, list(range(0, 100, 2)))
    idx, _ = export(client, name)
    assert idx.ntotal == 50
    D, I, _ = client.search(name, xq, 5)
    Dr, Ir = idx.search(xq, 5)
    # the survivors keep their labels: an IDMap around the compacted flat index
    assert isinstance(faiss.downcast_index(idx), faiss.IndexIDMap)
    assert np.array_equal(Ir, I) and np.all(I % 2 == 1)
    # IVF carries the labels itself
    name = unique()
    client.create(name, d, "IVF4,Flat")
    client.train(name, xb)
    client.add(name, xb, labels=np.arange(100) + 1000)
    client.delete(name, [1000, 1001])
    idx, _ = export(client, name)
    faiss.extract_index_ivf(idx).nprobe = 4
    client.ok({"operation": "set_params", "index_id": name, "name": "nprobe", "value": 4})
    Dr, Ir = idx.search(xq, 5)
    D, I, _ = client.search(name, xq, 5)
    assert np.array_equal(I, Ir) and I.min() >= 1002
    # FAISS cannot remove from HNSW: the export is built again from the live
    # codes, under their labels; a search visiting every vector (efSearch past
    # ntotal) answers as the server's does
    for index_type in ("HNSW8", "HNSW8,SQ8"):
        name = unique()
        info = client.create(name, d, index_type)
        if not info["is_trained"]:
            client.train(name, xb)
        client.add(name, xb)
        client.delete(name, [3, 50])
        idx, _ = export(client, name)
        assert isinstance(faiss.downcast_index(idx), faiss.IndexIDMap) and idx.ntotal == 98
        assert 3 not in faiss.vector_to_array(faiss.downcast_index(idx).id_map)
        faiss.downcast_index(faiss.downcast_index(idx).index).hnsw.efSearch = 128
        Dr, Ir = idx.search(xq, 5)
        D, I, _ = client.search(name, xq, 5, params={"efSearch": 128})
        assert np.array_equal(Ir, I) and np.array_equal(Dr, D), index_type


def test_import_idmap_and_errors(client):
    d = 8
    xb, xq = rand(40, d, 110), rand(3, d, 111)
    ref = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    ref.add_with_ids(xb, np.arange(40, dtype="int64") * 3)
    name = unique()
    info = import_(client, name, ref)
    assert info["ntotal"] == 40 and info["metric"] == "IP" and info["dimension"] == d
    Dr, Ir = ref.search(xq, 4)
    D, I, _ = client.search(name, xq, 4)
    assert np.array_equal(I, Ir) and np.array_equal(D, Dr)
    idx, _ = export(client, name)
    assert np.array_equal(idx.search(xq, 4)[1], Ir)
    e = client.error({"operation": "import_index", "index_id": name},
                     faiss.serialize_index(ref).tobytes())
    assert e["error_type"] == "already_exists"
    import struct
    flat = faiss.serialize_index(faiss.IndexFlatL2(4)).tobytes()
    bomb = (b"IxF2" + struct.pack("<iqqq?i", 4, 1 << 36, 1 << 20, 1 << 20, True, 1)
            + struct.pack("<Q", 1 << 38))  # an IndexFlat claiming 256 GiB of codes
    for junk in (b"", b"garbage!", b"IxF2" + b"\x00" * 3, flat[:len(flat) // 2], bomb,
                 flat[:-1]):
        e = client.error({"operation": "import_index", "index_id": unique()}, junk)
        assert e["error_type"] == "validation_error"
    assert client.ping()["protocol"] == 1


def test_faiss_ops_are_durable(fresh_server):
    c = fresh_server.client()
    d = 8
    xb = rand(300, d, 112)
    c.create("f", d)
    c.add("f", xb[:100])
    c.ok({"operation": "remove_ids", "index_id": "f", "ids": [5, 6]})
    c.create("v", d, "IVF8,Flat")
    c.train("v", xb)
    c.add("v", xb)
    c.ok({"operation": "set_params", "index_id": "v", "name": "nprobe", "value": 8})
    c.create("r", d)
    c.add("r", xb[:10])
    c.ok({"operation": "reset", "index_id": "r"})
    ref = faiss.IndexFlatL2(d)
    ref.add(xb)
    import_(c, "imp", ref)
    before = [c.search(n, xb[:3], 3) for n in ("f", "v", "imp")]
    fresh_server.kill9()
    fresh_server.start()
    c = fresh_server.client()
    assert c.info("f")["ntotal"] == 98 and c.info("r")["ntotal"] == 0
    assert c.info("imp")["ntotal"] == 300
    after = [c.search(n, xb[:3], 3) for n in ("f", "v", "imp")]
    for (D1, I1, _), (D2, I2, _) in zip(before, after):
        assert np.array_equal(I1, I2) and np.array_equal(D1, D2)


@pytest.mark.parametrize("desc", ["OPQ2,PQ2x4", "OPQ4_8,IVF4,PQ4x4"])
def test_opq_trains_as_faiss_trains_it(fresh_server, desc):
    """FAISS 1.7.3 writes an OPQ matrix as a plain linear transform, which its train leaves
    untrained: an OPQ index copied through FAISS's bytes before its training (as a train is
    logged as its result) failed every train with "Transformation not trained yet". Trained
    as FAISS trains it, also after a restart before the training."""
    c = fresh_server.client()
    name = unique("opq")
    c.ok({"operation": "create_index", "index_id": name, "dimension": 8, "index_type": desc})
    fresh_server.restart()
    c = fresh_server.client()
    xt, xb, xq = rand(400, 8, 61), rand(100, 8, 62), rand(5, 8, 63)
    c.ok({"operation": "train", "index_id": name, "vector_shape": [400, 8]}, xt.tobytes())
    c.add(name, xb)
    ref = faiss.index_factory(8, desc)
    ref.train(xt)
    ref.add(xb)
    served = faiss.deserialize_index(np.frombuffer(
        c.ok({"operation": "export_index", "index_id": name})[1], dtype="uint8"))
    opq = faiss.downcast_VectorTransform(ref.chain.at(0))
    got = faiss.downcast_VectorTransform(served.chain.at(0))
    np.testing.assert_array_equal(faiss.vector_to_array(got.A), faiss.vector_to_array(opq.A))
    if "IVF" in desc:
        faiss.extract_index_ivf(ref).nprobe = c.info(name)["params"]["nprobe"]
    D, I, _ = c.search(name, xq, 5)
    Dr, Ir = ref.search(xq, 5)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
