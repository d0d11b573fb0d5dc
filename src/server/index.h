/*
 * index.h - one index in memory: the FAISS engine plus the server's own tables.
 *
 * FAISS 1.7.3 cannot remove from HNSW, renumbers labels when removing from a
 * flat index, and its id selectors throw on IndexIDMap and IndexPQ. So the
 * engine only ever appends, and this module keeps, per position ("slot"):
 * whether it is alive (tombstones), its label, the caller's key and the
 * metadata. Deleting or replacing a vector tombstones its slot; searches pass
 * the live (and filter-matching) slots to the engine as an allowed set.
 *
 * Labels: a vector added without an explicit label gets the next value of the
 * index's label counter, which equals ntotal while nothing was deleted (as
 * FAISS add). While every slot's label equals the slot ("identity mode", the
 * common case) no label table exists at all; the first label that differs
 * builds the table and the label-to-slot map.
 *
 * Every mutating function either succeeds or leaves the index unchanged:
 * everything that can fail (allocation, FAISS) happens before the first
 * visible change. Callers hold the index's lock: shared for searches and
 * reads, exclusive for writes.
 *
 * Six files implement it: index.c the tables and what changes them,
 * index_read.c what searches and info read through them, compact.c the
 * rebuild without tombstones, keys.c the list of keys and metadata
 * (list_keys, and an import's), filter.c (filter.h) metadata filters,
 * snapshot.c (snapshot.h) the snapshot body. Both headers are included
 * here, so this one include gives an index's whole interface.
 */
#ifndef FPX_INDEX_H
#define FPX_INDEX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "batch.h"
#include "engine/engine.h"
#include "filter.h"
#include "proto/proto.h"
#include "slotmap.h"
#include "snapshot.h"
#include "util.h"

/* A length-prefixed, immutable byte string (canonical msgpack of a key or of
 * a metadata map). */
typedef struct fpx_blob {
    uint32_t len;
    uint8_t data[];
} fpx_blob;

/* Bytes of an index's unique id: random, given at creation, never reused. */
#define FPX_UID_BYTES 16
/* A merge_from's id in a cluster: 32 hex digits. */
#define FPX_FENCE_ID_MAX 32

