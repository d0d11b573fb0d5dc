"""Tenants and API keys: keys k1 and k3 belong to alice, k2 to bob."""
import pytest

from conftest import unique
from wire import rand

OPS = [
    {"operation": "ping"},
    {"operation": "list_indexes"},
    {"operation": "get_index_info", "index_id": "x"},
    {"operation": "create_index", "index_id": "x", "dimension": 2},
    {"operation": "delete_index", "index_id": "x"},
    {"operation": "delete_vector", "index_id": "x", "vector_id": 1},
]


@pytest.mark.parametrize("op", OPS, ids=[o["operation"] for o in OPS])
@pytest.mark.parametrize("key", [None, "", "k", "k1 ", "K1", "k1k1", 1, ["k1"]])
def test_bad_keys_refused(auth_server, op, key):
    c = auth_server.client()
    h = dict(op)
    if key is not None:
        h["api_key"] = key
    r, _, _ = c.call(h)
    assert r["status"] == "error" and r["error_type"] == "authentication_error", r


def test_tenant_id_must_match_key(auth_server):
    c = auth_server.client()
    assert c.call({"operation": "ping", "api_key": "k1",
                   "tenant_id": "alice"})[0]["status"] == "ok"
    r, _, _ = c.call({"operation": "ping", "api_key": "k1", "tenant_id": "bob"})
    assert r["error_type"] == "authentication_error"


def test_isolation(auth_server):
    alice, alice2 = auth_server.client("k1"), auth_server.client("k3")
    bob = auth_server.client("k2")
    name = unique("shared")
    x = rand(10, 4, 50)
    alice.create(name, 4)
    alice.add(name, x, [{"id": "a%d" % i} for i in range(10)])
    # the other key of the same tenant sees the same index
    assert alice2.info(name)["ntotal"] == 10
    # bob sees nothing, exactly as for an index that does not exist
    absent = unique("absent")
    for op, extra, data in [
        ("get_index_info", {}, b""),
        ("search", {"k": 1, "vector_shape": [1, 4]}, x[0].tobytes()),
        ("add_vectors", {"vector_shape": [1, 4]}, x[0].tobytes()),
        ("delete_vector", {"vector_id": "a1"}, b""),
        ("delete_index", {}, b""),
        ("train", {"vector_shape": [1, 4]}, x[0].tobytes()),
    ]:
        r1 = bob.error(dict({"operation": op, "index_id": name}, **extra), data)
        r2 = bob.error(dict({"operation": op, "index_id": absent}, **extra), data)
        assert r1["error_type"] == "not_found", op
        assert r1["message"].replace(name, "N") == r2["message"].replace(absent, "N"), op
    assert name not in [i["index_id"] for i in bob.list()]
    assert name in [i["index_id"] for i in alice.list()]
    # nothing bob did changed alice's index
    assert alice.info(name)["ntotal"] == 10
    # bob can own an index of the same name, independent of alice's
    bob.create(name, 8)
    bob.add(name, rand(3, 8, 51))
    assert bob.info(name)["dimension"] == 8 and bob.info(name)["ntotal"] == 3
    assert alice.info(name)["dimension"] == 4 and alice.info(name)["ntotal"] == 10
    bob.drop(name)
    assert alice.info(name)["ntotal"] == 10
    D, I, meta = alice.search(name, x[3], 1)
    assert meta[0][0]["id"] == "a3"


def test_tenants_in_separate_folders(auth_server):
    import os
    alice, bob = auth_server.client("k1"), auth_server.client("k2")
    name = unique("dir")
    alice.create(name, 2)
    bob.create(name, 2)
    assert os.path.isdir(os.path.join(auth_server.data_dir, "alice", name))
    assert os.path.isdir(os.path.join(auth_server.data_dir, "bob", name))


def test_no_keys_by_default(make_server):
    """Without FAISS_PROXY_API_KEYS there are no keys (the seed's demo keys are no
    default): auth is off, protected mode is on, and key1 is nobody's key."""
    s = make_server(api_keys=None)
    line = [l for l in s.log().splitlines() if "listening on" in l][0]
    assert "auth off, protected mode: loopback clients only" in line
    assert "demo keys" not in s.log()
    c = s.client()
    assert c.call({"operation": "ping"})[0]["status"] == "ok"
    t1, t2 = s.client("key1"), s.client("key2")
    t1.create("docs", 2)
    assert t2.info("docs")["dimension"] == 2  # one tenant: "default"
    import os
    assert os.listdir(s.data_dir) == ["default"]
    assert os.path.isdir(os.path.join(s.data_dir, "default", "docs"))


def test_auth_off_ignores_keys_and_tenant(client):
    for h in ({"operation": "ping"}, {"operation": "ping", "api_key": "anything"},
              {"operation": "ping", "tenant_id": "someone"}):
        assert client.call(h)[0]["status"] == "ok"


def test_key_timing_does_not_depend_on_prefix(auth_server):
    """Wrong keys that share a long prefix with a real key are refused the
    same way as ones that share nothing (the comparison is constant-time in
    the code; here we check the behaviour, not the clock)."""
    c = auth_server.client()
    for k in ("k", "k1" + "x" * 100, "x" * 2, "\x00k1"):
        r, _, _ = c.call({"operation": "ping", "api_key": k})
        assert r["error_type"] == "authentication_error"
        assert "k1" not in r["message"] and "alice" not in r["message"]
