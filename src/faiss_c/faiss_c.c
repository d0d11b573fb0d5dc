/*
 * faiss_c.c - libfaiss_c: FAISS 1.7.3's C API, served by a faiss-proxy server.
 *
 * A program written against faiss/c_api compiles unchanged against the
 * headers in include/faiss-c and links this library instead of FAISS's
 * libfaiss_c. Every FaissIndex is a handle on one server index with a unique
 * name; the vectors never live here. Calls go through libfaissproxy, one
 * client connection per thread (a handle of libfaissproxy is not thread safe,
 * FAISS indexes are searched from many threads).
 *
 * Classes: FAISS's C API downcasts with dynamic_cast; here a handle carries
 * its class tag (from the constructor, the factory description, or the file
 * it was read from) and the casts follow FAISS's class tree.
 *
 * Errors: a failed call returns FAISS_EXCEPT (the server refused; its message
 * is FAISS's where FAISS refused), UNKNOWN_EXCEPT (no server), or STD_EXCEPT
 * (out of memory here); faiss_get_last_error() gives the message.
 */
#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexBinary_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/clone_index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/faiss_proxy_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <faissproxy/client.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- configuration, per-thread client, errors ----------------------------------- */

static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;
static char cfg_server[512], cfg_key[256], cfg_tenant[129];
static int cfg_loaded;
static unsigned cfg_gen; /* bumped by faiss_proxy_configure */

typedef struct tls_state {
    fpx_client *c;
    unsigned gen;
    char err[1024];
    int has_err;
} tls_state;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_free(void *p) {
    tls_state *t = p;
    if (t)
        fpx_client_free(t->c);
    free(t);
}

static void tls_init(void) {
    pthread_key_create(&tls_key, tls_free);
}

static tls_state *tls(void) {
    pthread_once(&tls_once, tls_init);
    tls_state *t = pthread_getspecific(tls_key);
    if (!t && (t = calloc(1, sizeof *t)) != NULL)
        pthread_setspecific(tls_key, t);
    return t;
}

static void load_config_locked(void) {
    if (cfg_loaded)
        return;
    const char *s = getenv("FAISS_PROXY_SERVER");
    const char *k = getenv("FAISS_PROXY_API_KEY");
    const char *t = getenv("FAISS_PROXY_TENANT");
    snprintf(cfg_server, sizeof cfg_server, "%s", s && *s ? s : "tcp://127.0.0.1:5555");
    snprintf(cfg_key, sizeof cfg_key, "%s", k ? k : "");
    snprintf(cfg_tenant, sizeof cfg_tenant, "%s", t ? t : "");
    cfg_loaded = 1;
}

int faiss_proxy_configure(const char *server, const char *api_key, const char *tenant) {
    pthread_mutex_lock(&cfg_lock);
    load_config_locked();
    if (server)
        snprintf(cfg_server, sizeof cfg_server, "%s", server);
    if (api_key)
        snprintf(cfg_key, sizeof cfg_key, "%s", api_key);
    if (tenant)
        snprintf(cfg_tenant, sizeof cfg_tenant, "%s", tenant);
    cfg_gen++;
    pthread_mutex_unlock(&cfg_lock);
    return 0;
}

static int set_error(int code, const char *fmt, ...) {
    tls_state *t = tls();
    if (t) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->err, sizeof t->err, fmt, ap);
        va_end(ap);
        t->has_err = 1;
    }
    return code;
}

__attribute__((visibility("hidden"))) int fpx_faiss_c_error(int code, const char *msg);
int fpx_faiss_c_error(int code, const char *msg) {
    return set_error(code, "%s", msg);
}

const char *faiss_get_last_error(void) {
    tls_state *t = tls();
    return t && t->has_err ? t->err : NULL;
}

/* This thread's connection, made anew when the configuration changed. */
static fpx_client *client(void) {
    tls_state *t = tls();
    if (!t)
        return NULL;
    pthread_mutex_lock(&cfg_lock);
    load_config_locked();
    unsigned gen = cfg_gen;
    if (!t->c || t->gen != gen) {
        fpx_client_free(t->c);
        t->c = fpx_client_new(cfg_server, cfg_key[0] ? cfg_key : NULL,
                              cfg_tenant[0] ? cfg_tenant : NULL);
        t->gen = gen;
        if (t->c)
            fpx_client_set_timeout(t->c, 300000);
    }
    pthread_mutex_unlock(&cfg_lock);
    if (!t->c)
        set_error(UNKNOWN_EXCEPT, "faiss-proxy: cannot connect to %s", cfg_server);
    return t->c;
}

/* The error of a failed libfaissproxy call, as a FAISS error code. */
static int from_client(fpx_client *c) {
    const char *type = fpx_client_errtype(c);
    int code = !strcmp(type, "connection_error") ? UNKNOWN_EXCEPT
               : !strcmp(type, "internal_error") ? STD_EXCEPT
                                                 : FAISS_EXCEPT;
    return set_error(code, "%s", fpx_client_errstr(c));
}

/* ---- index handles ------------------------------------------------------------------ */

enum cls {
    CLS_INDEX, /* any other factory-made index */
    CLS_FLAT,
    CLS_FLATL2,
    CLS_FLATIP,
    CLS_FLAT1D,
    CLS_IVF,
    CLS_IVFFLAT,
    CLS_IDMAP,
    CLS_IDMAP2,
    CLS_REFINEFLAT,
};

struct FaissIndex_H {
    enum cls cls;
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
};

static atomic_uint name_seq;

/* A unique server-side name: fpxc-<host>-<pid>-<time>-<seq>. */
static void make_name(char *out) {
    char host[48] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    snprintf(out, 129, "fpxc-%s-%ld-%lx-%u", host, (long)getpid(), (unsigned long)time(NULL),
             atomic_fetch_add(&name_seq, 1));
}

static const char *metric_name(FaissMetricType m) {
    return m == METRIC_L2 ? "L2" : m == METRIC_INNER_PRODUCT ? "IP" : NULL;
}

static FaissIndex *handle_new(enum cls cls, int d, FaissMetricType metric, const char *desc) {
    FaissIndex *ix = calloc(1, sizeof *ix);
    if (!ix)
        return NULL;
    ix->cls = cls;
    ix->d = d;
    ix->metric = metric;
    ix->nprobe = 1;
    ix->is_trained = 1;
    ix->k_factor = 1;
    snprintf(ix->desc, sizeof ix->desc, "%s", desc ? desc : "");
    return ix;
}

