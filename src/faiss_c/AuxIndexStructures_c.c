/*
 * AuxIndexStructures_c.c - FAISS's impl/AuxIndexStructures_c.h: the helper
 * structures that live entirely in the caller's process. RangeSearchResult
 * (what a range search fills), IDSelector (a label range or a batch of
 * labels, sent to the server by faiss_Index_remove_ids), BufferList (a list
 * of id and distance buffers), RangeSearchPartialResult and RangeQueryResult
 * (how a range search fills a RangeSearchResult query by query). They hold no
 * index and need no server; they behave as FAISS's do.
 *
 * DistanceComputer is declared by the header but has no constructor in the
 * C API of FAISS 1.7.3; its calls report that.
 */
#include "internal.h"

#include <faiss/c_api/error_c.h>

#include <stdlib.h>
#include <string.h>

/* ---- RangeSearchResult, IDSelector -------------------------------------------------- */

static int cmp_idx(const void *a, const void *b) {
    idx_t x = *(const idx_t *)a, y = *(const idx_t *)b;
    return (x > y) - (x < y);
}

int faiss_IDSelector_is_member(const FaissIDSelector *sel, idx_t id) {
    if (sel->is_range)
        return id >= sel->imin && id < sel->imax;
    return bsearch(&id, sel->ids, sel->n, sizeof id, cmp_idx) != NULL;
}

int faiss_RangeSearchResult_new_with(FaissRangeSearchResult **p, idx_t nq, int alloc_lims) {
    FaissRangeSearchResult *r = calloc(1, sizeof *r);
    if (!r)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    r->nq = (size_t)nq;
    r->buffer_size = 1024 * 256;
    if (alloc_lims && !(r->lims = calloc((size_t)nq + 1, sizeof(size_t)))) {
        free(r);
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    }
    *p = r;
    return 0;
}

int faiss_RangeSearchResult_new(FaissRangeSearchResult **p, idx_t nq) {
    return faiss_RangeSearchResult_new_with(p, nq, 1);
}

int faiss_RangeSearchResult_do_allocation(FaissRangeSearchResult *r) {
    /* lims holds per-query counts: turn them into offsets, size the arrays */
    size_t ofs = 0;
    for (size_t i = 0; i < r->nq; i++) {
        size_t n = r->lims[i];
        r->lims[i] = ofs;
        ofs += n;
    }
    r->lims[r->nq] = ofs;
    free(r->labels);
    free(r->distances);
    r->labels = malloc(sizeof(idx_t) * (ofs ? ofs : 1));
    r->distances = malloc(sizeof(float) * (ofs ? ofs : 1));
    return r->labels && r->distances ? 0 : fpx_fc_error(STD_EXCEPT, "out of memory");
}

void faiss_RangeSearchResult_free(FaissRangeSearchResult *r) {
    if (!r)
        return;
    free(r->lims);
    free(r->labels);
    free(r->distances);
    free(r);
}

size_t faiss_RangeSearchResult_nq(const FaissRangeSearchResult *r) {
    return r->nq;
}

size_t faiss_RangeSearchResult_buffer_size(const FaissRangeSearchResult *r) {
    return r->buffer_size;
}

void faiss_RangeSearchResult_lims(FaissRangeSearchResult *r, size_t **lims) {
    *lims = r->lims;
}

void faiss_RangeSearchResult_labels(FaissRangeSearchResult *r, idx_t **labels, float **distances) {
    *labels = r->labels;
    *distances = r->distances;
}

void faiss_IDSelector_free(FaissIDSelector *sel) {
    if (!sel)
        return;
    free(sel->ids);
    free(sel);
}

void faiss_IDSelectorRange_free(FaissIDSelectorRange *sel) {
    faiss_IDSelector_free((FaissIDSelector *)sel);
}

int faiss_IDSelectorRange_new(FaissIDSelectorRange **p, idx_t imin, idx_t imax) {
    FaissIDSelector *s = calloc(1, sizeof *s);
    if (!s)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    s->is_range = 1;
    s->imin = imin;
    s->imax = imax;
    *p = (FaissIDSelectorRange *)s;
    return 0;
}

idx_t faiss_IDSelectorRange_imin(const FaissIDSelectorRange *sel) {
    return ((const FaissIDSelector *)sel)->imin;
}

