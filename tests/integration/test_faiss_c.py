"""FAISS's C API through libfaiss_c: a program written against faiss/c_api
(tests/faiss_c/program_c.c) runs against the real server, and its output is
compared line by line with the same steps done by in-process FAISS."""
import os
import subprocess

import faiss
import numpy as np
import pytest

from conftest import BUILD
from wire import rand

PROGRAM = os.path.join(BUILD, "program_c")
K = 5


def lines_search(tag, index, xq, with_d=False):
    D, I = index.search(xq, K)
    out = []
    for q in range(len(xq)):
        s = "%s q%d I %s" % (tag, q, " ".join(str(int(v)) for v in I[q]))
        if with_d:
            s += " D " + " ".join("%.5f" % v for v in D[q])
        out.append(s)
    return out


def expected(xb, xq, ivf_file):
    n, d = xb.shape
    nq = len(xq)
    out = []
    flat = faiss.IndexFlatL2(d)
    flat.add(xb)
    out.append("flat ntotal %d d %d trained 1 metric 1" % (n, d))
    out.append("flat casts 1 1 0")
    out += lines_search("flat", flat, xq, True)
    out.append("flat reconstruct_n equal")
    radius = np.float32(np.float32(0.9) * np.float32(d) / np.float32(6))
    lims, _, labels = flat.range_search(xq, float(radius))
    for q in range(nq):
        part = labels[lims[q]:lims[q + 1]][:4]
        out.append(("range q%d n %d" % (q, lims[q + 1] - lims[q]))
                   + "".join(" %d" % v for v in part))
    nrem = flat.remove_ids(np.array([0, 7, 100000], dtype="int64"))
    out.append("flat removed %d ntotal %d" % (nrem, flat.ntotal))
    out += lines_search("flat-removed", flat, xq)
    ivf = faiss.index_factory(d, "IVF8,Flat", faiss.METRIC_L2)
    out.append("ivf trained 0 nlist 8")
    ivf.train(xb)
    ivf.add(xb)
    out.append("ivf trained 1 ntotal %d" % n)
    out += lines_search("ivf-nprobe1", ivf, xq)
    faiss.ParameterSpace().set_index_parameters(ivf, "nprobe=8")
    out += lines_search("ivf-nprobe8", ivf, xq)
    ivf.nprobe = 3
    out.append("ivf nprobe 3")
    out += lines_search("ivf-nprobe3", ivf, xq)
    out.append("ivf efSearch rc 1")
    q = faiss.IndexFlatL2(d)
    ivf2 = faiss.IndexIVFFlat(q, d, 4, faiss.METRIC_L2)
    ivf2.train(xb)
    ivf2.add(xb)
    ivf2.nprobe = 4
    out += lines_search("ivfflat", ivf2, xq)
    idmap = faiss.IndexIDMap(faiss.IndexFlatL2(d))
    out.append("idmap add rc 1")
    ids = 100 + 3 * np.arange(n, dtype="int64")
    idmap.add_with_ids(xb, ids)
    out.append("idmap removed %d" % idmap.remove_ids(np.array([103, 106, 5], dtype="int64")))
    nrem = idmap.remove_ids(faiss.IDSelectorRange(130, 160))
    out.append("idmap removed %d ntotal %d" % (nrem, idmap.ntotal))
    out += lines_search("idmap", idmap, xq)
    idm = faiss.vector_to_array(idmap.id_map)
    out.append("idmap id_map %d first %d" % (len(idm), idm[0]))
    out.append("flat add_with_ids rc 1")
    read = faiss.read_index(ivf_file)
    out.append("read ntotal %d ivf 1" % read.ntotal)
    out += lines_search("read", read, xq)
    out += lines_search("clone", read, xq)
    b = faiss.read_index_binary(os.path.join(os.path.dirname(ivf_file), "bflat.index"))
    out.append("binary d %d ntotal %d" % (b.d, b.ntotal))
    bq = ((np.arange(32) * 37 + 11) % 256).astype("uint8").reshape(4, 8)
    bD, bI = b.search(bq, K)
    for q in range(4):
        out.append("binary q%d" % q + "".join(" %d:%d" % (bI[q, j], bD[q, j]) for j in range(K)))
    b.add(bq)
    out.append("binary add ntotal %d add_with_ids rc 1" % b.ntotal)
    out.append("binary reconstruct equal")
    out.append("reset ntotal 0 trained 1")
    return out


@pytest.mark.parametrize("keys", [False, True])
def test_program_against_faiss(make_server, tmp_path, keys):
    if not os.path.exists(PROGRAM):
        pytest.fail("program_c was not built")
    s = make_server(api_keys="pk:someone" if keys else "")
    n, nq, d = 400, 6, 12
    xb, xq = rand(n, d, 120), rand(nq, d, 121)
    xb.tofile(tmp_path / "xb.bin")
    xq.tofile(tmp_path / "xq.bin")
    (tmp_path / "meta.txt").write_text("%d %d %d\n" % (n, nq, d))
    ivf = faiss.index_factory(d, "IVF8,Flat")
    ivf.train(xb)
    ivf.add(xb[:300])
    ivf.nprobe = 2
    faiss.write_index(ivf, str(tmp_path / "ivf.index"))
    bflat = faiss.IndexBinaryFlat(64)
    bflat.add(np.random.default_rng(122).integers(0, 256, (200, 8), dtype="uint8"))
    faiss.write_index_binary(bflat, str(tmp_path / "bflat.index"))
    env = dict(os.environ, FAISS_PROXY_SERVER=s.endpoint)
    if keys:
        env["FAISS_PROXY_API_KEY"] = "pk"
    r = subprocess.run([PROGRAM, str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    got = r.stdout.splitlines()
    want = expected(xb, xq, str(tmp_path / "ivf.index"))
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, "line %d differs" % (i + 1)
    assert len(got) == len(want)
    # the file it wrote is read by in-process FAISS, with the same results
    written = faiss.read_index(str(tmp_path / "flat.index"))
    ref = faiss.IndexFlatL2(d)
    ref.add(xb)
    assert np.array_equal(written.search(xq, K)[1], ref.search(xq, K)[1])
    out_bin = faiss.read_index_binary(str(tmp_path / "bflat.out"))
    assert out_bin.ntotal == 204
    # every index the program freed is gone from the server
    c = s.client("pk" if keys else None)
    assert c.list() == []
