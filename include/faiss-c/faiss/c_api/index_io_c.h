/*
 * faiss/c_api/index_io_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_INDEX_IO_C_H
#define FAISSPROXY_INDEX_IO_C_H

#include <stdio.h>
#include "IndexBinary_c.h"
#include "Index_c.h"
#include "faiss_c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FAISS's write_index format, as in-process FAISS reads and writes it. */
int faiss_write_index(const FaissIndex *idx, FILE *f);
int faiss_write_index_fname(const FaissIndex *idx, const char *fname);

#define FAISS_IO_FLAG_MMAP 1
#define FAISS_IO_FLAG_READ_ONLY 2

/* Reads an index FAISS wrote and uploads it as a new server index. */
int faiss_read_index(FILE *f, int io_flags, FaissIndex **p_out);
int faiss_read_index_fname(const char *fname, int io_flags, FaissIndex **p_out);

/* The same for binary indexes (FAISS write_index_binary / read_index_binary). */
int faiss_write_index_binary(const FaissIndexBinary *idx, FILE *f);
int faiss_write_index_binary_fname(const FaissIndexBinary *idx, const char *fname);
int faiss_read_index_binary(FILE *f, int io_flags, FaissIndexBinary **p_out);
int faiss_read_index_binary_fname(const char *fname, int io_flags, FaissIndexBinary **p_out);

#ifdef __cplusplus
}
#endif

#endif