typedef struct fpx_index {
    char tenant[FPX_NAME_MAX + 1];
    char name[FPX_NAME_MAX + 1];
    char *index_type; /* as the caller gave it */
    fpx_metric metric;
    int64_t dim;
    /* Fixed with the engine's type: requests read them before taking the
     * lock (a compaction swaps ix->eng under the exclusive lock). */
    int binary;
    size_t row_bytes;

    pthread_rwlock_t lock;
    /* Long reads (a snapshot, a compaction's copy) hold the lock shared for
     * as long as they take. A writer queued on the lock meanwhile would hold
     * every search off with it (writers first), so a writer that has to wait
     * waits here instead, outside the lock, until they end. */
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    int long_reads; /* under gate_mu */
    atomic_int refs;
    int dropped;     /* deleted; waiting for the last reference */
    int creating;    /* registered, its files not yet durable: invisible to lookups */
    int snap_queued; /* waiting for the background snapshot writer (server.c) */
    /* 1 while that writer writes a snapshot to disk without the lock
     * (fpx_store_snapshot_write): no other snapshot may start meanwhile */
    atomic_int snap_writing;
    int snap_force; /* that snapshot is wanted whatever the log's size */
    /* The engine's type cannot be compacted (set once, by the snapshot
     * writer, on the first try; read by every writer). */
    atomic_int compact_off;
    struct fpx_index *snap_next;
    /* Lease (lease.c): 0 never expires; else the index is dropped once no
     * request renewed it for this many seconds. Kept in the snapshot. */
    _Atomic int64_t lease_seconds;
    _Atomic uint64_t lease_renewed_ns; /* fpx_now_ns() of the last renewal */
    fpx_batcher batch;                 /* concurrent searches answered together */
    /* What one query of a plain search took lately, in ns (a moving
     * average; 0 before the first): whether the network thread may answer
     * the next one itself (net.c, fpx_server_handle_inline). */
    _Atomic uint64_t query_ns;

    fpx_engine *eng;
    int64_t nslots;  /* == engine ntotal */
    int64_t cap;     /* slots the tables below have room for */
    uint64_t *alive; /* bitset of live slots */
    int64_t nlive;
    int64_t *labels; /* NULL in identity mode (label == slot) */
    int64_t next_label;
    fpx_blob **keys; /* NULL until the first key */
    fpx_blob **meta; /* NULL until the first metadata */
    int64_t nkeys;   /* live slots holding a key */
    fpx_slotmap keymap;
    fpx_slotmap labelmap; /* only outside identity mode */
    /* Compactions so far (since load): they renumber slots, so a list_keys
     * cursor (a slot) names the count it was given under. */
    uint32_t compactions;

    /* storage state, owned by store.c */
    /* borrowed: the server's data dir, which outlives the index */
    const char *data_dir;
    /* unique id, named by the snapshot and the log header */
    uint8_t uid[FPX_UID_BYTES];
    uint64_t seq;      /* sequence number of the last logged write */
    uint64_t snap_seq; /* last write covered by the snapshot on disk */
    uint64_t wal_bytes;
    uint64_t snap_bytes; /* size of the snapshot on disk */
    /* What the log holds since the snapshot (fpx_apply counts it): 0 while
     * it is only appends (adds that replaced no vector, settings, leases),
     * with log_add_bytes of added vectors; 1 once anything else was
     * applied. fpx_server_snapshot_due reads it. */
    int log_rewrites;
    uint64_t log_add_bytes;
    /* Cluster mode: the ids of the nodes holding a replica, comma-separated
     * (owned; NULL on a single server). ix->seq is then the sequence of the
     * last record of the index's stream applied here (docs/cluster.md). */
    char *placement;
    /* In a cluster, where its lease is read (the cluster's, lease.c: 1
     * leased, with its length and the seconds left); NULL: lease_seconds. */
    int (*lease_of)(void *ctx, const uint8_t *uid, int64_t *secs, double *remaining);
    void *lease_ctx;
    /* Group commit (store.c): a write is appended and applied under the
     * index's exclusive lock, then waits, without the lock, for an fdatasync
     * that covers it; one fdatasync serves every write appended before it
     * began. Guarded by sync_mu, not by the index's lock. */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    int log_fd;           /* the log, open while writes wait for their sync; else -1 */
    int log_users;        /* writers between appending and applying their record */
    int syncing;          /* one waiter is in fdatasync for all */
    uint64_t written_seq; /* last record appended and applied */
    uint64_t synced_seq;  /* last record known durable (by a fdatasync or a snapshot) */
    char log_broken[256]; /* why a fdatasync failed: writes are refused from then on */
    /* merge_from records whose other index may not have logged its reset
     * yet: the other index (by unique id) and its last sequence when the
     * merge was logged. Filled by replay and by a merge whose reset failed,
     * kept in snapshots while the other index is refused at start, so that
     * a start finishes the merge whenever the other comes back (merge.c).
     * Owned; NULL when none. */
    struct fpx_merge_todo *merge_todo;
    /* A merge_from out of this index could not log this index's reset (the
     * vectors went to merge_owed_to, durably): the next write to it, or a
     * merge_from out of it, logs the reset first (merge.c). Guarded by the
     * index's lock; a restart finishes it from the target's merge_todo. */
    int merge_owed;
    char merge_owed_to[FPX_NAME_MAX + 1];
    /* Cluster mode: a merge_from out of this index fenced it (its stream's
     * record fence_seq, docs/cluster.md "merge_from"). Until the merge's
     * reset or an unfence with this id, every replica refuses the stream's
     * other writes. Kept in snapshots; fence_id empty: none. fence_ms is
     * when this replica applied or loaded it (monotonic, not kept). */
    char fence_id[FPX_FENCE_ID_MAX + 1];
    char fence_to[FPX_NAME_MAX + 1];
    uint8_t fence_to_uid[FPX_UID_BYTES];
    int64_t fence_add_id;
    uint64_t fence_seq, fence_ms;
    /* Copies of nlive and snap_bytes + wal_bytes, readable without the lock
     * (tenant quotas sum them over a tenant's indexes; registry.c). */
    atomic_llong use_vectors, use_bytes;
} fpx_index;

typedef struct fpx_merge_todo {
    uint8_t uid[FPX_UID_BYTES];
    uint64_t seq;
    struct fpx_merge_todo *next;
} fpx_merge_todo;

/* Frees ix's merge_todo list. */
void fpx_index_merge_todo_clear(fpx_index *ix);

/*
 * Maps the protocol's index_type and metric to a factory string and metric:
 * "IndexFlatL2"/"L2" -> Flat, L2; "IndexFlatIP"/"IP" -> Flat, IP; anything
 * else is a factory string with metric (default L2).
 */
int fpx_index_resolve_type(const char *index_type, const char *metric, const char **factory,
                           fpx_metric *out, fpx_err *err);

/* A new empty index (no storage attached). */
int fpx_index_new(const char *tenant, const char *name, const char *index_type, int64_t dim,
                  const char *metric, fpx_index **out, fpx_err *err);
/* The same, with FAISS's metric_arg (NULL: none given; refused with L2 and IP,
 * where FAISS does not keep it). */
int fpx_index_new_metric(const char *tenant, const char *name, const char *index_type, int64_t dim,
                         const char *metric, const double *metric_arg, fpx_index **out,
                         fpx_err *err);