idx_t faiss_IDSelectorRange_imax(const FaissIDSelectorRange *sel) {
    return ((const FaissIDSelector *)sel)->imax;
}

int faiss_IDSelectorBatch_new(FaissIDSelectorBatch **p, size_t n, const idx_t *indices) {
    FaissIDSelector *s = calloc(1, sizeof *s);
    if (!s || !(s->ids = malloc(sizeof(idx_t) * (n ? n : 1)))) {
        free(s);
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    }
    if (n)
        memcpy(s->ids, indices, sizeof(idx_t) * n);
    qsort(s->ids, n, sizeof(idx_t), cmp_idx);
    s->n = n;
    /* FAISS's bloom-filter geometry, for the getters */
    int nbits = 0;
    while (n > ((size_t)1 << nbits))
        nbits++;
    nbits += 5;
    s->nbits = nbits;
    s->mask = ((idx_t)1 << nbits) - 1;
    *p = (FaissIDSelectorBatch *)s;
    return 0;
}

int faiss_IDSelectorBatch_nbits(const FaissIDSelectorBatch *sel) {
    return ((const FaissIDSelector *)sel)->nbits;
}

idx_t faiss_IDSelectorBatch_mask(const FaissIDSelectorBatch *sel) {
    return ((const FaissIDSelector *)sel)->mask;
}

/* ---- BufferList, RangeSearchPartialResult, RangeQueryResult --------------------------- */

struct FaissBufferList_H {
    size_t buffer_size;
    FaissBuffer *buffers;
    size_t nbuf;
    size_t wp; /* write position in the last buffer */
};

int faiss_BufferList_new(FaissBufferList **p, size_t buffer_size) {
    FaissBufferList *bl = calloc(1, sizeof *bl);
    if (!bl)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    bl->buffer_size = buffer_size ? buffer_size : 1;
    bl->wp = bl->buffer_size; /* the first add appends a buffer */
    *p = bl;
    return 0;
}

void faiss_BufferList_free(FaissBufferList *bl) {
    if (!bl)
        return;
    for (size_t i = 0; i < bl->nbuf; i++) {
        free(bl->buffers[i].ids);
        free(bl->buffers[i].dis);
    }
    free(bl->buffers);
    free(bl);
}

size_t faiss_BufferList_buffer_size(const FaissBufferList *bl) {
    return bl->buffer_size;
}

size_t faiss_BufferList_wp(const FaissBufferList *bl) {
    return bl->wp;
}

int faiss_BufferList_append_buffer(FaissBufferList *bl) {
    FaissBuffer *b = realloc(bl->buffers, sizeof *b * (bl->nbuf + 1));
    if (!b)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    bl->buffers = b;
    b[bl->nbuf].ids = malloc(sizeof(idx_t) * bl->buffer_size);
    b[bl->nbuf].dis = malloc(sizeof(float) * bl->buffer_size);
    if (!b[bl->nbuf].ids || !b[bl->nbuf].dis) {
        free(b[bl->nbuf].ids);
        free(b[bl->nbuf].dis);
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    }
    bl->nbuf++;
    bl->wp = 0;
    return 0;
}

int faiss_BufferList_add(FaissBufferList *bl, idx_t id, float dis) {
    if (bl->wp == bl->buffer_size) {
        int rc = faiss_BufferList_append_buffer(bl);
        if (rc)
            return rc;
    }
    FaissBuffer *b = &bl->buffers[bl->nbuf - 1];
    b->ids[bl->wp] = id;
    b->dis[bl->wp] = dis;
    bl->wp++;
    return 0;
}

int faiss_BufferList_copy_range(FaissBufferList *bl, size_t ofs, size_t n, idx_t *dest_ids,
                                float *dest_dis) {
    size_t total = bl->nbuf ? (bl->nbuf - 1) * bl->buffer_size + bl->wp : 0;
    if (ofs + n > total)
        return fpx_fc_error(FAISS_EXCEPT, "copy_range past the end of the buffers");
    while (n > 0) {
        size_t bno = ofs / bl->buffer_size, o = ofs % bl->buffer_size;
        size_t k = bl->buffer_size - o < n ? bl->buffer_size - o : n;
        memcpy(dest_ids, bl->buffers[bno].ids + o, k * sizeof(idx_t));
        memcpy(dest_dis, bl->buffers[bno].dis + o, k * sizeof(float));
        dest_ids += k;
        dest_dis += k;
        ofs += k;
        n -= k;
    }
    return 0;
}

