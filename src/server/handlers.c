/*
 * handlers.c - one function per operation, and the dispatch table.
 *
 * fpx_server_handle decodes the body in place (the vectors stay in the
 * received message), authenticates, and calls the operation's handler. A
 * handler validates everything before it changes anything; a write then goes
 * to the log (durable) and is applied to memory; only then is the reply
 * built. A search reply is built in place: FAISS writes distances and labels
 * straight into the outgoing body.
 */
#include "request.h"
#include "server.h"
#include "store.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FPX_DIM_MAX 65536
#define FPX_INDEX_TYPE_MAX 255

/* ---- reply helpers -------------------------------------------------------------- */

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

void fpx_pack_bool(msgpack_packer *pk, int v) {
    if (v)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* ---- header field helpers -------------------------------------------------------- */

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
    if (!fpx_name_valid(s, n))
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
    if (!ix)
        fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", name);
    return ix;
}

/* Locks ix (shared or exclusive) and checks it was not deleted meanwhile. */
int fpx_req_lock(fpx_req *r, fpx_index *ix, int exclusive) {
    if (exclusive)
        pthread_rwlock_wrlock(&ix->lock);
    else
        pthread_rwlock_rdlock(&ix->lock);
    if (ix->dropped) {
        pthread_rwlock_unlock(&ix->lock);
        return fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", ix->name);
    }
    return 0;
}

/*
 * The vector section as n rows of the index's vectors (plus n int64 labels
 * when with_labels): float32 rows of dim components, or for a binary index
 * uint8 rows of dim/8 bytes (dtype "uint8" required). The shape comes from
 * vector_shape [n, d] (d = components per row: dim, or dim/8 bytes), or, for
 * seed-style clients, from dimension (the index's) with n = size / row.
 * *copy receives a malloc'd aligned copy only when the section is misaligned
 * in the message.
 */
int fpx_req_vectors(fpx_req *r, const fpx_index *ix, int with_labels, int64_t *n_out,
                    const void **x, const int64_t **labels, void **copy) {
    const msgpack_object *shape = fpx_map_get(r->h, "vector_shape");
    const msgpack_object *dtype = fpx_map_get(r->h, "dtype");
    size_t size = r->msg.body.data_size;
    int binary = fpx_engine_is_binary(ix->eng);
    if (dtype && dtype->type == MSGPACK_OBJECT_NIL)
        dtype = NULL;
    if (binary ? !dtype || !fpx_obj_str_eq(dtype, "uint8")
               : dtype && !fpx_obj_str_eq(dtype, "float32"))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           binary ? "index '%s' is binary: send dtype \"uint8\" rows of d/8 bytes"
                                  : "dtype must be \"float32\" for index '%s' (binary \"uint8\" "
                                    "vectors need a binary index)",
                           ix->name);
    size_t vrow = fpx_engine_row_bytes(ix->eng);
    int64_t cols = binary ? ix->dim / 8 : ix->dim;
    size_t row = vrow + (with_labels ? sizeof(int64_t) : 0);
    int64_t n, d;
    *copy = NULL;
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
        *copy = malloc(size);
        if (!*copy)
            return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
        memcpy(*copy, p, size);
        p = *copy;
    }
    size_t nf = (size_t)n * (size_t)ix->dim;
    for (size_t i = 0; !binary && i < nf; i++) {
        if (!isfinite(((const float *)p)[i])) {
            free(*copy);
            *copy = NULL;
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "vector %zu component %zu is NaN or infinite", i / (size_t)ix->dim,
                               i % (size_t)ix->dim);
        }
    }
    *n_out = n;
    *x = n > 0 ? (const void *)p : NULL;
    if (labels)
        *labels = with_labels && n > 0 ? (const int64_t *)(p + (size_t)n * vrow) : NULL;
    return 0;
}

/* After a write: snapshot when the log has grown past the threshold. */
void fpx_req_snapshot(fpx_req *r, fpx_index *ix, int force) {
    /* The log may grow to the snapshot's own size before the next one: a
     * snapshot rewrites the whole index, so a fixed threshold would make
     * loading n bytes write O(n^2 / threshold); this keeps it O(n). */
    uint64_t threshold = r->s->cfg->snapshot_bytes;
    if (ix->snap_bytes > threshold)
        threshold = ix->snap_bytes;
    if (!force && ix->wal_bytes < threshold)
        return;
    fpx_err err = {0};
    if (fpx_store_snapshot(r->s->cfg->data_dir, ix, &err) != 0)
        fpx_log(FPX_LOG_WARN, "snapshot of %s/%s failed (the log keeps the data): %s", ix->tenant,
                ix->name, err.msg);
}

