/*
 * store.h - durable storage of indexes under FAISS_DATA_DIR.
 *
 *   DATA_DIR/<tenant>/<index>/snapshot   the whole index (FAISS bytes + tables)
 *   DATA_DIR/<tenant>/<index>/wal        writes since that snapshot
 *
 * Both files name the index they belong to (tenant, name, unique id) and the
 * sequence number that links them. A write is logged (one record,
 * checksummed) and applied, and acknowledged once a fdatasync shared with
 * the writes logged meanwhile covers it (group commit). Recovery
 * loads the snapshot, checks that the log belongs to it and chains onto it,
 * and replays the log records after it; a torn tail (a write that was never
 * acknowledged) is cut off, never half-applied. Anything else that does not
 * add up refuses the index and leaves its files as they were. Names reaching
 * this module were validated (fpx_name_valid), so they are safe path
 * components.
 */
#ifndef FPX_STORE_H
#define FPX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "index.h"

typedef enum fpx_walop {
    FPX_WAL_ADD = 1,     /* data: n*d float32 [+ n int64 labels]; meta: items or none */
    FPX_WAL_TRAIN = 2,   /* data: n*d float32 */
    FPX_WAL_DELETE = 3,  /* meta: the ids (one, or an array) */
    FPX_WAL_REMOVE = 4,  /* meta: {"ids": [labels]} or {"range": [lo, hi]} (FAISS remove_ids) */
    FPX_WAL_RESET = 5,   /* nothing */
    FPX_WAL_PARAM = 6,   /* meta: {"name": str, "value": number} */
    FPX_WAL_LEASE = 7,   /* meta: {"lease_seconds": int}, 0: no lease (set_lease) */
    FPX_WAL_TRAINED = 8, /* data: the trained index as FAISS serializes it; replaces the engine */
    FPX_WAL_SKIP = 9,    /* cluster mode: a stream record that failed to apply on every replica */
    FPX_WAL_MERGE = 10,  /* data: the other index's export; meta: {"add_id": int, "from": name} */
    /* cluster mode: a merge_from out of this index (docs/cluster.md, "merge_from") */
    FPX_WAL_FENCE = 11,  /* meta: {"merge_id": str, "to": name, "to_uid": bin, "add_id": int} */
    FPX_WAL_UNFENCE = 12 /* meta: {"merge_id": str}: the merge did not happen */
} fpx_walop;

#define FPX_WAL_LABELS 1u /* flag of FPX_WAL_ADD: labels follow the vectors */
/* The high 16 bits of a record's flags: its horizon, how many records right
 * before it were not yet durable when it was appended (group commit). */
#define FPX_WAL_HORIZON_SHIFT 16
#define FPX_WAL_HORIZON_MASK 0xffff0000u
#define FPX_WAL_HORIZON_MAX 0xffffu

/* A decoded log record handed to the replay callback. */
typedef struct fpx_walrec {
    fpx_walop op;
    uint32_t flags;
    int64_t n;
    const uint8_t *data;
    size_t data_len;
    const uint8_t *meta;
    size_t meta_len;
    /* fpx_crc32c(0, data, data_len) when data_crc_known: taken by the
     * request before it waits for the index's lock (with the NaN check, in
     * one pass), so that the lock is held only to write and apply. */
    uint32_t data_crc;
    int data_crc_known;
} fpx_walrec;

/* Path of an index folder into buf (FPX_PATH_MAX bytes). */
int fpx_store_index_dir(const char *data_dir, const char *tenant, const char *name, char *buf);

/* Creates the folder of a new index with a new unique id (or the one ix
 * already has, when not all zero: a cluster replica takes its index's id), its first snapshot
 * and its log, atomically (written under a dot-name, then renamed).
 * data_dir is borrowed by ix and must outlive it.
 * err->type FPX_E_EXISTS when the folder already exists. */
int fpx_store_create(const char *data_dir, fpx_index *ix, fpx_err *err);

