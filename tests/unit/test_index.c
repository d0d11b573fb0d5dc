/*
 * test_index.c - unit tests of one index's tables (src/server/index.c) over a
 * real FAISS engine: add with and without caller keys and labels, upsert,
 * delete by key and by label, FAISS remove_ids with its renumbering on flat
 * indexes, reset, train, search with filters and tombstones, the snapshot
 * body's write/decode round trip, compaction, and a random sequence of writes checked
 * against a model. fpx_index_check runs after every mutation: whatever a test
 * asserts, the tables must also agree with each other.
 */
#include "server/index.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* The invariants after a mutation; reports the broken one with the caller's line. */
#define CHECK_INDEX(ix)                                                                            \
    do {                                                                                           \
        fpx_err cerr_ = {0};                                                                       \
        int crc_ = fpx_index_check((ix), &cerr_);                                                  \
        CHECK(crc_ == 0);                                                                          \
        if (crc_)                                                                                  \
            fprintf(stderr, "  fpx_index_check: %s\n", cerr_.msg);                                 \
    } while (0)

/* ---- data ---------------------------------------------------------------------- */

/* ---- msgpack objects ------------------------------------------------------------- */

/* A msgpack object built with a packer and unpacked into its own zone. */
typedef struct mp {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked up;
} mp;

static msgpack_packer *mp_begin(mp *m) {
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
    msgpack_unpacked_init(&m->up);
    return &m->pk;
}
static const msgpack_object *mp_end(mp *m) {
    size_t off = 0;
    if (msgpack_unpack_next(&m->up, m->sb.data, m->sb.size, &off) != MSGPACK_UNPACK_SUCCESS)
        abort();
    return &m->up.data;
}
static void mp_free(mp *m) {
    msgpack_unpacked_destroy(&m->up);
    msgpack_sbuffer_destroy(&m->sb);
}

/* An id spec: "#12" is the integer 12, anything else a string. */
static void pack_id(msgpack_packer *pk, const char *id) {
    if (id[0] == '#')
        msgpack_pack_int64(pk, atoll(id + 1));
    else
        fpx_pack_cstr(pk, id);
}

/* add_vectors metadata for n vectors: keys[i] (NULL: no id) and, when g is
 * given and g[i] >= 0, metadata {"g": g[i]}. */
