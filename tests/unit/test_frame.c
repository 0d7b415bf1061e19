/* SPDX-License-Identifier: MIT */
/*
 * Frame codec, per-frame MAC, handshake state machine and address parsing: round trips, and every kind of bad
 * input giving its error (and an error log line) without a crash.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <endian.h>
#include <openssl/evp.h>

#include "interconnect/addr.h"
#include "interconnect/auth.h"
#include "interconnect/frame_codec.h"
#include "interconnect/ic.h"
#include "util/log.h"

static const uint8_t cluster_key[32] = "test-cluster-key-0123456789abcde";
static const uint8_t other_key[32] = "another-cluster-key-0123456789ab";
static const uint8_t session_key[IC_SESSION_KEY_LEN] = "session-key-session-key-session";

static uint64_t accept_types[4];

static int setup(void **state)
{
	log_set_quiet(true);
	memset(accept_types, 0, sizeof(accept_types));
	accept_types[0x20 / 64] |= 1ULL << (0x20 % 64);
	return 0;
}

/* A whole frame in buf: header + payload (+ tag under mac when non-NULL). Returns its wire length. */
static size_t build(uint8_t *buf, struct ic_mac *mac, uint8_t type, uint64_t seq, const void *payload, uint32_t len)
{
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };

	ic_frame_hdr_encode(buf, type, mac ? IC_FLAG_TAGGED | 0x0100 : 0, len, 7, seq);
	memcpy(buf + IC_HDR_LEN, payload, len);
	if (!mac)
		return IC_HDR_LEN + len;
	assert_int_equal(ic_mac_tag(mac, buf, &iov, 1, buf + IC_HDR_LEN + len), 0);
	return IC_HDR_LEN + len + IC_TAG_LEN;
}

static void rules_established(struct ic_frame_rules *r, uint64_t seq)
{
	ic_frame_rules_init(r, 4096, accept_types);
	r->established = true;
	r->expect_seq = seq;
}

/* Expect status st from ic_frame_receive on buf, and exactly one error log line for an error. */
static void expect_receive(const uint8_t *buf, size_t len, bool msg, struct ic_frame_rules *r, struct ic_mac *mac,
			   enum ic_frame_status st)
{
	unsigned long before = log_error_count();
	struct ic_frame_hdr hdr;
	size_t total;

	assert_int_equal(ic_frame_receive("test", buf, len, msg, r, mac, &hdr, &total), st);
	if (st == IC_FRAME_OK || st == IC_FRAME_NEED_MORE)
		assert_int_equal(log_error_count(), before);
	else
		assert_int_equal(log_error_count(), before + 1);
	assert_non_null(ic_frame_strerror(st));
}

static void test_header_round_trip(void **state)
{
	uint8_t buf[IC_HDR_LEN];
	struct ic_frame_hdr h;

	ic_frame_hdr_encode(buf, 0x42, 0xab01, 1234, 0xdeadbeef, 0x0102030405060708ULL);
	assert_memory_equal(buf, "RKVM", 4);   /* magic bytes in wire order */
	assert_int_equal(buf[4], IC_FRAME_VERSION);
	ic_frame_hdr_decode(buf, &h);
	assert_int_equal(h.magic, IC_FRAME_MAGIC);
	assert_int_equal(h.version, IC_FRAME_VERSION);
	assert_int_equal(h.type, 0x42);
	assert_int_equal(h.flags, 0xab01);
	assert_int_equal(h.length, 1234);
	assert_int_equal(h.epoch, 0xdeadbeef);
	assert_int_equal(h.seq, 0x0102030405060708ULL);
	/* little-endian on the wire */
	assert_int_equal(buf[16], 0x08);
	assert_int_equal(buf[8], 1234 & 0xff);
}

