/*
 * test_auth.c - unit tests of the API-key table (src/server/auth.c): parsing
 * FAISS_PROXY_API_KEYS, the tenant each key resolves to, tenant_id checks,
 * and every malformed key list and presented key refused with a reason.
 */
#include "server/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* A msgpack string object borrowing s (msgpack-c objects need no zone for that). */
static msgpack_object str(const char *s, size_t n) {
    msgpack_object o;
    o.type = MSGPACK_OBJECT_STR;
    o.via.str.ptr = s;
    o.via.str.size = (uint32_t)n;
    return o;
}
static msgpack_object cstr(const char *s) {
    return str(s, strlen(s));
}

static fpx_auth *parse(const char *spec) {
    fpx_auth *a = NULL;
    fpx_err err = {0};
    int rc = fpx_auth_new(spec, &a, &err);
    CHECK(rc == 0 && a != NULL);
    if (rc)
        fprintf(stderr, "  '%s': %s\n", spec, err.msg);
    return a;
}

/* The tenant a key (NULL: none) and tenant_id (NULL: none) resolve to, or
 * NULL with err set. */
static const char *resolve(const fpx_auth *a, const msgpack_object *key,
                           const msgpack_object *tenant, fpx_err *err) {
    const char *t = NULL;
    if (fpx_auth_check(a, key, tenant, &t, err))
        return NULL;
    return t;
}

static void test_off(void) {
    static const char *specs[] = {NULL, ""};
    for (int i = 0; i < 2; i++) {
        fpx_auth *a = parse(specs[i]);
        if (!a)
            continue;
        CHECK(!fpx_auth_enabled(a) && fpx_auth_tenant_count(a) == 1);
        fpx_err err = {0};
        msgpack_object k = cstr("anything"), t = cstr("someone");
        msgpack_object n;
        n.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        n.via.u64 = 5;
        /* without keys, whatever is presented belongs to "default" */
        const char *r = resolve(a, NULL, NULL, &err);
        CHECK(r && !strcmp(r, "default"));
        r = resolve(a, &k, &t, &err);
        CHECK(r && !strcmp(r, "default"));
        r = resolve(a, &n, &n, &err);
        CHECK(r && !strcmp(r, "default"));
        fpx_auth_free(a);
    }
}

static void test_keys(void) {
    fpx_auth *a = parse(" k1:alice, k2:bob  ,k3:alice,a:b:carol,");
    if (!a)
        return;
    CHECK(fpx_auth_enabled(a) && fpx_auth_tenant_count(a) == 3);
    fpx_err err = {0};
    msgpack_object k1 = cstr("k1"), k2 = cstr("k2"), k3 = cstr("k3"), kab = cstr("a:b");
    const char *r = resolve(a, &k1, NULL, &err);
    CHECK(r && !strcmp(r, "alice"));
    r = resolve(a, &k2, NULL, &err);
    CHECK(r && !strcmp(r, "bob")); /* the tenant's trailing spaces are not part of it */
    r = resolve(a, &k3, NULL, &err);
    CHECK(r && !strcmp(r, "alice"));
    r = resolve(a, &kab, NULL, &err); /* the last ':' separates the tenant */
    CHECK(r && !strcmp(r, "carol"));

    /* tenant_id: the key's own tenant or nil passes, anything else is refused */
    msgpack_object alice = cstr("alice"), bob = cstr("bob"), alic = cstr("alic"), nil, num;
    nil.type = MSGPACK_OBJECT_NIL;
    num.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    num.via.u64 = 1;
    r = resolve(a, &k1, &alice, &err);
    CHECK(r && !strcmp(r, "alice"));
    r = resolve(a, &k1, &nil, &err);
    CHECK(r && !strcmp(r, "alice"));
    const msgpack_object *wrong_tenants[] = {&bob, &alic, &num};
    for (int i = 0; i < 3; i++) {
        err.type = FPX_E_INTERNAL;
        CHECK(resolve(a, &k1, wrong_tenants[i], &err) == NULL && err.type == FPX_E_AUTH);
    }

    /* presented keys that are not a configured one */
    static char big[1100];
    memset(big, 'k', sizeof big - 1);
    msgpack_object bad[] = {cstr(""),    cstr("k"),      cstr("k1 "),   cstr("k12"), cstr("K1"),
                            cstr(" k1"), str("k1\0", 3), cstr("alice"), cstr(big),   num};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.type = FPX_E_INTERNAL;
        CHECK(resolve(a, &bad[i], NULL, &err) == NULL && err.type == FPX_E_AUTH);
        if (err.type != FPX_E_AUTH)
            fprintf(stderr, "  bad key %zu accepted\n", i);
    }
    err.type = FPX_E_INTERNAL;
    CHECK(resolve(a, NULL, &alice, &err) == NULL && err.type == FPX_E_AUTH); /* missing */
    CHECK(resolve(a, &nil, NULL, &err) == NULL && err.type == FPX_E_AUTH);   /* nil */
    fpx_auth_free(a);
}

static void test_bad_specs(void) {
    static char long_key[1100];
    memset(long_key, 'k', 1025);
    memcpy(long_key + 1025, ":t", 3);
    static const char *bad[] = {
        "k1",       /* no tenant */
        ":t",       /* no key */
        "k1:",      /* empty tenant */
        "k1:../x",  /* not a folder name */
        "k1:.t",    /* starts with '.' */
        "k1:a/b",   /* a path */
        "k1:t t",   /* a space inside */
        "k:a,k:b",  /* a key twice */
        ",,,",      /* no key at all */
        "  ",       /* only spaces */
        "k1:t1,k2", /* one good entry does not save a bad one */
        long_key,   /* a key above 1024 bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fpx_auth *a = (fpx_auth *)1;
        fpx_err err = {0};
        int rc = fpx_auth_new(bad[i], &a, &err);
        CHECK(rc == -1 && a == NULL && err.type == FPX_E_VALIDATION && err.msg[0]);
        if (rc == 0) {
            fprintf(stderr, "  accepted bad key list '%.60s'\n", bad[i]);
            fpx_auth_free(a);
        }
    }
    /* 1024 bytes is still a key */
    long_key[1024] = ':';
    long_key[1025] = 't';
    long_key[1026] = 0;
    fpx_auth *a = parse(long_key);
    if (a) {
        msgpack_object k = str(long_key, 1024);
        fpx_err err = {0};
        const char *r = resolve(a, &k, NULL, &err);
        CHECK(r && !strcmp(r, "t"));
        fpx_auth_free(a);
    }
}

int main(void) {
    test_off();
    test_keys();
    test_bad_specs();
    return CHECK_STATUS("test_auth");
}
