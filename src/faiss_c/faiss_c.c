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
 * As FAISS's own c_api, the library has one file per header (Index_c.c,
 * IndexFlat_c.c, index_io_c.c, ...). This one is the base they share: the
 * configuration (faiss_proxy_configure included, as it writes it), each
 * thread's connection, and making handles and their server indexes, by
 * creation or by import of FAISS's serialization.
 *
 * Errors: a failed call returns FAISS_EXCEPT (the server refused; its message
 * is FAISS's where FAISS refused), UNKNOWN_EXCEPT (no server), or STD_EXCEPT
 * (out of memory here); faiss_get_last_error() gives the message.
 */
#include "internal.h"

#include <faiss/c_api/error_c.h>
#include <faiss/c_api/faiss_proxy_c.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- configuration, per-thread client ------------------------------------------------ */

static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;
static char cfg_server[512], cfg_key[256], cfg_tenant[129];
static int cfg_loaded;
static unsigned cfg_gen; /* bumped by faiss_proxy_configure */

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_free(void *p) {
    fpx_fc_thread *t = p;
    if (t)
        fpx_client_free(t->c);
    free(t);
}

static void tls_init(void) {
    pthread_key_create(&tls_key, tls_free);
}

fpx_fc_thread *fpx_fc_tls(void) {
    pthread_once(&tls_once, tls_init);
    fpx_fc_thread *t = pthread_getspecific(tls_key);
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

/* This thread's connection, made anew when the configuration changed. */
fpx_client *fpx_fc_client(void) {
    fpx_fc_thread *t = fpx_fc_tls();
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
        if (t->c) {
            fpx_client_set_timeout(t->c, 300000);
            fpx_client_set_complete(t->c, 0); /* FAISS's answers */
        }
    }
    pthread_mutex_unlock(&cfg_lock);
    if (!t->c)
        fpx_fc_error(UNKNOWN_EXCEPT, "faiss-proxy: cannot connect to %s", cfg_server);
    return t->c;
}

/* ---- index handles ------------------------------------------------------------------ */

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

FaissIndex *fpx_fc_handle_new(enum fpx_fc_cls cls, int d, FaissMetricType metric,
                              const char *desc) {
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
    fpx_client *c = fpx_fc_client();
    if (!c)
        return UNKNOWN_EXCEPT;
    const char *m = metric_name(ix->metric);
    if (!m)
        return fpx_fc_error(FAISS_EXCEPT,
                            "faiss-proxy serves the L2 and inner-product metrics only");
    char name[129];
    make_name(name);
    fpx_index_info info;
    if (fpx_client_create_index_leased(c, name, ix->d, ix->desc, m, FPX_LEASE_FROM_ENV, &info))
        return fpx_fc_from_client(c);
    snprintf(ix->name, sizeof ix->name, "%s", name);
    ix->is_trained = info.is_trained;
    ix->ntotal = 0;
    return 0;
}

/* A new handle with its server index; NULL and the error set on failure. */
int fpx_fc_make_index(FaissIndex **out, enum fpx_fc_cls cls, int d, FaissMetricType metric,
                      const char *desc) {
    *out = NULL;
    FaissIndex *ix = fpx_fc_handle_new(cls, d, metric, desc);
    if (!ix)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    int rc = create_on_server(ix);
    if (rc) {
        free(ix);
        return rc;
    }
    *out = ix;
    return 0;
}

/* The handle's server index, or an error for one that has none (d = 0). */
int fpx_fc_need(const FaissIndex *ix, fpx_client **c) {
    if (!ix)
        return fpx_fc_error(FAISS_EXCEPT, "index is NULL");
    if (!ix->name[0])
        return fpx_fc_error(FAISS_EXCEPT, "this index was built without a dimension and holds "
                                          "nothing on the server");
    *c = fpx_fc_client();
    return *c ? 0 : UNKNOWN_EXCEPT;
}

/* The class a factory description makes. */
enum fpx_fc_cls fpx_fc_cls_of_desc(const char *desc, size_t *nlist) {
    *nlist = 0;
    if (!strncmp(desc, "IDMap2,", 7))
        return FPX_CLS_IDMAP2;
    if (!strncmp(desc, "IDMap,", 6))
        return FPX_CLS_IDMAP;
    size_t n = strlen(desc);
    if (n > 6 && !strcmp(desc + n - 6, ",RFlat"))
        return FPX_CLS_REFINEFLAT;
    if (!strcmp(desc, "Flat"))
        return FPX_CLS_FLAT;
    if (!strncmp(desc, "IVF", 3)) {
        char *end;
        *nlist = strtoul(desc + 3, &end, 10);
        if (!strncmp(end, ",SQ", 3) && !strchr(end + 1, ','))
            return FPX_CLS_IVFSQ;
        return !strcmp(end, ",Flat") ? FPX_CLS_IVFFLAT : FPX_CLS_IVF;
    }
    if (!strncmp(desc, "LSH", 3))
        return FPX_CLS_LSH;
    if (!strncmp(desc, "SQ", 2))
        return FPX_CLS_SQ;
    /* a transform first: what the factory wraps in an IndexPreTransform */
    static const char *const transforms[] = {"PCA", "OPQ", "RR", "ITQ", "L2norm", "L2Norm", "Pad"};
    for (size_t i = 0; i < sizeof transforms / sizeof *transforms; i++)
        if (!strncmp(desc, transforms[i], strlen(transforms[i])) && strchr(desc, ',') &&
            !strstr(desc, ",SH"))
            return FPX_CLS_PRETRANSFORM;
    return FPX_CLS_INDEX;
}

int fpx_fc_not_here(const char *what) {
    return fpx_fc_error(FAISS_EXCEPT,
                        "%s is not available through faiss-proxy: it needs the index's internals "
                        "in this process",
                        what);
}

int fpx_fc_set_param(FaissIndex *ix, const char *name, double value) {
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    if (fpx_client_set_param(c, ix->name, name, value) != 0)
        return fpx_fc_from_client(c);
    if (!strcmp(name, "nprobe"))
        ix->nprobe = (size_t)value;
    else if (!strcmp(name, "k_factor"))
        ix->k_factor = (float)value;
    return 0;
}

/* A handle over an existing server index described by info. */
int fpx_fc_handle_from_info(FaissIndex **p, const fpx_index_info *info, enum fpx_fc_cls cls) {
    size_t nlist = 0;
    enum fpx_fc_cls dc = fpx_fc_cls_of_desc(info->index_type, &nlist);
    FaissIndex *ix = fpx_fc_handle_new(
        cls == FPX_CLS_INDEX ? dc : cls, (int)info->dimension,
        strcmp(info->metric, "IP") ? METRIC_L2 : METRIC_INNER_PRODUCT, info->index_type);
    if (!ix)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    snprintf(ix->name, sizeof ix->name, "%s", info->index_id);
    ix->ntotal = info->ntotal;
    ix->is_trained = info->is_trained;
    ix->nlist = nlist;
    *p = ix;
    return 0;
}

/* ---- importing FAISS's serialization ------------------------------------------------ */

/* The class of an index from the fourcc FAISS writes first, and an IVF's
 * nlist and nprobe from its header. */
static enum fpx_fc_cls cls_of_bytes(const uint8_t *b, size_t len, size_t *nlist, size_t *nprobe) {
    *nlist = 0;
    *nprobe = 1;
    if (len < 4)
        return FPX_CLS_INDEX;
    if (!memcmp(b, "IxF2", 4))
        return FPX_CLS_FLATL2;
    if (!memcmp(b, "IxFI", 4))
        return FPX_CLS_FLATIP;
    if (!memcmp(b, "IxFl", 4))
        return FPX_CLS_FLAT;
    if (!memcmp(b, "IxMp", 4))
        return FPX_CLS_IDMAP;
    if (!memcmp(b, "IxM2", 4))
        return FPX_CLS_IDMAP2;
    if (!memcmp(b, "IxRF", 4))
        return FPX_CLS_REFINEFLAT;
    if (!memcmp(b, "IxSQ", 4))
        return FPX_CLS_SQ;
    if (!memcmp(b, "IxHe", 4))
        return FPX_CLS_LSH;
    if (!memcmp(b, "IxPT", 4))
        return FPX_CLS_PRETRANSFORM;
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
        return !memcmp(b, "IwFl", 4)   ? FPX_CLS_IVFFLAT
               : !memcmp(b, "IwSq", 4) ? FPX_CLS_IVFSQ
                                       : FPX_CLS_IVF;
    }
    return FPX_CLS_INDEX;
}

int fpx_fc_import_bytes(const uint8_t *bytes, size_t len, FaissIndex **p) {
    *p = NULL;
    fpx_client *c = fpx_fc_client();
    if (!c)
        return UNKNOWN_EXCEPT;
    char name[129];
    make_name(name);
    fpx_index_info info;
    if (fpx_client_import_leased(c, name, "imported", bytes, len, FPX_LEASE_FROM_ENV, &info))
        return fpx_fc_from_client(c);
    size_t nlist, nprobe;
    enum fpx_fc_cls cls = cls_of_bytes(bytes, len, &nlist, &nprobe);
    int rc = fpx_fc_handle_from_info(p, &info, cls);
    if (rc) {
        fpx_client_delete_index(c, name);
        return rc;
    }
    (*p)->nlist = nlist;
    (*p)->nprobe = nprobe;
    (*p)->own_fields = 1;
    return 0;
}
