/*
 * shard.c - serving an index of several shards (docs/cluster.md, "Sharding").
 *
 * Each shard of a sharded index is an index of its own in the cluster, named
 * ".shard-<uid>-<i>" (no user's index name starts with '.'), with its own
 * stream and replicas: creating, replicating, catching up and forwarding a
 * shard is what the cluster does for any index. What is here is the node
 * that receives a request naming the sharded index: it builds one request
 * of the protocol per shard it concerns, runs it on its own replica of the
 * shard (through the server's one entry point) or forwards it to a node
 * holding the shard (forward.c), and joins the replies into the reply one
 * server holding all the vectors would give.
 *
 * Routing: a vector with a caller key goes to shard FNV-1a-64(the key's
 * msgpack bytes) mod S; a vector without one to shard label mod S. Labels
 * of an add without with_ids come from one counter per sharded index, in
 * the bucket fpx_labels (key: the index's uid in hex), reserved n at a time
 * with a compare-and-set, so that they are FAISS's numbering as on one
 * server; each part is sent with its labels (with_ids).
 *
 * Here: calling the shards, info, writes, remove_ids and the entry point;
 * the reads are in shard_read.c, the label counter in shard_labels.c,
 * export_index in shard_export.c.
 */
#include "internal.h"
#include "shard_impl.h"

#include "server/apply.h"
#include "server/index.h"
#include "server/ops.h"
#include "server/order.h"
#include "server/util.h"

#include <float.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fpx_sreply_free(sreply *x) {
    if (x->decoded)
        fpx_msg_destroy(&x->m);
    if (x->buf && !x->is_static)
        free(x->buf);
    memset(x, 0, sizeof *x);
}

void fpx_shard_name(const uint8_t *uid, int64_t i, char *out) {
    char hex[FPX_UID_HEX];
    fpx_cluster_uid_hex(uid, hex);
    snprintf(out, FPX_NAME_MAX + 1, ".shard-%s-%lld", hex, (long long)i);
}

int fpx_shard_parse(const char *name, char *uid_hex, int64_t *i) {
    long long v;
    char tail;
    if (sscanf(name, ".shard-%32[0-9a-f]-%lld%c", uid_hex, &v, &tail) != 2 ||
        strlen(uid_hex) != 2 * FPX_UID_BYTES)
        return 0;
    *i = v;
    return 1;
}

static int key_dropped(const msgpack_object *k, const char *const *drop) {
    /* "name" stays: it is set_params's parameter, and the index's name only
     * where index_id is missing, which a shard's request never is */
    static const char *const always[] = {"operation", "index_id", "durability", NULL};
    for (const char *const *p = always; *p; p++)
        if (fpx_obj_str_eq(k, *p))
            return 1;
    for (const char *const *p = drop; p && *p; p++)
        if (fpx_obj_str_eq(k, *p))
            return 1;
    return 0;
}

/* A vector of d: dimension/8 bytes of a binary index (its dimension is in
 * bits), else dimension float32s; width is its vector_shape's second
 * number. */
int fpx_shard_binary(const fpx_def *d) {
    return fpx_index_type_is_binary(d->index_type);
}

int64_t fpx_shard_width(const fpx_def *d) {
    return fpx_shard_binary(d) ? d->dim / 8 : d->dim;
}

size_t fpx_shard_row(const fpx_def *d) {
    return fpx_shard_binary(d) ? (size_t)d->dim / 8 : (size_t)d->dim * 4;
}

/* Starts the header of a request to shard i: r's header (credentials,
 * request_id, client_id, parameters) without the fields of drop, with
 * operation op and the shard's name, and room for nextra more entries.
 * Parts are "acked": a synced write waits for its shards once every part
 * is in (synced.c), so that a slow shard never leaves the others unwritten. */
