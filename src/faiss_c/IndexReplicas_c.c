/*
 * IndexReplicas_c.c - FAISS's IndexReplicas_c.h: copies of one index, each a
 * server index. As FAISS's IndexReplicas, an add goes to every replica, a
 * search gives each replica a contiguous share of the queries
 * (ceil(n / count) each, in order), a reconstruction asks the first replica.
 * Membership, train and reset are shared with IndexShards (IndexShards_c.c).
 */
#include "internal.h"

#include <faiss/c_api/IndexReplicas_c.h>

int fpx_fc_replicas_add(FaissIndex *ix, idx_t n, const float *x, const idx_t *ids) {
    if (ids)
        return fpx_fc_error(FAISS_EXCEPT, "add_with_ids not implemented for this type of index");
    for (size_t i = 0; i < ix->nsubs; i++) {
        int rc = faiss_Index_add(ix->subs[i], n, x);
        if (rc)
            return rc;
    }
    return fpx_fc_multi_sync(ix);
}

int fpx_fc_replicas_search(const FaissIndex *ix, idx_t n, const float *x, idx_t k, float *distances,
                           idx_t *labels) {
    if (k <= 0)
        return fpx_fc_error(FAISS_EXCEPT, "Error: 'k > 0' failed");
    if (ix->nsubs == 0)
        return fpx_fc_error(FAISS_EXCEPT, "no replicas in index");
    if (n == 0)
        return 0;
    idx_t count = (idx_t)ix->nsubs;
    idx_t per = (n + count - 1) / count;
    for (idx_t i = 0; i < count; i++) {
        idx_t base = i * per;
        if (base >= n)
            break;
        idx_t m = n - base < per ? n - base : per;
        int rc = faiss_Index_search(ix->subs[i], m, x + base * ix->d, k, distances + base * k,
                                    labels + base * k);
        if (rc)
            return rc;
    }
    return 0;
}

int faiss_IndexReplicas_new_with_options(FaissIndexReplicas **p, idx_t d, int threaded) {
    (void)threaded; /* replicas are asked one after another */
    *p = fpx_fc_handle_new(FPX_CLS_REPLICAS, (int)d, METRIC_L2, "");
    if (!*p)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    return 0;
}

int faiss_IndexReplicas_new(FaissIndexReplicas **p, idx_t d) {
    return faiss_IndexReplicas_new_with_options(p, d, 0);
}

FPX_FC_FREE_AS_INDEX(IndexReplicas)

int faiss_IndexReplicas_own_fields(const FaissIndexReplicas *ix) {
    return ix->own_fields;
}

void faiss_IndexReplicas_set_own_fields(FaissIndexReplicas *ix, int v) {
    ix->own_fields = v;
}

int faiss_IndexReplicas_add_replica(FaissIndexReplicas *ix, FaissIndex *replica) {
    if (ix && ix->cls != FPX_CLS_REPLICAS)
        return fpx_fc_error(FAISS_EXCEPT, "not an IndexReplicas");
    return fpx_fc_multi_add_member(ix, replica);
}

int faiss_IndexReplicas_remove_replica(FaissIndexReplicas *ix, FaissIndex *replica) {
    return fpx_fc_multi_remove_member(ix, replica);
}

FaissIndex *faiss_IndexReplicas_at(FaissIndexReplicas *ix, int i) {
    return ix && i >= 0 && (size_t)i < ix->nsubs ? ix->subs[i] : NULL;
}
