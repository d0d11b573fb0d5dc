/*
 * faissx_vectors.c - FAISSx's actions on vectors (add, search, hybrid search,
 * search_and_reconstruct, range_search, reconstruct, reconstruct_n,
 * remove_ids, replace_vector), each run
 * as requests of our own through fpx_server_handle.
 */
#include "faissx_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Adds n vectors (binary ones packed to bits), with ids when given. */
int fx_add(fx *c, const fx_info *in, const float *x, int64_t n, const int64_t *ids,
           int64_t *ntotal) {
    fpx_out o;
    fx_res r;
    int bin = fx_is_binary(in);
    int64_t rowb = bin ? in->dim / 8 : in->dim * 4;
    msgpack_packer *p = fx_begin(c, &o, "add_vectors", in->id, 1 + bin + (ids != NULL));
    fx_pack_shape(p, n, bin ? in->dim / 8 : in->dim);
    if (bin) {
        fpx_pack_cstr(p, "dtype");
        fpx_pack_cstr(p, "uint8");
    }
    if (ids) {
        fpx_pack_cstr(p, "with_ids");
        msgpack_pack_true(p);
    }
    uint8_t *d = fpx_out_data(&o, (size_t)(n * rowb) + (ids ? (size_t)n * 8 : 0));
    if (d) {
        if (bin) {
            uint8_t *bits = fx_pack_bits(x, n, in->dim);
            if (bits)
                memcpy(d, bits, (size_t)(n * rowb));
            free(bits);
        } else {
            memcpy(d, x, (size_t)(n * rowb));
        }
        if (ids)
            memcpy(d + n * rowb, ids, (size_t)n * 8);
    }
    int rc = fx_call(c, &o, &r);
    if (rc == 0)
        fx_get_i(r.m.meta, "ntotal", ntotal);
    else
        fx_fail_from(c, &r.err, "Error adding vectors: ");
    fx_res_free(&r);
    return rc;
}

/* The integers of the list io (an array), as a malloc'd array. */
static int read_ids(fx *c, const msgpack_object *io, int64_t **ids) {
    uint32_t n = io->via.array.size;
    if (!(*ids = malloc((n ? n : 1) * sizeof **ids)))
        return fx_fail(c, NULL, "Server error: out of memory");
    for (uint32_t i = 0; i < n; i++)
        if (fx_num_int(&io->via.array.ptr[i], &(*ids)[i]))
            return fx_fail(c, NULL, "Invalid ids: must be integers");
    return 0;
}

/* add_vectors, add_with_ids, batch_add_with_ids: vectors, and ids (which our
 * server takes on every index type) when given or required. */
static int add_vectors(fx *c, int ids_required, int full_reply) {
    char id[FX_ID_MAX + 1];
    fx_info in;
    if (fx_need_id(c, "index_id", id) || fx_need_index(c, id, &in, "Index %s does not exist"))
        return -1;
    int64_t n, d, *ids = NULL, ntotal = in.ntotal;
    float *x;
    if (fx_need_matrix(c, "vectors", &n, &d, &x))
        return -1;
    int rc = -1;
    if (d != in.dim) {
        fx_fail(c, NULL, "Vector dimension mismatch: expected %lld, got %lld", (long long)in.dim,
                (long long)d);
        goto out;
    }
    const msgpack_object *io = fx_field(c, "ids");
    if (!io && ids_required) {
        fx_fail(c, NULL, "Missing ids");
        goto out;
    }
    if (io) {
        if (io->type != MSGPACK_OBJECT_ARRAY || io->via.array.size != (uint32_t)n) {
            fx_fail(c, NULL, "Number of IDs (%u) does not match number of vectors (%lld)",
                    io->type == MSGPACK_OBJECT_ARRAY ? io->via.array.size : 0, (long long)n);
            goto out;
        }
        if (read_ids(c, io, &ids))
            goto out;
    }
    if (fx_add(c, &in, x, n, ids, &ntotal))
        goto out;
    rc = 0;
    if (full_reply) {
        char msg[FX_ID_MAX + 64];
        snprintf(msg, sizeof msg, "Added %lld vectors to index %s", (long long)n, id);
        fx_put_str(c, "message", msg);
    }
    fx_put_int(c, "ntotal", ntotal);
    fx_put_int(c, "total", ntotal);
    fx_put_int(c, "count", n);
out:
    free(x);
    free(ids);
    return rc;
}

/* Writes the FAISSx search params nprobe / efSearch (ef_search, ef) into the
 * index for good, as FAISSx does; params the index has no knob for are
 * ignored, as there. */
