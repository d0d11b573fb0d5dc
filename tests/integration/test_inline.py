"""Searches answered on the network thread (--inline-search-us): while no
worker is busy, a quick plain search skips the worker threads. Its reply must
be byte for byte the one a worker gives (and FAISS's results); everything else
(filtered searches, statistics, writes, slow searches) still goes to a worker.
The metrics counter faiss_proxy_requests_inline_total tells which path a
request took."""
import re
import urllib.request

import faiss
import numpy as np
import pytest

from conftest import unique
from wire import Client, dealer, dealer_recv, dealer_send, encode, rand

D = 32


def inline_count(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^faiss_proxy_requests_inline_total (\d+)$", text, re.M)
    assert m, text[-2000:]
    return int(m.group(1))


def start(make_server, budget=None):
    extra = ["--metrics-port", "0"]
    if budget is not None:
        extra += ["--inline-search-us", str(budget)]
    srv = make_server(extra=extra)
    return srv, srv.metrics_port()


def fill(c, name, xb):
    c.create(name, xb.shape[1])
    items = [{"id": "k%d" % i, "n": i} for i in range(len(xb))]
    for i in range(0, len(xb), 5000):
        c.add(name, xb[i:i + 5000], items[i:i + 5000])


def answered_inline(c, port, name, q, tries=20):
    """Plain searches (at most tries) until one is answered on the network
    thread: the index's average query time falls by a quarter of the gap with
    each search a worker measures, so a slow first one is soon forgotten."""
    start = inline_count(port)
    for _ in range(tries):
        c.search(name, q, 3)
        if inline_count(port) > start:
            return True
    return False


def search_body(name, q, k, rid, **extra):
    h = {"operation": "search", "index_id": name, "k": k, "vector_shape": list(q.shape),
         "request_id": rid}
    h.update(extra)
    return encode(h, np.ascontiguousarray(q, dtype="float32").tobytes())


def test_quick_searches_are_answered_inline_with_the_workers_reply(make_server):
    xb = rand(2000, D, 1)
    xq = rand(40, D, 2)
    ref = faiss.IndexFlatL2(D)
    ref.add(xb)
    name = unique()
    replies = {}
    for budget in (None, 0):  # the default, then never inline
        srv, port = start(make_server, budget)
        c = srv.client()
        fill(c, name, xb)
        before = inline_count(port)
        out = []
        for i in range(len(xq)):
            for extra in ({}, {"include_metadata": True}):
                out.append(c.raw(search_body(name, xq[i:i + 1], 5, i, **extra)))
        # a batch of queries, as quick on this index
        out.append(c.raw(search_body(name, xq[:4], 5, "b")))
        replies[budget] = out
        n = inline_count(port) - before
        if budget == 0:
            assert n == 0
        else:
            # the first search measures the index on a worker; the others are
            # quick (2,000 x 32: some µs) unless the machine stalls badly
            assert n >= len(out) // 2, n
        # the results are FAISS's
        Dr, Ir = ref.search(xq[:1], 5)
        Ds, Is, _ = c.search(name, xq[:1], 5)
        assert np.array_equal(Ir, Is) and np.array_equal(Dr, Ds)
    assert replies[None] == replies[0]


def test_other_requests_go_to_workers(make_server):
    srv, port = start(make_server)
    c = srv.client()
    name = unique()
    xb = rand(500, D, 3)
    fill(c, name, xb)
    q = rand(1, D, 4)
    # the first searches measure the index on a worker (a cold first search
    # can take longer than the budget): once one is answered inline, the
    # index is known to be quick
    assert answered_inline(c, port, name, q), "no plain search was answered inline"
    before = inline_count(port)
    for i in range(5):
        c.search(name, q, 3, filt={"n": 5})
        c.ok({"operation": "search", "index_id": name, "k": 3, "vector_shape": [1, D],
              "stats": True}, q.tobytes())
        c.ok({"operation": "search", "index_id": name, "k": 3, "vector_shape": [1, D],
              "id_selector": {"range": [0, 50]}}, q.tobytes())
        c.add(name, rand(1, D, 10 + i), [{"id": "x%d" % i}])
        c.info(name)
        c.ping()
    assert inline_count(port) == before
    # and a plain search is still answered there
    assert answered_inline(c, port, name, q), "no plain search was answered inline"


def test_slow_searches_go_to_workers(make_server):
    # 60,000 x 128 takes milliseconds a query on this build: over the budget
    srv, port = start(make_server, 200)
    c = srv.client()
    name = unique()
    xb = rand(60000, 128, 5)
    c.create(name, 128)
    for i in range(0, len(xb), 20000):
        c.add(name, xb[i:i + 20000])
    before = inline_count(port)
    for i in range(8):
        c.search(name, rand(1, 128, 20 + i), 10)
    assert inline_count(port) == before


def test_errors_before_the_index_are_answered_inline(make_server):
    srv, port = start(make_server)
    c = srv.client()
    before = inline_count(port)
    h = c.error({"operation": "search", "index_id": "nosuch", "k": 1, "vector_shape": [1, D]},
                rand(1, D, 1).tobytes())
    assert h["error_type"] == "not_found"
    assert inline_count(port) == before + 1
    # a search over the size the network thread looks at goes to a worker
    big = Client(srv.endpoint)
    try:
        h = big.error({"operation": "search", "index_id": "nosuch", "k": 1,
                       "vector_shape": [600, D]}, rand(600, D, 2).tobytes())
        assert h["error_type"] == "not_found"
    finally:
        big.close()
    assert inline_count(port) == before + 1


def test_a_burst_goes_to_the_workers(make_server):
    """Searches already waiting behind the one just read (one connection's
    pipelined burst) are not answered one after the other on the network
    thread: they go to the workers, which spread them over the cores and
    batch them. Each answer is still FAISS's."""
    xb = rand(20000, D, 7)
    xq = rand(200, D, 8)
    ref = faiss.IndexFlatL2(D)
    ref.add(xb)
    srv, port = start(make_server, 100000)  # every search of this index fits the budget
    c = srv.client()
    name = unique()
    fill(c, name, xb)
    c.search(name, xq[:1], 5)  # the index's first search: its time is not known before
    before = inline_count(port)
    for q in xq[:5]:  # one at a time: each answered inline
        c.search(name, q.reshape(1, -1), 5)
    assert inline_count(port) == before + 5
    before = inline_count(port)
    s = dealer(srv.endpoint)
    try:
        for i, q in enumerate(xq):
            dealer_send(s, search_body(name, q.reshape(1, -1), 5, i))
        got = {}
        for _ in range(len(xq)):
            h, data, _ = dealer_recv(s)
            assert h["status"] == "ok", h
            got[h["request_id"]] = np.frombuffer(data[20:], dtype="<i8")
    finally:
        s.close()
    _, want = ref.search(xq, 5)
    assert all(got[i].tolist() == want[i].tolist() for i in range(len(xq)))
    inline = inline_count(port) - before
    assert inline <= len(xq) // 2, inline


@pytest.mark.parametrize("value", ["-1", "100001", "x"])
def test_bad_budget_is_refused(make_server, value):
    with pytest.raises(RuntimeError, match="inline search"):
        make_server(extra=["--inline-search-us", value])
