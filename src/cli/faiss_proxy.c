/*
 * faiss_proxy.c - faiss-proxy, the operator's command-line client.
 *
 * One verb per run (ping, ls, info, create, import, search, export, drop,
 * stats, backup, restore) over one libfaissproxy connection. The point of
 * the tool is loading data sets without writing a program: `import`
 * (import.c) streams a vector file (vecfile.c) to the server in chunks, so
 * memory stays flat, and can resume an interrupted load. Exit statuses are stable (cli.h,
 * docs/cli.md): 0 ok, 1 the server refused, 2 usage, 3 unreachable server,
 * 4 bad input file.
 */
#include "cli.h"
#include "vecfile.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FPX_DEFAULT_SERVER "tcp://127.0.0.1:5555"
#define FPX_WINDOW_MAX 64 /* import chunks in flight at most */

typedef struct fpx_verb {
    const char *name;
    int (*run)(fpx_cli *, fpx_opts *);
    int nargs;
    const char *synopsis;
    const char *help;
} fpx_verb;

int fpx_cli_say(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("faiss-proxy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return status;
}

int fpx_cli_fail_with(const char *what, const char *type, const char *msg) {
    fprintf(stderr, "faiss-proxy: %s: %s: %s\n", what, type, msg);
    return !strcmp(type, "connection_error") ? FPX_EXIT_CONN : FPX_EXIT_SERVER;
}

int fpx_cli_client_fail(fpx_cli *cli, const char *what) {
    return fpx_cli_fail_with(what, fpx_client_errtype(cli->c), fpx_client_errstr(cli->c));
}

int fpx_cli_raw_fail(fpx_cli *cli, const char *what) {
    return fpx_cli_fail_with(what, cli->errtype, cli->errstr);
}

double fpx_cli_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int fpx_cli_is_binary(const fpx_index_info *in) {
    return !strcmp(in->metric, "Hamming");
}

static void print_info(const fpx_index_info *in) {
    printf("index_id:   %s\nindex_type: %s\nmetric:     %s\ndimension:  %lld\nntotal:     "
           "%lld\nis_trained: %s\n",
           in->index_id, in->index_type, in->metric, (long long)in->dimension,
           (long long)in->ntotal, in->is_trained ? "true" : "false");
}

static json_t *info_json(const fpx_index_info *in) {
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "index_id", in->index_id, "index_type",
                     in->index_type, "metric", in->metric, "dimension", (json_int_t)in->dimension,
                     "ntotal", (json_int_t)in->ntotal, "is_trained", in->is_trained);
}

static void dump_json(json_t *j) {
    if (j)
        json_dumpf(j, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(j);
}

/* ---- the verbs ------------------------------------------------------------- */

/* ping's reply fields: version, protocol, max_message_size. */
static int raw_ping(fpx_cli *cli, json_t **out) {
    fpx_rawreq rq;
    fpx_rawreq_begin(cli, &rq, "ping", NULL, 0);
    fpx_rawrep rep;
    int rc = fpx_rawreq_send(cli, &rq, NULL, 0, NULL, 0, 0, &rep);
    fpx_rawreq_free(&rq);
    if (rc != 0)
        return -1;
    *out = rep.meta ? fpx_mp_to_json(rep.meta) : json_object();
    fpx_rawrep_free(&rep);
    return 0;
}

static int verb_ping(fpx_cli *cli, fpx_opts *o) {
    json_t *p;
    double t0 = fpx_cli_now_s();
    if (raw_ping(cli, &p) != 0)
        return fpx_cli_raw_fail(cli, "ping");
    double ms = (fpx_cli_now_s() - t0) * 1e3;
    if (o->json) {
        json_object_set_new(p, "round_trip_ms", json_real(ms));
        dump_json(p);
        return 0;
    }
    printf("pong from %s: version %s, protocol %lld, max_message_size %lld, %.2f ms\n", o->server,
           fpx_str_or(json_object_get(p, "version"), "?"),
           (long long)json_integer_value(json_object_get(p, "protocol")),
           (long long)json_integer_value(json_object_get(p, "max_message_size")), ms);
    json_decref(p);
    return 0;
}

static int verb_ls(fpx_cli *cli, fpx_opts *o) {
    fpx_index_info *in = NULL;
    size_t n = 0;
    if (fpx_client_list_indexes(cli->c, &in, &n) != 0)
        return fpx_cli_client_fail(cli, "ls");
    if (o->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, info_json(&in[i]));
        dump_json(a);
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%-32s %-24s %-7s d=%-6lld ntotal=%lld\n", in[i].index_id, in[i].index_type,
                   in[i].metric, (long long)in[i].dimension, (long long)in[i].ntotal);
    }
    free(in);
    return 0;
}

