/*
 * ops_vectors.c - writes and reads of vectors: add_vectors, train,
 * delete_vector, remove_ids, reset, set_params (logged writes: each builds
 * its log record, the dispatcher logs and applies it, then the reply is
 * built here), and reconstruct, reconstruct_n.
 *
 * They follow FAISS's semantics where a FAISS program would notice: remove_ids
 * fails on HNSW and renumbers flat indexes as FAISS does, reconstruct fails on
 * an IVF index without a direct map.
 */
#include "apply.h"
#include "ops.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* Starts an ok reply whose metadata map has "ntotal" and `extra` more keys. */
static msgpack_packer *reply_counts(fpx_req *r, fpx_out *o, size_t extra) {
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 1 + extra);
    return m;
}

static void pack_ntotal(fpx_req *r, msgpack_packer *m) {
    fpx_pack_cstr(m, "ntotal");
    msgpack_pack_int64(m, r->ix->nlive);
}

/* ---- add_vectors ----------------------------------------------------------------- */

int fpx_bind_add(fpx_req *r) {
    int with_ids;
    const int64_t *labels;
    uint32_t crc;
    /* In a cluster the record goes through the index's stream, and the
     * replica that logs it checksums what it received. */
    int local = !r->s->cluster;
    if (fpx_req_bool(r, "with_ids", &with_ids) ||
        fpx_req_vectors(r, r->ix, with_ids, &r->n, &r->x, &labels, local ? &crc : NULL) ||
        fpx_index_check_items(r->msg.meta, r->n, &r->err))
        return -1;
    for (int64_t i = 0; labels && i < r->n; i++) {
        int64_t label; /* read whole: after binary rows the labels may be unaligned */
        memcpy(&label, (const unsigned char *)labels + (size_t)i * sizeof label, sizeof label);
        if (label < 0)
            return fpx_err_set(&r->err, FPX_E_VALIDATION, "labels must be >= 0 (row %lld has %lld)",
                               (long long)i, (long long)label);
    }
    if (r->n > 0) /* the vectors go to the log straight from the message */
        r->rec = (fpx_walrec){.op = FPX_WAL_ADD,
                              .flags = with_ids ? FPX_WAL_LABELS : 0,
                              .n = r->n,
                              .data = r->x,
                              .data_len = r->msg.body.data_size,
                              .meta = r->msg.body.meta,
                              .meta_len = r->msg.body.meta_size,
                              .data_crc = local ? crc : 0,
                              .data_crc_known = local};
    return 0;
}

int fpx_check_trained(fpx_req *r) {
    if (r->n > 0 && !fpx_engine_is_trained(r->ix->eng))
        return fpx_err_set(&r->err, FPX_E_NOT_TRAINED,
                           "index '%s' is not trained: call train before adding vectors",
                           r->ix->name);
    return 0;
}

int fpx_op_added(fpx_req *r, fpx_out *o) {
    msgpack_packer *m = reply_counts(r, o, 1);
    fpx_pack_cstr(m, "count");
    msgpack_pack_int64(m, r->n);
    pack_ntotal(r, m);
    return 0;
}

/* ---- train ----------------------------------------------------------------------- */

int fpx_bind_train(fpx_req *r) {
    if (fpx_req_vectors(r, r->ix, 0, &r->n, &r->x, NULL, NULL))
        return -1;
    if (r->n == 0)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "train needs at least one vector");
    r->rec = (fpx_walrec){
        .op = FPX_WAL_TRAIN, .n = r->n, .data = r->x, .data_len = (size_t)r->n * r->ix->row_bytes};
    return 0;
}

int fpx_op_trained(fpx_req *r, fpx_out *o) {
    msgpack_packer *m = reply_counts(r, o, 1);
    fpx_pack_cstr(m, "is_trained");
    fpx_pack_bool(m, fpx_engine_is_trained(r->ix->eng));
    pack_ntotal(r, m);
    return 0;
}

/* ---- delete_vector ------------------------------------------------------------------ */

