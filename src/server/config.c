/*
 * config.c - defaults < environment < command line.
 *
 * The seed names four environment variables (FAISS_BIND_ADDRESS, FAISS_PORT,
 * FAISS_DATA_DIR, FAISS_PROXY_API_KEYS); the server adds a few FAISS_PROXY_*
 * ones for its own knobs. Every setting is validated here, at start-up, so a
 * typo fails loudly instead of running with a surprise.
 */
#include "config.h"
#include "curve.h"

#include <errno.h>
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: faiss-proxy-server [options]\n"
    "\n"
    "FAISS vector search over a binary ZeroMQ protocol, with tenants and durable storage.\n"
    "\n"
    "options (each overrides its environment variable):\n"
    "  -b, --bind ADDR            address to bind          FAISS_BIND_ADDRESS   (0.0.0.0)\n"
    "  -p, --port N               TCP port, 0 = any free   FAISS_PORT           (5555)\n"
    "  -d, --data-dir DIR         where indexes are stored FAISS_DATA_DIR       (./data)\n"
    "  -k, --api-keys LIST        KEY:TENANT,...; empty = auth off\n"
    "                                                      FAISS_PROXY_API_KEYS (empty)\n"
    "      --allow-remote-unauthenticated\n"
    "                             without API keys, serve every address, not only\n"
    "                             loopback clients\n"
    "                                       FAISS_PROXY_ALLOW_REMOTE_UNAUTHENTICATED=1 (off)\n"
    "      --curve-secret-key-file PATH\n"
    "                             CurveZMQ: encrypt and authenticate the server with\n"
    "                             this key file (mode 0600)\n"
    "                                       FAISS_PROXY_CURVE_SECRET_KEY_FILE (none: plain)\n"
    "      --curve-keygen PATH    write a new key pair to PATH and PATH.pub, then exit\n"
    "  -w, --workers N            worker threads           FAISS_PROXY_WORKERS\n"
    "                                                      (8 per core, 16..64)\n"
    "  -m, --max-message-size N   largest request, bytes   FAISS_PROXY_MAX_MESSAGE_SIZE\n"
    "                                                      (268435456 = 256 MiB)\n"
    "  -s, --snapshot-bytes N     write-ahead log size that triggers a snapshot (a flat\n"
    "                             index's log of appends is kept as it is)\n"
    "                                                      FAISS_PROXY_SNAPSHOT_BYTES (67108864)\n"
    "      --compact-min-dead N   compact an index once it has this many deleted vectors,\n"
    "                             a quarter of all; 0 = never\n"
    "                                       FAISS_PROXY_COMPACT_MIN_DEAD (1024)\n"
    "      --batch-wait-us N      longest wait of a search batch for requests on their way\n"
    "                                                      FAISS_PROXY_BATCH_WAIT_US (200)\n"
    "      --batch-max N          most queries answered by one FAISS call; 1 = no batching\n"
    "                                                      FAISS_PROXY_BATCH_MAX (256)\n"
    "      --inline-search-us N   while no worker is busy and no request waits, the network\n"
    "                             thread answers a plain search expected to take at most\n"
    "                             this long itself; 0 = never\n"
    "                                                      FAISS_PROXY_INLINE_SEARCH_US (500)\n"
    "      --search-stats-wait-ms N  longest wait of a search asking for FAISS's search\n"
    "                             statistics for other searches to leave (then uncounted);\n"
    "                             0 = never count            FAISS_PROXY_SEARCH_STATS_WAIT_MS "
    "(100)\n"
    "      --shutdown-timeout S   seconds requests in flight may still take after SIGINT/SIGTERM\n"
    "                                                      FAISS_PROXY_SHUTDOWN_TIMEOUT (10)\n"
    "      --tenant-max-indexes N      most indexes per tenant, 0 = no limit\n"
    "                                       FAISS_PROXY_TENANT_MAX_INDEXES (0)\n"
    "      --tenant-max-vectors N      most live vectors per tenant, 0 = no limit\n"
    "                                       FAISS_PROXY_TENANT_MAX_VECTORS (0)\n"
    "      --tenant-max-disk-bytes N   most bytes on disk per tenant, 0 = no limit\n"
    "                                       FAISS_PROXY_TENANT_MAX_DISK_BYTES (0)\n"
    "      --max-inflight-per-client N requests of one connection at the workers at once\n"
    "                                       FAISS_PROXY_MAX_INFLIGHT_PER_CLIENT\n"
    "                                       (three quarters of the workers)\n"
    "      --metrics-port N       serve /metrics, /healthz, /readyz over HTTP on this port;\n"
    "                             0 = any free port       FAISS_PROXY_METRICS_PORT (off)\n"
    "      --metrics-bind ADDR    address of the metrics port\n"
    "                                       FAISS_PROXY_METRICS_BIND (127.0.0.1)\n";

