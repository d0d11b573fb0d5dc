/*
 * metrics.h - what the server counts, and the HTTP endpoint that serves it in
 * Prometheus's text format (/metrics), with /healthz and /readyz.
 *
 * The counters are stats.h's. Every label set is bounded: operations and
 * error types are fixed lists, and per-tenant and per-index series are kept
 * to the largest FPX_METRICS_TOP_INDEXES tenants and indexes by bytes on disk
 * (totals over all of them come without labels).
 */
#ifndef FPX_METRICS_H
#define FPX_METRICS_H

#include <stdint.h>

#include "proto/proto.h"

struct fpx_server;

/* Per-tenant and per-index series are kept for this many, the largest. */
#define FPX_METRICS_TOP_INDEXES 20

/* Starts the HTTP endpoint on addr:port (the server's registry read at each
 * scrape). 0, or -1 with err. */
int fpx_metrics_start(struct fpx_server *s, const char *addr, int port, fpx_err *err);
void fpx_metrics_stop(void);

/* The text of /metrics, malloc'd (for the endpoint and for tests). */
char *fpx_metrics_render(struct fpx_server *s, size_t *len);

#endif
