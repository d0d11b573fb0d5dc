/*
 * slotmap.c - see slotmap.h.
 */
#include "slotmap.h"
#include "util.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* The SipHash key. Written once at start-up, before any thread reads it. */
static uint8_t hash_key[crypto_shorthash_KEYBYTES];

_Static_assert(FPX_HASH_SEED_BYTES == crypto_shorthash_KEYBYTES, "SipHash takes a 16-byte key");

int fpx_hash_seed_random(fpx_err *err) {
    if (sodium_init() < 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "libsodium cannot initialise");
    randombytes_buf(hash_key, sizeof hash_key);
    return 0;
}

void fpx_hash_seed(const uint8_t seed[FPX_HASH_SEED_BYTES]) {
    memcpy(hash_key, seed, sizeof hash_key);
}

uint64_t fpx_hash_bytes(const void *p, size_t n) {
    uint8_t out[crypto_shorthash_BYTES];
    crypto_shorthash(out, p, n, hash_key);
    return fpx_get_u64(out);
}

uint64_t fpx_hash_i64(int64_t v) {
    /* Hashed as its 8 little-endian bytes, so the value is the same on
     * every host; SipHash of 8 bytes costs about 20 ns. */
    uint8_t b[8];
    fpx_put_u64(b, (uint64_t)v);
    return fpx_hash_bytes(b, sizeof b);
}

void fpx_slotmap_init(fpx_slotmap *m) {
    memset(m, 0, sizeof *m);
}

void fpx_slotmap_free(fpx_slotmap *m) {
    free(m->tab);
    memset(m, 0, sizeof *m);
}

static void slotmap_insert_raw(fpx_slotmap_entry *tab, size_t cap, uint64_t hash, int64_t slot) {
    size_t i = hash & (cap - 1);
    while (tab[i].slot >= 0)
        i = (i + 1) & (cap - 1);
    tab[i].hash = hash;
    tab[i].slot = slot;
}

int fpx_slotmap_reserve(fpx_slotmap *m, size_t extra) {
    size_t need = m->count + extra;
    if (need <= m->cap / 2)
        return 0;
    size_t cap = m->cap ? m->cap : 16;
    while (cap / 2 < need) {
        if (cap > SIZE_MAX / 2 / sizeof(fpx_slotmap_entry))
            return -1;
        cap *= 2;
    }
    fpx_slotmap_entry *tab = malloc(cap * sizeof *tab);
    if (!tab)
        return -1;
    for (size_t i = 0; i < cap; i++)
        tab[i].slot = -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->tab[i].slot >= 0)
            slotmap_insert_raw(tab, cap, m->tab[i].hash, m->tab[i].slot);
    free(m->tab);
    m->tab = tab;
    m->cap = cap;
    return 0;
}

int64_t fpx_slotmap_get(const fpx_slotmap *m, uint64_t hash, const void *key, size_t keylen,
                        fpx_slotmap_eq eq, const void *ctx) {
    if (!m->cap)
        return -1;
    for (size_t i = hash & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const fpx_slotmap_entry *e = &m->tab[i];
        if (e->slot < 0)
            return -1;
        if (e->hash == hash && eq(ctx, e->slot, key, keylen))
            return e->slot;
    }
}

void fpx_slotmap_put(fpx_slotmap *m, uint64_t hash, int64_t slot) {
    slotmap_insert_raw(m->tab, m->cap, hash, slot);
    m->count++;
}

void fpx_slotmap_del(fpx_slotmap *m, uint64_t hash, int64_t slot) {
    if (!m->cap)
        return;
    size_t mask = m->cap - 1, i = hash & mask;
    while (m->tab[i].slot >= 0 && m->tab[i].slot != slot)
        i = (i + 1) & mask;
    if (m->tab[i].slot < 0)
        return;
    /* Backward-shift: pull later entries of the probe run into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->tab[j].slot >= 0; j = (j + 1) & mask) {
        size_t home = m->tab[j].hash & mask;
        /* Entry j may move to the hole if its home is not in (hole, j]. */
        int between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!between) {
            m->tab[hole] = m->tab[j];
            hole = j;
        }
    }
    m->tab[hole].slot = -1;
    m->count--;
}

size_t fpx_slotmap_max_probe(const fpx_slotmap *m) {
    size_t worst = 0, mask = m->cap ? m->cap - 1 : 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->tab[i].slot < 0)
            continue;
        size_t run = ((i - (m->tab[i].hash & mask)) & mask) + 1;
        if (run > worst)
            worst = run;
    }
    return worst;
}
