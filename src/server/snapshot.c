/*
 * snapshot.c - the snapshot body of one index, written and read back. See
 * snapshot.h; the layout is in docs/storage.md.
 *
 * The body is a protocol message (src/proto): a msgpack header (format,
 * version, seq, type, dimension, metric, counts), FAISS's serialization as
 * the data section, and the tables as the metadata section. Writing streams
 * the FAISS bytes through the caller's sink, so a large index is never held
 * twice in memory. Reading trusts nothing: every count is checked against the
 * others and against the FAISS index, a key or label held by two live slots
 * or a key on a dead slot fails the load, and the label table and key map are
 * built by the same functions add uses (index_impl.h).
 */
#include "snapshot.h"

#include <stdlib.h>
#include <string.h>

#include "index_impl.h"

#define SNAP_FORMAT "faiss-proxy-snapshot"
#define SNAP_VERSION 1

/* The member settings of ix's engine that differ from FAISS's defaults
 * (write_index leaves them out): their names in *names, values in v. */
static int changed_members(const fpx_index *ix, const char **names, int64_t *v) {
    int n = 0;
    int64_t cur, dflt;
    for (int i = 0; n < FPX_MEMBERS_MAX && fpx_engine_member_param(i, &dflt); i++) {
        const char *name = fpx_engine_member_param(i, &dflt);
        if (fpx_engine_get_member(ix->eng, name, &cur) == 0 && cur != dflt) {
            names[n] = name;
            v[n++] = cur;
        }
    }
    return n;
}

static void pack_blob_table(msgpack_packer *pk, fpx_blob *const *t, int64_t n) {
    if (!t) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_array(pk, (size_t)n);
    for (int64_t s = 0; s < n; s++) {
        if (t[s]) {
            msgpack_pack_bin(pk, t[s]->len);
            msgpack_pack_bin_body(pk, t[s]->data, t[s]->len);
        } else {
            msgpack_pack_nil(pk);
        }
    }
}

