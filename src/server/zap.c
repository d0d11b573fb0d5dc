/*
 * zap.c - the ZAP handler of protected mode.
 *
 * ZAP (ZeroMQ RFC 27) request: [version "1.0"][request id][domain][address]
 * [routing id][mechanism][credentials...]; the handler answers
 * [version][request id][status "200" or "400"][status text][user id]
 * [metadata]. libzmq asks for every connection to a socket that has a ZAP
 * domain (NULL mechanism) or CURVE security, on a REP socket bound to
 * inproc://zeromq.zap.01 in the same context. A refused peer gets a
 * handshake ERROR and its connection is closed: it never reaches a worker and
 * never gets a reply.
 *
 * A refused client's ZeroMQ socket keeps reconnecting (every 100 ms by
 * default), so the log line that explains the refusal is rate-limited: once
 * per address per minute, and at most FPX_ZAP_LOG_BURST lines a minute for
 * all addresses together (a scan from many addresses cannot flood the log).
 */
#include "zap.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define FPX_ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define FPX_ZAP_FRAMES 16   /* more than any mechanism sends; extra ones are dropped */
#define FPX_ZAP_REMEMBER 64 /* addresses whose refusal was logged recently */
#define FPX_ZAP_LOG_EVERY_NS 60000000000ull /* one line per address per minute */
#define FPX_ZAP_LOG_BURST 20                /* lines a minute, all addresses together */
#define FPX_ZAP_POLL_MS 200                 /* how soon a stop request is seen */

typedef struct logged {
    char addr[INET6_ADDRSTRLEN + 1];
    uint64_t at_ns;
} logged;

struct fpx_zap {
    void *sock;
    pthread_t thread;
    atomic_int stop;
    logged seen[FPX_ZAP_REMEMBER];
    uint64_t window_ns; /* start of the current minute of the global budget */
    int window_lines;
    unsigned long unlogged; /* refusals not logged since the last line */
};

int fpx_zap_loopback(const char *address) {
    struct in_addr v4;
    struct in6_addr v6;
    if (!address)
        return 0;
    if (inet_pton(AF_INET, address, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, address, &v6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&v6))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
    }
    return 0;
}

/* Whether to log the refusal of addr now (the rate limit above). */
static int should_log(fpx_zap *z, const char *addr) {
    uint64_t now = fpx_now_ns();
    logged *slot = NULL, *oldest = &z->seen[0];
    for (int i = 0; i < FPX_ZAP_REMEMBER && !slot; i++) {
        logged *e = &z->seen[i];
        if (!e->addr[0] || !strcmp(e->addr, addr))
            slot = e;
        else if (e->at_ns < oldest->at_ns)
            oldest = e;
    }
    if (slot && slot->addr[0] && now - slot->at_ns < FPX_ZAP_LOG_EVERY_NS)
        return 0;
    if (!slot)
        slot = oldest; /* the table is full: forget the longest-quiet address */
    if (now - z->window_ns >= FPX_ZAP_LOG_EVERY_NS) {
        z->window_ns = now;
        z->window_lines = 0;
    }
    if (z->window_lines >= FPX_ZAP_LOG_BURST)
        return 0;
    z->window_lines++;
    snprintf(slot->addr, sizeof slot->addr, "%s", addr);
    slot->at_ns = now;
    return 1;
}

/* Copies frame f as a NUL-terminated string into dst (truncated to cap). */
static void frame_str(zmq_msg_t *f, char *dst, size_t cap) {
    size_t n = zmq_msg_size(f);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, zmq_msg_data(f), n);
    dst[n] = 0;
}

static void answer(fpx_zap *z, zmq_msg_t *frames, int nframes) {
    char version[8] = "", address[INET6_ADDRSTRLEN + 1] = "";
    if (nframes >= 6) {
        frame_str(&frames[0], version, sizeof version);
        frame_str(&frames[3], address, sizeof address);
    }
    int ok = !strcmp(version, "1.0") && fpx_zap_loopback(address);
    if (!ok && nframes >= 6) {
        if (should_log(z, address)) {
            char quiet[80] = "";
            if (z->unlogged)
                snprintf(quiet, sizeof quiet, " (%lu refusals not logged since the last line)",
                         z->unlogged);
            fpx_log(FPX_LOG_WARN,
                    "refused a connection from %s: no API keys are configured, so only "
                    "loopback clients are served (protected mode). Set FAISS_PROXY_API_KEYS, "
                    "or start with --allow-remote-unauthenticated "
                    "(FAISS_PROXY_ALLOW_REMOTE_UNAUTHENTICATED=1) to serve every address "
                    "without authentication%s",
                    address[0] ? address : "an unknown address", quiet);
            z->unlogged = 0;
        } else {
            z->unlogged++;
        }
    }
    /* A reply echoes the request id (frame 1); without one there is nothing
     * libzmq could match it with, and it fails the handshake on its own. */
    const char *status = ok ? "200" : "400";
    const char *text = ok ? "OK" : "protected mode: loopback clients only";
    zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
    if (nframes >= 2)
        zmq_msg_send(&frames[1], z->sock, ZMQ_SNDMORE);
    else
        zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
    zmq_send(z->sock, status, 3, ZMQ_SNDMORE);
    zmq_send(z->sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
    zmq_send(z->sock, "", 0, 0);
}

static void *zap_main(void *arg) {
    fpx_zap *z = arg;
    while (!atomic_load(&z->stop)) {
        zmq_pollitem_t it = {z->sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, FPX_ZAP_POLL_MS);
        if (rc < 0 && zmq_errno() == ETERM)
            break;
        if (rc <= 0)
            continue;
        zmq_msg_t frames[FPX_ZAP_FRAMES], extra;
        int n = 0, more = 1, failed = 0;
        while (more) {
            zmq_msg_t *f = n < FPX_ZAP_FRAMES ? &frames[n] : &extra;
            zmq_msg_init(f);
            if (zmq_msg_recv(f, z->sock, 0) < 0) {
                zmq_msg_close(f);
                failed = 1;
                break;
            }
            more = zmq_msg_more(f);
            if (f == &extra)
                zmq_msg_close(f);
            else
                n++;
        }
        if (!failed)
            answer(z, frames, n);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
        if (failed && zmq_errno() == ETERM)
            break;
    }
    zmq_close(z->sock);
    return NULL;
}

int fpx_zap_start(void *ctx, fpx_zap **out, fpx_err *err) {
    *out = NULL;
    fpx_zap *z = calloc(1, sizeof *z);
    if (!z)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    int linger = 0;
    z->sock = zmq_socket(ctx, ZMQ_REP);
    if (!z->sock || zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(z->sock, FPX_ZAP_ENDPOINT) != 0) {
        fpx_err_set(err, FPX_E_INTERNAL, "cannot bind the ZAP handler: %s",
                    zmq_strerror(zmq_errno()));
        if (z->sock)
            zmq_close(z->sock);
        free(z);
        return -1;
    }
    /* The socket was made in this thread and is used only by the new one
     * from here on; pthread_create is the memory barrier ZeroMQ asks for. */
    if (pthread_create(&z->thread, NULL, zap_main, z) != 0) {
        zmq_close(z->sock);
        free(z);
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot start the ZAP handler thread");
    }
    *out = z;
    return 0;
}

void fpx_zap_stop(fpx_zap *z) {
    if (!z)
        return;
    atomic_store(&z->stop, 1);
    pthread_join(z->thread, NULL);
    free(z);
}
