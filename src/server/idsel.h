/*
 * idsel.h - FAISS id selectors sent with a search: checking one that came
 * over the wire, and turning it into the set of an index's slots it selects.
 *
 * A selector names labels (FAISS ids), as FAISS's IDSelectorRange,
 * IDSelectorBatch/Array and IDSelectorNot do, combined with and/or/xor. It is
 * the header field "id_selector" of search and range_search (see
 * docs/protocol.md); index_read.c intersects its slots with the live (and
 * filter-matching) ones and hands them to the engine as the allowed set.
 */
#ifndef FPX_IDSEL_H
#define FPX_IDSEL_H

#include <stdint.h>

#include "proto/proto.h"

struct fpx_index;

/* Deepest nesting of not/and/or/xor, and most nodes, a selector may have. */
#define FPX_IDSEL_DEPTH_MAX 8
#define FPX_IDSEL_NODES_MAX 64

/* Checks a selector (NULL or nil = none): one-key maps {"range": [lo, hi]},
 * {"ids": [label, ...]}, {"all": true}, {"not": sel}, {"and"|"or"|"xor": [sel, sel]}. */
int fpx_idsel_check(const msgpack_object *sel, fpx_err *err);

/* 1 when sel (checked) is a selector, 0 for NULL or nil. */
int fpx_idsel_present(const msgpack_object *sel);

/* Keeps in words (a bitset over ix's slots, fpx_words_for(ix->nslots) words)
 * only the slots whose label sel selects; *count receives the bits left set.
 * 0, or -1 when out of memory (words is then unchanged). */
int fpx_idsel_apply(const struct fpx_index *ix, const msgpack_object *sel, uint64_t *words,
                    int64_t *count);

#endif
