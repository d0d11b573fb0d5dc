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
    ngone = ivf.remove_ids(faiss.IDSelectorRange(0, n // 2))
    ivf.nprobe = 1
    D, I = ivf.search(xq[:1], n)
    out.append("ivf removed %d hits %d first %d %.5f" % (ngone, (I >= 0).sum(), I[0, 0], D[0, 0]))
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


def expected_more(xb, xq):
    """The lines of `program_c --more`, from in-process FAISS; "dist" lines
    are numbers compared with a tolerance."""
    n, d = xb.shape
    out = []
    SQ = faiss.ScalarQuantizer
    qts = [SQ.QT_8bit, SQ.QT_4bit, SQ.QT_8bit_uniform, SQ.QT_4bit_uniform, SQ.QT_fp16,
           SQ.QT_8bit_direct, SQ.QT_6bit]
    assert qts == list(range(7))  # the C enum's values
    for qt in qts:
        sq = faiss.IndexScalarQuantizer(d, qt, faiss.METRIC_L2)
        out.append("sq%d trained %d cast 1" % (qt, sq.is_trained))
        sq.train(xb)
        sq.add(xb)
        out += lines_search("sq%d" % qt, sq, xq, True)
    for qt in (SQ.QT_8bit, SQ.QT_4bit_uniform):
        q = faiss.IndexFlatL2(d)
        ivf = faiss.IndexIVFScalarQuantizer(q, d, 4, qt)
        ivf.train(xb)
        ivf.add(xb)
        ivf.nprobe = 2
        out.append("ivfsq%d nlist 4 nprobe 2 casts 1 1" % qt)
        out += lines_search("ivfsq%d" % qt, ivf, xq, True)
    out.append("ivfsq nores rc 1 says 1")
    for i, lsh in enumerate([faiss.IndexLSH(d, 2 * d), faiss.IndexLSH(d, d, False, True)]):
        out.append("lsh%d nbits %d code_size %d rotate %d thresholds %d"
                   % (i, lsh.nbits, lsh.code_size, lsh.rotate_data, lsh.train_thresholds))
        lsh.train(xb)
        lsh.add(xb)
        out += lines_search("lsh%d" % i, lsh, xq, True)
    pt = faiss.IndexPreTransform(faiss.PCAMatrix(d, 8), faiss.IndexFlatL2(8))
    out.append("pca trained 0 d %d cast 1 index 1" % d)
    pt.train(xb)
    pt.add(xb)
    out += lines_search("pca", pt, xq)
    out.append("pca apply rc 1 says 1")
    pt = faiss.IndexPreTransform(faiss.NormalizationTransform(d, 2.0), faiss.IndexFlatL2(d))
    pt.add(xb)
    out += lines_search("l2norm", pt, xq, True)
    out.append("l2norm apply ok")
    xn = xq[0] / np.linalg.norm(xq[0])
    out.append("dist normalized %r %r" % (float(xn[0]), float(xn[d - 1])))
    out.append("opq niter rc 1 says 1")
    shards = faiss.IndexShards(d)
    subs = [faiss.IndexFlatL2(d) for _ in range(3)]
    for s in subs:
        shards.add_shard(s)
    shards.add(xb)
    out.append("shards ntotal %d %d %d %d at 1" % (shards.ntotal, subs[0].ntotal,
                                                   subs[1].ntotal, subs[2].ntotal))
    out += lines_search("shards", shards, xq, True)
    out.append("shards add again rc 1 says 1")
    out.append("shards remove rc 1 says 1")
    ipshards = faiss.IndexShards(d, False, False)
    ipsubs = [faiss.IndexIDMap(faiss.IndexFlatIP(d)) for _ in range(2)]
    for s in ipsubs:
        ipshards.add_shard(s)
    ipshards.add_with_ids(xb, 1000 + 7 * np.arange(n, dtype="int64"))
    out.append("ipshards ntotal %d metric 0" % ipshards.ntotal)
    out += lines_search("ipshards", ipshards, xq, True)
    reps = faiss.IndexReplicas(d)
    rsubs = [faiss.IndexFlatL2(d) for _ in range(2)]
    for r in rsubs:
        reps.add_replica(r)
    reps.add(xb)
    out.append("replicas ntotal %d %d %d" % (reps.ntotal, rsubs[0].ntotal, rsubs[1].ntotal))
    out += lines_search("replicas", reps, xq, True)
    out.append("replicas reconstruct equal")
    xq64, xb64 = xq.astype("float64"), xb[:5].astype("float64")
    pair = ((xq64[:, None, :] - xb64[None, :, :]) ** 2).sum(-1)
    assert np.allclose(pair, faiss.pairwise_distances(xq, xb[:5]), rtol=1e-4, atol=1e-5)
    out.append(("dist pairwise", pair.ravel()))
    out.append(("dist ip_ny", xb64 @ xq64[0]))
    out.append(("dist l2_ny", pair[0]))
    out.append(("dist norms", np.sqrt((xq64 ** 2).sum(1))))
    out.append(("dist norms2", (xq64 ** 2).sum(1)))
    out.append(("dist norm2", [(xq64[0] ** 2).sum()]))
    out.append("blas 7 4096 1024 100")
    return out


def test_more_classes_against_faiss(make_server, tmp_path):
    """IndexScalarQuantizer (every quantizer type, and two under IVF), IndexLSH,
    IndexPreTransform, IndexShards, IndexReplicas and the distance functions,
    through libfaiss_c and the server, give in-process FAISS's results."""
    if not os.path.exists(PROGRAM):
        pytest.fail("program_c was not built")
    s = make_server()
    n, nq, d = 400, 6, 16
    xb, xq = rand(n, d, 130), rand(nq, d, 131)
    xb.tofile(tmp_path / "xb.bin")
    xq.tofile(tmp_path / "xq.bin")
    (tmp_path / "meta.txt").write_text("%d %d %d\n" % (n, nq, d))
    r = subprocess.run([PROGRAM, "--more", str(tmp_path)], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, FAISS_PROXY_SERVER=s.endpoint))
    assert r.returncode == 0, r.stdout + r.stderr
    got = r.stdout.splitlines()
    want = expected_more(xb, xq)
    for i, (g, w) in enumerate(zip(got, want)):
        if isinstance(w, tuple):
            tag, values = w
            assert g.startswith(tag + " "), "line %d: %r" % (i + 1, g)
            nums = [float(v) for v in g[len(tag) + 1:].split()]
            assert np.allclose(nums, values, rtol=1e-5, atol=1e-5), "line %d: %r" % (i + 1, g)
        elif w.startswith("dist normalized"):
            nums = [float(v) for v in g.split()[2:]]
            assert np.allclose(nums, [float(v) for v in w.split()[2:]], rtol=1e-6), g
        else:
            assert g == w, "line %d differs" % (i + 1)
    assert len(got) == len(want)
    assert s.client(None).list() == []  # every index it freed is gone
