/*
 * ops.h - the operation table: every operation declared once, with the lock
 * it needs and whether it writes the log.
 *
 * dispatch.c runs one sequence around every operation, so the lock policy and
 * the durability rule live in one place (as redis's command table and call()):
 *
 *   prepare(r)        header checks that need no index (no lock)
 *   find the index    FPX_OP_INDEX: referenced, not_found for missing/foreign
 *   bind(r)           checks against the index's fixed shape, vectors (no lock)
 *   register          FPX_OP_CREATES: r->made is stored and published
 *   lock              FPX_LOCK_SHARED or FPX_LOCK_EXCLUSIVE on the index
 *   check(r)          checks against the index's state, before anything is logged
 *   log and apply     FPX_OP_LOGGED: r->rec is made durable, then applied by
 *                     fpx_apply (the same function replays the log at start);
 *                     a failed apply takes the record back
 *   drop              FPX_OP_DROPS: the index's folder is renamed away and the
 *                     index leaves the registry
 *   run(r, o)         the operation itself, or (logged) its reply
 *   unlock, release   then a due snapshot is handed to the background writer,
 *                     and a dropped index's files are removed, outside every lock
 *
 * Handlers fill r (request.h) and never lock, log, snapshot or register.
 */
#ifndef FPX_OPS_H
#define FPX_OPS_H

#include "request.h"

typedef enum fpx_lockmode {
    FPX_LOCK_NONE,     /* no index lock (registry operations take their own, briefly) */
    FPX_LOCK_SHARED,   /* reads: searches, reconstruct, info, export */
    FPX_LOCK_EXCLUSIVE /* writes, and dropping an index */
} fpx_lockmode;

#define FPX_OP_INDEX 1u     /* acts on an existing index named by index_id */
#define FPX_OP_LOGGED 2u    /* writes r->rec to the log, then applies it */
#define FPX_OP_CREATES 4u   /* registers r->made, a new index */
#define FPX_OP_DROPS 8u     /* removes the index */
#define FPX_OP_SNAPSHOT 16u /* a snapshot after it, whatever the log's size (reset) */

typedef int (*fpx_step)(fpx_req *r);
typedef int (*fpx_handler)(fpx_req *r, fpx_out *o);

typedef struct fpx_opdef {
    const char *name;
    fpx_lockmode lock;
    unsigned flags;
    fpx_step prepare; /* each step optional but run */
    fpx_step bind;
    fpx_step check;
    fpx_handler run;
} fpx_opdef;

/* The operation named name[0..len), or NULL. */
const fpx_opdef *fpx_op_find(const char *name, size_t len);
/* The table's size, the name of its i-th operation, and an operation's place. */
size_t fpx_op_count(void);
const char *fpx_op_name(size_t i);
int fpx_op_index(const fpx_opdef *op);

/* ops_index.c: the registry's operations. */
int fpx_op_ping(fpx_req *r, fpx_out *o);
int fpx_op_list_indexes(fpx_req *r, fpx_out *o);
int fpx_prep_create_index(fpx_req *r);
int fpx_prep_import_index(fpx_req *r);
/* An import's index, named tenant/name, from FAISS's bytes data[0..len) and
 * the request's metadata section meta (its "items": keys and metadata; may
 * be NULL): what import_index builds, and what a cluster's replica rebuilds
 * from the import's stream records. probe: run the bytes through the probe
 * first (untrusted bytes). *made is the new, unregistered index. */
int fpx_import_build(const char *tenant, const char *name, const char *index_type,
                     const uint8_t *data, size_t len, const msgpack_object *meta, int probe,
                     fpx_index **made, fpx_err *err);
int fpx_op_info(fpx_req *r, fpx_out *o);
int fpx_op_deleted(fpx_req *r, fpx_out *o);
int fpx_op_export_index(fpx_req *r, fpx_out *o);

/* lease.c: lease_seconds of create_index and import_index (absent: none). */
#define FPX_LEASE_MIN 1
#define FPX_LEASE_MAX 86400
int fpx_req_lease(fpx_req *r, int64_t *seconds);
int fpx_op_renew_leases(fpx_req *r, fpx_out *o);
/* renew_leases' index_ids checked as one server checks them (a list of at
 * most FPX_RENEW_MAX valid names): 0 with the names, or -1 (r->err set). */
