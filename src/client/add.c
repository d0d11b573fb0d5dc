/*
 * add.c - libfaissproxy's add: a large add cut into parts under the server's
 * message size limit and pipelined, a window of parts in flight, each
 * acknowledged in order; and the error that says exactly which rows were
 * added when a part fails.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Builds one add request of n rows and sends it without waiting (its
 * request_id in *id). */
static int add_send(fpx_client *c, const char *index_id, int64_t n, int64_t d, int binary,
                    const void *x, const int64_t *labels, const fpx_item *items, int64_t *id) {
    fpx_out o;
    msgpack_packer *pk =
        fpx_c_begin(c, &o, "add_vectors", index_id, 1 + (size_t)binary + (labels != NULL));
    fpx_c_pack_shape(pk, n, d, binary);
    if (labels) {
        fpx_pack_cstr(pk, "with_ids");
        msgpack_pack_true(pk);
    }
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
                fpx_c_pack_raw(m, items[i].metadata, items[i].metadata_size);
            }
        }
    }
    return fpx_c_send_rows(c, &o, n, d, binary, x, labels, id);
}

/*
 * A large add is pipelined: its parts go as consecutive add_vectors requests
 * with up to c->add_window of them in flight, so that the network, the
 * server's log and FAISS work at the same time. The server locks one
 * connection's requests in the order they came (docs/protocol.md), so the
 * parts are applied in order, and unkeyed vectors get the labels FAISS's add
 * would give them. Each part is acknowledged on its own, once durable, and
 * the acknowledgements are taken in the order the parts were sent.
 *
 * When a part fails, no further part is sent and those in flight are waited
 * for. The rows added are then exactly: every part before the first that
 * failed, plus any part after it that was in flight and succeeded (a quota
 * or a full disk refuses those too; a part with a bad vector does not stop
 * the next). The error message lists them. A part that got no reply (the
 * connection was lost) may or may not have been added: the message says so.
 */
typedef struct add_part {
    int64_t id, from, m, ntotal;
    int state; /* PART_* */
    char errtype[32];
    char errstr[512];
} add_part;

enum { PART_SENT = 1, PART_ADDED, PART_FAILED };

/* What the parts of one add came to, taken in the order they were sent. */
typedef struct add_tally {
    int64_t added;     /* rows of the unbroken run of added parts from row 0 */
    int64_t fail_from; /* the first failed part's rows, -1: none */
    int64_t fail_to;
    char errtype[32]; /* its error */
    char errstr[512];
    int64_t extra;                    /* rows of added parts after it */
    char extra_rows[160];             /* their ranges, as text */
    int64_t unknown_from, unknown_to; /* parts without a reply, -1: none */
    int parts;                        /* parts sent */
} add_tally;

static void note_range(char *buf, size_t cap, int64_t from, int64_t to) {
    size_t used = strlen(buf);
    if (used + 48 >= cap) {
        if (used + 5 < cap && strcmp(buf + used - 3, "...") != 0)
            snprintf(buf + used, cap - used, ", ...");
        return;
    }
    snprintf(buf + used, cap - used, "%s%lld..%lld", used ? ", " : "", (long long)from,
             (long long)to - 1);
}

/* Counts the oldest part, answered (or lost), into t. */
static void tally_part(add_tally *t, const add_part *p, int64_t *ntotal) {
    if (p->state == PART_ADDED && t->fail_from < 0 && t->unknown_from < 0) {
        t->added += p->m;
        if (ntotal)
            *ntotal = p->ntotal;
    } else if (p->state == PART_ADDED) {
        t->extra += p->m;
        note_range(t->extra_rows, sizeof t->extra_rows, p->from, p->from + p->m);
        if (ntotal)
            *ntotal = p->ntotal;
    } else if (p->state == PART_FAILED && t->fail_from < 0) {
        t->fail_from = p->from;
        t->fail_to = p->from + p->m;
        memcpy(t->errtype, p->errtype, sizeof t->errtype);
        memcpy(t->errstr, p->errstr, sizeof t->errstr);
    } else if (p->state == PART_SENT) {
        if (t->unknown_from < 0)
            t->unknown_from = p->from;
        t->unknown_to = p->from + p->m;
    }
}

/* Sets the handle's error from what the parts came to; -1, or 0 when every
 * row was added. */
