/*
 * faiss/c_api/IndexIVFFlat_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_INDEXIVFFLAT_C_H
#define FAISSPROXY_INDEXIVFFLAT_C_H

#include "Clustering_c.h"
#include "IndexIVF_c.h"
#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS_INHERITED(IndexIVFFlat, Index)
FAISS_DECLARE_DESTRUCTOR(IndexIVFFlat)
FAISS_DECLARE_INDEX_DOWNCAST(IndexIVFFlat)
FAISS_DECLARE_GETTER(IndexIVFFlat, size_t, nlist)
FAISS_DECLARE_GETTER_SETTER(IndexIVFFlat, size_t, nprobe)
FAISS_DECLARE_GETTER(IndexIVFFlat, FaissIndex *, quantizer)
FAISS_DECLARE_GETTER(IndexIVFFlat, char, quantizer_trains_alone)
FAISS_DECLARE_GETTER_SETTER(IndexIVFFlat, int, own_fields)

int faiss_IndexIVFFlat_new(FaissIndexIVFFlat **p_index);
int faiss_IndexIVFFlat_new_with(FaissIndexIVFFlat **p_index, FaissIndex *quantizer, size_t d,
                                size_t nlist);
int faiss_IndexIVFFlat_new_with_metric(FaissIndexIVFFlat **p_index, FaissIndex *quantizer, size_t d,
                                       size_t nlist, FaissMetricType metric);
int faiss_IndexIVFFlat_add_core(FaissIndexIVFFlat *index, idx_t n, const float *x,
                                const idx_t *xids, const int64_t *precomputed_idx);
int faiss_IndexIVFFlat_update_vectors(FaissIndexIVFFlat *index, int nv, idx_t *idx, const float *v);

#ifdef __cplusplus
}
#endif

#endif
