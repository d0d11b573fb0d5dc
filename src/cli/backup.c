/*
 * backup.c - `faiss-proxy backup DIR` and `restore DIR`: a whole tenant.
 *
 * A backup is a directory (docs/cli.md has the format): manifest.json lists
 * each index's info map (type, metric, dimension, ntotal, ...) and its files;
 * NAME.index holds FAISS write_index bytes from export_index (labels
 * included), and NAME.keys.jsonl, when the index has caller keys or
 * metadata, one {"label", "id", "metadata"} line per such vector, as
 * list_keys gives them page by page.
 *
 * An index is saved whole or tried again: its write_seq is read before the
 * export and after the last page of keys, and a write in between (the two
 * differ) starts that index over. Restore hands the bytes and the keys to one
 * import_index, so the index comes back as it was, keys and lease included
 * (a cluster's sharded index with its shards), or not at all. An index
 * deleted after the list was read (not_found from any of its requests) is
 * left out of the backup, with a line saying so: it no longer exists, and
 * the others are still saved.
 */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FPX_BACKUP_FORMAT "faiss-proxy-backup"
#define FPX_BACKUP_VERSION 1
#define FPX_BACKUP_TRIES 5 /* an index written to during its backup is saved again */
#define GONE (-2)          /* save_once: the index was deleted after the list was read */

/* A failed request of one index's backup: GONE when the server found no
 * such index (deleted since it was listed; nothing printed), else the
 * failure printed, with its exit code. raw: a raw request (cli->errtype),
 * else a client library call. */
static int save_fail(fpx_cli *cli, const char *name, int raw) {
    const char *type = raw ? cli->errtype : fpx_client_errtype(cli->c);
    if (!strcmp(type, "not_found"))
        return GONE;
    return raw ? fpx_cli_raw_fail(cli, name) : fpx_cli_client_fail(cli, name);
}

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

/* DIR must be new or empty: a backup never mixes with older files. *made
 * says whether it was created here. */
static int prepare_dir(const char *dir, int *made) {
    *made = 0;
    if (mkdir(dir, 0755) == 0) {
        *made = 1;
        return 0;
    }
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

/* A failed backup leaves nothing behind: DIR was empty (prepare_dir), so
 * every file in it is one this backup wrote; DIR itself goes when it was
 * made here. */
static void discard_dir(const char *dir, int made) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                char *p = path_join(dir, e->d_name, "");
                if (p)
                    unlink(p);
                free(p);
            }
        closedir(d);
    }
    if (made)
        rmdir(dir);
    fprintf(stderr, "backup: failed; the files it had written in %s were removed\n", dir);
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

/* The info map of one index, as JSON; NULL with a message printed. */
static json_t *index_info(fpx_cli *cli, const char *name, int *rc) {
    fpx_rawreq rq;
    fpx_rawreq_begin(cli, &rq, "get_index_info", name, 0);
    fpx_rawrep rep;
    *rc = fpx_rawreq_send(cli, &rq, NULL, 0, NULL, 0, 0, &rep);
    fpx_rawreq_free(&rq);
    if (*rc != 0) {
        *rc = save_fail(cli, name, 1);
        return NULL;
    }
    json_t *j = rep.meta && rep.meta->type == MSGPACK_OBJECT_MAP ? fpx_mp_to_json(rep.meta) : NULL;
    fpx_rawrep_free(&rep);
    if (!j)
        *rc = fpx_cli_say(FPX_EXIT_SERVER, "backup: %s: the server sent no info map", name);
    return j;
}

/* Writes every list_keys entry of an index to f, one JSON line each; *count
 * receives how many. */
