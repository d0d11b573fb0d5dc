/*
 * engine.h - the small C interface over FAISS's C++ API (engine.cpp is the
 * only C++ file of the project).
 *
 * The engine owns one FAISS index and speaks only in positions: the i-th
 * vector ever added has position i, and positions never change (nothing is
 * ever removed from the FAISS structure; the server keeps its own label and
 * key tables and hides deleted positions through the `allowed` filter). This
 * is what makes delete and upsert work on every index type, HNSW included.
 *
 * Every function catches every C++ exception and returns -1 with FAISS's
 * message in err->msg. Nothing here knows the wire format.
 */
#ifndef FPX_ENGINE_H
#define FPX_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h" /* fpx_err only */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fpx_engine fpx_engine;

/* The server's metric numbers (kept in snapshot headers; not FAISS's own
 * MetricType numbers). Past Hamming: FAISS's extra metrics, which its flat
 * index (and an HNSW over one) computes; Lp takes its p from metric_arg. */
typedef enum fpx_metric {
    FPX_METRIC_L2 = 0,
    FPX_METRIC_IP = 1,
    FPX_METRIC_HAMMING = 2,
    FPX_METRIC_L1 = 3,
    FPX_METRIC_LINF = 4,
    FPX_METRIC_LP = 5,
    FPX_METRIC_CANBERRA = 6,
    FPX_METRIC_BRAYCURTIS = 7,
    FPX_METRIC_JENSENSHANNON = 8,
} fpx_metric;

/* The protocol's name of a metric ("L2", "IP", "Hamming", "L1", "Linf", "Lp",
 * "Canberra", "BrayCurtis", "JensenShannon"). */
const char *fpx_metric_name(fpx_metric m);
/* The metric a protocol name gives; -1 for a name that is none of them. */
int fpx_metric_parse(const char *name, fpx_metric *out);

/*
 * What one search added to FAISS 1.7.3's global search statistics (its
 * faiss::indexIVF_stats, indexIVFPQ_stats, indexPQ_stats,
 * indexBinaryHash_stats and hnsw_stats; the field names are FAISS's, after
 * the prefix of their object). Times are FAISS's: milliseconds for the IVF
 * ones, CPU cycles for the IVF-PQ ones. FPX_SEARCH_STATS lists the counters,
 * X(FAISS object, FAISS field, type): the member is object_field, and the
 * engine's reading and the server's reply are made from the same list. exact
 * is 1 when the numbers are those
 * FAISS counts for this search on an index holding the same vectors, 0 when
 * the engine answered otherwise than with FAISS's own call (an allowed set
 * applied by over-fetching or by an exhaustive pass, an empty index answered
 * without FAISS, ...); the counts are then only what FAISS added meanwhile.
 */
#define FPX_SEARCH_STATS(X)                                                                        \
    X(indexIVF_stats, nq, uint64_t)                                                                \
    X(indexIVF_stats, nlist, uint64_t)                                                             \
    X(indexIVF_stats, ndis, uint64_t)                                                              \
    X(indexIVF_stats, nheap_updates, uint64_t)                                                     \
    X(indexIVF_stats, quantization_time, double)                                                   \
    X(indexIVF_stats, search_time, double)                                                         \
    X(indexIVFPQ_stats, nrefine, uint64_t)                                                         \
    X(indexIVFPQ_stats, n_hamming_pass, uint64_t)                                                  \
    X(indexIVFPQ_stats, search_cycles, uint64_t)                                                   \
    X(indexIVFPQ_stats, refine_cycles, uint64_t)                                                   \
    X(indexPQ_stats, nq, uint64_t)                                                                 \
    X(indexPQ_stats, ncode, uint64_t)                                                              \
    X(indexPQ_stats, n_hamming_pass, uint64_t)                                                     \
    X(indexBinaryHash_stats, nq, uint64_t)                                                         \
    X(indexBinaryHash_stats, n0, uint64_t)                                                         \
    X(indexBinaryHash_stats, nlist, uint64_t)                                                      \
    X(indexBinaryHash_stats, ndis, uint64_t)                                                       \
    X(hnsw_stats, n1, uint64_t)                                                                    \
    X(hnsw_stats, n2, uint64_t)                                                                    \
    X(hnsw_stats, n3, uint64_t)                                                                    \
    X(hnsw_stats, ndis, uint64_t)                                                                  \
    X(hnsw_stats, nreorder, uint64_t)

