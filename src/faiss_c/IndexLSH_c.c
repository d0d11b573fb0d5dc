/*
 * IndexLSH_c.c - FAISS's IndexLSH_c.h: IndexLSH as a server index. With
 * nbits = d the description is the factory's own "LSH[r][t]"; other bit
 * counts use the server's "LSH<nbits>[r][t]" (the factory cannot name them).
 * The server's rotation is seeded as FAISS seeds it, so results match an
 * IndexLSH made in-process with the same arguments.
 */
#include "internal.h"

#include <faiss/c_api/IndexLSH_c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int faiss_IndexLSH_new_with_options(FaissIndexLSH **p, idx_t d, int nbits, int rotate_data,
                                    int train_thresholds) {
    *p = NULL;
    if (d < 1 || nbits < 1)
        return fpx_fc_error(FAISS_EXCEPT, "IndexLSH needs d >= 1 and nbits >= 1");
    char desc[64];
    char flags[3] = {0};
    size_t nf = 0;
    if (rotate_data)
        flags[nf++] = 'r';
    if (train_thresholds)
        flags[nf++] = 't';
    if (nbits == d)
        snprintf(desc, sizeof desc, "LSH%s", flags);
    else
        snprintf(desc, sizeof desc, "LSH%d%s", nbits, flags);
    int rc = fpx_fc_make_index(p, FPX_CLS_LSH, (int)d, METRIC_L2, desc);
    if (rc == 0) {
        (*p)->nbits = nbits;
        (*p)->lsh_flags =
            (rotate_data ? FPX_LSH_ROTATE : 0) | (train_thresholds ? FPX_LSH_THRESHOLDS : 0);
    }
    return rc;
}

int faiss_IndexLSH_new(FaissIndexLSH **p, idx_t d, int nbits) {
    return faiss_IndexLSH_new_with_options(p, d, nbits, 1, 0);
}

FPX_FC_CAST(IndexLSH, ix->cls == FPX_CLS_LSH)

FPX_FC_FREE_AS_INDEX(IndexLSH)

/* A handle made from a description or a file knows only the description:
 * "LSH[r][t]" (nbits = d) or "LSH<nbits>[r][t]". */
static void parse_desc(const FaissIndexLSH *ix, int *nbits, int *flags) {
    *nbits = ix->nbits;
    *flags = ix->lsh_flags;
    if (ix->nbits || strncmp(ix->desc, "LSH", 3))
        return;
    char *end;
    long n = strtol(ix->desc + 3, &end, 10);
    *nbits = end == ix->desc + 3 ? ix->d : (int)n;
    *flags = (strchr(end, 'r') ? FPX_LSH_ROTATE : 0) | (strchr(end, 't') ? FPX_LSH_THRESHOLDS : 0);
}

int faiss_IndexLSH_nbits(const FaissIndexLSH *ix) {
    int nbits, flags;
    parse_desc(ix, &nbits, &flags);
    return nbits;
}

int faiss_IndexLSH_code_size(const FaissIndexLSH *ix) {
    return (faiss_IndexLSH_nbits(ix) + 7) / 8;
}

int faiss_IndexLSH_rotate_data(const FaissIndexLSH *ix) {
    int nbits, flags;
    parse_desc(ix, &nbits, &flags);
    return (flags & FPX_LSH_ROTATE) != 0;
}

int faiss_IndexLSH_train_thresholds(const FaissIndexLSH *ix) {
    int nbits, flags;
    parse_desc(ix, &nbits, &flags);
    return (flags & FPX_LSH_THRESHOLDS) != 0;
}
