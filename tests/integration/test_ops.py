"""Every operation against the real server: replies, fields, request_id echo,
REQ and pipelining DEALER clients."""
import numpy as np
import pytest

from conftest import unique
from wire import dealer, dealer_recv, dealer_send, encode, rand

INFO_KEYS = {"index_id", "dimension", "index_type", "metric", "ntotal", "is_trained", "has_keys"}


def test_ping(client):
    m = client.ping()
    assert m["protocol"] == 1 and isinstance(m["version"], str)


@pytest.mark.parametrize("index_type,metric", [
    ("IndexFlatL2", "L2"), ("IndexFlatIP", "IP"), ("L2", "L2"), ("IP", "IP"),
    ("Flat", "L2"), ("HNSW8", "L2"), ("IVF4,Flat", "L2"), ("PCA4,Flat", "L2"),
    ("IDMap,Flat", "L2"), ("SQ8", "L2"), ("HNSW16", "L2"), ("IVF16,Flat", "L2"),
    ("PCA4,IVF2,Flat", "L2"), ("PQ4np", "L2"), ("IVF4,SQ8", "L2"), ("LSH", "L2"),
])
def test_create_index_types(client, index_type, metric):
    name = unique()
    m = client.create(name, 8, index_type)
    assert INFO_KEYS <= set(m)
    assert m["index_id"] == name and m["dimension"] == 8
    assert m["index_type"] == index_type and m["metric"] == metric
    assert m["ntotal"] == 0
    assert m["is_trained"] == (not index_type.startswith(("IVF", "PCA", "SQ", "PQ")))
    assert m["has_keys"] is False
    assert client.info(name) == m
    listed = [i for i in client.list() if i["index_id"] == name]
    assert listed == [m]


def test_create_defaults_and_name_synonym(client):
    name = unique()
    h, _, m = client.ok({"operation": "create_index", "name": name, "dimension": 3})
    assert h["status"] == "ok"
    assert m["index_type"] == "IndexFlatL2" and m["metric"] == "L2"
    ip = client.create(unique(), 3, "HNSW8", "IP")
    assert ip["metric"] == "IP"
    e = client.error({"operation": "create_index", "index_id": name, "dimension": 3})
    assert e["error_type"] == "already_exists"
    e = client.error({"operation": "create_index", "index_id": unique(), "dimension": 3,
                      "index_type": "IndexFlatL2", "metric": "IP"})
    assert e["error_type"] == "validation_error"


def test_add_search_info_delete(client):
    name = unique()
    client.create(name, 16)
    x = rand(300, 16, 1)
    m = client.add(name, x[:200])
    assert m["count"] == 200 and m["ntotal"] == 200
    m = client.add(name, x[200:])
    assert m["count"] == 100 and m["ntotal"] == 300
    D, I, meta = client.search(name, x[:5], 3)
    assert list(I[:, 0]) == [0, 1, 2, 3, 4]
    assert np.all(D[:, 0] == 0)
    assert meta is None  # no caller keys, no include_metadata
    assert client.info(name)["ntotal"] == 300
    m = client.delete(name, 7)
    assert m == {"deleted": 1, "ntotal": 299}
    m = client.delete(name, [8, 9, 7, 123456])
    assert m == {"deleted": 2, "ntotal": 297}
    D, I, _ = client.search(name, x[7:10], 1)
    assert not set(I[:, 0]) & {7, 8, 9}
    assert client.drop(name) == {"deleted": True}
    assert client.error({"operation": "get_index_info",
                         "index_id": name})["error_type"] == "not_found"
    assert client.error({"operation": "delete_index",
                         "index_id": name})["error_type"] == "not_found"


def test_search_fewer_than_k(client):
    name = unique()
    client.create(name, 4, "IP")
    client.add(name, rand(3, 4, 2))
    D, I, _ = client.search(name, rand(2, 4, 3), 5)
    assert np.all(I[:, 3:] == -1) and np.all(I[:, :3] >= 0)
    assert np.all(D[:, 3:] == -np.finfo("float32").max)
    empty = unique()
    client.create(empty, 4)
    D, I, _ = client.search(empty, rand(1, 4, 3), 2)
    assert np.all(I == -1) and np.all(D == np.finfo("float32").max)


