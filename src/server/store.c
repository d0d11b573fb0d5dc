/*
 * store.c - index folders, the write-ahead log, snapshots and recovery.
 *
 * Log record (little-endian), padded with zeros to a multiple of 8 bytes so
 * the vectors of every record are 8-byte aligned in a buffer holding the file:
 *
 *   u32 magic "FPXC" | u32 CRC-32C of everything after it up to the padding
 *   u64 seq | u32 op | u32 flags | i64 n | u64 data_len | u64 meta_len
 *   data_len bytes | meta_len bytes | zero padding
 *
 * (Records with magic "FPXW" carry zlib's CRC-32 instead: written by 0.1.0
 * before CRC-32C, still read.)
 *
 * Snapshot file: the index's snapshot body (index.c), the CRC-32C of that
 * body as 4 little-endian bytes, then "FPXC". A file without that tag ends
 * with the body's CRC-32 (0.1.0 before CRC-32C). It is written as snapshot.tmp, fsync'd,
 * renamed over snapshot, and the folder fsync'd; only then is the log emptied.
 * A crash between the rename and the truncation leaves log records the
 * snapshot already covers: replay skips records whose seq is not newer.
 *
 * One fdatasync per write: the index's write lock already serialises writes
 * to one index, and writes to different indexes go to different files.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WAL_MAGIC 0x43585046u     /* "FPXC" read little-endian: CRC-32C */
#define WAL_MAGIC_OLD 0x57585046u /* "FPXW": zlib's CRC-32 */
#define SNAP_TAG WAL_MAGIC
#define WAL_HDR 48

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

int fpx_store_index_dir(const char *data_dir, const char *tenant, const char *name, char *buf) {
    return fpx_path(buf, "%s/%s/%s", data_dir, tenant, name);
}

static int io_err(fpx_err *err, const char *what, const char *path) {
    return fpx_err_set(err, FPX_E_INTERNAL, "%s %s: %s", what, path, strerror(errno));
}

/* The snapshot file being written: a buffered, checksummed stream to fd. */
typedef struct snap_out {
    int fd;
    uint32_t crc;
    uint64_t total; /* bytes handed to snap_put */
    size_t used;
    int failed; /* errno of the failed write, or 0 */
    uint8_t buf[1 << 16];
} snap_out;

static int snap_flush(snap_out *s) {
    struct iovec iov = {s->buf, s->used};
    if (s->used && fpx_writev_all(s->fd, &iov, 1) != 0) {
        s->failed = errno ? errno : EIO;
        return -1;
    }
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
    struct iovec iov = {(void *)p, n};
    if (fpx_writev_all(s->fd, &iov, 1) != 0) {
        s->failed = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

/* The body's sink (fpx_write_fn): checksummed, then appended. */
static int snap_write(void *ctx, const void *p, size_t n) {
    snap_out *s = ctx;
    s->crc = fpx_crc32c(s->crc, p, n);
    return snap_put(s, p, n);
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
        return io_err(err, "cannot create", tmp);
    }
    fpx_err werr = {0};
    int rc = fpx_index_write(ix, snap_write, s, &werr);
    if (rc == 0) {
        uint8_t trailer[8];
        put_u32(trailer, s->crc);
        put_u32(trailer + 4, SNAP_TAG);
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
        unlink(tmp);
        *err = werr;
        return -1;
    }
    errno = e;
    if (rc != 0 || rename(tmp, fin) != 0) {
        io_err(err, "cannot write snapshot", tmp);
        unlink(tmp);
        return -1;
    }
    ix->snap_bytes = size;
    if (fpx_fsync_dir(dir) != 0)
        return io_err(err, "cannot sync", dir);
    return 0;
}

static int open_wal(const char *dir, fpx_index *ix, int create, fpx_err *err) {
    char path[FPX_PATH_MAX];
    fpx_path(path, "%s/wal", dir);
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0), 0640);
    if (fd < 0)
        return io_err(err, "cannot open", path);
    ix->wal_fd = fd;
    return 0;
}

