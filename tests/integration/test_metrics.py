"""The metrics endpoint (--metrics-port): /metrics in Prometheus's text
format, checked by promtool and scraped by a real Prometheus server, with
counters that follow the requests made; /healthz and /readyz; bounded label
sets; and bad HTTP that leaves the vector service undisturbed."""
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import SANITIZED, unique
from wire import rand

WAIT = 60 if SANITIZED else 20


def _get(port, path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def _samples(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def _value(s, name, **labels):
    return s.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def msrv(make_server):
    srv = make_server(extra=("--metrics-port", "0"))
    return srv, srv.metrics_port()


def test_promtool_accepts_and_counters_follow_requests(msrv):
    srv, port = msrv
    c = srv.client()
    name = unique()
    c.create(name, 8)
    c.add(name, rand(100, 8, 1), [{"id": "k%d" % i} for i in range(100)])
    for _ in range(7):
        c.search(name, rand(1, 8, 2), 3)
    c.error({"operation": "search", "index_id": "no_such_index", "k": 1,
             "vector_shape": [1, 8]}, rand(1, 8, 3).tobytes())
    c.error({"operation": "no_such_operation"})
    status, ctype, text = _get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
    s = _samples(text)
    assert _value(s, "faiss_proxy_requests_total", operation="search", status="ok") == 7
    assert _value(s, "faiss_proxy_requests_total", operation="search", status="not_found") == 1
    assert _value(s, "faiss_proxy_requests_total", operation="unknown",
                  status="unsupported") == 1
    assert _value(s, "faiss_proxy_requests_total", operation="add_vectors", status="ok") == 1
    assert _value(s, "faiss_proxy_request_duration_seconds_count", operation="search") == 8
    assert _value(s, "faiss_proxy_request_duration_seconds_bucket", operation="search",
                  le="+Inf") == 8
    assert _value(s, "faiss_proxy_wal_fsync_seconds_count") >= 1  # the add's log write
    # each found search went through the batcher on a worker, or was answered
    # by the network thread (the first measures the index on a worker)
    assert _value(s, "faiss_proxy_batch_queries_count") >= 1
    assert _value(s, "faiss_proxy_batch_queries_count") + \
        _value(s, "faiss_proxy_requests_inline_total") >= 7
    assert _value(s, "faiss_proxy_indexes") == 1
    assert _value(s, "faiss_proxy_vectors") == 100
    assert _value(s, "faiss_proxy_index_vectors", tenant="default", index=name) == 100
    assert _value(s, "faiss_proxy_tenant_vectors", tenant="default") == 100
    assert _value(s, "faiss_proxy_connections") >= 1
    assert _value(s, "faiss_proxy_workers") >= 2
    assert _value(s, "faiss_proxy_ready") == 1
    assert _value(s, "process_resident_memory_bytes") > 1e6


def test_health_ready_and_bad_http(msrv):
    srv, port = msrv
    assert _get(port, "/healthz")[0] == 200
    assert _get(port, "/readyz")[:1] == (200,)
    assert _get(port, "/nope")[0] == 404
    assert _get(port, "/metrics", method="POST")[0] == 405
    # Garbage, a huge header and a half-sent request on the metrics port: the
    # endpoint refuses or drops them, the vector service does not notice.
    for junk in (b"\x00\xff" * 1000 + b"\r\n\r\n", b"GET /metrics HTTP/1.1\r\nX: " +
                 b"a" * 200000 + b"\r\n\r\n", b"GET /metr"):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sk:
            try:
                sk.sendall(junk)
                sk.shutdown(socket.SHUT_WR)
                sk.recv(4096)
            except OSError:
                pass  # a reset is an answer too
    assert srv.client().ping()["protocol"] == 1
    assert _get(port, "/metrics")[0] == 200


def test_connections_gauge_goes_down(msrv):
    srv, port = msrv
    before = _value(_samples(_get(port, "/metrics")[2]), "faiss_proxy_connections")
    clients = [srv.client() for _ in range(3)]
    for c in clients:
        c.ping()
    s = _samples(_get(port, "/metrics")[2])
    assert _value(s, "faiss_proxy_connections") == before + 3
    for c in clients:
        c.close()
    end = time.time() + WAIT
    while time.time() < end:
        now = _value(_samples(_get(port, "/metrics")[2]), "faiss_proxy_connections")
        if now == before:
            break
        time.sleep(0.05)
    assert now == before


def test_index_series_are_bounded(msrv):
    srv, port = msrv
    c = srv.client()
    for i in range(25):
        n = "many%02d" % i
        c.create(n, 4)
        c.add(n, rand(i + 1, 4, i))
    s = _samples(_get(port, "/metrics")[2])
    series = [k for k in s if k[0] == "faiss_proxy_index_vectors"]
    assert len(series) == 20  # the largest only
    assert _value(s, "faiss_proxy_indexes") == 25
    assert _value(s, "faiss_proxy_vectors") == sum(range(1, 26))
    kept = {dict(k[1])["index"] for k in series}
    assert "many24" in kept and "many00" not in kept


def test_off_by_default_and_bad_settings(make_server, tmp_path):
    srv = make_server()
    assert "metrics on" not in srv.log()
    from conftest import SERVER
    for args in (["--metrics-port", "70000"], ["--metrics-bind", "not-an-address",
                                                "--metrics-port", "0"]):
        p = subprocess.run([SERVER, "--port", "0", "--data-dir", str(tmp_path / "d")] + args,
                           capture_output=True, timeout=60)
        assert p.returncode != 0
        assert b"metrics" in p.stderr


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus is not installed")
def test_a_real_prometheus_scrapes_it(msrv, tmp_path):
    srv, port = msrv
    c = srv.client()
    name = unique()
    c.create(name, 4)
    c.add(name, rand(10, 4, 5))
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        web = sk.getsockname()[1]
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n"
                   "  - job_name: faiss-proxy\n    static_configs:\n"
                   "      - targets: ['127.0.0.1:%d']\n" % port)
    log = open(tmp_path / "prometheus.log", "wb")
    p = subprocess.Popen(["prometheus", "--config.file=%s" % cfg,
                          "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
                          "--web.listen-address=127.0.0.1:%d" % web], stdout=log, stderr=log)
    try:
        end = time.time() + 60
        got = None
        while time.time() < end and got is None:
            time.sleep(0.5)
            try:
                q = "faiss_proxy_index_vectors{index=\"%s\"}" % name
                url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (
                    web, urllib.request.quote(q))
                with urllib.request.urlopen(url, timeout=5) as r:
                    res = json.loads(r.read())["data"]["result"]
                if res:
                    got = res
            except (OSError, ValueError, KeyError):
                pass
        assert got, open(tmp_path / "prometheus.log").read()[-3000:]
        assert float(got[0]["value"][1]) == 10
        url = "http://127.0.0.1:%d/api/v1/query?query=up" % web
        with urllib.request.urlopen(url, timeout=5) as r:
            up = json.loads(r.read())["data"]["result"]
        assert up and up[0]["value"][1] == "1"
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
