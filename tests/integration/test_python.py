"""The faissproxy package: FAISS programs run unchanged but for the import,
against the real server, with results compared to in-process faiss."""
import os
import subprocess
import sys

import faiss as real
import numpy as np
import pytest

from conftest import ROOT
from dropin import faissproxy




def data(n=500, d=16, nq=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype="float32"), rng.random((nq, d), dtype="float32")


def flat_program(faiss):
    xb, xq = data()
    index = faiss.IndexFlatL2(16)
    index.add(xb)
    D, I = index.search(xq, 5)
    lims, Dr, Ir = index.range_search(xq[:2], 1.0)
    rec = index.reconstruct(7)
    recn = index.reconstruct_n(10, 3)
    n = index.remove_ids(np.array([0, 1, 2], dtype="int64"))
    D2, I2 = index.search(xq, 5)
    return dict(D=D, I=I, lims=lims, Dr=Dr, Ir=Ir, rec=rec, recn=recn, n=n, D2=D2, I2=I2,
                ntotal=index.ntotal, d=index.d, trained=index.is_trained,
                metric=index.metric_type)


def ivf_program(faiss):
    xb, xq = data(2000, 16, 10, 1)
    quantizer = faiss.IndexFlatL2(16)
    index = faiss.IndexIVFFlat(quantizer, 16, 16)
    assert not index.is_trained
    index.train(xb)
    index.add(xb)
    D1, I1 = index.search(xq, 4)
    index.nprobe = 16
    D2, I2 = index.search(xq, 4)
    index.make_direct_map()
    rec = index.reconstruct(5)
    return dict(I1=I1, I2=I2, D2=D2, trained=index.is_trained, ntotal=index.ntotal, rec=rec)


def idmap_program(faiss):
    xb, xq = data(300, 8, 5, 2)
    index = faiss.IndexIDMap(faiss.IndexFlatIP(8))
    ids = np.arange(300, dtype="int64") * 7 + 3
    index.add_with_ids(xb, ids)
    a = index.remove_ids(faiss.IDSelectorRange(0, 100))
    b = index.remove_ids(faiss.IDSelectorBatch(np.array([703, 710], dtype="int64")))
    D, I = index.search(xq, 6)
    return dict(a=a, b=b, D=D, I=I, ntotal=index.ntotal)


