"""Any node of a cluster answers for any index (docs/cluster.md, "Forwarding"):
three nats-server processes, three data nodes and a router-only fourth node
on loopback.

Proves that a node holding no replica of an index answers every operation
on it exactly as a holder does (its request forwarded to a holder, the reply
relayed unchanged, request_id included), that list_indexes through any node
lists every index of the tenant, that a router-only node serves Flat and IVF
indexes and is never placed, that reads go on through the next holder when
the first is killed with SIGKILL, that a write sent twice with the same
client_id and request_id is applied once, that a forwarded request is
never forwarded again, and that an index lost with its only node is listed as
unavailable and can be deleted through another node.
"""
import json
import os
import re
import time
import urllib.request

import numpy as np
import pytest
import zmq

from cluster import NATS_SERVER, SYNC_TIMEOUT, Cluster, synced
from conftest import Server, unique
from wire import dealer, dealer_recv, dealer_send, decode, encode, rand

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (make build installs it)")


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fwdcluster"))
    c = Cluster(root).start()
    c.router = Server(os.path.join(root, "router", "data"), "",
                      ["--cluster", c.urls, "--node-id", "router", "--router-only",
                       "--metrics-port", "0"])
    try:
        os.makedirs(os.path.dirname(c.router.data_dir), exist_ok=True)
        c.router.start()
        yield c
    finally:
        try:
            if c.router.proc is not None:
                c.router.stop()
        finally:
            c.stop()


def by_id(cl):
    return {"node%d" % (i + 1): n for i, n in enumerate(cl.nodes)}


def gone(cs, name):
    """Waits (bounded) until no node answers for name: the other holders drop
    their replicas when their watchers see the deletion."""
    deadline = time.time() + SYNC_TIMEOUT
    for c in cs:
        while c.call({"operation": "get_index_info", "index_id": name})[0]["status"] == "ok":
            assert time.time() < deadline, "index %s still served" % name
            time.sleep(0.05)
        assert c.error({"operation": "get_index_info",
                        "index_id": name})["error_type"] == "not_found"


def placed_on_two(cl):
    """An index with replicas: 2, created through node1: (name, holders'
    clients, the non-holder's client, placement)."""
    nodes = by_id(cl)
    name = unique("two")
    info = nodes["node1"].client().ok({"operation": "create_index", "index_id": name,
                                       "dimension": 8, "replicas": 2})[2]
    placement = info["replicas"]
    assert len(placement) == 2 and placement[0] == "node1", placement
    other = [n for n in nodes if n not in placement]
    assert len(other) == 1
    return name, [nodes[n].client() for n in placement], nodes[other[0]].client(), placement


def test_non_holder_answers_as_holder(cl):
    """add, search, reconstruct, get_index_info, list_indexes, delete_vector and
    delete_index through the one node of three that holds no replica answer
    exactly as through a holder, and as FAISS itself."""
    import faiss
    name, holders, far, placement = placed_on_two(cl)
    d = 8
    x = rand(40, d, 1)
    got = far.add(name, x[:20], [{"id": "v%d" % i} for i in range(20)])
    assert got == {"count": 20, "ntotal": 20}
    holders[1].add(name, x[20:], [{"id": "v%d" % i} for i in range(20, 40)])
    synced(holders + [far], name)
    ref = faiss.IndexFlatL2(d)
    ref.add(x)
    q = rand(5, d, 2)
    De, Ie = ref.search(q, 4)
    for c in holders + [far]:
        D, I, _ = c.search(name, q, 4)
        assert np.array_equal(I, Ie) and np.allclose(D, De, rtol=1e-5, atol=1e-5)
    # the reply travels unchanged: request_id, header and sections
    h = {"operation": "search", "index_id": name, "k": 3, "vector_shape": [2, d],
         "request_id": "fw-7", "include_metadata": True}
    want = holders[0].call(h, q[:2].tobytes())
    assert far.call(h, q[:2].tobytes()) == want and want[0]["request_id"] == "fw-7"
    r = {"operation": "reconstruct", "index_id": name, "label": 3}
    assert far.call(r) == holders[1].call(r)
    info = far.info(name)
    assert info == holders[0].info(name) and info["replicas"] == placement
    assert info["ntotal"] == 40
    # list_indexes through the non-holder lists the index (it held none before)
    assert [i for i in far.list() if i["index_id"] == name] == [info]
    assert far.delete(name, ["v1", "v2"]) == {"deleted": 2, "ntotal": 38}
    synced(holders + [far], name)
    assert holders[0].info(name)["ntotal"] == 38
    far.drop(name)
    gone(holders + [far], name)


