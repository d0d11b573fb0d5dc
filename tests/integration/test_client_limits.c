/*
 * test_client_limits.c - libfaissproxy against a server with a small message
 * size limit: test_client_limits ENDPOINT LIMIT. Run by tests/integration/
 * test_transport.py against a server started with --max-message-size LIMIT.
 *
 * A request over the limit would be dropped by the server's transport with
 * no reply; the library must refuse it itself, at once, with errtype
 * limit_exceeded, and the handle (and the server) must go on working.
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
    for (size_t i = 0; i < rows_over * D; i++)
        x[i] = (float)(i % 97) / 97.0f;
    /* Long enough that the test would notice an unanswered request (the
     * server's transport dropping it) as a connection_error, not a hang. */
    fpx_client_set_timeout(c, 20000);

    /* The first request larger than any limit makes the handle ask for it. */
    EXPECT(c, fpx_client_create_index(c, "lim", D, NULL, NULL, NULL), "");
    EXPECT(c, fpx_client_add(c, "lim", (int64_t)rows_over, D, x, NULL, NULL, NULL),
           "limit_exceeded");
    CHECK(strstr(fpx_client_errstr(c), "max_message_size") != NULL);
    CHECK(strstr(fpx_client_errstr(c), argv[2]) != NULL);
    /* Nothing was sent or added, and the handle goes on working. */
    fpx_index_info info;
    EXPECT(c, fpx_client_get_index_info(c, "lim", &info), "");
    CHECK(info.ntotal == 0);
    EXPECT(c, fpx_client_add(c, "lim", (int64_t)rows_under, D, x, NULL, NULL, NULL), "");
    EXPECT(c, fpx_client_search(c, "lim", (int64_t)rows_over, D, x, 1, NULL, Dist, I),
           "limit_exceeded");
    EXPECT(c, fpx_client_train(c, "lim", (int64_t)rows_over, D, x), "limit_exceeded");
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
    CHECK(info.ntotal == (int64_t)rows_under);
    EXPECT(c, fpx_client_delete_index(c, "lim"), "");
    fpx_client_free(c);
    free(x);
    free(I);
    free(Dist);
    return CHECK_STATUS("test_client_limits");
}
