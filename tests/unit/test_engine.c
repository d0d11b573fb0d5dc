/*
 * test_engine.c - unit tests of the FAISS engine (src/engine) against real
 * FAISS: descriptions accepted and refused without crashing, training,
 * exact results of flat indexes against a brute-force scan, the `allowed`
 * filter returning k hits on every index type (the basis of delete, upsert
 * and metadata filters), per-search parameters, and serialization round trips.
 */
#include "engine/engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Deterministic uniform floats in [0, 1). */

static fpx_engine *make(const char *desc, int64_t d, fpx_metric metric) {
    fpx_engine *e = NULL;
    fpx_err err = {0};
    if (fpx_engine_create(desc, d, metric, &e, &err) != 0) {
        fprintf(stderr, "create %s: %s\n", desc, err.msg);
        return NULL;
    }
    return e;
}

static void test_descriptions(void) {
    static const char *good[] = {"Flat", "IVF4,Flat",    "HNSW8",        "PQ4",
                                 "SQ8",  "PCA8,Flat",    "IDMap,Flat",   "IDMap2,HNSW8",
                                 "LSH",  "IVF4,PQ4x4fs", "OPQ4,IVF4,PQ4"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        fpx_engine *e = make(good[i], 16, FPX_METRIC_L2);
        CHECK(e != NULL);
        if (e) {
            CHECK(fpx_engine_dim(e) == 16);
            CHECK(fpx_engine_ntotal(e) == 0);
            CHECK(fpx_engine_metric(e) == FPX_METRIC_L2);
        }
        fpx_engine_free(e);
    }
    /* Descriptions FAISS refuses, and ones that would abort, hang or exhaust
     * memory inside FAISS 1.7.3, all refused as validation errors. */
    static const char *bad[] = {"",
                                "garbage",
                                "IVF100000000,Flat",
                                "HNSW0",
                                "HNSW1",
                                "IVF0,Flat",
                                "NSG0",
                                "PQ8x30",
                                "PQ3",
                                "Flat,Flat",
                                "IVF4,",
                                ",",
                                "HNSW99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fpx_engine *e = NULL;
        fpx_err err = {0};
        int rc = fpx_engine_create(bad[i], 16, FPX_METRIC_L2, &e, &err);
        CHECK(rc == -1 && e == NULL);
        CHECK(err.type == FPX_E_VALIDATION);
        if (rc == 0) {
            fprintf(stderr, "  accepted bad description '%s'\n", bad[i]);
            fpx_engine_free(e);
        }
    }
}

/* Flat L2 and IP against a brute-force scan in double precision: the labels
 * agree and the distances agree to float rounding. */
static void test_flat_exact(fpx_metric metric) {
    const int64_t n = 500, d = 24, nq = 7, k = 5;
    float *xb = test_vectors(n, d), *xq = test_vectors(nq, d);
    fpx_engine *e = make("Flat", d, metric);
    fpx_err err = {0};
    CHECK(e && fpx_engine_is_trained(e));
    CHECK(fpx_engine_add(e, n, xb, &err) == 0);
    CHECK(fpx_engine_ntotal(e) == n);
    float D[7 * 5];
    int64_t I[7 * 5];
    CHECK(fpx_engine_search(e, nq, xq, k, NULL, NULL, D, I, &err) == 0);
    for (int64_t q = 0; q < nq; q++) {
        /* brute force: best k by selection */
        double best[5];
        int64_t bl[5];
        for (int j = 0; j < k; j++) {
            best[j] = metric == FPX_METRIC_L2 ? INFINITY : -INFINITY;
            bl[j] = -1;
        }
        for (int64_t i = 0; i < n; i++) {
            double s = 0;
            for (int64_t t = 0; t < d; t++) {
                double a = xq[q * d + t], b = xb[i * d + t];
                s += metric == FPX_METRIC_L2 ? (a - b) * (a - b) : a * b;
            }
            int pos = (int)k;
            while (pos > 0 && (metric == FPX_METRIC_L2 ? s < best[pos - 1] : s > best[pos - 1]))
                pos--;
            if (pos < k) {
                for (int j = (int)k - 1; j > pos; j--) {
                    best[j] = best[j - 1];
                    bl[j] = bl[j - 1];
                }
                best[pos] = s;
                bl[pos] = i;
            }
        }
        for (int j = 0; j < k; j++) {
            CHECK(I[q * k + j] == bl[j]);
            CHECK(fabs(D[q * k + j] - best[j]) < 1e-4 * (1 + fabs(best[j])));
        }
    }
    fpx_engine_free(e);
    free(xb);
    free(xq);
}

