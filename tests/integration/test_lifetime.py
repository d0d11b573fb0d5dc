"""The lifetime of the Python drop-in's indexes beyond one object: a program's generated
indexes go at its normal exit even while their objects live (kept ones stay), the exit is
bounded when the server is gone, and pickling gives an independent copy (FAISS's objects
pickle through serialize_index), never a second name for the same server index."""
import os
import pickle
import subprocess

import faiss as real
import numpy as np
import pytest

from conftest import ROOT
from dropin import PY_LIB




def names(client):
    return {i["index_id"] for i in client.ok({"operation": "list_indexes"})[2]["indexes"]}


def program(server, code, lease="60"):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"),
               FAISS_PROXY_SERVER=server.endpoint, FAISS_PROXY_LEASE_SECONDS=lease,
               FAISS_PROXY_LIB=PY_LIB)
    return subprocess.Popen(["/usr/bin/python3", "-c", code], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


EXITING = """
import sys
import faissproxy as faiss
import numpy as np
x = np.random.default_rng(0).random((50, 8), dtype="float32")
alive = faiss.IndexFlatL2(8); alive.add(x)          # still referenced at exit
ivf = faiss.index_factory(8, "IVF4,Flat"); ivf.train(x)
kept = faiss.IndexFlatL2(8).keep()
unkept = faiss.IndexFlatL2(8).keep(); unkept.keep(False)
print(alive.server_name, ivf.server_name, kept.server_name, unkept.server_name, flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("lease", ["60", "0"])
def test_generated_indexes_go_at_exit_kept_ones_stay(server, client, lease):
    p = program(server, EXITING, lease)
    try:
        made = p.stdout.readline().split()
        assert len(made) == 4 and set(made) <= names(client)
        out, err = p.communicate("\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    left = names(client)
    alive, ivf, kept, unkept = made
    assert kept in left
    assert not {alive, ivf, unkept} & left  # gone at once, not when a lease lapses
    client.drop(kept)


def test_exit_is_bounded_when_the_server_is_gone(make_server):
    s = make_server()
    p = program(s, EXITING)
    try:
        assert len(p.stdout.readline().split()) == 4
        s.kill9()
        out, err = p.communicate("\n", timeout=60)  # a hang would be killed here
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err


def test_pickle_gives_an_independent_copy(fp):
    x = np.random.default_rng(1).random((300, 8), dtype="float32")
    a = fp.index_factory(8, "IVF8,Flat")
    a.train(x)
    a.add(x[:200])
    a.nprobe = 3
    b = pickle.loads(pickle.dumps(a))
    assert b.server_name != a.server_name
    assert b.nprobe == 3 and b.ntotal == 200
    ref = real.deserialize_index(fp.serialize_index(a))
    np.testing.assert_array_equal(b.search(x[:20], 5)[1], ref.search(x[:20], 5)[1])
    b.add(x[200:])
    assert (a.ntotal, b.ntotal) == (200, 300)
    del b  # its server index goes; a's stays
    assert a.search(x[:1], 1)[1][0, 0] == 0
    with pytest.raises(TypeError):  # FAISS 1.7.3 cannot pickle binary indexes either
        pickle.dumps(fp.IndexBinaryFlat(16))
    with pytest.raises(TypeError):  # a view's content lives in its IDMap
        sub = fp.IndexFlatL2(8)
        fp.IndexIDMap(sub)
        pickle.dumps(sub)
