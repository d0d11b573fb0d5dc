/*
 * snapshot.h - the snapshot body of one index: the whole in-memory state
 * (FAISS's own serialization plus the slot, label, key and metadata tables)
 * as one byte string, and the index rebuilt from it.
 *
 * store.c wraps the body in a file (identity header, checksum, trailer) and
 * decides when to write one; this module knows only the body's layout, which
 * docs/storage.md describes. Included by index.h, so a caller of the index
 * sees these with the rest of the index's interface.
 */
#ifndef FPX_SNAPSHOT_H
#define FPX_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "proto/proto.h"

struct fpx_index;

/* The snapshot body of the whole state, streamed through fn: the vectors go
 * from the index to fn without a copy of the index in memory. A failing fn
 * fails the call (-1; err is set only when the failure is not fn's). */
int fpx_index_write(const struct fpx_index *ix, fpx_write_fn fn, void *ctx, fpx_err *err);
/* Rebuilds an index from fpx_index_write's bytes. *seq receives the last
 * write the snapshot covers. */
int fpx_index_decode(const char *tenant, const char *name, const uint8_t *buf, size_t len,
                     struct fpx_index **out, uint64_t *seq, fpx_err *err);

#endif
