/*
 * internal.h - the cluster's state, shared by the files of src/cluster/:
 * cluster.c (connection, buckets, membership), requests.c (finding, creating
 * and deleting indexes), def.c (the index definitions), replica.c (the
 * replicas held here), log.c (the write log: publishing records, following a
 * stream, applying in order) and the others, each named where its functions
 * are declared.
 */
#ifndef FPX_CLUSTER_INTERNAL_H
#define FPX_CLUSTER_INTERNAL_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>

#include "cluster.h"

#include "server/util.h"

/* A monotonic clock in milliseconds. */
static inline uint64_t fpx_mono_ms(void) {
    return fpx_now_ns() / 1000000;
}

/* Hash buckets of the renewals requests asked for (lease.c). */
#define FPX_TOUCH_BUCKETS 256
typedef struct fpx_touch {
    char key[2 * FPX_UID_BYTES + 1]; /* the index's unique id, hex */
    int64_t until_ms;                /* the expiry asked for (wall clock) */
    struct fpx_touch *next;
} fpx_touch;

/* Buckets (JetStream key-value stores, Raft-replicated). */
#define FPX_BUCKET_INDEXES "fpx_indexes" /* tenant/name -> the index's definition */
#define FPX_BUCKET_NODES "fpx_nodes"     /* node id -> heartbeat, expiring */
#define FPX_BUCKET_APPLIED "fpx_applied" /* node.uid -> last stream sequence applied there */
#define FPX_BUCKET_LABELS "fpx_labels"   /* uid of a sharded index -> its next unkeyed label */
/* uid.hash of (tenant, client_id, request_id) -> "first n": the labels an
 * unkeyed add to a sharded index reserved, so that the same add sent again
 * takes the same labels, goes to the same shards, and JetStream drops its
 * records there as duplicates. Entries live as long as JetStream's duplicate
 * window (2 minutes), past which a repeat is a new write anyway. */
#define FPX_BUCKET_LABEL_REQS "fpx_label_reqs"
/* The cluster's own settings: "forward_token", a random secret made by the
 * first node, which the routing ids of forwarding sockets carry (forward.c). */
#define FPX_BUCKET_CLUSTER "fpx_cluster"
/* node.uid -> the last stream sequence the snapshot of that node's replica
 * covers: what a restart there needs the stream to hold from (peer.c). */
#define FPX_BUCKET_SNAPSHOTS "fpx_snapshots"
/* uid (hex) of a leased index -> its lease (lease.c) */
#define FPX_BUCKET_LEASES "fpx_leases"
/* node id -> what the replicas held there use, expiring as heartbeats do
 * (usage.c) */
#define FPX_BUCKET_USAGE "fpx_usage"
#define FPX_FORWARD_TOKEN_LEN 32
#define FPX_DEDUP_WINDOW_MS 120000
#define FPX_NODE_TTL_MS 5000 /* a node missing this long is not live */
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

/* Most shards an index may have. */
#define FPX_SHARDS_MAX 64
#define FPX_TYPE_MAX 256

/* An index's definition, as stored in fpx_indexes. A sharded index (shards
 * > 1) is defined once under its own name, with its shard map, and each of
 * its shards once more as an index of its own (fpx_shard_name), which is
 * what nodes hold and streams log. */
typedef struct fpx_def {
    char tenant[FPX_NAME_MAX + 1];
    char name[FPX_NAME_MAX + 1];
    char index_type[FPX_TYPE_MAX];
    char metric[16]; /* "" when the request gave none */
    int64_t dim, replicas, shards;
    uint8_t uid[FPX_UID_BYTES];
    char placement[FPX_PLACEMENT_LEN]; /* node ids, comma-separated */
    char *shard_map; /* shards > 1: per shard its node ids, ';' between shards; malloc'd */
    /* An imported index: its stream's first import_records records are the
     * import (import.c), from which a replica without state builds it. */
    int64_t import_records;
} fpx_def;

