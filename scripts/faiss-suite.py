#!/usr/bin/python3
"""faiss-suite.py - measures the Python drop-in (python/faissproxy) with FAISS
1.7.3's own Python tests (tests/test_*.py) and tutorials (tutorial/python/).

Each chosen file runs twice under pytest, each time in a subprocess and a
scratch folder of its own:
  1. as is, with real faiss: which tests FAISS itself passes here;
  2. rewritten so that `import faiss` is `import faissproxy as faiss`, against
     a faiss-proxy server this script starts for the file (build/'s binary, a
     free loopback port, a scratch data dir; stopped by its PID).
A pytest plugin (scripts/faiss_suite_plugin.py) records each test's outcome,
the first line of its error and how many requests the process sent to the
server while the test ran (faissproxy._lib.requests_sent()). So a test that
passes through the drop-in is told apart from one that passed only because
every name it used fell back to local faiss. A static scan of each test's
source (and of the helpers it calls in its file) flags tests that read FAISS's
internals (.codes, .invlists, swig_ptr, ...), which a served index cannot
expose; the headline ratio leaves them out:

    of the tests that pass with faiss and read no internals,
    how many pass through the server.

The FAISS sources come from Debian's source package of the installed
libfaiss-dev (scripts/faiss-source.sh, cached outside the repository), or
from --src. Nothing of FAISS is written into the repository.

    scripts/faiss-suite.py                       # everything: docs/faiss-suite.md
    scripts/faiss-suite.py --files tests/test_io.py --out /tmp/io.md
    scripts/faiss-suite.py --check --files tests/test_x.py::TestY ...

--check exits 1 when a test of the selection that passes with faiss does not
pass through the server (it fails, is skipped, or no longer sends a request):
the short run of `make test` (make faiss-suite-short).
"""
import argparse
import ast
import datetime
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
TUTORIALS = ("tutorial/python/1-Flat.py", "tutorial/python/2-IVFFlat.py",
             "tutorial/python/3-IVFPQ.py")
START_TIMEOUT = 60
STOP_TIMEOUT = 60

# What a served index cannot expose: FAISS's own data structures and the SWIG
# plumbing that reaches into them. Attribute names (index.codes, ...):
INTERNAL_ATTRS = frozenset((
    "codes", "invlists", "storage", "direct_map", "id_map", "rev_map", "pq", "sq", "rq",
    "lsq", "prq", "plsq", "aq", "refine_pq", "codebooks", "own_fields", "own_invlists",
    "this", "chain"))
# ... functions and methods (faiss.swig_ptr(...), index.get_xb(), ...):
INTERNAL_CALLS = frozenset((
    "swig_ptr", "rev_swig_ptr", "vector_to_array", "vector_float_to_array",
    "copy_array_to_vector", "downcast_index", "downcast_VectorTransform",
    "downcast_InvertedLists", "downcast_Quantizer", "extract_index_ivf",
    "try_extract_index_ivf", "get_xb", "get_list_size", "get_codes", "get_ids",
    "get_invlist", "get_invlist_sizes", "get_pq_centroids", "get_additive_quantizer_codebooks",
    "get_flat_data", "get_NSG_neighbors", "get_LinearTransform_matrix",
    "cast_integer_to_float_ptr", "cast_integer_to_idx_t_ptr", "cast_integer_to_uint8_ptr"))
# ... an HNSW graph beyond its search parameters (index.hnsw.levels, ...):
HNSW_PARAMS = frozenset(("efSearch", "efConstruction", "search_bounded_queue"))
# ... and anything of faiss.contrib.inspect_tools, whose purpose is to read them.
INTERNAL_MODULES = ("inspect_tools",)


# ---- rewriting a file for the drop-in ------------------------------------------------------


def _replace_segment(lines, node, text):
    """Replaces node's source (positions in UTF-8 bytes, as ast gives them) by text,
    keeping the line count so that tracebacks point at the original lines."""
    first, last = node.lineno - 1, node.end_lineno - 1
    head = lines[first].encode()[:node.col_offset].decode()
    tail = lines[last].encode()[node.end_col_offset:].decode()
    if first == last:
        lines[first] = head + text + tail
    else:
        lines[first] = head + text + "\n"
        for i in range(first + 1, last):
            lines[i] = "\n"
        lines[last] = tail.lstrip(" \t\\") or "\n"


