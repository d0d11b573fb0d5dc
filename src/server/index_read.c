/*
 * index_read.c - what one index's requests read through its slot tables
 * (index.c): searches narrowed to the live slots, a filter's matches and an
 * id selector's labels, the hits' keys and metadata, and the info map.
 */
#include "index.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "idsel.h"
#include "index_impl.h"

/* ---- search ---------------------------------------------------------------------- */

/* The allowed set of a search: the filter's matches, or the live slots when
 * some are dead, or NULL (everything); then only the slots whose label the id
 * selector sel (may be NULL) selects. *owned is what to free after. */
static int allowed_set(const fpx_index *ix, const msgpack_object *filter, const msgpack_object *sel,
                       fpx_bitset *set, const fpx_bitset **allowed, uint64_t **owned,
                       fpx_err *err) {
    *owned = NULL;
    *allowed = NULL;
    memset(set, 0, sizeof *set);
    if (filter && filter->type == MSGPACK_OBJECT_MAP && filter->via.map.size > 0) {
        if (fpx_filter_select(ix, filter, owned, &set->count))
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory building the filter");
        set->words = *owned;
        set->nbits = ix->nslots;
        *allowed = set;
    } else if (fpx_idsel_present(sel)) {
        size_t nw = fpx_words_for(ix->nslots);
        if (!(*owned = malloc((nw ? nw : 1) * sizeof **owned)))
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory building the id selector");
        if (nw)
            memcpy(*owned, ix->alive, nw * sizeof **owned);
        *set = fpx_index_live(ix);
        set->words = *owned;
        *allowed = set;
    } else if (ix->nlive < ix->nslots) {
        *set = fpx_index_live(ix);
        *allowed = set;
    }
    if (fpx_idsel_present(sel) && fpx_idsel_apply(ix, sel, *owned, &set->count)) {
        free(*owned);
        *owned = NULL;
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory applying the id selector");
    }
    return 0;
}

int fpx_index_search(fpx_index *ix, int64_t nq, const void *x, int64_t k,
                     const fpx_search_params *params, const msgpack_object *filter, void *D,
                     int64_t *I, fpx_err *err) {
    return fpx_index_search_sel(ix, nq, x, k, params, filter, NULL, D, I, err);
}

int fpx_index_search_sel(fpx_index *ix, int64_t nq, const void *x, int64_t k,
                         const fpx_search_params *params, const msgpack_object *filter,
                         const msgpack_object *sel, void *D, int64_t *I, fpx_err *err) {
    uint64_t *owned;
    fpx_bitset set;
    const fpx_bitset *allowed;
    if (allowed_set(ix, filter, sel, &set, &allowed, &owned, err))
        return -1;
    int rc = 0;
    if (ix->nslots == 0 || (allowed && allowed->count == 0)) {
        /* Nothing can match: answer as FAISS does for an empty index (whose
         * search FAISS would still have counted). */
        if (params && params->stats) {
            memset(params->stats, 0, sizeof *params->stats);
            params->stats->exact = 0;
        }
        float none = ix->metric == FPX_METRIC_IP ? -FLT_MAX : FLT_MAX;
        for (int64_t i = 0; i < nq * k; i++) {
            if (ix->metric == FPX_METRIC_HAMMING)
                ((int32_t *)D)[i] = INT32_MAX;
            else
                ((float *)D)[i] = none;
            I[i] = -1;
        }
    } else {
        rc = fpx_engine_search(ix->eng, nq, x, k, params, allowed, D, I, err);
    }
    free(owned);
    return rc;
}

int fpx_index_range_search(fpx_index *ix, int64_t nq, const void *x, float radius,
                           const fpx_search_params *params, const msgpack_object *filter,
                           int64_t **lims, float **D, int64_t **I, fpx_err *err) {
    return fpx_index_range_search_sel(ix, nq, x, radius, params, filter, NULL, lims, D, I, err);
}

int fpx_index_range_search_sel(fpx_index *ix, int64_t nq, const void *x, float radius,
                               const fpx_search_params *params, const msgpack_object *filter,
                               const msgpack_object *sel, int64_t **lims, float **D, int64_t **I,
                               fpx_err *err) {
    uint64_t *owned;
    fpx_bitset set;
    const fpx_bitset *allowed;
    if (allowed_set(ix, filter, sel, &set, &allowed, &owned, err))
        return -1;
    int rc = fpx_engine_range_search(ix->eng, nq, x, radius, params, allowed, lims, D, I, err);
    free(owned);
    return rc;
}

/* Appends raw, already-encoded msgpack bytes to a packer's output. */
static void pack_raw(msgpack_packer *pk, const void *p, size_t n) {
    pk->callback(pk->data, (const char *)p, n);
}

void fpx_index_pack_hit(const fpx_index *ix, int64_t slot, msgpack_packer *pk) {
    if (slot < 0) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_map(pk, 2);
    fpx_pack_cstr(pk, "id");
    const fpx_blob *k = ix->keys ? ix->keys[slot] : NULL;
    if (k)
        pack_raw(pk, k->data, k->len);
    else
        msgpack_pack_int64(pk, fpx_index_label_of(ix, slot));
    fpx_pack_cstr(pk, "metadata");
    const fpx_blob *m = ix->meta ? ix->meta[slot] : NULL;
    if (m)
        pack_raw(pk, m->data, m->len);
    else
        msgpack_pack_nil(pk);
}

