/*
 * dispatch.c - the operation table and the one sequence every request runs.
 *
 * fpx_server_handle decodes the body in place (the vectors stay in the
 * received message), authenticates, finds the operation in the table and runs
 * the sequence of ops.h around its handlers: find the index, lock it as the
 * table says, log and apply a write, reply, unlock, and hand a due snapshot
 * to the background writer. A reviewer checks the lock policy and the
 * durability rule here, once, not in every handler. In a cluster the same
 * sequence runs, with four steps handed to src/cluster/ (admitting the
 * request, finding an index, creating, and logging a write, which there
 * means publishing it to the index's stream and applying it in stream order).
 * An index this node holds no replica of is found on another node: the
 * request is forwarded there and its reply (r->relay) is this one's.
 */
#include "apply.h"
#include "cluster/cluster.h"
#include "faissx.h"
#include "stats.h"
#include "ops.h"
#include "order.h"
#include "store.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static const fpx_opdef ops[] = {
    /* name            lock                flags                       prepare, bind, check, run */
    {"search", FPX_LOCK_SHARED, FPX_OP_INDEX, fpx_prep_search, fpx_bind_search, NULL,
     fpx_op_search},
    {"add_vectors", FPX_LOCK_EXCLUSIVE, FPX_OP_INDEX | FPX_OP_LOGGED, NULL, fpx_bind_add,
     fpx_check_trained, fpx_op_added},
    {"create_index", FPX_LOCK_SHARED, FPX_OP_CREATES, fpx_prep_create_index, NULL, NULL,
     fpx_op_info},
    {"delete_vector", FPX_LOCK_EXCLUSIVE, FPX_OP_INDEX | FPX_OP_LOGGED, fpx_prep_delete_vector,
     NULL, NULL, fpx_op_deleted_vectors},
    {"delete_index", FPX_LOCK_EXCLUSIVE, FPX_OP_INDEX | FPX_OP_DROPS, NULL, NULL, NULL,
     fpx_op_deleted},
    {"get_index_info", FPX_LOCK_SHARED, FPX_OP_INDEX, NULL, NULL, NULL, fpx_op_info},
    {"list_indexes", FPX_LOCK_NONE, 0, NULL, NULL, NULL, fpx_op_list_indexes},
    {"train", FPX_LOCK_EXCLUSIVE, FPX_OP_INDEX | FPX_OP_LOGGED, NULL, fpx_bind_train, NULL,
     fpx_op_trained},
    {"ping", FPX_LOCK_NONE, 0, NULL, NULL, NULL, fpx_op_ping},
    {"range_search", FPX_LOCK_SHARED, FPX_OP_INDEX, fpx_prep_range_search, fpx_bind_range_search,
     NULL, fpx_op_range_search},
    {"reconstruct", FPX_LOCK_SHARED, FPX_OP_INDEX, fpx_prep_reconstruct, NULL, NULL,
     fpx_op_reconstruct},
    {"reconstruct_n", FPX_LOCK_SHARED, FPX_OP_INDEX, fpx_prep_reconstruct_n, fpx_bind_reconstruct_n,
     NULL, fpx_op_reconstruct_n},
    {"remove_ids", FPX_LOCK_EXCLUSIVE, FPX_OP_INDEX | FPX_OP_LOGGED, fpx_prep_remove_ids, NULL,
     fpx_check_remove, fpx_op_removed},
    {"reset", FPX_LOCK_EXCLUSIVE, FPX_OP_INDEX | FPX_OP_LOGGED | FPX_OP_SNAPSHOT, fpx_prep_reset,
     NULL, NULL, fpx_op_ntotal},
    {"set_params", FPX_LOCK_EXCLUSIVE, FPX_OP_INDEX | FPX_OP_LOGGED, fpx_prep_set_params, NULL,
     NULL, fpx_op_ntotal},
    {"export_index", FPX_LOCK_SHARED, FPX_OP_INDEX, NULL, NULL, NULL, fpx_op_export_index},
    {"import_index", FPX_LOCK_SHARED, FPX_OP_CREATES, fpx_prep_import_index, NULL, NULL,
     fpx_op_info},
    {"list_keys", FPX_LOCK_SHARED, FPX_OP_INDEX, fpx_prep_list_keys, NULL, NULL, fpx_op_list_keys},
    {"renew_leases", FPX_LOCK_NONE, 0, NULL, NULL, NULL, fpx_op_renew_leases},
    {"set_lease", FPX_LOCK_EXCLUSIVE, FPX_OP_INDEX | FPX_OP_LOGGED, fpx_prep_set_lease, NULL, NULL,
     fpx_op_info},
    {"sa_encode", FPX_LOCK_SHARED, FPX_OP_INDEX, NULL, fpx_bind_sa_encode, NULL, fpx_op_sa_encode},
    {"sa_decode", FPX_LOCK_SHARED, FPX_OP_INDEX, NULL, fpx_bind_sa_decode, NULL, fpx_op_sa_decode},
    {"merge_from", FPX_LOCK_EXCLUSIVE, FPX_OP_INDEX | FPX_OP_LOGGED, fpx_prep_merge, fpx_bind_merge,
     fpx_check_merge, fpx_op_merged},
};

