/*
 * probe.c - runs FAISS's reader over untrusted bytes in a throwaway process.
 *
 * FAISS 1.7.3's read_index leaks what it built when the bytes turn out
 * truncated or inconsistent, and it sizes vectors from the bytes before
 * checking them (a few bytes can claim gigabytes). In a child process a leak,
 * a huge allocation or a crash costs nothing; the server reads the bytes
 * itself only once they are known to be good.
 *
 * The child is a new image of this same binary (FPX_PROBE_ARG), started with
 * posix_spawn, not a fork of the server: glibc's posix_spawn shares the
 * address space until the exec, so nothing of the server is copied. A fork
 * copied the page tables of a process holding its indexes and the received
 * bytes while every other thread's page faults waited, and then made each
 * page the server wrote while the reader ran a copy-on-write fault: searches
 * of other tenants felt an import. The bytes reach the child through a memfd;
 * its address space and its time are bounded, and FAISS's message comes back
 * on a pipe.
 *
 * The same child runs the adds that build an NSG graph (FPX_PROBE_BUILD_ARG):
 * FAISS 1.7.3's NSG build loops for good on some data (with R = 3 on most)
 * and asserts on other, which in the server held a worker and the index for
 * good, or ended every tenant's service. The child gets the index's bytes
 * and the vectors, adds, and hands back the index's bytes, within a time
 * the operator sets (--graph-build-timeout); the server takes them only
 * then, and a build that never ends or dies leaves the index as it was.
 *
 * And it builds, once per description, a new index whose description has a
 * coarse quantizer (FPX_PROBE_CREATE_ARG): FAISS 1.7.3's factory loses the
 * quantizer when the IVF's constructor then refuses its arguments, a leak
 * in the server on every such create.
 */
#define _GNU_SOURCE
#include "probe.h"

#include "engine/engine.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* The child's limits: beyond the address space it has once started (the
 * binary and its libraries), twice the bytes (FAISS holds the bytes and the
 * index they describe) and this much more; and this long (plus a second per
 * 50 MB) before it is killed. */
#define PROBE_MEM_SLACK ((uint64_t)1 << 30)
#define PROBE_SECONDS 30

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PROBE_LIMIT_MEMORY 0 /* the sanitizers reserve terabytes of address space */
#else
#define PROBE_LIMIT_MEMORY 1
#endif

/* The child's descriptors: the bytes, the message pipe, and (a build) the
 * bytes it gives back. */
#define PROBE_FD_BYTES 3
#define PROBE_FD_MSG 4
#define PROBE_FD_OUT 5

/* A build's input: this header, the index's bytes, the vectors. */
typedef struct build_header {
    uint64_t index_len, n, d;
} build_header;

static int build_timeout_s = 600;

/* The bytes of address space this process has mapped (0 when unknown). */
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

/* The child ends with the server: one killed meanwhile (kill -9, the OOM
 * killer) would leave a graph build that never ends running on, at the
 * lowest priority but for good. Its signal mask, inherited through
 * posix_spawn from a thread that blocks the stop signals, is cleared so
 * that SIGTERM ends it too. The death signal follows the spawning thread, a
 * worker that lives as long as the server. */
static void end_with_the_server(void) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* gone already: the server holds the message pipe's other end open
     * until it has reaped this process */
    struct pollfd p = {.fd = PROBE_FD_MSG, .events = 0};
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLERR))
        _exit(2);
}

int fpx_probe_main(void) {
    end_with_the_server();
    /* The reader is the import's longest piece of work: at the lowest
     * priority it takes a core only when requests leave one free. The idle
     * policy, not nice 19 alone: the fair scheduler lets a nice-19 process
     * finish its slice (up to a 4 ms tick here) before a woken search runs,
     * and each import stalled searches by that much (bench fig 7); a thread
     * of normal policy preempts an idle-policy one at once (util.c). */
    fpx_thread_lower_priority();
    struct stat st;
    if (fstat(PROBE_FD_BYTES, &st) != 0 || st.st_size <= 0)
        return 2;
    size_t len = (size_t)st.st_size;
    if (PROBE_LIMIT_MEMORY) {
        struct rlimit rl;
        uint64_t cap = own_address_space() + 3 * (uint64_t)len + PROBE_MEM_SLACK;
        if (getrlimit(RLIMIT_AS, &rl) == 0 && (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > cap)) {
            rl.rlim_cur = (rlim_t)cap;
            setrlimit(RLIMIT_AS, &rl);
        }
    }
    const uint8_t *buf = mmap(NULL, len, PROT_READ, MAP_PRIVATE, PROBE_FD_BYTES, 0);
    if (buf == MAP_FAILED)
        return 2;
    fpx_engine *eng;
    int64_t *labels;
    int had;
    fpx_err e = {0};
    int rc = fpx_engine_import(buf, len, &eng, &labels, &had, &e);
    if (rc != 0) {
        ssize_t w = write(PROBE_FD_MSG, e.msg, strnlen(e.msg, sizeof e.msg));
        (void)w; /* the parent has a fallback message */
    }
    return rc == 0 ? 0 : 1; /* no cleanup: the process is thrown away */
}

