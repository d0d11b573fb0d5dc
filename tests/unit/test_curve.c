/*
 * test_curve.c - CurveZMQ key files: the parser shared by server and
 * clients, and the server's key generation and start-up checks on real
 * files in a temporary directory.
 */
#include "proto/keyfile.h"
#include "server/curve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define K1 "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
#define K2 "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"

static int find(const char *text, const char *name, char *out) {
    return fpx_keyfile_find(text, strlen(text), name, out);
}

static void write_file(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

int main(void) {
    char key[FPX_Z85_KEY_LEN + 1];
    CHECK(fpx_z85_key_valid(K1, 40));
    CHECK(!fpx_z85_key_valid(K1, 39));
    CHECK(!fpx_z85_key_valid("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\"", 40)); /* '"' */
    CHECK(!fpx_z85_key_valid("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf ", 40));

    /* the layouts: quoted, bare, indented, with comments and other sections */
    CHECK(find("secret-key = \"" K1 "\"\n", "secret-key", key) == 0 && !strcmp(key, K1));
    CHECK(find("secret-key=" K1, "secret-key", key) == 0 && !strcmp(key, K1));
    CHECK(find("# c\nmetadata\ncurve\n    public-key = \"" K2 "\"\r\n    secret-key = \"" K1
               "\"\r\n",
               "public-key", key) == 0 &&
          !strcmp(key, K2));
    CHECK(find("# secret-key = \"" K2 "\"\nsecret-key = " K1 "\n", "secret-key", key) == 0 &&
          !strcmp(key, K1));
    CHECK(find("secret-key-old = " K2 "\nsecret-key = " K1 "\n", "secret-key", key) == 0 &&
          !strcmp(key, K1));
    /* absent */
    CHECK(find("public-key = " K2 "\n", "secret-key", key) == 1);
    CHECK(find("", "secret-key", key) == 1);
    /* malformed: short, long, unterminated quote, trailing junk, twice, no value */
    CHECK(find("secret-key = \"rq:rM>}U?@Lns47E1%kR\"\n", "secret-key", key) == -1);
    CHECK(find("secret-key = " K1 "x\n", "secret-key", key) == -1);
    CHECK(find("secret-key = \"" K1 "\n", "secret-key", key) == -1);
    CHECK(find("secret-key = \"" K1 "\" junk\n", "secret-key", key) == -1);
    CHECK(find("secret-key = " K1 "\nsecret-key = " K1 "\n", "secret-key", key) == -1);
    CHECK(find("secret-key\n", "secret-key", key) == -1);
    CHECK(find("secret-key =\n", "secret-key", key) == -1);

    char dir[] = "/tmp/fpx-test-curve-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], pub_path[300], other[300];
    snprintf(path, sizeof path, "%s/server.key", dir);
    snprintf(pub_path, sizeof pub_path, "%s.pub", path);
    fpx_err err;
    char public_key[41], public2[41], secret_key[41];

    /* keygen: two files, right modes, loadable, never overwritten */
    CHECK(fpx_curve_keygen(path, public_key, &err) == 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(stat(pub_path, &st) == 0 && (st.st_mode & 0777) == 0644);
    CHECK(fpx_curve_load(path, public2, secret_key, &err) == 0 && !strcmp(public2, public_key));
    {
        FILE *f = fopen(pub_path, "r");
        char text[1024] = "";
        size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
        if (f)
            fclose(f);
        CHECK(fpx_keyfile_find(text, n, "public-key", key) == 0 && !strcmp(key, public_key));
        CHECK(fpx_keyfile_find(text, n, "secret-key", key) == 1); /* the .pub holds no secret */
    }
    CHECK(fpx_curve_keygen(path, public2, &err) == -1 && strstr(err.msg, "exists"));

    /* the public key file itself is not a server key file */
    chmod(pub_path, 0600);
    CHECK(fpx_curve_load(pub_path, public2, secret_key, &err) == -1 &&
          strstr(err.msg, "secret-key"));

    /* group- or world-accessible */
    chmod(path, 0640);
    CHECK(fpx_curve_load(path, public2, secret_key, &err) == -1 && strstr(err.msg, "chmod 600"));
    chmod(path, 0604);
    CHECK(fpx_curve_load(path, public2, secret_key, &err) == -1 && strstr(err.msg, "0604"));
    chmod(path, 0400);
    CHECK(fpx_curve_load(path, public2, secret_key, &err) == 0);

    /* missing, a directory, malformed, a public key of another pair */
    snprintf(other, sizeof other, "%s/missing.key", dir);
    CHECK(fpx_curve_load(other, public2, secret_key, &err) == -1 && strstr(err.msg, "cannot read"));
    CHECK(fpx_curve_load(dir, public2, secret_key, &err) == -1 && strstr(err.msg, "regular file"));
    snprintf(other, sizeof other, "%s/bad.key", dir);
    write_file(other, "secret-key = \"not a key\"\n", 0600);
    CHECK(fpx_curve_load(other, public2, secret_key, &err) == -1 && strstr(err.msg, "Z85"));
    write_file(other, "public-key = \"" K2 "\"\nsecret-key = \"" K1 "\"\n", 0600);
    CHECK(fpx_curve_load(other, public2, secret_key, &err) == -1 &&
          strstr(err.msg, "does not belong"));
    write_file(other, "secret-key = \"" K1 "\"\n", 0600); /* the public key is derived */
    CHECK(fpx_curve_load(other, public2, secret_key, &err) == 0 && !strcmp(secret_key, K1));

    unlink(other);
    unlink(pub_path);
    unlink(path);
    rmdir(dir);
    return CHECK_STATUS("test_curve");
}
