/*
 * client.c - libfaissproxy: one connection to a faiss-proxy server.
 *
 * A DEALER socket with an empty delimiter frame before each body (the
 * protocol's pipelining form, used here one request at a time). Each request
 * carries an increasing request_id; a reply that carries another id is a
 * late answer to a request that already timed out, and is dropped. On a
 * timeout the socket is closed (linger 0) and made anew, so the next call
 * does not read the late reply.
 *
 * With the server's public key (fpx_client_set_server_key, or the
 * environment's FAISS_PROXY_SERVER_KEY) the socket is a CurveZMQ client with
 * an ephemeral key pair of its own, made anew with every socket: the server
 * is authenticated and everything, API key included, travels encrypted. A
 * server key that cannot be used is never a reason to fall back to plain
 * text: the handle then refuses every call, saying why.
 *
 * The error of the last call lives in the handle (hiredis style): errtype is
 * the protocol's error_type, or "connection_error" when the server did not
 * answer, or "protocol_error" when its reply could not be read.
 *
 * Message size: the server's transport drops a connection that sends a
 * message over its max_message_size, without a reply, so such a request
 * would only time out. The handle learns the limit from a ping (the first
 * request larger than any limit a server can have triggers one, and every
 * fpx_client_ping refreshes it) and refuses a larger request itself, with
 * errtype "limit_exceeded", before sending it.
 */
#include "faissproxy/client.h"
#include "lease.h"
#include "proto/keyfile.h"
#include "proto/proto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

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
    size_t max_msg; /* the server's max_message_size; 0: not known yet, SIZE_MAX: none given */
    char errtype[32];
    char errstr[512];
    fpx_leaser *leases; /* made by the first leased index; lease.c */
};

/* No server takes a max_message_size below this (its --max-message-size
 * minimum): smaller requests are sent without knowing the limit. */
#define SMALLEST_LIMIT 4096

/* A reply received and decoded; owns the received bytes. */
typedef struct reply {
    zmq_msg_t msg;
    fpx_msg m;
} reply;

static int fail(fpx_client *c, const char *type, const char *fmt, ...) {
    snprintf(c->errtype, sizeof c->errtype, "%s", type);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errstr, sizeof c->errstr, fmt, ap);
    va_end(ap);
    return -1;
}

static void clear_error(fpx_client *c) {
    c->errtype[0] = 0;
    c->errstr[0] = 0;
}

/* Makes the socket a CurveZMQ client of the server key, with a fresh key
 * pair of its own. */
static int set_curve(fpx_client *c) {
    char pub[FPX_Z85_KEY_LEN + 1], sec[FPX_Z85_KEY_LEN + 1];
    int rc = zmq_curve_keypair(pub, sec) != 0 ||
             zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, c->server_key, sizeof c->server_key) ||
             zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, pub, sizeof pub) ||
             zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, sec, sizeof sec);
    explicit_bzero(sec, sizeof sec);
    return rc ? -1 : 0;
}

static int open_socket(fpx_client *c) {
    if (c->key_error[0])
        return -1;
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock)
        return -1;
    int linger = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    if ((c->server_key[0] && set_curve(c) != 0) || zmq_connect(c->sock, c->endpoint) != 0) {
        zmq_close(c->sock);
        c->sock = NULL;
        return -1;
    }
    return 0;
}

/* A key file is a few lines; anything larger is not one. */
#define FPX_KEYFILE_MAX 65536

/*
 * The server's public key from v: 40 Z85 characters, or the path of a key
 * file with a public-key line (the server's .pub file). 0 with the key in
 * out, or -1 with the reason in why.
 */
static int resolve_server_key(const char *v, char *out, char *why, size_t cap) {
    uint8_t raw[32];
    size_t n = strlen(v);
    if (fpx_z85_key_valid(v, n)) {
        if (!zmq_z85_decode(raw, v)) {
            snprintf(why, cap, "'%s' is not a valid Z85 key", v);
            return -1;
        }
        memcpy(out, v, n + 1);
        return 0;
    }
    FILE *f = fopen(v, "rb");
    if (!f) {
        snprintf(why, cap,
                 "'%.200s' is neither a public key (40 Z85 characters) nor a readable key "
                 "file: %s",
                 v, strerror(errno));
        return -1;
    }
    char *text = malloc(FPX_KEYFILE_MAX);
    size_t len = text ? fread(text, 1, FPX_KEYFILE_MAX, f) : 0;
    int too_big = len == FPX_KEYFILE_MAX, read_err = ferror(f);
    fclose(f);
    char key[FPX_Z85_KEY_LEN + 1], secret[FPX_Z85_KEY_LEN + 1];
    int rc = !text || too_big || read_err ? -2 : fpx_keyfile_find(text, len, "public-key", key);
    int has_secret = text && rc != -2 && fpx_keyfile_find(text, len, "secret-key", secret) != 1;
    if (text)
        explicit_bzero(text, len);
    explicit_bzero(secret, sizeof secret);
    free(text);
    if (rc == -2) {
        snprintf(why, cap, "cannot read the key file %.200s", v);
        return -1;
    }
    if (has_secret) {
        /* the server's secret does not belong on a client: give it the .pub */
        snprintf(why, cap,
                 "%.200s holds a secret key; clients need only the server's public key file "
                 "(.pub)",
                 v);
        return -1;
    }
    if (rc != 0 || !zmq_z85_decode(raw, key)) {
        snprintf(why, cap, "%.200s has no valid public-key line", v);
        return -1;
    }
    memcpy(out, key, sizeof key);
    return 0;
}

