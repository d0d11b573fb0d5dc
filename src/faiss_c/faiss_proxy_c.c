/*
 * faiss_proxy_c.c - faiss-proxy's own additions (faiss_proxy_c.h): the
 * server name of an index, keeping it when its handle is freed, and opening
 * an existing one. faiss_proxy_configure lives with the configuration it
 * writes, in faiss_c.c.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/faiss_proxy_c.h>

const char *faiss_proxy_Index_name(const FaissIndex *ix) {
    return ix ? ix->name : NULL;
}

int faiss_proxy_Index_keep(FaissIndex *ix, int keep) {
    if (!ix)
        return fpx_fc_error(FAISS_EXCEPT, "index is NULL");
    /* Kept, it must outlive the program: its lease goes (it has one unless
     * FAISS_PROXY_LEASE_SECONDS turned leases off). */
    const char *lease = getenv("FAISS_PROXY_LEASE_SECONDS");
    if (keep && !ix->keep && ix->name[0] && !(lease && !strcmp(lease, "0"))) {
        fpx_client *c = fpx_fc_client();
        if (!c)
            return UNKNOWN_EXCEPT;
        if (fpx_client_set_lease(c, ix->name, 0) != 0)
            return fpx_fc_from_client(c);
    }
    ix->keep = keep != 0;
    return 0;
}

int faiss_proxy_Index_open(FaissIndex **p, const char *name) {
    fpx_client *c = fpx_fc_client();
    if (!c)
        return UNKNOWN_EXCEPT;
    fpx_index_info info;
    if (fpx_client_get_index_info(c, name, &info) != 0)
        return fpx_fc_from_client(c);
    int rc = fpx_fc_handle_from_info(p, &info, FPX_CLS_INDEX);
    if (rc == 0)
        (*p)->keep = 1;
    return rc;
}