def test_seed_style_dimension(client):
    name = unique()
    client.create(name, 8)
    x = rand(10, 8, 4)
    h, _, m = client.ok({"operation": "add_vectors", "index_id": name, "dimension": 8},
                        x.tobytes())
    assert m["count"] == 10
    h, d, _ = client.ok({"operation": "search", "index_id": name, "dimension": 8, "k": 1},
                        x[3].tobytes())
    assert h["shape"] == [1, 1]
    assert np.frombuffer(d[4:], dtype="<i8")[0] == 3


def test_with_ids(client):
    name = unique()
    client.create(name, 4)
    x = rand(4, 4, 5)
    m = client.add(name, x, labels=[10, 20, 30, 40])
    assert m["ntotal"] == 4
    D, I, _ = client.search(name, x, 1)
    assert list(I[:, 0]) == [10, 20, 30, 40]
    # the label counter moves past the largest explicit label
    m = client.add(name, rand(1, 4, 6))
    D, I, _ = client.search(name, rand(1, 4, 6), 1)
    assert I[0, 0] == 41
    assert client.delete(name, 20)["deleted"] == 1
    e = client.error({"operation": "add_vectors", "index_id": name, "vector_shape": [1, 4],
                      "with_ids": True}, x[:1].tobytes() + np.int64(-5).tobytes())
    assert e["error_type"] == "validation_error"


def test_list_indexes(client):
    names = sorted(unique("list") for _ in range(3))
    for n in names:
        client.create(n, 2)
    listed = [i for i in client.list() if i["index_id"] in names]
    assert [i["index_id"] for i in listed] == names
    assert all(INFO_KEYS <= set(i) for i in listed)


def test_train(client):
    name = unique()
    m = client.create(name, 8, "IVF4,Flat")
    assert m["is_trained"] is False
    x = rand(400, 8, 7)
    e = client.error({"operation": "add_vectors", "index_id": name, "vector_shape": [400, 8]},
                     x.tobytes())
    assert e["error_type"] == "not_trained"
    assert client.info(name)["ntotal"] == 0
    m = client.train(name, x)
    assert m["is_trained"] is True and m["ntotal"] == 0
    client.add(name, x)
    D, I, _ = client.search(name, x[:10], 1, params={"nprobe": 4})
    assert list(I[:, 0]) == list(range(10))


@pytest.mark.parametrize("rid", [0, 7, -3, 2**40, "abc", "", "ünï"])
def test_request_id_echo(client, rid):
    h, _, _ = client.call({"operation": "ping", "request_id": rid})
    assert h["status"] == "ok" and h["request_id"] == rid
    h, _, _ = client.call({"operation": "get_index_info", "index_id": unique("none"),
                           "request_id": rid})
    assert h["status"] == "error" and h["error_type"] == "not_found"
    assert h["request_id"] == rid
    h, _, _ = client.call({"operation": "no_such_op", "request_id": rid})
    assert h["error_type"] == "unsupported" and h["request_id"] == rid


def test_request_id_other_types_not_echoed(client):
    h, _, _ = client.call({"operation": "ping", "request_id": [1, 2]})
    assert h["status"] == "ok" and "request_id" not in h


def test_dealer_pipelining(server):
    c = server.client()
    name = unique()
    c.create(name, 8)
    x = rand(50, 8, 8)
    c.add(name, x)
    s = dealer(server.endpoint)
    try:
        for i in range(50):
            dealer_send(s, encode({"operation": "search", "index_id": name, "k": 1,
                                   "vector_shape": [1, 8], "request_id": 1000 + i},
                                  x[i].tobytes()))
        dealer_send(s, encode({"operation": "ping", "request_id": "last"}))
        seen = {}
        for _ in range(51):
            h, d, _ = dealer_recv(s)
            assert h["status"] == "ok"
            seen[h["request_id"]] = d
        assert set(seen) == set(range(1000, 1050)) | {"last"}
        for i in range(50):
            assert np.frombuffer(seen[1000 + i][4:], dtype="<i8")[0] == i
    finally:
        s.close(0)


def test_dealer_without_delimiter(server):
    s = dealer(server.endpoint)
    try:
        s.send(encode({"operation": "ping", "request_id": 5}))
        frames = s.recv_multipart()
        from wire import decode
        h, _, _ = decode(frames[-1])
        assert h["status"] == "ok" and h["request_id"] == 5
    finally:
        s.close(0)


def test_many_clients_at_once(server):
    import threading
    name = unique()
    server.client().create(name, 8)
    errors = []

    def work(seed):
        try:
            from wire import Client
            c = Client(server.endpoint)
            x = rand(20, 8, seed)
            c.add(name, x)
            for _ in range(5):
                c.search(name, x[:2], 3)
            c.close()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert server.client().info(name)["ntotal"] == 160


