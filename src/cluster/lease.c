/*
 * lease.c - leases in a cluster: indexes dropped cluster-wide once no client
 * renewed them for their lease (docs/cluster.md, "Leases").
 *
 * A lease lives in the bucket fpx_leases, keyed by the index's unique id (of
 * the sharded index itself for a sharded one), not in its definition: the
 * definitions are watched by every node and written rarely, while a lease is
 * rewritten at every renewal (a few times per lease); and a renewal then
 * never conflicts with a change of placement. The value is text:
 *
 *   L <expiry ms> <seconds> <tenant> <name>   a lease (seconds 0: none)
 *   D <mark ms> <seconds> <tenant> <name>     being dropped since mark
 *
 * expiry and mark are wall-clock milliseconds (CLOCK_REALTIME): the nodes'
 * clocks must agree within about a second (NTP). Every write is a
 * compare-and-set on the entry's revision (kvStore_Update), so a renewal
 * and a reaper, or two reapers, never lose each other's write: the reaper of
 * each node turns a lapsed L into a D with one CAS, and only the node whose
 * CAS succeeded drops the index; a renewal that came first made the reaper's
 * CAS fail (the index stays), one that comes after finds D and answers
 * not_found (the index goes). A D left behind by a node that died while
 * dropping is taken over after FPX_CLEASE_RETAKE_MS; the drop (the
 * cluster's own delete: definition, stream, every shard) is idempotent.
 *
 * Every request naming a leased index renews it, as on one server, without
 * a replicated write per request: the node that serves the request notes
 * the expiry it asks for (now + the lease, read from the watched copy of
 * fpx_leases) when it moves the entry's by a second or more, and its
 * reaper's next tick (within a second) writes the latest of those with one
 * compare-and-set; a lease with under FPX_CLEASE_NOW_MS left is renewed at
 * once, before the request goes on, so that no reaper takes it meanwhile.
 * renew_leases and set_lease write at once.
 */
#include "internal.h"

#include "server/ops.h"
#include "server/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How often each node's reaper looks at the leases. */
#define FPX_CLEASE_TICK_MS 1000
/* A drop marked this long ago and not finished: its node died; retaken. */
#define FPX_CLEASE_RETAKE_MS 30000
/* Every so many passes the entries without a lease are checked against the
 * definitions (an index deleted since leaves its entry behind). */
#define FPX_CLEASE_SWEEP_EVERY 30
/* Compare-and-set attempts of one renewal before unavailable. */
#define FPX_CLEASE_TRIES 8
/* A request moves a lease's expiry only by this much or more (a lease in
 * use is written about once a second per node at most)... */
#define FPX_CLEASE_SLACK_MS 1000
/* ...and renews at once a lease with less than this left. */
#define FPX_CLEASE_NOW_MS 3000

typedef struct lease_val {
    char state; /* 'L' or 'D' */
    int64_t at_ms, secs;
    char tenant[FPX_NAME_MAX + 1], name[FPX_NAME_MAX + 1];
} lease_val;

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void val_format(const lease_val *v, char *out, size_t cap) {
    snprintf(out, cap, "%c %" PRId64 " %" PRId64 " %s %s", v->state, v->at_ms, v->secs, v->tenant,
             v->name);
}

static int val_parse_bytes(const void *p, size_t len, lease_val *v) {
    char buf[64 + 2 * FPX_NAME_MAX + 4];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, p, len);
    buf[len] = 0;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "%%c %%" SCNd64 " %%" SCNd64 " %%%ds %%%ds", FPX_NAME_MAX,
             FPX_NAME_MAX);
    if (sscanf(buf, fmt, &v->state, &v->at_ms, &v->secs, v->tenant, v->name) != 5 ||
        (v->state != 'L' && v->state != 'D'))
        return -1;
    return 0;
}

static int val_parse(kvEntry *e, lease_val *v) {
    int len = kvEntry_ValueLen(e);
    return len <= 0 ? -1 : val_parse_bytes(kvEntry_Value(e), (size_t)len, v);
}

/* The entry of key: 1 (*v, *rev), 0 none, -1 error (err). */
static int lease_get(fpx_cluster *c, const char *key, lease_val *v, uint64_t *rev, fpx_err *err) {
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->leases, key);
    if (st == NATS_NOT_FOUND)
        return 0;
    if (st != NATS_OK)
        return fpx_cluster_fail(err, "cannot read the index's lease", st);
    *rev = kvEntry_Revision(e);
    int rc = val_parse(e, v);
    kvEntry_Destroy(e);
    if (rc != 0) { /* not ours to read: treated as no lease */
        fpx_log(FPX_LOG_WARN, "ignoring the malformed lease entry %s", key);
        return 0;
    }
    return 1;
}

