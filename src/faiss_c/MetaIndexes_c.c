/*
 * MetaIndexes_c.c - FAISS's MetaIndexes_c.h: IndexIDMap and IndexIDMap2 as
 * server "IDMap,<sub>" indexes around an empty sub-index, with the ids added
 * kept here for faiss_IndexIDMap_id_map.
 */
#include "internal.h"

#include <faiss/c_api/MetaIndexes_c.h>

#include <stdio.h>

static int idmap_new(FaissIndex **p, FaissIndex *sub, enum fpx_fc_cls cls) {
    *p = NULL;
    if (!sub || !sub->desc[0])
        return fpx_fc_error(FAISS_EXCEPT, "index is NULL");
    if (sub->ntotal != 0)
        return fpx_fc_error(FAISS_EXCEPT, "index must be empty on input");
    char desc[256];
    if (snprintf(desc, sizeof desc, "%s,%s", cls == FPX_CLS_IDMAP2 ? "IDMap2" : "IDMap",
                 sub->desc) >= (int)sizeof desc)
        return fpx_fc_error(FAISS_EXCEPT, "description too long");
    int rc = fpx_fc_make_index(p, cls, sub->d, sub->metric, desc);
    if (rc == 0) {
        (*p)->sub = sub;
        (*p)->is_trained = sub->is_trained;
    }
    return rc;
}

int faiss_IndexIDMap_new(FaissIndexIDMap **p, FaissIndex *index) {
    return idmap_new(p, index, FPX_CLS_IDMAP);
}

int faiss_IndexIDMap2_new(FaissIndexIDMap2 **p, FaissIndex *index) {
    return idmap_new(p, index, FPX_CLS_IDMAP2);
}

FPX_FC_CAST(IndexIDMap, ix->cls == FPX_CLS_IDMAP || ix->cls == FPX_CLS_IDMAP2)
FPX_FC_CAST(IndexIDMap2, ix->cls == FPX_CLS_IDMAP2)

int faiss_IndexIDMap_own_fields(const FaissIndexIDMap *ix) {
    return ix->own_fields;
}

void faiss_IndexIDMap_set_own_fields(FaissIndexIDMap *ix, int v) {
    ix->own_fields = v;
}

int faiss_IndexIDMap2_own_fields(const FaissIndexIDMap2 *ix) {
    return ix->own_fields;
}

void faiss_IndexIDMap2_set_own_fields(FaissIndexIDMap2 *ix, int v) {
    ix->own_fields = v;
}

void faiss_IndexIDMap_id_map(FaissIndexIDMap *ix, idx_t **p_id_map, size_t *p_size) {
    *p_id_map = ix->ids;
    *p_size = ix->nids;
}

void faiss_IndexIDMap2_id_map(FaissIndexIDMap2 *ix, idx_t **p_id_map, size_t *p_size) {
    faiss_IndexIDMap_id_map(ix, p_id_map, p_size);
}

FaissIndex *faiss_IndexIDMap_sub_index(FaissIndexIDMap *ix) {
    return ix->sub;
}

FaissIndex *faiss_IndexIDMap2_sub_index(FaissIndexIDMap2 *ix) {
    return ix->sub;
}

int faiss_IndexIDMap2_construct_rev_map(FaissIndexIDMap2 *ix) {
    (void)ix; /* the server keeps its own label map */
    return 0;
}
