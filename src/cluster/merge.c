/*
 * merge.c - merge_from between two unsharded indexes of a cluster
 * (docs/cluster.md, "merge_from").
 *
 * One server holds both indexes' locks across the target's merge record and
 * the other's reset. In a cluster the two records go to two streams, and
 * other nodes may write to the other index between them. So the merge runs
 * on a node holding replicas of both, and fences the other index first:
 *
 *   1. a fence record on the other's stream (FPX_WAL_FENCE, with the merge's
 *      id, the target and add_id). From it on, every replica refuses the
 *      stream's other writes (unavailable: try again), so the other's
 *      content as of the fence is what the target takes;
 *   2. the merge record on the target's stream, as one server logs it, with
 *      the message id merge-<id> and the other's fence sequence;
 *   3. the merge's reset on the other's stream (its id: it empties only the
 *      index it fenced, once), which lifts the fence; or, when the target's
 *      replicas refused the merge, an unfence.
 *
 * A node that stops between 1 and 3 leaves the fence. Every node looks at
 * the replicas it holds once a second; a fence older than FPX_MERGE_GRACE_MS
 * whose target this node also holds is finished here, with the records the
 * first node would have sent: the merge record again under its message id
 * (JetStream stores it once; past its duplicate window, the target's replicas
 * take a merge of the same fence once, by its sequence), then the reset, or
 * the unfence when the target refused it.
 */
#include "internal.h"

#include "server/apply.h"
#include "server/index.h"
#include "server/ops.h"
#include "server/util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long a fence may stand before another node finishes its merge: well
 * past what the node that began it takes (an export and two publishes). */
#define FPX_MERGE_GRACE_MS 15000
/* Fenced replicas finished per pass, at most. */
#define FPX_MERGE_PER_PASS 8

/* ---- the route --------------------------------------------------------------------- */

int fpx_cluster_merge_route(fpx_cluster *c, fpx_req *r, const fpx_def *t) {
    const msgpack_object *o = fpx_map_get(r->h, "other");
    const char *p;
    size_t len;
    char other[FPX_NAME_MAX + 1], key[2 * FPX_NAME_MAX + 2];
    if (!o || fpx_obj_str(o, &p, &len) || !fpx_name_valid(p, len))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "other must be the name of an index of the tenant");
    memcpy(other, p, len);
    other[len] = 0;
    fpx_def od;
    uint64_t rev = 0;
    fpx_def_key(r->tenant, other, key);
    int found = fpx_def_read(c, key, &od, &rev, &r->err);
    if (found == 0)
        return fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", other);
    if (found < 0)
        return -1;
    int rc = 0;
    char both[FPX_PLACEMENT_LEN] = "";
    if (od.shards > 1) {
        rc = fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                         "merge_from out of the sharded index '%s' is not served by a cluster",
                         other);
    } else {
        char list[FPX_PLACEMENT_LEN];
        snprintf(list, sizeof list, "%s", t->placement);
        for (char *save = NULL, *node = strtok_r(list, ",", &save); node;
             node = strtok_r(NULL, ",", &save))
            if (fpx_list_has(od.placement, node)) {
                size_t at = strlen(both);
                snprintf(both + at, sizeof both - at, "%s%s", at ? "," : "", node);
            }
        if (!both[0])
            rc = fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                             "merge_from needs a node holding replicas of both '%s' (on %s) and "
                             "'%s' (on %s); move one replica (docs/cluster.md, \"Moving a "
                             "replica\") so that a node holds both",
                             t->name, t->placement, other, od.placement);
    }
    if (rc == 0 && !fpx_node_listed(c, both)) { /* a node that holds both serves it */
        fpx_forward_to_holders(c, r, both);
        rc = 1;
    } else if (rc == 0) { /* the other's replica here, open (bind finds it) */
        fpx_err err = {0};
        pthread_mutex_lock(&c->mu);
        fpx_replica *rep = fpx_replica_open(c, &od, rev, NULL, &err);
        pthread_mutex_unlock(&c->mu);
        if (!rep) {
            r->err = err;
            rc = -1;
        }
    }
    fpx_def_clear(&od);
    return rc;
}

