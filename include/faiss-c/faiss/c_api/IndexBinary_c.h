/*
 * faiss/c_api/IndexBinary_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API
 * header of the same name: binary indexes (vectors of d bits, d/8 bytes each,
 * Hamming distances), served by a faiss-proxy server.
 */
#ifndef FAISSPROXY_INDEXBINARY_C_H
#define FAISSPROXY_INDEXBINARY_C_H

#include <stddef.h>
#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS(RangeSearchResult)

typedef struct FaissIDSelector_H FaissIDSelector;

FAISS_DECLARE_CLASS(IndexBinary)
FAISS_DECLARE_DESTRUCTOR(IndexBinary)

FAISS_DECLARE_GETTER(IndexBinary, int, d)
FAISS_DECLARE_GETTER(IndexBinary, int, is_trained)
FAISS_DECLARE_GETTER(IndexBinary, idx_t, ntotal)
FAISS_DECLARE_GETTER(IndexBinary, FaissMetricType, metric_type)
FAISS_DECLARE_GETTER_SETTER(IndexBinary, int, verbose)

int faiss_IndexBinary_train(FaissIndexBinary *index, idx_t n, const uint8_t *x);
int faiss_IndexBinary_add(FaissIndexBinary *index, idx_t n, const uint8_t *x);
int faiss_IndexBinary_add_with_ids(FaissIndexBinary *index, idx_t n, const uint8_t *x,
                                   const idx_t *xids);
int faiss_IndexBinary_search(const FaissIndexBinary *index, idx_t n, const uint8_t *x, idx_t k,
                             int32_t *distances, idx_t *labels);
int faiss_IndexBinary_range_search(const FaissIndexBinary *index, idx_t n, const uint8_t *x,
                                   int radius, FaissRangeSearchResult *result);
int faiss_IndexBinary_assign(FaissIndexBinary *index, idx_t n, const uint8_t *x, idx_t *labels,
                             idx_t k);
int faiss_IndexBinary_reset(FaissIndexBinary *index);
int faiss_IndexBinary_remove_ids(FaissIndexBinary *index, const FaissIDSelector *sel,
                                 size_t *n_removed);
int faiss_IndexBinary_reconstruct(const FaissIndexBinary *index, idx_t key, uint8_t *recons);
int faiss_IndexBinary_reconstruct_n(const FaissIndexBinary *index, idx_t i0, idx_t ni,
                                    uint8_t *recons);

#ifdef __cplusplus
}
#endif

#endif
