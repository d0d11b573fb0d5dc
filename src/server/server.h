/*
 * server.h - the server's state and the entry point of one request.
 *
 * fpx_server owns the configuration, the key table and the registry of open
 * indexes. The network layer (net.c) calls fpx_server_handle from its worker
 * threads with a received body and sends back the body it returns; everything
 * about operations lives behind that call (dispatch.c, ops.h).
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

/* The background snapshot writer: indexes whose log outgrew its threshold
 * (or that were trained or reset) wait here, so that no request waits for a
 * snapshot and a snapshot holds its index's lock shared, not exclusive:
 * searches go on while it is written. */
typedef struct fpx_snapper {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fpx_index *head, *tail; /* referenced */
    int started, stop;
} fpx_snapper;

/* The lease reaper (lease.c): a thread that drops indexes whose lease
 * lapsed, a bounded number per pass. */
typedef struct fpx_reaper {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, stop;
} fpx_reaper;

/* The reclaimer: a low-priority thread that removes the files of deleted
 * indexes and frees their memory, after the delete was answered (server.c).
 * Unlinking a 500 MB file and returning 500 MB to the kernel are work for a
 * core; at the idle scheduling policy it yields that core to every request. */
typedef struct fpx_reclaim_job {
    fpx_index *ix; /* a reference to release, or NULL */
    char *dir;     /* a retired folder to remove, or NULL; owned */
    struct fpx_reclaim_job *next;
} fpx_reclaim_job;

typedef struct fpx_reclaimer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fpx_reclaim_job *head, *tail;
    int started, stop;
} fpx_reclaimer;

/* An index whose files were found at start but could not be loaded. */
typedef struct fpx_unavailable {
    char tenant[FPX_NAME_MAX + 1];
    char name[FPX_NAME_MAX + 1];
    char *reason; /* owned */
    char *dir;    /* owned: its folder, left as it was */
} fpx_unavailable;

typedef struct fpx_server {
    const fpx_config *cfg;
    fpx_auth *auth;
    pthread_rwlock_t reg_lock; /* guards the arrays below, not the indexes */
    fpx_index **indexes;
    size_t nindexes, cap;
    fpx_snapper snap;
    atomic_int blocked; /* workers waiting: for an index's lock or turn (dispatch.c), for another
                           node (forward.c) */
    fpx_reaper reaper;
    fpx_reclaimer reclaim;

    fpx_unavailable *unavail; /* refused at start, until deleted */
    size_t nunavail;

    struct fpx_cluster *cluster; /* cluster mode (src/cluster/); NULL: a single server */
} fpx_server;

/* Loads every index under cfg->data_dir, then starts the background
 * snapshot writer. */
int fpx_server_init(fpx_server *s, const fpx_config *cfg, fpx_err *err);
/* merge.c: at start, before anything is served, empties the other index of
 * each merge_from whose target logged the merge but whose other index had
 * not logged its reset when the server stopped (a crash between the two). */
void fpx_merge_finish(fpx_server *s);

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
/* fpx_server_handle for a body another node of the cluster forwarded here
 * (forwarded 1): such a request is never forwarded again. */
void fpx_server_handle_from(fpx_server *s, const uint8_t *body, size_t len, int forwarded,
                            uint8_t **reply, size_t *reply_len, int *is_static);

/*
 * fpx_server_handle for the network thread while no worker is busy (net.c):
 * it answers a plain search itself (no filter, id selector or statistics, on
 * a single server) when its index's recent searches say it takes at most
 * --inline-search-us and the index's lock is free, as it answers a request
 * that fails before it reaches its index. Anything else returns 1 with no
 * reply, having done nothing a worker will not do again (the index's lease
 * may be renewed): the request goes to a worker as it is. 0 with the reply
 * as fpx_server_handle's.
 */
int fpx_server_handle_inline(fpx_server *s, const uint8_t *body, size_t len, uint8_t **reply,
                             size_t *reply_len, int *is_static);

/* Hands the reclaimer a reference to ix (released there, so that the last
 * one frees the index off the request path) and/or a retired folder (dir,
 * taken) to remove. Without a running reclaimer (at start or shutdown) the
 * work is done at once. */