const fpx_opdef *fpx_op_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strlen(ops[i].name) == len && !memcmp(ops[i].name, name, len))
            return &ops[i];
    return NULL;
}

size_t fpx_op_count(void) {
    return sizeof ops / sizeof ops[0];
}

const char *fpx_op_name(size_t i) {
    return i < fpx_op_count() ? ops[i].name : "unknown";
}

int fpx_op_index(const fpx_opdef *op) {
    return op ? (int)(op - ops) : -1;
}

/* Logs a write, applies it, takes the record back if applying failed. */
static int log_and_apply(fpx_req *r) {
    fpx_index *ix = r->ix;
    uint64_t before = ix->wal_bytes;
    if (r->rec.op == FPX_WAL_ADD &&
        fpx_server_check_quota(r->s, ix->tenant, r->rec.n, 48 + r->rec.data_len + r->rec.meta_len,
                               &r->err))
        return -1;
    /* A train of an empty index is logged as its result, not its input: a
     * replay must not train again (k-means differs from run to run). On an
     * index holding vectors (a trained Flat or HNSW, where train changes
     * nothing) the training vectors are logged, not a copy of every vector,
     * and so they are for additive quantizers (fpx_engine_round_trips). */
    uint8_t *trained = NULL;
    if (r->rec.op == FPX_WAL_TRAIN && ix->nslots == 0 && fpx_engine_round_trips(ix->eng) &&
        fpx_train_record(ix, &r->rec, &trained, &r->err))
        return -1;
    int rc = fpx_store_log(ix, &r->rec, &r->err);
    if (rc == 0 && fpx_apply(ix, &r->rec, &r->err)) {
        fpx_store_unlog(ix, before);
        rc = -1;
    }
    free(trained);
    if (rc != 0)
        return -1;
    fpx_store_logged(ix);
    r->logged_seq = ix->seq;
    fpx_server_sync_usage(ix);
    return 0;
}

/* The first snapshot of a new index (an import's can be hundreds of MB): on a
 * low-priority thread, as bulk work of one tenant. */
typedef struct store_job {
    fpx_req *r;
    fpx_index *ix;
} store_job;

static int store_new(void *p) {
    store_job *j = p;
    return fpx_store_create(j->r->s->cfg->data_dir, j->ix, &j->r->err);
}

/* Stores a new index durably (no lock held: its name is reserved, lookups do
 * not see it) and publishes it. On success r->ix is the new index,
 * referenced. */
