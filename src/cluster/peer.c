/*
 * peer.c - a replica that starts from another node's snapshot, and streams
 * that are trimmed once every replica's snapshot covers their beginning.
 *
 * Taking a peer's state. A replica with no local state (a node started on
 * an empty data dir, or placed on an index it never held), or whose state
 * is older than its stream's first record (trimmed away meanwhile), asks the
 * other nodes placed on the index, in placement order, for their state:
 *
 *   request  {"operation": "peer_snapshot", "tenant": T, "index_id": N,
 *             "uid": hex [, "transfer": X, "offset": O]}   (fpx_cluster_forward)
 *   reply    {"status": "ok", "seq": S, "size": B, "crc32c": C,
 *             "transfer": X, "offset": O} | data: bytes O.. of the body
 *
 * The body is the server's own snapshot codec (snapshot.c), taken once,
 * under the index's shared lock, into an unnamed file of the giving node's
 * data dir; S is the last stream record it covers, B its size and C its
 * CRC-32C. The first request (no transfer) takes it and answers its first
 * part; the asking node then asks for the next offset of transfer X until
 * it has all B bytes. Each part fits the giving node's --max-message-size
 * (at most 8 MiB), so an index of any size can be given, and neither node
 * holds the body in memory: the asking node writes the parts to an unnamed
 * file and decodes from it. A body of one part is not kept (X is 0); a
 * transfer whose last part was given, or that nobody asked for a part of
 * for a minute (the heartbeat looks), is closed. The request is node-only:
 * it is answered only on a socket whose routing id carries the cluster's
 * forwarding token (net.c), before any API key is looked at, since the
 * asking node has no tenant's key of its own. The new replica
 * decodes the body, writes it as its own first snapshot, and follows the
 * stream from S + 1. A peer whose state is older than the stream's first
 * record is of no use (the records after it are gone): the next one is
 * asked. When none answers, a stream that still starts at record 1 is
 * replayed whole, as before; otherwise the replica is not opened and
 * requests naming the index get unavailable (never partial data), until a
 * later request finds a peer.
 *
 * Trimming. Every node records, per replica, the stream record its local
 * snapshot covers (bucket fpx_snapshots, node.uid -> decimal), since a
 * restart resumes from that snapshot and needs every record after it. Now
 * and then each node purges the streams of the indexes it holds below the
 * smallest snapshot sequence of their live placed replicas; a live placed
 * replica that has not reported yet stops the purge. Purging is monotonic
 * (records below a sequence go; a smaller one later is a no-op), so two
 * nodes doing it at once are harmless. A node that is down is not waited
 * for: when it comes back behind the trimmed point, it takes a peer's
 * snapshot as above.
 */
#define _GNU_SOURCE /* O_TMPFILE, mkostemp */
#include "internal.h"

#include "server/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Beats between two trims of the streams this node holds. */
#define FPX_TRIM_EVERY 5

/* ---- serving a snapshot ------------------------------------------------------------ */

/* The most a part of a snapshot carries: its reply must also fit the giving
 * node's --max-message-size, less room for the header. */
#define FPX_PEER_PART_MAX ((size_t)8 << 20)
#define FPX_PEER_PART_HEADROOM 1024
/* A transfer not asked for its next part for this long is given up. */
#define FPX_PEER_IDLE_MS 60000

/* A snapshot being given: taken once, at seq, into an unnamed file, and
 * read from there part by part (c->xfer_mu). */
typedef struct fpx_transfer {
    uint64_t id;
    int fd;
    uint64_t size, seq;
    uint32_t crc; /* CRC-32C of the whole body */
    uint64_t used_ms;
    struct fpx_transfer *next;
} fpx_transfer;

