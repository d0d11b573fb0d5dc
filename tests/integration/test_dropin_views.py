"""The parts of served indexes that FAISS programs read through the Python drop-in: an IVF
index's quantizer (served by the server from the IVF's own quantizer, whatever made the
index), its nlist and clustering parameters, faiss.clone_index, and IndexBinaryIVF over a
binary quantizer. Each answer is compared with in-process faiss on the same index (the
server's export of it read by faiss), or with faiss building the same index."""

import faiss as real
import numpy as np
import pytest





def data(n=2000, d=16, nq=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype="float32"), rng.random((nq, d), dtype="float32")


def local_copy(fp, index):
    """In-process faiss's index read from the server's export of index."""
    return real.deserialize_index(fp.serialize_index(index))


def same_quantizer(q, ref, xq):
    """q (served) answers as faiss's quantizer ref does."""
    assert (q.d, q.ntotal, q.is_trained) == (ref.d, ref.ntotal, ref.is_trained)
    np.testing.assert_array_equal(q.reconstruct_n(0, ref.ntotal),
                                  ref.reconstruct_n(0, ref.ntotal))
    np.testing.assert_array_equal(q.reconstruct(3), ref.reconstruct(3))
    D, I = q.search(xq, 4)
    Dr, Ir = ref.search(xq, 4)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)


def test_factory_ivf_quantizer_is_served_from_the_ivf(fp):
    xb, xq = data(3000, 16, 40, 1)
    ix = fp.index_factory(16, "IVF32,SQ8")
    q = ix.quantizer  # taken before training: it follows the IVF's training
    assert q.ntotal == 0 and q.d == 16
    ix.train(xb)
    ix.add(xb)
    assert ix.nlist == 32 and q.ntotal == 32
    loc = local_copy(fp, ix)  # it owns its quantizer: kept alive while that is read
    same_quantizer(q, real.downcast_index(loc.quantizer), xq)
    assert fp.extract_index_ivf(ix).quantizer is q
    # the quantizer's content is trained with the IVF on the server: writes raise
    with pytest.raises(NotImplementedError, match="quantizer"):
        q.add(xb[:32])
    with pytest.raises(NotImplementedError, match="quantizer"):
        q.reset()
    assert ix.quantizer.ntotal == 32 and ix.ntotal == 3000


def test_quantizer_and_nlist_of_an_index_read_from_bytes(fp):
    xb, xq = data(3000, 16, 40, 2)
    ref = real.index_factory(16, "IVF24,Flat")
    ref.train(xb)
    ref.add(xb)
    ix = fp.deserialize_index(real.serialize_index(ref))
    assert ix.nlist == 24  # from the server: "imported" names no list count
    same_quantizer(ix.quantizer, ref.quantizer, xq)


def test_quantizer_under_a_transform_has_the_transformed_dimension(fp):
    xb, xq = data(3000, 32, 40, 3)
    ix = fp.index_factory(32, "PCA8,IVF16,Flat")
    ix.train(xb)
    ivf = fp.extract_index_ivf(ix)
    q = ivf.quantizer
    assert q.d == 8 and q.ntotal == 16 and ivf.nlist == 16
    loc = local_copy(fp, ix)
    ref = real.extract_index_ivf(loc)
    same_quantizer(q, real.downcast_index(ref.quantizer), xq[:, :8].copy())


def test_binary_ivf_quantizer(fp):
    rng = np.random.default_rng(4)
    xb = rng.integers(0, 256, (2000, 8), dtype="uint8")
    ix = fp.index_binary_factory(64, "BIVF8")
    ix.train(xb)
    assert ix.nlist == 8
    loc = real.deserialize_index_binary(fp.serialize_index_binary(ix))
    ref = loc.quantizer
    q = ix.quantizer
    assert q.ntotal == 8 and q.d == 64
    np.testing.assert_array_equal(q.reconstruct_n(0, 8), [ref.reconstruct(i) for i in range(8)])
    D, I = q.search(xb[:20], 3)
    Dr, Ir = ref.search(xb[:20], 3)
    np.testing.assert_array_equal(D, Dr)


