/*
 * server.h - the server's state and the entry point of one request.
 *
 * fpx_server owns the configuration, the key table and the registry of open
 * indexes. The network layer (net.c) calls fpx_server_handle from its worker
 * threads with a received body and sends back the body it returns; everything
 * about operations lives behind that call (handlers.c).
 */
#ifndef FPX_SERVER_H
#define FPX_SERVER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "config.h"
#include "index.h"
#include "store.h"

typedef struct fpx_server {
    const fpx_config *cfg;
    fpx_auth *auth;
    pthread_rwlock_t reg_lock; /* guards the array below, not the indexes */
    fpx_index **indexes;
    size_t nindexes, cap;
} fpx_server;

/* Loads every index under cfg->data_dir. */
int fpx_server_init(fpx_server *s, const fpx_config *cfg, fpx_err *err);
/* Snapshots indexes with unsnapshotted writes, then frees everything. */
void fpx_server_shutdown(fpx_server *s);
/*
 * For a shutdown that cannot wait for every worker: snapshots the indexes
 * with unsnapshotted writes whose lock is free right now, never waiting on a
 * busy one (its log holds its writes). The locks it takes are kept, so
 * nothing changes an index after its snapshot; the process must exit next.
 */
void fpx_server_snapshot_idle(fpx_server *s);

/*
 * Handles one request body and returns the reply body. *reply is malloc'd
 * unless *is_static is set (a preformatted "out of memory" reply that must
 * not be freed). Always produces a reply.
 */
void fpx_server_handle(fpx_server *s, const uint8_t *body, size_t len, uint8_t **reply,
                       size_t *reply_len, int *is_static);

/* Registry (server.c). fpx_server_find returns a referenced index or NULL. */
fpx_index *fpx_server_find(fpx_server *s, const char *tenant, const char *name, size_t name_len);
void fpx_index_unref(fpx_index *ix);
/* Caller holds reg_lock for writing. 0 or -1 (out of memory). */
int fpx_server_insert(fpx_server *s, fpx_index *ix);
void fpx_server_remove(fpx_server *s, fpx_index *ix);

/* Re-applies a log record during recovery (handlers.c). */
int fpx_server_replay(fpx_index *ix, const fpx_walrec *rec, fpx_err *err);

#endif