/* An unnamed file in dir (O_TMPFILE; else a name removed at once), or -1. */
static int tmp_file(const char *dir) {
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/.peer-snapshot-XXXXXX", dir) >= (int)sizeof path)
        return -1;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

static int hex_uid(const char *hex, size_t n, uint8_t *uid) {
    if (n != 2 * FPX_UID_BYTES)
        return -1;
    for (int i = 0; i < FPX_UID_BYTES; i++) {
        unsigned v;
        char two[3] = {hex[2 * i], hex[2 * i + 1], 0};
        if (sscanf(two, "%2x", &v) != 1)
            return -1;
        uid[i] = (uint8_t)v;
    }
    return 0;
}

/* Unlinks *p from c->xfers and closes it (c->xfer_mu held). */
static void transfer_free(fpx_transfer **p) {
    fpx_transfer *t = *p;
    *p = t->next;
    close(t->fd);
    free(t);
}

/* Closes the transfers idle for too long (c->xfer_mu held). */
static void expire_transfers(fpx_cluster *c, uint64_t now) {
    for (fpx_transfer **p = &c->xfers; *p;) {
        if (now - (*p)->used_ms >= FPX_PEER_IDLE_MS)
            transfer_free(p);
        else
            p = &(*p)->next;
    }
}

void fpx_peer_transfers_free(fpx_cluster *c) {
    expire_transfers(c, UINT64_MAX / 2); /* every one: each is "idle" that long */
}

/* Lists a copy of t, with its id (set in t too) and a descriptor of its
 * file of its own: 0, or -1. */
static int transfer_list(fpx_cluster *c, fpx_transfer *t) {
    fpx_transfer *keep = malloc(sizeof *keep);
    int fd = keep ? dup(t->fd) : -1;
    if (fd < 0) {
        free(keep);
        return -1;
    }
    pthread_mutex_lock(&c->xfer_mu);
    expire_transfers(c, fpx_mono_ms());
    t->id = ++c->xfer_next;
    *keep = *t;
    keep->fd = fd;
    keep->next = c->xfers;
    c->xfers = keep;
    pthread_mutex_unlock(&c->xfer_mu);
    return 0;
}

/* The listed transfer id into *t, its fd a descriptor of the caller's own
 * (the listed one may be closed meanwhile: finished, or expired). When the
 * part being read ends at end or later, the transfer is closed (that is its
 * last part). 1, or 0 when none is open, -1 when its file cannot be read. */
static int transfer_take(fpx_cluster *c, uint64_t id, uint64_t end, fpx_transfer *t) {
    pthread_mutex_lock(&c->xfer_mu);
    uint64_t now = fpx_mono_ms();
    expire_transfers(c, now);
    fpx_transfer **p = &c->xfers;
    while (*p && (*p)->id != id)
        p = &(*p)->next;
    int found = *p != NULL;
    if (found) {
        (*p)->used_ms = now;
        *t = **p;
        t->fd = dup((*p)->fd);
        if (end >= t->size)
            transfer_free(p);
    }
    pthread_mutex_unlock(&c->xfer_mu);
    return found && t->fd < 0 ? -1 : found;
}

/* Takes ix's snapshot into a new transfer (not listed yet); 0, or -1. */
static int transfer_open(fpx_cluster *c, fpx_index *ix, fpx_transfer *t, fpx_err *err) {
    *t = (fpx_transfer){.fd = tmp_file(c->s->cfg->data_dir), .used_ms = fpx_mono_ms()};
    if (t->fd < 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot make a file for the snapshot in %s: %s",
                           c->s->cfg->data_dir, strerror(errno));
    /* Shared: searches go on, writes wait, so the body is the state at seq. */
    pthread_rwlock_rdlock(&ix->lock);
    t->seq = ix->seq;
    int rc = ix->dropped ? fpx_err_set(err, FPX_E_NOT_FOUND, "index '%s' was deleted", ix->name)
                         : fpx_store_write_body(ix, t->fd, &t->size, &t->crc, err);
    pthread_rwlock_unlock(&ix->lock);
    if (rc != 0)
        close(t->fd);
    return rc;
}

int fpx_cluster_peer_serve(fpx_req *r, fpx_out *o) {
    fpx_server *s = r->s;
    fpx_cluster *c = s->cluster;
    const char *t, *n, *u;
    size_t tl, nl, ul;
    const msgpack_object *to = fpx_map_get(r->h, "tenant"), *no = fpx_map_get(r->h, "index_id"),
                         *uo = fpx_map_get(r->h, "uid"), *xo = fpx_map_get(r->h, "transfer"),
                         *oo = fpx_map_get(r->h, "offset");
    uint8_t uid[FPX_UID_BYTES];
    char tenant[FPX_NAME_MAX + 1];
    int64_t xid = 0, off = 0;
    if (!to || !no || !uo || fpx_obj_str(to, &t, &tl) || fpx_obj_str(no, &n, &nl) ||
        fpx_obj_str(uo, &u, &ul) || tl == 0 || tl > FPX_NAME_MAX || nl == 0 || nl > FPX_NAME_MAX ||
        hex_uid(u, ul, uid) || (xo && (fpx_obj_int(xo, &xid) || xid <= 0)) ||
        (oo && (fpx_obj_int(oo, &off) || off < 0)) || (!xo && off != 0))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "peer_snapshot needs tenant, index_id and uid (32 hex digits), and "
                           "for a later part the transfer and its offset");
    memcpy(tenant, t, tl);
    tenant[tl] = 0;
    size_t cap = s->cfg->max_message_size > 2 * FPX_PEER_PART_HEADROOM
                     ? s->cfg->max_message_size - FPX_PEER_PART_HEADROOM
                     : FPX_PEER_PART_HEADROOM;
    if (cap > FPX_PEER_PART_MAX)
        cap = FPX_PEER_PART_MAX;
    /* got.fd below is a descriptor of this request's own */
    fpx_transfer got;
    if (!xo) { /* a new transfer: the snapshot is taken now */
        fpx_index *ix = fpx_server_find(s, tenant, n, nl);
        if (!ix || memcmp(ix->uid, uid, FPX_UID_BYTES)) {
            fpx_index_unref(ix);
            return fpx_err_set(&r->err, FPX_E_NOT_FOUND,
                               "node %s holds no replica of '%.*s' (%.*s)", s->cfg->node_id,
                               (int)nl, n, (int)ul, u);
        }
        int rc = transfer_open(c, ix, &got, &r->err);
        fpx_index_unref(ix);
        if (rc != 0)
            return -1;
        if (got.size > cap && transfer_list(c, &got) != 0) { /* more parts to come */
            close(got.fd);
            return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory or descriptors");
        }
        fpx_log(FPX_LOG_INFO, "giving the snapshot of %s/%.*s at stream record %llu (%llu bytes)",
                tenant, (int)nl, n, (unsigned long long)got.seq, (unsigned long long)got.size);
    } else {
        int found = transfer_take(c, (uint64_t)xid, (uint64_t)off + cap, &got);
        if (found == 0)
            return fpx_err_set(&r->err, FPX_E_NOT_FOUND,
                               "node %s has no snapshot transfer %lld open (finished, or idle "
                               "for %d s)",
                               s->cfg->node_id, (long long)xid, FPX_PEER_IDLE_MS / 1000);
        if (found < 0)
            return fpx_err_set(&r->err, FPX_E_INTERNAL, "cannot read the snapshot's file: %s",
                               strerror(errno));
    }
    if ((uint64_t)off > got.size) {
        close(got.fd);
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "offset %lld is past the snapshot's %llu bytes", (long long)off,
                           (unsigned long long)got.size);
    }
    size_t len = got.size - (uint64_t)off < cap ? (size_t)(got.size - (uint64_t)off) : cap;
    msgpack_packer *h = fpx_reply_ok(r, o, 5);
    fpx_pack_cstr(h, "seq");
    msgpack_pack_uint64(h, got.seq);
    fpx_pack_cstr(h, "size");
    msgpack_pack_uint64(h, got.size);
    fpx_pack_cstr(h, "crc32c");
    msgpack_pack_uint32(h, got.crc);
    fpx_pack_cstr(h, "transfer");
    msgpack_pack_uint64(h, got.id);
    fpx_pack_cstr(h, "offset");
    msgpack_pack_uint64(h, (uint64_t)off);
    uint8_t *data = fpx_out_data(o, len);
    ssize_t rd = data ? pread(got.fd, data, len, off) : -1;
    close(got.fd);
    if (!data || rd != (ssize_t)len)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "cannot read the snapshot's file: %s",
                           data ? strerror(errno) : "out of memory");
    return 0;
}

