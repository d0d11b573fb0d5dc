/*
 * replica.c - the replicas this node holds: opened when a definition places
 * an index here (from its local state, a peer's snapshot, or the stream's
 * start), tried again when that failed, and dropped when the definition goes
 * or moves away, as the watcher on fpx_indexes delivers them
 * (docs/cluster.md).
 */
#include "internal.h"

#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- replicas -------------------------------------------------------------------- */

fpx_replica *fpx_replica_find(fpx_cluster *c, const char *key) {
    for (fpx_replica *r = c->reps; r; r = r->next)
        if (!strcmp(r->key, key))
            return r;
    return NULL;
}

/* A replica being opened, on its opener's stack, in c->opening (c->mu). */
typedef struct fpx_opening {
    const char *key;
    uint64_t rev;  /* of the definition it is opened from */
    int forgotten; /* its definition went, or placed it elsewhere, meanwhile */
    struct fpx_opening *next;
} fpx_opening;

static fpx_opening *opening_find(fpx_cluster *c, const char *key) {
    for (fpx_opening *o = c->opening; o; o = o->next)
        if (!strcmp(o->key, key))
            return o;
    return NULL;
}

/* Deletes the local index ix (referenced by the caller), unless gone already. */
void fpx_replica_drop_local(fpx_server *s, fpx_index *ix, const char *why) {
    fpx_err err = {0};
    int dropped = 0;
    fpx_index_lock_write(ix);
    if (!ix->dropped) {
        if (fpx_server_drop(s, ix, &err) == 0)
            dropped = 1;
        else
            fpx_log(FPX_LOG_WARN, "cannot drop %s/%s: %s", ix->tenant, ix->name, err.msg);
    }
    pthread_rwlock_unlock(&ix->lock);
    if (dropped) {
        fpx_log(FPX_LOG_INFO, "dropped the replica of %s/%s: %s", ix->tenant, ix->name, why);
        fpx_server_reclaim_later(s, ix, NULL); /* the registry's reference */
    }
}

/* Stops following rep and unlinks it (c->mu held); the replica itself goes
 * when its subscription is done (log.c), or here when that already was. */
void fpx_replica_forget_locked(fpx_cluster *c, fpx_replica *rep) {
    for (fpx_replica **p = &c->reps; *p; p = &(*p)->next)
        if (*p == rep) {
            *p = rep->next;
            break;
        }
    natsSubscription *sub = rep->sub;
    int linked = FPX_REP_LINKED;
    if (sub && atomic_compare_exchange_strong(&rep->state, &linked, FPX_REP_FORGOTTEN)) {
        natsSubscription_Unsubscribe(sub); /* its end frees rep (log.c) */
        natsSubscription_Destroy(sub);
    } else { /* never subscribed, or its subscription already ended */
        if (sub)
            natsSubscription_Destroy(sub);
        fpx_index_unref(rep->ix);
        free(rep);
    }
}

/* A new, empty local index for d, durable and registered; referenced. */
static fpx_index *create_local(fpx_cluster *c, const fpx_def *d, fpx_index **made, fpx_err *err) {
    fpx_server *s = c->s;
    fpx_index *ix = NULL;
    if (made && *made) {
        ix = *made;
        *made = NULL;
    } else if (d->import_records > 0) { /* an import with no peer's state: from the stream */
        if (fpx_import_rebuild(c, d, &ix, err) != 0)
            return NULL;
    } else if (fpx_index_new(d->tenant, d->name, d->index_type, d->dim,
                             d->metric[0] ? d->metric : NULL, &ix, err) != 0) {
        return NULL;
    }
    memcpy(ix->uid, d->uid, FPX_UID_BYTES);
    atomic_store(&ix->refs, 1); /* the registry's */
    if (fpx_server_reserve(s, ix, err) != 0) {
        fpx_index_free(ix);
        return NULL;
    }
    if (fpx_store_create(s->cfg->data_dir, ix, err) != 0) {
        fpx_server_remove(s, ix);
        fpx_index_unref(ix);
        return NULL;
    }
    atomic_fetch_add(&ix->refs, 1); /* the caller's */
    fpx_server_sync_usage(ix);
    fpx_server_publish(s, ix);
    fpx_log(FPX_LOG_INFO, "created the replica of %s/%s (%s, d=%lld)", ix->tenant, ix->name,
            ix->index_type, (long long)ix->dim);
    return ix;
}

