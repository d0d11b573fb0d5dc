/*
 * faiss/c_api/AutoTune_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_AUTOTUNE_C_H
#define FAISSPROXY_AUTOTUNE_C_H

#include <stddef.h>
#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS(ParameterRange)
FAISS_DECLARE_GETTER(ParameterRange, const char *, name)
void faiss_ParameterRange_values(FaissParameterRange *, double **, size_t *);

FAISS_DECLARE_CLASS(ParameterSpace)
FAISS_DECLARE_DESTRUCTOR(ParameterSpace)
int faiss_ParameterSpace_new(FaissParameterSpace **space);
size_t faiss_ParameterSpace_n_combinations(const FaissParameterSpace *);
int faiss_ParameterSpace_combination_name(const FaissParameterSpace *, size_t, char *, size_t);
/* "nprobe=16,efSearch=64": each set on the server, in order. */
int faiss_ParameterSpace_set_index_parameters(const FaissParameterSpace *, FaissIndex *,
                                              const char *);
int faiss_ParameterSpace_set_index_parameters_cno(const FaissParameterSpace *, FaissIndex *,
                                                  size_t);
int faiss_ParameterSpace_set_index_parameter(const FaissParameterSpace *, FaissIndex *,
                                             const char *, double);
void faiss_ParameterSpace_display(const FaissParameterSpace *);
int faiss_ParameterSpace_add_range(FaissParameterSpace *, const char *, FaissParameterRange **);

#ifdef __cplusplus
}
#endif

#endif
