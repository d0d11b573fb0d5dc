/*
 * shard_read.c - the reads of a sharded index (docs/cluster.md, "Sharding"):
 * search and range_search ask every shard at once and merge the hits in
 * one server's order; reconstruct asks the shard a label lives on;
 * list_keys pages the shards' entries in label order; the standalone codec
 * is shard 0's. shard.c routes the request here.
 */
#include "shard_impl.h"

#include "server/index.h"
#include "server/ops.h"
#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reads ------------------------------------------------------------------------- */

/* Asks every shard the same read; when some shards' replies carry metadata
 * (they hold caller keys) and others not, those are asked again with
 * include_metadata, so that every hit has its entry (as one server holding
 * a key sends entries for all). */
static int gather(fpx_cluster *c, fpx_req *r, const fpx_def *d, const char *op, sreply *x,
                  int *with_meta) {
    static const char *const drop[] = {"include_metadata", NULL};
    int any = 0, all = 1;
    scall *k = calloc((size_t)d->shards, sizeof *k);
    if (!k)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    for (int pass = 0; pass < 2; pass++) {
        int64_t n = 0;
        for (int64_t s = 0; s < d->shards; s++) {
            if (pass == 1 && x[s].m.meta)
                continue;
            if (pass == 1)
                fpx_sreply_free(&x[s]);
            k[n] = (scall){.c = c, .r = r, .d = d, .shard = s, .x = &x[s]};
            msgpack_packer *p =
                fpx_shard_sub_begin(&k[n].o, r, d, s, op, pass ? drop : NULL, pass ? 1 : 0);
            if (pass) {
                fpx_pack_cstr(p, "include_metadata");
                msgpack_pack_true(p);
            }
            uint8_t *out = fpx_out_data(&k[n].o, r->msg.body.data_size);
            if (out && r->msg.body.data_size)
                memcpy(out, r->msg.body.data, r->msg.body.data_size);
            if (r->msg.meta)
                msgpack_pack_object(fpx_out_meta(&k[n].o), *r->msg.meta);
            n++;
        }
        /* every shard is asked at once: the search takes its slowest shard's
         * time, not the sum of theirs */
        if (fpx_shard_calls(k, n, r) != 0) {
            free(k);
            return -1;
        }
        for (int64_t s = 0; s < d->shards; s++) {
            any |= x[s].m.meta != NULL;
            all &= x[s].m.meta != NULL;
        }
        if (!any || all)
            break;
    }
    free(k);
    *with_meta = any;
    return 0;
}

typedef struct cand {
    double dist; /* a float32, or a binary index's int32 Hamming distance */
    int64_t label;
    int64_t shard, pos;
} cand;

/* One server's order: found hits before missing ones (-1), the nearest
 * first (L2: smallest distance; IP: largest), equal distances by label. */
static int by_l2(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if ((x->label < 0) != (y->label < 0))
        return x->label < 0 ? 1 : -1;
    if (x->dist != y->dist)
        return x->dist < y->dist ? -1 : 1;
    return x->label < y->label ? -1 : x->label > y->label;
}

static int by_ip(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if ((x->label < 0) != (y->label < 0))
        return x->label < 0 ? 1 : -1;
    if (x->dist != y->dist)
        return x->dist > y->dist ? -1 : 1;
    return x->label < y->label ? -1 : x->label > y->label;
}

static int by_label(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->label != y->label)
        return x->label < y->label ? -1 : 1;
    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

/* A distance of a reply: float32, or int32 (bin); and written back. Both
 * are exact in a double. */
