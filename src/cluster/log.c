/*
 * log.c - an index's write log in a cluster: one JetStream stream per index
 * (subject fpx.log.<unique id>), published by the node a write arrives at,
 * followed by every node holding a replica.
 *
 * A stream record is a write-ahead record of store.h in a payload of its own:
 *
 *   u32 magic "FPXR" | u32 op | u32 flags | u32 zero | i64 n
 *   u64 data_len | u64 meta_len | data | meta           (little-endian)
 *
 * Replicas apply the records strictly in stream order, each exactly once:
 * under the index's exclusive lock, a record is applied only when its
 * sequence is the one after ix->seq. Each is first logged in the local log
 * (so a restarted node resumes from its snapshot and log, then from the
 * stream at ix->seq + 1), then applied by fpx_apply, the function that
 * replays local logs. ix->seq is thus the stream's sequence: a record that
 * fails to apply fails on every replica alike (apply is deterministic), and
 * is logged here as FPX_WAL_SKIP so that the numbering stays the stream's.
 *
 * Two paths reach the same function: an ordered consumer per replica
 * (JetStream redelivers from a sequence after any gap or reconnection) for
 * other nodes' writes, and the writing request itself, which after the
 * PubAck applies everything up to its own record before it answers: the
 * reply carries the same fields as on one server, and a read through this
 * node sees the write.
 */
#include "internal.h"

#include "server/apply.h"
#include "server/util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REC_MAGIC 0x52585046u /* "FPXR" */
#define REC_HDR 40

/* ---- records ------------------------------------------------------------------- */

/* The payload of rec, malloc'd. */
static int rec_encode(const fpx_walrec *rec, uint8_t **out, size_t *len, fpx_err *err) {
    size_t n = REC_HDR + rec->data_len + rec->meta_len;
    uint8_t *p = malloc(n);
    if (!p)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory for a log record of %zu bytes", n);
    fpx_put_u32(p, REC_MAGIC);
    fpx_put_u32(p + 4, (uint32_t)rec->op);
    fpx_put_u32(p + 8, rec->flags);
    fpx_put_u32(p + 12, 0);
    fpx_put_u64(p + 16, (uint64_t)rec->n);
    fpx_put_u64(p + 24, rec->data_len);
    fpx_put_u64(p + 32, rec->meta_len);
    if (rec->data_len)
        memcpy(p + REC_HDR, rec->data, rec->data_len);
    if (rec->meta_len)
        memcpy(p + REC_HDR + rec->data_len, rec->meta, rec->meta_len);
    *out = p;
    *len = n;
    return 0;
}

/* rec from a payload; the vectors are 8-byte aligned (the apply path reads
 * labels as int64): *copy receives a malloc'd aligned copy when needed. */
static int rec_decode(const uint8_t *p, size_t len, fpx_walrec *rec, void **copy, fpx_err *err) {
    *copy = NULL;
    if (len < REC_HDR || fpx_get_u32(p) != REC_MAGIC)
        return fpx_err_set(err, FPX_E_INTERNAL, "a stream record without its header");
    uint64_t dl = fpx_get_u64(p + 24), ml = fpx_get_u64(p + 32);
    if (dl > len - REC_HDR || ml != len - REC_HDR - dl)
        return fpx_err_set(err, FPX_E_INTERNAL, "a stream record whose sizes do not add up");
    const uint8_t *data = p + REC_HDR;
    if (dl && ((uintptr_t)data % 8) != 0) {
        if (!(*copy = malloc(dl)))
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
        memcpy(*copy, data, dl);
        data = *copy;
    }
    *rec = (fpx_walrec){.op = (fpx_walop)fpx_get_u32(p + 4),
                        .flags = fpx_get_u32(p + 8),
                        .n = (int64_t)fpx_get_u64(p + 16),
                        .data = dl ? data : NULL,
                        .data_len = (size_t)dl,
                        .meta = ml ? p + REC_HDR + dl : NULL,
                        .meta_len = (size_t)ml};
    return 0;
}

/* ---- applying, in order ----------------------------------------------------------- */