def _rewrite_import(node):
    """`import faiss` and its kin, as statements on one line."""
    out = []
    for a in node.names:
        if a.name == "faiss":
            out.append("import faissproxy as %s" % (a.asname or "faiss"))
        elif a.name.startswith("faiss.") and a.asname is None:
            # faiss.contrib.x stays local faiss's, loaded; the name faiss is the
            # drop-in, which hands out local faiss's own attributes (contrib too)
            # for the names it does not serve.
            out.append("import %s as _fpx_local_%d" % (a.name, len(out)))
            out.append("import faissproxy as faiss")
        else:
            out.append("import %s%s" % (a.name, " as " + a.asname if a.asname else ""))
    return "; ".join(out)


def rewrite_for_proxy(source):
    """The source with faiss's imports pointed at faissproxy:
         import faiss [as f]          -> import faissproxy as faiss [f]
         from faiss import X          -> from faissproxy import X
         import faiss.contrib.m       -> the module loaded from local faiss, faiss = faissproxy
         from faiss.contrib... import -> unchanged: contrib is local code, given served indexes
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
                a.name == "faiss" or a.name.startswith("faiss.") for a in node.names):
            edits.append((node, _rewrite_import(node)))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "faiss":
            edits.append((node, None))
    for node, text in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        if text is not None:
            _replace_segment(lines, node, text)
        else:
            i = node.lineno - 1
            b = lines[i].encode()
            head, rest = b[:node.col_offset].decode(), b[node.col_offset:].decode()
            lines[i] = head + re.sub(r"^from\s+faiss\b", "from faissproxy", rest, count=1)
    return "".join(lines)


def _sibling_modules(path, seen=None):
    """Modules next to path that it imports (common_faiss_tests.py), transitively."""
    seen = set() if seen is None else seen
    here = os.path.dirname(path)
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        for n in names:
            p = os.path.join(here, n + ".py")
            if os.path.isfile(p) and p not in seen and p != path:
                seen.add(p)
                _sibling_modules(p, seen)
    return seen


# ---- which tests read FAISS's internals ----------------------------------------------------


def _markers(node, internal_names):
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute):
            if n.attr in INTERNAL_ATTRS:
                found.add("." + n.attr)
            if n.attr in INTERNAL_CALLS or n.attr in INTERNAL_MODULES:
                found.add(n.attr)
            if isinstance(n.value, ast.Attribute) and n.value.attr == "hnsw" and \
                    n.attr not in HNSW_PARAMS:
                found.add("hnsw." + n.attr)
        elif isinstance(n, ast.Name) and (n.id in INTERNAL_CALLS or n.id in internal_names):
            found.add(n.id)
    return found


class _Module:
    """A test file's functions and classes, for following a test into its helpers."""

    def __init__(self, paths):
        self.funcs, self.classes, self.internal_names = {}, {}, set()
        for p in paths:  # the file last: its own names win
            with open(p) as f:
                tree = ast.parse(f.read())
            self.tree = tree
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.funcs[node.name] = node
                elif isinstance(node, ast.ClassDef):
                    self.classes[node.name] = node
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and any(
                        m in node.module.split(".") for m in INTERNAL_MODULES):
                    self.internal_names.update(a.asname or a.name for a in node.names)

    def methods(self, cls_name, seen=None):
        """name -> node over the class and its bases defined here, nearest first."""
        seen = set() if seen is None else seen
        node = self.classes.get(cls_name)
        if node is None or cls_name in seen:
            return {}
        seen.add(cls_name)
        out = {}
        for b in reversed(node.bases):
            if isinstance(b, ast.Name):
                out.update(self.methods(b.id, seen))
        out.update({n.name: n for n in node.body
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))})
        return out

    def reach(self, node, cls_name):
        """The test function and every helper of this file it calls, transitively."""
        methods = self.methods(cls_name) if cls_name else {}
        todo, done = [node], []
        while todo:
            n = todo.pop()
            if any(n is d for d in done):
                continue
            done.append(n)
            for c in ast.walk(n):
                if not isinstance(c, ast.Call):
                    continue
                f = c.func
                if isinstance(f, ast.Name) and f.id in self.funcs:
                    todo.append(self.funcs[f.id])
                elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and \
                        f.value.id in ("self", "cls") and f.attr in methods:
                    todo.append(methods[f.attr])
        return done

    def internals_of_script(self):
        """Markers anywhere in the file: a tutorial is one script, run as one test."""
        return sorted(_markers(self.tree, self.internal_names))

    def internals(self, test):
        """Markers read by test ("Class::method" or "function"), sorted."""
        parts = test.split("::")
        if len(parts) == 2:
            node, cls_name = self.methods(parts[0]).get(parts[1]), parts[0]
        else:
            node, cls_name = self.funcs.get(parts[0]), None
        if node is None:
            return []
        found = set()
        for n in self.reach(node, cls_name):
            found |= _markers(n, self.internal_names)
        return sorted(found)