static void set_bit(uint64_t *w, int64_t p) {
    w[p / 64] |= (uint64_t)1 << (p % 64);
}
static int get_bit(const uint64_t *w, int64_t p) {
    return (int)(w[p / 64] >> (p % 64) & 1);
}

/* Only 10% of the positions allowed (the rest "deleted"): k=10 still returns
 * 10 hits, all allowed, on every index type; and with fewer allowed positions
 * than k, exactly those come back followed by -1. */
static void test_allowed(const char *desc, fpx_metric metric) {
    const int64_t n = 600, d = 16, nq = 3, k = 10;
    float *xb = test_vectors(n, d), *xq = test_vectors(nq, d);
    fpx_engine *e = make(desc, d, metric);
    fpx_err err = {0};
    CHECK(e != NULL);
    if (!e)
        goto out;
    if (!fpx_engine_is_trained(e))
        CHECK(fpx_engine_train(e, n, xb, &err) == 0);
    CHECK(fpx_engine_add(e, n, xb, &err) == 0);
    uint64_t words[(600 + 63) / 64];
    memset(words, 0, sizeof words);
    int64_t count = 0;
    for (int64_t p = 0; p < n; p++)
        if (p % 10 == 3) {
            set_bit(words, p);
            count++;
        }
    fpx_bitset allowed = {words, n, count};
    float D[3 * 10];
    int64_t I[3 * 10];
    CHECK(fpx_engine_search(e, nq, xq, k, NULL, &allowed, D, I, &err) == 0);
    int all_found = 1, all_allowed = 1, distinct = 1;
    for (int64_t q = 0; q < nq; q++)
        for (int64_t j = 0; j < k; j++) {
            int64_t l = I[q * k + j];
            all_found &= l >= 0;
            all_allowed &= l < 0 || (l < n && get_bit(words, l));
            for (int64_t t = 0; t < j; t++)
                distinct &= l < 0 || I[q * k + t] != l;
        }
    CHECK(all_found);
    CHECK(all_allowed);
    CHECK(distinct);
    if (!all_found || !all_allowed)
        fprintf(stderr, "  index type %s\n", desc);

    /* three allowed positions, k = 10: those three, then -1 */
    memset(words, 0, sizeof words);
    set_bit(words, 5);
    set_bit(words, 77);
    set_bit(words, 599);
    fpx_bitset three = {words, n, 3};
    CHECK(fpx_engine_search(e, 1, xq, k, NULL, &three, D, I, &err) == 0);
    int64_t seen = 0;
    for (int64_t j = 0; j < 3; j++)
        seen += I[j] == 5 || I[j] == 77 || I[j] == 599;
    CHECK(seen == 3);
    int rest_empty = 1;
    for (int64_t j = 3; j < k; j++)
        rest_empty &= I[j] == -1;
    CHECK(rest_empty);

    /* nothing allowed: all -1 */
    memset(words, 0, sizeof words);
    fpx_bitset none = {words, n, 0};
    CHECK(fpx_engine_search(e, 1, xq, k, NULL, &none, D, I, &err) == 0);
    int empty = 1;
    for (int64_t j = 0; j < k; j++)
        empty &= I[j] == -1;
    CHECK(empty);
    fpx_engine_free(e);
out:
    free(xb);
    free(xq);
}

