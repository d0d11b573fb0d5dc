"""Per-tenant quotas and the per-connection limit on requests in flight, each
answered with limit_exceeded while the server keeps serving everyone else."""
import threading

import numpy as np

from wire import Client, dealer, dealer_recv, dealer_send, encode, rand

KEYS = "ka:alice,kb:bob"


def _hold_with_add(s, c, name, n=8000):
    """Starts a long HNSW add on name; returns (its dealer, a probe dealer
    whose get_index_info is now waiting behind the add)."""
    adder = dealer(s.endpoint)
    dealer_send(adder, encode({"operation": "add_vectors", "index_id": name,
                               "vector_shape": [n, 32]}, rand(n, 32, 14).tobytes()))
    probe = dealer(s.endpoint)
    for _ in range(100):  # bounded: the add takes the lock within milliseconds
        dealer_send(probe, encode({"operation": "get_index_info", "index_id": name}))
        if probe.poll(300) == 0:
            return adder, probe  # no answer: it waits behind the add
        dealer_recv(probe)
    raise AssertionError("the add never held the index")


def test_tenant_max_indexes(make_server):
    s = make_server(KEYS, ["--tenant-max-indexes", "2"])
    a, b = s.client("ka"), s.client("kb")
    a.create("one", 4)
    a.create("two", 4)
    e = a.error({"operation": "create_index", "index_id": "three", "dimension": 4})
    assert e["error_type"] == "limit_exceeded" and "--tenant-max-indexes" in e["message"]
    b.create("three", 4)  # another tenant's quota is its own
    a.drop("one")
    a.create("three", 4)  # room again after a delete
    assert sorted(i["index_id"] for i in a.list()) == ["three", "two"]


def test_tenant_max_vectors(make_server):
    s = make_server(KEYS, ["--tenant-max-vectors", "100"])
    a, b = s.client("ka"), s.client("kb")
    a.create("x", 4)
    a.create("y", 4)
    a.add("x", rand(60, 4, 1))
    a.add("y", rand(40, 4, 2))  # exactly the quota, over two indexes
    e = a.error({"operation": "add_vectors", "index_id": "y", "vector_shape": [1, 4]},
                rand(1, 4, 3).tobytes())
    assert e["error_type"] == "limit_exceeded" and "--tenant-max-vectors" in e["message"]
    assert a.info("y")["ntotal"] == 40  # nothing was written
    b.create("x", 4)
    b.add("x", rand(100, 4, 4))  # bob has his own 100
    a.delete("x", list(range(10)))  # deleting makes room
    a.add("y", rand(10, 4, 5))
    assert a.info("x")["ntotal"] + a.info("y")["ntotal"] == 100
    # still enforced after a restart (counts are rebuilt from what was loaded)
    s.restart()
    a = s.client("ka")
    e = a.error({"operation": "add_vectors", "index_id": "x", "vector_shape": [1, 4]},
                rand(1, 4, 6).tobytes())
    assert e["error_type"] == "limit_exceeded"


def test_tenant_max_disk_bytes(make_server):
    s = make_server(KEYS, ["--tenant-max-disk-bytes", "200000"])
    a = s.client("ka")
    a.create("x", 64)
    a.add("x", rand(300, 64, 7))  # ~77 kB of vectors in the log
    e = a.error({"operation": "add_vectors", "index_id": "x", "vector_shape": [500, 64]},
                rand(500, 64, 8).tobytes())  # another 128 kB: over 200 kB
    assert e["error_type"] == "limit_exceeded" and "--tenant-max-disk-bytes" in e["message"]
    assert a.info("x")["ntotal"] == 300
    a.add("x", rand(100, 64, 9))  # a smaller write still fits


def test_inflight_per_client_limit(make_server):
    """A DEALER pipelining more requests than its limit gets limit_exceeded for
    the excess while its first ones wait (a long HNSW add holds the index);
    the connection is served again once its requests are answered."""
    s = make_server("", ["--max-inflight-per-client", "2", "--workers", "8"])
    c = s.client()
    c.create("slow", 32, "HNSW32")
    adder, probe = _hold_with_add(s, c, "slow")
    d = dealer(s.endpoint)
    for i in range(5):
        dealer_send(d, encode({"operation": "get_index_info", "index_id": "slow",
                               "request_id": i}))
    byid = {h["request_id"]: h for h, _, _ in (dealer_recv(d) for _ in range(5))}
    assert sorted(byid) == list(range(5))
    status = [byid[i].get("error_type") or byid[i]["status"] for i in range(5)]
    # two wait behind the add (and are answered when it is done), three are refused
    assert status == ["ok", "ok", "limit_exceeded", "limit_exceeded", "limit_exceeded"], status
    assert "--max-inflight-per-client" in byid[status.index("limit_exceeded")]["message"]
    dealer_send(d, encode({"operation": "ping", "request_id": 99}))
    h, _, _ = dealer_recv(d)
    assert h["status"] == "ok" and h["request_id"] == 99
    assert dealer_recv(adder)[0]["status"] == "ok"
    assert dealer_recv(probe)[0]["status"] == "ok"
    for sock in (d, adder, probe):
        sock.close(0)
    assert c.info("slow")["ntotal"] == 8000


def test_inflight_limit_spares_other_clients(make_server):
    s = make_server("", ["--max-inflight-per-client", "1", "--workers", "4"])
    c = s.client()
    c.create("f", 8)
    c.add("f", rand(100, 8, 12))
    errors = []

    def one_client(seed):
        cl = Client(s.endpoint)
        try:
            for q in rand(20, 8, seed):
                D, I, _ = cl.search("f", q, 3)
                if I[0, 0] < 0:
                    errors.append(I)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            cl.close()

    ts = [threading.Thread(target=one_client, args=(20 + i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    # REQ clients have one request in flight each: never over a limit of 1
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in ts)


def test_busy_index_cannot_hold_every_worker(make_server):
    """While a long add holds one index, requests queueing for it take at most
    three quarters of the workers (less the one working): the others are
    answered limit_exceeded at once, and another index stays served."""
    s = make_server("", ["--workers", "4"])  # cap: 4 - 1 - 1 = 2 waiting
    c = s.client()
    c.create("slow", 32, "HNSW32")
    c.create("other", 4)
    c.add("other", rand(10, 4, 13))
    adder, probe = _hold_with_add(s, c, "slow")
    waiters = [dealer(s.endpoint) for _ in range(3)]
    for w in waiters:
        dealer_send(w, encode({"operation": "get_index_info", "index_id": "slow"}))
    # another index answers while the slow one is held and waited for
    _, I, _ = c.search("other", rand(1, 4, 15), 1)
    assert I[0, 0] >= 0
    results = []
    for w in waiters + [probe]:
        h, _, _ = dealer_recv(w)
        results.append(h.get("error_type") or h["status"])
        w.close(0)
    h, _, _ = dealer_recv(adder)
    adder.close(0)
    assert h["status"] == "ok"
    # the probe and one more waited (ok); two were refused at once
    assert sorted(results) == ["limit_exceeded", "limit_exceeded", "ok", "ok"], results
