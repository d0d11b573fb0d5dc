/*
 * ops_index.c - operations on the registry and on whole indexes: ping,
 * list_indexes, create_index, import_index, get_index_info, delete_index and
 * export_index. Creating and importing build the new index here, without any
 * lock; the dispatcher stores and registers it (ops.h).
 */
#include "ops.h"
#include "probe.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FPX_INDEX_TYPE_MAX 255

int fpx_op_ping(fpx_req *r, fpx_out *o) {
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 3);
    fpx_pack_cstr(m, "version");
    fpx_pack_cstr(m, FPX_VERSION);
    fpx_pack_cstr(m, "protocol");
    msgpack_pack_int(m, FPX_PROTOCOL_VERSION);
    /* Clients size their requests by it: a larger one is dropped unanswered. */
    fpx_pack_cstr(m, "max_message_size");
    msgpack_pack_uint64(m, r->s->cfg->max_message_size);
    return 0;
}

int fpx_op_list_indexes(fpx_req *r, fpx_out *o) {
    fpx_index **mine;
    size_t n;
    if (fpx_server_list(r->s, r->tenant, &mine, &n) != 0)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 1);
    fpx_pack_cstr(m, "indexes");
    msgpack_pack_array(m, n);
    /* No registry lock is held here: each index is referenced, and one being
     * written only delays its own entry. */
    for (size_t i = 0; i < n; i++) {
        pthread_rwlock_rdlock(&mine[i]->lock);
        fpx_index_pack_info(mine[i], m);
        pthread_rwlock_unlock(&mine[i]->lock);
        fpx_index_unref(mine[i]);
    }
    free(mine);
    return 0;
}

int fpx_op_info(fpx_req *r, fpx_out *o) {
    fpx_reply_ok(r, o, 0);
    fpx_index_pack_info(r->ix, fpx_out_meta(o));
    return 0;
}

int fpx_op_deleted(fpx_req *r, fpx_out *o) {
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 1);
    fpx_pack_cstr(m, "deleted");
    msgpack_pack_true(m);
    return 0;
}

int fpx_prep_create_index(fpx_req *r) {
    char name[FPX_NAME_MAX + 1], type[FPX_INDEX_TYPE_MAX + 1], metric[16];
    int64_t dim;
    if (fpx_req_name(r, 1, name) || fpx_req_int(r, "dimension", 1, &dim))
        return -1;
    if (dim < 1 || dim > FPX_DIM_MAX)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "dimension must be in 1..%d, got %lld",
                           FPX_DIM_MAX, (long long)dim);
    int rc = fpx_req_str(r, "index_type", type, sizeof type);
    if (rc < 0)
        return -1;
    if (rc == 1)
        strcpy(type, "IndexFlatL2");
    if (!type[0])
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "index_type must not be empty");
    int has_metric = fpx_req_str(r, "metric", metric, sizeof metric);
    if (has_metric < 0)
        return -1;
    /* FAISS's metric_arg (the p of Lp), with the metrics past L2 and IP */
    double metric_arg;
    const msgpack_object *arg = fpx_map_get(r->h, "metric_arg");
    int has_arg = arg && arg->type != MSGPACK_OBJECT_NIL;
    if (has_arg && fpx_req_number(r, "metric_arg", &metric_arg))
        return -1;
    int64_t lease;
    if (fpx_req_lease(r, &lease))
        return -1;

    if (fpx_index_new_metric(r->tenant, name, type, dim, has_metric == 0 ? metric : NULL,
                             has_arg ? &metric_arg : NULL, &r->made, &r->err))
        return -1;
    r->made->lease_seconds = lease;
    return 0;
}