static void test_stream_decode_every_prefix(void **state)
{
	uint8_t payload[100], buf[256];
	struct ic_frame_rules r;
	struct ic_mac *mac;
	size_t wire, total;
	struct ic_frame_hdr h;

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)i;
	assert_int_equal(ic_mac_create(session_key, IC_DIR_D2L, &mac), 0);
	wire = build(buf, mac, 0x20, 5, payload, sizeof(payload));
	rules_established(&r, 5);
	for (size_t n = 0; n < wire; n++)
		expect_receive(buf, n, false, &r, mac, IC_FRAME_NEED_MORE);
	assert_int_equal(ic_frame_receive("t", buf, wire, false, &r, mac, &h, &total), IC_FRAME_OK);
	assert_int_equal(total, wire);
	assert_int_equal(h.type, 0x20);
	assert_int_equal(h.length, sizeof(payload));
	assert_memory_equal(buf + IC_HDR_LEN, payload, sizeof(payload));
	assert_int_equal(r.expect_seq, 6);   /* advanced */
	/* two frames back to back decode one at a time */
	size_t w2 = build(buf + wire, mac, 0x20, 6, payload, 10);
	assert_int_equal(ic_frame_decode(buf + wire, w2, &r, &h, &total), IC_FRAME_OK);
	assert_int_equal(h.length, 10);
	ic_mac_destroy(mac);
}

static void test_handshake_phase_frames(void **state)
{
	uint8_t buf[128];
	struct ic_frame_rules r;
	size_t wire;

	ic_frame_rules_init(&r, IC_HS_MSG_MAX, accept_types);
	wire = build(buf, NULL, IC_T_HELLO, 0, "hello", 5);
	expect_receive(buf, wire, true, &r, NULL, IC_FRAME_OK);
	wire = build(buf, NULL, IC_T_AUTH, 1, "auth", 4);
	expect_receive(buf, wire, true, &r, NULL, IC_FRAME_OK);
	/* a user frame before the handshake completed is refused */
	wire = build(buf, NULL, 0x20, 2, "x", 1);
	expect_receive(buf, wire, true, &r, NULL, IC_FRAME_ERR_TYPE);
	/* so is a heartbeat */
	wire = build(buf, NULL, IC_T_HEARTBEAT, 2, "", 0);
	expect_receive(buf, wire, true, &r, NULL, IC_FRAME_ERR_TYPE);
}

static void test_truncated_and_trailing(void **state)
{
	uint8_t buf[256];
	struct ic_frame_rules r;
	struct ic_mac *mac;
	size_t wire;

	assert_int_equal(ic_mac_create(session_key, IC_DIR_D2L, &mac), 0);
	wire = build(buf, mac, 0x20, 0, "payload", 7);
	rules_established(&r, 0);
	for (size_t n = 0; n < wire; n++)
		expect_receive(buf, n, true, &r, mac, IC_FRAME_ERR_TRUNCATED);
	expect_receive(buf, wire + 3, true, &r, mac, IC_FRAME_ERR_TRAILING);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_OK);
	ic_mac_destroy(mac);
}

static void test_oversized_length(void **state)
{
	uint8_t buf[IC_HDR_LEN];
	struct ic_frame_rules r;

	rules_established(&r, 0);
	/* only the header has arrived: the error comes before anything is read or allocated for the payload */
	ic_frame_hdr_encode(buf, 0x20, IC_FLAG_TAGGED, 4097, 0, 0);
	expect_receive(buf, sizeof(buf), false, &r, NULL, IC_FRAME_ERR_LENGTH);
	ic_frame_hdr_encode(buf, 0x20, IC_FLAG_TAGGED, UINT32_MAX, 0, 0);
	expect_receive(buf, sizeof(buf), false, &r, NULL, IC_FRAME_ERR_LENGTH);
	/* exactly max_frame is fine (needs more bytes) */
	ic_frame_hdr_encode(buf, 0x20, IC_FLAG_TAGGED, 4096, 0, 0);
	expect_receive(buf, sizeof(buf), false, &r, NULL, IC_FRAME_NEED_MORE);
}