/* Writes v to key: a create when rev is 0, else a compare-and-set on rev.
 * 0 written, 1 lost the race (read again), -1 error. */
static int lease_cas(fpx_cluster *c, const char *key, const lease_val *v, uint64_t rev,
                     fpx_err *err) {
    char text[64 + 2 * FPX_NAME_MAX + 4];
    uint64_t nrev = 0;
    val_format(v, text, sizeof text);
    natsStatus st = rev ? kvStore_UpdateString(&nrev, c->leases, key, text, rev)
                        : kvStore_CreateString(&nrev, c->leases, key, text);
    if (st == NATS_OK) { /* read back here at once (fpx_clease_info), not at the watch's pace */
        fpx_kvcache_put(&c->lease_cache, key, text, strlen(text));
        return 0;
    }
    /* JetStream answers a wrong last sequence with an API error: the entry
     * changed (or appeared) meanwhile. Anything else is a failure to reach
     * it, told apart by the connection's state. */
    if (natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED &&
        (st == NATS_ERR || st == NATS_NOT_FOUND))
        return 1;
    return fpx_cluster_fail(err, "cannot write the index's lease", st);
}

int fpx_clease_put(fpx_cluster *c, const uint8_t *uid, const char *tenant, const char *name,
                   int64_t secs, fpx_err *err) {
    char key[FPX_UID_HEX];
    fpx_cluster_uid_hex(uid, key);
    lease_val v = {'L', wall_ms() + secs * 1000 + fpx_orphan_deadline_ms(c), secs, {0}, {0}};
    snprintf(v.tenant, sizeof v.tenant, "%s", tenant);
    snprintf(v.name, sizeof v.name, "%s", name);
    int rc = lease_cas(c, key, &v, 0, err);
    if (rc > 0) /* a new unique id: nobody else writes it */
        return fpx_err_set(err, FPX_E_UNAVAILABLE, "cannot write the index's lease");
    return rc;
}

/* The lease of the index of unique id uid (key: its hex) in this node's
 * copy of fpx_leases: 1 (*v) when it has one, else 0. */
static int cached_lease(fpx_cluster *c, const uint8_t *uid, char *key, lease_val *v) {
    fpx_cluster_uid_hex(uid, key);
    uint8_t *val = NULL;
    size_t len = 0;
    int got = fpx_kvcache_get(&c->lease_cache, key, &val, &len, NULL) == 1 && val &&
              val_parse_bytes(val, len, v) == 0 && v->secs > 0;
    free(val);
    return got;
}

int fpx_clease_info(void *ctx, const uint8_t *uid, int64_t *secs, double *remaining) {
    char key[FPX_UID_HEX];
    lease_val v;
    if (!cached_lease(ctx, uid, key, &v))
        return 0;
    int64_t left = v.state == 'L' ? v.at_ms - wall_ms() : 0; /* D: lapsed, being dropped */
    /* Until the create's fpx_clease_begin reaches this node's copy, the
     * entry still covers the create's time as well: never more than the
     * lease itself is left. */
    if (left > v.secs * 1000)
        left = v.secs * 1000;
    *secs = v.secs;
    *remaining = left > 0 ? (double)left / 1000.0 : 0;
    return 1;
}

/* Moves key's expiry to until_ms unless it is that late already (until_ms
 * < 0: to now + its lease, earlier or not), holds no lease or is being
 * dropped: 0, or -1 (err). */
static int renew_until(fpx_cluster *c, const char *key, int64_t until_ms, fpx_err *err) {
    for (int i = 0; i < FPX_CLEASE_TRIES; i++) {
        lease_val v;
        uint64_t rev = 0;
        int got = lease_get(c, key, &v, &rev, err);
        if (got <= 0)
            return got;
        if (v.state != 'L' || v.secs == 0 || (until_ms >= 0 && v.at_ms >= until_ms))
            return 0;
        v.at_ms = until_ms >= 0 ? until_ms : wall_ms() + v.secs * 1000;
        int rc = lease_cas(c, key, &v, rev, err);
        if (rc <= 0)
            return rc;
    }
    return fpx_err_set(err, FPX_E_UNAVAILABLE, "the lease is being written by others");
}

