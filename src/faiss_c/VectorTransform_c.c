/*
 * VectorTransform_c.c - FAISS's VectorTransform_c.h. A transform here is the
 * set of parameters FAISS's constructor takes; it becomes part of a server
 * index's factory description when given to an IndexPreTransform, and the
 * server trains and applies it there. The description of each kind is the
 * factory's: PCA[W][R]<d_out> (eigen_power 0 or -0.5), RR<d_out>,
 * ITQ[<d_out>], OPQ<M>_<d_out>, Pad<d_out>, L2norm. A transform the factory
 * cannot express (another eigen power, OPQ iteration counts, a uniform
 * remap, a norm other than 2, ITQMatrix and CenteringTransform on their own)
 * is refused when it is put in an IndexPreTransform.
 *
 * Training or applying a transform in this process would need FAISS's
 * internals, so those calls fail with FAISS_EXCEPT; only the L2
 * normalization, plain arithmetic, is applied here.
 */
#include "internal.h"

#include <faiss/c_api/VectorTransform_c.h>
#include <faiss/c_api/utils/distances_c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int vt_new(FaissVectorTransform **p, enum fpx_fc_vt kind, int d_in, int d_out) {
    *p = NULL;
    if (d_in < 1 || d_out < 1)
        return fpx_fc_error(FAISS_EXCEPT, "a vector transform needs dimensions >= 1");
    FaissVectorTransform *vt = calloc(1, sizeof *vt);
    if (!vt)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    vt->kind = kind;
    vt->d_in = d_in;
    vt->d_out = d_out;
    *p = vt;
    return 0;
}

void faiss_VectorTransform_free(FaissVectorTransform *vt) {
    free(vt);
}

int faiss_VectorTransform_is_trained(const FaissVectorTransform *vt) {
    return vt->is_trained;
}

int faiss_VectorTransform_d_in(const FaissVectorTransform *vt) {
    return vt->d_in;
}

int faiss_VectorTransform_d_out(const FaissVectorTransform *vt) {
    return vt->d_out;
}

int faiss_VectorTransform_train(FaissVectorTransform *vt, idx_t n, const float *x) {
    (void)n, (void)x;
    if (vt && vt->kind == FPX_VT_NORM)
        return 0; /* nothing to learn, as in FAISS */
    return fpx_fc_not_here("VectorTransform_train (train the IndexPreTransform holding it)");
}

/* Applies the transforms that need no training data: L2 normalization. */
static int apply_here(const FaissVectorTransform *vt, idx_t n, const float *x, float *xt) {
    if (!vt)
        return fpx_fc_error(FAISS_EXCEPT, "transform is NULL");
    if (vt->kind != FPX_VT_NORM)
        return fpx_fc_not_here("VectorTransform_apply (search the IndexPreTransform holding it)");
    if (vt->norm != 2.0f)
        return fpx_fc_error(FAISS_EXCEPT, "not implemented");
    memmove(xt, x, sizeof *x * (size_t)n * (size_t)vt->d_in);
    faiss_fvec_renorm_L2((size_t)vt->d_in, (size_t)n, xt);
    return 0;
}

float *faiss_VectorTransform_apply(const FaissVectorTransform *vt, idx_t n, const float *x) {
    float *xt = vt && n >= 0 ? malloc(sizeof *xt * ((size_t)n * (size_t)vt->d_out + 1)) : NULL;
    if (vt && n >= 0 && !xt) {
        fpx_fc_error(STD_EXCEPT, "out of memory");
        return NULL;
    }
    if (apply_here(vt, n, x, xt) != 0) {
        free(xt);
        return NULL;
    }
    return xt;
}

void faiss_VectorTransform_apply_noalloc(const FaissVectorTransform *vt, idx_t n, const float *x,
                                         float *xt) {
    apply_here(vt, n, x, xt);
}

