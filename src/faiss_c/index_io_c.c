/*
 * index_io_c.c - FAISS's index_io_c.h: writing an index is exporting FAISS's
 * serialization from the server; reading one imports it as a new server
 * index. Float and binary files are told apart by FAISS's fourcc.
 */
#include "internal.h"

#include <faiss/c_api/index_io_c.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

int fpx_fc_export(const FaissIndex *ix, uint8_t **bytes, size_t *len) {
    fpx_client *c = NULL;
    int rc = fpx_fc_need(ix, &c);
    if (rc)
        return rc;
    if (fpx_client_export(c, ix->name, bytes, len) != 0)
        return fpx_fc_from_client(c);
    return 0;
}

int faiss_write_index(const FaissIndex *ix, FILE *f) {
    uint8_t *bytes;
    size_t len;
    int rc = fpx_fc_export(ix, &bytes, &len);
    if (rc)
        return rc;
    size_t w = fwrite(bytes, 1, len, f);
    free(bytes);
    if (w != len)
        return fpx_fc_error(STD_EXCEPT, "cannot write the index: short write");
    return 0;
}

/* Written as fname.tmp, synced, then renamed over fname: a server that is
 * gone or refuses, or a full disk, leaves an existing file as it was. */
int faiss_write_index_fname(const FaissIndex *ix, const char *fname) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", fname) >= (int)sizeof tmp)
        return fpx_fc_error(STD_EXCEPT, "file name too long: %s", fname);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return fpx_fc_error(STD_EXCEPT, "cannot open %s for writing", tmp);
    int rc = faiss_write_index(ix, f);
    if (rc == 0 && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        rc = fpx_fc_error(STD_EXCEPT, "cannot write %s", tmp);
    if (fclose(f) != 0 && rc == 0)
        rc = fpx_fc_error(STD_EXCEPT, "cannot write %s", tmp);
    if (rc == 0 && rename(tmp, fname) != 0)
        rc = fpx_fc_error(STD_EXCEPT, "cannot rename %s to %s", tmp, fname);
    if (rc != 0)
        unlink(tmp);
    return rc;
}

/* The whole of f into a malloc'd buffer. */
static int read_all(FILE *f, uint8_t **out, size_t *out_len) {
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    size_t k;
    while ((k = fread(buf + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return fpx_fc_error(STD_EXCEPT, "out of memory");
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        free(buf);
        return fpx_fc_error(STD_EXCEPT, "cannot read the index file");
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* The whole of f, refused (and freed) when it holds the other kind of index
 * than v: FAISS's fourccs of binary indexes start with "IB". */
static int read_kind(FILE *f, enum fpx_fc_vectors v, uint8_t **out, size_t *out_len) {
    int rc = read_all(f, out, out_len);
    if (rc)
        return rc;
    int binary = *out_len >= 2 && (*out)[0] == 'I' && (*out)[1] == 'B';
    if (v == FPX_FC_FLOAT && binary)
        rc = fpx_fc_error(FAISS_EXCEPT, "this is a binary index: read it with "
                                        "faiss_read_index_binary");
    else if (v == FPX_FC_BINARY && (*out_len < 4 || !binary))
        rc = fpx_fc_error(FAISS_EXCEPT, "this is not a binary index: read it with "
                                        "faiss_read_index");
    if (rc)
        free(*out);
    return rc;
}

int faiss_read_index(FILE *f, int io_flags, FaissIndex **p_out) {
    (void)io_flags; /* mmap and read-only do not apply: the index lives on the server */
    uint8_t *buf;
    size_t len;
    int rc = read_kind(f, FPX_FC_FLOAT, &buf, &len);
    if (rc)
        return rc;
    rc = fpx_fc_import_bytes(buf, len, p_out);
    free(buf);
    return rc;
}

int faiss_read_index_fname(const char *fname, int io_flags, FaissIndex **p_out) {
    FILE *f = fopen(fname, "rb");
    if (!f)
        return fpx_fc_error(STD_EXCEPT, "cannot open %s", fname);
    int rc = faiss_read_index(f, io_flags, p_out);
    fclose(f);
    return rc;
}

int faiss_write_index_binary(const FaissIndexBinary *b, FILE *f) {
    return faiss_write_index(BH(b), f);
}

int faiss_write_index_binary_fname(const FaissIndexBinary *b, const char *fname) {
    return faiss_write_index_fname(BH(b), fname);
}

int faiss_read_index_binary(FILE *f, int io_flags, FaissIndexBinary **p_out) {
    (void)io_flags;
    *p_out = NULL;
    uint8_t *buf;
    size_t len;
    int rc = read_kind(f, FPX_FC_BINARY, &buf, &len);
    if (rc)
        return rc;
    FaissIndex *ix;
    rc = fpx_fc_import_bytes(buf, len, &ix);
    if (rc == 0) {
        FaissIndexBinary *b = calloc(1, sizeof *b);
        if (!b) {
            faiss_Index_free(ix);
            rc = fpx_fc_error(STD_EXCEPT, "out of memory");
        } else {
            b->h = *ix;
            b->h.cls = !memcmp(buf, "IBM2", 4)   ? FPX_CLS_IDMAP2
                       : !memcmp(buf, "IBMp", 4) ? FPX_CLS_IDMAP
                                                 : FPX_CLS_INDEX;
            b->takes_ids = fpx_fc_is_idmap(&b->h) || !memcmp(buf, "IBwF", 4);
            free(ix); /* its contents moved into b */
            *p_out = b;
        }
    }
    free(buf);
    return rc;
}

int faiss_read_index_binary_fname(const char *fname, int io_flags, FaissIndexBinary **p_out) {
    FILE *f = fopen(fname, "rb");
    if (!f)
        return fpx_fc_error(STD_EXCEPT, "cannot open %s", fname);
    int rc = faiss_read_index_binary(f, io_flags, p_out);
    fclose(f);
    return rc;
}
