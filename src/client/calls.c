/*
 * calls.c - libfaissproxy: the typed operations of a handle (indexes and
 * their leases, train, search, range search, reconstruct, remove, reset,
 * set_param, export, import; add is add.c's), and what they share.
 *
 * Each one checks its arguments, builds its request on the request plumbing
 * of conn.c (fpx_c_begin, then the vectors as the message's data section,
 * copied once), sends it with fpx_c_call and reads what it needs from the
 * reply. The errors are the handle's, as conn.c describes them.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fpx_c_get_int(const msgpack_object *map, const char *key, int64_t *v) {
    const msgpack_object *o = fpx_map_get(map, key);
    return o ? fpx_obj_int(o, v) : -1;
}

static void copy_str(const msgpack_object *map, const char *key, char *dst, size_t cap) {
    const msgpack_object *o = fpx_map_get(map, key);
    const char *s;
    size_t n;
    dst[0] = 0;
    if (o && fpx_obj_str(o, &s, &n) == 0)
        snprintf(dst, cap, "%.*s", (int)n, s);
}

static int read_info(fpx_client *c, const msgpack_object *m, fpx_index_info *info) {
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return fpx_c_fail(c, "protocol_error", "reply lacks the index info map");
    memset(info, 0, sizeof *info);
    copy_str(m, "index_id", info->index_id, sizeof info->index_id);
    copy_str(m, "index_type", info->index_type, sizeof info->index_type);
    copy_str(m, "metric", info->metric, sizeof info->metric);
    fpx_c_get_int(m, "dimension", &info->dimension);
    fpx_c_get_int(m, "ntotal", &info->ntotal);
    const msgpack_object *t = fpx_map_get(m, "is_trained");
    info->is_trained = t && t->type == MSGPACK_OBJECT_BOOLEAN && t->via.boolean;
    return 0;
}

int fpx_c_check_args(fpx_client *c, const char *index_id, int64_t n, int64_t d) {
    fpx_c_clear_error(c);
    if (!index_id)
        return fpx_c_fail(c, "validation_error", "index_id is NULL");
    if (n < 0)
        return fpx_c_fail(c, "validation_error", "n must be >= 0");
    if (d < 0)
        return fpx_c_fail(c, "validation_error", "d must be >= 0");
    return 0;
}

/* Vectors are float32 rows of d components, or (binary) uint8 rows of d/8
 * bytes for d bits. */
size_t fpx_c_row_bytes(int64_t d, int binary) {
    return binary ? (size_t)d / 8 : (size_t)d * sizeof(float);
}

/* Packs vector_shape [n, columns], and dtype for binary rows: 1 + binary keys. */
void fpx_c_pack_shape(msgpack_packer *pk, int64_t n, int64_t d, int binary) {
    fpx_pack_cstr(pk, "vector_shape");
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, n);
    msgpack_pack_int64(pk, binary ? d / 8 : d);
    if (binary) {
        fpx_pack_cstr(pk, "dtype");
        fpx_pack_cstr(pk, "uint8");
    }
}

/* Reserves the data section and copies the vectors (the one copy). */
int fpx_c_put_vectors(fpx_client *c, fpx_out *o, int64_t n, int64_t d, int binary, const void *x,
                      const int64_t *labels) {
    size_t vb = (size_t)n * fpx_c_row_bytes(d, binary);
    size_t lb = labels ? (size_t)n * sizeof(int64_t) : 0;
    uint8_t *p = fpx_out_data(o, vb + lb);
    if (!p) {
        fpx_out_discard(o);
        return fpx_c_fail(c, "internal_error", "out of memory building the request");
    }
    if (vb)
        memcpy(p, x, vb);
    if (lb)
        memcpy(p + vb, labels, lb);
    return 0;
}

/* Appends pre-encoded msgpack bytes to a packer. */
void fpx_c_pack_raw(msgpack_packer *pk, const void *p, size_t n) {
    pk->callback(pk->data, (const char *)p, n);
}

/* ---- operations -------------------------------------------------------------------- */
/* The lease to ask for: lease_seconds, or with FPX_LEASE_FROM_ENV the
 * drop-ins' FAISS_PROXY_LEASE_SECONDS (default FPX_LEASE_DEFAULT; 0: none).
 * 0 or -1 (error set). */
