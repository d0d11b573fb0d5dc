/*
 * test_client_limits.c - libfaissproxy against a server with a small message
 * size limit: test_client_limits ENDPOINT LIMIT. Run by tests/integration/
 * test_transport.py against a server started with --max-message-size LIMIT.
 *
 * A request over the limit would be dropped by the server's transport with
 * no reply. The library cuts adds and searches into requests under it; what
 * cannot be cut (a train, a single vector, a raw body over the limit) it
 * refuses itself, at once, with errtype limit_exceeded, and the handle (and
 * the server) go on working.
 * Exit status 0 when every check passed.
 */
#include <faissproxy/client.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* The call failed with the given wire error kind (or succeeded: kind ""). */
#define EXPECT(c, call, kind)                                                                      \
    do {                                                                                           \
        checks++;                                                                                  \
        int rc_ = (call);                                                                          \
        if ((rc_ == 0) != (kind[0] == 0) || strcmp(fpx_client_errtype(c), kind) != 0) {            \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: %s: expected '%s', got rc %d '%s': %s\n", __FILE__, __LINE__,  \
                    #call, kind, rc_, fpx_client_errtype(c), fpx_client_errstr(c));                \
        }                                                                                          \
    } while (0)

enum { D = 64 };

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: test_client_limits ENDPOINT LIMIT\n");
        return 2;
    }
    size_t limit = strtoull(argv[2], NULL, 10);
    size_t rows_over = limit / (D * sizeof(float)) + 1; /* their vectors alone exceed it */
    size_t rows_under = limit / (D * sizeof(float)) / 2;
    float *x = calloc(rows_over * D, sizeof *x);
    int64_t *I = calloc(rows_over, sizeof *I);
    float *Dist = calloc(rows_over, sizeof *Dist);
    fpx_client *c = fpx_client_new(argv[1], NULL, NULL);
    if (!x || !I || !Dist || !c) {
        fprintf(stderr, "out of memory or no client\n");
        return 1;
    }
    for (size_t i = 0; i < rows_over * D; i++) /* distinct rows: each its own nearest */
        x[i] = (float)(i / D) + (float)(i % D) / D;
    /* Long enough that the test would notice an unanswered request (the
     * server's transport dropping it) as a connection_error, not a hang. */
    fpx_client_set_timeout(c, 20000);

    /* The first request larger than any limit makes the handle ask for it;
     * an add over it goes in parts under it, in order. */
    EXPECT(c, fpx_client_create_index(c, "lim", D, NULL, NULL, NULL), "");
    EXPECT(c, fpx_client_add(c, "lim", (int64_t)rows_over, D, x, NULL, NULL, NULL), "");
    fpx_index_info info;
    EXPECT(c, fpx_client_get_index_info(c, "lim", &info), "");
    CHECK(info.ntotal == (int64_t)rows_over);
    /* a search over it too, each query answered in its place */
    EXPECT(c, fpx_client_search(c, "lim", (int64_t)rows_over, D, x, 1, NULL, Dist, I), "");
    size_t misplaced = 0;
    for (size_t i = 0; i < rows_over; i++)
        misplaced += I[i] != (int64_t)i;
    CHECK(misplaced == 0);
    EXPECT(c, fpx_client_add(c, "lim", (int64_t)rows_under, D, x, NULL, NULL, NULL), "");
    /* a train cannot be cut: it needs all its vectors at once */
    EXPECT(c, fpx_client_train(c, "lim", (int64_t)rows_over, D, x), "limit_exceeded");
    CHECK(strstr(fpx_client_errstr(c), "max_message_size") != NULL);
    CHECK(strstr(fpx_client_errstr(c), argv[2]) != NULL);
    /* nor can one vector larger than the limit: refused, nothing sent */
    int64_t wide = (int64_t)(limit / sizeof(float)) + 1;
    EXPECT(c, fpx_client_create_index(c, "wide", wide, NULL, NULL, NULL), "");
    float *w = calloc((size_t)wide, sizeof *w);
    CHECK(w != NULL);
    EXPECT(c, fpx_client_add(c, "wide", 1, wide, w, NULL, NULL, NULL), "limit_exceeded");
    CHECK(strstr(fpx_client_errstr(c), "max_message_size") != NULL);
    EXPECT(c, fpx_client_get_index_info(c, "wide", &info), "");
    CHECK(info.ntotal == 0);
    EXPECT(c, fpx_client_delete_index(c, "wide"), "");
    free(w);
    EXPECT(c, fpx_client_search(c, "lim", 1, D, x + D, 1, NULL, Dist, I), "");
    CHECK(I[0] == 1);

    /* A raw body over the limit too. */
    uint8_t *reply = NULL;
    size_t rlen = 0;
    EXPECT(c, fpx_client_request_raw(c, x, limit + 1, &reply, &rlen), "limit_exceeded");
    CHECK(reply == NULL);

    /* A ping refreshes the limit; a body of exactly the limit is still sent
     * (here: garbage, answered with a protocol_error). */
    EXPECT(c, fpx_client_ping(c), "");
    EXPECT(c, fpx_client_request_raw(c, x, limit, &reply, &rlen), "");
    CHECK(reply && rlen > 0 && test_contains(reply, rlen, "protocol_error"));
    free(reply);

    EXPECT(c, fpx_client_get_index_info(c, "lim", &info), "");
    CHECK(info.ntotal == (int64_t)(rows_over + rows_under));
    EXPECT(c, fpx_client_delete_index(c, "lim"), "");
    fpx_client_free(c);
    free(x);
    free(I);
    free(Dist);
    return CHECK_STATUS("test_client_limits");
}