int fx_set_knob(fx *c, const fx_info *in, const char *name, int64_t v) {
    fpx_out o;
    fx_res r;
    msgpack_packer *p = fx_begin(c, &o, "set_params", in->id, 2);
    fpx_pack_cstr(p, "name");
    fpx_pack_cstr(p, name);
    fpx_pack_cstr(p, "value");
    msgpack_pack_int64(p, v);
    int rc = fx_call(c, &o, &r);
    if (rc)
        fx_fail_from(c, &r.err, "");
    fx_res_free(&r);
    return rc;
}

static int apply_search_params(fx *c, const fx_info *in) {
    const msgpack_object *p = fx_field(c, "params");
    if (!p)
        return 0;
    if (p->type != MSGPACK_OBJECT_MAP)
        return fx_fail(c, NULL, "Invalid params: must be a map");
    int64_t v;
    const msgpack_object *o = fpx_map_get(p, "nprobe");
    if (o && in->nprobe >= 0) {
        if (fx_num_int(o, &v))
            return fx_fail(c, NULL, "Invalid nprobe: must be an integer");
        if (fx_set_knob(c, in, "nprobe", v))
            return -1;
    }
    static const char *const ef[] = {"efSearch", "ef_search", "ef"};
    for (int i = 0; i < 3; i++)
        if ((o = fpx_map_get(p, ef[i])) && in->efs >= 0) {
            if (fx_num_int(o, &v))
                return fx_fail(c, NULL, "Invalid %s: must be an integer", ef[i]);
            return fx_set_knob(c, in, "efSearch", v);
        }
    return 0;
}

/* Packs n*d float32 queries (or bits, for a binary index) into a request. */
void fx_pack_queries(fpx_out *o, msgpack_packer *p, const fx_info *in, const float *x, int64_t n) {
    int bin = fx_is_binary(in);
    fx_pack_shape(p, n, bin ? in->dim / 8 : in->dim);
    if (bin) {
        fpx_pack_cstr(p, "dtype");
        fpx_pack_cstr(p, "uint8");
    }
    size_t bytes = (size_t)(n * (bin ? in->dim / 8 : in->dim * 4));
    uint8_t *d = fpx_out_data(o, bytes);
    if (!d)
        return;
    if (bin) {
        uint8_t *bits = fx_pack_bits(x, n, in->dim);
        if (bits)
            memcpy(d, bits, bytes);
        free(bits);
    } else {
        memcpy(d, x, bytes);
    }
}

/* Reads the queries of a search-like action and checks their dimension. */
static int need_queries(fx *c, const fx_info *in, int64_t *n, float **x) {
    int64_t d;
    if (fx_need_matrix(c, "query_vectors", n, &d, x))
        return -1;
    if (d != in->dim) {
        free(*x);
        *x = NULL;
        return fx_fail(c, NULL, "Query dimension mismatch: expected %lld, got %lld",
                       (long long)in->dim, (long long)d);
    }
    return 0;
}

/* Our search of n queries, k hits each; filter is a metadata filter map or
 * NULL. On success r holds the reply, whose data section is read with
 * memcpy (nothing promises its alignment here). */
static int search(fx *c, const fx_info *in, const float *x, int64_t n, int64_t k,
                  const msgpack_object *filter, fx_res *r) {
    fpx_out o;
    msgpack_packer *p = fx_begin(c, &o, "search", in->id, 2 + fx_is_binary(in));
    fpx_pack_cstr(p, "k");
    msgpack_pack_int64(p, k);
    fx_pack_queries(&o, p, in, x, n);
    if (filter)
        msgpack_pack_object(fpx_out_meta(&o), *filter);
    if (fx_call(c, &o, r))
        return fx_fail_from(c, &r->err, "Error searching index: ");
    if (r->m.body.data_size != (size_t)(n * k * 12))
        return fx_fail(c, NULL, "Error searching index: reply of %zu bytes for %lld x %lld hits",
                       r->m.body.data_size, (long long)n, (long long)k);
    return 0;
}

static double hit_dist(const fx_info *in, const uint8_t *data, int64_t i) {
    if (fx_is_binary(in)) {
        int32_t v;
        memcpy(&v, data + i * 4, 4);
        return v;
    }
    float f;
    memcpy(&f, data + i * 4, 4);
    return f;
}

static int64_t hit_label(const uint8_t *data, int64_t nk, int64_t i) {
    int64_t l;
    memcpy(&l, data + nk * 4 + i * 8, 8);
    return l;
}

