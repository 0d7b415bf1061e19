/* SPDX-License-Identifier: MIT */
/*
 * Connection authentication (handshake) and per-frame MAC. Transport-independent: tcp and rdma drive the same
 * state machine and carry its messages as untagged frames (types IC_T_HELLO/CHALLENGE/AUTH, payload = protobuf
 * messages of interconnect/ic.proto).
 *
 *   dialler (D)                                         listener (L)
 *   HELLO {version, id_D, nonce_D}            ---->     checks version, id_D is an allowed peer
 *                                             <----     CHALLENGE {version, id_L, nonce_L, proof_L}
 *   checks id_L == the peer it dialled,
 *   proof_L; derives the session key
 *   AUTH {proof_D}                            ---->     checks proof_D; derives the session key
 *   (done)                                              (done)
 *
 *   proof_R = HMAC-SHA256(K, "rackvm-ic-v1 " R || version || id_D || id_L || nonce_D || nonce_L), R = "listener"
 *             or "dialler" (the role label stops a proof being reflected back); K = the cluster key; ids and
 *             version as 4-byte little-endian; nonces 32 bytes from RAND_bytes.
 *   session key S = HMAC-SHA256(K, "rackvm-ic-v1 session" || version || id_D || id_L || nonce_D || nonce_L).
 *
 * Both sides prove possession of K over fresh nonces of both sides, so a recorded handshake cannot be replayed
 * and neither side can be impersonated without K. S is fresh per connection, so frame MAC nonces (which restart
 * with seq 0 on every connection) are never reused under one key.
 *
 * After the handshake every frame carries IC_TAG_LEN bytes: AES-256-GMAC under S over header || payload, with a
 * 96-bit nonce = direction (4 bytes: 0 dialler->listener, 1 listener->dialler) || seq (8 bytes). The header
 * (which holds seq) is covered, so replay, reordering, truncation and bit flips are all detected. Frames are
 * authenticated, not encrypted: the payload travels in clear (see docs/interconnect.md for why and the numbers).
 */
#ifndef RACKVM_INTERCONNECT_AUTH_H
#define RACKVM_INTERCONNECT_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "interconnect/frame.h"

#define IC_NONCE_LEN 32u
#define IC_PROOF_LEN 32u
#define IC_SESSION_KEY_LEN 32u
#define IC_HS_VERSION 1u             /* handshake protocol version (carried in HELLO/CHALLENGE, bound in proofs) */
#define IC_HS_MSG_MAX 256u           /* upper bound of an encoded handshake payload (larger: protocol error) */

enum ic_dir {
	IC_DIR_D2L = 0,              /* frames sent by the dialler */
	IC_DIR_L2D = 1,              /* frames sent by the listener */
};

/* ---- handshake ---------------------------------------------------------------------------------------- */

struct ic_hs;

/* May peer `id` connect to us? (listener: in the peer list, not us, allowed to dial us). */
typedef bool (*ic_hs_peer_ok_fn)(void *opaque, uint32_t id);

struct ic_hs_params {
	uint32_t self;
	const uint8_t *key;          /* cluster key (copied) */
	size_t key_len;
	bool dialler;
	uint32_t expect_peer;        /* dialler: the id we dialled (CHALLENGE must come from it) */
	ic_hs_peer_ok_fn peer_ok;    /* listener: judge the HELLO's id; NULL = any id but self */
	void *opaque;
};

/* One handshake message to send: frame type + protobuf payload. */
struct ic_hs_msg {
	uint8_t type;                /* 0: nothing to send */
	size_t len;
	uint8_t buf[IC_HS_MSG_MAX];
};

int ic_hs_create(const struct ic_hs_params *p, struct ic_hs **out);
void ic_hs_destroy(struct ic_hs *hs);

/* Dialler: produce HELLO. Listener: nothing (out->type = 0). 0 or -errno. */
int ic_hs_start(struct ic_hs *hs, struct ic_hs_msg *out);

/*
 * Feed one received handshake frame. Returns 0 when the handshake goes on (out may hold a reply), 1 when it
 * completed (out may hold a last reply: the dialler's AUTH; the session key and peer id are ready), or a negative
 * errno when it failed: -EPROTO (garbled/unexpected message), -EACCES (bad proof: wrong key or replay),
 * -EPERM (peer id not allowed); *why then says what happened for the log line. After a failure or completion,
 * further input fails with -EPROTO.
 */
int ic_hs_input(struct ic_hs *hs, uint8_t type, const void *payload, size_t len, struct ic_hs_msg *out,
		const char **why);

bool ic_hs_done(const struct ic_hs *hs);
/* The authenticated peer id (valid once done; the dialler knows it from the start). */
uint32_t ic_hs_peer(const struct ic_hs *hs);
/* Copy the session key out (valid once done). */
void ic_hs_session_key(const struct ic_hs *hs, uint8_t key[IC_SESSION_KEY_LEN]);

/* ---- what every transport's connections share -------------------------------------------------------- */

struct ic_transport;
struct ic_mac;

/* The connection rule (the smaller id dials): may a listener admit a HELLO from id? Only ids smaller than ours
 * that are in our peer list. */
bool ic_conn_peer_may_dial(const struct ic_transport *t, uint32_t id);
/* A handshake for one connection of transport t: its id and cluster key, the dialling rule above. */
int ic_conn_hs_create(const struct ic_transport *t, bool dialler, uint32_t expect_peer, struct ic_hs **out);
/* Once hs is done: the MAC for frames we receive (rx) and for frames we send (tx), keyed by the session key,
 * each bound to its direction so the two never share a nonce. The copied session key is wiped. 0 or -errno
 * (then neither is created). */
int ic_conn_macs_create(const struct ic_hs *hs, bool dialler, struct ic_mac **rx, struct ic_mac **tx);

/* ---- per-frame MAC ------------------------------------------------------------------------------------- */

/* MAC state of one direction of one connection. Not thread-safe: the sender uses its tx MAC under its send
 * lock, the receiver its rx MAC on the I/O thread. */
struct ic_mac;

int ic_mac_create(const uint8_t key[IC_SESSION_KEY_LEN], enum ic_dir dir, struct ic_mac **out);
void ic_mac_destroy(struct ic_mac *m);

/* tag over the 24 header bytes (as on the wire; seq is read from them) followed by the payload iov. 0/-EIO. */
int ic_mac_tag(struct ic_mac *m, const void *hdr, const struct iovec *iov, int iovcnt, uint8_t tag[IC_TAG_LEN]);
/* 0 when tag is right for header || payload (constant-time compare), -EBADMSG otherwise. */
int ic_mac_verify(struct ic_mac *m, const void *hdr, const void *payload, size_t len, const uint8_t tag[IC_TAG_LEN]);

/* Alternative MAC kept for the measurement in tests/bench/bench_mac.c: HMAC-SHA256 truncated to 16 bytes over
 * direction || header || payload. Not used on the wire. */
int ic_mac_create_hmac(const uint8_t key[IC_SESSION_KEY_LEN], enum ic_dir dir, struct ic_mac **out);

#endif