/* Logs and applies the record after ix->seq (the lock held exclusively).
 * 0 applied; 1 it failed to apply (as it does on every replica: logged as
 * skipped, *why says why); -1 not logged (the local disk failed: nothing
 * changed, it is tried again). */
static int apply_next(fpx_index *ix, const fpx_walrec *rec, fpx_err *why, fpx_err *err) {
    uint64_t before = ix->wal_bytes;
    if (fpx_store_log(ix, rec, err) != 0)
        return -1;
    if (fpx_apply(ix, rec, why) == 0) {
        fpx_store_logged(ix);
        fpx_server_sync_usage(ix);
        /* The replica's log is synced record by record: the stream, not this
         * log, is what a write's acknowledgement rests on, but a replica
         * resumes from what its own log holds. */
        return fpx_store_sync(ix, ix->seq, err) == 0 ? 0 : -1;
    }
    fpx_store_unlog(ix, before);
    static const fpx_walrec skip = {.op = FPX_WAL_SKIP};
    if (fpx_store_log(ix, &skip, err) != 0)
        return -1;
    fpx_store_logged(ix);
    if (fpx_store_sync(ix, ix->seq, err) != 0)
        return -1;
    fpx_log(FPX_LOG_WARN, "%s/%s: stream record %llu did not apply (on any replica): %s",
            ix->tenant, ix->name, (unsigned long long)ix->seq, why->msg);
    return 1;
}

/* Applies a received payload as record seq, when it is the next one. */
static int apply_payload(fpx_index *ix, uint64_t seq, const uint8_t *p, size_t len, fpx_err *err) {
    if (seq != ix->seq + 1)
        return 0;
    fpx_walrec rec;
    void *copy;
    fpx_err why = {0};
    if (rec_decode(p, len, &rec, &copy, err) != 0)
        return -1;
    int rc = apply_next(ix, &rec, &why, err);
    free(copy);
    return rc < 0 ? -1 : 0;
}

