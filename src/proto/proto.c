/*
 * proto.c - body framing, msgpack decoding helpers and body building.
 *
 * Decoding never copies the data section: fpx_body points into the caller's
 * buffer. msgpack-c's msgpack_unpack_next references strings and binaries in
 * the input buffer too (its str/bin callbacks store pointers into it), so a
 * decoded fpx_msg borrows the received buffer and must not outlive it.
 * Every object goes through fpx_msgpack_check first, so msgpack-c never sees
 * a count that would make it allocate more than the message could hold.
 */
#include "proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const errnames[] = {
    "ok",
    "protocol_error",
    "authentication_error",
    "validation_error",
    "not_found",
    "already_exists",
    "not_trained",
    "unsupported",
    "limit_exceeded",
    "faiss_error",
    "internal_error",
    "unavailable",
};

const char *fpx_errtype_name(fpx_errtype t) {
    if ((unsigned)t >= sizeof errnames / sizeof errnames[0])
        return "internal_error";
    return errnames[t];
}

fpx_errtype fpx_errtype_from_name(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof errnames / sizeof errnames[0]; i++)
        if (strlen(errnames[i]) == len && !memcmp(errnames[i], name, len))
            return (fpx_errtype)i;
    return FPX_E_INTERNAL;
}

int fpx_err_set(fpx_err *e, fpx_errtype type, const char *fmt, ...) {
    if (!e)
        return -1;
    e->type = type;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- decoding ------------------------------------------------------------------- */

/* Checks and unpacks exactly one object filling buf[0..len). */
static int unpack_exact(const uint8_t *buf, size_t len, msgpack_unpacked *u, const char *what,
                        fpx_err *err) {
    size_t used = 0, off = 0;
    if (fpx_msgpack_check(buf, len, &used, err) != 0) {
        char inner[sizeof err->msg];
        snprintf(inner, sizeof inner, "%s", err->msg);
        return fpx_err_set(err, FPX_E_PROTOCOL, "%s: %s", what, inner);
    }
    if (used != len)
        return fpx_err_set(err, FPX_E_PROTOCOL,
                           "%s: %zu bytes announced but its msgpack object is %zu bytes", what, len,
                           used);
    msgpack_unpack_return r = msgpack_unpack_next(u, (const char *)buf, len, &off);
    if (r != MSGPACK_UNPACK_SUCCESS)
        return fpx_err_set(err, r == MSGPACK_UNPACK_NOMEM_ERROR ? FPX_E_INTERNAL : FPX_E_PROTOCOL,
                           "%s: %s", what,
                           r == MSGPACK_UNPACK_NOMEM_ERROR ? "out of memory" : "invalid msgpack");
    return 0;
}

/* The contract's preamble is exactly the three sizes: a map missing one (or
 * holding anything else) is refused, so every client sends the same form and
 * a typo in a key cannot silently read as a zero size. */
static int preamble_size(const msgpack_object *map, const char *key, uint64_t *v, fpx_err *err) {
    const msgpack_object *o = fpx_map_get(map, key);
    *v = 0;
    if (!o)
        return fpx_err_set(err, FPX_E_PROTOCOL,
                           "preamble lacks %s (it must hold header_size, vector_size and "
                           "metadata_size)",
                           key);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fpx_err_set(err, FPX_E_PROTOCOL, "preamble %s must be an unsigned integer", key);
    *v = o->via.u64;
    return 0;
}

int fpx_body_split(const void *buf, size_t len, fpx_body *out, fpx_err *err) {
    const uint8_t *p = buf;
    memset(out, 0, sizeof *out);
    if (len == 0)
        return fpx_err_set(err, FPX_E_PROTOCOL, "empty body");
    size_t used = 0, off = 0;
    if (fpx_msgpack_check(p, len, &used, err) != 0) {
        char inner[sizeof err->msg];
        snprintf(inner, sizeof inner, "%s", err->msg);
        return fpx_err_set(err, FPX_E_PROTOCOL, "preamble: %s", inner);
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = 0;
    uint64_t hs = 0, vs = 0, ms = 0;
    if (msgpack_unpack_next(&u, (const char *)p, used, &off) != MSGPACK_UNPACK_SUCCESS)
        rc = fpx_err_set(err, FPX_E_PROTOCOL, "preamble: invalid msgpack");
    else if (u.data.type != MSGPACK_OBJECT_MAP)
        rc = fpx_err_set(err, FPX_E_PROTOCOL, "preamble is not a map");
    else if (preamble_size(&u.data, "header_size", &hs, err) ||
             preamble_size(&u.data, "vector_size", &vs, err) ||
             preamble_size(&u.data, "metadata_size", &ms, err))
        rc = -1;
    else if (u.data.via.map.size != 3) /* the three sizes, each once, nothing else */
        rc = fpx_err_set(err, FPX_E_PROTOCOL,
                         "preamble must hold exactly header_size, vector_size and metadata_size "
                         "(%u keys given)",
                         (unsigned)u.data.via.map.size);
    msgpack_unpacked_destroy(&u);
    if (rc)
        return -1;
    size_t rest = len - used;
    if (hs == 0)
        return fpx_err_set(err, FPX_E_PROTOCOL, "header_size must be > 0");
    if (hs > rest || vs > rest - hs || ms > rest - hs - vs || hs + vs + ms != rest)
        return fpx_err_set(err, FPX_E_PROTOCOL,
                           "preamble sizes (header %llu + vector %llu + metadata %llu) do not "
                           "match the %zu bytes after the preamble",
                           (unsigned long long)hs, (unsigned long long)vs, (unsigned long long)ms,
                           rest);
    out->header = p + used;
    out->header_size = (size_t)hs;
    out->data = vs ? p + used + hs : NULL;
    out->data_size = (size_t)vs;
    out->meta = ms ? p + used + hs + vs : NULL;
    out->meta_size = (size_t)ms;
    return 0;
}

static int decode(fpx_msg *m, const void *buf, size_t len, int with_meta, fpx_err *err) {
    memset(m, 0, sizeof *m);
    msgpack_unpacked_init(&m->header_u);
    msgpack_unpacked_init(&m->meta_u);
    if (fpx_body_split(buf, len, &m->body, err) ||
        unpack_exact(m->body.header, m->body.header_size, &m->header_u, "header", err))
        goto fail;
    if (m->header_u.data.type != MSGPACK_OBJECT_MAP) {
        fpx_err_set(err, FPX_E_PROTOCOL, "header is not a map");
        goto fail;
    }
    m->header = &m->header_u.data;
    if (with_meta && m->body.meta_size) {
        if (unpack_exact(m->body.meta, m->body.meta_size, &m->meta_u, "metadata", err))
            goto fail;
        m->meta = &m->meta_u.data;
    }
    return 0;
fail:
    fpx_msg_destroy(m);
    return -1;
}

int fpx_msg_decode(fpx_msg *m, const void *buf, size_t len, fpx_err *err) {
    return decode(m, buf, len, 1, err);
}

int fpx_msg_decode_header(fpx_msg *m, const void *buf, size_t len, fpx_err *err) {
    return decode(m, buf, len, 0, err);
}

void fpx_msg_destroy(fpx_msg *m) {
    msgpack_unpacked_destroy(&m->header_u);
    msgpack_unpacked_destroy(&m->meta_u);
    msgpack_unpacked_init(&m->header_u);
    msgpack_unpacked_init(&m->meta_u);
    m->header = m->meta = NULL;
}

/* ---- object access ------------------------------------------------------------- */

const msgpack_object *fpx_map_get(const msgpack_object *map, const char *key) {
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            !memcmp(k->via.str.ptr, key, n))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

int fpx_obj_int(const msgpack_object *o, int64_t *v) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return -1;
        *v = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return 0;
    }
    return -1;
}