static const msgpack_object *items(mp *m, int64_t n, const char *const *keys, const int *g) {
    msgpack_packer *pk = mp_begin(m);
    msgpack_pack_array(pk, (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        int has_id = keys && keys[i], has_md = g && g[i] >= 0;
        msgpack_pack_map(pk, (size_t)(has_id + has_md));
        if (has_id) {
            fpx_pack_cstr(pk, "id");
            pack_id(pk, keys[i]);
        }
        if (has_md) {
            fpx_pack_cstr(pk, "metadata");
            msgpack_pack_map(pk, 1);
            fpx_pack_cstr(pk, "g");
            msgpack_pack_int(pk, g[i]);
        }
    }
    return mp_end(m);
}

/* delete_vector ids: n < 0 is the single id ids[0], else an array of n. */
static const msgpack_object *ids(mp *m, int n, const char *const *v) {
    msgpack_packer *pk = mp_begin(m);
    if (n < 0) {
        pack_id(pk, v[0]);
    } else {
        msgpack_pack_array(pk, (size_t)n);
        for (int i = 0; i < n; i++)
            pack_id(pk, v[i]);
    }
    return mp_end(m);
}

/* The filter {"g": g}. */
static const msgpack_object *filter_g(mp *m, int g) {
    msgpack_packer *pk = mp_begin(m);
    msgpack_pack_map(pk, 1);
    fpx_pack_cstr(pk, "g");
    msgpack_pack_int(pk, g);
    return mp_end(m);
}

/* 1 when slot s holds the string key `key`. */
static int slot_has_key(const fpx_index *ix, int64_t s, const char *key) {
    if (s < 0 || !ix->keys || !ix->keys[s])
        return 0;
    mp m;
    msgpack_packer *pk = mp_begin(&m);
    pack_id(pk, key);
    int eq = ix->keys[s]->len == m.sb.size && !memcmp(ix->keys[s]->data, m.sb.data, m.sb.size);
    msgpack_sbuffer_destroy(&m.sb);
    msgpack_unpacked_destroy(&m.up);
    return eq;
}

/* ---- helpers over the index ----------------------------------------------------- */

static fpx_index *make(const char *type, int64_t d, const char *metric) {
    fpx_index *ix = NULL;
    fpx_err err = {0};
    if (fpx_index_new("t", "ix", type, d, metric, &ix, &err)) {
        fprintf(stderr, "fpx_index_new %s: %s\n", type, err.msg);
        abort();
    }
    CHECK_INDEX(ix);
    return ix;
}

static int64_t add(fpx_index *ix, int64_t n, const float *x, const int64_t *labels,
                   const msgpack_object *it) {
    fpx_err err = {0};
    int64_t added = -1;
    int rc = fpx_index_add(ix, n, x, labels, it, &added, &err);
    CHECK(rc == 0);
    if (rc)
        fprintf(stderr, "  add: %s\n", err.msg);
    CHECK_INDEX(ix);
    return added;
}

static int64_t del(fpx_index *ix, const msgpack_object *id) {
    fpx_err err = {0};
    int64_t deleted = -1;
    CHECK(fpx_index_delete(ix, id, &deleted, &err) == 0);
    CHECK_INDEX(ix);
    return deleted;
}

/* The nearest live slot of one query (-1 for none) and its distance. */
static int64_t nearest(fpx_index *ix, const float *q, const msgpack_object *filter, float *dist) {
    float D[1];
    int64_t I[1];
    fpx_err err = {0};
    CHECK(fpx_index_search(ix, 1, q, 1, NULL, filter, D, I, &err) == 0);
    if (dist)
        *dist = D[0];
    return I[0];
}

/* Every slot returned by a k = nslots search, each once, all live. */
static int64_t search_all(fpx_index *ix, const float *q, const msgpack_object *filter,
                          int64_t *slots) {
    int64_t k = ix->nslots > 0 ? ix->nslots : 1, got = 0;
    float *D = malloc((size_t)k * sizeof *D);
    int64_t *I = malloc((size_t)k * sizeof *I);
    fpx_err err = {0};
    CHECK(D && I && fpx_index_search(ix, 1, q, k, NULL, filter, D, I, &err) == 0);
    for (int64_t j = 0; j < k; j++) {
        if (I[j] < 0) {
            CHECK(D[j] == FLT_MAX);
            continue;
        }
        CHECK(I[j] < ix->nslots && fpx_index_live(ix).words[I[j] >> 6] >> (I[j] & 63) & 1);
        for (int64_t i = 0; i < got; i++)
            CHECK(slots[i] != I[j]);
        slots[got++] = I[j];
    }
    free(D);
    free(I);
    return got;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_add_keys_delete(void) {
    enum { D = 8 };
    fpx_index *ix = make("Flat", D, NULL);
    float *x = test_vectors(40, D);
    mp m;

    /* Without keys: labels from the counter, identity mode. */
    CHECK(add(ix, 10, x, NULL, NULL) == 10);
    CHECK(ix->nlive == 10 && ix->nslots == 10 && ix->next_label == 10 && !ix->labels);
    CHECK(ix->nkeys == 0 && !ix->keys);
    for (int64_t i = 0; i < 10; i++)
        CHECK(fpx_index_slot_of(ix, i) == i && nearest(ix, x + i * D, NULL, NULL) == i);
    CHECK(fpx_index_slot_of(ix, 10) == -1 && fpx_index_slot_of(ix, -1) == -1);
    CHECK(add(ix, 0, x, NULL, NULL) == 0 && ix->nslots == 10);

    /* Keys and metadata. */
    static const char *k5[] = {"a0", "a1", "a2", "a3", "a4"};
    static const int g5[] = {0, 1, 0, 1, -1};
    CHECK(add(ix, 5, x + 10 * D, NULL, items(&m, 5, k5, g5)) == 5);
    mp_free(&m);
    CHECK(ix->nlive == 15 && ix->nkeys == 5 && ix->next_label == 15);
    for (int i = 0; i < 5; i++)
        CHECK(slot_has_key(ix, 10 + i, k5[i]));
    CHECK(ix->meta && ix->meta[10] && !ix->meta[14]);

    /* Upsert: a1 and a3 get new vectors; their old slots are dead. */
    static const char *up[] = {"a1", "a3"};
    CHECK(add(ix, 2, x + 15 * D, NULL, items(&m, 2, up, NULL)) == 2);
    mp_free(&m);
    CHECK(ix->nlive == 15 && ix->nslots == 17 && ix->nkeys == 5);
    CHECK(slot_has_key(ix, 15, "a1") && slot_has_key(ix, 16, "a3"));
    CHECK(!ix->meta[11] && !ix->meta[15]); /* the new vector has no metadata */
    CHECK(nearest(ix, x + 11 * D, NULL, NULL) != 11);
    CHECK(nearest(ix, x + 15 * D, NULL, NULL) == 15);

    /* One key twice in one request: the last vector stays. */
    static const char *zz[] = {"z", "z"};
    CHECK(add(ix, 2, x + 17 * D, NULL, items(&m, 2, zz, NULL)) == 2);
    mp_free(&m);
    CHECK(ix->nlive == 16 && ix->nkeys == 6 && slot_has_key(ix, 18, "z") && !ix->keys[17]);

    /* Integer key 1 and string "1" differ; an integer id is a key first. */
    static const char *k1[] = {"#1", "1"};
    CHECK(add(ix, 2, x + 19 * D, NULL, items(&m, 2, k1, NULL)) == 2);
    mp_free(&m);
    CHECK(ix->nlive == 18 && ix->nkeys == 8);
    static const char *one[] = {"#1"};
    CHECK(del(ix, ids(&m, -1, one)) == 1); /* the key 1, not the label 1 */
    mp_free(&m);
    CHECK(fpx_index_slot_of(ix, 1) == 1 && !(ix->alive[0] >> 19 & 1) && ix->alive[0] >> 20 & 1);
    CHECK(del(ix, ids(&m, -1, one)) == 1); /* now the label 1 */
    mp_free(&m);
    CHECK(fpx_index_slot_of(ix, 1) == -1 && ix->nlive == 16);
    CHECK(del(ix, ids(&m, -1, one)) == 0); /* nothing left to match */
    mp_free(&m);

    /* A list: a key, a label, a miss. */
    static const char *three[] = {"a2", "#4", "nope"};
    CHECK(del(ix, ids(&m, 3, three)) == 2);
    mp_free(&m);
    CHECK(ix->nlive == 14 && ix->nkeys == 6 && fpx_index_slot_of(ix, 4) == -1);
    CHECK(nearest(ix, x + 12 * D, NULL, NULL) != 12 && nearest(ix, x + 4 * D, NULL, NULL) != 4);

    /* A bad id anywhere in the list changes nothing. */
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_array(pk, 2);
    fpx_pack_cstr(pk, "a0");
    msgpack_pack_double(pk, 1.5);
    int64_t deleted = -1;
    fpx_err err = {0};
    CHECK(fpx_index_delete(ix, mp_end(&m), &deleted, &err) == -1 && err.type == FPX_E_VALIDATION);
    mp_free(&m);
    CHECK(ix->nlive == 14 && slot_has_key(ix, 10, "a0"));
    CHECK_INDEX(ix);

    /* Every live slot is found exactly once; no dead one ever. */
    int64_t slots[64];
    CHECK(search_all(ix, x, NULL, slots) == 14);

    /* Deleted vectors keep their labels: the counter goes on. */
    CHECK(add(ix, 1, x + 21 * D, NULL, NULL) == 1 && fpx_index_slot_of(ix, 21) == 21);
    CHECK(ix->next_label == 22);

    /* Bad metadata items are refused before anything changes. */
    static const char *empty[] = {""}, *fine[] = {"fine"};
    CHECK(fpx_index_check_items(items(&m, 1, empty, NULL), 1, &err) == -1);
    CHECK(err.type == FPX_E_VALIDATION);
    mp_free(&m);
    CHECK(fpx_index_check_items(items(&m, 1, fine, NULL), 1, &err) == 0);
    CHECK(fpx_index_check_items(&m.up.data, 2, &err) == -1 && err.type == FPX_E_VALIDATION);
    mp_free(&m);
    free(x);
    fpx_index_free(ix);
}

static void test_explicit_labels(void) {
    enum { D = 4 };
    fpx_index *ix = make("Flat", D, NULL);
    float *x = test_vectors(10, D);
    int64_t l1[] = {0, 1, 2};
    CHECK(add(ix, 3, x, l1, NULL) == 3 && !ix->labels); /* still identity */
    int64_t l2[] = {100, 7};
    CHECK(add(ix, 2, x + 3 * D, l2, NULL) == 2 && ix->labels);
    CHECK(ix->next_label == 101 && fpx_index_slot_of(ix, 100) == 3);
    CHECK(fpx_index_slot_of(ix, 7) == 4 && fpx_index_label_of(ix, 4) == 7);
    CHECK(add(ix, 1, x + 5 * D, NULL, NULL) == 1 && fpx_index_label_of(ix, 5) == 101);
    /* A label already present replaces that vector. */
    int64_t l3[] = {7};
    CHECK(add(ix, 1, x + 6 * D, l3, NULL) == 1);
    CHECK(fpx_index_slot_of(ix, 7) == 6 && ix->nlive == 6);
    CHECK(nearest(ix, x + 4 * D, NULL, NULL) != 4);
    /* Negative labels are refused, nothing changes. */
    int64_t bad[] = {8, -1};
    int64_t added = -1;
    fpx_err err = {0};
    CHECK(fpx_index_add(ix, 2, x + 7 * D, bad, NULL, &added, &err) == -1);
    CHECK(err.type == FPX_E_VALIDATION && ix->nslots == 7 && ix->nlive == 6);
    CHECK_INDEX(ix);
    /* Deleting by label outside identity mode. */
    mp m;
    static const char *l100[] = {"#100"};
    CHECK(del(ix, ids(&m, -1, l100)) == 1 && fpx_index_slot_of(ix, 100) == -1);
    mp_free(&m);
    free(x);
    fpx_index_free(ix);
}

/* FAISS remove_ids: flat types renumber, IVF and IDMap keep labels, HNSW refuses. */
static void test_remove(void) {
    enum { D = 8, N = 10 };
    float *x = test_vectors(300, D);
    int64_t removed = -1, slots[64];
    fpx_err err = {0};

    fpx_index *ix = make("Flat", D, NULL);
    add(ix, N, x, NULL, NULL);
    int64_t gone[] = {2, 5, 5, 42};
    CHECK(fpx_index_remove(ix, 4, gone, 0, 0, &removed, &err) == 0 && removed == 2);
    CHECK_INDEX(ix);
    /* labels above each removed one move down: 9 -> 7, 6 -> 4, 3 -> 2 */
    CHECK(ix->nlive == 8 && ix->next_label == 8);
    CHECK(fpx_index_slot_of(ix, 7) == 9 && fpx_index_slot_of(ix, 4) == 6);
    CHECK(fpx_index_slot_of(ix, 2) == 3 && fpx_index_slot_of(ix, 1) == 1);
    CHECK(fpx_index_label_of(ix, nearest(ix, x + 9 * D, NULL, NULL)) == 7);
    /* a range, then a new vector gets label ntotal */
    CHECK(fpx_index_remove(ix, 0, NULL, 0, 2, &removed, &err) == 0 && removed == 2);
    CHECK_INDEX(ix);
    CHECK(ix->nlive == 6 && fpx_index_slot_of(ix, 0) == 3 && fpx_index_slot_of(ix, 5) == 9);
    CHECK(add(ix, 1, x + N * D, NULL, NULL) == 1);
    CHECK(fpx_index_label_of(ix, N) == 6 && ix->next_label == 7);
    CHECK(search_all(ix, x, NULL, slots) == 7);
    /* removing everything */
    CHECK(fpx_index_remove(ix, 0, NULL, 0, 1000, &removed, &err) == 0 && removed == 7);
    CHECK_INDEX(ix);
    CHECK(ix->nlive == 0 && ix->next_label == 0);
    CHECK(nearest(ix, x, NULL, NULL) == -1);
    fpx_index_free(ix);

    /* IDMap,Flat keeps its labels */
    ix = make("IDMap,Flat", D, NULL);
    add(ix, N, x, NULL, NULL);
    CHECK(fpx_index_remove(ix, 2, gone, 0, 0, &removed, &err) == 0 && removed == 2);
    CHECK_INDEX(ix);
    CHECK(fpx_index_slot_of(ix, 9) == 9 && fpx_index_slot_of(ix, 2) == -1 && ix->next_label == N);
    fpx_index_free(ix);

    /* IVF keeps its labels */
    ix = make("IVF4,Flat", D, NULL);
    CHECK(fpx_index_train(ix, 300, x, &err) == 0);
    CHECK_INDEX(ix);
    add(ix, N, x, NULL, NULL);
    CHECK(fpx_index_remove(ix, 0, NULL, 3, 6, &removed, &err) == 0 && removed == 3);
    CHECK_INDEX(ix);
    CHECK(fpx_index_slot_of(ix, 9) == 9 && fpx_index_slot_of(ix, 4) == -1 && ix->nlive == 7);
    fpx_index_free(ix);

    /* HNSW cannot remove: FAISS's error, nothing changes */
    ix = make("HNSW8", D, NULL);
    add(ix, N, x, NULL, NULL);
    CHECK(fpx_index_remove(ix, 2, gone, 0, 0, &removed, &err) == -1 && err.type == FPX_E_FAISS);
    CHECK(ix->nlive == N && removed == 0);
    CHECK_INDEX(ix);
    fpx_index_free(ix);
    free(x);
}

static void test_train_reset(void) {
    enum { D = 8 };
    float *x = test_vectors(300, D);
    fpx_index *ix = make("IVF4,Flat", D, NULL);
    fpx_err err = {0};
    int64_t added = -1;
    CHECK(fpx_index_add(ix, 5, x, NULL, NULL, &added, &err) == -1);
    CHECK(err.type == FPX_E_NOT_TRAINED && added == 0 && ix->nslots == 0);
    CHECK_INDEX(ix);
    CHECK(fpx_index_train(ix, 300, x, &err) == 0 && fpx_engine_is_trained(ix->eng));
    CHECK_INDEX(ix);
    mp m;
    static const char *k[] = {"a", "b", "c"};
    static const int g[] = {1, 2, 3};
    int64_t l[] = {50, 60, 70};
    CHECK(add(ix, 3, x, l, items(&m, 3, k, g)) == 3);
    mp_free(&m);
    CHECK(ix->labels && ix->nkeys == 3);
    CHECK(fpx_index_reset(ix, &err) == 0);
    CHECK_INDEX(ix);
    CHECK(ix->nslots == 0 && ix->nlive == 0 && ix->nkeys == 0 && ix->next_label == 0);
    CHECK(!ix->labels && fpx_engine_is_trained(ix->eng));
    CHECK(nearest(ix, x, NULL, NULL) == -1);
    /* labels from 0 again, the same keys usable again */
    CHECK(add(ix, 3, x + 3 * D, NULL, items(&m, 3, k, NULL)) == 3);
    mp_free(&m);
    CHECK(fpx_index_slot_of(ix, 0) == 0 && fpx_index_slot_of(ix, 50) == -1);
    CHECK(slot_has_key(ix, 2, "c") && ix->nkeys == 3);
    free(x);
    fpx_index_free(ix);
}

/* Filters and tombstones, on a flat index and on HNSW (selector or over-fetch). */
static void test_search_filters(const char *type) {
    enum { D = 8, N = 60 };
    float *x = test_vectors(N, D);
    fpx_index *ix = make(type, D, NULL);
    const char *keys[N];
    char names[N][16];
    int g[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "v%d", i);
        keys[i] = names[i];
        g[i] = i % 3;
    }
    mp m, f;
    CHECK(add(ix, N, x, NULL, items(&m, N, keys, g)) == N);
    mp_free(&m);
    int64_t slots[N];
    const msgpack_object *f1 = filter_g(&f, 1);
    CHECK(search_all(ix, x, f1, slots) == N / 3);
    for (int i = 0; i < N / 3; i++)
        CHECK(slots[i] % 3 == 1);
    /* the nearest match of a query that is itself filtered out */
    float d;
    int64_t s = nearest(ix, x, f1, &d);
    CHECK(s >= 0 && s % 3 == 1 && d > 0);
    /* tombstones: delete half of group 1, they vanish from filtered and plain searches */
    const char *half[N / 6];
    for (int i = 0; i < N / 6; i++)
        half[i] = names[1 + 6 * i];
    CHECK(del(ix, ids(&m, N / 6, half)) == N / 6);
    mp_free(&m);
    int64_t got = search_all(ix, x, f1, slots);
    CHECK(got == N / 6);
    for (int64_t i = 0; i < got; i++)
        CHECK(slots[i] % 6 == 4);
    CHECK(search_all(ix, x, NULL, slots) == N - N / 6);
    CHECK(nearest(ix, x + D, NULL, &d) != 1);
    /* k above the matches: padded with -1 and FLT_MAX */
    float D5[5];
    int64_t I5[5];
    fpx_err err = {0};
    mp f7;
    const msgpack_object *none = filter_g(&f7, 7);
    CHECK(fpx_index_search(ix, 1, x, 5, NULL, none, D5, I5, &err) == 0);
    for (int j = 0; j < 5; j++)
        CHECK(I5[j] == -1 && D5[j] == FLT_MAX);
    /* range search honours the filter and the tombstones too */
    if (strcmp(type, "Flat") == 0) {
        int64_t *lims = NULL, *RI = NULL;
        float *RD = NULL;
        CHECK(fpx_index_range_search(ix, 1, x, 1e9f, NULL, f1, &lims, &RD, &RI, &err) == 0);
        CHECK(lims && lims[1] == N / 6);
        for (int64_t j = 0; lims && j < lims[1]; j++)
            CHECK(RI[j] % 6 == 4);
        free(lims);
        free(RD);
        free(RI);
    }
    /* filter checks: not a map, non-string field names */
    CHECK(fpx_index_check_filter(f1, &err) == 0 && fpx_index_check_filter(NULL, &err) == 0);
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 1);
    msgpack_pack_int(pk, 1);
    msgpack_pack_int(pk, 1);
    CHECK(fpx_index_check_filter(mp_end(&m), &err) == -1 && err.type == FPX_E_VALIDATION);
    mp_free(&m);
    mp_free(&f);
    mp_free(&f7);
    free(x);
    fpx_index_free(ix);
}

