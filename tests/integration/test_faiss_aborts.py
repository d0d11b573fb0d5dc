"""Requests on which FAISS 1.7.3 kills or stalls its process get a validation_error instead.

Debian's FAISS keeps its assertions, and an exception thrown inside one of its OpenMP regions
terminates the process: each case below is a request sequence that, sent to a server that
hands it to FAISS as it is, ends the server (every tenant with it) or holds one of its workers
and the index's lock for good. Each test sends it to a server of its own, expects the error
that names the bound, checks that the server still answers, and that the inputs just inside
the bound are served as FAISS serves them."""
import os
import time

import faiss
import numpy as np
import pytest
import zmq

from conftest import unique
from wire import Client, rand


def call(c, header, data=b""):
    h, d, _ = c.call(header, data)
    return h, d


def create(c, name, d, desc):
    return call(c, {"operation": "create_index", "index_id": name, "dimension": d,
                    "index_type": desc})[0]


def add(c, name, x):
    return call(c, {"operation": "add_vectors", "index_id": name,
                    "vector_shape": list(x.shape)}, x.tobytes())[0]


def train(c, name, x):
    return call(c, {"operation": "train", "index_id": name,
                    "vector_shape": list(x.shape)}, x.tobytes())[0]


def refused(h, *words):
    assert h["status"] == "error" and h["error_type"] == "validation_error", h
    for w in words:
        assert w in h["message"], (w, h)


def served_as_faiss(c, d, desc, x, k):
    """Creates desc, trains and adds x, searches its first 20 rows through c and in a local
    FAISS index of the same description: (D, I) of both."""
    name = unique("sf")
    assert create(c, name, d, desc)["status"] == "ok"
    local = faiss.index_factory(d, desc)
    local.train(x)
    local.add(x)
    assert train(c, name, x)["status"] == "ok"
    assert add(c, name, x)["status"] == "ok"
    D, I, _ = c.search(name, x[:20], k)
    return (D, I), local.search(x[:20], k)


def serving(server):
    c = server.client()
    assert c.ping()["protocol"] == 1
    assert server.alive()


# ---- NSG ------------------------------------------------------------------------------------


def test_nsg_first_add_needs_101_vectors(fresh_server):
    """FAISS's NNDescent draws 100 evaluation points modulo (n - 100): SIGFPE for n <= 100."""
    c = fresh_server.client()
    for desc in ("NSG32", "NSG16,Flat", "NSG8,SQ8"):
        name = unique("nsg")
        assert create(c, name, 8, desc)["status"] == "ok"
        if desc.endswith("SQ8"):
            assert train(c, name, rand(500, 8, 1))["status"] == "ok"
        for n in (1, 100):
            refused(add(c, name, rand(n, 8, 2)), "at least 101", "got %d" % n)
        serving(fresh_server)
        assert c.info(name)["ntotal"] == 0
        assert add(c, name, rand(300, 8, 3))["status"] == "ok"
        assert c.info(name)["ntotal"] == 300
        D, I, _ = c.search(name, rand(3, 8, 4), 5)
        assert (I >= 0).all()
    serving(fresh_server)


def test_nsg_needs_r_of_3(fresh_server):
    """With R <= 2 FAISS's NSG build repairs its spanning tree forever."""
    c = fresh_server.client()
    for desc in ("NSG2", "NSG1,Flat", "NSG2,SQ8", "IVF128_NSG2,Flat"):
        refused(create(c, unique("nsg"), 8, desc), "R >= 3", "got")
    serving(fresh_server)
    assert create(c, unique("nsg"), 8, "NSG3")["status"] == "ok"


