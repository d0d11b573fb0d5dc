/*
 * keys.c - an index's caller keys and metadata as a list: list_keys pages
 * through them in slot order, and import_index can give them back to the
 * index it makes. Together they let a tenant's backup hold every key and
 * metadata map of an index of any size, and a restore bring them back
 * without adding a vector again (no tombstones, an HNSW graph as it was).
 *
 * A page ends after `limit` entries or once its bytes pass a budget, so that
 * keys of up to 1 KB and large metadata maps never make a reply over the
 * message size limit. The cursor is the next slot, tagged with the number of
 * compactions the index had: a compaction renumbers slots, and a cursor from
 * before it would skip or repeat entries, so it is refused instead.
 */
#include "index_impl.h"

#include <stdlib.h>
#include <string.h>

#define SLOT_BITS 40
#define SLOT_MASK (((uint64_t)1 << SLOT_BITS) - 1)
#define GEN_MASK (((uint64_t)1 << 23) - 1) /* cursors stay below 2^63 */

static int has_entry(const fpx_index *ix, int64_t s) {
    return fpx_bit_get(ix->alive, s) && ((ix->keys && ix->keys[s]) || (ix->meta && ix->meta[s]));
}

/* The msgpack bytes an entry takes, a little over (its map and label). */
static size_t entry_bytes(const fpx_index *ix, int64_t s) {
    size_t n = 48;
    if (ix->keys && ix->keys[s])
        n += ix->keys[s]->len;
    if (ix->meta && ix->meta[s])
        n += ix->meta[s]->len;
    return n;
}

static void pack_raw(msgpack_packer *pk, const fpx_blob *b) {
    pk->callback(pk->data, (const char *)b->data, b->len);
}

int fpx_index_list_keys(const fpx_index *ix, uint64_t cursor, int64_t limit, size_t max_bytes,
                        msgpack_packer *pk, fpx_err *err) {
    uint64_t gen = (uint64_t)ix->compactions & GEN_MASK;
    int64_t from = 0;
    if (cursor != 0) {
        if (cursor >> SLOT_BITS != gen)
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "cursor %llu is stale: index '%s' was compacted since it was "
                               "given; list its keys again from the start",
                               (unsigned long long)cursor, ix->name);
        from = (int64_t)(cursor & SLOT_MASK);
        if (from > ix->nslots)
            return fpx_err_set(err, FPX_E_VALIDATION, "cursor %llu is not one list_keys gave",
                               (unsigned long long)cursor);
    }
    /* The page: [from, to) holds count entries; the first always fits. */
    int64_t to = from, count = 0;
    size_t bytes = 0;
    for (; to < ix->nslots && count < limit; to++) {
        if (!has_entry(ix, to))
            continue;
        size_t b = entry_bytes(ix, to);
        if (count > 0 && bytes + b > max_bytes)
            break;
        bytes += b;
        count++;
    }
    while (to < ix->nslots && !has_entry(ix, to)) /* no cursor to an empty rest */
        to++;
    msgpack_pack_map(pk, 2);
    fpx_pack_cstr(pk, "items");
    msgpack_pack_array(pk, (uint32_t)count);
    for (int64_t s = from; s < to; s++) {
        if (!has_entry(ix, s))
            continue;
        const fpx_blob *k = ix->keys ? ix->keys[s] : NULL, *m = ix->meta ? ix->meta[s] : NULL;
        msgpack_pack_map(pk, 1 + (k != NULL) + (m != NULL));
        fpx_pack_cstr(pk, "label");
        msgpack_pack_int64(pk, fpx_index_label_of(ix, s));
        if (k) {
            fpx_pack_cstr(pk, "id");
            pack_raw(pk, k);
        }
        if (m) {
            fpx_pack_cstr(pk, "metadata");
            pack_raw(pk, m);
        }
    }
    fpx_pack_cstr(pk, "next");
    if (to < ix->nslots)
        msgpack_pack_uint64(pk, gen << SLOT_BITS | (uint64_t)to);
    else
        msgpack_pack_nil(pk);
    return 0;
}

int fpx_index_attach_keys(fpx_index *ix, const msgpack_object *items, fpx_err *err) {
    if (items->type != MSGPACK_OBJECT_ARRAY)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "items must be a list of {\"label\", \"id\", \"metadata\"} maps");
    if (!fpx_obj_utf8_valid(items))
        return fpx_err_set(err, FPX_E_VALIDATION, "items: strings must be valid UTF-8");
    const msgpack_object_array *a = &items->via.array;
    int any_key = 0, any_meta = 0;
    for (uint32_t i = 0; i < a->size; i++) {
        const msgpack_object *it = &a->ptr[i], *o;
        int64_t label;
        if (fpx_index_check_item(it, "items", i, err))
            return -1;
        if (it->type != MSGPACK_OBJECT_MAP || !(o = fpx_map_get(it, "label")) ||
            fpx_obj_int(o, &label))
            return fpx_err_set(err, FPX_E_VALIDATION, "items[%u] needs an integer label", i);
        if (fpx_index_slot_of(ix, label) < 0)
            return fpx_err_set(err, FPX_E_VALIDATION, "items[%u]: label %lld is not in the index",
                               i, (long long)label);
        o = fpx_map_get(it, "id");
        any_key |= o && o->type != MSGPACK_OBJECT_NIL;
        o = fpx_map_get(it, "metadata");
        any_meta |= o && o->type == MSGPACK_OBJECT_MAP;
    }
    if (fpx_index_reserve(ix, ix->nslots, any_key, any_meta) ||
        (any_key && fpx_slotmap_reserve(&ix->keymap, a->size)))
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory for the keys of '%s'", ix->name);
    for (uint32_t i = 0; i < a->size; i++) {
        const msgpack_object *it = &a->ptr[i];
        int64_t label;
        fpx_obj_int(fpx_map_get(it, "label"), &label);
        int64_t s = fpx_index_slot_of(ix, label);
        if ((ix->keys && ix->keys[s]) || (ix->meta && ix->meta[s]))
            return fpx_err_set(err, FPX_E_VALIDATION, "items[%u]: label %lld is listed twice", i,
                               (long long)label);
        const msgpack_object *id = fpx_map_get(it, "id"), *md = fpx_map_get(it, "metadata");
        if (id && id->type != MSGPACK_OBJECT_NIL) {
            fpx_blob *k = fpx_blob_pack(id);
            if (!k)
                return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
            uint64_t h = fpx_key_hash(k);
            if (fpx_index_find_key(ix, k, h) >= 0) {
                free(k);
                return fpx_err_set(err, FPX_E_VALIDATION, "items[%u]: its id is listed twice", i);
            }
            fpx_index_put_key(ix, s, k, h);
        }
        if (md && md->type == MSGPACK_OBJECT_MAP && !(ix->meta[s] = fpx_blob_pack(md)))
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    }
    return 0;
}
