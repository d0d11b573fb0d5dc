/*
 * faissx_indexes.c - FAISSx's actions on whole indexes (create, train, delete, list,
 * stats, parameters, reset and clear, merge, optimize) and compute_clustering,
 * each run as requests of our own through fpx_server_handle.
 */
#include "faissx_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

/* ---- the actions ----------------------------------------------------------------------------- */

/* The type-specific keys of a create_index reply (also clear's). */
static void put_created(fx *c, const fx_info *in, const char *requested, int idmap, int idmap2,
                        const char *base_id) {
    const char *b = fx_base_type(in->type);
    fx_put_str(c, "message", "Index created successfully");
    if (!fx_is_binary(in))
        fx_put_str(c, "index_id", in->id);
    fx_put_int(c, "dimension", in->dim);
    fx_put_bool(c, "is_trained", in->trained);
    if (idmap) {
        fx_put_str(c, "type", requested);
        fx_put_str(c, "base_index_id", base_id);
        fx_put_bool(c, "is_idmap", 1);
        fx_put_bool(c, "is_idmap2", idmap2);
        return;
    }
    if (fx_is_binary(in)) {
        fx_put_str(c, "type",
                   fx_starts(b, "BIVF")    ? "BINARY_IVF"
                   : fx_starts(b, "BHash") ? "BINARY_HASH"
                                           : "BINARY_FLAT");
        fx_put_int(c, "dimension_bytes", in->dim / 8);
        fx_put_bool(c, "is_binary", 1);
        fx_put_bool(c, "requires_training", !in->trained);
        if (in->nlist > 0)
            fx_put_int(c, "nlist", in->nlist);
        if (fx_starts(b, "BHash"))
            fx_put_int(c, "bits_per_dim", strtol(b + 5, NULL, 10));
        return;
    }
    const char *cls = fx_class_name(in);
    fx_put_str(c, "type", cls);
    if (fx_starts(b, "HNSW")) {
        fx_put_int(c, "M", strtol(b + 4, NULL, 10));
        fx_put_int(c, "efConstruction", in->efc);
        fx_put_int(c, "efSearch", in->efs);
    }
    if (in->nlist > 0)
        fx_put_int(c, "nlist", in->nlist);
    const char *pq = strstr(b, "PQ");
    if (pq) {
        long m = strtol(pq + 2, NULL, 10);
        const char *x = pq + 2 + strspn(pq + 2, "0123456789");
        fx_put_int(c, "M", m);
        fx_put_int(c, "nbits", *x == 'x' ? strtol(x + 1, NULL, 10) : 8);
    }
    if (strcmp(cls, "IndexFlatL2") && strcmp(cls, "IndexFlatIP"))
        fx_put_int(c, "metric_type", fx_faiss_metric(in));
    if (!in->trained)
        fx_put_bool(c, "requires_training", 1);
}

/* Our create_index of the given factory string; *in is the new index's info. */
static int create(fx *c, const char *id, int64_t dim, const char *factory, int ip, fx_info *in) {
    fpx_out o;
    fx_res r;
    int binary =
        factory[0] == 'B' || fx_starts(factory, "IDMap,B") || fx_starts(factory, "IDMap2,B");
    msgpack_packer *p = fx_begin(c, &o, "create_index", id, 2 + !binary);
    fpx_pack_cstr(p, "dimension");
    msgpack_pack_int64(p, dim);
    fpx_pack_cstr(p, "index_type");
    fpx_pack_cstr(p, factory);
    if (!binary) {
        fpx_pack_cstr(p, "metric");
        fpx_pack_cstr(p, ip ? "IP" : "L2");
    }
    int rc = fx_call(c, &o, &r);
    if (rc == 0 && r.m.meta && r.m.meta->type == MSGPACK_OBJECT_MAP)
        fx_parse_info(r.m.meta, in);
    else if (rc == 0)
        rc = fpx_err_set(&r.err, FPX_E_INTERNAL, "no index info in the reply");
    if (rc) {
        if (r.err.type == FPX_E_EXISTS)
            fx_fail(c, NULL, "Index %s already exists", id);
        else if (r.err.type == FPX_E_VALIDATION && !strstr(r.err.msg, "dimension") &&
                 !strstr(r.err.msg, "name"))
            fx_fail(c, NULL, "Unsupported index type: %s (%s)", factory, r.err.msg);
        else
            fx_fail_from(c, &r.err, "");
    }
    fx_res_free(&r);
    return rc;
}