def test_nsg_build_that_never_ends_is_stopped(make_server):
    """FAISS 1.7.3's NSG build links unreachable points to one with a free slot, drawing
    points at random until it finds one: with R = 3 most data leaves none, and the draw never
    ends (the worker and the index were held for good). The build runs in a child process
    within --graph-build-timeout: stopped there, the index unchanged (also after a restart),
    every other request served while it runs."""
    import threading
    srv = make_server(extra=["--graph-build-timeout", "4"])
    c = srv.client()
    stuck, other = unique("nsg"), unique("flat")
    assert create(c, stuck, 8, "NSG3")["status"] == "ok"
    c.create(other, 8)
    c.add(other, rand(50, 8, 11))
    reply = {}

    def build():
        reply["h"] = add(srv.client(), stuck, rand(150, 8, 12))

    t = threading.Thread(target=build)
    t.start()
    served_during = 0
    deadline = time.time() + 60
    while t.is_alive() and time.time() < deadline:
        D, I, _ = c.search(other, rand(1, 8, 13), 3)
        assert (I >= 0).all()
        served_during += 1
        time.sleep(0.2)
    t.join(60)
    assert not t.is_alive()
    h = reply["h"]
    assert h["status"] == "error" and h["error_type"] == "limit_exceeded", h
    assert "did not finish within 4 s" in h["message"] and "unchanged" in h["message"], h
    assert served_during >= 5  # the other index answered all along
    serving(srv)
    assert c.info(stuck)["ntotal"] == 0
    srv.restart()
    c = srv.client()
    assert c.info(stuck)["ntotal"] == 0 and c.info(other)["ntotal"] == 50


def _children(pid):
    """The processes pid started, from every one of its threads."""
    out = []
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return out


def test_graph_build_ends_with_a_killed_server(make_server):
    """The child process that runs an NSG build that never ends is stopped at
    --graph-build-timeout by its server; a server killed meanwhile (kill -9, the OOM
    killer) cannot stop it, so the child ends with it instead of drawing for good."""
    import threading
    srv = make_server(extra=["--graph-build-timeout", "600"])
    c = srv.client()
    stuck = unique("nsg")
    assert create(c, stuck, 8, "NSG3")["status"] == "ok"
    endpoint = srv.endpoint

    def build():  # its reply never comes: the thread's own socket, closed by it
        adder = Client(endpoint, timeout_ms=3000)
        try:
            call(adder, {"operation": "add_vectors", "index_id": stuck,
                         "vector_shape": [150, 8]}, rand(150, 8, 12).tobytes())
        except zmq.ZMQError:
            pass
        adder.close()

    t = threading.Thread(target=build)
    t.start()
    server_pid = srv.proc.pid
    deadline = time.time() + 30
    while not _children(server_pid):
        assert time.time() < deadline, "no build process started"
        time.sleep(0.05)
    child = _children(server_pid)[0]
    srv.kill9()
    deadline = time.time() + 10
    while os.path.exists("/proc/%d" % child):
        with open("/proc/%d/stat" % child) as f:
            if f.read().split(") ")[-1].startswith("Z"):
                break  # ended, not yet reaped by whoever adopted it
        assert time.time() < deadline, "the build process outlived its server"
        time.sleep(0.05)
    t.join(30)


def test_nsg_quantizer_build_that_never_ends_or_dies_is_stopped(make_server):
    """An NSG coarse quantizer is built on the centroids when its IVF trains, by the same
    FAISS build: with R = 3 it never ends, and on some centroids NNDescent asserts (SIGABRT,
    the whole process; local FAISS dies on IVF128_NSG32 trained on these 300 vectors with one
    thread). Built in the child process: stopped or reported, the index left untrained."""
    srv = make_server(extra=["--graph-build-timeout", "4"])
    c = srv.client()
    stuck = unique("ivfnsg")
    assert create(c, stuck, 8, "IVF110_NSG3,Flat")["status"] == "ok"
    h = train(c, stuck, rand(300, 8, 0))
    assert h["status"] == "error" and h["error_type"] == "limit_exceeded", h
    assert "did not finish within 4 s" in h["message"], h
    serving(srv)
    assert not c.info(stuck)["is_trained"]
    dies = unique("ivfnsg")
    assert create(c, dies, 8, "IVF128_NSG32,Flat")["status"] == "ok"
    h = train(c, dies, rand(300, 8, 1))
    serving(srv)
    if h["status"] == "ok":  # the build's threads may draw other points than local FAISS's
        assert add(c, dies, rand(200, 8, 2))["status"] == "ok"
        local = faiss.deserialize_index(np.frombuffer(
            c.ok({"operation": "export_index", "index_id": dies})[1], dtype="uint8"))
        faiss.extract_index_ivf(local).nprobe = c.info(dies)["params"]["nprobe"]
        q = rand(3, 8, 3)
        D, I, _ = c.search(dies, q, 5)
        Dl, Il = local.search(q, 5)
        assert (I == Il).all() and np.allclose(D, Dl)
    else:
        assert h["error_type"] == "faiss_error" and "died" in h["message"], h
        assert not c.info(dies)["is_trained"]
    srv.restart()
    assert srv.client().info(stuck)["ntotal"] == 0