/* Shard i's node ids (comma-separated) into out[cap]. */
void fpx_def_shard_nodes(const fpx_def *d, int64_t i, char *out, size_t cap);
/* The shard map as stored and reported: per shard, an array of its node ids. */
void fpx_def_pack_shard_map(const fpx_def *d, msgpack_packer *pk);
void fpx_def_clear(fpx_def *d);

/* A replica of an index on this node, following the index's stream. */
enum { FPX_REP_LINKED, FPX_REP_FORGOTTEN, FPX_REP_ENDED };

typedef struct fpx_replica {
    struct fpx_cluster *c;
    fpx_index *ix; /* referenced */
    char key[2 * FPX_NAME_MAX + 2];
    char stream[8 + FPX_UID_HEX];  /* FPX_<uid hex> */
    char subject[8 + FPX_UID_HEX]; /* fpx.log.<uid hex> */
    natsSubscription *sub;
    /* The revision of the definition it was opened from (the bucket's
     * sequence): the watcher may deliver older entries of its key after a
     * request or a create here opened it, and those are not about it. */
    uint64_t rev;
    /* Who frees it: FPX_REP_LINKED while in c->reps; FPX_REP_FORGOTTEN once
     * unlinked with its subscription still on (the subscription's end frees
     * it, log.c); FPX_REP_ENDED when the subscription ended while it was
     * still linked (the connection closed under it: unlinking frees it). */
    atomic_int state;
    uint64_t reported; /* applied sequence last written to the applied bucket */
    atomic_int behind; /* a delivered record did not apply: the heartbeat catches up */
    /* The snapshot sequence + 1 last written to fpx_snapshots (peer.c). */
    uint64_t snap_reported;
    /* The durable sequence last announced to synced writers (synced.c);
     * only the stream's delivery callback touches it. */
    uint64_t durable_sent;
    struct fpx_replica *next;
} fpx_replica;

/* cache.c: a key-value bucket's entries held in memory, kept current by a
 * watch on the bucket. */
#define FPX_KVCACHE_BUCKETS 1024
#define FPX_KVCACHE_KEY_MAX (2 * FPX_NAME_MAX + 2)
typedef struct fpx_centry {
    char key[FPX_KVCACHE_KEY_MAX + 1];
    uint8_t *val;
    size_t len;
    int present;    /* 0: deleted (kept only with keep_deleted) */
    uint64_t at_ns; /* when the watcher delivered it here (monotonic) */
    struct fpx_centry *next;
} fpx_centry;

typedef struct fpx_kvcache {
    pthread_rwlock_t mu;
    fpx_centry *b[FPX_KVCACHE_BUCKETS];
    atomic_int ready; /* the watcher delivered the bucket's initial values */
    int keep_deleted; /* remember deleted keys (as such) instead of forgetting them */
} fpx_kvcache;

void fpx_kvcache_init(fpx_kvcache *k);
void fpx_kvcache_free(fpx_kvcache *k);
/* A watcher's entry: a put stores its value, a delete or purge removes it. */
void fpx_kvcache_apply(fpx_kvcache *k, kvEntry *e);
/* A value this node just wrote to the bucket, seen here before its
 * watcher delivers it (which then stores it again). */
void fpx_kvcache_put(fpx_kvcache *k, const char *key, const void *val, size_t len);
/* key's value (*val malloc'd, the caller frees; *age_ms since it was
 * delivered): 1 present, 2 deleted (keep_deleted), 0 not in the cache, -1
 * the cache is not ready (or out of memory): read NATS. */
int fpx_kvcache_get(fpx_kvcache *k, const char *key, uint8_t **val, size_t *len, uint64_t *age_ms);
/* Calls fn on every present entry, under the cache's read lock (fn must not
 * use the cache): 0, or -1 when the cache is not ready. */
