/*
 * zap.h - protected mode: a server without API keys serves loopback clients
 * only, unless the operator says otherwise (--allow-remote-unauthenticated).
 *
 * Enforced through ZeroMQ's own authentication protocol (ZAP, RFC 27): a
 * handler thread bound to inproc://zeromq.zap.01 in the server's context is
 * asked about every new connection of a socket with a ZAP domain, and libzmq
 * drops the connection it refuses during the handshake, before a single
 * message of that peer is read.
 */
#ifndef FPX_ZAP_H
#define FPX_ZAP_H

#include "proto/proto.h"

/* The ZMQ_ZAP_DOMAIN of the front socket. */
#define FPX_ZAP_DOMAIN "faiss-proxy"

typedef struct fpx_zap fpx_zap;

/* The policy: 1 when address, a TCP peer address as ZAP reports it (IPv4 or
 * IPv6 text, no port), is a loopback address (127.0.0.0/8, ::1, or 127/8
 * mapped into IPv6); 0 for anything else, unparsable text included. */
int fpx_zap_loopback(const char *address);

/* Binds the ZAP endpoint in ctx and starts the thread that answers it. Call
 * before the front socket binds, so no connection is ever accepted without
 * the check. 0, or -1 with the reason in err. */
int fpx_zap_start(void *ctx, fpx_zap **out, fpx_err *err);

/* Stops the thread and closes its socket; call before zmq_ctx_term. NULL is
 * accepted. */
void fpx_zap_stop(fpx_zap *z);

#endif
