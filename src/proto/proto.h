/*
 * proto.h - the faiss-proxy wire format, shared by the server and the clients.
 *
 * A body is   preamble || header || data || metadata   (see docs/protocol.md).
 * This module splits a received body in place (no copy of the data section),
 * decodes the header and metadata with msgpack-c after a bounds pre-check, and
 * builds outgoing bodies into one malloc'd buffer whose data section callers
 * can fill directly (a search reply is written there by FAISS itself).
 *
 * It knows nothing about operations, indexes or sockets.
 */
#ifndef FPX_PROTO_H
#define FPX_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FPX_PROTOCOL_VERSION 1

/* Deepest nesting accepted in a header or metadata object. */
#define FPX_MSGPACK_MAX_DEPTH 32

/* Error kinds of the protocol, in the order of docs/protocol.md. */
typedef enum fpx_errtype {
    FPX_OK = 0,
    FPX_E_PROTOCOL,
    FPX_E_AUTH,
    FPX_E_VALIDATION,
    FPX_E_NOT_FOUND,
    FPX_E_EXISTS,
    FPX_E_NOT_TRAINED,
    FPX_E_UNSUPPORTED,
    FPX_E_LIMIT,
    FPX_E_FAISS,
    FPX_E_INTERNAL,
    FPX_E_UNAVAILABLE, /* a cluster node that cannot reach its cluster right now */
} fpx_errtype;

/* Wire name of an error kind ("protocol_error", ...); "ok" for FPX_OK. */
const char *fpx_errtype_name(fpx_errtype t);
/* Inverse of fpx_errtype_name; FPX_E_INTERNAL for an unknown name. */
fpx_errtype fpx_errtype_from_name(const char *name, size_t len);

/* An error: its kind and a human readable message. */
typedef struct fpx_err {
    fpx_errtype type;
    char msg[512];
} fpx_err;

