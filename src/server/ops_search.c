/*
 * ops_search.c - search and range_search.
 *
 * A search reply is built in place: FAISS writes distances and labels straight
 * into the outgoing body. Searches without a filter may be answered together
 * with other requests' queries in one FAISS call (batch.c).
 */
#include "idsel.h"
#include "ops.h"
#include "util.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Packs slot hits (or nil) for the reply metadata. */
static void pack_hits(const fpx_index *ix, const int64_t *slots, size_t n, msgpack_packer *m) {
    msgpack_pack_array(m, n);
    for (size_t i = 0; i < n; i++)
        fpx_index_pack_hit(ix, slots[i], m);
}

/* ---- FAISS's search statistics ---------------------------------------------------- */

/* The optional "stats" flag: the search then reports what it added to FAISS's
 * global search statistics (engine.h), and is never batched with others. */
static int prep_stats(fpx_req *r) {
    if (fpx_req_bool(r, "stats", &r->want_stats))
        return -1;
    r->params.stats = r->want_stats ? &r->stats : NULL;
    return 0;
}

/* The counters of engine.h's FPX_SEARCH_STATS, in its order (each FAISS
 * object's rows together). */
typedef struct stats_row {
    const char *object, *field;
    size_t offset;
    int is_double;
} stats_row;

static const stats_row stats_rows[] = {
#define STATS_ROW(object, field, type)                                                             \
    {#object, #field, offsetof(fpx_search_stats, object##_##field), (type)0.5 != 0},
    FPX_SEARCH_STATS(STATS_ROW)
#undef STATS_ROW
};
#define NSTATS_ROWS (sizeof stats_rows / sizeof stats_rows[0])

/* Rows from i on that belong to the same FAISS object as row i. */
static uint32_t stats_object_rows(size_t i) {
    uint32_t n = 0;
    while (i + n < NSTATS_ROWS && !strcmp(stats_rows[i + n].object, stats_rows[i].object))
        n++;
    return n;
}

/* The reply's "stats" map: FAISS's global objects by their faiss.cvar names,
 * each with FAISS's field names, and "exact". A metadata filter or deleted
 * vectors not yet compacted away make the counts other than those of FAISS's
 * search of the same live vectors: exact is then false. */
static void pack_search_stats(fpx_req *r, msgpack_packer *h) {
    const fpx_search_stats *s = &r->stats;
    const msgpack_object *filter = r->msg.meta;
    int filtered = filter && filter->type == MSGPACK_OBJECT_MAP && filter->via.map.size > 0;
    int exact = s->exact && !filtered && r->ix->nlive == r->ix->nslots;
    uint32_t objects = 0;
    for (size_t i = 0; i < NSTATS_ROWS; i += stats_object_rows(i))
        objects++;
    fpx_pack_cstr(h, "stats");
    msgpack_pack_map(h, 1 + objects);
    fpx_pack_cstr(h, "exact");
    fpx_pack_bool(h, exact);
    for (size_t i = 0; i < NSTATS_ROWS; i++) {
        if (i == 0 || strcmp(stats_rows[i].object, stats_rows[i - 1].object)) {
            fpx_pack_cstr(h, stats_rows[i].object);
            msgpack_pack_map(h, stats_object_rows(i));
        }
        const char *at = (const char *)s + stats_rows[i].offset;
        fpx_pack_cstr(h, stats_rows[i].field);
        if (stats_rows[i].is_double) {
            double v;
            memcpy(&v, at, sizeof v);
            msgpack_pack_double(h, v);
        } else {
            uint64_t v;
            memcpy(&v, at, sizeof v);
            msgpack_pack_uint64(h, v);
        }
    }
}

/* ---- search ------------------------------------------------------------------------ */

/* The optional id_selector (FAISS's IDSelector* of a search's params): a
 * search carrying one answers as FAISS's search with that selector does. */
static int prep_id_selector(fpx_req *r) {
    const msgpack_object *sel = fpx_map_get(r->h, "id_selector");
    if (fpx_idsel_check(sel, &r->err))
        return -1;
    r->params.as_faiss = fpx_idsel_present(sel);
    return 0;
}

/* The optional "reconstruct" flag: the reply carries each hit's vector as
 * FAISS's search_and_reconstruct gives it, and the search runs as that one
 * does (engine.h, whole_batch); such a search is never batched with others. */
/* The optional "complete" flag (default true): false leaves the queries that
 * the index's search answers short as they are (engine.h, uncompleted). */
static int prep_complete(fpx_req *r) {
    const msgpack_object *o = fpx_map_get(r->h, "complete");
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "complete must be a boolean");
    r->params.uncompleted = !o->via.boolean;
    return 0;
}