def test_nsg_graph_built_in_its_process_answers_as_faiss(fresh_server):
    """An NSG built by the child process is the server's index from then on: every vector
    finds itself first, its export holds the graph, and a second add is FAISS's refusal."""
    c = fresh_server.client()
    name = unique("nsg")
    assert create(c, name, 8, "NSG16")["status"] == "ok"
    x = rand(400, 8, 14)
    assert add(c, name, x)["status"] == "ok"
    D, I, _ = c.search(name, x[:50], 3)
    assert (I[:, 0] == np.arange(50)).all() and (D[:, 0] == 0).all()
    local = faiss.deserialize_index(np.frombuffer(
        c.ok({"operation": "export_index", "index_id": name})[1], dtype="uint8"))
    assert local.ntotal == 400
    Dl, Il = local.search(x[:50], 3)
    assert (Il == I).all()
    h = add(c, name, rand(200, 8, 15))
    assert h["status"] == "error" and "incremental" in h["message"], h
    fresh_server.restart(hard=True)
    c = fresh_server.client()
    D2, I2, _ = c.search(name, x[:50], 3)
    assert (I2[:, 0] == np.arange(50)).all()


def test_nsg_coarse_quantizer_needs_101_lists(fresh_server):
    """An NSG quantizer is built on the nlist centroids when the IVF trains: SIGFPE for <= 100."""
    c = fresh_server.client()
    for desc in ("IVF2_NSG32,Flat", "IVF100_NSG32,Flat", "IVF100(NSG32),Flat"):
        refused(create(c, unique("ivfnsg"), 4, desc), "nlist >= 101", "got")
    serving(fresh_server)
    name = unique("ivfnsg")
    assert create(c, name, 4, "IVF150_NSG32,Flat")["status"] == "ok"
    assert train(c, name, rand(150 * 39, 4, 6))["status"] == "ok"
    assert add(c, name, rand(200, 4, 7))["status"] == "ok"
    serving(fresh_server)


def test_nsg_search_asks_for_at_most_ntotal(fresh_server):
    """FAISS's NSG search draws random vectors until its pool of k is full: forever for
    k > ntotal (also through a refinement, which asks its NSG for k * k_factor)."""
    c = fresh_server.client()
    name = unique("nsg")
    assert create(c, name, 8, "NSG32")["status"] == "ok"
    assert add(c, name, rand(150, 8, 8))["status"] == "ok"
    q = rand(2, 8, 9)
    h, _ = call(c, {"operation": "search", "index_id": name, "k": 151,
                    "vector_shape": [2, 8]}, q.tobytes())
    refused(h, "at most as many results as it holds (150)", "got 151")
    serving(fresh_server)
    D, I, _ = c.search(name, q, 150)
    assert sorted(I[0].tolist()) == list(range(150))
    # with deletions the server over-fetches within ntotal: served
    c.delete(name, [0, 1])
    D, I, _ = c.search(name, q, 150)
    assert (I[:, :148] >= 2).all() and (I[:, 148:] == -1).all()

    rf = unique("nsgrf")
    assert create(c, rf, 8, "NSG32,RFlat")["status"] == "ok"
    assert add(c, rf, rand(150, 8, 10))["status"] == "ok"
    h, _ = call(c, {"operation": "search", "index_id": rf, "k": 151,
                    "vector_shape": [2, 8]}, q.tobytes())
    refused(h, "(150)", "got 151")
    D, I, _ = c.search(rf, q, 150)
    assert (I >= 0).all()
    serving(fresh_server)


def test_filtered_nsg_refine_search_never_asks_the_nsg_for_more_than_it_holds(fresh_server):
    """A filtered search (or one past deleted vectors) fetches more than k from the index,
    up to what it holds; through a refinement that is k_factor times more from its NSG, whose
    search then never returned (the worker and the index held for good). The fetch stops
    where the NSG can answer; an exact pass over the allowed vectors completes the rest."""
    c = fresh_server.client()
    name = unique("nsgrf")
    assert create(c, name, 8, "NSG32,RFlat")["status"] == "ok"
    x = rand(150, 8, 16)
    c.add(name, x, items=[{"id": "k%d" % i, "metadata": {"g": i % 2}} for i in range(150)])
    c.ok({"operation": "set_params", "index_id": name, "name": "k_factor_rf", "value": 2})
    q = rand(1, 8, 17)
    exact = ((x - q) ** 2).sum(1)
    odd = np.arange(1, 150, 2)
    for k in (40, 75):
        D, I, _ = c.search(name, q, k, filt={"g": 1})
        assert (I[0] % 2 == 1).all() and len(set(I[0].tolist())) == k
        np.testing.assert_allclose(D[0], exact[I[0]], rtol=1e-5, atol=1e-5)
        best = set(odd[np.argsort(exact[odd])[:k]].tolist())
        assert len(best & set(I[0].tolist())) >= 0.9 * k
    h, _ = call(c, {"operation": "search", "index_id": name, "k": 76, "vector_shape": [1, 8]},
                q.tobytes())
    refused(h, "(150)", "got 152")
    c.delete(name, [0, 1, 2])
    D, I, _ = c.search(name, q, 70)
    assert (I[0] >= 3).all() and len(set(I[0].tolist())) == 70
    serving(fresh_server)


