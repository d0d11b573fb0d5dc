"""Persistence: everything survives a restart on the same data dir, and every
acknowledged write survives kill -9 right after its reply, torn log tails
included. FPX_SOAK=N sets the number of kill -9 cycles of the soak test
(default 3 for CI; run e.g. FPX_SOAK=200 for a long one)."""
import os
import random
import struct
import threading
import time

import faiss
import numpy as np
import pytest

from test_storage_integrity import read, wal_records
from conftest import SANITIZED
from wire import Client, rand

SOAK = int(os.environ.get("FPX_SOAK", "3"))


def snapshot_state(c, names, queries, exact_hnsw=True):
    """Everything observable: infos, list, and search results with metadata."""
    state = {"list": c.list()}
    for n in names:
        info = c.info(n)
        state[n] = info
        if info["ntotal"] and info["index_type"].startswith("HNSW") and not exact_hnsw:
            # An HNSW graph built by parallel inserts differs from run to run
            # (FAISS's own behaviour), so a replayed log gives the same vectors
            # in a slightly different graph: compare the vectors, not the walk.
            # efSearch far above ntotal: the walk reaches every live vector
            # whatever the graph, so the set compared does not depend on it.
            _, I, meta = c.search(n, queries[:1, :info["dimension"]], info["ntotal"],
                                  include_metadata=True, params={"efSearch": 4096})
            state[n + "/all"] = sorted(zip(I[0].tolist(), [repr(m) for m in meta[0]]))
        elif info["ntotal"]:
            k = min(10, info["ntotal"])
            D, I, meta = c.search(n, queries[:, :info["dimension"]], k, include_metadata=True)
            state[n + "/D"] = D.tolist()
            state[n + "/I"] = I.tolist()
            state[n + "/meta"] = meta
    return state


def build_indexes(c):
    x = rand(600, 16, 70)
    c.create("flat", 16)
    c.add("flat", x[:300], [{"id": "f%d" % i, "metadata": {"i": i, "tag": ["x", i]}}
                            for i in range(300)])
    c.add("flat", x[300:310], [{"id": "f%d" % i, "metadata": {"upserted": True}}
                               for i in range(10)])  # upsert f0..f9
    c.delete("flat", ["f%d" % i for i in range(50, 100)])
    c.create("hnsw", 16, "HNSW8", "IP")
    c.add("hnsw", x[:200])
    c.delete("hnsw", list(range(0, 200, 7)))
    c.create("ivf", 16, "IVF8,Flat")
    c.train("ivf", x)
    c.add("ivf", x[:400], labels=np.arange(1000, 1400))
    c.create("empty", 3, "IndexFlatIP")
    c.create("gone", 4)
    c.add("gone", rand(5, 4, 71))
    c.drop("gone")
    return ["flat", "hnsw", "ivf", "empty"]


def test_restart_keeps_everything(fresh_server):
    c = fresh_server.client()
    names = build_indexes(c)
    q = rand(5, 16, 72)
    before = snapshot_state(c, names, q)
    fresh_server.restart()
    c = fresh_server.client()
    assert snapshot_state(c, names, q) == before
    assert "gone" not in [i["index_id"] for i in c.list()]
    # writes go on after the restart, labels continue where they were
    c.add("hnsw", rand(1, 16, 73))
    assert c.info("hnsw")["ntotal"] == before["hnsw"]["ntotal"] + 1
    fresh_server.restart()
    assert fresh_server.client().info("hnsw")["ntotal"] == before["hnsw"]["ntotal"] + 1


def test_kill9_keeps_acknowledged_writes(fresh_server):
    c = fresh_server.client()
    names = build_indexes(c)
    q = rand(5, 16, 74)
    before = snapshot_state(c, names, q, exact_hnsw=False)
    fresh_server.kill9()  # no snapshot at exit: everything comes from the logs
    fresh_server.start()
    c = fresh_server.client()
    assert snapshot_state(c, names, q, exact_hnsw=False) == before