void faiss_VectorTransform_reverse_transform(const FaissVectorTransform *vt, idx_t n,
                                             const float *xt, float *x) {
    (void)vt, (void)n, (void)xt, (void)x;
    fpx_fc_not_here("VectorTransform_reverse_transform");
}

void faiss_LinearTransform_free(FaissLinearTransform *vt) {
    faiss_VectorTransform_free(vt);
}

void faiss_LinearTransform_transform_transpose(const FaissLinearTransform *vt, idx_t n,
                                               const float *y, float *x) {
    (void)vt, (void)n, (void)y, (void)x;
    fpx_fc_not_here("LinearTransform_transform_transpose");
}

void faiss_LinearTransform_set_is_orthonormal(FaissLinearTransform *vt) {
    (void)vt;
    fpx_fc_not_here("LinearTransform_set_is_orthonormal");
}

int faiss_LinearTransform_have_bias(const FaissLinearTransform *vt) {
    return vt->kind == FPX_VT_PCA; /* FAISS's PCA subtracts the mean */
}

int faiss_LinearTransform_is_orthonormal(const FaissLinearTransform *vt) {
    (void)vt;
    return 0; /* known once trained, and training happens on the server */
}

#define FREE_AS_TRANSFORM(clazz)                                                                   \
    void faiss_##clazz##_free(Faiss##clazz *vt) {                                                  \
        faiss_VectorTransform_free(vt);                                                            \
    }

FREE_AS_TRANSFORM(RandomRotationMatrix)
FREE_AS_TRANSFORM(PCAMatrix)
FREE_AS_TRANSFORM(ITQMatrix)
FREE_AS_TRANSFORM(ITQTransform)
FREE_AS_TRANSFORM(OPQMatrix)
FREE_AS_TRANSFORM(RemapDimensionsTransform)
FREE_AS_TRANSFORM(NormalizationTransform)
FREE_AS_TRANSFORM(CenteringTransform)

int faiss_RandomRotationMatrix_new_with(FaissRandomRotationMatrix **p, int d_in, int d_out) {
    return vt_new(p, FPX_VT_RR, d_in, d_out);
}

int faiss_PCAMatrix_new_with(FaissPCAMatrix **p, int d_in, int d_out, float eigen_power,
                             int random_rotation) {
    int rc = vt_new(p, FPX_VT_PCA, d_in, d_out);
    if (rc == 0) {
        (*p)->eigen_power = eigen_power;
        (*p)->random_rotation = random_rotation;
    }
    return rc;
}

float faiss_PCAMatrix_eigen_power(const FaissPCAMatrix *vt) {
    return vt->eigen_power;
}

int faiss_PCAMatrix_random_rotation(const FaissPCAMatrix *vt) {
    return vt->random_rotation;
}

int faiss_ITQMatrix_new_with(FaissITQMatrix **p, int d) {
    return vt_new(p, FPX_VT_ITQ_MATRIX, d, d);
}

int faiss_ITQTransform_new_with(FaissITQTransform **p, int d_in, int d_out, int do_pca) {
    if (!do_pca && d_in != d_out)
        return fpx_fc_error(FAISS_EXCEPT, "Error: 'do_pca || d_in == d_out' failed");
    int rc = vt_new(p, FPX_VT_ITQ, d_in, d_out);
    if (rc == 0)
        (*p)->do_pca = do_pca;
    return rc;
}

int faiss_ITQTransform_do_pca(const FaissITQTransform *vt) {
    return vt->do_pca;
}

int faiss_OPQMatrix_new_with(FaissOPQMatrix **p, int d, int M, int d2) {
    int rc = vt_new(p, FPX_VT_OPQ, d, d2 == -1 ? d : d2);
    if (rc == 0) {
        (*p)->M = M;
        (*p)->niter = 50; /* FAISS's defaults, the only ones the factory builds */
        (*p)->niter_pq = 4;
    }
    return rc;
}