def test_pipelined_adds_through_non_holder_keep_their_order(cl):
    """Unkeyed adds pipelined on one connection to a node holding no replica
    get their labels in the order they were sent, as on a holder."""
    name, holders, far, _ = placed_on_two(cl)
    d, n = 8, 24
    x = rand(n, d, 11)
    sock = dealer(far.endpoint)
    try:
        for i in range(n):
            dealer_send(sock, encode({"operation": "add_vectors", "index_id": name,
                                      "vector_shape": [1, d], "request_id": i},
                                     x[i:i + 1].tobytes()))
        replies = [dealer_recv(sock)[0] for _ in range(n)]
    finally:
        sock.close(0)
    assert sorted(h["request_id"] for h in replies) == list(range(n))
    assert all(h["status"] == "ok" for h in replies), replies
    synced(holders, name)
    _, I, _ = holders[1].search(name, x, 1)
    assert I[:, 0].tolist() == list(range(n))
    holders[0].drop(name)


def test_router_only_serves_flat_and_ivf(cl):
    """A router-only node serves every operation of a Flat and an IVF index,
    created through it, placed on the data nodes only."""
    import faiss
    rc = cl.router.client()
    data = [n.client() for n in cl.nodes]
    d = 16
    flat, ivf = unique("rflat"), unique("rivf")
    for name, typ in ((flat, None), (ivf, "IVF4,Flat")):
        info = rc.create(name, d, typ)
        assert sorted(info["replicas"]) == ["node1", "node2", "node3"]
        assert info["ntotal"] == 0
    # train once through the router; every replica holds the trained index
    rc.train(ivf, rand(500, d, 3))
    rc.ok({"operation": "set_params", "index_id": ivf, "name": "nprobe", "value": 2})
    exported = rc.ok({"operation": "export_index", "index_id": ivf})[1]
    ref_ivf = faiss.deserialize_index(np.frombuffer(exported, "uint8").copy())
    faiss.extract_index_ivf(ref_ivf).nprobe = 2
    ref_flat = faiss.IndexFlatL2(d)
    xb = rand(200, d, 4)
    for name in (flat, ivf):
        assert rc.add(name, xb[:100]) == {"count": 100, "ntotal": 100}
        data[1].add(name, xb[100:])
    ref_flat.add(xb)
    ref_ivf.add(xb)
    got = rc.ok({"operation": "reconstruct", "index_id": flat, "label": 7})[1]
    assert np.array_equal(np.frombuffer(got, "<f4"), xb[7])
    q = rand(6, d, 5)
    for name, ref in ((flat, ref_flat), (ivf, ref_ivf)):
        synced(data, name)
        De, Ie = ref.search(q, 5)
        D, I, _ = rc.search(name, q, 5)
        assert np.array_equal(I, Ie) and np.allclose(D, De, rtol=1e-5, atol=1e-5)
        assert rc.info(name)["ntotal"] == 200
        assert "router" not in rc.info(name)["replicas"]
        rr = rc.ok({"operation": "remove_ids", "index_id": name, "ids": [0, 1]})[2]
        assert rr["removed"] == 2 and rr["ntotal"] == 198
    # an error only the holder can tell (the dimension) comes back as the
    # holder gave it, and the router's metrics count it as that error
    e = rc.error({"operation": "search", "index_id": flat, "k": 1, "vector_shape": [1, d + 1]},
                 rand(1, d + 1, 9).tobytes())
    assert e["error_type"] == "validation_error" and "dimension" in e["message"]
    m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", cl.router.log())
    text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % m.group(1), timeout=10).read()
    assert re.search(rb'faiss_proxy_requests_total\{operation="search",status="validation_error"\} 1\b',
                     text), text
    assert re.search(rb'faiss_proxy_requests_total\{operation="search",status="ok"\} 2\b', text)
    listed = {i["index_id"]: i for i in rc.list()}
    assert listed[flat]["ntotal"] == 198 and listed[ivf]["ntotal"] == 198
    assert listed[ivf]["is_trained"] is True
    # the router holds nothing, and is never placed
    assert not os.path.exists(os.path.join(cl.router.data_dir, "default", flat))
    for name in (flat, ivf):
        rc.drop(name)
        gone(data + [rc], name)


