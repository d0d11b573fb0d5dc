/*
 * import.c - import_index in a cluster: the imported index's content is
 * written to its new stream, as the stream's first records, before its
 * definition names it.
 *
 * The import is one blob, FAISS's bytes and the request's metadata section
 * (which may carry the backup's keys and metadata, "items"):
 *
 *   u64 data_len | data | meta (msgpack, the rest; may be empty)
 *
 * cut into chunks that fit NATS's max_payload, each a stream record of its
 * own (little-endian):
 *
 *   u32 magic "FPXI" | u32 chunk | u32 chunks | u32 zero | u64 blob_len | bytes
 *
 * published as records 1..K of the new stream with the message ids
 * import-<uid>-<chunk>, so that a publish the node retries is stored once,
 * and each one expecting the stream's last sequence to be its own minus one,
 * so that the records are exactly 1..K in order. Only then is the
 * definition created (a key-value create, as for create_index) with
 * "import_records": K; when anything fails before, the stream is deleted and
 * nothing names the index. A replica with no state of its own and no peer's
 * snapshot reads records 1..K back, builds the index with fpx_import_build
 * (what import_index runs on one server, less the probe: the bytes passed it
 * on the node that received them), stores it at sequence K, and follows the
 * stream from K + 1. These records never reach fpx_apply: no replica exists
 * before the definition, and every replica starts at K or later.
 */
#include "internal.h"

#include "server/apply.h"
#include "server/ops.h"
#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_MAGIC 0x49585046u /* "FPXI" */
#define CHUNK_HDR 24
/* Room left in a NATS message for its headers (the message id, JetStream's
 * own) beside a chunk. */
#define CHUNK_SLACK 4096
#define CHUNK_MIN 1024

int fpx_import_publish(fpx_cluster *c, const fpx_import_src *src, fpx_def *d, fpx_err *err) {
    const uint8_t *data = src->data, *meta = src->meta;
    size_t dlen = src->dlen, mlen = src->mlen;
    uint64_t total = 8 + (uint64_t)dlen + mlen;
    int64_t max = natsConnection_GetMaxPayload(c->nc);
    size_t chunk = max > CHUNK_SLACK + CHUNK_MIN ? (size_t)max - CHUNK_SLACK : CHUNK_MIN;
    chunk -= CHUNK_HDR;
    uint64_t chunks = (total + chunk - 1) / chunk;
    if (chunks > UINT32_MAX)
        return fpx_err_set(err, FPX_E_LIMIT, "an import of %llu bytes is too large",
                           (unsigned long long)total);
    uint8_t *p = malloc(CHUNK_HDR + chunk);
    if (!p)
        return fpx_err_set(err, FPX_E_INTERNAL, "out of memory");
    char stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX], hex[FPX_UID_HEX];
    fpx_cluster_stream_names(d->uid, stream, subject);
    fpx_cluster_uid_hex(d->uid, hex);
    int rc = 0;
    uint64_t at = 0; /* the blob's offset */
    for (uint64_t i = 0; rc == 0 && i < chunks; i++) {
        size_t n = total - at < chunk ? (size_t)(total - at) : chunk;
        fpx_put_u32(p, CHUNK_MAGIC);
        fpx_put_u32(p + 4, (uint32_t)i);
        fpx_put_u32(p + 8, (uint32_t)chunks);
        fpx_put_u32(p + 12, 0);
        fpx_put_u64(p + 16, total);
        /* The blob's bytes in [at, at + n): the length word, data, meta. */
        for (size_t k = 0; k < n;) {
            uint64_t o = at + k;
            size_t m;
            if (o < 8) {
                uint8_t w[8];
                fpx_put_u64(w, (uint64_t)dlen);
                m = 8 - (size_t)o < n - k ? 8 - (size_t)o : n - k;
                memcpy(p + CHUNK_HDR + k, w + o, m);
            } else if (o < 8 + (uint64_t)dlen) {
                size_t left = (size_t)(8 + dlen - o);
                m = left < n - k ? left : n - k;
                memcpy(p + CHUNK_HDR + k, data + (o - 8), m);
            } else {
                size_t off = (size_t)(o - 8 - dlen), left = mlen - off;
                m = left < n - k ? left : n - k;
                memcpy(p + CHUNK_HDR + k, meta + off, m);
            }
            k += m;
        }
        char msgid[64 + FPX_UID_HEX];
        snprintf(msgid, sizeof msgid, "import-%s-%llu", hex, (unsigned long long)i);
        uint64_t seq = 0;
        int dup = 0;
        /* expect_last 0 means any: the first chunk goes to an empty stream
         * nobody else knows of yet */
        rc = fpx_log_publish(c, subject, p, CHUNK_HDR + n, msgid, i, &seq, &dup, err);
        if (rc == 0 && seq != i + 1)
            rc = fpx_err_set(err, FPX_E_INTERNAL,
                             "the import's chunk %llu was stored as record %llu of its stream",
                             (unsigned long long)i, (unsigned long long)seq);
        at += n;
    }
    free(p);
    if (rc == 0) {
        d->import_records = (int64_t)chunks;
        fpx_log(FPX_LOG_INFO, "%s/%s: the import (%llu bytes) is records 1..%llu of its stream",
                d->tenant, d->name, (unsigned long long)total, (unsigned long long)chunks);
    }
    return rc;
}

