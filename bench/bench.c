/*
 * bench.c - fpx-bench, faiss-proxy's benchmark suite.
 *
 * Every figure is a ratio of two measurements taken in the same run on the
 * same machine, interleaved where they can be, so it holds on a noisy shared
 * machine where absolute times do not:
 *
 *   1 round trip   server latency over in-process FAISS + a raw ZeroMQ echo
 *   2 batch search server throughput over in-process FAISS (flat and IVF)
 *   3 ingest       server add rate over in-process add, and over the echo
 *   4 concurrency  QPS of 1/4/16/64 clients sending single queries
 *   5 memory       server RSS over the vectors it holds; growth under load
 *   6 restart      time to read the data dir's files over time to reopen it
 *   7 stall        search latency of one tenant during another's heavy work
 *                  (train, HNSW add, import, drop) over its idle latency
 *
 * In-process FAISS is the same FAISS library through the server's own engine
 * (src/engine), with the same threading rule; the echo is fpx-echo (echo.c).
 * The program starts its own servers (port 0, a fresh data dir under $TMPDIR)
 * and writes results.md (a table) and ratios.dat (for plot.gp) into OUTDIR.
 *
 *   fpx-bench --server PATH --echo PATH --out OUTDIR [--short] [--label NAME] [--peer]
 *
 * With --peer, PATH is another server that speaks the shared protocol.md and
 * takes the seed's environment variables (FAISS_PORT, FAISS_DATA_DIR, ...):
 * the same workloads run against it through libfaissproxy; figures that need
 * this server's extensions (import_index, --batch-max) are left out.
 */
#define _GNU_SOURCE /* SCHED_IDLE */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "engine/engine.h"
#include "faissproxy/client.h"
#include "proto/proto.h"

#define DIM 128
#define K 10
#define API_KEY "bench-key"
#define ECHO_PRIME "fpx-echo-prime"

/* Sizes of the full run, and of the short one CI runs. */
typedef struct sizes {
    int rt_rounds, rt_ops;          /* 1: rounds x ops per path */
    int64_t nb;                     /* 2, 4: vectors of the search index */
    int nq, batch_reps;             /* 2: queries per batch, repetitions */
    const char *ivf;                /* 2: IVF factory string */
    int64_t ingest_n, ingest_batch; /* 3, 5, 6 */
    double conc_seconds;            /* 4: per client count */
    double mixed_seconds;           /* 5 */
} sizes;

static const sizes full_sizes = {20,      500,   100000, 1000, 9, "IVF1024,Flat",
                                 1000000, 10000, 10.0,   300.0};
static const sizes short_sizes = {3, 100, 20000, 200, 5, "IVF64,Flat", 50000, 10000, 1.0, 3.0};

static const char *server_bin, *echo_bin, *out_dir, *label = "faiss-proxy";
static sizes S;