static void test_wrong_magic(void **state)
{
	uint8_t buf[IC_HDR_LEN];
	struct ic_frame_rules r;

	rules_established(&r, 0);
	ic_frame_hdr_encode(buf, 0x20, IC_FLAG_TAGGED, 0, 0, 0);
	buf[1] ^= 0x20;
	expect_receive(buf, sizeof(buf), false, &r, NULL, IC_FRAME_ERR_MAGIC);
	/* detected from the first bytes, before a whole header is in */
	expect_receive(buf, 2, false, &r, NULL, IC_FRAME_ERR_MAGIC);
	expect_receive((const uint8_t *)"GET / HTTP/1.1\r\n", 16, false, &r, NULL, IC_FRAME_ERR_MAGIC);
}

static void test_wrong_version(void **state)
{
	uint8_t buf[IC_HDR_LEN];
	struct ic_frame_rules r;

	rules_established(&r, 0);
	ic_frame_hdr_encode(buf, 0x20, IC_FLAG_TAGGED, 0, 0, 0);
	buf[4] = IC_FRAME_VERSION + 1;
	expect_receive(buf, sizeof(buf), false, &r, NULL, IC_FRAME_ERR_VERSION);
	expect_receive(buf, 5, false, &r, NULL, IC_FRAME_ERR_VERSION);
	buf[4] = 0;
	expect_receive(buf, sizeof(buf), false, &r, NULL, IC_FRAME_ERR_VERSION);
}

static void test_unknown_type(void **state)
{
	uint8_t buf[128];
	struct ic_frame_rules r;
	struct ic_mac *mac;
	size_t wire;

	assert_int_equal(ic_mac_create(session_key, IC_DIR_D2L, &mac), 0);
	rules_established(&r, 0);
	/* upper-layer type not in accept_types */
	wire = build(buf, mac, 0x21, 0, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_ERR_TYPE);
	/* transport range but not a defined type */
	wire = build(buf, mac, 0x07, 0, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_ERR_TYPE);
	wire = build(buf, mac, 0x00, 0, "", 0);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_ERR_TYPE);
	/* handshake message after the handshake */
	wire = build(buf, mac, IC_T_HELLO, 0, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_ERR_TYPE);
	/* no accept list at all */
	r.accept_types = NULL;
	wire = build(buf, mac, 0x20, 0, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_ERR_TYPE);
	/* heartbeat, close and accepted types pass */
	rules_established(&r, 0);
	wire = build(buf, mac, IC_T_HEARTBEAT, 0, "", 0);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_OK);
	wire = build(buf, mac, 0x20, 1, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_OK);
	ic_mac_destroy(mac);
}

static void test_tag_flag_must_match_phase(void **state)
{
	uint8_t buf[128];
	struct ic_frame_rules r;
	struct ic_mac *mac;
	size_t wire;

	assert_int_equal(ic_mac_create(session_key, IC_DIR_D2L, &mac), 0);
	/* untagged after the handshake: a MAC-stripping attacker is refused */
	rules_established(&r, 0);
	wire = build(buf, NULL, 0x20, 0, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_ERR_TAGGED);
	/* tagged during the handshake */
	ic_frame_rules_init(&r, 256, accept_types);
	wire = build(buf, mac, IC_T_HELLO, 0, "x", 1);
	expect_receive(buf, wire, true, &r, NULL, IC_FRAME_ERR_TAGGED);
	ic_mac_destroy(mac);
}

static void test_bad_seq(void **state)
{
	uint8_t buf[128];
	struct ic_frame_rules r;
	struct ic_mac *mac;
	size_t wire;

	assert_int_equal(ic_mac_create(session_key, IC_DIR_D2L, &mac), 0);
	rules_established(&r, 10);
	wire = build(buf, mac, 0x20, 10, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_OK);
	/* replay of the same frame */
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_ERR_SEQ);
	/* a gap (frame 11 lost) */
	wire = build(buf, mac, 0x20, 12, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_ERR_SEQ);
	/* an old one */
	wire = build(buf, mac, 0x20, 9, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_ERR_SEQ);
	wire = build(buf, mac, 0x20, 11, "x", 1);
	expect_receive(buf, wire, true, &r, mac, IC_FRAME_OK);
	ic_mac_destroy(mac);
}

