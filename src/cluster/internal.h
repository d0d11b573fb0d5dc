/*
 * internal.h - the cluster's state, shared by cluster.c (connection,
 * buckets, membership, index definitions and replicas) and log.c (the write
 * log: publishing records, following a stream, applying in order).
 */
#ifndef FPX_CLUSTER_INTERNAL_H
#define FPX_CLUSTER_INTERNAL_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>

#include "cluster.h"

/* Buckets (JetStream key-value stores, Raft-replicated). */
#define FPX_BUCKET_INDEXES "fpx_indexes" /* tenant/name -> the index's definition */
#define FPX_BUCKET_NODES "fpx_nodes"     /* node id -> heartbeat, expiring */
#define FPX_BUCKET_APPLIED "fpx_applied" /* node.uid -> last stream sequence applied there */
#define FPX_NODE_TTL_MS 5000             /* a node missing this long is not live */
#define FPX_HEARTBEAT_MS 1000
/* How long a write waits for JetStream (a leader election takes seconds)
 * before this node answers unavailable. */
#define FPX_PUBLISH_DEADLINE_MS 8000
/* How long a start may take to catch a replica up with its stream. */
#define FPX_CATCHUP_DEADLINE_MS 120000

#define FPX_UID_HEX (2 * FPX_UID_BYTES + 1)
/* Most nodes an index is placed on, and its placement as text. */
#define FPX_PLACEMENT_MAX 16
#define FPX_PLACEMENT_LEN (FPX_PLACEMENT_MAX * (FPX_NODE_ID_MAX + 1))

/* A replica of an index on this node, following the index's stream. */
typedef struct fpx_replica {
    struct fpx_cluster *c;
    fpx_index *ix; /* referenced */
    char key[2 * FPX_NAME_MAX + 2];
    char stream[8 + FPX_UID_HEX];  /* FPX_<uid hex> */
    char subject[8 + FPX_UID_HEX]; /* fpx.log.<uid hex> */
    natsSubscription *sub;
    uint64_t reported; /* applied sequence last written to the applied bucket */
    atomic_int behind; /* a delivered record did not apply: the heartbeat catches up */
    struct fpx_replica *next;
} fpx_replica;

typedef struct fpx_cluster {
    fpx_server *s;
    natsConnection *nc;
    jsCtx *js;
    kvStore *indexes, *nodes, *applied;
    int replicas;       /* of buckets and streams: min(3, NATS servers) */
    pthread_mutex_t mu; /* the replica list; opening and forgetting replicas */
    fpx_replica *reps;
    pthread_t beat, watch;
    int beat_started, watch_started;
    kvWatcher *watcher;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    int stop;
    char boot[17]; /* random, per start: message ids of two starts never collide */
    atomic_ullong next_msg;
    /* Forwarding (forward.c): the endpoint advertised in the heartbeat ("" until
     * the network loop listens), and the sockets to other nodes. */
    pthread_mutex_t ep_mu;
    char endpoint[320];
    void *zctx;
    pthread_mutex_t fwd_mu;
    struct fpx_peer *peers;
    atomic_ullong next_sock;
} fpx_cluster;

/* forward.c: this node's heartbeat value ("live", then key=value words:
 * endpoint=tcp://HOST:PORT once listening, role=data or role=router). */
void fpx_node_record(fpx_cluster *c, char *out, size_t cap);
/* node's heartbeat: 1 live (*router set, endpoint "" when it advertises
 * none, as a node of an older version), 0 not live, -1 error. */
int fpx_node_lookup(fpx_cluster *c, const char *node, char *endpoint, size_t cap, int *router,
                    fpx_err *err);
/* Forwards r's body to the first live node of placement (comma-separated)
 * that answers: r->relay is its reply (0), or r->err (-1). A read goes on to
 * the next node after an unavailable reply or a timeout; a write only when
 * the reply says it was not published, or when its message id makes a
 * second publish harmless (client_id and request_id). */
int fpx_forward_to_holders(fpx_cluster *c, fpx_req *r, const char *placement);
/* Closes every forwarding socket (no request in flight any more). */
void fpx_forward_stop(fpx_cluster *c);

/* Names of an index's stream and subject from its unique id. */
void fpx_cluster_uid_hex(const uint8_t *uid, char *out);
void fpx_cluster_stream_names(const uint8_t *uid, char *stream, char *subject);
/* natsStatus as an fpx_err: unavailable, with what failed. */
int fpx_cluster_fail(fpx_err *err, const char *what, natsStatus st);

/* log.c: follows rep's stream from rep->ix->seq + 1 (the caller holds c->mu). */
int fpx_log_follow(fpx_cluster *c, fpx_replica *rep, fpx_err *err);
/* Applies the stream's records up to seq to ix (its lock held exclusively). */
int fpx_log_catch_up(fpx_cluster *c, fpx_index *ix, uint64_t seq, fpx_err *err);
/* Catches rep up with its stream, by at most max records: 1 when records
 * are left (or could not be applied), 0 when none, -1 when the stream could
 * not be read. Takes the index's lock; called by the heartbeat. */
int fpx_log_repair(fpx_cluster *c, fpx_replica *rep, uint64_t max, fpx_err *err);
/* The stream's last sequence. */
int fpx_log_last_seq(fpx_cluster *c, const uint8_t *uid, uint64_t *seq, fpx_err *err);

#endif