/* ---- taking one ------------------------------------------------------------------- */

/* One part of node's snapshot of d: the reply decoded into *m (its reply
 * bytes in *reply, freed by the caller with m), 0, or -1 with err. */
static int ask_part(fpx_cluster *c, const fpx_def *d, const char *node, uint64_t xid, uint64_t off,
                    fpx_msg *m, uint8_t **reply, fpx_err *err) {
    char hex[FPX_UID_HEX];
    fpx_cluster_uid_hex(d->uid, hex);
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *h = fpx_out_hdr(&o);
    msgpack_pack_map(h, xid ? 6 : 4);
    fpx_pack_cstr(h, "operation");
    fpx_pack_cstr(h, FPX_PEER_SNAPSHOT_OP);
    fpx_pack_cstr(h, "tenant");
    fpx_pack_cstr(h, d->tenant);
    fpx_pack_cstr(h, "index_id");
    fpx_pack_cstr(h, d->name);
    fpx_pack_cstr(h, "uid");
    fpx_pack_cstr(h, hex);
    if (xid) {
        fpx_pack_cstr(h, "transfer");
        msgpack_pack_uint64(h, xid);
        fpx_pack_cstr(h, "offset");
        msgpack_pack_uint64(h, off);
    }
    uint8_t *body = NULL;
    size_t len = 0, rlen = 0;
    int sent = 0;
    *reply = NULL;
    if (fpx_out_finish(&o, &body, &len) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    int rc = fpx_cluster_forward(c->s, node, body, len, reply, &rlen, &sent, err);
    free(body);
    if (rc == 0 && fpx_msg_decode(m, *reply, rlen, err) == 0) {
        const msgpack_object *st = fpx_map_get(m->header, "status");
        if (st && fpx_obj_str_eq(st, "ok"))
            return 0;
        const msgpack_object *msg = fpx_map_get(m->header, "message");
        const char *text = "";
        size_t tn = 0;
        if (msg)
            fpx_obj_str(msg, &text, &tn);
        fpx_err_set(err, FPX_E_UNAVAILABLE, "node %s has no snapshot to give: %.*s", node,
                    (int)(tn > 200 ? 200 : tn), text);
        fpx_msg_destroy(m);
    }
    free(*reply);
    *reply = NULL;
    return -1;
}

/* A part's header: its transfer's fields, each a non-negative integer; the
 * first P_OFF are the same in every part of a transfer. */
enum { P_SEQ, P_SIZE, P_CRC, P_XFER, P_OFF, P_FIELDS };

static int part_fields(const fpx_msg *m, int64_t v[P_FIELDS]) {
    static const char *names[P_FIELDS] = {"seq", "size", "crc32c", "transfer", "offset"};
    for (int i = 0; i < P_FIELDS; i++) {
        const msgpack_object *f = fpx_map_get(m->header, names[i]);
        if (!f || fpx_obj_int(f, &v[i]) || v[i] < 0)
            return -1;
    }
    return 0;
}

/*
 * node's state of d, decoded: 0 with *out (its seq is the record it
 * covers), -1 with err. The snapshot comes in parts (each within the giving
 * node's message size limit), written to an unnamed file here as they
 * come and decoded from it once whole and checked against the giver's
 * CRC-32C: neither node holds it in memory besides the index itself.
 */
static int peer_ask(fpx_cluster *c, const fpx_def *d, const char *node, fpx_index **out,
                    fpx_err *err) {
    int fd = tmp_file(c->s->cfg->data_dir);
    if (fd < 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot make a file for a snapshot in %s: %s",
                           c->s->cfg->data_dir, strerror(errno));
    int64_t first[P_FIELDS] = {0}, v[P_FIELDS];
    uint64_t off = 0, parts = 0;
    uint32_t crc = 0;
    int rc = 0;
    for (;;) {
        fpx_msg m;
        uint8_t *reply = NULL;
        if (ask_part(c, d, node, parts ? (uint64_t)first[P_XFER] : 0, off, &m, &reply, err) != 0) {
            rc = -1;
            break;
        }
        size_t n = m.body.data_size;
        int ok = part_fields(&m, v) == 0 && (!parts || !memcmp(v, first, P_OFF * sizeof v[0]));
        uint64_t size = ok ? (uint64_t)v[P_SIZE] : 0;
        if (!ok || (uint64_t)v[P_OFF] != off || size - off < n || (n == 0 && off < size))
            rc = fpx_err_set(err, FPX_E_INTERNAL,
                             "node %s's snapshot part at offset %llu does not follow its "
                             "transfer",
                             node, (unsigned long long)off);
        else if (n && pwrite(fd, m.body.data, n, (off_t)off) != (ssize_t)n)
            rc = fpx_err_set(err, FPX_E_INTERNAL, "cannot write a snapshot to %s: %s",
                             c->s->cfg->data_dir, strerror(errno));
        if (rc == 0) {
            if (!parts)
                memcpy(first, v, sizeof first);
            crc = fpx_crc32c(crc, m.body.data, n);
            off += n;
            parts++;
        }
        fpx_msg_destroy(&m);
        free(reply);
        if (rc != 0 || off == (uint64_t)first[P_SIZE])
            break;
    }
    if (rc == 0 && crc != (uint32_t)first[P_CRC])
        rc = fpx_err_set(err, FPX_E_INTERNAL, "node %s's snapshot arrived damaged (CRC-32C)", node);
    void *map = rc == 0 && off ? mmap(NULL, off, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    if (rc == 0 && (map == MAP_FAILED || !map))
        rc = fpx_err_set(err, FPX_E_INTERNAL, "cannot map the snapshot: %s", strerror(errno));
    uint64_t got = 0;
    if (rc == 0)
        rc = fpx_index_decode(d->tenant, d->name, map, off, out, &got, err);
    if (map && map != MAP_FAILED)
        munmap(map, off);
    close(fd);
    if (rc == 0 && got != (uint64_t)first[P_SEQ]) {
        fpx_index_free(*out);
        *out = NULL;
        rc = fpx_err_set(err, FPX_E_INTERNAL, "node %s's snapshot says seq %llu, its reply %lld",
                         node, (unsigned long long)got, (long long)first[P_SEQ]);
    }
    if (rc == 0)
        fpx_log(FPX_LOG_INFO, "%s/%s: node %s's snapshot came in %llu part(s), %llu bytes",
                d->tenant, d->name, node, (unsigned long long)parts, (unsigned long long)off);
    return rc;
}

int fpx_stream_bounds(fpx_cluster *c, const uint8_t *uid, uint64_t *first, uint64_t *last,
                      fpx_err *err) {
    char stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX];
    fpx_cluster_stream_names(uid, stream, subject);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, c->js, stream, NULL, &jerr);
    if (st != NATS_OK)
        return fpx_cluster_fail(err, "reading the index's log", st);
    *first = si->State.FirstSeq;
    *last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return 0;
}

