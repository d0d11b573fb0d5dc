/*
 * ops_faiss.c - the operations of FAISS's index API beyond the seed's six:
 * range_search, reconstruct, reconstruct_n, remove_ids, reset, set_params,
 * export_index and import_index (docs/protocol.md has their fields).
 *
 * They follow FAISS's semantics where a FAISS program would notice the
 * difference: remove_ids fails on HNSW and renumbers flat indexes as FAISS
 * does, reconstruct fails on an IVF index without a direct map, and export
 * produces the bytes FAISS's write_index would for the same contents. Writes
 * go through the log like every other write (request.h).
 */
#include "request.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Largest FAISS parameter name accepted by set_params. */
#define FPX_PARAM_NAME_MAX 64

/* Packs slot hits (or nil) for the reply metadata. */
static void pack_hits(const fpx_index *ix, const int64_t *slots, size_t n, msgpack_packer *m) {
    msgpack_pack_array(m, n);
    for (size_t i = 0; i < n; i++)
        fpx_index_pack_hit(ix, slots[i], m);
}

static int get_include_metadata(fpx_req *r, int *v) {
    *v = 0;
    const msgpack_object *im = fpx_map_get(r->h, "include_metadata");
    if (im && im->type != MSGPACK_OBJECT_NIL && fpx_obj_bool(im, v))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "include_metadata must be a boolean");
    return 0;
}

/* A number field (integer or float) that must be finite. */
static int get_number(fpx_req *r, const char *key, double *v) {
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

/* ---- range_search ---------------------------------------------------------------- */

int fpx_op_range_search(fpx_req *r, fpx_out *o) {
    double radius = 0;
    fpx_search_params params;
    int include_meta;
    if (get_number(r, "radius", &radius) || get_include_metadata(r, &include_meta) ||
        fpx_req_search_params(r, &params) || fpx_index_check_filter(r->msg.meta, &r->err))
        return -1;
    if (fabs(radius) > 3.4e38)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "radius must fit a float32");
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    int64_t nq = 0;
    const void *x;
    void *copy = NULL;
    int64_t *lims = NULL, *I = NULL;
    float *D = NULL;
    int rc = fpx_req_vectors(r, ix, 0, &nq, &x, NULL, &copy);
    if (rc == 0)
        rc = fpx_req_lock(r, ix, 0);
    if (rc != 0) {
        free(copy);
        fpx_index_unref(ix);
        return -1;
    }
    rc = fpx_index_range_search(ix, nq, x, (float)radius, &params, r->msg.meta, &lims, &D, &I,
                                &r->err);
    size_t nres = rc == 0 ? (size_t)lims[nq] : 0;
    if (rc == 0 && (nres * 12 + (size_t)(nq + 1) * 8) > r->s->cfg->max_message_size)
        rc = fpx_err_set(&r->err, FPX_E_LIMIT,
                         "%zu results would exceed the message size limit: use a smaller radius",
                         nres);
    if (rc == 0) {
        msgpack_packer *h = fpx_reply_ok(r, o, 2);
        fpx_pack_cstr(h, "nq");
        msgpack_pack_int64(h, nq);
        fpx_pack_cstr(h, "nres");
        msgpack_pack_uint64(h, nres);
        size_t lsz = (size_t)(nq + 1) * sizeof(int64_t);
        uint8_t *data = fpx_out_data(o, lsz + nres * 12);
        if (!data) {
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
        } else {
            /* lims, then labels (both int64, 8-aligned), then distances */
            memcpy(data, lims, lsz);
            if (ix->nkeys > 0 || include_meta)
                pack_hits(ix, I, nres, fpx_out_meta(o));
            for (size_t i = 0; i < nres; i++)
                I[i] = fpx_index_label_of(ix, I[i]);
            memcpy(data + lsz, I, nres * sizeof(int64_t));
            memcpy(data + lsz + nres * sizeof(int64_t), D, nres * sizeof(float));
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    free(lims);
    free(D);
    free(I);
    free(copy);
    fpx_index_unref(ix);
    return rc;
}

/* ---- reconstruct ------------------------------------------------------------------ */

/* Starts a reply of n vectors (float32, or uint8 rows of dim/8 bytes for a
 * binary index); returns where they go. */
static void *vectors_reply(fpx_req *r, fpx_out *o, const fpx_index *ix, int64_t n) {
    int binary = fpx_engine_is_binary(ix->eng);
    msgpack_packer *h = fpx_reply_ok(r, o, 2);
    fpx_pack_cstr(h, "dtype");
    fpx_pack_cstr(h, binary ? "uint8" : "float32");
    fpx_pack_cstr(h, "shape");
    msgpack_pack_array(h, 2);
    msgpack_pack_int64(h, n);
    msgpack_pack_int64(h, binary ? ix->dim / 8 : ix->dim);
    void *v = fpx_out_data(o, (size_t)n * fpx_engine_row_bytes(ix->eng));
    if (!v)
        fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
    return v;
}

int fpx_op_reconstruct(fpx_req *r, fpx_out *o) {
    int64_t label;
    if (fpx_req_int(r, "label", 1, &label))
        return -1;
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    int rc = fpx_req_lock(r, ix, 0);
    if (rc == 0) {
        int64_t slot = fpx_index_slot_of(ix, label);
        void *v = NULL;
        if (slot < 0)
            rc = fpx_err_set(&r->err, FPX_E_NOT_FOUND, "label %lld is not in index '%s'",
                             (long long)label, ix->name);
        else if (!(v = vectors_reply(r, o, ix, 1)))
            rc = -1;
        else
            rc = fpx_engine_reconstruct(ix->eng, slot, v, &r->err);
        pthread_rwlock_unlock(&ix->lock);
    }
    fpx_index_unref(ix);
    return rc;
}

int fpx_op_reconstruct_n(fpx_req *r, fpx_out *o) {
    int64_t i0, n;
    if (fpx_req_int(r, "i0", 1, &i0) || fpx_req_int(r, "n", 1, &n))
        return -1;
    if (i0 < 0 || n < 0 || i0 > INT64_MAX - n)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "i0 and n must be >= 0");
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    int rc = 0;
    if ((uint64_t)n > r->s->cfg->max_message_size / fpx_engine_row_bytes(ix->eng))
        rc = fpx_err_set(&r->err, FPX_E_LIMIT, "%lld vectors would exceed the message size limit",
                         (long long)n);
    if (rc == 0)
        rc = fpx_req_lock(r, ix, 0);
    if (rc != 0) {
        fpx_index_unref(ix);
        return -1;
    }
    int64_t *slots = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!slots)
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
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
    pthread_rwlock_unlock(&ix->lock);
    free(slots);
    fpx_index_unref(ix);
    return rc;
}

