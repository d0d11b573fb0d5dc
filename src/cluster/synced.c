/*
 * synced.c - durability "synced" in a cluster (docs/cluster.md, "Durability").
 *
 * A write is acknowledged, by default ("acked"), once JetStream holds its
 * record on a quorum of NATS servers. A write asking for "synced" is
 * acknowledged only once min(2, replicas of its shard) replicas have
 * applied its record and fdatasync'd their own local log up to it.
 *
 * Replicas report: every replica, when its stream's delivery callback
 * leaves it further ahead than it last said, publishes the last sequence it
 * holds applied and synced (fpx_synced_durable: never a record its local
 * log has not synced) on the core NATS subject fpx.durable.<uid>, as
 * "<node> <seq>". That is one small message per record and replica, sent
 * without waiting (libnats buffers it), so that acked writes pay nothing
 * they wait for. The heartbeat writes the same sequence to the bucket
 * fpx_applied, the durable record operators, the move command and a
 * writer that missed a message read.
 *
 * The writer listens before it publishes: it subscribes to the subject
 * under the index's lock, before its record can reach any replica, so no
 * report of it can pass unheard on the writer's own NATS server. The wait
 * itself runs after the index's lock is released (other writes to the
 * index go on meanwhile), counted among the workers that only wait (the
 * network loop starts more when every worker is busy), and bounded by
 * --synced-timeout-ms. Every half second of it the writer also reads the
 * replicas' fpx_applied entries, which cover a report lost between NATS
 * servers (interest on a subject spreads to the other servers of a NATS
 * cluster asynchronously). The writer counts itself: it applied and synced
 * the record before its lock was released.
 */
#include "internal.h"

#include "server/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DURABLE_PREFIX "fpx.durable."
#define DURABLE_SUBJECT_LEN (sizeof DURABLE_PREFIX + FPX_UID_HEX)
/* How long one wait for a report lasts before the deadline and the bucket
 * are looked at again, and how often the bucket is read. */
#define FPX_SYNCED_TICK_MS 100
#define FPX_SYNCED_POLL_MS 500

/* A synced write's listening, from before its publish to its answer. */
typedef struct fpx_synced {
    natsSubscription *sub;
    char placement[FPX_PLACEMENT_LEN];
    uint8_t uid[FPX_UID_BYTES];
} fpx_synced;

static void durable_subject(const uint8_t *uid, char *out /* DURABLE_SUBJECT_LEN */) {
    char hex[FPX_UID_HEX];
    fpx_cluster_uid_hex(uid, hex);
    snprintf(out, DURABLE_SUBJECT_LEN, DURABLE_PREFIX "%s", hex);
}

uint64_t fpx_synced_durable(fpx_index *ix) {
    uint64_t seq = ix->seq;
    pthread_mutex_lock(&ix->sync_mu);
    /* Nothing appended waits for its fdatasync (or it failed): every record
     * up to seq is on disk, synced, covered by a snapshot, or read from disk
     * at start (and synced then, recover.c). Otherwise only what the last fdatasync covered is. */
    uint64_t d = ix->synced_seq >= ix->written_seq && !ix->log_broken[0] ? seq : ix->synced_seq;
    pthread_mutex_unlock(&ix->sync_mu);
    return d < seq ? d : seq;
}

void fpx_synced_report(fpx_cluster *c, const uint8_t *uid, uint64_t durable) {
    char subject[DURABLE_SUBJECT_LEN], msg[FPX_NODE_ID_MAX + 24];
    durable_subject(uid, subject);
    int n = snprintf(msg, sizeof msg, "%s %" PRIu64, c->s->cfg->node_id, durable);
    /* Lost when NATS is unreachable: the heartbeat's fpx_applied says it. */
    natsConnection_Publish(c->nc, subject, msg, n);
}

/* ---- waiting for the replicas ------------------------------------------------------ */

/* The nodes of a placement and what each confirmed. */
typedef struct tally {
    char node[FPX_PLACEMENT_MAX][FPX_NODE_ID_MAX + 1];
    int ok[FPX_PLACEMENT_MAX];
    int n, confirmed, need;
} tally;

static void tally_init(tally *t, const char *placement) {
    memset(t, 0, sizeof *t);
    char list[FPX_PLACEMENT_LEN];
    snprintf(list, sizeof list, "%s", placement);
    for (char *save = NULL, *p = strtok_r(list, ",", &save); p && t->n < FPX_PLACEMENT_MAX;
         p = strtok_r(NULL, ",", &save))
        snprintf(t->node[t->n++], sizeof t->node[0], "%s", p);
    t->need = t->n < 2 ? t->n : 2;
}

