/*
 * IndexPreTransform_c.c - FAISS's IndexPreTransform_c.h: an index behind a
 * chain of transforms, served as one server index whose factory description
 * is the chain's transforms, then the sub-index's description
 * ("PCA16,IVF8,Flat"). The server trains and applies the transforms.
 *
 * The sub-index given must be empty: as with IndexIDMap, the server index
 * made from the description is a new one, and the handle given stays the
 * getter's answer (and is freed with this one when own_fields is set).
 * Prepending a transform changes the description, so the server index is
 * made anew; that is refused once it holds vectors.
 */
#include "internal.h"

#include <faiss/c_api/IndexPreTransform_c.h>

#include <stdlib.h>
#include <string.h>

/* (Re)makes the server index of ix from its chain and sub-index. */
static int rebuild(FaissIndex *ix) {
    char desc[256] = "";
    size_t len = 0;
    for (size_t i = 0; i < ix->nchain; i++) {
        char part[64];
        int rc = fpx_fc_vt_desc(ix->chain[i], part, sizeof part);
        if (rc)
            return rc;
        size_t pl = strlen(part);
        if (len + pl + 1 >= sizeof desc)
            return fpx_fc_error(FAISS_EXCEPT, "description too long");
        memcpy(desc + len, part, pl);
        desc[len + pl] = ',';
        len += pl + 1;
    }
    size_t sl = strlen(ix->sub->desc);
    if (len + sl >= sizeof desc)
        return fpx_fc_error(FAISS_EXCEPT, "description too long");
    memcpy(desc + len, ix->sub->desc, sl + 1);
    int d = ix->nchain ? ix->chain[0]->d_in : ix->sub->d;
    FaissIndex *fresh = NULL;
    int rc = fpx_fc_make_index(&fresh, FPX_CLS_PRETRANSFORM, d, ix->sub->metric, desc);
    if (rc)
        return rc;
    if (ix->name[0]) { /* the previous server index, empty */
        fpx_client *c = fpx_fc_client();
        if (c)
            fpx_client_delete_index(c, ix->name);
    }
    memcpy(ix->name, fresh->name, sizeof ix->name);
    memcpy(ix->desc, fresh->desc, sizeof ix->desc);
    ix->d = d;
    ix->is_trained = fresh->is_trained;
    ix->ntotal = 0;
    free(fresh);
    return 0;
}

static int pretransform_new(FaissIndexPreTransform **p, FaissVectorTransform *lt,
                            FaissIndex *index) {
    *p = NULL;
    if (!index || !index->desc[0])
        return fpx_fc_error(FAISS_EXCEPT, "index is NULL or was not made from a description");
    if (faiss_Index_ntotal(index) != 0)
        return fpx_fc_error(FAISS_EXCEPT,
                            "faiss-proxy builds an IndexPreTransform over an empty sub-index only "
                            "(the server index is made anew from the description)");
    if (lt && lt->d_out != index->d)
        return fpx_fc_error(FAISS_EXCEPT, "Error: 'ltrans->d_out == index->d' failed");
    FaissIndex *ix = fpx_fc_handle_new(FPX_CLS_PRETRANSFORM, index->d, index->metric, "");
    if (!ix || (lt && !(ix->chain = malloc(sizeof *ix->chain)))) {
        free(ix);
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    }
    ix->sub = index;
    if (lt)
        ix->chain[ix->nchain++] = lt;
    int rc = rebuild(ix);
    if (rc) {
        free(ix->chain);
        free(ix);
        return rc;
    }
    *p = ix;
    return 0;
}

int faiss_IndexPreTransform_new(FaissIndexPreTransform **p) {
    *p = fpx_fc_handle_new(FPX_CLS_PRETRANSFORM, 0, METRIC_L2, "");
    return *p ? 0 : fpx_fc_error(STD_EXCEPT, "out of memory");
}

int faiss_IndexPreTransform_new_with(FaissIndexPreTransform **p, FaissIndex *index) {
    return pretransform_new(p, NULL, index);
}

int faiss_IndexPreTransform_new_with_transform(FaissIndexPreTransform **p,
                                               FaissVectorTransform *ltrans, FaissIndex *index) {
    if (!ltrans) {
        *p = NULL;
        return fpx_fc_error(FAISS_EXCEPT, "transform is NULL");
    }
    return pretransform_new(p, ltrans, index);
}

int faiss_IndexPreTransform_prepend_transform(FaissIndexPreTransform *ix,
                                              FaissVectorTransform *ltrans) {
    if (!ix || ix->cls != FPX_CLS_PRETRANSFORM || !ix->sub)
        return fpx_fc_error(FAISS_EXCEPT, "not an IndexPreTransform made over a sub-index");
    if (!ltrans)
        return fpx_fc_error(FAISS_EXCEPT, "transform is NULL");
    if (ltrans->d_out != ix->d)
        return fpx_fc_error(FAISS_EXCEPT, "Error: 'ltrans->d_out == d' failed");
    char part[64];
    int rc = fpx_fc_vt_desc(ltrans, part, sizeof part); /* servable at all? */
    if (rc)
        return rc;
    if (ix->ntotal != 0)
        return fpx_fc_error(FAISS_EXCEPT, "faiss-proxy prepends a transform only while the "
                                          "IndexPreTransform is empty (the server index is made "
                                          "anew from the new description)");
    FaissVectorTransform **m = realloc(ix->chain, sizeof *m * (ix->nchain + 1));
    if (!m)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    ix->chain = m;
    memmove(m + 1, m, sizeof *m * ix->nchain);
    m[0] = ltrans;
    ix->nchain++;
    rc = rebuild(ix);
    if (rc) { /* as it was */
        memmove(m, m + 1, sizeof *m * (ix->nchain - 1));
        ix->nchain--;
    }
    return rc;
}

FPX_FC_CAST(IndexPreTransform, ix->cls == FPX_CLS_PRETRANSFORM)
FPX_FC_FREE_AS_INDEX(IndexPreTransform)

FaissIndex *faiss_IndexPreTransform_index(const FaissIndexPreTransform *ix) {
    return ix->sub;
}

int faiss_IndexPreTransform_own_fields(const FaissIndexPreTransform *ix) {
    return ix->own_fields;
}

void faiss_IndexPreTransform_set_own_fields(FaissIndexPreTransform *ix, int v) {
    ix->own_fields = v;
}
