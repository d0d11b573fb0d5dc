/*
 * describe.c - checks of a factory description before FAISS sees it
 * (describe.h).
 */
#include "engine/describe.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The number at desc[i] is the squared radius of "ZnLattice<n>x<r2>_<b>"
 * (checked with the dimension by fpx_describe_check_lattice), not a code's
 * bits. */
static bool lattice_radius(const char *desc, size_t i) {
    size_t j = i - 1; /* the 'x' */
    while (j > 0 && desc[j - 1] >= '0' && desc[j - 1] <= '9')
        j--;
    return j >= 9 && j < i - 1 && !strncmp(desc + j - 9, "ZnLattice", 9);
}

/* A multi-index quantizer, "IMI2x<b>", "Residual<M>x<b>" or an HNSW's
 * "_2x<b>+PQ", has 2^(M b) lists, each an empty list header of FAISS's
 * (24 bytes) from the start: "IMI2x16" asked for 96 GiB at create. Held to
 * the 2^20 lists of "IVF<n>". */
static int multi_index_check(const char *desc, fpx_err *err) {
    for (const char *p = desc; *p; p++) {
        int m = 0, b = 0;
        if ((!strncmp(p, "IMI", 3) && sscanf(p, "IMI%dx%d", &m, &b) == 2) ||
            (!strncmp(p, "Residual", 8) && sscanf(p, "Residual%dx%d", &m, &b) == 2) ||
            (!strncmp(p, "_2x", 3) && (m = 2, sscanf(p, "_2x%d", &b) == 1))) {
            if ((long)m * b > 20)
                return fpx_err_set(err, FPX_E_VALIDATION,
                                   "index_type \"%s\": a multi-index quantizer of %d x %d bits "
                                   "has 2^%ld lists, at most 2^20 are served (as for IVF<n>)",
                                   desc, m, b, (long)m * b);
        }
    }
    return 0;
}

int fpx_describe_check(const char *desc, fpx_err *err) {
    size_t len = strlen(desc);
    if (len == 0 || len > 255)
        return fpx_err_set(err, FPX_E_VALIDATION, "index_type must be 1..255 characters");
    if (multi_index_check(desc, err))
        return -1;
    for (size_t i = 0; i < len;) {
        if (desc[i] == '-' && desc[i + 1] >= '0' && desc[i + 1] <= '9')
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "index_type \"%s\": every number must be in 1..%ld", desc,
                               FPX_MAX_FACTORY_NUMBER);
        if (desc[i] < '0' || desc[i] > '9') {
            i++;
            continue;
        }
        size_t j = i;
        long v = 0;
        while (j < len && desc[j] >= '0' && desc[j] <= '9') {
            if (v <= FPX_MAX_FACTORY_NUMBER)
                v = v * 10 + (desc[j] - '0');
            j++;
        }
        if (v < 1 || v > FPX_MAX_FACTORY_NUMBER)
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "index_type \"%s\": every number must be in 1..%ld", desc,
                               FPX_MAX_FACTORY_NUMBER);
        if (i >= 4 && !strncmp(desc + i - 4, "HNSW", 4) && (v < 2 || v > FPX_MAX_GRAPH_DEGREE))
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "index_type \"%s\": HNSW needs M in 2..%d (each vector holds 2M "
                               "links)",
                               desc, FPX_MAX_GRAPH_DEGREE);
        if (i >= 3 && !strncmp(desc + i - 3, "NSG", 3) && v > FPX_MAX_GRAPH_DEGREE)
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "index_type \"%s\": NSG needs R at most %d (each vector holds R "
                               "links)",
                               desc, FPX_MAX_GRAPH_DEGREE);
        if (i >= 1 && desc[i - 1] == 'x' && v > 16 && !lattice_radius(desc, i))
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "index_type \"%s\": codes are at most 16 bits", desc);
        i = j;
    }
    return 0;
}

