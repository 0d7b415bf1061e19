/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for everything a peer's bytes reach before and after authentication:
 *   byte 0 bits 0-1 select the path,
 *     0: the stream receive path of a connection (ic_frame_receive in a loop, as tcp does), established or
 *        not (bit 2), with the per-frame MAC under a fixed session key (seeds carry valid tags);
 *     1: one whole message (rdma/loop style, ic_frame_receive with whole_message);
 *     2: the listener's handshake fed with the frames found in the input;
 *     3: the dialler's handshake (after its HELLO) fed likewise, plus the CLOSE message decoder.
 *   byte 1 is the expected seq of the first frame.
 * Invariants checked: OK frames lie inside the input and respect max_frame; nothing crashes or leaks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "interconnect/auth.h"
#include "interconnect/frame_codec.h"
#include "interconnect/ic.h"
#include "interconnect/ic.pb-c.h"
#include "util/log.h"

#define FUZZ_MAX_FRAME 4096u

static const uint8_t fuzz_session_key[IC_SESSION_KEY_LEN] = "fuzz-session-key-fuzz-session-k";
static const uint8_t fuzz_cluster_key[32] = "fuzz-cluster-key-fuzz-cluster-k";
static uint64_t accept_types[4];
static struct ic_mac *rx_mac;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool peer_ok(void *opaque, uint32_t id)
{
	return id < 4;
}

static void feed_handshake(struct ic_hs *hs, const uint8_t *p, size_t n, struct ic_frame_rules *r)
{
	while (n) {
		struct ic_frame_hdr hdr;
		struct ic_hs_msg out;
		const char *why;
		size_t total;
		int ret;

		if (ic_frame_receive("fuzz", p, n, false, r, NULL, &hdr, &total) != IC_FRAME_OK)
			return;
		if (hdr.type == IC_T_CLOSE) {
			IcClose *c = ic_close__unpack(NULL, hdr.length, p + IC_HDR_LEN);

			if (c)
				ic_close__free_unpacked(c, NULL);
		} else {
			ret = ic_hs_input(hs, hdr.type, p + IC_HDR_LEN, hdr.length, &out, &why);
			if (ret < 0)
				return;
			if (out.len > sizeof(out.buf))
				abort();
			if (ret == 1) {
				uint8_t key[IC_SESSION_KEY_LEN];

				if (!ic_hs_done(hs))
					abort();
				ic_hs_session_key(hs, key);
			}
		}
		p += total;
		n -= total;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ic_frame_rules r;
	struct ic_frame_hdr hdr;
	size_t total;

	if (!rx_mac) {
		log_set_quiet(true);
		accept_types[0x20 / 64] |= 1ULL << (0x20 % 64);
		accept_types[0x80 / 64] |= 1ULL << (0x80 % 64);
		if (ic_mac_create(fuzz_session_key, IC_DIR_D2L, &rx_mac))
			abort();
	}
	if (size < 2)
		return 0;
	uint8_t mode = data[0] & 3;
	bool established = data[0] & 4;
	ic_frame_rules_init(&r, established ? FUZZ_MAX_FRAME : IC_HS_MSG_MAX, accept_types);
	r.established = established;
	r.expect_seq = data[1];
	data += 2;
	size -= 2;

	switch (mode) {
	case 0: {
		size_t off = 0;

		for (;;) {
			enum ic_frame_status st = ic_frame_receive("fuzz", data + off, size - off, false, &r, rx_mac,
								   &hdr, &total);
			if (st != IC_FRAME_OK)
				break;
			if (total > size - off || hdr.length > r.max_frame || total < IC_HDR_LEN)
				abort();
			off += total;
		}
		break;
	}
	case 1:
		if (ic_frame_receive("fuzz", data, size, true, &r, rx_mac, &hdr, &total) == IC_FRAME_OK &&
		    (total != size || hdr.length > r.max_frame))
			abort();
		break;
	case 2:
	case 3: {
		struct ic_hs_params p = {
			.self = mode == 2 ? 3 : 1,
			.key = fuzz_cluster_key,
			.key_len = sizeof(fuzz_cluster_key),
			.dialler = mode == 3,
			.expect_peer = 3,
			.peer_ok = peer_ok,
		};
		struct ic_hs_msg hello;
		struct ic_hs *hs;

		if (ic_hs_create(&p, &hs))
			abort();
		if (ic_hs_start(hs, &hello))
			abort();
		ic_frame_rules_init(&r, IC_HS_MSG_MAX, accept_types);
		feed_handshake(hs, data, size, &r);
		ic_hs_destroy(hs);
		break;
	}
	}
	return 0;
}
