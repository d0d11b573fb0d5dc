/*
 * cluster.c - joining a cluster: the NATS connection, the key-value buckets,
 * membership and the heartbeat, and leaving it (requests.c creates, finds
 * and deletes indexes cluster-wide; list.c lists them).
 *
 *   fpx_indexes  tenant/name -> the index's definition (def.c), created with
 *                a KV create, so one create wins across nodes and the others
 *                get already_exists
 *   fpx_nodes    node id -> a heartbeat every second; entries expire after
 *                FPX_NODE_TTL_MS, so the live nodes are the bucket's keys
 *   fpx_applied  node.uid -> the last stream sequence that node applied
 *   fpx_snapshots node.uid -> the stream sequence that node's snapshot covers
 *                (peer.c: trimming, and replicas started from a peer's state)
 *
 * Every bucket and stream is replicated by JetStream (R = min(3, NATS
 * servers)); nothing here elects, votes or replicates on its own. A watcher
 * on fpx_indexes opens a replica when an index placed here is defined and
 * drops it when the definition goes (replica.c).
 */
#include "internal.h"

#include "server/util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fpx_cluster_uid_hex(const uint8_t *uid, char *out) {
    for (int i = 0; i < FPX_UID_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", uid[i]);
}

void fpx_cluster_stream_names(const uint8_t *uid, char *stream, char *subject) {
    char hex[FPX_UID_HEX];
    fpx_cluster_uid_hex(uid, hex);
    snprintf(stream, 8 + FPX_UID_HEX, "FPX_%s", hex);
    snprintf(subject, 8 + FPX_UID_HEX, "fpx.log.%s", hex);
}

int fpx_cluster_fail(fpx_err *err, const char *what, natsStatus st) {
    natsStatus last = NATS_OK;
    const char *text = nats_GetLastError(&last);
    return fpx_err_set(err, FPX_E_UNAVAILABLE, "%s: the cluster's NATS servers answered: %s%s%s",
                       what, natsStatus_GetText(st), text && *text ? ": " : "", text ? text : "");
}

/* ---- threads: heartbeat and watcher -------------------------------------------------- */

int fpx_cluster_wait_stop(fpx_cluster *c, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->stop_mu);
    if (!c->stop)
        pthread_cond_timedwait(&c->stop_cv, &c->stop_mu, &ts);
    int stop = c->stop;
    pthread_mutex_unlock(&c->stop_mu);
    return stop;
}

/* The heartbeat's catching up: records a replica may apply in one beat, and
 * how many beats apart every replica is checked against its stream. */
#define FPX_REPAIR_MAX 512
#define FPX_REPAIR_EVERY 10

typedef struct applied_note {
    char key[FPX_NODE_ID_MAX + FPX_UID_HEX + 2];
    uint64_t seq;
} applied_note;

/* Every second: this node is live; the sequences its replicas applied
 * (those that moved), for operators and tests; and what they use, for the
 * tenants' quotas. */
