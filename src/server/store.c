/*
 * store.c - index folders, the write-ahead log and snapshots; their formats,
 * and what recovery (recover.c) checks.
 *
 * Both files of an index start with an identity header saying whose they are
 * (little-endian; magic "FPXS" in the snapshot, "FPXL" in the log):
 *
 *   u32 magic | u32 CRC-32C of the header's bytes after this field
 *   u32 header length (48 + names, padded to 8) | u32 format version (1)
 *   u64 seq: in the snapshot, the last write it covers; in the log, the
 *       seq of the snapshot it follows (its base)
 *   16 bytes: the index's unique id (random, given at creation)
 *   u16 tenant length | u16 name length | u32 zero | tenant | name | zeros
 *
 * Snapshot file: identity header, the snapshot body (snapshot.c), the CRC-32C
 * of everything before it (4 bytes), then "FPXS". Written as snapshot.tmp,
 * fsync'd, renamed over snapshot, folder fsync'd; then a new log (the header
 * alone) is written as wal.tmp, fsync'd and renamed over wal. A crash between
 * the two renames leaves the old log, whose base is older than the snapshot
 * but whose records reach it: recovery accepts that and skips what the
 * snapshot covers.
 *
 * Log: identity header, then records, each padded with zeros to a multiple
 * of 8 bytes so the vectors of every record are 8-byte aligned in a buffer
 * holding the file:
 *
 *   u32 magic "FPXC" | u32 CRC-32C of everything after it up to the padding
 *   u64 seq | u32 op | u32 flags | i64 n | u64 data_len | u64 meta_len
 *   data_len bytes | meta_len bytes | zero padding
 *
 * Recovery trusts nothing it cannot check. The snapshot must name this
 * folder's tenant and index, the log must name the same index and id and
 * chain onto the snapshot, and its records must follow each other by one.
 * A record that fails its checks is a torn tail (a write cut by a crash,
 * never acknowledged, which is cut off) only when no valid record follows it
 * anywhere in the file; otherwise the log is damaged. Anything that does not
 * add up refuses the index: an ERROR line says why, its files stay exactly as
 * they were, and requests naming it are told so (server.c).
 *
 * Files of earlier versions have no identity header: a snapshot ending in
 * "FPXC" (CRC-32C) or in zlib's CRC-32 of its body (0.1.0), a log of bare
 * records with magic "FPXC" or "FPXW" (zlib's CRC-32, 0.1.0). They load with
 * the checks that need no identity, and are rewritten in the new format at
 * their first snapshot.
 *
 * The log is open while writes wait for their fdatasync and closed when none
 * does: an idle index holds no file descriptor, so the number of indexes is
 * not bounded by RLIMIT_NOFILE. Group commit: a record is appended and
 * applied under the index's exclusive lock (one order for both, the order
 * replay follows), and its writer then waits for a fdatasync without the
 * lock, so the next writers append while one fdatasync runs, and the next
 * fdatasync covers them all (fpx_store_sync). Nothing is acknowledged before
 * a fdatasync (or a snapshot) covering its record has returned.
 */
#include "store.h"
#include "stats.h"
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

int fpx_store_index_dir(const char *data_dir, const char *tenant, const char *name, char *buf) {
    return fpx_path(buf, "%s/%s/%s", data_dir, tenant, name);
}

int fpx_store_io_err(fpx_err *err, const char *what, const char *path) {
    return fpx_err_set(err, FPX_E_INTERNAL, "%s %s: %s", what, path, strerror(errno));
}

static int wal_path(const fpx_index *ix, char *buf) {
    return fpx_path(buf, "%s/%s/%s/wal", ix->data_dir, ix->tenant, ix->name);
}

