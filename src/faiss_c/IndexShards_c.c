/*
 * IndexShards_c.c - FAISS's IndexShards_c.h, and the scatter/gather both
 * containers (IndexShards here, IndexReplicas in IndexReplicas_c.c) run in
 * this process: such a handle has no server index of its own, only members
 * that are ordinary handles on server indexes.
 *
 * Shards follow FAISS's IndexShards exactly: an add is cut into one
 * contiguous slice per shard (slice i is rows i*n/count .. (i+1)*n/count);
 * with successive_ids (the default) the shards number their vectors from 0
 * and a search shifts shard s's labels by the sizes of the shards before it;
 * without it, labels are passed to (or made up for) add_with_ids. A search
 * asks every shard for its k best and merges them with the same binary heap
 * as FAISS's merge_tables, so ties between shards break the same way. The
 * calls run one member after another: "threaded" is remembered, not used.
 */
#include "internal.h"

#include <faiss/c_api/IndexShards_c.h>

#include <float.h>
#include <stdlib.h>
#include <string.h>

/* ---- members ------------------------------------------------------------------------ */

int fpx_fc_multi_refuse(const FaissIndex *ix, const char *what) {
    (void)ix;
    return fpx_fc_error(FAISS_EXCEPT, "%s", what);
}

int fpx_fc_multi_sync(FaissIndex *ix) {
    if (ix->nsubs == 0) {
        ix->is_trained = 0;
        ix->ntotal = 0;
        return 0;
    }
    const FaissIndex *first = ix->subs[0];
    ix->metric = faiss_Index_metric_type(first);
    ix->is_trained = faiss_Index_is_trained(first);
    ix->ntotal = faiss_Index_ntotal(first);
    for (size_t i = 1; i < ix->nsubs; i++) {
        const FaissIndex *s = ix->subs[i];
        if (faiss_Index_metric_type(s) != ix->metric)
            return fpx_fc_error(FAISS_EXCEPT, "Error: 'this->metric_type == index->metric_type' "
                                              "failed");
        if (faiss_Index_d(s) != ix->d)
            return fpx_fc_error(FAISS_EXCEPT, "Error: 'this->d == index->d' failed");
        if (faiss_Index_is_trained(s) != ix->is_trained)
            return fpx_fc_error(FAISS_EXCEPT, "Error: 'this->is_trained == index->is_trained' "
                                              "failed");
        if (ix->cls == FPX_CLS_REPLICAS) {
            if (faiss_Index_ntotal(s) != ix->ntotal)
                return fpx_fc_error(FAISS_EXCEPT, "Error: 'this->ntotal == index->ntotal' failed");
        } else {
            ix->ntotal += faiss_Index_ntotal(s);
        }
    }
    return 0;
}

int fpx_fc_multi_add_member(FaissIndex *ix, FaissIndex *sub) {
    if (!ix || !sub)
        return fpx_fc_error(FAISS_EXCEPT, "index is NULL");
    if (ix->nsubs == 0 && ix->d == 0)
        ix->d = faiss_Index_d(sub);
    if (faiss_Index_d(sub) != ix->d)
        return fpx_fc_error(FAISS_EXCEPT,
                            "addIndex: dimension mismatch for newly added index; expecting dim "
                            "%d, new index has dim %d",
                            ix->d, faiss_Index_d(sub));
    if (ix->nsubs > 0) {
        if (faiss_Index_metric_type(sub) != faiss_Index_metric_type(ix->subs[0]))
            return fpx_fc_error(FAISS_EXCEPT, "addIndex: newly added index is of different "
                                              "metric type than old index");
        for (size_t i = 0; i < ix->nsubs; i++)
            if (ix->subs[i] == sub)
                return fpx_fc_error(FAISS_EXCEPT, "addIndex: attempting to add index that is "
                                                  "already in the collection");
    }
    FaissIndex **m = realloc(ix->subs, sizeof *m * (ix->nsubs + 1));
    if (!m)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    ix->subs = m;
    ix->subs[ix->nsubs++] = sub;
    if (ix->cls == FPX_CLS_REPLICAS && ix->nsubs > 1) {
        /* a later replica must look like the first; FAISS keeps it even so */
        const FaissIndex *first = ix->subs[0];
        if (faiss_Index_ntotal(sub) != faiss_Index_ntotal(first))
            return fpx_fc_error(FAISS_EXCEPT,
                                "IndexReplicas: newly added index does not have same number of "
                                "vectors as prior index; prior index has %lld vectors, new index "
                                "has %lld",
                                (long long)faiss_Index_ntotal(first),
                                (long long)faiss_Index_ntotal(sub));
        if (faiss_Index_is_trained(sub) != faiss_Index_is_trained(first))
            return fpx_fc_error(FAISS_EXCEPT, "IndexReplicas: newly added index does not have "
                                              "same train status as prior index");
        return 0;
    }
    return fpx_fc_multi_sync(ix);
}