@pytest.mark.parametrize("kind", ["IVF16,Flat", "IVF8,PQ4x4", "PCA8,Flat", "PQ4x4"])
def test_a_train_replays_as_its_result(fresh_server, monkeypatch, kind):
    """A train is logged as the index it trained, so a replay after kill -9 gives
    the same quantizer bit for bit, even with another thread count (FAISS's
    k-means is not reproducible from run to run)."""
    c = fresh_server.client()
    x = rand(3000, 16, 79)
    c.create("t", 16, kind)
    c.train("t", x)
    c.add("t", x[:500])
    _, before, _ = c.ok({"operation": "export_index", "index_id": "t"})
    fresh_server.kill9()
    path = wal_path(fresh_server, "t")
    ops = [struct.unpack("<I", read(path)[off + 16:off + 20])[0] for off, _, _ in wal_records(path)]
    assert ops == [8, 1], ops  # the trained index, then the add; no training vectors
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    fresh_server.start()
    _, after, _ = fresh_server.client().ok({"operation": "export_index", "index_id": "t"})
    assert after == before


def wal_path(server, name, tenant="default"):
    return os.path.join(server.data_dir, tenant, name, "wal")


@pytest.mark.parametrize("garbage", [b"\x00", b"FPXW" + b"\xff" * 40, os.urandom(300),
                                     b"\x00" * 4096],
                         ids=["zero_byte", "bad_header", "random_300", "zero_page"])
def test_torn_log_tail_dropped(fresh_server, garbage):
    c = fresh_server.client()
    c.create("t", 8)
    x = rand(50, 8, 75)
    for i in range(5):
        c.add("t", x[i * 10:(i + 1) * 10], [{"id": i * 10 + j} for j in range(10)])
    c.delete("t", 3)
    fresh_server.kill9()
    with open(wal_path(fresh_server, "t"), "ab") as f:
        f.write(garbage)
    fresh_server.start()
    c = fresh_server.client()
    assert c.info("t")["ntotal"] == 49
    _, I, meta = c.search("t", x, 1)
    ids = [row[0]["id"] for row in meta]
    assert ids[:3] == [0, 1, 2] and ids[3] != 3 and ids[4:] == list(range(4, 50))
    # and the log is usable again: new writes survive another crash
    c.add("t", rand(1, 8, 76), [{"id": "after"}])
    fresh_server.kill9()
    fresh_server.start()
    assert fresh_server.client().info("t")["ntotal"] == 50


def test_truncated_last_record_dropped(fresh_server):
    c = fresh_server.client()
    c.create("t", 8)
    c.add("t", rand(10, 8, 77))
    size_before = os.path.getsize(wal_path(fresh_server, "t"))
    c.add("t", rand(10, 8, 78))
    fresh_server.kill9()
    # cut the last record in half: as if the crash came while writing it
    path = wal_path(fresh_server, "t")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size_before + (size - size_before) // 2)
    fresh_server.start()
    assert fresh_server.client().info("t")["ntotal"] == 10


def test_snapshots_under_load(make_server, tmp_path):
    """A tiny snapshot threshold: snapshots and log trims happen all the time;
    kill -9 in between loses nothing acknowledged."""
    s = make_server(extra=["--snapshot-bytes", "4096"])
    c = s.client()
    c.create("s", 8, "HNSW8")
    expect = {}
    x = rand(400, 8, 79)
    for i in range(40):
        its = [{"id": "v%d" % (i * 10 + j), "metadata": {"b": i}} for j in range(10)]
        c.add("s", x[i * 10:(i + 1) * 10], its)
        for j in range(10):
            expect["v%d" % (i * 10 + j)] = i
        if i % 5 == 4:
            gone = "v%d" % (i * 10)
            c.delete("s", gone)
            expect.pop(gone)
    assert os.path.exists(os.path.join(s.data_dir, "default", "s", "snapshot"))
    s.kill9()
    s.start()
    c = s.client()
    assert c.info("s")["ntotal"] == len(expect)
    _, I, meta = c.search("s", x[:1], len(expect) + 5, include_metadata=True)
    got = {h["id"]: h["metadata"]["b"] for h in meta[0] if h}
    assert got == expect