void fpx_store_uid_hex(const uint8_t *uid, char *out /* 2 * FPX_UID_BYTES + 1 */) {
    for (int i = 0; i < FPX_UID_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", uid[i]);
}

int fpx_store_new_uid(uint8_t *uid, fpx_err *err) {
    size_t got = 0;
    while (got < FPX_UID_BYTES) {
        ssize_t n = getrandom(uid + got, FPX_UID_BYTES - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return fpx_err_set(err, FPX_E_INTERNAL, "cannot draw an index id: %s", strerror(errno));
        got += (size_t)n;
    }
    return 0;
}

/* ---- identity headers ------------------------------------------------------------- */

/* Encodes the identity header of ix into buf (ID_MAX bytes); returns its length. */
static size_t ident_pack(uint8_t *buf, uint32_t magic, const fpx_index *ix, uint64_t seq) {
    size_t tl = strlen(ix->tenant), nl = strlen(ix->name);
    size_t len = ID_FIXED + tl + nl;
    len += (8 - len % 8) % 8;
    memset(buf, 0, len);
    fpx_put_u32(buf, magic);
    fpx_put_u32(buf + 8, (uint32_t)len);
    fpx_put_u32(buf + 12, ID_VERSION);
    fpx_put_u64(buf + 16, seq);
    memcpy(buf + 24, ix->uid, FPX_UID_BYTES);
    fpx_put_u16(buf + 40, (uint16_t)tl);
    fpx_put_u16(buf + 42, (uint16_t)nl);
    memcpy(buf + ID_FIXED, ix->tenant, tl);
    memcpy(buf + ID_FIXED + tl, ix->name, nl);
    fpx_put_u32(buf + 4, fpx_crc32c(0, buf + 8, len - 8));
    return len;
}

/* ---- writing ------------------------------------------------------------------------ */

/* The snapshot file being written: a buffered, checksummed stream to fd. */
typedef struct snap_out {
    int fd;
    uint32_t crc;
    uint64_t total;   /* bytes handed to snap_put */
    uint64_t written; /* bytes written to fd */
    uint64_t kicked;  /* bytes of them handed to the disk's writeback */
    size_t used;
    int failed; /* errno of the failed write, or 0 */
    uint8_t buf[1 << 16];
} snap_out;

/* Bytes between two starts of writeback. */
#define SNAP_KICK ((uint64_t)8 << 20)

/* Writes n bytes to the file. Every SNAP_KICK bytes their writeback is
 * started, so that the disk writes while the rest is produced: a machine
 * with much memory starts writing dirty pages back only at its dirty
 * thresholds (gigabytes), and the snapshot's fsync, under the index's shared
 * lock that keeps writers out, would then wait for the whole file. */
static int snap_out_write(snap_out *s, const void *p, size_t n) {
    struct iovec iov = {(void *)p, n};
    if (fpx_writev_all(s->fd, &iov, 1) != 0) {
        s->failed = errno ? errno : EIO;
        return -1;
    }
    s->written += n;
    if (s->written - s->kicked >= SNAP_KICK) {
        fpx_start_writeback(s->fd, s->kicked, s->written - s->kicked);
        s->kicked = s->written;
    }
    return 0;
}

static int snap_flush(snap_out *s) {
    if (s->used && snap_out_write(s, s->buf, s->used) != 0)
        return -1;
    s->used = 0;
    return 0;
}

/* Appends n bytes to the file, through the buffer unless they are many. */
static int snap_put(snap_out *s, const void *p, size_t n) {
    if (s->failed)
        return -1;
    s->total += n;
    if (n <= sizeof s->buf - s->used) {
        memcpy(s->buf + s->used, p, n);
        s->used += n;
        return 0;
    }
    if (snap_flush(s) != 0) /* a big piece (the vectors): straight from the index */
        return -1;
    for (const uint8_t *q = p; n > 0;) {
        size_t step = n < SNAP_KICK ? n : (size_t)SNAP_KICK;
        if (snap_out_write(s, q, step) != 0)
            return -1;
        q += step;
        n -= step;
    }
    return 0;
}

/* The body's sink (fpx_write_fn): checksummed, then appended. */
static int snap_write(void *ctx, const void *p, size_t n) {
    snap_out *s = ctx;
    s->crc = fpx_crc32c(s->crc, p, n);
    return snap_put(s, p, n);
}

int fpx_store_write_body(const fpx_index *ix, int fd, uint64_t *size, uint32_t *crc, fpx_err *err) {
    snap_out *s = calloc(1, sizeof *s);
    if (!s)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory writing a snapshot");
    s->fd = fd;
    fpx_err werr = {0};
    int rc = fpx_index_write(ix, snap_write, s, &werr);
    if (rc == 0)
        rc = snap_flush(s);
    *size = s->total;
    *crc = s->crc;
    int io_failed = s->failed;
    free(s);
    if (rc == 0)
        return 0;
    if (!io_failed && werr.msg[0]) { /* not an I/O failure */
        *err = werr;
        return -1;
    }
    return fpx_err_set(err, FPX_E_INTERNAL, "cannot write a snapshot: %s",
                       strerror(io_failed ? io_failed : EIO));
}

/* Writes the snapshot of ix into dir (tmp file, fsync, rename, fsync dir). */
static int write_snapshot(const char *dir, fpx_index *ix, fpx_err *err) {
    char tmp[FPX_PATH_MAX], fin[FPX_PATH_MAX];
    fpx_path(tmp, "%s/snapshot.tmp", dir);
    fpx_path(fin, "%s/snapshot", dir);
    snap_out *s = calloc(1, sizeof *s);
    if (!s)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory writing a snapshot");
    s->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (s->fd < 0) {
        free(s);
        return fpx_store_io_err(err, "cannot create", tmp);
    }
    fpx_err werr = {0};
    uint8_t id[ID_MAX];
    int rc = snap_write(s, id, ident_pack(id, SNAP_MAGIC, ix, ix->seq));
    if (rc == 0)
        rc = fpx_index_write(ix, snap_write, s, &werr);
    if (rc == 0) {
        uint8_t trailer[8];
        fpx_put_u32(trailer, s->crc);
        fpx_put_u32(trailer + 4, SNAP_MAGIC);
        rc = snap_put(s, trailer, sizeof trailer);
    }
    if (rc == 0)
        rc = snap_flush(s);
    if (rc == 0)
        rc = fsync(s->fd);
    uint64_t size = s->total;
    int io_failed = s->failed;
    int e = io_failed ? io_failed : errno;
    close(s->fd);
    free(s);
    if (rc != 0 && !io_failed && werr.msg[0]) { /* not an I/O failure */
        fpx_unlink_file(tmp);
        *err = werr;
        return -1;
    }
    errno = e;
    if (rc != 0 || fpx_rename_over(tmp, fin) != 0) {
        fpx_store_io_err(err, "cannot write snapshot", tmp);
        fpx_unlink_file(tmp);
        return -1;
    }
    ix->snap_bytes = size;
    if (fpx_fsync_dir(dir) != 0)
        return fpx_store_io_err(err, "cannot sync", dir);
    return 0;
}

/* Starts a new log in dir following the snapshot at seq base: wal.tmp
 * holding the identity header and then tail[0..tail_len) (whole records that
 * follow base), fsync'd, renamed over wal, folder fsync'd. The log is never
 * truncated in place, so it always has its header. */
static int start_log_after(const char *dir, fpx_index *ix, uint64_t base, const uint8_t *tail,
                           size_t tail_len, fpx_err *err) {
    char tmp[FPX_PATH_MAX], fin[FPX_PATH_MAX];
    fpx_path(tmp, "%s/wal.tmp", dir);
    fpx_path(fin, "%s/wal", dir);
    uint8_t id[ID_MAX];
    size_t len = ident_pack(id, LOG_MAGIC, ix, base);
    struct iovec iov[2] = {{id, len}, {(void *)tail, tail_len}};
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return fpx_store_io_err(err, "cannot create", tmp);
    if (fpx_writev_all(fd, iov, 2) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return fpx_store_io_err(err, "cannot write", tmp);
    }
    close(fd);
    if (fpx_rename_over(tmp, fin) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return fpx_store_io_err(err, "cannot rename into place", fin);
    }
    ix->wal_bytes = len + tail_len;
    if (fpx_fsync_dir(dir) != 0)
        return fpx_store_io_err(err, "cannot sync", dir);
    return 0;
}

/* A new log in dir following the snapshot at ix->seq, empty. */
static int start_log(const char *dir, fpx_index *ix, fpx_err *err) {
    return start_log_after(dir, ix, ix->seq, NULL, 0, err);
}

int fpx_store_create(const char *data_dir, fpx_index *ix, fpx_err *err) {
    char tdir[FPX_PATH_MAX], tmp[FPX_PATH_MAX], fin[FPX_PATH_MAX];
    if (fpx_mkdir_p1(data_dir) != 0)
        return fpx_store_io_err(err, "cannot create", data_dir);
    fpx_path(tdir, "%s/%s", data_dir, ix->tenant);
    if (fpx_mkdir_p1(tdir) != 0)
        return fpx_store_io_err(err, "cannot create", tdir);
    if (fpx_store_index_dir(data_dir, ix->tenant, ix->name, fin))
        return fpx_err_set(err, FPX_E_VALIDATION, "data path too long");
    struct stat st;
    if (lstat(fin, &st) == 0)
        return fpx_err_set(err, FPX_E_EXISTS,
                           "index '%s' already exists (its folder is present on disk)", ix->name);
    static const uint8_t zero[FPX_UID_BYTES];
    if (!memcmp(ix->uid, zero, FPX_UID_BYTES) && fpx_store_new_uid(ix->uid, err) != 0)
        return -1;
    fpx_path(tmp, "%s/.%s.creating.%llu", tdir, ix->name, (unsigned long long)fpx_now_ns());
    if (mkdir(tmp, 0750) != 0)
        return fpx_store_io_err(err, "cannot create", tmp);
    if (write_snapshot(tmp, ix, err) != 0 || start_log(tmp, ix, err) != 0)
        goto fail;
    if (rename(tmp, fin) != 0) {
        fpx_store_io_err(err, "cannot rename into place", fin);
        goto fail;
    }
    if (fpx_fsync_dir(tdir) != 0) {
        /* The index is in place, only its durability is in doubt: undo. */
        fpx_store_io_err(err, "cannot sync", tdir);
        fpx_rmtree(fin);
        return -1;
    }
    ix->data_dir = data_dir;
    ix->snap_seq = ix->seq;
    return 0;
fail:
    fpx_rmtree(tmp);
    return -1;
}

/* ---- the log and group commit ---------------------------------------------------- */

/* Closes the log when no write needs it any more: an idle index holds no file
 * descriptor. Under sync_mu. */
static void close_if_idle(fpx_index *ix) {
    if (ix->log_fd >= 0 && ix->log_users == 0 && !ix->syncing &&
        ix->synced_seq >= ix->written_seq) {
        close(ix->log_fd);
        ix->log_fd = -1;
    }
}

/* The open log for one more writer (released by fpx_store_logged or
 * fpx_store_unlog), and the last seq known durable. */
static int log_acquire(fpx_index *ix, int *fd, uint64_t *synced, fpx_err *err) {
    char path[FPX_PATH_MAX];
    if (wal_path(ix, path) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "data path too long");
    pthread_mutex_lock(&ix->sync_mu);
    int rc = 0;
    if (ix->log_broken[0]) {
        rc = fpx_err_set(err, FPX_E_INTERNAL,
                         "the log of '%s' could not be synced (%s): its writes are refused until "
                         "the server restarts and recovers it from disk",
                         ix->name, ix->log_broken);
    } else if (ix->log_fd < 0) {
        /* No O_CREAT: a log that vanished is not silently restarted. */
        ix->log_fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (ix->log_fd < 0) {
            int e = errno;
            rc = fpx_err_set(err, e == ENOSPC ? FPX_E_LIMIT : FPX_E_INTERNAL,
                             "cannot open the log of '%s': %s", ix->name, strerror(e));
        }
    }
    if (rc == 0) {
        ix->log_users++;
        *fd = ix->log_fd;
        *synced = ix->synced_seq;
    }
    pthread_mutex_unlock(&ix->sync_mu);
    return rc;
}

static void log_release(fpx_index *ix, int applied) {
    pthread_mutex_lock(&ix->sync_mu);
    ix->log_users--;
    if (applied)
        ix->written_seq = ix->seq;
    close_if_idle(ix);
    pthread_mutex_unlock(&ix->sync_mu);
}

int fpx_store_log(fpx_index *ix, const fpx_walrec *rec, fpx_err *err) {
    int fd;
    uint64_t synced;
    if (log_acquire(ix, &fd, &synced, err) != 0)
        return -1;
    uint8_t hdr[WAL_HDR], pad[8] = {0};
    uint64_t seq = ix->seq + 1;
    /* How many records before this one are not durable yet (their sync is
     * under way or to come): recovery tells a crash's torn group from damage
     * by it. Capped: a smaller horizon only makes recovery stricter. */
    uint64_t horizon = seq - 1 > synced ? seq - 1 - synced : 0;
    if (horizon > FPX_WAL_HORIZON_MAX)
        horizon = FPX_WAL_HORIZON_MAX;
    fpx_put_u32(hdr, WAL_MAGIC);
    fpx_put_u64(hdr + 8, seq);
    fpx_put_u32(hdr + 16, (uint32_t)rec->op);
    fpx_put_u32(hdr + 20,
                (rec->flags & ~FPX_WAL_HORIZON_MASK) | (uint32_t)horizon << FPX_WAL_HORIZON_SHIFT);
    fpx_put_u64(hdr + 24, (uint64_t)rec->n);
    fpx_put_u64(hdr + 32, rec->data_len);
    fpx_put_u64(hdr + 40, rec->meta_len);
    uint32_t crc = fpx_crc32c(0, hdr + 8, WAL_HDR - 8);
    crc = rec->data_crc_known ? fpx_crc32c_combine(crc, rec->data_crc, rec->data_len)
                              : fpx_crc32c(crc, rec->data, rec->data_len);
    crc = fpx_crc32c(crc, rec->meta, rec->meta_len);
    fpx_put_u32(hdr + 4, crc);
    size_t body = WAL_HDR + rec->data_len + rec->meta_len;
    size_t padn = (8 - body % 8) % 8;
    struct iovec iov[4] = {{hdr, WAL_HDR},
                           {(void *)rec->data, rec->data_len},
                           {(void *)rec->meta, rec->meta_len},
                           {pad, padn}};
    /* A write that failed before may have left part of a record behind (its
     * cut failed too): cut it now, or the next record would follow garbage
     * and recovery would refuse the whole index. */
    off_t end = lseek(fd, 0, SEEK_END);
    if (end != (off_t)ix->wal_bytes &&
        (end < 0 || ftruncate(fd, (off_t)ix->wal_bytes) != 0 || fdatasync(fd) != 0)) {
        int e = errno;
        log_release(ix, 0);
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot cut a failed write off the log of '%s': %s",
                           ix->name, strerror(e));
    }
    /* Only the write here, under the index's lock, so records are appended
     * and applied in one order; the fdatasync is fpx_store_sync's, after the
     * lock, shared with the writes appended meanwhile. */
    if (fpx_writev_all(fd, iov, 4) != 0) {
        int e = errno;
        /* Cut whatever part reached the file, so the log stays a sequence of
         * whole records (recovery would drop a torn tail anyway). Records
         * before it that wait for their sync are untouched. */
        if (ftruncate(fd, (off_t)ix->wal_bytes) == 0)
            (void)fdatasync(fd);
        log_release(ix, 0);
        return fpx_err_set(err, e == ENOSPC ? FPX_E_LIMIT : FPX_E_INTERNAL,
                           "cannot write the log of '%s': %s", ix->name, strerror(e));
    }
    ix->seq = seq;
    ix->wal_bytes += body + padn;
    return 0;
}

void fpx_store_logged(fpx_index *ix) {
    log_release(ix, 1);
}

void fpx_store_unlog(fpx_index *ix, uint64_t wal_bytes_before) {
    /* The writer still holds the open log (log_acquire). */
    int fd = ix->log_fd;
    if (fd >= 0 && ftruncate(fd, (off_t)wal_bytes_before) == 0 && fdatasync(fd) == 0) {
        ix->wal_bytes = wal_bytes_before;
        ix->seq--;
    } else {
        fpx_log(FPX_LOG_ERROR, "cannot take back a log record of %s/%s: %s", ix->tenant, ix->name,
                strerror(errno));
    }
    log_release(ix, 0);
}

/*
 * Group commit. The first waiter that finds no fdatasync under way runs one
 * for everything appended so far (on its own descriptor of the log, so a
 * snapshot may close the shared one meanwhile); the others wait for it, and
 * whoever is still not covered when it ends runs the next. So a write waits
 * for at most the fdatasync under way and one more, and N concurrent writers
 * share a handful of fdatasyncs instead of paying N.
 *
 * A failed fdatasync leaves the index's memory ahead of its disk (the
 * records were applied, and the kernel may have dropped their pages): every
 * write it covered fails, and the index refuses writes (and snapshots, which
 * would make the unsynced records durable after their writers were told they
 * failed) until a restart recovers it from what the disk holds.
 */
int fpx_store_sync(fpx_index *ix, uint64_t seq, fpx_err *err) {
    pthread_mutex_lock(&ix->sync_mu);
    while (ix->synced_seq < seq && !ix->log_broken[0]) {
        if (ix->syncing) {
            pthread_cond_wait(&ix->sync_cv, &ix->sync_mu);
            continue;
        }
        uint64_t target = ix->written_seq;
        int fd = ix->log_fd >= 0 ? dup(ix->log_fd) : -1;
        int e = fd < 0 ? (ix->log_fd < 0 ? EBADF : errno) : 0;
        ix->syncing = 1;
        pthread_mutex_unlock(&ix->sync_mu);
        uint64_t t0 = fpx_now_ns();
        if (fd >= 0) {
            if (fdatasync(fd) != 0)
                e = errno;
            else
                fpx_stats_fsync(fpx_now_ns() - t0);
            close(fd);
        }
        pthread_mutex_lock(&ix->sync_mu);
        ix->syncing = 0;
        if (e == 0 && target > ix->synced_seq)
            ix->synced_seq = target;
        else if (e != 0 && ix->synced_seq < target)
            snprintf(ix->log_broken, sizeof ix->log_broken, "fdatasync: %s", strerror(e));
        close_if_idle(ix);
        pthread_cond_broadcast(&ix->sync_cv);
    }
    int rc = 0;
    if (ix->synced_seq < seq) {
        fpx_log(FPX_LOG_ERROR, "the log of %s/%s cannot be synced (%s): writes to it are refused",
                ix->tenant, ix->name, ix->log_broken);
        rc = fpx_err_set(err, FPX_E_INTERNAL, "cannot write the log of '%s': %s", ix->name,
                         ix->log_broken);
    }
    pthread_mutex_unlock(&ix->sync_mu);
    return rc;
}

/* The snapshot just written, and the new log after it, hold every record up
 * to seq durably: writes that wait for their sync are durable, and the log
 * descriptor (of the file the new log replaced) is closed. Under the index's
 * lock (no writer between append and apply). */
static void snapshot_synced(fpx_index *ix, uint64_t seq) {
    pthread_mutex_lock(&ix->sync_mu);
    if (ix->log_fd >= 0) {
        close(ix->log_fd);
        ix->log_fd = -1;
    }
    if (seq > ix->synced_seq)
        ix->synced_seq = seq;
    pthread_cond_broadcast(&ix->sync_cv);
    pthread_mutex_unlock(&ix->sync_mu);
}

int fpx_store_snapshot(fpx_index *ix, fpx_err *err) {
    char dir[FPX_PATH_MAX];
    if (fpx_store_index_dir(ix->data_dir, ix->tenant, ix->name, dir))
        return fpx_err_set(err, FPX_E_INTERNAL, "data path too long");
    pthread_mutex_lock(&ix->sync_mu);
    int broken = ix->log_broken[0] != 0;
    pthread_mutex_unlock(&ix->sync_mu);
    if (broken) /* memory may hold writes whose writers were told they failed */
        return fpx_err_set(err, FPX_E_INTERNAL, "no snapshot of '%s': its log could not be synced",
                           ix->name);
    uint64_t t0 = fpx_now_ns();
    if (write_snapshot(dir, ix, err) != 0)
        return -1;
    ix->snap_seq = ix->seq;
    fpx_err lerr = {0};
    if (start_log(dir, ix, &lerr) != 0) {
        /* Harmless: the old log reaches the new snapshot's seq, so it still
         * chains onto it; writes keep going there. */
        fpx_log(FPX_LOG_WARN, "cannot start a new log for %s/%s (the old one is kept): %s",
                ix->tenant, ix->name, lerr.msg);
    } else {
        ix->log_rewrites = 0;
        ix->log_add_bytes = 0;
    }
    snapshot_synced(ix, ix->snap_seq);
    uint64_t took = fpx_now_ns() - t0;
    fpx_stats_snapshot(took, ix->snap_bytes);
    fpx_log(FPX_LOG_DEBUG, "snapshot of %s/%s at seq %llu in %.1f ms", ix->tenant, ix->name,
            (unsigned long long)ix->seq, (double)took / 1e6);
    return 0;
}

/* ---- a snapshot written while writes go on ---------------------------------------- */

/* A snapshot larger than this (by its last size, or as it is taken) is
 * written under the lock as before: a copy of it in memory would cost as
 * much memory as the index. */
#define SNAP_MEM_MAX ((size_t)512 << 20)

struct fpx_snap_job {
    int dirfd;    /* the index's folder, wherever a delete moves it meanwhile */
    uint8_t *buf; /* identity header and body, as the file carries them */
    size_t len, cap;
    uint32_t crc;
    int over; /* grew past SNAP_MEM_MAX */
    uint64_t seq, wal_at, t0;
    int rewrites;
    uint64_t add_bytes;
};

static int mem_write(void *ctx, const void *p, size_t n) {
    fpx_snap_job *j = ctx;
    if (j->len + n > SNAP_MEM_MAX) {
        j->over = 1;
        return -1;
    }
    if (j->len + n > j->cap) {
        size_t cap = j->cap ? j->cap : (size_t)1 << 20;
        while (cap < j->len + n)
            cap *= 2;
        uint8_t *b = realloc(j->buf, cap);
        if (!b)
            return -1;
        j->buf = b;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, p, n);
    j->len += n;
    j->crc = fpx_crc32c(j->crc, p, n);
    return 0;
}

void fpx_store_snapshot_drop(fpx_snap_job *j) {
    if (!j)
        return;
    if (j->dirfd >= 0)
        close(j->dirfd);
    free(j->buf);
    free(j);
}

int fpx_store_snapshot_take(fpx_index *ix, fpx_snap_job **out, fpx_err *err) {
    *out = NULL;
    pthread_mutex_lock(&ix->sync_mu);
    int broken = ix->log_broken[0] != 0;
    pthread_mutex_unlock(&ix->sync_mu);
    if (broken || ix->snap_bytes > SNAP_MEM_MAX)
        return 1;
    char dir[FPX_PATH_MAX];
    if (fpx_store_index_dir(ix->data_dir, ix->tenant, ix->name, dir))
        return fpx_err_set(err, FPX_E_INTERNAL, "data path too long");
    fpx_snap_job *j = calloc(1, sizeof *j);
    if (!j)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory taking a snapshot");
    j->t0 = fpx_now_ns();
    /* room for what the files hold now, so that the copy is seldom moved */
    uint64_t guess = ix->snap_bytes + ix->wal_bytes + ((uint64_t)1 << 20);
    j->cap = guess < SNAP_MEM_MAX ? (size_t)guess : SNAP_MEM_MAX;
    if (!(j->buf = malloc(j->cap)))
        j->cap = 0;
    j->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dirfd < 0) {
        fpx_store_io_err(err, "cannot open", dir);
        fpx_store_snapshot_drop(j);
        return -1;
    }
    uint8_t id[ID_MAX];
    fpx_err werr = {0};
    int rc = mem_write(j, id, ident_pack(id, SNAP_MAGIC, ix, ix->seq));
    if (rc == 0)
        rc = fpx_index_write(ix, mem_write, j, &werr);
    if (rc != 0) {
        int over = j->over;
        fpx_store_snapshot_drop(j);
        if (over)
            return 1;
        if (werr.msg[0])
            *err = werr;
        else
            fpx_err_set(err, FPX_E_INTERNAL, "out of memory taking a snapshot");
        return -1;
    }
    j->seq = ix->seq;
    j->wal_at = ix->wal_bytes;
    j->rewrites = ix->log_rewrites;
    j->add_bytes = ix->log_add_bytes;
    *out = j;
    return 0;
}

