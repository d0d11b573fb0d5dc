/*
 * main.c - faiss-proxy-server: configuration, start-up, signals, shutdown.
 */
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "cluster/cluster.h"
#include "config.h"
#include "engine/engine.h"
#include "metrics.h"
#include "net.h"
#include "probe.h"
#include "server.h"
#include "slotmap.h"
#include "util.h"

static volatile sig_atomic_t stop_requested;

/* Each client connection holds a socket (and a log is open while it is
 * written), so the default soft limit (often 1024) caps clients far below
 * what the machine allows. Raise it to the hard limit; failing is not fatal. */
static void raise_open_files_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY)
        fpx_log(FPX_LOG_DEBUG, "open files limit: unlimited");
    else
        fpx_log(FPX_LOG_DEBUG, "open files limit: %llu (was %llu)", (unsigned long long)rl.rlim_cur,
                (unsigned long long)before);
}

/* The first SIGINT/SIGTERM asks for a clean stop (net.c). A second one ends
 * the process at once: every acknowledged write is already whole and
 * fsync'd in its index's log, and a torn record at a log's end (a write
 * never acknowledged) is dropped at the next start, so there is nothing to
 * wait for. Only async-signal-safe calls here. */
static void on_signal(int sig) {
    if (stop_requested) {
        static const char msg[] = "faiss-proxy-server: second signal, exiting now\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(128 + sig);
    }
    stop_requested = 1;
}

/*
 * Large buffers in transparent huge pages. Every request of a few MB (an add
 * part, an import) arrives in a fresh buffer of ZeroMQ's, and an index grows
 * by FAISS's vectors reallocating: both are new memory, faulted in 4 KiB at a
 * time. On virtual machines a page fault costs microseconds, and durable
 * ingest spent most of its CPU there (bench/README.md, figure 8: 2 to 2.6
 * times the vectors a second with huge pages). glibc takes the setting only
 * from the environment at start (the tunable glibc.malloc.hugetlb=1 asks the
 * kernel for huge pages, madvise, on what malloc maps), so the server starts
 * itself again once with it, before anything else runs. A GLIBC_TUNABLES that
 * names glibc.malloc.hugetlb already is kept as it is: =0 turns this off.
 * When it cannot start again (no /proc, its file replaced) it runs with the
 * allocator as it is.
 */
static void use_huge_pages(char **argv) {
#ifdef __GLIBC__
    const char *env = getenv("GLIBC_TUNABLES");
    if (env && strstr(env, "glibc.malloc.hugetlb"))
        return;
    char was[2048], v[2048 + 32];
    int n = snprintf(was, sizeof was, "%s", env ? env : "");
    if (n < 0 || (size_t)n >= sizeof was)
        return;
    snprintf(v, sizeof v, "%s%sglibc.malloc.hugetlb=1", was, *was ? ":" : "");
    if (setenv("GLIBC_TUNABLES", v, 1) != 0)
        return;
    /* By its path, not /proc/self/exe: the process keeps its name (ps, top) */
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len > 0) {
        self[len] = 0;
        execv(self, argv);
    }
    if (env) /* not started again: as it was */
        setenv("GLIBC_TUNABLES", was, 1);
    else
        unsetenv("GLIBC_TUNABLES");
#else
    (void)argv;
#endif
}