/* fpx_index_write's sink: appends to a growing buffer. */
typedef struct membuf {
    uint8_t *p;
    size_t len, cap;
    int fail_after; /* calls before the sink fails; < 0: never */
} membuf;

static int mem_write(void *ctx, const void *buf, size_t n) {
    membuf *b = ctx;
    if (b->fail_after == 0)
        return -1;
    if (b->fail_after > 0)
        b->fail_after--;
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, buf, n);
    b->len += n;
    return 0;
}

static int blob_eq(const fpx_blob *a, const fpx_blob *b) {
    return (!a && !b) || (a && b && a->len == b->len && !memcmp(a->data, b->data, a->len));
}

/* Writes ix, decodes the bytes, and compares every table and a search. */
static void roundtrip(fpx_index *ix, const float *q) {
    membuf b = {NULL, 0, 0, -1};
    fpx_err err = {0};
    ix->seq = 1234;
    CHECK(fpx_index_write(ix, mem_write, &b, &err) == 0);
    fpx_index *y = NULL;
    uint64_t seq = 0;
    CHECK(fpx_index_decode("t", "copy", b.p, b.len, &y, &seq, &err) == 0);
    if (!y) {
        fprintf(stderr, "  decode: %s\n", err.msg);
        free(b.p);
        return;
    }
    CHECK_INDEX(y);
    CHECK(seq == 1234 && y->seq == 1234 && y->snap_seq == 1234);
    CHECK(y->nslots == ix->nslots && y->nlive == ix->nlive && y->nkeys == ix->nkeys);
    CHECK(y->next_label == ix->next_label && y->dim == ix->dim && y->metric == ix->metric);
    CHECK(!strcmp(y->index_type, ix->index_type) && !y->labels == !ix->labels);
    for (int64_t s = 0; s < ix->nslots; s++) {
        CHECK((y->alive[s >> 6] >> (s & 63) & 1) == (ix->alive[s >> 6] >> (s & 63) & 1));
        CHECK(fpx_index_label_of(y, s) == fpx_index_label_of(ix, s));
        CHECK(blob_eq(ix->keys ? ix->keys[s] : NULL, y->keys ? y->keys[s] : NULL));
        CHECK(blob_eq(ix->meta ? ix->meta[s] : NULL, y->meta ? y->meta[s] : NULL));
    }
    enum { K = 5 };
    float D0[3 * K], D1[3 * K];
    int64_t I0[3 * K], I1[3 * K];
    CHECK(fpx_index_search(ix, 3, q, K, NULL, NULL, D0, I0, &err) == 0);
    CHECK(fpx_index_search(y, 3, q, K, NULL, NULL, D1, I1, &err) == 0);
    CHECK(!memcmp(I0, I1, sizeof I0) && !memcmp(D0, D1, sizeof D0));
    fpx_index_free(y);

    /* Damaged bytes fail cleanly: truncated, or a byte changed in the tables. */
    y = NULL;
    CHECK(fpx_index_decode("t", "copy", b.p, b.len - 1, &y, &seq, &err) == -1 && !y);
    CHECK(fpx_index_decode("t", "copy", b.p, b.len / 2, &y, &seq, &err) == -1 && !y);
    /* A sink that fails fails the write. */
    membuf f = {NULL, 0, 0, 1};
    CHECK(fpx_index_write(ix, mem_write, &f, &err) == -1);
    free(f.p);
    free(b.p);
}

