/*
 * distances_c.c - FAISS's utils/distances_c.h: distances and norms of vectors
 * the program holds, computed here (no server is involved). FAISS uses BLAS
 * above a size threshold; these loops compute each distance directly, which
 * agrees with FAISS's results to float rounding. The BLAS tuning values are
 * kept, with FAISS's defaults, only so that programs setting them still build
 * and read back what they set.
 */
#include <faiss/c_api/utils/distances_c.h>

#include <math.h>
#include <stdatomic.h>

static atomic_int blas_threshold = 20;
static atomic_int blas_query_bs = 4096;
static atomic_int blas_database_bs = 1024;
static atomic_int min_k_reservoir = 100;

static float l2sqr(const float *x, const float *y, size_t d) {
    float s = 0;
    for (size_t i = 0; i < d; i++) {
        float t = x[i] - y[i];
        s += t * t;
    }
    return s;
}

static float inner(const float *x, const float *y, size_t d) {
    float s = 0;
    for (size_t i = 0; i < d; i++)
        s += x[i] * y[i];
    return s;
}

void faiss_pairwise_L2sqr(int64_t d, int64_t nq, const float *xq, int64_t nb, const float *xb,
                          float *dis, int64_t ldq, int64_t ldb, int64_t ldd) {
    if (nq <= 0 || nb <= 0 || d < 0)
        return;
    ldq = ldq == -1 ? d : ldq;
    ldb = ldb == -1 ? d : ldb;
    ldd = ldd == -1 ? nb : ldd;
    for (int64_t i = 0; i < nq; i++)
        for (int64_t j = 0; j < nb; j++)
            dis[i * ldd + j] = l2sqr(xq + i * ldq, xb + j * ldb, (size_t)d);
}

void faiss_pairwise_L2sqr_with_defaults(int64_t d, int64_t nq, const float *xq, int64_t nb,
                                        const float *xb, float *dis) {
    faiss_pairwise_L2sqr(d, nq, xq, nb, xb, dis, -1, -1, -1);
}

void faiss_fvec_inner_products_ny(float *ip, const float *x, const float *y, size_t d, size_t ny) {
    for (size_t j = 0; j < ny; j++)
        ip[j] = inner(x, y + j * d, d);
}

void faiss_fvec_L2sqr_ny(float *dis, const float *x, const float *y, size_t d, size_t ny) {
    for (size_t j = 0; j < ny; j++)
        dis[j] = l2sqr(x, y + j * d, d);
}

float faiss_fvec_norm_L2sqr(const float *x, size_t d) {
    return inner(x, x, d);
}

void faiss_fvec_norms_L2(float *norms, const float *x, size_t d, size_t nx) {
    for (size_t i = 0; i < nx; i++)
        norms[i] = sqrtf(inner(x + i * d, x + i * d, d));
}

void faiss_fvec_norms_L2sqr(float *norms, const float *x, size_t d, size_t nx) {
    for (size_t i = 0; i < nx; i++)
        norms[i] = inner(x + i * d, x + i * d, d);
}

void faiss_fvec_renorm_L2(size_t d, size_t nx, float *x) {
    for (size_t i = 0; i < nx; i++) {
        float *xi = x + i * d;
        float nr = inner(xi, xi, d);
        if (nr > 0) {
            float inv = (float)(1.0 / sqrtf(nr));
            for (size_t j = 0; j < d; j++)
                xi[j] *= inv;
        }
    }
}

void faiss_set_distance_compute_blas_threshold(int value) {
    blas_threshold = value;
}

int faiss_get_distance_compute_blas_threshold(void) {
    return blas_threshold;
}

void faiss_set_distance_compute_blas_query_bs(int value) {
    blas_query_bs = value;
}

int faiss_get_distance_compute_blas_query_bs(void) {
    return blas_query_bs;
}

void faiss_set_distance_compute_blas_database_bs(int value) {
    blas_database_bs = value;
}

int faiss_get_distance_compute_blas_database_bs(void) {
    return blas_database_bs;
}

void faiss_set_distance_compute_min_k_reservoir(int value) {
    min_k_reservoir = value;
}

int faiss_get_distance_compute_min_k_reservoir(void) {
    return min_k_reservoir;
}
