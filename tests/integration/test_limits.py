"""Per-tenant quotas and the per-connection limit on requests in flight, each
answered with limit_exceeded while the server keeps serving everyone else."""
import threading


from wire import Client, dealer, dealer_recv, dealer_send, encode, rand

KEYS = "ka:alice,kb:bob"


HOLD_N = 10000


def _hold_with_add(s, c, name, n=HOLD_N):
    """Starts a long HNSW add on name (an HNSW32 index) and returns (its
    dealer, a probe dealer whose get_index_info now waits behind the add).
    A deep efConstruction makes the add take seconds on an idle machine."""
    c.ok({"operation": "set_params", "index_id": name, "name": "efConstruction", "value": 1000})
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


def test_inflight_per_client_limit_queues_the_rest(make_server):
    """A DEALER pipelining more requests than its limit: the excess waits its
    turn (a long HNSW add holds the index, so all of them wait) while another
    client is served at once; every request is answered, none refused."""
    s = make_server("", ["--max-inflight-per-client", "2", "--workers", "8"])
    c = s.client()
    c.create("slow", 32, "HNSW32")
    c.create("other", 4)
    c.add("other", rand(10, 4, 10))
    adder, probe = _hold_with_add(s, c, "slow")
    d = dealer(s.endpoint)
    for i in range(20):
        dealer_send(d, encode({"operation": "get_index_info", "index_id": "slow",
                               "request_id": i}))
    # 2 of them wait for the index at the workers, 18 wait in the broker:
    # 4 of the 8 workers are busy, so other clients are served meanwhile
    for _ in range(5):
        _, I, _ = c.search("other", rand(1, 4, 16), 1)
        assert I[0, 0] >= 0
    assert d.poll(0) == 0  # nothing of the pipeline answered yet
    byid = {h["request_id"]: (h, m) for h, _, m in (dealer_recv(d) for _ in range(20))}
    assert sorted(byid) == list(range(20))
    assert all(h["status"] == "ok" and m["ntotal"] == HOLD_N for h, m in byid.values()), byid
    assert dealer_recv(adder)[0]["status"] == "ok"
    assert dealer_recv(probe)[0]["status"] == "ok"
    for sock in (d, adder, probe):
        sock.close(0)


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
    """While a long add holds one index and requests for it from several
    clients wait for it on every worker, the server starts more workers, so
    another index is still served at once; every waiting request is answered
    once the add is done."""
    s = make_server("", ["--workers", "2"])
    c = s.client()
    c.create("slow", 32, "HNSW32")
    c.create("other", 4)
    c.add("other", rand(10, 4, 13))
    adder, probe = _hold_with_add(s, c, "slow")  # both workers: the add, the probe
    waiters = [dealer(s.endpoint) for _ in range(4)]
    for w in waiters:
        dealer_send(w, encode({"operation": "get_index_info", "index_id": "slow"}))
    # another index answers while the slow one is held and waited for
    for _ in range(3):
        _, I, _ = c.search("other", rand(1, 4, 15), 1)
        assert I[0, 0] >= 0
    assert "started one more" in s.wait_log("started one more", 10)
    for w in waiters + [probe]:
        h, _, m = dealer_recv(w)
        assert h["status"] == "ok" and m["ntotal"] == HOLD_N, h
        w.close(0)
    h, _, _ = dealer_recv(adder)
    adder.close(0)
    assert h["status"] == "ok"


def test_queued_requests_are_bounded(make_server):
    """Past 4096 requests waiting for one connection (docs/protocol.md), more
    are answered limit_exceeded at once; the queued ones are all served."""
    s = make_server("", ["--max-inflight-per-client", "1", "--workers", "4"])
    c = s.client()
    c.create("slow", 32, "HNSW32")
    adder, probe = _hold_with_add(s, c, "slow")
    d = dealer(s.endpoint)
    total = 1 + 4096 + 50
    for i in range(total):
        dealer_send(d, encode({"operation": "get_index_info", "index_id": "slow",
                               "request_id": i}))
    status = {}
    for _ in range(total):
        h, _, _ = dealer_recv(d)
        status[h["request_id"]] = h.get("error_type") or h["status"]
    refused = sorted(i for i, st in status.items() if st == "limit_exceeded")
    assert refused == list(range(1 + 4096, total)), refused[:5]
    assert all(status[i] == "ok" for i in range(1 + 4096))
    for sock in (d, adder, probe):
        sock.close(0)


def test_import_on_a_server_with_a_large_address_space(make_server):
    """The import probe's memory cap counts on top of what the server already
    maps (many workers' stacks here): a valid index is accepted."""
    import faiss
    s = make_server("", ["--workers", "256"])  # ~2 GB of thread stacks mapped
    c = s.client()
    ref = faiss.IndexFlatL2(64)
    xb = rand(200000, 64, 17)  # 51 MB: more than any free block the server has
    ref.add(xb)
    c.ok({"operation": "import_index", "index_id": "imp"}, faiss.serialize_index(ref).tobytes())
    _, I, _ = c.search("imp", xb[:3], 1)
    assert list(I[:, 0]) == [0, 1, 2]