int fpx_index_write(const fpx_index *ix, fpx_write_fn fn, void *ctx, fpx_err *err) {
    size_t englen, written;
    if (fpx_engine_write(ix->eng, NULL, NULL, &englen, err)) /* the size, first */
        return -1;
    fpx_out o;
    fpx_out_init(&o);
    msgpack_packer *h = fpx_out_hdr(&o);
    size_t npending = 0;
    for (const fpx_merge_todo *t = ix->merge_todo; t; t = t->next)
        npending++;
    const char *mnames[FPX_MEMBERS_MAX];
    int64_t mvals[FPX_MEMBERS_MAX];
    int nmembers = changed_members(ix, mnames, mvals);
    msgpack_pack_map(h, 9 + (ix->lease_seconds > 0) + (npending > 0) + (nmembers > 0) +
                            (ix->fence_id[0] != 0));
    fpx_pack_cstr(h, "format");
    fpx_pack_cstr(h, SNAP_FORMAT);
    fpx_pack_cstr(h, "version");
    msgpack_pack_int(h, SNAP_VERSION);
    fpx_pack_cstr(h, "seq");
    msgpack_pack_uint64(h, ix->seq);
    fpx_pack_cstr(h, "index_type");
    fpx_pack_cstr(h, ix->index_type);
    fpx_pack_cstr(h, "dimension");
    msgpack_pack_int64(h, ix->dim);
    fpx_pack_cstr(h, "metric");
    msgpack_pack_int(h, (int)ix->metric);
    fpx_pack_cstr(h, "nslots");
    msgpack_pack_int64(h, ix->nslots);
    fpx_pack_cstr(h, "next_label");
    msgpack_pack_int64(h, ix->next_label);
    fpx_pack_cstr(h, "nlive");
    msgpack_pack_int64(h, ix->nlive);
    if (ix->lease_seconds > 0) {
        fpx_pack_cstr(h, "lease_seconds");
        msgpack_pack_int64(h, ix->lease_seconds);
    }
    if (npending > 0) { /* merges whose other index may still owe its reset (merge.c) */
        fpx_pack_cstr(h, "merges_pending");
        msgpack_pack_array(h, npending);
        for (const fpx_merge_todo *t = ix->merge_todo; t; t = t->next) {
            msgpack_pack_array(h, 2);
            msgpack_pack_bin(h, FPX_UID_BYTES);
            msgpack_pack_bin_body(h, t->uid, FPX_UID_BYTES);
            msgpack_pack_uint64(h, t->seq);
        }
    }
    if (ix->fence_id[0]) { /* a merge_from out of it in a cluster (apply.c) */
        fpx_pack_cstr(h, "merge_fence");
        msgpack_pack_array(h, 5);
        fpx_pack_cstr(h, ix->fence_id);
        fpx_pack_cstr(h, ix->fence_to);
        msgpack_pack_bin(h, FPX_UID_BYTES);
        msgpack_pack_bin_body(h, ix->fence_to_uid, FPX_UID_BYTES);
        msgpack_pack_int64(h, ix->fence_add_id);
        msgpack_pack_uint64(h, ix->fence_seq);
    }
    if (nmembers > 0) { /* absent when all are FAISS's defaults, as earlier versions wrote */
        fpx_pack_cstr(h, "settings");
        msgpack_pack_map(h, (size_t)nmembers);
        for (int i = 0; i < nmembers; i++) {
            fpx_pack_cstr(h, mnames[i]);
            msgpack_pack_int64(h, mvals[i]);
        }
    }
    msgpack_packer *m = fpx_out_meta(&o);
    msgpack_pack_map(m, 4);
    fpx_pack_cstr(m, "alive");
    size_t abytes = fpx_words_for(ix->nslots) * sizeof(uint64_t);
    msgpack_pack_bin(m, abytes);
    msgpack_pack_bin_body(m, ix->alive, abytes);
    fpx_pack_cstr(m, "labels");
    if (ix->labels) {
        msgpack_pack_bin(m, (size_t)ix->nslots * sizeof(int64_t));
        msgpack_pack_bin_body(m, ix->labels, (size_t)ix->nslots * sizeof(int64_t));
    } else {
        msgpack_pack_nil(m);
    }
    fpx_pack_cstr(m, "keys");
    pack_blob_table(m, ix->keys, ix->nslots);
    fpx_pack_cstr(m, "meta");
    pack_blob_table(m, ix->meta, ix->nslots);
    uint8_t *prefix, *meta;
    size_t plen, mlen;
    if (fpx_out_frame(&o, englen, &prefix, &plen, &meta, &mlen))
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory encoding the snapshot of '%s'",
                           ix->name);
    int rc = fn(ctx, prefix, plen);
    if (rc == 0)
        rc = fpx_engine_write(ix->eng, fn, ctx, &written, err);
    if (rc == 0 && written != englen)
        rc = fpx_err_set(err, FPX_E_INTERNAL, "the index of '%s' changed while being written",
                         ix->name);
    if (rc == 0 && mlen > 0)
        rc = fn(ctx, meta, mlen);
    free(prefix);
    free(meta);
    return rc;
}

static int get_i64(const msgpack_object *map, const char *k, int64_t *v) {
    const msgpack_object *o = fpx_map_get(map, k);
    return o ? fpx_obj_int(o, v) : -1;
}

