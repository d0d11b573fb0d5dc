"""Adds and searches larger than the server's message size limit, through the
Python drop-in (and so libfaissproxy): they go in parts under the advertised
max_message_size, in order, and give in-process FAISS's results; a part that
fails leaves the parts before it added, as documented."""
import os
import subprocess
import sys

import faiss
import numpy as np

import conftest

LIMIT = 65536
# An ASan-built library cannot be loaded into a Python not started with the
# ASan runtime: the Python package uses the release build's library (the C
# client's splitting runs under ASan in test_client_limits).
PY_LIB = os.path.join(conftest.ROOT, "build", "libfaissproxy.so") if conftest.SANITIZED \
    else os.path.join(conftest.BUILD, "libfaissproxy.so")
ENV = dict(os.environ, FAISS_PROXY_LIB=PY_LIB, PYTHONPATH=os.path.join(conftest.ROOT, "python"))


def run(code, *args):
    r = subprocess.run([sys.executable, "-c", code] + [str(a) for a in args],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


SPLIT = r'''
import sys
import numpy as np
import faissproxy
endpoint, out = sys.argv[1], sys.argv[2]
faissproxy.configure(server=endpoint, api_key="", timeout=20)
rng = np.random.default_rng(7)
d = 64
xb = rng.random((3000, d), dtype="float32")      # 768 KB: a dozen requests
xq = rng.random((1000, d), dtype="float32")      # 256 KB of queries
flat = faissproxy.IndexFlatL2(d)
flat.add(xb)
D, I = flat.search(xq, 10)
idmap = faissproxy.IndexIDMap(faissproxy.IndexFlatL2(d))
idmap.add_with_ids(xb, 10 * np.arange(len(xb), dtype="int64") + 3)
D2, I2 = idmap.search(xq, 10)
lims, RD, RI = flat.range_search(xq[:600], 6.0)
np.savez(out, ntotal=[flat.ntotal, idmap.ntotal], D=D, I=I, D2=D2, I2=I2, lims=lims, RD=RD, RI=RI)
'''


def test_split_add_and_search_match_faiss(make_server, tmp_path):
    s = make_server(extra=["--max-message-size", str(LIMIT)])
    out = tmp_path / "r.npz"
    run(SPLIT, s.endpoint, out)
    got = np.load(out)
    rng = np.random.default_rng(7)
    d = 64
    xb = rng.random((3000, d), dtype="float32")
    xq = rng.random((1000, d), dtype="float32")
    ref = faiss.IndexFlatL2(d)
    ref.add(xb)
    D, I = ref.search(xq, 10)
    assert list(got["ntotal"]) == [3000, 3000]
    assert np.array_equal(got["I"], I)
    assert np.allclose(got["D"], D, rtol=1e-5, atol=1e-4)
    assert np.array_equal(got["I2"], 10 * I + 3)
    assert np.allclose(got["D2"], D, rtol=1e-5, atol=1e-4)
    lims, RD, RI = ref.range_search(xq[:600], 6.0)
    assert np.array_equal(got["lims"], lims)
    for q in range(600):  # the order within a query's results is FAISS's
        a, b = lims[q], lims[q + 1]
        assert sorted(got["RI"][a:b]) == sorted(RI[a:b])
    assert lims[-1] > 600  # the radius finds something


PARTIAL = r'''
import sys
import numpy as np
import faissproxy
faissproxy.configure(server=sys.argv[1], api_key="", timeout=20)
x = np.random.default_rng(3).random((3000, 64), dtype="float32")
index = faissproxy.IndexFlatL2(64).keep()  # kept: read by the test after the program's exit
try:
    index.add(x)
except RuntimeError as e:
    print("error_type", e.error_type)
    print("message", e)
print("ntotal", index.ntotal)
'''


def test_split_add_is_not_atomic(make_server):
    """A quota refuses a later part: the earlier parts stay, and the error
    says how many vectors went in."""
    s = make_server(extra=["--max-message-size", str(LIMIT), "--tenant-max-vectors", "1000"])
    out = run(PARTIAL, s.endpoint)
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["error_type"] == "limit_exceeded", out
    added = int(lines["ntotal"])
    assert 0 < added <= 1000, out
    assert "first %d of 3000 vectors were added" % added in lines["message"], out
    c = s.client()
    (info,) = c.list()
    assert info["ntotal"] == added
