/*
 * faissproxy/client.h - libfaissproxy, the C client of a faiss-proxy server.
 *
 * One opaque handle per connection. Every call returns 0 on success and -1 on
 * failure; the failure's kind and text stay in the handle until the next call
 * (fpx_client_errtype, fpx_client_errstr), so call sites stay simple:
 *
 *     fpx_client *c = fpx_client_new("tcp://127.0.0.1:5555", "key1", NULL);
 *     if (fpx_client_create_index(c, "docs", 128, "Flat", NULL, NULL) != 0)
 *         fprintf(stderr, "%s\n", fpx_client_errstr(c));
 *
 * Transport security: when the server runs with CurveZMQ, give the handle the
 * server's public key (fpx_client_set_server_key, or FAISS_PROXY_SERVER_KEY
 * in the environment); the connection is then encrypted and the server
 * authenticated. Without the right key no reply ever comes: the call fails
 * with "connection_error" after the timeout.
 *
 * A handle is not thread safe: use one per thread. (A handle that created
 * leased indexes runs one thread of its own, which renews them over a
 * connection of its own: it never touches the handle's socket or error.) Requests carry a
 * request_id; a reply that does not match is dropped, and a request that gets
 * no reply within the timeout fails with errtype "connection_error" and the
 * socket is rebuilt so the next call starts clean. Requests also carry the
 * handle's client_id (random, per handle): a cluster stores a write whose
 * client_id and request_id it has already seen only once (docs/protocol.md).
 *
 * A request larger than the server's max_message_size (which the server
 * would drop unanswered) is never sent: the handle learns the limit with a
 * ping before its first request over 4096 bytes, after each reconnection,
 * and at every fpx_client_ping. Adds (with labels, keys and metadata too),
 * searches and range searches over it are sent as consecutive requests of
 * whole rows under it, in order, and their results joined; a split add is
 * not atomic (see fpx_client_add). What cannot be cut (a train, an import,
 * one vector over the limit) fails at once with errtype "limit_exceeded".
 */
#ifndef FAISSPROXY_CLIENT_H
#define FAISSPROXY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FPX_API __attribute__((visibility("default")))
#else
#define FPX_API
#endif

typedef struct fpx_client fpx_client;

/* Connects (lazily, as ZeroMQ does) to endpoint, e.g. "tcp://127.0.0.1:5555".
 * api_key and tenant_id may be NULL. When FAISS_PROXY_SERVER_KEY is set it is
 * used as by fpx_client_set_server_key; if it cannot be used, every call
 * fails with "connection_error" saying why (never a plain connection).
 * Returns NULL only on allocation failure or an invalid endpoint. */
FPX_API fpx_client *fpx_client_new(const char *endpoint, const char *api_key,
                                   const char *tenant_id);
FPX_API void fpx_client_free(fpx_client *c);

/* CurveZMQ: the server's public key, as 40 Z85 characters or the path of the
 * server's public key file (made by faiss-proxy-server --curve-keygen, the
 * .pub file); NULL or "" for a plain connection. The handle makes its own
 * ephemeral key pair. Reconnects at once. Returns 0, or -1 with errtype
 * "validation_error" for a key it cannot use (the handle is then unchanged). */
FPX_API int fpx_client_set_server_key(fpx_client *c, const char *server_key);

/* Milliseconds to wait for each reply (default 30000; <= 0 waits forever). */
FPX_API void fpx_client_set_timeout(fpx_client *c, int timeout_ms);

/* What a write waits for before it is acknowledged (docs/cluster.md,
 * "Durability"): "acked" (in a cluster, JetStream holds it), "synced" (also
 * applied and synced by min(2, replicas) replicas; on one server the same
 * as acked), or NULL / "" for the server's --durability (the default, unless
 * FAISS_PROXY_DURABILITY is set). Sent with every request of the handle.
 * Returns 0, or -1 with errtype "validation_error" for another value. A
 * synced write whose replicas did not confirm it in time fails with
 * "unavailable" and is not sent again: it is in the log. */
FPX_API int fpx_client_set_durability(fpx_client *c, const char *durability);

/* Whether this handle's k-NN searches of an index holding deleted vectors
 * complete the queries that its approximate search answers with fewer than
 * k hits (1, the default: the server's answer, k hits whenever k vectors
 * are live), or leave them as FAISS's search leaves them after its own
 * remove_ids (0: FAISS's answer; the FAISS drop-ins set it). Float indexes
 * (docs/protocol.md, search, "complete"). */
FPX_API void fpx_client_set_complete(fpx_client *c, int complete);

/* The last error: its wire kind ("validation_error", "not_found", ...,
 * or "connection_error" when the server did not answer) and its message.
 * Empty strings after a successful call. Valid until the next call. */
FPX_API const char *fpx_client_errtype(const fpx_client *c);
FPX_API const char *fpx_client_errstr(const fpx_client *c);

/* What the server reports about one index. */
typedef struct fpx_index_info {
    char index_id[129];
    char index_type[256];
    char metric[8]; /* "L2" or "IP" */
    int64_t dimension;
    int64_t ntotal;
    int is_trained;
} fpx_index_info;