int fpx_kvcache_each(fpx_kvcache *k,
                     void (*fn)(void *arg, const char *key, const uint8_t *val, size_t len),
                     void *arg);

/* A bucket watched into a cache on a thread of its own (cache.c). */
typedef struct fpx_watch {
    struct fpx_cluster *c;
    kvWatcher *w;
    fpx_kvcache *k;
    pthread_t th;
    int started;
} fpx_watch;

typedef struct fpx_cluster {
    fpx_server *s;
    natsConnection *nc;
    jsCtx *js;
    kvStore *indexes, *nodes, *applied, *labels, *label_reqs, *meta, *snaps;
    char fwd_token[FPX_FORWARD_TOKEN_LEN + 1]; /* immutable once started */
    int replicas;                              /* of buckets and streams: min(3, NATS servers) */
    pthread_mutex_t mu; /* the replica list; opening and forgetting replicas */
    fpx_replica *reps;
    /* Replicas being opened (replica.c): each opens without c->mu held (a
     * peer's snapshot may take minutes), and ends with opened_cv. */
    struct fpx_opening *opening;
    pthread_cond_t opened_cv;
    pthread_t beat, watch, repair;
    int beat_started, watch_started, repair_started;
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
    /* Snapshots being given to other nodes, part by part (peer.c). */
    pthread_mutex_t xfer_mu;
    struct fpx_transfer *xfers;
    uint64_t xfer_next;
    /* The definitions, the heartbeats and the leases, each fed by a watcher
     * of its own, read by forwarding, the orphan pass and the lease reaper
     * instead of NATS (cache.c). */
    fpx_kvcache def_cache, node_cache, lease_cache;
    fpx_watch defs_watch, nodes_watch, leases_watch;
    /* Replicas placed here that could not be opened when their definition
     * came: tried again by the watcher thread (its own list). */
    struct fpx_unopened *unopened;
    /* What create or delete left half-way, as seen by the lease reaper's
     * thread, which removes it (orphan.c). */
    struct fpx_orphan *orphans;
    /* Leases (lease.c): their bucket and this node's reaper. */
    kvStore *leases;
    /* Renewals asked for by requests, written by the reaper (lease.c). */
    pthread_mutex_t touch_mu;
    struct fpx_touch *touched[FPX_TOUCH_BUCKETS];
    /* Usage (usage.c): its bucket, watched; what this node wrote last
     * (by the heartbeat's thread only). */
    kvStore *usage;
    fpx_kvcache usage_cache;
    fpx_watch usage_watch;
    char *usage_sent;
    size_t usage_sent_len;
    unsigned usage_beat;
    pthread_t lreaper;
    int lreaper_started;
} fpx_cluster;

/* lease.c: writes the lease of a new index of unique id uid (secs > 0),
 * before its definition; starts and stops (after c->stop) the reaper. */
int fpx_clease_put(fpx_cluster *c, const uint8_t *uid, const char *tenant, const char *name,
                   int64_t secs, fpx_err *err);
/* The lease of the index of unique id uid (of the sharded index for a
 * sharded one) as this node knows it (the watched fpx_leases, and what it
 * wrote itself): 1 leased (*secs, *remaining seconds: 0 once lapsed), 0
 * none or not known. ctx is the cluster: a replica's fpx_index lease_of. */
int fpx_clease_info(void *ctx, const uint8_t *uid, int64_t *secs, double *remaining);
/* The index of unique id uid is defined: its lease (written by
 * fpx_clease_put to cover the create's time too) counts from now. */
void fpx_clease_begin(fpx_cluster *c, const uint8_t *uid);
/* A request named the index of unique id uid here: its lease (if any)
 * counts from now, written at once when little of it is left, else by the
 * reaper's next tick. */
void fpx_clease_touch(fpx_cluster *c, const uint8_t *uid);
int fpx_clease_start(fpx_cluster *c, fpx_err *err);
void fpx_clease_stop(fpx_cluster *c);

