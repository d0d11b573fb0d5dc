/*
 * ops_codec.c - FAISS's standalone codec of an index, as reads: sa_encode
 * gives the codes the index's encoding gives vectors, sa_decode the vectors
 * decoded from such codes (docs/protocol.md). Neither changes the index, so
 * both run under its shared lock, as searches do.
 *
 * An index created with an IDMap wrapper has no codec in FAISS (IndexIDMap
 * keeps Index's, which throws): the server's engine, which holds the index
 * without its wrapper, must not answer for it.
 */
#include "ops.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static int codec_served(fpx_req *r) {
    if (r->ix->binary)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "binary indexes have no standalone codec in FAISS 1.7.3");
    if (fpx_index_type_has_idmap(r->ix->index_type))
        return fpx_err_set(&r->err, FPX_E_FAISS,
                           "standalone codec not implemented for this type of index");
    return 0;
}

/* The reply's data: n rows of row bytes, under the message size limit. */
static void *codec_reply(fpx_req *r, fpx_out *o, int64_t n, int64_t cols, size_t row,
                         const char *dtype) {
    if (row && (uint64_t)n > r->s->cfg->max_message_size / row) {
        fpx_err_set(&r->err, FPX_E_LIMIT,
                    "%lld rows of %zu bytes would exceed the message size "
                    "limit",
                    (long long)n, row);
        return NULL;
    }
    msgpack_packer *h = fpx_reply_ok(r, o, 2);
    fpx_pack_cstr(h, "dtype");
    fpx_pack_cstr(h, dtype);
    fpx_pack_cstr(h, "shape");
    msgpack_pack_array(h, 2);
    msgpack_pack_int64(h, n);
    msgpack_pack_int64(h, cols);
    void *v = fpx_out_data(o, (size_t)n * row);
    if (!v && n > 0)
        fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
    return v;
}

/* sa_encode: float32 rows of the index's dimension (n may be 0: the reply's
 * shape then gives sa_code_size alone). */
int fpx_bind_sa_encode(fpx_req *r) {
    return codec_served(r) ? -1 : fpx_req_vectors(r, r->ix, 0, &r->n, &r->x, NULL, NULL);
}

int fpx_op_sa_encode(fpx_req *r, fpx_out *o) {
    size_t cs;
    if (fpx_engine_sa_code_size(r->ix->eng, &cs, &r->err))
        return -1;
    uint8_t *codes = codec_reply(r, o, r->n, (int64_t)cs, cs, "uint8");
    if (!codes && r->n > 0)
        return -1;
    if (r->n == 0 || cs == 0)
        return 0;
    return fpx_engine_sa_encode(r->ix->eng, r->n, r->x, codes, &r->err);
}

/* sa_decode: vector_shape [n, sa_code_size] of uint8 codes. */
int fpx_bind_sa_decode(fpx_req *r) {
    if (codec_served(r))
        return -1;
    const msgpack_object *shape = fpx_map_get(r->h, "vector_shape");
    const msgpack_object *dtype = fpx_map_get(r->h, "dtype");
    int64_t n, c;
    if (!dtype || !fpx_obj_str_eq(dtype, "uint8"))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "sa_decode takes dtype \"uint8\" codes");
    if (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size != 2 ||
        fpx_obj_int(&shape->via.array.ptr[0], &n) || fpx_obj_int(&shape->via.array.ptr[1], &c) ||
        n < 0 || c < 0)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "vector_shape must be [n, code_size] with two integers >= 0");
    size_t size = r->msg.body.data_size;
    if ((c > 0 && (uint64_t)n > size / (uint64_t)c) || (uint64_t)n * (uint64_t)c != size)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "vector_shape [%lld, %lld] needs a different number of bytes than the "
                           "%zu sent",
                           (long long)n, (long long)c, size);
    r->n = n;
    r->k = c;
    r->x = r->msg.body.data;
    return 0;
}

int fpx_op_sa_decode(fpx_req *r, fpx_out *o) {
    size_t cs;
    if (fpx_engine_sa_code_size(r->ix->eng, &cs, &r->err))
        return -1;
    if ((uint64_t)r->k != cs)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "codes of %lld bytes given, the index's codes have %zu", (long long)r->k,
                           cs);
    float *x = codec_reply(r, o, r->n, r->ix->dim, r->ix->row_bytes, "float32");
    if (!x && r->n > 0)
        return -1;
    if (r->n == 0)
        return 0;
    return fpx_engine_sa_decode(r->ix->eng, r->n, r->x, x, &r->err);
}
