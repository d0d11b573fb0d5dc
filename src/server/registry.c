/*
 * registry.c - the table of open indexes, by tenant and name.
 *
 * A small array under a read/write lock that is only ever held for a scan or
 * an insert: never across disk work, FAISS work or another lock, so one
 * tenant's create, import or delete of a large index never stalls another's
 * requests. A new index is reserved first (its name taken, invisible to
 * lookups), its files are written without the lock, then it is published.
 * Each index has its own lock and a reference count, so a request keeps its
 * index alive after leaving the registry, and a delete that races with it is
 * seen through ix->dropped.
 *
 * Beside it, the indexes whose files were found at start but refused
 * (store.c says why): known by name so that requests get the reason, not
 * not_found, and so that their owner can delete them.
 */
#include "cluster/cluster.h"
#include "server.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int same(const fpx_index *ix, const char *tenant, const char *name, size_t name_len) {
    return strlen(ix->name) == name_len && !memcmp(ix->name, name, name_len) &&
           !strcmp(ix->tenant, tenant);
}

fpx_index *fpx_server_find(fpx_server *s, const char *tenant, const char *name, size_t name_len) {
    fpx_index *found = NULL;
    pthread_rwlock_rdlock(&s->reg_lock);
    for (size_t i = 0; i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        if (!ix->creating && same(ix, tenant, name, name_len)) {
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
        fpx_index_free(ix);
    }
}

/* Caller holds reg_lock for writing. */
static int insert(fpx_server *s, fpx_index *ix) {
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

int fpx_server_insert(fpx_server *s, fpx_index *ix) {
    pthread_rwlock_wrlock(&s->reg_lock);
    int rc = insert(s, ix);
    pthread_rwlock_unlock(&s->reg_lock);
    return rc;
}

int fpx_server_reserve(fpx_server *s, fpx_index *ix, fpx_err *err) {
    int rc = 0;
    size_t mine = 0, max = s->cfg->tenant_max_indexes;
    pthread_rwlock_wrlock(&s->reg_lock);
    for (size_t i = 0; i < s->nindexes && rc == 0; i++) {
        if (same(s->indexes[i], ix->tenant, ix->name, strlen(ix->name)))
            rc = fpx_err_set(err, FPX_E_EXISTS, "index '%s' already exists", ix->name);
        mine += !strcmp(s->indexes[i]->tenant, ix->tenant);
    }
    if (rc == 0 && max && mine >= max)
        rc = fpx_err_set(err, FPX_E_LIMIT,
                         "tenant '%s' has %zu indexes, its quota (--tenant-max-indexes)",
                         ix->tenant, mine);
    if (rc == 0) {
        ix->creating = 1;
        if (insert(s, ix) != 0)
            rc = fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    }
    pthread_rwlock_unlock(&s->reg_lock);
    return rc;
}

static fpx_unavailable *find_unavailable(fpx_server *s, const char *tenant, const char *name);
static void forget(fpx_server *s, fpx_unavailable *u);

void fpx_server_publish(fpx_server *s, fpx_index *ix) {
    pthread_rwlock_wrlock(&s->reg_lock);
    ix->creating = 0;
    /* Its folder was made anew (a refused one was removed by hand). */
    fpx_unavailable *u = find_unavailable(s, ix->tenant, ix->name);
    if (u)
        forget(s, u);
    pthread_rwlock_unlock(&s->reg_lock);
}

void fpx_server_remove(fpx_server *s, fpx_index *ix) {
    pthread_rwlock_wrlock(&s->reg_lock);
    for (size_t i = 0; i < s->nindexes; i++) {
        if (s->indexes[i] == ix) {
            s->indexes[i] = s->indexes[--s->nindexes];
            break;
        }
    }
    pthread_rwlock_unlock(&s->reg_lock);
}

int fpx_server_drop(fpx_server *s, fpx_index *ix, fpx_err *err) {
    char *gone = NULL;
    if (fpx_store_retire(ix, &gone, err) != 0)
        return -1;
    fpx_server_remove(s, ix);
    ix->dropped = 1;
    if (gone)
        fpx_server_reclaim_later(s, NULL, gone);
    return 0;
}

static int cmp_index_name(const void *a, const void *b) {
    return strcmp((*(fpx_index *const *)a)->name, (*(fpx_index *const *)b)->name);
}

int fpx_server_list(fpx_server *s, const char *tenant, fpx_index ***out, size_t *n) {
    pthread_rwlock_rdlock(&s->reg_lock);
    fpx_index **mine = malloc((s->nindexes ? s->nindexes : 1) * sizeof *mine);
    *n = 0;
    for (size_t i = 0; mine && i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        if (!ix->creating && !strcmp(ix->tenant, tenant)) {
            atomic_fetch_add(&ix->refs, 1);
            mine[(*n)++] = ix;
        }
    }
    pthread_rwlock_unlock(&s->reg_lock);
    if (!mine)
        return -1;
    qsort(mine, *n, sizeof *mine, cmp_index_name);
    *out = mine;
    return 0;
}

/* ---- tenant quotas --------------------------------------------------------------- */

void fpx_server_sync_usage(fpx_index *ix) {
    atomic_store(&ix->use_vectors, (long long)ix->nlive);
    atomic_store(&ix->use_bytes, (long long)(ix->snap_bytes + ix->wal_bytes));
}

int fpx_server_check_quota(fpx_server *s, const char *tenant, int64_t more_vectors,
                           uint64_t more_bytes, fpx_err *err) {
    const fpx_config *cfg = s->cfg;
    if (!cfg->tenant_max_vectors && !cfg->tenant_max_disk_bytes)
        return 0;
    uint64_t vectors = 0, bytes = 0;
    uint8_t *held = NULL; /* in a cluster: the unique ids of the replicas counted here */
    size_t nheld = 0;
    pthread_rwlock_rdlock(&s->reg_lock);
    if (s->cluster && !(held = malloc((s->nindexes ? s->nindexes : 1) * FPX_UID_BYTES))) {
        pthread_rwlock_unlock(&s->reg_lock);
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < s->nindexes; i++) {
        if (strcmp(s->indexes[i]->tenant, tenant))
            continue;
        vectors += (uint64_t)atomic_load(&s->indexes[i]->use_vectors);
        bytes += (uint64_t)atomic_load(&s->indexes[i]->use_bytes);
        if (held)
            memcpy(held + FPX_UID_BYTES * nheld++, s->indexes[i]->uid, FPX_UID_BYTES);
    }
    pthread_rwlock_unlock(&s->reg_lock);
    /* In a cluster, the tenant's indexes held by other nodes too (each once,
     * as their replicas last reported it: docs/cluster.md, "Limits"). */
    int rc = held ? fpx_cluster_usage(s, tenant, held, nheld, &vectors, &bytes, err) : 0;
    free(held);
    if (rc != 0)
        return -1;
    if (cfg->tenant_max_vectors && more_vectors > 0 &&
        vectors + (uint64_t)more_vectors > cfg->tenant_max_vectors)
        return fpx_err_set(err, FPX_E_LIMIT,
                           "tenant '%s' holds %llu vectors: %lld more would pass its quota of %zu "
                           "(--tenant-max-vectors)",
                           tenant, (unsigned long long)vectors, (long long)more_vectors,
                           cfg->tenant_max_vectors);
    if (cfg->tenant_max_disk_bytes && bytes + more_bytes > cfg->tenant_max_disk_bytes)
        return fpx_err_set(err, FPX_E_LIMIT,
                           "tenant '%s' uses %llu bytes on disk: %llu more would pass its quota of "
                           "%zu (--tenant-max-disk-bytes)",
                           tenant, (unsigned long long)bytes, (unsigned long long)more_bytes,
                           cfg->tenant_max_disk_bytes);
    return 0;
}

/* ---- indexes refused at start ----------------------------------------------------- */

/* The entry of tenant's refused index name, or NULL. Caller holds reg_lock. */
static fpx_unavailable *find_unavailable(fpx_server *s, const char *tenant, const char *name) {
    for (size_t i = 0; i < s->nunavail; i++)
        if (!strcmp(s->unavail[i].name, name) && !strcmp(s->unavail[i].tenant, tenant))
            return &s->unavail[i];
    return NULL;
}

/* Caller holds reg_lock for writing (or is alone: start-up, shutdown). */
static void forget(fpx_server *s, fpx_unavailable *u) {
    free(u->reason);
    free(u->dir);
    *u = s->unavail[--s->nunavail];
}

int fpx_server_note_unavailable(fpx_server *s, const char *tenant, const char *name,
                                const char *reason, const char *dir) {
    fpx_unavailable *a = realloc(s->unavail, (s->nunavail + 1) * sizeof *a);
    if (!a)
        return -1;
    s->unavail = a;
    fpx_unavailable *u = &a[s->nunavail];
    snprintf(u->tenant, sizeof u->tenant, "%s", tenant);
    snprintf(u->name, sizeof u->name, "%s", name);
    u->reason = strdup(reason);
    u->dir = strdup(dir);
    if (!u->reason || !u->dir) {
        free(u->reason);
        free(u->dir);
        return -1;
    }
    s->nunavail++;
    return 0;
}

void fpx_server_forget_unavailable(fpx_server *s) {
    while (s->nunavail > 0)
        forget(s, &s->unavail[0]);
    free(s->unavail);
    s->unavail = NULL;
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
    /* The entry leaves the table under the lock; the folder is removed
     * without it (a failure is reported, and the next start finds the
     * folder and refuses it again). */
    pthread_rwlock_wrlock(&s->reg_lock);
    fpx_unavailable *u = find_unavailable(s, tenant, name);
    if (u)
        forget(s, u);
    pthread_rwlock_unlock(&s->reg_lock);
    if (!u)
        return 0;
    if (fpx_store_remove_dir(s->cfg->data_dir, tenant, name, err) != 0)
        return -1;
    fpx_log(FPX_LOG_INFO, "deleted unavailable index %s/%s", tenant, name);
    return 1;
}
