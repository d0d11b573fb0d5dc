/*
 * program_c.c - a program written against FAISS's C API, and nothing else:
 * it compiles unchanged against FAISS's own c_api headers. Linked with
 * faiss-proxy's libfaiss_c it runs against a server; tests/integration/
 * test_faiss_c.py computes the same lines with in-process FAISS and compares.
 *
 * usage: program_c DIR   (DIR holds xb.bin, xq.bin, meta.txt "n nq d", and
 *                         ivf.index written by in-process FAISS; the program
 *                         writes flat.index there)
 * Prints one line per result; exit status 0 when every call succeeded that
 * should have.
 *
 *        program_c --more DIR           the classes of IndexScalarQuantizer_c.h,
 *                                       IndexLSH_c.h, IndexPreTransform_c.h,
 *                                       VectorTransform_c.h, IndexShards_c.h,
 *                                       IndexReplicas_c.h and utils/distances_c.h
 *                                       on the same data (test_faiss_c.py)
 *
 *        program_c --lease-wait READY   makes two indexes, creates the file
 *                                       READY, then waits to be killed (the
 *                                       test of leases: test_leases.py)
 */
#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexBinary_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/IndexLSH_c.h>
#include <faiss/c_api/IndexPreTransform_c.h>
#include <faiss/c_api/IndexReplicas_c.h>
#include <faiss/c_api/IndexScalarQuantizer_c.h>
#include <faiss/c_api/IndexShards_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/VectorTransform_c.h>
#include <faiss/c_api/clone_index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#include <faiss/c_api/utils/distances_c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define K 5