def test_write_sent_twice_is_applied_once(cl):
    """A write carrying client_id and request_id is stored once however often
    it is sent and through whichever node; the repeats get the first reply's
    fields. Without client_id, a repeat is a new write (as before)."""
    cs = [n.client() for n in cl.nodes] + [cl.router.client()]
    d, name = 8, unique("dedup")
    cs[0].create(name, d)
    x = rand(10, d, 6)
    h = {"operation": "add_vectors", "index_id": name, "vector_shape": [10, d],
         "client_id": "test-client-%d" % os.getpid(), "request_id": 41}
    first = cs[0].call(h, x.tobytes())
    assert first[0]["status"] == "ok" and first[2] == {"count": 10, "ntotal": 10}
    for c in cs:  # the same node, the other holders, and the router
        again = c.call(h, x.tobytes())
        assert again == first
    synced(cs[:3], name)
    for c in cs:
        assert c.info(name)["ntotal"] == 10
        _, I, _ = c.search(name, x, 1)
        assert I[:, 0].tolist() == list(range(10))  # labels 0..9: applied once
    # a string request_id too; and another request_id is another write
    h2 = dict(h, request_id="again-1")
    assert cs[1].call(h2, x.tobytes())[2] == {"count": 10, "ntotal": 20}
    assert cs[2].call(h2, x.tobytes())[2]["ntotal"] == 20
    # without client_id: applied twice, as today
    plain = {k: v for k, v in h.items() if k != "client_id"}
    cs[0].ok(plain, x.tobytes())
    assert cs[0].ok(plain, x.tobytes())[2]["ntotal"] == 40
    bad = cs[0].error(dict(h, client_id="short"), x.tobytes())
    assert bad["error_type"] == "validation_error" and "client_id" in bad["message"]
    cs[0].drop(name)


def kv_get(port, bucket, key):
    """A value of a JetStream key-value bucket, read with NATS's own text
    protocol (a direct message get on the bucket's stream)."""
    import base64
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        f = s.makefile("rb")
        f.readline()  # INFO
        req = json.dumps({"last_by_subj": "$KV.%s.%s" % (bucket, key)}).encode()
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.kv 1\r\n'
                  b"PUB $JS.API.STREAM.MSG.GET.KV_%s _INBOX.kv %d\r\n%s\r\n"
                  % (bucket.encode(), len(req), req))
        while True:
            line = f.readline()
            assert line, "NATS closed the connection"
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                payload = f.read(int(line.split()[-1]) + 2)[:-2]
                return base64.b64decode(json.loads(payload)["message"]["data"])
    finally:
        s.close()


