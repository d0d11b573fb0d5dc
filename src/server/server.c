/*
 * server.c - server lifecycle: loading the data dir, the background snapshot
 * writer, and the final snapshots at shutdown.
 *
 * Indexes that could not be loaded stay known (registry.c), with the reason,
 * so that a request naming one learns it is unavailable instead of being
 * told it does not exist, and so that its owner can delete it.
 */
#include "server.h"
#include "apply.h"
#include "store.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int start_snapper(fpx_server *s, fpx_err *err);
static int start_reclaimer(fpx_server *s, fpx_err *err);
static void stop_reclaimer(fpx_server *s);

static int found_index(void *ctx, fpx_index *ix) {
    fpx_server *s = ctx;
    fpx_server_sync_usage(ix);
    fpx_lease_renew(ix); /* after a restart every lease counts from the start */
    if (fpx_server_insert(s, ix) != 0) {
        fpx_log(FPX_LOG_ERROR, "out of memory registering %s/%s", ix->tenant, ix->name);
        fpx_index_free(ix);
        return -1;
    }
    fpx_log(FPX_LOG_INFO, "loaded index %s/%s (%s, d=%lld, %lld vectors)", ix->tenant, ix->name,
            ix->index_type, (long long)ix->dim, (long long)ix->nlive);
    return 0;
}

static void refused_index(void *ctx, const char *tenant, const char *name, const char *reason,
                          const char *dir) {
    if (fpx_server_note_unavailable(ctx, tenant, name, reason, dir) != 0)
        fpx_log(FPX_LOG_ERROR, "out of memory noting index %s/%s as unavailable", tenant, name);
}

int fpx_server_init(fpx_server *s, const fpx_config *cfg, fpx_err *err) {
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    pthread_rwlock_init(&s->reg_lock, NULL);
    pthread_mutex_init(&s->snap.mu, NULL);
    pthread_cond_init(&s->snap.cv, NULL);
    pthread_mutex_init(&s->reclaim.mu, NULL);
    pthread_cond_init(&s->reclaim.cv, NULL);
    pthread_mutex_init(&s->reaper.mu, NULL);
    pthread_condattr_t ca; /* the reaper's waits ignore wall-clock jumps */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->reaper.cv, &ca);
    pthread_condattr_destroy(&ca);
    if (fpx_auth_new(cfg->api_keys, &s->auth, err))
        return -1;
    if (fpx_store_load_all(cfg->data_dir, fpx_apply, found_index, refused_index, s, err) != 0)
        return -1;
    /* A cluster's replicas finish merges through their streams (src/cluster/merge.c) */
    if (!cfg->cluster_urls[0])
        fpx_merge_finish(s);
    if (start_snapper(s, err) != 0 || start_reclaimer(s, err) != 0)
        return -1;
    return fpx_lease_start(s, err);
}

/* ---- background snapshots ------------------------------------------------------- */

/* A log that a snapshot would not improve on: on a single server, only
 * appends to an index whose adds are copies, at least half of it the
 * vectors. Replaying it costs what loading the same vectors from a snapshot
 * costs, and takes the same room on disk; rewriting it would double the
 * bytes a bulk load writes and hold that index's writers out for as long as
 * the rewrite takes (bench/README.md, figure 8). In a cluster the streams
 * are trimmed up to the replicas' snapshots, so snapshots keep their pace. */
static int log_is_compact(const fpx_server *s, const fpx_index *ix) {
    return !s->cluster && !ix->log_rewrites && ix->wal_bytes / 2 <= ix->log_add_bytes &&
           fpx_engine_adds_by_copy(ix->eng);
}

/* Whether a final snapshot at shutdown would shorten the next start: not
 * for a log a snapshot would not improve on, which stays as it is however
 * long (a clean stop of a bulk-loaded flat index would rewrite it whole). */
static int snapshot_improves(const fpx_server *s, const fpx_index *ix) {
    return ix->seq != ix->snap_seq && !log_is_compact(s, ix);
}