def test_quantizer_given_to_a_constructor_answers_reads(fp):
    xb, xq = data(2000, 16, 30, 5)
    quantizer = fp.IndexFlatL2(16)
    ix = fp.IndexIVFFlat(quantizer, 16, 16)
    ix.train(xb)
    loc = local_copy(fp, ix)
    same_quantizer(quantizer, real.downcast_index(loc.quantizer), xq)
    with pytest.raises(RuntimeError, match="quantizer"):
        quantizer.add(xb[:4])


def test_clustering_parameters(fp):
    ix = fp.IndexIVFFlat(fp.IndexFlatL2(8), 8, 4)
    ref = real.IndexIVFFlat(real.IndexFlatL2(8), 8, 4)
    for name in ("niter", "nredo", "seed", "max_points_per_centroid", "min_points_per_centroid",
                 "spherical"):
        assert getattr(ix.cp, name) == getattr(ref.cp, name), name
    ip = fp.index_factory(8, "IVF4,Flat", fp.METRIC_INNER_PRODUCT)
    assert ip.cp.spherical  # as FAISS's IVF constructor sets it for inner product
    ix.cp.min_points_per_centroid = 5  # FAISS prints a warning with it, nothing more
    assert ix.cp.min_points_per_centroid == 5
    with pytest.raises(AttributeError):
        ix.cp.nitre = 3
    assert ix.cp.niter == 10
    with pytest.raises(faissproxy_error(fp), match="cp_niter"):
        ix.cp.niter = 0  # the server's range, as set_params
    assert ix.cp.niter == 10
    bix = fp.IndexBinaryIVF(fp.IndexBinaryFlat(16), 16, 4)
    with pytest.raises(NotImplementedError, match="niter"):
        bix.cp.niter = 3  # a binary IVF's k-means is not served


def faissproxy_error(fp):
    import faissproxy._lib
    return faissproxy._lib.ServerError


@pytest.mark.parametrize("key,metric", [("IVF16,Flat", "L2"), ("IVF16,Flat", "IP"),
                                        ("PCA8,IVF16,SQ8", "L2"), ("ctor", "L2")])
def test_clustering_parameters_train_as_faiss_s(fp, key, metric):
    """Writes to index.cp reach the server, whose training runs FAISS's k-means with
    them: the same centroids as FAISS's given the same settings; they read back, a
    clone of the untrained index keeps them, and they change FAISS's result."""
    xb, xq = data(3000, 16, 20, 9)
    mt = real.METRIC_L2 if metric == "L2" else real.METRIC_INNER_PRODUCT

    def make(lib):
        if key == "ctor":
            return lib.IndexIVFFlat(lib.IndexFlatL2(16), 16, 16)
        return lib.index_factory(16, key, mt)

    settings = {"niter": 4, "nredo": 2, "seed": 99, "max_points_per_centroid": 50,
                "spherical": mt == real.METRIC_L2, "int_centroids": False}
    served, ref, plain = make(fp), make(real), make(real)
    ivf_ref = real.extract_index_ivf(ref)
    for name, value in settings.items():
        setattr(fp.extract_index_ivf(served).cp, name, value)
        setattr(ivf_ref.cp, name, value)
    cp = fp.extract_index_ivf(served).cp
    assert all(getattr(cp, n) == v for n, v in settings.items())
    copy = fp.clone_index(served)
    for index, what in ((served, "served"), (copy, "clone")):
        assert all(getattr(fp.extract_index_ivf(index).cp, n) == v
                   for n, v in settings.items()), what
        index.train(xb)
        index.add(xb)
    ref.train(xb)
    ref.add(xb)
    plain.train(xb)
    plain.add(xb)
    for index in (ref, plain):
        real.extract_index_ivf(index).nprobe = 4
    for index in (served, copy):
        fp.extract_index_ivf(index).nprobe = 4
    Dr, Ir = ref.search(xq, 10)
    for index in (served, copy):
        D, I = index.search(xq, 10)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5)
    assert not np.array_equal(plain.search(xq, 10)[1], Ir)  # the settings change FAISS's


