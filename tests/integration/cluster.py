"""A real faiss-proxy cluster on loopback for the tests: three nats-server
processes (JetStream on, routed to each other, each with its own store) and
three faiss-proxy nodes, each with its own data dir, all on free ports and all
stopped by PID.
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np

from conftest import STOP_TIMEOUT, Server

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
# Stream records carry whole requests (and a trained index): the tests raise
# NATS's max_payload from its 1 MB default, as docs/cluster.md tells operators.
MAX_PAYLOAD = 64 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("nats-server exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nats-server did not listen on %d" % port)


class Nats:
    """One nats-server of the cluster."""

    def __init__(self, root, name, port, cport, routes, max_payload=MAX_PAYLOAD):
        self.name, self.port = name, port
        self.http_port = free_port()  # monitoring (connz): what each client sent
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "nats.conf")
        self.log_path = os.path.join(self.dir, "nats.log")
        with open(self.conf, "w") as f:
            f.write("server_name: %s\nlisten: 127.0.0.1:%d\nmax_payload: %d\n"
                    "http: 127.0.0.1:%d\n"
                    "jetstream { store_dir: \"%s\" }\n"
                    "cluster { name: fpxtest, listen: 127.0.0.1:%d, routes: [%s] }\n"
                    % (name, port, max_payload, self.http_port, os.path.join(self.dir, "js"),
                       cport,
                       ", ".join("nats-route://127.0.0.1:%d" % r for r in routes)))
        self.proc = None

    def wait_ready(self, timeout=30):
        """Until its log says it listens on its own port (a connection alone
        may reach another process that took the port), or it exited."""
        mark = "Listening for client connections on 127.0.0.1:%d" % self.port
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path, errors="replace") as f:
                if mark in f.read():
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("nats-server exited at start")
            time.sleep(0.05)
        raise RuntimeError("nats-server did not say it listens on %d" % self.port)

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([NATS_SERVER, "-c", self.conf], stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None


class Cluster:
    """3 nats-server + 3 faiss-proxy nodes (node1..node3). A node stopped for
    a test's purpose keeps its replicas (--replace-after 0) unless extra says
    otherwise: a module's tests outlast the default 300 s."""

    def __init__(self, root, size=3, max_payload=MAX_PAYLOAD, extra=()):
        self.root, self.size, self.max_payload = root, size, max_payload
        self._place()
        self.nodes = [Server(os.path.join(root, "node%d" % (i + 1), "data"), "",
                             ["--cluster", self.urls, "--node-id", "node%d" % (i + 1),
                              "--replace-after", "0"] + list(extra))
                      for i in range(self.size)]

    def _place(self, root=None):
        """New free ports for the NATS servers (their files under root)."""
        ports = [free_port() for _ in range(2 * self.size)]
        cports = ports[self.size:]
        self.nats = [Nats(root or self.root, "n%d" % (i + 1), ports[i], cports[i],
                          [p for j, p in enumerate(cports) if j != i], self.max_payload)
                     for i in range(self.size)]
        self.urls = ",".join(n.url for n in self.nats)

    def _start_nats(self):
        """Starts the NATS servers; a port taken between its choice and the
        server's bind (another process on the machine) gets new ports, up to
        three times."""
        for attempt in range(3):
            for n in self.nats:
                n.start()
            try:
                for n in self.nats:
                    wait_port(n.port, n.proc)
                    n.wait_ready()
                return
            except RuntimeError:
                for n in self.nats:
                    n.stop()
                taken = any("address already in use" in open(n.log_path, errors="replace").read()
                            for n in self.nats)
                if not taken or attempt == 2:
                    raise
                old = self.urls
                self._place(os.path.join(self.root, "nats-retry%d" % (attempt + 1)))
                for node in self.nodes:
                    node.extra = [self.urls if a == old else a for a in node.extra]

    def start(self):
        self._start_nats()
        for node in self.nodes:
            os.makedirs(os.path.dirname(node.data_dir), exist_ok=True)
            node.start()
        return self

    def stop(self):
        try:
            for node in self.nodes:
                if node.proc is not None:
                    node.stop()
        finally:
            for n in self.nats:
                n.stop()


def node_of(cl, node_id):
    """The node named node_id ("node2") of cl."""
    return cl.nodes[int(node_id[len("node"):]) - 1]


def same_as_faiss(c, name, ref, q):
    """c's search of name for q (k=10) is in-process FAISS's search of ref,
    and its ntotal is ref's."""
    dist, lab, _ = c.search(name, q, 10)
    rd, rl = ref.search(q, 10)
    assert np.array_equal(lab, rl)
    assert np.allclose(dist, rd, rtol=1e-5, atol=1e-5)
    assert c.info(name)["ntotal"] == ref.ntotal


