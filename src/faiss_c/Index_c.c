/*
 * Index_c.c - FAISS's Index_c.h: the calls every FaissIndex answers (train,
 * add, search, range search, remove, reconstruct), each a request to the
 * handle's server index. The binary indexes of IndexBinary_c.c take the same
 * paths through the fpx_fc_index_* helpers here, with bit vectors for floats.
 * Calls that need the index's internals in this process report so.
 */
#include "internal.h"

#include <faiss/c_api/Index_c.h>

#include <stdlib.h>
#include <string.h>

static void drop_caches(FaissIndex *ix) {
    free(ix->xb);
    ix->xb = NULL;
}

/* ---- the paths float and binary indexes share ---------------------------------------- */

/* A binary index (IndexBinary_c.c) is a FaissIndex handle too, so each
 * operation has one path for both; FPX_FC_BINARY picks libfaissproxy's call
 * for bit vectors (x packed uint8_t codes, d in bits, distances int32
 * Hamming) over the float one. */

int fpx_fc_index_train(FaissIndex *ix, idx_t n, const void *x, enum fpx_fc_vectors v) {
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    if ((v == FPX_FC_BINARY ? fpx_client_train_binary(c, ix->name, n, ix->d, x)
                            : fpx_client_train(c, ix->name, n, ix->d, x)) != 0)
        return fpx_fc_from_client(c);
    fpx_index_info info;
    if (fpx_client_get_index_info(c, ix->name, &info) != 0)
        return fpx_fc_from_client(c);
    ix->is_trained = info.is_trained;
    return 0;
}

int fpx_fc_index_add(FaissIndex *ix, idx_t n, const void *x, const idx_t *ids,
                     enum fpx_fc_vectors v) {
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    int64_t ntotal = -1;
    if ((v == FPX_FC_BINARY ? fpx_client_add_binary(c, ix->name, n, ix->d, x, ids, &ntotal)
                            : fpx_client_add(c, ix->name, n, ix->d, x, ids, NULL, &ntotal)) != 0) {
        if (ntotal >= 0) /* an add sent in parts failed midway: what went in */
            ix->ntotal = ntotal;
        return fpx_fc_from_client(c);
    }
    ix->ntotal = ntotal;
    drop_caches(ix);
    return 0;
}

int fpx_fc_index_search(const FaissIndex *ix, idx_t n, const void *x, idx_t k, void *distances,
                        idx_t *labels, enum fpx_fc_vectors v) {
    if (fpx_fc_is_multi(ix) && v == FPX_FC_FLOAT)
        return fpx_fc_multi_search(ix, n, x, k, distances, labels);
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    if (n == 0)
        return 0;
    if ((v == FPX_FC_BINARY
             ? fpx_client_search_binary(c, ix->name, n, ix->d, x, k, distances, labels)
             : fpx_client_search(c, ix->name, n, ix->d, x, k, NULL, distances, labels)) != 0)
        return fpx_fc_from_client(c);
    return 0;
}

int fpx_fc_index_assign(const FaissIndex *ix, idx_t n, const void *x, idx_t *labels, idx_t k,
                        enum fpx_fc_vectors v) {
    size_t dsize = v == FPX_FC_BINARY ? sizeof(int32_t) : sizeof(float);
    void *D = malloc(dsize * (size_t)(n * k > 0 ? n * k : 1));
    if (!D)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    int rc = fpx_fc_index_search(ix, n, x, k, D, labels, v);
    free(D);
    return rc;
}

/* Moves a range search's arrays (taken) into a RangeSearchResult. */
static int fill_range_result(FaissRangeSearchResult *result, idx_t n, int64_t *lims,
                             int64_t *labels, float *dist) {
    if (!result->lims && !(result->lims = calloc((size_t)n + 1, sizeof(size_t)))) {
        free(lims);
        free(labels);
        free(dist);
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    }
    for (idx_t i = 0; i <= n; i++)
        result->lims[i] = (size_t)lims[i];
    free(result->labels);
    free(result->distances);
    result->labels = labels;
    result->distances = dist;
    free(lims);
    return 0;
}