static int add_result(fpx_client *c, const add_tally *t, int64_t n) {
    if (t->added == n && t->fail_from < 0 && t->unknown_from < 0) {
        fpx_c_clear_error(c); /* a late error reply of an earlier call may have set it */
        return 0;
    }
    if (t->parts <= 1) { /* one request: its own error, unchanged */
        if (t->fail_from >= 0) {
            snprintf(c->errtype, sizeof c->errtype, "%s", t->errtype);
            snprintf(c->errstr, sizeof c->errstr, "%s", t->errstr);
        }
        return -1;
    }
    char extra[300] = "", unknown[200] = "";
    if (t->extra)
        snprintf(extra, sizeof extra,
                 "; rows %s (%lld vectors), in flight when the failure came, were added too",
                 t->extra_rows, (long long)t->extra);
    if (t->unknown_from >= 0)
        snprintf(unknown, sizeof unknown,
                 "; rows %lld..%lld got no reply: whether they were added is unknown",
                 (long long)t->unknown_from, (long long)t->unknown_to - 1);
    /* Composed apart, then cut to the handle's buffer: the parts may be long. */
    char msg[1400];
    if (t->fail_from >= 0) {
        snprintf(c->errtype, sizeof c->errtype, "%s", t->errtype);
        snprintf(msg, sizeof msg,
                 "the add was sent in parts: the first %lld of %lld vectors were added, rows "
                 "%lld..%lld failed: %.200s%s%s; the rest were not added",
                 (long long)t->added, (long long)n, (long long)t->fail_from,
                 (long long)t->fail_to - 1, t->errstr, extra, unknown);
    } else {
        /* no part failed: the connection was lost (errtype connection_error) */
        snprintf(msg, sizeof msg,
                 "the add was sent in parts: the first %lld of %lld vectors were added%s%s; the "
                 "rest were not: %.200s",
                 (long long)t->added, (long long)n, extra, unknown, c->errstr);
    }
    size_t len = strlen(msg);
    if (len >= sizeof c->errstr)
        len = sizeof c->errstr - 1;
    memcpy(c->errstr, msg, len);
    c->errstr[len] = 0;
    return -1;
}

static int add_rows(fpx_client *c, const char *index_id, int64_t n, int64_t d, int binary,
                    const void *x, const int64_t *labels, const fpx_item *items, int64_t *ntotal) {
    if (fpx_c_check_args(c, index_id, n, d))
        return -1;
    size_t row = fpx_c_row_bytes(d, binary);
    size_t head = fpx_c_request_overhead(c, index_id, 0);
    size_t limit;
    if (fpx_c_call_limit(c, head, n, fpx_c_add_row_bytes(row, labels, NULL, 0), &limit) != 0)
        return -1;
    /* Parts of about FPX_ADD_PART_BYTES: the window needs several to overlap. */
    size_t part = limit < FPX_ADD_PART_BYTES ? limit : FPX_ADD_PART_BYTES;
    int w = c->add_window;
    add_part *ring = calloc((size_t)w, sizeof *ring);
    if (!ring)
        return fpx_c_fail(c, "internal_error", "out of memory");
    add_tally t = {.fail_from = -1, .unknown_from = -1};
    int64_t sent = 0;
    int first = 0, inflight = 0, stop = 0;
    do {
        while (!stop && inflight < w && (sent < n || t.parts == 0)) {
            add_part *p = &ring[(first + inflight) % w];
            memset(p, 0, sizeof *p);
            p->from = sent;
            p->m = fpx_c_rows_that_fit(sent, n, head, part, row, labels, items);
            if (add_send(c, index_id, p->m, d, binary, (const uint8_t *)x + (size_t)sent * row,
                         labels ? labels + sent : NULL, items ? items + sent : NULL, &p->id) != 0) {
                /* not sent: this part failed, and no more go */
                p->state = PART_FAILED;
                snprintf(p->errtype, sizeof p->errtype, "%s", c->errtype);
                snprintf(p->errstr, sizeof p->errstr, "%s", c->errstr);
                stop = 1;
            } else {
                p->state = PART_SENT;
            }
            inflight++;
            t.parts++;
            sent += p->m;
        }
        int lost = 0;
        if (ring[first].state == PART_SENT) {
            int64_t rid;
            reply r;
            int bad;
            if (fpx_c_recv(c, &rid, &r, &bad) != 0) {
                lost = stop = 1; /* every part in flight is now unanswered */
            } else {
                add_part *p = NULL;
                for (int i = 0; i < inflight && !p; i++) {
                    add_part *q = &ring[(first + i) % w];
                    if (q->state == PART_SENT && q->id == rid)
                        p = q;
                }
                if (p && bad) {
                    p->state = PART_FAILED;
                    snprintf(p->errtype, sizeof p->errtype, "%s", c->errtype);
                    snprintf(p->errstr, sizeof p->errstr, "%s", c->errstr);
                    stop = 1;
                } else if (p) {
                    p->state = PART_ADDED;
                    if (fpx_c_get_int(r.m.meta, "ntotal", &p->ntotal) != 0)
                        p->ntotal = -1;
                }
                if (!bad)
                    fpx_c_done(&r); /* an answer to p, or a late one to an earlier call */
            }
        }
        /* Acknowledgements are taken in the order the parts were sent. */
        while (inflight > 0 && (lost || ring[first].state != PART_SENT)) {
            tally_part(&t, &ring[first], ntotal);
            first = (first + 1) % w;
            inflight--;
        }
    } while (inflight > 0 || (!stop && sent < n));
    free(ring);
    return add_result(c, &t, n);
}

int fpx_client_add(fpx_client *c, const char *index_id, int64_t n, int64_t d, const float *x,
                   const int64_t *labels, const fpx_item *items, int64_t *ntotal) {
    return add_rows(c, index_id, n, d, 0, x, labels, items, ntotal);
}

int fpx_client_add_binary(fpx_client *c, const char *index_id, int64_t n, int64_t d,
                          const uint8_t *x, const int64_t *labels, int64_t *ntotal) {
    return add_rows(c, index_id, n, d, 1, x, labels, NULL, ntotal);
}
