/*
 * server.c - server lifecycle and the registry of open indexes.
 *
 * The registry is a small array under a read/write lock: lookups (every
 * request) share it, create and delete take it exclusively. Each index has
 * its own lock and a reference count, so a request keeps its index alive
 * after leaving the registry lock, and a delete that races with it is seen
 * through ix->dropped.
 */
#include "server.h"
#include "store.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static int found_index(void *ctx, fpx_index *ix) {
    fpx_server *s = ctx;
    if (fpx_server_insert(s, ix) != 0) {
        fpx_log(FPX_LOG_ERROR, "out of memory registering %s/%s", ix->tenant, ix->name);
        fpx_store_close(ix);
        fpx_index_free(ix);
        return -1;
    }
    fpx_log(FPX_LOG_INFO, "loaded index %s/%s (%s, d=%lld, %lld vectors)", ix->tenant, ix->name,
            ix->index_type, (long long)ix->dim, (long long)ix->nlive);
    return 0;
}

int fpx_server_init(fpx_server *s, const fpx_config *cfg, fpx_err *err) {
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    pthread_rwlock_init(&s->reg_lock, NULL);
    if (fpx_auth_new(cfg->api_keys, &s->auth, err))
        return -1;
    return fpx_store_load_all(cfg->data_dir, fpx_server_replay, found_index, s, err);
}

void fpx_server_shutdown(fpx_server *s) {
    for (size_t i = 0; i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        fpx_err err = {0};
        if (ix->seq != ix->snap_seq && fpx_store_snapshot(s->cfg->data_dir, ix, &err) != 0)
            fpx_log(FPX_LOG_WARN, "snapshot of %s/%s at shutdown failed (its log is kept): %s",
                    ix->tenant, ix->name, err.msg);
        fpx_store_close(ix);
        fpx_index_unref(ix);
    }
    free(s->indexes);
    s->indexes = NULL;
    s->nindexes = 0;
    fpx_auth_free(s->auth);
    s->auth = NULL;
    pthread_rwlock_destroy(&s->reg_lock);
}

void fpx_server_snapshot_idle(fpx_server *s) {
    /* A delete_index waiting for a busy index holds the registry for
     * writing: then nothing can be walked safely, and the logs suffice. */
    if (pthread_rwlock_tryrdlock(&s->reg_lock) != 0) {
        fpx_log(FPX_LOG_WARN, "the index registry is busy: no snapshots at shutdown (the logs "
                              "hold every write)");
        return;
    }
    size_t done = 0, busy = 0;
    for (size_t i = 0; i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        if (pthread_rwlock_trywrlock(&ix->lock) != 0) {
            busy++;
            fpx_log(FPX_LOG_INFO, "index %s/%s is busy: not snapshotted (its log holds its writes)",
                    ix->tenant, ix->name);
            continue;
        }
        fpx_err err = {0};
        if (ix->dropped || ix->seq == ix->snap_seq)
            continue;
        if (fpx_store_snapshot(s->cfg->data_dir, ix, &err) != 0)
            fpx_log(FPX_LOG_WARN, "snapshot of %s/%s at shutdown failed (its log is kept): %s",
                    ix->tenant, ix->name, err.msg);
        else
            done++;
    }
    fpx_log(FPX_LOG_INFO, "shutdown: %zu index(es) snapshotted, %zu busy left to their logs", done,
            busy);
}

fpx_index *fpx_server_find(fpx_server *s, const char *tenant, const char *name, size_t name_len) {
    fpx_index *found = NULL;
    pthread_rwlock_rdlock(&s->reg_lock);
    for (size_t i = 0; i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        if (strlen(ix->name) == name_len && !memcmp(ix->name, name, name_len) &&
            !strcmp(ix->tenant, tenant)) {
            atomic_fetch_add(&ix->refs, 1);
            found = ix;
            break;
        }
    }
    pthread_rwlock_unlock(&s->reg_lock);
    return found;
}

void fpx_index_unref(fpx_index *ix) {
    if (ix && atomic_fetch_sub(&ix->refs, 1) == 1) {
        fpx_store_close(ix);
        fpx_index_free(ix);
    }
}

int fpx_server_insert(fpx_server *s, fpx_index *ix) {
    if (s->nindexes == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        fpx_index **a = realloc(s->indexes, cap * sizeof *a);
        if (!a)
            return -1;
        s->indexes = a;
        s->cap = cap;
    }
    s->indexes[s->nindexes++] = ix;
    return 0;
}

void fpx_server_remove(fpx_server *s, fpx_index *ix) {
    for (size_t i = 0; i < s->nindexes; i++) {
        if (s->indexes[i] == ix) {
            s->indexes[i] = s->indexes[--s->nindexes];
            return;
        }
    }
}