int fpx_obj_bool(const msgpack_object *o, int *v) {
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return -1;
    *v = o->via.boolean ? 1 : 0;
    return 0;
}

int fpx_obj_str(const msgpack_object *o, const char **s, size_t *n) {
    if (o->type != MSGPACK_OBJECT_STR)
        return -1;
    *s = o->via.str.ptr;
    *n = o->via.str.size;
    return 0;
}

int fpx_obj_str_eq(const msgpack_object *o, const char *s) {
    size_t n = strlen(s);
    /* an empty string's ptr may be NULL (msgpack-c): no memcmp of it */
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           (n == 0 || !memcmp(o->via.str.ptr, s, n));
}

int fpx_utf8_valid(const char *s, size_t n) {
    if (n == 0) /* s may be NULL then (an empty msgpack string) */
        return 1;
    const uint8_t *p = (const uint8_t *)s, *end = p + n;
    while (p < end) {
        uint8_t c = *p;
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if ((size_t)(end - p) < len)
            return 0;
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += len;
    }
    return 1;
}

int fpx_obj_utf8_valid(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        return fpx_utf8_valid(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (!fpx_obj_utf8_valid(&o->via.array.ptr[i]))
                return 0;
        return 1;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (!fpx_obj_utf8_valid(&o->via.map.ptr[i].key) ||
                !fpx_obj_utf8_valid(&o->via.map.ptr[i].val))
                return 0;
        return 1;
    default:
        return 1;
    }
}

