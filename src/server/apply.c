/*
 * apply.c - applying log records to an index: the one path every write takes,
 * live (after its record is durable) and at replay.
 *
 * A record is checked again here, not trusted: it passed a checksum, but a
 * record written by an older version, or a setting that was accepted before
 * its range was checked, must fail cleanly rather than corrupt an index.
 */
#include "apply.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decodes an optional msgpack object stored in a log record. */
int fpx_unpack_stored(const uint8_t *p, size_t len, msgpack_unpacked *u, const msgpack_object **obj,
                      fpx_err *err) {
    *obj = NULL;
    msgpack_unpacked_init(u);
    if (len == 0)
        return 0;
    size_t used = 0, off = 0;
    if (fpx_msgpack_check(p, len, &used, err) || used != len ||
        msgpack_unpack_next(u, (const char *)p, len, &off) != MSGPACK_UNPACK_SUCCESS)
        return fpx_err_set(err, FPX_E_INTERNAL, "log record metadata is not valid msgpack");
    *obj = &u->data;
    return 0;
}

/* ---- remove_ids ----------------------------------------------------------------- */

/* Reads {"ids": [int...]} or {"range": [lo, hi]} from a map (the request
 * header or a log record) into a malloc'd label list or a range. */
int fpx_remove_spec(const msgpack_object *map, int64_t **labels, int64_t *n, int64_t *lo,
                    int64_t *hi, fpx_err *err) {
    const msgpack_object *ids = fpx_map_get(map, "ids"), *range = fpx_map_get(map, "range");
    *labels = NULL;
    *n = 0;
    if (ids && ids->type == MSGPACK_OBJECT_NIL)
        ids = NULL;
    if (range && range->type == MSGPACK_OBJECT_NIL)
        range = NULL;
    if (!ids == !range)
        return fpx_err_set(err, FPX_E_VALIDATION, "give exactly one of ids, range");
    if (range) {
        if (range->type != MSGPACK_OBJECT_ARRAY || range->via.array.size != 2 ||
            fpx_obj_int(&range->via.array.ptr[0], lo) || fpx_obj_int(&range->via.array.ptr[1], hi))
            return fpx_err_set(err, FPX_E_VALIDATION, "range must be [lo, hi] integers");
        return 0;
    }
    if (ids->type != MSGPACK_OBJECT_ARRAY)
        return fpx_err_set(err, FPX_E_VALIDATION, "ids must be a list of integer labels");
    uint32_t cnt = ids->via.array.size;
    *labels = malloc(sizeof(int64_t) * (cnt ? cnt : 1));
    if (!*labels)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    for (uint32_t i = 0; i < cnt; i++) {
        if (fpx_obj_int(&ids->via.array.ptr[i], &(*labels)[i])) {
            free(*labels);
            *labels = NULL;
            return fpx_err_set(err, FPX_E_VALIDATION, "ids[%u] must be an integer label", i);
        }
    }
    *n = cnt;
    return 0;
}

static int apply_remove(fpx_index *ix, const msgpack_object *meta, fpx_err *err) {
    int64_t *labels, n, lo = 0, hi = 0, removed;
    if (!meta || fpx_remove_spec(meta, &labels, &n, &lo, &hi, err))
        return fpx_err_set(err, FPX_E_INTERNAL, "remove record is not valid");
    int rc = fpx_index_remove(ix, n, labels, lo, hi, &removed, err);
    free(labels);
    return rc;
}

/* ---- set_params ------------------------------------------------------------------ */

/* The parameters set_params accepts, with their ranges. FAISS's
 * ParameterSpace takes any double and stores it, so nprobe=0 or efSearch=0
 * would be kept (and logged) and break every later search: each name is
 * checked here the way per-search params are. "quantizer_" + a name applies
 * the name's rule to an IVF's quantizer; "verbose" is refused (FAISS would
 * print on the server's stdout). */
