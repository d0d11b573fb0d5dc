/*
 * list.c - list_indexes in a cluster: every index of the tenant, sorted by
 * index_id as one server sorts them. Those held here come from the local
 * replicas; the others from the first of their nodes that answers (one
 * forwarded list_indexes per node asked); a sharded index from its shards.
 * An index none of whose nodes answers is named under "unavailable", with
 * why, rather than left out (which would read as "it does not exist").
 */
#include "internal.h"

#include "server/order.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLACEMENT_MAX FPX_PLACEMENT_MAX
#define PLACEMENT_LEN FPX_PLACEMENT_LEN

/* One node's answer to a forwarded list_indexes: its own replicas. */
typedef struct node_list {
    char node[FPX_NODE_ID_MAX + 1];
    uint8_t *reply; /* NULL: it did not answer */
    fpx_msg m;
    const msgpack_object *indexes; /* an array of info maps, or NULL */
} node_list;

/* The info map of index name from node's list (asked once per node). */
static const msgpack_object *listed_by(fpx_req *r, node_list *lists, size_t *nlists, size_t cap,
                                       const char *node, const char *name, int *answered) {
    node_list *l = NULL;
    for (size_t i = 0; i < *nlists && !l; i++)
        if (!strcmp(lists[i].node, node))
            l = &lists[i];
    if (!l) {
        if (*nlists == cap)
            return NULL;
        l = &lists[(*nlists)++];
        memset(l, 0, sizeof *l);
        snprintf(l->node, sizeof l->node, "%s", node);
        size_t len;
        int sent;
        fpx_err err = {0};
        if (fpx_cluster_forward(r->s, node, r->body, r->body_len, &l->reply, &len, &sent, &err) ==
            0) {
            const msgpack_object *st;
            const char *str;
            size_t n;
            if (fpx_msg_decode(&l->m, l->reply, len, &err) != 0) {
                free(l->reply);
                l->reply = NULL;
            } else if (!(st = fpx_map_get(l->m.header, "status")) ||
                       fpx_obj_str(st, &str, &n) != 0 || n != 2 || memcmp(str, "ok", 2) ||
                       !l->m.meta || !(l->indexes = fpx_map_get(l->m.meta, "indexes")) ||
                       l->indexes->type != MSGPACK_OBJECT_ARRAY) {
                l->indexes = NULL;
            }
        }
    }
    *answered = l->indexes != NULL;
    for (uint32_t i = 0; l->indexes && i < l->indexes->via.array.size; i++) {
        const msgpack_object *info = &l->indexes->via.array.ptr[i];
        const msgpack_object *id =
            info->type == MSGPACK_OBJECT_MAP ? fpx_map_get(info, "index_id") : NULL;
        const char *str;
        size_t n;
        if (id && fpx_obj_str(id, &str, &n) == 0 && n == strlen(name) && !memcmp(str, name, n))
            return info;
    }
    return NULL;
}

/* One index of a list_indexes reply, kept until all are known and sorted. */
enum { LISTED_HERE, LISTED_ELSEWHERE, LISTED_SHARDED, LISTED_UNREACHED };
typedef struct listed {
    char name[FPX_NAME_MAX + 1];
    int kind;
    fpx_index *ix;              /* held here (referenced by the caller's list) */
    const msgpack_object *info; /* another node's info map, in its reply */
    msgpack_sbuffer packed;     /* a sharded index's info map, packed */
    fpx_err why;                /* why none of its nodes answered */
} listed;

static int by_name(const void *a, const void *b) {
    return strcmp(((const listed *)a)->name, ((const listed *)b)->name);
}

/* The tenant's index of definition d, held by other nodes, into e: from
 * the first of its nodes that answers, or with why none did. */
static int list_elsewhere(fpx_req *r, const fpx_def *d, node_list *lists, size_t *nlists,
                          size_t cap, listed *e) {
    fpx_cluster *c = r->s->cluster;
    if (d->shards > 1) {
        e->kind = LISTED_SHARDED;
        if (fpx_shard_info(c, r, d, &e->packed) == 0)
            return 0;
        if (r->err.type != FPX_E_UNAVAILABLE)
            return -1;
        e->kind = LISTED_UNREACHED;
        e->why = r->err;
        r->err = (fpx_err){0};
        return 0;
    }
    int answered = 0;
    char list[PLACEMENT_LEN];
    snprintf(list, sizeof list, "%s", d->placement);
    for (char *save = NULL, *node = strtok_r(list, ",", &save); node && !e->info;
         node = strtok_r(NULL, ",", &save)) {
        int ok = 0;
        if (strcmp(node, c->s->cfg->node_id))
            e->info = listed_by(r, lists, nlists, cap, node, d->name, &ok);
        answered |= ok;
    }
    if (e->info) {
        e->kind = LISTED_ELSEWHERE;
        return 0;
    }
    if (answered)
        return 1;               /* its nodes answered without it: deleted meanwhile */
    e->kind = LISTED_UNREACHED; /* left out, it would read as not existing */
    fpx_err_set(&e->why, FPX_E_UNAVAILABLE, "none of the nodes holding it (%s) answered",
                d->placement);
    return 0;
}