int fpx_store_snapshot_write(fpx_snap_job *j, fpx_err *err) {
    uint8_t trailer[8];
    fpx_put_u32(trailer, j->crc);
    fpx_put_u32(trailer + 4, SNAP_MAGIC);
    int fd = openat(j->dirfd, "snapshot.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return fpx_store_io_err(err, "cannot create", "snapshot.tmp");
    uint64_t kicked = 0;
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < j->len;) {
        size_t step = j->len - off < SNAP_KICK ? j->len - off : (size_t)SNAP_KICK;
        struct iovec iov = {j->buf + off, step};
        rc = fpx_writev_all(fd, &iov, 1);
        off += step;
        if (rc == 0 && off - kicked >= SNAP_KICK) { /* see snap_out_write */
            fpx_start_writeback(fd, kicked, off - kicked);
            kicked = off;
        }
    }
    if (rc == 0) {
        struct iovec iov = {trailer, sizeof trailer};
        rc = fpx_writev_all(fd, &iov, 1);
    }
    if (rc == 0)
        rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc == 0)
        rc = renameat(j->dirfd, "snapshot.tmp", j->dirfd, "snapshot");
    else
        errno = e;
    if (rc != 0) {
        fpx_store_io_err(err, "cannot write snapshot", "snapshot.tmp");
        unlinkat(j->dirfd, "snapshot.tmp", 0);
        return -1;
    }
    if (fsync(j->dirfd) != 0)
        return fpx_store_io_err(err, "cannot sync the folder of", "snapshot");
    return 0;
}