static int prep_reconstruct(fpx_req *r) {
    if (fpx_req_bool(r, "reconstruct", &r->want_recons))
        return -1;
    r->params.whole_batch = r->want_recons;
    return 0;
}

int fpx_prep_search(fpx_req *r) {
    if (fpx_req_int(r, "k", 1, &r->k))
        return -1;
    if (r->k < 1)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "k must be >= 1, got %lld", (long long)r->k);
    if (r->k > FPX_K_MAX)
        return fpx_err_set(&r->err, FPX_E_LIMIT, "k must be at most %d, got %lld", FPX_K_MAX,
                           (long long)r->k);
    return fpx_req_bool(r, "include_metadata", &r->include_meta) || fpx_req_search_params(r) ||
                   fpx_index_check_filter(r->msg.meta, &r->err) || prep_id_selector(r) ||
                   prep_stats(r) || prep_reconstruct(r) || prep_complete(r)
               ? -1
               : 0;
}

int fpx_search_plain(const fpx_req *r) {
    const msgpack_object *filter = r->msg.meta;
    return !r->want_stats && !r->want_recons &&
           (!filter || filter->type != MSGPACK_OBJECT_MAP || filter->via.map.size == 0) &&
           !fpx_idsel_present(fpx_map_get(r->h, "id_selector"));
}

/* A refinement asks its base index for k * k_factor results a query, and
 * FAISS 1.7.3 allocates and fills them all (past the base's size too): held
 * to the same bound as the results themselves. Checked under the index's
 * lock: a compaction swaps the engine that k_factor is read from. */
static int check_refine_bound(fpx_req *r) {
    double f = r->ix->binary ? 1 : fpx_engine_results_factor(r->ix->eng);
    double base = (double)r->n * (double)(int64_t)((double)r->k * f);
    if (f > 1 && base > (double)(r->s->cfg->max_message_size / 12))
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "a search of this index asks its base index for k x k_factor results "
                           "a query, at most %llu in all (the message size limit / 12, as for "
                           "results), got %.0f (%lld queries x k=%lld x k_factor=%g): FAISS "
                           "1.7.3 allocates and fills them all",
                           (unsigned long long)(r->s->cfg->max_message_size / 12), base,
                           (long long)r->n, (long long)r->k, f);
    return 0;
}

int fpx_bind_search(fpx_req *r) {
    if (fpx_req_vectors(r, r->ix, 0, &r->n, &r->x, NULL, NULL))
        return -1;
    if (r->want_recons && r->ix->binary)
        return fpx_err_set(&r->err, FPX_E_UNSUPPORTED,
                           "reconstruct is served on float indexes only");
    /* bytes a result takes: distance and label, and the vector when asked */
    uint64_t per = 12 + (r->want_recons ? 4 * (uint64_t)r->ix->dim : 0);
    if ((uint64_t)r->n * (uint64_t)r->k > r->s->cfg->max_message_size / per)
        return fpx_err_set(
            &r->err, FPX_E_LIMIT,
            "the reply (%lld queries x k=%lld%s) would exceed the message size limit",
            (long long)r->n, (long long)r->k, r->want_recons ? ", with their vectors" : "");
    /* Arriving from now: a search of the same connection holding its lock
     * already waits for this one to join its batch (dispatch.c). */
    if (fpx_search_plain(r) && !r->inline_try) {
        fpx_batch_enter(&r->ix->batch);
        r->batching = 1;
    }
    return 0;
}