int fpx_cluster_merge_routed(fpx_req *r) {
    fpx_cluster *c = r->s->cluster;
    char name[FPX_NAME_MAX + 1], key[2 * FPX_NAME_MAX + 2];
    if (fpx_req_name(r, 0, name))
        return 1;
    fpx_def d;
    fpx_def_key(r->tenant, name, key);
    int found = fpx_def_read(c, key, &d, NULL, &r->err);
    if (found == 0)
        fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", name);
    if (found <= 0)
        return 1;
    /* a sharded target answers unsupported from its shards (shard.c) */
    int rc = d.shards <= 1 && fpx_cluster_merge_route(c, r, &d) != 0;
    fpx_def_clear(&d);
    return rc;
}

/* ---- the node serving it ----------------------------------------------------------- */

/* Brings ix (locked exclusively) to its stream's last record. */
static int catch_up(fpx_cluster *c, fpx_index *ix, fpx_err *err) {
    uint64_t last = 0;
    if (fpx_log_last_seq(c, ix->uid, &last, err) != 0)
        return -1;
    return ix->seq < last ? fpx_log_catch_up(c, ix, last, err) : 0;
}

/* Publishes the record op (data, meta) to ix's stream under msgid and
 * applies it here (ix locked exclusively); meta is destroyed. */
static int send_applied(fpx_cluster *c, fpx_index *ix, fpx_walop op, const uint8_t *data,
                        size_t dlen, int64_t n, msgpack_sbuffer *meta, const char *msgid,
                        fpx_err *err) {
    fpx_walrec rec = {.op = op,
                      .n = n,
                      .data = data,
                      .data_len = dlen,
                      .meta = (const uint8_t *)meta->data,
                      .meta_len = meta->size};
    uint64_t seq = 0;
    int rc = meta->data ? fpx_log_publish_rec(c, ix->uid, &rec, msgid, &seq, err)
                        : fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    msgpack_sbuffer_destroy(meta);
    if (rc == 0 && ix->seq < seq)
        rc = fpx_log_catch_up(c, ix, seq, err);
    return rc;
}

/* Publishes the record op (meta {"merge_id": id}) of merge id to ix's
 * stream (ix locked exclusively) and applies it here. */
static int end_fence(fpx_cluster *c, fpx_index *ix, fpx_walop op, const char *id, fpx_err *err) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    fpx_pack_cstr(&pk, "merge_id");
    fpx_pack_cstr(&pk, id);
    char msgid[64];
    snprintf(msgid, sizeof msgid, "merge-%s-%s", op == FPX_WAL_RESET ? "reset" : "unfence", id);
    return send_applied(c, ix, op, NULL, 0, 0, &sb, msgid, err);
}

int fpx_cluster_merge_fence(fpx_req *r) {
    fpx_cluster *c = r->s->cluster;
    fpx_index *other = r->other, *ix = r->ix;
    if (catch_up(c, other, &r->err) != 0)
        return -1;
    uint8_t raw[FPX_FENCE_ID_MAX / 2];
    randombytes_buf(raw, sizeof raw);
    char id[FPX_FENCE_ID_MAX + 1];
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(id + 2 * i, 3, "%02x", raw[i]);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    fpx_pack_cstr(&pk, "merge_id");
    fpx_pack_cstr(&pk, id);
    fpx_pack_cstr(&pk, "to");
    fpx_pack_cstr(&pk, ix->name);
    fpx_pack_cstr(&pk, "to_uid");
    msgpack_pack_bin(&pk, FPX_UID_BYTES);
    msgpack_pack_bin_body(&pk, ix->uid, FPX_UID_BYTES);
    fpx_pack_cstr(&pk, "add_id");
    msgpack_pack_int64(&pk, r->i0);
    char msgid[64];
    snprintf(msgid, sizeof msgid, "merge-fence-%s", id);
    if (send_applied(c, other, FPX_WAL_FENCE, NULL, 0, 0, &sb, msgid, &r->err) != 0)
        return -1;
    if (strcmp(other->fence_id, id) != 0) /* its replicas refused it: why, as they said */
        return fpx_fence_refusal(other, &r->err)
                   ? -1
                   : fpx_err_set(&r->err, FPX_E_INTERNAL, "the fence of index '%s' did not apply",
                                 other->name);
    snprintf(r->merge_id, sizeof r->merge_id, "%s", id);
    r->merge_state = 1;
    return 0;
}