static void test_snapshot(void) {
    enum { D = 8, N = 30 };
    float *x = test_vectors(N, D);
    /* identity mode, no keys */
    fpx_index *ix = make("Flat", D, NULL);
    roundtrip(ix, x); /* empty */
    add(ix, 10, x, NULL, NULL);
    roundtrip(ix, x);
    /* labels, keys, metadata, tombstones */
    mp m;
    static const char *k[] = {"a", "#5", NULL, "b"};
    static const int g[] = {1, -1, 2, 3};
    int64_t l[] = {40, 41, 3, 44};
    add(ix, 4, x + 10 * D, l, items(&m, 4, k, g));
    mp_free(&m);
    static const char *gone[] = {"a", "#7"};
    CHECK(del(ix, ids(&m, 2, gone)) == 2);
    mp_free(&m);
    roundtrip(ix, x);
    fpx_index_free(ix);
    /* IVF, HNSW and a binary index too */
    fpx_err err = {0};
    ix = make("IVF4,Flat", D, "IP");
    CHECK(fpx_index_train(ix, N, x, &err) == 0);
    add(ix, N, x, NULL, NULL);
    roundtrip(ix, x);
    fpx_index_free(ix);
    ix = make("HNSW8", D, NULL);
    add(ix, N, x, NULL, NULL);
    static const char *label3[] = {"#3"};
    CHECK(del(ix, ids(&m, -1, label3)) == 1);
    mp_free(&m);
    roundtrip(ix, x);
    fpx_index_free(ix);
    free(x);
}

