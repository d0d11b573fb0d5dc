"""The deployment files: the Dockerfile's package lists and deploy/compose.yml.

There is no Docker daemon on the machines that run this suite, so the image is
not built here. What can go wrong in it is checked against this machine (the
same Debian release as the image's base): every library CMake requires comes
from a package the build stage installs, and every shared library the copied
binaries load from a package the runtime stage installs (or one it depends
on). The compose file is run as its processes: its three NATS servers (with
deploy/nats.conf) and its three nodes (with their environment and the image's),
host names and ports turned into free loopback ports, must form a cluster that
serves a sharded index through every node.
"""
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from cluster import NATS_SERVER, free_port
from conftest import BUILD, ROOT, SERVER, STOP_TIMEOUT
from wire import Client, rand

yaml = pytest.importorskip("yaml")

DOCKERFILE = os.path.join(ROOT, "Dockerfile")
COMPOSE = os.path.join(ROOT, "deploy", "compose.yml")
NATS_CONF = os.path.join(ROOT, "deploy", "nats.conf")
# What debian:bookworm-slim holds already (apt itself needs them).
BASE = {"libc6", "libgcc-s1", "libstdc++6"}
# The sanitizers' runtimes, which a sanitized build of this suite loads and the
# image's release build does not.
SANITIZER_RUNTIMES = re.compile(r"lib(asan|ubsan|tsan|lsan)\.so")


def dockerfile():
    with open(DOCKERFILE) as f:
        return f.read().replace("\\\n", " ")


def stage_packages(text):
    """The packages of each stage's apt-get install, in order."""
    out = []
    for m in re.finditer(r"apt-get install ([^&]*)&&", text):
        out.append({w for w in m.group(1).split() if not w.startswith("-")})
    return out


