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
 */
#include "internal.h"

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

/* Most labels one reconstruct_n asks the shards for, one at a time. */
#define FPX_SHARD_RECONSTRUCT_MAX 10000

/* One shard's reply. */
typedef struct sreply {
    uint8_t *buf;
    size_t len;
    int is_static;
    int decoded;
    fpx_msg m;
} sreply;

static void sreply_free(sreply *x) {
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
static int is_binary(const fpx_def *d) {
    return fpx_index_type_is_binary(d->index_type);
}

static int64_t width_of(const fpx_def *d) {
    return is_binary(d) ? d->dim / 8 : d->dim;
}

static size_t row_of(const fpx_def *d) {
    return is_binary(d) ? (size_t)d->dim / 8 : (size_t)d->dim * 4;
}

/* Starts the header of a request to shard i: r's header (credentials,
 * request_id, client_id, parameters) without the fields of drop, with
 * operation op and the shard's name, and room for nextra more entries.
 * Parts are "acked": a synced write waits for its shards once every part
 * is in (synced.c), so that a slow shard never leaves the others unwritten. */
static msgpack_packer *sub_begin(fpx_out *o, const fpx_req *r, const fpx_def *d, int64_t i,
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
static int shard_call(fpx_cluster *c, fpx_req *r, const fpx_def *d, int64_t i, fpx_out *o,
                      sreply *x, fpx_err *err) {
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
        sreply_free(x);
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
    sreply_free(x);
    return -1;
}

/* One shard's call of a batch run at once (shard_calls). */
typedef struct scall {
    fpx_cluster *c;
    fpx_req *r;
    const fpx_def *d;
    int64_t shard;
    fpx_out o;
    sreply *x; /* where the reply goes (an fpx_msg points into itself: never copied) */
    fpx_err err;
    int rc, started;
    int sync; /* catch this node's replica of the shard up with its stream first */
    pthread_t th;
} scall;

/* Catches this node's replica of shard s up with the shard's stream, when
 * it holds one: the reply of a write sums counts over the shards, and one
 * server's count includes every write acknowledged before it, through any
 * node. A replica held elsewhere is that node's to keep current (writes go
 * to the first live node of a shard, from every node). A failure leaves the
 * count as the replica has it. */
static void shard_sync(fpx_cluster *c, const fpx_def *d, int64_t s) {
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
        shard_sync(k->c, k->d, k->shard);
    k->rc = shard_call(k->c, k->r, k->d, k->shard, &k->o, k->x, &k->err);
    return NULL;
}

/* Runs the calls k[0..n) at once, each on a thread of its own (a shard held
 * elsewhere is forwarded on a socket the call takes from the forwarding
 * pool for itself, as ZeroMQ sockets are used by one thread at a time; a
 * shard held here is run through the server's entry point), and waits for
 * all. A call whose thread cannot start runs here. Every k[i].rc is set;
 * r->err is the error of the first failed call in shard order, and the
 * return is -1 when any failed. */
static int shard_calls(scall *k, int64_t n, fpx_req *r) {
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
static int reply(fpx_req *r, fpx_out *o) {
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
        sub_begin(&k[i].o, r, d, i, "get_index_info", NULL, 0);
    }
    int rc = shard_calls(k, d->shards, r);
    free(k);
    for (int64_t i = 0; rc == 0 && i < d->shards; i++)
        if (!infos[i].m.meta || infos[i].m.meta->type != MSGPACK_OBJECT_MAP)
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's bad info");
    return rc;
}

static void infos_free(sreply *infos, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        sreply_free(&infos[i]);
}

static int64_t ntotal_of(fpx_cluster *c, fpx_req *r, const fpx_def *d, int *ok) {
    sreply infos[FPX_SHARDS_MAX] = {0};
    int64_t sum = 0;
    *ok = infos_of(c, r, d, infos, 1) == 0; /* a write's reply */
    for (int64_t i = 0; *ok && i < d->shards; i++)
        sum += meta_int(&infos[i], "ntotal");
    infos_free(infos, d->shards);
    return sum;
}

static const char *const summed[] = {"ntotal", "tombstones", "write_seq", NULL};
static const char *const replaced[] = {"index_id", "has_keys",  "replicas", "applied_seq",
                                       "shards",   "shard_map", NULL};

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
    infos_free(infos, d->shards);
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
        rc = reply(r, &o);
    }
    infos_free(infos, d->shards);
    return rc;
}