static void test_training_and_params(void) {
    const int64_t n = 400, d = 8;
    float *xb = test_vectors(n, d);
    fpx_err err = {0};
    fpx_engine *e = make("IVF8,Flat", d, FPX_METRIC_L2);
    CHECK(e && !fpx_engine_is_trained(e));
    CHECK(fpx_engine_add(e, n, xb, &err) == -1 && err.type == FPX_E_NOT_TRAINED);
    CHECK(fpx_engine_ntotal(e) == 0);
    CHECK(fpx_engine_train(e, n, xb, &err) == 0 && fpx_engine_is_trained(e));
    CHECK(fpx_engine_add(e, n, xb, &err) == 0 && fpx_engine_ntotal(e) == n);
    /* nprobe = nlist is an exhaustive IVF search: each vector finds itself */
    fpx_search_params sp = {.nprobe = 8};
    float D[4];
    int64_t I[4];
    int self = 1;
    for (int64_t i = 0; i < n; i += 37) {
        CHECK(fpx_engine_search(e, 1, xb + i * d, 1, &sp, NULL, D, I, &err) == 0);
        self &= I[0] == i && D[0] < 1e-5f;
    }
    CHECK(self);
    /* efSearch means nothing to IVF */
    fpx_search_params bad = {.efSearch = 16};
    CHECK(fpx_engine_search(e, 1, xb, 1, &bad, NULL, D, I, &err) == -1);
    CHECK(err.type == FPX_E_UNSUPPORTED);
    fpx_engine_free(e);

    e = make("Flat", d, FPX_METRIC_L2);
    fpx_search_params np = {.nprobe = 4};
    CHECK(fpx_engine_add(e, n, xb, &err) == 0);
    CHECK(fpx_engine_search(e, 1, xb, 1, &np, NULL, D, I, &err) == -1);
    CHECK(err.type == FPX_E_UNSUPPORTED);
    fpx_engine_free(e);

    e = make("HNSW8", d, FPX_METRIC_L2);
    fpx_search_params ef = {.efSearch = 64};
    CHECK(fpx_engine_add(e, n, xb, &err) == 0);
    CHECK(fpx_engine_search(e, 1, xb + 5 * d, 1, &ef, NULL, D, I, &err) == 0 && I[0] == 5);
    fpx_engine_free(e);
    free(xb);
}

static void test_serialize(const char *desc) {
    const int64_t n = 300, d = 16, nq = 5, k = 4;
    float *xb = test_vectors(n, d), *xq = test_vectors(nq, d);
    fpx_err err = {0};
    fpx_engine *e = make(desc, d, FPX_METRIC_IP), *r = NULL;
    CHECK(e != NULL);
    if (!e)
        goto out;
    if (!fpx_engine_is_trained(e))
        CHECK(fpx_engine_train(e, n, xb, &err) == 0);
    CHECK(fpx_engine_add(e, n, xb, &err) == 0);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(fpx_engine_serialize(e, &buf, &len, &err) == 0 && len > 0);
    CHECK(fpx_engine_deserialize(buf, len, &r, &err) == 0 && r);
    if (r) {
        CHECK(fpx_engine_ntotal(r) == n && fpx_engine_dim(r) == d);
        CHECK(fpx_engine_metric(r) == FPX_METRIC_IP);
        float D1[20], D2[20];
        int64_t I1[20], I2[20];
        CHECK(fpx_engine_search(e, nq, xq, k, NULL, NULL, D1, I1, &err) == 0);
        CHECK(fpx_engine_search(r, nq, xq, k, NULL, NULL, D2, I2, &err) == 0);
        CHECK(memcmp(I1, I2, sizeof I1) == 0 && memcmp(D1, D2, sizeof D1) == 0);
    }
    /* bytes that are no index are refused, not crashed on. (A truncated
     * index is refused too, but FAISS 1.7.3's read_index leaks what it built
     * before the throw; the server only reads snapshots whose CRC matched.) */
    fpx_engine *bad = NULL;
    CHECK(fpx_engine_deserialize((const uint8_t *)"garbage!", 8, &bad, &err) == -1);
    free(buf);
    fpx_engine_free(r);
    fpx_engine_free(e);
out:
    free(xb);
    free(xq);
}

