"""Runs inside a network namespace of its own (test_security.py starts it with
`unshare --net`): gives the namespace a second, non-loopback address on a
dummy interface (or a veth pair when the dummy driver is missing), starts the
real server bound to 0.0.0.0 in three configurations and asks it from
loopback and from that address. Prints one JSON line with what each client
got. Nothing leaves the namespace: its interfaces exist only inside it.

usage: netns_probe.py SERVER_BINARY TMP_DIR NO_REPLY_MS
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import msgpack
import zmq

ADDRESS = "10.213.7.1"


def sh(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30).returncode == 0


def setup_interfaces():
    if not sh("ip", "link", "set", "lo", "up"):
        sys.exit("cannot bring up lo in the namespace")
    if sh("ip", "link", "add", "fpx0", "type", "dummy"):
        links = ["fpx0"]
    elif sh("ip", "link", "add", "fpx0", "type", "veth", "peer", "name", "fpx1"):
        links = ["fpx0", "fpx1"]
    else:
        sys.exit("cannot create a dummy or veth interface in the namespace")
    ok = sh("ip", "addr", "add", ADDRESS + "/24", "dev", "fpx0")
    for link in links:
        ok = ok and sh("ip", "link", "set", link, "up")
    if not ok:
        sys.exit("cannot configure %s in the namespace" % ADDRESS)


def body(header):
    hb = msgpack.packb(header, use_bin_type=True)
    pre = msgpack.packb({"header_size": len(hb), "vector_size": 0, "metadata_size": 0})
    return pre + hb


def ask(endpoint, header, wait_ms):
    """The reply's status or error_type, or None when no reply came in wait_ms."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    # A refused handshake can leave the REQ socket with no peer to queue to:
    # a send must not wait for one for ever.
    sock.setsockopt(zmq.SNDTIMEO, wait_ms)
    sock.connect(endpoint)
    try:
        try:
            sock.send(body(header))
        except zmq.Again:
            return None
        if sock.poll(wait_ms, zmq.POLLIN) == 0:
            return None
        raw = sock.recv()
        u = msgpack.Unpacker(raw=False)
        u.feed(raw)
        pre = u.unpack()
        off = u.tell()
        h = msgpack.unpackb(raw[off:off + pre["header_size"]], raw=False)
        return h["status"] if h["status"] == "ok" else h["error_type"]
    finally:
        sock.close(0)


class Server:
    def __init__(self, binary, tmp, name, args):
        self.log_path = os.path.join(tmp, name + ".log")
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--bind", "0.0.0.0", "--port", "0", "--workers", "2", "--data-dir",
             os.path.join(tmp, name)] + args, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        self.port = None
        while time.time() < deadline and self.port is None:
            m = re.search(r"listening on tcp://0\.0\.0\.0:(\d+)", self.log())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None:
                sys.exit("server exited at start:\n" + self.log())
            else:
                time.sleep(0.05)
        if self.port is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
            sys.exit("server did not start:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def at(self, host):
        return "tcp://%s:%d" % (host, self.port)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=120)
        self.log_file.close()
        return rc


def main():
    binary, tmp, no_reply_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
    setup_interfaces()
    ping = {"operation": "ping"}
    out = {"address": ADDRESS, "logs": [], "exit_codes": []}

    s = Server(binary, tmp, "protected", [])
    out["protected"] = {
        "loopback": ask(s.at("127.0.0.1"), ping, 60000),
        "remote": ask(s.at(ADDRESS), ping, no_reply_ms),
        # more connections from the same address: refused each time, logged once
        "remote_again": [ask(s.at(ADDRESS), ping, 300) for _ in range(5)],
        "remote_loopback_after": ask(s.at("127.0.0.1"), ping, 60000),
    }
    out["exit_codes"].append(s.stop())
    out["logs"].append(s.log())

    s = Server(binary, tmp, "allowed", ["--allow-remote-unauthenticated"])
    out["allowed"] = {"remote": ask(s.at(ADDRESS), ping, 60000)}
    out["exit_codes"].append(s.stop())
    out["logs"].append(s.log())

    s = Server(binary, tmp, "keys", ["--api-keys", "k1:t1"])
    out["keys"] = {"remote": ask(s.at(ADDRESS), ping, 60000),
                   "remote_with_key": ask(s.at(ADDRESS), dict(ping, api_key="k1"), 60000)}
    out["exit_codes"].append(s.stop())
    out["logs"].append(s.log())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
