/*
 * index.c - one index in memory: slots, tombstones, labels, keys, metadata,
 * filtered search and the snapshot encoding of all of it. See index.h.
 *
 * Keys and metadata are stored as canonical msgpack (re-packed by msgpack-c,
 * so every integer and string has its shortest encoding). Two keys are then
 * equal exactly when their bytes are, and an equality filter compares a
 * field's encoded bytes with the filter value's encoded bytes without
 * decoding any stored metadata.
 */
#include "index.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#define FPX_KEY_MAX_BYTES 1024

/* ---- small helpers ---------------------------------------------------------- */

static int bit_get(const uint64_t *w, int64_t i) {
    return (int)((w[i >> 6] >> (i & 63)) & 1u);
}
static void bit_set(uint64_t *w, int64_t i) {
    w[i >> 6] |= (uint64_t)1 << (i & 63);
}
static void bit_clear(uint64_t *w, int64_t i) {
    w[i >> 6] &= ~((uint64_t)1 << (i & 63));
}
static size_t words_for(int64_t nbits) {
    return (size_t)((nbits + 63) / 64);
}

static fpx_blob *blob_new(const void *p, size_t n) {
    if (n > UINT32_MAX)
        return NULL;
    fpx_blob *b = malloc(sizeof *b + (n ? n : 1));
    if (!b)
        return NULL;
    b->len = (uint32_t)n;
    memcpy(b->data, p, n);
    return b;
}

/* Canonical msgpack bytes of an object, as a blob. */
static fpx_blob *blob_pack(const msgpack_object *o) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fpx_blob *b = NULL;
    if (msgpack_pack_object(&pk, *o) == 0)
        b = blob_new(sb.data, sb.size);
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

static int64_t find_key(const fpx_index *ix, const fpx_blob *k) {
    if (!ix->keys)
        return -1;
    return fpx_slotmap_get(&ix->keymap, fpx_hash_bytes(k->data, k->len), k->data, k->len, key_eq,
                           ix);
}

static int64_t find_label(const fpx_index *ix, int64_t label) {
    if (!ix->labels) {
        if (label >= 0 && label < ix->nslots && bit_get(ix->alive, label))
            return label;
        return -1;
    }
    return fpx_slotmap_get(&ix->labelmap, fpx_hash_i64(label), &label, sizeof label, label_eq, ix);
}

int64_t fpx_index_label_of(const fpx_index *ix, int64_t slot) {
    if (slot < 0)
        return -1;
    return ix->labels ? ix->labels[slot] : slot;
}

/* Tombstones a live slot: it stays in FAISS but is never returned again. */
static void tombstone(fpx_index *ix, int64_t slot) {
    bit_clear(ix->alive, slot);
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
        int given;
        if (!strcmp(metric, "L2"))
            given = FPX_METRIC_L2;
        else if (!strcmp(metric, "IP"))
            given = FPX_METRIC_IP;
        else
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "metric must be \"L2\" or \"IP\", got \"%.40s\"", metric);
        if (fixed >= 0 && given != fixed)
            return fpx_err_set(err, FPX_E_VALIDATION, "index_type %s contradicts metric %s",
                               index_type, metric);
        m = given;
    }
    *out = (fpx_metric)m;
    return 0;
}