# ---- the server ----------------------------------------------------------------------------


class Server:
    """build/faiss-proxy-server on a free loopback port over a scratch data dir."""

    def __init__(self, binary, workdir):
        self.binary, self.workdir = binary, workdir
        self.proc, self.endpoint = None, None
        self.log_path = os.path.join(workdir, "server.log")

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def start(self):
        # Its settings are the flags below and the defaults: none from this environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAISS_")}
        args = [self.binary, "--bind", "127.0.0.1", "--port", "0", "--data-dir",
                os.path.join(self.workdir, "data"), "--api-keys", ""]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            m = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", self.log())
            if m:
                self.endpoint = "tcp://127.0.0.1:%s" % m.group(1)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited at start:\n" + self.log()[-3000:])
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError("the server did not start in %d s:\n%s" % (START_TIMEOUT,
                                                                      self.log()[-3000:]))

    def stop(self):
        """SIGTERM; a note when the server had died during the run or exits badly."""
        died = self.proc.poll()
        if died is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "the server did not stop within %d s of SIGTERM" % STOP_TIMEOUT
            return "" if rc == 0 else "the server exited with status %d at stop" % rc
        return "the server died during the run (exit status %d)" % died


# ---- running one file ----------------------------------------------------------------------


def _display_id(rel, nodeid):
    """test_x.py::A::b -> tests/test_x.py::A::b; a tutorial's wrapper -> its script."""
    if rel.startswith("tutorial/"):
        return rel + "::run"
    return os.path.dirname(rel) + "/" + nodeid if os.path.dirname(rel) else nodeid


def _stage(src_root, rel, mode, tmp):
    """Copies the file (and its sibling modules) into tmp, rewritten in proxy mode; the
    pytest target to run there."""
    path = os.path.join(src_root, rel)

    def put(p, name):
        with open(p) as f:
            text = f.read()
        with open(os.path.join(tmp, name), "w") as f:
            f.write(rewrite_for_proxy(text) if mode == "proxy" else text)

    put(path, os.path.basename(path))
    for p in _sibling_modules(path):
        put(p, os.path.basename(p))
    if rel.startswith("tutorial/"):
        # A tutorial is a script: one test runs it in the pytest process, where
        # the plugin sees the requests it sends.
        with open(os.path.join(tmp, "test_tutorial.py"), "w") as f:
            f.write("import os, runpy\n\n\ndef test_run():\n    runpy.run_path(os.path.join("
                    "os.path.dirname(__file__), %r), run_name='__main__')\n"
                    % os.path.basename(path))
        return "test_tutorial.py"
    return os.path.basename(path)


