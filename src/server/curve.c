/*
 * curve.c - CurveZMQ key files on the server side.
 *
 * The secret key file is treated like an SSH host key: it must be private to
 * the server's user, and a bad one stops the server at start-up with a
 * message saying which file and why, rather than starting a server that no
 * client can complete a handshake with.
 */
#include "curve.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static int no_curve(fpx_err *err) {
    return fpx_err_set(err, FPX_E_INTERNAL,
                       "this libzmq was built without CURVE security (zmq_has(\"curve\") is "
                       "false)");
}

int fpx_curve_load(const char *path, char public_key[FPX_Z85_KEY_LEN + 1],
                   char secret_key[FPX_Z85_KEY_LEN + 1], fpx_err *err) {
    if (!zmq_has("curve"))
        return no_curve(err);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fpx_err_set(err, FPX_E_VALIDATION, "cannot read %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fpx_err_set(err, FPX_E_VALIDATION, "%s is not a regular file", path);
    }
    if (st.st_mode & 077) {
        close(fd);
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "%s holds a secret key but group or others may access it (mode "
                           "%04o): chmod 600 it",
                           path, (unsigned)(st.st_mode & 07777));
    }
    char *text = NULL;
    size_t len = 0;
    int rc = fpx_keyfile_read(fd, &text, &len);
    int e = errno;
    close(fd);
    if (rc != 0) {
        return fpx_err_set(err, FPX_E_VALIDATION, "cannot read %s: %s", path,
                           e == EFBIG ? "larger than a key file can be" : strerror(e));
    }
    char stated[FPX_Z85_KEY_LEN + 1];
    int s = fpx_keyfile_find(text, len, "secret-key", secret_key);
    int p = fpx_keyfile_find(text, len, "public-key", stated);
    sodium_memzero(text, len);
    free(text);
    uint8_t raw[32];
    int decoded = s == 0 && p >= 0 && zmq_z85_decode(raw, secret_key) != NULL;
    sodium_memzero(raw, sizeof raw); /* only the check was wanted, also on failure */
    if (!decoded) {
        sodium_memzero(secret_key, FPX_Z85_KEY_LEN + 1);
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "%s is not a CurveZMQ secret key file: it needs one line "
                           "secret-key = \"<40 Z85 characters>\" (make one with "
                           "faiss-proxy-server --curve-keygen PATH)",
                           path);
    }
    if (zmq_curve_public(public_key, secret_key) != 0) {
        sodium_memzero(secret_key, FPX_Z85_KEY_LEN + 1);
        return fpx_err_set(err, FPX_E_VALIDATION, "%s: cannot derive the public key: %s", path,
                           zmq_strerror(zmq_errno()));
    }
    if (p == 0 && strcmp(stated, public_key) != 0) {
        sodium_memzero(secret_key, FPX_Z85_KEY_LEN + 1);
        return fpx_err_set(err, FPX_E_VALIDATION,
                           "%s: its public-key does not belong to its secret-key", path);
    }
    return 0;
}

/* Creates path (never over an existing file) with mode and contents text. */
static int write_new(const char *path, mode_t mode, const char *text, fpx_err *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return fpx_err_set(err, FPX_E_VALIDATION, "cannot create %s: %s", path,
                           errno == EEXIST ? "it exists (keys are never overwritten)"
                                           : strerror(errno));
    /* open() applies the umask; the modes below are the point of the files. */
    if (fchmod(fd, mode) != 0 || fpx_write_all(fd, text, strlen(text)) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot write %s: %s", path, strerror(e));
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(path);
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

int fpx_curve_keygen(const char *path, char public_key[FPX_Z85_KEY_LEN + 1], fpx_err *err) {
    if (!zmq_has("curve"))
        return no_curve(err);
    char pub_path[FPX_PATH_MAX];
    if (fpx_path(pub_path, "%s.pub", path) != 0)
        return fpx_err_set(err, FPX_E_VALIDATION, "key file path too long");
    char secret_key[FPX_Z85_KEY_LEN + 1];
    if (zmq_curve_keypair(public_key, secret_key) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    char secret_text[512], public_text[512];
    snprintf(secret_text, sizeof secret_text,
             "# faiss-proxy server CurveZMQ key pair: keep this file private (mode 0600).\n"
             "# The server reads it with --curve-secret-key-file; clients need only the\n"
             "# public key, written beside it with the suffix .pub.\n"
             "curve\n"
             "    public-key = \"%s\"\n"
             "    secret-key = \"%s\"\n",
             public_key, secret_key);
    snprintf(public_text, sizeof public_text,
             "# faiss-proxy server CurveZMQ public key: give it to clients\n"
             "# (FAISS_PROXY_SERVER_KEY=<this file or the key itself>).\n"
             "curve\n"
             "    public-key = \"%s\"\n",
             public_key);
    sodium_memzero(secret_key, sizeof secret_key);
    int rc = write_new(path, 0600, secret_text, err);
    sodium_memzero(secret_text, sizeof secret_text);
    if (rc != 0)
        return -1;
    if (write_new(pub_path, 0644, public_text, err) != 0) {
        unlink(path);
        return -1;
    }
    /* Both names durable before "wrote" is printed. */
    char dir[FPX_PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (fpx_path(dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".") == 0 &&
        fpx_fsync_dir(slash == path ? "/" : dir) != 0)
        return fpx_err_set(err, FPX_E_INTERNAL, "cannot sync the folder of %s: %s", path,
                           strerror(errno));
    return 0;
}
