/*
 * net.c - ROUTER front, load-balancing broker, worker threads.
 *
 *   clients --tcp--> ROUTER "front"  (REQ clients and pipelining DEALERs)
 *                      | broker loop (this thread)
 *                    ROUTER "back" --inproc--> DEALER per worker
 *
 * The broker hands a request only to a worker that said it is idle, so a slow
 * operation (training, a huge batch) holds one worker and never queues other
 * requests behind it; requests wait in ZeroMQ's queues while every worker is
 * busy. Messages move between sockets as zmq_msg_t without copying, and the
 * worker decodes the body in place.
 *
 * Envelopes: a REQ client, or a DEALER that follows the protocol, sends an
 * empty delimiter frame before the body; a DEALER that does not is answered
 * the same way it asked. The broker tells the worker which it was in a
 * one-byte "mode" frame and puts the delimiter back on the reply:
 *   broker -> worker: [client id][mode][body]
 *   worker -> broker: [client id][mode][reply body]   or ["R"] when it starts
 * mode bit 0: the client sent a delimiter; bit 1: the message did not have
 * exactly one body frame (the worker answers with a protocol_error); bit 2:
 * it came from another node of the cluster (MODE_FORWARDED). After
 * the mode byte, the mode frame carries the request's place in its
 * connection's order (order.h): the connection's fpx_order and the request's
 * ticket, so that one connection's requests lock their indexes in the order
 * they came.
 *
 * While no worker is busy and no other request waits, the broker answers a
 * quick search itself (try_inline): a lone client's request then makes no
 * more thread hops than with a bare ZeroMQ echo.
 *
 * Shutdown: on the first SIGINT/SIGTERM the broker stops reading the front
 * socket and keeps forwarding replies while requests in flight finish, for
 * up to the shutdown timeout. A FAISS call cannot be interrupted, so a worker
 * still busy at the deadline is left running and the caller exits without
 * freeing what that worker may touch (main.c).
 */
#include "net.h"
#include "cluster/cluster.h"
#include "order.h"
#include "stats.h"
#include "util.h"
#include "zap.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MODE_DELIM 1
#define MODE_BADFRAMES 2
/* From another node of the cluster (src/cluster/forward.c), whose sockets'
 * routing ids start with FPX_FORWARD_ID_PREFIX: the worker checks the
 * cluster's token that follows (fpx_cluster_forwarded_id) before it treats
 * the request as forwarded (never forwarded again, shard names allowed); a
 * client that takes such an id without the token is a client. */
#define MODE_FORWARDED 4
/* mode byte, the connection's fpx_order, the request's ticket */
#define MODE_FRAME (1 + sizeof(fpx_order *) + sizeof(uint64_t))
#define BACKEND "inproc://fpx-workers"
#define MONITOR "inproc://fpx-front-monitor"
/* The kernel's receive buffer of each client connection (SO_RCVBUF). Left
 * to autotuning it grows to tcp_rmem's maximum (32 MB here), and ZeroMQ's
 * one I/O thread then copies a large message (an import, a big add) in
 * recv calls of that size: each runs in the kernel for milliseconds, which
 * a kernel without forced preemption does not interrupt, while every other
 * client's requests wait for that thread. 1 MiB keeps each call short and
 * still carries gigabytes per second on a local network (bench fig 7). */
#define FPX_FRONT_RCVBUF (1 << 20)
#define WORKER_READY 1
#define WORKER_REPLIED 2
#define WORKER_RESTARTED 3

typedef struct worker {
    fpx_server *s;
    void *ctx;
    int id;
    pthread_t thread;
} worker;

static void free_reply(void *data, void *hint) {
    (void)hint;
    free(data);
}

static int recv_more(void *sock) {
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
    return more;
}

