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
 *        program_c --lease-wait READY   makes two indexes, creates the file
 *                                       READY, then waits to be killed (the
 *                                       test of leases: test_leases.py)
 */
#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexBinary_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/clone_index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

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

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--lease-wait"))
        return lease_wait(argv[2]);
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