int fpx_fc_index_range_search(const FaissIndex *ix, idx_t n, const void *x, double radius,
                              FaissRangeSearchResult *result, enum fpx_fc_vectors v) {
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    if ((size_t)n != result->nq)
        return fpx_fc_error(FAISS_EXCEPT, "the RangeSearchResult is for %zu queries, not %lld",
                            result->nq, (long long)n);
    int64_t *lims;
    int64_t *labels;
    float *dist;
    if (v == FPX_FC_BINARY ? fpx_client_range_search_binary(c, ix->name, n, ix->d, x, (int)radius,
                                                            &lims, &labels, &dist)
                           : fpx_client_range_search(c, ix->name, n, ix->d, x, (float)radius, NULL,
                                                     &lims, &labels, &dist))
        return fpx_fc_from_client(c);
    return fill_range_result(result, n, lims, labels, dist);
}

int fpx_fc_index_reconstruct(const FaissIndex *ix, idx_t key, void *recons, enum fpx_fc_vectors v) {
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    if ((v == FPX_FC_BINARY ? fpx_client_reconstruct_binary(c, ix->name, key, ix->d, recons)
                            : fpx_client_reconstruct(c, ix->name, key, ix->d, recons)) != 0)
        return fpx_fc_from_client(c);
    return 0;
}

int fpx_fc_index_reconstruct_n(const FaissIndex *ix, idx_t i0, idx_t ni, void *recons,
                               enum fpx_fc_vectors v) {
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    if ((v == FPX_FC_BINARY ? fpx_client_reconstruct_n_binary(c, ix->name, i0, ni, ix->d, recons)
                            : fpx_client_reconstruct_n(c, ix->name, i0, ni, ix->d, recons)) != 0)
        return fpx_fc_from_client(c);
    return 0;
}

/* ---- FaissIndex ------------------------------------------------------------------------ */

void faiss_Index_free(FaissIndex *ix) {
    if (!ix)
        return;
    if (ix->name[0] && !ix->keep) {
        fpx_client *c = fpx_fc_client();
        if (c)
            fpx_client_delete_index(c, ix->name);
    }
    if (ix->own_fields)
        faiss_Index_free(ix->sub);
    /* FAISS's IndexPreTransform frees its transforms, and the containers
     * their members, only when they own them */
    for (size_t i = 0; ix->own_fields && i < ix->nchain; i++)
        faiss_VectorTransform_free(ix->chain[i]);
    for (size_t i = 0; ix->own_fields && i < ix->nsubs; i++)
        faiss_Index_free(ix->subs[i]);
    free(ix->chain);
    free(ix->subs);
    free(ix->xb);
    free(ix->ids);
    free(ix);
}

int faiss_Index_d(const FaissIndex *ix) {
    return ix->d;
}

int faiss_Index_is_trained(const FaissIndex *ix) {
    return ix->is_trained;
}

idx_t faiss_Index_ntotal(const FaissIndex *ix) {
    return ix->ntotal;
}

FaissMetricType faiss_Index_metric_type(const FaissIndex *ix) {
    return ix->metric;
}

int faiss_Index_verbose(const FaissIndex *ix) {
    return ix->verbose;
}

void faiss_Index_set_verbose(FaissIndex *ix, int v) {
    ix->verbose = v;
}

/* Whether FAISS's add_with_ids works for this class (IVF and IDMap do;
 * flat, HNSW, PQ... throw "not implemented"). */
static int takes_ids(const FaissIndex *ix) {
    return fpx_fc_is_idmap(ix) || ix->cls == FPX_CLS_IVF || ix->cls == FPX_CLS_IVFFLAT ||
           strstr(ix->desc, "IVF") != NULL;
}

int faiss_Index_train(FaissIndex *ix, idx_t n, const float *x) {
    if (fpx_fc_is_multi(ix))
        return fpx_fc_multi_train(ix, n, x);
    return fpx_fc_index_train(ix, n, x, FPX_FC_FLOAT);
}

static int add(FaissIndex *ix, idx_t n, const float *x, const idx_t *ids) {
    int rc = fpx_fc_index_add(ix, n, x, ids, FPX_FC_FLOAT);
    if (rc)
        return rc;
    if (ids && fpx_fc_is_idmap(ix) && n > 0) {
        idx_t *m = realloc(ix->ids, sizeof *m * (ix->nids + (size_t)n));
        if (!m)
            return fpx_fc_error(STD_EXCEPT, "out of memory");
        memcpy(m + ix->nids, ids, sizeof *m * (size_t)n);
        ix->ids = m;
        ix->nids += (size_t)n;
    }
    return 0;
}

int faiss_Index_add(FaissIndex *ix, idx_t n, const float *x) {
    if (fpx_fc_is_multi(ix))
        return fpx_fc_multi_add(ix, n, x, NULL);
    if (ix && fpx_fc_is_idmap(ix))
        return fpx_fc_error(FAISS_EXCEPT,
                            "add does not make sense with IndexIDMap, use add_with_ids");
    return add(ix, n, x, NULL);
}

