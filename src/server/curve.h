/*
 * curve.h - the server's CurveZMQ key pair: making one, and loading it at
 * start-up with the checks an operator needs to hear about before clients do.
 */
#ifndef FPX_CURVE_H
#define FPX_CURVE_H

#include "proto/keyfile.h"
#include "proto/proto.h"

/*
 * Reads the server's key file. Refuses a path that is not a regular file,
 * one that group or others may read or write (its mode must be 0600 or
 * stricter), and text without exactly one valid secret-key; a public-key
 * line, when present, must belong to that secret key. On success the Z85
 * keys are in public_key and secret_key; -1 with the reason in err.
 */
int fpx_curve_load(const char *path, char public_key[FPX_Z85_KEY_LEN + 1],
                   char secret_key[FPX_Z85_KEY_LEN + 1], fpx_err *err);

/*
 * Makes a new key pair (zmq_curve_keypair) and writes path (both keys, mode
 * 0600) and path.pub (the public key only, mode 0644, for clients). Neither
 * file may exist already: a key is never overwritten. The public key is
 * returned in public_key.
 */
int fpx_curve_keygen(const char *path, char public_key[FPX_Z85_KEY_LEN + 1], fpx_err *err);

#endif