/* node confirmed seq when it reports got >= seq. */
static void tally_mark(tally *t, const char *node, size_t len, uint64_t got, uint64_t seq) {
    if (got < seq)
        return;
    for (int i = 0; i < t->n; i++)
        if (!t->ok[i] && strlen(t->node[i]) == len && !memcmp(t->node[i], node, len)) {
            t->ok[i] = 1;
            t->confirmed++;
        }
}

/* A report "<node> <seq>". */
static void tally_msg(tally *t, natsMsg *m, uint64_t seq) {
    const char *p = natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    const char *sp = p ? memchr(p, ' ', (size_t)len) : NULL;
    if (!sp || sp == p || sp - p > FPX_NODE_ID_MAX || len - (sp - p) > 22)
        return;
    char num[24];
    snprintf(num, sizeof num, "%.*s", (int)(len - (sp - p) - 1), sp + 1);
    char *end;
    unsigned long long got = strtoull(num, &end, 10);
    if (end != num && !*end)
        tally_mark(t, p, (size_t)(sp - p), got, seq);
}

/* The durable record of the nodes not confirmed yet (fpx_applied). */
static void tally_poll(fpx_cluster *c, tally *t, const uint8_t *uid, uint64_t seq) {
    char hex[FPX_UID_HEX];
    fpx_cluster_uid_hex(uid, hex);
    for (int i = 0; i < t->n && t->confirmed < t->need; i++) {
        if (t->ok[i])
            continue;
        char key[FPX_NODE_ID_MAX + FPX_UID_HEX + 2];
        snprintf(key, sizeof key, "%s.%s", t->node[i], hex);
        kvEntry *e = NULL;
        if (kvStore_Get(&e, c->applied, key) != NATS_OK)
            continue;
        char num[24];
        snprintf(num, sizeof num, "%.*s", kvEntry_ValueLen(e) < 23 ? kvEntry_ValueLen(e) : 23,
                 (const char *)kvEntry_Value(e));
        kvEntry_Destroy(e);
        char *end;
        unsigned long long got = strtoull(num, &end, 10);
        if (end != num && !*end)
            tally_mark(t, t->node[i], strlen(t->node[i]), got, seq);
    }
}

/* Waits on sub (subject of uid) until t->need nodes of t confirmed seq or
 * the monotonic deadline (ns) passed; 0 or -1 (unavailable, saying so). The
 * caller counts as waiting only (not working) meanwhile. */
static int await_confirmed(fpx_cluster *c, natsSubscription *sub, tally *t, const uint8_t *uid,
                           uint64_t seq, uint64_t deadline, const char *what, fpx_err *err) {
    atomic_fetch_add(&c->s->blocked, 1);
    uint64_t poll_at = fpx_now_ns() + (uint64_t)FPX_SYNCED_POLL_MS * 1000000u / 2;
    for (int round = 0; t->confirmed < t->need && round < 10000000; round++) {
        uint64_t now = fpx_now_ns();
        if (now >= deadline)
            break;
        if (now >= poll_at) {
            tally_poll(c, t, uid, seq);
            poll_at = fpx_now_ns() + (uint64_t)FPX_SYNCED_POLL_MS * 1000000u;
            continue;
        }
        uint64_t left_ms = (deadline - now) / 1000000u + 1;
        natsMsg *m = NULL;
        natsStatus st = natsSubscription_NextMsg(
            &m, sub, (int64_t)(left_ms < FPX_SYNCED_TICK_MS ? left_ms : FPX_SYNCED_TICK_MS));
        if (st == NATS_OK) {
            tally_msg(t, m, seq);
            natsMsg_Destroy(m);
        } else if (st != NATS_TIMEOUT) {
            nats_Sleep(FPX_SYNCED_TICK_MS); /* NATS unreachable: the deadline bounds it */
        }
    }
    atomic_fetch_sub(&c->s->blocked, 1);
    if (t->confirmed >= t->need)
        return 0;
    return fpx_err_set(
        err, FPX_E_UNAVAILABLE,
        "durability \"synced\": the write is in the log of %s (stream record %" PRIu64
        ", published) but only %d of the %d replicas needed confirmed they applied "
        "and synced it within --synced-timeout-ms (%d ms); every replica applies "
        "it as it catches up: do not send it again as a new write",
        what, seq, t->confirmed, t->need, c->s->cfg->synced_timeout_ms);
}

static uint64_t deadline_of(fpx_cluster *c) {
    return fpx_now_ns() + (uint64_t)c->s->cfg->synced_timeout_ms * 1000000u;
}

static int listen_to(fpx_cluster *c, const uint8_t *uid, natsSubscription **sub, fpx_err *err) {
    char subject[DURABLE_SUBJECT_LEN];
    durable_subject(uid, subject);
    natsStatus st = natsConnection_SubscribeSync(sub, c->nc, subject);
    if (st != NATS_OK) {
        *sub = NULL;
        return fpx_cluster_fail(err, "listening to the replicas' reports", st);
    }
    return 0;
}