static const struct {
    const char *name;
    double lo, hi;
    int integer;
    const char *what;
} param_rules[] = {
    {"nprobe", 1, 1 << 20, 1, "lists probed per query"},
    {"efSearch", 1, 1 << 20, 1, "HNSW search depth"},
    {"efConstruction", 1, 1 << 20, 1, "HNSW build depth"},
    {"max_codes", 0, 9007199254740992.0, 1, "codes scanned per query, 0 = no limit"},
    {"ht", 0, 1 << 20, 1, "polysemous Hamming threshold"},
    {"k_factor", 1, 1 << 20, 0, "refinement factor"},
    {"k_factor_rf", 1, 1 << 20, 1, "refinement factor"},
    {"direct_map", 0, 2, 1, "0 none, 1 array, 2 hash table"},
    {"by_residual", 0, 1, 1, "IVF-PQ/SQ/AQ/fast-scan residual encoding, before training"},
    {"implem", 0, 15, 1, "fast-scan search implementation"},
    {"qbs", 0, 0x44444444, 1, "fast-scan query block sizes, one hex digit 1..4 each"},
    {"norm_scale", 1, 1 << 16, 1, "additive fast-scan norm scale"},
    {"nflip", 0, 64, 1, "bits a binary hash index's search flips"},
    {"parallel_mode", 0, 3, 1, "IVF search loop order"},
    {"use_heap", 0, 1, 1, "binary flat/IVF result heap, 1 heap, 0 counting"},
    {"search_bounded_queue", 0, 1, 1, "HNSW candidate queue bounded by efSearch"},
    {"search_type", 0, 5, 1, "IndexPQ search type, ST_PQ 0 .. ST_polysemous_generalize 5"},
    {"polysemous_ht", 0, 1 << 20, 1, "IndexPQ/IndexIVFPQ polysemous Hamming threshold"},
    {"use_precomputed_table", -1, 2, 1,
     "IndexIVFPQ table: -1 none, 0 chosen, 1 per list, 2 a MultiIndexQuantizer's"},
    /* an IVF's ClusteringParameters, which its training reads */
    {"cp_niter", 1, 1 << 20, 1, "k-means iterations of an IVF's training"},
    {"cp_nredo", 1, 1 << 20, 1, "k-means runs, the best one kept"},
    {"cp_seed", -2147483648.0, 2147483647.0, 1, "k-means random seed"},
    {"cp_max_points_per_centroid", 1, 1 << 30, 1, "training points per centroid kept"},
    {"cp_spherical", 0, 1, 1, "k-means centroids normalized"},
    {"cp_int_centroids", 0, 1, 1, "k-means centroids rounded to integers"},
    {"cp_update_index", 0, 1, 1, "k-means index updated at each iteration"},
    {"cp_frozen_centroids", 0, 1, 1, "k-means initial centroids kept"},
};

/* Settings of the index itself, never of its quantizer. */
static int own_only(const char *base) {
    if (!strncmp(base, "cp_", 3))
        return 1;
    static const char *const own[] = {"direct_map",  "by_residual",   "implem",
                                      "qbs",         "norm_scale",    "nflip",
                                      "use_heap",    "parallel_mode", "search_bounded_queue",
                                      "search_type", "polysemous_ht", "use_precomputed_table"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (!strcmp(base, own[i]))
            return 1;
    return 0;
}

/* FAISS's fast-scan search reads qbs one hex digit at a time, from the
 * lowest, as the number of queries (1..4) of each block; any other digit
 * below the highest set one makes it throw, and inside a parallel region. */
static int qbs_valid(double v) {
    for (uint64_t q = (uint64_t)v; q; q >>= 4)
        if ((q & 15) < 1 || (q & 15) > 4)
            return 0;
    return 1;
}

static int check_param(const char *name, double v, fpx_err *err) {
    const char *base = name;
    while (!strncmp(base, "quantizer_", 10))
        base += 10;
    for (size_t i = 0; i < sizeof param_rules / sizeof param_rules[0]; i++) {
        if (strcmp(param_rules[i].name, base))
            continue;
        if (own_only(base) && base != name)
            break;
        /* FAISS's write_index leaves these two out: snapshots carry them for
         * an index and its quantizer (the engine's members), not deeper */
        if ((!strcmp(base, "max_codes") || !strcmp(base, "ht")) && base - name > 10)
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "%s is not served: %s is kept for an index and its quantizer "
                               "only (quantizer_%s), not for a quantizer's quantizer",
                               name, base, base);
        if (v < param_rules[i].lo || v > param_rules[i].hi ||
            (param_rules[i].integer && v != floor(v)) || (!strcmp(base, "qbs") && !qbs_valid(v)))
            return fpx_err_set(
                err, FPX_E_VALIDATION, "%s (%s) must be %s in %.17g..%.17g, got %.17g", name,
                param_rules[i].what, param_rules[i].integer ? "an integer" : "a number",
                param_rules[i].lo, param_rules[i].hi, v);
        return 0;
    }
    return fpx_err_set(err, FPX_E_VALIDATION,
                       "set_params does not accept \"%s\" (accepted: nprobe, efSearch, "
                       "efConstruction, max_codes, ht, k_factor, k_factor_rf, direct_map, "
                       "by_residual, implem, qbs, norm_scale, nflip, parallel_mode, use_heap, "
                       "search_bounded_queue, search_type, polysemous_ht, "
                       "use_precomputed_table, cp_niter, cp_nredo, cp_seed, "
                       "cp_max_points_per_centroid, cp_spherical, cp_int_centroids, "
                       "cp_update_index, cp_frozen_centroids, and quantizer_ before a search "
                       "parameter)",
                       name);
}