def test_clone_index_is_a_new_index_with_the_same_content(fp):
    xb, xq = data(3000, 16, 40, 6)
    ix = fp.index_factory(16, "IVF16,PQ4np")
    ix.train(xb)
    ix.add(xb)
    ix.nprobe = 5
    ix.max_codes = 700
    D0, I0 = ix.search(xq, 5)
    c = fp.clone_index(ix)
    assert c.server_name != ix.server_name
    assert (c.ntotal, c.nprobe, c.max_codes, c.nlist) == (3000, 5, 700, 16)
    D1, I1 = c.search(xq, 5)
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_array_equal(D0, D1)
    c.add(xb[:10])  # the copy is its own index
    assert (c.ntotal, ix.ntotal) == (3010, 3000)
    flat = fp.IndexFlatL2(16)
    flat.add(xb)
    assert fp.clone_index(flat).ntotal == 3000
    quantizer = fp.IndexFlatL2(16)
    ivf = fp.IndexIVFFlat(quantizer, 16, 4)
    ivf.train(xb)
    qc = fp.clone_index(quantizer)  # FAISS's copy of the quantizer: a flat index of its own
    assert qc.ntotal == 4
    np.testing.assert_array_equal(qc.reconstruct_n(0, 4), quantizer.reconstruct_n(0, 4))
    sub = fp.IndexFlatL2(16)
    fp.IndexIDMap(sub)
    with pytest.raises(RuntimeError, match="sub-index"):
        fp.clone_index(sub)  # its content lives in the IDMap


def test_binary_ivf_constructor(fp):
    rng = np.random.default_rng(7)
    xt = rng.integers(0, 256, (3000, 8), dtype="uint8")
    xb = rng.integers(0, 256, (2000, 8), dtype="uint8")
    xq = rng.integers(0, 256, (50, 8), dtype="uint8")
    flat = real.IndexBinaryFlat(64)
    flat.add(xb)
    Dref, _ = flat.search(xq, 5)

    quantizer = fp.IndexBinaryFlat(64)
    ix = fp.IndexBinaryIVF(quantizer, 64, 8)
    ix.cp.min_points_per_centroid = 5
    assert not ix.is_trained and ix.nlist == 8
    ix.nprobe = 8  # every list: FAISS's exhaustive answer
    ix.train(xt)
    ix.add(xb)
    D, _ = ix.search(xq, 5)
    np.testing.assert_array_equal(D, Dref)
    assert quantizer.ntotal == 8

    # FAISS's binary IVF with the same quantizer and training, compared as a whole
    ref = real.IndexBinaryIVF(real.IndexBinaryFlat(64), 64, 8)
    ref.nprobe = 3
    ref.train(xt)
    ref.add(xb)
    ix.nprobe = 3
    D, I = ix.search(xq, 5)
    Dr, Ir = ref.search(xq, 5)
    np.testing.assert_array_equal(D, Dr)

    ix.set_direct_map_type(fp.DirectMap.Array)
    np.testing.assert_array_equal(ix.reconstruct(13), xb[13])

    # over the trained quantizer of the first: trained, its centroids shared
    ix2 = fp.IndexBinaryIVF(quantizer, 64, 8)
    assert ix2.is_trained
    ids = np.arange(2000, dtype="int64") * 7
    ix2.add_with_ids(xb, ids)
    ix2.set_direct_map_type(fp.DirectMap.Hashtable)
    np.testing.assert_array_equal(ix2.reconstruct(7 * 13), xb[13])
    ix2.nprobe = 8
    D, _ = ix2.search(xq, 5)
    np.testing.assert_array_equal(D, Dref)

    with pytest.raises(NotImplementedError, match="IndexBinaryFlat"):
        fp.IndexBinaryIVF(fp.index_binary_factory(64, "BHash8"), 64, 8)
    with pytest.raises(NotImplementedError, match="re-cluster"):
        small = fp.IndexBinaryFlat(64)
        small.add(xb[:5])
        fp.IndexBinaryIVF(small, 64, 8)


