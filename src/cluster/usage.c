/*
 * usage.c - what a tenant's indexes use over the whole cluster, for the
 * quotas --tenant-max-vectors and --tenant-max-disk-bytes (docs/cluster.md,
 * "Limits"); one server counts the indexes it holds (registry.c).
 *
 * Every heartbeat, each node writes what the replicas it holds use to the
 * bucket fpx_usage under its own id, one line per replica:
 *
 *   <uid hex> <tenant> <vectors> <bytes>
 *
 * Its entries expire as heartbeats do, so a node that died stops counting.
 * Every node watches the bucket. A tenant's use is then, per index (a shard
 * is one), what the replica held here uses when there is one (exact, under
 * the index's own write), else the most any other live node reports (at most
 * a heartbeat old); summed.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Written again at least this many beats apart while unchanged, well
 * within the entries' expiry. */
#define FPX_USAGE_REFRESH_BEATS 2

typedef struct use {
    char uid[FPX_UID_HEX];
    uint64_t vectors, bytes;
} use;

void fpx_usage_beat(fpx_cluster *c, unsigned beats) {
    fpx_server *s = c->s;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pthread_rwlock_rdlock(&s->reg_lock);
    for (size_t i = 0; i < s->nindexes; i++) {
        const fpx_index *ix = s->indexes[i];
        char hex[FPX_UID_HEX], line[FPX_UID_HEX + FPX_NAME_MAX + 48];
        fpx_cluster_uid_hex(ix->uid, hex);
        int n = snprintf(line, sizeof line, "%s %s %" PRIu64 " %" PRIu64 "\n", hex, ix->tenant,
                         (uint64_t)atomic_load(&ix->use_vectors),
                         (uint64_t)atomic_load(&ix->use_bytes));
        if (n > 0 && (size_t)n < sizeof line)
            msgpack_sbuffer_write(&sb, line, (size_t)n);
    }
    pthread_rwlock_unlock(&s->reg_lock);
    int same = c->usage_sent && sb.size == c->usage_sent_len &&
               (sb.size == 0 || !memcmp(sb.data, c->usage_sent, sb.size));
    if (same && beats - c->usage_beat < FPX_USAGE_REFRESH_BEATS) {
        msgpack_sbuffer_destroy(&sb);
        return;
    }
    uint64_t rev;
    natsStatus st =
        kvStore_Put(&rev, c->usage, s->cfg->node_id, sb.data ? sb.data : "", (int)sb.size);
    if (st != NATS_OK) { /* the next beat writes it */
        msgpack_sbuffer_destroy(&sb);
        return;
    }
    c->usage_beat = beats;
    free(c->usage_sent);
    c->usage_sent_len = sb.size;
    c->usage_sent = msgpack_sbuffer_release(&sb);
    if (!c->usage_sent) /* nothing held: an empty buffer stands for it */
        c->usage_sent = calloc(1, 1);
}

typedef struct gather {
    const char *me, *tenant;
    char (*held)[FPX_UID_HEX];
    size_t nheld;
    use *u;
    size_t n, cap;
    int oom;
} gather;

static void gather_node(void *arg, const char *key, const uint8_t *val, size_t len) {
    gather *g = arg;
    if (!strcmp(key, g->me)) /* this node's replicas: counted from the registry */
        return;
    const char *p = (const char *)val, *end = p + len;
    size_t tlen = strlen(g->tenant);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char line[FPX_UID_HEX + FPX_NAME_MAX + 48], uid[FPX_UID_HEX], tenant[FPX_NAME_MAX + 1];
        use u;
        if (n < sizeof line) {
            memcpy(line, p, n);
            line[n] = 0;
            char fmt[64];
            snprintf(fmt, sizeof fmt, "%%%ds %%%ds %%" SCNu64 " %%" SCNu64, FPX_UID_HEX - 1,
                     FPX_NAME_MAX);
            if (sscanf(line, fmt, uid, tenant, &u.vectors, &u.bytes) == 4 &&
                strlen(tenant) == tlen && !memcmp(tenant, g->tenant, tlen)) {
                int here = 0;
                for (size_t i = 0; i < g->nheld && !here; i++)
                    here = !strcmp(g->held[i], uid);
                if (!here && g->n == g->cap) {
                    size_t ncap = g->cap ? 2 * g->cap : 32;
                    use *nu = realloc(g->u, ncap * sizeof *nu);
                    if (!nu) {
                        g->oom = 1;
                        return;
                    }
                    g->u = nu;
                    g->cap = ncap;
                }
                if (!here) {
                    snprintf(u.uid, sizeof u.uid, "%s", uid);
                    g->u[g->n++] = u;
                }
            }
        }
        p += n + (nl != NULL);
    }
}

static int by_uid(const void *a, const void *b) {
    return strcmp(((const use *)a)->uid, ((const use *)b)->uid);
}

int fpx_cluster_usage(fpx_server *s, const char *tenant, const uint8_t *held, size_t nheld,
                      uint64_t *vectors, uint64_t *bytes, fpx_err *err) {
    fpx_cluster *c = s->cluster;
    gather g = {.me = s->cfg->node_id, .tenant = tenant, .nheld = nheld};
    if (nheld && !(g.held = malloc(nheld * sizeof *g.held)))
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    for (size_t i = 0; i < nheld; i++)
        fpx_cluster_uid_hex(held + i * FPX_UID_BYTES, g.held[i]);
    if (fpx_kvcache_each(&c->usage_cache, gather_node, &g) != 0 || g.oom) {
        free(g.held);
        free(g.u);
        return g.oom ? fpx_err_set(err, FPX_E_INTERNAL, "out of memory")
                     : fpx_err_set(err, FPX_E_UNAVAILABLE,
                                   "the cluster's usage is not known yet: try again");
    }
    if (g.n)
        qsort(g.u, g.n, sizeof *g.u, by_uid);
    for (size_t i = 0; i < g.n;) { /* each index once: the most any replica reports */
        uint64_t v = 0, b = 0;
        size_t j = i;
        for (; j < g.n && !strcmp(g.u[j].uid, g.u[i].uid); j++) {
            v = g.u[j].vectors > v ? g.u[j].vectors : v;
            b = g.u[j].bytes > b ? g.u[j].bytes : b;
        }
        *vectors += v;
        *bytes += b;
        i = j;
    }
    free(g.held);
    free(g.u);
    return 0;
}