static void test_bad_mac(void **state)
{
	uint8_t payload[4096], buf[4096 + 64], orig[4096 + 64];
	struct ic_mac *tx, *rx, *other_dir, *other_key_mac;
	struct ic_frame_rules r;
	uint8_t key2[IC_SESSION_KEY_LEN];
	size_t wire;

	memset(payload, 0x5a, sizeof(payload));
	memcpy(key2, session_key, sizeof(key2));
	key2[0] ^= 1;
	assert_int_equal(ic_mac_create(session_key, IC_DIR_L2D, &tx), 0);
	assert_int_equal(ic_mac_create(session_key, IC_DIR_L2D, &rx), 0);
	assert_int_equal(ic_mac_create(session_key, IC_DIR_D2L, &other_dir), 0);
	assert_int_equal(ic_mac_create(key2, IC_DIR_L2D, &other_key_mac), 0);
	wire = build(orig, tx, 0x20, 3, payload, sizeof(payload));

	/* every single-bit flip in a sample of positions of header, payload and tag is caught */
	const size_t positions[] = { 0, 5, 6, 7, 12, 15, 16, 23, 24, 100, 4000, 4119, 4120, 4135 };
	for (size_t i = 0; i < sizeof(positions) / sizeof(positions[0]); i++) {
		memcpy(buf, orig, wire);
		buf[positions[i]] ^= 0x10;
		rules_established(&r, 3);
		enum ic_frame_status st = positions[i] < IC_HDR_LEN ? IC_FRAME_ERR_MAGIC : IC_FRAME_ERR_MAC;
		/* header flips hit the structural checks first where they can */
		if (positions[i] < IC_HDR_LEN) {
			struct ic_frame_hdr h;
			size_t total;

			st = ic_frame_receive("t", buf, wire, true, &r, rx, &h, &total);
			assert_int_not_equal(st, IC_FRAME_OK);
		} else {
			expect_receive(buf, wire, true, &r, rx, st);
		}
	}
	/* the epoch (not judged by the codec) is covered by the MAC */
	memcpy(buf, orig, wire);
	buf[offsetof(struct ic_frame_hdr, epoch)] ^= 1;
	rules_established(&r, 3);
	expect_receive(buf, wire, true, &r, rx, IC_FRAME_ERR_MAC);
	/* the upper-layer flags byte is covered */
	memcpy(buf, orig, wire);
	buf[offsetof(struct ic_frame_hdr, flags) + 1] ^= 0x80;
	expect_receive(buf, wire, true, &r, rx, IC_FRAME_ERR_MAC);
	/* a frame from the other direction (reflected) or under another session key fails */
	expect_receive(orig, wire, true, &r, other_dir, IC_FRAME_ERR_MAC);
	expect_receive(orig, wire, true, &r, other_key_mac, IC_FRAME_ERR_MAC);
	/* established but no MAC context: never accept */
	expect_receive(orig, wire, true, &r, NULL, IC_FRAME_ERR_MAC);
	/* the original verifies */
	expect_receive(orig, wire, true, &r, rx, IC_FRAME_OK);

	/* tag over a gathered iov equals the tag over the contiguous payload */
	uint8_t t1[IC_TAG_LEN], t2[IC_TAG_LEN];
	struct iovec one = { payload, sizeof(payload) };
	struct iovec parts[3] = { { payload, 10 }, { payload + 10, 0 }, { payload + 10, sizeof(payload) - 10 } };
	assert_int_equal(ic_mac_tag(tx, orig, &one, 1, t1), 0);
	assert_int_equal(ic_mac_tag(tx, orig, parts, 3, t2), 0);
	assert_memory_equal(t1, t2, IC_TAG_LEN);

	ic_mac_destroy(tx);
	ic_mac_destroy(rx);
	ic_mac_destroy(other_dir);
	ic_mac_destroy(other_key_mac);
}