static int verb_info(fpx_cli *cli, fpx_opts *o) {
    fpx_index_info in;
    if (fpx_client_get_index_info(cli->c, o->pos[0], &in) != 0)
        return fpx_cli_client_fail(cli, "info");
    if (o->json)
        dump_json(info_json(&in));
    else
        print_info(&in);
    return 0;
}

static int verb_create(fpx_cli *cli, fpx_opts *o) {
    if (o->dim <= 0)
        return fpx_cli_say(FPX_EXIT_USAGE, "create needs --dim D (D >= 1)");
    fpx_index_info in;
    if (fpx_client_create_index(cli->c, o->pos[0], o->dim, o->type ? o->type : "Flat", o->metric,
                                &in) != 0)
        return fpx_cli_client_fail(cli, "create");
    if (o->json)
        dump_json(info_json(&in));
    else
        print_info(&in);
    return 0;
}

static int verb_drop(fpx_cli *cli, fpx_opts *o) {
    if (fpx_client_delete_index(cli->c, o->pos[0]) != 0)
        return fpx_cli_client_fail(cli, "drop");
    if (!o->json)
        printf("dropped %s\n", o->pos[0]);
    else
        dump_json(json_pack("{s:s, s:b}", "index_id", o->pos[0], "deleted", 1));
    return 0;
}

static int verb_export(fpx_cli *cli, fpx_opts *o) {
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (fpx_client_export(cli->c, o->pos[0], &bytes, &len) != 0)
        return fpx_cli_client_fail(cli, "export");
    /* written beside the target, then renamed: a failed export leaves no half file */
    size_t pl = strlen(o->pos[1]) + 16;
    char *tmp = malloc(pl);
    int rc = FPX_EXIT_INPUT;
    if (!tmp) {
        free(bytes);
        return fpx_cli_say(FPX_EXIT_INPUT, "out of memory");
    }
    snprintf(tmp, pl, "%s.partial", o->pos[1]);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fpx_cli_say(rc, "%s: %s", tmp, strerror(errno));
    } else if (fwrite(bytes, 1, len, f) != len || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fpx_cli_say(rc, "%s: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
    } else if (fclose(f) != 0 || rename(tmp, o->pos[1]) != 0) {
        fpx_cli_say(rc, "%s: %s", o->pos[1], strerror(errno));
        unlink(tmp);
    } else {
        rc = 0;
        if (!o->json)
            printf("exported %s: %zu bytes to %s\n", o->pos[0], len, o->pos[1]);
    }
    free(tmp);
    free(bytes);
    return rc;
}

static int verb_stats(fpx_cli *cli, fpx_opts *o) {
    json_t *p;
    if (raw_ping(cli, &p) != 0)
        return fpx_cli_raw_fail(cli, "stats");
    fpx_index_info *in = NULL;
    size_t n = 0;
    if (fpx_client_list_indexes(cli->c, &in, &n) != 0) {
        json_decref(p);
        return fpx_cli_client_fail(cli, "stats");
    }
    long long total = 0;
    for (size_t i = 0; i < n; i++)
        total += in[i].ntotal;
    if (o->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, info_json(&in[i]));
        dump_json(json_pack("{s:o, s:I, s:I, s:o}", "server", p, "indexes", (json_int_t)n,
                            "vectors", (json_int_t)total, "per_index", a));
    } else {
        printf("server: %s, version %s, protocol %lld, max_message_size %lld\n", o->server,
               fpx_str_or(json_object_get(p, "version"), "?"),
               (long long)json_integer_value(json_object_get(p, "protocol")),
               (long long)json_integer_value(json_object_get(p, "max_message_size")));
        printf("indexes: %zu\nvectors: %lld\n", n, total);
        for (size_t i = 0; i < n; i++)
            printf("  %-32s %-24s ntotal=%lld\n", in[i].index_id, in[i].index_type,
                   (long long)in[i].ntotal);
        json_decref(p);
    }
    free(in);
    return 0;
}

