/*
 * index.c - one index's slot tables: slots, tombstones, labels, keys and
 * metadata, and the operations that change them (add, delete, remove, reset)
 * or check them (the invariant check); index_read.c reads them (search,
 * hits, info). See index.h.
 *
 * Around it: filter.c turns a search filter into the set of matching slots,
 * and snapshot.c writes these tables (with the engine's bytes) and rebuilds
 * them, with the steps index_impl.h lends it.
 *
 * Keys and metadata are stored as canonical msgpack (re-packed by msgpack-c,
 * so every integer and string has its shortest encoding). Two keys are then
 * equal exactly when their bytes are, and an equality filter compares a
 * field's encoded bytes with the filter value's encoded bytes without
 * decoding any stored metadata.
 */
#include "index.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index_impl.h"

#define FPX_KEY_MAX_BYTES 1024

/* ---- small helpers ---------------------------------------------------------- */

fpx_blob *fpx_blob_new(const void *p, size_t n) {
    if (n > UINT32_MAX)
        return NULL;
    fpx_blob *b = malloc(sizeof *b + (n ? n : 1));
    if (!b)
        return NULL;
    b->len = (uint32_t)n;
    memcpy(b->data, p, n);
    return b;
}

fpx_blob *fpx_blob_pack(const msgpack_object *o) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fpx_blob *b = NULL;
    if (msgpack_pack_object(&pk, *o) == 0)
        b = fpx_blob_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return b;
}

static int key_eq(const void *ctx, int64_t slot, const void *key, size_t keylen) {
    const fpx_index *ix = ctx;
    const fpx_blob *b = ix->keys[slot];
    return b && b->len == keylen && memcmp(b->data, key, keylen) == 0;
}

static int label_eq(const void *ctx, int64_t slot, const void *key, size_t keylen) {
    (void)keylen;
    const fpx_index *ix = ctx;
    return ix->labels[slot] == *(const int64_t *)key;
}

uint64_t fpx_key_hash(const fpx_blob *k) {
    return fpx_hash_bytes(k->data, k->len);
}

int64_t fpx_index_find_key(const fpx_index *ix, const fpx_blob *k, uint64_t h) {
    if (!ix->keys)
        return -1;
    return fpx_slotmap_get(&ix->keymap, h, k->data, k->len, key_eq, ix);
}

void fpx_index_put_key(fpx_index *ix, int64_t s, fpx_blob *k, uint64_t h) {
    ix->keys[s] = k;
    fpx_slotmap_put(&ix->keymap, h, s);
    ix->nkeys++;
}

/* The live slot holding label, whose hash is h (read only outside identity
 * mode), or -1. */
static int64_t find_label_h(const fpx_index *ix, int64_t label, uint64_t h) {
    if (!ix->labels) {
        if (label >= 0 && label < ix->nslots && fpx_bit_get(ix->alive, label))
            return label;
        return -1;
    }
    return fpx_slotmap_get(&ix->labelmap, h, &label, sizeof label, label_eq, ix);
}

static int64_t find_label(const fpx_index *ix, int64_t label) {
    return find_label_h(ix, label, ix->labels ? fpx_hash_i64(label) : 0);
}

int64_t fpx_index_label_of(const fpx_index *ix, int64_t slot) {
    if (slot < 0)
        return -1;
    return ix->labels ? ix->labels[slot] : slot;
}

/* Tombstones a live slot: it stays in FAISS but is never returned again. */
static void tombstone(fpx_index *ix, int64_t slot) {
    fpx_bit_clear(ix->alive, slot);
    ix->nlive--;
    if (ix->keys && ix->keys[slot]) {
        fpx_blob *k = ix->keys[slot];
        fpx_slotmap_del(&ix->keymap, fpx_hash_bytes(k->data, k->len), slot);
        free(k);
        ix->keys[slot] = NULL;
        ix->nkeys--;
    }
    if (ix->meta && ix->meta[slot]) {
        free(ix->meta[slot]);
        ix->meta[slot] = NULL;
    }
    if (ix->labels)
        fpx_slotmap_del(&ix->labelmap, fpx_hash_i64(ix->labels[slot]), slot);
}

/* ---- creation ----------------------------------------------------------------- */