static void *beat_main(void *arg) {
    fpx_cluster *c = arg;
    const char *me = c->s->cfg->node_id;
    unsigned beats = 0;
    do {
        uint64_t rev;
        char rec[400];
        fpx_node_record(c, rec, sizeof rec);
        kvStore_PutString(&rev, c->nodes, me, rec);
        applied_note notes[64];
        size_t n = 0;
        /* Never waits for the replica list (opening a replica may take
         * seconds): the heartbeat must not lapse meanwhile. */
        int locked = pthread_mutex_trylock(&c->mu) == 0;
        for (fpx_replica *r = locked ? c->reps : NULL; r && n < 64; r = r->next) {
            if (pthread_rwlock_tryrdlock(&r->ix->lock) != 0)
                continue;
            uint64_t seq = fpx_synced_durable(r->ix); /* applied and synced there */
            pthread_rwlock_unlock(&r->ix->lock);
            if (seq == r->reported)
                continue;
            r->reported = seq;
            char hex[FPX_UID_HEX];
            fpx_cluster_uid_hex(r->ix->uid, hex);
            snprintf(notes[n].key, sizeof notes[n].key, "%s.%s", me, hex);
            notes[n++].seq = seq;
        }
        /* A replica whose delivered record did not apply (NATS unreachable
         * for a moment) is behind until the next record comes, which may be
         * never: catch it up here, a bounded number of records a beat, and
         * check every replica against its stream now and then. */
        int all = ++beats % FPX_REPAIR_EVERY == 0;
        for (fpx_replica *r = locked ? c->reps : NULL; r; r = r->next) {
            /* each may wait for a stream's answer: a stop does not wait for all */
            if (fpx_cluster_wait_stop(c, 0))
                break;
            if (!all && !atomic_exchange(&r->behind, 0))
                continue;
            fpx_err err = {0};
            if (fpx_log_repair(c, r, FPX_REPAIR_MAX, &err) != 0) {
                atomic_store(&r->behind, 1);
                if (err.msg[0])
                    fpx_log(FPX_LOG_WARN, "%s/%s: not caught up with the stream yet: %s",
                            r->ix->tenant, r->ix->name, err.msg);
            }
        }
        if (locked)
            pthread_mutex_unlock(&c->mu);
        fpx_peer_beat(c, beats);
        fpx_usage_beat(c, beats);
        for (size_t i = 0; i < n; i++) {
            char v[24];
            snprintf(v, sizeof v, "%llu", (unsigned long long)notes[i].seq);
            kvStore_PutString(&rev, c->applied, notes[i].key, v);
        }
    } while (!fpx_cluster_wait_stop(c, FPX_HEARTBEAT_MS));
    return NULL;
}

/* ---- start and stop --------------------------------------------------------------- */

static int connect_nats(fpx_cluster *c, fpx_err *err) {
    const fpx_config *cfg = c->s->cfg;
    char urls[sizeof cfg->cluster_urls];
    const char *list[64];
    int n = 0;
    snprintf(urls, sizeof urls, "%s", cfg->cluster_urls);
    for (char *save = NULL, *t = strtok_r(urls, ",", &save); t && n < 64;
         t = strtok_r(NULL, ",", &save))
        list[n++] = t;
    if (n == 0)
        return fpx_err_set(err, FPX_E_VALIDATION, "--cluster names no NATS server");
    natsOptions *o = NULL;
    natsStatus st = natsOptions_Create(&o);
    if (st == NATS_OK)
        st = natsOptions_SetServers(o, list, n);
    if (st == NATS_OK)
        st = natsOptions_SetName(o, cfg->node_id);
    if (st == NATS_OK) /* never give up on the cluster: unavailable until it is back */
        st = natsOptions_SetMaxReconnect(o, -1);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(o, 250);
    if (st == NATS_OK)
        st = natsOptions_SetTimeout(o, 2000);
    for (int attempt = 0; st == NATS_OK && attempt < 60; attempt++) {
        st = natsConnection_Connect(&c->nc, o);
        if (st == NATS_OK || fpx_cluster_wait_stop(c, 500))
            break;
        st = NATS_OK;
        c->nc = NULL;
    }
    natsOptions_Destroy(o);
    if (!c->nc)
        return fpx_cluster_fail(err, "cannot connect to the cluster", st ? st : NATS_NO_SERVER);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    if ((st = natsConnection_JetStream(&c->js, c->nc, &jo)) != NATS_OK)
        return fpx_cluster_fail(err, "no JetStream on the cluster's NATS servers", st);
    char **servers = NULL;
    int count = 0;
    if (natsConnection_GetServers(c->nc, &servers, &count) == NATS_OK) {
        for (int i = 0; i < count; i++)
            free(servers[i]);
        free(servers);
    }
    c->replicas = count < 1 ? 1 : count > 3 ? 3 : count;
    return 0;
}