int fpx_peer_fetch(fpx_cluster *c, const fpx_def *d, fpx_index **ix, fpx_index **got,
                   fpx_err *err) {
    *got = NULL;
    uint64_t first = 0, last = 0;
    if (fpx_stream_bounds(c, d->uid, &first, &last, err) != 0)
        return -1;
    if (*ix) {
        pthread_rwlock_rdlock(&(*ix)->lock);
        uint64_t seq = (*ix)->seq;
        pthread_rwlock_unlock(&(*ix)->lock);
        if (seq + 1 >= first)
            return 0; /* the stream holds every record after it */
        fpx_replica_drop_local(c->s, *ix, "its state is older than the stream's first record");
        fpx_index_unref(*ix);
        *ix = NULL;
        fpx_log(FPX_LOG_INFO,
                "%s/%s: local state at record %llu, the stream starts at %llu: taking a peer's "
                "snapshot",
                d->tenant, d->name, (unsigned long long)seq, (unsigned long long)first);
    }
    if (last == 0)
        return 0; /* nothing written yet: an empty replica is the state */
    fpx_err why = {0};
    char list[FPX_PLACEMENT_LEN];
    snprintf(list, sizeof list, "%s", d->placement);
    for (char *save = NULL, *node = strtok_r(list, ",", &save); node;
         node = strtok_r(NULL, ",", &save)) {
        if (!strcmp(node, c->s->cfg->node_id))
            continue;
        fpx_index *p = NULL;
        fpx_err e = {0};
        if (peer_ask(c, d, node, &p, &e) != 0) {
            why = e;
            continue;
        }
        if (p->seq + 1 < first) {
            fpx_err_set(&why, FPX_E_UNAVAILABLE,
                        "node %s's state (record %llu) is older than the stream's first record "
                        "(%llu)",
                        node, (unsigned long long)p->seq, (unsigned long long)first);
            fpx_index_free(p);
            continue;
        }
        fpx_log(FPX_LOG_INFO, "%s/%s: took node %s's snapshot at stream record %llu", d->tenant,
                d->name, node, (unsigned long long)p->seq);
        *got = p;
        return 0;
    }
    if (first <= 1) {
        fpx_log(FPX_LOG_INFO, "%s/%s: no peer gave its snapshot (%s): replaying the stream",
                d->tenant, d->name, why.msg[0] ? why.msg : "no other node is placed on it");
        return 0;
    }
    return fpx_err_set(err, FPX_E_UNAVAILABLE,
                       "index '%s' has no state on node %s yet: its stream starts at record %llu "
                       "and no other node holding it (%s) gave its snapshot (%s); try again, or "
                       "through another node",
                       d->name, c->s->cfg->node_id, (unsigned long long)first, d->placement,
                       why.msg[0] ? why.msg : "none is placed on it");
}