/* ---- writes ------------------------------------------------------------------------ */

/* FNV-1a, 64 bits, of the key's msgpack encoding (as msgpack-c packs it:
 * the shortest form), mod the shards: the same on every node and version. */
static int64_t key_shard(const msgpack_object *key, int64_t shards) {
    msgpack_sbuffer sb;
    msgpack_packer p;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&p, *key);
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < sb.size; i++) {
        h ^= (uint8_t)sb.data[i];
        h *= 1099511628211ull;
    }
    msgpack_sbuffer_destroy(&sb);
    return (int64_t)(h % (uint64_t)shards);
}

/* Moves d's label counter (bucket fpx_labels) from its value cur to
 * max(cur + add, at_least) with a compare-and-set, reading it again when
 * another node moved it meanwhile; *was is cur. A counter already there is
 * not written. */
static int move_labels(fpx_cluster *c, const fpx_def *d, int64_t add, int64_t at_least,
                       int64_t *was, fpx_err *err) {
    char key[FPX_UID_HEX];
    fpx_cluster_uid_hex(d->uid, key);
    for (int attempt = 0; attempt < 1000; attempt++) {
        kvEntry *e = NULL;
        uint64_t rev = 0, last = 0;
        int64_t cur = 0;
        natsStatus st = kvStore_Get(&e, c->labels, key);
        if (st == NATS_OK) {
            char v[32];
            int len = kvEntry_ValueLen(e);
            snprintf(v, sizeof v, "%.*s", len < 31 ? len : 31, (const char *)kvEntry_Value(e));
            cur = strtoll(v, NULL, 10);
            last = kvEntry_Revision(e);
            kvEntry_Destroy(e);
        } else if (st != NATS_NOT_FOUND) {
            return fpx_cluster_fail(err, "cannot read the index's label counter", st);
        }
        *was = cur;
        int64_t next = cur + add < at_least ? at_least : cur + add;
        if (next == cur)
            return 0;
        char v[32];
        snprintf(v, sizeof v, "%lld", (long long)next);
        st = last ? kvStore_UpdateString(&rev, c->labels, key, v, last)
                  : kvStore_CreateString(&rev, c->labels, key, v);
        if (st == NATS_OK)
            return 0;
        /* another add moved it meanwhile: read again */
    }
    return fpx_err_set(err, FPX_E_UNAVAILABLE,
                       "cannot move the label counter: too many concurrent adds");
}

/* Reserves n labels of d's counter: *first..*first+n-1. */
static int reserve_labels(fpx_cluster *c, const fpx_def *d, int64_t n, int64_t *first,
                          fpx_err *err) {
    return move_labels(c, d, n, INT64_MIN, first, err);
}

/* Moves d's counter past label max (when it is not already), as one
 * server's counter moves past the largest label an add gives with with_ids. */
static int advance_labels(fpx_cluster *c, const fpx_def *d, int64_t max, int64_t *was,
                          fpx_err *err) {
    return move_labels(c, d, 0, max < INT64_MAX ? max + 1 : max, was, err);
}

/* "first n" of a reservation entry. */
static int parse_range(kvEntry *e, int64_t *first, int64_t *n) {
    char v[64];
    int len = kvEntry_ValueLen(e);
    snprintf(v, sizeof v, "%.*s", len < 63 ? len : 63, (const char *)kvEntry_Value(e));
    long long a, b;
    if (sscanf(v, "%lld %lld", &a, &b) != 2)
        return -1;
    *first = a;
    *n = b;
    return 0;
}

/* The labels of an unkeyed add of n vectors: with client_id and request_id,
 * the ones this same add reserved when it was sent before (within the
 * duplicate window), else new ones (FPX_BUCKET_LABEL_REQS). */
