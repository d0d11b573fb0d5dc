/*
 * cluster.h - faiss-proxy as a cluster over NATS JetStream: what the server
 * calls (docs/cluster.md says how it works).
 *
 * Without --cluster none of this runs and s->cluster is NULL. With it, the
 * consensus and the replication are JetStream's: index definitions and
 * membership live in key-value buckets, every index's writes in a stream of
 * its own. What is ours is the routing of a request to its index, applying
 * the stream's records in order through fpx_apply (the function that also
 * replays the local log), and the local snapshots at a sequence. A node
 * answers for every index: one it holds no replica of is served by
 * forwarding the request to a node that holds one (forward.c).
 *
 * The dispatcher (dispatch.c) calls the fpx_cluster_* hooks from the one
 * sequence every request runs, so no handler knows it runs in a cluster.
 * Lock order: the cluster's own mutex may be held while taking an index's
 * lock, never the other way round.
 */
#ifndef FPX_CLUSTER_H
#define FPX_CLUSTER_H

#include "server/request.h"

/* Joins the cluster named by s->cfg->cluster_urls (nothing without one):
 * connects, binds or creates the buckets, announces this node, opens a
 * replica of every index placed here and catches each up with its stream
 * before returning, then keeps following. After fpx_server_init. */
int fpx_cluster_start(fpx_server *s, fpx_err *err);
/* The one-shot command --move (move.c, docs/cluster.md "Moving a
 * replica"): moves a replica of cfg->move_index from cfg->move_from to
 * cfg->move_to, without joining as a node; 0 once done. */
int fpx_cluster_move(const fpx_config *cfg, fpx_err *err);
/* Stops following and leaves the cluster (this node's heartbeat lapses). */
void fpx_cluster_stop(fpx_server *s);

/* Before any step of a request: unsupported for operations a cluster does
 * not serve yet, unavailable while this node cannot reach NATS. */
int fpx_cluster_admit(fpx_req *r);
/* renew_leases and set_lease against the cluster's leases (lease.c): 1
 * answered into o, -1 error (r->err), 0 go on with r->op (set_lease goes on
 * as get_index_info, whose info map is its reply). */
int fpx_cluster_lease(fpx_req *r, fpx_out *o);
/* The request's index when the cluster defines it but this node has not
 * opened its replica yet (a create through another node a moment ago);
 * NULL with r->err set otherwise. Referenced. */
fpx_index *fpx_cluster_index(fpx_req *r);
/* A request named ix, held here: the cluster's lease of its index (if any)
 * counts from now (lease.c), as every request renews one server's. */
void fpx_cluster_touch(fpx_server *s, const fpx_index *ix);
/* create_index: defines r->made cluster-wide (already_exists when its name
 * is taken, on any node), creates its stream and opens the replica here,
 * which becomes r->ix (referenced). */
int fpx_cluster_create(fpx_req *r);
/* A logged write, r->ix locked exclusively: publishes r->rec to the index's
 * stream and applies every record up to it here, in order; 0 once both the
 * stream and this replica hold it. */
int fpx_cluster_write(fpx_req *r);
/* synced.c: fpx_cluster_write, and for a write asking for durability
 * "synced" first listens to its index's replicas' reports; fpx_synced_wait
 * (after the lock is released, rc the request's status so far) then waits
 * for min(2, replicas) of them to have applied and synced the record, and
 * ends the listening whatever rc is. */
int fpx_synced_write(fpx_req *r);
int fpx_synced_wait(fpx_req *r, int rc);
/* delete_index, r->ix locked exclusively: removes the definition and the
 * stream, then the replica here; the other nodes drop theirs. */
int fpx_cluster_drop(fpx_req *r);
/* merge_from in a cluster (merge.c): sent to a node holding both indexes
 * (from the dispatcher, before the index is looked up); from server/merge.c,
 * fences the other
 * index's stream (bind), empties it through its stream once the target
 * merged (run), and lifts the fence of a merge that did not happen or
 * leaves it to be finished (release). */
int fpx_cluster_merge_routed(fpx_req *r); /* 1: relayed (r->relay) or failed (r->err) */
int fpx_cluster_merge_fence(fpx_req *r);
int fpx_cluster_merge_reset(fpx_req *r);
void fpx_cluster_merge_abandon(fpx_req *r);

/* The routing ids of the sockets that forward requests to another node
 * start with this: net.c marks such requests forwarded (never forwarded
 * again). */
#define FPX_FORWARD_ID_PREFIX "fpx-fwd:"
/* Whether a connection's routing id is a forwarding socket's of this
 * cluster: the prefix, then the cluster's forwarding token (a secret kept in
 * NATS, so that a client cannot pass itself off as a node), then ':'. */
int fpx_cluster_forwarded_id(const fpx_server *s, const void *id, size_t len);

/* Adds to *vectors and *bytes what the tenant's indexes held by other nodes
 * use, each index once (usage.c), leaving out the nheld unique ids at held
 * (the replicas here, which the caller counted). 0, or -1 with err. */
int fpx_cluster_usage(fpx_server *s, const char *tenant, const uint8_t *held, size_t nheld,
                      uint64_t *vectors, uint64_t *bytes, fpx_err *err);

/* The network loop is listening on bound (ZMQ_LAST_ENDPOINT): the endpoint
 * this node advertises in its heartbeat (--advertise, or bound with a
 * wildcard address replaced by the host name) from now on. */
void fpx_cluster_listening(fpx_server *s, const char *bound);
/* list_indexes: every index of the tenant the cluster defines, those held
 * here from the local replicas, the others from a node holding each. */
int fpx_cluster_list(fpx_req *r, fpx_out *o);
/* Sends body, as it is, to node_id's advertised endpoint, marked forwarded,
 * and waits up to --forward-timeout-ms for the reply. 0 with *reply
 * (malloc'd, the caller frees) or -1 with err (unavailable, naming the
 * node); *sent says whether the body left this node (0: the node is not
 * live, advertises no endpoint, or could not be connected to in time, so it
 * cannot have acted on the request). Safe from any thread. */
/* The node-only operation that asks a node for its state of an index
 * (peer.c, docs/cluster.md): answered only on a forwarding socket. */
#define FPX_PEER_SNAPSHOT_OP "peer_snapshot"
/* Answers FPX_PEER_SNAPSHOT_OP (r->forwarded: a node of this cluster
 * asks): the index's snapshot body as the data section, "seq" the last
 * stream record it covers. No API key is involved. */
int fpx_cluster_peer_serve(fpx_req *r, fpx_out *o);
int fpx_cluster_forward(fpx_server *s, const char *node_id, const uint8_t *body, size_t len,
                        uint8_t **reply, size_t *reply_len, int *sent, fpx_err *err);

#endif
