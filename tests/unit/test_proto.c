/*
 * test_proto.c - unit tests of the wire codec (src/proto): round trips of
 * bodies built by fpx_out, the alignment of the data section, error replies,
 * and every malformed case the decoder must refuse without crashing: empty
 * bodies, lying preambles, invalid or truncated msgpack, counts that would
 * make msgpack-c allocate gigabytes, nesting too deep, every truncation and
 * every single-byte corruption of a valid body.
 */
#include "proto/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---- helpers: bodies assembled by hand ---------------------------------------- */

typedef struct buf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} buf;

static void buf_init(buf *b) {
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void buf_free(buf *b) {
    msgpack_sbuffer_destroy(&b->sb);
}

static void buf_raw(buf *b, const void *p, size_t n) {
    msgpack_sbuffer_write(&b->sb, p, n);
}

static void pack_preamble(buf *b, uint64_t hs, uint64_t vs, uint64_t ms) {
    msgpack_pack_map(&b->pk, 3);
    fpx_pack_cstr(&b->pk, "header_size");
    msgpack_pack_uint64(&b->pk, hs);
    fpx_pack_cstr(&b->pk, "vector_size");
    msgpack_pack_uint64(&b->pk, vs);
    fpx_pack_cstr(&b->pk, "metadata_size");
    msgpack_pack_uint64(&b->pk, ms);
}

/* preamble || header || data || meta, where header and meta are raw bytes. */
static void body_raw(buf *b, const void *hdr, size_t hs, const void *data, size_t vs,
                     const void *meta, size_t ms) {
    buf_init(b);
    pack_preamble(b, hs, vs, ms);
    buf_raw(b, hdr, hs);
    if (vs)
        buf_raw(b, data, vs);
    if (ms)
        buf_raw(b, meta, ms);
}

/* Expects decode to fail with a protocol_error and leave nothing allocated. */
static void expect_protocol_error(const void *p, size_t n, const char *what) {
    fpx_msg m;
    fpx_err err = {0};
    int rc = fpx_msg_decode(&m, p, n, &err);
    CHECK(rc == -1);
    CHECK(err.type == FPX_E_PROTOCOL);
    CHECK(err.msg[0] != '\0');
    if (rc != -1 || err.type != FPX_E_PROTOCOL)
        fprintf(stderr, "  case: %s (rc %d, type %d, msg %s)\n", what, rc, err.type, err.msg);
    if (rc == 0)
        fpx_msg_destroy(&m);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_errtype_names(void) {
    static const char *names[] = {"ok",
                                  "protocol_error",
                                  "authentication_error",
                                  "validation_error",
                                  "not_found",
                                  "already_exists",
                                  "not_trained",
                                  "unsupported",
                                  "limit_exceeded",
                                  "faiss_error",
                                  "internal_error"};
    for (int t = FPX_OK; t <= FPX_E_INTERNAL; t++) {
        CHECK(strcmp(fpx_errtype_name((fpx_errtype)t), names[t]) == 0);
        CHECK(fpx_errtype_from_name(names[t], strlen(names[t])) == (fpx_errtype)t);
    }
    CHECK(fpx_errtype_from_name("nonsense", 8) == FPX_E_INTERNAL);
    CHECK(fpx_errtype_from_name("protocol_errorX", 15) == FPX_E_INTERNAL);
    fpx_err e;
    CHECK(fpx_err_set(&e, FPX_E_LIMIT, "k=%d", 7) == -1);
    CHECK(e.type == FPX_E_LIMIT && strcmp(e.msg, "k=7") == 0);
}

/* Builds a body with fpx_out: header {"operation": op, "pad": <padlen bytes>},
 * data of dsize bytes (0, 1, 2, ...), metadata {"m": 42} when with_meta. */
static int build(const char *op, size_t padlen, size_t dsize, int with_meta, uint8_t **out,
                 size_t *len) {
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *pk = fpx_out_hdr(&o);
    msgpack_pack_map(pk, 2);
    fpx_pack_cstr(pk, "operation");
    fpx_pack_cstr(pk, op);
    fpx_pack_cstr(pk, "pad");
    char pad[600];
    memset(pad, 'x', sizeof pad);
    fpx_pack_str(pk, pad, padlen);
    uint8_t *d = fpx_out_data(&o, dsize);
    if (!d) {
        fpx_out_discard(&o);
        return -1;
    }
    for (size_t i = 0; i < dsize; i++)
        d[i] = (uint8_t)i;
    if (with_meta) {
        msgpack_packer *mp = fpx_out_meta(&o);
        msgpack_pack_map(mp, 1);
        fpx_pack_cstr(mp, "m");
        msgpack_pack_int(mp, 42);
    }
    return fpx_out_finish(&o, out, len);
}

static void test_round_trip(void) {
    for (size_t padlen = 0; padlen < 600; padlen += 7) {
        for (int with_meta = 0; with_meta <= 1; with_meta++) {
            size_t dsize = padlen % 3 == 0 ? 0 : padlen * 4;
            uint8_t *b = NULL;
            size_t n = 0;
            CHECK(build("search", padlen, dsize, with_meta, &b, &n) == 0);
            fpx_msg m;
            fpx_err err = {0};
            CHECK(fpx_msg_decode(&m, b, n, &err) == 0);
            CHECK(m.header && m.header->type == MSGPACK_OBJECT_MAP);
            CHECK(fpx_obj_str_eq(fpx_map_get(m.header, "operation"), "search"));
            const char *s;
            size_t sn;
            CHECK(fpx_obj_str(fpx_map_get(m.header, "pad"), &s, &sn) == 0 && sn == padlen);
            CHECK(m.body.data_size == dsize);
            if (dsize) {
                /* the data section starts 8-aligned from the body start */
                CHECK((size_t)(m.body.data - b) % 8 == 0);
                int same = 1;
                for (size_t i = 0; i < dsize; i++)
                    same &= m.body.data[i] == (uint8_t)i;
                CHECK(same);
            } else {
                CHECK(m.body.data == NULL);
            }
            if (with_meta) {
                CHECK(m.meta && m.meta->type == MSGPACK_OBJECT_MAP);
                int64_t v = 0;
                CHECK(fpx_obj_int(fpx_map_get(m.meta, "m"), &v) == 0 && v == 42);
            } else {
                CHECK(m.meta == NULL);
            }
            fpx_msg_destroy(&m);
            free(b);
        }
    }
}

/* The three sizes of a preamble at the start of b, which must be a map of
 * exactly those three keys. 0 or -1. */
static int read_preamble(const uint8_t *b, size_t n, size_t *off, int64_t sizes[3]) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    *off = 0;
    int rc = -1;
    if (msgpack_unpack_next(&u, (const char *)b, n, off) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP && u.data.via.map.size == 3 &&
        fpx_obj_int(fpx_map_get(&u.data, "header_size"), &sizes[0]) == 0 &&
        fpx_obj_int(fpx_map_get(&u.data, "vector_size"), &sizes[1]) == 0 &&
        fpx_obj_int(fpx_map_get(&u.data, "metadata_size"), &sizes[2]) == 0)
        rc = 0;
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* A plain msgpack decoder reads the server's padded preamble as the contract's
 * map, and every encoder (whole bodies and framed replies, with and without
 * data or metadata) writes all three sizes, zeros included. */
static void test_preamble_is_plain_msgpack(void) {
    for (int dsize = 0; dsize <= 24; dsize += 24) {
        for (int with_meta = 0; with_meta <= 1; with_meta++) {
            uint8_t *b = NULL;
            size_t n = 0, off = 0;
            int64_t sz[3] = {-1, -1, -1};
            CHECK(build("ping", 3, (size_t)dsize, with_meta, &b, &n) == 0);
            CHECK(read_preamble(b, n, &off, sz) == 0);
            CHECK(sz[1] == dsize && (sz[2] > 0) == with_meta);
            CHECK(off + (size_t)(sz[0] + sz[1] + sz[2]) == n);
            if (dsize)
                CHECK((off + (size_t)sz[0]) % 8 == 0); /* data starts 8-aligned */
            free(b);

            fpx_out o;
            fpx_out_init(&o);
            msgpack_packer *pk = fpx_out_hdr(&o);
            msgpack_pack_map(pk, 1);
            fpx_pack_cstr(pk, "status");
            fpx_pack_cstr(pk, "ok");
            if (with_meta)
                msgpack_pack_nil(fpx_out_meta(&o));
            uint8_t *prefix = NULL, *meta = NULL;
            size_t plen = 0, mlen = 0;
            CHECK(fpx_out_frame(&o, (size_t)dsize, &prefix, &plen, &meta, &mlen) == 0);
            CHECK(prefix && read_preamble(prefix, plen, &off, sz) == 0);
            CHECK(sz[1] == dsize && sz[2] == (int64_t)mlen && off + (size_t)sz[0] == plen);
            free(prefix);
            free(meta);
        }
    }
}

/* The preamble must hold the three sizes and nothing else (the contract's
 * map); any valid msgpack encoding of them and any key order is accepted. */
static void test_foreign_preambles(void) {
    static const uint8_t hdr[] = {0x81, 0xa9, 'o', 'p',  'e', 'r', 'a', 't',
                                  'i',  'o',  'n', 0xa4, 'p', 'i', 'n', 'g'};
    static const char *const keys[3] = {"header_size", "vector_size", "metadata_size"};
    buf b;
    fpx_msg m;
    fpx_err err = {0};
    /* a subset of the sizes: each missing one is a protocol_error */
    for (int mask = 1; mask < 7; mask++) {
        buf_init(&b);
        msgpack_pack_map(&b.pk, (size_t)((mask & 1) + (mask >> 1 & 1) + (mask >> 2 & 1)));
        for (int k = 0; k < 3; k++) {
            if (!(mask >> k & 1))
                continue;
            fpx_pack_cstr(&b.pk, keys[k]);
            msgpack_pack_int(&b.pk, k == 0 ? (int)sizeof hdr : 0);
        }
        buf_raw(&b, hdr, sizeof hdr);
        expect_protocol_error(b.sb.data, b.sb.size, "a preamble without all three sizes");
        CHECK(fpx_msg_decode(&m, b.sb.data, b.sb.size, &err) != 0 &&
              strstr(err.msg, "preamble lacks") != NULL);
        buf_free(&b);
    }
    /* the three sizes and one more key */
    buf_init(&b);
    msgpack_pack_map(&b.pk, 4);
    for (int k = 0; k < 3; k++) {
        fpx_pack_cstr(&b.pk, keys[k]);
        msgpack_pack_int(&b.pk, k == 0 ? (int)sizeof hdr : 0);
    }
    fpx_pack_cstr(&b.pk, "checksum");
    msgpack_pack_int(&b.pk, 0);
    buf_raw(&b, hdr, sizeof hdr);
    expect_protocol_error(b.sb.data, b.sb.size, "a preamble with a fourth key");
    buf_free(&b);
    /* a size given twice instead of another: still not the three sizes */
    buf_init(&b);
    msgpack_pack_map(&b.pk, 3);
    fpx_pack_cstr(&b.pk, "header_size");
    msgpack_pack_int(&b.pk, (int)sizeof hdr);
    fpx_pack_cstr(&b.pk, "vector_size");
    msgpack_pack_int(&b.pk, 0);
    fpx_pack_cstr(&b.pk, "vector_size");
    msgpack_pack_int(&b.pk, 0);
    buf_raw(&b, hdr, sizeof hdr);
    expect_protocol_error(b.sb.data, b.sb.size, "a preamble with a repeated key");
    buf_free(&b);

    /* explicit zero sizes, uint16 encodings */
    buf_init(&b);
    msgpack_pack_map(&b.pk, 3);
    fpx_pack_cstr(&b.pk, "metadata_size");
    msgpack_pack_uint16(&b.pk, 0);
    fpx_pack_cstr(&b.pk, "vector_size");
    msgpack_pack_uint16(&b.pk, 0);
    fpx_pack_cstr(&b.pk, "header_size");
    msgpack_pack_uint16(&b.pk, sizeof hdr);
    buf_raw(&b, hdr, sizeof hdr);
    CHECK(fpx_msg_decode(&m, b.sb.data, b.sb.size, &err) == 0);
    fpx_msg_destroy(&m);
    buf_free(&b);
}

static void test_malformed(void) {
    static const uint8_t hdr[] = {0x81, 0xa1, 'a', 0x01}; /* {"a": 1} */
    uint8_t junk[64];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)(i * 37 + 11);
    buf b;

    expect_protocol_error("", 0, "empty body");
    expect_protocol_error("\xc1", 1, "reserved byte 0xc1");
    expect_protocol_error(junk, sizeof junk, "random bytes");
    expect_protocol_error("\x93\x01\x02\x03", 4, "preamble is an array");
    expect_protocol_error("\x80", 1, "empty preamble map");

    /* preamble lacks header_size */
    buf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    fpx_pack_cstr(&b.pk, "vector_size");
    msgpack_pack_uint64(&b.pk, 0);
    buf_raw(&b, hdr, sizeof hdr);
    expect_protocol_error(b.sb.data, b.sb.size, "no header_size");
    buf_free(&b);

    /* sizes of the wrong type: a string, a negative, a float */
    for (int kind = 0; kind < 3; kind++) {
        buf_init(&b);
        msgpack_pack_map(&b.pk, 1);
        fpx_pack_cstr(&b.pk, "header_size");
        if (kind == 0)
            fpx_pack_cstr(&b.pk, "4");
        else if (kind == 1)
            msgpack_pack_int64(&b.pk, -4);
        else
            msgpack_pack_double(&b.pk, 4.0);
        buf_raw(&b, hdr, sizeof hdr);
        expect_protocol_error(b.sb.data, b.sb.size, "size of the wrong type");
        buf_free(&b);
    }

    /* header_size 0 */
    buf_init(&b);
    pack_preamble(&b, 0, 0, 0);
    expect_protocol_error(b.sb.data, b.sb.size, "header_size 0");
    buf_free(&b);

    /* sizes that do not add up: too large, too small, huge, overflowing */
    const uint64_t lies[][3] = {{sizeof hdr + 1, 0, 0},
                                {sizeof hdr - 1, 0, 0},
                                {sizeof hdr, 1, 0},
                                {sizeof hdr, 0, 1},
                                {UINT64_MAX, 0, 0},
                                {sizeof hdr, UINT64_MAX, 0},
                                {sizeof hdr, UINT64_MAX - 3, 4},
                                {sizeof hdr, 0, UINT64_MAX}};
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        buf_init(&b);
        pack_preamble(&b, lies[i][0], lies[i][1], lies[i][2]);
        buf_raw(&b, hdr, sizeof hdr);
        expect_protocol_error(b.sb.data, b.sb.size, "lying sizes");
        buf_free(&b);
    }

    /* header not a map: an array, a string, nil, an int */
    static const uint8_t notmaps[][3] = {
        {0x91, 0x01, 0}, {0xa1, 'x', 0}, {0xc0, 0, 0}, {0x07, 0, 0}};
    static const size_t notmap_len[] = {2, 2, 1, 1};
    for (size_t i = 0; i < 4; i++) {
        body_raw(&b, notmaps[i], notmap_len[i], NULL, 0, NULL, 0);
        expect_protocol_error(b.sb.data, b.sb.size, "header not a map");
        buf_free(&b);
    }

    /* header: truncated, trailing bytes, two objects */
    static const uint8_t trunc[] = {0x82, 0xa1, 'a', 0x01}; /* map of 2, one pair */
    body_raw(&b, trunc, sizeof trunc, NULL, 0, NULL, 0);
    expect_protocol_error(b.sb.data, b.sb.size, "truncated header");
    buf_free(&b);
    static const uint8_t trailing[] = {0x81, 0xa1, 'a', 0x01, 0x00};
    body_raw(&b, trailing, sizeof trailing, NULL, 0, NULL, 0);
    expect_protocol_error(b.sb.data, b.sb.size, "header with trailing byte");
    buf_free(&b);

    /* string length past the end; bin32 claiming 4 GiB */
    static const uint8_t strpast[] = {0x81, 0xa1, 'a', 0xdb, 0xff, 0xff, 0xff, 0xff};
    body_raw(&b, strpast, sizeof strpast, NULL, 0, NULL, 0);
    expect_protocol_error(b.sb.data, b.sb.size, "str32 past the end");
    buf_free(&b);
    static const uint8_t binpast[] = {0x81, 0xa1, 'a', 0xc6, 0xff, 0xff, 0xff, 0xf0};
    body_raw(&b, binpast, sizeof binpast, NULL, 0, NULL, 0);
    expect_protocol_error(b.sb.data, b.sb.size, "bin32 past the end");
    buf_free(&b);

    /* counts that would make msgpack-c allocate gigabytes */
    static const uint8_t bigarr[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    body_raw(&b, bigarr, sizeof bigarr, NULL, 0, NULL, 0);
    expect_protocol_error(b.sb.data, b.sb.size, "array32 of 2^32-1 in 5 bytes");
    buf_free(&b);
    static const uint8_t bigmap[] = {0xdf, 0x7f, 0xff, 0xff, 0xff};
    body_raw(&b, bigmap, sizeof bigmap, NULL, 0, NULL, 0);
    expect_protocol_error(b.sb.data, b.sb.size, "map32 of 2^31 in 5 bytes");
    buf_free(&b);
    /* same trick in the preamble itself */
    expect_protocol_error(bigmap, sizeof bigmap, "preamble map32 of 2^31");

    /* nesting: 32 deep is fine, 33 and 100000 are not */
    for (int depth = 31; depth <= 34; depth++) {
        uint8_t deep[64];
        deep[0] = 0x81;
        deep[1] = 0xa1;
        deep[2] = 'a';
        for (int i = 0; i < depth - 1; i++)
            deep[3 + i] = 0x91;
        deep[3 + depth - 1] = 0xc0;
        body_raw(&b, deep, (size_t)(3 + depth), NULL, 0, NULL, 0);
        fpx_msg m;
        fpx_err err = {0};
        int rc = fpx_msg_decode(&m, b.sb.data, b.sb.size, &err);
        /* the map is level 1, the arrays levels 2..depth, nil inside the last */
        if (depth <= FPX_MSGPACK_MAX_DEPTH) {
            CHECK(rc == 0);
            if (rc == 0)
                fpx_msg_destroy(&m);
        } else {
            CHECK(rc == -1 && err.type == FPX_E_PROTOCOL);
        }
        buf_free(&b);
    }
    size_t huge = 100000;
    uint8_t *deep = malloc(huge);
    CHECK(deep != NULL);
    if (deep) {
        memset(deep, 0x91, huge);
        deep[huge - 1] = 0xc0;
        body_raw(&b, deep, huge, NULL, 0, NULL, 0);
        expect_protocol_error(b.sb.data, b.sb.size, "100000 nested arrays");
        buf_free(&b);
        expect_protocol_error(deep, huge, "100000 nested arrays as preamble");
        free(deep);
    }

    /* metadata invalid, truncated, with trailing bytes */
    static const uint8_t badmeta[] = {0xc1};
    body_raw(&b, hdr, sizeof hdr, NULL, 0, badmeta, sizeof badmeta);
    expect_protocol_error(b.sb.data, b.sb.size, "metadata 0xc1");
    buf_free(&b);
    static const uint8_t twometa[] = {0x01, 0x02};
    body_raw(&b, hdr, sizeof hdr, NULL, 0, twometa, sizeof twometa);
    expect_protocol_error(b.sb.data, b.sb.size, "metadata with two objects");
    buf_free(&b);
    static const uint8_t truncmeta[] = {0x92, 0x01};
    body_raw(&b, hdr, sizeof hdr, NULL, 0, truncmeta, sizeof truncmeta);
    expect_protocol_error(b.sb.data, b.sb.size, "truncated metadata");
    buf_free(&b);

    /* a valid body with data and metadata still decodes (control) */
    static const uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    static const uint8_t meta[] = {0x90};
    body_raw(&b, hdr, sizeof hdr, data, sizeof data, meta, sizeof meta);
    fpx_msg m;
    fpx_err err = {0};
    CHECK(fpx_msg_decode(&m, b.sb.data, b.sb.size, &err) == 0);
    CHECK(m.body.data_size == 8 && memcmp(m.body.data, data, 8) == 0);
    CHECK(m.meta && m.meta->type == MSGPACK_OBJECT_ARRAY);
    fpx_msg_destroy(&m);
    buf_free(&b);
}

/* Every prefix of a valid body is refused; every single-byte corruption either
 * decodes or is refused, never crashes (the sanitizer build checks memory). */
static void test_truncations_and_corruptions(void) {
    uint8_t *b = NULL;
    size_t n = 0;
    CHECK(build("add_vectors", 40, 64, 1, &b, &n) == 0);
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, b, cut);
        expect_protocol_error(p, cut, "truncated body");
        free(p);
    }
    static const uint8_t values[] = {0x00, 0x7f, 0x80, 0x90, 0xa0, 0xc0, 0xc1, 0xc4, 0xcf,
                                     0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};
    int ok = 0, refused = 0;
    for (size_t pos = 0; pos < n; pos++) {
        for (size_t v = 0; v < sizeof values; v++) {
            uint8_t *p = malloc(n);
            memcpy(p, b, n);
            p[pos] = values[v];
            fpx_msg m;
            fpx_err err = {0};
            if (fpx_msg_decode(&m, p, n, &err) == 0) {
                ok++;
                CHECK(m.header && m.header->type == MSGPACK_OBJECT_MAP);
                fpx_msg_destroy(&m);
            } else {
                refused++;
                CHECK(err.type == FPX_E_PROTOCOL);
            }
            free(p);
        }
    }
    CHECK(ok > 0 && refused > 0);
    free(b);
}

