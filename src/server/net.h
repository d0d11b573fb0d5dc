/*
 * net.h - the ZeroMQ side: one ROUTER socket facing clients, a pool of worker
 * threads behind it on inproc://, and the loop that moves messages between
 * them.
 */
#ifndef FPX_NET_H
#define FPX_NET_H

#include <signal.h>

#include "server.h"

/* Binds, starts the workers and serves until *stop becomes non-zero (set by
 * a signal handler). Returns 0 after a clean stop, -1 if it could not start. */
int fpx_net_run(fpx_server *s, volatile sig_atomic_t *stop);

#endif