# ---- sa_decode of IVF codes -----------------------------------------------------------------


@pytest.mark.parametrize("desc", ["IVF2,SQ8", "IVF2,PQ2np", "IVF2,RQ1x4", "PCA4,IVF2,SQ8",
                                  "IVF2,SQ8,Refine(IVF2,SQ8)"])
def test_sa_decode_list_number_past_nlist(fresh_server, desc):
    """A code's leading list number >= nlist makes FAISS's decode throw inside an OpenMP
    region, which terminates the process."""
    c = fresh_server.client()
    name = unique("codec")
    assert create(c, name, 4, desc)["status"] == "ok", desc
    assert train(c, name, rand(400, 4, 11))["status"] == "ok"
    x = rand(3, 4, 12)
    h, codes = call(c, {"operation": "sa_encode", "index_id": name, "vector_shape": [3, 4]},
                    x.tobytes())
    assert h["status"] == "ok", h
    cs = h["shape"][1]
    ok, _ = call(c, {"operation": "sa_decode", "index_id": name, "dtype": "uint8",
                     "vector_shape": [3, cs]}, codes)
    assert ok["status"] == "ok", ok
    bad = bytearray(codes)
    # the list number sits at the start of the IVF's own code (after a refinement's base code)
    at = cs // 2 if "Refine" in desc else 0
    bad[cs + at] = 2  # the second code names list 2 of 0..1
    h, _ = call(c, {"operation": "sa_decode", "index_id": name, "dtype": "uint8",
                    "vector_shape": [3, cs]}, bytes(bad))
    refused(h, "code 1 names inverted list 2", "has 2")
    serving(fresh_server)


@pytest.mark.parametrize("desc", ["IVF2,RQ1x4_Ncqint8", "RQ1x4_Ncqint4", "PRQ2x1x4_Ncqint8"])
def test_cq_norms_never_trained_here(fresh_server, desc):
    """FAISS's _Ncqint norm training reads past its data (SIGSEGV) when the
    quantized norms have fewer distinct values than its centroids, which no
    bound on the request tells apart: training such an index is refused,
    naming what to do instead, and the server keeps serving."""
    c = fresh_server.client()
    name = unique("cq")
    assert create(c, name, 4, desc)["status"] == "ok"
    h = train(c, name, rand(300, 4, 3))
    assert h["status"] == "error" and h["error_type"] == "unsupported", h
    assert "_Ncqint8" in h["message"] and "import it" in h["message"], h
    serving(fresh_server)
    assert c.info(name)["is_trained"] is False
    other = unique("nq")  # the other norm encodings train as before
    assert create(c, other, 4, desc.replace("_Ncqint", "_Nqint"))["status"] == "ok"
    assert train(c, other, rand(300, 4, 3))["status"] == "ok"


# ---- IVF range search and parallel_mode ------------------------------------------------------


def range_search(c, name, q, radius):
    return call(c, {"operation": "range_search", "index_id": name, "radius": radius,
                    "vector_shape": list(q.shape)}, q.tobytes())


def range_hits(lims, labels, dist):
    return [sorted(zip(labels[lims[i]:lims[i + 1]].tolist(), dist[lims[i]:lims[i + 1]].tolist()))
            for i in range(len(lims) - 1)]


