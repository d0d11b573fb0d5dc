/*
 * forward.c - any node answers for any index: a request for an index this
 * node holds no replica of is sent on, byte for byte, to a node that holds
 * one, and that node's reply goes back to the client unchanged.
 *
 * Where a node listens: each heartbeat value in fpx_nodes is
 *
 *   live endpoint=tcp://HOST:PORT role=data        (or role=router)
 *
 * ("live" alone, as an older node writes it: no endpoint known). The holder
 * authenticates the request again (every node has the same API keys) and,
 * with CurveZMQ, the forwarding socket authenticates it with the server's own
 * public key (every node of a cluster shares one server key pair).
 *
 * Sockets: a DEALER per peer endpoint, used by one worker at a time. A worker
 * takes an idle one from the peer's list (or makes one), sends, waits, and
 * gives it back; the list's mutex is the memory barrier ZeroMQ asks for when
 * a socket changes threads. So there is one socket per peer while requests
 * come one at a time, and as many as requests forwarded to it at once
 * otherwise, each connected once and reused. A socket whose reply did not
 * come in time is closed, never reused: its late reply must not answer the
 * next request. (A single socket per peer shared by every worker would need
 * a thread of its own matching replies to requests; the pool needs none.)
 *
 * A forwarded request is marked by its socket's routing id
 * (FPX_FORWARD_ID_PREFIX and the cluster's forwarding token, a secret kept in
 * NATS: checked by the worker, net.c), not by its body, which travels as it
 * is. A node never forwards a request that was forwarded to it, so no
 * loop is possible: it answers unavailable instead.
 */
#include "internal.h"

#include "server/ops.h"
#include "server/order.h"
#include "server/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/* How long a send waits for the peer's connection (ZMQ_IMMEDIATE): past it,
 * the request never left, and another holder may take it. */
#define FPX_CONNECT_WAIT_MS 2000
/* A peer that could not be connected to is skipped this long. */
#define FPX_PEER_DOWN_MS 1000
#define FPX_IDLE_SOCKETS_MAX 16
#define ENDPOINT_MAX 320

typedef struct fpx_fsock {
    void *sock;
    struct fpx_fsock *next;
} fpx_fsock;

typedef struct fpx_peer {
    char endpoint[ENDPOINT_MAX];
    fpx_fsock *idle;
    int nidle;
    uint64_t down_until_ns;
    struct fpx_peer *next;
} fpx_peer;

/* ---- the heartbeat's record ------------------------------------------------------ */

void fpx_node_record(fpx_cluster *c, char *out, size_t cap) {
    pthread_mutex_lock(&c->ep_mu);
    snprintf(out, cap, "live%s%s role=%s", c->endpoint[0] ? " endpoint=" : "", c->endpoint,
             c->s->cfg->router_only ? "router" : "data");
    pthread_mutex_unlock(&c->ep_mu);
}

