/*
 * backup.c - `faiss-proxy backup DIR` and `restore DIR`: a whole tenant.
 *
 * A backup is a directory (docs/cli.md has the format): manifest.json lists
 * each index's info map (type, metric, dimension, ntotal, ...) and its files;
 * NAME.index holds FAISS write_index bytes from export_index (labels
 * included), and NAME.keys.jsonl, when the index has caller keys or
 * metadata, one {"label", "id", "metadata"} line per such vector.
 *
 * The wire has no call that lists keys, so the backup asks one search of
 * k = ntotal with include_metadata: the server returns k hits whenever k
 * vectors are live, every hit with its key and metadata. Restore imports the
 * bytes (so training, labels and the vectors' codes come back as they were)
 * and then re-adds each keyed vector under its own label with its key and
 * metadata: a label the index holds is replaced, which attaches the key.
 */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FPX_BACKUP_FORMAT "faiss-proxy-backup"
#define FPX_BACKUP_VERSION 1
#define FPX_KEYS_MAX 100000 /* the server's largest k: the most keyed vectors listed */
#define FPX_RESTORE_CHUNK 1000

static char *path_join(const char *dir, const char *name, const char *suffix) {
    size_t n = strlen(dir) + strlen(name) + strlen(suffix) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s%s", dir, name, suffix);
    return p;
}

static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", path, strerror(errno));
    int bad = fwrite(data, 1, len, f) != len || fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (fclose(f) != 0 || bad)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", path, strerror(errno));
    return 0;
}

static int read_file(const char *path, uint8_t **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: not a regular file", path);
    }
    *len = (size_t)st.st_size;
    *out = malloc(*len ? *len : 1);
    if (!*out || fread(*out, 1, *len, f) != *len) {
        fclose(f);
        free(*out);
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: cannot read %zu bytes", path, *len);
    }
    fclose(f);
    return 0;
}

/* DIR must be new or empty: a backup never mixes with older files. */
static int prepare_dir(const char *dir) {
    if (mkdir(dir, 0755) == 0)
        return 0;
    if (errno != EEXIST)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", dir, strerror(errno));
    DIR *d = opendir(dir);
    if (!d)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = 0;
    closedir(d);
    return empty ? 0 : fpx_cli_say(FPX_EXIT_INPUT, "%s is not empty", dir);
}

/* The tenant's info maps, as JSON (list_indexes with every field). */
static int list_infos(fpx_cli *cli, json_t **out) {
    fpx_rawreq rq;
    fpx_rawreq_begin(cli, &rq, "list_indexes", NULL, 0);
    fpx_rawrep rep;
    int rc = fpx_rawreq_send(cli, &rq, NULL, 0, NULL, 0, 0, &rep);
    fpx_rawreq_free(&rq);
    if (rc != 0)
        return fpx_cli_raw_fail(cli, "list indexes");
    const msgpack_object *ix = fpx_mp_get(rep.meta, "indexes");
    *out = ix && ix->type == MSGPACK_OBJECT_ARRAY ? fpx_mp_to_json(ix) : json_array();
    fpx_rawrep_free(&rep);
    return 0;
}

/* Writes NAME.keys.jsonl from one search of k = ntotal; *written says
 * whether any vector had a key or metadata (else no file is kept). */
