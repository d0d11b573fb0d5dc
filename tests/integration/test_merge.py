"""merge_from: FAISS's Index::merge_from between two indexes of a tenant, through the Python
drop-in and on the wire. Every answer is compared with in-process faiss doing the same merge
on the same indexes (read from the server's exports before the merge), the other index is
left empty as FAISS leaves it, refusals are FAISS's (or name what the server does not hold)
and change nothing, and the merge survives kill -9 (it is replayed from the log)."""

import os

import faiss as real
import numpy as np
import pytest

from conftest import unique




def data(n, d, seed):
    return np.random.default_rng(seed).random((n, d), dtype="float32")


def local(fp, index):
    """In-process faiss's copy of a served index, from the server's export."""
    return real.deserialize_index(fp.serialize_index(index))


def same_search(served, ref, xq, k=10):
    D, I = served.search(xq, k)
    Dr, Ir = ref.search(xq, k)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)


@pytest.mark.parametrize("key", ["Flat", "PQ4np", "SQ8", "PCA8,SQ8", "LSHr", "PQ4x4fs"])
def test_merge_by_place_matches_faiss(fp, key):
    xb, xq = data(900, 16, 1), data(30, 16, 2)
    a = fp.index_factory(16, key)
    a.train(xb)
    b = fp.clone_index(a)
    a.add(xb[:300])
    b.add(xb[300:])
    ra, rb = local(fp, a), local(fp, b)
    a.merge_from(b)
    ra.merge_from(rb)
    assert (a.ntotal, b.ntotal) == (900, 0)
    assert fp._remote._index_meta(b.server_name)["ntotal"] == 0  # emptied on the server
    same_search(a, ra, xq)
    b.add(xb[:5])  # the emptied index is still usable, numbered from 0 again
    assert b.search(xb[:1], 1)[1][0, 0] == 0


def test_merge_ivf_with_add_id_matches_faiss(fp):
    xb, xq = data(2000, 16, 3), data(40, 16, 4)
    a = fp.index_factory(16, "IVF16,Flat")
    a.train(xb)
    b = fp.clone_index(a)  # the same coarse quantizer, as FAISS requires
    a.add(xb[:700])
    b.add(xb[700:])
    ra, rb = local(fp, a), local(fp, b)
    a.merge_from(b, 700)
    ra.merge_from(rb, 700)
    assert (a.ntotal, b.ntotal) == (2000, 0)
    a.nprobe = ra.nprobe = 4
    same_search(a, ra, xq)
    # and the labels are FAISS's: every vector found under its own label
    np.testing.assert_array_equal(a.search(xb[1500:1510], 1)[1].ravel(), np.arange(1500, 1510))


def test_merge_idmap_keeps_ids_plus_add_id(fp):
    xb, xq = data(400, 8, 5), data(20, 8, 6)
    ids = np.random.default_rng(7).choice(100000, 400, replace=False).astype("int64")
    a = fp.index_factory(8, "Flat,IDMap2")
    b = fp.index_factory(8, "Flat,IDMap2")
    a.add_with_ids(xb[:100], ids[:100])
    b.add_with_ids(xb[100:], ids[100:])
    ra, rb = local(fp, a), local(fp, b)
    a.merge_from(b, 1000000)
    ra.merge_from(rb, 1000000)
    same_search(a, ra, xq)
    a.check_consistency()
    np.testing.assert_array_equal(a.reconstruct(int(ids[250]) + 1000000), xb[250])


def faiss_error(fn):
    with pytest.raises(RuntimeError) as e:
        fn()
    return str(e.value)