@pytest.mark.parametrize("desc", ["IVF8,Flat", "IVF8,SQ8", "PCA4,IVF8,Flat"])
def test_ivf_range_search_needs_parallel_mode_up_to_2(fresh_server, desc):
    """FAISS 1.7.3's IVF range search throws on parallel_mode 3 inside its OpenMP region, which
    terminates the process (its search takes 3)."""
    c = fresh_server.client()
    name = unique("pm")
    assert create(c, name, 8, desc)["status"] == "ok"
    assert train(c, name, rand(400, 8, 21))["status"] == "ok"
    assert add(c, name, rand(200, 8, 22))["status"] == "ok"
    q = rand(3, 8, 23)
    c.ok({"operation": "set_params", "index_id": name, "name": "parallel_mode", "value": 3})
    for nq in (1, 3):
        h, _ = range_search(c, name, q[:nq], 0.3)
        refused(h, "parallel_mode 0, 1 or 2", "got 3")
    serving(fresh_server)
    D, I, _ = c.search(name, q, 5)  # search takes mode 3
    assert (I >= 0).all()

    _, data, _ = c.ok({"operation": "export_index", "index_id": name})
    local = faiss.deserialize_index(np.frombuffer(data, dtype="uint8"))
    for mode in (0, 1, 2):
        c.ok({"operation": "set_params", "index_id": name, "name": "parallel_mode", "value": mode})
        faiss.extract_index_ivf(local).parallel_mode = mode
        h, d = range_search(c, name, q, 0.3)
        assert h["status"] == "ok", h
        nres = h["nres"]
        lims = np.frombuffer(d, dtype="int64", count=4)
        labels = np.frombuffer(d, dtype="int64", count=nres, offset=8 * 4)
        dist = np.frombuffer(d, dtype="float32", count=nres, offset=8 * (4 + nres))
        L, Dl, Il = local.range_search(q, 0.3)
        assert nres > 0
        assert range_hits(lims, labels, dist) == range_hits(L, Il, Dl), (desc, mode)
    serving(fresh_server)


# ---- merge_from of IVF fast-scan indexes ----------------------------------------------------


@pytest.mark.parametrize("desc", ["IVF4,PQ2x4fs", "PCA4,IVF4,PQ2x4fs"])
def test_fast_scan_merge_needs_disjoint_lists(fresh_server, desc):
    """FAISS 1.7.3's IVF fast-scan lists take entries only into an empty list; its merge_from
    appends the other index's lists inside an OpenMP loop, where the refusal terminates the
    process."""
    c = fresh_server.client()
    xt = rand(300, 8, 31)
    names = [unique("fsm") for _ in range(4)]
    for n in names:
        assert create(c, n, 8, desc)["status"] == "ok"
        assert train(c, n, xt)["status"] == "ok"
    a, b, inside, other = names
    assert add(c, a, rand(60, 8, 32))["status"] == "ok"
    assert add(c, b, rand(60, 8, 33))["status"] == "ok"
    h, _ = call(c, {"operation": "merge_from", "index_id": a, "other": b, "add_id": 1000})
    refused(h, "inverted list to be empty in one of the two", "got list", "vectors here")
    serving(fresh_server)
    assert c.info(a)["ntotal"] == 60 and c.info(b)["ntotal"] == 60

    # vectors in lists of their own: merged as FAISS merges them
    _, qb, _ = c.ok({"operation": "export_index", "index_id": a, "part": "quantizer"})
    quantizer = faiss.deserialize_index(np.frombuffer(qb, dtype="uint8"))
    pool = rand(400, 8, 34)
    pre = faiss.deserialize_index(np.frombuffer(
        c.ok({"operation": "export_index", "index_id": a})[1], dtype="uint8"))
    into = pool
    if isinstance(pre, faiss.IndexPreTransform):
        into = faiss.downcast_VectorTransform(pre.chain.at(0)).apply_py(pool)
    lists = quantizer.assign(np.ascontiguousarray(into), 1).ravel()
    first = lists[0]
    xa, xo = pool[lists == first][:30], pool[lists != first][:30]
    assert len(xa) and len(xo)
    assert add(c, inside, xa)["status"] == "ok"
    assert add(c, other, xo)["status"] == "ok"
    la = faiss.deserialize_index(np.frombuffer(
        c.ok({"operation": "export_index", "index_id": inside})[1], dtype="uint8"))
    lo = faiss.deserialize_index(np.frombuffer(
        c.ok({"operation": "export_index", "index_id": other})[1], dtype="uint8"))
    h, _ = call(c, {"operation": "merge_from", "index_id": inside, "other": other,
                    "add_id": 1000})
    assert h["status"] == "ok", h
    la.merge_from(lo, 1000)
    assert c.info(inside)["ntotal"] == la.ntotal == len(xa) + len(xo)
    q = rand(5, 8, 35)
    faiss.extract_index_ivf(la).nprobe = c.info(inside)["params"]["nprobe"]
    D, I, _ = c.search(inside, q, 10)
    Dl, Il = la.search(q, 10)
    assert (I == Il).all()
    assert np.allclose(D, Dl)
    serving(fresh_server)