int fpx_client_set_server_key(fpx_client *c, const char *server_key) {
    clear_error(c);
    char key[FPX_Z85_KEY_LEN + 1] = "", why[300];
    if (server_key && *server_key && resolve_server_key(server_key, key, why, sizeof why) != 0)
        return fail(c, "validation_error", "server key: %s", why);
    memcpy(c->server_key, key, sizeof key);
    c->key_error[0] = 0;
    fpx_leaser_set_server_key(c->leases, c->server_key);
    if (c->sock)
        zmq_close(c->sock);
    c->sock = NULL;
    if (open_socket(c) != 0)
        return fail(c, "connection_error", "cannot connect to %s", c->endpoint);
    return 0;
}

fpx_client *fpx_client_new(const char *endpoint, const char *api_key, const char *tenant_id) {
    if (!endpoint)
        return NULL;
    fpx_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->timeout_ms = 30000;
    c->next_id = 1;
    c->endpoint = strdup(endpoint);
    c->api_key = api_key ? strdup(api_key) : NULL;
    c->tenant_id = tenant_id ? strdup(tenant_id) : NULL;
    c->ctx = zmq_ctx_new();
    const char *env_key = getenv("FAISS_PROXY_SERVER_KEY");
    if (env_key && *env_key) {
        char why[300];
        if (resolve_server_key(env_key, c->server_key, why, sizeof why) != 0)
            snprintf(c->key_error, sizeof c->key_error, "FAISS_PROXY_SERVER_KEY: %s", why);
    }
    if (!c->endpoint || (api_key && !c->api_key) || (tenant_id && !c->tenant_id) || !c->ctx ||
        (!c->key_error[0] && open_socket(c) != 0)) {
        fpx_client_free(c);
        return NULL;
    }
    return c;
}

void fpx_client_free(fpx_client *c) {
    if (!c)
        return;
    fpx_leaser_free(c->leases); /* first: it stops renewing */
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c->endpoint);
    free(c->api_key);
    free(c->tenant_id);
    free(c);
}

void fpx_client_set_timeout(fpx_client *c, int timeout_ms) {
    c->timeout_ms = timeout_ms;
}

const char *fpx_client_errtype(const fpx_client *c) {
    return c->errtype;
}

const char *fpx_client_errstr(const fpx_client *c) {
    return c->errstr;
}

/* ---- request plumbing --------------------------------------------------------------- */

/* Starts a request header: operation, credentials, request_id, index_id,
 * and room for `extra` more keys. */
static msgpack_packer *begin(fpx_client *c, fpx_out *o, const char *op, const char *index_id,
                             size_t extra) {
    fpx_out_init(o);
    msgpack_packer *pk = fpx_out_hdr(o);
    msgpack_pack_map(pk, 2 + (c->api_key != NULL) + (c->tenant_id != NULL) + (index_id != NULL) +
                             extra);
    fpx_pack_cstr(pk, "operation");
    fpx_pack_cstr(pk, op);
    fpx_pack_cstr(pk, "request_id");
    msgpack_pack_int64(pk, c->next_id);
    if (c->api_key) {
        fpx_pack_cstr(pk, "api_key");
        fpx_pack_cstr(pk, c->api_key);
    }
    if (c->tenant_id) {
        fpx_pack_cstr(pk, "tenant_id");
        fpx_pack_cstr(pk, c->tenant_id);
    }
    if (index_id) {
        fpx_pack_cstr(pk, "index_id");
        fpx_pack_cstr(pk, index_id);
    }
    return pk;
}

static void free_buf(void *data, void *hint) {
    (void)hint;
    free(data);
}

static void reset_socket(fpx_client *c) {
    if (c->sock)
        zmq_close(c->sock);
    c->sock = NULL;
    c->max_msg = 0; /* the server may have been restarted with another limit */
    open_socket(c);
}

/* Sends body (taken), waits for the reply with this request's id. */
static int roundtrip(fpx_client *c, uint8_t *body, size_t len, int64_t id, zmq_msg_t *out) {
    if (c->key_error[0]) {
        free(body);
        return fail(c, "connection_error", "%s", c->key_error);
    }
    if (!c->sock && open_socket(c) != 0) {
        free(body);
        return fail(c, "connection_error", "cannot connect to %s", c->endpoint);
    }
    zmq_msg_t m;
    zmq_msg_init_data(&m, body, len, free_buf, NULL);
    if (zmq_send(c->sock, "", 0, ZMQ_SNDMORE) < 0 || zmq_msg_send(&m, c->sock, 0) < 0) {
        zmq_msg_close(&m);
        reset_socket(c);
        return fail(c, "connection_error", "cannot send to %s: %s", c->endpoint,
                    zmq_strerror(zmq_errno()));
    }
    for (;;) {
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, c->timeout_ms > 0 ? c->timeout_ms : -1);
        if (rc <= 0) {
            reset_socket(c);
            /* A failed handshake looks exactly like this (ZeroMQ retries it
             * quietly), so say which handshake it was. */
            return fail(c, "connection_error", "no reply from %s within %d ms (%s)", c->endpoint,
                        c->timeout_ms,
                        c->server_key[0]
                            ? "CurveZMQ: a server with another key, or without CurveZMQ, "
                              "never answers"
                            : "plain connection: a CurveZMQ server answers only clients "
                              "given its public key, and a server without API keys only "
                              "loopback clients");
        }
        /* [empty delimiter][body], possibly more frames from a confused peer */
        zmq_msg_t f;
        zmq_msg_init(&f);
        zmq_msg_recv(&f, c->sock, 0);
        int more = zmq_msg_more(&f);
        if (zmq_msg_size(&f) != 0 || !more) {
            zmq_msg_close(&f);
            while (more) {
                zmq_msg_init(&f);
                zmq_msg_recv(&f, c->sock, 0);
                more = zmq_msg_more(&f);
                zmq_msg_close(&f);
            }
            continue;
        }
        zmq_msg_close(&f);
        zmq_msg_init(out);
        zmq_msg_recv(out, c->sock, 0);
        while (zmq_msg_more(out)) { /* extra frames: not ours to read */
            zmq_msg_t x;
            zmq_msg_init(&x);
            zmq_msg_recv(&x, c->sock, 0);
            int xm = zmq_msg_more(&x);
            zmq_msg_close(&x);
            if (!xm)
                break;
        }
        /* Match the request id; drop stale replies. */
        fpx_msg dm;
        fpx_err err;
        if (fpx_msg_decode(&dm, zmq_msg_data(out), zmq_msg_size(out), &err) == 0) {
            const msgpack_object *rid = fpx_map_get(dm.header, "request_id");
            int64_t got;
            int match = id == INT64_MIN || (rid && fpx_obj_int(rid, &got) == 0 && got == id);
            int unmatched = !rid; /* a reply without id: a garbage request's answer */
            fpx_msg_destroy(&dm);
            if (match || unmatched)
                return 0;
        } else {
            return 0; /* let the caller report the unreadable reply */
        }
        zmq_msg_close(out);
    }
}