/* orphan.c: one pass of the search for what a create or delete stopped
 * half-way left (the lease reaper's thread runs it every
 * eighth of the grace); the list of what it saw, freed at stop. The grace
 * after which an orphan goes, and the time within which a create must
 * write the definition naming its stream or shards (half of it). */
void fpx_orphan_pass(fpx_cluster *c);
void fpx_orphan_forget(fpx_cluster *c);
int64_t fpx_orphan_grace_ms(const fpx_cluster *c);
int64_t fpx_orphan_deadline_ms(const fpx_cluster *c);

/* usage.c: writes what the replicas held here use to fpx_usage, when it
 * changed or was written FPX_USAGE_REFRESH_BEATS ago (the heartbeat's
 * thread, at its beat number beats). */
void fpx_usage_beat(fpx_cluster *c, unsigned beats);

/* cache.c: watches fpx_indexes into c->def_cache, fpx_nodes into
 * c->node_cache, fpx_leases into c->lease_cache and fpx_usage into
 * c->usage_cache (after their initial values), each on a thread of its own;
 * fpx_cache_stop ends them (c->stop set first). */
int fpx_cache_start(fpx_cluster *c, fpx_err *err);
void fpx_cache_stop(fpx_cluster *c);

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
/* log.c: publishes rec to the stream of the index with unique id uid, with
 * message id msgid (a second publish of it within JetStream's window is
 * stored once): its stream sequence in *seq. */
int fpx_log_publish_rec(fpx_cluster *c, const uint8_t *uid, const fpx_walrec *rec,
                        const char *msgid, uint64_t *seq, fpx_err *err);
/* merge.c: merge_from's route (for the target t, one index): 0 served here
 * (this node holds both indexes), 1 sent to a node that does (r->relay),
 * -1 with r->err. */
int fpx_cluster_merge_route(fpx_cluster *c, fpx_req *r, const fpx_def *t);
/* merge.c: finishes, through the streams, the merges out of replicas held
 * here that are fenced for longer than a node takes to do it (a node that
 * began one stopped): once a second, from the lease reaper. */
void fpx_cluster_merge_finish_pass(fpx_cluster *c);
/* Closes every forwarding socket (no request in flight any more). */
void fpx_forward_stop(fpx_cluster *c);

/* Names of an index's stream and subject from its unique id. */
void fpx_cluster_uid_hex(const uint8_t *uid, char *out);
void fpx_cluster_stream_names(const uint8_t *uid, char *stream, char *subject);
/* natsStatus as an fpx_err: unavailable, with what failed. */
int fpx_cluster_fail(fpx_err *err, const char *what, natsStatus st);

/* What an index is imported from: FAISS's bytes and a metadata section
 * (msgpack; may be empty), as import_index's request carries them. */
typedef struct fpx_import_src {
    const uint8_t *data, *meta;
    size_t dlen, mlen;
} fpx_import_src;

/* 1 when node is one of list (node ids separated by ',', or ';' between a
 * shard map's shards). */
int fpx_list_has(const char *list, const char *node);
/* 1 when this node is one of list (node ids, comma-separated). */
int fpx_node_listed(const fpx_cluster *c, const char *list);
/* The definition of tenant/name: 1 found, 0 none, -1 error. */
int fpx_cluster_def(fpx_cluster *c, const char *tenant, const char *name, fpx_def *d, fpx_err *err);
/* Removes the definition and the stream of the index tenant/name (a shard),
 * and its replica here; the other nodes drop theirs when they see it go.
 * 1 removed, 0 not defined, -1 error. */
int fpx_cluster_undefine(fpx_cluster *c, const char *tenant, const char *name, fpx_err *err);
/* The same, only when tenant/name still defines the index of unique id uid
 * (NULL: whichever it defines): a drop decided for one index never deletes
 * another made under its name since (the definition is deleted at the
 * revision read, fpx_def_delete). */
