/*
 * clone_index_c.c - FAISS's clone_index_c.h: a clone is a new server index
 * imported from the original's serialization, with the handle's own fields
 * (class, nprobe, ids) copied.
 */
#include "internal.h"

#include <faiss/c_api/clone_index_c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int faiss_clone_index(const FaissIndex *ix, FaissIndex **p_out) {
    uint8_t *bytes;
    size_t len;
    int rc = fpx_fc_export(ix, &bytes, &len);
    if (rc)
        return rc;
    rc = fpx_fc_import_bytes(bytes, len, p_out);
    free(bytes);
    if (rc == 0) {
        (*p_out)->cls = ix->cls;
        (*p_out)->nprobe = ix->nprobe;
        (*p_out)->nlist = ix->nlist;
        snprintf((*p_out)->desc, sizeof(*p_out)->desc, "%s", ix->desc);
        if (ix->nids && ((*p_out)->ids = malloc(sizeof(idx_t) * ix->nids)) != NULL) {
            memcpy((*p_out)->ids, ix->ids, sizeof(idx_t) * ix->nids);
            (*p_out)->nids = ix->nids;
        }
    }
    return rc;
}