def run_file(src_root, rel, selector, mode, timeout, env_extra, keep_logs):
    """Runs one file under pytest; returns (records by display id, notes, seconds)."""
    tmp = tempfile.mkdtemp(prefix="fpx-suite-%s-" % mode)
    try:
        target = _stage(src_root, rel, mode, tmp)
        if selector:
            target += "::" + selector
        results = os.path.join(tmp, ".results.jsonl")
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("FAISS_PROXY_") and k != "FAISS_PROXY_LIB":
                del env[k]
        paths = [SCRIPTS] + ([os.path.join(ROOT, "python")] if mode == "proxy" else [])
        env.update(PYTHONPATH=os.pathsep.join(paths), FPX_SUITE_RESULTS=results,
                   PYTHONDONTWRITEBYTECODE="1", **env_extra)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
               "faiss_suite_plugin", "--rootdir", tmp, "-o", "addopts=", target]
        log_path = os.path.join(tmp, ".pytest.log")
        notes = []
        t0 = time.time()
        with open(log_path, "wb") as log:
            # A session of its own, so that a file which times out is killed with
            # every process it started (by the group of the PID started here).
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
                notes.append("stopped after the per-file timeout of %d s" % timeout)
            except BaseException:  # interrupted: leave no test process behind
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        elapsed = time.time() - t0
        if rc is not None and rc < 0:
            notes.append("pytest was killed by signal %d" % -rc)
        records, started = {}, {}
        if os.path.exists(results):
            with open(results) as f:
                for line in f:
                    r = json.loads(line)
                    key = _display_id(rel, r["nodeid"])
                    if r["outcome"] == "started":
                        started[key] = r
                    else:
                        started.pop(key, None)
                        records[key] = r
        for key in started:  # began, never ended: the timeout or a crash took it
            records[key] = {"nodeid": key, "outcome": "failed", "requests": 0,
                            "error": notes[-1] if notes else "the test process died"}
        if rc not in (0, 1, 5, None) and not records:  # 5: nothing collected
            with open(log_path, "rb") as f:
                tail = f.read().decode("utf-8", "replace").strip().splitlines()[-1:]
            notes.append("pytest exit status %d: %s" % (rc, tail[0] if tail else ""))
        if keep_logs:
            os.makedirs(keep_logs, exist_ok=True)
            shutil.copy(log_path, os.path.join(
                keep_logs, "%s.%s.log" % (rel.replace("/", "_"), mode)))
        return records, notes, elapsed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- classification and the report ---------------------------------------------------------


def classify(faiss_rec, proxy_rec, missing):
    """The proxy run's class of a test: server, local, failed, skipped."""
    if proxy_rec is None:
        return "failed", missing or "not run through the server"
    out = proxy_rec["outcome"]
    if out == "passed":
        return ("server" if proxy_rec["requests"] > 0 else "local"), ""
    if out in ("skipped", "xfailed"):
        return "skipped", proxy_rec.get("error", "")
    return "failed", proxy_rec.get("error", "") or out


