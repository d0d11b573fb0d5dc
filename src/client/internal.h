/*
 * internal.h - what the parts of libfaissproxy's handle share: the
 * connection (conn.c) and the typed operations (calls.c, and add.c for the
 * pipelined add); not a public header.
 *
 * The handle's layout, the decoded reply, and the request plumbing the
 * operations are written with: start a request (fpx_c_begin), send it and
 * read the answer (fpx_c_call), release the answer (fpx_c_done), and the
 * handle's last error (fpx_c_fail, fpx_c_clear_error). These functions are
 * hidden: only the FPX_API functions of faissproxy/client.h are exported.
 */
#ifndef FPX_CLIENT_INTERNAL_H
#define FPX_CLIENT_INTERNAL_H

#include "faissproxy/client.h"
#include "lease.h"
#include "proto/keyfile.h"
#include "proto/proto.h"

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#if defined(__GNUC__) || defined(__clang__)
#define FPX_HIDDEN __attribute__((visibility("hidden")))
#define FPX_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FPX_HIDDEN
#define FPX_PRINTF(f, a)
#endif

/* An add larger than FPX_ADD_PART_BYTES goes as parts of about that size
 * (fewer under a smaller max_message_size), up to add_window of them in
 * flight at once, so that sending, the server's checks, its log and FAISS
 * work at the same time; the memory an add takes beyond its caller's array
 * is window x part (32 MiB by default). */
#define FPX_ADD_PART_BYTES ((size_t)4 << 20)
#define FPX_ADD_WINDOW_DEFAULT 8
#define FPX_ADD_WINDOW_MAX 64
/* Calls answered `unavailable` sent again (FAISS_PROXY_RETRIES), after
 * pauses of 200, 400, 800 ms ... */
#define FPX_RETRIES_DEFAULT 3
#define FPX_RETRIES_MAX 10
#define FPX_RETRY_PAUSE_MS 200L

struct fpx_client {
    void *ctx;
    void *sock;
    char *endpoint;
    char *api_key;
    char *tenant_id;
    char server_key[FPX_Z85_KEY_LEN + 1]; /* Z85; empty: a plain connection */
    char key_error[400];                  /* why the configured server key is unusable */
    int timeout_ms;
    int64_t next_id;
    /* Random, per handle: with request_id it names each write uniquely, so a
     * cluster stores a write sent twice once (docs/protocol.md, client_id). */
    char client_id[33];
    int add_window; /* parts of one add in flight at once (FAISS_PROXY_ADD_WINDOW) */
    /* A call answered `unavailable` (a cluster node that could not reach its
     * cluster, or a holder) is sent again, the same bytes with the same
     * request_id, up to `retries` times (FAISS_PROXY_RETRIES): the cluster
     * stores a write sent twice once (client_id + request_id), so only an
     * operation without that guarantee (retry_safe 0: create_index,
     * delete_index, import_index) is sent again only when the reply says
     * nothing was published. */
    int retries;
    int retry_safe;  /* of the request fpx_c_begin started last */
    int unpublished; /* the last error reply said "published": false */
    /* The last error reply said "published": true: a write in the cluster's
     * log that its replicas did not confirm in time (durability "synced");
     * sent again it would only wait again, so it is not. */
    int unconfirmed;
    /* "durability" sent with every request ("" : none, the server's own);
     * FAISS_PROXY_DURABILITY or fpx_client_set_durability. */
    char durability[16];
    /* 0: searches are sent with "complete": false (fpx_client_set_complete). */
    int complete;
    size_t max_msg; /* the server's max_message_size; 0: not known yet, SIZE_MAX: none given */
    char errtype[32];
    char errstr[512];
    fpx_leaser *leases; /* made by the first leased index; lease.c */
};

/* A reply received and decoded; owns the received bytes. */
typedef struct reply {
    zmq_msg_t msg;
    fpx_msg m;
} reply;

/* Sets the handle's last error (errtype type, errstr from fmt); returns -1. */
FPX_HIDDEN int fpx_c_fail(fpx_client *c, const char *type, const char *fmt, ...) FPX_PRINTF(3, 4);
/* Clears the handle's last error, as a call starts. */
FPX_HIDDEN void fpx_c_clear_error(fpx_client *c);
/* Starts a request header: operation, credentials, request_id, index_id,
 * and room for `extra` more keys. */