int fpx_cluster_list(fpx_req *r, fpx_out *o) {
    fpx_cluster *c = r->s->cluster;
    fpx_index **mine = NULL;
    size_t nmine = 0, n = 0, nlists = 0;
    kvKeysList keys = {0};
    listed *l = NULL;
    node_list lists[PLACEMENT_MAX * 4];
    int rc = 0;
    fpx_order_wait(&r->s->blocked); /* in its connection's order, as forward.c says */
    natsStatus st = kvStore_Keys(&keys, c->indexes, NULL);
    if (st != NATS_OK && st != NATS_NOT_FOUND)
        return fpx_cluster_fail(&r->err, "cannot list the index definitions", st);
    if (fpx_server_list(r->s, r->tenant, &mine, &nmine) != 0 ||
        !(l = calloc(nmine + (size_t)(keys.Count > 0 ? keys.Count : 0) + 1, sizeof *l))) {
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nmine; i++)
        if (mine[i]->name[0] != '.') { /* a shard held here is listed as part of its index */
            l[n].kind = LISTED_HERE;
            l[n].ix = mine[i];
            snprintf(l[n++].name, sizeof l->name, "%s", mine[i]->name);
        }
    /* The tenant's indexes held elsewhere (one forwarded list_indexes per
     * node asked), and its sharded indexes. */
    for (int i = 0; rc == 0 && i < keys.Count; i++) {
        char tenant[FPX_NAME_MAX + 1], name[FPX_NAME_MAX + 1];
        fpx_def d;
        if (fpx_def_key_parse(keys.Keys[i], tenant, name) != 0 || strcmp(tenant, r->tenant) ||
            name[0] == '.')
            continue;
        int local = 0;
        for (size_t j = 0; j < nmine && !local; j++)
            local = !strcmp(mine[j]->name, name);
        if (local || fpx_def_get(c, keys.Keys[i], &d, &r->err) != 1) {
            r->err = (fpx_err){0}; /* deleted meanwhile: not listed */
            continue;
        }
        listed *e = &l[n];
        snprintf(e->name, sizeof e->name, "%s", name);
        int got = list_elsewhere(r, &d, lists, &nlists, sizeof lists / sizeof lists[0], e);
        fpx_def_clear(&d);
        if (got == 0) {
            n++;
            continue;
        }
        msgpack_sbuffer_destroy(&e->packed);
        memset(e, 0, sizeof *e);
        if (got < 0)
            rc = -1;
    }
    if (rc == 0) {
        qsort(l, n, sizeof *l, by_name); /* n >= 0 items of a non-NULL array */
        size_t nunreached = 0;
        for (size_t i = 0; i < n; i++)
            nunreached += l[i].kind == LISTED_UNREACHED;
        fpx_reply_ok(r, o, 0);
        msgpack_packer *m = fpx_out_meta(o);
        msgpack_pack_map(m, nunreached ? 2 : 1);
        fpx_pack_cstr(m, "indexes");
        msgpack_pack_array(m, n - nunreached);
        for (size_t i = 0; i < n; i++) {
            if (l[i].kind == LISTED_HERE) {
                pthread_rwlock_rdlock(&l[i].ix->lock);
                fpx_index_pack_info(l[i].ix, m);
                pthread_rwlock_unlock(&l[i].ix->lock);
            } else if (l[i].kind == LISTED_ELSEWHERE) {
                msgpack_pack_object(m, *l[i].info);
            } else if (l[i].kind == LISTED_SHARDED) { /* packed already: appended as it is */
                m->callback(m->data, l[i].packed.data, l[i].packed.size);
            }
        }
        if (nunreached) { /* named, with why, so that the caller can tell or delete them */
            fpx_pack_cstr(m, "unavailable");
            msgpack_pack_array(m, nunreached);
            for (size_t i = 0; i < n; i++)
                if (l[i].kind == LISTED_UNREACHED) {
                    msgpack_pack_map(m, 2);
                    fpx_pack_cstr(m, "index_id");
                    fpx_pack_cstr(m, l[i].name);
                    fpx_pack_cstr(m, "error");
                    fpx_pack_cstr(m, l[i].why.msg);
                }
        }
    }
done:
    for (size_t i = 0; l && i < n; i++)
        msgpack_sbuffer_destroy(&l[i].packed);
    free(l);
    for (size_t i = 0; i < nmine; i++)
        fpx_index_unref(mine[i]);
    free(mine);
    for (size_t i = 0; i < nlists; i++)
        if (lists[i].reply) {
            fpx_msg_destroy(&lists[i].m);
            free(lists[i].reply);
        }
    kvKeysList_Destroy(&keys);
    return rc;
}