def measure(args, src_root, server_bin, keep_logs):
    files = []
    for spec in args.files:
        rel, _, selector = spec.partition("::")
        files.append((rel, selector))
    tests, file_notes = [], {}
    t_start = time.time()
    for rel, selector in files:
        module = _Module(sorted(_sibling_modules(os.path.join(src_root, rel))) +
                         [os.path.join(src_root, rel)])
        faiss_recs, fnotes, ft = run_file(src_root, rel, selector, "faiss", args.timeout, {},
                                          keep_logs)
        work = tempfile.mkdtemp(prefix="fpx-suite-server-")
        try:
            server = Server(server_bin, work).start()
            try:
                proxy_recs, pnotes, pt = run_file(
                    src_root, rel, selector, "proxy", args.timeout,
                    {"FAISS_PROXY_SERVER": server.endpoint, "FPX_BUILD_DIR": args.build},
                    keep_logs)
            finally:
                snote = server.stop()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if snote:
            pnotes.append(snote)
        collect = [r["error"] for r in proxy_recs.values() if r["outcome"] == "collect_error"]
        fcollect = [r["error"] for r in faiss_recs.values() if r["outcome"] == "collect_error"]
        ids = [k for k in faiss_recs if faiss_recs[k]["outcome"] != "collect_error"]
        ids += [k for k in proxy_recs
                if k not in faiss_recs and proxy_recs[k]["outcome"] != "collect_error"]
        n_server = 0
        for key in ids:
            f, p = faiss_recs.get(key), proxy_recs.get(key)
            # A test the run never reached: why (the file's collection error or timeout).
            missing = collect[0] if collect else "not run: " + pnotes[-1] if pnotes else ""
            cls, reason = classify(f, p, missing)
            test_name = re.sub(r"\[.*\]$", "", key.split("::", 1)[1]) if "::" in key else ""
            internals = module.internals_of_script() if rel.startswith("tutorial/") \
                else module.internals(test_name)
            faiss_ok = f is not None and f["outcome"] == "passed"
            tests.append({"file": rel, "test": key, "faiss": f["outcome"] if f else "not run",
                          "faiss_error": f.get("error", "") if f else "",
                          "faiss_ok": faiss_ok, "class": cls, "reason": reason,
                          "requests": p["requests"] if p else 0, "internals": internals})
            n_server += cls == "server"
        file_notes[rel] = {"faiss": fnotes + ["collection error with faiss: " + e
                                              for e in fcollect],
                           "proxy": pnotes + ["collection error through the server: " + e
                                              for e in collect],
                           "seconds": (ft, pt)}
        print("faiss-suite: %-40s %3d tests, %3d through the server (%.0f s + %.0f s)%s"
              % (rel + ("::" + selector if selector else ""), len(ids), n_server, ft, pt,
                 "".join("; " + n for k in ("faiss", "proxy") for n in file_notes[rel][k])),
              file=sys.stderr, flush=True)
    return tests, file_notes, time.time() - t_start


def _md(text):
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def _count(tests):
    ok = [t for t in tests if t["faiss_ok"]]
    base = [t for t in ok if not t["internals"]]
    return {
        "tests": len(tests), "faiss_not_ok": len(tests) - len(ok), "faiss_ok": len(ok),
        "internals": len(ok) - len(base),
        "server": sum(t["class"] == "server" for t in ok),
        "local": sum(t["class"] == "local" for t in ok),
        "failed": sum(t["class"] == "failed" for t in ok),
        "skipped": sum(t["class"] == "skipped" for t in ok),
        "base": len(base), "base_server": sum(t["class"] == "server" for t in base),
        "base_local": sum(t["class"] == "local" for t in base),
    }


def _ratio(a, b):
    return "%d / %d (%.0f%%)" % (a, b, 100.0 * a / b) if b else "%d / 0" % a