int fpx_store_create(const char *data_dir, fpx_index *ix, fpx_err *err) {
    char tdir[FPX_PATH_MAX], tmp[FPX_PATH_MAX], fin[FPX_PATH_MAX];
    if (fpx_mkdir_p1(data_dir) != 0)
        return io_err(err, "cannot create", data_dir);
    fpx_path(tdir, "%s/%s", data_dir, ix->tenant);
    if (fpx_mkdir_p1(tdir) != 0)
        return io_err(err, "cannot create", tdir);
    if (fpx_store_index_dir(data_dir, ix->tenant, ix->name, fin))
        return fpx_err_set(err, FPX_E_VALIDATION, "data path too long");
    struct stat st;
    if (lstat(fin, &st) == 0)
        return fpx_err_set(err, FPX_E_EXISTS,
                           "index '%s' already exists (its folder is present on disk)", ix->name);
    fpx_path(tmp, "%s/.%s.creating.%llu", tdir, ix->name, (unsigned long long)fpx_now_ns());
    if (mkdir(tmp, 0750) != 0)
        return io_err(err, "cannot create", tmp);
    int fd = -1;
    char wal[FPX_PATH_MAX];
    fpx_path(wal, "%s/wal", tmp);
    if (write_snapshot(tmp, ix, err) != 0)
        goto fail;
    fd = open(wal, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || fsync(fd) != 0 || fpx_fsync_dir(tmp) != 0) {
        io_err(err, "cannot create", wal);
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, fin) != 0) {
        io_err(err, "cannot rename into place", fin);
        goto fail;
    }
    if (fpx_fsync_dir(tdir) != 0) {
        /* The index is in place, only its durability is in doubt: undo. */
        io_err(err, "cannot sync", tdir);
        fpx_rmtree(fin);
        return -1;
    }
    ix->snap_seq = ix->seq;
    ix->wal_bytes = 0;
    return open_wal(fin, ix, 0, err);
fail:
    if (fd >= 0)
        close(fd);
    fpx_rmtree(tmp);
    return -1;
}

int fpx_store_log(const char *data_dir, fpx_index *ix, const fpx_walrec *rec, fpx_err *err) {
    (void)data_dir;
    uint8_t hdr[WAL_HDR], pad[8] = {0};
    uint64_t seq = ix->seq + 1;
    put_u32(hdr, WAL_MAGIC);
    put_u64(hdr + 8, seq);
    put_u32(hdr + 16, (uint32_t)rec->op);
    put_u32(hdr + 20, rec->flags);
    put_u64(hdr + 24, (uint64_t)rec->n);
    put_u64(hdr + 32, rec->data_len);
    put_u64(hdr + 40, rec->meta_len);
    uint32_t crc = fpx_crc32c(0, hdr + 8, WAL_HDR - 8);
    crc = fpx_crc32c(crc, rec->data, rec->data_len);
    crc = fpx_crc32c(crc, rec->meta, rec->meta_len);
    put_u32(hdr + 4, crc);
    size_t body = WAL_HDR + rec->data_len + rec->meta_len;
    size_t padn = (8 - body % 8) % 8;
    struct iovec iov[4] = {{hdr, WAL_HDR},
                           {(void *)rec->data, rec->data_len},
                           {(void *)rec->meta, rec->meta_len},
                           {pad, padn}};
    if (fpx_writev_all(ix->wal_fd, iov, 4) != 0 || fdatasync(ix->wal_fd) != 0) {
        int e = errno;
        /* Cut whatever part reached the file, so the log stays a sequence of
         * whole records (recovery would drop a torn tail anyway). */
        if (ftruncate(ix->wal_fd, (off_t)ix->wal_bytes) == 0)
            (void)fdatasync(ix->wal_fd);
        return fpx_err_set(err, e == ENOSPC ? FPX_E_LIMIT : FPX_E_INTERNAL,
                           "cannot write the log of '%s': %s", ix->name, strerror(e));
    }
    ix->seq = seq;
    ix->wal_bytes += body + padn;
    return 0;
}

void fpx_store_unlog(fpx_index *ix, uint64_t wal_bytes_before) {
    if (ftruncate(ix->wal_fd, (off_t)wal_bytes_before) == 0 && fdatasync(ix->wal_fd) == 0) {
        ix->wal_bytes = wal_bytes_before;
        ix->seq--;
    } else {
        fpx_log(FPX_LOG_ERROR, "cannot take back a log record of %s/%s: %s", ix->tenant, ix->name,
                strerror(errno));
    }
}

