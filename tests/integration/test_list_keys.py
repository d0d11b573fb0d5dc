"""list_keys (an index's caller keys and metadata, page by page) and
import_index with those entries (an index restored whole, keys included):
what a tenant's backup and restore stand on (docs/protocol.md)."""
import time

import faiss
import numpy as np
import pytest

from conftest import unique
from wire import rand

WAIT = 30


def list_all(c, name, limit=None, max_pages=1000):
    """Every entry of list_keys, following its cursors; also the page sizes."""
    entries, pages, cursor = [], [], 0
    for _ in range(max_pages):
        h = {"operation": "list_keys", "index_id": name}
        if cursor:
            h["cursor"] = cursor
        if limit is not None:
            h["limit"] = limit
        _, d, m = c.ok(h)
        assert d == b"" and set(m) == {"items", "next"}
        entries += m["items"]
        pages.append(len(m["items"]))
        if m["next"] is None:
            return entries, pages
        assert isinstance(m["next"], int) and m["next"] > 0
        cursor = m["next"]
    raise AssertionError("list_keys did not end within %d pages" % max_pages)


def _mixed_items(n):
    """Keys of both kinds, metadata alone, and vectors with nothing."""
    items = []
    for i in range(n):
        if i % 4 == 0:
            items.append({"id": "doc-%d" % i, "metadata": {"i": i, "t": "x" * (i % 7)}})
        elif i % 4 == 1:
            items.append({"id": 10_000 + i})
        elif i % 4 == 2:
            items.append({"metadata": {"only": i}})
        else:
            items.append(None)
    return items


def _expected(items, labels, gone=()):
    want = {}
    for lab, it in zip(labels, items):
        if it is None or lab in gone:
            continue
        e = {"label": lab}
        if "id" in it:
            e["id"] = it["id"]
        if "metadata" in it:
            e["metadata"] = it["metadata"]
        want[lab] = e
    return want