/* An index read from FAISS's bytes (a snapshot, an import) trains as FAISS's
 * read_index leaves it, which is not as its factory string builds it (k-means
 * iterations, a quantizer that trains alone): an untrained index whose type
 * is a factory string the server builds takes those settings from a new
 * build of it. Nothing changes for other types or trained indexes. */
void fpx_index_factory_train_params(fpx_index *ix);
void fpx_index_free(fpx_index *ix);

/* One entry of a key/metadata list (nil, or a map with an optional "id"
 * and an optional "metadata"), entry i of the list called `what` in the
 * message. */
int fpx_index_check_item(const msgpack_object *it, const char *what, uint32_t i, fpx_err *err);
/* Checks an add_vectors metadata object (NULL = none) for n vectors:
 * a list of n maps with an optional "id" (str or int) and "metadata" (map or nil). */
int fpx_index_check_items(const msgpack_object *items, int64_t n, fpx_err *err);

/*
 * Adds n vectors. labels (NULL = from the label counter) are explicit labels
 * (>= 0; a label already present replaces that vector); items as checked by
 * fpx_index_check_items (a key already present replaces that vector).
 */
int fpx_index_add(fpx_index *ix, int64_t n, const void *x, const int64_t *labels,
                  const msgpack_object *items, int64_t *added, fpx_err *err);
int fpx_index_train(fpx_index *ix, int64_t n, const void *x, fpx_err *err);

/* Deletes by caller keys or labels: ids is one key/label or an array of them.
 * Each is looked up as a key first, then (when an integer) as a label. */
int fpx_index_delete(fpx_index *ix, const msgpack_object *ids, int64_t *deleted, fpx_err *err);

/* 1 when an index_type asks for FAISS's IndexIDMap wrapper, 2 for its
 * IndexIDMap2, as a prefix ("IDMap2,Flat") or a suffix ("Flat,IDMap2"), else
 * 0. With a wrapper, labels stay as given when vectors are removed, whatever
 * the index type, and an export is wrapped the same way. */
int fpx_index_type_has_idmap(const char *index_type);

/* 1 when index_type names a binary index (BFlat, BIVF<n>, BHNSW<M>, BHash...,
 * IndexBinaryFlat): its vectors are rows of dimension/8 bytes. */
int fpx_index_type_is_binary(const char *index_type);

/* The live slot holding a label, or -1. */
int64_t fpx_index_slot_of(const fpx_index *ix, int64_t label);

/*
 * FAISS remove_ids: removes the vectors whose label is one of labels[0..n),
 * or, with labels NULL, in [lo, hi). Fails as FAISS does on types it cannot
 * remove from (HNSW). On types whose FAISS remove_ids compacts (flat codes,
 * unless created with an IDMap wrapper) the labels above each removed one
 * move down, as in FAISS, and the next label is the new count.
 */
int fpx_index_remove(fpx_index *ix, int64_t n, const int64_t *labels, int64_t lo, int64_t hi,
                     int64_t *removed, fpx_err *err);

/*
 * FAISS merge_from (merge.c): the vectors of other (an engine read from the
 * other index's export, emptied here; olabels its labels, NULL: label =
 * position) go after ix's. On IVF indexes and indexes made with an IDMap
 * wrapper they keep their labels plus add_id (a label ix already holds is a
 * validation error: a label names one vector here, where FAISS would hold
 * both); on flat-code indexes they take the next labels, and add_id must be 0,
 * as FAISS says. Succeeds whole or changes nothing.
 */
/* Whether ix has a live vector with a caller key or metadata: FAISS has
 * neither, and merge_from would have to move them. */
int fpx_index_has_entries(const fpx_index *ix);

int fpx_index_merge(fpx_index *ix, fpx_engine *other, const int64_t *olabels, int64_t add_id,
                    fpx_err *err);

/* FAISS reset: no vectors left (training kept), labels from 0 again. */
int fpx_index_reset(fpx_index *ix, fpx_err *err);

/*
 * Compaction: tombstoned slots leave the engine and the tables. Whether it is
 * due: at least min_dead dead slots (0: never) making a quarter of all.
 */
int fpx_index_compact_due(const fpx_index *ix, int64_t min_dead);

/* The exclusive lock, taken after any long read of ix has ended, without
 * queueing on the lock behind one (see gate_mu above). */
void fpx_index_lock_write(fpx_index *ix);
/* The shared lock for a read that takes long: writers wait outside the lock
 * until fpx_index_long_read_end, so searches go on meanwhile. */
void fpx_index_long_read_begin(fpx_index *ix);
void fpx_index_long_read_end(fpx_index *ix);
/*
 * Builds, beside ix and without changing it (the caller holds ix's lock
 * shared), an index holding only ix's live slots, in order, with their
 * labels, keys and metadata (the blobs are shared with ix, not copied). 0;
 * 1 when the index type cannot be compacted (nothing made); -1 on error.
 */