msgpack_packer *fpx_shard_sub_begin(fpx_out *o, const fpx_req *r, const fpx_def *d, int64_t i,
                                    const char *op, const char *const *drop, unsigned nextra) {
    const msgpack_object_map *h = &r->h->via.map;
    unsigned keep = 0;
    for (uint32_t j = 0; j < h->size; j++)
        keep += !key_dropped(&h->ptr[j].key, drop);
    char name[FPX_NAME_MAX + 1];
    fpx_shard_name(d->uid, i, name);
    fpx_out_init(o);
    msgpack_packer *p = fpx_out_hdr(o);
    msgpack_pack_map(p, keep + 3 + nextra);
    fpx_pack_cstr(p, "operation");
    fpx_pack_cstr(p, op);
    fpx_pack_cstr(p, "index_id");
    fpx_pack_cstr(p, name);
    fpx_pack_cstr(p, "durability");
    fpx_pack_cstr(p, "acked");
    for (uint32_t j = 0; j < h->size; j++)
        if (!key_dropped(&h->ptr[j].key, drop)) {
            msgpack_pack_object(p, h->ptr[j].key);
            msgpack_pack_object(p, h->ptr[j].val);
        }
    return p;
}

/* Runs the request o on shard i: here when this node holds the shard, else
 * forwarded to a node that does. 0 with an "ok" reply in *x; -1 with err
 * (the shard's own error, or why it could not be asked). *o is released. */