/* A new index around eng (taken, also on failure), with empty tables. */
static fpx_index *index_alloc(const char *tenant, const char *name, const char *type, size_t tlen,
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
    ix->eng = eng;
    /* Writers first: with glibc's default (readers first) a steady stream of
     * searches could hold an add off for ever. Searches wait only while a
     * write is queued or running. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ix->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    fpx_batcher_init(&ix->batch);
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

int fpx_index_new(const char *tenant, const char *name, const char *index_type, int64_t dim,
                  const char *metric, fpx_index **out, fpx_err *err) {
    const char *factory = binary_factory(index_type);
    fpx_metric m;
    fpx_engine *eng;
    if (factory) {
        if (metric && strcmp(metric, "Hamming"))
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "binary index types use the Hamming metric, not \"%.40s\"", metric);
        if (fpx_engine_create_binary(factory, dim, &eng, err))
            return -1;
    } else if (metric && !strcmp(metric, "Hamming")) {
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "the Hamming metric needs a binary index type (BFlat, BIVF<n>, ...)");
    } else if (fpx_index_resolve_type(index_type, metric, &factory, &m, err) ||
               fpx_engine_create(factory, dim, m, &eng, err)) {
        return -1;
    }
    fpx_index *ix = index_alloc(tenant, name, index_type, strlen(index_type), eng);
    if (!ix)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    *out = ix;
    return 0;
}

void fpx_index_free(fpx_index *ix) {
    if (!ix)
        return;
    for (int64_t s = 0; s < ix->nslots; s++) {
        if (ix->keys)
            free(ix->keys[s]);
        if (ix->meta)
            free(ix->meta[s]);
    }
    free(ix->keys);
    free(ix->meta);
    free(ix->labels);
    free(ix->alive);
    fpx_slotmap_free(&ix->keymap);
    fpx_slotmap_free(&ix->labelmap);
    fpx_engine_free(ix->eng);
    free(ix->index_type);
    pthread_rwlock_destroy(&ix->lock);
    fpx_batcher_destroy(&ix->batch);
    free(ix);
}

/* ---- capacity ------------------------------------------------------------------ */

static int grow_array(void **p, size_t elem, int64_t oldcap, int64_t newcap) {
    void *q = realloc(*p, (size_t)newcap * elem);
    if (!q)
        return -1;
    memset((uint8_t *)q + (size_t)oldcap * elem, 0, (size_t)(newcap - oldcap) * elem);
    *p = q;
    return 0;
}

/* Room for `need` slots in every table that exists (and in the ones asked for). */
static int ensure_cap(fpx_index *ix, int64_t need, int want_keys, int want_meta) {
    int64_t cap = ix->cap;
    if (need > cap) {
        cap = cap ? cap : 64;
        while (cap < need)
            cap = cap < ((int64_t)1 << 40) ? cap * 2 : need;
        cap = (cap + 63) & ~(int64_t)63;
    }
    /* alive is sized in whole words; the others by slot. */
    if (cap > ix->cap || !ix->alive) {
        void *a = ix->alive;
        if (grow_array(&a, sizeof(uint64_t), (int64_t)words_for(ix->cap), (int64_t)words_for(cap)))
            return -1;
        ix->alive = a;
    }
    if (ix->labels && cap > ix->cap) {
        void *l = ix->labels;
        if (grow_array(&l, sizeof(int64_t), ix->cap, cap))
            return -1;
        ix->labels = l;
    }
    if ((ix->keys && cap > ix->cap) || (!ix->keys && want_keys)) {
        void *k = ix->keys;
        if (grow_array(&k, sizeof(fpx_blob *), ix->keys ? ix->cap : 0, cap))
            return -1;
        ix->keys = k;
    }
    if ((ix->meta && cap > ix->cap) || (!ix->meta && want_meta)) {
        void *m = ix->meta;
        if (grow_array(&m, sizeof(fpx_blob *), ix->meta ? ix->cap : 0, cap))
            return -1;
        ix->meta = m;
    }
    ix->cap = cap;
    return 0;
}

/* Leaves identity mode: builds the label table and the label map. */
static int build_label_table(fpx_index *ix, int64_t extra) {
    int64_t *labels = malloc((size_t)(ix->cap ? ix->cap : 1) * sizeof *labels);
    if (!labels || fpx_slotmap_reserve(&ix->labelmap, (size_t)(ix->nlive + extra)) != 0) {
        free(labels);
        return -1;
    }
    for (int64_t s = 0; s < ix->cap; s++)
        labels[s] = s;
    ix->labels = labels;
    for (int64_t s = 0; s < ix->nslots; s++)
        if (bit_get(ix->alive, s))
            fpx_slotmap_put(&ix->labelmap, fpx_hash_i64(s), s);
    return 0;
}

int fpx_index_import(const char *tenant, const char *name, const char *index_type, fpx_engine *eng,
                     const int64_t *labels, fpx_index **out, fpx_err *err) {
    fpx_index *ix = index_alloc(tenant, name, index_type, strlen(index_type), eng);
    if (!ix)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    int64_t n = fpx_engine_ntotal(eng);
    if (ensure_cap(ix, n, 0, 0) || (labels && build_label_table(ix, n))) {
        fpx_index_free(ix);
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory importing an index");
    }
    for (int64_t s = 0; s < n; s++) {
        int64_t label = labels ? labels[s] : s;
        if (labels) {
            /* a label names one vector: a repeated one keeps the last */
            int64_t old = find_label(ix, label);
            if (old >= 0)
                tombstone(ix, old);
            ix->labels[s] = label;
            fpx_slotmap_put(&ix->labelmap, fpx_hash_i64(label), s);
        }
        bit_set(ix->alive, s);
        ix->nlive++;
        ix->nslots = s + 1;
        if (label >= ix->next_label)
            ix->next_label = label + 1;
    }
    *out = ix;
    return 0;
}

/* ---- add ------------------------------------------------------------------------- */

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
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        const msgpack_object *it = &items->via.array.ptr[i];
        if (it->type == MSGPACK_OBJECT_NIL)
            continue;
        if (it->type != MSGPACK_OBJECT_MAP)
            return fpx_err_set(err, FPX_E_VALIDATION, "metadata[%u] must be a map or nil", i);
        const msgpack_object *id = fpx_map_get(it, "id");
        if (id && id->type != MSGPACK_OBJECT_NIL) {
            if (id->type == MSGPACK_OBJECT_STR) {
                if (id->via.str.size == 0 || id->via.str.size > FPX_KEY_MAX_BYTES)
                    return fpx_err_set(err, FPX_E_VALIDATION,
                                       "metadata[%u].id: string ids are 1..%d bytes", i,
                                       FPX_KEY_MAX_BYTES);
            } else if (id->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
                       id->type != MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                return fpx_err_set(err, FPX_E_VALIDATION,
                                   "metadata[%u].id must be a string or an integer", i);
            }
        }
        const msgpack_object *md = fpx_map_get(it, "metadata");
        if (md && md->type != MSGPACK_OBJECT_NIL && md->type != MSGPACK_OBJECT_MAP)
            return fpx_err_set(err, FPX_E_VALIDATION, "metadata[%u].metadata must be a map", i);
    }
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
            if (!((*kb)[i] = blob_pack(id)))
                goto oom;
            *any_key = 1;
        }
        if (md && md->type == MSGPACK_OBJECT_MAP) {
            if (!((*mb)[i] = blob_pack(md)))
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

int fpx_index_add(fpx_index *ix, int64_t n, const void *x, const int64_t *labels,
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
    int rc = ensure_cap(ix, base + n, any_key, any_meta);
    if (rc == 0 && any_key)
        rc = fpx_slotmap_reserve(&ix->keymap, (size_t)n);
    if (rc == 0 && breaks_identity)
        rc = build_label_table(ix, n);
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
    for (int64_t i = 0; i < n; i++) {
        int64_t s = base + i;
        int64_t label = labels ? labels[i] : ix->next_label;
        if (labels) {
            int64_t old = find_label(ix, label);
            if (old >= 0)
                tombstone(ix, old);
        }
        fpx_blob *k = kb ? kb[i] : NULL;
        if (k) {
            int64_t old = find_key(ix, k);
            if (old >= 0)
                tombstone(ix, old);
        }
        bit_set(ix->alive, s);
        ix->nlive++;
        ix->nslots = s + 1;
        if (ix->labels) {
            ix->labels[s] = label;
            fpx_slotmap_put(&ix->labelmap, fpx_hash_i64(label), s);
        }
        if (k) {
            ix->keys[s] = k;
            fpx_slotmap_put(&ix->keymap, fpx_hash_bytes(k->data, k->len), s);
            ix->nkeys++;
        }
        if (mb && mb[i])
            ix->meta[s] = mb[i];
        if (label >= ix->next_label)
            ix->next_label = label + 1;
    }
    free(kb); /* the blobs now belong to the tables */
    free(mb);
    *added = n;
    return 0;
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
        fpx_blob *k = blob_pack(id);
        if (!k)
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
        int64_t s = find_key(ix, k);
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
    int renumber = fpx_engine_remove_renumbers(ix->eng) && strncmp(ix->index_type, "IDMap", 5);

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
            if (bit_get(ix->alive, s) && l >= lo && l < hi)
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
            if (!bit_get(ix->alive, s))
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
            if (bit_get(ix->alive, s))
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
    memset(ix->alive, 0, words_for(ix->cap) * sizeof(uint64_t));
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

/* ---- search ---------------------------------------------------------------------- */

typedef struct filter_field {
    const char *name;
    size_t name_len;
    fpx_blob *value; /* canonical encoding */
} filter_field;

int fpx_index_check_filter(const msgpack_object *filter, fpx_err *err) {
    if (!filter || filter->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (filter->type != MSGPACK_OBJECT_MAP)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "the search filter (metadata section) must be a map of field: value");
    if (!fpx_obj_utf8_valid(filter))
        return fpx_err_set(err, FPX_E_VALIDATION, "filter strings must be valid UTF-8");
    for (uint32_t i = 0; i < filter->via.map.size; i++)
        if (filter->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR)
            return fpx_err_set(err, FPX_E_VALIDATION, "filter field names must be strings");
    return 0;
}

/* Reads a msgpack string at p; 1 and its bytes, or 0 when p holds no string. */
static int mp_str(const uint8_t *p, const uint8_t *end, const uint8_t **s, size_t *n) {
    if (p >= end)
        return 0;
    size_t hdr, len;
    if ((p[0] & 0xe0) == 0xa0) {
        hdr = 1;
        len = p[0] & 0x1f;
    } else if (p[0] == 0xd9 && end - p >= 2) {
        hdr = 2;
        len = p[1];
    } else if (p[0] == 0xda && end - p >= 3) {
        hdr = 3;
        len = (size_t)p[1] << 8 | p[2];
    } else if (p[0] == 0xdb && end - p >= 5) {
        hdr = 5;
        len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
    } else {
        return 0;
    }
    if ((size_t)(end - p) - hdr < len)
        return 0;
    *s = p + hdr;
    *n = len;
    return 1;
}

/* 1 when the stored metadata map has every filter field equal to its value. */
static int meta_matches(const fpx_blob *m, const filter_field *f, size_t nf) {
    if (!m)
        return 0;
    const uint8_t *p = m->data, *end = m->data + m->len;
    size_t count;
    if ((p[0] & 0xf0) == 0x80) {
        count = p[0] & 0x0f;
        p += 1;
    } else if (p[0] == 0xde && m->len >= 3) {
        count = (size_t)p[1] << 8 | p[2];
        p += 3;
    } else if (p[0] == 0xdf && m->len >= 5) {
        count = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
        p += 5;
    } else {
        return 0;
    }
    size_t found = 0;
    for (size_t e = 0; e < count && p < end; e++) {
        const uint8_t *ks;
        size_t kn, used;
        int is_str = mp_str(p, end, &ks, &kn);
        if (fpx_msgpack_check(p, (size_t)(end - p), &used, NULL))
            return 0;
        p += used;
        if (fpx_msgpack_check(p, (size_t)(end - p), &used, NULL))
            return 0;
        if (is_str) {
            for (size_t j = 0; j < nf; j++) {
                if (f[j].name_len == kn && !memcmp(f[j].name, ks, kn)) {
                    if (f[j].value->len != used || memcmp(f[j].value->data, p, used))
                        return 0;
                    found++;
                }
            }
        }
        p += used;
    }
    return found == nf;
}

/* The allowed set of a filtered search: live slots whose metadata matches. */
static int build_filter_set(const fpx_index *ix, const msgpack_object *filter, uint64_t **words,
                            int64_t *count) {
    size_t nf = filter->via.map.size;
    filter_field *f = calloc(nf, sizeof *f);
    uint64_t *w = calloc(words_for(ix->nslots) + 1, sizeof *w);
    int rc = (f && w) ? 0 : -1;
    for (size_t j = 0; rc == 0 && j < nf; j++) {
        const msgpack_object_kv *kv = &filter->via.map.ptr[j];
        f[j].name = kv->key.via.str.ptr;
        f[j].name_len = kv->key.via.str.size;
        if (!(f[j].value = blob_pack(&kv->val)))
            rc = -1;
    }
    int64_t c = 0;
    for (int64_t s = 0; rc == 0 && ix->meta && s < ix->nslots; s++) {
        if (bit_get(ix->alive, s) && meta_matches(ix->meta[s], f, nf)) {
            bit_set(w, s);
            c++;
        }
    }
    for (size_t j = 0; f && j < nf; j++)
        free(f[j].value);
    free(f);
    if (rc) {
        free(w);
        return -1;
    }
    *words = w;
    *count = c;
    return 0;
}

/* The allowed set of a search: the filter's matches, or the live slots when
 * some are dead, or NULL (everything). *owned is what to free after. */
static int allowed_set(const fpx_index *ix, const msgpack_object *filter, fpx_bitset *set,
                       const fpx_bitset **allowed, uint64_t **owned, fpx_err *err) {
    *owned = NULL;
    *allowed = NULL;
    memset(set, 0, sizeof *set);
    if (filter && filter->type == MSGPACK_OBJECT_MAP && filter->via.map.size > 0) {
        if (build_filter_set(ix, filter, owned, &set->count))
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory building the filter");
        set->words = *owned;
        set->nbits = ix->nslots;
        *allowed = set;
    } else if (ix->nlive < ix->nslots) {
        *set = fpx_index_live(ix);
        *allowed = set;
    }
    return 0;
}

int fpx_index_search(fpx_index *ix, int64_t nq, const void *x, int64_t k,
                     const fpx_search_params *params, const msgpack_object *filter, void *D,
                     int64_t *I, fpx_err *err) {
    uint64_t *owned;
    fpx_bitset set;
    const fpx_bitset *allowed;
    if (allowed_set(ix, filter, &set, &allowed, &owned, err))
        return -1;
    int rc = 0;
    if (ix->nslots == 0 || (allowed && allowed->count == 0)) {
        /* Nothing can match: answer as FAISS does for an empty index. */
        float none = ix->metric == FPX_METRIC_IP ? -FLT_MAX : FLT_MAX;
        for (int64_t i = 0; i < nq * k; i++) {
            if (ix->metric == FPX_METRIC_HAMMING)
                ((int32_t *)D)[i] = INT32_MAX;
            else
                ((float *)D)[i] = none;
            I[i] = -1;
        }
    } else {
        rc = fpx_engine_search(ix->eng, nq, x, k, params, allowed, D, I, err);
    }
    free(owned);
    return rc;
}

int fpx_index_range_search(fpx_index *ix, int64_t nq, const void *x, float radius,
                           const fpx_search_params *params, const msgpack_object *filter,
                           int64_t **lims, float **D, int64_t **I, fpx_err *err) {
    uint64_t *owned;
    fpx_bitset set;
    const fpx_bitset *allowed;
    if (allowed_set(ix, filter, &set, &allowed, &owned, err))
        return -1;
    int rc = fpx_engine_range_search(ix->eng, nq, x, radius, params, allowed, lims, D, I, err);
    free(owned);
    return rc;
}

/* Appends raw, already-encoded msgpack bytes to a packer's output. */
static void pack_raw(msgpack_packer *pk, const void *p, size_t n) {
    pk->callback(pk->data, (const char *)p, n);
}

void fpx_index_pack_hit(const fpx_index *ix, int64_t slot, msgpack_packer *pk) {
    if (slot < 0) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_map(pk, 2);
    fpx_pack_cstr(pk, "id");
    const fpx_blob *k = ix->keys ? ix->keys[slot] : NULL;
    if (k)
        pack_raw(pk, k->data, k->len);
    else
        msgpack_pack_int64(pk, fpx_index_label_of(ix, slot));
    fpx_pack_cstr(pk, "metadata");
    const fpx_blob *m = ix->meta ? ix->meta[slot] : NULL;
    if (m)
        pack_raw(pk, m->data, m->len);
    else
        msgpack_pack_nil(pk);
}

void fpx_index_pack_info(const fpx_index *ix, msgpack_packer *pk) {
    msgpack_pack_map(pk, 7 + (ix->lease_seconds > 0 ? 2 : 0));
    if (ix->lease_seconds > 0) { /* renewed and expired by lease.c */
        uint64_t at = atomic_load(&ix->lease_renewed_ns), now = fpx_now_ns();
        double left = (double)ix->lease_seconds - (now > at ? (double)(now - at) / 1e9 : 0);
        fpx_pack_cstr(pk, "lease_seconds");
        msgpack_pack_int64(pk, ix->lease_seconds);
        fpx_pack_cstr(pk, "lease_remaining");
        msgpack_pack_double(pk, left > 0 ? left : 0);
    }
    fpx_pack_cstr(pk, "index_id");
    fpx_pack_cstr(pk, ix->name);
    fpx_pack_cstr(pk, "dimension");
    msgpack_pack_int64(pk, ix->dim);
    fpx_pack_cstr(pk, "index_type");
    fpx_pack_cstr(pk, ix->index_type);
    fpx_pack_cstr(pk, "metric");
    fpx_pack_cstr(pk, ix->metric == FPX_METRIC_IP        ? "IP"
                      : ix->metric == FPX_METRIC_HAMMING ? "Hamming"
                                                         : "L2");
    fpx_pack_cstr(pk, "ntotal");
    msgpack_pack_int64(pk, ix->nlive);
    fpx_pack_cstr(pk, "is_trained");
    if (fpx_engine_is_trained(ix->eng))
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    fpx_pack_cstr(pk, "has_keys");
    if (ix->nkeys > 0)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
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
    for (int64_t s = ix->nslots; ix->alive && s < (int64_t)words_for(ix->cap) * 64; s++)
        if (bit_get(ix->alive, s))
            return fpx_err_set(err, FPX_E_INTERNAL, "slot %lld beyond nslots is alive",
                               (long long)s);
    int64_t live = 0, keyed = 0, top = -1;
    for (int64_t s = 0; s < ix->nslots; s++) {
        int64_t label = fpx_index_label_of(ix, s);
        const fpx_blob *k = ix->keys ? ix->keys[s] : NULL;
        const fpx_blob *m = ix->meta ? ix->meta[s] : NULL;
        if (!bit_get(ix->alive, s)) {
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
            if (find_key(ix, k) != s)
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

/* ---- snapshot encoding -------------------------------------------------------------- */

#define SNAP_FORMAT "faiss-proxy-snapshot"
#define SNAP_VERSION 1

static void pack_blob_table(msgpack_packer *pk, fpx_blob *const *t, int64_t n) {
    if (!t) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_array(pk, (size_t)n);
    for (int64_t s = 0; s < n; s++) {
        if (t[s]) {
            msgpack_pack_bin(pk, t[s]->len);
            msgpack_pack_bin_body(pk, t[s]->data, t[s]->len);
        } else {
            msgpack_pack_nil(pk);
        }
    }
}

int fpx_index_write(const fpx_index *ix, fpx_write_fn fn, void *ctx, fpx_err *err) {
    size_t englen, written;
    if (fpx_engine_write(ix->eng, NULL, NULL, &englen, err)) /* the size, first */
        return -1;
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *h = fpx_out_hdr(&o);
    msgpack_pack_map(h, 9 + (ix->lease_seconds > 0));
    fpx_pack_cstr(h, "format");
    fpx_pack_cstr(h, SNAP_FORMAT);
    fpx_pack_cstr(h, "version");
    msgpack_pack_int(h, SNAP_VERSION);
    fpx_pack_cstr(h, "seq");
    msgpack_pack_uint64(h, ix->seq);
    fpx_pack_cstr(h, "index_type");
    fpx_pack_cstr(h, ix->index_type);
    fpx_pack_cstr(h, "dimension");
    msgpack_pack_int64(h, ix->dim);
    fpx_pack_cstr(h, "metric");
    msgpack_pack_int(h, (int)ix->metric);
    fpx_pack_cstr(h, "nslots");
    msgpack_pack_int64(h, ix->nslots);
    fpx_pack_cstr(h, "next_label");
    msgpack_pack_int64(h, ix->next_label);
    fpx_pack_cstr(h, "nlive");
    msgpack_pack_int64(h, ix->nlive);
    if (ix->lease_seconds > 0) {
        fpx_pack_cstr(h, "lease_seconds");
        msgpack_pack_int64(h, ix->lease_seconds);
    }
    msgpack_packer *m = fpx_out_meta(&o);
    msgpack_pack_map(m, 4);
    fpx_pack_cstr(m, "alive");
    size_t abytes = words_for(ix->nslots) * sizeof(uint64_t);
    msgpack_pack_bin(m, abytes);
    msgpack_pack_bin_body(m, ix->alive, abytes);
    fpx_pack_cstr(m, "labels");
    if (ix->labels) {
        msgpack_pack_bin(m, (size_t)ix->nslots * sizeof(int64_t));
        msgpack_pack_bin_body(m, ix->labels, (size_t)ix->nslots * sizeof(int64_t));
    } else {
        msgpack_pack_nil(m);
    }
    fpx_pack_cstr(m, "keys");
    pack_blob_table(m, ix->keys, ix->nslots);
    fpx_pack_cstr(m, "meta");
    pack_blob_table(m, ix->meta, ix->nslots);
    uint8_t *prefix, *meta;
    size_t plen, mlen;
    if (fpx_out_frame(&o, englen, &prefix, &plen, &meta, &mlen))
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory encoding the snapshot of '%s'",
                           ix->name);
    int rc = fn(ctx, prefix, plen);
    if (rc == 0)
        rc = fpx_engine_write(ix->eng, fn, ctx, &written, err);
    if (rc == 0 && written != englen)
        rc = fpx_err_set(err, FPX_E_INTERNAL, "the index of '%s' changed while being written",
                         ix->name);
    if (rc == 0 && mlen > 0)
        rc = fn(ctx, meta, mlen);
    free(prefix);
    free(meta);
    return rc;
}

static int get_i64(const msgpack_object *map, const char *k, int64_t *v) {
    const msgpack_object *o = fpx_map_get(map, k);
    return o ? fpx_obj_int(o, v) : -1;
}

static int load_blob_table(fpx_index *ix, const msgpack_object *t, fpx_blob ***dst, int is_key) {
    if (!t || t->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (t->type != MSGPACK_OBJECT_ARRAY || (int64_t)t->via.array.size != ix->nslots)
        return -1;
    fpx_blob **tab = calloc((size_t)(ix->cap ? ix->cap : 1), sizeof *tab);
    if (!tab)
        return -1;
    *dst = tab;
    for (int64_t s = 0; s < ix->nslots; s++) {
        const msgpack_object *e = &t->via.array.ptr[s];
        if (e->type == MSGPACK_OBJECT_NIL)
            continue;
        if (e->type != MSGPACK_OBJECT_BIN || !bit_get(ix->alive, s))
            return -1;
        if (!(tab[s] = blob_new(e->via.bin.ptr, e->via.bin.size)))
            return -1;
        if (is_key) {
            if (find_key(ix, tab[s]) >= 0) /* a duplicate key: the file lies */
                return -1;
            fpx_slotmap_put(&ix->keymap, fpx_hash_bytes(tab[s]->data, tab[s]->len), s);
            ix->nkeys++;
        }
    }
    return 0;
}

int fpx_index_decode(const char *tenant, const char *name, const uint8_t *buf, size_t len,
                     fpx_index **out, uint64_t *seq, fpx_err *err) {
    fpx_msg msg;
    if (fpx_msg_decode(&msg, buf, len, err))
        return -1;
    const msgpack_object *h = msg.header, *m = msg.meta;
    const msgpack_object *fmt = fpx_map_get(h, "format"), *type = fpx_map_get(h, "index_type");
    int64_t version, dim, metric, nslots, next_label, nlive, sq;
    const char *tstr;
    size_t tlen;
    fpx_index *ix = NULL;
    fpx_engine *eng = NULL;
    if (!fmt || !fpx_obj_str_eq(fmt, SNAP_FORMAT) || get_i64(h, "version", &version) ||
        version != SNAP_VERSION || get_i64(h, "seq", &sq) || !type ||
        fpx_obj_str(type, &tstr, &tlen) || get_i64(h, "dimension", &dim) ||
        get_i64(h, "metric", &metric) || get_i64(h, "nslots", &nslots) ||
        get_i64(h, "next_label", &next_label) || get_i64(h, "nlive", &nlive) || !m ||
        m->type != MSGPACK_OBJECT_MAP || nslots < 0 || nlive < 0 || nlive > nslots ||
        (metric != FPX_METRIC_L2 && metric != FPX_METRIC_IP && metric != FPX_METRIC_HAMMING)) {
        fpx_err_set(err, FPX_E_INTERNAL, "snapshot header is not valid");
        goto fail;
    }
    if (fpx_engine_deserialize(msg.body.data, msg.body.data_size, &eng, err))
        goto fail;
    if (fpx_engine_ntotal(eng) != nslots || fpx_engine_dim(eng) != dim) {
        fpx_err_set(err, FPX_E_INTERNAL, "snapshot tables do not match its FAISS index");
        goto fail;
    }
    if (fpx_engine_metric(eng) != (fpx_metric)metric) {
        fpx_err_set(err, FPX_E_INTERNAL, "snapshot metric does not match its FAISS index");
        goto fail;
    }
    ix = index_alloc(tenant, name, tstr, tlen, eng);
    eng = NULL;
    if (!ix)
        goto oom;
    if (ensure_cap(ix, nslots, 0, 0))
        goto oom;
    ix->nslots = nslots;
    ix->next_label = next_label;
    int64_t lease; /* absent in snapshots of indexes without a lease */
    if (get_i64(h, "lease_seconds", &lease) == 0 && lease > 0)
        ix->lease_seconds = lease;
    const msgpack_object *alive = fpx_map_get(m, "alive"), *labels = fpx_map_get(m, "labels");
    size_t abytes = words_for(nslots) * sizeof(uint64_t);
    if (!alive || alive->type != MSGPACK_OBJECT_BIN || alive->via.bin.size != abytes)
        goto bad;
    memcpy(ix->alive, alive->via.bin.ptr, abytes);
    int64_t live = 0;
    for (int64_t s = 0; s < nslots; s++)
        live += bit_get(ix->alive, s);
    if (live != nlive)
        goto bad;
    ix->nlive = nlive;
    if (labels && labels->type == MSGPACK_OBJECT_BIN) {
        if (labels->via.bin.size != (size_t)nslots * sizeof(int64_t))
            goto bad;
        ix->labels = malloc((size_t)(ix->cap ? ix->cap : 1) * sizeof(int64_t));
        if (!ix->labels || fpx_slotmap_reserve(&ix->labelmap, (size_t)nlive))
            goto oom;
        memcpy(ix->labels, labels->via.bin.ptr, (size_t)nslots * sizeof(int64_t));
        for (int64_t s = 0; s < nslots; s++) {
            if (!bit_get(ix->alive, s))
                continue;
            if (find_label(ix, ix->labels[s]) >= 0)
                goto bad;
            fpx_slotmap_put(&ix->labelmap, fpx_hash_i64(ix->labels[s]), s);
        }
    } else if (labels && labels->type != MSGPACK_OBJECT_NIL) {
        goto bad;
    }
    const msgpack_object *keys = fpx_map_get(m, "keys");
    if (keys && keys->type == MSGPACK_OBJECT_ARRAY &&
        fpx_slotmap_reserve(&ix->keymap, keys->via.array.size))
        goto oom;
    if (load_blob_table(ix, keys, &ix->keys, 1) ||
        load_blob_table(ix, fpx_map_get(m, "meta"), &ix->meta, 0))
        goto bad;
    fpx_msg_destroy(&msg);
    *seq = (uint64_t)sq;
    ix->seq = ix->snap_seq = (uint64_t)sq;
    *out = ix;
    return 0;
bad:
    fpx_err_set(err, FPX_E_INTERNAL, "snapshot tables are not valid");
    goto fail;
oom:
    fpx_err_set(err, FPX_E_INTERNAL, "out of memory loading a snapshot");
fail:
    fpx_engine_free(eng);
    fpx_index_free(ix);
    fpx_msg_destroy(&msg);
    return -1;
}
