/*
 * shard_import.c - import_index with shards > 1: the imported index, read
 * and checked on the receiving node as one server reads it, cut into the
 * content of each shard (docs/cluster.md, "Importing").
 *
 * A vector goes where an add would have sent it: to shard FNV(key) mod S
 * when the import's items give it a caller key, else to shard label mod S.
 * Shard i's content is the index's vectors of shard i, in their order, with
 * the same codes and training (FAISS remove_ids on a copy, an HNSW built
 * again from its codes: fpx_engine_compact), exported with their labels,
 * and the items of those labels. A type whose vectors cannot be left out
 * (IndexRefine, NSG, ...) cannot be cut and is refused. Each part then
 * becomes its shard's import (import.c).
 */
#include "internal.h"

#include "engine/engine.h"
#include "server/index.h"
#include "server/util.h"

#include <stdlib.h>
#include <string.h>

typedef struct keyed {
    int64_t label, shard;
} keyed;

static int by_label(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    return (x->label > y->label) - (x->label < y->label);
}

static int64_t item_label(const msgpack_object *it) {
    int64_t label = -1;
    const msgpack_object *o = it->type == MSGPACK_OBJECT_MAP ? fpx_map_get(it, "label") : NULL;
    if (o)
        fpx_obj_int(o, &label);
    return label;
}

/* The shard of label: a keyed one's from keys[0..nk) (sorted by label),
 * else label mod shards. */
static int64_t shard_of(const keyed *keys, size_t nk, int64_t label, int64_t shards) {
    keyed want = {label, 0};
    const keyed *k = nk ? bsearch(&want, keys, nk, sizeof *keys, by_label) : NULL;
    return k ? k->shard : label % shards;
}

void fpx_shard_import_free(fpx_shard_parts *p) {
    for (int64_t i = 0; i < p->n; i++) {
        free(p->bytes[i]);
        msgpack_sbuffer_destroy(&p->meta[i]);
    }
    p->n = 0;
}

/* Shard s's part: the live slots of ix routed to s (bit set in words). */
static int cut_part(const fpx_index *ix, const uint64_t *words, int64_t count, int64_t s,
                    const int64_t *slot_shard, const msgpack_object *items, const keyed *keys,
                    size_t nk, int64_t shards, fpx_shard_parts *out, fpx_err *err) {
    int64_t nslots = fpx_engine_ntotal(ix->eng);
    fpx_bitset bits = {words, nslots, count};
    fpx_engine *sub = NULL;
    int rc = fpx_engine_compact(ix->eng, &bits, 1, &sub, err);
    if (rc == 1)
        return fpx_err_set(err, FPX_E_UNSUPPORTED,
                           "an index of type '%s' cannot be cut into shards: FAISS cannot leave "
                           "out some of its vectors (import it with shards 1)",
                           ix->index_type);
    if (rc != 0)
        return -1;
    int64_t *labels = malloc(sizeof(int64_t) * (size_t)(count + 1));
    uint64_t *all = malloc(sizeof(uint64_t) * (size_t)(count / 64 + 1));
    if (!labels || !all)
        rc = fpx_err_set(err, FPX_E_INTERNAL, "out of memory cutting the import into shards");
    int64_t m = 0;
    for (int64_t p = 0; rc == 0 && p < nslots; p++)
        if (slot_shard[p] == s)
            labels[m++] = ix->labels ? ix->labels[p] : p;
    size_t len = 0;
    if (rc == 0) {
        memset(all, 0xff, sizeof(uint64_t) * (size_t)(count / 64 + 1));
        fpx_bitset live = {all, count, count};
        rc = fpx_engine_export(sub, &live, labels, fpx_index_type_has_idmap(ix->index_type),
                               &out->bytes[s], &len, err);
    }
    fpx_engine_free(sub);
    free(labels);
    free(all);
    if (rc != 0)
        return -1;
    /* the items of the part's labels, as import_index's metadata section */
    msgpack_sbuffer *sb = &out->meta[s];
    if (items && items->type == MSGPACK_OBJECT_ARRAY) {
        const msgpack_object_array *a = &items->via.array;
        uint32_t mine = 0;
        for (uint32_t i = 0; i < a->size; i++)
            mine += shard_of(keys, nk, item_label(&a->ptr[i]), shards) == s;
        msgpack_packer pk;
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        fpx_pack_cstr(&pk, "items");
        msgpack_pack_array(&pk, mine);
        for (uint32_t i = 0; i < a->size; i++)
            if (shard_of(keys, nk, item_label(&a->ptr[i]), shards) == s)
                msgpack_pack_object(&pk, a->ptr[i]);
    }
    out->part[s] =
        (fpx_import_src){out->bytes[s], sb->size ? (const uint8_t *)sb->data : NULL, len, sb->size};
    return 0;
}

int fpx_shard_import_split(const fpx_req *r, int64_t shards, fpx_shard_parts *out, fpx_err *err) {
    const fpx_index *ix = r->made;
    const msgpack_object *items = r->msg.meta ? fpx_map_get(r->msg.meta, "items") : NULL;
    memset(out, 0, sizeof *out);
    for (int64_t i = 0; i < shards; i++)
        msgpack_sbuffer_init(&out->meta[i]);
    out->n = shards;
    out->next = ix->next_label;
    /* the labels with a caller key, and the shard their key routes them to */
    size_t nk = 0;
    uint32_t nitems = items && items->type == MSGPACK_OBJECT_ARRAY ? items->via.array.size : 0;
    keyed *keys = malloc(sizeof *keys * (nitems + 1));
    int64_t nslots = fpx_engine_ntotal(ix->eng);
    int64_t *slot_shard = malloc(sizeof(int64_t) * (size_t)(nslots + 1));
    size_t nwords = (size_t)nslots / 64 + 1;
    uint64_t *words = malloc(sizeof(uint64_t) * nwords);
    int rc = 0;
    if (!keys || !slot_shard || !words)
        rc = fpx_err_set(err, FPX_E_INTERNAL, "out of memory cutting the import into shards");
    for (uint32_t i = 0; rc == 0 && i < nitems; i++) {
        const msgpack_object *it = &items->via.array.ptr[i];
        const msgpack_object *id = it->type == MSGPACK_OBJECT_MAP ? fpx_map_get(it, "id") : NULL;
        if (id && id->type != MSGPACK_OBJECT_NIL)
            keys[nk++] = (keyed){item_label(it), fpx_shard_of_key(id, shards)};
    }
    if (rc == 0 && nk)
        qsort(keys, nk, sizeof *keys, by_label);
    fpx_bitset live = fpx_index_live(ix);
    for (int64_t p = 0; rc == 0 && p < nslots; p++) {
        int on = p < live.nbits && ((live.words[p >> 6] >> (p & 63)) & 1);
        slot_shard[p] = on ? shard_of(keys, nk, ix->labels ? ix->labels[p] : p, shards) : -1;
    }
    for (int64_t s = 0; rc == 0 && s < shards; s++) {
        memset(words, 0, sizeof(uint64_t) * nwords);
        int64_t count = 0;
        for (int64_t p = 0; p < nslots; p++)
            if (slot_shard[p] == s) {
                words[p >> 6] |= 1ull << (p & 63);
                count++;
            }
        rc = cut_part(ix, words, count, s, slot_shard, items, keys, nk, shards, out, err);
    }
    free(keys);
    free(slot_shard);
    free(words);
    if (rc != 0)
        fpx_shard_import_free(out);
    return rc;
}
