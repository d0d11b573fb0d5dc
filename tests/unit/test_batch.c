/*
 * test_batch.c - unit tests of dynamic batching (src/server/batch.c): many
 * threads searching one index at once, with one FAISS call slot so that their
 * requests queue and are answered together, get exactly what each search
 * answers on its own: the same labels (up to ties) and distances, with
 * tombstones honoured, requests of different k or parameters kept apart, on
 * float (pooled BLAS path) and binary indexes. That batches really formed is
 * read from the batcher's own debug log line, not assumed.
 */
#include "server/batch.h"
#include "server/index.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

enum { THREADS = 8, REQS = 12, MAXNQ = 3, MAXK = 10, ROUNDS_MIN = 3, ROUNDS_MAX = 30 };

/* One thread's requests and the answers each gets alone. */
typedef struct request {
    int64_t nq, k;
    fpx_search_params params;
    const uint8_t *x;
    uint8_t D0[MAXNQ * MAXK * 4], D1[MAXNQ * MAXK * 4]; /* float32 or int32 */
    int64_t I0[MAXNQ * MAXK], I1[MAXNQ * MAXK];
    int rc;
} request;

typedef struct worker {
    fpx_index *ix;
    pthread_barrier_t *start;
    request req[REQS];
} worker;

static void *run(void *arg) {
    worker *w = arg;
    pthread_barrier_wait(w->start);
    for (int r = 0; r < REQS; r++) {
        request *q = &w->req[r];
        fpx_err err = {0};
        pthread_rwlock_rdlock(&w->ix->lock);
        fpx_batch_enter(&w->ix->batch);
        q->rc = fpx_batch_search(w->ix, q->nq, q->x, q->k, &q->params, q->D1, q->I1, &err);
        pthread_rwlock_unlock(&w->ix->lock);
    }
    return NULL;
}

/* Distance j of a request as a double, float32 or int32. */
static double dist(const fpx_index *ix, const uint8_t *D, int64_t j) {
    if (ix->metric == FPX_METRIC_HAMMING) {
        int32_t v;
        memcpy(&v, D + j * 4, 4);
        return v;
    }
    float v;
    memcpy(&v, D + j * 4, 4);
    return v;
}

/* The batched answer equals the lone one: distances to float rounding, labels
 * equal except between hits whose distances tie. */
static void compare(const fpx_index *ix, const request *q) {
    CHECK(q->rc == 0);
    for (int64_t row = 0; row < q->nq; row++) {
        for (int64_t c = 0; c < q->k; c++) {
            int64_t j = row * q->k + c;
            double d0 = dist(ix, q->D0, j), d1 = dist(ix, q->D1, j);
            double tol = 1e-4 * (1.0 + fabs(d0));
            CHECK(fabs(d0 - d1) <= tol);
            if (q->I0[j] == q->I1[j])
                continue;
            int tie = 0; /* the same hit at a neighbouring rank of equal distance */
            for (int64_t o = 0; o < q->k; o++)
                tie |= q->I0[row * q->k + o] == q->I1[j] &&
                       fabs(dist(ix, q->D0, row * q->k + o) - d1) <= tol;
            CHECK(tie);
        }
    }
}

/* 1 when the log file holds the batcher's line for a multi-request call. */
static int batched(int fd) {
    char buf[1 << 16];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return strstr(buf, "one FAISS call answers") != NULL;
}

/*
 * Runs THREADS threads of REQS requests each against ix, the answers of each
 * request taken alone first, until batches were seen (at least ROUNDS_MIN
 * rounds, at most ROUNDS_MAX). nparams > 1 alternates nprobe values.
 */