typedef struct fpx_search_stats {
    int exact;
#define FPX_STATS_MEMBER(object, field, type) type object##_##field;
    FPX_SEARCH_STATS(FPX_STATS_MEMBER)
#undef FPX_STATS_MEMBER
} fpx_search_stats;

/* Per-search knobs; a value <= 0 means "leave the index's own setting". */
typedef struct fpx_search_params {
    int64_t nprobe;
    int64_t efSearch;
    /* The queries come from several requests (the server's dynamic batch):
     * a flat index then computes them as one matrix product even when they
     * are fewer than FAISS's BLAS threshold, which FAISS applies to one
     * caller's batch. A caller's own queries keep FAISS's choice. */
    int pooled;
    /* IVF max_codes for this search: > 0 a limit, < 0 none, 0 the index's. */
    int64_t max_codes;
    /* The efSearch of an IVF's HNSW quantizer for this search, given to
     * FAISS as SearchParametersIVF::quantizer_params (a SearchParametersHNSW),
     * FAISS's own per-search path; <= 0 the quantizer's own. */
    int64_t quantizer_efSearch;
    /* An IndexPQ's search_type and polysemous_ht for this search (FAISS's
     * SearchParametersPQ), each when its has_ flag is set. */
    int has_search_type, has_polysemous_ht;
    int search_type, polysemous_ht;
    /* The search carries the caller's id selector: the answer must be the one
     * FAISS's search with that selector gives, so a search that returns fewer
     * than k hits is not widened where FAISS takes the selector itself. */
    int as_faiss;
    /* When set, the search measures what it adds to FAISS's global search
     * statistics and stores it here. FAISS writes those globals from every
     * search, without a lock: such a search waits until no other engine call
     * that can count is running, and holds the others back while it runs (a
     * process-wide lock, taken shared by every search and by the builds that
     * search a quantizer that counts). The lock prefers the others: a counted
     * search that cannot have it within fpx_engine_stats_wait_ms searches
     * uncounted (exact 0), so that one caller's statistics never hold up other
     * callers' searches longer than its own search lasts. */
    fpx_search_stats *stats;
    /* The batch is searched as FAISS's search_and_reconstruct searches it: an
     * IVF index (through its transforms) gives its coarse quantizer all the
     * queries in one call, where FAISS's search gives each OpenMP thread a
     * slice and a call of its own. On BLAS kernels that round a product by
     * its shape, the coarse distances (which an IVFPQ's distances add to)
     * then differ from search's in the last bit. Other index types: no
     * effect. */
    int whole_batch;
    /* The queries that the index's own search (with the allowed set as its
     * id selector) answers with fewer than k hits are left so, as FAISS's
     * search answers them after its own remove_ids, instead of completed by
     * an exact pass over the allowed vectors. Float indexes. */
    int uncompleted;
} fpx_search_params;

/* How long a counted search waits for the others to leave the statistics'
 * lock, in milliseconds; 0: searches are never counted (exact 0). Set once at
 * start (default 100). */
void fpx_engine_stats_wait_ms(int64_t ms);

/* A set of allowed positions: bit p of words[p / 64] set = position p allowed.
 * nbits covers positions [0, nbits); positions beyond are not allowed.
 * count is the number of bits set (the search uses it to know how many hits
 * are possible). */
typedef struct fpx_bitset {
    const uint64_t *words;
    int64_t nbits;
    int64_t count;
} fpx_bitset;