/* A FAISS member its write_index leaves out (the engine's list). */
static int param_is_member(const char *name) {
    int64_t dflt;
    for (int i = 0; fpx_engine_member_param(i, &dflt); i++)
        if (!strcmp(name, fpx_engine_member_param(i, &dflt)))
            return 1;
    return 0;
}

/* name and value of a set_params request or record. */
int fpx_param_spec(const msgpack_object *map, char *name, double *value, fpx_err *err) {
    const msgpack_object *n = fpx_map_get(map, "name"), *v = fpx_map_get(map, "value");
    const char *s;
    size_t len;
    int64_t i;
    if (!n || fpx_obj_str(n, &s, &len) || len == 0 || len > FPX_PARAM_NAME_MAX)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "name must be a FAISS parameter name (e.g. \"nprobe\")");
    for (size_t k = 0; k < len; k++)
        if (!((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= 'A' && s[k] <= 'Z') ||
              (s[k] >= '0' && s[k] <= '9') || s[k] == '_'))
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "name must hold only letters, digits and '_'");
    if (v && (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64))
        *value = v->via.f64;
    else if (v && fpx_obj_int(v, &i) == 0)
        *value = (double)i;
    else
        return fpx_err_set(err, FPX_E_VALIDATION, "value must be a number");
    if (!isfinite(*value))
        return fpx_err_set(err, FPX_E_VALIDATION, "value must be finite");
    memcpy(name, s, len);
    name[len] = 0;
    return check_param(name, *value, err);
}

static int set_param(fpx_index *ix, const char *name, double value, fpx_err *err) {
    if (!strcmp(name, "direct_map")) /* IndexIVF::make_direct_map, not a ParameterSpace name */
        return fpx_engine_set_direct_map(ix->eng,
                                         value == 0   ? 0
                                         : value == 1 ? 1
                                         : value == 2 ? 2
                                                      : -1,
                                         err);
    if (!strcmp(name, "by_residual")) /* a member FAISS's ParameterSpace does not know */
        return fpx_engine_set_by_residual(ix->eng, value != 0, err);
    if (!strcmp(name, "implem") || !strcmp(name, "qbs") || !strcmp(name, "norm_scale"))
        return fpx_engine_set_fast_scan(ix->eng, name, (int64_t)value, err);
    if (!strcmp(name, "search_type") || !strcmp(name, "polysemous_ht"))
        return fpx_engine_set_pq_search(ix->eng, name, (int64_t)value, err);
    if (param_is_member(name)) /* members FAISS's ParameterSpace does not know */
        return fpx_engine_set_member(ix->eng, name, (int64_t)value, err);
    char spec[FPX_PARAM_NAME_MAX + 40];
    snprintf(spec, sizeof spec, "%s=%.17g", name, value);
    return fpx_engine_set_params(ix->eng, spec, err);
}