/* ---- operations --------------------------------------------------------------------- */

static int op_ping(fpx_req *r, fpx_out *o) {
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

static int cmp_index_name(const void *a, const void *b) {
    return strcmp((*(fpx_index *const *)a)->name, (*(fpx_index *const *)b)->name);
}

static int op_list_indexes(fpx_req *r, fpx_out *o) {
    fpx_server *s = r->s;
    pthread_rwlock_rdlock(&s->reg_lock);
    fpx_index **mine = malloc((s->nindexes ? s->nindexes : 1) * sizeof *mine);
    if (!mine) {
        pthread_rwlock_unlock(&s->reg_lock);
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < s->nindexes; i++)
        if (!strcmp(s->indexes[i]->tenant, r->tenant))
            mine[n++] = s->indexes[i];
    qsort(mine, n, sizeof *mine, cmp_index_name);
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 1);
    fpx_pack_cstr(m, "indexes");
    msgpack_pack_array(m, n);
    for (size_t i = 0; i < n; i++) {
        pthread_rwlock_rdlock(&mine[i]->lock);
        fpx_index_pack_info(mine[i], m);
        pthread_rwlock_unlock(&mine[i]->lock);
    }
    pthread_rwlock_unlock(&s->reg_lock);
    free(mine);
    return 0;
}

static int op_create_index(fpx_req *r, fpx_out *o) {
    char name[FPX_NAME_MAX + 1], type[FPX_INDEX_TYPE_MAX + 1], metric[8];
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

    fpx_index *ix = NULL;
    if (fpx_index_new(r->tenant, name, type, dim, has_metric == 0 ? metric : NULL, &ix, &r->err))
        return -1;
    return fpx_req_register(r, o, ix);
}

int fpx_req_register(fpx_req *r, fpx_out *o, fpx_index *ix) {
    fpx_server *s = r->s;
    int rc = 0;
    pthread_rwlock_wrlock(&s->reg_lock);
    for (size_t i = 0; i < s->nindexes && rc == 0; i++)
        if (!strcmp(s->indexes[i]->name, ix->name) && !strcmp(s->indexes[i]->tenant, r->tenant))
            rc = fpx_err_set(&r->err, FPX_E_EXISTS, "index '%s' already exists", ix->name);
    if (rc == 0)
        rc = fpx_store_create(s->cfg->data_dir, ix, &r->err);
    if (rc == 0 && fpx_server_insert(s, ix) != 0) {
        char dir[FPX_PATH_MAX];
        if (fpx_store_index_dir(s->cfg->data_dir, r->tenant, ix->name, dir) == 0)
            fpx_rmtree(dir);
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    }
    if (rc != 0) {
        pthread_rwlock_unlock(&s->reg_lock);
        fpx_store_close(ix);
        fpx_index_free(ix);
        return -1;
    }
    fpx_reply_ok(r, o, 0);
    fpx_index_pack_info(ix, fpx_out_meta(o));
    pthread_rwlock_unlock(&s->reg_lock);
    fpx_log(FPX_LOG_INFO, "created index %s/%s (%s, d=%lld, %lld vectors)", r->tenant, ix->name,
            ix->index_type, (long long)ix->dim, (long long)ix->nlive);
    return 0;
}

static int op_get_index_info(fpx_req *r, fpx_out *o) {
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    int rc = fpx_req_lock(r, ix, 0);
    if (rc == 0) {
        fpx_reply_ok(r, o, 0);
        fpx_index_pack_info(ix, fpx_out_meta(o));
        pthread_rwlock_unlock(&ix->lock);
    }
    fpx_index_unref(ix);
    return rc;
}

static int op_delete_index(fpx_req *r, fpx_out *o) {
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    fpx_server *s = r->s;
    pthread_rwlock_wrlock(&s->reg_lock);
    int rc = fpx_req_lock(r, ix, 1);
    if (rc == 0) {
        rc = fpx_store_remove(s->cfg->data_dir, ix, &r->err);
        if (rc == 0) {
            fpx_server_remove(s, ix);
            ix->dropped = 1;
        }
        pthread_rwlock_unlock(&ix->lock);
    }
    pthread_rwlock_unlock(&s->reg_lock);
    if (rc == 0) {
        fpx_log(FPX_LOG_INFO, "deleted index %s/%s", ix->tenant, ix->name);
        fpx_index_unref(ix); /* the registry's reference */
        fpx_reply_ok(r, o, 0);
        msgpack_packer *m = fpx_out_meta(o);
        msgpack_pack_map(m, 1);
        fpx_pack_cstr(m, "deleted");
        msgpack_pack_true(m);
    }
    fpx_index_unref(ix);
    return rc;
}

