/*
 * faiss/c_api/IndexIVF_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_INDEXIVF_C_H
#define FAISSPROXY_INDEXIVF_C_H

#include <stddef.h>
#include "Clustering_c.h"
#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS_INHERITED(IndexIVF, Index)
FAISS_DECLARE_DESTRUCTOR(IndexIVF)
FAISS_DECLARE_INDEX_DOWNCAST(IndexIVF)
FAISS_DECLARE_GETTER(IndexIVF, size_t, nlist)
FAISS_DECLARE_GETTER_SETTER(IndexIVF, size_t, nprobe)
FAISS_DECLARE_GETTER(IndexIVF, FaissIndex *, quantizer)
FAISS_DECLARE_GETTER(IndexIVF, char, quantizer_trains_alone)
FAISS_DECLARE_GETTER_SETTER(IndexIVF, int, own_fields)

int faiss_IndexIVF_merge_from(FaissIndexIVF *index, FaissIndexIVF *other, idx_t add_id);
int faiss_IndexIVF_copy_subset_to(const FaissIndexIVF *index, FaissIndexIVF *other, int subset_type,
                                  idx_t a1, idx_t a2);
int faiss_IndexIVF_search_preassigned(const FaissIndexIVF *index, idx_t n, const float *x, idx_t k,
                                      const idx_t *assign, const float *centroid_dis,
                                      float *distances, idx_t *labels, int store_pairs);
size_t faiss_IndexIVF_get_list_size(const FaissIndexIVF *index, size_t list_no);
int faiss_IndexIVF_make_direct_map(FaissIndexIVF *index, int new_maintain_direct_map);
double faiss_IndexIVF_imbalance_factor(const FaissIndexIVF *index);
void faiss_IndexIVF_print_stats(const FaissIndexIVF *index);
void faiss_IndexIVF_invlists_get_ids(const FaissIndexIVF *index, size_t list_no, idx_t *invlist);

typedef struct FaissIndexIVFStats {
    size_t nq;
    size_t nlist;
    size_t ndis;
    size_t nheap_updates;
    double quantization_time;
    double search_time;
} FaissIndexIVFStats;

void faiss_IndexIVFStats_reset(FaissIndexIVFStats *stats);

static inline void faiss_IndexIVFStats_init(FaissIndexIVFStats *stats) {
    faiss_IndexIVFStats_reset(stats);
}

/* Statistics of this process's searches (zero: they run on the server). */
FaissIndexIVFStats *faiss_get_indexIVF_stats(void);

#ifdef __cplusplus
}
#endif

#endif
