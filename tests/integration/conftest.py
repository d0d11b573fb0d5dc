"""Starts the real faiss-proxy-server binary on a free loopback port with a
temporary data directory, and checks on every stop that it exited cleanly
(and, in the sanitizer build, that ASan/UBSan/LSan reported nothing).

FPX_BUILD_DIR names the build folder (default: build/ of this checkout);
FPX_SANITIZED=1 marks an ASan+UBSan build (slower: longer timeouts).
FPX_ONE_CPU=1 runs the tests, and their servers, on one CPU (below).
"""
import os

# In-process FAISS, the tests' reference, with OpenBLAS on one thread as the
# server runs it (engine.cpp, fpx_engine_tune_for_server): OpenBLAS reads this
# when it is loaded (with numpy, below), and its multi-threaded kernels can
# round the last bit of a distance differently on some CPUs (docs/python.md,
# "The rule"). Set before any import that loads it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# FPX_ONE_CPU=1 (the ThreadSanitizer pass, Makefile): this test process, and so
# every server it starts, runs on one CPU, so that FAISS sizes its OpenMP teams
# to one thread and libgomp's pool (which TSan cannot see) never starts. Under
# pytest-xdist, worker gwN takes the N-th allowed CPU, so the workers do not
# share one.
if os.environ.get("FPX_ONE_CPU") == "1":
    # The CPUs allowed before any pinning, kept for xdist's workers, which
    # start from the controller's (already pinned) process.
    os.environ.setdefault("FPX_ALLOWED_CPUS", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
    _cpus = [int(c) for c in os.environ["FPX_ALLOWED_CPUS"].split(",")]
    _worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    _n = int(_worker[2:]) if _worker[2:].isdigit() else 0
    os.sched_setaffinity(0, {_cpus[_n % len(_cpus)]})

import itertools  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from wire import Client  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("FPX_BUILD_DIR", os.path.join(ROOT, "build"))
SANITIZED = os.environ.get("FPX_SANITIZED") == "1"
SERVER = os.path.join(BUILD, "faiss-proxy-server")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer", "WARNING: ThreadSanitizer")
START_TIMEOUT = 120 if SANITIZED else 60
STOP_TIMEOUT = 120 if SANITIZED else 60
_names = itertools.count()


def unique(prefix="ix"):
    return "%s%d_%d" % (prefix, os.getpid(), next(_names))


class Server:
    """One server process over one data dir; restartable on the same dir."""

    def __init__(self, data_dir, api_keys="", extra=()):
        self.data_dir = data_dir
        self.api_keys = api_keys
        self.extra = list(extra)
        self.proc = None
        self.endpoint = None
        self.port = None
        self.log_path = None
        self.starts = 0
        self.clients = []

    def start(self, port=0):
        self.starts += 1
        self.log_path = os.path.join(self.data_dir + ".logs", "server-%d.log" % self.starts)
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        args = [SERVER, "--bind", "127.0.0.1", "--port", str(port), "--data-dir", self.data_dir,
                "--workers", "2"] + self.extra
        if self.api_keys is not None:  # None: no --api-keys, the default (no keys)
            args += ["--api-keys", self.api_keys]
        env = dict(os.environ)
        for k in ("FAISS_BIND_ADDRESS", "FAISS_PORT", "FAISS_DATA_DIR", "FAISS_PROXY_API_KEYS",
                  "FAISS_PROXY_ALLOW_REMOTE_UNAUTHENTICATED", "FAISS_PROXY_CURVE_SECRET_KEY_FILE"):
            env.pop(k, None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            m = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", self.log())
            if m:
                self.port = int(m.group(1))
                self.endpoint = "tcp://127.0.0.1:%d" % self.port
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("server exited at start:\n" + self.log())
            time.sleep(0.05)
        raise RuntimeError("server did not start:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, timeout):
        """The log once it holds text, or as it is after timeout seconds: a line
        written after the reply it follows may reach the file a moment later."""
        end = time.time() + timeout
        while text not in self.log() and time.time() < end:
            time.sleep(0.05)
        return self.log()

    def metrics_port(self):
        """The port the server's log says /metrics is served on (--metrics-port 0)."""
        end = time.time() + (60 if SANITIZED else 20)
        while time.time() < end:
            m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.log())
            if m:
                return int(m.group(1))
            time.sleep(0.05)
        raise AssertionError("no metrics line in the log:\n" + self.log()[-2000:])

    def client(self, api_key=None, tenant_id=None):
        c = Client(self.endpoint, api_key, tenant_id)
        self.clients.append(c)
        return c

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _close_clients(self):
        for c in self.clients:
            c.close()
        self.clients = []

    def check_log(self):
        text = self.log()
        for mark in SANITIZER_MARKS:
            assert mark not in text, "sanitizer report in the server log:\n" + text[-20000:]

    def stop(self):
        """SIGTERM; the server must exit 0 with a clean log."""
        self._close_clients()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None
        self.check_log()
        assert rc == 0, "server exit status %d:\n%s" % (rc, self.log()[-5000:])

    def kill9(self):
        """SIGKILL: no clean shutdown, no snapshot; the logs must carry every write."""
        self._close_clients()
        self.proc.send_signal(signal.SIGKILL)
        rc = self.proc.wait(timeout=STOP_TIMEOUT)
        assert rc == -signal.SIGKILL, rc  # it was running until the kill
        self.proc = None
        self.check_log()

    kill = kill9

    def restart(self, hard=False):
        """Stops (SIGTERM, or kill -9 when hard) and starts again on the same data dir."""
        if hard:
            self.kill9()
        else:
            self.stop()
        return self.start()


def _make(tmp_path_factory, api_keys="", extra=()):
    d = str(tmp_path_factory.mktemp("fpx")) + "/data"
    return Server(d, api_keys, extra).start()


@pytest.fixture
def data_dir(tmp_path):
    """A fresh data dir (not yet created: the server creates it)."""
    return str(tmp_path / "data")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A shared server without auth (tests use unique index names)."""
    s = _make(tmp_path_factory)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


AUTH_KEYS = "k1:alice,k2:bob,k3:alice"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    s = _make(tmp_path_factory, AUTH_KEYS)
    yield s
    s.stop()


@pytest.fixture
def fresh_server(tmp_path_factory):
    """A server of its own, for tests that kill or restart it."""
    s = _make(tmp_path_factory)
    yield s
    if s.proc is not None:
        s.stop()


@pytest.fixture
def make_server(tmp_path_factory):
    """Factory for servers with options; all stopped (and checked) at teardown."""
    made = []

    def make(api_keys="", extra=(), data_dir=None):
        if data_dir is None:
            data_dir = str(tmp_path_factory.mktemp("fpx")) + "/data"
        s = Server(data_dir, api_keys, extra).start()
        made.append(s)
        return s

    yield make
    for s in made:
        if s.proc is not None:
            s.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (needs root, as in CI); skipped where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.decode(errors="replace"))
    yield str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _configured_dropin(server):
    from dropin import faissproxy  # loaded by the tests that use it only
    faissproxy.configure(server=server.endpoint, api_key="")
    yield faissproxy
    faissproxy._lib.Config.server = None
    faissproxy.configure()


@pytest.fixture
def fp(server):
    """The Python drop-in (faissproxy) configured for the shared server."""
    yield from _configured_dropin(server)


@pytest.fixture(name="proxy")
def proxy_fixture(server):
    """fp under the name the older drop-in tests use."""
    yield from _configured_dropin(server)