int fpx_shard_call(fpx_cluster *c, fpx_req *r, const fpx_def *d, int64_t i, fpx_out *o, sreply *x,
                   fpx_err *err) {
    memset(x, 0, sizeof *x);
    uint8_t *body;
    size_t len;
    if (fpx_out_finish(o, &body, &len) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    char nodes[FPX_PLACEMENT_LEN];
    fpx_def_shard_nodes(d, i, nodes, sizeof nodes);
    int rc = 0;
    if (fpx_node_listed(c, nodes)) {
        fpx_server_handle_from(c->s, body, len, 1, &x->buf, &x->len, &x->is_static);
    } else {
        fpx_req sr;
        memset(&sr, 0, sizeof sr);
        sr.s = c->s;
        sr.body = body;
        sr.body_len = len;
        sr.rid = r->rid;
        memcpy(sr.client_id, r->client_id, sizeof sr.client_id);
        rc = fpx_msg_decode(&sr.msg, body, len, err);
        if (rc == 0) {
            const char *op;
            size_t n;
            sr.h = sr.msg.header;
            fpx_obj_str(fpx_map_get(sr.h, "operation"), &op, &n);
            sr.op = fpx_op_find(op, n);
            rc = fpx_forward_to_holders(c, &sr, nodes);
            if (rc == 0) {
                x->buf = sr.relay;
                x->len = sr.relay_len;
            } else {
                *err = sr.err;
            }
            fpx_msg_destroy(&sr.msg);
        }
    }
    free(body);
    if (rc != 0)
        return -1;
    if (fpx_msg_decode(&x->m, x->buf, x->len, err) != 0) {
        fpx_sreply_free(x);
        return -1;
    }
    x->decoded = 1;
    const msgpack_object *st = fpx_map_get(x->m.header, "status");
    if (st && fpx_obj_str_eq(st, "ok"))
        return 0;
    const msgpack_object *et = fpx_map_get(x->m.header, "error_type");
    const msgpack_object *msg = fpx_map_get(x->m.header, "message");
    const char *s = "error";
    size_t n = 5;
    fpx_errtype type = FPX_E_INTERNAL;
    if (et && fpx_obj_str(et, &s, &n) == 0)
        type = fpx_errtype_from_name(s, n);
    if (!msg || fpx_obj_str(msg, &s, &n))
        s = "error", n = 5;
    fpx_err_set(err, type, "%.*s", (int)(n > 600 ? 600 : n), s);
    fpx_sreply_free(x);
    return -1;
}

/* Catches this node's replica of shard s up with the shard's stream, when
 * it holds one: the reply of a write sums counts over the shards, and one
 * server's count includes every write acknowledged before it, through any
 * node. A replica held elsewhere is that node's to keep current (writes go
 * to the first live node of a shard, from every node). A failure leaves the
 * count as the replica has it. */
void fpx_shard_sync(fpx_cluster *c, const fpx_def *d, int64_t s) {
    char nodes[FPX_PLACEMENT_LEN], name[FPX_NAME_MAX + 1];
    fpx_def_shard_nodes(d, s, nodes, sizeof nodes);
    if (!fpx_node_listed(c, nodes))
        return;
    fpx_shard_name(d->uid, s, name);
    fpx_err err = {0};
    if (fpx_cluster_sync(c, d->tenant, name, &err) != 0)
        fpx_log(FPX_LOG_WARN, "catching up shard %s of %s/%s: %s", name, d->tenant, d->name,
                err.msg);
}

static void *scall_run(void *arg) {
    scall *k = arg;
    if (k->sync)
        fpx_shard_sync(k->c, k->d, k->shard);
    k->rc = fpx_shard_call(k->c, k->r, k->d, k->shard, &k->o, k->x, &k->err);
    return NULL;
}

/* Runs the calls k[0..n) at once, each on a thread of its own (a shard held
 * elsewhere is forwarded on a socket the call takes from the forwarding
 * pool for itself, as ZeroMQ sockets are used by one thread at a time; a
 * shard held here is run through the server's entry point), and waits for
 * all. A call whose thread cannot start runs here. Every k[i].rc is set;
 * r->err is the error of the first failed call in shard order, and the
 * return is -1 when any failed. */
int fpx_shard_calls(scall *k, int64_t n, fpx_req *r) {
    /* The connection's earlier requests go first (order.h): the turn is
     * this thread's, which the calls on other threads do not wait for. */
    fpx_order_wait(&r->s->blocked);
    for (int64_t i = 1; i < n; i++)
        k[i].started = pthread_create(&k[i].th, NULL, scall_run, &k[i]) == 0;
    if (n > 0)
        scall_run(&k[0]);
    for (int64_t i = 1; i < n; i++) {
        if (k[i].started)
            pthread_join(k[i].th, NULL);
        else
            scall_run(&k[i]);
    }
    for (int64_t i = 0; i < n; i++)
        if (k[i].rc != 0) {
            r->err = k[i].err;
            return -1;
        }
    return 0;
}

static int64_t meta_int(const sreply *x, const char *k) {
    int64_t v = 0;
    const msgpack_object *o = x->m.meta ? fpx_map_get(x->m.meta, k) : NULL;
    if (o)
        fpx_obj_int(o, &v);
    return v;
}

/* The reply of r: o, finished into r->relay. */
int fpx_shard_reply(fpx_req *r, fpx_out *o) {
    if (fpx_out_finish(o, &r->relay, &r->relay_len) != 0)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory building the reply");
    return 0;
}

/* ---- info ------------------------------------------------------------------------ */

/* Asks every shard for its info, all at once; infos[S] is filled (freed by
 * the caller). With sync, the replicas held here catch up first. */
static int infos_of(fpx_cluster *c, fpx_req *r, const fpx_def *d, sreply *infos, int sync) {
    scall *k = calloc((size_t)d->shards, sizeof *k);
    if (!k)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    for (int64_t i = 0; i < d->shards; i++) {
        k[i] = (scall){.c = c, .r = r, .d = d, .shard = i, .x = &infos[i], .sync = sync};
        fpx_shard_sub_begin(&k[i].o, r, d, i, "get_index_info", NULL, 0);
    }
    int rc = fpx_shard_calls(k, d->shards, r);
    free(k);
    for (int64_t i = 0; rc == 0 && i < d->shards; i++)
        if (!infos[i].m.meta || infos[i].m.meta->type != MSGPACK_OBJECT_MAP)
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's bad info");
    return rc;
}

void fpx_sreplies_free(sreply *infos, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        fpx_sreply_free(&infos[i]);
}

int64_t fpx_shard_ntotal(fpx_cluster *c, fpx_req *r, const fpx_def *d, int *ok) {
    sreply infos[FPX_SHARDS_MAX] = {0};
    int64_t sum = 0;
    *ok = infos_of(c, r, d, infos, 1) == 0; /* a write's reply */
    for (int64_t i = 0; *ok && i < d->shards; i++)
        sum += meta_int(&infos[i], "ntotal");
    fpx_sreplies_free(infos, d->shards);
    return sum;
}

static const char *const summed[] = {"ntotal", "tombstones", "write_seq", NULL};
static const char *const replaced[] = {"index_id",      "has_keys",        "replicas",
                                       "applied_seq",   "shards",          "shard_map",
                                       "lease_seconds", "lease_remaining", NULL};

static int listed_in(const msgpack_object *k, const char *const *names) {
    for (const char *const *p = names; *p; p++)
        if (fpx_obj_str_eq(k, *p))
            return 1;
    return 0;
}

/* The info map of the whole index: shard 0's, with the counts summed over
 * the shards, has_keys of any, and shards and shard_map. */
static void pack_info(fpx_cluster *c, const fpx_def *d, const sreply *infos, msgpack_packer *p) {
    const msgpack_object_map *m = &infos[0].m.meta->via.map;
    uint32_t keep = 0, nsum = 0;
    for (uint32_t j = 0; j < m->size; j++) {
        keep += !listed_in(&m->ptr[j].key, summed) && !listed_in(&m->ptr[j].key, replaced);
        nsum += listed_in(&m->ptr[j].key, summed);
    }
    int64_t lease = 0;
    double left = 0;
    int leased = fpx_clease_info(c, d->uid, &lease, &left);
    msgpack_pack_map(p, keep + nsum + 4 + (leased ? 2 : 0));
    fpx_pack_cstr(p, "index_id");
    fpx_pack_cstr(p, d->name);
    if (leased) { /* the sharded index's own, as one server reports it */
        fpx_pack_cstr(p, "lease_seconds");
        msgpack_pack_int64(p, lease);
        fpx_pack_cstr(p, "lease_remaining");
        msgpack_pack_double(p, left);
    }
    for (uint32_t j = 0; j < m->size; j++) {
        const msgpack_object *k = &m->ptr[j].key;
        if (listed_in(k, replaced))
            continue;
        msgpack_pack_object(p, *k);
        if (!listed_in(k, summed)) {
            msgpack_pack_object(p, m->ptr[j].val);
            continue;
        }
        const char *ks;
        size_t kn;
        char name[32];
        fpx_obj_str(k, &ks, &kn);
        snprintf(name, sizeof name, "%.*s", (int)kn, ks);
        int64_t sum = 0;
        for (int64_t i = 0; i < d->shards; i++)
            sum += meta_int(&infos[i], name);
        msgpack_pack_int64(p, sum);
    }
    int keys = 0;
    for (int64_t i = 0; i < d->shards; i++) {
        const msgpack_object *hk = fpx_map_get(infos[i].m.meta, "has_keys");
        int v = 0;
        if (hk && fpx_obj_bool(hk, &v) == 0 && v)
            keys = 1;
    }
    fpx_pack_cstr(p, "has_keys");
    fpx_pack_bool(p, keys);
    fpx_pack_cstr(p, "shards");
    msgpack_pack_int64(p, d->shards);
    fpx_pack_cstr(p, "shard_map");
    fpx_def_pack_shard_map(d, p);
}

int fpx_shard_info(fpx_cluster *c, fpx_req *r, const fpx_def *d, msgpack_sbuffer *sb) {
    sreply infos[FPX_SHARDS_MAX] = {0};
    int rc = infos_of(c, r, d, infos, 0);
    if (rc == 0) {
        msgpack_packer p;
        msgpack_packer_init(&p, sb, msgpack_sbuffer_write);
        pack_info(c, d, infos, &p);
    }
    fpx_sreplies_free(infos, d->shards);
    return rc;
}

static int serve_info(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    sreply infos[FPX_SHARDS_MAX] = {0};
    int rc = infos_of(c, r, d, infos, 0);
    if (rc == 0) {
        fpx_out o;
        fpx_out_init(&o);
        fpx_reply_ok(r, &o, 0);
        pack_info(c, d, infos, fpx_out_meta(&o));
        rc = fpx_shard_reply(r, &o);
    }
    fpx_sreplies_free(infos, d->shards);
    return rc;
}

/* ---- writes ------------------------------------------------------------------------ */

static int reply_counts(fpx_req *r, const char *what, int64_t count, int64_t ntotal) {
    fpx_out o;
    fpx_out_init(&o);
    fpx_reply_ok(r, &o, 0);
    msgpack_packer *m = fpx_out_meta(&o);
    msgpack_pack_map(m, what ? 2 : 1);
    if (what) {
        fpx_pack_cstr(m, what);
        msgpack_pack_int64(m, count);
    }
    fpx_pack_cstr(m, "ntotal");
    msgpack_pack_int64(m, ntotal);
    return fpx_shard_reply(r, &o);
}

static int renumbers(const fpx_def *d, fpx_err *err);

/*
 * A label names one vector, as on one server: the vectors of an add with
 * with_ids whose label was given before (below the counter's value before
 * this add, was) may be held by another shard than the one they go to (a
 * keyed vector goes to its key's shard). Each such label is removed from
 * every shard but its vector's, before the parts are sent. Labels at or past
 * was were never given, so they cost nothing. On types whose labels stay,
 * remove_ids removes exactly those labels; on the types FAISS renumbers
 * (where remove_ids would renumber the shard), delete_vector does, which
 * takes an integer as a caller key first.
 */
static int unplace_labels(fpx_cluster *c, fpx_req *r, const fpx_def *d, const int64_t *labels,
                          const int64_t *shard, int64_t n, int64_t was) {
    int any = 0;
    for (int64_t i = 0; i < n && !any; i++)
        any = labels[i] < was;
    if (!any)
        return 0;
    int rn = renumbers(d, &r->err);
    if (rn < 0)
        return -1;
    static const char *const drop[] = {"vector_shape", "dimension", "with_ids", NULL};
    for (int64_t s = 0; s < d->shards; s++) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            m += labels[i] < was && shard[i] != s;
        if (m == 0)
            continue;
        fpx_out o;
        sreply x;
        msgpack_packer *p =
            fpx_shard_sub_begin(&o, r, d, s, rn ? "delete_vector" : "remove_ids", drop, 1);
        fpx_pack_cstr(p, rn ? "vector_ids" : "ids");
        msgpack_pack_array(p, (size_t)m);
        for (int64_t i = 0; i < n; i++)
            if (labels[i] < was && shard[i] != s)
                msgpack_pack_int64(p, labels[i]);
        if (fpx_shard_call(c, r, d, s, &o, &x, &r->err) != 0)
            return -1;
        fpx_sreply_free(&x);
    }
    return 0;
}