int fpx_cluster_undefine_uid(fpx_cluster *c, const char *tenant, const char *name,
                             const uint8_t *uid, fpx_err *err);
/* delete_index's reply, made here ({"deleted": true} in r->relay). */
int fpx_cluster_reply_deleted(fpx_req *r);
/* Defines an index (a shard of a sharded index) on the nodes of placement:
 * its stream, then its definition (a KV create); opened here when placed
 * here. */
int fpx_cluster_define(fpx_cluster *c, fpx_def *d, fpx_err *err);
/* fpx_cluster_define of an index whose content is imported from imp
 * (written to its stream before the definition names it). */
int fpx_cluster_define_import(fpx_cluster *c, fpx_def *d, const fpx_import_src *imp, fpx_err *err);

/* Catches this node's replica of tenant/name (when it holds one) up with
 * the last record of its stream, so that what it answers next includes
 * every write acknowledged anywhere before this call. */
int fpx_cluster_sync(fpx_cluster *c, const char *tenant, const char *name, fpx_err *err);

/* shard.c: the name of shard i of the sharded index of unique id uid,
 * ".shard-<uid hex>-<i>" (a leading '.' no user's index name has). */
void fpx_shard_name(const uint8_t *uid, int64_t i, char *out /* FPX_NAME_MAX + 1 */);
/* The sharded index's uid (hex) and the shard's number of a shard's name:
 * 1, or 0 for any other name. */
int fpx_shard_parse(const char *name, char *uid_hex /* FPX_UID_HEX */, int64_t *i);
/* Serves request r naming the sharded index d: r->relay is the reply (0),
 * or r->err (-1). */
int fpx_shard_serve(fpx_cluster *c, fpx_req *r, const fpx_def *d);
/* The info map of the sharded index d, as get_index_info answers it, packed
 * into sb (r is the request asking, for its credentials). */
int fpx_shard_info(fpx_cluster *c, fpx_req *r, const fpx_def *d, msgpack_sbuffer *sb);
/* Sets the label counter of the sharded index d: the next unkeyed add takes
 * labels from next on. */
int fpx_shard_set_labels(fpx_cluster *c, const fpx_def *d, int64_t next, fpx_err *err);
/* The shard a vector with caller key `key` goes to, of `shards`. */
int64_t fpx_shard_of_key(const msgpack_object *key, int64_t shards);

/* shard_import.c: import_index's index r->made (with its keys, r's
 * metadata section "items") cut into the content of each of `shards`
 * shards, routed as adds are: part[i] is shard i's FAISS bytes and items
 * (held in the struct until fpx_shard_import_free), next the label
 * counter's next value (one server's next unkeyed label). */
typedef struct fpx_shard_parts {
    fpx_import_src part[FPX_SHARDS_MAX];
    uint8_t *bytes[FPX_SHARDS_MAX];
    msgpack_sbuffer meta[FPX_SHARDS_MAX];
    int64_t n, next;
} fpx_shard_parts;
int fpx_shard_import_split(const fpx_req *r, int64_t shards, fpx_shard_parts *out, fpx_err *err);
void fpx_shard_import_free(fpx_shard_parts *p);

/* peer.c: before a replica of d opens here. *ix is the local index of d's
 * unique id (referenced) or NULL. When it is older than the stream's first
 * record it is dropped (*ix NULL). Without one, a live peer's state is asked
 * for: *got is that state, decoded (its seq is the last record it covers),
 * to be stored as this replica; *got NULL means an empty replica replaying
 * the stream (nothing written yet, or no peer answered while the stream
 * still starts at record 1). -1 (unavailable) when no peer answered and the
 * stream no longer starts at 1. */
int fpx_peer_fetch(fpx_cluster *c, const fpx_def *d, fpx_index **ix, fpx_index **got, fpx_err *err);
/* Closes the snapshot transfers still open (at stop). */
void fpx_peer_transfers_free(fpx_cluster *c);
/* The heartbeat's part: reports every replica's snapshot sequence, and
 * every few beats trims the streams of the indexes held here. */
