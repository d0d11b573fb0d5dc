/*
 * faiss/c_api/utils/distances_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header
 * of the same name: distances and norms between vectors held by the program.
 * Plain local arithmetic (no server involved); the BLAS tuning knobs are kept
 * for source compatibility and change nothing but what their getters return.
 */
#ifndef FAISSPROXY_DISTANCES_C_H
#define FAISSPROXY_DISTANCES_C_H

#include <stdint.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dis[i * ldd + j] = squared L2 distance between xq row i and xb row j; the
 * ld* are row strides in floats, -1 for a packed matrix. */
void faiss_pairwise_L2sqr(int64_t d, int64_t nq, const float *xq, int64_t nb, const float *xb,
                          float *dis, int64_t ldq, int64_t ldb, int64_t ldd);
void faiss_pairwise_L2sqr_with_defaults(int64_t d, int64_t nq, const float *xq, int64_t nb,
                                        const float *xb, float *dis);

/* ip[j] = <x, y_j> and dis[j] = |x - y_j|^2 for ny vectors y. */
void faiss_fvec_inner_products_ny(float *ip, const float *x, const float *y, size_t d, size_t ny);
void faiss_fvec_L2sqr_ny(float *dis, const float *x, const float *y, size_t d, size_t ny);

float faiss_fvec_norm_L2sqr(const float *x, size_t d);
void faiss_fvec_norms_L2(float *norms, const float *x, size_t d, size_t nx);
void faiss_fvec_norms_L2sqr(float *norms, const float *x, size_t d, size_t nx);
/* Scales each of the nx vectors to unit L2 norm (a zero vector stays zero). */
void faiss_fvec_renorm_L2(size_t d, size_t nx, float *x);

void faiss_set_distance_compute_blas_threshold(int value);
int faiss_get_distance_compute_blas_threshold(void);
void faiss_set_distance_compute_blas_query_bs(int value);
int faiss_get_distance_compute_blas_query_bs(void);
void faiss_set_distance_compute_blas_database_bs(int value);
int faiss_get_distance_compute_blas_database_bs(void);
void faiss_set_distance_compute_min_k_reservoir(int value);
int faiss_get_distance_compute_min_k_reservoir(void);

#ifdef __cplusplus
}
#endif

#endif
