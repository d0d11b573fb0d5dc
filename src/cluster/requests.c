/*
 * requests.c - the dispatcher's hooks into the cluster: admitting a request,
 * finding the index it names (the replica here, its shards, or the nodes
 * that hold it), and creating and deleting indexes cluster-wide: each
 * index's stream, then its definition in fpx_indexes, with a key-value
 * create, so that one create of a name wins across nodes and the others get
 * already_exists (docs/cluster.md).
 */
#include "internal.h"

#include "server/ops.h"
#include "server/util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLACEMENT_MAX FPX_PLACEMENT_MAX
#define PLACEMENT_LEN FPX_PLACEMENT_LEN

/* ---- the dispatcher's hooks -------------------------------------------------------- */

int fpx_cluster_admit(fpx_req *r) {
    fpx_cluster *c = r->s->cluster;
    const char *op = r->op->name;
    if (!strcmp(op, "ping"))
        return 0;
    if (natsConnection_Status(c->nc) != NATS_CONN_STATUS_CONNECTED)
        return fpx_err_set(&r->err, FPX_E_UNAVAILABLE,
                           "node %s cannot reach the cluster's NATS servers right now: its data "
                           "may be stale; try again, or through another node",
                           r->s->cfg->node_id);
    return 0;
}

int fpx_cluster_sync(fpx_cluster *c, const char *tenant, const char *name, fpx_err *err) {
    char key[2 * FPX_NAME_MAX + 2];
    fpx_def_key(tenant, name, key);
    pthread_mutex_lock(&c->mu);
    fpx_replica *rep = fpx_replica_find(c, key);
    fpx_index *ix = rep ? rep->ix : NULL;
    if (ix)
        atomic_fetch_add(&ix->refs, 1);
    pthread_mutex_unlock(&c->mu); /* not held across NATS round trips */
    if (!ix)
        return 0;
    uint64_t last = 0;
    int rc = fpx_log_last_seq(c, ix->uid, &last, err);
    if (rc == 0) {
        fpx_index_lock_write(ix);
        if (!ix->dropped && ix->seq < last)
            rc = fpx_log_catch_up(c, ix, last, err);
        pthread_rwlock_unlock(&ix->lock);
    }
    fpx_index_unref(ix);
    return rc;
}

/* d's definition from the watched cache, when it is there and names other
 * nodes than this one (or shards): 1, else 0. */
static int def_cached(fpx_cluster *c, const char *key, fpx_def *d) {
    uint8_t *v = NULL;
    size_t n = 0;
    fpx_err err = {0};
    if (fpx_kvcache_get(&c->def_cache, key, &v, &n, NULL) != 1 || !v) {
        free(v);
        return 0;
    }
    int rc = fpx_def_decode(v, (int)n, d, &err);
    free(v);
    if (rc != 0)
        return 0;
    if (d->shards > 1 || !fpx_def_placed_here(c, d))
        return 1;
    fpx_def_clear(d);
    return 0;
}

int fpx_cluster_def(fpx_cluster *c, const char *tenant, const char *name, fpx_def *d,
                    fpx_err *err) {
    char key[2 * FPX_NAME_MAX + 2];
    fpx_def_key(tenant, name, key);
    return fpx_def_get(c, key, d, err);
}

/* Whether some node of placement other than this one is live, or its
 * heartbeat could not be read (then it may be): 1, else 0. */
static int others_live(fpx_cluster *c, const char *placement) {
    char list[PLACEMENT_LEN];
    snprintf(list, sizeof list, "%s", placement);
    for (char *save = NULL, *node = strtok_r(list, ",", &save); node;
         node = strtok_r(NULL, ",", &save)) {
        char ep[320];
        int router = 0;
        fpx_err err = {0};
        if (strcmp(node, c->s->cfg->node_id) &&
            fpx_node_lookup(c, node, ep, sizeof ep, &router, &err) != 0)
            return 1;
    }
    return 0;
}

/* delete_index of an index none of whose nodes is live (lost with them, or
 * down for long): nobody could forward it, so it is deleted here, from its
 * definition (while that still names this index) and its stream. Its nodes
 * drop their replicas when they return and see the definition gone. */
