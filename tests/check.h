/*
 * check.h - the assertion macro of the C test programs: counts checks and
 * failures, reports each failure with its line, and lets the test go on so
 * one run shows every broken case. main() returns CHECK_STATUS(name).
 */
#ifndef FPX_TESTS_CHECK_H
#define FPX_TESTS_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* Prints the tally; the exit status of a test program. */
#define CHECK_STATUS(name)                                                                         \
    (printf("%s: %d checks, %d failed\n", name, checks, failures), failures ? 1 : 0)

/* 1 when the string s occurs in the n bytes at p (a reply body, say). */
static inline int test_contains(const uint8_t *p, size_t n, const char *s) {
    size_t m = strlen(s);
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(p + i, s, m))
            return 1;
    return 0;
}

/* Test data: xorshift64, so every run sees the same numbers. */
static uint64_t test_rng_state = 0x9e3779b97f4a7c15ull;

static inline uint64_t test_rnd(void) {
    test_rng_state ^= test_rng_state << 13;
    test_rng_state ^= test_rng_state >> 7;
    test_rng_state ^= test_rng_state << 17;
    return test_rng_state;
}

/* Uniform in [0, 1). */
static inline float test_frand(void) {
    return (float)(test_rnd() >> 40) / (float)(1u << 24);
}

/* n*d uniform floats, malloc'd (aborts when out of memory). */
static inline float *test_vectors(int64_t n, int64_t d) {
    float *x = malloc((size_t)(n * d) * sizeof *x);
    if (!x)
        abort();
    for (int64_t i = 0; i < n * d; i++)
        x[i] = test_frand();
    return x;
}

#endif