static int save_keys(fpx_cli *cli, const char *name, FILE *f, int64_t *count) {
    uint64_t cursor = 0;
    *count = 0;
    for (;;) {
        fpx_rawreq rq;
        fpx_rawreq_begin(cli, &rq, "list_keys", name, cursor ? 1 : 0);
        if (cursor) {
            fpx_mp_pack_str(&rq.hp, "cursor");
            msgpack_pack_uint64(&rq.hp, cursor);
        }
        fpx_rawrep rep;
        int rc = fpx_rawreq_send(cli, &rq, NULL, 0, NULL, 0, 0, &rep);
        fpx_rawreq_free(&rq);
        if (rc != 0)
            return save_fail(cli, name, 1);
        const msgpack_object *items = fpx_mp_get(rep.meta, "items");
        const msgpack_object *next = fpx_mp_get(rep.meta, "next");
        if (!items || items->type != MSGPACK_OBJECT_ARRAY || !next ||
            (next->type != MSGPACK_OBJECT_NIL && next->type != MSGPACK_OBJECT_POSITIVE_INTEGER)) {
            fpx_rawrep_free(&rep);
            return fpx_cli_say(FPX_EXIT_SERVER, "backup: %s: malformed list_keys reply", name);
        }
        for (uint32_t i = 0; i < items->via.array.size && !rc; i++) {
            json_t *line = fpx_mp_to_json(&items->via.array.ptr[i]);
            if (!line || json_dumpf(line, f, JSON_COMPACT) != 0 || fputc('\n', f) == EOF)
                rc = fpx_cli_say(FPX_EXIT_INPUT, "backup: %s: cannot write its keys", name);
            json_decref(line);
        }
        *count += items->via.array.size;
        cursor = next->type == MSGPACK_OBJECT_NIL ? 0 : next->via.u64;
        fpx_rawrep_free(&rep);
        if (rc || !cursor)
            return rc;
    }
}

/* One try at saving an index: its info before, its bytes, its keys, its info
 * after. *same says whether no write came in between; *after is the info. */
static int save_once(fpx_cli *cli, const char *name, const char *ipath, const char *kpath,
                     int64_t *nkeys, json_t **after, int *same) {
    int rc;
    *after = NULL;
    json_t *before = index_info(cli, name, &rc);
    if (!before)
        return rc;
    uint8_t *bytes;
    size_t len;
    if (fpx_client_export(cli->c, name, &bytes, &len) != 0) {
        json_decref(before);
        return save_fail(cli, name, 0);
    }
    rc = write_file(ipath, bytes, len);
    free(bytes);
    FILE *f = rc ? NULL : fopen(kpath, "w");
    if (!rc && !f)
        rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", kpath, strerror(errno));
    if (!rc)
        rc = save_keys(cli, name, f, nkeys);
    if (f && (fflush(f) != 0 || fsync(fileno(f)) != 0) && !rc)
        rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", kpath, strerror(errno));
    if (f)
        fclose(f);
    if (!rc && !(*after = index_info(cli, name, &rc)))
        rc = rc ? rc : FPX_EXIT_SERVER;
    *same = !rc &&
            json_equal(json_object_get(before, "write_seq"), json_object_get(*after, "write_seq"));
    json_decref(before);
    return rc;
}

/* Saves one index into dir and returns its manifest entry in *entry. */
static int save_index(fpx_cli *cli, const char *dir, const char *name, json_t **entry) {
    char *ipath = path_join(dir, name, ".index");
    char *kpath = path_join(dir, name, ".keys.jsonl");
    int rc = ipath && kpath ? 0 : fpx_cli_say(FPX_EXIT_INPUT, "out of memory");
    int64_t nkeys = 0;
    json_t *info = NULL;
    for (int t = 0; !rc; t++) {
        int same = 0;
        json_decref(info);
        rc = save_once(cli, name, ipath, kpath, &nkeys, &info, &same);
        if (rc || same)
            break;
        if (t + 1 == FPX_BACKUP_TRIES)
            rc = fpx_cli_say(FPX_EXIT_SERVER,
                             "backup: %s was written to during each of %d tries; "
                             "pause its writers and back up again",
                             name, FPX_BACKUP_TRIES);
        else {
            /* a burst of writes may be ending: wait longer each time (0.2 s .. 1.6 s) */
            struct timespec pause = {(200 << t) / 1000, (long)((200 << t) % 1000) * 1000000};
            fprintf(stderr, "backup: %s changed while it was saved; saving it again\n", name);
            nanosleep(&pause, NULL);
        }
    }
    if (rc == GONE) { /* deleted since it was listed: not in the backup */
        unlink(ipath);
        unlink(kpath);
        fprintf(stderr, "backup: %s was deleted after the backup listed it; it is left out\n",
                name);
        rc = 0;
    } else if (!rc && nkeys == 0)
        unlink(kpath);
    if (!rc && info) {
        char file[160];
        *entry = json_deep_copy(info);
        snprintf(file, sizeof file, "%s.index", name);
        json_object_set_new(*entry, "file", json_string(file));
        snprintf(file, sizeof file, "%s.keys.jsonl", name);
        json_object_set_new(*entry, "keys", nkeys ? json_string(file) : json_null());
        json_object_del(*entry, "lease_remaining");
        fprintf(stderr, "backup: %s (%lld vectors, %lld with keys or metadata)\n", name,
                (long long)json_integer_value(json_object_get(info, "ntotal")), (long long)nkeys);
    }
    json_decref(info);
    free(ipath);
    free(kpath);
    return rc;
}