/* ---- small tools ------------------------------------------------------------------ */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* One line on stderr: prefix, then the formatted message. */
static void say(const char *prefix, const char *fmt, va_list ap) {
    fputs(prefix, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    say("fpx-bench: ", fmt, ap);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The p-th percentile (0..100) of v[0..n), sorting v. */
static double percentile(double *v, size_t n, double p) {
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static double median(double *v, size_t n) {
    return percentile(v, n, 50);
}

/* Lets the worker threads of the side measured last go idle before the other
 * side runs: OpenBLAS's threads spin for a while after a call (up to about
 * 0.1 s with Debian's build), and would steal the cores from the next call. */
static void settle(void) {
    usleep(300000);
}

/* Deterministic uniform [0,1) floats (xorshift64*). */
static void fill_random(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        x[i] = (float)((s * 0x2545F4914F6CDD1Dull) >> 40) / (float)(1 << 24);
    }
}

static void log_line(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    say("[bench] ", fmt, ap);
    va_end(ap);
}

/* ---- results ---------------------------------------------------------------------- */

typedef struct result {
    char name[96];
    double value;
    char unit[16];
    char target[32]; /* "" when the figure is informative only */
    int pass;        /* -1 informative, 0 missed, 1 held */
    int ratio;       /* plotted with the ratios */
    int must;        /* a correctness check: failing it fails the run */
} result;

static result results[128];
static int nresults;

static void add_result(const char *name, double value, const char *unit, const char *op,
                       double target, int is_ratio) {
    if (nresults == (int)(sizeof results / sizeof results[0]))
        die("too many results");
    result *r = &results[nresults++];
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    r->value = value;
    r->ratio = is_ratio;
    r->must = 0;
    r->pass = -1;
    r->target[0] = 0;
    if (op) {
        snprintf(r->target, sizeof r->target, "%s %g", op, target);
        r->pass = op[0] == '<' ? value <= target : value >= target;
    }
    log_line("%-55s %12.4g %-6s %s%s", name, value, unit, r->target,
             r->pass == 1   ? "  ok"
             : r->pass == 0 ? "  MISSED"
                            : "");
}

static void write_results(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/results.md", out_dir);
    FILE *f = fopen(path, "w");
    if (!f)
        die("cannot write %s: %s", path, strerror(errno));
    fprintf(f, "| %s: figure | value | unit | target | |\n|---|---:|---|---|---|\n", label);
    for (int i = 0; i < nresults; i++) {
        const result *r = &results[i];
        fprintf(f, "| %s | %.4g | %s | %s | %s |\n", r->name, r->value, r->unit, r->target,
                r->pass == 1   ? "held"
                : r->pass == 0 ? "**missed**"
                               : "");
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/ratios.dat", out_dir);
    f = fopen(path, "w");
    if (!f)
        die("cannot write %s: %s", path, strerror(errno));
    fprintf(f, "# name\tvalue\ttarget\n");
    for (int i = 0; i < nresults; i++) {
        const result *r = &results[i];
        if (!r->ratio)
            continue;
        double t = NAN;
        if (r->target[0])
            t = strtod(r->target + 2, NULL);
        fprintf(f, "\"%s\"\t%.4f\t%.4f\n", r->name, r->value, t);
    }
    fclose(f);
}

/* ---- processes -------------------------------------------------------------------- */

typedef struct proc {
    pid_t pid;
    char endpoint[128];
    char log[4200];
} proc;

/* Starts argv[0] with stdout and stderr into log, and waits (up to
 * `patience` seconds) for "listening on tcp://..." in it. */
static void spawn(proc *p, char *const argv[], const char *log, double patience) {
    snprintf(p->log, sizeof p->log, "%s", log);
    struct stat st0;
    long from = stat(log, &st0) == 0 ? (long)st0.st_size : 0; /* earlier runs' lines */
    p->pid = fork();
    if (p->pid < 0)
        die("fork: %s", strerror(errno));
    if (p->pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    double until = now() + patience;
    while (now() < until) {
        FILE *f = fopen(log, "r");
        char line[1024];
        if (f && fseek(f, from, SEEK_SET) != 0) {
            fclose(f);
            f = NULL;
        }
        while (f && fgets(line, sizeof line, f)) {
            char *at = strstr(line, "listening on tcp://");
            if (at) {
                sscanf(at + strlen("listening on "), "%127[^ ,\n]", p->endpoint);
                fclose(f);
                return;
            }
        }
        if (f)
            fclose(f);
        int st;
        if (waitpid(p->pid, &st, WNOHANG) == p->pid)
            die("%s exited during start-up; see %s", argv[0], log);
        usleep(2000);
    }
    die("%s did not start within %.0f s; see %s", argv[0], patience, log);
}

static void stop_proc(proc *p) {
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    int st;
    waitpid(p->pid, &st, 0);
    p->pid = 0;
}

static char data_root[4096];
static int peer; /* server_bin is a peer: configured by the seed's environment variables */

/* A free loopback port (the kernel's pick, released for the peer to bind). */
static int free_port(void) {
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_ROUTER);
    char ep[128];
    size_t n = sizeof ep;
    int port = 0;
    if (zmq_bind(s, "tcp://127.0.0.1:*") == 0 && zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &n) == 0)
        port = atoi(strrchr(ep, ':') + 1);
    zmq_close(s);
    zmq_ctx_term(ctx);
    if (port <= 0)
        die("no free port");
    return port;
}

/*
 * Starts a peer server that follows the shared protocol.md and the seed's
 * configuration: FAISS_BIND_ADDRESS, FAISS_PORT, FAISS_DATA_DIR and
 * FAISS_PROXY_API_KEYS. It is ready when it answers a ping.
 */
static void start_peer(proc *p, const char *dir) {
    snprintf(p->log, sizeof p->log, "%s.log", dir);
    int port = free_port();
    snprintf(p->endpoint, sizeof p->endpoint, "tcp://127.0.0.1:%d", port);
    p->pid = fork();
    if (p->pid < 0)
        die("fork: %s", strerror(errno));
    if (p->pid == 0) {
        char portv[16];
        snprintf(portv, sizeof portv, "%d", port);
        setenv("FAISS_BIND_ADDRESS", "127.0.0.1", 1);
        setenv("FAISS_PORT", portv, 1);
        setenv("FAISS_DATA_DIR", dir, 1);
        setenv("FAISS_PROXY_API_KEYS", API_KEY ":bench", 1);
        int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(server_bin, server_bin, (char *)NULL);
        _exit(127);
    }
    fpx_client *c = fpx_client_new(p->endpoint, API_KEY, NULL);
    if (!c)
        die("cannot create a client for %s", p->endpoint);
    fpx_client_set_timeout(c, 200);
    for (double until = now() + 600; fpx_client_ping(c) != 0;) {
        int st;
        if (waitpid(p->pid, &st, WNOHANG) == p->pid)
            die("%s exited during start-up; see %s", server_bin, p->log);
        if (now() > until)
            die("%s did not answer within 600 s; see %s", server_bin, p->log);
    }
    fpx_client_free(c);
}

static void start_server(proc *p, const char *dir, const char *extra_flag, const char *extra_val) {
    if (peer) {
        start_peer(p, dir);
        return;
    }
    char log[4200];
    snprintf(log, sizeof log, "%s.log", dir);
    char *argv[16];
    int a = 0;
    argv[a++] = (char *)server_bin;
    argv[a++] = "--bind";
    argv[a++] = "127.0.0.1";
    argv[a++] = "--port";
    argv[a++] = "0";
    argv[a++] = "--data-dir";
    argv[a++] = (char *)dir;
    argv[a++] = "--api-keys";
    argv[a++] = API_KEY ":bench";
    if (extra_flag) {
        argv[a++] = (char *)extra_flag;
        argv[a++] = (char *)extra_val;
    }
    argv[a] = NULL;
    spawn(p, argv, log, 600);
}

/* Resident set size of a process, in bytes. */
static double rss_bytes(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    double kb = NAN;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = strtod(line + 6, NULL);
    if (f)
        fclose(f);
    return kb * 1024;
}

static fpx_client *client(const proc *p) {
    fpx_client *c = fpx_client_new(p->endpoint, API_KEY, NULL);
    if (!c)
        die("cannot create a client for %s", p->endpoint);
    fpx_client_set_timeout(c, 600000);
    return c;
}

static void check(fpx_client *c, int rc, const char *what) {
    if (rc != 0)
        die("%s: %s: %s", what, fpx_client_errtype(c), fpx_client_errstr(c));
}

static fpx_engine *local_engine(const char *factory) {
    fpx_engine *e;
    fpx_err err = {0};
    if (fpx_engine_create(factory, DIM, FPX_METRIC_L2, &e, &err))
        die("engine %s: %s", factory, err.msg);
    return e;
}

static void local_add(fpx_engine *e, int64_t n, const float *x) {
    fpx_err err = {0};
    if (fpx_engine_add(e, n, x, &err))
        die("engine add: %s", err.msg);
}

static void local_search(fpx_engine *e, int64_t nq, const float *q, int64_t nprobe, float *D,
                         int64_t *I) {
    fpx_search_params p = {.nprobe = nprobe};
    fpx_err err = {0};
    if (fpx_engine_search(e, nq, q, K, &p, NULL, D, I, &err))
        die("engine search: %s", err.msg);
}

/* Adds x to a server index in batches of `batch` rows. */
static void server_add(fpx_client *c, const char *index, int64_t n, const float *x, int64_t batch) {
    for (int64_t i = 0; i < n; i += batch) {
        int64_t m = n - i < batch ? n - i : batch;
        check(c, fpx_client_add(c, index, m, DIM, x + i * DIM, NULL, NULL, NULL), "add");
    }
}

/* ---- the raw echo ----------------------------------------------------------------- */

typedef struct echo_conn {
    void *ctx, *sock;
} echo_conn;

static void echo_open(echo_conn *e, const proc *p) {
    e->ctx = zmq_ctx_new();
    e->sock = zmq_socket(e->ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(e->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(e->sock, p->endpoint) != 0)
        die("cannot connect to the echo at %s", p->endpoint);
}

static void echo_close(echo_conn *e) {
    zmq_close(e->sock);
    zmq_ctx_term(e->ctx);
}

static void echo_recv(echo_conn *e) {
    zmq_msg_t m;
    int more = 1;
    while (more) {
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, e->sock, 0) < 0)
            die("echo recv: %s", zmq_strerror(zmq_errno()));
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
}

static void echo_prime(echo_conn *e, const void *reply, size_t len) {
    zmq_send(e->sock, "", 0, ZMQ_SNDMORE);
    zmq_send(e->sock, ECHO_PRIME, strlen(ECHO_PRIME), ZMQ_SNDMORE);
    zmq_send(e->sock, reply, len, 0);
    echo_recv(e);
}

/* One round trip of body, sent as the client library sends a request. */
static void echo_roundtrip(echo_conn *e, const void *body, size_t len) {
    zmq_send(e->sock, "", 0, ZMQ_SNDMORE);
    zmq_send(e->sock, body, len, 0);
    echo_recv(e);
}

/* A request body as libfaissproxy builds it: op, request_id, api_key,
 * index_id, then `fields` packed by the caller, then n rows of x. */
static void build_request(const char *op, const char *index, int64_t n, const float *x, int64_t k,
                          uint8_t **body, size_t *len) {
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *pk = fpx_out_hdr(&o);
    msgpack_pack_map(pk, 5 + (k > 0));
    fpx_pack_cstr(pk, "operation");
    fpx_pack_cstr(pk, op);
    fpx_pack_cstr(pk, "request_id");
    msgpack_pack_int64(pk, 1);
    fpx_pack_cstr(pk, "api_key");
    fpx_pack_cstr(pk, API_KEY);
    fpx_pack_cstr(pk, "index_id");
    fpx_pack_cstr(pk, index);
    if (k > 0) {
        fpx_pack_cstr(pk, "k");
        msgpack_pack_int64(pk, k);
    }
    fpx_pack_cstr(pk, "vector_shape");
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, n);
    msgpack_pack_int64(pk, DIM);
    uint8_t *p = fpx_out_data(&o, (size_t)n * DIM * sizeof(float));
    if (!p || (memcpy(p, x, (size_t)n * DIM * sizeof(float)), fpx_out_finish(&o, body, len)))
        die("out of memory building a request");
}

/* Sends body to the server once and primes the echo with the real reply. */
static void prime_with_real_reply(fpx_client *c, echo_conn *e, const uint8_t *body, size_t len) {
    uint8_t *reply;
    size_t rlen;
    check(c, fpx_client_request_raw(c, body, len, &reply, &rlen), "raw request");
    echo_prime(e, reply, rlen);
    free(reply);
}

/* ---- 1: round trip ---------------------------------------------------------------- */

static void bench_roundtrip(const proc *srv, const proc *echo) {
    const int64_t nb = 1000, nqs = 1000;
    log_line("1. round trip: one query, k=%d, d=%d, %lld-vector flat index", K, DIM, (long long)nb);
    float *xb = xmalloc((size_t)nb * DIM * sizeof *xb);
    float *xq = xmalloc((size_t)nqs * DIM * sizeof *xq);
    fill_random(xb, (size_t)nb * DIM, 1);
    fill_random(xq, (size_t)nqs * DIM, 2);
    fpx_client *c = client(srv);
    check(c, fpx_client_create_index(c, "rt", DIM, "IndexFlatL2", NULL, NULL), "create rt");
    server_add(c, "rt", nb, xb, nb);
    fpx_engine *e = local_engine("Flat");
    local_add(e, nb, xb);
    echo_conn ec;
    echo_open(&ec, echo);
    uint8_t *body;
    size_t len;
    build_request("search", "rt", 1, xq, K, &body, &len);
    prime_with_real_reply(c, &ec, body, len);

    size_t total = (size_t)S.rt_rounds * (size_t)S.rt_ops;
    double *t_local = xmalloc(total * sizeof(double));
    double *t_echo = xmalloc(total * sizeof(double));
    double *t_srv = xmalloc(total * sizeof(double));
    float D[K], D2[K];
    int64_t I[K], I2[K];
    size_t n = 0, mismatches = 0;
    for (int r = 0; r < S.rt_rounds; r++) {
        for (int i = 0; i < S.rt_ops; i++, n++) {
            const float *q = xq + (n % (size_t)nqs) * DIM;
            double t0 = now();
            local_search(e, 1, q, 0, D, I);
            double t1 = now();
            echo_roundtrip(&ec, body, len);
            double t2 = now();
            check(c, fpx_client_search(c, "rt", 1, DIM, q, K, NULL, D2, I2), "search");
            double t3 = now();
            t_local[n] = t1 - t0;
            t_echo[n] = t2 - t1;
            t_srv[n] = t3 - t2;
            mismatches += memcmp(I, I2, sizeof I) != 0;
        }
    }
    double lp50 = percentile(t_local, total, 50), lp99 = percentile(t_local, total, 99);
    double ep50 = percentile(t_echo, total, 50), ep99 = percentile(t_echo, total, 99);
    double sp50 = percentile(t_srv, total, 50), sp99 = percentile(t_srv, total, 99);
    add_result("1 round trip: in-process FAISS p50", lp50 * 1e6, "us", NULL, 0, 0);
    add_result("1 round trip: raw ZeroMQ echo p50", ep50 * 1e6, "us", NULL, 0, 0);
    add_result("1 round trip: server p50", sp50 * 1e6, "us", NULL, 0, 0);
    add_result("1 round trip: server p99", sp99 * 1e6, "us", NULL, 0, 0);
    add_result("1 round trip: server p50 / (FAISS + echo) p50", sp50 / (lp50 + ep50), "x",
               "<=", 1.15, 1);
    add_result("1 round trip: server p99 / (FAISS + echo) p99", sp99 / (lp99 + ep99), "x", NULL, 0,
               1);
    add_result("1 round trip: results differing from in-process", (double)mismatches, "queries",
               "<=", 0, 0);
    results[nresults - 1].must = 1; /* one query: FAISS's exact kernel on both sides */
    free(t_local);
    free(t_echo);
    free(t_srv);
    free(body);
    echo_close(&ec);
    check(c, fpx_client_delete_index(c, "rt"), "delete rt");
    fpx_client_free(c);
    fpx_engine_free(e);
    free(xb);
    free(xq);
}

/* ---- 2: batch search -------------------------------------------------------------- */

static void batch_pair(fpx_client *c, const char *index, fpx_engine *e, const float *xq,
                       int64_t nprobe, const char *title) {
    int64_t nq = S.nq;
    float *D = xmalloc((size_t)nq * K * sizeof *D), *D2 = xmalloc((size_t)nq * K * sizeof *D2);
    int64_t *I = xmalloc((size_t)nq * K * sizeof *I), *I2 = xmalloc((size_t)nq * K * sizeof *I2);
    double tl[16], ts[16];
    fpx_search_opts opts = {0};
    opts.nprobe = nprobe;
    size_t differ = 0;
    /* One unmeasured call each: first touches, thread pools. */
    local_search(e, nq, xq, nprobe, D, I);
    check(c, fpx_client_search(c, index, nq, DIM, xq, K, nprobe ? &opts : NULL, D2, I2), "warm-up");
    settle();
    for (int r = 0; r < S.batch_reps; r++) {
        double t0 = now();
        local_search(e, nq, xq, nprobe, D, I);
        tl[r] = now() - t0;
        settle();
        t0 = now();
        check(c, fpx_client_search(c, index, nq, DIM, xq, K, nprobe ? &opts : NULL, D2, I2),
              "batch search");
        ts[r] = now() - t0;
        settle();
    }
    for (int64_t i = 0; i < nq; i++)
        differ += memcmp(I + i * K, I2 + i * K, K * sizeof *I) != 0;
    double lq = (double)nq / median(tl, (size_t)S.batch_reps);
    double sq = (double)nq / median(ts, (size_t)S.batch_reps);
    char name[96];
    snprintf(name, sizeof name, "2 batch %s: in-process FAISS", title);
    add_result(name, lq, "q/s", NULL, 0, 0);
    snprintf(name, sizeof name, "2 batch %s: server", title);
    add_result(name, sq, "q/s", NULL, 0, 0);
    snprintf(name, sizeof name, "2 batch %s: server / in-process", title);
    add_result(name, sq / lq, "x", ">=", 0.95, 1);
    snprintf(name, sizeof name, "2 batch %s: results differing from in-process", title);
    add_result(name, (double)differ, "queries", "<=", 0, 0);
    free(D);
    free(D2);
    free(I);
    free(I2);
}

/* Loads the search index ("flat", nb vectors) into the server; returns the vectors. */
static float *load_flat(fpx_client *c, fpx_engine **e) {
    float *xb = xmalloc((size_t)S.nb * DIM * sizeof *xb);
    fill_random(xb, (size_t)S.nb * DIM, 3);
    check(c, fpx_client_create_index(c, "flat", DIM, "IndexFlatL2", NULL, NULL), "create flat");
    server_add(c, "flat", S.nb, xb, 10000);
    if (e) {
        *e = local_engine("Flat");
        local_add(*e, S.nb, xb);
    }
    return xb;
}

static void bench_batch(const proc *srv) {
    log_line("2. batch search: %d queries on %lld x %d, Flat and %s (nprobe 16)", S.nq,
             (long long)S.nb, DIM, S.ivf);
    fpx_client *c = client(srv);
    fpx_engine *flat;
    float *xb = load_flat(c, &flat);
    float *xq = xmalloc((size_t)S.nq * DIM * sizeof *xq);
    fill_random(xq, (size_t)S.nq * DIM, 4);
    batch_pair(c, "flat", flat, xq, 0, "Flat");
    fpx_engine_free(flat);

    /* The IVF index is trained once, here, and imported into the server, so
     * both sides search the very same index. */
    fpx_engine *ivf = local_engine(S.ivf);
    fpx_err err = {0};
    double t0 = now();
    if (fpx_engine_train(ivf, S.nb, xb, &err))
        die("train: %s", err.msg);
    local_add(ivf, S.nb, xb);
    log_line("   trained and filled %s in %.1f s", S.ivf, now() - t0);
    uint8_t *bytes;
    size_t len;
    if (fpx_engine_serialize(ivf, &bytes, &len, &err))
        die("export: %s", err.msg);
    int imported = fpx_client_import(c, "ivf", S.ivf, bytes, len, NULL) == 0;
    free(bytes);
    if (imported) {
        batch_pair(c, "ivf", ivf, xq, 16, S.ivf);
        check(c, fpx_client_delete_index(c, "ivf"), "delete ivf");
    } else if (peer) { /* import_index is faiss-proxy's extension of the protocol */
        log_line("   the peer cannot import an index (%s): no IVF figure", fpx_client_errstr(c));
    } else {
        check(c, -1, "import ivf");
    }
    fpx_engine_free(ivf);
    fpx_client_free(c);
    free(xq);
    free(xb);
}

/* ---- 4: concurrency --------------------------------------------------------------- */

typedef struct conc_thread {
    const proc *srv;
    const float *xq;
    int64_t nqs;
    double until;
    pthread_barrier_t *start;
    double *lat;
    size_t nlat, cap;
    int id;
} conc_thread;

static void *conc_main(void *arg) {
    conc_thread *t = arg;
    fpx_client *c = client(t->srv);
    float D[K];
    int64_t I[K];
    check(c, fpx_client_ping(c), "ping");
    pthread_barrier_wait(t->start);
    size_t i = (size_t)t->id * 7919;
    for (double t0 = now(); t0 < t->until; i++) {
        check(
            c,
            fpx_client_search(c, "flat", 1, DIM, t->xq + (i % (size_t)t->nqs) * DIM, K, NULL, D, I),
            "search");
        double t1 = now();
        if (t->nlat == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 1024;
            t->lat = realloc(t->lat, t->cap * sizeof *t->lat);
            if (!t->lat)
                die("out of memory");
        }
        t->lat[t->nlat++] = t1 - t0;
        t0 = t1;
    }
    fpx_client_free(c);
    return NULL;
}

/* Runs n clients for the configured time; returns QPS, stores p99 (s). */
static double run_clients(const proc *srv, int n, const float *xq, int64_t nqs, double *p99) {
    conc_thread *ts = calloc((size_t)n, sizeof *ts);
    pthread_t *th = xmalloc((size_t)n * sizeof *th);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n + 1);
    if (!ts)
        die("out of memory");
    for (int i = 0; i < n; i++) {
        ts[i] = (conc_thread){.srv = srv, .xq = xq, .nqs = nqs, .start = &start, .id = i};
        ts[i].until = 1e300;
        if (pthread_create(&th[i], NULL, conc_main, &ts[i]))
            die("pthread_create");
    }
    /* Every client connected and pinged: start them together. */
    double t0 = now();
    for (int i = 0; i < n; i++)
        ts[i].until = t0 + S.conc_seconds;
    pthread_barrier_wait(&start);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        total += ts[i].nlat;
    }
    double elapsed = now() - t0;
    double *all = xmalloc(total * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        memcpy(all + k, ts[i].lat, ts[i].nlat * sizeof *all);
        k += ts[i].nlat;
        free(ts[i].lat);
    }
    *p99 = percentile(all, total, 99);
    free(all);
    free(ts);
    free(th);
    pthread_barrier_destroy(&start);
    return (double)total / elapsed;
}

