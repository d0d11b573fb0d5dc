"""Leases: an index created with lease_seconds is deleted by the server when no
request renews it for that long; renewed, it stays; its lease survives a
restart; and the drop-ins (Python, FAISS C API) create their generated
indexes with a lease that the program renews while it lives, so a program
killed with SIGKILL leaves nothing behind once the lease lapsed."""
import os
import signal
import subprocess
import time

import pytest

from conftest import BUILD, ROOT, SANITIZED, unique
from wire import rand

LEASE = 2  # seconds: short, so the tests stay quick
# Bounded waits for a lapse: the lease, the reaper's tick, and a margin for a
# loaded machine (the sanitizer build is several times slower).
LAPSE_WAIT = LEASE + (30 if SANITIZED else 15)
# An ASan-built library cannot be loaded into a Python started without the
# ASan runtime: with a sanitized server the Python programs use the release
# build of libfaissproxy (the FAISS C API program runs sanitized).
PY_LIB = os.path.join(ROOT, "build" if SANITIZED else BUILD, "libfaissproxy.so")


def names(c):
    return {i["index_id"] for i in c.list()}


def create_leased(c, name, lease=LEASE, dim=4):
    return c.ok({"operation": "create_index", "index_id": name, "dimension": dim,
                 "lease_seconds": lease})[2]