# ---- IndexPQ search types -------------------------------------------------------------------


def test_pq_generalized_hamming_needs_code_size_multiple_of_8(fresh_server):
    """FAISS 1.7.3's ST_generalized_HE search of an IndexPQ asserts that its code size is a
    multiple of 8 bytes (SIGABRT)."""
    c = fresh_server.client()
    q = rand(4, 8, 42)
    # 4-bit codes: FAISS's k-means of 256 centroids over 300 points takes about a minute here
    for desc, code_size in (("PQ4x4", 2), ("PQ2x4", 1)):
        name = unique("pq")
        assert create(c, name, 8, desc)["status"] == "ok"
        assert train(c, name, rand(300, 8, 40))["status"] == "ok"
        assert add(c, name, rand(100, 8, 41))["status"] == "ok"
        c.ok({"operation": "set_params", "index_id": name, "name": "search_type", "value": 2})
        for nq in (1, 4):
            h, _ = call(c, {"operation": "search", "index_id": name, "k": 5,
                            "vector_shape": [nq, 8]}, q[:nq].tobytes())
            refused(h, "multiple of 8", "got %d" % code_size)
        serving(fresh_server)
        c.ok({"operation": "set_params", "index_id": name, "name": "search_type", "value": 1})
        D, I, _ = c.search(name, q, 5)
        assert (I >= 0).all()

    name = unique("pq")  # 8 bytes a code: served as FAISS serves it
    q16 = rand(4, 16, 42)
    assert create(c, name, 16, "PQ16x4")["status"] == "ok"
    assert train(c, name, rand(300, 16, 43))["status"] == "ok"
    assert add(c, name, rand(100, 16, 44))["status"] == "ok"
    c.ok({"operation": "set_params", "index_id": name, "name": "search_type", "value": 2})
    _, data, _ = c.ok({"operation": "export_index", "index_id": name})
    local = faiss.deserialize_index(np.frombuffer(data, dtype="uint8"))
    assert local.pq.code_size == 8
    local.search_type = faiss.IndexPQ.ST_generalized_HE
    D, I, _ = c.search(name, q16, 5)
    Dl, Il = local.search(q16, 5)
    assert (D == Dl).all() and (I == Il).all()
    serving(fresh_server)


def test_imported_pq_quantizer_with_generalized_hamming_is_refused(fresh_server):
    """An IVF whose coarse quantizer is an IndexPQ set to search_type 2 with codes of 2 bytes:
    every assignment (add, search, train) runs that search, which asserts. No request can set
    a quantizer's search_type, so only an import brings one: refused; with codes of 8 bytes,
    served as FAISS serves it."""
    c = fresh_server.client()
    x = rand(3000, 8, 45)
    for m, served in ((2, False), (8, True)):
        q = faiss.IndexPQ(8, m, 8)
        q.train(x)
        q.add(x[:16])
        ivf = faiss.IndexIVFFlat(q, 8, 16)
        ivf.train(x)
        ivf.add(x[:100])
        q.search_type = faiss.IndexPQ.ST_generalized_HE
        name = unique("ivfpq")
        h, _ = call(c, {"operation": "import_index", "index_id": name},
                    faiss.serialize_index(ivf).tobytes())
        if not served:
            refused(h, "coarse quantizer", "search_type 2")
            serving(fresh_server)
            continue
        assert h["status"] == "ok", h
        ivf.nprobe = c.info(name)["params"]["nprobe"]
        D, I, _ = c.search(name, x[200:205], 5)
        Dl, Il = ivf.search(x[200:205], 5)
        assert (I == Il).all() and np.allclose(D, Dl)
    serving(fresh_server)


# ---- refinements: k * k_factor ---------------------------------------------------------------


