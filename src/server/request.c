/*
 * request.c - reading a decoded request's header fields and vector section,
 * and starting its reply: the checks every operation shares, so that the same
 * mistake gets the same message whichever operation it was made in.
 */
#include "request.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Starts an "ok" reply header with room for `extra` more keys. */
msgpack_packer *fpx_reply_ok(fpx_req *r, fpx_out *o, size_t extra) {
    msgpack_packer *pk = fpx_out_hdr(o);
    msgpack_pack_map(pk, 1 + (r->rid ? 1 : 0) + extra);
    fpx_pack_cstr(pk, "status");
    fpx_pack_cstr(pk, "ok");
    if (r->rid) {
        fpx_pack_cstr(pk, "request_id");
        msgpack_pack_object(pk, *r->rid);
    }
    return pk;
}

msgpack_packer *fpx_reply_search(fpx_req *r, fpx_out *o, int binary, int64_t nq, int64_t k,
                                 size_t extra) {
    msgpack_packer *h = fpx_reply_ok(r, o, 1 + (binary ? 1 : 0) + extra);
    if (binary) {
        fpx_pack_cstr(h, "distance_dtype");
        fpx_pack_cstr(h, "int32");
    }
    fpx_pack_cstr(h, "shape");
    msgpack_pack_array(h, 2);
    msgpack_pack_int64(h, nq);
    msgpack_pack_int64(h, k);
    return h;
}

void fpx_pack_bool(msgpack_packer *pk, int v) {
    if (v)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* ---- header fields ---------------------------------------------------------------- */

int fpx_req_int(fpx_req *r, const char *key, int required, int64_t *v) {
    const msgpack_object *o = fpx_map_get(r->h, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (required)
            return fpx_err_set(&r->err, FPX_E_VALIDATION, "missing %s", key);
        return 1;
    }
    if (fpx_obj_int(o, v))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "%s must be an integer", key);
    return 0;
}

/* An optional string field into a NUL-terminated buffer. 1 when absent. */
int fpx_req_str(fpx_req *r, const char *key, char *buf, size_t cap) {
    const msgpack_object *o = fpx_map_get(r->h, key);
    const char *s;
    size_t n;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 1;
    if (fpx_obj_str(o, &s, &n))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "%s must be a string", key);
    if (n >= cap || memchr(s, 0, n))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "%s must be at most %zu characters", key,
                           cap - 1);
    memcpy(buf, s, n);
    buf[n] = 0;
    return 0;
}

int fpx_req_name(fpx_req *r, int allow_name_synonym, char *name) {
    const msgpack_object *o = fpx_map_get(r->h, "index_id");
    if ((!o || o->type == MSGPACK_OBJECT_NIL) && allow_name_synonym)
        o = fpx_map_get(r->h, "name");
    const char *s;
    size_t n;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "missing index_id");
    if (fpx_obj_str(o, &s, &n))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "index_id must be a string");
    /* A shard's name comes from the node serving its sharded index only. */
    if (!fpx_name_valid(s, n) && !(r->forwarded && r->s->cluster && fpx_name_shard(s, n)))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "index_id must be 1-128 characters of [A-Za-z0-9_.-], not starting "
                           "with '.'");
    memcpy(name, s, n);
    name[n] = 0;
    return 0;
}

/* Looks up the request's index (referenced). A foreign or missing index reads
 * the same: not_found. */
fpx_index *fpx_req_index(fpx_req *r) {
    char name[FPX_NAME_MAX + 1];
    if (fpx_req_name(r, 0, name))
        return NULL;
    fpx_index *ix = fpx_server_find(r->s, r->tenant, name, strlen(name));
    if (!ix && fpx_server_unavailable(r->s, r->tenant, name, &r->err) == 0)
        fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", name);
    return ix;
}

int fpx_req_bool(fpx_req *r, const char *key, int *v) {
    const msgpack_object *o = fpx_map_get(r->h, key);
    *v = 0;
    if (o && o->type != MSGPACK_OBJECT_NIL && fpx_obj_bool(o, v))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "%s must be a boolean", key);
    return 0;
}

