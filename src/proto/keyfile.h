/*
 * keyfile.h - CurveZMQ key files, read the same way by the server (its
 * secret key) and the clients (the server's public key).
 *
 * A key file is text: lines of `name = "Z85 key"` (quotes optional), blank
 * lines and `#` comments, everything else ignored. That is the layout
 * `faiss-proxy-server --curve-keygen` writes, and it also reads the curve
 * section of ZeroMQ certificate files made by other tools.
 */
#ifndef FPX_KEYFILE_H
#define FPX_KEYFILE_H

#include <stddef.h>

/* A CurveZMQ key as Z85 text: 40 characters (41 bytes with the NUL). */
#define FPX_Z85_KEY_LEN 40

/* 1 when s[0..n) is 40 characters of the Z85 alphabet. (Whether the 32 bytes
 * they stand for decode is for zmq_z85_decode to say.) */
int fpx_z85_key_valid(const char *s, size_t n);

/*
 * Looks up the key called name (e.g. "secret-key") in the key file text
 * text[0..len). Returns 0 with the key in out (NUL-terminated) when the name
 * appears once with a well-formed key, 1 when it does not appear, -1 when it
 * appears with something that is not a Z85 key, or more than once.
 */
int fpx_keyfile_find(const char *text, size_t len, const char *name, char out[FPX_Z85_KEY_LEN + 1]);

/* A key file is a few lines; anything larger is not one. */
#define FPX_KEYFILE_MAX 65536

/* Reads the whole of fd, at most FPX_KEYFILE_MAX bytes, into *text
 * (malloc'd; wipe and free it). 0, or -1 with errno (EFBIG: too large to be a
 * key file). */
int fpx_keyfile_read(int fd, char **text, size_t *len);

#endif