/* ---- search ---------------------------------------------------------------- */

static int load_queries(fpx_opts *o, int bin, int64_t want_d, void **x, int64_t *nq) {
    char err[1024];
    int64_t d = 0;
    *x = NULL;
    if (!o->query || !strcmp(o->query, "-")) {
        if (bin)
            return fpx_cli_say(FPX_EXIT_USAGE, "binary queries come from a file (.bvecs or a "
                                               "uint8 .npy), not from standard input");
        float *f;
        if (fpx_vf_read_text(stdin, &f, nq, &d, err, sizeof err) != 0)
            return fpx_cli_say(FPX_EXIT_INPUT, "%s", err);
        *x = f;
    } else {
        fpx_vecfile vf;
        if (fpx_vf_open(&vf, o->query, err, sizeof err) != 0)
            return fpx_cli_say(FPX_EXIT_INPUT, "%s", err);
        d = vf.d;
        if (vf.n > 100000 || vf.n < 1 || (bin && !fpx_vf_is_bytes(&vf))) {
            fpx_vf_close(&vf);
            return fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", o->query,
                               vf.n < 1        ? "no queries"
                               : vf.n > 100000 ? "more than 100000 queries"
                                               : "a binary index takes "
                                                 "uint8 queries");
        }
        size_t row = bin ? (size_t)d : (size_t)d * 4;
        *x = malloc((size_t)vf.n * row);
        int64_t got = 0;
        if (!*x || fpx_vf_read(&vf, vf.n, bin, *x, &got, err, sizeof err) != 0) {
            fpx_vf_close(&vf);
            free(*x);
            *x = NULL;
            return fpx_cli_say(FPX_EXIT_INPUT, "%s", *x ? err : "out of memory");
        }
        *nq = got;
        fpx_vf_close(&vf);
    }
    if (d != want_d) {
        free(*x);
        *x = NULL;
        return fpx_cli_say(FPX_EXIT_INPUT, "queries of dimension %lld%s, the index has %lld",
                           (long long)(bin ? d * 8 : d), bin ? " bits" : "",
                           (long long)(bin ? want_d * 8 : want_d));
    }
    return 0;
}

static int verb_search(fpx_cli *cli, fpx_opts *o) {
    int64_t k = o->k > 0 ? o->k : 10;
    fpx_index_info in;
    if (fpx_client_get_index_info(cli->c, o->pos[0], &in) != 0)
        return fpx_cli_client_fail(cli, "search");
    int bin = fpx_cli_is_binary(&in);
    void *x;
    int64_t nq;
    int rc = load_queries(o, bin, bin ? in.dimension / 8 : in.dimension, &x, &nq);
    if (rc)
        return rc;
    size_t m = (size_t)(nq * k);
    float *D = malloc(m * sizeof *D);
    int32_t *DB = malloc(m * sizeof *DB);
    int64_t *I = malloc(m * sizeof *I);
    fpx_hit *hits = NULL;
    if (!D || !DB || !I) {
        rc = fpx_cli_say(FPX_EXIT_INPUT, "out of memory for %zu results", m);
        goto out;
    }
    int r =
        bin ? fpx_client_search_binary(cli->c, o->pos[0], nq, in.dimension, x, k, DB, I)
            : fpx_client_search_ex(cli->c, o->pos[0], nq, in.dimension, x, k, NULL, D, I, &hits);
    if (r != 0) {
        rc = fpx_cli_client_fail(cli, "search");
        goto out;
    }
    json_t *all = o->json ? json_array() : NULL;
    if (!o->json)
        printf("%-6s %-5s %-12s %-24s %s\n", "query", "rank", "label", "key", "distance");
    for (int64_t q = 0; q < nq; q++) {
        json_t *res = o->json ? json_array() : NULL;
        for (int64_t j = 0; j < k; j++) {
            size_t i = (size_t)(q * k + j);
            if (I[i] < 0)
                continue;
            double dist = bin ? (double)DB[i] : (double)D[i];
            const char *key = hits && hits[i].key ? hits[i].key : NULL;
            if (!o->json) {
                printf("%-6lld %-5lld %-12lld %-24s %.9g\n", (long long)q, (long long)j + 1,
                       (long long)I[i], key ? key : "-", dist);
                continue;
            }
            json_t *h = json_pack("{s:I, s:I, s:f}", "rank", (json_int_t)j + 1, "label",
                                  (json_int_t)I[i], "distance", dist);
            json_object_set_new(h, "key", key ? json_string(key) : json_null());
            if (hits && hits[i].metadata) {
                msgpack_unpacked u;
                msgpack_unpacked_init(&u);
                size_t off = 0;
                if (msgpack_unpack_next(&u, (const char *)hits[i].metadata, hits[i].metadata_size,
                                        &off) == MSGPACK_UNPACK_SUCCESS)
                    json_object_set_new(h, "metadata", fpx_mp_to_json(&u.data));
                msgpack_unpacked_destroy(&u);
            }
            json_array_append_new(res, h);
        }
        if (o->json)
            json_array_append_new(all,
                                  json_pack("{s:I, s:o}", "query", (json_int_t)q, "results", res));
    }
    if (o->json)
        dump_json(all);
out:
    if (hits)
        fpx_hits_free(hits, m);
    free(D);
    free(DB);
    free(I);
    free(x);
    return rc;
}