static void pack_hit_dist(msgpack_packer *p, const fx_info *in, double v) {
    if (fx_is_binary(in))
        msgpack_pack_int64(p, (int64_t)v);
    else
        msgpack_pack_double(p, v);
}

/* Query q's "distances" and "indices" (k of each) from a search reply's data
 * of n queries. */
static void pack_query_hits(msgpack_packer *p, const fx_info *in, const uint8_t *d, int64_t n,
                            int64_t k, int64_t q) {
    fpx_pack_cstr(p, "distances");
    msgpack_pack_array(p, (size_t)k);
    for (int64_t j = 0; j < k; j++)
        pack_hit_dist(p, in, hit_dist(in, d, q * k + j));
    fpx_pack_cstr(p, "indices");
    msgpack_pack_array(p, (size_t)k);
    for (int64_t j = 0; j < k; j++)
        msgpack_pack_int64(p, hit_label(d, n * k, q * k + j));
}

/* Reads k and runs the shared start of search, hybrid_search and
 * search_and_reconstruct. */
static int search_common(fx *c, fx_info *in, int64_t *n, int64_t *k, float **x) {
    char id[FX_ID_MAX + 1];
    *x = NULL;
    if (fx_need_id(c, "index_id", id) || fx_opt_int(c, "k", 10, k))
        return -1;
    if (*k < 1 || *k > FX_K_MAX)
        return fx_fail(c, NULL, "k=%lld out of range (1-%d)", (long long)*k, FX_K_MAX);
    if (fx_need_index(c, id, in, "Index %s does not exist") || need_queries(c, in, n, x))
        return -1;
    return apply_search_params(c, in);
}

/* add_vectors (arg 0), add_with_ids (1: ids required), batch_add_with_ids (3: ids
 * required, the fuller reply). */
int fx_act_add(fx *c, int arg) {
    return add_vectors(c, arg & 1, arg == 0 || (arg & 2));
}

int fx_act_search(fx *c, int hybrid) {
    fx_info in;
    int64_t n, k;
    float *x;
    const msgpack_object *filter = NULL;
    if (hybrid && (filter = fx_field(c, "metadata_filter")) && filter->type != MSGPACK_OBJECT_MAP)
        return fx_fail(c, NULL, "Invalid metadata_filter: must be a map");
    if (search_common(c, &in, &n, &k, &x)) {
        free(x);
        return -1;
    }
    fx_res r;
    int rc = search(c, &in, x, n, k, filter, &r);
    free(x);
    if (rc == 0) {
        const uint8_t *d = r.m.body.data;
        msgpack_packer *p = fx_key(c, "results");
        msgpack_pack_array(p, (size_t)n);
        for (int64_t q = 0; q < n; q++) {
            msgpack_pack_map(p, 2);
            pack_query_hits(p, &in, d, n, k, q);
        }
        fx_put_int(c, "num_queries", n);
        fx_put_int(c, "k", k);
        if (fx_is_binary(&in))
            fx_put_bool(c, "is_binary", 1);
    }
    fx_res_free(&r);
    return rc;
}

/* One vector of ours (float32 or uint8 bits) as FAISSx's list of floats. */
static void pack_vector(msgpack_packer *p, const fx_info *in, const uint8_t *row) {
    msgpack_pack_array(p, (size_t)in->dim);
    for (int64_t j = 0; j < in->dim; j++) {
        if (fx_is_binary(in)) {
            msgpack_pack_double(p, (row[j / 8] >> (j % 8)) & 1 ? 1.0 : 0.0);
        } else {
            float f;
            memcpy(&f, row + j * 4, 4);
            msgpack_pack_double(p, f);
        }
    }
}

size_t fx_row_bytes(const fx_info *in) {
    return (size_t)(fx_is_binary(in) ? in->dim / 8 : in->dim * 4);
}

/* Our reconstruct of one label, into out (row_bytes). */
static int reconstruct(fx *c, const fx_info *in, int64_t label, uint8_t *out, fpx_err *e) {
    fpx_out o;
    fx_res r;
    msgpack_packer *p = fx_begin(c, &o, "reconstruct", in->id, 1);
    fpx_pack_cstr(p, "label");
    msgpack_pack_int64(p, label);
    int rc = fx_call(c, &o, &r);
    if (rc == 0 && r.m.body.data_size != fx_row_bytes(in))
        rc = fpx_err_set(&r.err, FPX_E_INTERNAL, "reconstruct reply of %zu bytes",
                         r.m.body.data_size);
    if (rc == 0)
        memcpy(out, r.m.body.data, fx_row_bytes(in));
    *e = r.err;
    fx_res_free(&r);
    return rc;
}

