/*
 * lease.c - renewing a client handle's leases while the program lives.
 *
 * An index created with a lease (fpx_client_create_index_leased) is deleted
 * by the server once nobody renewed it for lease_seconds: that is how the
 * indexes a crashed program made behind its back go away. While the program
 * lives, a thread of its handle renews them all with one renew_leases
 * request every third of the shortest lease (so two renewals may be lost
 * before one lapses). The thread has a connection of its own (a private
 * handle), never the handle's socket: a ZeroMQ socket must not be used from
 * two threads, and the handle's own requests, timeouts and last error stay
 * exactly as the program sees them. An index the server reports unknown
 * (deleted, or already lapsed) is no longer renewed.
 *
 * fpx_client_free stops the thread (it waits at most for one renewal in
 * flight, whose reply it awaits for 5 s at most) and joins it; the leases then
 * lapse on the server unless the indexes were deleted.
 */
#include "lease.h"
#include "faissproxy/client.h"
#include "proto/proto.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Names per renew_leases request (the server takes up to 10000). */
#define RENEW_CHUNK 1000
/* The shortest pause between renewals, whatever the leases. */
#define MIN_PERIOD_MS 300
#define RENEW_TIMEOUT_MS 5000

struct fpx_leaser {
    char *endpoint, *api_key, *tenant_id;
    char server_key[64];
    int key_changed;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    pthread_t thread;
    int started, stop;

    char **names; /* owned */
    int64_t *secs;
    size_t n, cap;
};

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *dup_or_null(const char *s, int *failed) {
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *failed = 1;
    return d;
}

fpx_leaser *fpx_leaser_new(const char *endpoint, const char *api_key, const char *tenant_id,
                           const char *server_key) {
    fpx_leaser *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    int failed = 0;
    l->endpoint = dup_or_null(endpoint, &failed);
    l->api_key = dup_or_null(api_key, &failed);
    l->tenant_id = dup_or_null(tenant_id, &failed);
    snprintf(l->server_key, sizeof l->server_key, "%s", server_key ? server_key : "");
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (failed || !l->endpoint) {
        fpx_leaser_free(l);
        return NULL;
    }
    return l;
}

/* Caller holds l->mu. */
static void forget_at(fpx_leaser *l, size_t i) {
    free(l->names[i]);
    l->names[i] = l->names[l->n - 1];
    l->secs[i] = l->secs[l->n - 1];
    l->n--;
}

/* Caller holds l->mu. The pause between renewals: a third of the shortest
 * lease; 0 when there is nothing to renew. */
static uint64_t period_ms(const fpx_leaser *l) {
    int64_t shortest = 0;
    for (size_t i = 0; i < l->n; i++)
        if (shortest == 0 || l->secs[i] < shortest)
            shortest = l->secs[i];
    if (shortest == 0)
        return 0;
    uint64_t p = (uint64_t)shortest * 1000u / 3u;
    return p < MIN_PERIOD_MS ? MIN_PERIOD_MS : p;
}

/* One renew_leases request for names[0..n) over conn; the names the server
 * did not know are forgotten. Failures are left to the next renewal.
 * Returns 0 when the next chunk may follow, -1 when the server did not
 * answer (the other chunks would only wait as long). */
static int renew_chunk(fpx_leaser *l, fpx_client *conn, char **names, size_t n) {
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *pk = fpx_out_hdr(&o);
    msgpack_pack_map(pk, 2 + (l->api_key != NULL) + (l->tenant_id != NULL));
    fpx_pack_cstr(pk, "operation");
    fpx_pack_cstr(pk, "renew_leases");
    if (l->api_key) {
        fpx_pack_cstr(pk, "api_key");
        fpx_pack_cstr(pk, l->api_key);
    }
    if (l->tenant_id) {
        fpx_pack_cstr(pk, "tenant_id");
        fpx_pack_cstr(pk, l->tenant_id);
    }
    fpx_pack_cstr(pk, "index_ids");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        fpx_pack_cstr(pk, names[i]);
    uint8_t *body, *rep;
    size_t len, rlen;
    if (fpx_out_finish(&o, &body, &len) != 0)
        return 0;
    int rc = fpx_client_request_raw(conn, body, len, &rep, &rlen);
    free(body);
    if (rc != 0)
        return strcmp(fpx_client_errtype(conn), "connection_error") == 0 ? -1 : 0;
    fpx_msg m;
    fpx_err err;
    if (fpx_msg_decode(&m, rep, rlen, &err) == 0) {
        const msgpack_object *st = fpx_map_get(m.header, "status");
        const msgpack_object *nf =
            st && fpx_obj_str_eq(st, "ok") && m.meta ? fpx_map_get(m.meta, "not_found") : NULL;
        if (nf && nf->type == MSGPACK_OBJECT_ARRAY) {
            pthread_mutex_lock(&l->mu);
            for (uint32_t j = 0; j < nf->via.array.size; j++) {
                const char *s;
                size_t sl;
                if (fpx_obj_str(&nf->via.array.ptr[j], &s, &sl))
                    continue;
                for (size_t i = 0; i < l->n; i++) {
                    if (strlen(l->names[i]) == sl && !memcmp(l->names[i], s, sl)) {
                        forget_at(l, i);
                        break;
                    }
                }
            }
            pthread_mutex_unlock(&l->mu);
        }
        fpx_msg_destroy(&m);
    }
    free(rep);
    return 0;
}

