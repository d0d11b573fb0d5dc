/*
 * IndexIVFFlat_c.c - FAISS's IndexIVFFlat_c.h: an IVF index with flat lists
 * as a server "IVF<nlist>,Flat" index. The quantizer handle is kept for
 * faiss_IndexIVFFlat_quantizer; the server trains and uses its own.
 */
#include "internal.h"

#include <faiss/c_api/IndexIVFFlat_c.h>

#include <stdio.h>

static int ivf_new(FaissIndexIVFFlat **p, FaissIndex *quantizer, size_t d, size_t nlist,
                   FaissMetricType metric) {
    char desc[64];
    snprintf(desc, sizeof desc, "IVF%zu,Flat", nlist);
    int rc = fpx_fc_make_index(p, FPX_CLS_IVFFLAT, (int)d, metric, desc);
    if (rc == 0) {
        (*p)->nlist = nlist;
        (*p)->sub = quantizer;
    }
    return rc;
}

int faiss_IndexIVFFlat_new(FaissIndexIVFFlat **p) {
    *p = fpx_fc_handle_new(FPX_CLS_IVFFLAT, 0, METRIC_L2, "");
    return *p ? 0 : fpx_fc_error(STD_EXCEPT, "out of memory");
}

int faiss_IndexIVFFlat_new_with(FaissIndexIVFFlat **p, FaissIndex *quantizer, size_t d,
                                size_t nlist) {
    return ivf_new(p, quantizer, d, nlist, METRIC_L2);
}

int faiss_IndexIVFFlat_new_with_metric(FaissIndexIVFFlat **p, FaissIndex *quantizer, size_t d,
                                       size_t nlist, FaissMetricType metric) {
    return ivf_new(p, quantizer, d, nlist, metric);
}

FPX_FC_CAST(IndexIVFFlat, ix->cls == FPX_CLS_IVFFLAT)

FPX_FC_FREE_AS_INDEX(IndexIVFFlat)

int faiss_IndexIVFFlat_add_core(FaissIndexIVFFlat *ix, idx_t n, const float *x, const idx_t *xids,
                                const int64_t *precomputed_idx) {
    (void)precomputed_idx; /* the server assigns lists itself */
    return xids ? faiss_Index_add_with_ids(ix, n, x, xids) : faiss_Index_add(ix, n, x);
}

int faiss_IndexIVFFlat_update_vectors(FaissIndexIVFFlat *ix, int nv, idx_t *idx, const float *v) {
    (void)ix, (void)nv, (void)idx, (void)v;
    return fpx_fc_not_here("update_vectors");
}

size_t faiss_IndexIVFFlat_nlist(const FaissIndexIVFFlat *ix) {
    return ix->nlist;
}

size_t faiss_IndexIVFFlat_nprobe(const FaissIndexIVFFlat *ix) {
    return ix->nprobe;
}

void faiss_IndexIVFFlat_set_nprobe(FaissIndexIVFFlat *ix, size_t v) {
    faiss_IndexIVF_set_nprobe(ix, v);
}

FaissIndex *faiss_IndexIVFFlat_quantizer(const FaissIndexIVFFlat *ix) {
    return ix->sub;
}

char faiss_IndexIVFFlat_quantizer_trains_alone(const FaissIndexIVFFlat *ix) {
    (void)ix;
    return 0;
}

int faiss_IndexIVFFlat_own_fields(const FaissIndexIVFFlat *ix) {
    return ix->own_fields;
}

void faiss_IndexIVFFlat_set_own_fields(FaissIndexIVFFlat *ix, int v) {
    ix->own_fields = v;
}