int fx_act_create_index(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1], factory[2 * FX_TYPE_MAX + 80], base_id[FX_ID_MAX + 1] = "";
    int64_t dim;
    if (fx_need_id(c, "index_id", id))
        return -1;
    const msgpack_object *dobj = fx_field(c, "dimension");
    if (!dobj)
        dim = 0;
    else if (fx_num_int(dobj, &dim))
        return fx_fail(c, NULL, "Invalid dimension: must be an integer");
    if (dim < 1 || dim > FX_DIM_MAX)
        return fx_fail(c, NULL, "Dimension %lld out of range (1-%d)", (long long)dim, FX_DIM_MAX);
    const char *t = "L2";
    size_t tn = 2;
    const msgpack_object *tobj = fx_field(c, "index_type");
    if (tobj && (fpx_obj_str(tobj, &t, &tn) || tn == 0 || tn > FX_TYPE_MAX))
        return fx_fail(c, NULL, "Invalid index_type: must be a string of 1 to %d characters",
                       FX_TYPE_MAX);
    char type[FX_TYPE_MAX + 1];
    memcpy(type, t, tn);
    type[tn] = 0;
    int idmap = fx_starts(type, "IDMap:") || fx_starts(type, "IDMap2:");
    int idmap2 = fx_starts(type, "IDMap2:");
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
        if (*rest && strlen(rest) <= FX_ID_MAX && fx_get_info(c, rest, &b, &e) == 0) {
            if (b.dim != dim)
                return fx_fail(c, NULL,
                               "Dimension mismatch: base index %s has %lld, requested %lld", rest,
                               (long long)b.dim, (long long)dim);
            snprintf(mapped, sizeof mapped, "%s", fx_base_type(b.type));
            ip = b.metric == 1;
            binary = b.metric == 2;
        } else if (c->failed) {
            return -1;
        } else if (fx_map_type(*rest ? rest : "L2", mapped, sizeof mapped, &ip, &binary)) {
            return fx_fail(c, NULL, "Unsupported index type: %s", type);
        }
        if (binary)
            return fx_fail(c, NULL, "Unsupported index type: %s (no IDMap over binary indexes)",
                           type);
        snprintf(factory, sizeof factory, "%s,%s", idmap2 ? "IDMap2" : "IDMap", mapped);
    } else if (fx_map_type(type, factory, sizeof factory, &ip, &binary)) {
        return fx_fail(c, NULL, "Unsupported index type: %s", type);
    }
    if (binary && dim % 8)
        return fx_fail(c, NULL,
                       "Error creating binary index: dimension %lld is not a multiple of 8",
                       (long long)dim);
    fx_info in;
    if (create(c, id, dim, factory, ip, &in))
        return -1;
    put_created(c, &in, type, idmap, idmap2, base_id);
    return 0;
}

int fx_act_train(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t n, d;
    float *x;
    if (fx_need_id(c, "index_id", id) || fx_need_index(c, id, &in, "Index %s does not exist") ||
        fx_need_matrix(c, "training_vectors", &n, &d, &x))
        return -1;
    if (d != in.dim) {
        free(x);
        return fx_fail(c, NULL, "Training vector dimension mismatch: expected %lld, got %lld",
                       (long long)in.dim, (long long)d);
    }
    if (in.trained) {
        free(x);
        fx_put_str(c, "message", "This index type does not require training");
        fx_put_str(c, "index_id", id);
        fx_put_bool(c, "is_trained", 1);
        fx_put_bool(c, "training_skipped", 1);
        msgpack_packer *p = fx_key(c, "training_info");
        msgpack_pack_map(p, 2);
        fpx_pack_cstr(p, "requires_training");
        msgpack_pack_false(p);
        fpx_pack_cstr(p, "is_trained");
        msgpack_pack_true(p);
        return 0;
    }
    fpx_out o;
    fx_res r;
    msgpack_packer *p = fx_begin(c, &o, "train", id, 1 + fx_is_binary(&in));
    fx_pack_queries(&o, p, &in, x, n);
    free(x);
    int rc = fx_call(c, &o, &r), trained = 0;
    if (rc == 0) {
        fx_get_b(r.m.meta, "is_trained", &trained);
        fx_put_str(c, "message", "Index successfully trained");
        fx_put_str(c, "index_id", id);
        fx_put_int(c, "trained_with", n);
        fx_put_bool(c, "is_trained", trained);
        fx_put_bool(c, "has_enough_vectors", in.nlist < 0 || n >= in.nlist);
        msgpack_pack_nil(fx_key(c, "recommendation"));
        p = fx_key(c, "training_info");
        msgpack_pack_map(p, 2);
        fpx_pack_cstr(p, "requires_training");
        msgpack_pack_true(p);
        fpx_pack_cstr(p, "is_trained");
        fx_pack_bool(p, trained);
    } else if (r.err.type == FPX_E_FAISS || r.err.type == FPX_E_VALIDATION) {
        fx_fail(c, "TRAINING_ERROR", "Training error: %s", r.err.msg);
        msgpack_packer dp;
        msgpack_packer_init(&dp, &c->db, msgpack_sbuffer_write);
        msgpack_pack_map(&dp, 2);
        fpx_pack_cstr(&dp, "index_id");
        fpx_pack_cstr(&dp, id);
        fpx_pack_cstr(&dp, "vector_count");
        msgpack_pack_int64(&dp, n);
        c->has_details = 1;
    } else {
        fx_fail_from(c, &r.err, "Training error: ");
    }
    fx_res_free(&r);
    return rc;
}

