/*
 * batch.c - dynamic batching of concurrent searches (see batch.h).
 *
 * Everything shared lives under the batcher's mutex; the FAISS call itself
 * runs outside it. A member's query rows are copied into the batch's query
 * matrix and its results copied back out, k * 8 bytes per row each way: the
 * price of one FAISS call instead of many, paid only when a batch forms (a
 * request served alone searches its own buffers directly).
 */
#include "batch.h"
#include "index.h"
#include "stats.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fpx_batch_member {
    int64_t nq, k;
    double results; /* nq x k x the index's results factor */
    const void *x;
    fpx_search_params params;
    void *D;
    int64_t *I;
    int done, rc;
    fpx_err err;
    uint64_t since; /* fpx_now_ns() when it joined the queue */
    fpx_batch_member *next;
};

static int64_t cfg_wait_us = 200;
static int64_t cfg_max_rows = 256;
static int cfg_slots = 2;
static double cfg_max_results = 1e18;

void fpx_batch_limit_results(int64_t max_results) {
    cfg_max_results = max_results < 1 ? 1 : (double)max_results;
}

void fpx_batch_configure(int64_t wait_us, int64_t max_rows, int slots) {
    cfg_wait_us = wait_us < 0 ? 0 : wait_us;
    cfg_max_rows = max_rows < 1 ? 1 : max_rows;
    cfg_slots = slots < 1 ? 1 : slots;
}

void fpx_batcher_init(fpx_batcher *b) {
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
}

void fpx_batcher_destroy(fpx_batcher *b) {
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}

void fpx_batch_enter(fpx_batcher *b) {
    pthread_mutex_lock(&b->mu);
    b->arriving++;
    pthread_mutex_unlock(&b->mu);
}

void fpx_batch_cancel(fpx_batcher *b) {
    pthread_mutex_lock(&b->mu);
    b->arriving--;
    pthread_cond_broadcast(&b->cv); /* a leader may be waiting for it */
    pthread_mutex_unlock(&b->mu);
}

static int same_kind(const fpx_batch_member *a, const fpx_batch_member *b) {
    return a->k == b->k && a->params.nprobe == b->params.nprobe &&
           a->params.uncompleted == b->params.uncompleted &&
           a->params.efSearch == b->params.efSearch && a->params.max_codes == b->params.max_codes &&
           a->params.quantizer_efSearch == b->params.quantizer_efSearch &&
           a->params.has_search_type == b->params.has_search_type &&
           a->params.search_type == b->params.search_type &&
           a->params.has_polysemous_ht == b->params.has_polysemous_ht &&
           a->params.polysemous_ht == b->params.polysemous_ht;
}

/* Takes the leader (the queue's head) and every queued member like it, up to
 * the row bound, off the queue as a list. Under b->mu. */
static fpx_batch_member *take_batch(fpx_batcher *b) {
    fpx_batch_member *lead = b->head, *list = NULL, **tail = &list;
    fpx_batch_member **pp = &b->head, *last = NULL;
    int64_t rows = 0;
    double results = 0;
    int count = 0;
    while (*pp) {
        fpx_batch_member *m = *pp;
        if (m == lead || (same_kind(m, lead) && rows + m->nq <= cfg_max_rows &&
                          results + m->results <= cfg_max_results)) {
            *pp = m->next;
            m->next = NULL;
            *tail = m;
            tail = &m->next;
            rows += m->nq;
            results += m->results;
            count++;
        } else {
            last = m;
            pp = &m->next;
        }
    }
    b->tail = last;
    b->queued -= count;
    return list;
}

/* Answers every member of the list with one FAISS call (each on its own
 * when the batch buffers cannot be allocated). Without b->mu. */
