/*
 * faiss/c_api/MetaIndexes_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_METAINDEXES_C_H
#define FAISSPROXY_METAINDEXES_C_H

#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS_INHERITED(IndexIDMap, Index)
FAISS_DECLARE_GETTER_SETTER(IndexIDMap, int, own_fields)
int faiss_IndexIDMap_new(FaissIndexIDMap **p_index, FaissIndex *index);
FAISS_DECLARE_INDEX_DOWNCAST(IndexIDMap)
/* The ids, in the order of the wrapped index (valid until the next call). */
void faiss_IndexIDMap_id_map(FaissIndexIDMap *index, idx_t **p_id_map, size_t *p_size);
FaissIndex *faiss_IndexIDMap_sub_index(FaissIndexIDMap *index);

FAISS_DECLARE_CLASS_INHERITED(IndexIDMap2, Index)
FAISS_DECLARE_GETTER_SETTER(IndexIDMap2, int, own_fields)
int faiss_IndexIDMap2_new(FaissIndexIDMap2 **p_index, FaissIndex *index);
int faiss_IndexIDMap2_construct_rev_map(FaissIndexIDMap2 *index);
FAISS_DECLARE_INDEX_DOWNCAST(IndexIDMap2)
void faiss_IndexIDMap2_id_map(FaissIndexIDMap2 *index, idx_t **p_id_map, size_t *p_size);
FaissIndex *faiss_IndexIDMap2_sub_index(FaissIndexIDMap2 *index);

#ifdef __cplusplus
}
#endif

#endif
