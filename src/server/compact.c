/*
 * compact.c - an index rebuilt without its deleted vectors (tombstones).
 *
 * The snapshot writer (server.c) builds the compacted copy under the index's
 * shared lock, so searches go on, then swaps it in under a brief exclusive
 * lock if no write came in meanwhile (docs/storage.md). The copy keeps every
 * label, key and metadata blob: the blobs are shared with the live index
 * until the swap, and the tables change hands whole in fpx_index_compact_commit.
 */
#include "index_impl.h"

#include <stdlib.h>

int fpx_index_compact_due(const fpx_index *ix, int64_t min_dead) {
    int64_t dead = ix->nslots - ix->nlive;
    return min_dead > 0 && dead >= min_dead && dead * 4 >= ix->nslots;
}

/* Frees an index made by fpx_index_compact_build or left by _commit: its
 * key and metadata blobs are the live index's, so only the tables go. */
void fpx_index_compact_free(fpx_index *c) {
    if (!c)
        return;
    c->nslots = 0; /* clear_blobs then frees no blob */
    fpx_index_free(c);
}

int fpx_index_compact_build(const fpx_index *ix, fpx_index **out, fpx_err *err) {
    *out = NULL;
    fpx_bitset live = fpx_index_live(ix);
    fpx_engine *eng;
    int rc = fpx_engine_compact(ix->eng, &live, 0, &eng, err);
    if (rc != 0)
        return rc;
    fpx_index *c = fpx_index_alloc(ix->tenant, ix->name, "", 0, eng);
    int64_t n = ix->nlive, *labels = NULL;
    if (!c || fpx_index_reserve(c, n, ix->keys != NULL, ix->meta != NULL) ||
        (ix->keys && fpx_slotmap_reserve(&c->keymap, (size_t)ix->nkeys)) ||
        !(labels = malloc(sizeof(int64_t) * (size_t)(n ? n : 1)))) {
        fpx_index_compact_free(c);
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory compacting an index");
    }
    /* Identity mode again only when it would hold for a fresh index: labels
     * 0..n-1 in order and the counter at n. */
    int identity = ix->next_label == n;
    int64_t t = 0;
    for (int64_t s = 0; s < ix->nslots; s++) {
        if (!fpx_bit_get(ix->alive, s))
            continue;
        labels[t] = fpx_index_label_of(ix, s);
        identity &= labels[t] == t;
        fpx_bit_set(c->alive, t);
        if (ix->meta)
            c->meta[t] = ix->meta[s];
        if (ix->keys && ix->keys[s])
            fpx_index_put_key(c, t, ix->keys[s], fpx_key_hash(ix->keys[s]));
        t++;
    }
    c->nslots = c->nlive = n;
    c->next_label = ix->next_label;
    rc = identity ? 0 : fpx_index_label_table(c, labels, 0);
    free(labels);
    if (rc != 0) { /* 1 (a repeated label) cannot happen: the live labels are distinct */
        fpx_index_compact_free(c);
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory compacting an index");
    }
    *out = c;
    return 0;
}

static void swap_i64(int64_t *a, int64_t *b) {
    int64_t t = *a;
    *a = *b;
    *b = t;
}

void fpx_index_compact_commit(fpx_index *ix, fpx_index *c) {
    /* The engine and the slot tables change hands; everything else (name,
     * lock, lease, storage state, label counter) stays with ix. */
    fpx_engine *e = ix->eng;
    ix->eng = c->eng;
    c->eng = e;
    uint64_t *alive = ix->alive;
    ix->alive = c->alive;
    c->alive = alive;
    int64_t *labels = ix->labels;
    ix->labels = c->labels;
    c->labels = labels;
    fpx_blob **keys = ix->keys, **meta = ix->meta;
    ix->keys = c->keys;
    ix->meta = c->meta;
    c->keys = keys;
    c->meta = meta;
    fpx_slotmap keymap = ix->keymap, labelmap = ix->labelmap;
    ix->keymap = c->keymap;
    ix->labelmap = c->labelmap;
    c->keymap = keymap;
    c->labelmap = labelmap;
    swap_i64(&ix->nslots, &c->nslots);
    swap_i64(&ix->cap, &c->cap);
    swap_i64(&ix->nlive, &c->nlive);
    swap_i64(&ix->nkeys, &c->nkeys);
    ix->compactions++;
}
