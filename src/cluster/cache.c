/*
 * cache.c - the index definitions and node heartbeats a forwarded request
 * needs, held in memory and kept current by watches on their key-value
 * buckets (libnats kvWatch), so that forwarding a request reads nothing from
 * NATS (docs/cluster.md, "Forwarding", "Cost").
 *
 * The definitions' cache is filled by the watcher cluster.c already runs on
 * fpx_indexes (on_definition); the heartbeats' by a watcher of its own on
 * fpx_nodes, on a thread of its own. A cache answers only once its
 * watcher delivered the bucket's values as they were when it started (the
 * empty entry that ends them); before, and on a miss, the caller reads NATS
 * as it did without a cache.
 *
 * Staleness: a change reaches the cache when the watcher delivers it,
 * typically within a millisecond of the write. A hit is only ever used to
 * choose where to forward (or which nodes hold a sharded index's shards);
 * whether the index exists is decided by the node that serves it, from its
 * own replicas and NATS. A heartbeat entry expires in the bucket after
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

void fpx_kvcache_apply(fpx_kvcache *k, kvEntry *e) {
    const char *key = kvEntry_Key(e);
    int put = kvEntry_Operation(e) == kvOp_Put;
    int n = put ? kvEntry_ValueLen(e) : 0;
    uint8_t *val = NULL;
    if (put && n > 0 && !(val = malloc((size_t)n)))
        put = 0; /* out of memory: forget the key, so that NATS is read */
    if (val)
        memcpy(val, kvEntry_Value(e), (size_t)n);
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
        x->len = (size_t)(put ? n : 0);
        x->present = put;
        x->at_ns = now_ns();
        val = NULL;
    }
    pthread_rwlock_unlock(&k->mu);
    free(val);
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

/* ---- the heartbeats' watcher ------------------------------------------------------- */

static void *nodes_watch_main(void *arg) {
    fpx_cluster *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->stop_mu);
        int stop = c->stop;
        pthread_mutex_unlock(&c->stop_mu);
        if (stop)
            break;
        kvEntry *e = NULL;
        natsStatus st = kvWatcher_Next(&e, c->node_watcher, 250);
        if (st == NATS_OK && e) {
            fpx_kvcache_apply(&c->node_cache, e);
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

int fpx_cache_start_nodes(fpx_cluster *c, fpx_err *err) {
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    natsStatus st = kvStore_WatchAll(&c->node_watcher, c->nodes, &wo);
    if (st != NATS_OK)
        return fpx_cluster_fail(err, "cannot watch the cluster's nodes", st);
    for (int i = 0; i < 1000000; i++) {
        kvEntry *e = NULL;
        if ((st = kvWatcher_Next(&e, c->node_watcher, 10000)) != NATS_OK)
            return fpx_cluster_fail(err, "cannot read the cluster's nodes", st);
        if (!e)
            break;
        fpx_kvcache_apply(&c->node_cache, e);
        kvEntry_Destroy(e);
    }
    atomic_store(&c->node_cache.ready, 1);
    if (pthread_create(&c->nwatch, NULL, nodes_watch_main, c) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot start the nodes' watcher");
    c->nwatch_started = 1;
    return 0;
}

void fpx_cache_stop(fpx_cluster *c) {
    if (c->nwatch_started)
        pthread_join(c->nwatch, NULL);
    c->nwatch_started = 0;
    if (c->node_watcher) {
        kvWatcher_Stop(c->node_watcher);
        kvWatcher_Destroy(c->node_watcher);
        c->node_watcher = NULL;
    }
}