static int save_keys(fpx_cli *cli, const char *name, const char *type, int64_t d, int64_t ntotal,
                     const char *path, int *written) {
    *written = 0;
    float *q = calloc((size_t)d, sizeof *q);
    if (!q)
        return fpx_cli_say(FPX_EXIT_INPUT, "out of memory");
    fpx_rawreq rq;
    /* an approximate index visits everything: all IVF lists (FAISS caps nprobe
     * at nlist), an HNSW candidate list as long as the index */
    int ivf = strstr(type, "IVF") != NULL, hnsw = strstr(type, "HNSW") != NULL;
    fpx_rawreq_begin(cli, &rq, "search", name, 3 + (ivf || hnsw));
    if (ivf || hnsw) {
        fpx_mp_pack_str(&rq.hp, "params");
        msgpack_pack_map(&rq.hp, (uint32_t)(ivf + hnsw));
        if (ivf) {
            fpx_mp_pack_str(&rq.hp, "nprobe");
            msgpack_pack_int64(&rq.hp, 1048576);
        }
        if (hnsw) {
            fpx_mp_pack_str(&rq.hp, "efSearch");
            msgpack_pack_int64(&rq.hp, ntotal < 1048576 ? (ntotal > 16 ? ntotal : 16) : 1048576);
        }
    }
    fpx_mp_pack_str(&rq.hp, "k");
    msgpack_pack_int64(&rq.hp, ntotal);
    fpx_mp_pack_str(&rq.hp, "vector_shape");
    msgpack_pack_array(&rq.hp, 2);
    msgpack_pack_int64(&rq.hp, 1);
    msgpack_pack_int64(&rq.hp, d);
    fpx_mp_pack_str(&rq.hp, "include_metadata");
    msgpack_pack_true(&rq.hp);
    fpx_rawrep rep;
    int rc = fpx_rawreq_send(cli, &rq, q, (size_t)d * sizeof *q, NULL, 0, 0, &rep);
    fpx_rawreq_free(&rq);
    free(q);
    if (rc != 0)
        return fpx_cli_raw_fail(cli, "backup: listing keys");
    size_t k = (size_t)ntotal;
    const msgpack_object *rows = rep.meta;
    const msgpack_object *row =
        rows && rows->type == MSGPACK_OBJECT_ARRAY && rows->via.array.size == 1
            ? &rows->via.array.ptr[0]
            : NULL;
    if (rep.data_len != k * 12 || !row || row->type != MSGPACK_OBJECT_ARRAY ||
        row->via.array.size != k) {
        fpx_rawrep_free(&rep);
        return fpx_cli_say(FPX_EXIT_SERVER,
                           "backup: %s: the server's reply does not list every "
                           "vector's key",
                           name);
    }
    const uint8_t *labels = rep.data + k * 4;
    FILE *f = fopen(path, "w");
    if (!f) {
        fpx_rawrep_free(&rep);
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", path, strerror(errno));
    }
    int64_t seen = 0;
    for (size_t i = 0; i < k; i++) {
        int64_t label;
        memcpy(&label, labels + i * 8, 8);
        const msgpack_object *e = &row->via.array.ptr[i];
        if (label < 0 || e->type != MSGPACK_OBJECT_MAP)
            continue;
        seen++;
        const msgpack_object *id = fpx_mp_get(e, "id");
        const msgpack_object *md = fpx_mp_get(e, "metadata");
        /* a vector without a key is reported with its label as id */
        int keyless = !id || id->type == MSGPACK_OBJECT_NIL ||
                      (id->type == MSGPACK_OBJECT_POSITIVE_INTEGER && label >= 0 &&
                       id->via.u64 == (uint64_t)label);
        int nomd = !md || md->type == MSGPACK_OBJECT_NIL;
        if (keyless && nomd)
            continue;
        json_t *line = json_pack("{s:I}", "label", (json_int_t)label);
        if (!keyless)
            json_object_set_new(line, "id", fpx_mp_to_json(id));
        if (!nomd)
            json_object_set_new(line, "metadata", fpx_mp_to_json(md));
        if (json_dumpf(line, f, JSON_COMPACT) != 0 || fputc('\n', f) == EOF)
            rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: cannot write", path);
        json_decref(line);
        *written = 1;
        if (rc)
            break;
    }
    fpx_rawrep_free(&rep);
    if ((fflush(f) != 0 || fsync(fileno(f)) != 0) && !rc)
        rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", path, strerror(errno));
    fclose(f);
    if (!rc && seen != ntotal)
        rc = fpx_cli_say(FPX_EXIT_SERVER,
                         "backup: %s: the search listed %lld of its %lld vectors' keys", name,
                         (long long)seen, (long long)ntotal);
    return rc;
}