int main(int argc, char **argv) {
    /* Started by the server itself (probe.c). _exit: the process is thrown
     * away, with what FAISS built or leaked (no exit handlers, no leak
     * report). */
    if (argc == 2 && !strcmp(argv[1], FPX_PROBE_ARG))
        _exit(fpx_probe_main());
    if (argc == 2 && !strcmp(argv[1], FPX_PROBE_BUILD_ARG))
        _exit(fpx_probe_build_main());
    if (argc == 2 && !strcmp(argv[1], FPX_PROBE_CREATE_ARG))
        _exit(fpx_probe_create_main());
    use_huge_pages(argv);
    fpx_config cfg;
    int rc = fpx_config_load(&cfg, argc, argv);
    if (rc != 0) {
        fpx_config_free(&cfg);
        return rc > 0 ? 0 : 2;
    }
    if (cfg.log_debug)
        fpx_log_level = FPX_LOG_DEBUG;
    if (cfg.move_index[0]) { /* the one-shot move command: no server runs */
        fpx_err merr = {0};
        int mrc = fpx_cluster_move(&cfg, &merr);
        if (mrc == 0)
            printf("moved %s (tenant %s) from node %s to node %s\n", cfg.move_index,
                   cfg.move_tenant, cfg.move_from, cfg.move_to);
        else
            fprintf(stderr, "faiss-proxy-server: cannot move %s from node %s to node %s: %s: %s\n",
                    cfg.move_index, cfg.move_from, cfg.move_to, fpx_errtype_name(merr.type),
                    merr.msg);
        fpx_config_free(&cfg);
        return mrc == 0 ? 0 : 1;
    }
    raise_open_files_limit();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: zmq_poll must return EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    fpx_batch_configure((int64_t)cfg.batch_wait_us, (int64_t)cfg.batch_max, cfg.cores);
    fpx_batch_limit_results((int64_t)(cfg.max_message_size / 12));
    fpx_engine_stats_wait_ms((int64_t)cfg.stats_wait_ms);
    fpx_probe_set_build_timeout(cfg.graph_build_timeout);
    fpx_index_set_create_check(fpx_probe_create);
    fpx_engine_set_isolated_add(fpx_probe_build_add);
    if (fpx_engine_tune_for_server() != 0)
        fpx_log(FPX_LOG_DEBUG, "the BLAS in use is not OpenBLAS: its threading is left as is");
    if (!fpx_engine_slices_batches())
        fpx_log(FPX_LOG_DEBUG, "this BLAS rounds a product differently when it is cut: a flat "
                               "index's batch is searched in one FAISS call, on one core, so that "
                               "its results are FAISS's");

    fpx_server server;
    fpx_err err = {0};
    /* Before loading, so that /healthz answers (and /readyz says "loading")
     * while a large data dir loads. */
    if (cfg.metrics_port >= 0 &&
        fpx_metrics_start(&server, cfg.metrics_bind, cfg.metrics_port, &err) != 0) {
        fpx_log(FPX_LOG_ERROR, "cannot start: %s", err.msg);
        fpx_config_free(&cfg);
        return 1;
    }
    /* Before any index is loaded: every label and key table hashes under it. */
    if (fpx_hash_seed_random(&err) != 0) {
        fpx_log(FPX_LOG_ERROR, "cannot start: %s", err.msg);
        fpx_config_free(&cfg);
        return 1;
    }
    if (fpx_server_init(&server, &cfg, &err) != 0) {
        fpx_log(FPX_LOG_ERROR, "cannot start: %s", err.msg);
        fpx_metrics_stop();
        fpx_server_shutdown(&server);
        fpx_config_free(&cfg);
        return 1;
    }
    /* A cluster node catches up with the cluster before it serves. */
    if (fpx_cluster_start(&server, &err) != 0) {
        fpx_log(FPX_LOG_ERROR, "cannot join the cluster: %s", err.msg);
        fpx_cluster_stop(&server);
        fpx_metrics_stop();
        fpx_server_shutdown(&server);
        fpx_config_free(&cfg);
        return 1;
    }
    rc = fpx_net_run(&server, &stop_requested);
    fpx_metrics_stop(); /* reads the registry: stopped before it goes */
    if (rc == FPX_NET_WORKERS_BUSY) {
        /* A worker is still inside a FAISS call. Freeing the server (or
         * running exit()'s destructors of FAISS and OpenMP) under it would be
         * a use-after-free, so snapshot what is idle, flush, and leave with
         * _exit: the logs already hold every write. */
        fpx_server_snapshot_idle(&server);
        fpx_log(FPX_LOG_INFO, "stopped");
        fflush(stdout);
        fflush(stderr);
        _exit(0);
    }
    fpx_cluster_stop(&server); /* no record is applied after this */
    fpx_server_shutdown(&server);
    fpx_config_free(&cfg);
    if (rc == 0)
        fpx_log(FPX_LOG_INFO, "stopped");
    return rc == 0 ? 0 : 1;
}