def test_export_part_is_checked_and_the_server_keeps_serving(fp):
    flat = fp.IndexFlatL2(8)
    with pytest.raises(fp._lib.ServerError, match="no IVF quantizer"):
        fp._remote._call({"operation": "export_index", "index_id": flat.server_name,
                          "part": "quantizer"})
    for bad in ("centroids", 3, "q" * 40):
        with pytest.raises(fp._lib.ServerError, match="part"):
            fp._remote._call({"operation": "export_index", "index_id": flat.server_name,
                              "part": bad})
    flat.add(np.ones((2, 8), dtype="float32"))
    assert flat.ntotal == 2


def test_refine_flat_over_a_trained_base(fp):
    xb, xq = data(2000, 16, 40, 8)
    pq = fp.IndexPQ(16, 4, 6)
    pq.train(xb)
    rq = fp.IndexRefineFlat(pq)  # trained and empty: FAISS's refinement over it
    assert rq.is_trained and type(rq).__name__ == "IndexRefineFlat"
    rq.add(xb)
    rq.k_factor = 4
    assert (rq.ntotal, pq.ntotal, rq.k_factor) == (2000, 2000, 4)
    D, I = rq.search(xq, 5)
    loc = local_copy(fp, rq)
    assert isinstance(loc, real.IndexRefineFlat) and loc.k_factor == 4
    Dr, Ir = loc.search(xq, 5)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5)
    # the flat refinement's distances are exact
    np.testing.assert_allclose(D[:, 0], ((xq - xb[I[:, 0]]) ** 2).sum(1), rtol=1e-4)
    assert rq.base_index is pq
    with pytest.raises(RuntimeError, match="base index"):
        pq.search(xq, 1)  # its content lives in the refinement
    with pytest.raises(RuntimeError, match="empty"):
        full = fp.IndexFlatL2(16)
        full.add(xb[:3])
        fp.IndexRefineFlat(full)


def test_refine_flat_over_an_untrained_base_trains_it(fp):
    xb, xq = data(2000, 16, 40, 9)
    rq = fp.IndexRefineFlat(fp.index_factory(16, "PQ4x6np"))
    assert not rq.is_trained
    rq.train(xb)
    rq.add(xb)
    D, I = rq.search(xq, 5)
    loc = local_copy(fp, rq)
    Dr, Ir = loc.search(xq, 5)
    np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("metric", ["L2", "IP"])
def test_refine_of_two_filled_indexes(fp, metric):
    m = fp.METRIC_L2 if metric == "L2" else fp.METRIC_INNER_PRODUCT
    xb, xq = data(1000, 16, 50, 10)
    base = fp.index_factory(16, "PQ4x4np", m)
    base.train(xb)
    base.add(xb)
    _, I1 = base.search(xq, 100)
    flat = fp.IndexFlat(16, m)
    flat.add(xb)
    _, gt = real.knn(xq, xb, 1, real.METRIC_L2 if metric == "L2" else real.METRIC_INNER_PRODUCT)
    ix = fp.IndexRefine(base, flat)
    ix.k_factor = 10.0
    assert ix.ntotal == 1000 and base.ntotal == 1000 and flat.ntotal == 1000
    D, I = ix.search(xq, 10)
    # FAISS's check: the refined recall@10 is the base's recall@100
    assert (I == gt[:, :1]).sum() == (I1 == gt[:, :1]).sum()
    loc = local_copy(fp, ix)
    Dr, Ir = loc.search(xq, 10)
    np.testing.assert_array_equal(I, Ir)
    with pytest.raises(RuntimeError, match="ntotal"):
        other = fp.IndexFlat(16, m)
        other.add(xb[:5])
        fp.IndexRefine(fp.index_factory(16, "PQ4x4np", m), other)


