/*
 * faiss/c_api/IndexLSH_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: IndexLSH (binary codes from the signs of, optionally rotated,
 * components), served by libfaiss_c as a server "LSH..." index.
 */
#ifndef FAISSPROXY_INDEXLSH_C_H
#define FAISSPROXY_INDEXLSH_C_H

#include "Clustering_c.h"
#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS_INHERITED(IndexLSH, Index)
FAISS_DECLARE_DESTRUCTOR(IndexLSH)
FAISS_DECLARE_INDEX_DOWNCAST(IndexLSH)
FAISS_DECLARE_GETTER(IndexLSH, int, nbits)
FAISS_DECLARE_GETTER(IndexLSH, int, code_size)
FAISS_DECLARE_GETTER(IndexLSH, int, rotate_data)
FAISS_DECLARE_GETTER(IndexLSH, int, train_thresholds)

/* As FAISS: rotate_data defaults to 1, train_thresholds to 0. */
int faiss_IndexLSH_new(FaissIndexLSH **p_index, idx_t d, int nbits);
int faiss_IndexLSH_new_with_options(FaissIndexLSH **p_index, idx_t d, int nbits, int rotate_data,
                                    int train_thresholds);

#ifdef __cplusplus
}
#endif

#endif