/* Logs a write, applies it, takes the record back if applying failed. */
int fpx_req_write(fpx_req *r, fpx_index *ix, const fpx_walrec *rec) {
    uint64_t before = ix->wal_bytes;
    if (fpx_store_log(r->s->cfg->data_dir, ix, rec, &r->err))
        return -1;
    if (fpx_server_replay(ix, rec, &r->err)) {
        fpx_store_unlog(ix, before);
        return -1;
    }
    return 0;
}

static int op_add_vectors(fpx_req *r, fpx_out *o) {
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    int with_ids = 0;
    const msgpack_object *wi = fpx_map_get(r->h, "with_ids");
    if (wi && wi->type != MSGPACK_OBJECT_NIL && fpx_obj_bool(wi, &with_ids)) {
        fpx_index_unref(ix);
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "with_ids must be a boolean");
    }
    int64_t n = 0;
    const void *x;
    const int64_t *labels;
    void *copy = NULL;
    int rc = fpx_req_vectors(r, ix, with_ids, &n, &x, &labels, &copy);
    if (rc == 0)
        rc = fpx_index_check_items(r->msg.meta, n, &r->err);
    for (int64_t i = 0; rc == 0 && labels && i < n; i++)
        if (labels[i] < 0)
            rc = fpx_err_set(&r->err, FPX_E_VALIDATION, "labels must be >= 0 (row %lld has %lld)",
                             (long long)i, (long long)labels[i]);
    if (rc == 0)
        rc = fpx_req_lock(r, ix, 1);
    if (rc == 0) {
        if (n > 0 && !fpx_engine_is_trained(ix->eng)) {
            rc = fpx_err_set(&r->err, FPX_E_NOT_TRAINED,
                             "index '%s' is not trained: call train before adding vectors",
                             ix->name);
        } else if (n > 0) {
            fpx_walrec rec = {FPX_WAL_ADD,
                              with_ids ? FPX_WAL_LABELS : 0,
                              n,
                              (const uint8_t *)(copy ? copy : (void *)r->msg.body.data),
                              r->msg.body.data_size,
                              r->msg.body.meta,
                              r->msg.body.meta_size};
            rc = fpx_req_write(r, ix, &rec);
            if (rc == 0)
                fpx_req_snapshot(r, ix, 0);
        }
        if (rc == 0) {
            fpx_reply_ok(r, o, 0);
            msgpack_packer *m = fpx_out_meta(o);
            msgpack_pack_map(m, 2);
            fpx_pack_cstr(m, "count");
            msgpack_pack_int64(m, n);
            fpx_pack_cstr(m, "ntotal");
            msgpack_pack_int64(m, ix->nlive);
        }
        pthread_rwlock_unlock(&ix->lock);
    }
    free(copy);
    fpx_index_unref(ix);
    return rc;
}

static int op_train(fpx_req *r, fpx_out *o) {
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    int64_t n = 0;
    const void *x;
    void *copy = NULL;
    int rc = fpx_req_vectors(r, ix, 0, &n, &x, NULL, &copy);
    if (rc == 0 && n == 0)
        rc = fpx_err_set(&r->err, FPX_E_VALIDATION, "train needs at least one vector");
    if (rc == 0)
        rc = fpx_req_lock(r, ix, 1);
    if (rc == 0) {
        fpx_walrec rec = {
            FPX_WAL_TRAIN, 0, n, (const uint8_t *)x, (size_t)n * fpx_engine_row_bytes(ix->eng),
            NULL,          0};
        rc = fpx_req_write(r, ix, &rec);
        if (rc == 0) {
            /* Snapshot now, so recovery never has to train again. */
            fpx_req_snapshot(r, ix, 1);
            fpx_reply_ok(r, o, 0);
            msgpack_packer *m = fpx_out_meta(o);
            msgpack_pack_map(m, 2);
            fpx_pack_cstr(m, "is_trained");
            fpx_pack_bool(m, fpx_engine_is_trained(ix->eng));
            fpx_pack_cstr(m, "ntotal");
            msgpack_pack_int64(m, ix->nlive);
        }
        pthread_rwlock_unlock(&ix->lock);
    }
    free(copy);
    fpx_index_unref(ix);
    return rc;
}