/* Receives and drops the rest of a multipart message. */
static void drain(void *sock) {
    while (recv_more(sock)) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock, 0);
        zmq_msg_close(&m);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    void *sock = zmq_socket(w->ctx, ZMQ_DEALER);
    char ident[16];
    int linger = 0;
    snprintf(ident, sizeof ident, "w%d", w->id);
    zmq_setsockopt(sock, ZMQ_ROUTING_ID, ident, strlen(ident));
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, BACKEND) != 0 || zmq_send(sock, "R", 1, 0) != 1) {
        fpx_log(FPX_LOG_ERROR, "worker %d cannot start: %s", w->id, zmq_strerror(zmq_errno()));
        zmq_close(sock);
        return NULL;
    }
    for (;;) {
        zmq_msg_t id, mode, body;
        zmq_msg_init(&id);
        zmq_msg_init(&mode);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&id, sock, 0) < 0 || !recv_more(sock) ||
            zmq_msg_recv(&mode, sock, 0) < 0 || !recv_more(sock) ||
            zmq_msg_recv(&body, sock, 0) < 0) {
            int e = zmq_errno();
            zmq_msg_close(&id);
            zmq_msg_close(&mode);
            zmq_msg_close(&body);
            if (e == ETERM)
                break;
            drain(sock);
            continue;
        }
        drain(sock);
        uint8_t m = zmq_msg_size(&mode) >= 1 ? *(uint8_t *)zmq_msg_data(&mode) : 0;
        fpx_order *order = NULL;
        uint64_t ticket = 0;
        if (zmq_msg_size(&mode) == MODE_FRAME) {
            memcpy(&order, (uint8_t *)zmq_msg_data(&mode) + 1, sizeof order);
            memcpy(&ticket, (uint8_t *)zmq_msg_data(&mode) + 1 + sizeof order, sizeof ticket);
        }
        fpx_order_enter(order, ticket);
        uint8_t *reply;
        size_t rlen;
        int is_static = 0;
        if (m & MODE_BADFRAMES) {
            fpx_err err;
            fpx_err_set(&err, FPX_E_PROTOCOL,
                        "a request body must be exactly one frame after the envelope");
            if (fpx_build_error(&err, NULL, &reply, &rlen) != 0) {
                reply = NULL;
                rlen = 0;
            }
        } else {
            int fwd = (m & MODE_FORWARDED) &&
                      fpx_cluster_forwarded_id(w->s, zmq_msg_data(&id), zmq_msg_size(&id));
            fpx_server_handle_from(w->s, zmq_msg_data(&body), zmq_msg_size(&body), fwd, &reply,
                                   &rlen, &is_static);
        }
        fpx_order_leave(); /* before the reply: the broker may free order then */
        zmq_msg_close(&body);
        zmq_msg_t out;
        if (!reply)
            zmq_msg_init(&out);
        else if (is_static)
            zmq_msg_init_data(&out, reply, rlen, NULL, NULL);
        else
            zmq_msg_init_data(&out, reply, rlen, free_reply, NULL);
        int ok = zmq_msg_send(&id, sock, ZMQ_SNDMORE) >= 0 &&
                 zmq_msg_send(&mode, sock, ZMQ_SNDMORE) >= 0 && zmq_msg_send(&out, sock, 0) >= 0;
        if (!ok) {
            zmq_msg_close(&id);
            zmq_msg_close(&mode);
            zmq_msg_close(&out);
            if (zmq_errno() == ETERM)
                break;
        }
    }
    zmq_close(sock);
    return NULL;
}

/*
 * Fairness between connections. Each connection may have at most
 * --max-inflight-per-client requests at the workers; more of its requests
 * wait here, in arrival order, until one of its own is answered, so one
 * pipelining client cannot occupy every worker while others wait. What waits
 * here is bounded (per connection, in all, in bytes); past that a request is
 * answered limit_exceeded at once. The table has at most one entry per busy
 * worker: a connection with parked requests has its limit at the workers.
 * Each entry holds its connection's parked requests: only a reply of its own
 * lets one of them go, so the worker that sent the reply takes it at once.
 */
#define PARKED_PER_CLIENT 4096
#define PARKED_MAX 10000
#define PARKED_BYTES ((size_t)2 << 30)

typedef struct parked {
    zmq_msg_t id, body;
    uint8_t mode;
    struct parked *next;
} parked;