static int serve_add(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int with_ids = 0;
    int64_t n = 0, width = fpx_shard_width(d);
    size_t row = fpx_shard_row(d);
    const msgpack_object *shape = fpx_map_get(r->h, "vector_shape");
    if (fpx_req_bool(r, "with_ids", &with_ids))
        return -1;
    if (shape && shape->type == MSGPACK_OBJECT_ARRAY && shape->via.array.size == 2) {
        if (fpx_obj_int(&shape->via.array.ptr[0], &n) ||
            fpx_obj_int(&shape->via.array.ptr[1], &width))
            return fpx_err_set(&r->err, FPX_E_VALIDATION, "vector_shape must be [n, d]");
    } else {
        int64_t dim = d->dim; /* seed style: in bits for a binary index */
        if (fpx_req_int(r, "dimension", 0, &dim) < 0)
            return -1;
        if (dim != d->dim)
            width = -1;
        n = (int64_t)(r->msg.body.data_size / (row + (with_ids ? 8 : 0)));
    }
    /* n at most the bytes: a row is one byte at least, and n * row cannot wrap */
    if (width != fpx_shard_width(d) || n < 0 || (uint64_t)n > r->msg.body.data_size ||
        r->msg.body.data_size != (size_t)n * (row + (with_ids ? 8 : 0)))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "the vectors do not match the index's dimension %lld",
                           (long long)d->dim);
    const msgpack_object *items = r->msg.meta;
    if (items && items->type == MSGPACK_OBJECT_NIL)
        items = NULL;
    if (items && (items->type != MSGPACK_OBJECT_ARRAY || items->via.array.size != (uint32_t)n))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "metadata must be a list of exactly n entries");
    const uint8_t *vx = r->msg.body.data;
    int64_t *labels = malloc((size_t)(n ? n : 1) * sizeof *labels);
    int64_t *shard = malloc((size_t)(n ? n : 1) * sizeof *shard);
    if (!labels || !shard) {
        free(labels);
        free(shard);
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    }
    int rc = 0;
    int64_t was = 0;
    if (with_ids) {
        memcpy(labels, vx + (size_t)n * row, (size_t)n * 8);
        int64_t max = -1;
        for (int64_t i = 0; rc == 0 && i < n; i++) {
            if (labels[i] < 0)
                rc = fpx_err_set(&r->err, FPX_E_VALIDATION, "labels must be >= 0");
            else if (labels[i] > max)
                max = labels[i];
        }
        /* before any part is sent: an add that reserves labels after this one
         * was acknowledged never takes one of its labels */
        if (rc == 0 && max >= 0)
            rc = fpx_shard_advance_labels(c, d, max, &was, &r->err);
    } else if (n > 0) {
        /* The labels of one connection's adds are taken in the order sent. */
        int64_t first = 0;
        rc = fpx_shard_reserve_for(c, r, d, n, &first, &r->err);
        for (int64_t i = 0; rc == 0 && i < n; i++)
            labels[i] = first + i;
    }
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        const msgpack_object *e = items ? &items->via.array.ptr[i] : NULL;
        const msgpack_object *key =
            e && e->type == MSGPACK_OBJECT_MAP ? fpx_map_get(e, "id") : NULL;
        shard[i] = key && key->type != MSGPACK_OBJECT_NIL ? fpx_shard_of_key(key, d->shards)
                                                          : labels[i] % d->shards;
    }
    if (rc == 0 && with_ids)
        rc = unplace_labels(c, r, d, labels, shard, n, was);
    static const char *const drop[] = {"vector_shape", "dimension", "with_ids", NULL};
    int64_t added = 0, ntotal = 0;
    char done[FPX_SHARDS_MAX * 4] = "", failed_at[24] = "";
    int64_t s = 0;
    for (; rc == 0 && s < d->shards; s++) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            m += shard[i] == s;
        fpx_out o;
        sreply x;
        if (m == 0) {
            fpx_shard_sync(c, d, s);
            fpx_shard_sub_begin(&o, r, d, s, "get_index_info", NULL, 0);
            if (fpx_shard_call(c, r, d, s, &o, &x, &r->err) == 0)
                ntotal += meta_int(&x, "ntotal");
            fpx_sreply_free(&x);
            continue;
        }
        /* A shard's replica here checks the part before it is published: one
         * that has not applied a train acknowledged through another node yet
         * refuses it as not trained; it catches up and is asked once more
         * (nothing was published). */
        fpx_err err = {0};
        int called = -1;
        for (int attempt = 0; attempt < 2 && called != 0; attempt++) {
            if (attempt > 0) {
                if (err.type != FPX_E_NOT_TRAINED)
                    break;
                fpx_shard_sync(c, d, s);
                err = (fpx_err){0};
            }
            msgpack_packer *p = fpx_shard_sub_begin(&o, r, d, s, "add_vectors", drop, 2);
            fpx_pack_cstr(p, "vector_shape");
            msgpack_pack_array(p, 2);
            msgpack_pack_int64(p, m);
            msgpack_pack_int64(p, fpx_shard_width(d));
            fpx_pack_cstr(p, "with_ids");
            msgpack_pack_true(p);
            uint8_t *out = fpx_out_data(&o, (size_t)m * (row + 8));
            msgpack_packer *mp = items ? fpx_out_meta(&o) : NULL;
            if (mp)
                msgpack_pack_array(mp, (size_t)m);
            for (int64_t i = 0, j = 0; out && i < n; i++) {
                if (shard[i] != s)
                    continue;
                memcpy(out + (size_t)j * row, vx + (size_t)i * row, row);
                memcpy(out + (size_t)m * row + (size_t)j * 8, &labels[i], 8);
                if (mp)
                    msgpack_pack_object(mp, items->via.array.ptr[i]);
                j++;
            }
            called = fpx_shard_call(c, r, d, s, &o, &x, &err);
        }
        if (called != 0) {
            snprintf(failed_at, sizeof failed_at, "%lld", (long long)s);
            if (added == 0) {
                r->err = err;
            } else {
                rc = fpx_err_set(&r->err, err.type,
                                 "%lld of %lld vectors were added (those routed to shards %s), "
                                 "those routed to shard %s and after were not: %s",
                                 (long long)added, (long long)n, done, failed_at, err.msg);
            }
            rc = -1;
            break;
        }
        added += m;
        ntotal += meta_int(&x, "ntotal");
        size_t at = strlen(done);
        snprintf(done + at, sizeof done - at, "%s%lld", at ? "," : "", (long long)s);
        fpx_sreply_free(&x);
    }
    free(labels);
    free(shard);
    if (rc != 0)
        return -1;
    return reply_counts(r, "count", n, ntotal);
}