static int verb_backup(fpx_cli *cli, fpx_opts *o) {
    return fpx_cli_backup(cli, o->pos[0]);
}

static int verb_restore(fpx_cli *cli, fpx_opts *o) {
    return fpx_cli_restore(cli, o->pos[0]);
}

/* ---- command line ---------------------------------------------------------- */

static const fpx_verb verbs[] = {
    {"ping", verb_ping, 0, "ping",
     "Asks the server for its version and limits; prints the round trip."},
    {"ls", verb_ls, 0, "ls", "Lists the tenant's indexes: name, type, metric, dimension, ntotal."},
    {"info", verb_info, 1, "info NAME", "Prints one index's type, metric, dimension, ntotal."},
    {"create", verb_create, 1, "create NAME --dim D [--type FACTORY] [--metric L2|IP]",
     "Creates an index (default type Flat, metric L2; any FAISS factory string,\n"
     "\"BFlat\"/\"BIVF<n>\"/\"BHNSW<M>\" for binary indexes with D in bits)."},
    {"import", fpx_cli_import, 1,
     "import FILE --index NAME [--create [--type FACTORY] [--metric L2|IP]]\n"
     "                   [--keys FILE.jsonl] [--resume] [--chunk N] [--window W] [--quiet]",
     "Adds the vectors of FILE (.npy float32/float64/uint8, .fvecs, .bvecs, .ivecs) in\n"
     "chunks of N (default 10000, at most 16 MiB each), W of them in flight at once\n"
     "(default 4). --create makes the index from\n"
     "the file's dimension when it does not exist; an untrained index is trained on the\n"
     "file's first vectors. --keys: one JSON object per vector,\n"
     "{\"id\": \"key\" or 7, \"metadata\": {...}} (or null). --resume continues an\n"
     "interrupted import into an index that was empty (docs/cli.md says when that is safe)."},
    {"search", verb_search, 1, "search NAME [--query FILE|-] [-k K] [--json]",
     "Searches the k (default 10) nearest neighbours of each query: from FILE (vector\n"
     "formats as for import) or standard input (whitespace-separated floats, one query\n"
     "per line). Prints query, rank, label, key, distance; --json for JSON."},
    {"export", verb_export, 2, "export NAME FILE",
     "Writes the index in FAISS's write_index format (faiss.read_index reads it)."},
    {"drop", verb_drop, 1, "drop NAME", "Deletes the index and everything stored for it."},
    {"stats", verb_stats, 0, "stats", "Server version and limits, index count, vectors per index."},
    {"backup", verb_backup, 1, "backup DIR",
     "Saves every index of the tenant into DIR (created; must be empty): one FAISS\n"
     "index file per index, keys and metadata as JSON Lines, and manifest.json."},
    {"restore", verb_restore, 1, "restore DIR",
     "Recreates every index of a backup; an index name that exists is refused before\n"
     "anything is restored."},
};
#define FPX_NVERBS (sizeof verbs / sizeof verbs[0])

