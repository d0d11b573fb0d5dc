/*
 * request.h - one request being handled, and the helpers operations use to
 * read its header, take its vectors and build its reply.
 *
 * A request passes through the one sequence of dispatch.c (ops.h): the
 * operation's handlers fill the fields below, the dispatcher finds, locks,
 * logs, applies and releases. Handlers never lock, log or snapshot.
 */
#ifndef FPX_REQUEST_H
#define FPX_REQUEST_H

#include "proto/proto.h"
#include "server.h"

#include <stdatomic.h>

#define FPX_K_MAX 100000
#define FPX_DIM_MAX 65536

struct fpx_opdef;

typedef struct fpx_req {
    fpx_server *s;
    const struct fpx_opdef *op;
    fpx_msg msg;
    const msgpack_object *h;   /* the header map */
    const msgpack_object *rid; /* request_id, or NULL */
    const char *tenant;
    fpx_err err;

    fpx_index *ix;        /* the request's index, referenced (index operations) */
    fpx_index *made;      /* a new index to register (create_index, import_index) */
    fpx_walrec rec;       /* the write to log and apply; rec.op 0: nothing to log */
    int64_t nlive_before; /* live vectors when the lock was taken */
    uint64_t logged_seq;  /* the seq of the record logged, which must be synced */
    /* merge_from: the other index, referenced and locked exclusive from bind
     * until fpx_merge_release (merge.c), with the server's merge lock held */
    fpx_index *other;
    int other_emptied; /* its reset was logged: a snapshot is due */
    /* merge_from in a cluster (src/cluster/merge.c): the merge's id, once
     * the other index is fenced; merge_state 1 fenced, 2 done (its reset
     * applied); merge_refused: the target's replicas refused the merge */
    char merge_id[FPX_FENCE_ID_MAX + 1];
    int merge_state, merge_refused;
    /* A search counted among those arriving at ix's batcher (batch.h) from
     * bind, before its lock: the one before it on its connection, already
     * searching, waits for it. The search handler, or the dispatcher on an
     * earlier failure, takes it off again. */
    int batching;
    /* Answered on the network thread if it proves quick (fpx_server_handle_inline):
     * anything else is deferred, with no effect, to a worker. */
    int inline_try;
    int deferred;

    /* What prepare/bind read from the request, for run. Freed by the dispatcher:
     * copy (an aligned copy of the vectors) and recmeta (a record's metadata). */
    int64_t n, k, i0;
    const void *x;
    double radius;
    int include_meta;
    fpx_search_params params;
    /* search, range_search: "stats": true asks for what the search added to
     * FAISS's search statistics (params.stats then points to stats). */
    int want_stats;
    fpx_search_stats stats;
    /* search: "reconstruct": true asks for each hit's vector besides, as
     * FAISS's search_and_reconstruct (ops_search.c). */
    int want_recons;
    void *copy;
    msgpack_sbuffer recmeta;

    /* Cluster mode. The body as received (forwarding sends it on unchanged);
     * whether another node forwarded it here (it is then never forwarded
     * again); client_id, validated ("" when absent); whether a write reached
     * the publish step (an error before it changed nothing anywhere); and the
     * reply of the node the request was forwarded to, malloc'd, relayed to
     * the client as it is. */
    const uint8_t *body;
    size_t body_len;
    int forwarded;
    char client_id[65];
    int published;
    uint8_t *relay;
    size_t relay_len;
    /* durability "synced" (docs/cluster.md): asked for (the header's
     * "durability", or the server's --durability); the stream sequence of
     * the write's record; the wait for its replicas (src/cluster/synced.c);
     * and whether a write failed after it was published only for want of
     * their confirmation (the error reply then says "published": true). Set
     * from several threads by a sharded write's parts: atomic. */
    int synced;
    uint64_t stream_seq;
    struct fpx_synced *synced_wait;
    atomic_int unconfirmed;
} fpx_req;

/* Starts an "ok" reply header with room for `extra` more keys. */
msgpack_packer *fpx_reply_ok(fpx_req *r, fpx_out *o, size_t extra);
/* The "ok" header of a search's reply, nq queries of k hits: with
 * "distance_dtype": "int32" for a binary index (Hamming distances), then
 * "shape": [nq, k], and room for `extra` more keys. */
msgpack_packer *fpx_reply_search(fpx_req *r, fpx_out *o, int binary, int64_t nq, int64_t k,
                                 size_t extra);
void fpx_pack_bool(msgpack_packer *pk, int v);

/* An integer header field: 0, 1 when absent and not required, -1 (r->err set). */
int fpx_req_int(fpx_req *r, const char *key, int required, int64_t *v);
/* An optional string field into a NUL-terminated buffer. 1 when absent. */
int fpx_req_str(fpx_req *r, const char *key, char *buf, size_t cap);
/* An optional boolean field (absent or nil: 0). */
int fpx_req_bool(fpx_req *r, const char *key, int *v);
/* A number field (integer or float) that must be present and finite. */
int fpx_req_number(fpx_req *r, const char *key, double *v);
/* The validated index_id (or its synonym "name") into name[FPX_NAME_MAX + 1]. */
int fpx_req_name(fpx_req *r, int allow_name_synonym, char *name);
/* The request's index, referenced (release with fpx_index_unref); NULL with
 * not_found for a missing or foreign index. */
fpx_index *fpx_req_index(fpx_req *r);
/* The vector section as n rows of ix's vectors (float32, or uint8 for a
 * binary index) [+ n int64 labels]; r->copy receives a malloc'd aligned copy
 * when the section was misaligned; crc (NULL: not taken) the section's
 * CRC-32C, for the log record that will carry it. */
int fpx_req_vectors(fpx_req *r, const fpx_index *ix, int with_labels, int64_t *n_out,
                    const void **x, const int64_t **labels, uint32_t *crc);
/* The optional per-search "params" map (nprobe, efSearch, max_codes,
 * quantizer_efSearch, search_type, polysemous_ht) into r->params. */
int fpx_req_search_params(fpx_req *r);
/* Starts r->recmeta, a record's metadata, and returns its packer in *pk. */
void fpx_req_recmeta(fpx_req *r, msgpack_packer *pk);

#endif