/* Creates the server index of a handle. */
static int create_on_server(FaissIndex *ix) {
    fpx_client *c = client();
    if (!c)
        return UNKNOWN_EXCEPT;
    const char *m = metric_name(ix->metric);
    if (!m)
        return set_error(FAISS_EXCEPT, "faiss-proxy serves the L2 and inner-product metrics only");
    char name[129];
    make_name(name);
    fpx_index_info info;
    if (fpx_client_create_index_leased(c, name, ix->d, ix->desc, m, FPX_LEASE_FROM_ENV, &info))
        return from_client(c);
    snprintf(ix->name, sizeof ix->name, "%s", name);
    ix->is_trained = info.is_trained;
    ix->ntotal = 0;
    return 0;
}

/* A new handle with its server index; NULL and the error set on failure. */
static int make_index(FaissIndex **out, enum cls cls, int d, FaissMetricType metric,
                      const char *desc) {
    *out = NULL;
    FaissIndex *ix = handle_new(cls, d, metric, desc);
    if (!ix)
        return set_error(STD_EXCEPT, "out of memory");
    int rc = create_on_server(ix);
    if (rc) {
        free(ix);
        return rc;
    }
    *out = ix;
    return 0;
}

/* The handle's server index, or an error for one that has none (d = 0). */
static int need(const FaissIndex *ix, fpx_client **c) {
    if (!ix)
        return set_error(FAISS_EXCEPT, "index is NULL");
    if (!ix->name[0])
        return set_error(FAISS_EXCEPT, "this index was built without a dimension and holds "
                                       "nothing on the server");
    *c = client();
    return *c ? 0 : UNKNOWN_EXCEPT;
}

/* The class a factory description makes. */
static enum cls cls_of_desc(const char *desc, size_t *nlist) {
    *nlist = 0;
    if (!strncmp(desc, "IDMap2,", 7))
        return CLS_IDMAP2;
    if (!strncmp(desc, "IDMap,", 6))
        return CLS_IDMAP;
    size_t n = strlen(desc);
    if (n > 6 && !strcmp(desc + n - 6, ",RFlat"))
        return CLS_REFINEFLAT;
    if (!strcmp(desc, "Flat"))
        return CLS_FLAT;
    if (!strncmp(desc, "IVF", 3)) {
        char *end;
        *nlist = strtoul(desc + 3, &end, 10);
        return !strcmp(end, ",Flat") ? CLS_IVFFLAT : CLS_IVF;
    }
    return CLS_INDEX;
}

static void drop_caches(FaissIndex *ix) {
    free(ix->xb);
    ix->xb = NULL;
}

void faiss_Index_free(FaissIndex *ix) {
    if (!ix)
        return;
    if (ix->name[0] && !ix->keep) {
        fpx_client *c = client();
        if (c)
            fpx_client_delete_index(c, ix->name);
    }
    if (ix->own_fields)
        faiss_Index_free(ix->sub);
    free(ix->xb);
    free(ix->ids);
    free(ix);
}

int faiss_Index_d(const FaissIndex *ix) {
    return ix->d;
}

int faiss_Index_is_trained(const FaissIndex *ix) {
    return ix->is_trained;
}

idx_t faiss_Index_ntotal(const FaissIndex *ix) {
    return ix->ntotal;
}

FaissMetricType faiss_Index_metric_type(const FaissIndex *ix) {
    return ix->metric;
}

int faiss_Index_verbose(const FaissIndex *ix) {
    return ix->verbose;
}

void faiss_Index_set_verbose(FaissIndex *ix, int v) {
    ix->verbose = v;
}

static int is_idmap(const FaissIndex *ix) {
    return ix->cls == CLS_IDMAP || ix->cls == CLS_IDMAP2;
}

/* Whether FAISS's add_with_ids works for this class (IVF and IDMap do;
 * flat, HNSW, PQ... throw "not implemented"). */
static int takes_ids(const FaissIndex *ix) {
    return is_idmap(ix) || ix->cls == CLS_IVF || ix->cls == CLS_IVFFLAT ||
           strstr(ix->desc, "IVF") != NULL;
}

int faiss_Index_train(FaissIndex *ix, idx_t n, const float *x) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    if (fpx_client_train(c, ix->name, n, ix->d, x) != 0)
        return from_client(c);
    fpx_index_info info;
    if (fpx_client_get_index_info(c, ix->name, &info) != 0)
        return from_client(c);
    ix->is_trained = info.is_trained;
    return 0;
}

static int add(FaissIndex *ix, idx_t n, const float *x, const idx_t *ids) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    int64_t ntotal;
    if (fpx_client_add(c, ix->name, n, ix->d, x, ids, NULL, &ntotal) != 0)
        return from_client(c);
    ix->ntotal = ntotal;
    drop_caches(ix);
    if (ids && is_idmap(ix) && n > 0) {
        idx_t *m = realloc(ix->ids, sizeof *m * (ix->nids + (size_t)n));
        if (!m)
            return set_error(STD_EXCEPT, "out of memory");
        memcpy(m + ix->nids, ids, sizeof *m * (size_t)n);
        ix->ids = m;
        ix->nids += (size_t)n;
    }
    return 0;
}

int faiss_Index_add(FaissIndex *ix, idx_t n, const float *x) {
    if (ix && is_idmap(ix))
        return set_error(FAISS_EXCEPT, "add does not make sense with IndexIDMap, use add_with_ids");
    return add(ix, n, x, NULL);
}

int faiss_Index_add_with_ids(FaissIndex *ix, idx_t n, const float *x, const idx_t *xids) {
    if (ix && !takes_ids(ix))
        return set_error(FAISS_EXCEPT, "add_with_ids not implemented for this type of index");
    return add(ix, n, x, xids);
}

int faiss_Index_search(const FaissIndex *ix, idx_t n, const float *x, idx_t k, float *distances,
                       idx_t *labels) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    if (n == 0)
        return 0;
    if (fpx_client_search(c, ix->name, n, ix->d, x, k, NULL, distances, labels) != 0)
        return from_client(c);
    return 0;
}

int faiss_Index_assign(FaissIndex *ix, idx_t n, const float *x, idx_t *labels, idx_t k) {
    float *D = malloc(sizeof(float) * (size_t)(n * k > 0 ? n * k : 1));
    if (!D)
        return set_error(STD_EXCEPT, "out of memory");
    int rc = faiss_Index_search(ix, n, x, k, D, labels);
    free(D);
    return rc;
}

/* RangeSearchResult: as FAISS lays it out. */
struct FaissRangeSearchResult_H {
    size_t nq;
    size_t *lims;
    idx_t *labels;
    float *distances;
    size_t buffer_size;
};

