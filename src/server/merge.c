/*
 * merge.c - FAISS merge_from between two indexes of one tenant: the vectors of
 * the other index move into the request's index, and the other is left empty,
 * as FAISS leaves it.
 *
 * The move is two logged writes: the target's merge record carries the other
 * index's FAISS export (its live vectors and labels), so replaying the target's
 * log alone gives the same index whatever became of the other; then the other
 * index logs a reset. Both indexes are held exclusive across the two, so no
 * write slips in between the export and the reset. Merges take one server-wide
 * lock before the other index's, so two merges in opposite directions cannot
 * wait for each other; every other operation holds one index lock at a time,
 * so a merge waiting for its target only waits for them to end.
 */
#include "apply.h"
#include "cluster/cluster.h"
#include "index_impl.h"
#include "ops.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t merge_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- the index side ---------------------------------------------------------------- */

int fpx_index_merge(fpx_index *ix, fpx_engine *other, const int64_t *olabels, int64_t add_id,
                    fpx_err *err) {
    int64_t m = fpx_engine_ntotal(other), base = ix->nslots;
    /* FAISS keeps the other's ids (plus add_id) in IVF lists and IDMaps; the
     * other types number their vectors by place (flat codes refuse an add_id,
     * fast-scan indexes ignore it) */
    double nlist;
    int keep = fpx_engine_get_param(ix->eng, "nlist", &nlist) == 0 ||
               fpx_index_type_has_idmap(ix->index_type);
    if (!keep && add_id != 0 && !ix->binary && fpx_engine_remove_renumbers(ix->eng))
        return fpx_err_set(err, FPX_E_FAISS, "cannot set ids in FlatCodes index");
    if (fpx_engine_merge_check(ix->eng, other, err))
        return -1;
    int64_t *lab = NULL;
    int breaks_identity = 0;
    if (keep && m > 0) {
        lab = malloc(sizeof *lab * (size_t)m);
        if (!lab)
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
        for (int64_t i = 0; i < m; i++) {
            int64_t l = olabels ? olabels[i] : i;
            if ((add_id > 0 && l > INT64_MAX - add_id) || l + add_id < 0) {
                free(lab);
                return fpx_err_set(err, FPX_E_VALIDATION,
                                   "label %lld + add_id %lld is not a label (0..2^63-1)",
                                   (long long)l, (long long)add_id);
            }
            lab[i] = l + add_id;
            if (fpx_index_slot_of(ix, l + add_id) >= 0) {
                free(lab);
                return fpx_err_set(err, FPX_E_VALIDATION,
                                   "label %lld would be in the index twice: a label names one "
                                   "vector on this server (FAISS would keep both)",
                                   (long long)(l + add_id));
            }
            breaks_identity |= lab[i] != base + i;
        }
    }
    /* everything that can fail before the engine changes */
    int rc = fpx_index_reserve(ix, base + m, 0, 0);
    if (rc == 0 && breaks_identity && !ix->labels)
        rc = fpx_index_label_table(ix, NULL, m);
    else if (rc == 0 && ix->labels)
        rc = fpx_slotmap_reserve(&ix->labelmap, (size_t)m);
    if (rc != 0) {
        free(lab);
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory growing the tables of '%s'",
                           ix->name);
    }
    if (fpx_engine_merge(ix->eng, other, err)) {
        free(lab);
        return -1;
    }
    for (int64_t i = 0; i < m; i++)
        fpx_index_occupy(ix, base + i, lab ? lab[i] : ix->next_label);
    free(lab);
    return 0;
}

/* ---- the operation ------------------------------------------------------------------ */

int fpx_prep_merge(fpx_req *r) {
    int64_t add_id = 0;
    if (fpx_req_int(r, "add_id", 0, &add_id) < 0)
        return -1;
    r->i0 = add_id;
    const msgpack_object *o = fpx_map_get(r->h, "other");
    const char *name;
    size_t len;
    if (!o || fpx_obj_str(o, &name, &len) || !fpx_name_valid(name, len))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "other must be the name of an index of the tenant");
    return 0;
}

int fpx_index_has_entries(const fpx_index *ix) {
    for (int64_t s = 0; s < ix->nslots; s++)
        if (fpx_bit_get(ix->alive, s) && ((ix->keys && ix->keys[s]) || (ix->meta && ix->meta[s])))
            return 1;
    return 0;
}