/* A setting whose value is out of range can only come from a log written
 * before ranges were checked (nprobe=0 made every search fail, for good): it
 * is skipped, with a warning, and the index keeps its previous value. */
static int apply_param(fpx_index *ix, const msgpack_object *meta, fpx_err *err) {
    char name[FPX_PARAM_NAME_MAX + 1];
    double value;
    if (!meta)
        return fpx_err_set(err, FPX_E_INTERNAL, "set_params record is not valid");
    fpx_err bad = {0};
    if (fpx_param_spec(meta, name, &value, &bad) != 0) {
        fpx_log(FPX_LOG_WARN, "%s/%s: skipping a logged setting: %s", ix->tenant, ix->name,
                bad.msg);
        return 0;
    }
    return set_param(ix, name, value, err);
}

/* set_lease: the index's new lease; 0 for none. */
static int apply_lease(fpx_index *ix, const msgpack_object *meta, fpx_err *err) {
    const msgpack_object *v = meta ? fpx_map_get(meta, "lease_seconds") : NULL;
    int64_t secs;
    if (!v || fpx_obj_int(v, &secs) || secs < 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "lease record without a valid lease_seconds");
    ix->lease_seconds = secs;
    atomic_store(&ix->lease_renewed_ns, fpx_now_ns()); /* counted from the change */
    return 0;
}

/* ---- a trained index --------------------------------------------------------------- */

/* FAISS's k-means is not bit-reproducible across runs, machines and thread
 * counts, so the record of a train carries the trained index
 * (fpx_train_record): a replay after a crash, and every replica of a
 * cluster, replaces its engine with the same bytes. The engine it replaces
 * held the same vectors (the record was trained from a copy of it at this
 * very sequence), so the slot tables stay as they are. */
static int apply_trained(fpx_index *ix, const fpx_walrec *rec, fpx_err *err) {
    fpx_engine *e;
    if (fpx_engine_deserialize(rec->data, rec->data_len, &e, err))
        return -1;
    if (fpx_engine_dim(e) != ix->dim || fpx_engine_ntotal(e) != ix->nslots ||
        fpx_engine_row_bytes(e) != ix->row_bytes) {
        fpx_engine_free(e);
        return fpx_err_set(err, FPX_E_INTERNAL,
                           "trained index record does not match the index (d=%lld, %lld vectors)",
                           (long long)ix->dim, (long long)ix->nslots);
    }
    fpx_engine_copy_train_params(e, ix->eng); /* a later train trains as this one did */
    fpx_engine_copy_members(e, ix->eng);      /* and searches run as set before it */
    fpx_engine_free(ix->eng);
    ix->eng = e;
    return 0;
}

int fpx_train_record(const fpx_index *ix, fpx_walrec *rec, uint8_t **buf, fpx_err *err) {
    size_t len;
    fpx_engine *e;
    *buf = NULL;
    if (fpx_engine_copy(ix->eng, &e, err) != 0)
        return -1;
    int rc = fpx_engine_train(e, rec->n, rec->data, err);
    if (rc == 0)
        rc = fpx_engine_serialize(e, buf, &len, err);
    fpx_engine_free(e);
    if (rc == 0)
        *rec = (fpx_walrec){.op = FPX_WAL_TRAINED, .data = *buf, .data_len = len};
    return rc;
}

/* ---- merge_from ----------------------------------------------------------------- */

/* The other index's export, read back and merged: the record holds all the
 * merge needs, so replay does not depend on the other index. */
