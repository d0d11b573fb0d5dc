/*
 * shard_impl.h - what shard.c (info, writes, the entry point) and
 * shard_read.c (searches, reconstructs, list_keys, codecs) share: a call of
 * one shard and its reply (docs/cluster.md, "Sharding").
 */
#ifndef FPX_CLUSTER_SHARD_IMPL_H
#define FPX_CLUSTER_SHARD_IMPL_H

#include "internal.h"

#include <pthread.h>

/* Most labels one reconstruct_n asks the shards for, one at a time. */
#define FPX_SHARD_RECONSTRUCT_MAX 10000

/* One shard's reply. */
typedef struct sreply {
    uint8_t *buf;
    size_t len;
    int is_static;
    int decoded;
    fpx_msg m;
} sreply;

/* One shard's call of a batch run at once (shard_calls). */
typedef struct scall {
    fpx_cluster *c;
    fpx_req *r;
    const fpx_def *d;
    int64_t shard;
    fpx_out o;
    sreply *x; /* where the reply goes (an fpx_msg points into itself: never copied) */
    fpx_err err;
    int rc, started;
    int sync; /* catch this node's replica of the shard up with its stream first */
    pthread_t th;
} scall;

void fpx_sreply_free(sreply *x);
void fpx_sreplies_free(sreply *x, int64_t n);

/* A vector of d: dimension/8 bytes of a binary index (its dimension is in
 * bits), else dimension float32s; the width is its vector_shape's second
 * number. */
int fpx_shard_binary(const fpx_def *d);
int64_t fpx_shard_width(const fpx_def *d);
size_t fpx_shard_row(const fpx_def *d);

/* Starts the header of a request to shard i: r's header without the fields
 * of drop, with operation op, the shard's name and room for nextra more
 * entries. */
msgpack_packer *fpx_shard_sub_begin(fpx_out *o, const fpx_req *r, const fpx_def *d, int64_t i,
                                    const char *op, const char *const *drop, unsigned nextra);
/* Runs o on shard i (here, or forwarded): 0 with an "ok" reply in *x, or -1
 * with err; *o is released. */
int fpx_shard_call(fpx_cluster *c, fpx_req *r, const fpx_def *d, int64_t i, fpx_out *o, sreply *x,
                   fpx_err *err);
/* Runs k[0..n) at once, a thread each; -1 (r->err: the first failure in
 * shard order) when any failed. */
int fpx_shard_calls(scall *k, int64_t n, fpx_req *r);
/* The reply of r: o, finished into r->relay. */
int fpx_shard_reply(fpx_req *r, fpx_out *o);
/* Catches this node's replica of shard s (when it holds one) up with the
 * shard's stream; a failure is logged and leaves the replica as it was. */
void fpx_shard_sync(fpx_cluster *c, const fpx_def *d, int64_t s);
/* The vectors of d over its shards (*ok 0, with r->err, when a shard could
 * not be asked). */
int64_t fpx_shard_ntotal(fpx_cluster *c, fpx_req *r, const fpx_def *d, int *ok);
/* shard_train.c: train of a sharded index, answering r as one server would. */
int fpx_shard_train(fpx_cluster *c, fpx_req *r, const fpx_def *d);

/* shard_read.c: the reads of a sharded index d, each answering r as one
 * server would (r->relay), or -1 with r->err. */
int fpx_shard_search(fpx_cluster *c, fpx_req *r, const fpx_def *d);
int fpx_shard_range_search(fpx_cluster *c, fpx_req *r, const fpx_def *d);
int fpx_shard_reconstruct(fpx_cluster *c, fpx_req *r, const fpx_def *d);
int fpx_shard_reconstruct_n(fpx_cluster *c, fpx_req *r, const fpx_def *d);
int fpx_shard_list_keys(fpx_cluster *c, fpx_req *r, const fpx_def *d);
int fpx_shard_codec(fpx_cluster *c, fpx_req *r, const fpx_def *d);

/* shard_labels.c: the labels of an unkeyed add of n vectors through r
 * (*first..*first+n-1): with client_id and request_id, the ones this same
 * add reserved when it was sent before (within the duplicate window), else
 * new ones. */
int fpx_shard_reserve_for(fpx_cluster *c, const fpx_req *r, const fpx_def *d, int64_t n,
                          int64_t *first, fpx_err *err);
/* Moves d's counter past label max (when it is not already), as one
 * server's counter moves past the largest label an add gives with with_ids;
 * *was is the counter before. */
int fpx_shard_advance_labels(fpx_cluster *c, const fpx_def *d, int64_t max, int64_t *was,
                             fpx_err *err);

/* shard_export.c: export_index of a sharded index d, as one server would
 * answer it (r->relay), or -1 with r->err. */
int fpx_shard_export(fpx_cluster *c, fpx_req *r, const fpx_def *d);

#endif
