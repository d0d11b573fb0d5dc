/*
 * faiss/c_api/faiss_proxy_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_FAISS_PROXY_C_H
#define FAISSPROXY_FAISS_PROXY_C_H

#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * What faiss-proxy adds to the FAISS C API: which server, key and tenant
 * this process uses (by default from FAISS_PROXY_SERVER, FAISS_PROXY_API_KEY
 * and FAISS_PROXY_TENANT, else tcp://127.0.0.1:5555 and no key; a CurveZMQ
 * server's public key comes from FAISS_PROXY_SERVER_KEY, read by
 * libfaissproxy), and control over the server-side name of an index. Every
 * index a program creates gets a unique server-side name and is deleted from
 * the server when freed, unless the program asked to keep it.
 */

/* Sets the server, key and tenant (NULL: leave as is) for indexes created
 * from now on, in every thread. */
int faiss_proxy_configure(const char *server, const char *api_key, const char *tenant);

/* The index's name on the server. */
const char *faiss_proxy_Index_name(const FaissIndex *index);

/* keep != 0: freeing the handle leaves the server index in place. */
int faiss_proxy_Index_keep(FaissIndex *index, int keep);

/* A handle on an existing server index (kept when freed). */
int faiss_proxy_Index_open(FaissIndex **p_index, const char *name);

#ifdef __cplusplus
}
#endif

#endif
