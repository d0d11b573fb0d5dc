"""Caller keys and metadata (the seed's {"id", "metadata"} entries): upsert,
filters, delete by key, on every index type, HNSW included. A deleted or
replaced vector never comes back, and a search that hides tombstones or
filters still returns k hits when k live matches exist."""
import numpy as np
import pytest

from conftest import unique
from wire import rand

TYPES = ["Flat", "IndexFlatIP", "HNSW16", "IVF8,Flat", "PQ4np", "SQ8", "IDMap,Flat",
         "PCA8,Flat", "IVF8,PQ4x4fs", "IDMap2,HNSW8", "IVF4,SQ8"]


def make(client, index_type, x):
    name = unique()
    info = client.create(name, x.shape[1], index_type)
    if not info["is_trained"]:
        client.train(name, x)
    return name


def items(n, start=0, tag=None):
    return [{"id": "key%d" % i, "metadata": {"n": i, "group": tag or ("even" if i % 2 == 0
                                                                      else "odd")}}
            for i in range(start, start + n)]


def test_keys_and_metadata_in_hits(client):
    x = rand(20, 8, 30)
    name = make(client, "Flat", x)
    m = client.add(name, x, items(20))
    assert m == {"count": 20, "ntotal": 20}
    assert client.info(name)["has_keys"] is True
    D, I, meta = client.search(name, x[:3], 2)
    assert len(meta) == 3 and all(len(row) == 2 for row in meta)
    for q in range(3):
        assert meta[q][0] == {"id": "key%d" % q,
                              "metadata": {"n": q, "group": "even" if q % 2 == 0 else "odd"}}
        assert I[q, 0] == q


def test_include_metadata_without_keys(client):
    x = rand(5, 4, 31)
    name = make(client, "Flat", x)
    client.add(name, x)
    _, I, meta = client.search(name, x[:1], 7, include_metadata=True)
    assert meta[0][0] == {"id": 0, "metadata": None}
    assert meta[0][5] is None and meta[0][6] is None  # missing hits
    _, _, meta = client.search(name, x[:1], 1, include_metadata=False)
    assert meta is None


def test_integer_and_mixed_keys(client):
    x = rand(4, 4, 32)
    name = make(client, "Flat", x)
    client.add(name, x, [{"id": 1}, {"id": "1"}, None, {"metadata": {"a": 1}}])
    _, I, meta = client.search(name, x, 1)
    assert [row[0]["id"] for row in meta] == [1, "1", int(I[2, 0]), int(I[3, 0])]
    assert meta[3][0]["metadata"] == {"a": 1}
    assert client.delete(name, "1")["deleted"] == 1  # the string key only
    _, _, meta = client.search(name, x[0], 1)
    assert meta[0][0]["id"] == 1


@pytest.mark.parametrize("index_type", TYPES)
def test_upsert(client, index_type):
    x = rand(300, 16, 33)
    name = make(client, index_type, x)
    client.add(name, x[:200], items(200))
    # replace key0..key9 with new vectors and new metadata
    m = client.add(name, x[200:210], items(10, tag="new"))
    assert m["ntotal"] == 200
    assert client.info(name)["ntotal"] == 200
    D, I, meta = client.search(name, x[:10], 5)
    for q in range(10):
        for hit in meta[q]:
            assert hit is not None
            # the old vector of key<q> is gone: key<q> may only show up with
            # its new metadata
            if hit["id"].startswith("key") and int(hit["id"][3:]) < 10:
                assert hit["metadata"]["group"] == "new"
    D, I, meta = client.search(name, x[200:210], 1, params=None)
    found = sum(meta[q][0]["id"] == "key%d" % q for q in range(10))
    if index_type != "IndexFlatIP":  # with IP a vector need not be its own best match
        assert found >= (10 if index_type in ("Flat", "IDMap,Flat", "SQ8") else 7)


