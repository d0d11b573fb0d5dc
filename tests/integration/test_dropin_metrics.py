"""FAISS's extra metrics (L1, Linf, Lp with its metric_arg, Canberra, BrayCurtis,
JensenShannon) through the Python drop-in and on the wire: flat indexes and HNSW over flat
storage answer as in-process faiss does, metric_arg reaches the server and survives a
restart, what FAISS refuses is refused with its error, and index types FAISS computes these
metrics for nowhere are refused naming the metric."""

import faiss as real
import numpy as np
import pytest

from conftest import unique

import dropin  # noqa: F401 (puts faissproxy on the path)
import faissproxy

EXTRA = [("L1", real.METRIC_L1, 0.0), ("Linf", real.METRIC_Linf, 0.0),
         ("Lp", real.METRIC_Lp, 1.5), ("Lp", real.METRIC_Lp, 3.0),
         ("Canberra", real.METRIC_Canberra, 0.0), ("BrayCurtis", real.METRIC_BrayCurtis, 0.0),
         ("JensenShannon", real.METRIC_JensenShannon, 0.0)]


def data(n, d, nq, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype="float32"), rng.random((nq, d), dtype="float32")


def flat_pair(fp, d, mt, arg):
    """A served flat index of metric mt and its in-process faiss twin."""
    served, local = fp.IndexFlat(d, mt), real.IndexFlat(d, mt)
    if arg:
        served.metric_arg = arg
        local.metric_arg = arg
    return served, local


@pytest.mark.parametrize("name,mt,arg", EXTRA, ids=["%s-%g" % (e[0], e[2]) for e in EXTRA])
def test_flat_extra_metric_answers_as_faiss(fp, name, mt, arg):
    xb, xq = data(500, 12, 30, 1)
    served, local = flat_pair(fp, 12, mt, arg)
    assert served.metric_type == mt and served.metric_arg == np.float32(arg)
    served.add(xb)
    local.add(xb)
    D, I = served.search(xq, 7)
    Dr, Ir = local.search(xq, 7)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    # FAISS's bytes carry the metric and its argument, both ways
    back = real.deserialize_index(fp.serialize_index(served))
    assert (back.metric_type, back.metric_arg) == (mt, np.float32(arg))
    imported = fp.deserialize_index(real.serialize_index(local))
    assert imported.metric_type == mt and imported.metric_arg == np.float32(arg)
    D2, I2 = imported.search(xq, 7)
    np.testing.assert_array_equal(I2, Ir)
    np.testing.assert_array_equal(D2, Dr)


def test_factory_and_hnsw_constructors_take_extra_metrics(fp):
    xb, xq = data(800, 10, 40, 2)
    exact = real.IndexFlat(10, real.METRIC_L1)
    exact.add(xb)
    _, Iex = exact.search(xq, 10)
    dis = real.pairwise_distances(xq, xb, real.METRIC_L1)
    made = [fp.IndexHNSW(fp.IndexFlat(10, fp.METRIC_L1)),
            fp.IndexHNSWFlat(10, 16, fp.METRIC_L1),
            fp.index_factory(10, "HNSW16", fp.METRIC_L1),
            fp.index_factory(10, "Flat", fp.METRIC_L1)]
    for ix in made:
        assert ix.metric_type == real.METRIC_L1
        ix.add(xb)
        D, I = ix.search(xq, 10)
        for q in range(len(xq)):  # the distances are FAISS's L1 distances of the hits
            np.testing.assert_array_equal(D[q], dis[q, I[q]])
        recall = np.mean([len(set(I[q]) & set(Iex[q])) / 10 for q in range(len(xq))])
        assert recall > 0.9
        local = real.deserialize_index(fp.serialize_index(ix))
        assert local.metric_type == real.METRIC_L1
    hnsw = made[0]
    assert hnsw.storage.ntotal == 800 and hnsw.metric_arg == 0
    with pytest.raises(RuntimeError, match="storage"):
        hnsw.storage.search(xq, 1)


def test_hnsw_over_lp_storage_uses_its_metric_arg(fp):
    xb, xq = data(600, 8, 20, 3)
    storage = fp.IndexFlat(8, fp.METRIC_Lp)
    storage.metric_arg = 4.0
    ix = fp.IndexHNSW(storage, 16)
    ix.add(xb)
    D, I = ix.search(xq, 5)
    local_storage = real.IndexFlat(8, real.METRIC_Lp)
    local_storage.metric_arg = 4.0
    dis = real.pairwise_distances(xq, xb, real.METRIC_Lp, 4.0)
    for q in range(len(xq)):
        np.testing.assert_array_equal(D[q], dis[q, I[q]])
    read = real.deserialize_index(fp.serialize_index(ix))  # owns what downcast gives
    local = real.downcast_index(read)
    assert real.downcast_index(local.storage).metric_arg == 4.0 and local.metric_arg == 0


