/*
 * net.h - the ZeroMQ side: one ROUTER socket facing clients, a pool of worker
 * threads behind it on inproc://, and the loop that moves messages between
 * them.
 */
#ifndef FPX_NET_H
#define FPX_NET_H

#include <signal.h>

#include "server.h"

/* fpx_net_run's result when requests were still running at the end of the
 * shutdown timeout: their workers were left running (a FAISS call cannot be
 * interrupted), so the caller must not free anything they may touch. */
#define FPX_NET_WORKERS_BUSY 1

/*
 * Binds, starts the workers and serves until *stop becomes non-zero (set by
 * a signal handler). Then it stops taking requests and lets those in flight
 * finish (their replies are still sent) for up to cfg->shutdown_timeout
 * seconds. Returns 0 when every worker finished and was joined,
 * FPX_NET_WORKERS_BUSY when some were still running at the deadline, -1 if
 * it could not start.
 */
int fpx_net_run(fpx_server *s, volatile sig_atomic_t *stop);

#endif