typedef struct client_load {
    uint8_t id[256]; /* ZeroMQ routing ids are at most 255 bytes */
    size_t len;
    int n;               /* at the workers */
    int parked;          /* waiting in the list below */
    parked *head, *tail; /* oldest first */
    fpx_order *order;    /* the order its requests lock in (order.h); freed with the entry */
    uint64_t tickets;    /* requests handed to the workers so far */
} client_load;

typedef struct clients {
    client_load *tab;
    int cap, used;
    int limit;
    int nparked; /* over all connections */
    size_t parked_bytes;
    int draining; /* stopping: parked requests are not started any more */
} clients;

static client_load *client_find(clients *c, zmq_msg_t *id) {
    size_t len = zmq_msg_size(id);
    for (int i = 0; i < c->used; i++)
        if (c->tab[i].len == len && !memcmp(c->tab[i].id, zmq_msg_data(id), len))
            return &c->tab[i];
    return NULL;
}

/* One more request of id at the workers: 0, or -1 when it holds its limit. */
static int client_take(clients *c, zmq_msg_t *id) {
    client_load *l = client_find(c, id);
    if (l && l->n >= c->limit)
        return -1;
    if (!l) {
        if (c->used == c->cap || zmq_msg_size(id) > sizeof l->id)
            return 0; /* cannot happen: one entry per busy worker */
        l = &c->tab[c->used++];
        l->len = zmq_msg_size(id);
        memcpy(l->id, zmq_msg_data(id), l->len);
        l->n = l->parked = 0;
        l->head = l->tail = NULL;
        l->order = fpx_order_new();
        l->tickets = 0;
    }
    l->n++;
    return 0;
}

/* One request of id is answered. Returns its entry while it has parked
 * requests, else NULL. */
static client_load *client_release(clients *c, zmq_msg_t *id) {
    client_load *l = client_find(c, id);
    if (!l)
        return NULL;
    if (--l->n == 0 && l->parked == 0) {
        fpx_order_free(l->order); /* its requests have all left their workers */
        *l = c->tab[--c->used];
        return NULL;
    }
    return l->parked ? l : NULL;
}

static void parked_free(parked *p) {
    zmq_msg_close(&p->id);
    zmq_msg_close(&p->body);
    free(p);
}

/* Sends a reply made here (reply taken) to req's client, in the envelope it
 * asked with. */
static void answer(void *front, parked *req, uint8_t *reply, size_t len, int is_static) {
    zmq_msg_t out;
    zmq_msg_init_data(&out, reply, len, is_static ? NULL : free_reply, NULL);
    zmq_msg_send(&req->id, front, ZMQ_SNDMORE);
    if (req->mode & MODE_DELIM)
        zmq_send(front, "", 0, ZMQ_SNDMORE);
    if (zmq_msg_send(&out, front, 0) < 0)
        zmq_msg_close(&out);
}

/* Answers a request at the front without a worker. */
static void refuse(void *front, parked *req, const char *why) {
    fpx_err err;
    fpx_err_set(&err, FPX_E_LIMIT, "%s", why);
    uint8_t *reply;
    size_t len;
    int is_static;
    fpx_server_refuse(zmq_msg_data(&req->body), zmq_msg_size(&req->body), &err, &reply, &len,
                      &is_static);
    answer(front, req, reply, len, is_static);
}

/* The largest request the network thread looks at itself: a search of a
 * few queries is far smaller, and a large body is not worth decoding twice. */
#define INLINE_MAX_BODY (64 << 10)

/*
 * While no worker is busy, a quick search is answered on this thread: the
 * request then makes the same two thread hops as with a bare ZeroMQ echo
 * (ZeroMQ's I/O thread to here and back) instead of four. Nothing else is
 * in flight, so no other request waits behind a worker for it; one arriving
 * meanwhile waits about --inline-search-us (longer only when the search's
 * params make it far slower than its index's recent searches, docs/protocol.md).
 * Not while another request is already waiting to be read: a burst (one
 * connection's pipelined searches, many clients at once) goes to the workers,
 * which spread it over the cores and batch it, instead of being answered one
 * after the other here. 1 when answered.
 */
