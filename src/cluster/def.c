/*
 * def.c - index definitions in the bucket fpx_indexes: their keys, their
 * stored form, and reading and deleting them (docs/cluster.md).
 *
 * A key is the tenant and the index name joined by '/', with '.' (NATS's
 * token separator) written '=': neither character can be in a name. A
 * definition is a msgpack map (tenant, name, dimension, metric, index_type,
 * shards, replicas, uid, the node ids placed, and a sharded index's shard
 * map), written once by a KV create, so that one create wins across nodes.
 * It is deleted only at the revision it was read at, so that a definition
 * written in between is never deleted unseen.
 */
#include "internal.h"

#include "server/apply.h"
#include "server/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLACEMENT_MAX FPX_PLACEMENT_MAX
#define PLACEMENT_LEN FPX_PLACEMENT_LEN

/* ---- keys and definitions ---------------------------------------------------------- */

static void key_part(const char *s, char *out) {
    for (; *s; s++)
        *out++ = *s == '.' ? '=' : *s;
    *out = 0;
}

void fpx_def_key(const char *tenant, const char *name, char *out /* 2 * FPX_NAME_MAX + 2 */) {
    key_part(tenant, out);
    size_t n = strlen(out);
    out[n] = '/';
    key_part(name, out + n + 1);
}

/* tenant and name from a key; -1 when it is not one of ours. */
int fpx_def_key_parse(const char *key, char *tenant, char *name) {
    const char *slash = strchr(key, '/');
    if (!slash || slash == key || (size_t)(slash - key) > FPX_NAME_MAX ||
        strlen(slash + 1) > FPX_NAME_MAX || !slash[1])
        return -1;
    size_t i = 0;
    for (const char *p = key; p < slash; p++)
        tenant[i++] = *p == '=' ? '.' : *p;
    tenant[i] = 0;
    i = 0;
    for (const char *p = slash + 1; *p; p++)
        name[i++] = *p == '=' ? '.' : *p;
    name[i] = 0;
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *k, const char *v) {
    fpx_pack_cstr(pk, k);
    fpx_pack_cstr(pk, v);
}

int fpx_def_encode(const fpx_def *d, msgpack_sbuffer *sb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    char hex[FPX_UID_HEX];
    fpx_cluster_uid_hex(d->uid, hex);
    msgpack_pack_map(&pk, 9 + (d->shards > 1) + (d->import_records > 0));
    pack_str(&pk, "tenant", d->tenant);
    pack_str(&pk, "name", d->name);
    fpx_pack_cstr(&pk, "dimension");
    msgpack_pack_int64(&pk, d->dim);
    fpx_pack_cstr(&pk, "metric");
    if (d->metric[0])
        fpx_pack_cstr(&pk, d->metric);
    else
        msgpack_pack_nil(&pk);
    pack_str(&pk, "index_type", d->index_type);
    fpx_pack_cstr(&pk, "shards");
    msgpack_pack_int64(&pk, d->shards > 1 ? d->shards : 1);
    fpx_pack_cstr(&pk, "replicas");
    msgpack_pack_int64(&pk, d->replicas);
    pack_str(&pk, "uid", hex);
    size_t n = 1;
    for (const char *p = d->placement; *p; p++)
        n += *p == ',';
    fpx_pack_cstr(&pk, "placement");
    msgpack_pack_array(&pk, n);
    for (const char *p = d->placement;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        msgpack_pack_str(&pk, len);
        msgpack_pack_str_body(&pk, p, len);
        if (!end)
            break;
        p = end + 1;
    }
    if (d->import_records > 0) {
        fpx_pack_cstr(&pk, "import_records");
        msgpack_pack_int64(&pk, d->import_records);
    }
    if (d->shards > 1) { /* per shard, its nodes: [["n1", "n2"], ["n2", "n3"], ...] */
        fpx_pack_cstr(&pk, "shard_map");
        fpx_def_pack_shard_map(d, &pk);
    }
    return sb->data ? 0 : -1;
}

void fpx_def_pack_shard_map(const fpx_def *d, msgpack_packer *pk) {
    msgpack_pack_array(pk, (size_t)d->shards);
    for (int64_t i = 0; i < d->shards; i++) {
        char nodes[PLACEMENT_LEN];
        fpx_def_shard_nodes(d, i, nodes, sizeof nodes);
        size_t n = 1;
        for (const char *p = nodes; *p; p++)
            n += *p == ',';
        msgpack_pack_array(pk, n);
        for (char *save = NULL, *t = strtok_r(nodes, ",", &save); t; t = strtok_r(NULL, ",", &save))
            fpx_pack_cstr(pk, t);
    }
}