int fpx_op_export_index(fpx_req *r, fpx_out *o) {
    fpx_index *ix = r->ix;
    int rc = 0;
    {
        uint8_t *buf = NULL;
        size_t len = 0;
        /* part "quantizer": the IVF's coarse quantizer alone (its centroids hold no
         * vectors of the index, so neither the live set nor the labels apply) */
        char part[16];
        int prc = fpx_req_str(r, "part", part, sizeof part);
        if (prc < 0)
            return -1;
        if (prc == 0 && strcmp(part, "quantizer") != 0)
            return fpx_err_set(&r->err, FPX_E_VALIDATION, "part must be \"quantizer\" or absent");
        if (prc == 0) {
            rc = fpx_engine_serialize_quantizer(ix->eng, &buf, &len, &r->err);
        } else {
            rc = fpx_index_export(ix, &buf, &len, &r->err);
        }
        if (rc == 0 && len > r->s->cfg->max_message_size)
            rc = fpx_err_set(&r->err, FPX_E_LIMIT,
                             "the exported index (%zu bytes) exceeds the message size limit", len);
        if (rc == 0) {
            msgpack_packer *h = fpx_reply_ok(r, o, 1);
            fpx_pack_cstr(h, "format");
            fpx_pack_cstr(h, "faiss");
            uint8_t *data = fpx_out_data(o, len);
            if (!data)
                rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
            else
                memcpy(data, buf, len);
            if (rc == 0)
                fpx_index_pack_info(ix, fpx_out_meta(o));
        }
        free(buf);
    }
    return rc;
}

/* The import's reading: the probe, then the server's own read of the bytes
 * (hundreds of MB copied into FAISS's structures), on a low-priority thread
 * (fpx_run_low_priority): one tenant's import leaves the cores to the other
 * tenants' searches. */
typedef struct import_job {
    fpx_req *r;
    const char *name, *type;
} import_job;

static int read_import(void *p) {
    import_job *j = p;
    fpx_req *r = j->r;
    return fpx_import_build(r->tenant, j->name, j->type, r->msg.body.data, r->msg.body.data_size,
                            r->msg.meta, 1, &r->made, &r->err);
}

int fpx_import_build(const char *tenant, const char *name, const char *index_type,
                     const uint8_t *data, size_t len, const msgpack_object *meta, int probe,
                     fpx_index **made, fpx_err *err) {
    char type[256];
    fpx_engine *eng = NULL;
    int64_t *labels = NULL;
    int had_idmap = 0;
    snprintf(type, sizeof type, "%s", index_type);
    if ((probe && fpx_probe_import(data, len, err)) ||
        fpx_engine_import(data, len, &eng, &labels, &had_idmap, err))
        return -1;
    int64_t dim = fpx_engine_dim(eng);
    if (dim < 1 || dim > 65536) {
        fpx_engine_free(eng);
        free(labels);
        return fpx_err_set(err, FPX_E_VALIDATION, "dimension %lld is out of 1..65536",
                           (long long)dim);
    }
    size_t tl = strlen(type);
    size_t wl = had_idmap == 2 ? 7 : 6;
    if (had_idmap && !fpx_index_type_has_idmap(type) && tl + wl < sizeof type) {
        /* remember the wrapper, so an export gives it back */
        memmove(type + wl, type, tl + 1);
        memcpy(type, had_idmap == 2 ? "IDMap2," : "IDMap,", wl);
    }
    *made = NULL;
    int rc = fpx_index_import(tenant, name, type, eng, labels, made, err);
    free(labels);
    /* A backup's keys and metadata (list_keys' entries) come with the index,
     * in its first snapshot: the index appears whole or not at all. */
    const msgpack_object *items = meta ? fpx_map_get(meta, "items") : NULL;
    if (rc == 0 && meta && meta->type != MSGPACK_OBJECT_MAP)
        rc = fpx_err_set(err, FPX_E_VALIDATION, "the metadata section must be a map");
    else if (rc == 0 && items && items->type != MSGPACK_OBJECT_NIL)
        rc = fpx_index_attach_keys(*made, items, err);
    if (rc != 0 && *made) {
        fpx_index_free(*made);
        *made = NULL;
    }
    return rc;
}

int fpx_prep_import_index(fpx_req *r) {
    char name[FPX_NAME_MAX + 1], type[256];
    if (fpx_req_name(r, 1, name))
        return -1;
    int rc = fpx_req_str(r, "index_type", type, sizeof type);
    if (rc < 0)
        return -1;
    if (rc == 1 || !type[0])
        strcpy(type, "imported");
    int64_t lease;
    if (fpx_req_lease(r, &lease))
        return -1;
    if (r->msg.body.data_size == 0)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "the data section must hold a FAISS index (write_index bytes)");
    import_job j = {r, name, type};
    if (fpx_run_low_priority(read_import, &j) != 0)
        return -1;
    r->made->lease_seconds = lease;
    return 0;
}