/* The rest of the usage (one string literal would be over C's 4095 bytes). */
static const char usage_more[] =
    "      --graph-build-timeout S  seconds an NSG graph build (run in a child process) may\n"
    "                             take, plus 1 s per 100000 numbers added\n"
    "                                       FAISS_PROXY_GRAPH_BUILD_TIMEOUT (600)\n"
    "      --cluster URLS         join a cluster whose metadata and write logs live in NATS\n"
    "                             JetStream: nats://HOST:PORT[,nats://HOST:PORT...]\n"
    "                                       FAISS_PROXY_CLUSTER (none: a single server)\n"
    "      --node-id NAME         this node's name in the cluster (letters, digits, '-', '_')\n"
    "                                       FAISS_PROXY_NODE_ID (the host name)\n"
    "      --advertise tcp://HOST:PORT  the endpoint other nodes forward requests to\n"
    "                                       FAISS_PROXY_ADVERTISE (the bound address and port,\n"
    "                                       a wildcard address replaced by the host name)\n"
    "      --router-only          hold no replica: forward every index's requests to the\n"
    "                             nodes holding it        FAISS_PROXY_ROUTER_ONLY=1 (off)\n"
    "      --forward-timeout-ms N longest wait for a forwarded request's reply\n"
    "                                       FAISS_PROXY_FORWARD_TIMEOUT_MS (30000)\n"
    "      --durability acked|synced  what a write without a \"durability\" field waits for\n"
    "                                       FAISS_PROXY_DURABILITY (acked)\n"
    "      --synced-timeout-ms N  longest wait of a \"synced\" write for its replicas\n"
    "                                       FAISS_PROXY_SYNCED_TIMEOUT_MS (half of the\n"
    "                                       forward timeout)\n"
    "      --replace-after S      seconds a node may be gone before its replicas move to\n"
    "                             other live nodes (0: never)\n"
    "                                       FAISS_PROXY_REPLACE_AFTER (300)\n"
    "      --move INDEX[/SHARD] --from NODE --to NODE  with --cluster: move a replica of the\n"
    "                             index (or of its shard) from one node to another, then exit\n"
    "      --move-tenant NAME     the tenant of the index to move (default)\n"
    "  -v, --verbose              debug logging            FAISS_PROXY_DEBUG=1\n"
    "  -h, --help                 this text\n"
    "  -V, --version              print the version\n";

static void print_usage(FILE *f) {
    fputs(usage, f);
    fputs(usage_more, f);
}

static int parse_size(const char *name, const char *s, size_t min, size_t max, size_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "faiss-proxy-server: %s must be an integer in [%zu, %zu], got '%s'\n", name,
                min, max, s);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

/* parse_size for a setting held as an int. */
static int parse_int(const char *name, const char *s, int min, int max, int *out) {
    size_t n;
    if (parse_size(name, s, (size_t)min, (size_t)max, &n))
        return -1;
    *out = (int)n;
    return 0;
}

static int set_str(const char *name, char *dst, size_t cap, const char *v) {
    if (strlen(v) == 0 || strlen(v) >= cap) {
        fprintf(stderr, "faiss-proxy-server: %s must be 1..%zu characters\n", name, cap - 1);
        return -1;
    }
    strcpy(dst, v);
    return 0;
}

