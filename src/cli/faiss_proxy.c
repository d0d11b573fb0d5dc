/*
 * faiss_proxy.c - faiss-proxy, the operator's command-line client.
 *
 * One verb per run (ping, ls, info, create, import, search, export, drop,
 * stats, backup, restore) over one libfaissproxy connection. The point of
 * the tool is loading data sets without writing a program: `import` streams
 * a vector file (vecfile.c) to the server in chunks, so memory stays flat,
 * and can resume an interrupted load. Exit statuses are stable (cli.h,
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
#define FPX_CHUNK_BYTES (16u << 20) /* largest vector section one add request carries */
#define FPX_TRAIN_MAX 65536         /* vectors an import trains an untrained index on */
#define FPX_WINDOW_DEFAULT 4        /* import chunks in flight at once */
#define FPX_WINDOW_MAX 64

typedef struct fpx_opts {
    const char *server, *api_key, *tenant, *server_key;
    long timeout_ms;
    int json, help, create, resume, quiet;
    const char *type, *metric, *index, *keys, *query;
    long long dim, k, chunk, window;
    const char *pos[4];
    int npos;
} fpx_opts;

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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int is_binary(const fpx_index_info *in) {
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
    double t0 = now_s();
    if (raw_ping(cli, &p) != 0)
        return fpx_cli_raw_fail(cli, "ping");
    double ms = (now_s() - t0) * 1e3;
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

/* ---- import ---------------------------------------------------------------- */

/* One entry of the keys file: {"id": str|int, "metadata": map|null} or
 * null; *entry is what the add request carries (NULL for none). */
static int parse_key_line(const char *line, size_t lineno, const char *path, json_t **entry) {
    json_error_t je;
    *entry = NULL;
    json_t *j = json_loads(line, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s line %zu: %s", path, lineno, je.text);
    int rc = FPX_EXIT_INPUT;
    if (json_is_null(j)) {
        rc = 0;
        goto out;
    }
    if (!json_is_object(j)) {
        fpx_cli_say(rc, "%s line %zu: not a JSON object", path, lineno);
        goto out;
    }
    json_t *id = json_object_get(j, "id"), *md = json_object_get(j, "metadata");
    if (id && !json_is_string(id) && !json_is_integer(id) && !json_is_null(id)) {
        fpx_cli_say(rc, "%s line %zu: \"id\" must be a string or an integer", path, lineno);
        goto out;
    }
    if (id && json_is_string(id) && (json_string_length(id) < 1 || json_string_length(id) > 1024)) {
        fpx_cli_say(rc, "%s line %zu: \"id\" must be 1..1024 bytes", path, lineno);
        goto out;
    }
    if (md && !json_is_object(md) && !json_is_null(md)) {
        fpx_cli_say(rc, "%s line %zu: \"metadata\" must be an object", path, lineno);
        goto out;
    }
    json_t *e = json_object();
    if (id && !json_is_null(id))
        json_object_set(e, "id", id);
    if (md && !json_is_null(md))
        json_object_set(e, "metadata", md);
    *entry = e;
    rc = 0;
out:
    json_decref(j);
    return rc;
}

/* Checks every line of the keys file and counts them, before anything is sent. */
static int check_keys_file(FILE *f, const char *path, int64_t *count) {
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    int64_t n = 0;
    int rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        json_t *e;
        if ((rc = parse_key_line(line, lineno, path, &e)) != 0)
            break;
        json_decref(e);
        n++;
    }
    free(line);
    rewind(f);
    *count = n;
    return rc;
}

typedef struct fpx_progress {
    int tty, quiet;
    double start, last;
    int64_t total, base, shown;
} fpx_progress;

static void progress(fpx_progress *p, int64_t done, int final) {
    if (p->quiet)
        return;
    double t = now_s();
    if ((!final && t - p->last < (p->tty ? 0.2 : 2.0)) || (final && !p->tty && done == p->shown))
        return;
    p->shown = done;
    p->last = t;
    double rate = (double)(done - p->base) / (t - p->start > 1e-6 ? t - p->start : 1e-6);
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    double pct = p->total ? 100.0 * (double)done / (double)p->total : 100.0;
    int width = 30, fill = (int)(pct / 100.0 * width);
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    long e = (long)eta;
    if (p->tty)
        fprintf(stderr, "\r[%s] %lld/%lld vectors %5.1f%% %.0f vec/s ETA %ld:%02ld:%02ld%s", bar,
                (long long)done, (long long)p->total, pct, rate, e / 3600, e / 60 % 60, e % 60,
                final ? "\n" : "");
    else
        fprintf(stderr, "import: %lld/%lld vectors (%.1f%%), %.0f vec/s, ETA %ld s\n",
                (long long)done, (long long)p->total, pct, rate, e);
    fflush(stderr);
}

static int looks_binary_type(const char *t) {
    return t && (t[0] == 'B' || !strncmp(t, "IndexBinary", 11));
}

/* Trains an untrained index on the file's first vectors (at most
 * FPX_TRAIN_MAX, at most 64 MiB), then goes back to where the file was. */
static int train_from(fpx_cli *cli, const char *name, fpx_vecfile *vf, int bin, int64_t row_bytes) {
    int64_t n = vf->n < FPX_TRAIN_MAX ? vf->n : FPX_TRAIN_MAX;
    if ((uint64_t)n * (uint64_t)row_bytes > (64u << 20))
        n = (int64_t)((64u << 20) / (uint64_t)row_bytes);
    if (n < 1)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: no vectors to train the index on", vf->path);
    void *x = malloc((size_t)(n * row_bytes));
    if (!x)
        return fpx_cli_say(FPX_EXIT_INPUT, "out of memory for %lld training vectors", (long long)n);
    char err[512];
    int64_t got = 0, pos = vf->next;
    int rc = 0;
    if (fpx_vf_seek(vf, 0, err, sizeof err) != 0 ||
        fpx_vf_read(vf, n, bin, x, &got, err, sizeof err) != 0 ||
        fpx_vf_seek(vf, pos, err, sizeof err) != 0)
        rc = fpx_cli_say(FPX_EXIT_INPUT, "%s", err);
    if (!rc) {
        int r = bin ? fpx_client_train_binary(cli->c, name, got, vf->d * 8, x)
                    : fpx_client_train(cli->c, name, got, vf->d, (const float *)x);
        if (r != 0)
            rc = fpx_cli_client_fail(cli, "train");
    }
    free(x);
    return rc;
}

/* Reads the next n entries of the keys file (already checked). */
static int read_keys(FILE *f, const char *path, size_t *lineno, int64_t n, json_t **out) {
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (int64_t i = 0; i < n; i++) {
        out[i] = NULL;
        if (getline(&line, &cap, f) < 0) {
            rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: ends at line %zu (it changed while read?)", path,
                             *lineno);
            break;
        }
        (*lineno)++;
        if ((rc = parse_key_line(line, *lineno, path, &out[i])) != 0)
            break;
    }
    free(line);
    return rc;
}

