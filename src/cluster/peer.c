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
 *             "uid": hex}                   (sent with fpx_cluster_forward)
 *   reply    {"status": "ok", "seq": S} | data: the snapshot body
 *
 * The body is the server's own snapshot codec (snapshot.c), taken under the
 * index's shared lock, and S the last stream record it covers. The request
 * is node-only: it is answered only on a socket whose routing id carries the
 * cluster's forwarding token (net.c), before any API key is looked at,
 * since the asking node has no tenant's key of its own. The new replica
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
#include "internal.h"

#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Beats between two trims of the streams this node holds. */
#define FPX_TRIM_EVERY 5

/* ---- serving a snapshot ------------------------------------------------------------ */

typedef struct grow_buf {
    uint8_t *p;
    size_t len, cap, max;
} grow_buf;

static int grow_write(void *ctx, const void *buf, size_t n) {
    grow_buf *g = ctx;
    if (n > g->max - g->len)
        return -1; /* past the message size limit: the caller says so */
    if (g->len + n > g->cap) {
        size_t cap = g->cap ? g->cap : 1 << 16;
        while (cap < g->len + n)
            cap *= 2;
        uint8_t *p = realloc(g->p, cap);
        if (!p)
            return -1;
        g->p = p;
        g->cap = cap;
    }
    memcpy(g->p + g->len, buf, n);
    g->len += n;
    return 0;
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

int fpx_cluster_peer_serve(fpx_req *r, fpx_out *o) {
    fpx_server *s = r->s;
    const char *t, *n, *u;
    size_t tl, nl, ul;
    const msgpack_object *to = fpx_map_get(r->h, "tenant"), *no = fpx_map_get(r->h, "index_id"),
                         *uo = fpx_map_get(r->h, "uid");
    uint8_t uid[FPX_UID_BYTES];
    char tenant[FPX_NAME_MAX + 1];
    if (!to || !no || !uo || fpx_obj_str(to, &t, &tl) || fpx_obj_str(no, &n, &nl) ||
        fpx_obj_str(uo, &u, &ul) || tl == 0 || tl > FPX_NAME_MAX || nl == 0 || nl > FPX_NAME_MAX ||
        hex_uid(u, ul, uid))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "peer_snapshot needs tenant, index_id and uid (32 hex digits)");
    memcpy(tenant, t, tl);
    tenant[tl] = 0;
    fpx_index *ix = fpx_server_find(s, tenant, n, nl);
    if (!ix || memcmp(ix->uid, uid, FPX_UID_BYTES)) {
        fpx_index_unref(ix);
        return fpx_err_set(&r->err, FPX_E_NOT_FOUND, "node %s holds no replica of '%.*s' (%.*s)",
                           s->cfg->node_id, (int)nl, n, (int)ul, u);
    }
    grow_buf g = {NULL, 0, 0, s->cfg->max_message_size};
    fpx_err err = {0};
    /* Shared: searches go on, writes wait, so the body is the state at seq. */
    pthread_rwlock_rdlock(&ix->lock);
    uint64_t seq = ix->seq;
    int rc = ix->dropped ? fpx_err_set(&err, FPX_E_NOT_FOUND, "index '%s' was deleted", ix->name)
                         : fpx_index_write(ix, grow_write, &g, &err);
    pthread_rwlock_unlock(&ix->lock);
    fpx_index_unref(ix);
    if (rc != 0) {
        free(g.p);
        if (err.type != FPX_OK)
            r->err = err;
        else
            fpx_err_set(&r->err, FPX_E_LIMIT,
                        "the snapshot of '%.*s' is larger than this node's message size limit "
                        "(--max-message-size, %zu bytes), or memory ran out",
                        (int)nl, n, s->cfg->max_message_size);
        return -1;
    }
    msgpack_packer *h = fpx_reply_ok(r, o, 1);
    fpx_pack_cstr(h, "seq");
    msgpack_pack_uint64(h, seq);
    uint8_t *data = fpx_out_data(o, g.len);
    if (data && g.len)
        memcpy(data, g.p, g.len);
    free(g.p);
    if (!data)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
    fpx_log(FPX_LOG_INFO, "sent the snapshot of %s/%.*s at stream record %llu (%zu bytes)", tenant,
            (int)nl, n, (unsigned long long)seq, g.len);
    return 0;
}

/* ---- taking one ------------------------------------------------------------------- */

/* node's state of d, decoded: 0 with *out (its seq is the record it
 * covers), -1 with err. */
static int peer_ask(fpx_cluster *c, const fpx_def *d, const char *node, fpx_index **out,
                    fpx_err *err) {
    char hex[FPX_UID_HEX];
    fpx_cluster_uid_hex(d->uid, hex);
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *h = fpx_out_hdr(&o);
    msgpack_pack_map(h, 4);
    fpx_pack_cstr(h, "operation");
    fpx_pack_cstr(h, FPX_PEER_SNAPSHOT_OP);
    fpx_pack_cstr(h, "tenant");
    fpx_pack_cstr(h, d->tenant);
    fpx_pack_cstr(h, "index_id");
    fpx_pack_cstr(h, d->name);
    fpx_pack_cstr(h, "uid");
    fpx_pack_cstr(h, hex);
    uint8_t *body = NULL, *reply = NULL;
    size_t len = 0, rlen = 0;
    int sent = 0;
    if (fpx_out_finish(&o, &body, &len) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    int rc = fpx_cluster_forward(c->s, node, body, len, &reply, &rlen, &sent, err);
    free(body);
    if (rc != 0)
        return -1;
    fpx_msg m;
    if (fpx_msg_decode(&m, reply, rlen, err) != 0) {
        free(reply);
        return -1;
    }
    const msgpack_object *st = fpx_map_get(m.header, "status");
    const msgpack_object *sq = fpx_map_get(m.header, "seq");
    const msgpack_object *msg = fpx_map_get(m.header, "message");
    int64_t seq = -1;
    uint64_t got = 0;
    if (!st || !fpx_obj_str_eq(st, "ok") || !sq || fpx_obj_int(sq, &seq) || seq < 0) {
        const char *text = "";
        size_t tn = 0;
        if (msg)
            fpx_obj_str(msg, &text, &tn);
        rc = fpx_err_set(err, FPX_E_UNAVAILABLE, "node %s has no snapshot to give: %.*s", node,
                         (int)(tn > 200 ? 200 : tn), text);
    } else {
        rc = fpx_index_decode(d->tenant, d->name, m.body.data, m.body.data_size, out, &got, err);
        if (rc == 0 && got != (uint64_t)seq) {
            fpx_index_free(*out);
            *out = NULL;
            rc =
                fpx_err_set(err, FPX_E_INTERNAL, "node %s's snapshot says seq %llu, its reply %lld",
                            node, (unsigned long long)got, (long long)seq);
        }
    }
    fpx_msg_destroy(&m);
    free(reply);
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
        fpx_replica_forget(c, n->key);
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