static void test_msgpack_check(void) {
    size_t used = 0;
    fpx_err err = {0};
    static const uint8_t two[] = {0x01, 0x02};
    CHECK(fpx_msgpack_check(two, sizeof two, &used, &err) == 0 && used == 1);
    static const uint8_t ext[] = {0xd4, 0x01, 0x02, 0xc7, 0x02, 0x05, 0xaa, 0xbb};
    CHECK(fpx_msgpack_check(ext, sizeof ext, &used, &err) == 0 && used == 3);
    CHECK(fpx_msgpack_check(ext + 3, 5, &used, &err) == 0 && used == 5);
    CHECK(fpx_msgpack_check(ext + 3, 4, &used, &err) == -1);
    static const uint8_t f64[] = {0xcb, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f};
    CHECK(fpx_msgpack_check(f64, sizeof f64, &used, &err) == 0 && used == 9);
    CHECK(fpx_msgpack_check(f64, 8, &used, &err) == -1);
    CHECK(fpx_msgpack_check(two, 0, &used, &err) == -1);
}

static void test_accessors(void) {
    buf b;
    buf_init(&b);
    msgpack_pack_map(&b.pk, 6);
    fpx_pack_cstr(&b.pk, "u");
    msgpack_pack_uint64(&b.pk, UINT64_MAX);
    fpx_pack_cstr(&b.pk, "n");
    msgpack_pack_int64(&b.pk, -5);
    fpx_pack_cstr(&b.pk, "f");
    msgpack_pack_double(&b.pk, 3.0);
    fpx_pack_cstr(&b.pk, "t");
    msgpack_pack_true(&b.pk);
    fpx_pack_cstr(&b.pk, "s");
    fpx_pack_cstr(&b.pk, "hello");
    msgpack_pack_bin(&b.pk, 1);
    msgpack_pack_bin_body(&b.pk, "s", 1);
    msgpack_pack_nil(&b.pk);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    CHECK(msgpack_unpack_next(&u, b.sb.data, b.sb.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *map = &u.data;
    int64_t v = 0;
    int bv = 0;
    const char *s;
    size_t sn;
    CHECK(fpx_obj_int(fpx_map_get(map, "u"), &v) == -1); /* above INT64_MAX */
    CHECK(fpx_obj_int(fpx_map_get(map, "n"), &v) == 0 && v == -5);
    CHECK(fpx_obj_int(fpx_map_get(map, "f"), &v) == -1); /* floats are not integers */
    CHECK(fpx_obj_bool(fpx_map_get(map, "t"), &bv) == 0 && bv == 1);
    CHECK(fpx_obj_bool(fpx_map_get(map, "n"), &bv) == -1);
    CHECK(fpx_obj_str(fpx_map_get(map, "s"), &s, &sn) == 0 && sn == 5 && !memcmp(s, "hello", 5));
    CHECK(fpx_obj_str_eq(fpx_map_get(map, "s"), "hello"));
    CHECK(!fpx_obj_str_eq(fpx_map_get(map, "s"), "hell"));
    CHECK(fpx_map_get(map, "missing") == NULL);
    /* a bin key "s" is not the string key "s": the first match is the string */
    CHECK(fpx_map_get(map, "s")->type == MSGPACK_OBJECT_STR);
    CHECK(fpx_map_get(&map->via.map.ptr[0].val, "u") == NULL); /* not a map */
    msgpack_unpacked_destroy(&u);
    buf_free(&b);
}

static msgpack_object unpack(msgpack_unpacked *u, const char *bytes, size_t n) {
    msgpack_unpacked_init(u);
    size_t off = 0;
    if (msgpack_unpack_next(u, bytes, n, &off) != MSGPACK_UNPACK_SUCCESS)
        abort();
    return u->data;
}

static void test_equal(void) {
    msgpack_unpacked a, b;
    struct {
        const char *x;
        size_t xn;
        const char *y;
        size_t yn;
        int equal;
    } cases[] = {
        {"\x01", 1, "\xcc\x01", 2, 1},                             /* fixint 1 == uint8 1 */
        {"\x01", 1, "\xd3\0\0\0\0\0\0\0\x01", 9, 1},               /* == int64 1 */
        {"\xff", 1, "\xd0\xff", 2, 1},                             /* -1 == int8 -1 */
        {"\x01", 1, "\xcb\x3f\xf0\0\0\0\0\0\0", 9, 0},             /* 1 != 1.0 */
        {"\xa1s", 2, "\xc4\x01s", 3, 0},                           /* str != bin */
        {"\xa1s", 2, "\xa1t", 2, 0},                               /* different strings */
        {"\x81\xa1k\x01", 4, "\x81\xa1k\xcc\x01", 5, 1},           /* nested maps by value */
        {"\x81\xa1k\x01", 4, "\x81\xa1k\x02", 4, 0},               /* different values */
        {"\x92\x01\x02", 3, "\x92\x01\x02", 3, 1},                 /* arrays */
        {"\x92\x01\x02", 3, "\x92\x02\x01", 3, 0},                 /* order matters */
        {"\xc0", 1, "\xc2", 1, 0},                                 /* nil != false */
        {"\xc3", 1, "\xc3", 1, 1},                                 /* true == true */
        {"\xca\x3f\x80\0\0", 5, "\xcb\x3f\xf0\0\0\0\0\0\0", 9, 1}, /* float32 1 == float64 1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        msgpack_object x = unpack(&a, cases[i].x, cases[i].xn);
        msgpack_object y = unpack(&b, cases[i].y, cases[i].yn);
        int eq = fpx_obj_equal(&x, &y);
        CHECK(eq == cases[i].equal);
        CHECK(fpx_obj_equal(&y, &x) == cases[i].equal);
        if (eq != cases[i].equal)
            fprintf(stderr, "  equality case %zu\n", i);
        msgpack_unpacked_destroy(&a);
        msgpack_unpacked_destroy(&b);
    }
}

static void test_utf8(void) {
    CHECK(fpx_utf8_valid("", 0));
    CHECK(fpx_utf8_valid("plain ascii", 11));
    CHECK(fpx_utf8_valid("\xc3\xa9", 2));          /* é */
    CHECK(fpx_utf8_valid("\xe2\x82\xac", 3));      /* € */
    CHECK(fpx_utf8_valid("\xf0\x9f\x98\x80", 4));  /* U+1F600 */
    CHECK(fpx_utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    CHECK(!fpx_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    CHECK(!fpx_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    CHECK(!fpx_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!fpx_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    CHECK(!fpx_utf8_valid("\xc3", 1));             /* truncated */
    CHECK(!fpx_utf8_valid("\x80", 1));             /* lone continuation */
    CHECK(!fpx_utf8_valid("\xff", 1));
    CHECK(!fpx_utf8_valid("a\xe2\x82", 3));

    msgpack_unpacked u;
    msgpack_object o = unpack(&u, "\x81\xa1k\x91\xa2\xc3\xa9", 7); /* {"k": ["é"]} */
    CHECK(fpx_obj_utf8_valid(&o));
    msgpack_unpacked_destroy(&u);
    o = unpack(&u, "\x81\xa1k\x91\xa2\xc3\x28", 7); /* {"k": [bad]} */
    CHECK(!fpx_obj_utf8_valid(&o));
    msgpack_unpacked_destroy(&u);
    o = unpack(&u, "\x81\xa1\xff\x01", 4); /* bad key */
    CHECK(!fpx_obj_utf8_valid(&o));
    msgpack_unpacked_destroy(&u);
}

static void test_error_reply(void) {
    fpx_err e;
    fpx_err_set(&e, FPX_E_VALIDATION, "bad \x01value \xc3\xa9\n");
    msgpack_unpacked u;
    const char *rid_bytes[] = {"\x2a",
                               "\xa3"
                               "abc",
                               "\x91\x01", NULL};
    for (int i = 0; i < 4; i++) {
        msgpack_object rid;
        const msgpack_object *rp = NULL;
        if (rid_bytes[i]) {
            rid = unpack(&u, rid_bytes[i], strlen(rid_bytes[i]));
            rp = &rid;
        }
        uint8_t *b = NULL;
        size_t n = 0;
        CHECK(fpx_build_error(&e, rp, &b, &n) == 0);
        fpx_msg m;
        fpx_err err = {0};
        CHECK(fpx_msg_decode(&m, b, n, &err) == 0);
        CHECK(fpx_obj_str_eq(fpx_map_get(m.header, "status"), "error"));
        CHECK(fpx_obj_str_eq(fpx_map_get(m.header, "error_type"), "validation_error"));
        const char *s;
        size_t sn;
        CHECK(fpx_obj_str(fpx_map_get(m.header, "message"), &s, &sn) == 0);
        int printable = 1;
        for (size_t j = 0; j < sn; j++)
            printable &= s[j] >= 0x20 && s[j] < 0x7f;
        CHECK(printable && sn > 0);
        CHECK(m.body.data_size == 0 && m.meta == NULL);
        const msgpack_object *echo = fpx_map_get(m.header, "request_id");
        if (i == 0) {
            int64_t v = 0;
            CHECK(echo && fpx_obj_int(echo, &v) == 0 && v == 42);
        } else if (i == 1) {
            CHECK(echo && fpx_obj_str_eq(echo, "abc"));
        }
        fpx_msg_destroy(&m);
        free(b);
        if (rid_bytes[i])
            msgpack_unpacked_destroy(&u);
    }
}

int main(void) {
    test_errtype_names();
    test_round_trip();
    test_preamble_is_plain_msgpack();
    test_foreign_preambles();
    test_malformed();
    test_truncations_and_corruptions();
    test_msgpack_check();
    test_accessors();
    test_equal();
    test_utf8();
    test_error_reply();
    return CHECK_STATUS("test_proto");
}
