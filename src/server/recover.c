/*
 * recover.c - loading every index at start: snapshot, then the log replayed
 * through the caller's apply, trusting nothing it cannot check (store.c's
 * header has the formats and the rules: whose the files are, how they chain,
 * a torn tail told from damage). An index that does not add up is refused
 * with its files left as they were.
 */
#include "probe.h"
#include "stats.h"
#include "store.h"
#include "store_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A torn tail is told from damage by looking for any valid record after the
 * bad one. Checksums of candidates are bounded so that a file crafted to be
 * full of record-like headers cannot make that search quadratic; past the
 * budget the log is treated as damaged (refused, never cut). */
#define SCAN_BUDGET_EXTRA (64ull << 20)

/* Decodes the identity header at the start of buf[0..len) (its magic was
 * checked by the caller); *hlen receives its length. */
static int ident_parse(const uint8_t *buf, size_t len, const char *path, fpx_store_ident *out,
                       size_t *hlen, fpx_err *err) {
    if (len < ID_FIXED)
        return fpx_err_set(err, FPX_E_INTERNAL, "%s: identity header is cut short", path);
    size_t hl = fpx_get_u32(buf + 8);
    size_t tl = fpx_get_u16(buf + 40), nl = fpx_get_u16(buf + 42);
    if (hl < ID_FIXED || hl > ID_MAX || hl > len || hl % 8 ||
        fpx_get_u32(buf + 4) != fpx_crc32c(0, buf + 8, hl - 8))
        return fpx_err_set(err, FPX_E_INTERNAL, "%s: identity header is damaged (checksum)", path);
    if (fpx_get_u32(buf + 12) != ID_VERSION)
        return fpx_err_set(err, FPX_E_INTERNAL, "%s: unknown format version %u", path,
                           fpx_get_u32(buf + 12));
    const char *t = (const char *)buf + ID_FIXED, *n = t + tl;
    if (ID_FIXED + tl + nl > hl || !fpx_name_valid(t, tl) ||
        !(fpx_name_valid(n, nl) || fpx_name_shard(n, nl)))
        return fpx_err_set(err, FPX_E_INTERNAL, "%s: identity header names no valid index", path);
    out->seq = fpx_get_u64(buf + 16);
    memcpy(out->uid, buf + 24, FPX_UID_BYTES);
    memcpy(out->tenant, t, tl);
    out->tenant[tl] = 0;
    memcpy(out->name, n, nl);
    out->name[nl] = 0;
    *hlen = hl;
    return 0;
}

/* The snapshot as loaded: its identity, when it has one. */
typedef struct snap_info {
    int has_id;
    fpx_store_ident id;
} snap_info;

/*
 * Earlier versions of the server wrote an untrained residual
 * or local-search quantizer (RQ, LSQ, PRQ, PLSQ, in any composition) in the
 * form FAISS 1.7.3 itself writes, and FAISS 1.7.3's reader crashes on it (a
 * segmentation fault, as in-process). Such a snapshot is read in the import
 * probe first (probe.c), and refused when the probe dies, so that one empty
 * index refuses itself rather than take the whole server down at every
 * start. Only snapshots of such types holding no vector are concerned.
 */
static int readable_by_faiss(const char *path, const uint8_t *body, size_t len, fpx_err *err) {
    fpx_msg m;
    fpx_err derr = {0};
    /* the header alone: a snapshot's metadata (its keys tables) is decoded once, later */
    if (fpx_msg_decode_header(&m, body, len, &derr) != 0)
        return 0; /* fpx_index_decode says what is wrong with it */
    const msgpack_object *t = fpx_map_get(m.header, "index_type");
    const msgpack_object *n = fpx_map_get(m.header, "nslots");
    const char *ts;
    size_t tl;
    char type[256];
    int64_t nslots = -1;
    int concerned = t && n && fpx_obj_str(t, &ts, &tl) == 0 && tl < sizeof type &&
                    fpx_obj_int(n, &nslots) == 0 && nslots == 0;
    if (concerned) {
        memcpy(type, ts, tl);
        type[tl] = 0;
        concerned = strstr(type, "RQ") || strstr(type, "LSQ");
    }
    int rc = 0;
    fpx_err perr = {0};
    if (concerned && fpx_probe_import(m.body.data, m.body.data_size, &perr) != 0) {
        fpx_log(FPX_LOG_WARN, "%s: %s", path, perr.msg);
        rc = fpx_err_set(err, FPX_E_INTERNAL,
                         "an untrained RQ/LSQ quantizer as earlier versions wrote it, which FAISS "
                         "cannot read back; the index holds no vectors: delete it and create it "
                         "again");
    }
    fpx_msg_destroy(&m);
    return rc;
}

