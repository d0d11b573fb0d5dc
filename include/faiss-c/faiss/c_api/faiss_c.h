/*
 * faiss/c_api/faiss_c.h - faiss-proxy's drop-in for FAISS 1.7.3's base C API
 * header: the index and component types and the declaration macros.
 */
#ifndef FAISSPROXY_FAISS_C_H
#define FAISSPROXY_FAISS_C_H

#include <stdint.h>

typedef int64_t faiss_idx_t; /* all indices are this type */
typedef faiss_idx_t idx_t;
typedef float faiss_component_t; /* vector components */
typedef float faiss_distance_t;  /* distances */

/* An opaque class: FaissFoo is struct FaissFoo_H. */
#define FAISS_DECLARE_CLASS(clazz) typedef struct Faiss##clazz##_H Faiss##clazz;

/* A subclass shares its parent's struct. */
#define FAISS_DECLARE_CLASS_INHERITED(clazz, parent) typedef struct Faiss##parent##_H Faiss##clazz;

/* faiss_Foo_cast: NULL unless the index is a Foo. */
#define FAISS_DECLARE_INDEX_DOWNCAST(clazz) Faiss##clazz *faiss_##clazz##_cast(FaissIndex *);

#define FAISS_DECLARE_GETTER(clazz, ty, name) ty faiss_##clazz##_##name(const Faiss##clazz *);

#define FAISS_DECLARE_SETTER(clazz, ty, name) void faiss_##clazz##_set_##name(Faiss##clazz *, ty);

#define FAISS_DECLARE_GETTER_SETTER(clazz, ty, name)                                               \
    FAISS_DECLARE_GETTER(clazz, ty, name)                                                          \
    FAISS_DECLARE_SETTER(clazz, ty, name)

#define FAISS_DECLARE_DESTRUCTOR(clazz) void faiss_##clazz##_free(Faiss##clazz *obj);

#endif