static int reserve_for(fpx_cluster *c, const fpx_req *r, const fpx_def *d, int64_t n,
                       int64_t *first, fpx_err *err) {
    if (!r->client_id[0] || !r->rid)
        return reserve_labels(c, d, n, first, err);
    msgpack_sbuffer sb;
    msgpack_packer p;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&p, *r->rid);
    uint64_t h = 14695981039346656037ull;
    const char *parts[] = {r->tenant, "/", r->client_id, "/"};
    for (size_t k = 0; k < 4; k++)
        for (const char *q = parts[k]; *q; q++)
            h = (h ^ (uint8_t)*q) * 1099511628211ull;
    for (size_t i = 0; i < sb.size; i++)
        h = (h ^ (uint8_t)sb.data[i]) * 1099511628211ull;
    msgpack_sbuffer_destroy(&sb);
    char key[FPX_UID_HEX + 24];
    fpx_cluster_uid_hex(d->uid, key);
    snprintf(key + strlen(key), sizeof key - strlen(key), ".%016llx", (unsigned long long)h);
    for (int attempt = 0; attempt < 2; attempt++) {
        kvEntry *e = NULL;
        natsStatus st = kvStore_Get(&e, c->label_reqs, key);
        if (st == NATS_OK) {
            int64_t m = 0;
            int bad = parse_range(e, first, &m) != 0;
            kvEntry_Destroy(e);
            if (bad || m != n)
                return fpx_err_set(err, FPX_E_VALIDATION,
                                   "request_id was used for another add of this client_id within "
                                   "the last 2 minutes (an add sent again must be the same add)");
            return 0;
        }
        if (st != NATS_NOT_FOUND)
            return fpx_cluster_fail(err, "cannot read the index's label reservations", st);
        if (attempt > 0)
            break;
        if (reserve_labels(c, d, n, first, err) != 0)
            return -1;
        char v[48];
        uint64_t rev;
        snprintf(v, sizeof v, "%lld %lld", (long long)*first, (long long)n);
        st = kvStore_CreateString(&rev, c->label_reqs, key, v);
        if (st == NATS_OK)
            return 0;
        /* the same add, sent again meanwhile, reserved first: take its labels
         * (those just reserved stay unused, a gap) */
    }
    return fpx_err_set(err, FPX_E_UNAVAILABLE, "cannot record the add's label reservation");
}

static int set_labels(fpx_cluster *c, const fpx_def *d, int64_t next, fpx_err *err) {
    char key[FPX_UID_HEX], v[32];
    uint64_t rev;
    fpx_cluster_uid_hex(d->uid, key);
    snprintf(v, sizeof v, "%lld", (long long)next);
    natsStatus st = kvStore_PutString(&rev, c->labels, key, v);
    return st == NATS_OK ? 0 : fpx_cluster_fail(err, "cannot reset the index's label counter", st);
}

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
    return reply(r, &o);
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
        msgpack_packer *p = sub_begin(&o, r, d, s, rn ? "delete_vector" : "remove_ids", drop, 1);
        fpx_pack_cstr(p, rn ? "vector_ids" : "ids");
        msgpack_pack_array(p, (size_t)m);
        for (int64_t i = 0; i < n; i++)
            if (labels[i] < was && shard[i] != s)
                msgpack_pack_int64(p, labels[i]);
        if (shard_call(c, r, d, s, &o, &x, &r->err) != 0)
            return -1;
        sreply_free(&x);
    }
    return 0;
}

static int serve_add(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int with_ids = 0;
    int64_t n = 0, width = width_of(d);
    size_t row = row_of(d);
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
    if (width != width_of(d) || n < 0 || (uint64_t)n > r->msg.body.data_size ||
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
            rc = advance_labels(c, d, max, &was, &r->err);
    } else if (n > 0) {
        /* The labels of one connection's adds are taken in the order sent. */
        int64_t first = 0;
        rc = reserve_for(c, r, d, n, &first, &r->err);
        for (int64_t i = 0; rc == 0 && i < n; i++)
            labels[i] = first + i;
    }
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        const msgpack_object *e = items ? &items->via.array.ptr[i] : NULL;
        const msgpack_object *key =
            e && e->type == MSGPACK_OBJECT_MAP ? fpx_map_get(e, "id") : NULL;
        shard[i] = key && key->type != MSGPACK_OBJECT_NIL ? key_shard(key, d->shards)
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
            shard_sync(c, d, s);
            sub_begin(&o, r, d, s, "get_index_info", NULL, 0);
            if (shard_call(c, r, d, s, &o, &x, &r->err) == 0)
                ntotal += meta_int(&x, "ntotal");
            sreply_free(&x);
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
                shard_sync(c, d, s);
                err = (fpx_err){0};
            }
            msgpack_packer *p = sub_begin(&o, r, d, s, "add_vectors", drop, 2);
            fpx_pack_cstr(p, "vector_shape");
            msgpack_pack_array(p, 2);
            msgpack_pack_int64(p, m);
            msgpack_pack_int64(p, width_of(d));
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
            called = shard_call(c, r, d, s, &o, &x, &err);
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
        sreply_free(&x);
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
        sub_begin(&o, r, d, s, op, NULL, 0);
        if (r->msg.body.data_size) {
            uint8_t *out = fpx_out_data(&o, r->msg.body.data_size);
            if (out)
                memcpy(out, r->msg.body.data, r->msg.body.data_size);
        }
        if (r->msg.meta)
            msgpack_pack_object(fpx_out_meta(&o), *r->msg.meta);
        if (shard_call(c, r, d, s, &o, &x, &r->err) != 0) {
            if (s > 0) /* say what was done: the shards before it did it */
                fpx_err_set(&r->err, r->err.type,
                            "%s was done on shards 0..%lld of %lld, not on "
                            "shard %lld and after: %s",
                            op, (long long)s - 1, (long long)d->shards, (long long)s, r->err.msg);
            return -1;
        }
        if (what)
            *sum += meta_int(&x, what);
        sreply_free(&x);
    }
    return 0;
}