int fpx_cli_backup(fpx_cli *cli, const char *dir) {
    json_t *infos;
    int rc = list_infos(cli, &infos);
    if (rc)
        return rc;
    if ((rc = prepare_dir(dir)) != 0) {
        json_decref(infos);
        return rc;
    }
    json_t *list = json_array();
    size_t i;
    json_t *info;
    json_array_foreach(infos, i, info) {
        const char *name = json_string_value(json_object_get(info, "index_id"));
        const char *metric = json_string_value(json_object_get(info, "metric"));
        int64_t d = json_integer_value(json_object_get(info, "dimension"));
        int64_t ntotal = json_integer_value(json_object_get(info, "ntotal"));
        int has_keys = json_is_true(json_object_get(info, "has_keys"));
        if (!name || !metric) {
            rc = fpx_cli_say(FPX_EXIT_SERVER, "backup: the server's index list is malformed");
            break;
        }
        uint8_t *bytes;
        size_t len;
        if (fpx_client_export(cli->c, name, &bytes, &len) != 0) {
            rc = fpx_cli_client_fail(cli, name);
            break;
        }
        char *ipath = path_join(dir, name, ".index");
        char *kpath = path_join(dir, name, ".keys.jsonl");
        rc = ipath && kpath ? write_file(ipath, bytes, len) : FPX_EXIT_INPUT;
        free(bytes);
        int keys_written = 0;
        if (!rc && ntotal > 0 && strcmp(metric, "Hamming") != 0) {
            if (ntotal <= FPX_KEYS_MAX)
                rc = save_keys(cli, name, fpx_str_or(json_object_get(info, "index_type"), ""), d,
                               ntotal, kpath, &keys_written);
            else if (has_keys)
                rc = fpx_cli_say(FPX_EXIT_SERVER,
                                 "backup: %s has caller keys and %lld vectors: "
                                 "a backup lists the keys of at most %d",
                                 name, (long long)ntotal, FPX_KEYS_MAX);
            if (!rc && !keys_written)
                unlink(kpath);
        }
        if (!rc) {
            json_t *e = json_deep_copy(info);
            char file[160];
            snprintf(file, sizeof file, "%s.index", name);
            json_object_set_new(e, "file", json_string(file));
            snprintf(file, sizeof file, "%s.keys.jsonl", name);
            json_object_set_new(e, "keys", keys_written ? json_string(file) : json_null());
            json_object_del(e, "lease_remaining");
            json_array_append_new(list, e);
            fprintf(stderr, "backup: %s (%lld vectors%s)\n", name, (long long)ntotal,
                    keys_written ? ", keys/metadata" : "");
        }
        free(ipath);
        free(kpath);
        if (rc)
            break;
    }
    if (!rc) {
        json_t *m = json_pack("{s:s, s:i, s:o}", "format", FPX_BACKUP_FORMAT, "version",
                              FPX_BACKUP_VERSION, "indexes", list);
        list = NULL;
        char *text = json_dumps(m, JSON_INDENT(2));
        char *mpath = path_join(dir, "manifest", ".json");
        rc = text && mpath ? write_file(mpath, text, strlen(text)) : FPX_EXIT_INPUT;
        free(text);
        free(mpath);
        json_decref(m);
        if (!rc)
            printf("backed up %zu indexes to %s\n", json_array_size(infos), dir);
    }
    json_decref(list);
    json_decref(infos);
    return rc;
}

/* Re-adds the keyed vectors of one index under their labels, with keys. */
static int restore_keys(fpx_cli *cli, const char *name, int64_t d, const char *type,
                        const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", path, strerror(errno));
    float *x = malloc((size_t)FPX_RESTORE_CHUNK * (size_t)d * sizeof *x);
    int64_t *labels = malloc(FPX_RESTORE_CHUNK * sizeof *labels);
    json_t **ids = calloc(FPX_RESTORE_CHUNK, sizeof *ids);
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    int rc = 0, n = 0, direct_map = 0;
    if (!x || !labels || !ids)
        rc = fpx_cli_say(FPX_EXIT_INPUT, "out of memory");
    for (int eof = 0; !rc && !eof;) {
        eof = getline(&line, &cap, f) < 0;
        if (!eof) {
            lineno++;
            json_error_t je;
            json_t *j = json_loads(line, 0, &je);
            json_t *lb = j ? json_object_get(j, "label") : NULL;
            if (!json_is_integer(lb)) {
                json_decref(j);
                rc = fpx_cli_say(FPX_EXIT_INPUT, "%s line %zu: %s", path, lineno,
                                 j ? "no integer \"label\"" : je.text);
                break;
            }
            labels[n] = json_integer_value(lb);
            json_object_del(j, "label");
            ids[n++] = j;
            int r = fpx_client_reconstruct(cli->c, name, labels[n - 1], d, x + (size_t)(n - 1) * d);
            /* IVF indexes reconstruct one label only with a direct map */
            if (r != 0 && !direct_map && strstr(type, "IVF") &&
                !strcmp(fpx_client_errtype(cli->c), "faiss_error")) {
                if (fpx_client_set_param(cli->c, name, "direct_map", 1) != 0) {
                    rc = fpx_cli_client_fail(cli, name);
                    break;
                }
                direct_map = 1;
                r = fpx_client_reconstruct(cli->c, name, labels[n - 1], d, x + (size_t)(n - 1) * d);
            }
            if (r != 0) {
                rc = fpx_cli_client_fail(cli, name);
                break;
            }
        }
        if (n == FPX_RESTORE_CHUNK || (eof && n > 0)) {
            if (fpx_cli_add(cli, name, n, d, x, labels, ids, NULL) != 0)
                rc = fpx_cli_raw_fail(cli, name);
            for (int i = 0; i < n; i++)
                json_decref(ids[i]);
            n = 0;
        }
    }
    for (int i = 0; i < n; i++)
        json_decref(ids[i]);
    if (direct_map && !rc && fpx_client_set_param(cli->c, name, "direct_map", 0) != 0)
        rc = fpx_cli_client_fail(cli, name);
    free(line);
    free(x);
    free(labels);
    free(ids);
    fclose(f);
    return rc;
}

