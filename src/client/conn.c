/*
 * conn.c - libfaissproxy: one connection to a faiss-proxy server; the
 * handle, its last error, its socket, and the sending of one request (the
 * typed operations built on it are in calls.c).
 *
 * A DEALER socket with an empty delimiter frame before each body (the
 * protocol's pipelining form: one request at a time, except the parts of a
 * large add, which go several at once, fpx_c_send/fpx_c_recv). Each request
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
 * errtype "limit_exceeded", before sending it. The calls that carry rows
 * (add, search, range search) ask fpx_c_limit first and cut themselves into
 * requests under it (calls.c).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* No server takes a max_message_size below this (its --max-message-size
 * minimum): smaller requests are sent without knowing the limit. */
#define SMALLEST_LIMIT 4096

int fpx_c_fail(fpx_client *c, const char *type, const char *fmt, ...) {
    snprintf(c->errtype, sizeof c->errtype, "%s", type);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errstr, sizeof c->errstr, fmt, ap);
    va_end(ap);
    return -1;
}

void fpx_c_clear_error(fpx_client *c) {
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
    int fd = open(v, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, cap,
                 "'%.200s' is neither a public key (40 Z85 characters) nor a readable key "
                 "file: %s",
                 v, strerror(errno));
        return -1;
    }
    char *text = NULL;
    size_t len = 0;
    int read_err = fpx_keyfile_read(fd, &text, &len);
    close(fd);
    char key[FPX_Z85_KEY_LEN + 1], secret[FPX_Z85_KEY_LEN + 1];
    int rc = read_err ? -2 : fpx_keyfile_find(text, len, "public-key", key);
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
    fpx_c_clear_error(c);
    char key[FPX_Z85_KEY_LEN + 1] = "", why[300];
    if (server_key && *server_key && resolve_server_key(server_key, key, why, sizeof why) != 0)
        return fpx_c_fail(c, "validation_error", "server key: %s", why);
    memcpy(c->server_key, key, sizeof key);
    c->key_error[0] = 0;
    fpx_leaser_set_server_key(c->leases, c->server_key);
    if (c->sock)
        zmq_close(c->sock);
    c->sock = NULL;
    if (open_socket(c) != 0)
        return fpx_c_fail(c, "connection_error", "cannot connect to %s", c->endpoint);
    return 0;
}

