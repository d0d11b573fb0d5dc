/*
 * faissx.c - serves FAISSx's clients: their msgpack-map requests translated
 * into requests of our own protocol.
 *
 * A FAISSx request is one msgpack map whose "action" names the operation;
 * vectors travel as nested lists of numbers and every reply is one flat map
 * with "success" (docs/faissx.md). Each action here builds one or more of our
 * own request bodies with proto's fpx_out_* helpers and runs them through
 * fpx_server_handle, the entry point every request of ours takes, so that
 * authentication, tenants, the operation table, the write-ahead log and
 * snapshots apply unchanged; the replies are decoded with fpx_msg_decode and
 * turned into the fields FAISSx's client reads. Nothing here touches an index
 * directly; the one computation of its own is compute_clustering (k-means,
 * which belongs to no index), done by the engine.
 *
 * This file holds the entry points, the action table and what every action
 * uses (reading the request, building the reply, running our requests); the
 * actions live in faissx_indexes.c and faissx_vectors.c, the index types in
 * faissx_types.c (faissx_internal.h).
 */
#include "faissx_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- reply building ----------------------------------------------------------------- */

msgpack_packer *fx_key(fx *c, const char *k) {
    c->nf++;
    fpx_pack_cstr(&c->fp, k);
    return &c->fp;
}

void fx_put_str(fx *c, const char *k, const char *v) {
    fpx_pack_cstr(fx_key(c, k), v);
}

void fx_put_int(fx *c, const char *k, int64_t v) {
    msgpack_pack_int64(fx_key(c, k), v);
}

void fx_put_bool(fx *c, const char *k, int v) {
    msgpack_packer *p = fx_key(c, k);
    if (v)
        msgpack_pack_true(p);
    else
        msgpack_pack_false(p);
}

void fx_pack_bool(msgpack_packer *p, int v) {
    if (v)
        msgpack_pack_true(p);
    else
        msgpack_pack_false(p);
}

/* Records a failure (the first one wins); returns -1. */
int fx_fail(fx *c, const char *code, const char *fmt, ...) {
    if (c->failed)
        return -1;
    c->failed = 1;
    c->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
    return -1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The reply body: {"success": ..., fields or error, "version", "timestamp"}. */
static int finish(fx *c, uint8_t **reply, size_t *reply_len) {
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    msgpack_packer p;
    msgpack_packer_init(&p, &out, msgpack_sbuffer_write);
    if (c->failed) {
        msgpack_pack_map(&p, 3 + (c->code != NULL) + c->has_details + !c->no_version);
        fpx_pack_cstr(&p, "success");
        msgpack_pack_false(&p);
        fpx_pack_cstr(&p, "error");
        fpx_pack_cstr(&p, c->error);
        if (c->code) {
            fpx_pack_cstr(&p, "error_code");
            fpx_pack_cstr(&p, c->code);
        }
        if (c->has_details) {
            fpx_pack_cstr(&p, "error_details");
            msgpack_sbuffer_write(&out, c->db.data, c->db.size);
        }
    } else {
        msgpack_pack_map(&p, 3 + c->nf);
        fpx_pack_cstr(&p, "success");
        msgpack_pack_true(&p);
        if (c->fb.size)
            msgpack_sbuffer_write(&out, c->fb.data, c->fb.size);
    }
    if (!c->failed || !c->no_version) {
        fpx_pack_cstr(&p, "version");
        fpx_pack_cstr(&p, FPX_VERSION);
    }
    fpx_pack_cstr(&p, "timestamp");
    msgpack_pack_double(&p, now_s());
    if (!out.data) {
        msgpack_sbuffer_destroy(&out);
        return -1;
    }
    *reply_len = out.size;
    *reply = (uint8_t *)msgpack_sbuffer_release(&out);
    return 0;
}

/* ---- reading the request ------------------------------------------------------------- */

/* A request field; nil reads as absent. */
const msgpack_object *fx_field(const fx *c, const char *k) {
    const msgpack_object *o = fpx_map_get(c->req, k);
    return o && o->type != MSGPACK_OBJECT_NIL ? o : NULL;
}

/* A map's integer or boolean entry; -1 (v untouched) when absent or not one. */
int fx_get_i(const msgpack_object *map, const char *k, int64_t *v) {
    const msgpack_object *o = map && map->type == MSGPACK_OBJECT_MAP ? fpx_map_get(map, k) : NULL;
    return o ? fpx_obj_int(o, v) : -1;
}

int fx_get_b(const msgpack_object *map, const char *k, int *v) {
    const msgpack_object *o = map && map->type == MSGPACK_OBJECT_MAP ? fpx_map_get(map, k) : NULL;
    return o ? fpx_obj_bool(o, v) : -1;
}

/* An integer: a msgpack integer, a float holding one, or a decimal string
 * (FAISSx passes dimension through Python's int()). */
int fx_num_int(const msgpack_object *o, int64_t *v) {
    if (!o)
        return -1;
    if (fpx_obj_int(o, v) == 0)
        return 0;
    if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) {
        double d = o->via.f64;
        if (d != floor(d) || fabs(d) > 9e15)
            return -1;
        *v = (int64_t)d;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_STR && o->via.str.size > 0 && o->via.str.size < 20) {
        char b[24], *end;
        memcpy(b, o->via.str.ptr, o->via.str.size);
        b[o->via.str.size] = 0;
        long long x = strtoll(b, &end, 10);
        if (*end || end == b)
            return -1;
        *v = x;
        return 0;
    }
    return -1;
}