/* ---- remove_ids, reset, set_params: logged writes ----------------------------------- */

/* Runs a logged write of op with meta (msgpack bytes, or NULL), then replies
 * {"ntotal": n}, with "removed" first for remove_ids. */
static int write_op(fpx_req *r, fpx_out *o, fpx_walop op, const msgpack_sbuffer *meta) {
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    int rc = fpx_req_lock(r, ix, 1);
    if (rc == 0) {
        int64_t before = ix->nlive;
        fpx_walrec rec = {
            op, 0, 0, NULL, 0, meta ? (const uint8_t *)meta->data : NULL, meta ? meta->size : 0};
        if (op == FPX_WAL_REMOVE && fpx_engine_check_remove(ix->eng, &r->err))
            rc = -1; /* FAISS's refusal, before anything is logged */
        if (rc == 0)
            rc = fpx_req_write(r, ix, &rec);
        if (rc == 0) {
            fpx_req_snapshot(r, ix, op == FPX_WAL_RESET);
            fpx_reply_ok(r, o, 0);
            msgpack_packer *m = fpx_out_meta(o);
            msgpack_pack_map(m, op == FPX_WAL_REMOVE ? 2 : 1);
            if (op == FPX_WAL_REMOVE) {
                fpx_pack_cstr(m, "removed");
                msgpack_pack_int64(m, before - ix->nlive);
            }
            fpx_pack_cstr(m, "ntotal");
            msgpack_pack_int64(m, ix->nlive);
        }
        pthread_rwlock_unlock(&ix->lock);
    }
    fpx_index_unref(ix);
    return rc;
}

/* Reads {"ids": [int...]} or {"range": [lo, hi]} from a map (the request
 * header or a log record) into a malloc'd label list or a range. */