# How long replicas may take to apply the same last record (loaded machines, sanitizers).
SYNC_TIMEOUT = 30


def synced(cs, name):
    """Waits (bounded) until every node applied the same last stream record;
    returns that sequence."""
    deadline = time.time() + SYNC_TIMEOUT
    while True:
        seqs = [c.info(name)["applied_seq"] for c in cs]
        if len(set(seqs)) == 1:
            return seqs[0]
        assert time.time() < deadline, "replicas did not converge: %s" % seqs
        time.sleep(0.05)


def js_api(port, subject, payload=b"", headers=None):
    """One JetStream API request over NATS's text protocol (with headers: a
    publish whose reply is JetStream's acknowledgement); its JSON reply."""
    if headers:
        hdr = b"NATS/1.0\r\n" + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode())
                                          for k, v in headers.items()) + b"\r\n"
        pub = b"HPUB %s _INBOX.fpxtest %d %d\r\n%s%s\r\n" % (
            subject.encode(), len(hdr), len(hdr) + len(payload), hdr, payload)
    else:
        pub = b"PUB %s _INBOX.fpxtest %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"INFO")
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
                  b"SUB _INBOX.fpxtest 1\r\n%sPING\r\n" % pub)
        for _ in range(100):
            line = f.readline()
            assert line, "NATS closed the connection"
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                n = int(line.split()[-1])
                return json.loads(f.read(n + 2)[:n])
        raise AssertionError("no reply from JetStream's API")


def js_read(port, subject, payload=b"", expected=()):
    """A JetStream API read that must answer: an error reply whose code is
    not in expected (a stream leader being elected, a request timed out on a
    loaded machine) is asked again, up to 10 s, then fails the test, so that
    a caller never takes a failed read for an empty answer."""
    deadline = time.time() + 10
    while True:
        r = js_api(port, subject, payload)
        if "error" not in r or r["error"].get("code") in expected:
            return r
        assert time.time() < deadline, (subject, r)
        time.sleep(0.2)


def definition_stored(cl, name, tenant="default"):
    """Whether the bucket fpx_indexes holds a definition of tenant/name."""
    key = "%s/%s" % (tenant.replace(".", "="), name.replace(".", "="))
    r = js_read(cl.nats[0].port, "$JS.API.STREAM.MSG.GET.KV_fpx_indexes",
                json.dumps({"last_by_subj": "$KV.fpx_indexes." + key}).encode(), (404,))
    if "error" in r:
        assert r["error"]["code"] == 404, r
        return False
    hdrs = r["message"].get("hdrs")
    # a deleted key leaves a marker with a KV-Operation header
    return not hdrs or b"KV-Operation" not in base64.b64decode(hdrs)


def kv_value(cl, bucket, key):
    """The value of key in bucket (bytes), or None when it holds none."""
    m = js_read(cl.nats[0].port, "$JS.API.STREAM.MSG.GET.KV_" + bucket,
                json.dumps({"last_by_subj": "$KV.%s.%s" % (bucket, key)}).encode(), (404,))
    if "error" in m:
        assert m["error"]["code"] == 404, m
        return None
    hdrs = m["message"].get("hdrs")
    if hdrs and b"KV-Operation" in base64.b64decode(hdrs):
        return None
    return base64.b64decode(m["message"].get("data") or "")


def stored_keys(cl, bucket, prefix=""):
    """The keys of bucket that hold a value (not a delete marker)."""
    r = js_read(cl.nats[0].port, "$JS.API.STREAM.INFO.KV_" + bucket,
                json.dumps({"subjects_filter": "$KV.%s.>" % bucket}).encode())
    subjects = (r.get("state") or {}).get("subjects") or {}
    keys = [s[len("$KV.%s." % bucket):] for s in subjects]
    out = set()
    for k in keys:
        if not k.startswith(prefix):
            continue
        # 404: deleted (purged) since the listing
        m = js_read(cl.nats[0].port, "$JS.API.STREAM.MSG.GET.KV_" + bucket,
                    json.dumps({"last_by_subj": "$KV.%s.%s" % (bucket, k)}).encode(), (404,))
        hdrs = (m.get("message") or {}).get("hdrs")
        if "message" in m and (not hdrs or b"KV-Operation" not in base64.b64decode(hdrs)):
            out.add(k)
    return out


def kv_delete(cl, bucket, key):
    """Deletes key from bucket as a client of NATS does (a delete marker)."""
    r = js_api(cl.nats[0].port, "$KV.%s.%s" % (bucket, key), b"", {"KV-Operation": "DEL"})
    assert "error" not in r, r


def streams(cl):
    """The names of the JetStream streams of cluster cl."""
    return set(js_read(cl.nats[0].port, "$JS.API.STREAM.NAMES").get("streams") or [])
