/*
 * slotmap.h - an open-addressing hash table from a key (bytes or a label) to
 * a slot, storing only (hash, slot) pairs: the key itself is read back from
 * the index's own per-slot tables through an equality callback, so the map
 * costs 16 bytes a slot at most and keeps no second copy of any key.
 *
 * Linear probing with backward-shift deletion (no tombstones), kept at most
 * half full.
 *
 * Keys and labels are chosen by callers, so the hash is keyed: SipHash-2-4
 * (libsodium's crypto_shorthash) under a random per-process seed. With an
 * unkeyed (or keyed but invertible) function a caller can pick labels that
 * all land in one probe run and turn every insert and lookup into a scan of
 * the whole table, under the index's write lock. Hashes are never stored on
 * disk: the tables are rebuilt at load under that process's seed.
 */
#ifndef FPX_SLOTMAP_H
#define FPX_SLOTMAP_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

typedef struct fpx_slotmap_entry {
    uint64_t hash;
    int64_t slot; /* -1 = empty */
} fpx_slotmap_entry;

/* Returns 1 when the key of `slot` equals the key being looked up. */
typedef int (*fpx_slotmap_eq)(const void *ctx, int64_t slot, const void *key, size_t keylen);

typedef struct fpx_slotmap {
    fpx_slotmap_entry *tab;
    size_t cap; /* a power of two, or 0 */
    size_t count;
} fpx_slotmap;

#define FPX_HASH_SEED_BYTES 16

/* Seeds the hash with a random key (libsodium's randombytes). Call once at
 * start-up, before any table is filled and before threads start. 0 or -1. */
int fpx_hash_seed_random(fpx_err *err);
/* Seeds the hash with a given key (tests). Same rules as above. */
void fpx_hash_seed(const uint8_t seed[FPX_HASH_SEED_BYTES]);
uint64_t fpx_hash_bytes(const void *p, size_t n);
uint64_t fpx_hash_i64(int64_t v);

void fpx_slotmap_init(fpx_slotmap *m);
void fpx_slotmap_free(fpx_slotmap *m);
/* Makes room for `extra` more entries without failing later. 0 or -1 (ENOMEM). */
int fpx_slotmap_reserve(fpx_slotmap *m, size_t extra);
/* Slot for key, or -1. */
int64_t fpx_slotmap_get(const fpx_slotmap *m, uint64_t hash, const void *key, size_t keylen,
                        fpx_slotmap_eq eq, const void *ctx);
/* Inserts (hash, slot); the key must not be present; room must be reserved. */
void fpx_slotmap_put(fpx_slotmap *m, uint64_t hash, int64_t slot);
/* Removes the entry holding exactly this slot, if any. */
void fpx_slotmap_del(fpx_slotmap *m, uint64_t hash, int64_t slot);
/* The longest probe run of any entry: how many slots a lookup of the worst
 * placed key reads (0 for an empty map). O(cap); for tests and diagnostics. */
size_t fpx_slotmap_max_probe(const fpx_slotmap *m);

#endif