/* One id of delete_vector on shard s; *deleted its count. */
static int delete_one(fpx_cluster *c, fpx_req *r, const fpx_def *d, int64_t s,
                      const msgpack_object *id, int64_t *deleted) {
    static const char *const drop[] = {"vector_id", "vector_ids", NULL};
    fpx_out o;
    sreply x;
    msgpack_packer *p = sub_begin(&o, r, d, s, "delete_vector", drop, 1);
    fpx_pack_cstr(p, "vector_ids");
    msgpack_pack_array(p, 1);
    msgpack_pack_object(p, *id);
    if (shard_call(c, r, d, s, &o, &x, &r->err) != 0)
        return -1;
    *deleted = meta_int(&x, "deleted");
    sreply_free(&x);
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
        int64_t home = key_shard(id, d->shards), got = 0;
        if (delete_one(c, r, d, home, id, &got) != 0)
            return -1;
        int label = id->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        for (int64_t s = 0; label && got == 0 && s < d->shards; s++)
            if (s != home && delete_one(c, r, d, s, id, &got) != 0)
                return -1;
        deleted += got;
    }
    int ok;
    int64_t ntotal = ntotal_of(c, r, d, &ok);
    return ok ? reply_counts(r, "deleted", deleted, ntotal) : -1;
}

/* Trains once, here, a new index of d's type, and publishes the trained
 * (empty) index to every shard's stream, so that every shard holds the same
 * quantizer and a sharded IVF answers as one server's would. */