/* Moves a range search's arrays (taken) into a RangeSearchResult. */
static int fill_range_result(FaissRangeSearchResult *result, idx_t n, int64_t *lims,
                             int64_t *labels, float *dist) {
    if (!result->lims && !(result->lims = calloc((size_t)n + 1, sizeof(size_t)))) {
        free(lims);
        free(labels);
        free(dist);
        return set_error(STD_EXCEPT, "out of memory");
    }
    for (idx_t i = 0; i <= n; i++)
        result->lims[i] = (size_t)lims[i];
    free(result->labels);
    free(result->distances);
    result->labels = labels;
    result->distances = dist;
    free(lims);
    return 0;
}

int faiss_Index_range_search(const FaissIndex *ix, idx_t n, const float *x, float radius,
                             FaissRangeSearchResult *result) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    if ((size_t)n != result->nq)
        return set_error(FAISS_EXCEPT, "the RangeSearchResult is for %zu queries, not %lld",
                         result->nq, (long long)n);
    int64_t *lims;
    int64_t *labels;
    float *dist;
    if (fpx_client_range_search(c, ix->name, n, ix->d, x, radius, NULL, &lims, &labels, &dist))
        return from_client(c);
    return fill_range_result(result, n, lims, labels, dist);
}

int faiss_Index_reset(FaissIndex *ix) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    if (fpx_client_reset(c, ix->name) != 0)
        return from_client(c);
    ix->ntotal = 0;
    drop_caches(ix);
    ix->nids = 0;
    return 0;
}

/* IDSelector: a label range or a batch of labels. */
struct FaissIDSelector_H {
    int is_range;
    idx_t imin, imax;
    idx_t *ids; /* sorted */
    size_t n;
    int nbits;
    idx_t mask;
};

static int cmp_idx(const void *a, const void *b) {
    idx_t x = *(const idx_t *)a, y = *(const idx_t *)b;
    return (x > y) - (x < y);
}

int faiss_IDSelector_is_member(const FaissIDSelector *sel, idx_t id) {
    if (sel->is_range)
        return id >= sel->imin && id < sel->imax;
    return bsearch(&id, sel->ids, sel->n, sizeof id, cmp_idx) != NULL;
}

int faiss_Index_remove_ids(FaissIndex *ix, const FaissIDSelector *sel, size_t *n_removed) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    int64_t removed = 0;
    if (sel->is_range ? fpx_client_remove_range(c, ix->name, sel->imin, sel->imax, &removed)
                      : fpx_client_remove_ids(c, ix->name, sel->n, sel->ids, &removed))
        return from_client(c);
    if (n_removed)
        *n_removed = (size_t)removed;
    ix->ntotal -= removed;
    drop_caches(ix);
    size_t j = 0;
    for (size_t i = 0; i < ix->nids; i++)
        if (!faiss_IDSelector_is_member(sel, ix->ids[i]))
            ix->ids[j++] = ix->ids[i];
    ix->nids = j;
    return 0;
}

int faiss_Index_reconstruct(const FaissIndex *ix, idx_t key, float *recons) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    if (fpx_client_reconstruct(c, ix->name, key, ix->d, recons) != 0)
        return from_client(c);
    return 0;
}

int faiss_Index_reconstruct_n(const FaissIndex *ix, idx_t i0, idx_t ni, float *recons) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    if (fpx_client_reconstruct_n(c, ix->name, i0, ni, ix->d, recons) != 0)
        return from_client(c);
    return 0;
}

static int not_here(const char *what) {
    return set_error(FAISS_EXCEPT,
                     "%s is not available through faiss-proxy: it needs the index's internals "
                     "in this process",
                     what);
}

int faiss_Index_compute_residual(const FaissIndex *ix, const float *x, float *residual, idx_t key) {
    (void)ix, (void)x, (void)residual, (void)key;
    return not_here("compute_residual");
}

int faiss_Index_compute_residual_n(const FaissIndex *ix, idx_t n, const float *x, float *residuals,
                                   const idx_t *keys) {
    (void)ix, (void)n, (void)x, (void)residuals, (void)keys;
    return not_here("compute_residual_n");
}

int faiss_Index_sa_code_size(const FaissIndex *ix, size_t *size) {
    (void)ix, (void)size;
    return not_here("sa_code_size");
}

int faiss_Index_sa_encode(const FaissIndex *ix, idx_t n, const float *x, uint8_t *bytes) {
    (void)ix, (void)n, (void)x, (void)bytes;
    return not_here("sa_encode");
}

int faiss_Index_sa_decode(const FaissIndex *ix, idx_t n, const uint8_t *bytes, float *x) {
    (void)ix, (void)n, (void)bytes, (void)x;
    return not_here("sa_decode");
}

/* ---- constructors ------------------------------------------------------------------- */

int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                        FaissMetricType metric) {
    size_t nlist;
    if (!description)
        return set_error(FAISS_EXCEPT, "description is NULL");
    enum cls cls = cls_of_desc(description, &nlist);
    int rc = make_index(p_index, cls, d, metric, description);
    if (rc == 0) {
        (*p_index)->nlist = nlist;
        (*p_index)->own_fields = 1;
    }
    return rc;
}

static int flat_new(FaissIndex **p, enum cls cls, idx_t d, FaissMetricType metric) {
    if (d <= 0) { /* FAISS's default constructor: an index of dimension 0 */
        *p = handle_new(cls, 0, metric, "Flat");
        return *p ? 0 : set_error(STD_EXCEPT, "out of memory");
    }
    return make_index(p, cls, (int)d, metric, "Flat");
}

int faiss_IndexFlat_new(FaissIndexFlat **p) {
    return flat_new(p, CLS_FLAT, 0, METRIC_L2);
}

int faiss_IndexFlat_new_with(FaissIndexFlat **p, idx_t d, FaissMetricType metric) {
    return flat_new(p, CLS_FLAT, d, metric);
}

int faiss_IndexFlatL2_new(FaissIndexFlatL2 **p) {
    return flat_new(p, CLS_FLATL2, 0, METRIC_L2);
}

int faiss_IndexFlatL2_new_with(FaissIndexFlatL2 **p, idx_t d) {
    return flat_new(p, CLS_FLATL2, d, METRIC_L2);
}

int faiss_IndexFlatIP_new(FaissIndexFlatIP **p) {
    return flat_new(p, CLS_FLATIP, 0, METRIC_INNER_PRODUCT);
}

int faiss_IndexFlatIP_new_with(FaissIndexFlatIP **p, idx_t d) {
    return flat_new(p, CLS_FLATIP, d, METRIC_INNER_PRODUCT);
}