def test_factory_refinement_k_factor_reaches_the_server(fp):
    xb, xq = data(2000, 16, 40, 11)
    ix = fp.index_factory(16, "PQ4x4np,RFlat")
    assert ix.k_factor == 1
    ix.train(xb)
    ix.add(xb)
    ix.k_factor = 8
    D, I = ix.search(xq, 5)
    loc = local_copy(fp, ix)
    assert loc.k_factor == 8  # the server's index took it
    np.testing.assert_array_equal(I, loc.search(xq, 5)[1])
    with pytest.raises(NotImplementedError, match="base index"):
        ix.base_index


@pytest.mark.parametrize("key", ["IVF8,Flat", "IVF8,PQ4x4", "IVF8,SQ8"])
def test_hash_table_direct_map_reconstructs_as_faiss(fp, key):
    """FAISS's own TestReconsHash, served: ids filed in a hash-table direct map before and
    after it is set, through serialization, then removed by an IDSelectorArray and by an
    array of ids (the two ways FAISS takes with a hash table)."""
    d = 32
    rng = np.random.default_rng(5)
    xt, xa, xb = (rng.random((n, d), dtype="float32") for n in (400, 100, 100))
    ids = rng.choice(10000, size=200, replace=False).astype("int64")
    got, ref = fp.index_factory(d, key), real.index_factory(d, key)
    for ix in (got, ref):
        ix.train(xt)
        ix.add_with_ids(xa, ids[:100])
        ix.set_direct_map_type(real.DirectMap.Hashtable)
        ix.add_with_ids(xb, ids[100:])
    for i in range(0, 200, 7):
        np.testing.assert_array_equal(got.reconstruct(int(ids[i])), ref.reconstruct(int(ids[i])))

    got2 = fp.deserialize_index(fp.serialize_index(got))
    ref2 = real.deserialize_index(real.serialize_index(ref))
    for i in range(0, 200, 13):
        np.testing.assert_array_equal(got2.reconstruct(int(ids[i])),
                                      ref2.reconstruct(int(ids[i])))

    toremove = np.ascontiguousarray(ids[0:200:3])
    removed = []
    for lib, ix in ((fp, got2), (real, ref2)):
        sel = lib.IDSelectorArray(30, lib.swig_ptr(toremove[:30]))
        removed.append(ix.remove_ids(sel) + ix.remove_ids(toremove[30:]))
    assert removed[0] == removed[1] == len(toremove)
    assert got2.ntotal == ref2.ntotal == 200 - len(toremove)
    for i in range(200):
        if i % 3 == 0:
            with pytest.raises(Exception, match="not found|not in"):
                got2.reconstruct(int(ids[i]))
        else:
            np.testing.assert_array_equal(got2.reconstruct(int(ids[i])),
                                          ref2.reconstruct(int(ids[i])))
    # the export of what is left is FAISS's, direct map included
    local = real.deserialize_index(fp.serialize_index(got2))
    assert local.direct_map.type == real.DirectMap.Hashtable
    for i in range(1, 200, 3):
        np.testing.assert_array_equal(local.reconstruct(int(ids[i])),
                                      ref2.reconstruct(int(ids[i])))


def test_unkeyed_adds_after_a_hash_table_direct_map_are_found(fp):
    """FAISS 1.7.3's IndexIVF::add with a hash-table direct map files the new entries under
    ids it never sets; the server files them under their positions, the ids add gives."""
    d = 16
    rng = np.random.default_rng(6)
    xt, xa, xb = (rng.random((n, d), dtype="float32") for n in (300, 50, 60))
    ix = fp.index_factory(d, "IVF4,Flat")
    ix.train(xt)
    ix.add(xa)
    ix.set_direct_map_type(real.DirectMap.Hashtable)
    ix.add(xb)
    np.testing.assert_array_equal(ix.reconstruct_n(0, 110), np.vstack([xa, xb]))
    for i in (0, 49, 50, 77, 109):
        np.testing.assert_array_equal(ix.reconstruct(i), np.vstack([xa, xb])[i])