int fpx_index_resolve_type(const char *index_type, const char *metric, const char **factory,
                           fpx_metric *out, fpx_err *err) {
    int fixed = -1; /* metric implied by the type name, or -1 */
    *factory = index_type;
    if (!strcmp(index_type, "IndexFlatL2") || !strcmp(index_type, "L2")) {
        *factory = "Flat";
        fixed = FPX_METRIC_L2;
    } else if (!strcmp(index_type, "IndexFlatIP") || !strcmp(index_type, "IP")) {
        *factory = "Flat";
        fixed = FPX_METRIC_IP;
    }
    int m = fixed >= 0 ? fixed : FPX_METRIC_L2;
    if (metric) {
        fpx_metric given;
        if (fpx_metric_parse(metric, &given) || given == FPX_METRIC_HAMMING)
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "metric must be \"L2\", \"IP\", \"L1\", \"Linf\", \"Lp\", "
                               "\"Canberra\", \"BrayCurtis\" or \"JensenShannon\", got "
                               "\"%.40s\"",
                               metric);
        if (fixed >= 0 && (int)given != fixed)
            return fpx_err_set(err, FPX_E_VALIDATION, "index_type %s contradicts metric %s",
                               index_type, metric);
        m = (int)given;
    }
    *out = (fpx_metric)m;
    return 0;
}

fpx_index *fpx_index_alloc(const char *tenant, const char *name, const char *type, size_t tlen,
                           fpx_engine *eng) {
    fpx_index *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->index_type = strndup(type, tlen))) {
        free(ix);
        fpx_engine_free(eng);
        return NULL;
    }
    snprintf(ix->tenant, sizeof ix->tenant, "%s", tenant);
    snprintf(ix->name, sizeof ix->name, "%s", name);
    ix->metric = fpx_engine_metric(eng);
    ix->dim = fpx_engine_dim(eng);
    ix->binary = fpx_engine_is_binary(eng);
    ix->row_bytes = fpx_engine_row_bytes(eng);
    ix->eng = eng;
    /* Writers first: with glibc's default (readers first) a steady stream of
     * searches could hold an add off for ever. Searches wait only while a
     * write is queued or running, and a write queues only behind short
     * holders: it waits out a long read at the gate (fpx_index_lock_write). */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ix->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&ix->gate_mu, NULL);
    pthread_cond_init(&ix->gate_cv, NULL);
    fpx_batcher_init(&ix->batch);
    pthread_mutex_init(&ix->sync_mu, NULL);
    pthread_cond_init(&ix->sync_cv, NULL);
    ix->log_fd = -1;
    atomic_init(&ix->refs, 1);
    fpx_slotmap_init(&ix->keymap);
    fpx_slotmap_init(&ix->labelmap);
    return ix;
}

/* The binary factory description of index_type, or NULL for a float type:
 * "IndexBinaryFlat" and index_binary_factory's "BFlat", "BIVF<n>", "BHNSW<M>",
 * "BHash..." (an IDMap prefix is accepted and dropped, as for float types). */
static const char *binary_factory(const char *t) {
    if (!strncmp(t, "IDMap2,", 7))
        t += 7;
    else if (!strncmp(t, "IDMap,", 6))
        t += 6;
    if (!strcmp(t, "IndexBinaryFlat"))
        return "BFlat";
    static const char *const prefixes[] = {"BFlat", "BIVF", "BHNSW", "BHash"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (!strncmp(t, prefixes[i], strlen(prefixes[i])))
            return t;
    return NULL;
}

int fpx_index_type_is_binary(const char *index_type) {
    return binary_factory(index_type) != NULL;
}

static fpx_create_check_fn create_check;

void fpx_index_set_create_check(fpx_create_check_fn fn) {
    create_check = fn;
}

/* The engine index_type and metric describe, new and empty; metric_arg
 * (NULL: none given) only with the metrics past L2 and IP. */
static int make_engine(const char *index_type, int64_t dim, const char *metric,
                       const double *metric_arg, fpx_engine **eng, fpx_err *err) {
    const char *factory = binary_factory(index_type);
    fpx_metric m;
    if (factory) {
        if (metric && strcmp(metric, "Hamming"))
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "binary index types use the Hamming metric, not \"%.40s\"", metric);
        return fpx_engine_create_binary(factory, dim, eng, err);
    }
    if (metric && !strcmp(metric, "Hamming"))
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "the Hamming metric needs a binary index type (BFlat, BIVF<n>, ...)");
    if (fpx_index_resolve_type(index_type, metric, &factory, &m, err))
        return -1;
    if (metric_arg && (m == FPX_METRIC_L2 || m == FPX_METRIC_IP))
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "metric_arg applies to the metrics L1, Linf, Lp, Canberra, "
                           "BrayCurtis and JensenShannon (FAISS does not keep it with %s)",
                           fpx_metric_name(m));
    if (create_check && create_check(factory, dim, (int)m, err))
        return -1;
    return fpx_engine_create_metric(factory, dim, m, metric_arg ? *metric_arg : 0, eng, err);
}

