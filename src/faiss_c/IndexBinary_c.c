/*
 * IndexBinary_c.c - FAISS's IndexBinary_c.h: a binary index is a handle like
 * the others (d in bits) behind its own type; its calls take the paths of
 * Index_c.c with bit vectors, and Hamming distances come back as int32.
 */
#include "internal.h"

#include <faiss/c_api/IndexBinary_c.h>

void faiss_IndexBinary_free(FaissIndexBinary *b) {
    faiss_Index_free(b ? BH(b) : NULL); /* h is the first member: the same allocation */
}

int faiss_IndexBinary_d(const FaissIndexBinary *b) {
    return b->h.d;
}

int faiss_IndexBinary_is_trained(const FaissIndexBinary *b) {
    return b->h.is_trained;
}

idx_t faiss_IndexBinary_ntotal(const FaissIndexBinary *b) {
    return b->h.ntotal;
}

FaissMetricType faiss_IndexBinary_metric_type(const FaissIndexBinary *b) {
    (void)b;
    return METRIC_L2; /* what FAISS's IndexBinary reports; distances are Hamming */
}

int faiss_IndexBinary_verbose(const FaissIndexBinary *b) {
    return b->h.verbose;
}

void faiss_IndexBinary_set_verbose(FaissIndexBinary *b, int v) {
    b->h.verbose = v;
}

int faiss_IndexBinary_train(FaissIndexBinary *b, idx_t n, const uint8_t *x) {
    return fpx_fc_index_train(BH(b), n, x, FPX_FC_BINARY);
}

int faiss_IndexBinary_add(FaissIndexBinary *b, idx_t n, const uint8_t *x) {
    if (b && fpx_fc_is_idmap(BH(b)))
        return fpx_fc_error(FAISS_EXCEPT,
                            "add does not make sense with IndexIDMap, use add_with_ids");
    return fpx_fc_index_add(BH(b), n, x, NULL, FPX_FC_BINARY);
}

int faiss_IndexBinary_add_with_ids(FaissIndexBinary *b, idx_t n, const uint8_t *x,
                                   const idx_t *xids) {
    if (b && !b->takes_ids)
        return fpx_fc_error(FAISS_EXCEPT, "add_with_ids not implemented for this type of index");
    return fpx_fc_index_add(BH(b), n, x, xids, FPX_FC_BINARY);
}

int faiss_IndexBinary_search(const FaissIndexBinary *b, idx_t n, const uint8_t *x, idx_t k,
                             int32_t *distances, idx_t *labels) {
    return fpx_fc_index_search(BH(b), n, x, k, distances, labels, FPX_FC_BINARY);
}

int faiss_IndexBinary_range_search(const FaissIndexBinary *b, idx_t n, const uint8_t *x, int radius,
                                   FaissRangeSearchResult *result) {
    return fpx_fc_index_range_search(BH(b), n, x, radius, result, FPX_FC_BINARY);
}

int faiss_IndexBinary_assign(FaissIndexBinary *b, idx_t n, const uint8_t *x, idx_t *labels,
                             idx_t k) {
    return fpx_fc_index_assign(BH(b), n, x, labels, k, FPX_FC_BINARY);
}

int faiss_IndexBinary_reset(FaissIndexBinary *b) {
    return faiss_Index_reset(BH(b));
}

int faiss_IndexBinary_remove_ids(FaissIndexBinary *b, const FaissIDSelector *sel,
                                 size_t *n_removed) {
    return faiss_Index_remove_ids(BH(b), sel, n_removed);
}

int faiss_IndexBinary_reconstruct(const FaissIndexBinary *b, idx_t key, uint8_t *recons) {
    return fpx_fc_index_reconstruct(BH(b), key, recons, FPX_FC_BINARY);
}

int faiss_IndexBinary_reconstruct_n(const FaissIndexBinary *b, idx_t i0, idx_t ni,
                                    uint8_t *recons) {
    return fpx_fc_index_reconstruct_n(BH(b), i0, ni, recons, FPX_FC_BINARY);
}