def test_deleted_vectors_are_hidden_without_faiss_selector(fp):
    # FAISS's flat search takes no selector with these metrics: the server hides the
    # vectors an IDMap removed by itself, and answers as FAISS's IDMap does
    xb, xq = data(400, 8, 25, 4)
    ids = np.arange(400, dtype="int64") * 3 + 5
    served = fp.IndexIDMap(fp.IndexFlat(8, fp.METRIC_Canberra))
    local = real.IndexIDMap(real.IndexFlat(8, real.METRIC_Canberra))
    for ix in (served, local):
        ix.add_with_ids(xb, ids)
        assert ix.remove_ids(ids[::2]) == 200
    D, I = served.search(xq, 6)
    Dr, Ir = local.search(xq, 6)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)


def test_what_faiss_refuses_is_refused(fp):
    xb, xq = data(100, 8, 5, 5)
    served, local = flat_pair(fp, 8, real.METRIC_L1, 0)
    served.add(xb)
    local.add(xb)
    sel = fp.SearchParameters(sel=fp.IDSelectorRange(0, 50))
    with pytest.raises(RuntimeError) as want:
        local.search(xq, 3, params=real.SearchParameters(sel=real.IDSelectorRange(0, 50)))
    with pytest.raises(RuntimeError, match="sel") as got:
        served.search(xq, 3, params=sel)
    assert "'!sel' failed" in str(want.value) and "'!sel' failed" in str(got.value)
    with pytest.raises(RuntimeError, match="metric type not supported"):
        local.range_search(xq, 1.0)
    with pytest.raises(RuntimeError, match="metric type not supported"):
        served.range_search(xq, 1.0)


def test_unserved_types_and_settings_raise_naming_them(fp):
    with pytest.raises(RuntimeError, match="L1 metric is served on flat indexes"):
        fp.index_factory(8, "IVF4,Flat", fp.METRIC_L1)
    with pytest.raises(RuntimeError, match="Linf metric is served on flat indexes"):
        fp.IndexPQ(8, 2, 4, fp.METRIC_Linf)
    with pytest.raises(RuntimeError, match="not one of FAISS"):
        fp.IndexFlat(8, 7)
    l2 = fp.IndexFlatL2(8)
    with pytest.raises(NotImplementedError, match="metric_arg"):
        l2.metric_arg = 2.0
    lp = fp.IndexFlat(8, fp.METRIC_Lp)
    lp.add(np.ones((2, 8), "float32"))
    with pytest.raises(NotImplementedError, match="holding vectors"):
        lp.metric_arg = 2.0
    hnsw = fp.IndexHNSWFlat(8, 8, fp.METRIC_Lp)
    with pytest.raises(NotImplementedError, match="IndexFlat only"):
        hnsw.metric_arg = 2.0


def test_wire_metric_names_and_metric_arg(client):
    name = unique()
    m = client.create(name, 4, "Flat", "BrayCurtis")
    assert m["metric"] == "BrayCurtis" and m["metric_arg"] == 0
    name = unique()
    _, _, m = client.ok({"operation": "create_index", "index_id": name, "dimension": 4,
                         "index_type": "HNSW8", "metric": "Lp", "metric_arg": 2.5})
    assert m["metric"] == "Lp" and "metric_arg" in m
    assert client.info(name)["metric"] == "Lp"
    m = client.create(unique(), 4, "Flat", "L2")
    assert "metric_arg" not in m
    for header, what in [({"metric": "Chebyshev"}, "metric must be"),
                         ({"metric": "L2", "metric_arg": 2.0}, "metric_arg applies"),
                         ({"metric": "Lp", "metric_arg": "two"}, "metric_arg must be"),
                         ({"metric": "L1", "index_type": "IVF4,Flat"}, "L1 metric"),
                         ({"metric": "L1", "index_type": "IndexFlatIP"}, "contradicts")]:
        h = {"operation": "create_index", "index_id": unique(), "dimension": 4,
             "index_type": "Flat"}
        h.update(header)
        err = client.error(h)
        assert err["error_type"] == "validation_error" and what in err["message"], err


def test_metric_arg_and_metric_survive_restarts(make_server):
    s = make_server()
    faissproxy.configure(server=s.endpoint, api_key="")
    try:
        xb, xq = data(300, 8, 20, 6)
        served, local = flat_pair(faissproxy, 8, real.METRIC_Lp, 3.0)
        served.keep()
        hnsw = faissproxy.IndexHNSWFlat(8, 8, faissproxy.METRIC_Canberra)
        hnsw.keep()
        hnsw.add(xb)
        Dh, Ih = hnsw.search(xq, 4)
        local.add(xb)
        # a snapshot (clean stop) after the first half, the log replayed (kill) after both
        for hard, part in ((False, xb[:150]), (True, xb[150:])):
            served.add(part)
            s.restart(hard=hard)
            faissproxy.configure(server=s.endpoint, api_key="")
        info = faissproxy._remote._index_meta(served.server_name)
        assert info["metric"] == "Lp" and info["metric_arg"] == 3.0 and info["ntotal"] == 300
        assert faissproxy._remote._index_meta(hnsw.server_name)["metric"] == "Canberra"
        D, I = served.search(xq, 5)
        Dr, Ir = local.search(xq, 5)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_array_equal(D, Dr)
        D, I = hnsw.search(xq, 4)
        np.testing.assert_array_equal(I, Ih)
        np.testing.assert_array_equal(D, Dh)
    finally:
        faissproxy._lib.Config.server = None
        faissproxy.configure()