int fpx_store_snapshot(const char *data_dir, fpx_index *ix, fpx_err *err) {
    char dir[FPX_PATH_MAX];
    if (fpx_store_index_dir(data_dir, ix->tenant, ix->name, dir))
        return fpx_err_set(err, FPX_E_INTERNAL, "data path too long");
    uint64_t t0 = fpx_now_ns();
    if (write_snapshot(dir, ix, err) != 0)
        return -1;
    ix->snap_seq = ix->seq;
    if (ftruncate(ix->wal_fd, 0) != 0 || fdatasync(ix->wal_fd) != 0) {
        /* Harmless: the records left are covered by the snapshot and skipped. */
        fpx_log(FPX_LOG_WARN, "cannot empty the log of %s/%s: %s", ix->tenant, ix->name,
                strerror(errno));
    } else {
        ix->wal_bytes = 0;
    }
    fpx_log(FPX_LOG_DEBUG, "snapshot of %s/%s at seq %llu in %.1f ms", ix->tenant, ix->name,
            (unsigned long long)ix->seq, (double)(fpx_now_ns() - t0) / 1e6);
    return 0;
}

int fpx_store_remove(const char *data_dir, fpx_index *ix, fpx_err *err) {
    char dir[FPX_PATH_MAX], tdir[FPX_PATH_MAX], gone[FPX_PATH_MAX];
    if (fpx_store_index_dir(data_dir, ix->tenant, ix->name, dir))
        return fpx_err_set(err, FPX_E_INTERNAL, "data path too long");
    fpx_path(tdir, "%s/%s", data_dir, ix->tenant);
    fpx_path(gone, "%s/.%s.deleted.%llu", tdir, ix->name, (unsigned long long)fpx_now_ns());
    if (rename(dir, gone) != 0)
        return io_err(err, "cannot remove", dir);
    if (fpx_fsync_dir(tdir) != 0)
        fpx_log(FPX_LOG_WARN, "cannot sync %s: %s", tdir, strerror(errno));
    fpx_store_close(ix);
    if (fpx_rmtree(gone) != 0)
        fpx_log(FPX_LOG_WARN, "could not remove all of %s (removed again at next start)", gone);
    return 0;
}

void fpx_store_close(fpx_index *ix) {
    if (ix->wal_fd >= 0)
        close(ix->wal_fd);
    ix->wal_fd = -1;
}

/* ---- recovery ------------------------------------------------------------------ */

static int load_snapshot(const char *dir, const char *tenant, const char *name, fpx_index **out,
                         fpx_err *err) {
    char path[FPX_PATH_MAX];
    fpx_path(path, "%s/snapshot", dir);
    const uint8_t *buf;
    size_t len;
    if (fpx_map_file(path, &buf, &len) != 0)
        return io_err(err, "cannot read", path);
    int rc;
    uint64_t seq;
    size_t body = 0;
    if (len >= 8 && get_u32(buf + len - 4) == SNAP_TAG &&
        get_u32(buf + len - 8) == fpx_crc32c(0, buf, len - 8))
        body = len - 8;
    else if (len >= 4 && get_u32(buf + len - 4) == fpx_crc32(0, buf, len - 4))
        body = len - 4; /* written before CRC-32C */
    if (body == 0)
        rc = fpx_err_set(err, FPX_E_INTERNAL, "%s: checksum mismatch", path);
    else
        rc = fpx_index_decode(tenant, name, buf, body, out, &seq, err);
    if (rc == 0)
        (*out)->snap_bytes = len;
    fpx_unmap_file(buf, len);
    return rc;
}