static int load_snapshot(const char *dir, const char *tenant, const char *name, fpx_index **out,
                         snap_info *si, fpx_err *err) {
    char path[FPX_PATH_MAX];
    fpx_path(path, "%s/snapshot", dir);
    const uint8_t *buf;
    size_t len;
    if (fpx_map_file(path, &buf, &len) != 0)
        return fpx_store_io_err(err, "cannot read", path);
    int rc = 0;
    uint64_t seq;
    size_t start = 0, body = 0;
    memset(si, 0, sizeof *si);
    if (len >= 4 && fpx_get_u32(buf) == SNAP_MAGIC) {
        si->has_id = 1;
        if (len < 8 + ID_FIXED || fpx_get_u32(buf + len - 4) != SNAP_MAGIC ||
            fpx_get_u32(buf + len - 8) != fpx_crc32c(0, buf, len - 8))
            rc = fpx_err_set(err, FPX_E_INTERNAL, "%s: checksum mismatch", path);
        else if (ident_parse(buf, len - 8, path, &si->id, &start, err) != 0)
            rc = -1;
        else if (strcmp(si->id.tenant, tenant) || strcmp(si->id.name, name))
            rc = fpx_err_set(err, FPX_E_INTERNAL,
                             "%s belongs to index %s/%s, not to the folder %s/%s it is in", path,
                             si->id.tenant, si->id.name, tenant, name);
        body = len - 8;
    } else if (len >= 8 && fpx_get_u32(buf + len - 4) == SNAP_TAG_OLD &&
               fpx_get_u32(buf + len - 8) == fpx_crc32c(0, buf, len - 8)) {
        body = len - 8; /* CRC-32C, no identity */
    } else if (len >= 4 && fpx_get_u32(buf + len - 4) == fpx_crc32(0, buf, len - 4)) {
        body = len - 4; /* written before CRC-32C */
    } else {
        rc = fpx_err_set(err, FPX_E_INTERNAL, "%s: checksum mismatch", path);
    }
    if (rc == 0)
        rc = readable_by_faiss(path, buf + start, body - start, err);
    if (rc == 0)
        rc = fpx_index_decode(tenant, name, buf + start, body - start, out, &seq, err);
    if (rc == 0 && si->has_id && seq != si->id.seq) {
        rc = fpx_err_set(err, FPX_E_INTERNAL, "%s: its header says seq %llu, its body %llu", path,
                         (unsigned long long)si->id.seq, (unsigned long long)seq);
        fpx_index_free(*out);
        *out = NULL;
    }
    if (rc == 0) {
        (*out)->snap_bytes = len;
        if (si->has_id)
            memcpy((*out)->uid, si->id.uid, FPX_UID_BYTES);
        else if (fpx_store_new_uid((*out)->uid, err) != 0) { /* kept from its first snapshot on */
            fpx_index_free(*out);
            *out = NULL;
            rc = -1;
        }
    }
    fpx_unmap_file(buf, len);
    return rc;
}

/* The log as checked before anything is applied or cut. */
typedef struct wal_scan {
    const char *path;
    const uint8_t *buf;
    size_t len;
    int has_id;         /* it starts with an identity header */
    fpx_store_ident id; /* ... saying this */
    size_t start;       /* offset of the first record */
    size_t end;         /* end of the last valid record: where a torn tail begins */
    uint64_t nrec;      /* valid records, consecutive by seq */
    uint64_t first;     /* seq of the first and last of them */
    uint64_t last;
    uint64_t budget; /* bytes the search for valid records may still checksum */
} wal_scan;

/* 1 when a whole valid record starts at off: *seq and *next (offset after
 * its padding) are set. Bare logs may hold records of both checksums.
 * verify 0 skips the checksum: for a record scan_wal already checked. */