static int register_new(fpx_req *r) {
    fpx_server *s = r->s;
    fpx_index *ix = r->made;
    r->made = NULL;
    atomic_store(&ix->refs, 1); /* the registry's */
    if (fpx_server_check_quota(s, ix->tenant, ix->nlive, r->msg.body.data_size, &r->err) != 0 ||
        fpx_server_reserve(s, ix, &r->err) != 0) {
        fpx_index_free(ix);
        return -1;
    }
    store_job job = {r, ix};
    if (fpx_run_low_priority(store_new, &job) != 0) {
        fpx_server_remove(s, ix);
        fpx_index_unref(ix);
        return -1;
    }
    atomic_fetch_add(&ix->refs, 1); /* the request's */
    fpx_server_sync_usage(ix);
    fpx_lease_renew(ix);
    fpx_server_publish(s, ix);
    r->ix = ix;
    fpx_log(FPX_LOG_INFO, "created index %s/%s (%s, d=%lld, %lld vectors)", ix->tenant, ix->name,
            ix->index_type, (long long)ix->dim, (long long)ix->nlive);
    return 0;
}

/* Removes the locked index: its folder first (so a failure leaves it served
 * as before), then its registry entry. The registry's reference goes after
 * the unlock. */
static int drop(fpx_req *r) {
    if (fpx_server_drop(r->s, r->ix, &r->err) != 0)
        return -1;
    fpx_log(FPX_LOG_INFO, "deleted index %s/%s", r->ix->tenant, r->ix->name);
    return 0;
}

/* delete_index of an index refused at start: its folder goes, as its owner
 * asks. 1 done, 0 no such refused index, -1 error. */
static int drop_unavailable(fpx_req *r) {
    char name[FPX_NAME_MAX + 1];
    if (fpx_req_name(r, 0, name))
        return -1;
    return fpx_server_drop_unavailable(r->s, r->tenant, name, &r->err);
}

/* Takes the index's lock. A request that has to wait for it is counted in
 * s->blocked: when every worker is busy and some of them only wait for a
 * busy index (a long HNSW add, a train), the network loop starts more
 * workers, so that other indexes are still served (net.c). 0 locked; 2
 * when the index was dropped meanwhile (r->err not_found), not locked; 3
 * when it was busy and the request deferred (fpx_server_handle_inline). */
static int lock_index(fpx_req *r, fpx_lockmode mode) {
    fpx_index *ix = r->ix;
    int excl = mode == FPX_LOCK_EXCLUSIVE;
    /* One connection's requests lock in the order they came (order.h): its
     * pipelined adds are applied, and get their labels, in that order. */
    fpx_order_wait(&r->s->blocked);
    if ((excl ? pthread_rwlock_trywrlock(&ix->lock) : pthread_rwlock_tryrdlock(&ix->lock)) != 0) {
        if (r->inline_try) { /* the network thread never waits: a worker will */
            r->deferred = 1;
            return 3;
        }
        atomic_fetch_add(&r->s->blocked, 1);
        if (excl)
            fpx_index_lock_write(ix);
        else
            pthread_rwlock_rdlock(&ix->lock);
        atomic_fetch_sub(&r->s->blocked, 1);
    }
    fpx_order_pass();
    if (ix->dropped) {
        pthread_rwlock_unlock(&ix->lock);
        fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", ix->name);
        return 2;
    }
    r->nlive_before = ix->nlive;
    return 0;
}

/* The request's index: in a cluster, one defined a moment ago through
 * another node may not be open here yet. */
static fpx_index *index_of(fpx_req *r) {
    /* merge_from in a cluster runs where both indexes are held */
    if (r->s->cluster && r->op->run == fpx_op_merged && fpx_cluster_merge_routed(r))
        return NULL;
    fpx_index *ix = fpx_req_index(r);
    if (!ix && r->s->cluster && r->err.type == FPX_E_NOT_FOUND)
        ix = fpx_cluster_index(r);
    return ix;
}

/* A search counted as arriving at its index's batcher that failed before
 * its handler searched: counted off, so that no batch waits for it. */
static void cancel_batching(fpx_req *r) {
    if (r->batching) {
        r->batching = 0;
        fpx_batch_cancel(&r->ix->batch);
    }
}