static void usage(FILE *f) {
    fputs("usage: faiss-proxy [OPTIONS] VERB [ARGS]\n\nVerbs:\n", f);
    for (size_t i = 0; i < FPX_NVERBS; i++)
        fprintf(f, "  %s\n", verbs[i].synopsis);
    fputs("\nOptions (each overrides its environment variable):\n"
          "  --server tcp://HOST:PORT  FAISS_PROXY_SERVER (default " FPX_DEFAULT_SERVER ")\n"
          "  --api-key KEY             FAISS_PROXY_API_KEY (default: none)\n"
          "  --tenant T                FAISS_PROXY_TENANT (default: none)\n"
          "  --server-key KEY|FILE.pub FAISS_PROXY_SERVER_KEY (CurveZMQ server key)\n"
          "  --timeout-ms MS           reply timeout (default 60000)\n"
          "  --durability acked|synced FAISS_PROXY_DURABILITY (what writes wait for;\n"
          "                            default: the server's)\n"
          "  --json                    JSON output (ping, ls, info, create, search, stats)\n"
          "  -h, --help                this text; faiss-proxy VERB --help for one verb\n"
          "\nExit status: 0 ok, 1 the server refused (its error type is printed),\n"
          "2 usage error, 3 cannot reach the server, 4 bad input file.\n",
          f);
}

static const fpx_verb *find_verb(const char *name) {
    for (size_t i = 0; i < FPX_NVERBS; i++)
        if (!strcmp(verbs[i].name, name))
            return &verbs[i];
    return NULL;
}

static int parse_ll(const char *flag, const char *v, long long *out) {
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end)
        return fpx_cli_say(FPX_EXIT_USAGE, "%s: '%s' is not an integer", flag, v);
    *out = n;
    return 0;
}

static const char *const value_flags[] = {"--server", "--api-key",    "--tenant", "--server-key",
                                          "--type",   "--metric",     "--index",  "--keys",
                                          "--query",  "--timeout-ms", "--dim",    "-k",
                                          "--k",      "--chunk",      "--window", "--durability"};

static int parse_args(int argc, char **argv, fpx_opts *o, const fpx_verb **verb) {
    *verb = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        for (size_t f = 0; f < sizeof value_flags / sizeof *value_flags; f++)
            if (!strcmp(a, value_flags[f]) && !v)
                return fpx_cli_say(FPX_EXIT_USAGE, "%s needs a value", a);
        long long n;
#define FPX_FLAG(flag) (!strcmp(a, flag) && ++i)
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            o->help = 1;
        else if (!strcmp(a, "--json"))
            o->json = 1;
        else if (!strcmp(a, "--create"))
            o->create = 1;
        else if (!strcmp(a, "--resume"))
            o->resume = 1;
        else if (!strcmp(a, "--quiet") || !strcmp(a, "-q"))
            o->quiet = 1;
        else if (FPX_FLAG("--durability"))
            o->durability = v;
        else if (FPX_FLAG("--server"))
            o->server = v;
        else if (FPX_FLAG("--api-key"))
            o->api_key = v;
        else if (FPX_FLAG("--tenant"))
            o->tenant = v;
        else if (FPX_FLAG("--server-key"))
            o->server_key = v;
        else if (FPX_FLAG("--type"))
            o->type = v;
        else if (FPX_FLAG("--metric"))
            o->metric = v;
        else if (FPX_FLAG("--index"))
            o->index = v;
        else if (FPX_FLAG("--keys"))
            o->keys = v;
        else if (FPX_FLAG("--query"))
            o->query = v;
        else if (FPX_FLAG("--timeout-ms")) {
            if (parse_ll(a, v, &n))
                return FPX_EXIT_USAGE;
            o->timeout_ms = (long)n;
        } else if (FPX_FLAG("--dim")) {
            if (parse_ll(a, v, &o->dim))
                return FPX_EXIT_USAGE;
        } else if (FPX_FLAG("-k") || FPX_FLAG("--k")) {
            if (parse_ll(a, v, &o->k) || o->k < 1)
                return fpx_cli_say(FPX_EXIT_USAGE, "-k must be an integer >= 1");
        } else if (FPX_FLAG("--window")) {
            if (parse_ll(a, v, &o->window) || o->window < 1 || o->window > FPX_WINDOW_MAX)
                return fpx_cli_say(FPX_EXIT_USAGE, "--window must be an integer from 1 to %d",
                                   FPX_WINDOW_MAX);
        } else if (FPX_FLAG("--chunk")) {
            if (parse_ll(a, v, &o->chunk) || o->chunk < 1)
                return fpx_cli_say(FPX_EXIT_USAGE, "--chunk must be an integer >= 1");
        } else if (a[0] == '-' && a[1]) {
            return fpx_cli_say(FPX_EXIT_USAGE, "unknown option %s (faiss-proxy --help)", a);
        } else if (!*verb) {
            if (!(*verb = find_verb(a)))
                return fpx_cli_say(FPX_EXIT_USAGE, "unknown verb '%s' (faiss-proxy --help)", a);
        } else if (o->npos < 4) {
            o->pos[o->npos++] = a;
        } else {
            return fpx_cli_say(FPX_EXIT_USAGE, "too many arguments");
        }
#undef FPX_FLAG
    }
    return 0;
}