static int record_at(const wal_scan *w, size_t off, int verify, uint64_t *seq, size_t *next) {
    if (w->len - off < WAL_HDR)
        return 0;
    const uint8_t *h = w->buf + off;
    uint32_t magic = fpx_get_u32(h);
    uint64_t dl = fpx_get_u64(h + 32), ml = fpx_get_u64(h + 40);
    size_t room = w->len - off - WAL_HDR;
    if ((magic != WAL_MAGIC && (magic != WAL_MAGIC_OLD || w->has_id)) || dl > room ||
        ml > room - dl)
        return 0;
    size_t body = WAL_HDR + (size_t)dl + (size_t)ml;
    if (verify && fpx_get_u32(h + 4) != (magic == WAL_MAGIC ? fpx_crc32c(0, h + 8, body - 8)
                                                            : fpx_crc32(0, h + 8, body - 8)))
        return 0;
    *seq = fpx_get_u64(h + 8);
    size_t padded = body + (8 - body % 8) % 8;
    /* The padding of the last record may be missing: it carries nothing. */
    *next = off + (padded <= w->len - off ? padded : w->len - off);
    return 1;
}

/* Looks for a valid record after the damaged one at off whose seq could
 * follow `prev` (known: have_prev) with the bytes in between: each record
 * takes at least WAL_HDR bytes. 1 found (*at, *seq), 0 none, -1 budget spent. */
static int find_valid_after(wal_scan *w, size_t off, int have_prev, uint64_t prev,
                            uint64_t snap_seq, size_t *at, uint64_t *seq) {
    for (size_t p = off + 8; p < w->len && w->len - p >= WAL_HDR; p += 8) {
        const uint8_t *h = w->buf + p;
        uint32_t magic = fpx_get_u32(h);
        if (magic != WAL_MAGIC && magic != WAL_MAGIC_OLD)
            continue;
        uint64_t s = fpx_get_u64(h + 8), lo = have_prev ? prev + 1 : 1;
        uint64_t hi = (have_prev ? prev : snap_seq) + 1 + (p - off) / WAL_HDR;
        if (s < lo || s > hi)
            continue;
        uint64_t dl = fpx_get_u64(h + 32), ml = fpx_get_u64(h + 40), room = w->len - p - WAL_HDR;
        if (dl > room || ml > room - dl)
            continue;
        if (w->budget < WAL_HDR + dl + ml)
            return -1;
        w->budget -= WAL_HDR + dl + ml;
        size_t next;
        if (record_at(w, p, 1, &s, &next)) {
            *at = p;
            *seq = s;
            return 1;
        }
    }
    return 0;
}

/* Checks the whole log without changing anything: its header, every record's
 * checksum and sequence, and whether a failing record is a torn tail. */
static int scan_wal(wal_scan *w, uint64_t snap_seq, fpx_err *err) {
    w->start = 0;
    if (w->len >= 4 && fpx_get_u32(w->buf) == LOG_MAGIC) {
        if (ident_parse(w->buf, w->len, w->path, &w->id, &w->start, err) != 0)
            return -1;
        w->has_id = 1;
    }
    w->budget = 2 * (uint64_t)w->len + SCAN_BUDGET_EXTRA;
    int have_prev = w->has_id;
    uint64_t prev = w->has_id ? w->id.seq : 0;
    size_t off = w->start;
    while (off < w->len) {
        uint64_t seq;
        size_t next;
        if (record_at(w, off, 1, &seq, &next)) {
            if (have_prev && seq != prev + 1)
                return fpx_err_set(
                    err, FPX_E_INTERNAL, "%s: the record at offset %zu has seq %llu, expected %llu",
                    w->path, off, (unsigned long long)seq, (unsigned long long)(prev + 1));
            if (w->nrec++ == 0)
                w->first = seq;
            w->last = prev = seq;
            have_prev = 1;
            off = next;
            continue;
        }
        size_t at = 0;
        uint64_t found = 0;
        int f = find_valid_after(w, off, have_prev, prev, snap_seq, &at, &found);
        if (f == 0)
            break; /* a torn tail: nothing valid follows */
        /* A valid record appended while the failing one still waited for its
         * fdatasync (its horizon reaches back to it): a crash cut a group
         * commit that never completed, and the page cache reached the disk
         * out of order. A record is acknowledged only after a fdatasync
         * that covers every record before it, so nothing from the failing
         * record on was acknowledged: a torn tail as well. */
        uint32_t horizon = fpx_get_u32(w->buf + at + 20) >> FPX_WAL_HORIZON_SHIFT;
        if (have_prev && found > prev && found - prev - 1 <= horizon)
            break;
        char after[64] = "";
        if (have_prev)
            snprintf(after, sizeof after, " (seq %llu expected, after seq %llu)",
                     (unsigned long long)(prev + 1), (unsigned long long)prev);
        if (f < 0)
            return fpx_err_set(err, FPX_E_INTERNAL,
                               "%s: the record at offset %zu%s is damaged, and what follows "
                               "is too large to search for valid records",
                               w->path, off, after);
        /* Count what the damage would lose, for the operator. */
        uint64_t last = found;
        size_t p = at;
        record_at(w, p, 0, &seq, &p);
        while (record_at(w, p, 1, &seq, &next) && seq == last + 1) {
            last = seq;
            p = next;
        }
        return fpx_err_set(err, FPX_E_INTERNAL,
                           "%s: the record at offset %zu%s is damaged, but valid records "
                           "follow (seq %llu to %llu from offset %zu): not a torn tail",
                           w->path, off, after, (unsigned long long)found, (unsigned long long)last,
                           at);
    }
    w->end = off;
    return 0;
}

