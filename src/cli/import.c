/*
 * import.c - `faiss-proxy import FILE --index NAME`: a vector file (vecfile.c)
 * and its keys file streamed to the server as a window of add requests in
 * flight, each row sent with its row number as label, so that the network,
 * the server's log and FAISS work at the same time, memory stays flat, and an
 * interrupted load resumes where it stopped (docs/cli.md).
 */
#include "cli.h"
#include "vecfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FPX_CHUNK_BYTES (16u << 20) /* largest vector section one add request carries */
#define FPX_TRAIN_MAX 65536         /* vectors an import trains an untrained index on */
#define FPX_WINDOW_DEFAULT 4        /* import chunks in flight at once */

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
    double t = fpx_cli_now_s();
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

int fpx_cli_import(fpx_cli *cli, fpx_opts *o) {
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
    int bin = fpx_cli_is_binary(&in);
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
    fpx_progress pg = {isatty(2), o->quiet, fpx_cli_now_s(), 0, vf.n, start, -1};
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
                    (long long)(done - start), o->index, (long long)ntotal,
                    fpx_cli_now_s() - pg.start);
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
