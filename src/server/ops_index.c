/*
 * ops_index.c - operations on the registry and on whole indexes: ping,
 * list_indexes, create_index, import_index, get_index_info, delete_index and
 * export_index. Creating and importing build the new index here, without any
 * lock; the dispatcher stores and registers it (ops.h).
 */
#include "ops.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define FPX_INDEX_TYPE_MAX 255

int fpx_op_ping(fpx_req *r, fpx_out *o) {
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 3);
    fpx_pack_cstr(m, "version");
    fpx_pack_cstr(m, FPX_VERSION);
    fpx_pack_cstr(m, "protocol");
    msgpack_pack_int(m, FPX_PROTOCOL_VERSION);
    /* Clients size their requests by it: a larger one is dropped unanswered. */
    fpx_pack_cstr(m, "max_message_size");
    msgpack_pack_uint64(m, r->s->cfg->max_message_size);
    return 0;
}

int fpx_op_list_indexes(fpx_req *r, fpx_out *o) {
    fpx_index **mine;
    size_t n;
    if (fpx_server_list(r->s, r->tenant, &mine, &n) != 0)
        return fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory");
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 1);
    fpx_pack_cstr(m, "indexes");
    msgpack_pack_array(m, n);
    /* No registry lock is held here: each index is referenced, and one being
     * written only delays its own entry. */
    for (size_t i = 0; i < n; i++) {
        pthread_rwlock_rdlock(&mine[i]->lock);
        fpx_index_pack_info(mine[i], m);
        pthread_rwlock_unlock(&mine[i]->lock);
        fpx_index_unref(mine[i]);
    }
    free(mine);
    return 0;
}

int fpx_op_info(fpx_req *r, fpx_out *o) {
    fpx_reply_ok(r, o, 0);
    fpx_index_pack_info(r->ix, fpx_out_meta(o));
    return 0;
}

int fpx_op_deleted(fpx_req *r, fpx_out *o) {
    fpx_reply_ok(r, o, 0);
    msgpack_packer *m = fpx_out_meta(o);
    msgpack_pack_map(m, 1);
    fpx_pack_cstr(m, "deleted");
    msgpack_pack_true(m);
    return 0;
}

int fpx_prep_create_index(fpx_req *r) {
    char name[FPX_NAME_MAX + 1], type[FPX_INDEX_TYPE_MAX + 1], metric[8];
    int64_t dim;
    if (fpx_req_name(r, 1, name) || fpx_req_int(r, "dimension", 1, &dim))
        return -1;
    if (dim < 1 || dim > FPX_DIM_MAX)
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "dimension must be in 1..%d, got %lld",
                           FPX_DIM_MAX, (long long)dim);
    int rc = fpx_req_str(r, "index_type", type, sizeof type);
    if (rc < 0)
        return -1;
    if (rc == 1)
        strcpy(type, "IndexFlatL2");
    if (!type[0])
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "index_type must not be empty");
    int has_metric = fpx_req_str(r, "metric", metric, sizeof metric);
    if (has_metric < 0)
        return -1;
    int64_t lease;
    if (fpx_req_lease(r, &lease))
        return -1;

    if (fpx_index_new(r->tenant, name, type, dim, has_metric == 0 ? metric : NULL, &r->made,
                      &r->err))
        return -1;
    r->made->lease_seconds = lease;
    return 0;
}

int fpx_op_export_index(fpx_req *r, fpx_out *o) {
    fpx_index *ix = r->ix;
    int rc = 0;
    {
        uint8_t *buf = NULL;
        size_t len = 0;
        fpx_bitset live = fpx_index_live(ix);
        rc = fpx_engine_export(ix->eng, &live, ix->labels, fpx_index_type_has_idmap(ix->index_type),
                               &buf, &len, &r->err);
        if (rc == 0 && len > r->s->cfg->max_message_size)
            rc = fpx_err_set(&r->err, FPX_E_LIMIT,
                             "the exported index (%zu bytes) exceeds the message size limit", len);
        if (rc == 0) {
            msgpack_packer *h = fpx_reply_ok(r, o, 1);
            fpx_pack_cstr(h, "format");
            fpx_pack_cstr(h, "faiss");
            uint8_t *data = fpx_out_data(o, len);
            if (!data)
                rc = fpx_err_set(&r->err, FPX_E_INTERNAL, "out of memory for the reply");
            else
                memcpy(data, buf, len);
            if (rc == 0)
                fpx_index_pack_info(ix, fpx_out_meta(o));
        }
        free(buf);
    }
    return rc;
}

/* Limits of the probe below: the reader gets, beyond the address space the
 * forked child starts with (the whole server's: thread stacks, mapped
 * snapshots, the received bytes), twice the bytes (FAISS holds the bytes and
 * the index they describe) and this much more; and this long (plus a second
 * per 50 MB) before it is killed. */
#define PROBE_MEM_SLACK ((uint64_t)1 << 30)
#define PROBE_SECONDS 30

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PROBE_LIMIT_MEMORY 0 /* the sanitizers reserve terabytes of address space */
#else
#define PROBE_LIMIT_MEMORY 1
#endif

/* The bytes of address space this process has mapped (0 when unknown: then
 * the cap below is only the reader's own share, and may refuse an index). */
static uint64_t own_address_space(void) {
    unsigned long long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    long page = sysconf(_SC_PAGESIZE);
    return (uint64_t)pages * (uint64_t)(page > 0 ? page : 4096);
}

