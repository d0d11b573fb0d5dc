/*
 * faiss/c_api/error_c.h - faiss-proxy's drop-in for the FAISS 1.7.3 C API header of
 * the same name: the same declarations, served by libfaiss_c from faiss-proxy
 * (indexes live on a faiss-proxy server; see faiss_proxy_c.h).
 */
#ifndef FAISSPROXY_ERROR_C_H
#define FAISSPROXY_ERROR_C_H

#ifdef __cplusplus
extern "C" {
#endif

/* What a call returned: 0, or one of the negative codes. */
typedef enum FaissErrorCode {
    OK = 0,
    UNKNOWN_EXCEPT = -1, /* the server could not be reached, or another failure */
    FAISS_EXCEPT = -2,   /* the server (or FAISS behind it) refused the call */
    STD_EXCEPT = -4      /* out of memory and other local failures */
} FaissErrorCode;

/* The message of the last failed call in this thread, or NULL. */
const char *faiss_get_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