static int op_delete_vector(fpx_req *r, fpx_out *o) {
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
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = msgpack_pack_object(&pk, *ids) == 0
                 ? 0
                 : fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    if (rc == 0)
        rc = fpx_req_lock(r, ix, 1);
    if (rc == 0) {
        int64_t before = ix->nlive;
        fpx_walrec rec = {FPX_WAL_DELETE, 0, cnt, NULL, 0, (const uint8_t *)sb.data, sb.size};
        rc = fpx_req_write(r, ix, &rec);
        if (rc == 0) {
            fpx_req_snapshot(r, ix, 0);
            fpx_reply_ok(r, o, 0);
            msgpack_packer *m = fpx_out_meta(o);
            msgpack_pack_map(m, 2);
            fpx_pack_cstr(m, "deleted");
            msgpack_pack_int64(m, before - ix->nlive);
            fpx_pack_cstr(m, "ntotal");
            msgpack_pack_int64(m, ix->nlive);
        }
        pthread_rwlock_unlock(&ix->lock);
    }
    msgpack_sbuffer_destroy(&sb);
    fpx_index_unref(ix);
    return rc;
}

int fpx_req_search_params(fpx_req *r, fpx_search_params *p) {
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
        if (!dst)
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "unknown search parameter (known: nprobe, efSearch)");
        if (fpx_obj_int(&kv->val, &v) || v < 1 || v > (1 << 20))
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "search parameters must be integers in 1..1048576");
        *dst = v;
    }
    return 0;
}

static int op_search(fpx_req *r, fpx_out *o) {
    int64_t k;
    fpx_search_params params;
    int include_meta = 0;
    if (fpx_req_int(r, "k", 1, &k))
        return -1;
    if (k < 1)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "k must be >= 1, got %lld", (long long)k);
    if (k > FPX_K_MAX)
        return fpx_err_set(&r->err, FPX_E_LIMIT, "k must be at most %d, got %lld", FPX_K_MAX,
                           (long long)k);
    const msgpack_object *im = fpx_map_get(r->h, "include_metadata");
    if (im && im->type != MSGPACK_OBJECT_NIL && fpx_obj_bool(im, &include_meta))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "include_metadata must be a boolean");
    if (fpx_req_search_params(r, &params) || fpx_index_check_filter(r->msg.meta, &r->err))
        return -1;
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    int64_t nq = 0;
    const void *x;
    void *copy = NULL;
    int64_t *Itmp = NULL;
    int rc = fpx_req_vectors(r, ix, 0, &nq, &x, NULL, &copy);
    if (rc == 0 && (uint64_t)nq * (uint64_t)k > r->s->cfg->max_message_size / 12)
        rc = fpx_err_set(&r->err, FPX_E_LIMIT,
                         "the reply (%lld queries x k=%lld) would exceed the message size limit",
                         (long long)nq, (long long)k);
    if (rc == 0)
        rc = fpx_req_lock(r, ix, 0);
    if (rc != 0) {
        free(copy);
        fpx_index_unref(ix);
        return -1;
    }
    const msgpack_object *filter = r->msg.meta;
    int batchable = !filter || filter->type != MSGPACK_OBJECT_MAP || filter->via.map.size == 0;
    if (batchable)
        fpx_batch_enter(&ix->batch);
    size_t nres = (size_t)nq * (size_t)k;
    int binary = fpx_engine_is_binary(ix->eng);
    msgpack_packer *h = fpx_reply_ok(r, o, 1 + binary);
    if (binary) { /* Hamming distances are int32, the same width */
        fpx_pack_cstr(h, "distance_dtype");
        fpx_pack_cstr(h, "int32");
    }
    fpx_pack_cstr(h, "shape");
    msgpack_pack_array(h, 2);
    msgpack_pack_int64(h, nq);
    msgpack_pack_int64(h, k);
    uint8_t *data = fpx_out_data(o, nres * 12);
    if (!data)
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
    float *D = (float *)data;
    int64_t *I = NULL;
    if (rc == 0) {
        /* Labels follow nq*k floats: 8-aligned only when nq*k is even. */
        if (nres % 2 == 0) {
            I = (int64_t *)(data + nres * 4);
        } else if (!(I = Itmp = malloc(nres * sizeof *I))) {
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
        }
    }
    if (rc == 0 && batchable)
        rc = fpx_batch_search(ix, nq, x, k, &params, D, I, &r->err);
    else if (rc == 0)
        rc = fpx_index_search(ix, nq, x, k, &params, filter, D, I, &r->err);
    else if (batchable)
        fpx_batch_cancel(&ix->batch);
    if (rc == 0) {
        if (ix->nkeys > 0 || include_meta) {
            msgpack_packer *m = fpx_out_meta(o);
            msgpack_pack_array(m, (size_t)nq);
            for (int64_t q = 0; q < nq; q++) {
                msgpack_pack_array(m, (size_t)k);
                for (int64_t j = 0; j < k; j++)
                    fpx_index_pack_hit(ix, I[q * k + j], m);
            }
        }
        for (size_t i = 0; i < nres; i++)
            I[i] = fpx_index_label_of(ix, I[i]);
        if (Itmp)
            memcpy(data + nres * 4, Itmp, nres * sizeof *I);
    }
    pthread_rwlock_unlock(&ix->lock);
    free(Itmp);
    free(copy);
    fpx_index_unref(ix);
    return rc;
}