/* fd moved above the child's fixed descriptors (a dup2 onto itself would
 * keep close-on-exec set), close-on-exec. -1 on error (fd closed). */
static int above_fixed(int fd) {
    if (fd > PROBE_FD_OUT)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, PROBE_FD_OUT + 1);
    close(fd);
    return moved;
}

/* Starts the probe of mode arg (FPX_PROBE_*_ARG) over memfd, its messages
 * to msg_w (and a build's bytes to out_fd, when >= 0). 0 with *pid, or -1. */
static int spawn_probe(const char *arg, int memfd, int msg_w, int out_fd, pid_t *pid,
                       fpx_err *err) {
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory starting the import probe");
    /* FAISS's (or a sanitizer's) complaints go to the pipe's reader as the
     * message, not to the server's log. */
    int rc = posix_spawn_file_actions_adddup2(&fa, memfd, PROBE_FD_BYTES);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, msg_w, PROBE_FD_MSG);
    if (rc == 0 && out_fd >= 0)
        rc = posix_spawn_file_actions_adddup2(&fa, out_fd, PROBE_FD_OUT);
    if (rc == 0)
        rc = posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    char arg0[] = "faiss-proxy-server", arg1[32];
    snprintf(arg1, sizeof arg1, "%s", arg);
    char *argv[] = {arg0, arg1, NULL};
    if (rc == 0)
        rc = posix_spawn(pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot start the import probe: %s", strerror(rc));
    return 0;
}

/* Reads the child's message until it closes the pipe or the deadline passes.
 * 1 when the deadline passed. */
static int read_message(int fd, uint64_t deadline, char *msg, size_t cap) {
    size_t got = 0;
    int timed_out = 0;
    for (;;) {
        uint64_t now = fpx_now_ns();
        if (now >= deadline) {
            timed_out = 1;
            break;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        uint64_t left_ms = (deadline - now) / 1000000u + 1;
        int p = poll(&pfd, 1, left_ms > 1000 ? 1000 : (int)left_ms);
        if (p < 0 && errno == EINTR)
            continue;
        if (p < 0)
            break;
        if (p == 0)
            continue;
        ssize_t k = read(fd, msg + got, cap - 1 - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break; /* end of file: the child is done */
        got += (size_t)k;
        if (got == cap - 1)
            break;
    }
    msg[got] = 0;
    return timed_out;
}

/* Runs the probe of mode arg over in (a build's bytes to out_fd) for at most
 * seconds: -1 (err set) when it could not start, 1 when it was stopped at the
 * deadline, 0 when it ended (*status as waitpid gives it, msg what it said). */
static int run_probe(const char *arg, int in, int out_fd, uint64_t seconds, char *msg, size_t cap,
                     int *status, fpx_err *err) {
    int fds[2] = {-1, -1};
    if (pipe2(fds, O_CLOEXEC) != 0 || (fds[0] = above_fixed(fds[0])) < 0 ||
        (fds[1] = above_fixed(fds[1])) < 0) {
        int e = errno;
        if (fds[0] >= 0)
            close(fds[0]);
        if (fds[1] >= 0)
            close(fds[1]);
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot make the probe's pipe: %s", strerror(e));
    }
    pid_t pid;
    int rc = spawn_probe(arg, in, fds[1], out_fd, &pid, err);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return -1;
    }
    int timed_out = read_message(fds[0], fpx_now_ns() + seconds * 1000000000u, msg, cap);
    close(fds[0]);
    if (timed_out)
        kill(pid, SIGKILL);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
    }
    return timed_out;
}

int fpx_probe_import(const uint8_t *buf, size_t len, fpx_err *err) {
    int memfd = memfd_create("faiss-proxy-import", MFD_CLOEXEC);
    if (memfd < 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "memfd_create: %s", strerror(errno));
    if ((memfd = above_fixed(memfd)) < 0 || fpx_write_all(memfd, buf, len) != 0) {
        int e = errno;
        if (memfd >= 0)
            close(memfd);
        return fpx_err_set(err, e == ENOMEM || e == ENOSPC ? FPX_E_LIMIT : FPX_E_INTERNAL,
                           "cannot hand the index to the import probe: %s", strerror(e));
    }
    char msg[sizeof err->msg];
    int status;
    uint64_t seconds = PROBE_SECONDS + len / 50000000u;
    int ran = run_probe(FPX_PROBE_ARG, memfd, -1, seconds, msg, sizeof msg, &status, err);
    close(memfd);
    if (ran < 0)
        return -1;
    if (ran)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "FAISS cannot read the index: its reader took longer than %llu s",
                           (unsigned long long)seconds);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1)
        return fpx_err_set(err, FPX_E_VALIDATION, "FAISS cannot read the index: %s",
                           msg[0] ? msg : "invalid data");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
        return fpx_err_set(err, FPX_E_INTERNAL, "the import probe could not read its input");
    /* Any other end is the reader's on these bytes: a signal, or a runtime
     * (a sanitizer's allocator, say) ending it with its own status. */
    return fpx_err_set(err, FPX_E_VALIDATION,
                       "FAISS cannot read the index: its reader died on these bytes (%s %d%s)",
                       WIFSIGNALED(status) ? "signal" : "exit status",
                       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                       PROBE_LIMIT_MEMORY ? ", or needed more memory than the bytes justify" : "");
}

