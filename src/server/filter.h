/*
 * filter.h - metadata filters of a search: checking one that came over the
 * wire, and selecting the slots of an index whose metadata matches it.
 *
 * A filter is a map from field names to values; a slot matches when its
 * metadata holds every field with an equal value. index_read.c asks for the
 * matching slots when a search carries a filter and hands them to the engine
 * as its allowed set. Included by index.h, so a caller of the index sees the
 * filter's check with the rest of the index's interface.
 */
#ifndef FPX_FILTER_H
#define FPX_FILTER_H

#include <stdint.h>

#include "proto/proto.h"

struct fpx_index;

/* Checks a search filter (NULL = none): a map from string field names to values. */
int fpx_index_check_filter(const msgpack_object *filter, fpx_err *err);

/* The live slots of ix whose metadata matches filter (a checked, non-empty
 * map): *words (malloc'd, caller frees) is a bitset over ix's slots, *count
 * the slots in it. 0, or -1 when out of memory. */
int fpx_filter_select(const struct fpx_index *ix, const msgpack_object *filter, uint64_t **words,
                      int64_t *count);

#endif