int fpx_index_compact_build(const fpx_index *ix, fpx_index **out, fpx_err *err);
/* Moves c's engine and tables into ix and ix's old ones into c (the caller
 * holds ix's lock exclusive, and ix is unchanged since c was built). Cannot
 * fail; labels, keys and metadata answer as before, from fewer slots. */
void fpx_index_compact_commit(fpx_index *ix, fpx_index *c);
/* Frees what _build made or _commit left in c, never the shared blobs. */
void fpx_index_compact_free(fpx_index *c);

/* The live slots as an engine bitset (borrowed from ix). */
fpx_bitset fpx_index_live(const fpx_index *ix);

/* FAISS's bytes of ix's live vectors under their labels (fpx_engine_export);
 * *buf is malloc'd. */
int fpx_index_export(const fpx_index *ix, uint8_t **buf, size_t *len, fpx_err *err);

/* An index around an imported engine (taken, also on failure); labels
 * (NULL: label = position) as fpx_engine_import returns them. */
int fpx_index_import(const char *tenant, const char *name, const char *index_type, fpx_engine *eng,
                     const int64_t *labels, fpx_index **out, fpx_err *err);

/* k-NN search; I receives slots (-1 = none). Fills D/I fully. */
int fpx_index_search(fpx_index *ix, int64_t nq, const void *x, int64_t k,
                     const fpx_search_params *params, const msgpack_object *filter, void *D,
                     int64_t *I, fpx_err *err);

/* Range search; *lims (nq+1), *D and *I (slots) are malloc'd. */
int fpx_index_range_search(fpx_index *ix, int64_t nq, const void *x, float radius,
                           const fpx_search_params *params, const msgpack_object *filter,
                           int64_t **lims, float **D, int64_t **I, fpx_err *err);

/* The two searches restricted further to the labels an id selector picks
 * (sel: checked by fpx_idsel_check; NULL or nil: none). */
int fpx_index_search_sel(fpx_index *ix, int64_t nq, const void *x, int64_t k,
                         const fpx_search_params *params, const msgpack_object *filter,
                         const msgpack_object *sel, void *D, int64_t *I, fpx_err *err);
int fpx_index_range_search_sel(fpx_index *ix, int64_t nq, const void *x, float radius,
                               const fpx_search_params *params, const msgpack_object *filter,
                               const msgpack_object *sel, int64_t **lims, float **D, int64_t **I,
                               fpx_err *err);

int64_t fpx_index_label_of(const fpx_index *ix, int64_t slot);
/* Packs a search hit's {"id": key or label, "metadata": map or nil}, or nil. */
void fpx_index_pack_hit(const fpx_index *ix, int64_t slot, msgpack_packer *pk);

/* keys.c. Packs one page of the live vectors that have a key or metadata,
 * from cursor (0: the start) in slot order: {"items": [{"label", "id"?,
 * "metadata"?}...], "next": cursor or nil}, at most limit entries and about
 * max_bytes (one entry at least). validation_error for a cursor from before a
 * compaction, or one list_keys did not give. */
int fpx_index_list_keys(const fpx_index *ix, uint64_t cursor, int64_t limit, size_t max_bytes,
                        msgpack_packer *pk, fpx_err *err);
/* Gives the vectors of ix, a new index not yet shared, the keys and metadata
 * of items (list_keys' entries). Every label must be in ix, and labels and
 * keys be listed once. On failure the caller discards ix. */
int fpx_index_attach_keys(fpx_index *ix, const msgpack_object *items, fpx_err *err);

/* A check of a float description before FAISS builds it in this process
 * (the server's: probe.c, fpx_probe_create), set once at start: 0, or -1
 * with err. */
typedef int (*fpx_create_check_fn)(const char *description, int64_t dim, int metric, fpx_err *err);
void fpx_index_set_create_check(fpx_create_check_fn fn);

/* Packs the info map: index_id, dimension, index_type, metric, ntotal,
 * is_trained, has_keys, tombstones (deleted vectors still held), and for a
 * leased index lease_seconds and
 * lease_remaining (seconds left before it lapses); in a cluster, replicas
 * (node ids) and applied_seq (the last stream record applied here). */
void fpx_index_pack_info(const fpx_index *ix, msgpack_packer *pk);

/*
 * Checks the invariants that tie the tables together: nslots equals the
 * engine's ntotal, nlive the live bits, nkeys the live slots with a key;
 * every live key and label maps back to its slot and no dead slot is
 * reachable or keeps a key or metadata; the label counter is above every live
 * label (and equals nslots in identity mode). 0, or -1 with the first broken
 * invariant in err (FPX_E_INTERNAL). Costs a pass over every slot: for tests
 * and debugging, not for the request path.
 */
int fpx_index_check(const fpx_index *ix, fpx_err *err);

#endif