void faiss_IndexFlat_xb(FaissIndexFlat *ix, float **p_xb, size_t *p_size) {
    *p_xb = NULL;
    *p_size = 0;
    fpx_client *c = NULL;
    if (need(ix, &c))
        return;
    free(ix->xb);
    size_t n = (size_t)ix->ntotal * (size_t)ix->d;
    ix->xb = malloc(sizeof(float) * (n ? n : 1));
    if (!ix->xb) {
        set_error(STD_EXCEPT, "out of memory");
        return;
    }
    if (ix->ntotal && fpx_client_reconstruct_n(c, ix->name, 0, ix->ntotal, ix->d, ix->xb)) {
        from_client(c);
        free(ix->xb);
        ix->xb = NULL;
        return;
    }
    *p_xb = ix->xb;
    *p_size = n;
}

int faiss_IndexFlat_compute_distance_subset(FaissIndex *ix, idx_t n, const float *x, idx_t k,
                                            float *distances, const idx_t *labels) {
    /* distances to the stored vectors labels[i*k + j], computed from their
     * reconstruction (exact on flat indexes) */
    float *v = malloc(sizeof(float) * (size_t)(ix->d > 0 ? ix->d : 1));
    if (!v)
        return set_error(STD_EXCEPT, "out of memory");
    for (idx_t i = 0; i < n; i++) {
        for (idx_t j = 0; j < k; j++) {
            idx_t l = labels[i * k + j];
            if (l < 0)
                continue;
            int rc = faiss_Index_reconstruct(ix, l, v);
            if (rc) {
                free(v);
                return rc;
            }
            float s = 0;
            const float *q = x + i * ix->d;
            for (int t = 0; t < ix->d; t++)
                s += ix->metric == METRIC_L2 ? (q[t] - v[t]) * (q[t] - v[t]) : q[t] * v[t];
            distances[i * k + j] = s;
        }
    }
    free(v);
    return 0;
}

#define CAST(clazz, cond)                                                                          \
    Faiss##clazz *faiss_##clazz##_cast(FaissIndex *ix) {                                           \
        return ix && (cond) ? ix : NULL;                                                           \
    }

CAST(IndexFlat,
     ix->cls == CLS_FLAT || ix->cls == CLS_FLATL2 || ix->cls == CLS_FLATIP || ix->cls == CLS_FLAT1D)
CAST(IndexFlatL2, ix->cls == CLS_FLATL2)
CAST(IndexFlatIP, ix->cls == CLS_FLATIP)
CAST(IndexFlat1D, ix->cls == CLS_FLAT1D)
CAST(IndexIVF, ix->cls == CLS_IVF || ix->cls == CLS_IVFFLAT)
CAST(IndexIVFFlat, ix->cls == CLS_IVFFLAT)
CAST(IndexIDMap, ix->cls == CLS_IDMAP || ix->cls == CLS_IDMAP2)
CAST(IndexIDMap2, ix->cls == CLS_IDMAP2)
CAST(IndexRefineFlat, ix->cls == CLS_REFINEFLAT)

#define FREE_AS_INDEX(clazz)                                                                       \
    void faiss_##clazz##_free(Faiss##clazz *ix) {                                                  \
        faiss_Index_free(ix);                                                                      \
    }

FREE_AS_INDEX(IndexFlat)
FREE_AS_INDEX(IndexFlatL2)
FREE_AS_INDEX(IndexFlatIP)
FREE_AS_INDEX(IndexFlat1D)
FREE_AS_INDEX(IndexIVF)
FREE_AS_INDEX(IndexIVFFlat)
FREE_AS_INDEX(IndexRefineFlat)

int faiss_IndexFlat1D_new(FaissIndexFlat1D **p) {
    *p = NULL;
    return set_error(FAISS_EXCEPT, "IndexFlat1D has no factory description and is not served "
                                   "by faiss-proxy");
}

int faiss_IndexFlat1D_new_with(FaissIndexFlat1D **p, int continuous_update) {
    (void)continuous_update;
    return faiss_IndexFlat1D_new(p);
}

int faiss_IndexFlat1D_update_permutation(FaissIndexFlat1D *ix) {
    (void)ix;
    return 0;
}

int faiss_IndexRefineFlat_new(FaissIndexRefineFlat **p, FaissIndex *base) {
    *p = NULL;
    if (!base || !base->desc[0])
        return set_error(FAISS_EXCEPT, "base index is NULL");
    if (base->ntotal != 0)
        return set_error(FAISS_EXCEPT, "faiss-proxy builds IndexRefineFlat around an empty base");
    char desc[256];
    if (snprintf(desc, sizeof desc, "%s,RFlat", base->desc) >= (int)sizeof desc)
        return set_error(FAISS_EXCEPT, "description too long");
    int rc = make_index(p, CLS_REFINEFLAT, base->d, base->metric, desc);
    if (rc == 0)
        (*p)->sub = base;
    return rc;
}

int faiss_IndexRefineFlat_own_fields(const FaissIndexRefineFlat *ix) {
    return ix->own_fields;
}

void faiss_IndexRefineFlat_set_own_fields(FaissIndexRefineFlat *ix, int v) {
    ix->own_fields = v;
}

float faiss_IndexRefineFlat_k_factor(const FaissIndexRefineFlat *ix) {
    return ix->k_factor;
}

static int set_param(FaissIndex *ix, const char *name, double value) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    if (fpx_client_set_param(c, ix->name, name, value) != 0)
        return from_client(c);
    if (!strcmp(name, "nprobe"))
        ix->nprobe = (size_t)value;
    else if (!strcmp(name, "k_factor"))
        ix->k_factor = (float)value;
    return 0;
}

void faiss_IndexRefineFlat_set_k_factor(FaissIndexRefineFlat *ix, float v) {
    set_param(ix, "k_factor", v);
}

/* ---- IVF ------------------------------------------------------------------------------ */

static int ivf_new(FaissIndexIVFFlat **p, FaissIndex *quantizer, size_t d, size_t nlist,
                   FaissMetricType metric) {
    char desc[64];
    snprintf(desc, sizeof desc, "IVF%zu,Flat", nlist);
    int rc = make_index(p, CLS_IVFFLAT, (int)d, metric, desc);
    if (rc == 0) {
        (*p)->nlist = nlist;
        (*p)->sub = quantizer;
    }
    return rc;
}

int faiss_IndexIVFFlat_new(FaissIndexIVFFlat **p) {
    *p = handle_new(CLS_IVFFLAT, 0, METRIC_L2, "");
    return *p ? 0 : set_error(STD_EXCEPT, "out of memory");
}

int faiss_IndexIVFFlat_new_with(FaissIndexIVFFlat **p, FaissIndex *quantizer, size_t d,
                                size_t nlist) {
    return ivf_new(p, quantizer, d, nlist, METRIC_L2);
}