/* Runs the request as it is (its fields and sections) on every shard;
 * *sum is the sum of the replies' field `what`. */
static int on_every_shard(fpx_cluster *c, fpx_req *r, const fpx_def *d, const char *op,
                          const char *what, int64_t *sum) {
    *sum = 0;
    for (int64_t s = 0; s < d->shards; s++) {
        fpx_out o;
        sreply x;
        fpx_shard_sub_begin(&o, r, d, s, op, NULL, 0);
        if (r->msg.body.data_size) {
            uint8_t *out = fpx_out_data(&o, r->msg.body.data_size);
            if (out)
                memcpy(out, r->msg.body.data, r->msg.body.data_size);
        }
        if (r->msg.meta)
            msgpack_pack_object(fpx_out_meta(&o), *r->msg.meta);
        if (fpx_shard_call(c, r, d, s, &o, &x, &r->err) != 0) {
            if (s > 0) /* say what was done: the shards before it did it */
                fpx_err_set(&r->err, r->err.type,
                            "%s was done on shards 0..%lld of %lld, not on "
                            "shard %lld and after: %s",
                            op, (long long)s - 1, (long long)d->shards, (long long)s, r->err.msg);
            return -1;
        }
        if (what)
            *sum += meta_int(&x, what);
        fpx_sreply_free(&x);
    }
    return 0;
}