int fpx_bind_merge(fpx_req *r) {
    const msgpack_object *o = fpx_map_get(r->h, "other");
    const char *name;
    size_t len;
    fpx_obj_str(o, &name, &len); /* checked by prepare */
    fpx_index *other = fpx_server_find(r->s, r->tenant, name, len);
    if (!other) {
        char nm[FPX_NAME_MAX + 1];
        memcpy(nm, name, len);
        nm[len] = 0;
        if (fpx_server_unavailable(r->s, r->tenant, nm, &r->err) == 0)
            fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", nm);
        return -1;
    }
    if (other == r->ix) {
        fpx_index_unref(other);
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "an index cannot be merged into itself");
    }
    fpx_lease_renew(other);
    pthread_mutex_lock(&merge_lock);
    fpx_index_lock_write(other);
    r->other = other; /* fpx_merge_release undoes the three */
    if (other->dropped)
        return fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", other->name);
    if (other->binary != r->ix->binary)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "a binary index and a float index cannot be merged");
    /* a reset it owes comes first: its vectors are another index's now */
    if (fpx_merge_pay(other, &r->err) != 0)
        return -1;
    /* in a cluster, its stream is fenced first: what it holds then is what
     * the target takes, whatever other nodes write to it meanwhile */
    if (r->s->cluster && fpx_cluster_merge_fence(r) != 0)
        return -1;
    if (fpx_index_has_entries(other))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "index '%s' holds caller keys or metadata, which merge_from does not "
                           "move",
                           other->name);
    uint8_t *buf = NULL;
    size_t blen = 0;
    if (fpx_index_export(other, &buf, &blen, &r->err))
        return -1;
    r->copy = buf; /* freed by the dispatcher */
    msgpack_packer pk;
    fpx_req_recmeta(r, &pk);
    fpx_merge_pack_meta(&pk, other, other->seq, r->i0, r->merge_id);
    if (!r->recmeta.data)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    r->rec = (fpx_walrec){.op = FPX_WAL_MERGE,
                          .n = other->nlive,
                          .data = buf,
                          .data_len = blen,
                          .meta = (const uint8_t *)r->recmeta.data,
                          .meta_len = r->recmeta.size};
    return 0;
}

void fpx_merge_pack_meta(msgpack_packer *pk, const fpx_index *other, uint64_t seq, int64_t add_id,
                         const char *merge_id) {
    msgpack_pack_map(pk, 4 + (merge_id[0] != 0));
    fpx_pack_cstr(pk, "add_id");
    msgpack_pack_int64(pk, add_id);
    fpx_pack_cstr(pk, "from");
    fpx_pack_cstr(pk, other->name);
    fpx_pack_cstr(pk, "from_uid");
    msgpack_pack_bin(pk, FPX_UID_BYTES);
    msgpack_pack_bin_body(pk, other->uid, FPX_UID_BYTES);
    fpx_pack_cstr(pk, "from_seq");
    msgpack_pack_uint64(pk, seq);
    if (merge_id[0]) {
        fpx_pack_cstr(pk, "merge_id");
        fpx_pack_cstr(pk, merge_id);
    }
}

/* FAISS's IDMap merges only with an IDMap, and a bare index only with a bare
 * one: its dynamic_cast of the other fails, with this message. */
int fpx_check_merge(fpx_req *r) {
    if (!fpx_index_type_has_idmap(r->ix->index_type) !=
        !fpx_index_type_has_idmap(r->other->index_type))
        return fpx_err_set(&r->err, FPX_E_FAISS,
                           "Error: 'other' failed (an IDMap index merges only with an IDMap "
                           "index)");
    return 0;
}

/* Empties other by a reset of its own log, durable on return. */
static int empty_other(fpx_index *other, fpx_err *err) {
    fpx_walrec rec = {.op = FPX_WAL_RESET};
    uint64_t before = other->wal_bytes;
    if (fpx_store_log(other, &rec, err) != 0)
        return -1;
    if (fpx_apply(other, &rec, err) != 0) {
        fpx_store_unlog(other, before);
        return -1;
    }
    fpx_store_logged(other);
    fpx_server_sync_usage(other);
    return fpx_store_sync(other, other->seq, err);
}

/* Forgets ix's note of the reset the other index (uid) owed after its
 * sequence seq. */
static void drop_todo(fpx_index *ix, const uint8_t *uid, uint64_t seq) {
    for (fpx_merge_todo **p = &ix->merge_todo; *p; p = &(*p)->next) {
        fpx_merge_todo *t = *p;
        if (t->seq == seq && !memcmp(t->uid, uid, FPX_UID_BYTES)) {
            *p = t->next;
            free(t);
            return;
        }
    }
}

int fpx_merge_pay(fpx_index *ix, fpx_err *err) {
    if (!ix->merge_owed)
        return 0;
    fpx_err e = {0};
    if (empty_other(ix, &e) != 0)
        return fpx_err_set(err, e.type,
                           "'%s' gave its vectors to '%s' by merge_from and must be emptied "
                           "before any other write, which failed: %s",
                           ix->name, ix->merge_owed_to, e.msg);
    fpx_log(FPX_LOG_WARN, "%s/%s: emptied, as the merge_from into '%s' had left to do", ix->tenant,
            ix->name, ix->merge_owed_to);
    ix->merge_owed = 0;
    return 0;
}

static int merged_reply(fpx_req *r, fpx_out *o, int64_t moved) {
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 2);
    fpx_pack_cstr(m, "merged");
    msgpack_pack_int64(m, moved);
    fpx_pack_cstr(m, "ntotal");
    msgpack_pack_int64(m, r->ix->nlive);
    return 0;
}