void fpx_clease_touch(fpx_cluster *c, const uint8_t *uid) {
    char key[FPX_UID_HEX];
    lease_val v;
    if (!cached_lease(c, uid, key, &v) || v.state != 'L')
        return;
    int64_t now = wall_ms(), until = now + v.secs * 1000;
    if (until - v.at_ms < FPX_CLEASE_SLACK_MS)
        return;
    if (v.at_ms - now < FPX_CLEASE_NOW_MS) { /* close to its end: no reaper may take it first */
        fpx_err err = {0};
        if (renew_until(c, key, until, &err) < 0)
            fpx_log(FPX_LOG_WARN, "cannot renew the lease of %s/%s: %s", v.tenant, v.name, err.msg);
        return;
    }
    size_t b = 0;
    for (const char *p = key; *p; p++)
        b = b * 31 + (uint8_t)*p;
    b %= FPX_TOUCH_BUCKETS;
    pthread_mutex_lock(&c->touch_mu);
    fpx_touch *t = c->touched[b];
    while (t && strcmp(t->key, key))
        t = t->next;
    if (!t && (t = calloc(1, sizeof *t))) { /* out of memory: renewed by a later request */
        snprintf(t->key, sizeof t->key, "%s", key);
        t->next = c->touched[b];
        c->touched[b] = t;
    }
    if (t && t->until_ms < until)
        t->until_ms = until;
    pthread_mutex_unlock(&c->touch_mu);
}

void fpx_clease_begin(fpx_cluster *c, const uint8_t *uid) {
    char key[FPX_UID_HEX];
    fpx_cluster_uid_hex(uid, key);
    fpx_err err = {0};
    if (renew_until(c, key, -1, &err) < 0) /* it then runs the longer time it was written with */
        fpx_log(FPX_LOG_WARN, "cannot start the lease of index %s: %s", key, err.msg);
}

/* The renewals requests asked for since the last tick: written (write 0:
 * forgotten, at stop). */
static void renew_touched(fpx_cluster *c, int write) {
    fpx_touch *all = NULL;
    pthread_mutex_lock(&c->touch_mu);
    for (size_t b = 0; b < FPX_TOUCH_BUCKETS; b++)
        while (c->touched[b]) {
            fpx_touch *t = c->touched[b];
            c->touched[b] = t->next;
            t->next = all;
            all = t;
        }
    pthread_mutex_unlock(&c->touch_mu);
    while (all) {
        fpx_touch *t = all;
        all = t->next;
        fpx_err err = {0};
        if (write && renew_until(c, t->key, t->until_ms, &err) < 0)
            fpx_log(FPX_LOG_WARN, "cannot renew the lease of index %s: %s", t->key, err.msg);
        free(t);
    }
}

/* Renews (secs < 0) or sets (secs >= 0; 0 removes it) the lease of the
 * index d: 1 done (an index without a lease is left as it is by a
 * renewal), 0 the index is being dropped (not_found), -1 error. */
static int lease_touch(fpx_cluster *c, const fpx_def *d, int64_t secs, fpx_err *err) {
    char key[FPX_UID_HEX];
    fpx_cluster_uid_hex(d->uid, key);
    for (int i = 0; i < FPX_CLEASE_TRIES; i++) {
        lease_val v;
        uint64_t rev = 0;
        int got = lease_get(c, key, &v, &rev, err);
        if (got < 0)
            return -1;
        if (got && v.state == 'D')
            return 0;
        if ((!got || v.secs == 0) && secs <= 0)
            return 1; /* no lease, none wanted */
        if (secs >= 0)
            v.secs = secs;
        v.state = 'L';
        v.at_ms = v.secs ? wall_ms() + v.secs * 1000 : 0;
        snprintf(v.tenant, sizeof v.tenant, "%s", d->tenant);
        snprintf(v.name, sizeof v.name, "%s", d->name);
        int rc = lease_cas(c, key, &v, got ? rev : 0, err);
        if (rc <= 0)
            return rc == 0 ? 1 : -1;
    }
    return fpx_err_set(err, FPX_E_UNAVAILABLE,
                       "the lease of index '%s' is being written by others: try again", d->name);
}

/* ---- the requests ----------------------------------------------------------------- */