void fpx_index_factory_train_params(fpx_index *ix) {
    if (fpx_engine_is_trained(ix->eng))
        return;
    const char *metric = fpx_metric_name(ix->metric);
    fpx_engine *fresh;
    fpx_err e;
    if (make_engine(ix->index_type, ix->dim, metric, NULL, &fresh, &e) == 0) {
        fpx_engine_copy_train_params(ix->eng, fresh);
        fpx_engine_free(fresh);
    }
}

int fpx_index_new(const char *tenant, const char *name, const char *index_type, int64_t dim,
                  const char *metric, fpx_index **out, fpx_err *err) {
    return fpx_index_new_metric(tenant, name, index_type, dim, metric, NULL, out, err);
}

int fpx_index_new_metric(const char *tenant, const char *name, const char *index_type, int64_t dim,
                         const char *metric, const double *metric_arg, fpx_index **out,
                         fpx_err *err) {
    fpx_engine *eng;
    if (make_engine(index_type, dim, metric, metric_arg, &eng, err))
        return -1;
    fpx_index *ix = fpx_index_alloc(tenant, name, index_type, strlen(index_type), eng);
    if (!ix)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    *out = ix;
    return 0;
}

/* Frees every slot's key and metadata, leaving the tables (if any) empty. */
static void clear_blobs(fpx_index *ix) {
    for (int64_t s = 0; s < ix->nslots; s++) {
        if (ix->keys) {
            free(ix->keys[s]);
            ix->keys[s] = NULL;
        }
        if (ix->meta) {
            free(ix->meta[s]);
            ix->meta[s] = NULL;
        }
    }
}

void fpx_index_merge_todo_clear(fpx_index *ix) {
    for (fpx_merge_todo *t = ix->merge_todo, *next; t; t = next) {
        next = t->next;
        free(t);
    }
    ix->merge_todo = NULL;
}

void fpx_index_free(fpx_index *ix) {
    if (!ix)
        return;
    clear_blobs(ix);
    free(ix->keys);
    free(ix->meta);
    free(ix->labels);
    free(ix->alive);
    fpx_slotmap_free(&ix->keymap);
    fpx_slotmap_free(&ix->labelmap);
    fpx_engine_free(ix->eng);
    free(ix->index_type);
    free(ix->placement);
    fpx_index_merge_todo_clear(ix);
    pthread_rwlock_destroy(&ix->lock);
    pthread_cond_destroy(&ix->gate_cv);
    pthread_mutex_destroy(&ix->gate_mu);
    fpx_batcher_destroy(&ix->batch);
    if (ix->log_fd >= 0)
        close(ix->log_fd);
    pthread_mutex_destroy(&ix->sync_mu);
    pthread_cond_destroy(&ix->sync_cv);
    free(ix);
}

/* ---- capacity ------------------------------------------------------------------ */

/* Grows the table *t from oldcap elements to cap, the new ones zeroed: when it
 * exists and cap is larger, or when it does not exist yet and is wanted.
 * 0, or -1 (out of memory) with *t as it was. */
/* A writer holds gate_mu while it waits for the lock, so a long read that
 * begins meanwhile waits for that writer first and never has one queued
 * behind it; writers that come later wait on gate_cv, outside the lock. */
void fpx_index_lock_write(fpx_index *ix) {
    pthread_mutex_lock(&ix->gate_mu);
    while (ix->long_reads)
        pthread_cond_wait(&ix->gate_cv, &ix->gate_mu);
    pthread_rwlock_wrlock(&ix->lock);
    pthread_mutex_unlock(&ix->gate_mu);
}

void fpx_index_long_read_begin(fpx_index *ix) {
    pthread_mutex_lock(&ix->gate_mu);
    ix->long_reads++;
    pthread_mutex_unlock(&ix->gate_mu);
    pthread_rwlock_rdlock(&ix->lock);
}

void fpx_index_long_read_end(fpx_index *ix) {
    pthread_rwlock_unlock(&ix->lock);
    pthread_mutex_lock(&ix->gate_mu);
    if (--ix->long_reads == 0)
        pthread_cond_broadcast(&ix->gate_cv);
    pthread_mutex_unlock(&ix->gate_mu);
}

static int grow_table(void **t, size_t elem, int64_t oldcap, int64_t cap, int want) {
    if (*t ? cap <= oldcap : !want)
        return 0;
    int64_t from = *t ? oldcap : 0;
    void *q = realloc(*t, (size_t)cap * elem);
    if (!q)
        return -1;
    memset((uint8_t *)q + (size_t)from * elem, 0, (size_t)(cap - from) * elem);
    *t = q;
    return 0;
}