FPX_HIDDEN msgpack_packer *fpx_c_begin(fpx_client *c, fpx_out *o, const char *op,
                                       const char *index_id, size_t extra);
/* Finishes the body, sends it, decodes the reply and checks its status.
 * 0 with the reply in r (release it with fpx_c_done), or -1 (error set,
 * nothing to release). */
FPX_HIDDEN int fpx_c_call(fpx_client *c, fpx_out *o, reply *r);
/* The largest request the server takes (its max_message_size; SIZE_MAX when
 * it gives none), learnt with a ping when a request of len bytes could be
 * over it and it is not known yet. SIZE_MAX without asking for a len no
 * server refuses. 0, or -1 (error set) when the server does not answer. */
FPX_HIDDEN int fpx_c_limit(fpx_client *c, size_t len, size_t *limit);
/* Pipelining: sends a finished request without waiting (its request_id in
 * *id). 0, or -1 (error set). */
FPX_HIDDEN int fpx_c_send(fpx_client *c, fpx_out *o, int64_t *id);
/* The same for a request whose header (and metadata, if any) is packed in o
 * and whose data section is n rows of x, then their labels if any, as
 * fpx_c_put_vectors lays them out: a data section of a MB or more goes in
 * memory mapped for the body alone, in huge pages (conn.c). */
FPX_HIDDEN int fpx_c_send_rows(fpx_client *c, fpx_out *o, int64_t n, int64_t d, int binary,
                               const void *x, const int64_t *labels, int64_t *id);
/* Receives the next reply of the requests in flight, whichever it is: its
 * request_id in *id (INT64_MIN when it has none). 0 with *failed 0 and the
 * reply in r (release it with fpx_c_done); 0 with *failed 1 when it is an
 * error reply (the handle's error says which; nothing to release); -1 when
 * no reply came within the timeout (connection_error: the socket was rebuilt
 * and the replies still due are lost). */
FPX_HIDDEN int fpx_c_recv(fpx_client *c, int64_t *id, reply *r, int *failed);
/* Releases a reply fpx_c_call returned. */
FPX_HIDDEN void fpx_c_done(reply *r);

/* ---- calls.c: what the typed operations share (add.c too) ---- */

/* map[key] as an integer: 0, or -1 when absent or not one. */
FPX_HIDDEN int fpx_c_get_int(const msgpack_object *map, const char *key, int64_t *v);
/* Clears the handle's error; index_id set, n and d >= 0. */
FPX_HIDDEN int fpx_c_check_args(fpx_client *c, const char *index_id, int64_t n, int64_t d);
/* Bytes of one float32 row of d components, or (binary) of d bits. */
FPX_HIDDEN size_t fpx_c_row_bytes(int64_t d, int binary);
/* vector_shape [n, columns], and dtype for binary rows: 1 + binary keys. */
FPX_HIDDEN void fpx_c_pack_shape(msgpack_packer *pk, int64_t n, int64_t d, int binary);
/* The data section: the vectors, then the labels if any (the one copy). */
FPX_HIDDEN int fpx_c_put_vectors(fpx_client *c, fpx_out *o, int64_t n, int64_t d, int binary,
                                 const void *x, const int64_t *labels);
/* Appends pre-encoded msgpack bytes. */
FPX_HIDDEN void fpx_c_pack_raw(msgpack_packer *pk, const void *p, size_t n);
/* Requests cut to the server's message size limit: a request's bytes
 * besides its rows; what add row i adds; how many rows from `from` fit
 * under limit (at least one); the limit for n rows (SIZE_MAX: none). */
FPX_HIDDEN size_t fpx_c_request_overhead(const fpx_client *c, const char *index_id, size_t extra);
FPX_HIDDEN size_t fpx_c_add_row_bytes(size_t row, const int64_t *labels, const fpx_item *items,
                                      int64_t i);
FPX_HIDDEN int64_t fpx_c_rows_that_fit(int64_t from, int64_t n, size_t head, size_t limit,
                                       size_t row, const int64_t *labels, const fpx_item *items);
FPX_HIDDEN int fpx_c_call_limit(fpx_client *c, size_t head, int64_t n, size_t per_row,
                                size_t *limit);

#endif