int fpx_prep_renew_leases(fpx_req *r, const msgpack_object **names, uint32_t *count);
/* renew_leases' reply: ok, its metadata {"renewed": [...], "not_found":
 * [...]} listing the names a[0..n) as found[i] says (one server's and the
 * cluster's the same). */
void fpx_reply_renewed(fpx_req *r, fpx_out *o, const msgpack_object *a, uint32_t n,
                       const uint8_t *found);
int fpx_prep_set_lease(fpx_req *r);

/* ops_vectors.c: writes and reads of vectors. */
int fpx_bind_add(fpx_req *r);
int fpx_check_trained(fpx_req *r);
int fpx_op_added(fpx_req *r, fpx_out *o);
int fpx_bind_train(fpx_req *r);
int fpx_op_trained(fpx_req *r, fpx_out *o);
int fpx_prep_delete_vector(fpx_req *r);
int fpx_op_deleted_vectors(fpx_req *r, fpx_out *o);
int fpx_prep_remove_ids(fpx_req *r);
int fpx_check_remove(fpx_req *r);
int fpx_op_removed(fpx_req *r, fpx_out *o);
int fpx_prep_reset(fpx_req *r);
int fpx_prep_set_params(fpx_req *r);
int fpx_op_ntotal(fpx_req *r, fpx_out *o);
int fpx_prep_reconstruct(fpx_req *r);
int fpx_op_reconstruct(fpx_req *r, fpx_out *o);
/* list_keys: entries per page unless the request's limit says otherwise */
#define FPX_LIST_KEYS_DEFAULT 10000
int fpx_prep_list_keys(fpx_req *r);
int fpx_op_list_keys(fpx_req *r, fpx_out *o);
int fpx_prep_reconstruct_n(fpx_req *r);
int fpx_bind_reconstruct_n(fpx_req *r);
int fpx_op_reconstruct_n(fpx_req *r, fpx_out *o);

/* merge.c: FAISS merge_from between two indexes of a tenant. */
int fpx_prep_merge(fpx_req *r);
int fpx_bind_merge(fpx_req *r);
int fpx_check_merge(fpx_req *r);
int fpx_op_merged(fpx_req *r, fpx_out *o);
/* Logs the reset ix owes as the other index of a merge_from whose reset
 * failed (ix->merge_owed), before any other write to it. Under ix's
 * exclusive lock. */
int fpx_merge_pay(fpx_index *ix, fpx_err *err);
/* Unlocks and releases the other index of a merge_from (the target's lock is
 * already released), then lets the next merge run. Any request may call it. */
void fpx_merge_release(fpx_req *r);
/* The meta of a merge record: add_id, the other index's name, unique id and
 * sequence seq (its last record before the merge), and in a cluster the
 * merge's id (empty: none). */
void fpx_merge_pack_meta(msgpack_packer *pk, const fpx_index *other, uint64_t seq, int64_t add_id,
                         const char *merge_id);
/* The server-wide lock merges take before the other index's lock. */
void fpx_merge_lock(void);
void fpx_merge_unlock(void);

/* ops_codec.c: FAISS's standalone codec (sa_encode, sa_decode), as reads. */
int fpx_bind_sa_encode(fpx_req *r);
int fpx_op_sa_encode(fpx_req *r, fpx_out *o);
int fpx_bind_sa_decode(fpx_req *r);
int fpx_op_sa_decode(fpx_req *r, fpx_out *o);

/* ops_search.c */
int fpx_prep_search(fpx_req *r);
int fpx_bind_search(fpx_req *r);
/* A search without a filter, id selector or statistics: it may share one
 * FAISS call with others (batch.c) or run on the network thread (net.c). */
int fpx_search_plain(const fpx_req *r);
int fpx_op_search(fpx_req *r, fpx_out *o);
int fpx_prep_range_search(fpx_req *r);
int fpx_bind_range_search(fpx_req *r);
int fpx_op_range_search(fpx_req *r, fpx_out *o);

#endif
