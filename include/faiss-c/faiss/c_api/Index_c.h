/*
 * faiss/c_api/Index_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_INDEX_C_H
#define FAISSPROXY_INDEX_C_H

#include <stddef.h>
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS(RangeSearchResult)

typedef struct FaissIDSelector_H FaissIDSelector;

typedef enum FaissMetricType {
    METRIC_INNER_PRODUCT = 0,
    METRIC_L2 = 1,
    METRIC_L1,
    METRIC_Linf,
    METRIC_Lp,
    METRIC_Canberra = 20,
    METRIC_BrayCurtis,
    METRIC_JensenShannon,
} FaissMetricType;

FAISS_DECLARE_CLASS(Index)
FAISS_DECLARE_DESTRUCTOR(Index)

FAISS_DECLARE_GETTER(Index, int, d)
FAISS_DECLARE_GETTER(Index, int, is_trained)
FAISS_DECLARE_GETTER(Index, idx_t, ntotal)
FAISS_DECLARE_GETTER(Index, FaissMetricType, metric_type)
FAISS_DECLARE_GETTER_SETTER(Index, int, verbose)

int faiss_Index_train(FaissIndex *index, idx_t n, const float *x);
int faiss_Index_add(FaissIndex *index, idx_t n, const float *x);
int faiss_Index_add_with_ids(FaissIndex *index, idx_t n, const float *x, const idx_t *xids);
int faiss_Index_search(const FaissIndex *index, idx_t n, const float *x, idx_t k, float *distances,
                       idx_t *labels);
int faiss_Index_range_search(const FaissIndex *index, idx_t n, const float *x, float radius,
                             FaissRangeSearchResult *result);
int faiss_Index_assign(FaissIndex *index, idx_t n, const float *x, idx_t *labels, idx_t k);
int faiss_Index_reset(FaissIndex *index);
int faiss_Index_remove_ids(FaissIndex *index, const FaissIDSelector *sel, size_t *n_removed);
int faiss_Index_reconstruct(const FaissIndex *index, idx_t key, float *recons);
int faiss_Index_reconstruct_n(const FaissIndex *index, idx_t i0, idx_t ni, float *recons);
int faiss_Index_compute_residual(const FaissIndex *index, const float *x, float *residual,
                                 idx_t key);
int faiss_Index_compute_residual_n(const FaissIndex *index, idx_t n, const float *x,
                                   float *residuals, const idx_t *keys);
int faiss_Index_sa_code_size(const FaissIndex *index, size_t *size);
int faiss_Index_sa_encode(const FaissIndex *index, idx_t n, const float *x, uint8_t *bytes);
int faiss_Index_sa_decode(const FaissIndex *index, idx_t n, const uint8_t *bytes, float *x);

#ifdef __cplusplus
}
#endif

#endif