/*
 * "ZnLattice<nsq>x<r2>_<nbit>": FAISS's ZnSphereCodecRec, built before
 * IndexLattice checks anything, asserts (Debian's build keeps asserts) that a
 * sub-vector's dimension d/nsq is a power of 2, reads before its tables for
 * dimension 1, counts the lattice points in 64 bits, and caches every point
 * of its lowest levels: (levels) x (r2+1)^2 counts and, for 8 dimensions,
 * about 16 r^3 points of each squared norm r up to r2. Refused unless d/nsq
 * is a power of 2 from 2 on, every count fits in 63 bits, these tables stay
 * under 256 MiB and the scale has at most 16 bits.
 */
static int lattice_too_big(const char *desc, double bytes, fpx_err *err) {
    return fpx_err_set(err, FPX_E_VALIDATION,
                       "index_type \"%s\": ZnLattice tables of %.0f MiB; at most 256 are served",
                       desc, bytes / (1024 * 1024));
}

/* Point counts of ZnSphereCodecRec: n(ld, r) points of squared norm r in
 * 2^ld dimensions, r up to r2. */
typedef struct lattice_counts {
    uint64_t *nv; /* levels x (r2 + 1) */
    int r2;
} lattice_counts;

static uint64_t count_of(const lattice_counts *c, int ld, int r) {
    return c->nv[(size_t)ld * (size_t)(c->r2 + 1) + (size_t)r];
}

/* The points of norm r in 2^ld dimensions whose first half has a norm below
 * a (FAISS's cumulative table, computed as it is read). */
static uint64_t cum_of(const lattice_counts *c, int ld, int r, int a) {
    uint64_t s = 0;
    for (int i = 0; i < a; i++)
        s += count_of(c, ld - 1, i) * count_of(c, ld - 1, r - i);
    return s;
}

/* Whether FAISS's decode of `code` at level ld and norm r runs to its end:
 * it splits the code by a binary search in the cumulative counts and a
 * division by the second half's count, then at level 0 asserts that each
 * norm is a square in float arithmetic. A code past the points it counts
 * can meet a count of 0 (a division by zero) or a norm that is not a
 * square (an assertion that aborts the process in Debian's build). */
static bool lattice_decodes(const lattice_counts *c, int ld, int r, uint64_t code) {
    if (ld == 0) {
        if (r == 0)
            return true;
        float q = (float)sqrt((double)r); /* as FAISS computes it */
        return q * q == (float)r;
    }
    int a = 0;
    uint64_t below = 0;
    for (int i = 1; i <= r; i++) { /* the last a whose count below is <= code */
        uint64_t s = below + count_of(c, ld - 1, i - 1) * count_of(c, ld - 1, r - i + 1);
        if (s <= code) {
            a = i;
            below = s;
        }
        if (s > code)
            break;
    }
    uint64_t rest = code - below, div = count_of(c, ld - 1, r - a);
    return div && lattice_decodes(c, ld - 1, a, rest / div) &&
           lattice_decodes(c, ld - 1, r - a, rest % div);
}

static int min_int(int a, int b) {
    return a < b ? a : b;
}

/* FAISS's constructor fills its decode cache by decoding, for each norm
 * r2sub, the codes from cum(cache + 1, r2, r2 - r2sub) on, one per point of
 * norm r2sub at the cache level. With 2 or 4 dimensions per sub-vector some
 * of them lie past the points of norm r2; each of those must decode. */
static bool lattice_cache_decodes(const lattice_counts *c, int levels) {
    int top = levels - 1, cache = min_int(3, levels - 2);
    uint64_t total = count_of(c, top, c->r2);
    for (int r2sub = 0; r2sub <= c->r2; r2sub++) {
        uint64_t nvi = count_of(c, cache, r2sub);
        if (!nvi)
            continue;
        uint64_t code0 = cum_of(c, cache + 1, c->r2, c->r2 - r2sub);
        for (uint64_t i = total > code0 ? total - code0 : 0; i < nvi; i++)
            if (!lattice_decodes(c, top, c->r2, code0 + i))
                return false;
    }
    return true;
}