int faiss_Index_add_with_ids(FaissIndex *ix, idx_t n, const float *x, const idx_t *xids) {
    if (fpx_fc_is_multi(ix))
        return fpx_fc_multi_add(ix, n, x, xids);
    if (ix && !takes_ids(ix))
        return fpx_fc_error(FAISS_EXCEPT, "add_with_ids not implemented for this type of index");
    return add(ix, n, x, xids);
}

int faiss_Index_search(const FaissIndex *ix, idx_t n, const float *x, idx_t k, float *distances,
                       idx_t *labels) {
    return fpx_fc_index_search(ix, n, x, k, distances, labels, FPX_FC_FLOAT);
}

int faiss_Index_assign(FaissIndex *ix, idx_t n, const float *x, idx_t *labels, idx_t k) {
    return fpx_fc_index_assign(ix, n, x, labels, k, FPX_FC_FLOAT);
}

int faiss_Index_range_search(const FaissIndex *ix, idx_t n, const float *x, float radius,
                             FaissRangeSearchResult *result) {
    if (fpx_fc_is_multi(ix))
        return fpx_fc_multi_refuse(ix, "range search not implemented");
    return fpx_fc_index_range_search(ix, n, x, radius, result, FPX_FC_FLOAT);
}

int faiss_Index_reset(FaissIndex *ix) {
    if (fpx_fc_is_multi(ix))
        return fpx_fc_multi_reset(ix);
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    if (fpx_client_reset(c, ix->name) != 0)
        return fpx_fc_from_client(c);
    ix->ntotal = 0;
    drop_caches(ix);
    ix->nids = 0;
    return 0;
}

int faiss_Index_remove_ids(FaissIndex *ix, const FaissIDSelector *sel, size_t *n_removed) {
    if (fpx_fc_is_multi(ix))
        return fpx_fc_multi_refuse(ix, "remove_ids not implemented for this type of index");
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    int64_t removed = 0;
    if (sel->is_range ? fpx_client_remove_range(c, ix->name, sel->imin, sel->imax, &removed)
                      : fpx_client_remove_ids(c, ix->name, sel->n, sel->ids, &removed))
        return fpx_fc_from_client(c);
    if (n_removed)
        *n_removed = (size_t)removed;
    ix->ntotal -= removed;
    drop_caches(ix);
    size_t j = 0;
    for (size_t i = 0; i < ix->nids; i++)
        if (!faiss_IDSelector_is_member(sel, ix->ids[i]))
            ix->ids[j++] = ix->ids[i];
    ix->nids = j;
    return 0;
}

int faiss_Index_reconstruct(const FaissIndex *ix, idx_t key, float *recons) {
    if (fpx_fc_is_multi(ix))
        return fpx_fc_multi_reconstruct_n(ix, key, 1, recons);
    return fpx_fc_index_reconstruct(ix, key, recons, FPX_FC_FLOAT);
}

int faiss_Index_reconstruct_n(const FaissIndex *ix, idx_t i0, idx_t ni, float *recons) {
    if (fpx_fc_is_multi(ix))
        return fpx_fc_multi_reconstruct_n(ix, i0, ni, recons);
    return fpx_fc_index_reconstruct_n(ix, i0, ni, recons, FPX_FC_FLOAT);
}

int faiss_Index_compute_residual(const FaissIndex *ix, const float *x, float *residual, idx_t key) {
    (void)ix, (void)x, (void)residual, (void)key;
    return fpx_fc_not_here("compute_residual");
}

int faiss_Index_compute_residual_n(const FaissIndex *ix, idx_t n, const float *x, float *residuals,
                                   const idx_t *keys) {
    (void)ix, (void)n, (void)x, (void)residuals, (void)keys;
    return fpx_fc_not_here("compute_residual_n");
}

int faiss_Index_sa_code_size(const FaissIndex *ix, size_t *size) {
    (void)ix, (void)size;
    return fpx_fc_not_here("sa_code_size");
}

int faiss_Index_sa_encode(const FaissIndex *ix, idx_t n, const float *x, uint8_t *bytes) {
    (void)ix, (void)n, (void)x, (void)bytes;
    return fpx_fc_not_here("sa_encode");
}

int faiss_Index_sa_decode(const FaissIndex *ix, idx_t n, const uint8_t *bytes, float *x) {
    (void)ix, (void)n, (void)bytes, (void)x;
    return fpx_fc_not_here("sa_decode");
}
