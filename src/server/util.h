/*
 * util.h - small helpers shared by the server's modules: logging, name
 * validation, durable file operations and checksums.
 *
 * Durability rules live here so every module follows the same ones: a file
 * becomes visible only by rename() after its contents were fsync'd, and the
 * directory holding it is fsync'd after the rename.
 */
#ifndef FPX_UTIL_H
#define FPX_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "proto/proto.h"

#define FPX_NAME_MAX 128

typedef enum fpx_loglevel { FPX_LOG_DEBUG, FPX_LOG_INFO, FPX_LOG_WARN, FPX_LOG_ERROR } fpx_loglevel;

extern fpx_loglevel fpx_log_level;
void fpx_log(fpx_loglevel lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 1 when s[0..n) is a valid index or tenant name: 1..128 characters of
 * [A-Za-z0-9_.-], not starting with '.'. Such a name is safe as a path
 * component: no '/', no NUL, never "." or "..". */
int fpx_name_valid(const char *s, size_t n);
/* 1 when s[0..n) names a shard of a sharded index in a cluster,
 * ".shard-<32 hex digits of its index's uid>-<shard number>": a name no
 * user's index can have (it starts with '.'), held and stored as an index. */
int fpx_name_shard(const char *s, size_t n);

/* Room for any path the server builds: the data dir (< 4096) plus names. */
#define FPX_PATH_MAX 4608

/* snprintf into a path buffer of FPX_PATH_MAX bytes; -1 (ENAMETOOLONG) when
 * it does not fit, so a truncated path is never used. */
int fpx_path(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes all of buf to fd, retrying short writes and EINTR. 0 or -1 (errno). */
int fpx_write_all(int fd, const void *buf, size_t len);
/* Writes all iovecs, retrying short writes. 0 or -1 (errno). */
int fpx_writev_all(int fd, struct iovec *iov, int iovcnt);
/* fsync of a directory, or of a file, by path. 0 or -1 (errno). */
int fpx_fsync_dir(const char *path);
int fpx_fsync_file(const char *path);
/* Maps a whole file read-only (its pages populated at once): no copy of it
 * is made, the page cache's pages are the buffer. *buf is NULL for an empty
 * file. 0, or -1 with errno. Release with fpx_unmap_file. */
int fpx_map_file(const char *path, const uint8_t **buf, size_t *len);
void fpx_unmap_file(const uint8_t *buf, size_t len);
/* Removes a directory tree (no symlink following). 0 or -1. */
int fpx_rmtree(const char *path);
/* unlink(path), then the file's blocks and page cache freed in short steps
 * (fpx_release_fd). 0 or -1 (errno). */
int fpx_unlink_file(const char *path);
/* rename(from, to) over a file to replace, whose blocks are then freed in
 * short steps rather than inside the rename. 0 or -1 (errno). */
int fpx_rename_over(const char *from, const char *to);

/* Runs fn(arg) on a thread of its own at the lowest priority (SCHED_IDLE) and
 * returns its result, for bulk work a request does for one tenant (an
 * import's reading and copying of hundreds of MB, writing its snapshot) that
 * must not take a core from other tenants' searches. Runs it here when no
 * thread can be started. */
int fpx_run_low_priority(int (*fn)(void *), void *arg);

/* Gives the calling thread the idle scheduling policy (SCHED_IDLE), and nice
 * 19 where that is refused (Linux sets both thread by thread). */
void fpx_thread_lower_priority(void);
/* Starts the writeback of len bytes of fd from off to the disk and returns
 * without waiting for it (sync_file_range); a hint: where the file system
 * does not take it, the later fsync writes them all. */
void fpx_start_writeback(int fd, uint64_t off, uint64_t len);
/* mkdir that accepts an existing directory. 0 or -1. */
int fpx_mkdir_p1(const char *path);

/* CRC-32 (zlib's polynomial) continued from crc (start with 0). */
uint32_t fpx_crc32(uint32_t crc, const void *buf, size_t len);
/* CRC-32C (Castagnoli): the checksum of new log records and snapshots. With
 * SSE4.2's crc32 instruction where the CPU has it (checked at run time, so
 * one build runs everywhere): several GB/s, against zlib's CRC-32 at about
 * one, which made checksums the largest cost of loading a big index. */
uint32_t fpx_crc32c(uint32_t crc, const void *buf, size_t len);
/* The portable table-driven CRC-32C (the fallback; exposed for tests). */
uint32_t fpx_crc32c_portable(uint32_t crc, const void *buf, size_t len);
/* The CRC-32C of A followed by B from crc1 = fpx_crc32c(0, A) and
 * crc2 = fpx_crc32c(0, B) of len2 bytes: a checksum taken of B before A was
 * known (a log record's vectors, before its header is written). */
uint32_t fpx_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);

/* Little-endian integers in byte buffers (the on-disk formats, hashes), the
 * same on every host. */
static inline void fpx_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void fpx_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void fpx_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t fpx_get_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t fpx_get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
static inline uint64_t fpx_get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Monotonic clock in nanoseconds. */
uint64_t fpx_now_ns(void);

#endif
