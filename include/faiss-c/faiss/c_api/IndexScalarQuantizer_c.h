/*
 * faiss/c_api/IndexScalarQuantizer_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API
 * header of the same name: IndexScalarQuantizer and IndexIVFScalarQuantizer,
 * served as server "SQ..." and "IVF<n>,SQ..." indexes.
 */
#ifndef FAISSPROXY_INDEXSCALARQUANTIZER_C_H
#define FAISSPROXY_INDEXSCALARQUANTIZER_C_H

#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How each component is encoded; the values are FAISS's. */
typedef enum FaissQuantizerType {
    QT_8bit,         /* 8 bits, a range per component */
    QT_4bit,         /* 4 bits, a range per component */
    QT_8bit_uniform, /* 8 bits, one range for all components */
    QT_4bit_uniform, /* 4 bits, one range for all components */
    QT_fp16,         /* half-precision floats */
    QT_8bit_direct,  /* components already integers in 0..255 */
    QT_6bit,         /* 6 bits, a range per component */
} FaissQuantizerType;

typedef enum FaissMetricType FaissMetricType;

FAISS_DECLARE_CLASS_INHERITED(IndexScalarQuantizer, Index)
int faiss_IndexScalarQuantizer_new(FaissIndexScalarQuantizer **p_index);
int faiss_IndexScalarQuantizer_new_with(FaissIndexScalarQuantizer **p_index, idx_t d,
                                        FaissQuantizerType qt, FaissMetricType metric);
FAISS_DECLARE_INDEX_DOWNCAST(IndexScalarQuantizer)
FAISS_DECLARE_DESTRUCTOR(IndexScalarQuantizer)

FAISS_DECLARE_CLASS_INHERITED(IndexIVFScalarQuantizer, Index)
FAISS_DECLARE_INDEX_DOWNCAST(IndexIVFScalarQuantizer)
FAISS_DECLARE_DESTRUCTOR(IndexIVFScalarQuantizer)
int faiss_IndexIVFScalarQuantizer_new(FaissIndexIVFScalarQuantizer **p_index);
int faiss_IndexIVFScalarQuantizer_new_with(FaissIndexIVFScalarQuantizer **p_index,
                                           FaissIndex *quantizer, idx_t d, size_t nlist,
                                           FaissQuantizerType qt);
int faiss_IndexIVFScalarQuantizer_new_with_metric(FaissIndexIVFScalarQuantizer **p_index,
                                                  FaissIndex *quantizer, size_t d, size_t nlist,
                                                  FaissQuantizerType qt, FaissMetricType metric,
                                                  int encode_residual);
FAISS_DECLARE_GETTER(IndexIVFScalarQuantizer, size_t, nlist)
FAISS_DECLARE_GETTER_SETTER(IndexIVFScalarQuantizer, size_t, nprobe)
FAISS_DECLARE_GETTER(IndexIVFScalarQuantizer, FaissIndex *, quantizer)
FAISS_DECLARE_GETTER_SETTER(IndexIVFScalarQuantizer, int, own_fields)
int faiss_IndexIVFScalarQuantizer_add_core(FaissIndexIVFScalarQuantizer *index, idx_t n,
                                           const float *x, const idx_t *xids,
                                           const idx_t *precomputed_idx);
int faiss_IndexIVFScalarQuantizer_train_residual(FaissIndexIVFScalarQuantizer *index, idx_t n,
                                                 const float *x);

#ifdef __cplusplus
}
#endif

#endif