def test_forwarded_request_not_forwarded_again(cl):
    """A request that reaches a node holding no replica through another
    node's forwarding socket (its routing id carries the cluster's forwarding
    token, kept in NATS) is answered unavailable, never forwarded; a client
    that takes the prefix without the token is served as a client."""
    name, holders, far, placement = placed_on_two(cl)
    token = kv_get(cl.nats[0].port, "fpx_cluster", "forward_token")
    assert len(token) == 32
    spoof = zmq.Context.instance().socket(zmq.DEALER)
    spoof.setsockopt(zmq.ROUTING_ID, b"fpx-fwd:%s:x" % (b"0" * 32))
    spoof.setsockopt(zmq.RCVTIMEO, 30000)
    spoof.setsockopt(zmq.LINGER, 0)
    spoof.connect(far.endpoint)
    try:
        spoof.send_multipart([b"", encode({"operation": "get_index_info", "index_id": name,
                                           "request_id": 4})])
        h, _, _ = decode(spoof.recv_multipart()[-1])
        assert h["status"] == "ok" and h["request_id"] == 4, h  # forwarded, as a client's
        shard = ".shard-" + "0" * 32 + "-0"
        spoof.send_multipart([b"", encode({"operation": "get_index_info", "index_id": shard})])
        h, _, _ = decode(spoof.recv_multipart()[-1])
        assert h["error_type"] == "validation_error", h  # shard names are the nodes' only
    finally:
        spoof.close(0)
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.ROUTING_ID, b"fpx-fwd:%s:test-%d" % (token, os.getpid()))
    s.setsockopt(zmq.RCVTIMEO, 30000)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(far.endpoint)
    try:
        s.send_multipart([b"", encode({"operation": "get_index_info", "index_id": name,
                                       "request_id": 5})])
        frames = s.recv_multipart()
        h, _, _ = decode(frames[-1])
        assert h["status"] == "error" and h["error_type"] == "unavailable", h
        assert "not forwarded again" in h["message"] and h["request_id"] == 5
        assert h.get("published") is False
        # the same from a plain client is forwarded
        assert far.info(name)["replicas"] == placement
    finally:
        s.close(0)
    holders[0].drop(name)


def test_first_holder_killed_reads_go_on(cl):
    """kill -9 of the index's first holder: reads through the node holding no
    replica go on, answered by the next holder."""
    name, holders, far, placement = placed_on_two(cl)
    d = 8
    x = rand(30, d, 8)
    far.add(name, x)
    synced(holders, name)
    q = rand(3, d, 9)
    want = far.search(name, q, 4)
    first = by_id(cl)[placement[0]]
    first.kill9()
    try:
        deadline = time.time() + 60
        for _ in range(5):  # each read, while the killed node still looks live too
            got = far.search(name, q, 4)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            assert far.info(name)["ntotal"] == 30
            assert time.time() < deadline
    finally:
        first.start()
    far.drop(name)