static void run_rounds(fpx_index *ix, const uint8_t *xq, int64_t nqueries, int nparams) {
    static worker w[THREADS];
    size_t row = fpx_engine_row_bytes(ix->eng);
    pthread_barrier_t start;
    char path[] = "/tmp/fpx-test-batch-XXXXXX";
    int logfd = mkstemp(path);
    CHECK(logfd >= 0);
    if (logfd < 0)
        return;
    unlink(path);
    int saved = dup(STDERR_FILENO);
    int seen = 0, round;
    for (round = 0; round < ROUNDS_MAX && (round < ROUNDS_MIN || !seen); round++) {
        for (int t = 0; t < THREADS; t++) {
            w[t].ix = ix;
            w[t].start = &start;
            for (int r = 0; r < REQS; r++) {
                request *q = &w[t].req[r];
                q->nq = 1 + (int64_t)(test_rnd() % MAXNQ);
                q->k = (test_rnd() % 4) ? MAXK : 4; /* mostly one k, so batches can form */
                q->x = xq + (test_rnd() % (uint64_t)(nqueries - MAXNQ)) * row;
                memset(&q->params, 0, sizeof q->params);
                if (nparams > 1)
                    q->params.nprobe = 1 + (int64_t)(test_rnd() % (uint64_t)nparams);
                fpx_err err = {0};
                CHECK(fpx_index_search(ix, q->nq, q->x, q->k, &q->params, NULL, q->D0, q->I0,
                                       &err) == 0);
                memset(q->D1, 0xee, sizeof q->D1);
                memset(q->I1, 0xee, sizeof q->I1);
                q->rc = -2;
            }
        }
        fpx_log_level = FPX_LOG_DEBUG;
        dup2(logfd, STDERR_FILENO);
        /* Every other round, a search announced and never sent keeps every
         * request from the lone path: leaders wait for more, so batches form
         * even where the threads do not overlap (one CPU, a slow sanitizer). */
        int hold = round % 2;
        if (hold)
            fpx_batch_enter(&ix->batch);
        pthread_barrier_init(&start, NULL, THREADS);
        pthread_t th[THREADS];
        for (int t = 0; t < THREADS; t++)
            CHECK(pthread_create(&th[t], NULL, run, &w[t]) == 0);
        for (int t = 0; t < THREADS; t++)
            pthread_join(th[t], NULL);
        pthread_barrier_destroy(&start);
        if (hold)
            fpx_batch_cancel(&ix->batch);
        dup2(saved, STDERR_FILENO);
        fpx_log_level = FPX_LOG_INFO;
        for (int t = 0; t < THREADS; t++)
            for (int r = 0; r < REQS; r++)
                compare(ix, &w[t].req[r]);
        seen = batched(logfd);
    }
    close(saved);
    close(logfd);
    CHECK(seen);
    /* the batcher is idle again: nothing queued, running or announced */
    CHECK(ix->batch.head == NULL && ix->batch.queued == 0);
    CHECK(ix->batch.running == 0 && ix->batch.arriving == 0);
    printf("%s: batches formed after %d rounds\n", ix->index_type, round);
}

static fpx_index *make(const char *type, int64_t dim) {
    fpx_index *ix = NULL;
    fpx_err err = {0};
    if (fpx_index_new("t", "ix", type, dim, NULL, &ix, &err)) {
        fprintf(stderr, "fpx_index_new %s: %s\n", type, err.msg);
        abort();
    }
    return ix;
}

/* Deletes every seventh label: the pooled search must honour tombstones. */
static void tombstones(fpx_index *ix, int64_t n) {
    for (int64_t l = 0; l < n; l += 7) {
        msgpack_object id;
        id.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        id.via.u64 = (uint64_t)l;
        int64_t deleted = 0;
        fpx_err err = {0};
        CHECK(fpx_index_delete(ix, &id, &deleted, &err) == 0 && deleted == 1);
    }
    fpx_err err = {0};
    CHECK(fpx_index_check(ix, &err) == 0);
}

int main(void) {
    enum { D = 16, N = 2000, NQ = 64 };
    /* One FAISS call at a time per index: concurrent requests must queue. */
    fpx_batch_configure(5000, 64, 1);
    float *xb = malloc(sizeof(float) * (N + NQ) * D);
    if (!xb)
        return 1;
    for (int64_t i = 0; i < (N + NQ) * D; i++)
        xb[i] = (float)(test_rnd() >> 40) / (float)(1u << 24);
    fpx_err err = {0};
    int64_t added = 0;

    fpx_index *ix = make("Flat", D);
    CHECK(fpx_index_add(ix, N, xb, NULL, NULL, &added, &err) == 0);
    tombstones(ix, N);
    run_rounds(ix, (const uint8_t *)(xb + N * D), NQ, 1);
    fpx_index_free(ix);

    ix = make("IVF16,Flat", D);
    CHECK(fpx_index_train(ix, N, xb, &err) == 0);
    CHECK(fpx_index_add(ix, N, xb, NULL, NULL, &added, &err) == 0);
    run_rounds(ix, (const uint8_t *)(xb + N * D), NQ, 3);
    fpx_index_free(ix);

    /* binary: 128 bits a vector, the float data's bytes as codes */
    ix = make("BFlat", 128);
    CHECK(fpx_index_add(ix, N, xb, NULL, NULL, &added, &err) == 0);
    tombstones(ix, N);
    run_rounds(ix, (const uint8_t *)xb + (size_t)N * 16, NQ, 1);
    fpx_index_free(ix);
    free(xb);
    return CHECK_STATUS("test_batch");
}
