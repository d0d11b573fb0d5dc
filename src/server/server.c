/*
 * server.c - server lifecycle and the registry of open indexes.
 *
 * The registry is a small array under a read/write lock: lookups (every
 * request) share it, create and delete take it exclusively. Each index has
 * its own lock and a reference count, so a request keeps its index alive
 * after leaving the registry lock, and a delete that races with it is seen
 * through ix->dropped.
 *
 * Indexes that could not be loaded stay known, with the reason, so that a
 * request naming one learns it is unavailable (and where its files are)
 * instead of being told it does not exist, and so that its owner can delete
 * it. Their folders are never touched except by that delete.
 */
#include "server.h"
#include "store.h"
#include "util.h"

#include <stdio.h>
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

static void refused_index(void *ctx, const char *tenant, const char *name, const char *reason,
                          const char *dir) {
    fpx_server *s = ctx;
    fpx_unavailable *a = realloc(s->unavail, (s->nunavail + 1) * sizeof *a);
    if (!a) {
        fpx_log(FPX_LOG_ERROR, "out of memory noting index %s/%s as unavailable", tenant, name);
        return;
    }
    s->unavail = a;
    fpx_unavailable *u = &a[s->nunavail];
    snprintf(u->tenant, sizeof u->tenant, "%s", tenant);
    snprintf(u->name, sizeof u->name, "%s", name);
    u->reason = strdup(reason);
    u->dir = strdup(dir);
    if (!u->reason || !u->dir) {
        free(u->reason);
        free(u->dir);
        fpx_log(FPX_LOG_ERROR, "out of memory noting index %s/%s as unavailable", tenant, name);
        return;
    }
    s->nunavail++;
}

/* The entry of tenant's refused index name, or NULL. Caller holds reg_lock. */
static fpx_unavailable *find_unavailable(fpx_server *s, const char *tenant, const char *name) {
    for (size_t i = 0; i < s->nunavail; i++)
        if (!strcmp(s->unavail[i].name, name) && !strcmp(s->unavail[i].tenant, tenant))
            return &s->unavail[i];
    return NULL;
}

static void forget_unavailable(fpx_server *s, fpx_unavailable *u) {
    free(u->reason);
    free(u->dir);
    *u = s->unavail[--s->nunavail];
}

int fpx_server_unavailable(fpx_server *s, const char *tenant, const char *name, fpx_err *err) {
    int rc = 0;
    pthread_rwlock_rdlock(&s->reg_lock);
    fpx_unavailable *u = find_unavailable(s, tenant, name);
    if (u) {
        /* The reason is cut, never the folder, when the message is long. */
        int room = (int)sizeof err->msg - 80 - (int)strlen(name) - (int)strlen(u->dir);
        rc = fpx_err_set(err, FPX_E_INTERNAL,
                         "index '%s' is unavailable: %.*s; its files are kept as they were in %s",
                         name, room > 0 ? room : 0, u->reason, u->dir);
    }
    pthread_rwlock_unlock(&s->reg_lock);
    return rc;
}

int fpx_server_drop_unavailable(fpx_server *s, const char *tenant, const char *name, fpx_err *err) {
    pthread_rwlock_wrlock(&s->reg_lock);
    fpx_unavailable *u = find_unavailable(s, tenant, name);
    int rc = u ? 1 : 0;
    if (u && fpx_store_remove_dir(s->cfg->data_dir, tenant, name, err) != 0)
        rc = -1;
    else if (u)
        forget_unavailable(s, u);
    pthread_rwlock_unlock(&s->reg_lock);
    if (rc == 1)
        fpx_log(FPX_LOG_INFO, "deleted unavailable index %s/%s", tenant, name);
    return rc;
}

int fpx_server_init(fpx_server *s, const fpx_config *cfg, fpx_err *err) {
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    pthread_rwlock_init(&s->reg_lock, NULL);
    if (fpx_auth_new(cfg->api_keys, &s->auth, err))
        return -1;
    return fpx_store_load_all(cfg->data_dir, fpx_server_replay, found_index, refused_index, s, err);
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
    while (s->nunavail > 0)
        forget_unavailable(s, &s->unavail[0]);
    free(s->unavail);
    s->unavail = NULL;
    fpx_auth_free(s->auth);
    s->auth = NULL;
    pthread_rwlock_destroy(&s->reg_lock);
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
    /* Its folder was made anew (the refused one was removed by hand). */
    fpx_unavailable *u = find_unavailable(s, ix->tenant, ix->name);
    if (u)
        forget_unavailable(s, u);
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
