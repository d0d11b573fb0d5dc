/*
 * request.h - one request being handled, and the helpers every operation
 * uses to read its header, find and lock its index, take its vectors, and
 * log its writes. Private to src/server: handlers.c (the seed's operations
 * and the dispatch table) and ops_faiss.c (the rest of FAISS's index API).
 */
#ifndef FPX_REQUEST_H
#define FPX_REQUEST_H

#include "proto/proto.h"
#include "server.h"

#define FPX_K_MAX 100000

typedef struct fpx_req {
    fpx_server *s;
    fpx_msg msg;
    const msgpack_object *h;   /* the header map */
    const msgpack_object *rid; /* request_id, or NULL */
    const char *tenant;
    fpx_err err;
} fpx_req;

typedef int (*fpx_handler)(fpx_req *r, fpx_out *o);

/* Starts an "ok" reply header with room for `extra` more keys. */
msgpack_packer *fpx_reply_ok(fpx_req *r, fpx_out *o, size_t extra);
void fpx_pack_bool(msgpack_packer *pk, int v);

/* An integer header field: 0, 1 when absent and not required, -1 (r->err set). */
int fpx_req_int(fpx_req *r, const char *key, int required, int64_t *v);
/* An optional string field into a NUL-terminated buffer. 1 when absent. */
int fpx_req_str(fpx_req *r, const char *key, char *buf, size_t cap);
/* The validated index_id (or its synonym "name") into name[FPX_NAME_MAX + 1]. */
int fpx_req_name(fpx_req *r, int allow_name_synonym, char *name);
/* The request's index, referenced (release with fpx_index_unref); NULL with
 * not_found for a missing or foreign index. */
fpx_index *fpx_req_index(fpx_req *r);
/* Locks ix shared or exclusive; not_found (and unlocked) if it was deleted. */
int fpx_req_lock(fpx_req *r, fpx_index *ix, int exclusive);
/* The vector section as n rows of ix's vectors (float32, or uint8 for a
 * binary index) [+ n int64 labels]; *copy is a malloc'd aligned copy when the
 * section was misaligned (caller frees). */
int fpx_req_vectors(fpx_req *r, const fpx_index *ix, int with_labels, int64_t *n_out,
                    const void **x, const int64_t **labels, void **copy);
/* The optional per-search "params" map (nprobe, efSearch). */
int fpx_req_search_params(fpx_req *r, fpx_search_params *p);
/* Logs a write, applies it through fpx_server_replay, takes it back on failure. */
int fpx_req_write(fpx_req *r, fpx_index *ix, const fpx_walrec *rec);
/* After a write: snapshots when the log outgrew its threshold (or force). */
void fpx_req_snapshot(fpx_req *r, fpx_index *ix, int force);
/* Registers a new index (taken): already_exists, or stored durably and
 * answered with its info map. */
int fpx_req_register(fpx_req *r, fpx_out *o, fpx_index *ix);
/* Decodes the optional msgpack object of a stored log record. */
int fpx_unpack_stored(const uint8_t *p, size_t len, msgpack_unpacked *u, const msgpack_object **obj,
                      fpx_err *err);

/* The operations of ops_faiss.c (FAISS's index API beyond the seed). */
int fpx_op_range_search(fpx_req *r, fpx_out *o);
int fpx_op_reconstruct(fpx_req *r, fpx_out *o);
int fpx_op_reconstruct_n(fpx_req *r, fpx_out *o);
int fpx_op_remove_ids(fpx_req *r, fpx_out *o);
int fpx_op_reset(fpx_req *r, fpx_out *o);
int fpx_op_set_params(fpx_req *r, fpx_out *o);
int fpx_op_export_index(fpx_req *r, fpx_out *o);
int fpx_op_import_index(fpx_req *r, fpx_out *o);
/* Their log records, replayed (meta: the record's decoded metadata). */
int fpx_replay_remove(fpx_index *ix, const msgpack_object *meta, fpx_err *err);
int fpx_replay_param(fpx_index *ix, const msgpack_object *meta, fpx_err *err);

#endif