/* 32 random hex digits (128 bits: two handles never share one). */
static void new_client_id(char *out /* 33 */) {
    uint8_t b[16];
    ssize_t got = getrandom(b, sizeof b, 0);
    if (got != (ssize_t)sizeof b) { /* no entropy source: still distinct per handle */
        static _Atomic uint64_t seq;
        uint64_t v[2] = {(uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32),
                         (uint64_t)(uintptr_t)out ^ atomic_fetch_add(&seq, 1)};
        memcpy(b, v, sizeof b);
    }
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

fpx_client *fpx_client_new(const char *endpoint, const char *api_key, const char *tenant_id) {
    if (!endpoint)
        return NULL;
    fpx_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->timeout_ms = 30000;
    c->complete = 1;
    c->next_id = 1;
    new_client_id(c->client_id);
    c->add_window = FPX_ADD_WINDOW_DEFAULT;
    c->retries = FPX_RETRIES_DEFAULT;
    const char *rt = getenv("FAISS_PROXY_RETRIES");
    if (rt && *rt) {
        char *end;
        long n = strtol(rt, &end, 10);
        if (!*end && n >= 0 && n <= FPX_RETRIES_MAX)
            c->retries = (int)n;
    }
    /* Sent as it is: a server refuses a value it does not know, naming it. */
    const char *dur = getenv("FAISS_PROXY_DURABILITY");
    if (dur && *dur)
        snprintf(c->durability, sizeof c->durability, "%s", dur);
    const char *win = getenv("FAISS_PROXY_ADD_WINDOW");
    if (win && *win) {
        char *end;
        long w = strtol(win, &end, 10);
        if (!*end && w >= 1 && w <= FPX_ADD_WINDOW_MAX)
            c->add_window = (int)w;
    }
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

int fpx_client_set_durability(fpx_client *c, const char *durability) {
    if (durability && *durability && strcmp(durability, "acked") && strcmp(durability, "synced"))
        return fpx_c_fail(c, "validation_error",
                          "durability must be \"acked\" or \"synced\" (or empty: the server's)");
    snprintf(c->durability, sizeof c->durability, "%s", durability ? durability : "");
    c->errtype[0] = c->errstr[0] = 0;
    return 0;
}

void fpx_client_set_complete(fpx_client *c, int complete) {
    c->complete = complete != 0;
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
msgpack_packer *fpx_c_begin(fpx_client *c, fpx_out *o, const char *op, const char *index_id,
                            size_t extra) {
    fpx_out_init(o);
    /* KV operations of a cluster, not records of a stream: not deduplicated */
    c->retry_safe =
        strcmp(op, "create_index") && strcmp(op, "delete_index") && strcmp(op, "import_index");
    msgpack_packer *pk = fpx_out_hdr(o);
    msgpack_pack_map(pk, 3 + (c->api_key != NULL) + (c->tenant_id != NULL) + (index_id != NULL) +
                             (c->durability[0] != 0) + extra);
    fpx_pack_cstr(pk, "operation");
    fpx_pack_cstr(pk, op);
    fpx_pack_cstr(pk, "request_id");
    msgpack_pack_int64(pk, c->next_id);
    fpx_pack_cstr(pk, "client_id");
    fpx_pack_cstr(pk, c->client_id);
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
    if (c->durability[0]) {
        fpx_pack_cstr(pk, "durability");
        fpx_pack_cstr(pk, c->durability);
    }
    return pk;
}

/* A body's memory: malloc'd (hint 0) or mapped on its own, hint bytes
 * (map_body). ZeroMQ releases it once sent. */
static void free_buf(void *data, void *hint) {
    if (hint)
        munmap(data, (size_t)(uintptr_t)hint);
    else
        free(data);
}

/* Bodies of at least this many data bytes go in memory of their own. */
#define MAPPED_MIN ((size_t)1 << 20)
#define HUGE_PAGE ((uintptr_t)2 << 20)

/*
 * Memory for a large body, mapped for it alone, 2 MiB aligned and asking the
 * kernel for transparent huge pages: a fresh malloc'd buffer of a few MB is
 * faulted in 4 KiB at a time as it is filled, which cost a pipelined add
 * more CPU than the copy itself on virtual machines (bench/README.md,
 * figure 8). *maplen receives the mapping's length, 0 when the memory is
 * malloc'd instead (no mapping could be made). NULL when out of memory.
 */
static uint8_t *map_body(size_t len, size_t *maplen) {
    size_t want = (len + 4095) & ~(size_t)4095;
    size_t span = want + HUGE_PAGE;
    *maplen = 0;
    uint8_t *p = span > want
                     ? mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                     : MAP_FAILED;
    if (p == MAP_FAILED)
        return malloc(len);
    uint8_t *a = p + (((uintptr_t)p + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE - (uintptr_t)p);
    if (a > p)
        munmap(p, (size_t)(a - p));
    if (a + want < p + span)
        munmap(a + want, (size_t)(p + span - (a + want)));
    (void)madvise(a, want, MADV_HUGEPAGE); /* a hint: without it, 4 KiB pages */
    *maplen = want;
    return a;
}

static void reset_socket(fpx_client *c) {
    if (c->sock)
        zmq_close(c->sock);
    c->sock = NULL;
    c->max_msg = 0; /* the server may have been restarted with another limit */
    open_socket(c);
}

/* Sends the message m (taken) without waiting for its reply. */
static int send_msg(fpx_client *c, zmq_msg_t *m) {
    if (c->key_error[0]) {
        zmq_msg_close(m);
        return fpx_c_fail(c, "connection_error", "%s", c->key_error);
    }
    if (!c->sock && open_socket(c) != 0) {
        zmq_msg_close(m);
        return fpx_c_fail(c, "connection_error", "cannot connect to %s", c->endpoint);
    }
    if (zmq_send(c->sock, "", 0, ZMQ_SNDMORE) < 0 || zmq_msg_send(m, c->sock, 0) < 0) {
        zmq_msg_close(m);
        reset_socket(c);
        return fpx_c_fail(c, "connection_error", "cannot send to %s: %s", c->endpoint,
                          zmq_strerror(zmq_errno()));
    }
    return 0;
}

/* Sends body (taken) without waiting for its reply. */
static int send_body(fpx_client *c, uint8_t *body, size_t len) {
    zmq_msg_t m;
    zmq_msg_init_data(&m, body, len, free_buf, NULL);
    return send_msg(c, &m);
}

/* Waits for the next reply body into out. *rid receives its request_id, or
 * INT64_MIN when it has none or cannot be read (a garbage request's answer,
 * or an unreadable reply for the caller to report). On a timeout the socket
 * is rebuilt (the replies still due are lost with it). */
static int recv_reply(fpx_client *c, int64_t *rid, zmq_msg_t *out) {
    for (;;) {
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        int rc = c->sock ? zmq_poll(&it, 1, c->timeout_ms > 0 ? c->timeout_ms : -1) : 0;
        if (rc <= 0) {
            reset_socket(c);
            /* A failed handshake looks exactly like this (ZeroMQ retries it
             * quietly), so say which handshake it was. */
            return fpx_c_fail(c, "connection_error", "no reply from %s within %d ms (%s)",
                              c->endpoint, c->timeout_ms,
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
        fpx_msg dm;
        fpx_err err;
        *rid = INT64_MIN;
        if (fpx_msg_decode(&dm, zmq_msg_data(out), zmq_msg_size(out), &err) == 0) {
            const msgpack_object *ro = fpx_map_get(dm.header, "request_id");
            int64_t got;
            if (ro && fpx_obj_int(ro, &got) == 0)
                *rid = got;
            fpx_msg_destroy(&dm);
        }
        return 0;
    }
}

/* Sends m (taken), waits for the reply with this request's id. */
static int roundtrip(fpx_client *c, zmq_msg_t *m, int64_t id, zmq_msg_t *out) {
    if (send_msg(c, m) != 0)
        return -1;
    for (;;) {
        int64_t got;
        if (recv_reply(c, &got, out) != 0)
            return -1;
        /* Match the request id; drop stale replies (late answers to requests
         * that timed out). A reply without id (a garbage request's answer,
         * or one that cannot be read) is the caller's to report. */
        if (id == INT64_MIN || got == id || got == INT64_MIN)
            return 0;
        zmq_msg_close(out);
    }
}

/* Reads max_message_size from a ping reply's metadata. */
static void note_limit(fpx_client *c, const reply *r) {
    const msgpack_object *v = fpx_map_get(r->m.meta, "max_message_size");
    int64_t n;
    c->max_msg = v && fpx_obj_int(v, &n) == 0 && n > 0 ? (size_t)n : SIZE_MAX;
}

int fpx_c_limit(fpx_client *c, size_t len, size_t *limit) {
    *limit = SIZE_MAX;
    if (len <= SMALLEST_LIMIT)
        return 0;
    if (c->max_msg == 0) {
        fpx_out o;
        reply r;
        fpx_c_begin(c, &o, "ping", NULL, 0);
        if (fpx_c_call(c, &o, &r) != 0) {
            /* No answer: neither would the request get one. A refused ping
             * (a wrong key...): send the request, it gets its own answer. */
            if (!strcmp(c->errtype, "connection_error"))
                return -1;
            fpx_c_clear_error(c);
            return 0;
        }
        note_limit(c, &r);
        fpx_c_done(&r);
    }
    *limit = c->max_msg;
    return 0;
}

/* Checks a request of len bytes against the server's limit, asking the
 * server for it first when it is not known. 0 to send, -1 (error set) not. */
static int check_size(fpx_client *c, size_t len) {
    size_t limit;
    if (fpx_c_limit(c, len, &limit) != 0)
        return -1;
    if (len > limit)
        return fpx_c_fail(
            c, "limit_exceeded",
            "the request is %zu bytes, over the server's max_message_size of %zu bytes "
            "(the server would drop it unanswered): send fewer vectors per call",
            len, c->max_msg);
    return 0;
}

/* Decodes a received reply (r->msg) and checks its status: 0 with r to
 * release, or -1 (error set, nothing to release). */
static int read_reply(fpx_client *c, reply *r) {
    fpx_err err;
    if (fpx_msg_decode(&r->m, zmq_msg_data(&r->msg), zmq_msg_size(&r->msg), &err) != 0) {
        zmq_msg_close(&r->msg);
        return fpx_c_fail(c, "protocol_error", "unreadable reply: %s", err.msg);
    }
    const msgpack_object *st = fpx_map_get(r->m.header, "status");
    if (st && fpx_obj_str_eq(st, "ok"))
        return 0;
    const msgpack_object *pub = fpx_map_get(r->m.header, "published");
    c->unpublished = pub && pub->type == MSGPACK_OBJECT_BOOLEAN && !pub->via.boolean;
    c->unconfirmed = pub && pub->type == MSGPACK_OBJECT_BOOLEAN && pub->via.boolean;
    const msgpack_object *et = fpx_map_get(r->m.header, "error_type");
    const msgpack_object *msg = fpx_map_get(r->m.header, "message");
    const char *ts = "internal_error", *ms = "request failed";
    size_t tn = strlen(ts), mn = strlen(ms);
    if (et)
        fpx_obj_str(et, &ts, &tn);
    if (msg)
        fpx_obj_str(msg, &ms, &mn);
    fpx_c_fail(c, "", "%.*s", (int)mn, ms);
    snprintf(c->errtype, sizeof c->errtype, "%.*s", (int)tn, ts);
    fpx_msg_destroy(&r->m);
    zmq_msg_close(&r->msg);
    return -1;
}

/* Finishes the body, sends it, decodes the reply and checks its status. */
int fpx_c_call(fpx_client *c, fpx_out *o, reply *r) {
    uint8_t *body;
    size_t len;
    int64_t id = c->next_id++;
    if (fpx_out_finish(o, &body, &len) != 0)
        return fpx_c_fail(c, "internal_error", "out of memory building the request");
    if (check_size(c, len) != 0) {
        free(body);
        return -1;
    }
    /* The bytes stay referenced by `keep` while a copy of the message (which
     * shares them) is sent: a retry sends them again without copying. */
    zmq_msg_t keep;
    zmq_msg_init_data(&keep, body, len, free_buf, NULL);
    int retry_safe = c->retry_safe;
    for (int attempt = 0;; attempt++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_copy(&m, &keep);
        if (roundtrip(c, &m, id, &r->msg) != 0)
            break;
        if (read_reply(c, r) == 0) {
            zmq_msg_close(&keep);
            return 0;
        }
        if (attempt >= c->retries || strcmp(c->errtype, "unavailable") || c->unconfirmed ||
            !(retry_safe || c->unpublished))
            break;
        /* the cluster may be electing a leader, or a node restarting */
        long ms = FPX_RETRY_PAUSE_MS << attempt;
        struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
    }
    zmq_msg_close(&keep);
    return -1;
}

int fpx_c_send(fpx_client *c, fpx_out *o, int64_t *id) {
    uint8_t *body;
    size_t len;
    *id = c->next_id++;
    if (fpx_out_finish(o, &body, &len) != 0)
        return fpx_c_fail(c, "internal_error", "out of memory building the request");
    if (check_size(c, len) != 0) {
        free(body);
        return -1;
    }
    return send_body(c, body, len);
}

int fpx_c_send_rows(fpx_client *c, fpx_out *o, int64_t n, int64_t d, int binary, const void *x,
                    const int64_t *labels, int64_t *id) {
    size_t vb = (size_t)n * fpx_c_row_bytes(d, binary);
    size_t lb = labels ? (size_t)n * sizeof *labels : 0;
    size_t dlen = vb + lb;
    if (dlen < MAPPED_MIN)
        return fpx_c_put_vectors(c, o, n, d, binary, x, labels) ? -1 : fpx_c_send(c, o, id);
    uint8_t *prefix, *meta, *body = NULL;
    size_t plen = 0, mlen = 0, maplen = 0;
    *id = c->next_id++;
    if (fpx_out_frame(o, dlen, &prefix, &plen, &meta, &mlen) == 0 &&
        (body = map_body(plen + dlen + mlen, &maplen)) != NULL) {
        memcpy(body, prefix, plen);
        if (vb)
            memcpy(body + plen, x, vb);
        if (lb)
            memcpy(body + plen + vb, labels, lb);
        if (mlen)
            memcpy(body + plen + dlen, meta, mlen);
    }
    free(prefix);
    free(meta);
    if (!body)
        return fpx_c_fail(c, "internal_error", "out of memory building the request");
    if (check_size(c, plen + dlen + mlen) != 0) {
        free_buf(body, (void *)(uintptr_t)maplen);
        return -1;
    }
    zmq_msg_t m;
    zmq_msg_init_data(&m, body, plen + dlen + mlen, free_buf, (void *)(uintptr_t)maplen);
    return send_msg(c, &m);
}

int fpx_c_recv(fpx_client *c, int64_t *id, reply *r, int *failed) {
    *failed = 0;
    if (recv_reply(c, id, &r->msg) != 0)
        return -1;
    if (read_reply(c, r) != 0)
        *failed = 1;
    return 0;
}

void fpx_c_done(reply *r) {
    fpx_msg_destroy(&r->m);
    zmq_msg_close(&r->msg);
}

/* A received reply as a malloc'd copy for the caller; m is closed. */
static int take_reply(fpx_client *c, zmq_msg_t *m, uint8_t **reply_out, size_t *reply_len) {
    size_t n = zmq_msg_size(m);
    uint8_t *out = malloc(n ? n : 1);
    if (!out) {
        zmq_msg_close(m);
        return fpx_c_fail(c, "internal_error", "out of memory");
    }
    memcpy(out, zmq_msg_data(m), n);
    zmq_msg_close(m);
    *reply_out = out;
    *reply_len = n;
    return 0;
}

/* ---- connection-level operations ---------------------------------------------------- */

int fpx_client_ping(fpx_client *c) {
    fpx_c_clear_error(c);
    fpx_out o;
    reply r;
    fpx_c_begin(c, &o, "ping", NULL, 0);
    if (fpx_c_call(c, &o, &r))
        return -1;
    note_limit(c, &r);
    fpx_c_done(&r);
    return 0;
}

int fpx_client_request_raw(fpx_client *c, const void *body, size_t len, uint8_t **reply_out,
                           size_t *reply_len) {
    fpx_c_clear_error(c);
    if (check_size(c, len) != 0)
        return -1;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return fpx_c_fail(c, "internal_error", "out of memory");
    memcpy(copy, body, len);
    zmq_msg_t m, out;
    zmq_msg_init_data(&m, copy, len, free_buf, NULL);
    /* Raw bodies carry their own request_id (or none): accept the next reply. */
    if (roundtrip(c, &m, INT64_MIN, &out) != 0)
        return -1;
    return take_reply(c, &out, reply_out, reply_len);
}

int fpx_client_send_raw(fpx_client *c, const void *body, size_t len) {
    fpx_c_clear_error(c);
    if (check_size(c, len) != 0)
        return -1;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return fpx_c_fail(c, "internal_error", "out of memory");
    memcpy(copy, body, len);
    return send_body(c, copy, len);
}

int fpx_client_recv_raw(fpx_client *c, uint8_t **reply_out, size_t *reply_len) {
    fpx_c_clear_error(c);
    if (!c->sock)
        return fpx_c_fail(c, "connection_error", "no request in flight to %s", c->endpoint);
    zmq_msg_t m;
    int64_t id;
    if (recv_reply(c, &id, &m) != 0)
        return -1;
    return take_reply(c, &m, reply_out, reply_len);
}
