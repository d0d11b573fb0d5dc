/*
 * lease.c - leases: indexes that are dropped when their client stops renewing
 * them.
 *
 * The drop-ins (libfaiss_c, the Python package) create an index behind the
 * program's back for every FAISS object it makes. A program that crashes
 * cannot delete them, so they are created with a lease (create_index or
 * import_index with lease_seconds): every request naming the index renews it,
 * renew_leases renews many at once, and an index nobody renewed for
 * lease_seconds is deleted by the reaper below, through the same path as
 * delete_index (fpx_server_drop). An index without a lease never expires.
 *
 * The lease length is stored in the index's snapshot; the time of the last
 * renewal is not (it is a monotonic clock reading, meaningless after a
 * restart): a loaded index counts its lease from the start, so a restart never
 * drops an index whose client is alive.
 *
 * The reaper wakes every FPX_LEASE_TICK_MS, collects at most FPX_LEASE_BATCH
 * lapsed indexes under the registry's read lock (held for the scan only) and
 * drops them without it. It only tries each index's lock: an index busy with a
 * request is being used (that request renewed it), and one busy with a
 * snapshot is tried again at the next pass. So the reaper never waits for a
 * request, and an index is dropped within about a tick of its lapse. The lapse
 * is checked again under the exclusive lock, so a request that renewed the
 * index in between keeps it.
 */
#include "ops.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FPX_LEASE_TICK_MS 250
#define FPX_LEASE_BATCH 64
/* renew_leases names at most this many indexes per request. */
#define FPX_RENEW_MAX 10000

void fpx_lease_renew(fpx_index *ix) {
    if (ix->lease_seconds > 0)
        atomic_store(&ix->lease_renewed_ns, fpx_now_ns());
}

/* 1 when ix has a lease that nobody renewed for its length, at now. */
static int lapsed(const fpx_index *ix, uint64_t now) {
    int64_t secs = ix->lease_seconds;
    uint64_t at = atomic_load(&ix->lease_renewed_ns);
    return secs > 0 && now > at && now - at >= (uint64_t)secs * 1000000000u;
}

/* ---- the request side ------------------------------------------------------------- */

int fpx_req_lease(fpx_req *r, int64_t *seconds) {
    *seconds = 0;
    const msgpack_object *o = fpx_map_get(r->h, "lease_seconds");
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (fpx_obj_int(o, seconds) || *seconds < FPX_LEASE_MIN || *seconds > FPX_LEASE_MAX) {
        *seconds = 0;
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "lease_seconds must be an integer in %d..%d (or absent: no lease)",
                           FPX_LEASE_MIN, FPX_LEASE_MAX);
    }
    return 0;
}

/* set_lease: a logged write of the index's new lease (0: none), so that a
 * program can keep an index it made (the drop-ins' keep) or lease one it
 * made on purpose. */
int fpx_prep_set_lease(fpx_req *r) {
    const msgpack_object *o = fpx_map_get(r->h, "lease_seconds");
    int64_t secs = 0;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "missing lease_seconds");
    if (fpx_obj_int(o, &secs) || (secs != 0 && (secs < FPX_LEASE_MIN || secs > FPX_LEASE_MAX)))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "lease_seconds must be 0 (no lease) or an integer in %d..%d",
                           FPX_LEASE_MIN, FPX_LEASE_MAX);
    msgpack_packer pk;
    fpx_req_recmeta(r, &pk);
    msgpack_pack_map(&pk, 1);
    fpx_pack_cstr(&pk, "lease_seconds");
    msgpack_pack_int64(&pk, secs);
    if (!r->recmeta.data)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    r->rec = (fpx_walrec){
        .op = FPX_WAL_LEASE, .meta = (const uint8_t *)r->recmeta.data, .meta_len = r->recmeta.size};
    return 0;
}

/* The index named name[0..len) in ix[0..n), sorted by name, or NULL. */
static fpx_index *find_sorted(fpx_index **ix, size_t n, const char *name, size_t len) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *m = ix[mid]->name;
        size_t ml = strlen(m);
        int c = memcmp(m, name, ml < len ? ml : len);
        if (c == 0)
            c = ml < len ? -1 : ml > len ? 1 : 0;
        if (c == 0)
            return ix[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int fpx_prep_renew_leases(fpx_req *r, const msgpack_object **names, uint32_t *count) {
    const msgpack_object *ids = fpx_map_get(r->h, "index_ids");
    if (!ids || ids->type != MSGPACK_OBJECT_ARRAY)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "index_ids must be a list of index names");
    uint32_t n = ids->via.array.size;
    if (n > FPX_RENEW_MAX)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "index_ids names %u indexes, more than %d per request", n,
                           FPX_RENEW_MAX);
    const msgpack_object *a = ids->via.array.ptr;
    for (uint32_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (fpx_obj_str(&a[i], &s, &len) || !fpx_name_valid(s, len))
            return fpx_err_set(&r->err, FPX_E_VALIDATION,
                               "index_ids[%u] is not an index name (1-128 characters of "
                               "[A-Za-z0-9_.-], not starting with '.')",
                               i);
    }
    *names = a;
    *count = n;
    return 0;
}