int fpx_cluster_merge_reset(fpx_req *r) {
    if (end_fence(r->s->cluster, r->other, FPX_WAL_RESET, r->merge_id, &r->err) != 0) {
        /* the merge is stored: the node finishing it resets the other */
        fpx_err e = r->err;
        return fpx_err_set(&r->err, e.type,
                           "the vectors of '%s' were merged into '%s', but '%s' could not be "
                           "emptied yet (a node of the cluster does it within seconds): %s",
                           r->other->name, r->ix->name, r->other->name, e.msg);
    }
    r->merge_state = 2;
    return 0;
}

void fpx_cluster_merge_abandon(fpx_req *r) {
    /* Lifted only when the merge is known not to be stored, or refused by
     * the target's replicas; else (a publish whose outcome is unknown) the
     * node finishing it decides from the target's stream. */
    if (r->published && !r->merge_refused)
        return;
    fpx_err err = {0};
    if (end_fence(r->s->cluster, r->other, FPX_WAL_UNFENCE, r->merge_id, &err) != 0)
        fpx_log(FPX_LOG_WARN,
                "%s/%s: cannot lift the fence of a merge_from that did not happen (a node of the "
                "cluster lifts it within seconds): %s",
                r->other->tenant, r->other->name, err.msg);
}

/* ---- finishing a merge whose node stopped ------------------------------------------ */

/* Whether ix (locked) took the merge of other's fence. */
static int merged(const fpx_index *ix, const fpx_index *other) {
    for (const fpx_merge_todo *t = ix->merge_todo; t; t = t->next)
        if (t->seq == other->fence_seq && !memcmp(t->uid, other->uid, FPX_UID_BYTES))
            return 1;
    return 0;
}

/* The merge record of other's fence, published to ix's stream and applied
 * here (both locked exclusively). */
static int send_merge(fpx_cluster *c, fpx_index *ix, fpx_index *other, fpx_err *err) {
    uint8_t *buf = NULL;
    size_t blen = 0;
    if (fpx_index_export(other, &buf, &blen, err))
        return -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fpx_merge_pack_meta(&pk, other, other->fence_seq, other->fence_add_id, other->fence_id);
    char msgid[64];
    snprintf(msgid, sizeof msgid, "merge-%s", other->fence_id);
    int rc = send_applied(c, ix, FPX_WAL_MERGE, buf, blen, other->nlive, &sb, msgid, err);
    free(buf);
    return rc;
}

/* Lifts other's fence id when its target (to, to_uid) is deleted: no merge
 * into it can happen any more. */
static void lift_orphan(fpx_cluster *c, fpx_index *other, const char *id) {
    char to[FPX_NAME_MAX + 1], key[2 * FPX_NAME_MAX + 2];
    uint8_t to_uid[FPX_UID_BYTES];
    pthread_rwlock_rdlock(&other->lock);
    snprintf(to, sizeof to, "%s", other->fence_to);
    memcpy(to_uid, other->fence_to_uid, FPX_UID_BYTES);
    pthread_rwlock_unlock(&other->lock);
    fpx_def d;
    fpx_err err = {0};
    fpx_def_key(other->tenant, to, key);
    int found = fpx_def_read(c, key, &d, NULL, &err);
    if (found < 0)
        return;
    int gone = found == 0 || memcmp(d.uid, to_uid, FPX_UID_BYTES) != 0;
    if (found > 0)
        fpx_def_clear(&d);
    if (!gone)
        return; /* a node holding both finishes it */
    fpx_index_lock_write(other);
    int rc = 0;
    if (!other->dropped && !strcmp(other->fence_id, id))
        rc = catch_up(c, other, &err);
    if (rc == 0 && !other->dropped && !strcmp(other->fence_id, id)) {
        rc = end_fence(c, other, FPX_WAL_UNFENCE, id, &err);
        if (rc == 0)
            fpx_log(FPX_LOG_WARN,
                    "%s/%s: lifted the fence of a merge_from into '%s', deleted since: it "
                    "keeps its vectors",
                    other->tenant, other->name, to);
    }
    pthread_rwlock_unlock(&other->lock);
    if (rc != 0)
        fpx_log(FPX_LOG_WARN, "%s/%s: cannot lift the fence of a merge_from yet: %s", other->tenant,
                other->name, err.msg);
}