static int stopping(fpx_leaser *l) {
    pthread_mutex_lock(&l->mu);
    int stop = l->stop;
    pthread_mutex_unlock(&l->mu);
    return stop;
}

/* A private connection with the current server key; NULL when it cannot be
 * made (tried again at the next renewal). Caller holds l->mu. */
static fpx_client *connect_locked(fpx_leaser *l, int timeout_ms) {
    fpx_client *c = fpx_client_new(l->endpoint, l->api_key, l->tenant_id);
    /* Always the handle's key, "" included: the program may have chosen a plain
     * connection over FAISS_PROXY_SERVER_KEY, which fpx_client_new reads. */
    if (c && fpx_client_set_server_key(c, l->server_key) != 0) {
        fpx_client_free(c);
        return NULL;
    }
    if (c)
        fpx_client_set_timeout(c, timeout_ms);
    l->key_changed = 0;
    return c;
}

static void *renewer_main(void *arg) {
    fpx_leaser *l = arg;
    fpx_client *conn = NULL;
    uint64_t last = now_ms();
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        uint64_t period = period_ms(l);
        if (period == 0) {
            pthread_cond_wait(&l->cv, &l->mu);
            last = now_ms();
            continue;
        }
        uint64_t due = last + period;
        if (now_ms() < due) {
            struct timespec until = {(time_t)(due / 1000u), (long)(due % 1000u) * 1000000L};
            pthread_cond_timedwait(&l->cv, &l->mu, &until);
            continue; /* woken early: a new lease (maybe shorter), or stop */
        }
        last = now_ms();
        if (conn && l->key_changed) {
            fpx_client_free(conn);
            conn = NULL;
        }
        /* A renewal waits at most RENEW_TIMEOUT_MS for its reply, so that
         * fpx_client_free never waits longer for a server that is gone. */
        if (!conn)
            conn = connect_locked(l, (int)(period < RENEW_TIMEOUT_MS ? period : RENEW_TIMEOUT_MS));
        /* A copy of the names: the program may add and forget meanwhile. */
        size_t n = l->n;
        char **copy = calloc(n ? n : 1, sizeof *copy);
        for (size_t i = 0; copy && i < n; i++)
            if (!(copy[i] = strdup(l->names[i])))
                n = i;
        pthread_mutex_unlock(&l->mu);
        for (size_t i = 0; conn && copy && i < n && !stopping(l); i += RENEW_CHUNK)
            if (renew_chunk(l, conn, copy + i, n - i < RENEW_CHUNK ? n - i : RENEW_CHUNK) != 0)
                break;
        for (size_t i = 0; copy && i < n; i++)
            free(copy[i]);
        free(copy);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    fpx_client_free(conn);
    return NULL;
}

int fpx_leaser_add(fpx_leaser *l, const char *index_id, int64_t lease_seconds) {
    char *name = strdup(index_id);
    if (!name)
        return -1;
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->n; i++) {
        if (!strcmp(l->names[i], index_id)) { /* already renewed: its new length */
            l->secs[i] = lease_seconds;
            pthread_cond_signal(&l->cv);
            pthread_mutex_unlock(&l->mu);
            free(name);
            return 0;
        }
    }
    int rc = 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **a = realloc(l->names, cap * sizeof *a);
        if (a)
            l->names = a;
        int64_t *b = a ? realloc(l->secs, cap * sizeof *b) : NULL;
        if (b) {
            l->secs = b;
            l->cap = cap;
        } else {
            rc = -1;
        }
    }
    if (rc == 0 && !l->started) {
        if (pthread_create(&l->thread, NULL, renewer_main, l) == 0)
            l->started = 1;
        else
            rc = -1;
    }
    if (rc == 0) {
        l->names[l->n] = name;
        l->secs[l->n++] = lease_seconds;
        pthread_cond_signal(&l->cv);
    } else {
        free(name);
    }
    pthread_mutex_unlock(&l->mu);
    return rc;
}

void fpx_leaser_forget(fpx_leaser *l, const char *index_id) {
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->n; i++) {
        if (!strcmp(l->names[i], index_id)) {
            forget_at(l, i);
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
}

void fpx_leaser_set_server_key(fpx_leaser *l, const char *server_key) {
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    snprintf(l->server_key, sizeof l->server_key, "%s", server_key ? server_key : "");
    l->key_changed = 1;
    pthread_mutex_unlock(&l->mu);
}

void fpx_leaser_free(fpx_leaser *l) {
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (l->started)
        pthread_join(l->thread, NULL);
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    free(l->secs);
    free(l->endpoint);
    free(l->api_key);
    free(l->tenant_id);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}