static int set_keys(fpx_config *cfg, const char *v) {
    free(cfg->api_keys);
    cfg->api_keys = NULL;
    if (v && *v) {
        cfg->api_keys = strdup(v);
        if (!cfg->api_keys)
            return -1;
    }
    return 0;
}

/* Long options without a letter (the move command's). */
enum {
    OPT_MOVE = 256,
    OPT_MOVE_TENANT,
    OPT_MOVE_FROM,
    OPT_MOVE_TO,
    OPT_DURABILITY,
    OPT_SYNCED_TIMEOUT,
    OPT_GRAPH_BUILD_TIMEOUT,
    OPT_REPLACE_AFTER,
    OPT_INLINE_SEARCH
};

static int apply(fpx_config *cfg, int opt, const char *v) {
    switch (opt) {
    case 'b':
        return set_str("bind address", cfg->bind_address, sizeof cfg->bind_address, v);
    case 'p':
        return parse_int("port", v, 0, 65535, &cfg->port);
    case 'd':
        return set_str("data dir", cfg->data_dir, sizeof cfg->data_dir, v);
    case 'k':
        return set_keys(cfg, v);
    case 'R':
        /* a flag, or the environment's 0/1 */
        if (v && strcmp(v, "0") && strcmp(v, "1")) {
            fprintf(stderr, "faiss-proxy-server: allow remote unauthenticated must be 0 or 1\n");
            return -1;
        }
        cfg->allow_remote_unauthenticated = !v || !strcmp(v, "1");
        return 0;
    case 'C':
        return set_str("curve secret key file", cfg->curve_key_file, sizeof cfg->curve_key_file, v);
    case 'w':
        return parse_int("workers", v, 1, 256, &cfg->workers);
    case 'm':
        /* ZeroMQ's ZMQ_MAXMSGSIZE is an int64; 16 GiB is plenty. */
        return parse_size("max message size", v, 4096, (size_t)16 << 30, &cfg->max_message_size);
    case 's':
        return parse_size("snapshot bytes", v, 1, (size_t)1 << 40, &cfg->snapshot_bytes);
    case 'M':
        return parse_int("metrics port", v, 0, 65535, &cfg->metrics_port);
    case 'A':
        return set_str("metrics bind address", cfg->metrics_bind, sizeof cfg->metrics_bind, v);
    case 'K':
        return parse_size("compact min dead", v, 0, (size_t)1 << 40, &cfg->compact_min_dead);
    case 'W':
        return parse_size("batch wait", v, 0, 100000, &cfg->batch_wait_us);
    case 'Q':
        return parse_size("search stats wait", v, 0, 60000, &cfg->stats_wait_ms);
    case 'B':
        return parse_size("batch max", v, 1, 65536, &cfg->batch_max);
    case 'S':
        return parse_int("shutdown timeout", v, 0, 86400, &cfg->shutdown_timeout);
    case 'I':
        return parse_size("tenant max indexes", v, 0, (size_t)1 << 40, &cfg->tenant_max_indexes);
    case 'N':
        return parse_size("tenant max vectors", v, 0, (size_t)1 << 50, &cfg->tenant_max_vectors);
    case 'D':
        return parse_size("tenant max disk bytes", v, 0, (size_t)1 << 60,
                          &cfg->tenant_max_disk_bytes);
    case 'F':
        return parse_size("max in-flight per client", v, 1, 256, &cfg->max_inflight_per_client);
    case 'v':
        cfg->log_debug = 1;
        return 0;
    case 'X':
        return set_str("cluster", cfg->cluster_urls, sizeof cfg->cluster_urls, v);
    case 'Y':
        return set_str("node id", cfg->node_id, sizeof cfg->node_id, v);
    case 'E':
        if (strncmp(v, "tcp://", 6) != 0 || !strchr(v + 6, ':') || strchr(v, ' ')) {
            fprintf(stderr, "faiss-proxy-server: advertise must be tcp://HOST:PORT, got '%s'\n", v);
            return -1;
        }
        return set_str("advertise", cfg->advertise, sizeof cfg->advertise, v);
    case 'O':
        if (v && strcmp(v, "0") && strcmp(v, "1")) {
            fprintf(stderr, "faiss-proxy-server: router only must be 0 or 1\n");
            return -1;
        }
        cfg->router_only = !v || !strcmp(v, "1");
        return 0;
    case 'T':
        return parse_int("forward timeout", v, 100, 3600000, &cfg->forward_timeout_ms);
    case OPT_DURABILITY:
        if (strcmp(v, "acked") && strcmp(v, "synced")) {
            fprintf(stderr, "faiss-proxy-server: durability must be acked or synced, got '%s'\n",
                    v);
            return -1;
        }
        cfg->durability_synced = !strcmp(v, "synced");
        return 0;
    case OPT_SYNCED_TIMEOUT:
        return parse_int("synced timeout", v, 100, 3600000, &cfg->synced_timeout_ms);
    case OPT_GRAPH_BUILD_TIMEOUT:
        return parse_int("graph build timeout", v, 1, 86400, &cfg->graph_build_timeout);
    case OPT_INLINE_SEARCH:
        return parse_size("inline search", v, 0, 100000, &cfg->inline_search_us);
    case OPT_REPLACE_AFTER:
        return parse_int("replace after", v, 0, 31536000, &cfg->replace_after);
    case OPT_MOVE:
        return set_str("move", cfg->move_index, sizeof cfg->move_index, v);
    case OPT_MOVE_TENANT:
        return set_str("move tenant", cfg->move_tenant, sizeof cfg->move_tenant, v);
    case OPT_MOVE_FROM:
        return set_str("from", cfg->move_from, sizeof cfg->move_from, v);
    case OPT_MOVE_TO:
        return set_str("to", cfg->move_to, sizeof cfg->move_to, v);
    }
    return -1;
}