def test_libfaissproxy_sends_again_after_unavailable(cl):
    """Every NATS server is killed: the nodes answer `unavailable`. A call of
    libfaissproxy (here through the CLI's search) made meanwhile is sent again,
    the same request, until the servers are back (FAISS_PROXY_RETRIES), and
    then answers; with no retries, it fails with the node's `unavailable`."""
    import subprocess
    from conftest import BUILD
    cli = os.path.join(BUILD, "faiss-proxy")
    node = cl.nodes[0]
    c = node.client()
    d, name = 8, unique("retry")
    c.create(name, d)
    x = rand(20, d, 10)
    c.add(name, x)
    qfile = os.path.join(os.path.dirname(node.data_dir), "q.npy")
    np.save(qfile, x[:2])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAISS_PROXY_")}
    env["FAISS_PROXY_SERVER"] = node.endpoint

    def search(retries):
        return subprocess.Popen([cli, "search", name, "--query", qfile, "-k", "1", "--json"],
                                env=dict(env, FAISS_PROXY_RETRIES=str(retries)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    for n in cl.nats:
        n.kill9()
    try:
        deadline = time.time() + 30
        while c.call({"operation": "get_index_info", "index_id": name})[0].get(
                "error_type") != "unavailable":
            assert time.time() < deadline, "the node never noticed NATS was gone"
            time.sleep(0.1)
        out, err = search(0).communicate(timeout=60)
        assert "unavailable" in err, (out, err)
        p = search(8)  # pauses 0.2 s, 0.4 s, ... up to 51 s in all
        time.sleep(1.0)
    finally:
        for n in cl.nats:
            n.start()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, (out, err)
    got = json.loads(out)
    assert [q["results"][0]["label"] for q in got] == [0, 1]  # each query's own vector
    deadline = time.time() + 60  # JetStream elects its leaders again after the restart
    while c.call({"operation": "delete_index", "index_id": name})[0]["status"] != "ok":
        assert time.time() < deadline, "the index could not be deleted after the restart"
        time.sleep(0.2)
    # The streams and buckets elect their leaders one by one: the next tests
    # start once every node can place, write to and delete an index again.
    for node in by_id(cl).values():
        nc, probe = node.client(), unique("probe")
        while nc.call({"operation": "create_index", "index_id": probe,
                       "dimension": 4})[0]["status"] != "ok":
            assert time.time() < deadline, "the cluster did not serve again after the restart"
            time.sleep(0.2)
        while nc.call({"operation": "delete_index", "index_id": probe})[0]["status"] != "ok":
            assert time.time() < deadline, "the cluster did not serve again after the restart"
            time.sleep(0.2)


def test_index_whose_only_node_is_lost(cl):
    """An index whose only replica is on a node killed with SIGKILL: list_indexes
    through another node still lists the tenant's other indexes (sorted by
    index_id, as one server lists them) and names the lost one under
    `unavailable` with why, rather than failing whole or leaving it out; once
    the node is no longer live, delete_index through another node deletes it
    from its definition; the node, started again, drops its replica, and the
    name can be made again."""
    nodes = by_id(cl)
    one, two = nodes["node1"].client(), nodes["node2"].client()
    lost, kept = unique("lost"), unique("kept")
    info = one.ok({"operation": "create_index", "index_id": lost, "dimension": 4,
                   "replicas": 1})[2]
    assert info["replicas"] == ["node1"]
    two.ok({"operation": "create_index", "index_id": kept, "dimension": 4, "replicas": 1})
    one.add(lost, rand(5, 4, 1))
    assert os.path.isdir(os.path.join(nodes["node1"].data_dir, "default", lost))
    nodes["node1"].kill9()
    try:
        meta = two.ok({"operation": "list_indexes"})[2]
        names = [i["index_id"] for i in meta["indexes"]]
        assert kept in names and lost not in names and names == sorted(names)
        assert [u["index_id"] for u in meta["unavailable"]] == [lost], meta
        assert "node1" in meta["unavailable"][0]["error"]
        e = two.error({"operation": "get_index_info", "index_id": lost})
        assert e["error_type"] == "unavailable", e
        deadline = time.time() + 30  # until node1's heartbeat lapses
        while True:
            h = two.call({"operation": "delete_index", "index_id": lost})[0]
            if h["status"] == "ok":
                break
            assert h["error_type"] == "unavailable", h
            assert time.time() < deadline, h
            time.sleep(0.2)
        meta = two.ok({"operation": "list_indexes"})[2]
        assert lost not in [i["index_id"] for i in meta["indexes"]]
        assert "unavailable" not in meta, meta
        assert two.error({"operation": "get_index_info",
                          "index_id": lost})["error_type"] == "not_found"
    finally:
        nodes["node1"].start()
    one = nodes["node1"].client()
    deadline = time.time() + SYNC_TIMEOUT
    while os.path.exists(os.path.join(nodes["node1"].data_dir, "default", lost)):
        assert time.time() < deadline, "node1 kept the deleted index's replica"
        time.sleep(0.1)
    assert lost not in [i["index_id"] for i in one.list()]
    two.ok({"operation": "create_index", "index_id": lost, "dimension": 4})
    assert two.info(lost)["ntotal"] == 0
    two.drop(lost)
    two.drop(kept)
