/*
 * faiss/c_api/index_factory_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_INDEX_FACTORY_C_H
#define FAISSPROXY_INDEX_FACTORY_C_H

#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An index from a FAISS index_factory description, created on the server. */
int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                        FaissMetricType metric);

#ifdef __cplusplus
}
#endif

#endif