int fpx_node_lookup(fpx_cluster *c, const char *node, char *endpoint, size_t cap, int *router,
                    fpx_err *err) {
    kvEntry *e = NULL;
    endpoint[0] = 0;
    *router = 0;
    char v[512];
    int n = 0;
    /* The watched heartbeat (cache.c): live while its last beat reached this
     * node less than the bucket's expiry ago; a node never seen here is
     * read from NATS. */
    uint8_t *cv = NULL;
    size_t clen = 0;
    uint64_t age = 0;
    int hit = fpx_kvcache_get(&c->node_cache, node, &cv, &clen, &age);
    if (hit == 2 || (hit == 1 && age >= FPX_NODE_TTL_MS)) {
        free(cv);
        return 0;
    }
    if (hit == 1) {
        n = clen >= sizeof v ? (int)sizeof v - 1 : (int)clen;
        if (n > 0)
            memcpy(v, cv, (size_t)n);
        free(cv);
    } else {
        free(cv);
        natsStatus st = kvStore_Get(&e, c->nodes, node);
        if (st == NATS_NOT_FOUND)
            return 0;
        if (st != NATS_OK)
            return fpx_cluster_fail(err, "cannot read the cluster's nodes", st);
        n = kvEntry_ValueLen(e);
        if (n < 0)
            n = 0;
        if ((size_t)n >= sizeof v)
            n = (int)sizeof v - 1;
        memcpy(v, kvEntry_Value(e), (size_t)n);
        kvEntry_Destroy(e);
    }
    v[n] = 0;
    for (char *save = NULL, *w = strtok_r(v, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        if (!strncmp(w, "endpoint=", 9) && strlen(w + 9) < cap)
            strcpy(endpoint, w + 9);
        else if (!strcmp(w, "role=router"))
            *router = 1;
    }
    return 1;
}

void fpx_cluster_listening(fpx_server *s, const char *bound) {
    fpx_cluster *c = s->cluster;
    char ep[ENDPOINT_MAX];
    if (s->cfg->advertise[0]) {
        snprintf(ep, sizeof ep, "%s", s->cfg->advertise);
    } else {
        /* tcp://HOST:PORT; a wildcard HOST is no address to connect to */
        const char *host = strncmp(bound, "tcp://", 6) ? bound : bound + 6;
        const char *colon = strrchr(host, ':');
        size_t hlen = colon ? (size_t)(colon - host) : strlen(host);
        char name[256] = "";
        if ((hlen == 7 && !strncmp(host, "0.0.0.0", 7)) || (hlen == 1 && host[0] == '*') ||
            (hlen == 4 && !strncmp(host, "[::]", 4))) {
            if (gethostname(name, sizeof name - 1) != 0 || !name[0])
                strcpy(name, "localhost");
            snprintf(ep, sizeof ep, "tcp://%s%s", name, colon ? colon : "");
        } else {
            snprintf(ep, sizeof ep, "%s", bound);
        }
    }
    pthread_mutex_lock(&c->ep_mu);
    snprintf(c->endpoint, sizeof c->endpoint, "%s", ep);
    pthread_mutex_unlock(&c->ep_mu);
    char rec[ENDPOINT_MAX + 64];
    uint64_t rev;
    fpx_node_record(c, rec, sizeof rec);
    kvStore_PutString(&rev, c->nodes, s->cfg->node_id, rec); /* at once, not at the next beat */
    fpx_log(FPX_LOG_INFO, "node %s advertises %s%s", s->cfg->node_id, ep,
            s->cfg->router_only ? " (router only: holds no replica)" : "");
}

/* ---- sockets ------------------------------------------------------------------- */

static void *sock_new(fpx_cluster *c, const char *endpoint) {
    const fpx_config *cfg = c->s->cfg;
    void *sock = zmq_socket(c->zctx, ZMQ_DEALER);
    if (!sock)
        return NULL;
    char id[sizeof FPX_FORWARD_ID_PREFIX + FPX_FORWARD_TOKEN_LEN + FPX_NODE_ID_MAX + 48];
    snprintf(id, sizeof id, "%s%s:%s:%s:%llu", FPX_FORWARD_ID_PREFIX, c->fwd_token, cfg->node_id,
             c->boot, (unsigned long long)atomic_fetch_add(&c->next_sock, 1));
    int zero = 0, one = 1,
        wait = cfg->forward_timeout_ms < FPX_CONNECT_WAIT_MS ? cfg->forward_timeout_ms
                                                             : FPX_CONNECT_WAIT_MS;
    int rc = zmq_setsockopt(sock, ZMQ_ROUTING_ID, id, strlen(id)) ||
             zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero) ||
             zmq_setsockopt(sock, ZMQ_IMMEDIATE, &one, sizeof one) ||
             zmq_setsockopt(sock, ZMQ_SNDTIMEO, &wait, sizeof wait);
    if (rc == 0 && cfg->curve_public_key[0]) {
        /* Every node has the server key pair: the peer is a server with our
         * own public key; this side is a client with a key pair of its own. */
        char pub[FPX_Z85_KEY_LEN + 1], sec[FPX_Z85_KEY_LEN + 1];
        rc = zmq_curve_keypair(pub, sec) != 0 ||
             zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, cfg->curve_public_key,
                            sizeof cfg->curve_public_key) ||
             zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, sizeof pub) ||
             zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, sizeof sec);
    }
    if (rc == 0)
        rc = zmq_connect(sock, endpoint);
    if (rc != 0) {
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

/* An idle socket to endpoint, or a new one; *peer receives its peer. NULL
 * with *down set when the peer was unreachable a moment ago. */
static void *sock_take(fpx_cluster *c, const char *endpoint, fpx_peer **peer, int *down) {
    *down = 0;
    pthread_mutex_lock(&c->fwd_mu);
    if (!c->zctx)
        c->zctx = zmq_ctx_new();
    fpx_peer *p = c->peers;
    while (p && strcmp(p->endpoint, endpoint))
        p = p->next;
    if (!p && c->zctx && (p = calloc(1, sizeof *p)) != NULL) {
        snprintf(p->endpoint, sizeof p->endpoint, "%s", endpoint);
        p->next = c->peers;
        c->peers = p;
    }
    void *sock = NULL;
    if (p && fpx_now_ns() < p->down_until_ns) {
        *down = 1;
    } else if (p && p->idle) {
        fpx_fsock *f = p->idle;
        p->idle = f->next;
        p->nidle--;
        sock = f->sock;
        free(f);
    }
    pthread_mutex_unlock(&c->fwd_mu);
    *peer = p;
    if (!p || *down || sock)
        return sock;
    return sock_new(c, endpoint);
}

/* Gives sock back to peer's idle list (ok), or closes it. */
static void sock_give(fpx_cluster *c, fpx_peer *p, void *sock, int ok) {
    fpx_fsock *f = ok ? malloc(sizeof *f) : NULL;
    pthread_mutex_lock(&c->fwd_mu);
    if (f && p->nidle < FPX_IDLE_SOCKETS_MAX) {
        f->sock = sock;
        f->next = p->idle;
        p->idle = f;
        p->nidle++;
        sock = NULL;
        f = NULL;
    }
    pthread_mutex_unlock(&c->fwd_mu);
    free(f);
    if (sock)
        zmq_close(sock);
}

static void peer_down(fpx_cluster *c, fpx_peer *p) {
    pthread_mutex_lock(&c->fwd_mu);
    p->down_until_ns = fpx_now_ns() + (uint64_t)FPX_PEER_DOWN_MS * 1000000u;
    pthread_mutex_unlock(&c->fwd_mu);
}

void fpx_forward_stop(fpx_cluster *c) {
    pthread_mutex_lock(&c->fwd_mu);
    while (c->peers) {
        fpx_peer *p = c->peers;
        c->peers = p->next;
        while (p->idle) {
            fpx_fsock *f = p->idle;
            p->idle = f->next;
            zmq_close(f->sock);
            free(f);
        }
        free(p);
    }
    void *ctx = c->zctx;
    c->zctx = NULL;
    pthread_mutex_unlock(&c->fwd_mu);
    if (ctx)
        zmq_ctx_term(ctx);
}

/* ---- one request to one node ------------------------------------------------------ */

/* Receives a reply ([""][body], or [body]) into a malloc'd copy. */
static int recv_reply(void *sock, uint8_t **reply, size_t *reply_len) {
    zmq_msg_t m;
    int got = 0, more = 1;
    *reply = NULL;
    while (more) {
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (zmq_msg_size(&m) > 0 && !got) {
            *reply_len = zmq_msg_size(&m);
            *reply = malloc(*reply_len);
            if (*reply)
                memcpy(*reply, zmq_msg_data(&m), *reply_len);
            got = 1;
        }
        zmq_msg_close(&m);
    }
    return *reply ? 0 : -1;
}

int fpx_cluster_forward(fpx_server *s, const char *node_id, const uint8_t *body, size_t len,
                        uint8_t **reply, size_t *reply_len, int *sent, fpx_err *err) {
    fpx_cluster *c = s->cluster;
    *sent = 0;
    *reply = NULL;
    char ep[ENDPOINT_MAX];
    int router = 0;
    int live = fpx_node_lookup(c, node_id, ep, sizeof ep, &router, err);
    if (live <= 0)
        return live < 0 ? -1 : fpx_err_set(err, FPX_E_UNAVAILABLE, "node %s is not live", node_id);
    if (!ep[0])
        return fpx_err_set(err, FPX_E_UNAVAILABLE,
                           "node %s advertises no endpoint to forward requests to (not listening "
                           "yet, or an older version)",
                           node_id);
    fpx_peer *peer;
    int down;
    void *sock = sock_take(c, ep, &peer, &down);
    if (!sock)
        return fpx_err_set(err, FPX_E_UNAVAILABLE,
                           down ? "node %s (%s) could not be reached a moment ago"
                                : "cannot open a socket to node %s (%s)",
                           node_id, ep);
    /* ZMQ_IMMEDIATE: the first frame waits for a connection, up to
     * FPX_CONNECT_WAIT_MS; once it is taken, the rest of the message is. */
    if (zmq_send(sock, "", 0, ZMQ_SNDMORE) != 0) {
        sock_give(c, peer, sock, 0);
        peer_down(c, peer);
        return fpx_err_set(err, FPX_E_UNAVAILABLE, "node %s (%s) cannot be reached", node_id, ep);
    }
    *sent = 1;
    if (zmq_send(sock, body, len, 0) != (int)len) {
        sock_give(c, peer, sock, 0);
        return fpx_err_set(err, FPX_E_UNAVAILABLE, "sending the request to node %s (%s) failed: %s",
                           node_id, ep, zmq_strerror(zmq_errno()));
    }
    uint64_t deadline = fpx_now_ns() + (uint64_t)s->cfg->forward_timeout_ms * 1000000u;
    /* Waiting for another node, as for a lock: counted, so that while every
     * worker is busy and some only wait, the pool grows (net.c) and a slow
     * holder does not take every worker of this node. */
    atomic_fetch_add(&s->blocked, 1);
    int answered = 0;
    for (;;) {
        uint64_t now = fpx_now_ns();
        if (now >= deadline)
            break;
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        long left = (long)((deadline - now + 999999) / 1000000);
        int rc = zmq_poll(&it, 1, left);
        if (rc < 0 && zmq_errno() != EINTR)
            break;
        if (rc > 0 && recv_reply(sock, reply, reply_len) == 0) {
            answered = 1;
            break;
        }
    }
    atomic_fetch_sub(&s->blocked, 1);
    if (answered) {
        sock_give(c, peer, sock, 1);
        return 0;
    }
    sock_give(c, peer, sock, 0); /* a late reply must not answer the next request */
    return fpx_err_set(err, FPX_E_UNAVAILABLE,
                       "node %s (%s), which holds the index, did not answer within %d ms "
                       "(--forward-timeout-ms)",
                       node_id, ep, s->cfg->forward_timeout_ms);
}

/* ---- the holders of an index ------------------------------------------------------ */

/* Whether reply is an unavailable error that another holder may answer
 * instead, and whether it says that nothing was published (a header
 * "published": false). A synced write published but not confirmed
 * ("published": true, synced.c) is final: sent again, it would only wait
 * again. */
static int reply_unavailable(const uint8_t *reply, size_t len, int *unpublished) {
    fpx_msg m;
    fpx_err err = {0};
    *unpublished = 0;
    if (fpx_msg_decode_header(&m, reply, len, &err) != 0)
        return 0;
    const msgpack_object *t = fpx_map_get(m.header, "error_type");
    const msgpack_object *p = fpx_map_get(m.header, "published");
    const char *str;
    size_t n;
    int un = t && fpx_obj_str(t, &str, &n) == 0 && n == 11 && !memcmp(str, "unavailable", 11);
    *unpublished = p && p->type == MSGPACK_OBJECT_BOOLEAN && !p->via.boolean;
    if (p && p->type == MSGPACK_OBJECT_BOOLEAN && p->via.boolean)
        un = 0;
    fpx_msg_destroy(&m);
    return un;
}

int fpx_forward_to_holders(fpx_cluster *c, fpx_req *r, const char *placement) {
    const char *me = c->s->cfg->node_id;
    char name[FPX_NAME_MAX + 1] = "";
    fpx_req_str(r, "index_id", name, sizeof name);
    if (r->forwarded)
        return fpx_err_set(&r->err, FPX_E_UNAVAILABLE,
                           "index '%s' has no replica on node %s (its replicas: %s), and a request "
                           "forwarded by another node is not forwarded again",
                           name, me, placement);
    /* One connection's requests reach the holder in the order they came (as
     * their index locks are taken in order on one node, order.h): this one
     * waits for its turn, which passes when it ends. Pipelined requests of
     * one connection through a node that does not hold their index are thus
     * forwarded one at a time. */
    fpx_order_wait(&r->s->blocked);
    int write = (r->op->flags & (FPX_OP_LOGGED | FPX_OP_DROPS | FPX_OP_CREATES)) != 0;
    /* With client_id and request_id, a write's message id is the same
     * whichever node publishes it: JetStream stores it once (log.c). */
    int same_id = r->client_id[0] && r->rid;
    uint8_t *last = NULL;
    size_t last_len = 0;
    fpx_err why = {0};
    char list[FPX_PLACEMENT_LEN];
    snprintf(list, sizeof list, "%s", placement);
    for (char *save = NULL, *node = strtok_r(list, ",", &save); node;
         node = strtok_r(NULL, ",", &save)) {
        if (!strcmp(node, me))
            continue;
        uint8_t *reply;
        size_t len;
        int sent, unpublished;
        fpx_err err = {0};
        if (fpx_cluster_forward(c->s, node, r->body, r->body_len, &reply, &len, &sent, &err) == 0) {
            if (!reply_unavailable(reply, len, &unpublished) ||
                (write && !unpublished && !same_id)) {
                free(last);
                r->relay = reply;
                r->relay_len = len;
                return 0;
            }
            free(last); /* unavailable there: the next holder may answer */
            last = reply;
            last_len = len;
            continue;
        }
        why = err;
        if (sent && write && !same_id) { /* it may have been applied: not sent again */
            free(last);
            r->err = err;
            return -1;
        }
    }
    if (last) { /* every holder answered unavailable: the last one's reply */
        r->relay = last;
        r->relay_len = last_len;
        return 0;
    }
    return fpx_err_set(&r->err, FPX_E_UNAVAILABLE,
                       "index '%s' is held by nodes %s, and none of them could be reached from "
                       "node %s: %s",
                       name, placement, me, why.msg[0] ? why.msg : "no other node holds it");
}
