/*
 * IndexScalarQuantizer_c.c - FAISS's IndexScalarQuantizer_c.h:
 * IndexScalarQuantizer and IndexIVFScalarQuantizer as server "SQ..." and
 * "IVF<nlist>,SQ..." indexes. QT_8bit, QT_4bit, QT_6bit and QT_fp16 carry
 * the factory's names (SQ8, SQ4, SQ6, SQfp16); QT_8bit_uniform,
 * QT_4bit_uniform and QT_8bit_direct, which the factory cannot name, the
 * server's (SQ8_uniform, SQ4_uniform, SQ8_direct). The IVF form is what the
 * factory builds: a flat coarse quantizer of the same metric and residual
 * encoding; the quantizer handle given is kept for the getter only.
 */
#include "internal.h"

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/IndexScalarQuantizer_c.h>

#include <stdio.h>

/* The description of a quantizer type; NULL for a value FAISS does not have. */
static const char *qt_name(FaissQuantizerType qt) {
    switch (qt) {
    case QT_8bit:
        return "SQ8";
    case QT_4bit:
        return "SQ4";
    case QT_8bit_uniform:
        return "SQ8_uniform";
    case QT_4bit_uniform:
        return "SQ4_uniform";
    case QT_fp16:
        return "SQfp16";
    case QT_8bit_direct:
        return "SQ8_direct";
    case QT_6bit:
        return "SQ6";
    }
    return NULL;
}

int faiss_IndexScalarQuantizer_new(FaissIndexScalarQuantizer **p) {
    *p = fpx_fc_handle_new(FPX_CLS_SQ, 0, METRIC_L2, "");
    return *p ? 0 : fpx_fc_error(STD_EXCEPT, "out of memory");
}

int faiss_IndexScalarQuantizer_new_with(FaissIndexScalarQuantizer **p, idx_t d,
                                        FaissQuantizerType qt, FaissMetricType metric) {
    *p = NULL;
    const char *name = qt_name(qt);
    if (!name)
        return fpx_fc_error(FAISS_EXCEPT, "unknown scalar quantizer type %d", (int)qt);
    return fpx_fc_make_index(p, FPX_CLS_SQ, (int)d, metric, name);
}

FPX_FC_CAST(IndexScalarQuantizer, ix->cls == FPX_CLS_SQ)
FPX_FC_FREE_AS_INDEX(IndexScalarQuantizer)

FPX_FC_CAST(IndexIVFScalarQuantizer, ix->cls == FPX_CLS_IVFSQ)
FPX_FC_FREE_AS_INDEX(IndexIVFScalarQuantizer)

int faiss_IndexIVFScalarQuantizer_new(FaissIndexIVFScalarQuantizer **p) {
    *p = fpx_fc_handle_new(FPX_CLS_IVFSQ, 0, METRIC_L2, "");
    return *p ? 0 : fpx_fc_error(STD_EXCEPT, "out of memory");
}

int faiss_IndexIVFScalarQuantizer_new_with_metric(FaissIndexIVFScalarQuantizer **p,
                                                  FaissIndex *quantizer, size_t d, size_t nlist,
                                                  FaissQuantizerType qt, FaissMetricType metric,
                                                  int encode_residual) {
    *p = NULL;
    const char *name = qt_name(qt);
    if (!name)
        return fpx_fc_error(FAISS_EXCEPT, "unknown scalar quantizer type %d", (int)qt);
    if (!encode_residual)
        return fpx_fc_error(FAISS_EXCEPT,
                            "IndexIVFScalarQuantizer with encode_residual = 0 is not served by "
                            "faiss-proxy: its server builds IVF scalar quantizers as FAISS's "
                            "index_factory does, encoding residuals");
    char desc[64];
    snprintf(desc, sizeof desc, "IVF%zu,%s", nlist, name);
    int rc = fpx_fc_make_index(p, FPX_CLS_IVFSQ, (int)d, metric, desc);
    if (rc == 0) {
        (*p)->nlist = nlist;
        (*p)->sub = quantizer;
    }
    return rc;
}

int faiss_IndexIVFScalarQuantizer_new_with(FaissIndexIVFScalarQuantizer **p, FaissIndex *quantizer,
                                           idx_t d, size_t nlist, FaissQuantizerType qt) {
    return faiss_IndexIVFScalarQuantizer_new_with_metric(p, quantizer, (size_t)d, nlist, qt,
                                                         METRIC_L2, 1);
}

size_t faiss_IndexIVFScalarQuantizer_nlist(const FaissIndexIVFScalarQuantizer *ix) {
    return ix->nlist;
}

size_t faiss_IndexIVFScalarQuantizer_nprobe(const FaissIndexIVFScalarQuantizer *ix) {
    return ix->nprobe;
}

void faiss_IndexIVFScalarQuantizer_set_nprobe(FaissIndexIVFScalarQuantizer *ix, size_t v) {
    faiss_IndexIVF_set_nprobe(ix, v);
}

FaissIndex *faiss_IndexIVFScalarQuantizer_quantizer(const FaissIndexIVFScalarQuantizer *ix) {
    return ix->sub;
}

int faiss_IndexIVFScalarQuantizer_own_fields(const FaissIndexIVFScalarQuantizer *ix) {
    return ix->own_fields;
}

void faiss_IndexIVFScalarQuantizer_set_own_fields(FaissIndexIVFScalarQuantizer *ix, int v) {
    ix->own_fields = v;
}

int faiss_IndexIVFScalarQuantizer_add_core(FaissIndexIVFScalarQuantizer *ix, idx_t n,
                                           const float *x, const idx_t *xids,
                                           const idx_t *precomputed_idx) {
    (void)precomputed_idx; /* the server assigns lists itself */
    return xids ? faiss_Index_add_with_ids(ix, n, x, xids) : faiss_Index_add(ix, n, x);
}

int faiss_IndexIVFScalarQuantizer_train_residual(FaissIndexIVFScalarQuantizer *ix, idx_t n,
                                                 const float *x) {
    (void)ix, (void)n, (void)x;
    return fpx_fc_not_here("IndexIVFScalarQuantizer_train_residual");
}