void fpx_def_shard_nodes(const fpx_def *d, int64_t i, char *out, size_t cap) {
    const char *p = d->shard_map ? d->shard_map : "";
    for (int64_t j = 0; j < i && p; j++) {
        p = strchr(p, ';');
        if (p)
            p++;
    }
    const char *end = p ? strchr(p, ';') : NULL;
    size_t n = !p ? 0 : end ? (size_t)(end - p) : strlen(p);
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p ? p : "");
}

void fpx_def_clear(fpx_def *d) {
    free(d->shard_map);
    d->shard_map = NULL;
}

/* The shard map of a definition ("shard_map": one array of node ids per
 * shard) as text, shards separated by ';' and nodes by ','. */
static int shard_map_decode(const msgpack_object *sm, fpx_def *d) {
    if (d->shards == 1)
        return sm != NULL;
    if (d->shards < 1 || d->shards > FPX_SHARDS_MAX || !sm || sm->type != MSGPACK_OBJECT_ARRAY ||
        sm->via.array.size != (uint32_t)d->shards)
        return 1;
    size_t cap = (size_t)d->shards * PLACEMENT_LEN, at = 0;
    if (!(d->shard_map = calloc(1, cap)))
        return 1;
    for (uint32_t i = 0; i < sm->via.array.size; i++) {
        const msgpack_object *a = &sm->via.array.ptr[i];
        if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0 ||
            a->via.array.size > PLACEMENT_MAX)
            return 1;
        for (uint32_t j = 0; j < a->via.array.size; j++) {
            const char *s;
            size_t n;
            if (fpx_obj_str(&a->via.array.ptr[j], &s, &n) || n == 0 || n > FPX_NODE_ID_MAX)
                return 1;
            at += (size_t)snprintf(d->shard_map + at, cap - at, "%s%.*s", j ? "," : (i ? ";" : ""),
                                   (int)n, s);
        }
    }
    return 0;
}

/* A string field into buf[cap]; an absent or nil one is "" when optional. */
static int get_str(const msgpack_object *m, const char *k, char *buf, size_t cap, int optional) {
    const msgpack_object *o = fpx_map_get(m, k);
    const char *s;
    size_t n;
    if ((!o || o->type == MSGPACK_OBJECT_NIL) && optional) {
        buf[0] = 0;
        return 0;
    }
    if (!o || fpx_obj_str(o, &s, &n) || n >= cap)
        return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    return 0;
}

int fpx_def_decode(const void *data, int len, fpx_def *d, fpx_err *err) {
    memset(d, 0, sizeof *d);
    msgpack_unpacked u;
    const msgpack_object *m;
    if (len <= 0 || fpx_unpack_stored(data, (size_t)len, &u, &m, err) != 0 || !m ||
        m->type != MSGPACK_OBJECT_MAP) {
        if (len > 0)
            msgpack_unpacked_destroy(&u);
        return fpx_err_set(err, FPX_E_INTERNAL, "an index definition that is not a map");
    }
    char hex[FPX_UID_HEX];
    const msgpack_object *pl = fpx_map_get(m, "placement");
    int rc = get_str(m, "tenant", d->tenant, sizeof d->tenant, 0) ||
             get_str(m, "name", d->name, sizeof d->name, 0) ||
             get_str(m, "index_type", d->index_type, sizeof d->index_type, 0) ||
             get_str(m, "metric", d->metric, sizeof d->metric, 1) ||
             get_str(m, "uid", hex, sizeof hex, 0) || strlen(hex) != 2 * FPX_UID_BYTES ||
             !fpx_map_get(m, "dimension") || fpx_obj_int(fpx_map_get(m, "dimension"), &d->dim) ||
             !fpx_map_get(m, "replicas") || fpx_obj_int(fpx_map_get(m, "replicas"), &d->replicas) ||
             !pl || pl->type != MSGPACK_OBJECT_ARRAY || pl->via.array.size == 0 ||
             pl->via.array.size > PLACEMENT_MAX;
    const msgpack_object *sh = fpx_map_get(m, "shards");
    d->shards = 1; /* definitions of earlier versions say 1, or nothing */
    if (rc == 0 && sh && fpx_obj_int(sh, &d->shards))
        rc = 1;
    const msgpack_object *imp = fpx_map_get(m, "import_records");
    if (rc == 0 && imp && (fpx_obj_int(imp, &d->import_records) || d->import_records < 0))
        rc = 1;
    if (rc == 0)
        rc = shard_map_decode(fpx_map_get(m, "shard_map"), d);
    for (int i = 0; rc == 0 && i < FPX_UID_BYTES; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            rc = 1;
        d->uid[i] = (uint8_t)v;
    }
    for (uint32_t i = 0; rc == 0 && i < pl->via.array.size; i++) {
        const char *s;
        size_t n, at = strlen(d->placement);
        if (fpx_obj_str(&pl->via.array.ptr[i], &s, &n) || n == 0 || n > FPX_NODE_ID_MAX)
            rc = 1;
        else
            snprintf(d->placement + at, sizeof d->placement - at, "%s%.*s", i ? "," : "", (int)n,
                     s);
    }
    msgpack_unpacked_destroy(&u);
    if (rc)
        fpx_def_clear(d);
    return rc ? fpx_err_set(err, FPX_E_INTERNAL, "an index definition with a bad field") : 0;
}

