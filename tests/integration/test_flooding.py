"""Hash flooding: labels chosen to collide under the label tables' former
unkeyed hash (found by inverting it) are stored, found, replaced and deleted
correctly, before and after a restart (which rebuilds the tables under a new
random seed). The structural check, that such labels no longer form one long
probe run, is the unit test tests/unit/test_slotmap.c."""
import numpy as np

from wire import rand

N = 65536
MASK = (1 << 64) - 1
C1, C2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53


def old_hash(h):
    h ^= h >> 33
    h = (h * C1) & MASK
    h ^= h >> 33
    h = (h * C2) & MASK
    return h ^ (h >> 33)


def old_unhash(h):
    h ^= h >> 33
    h = (h * pow(C2, -1, 1 << 64)) & MASK
    h ^= h >> 33
    h = (h * pow(C1, -1, 1 << 64)) & MASK
    return h ^ (h >> 33)


def colliding_labels(n):
    """n labels >= 0 whose old hash has its low 32 bits zero: one home slot."""
    out, j = [], 1
    while len(out) < n:
        v = old_unhash(j << 32)
        j += 1
        if v < 1 << 63:
            out.append(v)
    return np.array(out, dtype=np.int64)


def check_found(c, name, x, labels, rows):
    _, I, _ = c.search(name, x[rows], 1)
    assert I[:, 0].tolist() == labels[rows].tolist()


def test_colliding_labels_are_stored_and_found(fresh_server):
    labels = colliding_labels(N)
    assert all(old_hash(int(v)) & 0xFFFFFFFF == 0 for v in labels[:100])
    c = fresh_server.client()
    x = rand(N, 8, 11)
    c.create("flood", 8)
    assert c.add("flood", x, labels=labels)["ntotal"] == N
    rows = np.arange(0, N, 509)
    check_found(c, "flood", x, labels, rows)

    # A label names one vector: re-adding the first 1000 replaces them.
    y = rand(1000, 8, 12)
    assert c.add("flood", y, labels=labels[:1000])["ntotal"] == N
    _, I, _ = c.search("flood", y[::50], 1)
    assert I[:, 0].tolist() == labels[:1000:50].tolist()
    # Deleting by label finds each one.
    gone = [int(v) for v in labels[1000:3000]]
    assert c.delete("flood", gone) == {"deleted": 2000, "ntotal": N - 2000}
    assert c.delete("flood", gone)["deleted"] == 0

    fresh_server.restart(hard=True)  # replayed from the log, under a new seed
    c = fresh_server.client()
    assert c.info("flood")["ntotal"] == N - 2000
    rows = np.arange(3000, N, 613)
    check_found(c, "flood", x, labels, rows)
    assert c.delete("flood", [int(v) for v in labels[3000:3010]])["deleted"] == 10

    fresh_server.restart()  # from the snapshot this time
    c = fresh_server.client()
    assert c.info("flood")["ntotal"] == N - 2010
    check_found(c, "flood", x, labels, np.arange(3010, N, 701))