static int apply_merge(fpx_index *ix, const fpx_walrec *rec, const msgpack_object *meta,
                       fpx_err *err) {
    const msgpack_object *a = meta ? fpx_map_get(meta, "add_id") : NULL;
    int64_t add_id;
    if (!a || fpx_obj_int(a, &add_id))
        return fpx_err_set(err, FPX_E_INTERNAL, "merge record without a valid add_id");
    /* Which index gave the vectors, and its last sequence then: its reset
     * comes next in its own log (merge.c). Records of earlier versions do
     * not say. */
    const msgpack_object *u = meta ? fpx_map_get(meta, "from_uid") : NULL;
    const msgpack_object *q = meta ? fpx_map_get(meta, "from_seq") : NULL;
    int64_t seq;
    int from = u && q && u->type == MSGPACK_OBJECT_BIN && u->via.bin.size == FPX_UID_BYTES &&
               fpx_obj_int(q, &seq) == 0 && seq >= 0;
    /* In a cluster, a merge finished by another node after this one's
     * publish may come twice (docs/cluster.md, "merge_from"): taken once. */
    for (const fpx_merge_todo *t = ix->merge_todo; from && t; t = t->next)
        if (t->seq == (uint64_t)seq && !memcmp(t->uid, u->via.bin.ptr, FPX_UID_BYTES))
            return 0;
    fpx_engine *other;
    int64_t *labels;
    int wrapper;
    if (fpx_engine_import(rec->data, rec->data_len, &other, &labels, &wrapper, err))
        return -1;
    int rc = fpx_index_merge(ix, other, labels, add_id, err);
    free(labels);
    fpx_engine_free(other);
    if (rc == 0 && from) {
        fpx_merge_todo *t = malloc(sizeof *t);
        if (!t)
            return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
        memcpy(t->uid, u->via.bin.ptr, FPX_UID_BYTES);
        t->seq = (uint64_t)seq;
        t->next = ix->merge_todo;
        ix->merge_todo = t;
    }
    return rc;
}

/* ---- merge_from in a cluster: the fence ------------------------------------------- */

/* meta's string key as a C string into out (cap bytes): 0, or -1. */
static int meta_str(const msgpack_object *meta, const char *key, char *out, size_t cap) {
    const msgpack_object *o = meta ? fpx_map_get(meta, key) : NULL;
    const char *p;
    size_t n;
    if (!o || fpx_obj_str(o, &p, &n) || n == 0 || n >= cap)
        return -1;
    memcpy(out, p, n);
    out[n] = 0;
    return 0;
}

int fpx_fence_refusal(const fpx_index *ix, fpx_err *err) {
    if (ix->fence_id[0])
        return fpx_err_set(err, FPX_E_UNAVAILABLE,
                           "index '%s' is being merged into '%s' (merge_from) already; try again "
                           "once that merge is done",
                           ix->name, ix->fence_to);
    if (fpx_index_has_entries(ix))
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "index '%s' holds caller keys or metadata, which merge_from does not "
                           "move",
                           ix->name);
    return 0;
}

/* A merge_from out of ix begins: its content as of this record is what the
 * target takes, so every later write of its stream is refused until the
 * merge's reset, or an unfence if the merge did not happen. */
static int apply_fence(fpx_index *ix, const msgpack_object *meta, fpx_err *err) {
    char id[FPX_FENCE_ID_MAX + 1], to[FPX_NAME_MAX + 1];
    const msgpack_object *u = meta ? fpx_map_get(meta, "to_uid") : NULL;
    const msgpack_object *a = meta ? fpx_map_get(meta, "add_id") : NULL;
    int64_t add_id;
    if (meta_str(meta, "merge_id", id, sizeof id) || meta_str(meta, "to", to, sizeof to) || !u ||
        u->type != MSGPACK_OBJECT_BIN || u->via.bin.size != FPX_UID_BYTES || !a ||
        fpx_obj_int(a, &add_id))
        return fpx_err_set(err, FPX_E_INTERNAL, "a merge fence record without its fields");
    if (fpx_fence_refusal(ix, err))
        return -1;
    snprintf(ix->fence_id, sizeof ix->fence_id, "%s", id);
    snprintf(ix->fence_to, sizeof ix->fence_to, "%s", to);
    memcpy(ix->fence_to_uid, u->via.bin.ptr, FPX_UID_BYTES);
    ix->fence_add_id = add_id;
    ix->fence_seq = ix->seq;
    ix->fence_ms = fpx_now_ns() / 1000000;
    return 0;
}

/* Whether meta names ix's fence (its merge_id). */
static int names_fence(const fpx_index *ix, const msgpack_object *meta) {
    char id[FPX_FENCE_ID_MAX + 1];
    return ix->fence_id[0] && meta_str(meta, "merge_id", id, sizeof id) == 0 &&
           !strcmp(id, ix->fence_id);
}

