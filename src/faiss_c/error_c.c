/*
 * error_c.c - FAISS's error_c.h: how a failed call tells its caller why. A
 * call returns a FAISS error code and leaves the message in the calling
 * thread's state, where faiss_get_last_error() finds it; a server's refusal
 * keeps the server's message (FAISS's own where FAISS refused).
 */
#include "internal.h"

#include <faiss/c_api/error_c.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int fpx_fc_error(int code, const char *fmt, ...) {
    fpx_fc_thread *t = fpx_fc_tls();
    if (t) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->err, sizeof t->err, fmt, ap);
        va_end(ap);
        t->has_err = 1;
    }
    return code;
}

const char *faiss_get_last_error(void) {
    fpx_fc_thread *t = fpx_fc_tls();
    return t && t->has_err ? t->err : NULL;
}

/* The error of a failed libfaissproxy call, as a FAISS error code. */
int fpx_fc_from_client(fpx_client *c) {
    const char *type = fpx_client_errtype(c);
    int code = !strcmp(type, "connection_error") ? UNKNOWN_EXCEPT
               : !strcmp(type, "internal_error") ? STD_EXCEPT
                                                 : FAISS_EXCEPT;
    return fpx_fc_error(code, "%s", fpx_client_errstr(c));
}
