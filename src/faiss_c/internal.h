/*
 * internal.h - what the files of libfaiss_c share and nothing outside it sees:
 * the handle structs behind FAISS's opaque types, the per-thread connection
 * and error, and the helpers every class uses to reach its server index.
 *
 * Each src/faiss_c/<Header>_c.c implements the FAISS C API header of that
 * name, as FAISS's own c_api is split; faiss_c.c holds the base they build on
 * (configuration, connection, creating and importing server indexes) and
 * error_c.c the error reporting. The declarations below are hidden: the
 * library exports FAISS's names only.
 */
#ifndef FPX_FAISS_C_INTERNAL_H
#define FPX_FAISS_C_INTERNAL_H

#include <faiss/c_api/IndexBinary_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/VectorTransform_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>

#include <faissproxy/client.h>

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)

/* What each thread keeps: its own connection (a libfaissproxy handle is not
 * thread safe), the configuration generation it was made under, and the last
 * error, which FAISS's C API reports per thread. */
typedef struct fpx_fc_thread {
    fpx_client *c;
    unsigned gen;
    char err[1024];
    int has_err;
} fpx_fc_thread;

/* The FAISS class of a handle. FAISS's C API downcasts with dynamic_cast;
 * here a handle carries its class tag (from the constructor, the factory
 * description, or the file it was read from) and the casts follow FAISS's
 * class tree. */
enum fpx_fc_cls {
    FPX_CLS_INDEX, /* any other factory-made index */
    FPX_CLS_FLAT,
    FPX_CLS_FLATL2,
    FPX_CLS_FLATIP,
    FPX_CLS_FLAT1D,
    FPX_CLS_IVF,
    FPX_CLS_IVFFLAT,
    FPX_CLS_IDMAP,
    FPX_CLS_IDMAP2,
    FPX_CLS_REFINEFLAT,
    FPX_CLS_LSH,
    FPX_CLS_SQ,
    FPX_CLS_IVFSQ,
    FPX_CLS_PRETRANSFORM,
    FPX_CLS_SHARDS,   /* no server index: sub-indexes in subs */
    FPX_CLS_REPLICAS, /* likewise */
};

/* Every FaissIndex (and every subclass: FAISS_DECLARE_CLASS_INHERITED makes
 * them one struct) is a handle on one server index. */
struct FaissIndex_H {
    enum fpx_fc_cls cls;
    char desc[256]; /* factory description it was made from */
    int d;
    FaissMetricType metric;
    char name[129]; /* on the server; empty while there is none */
    int keep;
    idx_t ntotal;
    int is_trained;
    int verbose;
    size_t nlist, nprobe;
    float k_factor;
    FaissIndex *sub; /* IVF quantizer, IDMap or Refine base */
    int own_fields;
    float *xb;  /* faiss_IndexFlat_xb's copy */
    idx_t *ids; /* faiss_IndexIDMap_id_map's copy */
    size_t nids;
    int nbits, lsh_flags;         /* IndexLSH: bits, FPX_LSH_* */
    FaissVectorTransform **chain; /* IndexPreTransform's transforms, first applied first */
    size_t nchain;
    FaissIndex **subs; /* IndexShards / IndexReplicas members, in order */
    size_t nsubs;
    int successive_ids; /* IndexShards */
};

#define FPX_LSH_ROTATE 1
#define FPX_LSH_THRESHOLDS 2

/* The kinds of VectorTransform FAISS 1.7.3's C API constructs. */
enum fpx_fc_vt {
    FPX_VT_PCA,
    FPX_VT_RR,
    FPX_VT_ITQ_MATRIX,
    FPX_VT_ITQ,
    FPX_VT_OPQ,
    FPX_VT_REMAP,
    FPX_VT_NORM,
    FPX_VT_CENTER,
};

/* A VectorTransform is its parameters only: it is trained and applied on the
 * server, inside the IndexPreTransform whose description it becomes. */
