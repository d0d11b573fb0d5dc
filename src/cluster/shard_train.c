/*
 * shard_train.c - train of a sharded index (docs/cluster.md, "Sharding"):
 * one training, here, of shard 0's untrained index as set_params left it,
 * whose trained (empty) index every shard's stream then carries.
 */
#include "internal.h"
#include "shard_impl.h"

#include "engine/engine.h"
#include "server/index.h"
#include "server/util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Shard 0's export (FAISS's bytes of its empty untrained index, its info map
 * as metadata) into *x, from a replica that has applied every record of the
 * shard's stream: a setting given through another node a moment ago is then
 * in it. This node's own replica is caught up first; a replica elsewhere is
 * asked again (about a second at most), then unavailable. */
static int shard0_export(fpx_cluster *c, fpx_req *r, const fpx_def *d, sreply *x) {
    char name[FPX_NAME_MAX + 1];
    fpx_def sd;
    fpx_shard_name(d->uid, 0, name);
    int found = fpx_cluster_def(c, d->tenant, name, &sd, &r->err);
    if (found <= 0)
        return found < 0 ? -1 : fpx_err_set(&r->err, FPX_E_INTERNAL, "shard 0 is not defined");
    uint64_t last = 0;
    int rc = fpx_log_last_seq(c, sd.uid, &last, &r->err);
    fpx_def_clear(&sd);
    if (rc != 0)
        return -1;
    fpx_shard_sync(c, d, 0);
    static const char *const drop[] = {"vector_shape", "dtype", NULL};
    for (int tries = 0; tries < 50; tries++) {
        fpx_out o;
        fpx_shard_sub_begin(&o, r, d, 0, "export_index", drop, 0);
        if (fpx_shard_call(c, r, d, 0, &o, x, &r->err) != 0)
            return -1;
        const msgpack_object *seq = x->m.meta ? fpx_map_get(x->m.meta, "applied_seq") : NULL;
        int64_t applied = -1;
        if (seq)
            (void)fpx_obj_int(seq, &applied);
        if (applied >= 0 && (uint64_t)applied >= last)
            return 0;
        fpx_sreply_free(x);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return fpx_err_set(&r->err, FPX_E_UNAVAILABLE,
                       "shard 0 of '%s' has not applied its latest settings yet: train again",
                       d->name);
}

/* tmp, a new index of d's type, becomes shard 0's untrained index as its
 * settings left it (set_params goes to every shard alike): FAISS's bytes
 * (the export of an empty index: by_residual, a quantizer's efConstruction,
 * ...), the training settings FAISS's reader leaves out as the factory made
 * them (tmp's), then the members the shard's info reports (k-means
 * settings, max_codes, ...). A binary index's training reads nothing that
 * set_params sets: it stays as made. */
static int shard_settings(fpx_cluster *c, fpx_req *r, const fpx_def *d, fpx_index *tmp) {
    if (fpx_shard_binary(d))
        return 0;
    sreply x;
    if (shard0_export(c, r, d, &x) != 0)
        return -1;
    fpx_engine *e = NULL;
    int64_t *labels = NULL;
    int had = 0;
    int rc = fpx_engine_import(x.m.body.data, x.m.body.data_size, &e, &labels, &had, &r->err);
    free(labels);
    if (rc == 0) {
        fpx_engine_copy_train_params(e, tmp->eng);
        const msgpack_object *params = x.m.meta ? fpx_map_get(x.m.meta, "params") : NULL;
        int64_t dflt, v;
        const char *name;
        fpx_err other; /* a name of the info's that is no member of this type (an IndexPQ's
                        * polysemous_ht is in its bytes): as fpx_engine_copy_members */
        for (int i = 0; params && (name = fpx_engine_member_param(i, &dflt)); i++) {
            const msgpack_object *val = fpx_map_get(params, name);
            if (val && fpx_obj_int(val, &v) == 0)
                (void)fpx_engine_set_member(e, name, v, &other);
        }
    }
    if (rc == 0) {
        fpx_engine_free(tmp->eng);
        tmp->eng = e;
    } else {
        fpx_engine_free(e);
    }
    fpx_sreply_free(&x);
    return rc;
}

/* Trains once, here, shard 0's untrained index (shard_settings), and
 * publishes the trained (empty) index to every shard's stream, so that every
 * shard holds the same quantizer and a sharded IVF answers as one server's
 * would. */
int fpx_shard_train(fpx_cluster *c, fpx_req *r, const fpx_def *d) {
    int ok;
    int64_t ntotal = fpx_shard_ntotal(c, r, d, &ok);
    if (!ok)
        return -1;
    fpx_index *tmp = NULL;
    if (fpx_index_new(d->tenant, d->name, d->index_type, d->dim, d->metric[0] ? d->metric : NULL,
                      &tmp, &r->err) != 0)
        return -1;
    int rc = 0;
    if (!fpx_engine_is_trained(tmp->eng)) {
        size_t row = fpx_shard_row(d);
        int64_t n = (int64_t)(r->msg.body.data_size / row);
        void *x = NULL;
        uint8_t *bytes = NULL;
        size_t len = 0;
        if (ntotal > 0)
            rc = fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                             "training a sharded index that holds vectors is not served in this "
                             "version: train it before adding");
        else if (n < 1 || r->msg.body.data_size != (size_t)n * row)
            rc = fpx_err_set(&r->err, FPX_E_VALIDATION,
                             "train needs n >= 1 vectors of the index's dimension %lld",
                             (long long)d->dim);
        else if (shard_settings(c, r, d, tmp) != 0)
            rc = -1;
        else if (!fpx_engine_round_trips(tmp->eng))
            rc = fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                             "training an additive-quantizer index (RQ, LSQ) is not served by a "
                             "cluster in this version");
        else if (!(x = malloc((size_t)n * row)))
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
        if (rc == 0) {
            memcpy(x, r->msg.body.data, (size_t)n * row); /* aligned for FAISS */
            rc = fpx_engine_train(tmp->eng, n, x, &r->err);
        }
        if (rc == 0)
            rc = fpx_engine_serialize(tmp->eng, &bytes, &len, &r->err);
        for (int64_t s = 0; rc == 0 && s < d->shards; s++) {
            char name[FPX_NAME_MAX + 1];
            fpx_def sd;
            fpx_shard_name(d->uid, s, name);
            int found = fpx_cluster_def(c, d->tenant, name, &sd, &r->err);
            if (found == 0)
                rc =
                    fpx_err_set(&r->err, FPX_E_INTERNAL, "shard %lld is not defined", (long long)s);
            if (found == 1) {
                fpx_def_clear(&sd);
                rc = fpx_log_publish_trained(c, r, sd.uid, bytes, len, &r->err);
                if (rc != 0 && s > 0)
                    fpx_err_set(&r->err, r->err.type,
                                "shards 0..%lld were trained, shard %lld and after were not: %s",
                                (long long)s - 1, (long long)s, r->err.msg);
            } else {
                rc = -1;
            }
        }
        free(x);
        free(bytes);
    }
    fpx_index_free(tmp);
    if (rc != 0)
        return -1;
    /* Read back from every shard: applied where it is read (the shards this
     * node holds apply it on delivery; an info waits for nothing, so the
     * answer says true once trained). */
    fpx_out o;
    fpx_out_init(&o);
    fpx_reply_ok(r, &o, 0);
    msgpack_packer *m = fpx_out_meta(&o);
    msgpack_pack_map(m, 2);
    fpx_pack_cstr(m, "is_trained");
    msgpack_pack_true(m);
    fpx_pack_cstr(m, "ntotal");
    msgpack_pack_int64(m, ntotal);
    return fpx_shard_reply(r, &o);
}