static int try_inline(fpx_server *s, void *front, parked *req) {
    int events = 0;
    size_t elen = sizeof events;
    if (s->cfg->inline_search_us == 0 || (req->mode & ~MODE_DELIM) != 0 ||
        zmq_msg_size(&req->body) > INLINE_MAX_BODY ||
        zmq_getsockopt(front, ZMQ_EVENTS, &events, &elen) != 0 || (events & ZMQ_POLLIN))
        return 0;
    uint8_t *reply;
    size_t len;
    int is_static;
    if (fpx_server_handle_inline(s, zmq_msg_data(&req->body), zmq_msg_size(&req->body), &reply,
                                 &len, &is_static) != 0)
        return 0;
    fpx_stats_inline(); /* counted before the client can see the reply */
    answer(front, req, reply, len, is_static);
    return 1;
}

/* Reads one client message from front into *req: its routing id, body and
 * envelope mode. -1 when there was none. */
static int read_request(void *front, parked *req) {
    zmq_msg_t f1;
    zmq_msg_init(&req->id);
    zmq_msg_init(&req->body);
    zmq_msg_init(&f1);
    req->mode = 0;
    if (zmq_msg_recv(&req->id, front, 0) < 0) {
        zmq_msg_close(&req->id);
        zmq_msg_close(&req->body);
        zmq_msg_close(&f1);
        return -1;
    }
    int have1 = recv_more(front) && zmq_msg_recv(&f1, front, 0) >= 0;
    if (!have1) {
        req->mode = MODE_BADFRAMES;
    } else if (zmq_msg_size(&f1) == 0 && recv_more(front)) {
        req->mode = MODE_DELIM;
        zmq_msg_recv(&req->body, front, 0);
        if (recv_more(front))
            req->mode |= MODE_BADFRAMES;
    } else if (zmq_msg_size(&f1) == 0) {
        req->mode = MODE_DELIM | MODE_BADFRAMES; /* a delimiter and no body */
    } else {
        zmq_msg_move(&req->body, &f1); /* a DEALER without the delimiter */
        if (recv_more(front))
            req->mode |= MODE_BADFRAMES;
    }
    drain(front);
    zmq_msg_close(&f1);
    size_t plen = strlen(FPX_FORWARD_ID_PREFIX);
    if (zmq_msg_size(&req->id) > plen &&
        !memcmp(zmq_msg_data(&req->id), FPX_FORWARD_ID_PREFIX, plen))
        req->mode |= MODE_FORWARDED;
    return 0;
}

/* Hands req to the idle worker wid (req's messages are sent, i.e. taken),
 * with the next ticket of its connection l. */
static void to_worker(void *back, zmq_msg_t *wid, parked *req, client_load *l) {
    zmq_msg_t mm;
    fpx_order *order = l ? l->order : NULL;
    uint64_t ticket = order ? l->tickets++ : 0;
    zmq_msg_init_size(&mm, MODE_FRAME);
    uint8_t *mp = zmq_msg_data(&mm);
    mp[0] = req->mode;
    memcpy(mp + 1, &order, sizeof order);
    memcpy(mp + 1 + sizeof order, &ticket, sizeof ticket);
    zmq_msg_send(wid, back, ZMQ_SNDMORE);
    zmq_msg_send(&req->id, back, ZMQ_SNDMORE);
    zmq_msg_send(&mm, back, ZMQ_SNDMORE);
    zmq_msg_send(&req->body, back, 0);
}

/* Parks req (its messages move into the queue) behind its connection's
 * requests at the workers, or refuses it when too much waits already. */
static void park_or_refuse(void *front, clients *c, parked *req) {
    client_load *l = client_find(c, &req->id);
    size_t size = zmq_msg_size(&req->body);
    parked *p = NULL;
    if (l && l->parked < PARKED_PER_CLIENT && c->nparked < PARKED_MAX &&
        c->parked_bytes + size <= PARKED_BYTES)
        p = malloc(sizeof *p);
    if (!p) {
        refuse(front, req,
               "this connection has too many requests waiting (--max-inflight-per-client are "
               "being handled, more are queued): wait for their replies");
        zmq_msg_close(&req->id);
        zmq_msg_close(&req->body);
        return;
    }
    zmq_msg_init(&p->id);
    zmq_msg_init(&p->body);
    zmq_msg_move(&p->id, &req->id);
    zmq_msg_move(&p->body, &req->body);
    zmq_msg_close(&req->id);
    zmq_msg_close(&req->body);
    p->mode = req->mode;
    p->next = NULL;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
    l->parked++;
    c->nparked++;
    c->parked_bytes += size;
}

