/*
 * store_impl.h - what store.c (writing: folders, the log, group commit,
 * snapshots) and recover.c (loading them back) share: the file formats'
 * constants (store.c's header describes them) and a few helpers.
 */
#ifndef FPX_STORE_IMPL_H
#define FPX_STORE_IMPL_H

#include "store.h"

#define WAL_MAGIC 0x43585046u     /* "FPXC" read little-endian: CRC-32C */
#define WAL_MAGIC_OLD 0x57585046u /* "FPXW": zlib's CRC-32 */
#define SNAP_TAG_OLD WAL_MAGIC    /* trailer of snapshots without identity */
#define SNAP_MAGIC 0x53585046u    /* "FPXS": identity header and trailer of a snapshot */
#define LOG_MAGIC 0x4c585046u     /* "FPXL": identity header of a log */
#define WAL_HDR 48
#define ID_FIXED 48
#define ID_VERSION 1u
#define ID_MAX (ID_FIXED + 2 * FPX_NAME_MAX + 8)

/* What an identity header says. */
typedef struct fpx_store_ident {
    uint64_t seq;
    uint8_t uid[FPX_UID_BYTES];
    char tenant[FPX_NAME_MAX + 1];
    char name[FPX_NAME_MAX + 1];
} fpx_store_ident;

/* "WHAT PATH: strerror(errno)" as an internal_error; -1. */
int fpx_store_io_err(fpx_err *err, const char *what, const char *path);
/* uid in hex into out (2 * FPX_UID_BYTES + 1 bytes). */
void fpx_store_uid_hex(const uint8_t *uid, char *out);
/* A new random unique id. */
int fpx_store_new_uid(uint8_t *uid, fpx_err *err);

#endif