/* ---- replay ------------------------------------------------------------------------- */

/* Decodes an optional msgpack object stored in a log record. */
int fpx_unpack_stored(const uint8_t *p, size_t len, msgpack_unpacked *u, const msgpack_object **obj,
                      fpx_err *err) {
    *obj = NULL;
    msgpack_unpacked_init(u);
    if (len == 0)
        return 0;
    size_t used = 0, off = 0;
    if (fpx_msgpack_check(p, len, &used, err) || used != len ||
        msgpack_unpack_next(u, (const char *)p, len, &off) != MSGPACK_UNPACK_SUCCESS)
        return fpx_err_set(err, FPX_E_INTERNAL, "log record metadata is not valid msgpack");
    *obj = &u->data;
    return 0;
}

int fpx_server_replay(fpx_index *ix, const fpx_walrec *rec, fpx_err *err) {
    size_t row = fpx_engine_row_bytes(ix->eng);
    int with_labels = rec->op == FPX_WAL_ADD && (rec->flags & FPX_WAL_LABELS);
    if (rec->op == FPX_WAL_ADD || rec->op == FPX_WAL_TRAIN) {
        size_t need = row + (with_labels ? 8 : 0);
        if (rec->n < 0 || (uint64_t)rec->n > rec->data_len / need ||
            (size_t)rec->n * need != rec->data_len)
            return fpx_err_set(err, FPX_E_INTERNAL, "log record has a bad vector section");
    }
    msgpack_unpacked u;
    const msgpack_object *meta;
    if (fpx_unpack_stored(rec->meta, rec->meta_len, &u, &meta, err))
        return -1;
    int rc;
    int64_t count;
    const void *x = rec->data;
    switch (rec->op) {
    case FPX_WAL_ADD:
        rc = fpx_index_check_items(meta, rec->n, err);
        if (rc == 0)
            rc = fpx_index_add(ix, rec->n, x,
                               with_labels ? (const int64_t *)(rec->data + (size_t)rec->n * row)
                                           : NULL,
                               meta, &count, err);
        break;
    case FPX_WAL_TRAIN:
        rc = fpx_index_train(ix, rec->n, x, err);
        break;
    case FPX_WAL_DELETE:
        rc = meta ? fpx_index_delete(ix, meta, &count, err)
                  : fpx_err_set(err, FPX_E_INTERNAL, "delete record without ids");
        break;
    case FPX_WAL_REMOVE:
        rc = fpx_replay_remove(ix, meta, err);
        break;
    case FPX_WAL_RESET:
        rc = fpx_index_reset(ix, err);
        break;
    case FPX_WAL_PARAM:
        rc = fpx_replay_param(ix, meta, err);
        break;
    default:
        rc = fpx_err_set(err, FPX_E_INTERNAL, "unknown log record type %d", (int)rec->op);
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------- */

static const struct {
    const char *name;
    fpx_handler fn;
} ops[] = {
    {"search", op_search},
    {"add_vectors", op_add_vectors},
    {"create_index", op_create_index},
    {"delete_vector", op_delete_vector},
    {"delete_index", op_delete_index},
    {"get_index_info", op_get_index_info},
    {"list_indexes", op_list_indexes},
    {"train", op_train},
    {"ping", op_ping},
    {"range_search", fpx_op_range_search},
    {"reconstruct", fpx_op_reconstruct},
    {"reconstruct_n", fpx_op_reconstruct_n},
    {"remove_ids", fpx_op_remove_ids},
    {"reset", fpx_op_reset},
    {"set_params", fpx_op_set_params},
    {"export_index", fpx_op_export_index},
    {"import_index", fpx_op_import_index},
};

/* Prebuilt reply for when even an error reply cannot be allocated. */
static const uint8_t oom_reply[] = {
    /* preamble {"header_size": 62, "vector_size": 0, "metadata_size": 0} */
    0x83, 0xab, 'h', 'e', 'a', 'd', 'e', 'r', '_', 's', 'i', 'z', 'e', 0x3e, 0xab, 'v', 'e', 'c',
    't', 'o', 'r', '_', 's', 'i', 'z', 'e', 0x00, 0xad, 'm', 'e', 't', 'a', 'd', 'a', 't', 'a', '_',
    's', 'i', 'z', 'e', 0x00,
    /* header {"status": "error", "error_type": "internal_error", "message": "out of memory"} */
    0x83, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xa5, 'e', 'r', 'r', 'o', 'r', 0xaa, 'e', 'r', 'r',
    'o', 'r', '_', 't', 'y', 'p', 'e', 0xae, 'i', 'n', 't', 'e', 'r', 'n', 'a', 'l', '_', 'e', 'r',
    'r', 'o', 'r', 0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e', 0xad, 'o', 'u', 't', ' ', 'o', 'f', ' ',
    'm', 'e', 'm', 'o', 'r', 'y'};

void fpx_server_handle(fpx_server *s, const uint8_t *body, size_t len, uint8_t **reply,
                       size_t *reply_len, int *is_static) {
    fpx_req r;
    memset(&r, 0, sizeof r);
    r.s = s;
    *is_static = 0;
    fpx_out o;
    fpx_out_init(&o);
    int rc = -1, decoded = 0;
    if (fpx_msg_decode(&r.msg, body, len, &r.err) == 0) {
        decoded = 1;
        r.h = r.msg.header;
        r.rid = fpx_map_get(r.h, "request_id");
        if (r.rid && r.rid->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
            r.rid->type != MSGPACK_OBJECT_NEGATIVE_INTEGER &&
            !(r.rid->type == MSGPACK_OBJECT_STR && fpx_obj_utf8_valid(r.rid)))
            r.rid = NULL; /* only integers and UTF-8 strings are echoed */
        const msgpack_object *op = fpx_map_get(r.h, "operation");
        const char *opname;
        size_t oplen;
        if (!op || fpx_obj_str(op, &opname, &oplen)) {
            fpx_err_set(&r.err, FPX_E_PROTOCOL, "header needs \"operation\", a string");
        } else if (fpx_auth_check(s->auth, fpx_map_get(r.h, "api_key"),
                                  fpx_map_get(r.h, "tenant_id"), &r.tenant, &r.err) == 0) {
            fpx_handler fn = NULL;
            for (size_t i = 0; i < sizeof ops / sizeof ops[0] && !fn; i++)
                if (strlen(ops[i].name) == oplen && !memcmp(ops[i].name, opname, oplen))
                    fn = ops[i].fn;
            if (!fn)
                fpx_err_set(&r.err, FPX_E_UNSUPPORTED, "unknown operation \"%.*s\"",
                            (int)(oplen > 64 ? 64 : oplen), opname);
            else
                rc = fn(&r, &o);
        }
    }
    if (rc == 0 && fpx_out_finish(&o, reply, reply_len) == 0) {
        fpx_msg_destroy(&r.msg);
        return;
    }
    if (rc == 0)
        fpx_err_set(&r.err, FPX_E_INTERNAL, "out of memory building the reply");
    else
        fpx_out_discard(&o);
    if (r.err.type == FPX_OK)
        fpx_err_set(&r.err, FPX_E_INTERNAL, "request failed");
    fpx_log(FPX_LOG_DEBUG, "request failed: %s: %s", fpx_errtype_name(r.err.type), r.err.msg);
    if (fpx_build_error(&r.err, r.rid, reply, reply_len) != 0) {
        *reply = (uint8_t *)oom_reply;
        *reply_len = sizeof oom_reply;
        *is_static = 1;
    }
    if (decoded)
        fpx_msg_destroy(&r.msg);
}