static int load_blob_table(fpx_index *ix, const msgpack_object *t, fpx_blob ***dst, int is_key) {
    if (!t || t->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (t->type != MSGPACK_OBJECT_ARRAY || (int64_t)t->via.array.size != ix->nslots)
        return -1;
    fpx_blob **tab = calloc((size_t)(ix->cap ? ix->cap : 1), sizeof *tab);
    if (!tab)
        return -1;
    *dst = tab;
    for (int64_t s = 0; s < ix->nslots; s++) {
        const msgpack_object *e = &t->via.array.ptr[s];
        if (e->type == MSGPACK_OBJECT_NIL)
            continue;
        if (e->type != MSGPACK_OBJECT_BIN || !fpx_bit_get(ix->alive, s))
            return -1;
        if (!(tab[s] = fpx_blob_new(e->via.bin.ptr, e->via.bin.size)))
            return -1;
        if (is_key) {
            uint64_t h = fpx_key_hash(tab[s]);
            if (fpx_index_find_key(ix, tab[s], h) >= 0) /* a duplicate key: the file lies */
                return -1;
            fpx_index_put_key(ix, s, tab[s], h);
        }
    }
    return 0;
}

/* The snapshot's merge_fence (absent when none): [id, to, to_uid, add_id,
 * seq] (apply.c). */
static int load_fence(fpx_index *ix, const msgpack_object *a) {
    if (!a)
        return 0;
    const msgpack_object *e =
        a->type == MSGPACK_OBJECT_ARRAY && a->via.array.size == 5 ? a->via.array.ptr : NULL;
    int64_t add_id, seq;
    if (!e || e[0].type != MSGPACK_OBJECT_STR || e[0].via.str.size == 0 ||
        e[0].via.str.size > FPX_FENCE_ID_MAX || e[1].type != MSGPACK_OBJECT_STR ||
        e[1].via.str.size == 0 || e[1].via.str.size > FPX_NAME_MAX ||
        e[2].type != MSGPACK_OBJECT_BIN || e[2].via.bin.size != FPX_UID_BYTES ||
        fpx_obj_int(&e[3], &add_id) || fpx_obj_int(&e[4], &seq) || seq < 0)
        return -1;
    memcpy(ix->fence_id, e[0].via.str.ptr, e[0].via.str.size);
    ix->fence_id[e[0].via.str.size] = 0;
    memcpy(ix->fence_to, e[1].via.str.ptr, e[1].via.str.size);
    ix->fence_to[e[1].via.str.size] = 0;
    memcpy(ix->fence_to_uid, e[2].via.bin.ptr, FPX_UID_BYTES);
    ix->fence_add_id = add_id;
    ix->fence_seq = (uint64_t)seq;
    ix->fence_ms = fpx_now_ns() / 1000000;
    return 0;
}

/* The snapshot's merges_pending (absent when none): each [uid, seq]. */
static int load_pending(fpx_index *ix, const msgpack_object *a) {
    if (!a)
        return 0;
    if (a->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        const msgpack_object *e = &a->via.array.ptr[i];
        int64_t seq;
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2 ||
            e->via.array.ptr[0].type != MSGPACK_OBJECT_BIN ||
            e->via.array.ptr[0].via.bin.size != FPX_UID_BYTES ||
            fpx_obj_int(&e->via.array.ptr[1], &seq) || seq < 0)
            return -1;
        fpx_merge_todo *t = malloc(sizeof *t);
        if (!t)
            return -1;
        memcpy(t->uid, e->via.array.ptr[0].via.bin.ptr, FPX_UID_BYTES);
        t->seq = (uint64_t)seq;
        t->next = ix->merge_todo;
        ix->merge_todo = t;
    }
    return 0;
}