/*
 * Runs FAISS's reader over untrusted bytes in a throwaway child process
 * first. FAISS 1.7.3's read_index leaks what it built when the bytes turn out
 * truncated or inconsistent, and it sizes vectors from the bytes before
 * checking them (a few bytes can claim gigabytes). In the child, a leak, a
 * huge allocation or a crash costs nothing; the server reads the bytes itself
 * only once they are known to be good. The child's address space and time
 * are bounded (a reader looping or allocating without end is killed), and
 * FAISS's message comes back on a pipe.
 */
static int probe_import(const uint8_t *buf, size_t len, fpx_err *err) {
    int fds[2];
    if (pipe(fds) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return fpx_err_set(err, FPX_E_INTERNAL, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        /* FAISS's (or a sanitizer's) complaints go to the pipe's reader as
         * the message below, not to the server's log. */
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO);
        if (PROBE_LIMIT_MEMORY) {
            struct rlimit rl;
            uint64_t cap = own_address_space() + 2 * (uint64_t)len + PROBE_MEM_SLACK;
            if (getrlimit(RLIMIT_AS, &rl) == 0 &&
                (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > cap)) {
                rl.rlim_cur = (rlim_t)cap;
                setrlimit(RLIMIT_AS, &rl);
            }
        }
        fpx_engine *eng;
        int64_t *labels;
        int had;
        fpx_err e = {0};
        int rc = fpx_engine_import(buf, len, &eng, &labels, &had, &e);
        if (rc != 0) {
            ssize_t w = write(fds[1], e.msg, strnlen(e.msg, sizeof e.msg));
            (void)w; /* the parent has a fallback message */
        }
        _exit(rc == 0 ? 0 : 1); /* no cleanup: the process is thrown away */
    }
    close(fds[1]);
    char msg[sizeof err->msg];
    size_t got = 0;
    int timed_out = 0;
    uint64_t deadline = fpx_now_ns() + ((uint64_t)PROBE_SECONDS + len / 50000000u) * 1000000000u;
    for (;;) {
        uint64_t now = fpx_now_ns();
        if (now >= deadline) {
            timed_out = 1;
            break;
        }
        struct pollfd pfd = {fds[0], POLLIN, 0};
        uint64_t left_ms = (deadline - now) / 1000000u + 1;
        int p = poll(&pfd, 1, left_ms > 1000 ? 1000 : (int)left_ms);
        if (p < 0 && errno == EINTR)
            continue;
        if (p < 0)
            break;
        if (p == 0)
            continue;
        ssize_t k = read(fds[0], msg + got, sizeof msg - 1 - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break; /* end of file: the child is done */
        got += (size_t)k;
        if (got == sizeof msg - 1)
            break;
    }
    msg[got] = 0;
    close(fds[0]);
    if (timed_out)
        kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "FAISS cannot read the index: its reader took longer than %llu s",
                           (unsigned long long)(PROBE_SECONDS + len / 50000000u));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        return fpx_err_set(err, FPX_E_VALIDATION, "FAISS cannot read the index: %s",
                           got ? msg : "invalid data");
    return fpx_err_set(err, FPX_E_VALIDATION,
                       "FAISS cannot read the index: its reader died on these bytes (signal %d%s)",
                       WIFSIGNALED(status) ? WTERMSIG(status) : 0,
                       PROBE_LIMIT_MEMORY ? ", or needed more memory than the bytes justify" : "");
}

int fpx_prep_import_index(fpx_req *r) {
    char name[FPX_NAME_MAX + 1], type[256];
    if (fpx_req_name(r, 1, name))
        return -1;
    int rc = fpx_req_str(r, "index_type", type, sizeof type);
    if (rc < 0)
        return -1;
    if (rc == 1 || !type[0])
        strcpy(type, "imported");
    int64_t lease;
    if (fpx_req_lease(r, &lease))
        return -1;
    if (r->msg.body.data_size == 0)
        return fpx_err_set(&r->err, FPX_E_VALIDATION,
                           "the data section must hold a FAISS index (write_index bytes)");
    fpx_engine *eng;
    int64_t *labels;
    int had_idmap;
    if (probe_import(r->msg.body.data, r->msg.body.data_size, &r->err) ||
        fpx_engine_import(r->msg.body.data, r->msg.body.data_size, &eng, &labels, &had_idmap,
                          &r->err))
        return -1;
    int64_t dim = fpx_engine_dim(eng);
    if (dim < 1 || dim > 65536) {
        fpx_engine_free(eng);
        free(labels);
        return fpx_err_set(&r->err, FPX_E_VALIDATION, "dimension %lld is out of 1..65536",
                           (long long)dim);
    }
    size_t tl = strlen(type);
    size_t wl = had_idmap == 2 ? 7 : 6;
    if (had_idmap && !fpx_index_type_has_idmap(type) && tl + wl < sizeof type) {
        /* remember the wrapper, so an export gives it back */
        memmove(type + wl, type, tl + 1);
        memcpy(type, had_idmap == 2 ? "IDMap2," : "IDMap,", wl);
    }
    rc = fpx_index_import(r->tenant, name, type, eng, labels, &r->made, &r->err);
    free(labels);
    if (rc == 0)
        r->made->lease_seconds = lease;
    return rc;
}