/* A node id is a key of the cluster's buckets and part of message ids:
 * letters, digits, '-' and '_' only. */
static int node_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static int node_id_valid(const char *s) {
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!node_char_ok(*s))
            return 0;
    return 1;
}

/* The default node id: the host name, with every other character made '-'. */
static void default_node_id(char *out, size_t cap) {
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        strcpy(host, "node");
    size_t i = 0;
    for (; host[i] && i + 1 < cap; i++)
        out[i] = node_char_ok(host[i]) ? host[i] : '-';
    out[i] = 0;
}

/* --curve-keygen PATH: 1 (exit 0) when both files were written, else -1. */
static int keygen(const char *path) {
    char public_key[FPX_Z85_KEY_LEN + 1];
    fpx_err err;
    if (!path || !*path || fpx_curve_keygen(path, public_key, &err) != 0) {
        fprintf(stderr, "faiss-proxy-server: --curve-keygen: %s\n",
                path && *path ? err.msg : "a path is needed");
        return -1;
    }
    printf("wrote %s (secret key, mode 0600) and %s.pub (public key)\n"
           "server public key: %s\n"
           "start the server with --curve-secret-key-file %s and give clients the public key\n"
           "(FAISS_PROXY_SERVER_KEY=%s.pub)\n",
           path, path, public_key, path, path);
    return 1;
}