int faiss_OPQMatrix_verbose(const FaissOPQMatrix *vt) {
    return vt->verbose;
}

void faiss_OPQMatrix_set_verbose(FaissOPQMatrix *vt, int v) {
    vt->verbose = v;
}

int faiss_OPQMatrix_niter(const FaissOPQMatrix *vt) {
    return vt->niter;
}

void faiss_OPQMatrix_set_niter(FaissOPQMatrix *vt, int v) {
    vt->niter = v;
}

int faiss_OPQMatrix_niter_pq(const FaissOPQMatrix *vt) {
    return vt->niter_pq;
}

void faiss_OPQMatrix_set_niter_pq(FaissOPQMatrix *vt, int v) {
    vt->niter_pq = v;
}

int faiss_RemapDimensionsTransform_new_with(FaissRemapDimensionsTransform **p, int d_in, int d_out,
                                            int uniform) {
    int rc = vt_new(p, FPX_VT_REMAP, d_in, d_out);
    if (rc == 0) {
        (*p)->uniform = uniform;
        (*p)->is_trained = 1;
    }
    return rc;
}

int faiss_NormalizationTransform_new_with(FaissNormalizationTransform **p, int d, float norm) {
    int rc = vt_new(p, FPX_VT_NORM, d, d);
    if (rc == 0) {
        (*p)->norm = norm;
        (*p)->is_trained = 1;
    }
    return rc;
}

float faiss_NormalizationTransform_norm(const FaissNormalizationTransform *vt) {
    return vt->norm;
}

int faiss_CenteringTransform_new_with(FaissCenteringTransform **p, int d) {
    return vt_new(p, FPX_VT_CENTER, d, d);
}

int fpx_fc_vt_desc(const FaissVectorTransform *vt, char *out, size_t cap) {
    if (!vt)
        return fpx_fc_error(FAISS_EXCEPT, "transform is NULL");
    const char *why = NULL;
    switch (vt->kind) {
    case FPX_VT_PCA:
        if (vt->eigen_power != 0.0f && vt->eigen_power != -0.5f)
            why = "a PCAMatrix with an eigen_power other than 0 or -0.5";
        else
            snprintf(out, cap, "PCA%s%s%d", vt->eigen_power != 0.0f ? "W" : "",
                     vt->random_rotation ? "R" : "", vt->d_out);
        break;
    case FPX_VT_RR:
        snprintf(out, cap, "RR%d", vt->d_out);
        break;
    case FPX_VT_ITQ:
        if (vt->do_pca)
            snprintf(out, cap, "ITQ%d", vt->d_out);
        else
            snprintf(out, cap, "ITQ");
        break;
    case FPX_VT_OPQ:
        if (vt->niter != 50 || vt->niter_pq != 4)
            why = "an OPQMatrix with niter or niter_pq other than 50 and 4";
        else
            snprintf(out, cap, "OPQ%d_%d", vt->M, vt->d_out);
        break;
    case FPX_VT_REMAP:
        if (vt->uniform || vt->d_out < vt->d_in)
            why = "a RemapDimensionsTransform other than zero padding (uniform = 0, d_out >= d_in)";
        else
            snprintf(out, cap, "Pad%d", vt->d_out);
        break;
    case FPX_VT_NORM:
        if (vt->norm != 2.0f)
            why = "a NormalizationTransform with a norm other than 2";
        else
            snprintf(out, cap, "L2norm");
        break;
    case FPX_VT_ITQ_MATRIX:
        why = "an ITQMatrix on its own (use ITQTransform)";
        break;
    case FPX_VT_CENTER:
        why = "a CenteringTransform";
        break;
    }
    if (why)
        return fpx_fc_error(FAISS_EXCEPT,
                            "%s is not served by faiss-proxy: its server builds the transforms "
                            "FAISS's index_factory names (PCA, PCAW, PCAR, RR, ITQ, OPQ, Pad, "
                            "L2norm)",
                            why);
    return 0;
}