/* Sets e->type and formats e->msg; returns -1 so callers can `return fpx_err_set(...)`. */
int fpx_err_set(fpx_err *e, fpx_errtype type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Checks that buf[0..len) starts with exactly one well-formed msgpack object
 * that is safe to hand to msgpack-c: nesting at most FPX_MSGPACK_MAX_DEPTH and
 * every array/map count no larger than the bytes left (so a 5-byte header that
 * claims 4 billion elements is refused before msgpack-c would allocate for it).
 * On success stores the object's encoded length in *used and returns 0.
 */
int fpx_msgpack_check(const uint8_t *buf, size_t len, size_t *used, fpx_err *err);

/* A body split into its four parts. All pointers borrow from the caller's buffer. */
typedef struct fpx_body {
    const uint8_t *header;
    size_t header_size;
    const uint8_t *data; /* NULL when data_size == 0 */
    size_t data_size;
    const uint8_t *meta; /* NULL when meta_size == 0 */
    size_t meta_size;
} fpx_body;

/* Splits buf by its preamble. The sizes must add up exactly to len. */
int fpx_body_split(const void *buf, size_t len, fpx_body *out, fpx_err *err);

/*
 * A decoded message: the header (always a map) and the metadata object (nil
 * when absent). Objects live in zones owned by the message; string and binary
 * payloads point into the original buffer, which must outlive the message.
 */
typedef struct fpx_msg {
    fpx_body body;
    msgpack_unpacked header_u;
    msgpack_unpacked meta_u;
    const msgpack_object *header; /* a MAP */
    const msgpack_object *meta;   /* NULL when the metadata section is absent */
} fpx_msg;

/* Splits and decodes buf. On failure *m is left destroyed (no need to free). */
int fpx_msg_decode(fpx_msg *m, const void *buf, size_t len, fpx_err *err);
/* fpx_msg_decode without the metadata (m->meta stays NULL): for a reply to
 * a request that is not handled, which needs only its request_id. */
int fpx_msg_decode_header(fpx_msg *m, const void *buf, size_t len, fpx_err *err);
void fpx_msg_destroy(fpx_msg *m);

/* ---- reading msgpack objects ---------------------------------------------- */

/* The value for a string key in a map object, or NULL. */
const msgpack_object *fpx_map_get(const msgpack_object *map, const char *key);

/* Typed accessors: return 0 and store the value, or -1 on a type mismatch.
 * fpx_obj_int accepts positive and negative integers (and float64 holding an
 * exact integer is refused: integers are integers). */
int fpx_obj_int(const msgpack_object *o, int64_t *v);
int fpx_obj_bool(const msgpack_object *o, int *v);
int fpx_obj_str(const msgpack_object *o, const char **s, size_t *n);
/* 1 when o is a string equal to s, else 0. */
int fpx_obj_str_eq(const msgpack_object *o, const char *s);
/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
int fpx_utf8_valid(const char *s, size_t n);
/* 1 when every string in o (keys and values, at any depth) is valid UTF-8. */
int fpx_obj_utf8_valid(const msgpack_object *o);

/* Deep equality of two msgpack objects (int 1 == uint 1; 1 != 1.0; str != bin). */
int fpx_obj_equal(const msgpack_object *a, const msgpack_object *b);

/* ---- building bodies -------------------------------------------------------- */

/*
 * A body under construction:
 *   fpx_out_init -> pack the header with fpx_out_hdr(o) -> fpx_out_data(o, n)
 *   returns room for n data bytes to fill -> optionally pack metadata with
 *   fpx_out_meta(o) -> fpx_out_finish(o, &buf, &len) hands over one malloc'd
 *   buffer (caller frees with free()).
 * The preamble is written with fixed-width (uint64) sizes so that the data
 * section's offset is known before the metadata exists, which lets a reply's
 * data be produced in place. All allocation failures are sticky and reported
 * by fpx_out_finish.
 */
typedef struct fpx_out {
    msgpack_sbuffer hbuf;
    msgpack_packer hdr_pk;
    msgpack_sbuffer mbuf;
    msgpack_packer meta_pk;
    uint8_t *buf; /* preamble || header || data, once fpx_out_data was called */
    size_t data_off;
    size_t data_size;
    int has_meta;
    int failed;
} fpx_out;

void fpx_out_init(fpx_out *o);
/* The packer for the header map. Start it with msgpack_pack_map(). */
msgpack_packer *fpx_out_hdr(fpx_out *o);
/* Freezes the header and reserves n data bytes; returns where they go (NULL on
 * allocation failure, or a valid pointer to zero bytes when n == 0). The data
 * section starts 8-byte aligned from the start of the body: the preamble's
 * key strings are encoded as str8/str16/str32 as needed to pad it (still
 * plain msgpack any decoder reads), so a receiver whose buffer is aligned can
 * use the vectors and labels in place. */
void *fpx_out_data(fpx_out *o, size_t n);
/* The packer for the metadata object (one object). */
msgpack_packer *fpx_out_meta(fpx_out *o);
/* Assembles the body. Returns 0, or -1 on allocation failure. *o is released. */
int fpx_out_finish(fpx_out *o, uint8_t **buf, size_t *len);
/*
 * For a body whose data section is too big to hold in memory twice (a
 * snapshot): instead of fpx_out_data + fpx_out_finish, after packing the
 * header and the metadata, hands over *prefix (preamble || header) and *meta,
 * both malloc'd (free()); the body is prefix || data_size bytes the caller
 * produces || meta. 0, or -1 on allocation failure. *o is released.
 */
int fpx_out_frame(fpx_out *o, size_t data_size, uint8_t **prefix, size_t *prefix_len,
                  uint8_t **meta, size_t *meta_len);
/* Releases everything without producing a body. */
void fpx_out_discard(fpx_out *o);

/* Pack helpers for NUL-terminated strings. */
void fpx_pack_cstr(msgpack_packer *pk, const char *s);
void fpx_pack_str(msgpack_packer *pk, const char *s, size_t n);

/*
 * Builds a complete error reply body: header {"status":"error","error_type":T,
 * "message":M[,"request_id":R]}. request_id may be NULL. Returns 0 or -1.
 */
int fpx_build_error(const fpx_err *e, const msgpack_object *request_id, uint8_t **buf, size_t *len);
/* fpx_build_error with one more header field, flag: false (flag NULL: none). */
int fpx_build_error_flagged(const fpx_err *e, const msgpack_object *request_id, const char *flag,
                            uint8_t **buf, size_t *len);
/* The same with the flag's value: true (value != 0) or false. */
int fpx_build_error_flag(const fpx_err *e, const msgpack_object *request_id, const char *flag,
                         int value, uint8_t **buf, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