/* Record seq of stream into the blob (*blob allocated at the first). */
static int read_chunk(fpx_cluster *c, const char *stream, uint64_t seq, uint64_t chunks,
                      uint8_t **blob, uint64_t *total, uint64_t *at, fpx_err *err) {
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetMsg(&m, c->js, stream, seq, NULL, &jerr);
    if (st != NATS_OK)
        return fpx_cluster_fail(err, "reading the index's import from its log", st);
    const uint8_t *p = (const uint8_t *)natsMsg_GetData(m);
    size_t len = (size_t)natsMsg_GetDataLength(m);
    int rc = 0;
    if (len < CHUNK_HDR || fpx_get_u32(p) != CHUNK_MAGIC || fpx_get_u32(p + 4) != seq - 1 ||
        fpx_get_u32(p + 8) != chunks || (*blob && fpx_get_u64(p + 16) != *total))
        rc = fpx_err_set(err, FPX_E_INTERNAL, "stream record %llu is not chunk %llu of the import",
                         (unsigned long long)seq, (unsigned long long)seq - 1);
    if (rc == 0 && !*blob) {
        *total = fpx_get_u64(p + 16);
        if (*total < 8 || *total > SIZE_MAX || !(*blob = malloc((size_t)*total)))
            rc = fpx_err_set(err, FPX_E_INTERNAL, "cannot hold an import of %llu bytes",
                             (unsigned long long)*total);
    }
    if (rc == 0 && len - CHUNK_HDR > *total - *at)
        rc = fpx_err_set(err, FPX_E_INTERNAL, "the import's chunks exceed its length");
    if (rc == 0) {
        memcpy(*blob + *at, p + CHUNK_HDR, len - CHUNK_HDR);
        *at += len - CHUNK_HDR;
    }
    natsMsg_Destroy(m);
    return rc;
}

int fpx_import_rebuild(fpx_cluster *c, const fpx_def *d, fpx_index **made, fpx_err *err) {
    char stream[8 + FPX_UID_HEX], subject[8 + FPX_UID_HEX];
    fpx_cluster_stream_names(d->uid, stream, subject);
    uint8_t *blob = NULL;
    uint64_t total = 0, at = 0, chunks = (uint64_t)d->import_records;
    int rc = 0;
    for (uint64_t seq = 1; rc == 0 && seq <= chunks; seq++)
        rc = read_chunk(c, stream, seq, chunks, &blob, &total, &at, err);
    uint64_t dlen = rc == 0 ? fpx_get_u64(blob) : 0;
    if (rc == 0 && (at != total || dlen > total - 8))
        rc = fpx_err_set(err, FPX_E_INTERNAL, "the import's chunks do not add up");
    msgpack_unpacked u;
    const msgpack_object *meta = NULL;
    msgpack_unpacked_init(&u);
    if (rc == 0) {
        msgpack_unpacked_destroy(&u);
        rc = fpx_unpack_stored(blob + 8 + dlen, (size_t)(total - 8 - dlen), &u, &meta, err);
    }
    if (rc == 0)
        rc = fpx_import_build(d->tenant, d->name, d->index_type, blob + 8, (size_t)dlen, meta, 0,
                              made, err);
    msgpack_unpacked_destroy(&u);
    free(blob);
    if (rc != 0)
        return -1;
    (*made)->seq = chunks;
    fpx_log(FPX_LOG_INFO, "%s/%s: built from the import in stream records 1..%llu", d->tenant,
            d->name, (unsigned long long)chunks);
    return 0;
}