int fx_act_search_and_reconstruct(fx *c, int arg) {
    (void)arg;
    fx_info in;
    int64_t n, k;
    float *x;
    if (search_common(c, &in, &n, &k, &x)) {
        free(x);
        return -1;
    }
    fx_res r;
    int rc = search(c, &in, x, n, k, NULL, &r);
    free(x);
    uint8_t *row = malloc(fx_row_bytes(&in));
    if (rc == 0 && !row)
        rc = fx_fail(c, NULL, "Server error: out of memory");
    if (rc == 0) {
        const uint8_t *d = r.m.body.data;
        msgpack_packer *p = fx_key(c, "results");
        msgpack_pack_array(p, (size_t)n);
        for (int64_t q = 0; q < n && rc == 0; q++) {
            msgpack_pack_map(p, 3);
            pack_query_hits(p, &in, d, n, k, q);
            fpx_pack_cstr(p, "vectors");
            msgpack_pack_array(p, (size_t)k);
            for (int64_t j = 0; j < k && rc == 0; j++) {
                int64_t l = hit_label(d, n * k, q * k + j);
                fpx_err e;
                memset(row, 0, fx_row_bytes(&in)); /* a missing hit reads as zeros */
                if (l >= 0 && reconstruct(c, &in, l, row, &e) != 0) {
                    /* IVF reconstructs by label only through a direct map:
                     * give the index one (durably) and try again */
                    if (e.type == FPX_E_FAISS && in.nlist > 0 && !c->failed &&
                        fx_set_knob(c, &in, "direct_map", 2) == 0 &&
                        reconstruct(c, &in, l, row, &e) == 0)
                        ;
                    else
                        rc = c->failed ? -1
                                       : fx_fail_from(c, &e, "Error in search_and_reconstruct: ");
                }
                pack_vector(p, &in, row);
            }
        }
        fx_put_int(c, "num_queries", n);
        fx_put_int(c, "k", k);
    }
    free(row);
    fx_res_free(&r);
    return rc;
}

int fx_act_range_search(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t n;
    float *x = NULL;
    double radius;
    if (fx_need_id(c, "index_id", id))
        return -1;
    if (fx_num_dbl(fx_field(c, "radius"), &radius))
        return fx_fail(c, NULL, "Invalid radius: must be a number");
    if (fx_need_index(c, id, &in, "Index %s does not exist") || need_queries(c, &in, &n, &x) ||
        apply_search_params(c, &in)) {
        free(x);
        return -1;
    }
    fpx_out o;
    fx_res r;
    msgpack_packer *p = fx_begin(c, &o, "range_search", id, 2 + fx_is_binary(&in));
    fpx_pack_cstr(p, "radius");
    if (fx_is_binary(&in))
        msgpack_pack_int64(p, (int64_t)radius);
    else
        msgpack_pack_double(p, radius);
    fx_pack_queries(&o, p, &in, x, n);
    free(x);
    int rc = fx_call(c, &o, &r);
    int64_t nq = 0, nres = 0;
    if (rc)
        fx_fail_from(c, &r.err, "Error in range_search: ");
    else if (fx_get_i(r.m.header, "nq", &nq) || fx_get_i(r.m.header, "nres", &nres) || nq != n ||
             nres < 0 || r.m.body.data_size != (size_t)((nq + 1) * 8 + nres * 12))
        rc = fx_fail(c, NULL, "Error in range_search: malformed reply");
    if (rc == 0) {
        /* the superset of the shapes FAISSx's index classes read: per query
         * (num_results and count alike) and flat (lims, distances, indices) */
        const uint8_t *d = r.m.body.data;
        const uint8_t *labs = d + (nq + 1) * 8, *dist = labs + nres * 8;
        int64_t lo, hi;
        msgpack_packer *pk = fx_key(c, "results");
        msgpack_pack_array(pk, (size_t)nq);
        for (int64_t q = 0; q < nq; q++) {
            memcpy(&lo, d + q * 8, 8);
            memcpy(&hi, d + (q + 1) * 8, 8);
            msgpack_pack_map(pk, 5);
            fpx_pack_cstr(pk, "query_index");
            msgpack_pack_int64(pk, q);
            fpx_pack_cstr(pk, "num_results");
            msgpack_pack_int64(pk, hi - lo);
            fpx_pack_cstr(pk, "count");
            msgpack_pack_int64(pk, hi - lo);
            fpx_pack_cstr(pk, "indices");
            msgpack_pack_array(pk, (size_t)(hi - lo));
            for (int64_t j = lo; j < hi; j++)
                msgpack_pack_int64(pk, hit_label(labs, 0, j));
            fpx_pack_cstr(pk, "distances");
            msgpack_pack_array(pk, (size_t)(hi - lo));
            for (int64_t j = lo; j < hi; j++)
                pack_hit_dist(pk, &in, hit_dist(&(fx_info){.metric = 0}, dist, j));
        }
        pk = fx_key(c, "lims");
        msgpack_pack_array(pk, (size_t)nq + 1);
        for (int64_t q = 0; q <= nq; q++) {
            memcpy(&lo, d + q * 8, 8);
            msgpack_pack_int64(pk, lo);
        }
        pk = fx_key(c, "indices");
        msgpack_pack_array(pk, (size_t)nres);
        for (int64_t j = 0; j < nres; j++)
            msgpack_pack_int64(pk, hit_label(labs, 0, j));
        pk = fx_key(c, "distances");
        msgpack_pack_array(pk, (size_t)nres);
        for (int64_t j = 0; j < nres; j++)
            pack_hit_dist(pk, &in, hit_dist(&(fx_info){.metric = 0}, dist, j));
        fx_put_int(c, "num_queries", nq);
        msgpack_pack_double(fx_key(c, "radius"), radius);
    }
    fx_res_free(&r);
    return rc;
}