int fpx_log_catch_up(fpx_cluster *c, fpx_index *ix, uint64_t seq, fpx_err *err) {
    char stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX];
    fpx_cluster_stream_names(ix->uid, stream, subject);
    while (ix->seq < seq) {
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        natsStatus st = js_GetMsg(&m, c->js, stream, ix->seq + 1, NULL, &jerr);
        if (st != NATS_OK)
            return fpx_cluster_fail(err, "reading the index's log", st);
        int rc = apply_payload(ix, ix->seq + 1, (const uint8_t *)natsMsg_GetData(m),
                               (size_t)natsMsg_GetDataLength(m), err);
        natsMsg_Destroy(m);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int fpx_log_repair(fpx_cluster *c, fpx_replica *rep, uint64_t max, fpx_err *err) {
    fpx_index *ix = rep->ix;
    uint64_t last = 0;
    if (fpx_log_last_seq(c, ix->uid, &last, err) != 0)
        return -1;
    fpx_index_lock_write(ix);
    uint64_t had = ix->seq;
    int rc = 0;
    if (!ix->dropped && last > had)
        rc = fpx_log_catch_up(c, ix, last - had > max ? had + max : last, err);
    uint64_t now = ix->seq;
    pthread_rwlock_unlock(&ix->lock);
    if (now > had)
        fpx_log(FPX_LOG_INFO, "%s/%s: caught up with stream records %llu to %llu", ix->tenant,
                ix->name, (unsigned long long)had + 1, (unsigned long long)now);
    return rc != 0 ? -1 : now < last;
}

int fpx_log_last_seq(fpx_cluster *c, const uint8_t *uid, uint64_t *seq, fpx_err *err) {
    uint64_t first;
    return fpx_stream_bounds(c, uid, &first, seq, err);
}

/* ---- following a stream ----------------------------------------------------------- */

/* A record delivered by the replica's ordered consumer. Records at or below
 * ix->seq were applied already (by the writing request, or before a
 * restart); a gap is filled from the stream first. */
static void on_record(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure) {
    (void)nc;
    (void)sub;
    fpx_replica *rep = closure;
    fpx_index *ix = rep->ix;
    jsMsgMetaData *md = NULL;
    if (natsMsg_GetMetaData(&md, m) != NATS_OK) {
        natsMsg_Destroy(m);
        return;
    }
    uint64_t seq = md->Sequence.Stream;
    jsMsgMetaData_Destroy(md);
    fpx_err err = {0};
    int rc = 0, force = 0, due = 0;
    fpx_index_lock_write(ix);
    if (!ix->dropped && seq > ix->seq) {
        if (seq > ix->seq + 1)
            rc = fpx_log_catch_up(rep->c, ix, seq - 1, &err);
        if (rc == 0) {
            fpx_walrec peek;
            void *copy = NULL;
            const uint8_t *p = (const uint8_t *)natsMsg_GetData(m);
            size_t len = (size_t)natsMsg_GetDataLength(m);
            if (rec_decode(p, len, &peek, &copy, &err) == 0)
                force = peek.op == FPX_WAL_TRAINED || peek.op == FPX_WAL_RESET;
            free(copy);
            rc = apply_payload(ix, seq, p, len, &err);
        }
        due = rc == 0 && (force || fpx_server_snapshot_due(rep->c->s, ix));
    }
    uint64_t durable = ix->dropped ? 0 : fpx_synced_durable(ix);
    pthread_rwlock_unlock(&ix->lock);
    /* Writers waiting for "synced" hear of it at once (synced.c). */
    if (durable > rep->durable_sent) {
        rep->durable_sent = durable;
        fpx_synced_report(rep->c, ix->uid, durable);
    }
    if (rc != 0) {
        /* Not lost: the next delivery, or the heartbeat, reads it again. */
        atomic_store(&rep->behind, 1);
        fpx_log(FPX_LOG_WARN, "%s/%s: stream record %llu not applied yet: %s", ix->tenant, ix->name,
                (unsigned long long)seq, err.msg);
    }
    if (due)
        fpx_server_snapshot_later(rep->c->s, ix, force);
    natsMsg_Destroy(m);
}

/* The subscription is over and its handler done: the replica goes, unless
 * it is still in the replica list (the connection was closed under it):
 * then unlinking it frees it (replica.c). */
static void on_sub_done(void *closure) {
    fpx_replica *rep = closure;
    int linked = FPX_REP_LINKED;
    if (atomic_compare_exchange_strong(&rep->state, &linked, FPX_REP_ENDED))
        return;
    fpx_index_unref(rep->ix);
    free(rep);
}

int fpx_log_follow(fpx_cluster *c, fpx_replica *rep, fpx_err *err) {
    pthread_rwlock_rdlock(&rep->ix->lock);
    uint64_t from = rep->ix->seq + 1;
    pthread_rwlock_unlock(&rep->ix->lock);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Ordered = true;
    so.Stream = rep->stream;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = from;
    jsErrCode jerr = 0;
    natsStatus st = js_Subscribe(&rep->sub, c->js, rep->subject, on_record, rep, NULL, &so, &jerr);
    if (st != NATS_OK) {
        rep->sub = NULL;
        return fpx_cluster_fail(err, "following the index's log", st);
    }
    natsSubscription_SetOnCompleteCB(rep->sub, on_sub_done, rep);
    return 0;
}

/* ---- writing ------------------------------------------------------------------- */

#define MSGID_MAX (FPX_NAME_MAX + 64 + 2 * 32 + 4)

/*
 * A write's message id. With the client's client_id and request_id it is
 * <tenant>/<client_id>/<request_id>, the same whichever node publishes it
 * and however often the client sends it: JetStream's duplicate window (2
 * minutes by default) stores it once, so a write retried after an
 * unavailable reply, or forwarded to a second replica, is never applied
 * twice. Without them it is unique to this publish (node, start, counter),
 * and a retry is a new write. A request_id that is not a short printable
 * string is represented by its hash.
 */
static void message_id(fpx_cluster *c, const fpx_req *r, char *out /* MSGID_MAX */) {
    const msgpack_object *rid = r->rid;
    if (r->merge_id[0] && r->rec.op == FPX_WAL_MERGE) { /* as a node finishing it sends it */
        snprintf(out, MSGID_MAX, "merge-%s", r->merge_id);
        return;
    }
    if (!r->client_id[0] || !rid) {
        snprintf(out, MSGID_MAX, "%s-%s-%llu", c->s->cfg->node_id, c->boot,
                 (unsigned long long)atomic_fetch_add(&c->next_msg, 1));
        return;
    }
    int n = snprintf(out, MSGID_MAX, "%s/%s/", r->tenant, r->client_id);
    if (rid->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        snprintf(out + n, MSGID_MAX - (size_t)n, "%llu", (unsigned long long)rid->via.u64);
        return;
    }
    if (rid->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        snprintf(out + n, MSGID_MAX - (size_t)n, "%lld", (long long)rid->via.i64);
        return;
    }
    const char *str = rid->via.str.ptr;
    size_t len = rid->via.str.size;
    int plain = len > 0 && len <= 64;
    for (size_t i = 0; plain && i < len; i++)
        plain = str[i] > 0x20 && str[i] < 0x7f;
    if (plain) { /* "s:" keeps the string "12" apart from the integer 12 */
        snprintf(out + n, MSGID_MAX - (size_t)n, "s:%.*s", (int)len, str);
        return;
    }
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)str, len, NULL, 0);
    memcpy(out + n, "h:", 2);
    for (int i = 0; i < 32; i++)
        snprintf(out + n + 2 + 2 * i, 3, "%02x", h[i]);
}