/* Compacts ix (which must be due or not, as told) and checks that every live
 * vector answers as before: labels, keys, metadata, and the k-NN results of
 * queries q (same labels and distances; exact only where FAISS's removal
 * keeps the search's candidates, i.e. not after an HNSW rebuild). */
static void compact_and_compare(fpx_index *ix, const float *q, int nq, int exact) {
    enum { K = 8 };
    int64_t live = ix->nlive, next = ix->next_label;
    float D0[8 * K], D1[8 * K];
    int64_t I0[8 * K], I1[8 * K], L0[8 * K];
    fpx_blob *k0[8 * K], *m0[8 * K];
    fpx_err err = {0};
    CHECK(nq <= 8 && fpx_index_search(ix, nq, q, K, NULL, NULL, D0, I0, &err) == 0);
    for (int i = 0; i < nq * K; i++) {
        L0[i] = fpx_index_label_of(ix, I0[i]);
        k0[i] = I0[i] >= 0 && ix->keys ? ix->keys[I0[i]] : NULL;
        m0[i] = I0[i] >= 0 && ix->meta ? ix->meta[I0[i]] : NULL;
    }
    fpx_index *c = NULL;
    CHECK(fpx_index_compact_build(ix, &c, &err) == 0 && c);
    if (!c) {
        fprintf(stderr, "  compact_build: %s\n", err.msg);
        return;
    }
    CHECK_INDEX(ix); /* untouched by the build */
    fpx_index_compact_commit(ix, c);
    fpx_index_compact_free(c);
    CHECK_INDEX(ix);
    CHECK(ix->nslots == live && ix->nlive == live && ix->next_label == next);
    CHECK(fpx_engine_ntotal(ix->eng) == live);
    CHECK(fpx_index_search(ix, nq, q, K, NULL, NULL, D1, I1, &err) == 0);
    for (int i = 0; i < nq * K; i++) {
        if (exact) {
            CHECK(fpx_index_label_of(ix, I1[i]) == L0[i] && D1[i] == D0[i]);
            CHECK(blob_eq(I1[i] >= 0 && ix->keys ? ix->keys[I1[i]] : NULL, k0[i]));
            CHECK(blob_eq(I1[i] >= 0 && ix->meta ? ix->meta[I1[i]] : NULL, m0[i]));
        }
        CHECK(I1[i] < live);
    }
}