/* Replays the log after the snapshot; cuts a torn or corrupt tail. */
static int replay_wal(const char *dir, fpx_index *ix, fpx_store_apply apply, fpx_err *err) {
    char path[FPX_PATH_MAX];
    fpx_path(path, "%s/wal", dir);
    const uint8_t *buf;
    size_t len;
    if (fpx_map_file(path, &buf, &len) != 0) {
        if (errno != ENOENT)
            return io_err(err, "cannot read", path);
        buf = NULL;
        len = 0;
    }
    size_t off = 0;
    uint64_t applied = 0;
    int rc = 0;
    while (len - off >= WAL_HDR) {
        const uint8_t *h = buf + off;
        uint64_t dl = get_u64(h + 32), ml = get_u64(h + 40);
        size_t room = len - off - WAL_HDR;
        uint32_t magic = get_u32(h);
        if ((magic != WAL_MAGIC && magic != WAL_MAGIC_OLD) || dl > room || ml > room - dl)
            break;
        size_t body = WAL_HDR + (size_t)dl + (size_t)ml;
        uint32_t crc =
            magic == WAL_MAGIC ? fpx_crc32c(0, h + 8, body - 8) : fpx_crc32(0, h + 8, body - 8);
        if (crc != get_u32(h + 4))
            break;
        uint64_t seq = get_u64(h + 8);
        fpx_walrec rec = {(fpx_walop)get_u32(h + 16),
                          get_u32(h + 20),
                          (int64_t)get_u64(h + 24),
                          h + WAL_HDR,
                          (size_t)dl,
                          h + WAL_HDR + dl,
                          (size_t)ml};
        if (seq > ix->seq) {
            if (seq != ix->seq + 1) {
                rc = fpx_err_set(err, FPX_E_INTERNAL, "%s: record %llu follows %llu", path,
                                 (unsigned long long)seq, (unsigned long long)ix->seq);
                break;
            }
            if (apply(ix, &rec, err) != 0) {
                rc = -1;
                break;
            }
            ix->seq = seq;
            applied++;
        }
        size_t padded = body + (8 - body % 8) % 8;
        off += padded <= len - off ? padded : len - off;
    }
    fpx_unmap_file(buf, len);
    if (rc != 0)
        return -1;
    if (off < len) {
        fpx_log(FPX_LOG_WARN,
                "%s: dropping %zu bytes of torn or corrupt log tail (never acknowledged)", path,
                len - off);
        if (truncate(path, (off_t)off) != 0)
            return io_err(err, "cannot truncate", path);
    }
    if (applied)
        fpx_log(FPX_LOG_INFO, "%s/%s: replayed %llu log records", ix->tenant, ix->name,
                (unsigned long long)applied);
    ix->wal_bytes = off;
    return open_wal(dir, ix, 1, err);
}

static void load_tenant(const char *data_dir, const char *tenant, fpx_store_apply apply,
                        fpx_store_found found, void *ctx) {
    char tdir[FPX_PATH_MAX];
    fpx_path(tdir, "%s/%s", data_dir, tenant);
    DIR *d = opendir(tdir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (!strcmp(name, ".") || !strcmp(name, ".."))
            continue;
        char dir[FPX_PATH_MAX];
        fpx_path(dir, "%s/%s", tdir, name);
        if (name[0] == '.') {
            /* An interrupted create or delete: never acknowledged / already gone. */
            if (strstr(name, ".creating.") || strstr(name, ".deleted.")) {
                fpx_log(FPX_LOG_INFO, "removing leftover %s", dir);
                fpx_rmtree(dir);
            }
            continue;
        }
        struct stat st;
        if (!fpx_name_valid(name, strlen(name)) || lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        fpx_index *ix = NULL;
        fpx_err err = {0};
        if (load_snapshot(dir, tenant, name, &ix, &err) != 0 ||
            replay_wal(dir, ix, apply, &err) != 0) {
            fpx_log(FPX_LOG_ERROR, "cannot load index %s/%s, skipping it: %s", tenant, name,
                    err.msg);
            if (ix) {
                fpx_store_close(ix);
                fpx_index_free(ix);
            }
            continue;
        }
        found(ctx, ix);
    }
    closedir(d);
}

int fpx_store_load_all(const char *data_dir, fpx_store_apply apply, fpx_store_found found,
                       void *ctx, fpx_err *err) {
    if (fpx_mkdir_p1(data_dir) != 0)
        return io_err(err, "cannot create data dir", data_dir);
    DIR *d = opendir(data_dir);
    if (!d)
        return io_err(err, "cannot open data dir", data_dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!fpx_name_valid(de->d_name, strlen(de->d_name)))
            continue;
        load_tenant(data_dir, de->d_name, apply, found, ctx);
    }
    closedir(d);
    return 0;
}