static int resolve_lease(fpx_client *c, int64_t lease_seconds, int64_t *out) {
    *out = lease_seconds;
    if (lease_seconds != FPX_LEASE_FROM_ENV)
        return lease_seconds < 0 ? fpx_c_fail(c, "validation_error", "lease_seconds must be >= 0")
                                 : 0;
    const char *v = getenv("FAISS_PROXY_LEASE_SECONDS");
    *out = FPX_LEASE_DEFAULT;
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < 0)
        return fpx_c_fail(
            c, "validation_error",
            "FAISS_PROXY_LEASE_SECONDS must be a whole number of seconds (0: no lease), "
            "got '%.40s'",
            v);
    *out = n;
    return 0;
}

/* After a leased index was made: renew it from now on. */
/* Starts renewing index_id's lease. When renewal cannot start, the lease
 * would lapse under the program: an index this call created is deleted
 * again; an index that was there before loses its lease instead. */
static int lease_made(fpx_client *c, const char *index_id, int64_t lease, int created) {
    if (lease == 0)
        return 0;
    if (!c->leases)
        c->leases = fpx_leaser_new(c->endpoint, c->api_key, c->tenant_id, c->server_key);
    if (!c->leases || fpx_leaser_add(c->leases, index_id, lease) != 0) {
        if (created)
            fpx_client_delete_index(c, index_id);
        else
            fpx_client_set_lease(c, index_id, 0);
        return fpx_c_fail(c, "internal_error", "cannot start renewing the lease of '%s'", index_id);
    }
    return 0;
}

int fpx_client_create_index(fpx_client *c, const char *index_id, int64_t dimension,
                            const char *index_type, const char *metric, fpx_index_info *info) {
    return fpx_client_create_index_leased(c, index_id, dimension, index_type, metric, 0, info);
}

int fpx_client_create_index_leased(fpx_client *c, const char *index_id, int64_t dimension,
                                   const char *index_type, const char *metric,
                                   int64_t lease_seconds, fpx_index_info *info) {
    int64_t lease;
    if (fpx_c_check_args(c, index_id, 0, dimension) || resolve_lease(c, lease_seconds, &lease))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk =
        fpx_c_begin(c, &o, "create_index", index_id, 2 + (metric != NULL) + (lease > 0));
    if (lease > 0) {
        fpx_pack_cstr(pk, "lease_seconds");
        msgpack_pack_int64(pk, lease);
    }
    fpx_pack_cstr(pk, "dimension");
    msgpack_pack_int64(pk, dimension);
    fpx_pack_cstr(pk, "index_type");
    fpx_pack_cstr(pk, index_type ? index_type : "IndexFlatL2");
    if (metric) {
        fpx_pack_cstr(pk, "metric");
        fpx_pack_cstr(pk, metric);
    }
    if (fpx_c_call(c, &o, &r))
        return -1;
    int rc = info ? read_info(c, r.m.meta, info) : 0;
    fpx_c_done(&r);
    return rc == 0 ? lease_made(c, index_id, lease, 1) : rc;
}

int fpx_client_set_lease(fpx_client *c, const char *index_id, int64_t lease_seconds) {
    if (fpx_c_check_args(c, index_id, 0, 0))
        return -1;
    if (lease_seconds < 0)
        return fpx_c_fail(c, "validation_error", "lease_seconds must be >= 0");
    fpx_out o;
    reply r;
    msgpack_packer *pk = fpx_c_begin(c, &o, "set_lease", index_id, 1);
    fpx_pack_cstr(pk, "lease_seconds");
    msgpack_pack_int64(pk, lease_seconds);
    if (fpx_c_call(c, &o, &r))
        return -1;
    fpx_c_done(&r);
    if (lease_seconds == 0) {
        fpx_leaser_forget(c->leases, index_id);
        return 0;
    }
    return lease_made(c, index_id, lease_seconds, 0);
}