void fpx_peer_beat(fpx_cluster *c, unsigned beats);
/* The first and last sequences of the stream of uid. */
int fpx_stream_bounds(fpx_cluster *c, const uint8_t *uid, uint64_t *first, uint64_t *last,
                      fpx_err *err);
/* requests.c: the live data nodes, this one first (unless it is
 * router-only: routers hold no replica), at most max, comma-separated into
 * out[cap]; *n of them. */
int fpx_live_nodes(fpx_cluster *c, char *out, size_t cap, int max, int *n, fpx_err *err);
/* move.c: moves the replica of tenant's index name (shard >= 0: of that
 * shard of the sharded index name) from node from to node to, as the
 * command --move does: 0 once moved, -1 with err (the index as it was). */
int fpx_move_replica(fpx_cluster *c, const char *tenant, const char *name, int64_t shard,
                     const char *from, const char *to, fpx_err *err);
/* repair.c: the thread that moves the replicas of nodes gone for longer
 * than --replace-after to live ones. */
void *fpx_repair_main(void *arg);
/* replica.c: the replicas held here (c->reps, under c->mu). The open
 * replica of key, or NULL (c->mu held). */
fpx_replica *fpx_replica_find(fpx_cluster *c, const char *key);
/* Deletes the local index ix (referenced by the caller). */
void fpx_replica_drop_local(fpx_server *s, fpx_index *ix, const char *why);
/* Stops following rep and releases it (c->mu held). */
void fpx_replica_forget_locked(fpx_cluster *c, fpx_replica *rep);
/* The replica of d here (c->mu held): the one open, or opened now from the
 * local index of d's unique id, a peer's state or the stream's start (made:
 * a new index the caller built, taken); NULL with err. c->mu is let go
 * while it opens, so other replicas and the replica list stay usable
 * meanwhile; another open of the same key waits for this one. */
fpx_replica *fpx_replica_open(fpx_cluster *c, const fpx_def *d, uint64_t rev, fpx_index **made,
                              fpx_err *err);
/* Stops following the replica of key (tenant/name) and deletes it here; the
 * next request naming the index opens it again. */
void fpx_replica_forget(fpx_cluster *c, const char *key, const char *why);
/* One entry of fpx_indexes as the watcher delivers it: the definitions'
 * cache updated, a replica opened (or tried again later) or dropped. */
void fpx_replica_on_definition(fpx_cluster *c, kvEntry *e);
/* The definitions watcher's thread (arg: the cluster), started once its
 * first values were delivered; it also tries again replicas that could not
 * open. */
void *fpx_replica_watch_main(void *arg);

/* log.c: follows rep's stream from rep->ix->seq + 1 (the caller holds c->mu). */
int fpx_log_follow(fpx_cluster *c, fpx_replica *rep, fpx_err *err);
/* Applies the stream's records up to seq to ix (its lock held exclusively). */
int fpx_log_catch_up(fpx_cluster *c, fpx_index *ix, uint64_t seq, fpx_err *err);
/* Catches rep up with its stream, by at most max records: 1 when records
 * are left (or could not be applied), 0 when none, -1 when the stream could
 * not be read. Takes the index's lock; called by the heartbeat. */
int fpx_log_repair(fpx_cluster *c, fpx_replica *rep, uint64_t max, fpx_err *err);
/* Publishes a trained index (FAISS's bytes, as fpx_train_record makes them)
 * as the next record of the stream of uid, only if no other record reached
 * it meanwhile; each replica replaces its untrained engine with it. */
int fpx_log_publish_trained(fpx_cluster *c, fpx_req *r, const uint8_t *uid, const uint8_t *bytes,
                            size_t n, fpx_err *err);