/* Hands l's oldest parked request to the worker wid. */
static void start_parked(void *back, zmq_msg_t *wid, clients *c, client_load *l) {
    parked *p = l->head;
    l->head = p->next;
    if (!l->head)
        l->tail = NULL;
    l->parked--;
    l->n++;
    c->nparked--;
    c->parked_bytes -= zmq_msg_size(&p->body);
    to_worker(back, wid, p, l);
    parked_free(p);
}

/* Gives the idle worker wid a request from front, unless it is answered
 * here while nothing is in flight. Returns 1 when the worker took one, 0
 * when there was none or it was parked or answered here. */
static int dispatch_next(fpx_server *s, void *front, void *back, zmq_msg_t *wid, clients *c,
                         int inflight) {
    parked req;
    if (read_request(front, &req) != 0)
        return 0;
    if (inflight == 0 && try_inline(s, front, &req)) {
        zmq_msg_close(&req.id);
        zmq_msg_close(&req.body);
        return 0;
    }
    if (client_take(c, &req.id) != 0) {
        park_or_refuse(front, c, &req);
        return 0;
    }
    to_worker(back, wid, &req, client_find(c, &req.id));
    zmq_msg_close(&req.id);
    zmq_msg_close(&req.body);
    return 1;
}

static void drop_parked(clients *c) {
    for (int i = 0; i < c->used; i++) {
        while (c->tab[i].head) {
            parked *p = c->tab[i].head;
            c->tab[i].head = p->next;
            parked_free(p);
        }
        if (c->tab[i].n == 0) /* else a worker still running may read it */
            fpx_order_free(c->tab[i].order);
    }
    c->nparked = 0;
}

/* A worker's message from back: ready signal or a reply for a client.
 * Returns WORKER_READY or WORKER_REPLIED when the worker is now idle, its id
 * in *wid; WORKER_RESTARTED when it replied and took a parked request of the
 * same connection at once; 0 for anything else. */
static int handle_worker_msg(void *front, void *back, zmq_msg_t *wid, clients *cl) {
    if (zmq_msg_recv(wid, back, 0) < 0)
        return 0;
    zmq_msg_t id, mode, body;
    zmq_msg_init(&id);
    zmq_msg_init(&mode);
    zmq_msg_init(&body);
    int idle = 0;
    if (recv_more(back) && zmq_msg_recv(&id, back, 0) >= 0) {
        if (!recv_more(back)) {
            idle = WORKER_READY; /* ["R"]: a worker that just started */
        } else if (zmq_msg_recv(&mode, back, 0) >= 0 && recv_more(back) &&
                   zmq_msg_recv(&body, back, 0) >= 0) {
            idle = WORKER_REPLIED;
            client_load *waiting = client_release(cl, &id);
            uint8_t m = zmq_msg_size(&mode) >= 1 ? *(uint8_t *)zmq_msg_data(&mode) : 0;
            /* A client that went away makes ROUTER drop the reply: fine. */
            zmq_msg_send(&id, front, ZMQ_SNDMORE);
            if (m & MODE_DELIM)
                zmq_send(front, "", 0, ZMQ_SNDMORE);
            zmq_msg_send(&body, front, 0);
            if (waiting && !cl->draining) {
                start_parked(back, wid, cl, waiting);
                idle = WORKER_RESTARTED;
            }
        }
    }
    drain(back);
    zmq_msg_close(&id);
    zmq_msg_close(&mode);
    zmq_msg_close(&body);
    return idle;
}

/* Reads one message from back: a reply goes to its client and the worker
 * joins the idle stack. */