def test_list_keys_pages_cover_every_entry_once(client):
    d, n = 8, 61
    name = unique()
    client.create(name, d, "Flat")
    items = _mixed_items(n)
    client.add(name, rand(n, d, 1), items)
    client.delete(name, ["doc-8", 10_005])  # a keyed vector, an integer key
    want = _expected(items, range(n), gone={8, 5})
    for limit in (1, 7, None):
        got, pages = list_all(client, name, limit)
        assert [e["label"] for e in got] == sorted(want)  # slot order, each once
        assert {e["label"]: e for e in got} == want
        if limit:
            assert max(pages) <= limit and len(pages) == -(-len(want) // limit)


def test_list_keys_of_index_without_keys_is_empty(client):
    name = unique()
    client.create(name, 4, "Flat")
    client.add(name, rand(10, 4, 2))
    assert list_all(client, name) == ([], [0])


def test_list_keys_pages_stay_under_the_message_limit(make_server):
    srv = make_server(extra=("--max-message-size", "65536"))
    c = srv.client()
    name = unique()
    d, n = 4, 200
    items = [{"id": "k%d-" % i + "z" * 900, "metadata": {"pad": "p" * 100}} for i in range(n)]
    for i in range(0, n, 40):  # requests under 64 KB
        c.add(name if i else (c.create(name, d, "Flat") and name), rand(40, d, 3 + i),
              items[i:i + 40])
    got, pages = list_all(c, name)
    assert [e["id"] for e in got] == [it["id"] for it in items]
    assert len(pages) > 4 and max(pages) < 40  # cut by bytes, not by the default limit


def test_stale_cursor_after_compaction_is_refused(make_server):
    srv = make_server(extra=("--compact-min-dead", "20"))
    c = srv.client()
    name = unique()
    n = 300
    c.create(name, 8, "Flat")
    c.add(name, rand(n, 8, 4), [{"id": "k%d" % i} for i in range(n)])
    _, _, m = c.ok({"operation": "list_keys", "index_id": name, "limit": 10})
    cursor = m["next"]
    c.delete(name, ["k%d" % i for i in range(0, n, 2)])
    end = time.time() + WAIT
    while c.info(name)["tombstones"] and time.time() < end:
        time.sleep(0.05)
    assert c.info(name)["tombstones"] == 0, "no compaction happened"
    e = c.error({"operation": "list_keys", "index_id": name, "cursor": cursor})
    assert e["error_type"] == "validation_error" and "stale" in e["message"]
    got, _ = list_all(c, name)  # from the start it lists what is left
    assert [x["id"] for x in got] == ["k%d" % i for i in range(1, n, 2)]


@pytest.mark.parametrize("header,why", [
    ({"limit": 0}, "limit"),
    ({"limit": 100_001}, "limit"),
    ({"limit": "10"}, "limit"),
    ({"cursor": -1}, "cursor"),
    ({"cursor": 12345}, "cursor"),
    ({"cursor": 1 << 45}, "cursor"),
])
def test_list_keys_bad_input(client, header, why):
    name = unique()
    client.create(name, 4, "Flat")
    client.add(name, rand(3, 4, 5), [{"id": "a"}, {"id": "b"}, None])
    e = client.error(dict({"operation": "list_keys", "index_id": name}, **header))
    assert e["error_type"] == "validation_error" and why in e["message"], e
    e = client.error({"operation": "list_keys", "index_id": unique()})
    assert e["error_type"] == "not_found"


def _import(c, name, index, items, binary=False):
    data = (faiss.serialize_index_binary(index) if binary else faiss.serialize_index(index))
    return c.call({"operation": "import_index", "index_id": name}, data.tobytes(),
                  {"items": items})


def test_import_with_keys_restores_them(fresh_server):
    c = fresh_server.client()
    d, n = 8, 40
    xb = rand(n, d, 6)
    ids = np.arange(100, 100 + n, dtype="int64") * 3
    ref = faiss.IndexIDMap2(faiss.IndexFlatL2(d))
    ref.add_with_ids(xb, ids)
    items = _mixed_items(n)
    entries = [dict(e) for e in _expected(items, ids.tolist()).values()]
    name = unique()
    h, _, info = _import(c, name, ref, entries)
    assert h["status"] == "ok", h
    assert info["has_keys"] and info["ntotal"] == n and info["tombstones"] == 0
    want = _expected(items, ids.tolist())
    for _ in range(2):  # now, and from the first snapshot after a restart
        got, _ = list_all(c, name)
        assert {e["label"]: e for e in got} == want
        D, I, meta = c.search(name, xb[:5], 1, include_metadata=True)
        assert I[:, 0].tolist() == ids[:5].tolist()
        for row, lab in zip(meta, ids[:5].tolist()):
            e = want.get(lab, {})
            assert row[0] == {"id": e.get("id", lab), "metadata": e.get("metadata")}
        fresh_server.restart()
        c = fresh_server.client()
    assert c.delete(name, "doc-0")["deleted"] == 1  # the key names its vector
    assert c.info(name)["ntotal"] == n - 1


def test_import_binary_with_keys(client):
    d, n = 64, 20
    xb = np.random.default_rng(7).integers(0, 256, (n, d // 8), dtype="uint8")
    ref = faiss.IndexBinaryFlat(d)
    ref.add(xb)
    name = unique()
    entries = [{"label": i, "id": "b%d" % i} for i in range(0, n, 3)]
    h, _, info = _import(client, name, ref, entries, binary=True)
    assert h["status"] == "ok", h
    got, _ = list_all(client, name)
    assert got == entries


@pytest.mark.parametrize("items,why", [
    ([{"label": 99, "id": "a"}], "not in the index"),
    ([{"id": "a"}], "label"),
    ([{"label": "0", "id": "a"}], "label"),
    ([{"label": 0, "id": "a"}, {"label": 0, "id": "b"}], "twice"),
    ([{"label": 0, "id": "a"}, {"label": 1, "id": "a"}], "twice"),
    ([{"label": 0, "id": 1.5}], "id"),
    ([{"label": 0, "id": ""}], "id"),
    ([{"label": 0, "metadata": [1]}], "metadata"),
    ([7], "map"),
    ({"label": 0}, "list"),
])
def test_import_with_bad_keys_creates_nothing(client, items, why):
    ref = faiss.IndexFlatL2(4)
    ref.add(rand(5, 4, 8))
    name = unique()
    h, d, m = _import(client, name, ref, items)
    assert h["status"] == "error" and h["error_type"] == "validation_error", h
    assert why in h["message"], h
    assert client.error({"operation": "get_index_info", "index_id": name})["error_type"] == \
        "not_found"


def test_import_metadata_section_must_be_a_map(client):
    ref = faiss.IndexFlatL2(4)
    ref.add(rand(5, 4, 9))
    name = unique()
    h, _, _ = client.call({"operation": "import_index", "index_id": name},
                          faiss.serialize_index(ref).tobytes(), [1, 2])
    assert h["status"] == "error" and "metadata section" in h["message"], h


def test_write_seq_tells_whether_an_index_changed(fresh_server):
    c = fresh_server.client()
    name = unique()
    c.create(name, 4, "Flat")
    s0 = c.info(name)["write_seq"]
    c.search(name, rand(1, 4, 10), 1)
    list_all(c, name)
    assert c.info(name)["write_seq"] == s0  # reads change nothing
    c.add(name, rand(3, 4, 11), [{"id": "a"}, None, None])
    s1 = c.info(name)["write_seq"]
    c.delete(name, "a")
    s2 = c.info(name)["write_seq"]
    assert s0 < s1 < s2
    fresh_server.restart(hard=True)
    assert fresh_server.client().info(name)["write_seq"] == s2