@pytest.mark.parametrize("index_type", TYPES)
def test_delete_90_percent_still_k_hits(client, index_type):
    x = rand(500, 16, 34)
    name = make(client, index_type, x)
    client.add(name, x, items(500))
    gone = ["key%d" % i for i in range(500) if i % 10 != 0]
    m = client.delete(name, gone)
    assert m == {"deleted": 450, "ntotal": 50}
    q = rand(8, 16, 35)
    D, I, meta = client.search(name, q, 10)
    assert np.all(I >= 0)
    for row in meta:
        assert len({h["id"] for h in row}) == 10
        assert all(int(h["id"][3:]) % 10 == 0 for h in row)
    # a deleted key never shows up, even searching for its own vector
    _, _, meta = client.search(name, x[1:4], 10)
    assert all(int(h["id"][3:]) % 10 == 0 for row in meta for h in row)
    # k above the live count: exactly the live vectors, then -1
    _, I, _ = client.search(name, q[:1], 60)
    assert np.sum(I[0] >= 0) == 50 and np.all(I[0, 50:] == -1)


@pytest.mark.parametrize("index_type", TYPES)
def test_filter_returns_k_matches(client, index_type):
    x = rand(400, 16, 36)
    name = make(client, index_type, x)
    its = items(400)
    for i, it in enumerate(its):
        it["metadata"]["color"] = "red" if i % 27 == 0 else "blue"  # 15 red
    client.add(name, x, its)
    q = rand(5, 16, 37)
    D, I, meta = client.search(name, q, 10, filt={"color": "red"})
    assert np.all(I >= 0)
    for row in meta:
        assert all(h["metadata"]["color"] == "red" for h in row)
        assert len({h["id"] for h in row}) == 10
    _, I, meta = client.search(name, q[:1], 20, filt={"color": "red", "group": "odd"})
    odd_red = sum(1 for i in range(400) if i % 27 == 0 and i % 2 == 1)
    assert np.sum(I[0] >= 0) == odd_red
    assert all(h["metadata"]["n"] % 2 == 1 for h in meta[0][:odd_red])


def test_filter_semantics(client):
    x = rand(6, 4, 38)
    name = make(client, "Flat", x)
    metas = [{"v": 1}, {"v": 1.0}, {"v": "1"}, {"v": [1, 2]}, {"w": 1}, {"v": {"a": 1}}]
    client.add(name, x, [{"id": i, "metadata": m} for i, m in enumerate(metas)])

    def hits(f):
        _, I, meta = client.search(name, x[0], 6, filt=f)
        return sorted(h["id"] for h in meta[0] if h)

    assert hits({"v": 1}) == [0]          # integers by value, 1 != 1.0
    assert hits({"v": 1.0}) == [1]
    assert hits({"v": "1"}) == [2]
    assert hits({"v": [1, 2]}) == [3]
    assert hits({"v": {"a": 1}}) == [5]
    assert hits({"v": 1, "w": 1}) == []
    assert hits({}) == [0, 1, 2, 3, 4, 5]  # an empty map is no filter
    assert hits({"missing": None}) == []


def test_delete_by_label_and_key_mixed(client):
    x = rand(10, 4, 39)
    name = make(client, "HNSW8", x)
    client.add(name, x[:5], items(5))
    client.add(name, x[5:])  # labels 5..9, no keys
    m = client.delete(name, ["key1", 7, "nope", 99])
    assert m == {"deleted": 2, "ntotal": 8}
    _, I, meta = client.search(name, x, 1)
    ids = [h["id"] for row in meta for h in row]
    assert "key1" not in ids and 7 not in ids
    assert client.delete(name, "key1")["deleted"] == 0  # not an error


def test_repeated_key_in_one_request_keeps_last(client):
    x = rand(3, 4, 40)
    name = make(client, "Flat", x)
    m = client.add(name, x, [{"id": "a", "metadata": {"v": 0}}, {"id": "b"},
                             {"id": "a", "metadata": {"v": 2}}])
    assert m["ntotal"] == 2
    _, _, meta = client.search(name, x[2], 1)
    assert meta[0][0] == {"id": "a", "metadata": {"v": 2}}
    _, I, meta = client.search(name, x[0], 2)
    assert {h["id"] for h in meta[0]} == {"a", "b"}