static void concurrency_series(const proc *srv, const float *xq, int64_t nqs, const char *title,
                               const int *counts, int ncounts) {
    double q1 = 0;
    for (int i = 0; i < ncounts; i++) {
        double p99;
        double q = run_clients(srv, counts[i], xq, nqs, &p99);
        if (i == 0)
            q1 = q;
        char name[96];
        snprintf(name, sizeof name, "4 %s: %d clients, QPS", title, counts[i]);
        add_result(name, q, "q/s", NULL, 0, 0);
        snprintf(name, sizeof name, "4 %s: %d clients, p99", title, counts[i]);
        add_result(name, p99 * 1e3, "ms", NULL, 0, 0);
        if (i > 0) {
            snprintf(name, sizeof name, "4 %s: %d clients, QPS / 1 client", title, counts[i]);
            add_result(name, q / q1, "x",
                       counts[i] == 16 && !strstr(title, "batching off") ? ">=" : NULL, 3.0, 1);
        }
    }
}

static void bench_concurrency(const proc *srv) {
    int64_t nqs = 1000;
    log_line("4. concurrency: single-query searches on the %lld-vector flat index",
             (long long)S.nb);
    float *xq = xmalloc((size_t)nqs * DIM * sizeof *xq);
    fill_random(xq, (size_t)nqs * DIM, 5);
    static const int counts[] = {1, 4, 16, 64};
    concurrency_series(srv, xq, nqs, "concurrent", counts, 4);

    if (peer) { /* --batch-max is this server's flag */
        free(xq);
        return;
    }
    /* The same with batching off, for comparison. */
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/nobatch", data_root);
    proc off = {0};
    start_server(&off, dir, "--batch-max", "1");
    fpx_client *c = client(&off);
    free(load_flat(c, NULL));
    fpx_client_free(c);
    static const int off_counts[] = {1, 16};
    concurrency_series(&off, xq, nqs, "batching off", off_counts, 2);
    stop_proc(&off);
    free(xq);
}