def test_refusals_are_faiss_and_change_nothing(fp):
    xb = data(600, 16, 8)
    flat, other = fp.IndexFlatL2(16), fp.IndexFlatL2(16)
    flat.add(xb[:10])
    other.add(xb[10:30])
    ivf = fp.index_factory(16, "IVF8,Flat")
    ivf.train(xb)
    ivf.add(xb[:50])
    ivf2 = fp.index_factory(16, "IVF8,Flat")  # trained apart: other centroids
    ivf2.train(xb[::-1].copy())
    ivf2.add(xb[:40])
    hnsw, hnsw2 = fp.IndexHNSWFlat(16, 8), fp.IndexHNSWFlat(16, 8)
    hnsw.add(xb[:20])
    hnsw2.add(xb[:20])
    # each refusal with the message in-process faiss gives for the same merge
    rflat, rother, rivf, rivf2 = (local(fp, x) for x in (flat, other, ivf, ivf2))
    cases = [
        (lambda: flat.merge_from(other, 5), lambda: rflat.merge_from(rother, 5)),
        (lambda: flat.merge_from(ivf), lambda: rflat.merge_from(rivf)),
        (lambda: ivf.merge_from(ivf2, 0), lambda: rivf.merge_from(rivf2, 0)),
        (lambda: hnsw.merge_from(hnsw2), lambda: real.IndexHNSWFlat(16, 8).merge_from(
            real.IndexHNSWFlat(16, 8))),
    ]
    for served, ref in cases:
        msg, ref_msg = faiss_error(served), faiss_error(ref)
        # FAISS's message text (without its source location) is in the server's
        key = [w for w in ("cannot set ids in FlatCodes index", "'other' failed",
                           "coarse quantizers should be the same", "not implemented")
               if w in ref_msg]
        assert key and key[0] in msg, (msg, ref_msg)
    assert (flat.ntotal, other.ntotal, ivf.ntotal, ivf2.ntotal) == (10, 20, 50, 40)
    assert fp._remote._index_meta(other.server_name)["ntotal"] == 20
    assert "itself" in faiss_error(lambda: flat.merge_from(flat))
    with pytest.raises(TypeError):  # FAISS's IndexIVF.merge_from has no default add_id
        ivf.merge_from(ivf2)
    # an IDMap merges only with an IDMap, as in FAISS
    idm = fp.IndexIDMap(fp.IndexFlatL2(16))
    idm.add_with_ids(xb[:3], np.arange(3, dtype="int64") + 100)
    assert "'other' failed" in faiss_error(lambda: idm.merge_from(other))
    # a label both indexes hold: FAISS would keep two vectors under it, the server one
    idm2 = fp.IndexIDMap(fp.IndexFlatL2(16))
    idm2.add_with_ids(xb[3:5], np.array([100, 7], dtype="int64"))
    assert "twice" in faiss_error(lambda: idm.merge_from(idm2))
    assert (idm.ntotal, idm2.ntotal) == (3, 2)
    np.testing.assert_array_equal(idm.search(xb[:3], 1)[1].ravel(), [100, 101, 102])
    with pytest.raises(TypeError):
        flat.merge_from(rother)  # a local faiss index is not served


def test_wire_refusals(client):
    a, b, hn = unique("ma"), unique("mb"), unique("mh")
    client.create(a, 4)
    client.create(b, 4)
    client.add(b, data(5, 4, 9), items=[{"id": "k%d" % i} for i in range(5)])
    assert client.error({"operation": "merge_from", "index_id": a,
                         "other": "nope"})["error_type"] == "not_found"
    assert client.error({"operation": "merge_from", "index_id": a,
                         "other": 3})["error_type"] == "validation_error"
    assert client.error({"operation": "merge_from", "index_id": a, "other": b,
                         "add_id": "x"})["error_type"] == "validation_error"
    # caller keys have no place in FAISS's merge: refused, b unchanged
    h = client.error({"operation": "merge_from", "index_id": a, "other": b})
    assert h["error_type"] == "validation_error" and "keys" in h["message"]
    assert client.info(b)["ntotal"] == 5 and client.info(a)["ntotal"] == 0
    client.ok({"operation": "create_index", "index_id": hn, "dimension": 16,
               "index_type": "BFlat"})
    assert client.error({"operation": "merge_from", "index_id": a,
                         "other": hn})["error_type"] == "validation_error"
    for n in (a, b, hn):
        client.drop(n)


