"""What the Python benchmarks share: a process's RSS, a free loopback port,
and a faiss-proxy server started on it and answering."""
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def rss_kb(pid="self"):
    """Resident set size of a process (this one by default), in KiB."""
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(build, data_dir, *extra):
    """A server on a free loopback port with data_dir; returns (process,
    endpoint, a wire.Client connected to it) once it answers a ping."""
    from wire import Client
    port = free_port()
    p = subprocess.Popen([os.path.join(build, "faiss-proxy-server"), "--bind", "127.0.0.1",
                          "--port", str(port), "--data-dir", data_dir, *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = "tcp://127.0.0.1:%d" % port
    for _ in range(600):
        c = Client(endpoint)
        try:
            c.ping()
            return p, endpoint, c
        except Exception:  # noqa: BLE001 - not up yet
            c.close()
            time.sleep(0.1)
    p.kill()
    raise RuntimeError("the server at %s did not answer within 60 s" % endpoint)