/* Fills c's counts; -1 with err set when one does not fit in 63 bits. */
static int count_points(lattice_counts *c, int levels, const char *desc, int64_t dsq,
                        fpx_err *err) {
    const uint64_t cap = (uint64_t)1 << 63;
    int r2 = c->r2;
    uint64_t *nv = c->nv;
    for (int r = 0; r <= r2; r++) {
        int q = (int)sqrt((double)r);
        while (q * q > r)
            q--;
        while ((q + 1) * (q + 1) <= r)
            q++;
        nv[r] = q * q == r ? (r == 0 ? 1 : 2) : 0;
    }
    for (int ld = 1; ld < levels; ld++)
        for (int r = 0; r <= r2; r++) {
            uint64_t sum = 0, t;
            const uint64_t *below = nv + (size_t)(ld - 1) * (size_t)(r2 + 1);
            for (int a = 0; a <= r; a++) {
                if (!below[a])
                    continue;
                if (__builtin_mul_overflow(below[a], below[r - a], &t) ||
                    __builtin_add_overflow(sum, t, &sum) || sum >= cap)
                    return fpx_err_set(err, FPX_E_VALIDATION,
                                       "index_type \"%s\": ZnLattice with %lld dimensions per "
                                       "sub-vector and squared radius %d has more than 2^63 "
                                       "points",
                                       desc, (long long)dsq, r2);
            }
            nv[(size_t)ld * (size_t)(r2 + 1) + (size_t)r] = sum;
        }
    return 0;
}

int fpx_describe_check_lattice(const char *desc, int64_t dim, fpx_err *err) {
    const char *z = strstr(desc, "ZnLattice");
    int nsq, r2, nbit;
    if (!z || sscanf(z, "ZnLattice%dx%d_%d", &nsq, &r2, &nbit) != 3)
        return 0;                      /* none, or FAISS's factory refuses it */
    if (nsq < 0 || r2 < 0 || nbit < 0) /* numbers read from an index's bytes */
        return fpx_err_set(err, FPX_E_VALIDATION, "index_type \"%s\": a negative number", desc);
    if (z != desc)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "index_type \"%s\": ZnLattice is served as a whole description only",
                           desc);
    int64_t dsq = nsq > 0 && dim % nsq == 0 ? dim / nsq : 0;
    if (dsq < 2 || (dsq & (dsq - 1)))
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "index_type \"%s\": ZnLattice needs d / %d to be a power of 2 from 2 "
                           "on (d = %lld)",
                           desc, nsq, (long long)dim);
    if (nbit > 16)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "index_type \"%s\": a ZnLattice scale has at most 16 bits", desc);
    int levels = 1;
    while ((int64_t)1 << (levels - 1) < dsq)
        levels++;
    /* The count tables alone bound r2 (to about 4096) before they are
     * filled, in time quadratic in r2. */
    const double max_bytes = 256.0 * 1024 * 1024;
    double bytes = 8.0 * levels * (r2 + 1.0) * (r2 + 1.0);
    if (bytes > max_bytes)
        return lattice_too_big(desc, bytes, err);
    lattice_counts c = {calloc((size_t)levels * (size_t)(r2 + 1), sizeof(uint64_t)), r2};
    if (!c.nv)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory checking a ZnLattice");
    int rc = count_points(&c, levels, desc, dsq, err);
    if (rc == 0) {
        int cache = min_int(3, levels - 2);
        for (int r = 0; r <= r2; r++)
            bytes += 4.0 * (double)count_of(&c, cache, r) * (double)(1 << cache);
        if (bytes > max_bytes)
            rc = lattice_too_big(desc, bytes, err);
    }
    if (rc == 0 && !lattice_cache_decodes(&c, levels))
        rc = fpx_err_set(err, FPX_E_VALIDATION,
                         "index_type \"%s\": FAISS 1.7.3's ZnLattice codec for %lld dimensions "
                         "per sub-vector and squared radius %d decodes codes past its points "
                         "when it is built (it would abort the process)",
                         desc, (long long)dsq, r2);
    free(c.nv);
    return rc;
}