static void synced_free(fpx_synced *w) {
    if (!w)
        return;
    if (w->sub) {
        natsSubscription_Unsubscribe(w->sub);
        natsSubscription_Destroy(w->sub);
    }
    free(w);
}

int fpx_synced_write(fpx_req *r) {
    if (!r->synced)
        return fpx_cluster_write(r);
    fpx_cluster *c = r->s->cluster;
    fpx_index *ix = r->ix;
    fpx_synced *w = calloc(1, sizeof *w);
    if (!w)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    /* The lock is held exclusively: the placement cannot change meanwhile. */
    snprintf(w->placement, sizeof w->placement, "%s",
             ix->placement ? ix->placement : r->s->cfg->node_id);
    memcpy(w->uid, ix->uid, FPX_UID_BYTES);
    if (listen_to(c, w->uid, &w->sub, &r->err) != 0) {
        synced_free(w);
        return -1;
    }
    if (fpx_cluster_write(r) != 0) {
        synced_free(w);
        return -1;
    }
    r->synced_wait = w;
    return 0;
}

int fpx_synced_wait(fpx_req *r, int rc) {
    fpx_synced *w = r->synced_wait;
    r->synced_wait = NULL;
    if (rc == 0 && w) {
        fpx_cluster *c = r->s->cluster;
        tally t;
        tally_init(&t, w->placement);
        const char *me = r->s->cfg->node_id;
        tally_mark(&t, me, strlen(me), r->stream_seq, r->stream_seq); /* applied and synced here */
        char what[2 * FPX_NAME_MAX + 4];
        snprintf(what, sizeof what, "'%s'", r->ix->name);
        rc = await_confirmed(c, w->sub, &t, w->uid, r->stream_seq, deadline_of(c), what, &r->err);
        if (rc != 0)
            atomic_store(&r->unconfirmed, 1);
    }
    synced_free(w);
    return rc;
}

/* A shard's listening during a sharded synced write. */
typedef struct shard_watch {
    natsSubscription *sub;
    uint8_t uid[FPX_UID_BYTES];
    char placement[FPX_PLACEMENT_LEN];
    uint64_t before;
} shard_watch;

int fpx_synced_sharded(fpx_cluster *c, fpx_req *r, const fpx_def *d,
                       int (*serve)(fpx_cluster *, fpx_req *, const fpx_def *)) {
    shard_watch *w = calloc((size_t)d->shards, sizeof *w);
    if (!w)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    /* Listening first, and each shard's stream as it was: the shards whose
     * stream grows are those the write touched (or a concurrent write did,
     * which waiting for costs nothing more than time). */
    int rc = 0;
    for (int64_t s = 0; rc == 0 && s < d->shards; s++) {
        char name[FPX_NAME_MAX + 1];
        fpx_def sd;
        uint64_t first;
        fpx_shard_name(d->uid, s, name);
        int found = fpx_cluster_def(c, d->tenant, name, &sd, &r->err);
        if (found <= 0) {
            rc = found == 0 ? fpx_err_set(&r->err, FPX_E_INTERNAL, "shard %lld is not defined",
                                          (long long)s)
                            : -1;
            break;
        }
        memcpy(w[s].uid, sd.uid, FPX_UID_BYTES);
        snprintf(w[s].placement, sizeof w[s].placement, "%s", sd.placement);
        fpx_def_clear(&sd);
        rc = listen_to(c, w[s].uid, &w[s].sub, &r->err);
        if (rc == 0)
            rc = fpx_stream_bounds(c, w[s].uid, &first, &w[s].before, &r->err);
    }
    if (rc == 0)
        rc = serve(c, r, d);
    uint64_t deadline = deadline_of(c);
    for (int64_t s = 0; rc == 0 && s < d->shards; s++) {
        uint64_t first, last;
        rc = fpx_stream_bounds(c, w[s].uid, &first, &last, &r->err);
        if (rc != 0 || last <= w[s].before)
            continue;
        tally t;
        tally_init(&t, w[s].placement);
        char what[FPX_NAME_MAX + 48];
        snprintf(what, sizeof what, "shard %lld of '%s'", (long long)s, d->name);
        rc = await_confirmed(c, w[s].sub, &t, w[s].uid, last, deadline, what, &r->err);
        if (rc != 0)
            atomic_store(&r->unconfirmed, 1);
    }
    if (rc != 0 && r->relay) { /* the reply of the parts gives way to the error */
        free(r->relay);
        r->relay = NULL;
    }
    for (int64_t s = 0; s < d->shards; s++)
        if (w[s].sub) {
            natsSubscription_Unsubscribe(w[s].sub);
            natsSubscription_Destroy(w[s].sub);
        }
    free(w);
    return rc;
}