/* ---- 3, 5, 6: ingest, memory, restart --------------------------------------------- */

/* Reads every file under dir (recursively) into memory, as the least any
 * loader must do: each file into a fresh buffer of its size, freed after.
 * Returns bytes read. */
static double read_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    double total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            total += read_tree(path);
            continue;
        }
        int fd = open(path, O_RDONLY);
        char *buf = xmalloc((size_t)st.st_size);
        size_t got = 0;
        ssize_t r;
        while (fd >= 0 && got < (size_t)st.st_size &&
               (r = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
            got += (size_t)r;
        total += (double)got;
        free(buf);
        if (fd >= 0)
            close(fd);
    }
    closedir(d);
    return total;
}

typedef struct mixed_thread {
    const proc *srv;
    double until;
    int id;
    size_t ops;
} mixed_thread;

/* Searches the big index, and cycles a small keyed index through create,
 * add with metadata, filtered search, delete by key, delete index. */
static void *mixed_main(void *arg) {
    mixed_thread *t = arg;
    fpx_client *c = client(t->srv);
    enum { SMALL = 500 };
    float *x = xmalloc((size_t)SMALL * DIM * sizeof *x);
    fill_random(x, (size_t)SMALL * DIM, 100 + (uint64_t)t->id);
    fpx_item items[SMALL];
    char keys[SMALL][16];
    const char *keyp[SMALL];
    uint8_t meta[SMALL][16];
    for (int i = 0; i < SMALL; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        keyp[i] = keys[i];
        /* {"g": i % 4} */
        meta[i][0] = 0x81;
        meta[i][1] = 0xa1;
        meta[i][2] = 'g';
        meta[i][3] = (uint8_t)(i % 4);
        items[i] = (fpx_item){keys[i], meta[i], 4};
    }
    static const uint8_t filter[] = {0x81, 0xa1, 'g', 0x02};
    char name[32];
    snprintf(name, sizeof name, "mixed%d", t->id);
    float D[4 * K];
    int64_t I[4 * K];
    while (now() < t->until) {
        check(c, fpx_client_search(c, "ingest", 1, DIM, x + (t->ops % SMALL) * DIM, K, NULL, D, I),
              "mixed search");
        check(c, fpx_client_create_index(c, name, DIM, "IndexFlatL2", NULL, NULL), "mixed create");
        check(c, fpx_client_add(c, name, SMALL, DIM, x, NULL, items, NULL), "mixed add");
        fpx_search_opts o = {0};
        o.filter = filter;
        o.filter_size = sizeof filter;
        check(c, fpx_client_search(c, name, 4, DIM, x, K, &o, D, I), "mixed filtered search");
        check(c, fpx_client_delete_keys(c, name, SMALL / 2, keyp, NULL), "mixed delete keys");
        check(c, fpx_client_add(c, name, SMALL, DIM, x, NULL, items, NULL), "mixed upsert");
        check(c, fpx_client_delete_index(c, name), "mixed delete index");
        t->ops += 7;
    }
    fpx_client_free(c);
    free(x);
    return NULL;
}