static double dist_at(const uint8_t *p, int bin) {
    if (bin) {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    float v;
    memcpy(&v, p, 4);
    return v;
}

static void put_dist(uint8_t *p, double dist, int bin) {
    if (bin) {
        int32_t v = (int32_t)dist;
        memcpy(p, &v, 4);
    } else {
        float v = (float)dist;
        memcpy(p, &v, 4);
    }
}

static int is_ip(const fpx_def *d) {
    const char *factory;
    fpx_metric m = FPX_METRIC_L2;
    fpx_err err = {0};
    fpx_index_resolve_type(d->index_type, d->metric[0] ? d->metric : NULL, &factory, &m, &err);
    return m == FPX_METRIC_IP;
}

int fpx_shard_search(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int recons = 0;
    if (fpx_req_bool(r, "reconstruct", &recons))
        return -1;
    if (recons)
        return fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                           "reconstruct is not served on sharded indexes: search, then "
                           "reconstruct the labels");
    sreply x[FPX_SHARDS_MAX] = {0};
    int with_meta = 0, rc = gather(c, r, d, "search", x, &with_meta);
    int64_t nq = 0, k = 0;
    const msgpack_object *shape = rc == 0 ? fpx_map_get(x[0].m.header, "shape") : NULL;
    if (rc == 0 &&
        (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size != 2 ||
         fpx_obj_int(&shape->via.array.ptr[0], &nq) || fpx_obj_int(&shape->via.array.ptr[1], &k)))
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's search reply without its shape");
    size_t nres = (size_t)nq * (size_t)k;
    for (int64_t s = 0; rc == 0 && s < d->shards; s++)
        if (x[s].m.body.data_size != nres * 12)
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's search reply of another size");
    cand *cs = rc == 0 ? malloc((size_t)(d->shards * (k ? k : 1)) * sizeof *cs) : NULL;
    if (rc == 0 && !cs)
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    fpx_out o;
    if (rc == 0) {
        fpx_out_init(&o);
        fpx_reply_search(r, &o, fpx_shard_binary(d), nq, k, 0);
        uint8_t *out = fpx_out_data(&o, nres * 12);
        msgpack_packer *mp = with_meta ? fpx_out_meta(&o) : NULL;
        if (mp)
            msgpack_pack_array(mp, (size_t)nq);
        int ip = is_ip(d), bin = fpx_shard_binary(d);
        for (int64_t q = 0; out && q < nq; q++) {
            size_t nc = 0;
            for (int64_t s = 0; s < d->shards; s++)
                for (int64_t j = 0; j < k; j++) {
                    size_t at = (size_t)(q * k + j);
                    cand *e = &cs[nc++];
                    e->dist = dist_at(x[s].m.body.data + at * 4, bin);
                    memcpy(&e->label, x[s].m.body.data + nres * 4 + at * 8, 8);
                    e->shard = s;
                    e->pos = j;
                }
            qsort(cs, nc, sizeof *cs, ip ? by_ip : by_l2);
            if (mp)
                msgpack_pack_array(mp, (size_t)k);
            for (int64_t j = 0; j < k; j++) {
                size_t at = (size_t)(q * k + j);
                put_dist(out + at * 4, cs[j].dist, bin);
                memcpy(out + nres * 4 + at * 8, &cs[j].label, 8);
                if (!mp)
                    continue;
                const msgpack_object *lists = x[cs[j].shard].m.meta;
                const msgpack_object *row =
                    lists->type == MSGPACK_OBJECT_ARRAY && lists->via.array.size == (uint32_t)nq
                        ? &lists->via.array.ptr[q]
                        : NULL;
                if (cs[j].label >= 0 && row && row->type == MSGPACK_OBJECT_ARRAY &&
                    row->via.array.size == (uint32_t)k)
                    msgpack_pack_object(mp, row->via.array.ptr[cs[j].pos]);
                else
                    msgpack_pack_nil(mp);
            }
        }
        rc = fpx_shard_reply(r, &o);
    }
    free(cs);
    fpx_sreplies_free(x, d->shards);
    return rc;
}

/* Per query, the shards' results joined and ordered by label (the order in
 * which one flat index scans its vectors). */
