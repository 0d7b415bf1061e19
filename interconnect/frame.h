/* SPDX-License-Identifier: MIT */
/*
 * Wire format of every rackvm frame, on every transport.
 *
 *   +--------------------------- 24-byte header, little-endian ---------------------------+
 *   | magic "RKVM" u32 | version u8 | type u8 | flags u16 | length u32 | epoch u32 | seq u64 |
 *   +---------------------------------------------------------------------------------------+
 *   | payload: length bytes (length <= the receiver's max_frame)                            |
 *   +---------------------------------------------------------------------------------------+
 *   | tag: IC_TAG_LEN bytes, present iff flags & IC_FLAG_TAGGED                             |
 *   +---------------------------------------------------------------------------------------+
 *
 * Versioning rule: `version` is the frame format version. A receiver accepts exactly the versions it knows
 * (today: 1) and closes the connection on any other, with a log line naming both. New frame types may be added
 * within a version; a receiver treats a type it was not configured to accept as a protocol error.
 *
 * Types 0x00-0x0f belong to the transport (handshake, heartbeat, close). Handshake frames are untagged; after the
 * handshake every frame must be tagged, and `seq` must be exactly one more than the previous frame's on that
 * connection and direction (replay and reordering inside a connection are errors).
 */
#ifndef RACKVM_INTERCONNECT_FRAME_H
#define RACKVM_INTERCONNECT_FRAME_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#define IC_FRAME_MAGIC 0x4d564b52u   /* "RKVM" in memory order on a little-endian wire */
#define IC_FRAME_VERSION 1u
#define IC_TAG_LEN 16u

/* flags: the low byte is the transport's, the high byte is passed to the upper layer. */
#define IC_FLAG_TAGGED 0x0001u
#define IC_FLAG_TRANSPORT_MASK 0x00ffu

/* Transport-owned frame types. */
enum ic_ctl_type {
	IC_T_HELLO = 0x01,       /* dialler -> listener: protobuf IcHello (id, nonce) */
	IC_T_CHALLENGE = 0x02,   /* listener -> dialler: protobuf IcChallenge (id, nonce, proof) */
	IC_T_AUTH = 0x03,        /* dialler -> listener: protobuf IcAuth (proof) */
	IC_T_HEARTBEAT = 0x04,   /* empty payload */
	IC_T_CLOSE = 0x05,       /* protobuf IcClose (reason) — orderly shutdown */
};

struct ic_frame_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t length;
	uint32_t epoch;
	uint64_t seq;
};

static_assert(sizeof(struct ic_frame_hdr) == 24, "frame header is 24 bytes on the wire");
static_assert(offsetof(struct ic_frame_hdr, magic) == 0, "wire layout");
static_assert(offsetof(struct ic_frame_hdr, version) == 4, "wire layout");
static_assert(offsetof(struct ic_frame_hdr, type) == 5, "wire layout");
static_assert(offsetof(struct ic_frame_hdr, flags) == 6, "wire layout");
static_assert(offsetof(struct ic_frame_hdr, length) == 8, "wire layout");
static_assert(offsetof(struct ic_frame_hdr, epoch) == 12, "wire layout");
static_assert(offsetof(struct ic_frame_hdr, seq) == 16, "wire layout");

#endif