/* The wire MAC computed independently: AES-256-GCM, no plaintext, AAD = header || payload, nonce = dir || seq. */
static void reference_tag(const uint8_t *key, enum ic_dir dir, const uint8_t *hdr, const uint8_t *payload, size_t len,
			  uint8_t tag[IC_TAG_LEN])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t nonce[12], dummy[16];
	uint32_t d = htole32((uint32_t)dir);
	int outl;

	memcpy(nonce, &d, 4);
	memcpy(nonce + 4, hdr + offsetof(struct ic_frame_hdr, seq), 8);
	assert_non_null(ctx);
	assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce), 1);
	assert_int_equal(EVP_EncryptUpdate(ctx, NULL, &outl, hdr, IC_HDR_LEN), 1);
	if (len)
		assert_int_equal(EVP_EncryptUpdate(ctx, NULL, &outl, payload, (int)len), 1);
	assert_int_equal(EVP_EncryptFinal_ex(ctx, dummy, &outl), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, IC_TAG_LEN, tag), 1);
	EVP_CIPHER_CTX_free(ctx);
}

/*
 * ic_mac_tag feeds GHASH in block-aligned pieces (the header with the first payload bytes staged, or header and
 * payload in one piece when contiguous): for every payload length and every way of splitting it into iov entries
 * (empty ones included), the tag must equal the reference over header || payload, and verify must accept it from
 * a contiguous frame and from separate buffers.
 */
static void test_mac_known_answer_any_split(void **state)
{
	static const size_t lens[] = { 0, 1, 7, 8, 9, 15, 16, 23, 24, 40, 64, 100, 4096 };
	static const size_t cuts[][3] = { { 0, 0, 0 }, { 1, 0, 0 }, { 3, 3, 0 }, { 7, 1, 0 }, { 8, 0, 0 },
					  { 9, 0, 5 }, { 0, 0, 2 }, { 2, 2, 2 }, { 16, 1, 0 } };
	static uint8_t frame[IC_HDR_LEN + 4096], payload[4096];
	struct ic_mac *mac;

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7 + 3);
	for (int dir = IC_DIR_D2L; dir <= IC_DIR_L2D; dir++) {
		assert_int_equal(ic_mac_create(session_key, (enum ic_dir)dir, &mac), 0);
		for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
			size_t len = lens[l];
			uint8_t hdr[IC_HDR_LEN], ref[IC_TAG_LEN], tag[IC_TAG_LEN];

			ic_frame_hdr_encode(hdr, 0x20, IC_FLAG_TAGGED, (uint32_t)len, 7, 1000 + l);
			reference_tag(session_key, (enum ic_dir)dir, hdr, payload, len, ref);
			for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
				struct iovec iov[4];
				size_t off = 0;

				for (int k = 0; k < 3; k++) {
					size_t n = cuts[c][k] < len - off ? cuts[c][k] : len - off;

					iov[k] = (struct iovec){ payload + off, n };
					off += n;
				}
				iov[3] = (struct iovec){ payload + off, len - off };
				assert_int_equal(ic_mac_tag(mac, hdr, iov, 4, tag), 0);
				assert_memory_equal(tag, ref, IC_TAG_LEN);
			}
			memcpy(frame, hdr, IC_HDR_LEN);
			memcpy(frame + IC_HDR_LEN, payload, len);
			assert_int_equal(ic_mac_verify(mac, frame, frame + IC_HDR_LEN, len, ref), 0);
			assert_int_equal(ic_mac_verify(mac, hdr, payload, len, ref), 0);
			ref[len % IC_TAG_LEN] ^= 1;
			assert_int_equal(ic_mac_verify(mac, frame, frame + IC_HDR_LEN, len, ref), -EBADMSG);
		}
		ic_mac_destroy(mac);
	}
}

static void test_hmac_alternative(void **state)
{
	struct ic_mac *a, *b;
	uint8_t hdr[IC_HDR_LEN], tag[IC_TAG_LEN];
	struct iovec iov = { (void *)"data", 4 };

	assert_int_equal(ic_mac_create_hmac(session_key, IC_DIR_D2L, &a), 0);
	assert_int_equal(ic_mac_create_hmac(session_key, IC_DIR_L2D, &b), 0);
	ic_frame_hdr_encode(hdr, 0x20, IC_FLAG_TAGGED, 4, 0, 1);
	assert_int_equal(ic_mac_tag(a, hdr, &iov, 1, tag), 0);
	assert_int_equal(ic_mac_verify(a, hdr, "data", 4, tag), 0);
	assert_int_equal(ic_mac_verify(a, hdr, "dat!", 4, tag), -EBADMSG);
	assert_int_equal(ic_mac_verify(b, hdr, "data", 4, tag), -EBADMSG);
	ic_mac_destroy(a);
	ic_mac_destroy(b);
}

