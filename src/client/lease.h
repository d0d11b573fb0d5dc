/*
 * lease.h - the renewal of a client handle's leases (lease.c), inside
 * libfaissproxy; not a public header.
 *
 * A handle that created indexes with a lease owns one fpx_leaser: the names
 * to renew and a thread that renews them every third of the shortest lease,
 * over a connection of its own, so it never interleaves with the handle's
 * requests on the handle's socket.
 */
#ifndef FPX_CLIENT_LEASE_H
#define FPX_CLIENT_LEASE_H

#include <stdint.h>

typedef struct fpx_leaser fpx_leaser;

/* A leaser for the handle's server and credentials (copied); server_key is
 * the Z85 server key or "" (plain). NULL when out of memory. No thread runs
 * until the first fpx_leaser_add. */
fpx_leaser *fpx_leaser_new(const char *endpoint, const char *api_key, const char *tenant_id,
                           const char *server_key);
/* Stops and joins the thread, then frees everything. NULL is fine. */
void fpx_leaser_free(fpx_leaser *l);
/* Renews index_id every lease_seconds/3 from now on. 0, or -1 (out of
 * memory, or the thread could not start). */
int fpx_leaser_add(fpx_leaser *l, const char *index_id, int64_t lease_seconds);
/* Stops renewing index_id (deleted, or its lease cleared). */
void fpx_leaser_forget(fpx_leaser *l, const char *index_id);
/* The server key changed (Z85, or "" for plain): the next renewal uses it. */
void fpx_leaser_set_server_key(fpx_leaser *l, const char *server_key);

#endif