FPX_API int fpx_client_ping(fpx_client *c);

/* index_type: NULL for "IndexFlatL2", or any FAISS factory string.
 * metric: NULL, "L2" or "IP". info may be NULL. */
FPX_API int fpx_client_create_index(fpx_client *c, const char *index_id, int64_t dimension,
                                    const char *index_type, const char *metric,
                                    fpx_index_info *info);
/*
 * Leases: an index created with a lease is deleted by the server once no
 * request renewed it for lease_seconds (docs/protocol.md). While the handle
 * lives, a thread of its own renews every lease it created, every third of
 * the shortest, over a separate connection; fpx_client_free stops it, and
 * the leases then lapse unless the indexes were deleted. So the indexes a
 * program makes for itself do not outlive it when it crashes.
 * lease_seconds: 1..86400; 0 for no lease (as fpx_client_create_index);
 * FPX_LEASE_FROM_ENV for the environment's FAISS_PROXY_LEASE_SECONDS
 * (default FPX_LEASE_DEFAULT; 0 turns leases off), as the drop-ins use.
 */
#define FPX_LEASE_FROM_ENV (-1)
#define FPX_LEASE_DEFAULT 60
FPX_API int fpx_client_create_index_leased(fpx_client *c, const char *index_id, int64_t dimension,
                                           const char *index_type, const char *metric,
                                           int64_t lease_seconds, fpx_index_info *info);
/* Changes index_id's lease on the server: 0 removes it (the index then never
 * expires: how a program keeps an index it made), else 1..86400 and this
 * handle renews it from now on. */
FPX_API int fpx_client_set_lease(fpx_client *c, const char *index_id, int64_t lease_seconds);
FPX_API int fpx_client_get_index_info(fpx_client *c, const char *index_id, fpx_index_info *info);
FPX_API int fpx_client_delete_index(fpx_client *c, const char *index_id);
/* *infos is malloc'd (free with free()); *count entries. */
FPX_API int fpx_client_list_indexes(fpx_client *c, fpx_index_info **infos, size_t *count);

/* Trains the index on n vectors of dimension d. */
FPX_API int fpx_client_train(fpx_client *c, const char *index_id, int64_t n, int64_t d,
                             const float *x);

/* One vector's caller key and metadata for fpx_client_add. key may be NULL
 * (no key); metadata is one msgpack-encoded map (or NULL / size 0 for none). */
typedef struct fpx_item {
    const char *key;
    const void *metadata;
    size_t metadata_size;
} fpx_item;

/*
 * Adds n vectors of dimension d. labels (may be NULL) gives each vector's
 * label, as FAISS add_with_ids; items (may be NULL) gives caller keys and
 * metadata, with upsert on a key the index already holds. *ntotal (may be
 * NULL) receives the index's size after the add.
 *
 * An add over 4 MiB (or over the server's max_message_size, if smaller)
 * goes in parts of about that size, several in flight at once (8, or
 * FAISS_PROXY_ADD_WINDOW, 1..64), applied by the server in the order sent,
 * so unkeyed vectors get the labels FAISS's add would give. Each part is
 * added whole and acknowledged once durable. When a part fails, no more are
 * sent and those in flight are waited for: the error message says exactly
 * which rows were added (the first N of M, plus any part in flight after the
 * failed one that succeeded; a part without a reply is named as unknown),
 * and *ntotal holds the index's size after the last part that succeeded (it
 * is left as it was when none did).
 */
FPX_API int fpx_client_add(fpx_client *c, const char *index_id, int64_t n, int64_t d,
                           const float *x, const int64_t *labels, const fpx_item *items,
                           int64_t *ntotal);

/* Options of a search; zero-initialise and set what you need. */
typedef struct fpx_search_opts {
    int64_t nprobe;     /* IVF: lists to visit (<= 0: index default) */
    int64_t ef_search;  /* HNSW: efSearch (<= 0: index default) */
    const void *filter; /* msgpack map of field -> value, all must be equal */
    size_t filter_size;
} fpx_search_opts;

/* k-NN search of nq queries of dimension d. D and I are caller-allocated,
 * nq*k each; exactly what FAISS search returns (label -1 for missing hits).
 * opts may be NULL. */
FPX_API int fpx_client_search(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                              const float *x, int64_t k, const fpx_search_opts *opts, float *D,
                              int64_t *I);

/* One hit's caller key and metadata, as returned by fpx_client_search_ex. */
typedef struct fpx_hit {
    char *key;         /* NUL-terminated key text (an integer key printed in
                          decimal), or NULL when the vector has no key or the
                          slot is empty */
    uint8_t *metadata; /* msgpack-encoded map, or NULL */
    size_t metadata_size;
} fpx_hit;

/* As fpx_client_search, and also returns nq*k hits with keys and metadata in
 * *hits (free with fpx_hits_free(hits, nq*k)). */
FPX_API int fpx_client_search_ex(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                                 const float *x, int64_t k, const fpx_search_opts *opts, float *D,
                                 int64_t *I, fpx_hit **hits);