static void take_worker_msg(void *front, void *back, zmq_msg_t *idle, int *nidle, int started,
                            int *inflight, clients *cl) {
    zmq_msg_t wid;
    zmq_msg_init(&wid);
    int r = handle_worker_msg(front, back, &wid, cl);
    if (r == WORKER_REPLIED)
        (*inflight)--;
    if ((r == WORKER_READY || r == WORKER_REPLIED) && *nidle < started) {
        zmq_msg_init(&idle[*nidle]);
        zmq_msg_move(&idle[(*nidle)++], &wid);
    }
    zmq_msg_close(&wid);
}

/* Starts worker n, with SIGINT/SIGTERM blocked in it (the broker's zmq_poll
 * must be the one to see EINTR). 1 when it started. */
static int start_worker(fpx_server *s, void *ctx, worker *ws, int n) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    ws[n] = (worker){s, ctx, n, 0};
    int ok = pthread_create(&ws[n].thread, NULL, worker_main, &ws[n]) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ok;
}

/*
 * Every worker is busy and some only wait for an index's lock: one busy index
 * (a long add holds it, requests for it pile up) would otherwise hold every
 * worker while other indexes' requests wait in the queue. One more worker is
 * started (it announces itself idle); the pool never shrinks. Returns 1 when
 * it started.
 */
static int add_worker(fpx_server *s, void *ctx, worker *ws, int n) {
    int ok = start_worker(s, ctx, ws, n);
    if (ok)
        fpx_log(FPX_LOG_INFO,
                "all %d workers busy, some waiting for a busy index: started one more", n);
    return ok;
}

/* After the stop signal: no more requests are read, but the replies of those
 * in flight are still delivered, for up to timeout_s seconds. Returns the
 * number still running at the deadline. A second signal does not come here:
 * it ends the process at once (main.c). */
static int finish_in_flight(void *front, void *back, zmq_msg_t *idle, int *nidle, int started,
                            clients *cl, int *inflight, int timeout_s) {
    if (*inflight > 0)
        fpx_log(FPX_LOG_INFO,
                "shutting down: taking no more requests, waiting up to %d s for %d in flight",
                timeout_s, *inflight);
    else
        fpx_log(FPX_LOG_INFO, "shutting down");
    uint64_t deadline = fpx_now_ns() + (uint64_t)timeout_s * 1000000000ull;
    while (*inflight > 0) {
        uint64_t now = fpx_now_ns();
        if (now >= deadline)
            break;
        uint64_t left_ms = (deadline - now + 999999) / 1000000;
        zmq_pollitem_t it = {back, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, left_ms < 500 ? (long)left_ms : 500);
        if (rc < 0 && zmq_errno() != EINTR)
            break;
        if (rc > 0 && (it.revents & ZMQ_POLLIN))
            take_worker_msg(front, back, idle, nidle, started, inflight, cl);
    }
    return *inflight;
}

/* A socket that reports the front socket's connections opening and closing
 * (for the connections gauge), or NULL. */
static void *monitor_front(void *ctx, void *front) {
    if (zmq_socket_monitor(front, MONITOR, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0)
        return NULL;
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    if (mon && zmq_connect(mon, MONITOR) == 0)
        return mon;
    if (mon)
        zmq_close(mon);
    zmq_socket_monitor(front, NULL, 0);
    return NULL;
}

/* Reads one monitor event (two frames: its id and value, then the
 * endpoint) and counts it. */
static void take_monitor_event(void *mon) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return;
    }
    if (zmq_msg_size(&m) >= 2) {
        uint16_t ev;
        memcpy(&ev, zmq_msg_data(&m), sizeof ev);
        if (ev == ZMQ_EVENT_ACCEPTED)
            fpx_stats_connection(1);
        else if (ev == ZMQ_EVENT_DISCONNECTED)
            fpx_stats_connection(-1);
    }
    int more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    if (more)
        drain(mon);
}