/* The target has merged (logged and applied): the other is emptied, as
 * FAISS's merge_from leaves it, by a reset of its own log, once the target's
 * record is durable. Before that, a power loss could keep the reset and lose
 * the record, and with it the vectors; after it, a crash before the reset
 * leaves the reset to the next start (fpx_merge_finish). */
int fpx_op_merged(fpx_req *r, fpx_out *o) {
    fpx_index *other = r->other;
    int64_t moved = other->nlive;
    fpx_err e = {0};
    if (r->s->cluster) { /* the reset goes through the other's stream */
        if (fpx_cluster_merge_reset(r) != 0)
            return -1;
        r->other_emptied = 1;
        return merged_reply(r, o, moved);
    }
    if (fpx_store_sync(r->ix, r->logged_seq, &e) != 0)
        return fpx_err_set(&r->err, e.type,
                           "the vectors of '%s' were merged into '%s', but the merge could not "
                           "be made durable (and '%s' was not emptied): %s",
                           other->name, r->ix->name, other->name, e.msg);
    uint64_t seq0 = other->seq;
    int rc = empty_other(other, &e);
    r->other_emptied = other->seq > seq0;
    if (rc != 0) {
        /* The reset is owed: the next write to the other logs it first, and
         * the target's merge_todo (kept in its snapshots) lets a start log
         * it if none does before. */
        other->merge_owed = 1;
        snprintf(other->merge_owed_to, sizeof other->merge_owed_to, "%s", r->ix->name);
        return fpx_err_set(&r->err, e.type,
                           "the vectors of '%s' were merged into '%s', but '%s' could not be "
                           "emptied: its next write, or the next start, empties it first: %s",
                           other->name, r->ix->name, other->name, e.msg);
    }
    drop_todo(r->ix, other->uid, seq0); /* its apply noted the reset to come: it came */
    return merged_reply(r, o, moved);
}

/* The index of tenant with unique id uid, or NULL (s->indexes at start, no
 * lock needed: nothing serves yet). */
static fpx_index *by_uid(fpx_server *s, const char *tenant, const uint8_t *uid) {
    for (size_t i = 0; i < s->nindexes; i++)
        if (!strcmp(s->indexes[i]->tenant, tenant) &&
            !memcmp(s->indexes[i]->uid, uid, FPX_UID_BYTES))
            return s->indexes[i];
    return NULL;
}

/* Has the tenant an index refused at start (whose unique id is unknown)? */
static int has_refused(const fpx_server *s, const char *tenant) {
    for (size_t i = 0; i < s->nunavail; i++)
        if (!strcmp(s->unavail[i].tenant, tenant))
            return 1;
    return 0;
}

void fpx_merge_finish(fpx_server *s) {
    for (size_t i = 0; i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        for (fpx_merge_todo **p = &ix->merge_todo; *p;) {
            fpx_merge_todo *t = *p;
            fpx_index *other = by_uid(s, ix->tenant, t->uid);
            int keep = 0;
            /* the reset would have been record t->seq + 1 of the other's log;
             * a later sequence means it (or more) is there */
            if (!other) {
                /* gone, or refused at start: kept (in this index's snapshots)
                 * until a start finds it or the tenant has no refused index */
                keep = has_refused(s, ix->tenant);
                if (keep)
                    fpx_log(FPX_LOG_WARN,
                            "%s/%s: a merge_from into it that a crash interrupted is not "
                            "finished: the index it came from is not loaded (refused?); a "
                            "start that loads it empties it",
                            ix->tenant, ix->name);
            } else if (other->seq == t->seq) {
                fpx_err e = {0};
                if (empty_other(other, &e) == 0) {
                    fpx_log(FPX_LOG_WARN,
                            "%s/%s: finished a merge_from into '%s' that a crash interrupted: "
                            "its vectors, which the merge had moved, are removed",
                            other->tenant, other->name, ix->name);
                } else {
                    fpx_log(FPX_LOG_ERROR,
                            "%s/%s: cannot finish a merge_from into '%s' that a crash "
                            "interrupted (it still holds the vectors it gave; its next write "
                            "empties it first): %s",
                            other->tenant, other->name, ix->name, e.msg);
                    other->merge_owed = 1;
                    snprintf(other->merge_owed_to, sizeof other->merge_owed_to, "%s", ix->name);
                    keep = 1;
                }
            }
            if (keep) {
                p = &t->next;
            } else {
                *p = t->next;
                free(t);
            }
        }
    }
}

void fpx_merge_lock(void) {
    pthread_mutex_lock(&merge_lock);
}

void fpx_merge_unlock(void) {
    pthread_mutex_unlock(&merge_lock);
}

void fpx_merge_release(fpx_req *r) {
    fpx_index *other = r->other;
    if (!other)
        return;
    if (r->merge_state == 1) /* fenced, and not merged: lifted, or left to finish */
        fpx_cluster_merge_abandon(r);
    r->other = NULL;
    pthread_rwlock_unlock(&other->lock);
    if (r->other_emptied) /* as after any reset */
        fpx_server_snapshot_later(r->s, other, 1);
    fpx_index_unref(other);
    pthread_mutex_unlock(&merge_lock);
}