/* A search asking for statistics or vectors: the header (which carries the
 * statistics) is complete before the data section starts, and the vectors are
 * read at the hits' positions, so the search writes into buffers of its own,
 * copied into the reply after it (one copy, for these alone). The vectors
 * follow the labels in the data section, n*k rows of dim float32. */
static int search_buffered(fpx_req *r, fpx_out *o) {
    fpx_index *ix = r->ix;
    int64_t nq = r->n, k = r->k;
    size_t nres = (size_t)nq * (size_t)k;
    size_t rbytes = r->want_recons ? nres * 4 * (size_t)ix->dim : 0;
    void *D = malloc(nres ? nres * 4 : 1);
    int64_t *I = malloc(nres ? nres * sizeof *I : 1);
    int rc = 0;
    if (!D || !I)
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    if (rc == 0)
        rc = fpx_index_search_sel(ix, nq, r->x, k, &r->params, r->msg.meta,
                                  fpx_map_get(r->h, "id_selector"), D, I, &r->err);
    uint8_t *data = NULL;
    if (rc == 0) {
        msgpack_packer *h = fpx_reply_search(r, o, ix->binary, nq, k, r->want_stats != 0);
        if (r->want_stats)
            pack_search_stats(r, h);
        if (!(data = fpx_out_data(o, nres * 12 + rbytes)))
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
    }
    if (rc == 0 && r->want_recons)
        rc = fpx_engine_reconstruct_hits(ix->eng, (int64_t)nres, I, data + nres * 12, &r->err);
    if (rc == 0) {
        if (ix->nkeys > 0 || r->include_meta) {
            msgpack_packer *m = fpx_out_meta(o);
            msgpack_pack_array(m, (size_t)nq);
            for (int64_t q = 0; q < nq; q++)
                pack_hits(ix, I + q * k, (size_t)k, m);
        }
        for (size_t i = 0; i < nres; i++)
            I[i] = fpx_index_label_of(ix, I[i]);
        memcpy(data, D, nres * 4);
        memcpy(data + nres * 4, I, nres * sizeof *I);
    }
    free(D);
    free(I);
    return rc;
}

/* One query's time, into the index's moving average (a quarter each). */
static void note_query_time(fpx_index *ix, uint64_t ns) {
    uint64_t old = atomic_load_explicit(&ix->query_ns, memory_order_relaxed);
    uint64_t avg = old ? old - old / 4 + ns / 4 : ns;
    atomic_store_explicit(&ix->query_ns, avg ? avg : 1, memory_order_relaxed);
}