int fx_num_dbl(const msgpack_object *o, double *v) {
    if (!o)
        return -1;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *v = (double)o->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = (double)o->via.i64;
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *v = o->via.f64;
        return 0;
    default:
        return -1;
    }
}

/* An optional integer field with a default. */
int fx_opt_int(fx *c, const char *k, int64_t def, int64_t *v) {
    const msgpack_object *o = fx_field(c, k);
    if (!o) {
        *v = def;
        return 0;
    }
    if (fx_num_int(o, v))
        return fx_fail(c, NULL, "Invalid %s: must be an integer", k);
    return 0;
}

/* A string field naming an index, copied NUL-terminated into out. */
int fx_need_id(fx *c, const char *k, char *out) {
    const msgpack_object *o = fx_field(c, k);
    const char *s;
    size_t n;
    if (!o)
        return fx_fail(c, NULL, "Missing %s", k);
    if (fpx_obj_str(o, &s, &n) || n == 0 || n > FX_ID_MAX || memchr(s, 0, n))
        return fx_fail(c, NULL, "Invalid %s: must be a string of 1 to %d characters", k, FX_ID_MAX);
    memcpy(out, s, n);
    out[n] = 0;
    return 0;
}

/* A matrix of numbers: a list of n lists of d numbers, or one flat list of
 * d numbers (one vector, as FAISSx's np.atleast_2d takes it). *x is malloc'd
 * n*d floats. */
int fx_need_matrix(fx *c, const char *k, int64_t *n, int64_t *d, float **x) {
    const msgpack_object *o = fx_field(c, k);
    *x = NULL;
    if (!o)
        return fx_fail(c, NULL, "Missing %s", k);
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return fx_fail(c, NULL, "Invalid %s: must be a list of vectors", k);
    const msgpack_object_array *a = &o->via.array;
    int flat = a->size > 0 && a->ptr[0].type != MSGPACK_OBJECT_ARRAY;
    size_t rows = flat ? 1 : a->size;
    size_t cols = flat ? a->size : (a->size ? a->ptr[0].via.array.size : 0);
    if (rows == 0 || cols == 0)
        return fx_fail(c, NULL, "Invalid %s: no vectors", k);
    /* the bytes received bound rows*cols: every number takes one at least */
    float *v = malloc(rows * cols * sizeof(float));
    if (!v)
        return fx_fail(c, NULL, "Server error: out of memory");
    for (size_t i = 0; i < rows; i++) {
        const msgpack_object_array *row = flat ? a : &a->ptr[i].via.array;
        if (!flat && (a->ptr[i].type != MSGPACK_OBJECT_ARRAY || row->size != cols)) {
            free(v);
            return fx_fail(c, NULL, "Invalid %s: every vector must be a list of %zu numbers", k,
                           cols);
        }
        for (size_t j = 0; j < cols; j++) {
            double f;
            if (fx_num_dbl(&row->ptr[j], &f)) {
                free(v);
                return fx_fail(c, NULL, "Invalid %s: vector components must be numbers", k);
            }
            v[i * cols + j] = (float)f;
        }
    }
    *n = (int64_t)rows;
    *d = (int64_t)cols;
    *x = v;
    return 0;
}