static void test_compact(void) {
    enum { D = 8, N = 64 };
    float *x = test_vectors(300, D);
    fpx_err err = {0};
    mp m;
    static const char *types[] = {"Flat", "IVF4,Flat", "PQ4x4", "HNSW8", "IDMap2,Flat"};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        fpx_index *ix = make(types[t], D, NULL);
        if (!fpx_engine_is_trained(ix->eng))
            CHECK(fpx_index_train(ix, 300, x, &err) == 0);
        if (!strcmp(types[t], "IVF4,Flat"))
            CHECK(fpx_engine_set_direct_map(ix->eng, 1, &err) == 0);
        /* keys and metadata on even vectors, labels from the counter on the rest */
        char names[N][16];
        const char *keys[N];
        int g[N];
        for (int i = 0; i < N; i++) {
            snprintf(names[i], sizeof names[i], "k%d", i);
            keys[i] = i % 2 ? NULL : names[i];
            g[i] = i % 3 ? i : -1;
        }
        add(ix, N, x, NULL, items(&m, N, keys, g));
        mp_free(&m);
        CHECK(!fpx_index_compact_due(ix, 1));
        /* half of the keyed ones and a run of labelled ones go */
        const char *gone[N];
        int ng = 0;
        for (int i = 0; i < N; i += 4)
            gone[ng++] = names[i];
        for (int i = 21; i < 41; i += 2) {
            snprintf(names[i], sizeof names[i], "#%d", i);
            gone[ng++] = names[i];
        }
        CHECK(del(ix, ids(&m, ng, gone)) == ng);
        mp_free(&m);
        CHECK(fpx_index_compact_due(ix, 1) && fpx_index_compact_due(ix, ng));
        CHECK(!fpx_index_compact_due(ix, ng + 1) && !fpx_index_compact_due(ix, 0));
        compact_and_compare(ix, x + 5 * D, 4, strcmp(types[t], "HNSW8") != 0);
        CHECK(!fpx_index_compact_due(ix, 1));
        /* every live key and label still finds its own vector */
        for (int i = 0; i < N; i++) {
            int dead = (i % 4 == 0) || (i >= 21 && i < 41 && i % 2);
            float d;
            int64_t s = nearest(ix, x + i * D, NULL, &d);
            if (!dead && strcmp(types[t], "PQ4x4"))
                CHECK(d < 1e-5f && fpx_index_label_of(ix, s) == i);
            if (i % 2 == 0 && !dead)
                CHECK(slot_has_key(ix, fpx_index_slot_of(ix, i), names[i]));
        }
        /* it goes on: a new vector gets the next label, in the next slot */
        int64_t next = ix->next_label;
        CHECK(add(ix, 1, x + 100 * D, NULL, NULL) == 1);
        CHECK(fpx_index_slot_of(ix, next) == ix->nslots - 1);
        roundtrip(ix, x);
        fpx_index_free(ix);
    }

    /* Back to identity mode once the labels are 0..n-1 again (a flat index
     * renumbers on FAISS remove_ids), and not while the counter is ahead. */
    fpx_index *ix = make("Flat", D, NULL);
    add(ix, N, x, NULL, NULL);
    int64_t removed;
    CHECK(fpx_index_remove(ix, 0, NULL, 10, 40, &removed, &err) == 0 && removed == 30);
    CHECK(ix->labels != NULL);
    compact_and_compare(ix, x, 3, 1);
    CHECK(ix->labels == NULL && ix->nslots == N - 30);
    static const char *last[] = {"#33"};
    CHECK(del(ix, ids(&m, -1, last)) == 1);
    mp_free(&m);
    compact_and_compare(ix, x, 3, 1);
    CHECK(ix->labels != NULL && ix->next_label == N - 30);
    fpx_index_free(ix);

    /* A type FAISS cannot remove from, and which is not exact storage: refused */
    ix = make("HNSW8,SQ8", D, NULL);
    CHECK(fpx_index_train(ix, 300, x, &err) == 0);
    add(ix, N, x, NULL, NULL);
    static const char *one[] = {"#3"};
    CHECK(del(ix, ids(&m, -1, one)) == 1);
    mp_free(&m);
    fpx_index *c = NULL;
    CHECK(fpx_index_compact_build(ix, &c, &err) == 1 && !c);
    CHECK_INDEX(ix);
    fpx_index_free(ix);

    /* Binary indexes */
    static const char *btypes[] = {"BFlat", "BIVF4"};
    uint8_t *bx = malloc(300 * 8);
    for (int i = 0; i < 300 * 8; i++)
        bx[i] = (uint8_t)test_rnd();
    for (size_t t = 0; t < 2; t++) {
        ix = make(btypes[t], 64, NULL);
        if (!fpx_engine_is_trained(ix->eng))
            CHECK(fpx_index_train(ix, 300, bx, &err) == 0);
        add(ix, N, (const float *)(const void *)bx, NULL, NULL);
        const char *gone[N / 2];
        char names[N / 2][16];
        for (int i = 0; i < N / 2; i++) {
            snprintf(names[i], sizeof names[i], "#%d", 2 * i + 1);
            gone[i] = names[i];
        }
        CHECK(del(ix, ids(&m, N / 2, gone)) == N / 2);
        mp_free(&m);
        int32_t D0[4 * 8], D1[4 * 8];
        int64_t I0[4 * 8], I1[4 * 8];
        CHECK(fpx_index_search(ix, 4, bx, 8, NULL, NULL, D0, I0, &err) == 0);
        for (int i = 0; i < 32; i++)
            I0[i] = fpx_index_label_of(ix, I0[i]);
        CHECK(fpx_index_compact_build(ix, &c, &err) == 0 && c);
        fpx_index_compact_commit(ix, c);
        fpx_index_compact_free(c);
        CHECK_INDEX(ix);
        CHECK(ix->nslots == N / 2);
        CHECK(fpx_index_search(ix, 4, bx, 8, NULL, NULL, D1, I1, &err) == 0);
        /* Equal distances in order (Hamming distances tie often, and ties
         * may come in another order), each hit a live vector's label. For
         * BIVF only BFlat's exactness holds: with dead codes in it a binary
         * IVF index is scanned exhaustively (FAISS 1.7.3 takes no selector
         * for binary searches), and after compaction FAISS probes nprobe lists. */
        for (int i = 0; i < 32; i++) {
            if (t == 0)
                CHECK(D1[i] == D0[i]);
            CHECK(I1[i] < 0 || fpx_index_label_of(ix, I1[i]) % 2 == 0);
        }
        fpx_index_free(ix);
    }
    free(bx);
    free(x);
}