void fpx_reply_renewed(fpx_req *r, fpx_out *o, const msgpack_object *a, uint32_t n,
                       const uint8_t *found) {
    uint32_t nfound = 0;
    for (uint32_t i = 0; i < n; i++)
        nfound += found[i] != 0;
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 2);
    fpx_pack_cstr(m, "renewed");
    msgpack_pack_array(m, nfound);
    for (uint32_t i = 0; i < n; i++)
        if (found[i])
            msgpack_pack_object(m, a[i]);
    fpx_pack_cstr(m, "not_found");
    msgpack_pack_array(m, n - nfound);
    for (uint32_t i = 0; i < n; i++)
        if (!found[i])
            msgpack_pack_object(m, a[i]);
}

int fpx_op_renew_leases(fpx_req *r, fpx_out *o) {
    const msgpack_object *a;
    uint32_t n;
    if (fpx_prep_renew_leases(r, &a, &n) != 0)
        return -1;
    /* One pass over the registry for the whole list: the caller's own
     * indexes (another tenant's index of the same name is not_found, and is
     * not renewed), sorted by name, then one binary search per name. */
    fpx_index **mine = NULL;
    size_t nmine = 0;
    uint8_t *found = malloc(n ? n : 1);
    if (!found || fpx_server_list(r->s, r->tenant, &mine, &nmine) != 0) {
        free(found);
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *name;
        size_t len;
        fpx_obj_str(&a[i], &name, &len);
        fpx_index *ix = find_sorted(mine, nmine, name, len);
        found[i] = ix != NULL;
        if (ix)
            fpx_lease_renew(ix);
    }
    for (size_t i = 0; i < nmine; i++)
        fpx_index_unref(mine[i]);
    free(mine);
    fpx_reply_renewed(r, o, a, n, found);
    free(found);
    return 0;
}

/* ---- the reaper ------------------------------------------------------------------- */

/* Drops ix if its lease still lapsed and its lock is free. */
static void reap_one(fpx_server *s, fpx_index *ix) {
    if (pthread_rwlock_trywrlock(&ix->lock) != 0)
        return; /* busy: tried again at the next pass */
    int dropped = 0;
    int64_t secs = ix->lease_seconds;
    if (!ix->dropped && lapsed(ix, fpx_now_ns())) {
        fpx_err err = {0};
        if (fpx_server_drop(s, ix, &err) == 0) {
            dropped = 1;
            fpx_log(FPX_LOG_INFO, "deleted index %s/%s: its lease of %lld s lapsed", ix->tenant,
                    ix->name, (long long)secs);
        } else {
            /* Kept and served; tried again at the next pass. */
            fpx_log(FPX_LOG_WARN, "cannot delete index %s/%s whose lease lapsed: %s", ix->tenant,
                    ix->name, err.msg);
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    if (dropped)
        fpx_server_reclaim_later(s, ix, NULL); /* the registry's reference */
}

/* One pass: drops at most FPX_LEASE_BATCH lapsed indexes. 1 when more may be
 * waiting. */
static int reap_pass(fpx_server *s) {
    fpx_index *due[FPX_LEASE_BATCH];
    size_t n = 0, more = 0;
    uint64_t now = fpx_now_ns();
    pthread_rwlock_rdlock(&s->reg_lock);
    for (size_t i = 0; i < s->nindexes; i++) {
        fpx_index *ix = s->indexes[i];
        if (ix->creating || !lapsed(ix, now))
            continue;
        if (n == FPX_LEASE_BATCH) {
            more = 1;
            break;
        }
        atomic_fetch_add(&ix->refs, 1);
        due[n++] = ix;
    }
    pthread_rwlock_unlock(&s->reg_lock);
    for (size_t i = 0; i < n; i++) {
        reap_one(s, due[i]);
        fpx_index_unref(due[i]);
    }
    return more;
}

static void *reaper_main(void *arg) {
    fpx_server *s = arg;
    fpx_reaper *q = &s->reaper;
    pthread_mutex_lock(&q->mu);
    while (!q->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until); /* the clock of reaper.cv */
        until.tv_nsec += FPX_LEASE_TICK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (!q->stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&q->cv, &q->mu, &until);
        if (q->stop)
            break;
        pthread_mutex_unlock(&q->mu);
        int more = reap_pass(s);
        pthread_mutex_lock(&q->mu);
        /* A backlog larger than a batch is worked through at once, a batch
         * at a time, still stoppable between batches. */
        while (more && !q->stop) {
            pthread_mutex_unlock(&q->mu);
            more = reap_pass(s);
            pthread_mutex_lock(&q->mu);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

int fpx_lease_start(fpx_server *s, fpx_err *err) {
    if (pthread_create(&s->reaper.thread, NULL, reaper_main, s) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot start the lease reaper");
    s->reaper.started = 1;
    return 0;
}

void fpx_lease_halt(fpx_server *s) {
    pthread_mutex_lock(&s->reaper.mu);
    s->reaper.stop = 1;
    pthread_cond_signal(&s->reaper.cv);
    pthread_mutex_unlock(&s->reaper.mu);
}

void fpx_lease_stop(fpx_server *s) {
    fpx_lease_halt(s);
    if (s->reaper.started)
        pthread_join(s->reaper.thread, NULL);
    s->reaper.started = 0;
}
