/*
 * faiss/c_api/IndexFlat_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_INDEXFLAT_C_H
#define FAISSPROXY_INDEXFLAT_C_H

#include <stddef.h>
#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum FaissMetricType FaissMetricType;

FAISS_DECLARE_CLASS_INHERITED(IndexFlat, Index)
int faiss_IndexFlat_new(FaissIndexFlat **p_index);
int faiss_IndexFlat_new_with(FaissIndexFlat **p_index, idx_t d, FaissMetricType metric);
/* The stored vectors (fetched from the server; valid until the next call on
 * this index). */
void faiss_IndexFlat_xb(FaissIndexFlat *index, float **p_xb, size_t *p_size);
FAISS_DECLARE_INDEX_DOWNCAST(IndexFlat)
FAISS_DECLARE_DESTRUCTOR(IndexFlat)
int faiss_IndexFlat_compute_distance_subset(FaissIndex *index, idx_t n, const float *x, idx_t k,
                                            float *distances, const idx_t *labels);

FAISS_DECLARE_CLASS_INHERITED(IndexFlatIP, Index)
FAISS_DECLARE_INDEX_DOWNCAST(IndexFlatIP)
FAISS_DECLARE_DESTRUCTOR(IndexFlatIP)
int faiss_IndexFlatIP_new(FaissIndexFlatIP **p_index);
int faiss_IndexFlatIP_new_with(FaissIndexFlatIP **p_index, idx_t d);

FAISS_DECLARE_CLASS_INHERITED(IndexFlatL2, Index)
FAISS_DECLARE_INDEX_DOWNCAST(IndexFlatL2)
FAISS_DECLARE_DESTRUCTOR(IndexFlatL2)
int faiss_IndexFlatL2_new(FaissIndexFlatL2 **p_index);
int faiss_IndexFlatL2_new_with(FaissIndexFlatL2 **p_index, idx_t d);

FAISS_DECLARE_CLASS_INHERITED(IndexRefineFlat, Index)
int faiss_IndexRefineFlat_new(FaissIndexRefineFlat **p_index, FaissIndex *base_index);
FAISS_DECLARE_DESTRUCTOR(IndexRefineFlat)
FAISS_DECLARE_INDEX_DOWNCAST(IndexRefineFlat)
FAISS_DECLARE_GETTER_SETTER(IndexRefineFlat, int, own_fields)
FAISS_DECLARE_GETTER_SETTER(IndexRefineFlat, float, k_factor)

FAISS_DECLARE_CLASS_INHERITED(IndexFlat1D, Index)
FAISS_DECLARE_INDEX_DOWNCAST(IndexFlat1D)
FAISS_DECLARE_DESTRUCTOR(IndexFlat1D)
int faiss_IndexFlat1D_new(FaissIndexFlat1D **p_index);
int faiss_IndexFlat1D_new_with(FaissIndexFlat1D **p_index, int continuous_update);
int faiss_IndexFlat1D_update_permutation(FaissIndexFlat1D *index);

#ifdef __cplusplus
}
#endif

#endif
