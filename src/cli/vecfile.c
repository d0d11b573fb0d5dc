/*
 * vecfile.c - the vector file readers of the faiss-proxy CLI (see vecfile.h).
 *
 * Files are read a chunk at a time into one scratch buffer, so an import's
 * memory stays flat whatever the file's size. Every size read from a file is
 * checked against the file's real length before it is used: a truncated or
 * lying file is refused with the byte offset where it goes wrong, before any
 * of its vectors reach the server when the damage is visible from the sizes.
 */
#include "vecfile.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FPX_VF_MAX_DIM 1048576 /* values per vector; the server takes at most 65536 */

static int vf_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int vf_err(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *ext_of(const char *path) {
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    return dot && (!slash || dot > slash) ? dot + 1 : "";
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The value text of 'key' in a .npy header dict, or NULL. */
static const char *npy_field(const char *hdr, const char *key) {
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(hdr, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p != ':')
        return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

static int open_npy(fpx_vecfile *vf, uint64_t size, char *err, size_t errlen) {
    uint8_t pre[12];
    if (fread(pre, 1, 10, vf->f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
        return vf_err(err, errlen, "%s: not a .npy file (no \\x93NUMPY magic)", vf->path);
    uint64_t hlen, hstart;
    if (pre[6] == 1) {
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
        hstart = 10;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, vf->f) != 2)
            return vf_err(err, errlen, "%s: truncated .npy header", vf->path);
        hlen = le32(pre + 8);
        hstart = 12;
    } else {
        return vf_err(err, errlen, "%s: unsupported .npy version %d", vf->path, pre[6]);
    }
    if (hlen > 65536 || hstart + hlen > size)
        return vf_err(err, errlen, "%s: truncated .npy header (%llu bytes announced)", vf->path,
                      (unsigned long long)hlen);
    char *hdr = malloc(hlen + 1);
    if (!hdr)
        return vf_err(err, errlen, "out of memory");
    if (fread(hdr, 1, hlen, vf->f) != hlen) {
        free(hdr);
        return vf_err(err, errlen, "%s: truncated .npy header", vf->path);
    }
    hdr[hlen] = 0;
    int rc = -1;
    const char *descr = npy_field(hdr, "descr");
    const char *fortran = npy_field(hdr, "fortran_order");
    const char *shape = npy_field(hdr, "shape");
    char dt[16] = "";
    if (descr && *descr == '\'') {
        size_t i = 0;
        for (descr++; *descr && *descr != '\'' && i + 1 < sizeof dt; descr++)
            dt[i++] = *descr;
        dt[i] = 0;
    }
    if (!descr || !fortran || !shape || *shape != '(') {
        vf_err(err, errlen, "%s: .npy header without descr, fortran_order and shape", vf->path);
        goto out;
    }
    if (!strcmp(dt, "<f4") || !strcmp(dt, "=f4")) {
        vf->elem_type = 'f', vf->elem_size = 4;
    } else if (!strcmp(dt, "<f8") || !strcmp(dt, "=f8")) {
        vf->elem_type = 'd', vf->elem_size = 8;
    } else if (!strcmp(dt, "|u1") || !strcmp(dt, "<u1") || !strcmp(dt, "=u1")) {
        vf->elem_type = 'u', vf->elem_size = 1;
    } else {
        vf_err(err, errlen,
               "%s: .npy dtype '%s' is not supported: use float32 or float64 (float indexes) or "
               "uint8 (binary indexes), little-endian",
               vf->path, dt);
        goto out;
    }
    if (strncmp(fortran, "False", 5) != 0) {
        vf_err(err, errlen, "%s: .npy in Fortran order: save it in C order", vf->path);
        goto out;
    }
    int64_t dims[3];
    int nd = 0;
    const char *p = shape + 1;
    for (;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')')
            break;
        if (!isdigit((unsigned char)*p) || nd == 3) {
            vf_err(err, errlen, "%s: .npy shape is not 1-D or 2-D", vf->path);
            goto out;
        }
        errno = 0;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (errno || v < 0) {
            vf_err(err, errlen, "%s: bad .npy shape", vf->path);
            goto out;
        }
        dims[nd++] = v;
        p = end;
    }
    if (nd == 1)
        vf->n = 1, vf->d = dims[0];
    else if (nd == 2)
        vf->n = dims[0], vf->d = dims[1];
    else {
        vf_err(err, errlen, "%s: .npy shape must be (n, d) or (d,), not %d-D", vf->path, nd);
        goto out;
    }
    if (vf->d < 1 || vf->d > FPX_VF_MAX_DIM) {
        vf_err(err, errlen, "%s: .npy dimension %lld out of range", vf->path, (long long)vf->d);
        goto out;
    }
    vf->data_off = hstart + hlen;
    vf->rec_size = (uint64_t)vf->d * (uint64_t)vf->elem_size;
    if (vf->n > 0 && (size - vf->data_off) / vf->rec_size < (uint64_t)vf->n) {
        uint64_t whole = (size - vf->data_off) / vf->rec_size;
        vf_err(err, errlen,
               "%s: truncated .npy: the header announces %lld vectors but the file ends at byte "
               "offset %llu, inside vector %llu (which starts at byte offset %llu)",
               vf->path, (long long)vf->n, (unsigned long long)size, (unsigned long long)whole,
               (unsigned long long)(vf->data_off + whole * vf->rec_size));
        goto out;
    }
    rc = 0;
out:
    free(hdr);
    return rc;
}

static int open_texmex(fpx_vecfile *vf, uint64_t size, const char *ext, char *err, size_t errlen) {
    uint8_t b[4];
    if (size == 0)
        return vf_err(err, errlen, "%s: empty .%s file", vf->path, ext);
    if (size < 4 || fread(b, 1, 4, vf->f) != 4)
        return vf_err(err, errlen,
                      "%s: truncated .%s: the file ends at byte offset %llu, inside "
                      "the first vector's dimension",
                      vf->path, ext, (unsigned long long)size);
    int32_t d = (int32_t)le32(b);
    if (d < 1 || d > FPX_VF_MAX_DIM)
        return vf_err(err, errlen, "%s: byte offset 0: vector dimension %d out of range (1..%d)",
                      vf->path, d, FPX_VF_MAX_DIM);
    vf->d = d;
    vf->rec_size = 4 + (uint64_t)d * (uint64_t)vf->elem_size;
    vf->n = (int64_t)(size / vf->rec_size);
    vf->data_off = 0;
    if (size % vf->rec_size != 0)
        return vf_err(err, errlen,
                      "%s: truncated .%s: vector %lld starts at byte offset %llu but the file ends "
                      "at byte offset %llu, %llu bytes into its %llu-byte record (dimension %d)",
                      vf->path, ext, (long long)vf->n, (unsigned long long)(vf->n * vf->rec_size),
                      (unsigned long long)size, (unsigned long long)(size % vf->rec_size),
                      (unsigned long long)vf->rec_size, d);
    return 0;
}

int fpx_vf_open(fpx_vecfile *vf, const char *path, char *err, size_t errlen) {
    memset(vf, 0, sizeof *vf);
    vf->path = path;
    const char *ext = ext_of(path);
    if (!strcmp(ext, "npy"))
        vf->kind = FPX_VF_NPY;
    else if (!strcmp(ext, "fvecs"))
        vf->kind = FPX_VF_FVECS, vf->elem_type = 'f', vf->elem_size = 4;
    else if (!strcmp(ext, "bvecs"))
        vf->kind = FPX_VF_BVECS, vf->elem_type = 'u', vf->elem_size = 1;
    else if (!strcmp(ext, "ivecs"))
        vf->kind = FPX_VF_IVECS, vf->elem_type = 'i', vf->elem_size = 4;
    else
        return vf_err(err, errlen,
                      "%s: unknown file type: the name must end in .npy, .fvecs, "
                      ".bvecs or .ivecs",
                      path);
    vf->f = fopen(path, "rb");
    if (!vf->f)
        return vf_err(err, errlen, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(vf->f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fpx_vf_close(vf);
        return vf_err(err, errlen, "%s: not a regular file", path);
    }
    int rc = vf->kind == FPX_VF_NPY ? open_npy(vf, (uint64_t)st.st_size, err, errlen)
                                    : open_texmex(vf, (uint64_t)st.st_size, ext, err, errlen);
    if (rc == 0 && fseeko(vf->f, (off_t)vf->data_off, SEEK_SET) != 0)
        rc = vf_err(err, errlen, "%s: %s", path, strerror(errno));
    if (rc != 0)
        fpx_vf_close(vf);
    return rc;
}

void fpx_vf_close(fpx_vecfile *vf) {
    if (vf->f)
        fclose(vf->f);
    vf->f = NULL;
    free(vf->buf);
    vf->buf = NULL;
}

int fpx_vf_is_bytes(const fpx_vecfile *vf) {
    return vf->elem_type == 'u';
}

int fpx_vf_seek(fpx_vecfile *vf, int64_t pos, char *err, size_t errlen) {
    if (pos < 0 || pos > vf->n)
        return vf_err(err, errlen, "%s: cannot go to vector %lld: the file holds %lld", vf->path,
                      (long long)pos, (long long)vf->n);
    vf->next = pos;
    if (fseeko(vf->f, (off_t)(vf->data_off + (uint64_t)vf->next * vf->rec_size), SEEK_SET) != 0)
        return vf_err(err, errlen, "%s: %s", vf->path, strerror(errno));
    return 0;
}

int fpx_vf_read(fpx_vecfile *vf, int64_t max, int as_bytes, void *out, int64_t *got, char *err,
                size_t errlen) {
    int64_t n = vf->n - vf->next < max ? vf->n - vf->next : max;
    *got = 0;
    if (n <= 0)
        return 0;
    if (as_bytes && vf->elem_type != 'u')
        return vf_err(err, errlen,
                      "%s: a binary index takes uint8 vectors (.bvecs or a uint8 "
                      ".npy)",
                      vf->path);
    size_t need = (size_t)n * vf->rec_size;
    if (need > vf->buf_cap) {
        void *nb = realloc(vf->buf, need);
        if (!nb)
            return vf_err(err, errlen, "out of memory");
        vf->buf = nb, vf->buf_cap = need;
    }
    uint64_t start = vf->data_off + (uint64_t)vf->next * vf->rec_size;
    size_t r = fread(vf->buf, 1, need, vf->f);
    if (r != need)
        return vf_err(err, errlen,
                      "%s: the file ends at byte offset %llu, inside vector %lld "
                      "(it changed while being read?)",
                      vf->path, (unsigned long long)(start + r),
                      (long long)(vf->next + (int64_t)(r / vf->rec_size)));
    int texmex = vf->kind != FPX_VF_NPY;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *rec = (const uint8_t *)vf->buf + (size_t)i * vf->rec_size;
        if (texmex) {
            int32_t d = (int32_t)le32(rec);
            if (d != vf->d)
                return vf_err(err, errlen,
                              "%s: byte offset %llu: vector %lld has dimension %d, "
                              "the file's first has %lld",
                              vf->path, (unsigned long long)(start + (uint64_t)i * vf->rec_size),
                              (long long)(vf->next + i), d, (long long)vf->d);
            rec += 4;
        }
        if (as_bytes) {
            memcpy((uint8_t *)out + (size_t)i * (size_t)vf->d, rec, (size_t)vf->d);
            continue;
        }
        float *row = (float *)out + (size_t)i * (size_t)vf->d;
        for (int64_t j = 0; j < vf->d; j++) {
            switch (vf->elem_type) {
            case 'f':
                memcpy(&row[j], rec + 4 * j, 4);
                break;
            case 'd': {
                double v;
                memcpy(&v, rec + 8 * j, 8);
                row[j] = (float)v;
                break;
            }
            case 'i': {
                int32_t v;
                memcpy(&v, rec + 4 * j, 4);
                row[j] = (float)v;
                break;
            }
            default:
                row[j] = (float)rec[j];
            }
        }
    }
    vf->next += n;
    *got = n;
    return 0;
}

int fpx_vf_read_text(FILE *f, float **x, int64_t *n, int64_t *d, char *err, size_t errlen) {
    char *line = NULL;
    size_t cap = 0, used = 0, alloc = 0;
    float *v = NULL;
    int64_t rows = 0, dim = 0, lineno = 0;
    ssize_t len;
    int rc = -1;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        int64_t cols = 0;
        char *p = line;
        for (;;) {
            while (isspace((unsigned char)*p))
                p++;
            if (!*p)
                break;
            char *end;
            errno = 0;
            float val = strtof(p, &end);
            if (end == p || errno == ERANGE) {
                vf_err(err, errlen, "query line %lld: '%.20s' is not a number", (long long)lineno,
                       p);
                goto out;
            }
            if (used == alloc) {
                alloc = alloc ? alloc * 2 : 1024;
                float *nv = realloc(v, alloc * sizeof *v);
                if (!nv) {
                    vf_err(err, errlen, "out of memory");
                    goto out;
                }
                v = nv;
            }
            v[used++] = val;
            cols++;
            p = end;
        }
        if (!cols)
            continue;
        if (dim && cols != dim) {
            vf_err(err, errlen, "query line %lld has %lld values, the first query has %lld",
                   (long long)lineno, (long long)cols, (long long)dim);
            goto out;
        }
        dim = cols;
        rows++;
    }
    if (!rows) {
        vf_err(err, errlen, "no query vectors given");
        goto out;
    }
    *x = v, *n = rows, *d = dim;
    v = NULL;
    rc = 0;
out:
    free(v);
    free(line);
    return rc;
}