/* ---- handshake ---- */

struct hs_pair {
	struct ic_hs *d, *l;
};

static bool allow_small_ids(void *opaque, uint32_t id)
{
	return id < 5;
}

static void hs_pair_create(struct hs_pair *p, const uint8_t *dkey, const uint8_t *lkey, uint32_t d_id,
			   uint32_t l_id, uint32_t d_expect)
{
	struct ic_hs_params dp = { .self = d_id, .key = dkey, .key_len = 32, .dialler = true, .expect_peer = d_expect };
	struct ic_hs_params lp = { .self = l_id, .key = lkey, .key_len = 32, .peer_ok = allow_small_ids };

	assert_int_equal(ic_hs_create(&dp, &p->d), 0);
	assert_int_equal(ic_hs_create(&lp, &p->l), 0);
}

static void hs_pair_destroy(struct hs_pair *p)
{
	ic_hs_destroy(p->d);
	ic_hs_destroy(p->l);
}

static void test_handshake_right_key(void **state)
{
	struct ic_hs_msg hello, ch, auth, none;
	uint8_t kd[IC_SESSION_KEY_LEN], kl[IC_SESSION_KEY_LEN];
	struct hs_pair p;
	const char *why;

	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_start(p.l, &none), 0);
	assert_int_equal(none.type, 0);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(hello.type, IC_T_HELLO);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &ch, &why), 0);
	assert_int_equal(ch.type, IC_T_CHALLENGE);
	assert_false(ic_hs_done(p.l));
	assert_int_equal(ic_hs_input(p.d, ch.type, ch.buf, ch.len, &auth, &why), 1);
	assert_int_equal(auth.type, IC_T_AUTH);
	assert_true(ic_hs_done(p.d));
	assert_int_equal(ic_hs_input(p.l, auth.type, auth.buf, auth.len, &none, &why), 1);
	assert_int_equal(none.type, 0);
	assert_true(ic_hs_done(p.l));
	assert_int_equal(ic_hs_peer(p.d), 7);
	assert_int_equal(ic_hs_peer(p.l), 1);
	ic_hs_session_key(p.d, kd);
	ic_hs_session_key(p.l, kl);
	assert_memory_equal(kd, kl, sizeof(kd));
	assert_memory_not_equal(kd, cluster_key, sizeof(kd));
	/* nothing more is accepted */
	assert_int_equal(ic_hs_input(p.l, auth.type, auth.buf, auth.len, &none, &why), -EPROTO);
	hs_pair_destroy(&p);

	/* a second handshake derives a different session key */
	uint8_t k2[IC_SESSION_KEY_LEN];
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &ch, &why), 0);
	assert_int_equal(ic_hs_input(p.d, ch.type, ch.buf, ch.len, &auth, &why), 1);
	assert_int_equal(ic_hs_input(p.l, auth.type, auth.buf, auth.len, &none, &why), 1);
	ic_hs_session_key(p.l, k2);
	assert_memory_not_equal(kd, k2, sizeof(kd));
	hs_pair_destroy(&p);
}

static void test_handshake_wrong_key(void **state)
{
	struct ic_hs_msg hello, ch, auth;
	struct hs_pair p;
	const char *why = NULL;

	/* the dialler sees the listener's proof fail */
	hs_pair_create(&p, cluster_key, other_key, 1, 7, 7);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &ch, &why), 0);
	assert_int_equal(ic_hs_input(p.d, ch.type, ch.buf, ch.len, &auth, &why), -EACCES);
	assert_non_null(why);
	assert_int_equal(auth.type, 0);
	assert_false(ic_hs_done(p.d));
	hs_pair_destroy(&p);

	/* a dialler without the key that answers anyway (forged AUTH) fails at the listener */
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &ch, &why), 0);
	assert_int_equal(ic_hs_input(p.d, ch.type, ch.buf, ch.len, &auth, &why), 1);
	auth.buf[auth.len - 1] ^= 1;   /* last proof byte */
	assert_int_equal(ic_hs_input(p.l, auth.type, auth.buf, auth.len, &ch, &why), -EACCES);
	assert_false(ic_hs_done(p.l));
	hs_pair_destroy(&p);
}