/* One id of delete_vector on shard s; *deleted its count. */
static int delete_one(fpx_cluster *c, fpx_req *r, const fpx_def *d, int64_t s,
                      const msgpack_object *id, int64_t *deleted) {
    static const char *const drop[] = {"vector_id", "vector_ids", NULL};
    fpx_out o;
    sreply x;
    msgpack_packer *p = fpx_shard_sub_begin(&o, r, d, s, "delete_vector", drop, 1);
    fpx_pack_cstr(p, "vector_ids");
    msgpack_pack_array(p, 1);
    msgpack_pack_object(p, *id);
    if (fpx_shard_call(c, r, d, s, &o, &x, &r->err) != 0)
        return -1;
    *deleted = meta_int(&x, "deleted");
    fpx_sreply_free(&x);
    return 0;
}

/* Each id is a caller key first, on the shard its key goes to; an integer
 * that no key there names is a label, on whichever shard holds it (a label
 * not held on the key's shard is on another: keys live on their shard). */
static int serve_delete_vector(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    const msgpack_object *one = fpx_map_get(r->h, "vector_id");
    const msgpack_object *many = fpx_map_get(r->h, "vector_ids");
    const msgpack_object *ids = one && one->type != MSGPACK_OBJECT_NIL ? one : NULL;
    uint32_t n = 1;
    if (!ids) {
        ids = many->via.array.ptr;
        n = many->via.array.size;
    }
    int64_t deleted = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *id = &ids[i];
        int64_t home = fpx_shard_of_key(id, d->shards), got = 0;
        if (delete_one(c, r, d, home, id, &got) != 0)
            return -1;
        int label = id->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        for (int64_t s = 0; label && got == 0 && s < d->shards; s++)
            if (s != home && delete_one(c, r, d, s, id, &got) != 0)
                return -1;
        deleted += got;
    }
    int ok;
    int64_t ntotal = fpx_shard_ntotal(c, r, d, &ok);
    return ok ? reply_counts(r, "deleted", deleted, ntotal) : -1;
}

