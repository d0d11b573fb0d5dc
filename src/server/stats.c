/*
 * stats.c - the server's counters and histograms (stats.h).
 */
#include "stats.h"

const double fpx_stats_lat_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                       0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
const size_t fpx_stats_nlat = sizeof fpx_stats_lat_bounds / sizeof fpx_stats_lat_bounds[0];
const double fpx_stats_size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
const size_t fpx_stats_nsize = sizeof fpx_stats_size_bounds / sizeof fpx_stats_size_bounds[0];

fpx_stats fpx_stats_now;

static void hist_add(fpx_hist *h, const double *bounds, size_t nb, double v, uint64_t raw) {
    size_t i = 0;
    while (i < nb && v > bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, raw, memory_order_relaxed);
}

static void add_latency(fpx_hist *h, uint64_t ns) {
    hist_add(h, fpx_stats_lat_bounds, fpx_stats_nlat, (double)ns / 1e9, ns);
}

void fpx_stats_request(int op, fpx_errtype status, uint64_t ns) {
    size_t o = op >= 0 && op < FPX_STATS_OPS ? (size_t)op : FPX_STATS_UNKNOWN_OP;
    if ((unsigned)status >= FPX_STATS_STATUSES)
        status = FPX_E_INTERNAL;
    atomic_fetch_add_explicit(&fpx_stats_now.requests[o][status], 1, memory_order_relaxed);
    add_latency(&fpx_stats_now.latency[o], ns);
}

void fpx_stats_batch(int64_t searches, int64_t queries, uint64_t wait_ns) {
    hist_add(&fpx_stats_now.batch_searches, fpx_stats_size_bounds, fpx_stats_nsize,
             (double)searches, (uint64_t)searches);
    hist_add(&fpx_stats_now.batch_queries, fpx_stats_size_bounds, fpx_stats_nsize, (double)queries,
             (uint64_t)queries);
    add_latency(&fpx_stats_now.batch_wait, wait_ns);
}

void fpx_stats_fsync(uint64_t ns) {
    add_latency(&fpx_stats_now.fsync, ns);
}

void fpx_stats_snapshot(uint64_t ns, uint64_t bytes) {
    add_latency(&fpx_stats_now.snapshot, ns);
    atomic_fetch_add_explicit(&fpx_stats_now.snapshot_bytes, bytes, memory_order_relaxed);
}

void fpx_stats_connection(int delta) {
    atomic_fetch_add_explicit(&fpx_stats_now.connections, delta, memory_order_relaxed);
}

void fpx_stats_workers(int started, int busy) {
    atomic_store_explicit(&fpx_stats_now.workers_started, started, memory_order_relaxed);
    atomic_store_explicit(&fpx_stats_now.workers_busy, busy, memory_order_relaxed);
}

void fpx_stats_inline(void) {
    atomic_fetch_add_explicit(&fpx_stats_now.inline_requests, 1, memory_order_relaxed);
}

void fpx_stats_set_ready(int ready) {
    atomic_store(&fpx_stats_now.ready, ready);
}