static void test_handshake_replay(void **state)
{
	struct ic_hs_msg hello, ch, auth, out;
	struct hs_pair p;
	struct ic_hs *l2;
	struct ic_hs_params lp = { .self = 7, .key = cluster_key, .key_len = 32 };
	const char *why;

	/* record a good handshake */
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &ch, &why), 0);
	assert_int_equal(ic_hs_input(p.d, ch.type, ch.buf, ch.len, &auth, &why), 1);
	assert_int_equal(ic_hs_input(p.l, auth.type, auth.buf, auth.len, &out, &why), 1);
	hs_pair_destroy(&p);

	/* replay HELLO + AUTH to a fresh listener: its new nonce makes the old proof worthless */
	assert_int_equal(ic_hs_create(&lp, &l2), 0);
	assert_int_equal(ic_hs_input(l2, hello.type, hello.buf, hello.len, &out, &why), 0);
	assert_int_equal(ic_hs_input(l2, auth.type, auth.buf, auth.len, &out, &why), -EACCES);
	assert_false(ic_hs_done(l2));
	ic_hs_destroy(l2);

	/* replay a recorded CHALLENGE to a fresh dialler: bound to the old dialler nonce */
	struct ic_hs *d2;
	struct ic_hs_params dp = { .self = 1, .key = cluster_key, .key_len = 32, .dialler = true, .expect_peer = 7 };
	struct ic_hs_msg hello2;
	assert_int_equal(ic_hs_create(&dp, &d2), 0);
	assert_int_equal(ic_hs_start(d2, &hello2), 0);
	assert_int_equal(ic_hs_input(d2, ch.type, ch.buf, ch.len, &out, &why), -EACCES);
	ic_hs_destroy(d2);
}

static void test_handshake_garbled_and_out_of_order(void **state)
{
	struct ic_hs_msg hello, ch, out;
	struct hs_pair p;
	const char *why;
	uint8_t junk[64];

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);

	/* garbage as HELLO */
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_input(p.l, IC_T_HELLO, junk, sizeof(junk), &out, &why), -EPROTO);
	assert_non_null(why);
	/* and the state machine is dead afterwards */
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &out, &why), -EPROTO);
	hs_pair_destroy(&p);

	/* AUTH before HELLO */
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_input(p.l, IC_T_AUTH, junk, 34, &out, &why), -EPROTO);
	hs_pair_destroy(&p);

	/* HELLO with a short nonce; with a wrong version; oversized */
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	hello.buf[5] = 10;   /* nonce length field (after version and node_id varints) */
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &out, &why), -EPROTO);
	hs_pair_destroy(&p);
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	hello.buf[1] = 9;    /* version */
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &out, &why), -EPROTO);
	hs_pair_destroy(&p);
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_input(p.l, IC_T_HELLO, junk, IC_HS_MSG_MAX + 1, &out, &why), -EPROTO);
	hs_pair_destroy(&p);

	/* empty CHALLENGE to a dialler */
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.d, IC_T_CHALLENGE, junk, 0, &out, &why), -EPROTO);
	hs_pair_destroy(&p);

	/* truncated CHALLENGE */
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 7);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &ch, &why), 0);
	assert_int_equal(ic_hs_input(p.d, ch.type, ch.buf, ch.len - 5, &out, &why), -EPROTO);
	hs_pair_destroy(&p);
}

