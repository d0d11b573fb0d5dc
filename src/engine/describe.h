/*
 * describe.h - checks of a FAISS factory description made before FAISS
 * sees it, for inputs FAISS 1.7.3 aborts on (not throws) or allocates
 * absurd amounts for. They need no FAISS, so they are C (describe.c); the
 * engine calls them.
 */
#ifndef FPX_DESCRIBE_H
#define FPX_DESCRIBE_H

#include <stdint.h>

#include "proto/proto.h" /* fpx_err only */

#ifdef __cplusplus
extern "C" {
#endif

/* Largest number accepted anywhere in a factory description. */
#define FPX_MAX_FACTORY_NUMBER (1L << 20)

/* Largest HNSW M and NSG R: a graph holds up to 2M (R) links for every
 * vector, sized when the vectors are added, so one small add to a graph of
 * M = 2^20 would take gigabytes. */
#define FPX_MAX_GRAPH_DEGREE 1024

/* Every number in desc in 1..FPX_MAX_FACTORY_NUMBER, an HNSW's M in
 * 2..FPX_MAX_GRAPH_DEGREE and an NSG's R at most that, a code at most 16
 * bits; desc 1..255 characters. 0, or -1 with err set (validation). */
int fpx_describe_check(const char *desc, fpx_err *err);

/* A "ZnLattice<nsq>x<r2>_<nbit>" description (the whole of desc) in dim
 * dimensions that FAISS 1.7.3 can build and use (describe.c says what it
 * aborts on); 0 too when desc names no lattice. */
int fpx_describe_check_lattice(const char *desc, int64_t dim, fpx_err *err);

#ifdef __cplusplus
}
#endif

#endif