int fpx_config_load(fpx_config *cfg, int argc, char **argv) {
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->bind_address, "0.0.0.0");
    cfg->port = 5555;
    strcpy(cfg->data_dir, "./data");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* Workers mostly wait (for a batch, the disk, the client), so there are
     * more of them than cores: concurrent searches must reach the server at
     * the same time to be batched. */
    cfg->cores = ncpu > 0 ? (int)(ncpu > 256 ? 256 : ncpu) : 2;
    cfg->workers = cfg->cores * 8 < 16 ? 16 : cfg->cores * 8 > 64 ? 64 : cfg->cores * 8;
    cfg->batch_wait_us = 200;
    cfg->inline_search_us = 500;
    cfg->stats_wait_ms = 100;
    cfg->batch_max = 256;
    cfg->max_message_size = (size_t)256 << 20;
    cfg->snapshot_bytes = (size_t)64 << 20;
    cfg->shutdown_timeout = 10;
    cfg->compact_min_dead = 1024;
    cfg->metrics_port = -1;
    strcpy(cfg->metrics_bind, "127.0.0.1");
    cfg->forward_timeout_ms = 30000;
    cfg->replace_after = 300;
    cfg->graph_build_timeout = 600;

    static const struct {
        const char *env;
        int opt;
    } envs[] = {
        {"FAISS_BIND_ADDRESS", 'b'},
        {"FAISS_PORT", 'p'},
        {"FAISS_DATA_DIR", 'd'},
        {"FAISS_PROXY_API_KEYS", 'k'},
        {"FAISS_PROXY_WORKERS", 'w'},
        {"FAISS_PROXY_MAX_MESSAGE_SIZE", 'm'},
        {"FAISS_PROXY_SNAPSHOT_BYTES", 's'},
        {"FAISS_PROXY_COMPACT_MIN_DEAD", 'K'},
        {"FAISS_PROXY_METRICS_PORT", 'M'},
        {"FAISS_PROXY_METRICS_BIND", 'A'},
        {"FAISS_PROXY_BATCH_WAIT_US", 'W'},
        {"FAISS_PROXY_SEARCH_STATS_WAIT_MS", 'Q'},
        {"FAISS_PROXY_BATCH_MAX", 'B'},
        {"FAISS_PROXY_ALLOW_REMOTE_UNAUTHENTICATED", 'R'},
        {"FAISS_PROXY_CURVE_SECRET_KEY_FILE", 'C'},
        {"FAISS_PROXY_SHUTDOWN_TIMEOUT", 'S'},
        {"FAISS_PROXY_TENANT_MAX_INDEXES", 'I'},
        {"FAISS_PROXY_TENANT_MAX_VECTORS", 'N'},
        {"FAISS_PROXY_TENANT_MAX_DISK_BYTES", 'D'},
        {"FAISS_PROXY_MAX_INFLIGHT_PER_CLIENT", 'F'},
        {"FAISS_PROXY_CLUSTER", 'X'},
        {"FAISS_PROXY_NODE_ID", 'Y'},
        {"FAISS_PROXY_ADVERTISE", 'E'},
        {"FAISS_PROXY_ROUTER_ONLY", 'O'},
        {"FAISS_PROXY_FORWARD_TIMEOUT_MS", 'T'},
        {"FAISS_PROXY_DURABILITY", OPT_DURABILITY},
        {"FAISS_PROXY_SYNCED_TIMEOUT_MS", OPT_SYNCED_TIMEOUT},
        {"FAISS_PROXY_GRAPH_BUILD_TIMEOUT", OPT_GRAPH_BUILD_TIMEOUT},
        {"FAISS_PROXY_REPLACE_AFTER", OPT_REPLACE_AFTER},
        {"FAISS_PROXY_INLINE_SEARCH_US", OPT_INLINE_SEARCH},
    };
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        const char *v = getenv(envs[i].env);
        if (v && (*v || envs[i].opt == 'k') && apply(cfg, envs[i].opt, v) != 0) {
            fprintf(stderr, "faiss-proxy-server: bad %s\n", envs[i].env);
            return -1;
        }
    }
    const char *dbg = getenv("FAISS_PROXY_DEBUG");
    if (dbg && !strcmp(dbg, "1"))
        cfg->log_debug = 1;

    static const struct option longopts[] = {
        {"bind", required_argument, 0, 'b'},
        {"port", required_argument, 0, 'p'},
        {"data-dir", required_argument, 0, 'd'},
        {"api-keys", required_argument, 0, 'k'},
        {"workers", required_argument, 0, 'w'},
        {"max-message-size", required_argument, 0, 'm'},
        {"snapshot-bytes", required_argument, 0, 's'},
        {"compact-min-dead", required_argument, 0, 'K'},
        {"metrics-port", required_argument, 0, 'M'},
        {"metrics-bind", required_argument, 0, 'A'},
        {"batch-wait-us", required_argument, 0, 'W'},
        {"search-stats-wait-ms", required_argument, 0, 'Q'},
        {"batch-max", required_argument, 0, 'B'},
        {"allow-remote-unauthenticated", no_argument, 0, 'R'},
        {"curve-secret-key-file", required_argument, 0, 'C'},
        {"curve-keygen", required_argument, 0, 'G'},
        {"shutdown-timeout", required_argument, 0, 'S'},
        {"tenant-max-indexes", required_argument, 0, 'I'},
        {"tenant-max-vectors", required_argument, 0, 'N'},
        {"tenant-max-disk-bytes", required_argument, 0, 'D'},
        {"max-inflight-per-client", required_argument, 0, 'F'},
        {"cluster", required_argument, 0, 'X'},
        {"node-id", required_argument, 0, 'Y'},
        {"advertise", required_argument, 0, 'E'},
        {"router-only", no_argument, 0, 'O'},
        {"forward-timeout-ms", required_argument, 0, 'T'},
        {"durability", required_argument, 0, OPT_DURABILITY},
        {"synced-timeout-ms", required_argument, 0, OPT_SYNCED_TIMEOUT},
        {"graph-build-timeout", required_argument, 0, OPT_GRAPH_BUILD_TIMEOUT},
        {"replace-after", required_argument, 0, OPT_REPLACE_AFTER},
        {"inline-search-us", required_argument, 0, OPT_INLINE_SEARCH},
        {"move", required_argument, 0, OPT_MOVE},
        {"move-tenant", required_argument, 0, OPT_MOVE_TENANT},
        {"from", required_argument, 0, OPT_MOVE_FROM},
        {"to", required_argument, 0, OPT_MOVE_TO},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:p:d:k:w:m:s:vhV", longopts, NULL)) != -1) {
        if (opt == 'h') {
            print_usage(stdout);
            return 1;
        }
        if (opt == 'V') {
            printf("faiss-proxy-server %s (protocol 1)\n", FPX_VERSION);
            return 1;
        }
        if (opt == 'G')
            return keygen(optarg);
        if (opt == '?' || apply(cfg, opt, optarg) != 0) {
            print_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "faiss-proxy-server: unexpected argument '%s'\n", argv[optind]);
        print_usage(stderr);
        return -1;
    }
    if (!cfg->node_id[0])
        default_node_id(cfg->node_id, sizeof cfg->node_id);
    if (cfg->cluster_urls[0] && !node_id_valid(cfg->node_id)) {
        fprintf(stderr,
                "faiss-proxy-server: node id '%s' may hold only letters, digits, '-' and "
                "'_'\n",
                cfg->node_id);
        return -1;
    }
    if (cfg->move_index[0] && (!cfg->cluster_urls[0] || !cfg->move_from[0] || !cfg->move_to[0])) {
        fprintf(stderr, "faiss-proxy-server: --move needs --cluster, --from and --to\n");
        return -1;
    }
    /* A synced write forwarded by another node must be answered before that
     * node stops waiting for the reply. */
    if (!cfg->synced_timeout_ms)
        cfg->synced_timeout_ms = cfg->forward_timeout_ms / 2;
    else if (cfg->synced_timeout_ms >= cfg->forward_timeout_ms) {
        fprintf(stderr,
                "faiss-proxy-server: --synced-timeout-ms (%d) must be below "
                "--forward-timeout-ms (%d)\n",
                cfg->synced_timeout_ms, cfg->forward_timeout_ms);
        return -1;
    }
    if (!cfg->move_tenant[0])
        strcpy(cfg->move_tenant, "default");
    if (cfg->max_inflight_per_client == 0) /* a quarter of the workers stays for others */
        cfg->max_inflight_per_client = (size_t)(cfg->workers - cfg->workers / 4);
    if (cfg->curve_key_file[0]) {
        fpx_err err;
        if (fpx_curve_load(cfg->curve_key_file, cfg->curve_public_key, cfg->curve_secret_key,
                           &err) != 0) {
            fprintf(stderr, "faiss-proxy-server: --curve-secret-key-file: %s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

void fpx_config_free(fpx_config *cfg) {
    free(cfg->api_keys);
    cfg->api_keys = NULL;
    sodium_memzero(cfg->curve_secret_key, sizeof cfg->curve_secret_key);
}
