/*
 * metrics.c - the HTTP endpoint (libmicrohttpd, its own thread) that serves
 * the server's counters (stats.h) to Prometheus, with /healthz and /readyz.
 *
 * A scrape reads the counters, walks the registry under its read lock for
 * the per-index gauges, and formats everything into one buffer.
 */
#include "metrics.h"

#include <dirent.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"
#include "server.h"
#include "stats.h"
#include "util.h"

/* ---- the text format ---------------------------------------------------------------- */

typedef struct text {
    char *p;
    size_t len, cap;
    int oom;
} text;

static void put(text *t, const char *fmt, ...) {
    if (t->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *q = realloc(t->p, cap);
        if (!q) {
            t->oom = 1;
            return;
        }
        t->p = q;
        t->cap = cap;
    }
}

/* A label value as the format wants it: backslash, quote and newline escaped. */
static void put_label(text *t, const char *v) {
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            put(t, "\\%c", *v);
        else if (*v == '\n')
            put(t, "\\n");
        else
            put(t, "%c", *v);
    }
}

static void head(text *t, const char *name, const char *type, const char *help) {
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's series; labels is "" or `op="x",` (with the comma). */
static void put_hist(text *t, const char *name, const char *labels, const fpx_hist *h,
                     const double *bounds, size_t nb, double scale) {
    uint64_t cum = 0;
    for (size_t i = 0; i <= nb; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < nb)
            put(t, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, bounds[i],
                (unsigned long long)cum);
        else
            put(t, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    }
    char bare[160] = "";
    size_t ll = strlen(labels);
    if (ll > 0 && ll < sizeof bare) { /* the labels without their trailing comma */
        memcpy(bare, labels, ll - 1);
        bare[ll - 1] = 0;
    }
    put(t, "%s_sum%s%s%s %.9g\n", name, ll ? "{" : "", bare, ll ? "}" : "",
        (double)atomic_load_explicit(&h->sum, memory_order_relaxed) * scale);
    put(t, "%s_count%s%s%s %llu\n", name, ll ? "{" : "", bare, ll ? "}" : "",
        (unsigned long long)cum);
}

/* ---- registry gauges -------------------------------------------------------------------- */

typedef struct usage {
    const char *tenant, *name;
    long long vectors, bytes, indexes;
} usage;

static int by_bytes_desc(const void *a, const void *b) {
    const usage *x = a, *y = b;
    if (x->bytes != y->bytes)
        return x->bytes < y->bytes ? 1 : -1;
    int c = strcmp(x->tenant, y->tenant);
    return c ? c : strcmp(x->name ? x->name : "", y->name ? y->name : "");
}

static void put_usage(text *t, const char *metric, const char *help, const usage *u, size_t n,
                      int per_index, int field) {
    head(t, metric, "gauge", help);
    for (size_t i = 0; i < n; i++) {
        long long v = field == 0 ? u[i].vectors : field == 1 ? u[i].bytes : u[i].indexes;
        put(t, "%s{tenant=\"", metric);
        put_label(t, u[i].tenant);
        if (per_index) {
            put(t, "\",index=\"");
            put_label(t, u[i].name);
        }
        put(t, "\"} %lld\n", v);
    }
}

/* Indexes, vectors and bytes: totals, per tenant and per index, the largest
 * FPX_METRICS_TOP_INDEXES of each with their own series. */
static void put_registry(text *t, fpx_server *s) {
    pthread_rwlock_rdlock(&s->reg_lock);
    size_t n = s->nindexes, nt = 0;
    usage *ix = calloc(n ? n : 1, sizeof *ix), *ten = calloc(n ? n : 1, sizeof *ten);
    long long tv = 0, tb = 0;
    if (!ix || !ten) {
        pthread_rwlock_unlock(&s->reg_lock);
        free(ix);
        free(ten);
        t->oom = 1;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const fpx_index *x = s->indexes[i];
        ix[i] = (usage){x->tenant, x->name, atomic_load(&x->use_vectors),
                        atomic_load(&x->use_bytes), 1};
        tv += ix[i].vectors;
        tb += ix[i].bytes;
        size_t j = 0;
        while (j < nt && strcmp(ten[j].tenant, x->tenant))
            j++;
        if (j == nt)
            ten[nt++] = (usage){x->tenant, NULL, 0, 0, 0};
        ten[j].vectors += ix[i].vectors;
        ten[j].bytes += ix[i].bytes;
        ten[j].indexes++;
    }
    qsort(ix, n, sizeof *ix, by_bytes_desc);
    qsort(ten, nt, sizeof *ten, by_bytes_desc);
    size_t top = n < FPX_METRICS_TOP_INDEXES ? n : FPX_METRICS_TOP_INDEXES;
    size_t ttop = nt < FPX_METRICS_TOP_INDEXES ? nt : FPX_METRICS_TOP_INDEXES;
    head(t, "faiss_proxy_indexes", "gauge", "Indexes served.");
    put(t, "faiss_proxy_indexes %zu\n", n);
    head(t, "faiss_proxy_vectors", "gauge", "Live vectors over all indexes.");
    put(t, "faiss_proxy_vectors %lld\n", tv);
    head(t, "faiss_proxy_disk_bytes", "gauge", "Bytes of snapshots and logs over all indexes.");
    put(t, "faiss_proxy_disk_bytes %lld\n", tb);
    put_usage(t, "faiss_proxy_tenant_indexes", "Indexes of a tenant (the largest tenants).", ten,
              ttop, 0, 2);
    put_usage(t, "faiss_proxy_tenant_vectors", "Live vectors of a tenant (the largest tenants).",
              ten, ttop, 0, 0);
    put_usage(t, "faiss_proxy_tenant_disk_bytes",
              "Bytes on disk of a tenant (the largest tenants).", ten, ttop, 0, 1);
    put_usage(t, "faiss_proxy_index_vectors", "Live vectors of an index (the largest indexes).", ix,
              top, 1, 0);
    put_usage(t, "faiss_proxy_index_disk_bytes", "Bytes on disk of an index (the largest indexes).",
              ix, top, 1, 1);
    pthread_rwlock_unlock(&s->reg_lock);
    free(ix);
    free(ten);
}

/* Seconds since the epoch at fpx_metrics_start. */
static double started_at;

/* ---- the process -------------------------------------------------------------------- */

static void put_process(text *t) {
    unsigned long long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    long ps = sysconf(_SC_PAGESIZE);
    head(t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(t, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)(ps > 0 ? ps : 4096));
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            fds += e->d_name[0] != '.';
        closedir(d);
        fds--; /* the one opendir holds */
    }
    head(t, "process_open_fds", "gauge", "Number of open file descriptors.");
    put(t, "process_open_fds %d\n", fds);
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    head(t, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent.");
    put(t, "process_cpu_seconds_total %.6f\n", cpu);
    head(t, "process_start_time_seconds", "gauge", "Start time of the process since the epoch.");
    put(t, "process_start_time_seconds %.3f\n", started_at);
}

char *fpx_metrics_render(fpx_server *s, size_t *len) {
    const fpx_stats *st = &fpx_stats_now;
    const double *lat = fpx_stats_lat_bounds, *sz = fpx_stats_size_bounds;
    size_t nlat = fpx_stats_nlat, nsz = fpx_stats_nsize;
    text t = {malloc(65536), 0, 65536, 0};
    if (!t.p)
        return NULL;
    t.p[0] = 0;
    size_t nops = fpx_op_count() < FPX_STATS_OPS ? fpx_op_count() : FPX_STATS_OPS;
    head(&t, "faiss_proxy_requests_total", "counter",
         "Requests handled, by operation and outcome (ok or the error type).");
    for (size_t o = 0; o <= FPX_STATS_OPS; o++) {
        if (o < FPX_STATS_OPS && o >= nops)
            continue;
        const char *name = o < FPX_STATS_OPS ? fpx_op_name(o) : "unknown";
        for (int k = 0; k < FPX_STATS_STATUSES; k++) {
            uint64_t v = atomic_load_explicit(&st->requests[o][k], memory_order_relaxed);
            /* every known operation's ok series exists from the start */
            if (v || (k == FPX_OK && o < FPX_STATS_OPS))
                put(&t, "faiss_proxy_requests_total{operation=\"%s\",status=\"%s\"} %llu\n", name,
                    fpx_errtype_name((fpx_errtype)k), (unsigned long long)v);
        }
    }
    head(&t, "faiss_proxy_request_duration_seconds", "histogram",
         "Time from a request's arrival at a worker to its reply, by operation.");
    for (size_t o = 0; o <= FPX_STATS_OPS; o++) {
        if (o < FPX_STATS_OPS && o >= nops)
            continue;
        char labels[96];
        snprintf(labels, sizeof labels, "operation=\"%s\",",
                 o < FPX_STATS_OPS ? fpx_op_name(o) : "unknown");
        put_hist(&t, "faiss_proxy_request_duration_seconds", labels, &st->latency[o], lat, nlat,
                 1e-9);
    }
    head(&t, "faiss_proxy_batch_searches", "histogram",
         "Search requests answered by one FAISS call (dynamic batching).");
    put_hist(&t, "faiss_proxy_batch_searches", "", &st->batch_searches, sz, nsz, 1);
    head(&t, "faiss_proxy_batch_queries", "histogram", "Query vectors in one FAISS search call.");
    put_hist(&t, "faiss_proxy_batch_queries", "", &st->batch_queries, sz, nsz, 1);
    head(&t, "faiss_proxy_batch_wait_seconds", "histogram",
         "Time the oldest search of a FAISS call waited for it to start.");
    put_hist(&t, "faiss_proxy_batch_wait_seconds", "", &st->batch_wait, lat, nlat, 1e-9);
    head(&t, "faiss_proxy_wal_fsync_seconds", "histogram",
         "Duration of the fdatasync that makes a write durable.");
    put_hist(&t, "faiss_proxy_wal_fsync_seconds", "", &st->fsync, lat, nlat, 1e-9);
    head(&t, "faiss_proxy_snapshot_seconds", "histogram", "Duration of snapshot writes.");
    put_hist(&t, "faiss_proxy_snapshot_seconds", "", &st->snapshot, lat, nlat, 1e-9);
    head(&t, "faiss_proxy_snapshot_bytes_total", "counter", "Bytes of snapshots written.");
    put(&t, "faiss_proxy_snapshot_bytes_total %llu\n",
        (unsigned long long)atomic_load_explicit(&st->snapshot_bytes, memory_order_relaxed));
    head(&t, "faiss_proxy_connections", "gauge", "Open client connections.");
    put(&t, "faiss_proxy_connections %d\n", atomic_load(&st->connections));
    head(&t, "faiss_proxy_workers", "gauge", "Worker threads started.");
    put(&t, "faiss_proxy_workers %d\n", atomic_load(&st->workers_started));
    head(&t, "faiss_proxy_workers_busy", "gauge", "Worker threads handling a request.");
    put(&t, "faiss_proxy_workers_busy %d\n", atomic_load(&st->workers_busy));
    head(&t, "faiss_proxy_requests_inline_total", "counter",
         "Requests answered by the network thread itself, without a worker.");
    put(&t, "faiss_proxy_requests_inline_total %llu\n",
        (unsigned long long)atomic_load_explicit(&st->inline_requests, memory_order_relaxed));
    int ready = atomic_load(&st->ready);
    head(&t, "faiss_proxy_ready", "gauge", "1 once the data is loaded and requests are served.");
    put(&t, "faiss_proxy_ready %d\n", ready);
    if (ready)
        put_registry(&t, s);
    put_process(&t);
    if (t.oom) {
        free(t.p);
        return NULL;
    }
    *len = t.len;
    return t.p;
}

/* ---- the HTTP endpoint ---------------------------------------------------------------- */

static struct MHD_Daemon *daemon_;

static enum MHD_Result answer(struct MHD_Connection *c, unsigned code, const char *type, char *body,
                              size_t len, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    (void)upload;
    (void)con_cls;
    static const char plain[] = "text/plain; charset=utf-8";
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
        *upload_size = 0; /* a body is not read */
        static char msg[] = "only GET and HEAD\n";
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, plain, msg, sizeof msg - 1,
                      MHD_RESPMEM_PERSISTENT);
    }
    if (!strcmp(url, "/healthz")) {
        static char msg[] = "ok\n";
        return answer(c, MHD_HTTP_OK, plain, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
    }
    if (!strcmp(url, "/readyz")) {
        static char yes[] = "ready\n", no[] = "loading\n";
        int r = atomic_load(&fpx_stats_now.ready);
        return answer(c, r ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, plain, r ? yes : no,
                      r ? sizeof yes - 1 : sizeof no - 1, MHD_RESPMEM_PERSISTENT);
    }
    if (!strcmp(url, "/metrics")) {
        size_t len;
        char *body = fpx_metrics_render(cls, &len);
        if (!body) {
            static char msg[] = "out of memory\n";
            return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, plain, msg, sizeof msg - 1,
                          MHD_RESPMEM_PERSISTENT);
        }
        return answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                      MHD_RESPMEM_MUST_FREE);
    }
    static char msg[] = "not found: /metrics, /healthz and /readyz are served\n";
    return answer(c, MHD_HTTP_NOT_FOUND, plain, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
}

int fpx_metrics_start(fpx_server *s, const char *addr, int port, fpx_err *err) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    started_at = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int gai = getaddrinfo(addr, ps, &hints, &ai);
    if (gai != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "metrics address %s: %s", addr, gai_strerror(gai));
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* A handful of scrapers at most: connections and their time are bounded,
     * so a flood on this port cannot take memory or threads from the
     * vector service. */
    daemon_ = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s,
                               MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT,
                               (unsigned)16, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                               MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!daemon_)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot serve metrics on %s:%d", addr, port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    int v6 = strchr(addr, ':') != NULL;
    fpx_log(FPX_LOG_INFO, "metrics on http://%s%s%s:%u/metrics", v6 ? "[" : "", addr, v6 ? "]" : "",
            info ? (unsigned)info->port : (unsigned)port);
    return 0;
}

void fpx_metrics_stop(void) {
    if (daemon_)
        MHD_stop_daemon(daemon_);
    daemon_ = NULL;
}
