/*
 * fuzz_proto.c - libFuzzer target for the request decoder (make fuzz).
 *
 * Every input is a request body as the server receives it. Decoding must
 * either succeed with a header map or fail with a protocol error, without
 * reading out of bounds, leaking, or allocating for counts the bytes cannot
 * hold; a successful decode is walked end to end, as the handlers would.
 */
#include "proto/proto.h"

#include <stdlib.h>
#include <string.h>

static size_t walk(const msgpack_object *o) {
    size_t n = 1;
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        n += (size_t)fpx_utf8_valid(o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            n += walk(&o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++)
            n += walk(&o->via.map.ptr[i].key) + walk(&o->via.map.ptr[i].val);
        break;
    default:
        break;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy, so reads past the end hit ASan's redzone. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    fpx_msg m;
    fpx_err err = {0};
    if (fpx_msg_decode(&m, buf, size, &err) == 0) {
        if (m.header->type != MSGPACK_OBJECT_MAP)
            abort();
        walk(m.header);
        if (m.meta) {
            walk(m.meta);
            (void)fpx_obj_equal(m.meta, m.meta);
        }
        if (m.body.data_size && (m.body.data < buf || m.body.data + m.body.data_size > buf + size))
            abort();
        const msgpack_object *rid = fpx_map_get(m.header, "request_id");
        fpx_err_set(&err, FPX_E_VALIDATION, "fuzz");
        uint8_t *reply = NULL;
        size_t len = 0;
        if (fpx_build_error(&err, rid, &reply, &len) == 0)
            free(reply);
        fpx_msg_destroy(&m);
    } else if (err.type != FPX_E_PROTOCOL && err.type != FPX_E_INTERNAL) {
        abort();
    }
    free(buf);
    return 0;
}