int fpx_net_run(fpx_server *s, volatile sig_atomic_t *stop) {
    const fpx_config *cfg = s->cfg;
    /* Worker threads and ZeroMQ's I/O threads must not take SIGINT/SIGTERM:
     * the broker's zmq_poll has to see EINTR. Block them while creating. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);

    void *ctx = zmq_ctx_new();
    void *front = zmq_socket(ctx, ZMQ_ROUTER);
    void *back = zmq_socket(ctx, ZMQ_ROUTER);
    int64_t maxmsg = (int64_t)cfg->max_message_size;
    int linger = 0, hwm = 10000;
    zmq_setsockopt(front, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(front, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(front, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(front, ZMQ_SNDHWM, &hwm, sizeof hwm);
    int rcvbuf = FPX_FRONT_RCVBUF;
    zmq_setsockopt(front, ZMQ_RCVBUF, &rcvbuf, sizeof rcvbuf);
    zmq_setsockopt(back, ZMQ_LINGER, &linger, sizeof linger);

    /* Transport security, before the bind so no connection escapes it:
     * CurveZMQ when a key was given, and protected mode (loopback clients
     * only, enforced by the ZAP handler) when there are no API keys. */
    fpx_zap *zap = NULL;
    int protected_mode = !fpx_auth_enabled(s->auth) && !cfg->allow_remote_unauthenticated;
    int curve = cfg->curve_secret_key[0] != 0, as_server = 1, sec_rc = 0;
    fpx_err zerr = {0};
    if (curve)
        sec_rc = zmq_setsockopt(front, ZMQ_CURVE_SERVER, &as_server, sizeof as_server) ||
                 zmq_setsockopt(front, ZMQ_CURVE_SECRETKEY, cfg->curve_secret_key,
                                sizeof cfg->curve_secret_key);
    if (sec_rc == 0 && protected_mode)
        sec_rc = zmq_setsockopt(front, ZMQ_ZAP_DOMAIN, FPX_ZAP_DOMAIN, strlen(FPX_ZAP_DOMAIN)) ||
                 fpx_zap_start(ctx, &zap, &zerr);
    if (sec_rc != 0) {
        fpx_log(FPX_LOG_ERROR, "cannot secure the front socket: %s",
                zerr.msg[0] ? zerr.msg : zmq_strerror(zmq_errno()));
        zmq_close(front);
        zmq_close(back);
        zmq_ctx_term(ctx);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return -1;
    }

    char endpoint[300];
    if (cfg->port == 0)
        snprintf(endpoint, sizeof endpoint, "tcp://%s:*", cfg->bind_address);
    else
        snprintf(endpoint, sizeof endpoint, "tcp://%s:%d", cfg->bind_address, cfg->port);
    if (zmq_bind(front, endpoint) != 0 || zmq_bind(back, BACKEND) != 0) {
        fpx_log(FPX_LOG_ERROR, "cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(front);
        zmq_close(back);
        fpx_zap_stop(zap);
        zmq_ctx_term(ctx);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return -1;
    }
    char bound[300];
    size_t blen = sizeof bound;
    zmq_getsockopt(front, ZMQ_LAST_ENDPOINT, bound, &blen);
    if (s->cluster) /* what the other nodes forward requests to, from now on */
        fpx_cluster_listening(s, bound);
    void *mon = cfg->metrics_port >= 0 ? monitor_front(ctx, front) : NULL;

    int nw = cfg->workers;
    /* More workers are started while every one is busy and some of them only
     * wait for a busy index's lock, up to this many (see below). */
    int maxw = nw * 4 < 256 ? nw * 4 : 256; /* --workers is at most 256 */
    worker *ws = calloc((size_t)maxw, sizeof *ws);
    int started = 0;
    while (ws && started < nw && start_worker(s, ctx, ws, started))
        started++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started == 0) {
        fpx_log(FPX_LOG_ERROR, "cannot start worker threads");
        free(ws);
        zmq_close(front);
        zmq_close(back);
        fpx_zap_stop(zap);
        zmq_ctx_term(ctx);
        return -1;
    }

    char auth[200], transport[120];
    if (fpx_auth_enabled(s->auth))
        snprintf(auth, sizeof auth, "on (%zu tenants)", fpx_auth_tenant_count(s->auth));
    else if (protected_mode)
        snprintf(auth, sizeof auth,
                 "off, protected mode: loopback clients only (set FAISS_PROXY_API_KEYS, or "
                 "--allow-remote-unauthenticated to serve other addresses without auth)");
    else
        snprintf(auth, sizeof auth, "off, open to every address (--allow-remote-unauthenticated)");
    if (curve)
        snprintf(transport, sizeof transport, "CurveZMQ, server public key %s",
                 cfg->curve_public_key);
    else
        snprintf(transport, sizeof transport, "plain (unencrypted)");
    fpx_log(!fpx_auth_enabled(s->auth) && !protected_mode ? FPX_LOG_WARN : FPX_LOG_INFO,
            "faiss-proxy-server %s listening on %s, data dir %s, auth %s, transport %s, %d "
            "workers, max message %zu bytes",
            FPX_VERSION, bound, cfg->data_dir, auth, transport, started, cfg->max_message_size);

    /* Idle workers, as a stack of their routing ids. */
    zmq_msg_t *idle = calloc((size_t)maxw, sizeof *idle);
    int nidle = 0, inflight = 0;
    clients cl = {calloc((size_t)maxw, sizeof(client_load)),
                  maxw,
                  0,
                  (int)cfg->max_inflight_per_client,
                  0,
                  0,
                  0};
    int failed = !idle || !cl.tab;
    if (failed) {
        fpx_log(FPX_LOG_ERROR, "out of memory starting the network loop");
        free(idle);
        idle = NULL;
    }
    fpx_stats_set_ready(idle != NULL);
    while (!*stop && idle) {
        /* the workers, the connection monitor, and the clients while a worker is idle */
        zmq_pollitem_t items[3] = {{back, 0, ZMQ_POLLIN, 0}, {front, 0, ZMQ_POLLIN, 0}};
        int nitems = nidle > 0 ? 2 : 1, mi = -1;
        if (mon) {
            mi = nitems++;
            items[mi] = (zmq_pollitem_t){mon, 0, ZMQ_POLLIN, 0};
        }
        int rc = zmq_poll(items, nitems, 500);
        if (rc < 0) {
            if (zmq_errno() == EINTR)
                continue;
            fpx_log(FPX_LOG_ERROR, "poll failed: %s", zmq_strerror(zmq_errno()));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            take_worker_msg(front, back, idle, &nidle, started, &inflight, &cl);
        if (nidle == 0 && started < maxw && atomic_load(&s->blocked) > 0)
            started += add_worker(s, ctx, ws, started);
        if (mi >= 0 && (items[mi].revents & ZMQ_POLLIN))
            take_monitor_event(mon);
        int front_ready = nidle > 0 && (items[1].revents & ZMQ_POLLIN);
        if (front_ready && dispatch_next(s, front, back, &idle[nidle - 1], &cl, inflight)) {
            nidle--;
            zmq_msg_close(&idle[nidle]);
            inflight++;
        }
        fpx_stats_workers(started, started - nidle);
    }
    fpx_stats_set_ready(0); /* stopping: no new work, please */
    if (mon) {
        zmq_socket_monitor(front, NULL, 0);
        zmq_close(mon);
    }
    cl.draining = 1;
    int busy = idle ? finish_in_flight(front, back, idle, &nidle, started, &cl, &inflight,
                                       cfg->shutdown_timeout)
                    : 0;
    for (int i = 0; i < nidle; i++)
        zmq_msg_close(&idle[i]);
    free(idle);
    drop_parked(&cl); /* never handled: like requests still in ZeroMQ's queue */
    free(cl.tab);
    zmq_close(front);
    zmq_close(back);
    /* Unblocks the idle workers (ETERM). */
    zmq_ctx_shutdown(ctx);
    if (busy) {
        /* Joining would wait for the FAISS call; zmq_ctx_term would wait for
         * the busy workers' sockets. Both stay: the process is about to end. */
        fpx_log(FPX_LOG_WARN,
                "%d request(s) still running after the shutdown timeout of %d s: not waiting for "
                "them (none was acknowledged; a write among them that reached its log is "
                "replayed whole at the next start)",
                inflight, cfg->shutdown_timeout);
        return FPX_NET_WORKERS_BUSY;
    }
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    fpx_zap_stop(zap);
    zmq_ctx_term(ctx);
    free(ws);
    return failed ? -1 : 0;
}