/*
 * Tunes the engine for a server running several FAISS calls at once, one
 * per core; call it once, before creating any index. Without it the engine
 * calls FAISS exactly as an in-process user would (the benchmarks compare
 * against that). With it:
 *  - BLAS runs on the calling thread only (OpenBLAS; returns -1 when the
 *    BLAS in use is another, and the rest still applies). OpenBLAS's pool,
 *    shared by concurrent calls, makes their threads spin in sched_yield
 *    against each other; the engine instead cuts a flat index's batch into
 *    one slice per core, where that leaves every query's result as FAISS's
 *    one call gives it (fpx_engine_slices_batches).
 *  - A flat L2 index keeps its vectors' norms, which FAISS 1.7.3 recomputes
 *    in every BLAS search: a second pass over all the vectors.
 *  - Pooled batches (fpx_search_params.pooled) use BLAS from 3 queries on.
 */
int fpx_engine_tune_for_server(void);
/* After fpx_engine_tune_for_server: 1 when a flat batch is searched one
 * slice per core, 0 when this BLAS rounds a query's distances differently
 * with the slice's size and a batch is searched in FAISS's one call. */
int fpx_engine_slices_batches(void);

/*
 * Creates an index from a FAISS index_factory description ("Flat",
 * "IVF256,Flat", "HNSW32", "PCA64,Flat", "IDMap,Flat", ...). A leading
 * "IDMap," or "IDMap2," is accepted and dropped: labels are the server's job.
 * Refuses descriptions holding numbers above 1<<20 before FAISS sees them
 * (e.g. "IVF100000000,Flat"), as a validation error.
 * err->type is FPX_E_VALIDATION for a description FAISS refuses.
 */
int fpx_engine_create(const char *description, int64_t dim, fpx_metric metric, fpx_engine **out,
                      fpx_err *err);
/*
 * As fpx_engine_create, with metric_arg (FAISS's Index::metric_arg, the p of
 * Lp) set where FAISS's search reads it: the flat index, or the flat storage
 * of an HNSW (FAISS's IndexHNSW keeps its own at 0). The extra metrics (L1 ..
 * JensenShannon) are served on flat indexes and HNSW over flat storage only,
 * optionally under pre-transforms: other types are refused (FAISS 1.7.3
 * computes them nowhere else, or fails at search time).
 */
int fpx_engine_create_metric(const char *description, int64_t dim, fpx_metric metric,
                             double metric_arg, fpx_engine **out, fpx_err *err);
void fpx_engine_free(fpx_engine *e);

/*
 * Binary indexes (FAISS IndexBinary*: "BFlat", "BIVF<n>", "BHNSW<M>", ...,
 * from index_binary_factory): dim is in bits (a multiple of 8), vectors are
 * dim/8 bytes, the metric is Hamming and distances are int32 (FPX_METRIC_HAMMING).
 * Every function below takes either kind: x points to float32 rows or to
 * byte rows, D to float or int32 distances, as fpx_engine_is_binary says.
 */
int fpx_engine_create_binary(const char *description, int64_t dim_bits, fpx_engine **out,
                             fpx_err *err);
int fpx_engine_is_binary(const fpx_engine *e);
/* 1 when an add only appends the vectors to the index's storage (a plain
 * flat index, float or binary): replaying a log of adds then costs what
 * loading the same vectors from a snapshot costs. */
int fpx_engine_adds_by_copy(const fpx_engine *e);
/* Bytes of one vector: dim*4, or dim/8 for binary indexes. */
size_t fpx_engine_row_bytes(const fpx_engine *e);

int64_t fpx_engine_dim(const fpx_engine *e);
/* Positions used so far (FAISS ntotal, tombstones included). */
int64_t fpx_engine_ntotal(const fpx_engine *e);
int fpx_engine_is_trained(const fpx_engine *e);
fpx_metric fpx_engine_metric(const fpx_engine *e);
/* FAISS's metric_arg of the index (the outermost one, as FAISS reports it). */
double fpx_engine_metric_arg(const fpx_engine *e);

/* Trains on n vectors (row-major float32, dim each). */
int fpx_engine_train(fpx_engine *e, int64_t n, const void *x, fpx_err *err);

