"""Storage integrity: damage the files of a stopped (or killed) server with
Python, start it again, and check what it serves. Only a torn last log record
may be cut; anything else that does not add up (a damaged record with valid
ones after it, a snapshot or log of another index, a missing log, a log that
does not chain onto its snapshot) makes the server refuse that index, loudly,
leaving its files exactly as they were, while it serves every other index.
Files written before the identity headers still load, and are upgraded at
their first snapshot. Idle indexes hold no file descriptor."""
import functools
import os
import resource
import shutil
import struct
import subprocess

import pytest

from wire import rand

WAL_HDR = 48  # bytes of a log record's header


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def idir(server, name, tenant="default"):
    return os.path.join(server.data_dir, tenant, name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def files_of(d):
    """Every file of an index folder with its bytes: what 'untouched' means."""
    return {n: read(os.path.join(d, n)) for n in sorted(os.listdir(d))}


def wal_header_len(log):
    """Bytes before the first record: the identity header ("FPXL"), if any."""
    if log[:4] == b"FPXL":
        return struct.unpack("<I", log[8:12])[0]
    return 0


def wal_records(path):
    """[(offset, seq, end)] of the log's records, as written."""
    log = read(path)
    off, out = wal_header_len(log), []
    while off + WAL_HDR <= len(log):
        seq = struct.unpack("<Q", log[off + 8:off + 16])[0]
        dl, ml = struct.unpack("<QQ", log[off + 32:off + 48])
        end = off + WAL_HDR + dl + ml
        out.append((off, seq, end))
        off = end + (8 - end % 8) % 8
    assert off == len(log), "the test's own log reader disagrees with the file"
    return out


def flip(path, offset, mask=0x01, byte=None):
    data = bytearray(read(path))
    data[offset] = byte if byte is not None else data[offset] ^ mask
    write(path, bytes(data))


def assert_refused(c, name, folder):
    """Every request naming the index gets the 'unavailable' error."""
    for h in ({"operation": "get_index_info", "index_id": name},
              {"operation": "search", "index_id": name, "k": 1, "vector_shape": [1, 8]}):
        data = rand(1, 8, 1).tobytes() if h["operation"] == "search" else b""
        e = c.error(h, data)
        assert e["error_type"] == "internal_error", e
        assert "index '%s' is unavailable" % name in e["message"], e
        assert folder in e["message"], e
    assert name not in [i["index_id"] for i in c.list()]


def error_lines(server):
    return [ln for ln in server.log().splitlines() if " error " in ln]


def fill(c, name, batches=5, seed=10):
    """batches x 10 vectors with keys; returns the vectors."""
    x = rand(batches * 10, 8, seed)
    for i in range(batches):
        c.add(name, x[i * 10:(i + 1) * 10], [{"id": "%s%d" % (name, i * 10 + j)}
                                              for j in range(10)])
    return x


# ---- 1. damaged log records -----------------------------------------------------------

def _damage(path, rec, where):
    off, _, end = rec
    if where == "payload":
        flip(path, off + WAL_HDR + 5)
    elif where == "checksum":
        flip(path, off + 4)
    elif where == "magic":
        flip(path, off, byte=0)
    elif where == "sequence":
        flip(path, off + 8, mask=0x40)
    elif where == "length_past_eof":
        flip(path, off + 32 + 5)  # data_len + 2**40: the record seems to run past the end
    else:
        raise AssertionError(where)


@pytest.mark.parametrize("where", ["payload", "checksum", "magic", "sequence",
                                   "length_past_eof"])
def test_damaged_early_record_refuses_the_index(fresh_server, where):
    c = fresh_server.client()
    c.create("t", 8)
    c.create("good", 8)
    fill(c, "t")
    fill(c, "good", 2, seed=11)
    fresh_server.kill9()  # everything is in the logs
    wal = os.path.join(idir(fresh_server, "t"), "wal")
    recs = wal_records(wal)
    assert len(recs) == 5
    _damage(wal, recs[1], where)
    before = files_of(idir(fresh_server, "t"))
    fresh_server.start()
    c = fresh_server.client()
    assert_refused(c, "t", idir(fresh_server, "t"))
    assert c.info("good")["ntotal"] == 20
    assert files_of(idir(fresh_server, "t")) == before  # nothing cut, nothing rewritten
    lines = [ln for ln in error_lines(fresh_server) if wal in ln]
    assert lines, fresh_server.log()
    assert "offset %d" % recs[1][0] in lines[0], lines
    assert "seq 1" in lines[0] and "seq 3" in lines[0], lines  # last good, first valid after
    assert "dropping" not in fresh_server.log()
    # a clean stop and start change nothing either
    fresh_server.restart()
    assert_refused(fresh_server.client(), "t", idir(fresh_server, "t"))
    assert files_of(idir(fresh_server, "t")) == before


def test_damaged_record_of_a_log_without_header_refuses_the_index(fresh_server):
    """Files of earlier versions get the same torn-tail-or-damage search."""
    c = fresh_server.client()
    c.create("t", 8)
    fill(c, "t")
    fresh_server.kill9()
    d = idir(fresh_server, "t")
    to_pre_identity_format(d)
    wal = os.path.join(d, "wal")
    recs = wal_records(wal)
    assert recs[0][0] == 0
    _damage(wal, recs[0], "payload")  # the very first record: no good one before it
    before = files_of(d)
    fresh_server.start()
    assert_refused(fresh_server.client(), "t", d)
    assert files_of(d) == before
    assert any("offset 0 " in ln and "seq 2 to 5" in ln for ln in error_lines(fresh_server))


def test_record_missing_from_the_middle_is_refused(fresh_server):
    """Whole records cut out of the log: every one left is valid, but the
    sequence has a gap."""
    c = fresh_server.client()
    c.create("t", 8)
    fill(c, "t")
    fresh_server.kill9()
    d = idir(fresh_server, "t")
    wal = os.path.join(d, "wal")
    recs = wal_records(wal)
    log = read(wal)
    write(wal, log[:recs[2][0]] + log[recs[3][0]:])  # seq 3 is gone
    before = files_of(d)
    fresh_server.start()
    assert_refused(fresh_server.client(), "t", d)
    assert files_of(d) == before


def test_damaged_last_record_is_a_torn_tail(fresh_server):
    """The last record alone may be cut: it was never acknowledged if the
    crash came while it was written."""
    c = fresh_server.client()
    c.create("t", 8)
    fill(c, "t")
    fresh_server.kill9()
    wal = os.path.join(idir(fresh_server, "t"), "wal")
    recs = wal_records(wal)
    flip(wal, recs[-1][0] + WAL_HDR + 9)
    fresh_server.start()
    c = fresh_server.client()
    assert c.info("t")["ntotal"] == 40
    assert "dropping" in fresh_server.log()
    assert os.path.getsize(wal) == recs[-1][0]
    c.add("t", rand(1, 8, 12))
    fresh_server.kill9()
    fresh_server.start()
    assert fresh_server.client().info("t")["ntotal"] == 41


def set_horizon(path, rec, horizon):
    """Rewrites a record's group-commit horizon (the high 16 bits of its
    flags) and its checksum, as if it had been appended while `horizon`
    records before it still waited for their fdatasync."""
    off, _, end = rec
    data = bytearray(read(path))
    flags = struct.unpack("<I", data[off + 20:off + 24])[0] & 0xFFFF
    data[off + 20:off + 24] = struct.pack("<I", flags | horizon << 16)
    data[off + 4:off + 8] = struct.pack("<I", crc32c(bytes(data[off + 8:end])))
    write(path, bytes(data))


@pytest.mark.parametrize("horizon", [0, 1])
def test_torn_group_commit_is_a_torn_tail(fresh_server, horizon):
    """After a power loss, records of a group commit that never completed
    may reach the disk out of order: a record cut, a later one whole. The
    later one was appended while the cut one waited for its fdatasync (its
    horizon reaches back to it), so neither was acknowledged: the log is cut
    there. Without that horizon the same bytes are damage: refused."""
    c = fresh_server.client()
    c.create("t", 8)
    fill(c, "t")
    fresh_server.kill9()
    d = idir(fresh_server, "t")
    wal = os.path.join(d, "wal")
    recs = wal_records(wal)
    set_horizon(wal, recs[3], horizon)
    set_horizon(wal, recs[4], 2 * horizon)
    flip(wal, recs[2][0] + WAL_HDR + 9)  # seq 3 cut
    before = files_of(d)
    fresh_server.start()
    c = fresh_server.client()
    if horizon:
        assert c.info("t")["ntotal"] == 20
        assert "dropping" in fresh_server.log()
        assert os.path.getsize(wal) == recs[2][0]
    else:
        assert_refused(c, "t", d)
        assert files_of(d) == before


# ---- 2. identity and chaining -------------------------------------------------------

def test_snapshot_of_another_index_is_refused(fresh_server):
    c = fresh_server.client()
    c.create("a", 8)
    fill(c, "a", 1)
    c.create("b", 8)
    fill(c, "b", 2, seed=13)
    fresh_server.stop()  # both snapshotted
    b = idir(fresh_server, "b")
    shutil.copy(os.path.join(idir(fresh_server, "a"), "snapshot"), os.path.join(b, "snapshot"))
    before = files_of(b)
    fresh_server.start()
    c = fresh_server.client()
    assert_refused(c, "b", b)
    assert c.info("a")["ntotal"] == 10
    assert files_of(b) == before
    assert any("snapshot" in ln and "/b" in ln for ln in error_lines(fresh_server))


def test_folder_copied_under_another_name_is_refused(fresh_server):
    c = fresh_server.client()
    c.create("a", 8)
    fill(c, "a", 1)
    fresh_server.stop()
    shutil.copytree(idir(fresh_server, "a"), idir(fresh_server, "c"))
    other = os.path.join(fresh_server.data_dir, "other")
    shutil.copytree(os.path.join(fresh_server.data_dir, "default"), other)
    fresh_server.start()
    c = fresh_server.client()
    assert c.info("a")["ntotal"] == 10
    assert_refused(c, "c", idir(fresh_server, "c"))
    assert "other/a" in "\n".join(error_lines(fresh_server))  # another tenant's name inside


@pytest.mark.parametrize("legacy", [False, True])
def test_missing_log_is_refused_not_served_empty(fresh_server, legacy):
    c = fresh_server.client()
    c.create("t", 8)
    fill(c, "t", 2)
    fresh_server.kill9()  # the snapshot is the empty one of create; the vectors are in the log
    d = idir(fresh_server, "t")
    if legacy:
        to_pre_identity_format(d)
    os.unlink(os.path.join(d, "wal"))
    before = files_of(d)
    fresh_server.start()
    assert_refused(fresh_server.client(), "t", d)
    assert files_of(d) == before


def test_log_of_another_index_is_refused(fresh_server):
    c = fresh_server.client()
    c.create("t", 8)
    fill(c, "t", 2)
    c.create("u", 8)
    fill(c, "u", 3, seed=14)
    fresh_server.kill9()
    d = idir(fresh_server, "t")
    shutil.copy(os.path.join(idir(fresh_server, "u"), "wal"), os.path.join(d, "wal"))
    before = files_of(d)
    fresh_server.start()
    c = fresh_server.client()
    assert_refused(c, "t", d)
    assert c.info("u")["ntotal"] == 30
    assert files_of(d) == before


def test_old_snapshot_with_a_newer_log_is_refused(fresh_server):
    """A snapshot restored from an older backup next to the current log:
    the writes between the two are missing, so the index is not served.
    (SQfp16: a flat index's log of appends gets no snapshot at a stop.)"""
    c = fresh_server.client()
    c.create("t", 8, "SQfp16")
    d = idir(fresh_server, "t")
    old = read(os.path.join(d, "snapshot"))
    fill(c, "t", 2)
    fresh_server.stop()  # snapshot at seq 2, a new log after it
    assert read(os.path.join(d, "snapshot")) != old
    fresh_server.start()
    c = fresh_server.client()
    c.add("t", rand(3, 8, 15))
    fresh_server.kill9()
    write(os.path.join(d, "snapshot"), old)
    before = files_of(d)
    fresh_server.start()
    assert_refused(fresh_server.client(), "t", d)
    assert files_of(d) == before


@pytest.mark.parametrize("complete", [True, False])
def test_crash_between_snapshot_and_new_log(fresh_server, complete):
    """A crash after the new snapshot was renamed into place but before the
    new log replaced the old one leaves the old log, whose records reach the
    snapshot's seq: that loads. An old log that falls short of it does not.
    (SQfp16: a flat index's log of appends gets no snapshot at a stop.)"""
    c = fresh_server.client()
    c.create("t", 8, "SQfp16")
    x = fill(c, "t", 3)
    fresh_server.kill9()
    d = idir(fresh_server, "t")
    old_log = read(os.path.join(d, "wal"))
    recs = wal_records(os.path.join(d, "wal"))
    fresh_server.start()
    fresh_server.stop()  # snapshot at seq 3 and a new, empty log
    assert len(read(os.path.join(d, "wal"))) < len(old_log)
    if not complete:
        old_log = old_log[:recs[-1][0]]  # records 1..2 only
    write(os.path.join(d, "wal"), old_log)
    before = files_of(d)
    fresh_server.start()
    c = fresh_server.client()
    if not complete:
        assert_refused(c, "t", d)
        assert files_of(d) == before
        return
    assert c.info("t")["ntotal"] == 30
    _, _, meta = c.search("t", x[:3], 1)
    assert [m[0]["id"] for m in meta] == ["t0", "t1", "t2"]
    c.add("t", rand(1, 8, 16), [{"id": "after"}])  # the next record is seq 4
    fresh_server.kill9()
    fresh_server.start()
    assert fresh_server.client().info("t")["ntotal"] == 31


# ---- 3. a refused index is visible, and can be deleted ------------------------------

def test_refused_index_answers_and_can_be_deleted(fresh_server):
    c = fresh_server.client()
    c.create("t", 8)
    fill(c, "t", 2)
    fresh_server.kill9()
    d = idir(fresh_server, "t")
    os.unlink(os.path.join(d, "wal"))
    fresh_server.start()
    c = fresh_server.client()
    assert_refused(c, "t", d)
    e = c.error({"operation": "add_vectors", "index_id": "t", "vector_shape": [1, 8]},
                rand(1, 8, 17).tobytes())
    assert e["error_type"] == "internal_error" and "unavailable" in e["message"]
    e = c.error({"operation": "create_index", "index_id": "t", "dimension": 8})
    assert e["error_type"] == "already_exists", e
    assert os.path.exists(os.path.join(d, "snapshot"))
    assert c.drop("t") == {"deleted": True}  # the owner's explicit choice
    assert not os.path.exists(d)
    assert c.error({"operation": "get_index_info", "index_id": "t"})["error_type"] == "not_found"
    c.create("t", 8)
    c.add("t", rand(2, 8, 18))
    fresh_server.restart()
    assert fresh_server.client().info("t")["ntotal"] == 2


def test_refused_index_is_per_tenant(make_server):
    s = make_server(api_keys="k1:alice,k2:bob")
    a, b = s.client("k1"), s.client("k2")
    a.create("t", 8)
    fill(a, "t", 1)
    b.create("t", 8)
    fill(b, "t", 2)
    s.kill9()
    os.unlink(os.path.join(idir(s, "t", "alice"), "wal"))
    s.start()
    a, b = s.client("k1"), s.client("k2")
    assert_refused(a, "t", idir(s, "t", "alice"))
    assert b.info("t")["ntotal"] == 20


# ---- files of earlier versions --------------------------------------------------------

def to_pre_identity_format(index_dir):
    """Rewrites an index's files as faiss-proxy wrote them before identity
    headers: snapshot = body + CRC-32C(body) + "FPXC"; log = bare records."""
    snap = os.path.join(index_dir, "snapshot")
    data = read(snap)
    if data[:4] == b"FPXS":
        assert data[-4:] == b"FPXS"
        hlen = struct.unpack("<I", data[8:12])[0]
        body = data[hlen:-8]
        write(snap, body + struct.pack("<I", crc32c(body)) + b"FPXC")
    wal = os.path.join(index_dir, "wal")
    if os.path.exists(wal):
        log = read(wal)
        write(wal, log[wal_header_len(log):])


def test_files_without_identity_load_and_are_upgraded(fresh_server):
    c = fresh_server.client()
    c.create("old", 8)
    x = fill(c, "old", 2)
    fresh_server.stop()  # a snapshot at seq 2
    fresh_server.start()
    c = fresh_server.client()
    c.add("old", x[:5], [{"id": "again%d" % i} for i in range(5)])
    c.delete("old", ["old3"])
    fresh_server.kill9()  # the log holds seq 3 and 4
    d = idir(fresh_server, "old")
    to_pre_identity_format(d)
    assert read(os.path.join(d, "snapshot"))[-4:] == b"FPXC"
    fresh_server.start()
    c = fresh_server.client()
    assert c.info("old")["ntotal"] == 24
    y = rand(1, 8, 20)
    c.add("old", y, [{"id": "new"}])  # appended to the old log, as a bare record
    fresh_server.kill9()
    assert read(os.path.join(d, "wal"))[:4] == b"FPXC"
    fresh_server.start()
    assert fresh_server.client().info("old")["ntotal"] == 25
    fresh_server.stop()  # the first snapshot upgrades both files
    assert read(os.path.join(d, "snapshot"))[:4] == b"FPXS"
    assert read(os.path.join(d, "wal"))[:4] == b"FPXL"
    fresh_server.start()
    c = fresh_server.client()
    assert c.info("old")["ntotal"] == 25
    _, _, meta = c.search("old", y, 1)
    assert meta[0][0]["id"] == "new"
    assert not error_lines(fresh_server)


# ---- 4. file descriptors ---------------------------------------------------------------

FD_LIMIT = 64


def _limit_files():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _start_limited(server, monkeypatch):
    """Starts the server with hard and soft RLIMIT_NOFILE = FD_LIMIT."""
    with monkeypatch.context() as m:
        m.setattr(subprocess, "Popen",
                  functools.partial(subprocess.Popen, preexec_fn=_limit_files))
        server.start()


def test_many_indexes_under_a_small_fd_limit(make_server, monkeypatch):
    s = make_server()
    s.stop()
    _start_limited(s, monkeypatch)
    with open("/proc/%d/limits" % s.proc.pid) as f:
        assert any(ln.startswith("Max open files") and " %d " % FD_LIMIT in ln for ln in f)
    c = s.client()
    n = 150
    x = rand(n, 8, 19)
    for i in range(n):
        c.create("i%03d" % i, 8)
        c.add("i%03d" % i, x[i:i + 1], [{"id": "v%d" % i}])
    for i in range(n):
        _, _, meta = c.search("i%03d" % i, x[i:i + 1], 1)
        assert meta[0][0]["id"] == "v%d" % i
    s.kill9()
    _start_limited(s, monkeypatch)
    c = s.client()
    assert len(c.list()) == n
    for i in range(0, n, 7):
        assert c.info("i%03d" % i)["ntotal"] == 1
    c.add("i000", x[1:2])
    s.stop()  # snapshots all 150 under the limit
    _start_limited(s, monkeypatch)
    assert s.client().info("i000")["ntotal"] == 2
    assert not error_lines(s)


def test_an_old_untrained_rq_snapshot_refuses_itself_not_the_server(fresh_server):
    """Earlier versions wrote an untrained residual quantizer as FAISS 1.7.3
    writes it, and FAISS 1.7.3's reader crashes on those bytes (as in-process
    faiss does). Such a snapshot must refuse its own index, with a message
    saying what to do, and the server must start and serve the others."""
    import faiss
    c = fresh_server.client()
    c.create("oldrq", 8, "RQ2x4")
    c.create("fine", 8)
    c.add("fine", rand(3, 8, 5))
    ours = c.ok({"operation": "export_index", "index_id": "oldrq"})[1]
    fresh_server.stop()  # snapshots both
    theirs = faiss.serialize_index(faiss.index_factory(8, "RQ2x4")).tobytes()
    assert len(theirs) == len(ours) and theirs != ours  # only the train_type flag differs
    path = os.path.join(fresh_server.data_dir, "default", "oldrq", "snapshot")
    data = read(path)
    assert data.count(ours) == 1
    data = data.replace(ours, theirs)
    data = data[:-8] + struct.pack("<I", crc32c(data[:-8])) + data[-4:]
    write(path, data)
    fresh_server.start()
    c = fresh_server.client()
    assert c.info("fine")["ntotal"] == 3
    e = c.error({"operation": "get_index_info", "index_id": "oldrq"})
    assert "is unavailable" in e["message"] and "delete it and create it again" in e["message"]
    c.ok({"operation": "delete_index", "index_id": "oldrq"})
    c.create("oldrq", 8, "RQ2x4")  # and it can be made again
    assert c.info("oldrq")["is_trained"] is False