int fpx_index_reserve(fpx_index *ix, int64_t need, int want_keys, int want_meta) {
    int64_t cap = ix->cap;
    if (need > cap) {
        cap = cap ? cap : 64;
        while (cap < need)
            cap = cap < ((int64_t)1 << 40) ? cap * 2 : need;
        cap = (cap + 63) & ~(int64_t)63;
    }
    /* alive is sized in whole words (and always exists); the others by slot.
     * What grew before a failure is kept: realloc may have moved it. */
    void *a = ix->alive, *l = ix->labels, *k = ix->keys, *m = ix->meta;
    int rc = grow_table(&a, sizeof(uint64_t), (int64_t)fpx_words_for(ix->cap),
                        (int64_t)fpx_words_for(cap), 1);
    if (rc == 0)
        rc = grow_table(&l, sizeof(int64_t), ix->cap, cap, 0);
    if (rc == 0)
        rc = grow_table(&k, sizeof(fpx_blob *), ix->cap, cap, want_keys);
    if (rc == 0)
        rc = grow_table(&m, sizeof(fpx_blob *), ix->cap, cap, want_meta);
    ix->alive = a;
    ix->labels = l;
    ix->keys = k;
    ix->meta = m;
    if (rc)
        return -1;
    ix->cap = cap;
    return 0;
}

int fpx_index_label_table(fpx_index *ix, const void *given, int64_t extra) {
    int64_t *labels = malloc((size_t)(ix->cap ? ix->cap : 1) * sizeof *labels);
    if (!labels || fpx_slotmap_reserve(&ix->labelmap, (size_t)(ix->nlive + extra)) != 0) {
        free(labels);
        return -1;
    }
    for (int64_t s = 0; s < ix->cap; s++)
        labels[s] = s;
    if (given)
        memcpy(labels, given, (size_t)ix->nslots * sizeof *labels);
    ix->labels = labels;
    for (int64_t s = 0; s < ix->nslots; s++) {
        if (!fpx_bit_get(ix->alive, s))
            continue;
        uint64_t h = fpx_hash_i64(labels[s]);
        if (given && find_label_h(ix, labels[s], h) >= 0)
            return 1;
        fpx_slotmap_put(&ix->labelmap, h, s);
    }
    return 0;
}

/*
 * Makes slot s (== nslots, with room in the tables) live under label, taking
 * its key k and metadata m (NULL: none). The vector that held k, and with
 * replace the one that held label, is tombstoned first: a key or a label
 * names one vector. Cannot fail.
 */
static void occupy(fpx_index *ix, int64_t s, int64_t label, int replace, fpx_blob *k, fpx_blob *m) {
    /* Each hash once, for the lookup and the insert. */
    uint64_t hl = ix->labels ? fpx_hash_i64(label) : 0, hk = k ? fpx_key_hash(k) : 0;
    if (replace) {
        int64_t old = find_label_h(ix, label, hl);
        if (old >= 0)
            tombstone(ix, old);
    }
    if (k) {
        int64_t old = fpx_index_find_key(ix, k, hk);
        if (old >= 0)
            tombstone(ix, old);
    }
    fpx_bit_set(ix->alive, s);
    ix->nlive++;
    ix->nslots = s + 1;
    if (ix->labels) {
        ix->labels[s] = label;
        fpx_slotmap_put(&ix->labelmap, hl, s);
    }
    if (k)
        fpx_index_put_key(ix, s, k, hk);
    if (m)
        ix->meta[s] = m;
    if (label >= ix->next_label)
        ix->next_label = label + 1;
}

void fpx_index_occupy(fpx_index *ix, int64_t s, int64_t label) {
    occupy(ix, s, label, 0, NULL, NULL);
}

int fpx_index_import(const char *tenant, const char *name, const char *index_type, fpx_engine *eng,
                     const int64_t *labels, fpx_index **out, fpx_err *err) {
    fpx_index *ix = fpx_index_alloc(tenant, name, index_type, strlen(index_type), eng);
    if (!ix)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    int64_t n = fpx_engine_ntotal(eng);
    if (fpx_index_reserve(ix, n, 0, 0) || (labels && fpx_index_label_table(ix, NULL, n))) {
        fpx_index_free(ix);
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory importing an index");
    }
    /* a repeated label keeps the last of its vectors */
    for (int64_t s = 0; s < n; s++)
        occupy(ix, s, labels ? labels[s] : s, labels != NULL, NULL, NULL);
    fpx_index_factory_train_params(ix);
    *out = ix;
    return 0;
}