static int remove_spec(const msgpack_object *map, int64_t **labels, int64_t *n, int64_t *lo,
                       int64_t *hi, fpx_err *err) {
    const msgpack_object *ids = fpx_map_get(map, "ids"), *range = fpx_map_get(map, "range");
    *labels = NULL;
    *n = 0;
    if (ids && ids->type == MSGPACK_OBJECT_NIL)
        ids = NULL;
    if (range && range->type == MSGPACK_OBJECT_NIL)
        range = NULL;
    if (!ids == !range)
        return fpx_err_set(err, FPX_E_VALIDATION, "give exactly one of ids, range");
    if (range) {
        if (range->type != MSGPACK_OBJECT_ARRAY || range->via.array.size != 2 ||
            fpx_obj_int(&range->via.array.ptr[0], lo) || fpx_obj_int(&range->via.array.ptr[1], hi))
            return fpx_err_set(err, FPX_E_VALIDATION, "range must be [lo, hi] integers");
        return 0;
    }
    if (ids->type != MSGPACK_OBJECT_ARRAY)
        return fpx_err_set(err, FPX_E_VALIDATION, "ids must be a list of integer labels");
    uint32_t cnt = ids->via.array.size;
    *labels = malloc(sizeof(int64_t) * (cnt ? cnt : 1));
    if (!*labels)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    for (uint32_t i = 0; i < cnt; i++) {
        if (fpx_obj_int(&ids->via.array.ptr[i], &(*labels)[i])) {
            free(*labels);
            *labels = NULL;
            return fpx_err_set(err, FPX_E_VALIDATION, "ids[%u] must be an integer label", i);
        }
    }
    *n = cnt;
    return 0;
}

int fpx_op_remove_ids(fpx_req *r, fpx_out *o) {
    int64_t *labels, n, lo = 0, hi = 0;
    if (remove_spec(r->h, &labels, &n, &lo, &hi, &r->err))
        return -1;
    /* The log record holds the same spec, re-encoded on its own. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
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
    int rc = sb.data ? write_op(r, o, FPX_WAL_REMOVE, &sb)
                     : fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int fpx_replay_remove(fpx_index *ix, const msgpack_object *meta, fpx_err *err) {
    int64_t *labels, n, lo = 0, hi = 0, removed;
    if (!meta || remove_spec(meta, &labels, &n, &lo, &hi, err))
        return fpx_err_set(err, FPX_E_INTERNAL, "remove record is not valid");
    int rc = fpx_index_remove(ix, n, labels, lo, hi, &removed, err);
    free(labels);
    return rc;
}

int fpx_op_reset(fpx_req *r, fpx_out *o) {
    return write_op(r, o, FPX_WAL_RESET, NULL);
}

/* name and value of a set_params request or record. */
static int param_spec(const msgpack_object *map, char *name, double *value, fpx_err *err) {
    const msgpack_object *n = fpx_map_get(map, "name"), *v = fpx_map_get(map, "value");
    const char *s;
    size_t len;
    int64_t i;
    if (!n || fpx_obj_str(n, &s, &len) || len == 0 || len > FPX_PARAM_NAME_MAX)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "name must be a FAISS parameter name (e.g. \"nprobe\")");
    for (size_t k = 0; k < len; k++)
        if (!((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= 'A' && s[k] <= 'Z') ||
              (s[k] >= '0' && s[k] <= '9') || s[k] == '_'))
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "name must hold only letters, digits and '_'");
    if (v && (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64))
        *value = v->via.f64;
    else if (v && fpx_obj_int(v, &i) == 0)
        *value = (double)i;
    else
        return fpx_err_set(err, FPX_E_VALIDATION, "value must be a number");
    if (!isfinite(*value))
        return fpx_err_set(err, FPX_E_VALIDATION, "value must be finite");
    memcpy(name, s, len);
    name[len] = 0;
    return 0;
}

static int apply_param(fpx_index *ix, const char *name, double value, fpx_err *err) {
    if (!strcmp(name, "direct_map")) /* IndexIVF::make_direct_map, not a ParameterSpace name */
        return fpx_engine_set_direct_map(ix->eng,
                                         value == 0   ? 0
                                         : value == 1 ? 1
                                         : value == 2 ? 2
                                                      : -1,
                                         err);
    char spec[FPX_PARAM_NAME_MAX + 40];
    snprintf(spec, sizeof spec, "%s=%.17g", name, value);
    return fpx_engine_set_params(ix->eng, spec, err);
}