int fx_act_reconstruct(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t label;
    const msgpack_object *lo = fx_field(c, "id") ? fx_field(c, "id") : fx_field(c, "idx");
    if (fx_need_id(c, "index_id", id))
        return -1;
    if (!lo)
        return fx_fail(c, NULL, "Missing id");
    if (fx_num_int(lo, &label))
        return fx_fail(c, NULL, "Invalid id: must be an integer");
    if (fx_need_index(c, id, &in, "Index %s not found"))
        return -1;
    uint8_t *row = malloc(fx_row_bytes(&in));
    if (!row)
        return fx_fail(c, NULL, "Server error: out of memory");
    fpx_err e;
    int rc = reconstruct(c, &in, label, row, &e);
    if (rc == 0)
        pack_vector(fx_key(c, "vector"), &in, row);
    else if (e.type == FPX_E_NOT_FOUND && !strstr(e.msg, "not found"))
        fx_fail(c, NULL, "Vector index %lld out of range (0-%lld)", (long long)label,
                (long long)in.ntotal - 1);
    else
        fx_fail_from(c, &e, "Error reconstructing vector: ");
    free(row);
    return rc;
}

/* Our reconstruct_n of labels start .. start+num-1; r holds the reply. */
int fx_reconstruct_n(fx *c, const fx_info *in, int64_t start, int64_t num, fx_res *r) {
    fpx_out o;
    msgpack_packer *p = fx_begin(c, &o, "reconstruct_n", in->id, 2);
    fpx_pack_cstr(p, "i0");
    msgpack_pack_int64(p, start);
    fpx_pack_cstr(p, "n");
    msgpack_pack_int64(p, num);
    if (fx_call(c, &o, r))
        return -1;
    if (r->m.body.data_size != (size_t)num * fx_row_bytes(in))
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "reconstruct_n reply of %zu bytes",
                           r->m.body.data_size);
    return 0;
}

/* fx_reconstruct_n (and get_vectors, its intended sibling). */
int fx_act_reconstruct_n(fx *c, int get_vectors) {
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t start, num;
    if (fx_need_id(c, "index_id", id) || fx_opt_int(c, "start_idx", 0, &start) ||
        fx_need_index(c, id, &in, "Index %s not found"))
        return -1;
    if (fx_opt_int(c, get_vectors ? "limit" : "num_vectors", get_vectors ? in.ntotal - start : 10,
                   &num))
        return -1;
    if (start < 0)
        return fx_fail(c, NULL, "Starting index cannot be negative");
    if (get_vectors && num == 0 && start <= in.ntotal) {
        msgpack_pack_array(fx_key(c, "vectors"), 0);
        fx_put_int(c, "count", 0);
        fx_put_int(c, "start_idx", start);
        fx_put_int(c, "ntotal", in.ntotal);
        return 0;
    }
    if (num <= 0)
        return fx_fail(c, NULL, "Number of vectors must be positive");
    if (start + num > in.ntotal)
        return fx_fail(c, NULL, "Range %lld:%lld exceeds index size %lld", (long long)start,
                       (long long)(start + num), (long long)in.ntotal);
    fx_res r;
    int rc = fx_reconstruct_n(c, &in, start, num, &r);
    if (rc == 0) {
        msgpack_packer *p = fx_key(c, "vectors");
        msgpack_pack_array(p, (size_t)num);
        for (int64_t i = 0; i < num; i++)
            pack_vector(p, &in, r.m.body.data + (size_t)i * fx_row_bytes(&in));
        fx_put_int(c, "start_idx", start);
        fx_put_int(c, get_vectors ? "count" : "num_vectors", num);
        if (get_vectors)
            fx_put_int(c, "ntotal", in.ntotal);
    } else {
        fx_fail_from(c, &r.err, "");
    }
    fx_res_free(&r);
    return rc;
}