int faiss_IndexIVFFlat_new_with_metric(FaissIndexIVFFlat **p, FaissIndex *quantizer, size_t d,
                                       size_t nlist, FaissMetricType metric) {
    return ivf_new(p, quantizer, d, nlist, metric);
}

int faiss_IndexIVFFlat_add_core(FaissIndexIVFFlat *ix, idx_t n, const float *x, const idx_t *xids,
                                const int64_t *precomputed_idx) {
    (void)precomputed_idx; /* the server assigns lists itself */
    return xids ? faiss_Index_add_with_ids(ix, n, x, xids) : faiss_Index_add(ix, n, x);
}

int faiss_IndexIVFFlat_update_vectors(FaissIndexIVFFlat *ix, int nv, idx_t *idx, const float *v) {
    (void)ix, (void)nv, (void)idx, (void)v;
    return not_here("update_vectors");
}

size_t faiss_IndexIVF_nlist(const FaissIndexIVF *ix) {
    return ix->nlist;
}

size_t faiss_IndexIVF_nprobe(const FaissIndexIVF *ix) {
    return ix->nprobe;
}

void faiss_IndexIVF_set_nprobe(FaissIndexIVF *ix, size_t v) {
    set_param(ix, "nprobe", (double)v);
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

size_t faiss_IndexIVFFlat_nlist(const FaissIndexIVFFlat *ix) {
    return ix->nlist;
}

size_t faiss_IndexIVFFlat_nprobe(const FaissIndexIVFFlat *ix) {
    return ix->nprobe;
}

void faiss_IndexIVFFlat_set_nprobe(FaissIndexIVFFlat *ix, size_t v) {
    faiss_IndexIVF_set_nprobe(ix, v);
}

FaissIndex *faiss_IndexIVFFlat_quantizer(const FaissIndexIVFFlat *ix) {
    return ix->sub;
}

char faiss_IndexIVFFlat_quantizer_trains_alone(const FaissIndexIVFFlat *ix) {
    (void)ix;
    return 0;
}

int faiss_IndexIVFFlat_own_fields(const FaissIndexIVFFlat *ix) {
    return ix->own_fields;
}

void faiss_IndexIVFFlat_set_own_fields(FaissIndexIVFFlat *ix, int v) {
    ix->own_fields = v;
}

int faiss_IndexIVF_merge_from(FaissIndexIVF *ix, FaissIndexIVF *other, idx_t add_id) {
    (void)ix, (void)other, (void)add_id;
    return not_here("merge_from");
}

int faiss_IndexIVF_copy_subset_to(const FaissIndexIVF *ix, FaissIndexIVF *other, int subset_type,
                                  idx_t a1, idx_t a2) {
    (void)ix, (void)other, (void)subset_type, (void)a1, (void)a2;
    return not_here("copy_subset_to");
}

int faiss_IndexIVF_search_preassigned(const FaissIndexIVF *ix, idx_t n, const float *x, idx_t k,
                                      const idx_t *assign, const float *centroid_dis,
                                      float *distances, idx_t *labels, int store_pairs) {
    (void)ix, (void)n, (void)x, (void)k, (void)assign, (void)centroid_dis;
    (void)distances, (void)labels, (void)store_pairs;
    return not_here("search_preassigned");
}

size_t faiss_IndexIVF_get_list_size(const FaissIndexIVF *ix, size_t list_no) {
    (void)ix, (void)list_no;
    not_here("get_list_size");
    return 0;
}

int faiss_IndexIVF_make_direct_map(FaissIndexIVF *ix, int new_maintain_direct_map) {
    return set_param(ix, "direct_map", new_maintain_direct_map ? 1 : 0);
}

double faiss_IndexIVF_imbalance_factor(const FaissIndexIVF *ix) {
    (void)ix;
    not_here("imbalance_factor");
    return 0;
}

void faiss_IndexIVF_print_stats(const FaissIndexIVF *ix) {
    printf("faiss-proxy index %s: nlist=%zu nprobe=%zu ntotal=%lld\n", ix->name, ix->nlist,
           ix->nprobe, (long long)ix->ntotal);
}

void faiss_IndexIVF_invlists_get_ids(const FaissIndexIVF *ix, size_t list_no, idx_t *invlist) {
    (void)ix, (void)list_no, (void)invlist;
    not_here("invlists_get_ids");
}

static FaissIndexIVFStats ivf_stats;

void faiss_IndexIVFStats_reset(FaissIndexIVFStats *stats) {
    memset(stats, 0, sizeof *stats);
}

FaissIndexIVFStats *faiss_get_indexIVF_stats(void) {
    return &ivf_stats;
}

/* ---- IDMap ---------------------------------------------------------------------------- */

static int idmap_new(FaissIndex **p, FaissIndex *sub, enum cls cls) {
    *p = NULL;
    if (!sub || !sub->desc[0])
        return set_error(FAISS_EXCEPT, "index is NULL");
    if (sub->ntotal != 0)
        return set_error(FAISS_EXCEPT, "index must be empty on input");
    char desc[256];
    if (snprintf(desc, sizeof desc, "%s,%s", cls == CLS_IDMAP2 ? "IDMap2" : "IDMap", sub->desc) >=
        (int)sizeof desc)
        return set_error(FAISS_EXCEPT, "description too long");
    int rc = make_index(p, cls, sub->d, sub->metric, desc);
    if (rc == 0) {
        (*p)->sub = sub;
        (*p)->is_trained = sub->is_trained;
    }
    return rc;
}

int faiss_IndexIDMap_new(FaissIndexIDMap **p, FaissIndex *index) {
    return idmap_new(p, index, CLS_IDMAP);
}

int faiss_IndexIDMap2_new(FaissIndexIDMap2 **p, FaissIndex *index) {
    return idmap_new(p, index, CLS_IDMAP2);
}

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

/* ---- server names ------------------------------------------------------------------- */

const char *faiss_proxy_Index_name(const FaissIndex *ix) {
    return ix ? ix->name : NULL;
}

int faiss_proxy_Index_keep(FaissIndex *ix, int keep) {
    if (!ix)
        return set_error(FAISS_EXCEPT, "index is NULL");
    /* Kept, it must outlive the program: its lease goes (it has one unless
     * FAISS_PROXY_LEASE_SECONDS turned leases off). */
    const char *lease = getenv("FAISS_PROXY_LEASE_SECONDS");
    if (keep && !ix->keep && ix->name[0] && !(lease && !strcmp(lease, "0"))) {
        fpx_client *c = client();
        if (!c)
            return UNKNOWN_EXCEPT;
        if (fpx_client_set_lease(c, ix->name, 0) != 0)
            return from_client(c);
    }
    ix->keep = keep != 0;
    return 0;
}

/* A handle over an existing server index described by info. */
static int handle_from_info(FaissIndex **p, const fpx_index_info *info, enum cls cls) {
    size_t nlist = 0;
    enum cls dc = cls_of_desc(info->index_type, &nlist);
    FaissIndex *ix =
        handle_new(cls == CLS_INDEX ? dc : cls, (int)info->dimension,
                   strcmp(info->metric, "IP") ? METRIC_L2 : METRIC_INNER_PRODUCT, info->index_type);
    if (!ix)
        return set_error(STD_EXCEPT, "out of memory");
    snprintf(ix->name, sizeof ix->name, "%s", info->index_id);
    ix->ntotal = info->ntotal;
    ix->is_trained = info->is_trained;
    ix->nlist = nlist;
    *p = ix;
    return 0;
}

int faiss_proxy_Index_open(FaissIndex **p, const char *name) {
    fpx_client *c = client();
    if (!c)
        return UNKNOWN_EXCEPT;
    fpx_index_info info;
    if (fpx_client_get_index_info(c, name, &info) != 0)
        return from_client(c);
    int rc = handle_from_info(p, &info, CLS_INDEX);
    if (rc == 0)
        (*p)->keep = 1;
    return rc;
}

/* ---- I/O and cloning ---------------------------------------------------------------- */

int faiss_write_index(const FaissIndex *ix, FILE *f) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    uint8_t *bytes;
    size_t len;
    if (fpx_client_export(c, ix->name, &bytes, &len) != 0)
        return from_client(c);
    size_t w = fwrite(bytes, 1, len, f);
    free(bytes);
    if (w != len)
        return set_error(STD_EXCEPT, "cannot write the index: short write");
    return 0;
}

