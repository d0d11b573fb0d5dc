/*
 * test_util.c - the server's checksums against their published check values
 * (CRC catalogue: "123456789"), on every path the CPU offers; and its file
 * helpers, which write and free files in steps (util.c): every byte lands
 * in order, and a file another name still refers to is never shrunk.
 */
#include "server/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "check.h"

/* A pattern no two positions of a few MB share in a row. */
static unsigned char pat(size_t i, unsigned seed) {
    return (unsigned char)((i * 2654435761u + seed) >> 13);
}

/* 1 when path holds exactly n bytes of pat(., seed). */
static int holds(const char *path, size_t n, unsigned seed) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    unsigned char *b = malloc(n + 1);
    ssize_t got = b ? read(fd, b, n + 1) : -1;
    close(fd);
    int ok = got == (ssize_t)n;
    for (size_t i = 0; ok && i < n; i++)
        ok = b[i] == pat(i, seed);
    free(b);
    return ok;
}

/* Writes n bytes of pat(., seed) to path with fpx_write_all. */
static int make_file(const char *path, size_t n, unsigned seed) {
    unsigned char *b = malloc(n);
    if (!b)
        return -1;
    for (size_t i = 0; i < n; i++)
        b[i] = pat(i, seed);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int rc = fd >= 0 ? fpx_write_all(fd, b, n) : -1;
    if (fd >= 0)
        close(fd);
    free(b);
    return rc;
}

static void test_files(void) {
    char dir[] = "/tmp/fpx-test-util-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char a[64], b[64], c[64], sub[64], deep[80];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(c, sizeof c, "%s/c", dir);

    /* Writes of several steps, whole and in iovecs that cross the steps. */
    size_t big = ((size_t)5 << 20) + 12345;
    CHECK(make_file(a, big, 1) == 0);
    CHECK(holds(a, big, 1));
    unsigned char *src = malloc(big);
    CHECK(src != NULL);
    for (size_t i = 0; i < big; i++)
        src[i] = pat(i, 2);
    size_t cuts[] = {0, 700000, 700000, 2300000, big}; /* one iovec is empty */
    struct iovec iov[4];
    for (int i = 0; i < 4; i++)
        iov[i] = (struct iovec){src + cuts[i], cuts[i + 1] - cuts[i]};
    int fd = open(b, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && fpx_writev_all(fd, iov, 4) == 0);
    close(fd);
    CHECK(holds(b, big, 2));
    free(src);

    /* A file replaced or removed while another name refers to it: that
     * name keeps every byte (it is not shrunk in steps). */
    CHECK(link(a, c) == 0);
    CHECK(fpx_rename_over(b, a) == 0);
    CHECK(holds(a, big, 2) && holds(c, big, 1));
    CHECK(access(b, F_OK) != 0);
    CHECK(link(a, b) == 0);
    CHECK(fpx_unlink_file(a) == 0);
    CHECK(access(a, F_OK) != 0 && holds(b, big, 2));
    /* Replacing a name that does not exist, removing one that does not. */
    CHECK(fpx_rename_over(c, a) == 0 && holds(a, big, 1));
    CHECK(fpx_unlink_file(c) != 0);

    /* A tree with files bigger than a step goes whole. */
    snprintf(sub, sizeof sub, "%s/sub", dir);
    snprintf(deep, sizeof deep, "%s/sub/big", dir);
    CHECK(mkdir(sub, 0700) == 0 && make_file(deep, (size_t)20 << 20, 3) == 0);
    CHECK(fpx_rmtree(dir) == 0);
    CHECK(access(dir, F_OK) != 0);
}

int main(void) {
    test_files();
    const char *nine = "123456789";
    CHECK(fpx_crc32(0, nine, 9) == 0xCBF43926u);
    CHECK(fpx_crc32c(0, nine, 9) == 0xE3069283u);
    CHECK(fpx_crc32c_portable(0, nine, 9) == 0xE3069283u);
    CHECK(fpx_crc32c(0, "", 0) == 0);

    /* Every length and alignment, in one piece and in two: the fast path
     * (8 bytes at a time after an unaligned head) equals the portable one. */
    enum { N = 4096 };
    unsigned char *buf = malloc(N + 8);
    CHECK(buf != NULL);
    for (int i = 0; i < N + 8; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len < 300; len++) {
            uint32_t want = fpx_crc32c_portable(0, buf + off, len);
            CHECK(fpx_crc32c(0, buf + off, len) == want);
            size_t cut = len / 3;
            CHECK(fpx_crc32c(fpx_crc32c(0, buf + off, cut), buf + off + cut, len - cut) == want);
        }
    }
    CHECK(fpx_crc32c(0, buf, N) == fpx_crc32c_portable(0, buf, N));
    free(buf);

    /* Long buffers go through three interleaved streams joined by shifts:
     * lengths around whole chunks of three 8 KiB stripes, at every alignment,
     * equal the portable CRC, and so does a checksum combined from two
     * pieces' (fpx_crc32c_combine), whatever the cut. */
    enum { BIG = 3 * 8192 * 4 + 64 };
    unsigned char *big = malloc(BIG + 8);
    CHECK(big != NULL);
    for (size_t i = 0; i < BIG + 8; i++)
        big[i] = (unsigned char)(i * 2654435761u >> 13);
    const size_t lens[] = {3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1, 3 * 8192 * 2 + 17, BIG};
    for (size_t off = 0; off < 8; off += 3)
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            size_t len = lens[i];
            uint32_t want = fpx_crc32c_portable(0, big + off, len);
            CHECK(fpx_crc32c(0, big + off, len) == want);
            const size_t cuts[] = {0, 1, 7, len / 2, len - 1, len};
            for (size_t j = 0; j < sizeof cuts / sizeof cuts[0]; j++) {
                size_t cut = cuts[j];
                CHECK(fpx_crc32c_combine(fpx_crc32c(0, big + off, cut),
                                         fpx_crc32c(0, big + off + cut, len - cut),
                                         len - cut) == want);
            }
        }
    CHECK(fpx_crc32c_combine(0xE3069283u, 0, 0) == 0xE3069283u);
    free(big);
    return CHECK_STATUS("test_util");
}
