/*
 * move.c - the one-shot command that moves a replica of an index (or of one
 * shard of a sharded index) from one node to another:
 *
 *   faiss-proxy-server --cluster URLS --move INDEX[/SHARD] --from A --to B
 *
 * It connects to NATS without joining (it announces no node and holds no
 * replica), and changes the index's definition in fpx_indexes with
 * compare-and-sets on its revision, so that a concurrent create, delete or
 * move is never overwritten:
 *
 *   1. B is added to the placement. B's watcher opens its replica: a peer's
 *      snapshot, then the stream (peer.c), as any replica placed on a node
 *      that never held it.
 *   2. The stream's last sequence L is read; the command waits until B
 *      reports (fpx_applied, every heartbeat) that its replica applied L.
 *   3. For a shard: the sharded index's shard map names B instead of A.
 *   4. A is removed from the placement; A's watcher drops its replica.
 *
 * The index thus never has fewer active replicas than before: A serves
 * until B does. When B dies or does not catch up in time, B is taken out of
 * the placement again and the command fails, the index as it was.
 *
 * Why a command rather than an operation of the protocol: a move takes as
 * long as a peer's snapshot and the stream take to reach B (minutes for a
 * large index), longer than a client's or a forwarded request's timeout,
 * and it is an operator's act on the cluster, not a tenant's on an index
 * (no tenant's API key should be able to move replicas between machines).
 */
#include "internal.h"

#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long the new replica may take to catch up (a peer's snapshot of a
 * large index, then the stream) before the move is undone. */
#define FPX_MOVE_DEADLINE_MS 300000
/* Compare-and-set attempts on one definition before giving up. */
#define FPX_MOVE_CAS_TRIES 20

typedef struct move_ctx {
    fpx_cluster *c;
    const char *tenant, *from, *to;
    char name[FPX_NAME_MAX + 1];   /* the index asked for */
    char target[FPX_NAME_MAX + 1]; /* the index whose placement moves: it, or its shard */
    int64_t shard;                 /* -1: not a shard */
    uint8_t uid[FPX_UID_BYTES];    /* the target's, once read */
    int have_uid;
} move_ctx;

/* One change to a definition: 0 changed, 1 nothing to change, -1 refused. */
typedef int (*def_edit)(move_ctx *m, fpx_def *d, fpx_err *err);

/* list (comma-separated) without node, into out[cap]. */
static void unlisted(const char *list, const char *node, char *out, size_t cap) {
    char copy[FPX_PLACEMENT_LEN];
    snprintf(copy, sizeof copy, "%s", list);
    out[0] = 0;
    size_t at = 0;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (strcmp(t, node))
            at += (size_t)snprintf(out + at, cap - at, "%s%s", at ? "," : "", t);
}

/* Applies edit to the definition of tenant/name with a compare-and-set on
 * its revision, read again and retried when another writer came first. */
static int def_change(move_ctx *m, const char *name, def_edit edit, fpx_err *err) {
    char key[2 * FPX_NAME_MAX + 2];
    fpx_def_key(m->tenant, name, key);
    for (int attempt = 0; attempt < FPX_MOVE_CAS_TRIES; attempt++) {
        fpx_def d;
        uint64_t rev = 0;
        int found = fpx_def_read(m->c, key, &d, &rev, err);
        if (found < 0)
            return -1;
        if (found == 0)
            return fpx_err_set(err, FPX_E_NOT_FOUND, "index '%s' not found in tenant '%s'", m->name,
                               m->tenant);
        int rc = edit(m, &d, err);
        if (rc != 0) {
            fpx_def_clear(&d);
            return rc < 0 ? -1 : 0;
        }
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        natsStatus st = NATS_ERR;
        uint64_t now = 0;
        if (fpx_def_encode(&d, &sb) == 0)
            st = kvStore_Update(&now, m->c->indexes, key, sb.data, (int)sb.size, rev);
        msgpack_sbuffer_destroy(&sb);
        fpx_def_clear(&d);
        if (st == NATS_OK)
            return 0;
        fpx_cluster_fail(err, "cannot change the index's definition", st);
        nats_Sleep(50); /* another writer's revision: read it again */
    }
    return -1;
}

/* The definition is still the one the move started on (not deleted and
 * created again meanwhile). */
static int same_index(move_ctx *m, const fpx_def *d, fpx_err *err) {
    if (m->have_uid && memcmp(d->uid, m->uid, FPX_UID_BYTES))
        return fpx_err_set(err, FPX_E_NOT_FOUND,
                           "index '%s' was deleted (and created again) during the move", m->name);
    return 0;
}

