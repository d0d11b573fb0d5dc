/*
 * rawreq.c - the requests the CLI builds itself, and JSON <-> msgpack.
 *
 * The typed calls of libfaissproxy take caller keys as C strings, so an
 * integer key in a JSON Lines file would become the string "7", a different
 * key on the server (docs/protocol.md: 1 and "1" differ). Imports with keys,
 * restores and a few reads (ping's fields, keys in a backup) therefore go
 * through fpx_client_request_raw with a body built here from the contract's
 * layout: a preamble map of the three sizes, the header map, the data
 * section, the metadata section. The client library still adds the
 * connection handling, timeouts and the max_message_size check.
 */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void fpx_mp_pack_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void fpx_rawreq_begin(fpx_cli *cli, fpx_rawreq *rq, const char *op, const char *index,
                      uint32_t nfields) {
    msgpack_sbuffer_init(&rq->hdr);
    msgpack_packer_init(&rq->hp, &rq->hdr, msgpack_sbuffer_write);
    msgpack_sbuffer_init(&rq->meta);
    msgpack_packer_init(&rq->mp, &rq->meta, msgpack_sbuffer_write);
    uint32_t n = nfields + 1 + (index != NULL) + (cli->api_key != NULL) + (cli->tenant != NULL) +
                 (cli->durability != NULL);
    msgpack_pack_map(&rq->hp, n);
    fpx_mp_pack_str(&rq->hp, "operation");
    fpx_mp_pack_str(&rq->hp, op);
    if (index) {
        fpx_mp_pack_str(&rq->hp, "index_id");
        fpx_mp_pack_str(&rq->hp, index);
    }
    if (cli->api_key) {
        fpx_mp_pack_str(&rq->hp, "api_key");
        fpx_mp_pack_str(&rq->hp, cli->api_key);
    }
    if (cli->tenant) {
        fpx_mp_pack_str(&rq->hp, "tenant_id");
        fpx_mp_pack_str(&rq->hp, cli->tenant);
    }
    if (cli->durability) {
        fpx_mp_pack_str(&rq->hp, "durability");
        fpx_mp_pack_str(&rq->hp, cli->durability);
    }
}

void fpx_rawreq_free(fpx_rawreq *rq) {
    msgpack_sbuffer_destroy(&rq->hdr);
    msgpack_sbuffer_destroy(&rq->meta);
}

static int raw_error(fpx_cli *cli, const char *type, const char *fmt, ...) {
    snprintf(cli->errtype, sizeof cli->errtype, "%s", type);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cli->errstr, sizeof cli->errstr, fmt, ap);
    va_end(ap);
    return -1;
}

const msgpack_object *fpx_mp_get(const msgpack_object *map, const char *key) {
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            !memcmp(k->via.str.ptr, key, kl))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static int mp_u64(const msgpack_object *o, uint64_t *out) {
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *out = o->via.u64;
    return 0;
}

static void copy_str(char *dst, size_t cap, const msgpack_object *o, const char *dflt) {
    if (o && o->type == MSGPACK_OBJECT_STR) {
        size_t n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
        memcpy(dst, o->via.str.ptr, n);
        dst[n] = 0;
    } else {
        snprintf(dst, cap, "%s", dflt);
    }
}