/* Starts a new log after the snapshot at j->seq holding the records the old
 * one got since (from j->wal_at on), read back from it. */
static int restart_log(const char *dir, fpx_index *ix, const fpx_snap_job *j, fpx_err *err) {
    char fin[FPX_PATH_MAX];
    fpx_path(fin, "%s/wal", dir);
    size_t tail = (size_t)(ix->wal_bytes - j->wal_at);
    uint8_t *rest = tail ? malloc(tail) : NULL;
    if (tail && !rest)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory starting a new log");
    int in = tail ? open(fin, O_RDONLY | O_CLOEXEC) : -1;
    int rc = 0;
    if (tail && (in < 0 || pread(in, rest, tail, (off_t)j->wal_at) != (ssize_t)tail))
        rc = fpx_store_io_err(err, "cannot read", fin);
    if (in >= 0)
        close(in);
    if (rc == 0)
        rc = start_log_after(dir, ix, j->seq, rest, tail, err);
    free(rest);
    return rc;
}

int fpx_store_snapshot_finish(fpx_index *ix, fpx_snap_job *j, fpx_err *err) {
    char dir[FPX_PATH_MAX];
    if (fpx_store_index_dir(ix->data_dir, ix->tenant, ix->name, dir))
        return fpx_err_set(err, FPX_E_INTERNAL, "data path too long");
    ix->snap_seq = j->seq;
    ix->snap_bytes = (uint64_t)j->len + 8;
    pthread_mutex_lock(&ix->sync_mu);
    int broken = ix->log_broken[0] != 0;
    pthread_mutex_unlock(&ix->sync_mu);
    fpx_err lerr = {0};
    if (broken || restart_log(dir, ix, j, &lerr) != 0) {
        /* Harmless: the old log reaches the new snapshot's seq, so it still
         * chains onto it; writes keep going there. */
        if (!broken)
            fpx_log(FPX_LOG_WARN, "cannot start a new log for %s/%s (the old one is kept): %s",
                    ix->tenant, ix->name, lerr.msg);
        return 0;
    }
    ix->log_rewrites = ix->log_rewrites > j->rewrites; /* the records since, if any */
    ix->log_add_bytes = ix->log_add_bytes > j->add_bytes ? ix->log_add_bytes - j->add_bytes : 0;
    snapshot_synced(ix, ix->seq); /* the records since S are in the new log, synced */
    uint64_t took = fpx_now_ns() - j->t0;
    fpx_stats_snapshot(took, ix->snap_bytes);
    fpx_log(FPX_LOG_DEBUG, "snapshot of %s/%s at seq %llu in %.1f ms (writes went on: seq %llu)",
            ix->tenant, ix->name, (unsigned long long)j->seq, (double)took / 1e6,
            (unsigned long long)ix->seq);
    return 0;
}

