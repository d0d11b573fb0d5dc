/*
 * probe.h - FAISS's reader run over untrusted bytes in a throwaway process
 * before the server reads them itself (import_index).
 */
#ifndef FPX_PROBE_H
#define FPX_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

/* The argument that makes faiss-proxy-server a probe (the process this
 * module starts), never given by people. */
#define FPX_PROBE_ARG "--probe-import"

/*
 * 0 when FAISS reads buf[0..len) as an index without failing, within bounded
 * time and memory, in a child process; else -1 with FAISS's message (or why
 * the reader was stopped) in err as a validation_error.
 */
int fpx_probe_import(const uint8_t *buf, size_t len, fpx_err *err);

/* The probe process's own main: reads the bytes from fd 3, writes FAISS's
 * message (if any) to fd 4, returns the exit status (0: readable). */
int fpx_probe_main(void);

/* The argument that makes faiss-proxy-server the process of an NSG build. */
#define FPX_PROBE_BUILD_ARG "--probe-build"

/*
 * An add that builds an NSG graph (fpx_isolated_add_fn, engine.h), run in a
 * child process within the build timeout (plus 1 s per 100000 numbers
 * added): out is the index's serialization after the add (malloc'd), or -1
 * with err: limit_exceeded when the build did not finish in time, a
 * faiss_error when FAISS failed or its process died.
 */
int fpx_probe_build_add(const uint8_t *index, size_t index_len, int64_t n, int64_t d, const void *x,
                        uint8_t **out, size_t *out_len, fpx_err *err);

/* Seconds a build may take (--graph-build-timeout), set once at start. */
void fpx_probe_set_build_timeout(int seconds);

/* The build process's own main: the input (header, index, vectors) from fd
 * 3, FAISS's message to fd 4, the index after the add to fd 5; returns the
 * exit status (0: built, 1: FAISS failed, 2: bad input). */
int fpx_probe_build_main(void);

/* The argument that makes faiss-proxy-server the process of a create. */
#define FPX_PROBE_CREATE_ARG "--probe-create"

/*
 * FAISS 1.7.3's index_factory hands an IVF's coarse quantizer to the IVF's
 * constructor as a raw pointer and loses it when that constructor refuses its
 * arguments ("IVF4,PQ7" where 7 does not divide the dimension). A
 * description with a coarse quantizer (IVF, IMI, Residual) is therefore built
 * first in a child process: 0 when it builds (remembered for the next
 * creates of it), else -1 with FAISS's message as a validation_error. Others
 * return 0 at once.
 */
int fpx_probe_create(const char *description, int64_t dim, int metric, fpx_err *err);

/* The create process's own main: dimension, metric and description from fd
 * 3, FAISS's message to fd 4; returns the exit status (0: built, 1: FAISS
 * refused, 2: bad input). */
int fpx_probe_create_main(void);

#endif
