/*
 * faiss/c_api/IndexShards_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: an index split over sub-indexes (shards), each a server
 * index; adds are spread over them, searches ask every shard and merge the
 * k best in this process as FAISS does.
 */
#ifndef FAISSPROXY_INDEXSHARDS_C_H
#define FAISSPROXY_INDEXSHARDS_C_H

#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

FAISS_DECLARE_CLASS_INHERITED(IndexShards, Index)
FAISS_DECLARE_DESTRUCTOR(IndexShards)
FAISS_DECLARE_GETTER_SETTER(IndexShards, int, own_fields)
FAISS_DECLARE_GETTER_SETTER(IndexShards, int, successive_ids)

/* As FAISS: not threaded, successive_ids 1. */
int faiss_IndexShards_new(FaissIndexShards **p_index, idx_t d);
int faiss_IndexShards_new_with_options(FaissIndexShards **p_index, idx_t d, int threaded,
                                       int successive_ids);
int faiss_IndexShards_add_shard(FaissIndexShards *index, FaissIndex *shard);
int faiss_IndexShards_remove_shard(FaissIndexShards *index, FaissIndex *shard);
/* The i-th shard, NULL when there is none. */
FaissIndex *faiss_IndexShards_at(FaissIndexShards *index, int i);

#ifdef __cplusplus
}
#endif

#endif