def test_soak_kill9_cycles(fresh_server):
    """Random writes, kill -9 right after the last reply, verify, repeat."""
    rng = random.Random(80)
    c = fresh_server.client()
    c.create("soak", 8)
    live = {}
    x = rand(20000, 8, 81)
    nxt = 0
    for cycle in range(SOAK):
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            if op < 0.7 or not live:
                n = rng.randint(1, 20)
                keys = ["s%d" % rng.randint(0, 400) for _ in range(n)]
                c.add("soak", x[nxt:nxt + n], [{"id": k, "metadata": {"c": cycle}}
                                              for k in keys])
                for j, k in enumerate(keys):
                    live[k] = nxt + j
                nxt += n
            else:
                ks = rng.sample(sorted(live), min(len(live), rng.randint(1, 5)))
                assert c.delete("soak", ks)["deleted"] == len(ks)
                for k in ks:
                    del live[k]
        fresh_server.kill9()
        fresh_server.start()
        c = fresh_server.client()
        assert c.info("soak")["ntotal"] == len(live), cycle
        if live:
            _, I, meta = c.search("soak", x[:1], len(live))
            assert {h["id"] for h in meta[0]} == set(live), cycle
        # each live key holds its latest vector
        for k in rng.sample(sorted(live), min(5, len(live))):
            D, _, meta = c.search("soak", x[live[k]], 1)
            assert D[0, 0] == 0.0


def test_leftovers_of_interrupted_create_and_delete(fresh_server):
    c = fresh_server.client()
    c.create("kept", 2)
    fresh_server.stop()
    tenant = os.path.join(fresh_server.data_dir, "default")
    os.makedirs(os.path.join(tenant, ".half.creating.7"))
    os.makedirs(os.path.join(tenant, ".old.deleted.3"))
    with open(os.path.join(tenant, ".old.deleted.3", "wal"), "wb") as f:
        f.write(b"junk")
    fresh_server.start()
    c = fresh_server.client()
    assert [i["index_id"] for i in c.list()] == ["kept"]
    assert sorted(os.listdir(tenant)) == ["kept"]