static int serve_drop(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int rc = fpx_cluster_undefine_uid(c, d->tenant, d->name, d->uid, &r->err);
    if (rc <= 0)
        return rc < 0 ? -1 : fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", d->name);
    r->published = 1;
    for (int64_t s = 0; s < d->shards; s++) {
        char name[FPX_NAME_MAX + 1];
        fpx_err err = {0};
        fpx_shard_name(d->uid, s, name);
        if (fpx_cluster_undefine(c, d->tenant, name, &err) < 0)
            fpx_log(FPX_LOG_WARN, "deleting shard %s of %s/%s: %s", name, d->tenant, d->name,
                    err.msg);
    }
    char key[FPX_UID_HEX];
    fpx_cluster_uid_hex(d->uid, key);
    kvStore_Delete(c->labels, key);
    return fpx_cluster_reply_deleted(r);
}

/* ---- remove_ids, list_keys, codecs ------------------------------------------------ */

/* 1 when FAISS's remove_ids renumbers d's type (sequential codes without an
 * IDMap wrapper), 0 when labels stay, -1 with err. */
static int renumbers(const fpx_def *d, fpx_err *err) {
    if (fpx_index_type_has_idmap(d->index_type))
        return 0;
    fpx_index *tmp = NULL;
    if (fpx_index_new(d->tenant, d->name, d->index_type, d->dim, d->metric[0] ? d->metric : NULL,
                      &tmp, err) != 0)
        return -1;
    int v = fpx_engine_remove_renumbers(tmp->eng);
    fpx_index_free(tmp);
    return v;
}

