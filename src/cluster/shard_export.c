/*
 * shard_export.c - export_index of a sharded index: FAISS's bytes of the
 * whole index, as one server holding every vector would export them
 * (docs/cluster.md, "Sharding").
 *
 * Each shard exports its live vectors with their labels; the shards of a
 * trained type share one training (the trained empty index is in every
 * shard's log). This node reads the S exports back, appends them into one
 * index (FAISS's merge_from, with its checks; binary flat codes, which
 * FAISS 1.7.3 cannot merge, are appended as they are; an HNSW, which it
 * cannot merge either, is built again from its codes, once, in label
 * order), puts the vectors in
 * label order, and exports that: the labels of adds without ids are FAISS's
 * numbering, so label order is the order one server holds them in. A type
 * FAISS cannot merge fails whole with the reason. The part "quantizer"
 * is shard 0's: every shard has the same.
 */
#include "internal.h"
#include "shard_impl.h"

#include "engine/engine.h"
#include "server/index.h"
#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct labeled {
    int64_t label, pos;
} labeled;

static int by_label(const void *a, const void *b) {
    const labeled *x = a, *y = b;
    return (x->label > y->label) - (x->label < y->label);
}

/* The shards' exports x[0..n) read into parts[0..n), their labels into
 * (*labels)[0..*count) (part i's after those of the parts before it). */
static int import_shards(const sreply *x, int64_t n, fpx_engine **parts, int64_t **labels,
                         int64_t *count, fpx_err *err) {
    for (int64_t i = 0; i < n; i++) {
        int64_t *lab = NULL;
        int had = 0;
        if (fpx_engine_import(x[i].m.body.data, x[i].m.body.data_size, &parts[i], &lab, &had, err))
            return -1;
        int64_t m = fpx_engine_ntotal(parts[i]);
        int64_t *grown = realloc(*labels, sizeof(int64_t) * (size_t)(*count + m + 1));
        if (!grown) {
            free(lab);
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory joining the shards");
        }
        *labels = grown;
        for (int64_t j = 0; j < m; j++)
            grown[*count + j] = lab ? lab[j] : j;
        free(lab);
        *count += m;
    }
    return 0;
}

/* The bytes of the whole index d from its shards' exports x[0..S). */
static int join_exports(const fpx_def *d, const sreply *x, uint8_t **buf, size_t *len,
                        fpx_err *err) {
    fpx_engine *parts[FPX_SHARDS_MAX] = {0};
    int64_t *labels = NULL, count = 0, *order = NULL;
    labeled *byl = NULL;
    uint64_t *words = NULL;
    int rc = import_shards(x, d->shards, parts, &labels, &count, err);
    size_t n = (size_t)count;
    if (rc == 0) {
        order = malloc(sizeof *order * (n + 1));
        byl = malloc(sizeof *byl * (n + 1));
        words = malloc(sizeof *words * (n / 64 + 1));
        if (!order || !byl || !words)
            rc = fpx_err_set(err, FPX_E_INTERNAL, "out of memory joining the shards");
    }
    if (rc == 0) {
        for (size_t p = 0; p < n; p++)
            byl[p] = (labeled){labels[p], (int64_t)p};
        qsort(byl, n, sizeof *byl, by_label);
        for (size_t p = 0; rc == 0 && p < n; p++) {
            if (p > 0 && byl[p].label == byl[p - 1].label)
                rc = fpx_err_set(err, FPX_E_INTERNAL, "label %lld is held by two shards",
                                 (long long)byl[p].label);
            order[p] = byl[p].pos;
            labels[p] = byl[p].label;
        }
    }
    if (rc == 0) /* shard i's positions after those of shards before it, in label order */
        rc = fpx_engine_join(parts, d->shards, order, count, err);
    if (rc != 0 && err->type != FPX_E_INTERNAL) {
        fpx_err why = *err;
        rc = fpx_err_set(err, FPX_E_UNSUPPORTED,
                         "export_index of index '%s' (type '%s', %lld shards) is not served: "
                         "its shards are joined into one index with FAISS's merge_from, in "
                         "label order, and that failed: %s",
                         d->name, d->index_type, (long long)d->shards, why.msg);
    }
    if (rc == 0) {
        memset(words, 0xff, sizeof *words * (n / 64 + 1));
        fpx_bitset live = {words, count, count};
        rc = fpx_engine_export(parts[0], &live, labels, fpx_index_type_has_idmap(d->index_type),
                               buf, len, err);
    }
    for (int64_t i = 0; i < d->shards; i++)
        fpx_engine_free(parts[i]);
    free(labels);
    free(order);
    free(byl);
    free(words);
    return rc;
}

int fpx_shard_export(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    char part[16];
    int prc = fpx_req_str(r, "part", part, sizeof part);
    if (prc < 0)
        return -1;
    int64_t n = prc == 0 ? 1 : d->shards;
    sreply x[FPX_SHARDS_MAX] = {0};
    scall *k = calloc((size_t)n, sizeof *k);
    if (!k)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        k[i] = (scall){.c = c, .r = r, .d = d, .shard = i, .x = &x[i]};
        fpx_shard_sub_begin(&k[i].o, r, d, i, "export_index", NULL, 0);
    }
    int rc = fpx_shard_calls(k, n, r);
    free(k);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 0 && n > 1) {
        rc = join_exports(d, x, &buf, &len, &r->err);
    } else if (rc == 0) {
        len = x[0].m.body.data_size;
        if (!(buf = malloc(len + 1)))
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
        else if (len)
            memcpy(buf, x[0].m.body.data, len);
    }
    fpx_sreplies_free(x, n);
    if (rc == 0 && len > r->s->cfg->max_message_size)
        rc = fpx_err_set(&r->err, FPX_E_LIMIT,
                         "the exported index (%zu bytes) exceeds the message size limit", len);
    msgpack_sbuffer info;
    msgpack_sbuffer_init(&info);
    if (rc == 0)
        rc = fpx_shard_info(c, r, d, &info);
    if (rc == 0) {
        fpx_out o;
        fpx_out_init(&o);
        msgpack_packer *h = fpx_reply_ok(r, &o, 1);
        fpx_pack_cstr(h, "format");
        fpx_pack_cstr(h, "faiss");
        uint8_t *data = fpx_out_data(&o, len);
        if (!data) {
            fpx_out_discard(&o);
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
        } else {
            memcpy(data, buf, len);
            /* the whole index's info map, packed as it is */
            msgpack_packer *m = fpx_out_meta(&o);
            m->callback(m->data, info.data, info.size);
            rc = fpx_shard_reply(r, &o);
        }
    }
    msgpack_sbuffer_destroy(&info);
    free(buf);
    return rc;
}