def test_unreadable_snapshot_is_skipped_not_fatal(fresh_server):
    c = fresh_server.client()
    c.create("bad", 4)
    c.add("bad", rand(3, 4, 82))
    c.create("good", 4)
    c.add("good", rand(3, 4, 83))
    fresh_server.stop()  # snapshots both
    snap = os.path.join(fresh_server.data_dir, "default", "bad", "snapshot")
    with open(snap, "r+b") as f:
        f.seek(os.path.getsize(snap) // 2)
        f.write(b"\xde\xad\xbe\xef")
    fresh_server.start()
    c = fresh_server.client()
    assert c.info("good")["ntotal"] == 3
    # refused at start-up (docs/storage.md): requests learn why, its files stay as they were
    e = c.error({"operation": "get_index_info", "index_id": "bad"})
    assert e["error_type"] == "internal_error" and "is unavailable" in e["message"]
    assert [i["index_id"] for i in c.list()] == ["good"]
    assert os.path.exists(snap)  # left for inspection
    assert "bad" in fresh_server.log()


def test_disk_full(small_disk, make_server):
    s = make_server(data_dir=os.path.join(small_disk, "data"))
    c = s.client()
    c.create("full", 64)
    x = rand(1000, 64, 84)
    acked = 0
    for _ in range(40):  # 256 KiB a batch: the disk fills within 12
        h, _, m = c.call({"operation": "add_vectors", "index_id": "full",
                          "vector_shape": [1000, 64]}, x.tobytes())
        if h["status"] != "ok":
            assert h["error_type"] == "limit_exceeded", h
            break
        acked += 1000
        assert m["ntotal"] == acked
    else:
        pytest.fail("the disk never filled up")
    # the failed write changed nothing, and the server keeps serving
    assert c.info("full")["ntotal"] == acked
    assert c.ping()["protocol"] == 1
    _, I, _ = c.search("full", x[:3], 1)
    assert list(I[:, 0]) == [0, 1, 2]
    s.kill9()
    s.start()
    assert s.client().info("full")["ntotal"] == acked


def _to_crc32_format(index_dir):
    """Rewrites an index's files as faiss-proxy 0.1.0 wrote them before
    CRC-32C: no identity headers; snapshot trailer = zlib CRC-32 of the body;
    log records with magic FPXW and zlib CRC-32."""
    import struct
    import zlib
    snap = os.path.join(index_dir, "snapshot")
    with open(snap, "rb") as f:
        data = f.read()
    assert data[:4] == data[-4:] == b"FPXS"
    body = data[struct.unpack("<I", data[8:12])[0]:-8]
    assert struct.unpack("<I", data[-8:-4])[0] != zlib.crc32(data[:-8])  # really CRC-32C
    with open(snap, "wb") as f:
        f.write(body + struct.pack("<I", zlib.crc32(body)))
    wal = os.path.join(index_dir, "wal")
    with open(wal, "rb") as f:
        log = bytearray(f.read())
    assert log[:4] == b"FPXL"
    log = log[struct.unpack("<I", log[8:12])[0]:]
    off, records = 0, 0
    while off + 48 <= len(log):
        assert log[off:off + 4] == b"FPXC"
        dl, ml = struct.unpack("<QQ", log[off + 32:off + 48])
        end = off + 48 + dl + ml
        log[off:off + 4] = b"FPXW"
        log[off + 4:off + 8] = struct.pack("<I", zlib.crc32(bytes(log[off + 8:end])))
        off = end + (8 - (end % 8)) % 8
        records += 1
    with open(wal, "wb") as f:
        f.write(log)
    return records


def test_files_of_the_crc32_format_still_load(fresh_server):
    """Data dirs written before CRC-32C (snapshot and log) load unchanged.
    (SQfp16: a flat index's log of appends gets no snapshot at a stop.)"""
    c = fresh_server.client()
    x = rand(300, 8, 90)
    c.create("old", 8, "SQfp16")
    c.add("old", x[:200], [{"id": "o%d" % i, "metadata": {"i": i}} for i in range(200)])
    fresh_server.restart()  # a clean stop: the snapshot holds the first 200
    c = fresh_server.client()
    c.add("old", x[200:])
    c.delete("old", ["o3", "o4"])
    want = snapshot_state(c, ["old"], rand(5, 8, 91))
    fresh_server.kill9()  # the log holds the add and the delete
    assert _to_crc32_format(os.path.join(fresh_server.data_dir, "default", "old")) == 2
    fresh_server.start()
    assert snapshot_state(fresh_server.client(), ["old"], rand(5, 8, 91)) == want
    assert "checksum" not in fresh_server.log() and "dropping" not in fresh_server.log()


def test_delete_index_files_go_after_the_reply(fresh_server):
    """delete_index renames the folder away (durably) before it answers, and
    the reclaimer removes the rest and frees the index; a name can be reused
    at once, and a stop finishes what is queued."""
    import time
    c = fresh_server.client()
    tenant = os.path.join(fresh_server.data_dir, "default")
    xb = rand(2000, 32, 901)
    for round_ in range(3):
        c.create("big", 32)
        c.add("big", xb)
        c.drop("big")
        assert "big" not in os.listdir(tenant)  # gone under its name before the reply
        e = c.error({"operation": "get_index_info", "index_id": "big"})
        assert e["error_type"] == "not_found"
    end = time.time() + 30
    while os.listdir(tenant) and time.time() < end:
        time.sleep(0.02)
    assert os.listdir(tenant) == []  # the renamed folders are removed too
    c.create("big", 32)  # the name is free
    c.add("big", xb[:10])
    c.drop("big")
    fresh_server.stop()  # whatever the reclaimer still had is done before exit
    assert os.listdir(tenant) == []


@pytest.mark.parametrize("kind", ["IVF16,Flat", "IMI2x3,Flat", "IVF8,PQ4x4", "PCA8,IVF8,Flat"])
def test_restart_before_train_trains_as_faiss(fresh_server, kind):
    """A snapshot holds FAISS's bytes, and FAISS's reader does not keep how the
    factory set up training (an IVF's 10 k-means iterations, an IMI quantizer
    that trains alone): an index restarted before its train trains as the
    factory's index does, as in-process FAISS."""
    c = fresh_server.client()
    c.create("t", 16, kind)
    fresh_server.restart()
    c = fresh_server.client()
    x, q = rand(3000, 16, 80), rand(20, 16, 81)
    c.train("t", x)
    c.add("t", x)
    ref = faiss.index_factory(16, kind)
    ref.train(x)
    ref.add(x)
    D, I, _ = c.search("t", q, 5)
    Dr, Ir = ref.search(q, 5)
    assert np.array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5)


