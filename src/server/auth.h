/*
 * auth.h - API keys and tenants.
 *
 * With keys configured, every request must carry one; the key decides the
 * tenant. Without keys, every request belongs to the tenant "default".
 */
#ifndef FPX_AUTH_H
#define FPX_AUTH_H

#include "proto/proto.h"

typedef struct fpx_auth fpx_auth;

/* Parses "key1:tenant1,key2:tenant2" (NULL or "" = auth off). Tenant names
 * follow the index-name rules (they name directories). On error returns -1
 * with the reason in err. */
int fpx_auth_new(const char *spec, fpx_auth **out, fpx_err *err);
void fpx_auth_free(fpx_auth *a);
int fpx_auth_enabled(const fpx_auth *a);
size_t fpx_auth_tenant_count(const fpx_auth *a);

/* Resolves the tenant of a request from its header's api_key and tenant_id
 * objects (either may be NULL). On success *tenant points to a string owned
 * by a. */
int fpx_auth_check(const fpx_auth *a, const msgpack_object *api_key,
                   const msgpack_object *tenant_id, const char **tenant, fpx_err *err);

#endif