static void mixed_run(const proc *srv, double seconds, size_t *ops) {
    enum { NT = 4 };
    mixed_thread ts[NT];
    pthread_t th[NT];
    double until = now() + seconds;
    for (int i = 0; i < NT; i++) {
        ts[i] = (mixed_thread){srv, until, i, 0};
        if (pthread_create(&th[i], NULL, mixed_main, &ts[i]))
            die("pthread_create");
    }
    *ops = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        *ops += ts[i].ops;
    }
}

static void bench_ingest_memory_restart(const proc *echo) {
    int64_t n = S.ingest_n, b = S.ingest_batch;
    double payload = (double)n * DIM * sizeof(float);
    log_line("3. ingest: %lld x %d in batches of %lld (%.0f MB)", (long long)n, DIM, (long long)b,
             payload / 1e6);
    float *x = xmalloc((size_t)n * DIM * sizeof *x);
    fill_random(x, (size_t)n * DIM, 6);

    char dir[4200];
    snprintf(dir, sizeof dir, "%s/ingest", data_root);
    proc srv = {0};
    start_server(&srv, dir, NULL, NULL);
    fpx_client *c = client(&srv);
    check(c, fpx_client_create_index(c, "ingest", DIM, "IndexFlatL2", NULL, NULL), "create");
    double rss0 = rss_bytes(srv.pid);

    /* The echo of one batch's request, and its real reply (from a scratch index). */
    echo_conn ec;
    echo_open(&ec, echo);
    uint8_t *body;
    size_t len;
    check(c, fpx_client_create_index(c, "scratch", DIM, "IndexFlatL2", NULL, NULL), "scratch");
    build_request("add_vectors", "scratch", b, x, 0, &body, &len);
    prime_with_real_reply(c, &ec, body, len);
    check(c, fpx_client_delete_index(c, "scratch"), "delete scratch");

    /* The durable floor: the same bytes appended to a file on the data dir's
     * file system, each batch followed by fdatasync, as the log must. */
    char floor_path[4300];
    snprintf(floor_path, sizeof floor_path, "%s/disk-floor", data_root);
    int ffd = open(floor_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (ffd < 0)
        die("cannot create %s: %s", floor_path, strerror(errno));
    double t_disk0 = now();
    for (int64_t i = 0; i < n; i += b) {
        size_t bytes = (size_t)(n - i < b ? n - i : b) * DIM * sizeof(float);
        const char *p = (const char *)(x + i * DIM);
        for (size_t done = 0; done < bytes;) {
            ssize_t w = write(ffd, p + done, bytes - done);
            if (w <= 0)
                die("write %s: %s", floor_path, strerror(errno));
            done += (size_t)w;
        }
        if (fdatasync(ffd) != 0)
            die("fdatasync: %s", strerror(errno));
    }
    double t_disk = now() - t_disk0;
    close(ffd);
    unlink(floor_path);

    fpx_engine *e = local_engine("Flat");
    double t_local = 0, t_echo = 0, t_srv = 0;
    for (int64_t i = 0; i < n; i += b) {
        int64_t m = n - i < b ? n - i : b;
        double t0 = now();
        local_add(e, m, x + i * DIM);
        double t1 = now();
        echo_roundtrip(&ec, body, len);
        double t2 = now();
        check(c, fpx_client_add(c, "ingest", m, DIM, x + i * DIM, NULL, NULL, NULL), "add");
        double t3 = now();
        t_local += t1 - t0;
        t_echo += t2 - t1;
        t_srv += t3 - t2;
    }
    fpx_engine_free(e);
    echo_close(&ec);
    free(body);
    add_result("3 ingest: in-process add", (double)n / t_local, "vec/s", NULL, 0, 0);
    add_result("3 ingest: raw ZeroMQ echo of the same bytes", (double)n / t_echo, "vec/s", NULL, 0,
               0);
    add_result("3 ingest: server add (durable)", (double)n / t_srv, "vec/s", NULL, 0, 0);
    add_result("3 ingest: server / in-process add", t_local / t_srv, "x", ">=", 0.8, 1);
    add_result("3 ingest: synchronous disk writes of the same bytes", (double)n / t_disk, "vec/s",
               NULL, 0, 0);
    add_result("3 ingest: server / echo", t_echo / t_srv, "x", NULL, 0, 1);
    add_result("3 ingest: server / synchronous disk writes", t_disk / t_srv, "x", NULL, 0, 1);

    log_line("5. memory: RSS after the ingest, then a mixed workload for %.0f s", S.mixed_seconds);
    double rss = rss_bytes(srv.pid);
    add_result("5 memory: server RSS before the ingest", rss0 / 1e6, "MB", NULL, 0, 0);
    add_result("5 memory: server RSS after the ingest", rss / 1e6, "MB", NULL, 0, 0);
    add_result("5 memory: RSS / vector payload", rss / payload, "x", NULL, 0, 1);
    add_result("5 memory: RSS / (1.15 x payload + 64 MB)", rss / (1.15 * payload + 64e6), "x",
               "<=", 1.0, 1);
    size_t ops;
    mixed_run(&srv, S.mixed_seconds / 10 < 1 ? 1 : S.mixed_seconds / 10, &ops); /* warm-up */
    double rss_a = rss_bytes(srv.pid);
    mixed_run(&srv, S.mixed_seconds, &ops);
    double rss_b = rss_bytes(srv.pid);
    add_result("5 memory: mixed workload operations", (double)ops, "ops", NULL, 0, 0);
    add_result("5 memory: RSS growth over the mixed workload", (rss_b - rss_a) / 1e6, "MB",
               "<=", 16, 0);
    fpx_client_free(c);

    log_line("6. restart: reopen the data dir, against reading its files");
    stop_proc(&srv);               /* a clean stop snapshots the index */
    double bytes = read_tree(dir); /* warm the page cache, as the reopen will find it */
    double best_read = 1e300, best_open = 1e300;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        read_tree(dir);
        double t1 = now();
        start_server(&srv, dir, NULL, NULL);
        c = client(&srv);
        fpx_index_info info;
        check(c, fpx_client_get_index_info(c, "ingest", &info), "info after restart");
        double t2 = now();
        if (info.ntotal != n)
            die("restart lost vectors: %lld of %lld", (long long)info.ntotal, (long long)n);
        fpx_client_free(c);
        stop_proc(&srv);
        if (t1 - t0 < best_read)
            best_read = t1 - t0;
        if (t2 - t1 < best_open)
            best_open = t2 - t1;
    }
    add_result("6 restart: data dir size", bytes / 1e6, "MB", NULL, 0, 0);
    add_result("6 restart: read the files into memory", best_read * 1e3, "ms", NULL, 0, 0);
    add_result("6 restart: start the server until it answers", best_open * 1e3, "ms", NULL, 0, 0);
    add_result("6 restart: read time / reopen time", best_read / best_open, "x", ">=", 0.8, 1);
    free(x);
}

