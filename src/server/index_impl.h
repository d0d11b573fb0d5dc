/*
 * index_impl.h - what index.c lends to filter.c and snapshot.c, and no
 * other module includes: the bit operations on the live-slot bitset, the
 * making of key and metadata blobs, and the steps that build an index's
 * tables (allocation, capacity, the label table, the key map).
 *
 * The snapshot decoder builds its label table and key map with the same
 * functions add uses, so the two cannot drift apart in how they fill them.
 */
#ifndef FPX_INDEX_IMPL_H
#define FPX_INDEX_IMPL_H

#include "index.h"

static inline int fpx_bit_get(const uint64_t *w, int64_t i) {
    return (int)((w[i >> 6] >> (i & 63)) & 1u);
}
static inline void fpx_bit_set(uint64_t *w, int64_t i) {
    w[i >> 6] |= (uint64_t)1 << (i & 63);
}
static inline void fpx_bit_clear(uint64_t *w, int64_t i) {
    w[i >> 6] &= ~((uint64_t)1 << (i & 63));
}
/* 64-bit words holding nbits bits. */
static inline size_t fpx_words_for(int64_t nbits) {
    return (size_t)((nbits + 63) / 64);
}

/* A blob holding a copy of p[0..n), or NULL (out of memory, or n > 4 GiB). */
fpx_blob *fpx_blob_new(const void *p, size_t n);
/* The canonical msgpack bytes of an object, as a blob; NULL when out of memory. */
fpx_blob *fpx_blob_pack(const msgpack_object *o);

/* A new index around eng (taken, also on failure), with empty tables and the
 * first tlen bytes of type as its index_type; NULL when out of memory. */
fpx_index *fpx_index_alloc(const char *tenant, const char *name, const char *type, size_t tlen,
                           fpx_engine *eng);
/* Room for need slots in every table that exists, and in the key and metadata
 * tables when asked for (want_keys, want_meta). 0, or -1 when out of memory. */
int fpx_index_reserve(fpx_index *ix, int64_t need, int want_keys, int want_meta);
/*
 * Leaves identity mode: builds the label table, holding labels[0..nslots)
 * (8-byte values read with memcpy, so any alignment does; NULL: label =
 * slot), and maps every live slot's label, with room for extra more. 0; -1
 * when out of memory; 1 when two live slots hold the same label (only given
 * labels can). The index is consistent only on 0.
 */
int fpx_index_label_table(fpx_index *ix, const void *labels, int64_t extra);
/* Makes slot s (== nslots, with room in the tables) live under label, which
 * no live slot holds, without key or metadata (a merge's vectors). */
void fpx_index_occupy(fpx_index *ix, int64_t s, int64_t label);
/* The live slot holding key k, or -1. h is k's hash (fpx_key_hash): keys are
 * hashed once per request even when they are looked up and then stored. */
int64_t fpx_index_find_key(const fpx_index *ix, const fpx_blob *k, uint64_t h);
/* Gives slot s the key k (taken), whose hash is h: the key table must exist
 * and k be free. */
void fpx_index_put_key(fpx_index *ix, int64_t s, fpx_blob *k, uint64_t h);
/* The hash of key k in the key table. */
uint64_t fpx_key_hash(const fpx_blob *k);

#endif