/* Finishes the merge id out of other into ix (both referenced). */
static void finish(fpx_cluster *c, fpx_index *ix, fpx_index *other, const char *id) {
    fpx_err err = {0};
    /* in merge_from's order: the merge lock, the other index, the target */
    fpx_merge_lock();
    fpx_index_lock_write(other);
    fpx_index_lock_write(ix);
    int rc = 0;
    if (!ix->dropped && !other->dropped && !strcmp(other->fence_id, id)) {
        rc = catch_up(c, other, &err);
        if (rc == 0)
            rc = catch_up(c, ix, &err);
        if (rc == 0 && !strcmp(other->fence_id, id) && !merged(ix, other)) {
            rc = send_merge(c, ix, other, &err);
            if (rc != 0 && err.type == FPX_E_LIMIT) /* it can never be sent: not merged */
                rc = 0;
        }
        if (rc == 0 && !strcmp(other->fence_id, id)) {
            int done = merged(ix, other);
            rc = end_fence(c, other, done ? FPX_WAL_RESET : FPX_WAL_UNFENCE, id, &err);
            if (rc == 0)
                fpx_log(FPX_LOG_WARN,
                        "%s/%s: finished a merge_from into '%s' that its node left undone: %s",
                        other->tenant, other->name, ix->name,
                        done ? "its vectors moved, it is emptied"
                             : "the target refused them, it keeps them");
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    pthread_rwlock_unlock(&other->lock);
    fpx_merge_unlock();
    if (rc != 0)
        fpx_log(FPX_LOG_WARN, "%s/%s: cannot finish a merge_from left undone yet: %s",
                other->tenant, other->name, err.msg);
}

/* The replica here of the index with unique id uid, referenced; NULL if none. */
static fpx_index *held(fpx_cluster *c, const uint8_t *uid) {
    fpx_index *ix = NULL;
    pthread_mutex_lock(&c->mu);
    for (fpx_replica *rep = c->reps; rep && !ix; rep = rep->next)
        if (!memcmp(rep->ix->uid, uid, FPX_UID_BYTES)) {
            ix = rep->ix;
            atomic_fetch_add(&ix->refs, 1);
        }
    pthread_mutex_unlock(&c->mu);
    return ix;
}

void fpx_cluster_merge_finish_pass(fpx_cluster *c) {
    fpx_index *fenced[FPX_MERGE_PER_PASS];
    char ids[FPX_MERGE_PER_PASS][FPX_FENCE_ID_MAX + 1];
    uint8_t to[FPX_MERGE_PER_PASS][FPX_UID_BYTES];
    int n = 0;
    uint64_t now = fpx_mono_ms();
    pthread_mutex_lock(&c->mu);
    for (fpx_replica *rep = c->reps; rep && n < FPX_MERGE_PER_PASS; rep = rep->next) {
        fpx_index *ix = rep->ix;
        if (pthread_rwlock_tryrdlock(&ix->lock) != 0)
            continue; /* busy: the next pass */
        if (ix->fence_id[0] && now - ix->fence_ms > FPX_MERGE_GRACE_MS) {
            snprintf(ids[n], sizeof ids[n], "%s", ix->fence_id);
            memcpy(to[n], ix->fence_to_uid, FPX_UID_BYTES);
            atomic_fetch_add(&ix->refs, 1);
            fenced[n++] = ix;
        }
        pthread_rwlock_unlock(&ix->lock);
    }
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++) {
        fpx_index *target = held(c, to[i]);
        if (target)
            finish(c, target, fenced[i], ids[i]);
        else
            lift_orphan(c, fenced[i], ids[i]);
        fpx_index_unref(target);
        fpx_index_unref(fenced[i]);
    }
}