static int renew(fpx_cluster *c, fpx_req *r, fpx_out *o) {
    const msgpack_object *a;
    uint32_t n;
    if (fpx_prep_renew_leases(r, &a, &n) != 0)
        return -1;
    uint8_t *found = malloc(n ? n : 1);
    if (!found)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        char name[FPX_NAME_MAX + 1];
        const char *s;
        size_t len;
        fpx_obj_str(&a[i], &s, &len);
        memcpy(name, s, len);
        name[len] = 0;
        fpx_def d;
        int rc = fpx_cluster_def(c, r->tenant, name, &d, &r->err);
        if (rc == 1) {
            rc = lease_touch(c, &d, -1, &r->err);
            fpx_def_clear(&d);
        }
        if (rc < 0) { /* unavailable: the client tries again, nothing is pretended */
            free(found);
            return -1;
        }
        found[i] = rc == 1;
    }
    fpx_reply_renewed(r, o, a, n, found);
    free(found);
    return 1;
}

/* set_lease: the lease is written here; the reply is the info map, which
 * the rest of the dispatch makes as for get_index_info (forwarded to a
 * holder, or gathered from the shards). */
static int set_lease(fpx_cluster *c, fpx_req *r) {
    if (fpx_prep_set_lease(r) != 0) /* the checks of one server, with its messages */
        return -1;
    int64_t secs = 0;
    fpx_obj_int(fpx_map_get(r->h, "lease_seconds"), &secs);
    char name[FPX_NAME_MAX + 1];
    if (fpx_req_name(r, 0, name))
        return -1;
    fpx_def d;
    int rc = fpx_cluster_def(c, r->tenant, name, &d, &r->err);
    if (rc == 1) {
        rc = lease_touch(c, &d, secs, &r->err);
        fpx_def_clear(&d);
    }
    if (rc < 0)
        return -1;
    if (rc == 0)
        return fpx_err_set(&r->err, FPX_E_NOT_FOUND, "index '%s' not found", name);
    r->rec = (fpx_walrec){0}; /* nothing for the index's log */
    r->op = fpx_op_find("get_index_info", strlen("get_index_info"));
    return 0;
}

int fpx_cluster_lease(fpx_req *r, fpx_out *o) {
    fpx_cluster *c = r->s->cluster;
    if (!strcmp(r->op->name, "renew_leases"))
        return renew(c, r, o) < 0 ? -1 : 1;
    if (!strcmp(r->op->name, "set_lease"))
        return set_lease(c, r);
    return 0;
}

/* ---- the reaper ------------------------------------------------------------------- */

/* The cluster's delete of the index d, as delete_index does it: its
 * definition and stream, then every shard's (and a sharded index's label
 * counter). Each step is idempotent: a drop taken over after a node died
 * half-way finishes it. */
static int drop_index(fpx_cluster *c, const fpx_def *d, fpx_err *err) {
    if (fpx_cluster_undefine_uid(c, d->tenant, d->name, d->uid, err) < 0)
        return -1;
    for (int64_t s = 0; s < d->shards && d->shards > 1; s++) {
        char name[FPX_NAME_MAX + 1];
        fpx_shard_name(d->uid, s, name);
        if (fpx_cluster_undefine(c, d->tenant, name, err) < 0)
            return -1;
    }
    if (d->shards > 1) {
        char key[FPX_UID_HEX];
        fpx_cluster_uid_hex(d->uid, key);
        kvStore_Delete(c->labels, key);
    }
    return 0;
}

/* Drops the index of lease entry key (v, taken with a D at rev): when its
 * definition still has that unique id (a name deleted and made again is
 * another index), then the entry goes. */
static void reap(fpx_cluster *c, const char *key, const lease_val *v) {
    fpx_def d;
    fpx_err err = {0};
    int found = fpx_cluster_def(c, v->tenant, v->name, &d, &err);
    if (found < 0) {
        fpx_log(FPX_LOG_WARN, "cannot drop index %s/%s whose lease lapsed: %s", v->tenant, v->name,
                err.msg);
        return; /* the D stays: taken over later */
    }
    if (found == 1) {
        char uid[FPX_UID_HEX];
        fpx_cluster_uid_hex(d.uid, uid);
        int same = !strcmp(uid, key);
        int rc = same ? drop_index(c, &d, &err) : 0;
        fpx_def_clear(&d);
        if (rc != 0) {
            fpx_log(FPX_LOG_WARN, "cannot drop index %s/%s whose lease lapsed: %s", v->tenant,
                    v->name, err.msg);
            return;
        }
        if (same && v->secs > 0)
            fpx_log(FPX_LOG_INFO,
                    "deleted index %s/%s from the cluster: its lease of %lld s lapsed", v->tenant,
                    v->name, (long long)v->secs);
    }
    kvStore_Delete(c->leases, key);
}