int fpx_fc_multi_remove_member(FaissIndex *ix, FaissIndex *sub) {
    if (!ix)
        return fpx_fc_error(FAISS_EXCEPT, "index is NULL");
    for (size_t i = 0; i < ix->nsubs; i++) {
        if (ix->subs[i] != sub)
            continue;
        memmove(ix->subs + i, ix->subs + i + 1, sizeof *ix->subs * (ix->nsubs - i - 1));
        ix->nsubs--;
        int rc = fpx_fc_multi_sync(ix);
        if (ix->own_fields)
            faiss_Index_free(sub);
        return rc;
    }
    return fpx_fc_error(FAISS_EXCEPT, "IndexReplicas::removeIndex: index not found");
}

/* ---- the FaissIndex calls of both containers ---------------------------------------- */

int fpx_fc_multi_train(FaissIndex *ix, idx_t n, const float *x) {
    for (size_t i = 0; i < ix->nsubs; i++) {
        int rc = faiss_Index_train(ix->subs[i], n, x);
        if (rc)
            return rc;
    }
    return fpx_fc_multi_sync(ix);
}

int fpx_fc_multi_reset(FaissIndex *ix) {
    for (size_t i = 0; i < ix->nsubs; i++) {
        int rc = faiss_Index_reset(ix->subs[i]);
        if (rc)
            return rc;
    }
    ix->ntotal = 0; /* as FAISS: not synced with the members here */
    ix->is_trained = 0;
    return 0;
}

int fpx_fc_multi_reconstruct_n(const FaissIndex *ix, idx_t i0, idx_t ni, float *recons) {
    if (ix->cls == FPX_CLS_SHARDS)
        return fpx_fc_error(FAISS_EXCEPT, "reconstruct not implemented for this type of index");
    if (ix->nsubs == 0)
        return fpx_fc_error(FAISS_EXCEPT, "no replicas in index");
    return faiss_Index_reconstruct_n(ix->subs[0], i0, ni, recons);
}

static int shards_add(FaissIndex *ix, idx_t n, const float *x, const idx_t *xids) {
    if (ix->successive_ids && xids)
        return fpx_fc_error(FAISS_EXCEPT,
                            "It makes no sense to pass in ids and request them to be shifted");
    if (ix->successive_ids && ix->ntotal != 0)
        return fpx_fc_error(FAISS_EXCEPT, "when adding to IndexShards with sucessive_ids, only "
                                          "add() in a single pass is supported");
    idx_t nshard = (idx_t)ix->nsubs;
    idx_t *made = NULL;
    const idx_t *ids = xids;
    if (!ids && !ix->successive_ids) {
        made = malloc(sizeof *made * (size_t)(n > 0 ? n : 1));
        if (!made)
            return fpx_fc_error(STD_EXCEPT, "out of memory");
        for (idx_t i = 0; i < n; i++)
            made[i] = ix->ntotal + i;
        ids = made;
    }
    int rc = 0;
    for (idx_t s = 0; s < nshard && rc == 0; s++) {
        idx_t i0 = s * n / nshard, i1 = (s + 1) * n / nshard;
        if (i1 == i0)
            continue; /* FAISS adds nothing there either */
        const float *x0 = x + i0 * ix->d;
        rc = ids ? faiss_Index_add_with_ids(ix->subs[s], i1 - i0, x0, ids + i0)
                 : faiss_Index_add(ix->subs[s], i1 - i0, x0);
    }
    free(made);
    return rc ? rc : fpx_fc_multi_sync(ix);
}

int fpx_fc_multi_add(FaissIndex *ix, idx_t n, const float *x, const idx_t *ids) {
    return ix->cls == FPX_CLS_SHARDS ? shards_add(ix, n, x, ids)
                                     : fpx_fc_replicas_add(ix, n, x, ids);
}

/* FAISS's heap over (distance, shard) pairs, 1-based: the top is the best
 * pair by cmp (smaller distance for L2, larger for inner product; on equal
 * distances the smaller shard for L2, the larger one for inner product). */
static int better(int ip, float a, float b, int sa, int sb) {
    return ip ? (a > b || (a == b && sa > sb)) : (a < b || (a == b && sa < sb));
}

static void heap_push(int ip, size_t k, float *val, int *ids, float v, int id) {
    val--, ids--;
    size_t i = k;
    while (i > 1) {
        size_t f = i >> 1;
        if (!better(ip, v, val[f], id, ids[f]))
            break;
        val[i] = val[f];
        ids[i] = ids[f];
        i = f;
    }
    val[i] = v;
    ids[i] = id;
}

static void heap_pop(int ip, size_t k, float *val, int *ids) {
    val--, ids--;
    float v = val[k];
    int id = ids[k];
    size_t i = 1;
    for (;;) {
        size_t i1 = i << 1, i2 = i1 + 1;
        if (i1 > k)
            break;
        size_t c = (i2 == k + 1 || better(ip, val[i1], val[i2], ids[i1], ids[i2])) ? i1 : i2;
        if (better(ip, v, val[c], id, ids[c]))
            break;
        val[i] = val[c];
        ids[i] = ids[c];
        i = c;
    }
    val[i] = val[k];
    ids[i] = ids[k];
}

