/*
 * faiss/c_api/clone_index_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_CLONE_INDEX_C_H
#define FAISSPROXY_CLONE_INDEX_C_H

#include <stdio.h>
#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A copy of the index, as a new index on the server. */
int faiss_clone_index(const FaissIndex *, FaissIndex **p_out);

#ifdef __cplusplus
}
#endif

#endif
