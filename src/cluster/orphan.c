/*
 * orphan.c - what a create or delete that stopped half-way (its node killed,
 * NATS lost for minutes) leaves in NATS, found and removed by every node
 * (docs/cluster.md, "Failures").
 *
 * A create writes in this order: an unsharded index's stream, then its
 * definition; a sharded one each shard's definition (and stream), then its
 * own definition. A sharded delete removes its own definition first, then
 * the shards'. Stopped in between, that leaves:
 *   - a stream FPX_<uid> that no definition names;
 *   - shard definitions ".shard-<uid>-<i>" whose index is not defined (each
 *     with its stream, and replicas opened on its nodes);
 *   - a label counter in fpx_labels of a sharded index not defined.
 * Each is removed once this node has seen it orphaned for the grace period
 * (FPX_ORPHAN_GRACE_FACTOR times --forward-timeout-ms), a stream only when
 * no record was added to it meanwhile. A create in progress is never taken
 * for one: the creating node gives up (and undoes what it wrote) when it
 * could not write the definition that names its stream or shards within half
 * the grace (fpx_orphan_deadline_ms).
 *
 * What is defined is read from the watched definitions (c->def_cache), so a
 * pass costs two NATS requests (the streams' names and the label counters'
 * keys) plus one per orphaned stream. The list of orphans seen is the lease
 * reaper's thread's own, which runs the passes.
 */
#include "internal.h"

#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The grace is this many forward timeouts (4 minutes by default). */
#define FPX_ORPHAN_GRACE_FACTOR 8

typedef struct fpx_orphan {
    char kind; /* 'd' a shard's definition, 's' a stream, 'l' a label counter */
    char name[2 * FPX_NAME_MAX + 2];                        /* its key or stream name */
    char tenant[FPX_NAME_MAX + 1], shard[FPX_NAME_MAX + 1]; /* a shard definition's */
    char parent[FPX_UID_HEX];   /* the uid of the index a shard definition names */
    uint8_t uid[FPX_UID_BYTES]; /* a shard definition's own */
    uint64_t since_ms;          /* seen orphaned since (monotonic), or since its last record */
    uint64_t last_seq;          /* a stream's last sequence when last seen */
    int seen;                   /* in this pass */
    struct fpx_orphan *next;
} fpx_orphan;

/* What the definitions hold: every uid, the uids of the sharded indexes,
 * and the shard definitions with the uid of the index each names. */
typedef struct defined {
    char (*uids)[FPX_UID_HEX];
    size_t n_uids, cap_uids;
    char (*parents)[FPX_UID_HEX];
    size_t n_parents, cap_parents;
    fpx_orphan *shards; /* candidates: kind 'd', name the key, last_seq unused */
    int unsure;         /* out of memory, or a definition not read: no pass then */
} defined;

int64_t fpx_orphan_grace_ms(const fpx_cluster *c) {
    return (int64_t)FPX_ORPHAN_GRACE_FACTOR * c->s->cfg->forward_timeout_ms;
}

int64_t fpx_orphan_deadline_ms(const fpx_cluster *c) {
    return fpx_orphan_grace_ms(c) / 2;
}

static int push_hex(char (**a)[FPX_UID_HEX], size_t *n, size_t *cap, const char *hex) {
    if (*n == *cap) {
        size_t ncap = *cap ? 2 * *cap : 64;
        char(*b)[FPX_UID_HEX] = realloc(*a, ncap * sizeof **a);
        if (!b)
            return -1;
        *a = b;
        *cap = ncap;
    }
    snprintf((*a)[(*n)++], FPX_UID_HEX, "%s", hex);
    return 0;
}

static int cmp_hex(const void *a, const void *b) {
    return strcmp(a, b);
}

static int has_hex(char (*a)[FPX_UID_HEX], size_t n, const char *hex) {
    return n && bsearch(hex, a, n, sizeof *a, cmp_hex) != NULL;
}

static void collect(void *arg, const char *key, const uint8_t *val, size_t len) {
    defined *df = arg;
    fpx_def d;
    fpx_err err = {0};
    if (len > (size_t)INT32_MAX || fpx_def_decode(val, (int)len, &d, &err) != 0) {
        df->unsure = 1; /* it might name a stream or shards: nothing is removed */
        return;
    }
    char hex[FPX_UID_HEX], parent[FPX_UID_HEX];
    fpx_cluster_uid_hex(d.uid, hex);
    if (push_hex(&df->uids, &df->n_uids, &df->cap_uids, hex) != 0 ||
        (d.shards > 1 && push_hex(&df->parents, &df->n_parents, &df->cap_parents, hex) != 0))
        df->unsure = 1;
    int64_t i;
    if (fpx_shard_parse(d.name, parent, &i)) {
        fpx_orphan *o = calloc(1, sizeof *o);
        if (!o) {
            df->unsure = 1;
        } else {
            o->kind = 'd';
            snprintf(o->name, sizeof o->name, "%s", key);
            snprintf(o->tenant, sizeof o->tenant, "%s", d.tenant);
            snprintf(o->shard, sizeof o->shard, "%s", d.name);
            snprintf(o->parent, sizeof o->parent, "%s", parent);
            memcpy(o->uid, d.uid, FPX_UID_BYTES);
            o->next = df->shards;
            df->shards = o;
        }
    }
    fpx_def_clear(&d);
}