def test_binary_ivf_restart_before_train_trains_as_faiss(fresh_server):
    c = fresh_server.client()
    c.create("b", 64, "BIVF8")
    fresh_server.restart()
    c = fresh_server.client()
    x = np.random.default_rng(82).integers(0, 256, (2000, 8), dtype="uint8")
    h = {"index_id": "b", "dtype": "uint8", "vector_shape": [2000, 8]}
    c.ok(dict(h, operation="train"), x.tobytes())
    c.ok(dict(h, operation="add_vectors"), x.tobytes())
    ref = faiss.index_binary_factory(64, "BIVF8")
    ref.train(x)
    ref.add(x)
    _, d, _ = c.ok({"operation": "search", "index_id": "b", "k": 5, "dtype": "uint8",
                    "vector_shape": [20, 8]}, x[:20].tobytes())
    Dr, Ir = ref.search(x[:20], 5)
    assert np.frombuffer(d[20 * 5 * 4:], dtype="<i8").reshape(20, 5).tolist() == Ir.tolist()


@pytest.mark.parametrize("index_type,like_factory", [("IVF16,Flat", True), (None, False)])
def test_imported_untrained_index_trains_as_its_type_says(client, index_type, like_factory):
    """An untrained index imported under a factory string trains as that
    factory's index; one imported without a type trains as FAISS's read_index
    gives it (what faiss.deserialize_index would do in-process)."""
    x, q = rand(3000, 16, 83), rand(20, 16, 84)
    fresh = faiss.index_factory(16, "IVF16,Flat")
    name = "imp%d" % like_factory
    h = {"operation": "import_index", "index_id": name}
    if index_type:
        h["index_type"] = index_type
    client.ok(h, faiss.serialize_index(fresh).tobytes())
    client.train(name, x)
    client.add(name, x)
    ref = fresh if like_factory else faiss.deserialize_index(faiss.serialize_index(fresh))
    ref.train(x)
    ref.add(x)
    _, I, _ = client.search(name, q, 5)
    assert np.array_equal(I, ref.search(q, 5)[1])


def test_untrained_residual_quantizers_survive_a_restart(fresh_server):
    """FAISS 1.7.3 crashes reading back an untrained residual quantizer (it
    computes tables from codebooks it does not have): indexes created and not
    yet trained load from their snapshots, then train as FAISS's own."""
    kinds = {"t": "IVF8,RQ3x4_Nqint8", "u": "RQ3x4", "v": "IVF8,RQ3x4fs_32_Nrq2x4",
             "w": "PRQ2x2x4"}
    c = fresh_server.client()
    for n, t in kinds.items():
        c.create(n, 8, t)
    fresh_server.restart()
    c = fresh_server.client()
    assert sorted(i["index_id"] for i in c.list()) == sorted(kinds)
    x = rand(2000, 8, 85)
    for n in ("t", "u", "w"):
        c.train(n, x)
        c.add(n, x)
        ref = faiss.index_factory(8, kinds[n])
        ref.train(x)
        ref.add(x)
        _, I, _ = c.search(n, x[:10], 3)
        assert np.array_equal(I, ref.search(x[:10], 3)[1]), n
    fresh_server.restart()  # trained, they load as well
    assert fresh_server.client().info("t")["ntotal"] == 2000


def _size(server, name, f):
    return os.path.getsize(os.path.join(server.data_dir, "default", name, f))