static int call(fpx_client *c, fpx_out *o, reply *r);
static void done(reply *r);

/* Reads max_message_size from a ping reply's metadata. */
static void note_limit(fpx_client *c, const reply *r) {
    const msgpack_object *v = fpx_map_get(r->m.meta, "max_message_size");
    int64_t n;
    c->max_msg = v && fpx_obj_int(v, &n) == 0 && n > 0 ? (size_t)n : SIZE_MAX;
}

/* Checks a request of len bytes against the server's limit, asking the
 * server for it first when it is not known. 0 to send, -1 (error set) not. */
static int check_size(fpx_client *c, size_t len) {
    if (len <= SMALLEST_LIMIT)
        return 0;
    if (c->max_msg == 0) {
        fpx_out o;
        reply r;
        begin(c, &o, "ping", NULL, 0);
        if (call(c, &o, &r) != 0) {
            /* No answer: neither would the request get one. A refused ping
             * (a wrong key...): send the request, it gets its own answer. */
            if (!strcmp(c->errtype, "connection_error"))
                return -1;
            clear_error(c);
            return 0;
        }
        note_limit(c, &r);
        done(&r);
    }
    if (len > c->max_msg)
        return fail(c, "limit_exceeded",
                    "the request is %zu bytes, over the server's max_message_size of %zu bytes "
                    "(the server would drop it unanswered): send fewer vectors per call",
                    len, c->max_msg);
    return 0;
}

/* Finishes the body, sends it, decodes the reply and checks its status. */
static int call(fpx_client *c, fpx_out *o, reply *r) {
    uint8_t *body;
    size_t len;
    int64_t id = c->next_id++;
    if (fpx_out_finish(o, &body, &len) != 0)
        return fail(c, "internal_error", "out of memory building the request");
    if (check_size(c, len) != 0) {
        free(body);
        return -1;
    }
    if (roundtrip(c, body, len, id, &r->msg) != 0)
        return -1;
    fpx_err err;
    if (fpx_msg_decode(&r->m, zmq_msg_data(&r->msg), zmq_msg_size(&r->msg), &err) != 0) {
        zmq_msg_close(&r->msg);
        return fail(c, "protocol_error", "unreadable reply: %s", err.msg);
    }
    const msgpack_object *st = fpx_map_get(r->m.header, "status");
    if (st && fpx_obj_str_eq(st, "ok"))
        return 0;
    const msgpack_object *et = fpx_map_get(r->m.header, "error_type");
    const msgpack_object *msg = fpx_map_get(r->m.header, "message");
    const char *ts = "internal_error", *ms = "request failed";
    size_t tn = strlen(ts), mn = strlen(ms);
    if (et)
        fpx_obj_str(et, &ts, &tn);
    if (msg)
        fpx_obj_str(msg, &ms, &mn);
    fail(c, "", "%.*s", (int)mn, ms);
    snprintf(c->errtype, sizeof c->errtype, "%.*s", (int)tn, ts);
    fpx_msg_destroy(&r->m);
    zmq_msg_close(&r->msg);
    return -1;
}

static void done(reply *r) {
    fpx_msg_destroy(&r->m);
    zmq_msg_close(&r->msg);
}

static int get_int(const msgpack_object *map, const char *key, int64_t *v) {
    const msgpack_object *o = fpx_map_get(map, key);
    return o ? fpx_obj_int(o, v) : -1;
}

static void copy_str(const msgpack_object *map, const char *key, char *dst, size_t cap) {
    const msgpack_object *o = fpx_map_get(map, key);
    const char *s;
    size_t n;
    dst[0] = 0;
    if (o && fpx_obj_str(o, &s, &n) == 0)
        snprintf(dst, cap, "%.*s", (int)n, s);
}

static int read_info(fpx_client *c, const msgpack_object *m, fpx_index_info *info) {
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return fail(c, "protocol_error", "reply lacks the index info map");
    memset(info, 0, sizeof *info);
    copy_str(m, "index_id", info->index_id, sizeof info->index_id);
    copy_str(m, "index_type", info->index_type, sizeof info->index_type);
    copy_str(m, "metric", info->metric, sizeof info->metric);
    get_int(m, "dimension", &info->dimension);
    get_int(m, "ntotal", &info->ntotal);
    const msgpack_object *t = fpx_map_get(m, "is_trained");
    info->is_trained = t && t->type == MSGPACK_OBJECT_BOOLEAN && t->via.boolean;
    return 0;
}