int fpx_index_decode(const char *tenant, const char *name, const uint8_t *buf, size_t len,
                     fpx_index **out, uint64_t *seq, fpx_err *err) {
    fpx_msg msg;
    if (fpx_msg_decode(&msg, buf, len, err))
        return -1;
    const msgpack_object *h = msg.header, *m = msg.meta;
    const msgpack_object *fmt = fpx_map_get(h, "format"), *type = fpx_map_get(h, "index_type");
    int64_t version, dim, metric, nslots, next_label, nlive, sq;
    const char *tstr;
    size_t tlen;
    fpx_index *ix = NULL;
    fpx_engine *eng = NULL;
    if (!fmt || !fpx_obj_str_eq(fmt, SNAP_FORMAT) || get_i64(h, "version", &version) ||
        version != SNAP_VERSION || get_i64(h, "seq", &sq) || !type ||
        fpx_obj_str(type, &tstr, &tlen) || get_i64(h, "dimension", &dim) ||
        get_i64(h, "metric", &metric) || get_i64(h, "nslots", &nslots) ||
        get_i64(h, "next_label", &next_label) || get_i64(h, "nlive", &nlive) || !m ||
        m->type != MSGPACK_OBJECT_MAP || nslots < 0 || nlive < 0 || nlive > nslots ||
        metric < FPX_METRIC_L2 || metric > FPX_METRIC_JENSENSHANNON) {
        fpx_err_set(err, FPX_E_INTERNAL, "snapshot header is not valid");
        goto fail;
    }
    if (fpx_engine_deserialize(msg.body.data, msg.body.data_size, &eng, err))
        goto fail;
    if (fpx_engine_ntotal(eng) != nslots || fpx_engine_dim(eng) != dim) {
        fpx_err_set(err, FPX_E_INTERNAL, "snapshot tables do not match its FAISS index");
        goto fail;
    }
    if (fpx_engine_metric(eng) != (fpx_metric)metric) {
        fpx_err_set(err, FPX_E_INTERNAL, "snapshot metric does not match its FAISS index");
        goto fail;
    }
    ix = fpx_index_alloc(tenant, name, tstr, tlen, eng);
    eng = NULL;
    if (!ix)
        goto oom;
    fpx_index_factory_train_params(ix);
    if (fpx_index_reserve(ix, nslots, 0, 0))
        goto oom;
    ix->nslots = nslots;
    ix->next_label = next_label;
    int64_t lease; /* absent in snapshots of indexes without a lease */
    if (get_i64(h, "lease_seconds", &lease) == 0 && lease > 0)
        ix->lease_seconds = lease;
    if (load_pending(ix, fpx_map_get(h, "merges_pending")) != 0 ||
        load_fence(ix, fpx_map_get(h, "merge_fence")) != 0)
        goto bad;
    const msgpack_object *settings = fpx_map_get(h, "settings");
    if (settings) {
        if (settings->type != MSGPACK_OBJECT_MAP)
            goto bad;
        for (uint32_t i = 0; i < settings->via.map.size; i++) {
            const msgpack_object_kv *kv = &settings->via.map.ptr[i];
            char sname[32];
            int64_t sv;
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size >= sizeof sname ||
                fpx_obj_int(&kv->val, &sv))
                goto bad;
            memcpy(sname, kv->key.via.str.ptr, kv->key.via.str.size);
            sname[kv->key.via.str.size] = 0;
            if (fpx_engine_set_member(ix->eng, sname, sv, err))
                goto bad;
        }
    }
    const msgpack_object *alive = fpx_map_get(m, "alive"), *labels = fpx_map_get(m, "labels");
    size_t abytes = fpx_words_for(nslots) * sizeof(uint64_t);
    if (!alive || alive->type != MSGPACK_OBJECT_BIN || alive->via.bin.size != abytes)
        goto bad;
    memcpy(ix->alive, alive->via.bin.ptr, abytes);
    int64_t live = 0;
    for (int64_t s = 0; s < nslots; s++)
        live += fpx_bit_get(ix->alive, s);
    if (live != nlive)
        goto bad;
    ix->nlive = nlive;
    if (labels && labels->type == MSGPACK_OBJECT_BIN) {
        if (labels->via.bin.size != (size_t)nslots * sizeof(int64_t))
            goto bad;
        int rc = fpx_index_label_table(ix, labels->via.bin.ptr, 0);
        if (rc < 0)
            goto oom;
        if (rc > 0) /* two live slots with one label */
            goto bad;
    } else if (labels && labels->type != MSGPACK_OBJECT_NIL) {
        goto bad;
    }
    const msgpack_object *keys = fpx_map_get(m, "keys");
    if (keys && keys->type == MSGPACK_OBJECT_ARRAY &&
        fpx_slotmap_reserve(&ix->keymap, keys->via.array.size))
        goto oom;
    if (load_blob_table(ix, keys, &ix->keys, 1) ||
        load_blob_table(ix, fpx_map_get(m, "meta"), &ix->meta, 0))
        goto bad;
    /* Everything the tables must agree on (next_label above every live
     * label, one slot per key and label, ...), as after every mutation. */
    if (fpx_index_check(ix, err) != 0)
        goto fail;
    fpx_msg_destroy(&msg);
    *seq = (uint64_t)sq;
    ix->seq = ix->snap_seq = (uint64_t)sq;
    *out = ix;
    return 0;
bad:
    fpx_err_set(err, FPX_E_INTERNAL, "snapshot tables are not valid");
    goto fail;
oom:
    fpx_err_set(err, FPX_E_INTERNAL, "out of memory loading a snapshot");
fail:
    fpx_engine_free(eng);
    fpx_index_free(ix);
    fpx_msg_destroy(&msg);
    return -1;
}