/* range search, reconstruct, remove checks, reset, params, export/import. */
static void test_faiss_api(void) {
    const int64_t n = 200, d = 8;
    float *xb = test_vectors(n, d);
    fpx_err err = {0};
    fpx_engine *e = make("Flat", d, FPX_METRIC_L2);
    CHECK(fpx_engine_add(e, n, xb, &err) == 0);

    /* range search around xb[3] with a radius that takes only itself */
    int64_t *lims, *I;
    float *D;
    CHECK(fpx_engine_range_search(e, 1, xb + 3 * d, 1e-6f, NULL, NULL, &lims, &D, &I, &err) == 0);
    CHECK(lims[0] == 0 && lims[1] == 1 && I[0] == 3 && D[0] < 1e-6f);
    free(lims);
    free(D);
    free(I);
    /* a wide radius with an allowed set: only allowed positions */
    uint64_t words[4] = {0x5555555555555555ull, 0x5555555555555555ull, 0x5555555555555555ull,
                         0x5555555555555555ull};
    fpx_bitset even = {words, n, n / 2};
    CHECK(fpx_engine_range_search(e, 1, xb, 1e9f, NULL, &even, &lims, &D, &I, &err) == 0);
    int all_even = lims[1] == n / 2;
    for (int64_t j = 0; j < lims[1]; j++)
        all_even &= I[j] % 2 == 0;
    CHECK(all_even);
    free(lims);
    free(D);
    free(I);

    /* reconstruct: exact on Flat */
    float v[8], batch[3 * 8];
    int64_t pos[3] = {5, 0, 199};
    CHECK(fpx_engine_reconstruct(e, 17, v, &err) == 0 && !memcmp(v, xb + 17 * d, sizeof v));
    CHECK(fpx_engine_reconstruct_batch(e, 3, pos, batch, &err) == 0);
    CHECK(!memcmp(batch, xb + 5 * d, sizeof v) && !memcmp(batch + 2 * d, xb + 199 * d, sizeof v));
    CHECK(fpx_engine_check_remove(e, &err) == 0 && fpx_engine_remove_renumbers(e) == 1);
    CHECK(fpx_engine_ntotal(e) == n);

    /* export with every other position dead, import back: 100 vectors,
     * labels 1, 3, 5, ... (an IDMap wrapper) */
    uint8_t *buf;
    size_t len;
    fpx_bitset odd_live = {words, n, n / 2};
    for (int i = 0; i < 4; i++)
        words[i] = 0xaaaaaaaaaaaaaaaaull;
    CHECK(fpx_engine_export(e, &odd_live, NULL, 0, &buf, &len, &err) == 0);
    fpx_engine *back = NULL;
    int64_t *labels = NULL;
    int idmap = 0;
    CHECK(fpx_engine_import(buf, len, &back, &labels, &idmap, &err) == 0);
    CHECK(back && fpx_engine_ntotal(back) == n / 2 && idmap == 1 && labels);
    if (labels)
        CHECK(labels[0] == 1 && labels[n / 2 - 1] == n - 1);
    free(labels);
    fpx_engine_free(back);
    free(buf);

    CHECK(fpx_engine_reset(e, &err) == 0 && fpx_engine_ntotal(e) == 0);
    fpx_engine_free(e);

    /* HNSW: no remove, FAISS's message; IVF: nprobe through ParameterSpace */
    e = make("HNSW8", d, FPX_METRIC_L2);
    CHECK(fpx_engine_check_remove(e, &err) == -1 && err.type == FPX_E_FAISS);
    CHECK(strstr(err.msg, "not implemented") != NULL);
    CHECK(fpx_engine_set_params(e, "efSearch=20", &err) == 0);
    CHECK(fpx_engine_set_params(e, "nprobe=2", &err) == -1 && err.type == FPX_E_VALIDATION);
    fpx_engine_free(e);
    e = make("IVF4,Flat", d, FPX_METRIC_L2);
    CHECK(fpx_engine_train(e, n, xb, &err) == 0 && fpx_engine_add(e, n, xb, &err) == 0);
    CHECK(fpx_engine_remove_renumbers(e) == 0);
    CHECK(fpx_engine_set_params(e, "nprobe=4", &err) == 0);
    CHECK(fpx_engine_reconstruct(e, 3, v, &err) == -1); /* no direct map, as FAISS */
    CHECK(fpx_engine_reconstruct_batch(e, 3, pos, batch, &err) == 0);
    CHECK(!memcmp(batch + d, xb, sizeof v));
    fpx_engine_free(e);
    free(xb);
}