int fpx_req_number(fpx_req *r, const char *key, double *v) {
    const msgpack_object *o = fpx_map_get(r->h, key);
    int64_t i;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "missing %s", key);
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        *v = o->via.f64;
    else if (fpx_obj_int(o, &i) == 0)
        *v = (double)i;
    else
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "%s must be a number", key);
    if (!isfinite(*v))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "%s must be finite", key);
    return 0;
}

void fpx_req_recmeta(fpx_req *r, msgpack_packer *pk) {
    msgpack_sbuffer_destroy(&r->recmeta);
    msgpack_sbuffer_init(&r->recmeta);
    msgpack_packer_init(pk, &r->recmeta, msgpack_sbuffer_write);
}

/* ---- vectors and search parameters ------------------------------------------------- */

/* The index of the first NaN or infinite float of x[0..n), or n. A float is
 * not finite when its exponent bits are all set; blocks are tested without
 * a branch per element, which the compiler turns into vector instructions
 * (a scalar isfinite loop that returns at the first hit is not vectorised,
 * and it was a pass over every byte of every add). Only a block with a hit
 * is searched one float at a time. With crc, the CRC-32C of the floats is
 * continued in the same pass, each block while it is in the cache (a block
 * is three of fpx_crc32c's interleaved stripes). */
static size_t first_not_finite(const void *x, size_t n, uint32_t *crc) {
    enum { BLOCK = 6144 };
    const uint32_t *u = x;
    for (size_t lo = 0; lo < n; lo += BLOCK) {
        size_t hi = n - lo < BLOCK ? n : lo + BLOCK;
        uint32_t hit = 0;
        for (size_t i = lo; i < hi; i++)
            hit |= (u[i] & 0x7f800000u) == 0x7f800000u;
        if (hit)
            for (size_t i = lo; i < hi; i++)
                if ((u[i] & 0x7f800000u) == 0x7f800000u)
                    return i;
        if (crc)
            *crc = fpx_crc32c(*crc, u + lo, (hi - lo) * sizeof *u);
    }
    return n;
}

/*
 * The vector section as n rows of the index's vectors (plus n int64 labels
 * when with_labels): float32 rows of dim components, or for a binary index
 * uint8 rows of dim/8 bytes (dtype "uint8" required). The shape comes from
 * vector_shape [n, d] (d = components per row: dim, or dim/8 bytes), or, for
 * seed-style clients, from dimension (the index's) with n = size / row.
 * *copy receives a malloc'd aligned copy only when the section is misaligned
 * in the message. crc, when not NULL, receives the CRC-32C of the whole
 * section, taken in the pass that checks the floats.
 */