/* Appends n vectors at positions [ntotal, ntotal+n). err->type is
 * FPX_E_NOT_TRAINED when the index needs training first. */
int fpx_engine_add(fpx_engine *e, int64_t n, const void *x, fpx_err *err);

/*
 * An add that builds an NSG graph, which FAISS 1.7.3 may never finish (its
 * build loops for good on some data, as with R = 3 on most) or may end the
 * process on (an assertion of its NNDescent), run elsewhere: given the
 * index's FAISS serialization and the n x d float32 vectors, fn makes out (a
 * malloc'd buffer) the serialization of the index after the add, or fails
 * with err (the index is then unchanged). Unset (the default), such an add
 * runs in this process as any other. Set once at start.
 */
typedef int (*fpx_isolated_add_fn)(const uint8_t *index, size_t index_len, int64_t n, int64_t d,
                                   const void *x, uint8_t **out, size_t *out_len, fpx_err *err);
void fpx_engine_set_isolated_add(fpx_isolated_add_fn fn);

/*
 * k-NN search of n queries. D and I are n*k, row-major; I holds positions,
 * -1 where fewer than k results exist. allowed (may be NULL = all positions)
 * restricts results: the engine uses FAISS's IDSelector where the index
 * supports it and over-fetches and filters where it does not (PQ, wrappers),
 * widening nprobe/efSearch or falling back to an exhaustive pass when an
 * approximate search returns fewer than min(k, allowed->count) hits, so a
 * filtered search returns k hits whenever k allowed positions exist.
 * Single small queries run on one OpenMP thread, batches on all (see the
 * comment at fpx_engine_search in engine.cpp).
 */
int fpx_engine_search(fpx_engine *e, int64_t n, const void *x, int64_t k,
                      const fpx_search_params *params, const fpx_bitset *allowed, void *D,
                      int64_t *I, fpx_err *err);

/*
 * Range search: every allowed position within radius of each query (L2:
 * distance < radius; IP: similarity > radius), as FAISS range_search returns
 * them. *lims (n+1 entries), *D and *I (lims[n] entries; I holds positions)
 * are malloc'd; the caller frees them. Types FAISS cannot range-search (HNSW,
 * PQ fast-scan, ...) fail with FAISS's own message, as FPX_E_FAISS.
 */
int fpx_engine_range_search(fpx_engine *e, int64_t n, const void *x, float radius,
                            const fpx_search_params *params, const fpx_bitset *allowed,
                            int64_t **lims, float **D, int64_t **I, fpx_err *err);

/* The vector at one position, as FAISS reconstruct does (so an IVF index
 * without a direct map fails with FAISS's message). out holds dim floats. */
int fpx_engine_reconstruct(const fpx_engine *e, int64_t pos, void *out, fpx_err *err);

/* The vectors of n search hits as FAISS's search_and_reconstruct gives them
 * (engine.cpp): a missing hit (-1) is FAISS's fill of 0xFF bytes; an IVF
 * index reconstructs from its lists, with or without a direct map; the rows
 * are taken back through the pre-transforms all at once. out holds n*dim
 * floats. An IVF fast-scan index is refused: FAISS 1.7.3's
 * search_and_reconstruct has no list scanner for it. */
int fpx_engine_reconstruct_hits(const fpx_engine *e, int64_t n, const int64_t *pos, void *out,
                                fpx_err *err);

/* The vectors at n positions, as FAISS reconstruct_n does: IVF indexes are
 * scanned without needing a direct map, and the rows are taken back through
 * the pre-transforms all at once. out holds n*dim floats. */
int fpx_engine_reconstruct_batch(const fpx_engine *e, int64_t n, const int64_t *pos, void *out,
                                 fpx_err *err);

/* 0 when FAISS can remove_ids from this index type; else -1 with FAISS's own
 * error (HNSW: "remove_ids not implemented for this type of index"). */
int fpx_engine_check_remove(fpx_engine *e, fpx_err *err);

