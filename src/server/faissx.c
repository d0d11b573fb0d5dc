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
 */
#include "faissx.h"

#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"

#define FX_ID_MAX 128
#define FX_TYPE_MAX 255
#define FX_K_MAX 100000
#define FX_DIM_MAX 65536

/* One FAISSx request being answered, and its reply under construction. */
typedef struct fx {
    fpx_server *s;
    const msgpack_object *req; /* the request map */
    const msgpack_object *api_key, *tenant_id;
    const char *action;
    /* success fields, packed as they come; the map header is written last */
    msgpack_sbuffer fb;
    msgpack_packer fp;
    unsigned nf;
    /* failure */
    int failed;
    char error[1000];
    const char *code;
    msgpack_sbuffer db; /* error_details, one packed map, when has_details */
    int has_details;
    int no_version; /* early exits (auth, malformed) carry no version, as FAISSx */
} fx;

/* A reply of ours to one request built here. */
typedef struct fx_res {
    uint8_t *buf;
    size_t len;
    int is_static;
    int decoded;
    fpx_msg m;
    fpx_err err; /* type FPX_OK when the reply said ok */
} fx_res;

/* What an index is, from our info map. */
typedef struct fx_info {
    char id[FX_ID_MAX + 1];
    char type[FX_TYPE_MAX + 1]; /* the factory string it was created with */
    int64_t dim, ntotal;
    int trained;
    int metric;                      /* 0 L2, 1 IP, 2 Hamming */
    int64_t nlist, nprobe, efs, efc; /* -1 when the index has no such knob */
} fx_info;

/* ---- reply building ----------------------------------------------------------------- */

static msgpack_packer *key(fx *c, const char *k) {
    c->nf++;
    fpx_pack_cstr(&c->fp, k);
    return &c->fp;
}

static void put_str(fx *c, const char *k, const char *v) {
    fpx_pack_cstr(key(c, k), v);
}

static void put_int(fx *c, const char *k, int64_t v) {
    msgpack_pack_int64(key(c, k), v);
}

static void put_bool(fx *c, const char *k, int v) {
    msgpack_packer *p = key(c, k);
    if (v)
        msgpack_pack_true(p);
    else
        msgpack_pack_false(p);
}

static void pack_bool(msgpack_packer *p, int v) {
    if (v)
        msgpack_pack_true(p);
    else
        msgpack_pack_false(p);
}