/* Merges nshard tables of n x k results (shard s at s*n*k) into D, I. */
static void merge_tables(int ip, idx_t n, idx_t k, idx_t nshard, float *D, idx_t *I,
                         const float *all_d, const idx_t *all_i, const idx_t *shift, int *buf,
                         float *hval) {
    idx_t stride = n * k;
    int *pointer = buf, *shard_ids = buf + nshard;
    for (idx_t q = 0; q < n; q++) {
        const float *din = all_d + q * k;
        const idx_t *iin = all_i + q * k;
        size_t heap_size = 0;
        for (idx_t s = 0; s < nshard; s++) {
            pointer[s] = 0;
            if (iin[stride * s] >= 0)
                heap_push(ip, ++heap_size, hval, shard_ids, din[stride * s], (int)s);
        }
        for (idx_t j = 0; j < k; j++) {
            if (heap_size == 0) {
                I[q * k + j] = -1;
                D[q * k + j] = ip ? FLT_MAX : -FLT_MAX;
                continue;
            }
            int s = shard_ids[0];
            int p = pointer[s];
            D[q * k + j] = hval[0];
            I[q * k + j] = iin[stride * s + p] + shift[s];
            heap_pop(ip, heap_size--, hval, shard_ids);
            pointer[s] = ++p;
            if (p < k && iin[stride * s + p] >= 0)
                heap_push(ip, ++heap_size, hval, shard_ids, din[stride * s + p], s);
        }
    }
}

static int shards_search(const FaissIndex *ix, idx_t n, const float *x, idx_t k, float *D,
                         idx_t *I) {
    if (k <= 0)
        return fpx_fc_error(FAISS_EXCEPT, "Error: 'k > 0' failed");
    idx_t nshard = (idx_t)ix->nsubs;
    size_t per = (size_t)n * (size_t)k;
    float *all_d = malloc(sizeof *all_d * (per * (size_t)nshard + 1));
    idx_t *all_i = malloc(sizeof *all_i * (per * (size_t)nshard + 1));
    idx_t *shift = calloc((size_t)nshard + 1, sizeof *shift);
    int *buf = malloc(sizeof *buf * (2 * (size_t)nshard + 1));
    float *hval = malloc(sizeof *hval * ((size_t)nshard + 1));
    int rc = 0;
    if (!all_d || !all_i || !shift || !buf || !hval)
        rc = fpx_fc_error(STD_EXCEPT, "out of memory");
    for (idx_t s = 0; s < nshard && rc == 0; s++)
        rc = faiss_Index_search(ix->subs[s], n, x, k, all_d + per * (size_t)s,
                                all_i + per * (size_t)s);
    if (rc == 0) {
        for (idx_t s = 0; ix->successive_ids && s + 1 < nshard; s++)
            shift[s + 1] = shift[s] + faiss_Index_ntotal(ix->subs[s]);
        merge_tables(ix->metric == METRIC_INNER_PRODUCT, n, k, nshard, D, I, all_d, all_i, shift,
                     buf, hval);
    }
    free(all_d);
    free(all_i);
    free(shift);
    free(buf);
    free(hval);
    return rc;
}

int fpx_fc_multi_search(const FaissIndex *ix, idx_t n, const float *x, idx_t k, float *distances,
                        idx_t *labels) {
    return ix->cls == FPX_CLS_SHARDS ? shards_search(ix, n, x, k, distances, labels)
                                     : fpx_fc_replicas_search(ix, n, x, k, distances, labels);
}

/* ---- IndexShards_c.h ---------------------------------------------------------------- */

int faiss_IndexShards_new_with_options(FaissIndexShards **p, idx_t d, int threaded,
                                       int successive_ids) {
    (void)threaded; /* members are asked one after another */
    *p = fpx_fc_handle_new(FPX_CLS_SHARDS, (int)d, METRIC_L2, "");
    if (!*p)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    (*p)->successive_ids = successive_ids;
    return 0;
}

int faiss_IndexShards_new(FaissIndexShards **p, idx_t d) {
    return faiss_IndexShards_new_with_options(p, d, 0, 1);
}

FPX_FC_FREE_AS_INDEX(IndexShards)

int faiss_IndexShards_own_fields(const FaissIndexShards *ix) {
    return ix->own_fields;
}

void faiss_IndexShards_set_own_fields(FaissIndexShards *ix, int v) {
    ix->own_fields = v;
}

int faiss_IndexShards_successive_ids(const FaissIndexShards *ix) {
    return ix->successive_ids;
}

void faiss_IndexShards_set_successive_ids(FaissIndexShards *ix, int v) {
    ix->successive_ids = v;
}

int faiss_IndexShards_add_shard(FaissIndexShards *ix, FaissIndex *shard) {
    if (ix && ix->cls != FPX_CLS_SHARDS)
        return fpx_fc_error(FAISS_EXCEPT, "not an IndexShards");
    return fpx_fc_multi_add_member(ix, shard);
}

int faiss_IndexShards_remove_shard(FaissIndexShards *ix, FaissIndex *shard) {
    return fpx_fc_multi_remove_member(ix, shard);
}

FaissIndex *faiss_IndexShards_at(FaissIndexShards *ix, int i) {
    return ix && i >= 0 && (size_t)i < ix->nsubs ? ix->subs[i] : NULL;
}