@pytest.mark.parametrize("desc", ["PQ2x4", "SQ4", "IVF4,Flat", "RQ1x4", "PCA4,IVF4,SQ8"])
def test_no_codes_move_into_an_untrained_index(client, desc):
    """FAISS 1.7.3 moves the codes of a trained index into an untrained one, which has no
    codebook (or coarse quantizer) to read them with, or makes one anew when it is trained:
    every later answer would be wrong without an error. Refused, both indexes unchanged; an
    empty untrained other still merges, as in FAISS."""
    untrained, trained, empty = unique("mu"), unique("mt"), unique("me")
    for n in (untrained, trained, empty):
        client.ok({"operation": "create_index", "index_id": n, "dimension": 8,
                   "index_type": desc})
    client.ok({"operation": "train", "index_id": trained, "vector_shape": [300, 8]},
              data(300, 8, 11).tobytes())
    client.add(trained, data(40, 8, 12))
    h = client.error({"operation": "merge_from", "index_id": untrained, "other": trained})
    assert h["error_type"] == "validation_error", h
    assert "untrained" in h["message"] and "40 vectors" in h["message"], h
    assert client.info(untrained)["ntotal"] == 0 and not client.info(untrained)["is_trained"]
    assert client.info(trained)["ntotal"] == 40
    # nothing to move: FAISS's merge and FAISS's refusals (an IVF's empty coarse quantizer)
    ref = real.deserialize_index(np.frombuffer(
        client.ok({"operation": "export_index", "index_id": trained})[1], dtype="uint8"))
    try:
        ref.merge_from(real.index_factory(8, desc), 0)
        refusal = None
    except RuntimeError as e:
        refusal = str(e)
    h, _, meta = client.call({"operation": "merge_from", "index_id": trained, "other": empty})
    if refusal is None:
        assert h["status"] == "ok" and meta["merged"] == 0, h
    else:
        assert h["error_type"] == "faiss_error" and h["message"] in refusal, (h, refusal)
    assert client.info(trained)["ntotal"] == 40
    for n in (untrained, trained, empty):
        client.drop(n)


@pytest.mark.parametrize("desc", ["PQ2x4", "SQ4", "IVF4,Flat", "IVF4,PQ2x4", "RQ1x4", "LSQ2x4",
                                  "PCA4,IVF4,SQ8", "OPQ2,PQ2x4"])
def test_codes_move_only_between_indexes_of_one_training(client, desc):
    """FAISS 1.7.3 merges codes of two indexes of one type trained apart (another codebook,
    other IVF centroids) and reads them with this index's: wrong answers without an error.
    Refused, both unchanged; indexes made from one trained index (an import of its export)
    merge as FAISS merges them."""
    a, apart, copy = unique("ma"), unique("mp"), unique("mc")
    for n, seed in ((a, 21), (apart, 22)):
        client.ok({"operation": "create_index", "index_id": n, "dimension": 8,
                   "index_type": desc})
        client.ok({"operation": "train", "index_id": n, "vector_shape": [300, 8]},
                  data(300, 8, seed).tobytes())
    trained = client.ok({"operation": "export_index", "index_id": a})[1]
    client.ok({"operation": "import_index", "index_id": copy}, trained)
    client.add(a, data(30, 8, 23))
    client.add(apart, data(20, 8, 24))
    client.add(copy, data(20, 8, 25))
    ref = real.deserialize_index(np.frombuffer(
        client.ok({"operation": "export_index", "index_id": a})[1], dtype="uint8"))
    try:  # FAISS compares some trainings itself (IVF centroids, PCA): its refusal then
        real.clone_index(ref).merge_from(real.deserialize_index(np.frombuffer(
            client.ok({"operation": "export_index", "index_id": apart})[1], dtype="uint8")), 0)
        faiss_refusal = None
    except RuntimeError as e:
        faiss_refusal = str(e)
    h = client.error({"operation": "merge_from", "index_id": a, "other": apart})
    if faiss_refusal is None or h["error_type"] == "validation_error":
        assert h["error_type"] == "validation_error" and "trained apart" in h["message"], h
    else:
        assert h["error_type"] == "faiss_error" and h["message"] in faiss_refusal, h
    assert client.info(a)["ntotal"] == 30 and client.info(apart)["ntotal"] == 20
    other = real.deserialize_index(np.frombuffer(
        client.ok({"operation": "export_index", "index_id": copy})[1], dtype="uint8"))
    add_id = 1000 if "IVF" in desc else 0  # IVF labels stay, plus add_id
    _, _, meta = client.ok({"operation": "merge_from", "index_id": a, "other": copy,
                            "add_id": add_id})
    ref.merge_from(other, add_id)
    assert meta["merged"] == 20 and client.info(a)["ntotal"] == ref.ntotal == 50
    xq = data(5, 8, 26)
    D, I, _ = client.search(a, xq, 10)
    Dr, Ir = ref.search(xq, 10)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    for n in (a, apart, copy):
        client.drop(n)