/*
 * Binds the bucket name (history 1, entries expiring after ttl_ms when not
 * 0), making its stream when missing. Its reads go to the stream's leader:
 * libnats makes a bucket with direct gets, which any replica answers, so a
 * replica that lags can answer "no such key" for a key written a moment
 * before, and decisions are taken on these reads (a lease reaper that finds
 * no definition removes the lease; a create checks the name is free). The
 * stream is made here as libnats makes a bucket's, direct gets off, and a
 * bucket made with them (by an earlier version) has them turned off; a
 * handle reads the way its stream said when it was bound (js_KeyValue).
 * wait_ms bounds each JetStream call that makes or checks the stream.
 */
static natsStatus bucket(fpx_cluster *c, const char *name, int64_t ttl_ms, int64_t wait_ms,
                         kvStore **out) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = wait_ms;
    char stream[8 + FPX_NAME_MAX], subject[8 + FPX_NAME_MAX];
    snprintf(stream, sizeof stream, "KV_%s", name);
    snprintf(subject, sizeof subject, "$KV.%s.>", name);
    const char *subjects[1] = {subject};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.MaxMsgsPerSubject = 1;
    sc.MaxBytes = -1;
    sc.MaxAge = ttl_ms * 1000000; /* nanoseconds */
    sc.MaxMsgSize = -1;
    sc.Storage = js_FileStorage;
    sc.Replicas = c->replicas;
    sc.AllowRollup = true;
    sc.DenyDelete = true;
    sc.AllowDirect = false;
    sc.Discard = js_DiscardNew;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_AddStream(&si, c->js, &sc, &jo, &jerr);
    jsStreamInfo_Destroy(si);
    si = NULL;
    if (st != NATS_OK && jerr != JSStreamNameExistErr)
        return st;
    if (st != NATS_OK) { /* there, with another configuration */
        st = js_GetStreamInfo(&si, c->js, stream, &jo, &jerr);
        if (st == NATS_OK && si->Config->AllowDirect) {
            si->Config->AllowDirect = false;
            jsStreamInfo *up = NULL;
            st = js_UpdateStream(&up, c->js, si->Config, &jo, &jerr);
            jsStreamInfo_Destroy(up);
            if (st == NATS_OK)
                fpx_log(FPX_LOG_INFO, "bucket %s: reads go to its leader from now on", name);
        }
        jsStreamInfo_Destroy(si);
        if (st != NATS_OK)
            return st;
    }
    return js_KeyValue(out, c->js, name);
}

/* The cluster's forwarding token: the one in the bucket, or a new one made
 * here when this is the first node (a node that loses the race reads the
 * winner's). */
static natsStatus forward_token(fpx_cluster *c) {
    for (int attempt = 0; attempt < 2; attempt++) {
        kvEntry *e = NULL;
        natsStatus st = kvStore_Get(&e, c->meta, "forward_token");
        if (st == NATS_OK) {
            int len = kvEntry_ValueLen(e);
            if (len == FPX_FORWARD_TOKEN_LEN)
                memcpy(c->fwd_token, kvEntry_Value(e), FPX_FORWARD_TOKEN_LEN);
            kvEntry_Destroy(e);
            return len == FPX_FORWARD_TOKEN_LEN ? NATS_OK : NATS_ERR;
        }
        if (st != NATS_NOT_FOUND || attempt > 0)
            return st;
        uint8_t raw[FPX_FORWARD_TOKEN_LEN / 2];
        char hex[FPX_FORWARD_TOKEN_LEN + 1];
        randombytes_buf(raw, sizeof raw);
        for (size_t i = 0; i < sizeof raw; i++)
            snprintf(hex + 2 * i, 3, "%02x", raw[i]);
        uint64_t rev;
        kvStore_CreateString(&rev, c->meta, "forward_token", hex); /* or another node's won */
    }
    return NATS_ERR;
}

int fpx_cluster_forwarded_id(const fpx_server *s, const void *id, size_t len) {
    const fpx_cluster *c = s->cluster;
    size_t plen = strlen(FPX_FORWARD_ID_PREFIX);
    return c && c->fwd_token[0] && len > plen + FPX_FORWARD_TOKEN_LEN &&
           !memcmp(id, FPX_FORWARD_ID_PREFIX, plen) &&
           !memcmp((const char *)id + plen, c->fwd_token, FPX_FORWARD_TOKEN_LEN) &&
           ((const char *)id)[plen + FPX_FORWARD_TOKEN_LEN] == ':';
}