static void test_handshake_bad_ids(void **state)
{
	struct ic_hs_msg hello, ch, out;
	struct hs_pair p;
	const char *why;

	/* a dialler claiming to be the listener itself */
	hs_pair_create(&p, cluster_key, cluster_key, 3, 3, 3);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &out, &why), -EPERM);
	hs_pair_destroy(&p);

	/* an id the listener's peer check refuses */
	hs_pair_create(&p, cluster_key, cluster_key, 9, 7, 7);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &out, &why), -EPERM);
	hs_pair_destroy(&p);

	/* the listener is not the node we dialled */
	hs_pair_create(&p, cluster_key, cluster_key, 1, 7, 8);
	assert_int_equal(ic_hs_start(p.d, &hello), 0);
	assert_int_equal(ic_hs_input(p.l, hello.type, hello.buf, hello.len, &ch, &why), 0);
	assert_int_equal(ic_hs_input(p.d, ch.type, ch.buf, ch.len, &out, &why), -EPERM);
	hs_pair_destroy(&p);

	/* short keys are refused */
	struct ic_hs *hs;
	struct ic_hs_params bad = { .self = 1, .key = cluster_key, .key_len = IC_KEY_MIN - 1 };
	assert_int_equal(ic_hs_create(&bad, &hs), -EINVAL);
}

/* ---- addresses ---- */

static void test_addr_parse(void **state)
{
	struct ic_sockaddr a;
	char buf[IC_ADDR_MAX];

	assert_int_equal(ic_addr_parse("127.0.0.1:5000", &a), 0);
	assert_int_equal(a.ss.ss_family, AF_INET);
	assert_int_equal(ic_addr_port(&a), 5000);
	assert_string_equal(ic_addr_format(&a, buf, sizeof(buf)), "127.0.0.1:5000");
	assert_int_equal(ic_addr_parse("[::1]:65535", &a), 0);
	assert_int_equal(a.ss.ss_family, AF_INET6);
	assert_string_equal(ic_addr_format(&a, buf, sizeof(buf)), "[::1]:65535");
	assert_int_equal(ic_addr_parse("localhost:0", &a), 0);
	assert_int_equal(a.ss.ss_family, AF_INET);
	assert_string_equal(ic_addr_format(&a, buf, sizeof(buf)), "127.0.0.1:0");

	const char *bad[] = { "", "127.0.0.1", "127.0.0.1:", ":5000", "127.0.0.1:65536", "127.0.0.1:-1",
			      "127.0.0.1:50x", "::1:5000", "[::1]5000", "[::1", "999.1.1.1:5", "127.0.0.1:+5" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		unsigned long before = log_error_count();

		assert_int_equal(ic_addr_parse(bad[i], &a), -EINVAL);
		assert_true(log_error_count() > before);
	}
	assert_int_equal(ic_addr_parse(NULL, &a), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_header_round_trip, setup),
		cmocka_unit_test_setup(test_stream_decode_every_prefix, setup),
		cmocka_unit_test_setup(test_handshake_phase_frames, setup),
		cmocka_unit_test_setup(test_truncated_and_trailing, setup),
		cmocka_unit_test_setup(test_oversized_length, setup),
		cmocka_unit_test_setup(test_wrong_magic, setup),
		cmocka_unit_test_setup(test_wrong_version, setup),
		cmocka_unit_test_setup(test_unknown_type, setup),
		cmocka_unit_test_setup(test_tag_flag_must_match_phase, setup),
		cmocka_unit_test_setup(test_bad_seq, setup),
		cmocka_unit_test_setup(test_bad_mac, setup),
		cmocka_unit_test_setup(test_hmac_alternative, setup),
		cmocka_unit_test_setup(test_mac_known_answer_any_split, setup),
		cmocka_unit_test_setup(test_handshake_right_key, setup),
		cmocka_unit_test_setup(test_handshake_wrong_key, setup),
		cmocka_unit_test_setup(test_handshake_replay, setup),
		cmocka_unit_test_setup(test_handshake_garbled_and_out_of_order, setup),
		cmocka_unit_test_setup(test_handshake_bad_ids, setup),
		cmocka_unit_test_setup(test_addr_parse, setup),
	};

	return cmocka_run_group_tests_name("interconnect frame/auth", tests, NULL, NULL);
}