def test_merge_survives_kill9_and_replays_the_same(fresh_server):
    c = fresh_server.client()
    a, b = unique("ka"), unique("kb")
    xb, xq = data(1200, 16, 10), data(25, 16, 11)
    for n in (a, b):
        c.create(n, 16, "IVF8,Flat")
    c.train(a, xb)
    exported = c.ok({"operation": "export_index", "index_id": a})[1]
    c.drop(b)
    c.ok({"operation": "import_index", "index_id": b}, exported)  # a's quantizer
    c.add(a, xb[:500])
    c.add(b, xb[500:])
    c.ok({"operation": "set_params", "index_id": a, "name": "nprobe", "value": 8})
    m = c.ok({"operation": "merge_from", "index_id": a, "other": b, "add_id": 500})[2]
    assert m == {"merged": 700, "ntotal": 1200}
    before = c.search(a, xq, 10)
    fresh_server.restart(hard=True)
    c = fresh_server.client()
    assert c.info(a)["ntotal"] == 1200 and c.info(b)["ntotal"] == 0
    after = c.search(a, xq, 10)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    # FAISS's merge of the same two indexes gives the same answers
    ra = real.deserialize_index(np.frombuffer(exported, "uint8"))
    rb = real.deserialize_index(np.frombuffer(exported, "uint8"))
    ra.add(xb[:500])
    rb.add(xb[500:])
    ra.merge_from(rb, 500)
    ra.nprobe = 8
    D, I = ra.search(xq, 10)
    np.testing.assert_array_equal(I, after[1])


def test_a_merge_interrupted_before_the_others_reset_is_finished_at_start(make_server):
    """A crash after the target logged the merge but before the other index
    logged its reset: the next start empties the other (the merge's vectors
    are in the target), rather than serving them from both indexes. The state
    is made on disk: the other's folder from before the merge is put back
    after a kill -9 that follows the merge."""
    import shutil
    s = make_server(extra=["--snapshot-bytes", "1000000000"])  # no snapshot but forced ones
    c = s.client()
    a, b = unique("ia"), unique("ib")
    xb, xq = data(900, 16, 30), data(10, 16, 31)
    for n in (a, b):
        c.create(n, 16, "Flat")
    c.add(a, xb[:400])
    c.add(b, xb[400:])
    s.stop()  # both snapshotted: b's folder as it is before the merge
    bdir = os.path.join(s.data_dir, "default", b)
    shutil.copytree(bdir, bdir + ".before")
    s.start()
    c = s.client()
    m = c.ok({"operation": "merge_from", "index_id": a, "other": b})[2]
    assert m == {"merged": 500, "ntotal": 900}
    s.kill9()
    shutil.rmtree(bdir)
    os.rename(bdir + ".before", bdir)  # b never logged its reset
    s.start()
    c = s.client()
    assert c.info(a)["ntotal"] == 900
    assert c.info(b)["ntotal"] == 0
    assert "finished a merge_from into '%s' that a crash interrupted" % a in s.log()
    ref = real.IndexFlatL2(16)
    ref.add(xb)
    D, I = c.search(a, xq, 5)[:2]
    Dr, Ir = ref.search(xq, 5)
    np.testing.assert_array_equal(I, Ir)
    # and it stays finished: a restart changes nothing
    s.restart(hard=True)
    c = s.client()
    assert c.info(a)["ntotal"] == 900 and c.info(b)["ntotal"] == 0


def _merged_flat(c, a, b, xb):
    """a holds xb[:400], b xb[400:] (Flat, 16 dims)."""
    for n in (a, b):
        c.create(n, 16, "Flat")
    c.add(a, xb[:400])
    c.add(b, xb[400:])