int fpx_shard_range_search(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    sreply x[FPX_SHARDS_MAX] = {0};
    int with_meta = 0, rc = gather(c, r, d, "range_search", x, &with_meta);
    int64_t nq = 0, total = 0;
    int64_t nres[FPX_SHARDS_MAX] = {0};
    for (int64_t s = 0; rc == 0 && s < d->shards; s++) {
        const msgpack_object *a = fpx_map_get(x[s].m.header, "nq");
        const msgpack_object *b = fpx_map_get(x[s].m.header, "nres");
        if (!a || !b || fpx_obj_int(a, &nq) || fpx_obj_int(b, &nres[s]) ||
            x[s].m.body.data_size != (size_t)(nq + 1) * 8 + (size_t)nres[s] * 12)
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's range_search reply is malformed");
        total += nres[s];
    }
    if (rc == 0 && (size_t)total * 12 + (size_t)(nq + 1) * 8 > r->s->cfg->max_message_size)
        rc = fpx_err_set(&r->err, FPX_E_LIMIT,
                         "%lld results would exceed the message size limit: use a smaller radius",
                         (long long)total);
    cand *cs = rc == 0 ? malloc((size_t)(total ? total : 1) * sizeof *cs) : NULL;
    if (rc == 0 && !cs)
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    if (rc == 0) {
        fpx_out o;
        fpx_out_init(&o);
        msgpack_packer *h = fpx_reply_ok(r, &o, 2);
        fpx_pack_cstr(h, "nq");
        msgpack_pack_int64(h, nq);
        fpx_pack_cstr(h, "nres");
        msgpack_pack_uint64(h, (uint64_t)total);
        size_t lsz = (size_t)(nq + 1) * 8;
        uint8_t *out = fpx_out_data(&o, lsz + (size_t)total * 12);
        msgpack_packer *mp = with_meta ? fpx_out_meta(&o) : NULL;
        if (mp)
            msgpack_pack_array(mp, (size_t)total);
        int64_t at = 0;
        for (int64_t q = 0; out && q < nq; q++) {
            memcpy(out + (size_t)q * 8, &at, 8);
            size_t nc = 0;
            for (int64_t s = 0; s < d->shards; s++) {
                const uint8_t *p = x[s].m.body.data;
                int64_t lo, hi;
                memcpy(&lo, p + (size_t)q * 8, 8);
                memcpy(&hi, p + (size_t)(q + 1) * 8, 8);
                for (int64_t j = lo; j < hi && j < nres[s]; j++) {
                    cand *e = &cs[nc++];
                    memcpy(&e->label, p + lsz + (size_t)j * 8, 8);
                    e->dist = dist_at(p + lsz + (size_t)nres[s] * 8 + (size_t)j * 4, 0);
                    e->shard = s;
                    e->pos = j;
                }
            }
            qsort(cs, nc, sizeof *cs, by_label);
            for (size_t j = 0; j < nc; j++, at++) {
                memcpy(out + lsz + (size_t)at * 8, &cs[j].label, 8);
                put_dist(out + lsz + (size_t)total * 8 + (size_t)at * 4, cs[j].dist, 0);
                if (!mp)
                    continue;
                const msgpack_object *hits = x[cs[j].shard].m.meta;
                if (hits->type == MSGPACK_OBJECT_ARRAY &&
                    hits->via.array.size == (uint32_t)nres[cs[j].shard])
                    msgpack_pack_object(mp, hits->via.array.ptr[cs[j].pos]);
                else
                    msgpack_pack_nil(mp);
            }
        }
        if (out)
            memcpy(out + (size_t)nq * 8, &at, 8);
        rc = fpx_shard_reply(r, &o);
    }
    free(cs);
    fpx_sreplies_free(x, d->shards);
    return rc;
}

/* The vector of label: asked of shard label mod S (where an unkeyed vector
 * is), then of the others (a keyed vector is on its key's shard). */
static int reconstruct_one(fpx_cluster *c, fpx_req *r, const fpx_def *d, int64_t label, sreply *x) {
    static const char *const drop[] = {"label", "i0", "n", NULL};
    fpx_err last = {0};
    for (int64_t t = 0; t < d->shards; t++) {
        int64_t s = (label % d->shards + t) % d->shards;
        fpx_out o;
        msgpack_packer *p = fpx_shard_sub_begin(&o, r, d, s, "reconstruct", drop, 1);
        fpx_pack_cstr(p, "label");
        msgpack_pack_int64(p, label);
        fpx_err err = {0};
        if (fpx_shard_call(c, r, d, s, &o, x, &err) == 0)
            return 0;
        if (err.type != FPX_E_NOT_FOUND) {
            r->err = err;
            return -1;
        }
        last = err;
    }
    /* one server's message, naming the index, not a shard */
    fpx_err_set(&r->err, last.type, "label %lld is not in index '%s'", (long long)label, d->name);
    return -1;
}

int fpx_shard_reconstruct(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int64_t label = 0;
    if (fpx_req_int(r, "label", 1, &label) != 0)
        return -1;
    if (label < 0)
        return fpx_err_set(&r->err, FPX_E_NOT_FOUND, "label %lld is not in the index",
                           (long long)label);
    sreply x;
    if (reconstruct_one(c, r, d, label, &x) != 0)
        return -1;
    /* the shard's reply is this one's: same request_id, same fields */
    r->relay = x.buf;
    r->relay_len = x.len;
    x.buf = NULL;
    fpx_sreply_free(&x);
    return 0;
}