void fpx_server_reclaim_later(fpx_server *s, fpx_index *ix, char *dir);

/* Hands ix to the background snapshot writer: written when its log is due
 * (or always, with force) and the index still exists. */
void fpx_server_snapshot_later(fpx_server *s, fpx_index *ix, int force);
/* 1 when ix's log has outgrown its snapshot threshold. */
int fpx_server_snapshot_due(const fpx_server *s, const fpx_index *ix);

/* An error reply to a request that is not handled (refused before it reaches
 * a worker), echoing its request_id when it has one; as fpx_server_handle's. */
void fpx_server_refuse(const uint8_t *body, size_t len, const fpx_err *err, uint8_t **reply,
                       size_t *reply_len, int *is_static);

/* Registry (registry.c); each call takes the registry lock only briefly.
 * fpx_server_find returns a referenced, published index or NULL. */
fpx_index *fpx_server_find(fpx_server *s, const char *tenant, const char *name, size_t name_len);
void fpx_index_unref(fpx_index *ix);
/* Inserts a loaded index. 0 or -1 (out of memory). */
int fpx_server_insert(fpx_server *s, fpx_index *ix);
/* Takes ix's name for it (already_exists when taken), invisible to lookups
 * until fpx_server_publish; the registry holds the caller's reference. */
int fpx_server_reserve(fpx_server *s, fpx_index *ix, fpx_err *err);
void fpx_server_publish(fpx_server *s, fpx_index *ix);
void fpx_server_remove(fpx_server *s, fpx_index *ix);
/* Deletes ix, whose lock the caller holds exclusively: its folder first (a
 * failure leaves it served as before; once renamed away, durably, the rest
 * of it is removed by the reclaimer), then its registry entry; marks it
 * dropped. delete_index and a lapsed lease both go this way. The caller
 * hands the registry's reference to fpx_server_reclaim_later after
 * unlocking. */
int fpx_server_drop(fpx_server *s, fpx_index *ix, fpx_err *err);
/* The tenant's published indexes sorted by name, each referenced; *out is
 * malloc'd. 0 or -1 (out of memory). */
int fpx_server_list(fpx_server *s, const char *tenant, fpx_index ***out, size_t *n);

/* Tenant quotas (--tenant-max-*). fpx_server_sync_usage refreshes ix's
 * counts after a change (its lock held); fpx_server_check_quota fails with
 * limit_exceeded when tenant's indexes plus more_vectors / more_bytes would
 * pass a quota. Indexes are counted by fpx_server_reserve. Concurrent writes
 * of one tenant to different indexes are checked each on its own, so they
 * can pass a quota by at most one request each. */
void fpx_server_sync_usage(fpx_index *ix);
int fpx_server_check_quota(fpx_server *s, const char *tenant, int64_t more_vectors,
                           uint64_t more_bytes, fpx_err *err);

/* Leases (lease.c). The reaper starts after loading and stops first at
 * shutdown (fpx_lease_stop waits for it; fpx_lease_halt only tells it to
 * stop, for a shutdown that cannot wait). */
int fpx_lease_start(fpx_server *s, fpx_err *err);
void fpx_lease_stop(fpx_server *s);
void fpx_lease_halt(fpx_server *s);
/* A request named ix: its lease counts from now. */
void fpx_lease_renew(fpx_index *ix);

/* Notes an index refused at start (before serving). 0 or -1 (out of memory). */
int fpx_server_note_unavailable(fpx_server *s, const char *tenant, const char *name,
                                const char *reason, const char *dir);
void fpx_server_forget_unavailable(fpx_server *s);
/* -1 with err set ("index 'X' is unavailable: why; its files are kept as
 * they were in DIR") when tenant's index name was refused at start; else 0. */
int fpx_server_unavailable(fpx_server *s, const char *tenant, const char *name, fpx_err *err);
/* delete_index of a refused index: removes its folder and its entry.
 * 1 done, 0 no such refused index (err untouched), -1 with err set. */
int fpx_server_drop_unavailable(fpx_server *s, const char *tenant, const char *name, fpx_err *err);

#endif
