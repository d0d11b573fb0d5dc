/*
 * faissx_types.c - FAISSx's index types: the factory strings our server builds for
 * them, and the FAISS class names and metric numbers FAISSx's client reads.
 */
#include "faissx_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- index types ------------------------------------------------------------------------- */

int fx_is_binary(const fx_info *in) {
    return in->metric == 2;
}

int fx_starts(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

/* Digits only (at least one). */
static int all_digits(const char *s) {
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* FAISS's ScalarQuantizer for FAISSx's SQ<q>. as_qtype: q is the raw FAISS
 * QuantizerType number (IVF<n>_SQ<q>), else the bits FAISSx's
 * IndexScalarQuantizer client names (SQ8, SQ4, SQ16 = fp16, SQ6). */
static const char *sq_name(long q, int as_qtype) {
    static const char *const by_qtype[] = {"SQ8",    "SQ4",        "SQ8_uniform", "SQ4_uniform",
                                           "SQfp16", "SQ8_direct", "SQ6"};
    if (q == 8)
        return "SQ8";
    if (q == 16)
        return "SQfp16";
    if (!as_qtype && q == 4)
        return "SQ4";
    if (!as_qtype && q == 6)
        return "SQ6";
    return q >= 0 && q <= 6 ? by_qtype[q] : NULL;
}

/* Rewrites a genuine FAISS factory string FAISSx-style: "L2" components are
 * "Flat", "NORM"/"L2NORM" are "L2norm". */
static int rewrite_factory(const char *in, char *out, size_t cap) {
    size_t w = 0;
    const char *p = in;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *t = NULL;
        if (n == 2 && !strncmp(p, "L2", 2))
            t = "Flat";
        else if ((n == 4 && !strncmp(p, "NORM", 4)) || (n == 6 && !strncmp(p, "L2NORM", 6)))
            t = "L2norm";
        int k = t ? snprintf(out + w, cap - w, "%s%s", t, e ? "," : "")
                  : snprintf(out + w, cap - w, "%.*s%s", (int)n, p, e ? "," : "");
        if (k < 0 || (size_t)k >= cap - w)
            return -1;
        w += (size_t)k;
        p += n + (e ? 1 : 0);
    }
    return 0;
}

/* Maps a FAISSx index_type (without an IDMap prefix) to the factory string
 * our server builds, its metric and whether it is binary. -1 when the string
 * is none of FAISSx's forms; the server judges the factory strings. */
int fx_map_type(const char *t, char *out, size_t cap, int *ip, int *binary) {
    char s[FX_TYPE_MAX + 1];
    snprintf(s, sizeof s, "%s", t);
    size_t n = strlen(s);
    *ip = 0;
    *binary = 0;
    if (n > 3 && !strcmp(s + n - 3, "_IP")) {
        *ip = 1;
        s[n -= 3] = 0;
    }
    if (fx_starts(s, "BINARY")) {
        const char *r = s + 6;
        *binary = 1;
        if (!*r || !strcmp(r, "_FLAT"))
            return snprintf(out, cap, "BFlat"), 0;
        if (fx_starts(r, "_IVF") && (!r[4] || all_digits(r + 4)))
            return snprintf(out, cap, "BIVF%s", r[4] ? r + 4 : "100"), 0;
        if (fx_starts(r, "_HASH") && (!r[5] || all_digits(r + 5)))
            return snprintf(out, cap, "BHash%s", r[5] ? r + 5 : "8"), 0;
        return -1;
    }
    if (!strcmp(s, "L2") || !strcmp(s, "Flat") || !strcmp(s, "FLAT"))
        return snprintf(out, cap, "Flat"), 0;
    if (!strcmp(s, "IP")) {
        *ip = 1;
        return snprintf(out, cap, "Flat"), 0;
    }
    if (!strcmp(s, "HNSW"))
        return snprintf(out, cap, "HNSW32"), 0;
    if (!strcmp(s, "IVF"))
        return snprintf(out, cap, "IVF100,Flat"), 0;
    if (fx_starts(s, "IVF")) {
        char *u = strchr(s, '_');
        if (u && fx_starts(u, "_SQ") && all_digits(u + 3)) { /* IVF<n>_SQ<qtype> */
            *u = 0;
            const char *q = sq_name(strtol(u + 3, NULL, 10), 1);
            if (!all_digits(s + 3) || !q)
                return -1;
            return snprintf(out, cap, "IVF%s,%s", s + 3, q), 0;
        }
        if (all_digits(s + 3))
            return snprintf(out, cap, "IVF%s,Flat", s + 3), 0;
    }
    if (!strcmp(s, "PQ"))
        return snprintf(out, cap, "PQ8"), 0;
    if (fx_starts(s, "SQ") && all_digits(s + 2)) {
        const char *q = sq_name(strtol(s + 2, NULL, 10), 0);
        return q ? (snprintf(out, cap, "%s", q), 0) : -1;
    }
    return rewrite_factory(s, out, cap);
}

/* The FAISS class FAISSx reports for an index of ours. */
const char *fx_class_name(const fx_info *in) {
    const char *t = in->type;
    if (fx_starts(t, "IDMap2,"))
        return "IndexIDMap2";
    if (fx_starts(t, "IDMap,"))
        return "IndexIDMap";
    if (fx_starts(t, "BFlat") || !strcmp(t, "IndexBinaryFlat"))
        return "IndexBinaryFlat";
    if (fx_starts(t, "BIVF"))
        return "IndexBinaryIVF";
    if (fx_starts(t, "BHash"))
        return "IndexBinaryHash";
    if (fx_starts(t, "BHNSW"))
        return "IndexBinaryHNSW";
    if (!strcmp(t, "Flat") || !strcmp(t, "L2") || !strcmp(t, "IP") || fx_starts(t, "IndexFlat"))
        return in->metric == 1 ? "IndexFlatIP" : "IndexFlatL2";
    if (fx_starts(t, "HNSW"))
        return "IndexHNSWFlat";
    if (fx_starts(t, "IVF"))
        return strstr(t, ",PQ")     ? "IndexIVFPQ"
               : strstr(t, ",SQ")   ? "IndexIVFScalarQuantizer"
               : strstr(t, ",Flat") ? "IndexIVFFlat"
                                    : "IndexIVF";
    if (fx_starts(t, "PQ"))
        return "IndexPQ";
    if (fx_starts(t, "SQ"))
        return "IndexScalarQuantizer";
    if (fx_starts(t, "LSH"))
        return "IndexLSH";
    if (strchr(t, ','))
        return "IndexPreTransform";
    return "Index";
}

/* The factory string under an IDMap prefix. */
const char *fx_base_type(const char *t) {
    if (fx_starts(t, "IDMap2,"))
        return t + 7;
    if (fx_starts(t, "IDMap,"))
        return t + 6;
    return t;
}

/* FAISS's MetricType numbers, which FAISSx reports: IP 0, L2 1. */
int fx_faiss_metric(const fx_info *in) {
    return in->metric == 1 ? 0 : 1;
}

int fx_needs_training(const fx_info *in) {
    const char *b = fx_base_type(in->type);
    return strstr(b, "IVF") || strstr(b, "PQ") || strstr(b, "SQ4") || strstr(b, "SQ6") ||
           strstr(b, "SQ8,") || !strcmp(b, "SQ8") || strstr(b, "uniform") || strstr(b, "PCA") ||
           strstr(b, "ITQ");
}