/* ---- 7: stalls under another tenant's heavy work ---------------------------------- */

/*
 * One client of tenant A sends single k=10 searches to a small idle index in
 * a loop; a second client, of tenant B, does one heavy operation after the
 * other on indexes of its own. Each search is counted in the phase it
 * started in: first the idle baseline, then one phase per heavy operation.
 * The figure is the p50 and p99 of each phase over the idle p99. Between
 * phases the prober pauses and the server is left to go quiet (a background
 * snapshot of the last phase's index would otherwise count against the next).
 */
#define STALL_DIM 64
#define STALL_KEY_B "bench-key-b"
#define STALL_MAX_MESSAGE "1073741824" /* the import is 512 MB: over the 256 MiB default */
enum { STALL_PAUSED = -1, STALL_STOP = -2, STALL_PHASES = 5 };

typedef struct stall_sizes {
    int64_t small_n;  /* tenant A's idle flat index, STALL_DIM wide */
    double idle_s;    /* the idle baseline's length */
    const char *ivf;  /* trained on train_n vectors */
    int64_t train_n;  /* vectors the IVF index is trained on */
    int64_t hnsw_n;   /* added to HNSW32 in batches of 10,000 (200k: over 10 minutes) */
    int64_t import_n; /* rows of the imported flat index (x DIM x 4 bytes) */
    double quiet_s;   /* most time to wait for the server to go quiet */
} stall_sizes;

static const stall_sizes stall_full = {10000, 10.0, "IVF1024,Flat", 100000, 20000, 1000000, 120};
static const stall_sizes stall_short = {1000, 0.5, "IVF16,Flat", 2000, 2000, 10000, 5};
static stall_sizes ST;

typedef struct stall_probe {
    const proc *srv;
    const float *xq;
    int64_t nqs;
    _Atomic int phase; /* where samples go; STALL_PAUSED or STALL_STOP */
    _Atomic int ready; /* warmed up */
    double *lat[STALL_PHASES];
    size_t n[STALL_PHASES], cap[STALL_PHASES];
} stall_probe;

static void *stall_probe_main(void *arg) {
    stall_probe *t = arg;
    fpx_client *c = client(t->srv);
    float D[K];
    int64_t I[K];
    /* Unmeasured: the connection's first round trips, first touches. */
    for (int i = 0; i < 200; i++)
        check(c, fpx_client_search(c, "small", 1, STALL_DIM, t->xq, K, NULL, D, I), "warm-up");
    atomic_store(&t->ready, 1);
    for (size_t i = 0;; i++) {
        int p = atomic_load(&t->phase);
        if (p == STALL_STOP)
            break;
        if (p < 0) {
            usleep(1000);
            continue;
        }
        const float *q = t->xq + (i % (size_t)t->nqs) * STALL_DIM;
        double t0 = now();
        check(c, fpx_client_search(c, "small", 1, STALL_DIM, q, K, NULL, D, I), "stall search");
        double dt = now() - t0;
        if (t->n[p] == t->cap[p]) {
            t->cap[p] = t->cap[p] ? t->cap[p] * 2 : 4096;
            t->lat[p] = realloc(t->lat[p], t->cap[p] * sizeof *t->lat[p]);
            if (!t->lat[p])
                die("out of memory");
        }
        t->lat[p][t->n[p]++] = dt;
    }
    fpx_client_free(c);
    return NULL;
}

/* CPU seconds the process has used (user + system). */
static double cpu_seconds(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Waits (at most ST.quiet_s) until the server uses under 5% of a core over
 * half a second: the last operation's background work is done. */
static void stall_quiet(const proc *srv) {
    for (double until = now() + ST.quiet_s; now() < until;) {
        double c0 = cpu_seconds(srv->pid), t0 = now();
        usleep(500000);
        if ((cpu_seconds(srv->pid) - c0) / (now() - t0) < 0.05)
            return;
    }
    log_line("   the server did not go quiet within %.0f s", ST.quiet_s);
}

/* Adds phase p's figures: its length, searches, and p50 and p99 over idle p99. */
static void stall_report(stall_probe *t, int p, const char *title, double seconds,
                         double idle_p99) {
    char name[96];
    snprintf(name, sizeof name, "7 stall, %s: duration", title);
    add_result(name, seconds, "s", NULL, 0, 0);
    snprintf(name, sizeof name, "7 stall, %s: searches", title);
    add_result(name, (double)t->n[p], "", NULL, 0, 0);
    double p50 = NAN, p99 = NAN;
    if (t->n[p]) {
        p50 = percentile(t->lat[p], t->n[p], 50);
        p99 = percentile(t->lat[p], t->n[p], 99);
    }
    snprintf(name, sizeof name, "7 stall, %s: search p50 / idle p99", title);
    add_result(name, p50 / idle_p99, "x", NULL, 0, 1);
    snprintf(name, sizeof name, "7 stall, %s: search p99 / idle p99", title);
    add_result(name, p99 / idle_p99, "x", t->n[p] ? "<=" : NULL, 2.0, 1);
    /* A stall of seconds is a handful of searches: beyond the p99 of a phase
     * that holds thousands, so the longest is reported too. */
    snprintf(name, sizeof name, "7 stall, %s: longest search", title);
    add_result(name, t->n[p] ? t->lat[p][t->n[p] - 1] * 1e3 : NAN, "ms", NULL, 0, 0);
}

/* Tenant B's calls run on threads at the idle scheduling policy: they stand
 * in for a client on another machine, whose CPU time (above all, sending
 * 512 MB) is not taken from the server's cores in a real deployment; on the
 * 2 cores of one machine they would be. Its ZeroMQ I/O thread, started by the
 * first of them, inherits the policy. The server's own work is all counted. */
typedef struct stall_b {
    fpx_client *b;
    const char *endpoint;
    int p;
    const float *xt, *xh;
    const uint8_t *big;
    size_t big_len;
    char *refused; /* 512 bytes */
} stall_b;

static void stall_b_idle(void) {
    struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0)
        log_line("   cannot give tenant B's client the idle policy: it competes for the cores");
}

static void *stall_b_main(void *arg) {
    stall_b *j = arg;
    stall_b_idle();
    fpx_client *b = j->b;
    if (j->p == 0) { /* connect (the I/O thread starts here) */
        if (!(j->b = fpx_client_new(j->endpoint, STALL_KEY_B, NULL)))
            die("cannot create a client for %s", j->endpoint);
        fpx_client_set_timeout(j->b, 600000);
        check(j->b, fpx_client_ping(j->b), "ping as tenant B");
    } else if (j->p == 1) {
        if (fpx_client_import(b, "big", "IndexFlatL2", j->big, j->big_len, NULL) != 0) {
            snprintf(j->refused, 512, "%s", fpx_client_errstr(b));
            log_line("   the import was refused: %s", j->refused);
        }
    } else if (j->p == 2) {
        if (!j->refused[0])
            check(b, fpx_client_delete_index(b, "big"), "delete big");
    } else if (j->p == 3) {
        check(b, fpx_client_create_index(b, "ivf", DIM, ST.ivf, NULL, NULL), "create ivf");
        check(b, fpx_client_train(b, "ivf", ST.train_n, DIM, j->xt), "train");
    } else {
        check(b, fpx_client_create_index(b, "hnsw", DIM, "HNSW32", NULL, NULL), "create hnsw");
        server_add(b, "hnsw", ST.hnsw_n, j->xh, 10000);
    }
    return NULL;
}