def _wait_snapshot_grows(server, name, than):
    """Waits (bounded) until the snapshot of name is larger than `than`
    bytes; fails if it never is."""
    for _ in range(200):
        if _size(server, name, "snapshot") > than:
            return
        time.sleep(0.05)
    raise AssertionError("no new snapshot of %s" % name)


def _snapshot_of(c, server, name, x):
    """Adds to a new HNSW index until its log outgrows the threshold, and
    waits (bounded) for its snapshot: the one background thread writes
    snapshots in the order they were asked for, so any asked for before it
    was written."""
    c.create(name, 8, "HNSW8")
    before = _size(server, name, "snapshot")
    for i in range(8):
        c.add(name, x[i * 40:(i + 1) * 40])
    _wait_snapshot_grows(server, name, before)


def test_append_only_flat_log_is_not_rewritten(make_server):
    """A flat index that only gets appends keeps them in its log past
    --snapshot-bytes and through a clean stop: replaying them costs what
    loading a snapshot would, so the snapshot is not rewritten (on a single
    server). They survive kill -9 exactly; a write that is not an append (a
    delete, a key replaced) brings snapshots back, and an HNSW index, whose
    replay rebuilds a graph, always had them."""
    s = make_server(extra=["--snapshot-bytes", "4096"])
    c = s.client()
    x = rand(2000, 16, 83)
    c.create("flat", 16)
    snap0 = _size(s, "flat", "snapshot")
    for i in range(10):
        c.add("flat", x[i * 100:(i + 1) * 100])
    c.add("flat", x[1000:1100], [{"id": "k%d" % i, "metadata": {"i": i}} for i in range(100)])
    _snapshot_of(c, s, "graph", x[:, :8])  # every snapshot asked for so far is written
    assert _size(s, "flat", "snapshot") == snap0
    assert _size(s, "flat", "wal") > 1100 * 16 * 4
    s.kill9()
    s.start()
    c = s.client()
    ref = faiss.IndexFlatL2(16)
    ref.add(x[:1100])
    D, I, _ = c.search("flat", x[:20], 10)
    Dr, Ir = ref.search(x[:20], 10)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    wal = _size(s, "flat", "wal")
    s.restart()  # nor is it at a clean stop: it loads as fast as a snapshot
    assert (_size(s, "flat", "snapshot"), _size(s, "flat", "wal")) == (snap0, wal)
    c = s.client()
    D, I, _ = c.search("flat", x[:20], 10)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)

    # A key added again replaces its vector: the log now holds a dead one.
    c.add("flat", x[1100:1101], [{"id": "k0", "metadata": {"i": -1}}])
    _wait_snapshot_grows(s, "flat", 1100 * 16 * 4)
    for _ in range(200):  # the new log is renamed into place just after the snapshot
        if _size(s, "flat", "wal") < 4096:
            break
        time.sleep(0.05)
    assert _size(s, "flat", "wal") < 4096
    assert c.info("flat")["ntotal"] == 1100


def _thread_in_fifo_open(pid):
    """Whether a thread of pid waits in open() for a FIFO's reader."""
    openat = {"x86_64": "257", "aarch64": "56"}.get(os.uname().machine)
    for task in os.listdir("/proc/%d/task" % pid):
        base = "/proc/%d/task/%s/" % (pid, task)
        try:
            with open(base + "wchan") as f:
                wchan = f.read()
            with open(base + "syscall") as f:
                call = f.read().split()[:1]
        except OSError:
            continue  # the thread ended meanwhile
        if wchan in ("wait_for_partner", "fifo_open") or call == [openat]:
            return True
    return False