/* Publishes payload with message id msgid, retrying (the same id: JetStream
 * stores it once) until FPX_PUBLISH_DEADLINE_MS passed. expect_last: the
 * stream's last sequence the record was built against (0: any). *dup: the
 * stream held that id already (its sequence is *seq). */
/* A record of len bytes over the NATS servers' max_payload: err, 1. */
static int too_big(fpx_cluster *c, size_t len, fpx_err *err) {
    int64_t max = natsConnection_GetMaxPayload(c->nc);
    if (max <= 0 || len <= (size_t)max)
        return 0;
    fpx_err_set(err, FPX_E_LIMIT,
                "this write's log record is %zu bytes, more than the NATS servers' max_payload "
                "(%lld bytes): send fewer vectors per request (a merge_from's record holds the "
                "other index's vectors)",
                len, (long long)max);
    return 1;
}

static int publish(fpx_cluster *c, const char *subject, const uint8_t *p, size_t len,
                   const char *msgid, uint64_t expect_last, uint64_t *seq, int *dup, fpx_err *err) {
    if (too_big(c, len, err))
        return -1;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msgid;
    po.MaxWait = 2000;
    po.ExpectLastSeq = expect_last;
    uint64_t deadline = fpx_now_ns() + (uint64_t)FPX_PUBLISH_DEADLINE_MS * 1000000u;
    natsStatus st;
    for (int attempt = 0;; attempt++) {
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        st = js_Publish(&pa, c->js, subject, p, (int)len, &po, &jerr);
        if (st == NATS_OK) {
            *seq = pa->Sequence;
            *dup = pa->Duplicate;
            jsPubAck_Destroy(pa);
            return 0;
        }
        if (jerr == JSStreamWrongLastSequenceErr)
            return fpx_err_set(err, FPX_E_UNAVAILABLE,
                               "another write reached the index while it was being trained: "
                               "train again");
        if (fpx_now_ns() > deadline || attempt > 100)
            break;
        nats_Sleep(100);
    }
    return fpx_cluster_fail(err, "writing to the index's log", st);
}

int fpx_log_publish(fpx_cluster *c, const char *subject, const uint8_t *p, size_t len,
                    const char *msgid, uint64_t expect_last, uint64_t *seq, int *dup,
                    fpx_err *err) {
    return publish(c, subject, p, len, msgid, expect_last, seq, dup, err);
}