def test_a_reset_the_other_could_not_log_comes_before_its_next_write(make_server):
    """The other index's reset fails (its log cannot be opened): the merge is
    durable in the target and the caller is told; the other's next write
    empties it first, so its vectors are never in both indexes once it
    changes again."""
    s = make_server(extra=["--snapshot-bytes", "1000000000"])
    c = s.client()
    a, b = unique("oa"), unique("ob")
    xb, xq = data(900, 16, 40), data(10, 16, 41)
    _merged_flat(c, a, b, xb)
    wal = os.path.join(s.data_dir, "default", b, "wal")
    os.rename(wal, wal + ".away")
    h = c.error({"operation": "merge_from", "index_id": a, "other": b})
    assert "could not be emptied" in h["message"] and b in h["message"]
    assert c.info(a)["ntotal"] == 900
    os.rename(wal + ".away", wal)
    c.add(b, xb[:3])
    assert c.info(b)["ntotal"] == 3
    ref = real.IndexFlatL2(16)
    ref.add(xb[:3])
    D, I = c.search(b, xq, 3)[:2]
    np.testing.assert_array_equal(I, ref.search(xq, 3)[1])
    s.restart(hard=True)
    c = s.client()
    assert c.info(a)["ntotal"] == 900 and c.info(b)["ntotal"] == 3


def test_a_reset_the_other_could_not_log_is_finished_by_a_start_after_a_snapshot(make_server):
    """The same failure, then a clean stop that snapshots the target (its
    merge record leaves its log): the start still empties the other, from the
    note the target's snapshot keeps."""
    s = make_server(extra=["--snapshot-bytes", "1000000000"])
    c = s.client()
    a, b = unique("pa"), unique("pb")
    xb = data(900, 16, 42)
    _merged_flat(c, a, b, xb)
    wal = os.path.join(s.data_dir, "default", b, "wal")
    os.rename(wal, wal + ".away")
    c.error({"operation": "merge_from", "index_id": a, "other": b})
    os.rename(wal + ".away", wal)
    s.stop()
    s.start()
    c = s.client()
    assert c.info(a)["ntotal"] == 900
    assert c.info(b)["ntotal"] == 0
    assert "finished a merge_from into '%s'" % a in s.log()


def test_a_merge_whose_other_is_refused_at_start_is_finished_when_it_returns(make_server):
    """A crash between the merge and the other's reset, and the other's
    folder refused at the next start (corrupt): the target keeps the
    unfinished merge across its snapshots, and the start that loads the
    other again (repaired by hand) empties it."""
    import shutil
    s = make_server(extra=["--snapshot-bytes", "1000000000"])
    c = s.client()
    a, b = unique("ra"), unique("rb")
    xb = data(900, 16, 43)
    _merged_flat(c, a, b, xb)
    s.stop()
    bdir = os.path.join(s.data_dir, "default", b)
    shutil.copytree(bdir, bdir + ".before")
    s.start()
    c = s.client()
    assert c.ok({"operation": "merge_from", "index_id": a, "other": b})[2]["merged"] == 500
    s.kill9()
    shutil.rmtree(bdir)
    shutil.copytree(bdir + ".before", bdir)  # b never logged its reset
    snap = os.path.join(bdir, "snapshot")
    with open(snap, "r+b") as f:  # and its snapshot is damaged: refused
        f.seek(os.path.getsize(snap) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    s.start()
    c = s.client()
    assert c.info(a)["ntotal"] == 900
    assert c.error({"operation": "get_index_info", "index_id": b})["error_type"] != "ok"
    s.stop()  # a's snapshot now holds the merge; its log no longer does
    shutil.rmtree(bdir)
    os.rename(bdir + ".before", bdir)  # repaired by hand
    s.start()
    c = s.client()
    assert c.info(a)["ntotal"] == 900
    assert c.info(b)["ntotal"] == 0
    s.restart(hard=True)
    c = s.client()
    assert c.info(a)["ntotal"] == 900 and c.info(b)["ntotal"] == 0