/* FAISSx's binary vectors: d floats a row, a float > 0.5 is bit 1, bit j in
 * byte j/8 at position j%8 (least significant first). */
uint8_t *fx_pack_bits(const float *x, int64_t n, int64_t d) {
    uint8_t *b = calloc((size_t)(n * (d / 8)) + 1, 1);
    if (!b)
        return NULL;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            if (x[i * d + j] > 0.5f)
                b[i * (d / 8) + j / 8] |= (uint8_t)(1u << (j % 8));
    return b;
}

/* ---- running our own requests ---------------------------------------------------------- */

void fx_res_free(fx_res *r) {
    if (r->decoded)
        fpx_msg_destroy(&r->m);
    if (r->buf && !r->is_static)
        free(r->buf);
    memset(r, 0, sizeof *r);
}

/* Starts one of our request headers: a map of nextra more entries after
 * operation, index_id (when given) and the caller's api_key and tenant_id. */
msgpack_packer *fx_begin(fx *c, fpx_out *o, const char *op, const char *id, unsigned nextra) {
    fpx_out_init(o);
    msgpack_packer *p = fpx_out_hdr(o);
    msgpack_pack_map(p, 1 + (id != NULL) + (c->api_key != NULL) + (c->tenant_id != NULL) + nextra);
    fpx_pack_cstr(p, "operation");
    fpx_pack_cstr(p, op);
    if (id) {
        fpx_pack_cstr(p, "index_id");
        fpx_pack_cstr(p, id);
    }
    if (c->api_key) {
        fpx_pack_cstr(p, "api_key");
        msgpack_pack_object(p, *c->api_key);
    }
    if (c->tenant_id) {
        fpx_pack_cstr(p, "tenant_id");
        msgpack_pack_object(p, *c->tenant_id);
    }
    return p;
}

void fx_pack_shape(msgpack_packer *p, int64_t n, int64_t d) {
    fpx_pack_cstr(p, "vector_shape");
    msgpack_pack_array(p, 2);
    msgpack_pack_int64(p, n);
    msgpack_pack_int64(p, d);
}

/* Runs the request o through the server's one entry point; 0 when its reply
 * says ok, else -1 with r->err. *o is released either way. */
int fx_call(fx *c, fpx_out *o, fx_res *r) {
    memset(r, 0, sizeof *r);
    uint8_t *body;
    size_t len;
    if (fpx_out_finish(o, &body, &len) != 0)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    fpx_server_handle(c->s, body, len, &r->buf, &r->len, &r->is_static);
    free(body);
    if (fpx_msg_decode(&r->m, r->buf, r->len, &r->err) != 0)
        return -1;
    r->decoded = 1;
    const msgpack_object *st = fpx_map_get(r->m.header, "status");
    if (st && fpx_obj_str_eq(st, "ok"))
        return 0;
    const msgpack_object *et = fpx_map_get(r->m.header, "error_type");
    const msgpack_object *msg = fpx_map_get(r->m.header, "message");
    const char *s = "error";
    size_t n = 5;
    r->err.type = FPX_E_INTERNAL;
    if (et && fpx_obj_str(et, &s, &n) == 0)
        r->err.type = fpx_errtype_from_name(s, n);
    if (!msg || fpx_obj_str(msg, &s, &n))
        s = "error", n = 5;
    fpx_err_set(&r->err, r->err.type, "%.*s", (int)(n > 500 ? 500 : n), s);
    return -1;
}

/* A failure of ours in FAISSx's words. Authentication and readiness have the
 * texts and codes FAISSx's client matches; anything else keeps our message
 * after the action's prefix. */
int fx_fail_from(fx *c, const fpx_err *e, const char *prefix) {
    if (e->type == FPX_E_AUTH) {
        const char *s;
        size_t n;
        c->no_version = 1;
        if (!c->api_key || (fpx_obj_str(c->api_key, &s, &n) == 0 && n == 0))
            return fx_fail(c, "AUTH_ERROR", "API key required");
        if (strstr(e->msg, "tenant"))
            return fx_fail(c, "AUTH_ERROR", "Invalid tenant ID");
        return fx_fail(c, "AUTH_ERROR", "Invalid API key");
    }
    if (e->type == FPX_E_NOT_TRAINED)
        return fx_fail(c, "NOT_TRAINED", "Index is not ready: Index requires training before use");
    return fx_fail(c, NULL, "%s%s", prefix, e->msg);
}