/* Does the log belong to this snapshot, and chain onto it? */
static int check_chain(const wal_scan *w, const snap_info *si, const fpx_index *ix, fpx_err *err) {
    uint64_t snap = ix->seq;
    if (w->has_id) {
        char a[2 * FPX_UID_BYTES + 1], b[2 * FPX_UID_BYTES + 1];
        fpx_store_uid_hex(w->id.uid, a);
        fpx_store_uid_hex(ix->uid, b);
        if (!si->has_id)
            return fpx_err_set(err, FPX_E_INTERNAL,
                               "%s has an identity header but the snapshot has none", w->path);
        if (strcmp(w->id.tenant, ix->tenant) || strcmp(w->id.name, ix->name))
            return fpx_err_set(err, FPX_E_INTERNAL, "%s belongs to index %s/%s", w->path,
                               w->id.tenant, w->id.name);
        if (memcmp(w->id.uid, ix->uid, FPX_UID_BYTES))
            return fpx_err_set(err, FPX_E_INTERNAL,
                               "%s belongs to another index of that name (id %s; the "
                               "snapshot's is %s)",
                               w->path, a, b);
        if (w->id.seq > snap)
            return fpx_err_set(err, FPX_E_INTERNAL,
                               "%s follows a snapshot at seq %llu, but the snapshot covers "
                               "only up to seq %llu: writes %llu to %llu are missing",
                               w->path, (unsigned long long)w->id.seq, (unsigned long long)snap,
                               (unsigned long long)snap + 1, (unsigned long long)w->id.seq);
        if (w->id.seq < snap && (w->nrec == 0 || w->last < snap))
            return fpx_err_set(err, FPX_E_INTERNAL,
                               "%s follows seq %llu and ends at seq %llu, before the "
                               "snapshot's seq %llu",
                               w->path, (unsigned long long)w->id.seq,
                               (unsigned long long)(w->nrec ? w->last : w->id.seq),
                               (unsigned long long)snap);
        return 0;
    }
    if (si->has_id && (w->nrec == 0 || w->first > snap + 1 || w->last < snap))
        return fpx_err_set(err, FPX_E_INTERNAL,
                           "%s has no identity header and does not reach the snapshot's seq "
                           "%llu",
                           w->path, (unsigned long long)snap);
    if (w->nrec && w->last > snap && w->first > snap + 1)
        return fpx_err_set(err, FPX_E_INTERNAL,
                           "%s starts at seq %llu, but the snapshot covers only up to %llu",
                           w->path, (unsigned long long)w->first, (unsigned long long)snap);
    return 0;
}