/* Our delete_index; not found reads FAISSx's way. */
static int drop(fx *c, const char *id) {
    fpx_out o;
    fx_res r;
    fx_begin(c, &o, "delete_index", id, 0);
    int rc = fx_call(c, &o, &r);
    if (rc && r.err.type == FPX_E_NOT_FOUND)
        fx_fail(c, NULL, "Index %s not found", id);
    else if (rc)
        fx_fail_from(c, &r.err, "");
    fx_res_free(&r);
    return rc;
}

int fx_act_delete_index(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1], msg[FX_ID_MAX + 64];
    if (fx_need_id(c, "index_id", id) || drop(c, id))
        return -1;
    snprintf(msg, sizeof msg, "Index %s deleted successfully", id);
    fx_put_str(c, "message", msg);
    fx_put_str(c, "index_id", id);
    return 0;
}

int fx_act_list(fx *c, int arg) {
    (void)arg;
    fpx_out o;
    fx_res r;
    fx_begin(c, &o, "list_indexes", NULL, 0);
    int rc = fx_call(c, &o, &r);
    const msgpack_object *l = rc == 0 && r.m.meta && r.m.meta->type == MSGPACK_OBJECT_MAP
                                  ? fpx_map_get(r.m.meta, "indexes")
                                  : NULL;
    if (rc)
        fx_fail_from(c, &r.err, "");
    else if (!l || l->type != MSGPACK_OBJECT_ARRAY)
        rc = fx_fail(c, NULL, "Server error: no index list");
    if (rc == 0) {
        msgpack_packer *p = fx_key(c, "indexes");
        msgpack_pack_array(p, l->via.array.size);
        for (uint32_t i = 0; i < l->via.array.size; i++) {
            fx_info in;
            fx_parse_info(&l->via.array.ptr[i], &in);
            int idmap = fx_starts(in.type, "IDMap");
            msgpack_pack_map(p, 5 + (idmap ? 2 : 0));
            fpx_pack_cstr(p, "index_id");
            fpx_pack_cstr(p, in.id);
            fpx_pack_cstr(p, "dimension");
            msgpack_pack_int64(p, in.dim);
            fpx_pack_cstr(p, "vector_count");
            msgpack_pack_int64(p, in.ntotal);
            fpx_pack_cstr(p, "index_type");
            fpx_pack_cstr(p, fx_class_name(&in));
            fpx_pack_cstr(p, "is_trained");
            fx_pack_bool(p, in.trained);
            if (idmap) {
                fpx_pack_cstr(p, "is_idmap");
                msgpack_pack_true(p);
                fpx_pack_cstr(p, "is_idmap2");
                fx_pack_bool(p, fx_starts(in.type, "IDMap2"));
            }
        }
    }
    fx_res_free(&r);
    return rc;
}