static int serve_train(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int ok;
    int64_t ntotal = ntotal_of(c, r, d, &ok);
    if (!ok)
        return -1;
    fpx_index *tmp = NULL;
    if (fpx_index_new(d->tenant, d->name, d->index_type, d->dim, d->metric[0] ? d->metric : NULL,
                      &tmp, &r->err) != 0)
        return -1;
    int rc = 0;
    if (!fpx_engine_is_trained(tmp->eng)) {
        size_t row = row_of(d);
        int64_t n = (int64_t)(r->msg.body.data_size / row);
        void *x = NULL;
        uint8_t *bytes = NULL;
        size_t len = 0;
        if (ntotal > 0)
            rc = fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                             "training a sharded index that holds vectors is not served in this "
                             "version: train it before adding");
        else if (n < 1 || r->msg.body.data_size != (size_t)n * row)
            rc = fpx_err_set(&r->err, FPX_E_VALIDATION,
                             "train needs n >= 1 vectors of the index's dimension %lld",
                             (long long)d->dim);
        else if (!fpx_engine_round_trips(tmp->eng))
            rc = fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                             "training an additive-quantizer index (RQ, LSQ) is not served by a "
                             "cluster in this version");
        else if (!(x = malloc((size_t)n * row)))
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
        if (rc == 0) {
            memcpy(x, r->msg.body.data, (size_t)n * row); /* aligned for FAISS */
            rc = fpx_engine_train(tmp->eng, n, x, &r->err);
        }
        if (rc == 0)
            rc = fpx_engine_serialize(tmp->eng, &bytes, &len, &r->err);
        for (int64_t s = 0; rc == 0 && s < d->shards; s++) {
            char name[FPX_NAME_MAX + 1];
            fpx_def sd;
            fpx_shard_name(d->uid, s, name);
            int found = fpx_cluster_def(c, d->tenant, name, &sd, &r->err);
            if (found == 0)
                rc =
                    fpx_err_set(&r->err, FPX_E_INTERNAL, "shard %lld is not defined", (long long)s);
            if (found == 1) {
                fpx_def_clear(&sd);
                rc = fpx_log_publish_trained(c, r, sd.uid, bytes, len, &r->err);
                if (rc != 0 && s > 0)
                    fpx_err_set(&r->err, r->err.type,
                                "shards 0..%lld were trained, shard %lld and after were not: %s",
                                (long long)s - 1, (long long)s, r->err.msg);
            } else {
                rc = -1;
            }
        }
        free(x);
        free(bytes);
    }
    fpx_index_free(tmp);
    if (rc != 0)
        return -1;
    /* Read back from every shard: applied where it is read (the shards this
     * node holds apply it on delivery; an info waits for nothing, so the
     * answer says true once trained). */
    fpx_out o;
    fpx_out_init(&o);
    fpx_reply_ok(r, &o, 0);
    msgpack_packer *m = fpx_out_meta(&o);
    msgpack_pack_map(m, 2);
    fpx_pack_cstr(m, "is_trained");
    msgpack_pack_true(m);
    fpx_pack_cstr(m, "ntotal");
    msgpack_pack_int64(m, ntotal);
    return reply(r, &o);
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
                sreply_free(&x[s]);
            k[n] = (scall){.c = c, .r = r, .d = d, .shard = s, .x = &x[s]};
            msgpack_packer *p = sub_begin(&k[n].o, r, d, s, op, pass ? drop : NULL, pass ? 1 : 0);
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
        if (shard_calls(k, n, r) != 0) {
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

static int serve_search(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    sreply x[FPX_SHARDS_MAX] = {0};
    int with_meta = 0, rc = gather(c, r, d, "search", x, &with_meta);
    int64_t nq = 0, k = 0;
    const msgpack_object *shape = rc == 0 ? fpx_map_get(x[0].m.header, "shape") : NULL;
    if (rc == 0 &&
        (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size != 2 ||
         fpx_obj_int(&shape->via.array.ptr[0], &nq) || fpx_obj_int(&shape->via.array.ptr[1], &k)))
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's search reply without its shape");
    size_t nres = (size_t)nq * (size_t)k, ncand = nres * (size_t)d->shards;
    for (int64_t s = 0; rc == 0 && s < d->shards; s++)
        if (x[s].m.body.data_size != nres * 12)
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's search reply of another size");
    cand *cs = rc == 0 ? malloc((size_t)(d->shards * (k ? k : 1)) * sizeof *cs) : NULL;
    if (rc == 0 && !cs)
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    (void)ncand;
    fpx_out o;
    if (rc == 0) {
        fpx_out_init(&o);
        msgpack_packer *h = fpx_reply_ok(r, &o, 1 + is_binary(d));
        if (is_binary(d)) { /* as one server: Hamming distances are int32 */
            fpx_pack_cstr(h, "distance_dtype");
            fpx_pack_cstr(h, "int32");
        }
        fpx_pack_cstr(h, "shape");
        msgpack_pack_array(h, 2);
        msgpack_pack_int64(h, nq);
        msgpack_pack_int64(h, k);
        uint8_t *out = fpx_out_data(&o, nres * 12);
        msgpack_packer *mp = with_meta ? fpx_out_meta(&o) : NULL;
        if (mp)
            msgpack_pack_array(mp, (size_t)nq);
        int ip = is_ip(d), bin = is_binary(d);
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
        rc = reply(r, &o);
    }
    free(cs);
    infos_free(x, d->shards);
    return rc;
}

/* Per query, the shards' results joined and ordered by label (the order in
 * which one flat index scans its vectors). */
static int serve_range_search(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
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
        rc = reply(r, &o);
    }
    free(cs);
    infos_free(x, d->shards);
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
        msgpack_packer *p = sub_begin(&o, r, d, s, "reconstruct", drop, 1);
        fpx_pack_cstr(p, "label");
        msgpack_pack_int64(p, label);
        fpx_err err = {0};
        if (shard_call(c, r, d, s, &o, x, &err) == 0)
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

static int serve_reconstruct(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
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
    sreply_free(&x);
    return 0;
}

static int serve_reconstruct_n(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
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
    size_t row = row_of(d);
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *h = fpx_reply_ok(r, &o, 2);
    fpx_pack_cstr(h, "dtype");
    fpx_pack_cstr(h, is_binary(d) ? "uint8" : "float32");
    fpx_pack_cstr(h, "shape");
    msgpack_pack_array(h, 2);
    msgpack_pack_int64(h, n);
    msgpack_pack_int64(h, width_of(d));
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
        sreply_free(&x);
        if (!ok) {
            fpx_out_discard(&o);
            return fpx_err_set(&r->err, FPX_E_INTERNAL, "a shard's reconstruct of another size");
        }
    }
    return reply(r, &o);
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
    int64_t ntotal = ntotal_of(c, r, d, &ok);
    return ok ? reply_counts(r, "removed", removed, ntotal) : -1;
}

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
static int serve_list_keys(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
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
            msgpack_packer *p = sub_begin(&o, r, d, s, "list_keys", drop, next ? 2 : 1);
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
            if (shard_call(c, r, d, s, &o, x, &r->err) != 0) {
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
        rc = reply(r, &o);
    }
    for (size_t i = 0; i < npages; i++) {
        sreply_free(pages[i]);
        free(pages[i]);
    }
    free(pages);
    free(es);
    return rc;
}