/* Checks the log against the snapshot, then replays it; cuts a torn tail. */
static int replay_wal(const char *dir, fpx_index *ix, const snap_info *si, fpx_store_apply apply,
                      fpx_err *err) {
    char path[FPX_PATH_MAX];
    fpx_path(path, "%s/wal", dir);
    wal_scan w = {.path = path};
    if (fpx_map_file(path, &w.buf, &w.len) != 0) {
        if (errno == ENOENT)
            return fpx_err_set(err, FPX_E_INTERNAL,
                               "%s is missing: the writes since the snapshot cannot be known",
                               path);
        return fpx_store_io_err(err, "cannot read", path);
    }
    int rc = scan_wal(&w, ix->seq, err);
    if (rc == 0)
        rc = check_chain(&w, si, ix, err);
    uint64_t applied = 0;
    for (size_t off = w.start; rc == 0 && off < w.end;) {
        uint64_t seq;
        size_t next;
        record_at(&w, off, 0, &seq, &next); /* checked by scan_wal */
        const uint8_t *h = w.buf + off;
        uint64_t dl = fpx_get_u64(h + 32), ml = fpx_get_u64(h + 40);
        fpx_walrec rec = {.op = (fpx_walop)fpx_get_u32(h + 16),
                          .flags = fpx_get_u32(h + 20) & ~FPX_WAL_HORIZON_MASK,
                          .n = (int64_t)fpx_get_u64(h + 24),
                          .data = h + WAL_HDR,
                          .data_len = (size_t)dl,
                          .meta = h + WAL_HDR + dl,
                          .meta_len = (size_t)ml};
        if (seq > ix->seq) { /* scan_wal and check_chain made it ix->seq + 1 */
            if (apply(ix, &rec, err) != 0) {
                rc = -1;
                break;
            }
            ix->seq = seq;
            applied++;
        }
        off = next;
    }
    fpx_unmap_file(w.buf, w.len);
    if (rc != 0)
        return -1;
    if (w.end < w.len) {
        fpx_log(FPX_LOG_WARN,
                "%s: dropping %zu bytes of torn log tail at offset %zu (never acknowledged)", path,
                w.len - w.end, w.end);
        if (truncate(path, (off_t)w.end) != 0)
            return fpx_store_io_err(err, "cannot truncate", path);
    }
    /* What was read may be in the page cache only: records written but not
     * yet synced when the process died (never acknowledged), or the cut
     * just made. Synced now, before they are served or, in a cluster,
     * reported durable: a power loss after this start loses none of them. */
    if (fpx_fsync_file(path) != 0)
        return fpx_store_io_err(err, "cannot sync", path);
    if (applied)
        fpx_log(FPX_LOG_INFO, "%s/%s: replayed %llu log records", ix->tenant, ix->name,
                (unsigned long long)applied);
    ix->wal_bytes = w.end;
    return 0;
}

static void load_tenant(const char *data_dir, const char *tenant, fpx_store_apply apply,
                        fpx_store_found found, fpx_store_refused refused, void *ctx) {
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
        if (name[0] == '.' && !fpx_name_shard(name, strlen(name))) {
            /* An interrupted create or delete: never acknowledged / already gone. */
            if (strstr(name, ".creating.") || strstr(name, ".deleted.")) {
                fpx_log(FPX_LOG_INFO, "removing leftover %s", dir);
                fpx_rmtree(dir);
            }
            continue;
        }
        struct stat st;
        if (!(fpx_name_valid(name, strlen(name)) || fpx_name_shard(name, strlen(name))) ||
            lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        fpx_index *ix = NULL;
        fpx_err err = {0};
        snap_info si;
        if (load_snapshot(dir, tenant, name, &ix, &si, &err) != 0 ||
            replay_wal(dir, ix, &si, apply, &err) != 0) {
            fpx_log(FPX_LOG_ERROR,
                    "refusing to load index %s/%s: %s; its files are left as they were in %s",
                    tenant, name, err.msg, dir);
            fpx_index_free(ix);
            refused(ctx, tenant, name, err.msg, dir);
            continue;
        }
        ix->data_dir = data_dir;
        found(ctx, ix);
    }
    closedir(d);
}

int fpx_store_load_all(const char *data_dir, fpx_store_apply apply, fpx_store_found found,
                       fpx_store_refused refused, void *ctx, fpx_err *err) {
    if (fpx_mkdir_p1(data_dir) != 0)
        return fpx_store_io_err(err, "cannot create data dir", data_dir);
    DIR *d = opendir(data_dir);
    if (!d)
        return fpx_store_io_err(err, "cannot open data dir", data_dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!fpx_name_valid(de->d_name, strlen(de->d_name)))
            continue;
        load_tenant(data_dir, de->d_name, apply, found, refused, ctx);
    }
    closedir(d);
    return 0;
}