/* 1 when FAISS's remove_ids on this type renumbers the vectors after the
 * removed ones (flat and other sequential-code indexes), 0 when labels stay. */
int fpx_engine_remove_renumbers(const fpx_engine *e);

/*
 * FAISS merge_from: other's vectors go after e's, at positions [ntotal,
 * ntotal + other's ntotal), in FAISS's order (an IVF's list by list), and
 * other is left empty, as FAISS leaves it. FAISS's checks and messages
 * (same type, same quantizer, no direct map, types that cannot merge); the
 * checks run before anything changes.
 */
int fpx_engine_merge(fpx_engine *e, fpx_engine *other, fpx_err *err);
/* FAISS's check_compatible_for_merge alone (what fpx_engine_merge checks
 * first), changing neither index. */
int fpx_engine_merge_check(fpx_engine *e, fpx_engine *other, fpx_err *err);

/*
 * The vectors of parts[0..n) (indexes of one type, dimension and training)
 * joined into parts[0], in the order order[0..count) gives: position p takes
 * position order[p] of their concatenation (part i's positions after those
 * of the parts before it; order a permutation of 0..count-1). The other
 * parts are freed, each as soon as it is joined (and set to NULL). Codes
 * are kept as they are: flat-code indexes (under pre-transforms) and binary
 * flat indexes move their codes, fast-scan indexes unpack theirs, move them
 * and pack them again, IVF indexes join their lists (FAISS's merge_from,
 * with its checks; a fast-scan IVF's list by list, which FAISS 1.7.3 cannot
 * merge) and renumber their ids, and an HNSW index over storage of
 * fixed-size codes (flat, SQ, PQ) is built once, from the joined codes in
 * the new order (the graph FAISS builds from their decoded vectors: the
 * exact vectors for flat storage). Other types fail (FPX_E_UNSUPPORTED); on
 * failure parts[0] may hold part of the join and is to be discarded.
 */
int fpx_engine_join(fpx_engine **parts, int64_t n, const int64_t *order, int64_t count,
                    fpx_err *err);

/*
 * FAISS's standalone codec of the index (sa_code_size, sa_encode, sa_decode):
 * the bytes the index's encoding gives n vectors, and the vectors decoded from
 * such bytes, the index itself unchanged. Types without one fail with FAISS's
 * message; binary indexes have none.
 */
int fpx_engine_sa_code_size(const fpx_engine *e, size_t *size, fpx_err *err);
int fpx_engine_sa_encode(const fpx_engine *e, int64_t n, const float *x, uint8_t *codes,
                         fpx_err *err);
int fpx_engine_sa_decode(const fpx_engine *e, int64_t n, const uint8_t *codes, float *x,
                         fpx_err *err);

/* Removes every vector, keeping the training (FAISS reset). */
int fpx_engine_reset(fpx_engine *e, fpx_err *err);

/* Sets index parameters with FAISS's ParameterSpace ("nprobe=16,efSearch=64"). */
int fpx_engine_set_params(fpx_engine *e, const char *params, fpx_err *err);

/* by_residual of an IVF-PQ, IVF scalar quantizer, IVF additive quantizer or
 * IVF fast-scan index (FAISS's member, which training, encoding and search
 * follow): at any time, as FAISS takes it. */
int fpx_engine_set_by_residual(fpx_engine *e, int on, fpx_err *err);

/* A fast-scan index's members that FAISS's ParameterSpace does not know:
 * "implem" (the search implementation), "qbs" (query block sizes) and, on
 * additive quantizer fast-scan indexes, "norm_scale". The value is checked by
 * the caller; FAISS's search refuses an implementation it does not have. */
int fpx_engine_set_fast_scan(fpx_engine *e, const char *name, int64_t value, fpx_err *err);

