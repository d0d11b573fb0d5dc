/*
 * AutoTune_c.c - FAISS's AutoTune_c.h: a ParameterSpace kept in this process
 * (named ranges of values and their combinations); setting a parameter on an
 * index sets it on the server index.
 */
#include "internal.h"

#include <faiss/c_api/AutoTune_c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct FaissParameterRange_H {
    char *name;
    double *values;
    size_t n;
};

struct FaissParameterSpace_H {
    FaissParameterRange **ranges;
    size_t n;
};

const char *faiss_ParameterRange_name(const FaissParameterRange *r) {
    return r->name;
}

void faiss_ParameterRange_values(FaissParameterRange *r, double **values, size_t *n) {
    *values = r->values;
    *n = r->n;
}

int faiss_ParameterSpace_new(FaissParameterSpace **space) {
    *space = calloc(1, sizeof **space);
    return *space ? 0 : fpx_fc_error(STD_EXCEPT, "out of memory");
}

void faiss_ParameterSpace_free(FaissParameterSpace *ps) {
    if (!ps)
        return;
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->ranges[i]->name);
        free(ps->ranges[i]->values);
        free(ps->ranges[i]);
    }
    free(ps->ranges);
    free(ps);
}

size_t faiss_ParameterSpace_n_combinations(const FaissParameterSpace *ps) {
    size_t n = 1;
    for (size_t i = 0; i < ps->n; i++)
        n *= ps->ranges[i]->n;
    return n;
}

int faiss_ParameterSpace_combination_name(const FaissParameterSpace *ps, size_t cno, char *buf,
                                          size_t size) {
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < ps->n; i++) {
        FaissParameterRange *r = ps->ranges[i];
        if (r->n == 0)
            continue;
        size_t j = cno % r->n;
        cno /= r->n;
        int w = snprintf(buf + off, size > off ? size - off : 0, "%s%s=%g", off ? "," : "", r->name,
                         r->values[j]);
        if (w < 0 || (size_t)w >= size - off)
            return fpx_fc_error(FAISS_EXCEPT, "combination name does not fit in %zu bytes", size);
        off += (size_t)w;
    }
    return 0;
}

int faiss_ParameterSpace_set_index_parameter(const FaissParameterSpace *ps, FaissIndex *ix,
                                             const char *name, double value) {
    (void)ps;
    return fpx_fc_set_param(ix, name, value);
}

int faiss_ParameterSpace_set_index_parameters(const FaissParameterSpace *ps, FaissIndex *ix,
                                              const char *params) {
    char *copy = strdup(params ? params : "");
    if (!copy)
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        char *end;
        if (!eq) {
            rc = fpx_fc_error(FAISS_EXCEPT, "could not parse parameter '%s'", tok);
            break;
        }
        *eq = 0;
        double v = strtod(eq + 1, &end);
        if (end == eq + 1 || *end)
            rc = fpx_fc_error(FAISS_EXCEPT, "could not parse the value of parameter '%s'", tok);
        else
            rc = faiss_ParameterSpace_set_index_parameter(ps, ix, tok, v);
    }
    free(copy);
    return rc;
}

int faiss_ParameterSpace_set_index_parameters_cno(const FaissParameterSpace *ps, FaissIndex *ix,
                                                  size_t cno) {
    char buf[1024];
    int rc = faiss_ParameterSpace_combination_name(ps, cno, buf, sizeof buf);
    return rc ? rc : faiss_ParameterSpace_set_index_parameters(ps, ix, buf);
}

void faiss_ParameterSpace_display(const FaissParameterSpace *ps) {
    printf("ParameterSpace, %zu parameters, %zu combinations:\n", ps->n,
           faiss_ParameterSpace_n_combinations(ps));
    for (size_t i = 0; i < ps->n; i++) {
        printf("   %s: ", ps->ranges[i]->name);
        for (size_t j = 0; j < ps->ranges[i]->n; j++)
            printf("%g ", ps->ranges[i]->values[j]);
        printf("\n");
    }
}

int faiss_ParameterSpace_add_range(FaissParameterSpace *ps, const char *name,
                                   FaissParameterRange **out) {
    for (size_t i = 0; i < ps->n; i++) {
        if (!strcmp(ps->ranges[i]->name, name)) {
            *out = ps->ranges[i];
            return 0;
        }
    }
    FaissParameterRange *r = calloc(1, sizeof *r);
    FaissParameterRange **rs = realloc(ps->ranges, sizeof *rs * (ps->n + 1));
    if (!r || !rs || !(r->name = strdup(name))) {
        free(r);
        if (rs)
            ps->ranges = rs;
        return fpx_fc_error(STD_EXCEPT, "out of memory");
    }
    ps->ranges = rs;
    ps->ranges[ps->n++] = r;
    *out = r;
    return 0;
}
