/*
 * index_factory_c.c - FAISS's index_factory_c.h: a server index made from a
 * factory description, its handle classed by what the description makes.
 */
#include "internal.h"

#include <faiss/c_api/index_factory_c.h>

int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                        FaissMetricType metric) {
    size_t nlist;
    if (!description)
        return fpx_fc_error(FAISS_EXCEPT, "description is NULL");
    enum fpx_fc_cls cls = fpx_fc_cls_of_desc(description, &nlist);
    int rc = fpx_fc_make_index(p_index, cls, d, metric, description);
    if (rc == 0) {
        (*p_index)->nlist = nlist;
        (*p_index)->own_fields = 1;
    }
    return rc;
}
