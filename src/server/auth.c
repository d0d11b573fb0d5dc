/*
 * auth.c - key table and the per-request check.
 *
 * The presented key is compared with EVERY configured key, each comparison
 * touching every byte, and the match is selected without a data-dependent
 * branch, so the reply time does not tell how many leading bytes of a guess
 * were right, nor which key matched.
 */
#include "auth.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define FPX_DEFAULT_TENANT "default"
#define FPX_KEY_MAX 1024

typedef struct fpx_key {
    char *key;
    size_t len;
    char *tenant;
} fpx_key;

struct fpx_auth {
    fpx_key *keys;
    size_t nkeys;
    size_t ntenants;
};

static void auth_free_keys(fpx_auth *a) {
    for (size_t i = 0; i < a->nkeys; i++) {
        free(a->keys[i].key);
        free(a->keys[i].tenant);
    }
    free(a->keys);
}

int fpx_auth_new(const char *spec, fpx_auth **out, fpx_err *err) {
    fpx_auth *a = calloc(1, sizeof *a);
    if (!a)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    *out = a;
    if (!spec || !*spec)
        return 0;
    char *copy = strdup(spec);
    if (!copy)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    size_t cap = 1;
    for (const char *p = spec; *p; p++)
        cap += *p == ',';
    a->keys = calloc(cap, sizeof *a->keys);
    int rc = a->keys ? 0 : fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        char *colon = strrchr(tok, ':');
        if (!colon || colon == tok || !colon[1]) {
            rc = fpx_err_set(err, FPX_E_VALIDATION,
                             "API key entry '%.40s' is not of the form key:tenant", tok);
            break;
        }
        *colon = 0;
        const char *tenant = colon + 1;
        size_t tlen = strlen(tenant);
        while (tlen > 0 && tenant[tlen - 1] == ' ')
            tlen--;
        if (!fpx_name_valid(tenant, tlen)) {
            rc = fpx_err_set(err, FPX_E_VALIDATION,
                             "tenant '%.*s' must be 1-128 characters of [A-Za-z0-9_.-], not "
                             "starting with '.'",
                             (int)(tlen > 40 ? 40 : tlen), tenant);
            break;
        }
        size_t klen = strlen(tok);
        if (klen > FPX_KEY_MAX) {
            rc = fpx_err_set(err, FPX_E_VALIDATION, "API keys are at most %d bytes", FPX_KEY_MAX);
            break;
        }
        for (size_t i = 0; i < a->nkeys; i++) {
            if (a->keys[i].len == klen && !memcmp(a->keys[i].key, tok, klen)) {
                rc = fpx_err_set(err, FPX_E_VALIDATION, "an API key is listed twice");
                break;
            }
        }
        if (rc)
            break;
        fpx_key *k = &a->keys[a->nkeys];
        k->key = strdup(tok);
        k->tenant = strndup(tenant, tlen);
        k->len = klen;
        if (!k->key || !k->tenant) {
            free(k->key);
            free(k->tenant);
            rc = fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
            break;
        }
        int seen = 0;
        for (size_t i = 0; i < a->nkeys; i++)
            seen |= !strcmp(a->keys[i].tenant, k->tenant);
        a->ntenants += !seen;
        a->nkeys++;
    }
    free(copy);
    if (rc == 0 && a->nkeys == 0)
        rc = fpx_err_set(err, FPX_E_VALIDATION, "FAISS_PROXY_API_KEYS holds no key");
    if (rc) {
        auth_free_keys(a);
        free(a);
        *out = NULL;
    }
    return rc;
}

void fpx_auth_free(fpx_auth *a) {
    if (!a)
        return;
    auth_free_keys(a);
    free(a);
}

int fpx_auth_enabled(const fpx_auth *a) {
    return a->nkeys > 0;
}

size_t fpx_auth_tenant_count(const fpx_auth *a) {
    return a->nkeys ? a->ntenants : 1;
}

/* 1 when equal. Runs over max(alen, blen) bytes whatever the contents. */
static unsigned ct_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    size_t n = alen > blen ? alen : blen;
    unsigned diff = (unsigned)(alen != blen);
    for (size_t i = 0; i < n; i++) {
        uint8_t x = i < alen ? a[i] : 0;
        uint8_t y = i < blen ? b[i] : 0;
        diff |= (unsigned)(x ^ y);
    }
    return (unsigned)1 & ((diff - 1) >> 8);
}

int fpx_auth_check(const fpx_auth *a, const msgpack_object *api_key,
                   const msgpack_object *tenant_id, const char **tenant, fpx_err *err) {
    if (a->nkeys == 0) {
        *tenant = FPX_DEFAULT_TENANT;
        return 0;
    }
    const char *key;
    size_t klen;
    if (!api_key)
        return fpx_err_set(err, FPX_E_AUTH, "missing api_key");
    if (fpx_obj_str(api_key, &key, &klen) != 0)
        return fpx_err_set(err, FPX_E_AUTH, "api_key must be a string");
    if (klen > FPX_KEY_MAX)
        return fpx_err_set(err, FPX_E_AUTH, "invalid api_key");
    size_t match = 0; /* index + 1 of the matching key, 0 for none */
    for (size_t i = 0; i < a->nkeys; i++) {
        size_t eq =
            ct_equal((const uint8_t *)key, klen, (const uint8_t *)a->keys[i].key, a->keys[i].len);
        match |= (i + 1) & ((size_t)0 - eq); /* keys are unique: at most one matches */
    }
    if (!match)
        return fpx_err_set(err, FPX_E_AUTH, "invalid api_key");
    const fpx_key *k = &a->keys[match - 1];
    if (tenant_id && tenant_id->type != MSGPACK_OBJECT_NIL) {
        const char *t;
        size_t tlen;
        if (fpx_obj_str(tenant_id, &t, &tlen) != 0 || tlen != strlen(k->tenant) ||
            memcmp(t, k->tenant, tlen) != 0)
            return fpx_err_set(err, FPX_E_AUTH, "tenant_id does not match the api_key's tenant");
    }
    *tenant = k->tenant;
    return 0;
}
