"""set_params keeps only settings an index can serve with: each value is
checked as per-search params are, before anything is logged, so no setting
can break an index's searches, now or after a restart."""
import faiss
import numpy as np
import pytest

from conftest import unique
from wire import rand


def _ivf(client, d=16, n=1000, seed=301):
    xb = rand(n, d, seed)
    name = unique()
    client.create(name, d, "IVF16,Flat")
    client.train(name, xb)
    client.add(name, xb)
    return name, xb


BAD = [
    ("nprobe", 0), ("nprobe", -3), ("nprobe", 2.5), ("nprobe", 2 ** 21),
    ("efSearch", 0), ("efSearch", 2 ** 62), ("efConstruction", 0),
    ("max_codes", -1), ("k_factor", 0.5), ("direct_map", 3), ("quantizer_efSearch", 0),
    ("verbose", 1), ("no_such_parameter", 1),
]


@pytest.mark.parametrize("name,value", BAD)
def test_bad_setting_refused_and_index_keeps_serving(fresh_server, name, value):
    c = fresh_server.client()
    ix, xb = _ivf(c)
    h = c.error({"operation": "set_params", "index_id": ix, "name": name, "value": value})
    assert h["error_type"] == "validation_error", h
    assert name in h["message"]
    # Nothing was logged: searches work now and after a restart, with FAISS's results.
    ref = faiss.index_factory(16, "IVF16,Flat")
    ref.train(xb)
    ref.add(xb)
    _, Ir = ref.search(xb[:10], 5)
    for _ in range(2):
        _, I, _ = c.search(ix, xb[:10], 5)
        assert np.array_equal(I, Ir)
        fresh_server.restart()
        c = fresh_server.client()


def test_efsearch_range_on_hnsw(client):
    d = 8
    xb = rand(300, d, 302)
    name = unique()
    client.create(name, d, "HNSW8")
    client.add(name, xb)
    h = client.error({"operation": "set_params", "index_id": name, "name": "efSearch", "value": 0})
    assert h["error_type"] == "validation_error"
    # every search still returns k hits
    _, I, _ = client.search(name, xb[:5], 10)
    assert (I >= 0).all()
    client.ok({"operation": "set_params", "index_id": name, "name": "efSearch", "value": 64})
    ref = faiss.index_factory(d, "HNSW8")
    ref.add(xb)
    ref.hnsw.efSearch = 64
    _, I, _ = client.search(name, xb[:5], 10)
    assert (I[:, 0] == np.arange(5)).all()


def test_good_settings_still_accepted(client):
    name, xb = _ivf(client)
    for pname, value in (("nprobe", 16), ("max_codes", 0), ("max_codes", 1000),
                         ("direct_map", 1)):
        client.ok({"operation": "set_params", "index_id": name, "name": pname, "value": value})
    ref = faiss.index_factory(16, "IVF16,Flat")
    ref.train(xb)
    ref.add(xb)
    ref.nprobe = 16
    ref.max_codes = 1000
    _, Ir = ref.search(xb[:10], 5)
    _, I, _ = client.search(name, xb[:10], 5)
    assert np.array_equal(I, Ir)


def test_per_search_efsearch_on_hnsw_is_applied(client):
    """FAISS 1.7.3's IndexHNSW ignores SearchParametersHNSW.efSearch; the server
    must still answer as the index does with that efSearch set. The reference
    is the server's own graph (exported), so results must be identical."""
    d = 16
    xb, xq = rand(3000, d, 303), rand(50, d, 304)
    name = unique()
    client.create(name, d, "HNSW8")
    client.add(name, xb)
    _, data, _ = client.ok({"operation": "export_index", "index_id": name})
    ref = faiss.deserialize_index(np.frombuffer(data, dtype="uint8").copy())
    _, Idefault = ref.search(xq, 10)
    seen_difference = False
    for ef in (1, 16, 256):
        ref.hnsw.efSearch = ef
        Dr, Ir = ref.search(xq, 10)
        seen_difference |= not np.array_equal(Ir, Idefault)
        D, I, _ = client.search(name, xq, 10, params={"efSearch": ef})
        assert np.array_equal(I, Ir) and np.array_equal(D, Dr), ef
    assert seen_difference  # efSearch changes FAISS's answers: the comparison means something
    # the index's own setting is untouched by per-search values
    _, I, _ = client.search(name, xq, 10)
    assert np.array_equal(I, Idefault)