def test_writes_and_searches_go_on_while_a_snapshot_is_written(make_server):
    """A snapshot keeps its index's writes out only while it copies the index
    to memory and while it starts the log after it: its disk write goes on
    without the lock, and writes and searches with it. Held here at its disk
    write: its file is a FIFO that nothing reads yet. Once read, the snapshot
    fails (a FIFO cannot be synced), the log keeps every write, and the next
    snapshot is written."""
    s = make_server(extra=["--snapshot-bytes", "4096"])
    c = s.client()
    x = rand(400, 8, 91)
    c.create("h", 8, "HNSW8")
    snap0 = _size(s, "h", "snapshot")
    fifo = os.path.join(s.data_dir, "default", "h", "snapshot.tmp")
    os.mkfifo(fifo)
    drained = []

    def drain():
        with open(fifo, "rb") as f:
            while f.read(65536):
                pass
        drained.append(True)

    reader = threading.Thread(target=drain, daemon=True)
    try:
        c.add("h", x[:200])  # 6,400 bytes of vectors: past --snapshot-bytes
        for _ in range(400):
            if _thread_in_fifo_open(s.proc.pid):
                break
            time.sleep(0.025)
        else:
            raise AssertionError("the snapshot never opened its file")
        patient = Client(s.endpoint, timeout_ms=30000 if SANITIZED else 10000)
        s.clients.append(patient)
        patient.add("h", x[200:210])  # would time out if it waited for the snapshot
        D, I, _ = patient.search("h", x[:5], 1)
        assert I[:, 0].tolist() == list(range(5))
        assert patient.info("h")["ntotal"] == 210
        assert _thread_in_fifo_open(s.proc.pid), "the snapshot did not wait for its FIFO"
    finally:
        reader.start()
    reader.join(60)
    assert drained
    assert "snapshot of default/h failed" in s.wait_log("snapshot of default/h failed", 10)
    assert c.info("h")["ntotal"] == 210

    c.add("h", x[210:400])
    _wait_snapshot_grows(s, "h", snap0)  # the log outgrew snap0: its next snapshot is due
    s.kill9()
    s.start()
    c = s.client()
    assert c.info("h")["ntotal"] == 400
    D, I, _ = c.search("h", x[::40], 1)
    assert I[:, 0].tolist() == list(range(0, 400, 40))
    assert not os.path.exists(fifo)


def test_writes_during_snapshots_are_kept(make_server, tmp_path):
    """Writers add while background snapshots of their index are written (a
    snapshot whenever the log outgrows the last one, of up to 5 MB): the
    records that came during a snapshot's disk write move into the log
    started after it. After a kill -9 the index holds every acknowledged
    vector, in order, as FAISS does; the debug log shows snapshots that
    writes went on during."""
    s = make_server(extra=["--snapshot-bytes", "65536", "--verbose"])
    c = s.client()
    d = 64
    x = rand(42000, d, 92)
    c.create("sq", d, "SQfp16")
    c.add("sq", x[:2000])  # a snapshot of 256 KiB, the next when the log is as large
    stop = time.monotonic() + (20 if SANITIZED else 8)
    n = 2000
    while n + 20 <= len(x) and time.monotonic() < stop:
        c.add("sq", x[n:n + 20])
        n += 20
    first_log = s.log_path
    s.kill9()
    s.start()
    c = s.client()
    assert c.info("sq")["ntotal"] == n
    ref = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16)
    ref.add(x[:n])
    q = x[::max(1, n // 50)]
    D, I, _ = c.search("sq", q, 5)
    Dr, Ir = ref.search(q, 5)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5)
    with open(first_log, errors="replace") as f:
        went_on = [line for line in f if "writes went on" in line and "default/sq" in line]
    assert len(went_on) >= 3 and any(
        int(l.split("seq ")[2].strip().rstrip(")")) > int(l.split("seq ")[1].split()[0])
        for l in went_on), went_on[-5:]


def test_append_only_log_of_tiny_vectors_is_rewritten(make_server):
    """Appends of vectors smaller than their records' headers: the log is
    mostly headers, and a snapshot is written as before."""
    s = make_server(extra=["--snapshot-bytes", "4096"])
    c = s.client()
    c.create("tiny", 1)
    snap0 = _size(s, "tiny", "snapshot")
    for i in range(100):
        c.add("tiny", np.full((1, 1), i, dtype="float32"))
    _wait_snapshot_grows(s, "tiny", snap0)
    assert c.info("tiny")["ntotal"] == 100