def test_create_metric_for_factory_strings(client):
    for index_type in ("Flat", "HNSW8", "IVF2,Flat"):
        for metric in ("L2", "IP"):
            m = client.create(unique(), 4, index_type, metric)
            assert m["metric"] == metric and m["index_type"] == index_type
    # the fixed-metric names accept their own metric explicitly
    assert client.create(unique(), 4, "IndexFlatIP", "IP")["metric"] == "IP"
    assert client.create(unique(), 4, "L2", "L2")["metric"] == "L2"
    e = client.error({"operation": "create_index", "index_id": unique(), "dimension": 4,
                      "index_type": "IP", "metric": "L2"})
    assert e["error_type"] == "validation_error"


def test_ip_index_searches_by_inner_product(client):
    name = unique()
    client.create(name, 2, "IndexFlatIP")
    client.add(name, np.array([[1, 0], [10, 0], [0, 1]], dtype="float32"))
    D, I, _ = client.search(name, np.array([1, 0], dtype="float32"), 3)
    assert list(I[0]) == [1, 0, 2]  # L2 would put 0 first
    assert list(D[0]) == [10.0, 1.0, 0.0]


def test_has_keys_follows_the_keys(client):
    name = unique()
    client.create(name, 2)
    client.add(name, rand(2, 2, 9))
    assert client.info(name)["has_keys"] is False
    client.add(name, rand(1, 2, 10), [{"id": "k"}])
    assert client.info(name)["has_keys"] is True
    client.delete(name, "k")
    assert client.info(name)["has_keys"] is False
    assert client.info(name)["ntotal"] == 2


def test_delete_index_then_same_name_is_new(client):
    name = unique()
    client.create(name, 4)
    client.add(name, rand(5, 4, 11), [{"id": i} for i in range(5)])
    assert client.drop(name) == {"deleted": True}
    assert name not in [i["index_id"] for i in client.list()]
    m = client.create(name, 6, "IP")
    assert m["ntotal"] == 0 and m["dimension"] == 6 and m["has_keys"] is False
    D, I, meta = client.search(name, rand(1, 6, 12), 2)
    assert np.all(I == -1) and meta is None


def test_add_zero_vectors(client):
    name = unique()
    client.create(name, 4)
    h, _, m = client.ok({"operation": "add_vectors", "index_id": name, "vector_shape": [0, 4]})
    assert m == {"count": 0, "ntotal": 0}
    h, _, m = client.ok({"operation": "add_vectors", "index_id": name, "vector_shape": [0, 4]},
                        b"", [])
    assert m == {"count": 0, "ntotal": 0}


def test_search_reply_layout(client):
    """nq*k float32 distances, then nq*k int64 labels, row-major; odd nq*k too."""
    name = unique()
    client.create(name, 3)
    x = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]], dtype="float32")
    client.add(name, x)
    q = np.array([[0, 0, 0], [0, 0, 3.5], [1, 0, 0]], dtype="float32")
    h, d, m = client.ok({"operation": "search", "index_id": name, "k": 3,
                         "vector_shape": [3, 3]}, q.tobytes())
    assert h["shape"] == [3, 3] and m is None
    assert len(d) == 9 * 4 + 9 * 8
    D = np.frombuffer(d[:36], dtype="<f4").reshape(3, 3)
    I = np.frombuffer(d[36:], dtype="<i8").reshape(3, 3)
    assert I.tolist() == [[0, 1, 2], [3, 0, 1], [1, 0, 2]]
    assert D.tolist() == [[0, 1, 4], [0.25, 12.25, 13.25], [0, 1, 5]]


def test_search_zero_queries(client):
    name = unique()
    client.create(name, 3)
    client.add(name, rand(4, 3, 13), [{"id": i} for i in range(4)])
    h, d, m = client.ok({"operation": "search", "index_id": name, "k": 2,
                         "vector_shape": [0, 3]})
    assert h["shape"] == [0, 2] and d == b"" and m in (None, [])