static void drop_unheld(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int rc = fpx_cluster_undefine_uid(c, d->tenant, d->name, d->uid, &r->err);
    if (rc < 0)
        return;
    if (rc == 0) {
        fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", d->name);
        return;
    }
    r->published = 1;
    if (fpx_cluster_reply_deleted(r) == 0)
        fpx_log(FPX_LOG_INFO,
                "deleted index %s/%s from the cluster; none of its nodes (%s) is live", d->tenant,
                d->name, d->placement);
}

fpx_index *fpx_cluster_index(fpx_req *r) {
    fpx_cluster *c = r->s->cluster;
    char name[FPX_NAME_MAX + 1], key[2 * FPX_NAME_MAX + 2];
    fpx_err err = {0};
    fpx_def d;
    if (fpx_req_name(r, 0, name))
        return NULL;
    fpx_def_key(r->tenant, name, key);
    /* The watched definition, when it sends the request elsewhere (a node
     * holding the index, or the nodes of its shards): no NATS read. Whether
     * the index exists is then the serving node's to say. Anything else (a
     * miss, a replica to open here) reads the bucket itself. */
    uint64_t rev = 0;
    int found = def_cached(c, key, &d);
    if (found != 1)
        found = fpx_def_read(c, key, &d, &rev, &err);
    if (found <= 0) { /* not defined: the not_found already in r->err stands */
        if (found < 0)
            r->err = err;
        return NULL;
    }
    if (d.shards > 1) { /* answered from its shards: r->relay */
        r->err = (fpx_err){0};
        fpx_clease_touch(c, d.uid); /* named: its lease counts from now */
        fpx_shard_serve(c, r, &d);
        fpx_def_clear(&d);
        return NULL;
    }
    if (!fpx_def_placed_here(c, &d)) { /* answered by a node that holds it: r->relay */
        if (!strcmp(r->op->name, "delete_index") && !r->forwarded &&
            others_live(c, d.placement) == 0)
            drop_unheld(c, r, &d);
        else
            fpx_forward_to_holders(c, r, d.placement);
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    fpx_replica *rep = fpx_replica_open(c, &d, rev, NULL, &err);
    fpx_index *ix = rep ? rep->ix : NULL;
    if (ix)
        atomic_fetch_add(&ix->refs, 1);
    pthread_mutex_unlock(&c->mu);
    r->err = err;
    return ix;
}

int fpx_live_nodes(fpx_cluster *c, char *out, size_t cap, int max, int *n, fpx_err *err) {
    const char *me = c->s->cfg->node_id;
    int router_only = c->s->cfg->router_only;
    snprintf(out, cap, "%s", router_only ? "" : me);
    *n = !router_only;
    kvKeysList keys = {0};
    natsStatus st = kvStore_Keys(&keys, c->nodes, NULL);
    if (st == NATS_NOT_FOUND)
        return 0;
    if (st != NATS_OK)
        return fpx_cluster_fail(err, "cannot list the cluster's nodes", st);
    for (int i = 0; i < keys.Count && *n < max && *n < PLACEMENT_MAX; i++) {
        char ep[320];
        int router = 0;
        fpx_err lerr = {0};
        if (!strcmp(keys.Keys[i], me) ||
            fpx_node_lookup(c, keys.Keys[i], ep, sizeof ep, &router, &lerr) != 1 || router)
            continue;
        size_t at = strlen(out);
        snprintf(out + at, cap - at, "%s%s", *n ? "," : "", keys.Keys[i]);
        (*n)++;
    }
    kvKeysList_Destroy(&keys);
    return 0;
}

/* Whether a create that wrote its first stream or shard at since (monotonic
 * ms) is past the time within which it must write the definition naming
 * them (orphan.c): then err says nothing was created. */
static int past_deadline(fpx_cluster *c, const char *name, uint64_t since, fpx_err *err) {
    int64_t took = (int64_t)(fpx_mono_ms() - since), limit = fpx_orphan_deadline_ms(c);
    if (took <= limit)
        return 0;
    fpx_err_set(err, FPX_E_UNAVAILABLE,
                "creating index '%s' took %lld ms, over %lld: nothing was created, try again", name,
                (long long)took, (long long)limit);
    return 1;
}

/*
 * Defines d: its stream first (its name is the new unique id, so it collides
 * with nothing), then the definition, with a key-value create (when two
 * nodes define one name, one wins and the other gets already_exists). When
 * d is placed here, the replica is opened before this returns and *ix is
 * its index, referenced for the caller. The replica itself is not handed out:
 * once the lock is released, a delete through another node may free it.
 */
static int define(fpx_cluster *c, fpx_def *d, fpx_index **made, fpx_index **ix,
                  const fpx_import_src *imp, fpx_err *err) {
    char key[2 * FPX_NAME_MAX + 2], stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX];
    fpx_replica *rep = NULL;
    *ix = NULL;
    fpx_def_key(d->tenant, d->name, key);
    fpx_cluster_stream_names(d->uid, stream, subject);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {subject};
    sc.Name = stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = c->replicas;
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    natsStatus st = d->shards > 1 ? NATS_OK : js_AddStream(&si, c->js, &sc, NULL, &jerr);
    if (st != NATS_OK)
        return fpx_cluster_fail(err, "cannot create the index's log", st);
    jsStreamInfo_Destroy(si);
    /* An import's content goes to the stream before anything names it
     * (import.c); the definition then says how many records it is. */
    if (imp && fpx_import_publish(c, imp, d, err) == 0 && made && *made)
        (*made)->seq = (uint64_t)d->import_records; /* its state covers those records */
    uint64_t written = fpx_mono_ms(); /* the stream's last write before its definition */
    if ((imp && d->import_records == 0) ||
        (fpx_def_encode(d, &sb) != 0 && fpx_err_set(err, FPX_E_INTERNAL, "out of memory"))) {
        msgpack_sbuffer_destroy(&sb);
        if (d->shards <= 1)
            js_DeleteStream(c->js, stream, NULL, &jerr);
        return -1;
    }
    pthread_mutex_lock(&c->mu);
    uint64_t rev = 0;
    int rc = 0;
    /* A stream not named by a definition within the deadline is another
     * node's to remove as an orphan: given up, undone below. */
    if (past_deadline(c, d->name, written, err)) {
        rc = -1;
    } else if ((st = kvStore_Create(&rev, c->indexes, key, sb.data, (int)sb.size)) != NATS_OK) {
        fpx_def other;
        fpx_err gerr = {0};
        int found = fpx_def_get(c, key, &other, &gerr);
        if (found == 1)
            fpx_def_clear(&other);
        rc = found == 1 ? fpx_err_set(err, FPX_E_EXISTS, "index '%s' already exists", d->name)
                        : fpx_cluster_fail(err, "cannot define the index", st);
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0 && fpx_def_placed_here(c, d) && !(rep = fpx_replica_open(c, d, rev, made, err))) {
        fpx_err derr = {0};
        fpx_def_delete_at(c, key, rev, &derr); /* only the definition written just now */
        rc = -1;
    }
    if (rep) {
        *ix = rep->ix;
        atomic_fetch_add(&rep->ix->refs, 1);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != 0 && d->shards <= 1)
        js_DeleteStream(c->js, stream, NULL, &jerr);
    return rc;
}