def _git_state():
    try:
        head = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--",
                                "python", "src", "include", "scripts"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(tests, file_notes, elapsed, args):
    files = list(file_notes)
    total = _count(tests)
    out = []
    w = out.append
    w("# The Python drop-in against FAISS's own tests")
    w("")
    w("Generated by `make faiss-suite` (scripts/faiss-suite.py; docs/python.md says how it "
      "works). Do not edit by hand: run it again.")
    w("")
    w("- Commit: %s" % _md(_git_state()))
    w("- Date: %s; FAISS %s (Debian's source package of the installed libfaiss-dev)"
      % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), _faiss_version()))
    w("- Files: %d; per-file timeout %d s (each run); whole run %.0f s"
      % (len(files), args.timeout, elapsed))
    w("")
    w("**Headline: of the %d tests that pass with faiss and read no FAISS internals, "
      "%s pass through the server.** %d more of them pass without ever sending a request "
      "(every name they use fell back to local faiss); they do not count." %
      (total["base"], _ratio(total["base_server"], total["base"]), total["base_local"]))
    w("")
    w("Columns: *tests* collected; *faiss ✗* fail, skip or error with real faiss (left out "
      "of everything after); *faiss ✓* pass with real faiss; of those: *internals* read "
      "FAISS's internals (a static scan, below), *server ✓* pass through the drop-in and "
      "sent requests, *local ✓* pass through the drop-in without one request, *✗* fail "
      "through the drop-in, *skip* skipped through it; *headline* = server ✓ among faiss ✓ "
      "without internals.")
    w("")
    w("| file | tests | faiss ✗ | faiss ✓ | internals | server ✓ | local ✓ | ✗ | skip "
      "| headline |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for rel in files:
        c = _count([t for t in tests if t["file"] == rel])
        w("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %s |" % (
            rel, c["tests"], c["faiss_not_ok"], c["faiss_ok"], c["internals"], c["server"],
            c["local"], c["failed"], c["skipped"], _ratio(c["base_server"], c["base"])))
    c = total
    w("| **total** | %d | %d | %d | %d | %d | %d | %d | %d | **%s** |" % (
        c["tests"], c["faiss_not_ok"], c["faiss_ok"], c["internals"], c["server"], c["local"],
        c["failed"], c["skipped"], _ratio(c["base_server"], c["base"])))
    notes = [(rel, k, n) for rel in files for k in ("faiss", "proxy")
             for n in file_notes[rel][k]]
    if notes:
        w("")
        w("Notes on runs:")
        w("")
        for rel, k, n in notes:
            w("- %s (%s): %s" % (rel, "real faiss" if k == "faiss" else "through the server",
                                 _md(n)))
    failing = [t for t in tests if t["faiss_ok"] and t["class"] in ("failed", "skipped")]
    reasons = {}
    for t in failing:
        key = re.sub(r"\d+", "N", t["reason"])[:120]
        reasons[key] = reasons.get(key, 0) + 1
    if reasons:
        w("")
        w("## Most common reasons")
        w("")
        w("Of the tests that pass with faiss but not through the server (numbers as N).")
        w("")
        w("| tests | first line of the error |")
        w("|---:|---|")
        for key, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:25]:
            w("| %d | %s |" % (n, _md(key)))
    w("")
    w("## Tests that pass with faiss and not through the server")
    w("")
    if not failing:
        w("None.")
    else:
        w("| test | internals | reason |")
        w("|---|---|---|")
        for t in failing:
            w("| %s | %s | %s%s |" % (_md(t["test"]), _md(", ".join(t["internals"])),
                                      "skipped: " if t["class"] == "skipped" else "",
                                      _md(t["reason"])))
    local = [t for t in tests if t["faiss_ok"] and t["class"] == "local"]
    w("")
    w("## Tests that pass through the drop-in without sending a request")
    w("")
    w("They only use what the drop-in hands to local faiss (clustering, transforms, "
      "codecs, ...): passing says nothing about the server.")
    w("")
    for rel in files:
        names = [t["test"].split("::", 1)[1] for t in local if t["file"] == rel]
        if names:
            w("- %s: %s" % (rel, ", ".join(_md(n) for n in names)))
    if not local:
        w("None.")
    bad = [t for t in tests if not t["faiss_ok"]]
    w("")
    w("## Tests that do not pass with real faiss here")
    w("")
    w("Left out of the counts above.")
    w("")
    if not bad:
        w("None.")
    for t in bad:
        w("- %s: %s%s" % (_md(t["test"]), t["faiss"],
                          ": " + _md(t["faiss_error"]) if t["faiss_error"] else ""))
    w("")
    w("## How a test is classified")
    w("")
    w("- Each file runs twice under pytest in a scratch folder: as is, and with its faiss "
      "imports rewritten (`import faiss` → `import faissproxy as faiss`, `from faiss import "
      "X` → `from faissproxy import X`; `faiss.contrib` stays local faiss's code, handed "
      "the served indexes), against a server of its own on loopback with default settings.")
    w("- *server ✓* needs at least one request sent while the test ran (setup, call, "
      "teardown): `faissproxy._lib.requests_sent()` counts every library call that talks to "
      "the server.")
    w("- *internals*: the test, or a helper of its file it calls, uses one of the "
      "attributes %s, the functions %s, `hnsw.X` other than %s, or faiss.contrib.%s."
      % (", ".join("`.%s`" % a for a in sorted(INTERNAL_ATTRS)),
         ", ".join("`%s`" % a for a in sorted(INTERNAL_CALLS)),
         ", ".join("`%s`" % a for a in sorted(HNSW_PARAMS)), ", ".join(INTERNAL_MODULES)))
    return "\n".join(out) + "\n"