/*
 * The replica of d on this node (c->mu held): the one open already, or the
 * local index of the same unique id (kept from before a restart) followed
 * from its next sequence, or a new empty one followed from the stream's
 * start. A local index of that name with another id belonged to an index
 * deleted and created again while this node was away: it goes. rev is the
 * definition's revision in the bucket. c->mu is let go while a new replica
 * opens (c->opening lists it; another open of its key waits, a forget marks
 * it, and its opener drops it at the end).
 */
static fpx_replica *open_new(fpx_cluster *c, const fpx_def *d, const char *key, uint64_t rev,
                             fpx_index **made, fpx_err *err);

fpx_replica *fpx_replica_open(fpx_cluster *c, const fpx_def *d, uint64_t rev, fpx_index **made,
                              fpx_err *err) {
    fpx_server *s = c->s;
    char key[2 * FPX_NAME_MAX + 2];
    fpx_def_key(d->tenant, d->name, key);
    fpx_replica *rep;
    for (;;) { /* one open of a key at a time: the others wait for it */
        rep = fpx_replica_find(c, key);
        if ((rep && !memcmp(rep->ix->uid, d->uid, FPX_UID_BYTES)) || !opening_find(c, key))
            break;
        pthread_cond_wait(&c->opened_cv, &c->mu);
    }
    if (rep && !memcmp(rep->ix->uid, d->uid, FPX_UID_BYTES)) {
        if (rev > rep->rev)
            rep->rev = rev;
        /* Its placement changed (a move, move.c): info and trimming read it. */
        fpx_index_lock_write(rep->ix);
        char *pl = rep->ix->placement && !strcmp(rep->ix->placement, d->placement)
                       ? NULL
                       : strdup(d->placement);
        if (pl) {
            free(rep->ix->placement);
            rep->ix->placement = pl;
        }
        pthread_rwlock_unlock(&rep->ix->lock);
        return rep;
    }
    if (rep) {
        fpx_index *old = rep->ix;
        atomic_fetch_add(&old->refs, 1);
        fpx_replica_forget_locked(c, rep);
        fpx_replica_drop_local(s, old, "its index was deleted and created again");
        fpx_index_unref(old);
    }
    /* Opened without c->mu: a peer's snapshot or a long catch-up holds up
     * neither the other replicas nor the heartbeat's reports meanwhile. */
    fpx_opening me = {key, rev, 0, c->opening};
    c->opening = &me;
    pthread_mutex_unlock(&c->mu);
    rep = open_new(c, d, key, rev, made, err);
    pthread_mutex_lock(&c->mu);
    for (fpx_opening **p = &c->opening; *p; p = &(*p)->next)
        if (*p == &me) {
            *p = me.next;
            break;
        }
    if (rep && me.forgotten) {
        fpx_index *ix = rep->ix;
        atomic_fetch_add(&ix->refs, 1);
        fpx_replica_forget_locked(c, rep);
        fpx_replica_drop_local(s, ix, "its index was deleted or moved while its replica opened");
        fpx_index_unref(ix);
        rep = NULL;
        fpx_err_set(err, FPX_E_NOT_FOUND,
                    "index '%s' was deleted or moved while its replica opened here: try again",
                    d->name);
    } else if (rep) {
        rep->next = c->reps;
        c->reps = rep;
    }
    pthread_cond_broadcast(&c->opened_cv);
    return rep;
}

/* The slow part of fpx_replica_open, without c->mu: the new replica of d,
 * not linked yet. */