/* Appends one record (ix->seq is then its seq), under the index's exclusive
 * lock. It is not durable yet: the caller applies it, then calls
 * fpx_store_logged (or fpx_store_unlog when applying failed), and after
 * releasing the lock waits for fpx_store_sync before acknowledging it.
 * On failure nothing was logged. */
int fpx_store_log(fpx_index *ix, const fpx_walrec *rec, fpx_err *err);

/* The record just appended was applied: the next fdatasync covers it. */
void fpx_store_logged(fpx_index *ix);

/* Takes back the last record (its apply failed). */
void fpx_store_unlog(fpx_index *ix, uint64_t wal_bytes_before);

/* Waits until the record seq is durable: one fdatasync serves every record
 * appended before it began (group commit), and a snapshot covering it does
 * too. Called without the index's lock. -1 (err set) when the fdatasync
 * failed: the index then refuses writes until a restart. */
int fpx_store_sync(fpx_index *ix, uint64_t seq, fpx_err *err);

/* Writes a new snapshot and starts a new log after it. */
int fpx_store_snapshot(fpx_index *ix, fpx_err *err);

/*
 * A snapshot in three steps, so that writers wait for a copy in memory
 * rather than for the disk: _take under the index's shared lock (writers
 * out) copies its state; _write, without the lock, writes it to the index's
 * folder (the one it had at _take, wherever a delete moved it since) and
 * syncs it; _finish, under the shared lock again, starts a new log after it
 * that holds the records written meanwhile. A crash at any point leaves a
 * snapshot and a log that chain (the old log reaches past the new
 * snapshot's seq). _take gives 1 when the state is too large to copy (the
 * caller writes it with fpx_store_snapshot) or the log is broken; a job
 * that is not finished is dropped with fpx_store_snapshot_drop.
 */
typedef struct fpx_snap_job fpx_snap_job;
int fpx_store_snapshot_take(fpx_index *ix, fpx_snap_job **job, fpx_err *err);
int fpx_store_snapshot_write(fpx_snap_job *job, fpx_err *err);
int fpx_store_snapshot_finish(fpx_index *ix, fpx_snap_job *job, fpx_err *err);
void fpx_store_snapshot_drop(fpx_snap_job *job);
/* Writes ix's snapshot body alone (snapshot.h, no file header) to fd,
 * buffered, as the snapshot file carries it; *size and *crc receive its
 * length and CRC-32C. The caller holds ix's lock (shared is enough). */
int fpx_store_write_body(const fpx_index *ix, int fd, uint64_t *size, uint32_t *crc, fpx_err *err);

/* Renames the index's folder away, durably: from here on the index is gone
 * from disk (a start removes whatever is left of such a folder). *gone
 * receives the new path, malloc'd, for the caller to remove. */
int fpx_store_retire(fpx_index *ix, char **gone, fpx_err *err);
/* Renames away and removes the folder of an index that is not loaded
 * (refused at start). */
int fpx_store_remove_dir(const char *data_dir, const char *tenant, const char *name, fpx_err *err);

/* Called for each index found and loaded by fpx_store_load_all. Takes ix. */
typedef int (*fpx_store_found)(void *ctx, fpx_index *ix);
/* Applies one replayed record to ix. */
typedef int (*fpx_store_apply)(fpx_index *ix, const fpx_walrec *rec, fpx_err *err);
/* Called for each index that was refused: why, and its folder (left as it was). */
typedef void (*fpx_store_refused)(void *ctx, const char *tenant, const char *name,
                                  const char *reason, const char *dir);

/* Loads every index under data_dir: snapshot + log replay through apply.
 * Removes leftovers of interrupted creates and deletes. An index that cannot
 * be loaded (unreadable, damaged, not whose its folder says, or not
 * chaining) is logged as an ERROR, reported to refused, and its files are
 * left untouched. data_dir is borrowed by every index loaded. */
int fpx_store_load_all(const char *data_dir, fpx_store_apply apply, fpx_store_found found,
                       fpx_store_refused refused, void *ctx, fpx_err *err);

#endif