int fpx_shard_reconstruct_n(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int64_t i0 = 0, n = 0;
    if (fpx_req_int(r, "i0", 1, &i0) != 0 || fpx_req_int(r, "n", 1, &n) != 0)
        return -1;
    if (i0 < 0 || n < 0)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "i0 and n must be >= 0");
    if (n > FPX_SHARD_RECONSTRUCT_MAX)
        return fpx_err_set(&r->err, FPX_E_LIMIT,
                           "reconstruct_n of a sharded index takes at most %d labels a call, "
                           "got %lld",
                           FPX_SHARD_RECONSTRUCT_MAX, (long long)n);
    size_t row = fpx_shard_row(d);
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *h = fpx_reply_ok(r, &o, 2);
    fpx_pack_cstr(h, "dtype");
    fpx_pack_cstr(h, fpx_shard_binary(d) ? "uint8" : "float32");
    fpx_pack_cstr(h, "shape");
    msgpack_pack_array(h, 2);
    msgpack_pack_int64(h, n);
    msgpack_pack_int64(h, fpx_shard_width(d));
    uint8_t *out = fpx_out_data(&o, (size_t)n * row);
    for (int64_t i = 0; out && i < n; i++) {
        sreply x;
        if (reconstruct_one(c, r, d, i0 + i, &x) != 0) {
            fpx_out_discard(&o);
            return -1;
        }
        int ok = x.m.body.data_size == row;
        if (ok)
            memcpy(out + (size_t)i * row, x.m.body.data, row);
        fpx_sreply_free(&x);
        if (!ok) {
            fpx_out_discard(&o);
            return fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's reconstruct of another size");
        }
    }
    return fpx_shard_reply(r, &o);
}

/* ---- list_keys, codecs ------------------------------------------------------------ */

/* One entry of a shard's list_keys page. */
typedef struct kentry {
    int64_t label;
    const msgpack_object *obj;
} kentry;

static int by_entry_label(const void *a, const void *b) {
    const kentry *x = a, *y = b;
    return (x->label > y->label) - (x->label < y->label);
}

/* The msgpack size of o. */
static size_t packed_size(const msgpack_object *o) {
    msgpack_sbuffer sb;
    msgpack_packer p;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&p, *o);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/*
 * list_keys: every shard's entries (each shard listed to its end, page by
 * page), joined in label order, which is one server's order (its slots are
 * in the order of writes, and each write takes the next labels) for every
 * index whose labels were not given with with_ids. The cursor is the next
 * page's first label plus one: a label stays valid across writes and
 * compactions of any shard (so no cursor is ever stale here), and any
 * cursor >= 0 is valid.
 */