FPX_API void fpx_hits_free(fpx_hit *hits, size_t n);

/* Deletes by caller keys (string keys) or by labels. *deleted (may be NULL)
 * receives how many vectors were deleted. */
FPX_API int fpx_client_delete_keys(fpx_client *c, const char *index_id, size_t n,
                                   const char *const *keys, int64_t *deleted);
FPX_API int fpx_client_delete_labels(fpx_client *c, const char *index_id, size_t n,
                                     const int64_t *labels, int64_t *deleted);

/* ---- FAISS's index API beyond the seed (docs/protocol.md) ------------------ */

/* Range search of nq queries: results of query i are lims[i]..lims[i+1].
 * *lims (nq+1), *labels and *distances are malloc'd; free them with free(). */
FPX_API int fpx_client_range_search(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                                    const float *x, float radius, const fpx_search_opts *opts,
                                    int64_t **lims, int64_t **labels, float **distances);

/* The vector of one label (d floats), or of labels i0..i0+n-1 (n*d floats). */
FPX_API int fpx_client_reconstruct(fpx_client *c, const char *index_id, int64_t label, int64_t d,
                                   float *out);
FPX_API int fpx_client_reconstruct_n(fpx_client *c, const char *index_id, int64_t i0, int64_t n,
                                     int64_t d, float *out);

/* FAISS remove_ids by a list of labels, or by the label range [lo, hi).
 * *removed (may be NULL) receives the count. */
FPX_API int fpx_client_remove_ids(fpx_client *c, const char *index_id, size_t n,
                                  const int64_t *labels, int64_t *removed);
FPX_API int fpx_client_remove_range(fpx_client *c, const char *index_id, int64_t lo, int64_t hi,
                                    int64_t *removed);

/* FAISS reset: removes every vector, keeps the training. */
FPX_API int fpx_client_reset(fpx_client *c, const char *index_id);

/* FAISS ParameterSpace::set_index_parameter, durable on the server. */
FPX_API int fpx_client_set_param(fpx_client *c, const char *index_id, const char *name,
                                 double value);

/* The index in FAISS's write_index format; *bytes is malloc'd (free()). */
FPX_API int fpx_client_export(fpx_client *c, const char *index_id, uint8_t **bytes, size_t *len);
/* Creates index_id from FAISS write_index bytes; index_type (may be NULL) is
 * the text reported for it. info may be NULL. */
FPX_API int fpx_client_import(fpx_client *c, const char *index_id, const char *index_type,
                              const void *bytes, size_t len, fpx_index_info *info);
/* fpx_client_import with a lease, as fpx_client_create_index_leased. */
FPX_API int fpx_client_import_leased(fpx_client *c, const char *index_id, const char *index_type,
                                     const void *bytes, size_t len, int64_t lease_seconds,
                                     fpx_index_info *info);

/* ---- binary indexes ("BFlat", "BIVF<n>", "BHNSW<M>"; d in bits, vectors of
 * d/8 bytes, int32 Hamming distances) ---------------------------------------- */
FPX_API int fpx_client_train_binary(fpx_client *c, const char *index_id, int64_t n, int64_t d,
                                    const uint8_t *x);
FPX_API int fpx_client_add_binary(fpx_client *c, const char *index_id, int64_t n, int64_t d,
                                  const uint8_t *x, const int64_t *labels, int64_t *ntotal);
FPX_API int fpx_client_search_binary(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                                     const uint8_t *x, int64_t k, int32_t *D, int64_t *I);
FPX_API int fpx_client_range_search_binary(fpx_client *c, const char *index_id, int64_t nq,
                                           int64_t d, const uint8_t *x, int radius, int64_t **lims,
                                           int64_t **labels, float **distances);
FPX_API int fpx_client_reconstruct_binary(fpx_client *c, const char *index_id, int64_t label,
                                          int64_t d, uint8_t *out);
FPX_API int fpx_client_reconstruct_n_binary(fpx_client *c, const char *index_id, int64_t i0,
                                            int64_t n, int64_t d, uint8_t *out);

/*
 * Sends one raw request body and returns the raw reply body (malloc'd; free
 * with free()). For operations and fields this header has no typed call for.
 * The body must be a complete protocol body; this call adds nothing to it.
 */
FPX_API int fpx_client_request_raw(fpx_client *c, const void *body, size_t len, uint8_t **reply,
                                   size_t *reply_len);

/*
 * Pipelined raw requests: fpx_client_send_raw sends a complete body (copied)
 * without waiting; fpx_client_recv_raw returns the next reply of any request
 * in flight (malloc'd; free with free()), in whatever order they come: give
 * each body its own request_id to match them. The server locks one
 * connection's requests in the order they were sent, so writes to an index
 * are applied in that order. A timeout (connection_error) rebuilds the
 * socket: the replies still due are then lost.
 */
FPX_API int fpx_client_send_raw(fpx_client *c, const void *body, size_t len);
FPX_API int fpx_client_recv_raw(fpx_client *c, uint8_t **reply, size_t *reply_len);

#ifdef __cplusplus
}
#endif

#endif