static int check_args(fpx_client *c, const char *index_id, int64_t n, int64_t d) {
    clear_error(c);
    if (!index_id)
        return fail(c, "validation_error", "index_id is NULL");
    if (n < 0)
        return fail(c, "validation_error", "n must be >= 0");
    if (d < 0)
        return fail(c, "validation_error", "d must be >= 0");
    return 0;
}

/* Vectors are float32 rows of d components, or (binary) uint8 rows of d/8
 * bytes for d bits. */
static size_t row_bytes(int64_t d, int binary) {
    return binary ? (size_t)d / 8 : (size_t)d * sizeof(float);
}

/* Packs vector_shape [n, columns], and dtype for binary rows: 1 + binary keys. */
static void pack_shape(msgpack_packer *pk, int64_t n, int64_t d, int binary) {
    fpx_pack_cstr(pk, "vector_shape");
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, n);
    msgpack_pack_int64(pk, binary ? d / 8 : d);
    if (binary) {
        fpx_pack_cstr(pk, "dtype");
        fpx_pack_cstr(pk, "uint8");
    }
}

/* Reserves the data section and copies the vectors (the one copy). */
static int put_vectors(fpx_client *c, fpx_out *o, int64_t n, int64_t d, int binary, const void *x,
                       const int64_t *labels) {
    size_t vb = (size_t)n * row_bytes(d, binary);
    size_t lb = labels ? (size_t)n * sizeof(int64_t) : 0;
    uint8_t *p = fpx_out_data(o, vb + lb);
    if (!p) {
        fpx_out_discard(o);
        return fail(c, "internal_error", "out of memory building the request");
    }
    if (vb)
        memcpy(p, x, vb);
    if (lb)
        memcpy(p + vb, labels, lb);
    return 0;
}

/* Appends pre-encoded msgpack bytes to a packer. */
static void pack_raw(msgpack_packer *pk, const void *p, size_t n) {
    pk->callback(pk->data, (const char *)p, n);
}

/* ---- operations -------------------------------------------------------------------- */

int fpx_client_ping(fpx_client *c) {
    clear_error(c);
    fpx_out o;
    reply r;
    begin(c, &o, "ping", NULL, 0);
    if (call(c, &o, &r))
        return -1;
    note_limit(c, &r);
    done(&r);
    return 0;
}

/* The lease to ask for: lease_seconds, or with FPX_LEASE_FROM_ENV the
 * drop-ins' FAISS_PROXY_LEASE_SECONDS (default FPX_LEASE_DEFAULT; 0: none).
 * 0 or -1 (error set). */
static int resolve_lease(fpx_client *c, int64_t lease_seconds, int64_t *out) {
    *out = lease_seconds;
    if (lease_seconds != FPX_LEASE_FROM_ENV)
        return lease_seconds < 0 ? fail(c, "validation_error", "lease_seconds must be >= 0") : 0;
    const char *v = getenv("FAISS_PROXY_LEASE_SECONDS");
    *out = FPX_LEASE_DEFAULT;
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < 0)
        return fail(c, "validation_error",
                    "FAISS_PROXY_LEASE_SECONDS must be a whole number of seconds (0: no lease), "
                    "got '%.40s'",
                    v);
    *out = n;
    return 0;
}

/* After a leased index was made: renew it from now on. */
static int lease_made(fpx_client *c, const char *index_id, int64_t lease) {
    if (lease == 0)
        return 0;
    if (!c->leases)
        c->leases = fpx_leaser_new(c->endpoint, c->api_key, c->tenant_id, c->server_key);
    if (!c->leases || fpx_leaser_add(c->leases, index_id, lease) != 0) {
        /* Not renewed, it would lapse under the program: better not to keep it. */
        fpx_client_delete_index(c, index_id);
        return fail(c, "internal_error", "cannot start renewing the lease of '%s'", index_id);
    }
    return 0;
}

int fpx_client_create_index(fpx_client *c, const char *index_id, int64_t dimension,
                            const char *index_type, const char *metric, fpx_index_info *info) {
    return fpx_client_create_index_leased(c, index_id, dimension, index_type, metric, 0, info);
}

int fpx_client_create_index_leased(fpx_client *c, const char *index_id, int64_t dimension,
                                   const char *index_type, const char *metric,
                                   int64_t lease_seconds, fpx_index_info *info) {
    int64_t lease;
    if (check_args(c, index_id, 0, dimension) || resolve_lease(c, lease_seconds, &lease))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = begin(c, &o, "create_index", index_id, 2 + (metric != NULL) + (lease > 0));
    if (lease > 0) {
        fpx_pack_cstr(pk, "lease_seconds");
        msgpack_pack_int64(pk, lease);
    }
    fpx_pack_cstr(pk, "dimension");
    msgpack_pack_int64(pk, dimension);
    fpx_pack_cstr(pk, "index_type");
    fpx_pack_cstr(pk, index_type ? index_type : "IndexFlatL2");
    if (metric) {
        fpx_pack_cstr(pk, "metric");
        fpx_pack_cstr(pk, metric);
    }
    if (call(c, &o, &r))
        return -1;
    int rc = info ? read_info(c, r.m.meta, info) : 0;
    done(&r);
    return rc == 0 ? lease_made(c, index_id, lease) : rc;
}