/* Binary indexes: Hamming distances; with an allowed set, an exact scan. */
static void test_binary(void) {
    static const char *types[] = {"BFlat", "BIVF4", "BHNSW8"};
    uint8_t xb[300 * 8];
    for (size_t i = 0; i < sizeof xb; i++)
        xb[i] = (uint8_t)(test_frand() * 256);
    for (size_t t = 0; t < 3; t++) {
        fpx_engine *e = NULL;
        fpx_err err = {0};
        CHECK(fpx_engine_create_binary(types[t], 64, &e, &err) == 0 && e);
        if (!e)
            continue;
        CHECK(fpx_engine_is_binary(e) && fpx_engine_row_bytes(e) == 8);
        CHECK(fpx_engine_metric(e) == FPX_METRIC_HAMMING && fpx_engine_dim(e) == 64);
        if (!fpx_engine_is_trained(e))
            CHECK(fpx_engine_train(e, 300, xb, &err) == 0);
        CHECK(fpx_engine_add(e, 300, xb, &err) == 0 && fpx_engine_ntotal(e) == 300);
        int32_t D[5];
        int64_t I[5];
        uint64_t words[5] = {0};
        for (int p = 0; p < 300; p += 3)
            words[p / 64] |= (uint64_t)1 << (p % 64);
        fpx_bitset every3 = {words, 300, 100};
        /* query = vector 9 (allowed): found first at distance 0, all hits allowed */
        CHECK(fpx_engine_search(e, 1, xb + 9 * 8, 5, NULL, &every3, D, I, &err) == 0);
        CHECK(I[0] == 9 && D[0] == 0);
        int ok = 1;
        for (int j = 0; j < 5; j++)
            ok &= I[j] >= 0 && I[j] % 3 == 0 && (j == 0 || D[j] >= D[j - 1]);
        CHECK(ok);
        /* query = vector 10 (not allowed): never returned */
        CHECK(fpx_engine_search(e, 1, xb + 10 * 8, 5, NULL, &every3, D, I, &err) == 0);
        CHECK(I[0] != 10 && I[0] % 3 == 0);
        uint8_t rec[8];
        int64_t pos = 42;
        CHECK(fpx_engine_reconstruct_batch(e, 1, &pos, rec, &err) == 0);
        CHECK(!memcmp(rec, xb + 42 * 8, 8));
        fpx_engine_free(e);
    }
    fpx_engine *e = NULL;
    fpx_err err = {0};
    CHECK(fpx_engine_create_binary("BFlat", 12, &e, &err) == -1 && err.type == FPX_E_VALIDATION);
    CHECK(fpx_engine_create_binary("Flat", 64, &e, &err) == -1 && err.type == FPX_E_VALIDATION);
}

/*
 * The server's tuning changes how FAISS is called, never what it answers.
 * Every baseline is taken untuned, before fpx_engine_tune_for_server: one
 * index of N vectors and one of 2N, each searched with every query count.
 * Then, tuned, an index built after the tuning (so it keeps its norms) is
 * searched alone and pooled, at N vectors and again after N more were added
 * (the kept norms must follow), and the index built before the tuning too;
 * all give the untuned labels, with distances equal to float rounding. Runs
 * last: the tuning is process-wide and cannot be undone.
 */
enum { TUNE_D = 24, TUNE_N = 3000, TUNE_NQ = 40, TUNE_K = 6, TUNE_COUNTS = 6 };
static const int64_t tune_counts[TUNE_COUNTS] = {1, 2, 5, 19, 20, 40};
static float tune_d0[2][TUNE_COUNTS][TUNE_NQ * TUNE_K];
static int64_t tune_i0[2][TUNE_COUNTS][TUNE_NQ * TUNE_K];

/* Searches e with every query count, alone and pooled, against baseline b. */
static void tune_compare(fpx_engine *e, const float *xq, int b) {
    static float d1[TUNE_NQ * TUNE_K];
    static int64_t i1[TUNE_NQ * TUNE_K];
    fpx_search_params plain = {0}, pooled = {.pooled = 1};
    fpx_err err = {0};
    for (int c = 0; c < TUNE_COUNTS; c++) {
        int64_t nq = tune_counts[c];
        for (int p = 0; p < 2; p++) {
            CHECK(fpx_engine_search(e, nq, xq, TUNE_K, p ? &pooled : &plain, NULL, d1, i1, &err) ==
                  0);
            for (int64_t j = 0; j < nq * TUNE_K; j++) {
                const float d0 = tune_d0[b][c][j];
                CHECK(tune_i0[b][c][j] == i1[j]);
                CHECK(fabsf(d0 - d1[j]) <= 1e-4f * (1.0f + fabsf(d0)));
            }
        }
    }
}

