/*
 * cache.c - the index definitions and node heartbeats a forwarded request
 * needs, held in memory and kept current by watches on their key-value
 * buckets (libnats kvWatch), so that forwarding a request reads nothing from
 * NATS (docs/cluster.md, "Forwarding", "Cost").
 *
 * Each cache is filled by a watcher on a thread of its own: the definitions'
 * too, apart from the watcher on fpx_indexes that opens and drops replicas
 * (replica.c), which waits on NATS and on the cluster's lock while it opens
 * one (a peer's snapshot of a large index takes seconds), and so can be
 * behind; the leases' cache is read by the lease reapers (lease.c). A cache
 * answers only once its watcher delivered the bucket's values as they were
 * when it started (the empty entry that ends them); before, and on a miss,
 * the caller reads NATS as it did without a cache.
 *
 * Staleness: a change reaches the cache when the watcher delivers it,
 * typically within a millisecond of the write; after every NATS server
 * restarted, only once the watcher's ordered consumer has noticed the
 * missing heartbeats and started again (5 s and more). A hit is only ever
 * used to choose where to forward (or which nodes hold a sharded index's
 * shards); whether the index exists is decided by the node that serves it,
 * from its own replicas and NATS. A heartbeat entry expires in the bucket after
 * FPX_NODE_TTL_MS without a word to the watchers, so a cached heartbeat
 * counts as live only that long after it was received here.
 */
#include "internal.h"

#include "server/util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t bucket_of(const char *key) {
    uint64_t h = 14695981039346656037ull;
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (size_t)(h % FPX_KVCACHE_BUCKETS);
}

void fpx_kvcache_init(fpx_kvcache *k) {
    memset(k, 0, sizeof *k);
    pthread_rwlock_init(&k->mu, NULL);
}

void fpx_kvcache_free(fpx_kvcache *k) {
    for (size_t i = 0; i < FPX_KVCACHE_BUCKETS; i++) {
        fpx_centry *e = k->b[i];
        while (e) {
            fpx_centry *next = e->next;
            free(e->val);
            free(e);
            e = next;
        }
        k->b[i] = NULL;
    }
    pthread_rwlock_destroy(&k->mu);
}

/* Stores key's value (put: n bytes at v) or its deletion (!put). */
static void store(fpx_kvcache *k, const char *key, int put, const void *v, size_t n) {
    uint8_t *val = NULL;
    if (put && n > 0 && !(val = malloc(n)))
        put = 0; /* out of memory: forget the key, so that NATS is read */
    if (val)
        memcpy(val, v, n);
    size_t klen = strlen(key);
    if (klen > FPX_KVCACHE_KEY_MAX) {
        free(val);
        return;
    }
    size_t b = bucket_of(key);
    pthread_rwlock_wrlock(&k->mu);
    fpx_centry **at = &k->b[b];
    while (*at && strcmp((*at)->key, key))
        at = &(*at)->next;
    fpx_centry *x = *at;
    if (!x && (put || k->keep_deleted)) {
        x = calloc(1, sizeof *x);
        if (x) {
            memcpy(x->key, key, klen + 1);
            x->next = k->b[b];
            k->b[b] = x;
        }
    }
    if (x && !put && !k->keep_deleted) { /* gone: the next lookup reads NATS */
        *at = x->next;
        free(x->val);
        free(x);
        x = NULL;
    } else if (x) {
        free(x->val);
        x->val = val;
        x->len = put ? n : 0;
        x->present = put;
        x->at_ns = now_ns();
        val = NULL;
    }
    pthread_rwlock_unlock(&k->mu);
    free(val);
}

void fpx_kvcache_apply(fpx_kvcache *k, kvEntry *e) {
    int put = kvEntry_Operation(e) == kvOp_Put;
    int n = put ? kvEntry_ValueLen(e) : 0;
    store(k, kvEntry_Key(e), put, put ? kvEntry_Value(e) : NULL, n > 0 ? (size_t)n : 0);
}

void fpx_kvcache_put(fpx_kvcache *k, const char *key, const void *val, size_t len) {
    store(k, key, 1, val, len);
}