/* Step 1: B joins the placement (checked against the definition as it is). */
static int edit_add(move_ctx *m, fpx_def *d, fpx_err *err) {
    if (d->shards > 1)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "index '%s' has %lld shards: name one, %s/0..%lld", m->name,
                           (long long)d->shards, m->name, (long long)d->shards - 1);
    if (same_index(m, d, err))
        return -1;
    memcpy(m->uid, d->uid, FPX_UID_BYTES);
    m->have_uid = 1;
    if (!fpx_list_has(d->placement, m->from))
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "node '%s' holds no replica of %s (its nodes: %s)", m->from, m->target,
                           d->placement);
    if (fpx_list_has(d->placement, m->to))
        return fpx_err_set(err, FPX_E_EXISTS,
                           "node '%s' already holds a replica of %s (its nodes: %s)", m->to,
                           m->target, d->placement);
    size_t at = strlen(d->placement);
    if (at + 1 + strlen(m->to) >= sizeof d->placement || d->placement[0] == 0)
        return fpx_err_set(err, FPX_E_LIMIT, "index '%s' is on too many nodes", m->name);
    snprintf(d->placement + at, sizeof d->placement - at, ",%s", m->to);
    return 0;
}

/* Undoing step 1 (B failed): B leaves the placement, A stays. */
static int edit_undo(move_ctx *m, fpx_def *d, fpx_err *err) {
    if (same_index(m, d, err))
        return -1;
    if (!fpx_list_has(d->placement, m->to) || !fpx_list_has(d->placement, m->from))
        return 1;
    char out[FPX_PLACEMENT_LEN];
    unlisted(d->placement, m->to, out, sizeof out);
    snprintf(d->placement, sizeof d->placement, "%s", out);
    return 0;
}

/* Step 4: A leaves the placement, once B serves. */
static int edit_remove(move_ctx *m, fpx_def *d, fpx_err *err) {
    if (same_index(m, d, err))
        return -1;
    if (!fpx_list_has(d->placement, m->to))
        return fpx_err_set(err, FPX_E_UNAVAILABLE,
                           "node '%s' left the placement of %s during the move (its nodes: %s)",
                           m->to, m->target, d->placement);
    if (!fpx_list_has(d->placement, m->from))
        return 1;
    char out[FPX_PLACEMENT_LEN];
    unlisted(d->placement, m->from, out, sizeof out);
    snprintf(d->placement, sizeof d->placement, "%s", out);
    return 0;
}

/* Step 3, for a shard: the sharded index's map names B for the shard
 * instead of A (the map routes the index's requests to the shard). */
static int edit_map(move_ctx *m, fpx_def *d, fpx_err *err) {
    if (d->shards <= 1 || m->shard >= d->shards || !d->shard_map)
        return fpx_err_set(err, FPX_E_NOT_FOUND, "index '%s' has no shard %lld any more", m->name,
                           (long long)m->shard);
    size_t cap = (size_t)d->shards * FPX_PLACEMENT_LEN, at = 0;
    char *map = calloc(1, cap);
    if (!map)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    int changed = 0;
    for (int64_t i = 0; i < d->shards; i++) {
        char nodes[FPX_PLACEMENT_LEN], out[FPX_PLACEMENT_LEN];
        fpx_def_shard_nodes(d, i, nodes, sizeof nodes);
        if (i == m->shard && fpx_list_has(nodes, m->from)) {
            unlisted(nodes, m->from, out, sizeof out);
            if (!fpx_list_has(out, m->to)) {
                size_t n = strlen(out);
                snprintf(out + n, sizeof out - n, "%s%s", n ? "," : "", m->to);
            }
            changed = 1;
        } else {
            snprintf(out, sizeof out, "%s", nodes);
        }
        at += (size_t)snprintf(map + at, cap - at, "%s%s", i ? ";" : "", out);
    }
    free(d->shard_map);
    d->shard_map = map;
    return changed ? 0 : 1;
}

/* The sequence node applied to the index of uid (fpx_applied): 1 read, 0
 * none reported yet, -1 error. */
static int applied_of(fpx_cluster *c, const char *node, const uint8_t *uid, uint64_t *seq,
                      fpx_err *err) {
    char hex[FPX_UID_HEX], key[FPX_NODE_ID_MAX + FPX_UID_HEX + 2], v[32];
    fpx_cluster_uid_hex(uid, hex);
    snprintf(key, sizeof key, "%s.%s", node, hex);
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->applied, key);
    if (st == NATS_NOT_FOUND)
        return 0;
    if (st != NATS_OK)
        return fpx_cluster_fail(err, "cannot read the applied sequences", st);
    int n = kvEntry_ValueLen(e);
    if (n < 0 || (size_t)n >= sizeof v)
        n = 0;
    memcpy(v, kvEntry_Value(e), (size_t)n);
    v[n] = 0;
    kvEntry_Destroy(e);
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v || *end)
        return 0; /* a value being deleted, or not ours */
    *seq = x;
    return 1;
}