int main(int argc, char **argv) {
    fpx_opts o;
    memset(&o, 0, sizeof o);
    o.server = getenv("FAISS_PROXY_SERVER");
    o.api_key = getenv("FAISS_PROXY_API_KEY");
    o.tenant = getenv("FAISS_PROXY_TENANT");
    o.server_key = getenv("FAISS_PROXY_SERVER_KEY");
    o.durability = getenv("FAISS_PROXY_DURABILITY");
    o.timeout_ms = 60000;
    const fpx_verb *verb;
    int rc = parse_args(argc, argv, &o, &verb);
    if (rc)
        return rc;
    if (o.help) {
        if (verb)
            printf("usage: faiss-proxy [OPTIONS] %s\n\n%s\n\nOptions: faiss-proxy --help.\n",
                   verb->synopsis, verb->help);
        else
            usage(stdout);
        return 0;
    }
    if (!verb) {
        usage(stderr);
        return FPX_EXIT_USAGE;
    }
    if (o.npos != verb->nargs)
        return fpx_cli_say(FPX_EXIT_USAGE, "usage: faiss-proxy %s", verb->synopsis);
    if (!o.server || !*o.server)
        o.server = FPX_DEFAULT_SERVER;
    if (o.api_key && !*o.api_key)
        o.api_key = NULL;
    if (o.tenant && !*o.tenant)
        o.tenant = NULL;
    if (o.durability && !*o.durability)
        o.durability = NULL;
    if (o.durability && strcmp(o.durability, "acked") && strcmp(o.durability, "synced"))
        return fpx_cli_say(FPX_EXIT_USAGE, "--durability must be acked or synced, got '%s'",
                           o.durability);
    fpx_cli cli;
    memset(&cli, 0, sizeof cli);
    cli.api_key = o.api_key;
    cli.tenant = o.tenant;
    cli.durability = o.durability;
    cli.c = fpx_client_new(o.server, o.api_key, o.tenant);
    if (!cli.c)
        return fpx_cli_say(FPX_EXIT_USAGE, "cannot use server address '%s'", o.server);
    fpx_client_set_timeout(cli.c, (int)o.timeout_ms);
    fpx_client_set_durability(cli.c, o.durability); /* checked above */
    if (o.server_key && fpx_client_set_server_key(cli.c, o.server_key) != 0) {
        rc = fpx_cli_say(FPX_EXIT_USAGE, "--server-key: %s", fpx_client_errstr(cli.c));
        fpx_client_free(cli.c);
        return rc;
    }
    rc = verb->run(&cli, &o);
    fpx_client_free(cli.c);
    return rc;
}