int fpx_prep_delete_vector(fpx_req *r) {
    const msgpack_object *one = fpx_map_get(r->h, "vector_id");
    const msgpack_object *many = fpx_map_get(r->h, "vector_ids");
    if (one && one->type == MSGPACK_OBJECT_NIL)
        one = NULL;
    if (many && many->type == MSGPACK_OBJECT_NIL)
        many = NULL;
    if (!one == !many)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "give exactly one of vector_id, vector_ids");
    const msgpack_object *ids = one ? one : many;
    if (many && many->type != MSGPACK_OBJECT_ARRAY)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "vector_ids must be a list");
    uint32_t cnt = one ? 1 : many->via.array.size;
    for (uint32_t i = 0; i < cnt; i++) {
        msgpack_object_type t = (one ? one : &many->via.array.ptr[i])->type;
        if (t != MSGPACK_OBJECT_STR && t != MSGPACK_OBJECT_POSITIVE_INTEGER &&
            t != MSGPACK_OBJECT_NEGATIVE_INTEGER)
            return fpx_err_set(&r->err, FPX_E_VALIDATION, "vector ids must be strings or integers");
    }
    msgpack_packer pk;
    fpx_req_recmeta(r, &pk);
    if (msgpack_pack_object(&pk, *ids) != 0 || !r->recmeta.data)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    r->rec = (fpx_walrec){.op = FPX_WAL_DELETE,
                          .n = cnt,
                          .meta = (const uint8_t *)r->recmeta.data,
                          .meta_len = r->recmeta.size};
    return 0;
}

/* Replies {key: vectors gone, "ntotal": live vectors}. */
static int reply_gone(fpx_req *r, fpx_out *o, const char *key) {
    msgpack_packer *m = reply_counts(r, o, 1);
    fpx_pack_cstr(m, key);
    msgpack_pack_int64(m, r->nlive_before - r->ix->nlive);
    pack_ntotal(r, m);
    return 0;
}

int fpx_op_deleted_vectors(fpx_req *r, fpx_out *o) {
    return reply_gone(r, o, "deleted");
}

/* ---- remove_ids, reset, set_params -------------------------------------------------- */

/* A record of op whose metadata is r->recmeta (or none). */
static int meta_record(fpx_req *r, fpx_walop op) {
    r->rec = (fpx_walrec){
        .op = op, .meta = (const uint8_t *)r->recmeta.data, .meta_len = r->recmeta.size};
    return 0;
}

int fpx_prep_remove_ids(fpx_req *r) {
    int64_t *labels, n, lo = 0, hi = 0;
    if (fpx_remove_spec(r->h, &labels, &n, &lo, &hi, &r->err))
        return -1;
    /* The log record holds the same spec, re-encoded on its own. */
    msgpack_packer pk;
    fpx_req_recmeta(r, &pk);
    msgpack_pack_map(&pk, 1);
    fpx_pack_cstr(&pk, labels ? "ids" : "range");
    msgpack_pack_array(&pk, labels ? (size_t)n : 2);
    for (int64_t i = 0; labels && i < n; i++)
        msgpack_pack_int64(&pk, labels[i]);
    if (!labels) {
        msgpack_pack_int64(&pk, lo);
        msgpack_pack_int64(&pk, hi);
    }
    free(labels);
    if (!r->recmeta.data)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    return meta_record(r, FPX_WAL_REMOVE);
}

int fpx_check_remove(fpx_req *r) {
    return fpx_engine_check_remove(r->ix->eng, &r->err); /* FAISS's refusal, before the log */
}

int fpx_op_removed(fpx_req *r, fpx_out *o) {
    return reply_gone(r, o, "removed");
}

int fpx_prep_reset(fpx_req *r) {
    return meta_record(r, FPX_WAL_RESET);
}

int fpx_prep_set_params(fpx_req *r) {
    char name[FPX_PARAM_NAME_MAX + 1];
    double value;
    if (fpx_param_spec(r->h, name, &value, &r->err))
        return -1;
    msgpack_packer pk;
    fpx_req_recmeta(r, &pk);
    msgpack_pack_map(&pk, 2);
    fpx_pack_cstr(&pk, "name");
    fpx_pack_cstr(&pk, name);
    fpx_pack_cstr(&pk, "value");
    msgpack_pack_double(&pk, value);
    if (!r->recmeta.data)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    return meta_record(r, FPX_WAL_PARAM);
}