/* Renames the folder of tenant's index name to a ".deleted." name, durably. */
static int retire_dir(const char *data_dir, const char *tenant, const char *name,
                      char gone[FPX_PATH_MAX], fpx_err *err) {
    char dir[FPX_PATH_MAX], tdir[FPX_PATH_MAX];
    if (fpx_store_index_dir(data_dir, tenant, name, dir))
        return fpx_err_set(err, FPX_E_INTERNAL, "data path too long");
    fpx_path(tdir, "%s/%s", data_dir, tenant);
    fpx_path(gone, "%s/.%s.deleted.%llu", tdir, name, (unsigned long long)fpx_now_ns());
    if (rename(dir, gone) != 0)
        return fpx_store_io_err(err, "cannot remove", dir);
    if (fpx_fsync_dir(tdir) != 0)
        fpx_log(FPX_LOG_WARN, "cannot sync %s: %s", tdir, strerror(errno));
    return 0;
}

int fpx_store_remove_dir(const char *data_dir, const char *tenant, const char *name, fpx_err *err) {
    char gone[FPX_PATH_MAX];
    if (retire_dir(data_dir, tenant, name, gone, err) != 0)
        return -1;
    if (fpx_rmtree(gone) != 0)
        fpx_log(FPX_LOG_WARN, "could not remove all of %s (removed again at next start)", gone);
    return 0;
}

int fpx_store_retire(fpx_index *ix, char **gone, fpx_err *err) {
    char path[FPX_PATH_MAX];
    if (retire_dir(ix->data_dir, ix->tenant, ix->name, path, err) != 0)
        return -1;
    if (!(*gone = strdup(path))) {
        /* gone from disk already; what is left goes at the next start */
        fpx_log(FPX_LOG_WARN, "out of memory: %s is removed at the next start", path);
    }
    return 0;
}