int fpx_cli_backup(fpx_cli *cli, const char *dir) {
    json_t *infos;
    int rc = list_infos(cli, &infos);
    if (rc)
        return rc;
    int made;
    if ((rc = prepare_dir(dir, &made)) != 0) {
        json_decref(infos);
        return rc;
    }
    json_t *list = json_array();
    size_t i;
    json_t *info;
    json_array_foreach(infos, i, info) {
        const char *name = json_string_value(json_object_get(info, "index_id"));
        json_t *e = NULL;
        if (!name) {
            rc = fpx_cli_say(FPX_EXIT_SERVER, "backup: the server's index list is malformed");
            break;
        }
        if ((rc = save_index(cli, dir, name, &e)) != 0)
            break;
        if (e)
            json_array_append_new(list, e);
    }
    if (!rc) {
        size_t saved = json_array_size(list);
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
            printf("backed up %zu indexes to %s\n", saved, dir);
    }
    json_decref(list);
    json_decref(infos);
    if (rc)
        discard_dir(dir, made);
    return rc;
}

/* Packs a keys file (one list_keys entry a line) as import_index's
 * metadata section, {"items": [...]}, into rq's metadata. */
static int pack_keys(fpx_rawreq *rq, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return fpx_cli_say(FPX_EXIT_INPUT, "%s: %s", path, strerror(errno));
    json_t *items = json_array();
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    int rc = 0;
    while (!rc && getline(&line, &cap, f) >= 0) {
        lineno++;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j || !json_is_integer(json_object_get(j, "label")))
            rc = fpx_cli_say(FPX_EXIT_INPUT, "%s line %zu: %s", path, lineno,
                             j ? "no integer \"label\"" : je.text);
        else
            json_array_append(items, j);
        json_decref(j);
    }
    free(line);
    fclose(f);
    if (!rc) {
        msgpack_pack_map(&rq->mp, 1);
        fpx_mp_pack_str(&rq->mp, "items");
        if (fpx_json_to_mp(&rq->mp, items) != 0)
            rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: a value has no msgpack form", path);
    }
    json_decref(items);
    return rc;
}

/* One import_index of the saved bytes with the index's keys and lease. */
static int restore_index(fpx_cli *cli, const char *dir, const json_t *e) {
    const char *name = json_string_value(json_object_get(e, "index_id"));
    const char *type = fpx_str_or(json_object_get(e, "index_type"), "imported");
    const char *keys = json_string_value(json_object_get(e, "keys"));
    json_int_t lease = json_integer_value(json_object_get(e, "lease_seconds"));
    /* a cluster's sharded index comes back with its shards (one server
     * holds every index whole and reads no "shards") */
    json_int_t shards = json_integer_value(json_object_get(e, "shards"));
    char *ipath = path_join(dir, json_string_value(json_object_get(e, "file")), "");
    char *kpath = keys && !strchr(keys, '/') ? path_join(dir, keys, "") : NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = ipath ? read_file(ipath, &bytes, &len) : FPX_EXIT_INPUT;
    if (!rc && keys && !kpath)
        rc = fpx_cli_say(FPX_EXIT_INPUT, "%s: bad keys file name", dir);
    fpx_rawreq rq;
    fpx_rawreq_begin(cli, &rq, "import_index", name, 1 + (lease > 0) + (shards > 1));
    fpx_mp_pack_str(&rq.hp, "index_type");
    fpx_mp_pack_str(&rq.hp, type);
    if (shards > 1) {
        fpx_mp_pack_str(&rq.hp, "shards");
        msgpack_pack_int64(&rq.hp, shards);
    }
    if (lease > 0) {
        fpx_mp_pack_str(&rq.hp, "lease_seconds");
        msgpack_pack_int64(&rq.hp, lease);
    }
    if (!rc && kpath)
        rc = pack_keys(&rq, kpath);
    fpx_rawrep rep;
    if (!rc && fpx_rawreq_send(cli, &rq, bytes, len, NULL, 0, kpath != NULL, &rep) != 0)
        rc = fpx_cli_raw_fail(cli, name);
    else if (!rc)
        fpx_rawrep_free(&rep);
    fpx_rawreq_free(&rq);
    free(bytes);
    free(ipath);
    free(kpath);
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
        const char *keys = json_string_value(json_object_get(e, "keys"));
        int64_t ntotal = json_integer_value(json_object_get(e, "ntotal"));
        fpx_index_info in;
        rc = restore_index(cli, dir, e);
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