def owners(paths):
    """The Debian package that installed each path (following links, and
    both sides of the /lib -> /usr/lib merge), in one dpkg call."""
    tries = {}
    for path in paths:
        real = os.path.realpath(path)
        tries[path] = [path, real, real.replace("/usr/lib/", "/lib/", 1),
                       real.replace("/lib/", "/usr/lib/", 1)]
    out = subprocess.run(["dpkg", "-S"] + sorted({t for ts in tries.values() for t in ts}),
                         capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        pkgs, _, path = line.partition(": ")
        found[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    result = {}
    for path, ts in tries.items():
        hit = [found[t] for t in ts if t in found]
        assert hit, "no package owns %s (%s)" % (path, ts[1])
        result[path] = hit[0]
    return result


def closure(packages):
    """packages and what they depend on, as this machine's dpkg knows it."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Depends},${Pre-Depends}\n"],
                         capture_output=True, text=True, check=True).stdout
    deps = {}
    for line in out.splitlines():
        name, _, rest = line.partition("\t")
        deps.setdefault(name, []).extend(
            a.strip().split(" ")[0].split(":")[0] for a in rest.replace("|", ",").split(","))
    seen, todo = set(), list(packages)
    while todo:
        p = todo.pop()
        if p and p not in seen:
            seen.add(p)
            todo.extend(deps.get(p, ()))
    return seen


@pytest.mark.skipif(not shutil.which("dpkg"), reason="needs Debian's dpkg")
def test_dockerfile_build_stage_has_what_cmake_requires():
    build, _ = stage_packages(dockerfile())
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        cmake = f.read()
    modules = re.findall(r"pkg_check_modules\(\w+ REQUIRED IMPORTED_TARGET (\S+)\)", cmake)
    assert {"libzmq", "msgpack", "libnats"} <= set(modules), modules
    files = {"zlib": "/usr/include/zlib.h", "faiss": "/usr/include/faiss/Index.h"}
    for m in modules:
        pcdir = subprocess.run(["pkg-config", "--variable=pcfiledir", m], capture_output=True,
                               text=True, check=True).stdout.strip()
        files[m] = os.path.join(pcdir, m + ".pc")
    pkg = owners(files.values())
    needed = {m: pkg[f] for m, f in files.items()}
    missing = {m: p for m, p in needed.items() if p not in build}
    assert not missing, "the Dockerfile's build stage lacks %s" % missing


@pytest.mark.skipif(not shutil.which("dpkg"), reason="needs Debian's dpkg")
def test_dockerfile_runtime_stage_has_what_the_binaries_load():
    text = dockerfile()
    _, runtime = stage_packages(text)
    have = closure(runtime)
    copied = re.findall(r"/src/build/([\w.*-]+)", text)
    binaries = [b for b in copied if "*" not in b]
    assert "faiss-proxy-server" in binaries, copied
    loads = []
    for b in binaries:
        out = subprocess.run(["ldd", os.path.join(BUILD, b)], capture_output=True, text=True,
                             check=True).stdout
        for lib, path in re.findall(r"^\s*(\S+) => (\S+)", out, re.M):
            if SANITIZER_RUNTIMES.match(lib):
                continue
            if not os.path.realpath(path).startswith(os.path.realpath(BUILD)):
                loads.append((lib, path, b))  # not a library of ours, copied beside them
    pkg = owners({path for _, path, _ in loads})
    missing = {}
    for lib, path, b in loads:
        if pkg[path] not in BASE and pkg[path] not in have:
            missing.setdefault(pkg[path], []).append("%s (%s)" % (lib, b))
    assert not missing, "the Dockerfile's runtime stage lacks %s" % missing
    assert "nats-server" in runtime  # the image runs the cluster's NATS servers too


def interpolate(value, env):
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?message}."""
    def one(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError("compose would refuse to start: " + arg)
        return arg or ""
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, str(value))


def image_env():
    return dict(re.findall(r"(\w+)=(\S+)", re.search(r"^ENV (.*)$", dockerfile(), re.M).group(1)))


class Local:
    """deploy/compose.yml's services as local processes."""

    def __init__(self, root, api_keys):
        with open(COMPOSE) as f:
            self.spec = yaml.safe_load(f)
        self.root, self.env = root, {"FAISS_PROXY_API_KEYS": api_keys}
        self.services = self.spec["services"]
        # every (host, port) a service listens on or is reached at, on loopback
        self.ports = {}
        for name in self.services:
            for port in (4222, 6222, 5555):
                self.ports[(name, port)] = free_port()
        self.procs = []

    def rewrite(self, text, name):
        """Host names and container ports of the compose file as loopback ports,
        the container's own wildcard listens as this service's ports."""
        for (host, port), local in self.ports.items():
            text = text.replace("%s:%d" % (host, port), "127.0.0.1:%d" % local)
        for port in (4222, 6222, 5555):
            text = text.replace("0.0.0.0:%d" % port, "127.0.0.1:%d" % self.ports[(name, port)])
        return text

    def start_nats(self, name, svc):
        assert svc["command"][0] == "nats-server", svc
        with open(NATS_CONF) as f:
            conf = self.rewrite(f.read(), name)
        data = os.path.join(self.root, name)
        os.makedirs(data)
        conf = conf.replace("/var/lib/nats", data)
        path = os.path.join(data, "nats.conf")
        with open(path, "w") as f:
            f.write(conf)
        mounts = [v.split(":") for v in svc["volumes"]]
        assert ["./nats.conf", "/etc/nats/nats.conf", "ro"] in mounts, mounts
        assert any(m[1] == "/var/lib/nats" for m in mounts), mounts  # JetStream's store kept
        env = dict(os.environ, **{k: interpolate(v, self.env)
                                  for k, v in svc.get("environment", {}).items()})
        cmd = [NATS_SERVER] + [path if a == "/etc/nats/nats.conf" else a for a in svc["command"][1:]]
        log = open(os.path.join(data, "nats.log"), "wb")
        self.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()

    def start_node(self, name, svc):
        data = os.path.join(self.root, name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAISS")}
        env.update(image_env())
        for k, v in svc["environment"].items():
            env[k] = self.rewrite(interpolate(v, self.env), name)
        # the image's listen address and data dir, on this machine
        assert env["FAISS_BIND_ADDRESS"] == "0.0.0.0" and env["FAISS_PORT"] == "5555"
        env["FAISS_BIND_ADDRESS"] = "127.0.0.1"
        env["FAISS_PORT"] = str(self.ports[(name, 5555)])
        assert any(v.endswith(":" + env["FAISS_DATA_DIR"]) for v in svc["volumes"])
        env["FAISS_DATA_DIR"] = data
        os.makedirs(data)
        log_path = os.path.join(self.root, name + ".log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([SERVER], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        want = "listening on tcp://127.0.0.1:%d" % self.ports[(name, 5555)]
        deadline = time.time() + 90
        while time.time() < deadline:
            with open(log_path, errors="replace") as f:
                text = f.read()
            if want in text:
                return
            assert proc.poll() is None, "node %s exited:\n%s" % (name, text)
            time.sleep(0.1)
        raise AssertionError("node %s did not listen:\n%s" % (name, text))

    def start(self):
        nats = [n for n, s in self.services.items() if s.get("command", [""])[0] == "nats-server"]
        nodes = [n for n in self.services if n not in nats]
        assert len(nats) == 3 and len(nodes) == 3, self.services
        for n in nats:
            self.start_nats(n, self.services[n])
        for n in nodes:
            assert set(self.services[n]["depends_on"]) == set(nats)
            self.start_node(n, self.services[n])
        return nodes

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.skipif(NATS_SERVER is None, reason="needs nats-server")
def test_compose_file_runs_a_cluster(tmp_path):
    local = Local(str(tmp_path), "deploykey:acme")
    with pytest.raises(AssertionError, match="FAISS_PROXY_API_KEYS"):
        interpolate(local.services["node1"]["environment"]["FAISS_PROXY_API_KEYS"], {})
    try:
        nodes = local.start()
        cs = [Client("tcp://127.0.0.1:%d" % local.ports[(n, 5555)], api_key="deploykey")
              for n in nodes]
        d = 16
        cs[0].ok({"operation": "create_index", "index_id": "docs", "dimension": d, "shards": 3})
        x = rand(300, d, 1)
        cs[1].add("docs", x)
        # another node sees the write once its replicas applied it (docs/cluster.md,
        # "What a read sees"): typically at once, later on a slow (sanitized) run
        deadline = time.time() + 30
        while any(c.info("docs")["ntotal"] != 300 for c in cs) and time.time() < deadline:
            time.sleep(0.05)
        info = cs[2].info("docs")
        assert info["shards"] == 3 and info["ntotal"] == 300
        held = {node for shard in info["shard_map"] for node in shard}
        assert held == set(nodes), info["shard_map"]  # the three nodes hold the shards
        for c in cs:
            _, I, _ = c.search("docs", x[:20], 1)
            assert np.array_equal(I[:, 0], np.arange(20))
        bad = Client(cs[0].endpoint, api_key="wrong")
        assert bad.error({"operation": "list_indexes"})["error_type"] == "authentication_error"
    finally:
        local.stop()
