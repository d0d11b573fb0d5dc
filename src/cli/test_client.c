/*
 * test_client.c - faiss-proxy-test-client, the seed's test client.
 *
 * Against a running server: creates an index with a unique name, adds random
 * vectors, searches for some of them (each must find itself first, at
 * distance ~0), prints the hits and the index info, and deletes the index.
 * Exit status 0 when all of that worked, 1 otherwise (with the server's
 * message), 2 on bad usage.
 */
#include <faissproxy/client.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "usage: faiss-proxy-test-client [--server tcp://127.0.0.1:5555] [--api-key KEY]\n"
    "                               [--tenant T] [--server-key KEY|FILE.pub]\n"
    "                               [--timeout-ms 60000] [--dim 64] [--count 1000]\n"
    "Creates an index, adds vectors, searches, prints index info, deletes the index.\n"
    "Defaults come from FAISS_PROXY_SERVER, FAISS_PROXY_API_KEY and\n"
    "FAISS_PROXY_SERVER_KEY when set; without them: no API key, a plain connection.\n"
    "--server-key: a CurveZMQ server's public key (Z85) or its .pub key file.\n";

static int fail(fpx_client *c, const char *what) {
    fprintf(stderr, "FAILED: %s: %s: %s\n", what, fpx_client_errtype(c), fpx_client_errstr(c));
    return 1;
}

int main(int argc, char **argv) {
    const char *server = getenv("FAISS_PROXY_SERVER");
    const char *key = getenv("FAISS_PROXY_API_KEY");
    const char *tenant = NULL, *server_key = NULL;
    long dim = 64, count = 1000, timeout_ms = 60000;
    if (!server || !*server)
        server = "tcp://127.0.0.1:5555";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (v && !strcmp(a, "--server")) {
            server = v;
        } else if (v && !strcmp(a, "--api-key")) {
            key = v;
        } else if (v && !strcmp(a, "--tenant")) {
            tenant = v;
        } else if (v && !strcmp(a, "--server-key")) {
            server_key = v;
        } else if (v && !strcmp(a, "--timeout-ms")) {
            timeout_ms = strtol(v, NULL, 10);
        } else if (v && !strcmp(a, "--dim")) {
            dim = strtol(v, NULL, 10);
        } else if (v && !strcmp(a, "--count")) {
            count = strtol(v, NULL, 10);
        } else {
            fputs(usage, stderr);
            return 2;
        }
        i++;
    }
    if (dim < 1 || dim > 4096 || count < 5 || count > 1000000 || timeout_ms < 1 ||
        timeout_ms > 86400000) {
        fprintf(stderr, "--dim must be 1..4096, --count 5..1000000, --timeout-ms 1..86400000\n");
        return 2;
    }
    fpx_client *c = fpx_client_new(server, key && *key ? key : NULL, tenant);
    if (!c) {
        fprintf(stderr, "FAILED: cannot create a client for %s\n", server);
        return 1;
    }
    if (server_key && fpx_client_set_server_key(c, server_key) != 0) {
        fprintf(stderr, "FAILED: %s\n", fpx_client_errstr(c));
        fpx_client_free(c);
        return 2;
    }
    fpx_client_set_timeout(c, (int)timeout_ms);
    char name[128];
    snprintf(name, sizeof name, "test-client-%ld-%ld", (long)getpid(), (long)time(NULL));
    float *xb = malloc(sizeof(float) * (size_t)dim * (size_t)count);
    if (!xb)
        return 1;
    srand(1234);
    for (long i = 0; i < dim * count; i++)
        xb[i] = (float)rand() / (float)RAND_MAX;

    int rc = 0;
    fpx_index_info info;
    printf("server %s\n", server);
    if (fpx_client_ping(c) != 0) {
        rc = fail(c, "ping");
        goto out;
    }
    if (fpx_client_create_index(c, name, dim, "IndexFlatL2", NULL, &info) != 0) {
        rc = fail(c, "create_index");
        goto out;
    }
    printf("created index %s (%s, d=%lld)\n", info.index_id, info.index_type,
           (long long)info.dimension);
    int64_t ntotal = 0;
    if (fpx_client_add(c, name, count, dim, xb, NULL, NULL, &ntotal) != 0) {
        rc = fail(c, "add_vectors");
        goto out;
    }
    printf("added %ld vectors, ntotal %lld\n", count, (long long)ntotal);

    enum { NQ = 5, K = 5 };
    float D[NQ * K];
    int64_t I[NQ * K];
    float *xq = malloc(sizeof(float) * (size_t)dim * NQ);
    long qids[NQ];
    for (int q = 0; q < NQ; q++) {
        qids[q] = (long)q * (count / NQ);
        memcpy(xq + q * dim, xb + qids[q] * dim, sizeof(float) * (size_t)dim);
    }
    if (fpx_client_search(c, name, NQ, dim, xq, K, NULL, D, I) != 0) {
        free(xq);
        rc = fail(c, "search");
        goto drop;
    }
    free(xq);
    printf("\nsearch k=%d: query vector -> (label, distance) ...\n", K);
    for (int q = 0; q < NQ; q++) {
        printf("  %6ld ->", qids[q]);
        for (int j = 0; j < K; j++)
            printf(" (%lld, %.4f)", (long long)I[q * K + j], D[q * K + j]);
        int self = I[q * K] == qids[q] && fabsf(D[q * K]) < 1e-4f;
        printf("%s\n", self ? "" : "   <- expected itself first");
        if (!self)
            rc = 1;
    }
    if (fpx_client_get_index_info(c, name, &info) != 0) {
        rc = fail(c, "get_index_info");
        goto drop;
    }
    printf("\nindex info: index_id=%s index_type=%s metric=%s dimension=%lld ntotal=%lld "
           "is_trained=%s\n",
           info.index_id, info.index_type, info.metric, (long long)info.dimension,
           (long long)info.ntotal, info.is_trained ? "true" : "false");
    if (info.ntotal != count)
        rc = 1;
drop:
    if (fpx_client_delete_index(c, name) != 0)
        rc = fail(c, "delete_index");
    else
        printf("deleted index %s\n", name);
out:
    printf("%s\n", rc == 0 ? "OK" : "FAILED");
    free(xb);
    fpx_client_free(c);
    return rc;
}