int fpx_cluster_define_import(fpx_cluster *c, fpx_def *d, const fpx_import_src *imp, fpx_err *err) {
    fpx_index *ix = NULL;
    if (define(c, d, NULL, &ix, imp, err) != 0)
        return -1;
    if (ix)
        fpx_index_unref(ix);
    return 0;
}

int fpx_cluster_define(fpx_cluster *c, fpx_def *d, fpx_err *err) {
    return fpx_cluster_define_import(c, d, NULL, err);
}

int fpx_cluster_undefine(fpx_cluster *c, const char *tenant, const char *name, fpx_err *err) {
    return fpx_cluster_undefine_uid(c, tenant, name, NULL, err);
}

int fpx_cluster_undefine_uid(fpx_cluster *c, const char *tenant, const char *name,
                             const uint8_t *uid, fpx_err *err) {
    char key[2 * FPX_NAME_MAX + 2], stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX];
    fpx_def d;
    fpx_def_key(tenant, name, key);
    int rc = fpx_def_delete(c, key, uid, &d, err);
    if (rc <= 0)
        return rc;
    fpx_cluster_stream_names(d.uid, stream, subject);
    jsErrCode jerr = 0;
    js_DeleteStream(c->js, stream, NULL, &jerr); /* gone already: as wanted */
    fpx_replica_forget(c, key, "its index was deleted");
    return 1;
}