static void free_keys(json_t **k, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        json_decref(k[i]);
        k[i] = NULL;
    }
}

/* ---- import: chunks pipelined ------------------------------------------------ */

/* One chunk of an import in flight: its rows of FILE, and how it ended. */
typedef struct chunk_slot {
    int64_t from, n;
    int state; /* 1 sent, 2 added, 3 failed */
    int64_t ntotal;
} chunk_slot;

/* Sends rows [from, from+n) as one add_vectors with request_id `id`, without
 * waiting: float or (bin) uint8 rows of d columns, labels (may be NULL) and
 * keys (may be NULL). */
static int post_chunk(fpx_cli *cli, const char *index, int64_t id, int64_t n, int64_t d, int bin,
                      const void *x, const int64_t *labels, json_t *const *keys) {
    fpx_rawreq rq;
    fpx_rawreq_begin(cli, &rq, "add_vectors", index, 2 + (labels != NULL) + bin);
    fpx_mp_pack_str(&rq.hp, "request_id");
    msgpack_pack_int64(&rq.hp, id);
    fpx_mp_pack_str(&rq.hp, "vector_shape");
    msgpack_pack_array(&rq.hp, 2);
    msgpack_pack_int64(&rq.hp, n);
    msgpack_pack_int64(&rq.hp, d);
    if (bin) {
        fpx_mp_pack_str(&rq.hp, "dtype");
        fpx_mp_pack_str(&rq.hp, "uint8");
    }
    if (labels) {
        fpx_mp_pack_str(&rq.hp, "with_ids");
        msgpack_pack_true(&rq.hp);
    }
    if (keys) {
        msgpack_pack_array(&rq.mp, (size_t)n);
        for (int64_t i = 0; i < n; i++)
            fpx_json_to_mp(&rq.mp, keys[i] ? keys[i] : json_null());
    }
    size_t xb = (size_t)n * (size_t)d * (bin ? 1 : sizeof(float));
    int rc = fpx_rawreq_post(cli, &rq, x, xb, labels, labels ? (size_t)n * sizeof(int64_t) : 0,
                             keys != NULL);
    fpx_rawreq_free(&rq);
    return rc;
}