/* The search and build knobs the index has, with their current values
 * ("params": {"nprobe": 1, ...}): what a per-search params map or set_params
 * changes, readable back. */
static void pack_knobs(const fpx_index *ix, msgpack_packer *pk) {
    static const char *const names[] = {
        "nlist", "nprobe",      "efSearch",      "efConstruction",
        "nflip", "search_type", "polysemous_ht", "quantizer_efSearch"};
    enum { NKNOBS = sizeof names / sizeof names[0] };
    double v[NKNOBS];
    int have[NKNOBS], n = 0;
    for (int i = 0; i < NKNOBS; i++)
        n += have[i] = fpx_engine_get_param(ix->eng, names[i], &v[i]) == 0;
    /* and the members set_params sets that FAISS's write_index leaves out */
    const char *mnames[FPX_MEMBERS_MAX];
    int64_t mv[FPX_MEMBERS_MAX], dflt;
    int nm = 0;
    for (int i = 0; nm < FPX_MEMBERS_MAX && fpx_engine_member_param(i, &dflt); i++)
        if (fpx_engine_get_member(ix->eng, fpx_engine_member_param(i, &dflt), &mv[nm]) == 0)
            mnames[nm++] = fpx_engine_member_param(i, &dflt);
    msgpack_pack_map(pk, (size_t)(n + nm));
    for (int i = 0; i < NKNOBS; i++)
        if (have[i]) {
            fpx_pack_cstr(pk, names[i]);
            msgpack_pack_int64(pk, (int64_t)v[i]);
        }
    for (int i = 0; i < nm; i++) {
        fpx_pack_cstr(pk, mnames[i]);
        msgpack_pack_int64(pk, mv[i]);
    }
}

/* A comma-separated list as a msgpack array of its items. */
static void pack_list(msgpack_packer *pk, const char *list) {
    size_t n = 1;
    for (const char *c = list; *c; c++)
        n += *c == ',';
    msgpack_pack_array(pk, n);
    for (const char *c = list;;) {
        const char *end = strchr(c, ',');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        msgpack_pack_str(pk, len);
        msgpack_pack_str_body(pk, c, len);
        if (!end)
            break;
        c = end + 1;
    }
}

void fpx_index_pack_info(const fpx_index *ix, msgpack_packer *pk) {
    int extra = ix->metric >= FPX_METRIC_L1;
    int64_t lease = ix->lease_seconds;
    double left = 0;
    if (ix->lease_of) { /* a cluster's */
        if (!ix->lease_of(ix->lease_ctx, ix->uid, &lease, &left))
            lease = 0;
    } else if (lease > 0) { /* renewed and expired by lease.c */
        uint64_t at = atomic_load(&ix->lease_renewed_ns), now = fpx_now_ns();
        left = (double)lease - (now > at ? (double)(now - at) / 1e9 : 0);
    }
    int fenced = ix->fence_id[0] != 0;
    msgpack_pack_map(pk, 11 + extra + (lease > 0 ? 2 : 0) + (ix->placement ? 2 : 0) + fenced);
    if (ix->placement) { /* cluster mode */
        fpx_pack_cstr(pk, "replicas");
        pack_list(pk, ix->placement);
        fpx_pack_cstr(pk, "applied_seq");
        msgpack_pack_uint64(pk, ix->seq);
    }
    if (fenced) { /* a merge_from out of it under way: its writes wait */
        fpx_pack_cstr(pk, "merging_into");
        fpx_pack_cstr(pk, ix->fence_to);
    }
    fpx_pack_cstr(pk, "params");
    pack_knobs(ix, pk);
    if (lease > 0) {
        fpx_pack_cstr(pk, "lease_seconds");
        msgpack_pack_int64(pk, lease);
        fpx_pack_cstr(pk, "lease_remaining");
        msgpack_pack_double(pk, left > 0 ? left : 0);
    }
    fpx_pack_cstr(pk, "index_id");
    fpx_pack_cstr(pk, ix->name);
    fpx_pack_cstr(pk, "dimension");
    msgpack_pack_int64(pk, ix->dim);
    fpx_pack_cstr(pk, "index_type");
    fpx_pack_cstr(pk, ix->index_type);
    fpx_pack_cstr(pk, "metric");
    fpx_pack_cstr(pk, fpx_metric_name(ix->metric));
    if (extra) { /* FAISS keeps (and serializes) it with these metrics only */
        fpx_pack_cstr(pk, "metric_arg");
        msgpack_pack_double(pk, fpx_engine_metric_arg(ix->eng));
    }
    fpx_pack_cstr(pk, "ntotal");
    msgpack_pack_int64(pk, ix->nlive);
    fpx_pack_cstr(pk, "tombstones"); /* deleted, still held until compacted */
    msgpack_pack_int64(pk, ix->nslots - ix->nlive);
    fpx_pack_cstr(pk, "write_seq"); /* changes with every write: a reader's version */
    msgpack_pack_uint64(pk, ix->seq);
    fpx_pack_cstr(pk, "is_trained");
    if (fpx_engine_is_trained(ix->eng))
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    fpx_pack_cstr(pk, "has_keys");
    if (ix->nkeys > 0)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    /* FAISS's classes, so that a drop-in gives the program the object FAISS's
     * factory would (an IVF's nprobe, an HNSW's efSearch) */
    char classes[256];
    fpx_engine_classes(ix->eng, classes, sizeof classes);
    fpx_pack_cstr(pk, "faiss_classes");
    pack_list(pk, classes);
}