/* Splits a reply body into its parts; the error of an error reply goes to cli. */
static int decode_reply(fpx_cli *cli, fpx_rawrep *rep, size_t len) {
    msgpack_unpacked pre;
    msgpack_unpacked_init(&pre);
    size_t off = 0;
    uint64_t hs = 0, vs = 0, ms = 0;
    int ok =
        msgpack_unpack_next(&pre, (const char *)rep->body, len, &off) == MSGPACK_UNPACK_SUCCESS &&
        !mp_u64(fpx_mp_get(&pre.data, "header_size"), &hs) &&
        !mp_u64(fpx_mp_get(&pre.data, "vector_size"), &vs) &&
        !mp_u64(fpx_mp_get(&pre.data, "metadata_size"), &ms);
    msgpack_unpacked_destroy(&pre);
    if (!ok || hs > len - off || vs > len - off - hs || ms != len - off - hs - vs)
        return raw_error(cli, "protocol_error", "the server's reply cannot be decoded");
    size_t hoff = 0;
    if (msgpack_unpack_next(&rep->hu, (const char *)rep->body + off, hs, &hoff) !=
            MSGPACK_UNPACK_SUCCESS ||
        rep->hu.data.type != MSGPACK_OBJECT_MAP)
        return raw_error(cli, "protocol_error", "the server's reply header cannot be decoded");
    rep->header = &rep->hu.data;
    rep->data = rep->body + off + hs;
    rep->data_len = vs;
    if (ms) {
        size_t moff = 0;
        if (msgpack_unpack_next(&rep->mu, (const char *)rep->body + off + hs + vs, ms, &moff) !=
            MSGPACK_UNPACK_SUCCESS)
            return raw_error(cli, "protocol_error",
                             "the server's reply metadata cannot be decoded");
        rep->meta = &rep->mu.data;
    }
    const msgpack_object *st = fpx_mp_get(rep->header, "status");
    if (st && st->type == MSGPACK_OBJECT_STR && st->via.str.size == 2 &&
        !memcmp(st->via.str.ptr, "ok", 2))
        return 0;
    copy_str(cli->errtype, sizeof cli->errtype, fpx_mp_get(rep->header, "error_type"),
             "internal_error");
    copy_str(cli->errstr, sizeof cli->errstr, fpx_mp_get(rep->header, "message"), "");
    return -1;
}

/* The request's body (malloc'd) into *body, *len. */
static int build_body(fpx_cli *cli, fpx_rawreq *rq, const void *a, size_t alen, const void *b,
                      size_t blen, int has_meta, uint8_t **out, size_t *out_len) {
    size_t mlen = has_meta ? rq->meta.size : 0;
    msgpack_sbuffer pre;
    msgpack_sbuffer_init(&pre);
    msgpack_packer pp;
    msgpack_packer_init(&pp, &pre, msgpack_sbuffer_write);
    msgpack_pack_map(&pp, 3);
    fpx_mp_pack_str(&pp, "header_size");
    msgpack_pack_uint64(&pp, rq->hdr.size);
    fpx_mp_pack_str(&pp, "vector_size");
    msgpack_pack_uint64(&pp, alen + blen);
    fpx_mp_pack_str(&pp, "metadata_size");
    msgpack_pack_uint64(&pp, mlen);
    size_t len = pre.size + rq->hdr.size + alen + blen + mlen;
    uint8_t *body = malloc(len);
    if (!body) {
        msgpack_sbuffer_destroy(&pre);
        return raw_error(cli, "internal_error", "out of memory for a request of %zu bytes", len);
    }
    uint8_t *p = body;
    memcpy(p, pre.data, pre.size), p += pre.size;
    memcpy(p, rq->hdr.data, rq->hdr.size), p += rq->hdr.size;
    if (alen)
        memcpy(p, a, alen), p += alen;
    if (blen)
        memcpy(p, b, blen), p += blen;
    if (mlen)
        memcpy(p, rq->meta.data, mlen);
    msgpack_sbuffer_destroy(&pre);
    *out = body;
    *out_len = len;
    return 0;
}

int fpx_rawreq_send(fpx_cli *cli, fpx_rawreq *rq, const void *a, size_t alen, const void *b,
                    size_t blen, int has_meta, fpx_rawrep *rep) {
    memset(rep, 0, sizeof *rep);
    msgpack_unpacked_init(&rep->hu);
    msgpack_unpacked_init(&rep->mu);
    uint8_t *body;
    size_t len;
    if (build_body(cli, rq, a, alen, b, blen, has_meta, &body, &len) != 0)
        return -1;
    size_t rlen = 0;
    int rc = fpx_client_request_raw(cli->c, body, len, &rep->body, &rlen);
    free(body);
    if (rc != 0)
        return raw_error(cli, fpx_client_errtype(cli->c), "%s", fpx_client_errstr(cli->c));
    if (decode_reply(cli, rep, rlen) != 0) {
        fpx_rawrep_free(rep);
        return -1;
    }
    return 0;
}

void fpx_rawrep_free(fpx_rawrep *rep) {
    msgpack_unpacked_destroy(&rep->hu);
    msgpack_unpacked_destroy(&rep->mu);
    free(rep->body);
    rep->body = NULL;
}

