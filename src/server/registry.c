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
 */
#include "server.h"
#include "util.h"

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
        fpx_store_close(ix);
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
    pthread_rwlock_wrlock(&s->reg_lock);
    for (size_t i = 0; i < s->nindexes && rc == 0; i++)
        if (same(s->indexes[i], ix->tenant, ix->name, strlen(ix->name)))
            rc = fpx_err_set(err, FPX_E_EXISTS, "index '%s' already exists", ix->name);
    if (rc == 0) {
        ix->creating = 1;
        if (insert(s, ix) != 0)
            rc = fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    }
    pthread_rwlock_unlock(&s->reg_lock);
    return rc;
}

void fpx_server_publish(fpx_server *s, fpx_index *ix) {
    pthread_rwlock_wrlock(&s->reg_lock);
    ix->creating = 0;
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