int fpx_cluster_write(fpx_req *r) {
    fpx_cluster *c = r->s->cluster;
    fpx_index *ix = r->ix;
    fpx_walrec rec = r->rec;
    if (rec.op == FPX_WAL_ADD &&
        fpx_server_check_quota(r->s, ix->tenant, rec.n, 48 + rec.data_len + rec.meta_len, &r->err))
        return -1;
    char stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX];
    fpx_cluster_stream_names(ix->uid, stream, subject);
    uint8_t *trained = NULL, *payload = NULL;
    size_t len = 0;
    uint64_t expect = 0, seq = 0;
    int rc = 0, dup = 0;
    char msgid[MSGID_MAX];
    message_id(c, r, msgid);
    if (rec.op == FPX_WAL_TRAIN) {
        /* Trained against the stream's latest state, and published only if
         * that is still the latest. */
        rc = fpx_log_last_seq(c, ix->uid, &expect, &r->err);
        if (rc == 0)
            rc = fpx_log_catch_up(c, ix, expect, &r->err);
        if (rc == 0 && !fpx_engine_round_trips(ix->eng))
            rc = fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                             "training an additive-quantizer index (RQ, LSQ) is not served by a "
                             "cluster in this version: FAISS 1.7.3 cannot read such a trained "
                             "index back faithfully");
        if (rc == 0)
            rc = fpx_train_record(ix, &rec, &trained, &r->err);
    }
    if (rc == 0)
        rc = rec_encode(&rec, &payload, &len, &r->err);
    if (rc == 0 && too_big(c, len, &r->err))
        rc = -1; /* refused before anything is sent */
    if (rc == 0) {
        r->published = 1; /* from here, the write may be stored whatever the reply */
        rc = publish(c, subject, payload, len, msgid, expect, &seq, &dup, &r->err);
        r->stream_seq = seq;
    }
    free(payload);
    /* The records before ours, then ours (from this request's own bytes). */
    if (rc == 0)
        rc = fpx_log_catch_up(c, ix, seq - 1, &r->err);
    if (rc == 0 && dup) {
        /* A retry of a write the stream holds already (published through
         * this node or another): answered as the first was, once this
         * replica applied that record (the stream's, which a trained index
         * must be: a new train would differ). */
        r->nlive_before = ix->nlive;
        if (ix->seq < seq)
            rc = fpx_log_catch_up(c, ix, seq, &r->err);
    } else if (rc == 0 && ix->seq < seq) {
        r->nlive_before = ix->nlive; /* the reply counts what this write did */
        fpx_err why = {0};
        int a = apply_next(ix, &rec, &why, &r->err);
        if (a > 0)
            r->err = why;
        r->merge_refused = a > 0 && rec.op == FPX_WAL_MERGE;
        rc = a == 0 ? 0 : -1;
    }
    free(trained);
    return rc;
}

/* rec, encoded, published to the stream of the index with unique id uid
 * (expect_last as publish takes it). */
static int publish_rec(fpx_cluster *c, const uint8_t *uid, const fpx_walrec *rec, const char *msgid,
                       uint64_t expect_last, uint64_t *seq, fpx_err *err) {
    char stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX];
    fpx_cluster_stream_names(uid, stream, subject);
    uint8_t *payload = NULL;
    size_t len = 0;
    int dup = 0;
    int rc = rec_encode(rec, &payload, &len, err);
    if (rc == 0)
        rc = publish(c, subject, payload, len, msgid, expect_last, seq, &dup, err);
    free(payload);
    return rc;
}

int fpx_log_publish_rec(fpx_cluster *c, const uint8_t *uid, const fpx_walrec *rec,
                        const char *msgid, uint64_t *seq, fpx_err *err) {
    return publish_rec(c, uid, rec, msgid, 0, seq, err);
}

int fpx_log_publish_trained(fpx_cluster *c, fpx_req *r, const uint8_t *uid, const uint8_t *bytes,
                            size_t n, fpx_err *err) {
    char msgid[MSGID_MAX];
    fpx_walrec rec = {.op = FPX_WAL_TRAINED, .data = bytes, .data_len = n};
    uint64_t expect = 0, seq = 0;
    message_id(c, r, msgid);
    /* One record per shard: the message ids of the shards' streams never meet. */
    int rc = fpx_log_last_seq(c, uid, &expect, err);
    return rc == 0 ? publish_rec(c, uid, &rec, msgid, expect, &seq, err) : rc;
}