int fpx_req_vectors(fpx_req *r, const fpx_index *ix, int with_labels, int64_t *n_out,
                    const void **x, const int64_t **labels, uint32_t *crc) {
    const msgpack_object *shape = fpx_map_get(r->h, "vector_shape");
    const msgpack_object *dtype = fpx_map_get(r->h, "dtype");
    size_t size = r->msg.body.data_size;
    int binary = ix->binary;
    if (dtype && dtype->type == MSGPACK_OBJECT_NIL)
        dtype = NULL;
    if (binary ? !dtype || !fpx_obj_str_eq(dtype, "uint8")
               : dtype && !fpx_obj_str_eq(dtype, "float32"))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           binary ? "index '%s' is binary: send dtype \"uint8\" rows of d/8 bytes"
                                  : "dtype must be \"float32\" for index '%s' (binary \"uint8\" "
                                    "vectors need a binary index)",
                           ix->name);
    size_t vrow = ix->row_bytes;
    int64_t cols = binary ? ix->dim / 8 : ix->dim;
    size_t row = vrow + (with_labels ? sizeof(int64_t) : 0);
    int64_t n, d;
    if (shape && shape->type != MSGPACK_OBJECT_NIL) {
        if (shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size != 2 ||
            fpx_obj_int(&shape->via.array.ptr[0], &n) || fpx_obj_int(&shape->via.array.ptr[1], &d))
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "vector_shape must be [n, d] with two integers");
        if (n < 0 || d < 1)
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "vector_shape [%lld, %lld] is not a valid shape", (long long)n,
                               (long long)d);
        if (d != cols)
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "dimension mismatch: vectors have d=%lld, the index has d=%lld%s",
                               (long long)d, (long long)cols, binary ? " bytes" : "");
        if ((uint64_t)n > size / row || (size_t)n * row != size)
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "vector_shape [%lld, %lld] needs %s bytes of vector data, got %zu",
                               (long long)n, (long long)d,
                               (uint64_t)n > SIZE_MAX / row ? "more" : "a different number of",
                               size);
    } else {
        int rc = fpx_req_int(r, "dimension", 0, &d);
        if (rc < 0)
            return -1;
        if (rc == 1)
            return fpx_err_set(&r->err, FPX_E_VALIDATION, "missing vector_shape");
        if (d != ix->dim)
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "dimension mismatch: vectors have d=%lld, the index has d=%lld",
                               (long long)d, (long long)ix->dim);
        if (size % row)
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "vector data of %zu bytes is not a whole number of %zu-byte rows",
                               size, row);
        n = (int64_t)(size / row);
    }
    const uint8_t *p = r->msg.body.data;
    size_t align = with_labels ? 8 : binary ? 1 : 4;
    if (n > 0 && ((uintptr_t)p % align) != 0) {
        free(r->copy);
        r->copy = malloc(size);
        if (!r->copy)
            return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
        memcpy(r->copy, p, size);
        p = r->copy;
    }
    size_t nf = (size_t)n * (size_t)ix->dim, done = binary ? 0 : nf * sizeof(float);
    if (crc)
        *crc = 0;
    size_t bad = binary ? nf : first_not_finite(p, nf, crc);
    if (bad < nf)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "vector %zu component %zu is NaN or infinite",
                           bad / (size_t)ix->dim, bad % (size_t)ix->dim);
    if (crc)
        *crc = fpx_crc32c(*crc, p + done, size - done);
    *n_out = n;
    *x = n > 0 ? (const void *)p : NULL;
    if (labels)
        *labels = with_labels && n > 0 ? (const int64_t *)(p + (size_t)n * vrow) : NULL;
    return 0;
}

int fpx_req_search_params(fpx_req *r) {
    fpx_search_params *p = &r->params;
    memset(p, 0, sizeof *p);
    const msgpack_object *m = fpx_map_get(r->h, "params");
    if (!m || m->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (m->type != MSGPACK_OBJECT_MAP)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "params must be a map");
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        int64_t v;
        int64_t *dst = NULL;
        if (fpx_obj_str_eq(&kv->key, "nprobe"))
            dst = &p->nprobe;
        else if (fpx_obj_str_eq(&kv->key, "efSearch"))
            dst = &p->efSearch;
        else if (fpx_obj_str_eq(&kv->key, "quantizer_efSearch"))
            dst = &p->quantizer_efSearch;
        if (fpx_obj_str_eq(&kv->key, "search_type")) {
            /* FAISS's SearchParametersPQ: IndexPQ::Search_type_t */
            if (fpx_obj_int(&kv->val, &v) || v < 0 || v > 5)
                return fpx_err_set(&r->err, FPX_E_VALIDATION,
                                   "search_type must be an integer in 0..5");
            p->has_search_type = 1;
            p->search_type = (int)v;
            continue;
        }
        if (fpx_obj_str_eq(&kv->key, "polysemous_ht")) {
            if (fpx_obj_int(&kv->val, &v) || v < 0 || v > (1 << 20))
                return fpx_err_set(&r->err, FPX_E_VALIDATION,
                                   "polysemous_ht must be an integer in 0..1048576");
            p->has_polysemous_ht = 1;
            p->polysemous_ht = (int)v;
            continue;
        }
        if (fpx_obj_str_eq(&kv->key, "max_codes")) {
            /* FAISS's SearchParametersIVF.max_codes: 0 is no limit */
            if (fpx_obj_int(&kv->val, &v) || v < 0 || v > ((int64_t)1 << 53))
                return fpx_err_set(&r->err, FPX_E_VALIDATION,
                                   "max_codes must be an integer in 0..2^53 (0: no limit)");
            p->max_codes = v > 0 ? v : -1;
            continue;
        }
        if (!dst)
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "unknown search parameter (known: nprobe, efSearch, max_codes, "
                               "quantizer_efSearch, search_type, polysemous_ht)");
        if (fpx_obj_int(&kv->val, &v) || v < 1 || v > (1 << 20))
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "search parameters must be integers in 1..1048576");
        *dst = v;
    }
    return 0;
}