int faiss_write_index_fname(const FaissIndex *ix, const char *fname) {
    FILE *f = fopen(fname, "wb");
    if (!f)
        return set_error(STD_EXCEPT, "cannot open %s for writing", fname);
    int rc = faiss_write_index(ix, f);
    if (fclose(f) != 0 && rc == 0)
        rc = set_error(STD_EXCEPT, "cannot write %s", fname);
    return rc;
}

/* The class of an index from the fourcc FAISS writes first, and an IVF's
 * nlist and nprobe from its header. */
static enum cls cls_of_bytes(const uint8_t *b, size_t len, size_t *nlist, size_t *nprobe) {
    *nlist = 0;
    *nprobe = 1;
    if (len < 4)
        return CLS_INDEX;
    if (!memcmp(b, "IxF2", 4))
        return CLS_FLATL2;
    if (!memcmp(b, "IxFI", 4))
        return CLS_FLATIP;
    if (!memcmp(b, "IxFl", 4))
        return CLS_FLAT;
    if (!memcmp(b, "IxMp", 4))
        return CLS_IDMAP;
    if (!memcmp(b, "IxM2", 4))
        return CLS_IDMAP2;
    if (!memcmp(b, "IxRF", 4))
        return CLS_REFINEFLAT;
    if (b[0] == 'I' && b[1] == 'w') {
        /* fourcc, d (i32), ntotal, 2 dummies (i64), is_trained (u8), metric
         * (i32) [+ metric_arg (f32) past L2], then nlist and nprobe (u64) */
        size_t off = 4 + 4 + 8 * 3 + 1;
        int32_t metric;
        if (len >= off + 4) {
            memcpy(&metric, b + off, 4);
            off += 4 + (metric > 1 ? 4 : 0);
            uint64_t nl, np;
            if (len >= off + 16) {
                memcpy(&nl, b + off, 8);
                memcpy(&np, b + off + 8, 8);
                *nlist = (size_t)nl;
                *nprobe = (size_t)np;
            }
        }
        return !memcmp(b, "IwFl", 4) ? CLS_IVFFLAT : CLS_IVF;
    }
    return CLS_INDEX;
}

static int import_bytes(const uint8_t *bytes, size_t len, FaissIndex **p) {
    *p = NULL;
    fpx_client *c = client();
    if (!c)
        return UNKNOWN_EXCEPT;
    char name[129];
    make_name(name);
    fpx_index_info info;
    if (fpx_client_import_leased(c, name, "imported", bytes, len, FPX_LEASE_FROM_ENV, &info))
        return from_client(c);
    size_t nlist, nprobe;
    enum cls cls = cls_of_bytes(bytes, len, &nlist, &nprobe);
    int rc = handle_from_info(p, &info, cls);
    if (rc) {
        fpx_client_delete_index(c, name);
        return rc;
    }
    (*p)->nlist = nlist;
    (*p)->nprobe = nprobe;
    (*p)->own_fields = 1;
    return 0;
}

