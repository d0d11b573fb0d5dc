/*
 * repair.c - replacing the replicas of a node that is gone (docs/cluster.md,
 * "Replacing a lost node").
 *
 * Every data node watches the placements of the definitions (its cache of
 * fpx_indexes) and the heartbeats of the nodes they name. A node named in a
 * placement and not live for --replace-after seconds as this node saw it
 * (from its own start at the earliest, so that a node just started does not
 * take every absent node for long gone), has its replica of that
 * index moved to another live data node by the first live node of the
 * placement, and by no other: the move is the command's (move.c: add the
 * new node, wait until it applied the stream, for a shard rename it in the
 * shard map, remove the lost one), with compare-and-sets on the definition,
 * so that a concurrent create, delete or move is never overwritten. The new
 * node is the live data node outside the placement holding the fewest
 * replicas. A node that returns after its replicas moved drops them (its
 * watcher sees them placed elsewhere).
 */
#include "internal.h"

#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FPX_REPAIR_PASS_MS 2000
/* Nodes whose absence is followed, and moves begun, per pass at most. */
#define FPX_REPAIR_NODES 256
#define FPX_REPAIR_MOVES 4

/* A node named in a placement, and since when it is not live (0: live). */
typedef struct absence {
    char node[FPX_NODE_ID_MAX + 1];
    uint64_t since_ms;
    int seen, warned;
} absence;

typedef struct repairer {
    fpx_cluster *c;
    uint64_t after_ms;
    absence nodes[FPX_REPAIR_NODES];
    int n;
} repairer;

/* The definitions, copied out of the cache (whose lock a callback holds). */
typedef struct defs {
    fpx_def *d;
    size_t n, cap;
} defs;

static void collect(void *arg, const char *key, const uint8_t *val, size_t len) {
    defs *x = arg;
    (void)key;
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 64;
        fpx_def *d = realloc(x->d, cap * sizeof *d);
        if (!d)
            return;
        x->d = d;
        x->cap = cap;
    }
    fpx_err err = {0};
    if (fpx_def_decode(val, (int)len, &x->d[x->n], &err) == 0)
        x->n++;
}

/* The entry of node, added (live) when new; NULL when the table is full. */
static absence *absence_of(repairer *rp, const char *node) {
    for (int i = 0; i < rp->n; i++)
        if (!strcmp(rp->nodes[i].node, node))
            return &rp->nodes[i];
    if (rp->n == FPX_REPAIR_NODES)
        return NULL;
    absence *a = &rp->nodes[rp->n++];
    memset(a, 0, sizeof *a);
    snprintf(a->node, sizeof a->node, "%s", node);
    return a;
}

static int live(fpx_cluster *c, const char *node) {
    if (!strcmp(node, c->s->cfg->node_id))
        return 1;
    char ep[320];
    int router = 0;
    fpx_err err = {0};
    return fpx_node_lookup(c, node, ep, sizeof ep, &router, &err) != 0; /* an error: maybe live */
}

/* The live data node outside d's placement holding the fewest replicas of
 * all, into to; 0 when there is none. */
static int pick_target(fpx_cluster *c, const defs *all, const fpx_def *d, char *to, size_t cap) {
    char list[FPX_PLACEMENT_LEN];
    int n = 0, best = -1;
    fpx_err err = {0};
    if (fpx_live_nodes(c, list, sizeof list, FPX_PLACEMENT_MAX, &n, &err) != 0)
        return 0;
    for (char *save = NULL, *node = strtok_r(list, ",", &save); node;
         node = strtok_r(NULL, ",", &save)) {
        if (fpx_list_has(d->placement, node))
            continue;
        int held = 0;
        for (size_t i = 0; i < all->n; i++)
            held += all->d[i].shards <= 1 && fpx_list_has(all->d[i].placement, node);
        if (best < 0 || held < best) {
            best = held;
            snprintf(to, cap, "%s", node);
        }
    }
    return best >= 0;
}

/* For a shard (".shard-<uid hex>-<i>"): its sharded index's name and the
 * shard's number; 0 for an index of its own, -1 when its sharded index is
 * not among the definitions. */
static int shard_of(const defs *all, const fpx_def *d, char *parent, int64_t *shard) {
    char want[FPX_UID_HEX], hex[FPX_UID_HEX];
    if (!fpx_shard_parse(d->name, want, shard))
        return 0;
    for (size_t i = 0; i < all->n; i++) {
        if (all->d[i].shards <= 1 || strcmp(all->d[i].tenant, d->tenant))
            continue;
        fpx_cluster_uid_hex(all->d[i].uid, hex);
        if (!strcmp(hex, want)) {
            snprintf(parent, FPX_NAME_MAX + 1, "%s", all->d[i].name);
            return 1;
        }
    }
    return -1;
}

