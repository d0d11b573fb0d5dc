"""scripts/faiss-suite.py, the measure of the drop-in by FAISS's own tests: the
request counter it relies on, its rewriting of faiss imports, and its
classification, end to end on a small FAISS-style test file against the real
server (the script starts its own, from this build)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import BUILD, ROOT, SANITIZED

sys.path.insert(0, os.path.join(ROOT, "python"))
# As in test_python.py: a Python not started with the ASan runtime loads the
# release build of libfaissproxy.
_LIB_BUILD = os.path.join(ROOT, "build") if SANITIZED else BUILD
os.environ.setdefault("FAISS_PROXY_LIB", os.path.join(_LIB_BUILD, "libfaissproxy.so"))
import faissproxy  # noqa: E402

SCRIPT = os.path.join(ROOT, "scripts", "faiss-suite.py")
RUN_TIMEOUT = 600 if SANITIZED else 300


def _suite_module():
    spec = importlib.util.spec_from_file_location("faiss_suite", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def proxy(server):
    faissproxy.configure(server=server.endpoint, api_key="")
    yield faissproxy
    faissproxy._lib.Config.server = None
    faissproxy.configure()


def test_requests_sent_counts_what_goes_to_the_server(proxy):
    rng = np.random.default_rng(0)
    xb = rng.random((50, 8), dtype="float32")
    before = faissproxy._lib.requests_sent()
    index = proxy.IndexFlatL2(8)  # create
    index.add(xb)  # add
    D, I = index.search(xb[:3], 2)  # search
    assert list(I[:, 0]) == [0, 1, 2]
    assert faissproxy._lib.requests_sent() - before >= 3
    # Requests built by the drop-in itself (search params, statistics) count too.
    before = faissproxy._lib.requests_sent()
    D2, I2 = index.search(xb[:3], 2, params=proxy.SearchParameters())
    np.testing.assert_array_equal(I2, I)
    assert faissproxy._lib.requests_sent() == before + 1
    # Local work sends nothing: the counter tells a served test from a local one.
    before = faissproxy._lib.requests_sent()
    x = xb.copy()
    proxy.normalize_L2(x)
    km = proxy.Kmeans(8, 2, niter=2)  # not served: local faiss's
    km.train(xb)
    assert faissproxy._lib.requests_sent() == before
    # A request the server refuses was still sent, and counts.
    with pytest.raises(Exception):
        index.reconstruct(10 ** 6)
    assert faissproxy._lib.requests_sent() == before + 1


def test_rewrite_points_faiss_imports_at_the_drop_in():
    suite = _suite_module()
    src = textwrap.dedent("""\
        import numpy as np
        import faiss
        import faiss as ff
        from faiss import IndexFlatL2, \\
            METRIC_L2
        from faiss import (
            IndexFlatIP,
        )
        from faiss.contrib import evaluation
        import faiss.contrib.evaluation


        def f():
            import faiss  # inside a function too
            return faiss
        """)
    out = suite.rewrite_for_proxy(src)
    lines = out.splitlines()
    assert len(lines) == len(src.splitlines())  # tracebacks keep their line numbers
    assert lines[1] == "import faissproxy as faiss"
    assert lines[2] == "import faissproxy as ff"
    assert lines[3].startswith("from faissproxy import IndexFlatL2")
    assert lines[5] == "from faissproxy import ("
    assert lines[8] == "from faiss.contrib import evaluation"  # local contrib, unchanged
    assert "import faissproxy as faiss" in lines[9]
    assert "import faissproxy as faiss" in lines[13]
    ns = {}
    exec(compile(out, "rewritten", "exec"), ns)
    assert ns["faiss"] is faissproxy and ns["ff"] is faissproxy and ns["f"]() is faissproxy
    assert ns["faiss"].contrib.evaluation is ns["evaluation"]  # reached through the drop-in


FAKE_TESTS = '''\
"""A FAISS-style test file: one test of each class the report tells apart."""
import unittest

import numpy as np
import faiss


class TestFake(unittest.TestCase):

    def data(self):
        return np.random.RandomState(1).rand(200, 8).astype("float32")

    def peek(self, index):
        return faiss.vector_to_array(index.codes)

    def test_served(self):
        xb = self.data()
        index = faiss.IndexFlatL2(8)
        index.add(xb)
        D, I = index.search(xb[:5], 1)
        np.testing.assert_array_equal(I.ravel(), np.arange(5))

    def test_local_only(self):
        km = faiss.Kmeans(8, 4, niter=3, seed=2)
        km.train(self.data())
        self.assertEqual(km.centroids.shape, (4, 8))

    def test_fails_through_server(self):
        index = faiss.IndexFlatL2(8)
        self.assertTrue(type(index).__module__.startswith("faiss."))

    def test_internals(self):
        index = faiss.IndexFlatL2(8)
        index.add(self.data())
        self.assertEqual(self.peek(index).size, 200 * 8 * 4)

    def test_fails_with_faiss(self):
        self.assertEqual(faiss.IndexFlatL2(8).d, 9)
'''


def _run_suite(src, out_dir, *extra):
    cmd = [sys.executable, SCRIPT, "--src", src, "--build", BUILD, "--timeout", "240",
           "--out", os.path.join(out_dir, "report.md"),
           "--json", os.path.join(out_dir, "report.json")] + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def test_suite_classifies_each_test_against_the_real_server(tmp_path):
    src = tmp_path / "faiss-src"
    (src / "tests").mkdir(parents=True)
    (src / "tests" / "test_fake.py").write_text(FAKE_TESTS)
    got = _run_suite(str(src), str(tmp_path), "--check", "--files", "tests/test_fake.py")
    assert got.returncode == 1, got.stdout + got.stderr  # --check: not everything served
    with open(tmp_path / "report.json") as f:
        tests = {t["test"].split("::")[-1]: t for t in json.load(f)["tests"]}
    assert set(tests) == {"test_served", "test_local_only", "test_fails_through_server",
                          "test_internals", "test_fails_with_faiss"}
    assert tests["test_served"]["faiss_ok"] and tests["test_served"]["class"] == "server"
    assert tests["test_served"]["requests"] >= 3
    assert tests["test_local_only"]["faiss_ok"] and tests["test_local_only"]["class"] == "local"
    assert tests["test_local_only"]["requests"] == 0
    t = tests["test_fails_through_server"]
    assert t["faiss_ok"] and t["class"] == "failed" and "AssertionError" in t["reason"]
    t = tests["test_internals"]  # found through the helper it calls
    assert t["faiss_ok"] and t["internals"] == [".codes", "vector_to_array"]
    assert t["class"] == "failed"
    assert not tests["test_fails_with_faiss"]["faiss_ok"]
    assert "test_local_only: passed without sending a request" in got.stderr
    assert "test_fails_through_server: failed through the server" in got.stderr
    assert "test_fails_with_faiss" not in got.stderr  # not the drop-in's to pass
    report = (tmp_path / "report.md").read_text()
    # served / (passing with faiss and reading no internals): test_served of 3
    assert "1 / 3 (33%) pass through the server" in report
    assert "| tests/test_fake.py | 5 | 1 | 4 | 1 | 1 | 1 | 2 | 0 | 1 / 3 (33%) |" in report

    # A selection of served tests passes the check.
    got = _run_suite(str(src), str(tmp_path), "--check", "--files",
                     "tests/test_fake.py::TestFake::test_served")
    assert got.returncode == 0, got.stdout + got.stderr
    with open(tmp_path / "report.json") as f:
        assert [t["class"] for t in json.load(f)["tests"]] == ["server"]