void fpx_cluster_touch(fpx_server *s, const fpx_index *ix) {
    fpx_clease_touch(s->cluster, ix->uid);
}

int fpx_cluster_reply_deleted(fpx_req *r) {
    fpx_out o;
    fpx_out_init(&o);
    fpx_reply_ok(r, &o, 0);
    msgpack_packer *m = fpx_out_meta(&o);
    msgpack_pack_map(m, 1);
    fpx_pack_cstr(m, "deleted");
    msgpack_pack_true(m);
    if (fpx_out_finish(&o, &r->relay, &r->relay_len) != 0)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory building the reply");
    return 0;
}

/*
 * A sharded index: shard i is placed on replicas nodes of the live ones,
 * starting at the i-th (this node first), so that shards spread over the
 * nodes; each shard is defined as an index of its own (".shard-<uid>-<i>",
 * a name no user's index can have), with a stream of its own. The index
 * itself is defined last, with its shard map: until then nothing names it,
 * and a create that loses the race takes its shards away again.
 */
/* Creates (import: imports) the index d of `shards` shards over the live
 * data nodes `live` (comma-separated, this node first: the same list its
 * replicas' count was taken from). */
static int create_sharded(fpx_cluster *c, fpx_req *r, fpx_def *d, int64_t shards, int import,
                          const char *live) {
    char nodes[PLACEMENT_MAX][FPX_NODE_ID_MAX + 1];
    int n = 0;
    char list[PLACEMENT_LEN];
    snprintf(list, sizeof list, "%s", live);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t && n < PLACEMENT_MAX;
         t = strtok_r(NULL, ",", &save))
        snprintf(nodes[n++], sizeof nodes[0], "%s", t);
    if (n == 0 || d->replicas > n)
        return fpx_err_set(&r->err, FPX_E_UNAVAILABLE, "too few live data nodes (%d)", n);
    size_t cap = (size_t)shards * PLACEMENT_LEN, at = 0;
    if (!(d->shard_map = calloc(1, cap)))
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    for (int64_t i = 0; i < shards; i++)
        for (int64_t j = 0; j < d->replicas; j++)
            at += (size_t)snprintf(d->shard_map + at, cap - at, "%s%s", j ? "," : (i ? ";" : ""),
                                   nodes[(i + j) % n]);
    d->shards = shards;
    /* An import is cut into its shards' contents first: each shard is
     * defined as an import of its part, and the label counter goes on
     * from the imported labels before the index is named. */
    fpx_shard_parts *parts = import ? malloc(sizeof *parts) : NULL;
    int rc = import && !parts ? fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory") : 0;
    if (rc == 0 && parts && fpx_shard_import_split(r, shards, parts, &r->err) != 0) {
        free(parts);
        parts = NULL;
        rc = -1;
    }
    int64_t made = 0;
    uint64_t started = fpx_mono_ms();
    for (; rc == 0 && made < shards; made++) {
        fpx_def sd = *d;
        sd.shards = 1;
        sd.shard_map = NULL;
        fpx_shard_name(d->uid, made, sd.name);
        randombytes_buf(sd.uid, sizeof sd.uid);
        fpx_def_shard_nodes(d, made, sd.placement, sizeof sd.placement);
        rc = fpx_cluster_define_import(c, &sd, parts ? &parts->part[made] : NULL, &r->err);
    }
    if (rc == 0 && parts)
        rc = fpx_shard_set_labels(c, d, parts->next, &r->err);
    if (parts) {
        fpx_shard_import_free(parts);
        free(parts);
    }
    /* Shards not named by their index within the deadline are another
     * node's to remove as orphans: given up, undone below. The index itself
     * has no replica: its shards hold the data. */
    if (rc == 0 && past_deadline(c, d->name, started, &r->err))
        rc = -1;
    if (rc == 0)
        rc = fpx_cluster_define(c, d, &r->err);
    if (rc != 0) { /* its shards go again */
        for (int64_t i = 0; i < made; i++) {
            char name[FPX_NAME_MAX + 1];
            fpx_err e2 = {0};
            fpx_shard_name(d->uid, i, name);
            fpx_cluster_undefine(c, d->tenant, name, &e2);
        }
        fpx_def_clear(d);
        return -1;
    }
    fpx_log(FPX_LOG_INFO, "defined index %s/%s in the cluster: %lld shards (%s)", d->tenant,
            d->name, (long long)shards, d->shard_map);
    fpx_clease_begin(c, d->uid);           /* a lease (if any) counts from here */
    int served = fpx_shard_serve(c, r, d); /* the info map, as get_index_info gives it */
    fpx_def_clear(d);
    return served;
}