struct FaissRangeQueryResult_H {
    idx_t qno;
    size_t nres;
    FaissRangeSearchPartialResult *pres;
};

struct FaissRangeSearchPartialResult_H {
    FaissRangeSearchResult *res;
    FaissBufferList *bl;
    FaissRangeQueryResult *queries;
    size_t nqueries;
};

int faiss_RangeSearchPartialResult_new(FaissRangeSearchPartialResult **p,
                                       FaissRangeSearchResult *res) {
    FaissRangeSearchPartialResult *pr = calloc(1, sizeof *pr);
    if (!pr || faiss_BufferList_new(&pr->bl, res->buffer_size)) {
        free(pr);
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    }
    pr->res = res;
    *p = pr;
    return 0;
}

FaissRangeSearchResult *faiss_RangeSearchPartialResult_res(const FaissRangeSearchPartialResult *p) {
    return p->res;
}

int faiss_RangeSearchPartialResult_new_result(FaissRangeSearchPartialResult *p, idx_t qno,
                                              FaissRangeQueryResult **qr) {
    FaissRangeQueryResult *q = realloc(p->queries, sizeof *q * (p->nqueries + 1));
    if (!q)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    p->queries = q;
    q[p->nqueries] = (FaissRangeQueryResult){qno, 0, p};
    *qr = &q[p->nqueries++];
    return 0;
}

int faiss_RangeQueryResult_add(FaissRangeQueryResult *qr, float dis, idx_t id) {
    FaissRangeSearchPartialResult *p = qr->pres;
    if (!p->bl && faiss_BufferList_new(&p->bl, p->res->buffer_size))
        return STD_EXCEPT;
    int rc = faiss_BufferList_add(p->bl, id, dis);
    if (rc == 0)
        qr->nres++;
    return rc;
}

idx_t faiss_RangeQueryResult_qno(const FaissRangeQueryResult *qr) {
    return qr->qno;
}

size_t faiss_RangeQueryResult_nres(const FaissRangeQueryResult *qr) {
    return qr->nres;
}

FaissRangeSearchPartialResult *faiss_RangeQueryResult_pres(const FaissRangeQueryResult *qr) {
    return qr->pres;
}

int faiss_RangeSearchPartialResult_set_lims(FaissRangeSearchPartialResult *p) {
    for (size_t i = 0; i < p->nqueries; i++)
        p->res->lims[p->queries[i].qno] = p->queries[i].nres;
    return 0;
}

int faiss_RangeSearchPartialResult_finalize(FaissRangeSearchPartialResult *p) {
    int rc = faiss_RangeSearchPartialResult_set_lims(p);
    if (rc == 0)
        rc = faiss_RangeSearchResult_do_allocation(p->res);
    size_t ofs = 0;
    for (size_t i = 0; rc == 0 && p->bl && i < p->nqueries; i++) {
        FaissRangeQueryResult *q = &p->queries[i];
        size_t at = p->res->lims[q->qno];
        rc = faiss_BufferList_copy_range(p->bl, ofs, q->nres, p->res->labels + at,
                                         p->res->distances + at);
        ofs += q->nres;
    }
    /* FAISS frees the partial result's buffers with it; release them here */
    faiss_BufferList_free(p->bl);
    free(p->queries);
    p->bl = NULL;
    p->queries = NULL;
    p->nqueries = 0;
    return rc;
}

static int no_distance_computer(void) {
    return fpx_fc_error(FAISS_EXCEPT, "a DistanceComputer needs the index in this process; "
                                      "faiss-proxy computes distances on the server");
}

int faiss_DistanceComputer_set_query(FaissDistanceComputer *dc, const float *x) {
    (void)dc, (void)x;
    return no_distance_computer();
}

int faiss_DistanceComputer_vector_to_query_dis(FaissDistanceComputer *dc, idx_t i, float *qd) {
    (void)dc, (void)i, (void)qd;
    return no_distance_computer();
}

int faiss_DistanceComputer_symmetric_dis(FaissDistanceComputer *dc, idx_t i, idx_t j, float *vd) {
    (void)dc, (void)i, (void)j, (void)vd;
    return no_distance_computer();
}

void faiss_DistanceComputer_free(FaissDistanceComputer *dc) {
    (void)dc;
}