int fpx_cli_restore(fpx_cli *cli, const char *dir) {
    char *mpath = path_join(dir, "manifest", ".json");
    json_error_t je;
    json_t *m = mpath ? json_load_file(mpath, 0, &je) : NULL;
    if (!m) {
        int rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", mpath ? mpath : dir,
                             mpath ? je.text : "out of memory");
        free(mpath);
        return rc;
    }
    free(mpath);
    int rc = 0;
    json_t *list = json_object_get(m, "indexes");
    if (strcmp(fpx_str_or(json_object_get(m, "format"), ""), FPX_BACKUP_FORMAT) != 0 ||
        json_integer_value(json_object_get(m, "version")) != FPX_BACKUP_VERSION ||
        !json_is_array(list)) {
        json_decref(m);
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: not a faiss-proxy backup of version %d", dir,
                           FPX_BACKUP_VERSION);
    }
    /* refuse before restoring anything when a name is taken */
    json_t *have;
    if ((rc = list_infos(cli, &have)) != 0) {
        json_decref(m);
        return rc;
    }
    size_t i, j;
    json_t *e, *h;
    json_array_foreach(list, i, e) {
        const char *name = json_string_value(json_object_get(e, "index_id"));
        const char *file = json_string_value(json_object_get(e, "file"));
        if (!name || !file || strchr(file, '/') || strchr(name, '/')) {
            rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: manifest entry %zu is malformed", dir, i);
            break;
        }
        json_array_foreach(have, j, h) {
            if (!strcmp(fpx_str_or(json_object_get(h, "index_id"), ""), name)) {
                rc = fpx_cli_fail_with("restore", "already_exists", name);
                break;
            }
        }
        if (rc)
            break;
    }
    json_decref(have);
    json_array_foreach(list, i, e) {
        if (rc)
            break;
        const char *name = json_string_value(json_object_get(e, "index_id"));
        const char *type = fpx_str_or(json_object_get(e, "index_type"), "imported");
        const char *keys = json_string_value(json_object_get(e, "keys"));
        int64_t ntotal = json_integer_value(json_object_get(e, "ntotal"));
        char *ipath = path_join(dir, json_string_value(json_object_get(e, "file")), "");
        uint8_t *bytes = NULL;
        size_t len = 0;
        fpx_index_info in;
        rc = ipath ? read_file(ipath, &bytes, &len) : FPX_EXIT_INPUT;
        free(ipath);
        if (!rc && fpx_client_import(cli->c, name, type, bytes, len, &in) != 0)
            rc = fpx_cli_client_fail(cli, name);
        free(bytes);
        if (!rc && keys) {
            char *kpath = strchr(keys, '/') ? NULL : path_join(dir, keys, "");
            rc = kpath ? restore_keys(cli, name, in.dimension, type, kpath)
                       : fpx_cli_say(FPX_EXIT_INPUT, "%s: bad keys file name", dir);
            free(kpath);
        }
        if (!rc && fpx_client_get_index_info(cli->c, name, &in) != 0)
            rc = fpx_cli_client_fail(cli, name);
        if (!rc && in.ntotal != ntotal)
            rc = fpx_cli_say(FPX_EXIT_SERVER, "restore: %s holds %lld vectors, the backup %lld",
                             name, (long long)in.ntotal, (long long)ntotal);
        if (!rc)
            fprintf(stderr, "restore: %s (%lld vectors%s)\n", name, (long long)in.ntotal,
                    keys ? ", keys/metadata" : "");
    }
    if (!rc)
        printf("restored %zu indexes from %s\n", json_array_size(list), dir);
    json_decref(m);
    return rc;
}