/* ---- add ------------------------------------------------------------------------- */

int fpx_index_check_item(const msgpack_object *it, const char *what, uint32_t i, fpx_err *err) {
    if (it->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (it->type != MSGPACK_OBJECT_MAP)
        return fpx_err_set(err, FPX_E_VALIDATION, "%s[%u] must be a map or nil", what, i);
    const msgpack_object *id = fpx_map_get(it, "id");
    if (id && id->type != MSGPACK_OBJECT_NIL) {
        if (id->type == MSGPACK_OBJECT_STR) {
            if (id->via.str.size == 0 || id->via.str.size > FPX_KEY_MAX_BYTES)
                return fpx_err_set(err, FPX_E_VALIDATION, "%s[%u].id: string ids are 1..%d bytes",
                                   what, i, FPX_KEY_MAX_BYTES);
        } else if (id->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
                   id->type != MSGPACK_OBJECT_NEGATIVE_INTEGER) {
            return fpx_err_set(err, FPX_E_VALIDATION, "%s[%u].id must be a string or an integer",
                               what, i);
        }
    }
    const msgpack_object *md = fpx_map_get(it, "metadata");
    if (md && md->type != MSGPACK_OBJECT_NIL && md->type != MSGPACK_OBJECT_MAP)
        return fpx_err_set(err, FPX_E_VALIDATION, "%s[%u].metadata must be a map", what, i);
    return 0;
}

int fpx_index_check_items(const msgpack_object *items, int64_t n, fpx_err *err) {
    if (!items || items->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (items->type != MSGPACK_OBJECT_ARRAY)
        return fpx_err_set(
            err, FPX_E_VALIDATION,
            "metadata must be a list of {\"id\", \"metadata\"} maps, one per vector");
    /* Keys and metadata come back in search replies: only valid UTF-8 strings
     * may go in, or a strict client could not read its own results. */
    if (!fpx_obj_utf8_valid(items))
        return fpx_err_set(err, FPX_E_VALIDATION, "metadata strings must be valid UTF-8");
    if ((int64_t)items->via.array.size != n)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "metadata has %u entries for %lld vectors; it needs one per vector",
                           items->via.array.size, (long long)n);
    for (uint32_t i = 0; i < items->via.array.size; i++)
        if (fpx_index_check_item(&items->via.array.ptr[i], "metadata", i, err))
            return -1;
    return 0;
}

static void free_blobs(fpx_blob **b, int64_t n) {
    if (!b)
        return;
    for (int64_t i = 0; i < n; i++)
        free(b[i]);
    free(b);
}

/* Canonical key and metadata blobs of every item, made before any change. */
static int prepare_items(const msgpack_object *items, int64_t n, fpx_blob ***kb, fpx_blob ***mb,
                         int *any_key, int *any_meta) {
    *kb = *mb = NULL;
    *any_key = *any_meta = 0;
    if (!items || items->type != MSGPACK_OBJECT_ARRAY || n == 0)
        return 0;
    *kb = calloc((size_t)n, sizeof **kb);
    *mb = calloc((size_t)n, sizeof **mb);
    if (!*kb || !*mb)
        goto oom;
    for (int64_t i = 0; i < n; i++) {
        const msgpack_object *it = &items->via.array.ptr[i];
        if (it->type != MSGPACK_OBJECT_MAP)
            continue;
        const msgpack_object *id = fpx_map_get(it, "id");
        const msgpack_object *md = fpx_map_get(it, "metadata");
        if (id && id->type != MSGPACK_OBJECT_NIL) {
            if (!((*kb)[i] = fpx_blob_pack(id)))
                goto oom;
            *any_key = 1;
        }
        if (md && md->type == MSGPACK_OBJECT_MAP) {
            if (!((*mb)[i] = fpx_blob_pack(md)))
                goto oom;
            *any_meta = 1;
        }
    }
    return 0;
oom:
    free_blobs(*kb, n);
    free_blobs(*mb, n);
    *kb = *mb = NULL;
    return -1;
}

static int index_add(fpx_index *ix, int64_t n, const void *x, const int64_t *labels,
                     const msgpack_object *items, int64_t *added, fpx_err *err) {
    *added = 0;
    if (n == 0)
        return 0;
    if (!fpx_engine_is_trained(ix->eng))
        return fpx_err_set(err, FPX_E_NOT_TRAINED,
                           "index '%s' is not trained: call train before adding vectors", ix->name);
    for (int64_t i = 0; labels && i < n; i++)
        if (labels[i] < 0)
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "labels must be >= 0 (label %lld at row %lld)", (long long)labels[i],
                               (long long)i);

    /* Phase 1: everything that can fail, with no visible change. */
    fpx_blob **kb, **mb;
    int any_key, any_meta;
    if (prepare_items(items, n, &kb, &mb, &any_key, &any_meta))
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory preparing keys and metadata");
    int64_t base = ix->nslots;
    int breaks_identity = 0;
    for (int64_t i = 0; labels && !ix->labels && i < n; i++)
        breaks_identity |= labels[i] != base + i;
    int rc = fpx_index_reserve(ix, base + n, any_key, any_meta);
    if (rc == 0 && any_key)
        rc = fpx_slotmap_reserve(&ix->keymap, (size_t)n);
    if (rc == 0 && breaks_identity)
        rc = fpx_index_label_table(ix, NULL, n);
    else if (rc == 0 && ix->labels)
        rc = fpx_slotmap_reserve(&ix->labelmap, (size_t)n);
    if (rc != 0) {
        free_blobs(kb, n);
        free_blobs(mb, n);
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory growing the tables of '%s'",
                           ix->name);
    }
    if (fpx_engine_add(ix->eng, n, x, err)) {
        free_blobs(kb, n);
        free_blobs(mb, n);
        return -1;
    }

    /* Phase 2: commit; nothing below can fail. */
    for (int64_t i = 0; i < n; i++)
        occupy(ix, base + i, labels ? labels[i] : ix->next_label, labels != NULL, kb ? kb[i] : NULL,
               mb ? mb[i] : NULL);
    free(kb); /* the blobs now belong to the tables */
    free(mb);
    *added = n;
    return 0;
}