int fpx_shard_list_keys(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    static const char *const drop[] = {"cursor", "limit", NULL};
    int64_t cursor = 0, limit = FPX_LIST_KEYS_DEFAULT;
    if (fpx_req_int(r, "cursor", 0, &cursor) < 0 || fpx_req_int(r, "limit", 0, &limit) < 0)
        return -1;
    if (cursor < 0)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "cursor must be one list_keys gave");
    if (limit < 1 || limit > FPX_K_MAX)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "limit must be 1..%d", FPX_K_MAX);
    int64_t from = cursor > 0 ? cursor - 1 : INT64_MIN;
    sreply **pages = NULL; /* each its own allocation: an fpx_msg points into itself */
    kentry *es = NULL;
    size_t npages = 0, cap = 0, ne = 0, ecap = 0;
    int rc = 0;
    for (int64_t s = 0; rc == 0 && s < d->shards; s++) {
        uint64_t next = 0;
        /* bounded: each page but the last holds at least one entry */
        for (int64_t round = 0; rc == 0 && round < ((int64_t)1 << 40); round++) {
            if (npages == cap) {
                size_t nc = cap ? 2 * cap : 16;
                sreply **np = realloc(pages, nc * sizeof *np);
                if (!np) {
                    rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
                    break;
                }
                pages = np;
                cap = nc;
            }
            fpx_out o;
            msgpack_packer *p = fpx_shard_sub_begin(&o, r, d, s, "list_keys", drop, next ? 2 : 1);
            fpx_pack_cstr(p, "limit");
            msgpack_pack_int64(p, FPX_K_MAX);
            if (next) {
                fpx_pack_cstr(p, "cursor");
                msgpack_pack_uint64(p, next);
            }
            sreply *x = pages[npages] = calloc(1, sizeof *x);
            if (!x) {
                fpx_out_discard(&o);
                rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
                break;
            }
            npages++;
            if (fpx_shard_call(c, r, d, s, &o, x, &r->err) != 0) {
                rc = -1;
                break;
            }
            const msgpack_object *items = x->m.meta ? fpx_map_get(x->m.meta, "items") : NULL;
            const msgpack_object *nx = x->m.meta ? fpx_map_get(x->m.meta, "next") : NULL;
            if (!items || items->type != MSGPACK_OBJECT_ARRAY || !nx) {
                rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's list_keys reply is malformed");
                break;
            }
            for (uint32_t i = 0; i < items->via.array.size; i++) {
                const msgpack_object *it = &items->via.array.ptr[i];
                const msgpack_object *l =
                    it->type == MSGPACK_OBJECT_MAP ? fpx_map_get(it, "label") : NULL;
                int64_t label;
                if (!l || fpx_obj_int(l, &label)) {
                    rc = fpx_err_set(&r->err, FPX_E_INTERNAL,
                                     "a shard's list_keys entry has no label");
                    break;
                }
                if (label < from)
                    continue;
                if (ne == ecap) {
                    size_t nc = ecap ? 2 * ecap : 256;
                    kentry *np = realloc(es, nc * sizeof *np);
                    if (!np) {
                        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
                        break;
                    }
                    es = np;
                    ecap = nc;
                }
                es[ne++] = (kentry){label, it};
            }
            if (nx->type == MSGPACK_OBJECT_NIL)
                break;
            if (nx->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                rc =
                    fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's list_keys cursor is malformed");
                break;
            }
            next = nx->via.u64;
        }
    }
    if (rc == 0) {
        qsort(es, ne, sizeof *es, by_entry_label);
        /* a page, as one server's: limit entries, or about half the message
         * size limit in bytes (at least one entry) */
        size_t budget = r->s->cfg->max_message_size / 2, bytes = 0, count = 0;
        for (; count < ne && (int64_t)count < limit; count++) {
            size_t b = packed_size(es[count].obj) + 16;
            if (count > 0 && bytes + b > budget)
                break;
            bytes += b;
        }
        fpx_out o;
        fpx_out_init(&o);
        fpx_reply_ok(r, &o, 0);
        msgpack_packer *m = fpx_out_meta(&o);
        msgpack_pack_map(m, 2);
        fpx_pack_cstr(m, "items");
        msgpack_pack_array(m, (uint32_t)count);
        for (size_t i = 0; i < count; i++)
            msgpack_pack_object(m, *es[i].obj);
        fpx_pack_cstr(m, "next");
        if (count < ne)
            msgpack_pack_int64(m, es[count].label + 1);
        else
            msgpack_pack_nil(m);
        rc = fpx_shard_reply(r, &o);
    }
    for (size_t i = 0; i < npages; i++) {
        fpx_sreply_free(pages[i]);
        free(pages[i]);
    }
    free(pages);
    free(es);
    return rc;
}

/* sa_encode, sa_decode: FAISS's standalone codec reads only the index's
 * training, which every shard shares (train publishes one trained index to
 * all), so shard 0's answer is the index's. */
int fpx_shard_codec(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    fpx_out o;
    sreply x;
    fpx_shard_sub_begin(&o, r, d, 0, r->op->name, NULL, 0);
    uint8_t *out = fpx_out_data(&o, r->msg.body.data_size);
    if (out && r->msg.body.data_size)
        memcpy(out, r->msg.body.data, r->msg.body.data_size);
    if (r->msg.meta)
        msgpack_pack_object(fpx_out_meta(&o), *r->msg.meta);
    if (fpx_shard_call(c, r, d, 0, &o, &x, &r->err) != 0)
        return -1;
    r->relay = x.buf; /* the same request_id, the same fields */
    r->relay_len = x.len;
    x.buf = NULL;
    fpx_sreply_free(&x);
    return 0;
}