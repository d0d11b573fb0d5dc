/*
 * store.h - durable storage of indexes under FAISS_DATA_DIR.
 *
 *   DATA_DIR/<tenant>/<index>/snapshot   the whole index (FAISS bytes + tables)
 *   DATA_DIR/<tenant>/<index>/wal        writes since that snapshot
 *
 * A write is logged (one record, checksummed, fdatasync'd) before it is
 * applied and acknowledged. Recovery loads the snapshot and replays the log
 * records after it; a torn or corrupt tail (a write that was never
 * acknowledged) is cut off, never half-applied. Names reaching this module
 * were validated (fpx_name_valid), so they are safe path components.
 */
#ifndef FPX_STORE_H
#define FPX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "index.h"

typedef enum fpx_walop {
    FPX_WAL_ADD = 1,    /* data: n*d float32 [+ n int64 labels]; meta: items or none */
    FPX_WAL_TRAIN = 2,  /* data: n*d float32 */
    FPX_WAL_DELETE = 3, /* meta: the ids (one, or an array) */
    FPX_WAL_REMOVE = 4, /* meta: {"ids": [labels]} or {"range": [lo, hi]} (FAISS remove_ids) */
    FPX_WAL_RESET = 5,  /* nothing */
    FPX_WAL_PARAM = 6   /* meta: {"name": str, "value": number} */
} fpx_walop;

#define FPX_WAL_LABELS 1u /* flag of FPX_WAL_ADD: labels follow the vectors */

/* A decoded log record handed to the replay callback. */
typedef struct fpx_walrec {
    fpx_walop op;
    uint32_t flags;
    int64_t n;
    const uint8_t *data;
    size_t data_len;
    const uint8_t *meta;
    size_t meta_len;
} fpx_walrec;

/* Path of an index folder into buf (FPX_PATH_MAX bytes). */
int fpx_store_index_dir(const char *data_dir, const char *tenant, const char *name, char *buf);

/* Creates the folder of a new index with its first snapshot, atomically
 * (written under a dot-name, then renamed), and opens its log.
 * err->type FPX_E_EXISTS when the folder already exists. */
int fpx_store_create(const char *data_dir, fpx_index *ix, fpx_err *err);

/* Appends one record and makes it durable. On failure nothing was logged. */
int fpx_store_log(const char *data_dir, fpx_index *ix, const fpx_walrec *rec, fpx_err *err);

/* Takes back the last record (its apply failed). */
void fpx_store_unlog(fpx_index *ix, uint64_t wal_bytes_before);

/* Writes a new snapshot and empties the log. */
int fpx_store_snapshot(const char *data_dir, fpx_index *ix, fpx_err *err);

/* Renames the folder away (durably) and removes it. */
int fpx_store_remove(const char *data_dir, fpx_index *ix, fpx_err *err);

void fpx_store_close(fpx_index *ix);

/* Called for each index found and loaded by fpx_store_load_all. Takes ix. */
typedef int (*fpx_store_found)(void *ctx, fpx_index *ix);
/* Applies one replayed record to ix. */
typedef int (*fpx_store_apply)(fpx_index *ix, const fpx_walrec *rec, fpx_err *err);

/* Loads every index under data_dir: snapshot + log replay through apply.
 * Removes leftovers of interrupted creates and deletes. An index that cannot
 * be loaded is logged and skipped (its files are left alone). */
int fpx_store_load_all(const char *data_dir, fpx_store_apply apply, fpx_store_found found,
                       void *ctx, fpx_err *err);

#endif
