/*
 * batch.h - dynamic batching of concurrent searches on one index.
 *
 * FAISS answers a batch of queries far more cheaply per query than the same
 * queries one by one: a flat index scans its vectors once per call with BLAS
 * instead of once per query, and an IVF or HNSW batch runs its queries on
 * every core. Clients that each send one query at a time never get that on
 * their own, so the server forms the batch for them: searches on the same
 * index with the same k and parameters that arrive while others are being
 * served are answered by one FAISS call.
 *
 * A lone request never waits: when a FAISS call slot is free and nobody else
 * is searching the index, it runs at once, exactly as without batching. A
 * request that finds every call slot busy queues; when a slot frees, the
 * oldest queued request leads the next batch, taking every queued request
 * that matches it. The leader waits for more only while other requests are
 * known to be on their way (between taking the index lock and queueing), and
 * never longer than the configured bound, a few hundred microseconds.
 */
#ifndef FPX_BATCH_H
#define FPX_BATCH_H

#include <pthread.h>
#include <stdint.h>

#include "engine/engine.h"
#include "proto/proto.h"

struct fpx_index;
typedef struct fpx_batch_member fpx_batch_member;

typedef struct fpx_batcher {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fpx_batch_member *head, *tail; /* queued, oldest first */
    int queued;                    /* requests in the queue */
    int running;                   /* FAISS calls under way (at most the configured slots) */
    int arriving;                  /* requests between fpx_batch_enter and fpx_batch_search */
} fpx_batcher;

/*
 * Process-wide settings, set once before serving: wait_us is the longest a
 * leader waits for requests on their way; max_rows the most query rows in
 * one FAISS call (1 turns batching off); slots the FAISS calls that may run
 * at once on one index (the number of cores).
 */
void fpx_batch_configure(int64_t wait_us, int64_t max_rows, int slots);

/* The most results (query rows x k, times a refinement's k_factor: what
 * FAISS allocates and fills) one FAISS call may compute, set once before
 * serving: searches join a batch only while its total stays within it, as
 * each search alone is held to it (the message size limit / 12). */
void fpx_batch_limit_results(int64_t max_results);

void fpx_batcher_init(fpx_batcher *b);
void fpx_batcher_destroy(fpx_batcher *b);

/* Announces a search on its way to fpx_batch_search (the index lock held
 * shared), so that a leader waits for it; fpx_batch_cancel takes the
 * announcement back when the request fails before searching. */
void fpx_batch_enter(fpx_batcher *b);
void fpx_batch_cancel(fpx_batcher *b);

/*
 * fpx_index_search without a filter, possibly answered within a batch of
 * other requests' queries. Same contract: I receives slots; D (float32, or
 * int32 for binary indexes) and I are filled fully. The caller holds the
 * index lock shared and has called fpx_batch_enter (this call consumes it).
 */
int fpx_batch_search(struct fpx_index *ix, int64_t nq, const void *x, int64_t k,
                     const fpx_search_params *params, void *D, int64_t *I, fpx_err *err);

#endif