def _faiss_version():
    try:
        import faiss
        return faiss.__version__
    except ImportError:
        return "?"


def check(tests, file_notes):
    """The failures of --check: tests passing with faiss that do not pass through the server,
    and a server that died, hung at stop or exited badly."""
    bad = ["%s: %s" % (rel, n) for rel, notes in file_notes.items() for n in notes["proxy"]
           if n.startswith("the server")]
    for t in tests:
        if not t["faiss_ok"]:
            continue
        if t["class"] == "local":
            bad.append("%s: passed without sending a request to the server" % t["test"])
        elif t["class"] != "server":
            bad.append("%s: %s through the server: %s" % (t["test"], t["class"], t["reason"]))
    if not any(t["faiss_ok"] for t in tests):
        bad.append("no test of the selection passed with faiss: nothing was measured")
    return bad


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="+", metavar="FILE[::TEST]",
                    help="files relative to the FAISS source folder (tests/test_io.py, "
                         "tutorial/python/1-Flat.py), optionally ::Class or ::Class::test; "
                         "default: every tests/test_*.py and tutorials 1-3")
    ap.add_argument("--timeout", type=int, default=450,
                    help="seconds each run of one file may take (default 450)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "faiss-suite.md"),
                    help="the Markdown report (default docs/faiss-suite.md)")
    ap.add_argument("--json", help="also write every test's record here")
    ap.add_argument("--src", help="FAISS 1.7.3 source folder (default: scripts/faiss-source.sh "
                                  "fetches Debian's, cached in ~/.cache/faiss-proxy/src)")
    ap.add_argument("--build", default=os.environ.get("FPX_BUILD_DIR",
                                                      os.path.join(ROOT, "build")),
                    help="build folder with faiss-proxy-server and libfaissproxy.so")
    ap.add_argument("--logs", help="keep each run's pytest output in this folder")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every test that passes with faiss passes through "
                         "the server")
    args = ap.parse_args()
    # SIGTERM as Ctrl-C: the running file's processes and server are stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)

    src = args.src
    if not src:
        got = subprocess.run([os.path.join(SCRIPTS, "faiss-source.sh")], stdout=subprocess.PIPE,
                             text=True)
        if got.returncode != 0 or not got.stdout.strip():
            sys.exit("faiss-suite: could not fetch FAISS's sources (scripts/faiss-source.sh)")
        src = got.stdout.strip().splitlines()[-1]
    src = os.path.abspath(src)
    if not args.files:
        args.files = sorted(os.path.relpath(p, src)
                            for p in glob.glob(os.path.join(src, "tests", "test_*.py")))
        args.files += [t for t in TUTORIALS if os.path.exists(os.path.join(src, t))]
    for spec in args.files:
        if not os.path.isfile(os.path.join(src, spec.partition("::")[0])):
            sys.exit("faiss-suite: no %s in %s" % (spec.partition("::")[0], src))
    args.build = os.path.abspath(args.build)
    server_bin = os.path.join(args.build, "faiss-proxy-server")
    if not os.access(server_bin, os.X_OK):
        sys.exit("faiss-suite: no %s (make build)" % server_bin)

    try:
        tests, file_notes, elapsed = measure(args, src, server_bin, args.logs)
    except KeyboardInterrupt:
        sys.exit("faiss-suite: interrupted; no report written")
    text = report(tests, file_notes, elapsed, args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tests": tests, "files": file_notes}, f, indent=1)
    c = _count(tests)
    print("faiss-suite: %s of the tests that pass with faiss and read no internals pass "
          "through the server; report in %s" % (_ratio(c["base_server"], c["base"]), args.out),
          file=sys.stderr)
    if args.check:
        bad = check(tests, file_notes)
        for b in bad:
            print("faiss-suite: FAIL " + b, file=sys.stderr)
        if bad:
            sys.exit(1)
        print("faiss-suite: every test of the selection that passes with faiss passed "
              "through the server", file=sys.stderr)


if __name__ == "__main__":
    main()