def test_refine_base_results_held_to_the_results_bound(fresh_server):
    """A refinement asks its base index for k * k_factor results a query, which FAISS 1.7.3
    allocates and fills whatever the base holds: with k_factor up to 2^20 one search took every
    byte of memory (the kernel's OOM killer ended the process). They are held to the bound of
    a search's own results, the message size limit / 12."""
    c = fresh_server.client()
    bound = c.ping()["max_message_size"] // 12
    name = unique("rf")
    assert create(c, name, 8, "IVF8,Flat,RFlat")["status"] == "ok"
    assert train(c, name, rand(400, 8, 51))["status"] == "ok"
    assert add(c, name, rand(200, 8, 52))["status"] == "ok"
    c.ok({"operation": "set_params", "index_id": name, "name": "k_factor_rf", "value": 1 << 20})
    q = rand(3, 8, 53)
    k_out = bound // (1 << 20) + 1
    for nq, k in ((3, 100), (1, k_out)):
        h, _ = call(c, {"operation": "search", "index_id": name, "k": k,
                        "vector_shape": [nq, 8]}, q[:nq].tobytes())
        refused(h, "k x k_factor", "at most %d" % bound, "got %d" % (nq * k * (1 << 20)))
    serving(fresh_server)
    D, I, _ = c.search(name, q[:1], k_out - 1)  # just inside
    assert (I[0, :200] >= 0).all() and (I[0, 200:] == -1).all()

    c.ok({"operation": "set_params", "index_id": name, "name": "k_factor_rf", "value": 1000})
    _, data, _ = c.ok({"operation": "export_index", "index_id": name})
    local = faiss.deserialize_index(np.frombuffer(data, dtype="uint8"))
    local.k_factor = 1000
    D, I, _ = c.search(name, q, 10)
    Dl, Il = local.search(q, 10)
    assert (I == Il).all() and np.allclose(D, Dl)
    serving(fresh_server)


# ---- transforms: their matrix's size ---------------------------------------------------------


def test_transforms_whose_matrix_wraps_are_refused(fresh_server):
    """FAISS 1.7.3 sizes a linear transform's matrix with an int product of its dimensions: a
    random rotation from 2 to 65536 dimensions (a 65536 x 65536 frame) wraps it, and its first
    train ended the process; an IndexLSH's rotation ("LSHr") is drawn as the factory builds it,
    so "Pad65536,LSHrt" ended it at create. Refused on create and on import, naming the bound;
    a rotation inside it is served as FAISS serves it."""
    c = fresh_server.client()
    for d, desc, words in [(2, "RR65536,Flat", ("random rotation", "4096")),
                           (2, "RR1048576,Flat", ("1..65536",)),
                           (16, "Pad1048576,Flat", ("1..65536",)),
                           (16, "RR65536,SQ8,RFlat", ("random rotation", "4096")),  # refined
                           (32768, "RR32768,Flat", ("2^28",)),
                           # IndexLSH draws its rotation as the factory builds it
                           (16, "Pad65536,LSHrt", ("IndexLSH's rotation", "2^28")),
                           (65536, "LSHr", ("IndexLSH's rotation", "2^28")),
                           (16, "LSH65536r", ("IndexLSH's rotation", "4096")),
                           (20000, "LSHrt", ("IndexLSH's rotation", "2^28")),
                           (64, "PCA16,IVF4,Flat,Refine(Pad20000,LSHrt)",
                            ("IndexLSH's rotation", "2^28"))]:
        refused(create(c, unique("rr"), d, desc), *words)
    serving(fresh_server)
    # an untrained rotation to 65536 dimensions, as a FAISS program writes it
    idx = faiss.IndexPreTransform(faiss.RandomRotationMatrix(2, 65536), faiss.IndexFlatL2(65536))
    h, _ = call(c, {"operation": "import_index", "index_id": unique("rr")},
                faiss.serialize_index(idx).tobytes())
    refused(h, "random rotation", "4096")
    serving(fresh_server)
    x = rand(200, 8, 46)
    (D, I), (Dl, Il) = served_as_faiss(c, 8, "RR64,Flat", x, 3)
    assert (I == Il).all() and np.allclose(D, Dl)
    (D, _), (Dl, _) = served_as_faiss(c, 8, "Pad16,LSHrt", x, 3)
    assert np.array_equal(D, Dl)  # Hamming distances; ties make the labels' order free
    serving(fresh_server)