/* sa_encode, sa_decode: FAISS's standalone codec reads only the index's
 * training, which every shard shares (train publishes one trained index to
 * all), so shard 0's answer is the index's. */
static int serve_codec(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    fpx_out o;
    sreply x;
    sub_begin(&o, r, d, 0, r->op->name, NULL, 0);
    uint8_t *out = fpx_out_data(&o, r->msg.body.data_size);
    if (out && r->msg.body.data_size)
        memcpy(out, r->msg.body.data, r->msg.body.data_size);
    if (r->msg.meta)
        msgpack_pack_object(fpx_out_meta(&o), *r->msg.meta);
    if (shard_call(c, r, d, 0, &o, &x, &r->err) != 0)
        return -1;
    r->relay = x.buf; /* the same request_id, the same fields */
    r->relay_len = x.len;
    x.buf = NULL;
    sreply_free(&x);
    return 0;
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
    if (!strcmp(op, "get_index_info") || !strcmp(op, "create_index"))
        return serve_info(c, r, d);
    if (!strcmp(op, "delete_index"))
        return serve_drop(c, r, d);
    if (!strcmp(op, "add_vectors"))
        return serve_add(c, r, d);
    if (!strcmp(op, "search"))
        return serve_search(c, r, d);
    if (!strcmp(op, "range_search"))
        return serve_range_search(c, r, d);
    if (!strcmp(op, "reconstruct"))
        return serve_reconstruct(c, r, d);
    if (!strcmp(op, "reconstruct_n"))
        return serve_reconstruct_n(c, r, d);
    if (!strcmp(op, "delete_vector"))
        return serve_delete_vector(c, r, d);
    if (!strcmp(op, "train"))
        return serve_train(c, r, d);
    if (!strcmp(op, "remove_ids"))
        return serve_remove_ids(c, r, d);
    if (!strcmp(op, "list_keys"))
        return serve_list_keys(c, r, d);
    if (!strcmp(op, "sa_encode") || !strcmp(op, "sa_decode"))
        return serve_codec(c, r, d);
    if (!strcmp(op, "export_index"))
        return fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                           "export_index of a sharded index is not served (index '%s' has %lld "
                           "shards): FAISS's bytes of one index cannot be made from the shards "
                           "faithfully; export the vectors with reconstruct_n and list_keys",
                           d->name, (long long)d->shards);
    if (!strcmp(op, "set_params")) {
        int ok;
        if (on_every_shard(c, r, d, op, NULL, &sum) != 0)
            return -1;
        int64_t ntotal = ntotal_of(c, r, d, &ok);
        return ok ? reply_counts(r, NULL, 0, ntotal) : -1;
    }
    if (!strcmp(op, "reset")) {
        if (on_every_shard(c, r, d, op, NULL, &sum) != 0 || set_labels(c, d, 0, &r->err) != 0)
            return -1;
        return reply_counts(r, NULL, 0, 0);
    }
    return fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                       "%s is not served on a sharded index in this version (index '%s' has "
                       "%lld shards)",
                       op, d->name, (long long)d->shards);
}