/* Authenticates the request by a ping of ours with its fx_key (every action
 * but ping needs one when keys are configured). */
static int authenticate(fx *c) {
    fpx_out o;
    fx_res r;
    fx_begin(c, &o, "ping", NULL, 0);
    int rc = fx_call(c, &o, &r);
    if (rc)
        fx_fail_from(c, &r.err, "");
    fx_res_free(&r);
    return rc;
}

void fx_parse_info(const msgpack_object *m, fx_info *in) {
    memset(in, 0, sizeof *in);
    in->nlist = in->nprobe = in->efs = in->efc = -1;
    const char *s;
    size_t n;
    const msgpack_object *o;
    if ((o = fpx_map_get(m, "index_id")) && fpx_obj_str(o, &s, &n) == 0 && n <= FX_ID_MAX)
        memcpy(in->id, s, n);
    if ((o = fpx_map_get(m, "index_type")) && fpx_obj_str(o, &s, &n) == 0 && n <= FX_TYPE_MAX)
        memcpy(in->type, s, n);
    fx_get_i(m, "dimension", &in->dim);
    fx_get_i(m, "ntotal", &in->ntotal);
    fx_get_b(m, "is_trained", &in->trained);
    o = fpx_map_get(m, "metric");
    in->metric = !o ? 0 : fpx_obj_str_eq(o, "IP") ? 1 : fpx_obj_str_eq(o, "Hamming") ? 2 : 0;
    const msgpack_object *p = fpx_map_get(m, "params");
    if (p && p->type == MSGPACK_OBJECT_MAP) {
        fx_get_i(p, "nlist", &in->nlist);
        fx_get_i(p, "nprobe", &in->nprobe);
        fx_get_i(p, "efSearch", &in->efs);
        fx_get_i(p, "efConstruction", &in->efc);
    }
}

/* Our get_index_info. -1 with *e on failure (not_found for a missing one). */
int fx_get_info(fx *c, const char *id, fx_info *in, fpx_err *e) {
    fpx_out o;
    fx_res r;
    fx_begin(c, &o, "get_index_info", id, 0);
    int rc = fx_call(c, &o, &r);
    if (rc == 0 && r.m.meta && r.m.meta->type == MSGPACK_OBJECT_MAP)
        fx_parse_info(r.m.meta, in);
    else if (rc == 0)
        rc = fpx_err_set(&r.err, FPX_E_INTERNAL, "no index info in the reply");
    *e = r.err;
    fx_res_free(&r);
    return rc;
}

/* get_info for an action on an existing index; the failure in FAISSx's words
 * with its "does not exist"/"not found" wording. */
int fx_need_index(fx *c, const char *id, fx_info *in, const char *missing_fmt) {
    fpx_err e;
    if (fx_get_info(c, id, in, &e) == 0)
        return 0;
    if (e.type == FPX_E_NOT_FOUND)
        return fx_fail(c, NULL, missing_fmt, id);
    return fx_fail_from(c, &e, "");
}

/* ---- dispatch ------------------------------------------------------------------------------ */

/* FAISSx's actions, each a handler of this file with its argument. */
static const struct {
    const char *name;
    int (*run)(fx *c, int arg);
    int arg;
} actions[] = {
    {"create_index", fx_act_create_index, 0},
    {"add_vectors", fx_act_add, 0},
    {"add_with_ids", fx_act_add, 1},
    {"batch_add_with_ids", fx_act_add, 3},
    {"search", fx_act_search, 0},
    {"hybrid_search", fx_act_search, 1},
    {"search_and_reconstruct", fx_act_search_and_reconstruct, 0},
    {"range_search", fx_act_range_search, 0},
    {"reconstruct", fx_act_reconstruct, 0},
    {"reconstruct_n", fx_act_reconstruct_n, 0},
    {"get_vectors", fx_act_reconstruct_n, 1},
    {"train_index", fx_act_train, 0},
    {"delete_index", fx_act_delete_index, 0},
    {"list_indices", fx_act_list, 0},
    {"list_indexes", fx_act_list, 0},
    {"get_index_stats", fx_act_index_stats, 0},
    {"get_index_status", fx_act_index_stats, 1},
    {"get_index_info", fx_act_index_stats, 2},
    {"set_parameter", fx_act_parameter, 1},
    {"get_parameter", fx_act_parameter, 0},
    {"reset", fx_act_reset, 0},
    {"clear", fx_act_clear, 0},
    {"merge_indices", fx_act_merge, 0},
    {"optimize_index", fx_act_optimize, 0},
    {"compute_clustering", fx_act_clustering, 0},
    {"remove_ids", fx_act_remove_ids, 0},
    {"replace_vector", fx_act_replace_vector, 0},
};

