/*
 * idsel.c - FAISS id selectors of a search: the wire check and the slots a
 * selector picks. See idsel.h.
 *
 * A selector is evaluated into a bitset over the index's slots, one node at
 * a time: a range looks at every slot's label, an id list looks each id up in
 * the label map, and not/and/or/xor combine their children's bitsets word by
 * word. That costs a pass over the slots per node (a selector has at most
 * FPX_IDSEL_NODES_MAX), never a pass over the ids per slot.
 */
#include "idsel.h"

#include <stdlib.h>
#include <string.h>

#include "index_impl.h"

/* The selector's one key and its value, or -1 when sel is not a one-key map. */
static int node_of(const msgpack_object *sel, const char **kind, const msgpack_object **val) {
    if (sel->type != MSGPACK_OBJECT_MAP || sel->via.map.size != 1 ||
        sel->via.map.ptr[0].key.type != MSGPACK_OBJECT_STR)
        return -1;
    static const char *const kinds[] = {"range", "ids", "all", "not", "and", "or", "xor"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (fpx_obj_str_eq(&sel->via.map.ptr[0].key, kinds[i])) {
            *kind = kinds[i];
            *val = &sel->via.map.ptr[0].val;
            return 0;
        }
    }
    return -1;
}

static int check_node(const msgpack_object *sel, int depth, int *nodes, fpx_err *err) {
    const char *kind;
    const msgpack_object *v;
    int64_t a, b;
    if (depth > FPX_IDSEL_DEPTH_MAX || ++*nodes > FPX_IDSEL_NODES_MAX)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "id_selector is too large (at most %d nodes, nested %d deep)",
                           FPX_IDSEL_NODES_MAX, FPX_IDSEL_DEPTH_MAX);
    if (node_of(sel, &kind, &v))
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "id_selector must be a map with one key: range, ids, all, not, and, "
                           "or, xor");
    if (!strcmp(kind, "range")) {
        if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != 2 ||
            fpx_obj_int(&v->via.array.ptr[0], &a) || fpx_obj_int(&v->via.array.ptr[1], &b))
            return fpx_err_set(err, FPX_E_VALIDATION,
                               "id_selector range must be [lo, hi], two integers");
        return 0;
    }
    if (!strcmp(kind, "ids")) {
        if (v->type != MSGPACK_OBJECT_ARRAY)
            return fpx_err_set(err, FPX_E_VALIDATION, "id_selector ids must be a list of labels");
        for (uint32_t i = 0; i < v->via.array.size; i++)
            if (fpx_obj_int(&v->via.array.ptr[i], &a))
                return fpx_err_set(err, FPX_E_VALIDATION,
                                   "id_selector ids must be integers (entry %u is not)", i);
        return 0;
    }
    if (!strcmp(kind, "all")) {
        if (v->type != MSGPACK_OBJECT_BOOLEAN || !v->via.boolean)
            return fpx_err_set(err, FPX_E_VALIDATION, "id_selector all must be true");
        return 0;
    }
    if (!strcmp(kind, "not"))
        return check_node(v, depth + 1, nodes, err);
    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != 2)
        return fpx_err_set(err, FPX_E_VALIDATION, "id_selector %s must be a list of two selectors",
                           kind);
    return check_node(&v->via.array.ptr[0], depth + 1, nodes, err) ||
                   check_node(&v->via.array.ptr[1], depth + 1, nodes, err)
               ? -1
               : 0;
}

int fpx_idsel_present(const msgpack_object *sel) {
    return sel && sel->type != MSGPACK_OBJECT_NIL;
}

int fpx_idsel_check(const msgpack_object *sel, fpx_err *err) {
    int nodes = 0;
    return fpx_idsel_present(sel) ? check_node(sel, 1, &nodes, err) : 0;
}

/* Sets out (nw words, cleared first) to the slots whose label sel selects.
 * Dead slots may be set too: the caller intersects with the live ones. */
static int eval(const fpx_index *ix, const msgpack_object *sel, uint64_t *out, size_t nw) {
    const char *kind = "";
    const msgpack_object *v = NULL;
    node_of(sel, &kind, &v); /* checked by fpx_idsel_check */
    memset(out, 0, nw * sizeof *out);
    if (!strcmp(kind, "range")) {
        int64_t lo, hi;
        fpx_obj_int(&v->via.array.ptr[0], &lo);
        fpx_obj_int(&v->via.array.ptr[1], &hi);
        for (int64_t s = 0; s < ix->nslots; s++) {
            int64_t l = fpx_index_label_of(ix, s);
            if (l >= lo && l < hi)
                fpx_bit_set(out, s);
        }
        return 0;
    }
    if (!strcmp(kind, "ids")) {
        for (uint32_t i = 0; i < v->via.array.size; i++) {
            int64_t id, s;
            fpx_obj_int(&v->via.array.ptr[i], &id);
            if ((s = fpx_index_slot_of(ix, id)) >= 0)
                fpx_bit_set(out, s);
        }
        return 0;
    }
    if (!strcmp(kind, "all")) {
        memset(out, 0xff, nw * sizeof *out);
        return 0;
    }
    if (!strcmp(kind, "not")) {
        if (eval(ix, v, out, nw))
            return -1;
        for (size_t w = 0; w < nw; w++)
            out[w] = ~out[w];
        return 0;
    }
    uint64_t *other = malloc((nw ? nw : 1) * sizeof *other);
    if (!other || eval(ix, &v->via.array.ptr[0], out, nw) ||
        eval(ix, &v->via.array.ptr[1], other, nw)) {
        free(other);
        return -1;
    }
    for (size_t w = 0; w < nw; w++)
        out[w] = kind[0] == 'a'   ? out[w] & other[w]
                 : kind[0] == 'o' ? out[w] | other[w]
                                  : out[w] ^ other[w];
    free(other);
    return 0;
}

int fpx_idsel_apply(const fpx_index *ix, const msgpack_object *sel, uint64_t *words,
                    int64_t *count) {
    size_t nw = fpx_words_for(ix->nslots);
    uint64_t *mine = malloc((nw ? nw : 1) * sizeof *mine);
    if (!mine || eval(ix, sel, mine, nw)) {
        free(mine);
        return -1;
    }
    int64_t c = 0;
    for (size_t w = 0; w < nw; w++) {
        words[w] &= mine[w];
        c += __builtin_popcountll(words[w]);
    }
    free(mine);
    *count = c;
    return 0;
}
