/* SPDX-License-Identifier: MIT */
/* Frame codec (see interconnect/frame_codec.h): pure, no I/O, no allocation. */
#include <endian.h>
#include <string.h>

#include "interconnect/auth.h"
#include "interconnect/frame_codec.h"
#include "interconnect/ic.h"
#include "util/log.h"

void ic_frame_rules_init(struct ic_frame_rules *r, uint32_t max_frame, const uint64_t *accept_types)
{
	memset(r, 0, sizeof(*r));
	r->max_frame = max_frame;
	r->accept_types = accept_types;
}

static void put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static uint16_t get_le16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

void ic_frame_hdr_encode(void *out, uint8_t type, uint16_t flags, uint32_t length, uint32_t epoch, uint64_t seq)
{
	uint8_t *p = out;

	put_le32(p + offsetof(struct ic_frame_hdr, magic), IC_FRAME_MAGIC);
	p[offsetof(struct ic_frame_hdr, version)] = IC_FRAME_VERSION;
	p[offsetof(struct ic_frame_hdr, type)] = type;
	put_le16(p + offsetof(struct ic_frame_hdr, flags), flags);
	put_le32(p + offsetof(struct ic_frame_hdr, length), length);
	put_le32(p + offsetof(struct ic_frame_hdr, epoch), epoch);
	put_le64(p + offsetof(struct ic_frame_hdr, seq), seq);
}

void ic_frame_hdr_decode(const void *in, struct ic_frame_hdr *hdr)
{
	const uint8_t *p = in;

	hdr->magic = get_le32(p + offsetof(struct ic_frame_hdr, magic));
	hdr->version = p[offsetof(struct ic_frame_hdr, version)];
	hdr->type = p[offsetof(struct ic_frame_hdr, type)];
	hdr->flags = get_le16(p + offsetof(struct ic_frame_hdr, flags));
	hdr->length = get_le32(p + offsetof(struct ic_frame_hdr, length));
	hdr->epoch = get_le32(p + offsetof(struct ic_frame_hdr, epoch));
	hdr->seq = get_le64(p + offsetof(struct ic_frame_hdr, seq));
}

bool ic_frame_type_allowed(uint8_t type, const struct ic_frame_rules *r)
{
	if (type >= IC_TYPE_USER_MIN)
		return r->established && r->accept_types && ic_type_accepted(r->accept_types, type);
	switch (type) {
	case IC_T_HELLO:
	case IC_T_CHALLENGE:
	case IC_T_AUTH:
		return !r->established;
	case IC_T_HEARTBEAT:
		return r->established;
	case IC_T_CLOSE:
		return true;
	default:
		return false;
	}
}

enum ic_frame_status ic_frame_hdr_check(const struct ic_frame_hdr *hdr, const struct ic_frame_rules *r)
{
	if (hdr->magic != IC_FRAME_MAGIC)
		return IC_FRAME_ERR_MAGIC;
	if (hdr->version != IC_FRAME_VERSION)
		return IC_FRAME_ERR_VERSION;
	if (hdr->length > r->max_frame)
		return IC_FRAME_ERR_LENGTH;
	if (!ic_frame_type_allowed(hdr->type, r))
		return IC_FRAME_ERR_TYPE;
	if (!!(hdr->flags & IC_FLAG_TAGGED) != r->established)
		return IC_FRAME_ERR_TAGGED;
	if (hdr->seq != r->expect_seq)
		return IC_FRAME_ERR_SEQ;
	return IC_FRAME_OK;
}

/*
 * Magic and version are judged as soon as their bytes are in, so a peer speaking another protocol is turned away
 * at once instead of making us wait for a full header.
 */
enum ic_frame_status ic_frame_decode(const void *buf, size_t avail, const struct ic_frame_rules *r,
				     struct ic_frame_hdr *hdr, size_t *total)
{
	const uint8_t *p = buf;
	enum ic_frame_status st;
	uint8_t magic[4];

