/*
 * cli.h - what the files of the faiss-proxy command-line tool share.
 *
 * The tool is a thin shell over libfaissproxy: faiss_proxy.c parses the
 * command line and runs the verbs, import.c streams a vector file in, vecfile.c reads vector files
 * (.npy, TEXMEX .fvecs/.bvecs/.ivecs, text), rawreq.c builds the few requests the typed client
 * calls cannot express (keys of either msgpack type, metadata taken from JSON, ping's reply
 * fields), and backup.c saves and restores a tenant.
 *
 * Exit statuses are part of the interface (docs/cli.md): scripts test them.
 */
#ifndef FPX_CLI_H
#define FPX_CLI_H

#include <faissproxy/client.h>

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
    FPX_EXIT_OK = 0,     /* done */
    FPX_EXIT_SERVER = 1, /* the server refused (its error type is printed) */
    FPX_EXIT_USAGE = 2,  /* bad command line */
    FPX_EXIT_CONN = 3,   /* the server could not be reached */
    FPX_EXIT_INPUT = 4   /* a bad input file (or one that cannot be written) */
};

/* One run of the tool: the connection and what its raw requests need. */
typedef struct fpx_cli {
    fpx_client *c;
    const char *api_key; /* NULL: none */
    const char *tenant;  /* NULL: none */
    char errtype[64];    /* the last failure of a raw request */
    char errstr[1024];
    /* "acked" or "synced", sent with each request (--durability); NULL: none */
    const char *durability;
} fpx_cli;

/* The command line, parsed (faiss_proxy.c). */
typedef struct fpx_opts {
    const char *server, *api_key, *tenant, *server_key, *durability;
    long timeout_ms;
    int json, help, create, resume, quiet;
    const char *type, *metric, *index, *keys, *query;
    long long dim, k, chunk, window;
    const char *pos[4];
    int npos;
} fpx_opts;

/* Seconds on the monotonic clock. */
double fpx_cli_now_s(void);
/* A binary index (its metric is Hamming). */
int fpx_cli_is_binary(const fpx_index_info *in);

/* import.c: `import FILE --index NAME [...]`; an exit status. */
int fpx_cli_import(fpx_cli *cli, fpx_opts *o);

/* Prints "faiss-proxy: WHAT: TYPE: MESSAGE" for the client's last error and
 * returns FPX_EXIT_CONN for a connection_error, else FPX_EXIT_SERVER. */
int fpx_cli_client_fail(fpx_cli *cli, const char *what);
/* Prints "faiss-proxy: WHAT: TYPE: MSG"; the status as fpx_cli_client_fail. */
int fpx_cli_fail_with(const char *what, const char *type, const char *msg);
/* The same for the last failure of a raw request (cli->errtype/errstr). */
int fpx_cli_raw_fail(fpx_cli *cli, const char *what);
/* Prints "faiss-proxy: ..." to stderr and returns status. */
int fpx_cli_say(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- rawreq.c ------------------------------------------------------------ */

/* A request being built: its header map and its metadata section. */
typedef struct fpx_rawreq {
    msgpack_sbuffer hdr;
    msgpack_packer hp;
    msgpack_sbuffer meta;
    msgpack_packer mp;
} fpx_rawreq;

/* A decoded reply; header and meta live in the unpacked objects (meta NULL
 * when the reply has no metadata section). */
typedef struct fpx_rawrep {
    uint8_t *body;
    msgpack_unpacked hu, mu;
    const msgpack_object *header;
    const msgpack_object *meta;
    const uint8_t *data;
    size_t data_len;
} fpx_rawrep;

/* Starts a request: a header map of nfields caller fields plus operation,
 * index_id (when index is not NULL), api_key and tenant_id (when set). */
void fpx_rawreq_begin(fpx_cli *cli, fpx_rawreq *rq, const char *op, const char *index,
                      uint32_t nfields);
void fpx_rawreq_free(fpx_rawreq *rq);
/* Sends the request with data parts a and b (either may be empty) and the
 * metadata buffer when has_meta; on success *rep must be released with
 * fpx_rawrep_free. Returns 0, or -1 with cli->errtype/errstr set. */
int fpx_rawreq_send(fpx_cli *cli, fpx_rawreq *rq, const void *a, size_t alen, const void *b,
                    size_t blen, int has_meta, fpx_rawrep *rep);
void fpx_rawrep_free(fpx_rawrep *rep);
/* Pipelining: sends the request without waiting for its reply (give it a
 * request_id to match). 0, or -1 with cli->errtype/errstr set. */
int fpx_rawreq_post(fpx_cli *cli, fpx_rawreq *rq, const void *a, size_t alen, const void *b,
                    size_t blen, int has_meta);
/* The next reply of the requests in flight, whichever it is; release it with
 * fpx_rawrep_free in every case. 0 ok; -1 an error reply or an unreadable
 * one (cli's error set; rep->header, when set, holds its request_id); -2 no
 * reply came (connection_error). */
int fpx_rawrep_next(fpx_cli *cli, fpx_rawrep *rep);
/* The value of key in a msgpack map, or NULL. */
const msgpack_object *fpx_mp_get(const msgpack_object *map, const char *key);
void fpx_mp_pack_str(msgpack_packer *pk, const char *s);

/* JSON <-> msgpack for keys and metadata. json_to_mp returns -1 on a value
 * that has no msgpack form (never happens with jansson's types). */
int fpx_json_to_mp(msgpack_packer *pk, const json_t *v);
json_t *fpx_mp_to_json(const msgpack_object *o);

/* A JSON string's text, or dflt when j is not a string. */
static inline const char *fpx_str_or(const json_t *j, const char *dflt) {
    const char *s = json_string_value(j);
    return s ? s : dflt;
}

/* ---- backup.c ------------------------------------------------------------ */
int fpx_cli_backup(fpx_cli *cli, const char *dir);
int fpx_cli_restore(fpx_cli *cli, const char *dir);

/* Adds n float vectors with labels (may be NULL) and, when ids is not NULL,
 * n JSON entries ({"id", "metadata"} or null) as the metadata section. */
int fpx_cli_add(fpx_cli *cli, const char *index, int64_t n, int64_t d, const float *x,
                const int64_t *labels, json_t *const *ids, int64_t *ntotal);

#endif
