/*
 * stats.h - what the server counts: requests by operation and outcome,
 * latencies, batch sizes, log fsyncs, snapshots, connections and workers.
 *
 * Recording is a few relaxed atomic additions, from any thread, and never
 * takes a lock; metrics.c reads the counters at a scrape. Every label set is
 * fixed: operations are the table's, outcomes the error types.
 */
#ifndef FPX_STATS_H
#define FPX_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

/* Operation slots: the table's places, and one for unknown operations. */
#define FPX_STATS_OPS 64
#define FPX_STATS_UNKNOWN_OP FPX_STATS_OPS
#define FPX_STATS_STATUSES (FPX_E_UNAVAILABLE + 1) /* every fpx_errtype */
#define FPX_STATS_MAX_BUCKETS 16

/* Bucket bounds: latencies in seconds (100 us .. 10 s), sizes in units. */
extern const double fpx_stats_lat_bounds[];
extern const size_t fpx_stats_nlat;
extern const double fpx_stats_size_bounds[];
extern const size_t fpx_stats_nsize;

typedef struct fpx_hist {
    _Atomic uint64_t bucket[FPX_STATS_MAX_BUCKETS + 1]; /* the last: above every bound */
    _Atomic uint64_t sum; /* nanoseconds for latencies, units for sizes */
} fpx_hist;

typedef struct fpx_stats {
    _Atomic uint64_t requests[FPX_STATS_OPS + 1][FPX_STATS_STATUSES];
    fpx_hist latency[FPX_STATS_OPS + 1];
    fpx_hist batch_searches, batch_queries, batch_wait, fsync, snapshot;
    _Atomic uint64_t snapshot_bytes;
    _Atomic uint64_t inline_requests; /* answered on the network thread */
    atomic_int connections, workers_started, workers_busy, ready;
} fpx_stats;

/* The counters (one set per process). */
extern fpx_stats fpx_stats_now;

/* A request of operation op (its place in the operation table; -1 for a
 * request whose operation was not known) ended with status (FPX_OK or its
 * error type) after ns nanoseconds in the server. */
void fpx_stats_request(int op, fpx_errtype status, uint64_t ns);
/* One FAISS search call answered `searches` requests holding `queries`
 * queries; the oldest of them had waited wait_ns for it. */
void fpx_stats_batch(int64_t searches, int64_t queries, uint64_t wait_ns);
/* A log write's fdatasync took ns. */
void fpx_stats_fsync(uint64_t ns);
/* A snapshot of `bytes` bytes took ns to write. */
void fpx_stats_snapshot(uint64_t ns, uint64_t bytes);
/* Client connections opened (+1) or closed (-1). */
void fpx_stats_connection(int delta);
/* The worker pool: started threads, and how many are handling a request. */
void fpx_stats_workers(int started, int busy);
/* A request was answered on the network thread, without a worker. */
void fpx_stats_inline(void);
/* Data loaded and the front socket bound: /readyz answers 200 from now on. */
void fpx_stats_set_ready(int ready);

#endif