int fpx_server_snapshot_due(const fpx_server *s, const fpx_index *ix) {
    /* The log may grow to the snapshot's own size before the next one: a
     * snapshot rewrites the whole index, so a fixed threshold would make
     * loading n bytes write O(n^2 / threshold); this keeps it O(n). */
    uint64_t threshold = s->cfg->snapshot_bytes;
    if (ix->snap_bytes > threshold)
        threshold = ix->snap_bytes;
    if (ix->wal_bytes >= threshold && !log_is_compact(s, ix))
        return 1;
    return !atomic_load(&ix->compact_off) && fpx_index_compact_due(ix, s->cfg->compact_min_dead);
}

void fpx_server_snapshot_later(fpx_server *s, fpx_index *ix, int force) {
    fpx_snapper *q = &s->snap;
    pthread_mutex_lock(&q->mu);
    if (force)
        ix->snap_force = 1;
    if (!ix->snap_queued && !q->stop) {
        ix->snap_queued = 1;
        atomic_fetch_add(&ix->refs, 1);
        ix->snap_next = NULL;
        if (q->tail)
            q->tail->snap_next = ix;
        else
            q->head = ix;
        q->tail = ix;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
}

/*
 * Compacts ix when due. The copy without the deleted vectors is built under
 * the shared lock, so searches go on, and swapped in under a brief exclusive
 * one if no write came in meanwhile; otherwise it is thrown away, and the
 * write that came in has queued the index again. The old engine is freed
 * outside the lock. 1 when ix was compacted.
 */
static int compact_one(fpx_server *s, fpx_index *ix) {
    fpx_index_long_read_begin(ix);
    if (ix->dropped || atomic_load(&ix->compact_off) ||
        !fpx_index_compact_due(ix, s->cfg->compact_min_dead)) {
        fpx_index_long_read_end(ix);
        return 0;
    }
    uint64_t seq = ix->seq;
    int64_t before = ix->nslots, live = ix->nlive;
    fpx_index *c = NULL;
    fpx_err err = {0};
    int rc = fpx_index_compact_build(ix, &c, &err);
    fpx_index_long_read_end(ix);
    if (rc == 1) {
        atomic_store(&ix->compact_off, 1);
        fpx_log(FPX_LOG_INFO, "index %s/%s: its type keeps deleted vectors (searches skip them)",
                ix->tenant, ix->name);
        return 0;
    }
    if (rc != 0) {
        fpx_log(FPX_LOG_WARN, "compaction of %s/%s failed (it keeps its deleted vectors): %s",
                ix->tenant, ix->name, err.msg);
        return 0;
    }
    fpx_index_lock_write(ix);
    int fresh = !ix->dropped && ix->seq == seq;
    if (fresh)
        fpx_index_compact_commit(ix, c);
    pthread_rwlock_unlock(&ix->lock);
    fpx_index_compact_free(c);
    if (fresh)
        fpx_log(FPX_LOG_INFO, "compacted %s/%s: %lld deleted vectors gone, %lld live", ix->tenant,
                ix->name, (long long)(before - live), (long long)live);
    return fresh;
}

/* Writes one queued snapshot, after a compaction when one is due. The
 * snapshot and the log it replaces must agree, so writers are kept out
 * while the state is copied to memory and while the new log is started (as
 * long reads: the writers that come meanwhile wait outside the lock, where
 * they hold no search off); the copy is written to disk between the two,
 * with writes going on. A state too large to copy is written under the
 * lock. */
static void snapshot_one(fpx_server *s, fpx_index *ix, int force) {
    if (compact_one(s, ix))
        force = 1; /* the files shrink with the index */
    fpx_index_long_read_begin(ix);
    if (ix->dropped || ix->seq == ix->snap_seq || !(force || fpx_server_snapshot_due(s, ix))) {
        fpx_index_long_read_end(ix);
        return;
    }
    fpx_err err = {0};
    fpx_snap_job *job = NULL;
    int rc = fpx_store_snapshot_take(ix, &job, &err);
    if (rc == 1) {
        rc = fpx_store_snapshot(ix, &err);
    } else if (rc == 0) {
        atomic_store(&ix->snap_writing, 1);
        fpx_index_long_read_end(ix);
        rc = fpx_store_snapshot_write(job, &err);
        fpx_index_long_read_begin(ix);
        if (rc == 0 && !ix->dropped)
            rc = fpx_store_snapshot_finish(ix, job, &err);
        atomic_store(&ix->snap_writing, 0);
        fpx_store_snapshot_drop(job);
    }
    if (rc != 0 && !ix->dropped)
        fpx_log(FPX_LOG_WARN, "snapshot of %s/%s failed (the log keeps the data): %s", ix->tenant,
                ix->name, err.msg);
    if (!ix->dropped)
        fpx_server_sync_usage(ix);
    fpx_index_long_read_end(ix);
}

static void *snapper_main(void *arg) {
    fpx_server *s = arg;
    fpx_snapper *q = &s->snap;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->stop)
            break;
        fpx_index *ix = q->head;
        q->head = ix->snap_next;
        if (!q->head)
            q->tail = NULL;
        int force = ix->snap_force;
        ix->snap_queued = ix->snap_force = 0; /* a write from now on queues it again */
        pthread_mutex_unlock(&q->mu);
        snapshot_one(s, ix, force);
        fpx_index_unref(ix);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* The background threads' start and stop: a thread, its started flag, and
 * the mutex, condition and stop flag its loop waits on. */
static int start_thread(pthread_t *t, int *started, void *(*fn)(void *), void *arg,
                        const char *what, fpx_err *err) {
    if (pthread_create(t, NULL, fn, arg) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot start the %s", what);
    *started = 1;
    return 0;
}

static void stop_thread(pthread_t t, int *started, pthread_mutex_t *mu, pthread_cond_t *cv,
                        int *stop) {
    pthread_mutex_lock(mu);
    *stop = 1;
    pthread_cond_signal(cv);
    pthread_mutex_unlock(mu);
    if (*started)
        pthread_join(t, NULL);
    *started = 0;
}

static int start_snapper(fpx_server *s, fpx_err *err) {
    return start_thread(&s->snap.thread, &s->snap.started, snapper_main, s, "snapshot writer", err);
}

/* Stops the writer after the snapshot it is writing; drops the queue (the
 * final snapshots below cover those indexes). */
static void stop_snapper(fpx_server *s) {
    fpx_snapper *q = &s->snap;
    stop_thread(q->thread, &q->started, &q->mu, &q->cv, &q->stop);
    while (q->head) {
        fpx_index *ix = q->head;
        q->head = ix->snap_next;
        ix->snap_queued = 0;
        fpx_index_unref(ix);
    }
    q->tail = NULL;
}

/* ---- the reclaimer ---------------------------------------------------------- */

static void reclaim(fpx_index *ix, char *dir) {
    if (dir && fpx_rmtree(dir) != 0)
        fpx_log(FPX_LOG_WARN, "could not remove all of %s (removed again at next start)", dir);
    fpx_index_unref(ix);
    free(dir);
}

void fpx_server_reclaim_later(fpx_server *s, fpx_index *ix, char *dir) {
    fpx_reclaimer *q = &s->reclaim;
    fpx_reclaim_job *j = malloc(sizeof *j);
    pthread_mutex_lock(&q->mu);
    if (!j || !q->started || q->stop) { /* the work is done here, then */
        pthread_mutex_unlock(&q->mu);
        free(j);
        reclaim(ix, dir);
        return;
    }
    j->ix = ix;
    j->dir = dir;
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

static void *reclaimer_main(void *arg) {
    fpx_reclaimer *q = arg;
    /* The lowest priority, which still always progresses (util.c). */
    fpx_thread_lower_priority();
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        fpx_reclaim_job *j = q->head;
        if (!j)
            break; /* stopping, and nothing left */
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        pthread_mutex_unlock(&q->mu);
        reclaim(j->ix, j->dir);
        free(j);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static int start_reclaimer(fpx_server *s, fpx_err *err) {
    return start_thread(&s->reclaim.thread, &s->reclaim.started, reclaimer_main, &s->reclaim,
                        "reclaimer", err);
}

/* Finishes the queued work (it was acknowledged: deleted indexes' files go
 * now rather than at the next start), then stops the thread. */
static void stop_reclaimer(fpx_server *s) {
    fpx_reclaimer *q = &s->reclaim;
    stop_thread(q->thread, &q->started, &q->mu, &q->cv, &q->stop);
}

void fpx_server_shutdown(fpx_server *s) {
    fpx_lease_stop(s);
    stop_snapper(s);
    stop_reclaimer(s);
    for (size_t i = 0; i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        fpx_err err = {0};
        if (snapshot_improves(s, ix) && fpx_store_snapshot(ix, &err) != 0)
            fpx_log(FPX_LOG_WARN, "snapshot of %s/%s at shutdown failed (its log is kept): %s",
                    ix->tenant, ix->name, err.msg);
        fpx_index_unref(ix);
    }
    free(s->indexes);
    s->indexes = NULL;
    s->nindexes = 0;
    fpx_server_forget_unavailable(s);
    fpx_auth_free(s->auth);
    s->auth = NULL;
    pthread_mutex_destroy(&s->snap.mu);
    pthread_cond_destroy(&s->snap.cv);
    pthread_mutex_destroy(&s->reclaim.mu);
    pthread_cond_destroy(&s->reclaim.cv);
    pthread_mutex_destroy(&s->reaper.mu);
    pthread_cond_destroy(&s->reaper.cv);
    pthread_rwlock_destroy(&s->reg_lock);
}

/* The process _exits right after this, with workers still running. The
 * registry and every index this takes stay locked on purpose: a worker that
 * finishes its call meanwhile cannot write behind a final snapshot, or
 * free an index being written. */
void fpx_server_snapshot_idle(fpx_server *s) {
    /* A delete_index waiting for a busy index holds the registry for
     * writing: then nothing can be walked safely, and the logs suffice. */
    /* No new background snapshot from now on; one being written holds its
     * index shared, so it counts as busy below. */
    pthread_mutex_lock(&s->snap.mu);
    s->snap.stop = 1;
    pthread_mutex_unlock(&s->snap.mu);
    fpx_lease_halt(s); /* no lease drop starts from now on */
    if (pthread_rwlock_tryrdlock(&s->reg_lock) != 0) {
        fpx_log(FPX_LOG_WARN, "the index registry is busy: no snapshots at shutdown (the logs "
                              "hold every write)");
        return;
    }
    size_t done = 0, busy = 0;
    for (size_t i = 0; i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        if (pthread_rwlock_trywrlock(&ix->lock) != 0) {
            busy++;
            fpx_log(FPX_LOG_INFO, "index %s/%s is busy: not snapshotted (its log holds its writes)",
                    ix->tenant, ix->name);
            continue;
        }
        fpx_err err = {0};
        if (atomic_load(&ix->snap_writing)) { /* its snapshot is being written */
            busy++;
            continue;
        }
        if (ix->dropped || !snapshot_improves(s, ix))
            continue;
        if (fpx_store_snapshot(ix, &err) != 0)
            fpx_log(FPX_LOG_WARN, "snapshot of %s/%s at shutdown failed (its log is kept): %s",
                    ix->tenant, ix->name, err.msg);
        else
            done++;
    }
    fpx_log(FPX_LOG_INFO, "shutdown: %zu index(es) snapshotted, %zu busy left to their logs", done,
            busy);
}