/* The whole of f into a malloc'd buffer. */
static int read_all(FILE *f, uint8_t **out, size_t *out_len) {
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return set_error(STD_EXCEPT, "out of memory");
    size_t k;
    while ((k = fread(buf + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return set_error(STD_EXCEPT, "out of memory");
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        free(buf);
        return set_error(STD_EXCEPT, "cannot read the index file");
    }
    *out = buf;
    *out_len = len;
    return 0;
}

int faiss_read_index(FILE *f, int io_flags, FaissIndex **p_out) {
    (void)io_flags; /* mmap and read-only do not apply: the index lives on the server */
    uint8_t *buf;
    size_t len;
    int rc = read_all(f, &buf, &len);
    if (rc)
        return rc;
    if (len >= 2 && buf[0] == 'I' && buf[1] == 'B') {
        free(buf);
        return set_error(FAISS_EXCEPT, "this is a binary index: read it with "
                                       "faiss_read_index_binary");
    }
    rc = import_bytes(buf, len, p_out);
    free(buf);
    return rc;
}

int faiss_read_index_fname(const char *fname, int io_flags, FaissIndex **p_out) {
    FILE *f = fopen(fname, "rb");
    if (!f)
        return set_error(STD_EXCEPT, "cannot open %s", fname);
    int rc = faiss_read_index(f, io_flags, p_out);
    fclose(f);
    return rc;
}

int faiss_clone_index(const FaissIndex *ix, FaissIndex **p_out) {
    fpx_client *c = NULL;
    int rc = need(ix, &c);
    if (rc)
        return rc;
    uint8_t *bytes;
    size_t len;
    if (fpx_client_export(c, ix->name, &bytes, &len) != 0)
        return from_client(c);
    rc = import_bytes(bytes, len, p_out);
    free(bytes);
    if (rc == 0) {
        (*p_out)->cls = ix->cls;
        (*p_out)->nprobe = ix->nprobe;
        (*p_out)->nlist = ix->nlist;
        snprintf((*p_out)->desc, sizeof(*p_out)->desc, "%s", ix->desc);
        if (ix->nids && ((*p_out)->ids = malloc(sizeof(idx_t) * ix->nids)) != NULL) {
            memcpy((*p_out)->ids, ix->ids, sizeof(idx_t) * ix->nids);
            (*p_out)->nids = ix->nids;
        }
    }
    return rc;
}

/* ---- binary indexes ----------------------------------------------------------------- */

/* A binary index is a handle like the others (d in bits), behind its own type. */
struct FaissIndexBinary_H {
    struct FaissIndex_H h;
    int takes_ids; /* FAISS's add_with_ids works (IVF, IDMap) */
};

#define BH(b) (&(b)->h)

void faiss_IndexBinary_free(FaissIndexBinary *b) {
    faiss_Index_free(b ? BH(b) : NULL); /* h is the first member: the same allocation */
}

int faiss_IndexBinary_d(const FaissIndexBinary *b) {
    return b->h.d;
}

int faiss_IndexBinary_is_trained(const FaissIndexBinary *b) {
    return b->h.is_trained;
}

idx_t faiss_IndexBinary_ntotal(const FaissIndexBinary *b) {
    return b->h.ntotal;
}

FaissMetricType faiss_IndexBinary_metric_type(const FaissIndexBinary *b) {
    (void)b;
    return METRIC_L2; /* what FAISS's IndexBinary reports; distances are Hamming */
}

int faiss_IndexBinary_verbose(const FaissIndexBinary *b) {
    return b->h.verbose;
}

void faiss_IndexBinary_set_verbose(FaissIndexBinary *b, int v) {
    b->h.verbose = v;
}

int faiss_IndexBinary_train(FaissIndexBinary *b, idx_t n, const uint8_t *x) {
    fpx_client *c = NULL;
    int rc = need(BH(b), &c);
    if (rc)
        return rc;
    fpx_index_info info;
    if (fpx_client_train_binary(c, b->h.name, n, b->h.d, x) != 0 ||
        fpx_client_get_index_info(c, b->h.name, &info) != 0)
        return from_client(c);
    b->h.is_trained = info.is_trained;
    return 0;
}

static int add_binary(FaissIndexBinary *b, idx_t n, const uint8_t *x, const idx_t *ids) {
    fpx_client *c = NULL;
    int rc = need(BH(b), &c);
    if (rc)
        return rc;
    int64_t ntotal;
    if (fpx_client_add_binary(c, b->h.name, n, b->h.d, x, ids, &ntotal) != 0)
        return from_client(c);
    b->h.ntotal = ntotal;
    return 0;
}

int faiss_IndexBinary_add(FaissIndexBinary *b, idx_t n, const uint8_t *x) {
    if (b && is_idmap(BH(b)))
        return set_error(FAISS_EXCEPT, "add does not make sense with IndexIDMap, use add_with_ids");
    return add_binary(b, n, x, NULL);
}

int faiss_IndexBinary_add_with_ids(FaissIndexBinary *b, idx_t n, const uint8_t *x,
                                   const idx_t *xids) {
    if (b && !b->takes_ids)
        return set_error(FAISS_EXCEPT, "add_with_ids not implemented for this type of index");
    return add_binary(b, n, x, xids);
}

int faiss_IndexBinary_search(const FaissIndexBinary *b, idx_t n, const uint8_t *x, idx_t k,
                             int32_t *distances, idx_t *labels) {
    fpx_client *c = NULL;
    int rc = need(BH(b), &c);
    if (rc)
        return rc;
    if (n > 0 && fpx_client_search_binary(c, b->h.name, n, b->h.d, x, k, distances, labels))
        return from_client(c);
    return 0;
}

int faiss_IndexBinary_range_search(const FaissIndexBinary *b, idx_t n, const uint8_t *x, int radius,
                                   FaissRangeSearchResult *result) {
    fpx_client *c = NULL;
    int rc = need(BH(b), &c);
    if (rc)
        return rc;
    int64_t *lims, *labels;
    float *dist;
    if ((size_t)n != result->nq)
        return set_error(FAISS_EXCEPT, "the RangeSearchResult is for %zu queries, not %lld",
                         result->nq, (long long)n);
    if (fpx_client_range_search_binary(c, b->h.name, n, b->h.d, x, radius, &lims, &labels, &dist))
        return from_client(c);
    return fill_range_result(result, n, lims, labels, dist);
}

int faiss_IndexBinary_assign(FaissIndexBinary *b, idx_t n, const uint8_t *x, idx_t *labels,
                             idx_t k) {
    int32_t *D = malloc(sizeof(int32_t) * (size_t)(n * k > 0 ? n * k : 1));
    if (!D)
        return set_error(STD_EXCEPT, "out of memory");
    int rc = faiss_IndexBinary_search(b, n, x, k, D, labels);
    free(D);
    return rc;
}

int faiss_IndexBinary_reset(FaissIndexBinary *b) {
    return faiss_Index_reset(BH(b));
}

int faiss_IndexBinary_remove_ids(FaissIndexBinary *b, const FaissIDSelector *sel,
                                 size_t *n_removed) {
    return faiss_Index_remove_ids(BH(b), sel, n_removed);
}

int faiss_IndexBinary_reconstruct(const FaissIndexBinary *b, idx_t key, uint8_t *recons) {
    fpx_client *c = NULL;
    int rc = need(BH(b), &c);
    if (rc)
        return rc;
    if (fpx_client_reconstruct_binary(c, b->h.name, key, b->h.d, recons) != 0)
        return from_client(c);
    return 0;
}

int faiss_IndexBinary_reconstruct_n(const FaissIndexBinary *b, idx_t i0, idx_t ni,
                                    uint8_t *recons) {
    fpx_client *c = NULL;
    int rc = need(BH(b), &c);
    if (rc)
        return rc;
    if (fpx_client_reconstruct_n_binary(c, b->h.name, i0, ni, b->h.d, recons) != 0)
        return from_client(c);
    return 0;
}

int faiss_write_index_binary(const FaissIndexBinary *b, FILE *f) {
    return faiss_write_index(BH(b), f);
}

int faiss_write_index_binary_fname(const FaissIndexBinary *b, const char *fname) {
    return faiss_write_index_fname(BH(b), fname);
}

int faiss_read_index_binary(FILE *f, int io_flags, FaissIndexBinary **p_out) {
    (void)io_flags;
    *p_out = NULL;
    uint8_t *buf;
    size_t len;
    int rc = read_all(f, &buf, &len);
    if (rc)
        return rc;
    if (len < 4 || buf[0] != 'I' || buf[1] != 'B') {
        free(buf);
        return set_error(FAISS_EXCEPT, "this is not a binary index: read it with "
                                       "faiss_read_index");
    }
    FaissIndex *ix;
    rc = import_bytes(buf, len, &ix);
    if (rc == 0) {
        FaissIndexBinary *b = calloc(1, sizeof *b);
        if (!b) {
            faiss_Index_free(ix);
            rc = set_error(STD_EXCEPT, "out of memory");
        } else {
            b->h = *ix;
            b->h.cls = !memcmp(buf, "IBM2", 4)   ? CLS_IDMAP2
                       : !memcmp(buf, "IBMp", 4) ? CLS_IDMAP
                                                 : CLS_INDEX;
            b->takes_ids = is_idmap(&b->h) || !memcmp(buf, "IBwF", 4);
            free(ix); /* its contents moved into b */
            *p_out = b;
        }
    }
    free(buf);
    return rc;
}

int faiss_read_index_binary_fname(const char *fname, int io_flags, FaissIndexBinary **p_out) {
    FILE *f = fopen(fname, "rb");
    if (!f)
        return set_error(STD_EXCEPT, "cannot open %s", fname);
    int rc = faiss_read_index_binary(f, io_flags, p_out);
    fclose(f);
    return rc;
}

/* ---- ParameterSpace ------------------------------------------------------------------- */

struct FaissParameterRange_H {
    char *name;
    double *values;
    size_t n;
};

struct FaissParameterSpace_H {
    FaissParameterRange **ranges;
    size_t n;
};

const char *faiss_ParameterRange_name(const FaissParameterRange *r) {
    return r->name;
}

void faiss_ParameterRange_values(FaissParameterRange *r, double **values, size_t *n) {
    *values = r->values;
    *n = r->n;
}

int faiss_ParameterSpace_new(FaissParameterSpace **space) {
    *space = calloc(1, sizeof **space);
    return *space ? 0 : set_error(STD_EXCEPT, "out of memory");
}

void faiss_ParameterSpace_free(FaissParameterSpace *ps) {
    if (!ps)
        return;
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->ranges[i]->name);
        free(ps->ranges[i]->values);
        free(ps->ranges[i]);
    }
    free(ps->ranges);
    free(ps);
}