/* The request is left to a worker (fpx_server_handle_inline). */
static int defer(fpx_req *r) {
    r->deferred = 1;
    return -1;
}

/* A plain search that its index's recent searches say takes at most the
 * network thread's budget (--inline-search-us). */
static int inline_fits(const fpx_req *r) {
    uint64_t per = atomic_load_explicit(&r->ix->query_ns, memory_order_relaxed);
    return r->op->run == fpx_op_search && fpx_search_plain(r) && per > 0 &&
           (uint64_t)r->n * per <= (uint64_t)r->s->cfg->inline_search_us * 1000u;
}

/* The sequence of ops.h. */
static int run_op(fpx_req *r, fpx_out *o) {
    const fpx_opdef *op = r->op;
    fpx_server *s = r->s;
    if (s->cluster && fpx_cluster_admit(r))
        return -1;
    if (s->cluster) { /* leases are the cluster's (src/cluster/lease.c) */
        int served = fpx_cluster_lease(r, o);
        if (served)
            return served < 0 ? -1 : 0;
        op = r->op;
    }
    if (op->prepare && op->prepare(r))
        return -1;
    if (op->flags & FPX_OP_DROPS) {
        int gone = drop_unavailable(r);
        if (gone != 0)
            return gone < 0 ? -1 : op->run(r, o);
    }
    /* An index held on other nodes only: the request was forwarded to one
     * of them, whose reply is r->relay. */
    if ((op->flags & FPX_OP_INDEX) && !(r->ix = index_of(r)))
        return r->relay ? 0 : -1;
    if (s->cluster && op->run == fpx_op_list_indexes && !r->forwarded)
        return fpx_cluster_list(r, o);
    if (r->ix && s->cluster) /* every request naming an index renews its lease */
        fpx_cluster_touch(s, r->ix);
    else if (r->ix)
        fpx_lease_renew(r->ix);
    if (op->bind && op->bind(r))
        return -1;
    if (r->inline_try && !inline_fits(r))
        return defer(r);
    if ((op->flags & FPX_OP_CREATES) && (s->cluster ? fpx_cluster_create(r) : register_new(r)))
        return -1;
    if (r->relay) /* created through a data node (a router-only node holds nothing) */
        return 0;
    if (!r->ix || op->lock == FPX_LOCK_NONE)
        return op->run(r, o);
    int unlocked = lock_index(r, op->lock);
    if (unlocked) {
        cancel_batching(r);
        /* In a cluster, this node's replica went while the request waited
         * for its lock (moved to another node, docs/cluster.md): the index
         * is looked up again, and the request forwarded to a node holding
         * it. */
        if (unlocked == 2 && s->cluster) {
            fpx_index_unref(r->ix);
            if (!(r->ix = index_of(r)))
                return r->relay ? 0 : -1;
            fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", r->ix->name);
        }
        return -1;
    }
    int rc = 0;
    /* A merge_from out of this index left its reset to do: it comes first,
     * and the write is checked against the emptied index. */
    if ((op->flags & FPX_OP_LOGGED) && op->lock == FPX_LOCK_EXCLUSIVE && r->ix->merge_owed) {
        rc = fpx_merge_pay(r->ix, &r->err);
        r->nlive_before = r->ix->nlive;
    }
    if (rc == 0 && op->check)
        rc = op->check(r);
    int logged = 0;
    if (rc == 0 && (op->flags & FPX_OP_LOGGED) && r->rec.op) {
        rc = s->cluster ? fpx_synced_write(r) : log_and_apply(r);
        logged = rc == 0;
    }
    int dropped = 0;
    if (rc == 0 && (op->flags & FPX_OP_DROPS)) {
        rc = s->cluster ? fpx_cluster_drop(r) : drop(r);
        dropped = rc == 0;
    }
    if (rc == 0)
        rc = op->run(r, o);
    cancel_batching(r);
    int force = logged && (op->flags & FPX_OP_SNAPSHOT);
    int due = logged && (force || fpx_server_snapshot_due(r->s, r->ix));
    pthread_rwlock_unlock(&r->ix->lock);
    /* Durable before acknowledged; the fdatasync runs without the lock, so
     * the next writes to the index are appended meanwhile and share the
     * next one (store.c). */
    if (logged && fpx_store_sync(r->ix, r->logged_seq, &r->err) != 0)
        rc = -1;
    /* durability "synced" in a cluster: enough replicas confirm the write,
     * waited for without the lock (src/cluster/synced.c). */
    if (r->synced_wait)
        rc = fpx_synced_wait(r, rc);
    if (due)
        fpx_server_snapshot_later(r->s, r->ix, force);
    if (dropped) { /* the registry's reference and the request's: the last frees it there */
        fpx_server_reclaim_later(r->s, r->ix, NULL);
        fpx_server_reclaim_later(r->s, r->ix, NULL);
        r->ix = NULL;
    }
    return rc;
}