/* Binds the buckets, making them when missing, and announces this node.
 * JetStream needs a few seconds after its servers start (or after a bucket
 * is made) to elect its leaders: retried. */
static int buckets(fpx_cluster *c, fpx_err *err) {
    natsStatus st = NATS_OK;
    for (int attempt = 0; attempt < 60; attempt++) {
        /* A request sent before JetStream has a leader gets no answer: the
         * first tries give up sooner (1 s, then 2 s, 4 s; 5 s from then on),
         * so a node started with its NATS servers joins once they are ready
         * rather than a whole timeout later. */
        int64_t w = attempt < 6 ? (int64_t)1000 << (attempt / 2) : 5000;
        st = NATS_OK;
        if (!c->indexes)
            st = bucket(c, FPX_BUCKET_INDEXES, 0, w, &c->indexes);
        if (st == NATS_OK && !c->nodes)
            st = bucket(c, FPX_BUCKET_NODES, FPX_NODE_TTL_MS, w, &c->nodes);
        if (st == NATS_OK && !c->applied)
            st = bucket(c, FPX_BUCKET_APPLIED, 0, w, &c->applied);
        if (st == NATS_OK && !c->labels)
            st = bucket(c, FPX_BUCKET_LABELS, 0, w, &c->labels);
        if (st == NATS_OK && !c->label_reqs)
            st = bucket(c, FPX_BUCKET_LABEL_REQS, FPX_DEDUP_WINDOW_MS, w, &c->label_reqs);
        if (st == NATS_OK && !c->meta)
            st = bucket(c, FPX_BUCKET_CLUSTER, 0, w, &c->meta);
        if (st == NATS_OK && !c->snaps)
            st = bucket(c, FPX_BUCKET_SNAPSHOTS, 0, w, &c->snaps);
        if (st == NATS_OK && !c->leases)
            st = bucket(c, FPX_BUCKET_LEASES, 0, w, &c->leases);
        if (st == NATS_OK && !c->usage)
            st = bucket(c, FPX_BUCKET_USAGE, FPX_NODE_TTL_MS, w, &c->usage);
        if (st == NATS_OK && !c->fwd_token[0])
            st = forward_token(c);
        uint64_t rev;
        char rec[400];
        fpx_node_record(c, rec, sizeof rec);
        if (st == NATS_OK) /* announced: this node is live from here on */
            st = kvStore_PutString(&rev, c->nodes, c->s->cfg->node_id, rec);
        if (st == NATS_OK)
            break;
        fpx_log(FPX_LOG_INFO, "waiting for JetStream's buckets: %s", natsStatus_GetText(st));
        if (fpx_cluster_wait_stop(c, 500))
            break;
    }
    return st == NATS_OK ? 0 : fpx_cluster_fail(err, "cannot open the cluster's buckets", st);
}

/* Local indexes the cluster does not place here (deleted while this node
 * was away, or placed elsewhere) go: the cluster is the truth. */
static void drop_strays(fpx_cluster *c) {
    fpx_server *s = c->s;
    fpx_index **stray = NULL;
    size_t n = 0;
    pthread_rwlock_rdlock(&s->reg_lock);
    stray = malloc((s->nindexes ? s->nindexes : 1) * sizeof *stray);
    for (size_t i = 0; stray && i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        int mine = 0;
        for (fpx_replica *r = c->reps; r && !mine; r = r->next)
            mine = r->ix == ix;
        if (!mine) {
            atomic_fetch_add(&ix->refs, 1);
            stray[n++] = ix;
        }
    }
    pthread_rwlock_unlock(&s->reg_lock);
    for (size_t i = 0; i < n; i++) {
        fpx_replica_drop_local(s, stray[i], "the cluster does not place it on this node");
        fpx_index_unref(stray[i]);
    }
    free(stray);
}