/* Publishes payload p as a record of subject with message id msgid, retried
 * for a few seconds (JetStream stores one id once); expect_last: the
 * stream's last sequence it must follow (0: any). *seq is its sequence, *dup
 * whether the stream held that id already. */
int fpx_log_publish(fpx_cluster *c, const char *subject, const uint8_t *p, size_t len,
                    const char *msgid, uint64_t expect_last, uint64_t *seq, int *dup, fpx_err *err);
/* The stream's last sequence. */
int fpx_log_last_seq(fpx_cluster *c, const uint8_t *uid, uint64_t *seq, fpx_err *err);

/* import.c: writes src to the new, empty stream of d as its first records,
 * chunked to fit NATS's max_payload; sets d->import_records. */
int fpx_import_publish(fpx_cluster *c, const fpx_import_src *src, fpx_def *d, fpx_err *err);
/* The imported index d built from its stream's first d->import_records
 * records (*made, unregistered, at that sequence). */
int fpx_import_rebuild(fpx_cluster *c, const fpx_def *d, fpx_index **made, fpx_err *err);
/* synced.c: the last stream sequence ix holds applied and synced to its
 * local log (its lock held, shared or exclusive); what a replica reports,
 * on the subject fpx.durable.<uid> at once (fpx_synced_report) and in
 * fpx_applied every heartbeat. */
uint64_t fpx_synced_durable(fpx_index *ix);
void fpx_synced_report(fpx_cluster *c, const uint8_t *uid, uint64_t durable);
/* A write asking for "synced" to the sharded index d: serve runs it (its
 * parts acked), then each shard whose stream it extended waits until its
 * replicas confirm the stream up to its last record. */
int fpx_synced_sharded(fpx_cluster *c, fpx_req *r, const fpx_def *d,
                       int (*serve)(fpx_cluster *, fpx_req *, const fpx_def *));

/* cluster.c: waits ms on the cluster's stop condition; 1 when asked to stop. */
int fpx_cluster_wait_stop(fpx_cluster *c, int ms);

/* cluster.c, for the move command (move.c): connects c->nc and c->js to
 * the NATS servers of c->s->cfg. */
int fpx_cluster_connect(fpx_cluster *c, fpx_err *err);

/* def.c: definitions in fpx_indexes. The key of tenant/name, and tenant and
 * name from a key (-1: not one of ours). */
void fpx_def_key(const char *tenant, const char *name, char *out /* 2 * FPX_NAME_MAX + 2 */);
int fpx_def_key_parse(const char *key, char *tenant, char *name);
/* A definition to its stored form (0, or -1 out of memory), and back: 0 (d
 * filled, fpx_def_clear it) or -1. */
int fpx_def_encode(const fpx_def *d, msgpack_sbuffer *sb);
int fpx_def_decode(const void *data, int len, fpx_def *d, fpx_err *err);
/* Whether d places a replica on this node. */
int fpx_def_placed_here(const fpx_cluster *c, const fpx_def *d);
/* key's definition and its revision (rev may be NULL): 1 found, 0 none, -1
 * error; fpx_def_get without the revision. */
int fpx_def_read(fpx_cluster *c, const char *key, fpx_def *d, uint64_t *rev, fpx_err *err);
int fpx_def_get(fpx_cluster *c, const char *key, fpx_def *d, fpx_err *err);
/* Deletes key's definition only while its last revision is rev: 1 deleted,
 * 0 the key changed since, -1 error. */
int fpx_def_delete_at(fpx_cluster *c, const char *key, uint64_t rev, fpx_err *err);
/* Deletes key's definition while it holds the index uid (any when NULL),
 * read and deleted at one revision (retried, bounded): 1 deleted (*d its
 * last value, cleared), 0 none there or another index's, -1 error. */
int fpx_def_delete(fpx_cluster *c, const char *key, const uint8_t *uid, fpx_def *d, fpx_err *err);

#endif
