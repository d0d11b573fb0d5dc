/*
 * faissx_internal.h - what the files serving FAISSx's clients share: the
 * request being answered, our replies to the requests built for it, an
 * index's info, and the helpers each file lends the others.
 *
 *   faissx.c          entry points, the action table, reading FAISSx's
 *                     request, building its reply, running our own requests
 *   faissx_types.c    FAISSx's index types as our factory strings and
 *                     FAISS's class names
 *   faissx_indexes.c  actions on whole indexes (create, train, list, stats,
 *                     parameters, reset, merge, optimize, clustering)
 *   faissx_vectors.c  actions on vectors (add, search, range search,
 *                     reconstruct)
 */
#ifndef FPX_FAISSX_INTERNAL_H
#define FPX_FAISSX_INTERNAL_H

#include "faissx.h"

#include "util.h"

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

/* ---- faissx.c: reply building (the first failure wins; fx_fail returns -1) ---- */
msgpack_packer *fx_key(fx *c, const char *k);
void fx_put_str(fx *c, const char *k, const char *v);
void fx_put_int(fx *c, const char *k, int64_t v);
void fx_put_bool(fx *c, const char *k, int v);
void fx_pack_bool(msgpack_packer *p, int v);
int fx_fail(fx *c, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const msgpack_object *fx_field(const fx *c, const char *k);
int fx_get_i(const msgpack_object *map, const char *k, int64_t *v);
int fx_get_b(const msgpack_object *map, const char *k, int *v);
int fx_num_int(const msgpack_object *o, int64_t *v);
int fx_num_dbl(const msgpack_object *o, double *v);
int fx_opt_int(fx *c, const char *k, int64_t def, int64_t *v);
int fx_need_id(fx *c, const char *k, char *out);
int fx_need_matrix(fx *c, const char *k, int64_t *n, int64_t *d, float **x);
uint8_t *fx_pack_bits(const float *x, int64_t n, int64_t d);
void fx_res_free(fx_res *r);
msgpack_packer *fx_begin(fx *c, fpx_out *o, const char *op, const char *id, unsigned nextra);
void fx_pack_shape(msgpack_packer *p, int64_t n, int64_t d);
int fx_call(fx *c, fpx_out *o, fx_res *r);
int fx_fail_from(fx *c, const fpx_err *e, const char *prefix);
void fx_parse_info(const msgpack_object *m, fx_info *in);
int fx_get_info(fx *c, const char *id, fx_info *in, fpx_err *e);
int fx_need_index(fx *c, const char *id, fx_info *in, const char *missing_fmt);

/* ---- faissx_types.c ---- */
int fx_is_binary(const fx_info *in);
int fx_starts(const char *s, const char *p);
int fx_map_type(const char *t, char *out, size_t cap, int *ip, int *binary);
const char *fx_class_name(const fx_info *in);
const char *fx_base_type(const char *t);
int fx_faiss_metric(const fx_info *in);
int fx_needs_training(const fx_info *in);

/* ---- faissx_vectors.c: our requests on vectors, shared with the index actions ---- */
int fx_add(fx *c, const fx_info *in, const float *x, int64_t n, const int64_t *ids,
           int64_t *ntotal);
int fx_set_knob(fx *c, const fx_info *in, const char *name, int64_t v);
void fx_pack_queries(fpx_out *o, msgpack_packer *p, const fx_info *in, const float *x, int64_t n);
size_t fx_row_bytes(const fx_info *in);
int fx_reconstruct_n(fx *c, const fx_info *in, int64_t start, int64_t num, fx_res *r);

/* ---- the actions of the table in faissx.c: 0 or -1 (fx_fail called) ---- */
int fx_act_create_index(fx *c, int arg);
int fx_act_train(fx *c, int arg);
int fx_act_delete_index(fx *c, int arg);
int fx_act_list(fx *c, int arg);
int fx_act_index_stats(fx *c, int which);
int fx_act_parameter(fx *c, int set);
int fx_act_reset(fx *c, int arg);
int fx_act_clear(fx *c, int arg);
int fx_act_merge(fx *c, int arg);
int fx_act_optimize(fx *c, int arg);
int fx_act_clustering(fx *c, int arg);
int fx_act_add(fx *c, int arg);
int fx_act_search(fx *c, int hybrid);
int fx_act_search_and_reconstruct(fx *c, int arg);
int fx_act_range_search(fx *c, int arg);
int fx_act_reconstruct(fx *c, int arg);
int fx_act_reconstruct_n(fx *c, int get_vectors);
int fx_act_remove_ids(fx *c, int arg);
int fx_act_replace_vector(fx *c, int arg);

#endif
