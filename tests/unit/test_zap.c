/*
 * test_zap.c - protected mode's policy: which peer addresses count as
 * loopback, and the ZAP handler's answers to real ZAP requests sent to it
 * over inproc in a real ZeroMQ context.
 */
#include "server/zap.h"

#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "check.h"

/* Sends one ZAP request for address (NULL mechanism) and returns the status
 * code of the reply in status (4 bytes). */
static int ask(void *req, const char *address, char *status) {
    const char *frames[] = {"1.0", "42", FPX_ZAP_DOMAIN, address, "id", "NULL"};
    for (int i = 0; i < 6; i++)
        if (zmq_send(req, frames[i], strlen(frames[i]), i < 5 ? ZMQ_SNDMORE : 0) < 0)
            return -1;
    char buf[64];
    int n, i = 0, more = 1;
    while (more) {
        n = zmq_recv(req, buf, sizeof buf - 1, 0);
        if (n < 0)
            return -1;
        buf[n < (int)sizeof buf - 1 ? n : (int)sizeof buf - 1] = 0;
        if (i == 1 && strcmp(buf, "42") != 0) /* the request id comes back */
            return -1;
        if (i == 2 && n == 3)
            memcpy(status, buf, 4);
        i++;
        int m = 0;
        size_t sz = sizeof m;
        zmq_getsockopt(req, ZMQ_RCVMORE, &m, &sz);
        more = m;
    }
    return i == 6 ? 0 : -1;
}

int main(void) {
    /* loopback */
    CHECK(fpx_zap_loopback("127.0.0.1"));
    CHECK(fpx_zap_loopback("127.0.0.2"));
    CHECK(fpx_zap_loopback("127.255.255.254"));
    CHECK(fpx_zap_loopback("::1"));
    CHECK(fpx_zap_loopback("0:0:0:0:0:0:0:1"));
    CHECK(fpx_zap_loopback("::ffff:127.0.0.1"));
    /* everything else */
    CHECK(!fpx_zap_loopback("128.0.0.1"));
    CHECK(!fpx_zap_loopback("126.255.255.255"));
    CHECK(!fpx_zap_loopback("10.213.7.1"));
    CHECK(!fpx_zap_loopback("192.168.1.10"));
    CHECK(!fpx_zap_loopback("0.0.0.0"));
    CHECK(!fpx_zap_loopback("255.255.255.255"));
    CHECK(!fpx_zap_loopback("::"));
    CHECK(!fpx_zap_loopback("::2"));
    CHECK(!fpx_zap_loopback("fe80::1"));
    CHECK(!fpx_zap_loopback("::ffff:10.0.0.1"));
    CHECK(!fpx_zap_loopback("::127.0.0.1")); /* IPv4-compatible, not mapped */
    CHECK(!fpx_zap_loopback("2001:db8::1"));
    /* text that is not one address: refused, never guessed at */
    CHECK(!fpx_zap_loopback(""));
    CHECK(!fpx_zap_loopback(NULL));
    CHECK(!fpx_zap_loopback("localhost"));
    CHECK(!fpx_zap_loopback("127.0.0.1:5555"));
    CHECK(!fpx_zap_loopback("127.0.0.1 "));
    CHECK(!fpx_zap_loopback("127.1"));
    CHECK(!fpx_zap_loopback("::1%lo"));
    CHECK(!fpx_zap_loopback("127.0.0.1.evil.example"));

    /* The handler thread answers ZAP requests by that policy. */
    void *ctx = zmq_ctx_new();
    fpx_zap *z = NULL;
    fpx_err err;
    CHECK(fpx_zap_start(ctx, &z, &err) == 0);
    void *req = zmq_socket(ctx, ZMQ_REQ);
    int timeout = 10000;
    zmq_setsockopt(req, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    CHECK(zmq_connect(req, "inproc://zeromq.zap.01") == 0);
    char status[4] = "";
    CHECK(ask(req, "127.0.0.1", status) == 0 && !strcmp(status, "200"));
    CHECK(ask(req, "::1", status) == 0 && !strcmp(status, "200"));
    for (int i = 0; i < 100; i++) /* refusals keep coming; only their logging is limited */
        CHECK(ask(req, "10.213.7.1", status) == 0 && !strcmp(status, "400"));
    CHECK(ask(req, "", status) == 0 && !strcmp(status, "400"));
    zmq_close(req);
    /* A second handler cannot bind the same endpoint: the error says so. */
    fpx_zap *z2 = NULL;
    CHECK(fpx_zap_start(ctx, &z2, &err) == -1 && z2 == NULL && strstr(err.msg, "ZAP"));
    fpx_zap_stop(z);
    fpx_zap_stop(NULL);
    zmq_ctx_term(ctx);
    return CHECK_STATUS("test_zap");
}