/* ---- reporting snapshots and trimming ------------------------------------------------ */

typedef struct snap_note {
    char key[2 * FPX_NAME_MAX + 2];
    uint8_t uid[FPX_UID_BYTES];
    uint64_t snap, seq;
    int report;
    char placement[FPX_PLACEMENT_LEN];
} snap_note;

#define NOTES_MAX 256

/* The smallest snapshot sequence of the live placed nodes of note: 1 found,
 * 0 not to trim (a live node has not reported, or none is live), -1 error. */
static int trim_point(fpx_cluster *c, const snap_note *n, uint64_t *min) {
    char hex[FPX_UID_HEX], list[FPX_PLACEMENT_LEN];
    fpx_cluster_uid_hex(n->uid, hex);
    snprintf(list, sizeof list, "%s", n->placement);
    int counted = 0;
    for (char *save = NULL, *node = strtok_r(list, ",", &save); node;
         node = strtok_r(NULL, ",", &save)) {
        char ep[320], key[FPX_NODE_ID_MAX + FPX_UID_HEX + 2];
        /* A placed node listed as live: its report counts, or its absence
         * stops the trim. */
        int router = 0;
        fpx_err err = {0};
        int live = fpx_node_lookup(c, node, ep, sizeof ep, &router, &err);
        if (live < 0)
            return -1;
        if (live == 0)
            continue; /* down: it takes a peer's snapshot when it is back */
        snprintf(key, sizeof key, "%s.%s", node, hex);
        kvEntry *e = NULL;
        natsStatus st = kvStore_Get(&e, c->snaps, key);
        if (st == NATS_NOT_FOUND)
            return 0; /* live, placed, not reported: it may need every record */
        if (st != NATS_OK)
            return -1;
        char v[24] = "";
        int len = kvEntry_ValueLen(e);
        if (len > 0 && (size_t)len < sizeof v)
            memcpy(v, kvEntry_Value(e), (size_t)len);
        kvEntry_Destroy(e);
        char *end = NULL;
        unsigned long long seq = strtoull(v, &end, 10);
        if (!v[0] || *end)
            return 0;
        if (!counted || seq < *min)
            *min = seq;
        counted = 1;
    }
    return counted;
}