int fpx_op_ntotal(fpx_req *r, fpx_out *o) {
    pack_ntotal(r, reply_counts(r, o, 0));
    return 0;
}

/* ---- reconstruct ------------------------------------------------------------------ */

/* Starts a reply of n vectors (float32, or uint8 rows of dim/8 bytes for a
 * binary index); returns where they go. */
static void *vectors_reply(fpx_req *r, fpx_out *o, const fpx_index *ix, int64_t n) {
    int binary = ix->binary;
    msgpack_packer *h = fpx_reply_ok(r, o, 2);
    fpx_pack_cstr(h, "dtype");
    fpx_pack_cstr(h, binary ? "uint8" : "float32");
    fpx_pack_cstr(h, "shape");
    msgpack_pack_array(h, 2);
    msgpack_pack_int64(h, n);
    msgpack_pack_int64(h, binary ? ix->dim / 8 : ix->dim);
    void *v = fpx_out_data(o, (size_t)n * ix->row_bytes);
    if (!v)
        fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
    return v;
}

int fpx_prep_reconstruct(fpx_req *r) {
    return fpx_req_int(r, "label", 1, &r->i0);
}

int fpx_op_reconstruct(fpx_req *r, fpx_out *o) {
    fpx_index *ix = r->ix;
    int64_t slot = fpx_index_slot_of(ix, r->i0);
    if (slot < 0)
        return fpx_err_set(&r->err, FPX_E_NOT_FOUND, "label %lld is not in index '%s'",
                           (long long)r->i0, ix->name);
    void *v = vectors_reply(r, o, ix, 1);
    return v ? fpx_engine_reconstruct(ix->eng, slot, v, &r->err) : -1;
}

int fpx_prep_list_keys(fpx_req *r) {
    r->i0 = 0;
    r->n = FPX_LIST_KEYS_DEFAULT;
    if (fpx_req_int(r, "cursor", 0, &r->i0) < 0 || fpx_req_int(r, "limit", 0, &r->n) < 0)
        return -1;
    if (r->i0 < 0)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "cursor must be one list_keys gave");
    if (r->n < 1 || r->n > FPX_K_MAX)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "limit must be 1..%d", FPX_K_MAX);
    return 0;
}

int fpx_op_list_keys(fpx_req *r, fpx_out *o) {
    /* a page's entries stay well inside the reply size limit */
    size_t budget = r->s->cfg->max_message_size / 2;
    msgpack_packer *pk = fpx_reply_ok(r, o, 0);
    (void)pk;
    return fpx_index_list_keys(r->ix, (uint64_t)r->i0, r->n, budget, fpx_out_meta(o), &r->err);
}

int fpx_prep_reconstruct_n(fpx_req *r) {
    if (fpx_req_int(r, "i0", 1, &r->i0) || fpx_req_int(r, "n", 1, &r->n))
        return -1;
    if (r->i0 < 0 || r->n < 0 || r->i0 > INT64_MAX - r->n)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "i0 and n must be >= 0");
    return 0;
}

int fpx_bind_reconstruct_n(fpx_req *r) {
    if ((uint64_t)r->n > r->s->cfg->max_message_size / r->ix->row_bytes)
        return fpx_err_set(&r->err, FPX_E_LIMIT, "%lld vectors would exceed the message size limit",
                           (long long)r->n);
    return 0;
}

int fpx_op_reconstruct_n(fpx_req *r, fpx_out *o) {
    fpx_index *ix = r->ix;
    int64_t n = r->n, i0 = r->i0;
    int64_t *slots = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    int rc = slots ? 0 : fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        slots[i] = fpx_index_slot_of(ix, i0 + i);
        if (slots[i] < 0)
            rc = fpx_err_set(&r->err, FPX_E_NOT_FOUND, "label %lld is not in index '%s'",
                             (long long)(i0 + i), ix->name);
    }
    void *v = NULL;
    if (rc == 0 && !(v = vectors_reply(r, o, ix, n)))
        rc = -1;
    if (rc == 0 && n > 0)
        rc = fpx_engine_reconstruct_batch(ix->eng, n, slots, v, &r->err);
    free(slots);
    return rc;
}
