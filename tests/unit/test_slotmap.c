/*
 * test_slotmap.c - the label and key tables under hash flooding.
 *
 * The labels are made by inverting the unkeyed hash the tables once used
 * (a murmur-style finaliser: xor-shifts and multiplications by odd
 * constants, each one invertible), so that all of them share one home slot
 * at every table size. Under it they formed a single probe run of n slots;
 * under the keyed hash the longest run must stay small. The check is on the
 * table's structure (its longest probe run), not on time.
 */
#include "server/slotmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define N 65536
#define C1 0xff51afd7ed558ccdull
#define C2 0xc4ceb9fe1a85ec53ull

/* The former label hash. */
static uint64_t old_hash(uint64_t h) {
    h ^= h >> 33;
    h *= C1;
    h ^= h >> 33;
    h *= C2;
    h ^= h >> 33;
    return h;
}

/* The inverse of an odd number modulo 2^64 (Newton's iteration). */
static uint64_t mul_inverse(uint64_t c) {
    uint64_t x = c;
    for (int i = 0; i < 6; i++)
        x *= 2 - c * x;
    return x;
}

/* x ^= x >> 33 is its own inverse: the shift is more than half the width. */
static uint64_t old_unhash(uint64_t h) {
    h ^= h >> 33;
    h *= mul_inverse(C2);
    h ^= h >> 33;
    h *= mul_inverse(C1);
    h ^= h >> 33;
    return h;
}

static int label_eq(const void *ctx, int64_t slot, const void *key, size_t keylen) {
    (void)keylen;
    const int64_t *labels = ctx;
    return labels[slot] == *(const int64_t *)key;
}

/* n non-negative labels whose old hash has its low 32 bits all zero. */
static void colliding_labels(int64_t *labels, size_t n) {
    size_t got = 0;
    for (uint64_t j = 1; got < n; j++) {
        uint64_t v = old_unhash(j << 32);
        if (v >> 63)
            continue; /* labels are >= 0 */
        labels[got++] = (int64_t)v;
    }
}

static void fill(fpx_slotmap *m, const int64_t *labels, size_t n, int keyed) {
    fpx_slotmap_init(m);
    CHECK(fpx_slotmap_reserve(m, n) == 0);
    for (size_t s = 0; s < n; s++)
        fpx_slotmap_put(m, keyed ? fpx_hash_i64(labels[s]) : old_hash((uint64_t)labels[s]),
                        (int64_t)s);
}

int main(void) {
    fpx_err err;
    CHECK(fpx_hash_seed_random(&err) == 0);
    int64_t *labels = malloc(N * sizeof *labels);
    CHECK(labels != NULL);
    if (!labels)
        return CHECK_STATUS("test_slotmap");
    colliding_labels(labels, N);
    for (size_t i = 1; i < N; i++)
        CHECK((old_hash((uint64_t)labels[i]) & 0xffffffffu) == 0);

    /* The input is what it claims: under the old hash, one run of N slots. */
    fpx_slotmap m;
    fill(&m, labels, N, 0);
    CHECK(fpx_slotmap_max_probe(&m) == N);
    fpx_slotmap_free(&m);

    /* Under the keyed hash the same labels spread out. Linear probing at half
     * load has runs of a few dozen slots at this size; 256 is far from N. */
    fill(&m, labels, N, 1);
    size_t worst = fpx_slotmap_max_probe(&m);
    printf("longest probe run for %d flooding labels: %zu slots\n", N, worst);
    CHECK(worst > 0 && worst < 256);
    for (size_t s = 0; s < N; s += 97)
        CHECK(fpx_slotmap_get(&m, fpx_hash_i64(labels[s]), &labels[s], sizeof labels[s], label_eq,
                              labels) == (int64_t)s);
    /* Deleting keeps every other entry reachable (backward shift). */
    for (size_t s = 0; s < N; s += 2)
        fpx_slotmap_del(&m, fpx_hash_i64(labels[s]), (int64_t)s);
    CHECK(m.count == N / 2);
    for (size_t s = 0; s < N; s += 101) {
        int64_t want = s % 2 ? (int64_t)s : -1;
        CHECK(fpx_slotmap_get(&m, fpx_hash_i64(labels[s]), &labels[s], sizeof labels[s], label_eq,
                              labels) == want);
    }
    fpx_slotmap_free(&m);

    /* Two seeds give two different functions, for labels and for bytes. */
    uint8_t a[FPX_HASH_SEED_BYTES], b[FPX_HASH_SEED_BYTES];
    memset(a, 1, sizeof a);
    memset(b, 1, sizeof b);
    b[0] = 2;
    const char *key = "a caller's key";
    fpx_hash_seed(a);
    uint64_t la = fpx_hash_i64(42), ka = fpx_hash_bytes(key, strlen(key));
    CHECK(fpx_hash_i64(42) == la); /* deterministic under one seed */
    fpx_hash_seed(b);
    uint64_t lb = fpx_hash_i64(42), kb = fpx_hash_bytes(key, strlen(key));
    CHECK(la != lb);
    CHECK(ka != kb);
    int differ = 0;
    for (int64_t v = 0; v < 64; v++) {
        fpx_hash_seed(a);
        uint64_t x = fpx_hash_i64(v);
        fpx_hash_seed(b);
        differ += x != fpx_hash_i64(v);
    }
    CHECK(differ == 64);

    free(labels);
    return CHECK_STATUS("test_slotmap");
}