size_t faiss_ParameterSpace_n_combinations(const FaissParameterSpace *ps) {
    size_t n = 1;
    for (size_t i = 0; i < ps->n; i++)
        n *= ps->ranges[i]->n;
    return n;
}

int faiss_ParameterSpace_combination_name(const FaissParameterSpace *ps, size_t cno, char *buf,
                                          size_t size) {
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < ps->n; i++) {
        FaissParameterRange *r = ps->ranges[i];
        if (r->n == 0)
            continue;
        size_t j = cno % r->n;
        cno /= r->n;
        int w = snprintf(buf + off, size > off ? size - off : 0, "%s%s=%g", off ? "," : "", r->name,
                         r->values[j]);
        if (w < 0 || (size_t)w >= size - off)
            return set_error(FAISS_EXCEPT, "combination name does not fit in %zu bytes", size);
        off += (size_t)w;
    }
    return 0;
}

int faiss_ParameterSpace_set_index_parameter(const FaissParameterSpace *ps, FaissIndex *ix,
                                             const char *name, double value) {
    (void)ps;
    return set_param(ix, name, value);
}

int faiss_ParameterSpace_set_index_parameters(const FaissParameterSpace *ps, FaissIndex *ix,
                                              const char *params) {
    char *copy = strdup(params ? params : "");
    if (!copy)
        return set_error(STD_EXCEPT, "out of memory");
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        char *end;
        if (!eq) {
            rc = set_error(FAISS_EXCEPT, "could not parse parameter '%s'", tok);
            break;
        }
        *eq = 0;
        double v = strtod(eq + 1, &end);
        if (end == eq + 1 || *end)
            rc = set_error(FAISS_EXCEPT, "could not parse the value of parameter '%s'", tok);
        else
            rc = faiss_ParameterSpace_set_index_parameter(ps, ix, tok, v);
    }
    free(copy);
    return rc;
}

int faiss_ParameterSpace_set_index_parameters_cno(const FaissParameterSpace *ps, FaissIndex *ix,
                                                  size_t cno) {
    char buf[1024];
    int rc = faiss_ParameterSpace_combination_name(ps, cno, buf, sizeof buf);
    return rc ? rc : faiss_ParameterSpace_set_index_parameters(ps, ix, buf);
}

void faiss_ParameterSpace_display(const FaissParameterSpace *ps) {
    printf("ParameterSpace, %zu parameters, %zu combinations:\n", ps->n,
           faiss_ParameterSpace_n_combinations(ps));
    for (size_t i = 0; i < ps->n; i++) {
        printf("   %s: ", ps->ranges[i]->name);
        for (size_t j = 0; j < ps->ranges[i]->n; j++)
            printf("%g ", ps->ranges[i]->values[j]);
        printf("\n");
    }
}

int faiss_ParameterSpace_add_range(FaissParameterSpace *ps, const char *name,
                                   FaissParameterRange **out) {
    for (size_t i = 0; i < ps->n; i++) {
        if (!strcmp(ps->ranges[i]->name, name)) {
            *out = ps->ranges[i];
            return 0;
        }
    }
    FaissParameterRange *r = calloc(1, sizeof *r);
    FaissParameterRange **rs = realloc(ps->ranges, sizeof *rs * (ps->n + 1));
    if (!r || !rs || !(r->name = strdup(name))) {
        free(r);
        if (rs)
            ps->ranges = rs;
        return set_error(STD_EXCEPT, "out of memory");
    }
    ps->ranges = rs;
    ps->ranges[ps->n++] = r;
    *out = r;
    return 0;
}

/* ---- RangeSearchResult, IDSelector -------------------------------------------------- */

int faiss_RangeSearchResult_new_with(FaissRangeSearchResult **p, idx_t nq, int alloc_lims) {
    FaissRangeSearchResult *r = calloc(1, sizeof *r);
    if (!r)
        return set_error(STD_EXCEPT, "out of memory");
    r->nq = (size_t)nq;
    r->buffer_size = 1024 * 256;
    if (alloc_lims && !(r->lims = calloc((size_t)nq + 1, sizeof(size_t)))) {
        free(r);
        return set_error(STD_EXCEPT, "out of memory");
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
    return r->labels && r->distances ? 0 : set_error(STD_EXCEPT, "out of memory");
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
        return set_error(STD_EXCEPT, "out of memory");
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
        return set_error(STD_EXCEPT, "out of memory");
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