static void forget_node(fpx_cluster *c, const char *node, const uint8_t *uid) {
    char hex[FPX_UID_HEX], key[FPX_NODE_ID_MAX + FPX_UID_HEX + 2];
    fpx_cluster_uid_hex(uid, hex);
    snprintf(key, sizeof key, "%s.%s", node, hex);
    kvStore_Delete(c->applied, key); /* absent already: as wanted */
    if (c->snaps)
        kvStore_Delete(c->snaps, key);
}

/* Whether node is a live data node: 1 yes, 0 no (err says why), -1 error. */
static int live_data_node(fpx_cluster *c, const char *node, fpx_err *err) {
    char ep[320];
    int router = 0;
    int live = fpx_node_lookup(c, node, ep, sizeof ep, &router, err);
    if (live < 0)
        return -1;
    if (live == 0)
        return fpx_err_set(err, FPX_E_UNAVAILABLE,
                           "node '%s' is not a live node of the cluster (unknown, or no "
                           "heartbeat in the last %d s)",
                           node, FPX_NODE_TTL_MS / 1000),
               0;
    if (router)
        return fpx_err_set(err, FPX_E_VALIDATION, "node '%s' is router-only: it holds no replica",
                           node),
               0;
    return 1;
}

/* Step 2: waits until B's replica applied the stream's last record (read
 * once B was placed), or B dies, or the deadline passes. */
static int wait_active(move_ctx *m, fpx_err *err) {
    uint64_t last = 0;
    if (fpx_log_last_seq(m->c, m->uid, &last, err) != 0)
        return -1;
    fpx_log(FPX_LOG_INFO, "move: waiting for node %s to apply %s up to stream record %llu", m->to,
            m->target, (unsigned long long)last);
    uint64_t deadline = fpx_now_ns() + (uint64_t)FPX_MOVE_DEADLINE_MS * 1000000u;
    for (unsigned i = 0;; i++) {
        uint64_t seq = 0;
        int got = applied_of(m->c, m->to, m->uid, &seq, err);
        if (got < 0)
            return -1;
        if (got && seq >= last)
            return 0;
        if (i % 5 == 0 && live_data_node(m->c, m->to, err) != 1)
            return -1;
        if (fpx_now_ns() > deadline)
            return fpx_err_set(err, FPX_E_UNAVAILABLE,
                               "node '%s' did not apply %s up to stream record %llu within %d s "
                               "(it reported %s%llu)",
                               m->to, m->target, (unsigned long long)last,
                               FPX_MOVE_DEADLINE_MS / 1000, got ? "" : "nothing, ",
                               (unsigned long long)seq);
        if (fpx_cluster_wait_stop(m->c, 200)) /* a node's repair thread, stopping */
            return fpx_err_set(err, FPX_E_UNAVAILABLE, "stopping before node '%s' caught up",
                               m->to);
    }
}

/* The index (and shard) the move names: INDEX or INDEX/SHARD. */
static int parse_target(move_ctx *m, const char *spec, fpx_err *err) {
    const char *slash = strrchr(spec, '/');
    size_t n = slash ? (size_t)(slash - spec) : strlen(spec);
    if (n == 0 || n > FPX_NAME_MAX)
        return fpx_err_set(err, FPX_E_VALIDATION, "--move names no index: '%s'", spec);
    memcpy(m->name, spec, n);
    m->name[n] = 0;
    m->shard = -1;
    if (slash) {
        char *end;
        long long v = strtoll(slash + 1, &end, 10);
        if (!slash[1] || *end || v < 0 || v >= FPX_SHARDS_MAX || slash[1] == '-')
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "--move INDEX/SHARD: the shard must be 0..%d, got '%s'",
                               FPX_SHARDS_MAX - 1, slash + 1);
        m->shard = v;
    }
    return 0;
}

/* The shard's name (its index's unique id), from the sharded index's
 * definition. */
static int shard_target(move_ctx *m, fpx_err *err) {
    char key[2 * FPX_NAME_MAX + 2];
    fpx_def d;
    uint64_t rev;
    fpx_def_key(m->tenant, m->name, key);
    int found = fpx_def_read(m->c, key, &d, &rev, err);
    if (found < 0)
        return -1;
    if (found == 0)
        return fpx_err_set(err, FPX_E_NOT_FOUND, "index '%s' not found in tenant '%s'", m->name,
                           m->tenant);
    int rc = 0;
    if (d.shards <= 1)
        rc = fpx_err_set(err, FPX_E_VALIDATION, "index '%s' is not sharded: move it as '%s'",
                         m->name, m->name);
    else if (m->shard >= d.shards)
        rc = fpx_err_set(err, FPX_E_VALIDATION, "index '%s' has shards 0..%lld, not %lld", m->name,
                         (long long)d.shards - 1, (long long)m->shard);
    else
        fpx_shard_name(d.uid, m->shard, m->target);
    fpx_def_clear(&d);
    return rc;
}