/* remove_ids: the same ids or range on every shard; each removes the labels
 * it holds (a label is on one shard), and the count is the sum. On types
 * whose labels stay (IVF, IDMap), that is one server's remove exactly. On
 * the sequential-code types FAISS renumbers, one server moves every later
 * label down by the removed labels below it, over the whole index; a shard
 * only knows its own, and the labels of concurrent adds through other
 * nodes are reserved without the index's lock: refused, nothing changed. */
static int serve_remove_ids(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int64_t *labels = NULL, n = 0, lo = 0, hi = 0, removed = 0;
    if (fpx_remove_spec(r->h, &labels, &n, &lo, &hi, &r->err) != 0)
        return -1;
    free(labels);
    int rn = renumbers(d, &r->err);
    if (rn < 0)
        return -1;
    if (rn)
        return fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                           "remove_ids on a sharded index of type '%s' is not served: FAISS "
                           "renumbers the labels after the removed ones on this type, across "
                           "the whole index (use an IVF or IDMap type, or delete_vector, which "
                           "keeps labels)",
                           d->index_type);
    if (on_every_shard(c, r, d, "remove_ids", "removed", &removed) != 0)
        return -1;
    int ok;
    int64_t ntotal = fpx_shard_ntotal(c, r, d, &ok);
    return ok ? reply_counts(r, "removed", removed, ntotal) : -1;
}

/* ---- the entry point --------------------------------------------------------------- */

static int shard_serve(fpx_cluster *c, fpx_req *r, const fpx_def *d);

int fpx_shard_serve(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    if (r->synced && r->op && (r->op->flags & FPX_OP_LOGGED))
        return fpx_synced_sharded(c, r, d, shard_serve);
    return shard_serve(c, r, d);
}

static int shard_serve(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    const char *op = r->op->name;
    int64_t sum = 0;
    if (!strcmp(op, "get_index_info") || !strcmp(op, "create_index") || !strcmp(op, "import_index"))
        return serve_info(c, r, d);
    if (!strcmp(op, "delete_index"))
        return serve_drop(c, r, d);
    if (!strcmp(op, "add_vectors"))
        return serve_add(c, r, d);
    if (!strcmp(op, "search"))
        return fpx_shard_search(c, r, d);
    if (!strcmp(op, "range_search"))
        return fpx_shard_range_search(c, r, d);
    if (!strcmp(op, "reconstruct"))
        return fpx_shard_reconstruct(c, r, d);
    if (!strcmp(op, "reconstruct_n"))
        return fpx_shard_reconstruct_n(c, r, d);
    if (!strcmp(op, "delete_vector"))
        return serve_delete_vector(c, r, d);
    if (!strcmp(op, "train"))
        return fpx_shard_train(c, r, d);
    if (!strcmp(op, "remove_ids"))
        return serve_remove_ids(c, r, d);
    if (!strcmp(op, "list_keys"))
        return fpx_shard_list_keys(c, r, d);
    if (!strcmp(op, "sa_encode") || !strcmp(op, "sa_decode"))
        return fpx_shard_codec(c, r, d);
    if (!strcmp(op, "export_index"))
        return fpx_shard_export(c, r, d);
    if (!strcmp(op, "set_params")) {
        int ok;
        if (on_every_shard(c, r, d, op, NULL, &sum) != 0)
            return -1;
        int64_t ntotal = fpx_shard_ntotal(c, r, d, &ok);
        return ok ? reply_counts(r, NULL, 0, ntotal) : -1;
    }
    if (!strcmp(op, "reset")) {
        if (on_every_shard(c, r, d, op, NULL, &sum) != 0 ||
            fpx_shard_set_labels(c, d, 0, &r->err) != 0)
            return -1;
        return reply_counts(r, NULL, 0, 0);
    }
    return fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                       "%s is not served on a sharded index in this version (index '%s' has "
                       "%lld shards)",
                       op, d->name, (long long)d->shards);
}