/* Purges n's stream below the live replicas' smallest snapshot sequence.
 * A replica here that is older than the stream's first record (this node
 * lost NATS while the others trimmed) can never catch up from the stream:
 * it goes, rather than serve its old state, and the next request naming the
 * index opens it again from a peer's snapshot. */
static void trim(fpx_cluster *c, const snap_note *n) {
    uint64_t min = 0, first = 0, last = 0;
    fpx_err err = {0};
    if (fpx_stream_bounds(c, n->uid, &first, &last, &err) != 0)
        return;
    if (n->seq + 1 < first) {
        fpx_log(FPX_LOG_WARN,
                "%s: this replica is at record %llu, its stream starts at %llu: "
                "dropped, to be opened again from a peer's snapshot",
                n->key, (unsigned long long)n->seq, (unsigned long long)first);
        fpx_replica_forget(c, n->key, "its state is older than its stream's first record");
        return;
    }
    /* An empty stream, or a point below its first record: nothing to trim.
     * Never a purge "below record 1" either: nats-server 2.9.10 takes
     * {"seq": 1} as a purge of the whole stream, which on a stream read as
     * empty wiped a record written meanwhile (a new shard's trained index). */
    if (last == 0 || trim_point(c, n, &min) != 1)
        return;
    if (min > last)
        min = last;
    if (min == 0 || min + 1 <= first)
        return;
    char stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX];
    fpx_cluster_stream_names(n->uid, stream, subject);
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Purge.Sequence = min + 1; /* up to, not including */
    jsErrCode jerr = 0;
    natsStatus st = js_PurgeStream(c->js, stream, &o, &jerr);
    if (st != NATS_OK) {
        fpx_cluster_fail(&err, "trimming the index's log", st);
        fpx_log(FPX_LOG_WARN, "%s: %s", n->key, err.msg);
        return;
    }
    fpx_log(FPX_LOG_INFO,
            "%s: trimmed its stream below record %llu (every live replica's "
            "snapshot covers what went)",
            n->key, (unsigned long long)min + 1);
}