/* Runs tenant B's step p on an idle-policy thread and waits for it. */
static void stall_b_run(stall_b *j, int p) {
    pthread_t th;
    j->p = p;
    if (pthread_create(&th, NULL, stall_b_main, j) || pthread_join(th, NULL))
        die("pthread_create");
}

static void bench_stall(void) {
    if (peer) { /* two tenants and import_index: this server's configuration */
        log_line("7. stalls: not run against a peer");
        return;
    }
    log_line("7. stalls: single searches of tenant A (%lld x %d flat) while tenant B trains %s "
             "on %lld, adds %lld to HNSW32, imports and drops a %.0f MB flat index",
             (long long)ST.small_n, STALL_DIM, ST.ivf, (long long)ST.train_n, (long long)ST.hnsw_n,
             (double)ST.import_n * DIM * sizeof(float) / 1e6);
    /* Every input is made before the baseline, so the benchmark's own work
     * never overlaps a measured phase. */
    int64_t nqs = 1000;
    float *xs = xmalloc((size_t)ST.small_n * STALL_DIM * sizeof *xs);
    float *xq = xmalloc((size_t)nqs * STALL_DIM * sizeof *xq);
    float *xt = xmalloc((size_t)ST.train_n * DIM * sizeof *xt);
    float *xh = xmalloc((size_t)ST.hnsw_n * DIM * sizeof *xh);
    fill_random(xs, (size_t)ST.small_n * STALL_DIM, 71);
    fill_random(xq, (size_t)nqs * STALL_DIM, 72);
    fill_random(xt, (size_t)ST.train_n * DIM, 73);
    fill_random(xh, (size_t)ST.hnsw_n * DIM, 74);
    uint8_t *big;
    size_t big_len;
    {
        float *xb = xmalloc((size_t)ST.import_n * DIM * sizeof *xb);
        fill_random(xb, (size_t)ST.import_n * DIM, 75);
        fpx_engine *e = local_engine("Flat");
        local_add(e, ST.import_n, xb);
        free(xb);
        fpx_err err = {0};
        if (fpx_engine_serialize(e, &big, &big_len, &err))
            die("export: %s", err.msg);
        fpx_engine_free(e);
    }

    char dir[4200], log[4300];
    snprintf(dir, sizeof dir, "%s/stall", data_root);
    snprintf(log, sizeof log, "%s.log", dir);
    char *argv[] = {(char *)server_bin,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--data-dir",
                    dir,
                    "--api-keys",
                    API_KEY ":bench," STALL_KEY_B ":bench-b",
                    "--max-message-size",
                    STALL_MAX_MESSAGE,
                    NULL};
    proc srv = {0};
    spawn(&srv, argv, log, 600);
    fpx_client *a = client(&srv);
    check(a, fpx_client_create_index(a, "small", STALL_DIM, "IndexFlatL2", NULL, NULL),
          "create small");
    check(a, fpx_client_add(a, "small", ST.small_n, STALL_DIM, xs, NULL, NULL, NULL), "add small");
    fpx_client_free(a);
    char refused[512] = "";
    stall_b jb = {.endpoint = srv.endpoint,
                  .xt = xt,
                  .xh = xh,
                  .big = big,
                  .big_len = big_len,
                  .refused = refused};
    stall_b_run(&jb, 0);
    fpx_client *b = jb.b;

    stall_probe t = {.srv = &srv, .xq = xq, .nqs = nqs};
    atomic_init(&t.phase, STALL_PAUSED);
    atomic_init(&t.ready, 0);
    pthread_t th;
    if (pthread_create(&th, NULL, stall_probe_main, &t))
        die("pthread_create");
    for (double until = now() + 60; !atomic_load(&t.ready);) {
        if (now() > until)
            die("the stall prober did not warm up within 60 s");
        usleep(1000);
    }
    stall_quiet(&srv);

    /* 0: idle, first alone, then again before each heavy operation: the
     * baseline spans the run, as the machine's other load comes and goes. */
    atomic_store(&t.phase, 0);
    usleep((useconds_t)(ST.idle_s * 1e6));
    atomic_store(&t.phase, STALL_PAUSED);

    double took[STALL_PHASES];
    char titles[STALL_PHASES][64];
    for (int p = 1; p < STALL_PHASES; p++) {
        stall_quiet(&srv);
        atomic_store(&t.phase, 0);
        usleep((useconds_t)(ST.idle_s * 1e6 / 2));
        atomic_store(&t.phase, p);
        double t0 = now();
        /* The import and the drop first, on a fresh server: import_index's
         * probe caps its child's address space at twice the bytes plus
         * 1 GiB, and the child inherits the server's whole address space,
         * which the train and the HNSW add grow (bench/README.md). */
        if (p == 1) {
            snprintf(titles[p], sizeof titles[p], "import a %.0f MB index", (double)big_len / 1e6);
            stall_b_run(&jb, p);
        } else if (p == 2) {
            snprintf(titles[p], sizeof titles[p], "drop the %.0f MB index", (double)big_len / 1e6);
            double rss0 = rss_bytes(srv.pid);
            stall_b_run(&jb, p);
            /* delete_index answers once the folder is renamed away; the
             * server then unlinks it and frees the index in the background
             * (its files go before its memory). The phase lasts until the
             * memory is back, so that work counts against it. */
            for (double until = now() + 30; !refused[0] && now() < until;) {
                if (rss_bytes(srv.pid) < rss0 - (double)big_len / 2)
                    break;
                usleep(2000);
            }
        } else if (p == 3) {
            snprintf(titles[p], sizeof titles[p], "train %s on %lldk", ST.ivf,
                     (long long)(ST.train_n / 1000));
            stall_b_run(&jb, p);
        } else {
            snprintf(titles[p], sizeof titles[p], "add %lldk to HNSW32",
                     (long long)(ST.hnsw_n / 1000));
            stall_b_run(&jb, p);
        }
        took[p] = now() - t0;
        atomic_store(&t.phase, STALL_PAUSED);
        log_line("   %s: %.1f s, %zu searches", titles[p], took[p], t.n[p]);
    }
    atomic_store(&t.phase, STALL_STOP);
    pthread_join(th, NULL);
    if (!t.n[0])
        die("no search answered in the idle baseline");
    double idle_p50 = percentile(t.lat[0], t.n[0], 50);
    double idle_p99 = percentile(t.lat[0], t.n[0], 99);

    add_result("7 stall: idle searches", (double)t.n[0], "", NULL, 0, 0);
    add_result("7 stall: idle search p50", idle_p50 * 1e6, "us", NULL, 0, 0);
    add_result("7 stall: idle search p99", idle_p99 * 1e6, "us", NULL, 0, 0);
    for (int p = 1; p < STALL_PHASES; p++)
        stall_report(&t, p, titles[p], took[p], idle_p99);
    if (refused[0]) /* no import, nothing to drop: those two figures measure nothing */
        add_result("7 stall: the import was refused (see the log)", 1, "", NULL, 0, 0);

    check(b, fpx_client_delete_index(b, "ivf"), "delete ivf");
    check(b, fpx_client_delete_index(b, "hnsw"), "delete hnsw");
    fpx_client_free(b);
    stop_proc(&srv);
    for (int p = 0; p < STALL_PHASES; p++)
        free(t.lat[p]);
    free(big);
    free(xs);
    free(xq);
    free(xt);
    free(xh);
}