int fpx_op_search(fpx_req *r, fpx_out *o) {
    if (check_refine_bound(r)) {
        if (r->batching) {
            fpx_batch_cancel(&r->ix->batch);
            r->batching = 0;
        }
        return -1;
    }
    if (r->want_stats || r->want_recons)
        return search_buffered(r, o);
    fpx_index *ix = r->ix;
    int64_t nq = r->n, k = r->k;
    int64_t *Itmp = NULL;
    int rc = 0;
    const msgpack_object *filter = r->msg.meta;
    const msgpack_object *sel = fpx_map_get(r->h, "id_selector");
    int batching = r->batching;
    r->batching = 0; /* taken off below, by the search or by cancelling */
    size_t nres = (size_t)nq * (size_t)k;
    fpx_reply_search(r, o, ix->binary, nq, k, 0); /* int32 Hamming distances: the same width */
    uint8_t *data = fpx_out_data(o, nres * 12);
    if (!data)
        rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
    float *D = (float *)data;
    int64_t *I = NULL;
    if (rc == 0) {
        /* Labels follow nq*k floats: 8-aligned only when nq*k is even. */
        if (nres % 2 == 0) {
            I = (int64_t *)(data + nres * 4);
        } else if (!(I = Itmp = malloc(nres * sizeof *I))) {
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
        }
    }
    uint64_t t0 = fpx_now_ns();
    if (rc == 0 && batching)
        rc = fpx_batch_search(ix, nq, r->x, k, &r->params, D, I, &r->err);
    else if (rc == 0)
        rc = fpx_index_search_sel(ix, nq, r->x, k, &r->params, filter, sel, D, I, &r->err);
    else if (batching)
        fpx_batch_cancel(&ix->batch);
    if (rc == 0 && nq > 0 && fpx_search_plain(r))
        note_query_time(ix, (fpx_now_ns() - t0) / (uint64_t)nq);
    if (rc == 0) {
        if (ix->nkeys > 0 || r->include_meta) {
            msgpack_packer *m = fpx_out_meta(o);
            msgpack_pack_array(m, (size_t)nq);
            for (int64_t q = 0; q < nq; q++)
                pack_hits(ix, I + q * k, (size_t)k, m);
        }
        for (size_t i = 0; i < nres; i++)
            I[i] = fpx_index_label_of(ix, I[i]);
        if (Itmp)
            memcpy(data + nres * 4, Itmp, nres * sizeof *I);
    }
    free(Itmp);
    return rc;
}

/* ---- range_search ------------------------------------------------------------------ */

int fpx_prep_range_search(fpx_req *r) {
    if (fpx_req_number(r, "radius", &r->radius) ||
        fpx_req_bool(r, "include_metadata", &r->include_meta) || fpx_req_search_params(r) ||
        fpx_index_check_filter(r->msg.meta, &r->err) || prep_id_selector(r) || prep_stats(r))
        return -1;
    if (fabs(r->radius) > 3.4e38)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "radius must fit a float32");
    return 0;
}

int fpx_bind_range_search(fpx_req *r) {
    return fpx_req_vectors(r, r->ix, 0, &r->n, &r->x, NULL, NULL);
}

int fpx_op_range_search(fpx_req *r, fpx_out *o) {
    fpx_index *ix = r->ix;
    int64_t nq = r->n;
    int64_t *lims = NULL, *I = NULL;
    float *D = NULL;
    int rc = fpx_index_range_search_sel(ix, nq, r->x, (float)r->radius, &r->params, r->msg.meta,
                                        fpx_map_get(r->h, "id_selector"), &lims, &D, &I, &r->err);
    size_t nres = rc == 0 ? (size_t)lims[nq] : 0;
    if (rc == 0 && (nres * 12 + (size_t)(nq + 1) * 8) > r->s->cfg->max_message_size)
        rc = fpx_err_set(&r->err, FPX_E_LIMIT,
                         "%zu results would exceed the message size limit: use a smaller radius",
                         nres);
    if (rc == 0) {
        msgpack_packer *h = fpx_reply_ok(r, o, 2 + (r->want_stats != 0));
        fpx_pack_cstr(h, "nq");
        msgpack_pack_int64(h, nq);
        fpx_pack_cstr(h, "nres");
        msgpack_pack_uint64(h, nres);
        if (r->want_stats)
            pack_search_stats(r, h);
        size_t lsz = (size_t)(nq + 1) * sizeof(int64_t);
        uint8_t *data = fpx_out_data(o, lsz + nres * 12);
        if (!data) {
            rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
        } else {
            /* lims, then labels (both int64, 8-aligned), then distances */
            memcpy(data, lims, lsz);
            if (ix->nkeys > 0 || r->include_meta)
                pack_hits(ix, I, nres, fpx_out_meta(o));
            for (size_t i = 0; i < nres; i++)
                I[i] = fpx_index_label_of(ix, I[i]);
            memcpy(data + lsz, I, nres * sizeof(int64_t));
            memcpy(data + lsz + nres * sizeof(int64_t), D, nres * sizeof(float));
        }
    }
    free(lims);
    free(D);
    free(I);
    return rc;
}
