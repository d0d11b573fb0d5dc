/*
 * echo.c - fpx-echo, the floor of every network figure in the benchmarks.
 *
 * The least a ZeroMQ server can do for a request: one ROUTER socket, one
 * thread, receive the client's envelope and body, send back a reply body of
 * the size the real server would send. The benchmark first primes the reply
 * with a two-frame body [FPX_ECHO_PRIME][reply bytes]; every other request is
 * answered with those bytes (a reference-counted copy of the message, so no
 * byte is copied per reply).
 *
 *   fpx-echo [ENDPOINT]   default tcp://127.0.0.1:* (a free port); prints
 *                         "listening on <endpoint>" and serves until SIGTERM.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#define FPX_ECHO_PRIME "fpx-echo-prime"

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    const char *endpoint = argc > 1 ? argv[1] : "tcp://127.0.0.1:*";
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(sock, endpoint) != 0) {
        fprintf(stderr, "fpx-echo: cannot bind %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    char bound[256];
    size_t blen = sizeof bound;
    zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, bound, &blen);
    printf("fpx-echo listening on %s\n", bound);
    fflush(stdout);

    zmq_msg_t reply;
    zmq_msg_init(&reply);
    while (!stop) {
        /* [client id][empty delimiter][body] (+ [reply] when priming) */
        zmq_msg_t part[4];
        int n = 0, more = 1;
        while (more && n < 4) {
            zmq_msg_init(&part[n]);
            if (zmq_msg_recv(&part[n], sock, 0) < 0) {
                zmq_msg_close(&part[n]);
                break;
            }
            more = zmq_msg_more(&part[n]);
            n++;
        }
        if (more || n < 3) { /* interrupted, or not a request we know */
            for (int i = 0; i < n; i++)
                zmq_msg_close(&part[i]);
            continue;
        }
        zmq_msg_t out;
        zmq_msg_init(&out);
        if (n == 4 && zmq_msg_size(&part[2]) == strlen(FPX_ECHO_PRIME) &&
            !memcmp(zmq_msg_data(&part[2]), FPX_ECHO_PRIME, strlen(FPX_ECHO_PRIME))) {
            zmq_msg_copy(&reply, &part[3]); /* answer the prime with an empty body */
        } else {
            zmq_msg_copy(&out, &reply);
        }
        zmq_msg_send(&part[0], sock, ZMQ_SNDMORE);
        zmq_msg_send(&part[1], sock, ZMQ_SNDMORE);
        zmq_msg_send(&out, sock, 0);
        for (int i = 2; i < n; i++)
            zmq_msg_close(&part[i]);
    }
    zmq_msg_close(&reply);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}