int fpx_client_set_lease(fpx_client *c, const char *index_id, int64_t lease_seconds) {
    if (check_args(c, index_id, 0, 0))
        return -1;
    if (lease_seconds < 0)
        return fail(c, "validation_error", "lease_seconds must be >= 0");
    fpx_out o;
    reply r;
    msgpack_packer *pk = begin(c, &o, "set_lease", index_id, 1);
    fpx_pack_cstr(pk, "lease_seconds");
    msgpack_pack_int64(pk, lease_seconds);
    if (call(c, &o, &r))
        return -1;
    done(&r);
    if (lease_seconds == 0) {
        fpx_leaser_forget(c->leases, index_id);
        return 0;
    }
    return lease_made(c, index_id, lease_seconds);
}

int fpx_client_get_index_info(fpx_client *c, const char *index_id, fpx_index_info *info) {
    if (check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    begin(c, &o, "get_index_info", index_id, 0);
    if (call(c, &o, &r))
        return -1;
    int rc = info ? read_info(c, r.m.meta, info) : 0;
    done(&r);
    return rc;
}

int fpx_client_delete_index(fpx_client *c, const char *index_id) {
    if (check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    begin(c, &o, "delete_index", index_id, 0);
    fpx_leaser_forget(c->leases, index_id);
    if (call(c, &o, &r))
        return -1;
    done(&r);
    return 0;
}

int fpx_client_list_indexes(fpx_client *c, fpx_index_info **infos, size_t *count) {
    clear_error(c);
    fpx_out o;
    reply r;
    begin(c, &o, "list_indexes", NULL, 0);
    if (call(c, &o, &r))
        return -1;
    const msgpack_object *l = fpx_map_get(r.m.meta, "indexes");
    int rc = 0;
    if (!l || l->type != MSGPACK_OBJECT_ARRAY) {
        rc = fail(c, "protocol_error", "reply lacks the index list");
    } else {
        size_t n = l->via.array.size;
        fpx_index_info *a = calloc(n ? n : 1, sizeof *a);
        if (!a)
            rc = fail(c, "internal_error", "out of memory");
        for (size_t i = 0; a && rc == 0 && i < n; i++)
            rc = read_info(c, &l->via.array.ptr[i], &a[i]);
        if (rc == 0) {
            *infos = a;
            *count = n;
        } else {
            free(a);
        }
    }
    done(&r);
    return rc;
}

static int train_rows(fpx_client *c, const char *index_id, int64_t n, int64_t d, int binary,
                      const void *x) {
    if (check_args(c, index_id, n, d))
        return -1;
    fpx_out o;
    reply r;
    pack_shape(begin(c, &o, "train", index_id, 1 + (size_t)binary), n, d, binary);
    if (put_vectors(c, &o, n, d, binary, x, NULL) || call(c, &o, &r))
        return -1;
    done(&r);
    return 0;
}

int fpx_client_train(fpx_client *c, const char *index_id, int64_t n, int64_t d, const float *x) {
    return train_rows(c, index_id, n, d, 0, x);
}

int fpx_client_train_binary(fpx_client *c, const char *index_id, int64_t n, int64_t d,
                            const uint8_t *x) {
    return train_rows(c, index_id, n, d, 1, x);
}

static int add_rows(fpx_client *c, const char *index_id, int64_t n, int64_t d, int binary,
                    const void *x, const int64_t *labels, const fpx_item *items, int64_t *ntotal) {
    if (check_args(c, index_id, n, d))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk =
        begin(c, &o, "add_vectors", index_id, 1 + (size_t)binary + (labels != NULL));
    pack_shape(pk, n, d, binary);
    if (labels) {
        fpx_pack_cstr(pk, "with_ids");
        msgpack_pack_true(pk);
    }
    if (put_vectors(c, &o, n, d, binary, x, labels))
        return -1;
    if (items) {
        msgpack_packer *m = fpx_out_meta(&o);
        msgpack_pack_array(m, (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            int has_md = items[i].metadata && items[i].metadata_size;
            msgpack_pack_map(m, (items[i].key != NULL) + has_md);
            if (items[i].key) {
                fpx_pack_cstr(m, "id");
                fpx_pack_cstr(m, items[i].key);
            }
            if (has_md) {
                fpx_pack_cstr(m, "metadata");
                pack_raw(m, items[i].metadata, items[i].metadata_size);
            }
        }
    }
    if (call(c, &o, &r))
        return -1;
    if (ntotal && get_int(r.m.meta, "ntotal", ntotal) != 0)
        *ntotal = -1;
    done(&r);
    return 0;
}

int fpx_client_add(fpx_client *c, const char *index_id, int64_t n, int64_t d, const float *x,
                   const int64_t *labels, const fpx_item *items, int64_t *ntotal) {
    return add_rows(c, index_id, n, d, 0, x, labels, items, ntotal);
}

int fpx_client_add_binary(fpx_client *c, const char *index_id, int64_t n, int64_t d,
                          const uint8_t *x, const int64_t *labels, int64_t *ntotal) {
    return add_rows(c, index_id, n, d, 1, x, labels, NULL, ntotal);
}

/* Packs the per-search parameters of opts as a "params" entry (if any). */
static size_t count_params(const fpx_search_opts *opts) {
    return opts ? (size_t)(opts->nprobe > 0) + (size_t)(opts->ef_search > 0) : 0;
}

static void pack_params(msgpack_packer *pk, const fpx_search_opts *opts) {
    size_t n = count_params(opts);
    if (!n)
        return;
    fpx_pack_cstr(pk, "params");
    msgpack_pack_map(pk, n);
    if (opts->nprobe > 0) {
        fpx_pack_cstr(pk, "nprobe");
        msgpack_pack_int64(pk, opts->nprobe);
    }
    if (opts->ef_search > 0) {
        fpx_pack_cstr(pk, "efSearch");
        msgpack_pack_int64(pk, opts->ef_search);
    }
}

static int hit_key(const msgpack_object *id, char **out) {
    *out = NULL;
    if (!id)
        return 0;
    if (id->type == MSGPACK_OBJECT_STR) {
        *out = strndup(id->via.str.ptr, id->via.str.size);
        return *out ? 0 : -1;
    }
    int64_t v;
    if (fpx_obj_int(id, &v) == 0) {
        char buf[32];
        snprintf(buf, sizeof buf, "%" PRId64, v);
        *out = strdup(buf);
        return *out ? 0 : -1;
    }
    return 0;
}

static int read_hits(fpx_client *c, const msgpack_object *m, int64_t nq, int64_t k,
                     fpx_hit **hits) {
    size_t n = (size_t)nq * (size_t)k;
    fpx_hit *h = calloc(n ? n : 1, sizeof *h);
    if (!h)
        return fail(c, "internal_error", "out of memory");
    *hits = h;
    if (!m || m->type != MSGPACK_OBJECT_ARRAY || (int64_t)m->via.array.size != nq)
        return 0; /* no metadata in the reply: no keys */
    for (int64_t q = 0; q < nq; q++) {
        const msgpack_object *row = &m->via.array.ptr[q];
        if (row->type != MSGPACK_OBJECT_ARRAY || (int64_t)row->via.array.size != k)
            continue;
        for (int64_t j = 0; j < k; j++) {
            const msgpack_object *e = &row->via.array.ptr[j];
            fpx_hit *t = &h[q * k + j];
            if (e->type != MSGPACK_OBJECT_MAP)
                continue;
            if (hit_key(fpx_map_get(e, "id"), &t->key))
                return fail(c, "internal_error", "out of memory");
            const msgpack_object *md = fpx_map_get(e, "metadata");
            if (md && md->type == MSGPACK_OBJECT_MAP) {
                msgpack_sbuffer sb;
                msgpack_packer pk;
                msgpack_sbuffer_init(&sb);
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                msgpack_pack_object(&pk, *md);
                t->metadata = (uint8_t *)sb.data; /* sbuffer memory is malloc'd */
                t->metadata_size = sb.size;
            }
        }
    }
    return 0;
}

static int search_rows(fpx_client *c, const char *index_id, int64_t nq, int64_t d, int binary,
                       const void *x, int64_t k, const fpx_search_opts *opts, void *D, int64_t *I,
                       fpx_hit **hits) {
    if (check_args(c, index_id, nq, d))
        return -1;
    if (k < 1)
        return fail(c, "validation_error", "k must be >= 1");
    size_t nparams = count_params(opts);
    fpx_out o;
    reply r;
    msgpack_packer *pk =
        begin(c, &o, "search", index_id, 2 + (size_t)binary + (nparams > 0) + (hits != NULL));
    fpx_pack_cstr(pk, "k");
    msgpack_pack_int64(pk, k);
    pack_shape(pk, nq, d, binary);
    pack_params(pk, opts);
    if (hits) {
        fpx_pack_cstr(pk, "include_metadata");
        msgpack_pack_true(pk);
    }
    if (put_vectors(c, &o, nq, d, binary, x, NULL))
        return -1;
    if (opts && opts->filter && opts->filter_size)
        pack_raw(fpx_out_meta(&o), opts->filter, opts->filter_size);
    if (call(c, &o, &r))
        return -1;
    size_t nres = (size_t)nq * (size_t)k;
    const msgpack_object *shape = fpx_map_get(r.m.header, "shape");
    int64_t sq, sk;
    int rc = 0;
    if (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size != 2 ||
        fpx_obj_int(&shape->via.array.ptr[0], &sq) || fpx_obj_int(&shape->via.array.ptr[1], &sk) ||
        sq != nq || sk != k || r.m.body.data_size != nres * 12) {
        rc = fail(c, "protocol_error", "search reply does not hold %lld x %lld results",
                  (long long)nq, (long long)k);
    } else {
        memcpy(D, r.m.body.data, nres * 4);
        memcpy(I, r.m.body.data + nres * 4, nres * 8);
        if (hits && read_hits(c, r.m.meta, nq, k, hits) != 0) {
            fpx_hits_free(*hits, nres);
            *hits = NULL;
            rc = -1;
        }
    }
    done(&r);
    return rc;
}

int fpx_client_search_ex(fpx_client *c, const char *index_id, int64_t nq, int64_t d, const float *x,
                         int64_t k, const fpx_search_opts *opts, float *D, int64_t *I,
                         fpx_hit **hits) {
    return search_rows(c, index_id, nq, d, 0, x, k, opts, D, I, hits);
}

int fpx_client_search(fpx_client *c, const char *index_id, int64_t nq, int64_t d, const float *x,
                      int64_t k, const fpx_search_opts *opts, float *D, int64_t *I) {
    return search_rows(c, index_id, nq, d, 0, x, k, opts, D, I, NULL);
}

int fpx_client_search_binary(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                             const uint8_t *x, int64_t k, int32_t *D, int64_t *I) {
    return search_rows(c, index_id, nq, d, 1, x, k, NULL, D, I, NULL);
}

void fpx_hits_free(fpx_hit *hits, size_t n) {
    if (!hits)
        return;
    for (size_t i = 0; i < n; i++) {
        free(hits[i].key);
        free(hits[i].metadata);
    }
    free(hits);
}

static int delete_ids(fpx_client *c, const char *index_id, size_t n, const char *const *keys,
                      const int64_t *labels, int64_t *deleted) {
    if (check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = begin(c, &o, "delete_vector", index_id, 1);
    fpx_pack_cstr(pk, "vector_ids");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        if (keys)
            fpx_pack_cstr(pk, keys[i]);
        else
            msgpack_pack_int64(pk, labels[i]);
    }
    if (call(c, &o, &r))
        return -1;
    if (deleted && get_int(r.m.meta, "deleted", deleted) != 0)
        *deleted = -1;
    done(&r);
    return 0;
}

int fpx_client_delete_keys(fpx_client *c, const char *index_id, size_t n, const char *const *keys,
                           int64_t *deleted) {
    return delete_ids(c, index_id, n, keys, NULL, deleted);
}

int fpx_client_delete_labels(fpx_client *c, const char *index_id, size_t n, const int64_t *labels,
                             int64_t *deleted) {
    return delete_ids(c, index_id, n, NULL, labels, deleted);
}

static int range_rows(fpx_client *c, const char *index_id, int64_t nq, int64_t d, int binary,
                      const void *x, float radius, const fpx_search_opts *opts, int64_t **lims,
                      int64_t **labels, float **distances) {
    *lims = NULL;
    *labels = NULL;
    *distances = NULL;
    if (check_args(c, index_id, nq, d))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk =
        begin(c, &o, "range_search", index_id, 2 + (size_t)binary + (count_params(opts) > 0));
    fpx_pack_cstr(pk, "radius");
    msgpack_pack_float(pk, radius);
    pack_shape(pk, nq, d, binary);
    pack_params(pk, opts);
    if (put_vectors(c, &o, nq, d, binary, x, NULL))
        return -1;
    if (opts && opts->filter && opts->filter_size)
        pack_raw(fpx_out_meta(&o), opts->filter, opts->filter_size);
    if (call(c, &o, &r))
        return -1;
    int64_t rq, nres;
    size_t lsz = (size_t)(nq + 1) * 8;
    int rc = 0;
    if (get_int(r.m.header, "nq", &rq) || get_int(r.m.header, "nres", &nres) || rq != nq ||
        nres < 0 || r.m.body.data_size != lsz + (size_t)nres * 12) {
        rc = fail(c, "protocol_error", "range_search reply is not well formed");
    } else {
        *lims = malloc(lsz);
        *labels = malloc((size_t)nres * 8 + 1);
        *distances = malloc((size_t)nres * 4 + 1);
        if (!*lims || !*labels || !*distances) {
            free(*lims);
            free(*labels);
            free(*distances);
            *lims = *labels = NULL;
            *distances = NULL;
            rc = fail(c, "internal_error", "out of memory");
        } else {
            memcpy(*lims, r.m.body.data, lsz);
            memcpy(*labels, r.m.body.data + lsz, (size_t)nres * 8);
            memcpy(*distances, r.m.body.data + lsz + (size_t)nres * 8, (size_t)nres * 4);
        }
    }
    done(&r);
    return rc;
}

int fpx_client_range_search(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                            const float *x, float radius, const fpx_search_opts *opts,
                            int64_t **lims, int64_t **labels, float **distances) {
    return range_rows(c, index_id, nq, d, 0, x, radius, opts, lims, labels, distances);
}

int fpx_client_range_search_binary(fpx_client *c, const char *index_id, int64_t nq, int64_t d,
                                   const uint8_t *x, int radius, int64_t **lims, int64_t **labels,
                                   float **distances) {
    return range_rows(c, index_id, nq, d, 1, x, (float)radius, NULL, lims, labels, distances);
}

/* Copies a reply of n rows ("shape" [n, columns]) into out. */
static int read_vectors(fpx_client *c, reply *r, int64_t n, int64_t d, int binary, void *out) {
    const msgpack_object *shape = fpx_map_get(r->m.header, "shape");
    int64_t sn, sd;
    if (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size != 2 ||
        fpx_obj_int(&shape->via.array.ptr[0], &sn) || fpx_obj_int(&shape->via.array.ptr[1], &sd))
        return fail(c, "protocol_error", "reply lacks its shape");
    int64_t cols = binary ? d / 8 : d;
    if (sn != n || sd != cols || r->m.body.data_size != (size_t)n * row_bytes(d, binary))
        return fail(c, "validation_error", "the index holds %lld x %lld floats, not %lld x %lld",
                    (long long)sn, (long long)sd, (long long)n, (long long)cols);
    if (n)
        memcpy(out, r->m.body.data, r->m.body.data_size);
    return 0;
}

static int reconstruct_rows(fpx_client *c, const char *index_id, int64_t label, int64_t d,
                            int binary, void *out) {
    if (check_args(c, index_id, 1, d))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = begin(c, &o, "reconstruct", index_id, 1);
    fpx_pack_cstr(pk, "label");
    msgpack_pack_int64(pk, label);
    if (call(c, &o, &r))
        return -1;
    int rc = read_vectors(c, &r, 1, d, binary, out);
    done(&r);
    return rc;
}

int fpx_client_reconstruct(fpx_client *c, const char *index_id, int64_t label, int64_t d,
                           float *out) {
    return reconstruct_rows(c, index_id, label, d, 0, out);
}

int fpx_client_reconstruct_binary(fpx_client *c, const char *index_id, int64_t label, int64_t d,
                                  uint8_t *out) {
    return reconstruct_rows(c, index_id, label, d, 1, out);
}

static int reconstruct_n_rows(fpx_client *c, const char *index_id, int64_t i0, int64_t n, int64_t d,
                              int binary, void *out) {
    if (check_args(c, index_id, n, d))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = begin(c, &o, "reconstruct_n", index_id, 2);
    fpx_pack_cstr(pk, "i0");
    msgpack_pack_int64(pk, i0);
    fpx_pack_cstr(pk, "n");
    msgpack_pack_int64(pk, n);
    if (call(c, &o, &r))
        return -1;
    int rc = read_vectors(c, &r, n, d, binary, out);
    done(&r);
    return rc;
}

int fpx_client_reconstruct_n(fpx_client *c, const char *index_id, int64_t i0, int64_t n, int64_t d,
                             float *out) {
    return reconstruct_n_rows(c, index_id, i0, n, d, 0, out);
}

int fpx_client_reconstruct_n_binary(fpx_client *c, const char *index_id, int64_t i0, int64_t n,
                                    int64_t d, uint8_t *out) {
    return reconstruct_n_rows(c, index_id, i0, n, d, 1, out);
}

static int remove_call(fpx_client *c, const char *index_id, size_t n, const int64_t *labels,
                       int64_t lo, int64_t hi, int64_t *removed) {
    if (check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = begin(c, &o, "remove_ids", index_id, 1);
    fpx_pack_cstr(pk, labels ? "ids" : "range");
    msgpack_pack_array(pk, labels ? n : 2);
    for (size_t i = 0; labels && i < n; i++)
        msgpack_pack_int64(pk, labels[i]);
    if (!labels) {
        msgpack_pack_int64(pk, lo);
        msgpack_pack_int64(pk, hi);
    }
    if (call(c, &o, &r))
        return -1;
    if (removed && get_int(r.m.meta, "removed", removed) != 0)
        *removed = -1;
    done(&r);
    return 0;
}

int fpx_client_remove_ids(fpx_client *c, const char *index_id, size_t n, const int64_t *labels,
                          int64_t *removed) {
    static const int64_t none = 0;
    return remove_call(c, index_id, n, labels ? labels : &none, 0, 0, removed);
}

int fpx_client_remove_range(fpx_client *c, const char *index_id, int64_t lo, int64_t hi,
                            int64_t *removed) {
    return remove_call(c, index_id, 0, NULL, lo, hi, removed);
}

/* An operation whose request is index_id plus nothing, or name/value. */
static int simple_write(fpx_client *c, const char *op, const char *index_id, const char *name,
                        double value) {
    if (check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = begin(c, &o, op, index_id, name ? 2 : 0);
    if (name) {
        fpx_pack_cstr(pk, "name");
        fpx_pack_cstr(pk, name);
        fpx_pack_cstr(pk, "value");
        msgpack_pack_double(pk, value);
    }
    if (call(c, &o, &r))
        return -1;
    done(&r);
    return 0;
}

int fpx_client_reset(fpx_client *c, const char *index_id) {
    return simple_write(c, "reset", index_id, NULL, 0);
}

int fpx_client_set_param(fpx_client *c, const char *index_id, const char *name, double value) {
    if (!name)
        return fail(c, "validation_error", "name is NULL");
    return simple_write(c, "set_params", index_id, name, value);
}

int fpx_client_export(fpx_client *c, const char *index_id, uint8_t **bytes, size_t *len) {
    *bytes = NULL;
    *len = 0;
    if (check_args(c, index_id, 0, 0))
        return -1;
    fpx_out o;
    reply r;
    begin(c, &o, "export_index", index_id, 0);
    if (call(c, &o, &r))
        return -1;
    int rc = 0;
    size_t n = r.m.body.data_size;
    if (!(*bytes = malloc(n ? n : 1))) {
        rc = fail(c, "internal_error", "out of memory");
    } else {
        if (n)
            memcpy(*bytes, r.m.body.data, n);
        *len = n;
    }
    done(&r);
    return rc;
}

int fpx_client_import(fpx_client *c, const char *index_id, const char *index_type,
                      const void *bytes, size_t len, fpx_index_info *info) {
    return fpx_client_import_leased(c, index_id, index_type, bytes, len, 0, info);
}

int fpx_client_import_leased(fpx_client *c, const char *index_id, const char *index_type,
                             const void *bytes, size_t len, int64_t lease_seconds,
                             fpx_index_info *info) {
    int64_t lease;
    if (check_args(c, index_id, 0, 0) || resolve_lease(c, lease_seconds, &lease))
        return -1;
    fpx_out o;
    reply r;
    msgpack_packer *pk = begin(c, &o, "import_index", index_id, (index_type ? 1 : 0) + (lease > 0));
    if (lease > 0) {
        fpx_pack_cstr(pk, "lease_seconds");
        msgpack_pack_int64(pk, lease);
    }
    if (index_type) {
        fpx_pack_cstr(pk, "index_type");
        fpx_pack_cstr(pk, index_type);
    }
    uint8_t *p = fpx_out_data(&o, len);
    if (!p) {
        fpx_out_discard(&o);
        return fail(c, "internal_error", "out of memory building the request");
    }
    if (len)
        memcpy(p, bytes, len);
    if (call(c, &o, &r))
        return -1;
    int rc = info ? read_info(c, r.m.meta, info) : 0;
    done(&r);
    return rc == 0 ? lease_made(c, index_id, lease) : rc;
}

int fpx_client_request_raw(fpx_client *c, const void *body, size_t len, uint8_t **reply_out,
                           size_t *reply_len) {
    clear_error(c);
    if (check_size(c, len) != 0)
        return -1;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return fail(c, "internal_error", "out of memory");
    memcpy(copy, body, len);
    zmq_msg_t m;
    /* Raw bodies carry their own request_id (or none): accept the next reply. */
    if (roundtrip(c, copy, len, INT64_MIN, &m) != 0)
        return -1;
    size_t n = zmq_msg_size(&m);
    uint8_t *out = malloc(n ? n : 1);
    if (!out) {
        zmq_msg_close(&m);
        return fail(c, "internal_error", "out of memory");
    }
    memcpy(out, zmq_msg_data(&m), n);
    zmq_msg_close(&m);
    *reply_out = out;
    *reply_len = n;
    return 0;
}
