/*
 * config.h - server configuration: the seed's environment variables, with
 * command-line flags that override them.
 */
#ifndef FPX_CONFIG_H
#define FPX_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "proto/keyfile.h"

/* Longest node name of a cluster (--node-id). */
#define FPX_NODE_ID_MAX 64

typedef struct fpx_config {
    char bind_address[256];
    int port; /* 0: an ephemeral port, reported in the start-up line */
    char data_dir[4096];
    char *api_keys; /* "key1:tenant1,key2:tenant2", or NULL (the default): auth off */
    /* Without keys the server answers loopback clients only (protected mode)
     * unless this is set. */
    int allow_remote_unauthenticated;
    /* CurveZMQ: the key file given, and the keys read from it at start-up
     * (empty strings: a plain, unencrypted front socket). */
    char curve_key_file[4096];
    char curve_public_key[FPX_Z85_KEY_LEN + 1];
    char curve_secret_key[FPX_Z85_KEY_LEN + 1];
    int workers;
    int cores;            /* online CPUs: FAISS calls that run at once on one index */
    size_t batch_wait_us; /* dynamic batching: longest wait for requests on their way */
    /* while no worker is busy, the network thread answers a plain search
     * expected to take at most this long (net.c); 0: never */
    size_t inline_search_us;
    size_t stats_wait_ms; /* a counted search's wait for the statistics' lock; 0: none */
    size_t batch_max;     /* dynamic batching: most query rows in one call; 1 = off */
    size_t max_message_size;
    size_t snapshot_bytes; /* WAL size that triggers a snapshot */
    int shutdown_timeout;  /* seconds requests in flight get after SIGINT/SIGTERM */
    /* Deleted vectors that make an index due for compaction (with a quarter
     * of its slots dead); 0: never compacted. */
    size_t compact_min_dead;
    /* The HTTP metrics endpoint: its port (-1: off, 0: any free port) and
     * address (loopback unless told: it names tenants and indexes). */
    int metrics_port;
    char metrics_bind[256];
    /* Per-tenant quotas, 0 = none: indexes, live vectors, bytes on disk
     * (snapshots and logs). */
    size_t tenant_max_indexes, tenant_max_vectors, tenant_max_disk_bytes;
    /* Requests one client connection may have at the workers at once, so
     * that one client cannot occupy every worker. */
    size_t max_inflight_per_client;
    int log_debug;
    /* Cluster mode (docs/cluster.md): the NATS servers' URLs, comma-separated
     * ("" = a single server, the default), and this node's name in the
     * cluster (default: the host name). */
    char cluster_urls[4096];
    char node_id[FPX_NODE_ID_MAX + 1];
    /* The endpoint other nodes forward clients' requests to ("" = the bound
     * one, a wildcard address replaced by the host name); a router-only node
     * holds no replica and forwards every index's requests; how long a
     * forwarded request may wait for its reply. */
    char advertise[300];
    int router_only;
    int forward_timeout_ms;
    /* durability "synced" (docs/cluster.md): whether a write without a
     * "durability" field asks for it (--durability synced), and how long a
     * write waits for enough replicas to confirm it (0 until loaded: then
     * half of forward_timeout_ms unless --synced-timeout-ms says). */
    int durability_synced;
    int synced_timeout_ms;
    /* Seconds a node placed on an index may stay away (no heartbeat) before
     * a live holder of the index moves its replica to another live node
     * (src/cluster/repair.c); 0: never. */
    int replace_after;
    /* Seconds an NSG graph build, run in a child process (probe.c), may take
     * beyond 1 s per 100000 numbers it is given. */
    int graph_build_timeout;
    /* The one-shot command that moves a replica (--move INDEX[/SHARD] --from
     * NODE --to NODE, src/cluster/move.c): the process moves it and exits
     * instead of serving. "" = serve. */
    char move_index[300]; /* a name is at most 128 characters (FPX_NAME_MAX) */
    char move_tenant[129];
    char move_from[FPX_NODE_ID_MAX + 1], move_to[FPX_NODE_ID_MAX + 1];
} fpx_config;

/*
 * Fills cfg from defaults, then the environment, then argv.
 * Returns 0 to run, 1 when --help/--version/--curve-keygen is done (exit 0),
 * -1 on a bad setting (message printed to stderr; exit 2).
 */
int fpx_config_load(fpx_config *cfg, int argc, char **argv);
void fpx_config_free(fpx_config *cfg);

#endif
