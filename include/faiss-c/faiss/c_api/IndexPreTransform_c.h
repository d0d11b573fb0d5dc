/*
 * faiss/c_api/IndexPreTransform_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API
 * header of the same name: an index behind a chain of vector transforms, served
 * as one server index whose factory description is the chain then the
 * sub-index ("PCA16,Flat", "OPQ4_16,IVF8,Flat", ...).
 */
#ifndef FAISSPROXY_INDEXPRETRANSFORM_C_H
#define FAISSPROXY_INDEXPRETRANSFORM_C_H

#include "Index_c.h"
#include "VectorTransform_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS_INHERITED(IndexPreTransform, Index)
FAISS_DECLARE_DESTRUCTOR(IndexPreTransform)
FAISS_DECLARE_INDEX_DOWNCAST(IndexPreTransform)
FAISS_DECLARE_GETTER(IndexPreTransform, FaissIndex *, index)
FAISS_DECLARE_GETTER_SETTER(IndexPreTransform, int, own_fields)

int faiss_IndexPreTransform_new(FaissIndexPreTransform **p_index);
int faiss_IndexPreTransform_new_with(FaissIndexPreTransform **p_index, FaissIndex *index);
int faiss_IndexPreTransform_new_with_transform(FaissIndexPreTransform **p_index,
                                               FaissVectorTransform *ltrans, FaissIndex *index);
int faiss_IndexPreTransform_prepend_transform(FaissIndexPreTransform *index,
                                              FaissVectorTransform *ltrans);

#ifdef __cplusplus
}
#endif

#endif
