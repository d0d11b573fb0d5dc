/*
 * mpcheck.c - a bounds pre-check of one msgpack object, run before msgpack-c.
 *
 * msgpack-c allocates room for an array or map as soon as it reads its count,
 * so a 5-byte header claiming 4 billion elements would make it try to
 * allocate tens of gigabytes. This walker reads the encoding without
 * allocating, iteratively (no recursion, so no stack to exhaust), and refuses
 * any count larger than the bytes left, any length past the end, nesting
 * deeper than FPX_MSGPACK_MAX_DEPTH, and the reserved byte 0xc1.
 */
#include "proto.h"

#include <stdio.h>

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static int fail(fpx_err *err, const char *what, size_t off) {
    if (err)
        fpx_err_set(err, FPX_E_PROTOCOL, "invalid msgpack: %s at byte %zu", what, off);
    return -1;
}

int fpx_msgpack_check(const uint8_t *buf, size_t len, size_t *used, fpx_err *err) {
    /* pending[d]: how many more objects the container at depth d expects. */
    uint64_t pending[FPX_MSGPACK_MAX_DEPTH + 1];
    int depth = 0;
    pending[0] = 1;
    size_t off = 0;
    while (depth >= 0) {
        if (pending[depth] == 0) {
            depth--;
            continue;
        }
        pending[depth]--;
        if (off >= len)
            return fail(err, "truncated object", off);
        uint8_t b = buf[off];
        size_t left = len - off - 1;
        uint64_t skip = 0; /* payload bytes after the type byte and its length */
        uint64_t lenbytes = 0;
        uint64_t children = 0;
        int container = 0;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool */
        } else if ((b & 0xe0) == 0xa0) {
            skip = b & 0x1f;
        } else if ((b & 0xf0) == 0x90) {
            children = b & 0x0f;
            container = 1;
        } else if ((b & 0xf0) == 0x80) {
            children = (uint64_t)(b & 0x0f) * 2;
            container = 1;
        } else {
            switch (b) {
            case 0xc4:
            case 0xd9:
                lenbytes = 1;
                break; /* bin8, str8 */
            case 0xc5:
            case 0xda:
                lenbytes = 2;
                break; /* bin16, str16 */
            case 0xc6:
            case 0xdb:
                lenbytes = 4;
                break; /* bin32, str32 */
            case 0xc7:
                lenbytes = 1;
                skip = 1;
                break; /* ext8 + type */
            case 0xc8:
                lenbytes = 2;
                skip = 1;
                break; /* ext16 */
            case 0xc9:
                lenbytes = 4;
                skip = 1;
                break; /* ext32 */
            case 0xca:
            case 0xce:
            case 0xd2:
                skip = 4;
                break; /* 32-bit numbers */
            case 0xcb:
            case 0xcf:
            case 0xd3:
                skip = 8;
                break; /* 64-bit numbers */
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xd4:
                skip = 2;
                break; /* fixext1 */
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xdc:
            case 0xde:
                lenbytes = 2;
                container = 1;
                break; /* array16, map16 */
            case 0xdd:
            case 0xdf:
                lenbytes = 4;
                container = 1;
                break; /* array32, map32 */
            default:
                return fail(err, "reserved type byte 0xc1", off);
            }
        }
        if (lenbytes) {
            if (left < lenbytes)
                return fail(err, "truncated length", off);
            uint64_t n = be(buf + off + 1, (int)lenbytes);
            left -= lenbytes;
            if (container)
                children = (b == 0xde || b == 0xdf) ? n * 2 : n;
            else
                skip += n;
        }
        if (skip > left)
            return fail(err, "length past the end of the data", off);
        off += 1 + lenbytes + skip;
        if (container && children > 0) {
            /* Each element takes at least one byte. */
            if (children > len - off)
                return fail(err, "element count larger than the data", off);
            if (depth + 1 > FPX_MSGPACK_MAX_DEPTH)
                return fail(err, "nesting too deep", off);
            pending[++depth] = children;
        }
    }
    *used = off;
    return 0;
}