/* remove_ids: FAISS's remove_ids of the labels in `ids`, as our remove_ids
 * (FAISS's semantics: labels of a plain flat index move down, IVF and IDMap
 * ones stay; types that cannot remove fail with FAISS's message). */
int fx_act_remove_ids(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    if (fx_need_id(c, "index_id", id))
        return -1;
    const msgpack_object *io = fx_field(c, "ids");
    if (!io)
        return fx_fail(c, NULL, "Missing ids");
    if (io->type != MSGPACK_OBJECT_ARRAY)
        return fx_fail(c, NULL, "Invalid ids: must be a list of integers");
    int64_t *ids = NULL;
    if (read_ids(c, io, &ids) || fx_need_index(c, id, &in, "Index %s not found")) {
        free(ids);
        return -1;
    }
    fpx_out o;
    fx_res r;
    msgpack_packer *p = fx_begin(c, &o, "remove_ids", id, 1);
    fpx_pack_cstr(p, "ids");
    msgpack_pack_array(p, io->via.array.size);
    for (uint32_t i = 0; i < io->via.array.size; i++)
        msgpack_pack_int64(p, ids[i]);
    free(ids);
    int64_t removed = 0, ntotal = 0;
    int rc = fx_call(c, &o, &r);
    if (rc == 0 &&
        (fx_get_i(r.m.meta, "removed", &removed) || fx_get_i(r.m.meta, "ntotal", &ntotal)))
        rc = fx_fail(c, NULL, "Error removing ids: malformed reply");
    else if (rc)
        fx_fail_from(c, &r.err, "Error removing ids: ");
    fx_res_free(&r);
    if (rc)
        return -1;
    char msg[FX_ID_MAX + 64];
    snprintf(msg, sizeof msg, "Removed %lld vectors from index %s", (long long)removed, id);
    fx_put_str(c, "message", msg);
    fx_put_str(c, "index_id", id);
    fx_put_int(c, "count", removed);
    fx_put_int(c, "removed", removed);
    fx_put_int(c, "ntotal", ntotal);
    return 0;
}

/* replace_vector: the vector of label `id` becomes `vector` (one add with
 * that label: a label names one vector, so the old one goes, as IndexIDMap2's
 * add_with_ids of an existing id would leave it in FAISS; a label not held
 * yet is added). */
int fx_act_replace_vector(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t label, n, d, ntotal = 0;
    float *x = NULL;
    const msgpack_object *lo = fx_field(c, "id");
    if (fx_need_id(c, "index_id", id))
        return -1;
    if (!lo)
        return fx_fail(c, NULL, "Missing id");
    if (fx_num_int(lo, &label) || label < 0)
        return fx_fail(c, NULL, "Invalid id: must be an integer >= 0");
    if (fx_need_index(c, id, &in, "Index %s not found") || fx_need_matrix(c, "vector", &n, &d, &x))
        return -1;
    int rc = -1;
    if (n != 1)
        fx_fail(c, NULL, "Invalid vector: one vector expected, got %lld", (long long)n);
    else if (d != in.dim)
        fx_fail(c, NULL, "Vector dimension mismatch: expected %lld, got %lld", (long long)in.dim,
                (long long)d);
    else
        rc = fx_add(c, &in, x, 1, &label, &ntotal);
    free(x);
    if (rc)
        return -1;
    char msg[FX_ID_MAX + 64];
    snprintf(msg, sizeof msg, "Replaced vector %lld in index %s", (long long)label, id);
    fx_put_str(c, "message", msg);
    fx_put_str(c, "index_id", id);
    fx_put_int(c, "id", label);
    fx_put_int(c, "ntotal", ntotal);
    return 0;
}