@pytest.mark.parametrize("rid", [11, "req-11"])
def test_request_id_echo_in_every_kind_of_error(client, rid):
    cases = [
        ({"request_id": rid}, "protocol_error"),                      # no operation
        ({"operation": 5, "request_id": rid}, "protocol_error"),      # not a string
        ({"operation": "create_index", "request_id": rid}, "validation_error"),
        ({"operation": "create_index", "index_id": "../x", "dimension": 2,
          "request_id": rid}, "validation_error"),
        ({"operation": "search", "index_id": unique("none"), "k": 1, "dimension": 2,
          "request_id": rid}, "not_found"),
    ]
    for header, kind in cases:
        h, d, m = client.call(header)
        assert h["status"] == "error" and h["error_type"] == kind, (header, h)
        assert h["request_id"] == rid, (header, h)
        assert isinstance(h["message"], str) and h["message"]
    name = unique()
    client.create(name, 2)
    h, _, _ = client.call({"operation": "create_index", "index_id": name, "dimension": 2,
                           "request_id": rid})
    assert h["error_type"] == "already_exists" and h["request_id"] == rid
    h, _, _ = client.call({"operation": "add_vectors", "index_id": name, "vector_shape": [1, 2],
                           "request_id": rid}, np.array([np.nan, 1], "float32").tobytes())
    assert h["error_type"] == "validation_error" and h["request_id"] == rid
    h, _, m = client.call({"operation": "add_vectors", "index_id": name, "vector_shape": [1, 2],
                           "request_id": rid}, rand(1, 2, 14).tobytes())
    assert h["status"] == "ok" and h["request_id"] == rid and m["ntotal"] == 1


def test_dealer_pipelined_writes_and_reads(server):
    """50 pipelined adds (one keyed vector each) then 50 pipelined searches and
    deletes with string request_ids: every reply matched, every write applied."""
    c = server.client()
    name = unique()
    c.create(name, 4)
    x = rand(50, 4, 15)
    s = dealer(server.endpoint)
    try:
        for i in range(50):
            dealer_send(s, encode({"operation": "add_vectors", "index_id": name,
                                   "vector_shape": [1, 4], "request_id": "add-%d" % i},
                                  x[i].tobytes(), [{"id": "v%d" % i, "metadata": {"i": i}}]))
        replies = {}
        for _ in range(50):
            h, _, m = dealer_recv(s)
            assert h["status"] == "ok", h
            assert h["request_id"] not in replies
            replies[h["request_id"]] = m
        assert set(replies) == {"add-%d" % i for i in range(50)}
        assert sorted(m["ntotal"] for m in replies.values()) == list(range(1, 51))
        for i in range(50):
            dealer_send(s, encode({"operation": "search", "index_id": name, "k": 1,
                                   "vector_shape": [1, 4], "request_id": "s-%d" % i},
                                  x[i].tobytes()))
            if i % 2:
                dealer_send(s, encode({"operation": "get_index_info", "index_id": name,
                                       "request_id": i}))
        got = {}
        for _ in range(75):
            h, d, m = dealer_recv(s)
            assert h["status"] == "ok", h
            got[h["request_id"]] = (h, d, m)
        assert len(got) == 75
        for i in range(50):
            _, d, m = got["s-%d" % i]
            assert m[0][0] == {"id": "v%d" % i, "metadata": {"i": i}}
            assert np.frombuffer(d[:4], dtype="<f4")[0] == 0.0
            if i % 2:
                assert got[i][2]["ntotal"] == 50
    finally:
        s.close(0)
    assert c.info(name)["ntotal"] == 50


def test_operations_on_a_dropped_index_in_flight(server):
    """delete_index while another connection searches it: every search either
    succeeds or says not_found, and the server stays healthy."""
    import threading
    c = server.client()
    stop = threading.Event()
    errors = []

    def searcher(name, seed):
        from wire import Client
        cc = Client(server.endpoint)
        q = rand(1, 8, seed)
        try:
            while not stop.is_set():
                h, d, _ = cc.call({"operation": "search", "index_id": name, "k": 5,
                                   "vector_shape": [1, 8]}, q.tobytes())
                if h["status"] != "ok" and h.get("error_type") != "not_found":
                    errors.append(h)
        finally:
            cc.close()

    for round_ in range(5):
        name = unique("drop")
        c.create(name, 8, "HNSW8")
        c.add(name, rand(300, 8, round_))
        t = threading.Thread(target=searcher, args=(name, round_))
        t.start()
        c.drop(name)
        c.create(name, 8)
        c.add(name, rand(3, 8, 100 + round_))
        stop.set()
        t.join()
        stop.clear()
        assert c.info(name)["ntotal"] == 3
    assert not errors, errors[:3]
    assert server.alive()