/*
 * A random sequence of upserts, deletes and label writes over a small pool of
 * keys, against a model of which vector each key holds: after every step the
 * invariants hold and every key the model holds finds exactly its vector.
 */
static void test_random_model(void) {
    enum { D = 6, POOL = 16, STEPS = 300 };
    fpx_index *ix = make("Flat", D, NULL);
    char names[POOL][16];
    float model[POOL][D];
    int present[POOL] = {0};
    for (int i = 0; i < POOL; i++)
        snprintf(names[i], sizeof names[i], "k%d", i);
    mp m;
    for (int step = 0; step < STEPS; step++) {
        int op = (int)(test_rnd() % 10);
        if (op < 6) { /* upsert 1..3 keys (repeats within a request allowed) */
            int n = 1 + (int)(test_rnd() % 3);
            const char *keys[3];
            float xs[3 * D];
            int which[3];
            for (int i = 0; i < n; i++) {
                which[i] = (int)(test_rnd() % POOL);
                keys[i] = names[which[i]];
                for (int t = 0; t < D; t++)
                    xs[i * D + t] = test_frand();
            }
            CHECK(add(ix, n, xs, NULL, items(&m, n, keys, NULL)) == n);
            mp_free(&m);
            for (int i = 0; i < n; i++) {
                memcpy(model[which[i]], xs + i * D, sizeof model[0]);
                present[which[i]] = 1;
            }
        } else if (op < 9) { /* delete 1..2 keys */
            int n = 1 + (int)(test_rnd() % 2), want = 0;
            const char *keys[2];
            int which[2];
            for (int i = 0; i < n; i++) {
                which[i] = (int)(test_rnd() % POOL);
                keys[i] = names[which[i]];
            }
            for (int i = 0; i < n; i++) {
                want += present[which[i]] && !(i == 1 && which[1] == which[0]);
            }
            CHECK(del(ix, ids(&m, n, keys)) == want);
            mp_free(&m);
            for (int i = 0; i < n; i++)
                present[which[i]] = 0;
        } else { /* a keyless vector with the next label */
            float xs[D];
            for (int t = 0; t < D; t++)
                xs[t] = test_frand();
            int64_t next = ix->next_label;
            CHECK(add(ix, 1, xs, NULL, NULL) == 1);
            CHECK(fpx_index_label_of(ix, fpx_index_slot_of(ix, next)) == next);
        }
        int64_t nkeys = 0;
        for (int i = 0; i < POOL; i++) {
            if (!present[i])
                continue;
            nkeys++;
            float d;
            int64_t s = nearest(ix, model[i], NULL, &d);
            CHECK(slot_has_key(ix, s, names[i]) && d < 1e-6f);
        }
        CHECK(ix->nkeys == nkeys);
    }
    fpx_index_free(ix);
}

