/*
 * aux_structures.c - the helper structures of FAISS's impl/AuxIndexStructures_c.h
 * that live entirely in the caller's process: BufferList (a list of id and
 * distance buffers), RangeSearchPartialResult and RangeQueryResult (how a
 * range search fills a RangeSearchResult query by query). They hold no index
 * and need no server; they behave as FAISS's do.
 *
 * DistanceComputer is declared by the header but has no constructor in the
 * C API of FAISS 1.7.3; its calls report that.
 */
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>

#include <stdlib.h>
#include <string.h>

/* Defined in faiss_c.c: sets the thread's last error, returns code. */
__attribute__((visibility("hidden"))) int fpx_faiss_c_error(int code, const char *msg);

/* The RangeSearchResult layout of faiss_c.c. */
struct FaissRangeSearchResult_H {
    size_t nq;
    size_t *lims;
    idx_t *labels;
    float *distances;
    size_t buffer_size;
};

struct FaissBufferList_H {
    size_t buffer_size;
    FaissBuffer *buffers;
    size_t nbuf;
    size_t wp; /* write position in the last buffer */
};

int faiss_BufferList_new(FaissBufferList **p, size_t buffer_size) {
    FaissBufferList *bl = calloc(1, sizeof *bl);
    if (!bl)
        return fpx_faiss_c_error(STD_EXCEPT, "out of memory");
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
        return fpx_faiss_c_error(STD_EXCEPT, "out of memory");
    bl->buffers = b;
    b[bl->nbuf].ids = malloc(sizeof(idx_t) * bl->buffer_size);
    b[bl->nbuf].dis = malloc(sizeof(float) * bl->buffer_size);
    if (!b[bl->nbuf].ids || !b[bl->nbuf].dis) {
        free(b[bl->nbuf].ids);
        free(b[bl->nbuf].dis);
        return fpx_faiss_c_error(STD_EXCEPT, "out of memory");
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
        return fpx_faiss_c_error(FAISS_EXCEPT, "copy_range past the end of the buffers");
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
        return fpx_faiss_c_error(STD_EXCEPT, "out of memory");
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
        return fpx_faiss_c_error(STD_EXCEPT, "out of memory");
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
    return fpx_faiss_c_error(FAISS_EXCEPT, "a DistanceComputer needs the index in this process; "
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
