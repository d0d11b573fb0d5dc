/*
 * test_client.c - exercises every call of libfaissproxy against a running
 * server: test_client_c ENDPOINT [API_KEY]. Run by tests/integration/
 * test_clients.py against a server it starts (with and without keys).
 *
 * Results are checked against a brute-force scan computed here, errors by
 * their wire kind. Exit status 0 when every check passed.
 */
#include <faissproxy/client.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

/* The call succeeded, or print why not. */
#define OK(c, call)                                                                                \
    do {                                                                                           \
        checks++;                                                                                  \
        if ((call) != 0) {                                                                         \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,               \
                    fpx_client_errtype(c), fpx_client_errstr(c));                                  \
        }                                                                                          \
    } while (0)

/* The call failed with the given wire error kind. */
#define FAILS(c, call, kind)                                                                       \
    do {                                                                                           \
        checks++;                                                                                  \
        int rc_ = (call);                                                                          \
        if (rc_ != -1 || strcmp(fpx_client_errtype(c), kind) != 0) {                               \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: %s: expected %s, got rc %d %s: %s\n", __FILE__, __LINE__,      \
                    #call, kind, rc_, fpx_client_errtype(c), fpx_client_errstr(c));                \
        }                                                                                          \
    } while (0)

enum { D = 8, N = 200 };

static float xb[N * D];

static void fill(float *x, int n, unsigned seed) {
    for (int i = 0; i < n * D; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((seed >> 8) & 0xffff) / 65536.0f;
    }
}

static float l2(const float *a, const float *b) {
    float s = 0;
    for (int t = 0; t < D; t++)
        s += (a[t] - b[t]) * (a[t] - b[t]);
    return s;
}

/* Index of the nearest of xb[0..n) to q, by brute force. */
static int64_t nearest(const float *q, int n) {
    int64_t best = 0;
    for (int i = 1; i < n; i++)
        if (l2(q, xb + i * D) < l2(q, xb + best * D))
            best = i;
    return best;
}

static void name(char *out, size_t cap, const char *what) {
    snprintf(out, cap, "ctest_%ld_%s", (long)getpid(), what);
}

static void test_lifecycle(fpx_client *c) {
    char idx[64];
    name(idx, sizeof idx, "flat");
    fpx_index_info info;
    memset(&info, 0, sizeof info);
    OK(c, fpx_client_ping(c));
    OK(c, fpx_client_create_index(c, idx, D, NULL, NULL, &info));
    CHECK(strcmp(info.index_id, idx) == 0);
    CHECK(info.dimension == D && info.ntotal == 0 && info.is_trained);
    CHECK(strcmp(info.metric, "L2") == 0);
    CHECK(strcmp(info.index_type, "IndexFlatL2") == 0);
    FAILS(c, fpx_client_create_index(c, idx, D, NULL, NULL, NULL), "already_exists");
    CHECK(fpx_client_errstr(c)[0] != '\0');

    int64_t ntotal = -1;
    OK(c, fpx_client_add(c, idx, N, D, xb, NULL, NULL, &ntotal));
    CHECK(ntotal == N);
    CHECK(fpx_client_errtype(c)[0] == '\0'); /* cleared by a successful call */

    /* each query equals the brute-force nearest; a stored vector finds itself */
    float q[3 * D];
    fill(q, 3, 99);
    memcpy(q + 2 * D, xb + 17 * D, sizeof(float) * D);
    float Dist[3 * 5];
    int64_t I[3 * 5];
    OK(c, fpx_client_search(c, idx, 3, D, q, 5, NULL, Dist, I));
    for (int r = 0; r < 3; r++) {
        CHECK(I[r * 5] == nearest(q + r * D, N));
        CHECK(fabsf(Dist[r * 5] - l2(q + r * D, xb + I[r * 5] * D)) < 1e-4f);
        for (int j = 1; j < 5; j++)
            CHECK(Dist[r * 5 + j] >= Dist[r * 5 + j - 1]);
    }
    CHECK(I[2 * 5] == 17 && Dist[2 * 5] < 1e-6f);

    /* k above ntotal: FAISS's -1 labels */
    float *Dk = malloc(sizeof(float) * (N + 10));
    int64_t *Ik = malloc(sizeof(int64_t) * (N + 10));
    OK(c, fpx_client_search(c, idx, 1, D, q, N + 10, NULL, Dk, Ik));
    CHECK(Ik[N - 1] >= 0 && Ik[N] == -1 && Ik[N + 9] == -1);
    free(Dk);
    free(Ik);

    /* errors */
    FAILS(c, fpx_client_search(c, idx, 1, D + 1, q, 5, NULL, Dist, I), "validation_error");
    FAILS(c, fpx_client_search(c, idx, 1, D, q, 0, NULL, Dist, I), "validation_error");
    fpx_search_opts bad = {.nprobe = 4};
    FAILS(c, fpx_client_search(c, idx, 1, D, q, 5, &bad, Dist, I), "unsupported");
    float nan_q[D];
    memcpy(nan_q, q, sizeof nan_q);
    nan_q[3] = NAN;
    FAILS(c, fpx_client_search(c, idx, 1, D, nan_q, 5, NULL, Dist, I), "validation_error");
    FAILS(c, fpx_client_add(c, idx, 1, D, nan_q, NULL, NULL, NULL), "validation_error");
    char missing[64];
    name(missing, sizeof missing, "missing");
    FAILS(c, fpx_client_get_index_info(c, missing, &info), "not_found");
    FAILS(c, fpx_client_search(c, missing, 1, D, q, 5, NULL, Dist, I), "not_found");
    FAILS(c, fpx_client_create_index(c, "../escape", D, NULL, NULL, NULL), "validation_error");
    FAILS(c, fpx_client_create_index(c, idx, 0, NULL, NULL, NULL), "validation_error");

    /* explicit labels, as FAISS add_with_ids */
    int64_t labels[3] = {1000, 1001, 5000};
    float extra[3 * D];
    fill(extra, 3, 7);
    OK(c, fpx_client_add(c, idx, 3, D, extra, labels, NULL, &ntotal));
    CHECK(ntotal == N + 3);
    OK(c, fpx_client_search(c, idx, 1, D, extra + 2 * D, 1, NULL, Dist, I));
    CHECK(I[0] == 5000);

    /* delete by label: never found again */
    int64_t deleted = -1;
    int64_t del[2] = {17, 424242};
    OK(c, fpx_client_delete_labels(c, idx, 2, del, &deleted));
    CHECK(deleted == 1);
    OK(c, fpx_client_search(c, idx, 1, D, xb + 17 * D, 5, NULL, Dist, I));
    int found17 = 0;
    for (int j = 0; j < 5; j++)
        found17 |= I[j] == 17;
    CHECK(!found17 && I[4] >= 0);
    OK(c, fpx_client_get_index_info(c, idx, &info));
    CHECK(info.ntotal == N + 2);

    /* list_indexes sees it; delete_index removes it */
    fpx_index_info *all = NULL;
    size_t count = 0;
    OK(c, fpx_client_list_indexes(c, &all, &count));
    int listed = 0;
    for (size_t i = 0; i < count; i++)
        listed |= strcmp(all[i].index_id, idx) == 0 && all[i].ntotal == N + 2;
    CHECK(listed);
    free(all);
    OK(c, fpx_client_delete_index(c, idx));
    FAILS(c, fpx_client_get_index_info(c, idx, &info), "not_found");
    FAILS(c, fpx_client_delete_index(c, idx), "not_found");
}

static void test_keys_and_filters(fpx_client *c) {
    char idx[64];
    name(idx, sizeof idx, "keys");
    OK(c, fpx_client_create_index(c, idx, D, "HNSW8", "L2", NULL));
    /* 40 vectors, keys k0..k39, metadata {"color": "red"|"blue"} (msgpack) */
    static const uint8_t red[] = {0x81, 0xa5, 'c', 'o', 'l', 'o', 'r', 0xa3, 'r', 'e', 'd'};
    static const uint8_t blue[] = {0x81, 0xa5, 'c', 'o', 'l', 'o', 'r', 0xa4, 'b', 'l', 'u', 'e'};
    char keys[40][16];
    fpx_item items[40];
    for (int i = 0; i < 40; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        items[i].key = keys[i];
        items[i].metadata = i % 4 == 0 ? red : blue;
        items[i].metadata_size = i % 4 == 0 ? sizeof red : sizeof blue;
    }
    int64_t ntotal = 0;
    OK(c, fpx_client_add(c, idx, 40, D, xb, NULL, items, &ntotal));
    CHECK(ntotal == 40);

    /* filter: only red (10 of them), k = 10 returns all 10 */
    fpx_search_opts f = {.filter = red, .filter_size = sizeof red, .ef_search = 32};
    float Dist[10];
    int64_t I[10];
    fpx_hit *hits = NULL;
    OK(c, fpx_client_search_ex(c, idx, 1, D, xb + 5 * D, 10, &f, Dist, I, &hits));
    if (hits) {
        int all_red = 1;
        for (int j = 0; j < 10; j++) {
            int n = hits[j].key ? atoi(hits[j].key + 1) : -1;
            all_red &= I[j] >= 0 && n % 4 == 0 && hits[j].metadata_size == sizeof red &&
                       memcmp(hits[j].metadata, red, sizeof red) == 0;
        }
        CHECK(all_red);
        fpx_hits_free(hits, 10);
        hits = NULL;
    }

    /* upsert: k0 moves to where k5 is; the old k0 vector is gone */
    fpx_item up = {"k0", blue, sizeof blue};
    OK(c, fpx_client_add(c, idx, 1, D, xb + 5 * D, NULL, &up, &ntotal));
    CHECK(ntotal == 40);
    OK(c, fpx_client_search_ex(c, idx, 1, D, xb, 3, NULL, Dist, I, &hits));
    if (hits) {
        CHECK(!(hits[0].key && strcmp(hits[0].key, "k0") == 0 && Dist[0] < 1e-6f));
        fpx_hits_free(hits, 3);
        hits = NULL;
    }
    OK(c, fpx_client_search_ex(c, idx, 1, D, xb + 5 * D, 2, NULL, Dist, I, &hits));
    if (hits) {
        int k0 = 0, k5 = 0;
        for (int j = 0; j < 2; j++) {
            k0 |= hits[j].key && !strcmp(hits[j].key, "k0") && Dist[j] < 1e-6f;
            k5 |= hits[j].key && !strcmp(hits[j].key, "k5") && Dist[j] < 1e-6f;
        }
        CHECK(k0 && k5);
        fpx_hits_free(hits, 2);
        hits = NULL;
    }

    /* delete by key */
    const char *gone[] = {"k5", "k0", "nope"};
    int64_t deleted = 0;
    OK(c, fpx_client_delete_keys(c, idx, 3, gone, &deleted));
    CHECK(deleted == 2);
    OK(c, fpx_client_search_ex(c, idx, 1, D, xb + 5 * D, 10, NULL, Dist, I, &hits));
    if (hits) {
        int seen = 0;
        for (int j = 0; j < 10; j++)
            seen |= hits[j].key && (!strcmp(hits[j].key, "k0") || !strcmp(hits[j].key, "k5"));
        CHECK(!seen && I[9] >= 0);
        fpx_hits_free(hits, 10);
    }
    OK(c, fpx_client_delete_index(c, idx));
}

/* Adds of a MB or more (the library builds them in memory of their own):
 * with labels, and with keys and metadata; every row found where it was
 * put, under its label or key. */
static void test_large_rows(fpx_client *c) {
    enum { BIG = 40000 }; /* 1.25 MB of vectors */
    float *x = malloc(sizeof(float) * BIG * D);
    int64_t *labels = malloc(sizeof *labels * BIG);
    fpx_item *items = calloc(BIG, sizeof *items);
    char(*keys)[16] = malloc(16 * (size_t)BIG);
    CHECK(x && labels && items && keys);
    if (!x || !labels || !items || !keys)
        goto out;
    fill(x, BIG, 7);
    static const uint8_t md[] = {0x81, 0xa1, 'n', 0x07};
    for (int i = 0; i < BIG; i++) {
        labels[i] = 1000000 + 3 * (int64_t)i;
        snprintf(keys[i], sizeof keys[i], "b%d", i);
        items[i].key = keys[i];
        items[i].metadata = i % 1000 == 0 ? md : NULL;
        items[i].metadata_size = i % 1000 == 0 ? sizeof md : 0;
    }
    char idx[64], kdx[64];
    name(idx, sizeof idx, "big_ids");
    name(kdx, sizeof kdx, "big_keys");
    int64_t ntotal = 0;
    OK(c, fpx_client_create_index(c, idx, D, "IDMap,Flat", "L2", NULL));
    OK(c, fpx_client_add(c, idx, BIG, D, x, labels, NULL, &ntotal));
    CHECK(ntotal == BIG);
    OK(c, fpx_client_create_index(c, kdx, D, "Flat", "L2", NULL));
    OK(c, fpx_client_add(c, kdx, BIG, D, x, NULL, items, &ntotal));
    CHECK(ntotal == BIG);
    const int probe[] = {0, 1, 999, 1000, 20000, BIG - 1};
    for (size_t p = 0; p < sizeof probe / sizeof probe[0]; p++) {
        int i = probe[p];
        float Dist[1];
        int64_t I[1];
        OK(c, fpx_client_search(c, idx, 1, D, x + (size_t)i * D, 1, NULL, Dist, I));
        CHECK(I[0] == labels[i] && Dist[0] < 1e-6f);
        fpx_hit *hits = NULL;
        OK(c, fpx_client_search_ex(c, kdx, 1, D, x + (size_t)i * D, 1, NULL, Dist, I, &hits));
        if (hits) {
            CHECK(I[0] == i && hits[0].key && !strcmp(hits[0].key, keys[i]));
            CHECK(i % 1000 == 0 ? hits[0].metadata_size == sizeof md &&
                                      !memcmp(hits[0].metadata, md, sizeof md)
                                : hits[0].metadata_size == 0);
            fpx_hits_free(hits, 1);
        }
    }
    OK(c, fpx_client_delete_index(c, idx));
    OK(c, fpx_client_delete_index(c, kdx));
out:
    free(x);
    free(labels);
    free(items);
    free(keys);
}

static void test_training(fpx_client *c) {
    char idx[64];
    name(idx, sizeof idx, "ivf");
    fpx_index_info info;
    OK(c, fpx_client_create_index(c, idx, D, "IVF4,Flat", "L2", &info));
    CHECK(!info.is_trained);
    FAILS(c, fpx_client_add(c, idx, N, D, xb, NULL, NULL, NULL), "not_trained");
    OK(c, fpx_client_train(c, idx, N, D, xb));
    OK(c, fpx_client_get_index_info(c, idx, &info));
    CHECK(info.is_trained && info.ntotal == 0);
    OK(c, fpx_client_add(c, idx, N, D, xb, NULL, NULL, NULL));
    fpx_search_opts all = {.nprobe = 4};
    float Dist[1];
    int64_t I[1];
    int self = 1;
    for (int i = 0; i < N; i += 13) {
        OK(c, fpx_client_search(c, idx, 1, D, xb + i * D, 1, &all, Dist, I));
        self &= I[0] == i;
    }
    CHECK(self);
    OK(c, fpx_client_delete_index(c, idx));
}

static void test_raw(fpx_client *c) {
    /* {"header_size": 16, "vector_size": 0, "metadata_size": 0} {"operation": "ping"} */
    static const uint8_t body[] = {
        0x83, 0xab, 'h', 'e', 'a', 'd', 'e', 'r', '_',  's', 'i', 'z',  'e',  0x10, 0xab,
        'v',  'e',  'c', 't', 'o', 'r', '_', 's', 'i',  'z', 'e', 0x00, 0xad, 'm',  'e',
        't',  'a',  'd', 'a', 't', 'a', '_', 's', 'i',  'z', 'e', 0x00, 0x81, 0xa9, 'o',
        'p',  'e',  'r', 'a', 't', 'i', 'o', 'n', 0xa4, 'p', 'i', 'n',  'g'};
    /* {"header_size": 16} {"operation": "ping"}: the other two sizes are required */
    static const uint8_t partial[] = {0x81, 0xab, 'h', 'e',  'a',  'd',  'e', 'r', '_', 's',
                                      'i',  'z',  'e', 0x10, 0x81, 0xa9, 'o', 'p', 'e', 'r',
                                      'a',  't',  'i', 'o',  'n',  0xa4, 'p', 'i', 'n', 'g'};
    uint8_t *reply = NULL;
    size_t len = 0;
    OK(c, fpx_client_request_raw(c, body, sizeof body, &reply, &len));
    /* with keys configured the raw ping has no key: an error reply, still a reply */
    CHECK(reply && len > 0 && !test_contains(reply, len, "protocol_error"));
    free(reply);
    reply = NULL;
    OK(c, fpx_client_request_raw(c, partial, sizeof partial, &reply, &len));
    CHECK(reply && len > 0 && test_contains(reply, len, "protocol_error") &&
          test_contains(reply, len, "preamble lacks vector_size"));
    free(reply);
    reply = NULL;
    OK(c, fpx_client_request_raw(c, "junk", 4, &reply, &len));
    CHECK(reply && len > 0 && test_contains(reply, len, "protocol_error"));
    free(reply);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: test_client_c ENDPOINT [API_KEY]\n");
        return 2;
    }
    const char *key = argc == 3 ? argv[2] : NULL;
    fill(xb, N, 1);
    fpx_client *c = fpx_client_new(argv[1], key, NULL);
    if (!c) {
        fprintf(stderr, "cannot create a client for %s\n", argv[1]);
        return 1;
    }
    fpx_client_set_timeout(c, 120000);
    test_lifecycle(c);
    test_keys_and_filters(c);
    test_large_rows(c);
    test_training(c);
    test_raw(c);
    OK(c, fpx_client_ping(c)); /* still serving */

    if (key) {
        fpx_client *bad = fpx_client_new(argv[1], "not-a-key", NULL);
        FAILS(bad, fpx_client_ping(bad), "authentication_error");
        fpx_client_free(bad);
        fpx_client *nokey = fpx_client_new(argv[1], NULL, NULL);
        FAILS(nokey, fpx_client_ping(nokey), "authentication_error");
        fpx_client_free(nokey);
    }

    /* nobody listening: connection_error after the timeout, and the handle
     * works again for the next call (here: fails the same way, cleanly) */
    fpx_client *dead = fpx_client_new("tcp://127.0.0.1:1", key, NULL);
    fpx_client_set_timeout(dead, 200);
    FAILS(dead, fpx_client_ping(dead), "connection_error");
    FAILS(dead, fpx_client_ping(dead), "connection_error");
    fpx_client_free(dead);

    fpx_client_free(c);
    return CHECK_STATUS("test_client_c");
}