int fpx_index_add(fpx_index *ix, int64_t n, const void *x, const int64_t *labels,
                  const msgpack_object *items, int64_t *added, fpx_err *err) {
    /* The labels follow the rows in a message or a log record: after binary rows of a
     * size that is not a multiple of 8 they are not aligned for int64_t loads. */
    if (!labels || n <= 0 || (uintptr_t)labels % _Alignof(int64_t) == 0)
        return index_add(ix, n, x, labels, items, added, err);
    int64_t *copy = malloc((size_t)n * sizeof *copy);
    if (!copy) {
        *added = 0;
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory copying the labels");
    }
    memcpy(copy, labels, (size_t)n * sizeof *copy);
    int rc = index_add(ix, n, x, copy, items, added, err);
    free(copy);
    return rc;
}

int fpx_index_train(fpx_index *ix, int64_t n, const void *x, fpx_err *err) {
    return fpx_engine_train(ix->eng, n, x, err);
}

/* ---- delete ---------------------------------------------------------------------- */

static int delete_one(fpx_index *ix, const msgpack_object *id, int64_t *deleted, fpx_err *err) {
    int is_int =
        id->type == MSGPACK_OBJECT_POSITIVE_INTEGER || id->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
    if (id->type != MSGPACK_OBJECT_STR && !is_int)
        return fpx_err_set(err, FPX_E_VALIDATION, "vector ids must be strings or integers");
    if (ix->keys) {
        fpx_blob *k = fpx_blob_pack(id);
        if (!k)
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
        int64_t s = fpx_index_find_key(ix, k, fpx_key_hash(k));
        free(k);
        if (s >= 0) {
            tombstone(ix, s);
            (*deleted)++;
            return 0;
        }
    }
    if (is_int) {
        int64_t label;
        if (fpx_obj_int(id, &label) == 0) {
            int64_t s = find_label(ix, label);
            if (s >= 0) {
                tombstone(ix, s);
                (*deleted)++;
            }
        }
    }
    return 0;
}

int fpx_index_delete(fpx_index *ix, const msgpack_object *ids, int64_t *deleted, fpx_err *err) {
    *deleted = 0;
    if (ids->type != MSGPACK_OBJECT_ARRAY)
        return delete_one(ix, ids, deleted, err);
    /* Validate every id first, so a bad one in the middle changes nothing. */
    for (uint32_t i = 0; i < ids->via.array.size; i++) {
        msgpack_object_type t = ids->via.array.ptr[i].type;
        if (t != MSGPACK_OBJECT_STR && t != MSGPACK_OBJECT_POSITIVE_INTEGER &&
            t != MSGPACK_OBJECT_NEGATIVE_INTEGER)
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "vector_ids[%u] must be a string or an integer", i);
    }
    for (uint32_t i = 0; i < ids->via.array.size; i++)
        if (delete_one(ix, &ids->via.array.ptr[i], deleted, err))
            return -1; /* only out of memory gets here */
    return 0;
}