struct FaissVectorTransform_H {
    enum fpx_fc_vt kind;
    int d_in, d_out;
    int is_trained;
    float eigen_power; /* PCA */
    int random_rotation;
    int do_pca; /* ITQTransform */
    int M;      /* OPQ */
    int niter, niter_pq, verbose;
    float norm;  /* NormalizationTransform */
    int uniform; /* RemapDimensionsTransform */
};

/* RangeSearchResult: as FAISS lays it out. */
struct FaissRangeSearchResult_H {
    size_t nq;
    size_t *lims;
    idx_t *labels;
    float *distances;
    size_t buffer_size;
};

/* IDSelector: a label range or a batch of labels. */
struct FaissIDSelector_H {
    int is_range;
    idx_t imin, imax;
    idx_t *ids; /* sorted */
    size_t n;
    int nbits;
    idx_t mask;
};

/* A binary index is a handle like the others (d in bits), behind its own type. */
struct FaissIndexBinary_H {
    struct FaissIndex_H h;
    int takes_ids; /* FAISS's add_with_ids works (IVF, IDMap) */
};

/* The FaissIndex a binary index is. */
#define BH(b) (&(b)->h)

/* faiss_Foo_cast, true to FAISS's class tree. */
#define FPX_FC_CAST(clazz, cond)                                                                   \
    Faiss##clazz *faiss_##clazz##_cast(FaissIndex *ix) {                                           \
        return ix && (cond) ? ix : NULL;                                                           \
    }

/* faiss_Foo_free of a subclass: the same handle as FaissIndex. */
#define FPX_FC_FREE_AS_INDEX(clazz)                                                                \
    void faiss_##clazz##_free(Faiss##clazz *ix) {                                                  \
        faiss_Index_free(ix);                                                                      \
    }

/* ---- per thread: connection and error (faiss_c.c, error_c.c) ---------------------- */

/* This thread's state, made on first use; NULL when out of memory. */
fpx_fc_thread *fpx_fc_tls(void);

/* This thread's connection, made anew when the configuration changed; NULL
 * with the error set when there is none. */
fpx_client *fpx_fc_client(void);

/* Sets this thread's last error (printf-style) and returns code. */
int fpx_fc_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets the error of a failed libfaissproxy call as a FAISS error code, returns it. */
int fpx_fc_from_client(fpx_client *c);

/* FAISS_EXCEPT for a call that needs the index's internals in this process. */
int fpx_fc_not_here(const char *what);

/* ---- handles (faiss_c.c) ------------------------------------------------------------ */

/* A handle with no server index yet; NULL when out of memory. */
FaissIndex *fpx_fc_handle_new(enum fpx_fc_cls cls, int d, FaissMetricType metric, const char *desc);

/* A new handle with its server index made from desc; *out NULL and the error
 * set on failure. */
int fpx_fc_make_index(FaissIndex **out, enum fpx_fc_cls cls, int d, FaissMetricType metric,
                      const char *desc);

/* The handle's server index and this thread's connection to it, or an error
 * for a NULL handle or one that has none (d = 0). */
int fpx_fc_need(const FaissIndex *ix, fpx_client **c);

/* The class a factory description makes, and an IVF's nlist. */
enum fpx_fc_cls fpx_fc_cls_of_desc(const char *desc, size_t *nlist);

/* A handle over an existing server index described by info; cls FPX_CLS_INDEX
 * takes the class from the description. */
int fpx_fc_handle_from_info(FaissIndex **p, const fpx_index_info *info, enum fpx_fc_cls cls);

/* A new server index read from FAISS's serialization (borrowed), and its handle. */
int fpx_fc_import_bytes(const uint8_t *bytes, size_t len, FaissIndex **p);

/* FAISS's serialization of the handle's server index, malloc'd (caller frees);
 * in index_io_c.c. */
int fpx_fc_export(const FaissIndex *ix, uint8_t **bytes, size_t *len);

/* Sets a search or build parameter on the server index and mirrors it here. */
int fpx_fc_set_param(FaissIndex *ix, const char *name, double value);

/* ---- one path for float and binary indexes (Index_c.c) ------------------------------- */