static fpx_replica *open_new(fpx_cluster *c, const fpx_def *d, const char *key, uint64_t rev,
                             fpx_index **made, fpx_err *err) {
    fpx_server *s = c->s;
    fpx_replica *rep = NULL;
    fpx_index *ix = fpx_server_find(s, d->tenant, d->name, strlen(d->name));
    if (ix && memcmp(ix->uid, d->uid, FPX_UID_BYTES)) {
        fpx_replica_drop_local(s, ix, "its index was deleted and created again");
        fpx_index_unref(ix);
        ix = NULL;
    }
    /* No local state, or too old for the stream: a peer's (peer.c). */
    fpx_index *got = NULL;
    int fresh = !ix && !(made && *made);
    if (!(made && *made) && fpx_peer_fetch(c, d, &ix, &got, err) != 0) {
        fpx_index_unref(ix);
        return NULL;
    }
    fresh |= !ix;
    if (got)
        made = &got;
    if (!ix && (fpx_server_drop_unavailable(s, d->tenant, d->name, err) < 0 ||
                !(ix = create_local(c, d, made, err)))) {
        if (got)
            fpx_index_free(got);
        return NULL;
    }
    char *placement = strdup(d->placement);
    rep = calloc(1, sizeof *rep);
    if (!placement || !rep) {
        free(placement);
        free(rep);
        fpx_index_unref(ix);
        fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
        return NULL;
    }
    fpx_index_lock_write(ix);
    free(ix->placement);
    ix->placement = placement;
    ix->lease_of = fpx_clease_info; /* the cluster's lease, not the replica's */
    ix->lease_ctx = c;
    pthread_rwlock_unlock(&ix->lock);
    rep->c = c;
    rep->rev = rev;
    rep->ix = ix;               /* our reference */
    rep->reported = UINT64_MAX; /* its first beat reports it open (move.c waits for that) */
    snprintf(rep->key, sizeof rep->key, "%s", key);
    fpx_cluster_stream_names(d->uid, rep->stream, rep->subject);
    if (fpx_log_follow(c, rep, err) != 0) {
        fpx_index_unref(ix);
        free(rep);
        return NULL;
    }
    if (fresh) { /* served once caught up, as a start does (catch_up_all) */
        uint64_t last = 0;
        fpx_err cerr = {0};
        int rc = fpx_log_last_seq(c, ix->uid, &last, &cerr);
        fpx_index_lock_write(ix);
        if (rc == 0 && !ix->dropped)
            rc = fpx_log_catch_up(c, ix, last, &cerr);
        pthread_rwlock_unlock(&ix->lock);
        if (rc != 0) {
            atomic_store(&rep->behind, 1);
            fpx_log(FPX_LOG_WARN, "%s/%s: not caught up with the stream yet: %s", ix->tenant,
                    ix->name, cerr.msg);
        }
    }
    return rep;
}

/* The definition of key went (deleted): stop following, drop the replica. */
void fpx_replica_forget(fpx_cluster *c, const char *key, const char *why) {
    char tenant[FPX_NAME_MAX + 1], name[FPX_NAME_MAX + 1];
    if (fpx_def_key_parse(key, tenant, name) != 0)
        return;
    pthread_mutex_lock(&c->mu);
    fpx_replica *rep = fpx_replica_find(c, key);
    fpx_index *ix = NULL;
    if (rep) {
        ix = rep->ix;
        atomic_fetch_add(&ix->refs, 1);
        fpx_replica_forget_locked(c, rep);
    }
    fpx_opening *o = opening_find(c, key);
    if (o) /* its opener drops it when done */
        o->forgotten = 1;
    pthread_mutex_unlock(&c->mu);
    if (!ix)
        ix = fpx_server_find(c->s, tenant, name, strlen(name));
    if (ix) {
        fpx_replica_drop_local(c->s, ix, why);
        fpx_index_unref(ix);
    }
}

/*
 * A replica placed here that could not be opened when its definition came
 * (its folder could not be written, or no peer could give a snapshot of a
 * trimmed stream) would otherwise wait for a request naming it here, and
 * until then the index has one replica fewer than it was given: the
 * watcher tries it again, after 1 s, then twice as long each time up to
 * 30 s, until it opens or its definition no longer places it here.
 */
#define FPX_REOPEN_FIRST_MS 1000
#define FPX_REOPEN_MAX_MS 30000

typedef struct fpx_unopened {
    char key[2 * FPX_NAME_MAX + 2];
    uint64_t due_ms, pause_ms;
    struct fpx_unopened *next;
} fpx_unopened;

/* Marks key unopened (1) or not (0); the watcher thread's list only. */
static void set_unopened(fpx_cluster *c, const char *key, int unopened) {
    fpx_unopened **at = &c->unopened;
    while (*at && strcmp((*at)->key, key))
        at = &(*at)->next;
    if (!unopened && *at) {
        fpx_unopened *u = *at;
        *at = u->next;
        free(u);
    } else if (unopened && !*at) {
        fpx_unopened *u = calloc(1, sizeof *u);
        if (!u)
            return; /* then it waits for a request naming it here */
        snprintf(u->key, sizeof u->key, "%s", key);
        u->pause_ms = FPX_REOPEN_FIRST_MS;
        u->due_ms = fpx_mono_ms() + u->pause_ms;
        *at = u;
    }
}

static void free_unopened(fpx_cluster *c) {
    while (c->unopened) {
        fpx_unopened *u = c->unopened;
        c->unopened = u->next;
        free(u);
    }
}

/* Opens the replica of d (revision rev) here: 0, or -1 (logged, and tried
 * again later). */
