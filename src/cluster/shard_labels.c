/*
 * shard_labels.c - the label counter of a sharded index (docs/cluster.md,
 * "Sharding"): one counter per index in the bucket fpx_labels (key: the
 * index's uid in hex), moved with a compare-and-set, so that the labels of
 * unkeyed adds through any node are FAISS's numbering as on one server; the
 * reservations of adds sent with client_id and request_id, so that an add
 * sent again takes the labels it took the first time; and the shard a
 * caller key routes its vector to.
 */
#include "internal.h"
#include "shard_impl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a, 64 bits, of the key's msgpack encoding (as msgpack-c packs it:
 * the shortest form), mod the shards: the same on every node and version. */
int64_t fpx_shard_of_key(const msgpack_object *key, int64_t shards) {
    msgpack_sbuffer sb;
    msgpack_packer p;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&p, *key);
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < sb.size; i++) {
        h ^= (uint8_t)sb.data[i];
        h *= 1099511628211ull;
    }
    msgpack_sbuffer_destroy(&sb);
    return (int64_t)(h % (uint64_t)shards);
}

/* Moves d's label counter (bucket fpx_labels) from its value cur to
 * max(cur + add, at_least) with a compare-and-set, reading it again when
 * another node moved it meanwhile; *was is cur. A counter already there is
 * not written. */
static int move_labels(fpx_cluster *c, const fpx_def *d, int64_t add, int64_t at_least,
                       int64_t *was, fpx_err *err) {
    char key[FPX_UID_HEX];
    fpx_cluster_uid_hex(d->uid, key);
    for (int attempt = 0; attempt < 1000; attempt++) {
        kvEntry *e = NULL;
        uint64_t rev = 0, last = 0;
        int64_t cur = 0;
        natsStatus st = kvStore_Get(&e, c->labels, key);
        if (st == NATS_OK) {
            char v[32];
            int len = kvEntry_ValueLen(e);
            snprintf(v, sizeof v, "%.*s", len < 31 ? len : 31, (const char *)kvEntry_Value(e));
            cur = strtoll(v, NULL, 10);
            last = kvEntry_Revision(e);
            kvEntry_Destroy(e);
        } else if (st != NATS_NOT_FOUND) {
            return fpx_cluster_fail(err, "cannot read the index's label counter", st);
        }
        *was = cur;
        int64_t next = cur + add < at_least ? at_least : cur + add;
        if (next == cur)
            return 0;
        char v[32];
        snprintf(v, sizeof v, "%lld", (long long)next);
        st = last ? kvStore_UpdateString(&rev, c->labels, key, v, last)
                  : kvStore_CreateString(&rev, c->labels, key, v);
        if (st == NATS_OK)
            return 0;
        /* another add moved it meanwhile: read again */
    }
    return fpx_err_set(err, FPX_E_UNAVAILABLE,
                       "cannot move the label counter: too many concurrent adds");
}

/* Reserves n labels of d's counter: *first..*first+n-1. */
static int reserve_labels(fpx_cluster *c, const fpx_def *d, int64_t n, int64_t *first,
                          fpx_err *err) {
    return move_labels(c, d, n, INT64_MIN, first, err);
}

/* Moves d's counter past label max (when it is not already), as one
 * server's counter moves past the largest label an add gives with with_ids. */
int fpx_shard_advance_labels(fpx_cluster *c, const fpx_def *d, int64_t max, int64_t *was,
                             fpx_err *err) {
    return move_labels(c, d, 0, max < INT64_MAX ? max + 1 : max, was, err);
}

/* "first n" of a reservation entry. */
static int parse_range(kvEntry *e, int64_t *first, int64_t *n) {
    char v[64];
    int len = kvEntry_ValueLen(e);
    snprintf(v, sizeof v, "%.*s", len < 63 ? len : 63, (const char *)kvEntry_Value(e));
    long long a, b;
    if (sscanf(v, "%lld %lld", &a, &b) != 2)
        return -1;
    *first = a;
    *n = b;
    return 0;
}

/* The labels of an unkeyed add of n vectors: with client_id and request_id,
 * the ones this same add reserved when it was sent before (within the
 * duplicate window), else new ones (FPX_BUCKET_LABEL_REQS). */
int fpx_shard_reserve_for(fpx_cluster *c, const fpx_req *r, const fpx_def *d, int64_t n,
                          int64_t *first, fpx_err *err) {
    if (!r->client_id[0] || !r->rid)
        return reserve_labels(c, d, n, first, err);
    msgpack_sbuffer sb;
    msgpack_packer p;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&p, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&p, *r->rid);
    uint64_t h = 14695981039346656037ull;
    const char *parts[] = {r->tenant, "/", r->client_id, "/"};
    for (size_t k = 0; k < 4; k++)
        for (const char *q = parts[k]; *q; q++)
            h = (h ^ (uint8_t)*q) * 1099511628211ull;
    for (size_t i = 0; i < sb.size; i++)
        h = (h ^ (uint8_t)sb.data[i]) * 1099511628211ull;
    msgpack_sbuffer_destroy(&sb);
    char key[FPX_UID_HEX + 24];
    fpx_cluster_uid_hex(d->uid, key);
    snprintf(key + strlen(key), sizeof key - strlen(key), ".%016llx", (unsigned long long)h);
    for (int attempt = 0; attempt < 2; attempt++) {
        kvEntry *e = NULL;
        natsStatus st = kvStore_Get(&e, c->label_reqs, key);
        if (st == NATS_OK) {
            int64_t m = 0;
            int bad = parse_range(e, first, &m) != 0;
            kvEntry_Destroy(e);
            if (bad || m != n)
                return fpx_err_set(err, FPX_E_VALIDATION,
                                   "request_id was used for another add of this client_id within "
                                   "the last 2 minutes (an add sent again must be the same add)");
            return 0;
        }
        if (st != NATS_NOT_FOUND)
            return fpx_cluster_fail(err, "cannot read the index's label reservations", st);
        if (attempt > 0)
            break;
        if (reserve_labels(c, d, n, first, err) != 0)
            return -1;
        char v[48];
        uint64_t rev;
        snprintf(v, sizeof v, "%lld %lld", (long long)*first, (long long)n);
        st = kvStore_CreateString(&rev, c->label_reqs, key, v);
        if (st == NATS_OK)
            return 0;
        /* the same add, sent again meanwhile, reserved first: take its labels
         * (those just reserved stay unused, a gap) */
    }
    return fpx_err_set(err, FPX_E_UNAVAILABLE, "cannot record the add's label reservation");
}

int fpx_shard_set_labels(fpx_cluster *c, const fpx_def *d, int64_t next, fpx_err *err) {
    char key[FPX_UID_HEX], v[32];
    uint64_t rev;
    fpx_cluster_uid_hex(d->uid, key);
    snprintf(v, sizeof v, "%lld", (long long)next);
    natsStatus st = kvStore_PutString(&rev, c->labels, key, v);
    return st == NATS_OK ? 0 : fpx_cluster_fail(err, "cannot reset the index's label counter", st);
}