int fpx_op_set_params(fpx_req *r, fpx_out *o) {
    char name[FPX_PARAM_NAME_MAX + 1];
    double value;
    if (param_spec(r->h, name, &value, &r->err))
        return -1;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    fpx_pack_cstr(&pk, "name");
    fpx_pack_cstr(&pk, name);
    fpx_pack_cstr(&pk, "value");
    msgpack_pack_double(&pk, value);
    int rc = sb.data ? write_op(r, o, FPX_WAL_PARAM, &sb)
                     : fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int fpx_replay_param(fpx_index *ix, const msgpack_object *meta, fpx_err *err) {
    char name[FPX_PARAM_NAME_MAX + 1];
    double value;
    if (!meta || param_spec(meta, name, &value, err))
        return fpx_err_set(err, FPX_E_INTERNAL, "set_params record is not valid");
    return apply_param(ix, name, value, err);
}

/* ---- export / import ---------------------------------------------------------------- */

int fpx_op_export_index(fpx_req *r, fpx_out *o) {
    fpx_index *ix = fpx_req_index(r);
    if (!ix)
        return -1;
    int rc = fpx_req_lock(r, ix, 0);
    if (rc == 0) {
        uint8_t *buf = NULL;
        size_t len = 0;
        fpx_bitset live = fpx_index_live(ix);
        rc = fpx_engine_export(ix->eng, &live, ix->labels, strncmp(ix->index_type, "IDMap", 5) == 0,
                               &buf, &len, &r->err);
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
        pthread_rwlock_unlock(&ix->lock);
    }
    fpx_index_unref(ix);
    return rc;
}

/*
 * Runs FAISS's reader over untrusted bytes in a throwaway child process
 * first. FAISS 1.7.3's read_index leaks what it built when the bytes turn out
 * truncated or inconsistent, and it sizes vectors from the bytes before
 * checking them (a few bytes can claim gigabytes). In the child, a leak, a
 * huge allocation or a crash costs nothing; the server reads the bytes itself
 * only once they are known to be good. FAISS's message comes back on a pipe.
 */
static int probe_import(const uint8_t *buf, size_t len, fpx_err *err) {
    int fds[2];
    if (pipe(fds) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return fpx_err_set(err, FPX_E_INTERNAL, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        /* FAISS's (or a sanitizer's) complaints go to the pipe's reader as
         * the message below, not to the server's log. */
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO);
        fpx_engine *eng;
        int64_t *labels;
        int had;
        fpx_err e = {0};
        int rc = fpx_engine_import(buf, len, &eng, &labels, &had, &e);
        if (rc != 0) {
            ssize_t w = write(fds[1], e.msg, strnlen(e.msg, sizeof e.msg));
            (void)w; /* the parent has a fallback message */
        }
        _exit(rc == 0 ? 0 : 1); /* no cleanup: the process is thrown away */
    }
    close(fds[1]);
    char msg[sizeof err->msg];
    size_t got = 0;
    ssize_t k;
    while (got < sizeof msg - 1 && (k = read(fds[0], msg + got, sizeof msg - 1 - got)) != 0) {
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            break;
        got += (size_t)k;
    }
    msg[got] = 0;
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        return fpx_err_set(err, FPX_E_VALIDATION, "FAISS cannot read the index: %s",
                           got ? msg : "invalid data");
    return fpx_err_set(err, FPX_E_VALIDATION,
                       "FAISS cannot read the index: its reader died on these bytes (signal %d)",
                       WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int fpx_op_import_index(fpx_req *r, fpx_out *o) {
    char name[FPX_NAME_MAX + 1], type[256];
    if (fpx_req_name(r, 1, name))
        return -1;
    int rc = fpx_req_str(r, "index_type", type, sizeof type);
    if (rc < 0)
        return -1;
    if (rc == 1 || !type[0])
        strcpy(type, "imported");
    if (r->msg.body.data_size == 0)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "the data section must hold a FAISS index (write_index bytes)");
    fpx_engine *eng;
    int64_t *labels;
    int had_idmap;
    if (probe_import(r->msg.body.data, r->msg.body.data_size, &r->err) ||
        fpx_engine_import(r->msg.body.data, r->msg.body.data_size, &eng, &labels, &had_idmap,
                          &r->err))
        return -1;
    int64_t dim = fpx_engine_dim(eng);
    if (dim < 1 || dim > 65536) {
        fpx_engine_free(eng);
        free(labels);
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "dimension %lld is out of 1..65536",
                           (long long)dim);
    }
    size_t tl = strlen(type);
    if (had_idmap && strncmp(type, "IDMap", 5) && tl + 6 < sizeof type) {
        /* remember the wrapper, so an export gives it back */
        memmove(type + 6, type, tl + 1);
        memcpy(type, "IDMap,", 6);
    }
    fpx_index *ix;
    rc = fpx_index_import(r->tenant, name, type, eng, labels, &ix, &r->err);
    free(labels);
    if (rc)
        return -1;
    return fpx_req_register(r, o, ix);
}