int fpx_json_to_mp(msgpack_packer *pk, const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(v));
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)v, k, val) {
            fpx_mp_pack_str(pk, k);
            if (fpx_json_to_mp(pk, val) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(v));
        for (size_t i = 0; i < json_array_size(v); i++)
            if (fpx_json_to_mp(pk, json_array_get(v, i)) != 0)
                return -1;
        return 0;
    }
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(v));
        msgpack_pack_str_body(pk, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        return 0;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        return 0;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return 0;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return 0;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        return 0;
    }
    return -1;
}

json_t *fpx_mp_to_json(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* JSON integers here are int64: larger ones keep their value as text */
        if (o->via.u64 > INT64_MAX) {
            char buf[32];
            snprintf(buf, sizeof buf, "%llu", (unsigned long long)o->via.u64);
            return json_string(buf);
        }
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return json_stringn_nocheck(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++)
            json_array_append_new(a, fpx_mp_to_json(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            json_t *val = fpx_mp_to_json(&o->via.map.ptr[i].val);
            if (k->type == MSGPACK_OBJECT_STR) {
                char *ks = strndup(k->via.str.ptr, k->via.str.size);
                if (ks)
                    json_object_set_new_nocheck(m, ks, val);
                else
                    json_decref(val);
                free(ks);
            } else {
                /* JSON keys are strings: a non-string key is written as its JSON text */
                json_t *kj = fpx_mp_to_json(k);
                char *ks = kj ? json_dumps(kj, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
                if (ks)
                    json_object_set_new_nocheck(m, ks, val);
                else
                    json_decref(val);
                free(ks);
                json_decref(kj);
            }
        }
        return m;
    }
    default:
        /* bin and ext have no JSON form */
        return json_null();
    }
}

int fpx_cli_add(fpx_cli *cli, const char *index, int64_t n, int64_t d, const float *x,
                const int64_t *labels, json_t *const *ids, int64_t *ntotal) {
    fpx_rawreq rq;
    fpx_rawreq_begin(cli, &rq, "add_vectors", index, labels ? 2 : 1);
    fpx_mp_pack_str(&rq.hp, "vector_shape");
    msgpack_pack_array(&rq.hp, 2);
    msgpack_pack_int64(&rq.hp, n);
    msgpack_pack_int64(&rq.hp, d);
    if (labels) {
        fpx_mp_pack_str(&rq.hp, "with_ids");
        msgpack_pack_true(&rq.hp);
    }
    if (ids) {
        msgpack_pack_array(&rq.mp, (size_t)n);
        for (int64_t i = 0; i < n; i++)
            fpx_json_to_mp(&rq.mp, ids[i] ? ids[i] : json_null());
    }
    fpx_rawrep rep;
    int rc = fpx_rawreq_send(cli, &rq, x, (size_t)(n * d) * sizeof(float), labels,
                             labels ? (size_t)n * sizeof(int64_t) : 0, ids != NULL, &rep);
    fpx_rawreq_free(&rq);
    if (rc != 0)
        return -1;
    const msgpack_object *nt = fpx_mp_get(rep.meta, "ntotal");
    if (ntotal)
        *ntotal = nt && nt->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)nt->via.u64 : -1;
    fpx_rawrep_free(&rep);
    return 0;
}

int fpx_rawreq_post(fpx_cli *cli, fpx_rawreq *rq, const void *a, size_t alen, const void *b,
                    size_t blen, int has_meta) {
    uint8_t *body;
    size_t len;
    if (build_body(cli, rq, a, alen, b, blen, has_meta, &body, &len) != 0)
        return -1;
    int rc = fpx_client_send_raw(cli->c, body, len);
    free(body);
    if (rc != 0)
        return raw_error(cli, fpx_client_errtype(cli->c), "%s", fpx_client_errstr(cli->c));
    return 0;
}

int fpx_rawrep_next(fpx_cli *cli, fpx_rawrep *rep) {
    memset(rep, 0, sizeof *rep);
    msgpack_unpacked_init(&rep->hu);
    msgpack_unpacked_init(&rep->mu);
    size_t rlen = 0;
    if (fpx_client_recv_raw(cli->c, &rep->body, &rlen) != 0) {
        raw_error(cli, fpx_client_errtype(cli->c), "%s", fpx_client_errstr(cli->c));
        return -2;
    }
    return decode_reply(cli, rep, rlen) != 0 ? -1 : 0;
}