/* --tenant-max-indexes over the whole cluster: the tenant's indexes as this
 * node's watched definitions have them (a sharded index counts once, its
 * shards' definitions not at all). */
typedef struct tenant_count {
    char prefix[2 * FPX_NAME_MAX + 2]; /* "<tenant>/" */
    size_t len, n;
} tenant_count;

static void count_tenant(void *arg, const char *key, const uint8_t *val, size_t len) {
    tenant_count *t = arg;
    (void)val;
    (void)len;
    /* a user's name never starts with '.' (written '=' in a key): a shard's does */
    if (!strncmp(key, t->prefix, t->len) && key[t->len] != '=')
        t->n++;
}

static int check_tenant_indexes(fpx_cluster *c, const char *tenant, fpx_err *err) {
    size_t max = c->s->cfg->tenant_max_indexes;
    tenant_count t = {.n = 0};
    if (!max)
        return 0;
    fpx_def_key(tenant, "", t.prefix);
    t.len = strlen(t.prefix);
    if (fpx_kvcache_each(&c->def_cache, count_tenant, &t) != 0)
        return fpx_err_set(err, FPX_E_UNAVAILABLE,
                           "node %s has not read the cluster's index definitions yet: try again",
                           c->s->cfg->node_id);
    if (t.n >= max)
        return fpx_err_set(err, FPX_E_LIMIT,
                           "tenant '%s' has %zu indexes, its quota (--tenant-max-indexes)", tenant,
                           t.n);
    return 0;
}

