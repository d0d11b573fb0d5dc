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

#endif