void fpx_peer_beat(fpx_cluster *c, unsigned beats) {
    int trimming = beats % FPX_TRIM_EVERY == 0;
    snap_note *notes = NULL;
    size_t n = 0;
    pthread_mutex_lock(&c->xfer_mu); /* an abandoned transfer's file goes within a beat */
    expire_transfers(c, fpx_mono_ms());
    pthread_mutex_unlock(&c->xfer_mu);
    if (pthread_mutex_trylock(&c->mu) != 0)
        return; /* a replica opening: the next beat */
    for (fpx_replica *r = c->reps; r && n < NOTES_MAX; r = r->next) {
        /* Exclusive: the snapshot writer sets snap_seq under the shared lock. */
        if (pthread_rwlock_trywrlock(&r->ix->lock) != 0)
            continue;
        uint64_t snap = r->ix->snap_seq, seq = r->ix->seq;
        int dropped = r->ix->dropped;
        const char *pl = r->ix->placement;
        /* snap_reported is the sequence reported + 1 (0: nothing yet) */
        if (!dropped && (snap + 1 != r->snap_reported || trimming) &&
            (notes || (notes = calloc(NOTES_MAX, sizeof *notes)))) {
            snap_note *m = &notes[n++];
            snprintf(m->key, sizeof m->key, "%s", r->key);
            memcpy(m->uid, r->ix->uid, FPX_UID_BYTES);
            m->snap = snap;
            m->seq = seq;
            m->report = snap + 1 != r->snap_reported;
            snprintf(m->placement, sizeof m->placement, "%s", pl ? pl : "");
            r->snap_reported = snap + 1;
        }
        pthread_rwlock_unlock(&r->ix->lock);
    }
    pthread_mutex_unlock(&c->mu);
    const char *me = c->s->cfg->node_id;
    for (size_t i = 0; i < n; i++) {
        snap_note *m = &notes[i];
        if (m->report) {
            char hex[FPX_UID_HEX], key[FPX_NODE_ID_MAX + FPX_UID_HEX + 2], v[24];
            uint64_t rev;
            fpx_cluster_uid_hex(m->uid, hex);
            snprintf(key, sizeof key, "%s.%s", me, hex);
            snprintf(v, sizeof v, "%llu", (unsigned long long)m->snap);
            if (kvStore_PutString(&rev, c->snaps, key, v) != NATS_OK)
                m->report = -1;
        }
        if (trimming)
            trim(c, m);
    }
    /* A report that did not reach NATS is made again at a next beat. */
    if (n && pthread_mutex_trylock(&c->mu) == 0) {
        for (size_t i = 0; i < n; i++)
            for (fpx_replica *r = c->reps; notes[i].report < 0 && r; r = r->next)
                if (!strcmp(r->key, notes[i].key))
                    r->snap_reported = 0;
        pthread_mutex_unlock(&c->mu);
    }
    free(notes);
}