static void run_batch(struct fpx_index *ix, fpx_batch_member *list) {
    int64_t searches = 0, queries = 0;
    for (fpx_batch_member *m = list; m; m = m->next, searches++)
        queries += m->nq;
    fpx_stats_batch(searches, queries, fpx_now_ns() - list->since);
    if (!list->next) {
        list->rc = fpx_index_search(ix, list->nq, list->x, list->k, &list->params, NULL, list->D,
                                    list->I, &list->err);
        return;
    }
    size_t row = ix->row_bytes;
    int64_t k = list->k, rows = 0;
    int count = 0;
    for (fpx_batch_member *m = list; m; m = m->next, count++)
        rows += m->nq;
    fpx_log(FPX_LOG_DEBUG, "%s/%s: one FAISS call answers %d searches (%lld queries)", ix->tenant,
            ix->name, count, (long long)rows);
    uint8_t *x = malloc((size_t)rows * row);
    float *D = malloc((size_t)(rows * k) * sizeof *D); /* float32 or int32: 4 bytes */
    int64_t *I = malloc((size_t)(rows * k) * sizeof *I);
    if (!x || !D || !I) {
        free(x);
        free(D);
        free(I);
        for (fpx_batch_member *m = list; m; m = m->next)
            m->rc = fpx_index_search(ix, m->nq, m->x, k, &m->params, NULL, m->D, m->I, &m->err);
        return;
    }
    size_t off = 0;
    for (fpx_batch_member *m = list; m; m = m->next) {
        memcpy(x + off * row, m->x, (size_t)m->nq * row);
        off += (size_t)m->nq;
    }
    fpx_err err = {0};
    fpx_search_params params = list->params;
    params.pooled = 1;
    int rc = fpx_index_search(ix, rows, x, k, &params, NULL, D, I, &err);
    off = 0;
    for (fpx_batch_member *m = list; m; m = m->next) {
        size_t n = (size_t)(m->nq * k);
        m->rc = rc;
        if (rc == 0) {
            memcpy(m->D, D + off, n * sizeof *D);
            memcpy(m->I, I + off, n * sizeof *I);
        } else {
            m->err = err;
        }
        off += n;
    }
    free(x);
    free(D);
    free(I);
}

static struct timespec deadline_after(int64_t us) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_nsec += (long)(us % 1000000) * 1000;
    t.tv_sec += (time_t)(us / 1000000) + t.tv_nsec / 1000000000;
    t.tv_nsec %= 1000000000;
    return t;
}

int fpx_batch_search(struct fpx_index *ix, int64_t nq, const void *x, int64_t k,
                     const fpx_search_params *params, void *D, int64_t *I, fpx_err *err) {
    fpx_batcher *b = &ix->batch;
    if (cfg_max_rows <= 1 || nq * 2 > cfg_max_rows) { /* off, or a batch of its own already */
        fpx_batch_cancel(b);
        fpx_stats_batch(1, nq, 0);
        return fpx_index_search(ix, nq, x, k, params, NULL, D, I, err);
    }

    double f = ix->binary ? 1 : fpx_engine_results_factor(ix->eng);
    fpx_batch_member me = {.nq = nq, .k = k, .x = x, .D = D, .I = I};
    me.results = (double)nq * (double)(int64_t)((double)k * (f > 1 ? f : 1));
    if (params)
        me.params = *params;
    pthread_mutex_lock(&b->mu);
    b->arriving--;
    if (b->running == 0 && !b->head && b->arriving == 0) {
        /* Alone: search now, as if there were no batching. */
        b->running++;
        pthread_mutex_unlock(&b->mu);
        fpx_stats_batch(1, nq, 0);
        int rc = fpx_index_search(ix, nq, x, k, params, NULL, D, I, err);
        pthread_mutex_lock(&b->mu);
        b->running--;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        return rc;
    }
    me.since = fpx_now_ns();
    if (b->tail)
        b->tail->next = &me;
    else
        b->head = &me;
    b->tail = &me;
    b->queued++;
    pthread_cond_broadcast(&b->cv); /* a leader may be waiting for us */
    while (!me.done && !(b->head == &me && b->running < cfg_slots))
        pthread_cond_wait(&b->cv, &b->mu);
    if (me.done) {
        pthread_mutex_unlock(&b->mu);
        if (me.rc)
            *err = me.err;
        return me.rc;
    }

    /* Leading. Under load (other calls running, or others queued), wait
     * briefly for more requests: the next ones are already on their way. */
    b->running++;
    if (b->running > 1 || b->queued > 1 || b->arriving > 0) {
        struct timespec until = deadline_after(cfg_wait_us);
        while (b->queued < cfg_max_rows &&
               pthread_cond_timedwait(&b->cv, &b->mu, &until) != ETIMEDOUT) {
        }
    }
    fpx_batch_member *list = take_batch(b);
    pthread_mutex_unlock(&b->mu);

    run_batch(ix, list);

    pthread_mutex_lock(&b->mu);
    for (fpx_batch_member *m = list, *next; m; m = next) {
        next = m->next; /* a member may return (and its frame go) once done */
        m->done = 1;
    }
    b->running--;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (me.rc)
        *err = me.err;
    return me.rc;
}
