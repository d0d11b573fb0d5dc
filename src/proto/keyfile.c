/*
 * keyfile.c - finding a named Z85 key in the text of a key file.
 *
 * The parser is line based and strict about the one line it looks for: the
 * value must be exactly one 40-character Z85 key, so a truncated or pasted-
 * twice key is refused at start-up instead of failing every handshake later.
 * Z85's alphabet holds '#' and '=', so a comment is only a line whose first
 * non-blank character is '#'.
 */
#include "keyfile.h"

#include <unistd.h>

#include <stdlib.h>

#include <errno.h>

#include <string.h>

static const char z85_alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz"
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

int fpx_z85_key_valid(const char *s, size_t n) {
    if (n != FPX_Z85_KEY_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == 0 || !strchr(z85_alphabet, s[i]))
            return 0;
    return 1;
}

static int blank(char c) {
    return c == ' ' || c == '\t' || c == '\r';
}

/* One line, line[0..n): 1 and the key when it is `name = key`, 0 when it is
 * another line, -1 when it names the key but the value is malformed. */
static int match_line(const char *line, size_t n, const char *name, char *out) {
    size_t i = 0, nl = strlen(name);
    while (i < n && blank(line[i]))
        i++;
    if (n - i < nl || memcmp(line + i, name, nl) != 0)
        return 0;
    i += nl;
    size_t j = i;
    while (j < n && blank(line[j]))
        j++;
    if (j == n || line[j] != '=')
        return i < n && !blank(line[i]) ? 0 : -1; /* "secret-key-2 = ..." is another name */
    j++;
    while (j < n && blank(line[j]))
        j++;
    int quoted = j < n && line[j] == '"';
    j += (size_t)quoted;
    size_t start = j;
    while (j < n && line[j] != '"' && !blank(line[j]))
        j++;
    if (!fpx_z85_key_valid(line + start, j - start))
        return -1;
    memcpy(out, line + start, FPX_Z85_KEY_LEN);
    out[FPX_Z85_KEY_LEN] = 0;
    if (quoted) {
        if (j == n || line[j] != '"')
            return -1;
        j++;
    }
    while (j < n && blank(line[j]))
        j++;
    return j == n ? 1 : -1;
}

int fpx_keyfile_find(const char *text, size_t len, const char *name,
                     char out[FPX_Z85_KEY_LEN + 1]) {
    int found = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *line = text + pos;
        size_t n = end - pos, i = 0;
        while (i < n && blank(line[i]))
            i++;
        if (i < n && line[i] != '#') {
            char key[FPX_Z85_KEY_LEN + 1];
            int m = match_line(line, n, name, key);
            if (m < 0 || (m > 0 && found))
                return -1;
            if (m > 0) {
                memcpy(out, key, sizeof key);
                found = 1;
            }
        }
        pos = end + 1;
    }
    return found ? 0 : 1;
}

int fpx_keyfile_read(int fd, char **text, size_t *len) {
    char *buf = malloc(FPX_KEYFILE_MAX);
    size_t n = 0;
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, FPX_KEYFILE_MAX - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (r > 0 && n + (size_t)r == FPX_KEYFILE_MAX)) {
            int e = r < 0 ? errno : EFBIG;
            free(buf);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *text = buf;
    *len = n;
    return 0;
}
