/*
 * filter.c - metadata filters: the check of a search filter and the
 * selection of the slots whose metadata matches it. See filter.h.
 *
 * Stored metadata is canonical msgpack (index.c re-packs it with msgpack-c,
 * so every integer and string has its shortest encoding), and so is each
 * filter value once packed here. A field then equals a value exactly when
 * their encoded bytes do: matching walks each slot's stored bytes and
 * compares, without decoding any stored metadata into objects.
 */
#include "filter.h"

#include <stdlib.h>
#include <string.h>

#include "index_impl.h"

typedef struct filter_field {
    const char *name;
    size_t name_len;
    fpx_blob *value; /* canonical encoding */
} filter_field;

int fpx_index_check_filter(const msgpack_object *filter, fpx_err *err) {
    if (!filter || filter->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (filter->type != MSGPACK_OBJECT_MAP)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "the search filter (metadata section) must be a map of field: value");
    if (!fpx_obj_utf8_valid(filter))
        return fpx_err_set(err, FPX_E_VALIDATION, "filter strings must be valid UTF-8");
    for (uint32_t i = 0; i < filter->via.map.size; i++)
        if (filter->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR)
            return fpx_err_set(err, FPX_E_VALIDATION, "filter field names must be strings");
    return 0;
}

/* Reads a msgpack string at p; 1 and its bytes, or 0 when p holds no string. */
static int mp_str(const uint8_t *p, const uint8_t *end, const uint8_t **s, size_t *n) {
    if (p >= end)
        return 0;
    size_t hdr, len;
    if ((p[0] & 0xe0) == 0xa0) {
        hdr = 1;
        len = p[0] & 0x1f;
    } else if (p[0] == 0xd9 && end - p >= 2) {
        hdr = 2;
        len = p[1];
    } else if (p[0] == 0xda && end - p >= 3) {
        hdr = 3;
        len = (size_t)p[1] << 8 | p[2];
    } else if (p[0] == 0xdb && end - p >= 5) {
        hdr = 5;
        len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
    } else {
        return 0;
    }
    if ((size_t)(end - p) - hdr < len)
        return 0;
    *s = p + hdr;
    *n = len;
    return 1;
}

/* 1 when the stored metadata map has every filter field equal to its value. */
static int meta_matches(const fpx_blob *m, const filter_field *f, size_t nf) {
    if (!m)
        return 0;
    const uint8_t *p = m->data, *end = m->data + m->len;
    size_t count;
    if ((p[0] & 0xf0) == 0x80) {
        count = p[0] & 0x0f;
        p += 1;
    } else if (p[0] == 0xde && m->len >= 3) {
        count = (size_t)p[1] << 8 | p[2];
        p += 3;
    } else if (p[0] == 0xdf && m->len >= 5) {
        count = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
        p += 5;
    } else {
        return 0;
    }
    size_t found = 0;
    for (size_t e = 0; e < count && p < end; e++) {
        const uint8_t *ks;
        size_t kn, used;
        int is_str = mp_str(p, end, &ks, &kn);
        if (fpx_msgpack_check(p, (size_t)(end - p), &used, NULL))
            return 0;
        p += used;
        if (fpx_msgpack_check(p, (size_t)(end - p), &used, NULL))
            return 0;
        if (is_str) {
            for (size_t j = 0; j < nf; j++) {
                if (f[j].name_len == kn && !memcmp(f[j].name, ks, kn)) {
                    if (f[j].value->len != used || memcmp(f[j].value->data, p, used))
                        return 0;
                    found++;
                }
            }
        }
        p += used;
    }
    return found == nf;
}

int fpx_filter_select(const fpx_index *ix, const msgpack_object *filter, uint64_t **words,
                      int64_t *count) {
    size_t nf = filter->via.map.size;
    filter_field *f = calloc(nf, sizeof *f);
    uint64_t *w = calloc(fpx_words_for(ix->nslots) + 1, sizeof *w);
    int rc = (f && w) ? 0 : -1;
    for (size_t j = 0; rc == 0 && j < nf; j++) {
        const msgpack_object_kv *kv = &filter->via.map.ptr[j];
        f[j].name = kv->key.via.str.ptr;
        f[j].name_len = kv->key.via.str.size;
        if (!(f[j].value = fpx_blob_pack(&kv->val)))
            rc = -1;
    }
    int64_t c = 0;
    for (int64_t s = 0; rc == 0 && ix->meta && s < ix->nslots; s++) {
        if (fpx_bit_get(ix->alive, s) && meta_matches(ix->meta[s], f, nf)) {
            fpx_bit_set(w, s);
            c++;
        }
    }
    for (size_t j = 0; f && j < nf; j++)
        free(f[j].value);
    free(f);
    if (rc) {
        free(w);
        return -1;
    }
    *words = w;
    *count = c;
    return 0;
}