static int move_run(move_ctx *m, fpx_err *err) {
    fpx_cluster *c = m->c;
    snprintf(m->target, sizeof m->target, "%s", m->name);
    if (m->shard >= 0 && shard_target(m, err) != 0)
        return -1;
    if (!strcmp(m->from, m->to))
        return fpx_err_set(err, FPX_E_VALIDATION, "--from and --to name the same node '%s'", m->to);
    if (live_data_node(c, m->to, err) != 1)
        return -1;
    /* A report of B's from an earlier replica of this index must not pass
     * for the new one's. */
    char key[2 * FPX_NAME_MAX + 2];
    fpx_def d;
    uint64_t rev;
    fpx_def_key(m->tenant, m->target, key);
    int found = fpx_def_read(c, key, &d, &rev, err);
    if (found <= 0)
        return found < 0 ? -1
                         : fpx_err_set(err, FPX_E_NOT_FOUND, "index '%s' not found in tenant '%s'",
                                       m->name, m->tenant);
    int rc = edit_add(m, &d, err); /* checked before anything changes */
    fpx_def_clear(&d);
    if (rc != 0)
        return -1;
    forget_node(c, m->to, m->uid);
    if (def_change(m, m->target, edit_add, err) != 0)
        return -1;
    fpx_log(FPX_LOG_INFO, "move: %s placed on node %s too", m->target, m->to);
    if (wait_active(m, err) != 0 || (m->shard >= 0 && def_change(m, m->name, edit_map, err) != 0)) {
        fpx_err uerr = {0};
        if (def_change(m, m->target, edit_undo, &uerr) != 0)
            fpx_log(FPX_LOG_WARN, "move: cannot take node %s out of %s again: %s", m->to, m->target,
                    uerr.msg);
        else
            forget_node(c, m->to, m->uid);
        return -1;
    }
    if (def_change(m, m->target, edit_remove, err) != 0)
        return -1;
    forget_node(c, m->from, m->uid);
    return 0;
}

int fpx_move_replica(fpx_cluster *c, const char *tenant, const char *name, int64_t shard,
                     const char *from, const char *to, fpx_err *err) {
    move_ctx m;
    memset(&m, 0, sizeof m);
    m.c = c;
    m.tenant = tenant;
    m.from = from;
    m.to = to;
    m.shard = shard;
    snprintf(m.name, sizeof m.name, "%s", name);
    return move_run(&m, err);
}

int fpx_cluster_move(const fpx_config *cfg, fpx_err *err) {
    fpx_server s;
    fpx_cluster c;
    memset(&s, 0, sizeof s);
    memset(&c, 0, sizeof c);
    s.cfg = cfg;
    c.s = &s;
    pthread_mutex_init(&c.stop_mu, NULL);
    pthread_cond_init(&c.stop_cv, NULL);
    move_ctx m; /* the index and shard named */
    memset(&m, 0, sizeof m);
    int rc = parse_target(&m, cfg->move_index, err);
    if (rc == 0)
        rc = fpx_cluster_connect(&c, err);
    natsStatus st = NATS_OK;
    if (rc == 0 && ((st = js_KeyValue(&c.indexes, c.js, FPX_BUCKET_INDEXES)) != NATS_OK ||
                    (st = js_KeyValue(&c.nodes, c.js, FPX_BUCKET_NODES)) != NATS_OK ||
                    (st = js_KeyValue(&c.applied, c.js, FPX_BUCKET_APPLIED)) != NATS_OK))
        rc = fpx_cluster_fail(err, "cannot open the cluster's buckets (has a node started?)", st);
    if (rc == 0 && js_KeyValue(&c.snaps, c.js, FPX_BUCKET_SNAPSHOTS) != NATS_OK)
        c.snaps = NULL; /* a cluster of an older version: nothing to tidy there */
    if (rc == 0)
        rc = fpx_move_replica(&c, cfg->move_tenant, m.name, m.shard, cfg->move_from, cfg->move_to,
                              err);
    if (rc == 0)
        fpx_log(FPX_LOG_INFO, "move: %s of tenant %s moved from node %s to node %s",
                cfg->move_index, cfg->move_tenant, cfg->move_from, cfg->move_to);
    kvStore_Destroy(c.indexes);
    kvStore_Destroy(c.nodes);
    kvStore_Destroy(c.applied);
    kvStore_Destroy(c.snaps);
    jsCtx_Destroy(c.js);
    if (c.nc) {
        natsConnection_Close(c.nc);
        natsConnection_Destroy(c.nc);
    }
    nats_CloseAndWait(10000);
    pthread_mutex_destroy(&c.stop_mu);
    pthread_cond_destroy(&c.stop_cv);
    return rc;
}