def factory_program(faiss):
    xb, xq = data(1000, 16, 6, 3)
    out = {}
    for desc in ("Flat", "IVF8,Flat", "SQ8", "PCA8,Flat"):
        index = faiss.index_factory(16, desc, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(xb)
        index.add(xb)
        out[desc] = index.search(xq, 3)[1]
    return out


def binary_program(faiss):
    rng = np.random.default_rng(4)
    xb = rng.integers(0, 256, (400, 8), dtype="uint8")
    index = faiss.IndexBinaryFlat(64)
    index.add(xb)
    D, I = index.search(xb[:5], 4)
    return dict(D=D, I=I, d=index.d, ntotal=index.ntotal)


def same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            assert x.dtype == np.asarray(y).dtype, k
            assert np.array_equal(x, y), k
        else:
            assert x == y, k


@pytest.mark.parametrize("program", [flat_program, ivf_program, idmap_program, binary_program])
def test_programs_match_faiss(proxy, program):
    same(program(proxy), program(real))


def test_factory_matches(proxy):
    got, want = factory_program(proxy), factory_program(real)
    for desc in ("Flat", "IVF8,Flat", "SQ8"):
        assert np.array_equal(got[desc], want[desc]), desc
    # PCA's training sums in a BLAS order of its own: compare quality
    assert np.mean(got["PCA8,Flat"] == want["PCA8,Flat"]) > 0.8


def test_serialize_interop(proxy, tmp_path):
    xb, xq = data()
    index = proxy.IndexFlatL2(16)
    index.add(xb)
    proxy.write_index(index, str(tmp_path / "a.index"))
    local = real.read_index(str(tmp_path / "a.index"))
    assert np.array_equal(local.search(xq, 3)[1], index.search(xq, 3)[1])
    ref = real.IndexHNSWFlat(16, 8)
    ref.add(xb)
    up = proxy.deserialize_index(real.serialize_index(ref))
    up.hnsw.efSearch = 64
    ref.hnsw.efSearch = 64
    assert np.array_equal(up.search(xq, 3)[1], ref.search(xq, 3)[1])
    back = real.deserialize_index(proxy.serialize_index(up))
    assert back.ntotal == 500


def test_errors_like_faiss(proxy):
    index = proxy.IndexFlatL2(8)
    with pytest.raises(AssertionError):
        index.add(np.zeros((3, 9), dtype="float32"))
    ivf = proxy.IndexIVFFlat(proxy.IndexFlatL2(8), 8, 4)
    with pytest.raises(RuntimeError):
        ivf.add(np.zeros((3, 8), dtype="float32"))  # not trained
    hnsw = proxy.IndexHNSWFlat(8, 8)
    with pytest.raises(RuntimeError, match="not implemented"):
        hnsw.remove_ids(np.array([1], dtype="int64"))
    idmap = proxy.IndexIDMap(proxy.IndexFlatL2(8))
    with pytest.raises(RuntimeError):
        idmap.add(np.zeros((1, 8), dtype="float32"))


def test_connection_error(proxy):
    proxy.configure(server="tcp://127.0.0.1:1", timeout=0.3)
    try:
        with pytest.raises(ConnectionError, match="127.0.0.1:1"):
            proxy.IndexFlatL2(4)
    finally:
        proxy.configure(timeout=300)


def test_objects_are_deleted_when_dropped(proxy, server):
    index = proxy.IndexFlatL2(4)
    name = index.server_name
    c = server.client()
    assert name in [i["index_id"] for i in c.list()]
    del index
    proxy.IndexFlatL2(4)  # the next call deletes what was dropped
    assert name not in [i["index_id"] for i in c.list()]
    kept = proxy.IndexFlatL2(4).keep()
    name = kept.server_name
    del kept
    assert name in [i["index_id"] for i in c.list()]


def test_vector_db_api(server):
    db = faissproxy.connect(server.endpoint, api_key="")
    docs = db.index("pydocs", dimension=8)
    xb, _ = data(50, 8, 1, 5)
    keys = ["doc%d" % i for i in range(50)]
    meta = [{"lang": "en" if i % 2 else "fr", "n": i} for i in range(50)]
    assert docs.upsert(keys, xb, meta) == 50
    hits = docs.search(xb[3], k=3)
    assert hits[0][0].key == "doc3" and hits[0][0].distance == 0.0
    assert hits[0][0].metadata == {"lang": "en", "n": 3}
    hits = docs.search(xb[3], k=5, filter={"lang": "fr"})
    assert all(h.metadata["lang"] == "fr" for h in hits[0]) and len(hits[0]) == 5
    assert docs.delete(["doc3", "nope"]) == 1
    assert all(h.key != "doc3" for h in docs.search(xb[3], k=10)[0])
    again = faissproxy.connect(server.endpoint).index("pydocs")
    assert again.ntotal == 49
    db.drop("pydocs")


def test_falls_back_to_local_faiss_without_server():
    code = ("import faissproxy as faiss, faiss as real, numpy as np\n"
            "i = faiss.IndexFlatL2(4); i.add(np.eye(4, dtype='float32'))\n"
            "assert type(i) is real.IndexFlatL2, type(i)\n"
            "print(faiss.using_server(), i.search(np.eye(4, dtype='float32'), 1)[1].ravel())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAISS_PROXY_SERVER")}
    env["PYTHONPATH"] = os.path.join(ROOT, "python")
    env["FAISS_PROXY_LIB"] = os.environ["FAISS_PROXY_LIB"]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False [0 1 2 3]"


def types_program(faiss):
    xb, xq = data(1200, 16, 6, 6)
    out = {}
    made = {
        "ivfpq": faiss.IndexIVFPQ(faiss.IndexFlatL2(16), 16, 8, 4, 6),
        "pq": faiss.IndexPQ(16, 4, 6),
        "sq": faiss.IndexScalarQuantizer(16, faiss.ScalarQuantizer.QT_8bit),
        "sqfp16": faiss.IndexScalarQuantizer(16, faiss.ScalarQuantizer.QT_fp16),
        "ip": faiss.IndexFlat(16, faiss.METRIC_INNER_PRODUCT),
    }
    for name, index in made.items():
        if not index.is_trained:
            index.train(xb)
        index.add(xb)
        out[name] = index.search(xq, 4)[1]
    made["ivfpq"].nprobe = 8
    out["ivfpq8"] = made["ivfpq"].search(xq, 4)[1]
    return out


def test_index_types_match(proxy):
    same(types_program(proxy), types_program(real))


def test_hnsw_ef_search_on_server(proxy, server):
    xb, xq = data(1500, 16, 20, 7)
    index = proxy.IndexHNSWFlat(16, 8)
    index.add(xb)
    index.hnsw.efSearch = 128
    assert index.hnsw.efSearch == 128
    _, I = index.search(xq, 1)
    _, Ie = real.knn(xq, xb, 1)
    assert np.mean(I == Ie) >= 0.9


def test_local_helpers(proxy):
    x = np.random.default_rng(8).random((5, 4), dtype="float32")
    y = x.copy()
    proxy.normalize_L2(x)
    real.normalize_L2(y)
    assert np.allclose(x, y)
    xb, xq = data(100, 8, 3, 9)
    Dp, Ip = proxy.knn(xq, xb, 4)
    Dr, Ir = real.knn(xq, xb, 4)
    assert np.array_equal(Ip, Ir) and np.allclose(Dp, Dr)