/* Prebuilt reply for when even an error reply cannot be allocated. */
static const uint8_t oom_reply[] = {
    /* preamble {"header_size": 62, "vector_size": 0, "metadata_size": 0} */
    0x83, 0xab, 'h', 'e', 'a', 'd', 'e', 'r', '_', 's', 'i', 'z', 'e', 0x3e, 0xab, 'v', 'e', 'c',
    't', 'o', 'r', '_', 's', 'i', 'z', 'e', 0x00, 0xad, 'm', 'e', 't', 'a', 'd', 'a', 't', 'a', '_',
    's', 'i', 'z', 'e', 0x00,
    /* header {"status": "error", "error_type": "internal_error", "message": "out of memory"} */
    0x83, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xa5, 'e', 'r', 'r', 'o', 'r', 0xaa, 'e', 'r', 'r',
    'o', 'r', '_', 't', 'y', 'p', 'e', 0xae, 'i', 'n', 't', 'e', 'r', 'n', 'a', 'l', '_', 'e', 'r',
    'r', 'o', 'r', 0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e', 0xad, 'o', 'u', 't', ' ', 'o', 'f', ' ',
    'm', 'e', 'm', 'o', 'r', 'y'};

/* The request_id to echo: only integers and UTF-8 strings are. */
static const msgpack_object *request_id_of(const msgpack_object *header) {
    const msgpack_object *rid = fpx_map_get(header, "request_id");
    if (rid && rid->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
        rid->type != MSGPACK_OBJECT_NEGATIVE_INTEGER &&
        !(rid->type == MSGPACK_OBJECT_STR && fpx_obj_utf8_valid(rid)))
        return NULL;
    return rid;
}

void fpx_server_refuse(const uint8_t *body, size_t len, const fpx_err *err, uint8_t **reply,
                       size_t *reply_len, int *is_static) {
    fpx_msg msg;
    fpx_err derr = {0};
    int decoded = fpx_msg_decode_header(&msg, body, len, &derr) == 0;
    *is_static = 0;
    if (fpx_build_error(err, decoded ? request_id_of(msg.header) : NULL, reply, reply_len) != 0) {
        *reply = (uint8_t *)oom_reply;
        *reply_len = sizeof oom_reply;
        *is_static = 1;
    }
    if (decoded)
        fpx_msg_destroy(&msg);
}

/* The optional client_id: 8..64 printable ASCII characters, no '/' (it
 * becomes part of a write's message id in a cluster, docs/protocol.md). */
static int read_client_id(fpx_req *r) {
    const msgpack_object *v = fpx_map_get(r->h, "client_id");
    const char *str;
    size_t n;
    if (!v || v->type == MSGPACK_OBJECT_NIL)
        return 0;
    int ok = fpx_obj_str(v, &str, &n) == 0 && n >= 8 && n < sizeof r->client_id;
    for (size_t i = 0; ok && i < n; i++)
        ok = str[i] > 0x20 && str[i] < 0x7f && str[i] != '/';
    if (!ok)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "client_id must be a string of 8..64 printable ASCII characters "
                           "without spaces or '/'");
    memcpy(r->client_id, str, n);
    r->client_id[n] = 0;
    return 0;
}