int fpx_kvcache_get(fpx_kvcache *k, const char *key, uint8_t **val, size_t *len, uint64_t *age_ms) {
    *val = NULL;
    *len = 0;
    if (!atomic_load(&k->ready))
        return -1;
    int rc = 0;
    pthread_rwlock_rdlock(&k->mu);
    for (fpx_centry *x = k->b[bucket_of(key)]; x; x = x->next) {
        if (strcmp(x->key, key))
            continue;
        rc = 1;
        if (x->present && x->len && !(*val = malloc(x->len)))
            rc = -1;
        if (*val) {
            memcpy(*val, x->val, x->len);
            *len = x->len;
        }
        if (age_ms)
            *age_ms = (now_ns() - x->at_ns) / 1000000ull;
        if (rc == 1 && !x->present)
            rc = 2;
        break;
    }
    pthread_rwlock_unlock(&k->mu);
    return rc;
}

int fpx_kvcache_each(fpx_kvcache *k,
                     void (*fn)(void *arg, const char *key, const uint8_t *val, size_t len),
                     void *arg) {
    if (!atomic_load(&k->ready))
        return -1;
    pthread_rwlock_rdlock(&k->mu);
    for (size_t i = 0; i < FPX_KVCACHE_BUCKETS; i++)
        for (fpx_centry *x = k->b[i]; x; x = x->next)
            if (x->present)
                fn(arg, x->key, x->val, x->len);
    pthread_rwlock_unlock(&k->mu);
    return 0;
}

/* ---- the watchers of fpx_indexes, fpx_nodes, fpx_leases and fpx_usage -------------- */

static void *watch_main(void *arg) {
    fpx_watch *w = arg;
    fpx_cluster *c = w->c;
    for (;;) {
        pthread_mutex_lock(&c->stop_mu);
        int stop = c->stop;
        pthread_mutex_unlock(&c->stop_mu);
        if (stop)
            break;
        kvEntry *e = NULL;
        natsStatus st = kvWatcher_Next(&e, w->w, 250);
        if (st == NATS_OK && e) {
            fpx_kvcache_apply(w->k, e);
            kvEntry_Destroy(e);
        } else if (st != NATS_OK && st != NATS_TIMEOUT) {
            /* resumes by itself after a reconnection; meanwhile requests are
             * refused (fpx_cluster_admit) */
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* Watches kv into k (its initial values first) on a thread of its own. */
static int start_watch(fpx_cluster *c, fpx_watch *w, kvStore *kv, fpx_kvcache *k, const char *what,
                       fpx_err *err) {
    w->c = c;
    w->k = k;
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    natsStatus st = kvStore_WatchAll(&w->w, kv, &wo);
    if (st != NATS_OK)
        return fpx_cluster_fail(err, what, st);
    for (int i = 0; i < 1000000; i++) {
        kvEntry *e = NULL;
        if ((st = kvWatcher_Next(&e, w->w, 10000)) != NATS_OK)
            return fpx_cluster_fail(err, what, st);
        if (!e)
            break;
        fpx_kvcache_apply(k, e);
        kvEntry_Destroy(e);
    }
    atomic_store(&k->ready, 1);
    if (pthread_create(&w->th, NULL, watch_main, w) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot start a watcher thread");
    w->started = 1;
    return 0;
}

static void stop_watch(fpx_watch *w) {
    if (w->started)
        pthread_join(w->th, NULL);
    w->started = 0;
    if (w->w) {
        kvWatcher_Stop(w->w);
        kvWatcher_Destroy(w->w);
        w->w = NULL;
    }
}

int fpx_cache_start(fpx_cluster *c, fpx_err *err) {
    return start_watch(c, &c->defs_watch, c->indexes, &c->def_cache,
                       "cannot watch the index definitions", err) ||
           start_watch(c, &c->nodes_watch, c->nodes, &c->node_cache,
                       "cannot watch the cluster's nodes", err) ||
           start_watch(c, &c->leases_watch, c->leases, &c->lease_cache,
                       "cannot watch the cluster's leases", err) ||
           start_watch(c, &c->usage_watch, c->usage, &c->usage_cache,
                       "cannot watch the cluster's usage", err);
}

void fpx_cache_stop(fpx_cluster *c) {
    stop_watch(&c->defs_watch);
    stop_watch(&c->nodes_watch);
    stop_watch(&c->leases_watch);
    stop_watch(&c->usage_watch);
}
