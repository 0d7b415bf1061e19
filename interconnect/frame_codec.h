/* SPDX-License-Identifier: MIT */
/*
 * Frame codec: pure functions (no I/O, no allocation, no global state) that every transport and the fuzzer use
 * to build and check the wire format of interconnect/frame.h.
 *
 * Receiving, per connection and direction, a transport keeps a struct ic_frame_rules and for each frame:
 *   st = ic_frame_decode(buf, avail, &rules, &hdr, &total);
 *   IC_FRAME_NEED_MORE   stream transports read more bytes (at most `total` are needed once the header is in;
 *                        the length was already checked against max_frame, so `total` is safe to allocate);
 *                        message transports call ic_frame_decode_msg() instead, which reports TRUNCATED.
 *   IC_FRAME_OK          a whole frame of `total` bytes is at buf: header checked, then (if tagged) the caller
 *                        verifies the tag with ic_mac_verify() (interconnect/auth.h) before using the payload,
 *                        and calls ic_frame_rules_advance() to expect the next seq.
 *   anything else        an error: log ic_frame_strerror(st), count it, close the connection.
 *
 * Sending: ic_frame_hdr_encode() writes the 24 header bytes; the tag (ic_mac_tag()) follows the payload.
 */
#ifndef RACKVM_INTERCONNECT_FRAME_CODEC_H
#define RACKVM_INTERCONNECT_FRAME_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "interconnect/frame.h"

#define IC_HDR_LEN 24u

enum ic_frame_status {
	IC_FRAME_OK = 0,
	IC_FRAME_NEED_MORE,         /* not an error: fewer bytes than one frame so far */
	IC_FRAME_ERR_TRUNCATED,     /* message transports: the message ended inside the frame */
	IC_FRAME_ERR_TRAILING,      /* message transports: bytes after the frame */
	IC_FRAME_ERR_MAGIC,
	IC_FRAME_ERR_VERSION,
	IC_FRAME_ERR_LENGTH,        /* length > the receiver's max_frame */
	IC_FRAME_ERR_TYPE,          /* unknown type, or a transport type not allowed in this phase */
	IC_FRAME_ERR_TAGGED,        /* tag flag wrong for the phase (untagged after the handshake or vice versa) */
	IC_FRAME_ERR_SEQ,           /* seq is not exactly the expected one */
	IC_FRAME_ERR_MAC,           /* tag does not verify (reported by the caller after ic_mac_verify) */
};

/* What the receiver accepts on one connection, in one direction. */
struct ic_frame_rules {
	uint32_t max_frame;              /* payload bytes */
	const uint64_t *accept_types;    /* bitmap of upper-layer types (ic_config.accept_types); NULL = none */
	bool established;                /* handshake done: frames must be tagged; HEARTBEAT, CLOSE, user types */
	uint64_t expect_seq;             /* seq of the next frame; starts at 0 with the connection's first frame */
};

/* Fill the rules of a new connection (handshake phase, seq 0). */
void ic_frame_rules_init(struct ic_frame_rules *r, uint32_t max_frame, const uint64_t *accept_types);
/* Call after accepting a frame. */
static inline void ic_frame_rules_advance(struct ic_frame_rules *r)
{
	r->expect_seq++;
}

/* Write the 24 header bytes (little-endian) into out. */
void ic_frame_hdr_encode(void *out, uint8_t type, uint16_t flags, uint32_t length, uint32_t epoch, uint64_t seq);
/* Read 24 header bytes (no checks). */
void ic_frame_hdr_decode(const void *in, struct ic_frame_hdr *hdr);
/* Check a decoded header against the rules (magic, version, length, type, tag flag, seq). */
enum ic_frame_status ic_frame_hdr_check(const struct ic_frame_hdr *hdr, const struct ic_frame_rules *r);

/* Wire size of a frame with this header: header + length + tag if tagged. */
static inline size_t ic_frame_wire_len(const struct ic_frame_hdr *hdr)
{
	return IC_HDR_LEN + (size_t)hdr->length + ((hdr->flags & IC_FLAG_TAGGED) ? IC_TAG_LEN : 0);
}

/* Stream decode: see the top of this file. *total is set whenever the header is complete and valid. */
enum ic_frame_status ic_frame_decode(const void *buf, size_t avail, const struct ic_frame_rules *r,
				     struct ic_frame_hdr *hdr, size_t *total);
/* Message decode: buf holds exactly one frame (RDMA message, loop queue entry). */
enum ic_frame_status ic_frame_decode_msg(const void *buf, size_t len, const struct ic_frame_rules *r,
					 struct ic_frame_hdr *hdr);

struct ic_mac;

/*
 * The whole receive check for one connection, shared by the transports: decode (stream: NEED_MORE is returned
 * quietly; whole_message: buf/avail is exactly one message and a short one is TRUNCATED), then, once
 * established, verify the tag with rx_mac, then advance the expected seq. Every error is logged with pr_err
 * naming `conn` (the caller counts it in its stats and closes the connection). *total: wire bytes of the frame.
 */
enum ic_frame_status ic_frame_receive(const char *conn, const void *buf, size_t avail, bool whole_message,
				      struct ic_frame_rules *r, struct ic_mac *rx_mac, struct ic_frame_hdr *hdr,
				      size_t *total);

/* Human-readable description of a status ("wrong magic", ...). Never NULL. */
const char *ic_frame_strerror(enum ic_frame_status st);

/* Is this a transport-owned type allowed in this phase? (exposed for tests) */
bool ic_frame_type_allowed(uint8_t type, const struct ic_frame_rules *r);

#endif