/* The checker is not vacuous: each kind of broken table is reported. */
static void test_checker_catches(void) {
    enum { D = 4 };
    float *x = test_vectors(8, D);
    fpx_index *ix = make("Flat", D, NULL);
    mp m;
    static const char *k[] = {"a", "b", "c", "d"};
    add(ix, 4, x, NULL, items(&m, 4, k, NULL));
    mp_free(&m);
    static const char *gone[] = {"b"};
    CHECK(del(ix, ids(&m, -1, gone)) == 1);
    mp_free(&m);
    fpx_err err = {0};
    ix->nlive++;
    CHECK(fpx_index_check(ix, &err) == -1 && err.type == FPX_E_INTERNAL);
    ix->nlive--;
    ix->alive[0] &= ~(uint64_t)1; /* slot 0 dead but still mapped */
    CHECK(fpx_index_check(ix, &err) == -1);
    ix->alive[0] |= 1;
    ix->alive[0] |= (uint64_t)1 << 9; /* a bit past nslots */
    CHECK(fpx_index_check(ix, &err) == -1);
    ix->alive[0] &= ~((uint64_t)1 << 9);
    ix->next_label--;
    CHECK(fpx_index_check(ix, &err) == -1);
    ix->next_label++;
    ix->nkeys--;
    CHECK(fpx_index_check(ix, &err) == -1);
    ix->nkeys++;
    fpx_blob *stolen = ix->keys[2]; /* a live slot whose key is not in the map */
    ix->keys[2] = ix->keys[0];
    CHECK(fpx_index_check(ix, &err) == -1);
    ix->keys[2] = stolen;
    ix->keys[1] = stolen; /* a dead slot keeping a key */
    CHECK(fpx_index_check(ix, &err) == -1);
    ix->keys[1] = NULL;
    ix->nslots--;
    CHECK(fpx_index_check(ix, &err) == -1);
    ix->nslots++;
    CHECK_INDEX(ix);
    free(x);
    fpx_index_free(ix);
}

int main(void) {
    test_checker_catches();
    test_add_keys_delete();
    test_explicit_labels();
    test_remove();
    test_train_reset();
    test_search_filters("Flat");
    test_search_filters("HNSW16");
    test_snapshot();
    test_random_model();
    test_compact();
    return CHECK_STATUS("test_index");
}
