/*
 * util.c - logging, name validation, durable file helpers, CRC-32.
 *
 * See util.h. Logging goes to stderr, one line per event, with a UTC
 * timestamp; the server runs under a supervisor (systemd, Docker) that keeps
 * stderr, so there is no log file of our own to rotate.
 */
#define _GNU_SOURCE /* SCHED_IDLE */
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

fpx_loglevel fpx_log_level = FPX_LOG_INFO;

void fpx_log(fpx_loglevel lvl, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (lvl < fpx_log_level)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    /* One write per line keeps lines whole when worker threads log at once. */
    (void)!write(STDERR_FILENO, line, len);
}

int fpx_name_valid(const char *s, size_t n) {
    if (n == 0 || n > FPX_NAME_MAX || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

int fpx_name_shard(const char *s, size_t n) {
    static const char prefix[] = ".shard-"; /* then the 32 hex digits of a 16-byte uid */
    size_t p = sizeof prefix - 1, i = p;
    if (n < p + 32 + 2 || n > p + 32 + 3 || memcmp(s, prefix, p))
        return 0;
    for (; i < p + 32; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    if (s[i++] != '-')
        return 0;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int fpx_path(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, FPX_PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= FPX_PATH_MAX) {
        buf[0] = 0;
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* The most bytes one write system call is given. Copying into the page cache
 * runs in the kernel, and a kernel built without forced preemption
 * (CONFIG_PREEMPT_NONE, the default of many distributions' server kernels)
 * does not preempt it: writing a 512 MB snapshot or log record in one call
 * holds its core for milliseconds, and a search woken there waits. A MiB is
 * a fraction of a millisecond, and costs one more call per MiB (bench fig 7;
 * RELEASE_STEP below is the same for freeing). */
#define WRITE_STEP ((size_t)1 << 20)

int fpx_write_all(int fd, const void *buf, size_t len) {
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len < WRITE_STEP ? len : WRITE_STEP);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int fpx_writev_all(int fd, struct iovec *iov, int iovcnt) {
    while (iovcnt > 0) {
        /* The first iovecs that hold WRITE_STEP bytes, the last cut short. */
        int n = 0;
        size_t sum = 0;
        while (n < iovcnt && n < 1024 && sum < WRITE_STEP)
            sum += iov[n++].iov_len;
        size_t over = sum > WRITE_STEP ? sum - WRITE_STEP : 0;
        iov[n - 1].iov_len -= over;
        ssize_t w = writev(fd, iov, n);
        iov[n - 1].iov_len += over;
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        size_t left = (size_t)w;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static int fsync_path(const char *path, int flags) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int fpx_fsync_dir(const char *path) {
    return fsync_path(path, O_DIRECTORY);
}

int fpx_fsync_file(const char *path) {
    return fsync_path(path, 0);
}

int fpx_map_file(const char *path, const uint8_t **buf, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *len = (size_t)st.st_size;
    *buf = NULL;
    if (*len > 0) {
        void *m = mmap(NULL, *len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        *buf = m;
    }
    close(fd);
    return 0;
}

void fpx_unmap_file(const uint8_t *buf, size_t len) {
    if (buf && len > 0)
        munmap((void *)buf, len);
}

/* Bytes a file is shrunk by at a time when it is freed. Freeing a file in
 * one system call (unlink, or a rename over it) releases all of its page
 * cache and blocks inside the kernel: about 15 ms for 512 MB here. A kernel
 * built without forced preemption (CONFIG_PREEMPT_NONE, the default of many
 * distributions' server kernels) does not preempt that call, so a search
 * woken on its core waits for it; at the idle scheduling policy it is worse,
 * since the scheduler counts a core that runs only idle-policy threads as
 * free and places the woken search there. A step of 8 MiB is a fraction of
 * a millisecond, and the thread is preemptible between steps (bench fig 7). */
#define RELEASE_STEP ((off_t)8 << 20)

/* Frees what fd's file holds, from its end, in RELEASE_STEP steps, once no
 * name refers to it any longer; then closes fd. A file that another name
 * still refers to (a hard link) is only closed. errno is kept. */
static void release_fd(int fd) {
    int e = errno;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 0)
        for (off_t size = st.st_size; size > RELEASE_STEP;) {
            size -= RELEASE_STEP;
            if (ftruncate(fd, size) != 0)
                break; /* the close frees the rest at once */
        }
    close(fd);
    errno = e;
}

/* An fd through which path's file can be shrunk, or -1 (no file, not a
 * regular file, or not writable: it is then freed the ordinary way). */
static int open_to_release(const char *path) {
    return open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
}

int fpx_unlink_file(const char *path) {
    int fd = open_to_release(path);
    int rc = unlink(path);
    if (fd >= 0)
        release_fd(fd);
    return rc;
}

int fpx_rename_over(const char *from, const char *to) {
    int fd = open_to_release(to);
    int rc = rename(from, to);
    if (fd >= 0)
        release_fd(fd);
    return rc;
}

int fpx_rmtree(const char *path) {
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char sub[4096];
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) >= sizeof sub) {
            rc = -1;
            continue;
        }
        struct stat st;
        if (lstat(sub, &st) != 0) {
            rc = -1;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (fpx_rmtree(sub) != 0)
                rc = -1;
        } else if (fpx_unlink_file(sub) != 0) {
            rc = -1;
        }
    }
    closedir(d);
    if (rmdir(path) != 0)
        rc = -1;
    return rc;
}

void fpx_start_writeback(int fd, uint64_t off, uint64_t len) {
    (void)sync_file_range(fd, (off64_t)off, (off64_t)len, SYNC_FILE_RANGE_WRITE);
}

int fpx_mkdir_p1(const char *path) {
    if (mkdir(path, 0750) == 0 || errno == EEXIST)
        return 0;
    return -1;
}

uint32_t fpx_crc32(uint32_t crc, const void *buf, size_t len) {
    /* zlib's crc32 takes uInt lengths; feed large buffers in pieces. */
    const uint8_t *p = buf;
    while (len > 0) {
        uInt chunk = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = (uint32_t)crc32(crc, p, chunk);
        p += chunk;
        len -= chunk;
    }
    return crc;
}

/* CRC-32C, reflected polynomial 0x82F63B78: bit 31 of a value is the
 * coefficient of x^0. */
#define CRC32C_POLY 0x82F63B78u
/* The SSE4.2 path runs three independent streams over the three stripes of
 * a 3 x STRIPE chunk (the crc32 instruction takes 3 cycles and issues one a
 * cycle) and joins them by shifting: a raw CRC state s followed by n zero
 * bytes is s times x^(8n) modulo the polynomial. */
enum { CRC32C_STRIPE = 8192 };
static uint32_t crc32c_table[256];
static uint32_t crc32c_x2n[32];              /* x^(2^k) mod P */
static uint32_t crc32c_stripe_shift[4][256]; /* byte k of s, shifted by a stripe */
static int crc32c_hw;                        /* the CPU has SSE4.2's crc32 instruction */
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

/* a times b modulo the polynomial. */
static uint32_t crc32c_mulmod(uint32_t a, uint32_t b) {
    uint32_t prod = 0;
    for (uint32_t bit = 1u << 31; bit; bit >>= 1) {
        if (a & bit)
            prod ^= b;
        b = b & 1 ? (b >> 1) ^ CRC32C_POLY : b >> 1;
    }
    return prod;
}

/* x^(8n) modulo the polynomial: n zero bytes. */
static uint32_t crc32c_zeros(uint64_t n) {
    uint32_t p = 1u << 31; /* x^0 */
    for (int k = 3; n; n >>= 1, k++)
        if (n & 1)
            p = crc32c_mulmod(crc32c_x2n[k & 31], p);
    return p;
}

static void crc32c_init(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    crc32c_hw = __builtin_cpu_supports("sse4.2") != 0;
#endif
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc32c_table[i] = c;
    }
    uint32_t p = 1u << 30; /* x^1 */
    for (int k = 0; k < 32; k++, p = crc32c_mulmod(p, p))
        crc32c_x2n[k] = p;
    uint32_t stripe = crc32c_zeros(CRC32C_STRIPE);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++)
            crc32c_stripe_shift[k][b] = crc32c_mulmod(stripe, b << (8 * k));
}

uint32_t fpx_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2) {
    pthread_once(&crc32c_once, crc32c_init);
    /* The pre- and post-inversions cancel: only crc1's shift remains. */
    return crc32c_mulmod(crc32c_zeros(len2), crc1) ^ crc2;
}

uint32_t fpx_crc32c_portable(uint32_t crc, const void *buf, size_t len) {
    pthread_once(&crc32c_once, crc32c_init);
    const uint8_t *p = buf;
    crc = ~crc;
    while (len--)
        crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
static uint32_t crc32c_shift_stripe(uint32_t s) {
    return crc32c_stripe_shift[0][s & 0xff] ^ crc32c_stripe_shift[1][(s >> 8) & 0xff] ^
           crc32c_stripe_shift[2][(s >> 16) & 0xff] ^ crc32c_stripe_shift[3][s >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const void *buf,
                                                               size_t len) {
    const uint8_t *p = buf;
    uint64_t c = ~crc;
    for (; len > 0 && ((uintptr_t)p & 7); len--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    for (; len >= 3 * (size_t)CRC32C_STRIPE; len -= 3 * (size_t)CRC32C_STRIPE) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC32C_STRIPE; i += 8, p += 8) {
            uint64_t v0, v1, v2;
            memcpy(&v0, p, 8);
            memcpy(&v1, p + CRC32C_STRIPE, 8);
            memcpy(&v2, p + 2 * CRC32C_STRIPE, 8);
            c = __builtin_ia32_crc32di(c, v0);
            c1 = __builtin_ia32_crc32di(c1, v1);
            c2 = __builtin_ia32_crc32di(c2, v2);
        }
        p += 2 * CRC32C_STRIPE;
        c = crc32c_shift_stripe(crc32c_shift_stripe((uint32_t)c) ^ (uint32_t)c1) ^ (uint32_t)c2;
    }
    for (; len >= 8; len -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    for (; len > 0; len--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

uint32_t fpx_crc32c(uint32_t crc, const void *buf, size_t len) {
    pthread_once(&crc32c_once, crc32c_init);
    return crc32c_hw ? crc32c_sse42(crc, buf, len) : fpx_crc32c_portable(crc, buf, len);
}
#else
uint32_t fpx_crc32c(uint32_t crc, const void *buf, size_t len) {
    return fpx_crc32c_portable(crc, buf, len);
}
#endif

uint64_t fpx_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void fpx_thread_lower_priority(void) {
    /* SCHED_IDLE rather than nice 19 alone: Linux's fair scheduler lets a
     * waking thread of normal policy preempt an idle-policy thread at once,
     * and counts a core that runs only such threads as idle when it places a
     * waking thread, where a nice-19 thread may finish its time slice (a few
     * ms) before a search gets the core. It still progresses (a small weight,
     * not a strict priority), so a busy server cannot starve it for good. */
    struct sched_param sp = {.sched_priority = 0};
    int rc = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
    if (rc != 0)
        fpx_log(FPX_LOG_DEBUG, "cannot give a thread the idle policy: %s", strerror(rc));
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19) != 0)
        fpx_log(FPX_LOG_DEBUG, "cannot lower a thread's priority: %s", strerror(errno));
}

typedef struct low_job {
    int (*fn)(void *);
    void *arg;
    int rc;
} low_job;

static void *low_main(void *p) {
    low_job *j = p;
    fpx_thread_lower_priority();
    j->rc = j->fn(j->arg);
    return NULL;
}

int fpx_run_low_priority(int (*fn)(void *), void *arg) {
    low_job j = {fn, arg, -1};
    pthread_t t;
    if (pthread_create(&t, NULL, low_main, &j) != 0)
        return fn(arg);
    pthread_join(t, NULL);
    return j.rc;
}