/* Applies every record the streams hold now, before this node serves. */
static int catch_up_all(fpx_cluster *c, fpx_err *err) {
    uint64_t deadline = fpx_now_ns() + (uint64_t)FPX_CATCHUP_DEADLINE_MS * 1000000u;
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    for (fpx_replica *r = c->reps; r && rc == 0; r = r->next) {
        uint64_t last = 0;
        rc = fpx_log_last_seq(c, r->ix->uid, &last, err);
        fpx_index_lock_write(r->ix);
        uint64_t had = r->ix->seq;
        if (rc == 0)
            rc = fpx_log_catch_up(c, r->ix, last, err);
        uint64_t now = r->ix->seq;
        pthread_rwlock_unlock(&r->ix->lock);
        if (now > had)
            fpx_log(FPX_LOG_INFO, "%s/%s: applied stream records %llu to %llu", r->ix->tenant,
                    r->ix->name, (unsigned long long)had + 1, (unsigned long long)now);
        if (rc == 0 && fpx_now_ns() > deadline)
            rc = fpx_err_set(err, FPX_E_UNAVAILABLE, "catching up with the cluster took too long");
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int fpx_cluster_start(fpx_server *s, fpx_err *err) {
    if (!s->cfg->cluster_urls[0])
        return 0;
    fpx_cluster *c = calloc(1, sizeof *c);
    if (!c)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    c->s = s;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->opened_cv, NULL);
    pthread_mutex_init(&c->stop_mu, NULL);
    pthread_cond_init(&c->stop_cv, NULL);
    pthread_mutex_init(&c->ep_mu, NULL);
    pthread_mutex_init(&c->fwd_mu, NULL);
    pthread_mutex_init(&c->touch_mu, NULL);
    pthread_mutex_init(&c->xfer_mu, NULL);
    fpx_kvcache_init(&c->def_cache);
    fpx_kvcache_init(&c->node_cache);
    c->node_cache.keep_deleted = 1; /* a node that left is known not live */
    fpx_kvcache_init(&c->lease_cache);
    fpx_kvcache_init(&c->usage_cache);
    uint8_t boot[8];
    randombytes_buf(boot, sizeof boot);
    for (int i = 0; i < 8; i++)
        snprintf(c->boot + 2 * i, 3, "%02x", boot[i]);
    s->cluster = c;
    if (connect_nats(c, err) != 0 || buckets(c, err) != 0)
        return -1;
    natsStatus st;
    if (pthread_create(&c->beat, NULL, beat_main, c) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot start the heartbeat");
    c->beat_started = 1;
    /* The definitions as they are now (the watcher's first values, up to
     * its empty entry), then the changes, on the watcher's thread. */
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    if ((st = kvStore_WatchAll(&c->watcher, c->indexes, &wo)) != NATS_OK)
        return fpx_cluster_fail(err, "cannot watch the index definitions", st);
    for (int i = 0; i < 1000000; i++) {
        kvEntry *e = NULL;
        if ((st = kvWatcher_Next(&e, c->watcher, 10000)) != NATS_OK)
            return fpx_cluster_fail(err, "cannot read the index definitions", st);
        if (!e)
            break;
        fpx_replica_on_definition(c, e);
        kvEntry_Destroy(e);
    }
    if (fpx_cache_start(c, err) != 0)
        return -1;
    drop_strays(c);
    if (catch_up_all(c, err) != 0)
        return -1;
    if (pthread_create(&c->watch, NULL, fpx_replica_watch_main, c) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot start the definitions watcher");
    c->watch_started = 1;
    if (s->cfg->replace_after > 0 && !s->cfg->router_only) {
        if (pthread_create(&c->repair, NULL, fpx_repair_main, c) != 0)
            return fpx_err_set(err, FPX_E_INTERNAL, "cannot start the replica repair");
        c->repair_started = 1;
    }
    if (fpx_clease_start(c, err) != 0)
        return -1;
    fpx_log(FPX_LOG_INFO, "joined the cluster as node %s (NATS %s, R=%d)", s->cfg->node_id,
            s->cfg->cluster_urls, c->replicas);
    return 0;
}

void fpx_cluster_stop(fpx_server *s) {
    fpx_cluster *c = s->cluster;
    if (!c)
        return;
    pthread_mutex_lock(&c->stop_mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->stop_cv);
    pthread_mutex_unlock(&c->stop_mu);
    /* Cut from NATS, every call below (the heartbeat's put in flight, the
     * lease reaper's, the leaving delete) would wait out its timeout: closed
     * first, they return at once, and the stop takes moments instead of half
     * a minute. Connected, they run in order, and the connection closes after
     * the leaving delete. */
    if (c->nc && natsConnection_Status(c->nc) != NATS_CONN_STATUS_CONNECTED) {
        fpx_log(FPX_LOG_WARN, "stopping while cut from the cluster's NATS servers: closing the "
                              "connection first");
        natsConnection_Close(c->nc);
    }
    if (c->beat_started)
        pthread_join(c->beat, NULL);
    if (c->watch_started)
        pthread_join(c->watch, NULL);
    if (c->repair_started) /* a move in progress is undone first */
        pthread_join(c->repair, NULL);
    fpx_clease_stop(c);
    if (c->nodes) /* leaving: not live from now on, without waiting for the expiry */
        kvStore_Delete(c->nodes, s->cfg->node_id);
    /* Then the connection closes, which ends every subscription (each
     * replica's stream, each watcher) at once. Unsubscribed one by one, each
     * would ask JetStream to delete its consumer and wait for the answer, up
     * to a timeout when the consumer's server is gone (a NATS server down:
     * seconds per replica); the server removes ephemeral consumers that lost
     * their subscriber by itself. */
    if (c->nc)
        natsConnection_Close(c->nc);
    if (c->watcher) {
        kvWatcher_Stop(c->watcher);
        kvWatcher_Destroy(c->watcher);
    }
    fpx_cache_stop(c);
    pthread_mutex_lock(&c->mu);
    while (c->opening) /* none is left by now (the workers and the watcher are gone) */
        pthread_cond_wait(&c->opened_cv, &c->mu);
    while (c->reps)
        fpx_replica_forget_locked(c, c->reps);
    pthread_mutex_unlock(&c->mu);
    fpx_forward_stop(c); /* the workers are gone: no socket is in use */
    kvStore_Destroy(c->indexes);
    kvStore_Destroy(c->nodes);
    kvStore_Destroy(c->applied);
    kvStore_Destroy(c->labels);
    kvStore_Destroy(c->label_reqs);
    kvStore_Destroy(c->meta);
    kvStore_Destroy(c->snaps);
    kvStore_Destroy(c->leases);
    kvStore_Destroy(c->usage);
    jsCtx_Destroy(c->js);
    if (c->nc)
        natsConnection_Destroy(c->nc);
    /* Waits for the library's threads, and so for every subscription's end
     * (each releases its replica's index). */
    nats_CloseAndWait(10000);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->opened_cv);
    pthread_mutex_destroy(&c->stop_mu);
    pthread_cond_destroy(&c->stop_cv);
    pthread_mutex_destroy(&c->ep_mu);
    pthread_mutex_destroy(&c->fwd_mu);
    pthread_mutex_destroy(&c->touch_mu);
    fpx_peer_transfers_free(c);
    pthread_mutex_destroy(&c->xfer_mu);
    fpx_kvcache_free(&c->def_cache);
    fpx_kvcache_free(&c->node_cache);
    fpx_kvcache_free(&c->lease_cache);
    fpx_kvcache_free(&c->usage_cache);
    free(c->usage_sent);
    free(c);
    s->cluster = NULL;
}

/* ---- for the move command (move.c) ------------------------------------------------- */

int fpx_cluster_connect(fpx_cluster *c, fpx_err *err) {
    return connect_nats(c, err);
}