int fpx_index_type_has_idmap(const char *t) {
    /* FAISS's factory takes the wrapper as a prefix or as a suffix */
    size_t n = strlen(t);
    if (!strncmp(t, "IDMap2,", 7) || (n > 7 && !strcmp(t + n - 7, ",IDMap2")))
        return 2;
    return !strncmp(t, "IDMap,", 6) || (n > 6 && !strcmp(t + n - 6, ",IDMap"));
}

int64_t fpx_index_slot_of(const fpx_index *ix, int64_t label) {
    return find_label(ix, label);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* How many of the sorted v[0..n) are below x. */
static int64_t count_below(const int64_t *v, int64_t n, int64_t x) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (v[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int fpx_index_remove(fpx_index *ix, int64_t n, const int64_t *labels, int64_t lo, int64_t hi,
                     int64_t *removed, fpx_err *err) {
    *removed = 0;
    if (fpx_engine_check_remove(ix->eng, err))
        return -1;
    int renumber =
        fpx_engine_remove_renumbers(ix->eng) && !fpx_index_type_has_idmap(ix->index_type);

    /* Phase 1: the slots to remove, and (renumbering) the new label table. */
    int64_t cnt = 0;
    int64_t *slots = malloc(sizeof(int64_t) * (size_t)(ix->nlive ? ix->nlive : 1));
    if (!slots)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    if (labels) {
        for (int64_t i = 0; i < n; i++) {
            int64_t s = find_label(ix, labels[i]);
            int seen = 0;
            for (int64_t j = 0; s >= 0 && j < cnt && !seen; j++)
                seen = slots[j] == s;
            if (s >= 0 && !seen)
                slots[cnt++] = s;
        }
    } else {
        for (int64_t s = 0; s < ix->nslots; s++) {
            int64_t l = fpx_index_label_of(ix, s);
            if (fpx_bit_get(ix->alive, s) && l >= lo && l < hi)
                slots[cnt++] = s;
        }
    }
    int64_t *gone = NULL, *newlabels = NULL;
    fpx_slotmap newmap;
    fpx_slotmap_init(&newmap);
    if (renumber && cnt > 0) {
        gone = malloc(sizeof(int64_t) * (size_t)cnt);
        newlabels = malloc(sizeof(int64_t) * (size_t)(ix->cap ? ix->cap : 1));
        if (!gone || !newlabels || fpx_slotmap_reserve(&newmap, (size_t)(ix->nlive - cnt))) {
            free(slots);
            free(gone);
            free(newlabels);
            fpx_slotmap_free(&newmap);
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
        }
        for (int64_t j = 0; j < cnt; j++)
            gone[j] = fpx_index_label_of(ix, slots[j]);
        qsort(gone, (size_t)cnt, sizeof *gone, cmp_i64);
    }

    /* Phase 2: commit. */
    for (int64_t j = 0; j < cnt; j++)
        tombstone(ix, slots[j]);
    if (renumber && cnt > 0) {
        /* FAISS compacts these types: every later vector moves down. */
        int64_t top = -1;
        for (int64_t s = 0; s < ix->cap; s++)
            newlabels[s] = -1;
        for (int64_t s = 0; s < ix->nslots; s++) {
            if (!fpx_bit_get(ix->alive, s))
                continue;
            int64_t l = fpx_index_label_of(ix, s);
            newlabels[s] = l - count_below(gone, cnt, l);
            if (newlabels[s] > top)
                top = newlabels[s];
        }
        free(ix->labels);
        fpx_slotmap_free(&ix->labelmap);
        ix->labels = newlabels;
        ix->labelmap = newmap;
        for (int64_t s = 0; s < ix->nslots; s++)
            if (fpx_bit_get(ix->alive, s))
                fpx_slotmap_put(&ix->labelmap, fpx_hash_i64(newlabels[s]), s);
        ix->next_label = top + 1;
    }
    free(gone);
    free(slots);
    *removed = cnt;
    return 0;
}

int fpx_index_reset(fpx_index *ix, fpx_err *err) {
    if (fpx_engine_reset(ix->eng, err))
        return -1;
    clear_blobs(ix);
    if (ix->alive) /* an index that never held a vector has no bitmap yet */
        memset(ix->alive, 0, fpx_words_for(ix->cap) * sizeof(uint64_t));
    free(ix->labels);
    ix->labels = NULL;
    fpx_slotmap_free(&ix->keymap);
    fpx_slotmap_free(&ix->labelmap);
    fpx_slotmap_init(&ix->keymap);
    fpx_slotmap_init(&ix->labelmap);
    ix->nslots = ix->nlive = ix->nkeys = ix->next_label = 0;
    return 0;
}

fpx_bitset fpx_index_live(const fpx_index *ix) {
    fpx_bitset b = {ix->alive, ix->nslots, ix->nlive};
    return b;
}

int fpx_index_export(const fpx_index *ix, uint8_t **buf, size_t *len, fpx_err *err) {
    fpx_bitset live = fpx_index_live(ix);
    return fpx_engine_export(ix->eng, &live, ix->labels, fpx_index_type_has_idmap(ix->index_type),
                             buf, len, err);
}

/* ---- invariants ------------------------------------------------------------------- */

int fpx_index_check(const fpx_index *ix, fpx_err *err) {
    if (ix->nslots != fpx_engine_ntotal(ix->eng) || ix->dim != fpx_engine_dim(ix->eng))
        return fpx_err_set(err, FPX_E_INTERNAL, "nslots %lld, dim %lld; the engine has %lld, %lld",
                           (long long)ix->nslots, (long long)ix->dim,
                           (long long)fpx_engine_ntotal(ix->eng),
                           (long long)fpx_engine_dim(ix->eng));
    if (ix->nslots < 0 || ix->nslots > ix->cap || (ix->nslots > 0 && !ix->alive))
        return fpx_err_set(err, FPX_E_INTERNAL, "nslots %lld does not fit capacity %lld",
                           (long long)ix->nslots, (long long)ix->cap);
    /* no bit set past nslots: a later add would find a slot alive already */
    for (int64_t s = ix->nslots; ix->alive && s < (int64_t)fpx_words_for(ix->cap) * 64; s++)
        if (fpx_bit_get(ix->alive, s))
            return fpx_err_set(err, FPX_E_INTERNAL, "slot %lld beyond nslots is alive",
                               (long long)s);
    int64_t live = 0, keyed = 0, top = -1;
    for (int64_t s = 0; s < ix->nslots; s++) {
        int64_t label = fpx_index_label_of(ix, s);
        const fpx_blob *k = ix->keys ? ix->keys[s] : NULL;
        const fpx_blob *m = ix->meta ? ix->meta[s] : NULL;
        if (!fpx_bit_get(ix->alive, s)) {
            if (k || m)
                return fpx_err_set(err, FPX_E_INTERNAL, "dead slot %lld keeps a key or metadata",
                                   (long long)s);
            if (ix->labels && find_label(ix, label) == s)
                return fpx_err_set(err, FPX_E_INTERNAL, "dead slot %lld is reachable by label",
                                   (long long)s);
            continue;
        }
        live++;
        if (label < 0)
            return fpx_err_set(err, FPX_E_INTERNAL, "live slot %lld has label %lld", (long long)s,
                               (long long)label);
        if (find_label(ix, label) != s)
            return fpx_err_set(err, FPX_E_INTERNAL, "label %lld does not map to its slot %lld",
                               (long long)label, (long long)s);
        if (label > top)
            top = label;
        if (k) {
            keyed++;
            if (fpx_index_find_key(ix, k, fpx_key_hash(k)) != s)
                return fpx_err_set(err, FPX_E_INTERNAL, "the key of slot %lld maps elsewhere",
                                   (long long)s);
        }
    }
    if (live != ix->nlive)
        return fpx_err_set(err, FPX_E_INTERNAL, "nlive %lld, but %lld slots are alive",
                           (long long)ix->nlive, (long long)live);
    if (keyed != ix->nkeys || ix->keymap.count != (size_t)keyed)
        return fpx_err_set(err, FPX_E_INTERNAL, "nkeys %lld, key map %zu, keyed live slots %lld",
                           (long long)ix->nkeys, ix->keymap.count, (long long)keyed);
    if (ix->labelmap.count != (size_t)(ix->labels ? live : 0))
        return fpx_err_set(err, FPX_E_INTERNAL, "label map holds %zu entries for %lld live slots",
                           ix->labelmap.count, (long long)(ix->labels ? live : 0));
    if (ix->next_label <= top || (!ix->labels && ix->next_label != ix->nslots))
        return fpx_err_set(err, FPX_E_INTERNAL, "next_label %lld; top live label %lld, %lld slots",
                           (long long)ix->next_label, (long long)top, (long long)ix->nslots);
    return 0;
}