/* ---- NSG graph builds -------------------------------------------------------------- */

void fpx_probe_set_build_timeout(int seconds) {
    build_timeout_s = seconds;
}

int fpx_probe_build_main(void) {
    end_with_the_server();
    /* The tenant's bulk work: after requests, as the import's reader */
    fpx_thread_lower_priority();
    struct stat st;
    build_header h;
    if (fstat(PROBE_FD_BYTES, &st) != 0 || (size_t)st.st_size < sizeof h)
        return 2;
    size_t len = (size_t)st.st_size;
    const uint8_t *buf = mmap(NULL, len, PROT_READ, MAP_PRIVATE, PROBE_FD_BYTES, 0);
    if (buf == MAP_FAILED)
        return 2;
    memcpy(&h, buf, sizeof h);
    if (h.index_len > len - sizeof h || h.d == 0 ||
        h.n > (len - sizeof h - h.index_len) / sizeof(float) / h.d)
        return 2;
    fpx_engine *eng;
    fpx_err e = {0};
    uint8_t *out = NULL;
    size_t out_len = 0;
    const uint8_t *x = buf + sizeof h + h.index_len;
    int rc = fpx_engine_deserialize(buf + sizeof h, (size_t)h.index_len, &eng, &e);
    if (rc == 0)
        rc = fpx_engine_add(eng, (int64_t)h.n, x, &e);
    if (rc == 0)
        rc = fpx_engine_serialize(eng, &out, &out_len, &e);
    if (rc != 0) {
        ssize_t w = write(PROBE_FD_MSG, e.msg, strnlen(e.msg, sizeof e.msg));
        (void)w;
        return 1;
    }
    return fpx_write_all(PROBE_FD_OUT, out, out_len) == 0 ? 0 : 2;
}

/* A new memfd moved above the fixed descriptors, or -1. */
static int new_memfd(const char *name) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    return fd < 0 ? -1 : above_fixed(fd);
}

/* The whole of fd (from its start) in a malloc'd buffer. */
static int read_back(int fd, uint8_t **out, size_t *out_len) {
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0)
        return -1;
    size_t len = (size_t)st.st_size, got = 0;
    uint8_t *b = malloc(len);
    if (!b)
        return -1;
    while (got < len) {
        ssize_t k = pread(fd, b + got, len - got, (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            free(b);
            return -1;
        }
        got += (size_t)k;
    }
    *out = b;
    *out_len = len;
    return 0;
}