static void test_server_tuning(void) {
    enum { D = TUNE_D, N = TUNE_N, NQ = TUNE_NQ, K = TUNE_K };
    static float xb[2 * N * D], xq[NQ * D], d1[NQ * K];
    static int64_t i1[NQ * K];
    uint64_t r = 88172645463325252ull; /* xorshift64: no repeated vectors, no ties */
    for (int i = 0; i < 2 * N * D + NQ * D; i++) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        float v = (float)(r >> 40) / (float)(1 << 24);
        if (i < 2 * N * D)
            xb[i] = v;
        else
            xq[i - 2 * N * D] = v;
    }
    fpx_err err = {0};
    fpx_search_params plain = {0}, pooled = {.pooled = 1};

    /* Untuned baselines: FAISS as an in-process user calls it. */
    fpx_engine *before = NULL, *base2 = NULL;
    CHECK(fpx_engine_create("Flat", D, FPX_METRIC_L2, &before, &err) == 0);
    CHECK(fpx_engine_create("Flat", D, FPX_METRIC_L2, &base2, &err) == 0);
    CHECK(fpx_engine_add(before, N, xb, &err) == 0);
    CHECK(fpx_engine_add(base2, 2 * N, xb, &err) == 0);
    for (int c = 0; c < TUNE_COUNTS; c++) {
        CHECK(fpx_engine_search(before, tune_counts[c], xq, K, &plain, NULL, tune_d0[0][c],
                                tune_i0[0][c], &err) == 0);
        CHECK(fpx_engine_search(base2, tune_counts[c], xq, K, &plain, NULL, tune_d0[1][c],
                                tune_i0[1][c], &err) == 0);
    }
    fpx_engine_free(base2);

    fpx_engine_tune_for_server();
    tune_compare(before, xq, 0); /* built untuned, searched tuned */
    fpx_engine *e = NULL;
    CHECK(fpx_engine_create("Flat", D, FPX_METRIC_L2, &e, &err) == 0);
    CHECK(fpx_engine_add(e, N, xb, &err) == 0);
    tune_compare(e, xq, 0);
    /* more vectors after tuning: the norms kept must cover them too */
    CHECK(fpx_engine_add(e, N, xb + (size_t)N * D, &err) == 0);
    tune_compare(e, xq, 1);
    CHECK(fpx_engine_add(before, N, xb + (size_t)N * D, &err) == 0);
    tune_compare(before, xq, 1);
    fpx_engine_free(before);

    CHECK(fpx_engine_reset(e, &err) == 0);
    CHECK(fpx_engine_add(e, 100, xb, &err) == 0);
    CHECK(fpx_engine_search(e, 5, xq, K, &pooled, NULL, d1, i1, &err) == 0);
    for (int j = 0; j < 5 * K; j++)
        CHECK(i1[j] >= 0 && i1[j] < 100);
    fpx_engine_free(e);
}

int main(void) {
    test_descriptions();
    test_flat_exact(FPX_METRIC_L2);
    test_flat_exact(FPX_METRIC_IP);
    static const char *types[] = {"Flat",      "HNSW16",     "IVF8,Flat",    "PQ4np", "SQ8",
                                  "PCA8,Flat", "IDMap,Flat", "IVF8,PQ4x4fs", "LSH",   "IVF8,SQ8"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        test_allowed(types[i], FPX_METRIC_L2);
        if (strcmp(types[i], "LSH") != 0) /* FAISS's LSH is L2 only */
            test_allowed(types[i], FPX_METRIC_IP);
    }
    test_training_and_params();
    test_faiss_api();
    test_binary();
    test_serialize("Flat");
    test_serialize("HNSW8");
    test_serialize("IVF4,Flat");
    test_server_tuning();
    return CHECK_STATUS("test_engine");
}