def test_ivf_descriptions_faiss_refuses_leak_nothing(fresh_server):
    """FAISS 1.7.3's factory gives an IVF's coarse quantizer to the IVF's constructor as a raw
    pointer and loses it when that constructor refuses its arguments: every such create leaked
    it in the server (the sanitized run's leak check at the server's stop fails on it). A
    description with a coarse quantizer is built in a child process first: FAISS's message
    comes back, and the same description, once it built, is served."""
    c = fresh_server.client()
    for _ in range(3):
        for d, desc, words in [(16, "IVF4,PQ7", ("multiple of the number of subquantizers",)),
                               (16, "IVF4_HNSW8,PQ5", ("multiple",)),
                               (16, "IMI2x4,PQ3", ("multiple",)),
                               (16, "IVF4,PQ8x4fs_31", ("bbs",))]:
            refused(create(c, unique("lk"), d, desc), *words)
    for _ in range(2):
        assert create(c, unique("lk"), 16, "IVF4,PQ8")["status"] == "ok"
    serving(fresh_server)


def test_multi_index_quantizers_past_2_20_lists_are_refused(fresh_server):
    """A multi-index quantizer of M x b bits has 2^(M b) lists, each an empty list header FAISS
    allocates at create: "IMI2x16" asked for 96 GiB (under AddressSanitizer, the server's end;
    without it, an allocation the kernel may grant and then kill the server for). Held to the
    2^20 lists of IVF<n>; 2^20 is served."""
    c = fresh_server.client()
    for d, desc in [(16, "IMI2x16,Flat"), (16, "IMI2x11,PQ8"), (16, "Residual2x12,PQ8"),
                    (16, "HNSW32_2x11+PQ8"), (32, "PCA16,IMI2x15,Flat")]:
        refused(create(c, unique("imi"), d, desc), "multi-index", "2^20")
    serving(fresh_server)
    for d, desc in [(16, "IMI2x10,Flat"), (16, "Residual2x10,PQ8"), (16, "HNSW32_2x10+PQ8")]:
        assert create(c, unique("imi"), d, desc)["status"] == "ok", desc
    serving(fresh_server)


def test_rotations_trained_past_4096_dimensions_are_refused(fresh_server):
    """FAISS's OPQ training rotates in max(d_in, d_out) dimensions and ITQ's in d_out: square
    matrices of that side, five of them and an SVD per iteration. At 65536 that is 80 GB, a
    server killed by the kernel; a matrix of in x out entries inside the 2^28 bound does not
    say so. Those past 4096 dimensions are refused (FAISS 1.7.3 writes them as a plain linear
    transform, which an import never trains); one inside it trains and answers as FAISS."""
    c = fresh_server.client()
    for d, desc, kind in [(64, "OPQ8_65536,Flat", "OPQ"), (8192, "OPQ8,PQ8", "OPQ"),
                          (8192, "OPQ8_64,Flat", "OPQ"), (64, "OPQ8_8192,IVF4,Flat", "OPQ"),
                          (8192, "ITQ8192,LSHt", "ITQ")]:
        refused(create(c, unique("opq"), d, desc), kind + " rotation", "4096")
    serving(fresh_server)
    (_, I), (_, Il) = served_as_faiss(c, 16, "OPQ4_32,Flat", rand(300, 16, 48), 5)
    same = sum(len(set(a) & set(b)) for a, b in zip(I.tolist(), Il.tolist()))
    assert same >= 0.9 * I.size, (I, Il)
    serving(fresh_server)


def test_graphs_of_absurd_degree_are_refused(fresh_server):
    """An HNSW graph holds 2M links for every vector, sized as the vectors are added: with
    M = 2^20 (a number FAISS's factory takes) one add of 3,000 vectors of 2 dimensions asked
    for 25 GB. M (and NSG's R) is served up to 1024, created or imported; 1024 is served."""
    c = fresh_server.client()
    refused(create(c, unique("g"), 2, "HNSW1048576"), "2..1024")
    refused(create(c, unique("g"), 8, "NSG2048"), "1024")
    h, _ = call(c, {"operation": "import_index", "index_id": unique("g")},
                faiss.serialize_index(faiss.IndexHNSWFlat(8, 2048)).tobytes())
    refused(h, "M is served up to 1024")
    h, _ = call(c, {"operation": "import_index", "index_id": unique("g")},
                faiss.serialize_index_binary(faiss.IndexBinaryHNSW(16, 2048)).tobytes())
    refused(h, "binary HNSW", "M is served up to 1024")
    serving(fresh_server)
    name = unique("g")
    assert create(c, name, 2, "HNSW1024")["status"] == "ok"
    assert add(c, name, rand(10, 2, 47))["status"] == "ok"
    serving(fresh_server)
