/*
 * faiss/c_api/Clustering_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_CLUSTERING_C_H
#define FAISSPROXY_CLUSTERING_C_H

#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Declared for the headers that include it; clustering runs inside the
 * server's indexes (train), not in this library. */
FAISS_DECLARE_CLASS(Clustering)

#ifdef __cplusplus
}
#endif

#endif
