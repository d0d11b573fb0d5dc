/*
 * apply.h - applying a log record to an index in memory: one function for a
 * live write (after the record is durable) and for replay at start-up, so
 * that what was acknowledged and what is recovered cannot differ.
 *
 * The specs that records carry (remove_ids' labels or range, set_params'
 * name and value) are parsed and validated by the same functions for the
 * request and for the record.
 */
#ifndef FPX_APPLY_H
#define FPX_APPLY_H

#include "index.h"
#include "store.h"

/* Longest FAISS parameter name accepted by set_params. */
#define FPX_PARAM_NAME_MAX 64

/* Applies rec to ix (the index's lock held exclusively, or ix not yet shared). */
int fpx_apply(fpx_index *ix, const fpx_walrec *rec, fpx_err *err);

/* Why ix cannot be fenced for a merge_from out of it in a cluster (a merge
 * under way, caller keys or metadata): -1 with err, else 0. */
int fpx_fence_refusal(const fpx_index *ix, fpx_err *err);

/* Turns a train record (FPX_WAL_TRAIN, the training vectors) into the record
 * of its result: ix's engine copied and trained, as FPX_WAL_TRAINED whose
 * data is the trained index in *buf (malloc'd, the caller frees it after the
 * record is logged and applied). ix is only read. */
int fpx_train_record(const fpx_index *ix, fpx_walrec *rec, uint8_t **buf, fpx_err *err);

/* Decodes the optional msgpack object of a stored log record. */
int fpx_unpack_stored(const uint8_t *p, size_t len, msgpack_unpacked *u, const msgpack_object **obj,
                      fpx_err *err);

/* {"ids": [int...]} or {"range": [lo, hi]} from a map into a malloc'd label
 * list (*labels, *n) or a range (*labels NULL). */
int fpx_remove_spec(const msgpack_object *map, int64_t **labels, int64_t *n, int64_t *lo,
                    int64_t *hi, fpx_err *err);

/* {"name": str, "value": number} from a map: a parameter the server accepts,
 * with a value in its range (validation_error naming the range otherwise). */
int fpx_param_spec(const msgpack_object *map, char *name, double *value, fpx_err *err);

#endif
