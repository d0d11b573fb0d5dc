/*
 * IndexFlat_c.c - FAISS's IndexFlat_c.h: the flat indexes (L2, inner
 * product) as server "Flat" indexes, their stored vectors read back for
 * faiss_IndexFlat_xb, and IndexRefineFlat around a base index. IndexFlat1D
 * has no factory description and is refused.
 */
#include "internal.h"

#include <faiss/c_api/IndexFlat_c.h>

#include <stdio.h>
#include <stdlib.h>

static int flat_new(FaissIndex **p, enum fpx_fc_cls cls, idx_t d, FaissMetricType metric) {
    if (d <= 0) { /* FAISS's default constructor: an index of dimension 0 */
        *p = fpx_fc_handle_new(cls, 0, metric, "Flat");
        return *p ? 0 : fpx_fc_error(STD_EXCEPT, "out of memory");
    }
    return fpx_fc_make_index(p, cls, (int)d, metric, "Flat");
}

int faiss_IndexFlat_new(FaissIndexFlat **p) {
    return flat_new(p, FPX_CLS_FLAT, 0, METRIC_L2);
}

int faiss_IndexFlat_new_with(FaissIndexFlat **p, idx_t d, FaissMetricType metric) {
    return flat_new(p, FPX_CLS_FLAT, d, metric);
}

int faiss_IndexFlatL2_new(FaissIndexFlatL2 **p) {
    return flat_new(p, FPX_CLS_FLATL2, 0, METRIC_L2);
}

int faiss_IndexFlatL2_new_with(FaissIndexFlatL2 **p, idx_t d) {
    return flat_new(p, FPX_CLS_FLATL2, d, METRIC_L2);
}

int faiss_IndexFlatIP_new(FaissIndexFlatIP **p) {
    return flat_new(p, FPX_CLS_FLATIP, 0, METRIC_INNER_PRODUCT);
}

int faiss_IndexFlatIP_new_with(FaissIndexFlatIP **p, idx_t d) {
    return flat_new(p, FPX_CLS_FLATIP, d, METRIC_INNER_PRODUCT);
}

void faiss_IndexFlat_xb(FaissIndexFlat *ix, float **p_xb, size_t *p_size) {
    *p_xb = NULL;
    *p_size = 0;
    fpx_client *c = NULL;
    if (fpx_fc_need(ix, &c))
        return;
    free(ix->xb);
    size_t n = (size_t)ix->ntotal * (size_t)ix->d;
    ix->xb = malloc(sizeof(float) * (n ? n : 1));
    if (!ix->xb) {
        fpx_fc_error(STD_EXCEPT, "out of memory");
        return;
    }
    if (ix->ntotal && fpx_client_reconstruct_n(c, ix->name, 0, ix->ntotal, ix->d, ix->xb)) {
        fpx_fc_from_client(c);
        free(ix->xb);
        ix->xb = NULL;
        return;
    }
    *p_xb = ix->xb;
    *p_size = n;
}

int faiss_IndexFlat_compute_distance_subset(FaissIndex *ix, idx_t n, const float *x, idx_t k,
                                            float *distances, const idx_t *labels) {
    /* distances to the stored vectors labels[i*k + j], computed from their
     * reconstruction (exact on flat indexes) */
    float *v = malloc(sizeof(float) * (size_t)(ix->d > 0 ? ix->d : 1));
    if (!v)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    for (idx_t i = 0; i < n; i++) {
        for (idx_t j = 0; j < k; j++) {
            idx_t l = labels[i * k + j];
            if (l < 0)
                continue;
            int rc = faiss_Index_reconstruct(ix, l, v);
            if (rc) {
                free(v);
                return rc;
            }
            float s = 0;
            const float *q = x + i * ix->d;
            for (int t = 0; t < ix->d; t++)
                s += ix->metric == METRIC_L2 ? (q[t] - v[t]) * (q[t] - v[t]) : q[t] * v[t];
            distances[i * k + j] = s;
        }
    }
    free(v);
    return 0;
}

FPX_FC_CAST(IndexFlat, ix->cls == FPX_CLS_FLAT || ix->cls == FPX_CLS_FLATL2 ||
                           ix->cls == FPX_CLS_FLATIP || ix->cls == FPX_CLS_FLAT1D)
FPX_FC_CAST(IndexFlatL2, ix->cls == FPX_CLS_FLATL2)
FPX_FC_CAST(IndexFlatIP, ix->cls == FPX_CLS_FLATIP)
FPX_FC_CAST(IndexFlat1D, ix->cls == FPX_CLS_FLAT1D)
FPX_FC_CAST(IndexRefineFlat, ix->cls == FPX_CLS_REFINEFLAT)

FPX_FC_FREE_AS_INDEX(IndexFlat)
FPX_FC_FREE_AS_INDEX(IndexFlatL2)
FPX_FC_FREE_AS_INDEX(IndexFlatIP)
FPX_FC_FREE_AS_INDEX(IndexFlat1D)
FPX_FC_FREE_AS_INDEX(IndexRefineFlat)

int faiss_IndexFlat1D_new(FaissIndexFlat1D **p) {
    *p = NULL;
    return fpx_fc_error(FAISS_EXCEPT, "IndexFlat1D has no factory description and is not served "
                                      "by faiss-proxy");
}

int faiss_IndexFlat1D_new_with(FaissIndexFlat1D **p, int continuous_update) {
    (void)continuous_update;
    return faiss_IndexFlat1D_new(p);
}

int faiss_IndexFlat1D_update_permutation(FaissIndexFlat1D *ix) {
    (void)ix;
    return 0;
}

int faiss_IndexRefineFlat_new(FaissIndexRefineFlat **p, FaissIndex *base) {
    *p = NULL;
    if (!base || !base->desc[0])
        return fpx_fc_error(FAISS_EXCEPT, "base index is NULL");
    if (base->ntotal != 0)
        return fpx_fc_error(FAISS_EXCEPT,
                            "faiss-proxy builds IndexRefineFlat around an empty base");
    char desc[256];
    if (snprintf(desc, sizeof desc, "%s,RFlat", base->desc) >= (int)sizeof desc)
        return fpx_fc_error(FAISS_EXCEPT, "description too long");
    int rc = fpx_fc_make_index(p, FPX_CLS_REFINEFLAT, base->d, base->metric, desc);
    if (rc == 0)
        (*p)->sub = base;
    return rc;
}

int faiss_IndexRefineFlat_own_fields(const FaissIndexRefineFlat *ix) {
    return ix->own_fields;
}

void faiss_IndexRefineFlat_set_own_fields(FaissIndexRefineFlat *ix, int v) {
    ix->own_fields = v;
}

float faiss_IndexRefineFlat_k_factor(const FaissIndexRefineFlat *ix) {
    return ix->k_factor;
}

void faiss_IndexRefineFlat_set_k_factor(FaissIndexRefineFlat *ix, float v) {
    fpx_fc_set_param(ix, "k_factor", v);
}