/* ---- 8: durable ingest, pipelined --------------------------------------------------- */

/* libfaissproxy sends an add over 4 MiB as parts of 4 MiB, several in flight
 * (src/client/internal.h): the floor writes the same bytes in the same
 * pieces, each followed by fdatasync, as a log that syncs every request. */
#define PART_BYTES ((size_t)4 << 20)

/* Seconds to append x (n rows) to a file on the data dir's file system in
 * PART_BYTES pieces, each followed by fdatasync. */
static double disk_floor(const float *x, int64_t n) {
    char path[4300];
    snprintf(path, sizeof path, "%s/disk-floor", data_root);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("cannot create %s: %s", path, strerror(errno));
    size_t total = (size_t)n * DIM * sizeof(float);
    const char *p = (const char *)x;
    double t0 = now();
    for (size_t off = 0; off < total;) {
        size_t piece = total - off < PART_BYTES ? total - off : PART_BYTES;
        for (size_t done = 0; done < piece;) {
            ssize_t w = write(fd, p + off + done, piece - done);
            if (w <= 0)
                die("write %s: %s", path, strerror(errno));
            done += (size_t)w;
        }
        if (fdatasync(fd) != 0)
            die("fdatasync: %s", strerror(errno));
        off += piece;
    }
    double t = now() - t0;
    close(fd);
    unlink(path);
    return t;
}

typedef struct writer_job {
    const proc *srv;
    const float *x;
    int64_t n;
} writer_job;

static void *writer_main(void *p) {
    writer_job *j = p;
    fpx_client *c = client(j->srv);
    check(c, fpx_client_add(c, "durable", j->n, DIM, j->x, NULL, NULL, NULL), "writer add");
    fpx_client_free(c);
    return NULL;
}

#define WRITERS 8

static void bench_durable_ingest(void) {
    int64_t n = S.ingest_n;
    log_line("8. durable ingest, pipelined: %lld x %d (%.0f MB) by one client in one add, then "
             "by %d clients at once, against write+fdatasync of the same bytes",
             (long long)n, DIM, (double)n * DIM * sizeof(float) / 1e6, WRITERS);
    float *x = xmalloc((size_t)n * DIM * sizeof *x);
    fill_random(x, (size_t)n * DIM, 8);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/durable", data_root);
    proc srv = {0};
    start_server(&srv, dir, NULL, NULL);
    fpx_client *c = client(&srv);

    /* one client: one add of the whole array, its parts pipelined */
    check(c, fpx_client_create_index(c, "durable", DIM, "IndexFlatL2", NULL, NULL), "create");
    double floor1 = disk_floor(x, n);
    double t0 = now();
    check(c, fpx_client_add(c, "durable", n, DIM, x, NULL, NULL, NULL), "add");
    double t_one = now() - t0;
    check(c, fpx_client_delete_index(c, "durable"), "drop");

    /* WRITERS clients at once, each adding its share to the same index */
    check(c, fpx_client_create_index(c, "durable", DIM, "IndexFlatL2", NULL, NULL), "create");
    double floor2 = disk_floor(x, n);
    pthread_t th[WRITERS];
    writer_job jobs[WRITERS];
    int64_t share = n / WRITERS;
    t0 = now();
    for (int i = 0; i < WRITERS; i++) {
        jobs[i] = (writer_job){&srv, x + (size_t)(i * share) * DIM,
                               i == WRITERS - 1 ? n - i * share : share};
        pthread_create(&th[i], NULL, writer_main, &jobs[i]);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    double t_many = now() - t0;
    fpx_index_info info;
    check(c, fpx_client_get_index_info(c, "durable", &info), "info");
    if (info.ntotal != n)
        die("durable ingest: %lld vectors in the index, %lld sent", (long long)info.ntotal,
            (long long)n);
    fpx_client_free(c);
    stop_proc(&srv);
    free(x);
    add_result("8 durable ingest: write+fdatasync of the same bytes", (double)n / floor1, "vec/s",
               NULL, 0, 0);
    add_result("8 durable ingest: one client, pipelined add", (double)n / t_one, "vec/s", NULL, 0,
               0);
    add_result("8 durable ingest: one client / disk floor", floor1 / t_one, "x", ">=", 0.8, 1);
    add_result("8 durable ingest: 8 clients at once, in all", (double)n / t_many, "vec/s", NULL, 0,
               0);
    add_result("8 durable ingest: 8 clients / disk floor", floor2 / t_many, "x", ">=", 0.8, 1);
}

/* ---- main ------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr, "usage: fpx-bench --server PATH --echo PATH --out DIR [--short] [--label "
                    "NAME] [--only 123478] [--mixed-seconds S] [--peer]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int is_short = 0;
    double mixed_seconds = 0;
    const char *only = "123478";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--short"))
            is_short = 1;
        else if (!strcmp(argv[i], "--server") && i + 1 < argc)
            server_bin = argv[++i];
        else if (!strcmp(argv[i], "--echo") && i + 1 < argc)
            echo_bin = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out_dir = argv[++i];
        else if (!strcmp(argv[i], "--label") && i + 1 < argc)
            label = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--peer"))
            peer = 1;
        else if (!strcmp(argv[i], "--mixed-seconds") && i + 1 < argc)
            mixed_seconds = atof(argv[++i]);
        else
            usage();
    }
    if (!server_bin || !echo_bin || !out_dir)
        usage();
    S = is_short ? short_sizes : full_sizes;
    ST = is_short ? stall_short : stall_full;
    if (mixed_seconds > 0)
        S.mixed_seconds = mixed_seconds;
    signal(SIGPIPE, SIG_IGN);

    const char *tmp = getenv("TMPDIR");
    snprintf(data_root, sizeof data_root, "%s/fpx-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(data_root))
        die("mkdtemp: %s", strerror(errno));
    log_line("%s run of %s; data under %s", is_short ? "short" : "full", server_bin, data_root);

    char dir[4200], log[4300];
    snprintf(log, sizeof log, "%s/echo.log", data_root);
    proc echo = {0};
    char *eargv[] = {(char *)echo_bin, NULL};
    spawn(&echo, eargv, log, 10);

    if (strpbrk(only, "124")) {
        snprintf(dir, sizeof dir, "%s/main", data_root);
        proc srv = {0};
        start_server(&srv, dir, NULL, NULL);
        if (strchr(only, '1'))
            bench_roundtrip(&srv, &echo);
        if (strchr(only, '2'))
            bench_batch(&srv);
        if (strchr(only, '4')) {
            if (!strchr(only, '2')) {
                fpx_client *c = client(&srv);
                free(load_flat(c, NULL));
                fpx_client_free(c);
            }
            bench_concurrency(&srv);
        }
        stop_proc(&srv);
    }
    if (strchr(only, '3'))
        bench_ingest_memory_restart(&echo);
    if (strchr(only, '7'))
        bench_stall();
    if (strchr(only, '8'))
        bench_durable_ingest();
    stop_proc(&echo);
    write_results();
    char cmd[4200 + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", data_root);
    if (getenv("FPX_BENCH_KEEP"))
        log_line("kept %s (FPX_BENCH_KEEP)", data_root);
    else if (system(cmd) != 0)
        log_line("could not remove %s", data_root);
    int missed = 0, failed = 0;
    for (int i = 0; i < nresults; i++) {
        missed += results[i].pass == 0;
        failed += results[i].pass == 0 && results[i].must;
    }
    log_line("%d figures, %d targets missed; table in %s/results.md", nresults, missed, out_dir);
    if (failed)
        log_line("%d correctness checks failed", failed);
    return failed ? 1 : 0;
}