/* Where a resumed import starts: the index holds `ntotal` of FILE's rows,
 * as labels 0.. (the rows' own numbers). Chunks are added whole and in
 * order, but after a refused chunk up to window-1 later ones in flight may
 * have been added: the first missing row is at most that many chunks before
 * ntotal. Starting there re-sends some rows the index holds, which replaces
 * them with themselves (same label, same vector, same key). */
static int64_t resume_point(int64_t ntotal, int64_t chunk, int window) {
    int64_t c = ntotal / chunk - (window - 1);
    return c > 0 ? c * chunk : 0;
}

static int verb_import(fpx_cli *cli, fpx_opts *o) {
    if (!o->index)
        return fpx_cli_say(FPX_EXIT_USAGE, "import needs --index NAME");
    char err[1024];
    fpx_vecfile vf;
    if (fpx_vf_open(&vf, o->pos[0], err, sizeof err) != 0)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s", err);
    FILE *kf = NULL;
    json_t **keys = NULL;
    void *x = NULL;
    int64_t *labels = NULL;
    chunk_slot *slots = NULL;
    int rc = 0;
    size_t lineno = 0;
    if (o->keys) {
        int64_t nk;
        if (!(kf = fopen(o->keys, "r"))) {
            rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", o->keys, strerror(errno));
            goto out;
        }
        if ((rc = check_keys_file(kf, o->keys, &nk)) != 0)
            goto out;
        if (nk != vf.n) {
            rc = fpx_cli_say(FPX_EXIT_INPUT, "%s has %lld lines, %s has %lld vectors", o->keys,
                             (long long)nk, vf.path, (long long)vf.n);
            goto out;
        }
    }

    /* the index: found, or created from the file's dimension */
    fpx_index_info in;
    if (fpx_client_get_index_info(cli->c, o->index, &in) != 0) {
        if (strcmp(fpx_client_errtype(cli->c), "not_found") != 0 || !o->create) {
            rc = fpx_cli_client_fail(cli, "import");
            goto out;
        }
        const char *type = o->type ? o->type : "Flat";
        int64_t dim = looks_binary_type(type) ? vf.d * 8 : vf.d;
        if (fpx_client_create_index(cli->c, o->index, dim, type, o->metric, &in) != 0) {
            rc = fpx_cli_client_fail(cli, "create");
            goto out;
        }
    } else if (o->create && !o->resume) {
        rc = fpx_cli_fail_with("import", "already_exists",
                               "the index exists: drop it, leave out --create, or add --resume");
        goto out;
    }
    int bin = is_binary(&in);
    int64_t want = bin ? in.dimension / 8 : in.dimension;
    if (bin && !fpx_vf_is_bytes(&vf)) {
        rc = fpx_cli_say(FPX_EXIT_INPUT,
                         "%s: %s is a binary index: it takes uint8 vectors (.bvecs "
                         "or a uint8 .npy)",
                         vf.path, o->index);
        goto out;
    }
    if (!bin && vf.kind == FPX_VF_NPY && fpx_vf_is_bytes(&vf)) {
        rc = fpx_cli_say(FPX_EXIT_INPUT,
                         "%s: .npy dtype uint8 is for binary indexes; %s takes "
                         "float32 or float64",
                         vf.path, o->index);
        goto out;
    }
    if (want != vf.d) {
        rc = fpx_cli_say(FPX_EXIT_INPUT,
                         "%s: vectors of dimension %lld%s, index %s has dimension "
                         "%lld: nothing imported",
                         vf.path, (long long)(bin ? vf.d * 8 : vf.d), bin ? " bits" : "", o->index,
                         (long long)in.dimension);
        goto out;
    }
    if (bin && o->keys) {
        rc = fpx_cli_say(FPX_EXIT_USAGE, "--keys is not supported for binary indexes");
        goto out;
    }
    int64_t start = 0;
    int64_t row_bytes = bin ? vf.d : vf.d * 4;
    int64_t chunk = o->chunk > 0 ? o->chunk : 10000;
    if ((uint64_t)chunk * (uint64_t)row_bytes > FPX_CHUNK_BYTES)
        chunk = (int64_t)(FPX_CHUNK_BYTES / (uint64_t)row_bytes);
    if (chunk < 1)
        chunk = 1;
    int window = o->window > 0 ? (int)o->window : FPX_WINDOW_DEFAULT;
    /* Rows carry their own numbers as labels when the index starts empty
     * (the labels FAISS's add would give them), so a resumed import can
     * send a row again and it replaces itself. Into an index that holds
     * other vectors, rows get the index's next labels, in order. */
    int numbered = o->resume || in.ntotal == 0;
    if (o->resume) {
        if (in.ntotal > vf.n) {
            rc = fpx_cli_say(FPX_EXIT_INPUT, "cannot resume: %s holds %lld vectors, %s only %lld",
                             o->index, (long long)in.ntotal, vf.path, (long long)vf.n);
            goto out;
        }
        start = resume_point(in.ntotal, chunk, window);
        if ((rc = fpx_vf_seek(&vf, start, err, sizeof err)) != 0) {
            rc = fpx_cli_say(FPX_EXIT_INPUT, "%s", err);
            goto out;
        }
        if (kf) {
            char *line = NULL;
            size_t cap = 0;
            for (; (int64_t)lineno < start && getline(&line, &cap, kf) >= 0; lineno++)
                ;
            free(line);
        }
    }
    if (!in.is_trained && start < vf.n && (rc = train_from(cli, o->index, &vf, bin, row_bytes)))
        goto out;
    x = malloc((size_t)(chunk * row_bytes));
    labels = numbered ? malloc((size_t)chunk * sizeof *labels) : NULL;
    slots = calloc((size_t)window, sizeof *slots);
    keys = kf ? calloc((size_t)chunk, sizeof *keys) : NULL;
    if (!x || (numbered && !labels) || !slots || (kf && !keys)) {
        rc = fpx_cli_say(FPX_EXIT_INPUT, "out of memory");
        goto out;
    }
    fpx_progress pg = {isatty(2), o->quiet, now_s(), 0, vf.n, start, -1};
    int64_t done = start, ntotal = in.ntotal;
    if (o->resume && !o->quiet)
        fprintf(stderr,
                "import: %s holds %lld of the %lld vectors; resuming at vector %lld (the "
                "vectors from there on are sent again, and replace themselves where present)\n",
                o->index, (long long)in.ntotal, (long long)vf.n, (long long)start);
    /* Up to `window` chunks in flight: the file is read and the next chunk
     * sent while the server logs and adds the previous ones. Replies are
     * taken as they come and counted in the order the chunks were sent. */
    int first = 0, inflight = 0, stop = 0, eof = 0, read_failed = 0;
    int64_t sent = start, failed_at = -1, lost_at = -1;
    char why_type[64] = "", why[1024] = "";
    while (inflight > 0 || (!stop && !eof)) {
        while (!stop && !eof && inflight < window) {
            int64_t got;
            if (fpx_vf_read(&vf, chunk, bin, x, &got, err, sizeof err) != 0) {
                read_failed = stop = 1; /* said once the chunks in flight are answered */
                break;
            }
            if (!got) {
                eof = 1;
                break;
            }
            if (kf && (rc = read_keys(kf, o->keys, &lineno, got, keys)) != 0) {
                stop = 1;
                break;
            }
            for (int64_t i = 0; labels && i < got; i++)
                labels[i] = sent + i;
            chunk_slot *sl = &slots[(first + inflight) % window];
            int64_t id = sent / chunk; /* the chunk's number in the file */
            int r = post_chunk(cli, o->index, id, got, vf.d, bin, x, labels, kf ? keys : NULL);
            if (kf)
                free_keys(keys, got);
            if (r != 0) {
                snprintf(why_type, sizeof why_type, "%s", cli->errtype);
                snprintf(why, sizeof why, "%s", cli->errstr);
                failed_at = sent;
                stop = 1;
                break;
            }
            *sl = (chunk_slot){sent, got, 1, -1};
            inflight++;
            sent += got;
        }
        if (inflight == 0)
            break;
        fpx_rawrep rp;
        int r = fpx_rawrep_next(cli, &rp);
        if (r == -2) { /* no reply: what is in flight is unknown */
            snprintf(why_type, sizeof why_type, "%s", cli->errtype);
            snprintf(why, sizeof why, "%s", cli->errstr);
            lost_at = slots[first].from;
            stop = 1;
            fpx_rawrep_free(&rp);
            break;
        }
        const msgpack_object *ro = rp.header ? fpx_mp_get(rp.header, "request_id") : NULL;
        for (int i = 0; ro && ro->type == MSGPACK_OBJECT_POSITIVE_INTEGER && i < inflight; i++) {
            chunk_slot *sl = &slots[(first + i) % window];
            if (sl->state != 1 || (uint64_t)(sl->from / chunk) != ro->via.u64)
                continue;
            sl->state = r == 0 ? 2 : 3;
            if (r == 0) {
                const msgpack_object *nt = fpx_mp_get(rp.meta, "ntotal");
                sl->ntotal =
                    nt && nt->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)nt->via.u64 : -1;
            } else if (failed_at < 0 || sl->from < failed_at) {
                snprintf(why_type, sizeof why_type, "%s", cli->errtype);
                snprintf(why, sizeof why, "%s", cli->errstr);
                failed_at = sl->from;
                stop = 1;
            }
        }
        fpx_rawrep_free(&rp);
        while (inflight > 0 && slots[first].state != 1) {
            chunk_slot *sl = &slots[first];
            if (sl->state == 2 && (failed_at < 0 || sl->from < failed_at)) {
                done = sl->from + sl->n;
                ntotal = sl->ntotal;
                progress(&pg, done, 0);
            }
            first = (first + 1) % window;
            inflight--;
        }
    }
    if (!rc && (failed_at >= 0 || lost_at >= 0)) {
        char what[200];
        snprintf(what, sizeof what,
                 "import stopped at vector %lld: the vectors before it were added (resume "
                 "with --resume)",
                 (long long)done);
        rc = fpx_cli_fail_with(what, why_type, why);
    } else if (!rc && read_failed) {
        rc = fpx_cli_say(FPX_EXIT_INPUT, "%s; %lld vectors were imported before it", err,
                         (long long)(done - start));
    }
    if (!rc) {
        progress(&pg, done, 1);
        if (!o->quiet)
            fprintf(stderr, "import: %lld vectors into %s (ntotal %lld) in %.1f s\n",
                    (long long)(done - start), o->index, (long long)ntotal, now_s() - pg.start);
    }
out:
    free(keys);
    free(x);
    free(labels);
    free(slots);
    if (kf)
        fclose(kf);
    fpx_vf_close(&vf);
    return rc;
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
    int bin = is_binary(&in);
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
    {"import", verb_import, 1,
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
                                          "--k",      "--chunk",      "--window"};

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
    fpx_cli cli;
    memset(&cli, 0, sizeof cli);
    cli.api_key = o.api_key;
    cli.tenant = o.tenant;
    cli.c = fpx_client_new(o.server, o.api_key, o.tenant);
    if (!cli.c)
        return fpx_cli_say(FPX_EXIT_USAGE, "cannot use server address '%s'", o.server);
    fpx_client_set_timeout(cli.c, (int)o.timeout_ms);
    if (o.server_key && fpx_client_set_server_key(cli.c, o.server_key) != 0) {
        rc = fpx_cli_say(FPX_EXIT_USAGE, "--server-key: %s", fpx_client_errstr(cli.c));
        fpx_client_free(cli.c);
        return rc;
    }
    rc = verb->run(&cli, &o);
    fpx_client_free(cli.c);
    return rc;
}