def wait_gone(c, name, timeout=LAPSE_WAIT):
    """Polls list_indexes until name is gone; True if it went within timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if name not in names(c):
            return True
        time.sleep(0.2)
    return False


def test_unrenewed_lease_lapses_and_the_folder_goes(fresh_server):
    c = fresh_server.client()
    name = unique("lease")
    info = create_leased(c, name)
    assert info["lease_seconds"] == LEASE
    assert 0 < info["lease_remaining"] <= LEASE
    c.add(name, rand(3, 4, 1))
    plain = unique("plain")
    c.create(plain, 4)
    assert "lease_seconds" not in c.info(plain)
    folder = os.path.join(fresh_server.data_dir, "default", name)
    assert os.path.isdir(folder)
    t0 = time.time()
    assert wait_gone(c, name), "a lapsed lease must delete the index"
    assert time.time() - t0 >= LEASE - 0.5  # not before its lease lapsed
    assert not os.path.exists(folder)
    assert c.error({"operation": "get_index_info", "index_id": name})["error_type"] == "not_found"
    assert "lease of %d s lapsed" % LEASE in fresh_server.wait_log("lapsed", 10)
    # an index without a lease stays
    assert plain in names(c)


def test_renewed_lease_stays(server, client):
    name, other = unique("lease"), unique("lease")
    create_leased(client, name)
    create_leased(client, other)
    deadline = time.time() + 2.5 * LEASE
    while time.time() < deadline:
        r = client.ok({"operation": "renew_leases", "index_ids": [name, "no_such_index"]})[2]
        assert r == {"renewed": [name], "not_found": ["no_such_index"]}
        time.sleep(LEASE / 4)
    assert name in names(client)
    # any request naming the index renews it too
    deadline = time.time() + 2.5 * LEASE
    while time.time() < deadline:
        client.search(name, rand(1, 4, 2), 1)
        time.sleep(LEASE / 4)
    assert name in names(client)
    # the other one was not renewed
    assert wait_gone(client, other)
    assert wait_gone(client, name)


def test_lease_survives_restart(fresh_server):
    c = fresh_server.client()
    name, short = unique("lease"), unique("lease")
    create_leased(c, name, lease=60)
    c.add(name, rand(5, 4, 3))
    create_leased(c, short, lease=LEASE)
    fresh_server.restart()
    c = fresh_server.client()
    info = c.info(name)
    assert info["lease_seconds"] == 60 and info["ntotal"] == 5
    # counted from the start: nearly all of it is left
    assert 50 < info["lease_remaining"] <= 60
    # the short one is still leased after the restart: it goes
    assert wait_gone(c, short)
    assert name in names(c)
    # after a snapshot too (reset forces one), and a hard restart
    c.ok({"operation": "reset", "index_id": name})
    fresh_server.restart(hard=True)
    c = fresh_server.client()
    assert c.info(name)["lease_seconds"] == 60


@pytest.mark.parametrize("bad", [0, -1, 86401, 2 ** 40, "10", 1.5, True, [5]])
def test_bad_lease_seconds(client, bad):
    name = unique("bad")
    h = client.error({"operation": "create_index", "index_id": name, "dimension": 4,
                      "lease_seconds": bad})
    assert h["error_type"] == "validation_error" and "lease_seconds" in h["message"]
    h = client.error({"operation": "import_index", "index_id": name, "lease_seconds": bad},
                     data=b"x")
    assert h["error_type"] == "validation_error"
    assert name not in names(client)


def test_import_with_lease(client):
    src, name = unique("src"), unique("imp")
    client.create(src, 4)
    client.add(src, rand(4, 4, 5))
    _, data, _ = client.ok({"operation": "export_index", "index_id": src})
    info = client.ok({"operation": "import_index", "index_id": name, "lease_seconds": LEASE},
                     data=data)[2]
    assert info["lease_seconds"] == LEASE and info["ntotal"] == 4
    assert wait_gone(client, name)
    assert src in names(client)


@pytest.mark.parametrize("ids", [None, "x", [1], [".bad"], ["a/b"]])
def test_bad_renew_leases(client, ids):
    h = {"operation": "renew_leases"}
    if ids is not None:
        h["index_ids"] = ids
    assert client.error(h)["error_type"] == "validation_error"


def test_renew_leases_of_another_tenant(auth_server):
    alice, bob = auth_server.client("k1"), auth_server.client("k2")
    name = unique("lease")
    create_leased(alice, name)
    deadline = time.time() + 2.5 * LEASE
    while time.time() < deadline:
        r = bob.ok({"operation": "renew_leases", "index_ids": [name]})[2]
        assert r == {"renewed": [], "not_found": [name]}
        time.sleep(LEASE / 4)
    # bob's renewals did not keep alice's index
    assert wait_gone(alice, name)


# ---- the drop-ins ------------------------------------------------------------------------

def start_program(args, env_extra, ready_file):
    env = dict(os.environ)
    env.update(env_extra)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + (120 if SANITIZED else 60)
    while time.time() < deadline and not os.path.exists(ready_file):
        if proc.poll() is not None:
            raise AssertionError("program exited early: %s" % proc.stderr.read().decode())
        time.sleep(0.05)
    assert os.path.exists(ready_file), "the program did not get ready"
    return proc


def kill_program(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()


PY_PROGRAM = r"""
import sys, time
import numpy as np
import faissproxy as faiss
a = faiss.IndexFlatL2(4)
a.add(np.ones((2, 4), dtype="float32"))
b = faiss.IndexHNSWFlat(4, 8)
open(sys.argv[1], "w").write(a.server_name + "\n" + b.server_name + "\n")
time.sleep(600)
"""


def test_python_dropin_killed_leaves_nothing(server, client, tmp_path):
    ready = str(tmp_path / "ready")
    env = {"PYTHONPATH": os.path.join(ROOT, "python"), "FAISS_PROXY_SERVER": server.endpoint,
           "FAISS_PROXY_LEASE_SECONDS": str(LEASE),
           "FAISS_PROXY_LIB": PY_LIB}
    proc = start_program(["/usr/bin/python3", "-c", PY_PROGRAM, ready], env, ready)
    _leases_follow_the_program(client, proc, open(ready).read().split())


def _kept_index_of_a_program(server, lease_env):
    """The server name of an index a Python drop-in program kept (keep()) and
    then exited, with FAISS_PROXY_LEASE_SECONDS=lease_env."""
    code = ("import faissproxy as faiss\n"
            "a = faiss.IndexFlatL2(4).keep()\n"
            "print(a.server_name)\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"),
               FAISS_PROXY_SERVER=server.endpoint, FAISS_PROXY_LEASE_SECONDS=lease_env,
               FAISS_PROXY_LIB=PY_LIB)
    r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _leases_follow_the_program(client, proc, made):
    """made (a program's indexes, leased) stay while the program lives and
    renews them, and go once it is killed."""
    try:
        assert len(made) == 2
        for n in made:
            assert client.info(n)["lease_seconds"] == LEASE
        time.sleep(2.5 * LEASE)
        assert set(made) <= names(client), "a live program's indexes must stay"
    finally:
        kill_program(proc)
    for n in made:
        assert wait_gone(client, n), "a killed program's index %s must go" % n


def test_python_dropin_lease_off(server, client, tmp_path):
    name = _kept_index_of_a_program(server, "0")
    assert "lease_seconds" not in client.info(name)
    client.drop(name)


def test_python_keep_clears_the_lease(server, client):
    name = _kept_index_of_a_program(server, str(LEASE))
    # kept on purpose: no lease, it outlives the program
    assert "lease_seconds" not in client.info(name)
    time.sleep(LEASE + 1)
    assert name in names(client)
    client.drop(name)


def test_faiss_c_program_killed_leaves_nothing(server, client, tmp_path):
    ready = str(tmp_path / "ready")
    prog = os.path.join(BUILD, "program_c")
    env = {"FAISS_PROXY_SERVER": server.endpoint, "FAISS_PROXY_LEASE_SECONDS": str(LEASE)}
    before = names(client)
    proc = start_program([prog, "--lease-wait", ready], env, ready)
    # the program does not know the names it made
    _leases_follow_the_program(client, proc, names(client) - before)


def test_set_lease(fresh_server):
    c = fresh_server.client()
    name, plain = unique("lease"), unique("plain")
    create_leased(c, name)
    c.create(plain, 4)
    for bad in (-1, 86401, "5", None):
        h = c.error({"operation": "set_lease", "index_id": name, "lease_seconds": bad})
        assert h["error_type"] == "validation_error"
    assert c.error({"operation": "set_lease", "index_id": "nope",
                    "lease_seconds": 0})["error_type"] == "not_found"
    # removed: the index no longer expires, and that is durable (a log record)
    info = c.ok({"operation": "set_lease", "index_id": name, "lease_seconds": 0})[2]
    assert "lease_seconds" not in info
    # given to an index made without one
    c.ok({"operation": "set_lease", "index_id": plain, "lease_seconds": LEASE})
    fresh_server.restart(hard=True)
    c = fresh_server.client()
    assert "lease_seconds" not in c.info(name)
    assert c.info(plain)["lease_seconds"] == LEASE
    assert wait_gone(c, plain)
    time.sleep(1)
    assert name in names(c)
