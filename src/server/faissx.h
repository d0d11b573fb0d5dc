/*
 * faissx.h - the FAISSx wire format, served on the same socket as ours.
 *
 * FAISSx clients send one msgpack map per message with an "action" key and
 * vectors as nested lists of numbers (see docs/faissx.md). fpx_faissx_detect
 * tells such a body from one of ours by its first msgpack object;
 * fpx_faissx_handle answers it by translating the action into requests of our
 * own protocol, run through fpx_server_handle, so that authentication,
 * tenants, logging and durability are exactly those of our protocol.
 */
#ifndef FPX_FAISSX_H
#define FPX_FAISSX_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

/* 1 when body is one whole msgpack map that is not our preamble (one holding
 * "header_size", "vector_size" or "metadata_size"): a FAISSx request, with
 * or without a usable "action". */
int fpx_faissx_detect(const uint8_t *body, size_t len);

/* Answers a FAISSx request with a FAISSx reply map; as fpx_server_handle. */
void fpx_faissx_handle(fpx_server *s, const uint8_t *body, size_t len, uint8_t **reply,
                       size_t *reply_len, int *is_static);

#endif