/* Records a failure (the first one wins); returns -1. */
static int fail(fx *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(fx *c, const char *code, const char *fmt, ...) {
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
static const msgpack_object *field(const fx *c, const char *k) {
    const msgpack_object *o = fpx_map_get(c->req, k);
    return o && o->type != MSGPACK_OBJECT_NIL ? o : NULL;
}

/* A map's integer or boolean entry; -1 (v untouched) when absent or not one. */
static int get_i(const msgpack_object *map, const char *k, int64_t *v) {
    const msgpack_object *o = map && map->type == MSGPACK_OBJECT_MAP ? fpx_map_get(map, k) : NULL;
    return o ? fpx_obj_int(o, v) : -1;
}

static int get_b(const msgpack_object *map, const char *k, int *v) {
    const msgpack_object *o = map && map->type == MSGPACK_OBJECT_MAP ? fpx_map_get(map, k) : NULL;
    return o ? fpx_obj_bool(o, v) : -1;
}

/* An integer: a msgpack integer, a float holding one, or a decimal string
 * (FAISSx passes dimension through Python's int()). */
static int num_int(const msgpack_object *o, int64_t *v) {
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

static int num_dbl(const msgpack_object *o, double *v) {
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
static int opt_int(fx *c, const char *k, int64_t def, int64_t *v) {
    const msgpack_object *o = field(c, k);
    if (!o) {
        *v = def;
        return 0;
    }
    if (num_int(o, v))
        return fail(c, NULL, "Invalid %s: must be an integer", k);
    return 0;
}

/* A string field naming an index, copied NUL-terminated into out. */
static int need_id(fx *c, const char *k, char *out) {
    const msgpack_object *o = field(c, k);
    const char *s;
    size_t n;
    if (!o)
        return fail(c, NULL, "Missing %s", k);
    if (fpx_obj_str(o, &s, &n) || n == 0 || n > FX_ID_MAX || memchr(s, 0, n))
        return fail(c, NULL, "Invalid %s: must be a string of 1 to %d characters", k, FX_ID_MAX);
    memcpy(out, s, n);
    out[n] = 0;
    return 0;
}

/* A matrix of numbers: a list of n lists of d numbers, or one flat list of
 * d numbers (one vector, as FAISSx's np.atleast_2d takes it). *x is malloc'd
 * n*d floats. */
static int need_matrix(fx *c, const char *k, int64_t *n, int64_t *d, float **x) {
    const msgpack_object *o = field(c, k);
    *x = NULL;
    if (!o)
        return fail(c, NULL, "Missing %s", k);
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return fail(c, NULL, "Invalid %s: must be a list of vectors", k);
    const msgpack_object_array *a = &o->via.array;
    int flat = a->size > 0 && a->ptr[0].type != MSGPACK_OBJECT_ARRAY;
    size_t rows = flat ? 1 : a->size;
    size_t cols = flat ? a->size : (a->size ? a->ptr[0].via.array.size : 0);
    if (rows == 0 || cols == 0)
        return fail(c, NULL, "Invalid %s: no vectors", k);
    /* the bytes received bound rows*cols: every number takes one at least */
    float *v = malloc(rows * cols * sizeof(float));
    if (!v)
        return fail(c, NULL, "Server error: out of memory");
    for (size_t i = 0; i < rows; i++) {
        const msgpack_object_array *row = flat ? a : &a->ptr[i].via.array;
        if (!flat && (a->ptr[i].type != MSGPACK_OBJECT_ARRAY || row->size != cols)) {
            free(v);
            return fail(c, NULL, "Invalid %s: every vector must be a list of %zu numbers", k, cols);
        }
        for (size_t j = 0; j < cols; j++) {
            double f;
            if (num_dbl(&row->ptr[j], &f)) {
                free(v);
                return fail(c, NULL, "Invalid %s: vector components must be numbers", k);
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
static uint8_t *pack_bits(const float *x, int64_t n, int64_t d) {
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

static void res_free(fx_res *r) {
    if (r->decoded)
        fpx_msg_destroy(&r->m);
    if (r->buf && !r->is_static)
        free(r->buf);
    memset(r, 0, sizeof *r);
}

/* Starts one of our request headers: a map of nextra more entries after
 * operation, index_id (when given) and the caller's api_key and tenant_id. */
static msgpack_packer *begin(fx *c, fpx_out *o, const char *op, const char *id, unsigned nextra) {
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

static void pack_shape(msgpack_packer *p, int64_t n, int64_t d) {
    fpx_pack_cstr(p, "vector_shape");
    msgpack_pack_array(p, 2);
    msgpack_pack_int64(p, n);
    msgpack_pack_int64(p, d);
}

/* Runs the request o through the server's one entry point; 0 when its reply
 * says ok, else -1 with r->err. *o is released either way. */
static int call(fx *c, fpx_out *o, fx_res *r) {
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
static int fail_from(fx *c, const fpx_err *e, const char *prefix) {
    if (e->type == FPX_E_AUTH) {
        const char *s;
        size_t n;
        c->no_version = 1;
        if (!c->api_key || (fpx_obj_str(c->api_key, &s, &n) == 0 && n == 0))
            return fail(c, "AUTH_ERROR", "API key required");
        if (strstr(e->msg, "tenant"))
            return fail(c, "AUTH_ERROR", "Invalid tenant ID");
        return fail(c, "AUTH_ERROR", "Invalid API key");
    }
    if (e->type == FPX_E_NOT_TRAINED)
        return fail(c, "NOT_TRAINED", "Index is not ready: Index requires training before use");
    return fail(c, NULL, "%s%s", prefix, e->msg);
}

/* Authenticates the request by a ping of ours with its key (every action
 * but ping needs one when keys are configured). */
static int authenticate(fx *c) {
    fpx_out o;
    fx_res r;
    begin(c, &o, "ping", NULL, 0);
    int rc = call(c, &o, &r);
    if (rc)
        fail_from(c, &r.err, "");
    res_free(&r);
    return rc;
}

static void parse_info(const msgpack_object *m, fx_info *in) {
    memset(in, 0, sizeof *in);
    in->nlist = in->nprobe = in->efs = in->efc = -1;
    const char *s;
    size_t n;
    const msgpack_object *o;
    if ((o = fpx_map_get(m, "index_id")) && fpx_obj_str(o, &s, &n) == 0 && n <= FX_ID_MAX)
        memcpy(in->id, s, n);
    if ((o = fpx_map_get(m, "index_type")) && fpx_obj_str(o, &s, &n) == 0 && n <= FX_TYPE_MAX)
        memcpy(in->type, s, n);
    get_i(m, "dimension", &in->dim);
    get_i(m, "ntotal", &in->ntotal);
    get_b(m, "is_trained", &in->trained);
    o = fpx_map_get(m, "metric");
    in->metric = !o ? 0 : fpx_obj_str_eq(o, "IP") ? 1 : fpx_obj_str_eq(o, "Hamming") ? 2 : 0;
    const msgpack_object *p = fpx_map_get(m, "params");
    if (p && p->type == MSGPACK_OBJECT_MAP) {
        get_i(p, "nlist", &in->nlist);
        get_i(p, "nprobe", &in->nprobe);
        get_i(p, "efSearch", &in->efs);
        get_i(p, "efConstruction", &in->efc);
    }
}

/* Our get_index_info. -1 with *e on failure (not_found for a missing one). */
static int get_info(fx *c, const char *id, fx_info *in, fpx_err *e) {
    fpx_out o;
    fx_res r;
    begin(c, &o, "get_index_info", id, 0);
    int rc = call(c, &o, &r);
    if (rc == 0 && r.m.meta && r.m.meta->type == MSGPACK_OBJECT_MAP)
        parse_info(r.m.meta, in);
    else if (rc == 0)
        rc = fpx_err_set(&r.err, FPX_E_INTERNAL, "no index info in the reply");
    *e = r.err;
    res_free(&r);
    return rc;
}

/* get_info for an action on an existing index; the failure in FAISSx's words
 * with its "does not exist"/"not found" wording. */
static int need_index(fx *c, const char *id, fx_info *in, const char *missing_fmt) {
    fpx_err e;
    if (get_info(c, id, in, &e) == 0)
        return 0;
    if (e.type == FPX_E_NOT_FOUND)
        return fail(c, NULL, missing_fmt, id);
    return fail_from(c, &e, "");
}

/* ---- index types ------------------------------------------------------------------------- */

static int is_binary(const fx_info *in) {
    return in->metric == 2;
}

static int starts(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

/* Digits only (at least one). */
static int all_digits(const char *s) {
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* FAISS's ScalarQuantizer for FAISSx's SQ<q>. as_qtype: q is the raw FAISS
 * QuantizerType number (IVF<n>_SQ<q>), else the bits FAISSx's
 * IndexScalarQuantizer client names (SQ8, SQ4, SQ16 = fp16, SQ6). */
static const char *sq_name(long q, int as_qtype) {
    static const char *const by_qtype[] = {"SQ8",    "SQ4",        "SQ8_uniform", "SQ4_uniform",
                                           "SQfp16", "SQ8_direct", "SQ6"};
    if (q == 8)
        return "SQ8";
    if (q == 16)
        return "SQfp16";
    if (!as_qtype && q == 4)
        return "SQ4";
    if (!as_qtype && q == 6)
        return "SQ6";
    return q >= 0 && q <= 6 ? by_qtype[q] : NULL;
}

/* Rewrites a genuine FAISS factory string FAISSx-style: "L2" components are
 * "Flat", "NORM"/"L2NORM" are "L2norm". */
static int rewrite_factory(const char *in, char *out, size_t cap) {
    size_t w = 0;
    const char *p = in;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *t = NULL;
        if (n == 2 && !strncmp(p, "L2", 2))
            t = "Flat";
        else if ((n == 4 && !strncmp(p, "NORM", 4)) || (n == 6 && !strncmp(p, "L2NORM", 6)))
            t = "L2norm";
        int k = t ? snprintf(out + w, cap - w, "%s%s", t, e ? "," : "")
                  : snprintf(out + w, cap - w, "%.*s%s", (int)n, p, e ? "," : "");
        if (k < 0 || (size_t)k >= cap - w)
            return -1;
        w += (size_t)k;
        p += n + (e ? 1 : 0);
    }
    return 0;
}

/* Maps a FAISSx index_type (without an IDMap prefix) to the factory string
 * our server builds, its metric and whether it is binary. -1 when the string
 * is none of FAISSx's forms; the server judges the factory strings. */
static int map_type(const char *t, char *out, size_t cap, int *ip, int *binary) {
    char s[FX_TYPE_MAX + 1];
    snprintf(s, sizeof s, "%s", t);
    size_t n = strlen(s);
    *ip = 0;
    *binary = 0;
    if (n > 3 && !strcmp(s + n - 3, "_IP")) {
        *ip = 1;
        s[n -= 3] = 0;
    }
    if (starts(s, "BINARY")) {
        const char *r = s + 6;
        *binary = 1;
        if (!*r || !strcmp(r, "_FLAT"))
            return snprintf(out, cap, "BFlat"), 0;
        if (starts(r, "_IVF") && (!r[4] || all_digits(r + 4)))
            return snprintf(out, cap, "BIVF%s", r[4] ? r + 4 : "100"), 0;
        if (starts(r, "_HASH") && (!r[5] || all_digits(r + 5)))
            return snprintf(out, cap, "BHash%s", r[5] ? r + 5 : "8"), 0;
        return -1;
    }
    if (!strcmp(s, "L2") || !strcmp(s, "Flat") || !strcmp(s, "FLAT"))
        return snprintf(out, cap, "Flat"), 0;
    if (!strcmp(s, "IP")) {
        *ip = 1;
        return snprintf(out, cap, "Flat"), 0;
    }
    if (!strcmp(s, "HNSW"))
        return snprintf(out, cap, "HNSW32"), 0;
    if (!strcmp(s, "IVF"))
        return snprintf(out, cap, "IVF100,Flat"), 0;
    if (starts(s, "IVF")) {
        char *u = strchr(s, '_');
        if (u && starts(u, "_SQ") && all_digits(u + 3)) { /* IVF<n>_SQ<qtype> */
            *u = 0;
            const char *q = sq_name(strtol(u + 3, NULL, 10), 1);
            if (!all_digits(s + 3) || !q)
                return -1;
            return snprintf(out, cap, "IVF%s,%s", s + 3, q), 0;
        }
        if (all_digits(s + 3))
            return snprintf(out, cap, "IVF%s,Flat", s + 3), 0;
    }
    if (!strcmp(s, "PQ"))
        return snprintf(out, cap, "PQ8"), 0;
    if (starts(s, "SQ") && all_digits(s + 2)) {
        const char *q = sq_name(strtol(s + 2, NULL, 10), 0);
        return q ? (snprintf(out, cap, "%s", q), 0) : -1;
    }
    return rewrite_factory(s, out, cap);
}

/* The FAISS class FAISSx reports for an index of ours. */
static const char *class_name(const fx_info *in) {
    const char *t = in->type;
    if (starts(t, "IDMap2,"))
        return "IndexIDMap2";
    if (starts(t, "IDMap,"))
        return "IndexIDMap";
    if (starts(t, "BFlat") || !strcmp(t, "IndexBinaryFlat"))
        return "IndexBinaryFlat";
    if (starts(t, "BIVF"))
        return "IndexBinaryIVF";
    if (starts(t, "BHash"))
        return "IndexBinaryHash";
    if (starts(t, "BHNSW"))
        return "IndexBinaryHNSW";
    if (!strcmp(t, "Flat") || !strcmp(t, "L2") || !strcmp(t, "IP") || starts(t, "IndexFlat"))
        return in->metric == 1 ? "IndexFlatIP" : "IndexFlatL2";
    if (starts(t, "HNSW"))
        return "IndexHNSWFlat";
    if (starts(t, "IVF"))
        return strstr(t, ",PQ")     ? "IndexIVFPQ"
               : strstr(t, ",SQ")   ? "IndexIVFScalarQuantizer"
               : strstr(t, ",Flat") ? "IndexIVFFlat"
                                    : "IndexIVF";
    if (starts(t, "PQ"))
        return "IndexPQ";
    if (starts(t, "SQ"))
        return "IndexScalarQuantizer";
    if (starts(t, "LSH"))
        return "IndexLSH";
    if (strchr(t, ','))
        return "IndexPreTransform";
    return "Index";
}

/* The factory string under an IDMap prefix. */
static const char *base_type(const char *t) {
    if (starts(t, "IDMap2,"))
        return t + 7;
    if (starts(t, "IDMap,"))
        return t + 6;
    return t;
}

/* FAISS's MetricType numbers, which FAISSx reports: IP 0, L2 1. */
static int faiss_metric(const fx_info *in) {
    return in->metric == 1 ? 0 : 1;
}

static int needs_training(const fx_info *in) {
    const char *b = base_type(in->type);
    return strstr(b, "IVF") || strstr(b, "PQ") || strstr(b, "SQ4") || strstr(b, "SQ6") ||
           strstr(b, "SQ8,") || !strcmp(b, "SQ8") || strstr(b, "uniform") || strstr(b, "PCA") ||
           strstr(b, "ITQ");
}

/* ---- the actions ----------------------------------------------------------------------------- */

/* The type-specific keys of a create_index reply (also clear's). */
static void put_created(fx *c, const fx_info *in, const char *requested, int idmap, int idmap2,
                        const char *base_id) {
    const char *b = base_type(in->type);
    put_str(c, "message", "Index created successfully");
    if (!is_binary(in))
        put_str(c, "index_id", in->id);
    put_int(c, "dimension", in->dim);
    put_bool(c, "is_trained", in->trained);
    if (idmap) {
        put_str(c, "type", requested);
        put_str(c, "base_index_id", base_id);
        put_bool(c, "is_idmap", 1);
        put_bool(c, "is_idmap2", idmap2);
        return;
    }
    if (is_binary(in)) {
        put_str(c, "type",
                starts(b, "BIVF")    ? "BINARY_IVF"
                : starts(b, "BHash") ? "BINARY_HASH"
                                     : "BINARY_FLAT");
        put_int(c, "dimension_bytes", in->dim / 8);
        put_bool(c, "is_binary", 1);
        put_bool(c, "requires_training", !in->trained);
        if (in->nlist > 0)
            put_int(c, "nlist", in->nlist);
        if (starts(b, "BHash"))
            put_int(c, "bits_per_dim", strtol(b + 5, NULL, 10));
        return;
    }
    const char *cls = class_name(in);
    put_str(c, "type", cls);
    if (starts(b, "HNSW")) {
        put_int(c, "M", strtol(b + 4, NULL, 10));
        put_int(c, "efConstruction", in->efc);
        put_int(c, "efSearch", in->efs);
    }
    if (in->nlist > 0)
        put_int(c, "nlist", in->nlist);
    const char *pq = strstr(b, "PQ");
    if (pq) {
        long m = strtol(pq + 2, NULL, 10);
        const char *x = pq + 2 + strspn(pq + 2, "0123456789");
        put_int(c, "M", m);
        put_int(c, "nbits", *x == 'x' ? strtol(x + 1, NULL, 10) : 8);
    }
    if (strcmp(cls, "IndexFlatL2") && strcmp(cls, "IndexFlatIP"))
        put_int(c, "metric_type", faiss_metric(in));
    if (!in->trained)
        put_bool(c, "requires_training", 1);
}

/* Our create_index of the given factory string; *in is the new index's info. */
static int create(fx *c, const char *id, int64_t dim, const char *factory, int ip, fx_info *in) {
    fpx_out o;
    fx_res r;
    int binary = factory[0] == 'B' || starts(factory, "IDMap,B") || starts(factory, "IDMap2,B");
    msgpack_packer *p = begin(c, &o, "create_index", id, 2 + !binary);
    fpx_pack_cstr(p, "dimension");
    msgpack_pack_int64(p, dim);
    fpx_pack_cstr(p, "index_type");
    fpx_pack_cstr(p, factory);
    if (!binary) {
        fpx_pack_cstr(p, "metric");
        fpx_pack_cstr(p, ip ? "IP" : "L2");
    }
    int rc = call(c, &o, &r);
    if (rc == 0 && r.m.meta && r.m.meta->type == MSGPACK_OBJECT_MAP)
        parse_info(r.m.meta, in);
    else if (rc == 0)
        rc = fpx_err_set(&r.err, FPX_E_INTERNAL, "no index info in the reply");
    if (rc) {
        if (r.err.type == FPX_E_EXISTS)
            fail(c, NULL, "Index %s already exists", id);
        else if (r.err.type == FPX_E_VALIDATION && !strstr(r.err.msg, "dimension") &&
                 !strstr(r.err.msg, "name"))
            fail(c, NULL, "Unsupported index type: %s (%s)", factory, r.err.msg);
        else
            fail_from(c, &r.err, "");
    }
    res_free(&r);
    return rc;
}

static int act_create_index(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1], factory[2 * FX_TYPE_MAX + 80], base_id[FX_ID_MAX + 1] = "";
    int64_t dim;
    if (need_id(c, "index_id", id))
        return -1;
    const msgpack_object *dobj = field(c, "dimension");
    if (!dobj)
        dim = 0;
    else if (num_int(dobj, &dim))
        return fail(c, NULL, "Invalid dimension: must be an integer");
    if (dim < 1 || dim > FX_DIM_MAX)
        return fail(c, NULL, "Dimension %lld out of range (1-%d)", (long long)dim, FX_DIM_MAX);
    const char *t = "L2";
    size_t tn = 2;
    const msgpack_object *tobj = field(c, "index_type");
    if (tobj && (fpx_obj_str(tobj, &t, &tn) || tn == 0 || tn > FX_TYPE_MAX))
        return fail(c, NULL, "Invalid index_type: must be a string of 1 to %d characters",
                    FX_TYPE_MAX);
    char type[FX_TYPE_MAX + 1];
    memcpy(type, t, tn);
    type[tn] = 0;
    int idmap = starts(type, "IDMap:") || starts(type, "IDMap2:");
    int idmap2 = starts(type, "IDMap2:");
    const char *rest = idmap ? strchr(type, ':') + 1 : type;
    int ip = 0, binary = 0;
    char mapped[FX_TYPE_MAX + 64];
    if (idmap) {
        /* IDMap:<x>: x names an existing index (FAISSx's client wraps the
         * index it just made) or is a type. The wrapper is an index of its
         * own here, of the base's type and metric: our labels are the ids. */
        fx_info b;
        fpx_err e;
        size_t rn = strlen(rest);
        memcpy(base_id, rest, rn > FX_ID_MAX ? FX_ID_MAX : rn);
        base_id[rn > FX_ID_MAX ? FX_ID_MAX : rn] = 0;
        if (*rest && strlen(rest) <= FX_ID_MAX && get_info(c, rest, &b, &e) == 0) {
            if (b.dim != dim)
                return fail(c, NULL, "Dimension mismatch: base index %s has %lld, requested %lld",
                            rest, (long long)b.dim, (long long)dim);
            snprintf(mapped, sizeof mapped, "%s", base_type(b.type));
            ip = b.metric == 1;
            binary = b.metric == 2;
        } else if (c->failed) {
            return -1;
        } else if (map_type(*rest ? rest : "L2", mapped, sizeof mapped, &ip, &binary)) {
            return fail(c, NULL, "Unsupported index type: %s", type);
        }
        if (binary)
            return fail(c, NULL, "Unsupported index type: %s (no IDMap over binary indexes)", type);
        snprintf(factory, sizeof factory, "%s,%s", idmap2 ? "IDMap2" : "IDMap", mapped);
    } else if (map_type(type, factory, sizeof factory, &ip, &binary)) {
        return fail(c, NULL, "Unsupported index type: %s", type);
    }
    if (binary && dim % 8)
        return fail(c, NULL, "Error creating binary index: dimension %lld is not a multiple of 8",
                    (long long)dim);
    fx_info in;
    if (create(c, id, dim, factory, ip, &in))
        return -1;
    put_created(c, &in, type, idmap, idmap2, base_id);
    return 0;
}

/* Adds n vectors (binary ones packed to bits), with ids when given. */
static int add(fx *c, const fx_info *in, const float *x, int64_t n, const int64_t *ids,
               int64_t *ntotal) {
    fpx_out o;
    fx_res r;
    int bin = is_binary(in);
    int64_t rowb = bin ? in->dim / 8 : in->dim * 4;
    msgpack_packer *p = begin(c, &o, "add_vectors", in->id, 1 + bin + (ids != NULL));
    pack_shape(p, n, bin ? in->dim / 8 : in->dim);
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
            uint8_t *bits = pack_bits(x, n, in->dim);
            if (bits)
                memcpy(d, bits, (size_t)(n * rowb));
            free(bits);
        } else {
            memcpy(d, x, (size_t)(n * rowb));
        }
        if (ids)
            memcpy(d + n * rowb, ids, (size_t)n * 8);
    }
    int rc = call(c, &o, &r);
    if (rc == 0)
        get_i(r.m.meta, "ntotal", ntotal);
    else
        fail_from(c, &r.err, "Error adding vectors: ");
    res_free(&r);
    return rc;
}

/* add_vectors, add_with_ids, batch_add_with_ids: vectors, and ids (which our
 * server takes on every index type) when given or required. */
static int add_vectors(fx *c, int ids_required, int full_reply) {
    char id[FX_ID_MAX + 1];
    fx_info in;
    if (need_id(c, "index_id", id) || need_index(c, id, &in, "Index %s does not exist"))
        return -1;
    int64_t n, d, *ids = NULL, ntotal = in.ntotal;
    float *x;
    if (need_matrix(c, "vectors", &n, &d, &x))
        return -1;
    int rc = -1;
    if (d != in.dim) {
        fail(c, NULL, "Vector dimension mismatch: expected %lld, got %lld", (long long)in.dim,
             (long long)d);
        goto out;
    }
    const msgpack_object *io = field(c, "ids");
    if (!io && ids_required) {
        fail(c, NULL, "Missing ids");
        goto out;
    }
    if (io) {
        if (io->type != MSGPACK_OBJECT_ARRAY || io->via.array.size != (uint32_t)n) {
            fail(c, NULL, "Number of IDs (%u) does not match number of vectors (%lld)",
                 io->type == MSGPACK_OBJECT_ARRAY ? io->via.array.size : 0, (long long)n);
            goto out;
        }
        if (!(ids = malloc((size_t)n * sizeof *ids))) {
            fail(c, NULL, "Server error: out of memory");
            goto out;
        }
        for (int64_t i = 0; i < n; i++)
            if (num_int(&io->via.array.ptr[i], &ids[i])) {
                fail(c, NULL, "Invalid ids: must be integers");
                goto out;
            }
    }
    if (add(c, &in, x, n, ids, &ntotal))
        goto out;
    rc = 0;
    if (full_reply) {
        char msg[FX_ID_MAX + 64];
        snprintf(msg, sizeof msg, "Added %lld vectors to index %s", (long long)n, id);
        put_str(c, "message", msg);
    }
    put_int(c, "ntotal", ntotal);
    put_int(c, "total", ntotal);
    put_int(c, "count", n);
out:
    free(x);
    free(ids);
    return rc;
}

/* Writes the FAISSx search params nprobe / efSearch (ef_search, ef) into the
 * index for good, as FAISSx does; params the index has no knob for are
 * ignored, as there. */
static int set_knob(fx *c, const fx_info *in, const char *name, int64_t v) {
    fpx_out o;
    fx_res r;
    msgpack_packer *p = begin(c, &o, "set_params", in->id, 2);
    fpx_pack_cstr(p, "name");
    fpx_pack_cstr(p, name);
    fpx_pack_cstr(p, "value");
    msgpack_pack_int64(p, v);
    int rc = call(c, &o, &r);
    if (rc)
        fail_from(c, &r.err, "");
    res_free(&r);
    return rc;
}

static int apply_search_params(fx *c, const fx_info *in) {
    const msgpack_object *p = field(c, "params");
    if (!p)
        return 0;
    if (p->type != MSGPACK_OBJECT_MAP)
        return fail(c, NULL, "Invalid params: must be a map");
    int64_t v;
    const msgpack_object *o = fpx_map_get(p, "nprobe");
    if (o && in->nprobe >= 0) {
        if (num_int(o, &v))
            return fail(c, NULL, "Invalid nprobe: must be an integer");
        if (set_knob(c, in, "nprobe", v))
            return -1;
    }
    static const char *const ef[] = {"efSearch", "ef_search", "ef"};
    for (int i = 0; i < 3; i++)
        if ((o = fpx_map_get(p, ef[i])) && in->efs >= 0) {
            if (num_int(o, &v))
                return fail(c, NULL, "Invalid %s: must be an integer", ef[i]);
            return set_knob(c, in, "efSearch", v);
        }
    return 0;
}

/* Packs n*d float32 queries (or bits, for a binary index) into a request. */
static void pack_queries(fpx_out *o, msgpack_packer *p, const fx_info *in, const float *x,
                         int64_t n) {
    int bin = is_binary(in);
    pack_shape(p, n, bin ? in->dim / 8 : in->dim);
    if (bin) {
        fpx_pack_cstr(p, "dtype");
        fpx_pack_cstr(p, "uint8");
    }
    size_t bytes = (size_t)(n * (bin ? in->dim / 8 : in->dim * 4));
    uint8_t *d = fpx_out_data(o, bytes);
    if (!d)
        return;
    if (bin) {
        uint8_t *bits = pack_bits(x, n, in->dim);
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
    if (need_matrix(c, "query_vectors", n, &d, x))
        return -1;
    if (d != in->dim) {
        free(*x);
        *x = NULL;
        return fail(c, NULL, "Query dimension mismatch: expected %lld, got %lld",
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
    msgpack_packer *p = begin(c, &o, "search", in->id, 2 + is_binary(in));
    fpx_pack_cstr(p, "k");
    msgpack_pack_int64(p, k);
    pack_queries(&o, p, in, x, n);
    if (filter)
        msgpack_pack_object(fpx_out_meta(&o), *filter);
    if (call(c, &o, r))
        return fail_from(c, &r->err, "Error searching index: ");
    if (r->m.body.data_size != (size_t)(n * k * 12))
        return fail(c, NULL, "Error searching index: reply of %zu bytes for %lld x %lld hits",
                    r->m.body.data_size, (long long)n, (long long)k);
    return 0;
}

static double hit_dist(const fx_info *in, const uint8_t *data, int64_t i) {
    if (is_binary(in)) {
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
    if (is_binary(in))
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
    if (need_id(c, "index_id", id) || opt_int(c, "k", 10, k))
        return -1;
    if (*k < 1 || *k > FX_K_MAX)
        return fail(c, NULL, "k=%lld out of range (1-%d)", (long long)*k, FX_K_MAX);
    if (need_index(c, id, in, "Index %s does not exist") || need_queries(c, in, n, x))
        return -1;
    return apply_search_params(c, in);
}

/* add_vectors (arg 0), add_with_ids (1: ids required), batch_add_with_ids (3: ids
 * required, the fuller reply). */
static int act_add(fx *c, int arg) {
    return add_vectors(c, arg & 1, arg == 0 || (arg & 2));
}

static int act_search(fx *c, int hybrid) {
    fx_info in;
    int64_t n, k;
    float *x;
    const msgpack_object *filter = NULL;
    if (hybrid && (filter = field(c, "metadata_filter")) && filter->type != MSGPACK_OBJECT_MAP)
        return fail(c, NULL, "Invalid metadata_filter: must be a map");
    if (search_common(c, &in, &n, &k, &x)) {
        free(x);
        return -1;
    }
    fx_res r;
    int rc = search(c, &in, x, n, k, filter, &r);
    free(x);
    if (rc == 0) {
        const uint8_t *d = r.m.body.data;
        msgpack_packer *p = key(c, "results");
        msgpack_pack_array(p, (size_t)n);
        for (int64_t q = 0; q < n; q++) {
            msgpack_pack_map(p, 2);
            pack_query_hits(p, &in, d, n, k, q);
        }
        put_int(c, "num_queries", n);
        put_int(c, "k", k);
        if (is_binary(&in))
            put_bool(c, "is_binary", 1);
    }
    res_free(&r);
    return rc;
}

/* One vector of ours (float32 or uint8 bits) as FAISSx's list of floats. */
static void pack_vector(msgpack_packer *p, const fx_info *in, const uint8_t *row) {
    msgpack_pack_array(p, (size_t)in->dim);
    for (int64_t j = 0; j < in->dim; j++) {
        if (is_binary(in)) {
            msgpack_pack_double(p, (row[j / 8] >> (j % 8)) & 1 ? 1.0 : 0.0);
        } else {
            float f;
            memcpy(&f, row + j * 4, 4);
            msgpack_pack_double(p, f);
        }
    }
}

static size_t row_bytes(const fx_info *in) {
    return (size_t)(is_binary(in) ? in->dim / 8 : in->dim * 4);
}

/* Our reconstruct of one label, into out (row_bytes). */
static int reconstruct(fx *c, const fx_info *in, int64_t label, uint8_t *out, fpx_err *e) {
    fpx_out o;
    fx_res r;
    msgpack_packer *p = begin(c, &o, "reconstruct", in->id, 1);
    fpx_pack_cstr(p, "label");
    msgpack_pack_int64(p, label);
    int rc = call(c, &o, &r);
    if (rc == 0 && r.m.body.data_size != row_bytes(in))
        rc = fpx_err_set(&r.err, FPX_E_INTERNAL, "reconstruct reply of %zu bytes",
                         r.m.body.data_size);
    if (rc == 0)
        memcpy(out, r.m.body.data, row_bytes(in));
    *e = r.err;
    res_free(&r);
    return rc;
}

static int act_search_and_reconstruct(fx *c, int arg) {
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
    uint8_t *row = malloc(row_bytes(&in));
    if (rc == 0 && !row)
        rc = fail(c, NULL, "Server error: out of memory");
    if (rc == 0) {
        const uint8_t *d = r.m.body.data;
        msgpack_packer *p = key(c, "results");
        msgpack_pack_array(p, (size_t)n);
        for (int64_t q = 0; q < n && rc == 0; q++) {
            msgpack_pack_map(p, 3);
            pack_query_hits(p, &in, d, n, k, q);
            fpx_pack_cstr(p, "vectors");
            msgpack_pack_array(p, (size_t)k);
            for (int64_t j = 0; j < k && rc == 0; j++) {
                int64_t l = hit_label(d, n * k, q * k + j);
                fpx_err e;
                memset(row, 0, row_bytes(&in)); /* a missing hit reads as zeros */
                if (l >= 0 && reconstruct(c, &in, l, row, &e) != 0) {
                    /* IVF reconstructs by label only through a direct map:
                     * give the index one (durably) and try again */
                    if (e.type == FPX_E_FAISS && in.nlist > 0 && !c->failed &&
                        set_knob(c, &in, "direct_map", 2) == 0 &&
                        reconstruct(c, &in, l, row, &e) == 0)
                        ;
                    else
                        rc = c->failed ? -1 : fail_from(c, &e, "Error in search_and_reconstruct: ");
                }
                pack_vector(p, &in, row);
            }
        }
        put_int(c, "num_queries", n);
        put_int(c, "k", k);
    }
    free(row);
    res_free(&r);
    return rc;
}

static int act_range_search(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t n;
    float *x = NULL;
    double radius;
    if (need_id(c, "index_id", id))
        return -1;
    if (num_dbl(field(c, "radius"), &radius))
        return fail(c, NULL, "Invalid radius: must be a number");
    if (need_index(c, id, &in, "Index %s does not exist") || need_queries(c, &in, &n, &x) ||
        apply_search_params(c, &in)) {
        free(x);
        return -1;
    }
    fpx_out o;
    fx_res r;
    msgpack_packer *p = begin(c, &o, "range_search", id, 2 + is_binary(&in));
    fpx_pack_cstr(p, "radius");
    if (is_binary(&in))
        msgpack_pack_int64(p, (int64_t)radius);
    else
        msgpack_pack_double(p, radius);
    pack_queries(&o, p, &in, x, n);
    free(x);
    int rc = call(c, &o, &r);
    int64_t nq = 0, nres = 0;
    if (rc)
        fail_from(c, &r.err, "Error in range_search: ");
    else if (get_i(r.m.header, "nq", &nq) || get_i(r.m.header, "nres", &nres) || nq != n ||
             nres < 0 || r.m.body.data_size != (size_t)((nq + 1) * 8 + nres * 12))
        rc = fail(c, NULL, "Error in range_search: malformed reply");
    if (rc == 0) {
        /* the superset of the shapes FAISSx's index classes read: per query
         * (num_results and count alike) and flat (lims, distances, indices) */
        const uint8_t *d = r.m.body.data;
        const uint8_t *labs = d + (nq + 1) * 8, *dist = labs + nres * 8;
        int64_t lo, hi;
        msgpack_packer *pk = key(c, "results");
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
        pk = key(c, "lims");
        msgpack_pack_array(pk, (size_t)nq + 1);
        for (int64_t q = 0; q <= nq; q++) {
            memcpy(&lo, d + q * 8, 8);
            msgpack_pack_int64(pk, lo);
        }
        pk = key(c, "indices");
        msgpack_pack_array(pk, (size_t)nres);
        for (int64_t j = 0; j < nres; j++)
            msgpack_pack_int64(pk, hit_label(labs, 0, j));
        pk = key(c, "distances");
        msgpack_pack_array(pk, (size_t)nres);
        for (int64_t j = 0; j < nres; j++)
            pack_hit_dist(pk, &in, hit_dist(&(fx_info){.metric = 0}, dist, j));
        put_int(c, "num_queries", nq);
        msgpack_pack_double(key(c, "radius"), radius);
    }
    res_free(&r);
    return rc;
}

static int act_reconstruct(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t label;
    const msgpack_object *lo = field(c, "id") ? field(c, "id") : field(c, "idx");
    if (need_id(c, "index_id", id))
        return -1;
    if (!lo)
        return fail(c, NULL, "Missing id");
    if (num_int(lo, &label))
        return fail(c, NULL, "Invalid id: must be an integer");
    if (need_index(c, id, &in, "Index %s not found"))
        return -1;
    uint8_t *row = malloc(row_bytes(&in));
    if (!row)
        return fail(c, NULL, "Server error: out of memory");
    fpx_err e;
    int rc = reconstruct(c, &in, label, row, &e);
    if (rc == 0)
        pack_vector(key(c, "vector"), &in, row);
    else if (e.type == FPX_E_NOT_FOUND && !strstr(e.msg, "not found"))
        fail(c, NULL, "Vector index %lld out of range (0-%lld)", (long long)label,
             (long long)in.ntotal - 1);
    else
        fail_from(c, &e, "Error reconstructing vector: ");
    free(row);
    return rc;
}

/* Our reconstruct_n of labels start .. start+num-1; r holds the reply. */
static int reconstruct_n(fx *c, const fx_info *in, int64_t start, int64_t num, fx_res *r) {
    fpx_out o;
    msgpack_packer *p = begin(c, &o, "reconstruct_n", in->id, 2);
    fpx_pack_cstr(p, "i0");
    msgpack_pack_int64(p, start);
    fpx_pack_cstr(p, "n");
    msgpack_pack_int64(p, num);
    if (call(c, &o, r))
        return -1;
    if (r->m.body.data_size != (size_t)num * row_bytes(in))
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "reconstruct_n reply of %zu bytes",
                           r->m.body.data_size);
    return 0;
}

/* reconstruct_n (and get_vectors, its intended sibling). */
static int act_reconstruct_n(fx *c, int get_vectors) {
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t start, num;
    if (need_id(c, "index_id", id) || opt_int(c, "start_idx", 0, &start) ||
        need_index(c, id, &in, "Index %s not found"))
        return -1;
    if (opt_int(c, get_vectors ? "limit" : "num_vectors", get_vectors ? in.ntotal - start : 10,
                &num))
        return -1;
    if (start < 0)
        return fail(c, NULL, "Starting index cannot be negative");
    if (get_vectors && num == 0 && start <= in.ntotal) {
        msgpack_pack_array(key(c, "vectors"), 0);
        put_int(c, "count", 0);
        put_int(c, "start_idx", start);
        put_int(c, "ntotal", in.ntotal);
        return 0;
    }
    if (num <= 0)
        return fail(c, NULL, "Number of vectors must be positive");
    if (start + num > in.ntotal)
        return fail(c, NULL, "Range %lld:%lld exceeds index size %lld", (long long)start,
                    (long long)(start + num), (long long)in.ntotal);
    fx_res r;
    int rc = reconstruct_n(c, &in, start, num, &r);
    if (rc == 0) {
        msgpack_packer *p = key(c, "vectors");
        msgpack_pack_array(p, (size_t)num);
        for (int64_t i = 0; i < num; i++)
            pack_vector(p, &in, r.m.body.data + (size_t)i * row_bytes(&in));
        put_int(c, "start_idx", start);
        put_int(c, get_vectors ? "count" : "num_vectors", num);
        if (get_vectors)
            put_int(c, "ntotal", in.ntotal);
    } else {
        fail_from(c, &r.err, "");
    }
    res_free(&r);
    return rc;
}

static int act_train(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t n, d;
    float *x;
    if (need_id(c, "index_id", id) || need_index(c, id, &in, "Index %s does not exist") ||
        need_matrix(c, "training_vectors", &n, &d, &x))
        return -1;
    if (d != in.dim) {
        free(x);
        return fail(c, NULL, "Training vector dimension mismatch: expected %lld, got %lld",
                    (long long)in.dim, (long long)d);
    }
    if (in.trained) {
        free(x);
        put_str(c, "message", "This index type does not require training");
        put_str(c, "index_id", id);
        put_bool(c, "is_trained", 1);
        put_bool(c, "training_skipped", 1);
        msgpack_packer *p = key(c, "training_info");
        msgpack_pack_map(p, 2);
        fpx_pack_cstr(p, "requires_training");
        msgpack_pack_false(p);
        fpx_pack_cstr(p, "is_trained");
        msgpack_pack_true(p);
        return 0;
    }
    fpx_out o;
    fx_res r;
    msgpack_packer *p = begin(c, &o, "train", id, 1 + is_binary(&in));
    pack_queries(&o, p, &in, x, n);
    free(x);
    int rc = call(c, &o, &r), trained = 0;
    if (rc == 0) {
        get_b(r.m.meta, "is_trained", &trained);
        put_str(c, "message", "Index successfully trained");
        put_str(c, "index_id", id);
        put_int(c, "trained_with", n);
        put_bool(c, "is_trained", trained);
        put_bool(c, "has_enough_vectors", in.nlist < 0 || n >= in.nlist);
        msgpack_pack_nil(key(c, "recommendation"));
        p = key(c, "training_info");
        msgpack_pack_map(p, 2);
        fpx_pack_cstr(p, "requires_training");
        msgpack_pack_true(p);
        fpx_pack_cstr(p, "is_trained");
        pack_bool(p, trained);
    } else if (r.err.type == FPX_E_FAISS || r.err.type == FPX_E_VALIDATION) {
        fail(c, "TRAINING_ERROR", "Training error: %s", r.err.msg);
        msgpack_packer dp;
        msgpack_packer_init(&dp, &c->db, msgpack_sbuffer_write);
        msgpack_pack_map(&dp, 2);
        fpx_pack_cstr(&dp, "index_id");
        fpx_pack_cstr(&dp, id);
        fpx_pack_cstr(&dp, "vector_count");
        msgpack_pack_int64(&dp, n);
        c->has_details = 1;
    } else {
        fail_from(c, &r.err, "Training error: ");
    }
    res_free(&r);
    return rc;
}

/* Our delete_index; not found reads FAISSx's way. */
static int drop(fx *c, const char *id) {
    fpx_out o;
    fx_res r;
    begin(c, &o, "delete_index", id, 0);
    int rc = call(c, &o, &r);
    if (rc && r.err.type == FPX_E_NOT_FOUND)
        fail(c, NULL, "Index %s not found", id);
    else if (rc)
        fail_from(c, &r.err, "");
    res_free(&r);
    return rc;
}

static int act_delete_index(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1], msg[FX_ID_MAX + 64];
    if (need_id(c, "index_id", id) || drop(c, id))
        return -1;
    snprintf(msg, sizeof msg, "Index %s deleted successfully", id);
    put_str(c, "message", msg);
    put_str(c, "index_id", id);
    return 0;
}

static int act_list(fx *c, int arg) {
    (void)arg;
    fpx_out o;
    fx_res r;
    begin(c, &o, "list_indexes", NULL, 0);
    int rc = call(c, &o, &r);
    const msgpack_object *l = rc == 0 && r.m.meta && r.m.meta->type == MSGPACK_OBJECT_MAP
                                  ? fpx_map_get(r.m.meta, "indexes")
                                  : NULL;
    if (rc)
        fail_from(c, &r.err, "");
    else if (!l || l->type != MSGPACK_OBJECT_ARRAY)
        rc = fail(c, NULL, "Server error: no index list");
    if (rc == 0) {
        msgpack_packer *p = key(c, "indexes");
        msgpack_pack_array(p, l->via.array.size);
        for (uint32_t i = 0; i < l->via.array.size; i++) {
            fx_info in;
            parse_info(&l->via.array.ptr[i], &in);
            int idmap = starts(in.type, "IDMap");
            msgpack_pack_map(p, 5 + (idmap ? 2 : 0));
            fpx_pack_cstr(p, "index_id");
            fpx_pack_cstr(p, in.id);
            fpx_pack_cstr(p, "dimension");
            msgpack_pack_int64(p, in.dim);
            fpx_pack_cstr(p, "vector_count");
            msgpack_pack_int64(p, in.ntotal);
            fpx_pack_cstr(p, "index_type");
            fpx_pack_cstr(p, class_name(&in));
            fpx_pack_cstr(p, "is_trained");
            pack_bool(p, in.trained);
            if (idmap) {
                fpx_pack_cstr(p, "is_idmap");
                msgpack_pack_true(p);
                fpx_pack_cstr(p, "is_idmap2");
                pack_bool(p, starts(in.type, "IDMap2"));
            }
        }
    }
    res_free(&r);
    return rc;
}

/* The status map of get_index_status and get_index_info. */
static void pack_status(msgpack_packer *p, const fx_info *in) {
    const char *b = base_type(in->type);
    const char *pq = strstr(b, "PQ");
    int ivf = in->nlist > 0, hnsw = in->efs >= 0 && !ivf;
    msgpack_pack_map(p, 9 + (ivf ? 2 : 0) + (hnsw ? 3 : 0) + (pq ? 2 : 0));
    fpx_pack_cstr(p, "index_id");
    fpx_pack_cstr(p, in->id);
    fpx_pack_cstr(p, "dimension");
    msgpack_pack_int64(p, in->dim);
    fpx_pack_cstr(p, "ntotal");
    msgpack_pack_int64(p, in->ntotal);
    fpx_pack_cstr(p, "index_type");
    fpx_pack_cstr(p, class_name(in));
    fpx_pack_cstr(p, "factory_string");
    fpx_pack_cstr(p, in->type);
    fpx_pack_cstr(p, "metric_type");
    msgpack_pack_int(p, faiss_metric(in));
    fpx_pack_cstr(p, "is_trained");
    pack_bool(p, in->trained);
    fpx_pack_cstr(p, "requires_training");
    pack_bool(p, needs_training(in));
    fpx_pack_cstr(p, "is_ready_for_use");
    pack_bool(p, in->trained);
    if (ivf) {
        fpx_pack_cstr(p, "nlist");
        msgpack_pack_int64(p, in->nlist);
        fpx_pack_cstr(p, "nprobe");
        msgpack_pack_int64(p, in->nprobe);
    }
    if (hnsw) {
        fpx_pack_cstr(p, "hnsw_m");
        msgpack_pack_int64(p, strtol(b + 4, NULL, 10));
        fpx_pack_cstr(p, "ef_search");
        msgpack_pack_int64(p, in->efs);
        fpx_pack_cstr(p, "ef_construction");
        msgpack_pack_int64(p, in->efc);
    }
    if (pq) {
        const char *x = pq + 2 + strspn(pq + 2, "0123456789");
        fpx_pack_cstr(p, "pq_m");
        msgpack_pack_int64(p, strtol(pq + 2, NULL, 10));
        fpx_pack_cstr(p, "pq_nbits");
        msgpack_pack_int64(p, *x == 'x' ? strtol(x + 1, NULL, 10) : 8);
    }
}

/* get_index_stats (0), get_index_status (1), get_index_info (2). */
static int act_index_stats(fx *c, int which) {
    char id[FX_ID_MAX + 1];
    fx_info in;
    if (need_id(c, "index_id", id) || need_index(c, id, &in, "Index %s not found"))
        return -1;
    put_str(c, "index_id", id);
    if (which == 0) {
        put_int(c, "dimension", in.dim);
        put_int(c, "ntotal", in.ntotal);
        put_str(c, "index_type", class_name(&in));
        put_bool(c, "is_trained", in.trained);
        return 0;
    }
    pack_status(key(c, "status"), &in);
    if (which == 1)
        return 0;
    size_t per = is_binary(&in) ? (size_t)in.dim / 8 : (size_t)in.dim * 4;
    msgpack_packer *p = key(c, "metrics");
    msgpack_pack_map(p, 3);
    fpx_pack_cstr(p, "vectors_count");
    msgpack_pack_int64(p, in.ntotal);
    fpx_pack_cstr(p, "dimension");
    msgpack_pack_int64(p, in.dim);
    fpx_pack_cstr(p, "byte_size_per_vector");
    msgpack_pack_uint64(p, per);
    p = key(c, "configuration");
    msgpack_pack_map(p, 2);
    fpx_pack_cstr(p, "metric");
    fpx_pack_cstr(p, in.metric == 1 ? "IP" : in.metric == 2 ? "Hamming" : "L2");
    fpx_pack_cstr(p, "factory_string");
    fpx_pack_cstr(p, in.type);
    p = key(c, "storage");
    msgpack_pack_map(p, 2);
    fpx_pack_cstr(p, "estimated_memory_bytes");
    msgpack_pack_uint64(p, per * (size_t)in.ntotal);
    fpx_pack_cstr(p, "persistent");
    msgpack_pack_true(p);
    return 0;
}

static int act_parameter(fx *c, int set) {
    char id[FX_ID_MAX + 1], name[64];
    const char *s;
    size_t n;
    fx_info in;
    const msgpack_object *po = field(c, "parameter");
    if (need_id(c, "index_id", id))
        return -1;
    if (!po || fpx_obj_str(po, &s, &n) || n == 0 || n >= sizeof name)
        return fail(c, NULL, "Invalid parameter: must be a parameter name");
    memcpy(name, s, n);
    name[n] = 0;
    if (need_index(c, id, &in, "Index %s not found"))
        return -1;
    int64_t cur = !strcmp(name, "nprobe")           ? in.nprobe
                  : !strcmp(name, "efSearch")       ? in.efs
                  : !strcmp(name, "efConstruction") ? in.efc
                                                    : -1;
    if (!set) {
        if (!strcmp(name, "is_trained") || !strcmp(name, "dimension") || !strcmp(name, "ntotal")) {
            put_str(c, "param_name", name);
            if (name[0] == 'i')
                put_bool(c, "param_value", in.trained);
            else
                put_int(c, "param_value", name[0] == 'd' ? in.dim : in.ntotal);
            return 0;
        }
        if (cur < 0)
            return fail(c, NULL, "Parameter %s not supported for this index type (%s)", name,
                        class_name(&in));
        put_str(c, "param_name", name);
        put_int(c, "param_value", cur);
        return 0;
    }
    int64_t v;
    if (cur < 0)
        return fail(c, NULL, "Parameter %s not supported for this index type (%s)", name,
                    class_name(&in));
    if (num_int(field(c, "value"), &v) || v < 1)
        return fail(c, NULL, "Invalid value for %s: must be a positive integer", name);
    if (set_knob(c, &in, name, v))
        return -1;
    char msg[FX_ID_MAX + 128];
    snprintf(msg, sizeof msg, "Set %s=%lld for index %s", name, (long long)v, id);
    put_str(c, "message", msg);
    return 0;
}

static int act_reset(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1], msg[FX_ID_MAX + 64];
    fx_info in;
    if (need_id(c, "index_id", id) || need_index(c, id, &in, "Index %s not found"))
        return -1;
    fpx_out o;
    fx_res r;
    begin(c, &o, "reset", id, 0);
    int rc = call(c, &o, &r);
    if (rc)
        fail_from(c, &r.err, "Error resetting index: ");
    res_free(&r);
    if (rc)
        return -1;
    snprintf(msg, sizeof msg, "Index %s has been reset", id);
    put_str(c, "message", msg);
    return 0;
}

/* clear: the index deleted and made again as a flat L2 index, whatever it
 * was, as FAISSx does; the reply is create_index's. */
static int act_clear(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in, made;
    if (need_id(c, "index_id", id) || need_index(c, id, &in, "Index %s not found") || drop(c, id) ||
        create(c, id, in.dim, "Flat", 0, &made))
        return -1;
    put_created(c, &made, "L2", 0, 0, "");
    return 0;
}

static int act_merge(fx *c, int arg) {
    (void)arg;
    char target[FX_ID_MAX + 1];
    fx_info tin;
    if (need_id(c, "target_index_id", target))
        return -1;
    const msgpack_object *src = field(c, "source_index_ids");
    if (!src || src->type != MSGPACK_OBJECT_ARRAY || src->via.array.size == 0)
        return fail(c, NULL, "No source indices provided for merging");
    if (need_index(c, target, &tin, "Target index %s not found"))
        return -1;
    /* every source is checked before anything is added */
    uint32_t ns = src->via.array.size;
    fx_info *sin = calloc(ns, sizeof *sin);
    if (!sin)
        return fail(c, NULL, "Server error: out of memory");
    int rc = 0;
    for (uint32_t i = 0; i < ns && rc == 0; i++) {
        const char *s;
        size_t n;
        char sid[FX_ID_MAX + 1];
        if (fpx_obj_str(&src->via.array.ptr[i], &s, &n) || n == 0 || n > FX_ID_MAX) {
            rc = fail(c, NULL, "Invalid source_index_ids: must be index ids");
            break;
        }
        memcpy(sid, s, n);
        sid[n] = 0;
        rc = need_index(c, sid, &sin[i], "Source index %s not found");
        if (rc == 0 && (sin[i].dim != tin.dim || is_binary(&sin[i]) != is_binary(&tin)))
            rc = fail(c, NULL, "Dimension mismatch: target %s has %lld, source %s has %lld", target,
                      (long long)tin.dim, sid, (long long)sin[i].dim);
    }
    int64_t ntotal = tin.ntotal;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer sp;
    msgpack_packer_init(&sp, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&sp, ns);
    for (uint32_t i = 0; i < ns && rc == 0; i++) {
        fx_res r;
        int64_t m = sin[i].ntotal;
        float *x = NULL;
        if (m > 0) {
            if (reconstruct_n(c, &sin[i], 0, m, &r)) {
                rc = fail_from(c, &r.err, "Error merging indices: ");
                res_free(&r);
                break;
            }
            x = malloc((size_t)m * (size_t)sin[i].dim * sizeof(float));
            if (!x) {
                res_free(&r);
                rc = fail(c, NULL, "Server error: out of memory");
                break;
            }
            /* back to FAISSx's floats (bits as 0/1) for add */
            for (int64_t v = 0; v < m; v++)
                for (int64_t j = 0; j < sin[i].dim; j++) {
                    const uint8_t *row = r.m.body.data + (size_t)v * row_bytes(&sin[i]);
                    if (is_binary(&sin[i]))
                        x[v * sin[i].dim + j] = (float)((row[j / 8] >> (j % 8)) & 1);
                    else
                        memcpy(&x[v * sin[i].dim + j], row + j * 4, 4);
                }
            res_free(&r);
            rc = add(c, &tin, x, m, NULL, &ntotal);
            free(x);
        }
        fpx_pack_cstr(&sp, sin[i].id);
        msgpack_pack_map(&sp, 3);
        fpx_pack_cstr(&sp, "vectors_added");
        msgpack_pack_int64(&sp, m);
        fpx_pack_cstr(&sp, "type");
        fpx_pack_cstr(&sp, "extract_add");
        fpx_pack_cstr(&sp, "actual_added");
        msgpack_pack_int64(&sp, m);
    }
    if (rc == 0) {
        char msg[FX_ID_MAX + 64];
        snprintf(msg, sizeof msg, "Merged %u indices into %s", ns, target);
        put_str(c, "message", msg);
        put_int(c, "ntotal", ntotal);
        key(c, "merged_stats");
        msgpack_sbuffer_write(&c->fb, sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    free(sin);
    return rc;
}

static int act_optimize(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t level;
    if (need_id(c, "index_id", id) || opt_int(c, "optimization_level", 1, &level) ||
        need_index(c, id, &in, "Index %s not found"))
        return -1;
    if (level < 1 || level > 3)
        return fail(c, NULL, "Invalid optimization_level: must be 1, 2 or 3");
    char opt[64] = "";
    if (in.nlist > 0) {
        int64_t nl = in.nlist, np;
        if (level == 1)
            np = nl / 10 < 1 ? 1 : nl / 10 > 10 ? 10 : nl / 10;
        else if (level == 2)
            np = nl / 5 < 1 ? 1 : nl / 5 > 50 ? 50 : nl / 5;
        else
            np = nl / 2 < 1 ? 1 : nl / 2 > 100 ? 100 : nl / 2;
        if (set_knob(c, &in, "nprobe", np))
            return -1;
        snprintf(opt, sizeof opt, "set_nprobe_%lld", (long long)np);
    } else if (!strcmp(base_type(in.type), "Flat")) {
        snprintf(opt, sizeof opt, "flat_index_no_optimization");
    }
    char msg[FX_ID_MAX + 64];
    snprintf(msg, sizeof msg, "Index %s optimized", id);
    put_str(c, "message", msg);
    put_str(c, "index_type", class_name(&in));
    msgpack_packer *p = key(c, "optimizations");
    msgpack_pack_array(p, opt[0] ? 1 : 0);
    if (opt[0])
        fpx_pack_cstr(p, opt);
    put_int(c, "optimization_level", level);
    return 0;
}

/* k-means over the request's vectors: no index involved, the engine's
 * FAISS Clustering (L2, as FAISSx: metric_type is read and ignored). */
static int act_clustering(fx *c, int arg) {
    (void)arg;
    int64_t n, d, k, niter;
    float *x;
    if (opt_int(c, "n_clusters", -1, &k) || opt_int(c, "niter", 25, &niter))
        return -1;
    if (k < 1)
        return fail(c, NULL, "Invalid n_clusters: must be a positive integer");
    if (niter < 1 || niter > 1000)
        return fail(c, NULL, "Invalid niter: must be 1..1000");
    if (need_matrix(c, "vectors", &n, &d, &x))
        return -1;
    if (k > n) {
        free(x);
        return fail(c, NULL, "n_clusters (%lld) exceeds the number of vectors (%lld)", (long long)k,
                    (long long)n);
    }
    float *cent = malloc((size_t)(k * d) * sizeof(float)), obj = 0;
    int64_t *assign = malloc((size_t)n * sizeof(int64_t)), *sizes = calloc((size_t)k, 8);
    fpx_err e;
    int rc;
    if (!cent || !assign || !sizes)
        rc = fail(c, NULL, "Server error: out of memory");
    else if ((rc = fpx_engine_kmeans(n, d, x, k, (int)niter, cent, assign, &obj, &e)) != 0)
        fail(c, NULL, "Clustering error: %s", e.msg);
    if (rc == 0) {
        msgpack_packer *p = key(c, "centroids");
        msgpack_pack_array(p, (size_t)k);
        for (int64_t i = 0; i < k; i++) {
            msgpack_pack_array(p, (size_t)d);
            for (int64_t j = 0; j < d; j++)
                msgpack_pack_double(p, cent[i * d + j]);
        }
        p = key(c, "assignments");
        msgpack_pack_array(p, (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            msgpack_pack_int64(p, assign[i]);
            if (assign[i] >= 0 && assign[i] < k)
                sizes[assign[i]]++;
        }
        p = key(c, "cluster_sizes");
        msgpack_pack_array(p, (size_t)k);
        for (int64_t i = 0; i < k; i++)
            msgpack_pack_int64(p, sizes[i]);
        put_int(c, "n_clusters", k);
        put_int(c, "dimension", d);
        msgpack_pack_double(key(c, "obj"), obj);
    }
    free(x);
    free(cent);
    free(assign);
    free(sizes);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

/* FAISSx's actions, each a handler of this file with its argument. */
static const struct {
    const char *name;
    int (*run)(fx *c, int arg);
    int arg;
} actions[] = {
    {"create_index", act_create_index, 0},
    {"add_vectors", act_add, 0},
    {"add_with_ids", act_add, 1},
    {"batch_add_with_ids", act_add, 3},
    {"search", act_search, 0},
    {"hybrid_search", act_search, 1},
    {"search_and_reconstruct", act_search_and_reconstruct, 0},
    {"range_search", act_range_search, 0},
    {"reconstruct", act_reconstruct, 0},
    {"reconstruct_n", act_reconstruct_n, 0},
    {"get_vectors", act_reconstruct_n, 1},
    {"train_index", act_train, 0},
    {"delete_index", act_delete_index, 0},
    {"list_indices", act_list, 0},
    {"list_indexes", act_list, 0},
    {"get_index_stats", act_index_stats, 0},
    {"get_index_status", act_index_stats, 1},
    {"get_index_info", act_index_stats, 2},
    {"set_parameter", act_parameter, 1},
    {"get_parameter", act_parameter, 0},
    {"reset", act_reset, 0},
    {"clear", act_clear, 0},
    {"merge_indices", act_merge, 0},
    {"optimize_index", act_optimize, 0},
    {"compute_clustering", act_clustering, 0},
};

/* FAISSx's actions this server does not serve, named as such. */
static const char *const not_served[] = {"recluster_index", "apply_transform", "get_transform_info",
                                         "replace_vector", "remove_ids"};

static void run_action(fx *c, const char *a, size_t an) {
    if (an == 4 && !memcmp(a, "ping", 4)) { /* no key needed */
        put_str(c, "message", "pong");
        msgpack_pack_double(key(c, "time"), now_s());
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
            fail(c, "NOT_SERVED", "Action %s is not served by faiss-proxy", not_served[i]);
            return;
        }
    fail(c, NULL, "Unknown action");
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
        fail(&c, NULL, "Malformed request");
    } else {
        c.req = &u.data;
        c.api_key = field(&c, "api_key");
        c.tenant_id = field(&c, "tenant_id");
        const msgpack_object *ao = field(&c, "action");
        const char *a = "";
        size_t an = 0;
        if (ao && fpx_obj_str(ao, &a, &an) == 0)
            run_action(&c, a, an);
        else
            fail(&c, NULL, "Unknown action");
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