int fpx_probe_build_add(const uint8_t *index, size_t index_len, int64_t n, int64_t d, const void *x,
                        uint8_t **out, size_t *out_len, fpx_err *err) {
    *out = NULL;
    *out_len = 0;
    build_header h = {index_len, (uint64_t)n, (uint64_t)d};
    size_t x_len = (size_t)n * (size_t)d * sizeof(float);
    int in = new_memfd("faiss-proxy-build"), res = new_memfd("faiss-proxy-built");
    if (in < 0 || res < 0 || fpx_write_all(in, &h, sizeof h) != 0 ||
        fpx_write_all(in, index, index_len) != 0 || fpx_write_all(in, x, x_len) != 0) {
        int e = errno;
        if (in >= 0)
            close(in);
        if (res >= 0)
            close(res);
        return fpx_err_set(err, e == ENOMEM || e == ENOSPC ? FPX_E_LIMIT : FPX_E_INTERNAL,
                           "cannot hand the vectors to the NSG build's process: %s", strerror(e));
    }
    char msg[sizeof err->msg];
    int status;
    uint64_t seconds = (uint64_t)build_timeout_s + (uint64_t)n * (uint64_t)d / 100000u;
    int timed_out = run_probe(FPX_PROBE_BUILD_ARG, in, res, seconds, msg, sizeof msg, &status, err);
    close(in);
    if (timed_out < 0) {
        close(res);
        return -1;
    }
    if (!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        int rc = read_back(res, out, out_len);
        close(res);
        return rc == 0 ? 0
                       : fpx_err_set(err, FPX_E_INTERNAL,
                                     "cannot read back the index the NSG build made");
    }
    close(res);
    if (timed_out)
        return fpx_err_set(err, FPX_E_LIMIT,
                           "FAISS's NSG graph build did not finish within %llu s and was stopped; "
                           "the index is unchanged (FAISS 1.7.3's NSG build never ends on some "
                           "data, as with R = 3 on most; a larger R builds, and "
                           "--graph-build-timeout sets the time allowed)",
                           (unsigned long long)seconds);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1)
        return fpx_err_set(err, FPX_E_FAISS, "%s", msg[0] ? msg : "FAISS's NSG build failed");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
        return fpx_err_set(err, FPX_E_INTERNAL, "the NSG build's process could not do its work");
    return fpx_err_set(err, FPX_E_FAISS,
                       "FAISS's NSG graph build died on these vectors (%s %d); the index is "
                       "unchanged",
                       WIFSIGNALED(status) ? "signal" : "exit status",
                       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/* ---- creates with a coarse quantizer ----------------------------------------------- */

/* A create's input: this header, then the description. */
typedef struct create_header {
    int64_t dim;
    int32_t metric;
} create_header;

int fpx_probe_create_main(void) {
    end_with_the_server();
    struct stat st;
    create_header h;
    if (fstat(PROBE_FD_BYTES, &st) != 0 || (size_t)st.st_size <= sizeof h ||
        (size_t)st.st_size > sizeof h + 4096)
        return 2;
    char buf[sizeof h + 4097];
    if (pread(PROBE_FD_BYTES, buf, (size_t)st.st_size, 0) != st.st_size)
        return 2;
    buf[st.st_size] = 0;
    memcpy(&h, buf, sizeof h);
    fpx_engine *eng;
    fpx_err e = {0};
    if (fpx_engine_create_metric(buf + sizeof h, h.dim, (fpx_metric)h.metric, 0, &eng, &e) != 0) {
        ssize_t w = write(PROBE_FD_MSG, e.msg, strnlen(e.msg, sizeof e.msg));
        (void)w;
        return 1;
    }
    return 0; /* no cleanup: the process is thrown away */
}

/* Descriptions known to build, so that a create of one of them again
 * starts no process: (dimension, metric, description), replaced in turn. */
#define KNOWN_MAX 64
static struct {
    pthread_mutex_t mu;
    char key[KNOWN_MAX][300];
    unsigned next;
} known = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int known_good(const char *key, int add) {
    pthread_mutex_lock(&known.mu);
    int found = 0;
    for (unsigned i = 0; i < KNOWN_MAX && !found; i++)
        found = !strcmp(known.key[i], key);
    if (!found && add) {
        snprintf(known.key[known.next], sizeof known.key[0], "%s", key);
        known.next = (known.next + 1) % KNOWN_MAX;
    }
    pthread_mutex_unlock(&known.mu);
    return found;
}

int fpx_probe_create(const char *description, int64_t dim, int metric, fpx_err *err) {
    if (!strstr(description, "IVF") && !strstr(description, "IMI") &&
        !strstr(description, "Residual"))
        return 0; /* no coarse quantizer: FAISS's factory loses nothing when it refuses */
    char key[300];
    snprintf(key, sizeof key, "%lld/%d/%s", (long long)dim, metric, description);
    if (strlen(description) > 255 || known_good(key, 0))
        return 0;
    create_header h = {dim, metric};
    int memfd = new_memfd("faiss-proxy-create");
    if (memfd < 0 || fpx_write_all(memfd, &h, sizeof h) != 0 ||
        fpx_write_all(memfd, description, strlen(description)) != 0) {
        int e = errno;
        if (memfd >= 0)
            close(memfd);
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot hand the description to its probe: %s",
                           strerror(e));
    }
    char msg[sizeof err->msg];
    int status;
    int ran =
        run_probe(FPX_PROBE_CREATE_ARG, memfd, -1, PROBE_SECONDS, msg, sizeof msg, &status, err);
    close(memfd);
    if (ran < 0)
        return -1;
    if (ran)
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "index_type \"%s\": FAISS took longer than %d s to build it",
                           description, PROBE_SECONDS);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        known_good(key, 1);
        return 0;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1) {
        /* the message as the server's own create gives it (a validation_error
         * whatever the probe's type was: only descriptions fail here) */
        fpx_err_set(err, FPX_E_VALIDATION, "%s", msg[0] ? msg : "FAISS cannot build it");
        return -1;
    }
    return fpx_err_set(err, FPX_E_VALIDATION, "index_type \"%s\": FAISS died building it (%s %d)",
                       description, WIFSIGNALED(status) ? "signal" : "exit status",
                       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}
