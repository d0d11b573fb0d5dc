/*
 * vecfile.h - reading vector files in chunks for the faiss-proxy CLI.
 *
 * Formats: NumPy .npy (version 1-3, C order, 1-D or 2-D, dtype float32,
 * float64 (converted to float32) or uint8), and the TEXMEX formats .fvecs
 * (float32), .bvecs (uint8) and .ivecs (int32), where every vector is a
 * little-endian int32 dimension followed by that many values. The format is
 * chosen by the file name's extension. A reader yields either float32 rows
 * (for float indexes; uint8 and int32 values are converted) or uint8 rows
 * (for binary indexes: .bvecs and uint8 .npy only).
 */
#ifndef FPX_CLI_VECFILE_H
#define FPX_CLI_VECFILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { FPX_VF_NPY, FPX_VF_FVECS, FPX_VF_BVECS, FPX_VF_IVECS } fpx_vf_kind;

typedef struct fpx_vecfile {
    FILE *f;
    const char *path;
    fpx_vf_kind kind;
    int elem_size;  /* bytes per stored value */
    char elem_type; /* 'f' float, 'i' int32, 'u' uint8 */
    int64_t n, d;   /* vectors in the file and their dimension (values per row) */
    int64_t next;   /* index of the next vector read */
    uint64_t data_off;
    uint64_t rec_size; /* bytes per stored vector, with the TEXMEX dimension */
    void *buf;         /* scratch for one chunk of stored records */
    size_t buf_cap;
} fpx_vecfile;

/* Opens path and reads its header (and for TEXMEX files checks that the file
 * holds whole records of the first record's dimension). On failure returns -1
 * with a message in err. */
int fpx_vf_open(fpx_vecfile *vf, const char *path, char *err, size_t errlen);
void fpx_vf_close(fpx_vecfile *vf);
/* 1 when the file's values are bytes (usable by a binary index). */
int fpx_vf_is_bytes(const fpx_vecfile *vf);
/* Makes vector pos (0..n) the next one read. */
int fpx_vf_seek(fpx_vecfile *vf, int64_t pos, char *err, size_t errlen);
/* Reads up to max vectors into out: float32 rows, or uint8 rows when as_bytes
 * (the file must hold bytes). *got is 0 at the end. */
int fpx_vf_read(fpx_vecfile *vf, int64_t max, int as_bytes, void *out, int64_t *got, char *err,
                size_t errlen);

/* Reads whitespace-separated float rows (one per line, all of one length)
 * from f; *x is malloc'd (n*d floats). Blank lines are skipped. */
int fpx_vf_read_text(FILE *f, float **x, int64_t *n, int64_t *d, char *err, size_t errlen);

#endif