/* Members of FAISS's indexes that change how a search runs and that FAISS's
 * ParameterSpace does not set, nor its write_index keep: "parallel_mode" of
 * a float IVF (0..3), "use_heap" of a binary flat or binary IVF index and
 * "search_bounded_queue" of an HNSW index (0 or 1), "use_precomputed_table"
 * of an IndexIVFPQ (-1..2); and two that ParameterSpace sets but write_index
 * leaves out: "max_codes" of a float IVF (also under a transform or a
 * refinement) and "polysemous_ht" of an IndexIVFPQ (an IndexPQ's is in its
 * bytes), and both again with "quantizer_" before them for an IVF quantizer
 * of an IVF; and a float IVF's ClusteringParameters, which its training
 * reads: "cp_niter", "cp_nredo", "cp_seed", "cp_max_points_per_centroid",
 * "cp_spherical", "cp_int_centroids", "cp_update_index" and
 * "cp_frozen_centroids" (get: only while the IVF is untrained). Set refuses other values and other
 * index types; get returns -1 where the member is not (use_precomputed_table: nor while it is 0
 * before training, which means "chosen by training"). */
int fpx_engine_set_member(fpx_engine *e, const char *name, int64_t value, fpx_err *err);
int fpx_engine_get_member(fpx_engine *e, const char *name, int64_t *value);
/* The i-th of those names (from 0), NULL past the last; *dflt: FAISS's
 * default, or FPX_MEMBER_CHOSEN where FAISS chooses it (at training and on
 * reading: a value to keep whatever it is). */
#define FPX_MEMBER_CHOSEN INT64_MIN
/* At least the number of those names (an array of them fits). */
#define FPX_MEMBERS_MAX 24
/* Sets on dst, an index read back from src's FAISS bytes (a train, a
 * compaction), the member settings of src that dst's type has. */
void fpx_engine_copy_members(fpx_engine *dst, const fpx_engine *src);
const char *fpx_engine_member_param(int i, int64_t *dflt);

/* IndexPQ's "search_type" (0..5, FAISS's ST_PQ .. ST_polysemous_generalize)
 * and "polysemous_ht" (0..2^20): members its write_index keeps. */
int fpx_engine_set_pq_search(fpx_engine *e, const char *name, int64_t value, fpx_err *err);

/* IVF direct map, as FAISS's IndexIVF::set_direct_map_type (0: none, 1: array,
 * 2: hash table); needed by reconstruct on IVF indexes. */
int fpx_engine_set_direct_map(fpx_engine *e, int type, fpx_err *err);

/*
 * The index as a user of FAISS would hold it, in FAISS's serialization:
 * only the live positions (FAISS remove_ids on a copy; an index type FAISS
 * cannot remove from fails when some position is dead), with labels[pos] as
 * the ids (NULL: the position is the label). An IVF index carries the labels
 * in its lists; other types are wrapped in an IndexIDMap when idmap is set or
 * the labels are not 0..n-1 in order. idmap 2 asks for an IndexIDMap2 (which
 * FAISS can reconstruct from), 1 for an IndexIDMap. *buf is malloc'd.
 */
int fpx_engine_export(const fpx_engine *e, const fpx_bitset *live, const int64_t *labels, int idmap,
                      uint8_t **buf, size_t *len, fpx_err *err);

/*
 * A new engine holding e's live positions only, in order: position p of the
 * copy is e's p-th live position, with the same codes and the same settings.
 * FAISS remove_ids on a copy (an IVF index's list ids then renumbered); an
 * HNSW index over flat storage is rebuilt from its exact vectors instead,
 * and with any_hnsw one over other storage of fixed-size codes (SQ, PQ)
 * from its codes (their decoded vectors make the graph; the codes are
 * kept as they are).
 * 0; 1 when this type cannot leave positions out (nothing made); -1 on error.
 */
int fpx_engine_compact(const fpx_engine *e, const fpx_bitset *live, int any_hnsw, fpx_engine **out,
                       fpx_err *err);

/*
 * Reads a FAISS-serialized index (as from write_index). IndexIDMap/IDMap2
 * wrappers are dropped and their ids, or an IVF index's own ids, become
 * *labels (malloc'd, one per position; NULL when every label equals its
 * position). *had_idmap tells which wrapper was there: 0 none, 1 IndexIDMap,
 * 2 IndexIDMap2.
 */