static int is_int(const msgpack_object *o) {
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

static int is_float(const msgpack_object *o) {
    return o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64;
}

int fpx_obj_equal(const msgpack_object *a, const msgpack_object *b) {
    if (is_int(a) && is_int(b)) {
        if (a->type != b->type)
            return 0; /* a negative never equals a non-negative */
        return a->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? a->via.u64 == b->via.u64
                                                          : a->via.i64 == b->via.i64;
    }
    if (is_float(a) && is_float(b))
        return a->via.f64 == b->via.f64;
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case MSGPACK_OBJECT_NIL:
        return 1;
    case MSGPACK_OBJECT_BOOLEAN:
        return a->via.boolean == b->via.boolean;
    case MSGPACK_OBJECT_STR: /* empty ones may have NULL ptrs: no memcmp of them */
        return a->via.str.size == b->via.str.size &&
               (a->via.str.size == 0 || !memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size));
    case MSGPACK_OBJECT_BIN:
        return a->via.bin.size == b->via.bin.size &&
               (a->via.bin.size == 0 || !memcmp(a->via.bin.ptr, b->via.bin.ptr, a->via.bin.size));
    case MSGPACK_OBJECT_EXT:
        return a->via.ext.type == b->via.ext.type && a->via.ext.size == b->via.ext.size &&
               !memcmp(a->via.ext.ptr, b->via.ext.ptr, a->via.ext.size);
    case MSGPACK_OBJECT_ARRAY:
        if (a->via.array.size != b->via.array.size)
            return 0;
        for (uint32_t i = 0; i < a->via.array.size; i++)
            if (!fpx_obj_equal(&a->via.array.ptr[i], &b->via.array.ptr[i]))
                return 0;
        return 1;
    case MSGPACK_OBJECT_MAP:
        if (a->via.map.size != b->via.map.size)
            return 0;
        for (uint32_t i = 0; i < a->via.map.size; i++)
            if (!fpx_obj_equal(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key) ||
                !fpx_obj_equal(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val))
                return 0;
        return 1;
    default:
        return 0;
    }
}

/* ---- building ---------------------------------------------------------------------- */

/* Packer callbacks that remember an allocation failure in the fpx_out. */
static int out_write_hdr(void *data, const char *buf, size_t len) {
    fpx_out *o = data;
    if (msgpack_sbuffer_write(&o->hbuf, buf, len) != 0) {
        o->failed = 1;
        return -1;
    }
    return 0;
}

static int out_write_meta(void *data, const char *buf, size_t len) {
    fpx_out *o = data;
    if (msgpack_sbuffer_write(&o->mbuf, buf, len) != 0) {
        o->failed = 1;
        return -1;
    }
    return 0;
}

