/*
 * test_util.c - the server's checksums against their published check values
 * (CRC catalogue: "123456789"), on every path the CPU offers.
 */
#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

int main(void) {
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
    return CHECK_STATUS("test_util");
}