#define TRY(call)                                                                                  \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_) {                                                                                 \
            fprintf(stderr, "%s:%d: %s failed (%d): %s\n", __FILE__, __LINE__, #call, rc_,         \
                    faiss_get_last_error());                                                       \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static float *load(const char *dir, const char *name, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    float *x = malloc(n * sizeof *x);
    if (!f || !x || fread(x, sizeof *x, n, f) != n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    return x;
}

static void print_search(const char *tag, FaissIndex *ix, int nq, const float *xq, int print_d) {
    float D[64 * K];
    idx_t I[64 * K];
    TRY(faiss_Index_search(ix, nq, xq, K, D, I));
    for (int q = 0; q < nq; q++) {
        printf("%s q%d I", tag, q);
        for (int j = 0; j < K; j++)
            printf(" %lld", (long long)I[q * K + j]);
        if (print_d) {
            printf(" D");
            for (int j = 0; j < K; j++)
                printf(" %.5f", D[q * K + j]);
        }
        printf("\n");
    }
}

/* Makes indexes the way a program does, says so, and waits to be killed:
 * what it made must go once it is dead and its leases lapse. */
static int lease_wait(const char *ready) {
    FaissIndexFlatL2 *flat = NULL;
    FaissIndex *hnsw = NULL;
    float x[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 8};
    TRY(faiss_IndexFlatL2_new_with(&flat, 4));
    TRY(faiss_Index_add(flat, 2, x));
    TRY(faiss_index_factory(&hnsw, 4, "HNSW8", METRIC_L2));
    FILE *f = fopen(ready, "w");
    if (!f || fclose(f) != 0)
        return 2;
    for (int i = 0; i < 600; i++) /* bounded: the test kills it long before */
        sleep(1);
    return 0;
}

/* Says whether a call failed with FAISS_EXCEPT and a message holding `word`. */
static void print_refusal(const char *tag, int rc, const char *word) {
    const char *msg = faiss_get_last_error();
    printf("%s rc %d says %d\n", tag, rc == FAISS_EXCEPT, msg && strstr(msg, word) != NULL);
}

/* The classes of the remaining headers, each trained, filled and searched
 * as in-process FAISS would be, printed for test_faiss_c.py to compare. */
static int more(int n, int nq, int d, const float *xb, const float *xq) {
    if (nq > 6 || d > 256)
        return 2; /* the buffers below are sized for the test data */
    char tag[64];
    /* scalar quantizers: every type, flat and (two of them) under IVF */
    for (int qt = QT_8bit; qt <= QT_6bit; qt++) {
        FaissIndexScalarQuantizer *sq = NULL;
        TRY(faiss_IndexScalarQuantizer_new_with(&sq, d, (FaissQuantizerType)qt, METRIC_L2));
        printf("sq%d trained %d cast %d\n", qt, faiss_Index_is_trained(sq),
               faiss_IndexScalarQuantizer_cast(sq) != NULL);
        TRY(faiss_Index_train(sq, n, xb));
        TRY(faiss_Index_add(sq, n, xb));
        snprintf(tag, sizeof tag, "sq%d", qt);
        print_search(tag, sq, nq, xq, 1);
        faiss_IndexScalarQuantizer_free(sq);
    }
    int ivf_qts[2] = {QT_8bit, QT_4bit_uniform};
    for (int i = 0; i < 2; i++) {
        FaissIndexFlatL2 *q = NULL;
        FaissIndexIVFScalarQuantizer *ivf = NULL;
        TRY(faiss_IndexFlatL2_new_with(&q, d));
        TRY(faiss_IndexIVFScalarQuantizer_new_with(&ivf, q, d, 4, (FaissQuantizerType)ivf_qts[i]));
        TRY(faiss_Index_train(ivf, n, xb));
        TRY(faiss_Index_add(ivf, n, xb));
        faiss_IndexIVFScalarQuantizer_set_nprobe(ivf, 2);
        printf("ivfsq%d nlist %zu nprobe %zu casts %d %d\n", ivf_qts[i],
               faiss_IndexIVFScalarQuantizer_nlist(ivf), faiss_IndexIVFScalarQuantizer_nprobe(ivf),
               faiss_IndexIVFScalarQuantizer_cast(ivf) != NULL, faiss_IndexIVF_cast(ivf) != NULL);
        snprintf(tag, sizeof tag, "ivfsq%d", ivf_qts[i]);
        print_search(tag, ivf, nq, xq, 1);
        faiss_IndexIVFScalarQuantizer_free(ivf);
        faiss_Index_free(q);
    }
    FaissIndexIVFScalarQuantizer *nores = NULL;
    print_refusal(
        "ivfsq nores",
        faiss_IndexIVFScalarQuantizer_new_with_metric(&nores, NULL, d, 4, QT_8bit, METRIC_L2, 0),
        "not served");

    /* LSH: FAISS's defaults with twice d bits, then d bits with trained thresholds */
    FaissIndexLSH *lsh = NULL, *lsht = NULL;
    TRY(faiss_IndexLSH_new(&lsh, d, 2 * d));
    TRY(faiss_IndexLSH_new_with_options(&lsht, d, d, 0, 1));
    FaissIndexLSH *both[2] = {lsh, lsht};
    for (int i = 0; i < 2; i++) {
        printf("lsh%d nbits %d code_size %d rotate %d thresholds %d\n", i,
               faiss_IndexLSH_nbits(both[i]), faiss_IndexLSH_code_size(both[i]),
               faiss_IndexLSH_rotate_data(both[i]), faiss_IndexLSH_train_thresholds(both[i]));
        TRY(faiss_Index_train(both[i], n, xb));
        TRY(faiss_Index_add(both[i], n, xb));
        snprintf(tag, sizeof tag, "lsh%d", i);
        print_search(tag, both[i], nq, xq, 1);
        faiss_IndexLSH_free(both[i]);
    }

    /* IndexPreTransform: a PCA over a flat index, then a normalization
     * prepended to a chain that started empty */
    FaissPCAMatrix *pca = NULL;
    FaissIndexFlatL2 *flat8 = NULL;
    FaissIndexPreTransform *pt = NULL;
    TRY(faiss_PCAMatrix_new_with(&pca, d, 8, 0, 0));
    TRY(faiss_IndexFlatL2_new_with(&flat8, 8));
    TRY(faiss_IndexPreTransform_new_with_transform(&pt, pca, flat8));
    faiss_IndexPreTransform_set_own_fields(pt, 1);
    printf("pca trained %d d %d cast %d index %d\n", faiss_Index_is_trained(pt), faiss_Index_d(pt),
           faiss_IndexPreTransform_cast(pt) != NULL, faiss_IndexPreTransform_index(pt) == flat8);
    TRY(faiss_Index_train(pt, n, xb));
    TRY(faiss_Index_add(pt, n, xb));
    print_search("pca", pt, nq, xq, 0);
    print_refusal("pca apply", faiss_VectorTransform_apply(pca, 1, xq) ? 0 : FAISS_EXCEPT,
                  "not available");
    faiss_IndexPreTransform_free(pt); /* and, owning them, pca and flat8 */

    FaissIndexFlatL2 *flat = NULL;
    FaissNormalizationTransform *norm = NULL;
    TRY(faiss_IndexFlatL2_new_with(&flat, d));
    TRY(faiss_IndexPreTransform_new_with(&pt, flat));
    TRY(faiss_NormalizationTransform_new_with(&norm, d, 2.0f));
    TRY(faiss_IndexPreTransform_prepend_transform(pt, norm));
    TRY(faiss_Index_add(pt, n, xb));
    print_search("l2norm", pt, nq, xq, 1);
    float *xt = faiss_VectorTransform_apply(norm, 1, xq);
    printf("l2norm apply %s\n", xt ? "ok" : faiss_get_last_error());
    if (xt)
        printf("dist normalized %.6e %.6e\n", xt[0], xt[d - 1]);
    free(xt);
    FaissOPQMatrix *opq = NULL;
    TRY(faiss_OPQMatrix_new_with(&opq, d, 4, d));
    faiss_OPQMatrix_set_niter(opq, 7);
    print_refusal("opq niter", faiss_IndexPreTransform_prepend_transform(pt, opq), "not served");
    faiss_IndexPreTransform_free(pt);
    faiss_NormalizationTransform_free(norm);
    faiss_OPQMatrix_free(opq);
    faiss_Index_free(flat);

    /* IndexShards: three flat L2 shards numbered in succession, then two
     * IDMap(FlatIP) shards given their ids */
    FaissIndexShards *shards = NULL;
    FaissIndex *members[3];
    TRY(faiss_IndexShards_new(&shards, d));
    faiss_IndexShards_set_own_fields(shards, 1);
    for (int i = 0; i < 3; i++) {
        TRY(faiss_IndexFlatL2_new_with((FaissIndexFlatL2 **)&members[i], d));
        TRY(faiss_IndexShards_add_shard(shards, members[i]));
    }
    TRY(faiss_Index_add(shards, n, xb));
    printf("shards ntotal %lld %lld %lld %lld at %d\n", (long long)faiss_Index_ntotal(shards),
           (long long)faiss_Index_ntotal(members[0]), (long long)faiss_Index_ntotal(members[1]),
           (long long)faiss_Index_ntotal(members[2]),
           faiss_IndexShards_at(shards, 1) == members[1]);
    print_search("shards", shards, nq, xq, 1);
    print_refusal("shards add again", faiss_Index_add(shards, 1, xb), "single pass");
    FaissIDSelectorRange *sel = NULL;
    TRY(faiss_IDSelectorRange_new(&sel, 0, 10));
    size_t nrem = 0;
    print_refusal("shards remove", faiss_Index_remove_ids(shards, (FaissIDSelector *)sel, &nrem),
                  "not implemented");
    faiss_IDSelectorRange_free(sel);
    faiss_IndexShards_free(shards);

    FaissIndexShards *ipshards = NULL;
    idx_t *ids = malloc(sizeof *ids * (size_t)n);
    for (int i = 0; i < n; i++)
        ids[i] = 1000 + 7 * (idx_t)i;
    TRY(faiss_IndexShards_new_with_options(&ipshards, d, 0, 0));
    faiss_IndexShards_set_own_fields(ipshards, 1);
    for (int i = 0; i < 2; i++) {
        FaissIndexFlatIP *ip = NULL;
        FaissIndexIDMap *idm = NULL;
        TRY(faiss_IndexFlatIP_new_with(&ip, d));
        TRY(faiss_IndexIDMap_new(&idm, ip));
        faiss_IndexIDMap_set_own_fields(idm, 1);
        TRY(faiss_IndexShards_add_shard(ipshards, idm));
    }
    TRY(faiss_Index_add_with_ids(ipshards, n, xb, ids));
    printf("ipshards ntotal %lld metric %d\n", (long long)faiss_Index_ntotal(ipshards),
           (int)faiss_Index_metric_type(ipshards));
    print_search("ipshards", ipshards, nq, xq, 1);
    faiss_IndexShards_free(ipshards);
    free(ids);

    /* IndexReplicas: two flat copies share the queries */
    FaissIndexReplicas *reps = NULL;
    FaissIndexFlatL2 *r0 = NULL, *r1 = NULL;
    TRY(faiss_IndexReplicas_new(&reps, d));
    faiss_IndexReplicas_set_own_fields(reps, 1);
    TRY(faiss_IndexFlatL2_new_with(&r0, d));
    TRY(faiss_IndexFlatL2_new_with(&r1, d));
    TRY(faiss_IndexReplicas_add_replica(reps, r0));
    TRY(faiss_IndexReplicas_add_replica(reps, r1));
    TRY(faiss_Index_add(reps, n, xb));
    printf("replicas ntotal %lld %lld %lld\n", (long long)faiss_Index_ntotal(reps),
           (long long)faiss_Index_ntotal(r0), (long long)faiss_Index_ntotal(r1));
    print_search("replicas", reps, nq, xq, 1);
    float rec[256];
    TRY(faiss_Index_reconstruct(reps, 5, rec));
    printf("replicas reconstruct %s\n",
           memcmp(rec, xb + 5 * d, sizeof *rec * d) ? "differs" : "equal");
    faiss_IndexReplicas_free(reps);

    /* distances_c.h, against numpy (compared with a tolerance) */
    float dis[6 * 5], norms[6];
    faiss_pairwise_L2sqr_with_defaults(d, nq, xq, 5, xb, dis);
    printf("dist pairwise");
    for (int i = 0; i < nq * 5; i++)
        printf(" %.6e", dis[i]);
    printf("\ndist ip_ny");
    faiss_fvec_inner_products_ny(dis, xq, xb, d, 5);
    for (int i = 0; i < 5; i++)
        printf(" %.6e", dis[i]);
    printf("\ndist l2_ny");
    faiss_fvec_L2sqr_ny(dis, xq, xb, d, 5);
    for (int i = 0; i < 5; i++)
        printf(" %.6e", dis[i]);
    faiss_fvec_norms_L2(norms, xq, d, nq);
    printf("\ndist norms");
    for (int i = 0; i < nq; i++)
        printf(" %.6e", norms[i]);
    faiss_fvec_norms_L2sqr(norms, xq, d, nq);
    printf("\ndist norms2");
    for (int i = 0; i < nq; i++)
        printf(" %.6e", norms[i]);
    printf("\ndist norm2 %.6e\n", faiss_fvec_norm_L2sqr(xq, d));
    faiss_set_distance_compute_blas_threshold(7);
    printf("blas %d %d %d %d\n", faiss_get_distance_compute_blas_threshold(),
           faiss_get_distance_compute_blas_query_bs(),
           faiss_get_distance_compute_blas_database_bs(),
           faiss_get_distance_compute_min_k_reservoir());
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--lease-wait"))
        return lease_wait(argv[2]);
    int more_mode = argc == 3 && !strcmp(argv[1], "--more");
    if (more_mode) {
        argv++;
        argc--;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: program_c DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    char path[4096];
    int n, nq, d;
    snprintf(path, sizeof path, "%s/meta.txt", dir);
    FILE *mf = fopen(path, "r");
    if (!mf || fscanf(mf, "%d %d %d", &n, &nq, &d) != 3 || nq > 64) {
        fprintf(stderr, "bad %s\n", path);
        return 2;
    }
    fclose(mf);
    float *xb = load(dir, "xb.bin", (size_t)n * d), *xq = load(dir, "xq.bin", (size_t)nq * d);
    if (more_mode) {
        int rc = more(n, nq, d, xb, xq);
        free(xb);
        free(xq);
        return rc;
    }

    /* 1. flat L2 */
    FaissIndexFlatL2 *flat;
    TRY(faiss_IndexFlatL2_new_with(&flat, d));
    TRY(faiss_Index_add(flat, n, xb));
    printf("flat ntotal %lld d %d trained %d metric %d\n", (long long)faiss_Index_ntotal(flat),
           faiss_Index_d(flat), faiss_Index_is_trained(flat), (int)faiss_Index_metric_type(flat));
    printf("flat casts %d %d %d\n", faiss_IndexFlat_cast(flat) != NULL,
           faiss_IndexFlatL2_cast(flat) != NULL, faiss_IndexIVF_cast(flat) != NULL);
    print_search("flat", flat, nq, xq, 1);
    float rec[3 * 256];
    TRY(faiss_Index_reconstruct_n(flat, 10, 3, rec));
    printf("flat reconstruct_n %s\n",
           memcmp(rec, xb + 10 * d, 3 * d * sizeof(float)) ? "differs" : "equal");

    /* 2. range search */
    FaissRangeSearchResult *rs;
    TRY(faiss_RangeSearchResult_new(&rs, nq));
    TRY(faiss_Index_range_search(flat, nq, xq, 0.9f * (float)d / 6, rs));
    size_t *lims;
    idx_t *labels;
    float *dist;
    faiss_RangeSearchResult_lims(rs, &lims);
    faiss_RangeSearchResult_labels(rs, &labels, &dist);
    for (int q = 0; q < nq; q++) {
        printf("range q%d n %zu", q, lims[q + 1] - lims[q]);
        for (size_t j = lims[q]; j < lims[q + 1] && j < lims[q] + 4; j++)
            printf(" %lld", (long long)labels[j]);
        printf("\n");
    }
    faiss_RangeSearchResult_free(rs);

    /* 3. write for in-process FAISS to read */
    snprintf(path, sizeof path, "%s/flat.index", dir);
    TRY(faiss_write_index_fname(flat, path));

    /* 4. remove_ids on a flat index renumbers, as FAISS does */
    idx_t gone[3] = {0, 7, 100000};
    FaissIDSelectorBatch *batch;
    TRY(faiss_IDSelectorBatch_new(&batch, 3, gone));
    size_t nrem = 0;
    TRY(faiss_Index_remove_ids(flat, (FaissIDSelector *)batch, &nrem));
    printf("flat removed %zu ntotal %lld\n", nrem, (long long)faiss_Index_ntotal(flat));
    print_search("flat-removed", flat, nq, xq, 0);
    faiss_IDSelector_free((FaissIDSelector *)batch);

    /* 5. IVF from the factory: train, add, nprobe two ways */
    FaissIndex *ivf;
    TRY(faiss_index_factory(&ivf, d, "IVF8,Flat", METRIC_L2));
    printf("ivf trained %d nlist %zu\n", faiss_Index_is_trained(ivf),
           faiss_IndexIVF_nlist(faiss_IndexIVF_cast(ivf)));
    TRY(faiss_Index_train(ivf, n, xb));
    TRY(faiss_Index_add(ivf, n, xb));
    printf("ivf trained %d ntotal %lld\n", faiss_Index_is_trained(ivf),
           (long long)faiss_Index_ntotal(ivf));
    print_search("ivf-nprobe1", ivf, nq, xq, 0);
    FaissParameterSpace *ps;
    TRY(faiss_ParameterSpace_new(&ps));
    TRY(faiss_ParameterSpace_set_index_parameters(ps, ivf, "nprobe=8"));
    print_search("ivf-nprobe8", ivf, nq, xq, 0);
    faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(ivf), 3);
    printf("ivf nprobe %zu\n", faiss_IndexIVF_nprobe(faiss_IndexIVF_cast(ivf)));
    print_search("ivf-nprobe3", ivf, nq, xq, 0);
    int rc = faiss_ParameterSpace_set_index_parameter(ps, ivf, "efSearch", 3);
    printf("ivf efSearch rc %d\n", rc != 0);
    faiss_ParameterSpace_free(ps);
    /* after remove_ids, a query whose probed list holds fewer than k live
     * vectors comes back short, as FAISS's does */
    FaissIDSelectorRange *removed;
    size_t ngone = 0;
    TRY(faiss_IDSelectorRange_new(&removed, 0, n / 2));
    TRY(faiss_Index_remove_ids(ivf, (FaissIDSelector *)removed, &ngone));
    faiss_IDSelectorRange_free(removed);
    faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(ivf), 1);
    float *gD = malloc(sizeof *gD * (size_t)n);
    idx_t *gI = malloc(sizeof *gI * (size_t)n);
    TRY(faiss_Index_search(ivf, 1, xq, n, gD, gI));
    int hits = 0;
    for (int j = 0; j < n; j++)
        hits += gI[j] >= 0;
    printf("ivf removed %zu hits %d first %lld %.5f\n", ngone, hits, (long long)gI[0], gD[0]);
    free(gD);
    free(gI);

    /* 6. IVFFlat from a quantizer */
    FaissIndexFlatL2 *q;
    FaissIndexIVFFlat *ivf2;
    TRY(faiss_IndexFlatL2_new_with(&q, d));
    TRY(faiss_IndexIVFFlat_new_with_metric(&ivf2, q, d, 4, METRIC_L2));
    TRY(faiss_Index_train(ivf2, n, xb));
    TRY(faiss_Index_add(ivf2, n, xb));
    faiss_IndexIVFFlat_set_nprobe(ivf2, 4);
    print_search("ivfflat", ivf2, nq, xq, 0);

    /* 7. IDMap: add_with_ids, remove by batch and by range */
    FaissIndexFlatL2 *base;
    FaissIndexIDMap *idmap;
    TRY(faiss_IndexFlatL2_new_with(&base, d));
    TRY(faiss_IndexIDMap_new(&idmap, base));
    idx_t *ids = malloc(sizeof(idx_t) * (size_t)n);
    for (int i = 0; i < n; i++)
        ids[i] = 100 + 3 * (idx_t)i;
    rc = faiss_Index_add(idmap, n, xb);
    printf("idmap add rc %d\n", rc != 0);
    TRY(faiss_Index_add_with_ids(idmap, n, xb, ids));
    idx_t del[3] = {103, 106, 5};
    TRY(faiss_IDSelectorBatch_new(&batch, 3, del));
    TRY(faiss_Index_remove_ids(idmap, (FaissIDSelector *)batch, &nrem));
    printf("idmap removed %zu\n", nrem);
    faiss_IDSelector_free((FaissIDSelector *)batch);
    FaissIDSelectorRange *range;
    TRY(faiss_IDSelectorRange_new(&range, 130, 160));
    TRY(faiss_Index_remove_ids(idmap, (FaissIDSelector *)range, &nrem));
    printf("idmap removed %zu ntotal %lld\n", nrem, (long long)faiss_Index_ntotal(idmap));
    faiss_IDSelectorRange_free(range);
    print_search("idmap", idmap, nq, xq, 0);
    idx_t *idm;
    size_t nidm;
    faiss_IndexIDMap_id_map(faiss_IndexIDMap_cast(idmap), &idm, &nidm);
    printf("idmap id_map %zu first %lld\n", nidm, nidm ? (long long)idm[0] : -1LL);

    /* 8. add_with_ids where FAISS refuses it */
    rc = faiss_Index_add_with_ids(flat, 1, xb, ids);
    printf("flat add_with_ids rc %d\n", rc != 0);

    /* 9. read an index in-process FAISS wrote; clone it */
    FaissIndex *read, *clone;
    snprintf(path, sizeof path, "%s/ivf.index", dir);
    TRY(faiss_read_index_fname(path, 0, &read));
    printf("read ntotal %lld ivf %d\n", (long long)faiss_Index_ntotal(read),
           faiss_IndexIVF_cast(read) != NULL);
    print_search("read", read, nq, xq, 0);
    TRY(faiss_clone_index(read, &clone));
    print_search("clone", clone, nq, xq, 0);

    /* 10. a binary flat index in-process FAISS wrote (d = 64 bits) */
    FaissIndexBinary *bin;
    snprintf(path, sizeof path, "%s/bflat.index", dir);
    TRY(faiss_read_index_binary_fname(path, 0, &bin));
    printf("binary d %d ntotal %lld\n", faiss_IndexBinary_d(bin),
           (long long)faiss_IndexBinary_ntotal(bin));
    uint8_t bq[4 * 8];
    for (int i = 0; i < 32; i++)
        bq[i] = (uint8_t)(i * 37 + 11);
    int32_t bD[4 * K];
    idx_t bI[4 * K];
    TRY(faiss_IndexBinary_search(bin, 4, bq, K, bD, bI));
    for (int qi = 0; qi < 4; qi++) {
        printf("binary q%d", qi);
        for (int j = 0; j < K; j++)
            printf(" %lld:%d", (long long)bI[qi * K + j], bD[qi * K + j]);
        printf("\n");
    }
    TRY(faiss_IndexBinary_add(bin, 4, bq));
    rc = faiss_IndexBinary_add_with_ids(bin, 1, bq, ids);
    printf("binary add ntotal %lld add_with_ids rc %d\n", (long long)faiss_IndexBinary_ntotal(bin),
           rc != 0);
    uint8_t brec[8];
    TRY(faiss_IndexBinary_reconstruct(bin, faiss_IndexBinary_ntotal(bin) - 1, brec));
    printf("binary reconstruct %s\n", memcmp(brec, bq + 24, 8) ? "differs" : "equal");
    snprintf(path, sizeof path, "%s/bflat.out", dir);
    TRY(faiss_write_index_binary_fname(bin, path));
    faiss_IndexBinary_free(bin);

    /* 11. reset keeps the training */
    TRY(faiss_Index_reset(ivf));
    printf("reset ntotal %lld trained %d\n", (long long)faiss_Index_ntotal(ivf),
           faiss_Index_is_trained(ivf));

    faiss_Index_free(clone);
    faiss_Index_free(read);
    faiss_Index_free(idmap);
    faiss_Index_free(base);
    faiss_Index_free(ivf2);
    faiss_Index_free(q);
    faiss_Index_free(ivf);
    faiss_Index_free(flat);
    free(ids);
    free(xb);
    free(xq);
    return 0;
}