void fpx_out_init(fpx_out *o) {
    memset(o, 0, sizeof *o);
    msgpack_sbuffer_init(&o->hbuf);
    msgpack_packer_init(&o->hdr_pk, o, out_write_hdr);
    msgpack_sbuffer_init(&o->mbuf);
    msgpack_packer_init(&o->meta_pk, o, out_write_meta);
}

msgpack_packer *fpx_out_hdr(fpx_out *o) {
    return &o->hdr_pk;
}

msgpack_packer *fpx_out_meta(fpx_out *o) {
    o->has_meta = 1;
    return &o->meta_pk;
}

static const char *const pre_keys[3] = {"header_size", "vector_size", "metadata_size"};

/* Encoded length of a preamble key with `extra` bytes of padding:
 * fixstr (1 + n), str8 (+1), str16 (+2), str32 (+4). */
static size_t pre_key_hdr(size_t extra) {
    return extra == 0 ? 1 : extra == 1 ? 2 : extra == 2 ? 3 : 5;
}

/* Padding per key for a total pad of 0..7 bytes: bit 0 -> str8, bit 1 -> str16, bit 2 -> str32. */
static size_t pad_part(size_t pad, int key) {
    static const size_t bit_extra[3] = {1, 2, 4};
    return (pad >> key) & 1 ? bit_extra[key] : 0;
}

static size_t preamble_len(size_t pad) {
    size_t n = 1; /* fixmap of 3 */
    for (int k = 0; k < 3; k++)
        n += pre_key_hdr(pad_part(pad, k)) + strlen(pre_keys[k]) + 9;
    return n;
}

static void write_preamble(uint8_t *p, size_t pad, size_t hs, size_t vs, size_t ms) {
    uint64_t vals[3] = {hs, vs, ms};
    *p++ = 0x83;
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(pre_keys[k]);
        switch (pad_part(pad, k)) {
        case 0:
            *p++ = (uint8_t)(0xa0 | n);
            break;
        case 1:
            *p++ = 0xd9;
            *p++ = (uint8_t)n;
            break;
        case 2:
            *p++ = 0xda;
            *p++ = 0;
            *p++ = (uint8_t)n;
            break;
        default:
            *p++ = 0xdb;
            *p++ = 0;
            *p++ = 0;
            *p++ = 0;
            *p++ = (uint8_t)n;
        }
        memcpy(p, pre_keys[k], n);
        p += n;
        *p++ = 0xcf;
        for (int i = 7; i >= 0; i--)
            *p++ = (uint8_t)(vals[k] >> (8 * i));
    }
}

/* The padding that makes preamble + header a multiple of 8. */
static size_t choose_pad(size_t hlen) {
    size_t base = preamble_len(0) + hlen;
    return (8 - base % 8) % 8;
}

void *fpx_out_data(fpx_out *o, size_t n) {
    if (o->failed || o->buf)
        return NULL;
    size_t hlen = o->hbuf.size;
    size_t pre = preamble_len(choose_pad(hlen));
    if (n > SIZE_MAX - pre - hlen - 1) {
        o->failed = 1;
        return NULL;
    }
    o->buf = malloc(pre + hlen + n + 1);
    if (!o->buf) {
        o->failed = 1;
        return NULL;
    }
    memcpy(o->buf + pre, o->hbuf.data, hlen);
    o->data_off = pre + hlen;
    o->data_size = n;
    return o->buf + o->data_off;
}

int fpx_out_finish(fpx_out *o, uint8_t **buf, size_t *len) {
    size_t hlen = o->hbuf.size;
    size_t pad = choose_pad(hlen);
    size_t pre = preamble_len(pad);
    size_t mlen = o->has_meta ? o->mbuf.size : 0;
    int rc = -1;
    if (!o->failed && hlen > 0) {
        uint8_t *b = o->buf;
        size_t total = pre + hlen + o->data_size + mlen;
        if (!b) {
            b = malloc(total ? total : 1);
            if (b)
                memcpy(b + pre, o->hbuf.data, hlen);
        } else if (mlen) {
            uint8_t *nb = realloc(b, total);
            if (!nb) {
                free(b);
                b = NULL;
            } else {
                b = nb;
            }
        }
        o->buf = NULL;
        if (b) {
            if (mlen)
                memcpy(b + pre + hlen + o->data_size, o->mbuf.data, mlen);
            write_preamble(b, pad, hlen, o->data_size, mlen);
            *buf = b;
            *len = total;
            rc = 0;
        }
    }
    fpx_out_discard(o);
    return rc;
}