/* The optional "durability": "acked" (acknowledged once the write is
 * logged: on one server after its fdatasync, in a cluster once JetStream
 * holds it) or "synced" (in a cluster, once enough replicas applied and
 * synced it too, docs/cluster.md); absent or nil: the server's
 * --durability. Read for every operation; only logged writes act on it. */
static int read_durability(fpx_req *r) {
    const msgpack_object *v = fpx_map_get(r->h, "durability");
    r->synced = r->s->cfg->durability_synced;
    if (!v || v->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (fpx_obj_str_eq(v, "acked") || fpx_obj_str_eq(v, "synced")) {
        r->synced = fpx_obj_str_eq(v, "synced");
        return 0;
    }
    return fpx_err_set(&r->err, FPX_E_VALIDATION, "durability must be \"acked\" or \"synced\"");
}

/* Authenticates and finds the operation; runs it. */
static int handle_decoded(fpx_req *r, fpx_out *o) {
    const msgpack_object *opname = fpx_map_get(r->h, "operation");
    const char *name;
    size_t len;
    if (!opname || fpx_obj_str(opname, &name, &len))
        return fpx_err_set(&r->err, FPX_E_PROTOCOL, "header needs \"operation\", a string");
    /* A node asking for this node's state of an index (peer.c): known by
     * the cluster's token on its socket, not by an API key. */
    if (r->forwarded && r->s->cluster && fpx_obj_str_eq(opname, FPX_PEER_SNAPSHOT_OP))
        return fpx_cluster_peer_serve(r, o);
    /* Only searches may be answered on the network thread: anything else
     * goes to a worker before it is authenticated, which the worker does. */
    if (r->inline_try && !fpx_obj_str_eq(opname, "search"))
        return defer(r);
    if (fpx_auth_check(r->s->auth, fpx_map_get(r->h, "api_key"), fpx_map_get(r->h, "tenant_id"),
                       &r->tenant, &r->err) != 0)
        return -1;
    if (!(r->op = fpx_op_find(name, len)))
        return fpx_err_set(&r->err, FPX_E_UNSUPPORTED, "unknown operation \"%.*s\"",
                           (int)(len > 64 ? 64 : len), name);
    if (read_client_id(r) || read_durability(r))
        return -1;
    return run_op(r, o);
}

void fpx_server_handle(fpx_server *s, const uint8_t *body, size_t len, uint8_t **reply,
                       size_t *reply_len, int *is_static) {
    fpx_server_handle_from(s, body, len, 0, reply, reply_len, is_static);
}

/* The outcome another node's reply reports, for the metrics. */
static fpx_errtype relayed_status(const uint8_t *reply, size_t len) {
    fpx_msg m;
    fpx_err err = {0};
    if (fpx_msg_decode_header(&m, reply, len, &err) != 0)
        return FPX_E_INTERNAL;
    fpx_errtype t = FPX_OK;
    const msgpack_object *st = fpx_map_get(m.header, "status");
    const msgpack_object *et = fpx_map_get(m.header, "error_type");
    const char *p;
    size_t n;
    if (!st || !fpx_obj_str_eq(st, "ok"))
        t = et && fpx_obj_str(et, &p, &n) == 0 ? fpx_errtype_from_name(p, n) : FPX_E_INTERNAL;
    fpx_msg_destroy(&m);
    return t;
}

/* fpx_server_handle_from, or fpx_server_handle_inline with try_inline:
 * 1 when the request was deferred (no reply), else 0. */
static int handle(fpx_server *s, const uint8_t *body, size_t len, int forwarded, int try_inline,
                  uint8_t **reply, size_t *reply_len, int *is_static) {
    /* The network thread answers nothing of a cluster node (forwarding and
     * admission may wait on other nodes) nor of FAISSx's format. */
    int faissx = fpx_faissx_detect(body, len);
    if (try_inline && (s->cluster || faissx))
        return 1;
    if (faissx) { /* FAISSx's format: its adapter calls back here */
        fpx_faissx_handle(s, body, len, reply, reply_len, is_static);
        return 0;
    }
    uint64_t t0 = fpx_now_ns();
    fpx_req r;
    memset(&r, 0, sizeof r);
    r.s = s;
    r.body = body;
    r.body_len = len;
    r.forwarded = forwarded;
    r.inline_try = try_inline;
    msgpack_sbuffer_init(&r.recmeta);
    *is_static = 0;
    fpx_out o;
    fpx_out_init(&o);
    int rc = -1, decoded = 0;
    if (fpx_msg_decode(&r.msg, body, len, &r.err) == 0) {
        decoded = 1;
        r.h = r.msg.header;
        r.rid = request_id_of(r.h);
        rc = handle_decoded(&r, &o);
    }
    fpx_merge_release(&r);
    fpx_index_unref(r.ix);
    if (r.made)
        fpx_index_free(r.made);
    free(r.copy);
    msgpack_sbuffer_destroy(&r.recmeta);
    if (r.deferred) { /* nothing done a worker will not do again */
        fpx_out_discard(&o);
        free(r.relay);
        if (decoded)
            fpx_msg_destroy(&r.msg);
        return 1;
    }
    if (rc == 0 && r.relay) { /* another node's reply, as it is */
        fpx_out_discard(&o);
        *reply = r.relay;
        *reply_len = r.relay_len;
        fpx_msg_destroy(&r.msg);
        fpx_stats_request(fpx_op_index(r.op), relayed_status(r.relay, r.relay_len),
                          fpx_now_ns() - t0);
        return 0;
    }
    free(r.relay);
    if (rc == 0 && fpx_out_finish(&o, reply, reply_len) == 0) {
        fpx_msg_destroy(&r.msg);
        fpx_stats_request(fpx_op_index(r.op), FPX_OK, fpx_now_ns() - t0);
        return 0;
    }
    if (rc == 0)
        fpx_err_set(&r.err, FPX_E_INTERNAL, "out of memory building the reply");
    else
        fpx_out_discard(&o);
    if (r.err.type == FPX_OK)
        fpx_err_set(&r.err, FPX_E_INTERNAL, "request failed");
    fpx_log(FPX_LOG_DEBUG, "request failed: %s: %s", fpx_errtype_name(r.err.type), r.err.msg);
    fpx_stats_request(fpx_op_index(r.op), r.err.type, fpx_now_ns() - t0);
    /* A forwarded write that is unavailable before it was published changed
     * nothing: the forwarding node may try another replica (forward.c). */
    int unpublished = forwarded && r.err.type == FPX_E_UNAVAILABLE && !r.published;
    /* A synced write that is in the log but not confirmed by enough
     * replicas: the client must not send it again as a new write. */
    int unconfirmed = r.err.type == FPX_E_UNAVAILABLE && atomic_load(&r.unconfirmed);
    if (fpx_build_error_flag(&r.err, r.rid, unpublished || unconfirmed ? "published" : NULL,
                             unconfirmed, reply, reply_len) != 0) {
        *reply = (uint8_t *)oom_reply;
        *reply_len = sizeof oom_reply;
        *is_static = 1;
    }
    if (decoded)
        fpx_msg_destroy(&r.msg);
    return 0;
}

void fpx_server_handle_from(fpx_server *s, const uint8_t *body, size_t len, int forwarded,
                            uint8_t **reply, size_t *reply_len, int *is_static) {
    handle(s, body, len, forwarded, 0, reply, reply_len, is_static);
}

int fpx_server_handle_inline(fpx_server *s, const uint8_t *body, size_t len, uint8_t **reply,
                             size_t *reply_len, int *is_static) {
    return handle(s, body, len, 0, 1, reply, reply_len, is_static);
}