int fpx_cluster_create(fpx_req *r) {
    fpx_cluster *c = r->s->cluster;
    fpx_index *m = r->made;
    /* The lease is the cluster's (lease.c), not the local replica's: a
     * replica's own reaper would drop it on this node only. */
    int64_t lease = m->lease_seconds;
    m->lease_seconds = 0;
    if (c->s->cfg->router_only) { /* placed by a data node, which holds a replica */
        char nodes[PLACEMENT_LEN];
        int live = 0;
        if (fpx_live_nodes(c, nodes, sizeof nodes, PLACEMENT_MAX, &live, &r->err) != 0)
            return -1;
        if (live == 0)
            return fpx_err_set(&r->err, FPX_E_UNAVAILABLE,
                               "no data node is live: node %s is router-only and holds no index",
                               c->s->cfg->node_id);
        return fpx_forward_to_holders(c, r, nodes);
    }
    int64_t shards = 1, replicas = 0;
    if (fpx_req_int(r, "shards", 0, &shards) < 0)
        return -1;
    if (shards < 1 || shards > FPX_SHARDS_MAX)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "shards must be in 1..%d, got %lld",
                           FPX_SHARDS_MAX, (long long)shards);
    int import = !strcmp(r->op->name, "import_index");
    if (import &&
        fpx_server_check_quota(r->s, m->tenant, m->nlive, r->msg.body.data_size, &r->err) != 0)
        return -1;
    int has_replicas = fpx_req_int(r, "replicas", 0, &replicas);
    if (has_replicas < 0)
        return -1;
    if (has_replicas == 0 && (replicas < 1 || replicas > PLACEMENT_MAX))
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "replicas must be in 1..%d, got %lld",
                           PLACEMENT_MAX, (long long)replicas);
    fpx_def d;
    memset(&d, 0, sizeof d);
    snprintf(d.tenant, sizeof d.tenant, "%s", m->tenant);
    snprintf(d.name, sizeof d.name, "%s", m->name);
    snprintf(d.index_type, sizeof d.index_type, "%s", m->index_type);
    if (fpx_req_str(r, "metric", d.metric, sizeof d.metric) != 0)
        d.metric[0] = 0;
    /* the definition carries no metric_arg: replicas would build Lp with p = 0 */
    const msgpack_object *arg = fpx_map_get(r->h, "metric_arg");
    if (arg && arg->type != MSGPACK_OBJECT_NIL)
        return fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                           "metric_arg is not served in cluster mode (the index's replicas "
                           "would not build with it)");
    d.dim = m->dim;
    if (check_tenant_indexes(c, d.tenant, &r->err) != 0)
        return -1;
    int live = 0;
    if (fpx_live_nodes(c, d.placement, sizeof d.placement, PLACEMENT_MAX, &live, &r->err) != 0)
        return -1;
    if (has_replicas != 0)
        replicas = live < 3 ? live : 3;
    if (replicas > live)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "replicas is %lld, but %d data nodes are live", (long long)replicas,
                           live);
    d.replicas = replicas;
    char every[PLACEMENT_LEN]; /* a sharded index spreads over all of them */
    snprintf(every, sizeof every, "%s", d.placement);
    char *cut = d.placement; /* this node first, then the others, up to replicas */
    for (int64_t i = 0; i < replicas && cut; i++) {
        cut = strchr(cut, ',');
        if (cut && i + 1 < replicas)
            cut++;
    }
    if (cut)
        *cut = 0;
    randombytes_buf(d.uid, sizeof d.uid);
    /* Written before anything names the index, so that no index of the
     * cluster is ever without its lease; one whose create then fails leaves
     * an entry that the reapers remove when it lapses. It runs from the
     * definition on (fpx_clease_begin): before, it also covers the time a
     * create may take (it gives up past that), so that no reaper finds it
     * lapsed while the index is being made. */
    if (lease && fpx_clease_put(c, d.uid, d.tenant, d.name, lease, &r->err) != 0)
        return -1;
    if (import) { /* taken already: said before the import is written anywhere */
        fpx_def had;
        char key[2 * FPX_NAME_MAX + 2];
        fpx_def_key(d.tenant, d.name, key);
        int found = fpx_def_get(c, key, &had, &r->err);
        if (found == 1) {
            fpx_def_clear(&had);
            return fpx_err_set(&r->err, FPX_E_EXISTS, "index '%s' already exists", d.name);
        }
        if (found < 0)
            return -1;
    }
    if (shards > 1)
        return create_sharded(c, r, &d, shards, import, every);
    fpx_index *ix = NULL;
    fpx_import_src src = {r->msg.body.data, r->msg.body.meta, r->msg.body.data_size,
                          r->msg.body.meta_size};
    if (define(c, &d, &r->made, &ix, import ? &src : NULL, &r->err) != 0)
        return -1;
    if (lease)
        fpx_clease_begin(c, d.uid);
    if (ix) {
        r->ix = ix; /* referenced by define */
        fpx_log(FPX_LOG_INFO, "defined index %s/%s in the cluster (replicas: %s)", d.tenant, d.name,
                d.placement);
    }
    return 0;
}

int fpx_cluster_drop(fpx_req *r) {
    fpx_cluster *c = r->s->cluster;
    fpx_index *ix = r->ix;
    char key[2 * FPX_NAME_MAX + 2], stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX];
    fpx_def_key(ix->tenant, ix->name, key);
    fpx_cluster_stream_names(ix->uid, stream, subject);
    /* the definition only while it is this index's: the name may have been
     * deleted and made again through another node since it was resolved */
    fpx_def d;
    if (fpx_def_delete(c, key, ix->uid, &d, &r->err) < 0)
        return -1;
    r->published = 1;
    jsErrCode jerr = 0;
    js_DeleteStream(c->js, stream, NULL, &jerr); /* gone already: as wanted */
    if (fpx_server_drop(r->s, ix, &r->err) != 0)
        return -1;
    fpx_log(FPX_LOG_INFO, "deleted index %s/%s from the cluster", ix->tenant, ix->name);
    return 0;
}