	if (!avail)
		return IC_FRAME_NEED_MORE;
	put_le32(magic, IC_FRAME_MAGIC);
	if (memcmp(p, magic, avail < 4 ? avail : 4))
		return IC_FRAME_ERR_MAGIC;
	if (avail > 4 && p[4] != IC_FRAME_VERSION)
		return IC_FRAME_ERR_VERSION;
	if (avail < IC_HDR_LEN)
		return IC_FRAME_NEED_MORE;
	ic_frame_hdr_decode(p, hdr);
	st = ic_frame_hdr_check(hdr, r);
	if (st != IC_FRAME_OK)
		return st;
	*total = ic_frame_wire_len(hdr);
	return avail < *total ? IC_FRAME_NEED_MORE : IC_FRAME_OK;
}

enum ic_frame_status ic_frame_decode_msg(const void *buf, size_t len, const struct ic_frame_rules *r,
					 struct ic_frame_hdr *hdr)
{
	enum ic_frame_status st;
	size_t total = 0;

	st = ic_frame_decode(buf, len, r, hdr, &total);
	if (st == IC_FRAME_NEED_MORE)
		return IC_FRAME_ERR_TRUNCATED;
	if (st == IC_FRAME_OK && total != len)
		return IC_FRAME_ERR_TRAILING;
	return st;
}

const char *ic_frame_strerror(enum ic_frame_status st)
{
	switch (st) {
	case IC_FRAME_OK:
		return "ok";
	case IC_FRAME_NEED_MORE:
		return "incomplete frame";
	case IC_FRAME_ERR_TRUNCATED:
		return "truncated frame";
	case IC_FRAME_ERR_TRAILING:
		return "bytes after the frame";
	case IC_FRAME_ERR_MAGIC:
		return "wrong magic (not a rackvm peer)";
	case IC_FRAME_ERR_VERSION:
		return "unsupported frame version";
	case IC_FRAME_ERR_LENGTH:
		return "frame length over the receiver's max_frame";
	case IC_FRAME_ERR_TYPE:
		return "unknown or unexpected frame type";
	case IC_FRAME_ERR_TAGGED:
		return "tag flag wrong for the connection phase";
	case IC_FRAME_ERR_SEQ:
		return "out-of-sequence frame (replayed, lost or reordered)";
	case IC_FRAME_ERR_MAC:
		return "bad MAC";
	}
	return "unknown frame error";
}

enum ic_frame_status ic_frame_receive(const char *conn, const void *buf, size_t avail, bool whole_message,
				      struct ic_frame_rules *r, struct ic_mac *rx_mac, struct ic_frame_hdr *hdr,
				      size_t *total)
{
	const uint8_t *p = buf;
	enum ic_frame_status st;

	*total = 0;
	memset(hdr, 0, sizeof(*hdr));
	st = ic_frame_decode(buf, avail, r, hdr, total);
	if (st == IC_FRAME_NEED_MORE && whole_message)
		st = IC_FRAME_ERR_TRUNCATED;
	if (st == IC_FRAME_OK && whole_message && *total != avail)
		st = IC_FRAME_ERR_TRAILING;
	if (st == IC_FRAME_NEED_MORE)
		return st;
	if (st == IC_FRAME_OK && r->established &&
	    (!rx_mac || ic_mac_verify(rx_mac, p, p + IC_HDR_LEN, hdr->length, p + IC_HDR_LEN + hdr->length)))
		st = IC_FRAME_ERR_MAC;
	switch (st) {
	case IC_FRAME_OK:
		ic_frame_rules_advance(r);
		return st;
	case IC_FRAME_ERR_MAGIC:
	case IC_FRAME_ERR_VERSION:
		/* the rest of the header may be garbage or not there yet */
		pr_err("%s: %s", conn, ic_frame_strerror(st));
		return st;
	default:
		pr_err("%s: %s (type %#x, flags %#x, length %u (max %u), seq %llu (expected %llu), %zu bytes)", conn,
		       ic_frame_strerror(st), hdr->type, hdr->flags, hdr->length, r->max_frame,
		       (unsigned long long)hdr->seq, (unsigned long long)r->expect_seq, avail);
		return st;
	}
}