int fpx_list_has(const char *list, const char *node) {
    size_t n = strlen(node);
    for (const char *p = list; p && *p;) {
        if (!strncmp(p, node, n) && (p[n] == ',' || p[n] == ';' || p[n] == 0))
            return 1;
        p = strpbrk(p, ",;");
        if (p)
            p++;
    }
    return 0;
}

int fpx_node_listed(const fpx_cluster *c, const char *list) {
    return fpx_list_has(list, c->s->cfg->node_id);
}

/* A sharded index is held by no node as a whole: its shards are the
 * indexes placed (shard.c). */
int fpx_def_placed_here(const fpx_cluster *c, const fpx_def *d) {
    return d->shards <= 1 && fpx_node_listed(c, d->placement);
}

int fpx_def_read(fpx_cluster *c, const char *key, fpx_def *d, uint64_t *rev, fpx_err *err) {
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, c->indexes, key);
    if (st == NATS_NOT_FOUND)
        return 0;
    if (st != NATS_OK)
        return fpx_cluster_fail(err, "cannot read the index definitions", st);
    if (rev)
        *rev = kvEntry_Revision(e);
    int rc = fpx_def_decode(kvEntry_Value(e), kvEntry_ValueLen(e), d, err);
    kvEntry_Destroy(e);
    return rc == 0 ? 1 : -1;
}

/* d's definition from the bucket: 1 found, 0 none, -1 error. */
int fpx_def_get(fpx_cluster *c, const char *key, fpx_def *d, fpx_err *err) {
    return fpx_def_read(c, key, d, NULL, err);
}

/* Deletes key of the definitions' bucket only while its last revision is
 * rev: 1 deleted, 0 the key changed since, -1 error. libnats 3.4.1's
 * kvStore_Delete takes no revision, so this publishes the delete marker
 * itself, as a bucket's own delete does (header KV-Operation: DEL), with
 * JetStream's expected-last-subject-sequence check. */
int fpx_def_delete_at(fpx_cluster *c, const char *key, uint64_t rev, fpx_err *err) {
    char subject[sizeof "$KV." FPX_BUCKET_INDEXES "." + 2 * FPX_NAME_MAX + 2], num[24];
    snprintf(subject, sizeof subject, "$KV.%s.%s", FPX_BUCKET_INDEXES, key);
    snprintf(num, sizeof num, "%llu", (unsigned long long)rev);
    natsMsg *m = NULL;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    natsStatus st = natsMsg_Create(&m, subject, NULL, NULL, 0);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "KV-Operation", "DEL");
    if (st == NATS_OK)
        st = natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", num);
    if (st == NATS_OK)
        st = js_PublishMsg(&ack, c->js, m, NULL, &jerr);
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(m);
    if (st != NATS_OK && jerr == JSStreamWrongLastSequenceErr)
        return 0;
    if (st != NATS_OK)
        return fpx_cluster_fail(err, "cannot delete the index's definition", st);
    return 1;
}

/* Deletes key's definition while it holds the index uid (any index when
 * uid is NULL): 1 deleted (*d its last value, cleared), 0 none there or
 * another index's, -1 error. It reads and deletes at the revision read, so
 * that a definition written between the two (the name made again, or this
 * index's own updated) is read again rather than deleted unseen; bounded,
 * as every writer of a definition makes progress. */
int fpx_def_delete(fpx_cluster *c, const char *key, const uint8_t *uid, fpx_def *d, fpx_err *err) {
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t rev = 0;
        int found = fpx_def_read(c, key, d, &rev, err);
        if (found <= 0)
            return found;
        fpx_def_clear(d);
        if (uid && memcmp(uid, d->uid, FPX_UID_BYTES) != 0)
            return 0; /* the name now holds another index: not this one's to delete */
        int rc = fpx_def_delete_at(c, key, rev, err);
        if (rc != 0)
            return rc;
    }
    return fpx_err_set(err, FPX_E_UNAVAILABLE,
                       "the index's definition kept changing while it was deleted");
}