/* Which vectors a call carries: floats (FaissIndex) or packed bits
 * (FaissIndexBinary: uint8_t codes, d in bits, int32 Hamming distances). */
enum fpx_fc_vectors { FPX_FC_FLOAT, FPX_FC_BINARY };

int fpx_fc_index_train(FaissIndex *ix, idx_t n, const void *x, enum fpx_fc_vectors v);

/* Adds n vectors, with ids or not, and mirrors the new ntotal. */
int fpx_fc_index_add(FaissIndex *ix, idx_t n, const void *x, const idx_t *ids,
                     enum fpx_fc_vectors v);

/* distances: float, or int32 for binary. */
int fpx_fc_index_search(const FaissIndex *ix, idx_t n, const void *x, idx_t k, void *distances,
                        idx_t *labels, enum fpx_fc_vectors v);

/* A search whose distances are dropped. */
int fpx_fc_index_assign(const FaissIndex *ix, idx_t n, const void *x, idx_t *labels, idx_t k,
                        enum fpx_fc_vectors v);

/* radius: a float distance, or a whole Hamming distance for binary. */
int fpx_fc_index_range_search(const FaissIndex *ix, idx_t n, const void *x, double radius,
                              FaissRangeSearchResult *result, enum fpx_fc_vectors v);

int fpx_fc_index_reconstruct(const FaissIndex *ix, idx_t key, void *recons, enum fpx_fc_vectors v);
int fpx_fc_index_reconstruct_n(const FaissIndex *ix, idx_t i0, idx_t ni, void *recons,
                               enum fpx_fc_vectors v);

/* The factory description of a transform over its d_in, in out (cap bytes),
 * or FAISS_EXCEPT saying why the server cannot build it (VectorTransform_c.c). */
int fpx_fc_vt_desc(const FaissVectorTransform *vt, char *out, size_t cap);

/* ---- IndexShards and IndexReplicas: no server index of their own ------------------ */

static inline int fpx_fc_is_multi(const FaissIndex *ix) {
    return ix && (ix->cls == FPX_CLS_SHARDS || ix->cls == FPX_CLS_REPLICAS);
}

/* FaissIndex calls on a shards or replicas handle (IndexShards_c.c). */
int fpx_fc_multi_train(FaissIndex *ix, idx_t n, const float *x);
int fpx_fc_multi_add(FaissIndex *ix, idx_t n, const float *x, const idx_t *ids);
int fpx_fc_multi_search(const FaissIndex *ix, idx_t n, const float *x, idx_t k, float *distances,
                        idx_t *labels);
int fpx_fc_multi_reset(FaissIndex *ix);
int fpx_fc_multi_reconstruct_n(const FaissIndex *ix, idx_t i0, idx_t ni, float *recons);
/* Takes ntotal, is_trained and the metric from the members where FAISS does
 * (after adding or removing a member, a train, an add), with its checks. */
int fpx_fc_multi_sync(FaissIndex *ix);
/* A member joins or leaves, with FAISS's checks (IndexShards_c.c). */
int fpx_fc_multi_add_member(FaissIndex *ix, FaissIndex *sub);
int fpx_fc_multi_remove_member(FaissIndex *ix, FaissIndex *sub);
/* IndexReplicas's own add and search (IndexReplicas_c.c). */
int fpx_fc_replicas_add(FaissIndex *ix, idx_t n, const float *x, const idx_t *ids);
int fpx_fc_replicas_search(const FaissIndex *ix, idx_t n, const float *x, idx_t k, float *distances,
                           idx_t *labels);
/* What FAISS's Index refuses for these classes, in its words. */
int fpx_fc_multi_refuse(const FaissIndex *ix, const char *what);

/* Whether the handle is an IndexIDMap or IndexIDMap2 (float or binary). */
static inline int fpx_fc_is_idmap(const FaissIndex *ix) {
    return ix->cls == FPX_CLS_IDMAP || ix->cls == FPX_CLS_IDMAP2;
}

#pragma GCC visibility pop

#endif