int fpx_out_frame(fpx_out *o, size_t data_size, uint8_t **prefix, size_t *prefix_len,
                  uint8_t **meta, size_t *meta_len) {
    size_t hlen = o->hbuf.size;
    size_t pad = choose_pad(hlen);
    size_t pre = preamble_len(pad);
    size_t mlen = o->has_meta ? o->mbuf.size : 0;
    int rc = -1;
    *prefix = NULL;
    *meta = NULL;
    if (!o->failed && hlen > 0 && !o->buf && (*prefix = malloc(pre + hlen)) != NULL) {
        write_preamble(*prefix, pad, hlen, data_size, mlen);
        memcpy(*prefix + pre, o->hbuf.data, hlen);
        *prefix_len = pre + hlen;
        *meta_len = mlen;
        if (mlen) {
            *meta = (uint8_t *)o->mbuf.data; /* the sbuffer's own storage, handed over */
            o->mbuf.data = NULL;
            o->mbuf.size = o->mbuf.alloc = 0;
        }
        rc = 0;
    }
    fpx_out_discard(o);
    return rc;
}

void fpx_out_discard(fpx_out *o) {
    free(o->buf);
    o->buf = NULL;
    msgpack_sbuffer_destroy(&o->hbuf);
    msgpack_sbuffer_destroy(&o->mbuf);
    msgpack_sbuffer_init(&o->hbuf);
    msgpack_sbuffer_init(&o->mbuf);
    o->data_size = 0;
    o->has_meta = 0;
}

void fpx_pack_cstr(msgpack_packer *pk, const char *s) {
    fpx_pack_str(pk, s, strlen(s));
}

void fpx_pack_str(msgpack_packer *pk, const char *s, size_t n) {
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

int fpx_build_error(const fpx_err *e, const msgpack_object *request_id, uint8_t **buf,
                    size_t *len) {
    return fpx_build_error_flagged(e, request_id, NULL, buf, len);
}

int fpx_build_error_flagged(const fpx_err *e, const msgpack_object *request_id, const char *flag,
                            uint8_t **buf, size_t *len) {
    return fpx_build_error_flag(e, request_id, flag, 0, buf, len);
}

int fpx_build_error_flag(const fpx_err *e, const msgpack_object *request_id, const char *flag,
                         int value, uint8_t **buf, size_t *len) {
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *pk = fpx_out_hdr(&o);
    msgpack_pack_map(pk, 3 + (request_id != NULL) + (flag != NULL));
    fpx_pack_cstr(pk, "status");
    fpx_pack_cstr(pk, "error");
    fpx_pack_cstr(pk, "error_type");
    fpx_pack_cstr(pk, fpx_errtype_name(e->type));
    /* Messages quote request fields; keep them printable ASCII so that no
     * client's strict UTF-8 decoder chokes on an error reply. */
    char msg[sizeof e->msg];
    size_t n = strnlen(e->msg, sizeof e->msg - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)e->msg[i];
        msg[i] = (c < 0x20 || c > 0x7e) ? '?' : (char)c;
    }
    msg[n] = 0;
    fpx_pack_cstr(pk, "message");
    fpx_pack_cstr(pk, msg);
    if (request_id) {
        fpx_pack_cstr(pk, "request_id");
        msgpack_pack_object(pk, *request_id);
    }
    if (flag) {
        fpx_pack_cstr(pk, flag);
        if (value)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
    return fpx_out_finish(&o, buf, len);
}