/* The entries that may be due, from the watched leases (no NATS request):
 * a lapsed lease, a drop marked long ago, and on a sweep pass the entries
 * without a lease. Each is read again from NATS before anything is done. */
typedef struct due_list {
    char (*keys)[FPX_UID_HEX];
    size_t n, cap;
    int64_t now;
    int sweep;
} due_list;

/* Whether entry v asks for the reaper at now: a lapsed lease, a drop marked
 * long ago (its node died), or on a sweep an entry without a lease (whose
 * index may be gone). */
static int lease_due(const lease_val *v, int64_t now, int sweep) {
    return (v->state == 'L' && v->secs > 0 && now >= v->at_ms) ||
           (v->state == 'D' && now - v->at_ms >= FPX_CLEASE_RETAKE_MS) ||
           (v->state == 'L' && v->secs == 0 && sweep);
}

static void collect_due(void *arg, const char *key, const uint8_t *val, size_t len) {
    due_list *dl = arg;
    lease_val v;
    if (strlen(key) >= FPX_UID_HEX || val_parse_bytes(val, len, &v) != 0 ||
        !lease_due(&v, dl->now, dl->sweep))
        return;
    if (dl->n == dl->cap) {
        size_t ncap = dl->cap ? 2 * dl->cap : 16;
        char(*k)[FPX_UID_HEX] = realloc(dl->keys, ncap * sizeof *k);
        if (!k)
            return; /* the next pass */
        dl->keys = k;
        dl->cap = ncap;
    }
    snprintf(dl->keys[dl->n++], FPX_UID_HEX, "%s", key);
}

static void reap_pass(fpx_cluster *c, unsigned pass) {
    due_list dl = {.now = wall_ms(), .sweep = pass % FPX_CLEASE_SWEEP_EVERY == 0};
    if (fpx_kvcache_each(&c->lease_cache, collect_due, &dl) != 0)
        return; /* not watched yet */
    for (size_t i = 0; i < dl.n; i++) {
        const char *key = dl.keys[i];
        lease_val v;
        uint64_t rev = 0;
        fpx_err err = {0};
        if (lease_get(c, key, &v, &rev, &err) != 1)
            continue;
        int64_t now = wall_ms();
        if (!lease_due(&v, now, dl.sweep))
            continue; /* renewed, or another node is dropping it, since the watch saw it */
        if (v.state == 'L' && v.secs == 0) { /* no lease: kept while its index is */
            fpx_def d;
            int found = fpx_cluster_def(c, v.tenant, v.name, &d, &err);
            if (found != 0) {
                char uid[FPX_UID_HEX] = "";
                if (found == 1)
                    fpx_cluster_uid_hex(d.uid, uid);
                fpx_def_clear(&d);
                if (found < 0 || !strcmp(uid, key))
                    continue;
            }
        }
        v.state = 'D';
        v.at_ms = now;
        if (lease_cas(c, key, &v, rev, &err) != 0)
            continue; /* renewed meanwhile, or another node took it */
        reap(c, key, &v);
    }
    free(dl.keys);
}

static void *reaper_main(void *arg) {
    fpx_cluster *c = arg;
    /* orphans (orphan.c) are looked for eight times per grace, at most
     * every tick */
    int64_t every = fpx_orphan_grace_ms(c) / 8 / FPX_CLEASE_TICK_MS;
    unsigned orphan_every = every < 1 ? 1 : (unsigned)every;
    for (unsigned pass = 1; !fpx_cluster_wait_stop(c, FPX_CLEASE_TICK_MS); pass++) {
        if (natsConnection_Status(c->nc) != NATS_CONN_STATUS_CONNECTED)
            continue;
        renew_touched(c, 1); /* first: a lease a request renewed is never reaped */
        reap_pass(c, pass);
        fpx_cluster_merge_finish_pass(c); /* merges whose node stopped (merge.c) */
        if (pass % orphan_every == 0)
            fpx_orphan_pass(c);
    }
    fpx_orphan_forget(c);
    return NULL;
}

int fpx_clease_start(fpx_cluster *c, fpx_err *err) {
    if (pthread_create(&c->lreaper, NULL, reaper_main, c) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot start the cluster's lease reaper");
    c->lreaper_started = 1;
    return 0;
}

void fpx_clease_stop(fpx_cluster *c) {
    if (c->lreaper_started)
        pthread_join(c->lreaper, NULL);
    c->lreaper_started = 0;
    renew_touched(c, 0);
}