/* The status map of get_index_status and get_index_info. */
static void pack_status(msgpack_packer *p, const fx_info *in) {
    const char *b = fx_base_type(in->type);
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
    fpx_pack_cstr(p, fx_class_name(in));
    fpx_pack_cstr(p, "factory_string");
    fpx_pack_cstr(p, in->type);
    fpx_pack_cstr(p, "metric_type");
    msgpack_pack_int(p, fx_faiss_metric(in));
    fpx_pack_cstr(p, "is_trained");
    fx_pack_bool(p, in->trained);
    fpx_pack_cstr(p, "requires_training");
    fx_pack_bool(p, fx_needs_training(in));
    fpx_pack_cstr(p, "is_ready_for_use");
    fx_pack_bool(p, in->trained);
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
int fx_act_index_stats(fx *c, int which) {
    char id[FX_ID_MAX + 1];
    fx_info in;
    if (fx_need_id(c, "index_id", id) || fx_need_index(c, id, &in, "Index %s not found"))
        return -1;
    fx_put_str(c, "index_id", id);
    if (which == 0) {
        fx_put_int(c, "dimension", in.dim);
        fx_put_int(c, "ntotal", in.ntotal);
        fx_put_str(c, "index_type", fx_class_name(&in));
        fx_put_bool(c, "is_trained", in.trained);
        return 0;
    }
    pack_status(fx_key(c, "status"), &in);
    if (which == 1)
        return 0;
    size_t per = fx_is_binary(&in) ? (size_t)in.dim / 8 : (size_t)in.dim * 4;
    msgpack_packer *p = fx_key(c, "metrics");
    msgpack_pack_map(p, 3);
    fpx_pack_cstr(p, "vectors_count");
    msgpack_pack_int64(p, in.ntotal);
    fpx_pack_cstr(p, "dimension");
    msgpack_pack_int64(p, in.dim);
    fpx_pack_cstr(p, "byte_size_per_vector");
    msgpack_pack_uint64(p, per);
    p = fx_key(c, "configuration");
    msgpack_pack_map(p, 2);
    fpx_pack_cstr(p, "metric");
    fpx_pack_cstr(p, in.metric == 1 ? "IP" : in.metric == 2 ? "Hamming" : "L2");
    fpx_pack_cstr(p, "factory_string");
    fpx_pack_cstr(p, in.type);
    p = fx_key(c, "storage");
    msgpack_pack_map(p, 2);
    fpx_pack_cstr(p, "estimated_memory_bytes");
    msgpack_pack_uint64(p, per * (size_t)in.ntotal);
    fpx_pack_cstr(p, "persistent");
    msgpack_pack_true(p);
    return 0;
}

int fx_act_parameter(fx *c, int set) {
    char id[FX_ID_MAX + 1], name[64];
    const char *s;
    size_t n;
    fx_info in;
    const msgpack_object *po = fx_field(c, "parameter");
    if (fx_need_id(c, "index_id", id))
        return -1;
    if (!po || fpx_obj_str(po, &s, &n) || n == 0 || n >= sizeof name)
        return fx_fail(c, NULL, "Invalid parameter: must be a parameter name");
    memcpy(name, s, n);
    name[n] = 0;
    if (fx_need_index(c, id, &in, "Index %s not found"))
        return -1;
    int64_t cur = !strcmp(name, "nprobe")           ? in.nprobe
                  : !strcmp(name, "efSearch")       ? in.efs
                  : !strcmp(name, "efConstruction") ? in.efc
                                                    : -1;
    if (!set) {
        if (!strcmp(name, "is_trained") || !strcmp(name, "dimension") || !strcmp(name, "ntotal")) {
            fx_put_str(c, "param_name", name);
            if (name[0] == 'i')
                fx_put_bool(c, "param_value", in.trained);
            else
                fx_put_int(c, "param_value", name[0] == 'd' ? in.dim : in.ntotal);
            return 0;
        }
        if (cur < 0)
            return fx_fail(c, NULL, "Parameter %s not supported for this index type (%s)", name,
                           fx_class_name(&in));
        fx_put_str(c, "param_name", name);
        fx_put_int(c, "param_value", cur);
        return 0;
    }
    int64_t v;
    if (cur < 0)
        return fx_fail(c, NULL, "Parameter %s not supported for this index type (%s)", name,
                       fx_class_name(&in));
    if (fx_num_int(fx_field(c, "value"), &v) || v < 1)
        return fx_fail(c, NULL, "Invalid value for %s: must be a positive integer", name);
    if (fx_set_knob(c, &in, name, v))
        return -1;
    char msg[FX_ID_MAX + 128];
    snprintf(msg, sizeof msg, "Set %s=%lld for index %s", name, (long long)v, id);
    fx_put_str(c, "message", msg);
    return 0;
}

int fx_act_reset(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1], msg[FX_ID_MAX + 64];
    fx_info in;
    if (fx_need_id(c, "index_id", id) || fx_need_index(c, id, &in, "Index %s not found"))
        return -1;
    fpx_out o;
    fx_res r;
    fx_begin(c, &o, "reset", id, 0);
    int rc = fx_call(c, &o, &r);
    if (rc)
        fx_fail_from(c, &r.err, "Error resetting index: ");
    fx_res_free(&r);
    if (rc)
        return -1;
    snprintf(msg, sizeof msg, "Index %s has been reset", id);
    fx_put_str(c, "message", msg);
    return 0;
}