static int open_placed(fpx_cluster *c, const char *key, const fpx_def *d, uint64_t rev, int retry) {
    fpx_err err = {0};
    pthread_mutex_lock(&c->mu);
    fpx_replica *rep = fpx_replica_open(c, d, rev, NULL, &err);
    pthread_mutex_unlock(&c->mu);
    set_unopened(c, key, !rep);
    if (!rep)
        fpx_log(FPX_LOG_WARN, "cannot open the replica of %s/%s (tried again later): %s", d->tenant,
                d->name, err.msg);
    else if (retry)
        fpx_log(FPX_LOG_INFO, "opened the replica of %s/%s", d->tenant, d->name);
    return rep ? 0 : -1;
}

/* The unopened replicas whose time came: each definition read again. */
static void reopen_due(fpx_cluster *c) {
    uint64_t now = fpx_mono_ms();
    char due[16][2 * FPX_NAME_MAX + 2];
    int n = 0;
    for (fpx_unopened *u = c->unopened; u && n < 16; u = u->next)
        if (u->due_ms <= now)
            snprintf(due[n++], sizeof due[0], "%s", u->key);
    for (int i = 0; i < n && !fpx_cluster_wait_stop(c, 0); i++) {
        fpx_def d;
        fpx_err err = {0};
        uint64_t rev = 0;
        int found = fpx_def_read(c, due[i], &d, &rev, &err);
        if (found == 1)
            fpx_def_clear(&d);
        if (found == 0 || (found == 1 && !fpx_def_placed_here(c, &d))) {
            set_unopened(c, due[i], 0); /* deleted, or moved away */
            continue;
        }
        if (found == 1 && open_placed(c, due[i], &d, rev, 1) == 0)
            continue;
        for (fpx_unopened *u = c->unopened; u; u = u->next)
            if (!strcmp(u->key, due[i])) { /* still unopened: wait longer */
                u->pause_ms =
                    u->pause_ms * 2 < FPX_REOPEN_MAX_MS ? u->pause_ms * 2 : FPX_REOPEN_MAX_MS;
                u->due_ms = fpx_mono_ms() + u->pause_ms;
            }
    }
}

/* Whether the replica of key here was opened from a later definition than
 * revision rev (a create or a request read the bucket ahead of a watcher
 * that lags behind it): then an entry at rev is not about it. */
static int opened_later(fpx_cluster *c, const char *key, uint64_t rev) {
    pthread_mutex_lock(&c->mu);
    fpx_replica *rep = fpx_replica_find(c, key);
    fpx_opening *o = opening_find(c, key);
    int later = (rep && rep->rev > rev) || (o && o->rev > rev);
    pthread_mutex_unlock(&c->mu);
    return later;
}

/* One entry of the definitions bucket, as the watcher delivers it. */
void fpx_replica_on_definition(fpx_cluster *c, kvEntry *e) {
    const char *key = kvEntry_Key(e);
    uint64_t rev = kvEntry_Revision(e);
    if (opened_later(c, key, rev))
        return;
    if (kvEntry_Operation(e) != kvOp_Put) {
        set_unopened(c, key, 0);
        fpx_replica_forget(c, key, "its index was deleted");
        return;
    }
    fpx_def d;
    fpx_err err = {0};
    if (fpx_def_decode(kvEntry_Value(e), kvEntry_ValueLen(e), &d, &err) != 0) {
        fpx_log(FPX_LOG_WARN, "ignoring the cluster's definition %s: %s", key, err.msg);
        return;
    }
    fpx_def_clear(&d); /* a sharded index's map is read when it is asked for */
    if (!fpx_def_placed_here(c, &d)) {
        set_unopened(c, key, 0);
        fpx_replica_forget(c, key, "the cluster places it on other nodes");
        return;
    }
    open_placed(c, key, &d, rev, 0);
}

void *fpx_replica_watch_main(void *arg) {
    fpx_cluster *c = arg;
    while (!fpx_cluster_wait_stop(c, 0)) {
        kvEntry *e = NULL;
        natsStatus st = kvWatcher_Next(&e, c->watcher, 250);
        if (st == NATS_OK && e) {
            fpx_replica_on_definition(c, e);
            kvEntry_Destroy(e);
        } else if (st != NATS_OK && st != NATS_TIMEOUT) {
            fpx_cluster_wait_stop(c, 100); /* the watcher resumes by itself after a reconnection */
        }
        reopen_due(c);
    }
    free_unopened(c);
    return NULL;
}
