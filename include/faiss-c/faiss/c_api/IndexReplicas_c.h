/*
 * faiss/c_api/IndexReplicas_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header
 * of the same name: copies of one index (replicas), each a server index;
 * adds go to every replica, a search's queries are divided among them.
 */
#ifndef FAISSPROXY_INDEXREPLICAS_C_H
#define FAISSPROXY_INDEXREPLICAS_C_H

#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS_INHERITED(IndexReplicas, Index)
FAISS_DECLARE_DESTRUCTOR(IndexReplicas)
FAISS_DECLARE_GETTER_SETTER(IndexReplicas, int, own_fields)

int faiss_IndexReplicas_new(FaissIndexReplicas **p_index, idx_t d);
int faiss_IndexReplicas_new_with_options(FaissIndexReplicas **p_index, idx_t d, int threaded);
int faiss_IndexReplicas_add_replica(FaissIndexReplicas *index, FaissIndex *replica);
int faiss_IndexReplicas_remove_replica(FaissIndexReplicas *index, FaissIndex *replica);
/* The i-th replica, NULL when there is none. */
FaissIndex *faiss_IndexReplicas_at(FaissIndexReplicas *index, int i);

#ifdef __cplusplus
}
#endif

#endif