/* clear: the index deleted and made again as a flat L2 index, whatever it
 * was, as FAISSx does; the reply is create_index's. */
int fx_act_clear(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in, made;
    if (fx_need_id(c, "index_id", id) || fx_need_index(c, id, &in, "Index %s not found") ||
        drop(c, id) || create(c, id, in.dim, "Flat", 0, &made))
        return -1;
    put_created(c, &made, "L2", 0, 0, "");
    return 0;
}

int fx_act_merge(fx *c, int arg) {
    (void)arg;
    char target[FX_ID_MAX + 1];
    fx_info tin;
    if (fx_need_id(c, "target_index_id", target))
        return -1;
    const msgpack_object *src = fx_field(c, "source_index_ids");
    if (!src || src->type != MSGPACK_OBJECT_ARRAY || src->via.array.size == 0)
        return fx_fail(c, NULL, "No source indices provided for merging");
    if (fx_need_index(c, target, &tin, "Target index %s not found"))
        return -1;
    /* every source is checked before anything is added */
    uint32_t ns = src->via.array.size;
    fx_info *sin = calloc(ns, sizeof *sin);
    if (!sin)
        return fx_fail(c, NULL, "Server error: out of memory");
    int rc = 0;
    for (uint32_t i = 0; i < ns && rc == 0; i++) {
        const char *s;
        size_t n;
        char sid[FX_ID_MAX + 1];
        if (fpx_obj_str(&src->via.array.ptr[i], &s, &n) || n == 0 || n > FX_ID_MAX) {
            rc = fx_fail(c, NULL, "Invalid source_index_ids: must be index ids");
            break;
        }
        memcpy(sid, s, n);
        sid[n] = 0;
        rc = fx_need_index(c, sid, &sin[i], "Source index %s not found");
        if (rc == 0 && (sin[i].dim != tin.dim || fx_is_binary(&sin[i]) != fx_is_binary(&tin)))
            rc = fx_fail(c, NULL, "Dimension mismatch: target %s has %lld, source %s has %lld",
                         target, (long long)tin.dim, sid, (long long)sin[i].dim);
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
            if (fx_reconstruct_n(c, &sin[i], 0, m, &r)) {
                rc = fx_fail_from(c, &r.err, "Error merging indices: ");
                fx_res_free(&r);
                break;
            }
            x = malloc((size_t)m * (size_t)sin[i].dim * sizeof(float));
            if (!x) {
                fx_res_free(&r);
                rc = fx_fail(c, NULL, "Server error: out of memory");
                break;
            }
            /* back to FAISSx's floats (bits as 0/1) for add */
            for (int64_t v = 0; v < m; v++)
                for (int64_t j = 0; j < sin[i].dim; j++) {
                    const uint8_t *row = r.m.body.data + (size_t)v * fx_row_bytes(&sin[i]);
                    if (fx_is_binary(&sin[i]))
                        x[v * sin[i].dim + j] = (float)((row[j / 8] >> (j % 8)) & 1);
                    else
                        memcpy(&x[v * sin[i].dim + j], row + j * 4, 4);
                }
            fx_res_free(&r);
            rc = fx_add(c, &tin, x, m, NULL, &ntotal);
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
        fx_put_str(c, "message", msg);
        fx_put_int(c, "ntotal", ntotal);
        fx_key(c, "merged_stats");
        msgpack_sbuffer_write(&c->fb, sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    free(sin);
    return rc;
}

int fx_act_optimize(fx *c, int arg) {
    (void)arg;
    char id[FX_ID_MAX + 1];
    fx_info in;
    int64_t level;
    if (fx_need_id(c, "index_id", id) || fx_opt_int(c, "optimization_level", 1, &level) ||
        fx_need_index(c, id, &in, "Index %s not found"))
        return -1;
    if (level < 1 || level > 3)
        return fx_fail(c, NULL, "Invalid optimization_level: must be 1, 2 or 3");
    char opt[64] = "";
    if (in.nlist > 0) {
        int64_t nl = in.nlist, np;
        if (level == 1)
            np = nl / 10 < 1 ? 1 : nl / 10 > 10 ? 10 : nl / 10;
        else if (level == 2)
            np = nl / 5 < 1 ? 1 : nl / 5 > 50 ? 50 : nl / 5;
        else
            np = nl / 2 < 1 ? 1 : nl / 2 > 100 ? 100 : nl / 2;
        if (fx_set_knob(c, &in, "nprobe", np))
            return -1;
        snprintf(opt, sizeof opt, "set_nprobe_%lld", (long long)np);
    } else if (!strcmp(fx_base_type(in.type), "Flat")) {
        snprintf(opt, sizeof opt, "flat_index_no_optimization");
    }
    char msg[FX_ID_MAX + 64];
    snprintf(msg, sizeof msg, "Index %s optimized", id);
    fx_put_str(c, "message", msg);
    fx_put_str(c, "index_type", fx_class_name(&in));
    msgpack_packer *p = fx_key(c, "optimizations");
    msgpack_pack_array(p, opt[0] ? 1 : 0);
    if (opt[0])
        fpx_pack_cstr(p, opt);
    fx_put_int(c, "optimization_level", level);
    return 0;
}

/* k-means over the request's vectors: no index involved, the engine's
 * FAISS Clustering (L2, as FAISSx: metric_type is read and ignored). */
int fx_act_clustering(fx *c, int arg) {
    (void)arg;
    int64_t n, d, k, niter;
    float *x;
    if (fx_opt_int(c, "n_clusters", -1, &k) || fx_opt_int(c, "niter", 25, &niter))
        return -1;
    if (k < 1)
        return fx_fail(c, NULL, "Invalid n_clusters: must be a positive integer");
    if (niter < 1 || niter > 1000)
        return fx_fail(c, NULL, "Invalid niter: must be 1..1000");
    if (fx_need_matrix(c, "vectors", &n, &d, &x))
        return -1;
    if (k > n) {
        free(x);
        return fx_fail(c, NULL, "n_clusters (%lld) exceeds the number of vectors (%lld)",
                       (long long)k, (long long)n);
    }
    float *cent = malloc((size_t)(k * d) * sizeof(float)), obj = 0;
    int64_t *assign = malloc((size_t)n * sizeof(int64_t)), *sizes = calloc((size_t)k, 8);
    fpx_err e;
    int rc;
    if (!cent || !assign || !sizes)
        rc = fx_fail(c, NULL, "Server error: out of memory");
    else if ((rc = fpx_engine_kmeans(n, d, x, k, (int)niter, cent, assign, &obj, &e)) != 0)
        fx_fail(c, NULL, "Clustering error: %s", e.msg);
    if (rc == 0) {
        msgpack_packer *p = fx_key(c, "centroids");
        msgpack_pack_array(p, (size_t)k);
        for (int64_t i = 0; i < k; i++) {
            msgpack_pack_array(p, (size_t)d);
            for (int64_t j = 0; j < d; j++)
                msgpack_pack_double(p, cent[i * d + j]);
        }
        p = fx_key(c, "assignments");
        msgpack_pack_array(p, (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            msgpack_pack_int64(p, assign[i]);
            if (assign[i] >= 0 && assign[i] < k)
                sizes[assign[i]]++;
        }
        p = fx_key(c, "cluster_sizes");
        msgpack_pack_array(p, (size_t)k);
        for (int64_t i = 0; i < k; i++)
            msgpack_pack_int64(p, sizes[i]);
        fx_put_int(c, "n_clusters", k);
        fx_put_int(c, "dimension", d);
        msgpack_pack_double(fx_key(c, "obj"), obj);
    }
    free(x);
    free(cent);
    free(assign);
    free(sizes);
    return rc;
}