/* ---- the one apply -------------------------------------------------------------- */

int fpx_apply(fpx_index *ix, const fpx_walrec *rec, fpx_err *err) {
    size_t row = fpx_engine_row_bytes(ix->eng);
    int with_labels = rec->op == FPX_WAL_ADD && (rec->flags & FPX_WAL_LABELS);
    if (rec->op == FPX_WAL_ADD || rec->op == FPX_WAL_TRAIN) {
        size_t need = row + (with_labels ? 8 : 0);
        if (rec->n < 0 || (uint64_t)rec->n > rec->data_len / need ||
            (size_t)rec->n * need != rec->data_len)
            return fpx_err_set(err, FPX_E_INTERNAL, "log record has a bad vector section");
    }
    msgpack_unpacked u;
    const msgpack_object *meta;
    if (fpx_unpack_stored(rec->meta, rec->meta_len, &u, &meta, err))
        return -1;
    int rc;
    int64_t count, live_before = ix->nlive;
    const void *x = rec->data;
    /* A fenced index (merge_from in a cluster) takes only what ends the
     * fence: the merge's reset, or the unfence. */
    if (ix->fence_id[0] && rec->op != FPX_WAL_SKIP && rec->op != FPX_WAL_FENCE &&
        !((rec->op == FPX_WAL_RESET || rec->op == FPX_WAL_UNFENCE) && names_fence(ix, meta))) {
        rc = fpx_err_set(err, FPX_E_UNAVAILABLE,
                         "index '%s' is being merged into '%s' (merge_from): try again once the "
                         "merge is done",
                         ix->name, ix->fence_to);
        msgpack_unpacked_destroy(&u);
        return rc;
    }
    switch (rec->op) {
    case FPX_WAL_ADD:
        rc = fpx_index_check_items(meta, rec->n, err);
        if (rc == 0)
            rc = fpx_index_add(ix, rec->n, x,
                               with_labels ? (const int64_t *)(rec->data + (size_t)rec->n * row)
                                           : NULL,
                               meta, &count, err);
        break;
    case FPX_WAL_TRAIN:
        rc = fpx_index_train(ix, rec->n, x, err);
        break;
    case FPX_WAL_DELETE:
        rc = meta ? fpx_index_delete(ix, meta, &count, err)
                  : fpx_err_set(err, FPX_E_INTERNAL, "delete record without ids");
        break;
    case FPX_WAL_REMOVE:
        rc = apply_remove(ix, meta, err);
        break;
    case FPX_WAL_RESET:
        /* a merge's reset empties only the index it fenced, and only once:
         * sent again after an unfence, it changes nothing */
        if (meta && fpx_map_get(meta, "merge_id") && !names_fence(ix, meta)) {
            rc = 0;
            break;
        }
        rc = fpx_index_reset(ix, err);
        if (rc == 0)
            ix->fence_id[0] = 0;
        break;
    case FPX_WAL_FENCE:
        rc = apply_fence(ix, meta, err);
        break;
    case FPX_WAL_UNFENCE:
        if (names_fence(ix, meta))
            ix->fence_id[0] = 0;
        rc = 0;
        break;
    case FPX_WAL_PARAM:
        rc = apply_param(ix, meta, err);
        break;
    case FPX_WAL_LEASE:
        rc = apply_lease(ix, meta, err);
        break;
    case FPX_WAL_TRAINED:
        rc = apply_trained(ix, rec, err);
        break;
    case FPX_WAL_SKIP:
        rc = 0;
        break;
    case FPX_WAL_MERGE:
        rc = apply_merge(ix, rec, meta, err);
        break;
    default:
        rc = fpx_err_set(err, FPX_E_INTERNAL, "unknown log record type %d", (int)rec->op);
    }
    msgpack_unpacked_destroy(&u);
    if (rc == 0) {
        if (rec->op == FPX_WAL_ADD && ix->nlive - live_before == rec->n)
            ix->log_add_bytes += rec->data_len;
        else if (rec->op != FPX_WAL_PARAM && rec->op != FPX_WAL_LEASE)
            ix->log_rewrites = 1;
    }
    return rc;
}
