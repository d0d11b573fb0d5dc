/*
 * IndexIVF_c.c - FAISS's IndexIVF_c.h: the IVF fields a handle mirrors
 * (nlist, nprobe, quantizer) and nprobe and the direct map set on the server.
 * Inverted-list internals are not in this process and are reported so.
 */
#include "internal.h"

#include <faiss/c_api/IndexIVF_c.h>

#include <stdio.h>
#include <string.h>

FPX_FC_CAST(IndexIVF,
            ix->cls == FPX_CLS_IVF || ix->cls == FPX_CLS_IVFFLAT || ix->cls == FPX_CLS_IVFSQ)

FPX_FC_FREE_AS_INDEX(IndexIVF)

size_t faiss_IndexIVF_nlist(const FaissIndexIVF *ix) {
    return ix->nlist;
}

size_t faiss_IndexIVF_nprobe(const FaissIndexIVF *ix) {
    return ix->nprobe;
}

void faiss_IndexIVF_set_nprobe(FaissIndexIVF *ix, size_t v) {
    fpx_fc_set_param(ix, "nprobe", (double)v);
}

FaissIndex *faiss_IndexIVF_quantizer(const FaissIndexIVF *ix) {
    return ix->sub;
}

char faiss_IndexIVF_quantizer_trains_alone(const FaissIndexIVF *ix) {
    (void)ix;
    return 0;
}

int faiss_IndexIVF_own_fields(const FaissIndexIVF *ix) {
    return ix->own_fields;
}

void faiss_IndexIVF_set_own_fields(FaissIndexIVF *ix, int v) {
    ix->own_fields = v;
}

int faiss_IndexIVF_merge_from(FaissIndexIVF *ix, FaissIndexIVF *other, idx_t add_id) {
    (void)ix, (void)other, (void)add_id;
    return fpx_fc_not_here("merge_from");
}

int faiss_IndexIVF_copy_subset_to(const FaissIndexIVF *ix, FaissIndexIVF *other, int subset_type,
                                  idx_t a1, idx_t a2) {
    (void)ix, (void)other, (void)subset_type, (void)a1, (void)a2;
    return fpx_fc_not_here("copy_subset_to");
}

int faiss_IndexIVF_search_preassigned(const FaissIndexIVF *ix, idx_t n, const float *x, idx_t k,
                                      const idx_t *assign, const float *centroid_dis,
                                      float *distances, idx_t *labels, int store_pairs) {
    (void)ix, (void)n, (void)x, (void)k, (void)assign, (void)centroid_dis;
    (void)distances, (void)labels, (void)store_pairs;
    return fpx_fc_not_here("search_preassigned");
}

size_t faiss_IndexIVF_get_list_size(const FaissIndexIVF *ix, size_t list_no) {
    (void)ix, (void)list_no;
    fpx_fc_not_here("get_list_size");
    return 0;
}

int faiss_IndexIVF_make_direct_map(FaissIndexIVF *ix, int new_maintain_direct_map) {
    return fpx_fc_set_param(ix, "direct_map", new_maintain_direct_map ? 1 : 0);
}

double faiss_IndexIVF_imbalance_factor(const FaissIndexIVF *ix) {
    (void)ix;
    fpx_fc_not_here("imbalance_factor");
    return 0;
}

void faiss_IndexIVF_print_stats(const FaissIndexIVF *ix) {
    printf("faiss-proxy index %s: nlist=%zu nprobe=%zu ntotal=%lld\n", ix->name, ix->nlist,
           ix->nprobe, (long long)ix->ntotal);
}

void faiss_IndexIVF_invlists_get_ids(const FaissIndexIVF *ix, size_t list_no, idx_t *invlist) {
    (void)ix, (void)list_no, (void)invlist;
    fpx_fc_not_here("invlists_get_ids");
}

static FaissIndexIVFStats ivf_stats;

void faiss_IndexIVFStats_reset(FaissIndexIVFStats *stats) {
    memset(stats, 0, sizeof *stats);
}

FaissIndexIVFStats *faiss_get_indexIVF_stats(void) {
    return &ivf_stats;
}