/* FAISSx's actions this server does not serve, named as such. */
static const char *const not_served[] = {"recluster_index", "apply_transform",
                                         "get_transform_info"};

static void run_action(fx *c, const char *a, size_t an) {
    if (an == 4 && !memcmp(a, "ping", 4)) { /* no key needed */
        fx_put_str(c, "message", "pong");
        msgpack_pack_double(fx_key(c, "time"), now_s());
        return;
    }
    if (authenticate(c))
        return;
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (an == strlen(actions[i].name) && !memcmp(a, actions[i].name, an)) {
            actions[i].run(c, actions[i].arg);
            return;
        }
    for (size_t i = 0; i < sizeof not_served / sizeof not_served[0]; i++)
        if (an == strlen(not_served[i]) && !memcmp(a, not_served[i], an)) {
            fx_fail(c, "NOT_SERVED", "Action %s is not served by faiss-proxy", not_served[i]);
            return;
        }
    fx_fail(c, NULL, "Unknown action");
}

int fpx_faissx_detect(const uint8_t *body, size_t len) {
    size_t used;
    fpx_err err;
    if (len == 0 || fpx_msgpack_check(body, len, &used, &err) != 0 || used != len)
        return 0;
    /* one whole object: ours is a preamble map followed by a header, so
     * never exactly one object, unless a lone (or broken) preamble, which
     * stays ours: a map with any of the preamble's keys */
    uint8_t t = body[0];
    int is_map = (t & 0xf0) == 0x80 || t == 0xde || t == 0xdf;
    if (!is_map) /* a lone number, string, list: a broken request of ours */
        return 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int faissx = 1;
    if (msgpack_unpack_next(&u, (const char *)body, len, &off) == MSGPACK_UNPACK_SUCCESS &&
        (fpx_map_get(&u.data, "header_size") || fpx_map_get(&u.data, "vector_size") ||
         fpx_map_get(&u.data, "metadata_size")))
        faissx = 0;
    msgpack_unpacked_destroy(&u);
    return faissx;
}

void fpx_faissx_handle(fpx_server *s, const uint8_t *body, size_t len, uint8_t **reply,
                       size_t *reply_len, int *is_static) {
    fx c;
    memset(&c, 0, sizeof c);
    c.s = s;
    msgpack_sbuffer_init(&c.fb);
    msgpack_packer_init(&c.fp, &c.fb, msgpack_sbuffer_write);
    msgpack_sbuffer_init(&c.db);
    *is_static = 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, (const char *)body, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        c.no_version = 1;
        fx_fail(&c, NULL, "Malformed request");
    } else {
        c.req = &u.data;
        c.api_key = fx_field(&c, "api_key");
        c.tenant_id = fx_field(&c, "tenant_id");
        const msgpack_object *ao = fx_field(&c, "action");
        const char *a = "";
        size_t an = 0;
        if (ao && fpx_obj_str(ao, &a, &an) == 0)
            run_action(&c, a, an);
        else
            fx_fail(&c, NULL, "Unknown action");
    }
    if (finish(&c, reply, reply_len) != 0) {
        /* out of memory even for the reply: a fixed one */
        static const uint8_t oom[] = {0x82, 0xa7, 's', 'u', 'c', 'c', 'e',  's', 's', 0xc2,
                                      0xa5, 'e',  'r', 'r', 'o', 'r', 0xad, 'o', 'u', 't',
                                      ' ',  'o',  'f', ' ', 'm', 'e', 'm',  'o', 'r', 'y'};
        *reply = (uint8_t *)oom;
        *reply_len = sizeof oom;
        *is_static = 1;
    }
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&c.fb);
    msgpack_sbuffer_destroy(&c.db);
}