/* Moves d's replica of the lost node a to another live node. */
static void replace(repairer *rp, const defs *all, const fpx_def *d, absence *a) {
    fpx_cluster *c = rp->c;
    char to[FPX_NODE_ID_MAX + 1], parent[FPX_NAME_MAX + 1], what[2 * FPX_NAME_MAX + 40];
    int64_t shard = -1;
    int sharded = shard_of(all, d, parent, &shard);
    if (sharded < 0)
        return; /* its sharded index is being created or deleted */
    const char *name = sharded ? parent : d->name;
    if (sharded)
        snprintf(what, sizeof what, "%s/%s shard %lld", d->tenant, name, (long long)shard);
    else
        snprintf(what, sizeof what, "%s/%s", d->tenant, name);
    unsigned long long gone = (fpx_mono_ms() - a->since_ms) / 1000;
    if (!pick_target(c, all, d, to, sizeof to)) {
        if (!a->warned)
            fpx_log(FPX_LOG_WARN,
                    "node %s is gone (for %llu s); its replica of %s has no live node to go to "
                    "(every live data node holds one already): it moves once one joins",
                    a->node, gone, what);
        a->warned = 1;
        return;
    }
    fpx_log(FPX_LOG_INFO,
            "node %s is gone (for %llu s, --replace-after %d): moving its replica of %s to "
            "node %s",
            a->node, gone, c->s->cfg->replace_after, what, to);
    fpx_err err = {0};
    if (fpx_move_replica(c, d->tenant, name, shard, a->node, to, &err) == 0)
        fpx_log(FPX_LOG_INFO, "moved node %s's replica of %s to node %s", a->node, what, to);
    else
        fpx_log(FPX_LOG_WARN, "cannot move node %s's replica of %s to node %s (tried again): %s",
                a->node, what, to, err.msg);
}

static void pass(repairer *rp) {
    fpx_cluster *c = rp->c;
    uint64_t now = fpx_mono_ms();
    if (natsConnection_Status(c->nc) != NATS_CONN_STATUS_CONNECTED) {
        /* cut from NATS, every node looks gone: judged again once back */
        rp->n = 0;
        return;
    }
    defs all = {0};
    if (fpx_kvcache_each(&c->def_cache, collect, &all) != 0)
        return; /* the cache is not ready: next time */
    for (int i = 0; i < rp->n; i++)
        rp->nodes[i].seen = 0;
    /* First who is gone, and since when. */
    for (size_t i = 0; i < all.n; i++) {
        char list[FPX_PLACEMENT_LEN];
        snprintf(list, sizeof list, "%s", all.d[i].placement);
        for (char *save = NULL, *node = strtok_r(list, ",", &save); node;
             node = strtok_r(NULL, ",", &save)) {
            absence *a = absence_of(rp, node);
            if (!a || a->seen)
                continue;
            a->seen = 1;
            if (live(c, node)) {
                a->since_ms = 0;
                a->warned = 0;
            } else if (!a->since_ms) {
                a->since_ms = now;
            }
        }
    }
    for (int i = 0; i < rp->n;) /* nodes no placement names any more */
        if (!rp->nodes[i].seen)
            rp->nodes[i] = rp->nodes[--rp->n];
        else
            i++;
    /* Then what this node is to move: as the first live node of a placement
     * naming a node gone for long enough (one move per index a pass). */
    int moves = 0;
    for (size_t i = 0; i < all.n && moves < FPX_REPAIR_MOVES; i++) {
        const fpx_def *d = &all.d[i];
        if (d->shards > 1 || fpx_cluster_wait_stop(c, 0))
            continue;
        char list[FPX_PLACEMENT_LEN];
        const char *first = NULL;
        absence *lost = NULL;
        snprintf(list, sizeof list, "%s", d->placement);
        for (char *save = NULL, *node = strtok_r(list, ",", &save); node;
             node = strtok_r(NULL, ",", &save)) {
            absence *a = absence_of(rp, node);
            if (!a)
                continue;
            if (!a->since_ms && !first)
                first = node;
            if (a->since_ms && now - a->since_ms >= rp->after_ms && !lost)
                lost = a;
        }
        if (lost && first && !strcmp(first, c->s->cfg->node_id)) {
            replace(rp, &all, d, lost);
            moves++;
        }
    }
    for (size_t i = 0; i < all.n; i++)
        fpx_def_clear(&all.d[i]);
    free(all.d);
}

void *fpx_repair_main(void *arg) {
    repairer *rp = calloc(1, sizeof *rp);
    fpx_cluster *c = arg;
    if (!rp)
        return NULL;
    rp->c = c;
    rp->after_ms = (uint64_t)c->s->cfg->replace_after * 1000u;
    while (!fpx_cluster_wait_stop(c, FPX_REPAIR_PASS_MS))
        pass(rp);
    free(rp);
    return NULL;
}