int fpx_client_get_index_info(fpx_client *c, const char *index_id, fpx_index_info *info) {
    if (fpx_c_check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    fpx_c_begin(c, &o, "get_index_info", index_id, 0);
    if (fpx_c_call(c, &o, &r))
        return -1;
    int rc = info ? read_info(c, r.m.meta, info) : 0;
    fpx_c_done(&r);
    return rc;
}

int fpx_client_delete_index(fpx_client *c, const char *index_id) {
    if (fpx_c_check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    fpx_c_begin(c, &o, "delete_index", index_id, 0);
    fpx_leaser_forget(c->leases, index_id);
    if (fpx_c_call(c, &o, &r))
        return -1;
    fpx_c_done(&r);
    return 0;
}

int fpx_client_list_indexes(fpx_client *c, fpx_index_info **infos, size_t *count) {
    fpx_c_clear_error(c);
    fpx_out o;
    reply r;
    fpx_c_begin(c, &o, "list_indexes", NULL, 0);
    if (fpx_c_call(c, &o, &r))
        return -1;
    const msgpack_object *l = fpx_map_get(r.m.meta, "indexes");
    int rc = 0;
    if (!l || l->type != MSGPACK_OBJECT_ARRAY) {
        rc = fpx_c_fail(c, "protocol_error", "reply lacks the index list");
    } else {
        size_t n = l->via.array.size;
        fpx_index_info *a = calloc(n ? n : 1, sizeof *a);
        if (!a)
            rc = fpx_c_fail(c, "internal_error", "out of memory");
        for (size_t i = 0; a && rc == 0 && i < n; i++)
            rc = read_info(c, &l->via.array.ptr[i], &a[i]);
        if (rc == 0) {
            *infos = a;
            *count = n;
        } else {
            free(a);
        }
    }
    fpx_c_done(&r);
    return rc;
}

static int train_rows(fpx_client *c, const char *index_id, int64_t n, int64_t d, int binary,
                      const void *x) {
    if (fpx_c_check_args(c, index_id, n, d))
        return -1;
    fpx_out o;
    reply r;
    fpx_c_pack_shape(fpx_c_begin(c, &o, "train", index_id, 1 + (size_t)binary), n, d, binary);
    if (fpx_c_put_vectors(c, &o, n, d, binary, x, NULL) || fpx_c_call(c, &o, &r))
        return -1;
    fpx_c_done(&r);
    return 0;
}

int fpx_client_train(fpx_client *c, const char *index_id, int64_t n, int64_t d, const float *x) {
    return train_rows(c, index_id, n, d, 0, x);
}

int fpx_client_train_binary(fpx_client *c, const char *index_id, int64_t n, int64_t d,
                            const uint8_t *x) {
    return train_rows(c, index_id, n, d, 1, x);
}

/* ---- requests cut to the server's message size limit --------------------------------- */

/* A request over the server's max_message_size would be dropped unanswered,
 * so the calls that carry rows (add, search, range search) are cut into
 * consecutive requests of whole rows, each under the limit, sent in order.
 * A cut add is not atomic: when a later part fails, the earlier parts stay
 * added, and the error says how many vectors went in. */

/* Bytes of a request besides its rows: the header's fixed keys, the names
 * and keys it carries, and a filter; generous, as the limit is a hard one. */
size_t fpx_c_request_overhead(const fpx_client *c, const char *index_id, size_t extra) {
    return 512 + strlen(index_id) + (c->api_key ? strlen(c->api_key) : 0) +
           (c->tenant_id ? strlen(c->tenant_id) : 0) + extra;
}

/* What one add row adds to a request: its vector, its label, its key and
 * metadata. */
size_t fpx_c_add_row_bytes(size_t row, const int64_t *labels, const fpx_item *items, int64_t i) {
    size_t b = row + (labels ? sizeof(int64_t) : 0);
    if (items)
        b += 16 + (items[i].key ? strlen(items[i].key) : 0) +
             (items[i].metadata ? items[i].metadata_size : 0);
    return b;
}

/* How many rows from `from` on fit in one request under limit (at least one:
 * a single row over the limit is then refused by name, never sent). */
int64_t fpx_c_rows_that_fit(int64_t from, int64_t n, size_t head, size_t limit, size_t row,
                            const int64_t *labels, const fpx_item *items) {
    if (limit == SIZE_MAX)
        return n - from;
    size_t used = head;
    int64_t m = 0;
    while (from + m < n) {
        size_t b = fpx_c_add_row_bytes(row, labels, items, from + m);
        if (m > 0 && (used + b > limit || used + b < used))
            break;
        used += b;
        m++;
    }
    return m;
}

/* The server's limit for a call of n rows of `per_row` bytes after head
 * bytes; SIZE_MAX when there is none to respect. */
int fpx_c_call_limit(fpx_client *c, size_t head, int64_t n, size_t per_row, size_t *limit) {
    size_t total = (size_t)n > (SIZE_MAX - head) / (per_row ? per_row : 1)
                       ? SIZE_MAX
                       : head + (size_t)n * per_row;
    return fpx_c_limit(c, total, limit);
}

/* Packs the per-search parameters of opts as a "params" entry (if any). */
static size_t count_params(const fpx_search_opts *opts) {
    return opts ? (size_t)(opts->nprobe > 0) + (size_t)(opts->ef_search > 0) : 0;
}

static void pack_params(msgpack_packer *pk, const fpx_search_opts *opts) {
    size_t n = count_params(opts);
    if (!n)
        return;
    fpx_pack_cstr(pk, "params");
    msgpack_pack_map(pk, n);
    if (opts->nprobe > 0) {
        fpx_pack_cstr(pk, "nprobe");
        msgpack_pack_int64(pk, opts->nprobe);
    }
    if (opts->ef_search > 0) {
        fpx_pack_cstr(pk, "efSearch");
        msgpack_pack_int64(pk, opts->ef_search);
    }
}

static int hit_key(const msgpack_object *id, char **out) {
    *out = NULL;
    if (!id)
        return 0;
    if (id->type == MSGPACK_OBJECT_STR) {
        *out = strndup(id->via.str.ptr, id->via.str.size);
        return *out ? 0 : -1;
    }
    int64_t v;
    if (fpx_obj_int(id, &v) == 0) {
        char buf[32];
        snprintf(buf, sizeof buf, "%" PRId64, v);
        *out = strdup(buf);
        return *out ? 0 : -1;
    }
    return 0;
}

static int read_hits(fpx_client *c, const msgpack_object *m, int64_t nq, int64_t k,
                     fpx_hit **hits) {
    size_t n = (size_t)nq * (size_t)k;
    fpx_hit *h = calloc(n ? n : 1, sizeof *h);
    if (!h)
        return fpx_c_fail(c, "internal_error", "out of memory");
    *hits = h;
    if (!m || m->type != MSGPACK_OBJECT_ARRAY || (int64_t)m->via.array.size != nq)
        return 0; /* no metadata in the reply: no keys */
    for (int64_t q = 0; q < nq; q++) {
        const msgpack_object *row = &m->via.array.ptr[q];
        if (row->type != MSGPACK_OBJECT_ARRAY || (int64_t)row->via.array.size != k)
            continue;
        for (int64_t j = 0; j < k; j++) {
            const msgpack_object *e = &row->via.array.ptr[j];
            fpx_hit *t = &h[q * k + j];
            if (e->type != MSGPACK_OBJECT_MAP)
                continue;
            if (hit_key(fpx_map_get(e, "id"), &t->key))
                return fpx_c_fail(c, "internal_error", "out of memory");
            const msgpack_object *md = fpx_map_get(e, "metadata");
            if (md && md->type == MSGPACK_OBJECT_MAP) {
                msgpack_sbuffer sb;
                msgpack_packer pk;
                msgpack_sbuffer_init(&sb);
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                msgpack_pack_object(&pk, *md);
                t->metadata = (uint8_t *)sb.data; /* sbuffer memory is malloc'd */
                t->metadata_size = sb.size;
            }
        }
    }
    return 0;
}

static int search_once(fpx_client *c, const char *index_id, int64_t nq, int64_t d, int binary,
                       const void *x, int64_t k, const fpx_search_opts *opts, void *D, int64_t *I,
                       fpx_hit **hits) {
    size_t nparams = count_params(opts);
    fpx_out o;
    reply r;
    int uncompleted = !c->complete && !binary;
    msgpack_packer *pk =
        fpx_c_begin(c, &o, "search", index_id,
                    2 + (size_t)binary + (nparams > 0) + (hits != NULL) + (size_t)uncompleted);
    fpx_pack_cstr(pk, "k");
    msgpack_pack_int64(pk, k);
    fpx_c_pack_shape(pk, nq, d, binary);
    pack_params(pk, opts);
    if (uncompleted) {
        fpx_pack_cstr(pk, "complete");
        msgpack_pack_false(pk);
    }
    if (hits) {
        fpx_pack_cstr(pk, "include_metadata");
        msgpack_pack_true(pk);
    }
    if (fpx_c_put_vectors(c, &o, nq, d, binary, x, NULL))
        return -1;
    if (opts && opts->filter && opts->filter_size)
        fpx_c_pack_raw(fpx_out_meta(&o), opts->filter, opts->filter_size);
    if (fpx_c_call(c, &o, &r))
        return -1;
    size_t nres = (size_t)nq * (size_t)k;
    const msgpack_object *shape = fpx_map_get(r.m.header, "shape");
    int64_t sq, sk;
    int rc = 0;
    if (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size != 2 ||
        fpx_obj_int(&shape->via.array.ptr[0], &sq) || fpx_obj_int(&shape->via.array.ptr[1], &sk) ||
        sq != nq || sk != k || r.m.body.data_size != nres * 12) {
        rc = fpx_c_fail(c, "protocol_error", "search reply does not hold %lld x %lld results",
                        (long long)nq, (long long)k);
    } else {
        memcpy(D, r.m.body.data, nres * 4);
        memcpy(I, r.m.body.data + nres * 4, nres * 8);
        if (hits && read_hits(c, r.m.meta, nq, k, hits) != 0) {
            fpx_hits_free(*hits, nres);
            *hits = NULL;
            rc = -1;
        }
    }
    fpx_c_done(&r);
    return rc;
}

/* The filter a search sends with every part. */
static size_t filter_bytes(const fpx_search_opts *opts) {
    return opts && opts->filter ? opts->filter_size : 0;
}

/* A search cut into parts of whole queries: each part's request, and its
 * reply of k results a query (12 bytes each), stay under the limit; the
 * results are written in place, hits moved into one array. */
static int search_rows(fpx_client *c, const char *index_id, int64_t nq, int64_t d, int binary,
                       const void *x, int64_t k, const fpx_search_opts *opts, void *D, int64_t *I,
                       fpx_hit **hits) {
    if (fpx_c_check_args(c, index_id, nq, d))
        return -1;
    if (k < 1)
        return fpx_c_fail(c, "validation_error", "k must be >= 1");
    size_t row = fpx_c_row_bytes(d, binary);
    size_t per = row > (size_t)k * 12 ? row : (size_t)k * 12;
    size_t head = fpx_c_request_overhead(c, index_id, filter_bytes(opts));
    size_t limit;
    if (fpx_c_call_limit(c, head, nq, per, &limit) != 0)
        return -1;
    int64_t step = limit == SIZE_MAX || limit <= head ? nq : (int64_t)((limit - head) / per);
    if (step >= nq || nq == 0)
        return search_once(c, index_id, nq, d, binary, x, k, opts, D, I, hits);
    if (step < 1)
        step = 1; /* one query over the limit: refused by name below */
    fpx_hit *all = NULL;
    if (hits && !(all = calloc((size_t)nq * (size_t)k, sizeof *all)))
        return fpx_c_fail(c, "internal_error", "out of memory");
    for (int64_t q = 0; q < nq; q += step) {
        int64_t m = nq - q < step ? nq - q : step;
        fpx_hit *part = NULL;
        size_t off = (size_t)q * (size_t)k;
        if (search_once(c, index_id, m, d, binary, (const uint8_t *)x + (size_t)q * row, k, opts,
                        (uint8_t *)D + off * 4, I + off, hits ? &part : NULL) != 0) {
            fpx_hits_free(all, (size_t)nq * (size_t)k);
            return -1;
        }
        if (part) {
            memcpy(all + off, part, sizeof *part * (size_t)m * (size_t)k);
            free(part); /* its keys and metadata now belong to all */
        }
    }
    if (hits)
        *hits = all;
    return 0;
}

int fpx_client_search_ex(fpx_client *c, const char *index_id, int64_t nq, int64_t d, const float *x,
                         int64_t k, const fpx_search_opts *opts, float *D, int64_t *I,
                         fpx_hit **hits) {
    return search_rows(c, index_id, nq, d, 0, x, k, opts, D, I, hits);
}

int fpx_client_search(fpx_client *c, const char *index_id, int64_t nq, int64_t d, const float *x,
                      int64_t k, const fpx_search_opts *opts, float *D, int64_t *I) {
    return search_rows(c, index_id, nq, d, 0, x, k, opts, D, I, NULL);
}

int fpx_client_search_binary(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                             const uint8_t *x, int64_t k, int32_t *D, int64_t *I) {
    return search_rows(c, index_id, nq, d, 1, x, k, NULL, D, I, NULL);
}

void fpx_hits_free(fpx_hit *hits, size_t n) {
    if (!hits)
        return;
    for (size_t i = 0; i < n; i++) {
        free(hits[i].key);
        free(hits[i].metadata);
    }
    free(hits);
}

static int delete_ids(fpx_client *c, const char *index_id, size_t n, const char *const *keys,
                      const int64_t *labels, int64_t *deleted) {
    if (fpx_c_check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = fpx_c_begin(c, &o, "delete_vector", index_id, 1);
    fpx_pack_cstr(pk, "vector_ids");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        if (keys)
            fpx_pack_cstr(pk, keys[i]);
        else
            msgpack_pack_int64(pk, labels[i]);
    }
    if (fpx_c_call(c, &o, &r))
        return -1;
    if (deleted && fpx_c_get_int(r.m.meta, "deleted", deleted) != 0)
        *deleted = -1;
    fpx_c_done(&r);
    return 0;
}

int fpx_client_delete_keys(fpx_client *c, const char *index_id, size_t n, const char *const *keys,
                           int64_t *deleted) {
    return delete_ids(c, index_id, n, keys, NULL, deleted);
}

int fpx_client_delete_labels(fpx_client *c, const char *index_id, size_t n, const int64_t *labels,
                             int64_t *deleted) {
    return delete_ids(c, index_id, n, NULL, labels, deleted);
}

static int range_once(fpx_client *c, const char *index_id, int64_t nq, int64_t d, int binary,
                      const void *x, float radius, const fpx_search_opts *opts, int64_t **lims,
                      int64_t **labels, float **distances) {
    *lims = NULL;
    *labels = NULL;
    *distances = NULL;
    fpx_out o;
    reply r;
    msgpack_packer *pk =
        fpx_c_begin(c, &o, "range_search", index_id, 2 + (size_t)binary + (count_params(opts) > 0));
    fpx_pack_cstr(pk, "radius");
    msgpack_pack_float(pk, radius);
    fpx_c_pack_shape(pk, nq, d, binary);
    pack_params(pk, opts);
    if (fpx_c_put_vectors(c, &o, nq, d, binary, x, NULL))
        return -1;
    if (opts && opts->filter && opts->filter_size)
        fpx_c_pack_raw(fpx_out_meta(&o), opts->filter, opts->filter_size);
    if (fpx_c_call(c, &o, &r))
        return -1;
    int64_t rq, nres;
    size_t lsz = (size_t)(nq + 1) * 8;
    int rc = 0;
    if (fpx_c_get_int(r.m.header, "nq", &rq) || fpx_c_get_int(r.m.header, "nres", &nres) ||
        rq != nq || nres < 0 || r.m.body.data_size != lsz + (size_t)nres * 12) {
        rc = fpx_c_fail(c, "protocol_error", "range_search reply is not well formed");
    } else {
        *lims = malloc(lsz);
        *labels = malloc((size_t)nres * 8 + 1);
        *distances = malloc((size_t)nres * 4 + 1);
        if (!*lims || !*labels || !*distances) {
            free(*lims);
            free(*labels);
            free(*distances);
            *lims = *labels = NULL;
            *distances = NULL;
            rc = fpx_c_fail(c, "internal_error", "out of memory");
        } else {
            memcpy(*lims, r.m.body.data, lsz);
            memcpy(*labels, r.m.body.data + lsz, (size_t)nres * 8);
            memcpy(*distances, r.m.body.data + lsz + (size_t)nres * 8, (size_t)nres * 4);
        }
    }
    fpx_c_done(&r);
    return rc;
}

/* A range search cut into parts of whole queries under the request limit
 * (a part whose reply is over the limit is refused by the server), the
 * parts' results joined with lims shifted. */
static int range_rows(fpx_client *c, const char *index_id, int64_t nq, int64_t d, int binary,
                      const void *x, float radius, const fpx_search_opts *opts, int64_t **lims,
                      int64_t **labels, float **distances) {
    *lims = NULL;
    *labels = NULL;
    *distances = NULL;
    if (fpx_c_check_args(c, index_id, nq, d))
        return -1;
    size_t row = fpx_c_row_bytes(d, binary);
    size_t head = fpx_c_request_overhead(c, index_id, filter_bytes(opts));
    size_t limit;
    if (fpx_c_call_limit(c, head, nq, row, &limit) != 0)
        return -1;
    int64_t step =
        limit == SIZE_MAX || limit <= head || row == 0 ? nq : (int64_t)((limit - head) / row);
    if (step >= nq || nq == 0)
        return range_once(c, index_id, nq, d, binary, x, radius, opts, lims, labels, distances);
    if (step < 1)
        step = 1;
    int64_t *L = calloc((size_t)nq + 1, sizeof *L), *lab = NULL;
    float *dis = NULL;
    if (!L)
        return fpx_c_fail(c, "internal_error", "out of memory");
    int rc = 0;
    for (int64_t q = 0; q < nq && rc == 0; q += step) {
        int64_t m = nq - q < step ? nq - q : step;
        int64_t *pl, *plab;
        float *pd;
        rc = range_once(c, index_id, m, d, binary, (const uint8_t *)x + (size_t)q * row, radius,
                        opts, &pl, &plab, &pd);
        if (rc)
            break;
        size_t have = (size_t)L[q], add = (size_t)pl[m];
        int64_t *nl = realloc(lab, (have + add + 1) * sizeof *nl);
        float *nd = nl ? realloc(dis, (have + add + 1) * sizeof *nd) : NULL;
        if (nl)
            lab = nl;
        if (nd)
            dis = nd;
        if (!nl || !nd) {
            rc = fpx_c_fail(c, "internal_error", "out of memory");
        } else {
            memcpy(lab + have, plab, add * sizeof *lab);
            memcpy(dis + have, pd, add * sizeof *dis);
            for (int64_t i = 1; i <= m; i++)
                L[q + i] = (int64_t)have + pl[i];
        }
        free(pl);
        free(plab);
        free(pd);
    }
    if (rc) {
        free(L);
        free(lab);
        free(dis);
        return -1;
    }
    *lims = L;
    *labels = lab;
    *distances = dis;
    return 0;
}

int fpx_client_range_search(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                            const float *x, float radius, const fpx_search_opts *opts,
                            int64_t **lims, int64_t **labels, float **distances) {
    return range_rows(c, index_id, nq, d, 0, x, radius, opts, lims, labels, distances);
}

int fpx_client_range_search_binary(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                                   const uint8_t *x, int radius, int64_t **lims, int64_t **labels,
                                   float **distances) {
    return range_rows(c, index_id, nq, d, 1, x, (float)radius, NULL, lims, labels, distances);
}

/* Copies a reply of n rows ("shape" [n, columns]) into out. */
static int read_vectors(fpx_client *c, reply *r, int64_t n, int64_t d, int binary, void *out) {
    const msgpack_object *shape = fpx_map_get(r->m.header, "shape");
    int64_t sn, sd;
    if (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size != 2 ||
        fpx_obj_int(&shape->via.array.ptr[0], &sn) || fpx_obj_int(&shape->via.array.ptr[1], &sd))
        return fpx_c_fail(c, "protocol_error", "reply lacks its shape");
    int64_t cols = binary ? d / 8 : d;
    if (sn != n || sd != cols || r->m.body.data_size != (size_t)n * fpx_c_row_bytes(d, binary))
        return fpx_c_fail(c, "validation_error",
                          "the index holds %lld x %lld floats, not %lld x %lld", (long long)sn,
                          (long long)sd, (long long)n, (long long)cols);
    if (n)
        memcpy(out, r->m.body.data, r->m.body.data_size);
    return 0;
}

static int reconstruct_rows(fpx_client *c, const char *index_id, int64_t label, int64_t d,
                            int binary, void *out) {
    if (fpx_c_check_args(c, index_id, 1, d))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = fpx_c_begin(c, &o, "reconstruct", index_id, 1);
    fpx_pack_cstr(pk, "label");
    msgpack_pack_int64(pk, label);
    if (fpx_c_call(c, &o, &r))
        return -1;
    int rc = read_vectors(c, &r, 1, d, binary, out);
    fpx_c_done(&r);
    return rc;
}

int fpx_client_reconstruct(fpx_client *c, const char *index_id, int64_t label, int64_t d,
                           float *out) {
    return reconstruct_rows(c, index_id, label, d, 0, out);
}

int fpx_client_reconstruct_binary(fpx_client *c, const char *index_id, int64_t label, int64_t d,
                                  uint8_t *out) {
    return reconstruct_rows(c, index_id, label, d, 1, out);
}

static int reconstruct_n_rows(fpx_client *c, const char *index_id, int64_t i0, int64_t n, int64_t d,
                              int binary, void *out) {
    if (fpx_c_check_args(c, index_id, n, d))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = fpx_c_begin(c, &o, "reconstruct_n", index_id, 2);
    fpx_pack_cstr(pk, "i0");
    msgpack_pack_int64(pk, i0);
    fpx_pack_cstr(pk, "n");
    msgpack_pack_int64(pk, n);
    if (fpx_c_call(c, &o, &r))
        return -1;
    int rc = read_vectors(c, &r, n, d, binary, out);
    fpx_c_done(&r);
    return rc;
}

int fpx_client_reconstruct_n(fpx_client *c, const char *index_id, int64_t i0, int64_t n, int64_t d,
                             float *out) {
    return reconstruct_n_rows(c, index_id, i0, n, d, 0, out);
}

int fpx_client_reconstruct_n_binary(fpx_client *c, const char *index_id, int64_t i0, int64_t n,
                                    int64_t d, uint8_t *out) {
    return reconstruct_n_rows(c, index_id, i0, n, d, 1, out);
}

static int remove_call(fpx_client *c, const char *index_id, size_t n, const int64_t *labels,
                       int64_t lo, int64_t hi, int64_t *removed) {
    if (fpx_c_check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = fpx_c_begin(c, &o, "remove_ids", index_id, 1);
    fpx_pack_cstr(pk, labels ? "ids" : "range");
    msgpack_pack_array(pk, labels ? n : 2);
    for (size_t i = 0; labels && i < n; i++)
        msgpack_pack_int64(pk, labels[i]);
    if (!labels) {
        msgpack_pack_int64(pk, lo);
        msgpack_pack_int64(pk, hi);
    }
    if (fpx_c_call(c, &o, &r))
        return -1;
    if (removed && fpx_c_get_int(r.m.meta, "removed", removed) != 0)
        *removed = -1;
    fpx_c_done(&r);
    return 0;
}

int fpx_client_remove_ids(fpx_client *c, const char *index_id, size_t n, const int64_t *labels,
                          int64_t *removed) {
    static const int64_t none = 0;
    return remove_call(c, index_id, n, labels ? labels : &none, 0, 0, removed);
}

int fpx_client_remove_range(fpx_client *c, const char *index_id, int64_t lo, int64_t hi,
                            int64_t *removed) {
    return remove_call(c, index_id, 0, NULL, lo, hi, removed);
}

/* An operation whose request is index_id plus nothing, or name/value. */
static int simple_write(fpx_client *c, const char *op, const char *index_id, const char *name,
                        double value) {
    if (fpx_c_check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = fpx_c_begin(c, &o, op, index_id, name ? 2 : 0);
    if (name) {
        fpx_pack_cstr(pk, "name");
        fpx_pack_cstr(pk, name);
        fpx_pack_cstr(pk, "value");
        msgpack_pack_double(pk, value);
    }
    if (fpx_c_call(c, &o, &r))
        return -1;
    fpx_c_done(&r);
    return 0;
}

int fpx_client_reset(fpx_client *c, const char *index_id) {
    return simple_write(c, "reset", index_id, NULL, 0);
}

int fpx_client_set_param(fpx_client *c, const char *index_id, const char *name, double value) {
    if (!name)
        return fpx_c_fail(c, "validation_error", "name is NULL");
    return simple_write(c, "set_params", index_id, name, value);
}

int fpx_client_export(fpx_client *c, const char *index_id, uint8_t **bytes, size_t *len) {
    *bytes = NULL;
    *len = 0;
    if (fpx_c_check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    fpx_c_begin(c, &o, "export_index", index_id, 0);
    if (fpx_c_call(c, &o, &r))
        return -1;
    int rc = 0;
    size_t n = r.m.body.data_size;
    if (!(*bytes = malloc(n ? n : 1))) {
        rc = fpx_c_fail(c, "internal_error", "out of memory");
    } else {
        if (n)
            memcpy(*bytes, r.m.body.data, n);
        *len = n;
    }
    fpx_c_done(&r);
    return rc;
}

int fpx_client_import(fpx_client *c, const char *index_id, const char *index_type,
                      const void *bytes, size_t len, fpx_index_info *info) {
    return fpx_client_import_leased(c, index_id, index_type, bytes, len, 0, info);
}

int fpx_client_import_leased(fpx_client *c, const char *index_id, const char *index_type,
                             const void *bytes, size_t len, int64_t lease_seconds,
                             fpx_index_info *info) {
    int64_t lease;
    if (fpx_c_check_args(c, index_id, 0, 0) || resolve_lease(c, lease_seconds, &lease))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk =
        fpx_c_begin(c, &o, "import_index", index_id, (index_type ? 1 : 0) + (lease > 0));
    if (lease > 0) {
        fpx_pack_cstr(pk, "lease_seconds");
        msgpack_pack_int64(pk, lease);
    }
    if (index_type) {
        fpx_pack_cstr(pk, "index_type");
        fpx_pack_cstr(pk, index_type);
    }
    uint8_t *p = fpx_out_data(&o, len);
    if (!p) {
        fpx_out_discard(&o);
        return fpx_c_fail(c, "internal_error", "out of memory building the request");
    }
    if (len)
        memcpy(p, bytes, len);
    if (fpx_c_call(c, &o, &r))
        return -1;
    int rc = info ? read_info(c, r.m.meta, info) : 0;
    fpx_c_done(&r);
    return rc == 0 ? lease_made(c, index_id, lease, 1) : rc;
}