int fpx_engine_import(const uint8_t *buf, size_t len, fpx_engine **out, int64_t **labels,
                      int *had_idmap, fpx_err *err);

/* A sink for streamed bytes: 0, or -1 to stop (the caller keeps the reason). */
typedef int (*fpx_write_fn)(void *ctx, const void *buf, size_t n);
/* FAISS's own serialization of e, streamed through fn in pieces (the vectors
 * in one piece each, straight from the index: no copy); fn NULL only counts.
 * *len receives the size. A failing fn fails the call. */
int fpx_engine_write(const fpx_engine *e, fpx_write_fn fn, void *ctx, size_t *len, fpx_err *err);
/* FAISS's own serialization (write_index to memory). *buf is malloc'd; caller frees. */
int fpx_engine_serialize(const fpx_engine *e, uint8_t **buf, size_t *len, fpx_err *err);
/* FAISS's serialization of the coarse quantizer of the IVF index in e (under
 * pre-transforms and refinements; a binary IVF's binary quantizer): what a
 * FAISS program reads as index.quantizer. A validation error when e holds no
 * IVF index. *buf is malloc'd; caller frees. */
int fpx_engine_serialize_quantizer(const fpx_engine *e, uint8_t **buf, size_t *len, fpx_err *err);
/* Inverse of fpx_engine_serialize (read_index from memory). */
int fpx_engine_deserialize(const uint8_t *buf, size_t len, fpx_engine **out, fpx_err *err);
/* Copies from src to dst (two indexes of the same build) the training
 * settings FAISS's serialization leaves out: an IVF's k-means parameters and
 * whether its quantizer trains alone, a PQ's k-means parameters. An index read
 * from bytes trains as FAISS's read_index leaves it, not as its factory made
 * it. Parts whose types differ are left alone. */
void fpx_engine_copy_train_params(fpx_engine *dst, const fpx_engine *src);
/* 1 when e's FAISS bytes read back into an index that trains and adds as e
 * does; 0 for additive quantizers (RQ, LSQ and their fast-scan forms), whose
 * reading FAISS 1.7.3 gets wrong in places (their training is then not
 * logged as its result). */
int fpx_engine_round_trips(const fpx_engine *e);
/* A deep copy of e (its bytes read back, with the settings above). */
int fpx_engine_copy(const fpx_engine *e, fpx_engine **out, fpx_err *err);

/*
 * The FAISS classes of the index as a FAISS user holds it (the IDMap wrapper
 * aside), outermost first along its main path (an IndexPreTransform's index,
 * an IndexRefine's base index), joined by ',': "IndexIVFFlat",
 * "IndexPreTransform,IndexIVFPQ", "IndexBinaryIVF". Writes at most cap bytes,
 * NUL included; returns the full length.
 */
size_t fpx_engine_classes(const fpx_engine *e, char *buf, size_t cap);

/* Bytes of memory FAISS holds for the index (approximate; for stats). */
size_t fpx_engine_memory(const fpx_engine *e);

/* The current value of a search or build knob ("nprobe", "nlist" of an IVF
 * index; "efSearch", "efConstruction" of an HNSW one) in *v. 0, or -1 when
 * the index has no such knob. */
int fpx_engine_get_param(const fpx_engine *e, const char *name, double *v);

/* How many results a search of e asks its innermost index for, per result
 * the caller wants: the product of the k_factors of its refinements (and of
 * an IVFPQR), 1 for every other index. */
double fpx_engine_results_factor(const fpx_engine *e);

/* k-means (FAISS Clustering, L2) of n vectors of d floats into k centroids:
 * fills centroids (k*d floats), assign (n cluster numbers) and *obj (the
 * final objective, the sum of squared distances). */
int fpx_engine_kmeans(int64_t n, int64_t d, const float *x, int64_t k, int niter, float *centroids,
                      int64_t *assign, float *obj, fpx_err *err);

#ifdef __cplusplus
}
#endif

#endif