static void free_list(fpx_orphan *o) {
    while (o) {
        fpx_orphan *next = o->next;
        free(o);
        o = next;
    }
}

/* Marks o (a candidate of this pass) as seen on this node's list: a new one
 * from now, a stream whose last sequence moved from now again. */
static void note(fpx_cluster *c, const fpx_orphan *o, uint64_t now) {
    fpx_orphan *x = c->orphans;
    while (x && (x->kind != o->kind || strcmp(x->name, o->name)))
        x = x->next;
    if (!x) {
        if (!(x = malloc(sizeof *x)))
            return;
        *x = *o;
        x->since_ms = now;
        x->next = c->orphans;
        c->orphans = x;
    } else if (x->kind == 's' && x->last_seq != o->last_seq) {
        x->since_ms = now; /* written to meanwhile: a create may still be at it */
        x->last_seq = o->last_seq;
    }
    x->seen = 1;
}

/* Removes o from NATS: 0 done (or gone already), -1 not now. */
static int remove_orphan(fpx_cluster *c, const fpx_orphan *o) {
    fpx_err err = {0};
    jsErrCode jerr = 0;
    const char *what = o->kind == 'd'   ? "shard definition"
                       : o->kind == 's' ? "stream"
                                        : "label counter";
    int rc = 0;
    if (o->kind == 'd') {
        rc = fpx_cluster_undefine_uid(c, o->tenant, o->shard, o->uid, &err) < 0 ? -1 : 0;
    } else if (o->kind == 's') {
        natsStatus st = js_DeleteStream(c->js, o->name, NULL, &jerr);
        if (st != NATS_OK && jerr != JSStreamNotFoundErr)
            rc = fpx_cluster_fail(&err, "cannot delete the stream", st);
    } else {
        natsStatus st = kvStore_Delete(c->labels, o->name);
        if (st != NATS_OK)
            rc = fpx_cluster_fail(&err, "cannot delete the label counter", st);
    }
    if (rc != 0)
        fpx_log(FPX_LOG_WARN, "cannot remove the orphaned %s %s yet: %s", what, o->name, err.msg);
    else
        fpx_log(FPX_LOG_INFO,
                "removed the orphaned %s %s (no index names it: a create or delete stopped "
                "half-way)",
                what, o->name);
    return rc;
}

void fpx_orphan_pass(fpx_cluster *c) {
    defined df = {0};
    if (fpx_kvcache_each(&c->def_cache, collect, &df) != 0 || df.unsure) {
        free(df.uids);
        free(df.parents);
        free_list(df.shards);
        return; /* the watcher has not delivered every definition yet, or unsure */
    }
    if (df.n_uids) /* qsort of a NULL array is undefined, even of 0 items */
        qsort(df.uids, df.n_uids, sizeof *df.uids, cmp_hex);
    if (df.n_parents)
        qsort(df.parents, df.n_parents, sizeof *df.parents, cmp_hex);
    uint64_t now = fpx_mono_ms();
    for (fpx_orphan *x = c->orphans; x; x = x->next)
        x->seen = 0;
    /* shard definitions of an index not defined */
    for (fpx_orphan *o = df.shards; o; o = o->next)
        if (!has_hex(df.parents, df.n_parents, o->parent))
            note(c, o, now);
    /* streams no definition names */
    jsStreamNamesList *names = NULL;
    jsErrCode jerr = 0;
    int listed = js_StreamNames(&names, c->js, NULL, &jerr) == NATS_OK;
    for (int i = 0; listed && names && i < names->Count; i++) {
        const char *sn = names->List[i];
        if (strncmp(sn, "FPX_", 4) || strlen(sn + 4) != 2 * FPX_UID_BYTES ||
            has_hex(df.uids, df.n_uids, sn + 4))
            continue;
        jsStreamInfo *si = NULL;
        if (js_GetStreamInfo(&si, c->js, sn, NULL, &jerr) != NATS_OK)
            continue;
        fpx_orphan o = {.kind = 's', .last_seq = si->State.LastSeq};
        snprintf(o.name, sizeof o.name, "%s", sn);
        jsStreamInfo_Destroy(si);
        note(c, &o, now);
    }
    /* label counters of a sharded index not defined */
    kvKeysList keys = {0};
    if (kvStore_Keys(&keys, c->labels, NULL) == NATS_OK)
        for (int i = 0; i < keys.Count; i++)
            if (!has_hex(df.parents, df.n_parents, keys.Keys[i])) {
                fpx_orphan o = {.kind = 'l'};
                snprintf(o.name, sizeof o.name, "%s", keys.Keys[i]);
                note(c, &o, now);
            }
    kvKeysList_Destroy(&keys);
    /* those orphaned all the grace, removed; those not seen any more, forgotten */
    uint64_t grace = (uint64_t)fpx_orphan_grace_ms(c);
    for (fpx_orphan **at = &c->orphans; *at;) {
        fpx_orphan *x = *at;
        if (x->seen && now - x->since_ms >= grace && remove_orphan(c, x) != 0) {
            at = &x->next; /* tried again next pass */
            continue;
        }
        if (!x->seen || now - x->since_ms >= grace) {
            *at = x->next;
            free(x);
            continue;
        }
        at = &x->next;
    }
    jsStreamNamesList_Destroy(names);
    free(df.uids);
    free(df.parents);
    free_list(df.shards);
}

void fpx_orphan_forget(fpx_cluster *c) {
    free_list(c->orphans);
    c->orphans = NULL;
}
