/* SPDX-License-Identifier: MIT */
/*
 * interconnect — how rackvm nodes talk to each other.
 *
 * A transport instance (struct ic_transport) is one node's endpoint into the cluster: it listens, connects to
 * every peer it is told about (one connection per node pair; the node with the smaller id dials), authenticates
 * each connection with the cluster key, and then carries frames: a pinned header (interconnect/frame.h), a payload
 * and an authentication tag. Implementations are registered by name in an ops table ("tcp", "rdma", "loop",
 * "fabric"); callers never know which one they hold.
 *
 * Threading contract
 *  - ic_poll() is called by exactly one thread, the transport's I/O thread. Every callback (on_frame, on_peer)
 *    runs inside ic_poll() on that thread. Callbacks may call ic_send() and ic_wake(); they must not call
 *    ic_poll() or ic_destroy().
 *  - ic_send(), ic_wake(), ic_set_epoch(), ic_peer_is_up() and ic_get_stats() are safe from any thread.
 *  - ic_destroy() after the I/O thread has stopped calling ic_poll().
 *
 * Delivery contract: frames from one peer arrive in the order that peer sent them, each at most once, unless the
 * fabric wrapper was told to lose or reorder them. A frame sent while the peer is down is refused (-ENOTCONN):
 * nothing is buffered across a reconnect, because the peer may have restarted and lost all state — the layer
 * above decides what to resend.
 *
 * Errors: actions return 0 or a negative errno; nothing a peer sends can crash the process — a malformed or
 * unauthenticated frame is logged, counted, and closes that connection.
 */
#ifndef RACKVM_INTERCONNECT_IC_H
#define RACKVM_INTERCONNECT_IC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/bitmap.h"

#define IC_MAX_NODES 1024u
#define IC_ADDR_MAX 128u
#define IC_KEY_MIN 16u            /* cluster keys shorter than this are refused */
#define IC_KEY_MAX 64u
#define IC_DEFAULT_MAX_FRAME (64u * 1024u)   /* payload bytes */
#define IC_ABS_MAX_FRAME (16u * 1024u * 1024u)
#define IC_ANY_PEER UINT32_MAX     /* "every link" for the fabric controls */

/* Frame types below IC_TYPE_USER_MIN belong to the transport itself (handshake, heartbeat, close). */
#define IC_TYPE_USER_MIN 0x10u

struct ic_transport;

/* A received frame. payload is valid only for the duration of the callback (it may point into a receive
 * buffer or a registered RDMA region): copy what must outlive it. */
struct ic_frame {
	uint8_t type;
	uint16_t flags;             /* upper-layer flags (the transport's own bits are masked off) */
	uint32_t epoch;             /* membership epoch the sender stamped; the transport does not judge it */
	uint64_t seq;               /* per-connection, per-direction sequence number */
	const void *payload;
	uint32_t len;
};

enum ic_peer_event {
	IC_PEER_UP = 1,             /* connected and authenticated; frames may flow */
	IC_PEER_DOWN,               /* connection lost, closed, or silent for longer than dead_ms */
};

typedef void (*ic_frame_fn)(void *opaque, uint32_t src, const struct ic_frame *frame);
typedef void (*ic_peer_fn)(void *opaque, uint32_t peer, enum ic_peer_event ev, const char *why);

struct ic_peer_addr {
	uint32_t id;
	char addr[IC_ADDR_MAX];     /* tcp/rdma: "host:port"; loop: "hub/ID" */
};

/* Link behaviour of the fabric wrapper. All-zero means a perfect link. */
struct ic_link_params {
	uint32_t latency_us;        /* fixed one-way delay */
	uint32_t jitter_us;         /* + uniform [0, jitter_us] */
	uint32_t bandwidth_mbps;    /* serialization delay per link; 0 = unlimited */
	double loss;                /* probability a frame is dropped, [0,1] */
	double reorder;             /* probability a frame is held back behind later ones, [0,1] */
	uint32_t reorder_us;        /* how long a held-back frame waits (default 2 x latency + 50 us) */
	bool partitioned;           /* drop every frame on this link, both directions, at this node */
};

struct ic_config {
	uint32_t self;                          /* this node's id, < IC_MAX_NODES */
	const char *listen;                     /* address to listen on; NULL: do not listen */
	const struct ic_peer_addr *peers;       /* every other member (self excluded) */
	size_t n_peers;
	const uint8_t *key;                     /* cluster key, IC_KEY_MIN..IC_KEY_MAX bytes */
	size_t key_len;
	uint32_t epoch;                         /* initial membership epoch stamped on frames */
	uint32_t max_frame;                     /* max payload bytes; 0 = IC_DEFAULT_MAX_FRAME */
	uint32_t heartbeat_ms;                  /* 0 = 100 */
	uint32_t dead_ms;                       /* silence after which a peer is down; 0 = 1000 */
	uint32_t busy_poll_us;                  /* tcp: after recent traffic ic_poll polls without sleeping for up to
						 * this long before it blocks (lower latency, burns the core meanwhile;
						 * capped at 1000); 0 = off, always block. Other transports ignore it. */
	uint64_t accept_types[4];               /* bitmap of upper-layer types accepted; others are a protocol error */
	ic_frame_fn on_frame;
	ic_peer_fn on_peer;                     /* may be NULL */
	void *opaque;

	/* fabric only */
	const char *inner;                      /* name of the wrapped transport, e.g. "tcp" */
	struct ic_link_params link;             /* initial parameters of every link */
	uint64_t seed;                          /* makes loss/jitter/reordering reproducible */
};

static inline void ic_accept_type(struct ic_config *cfg, uint8_t type)
{
	bitmap_set(cfg->accept_types, type);
}

static inline bool ic_type_accepted(const uint64_t accept_types[4], uint8_t type)
{
	return bitmap_test(accept_types, type);
}

struct ic_stats {
	uint64_t frames_tx, frames_rx;
	uint64_t bytes_tx, bytes_rx;            /* payload bytes */
	uint64_t proto_errors;                  /* malformed frames, bad MACs, unknown types */
	uint64_t auth_failures;
	uint64_t connects, disconnects;
	uint64_t dropped;                       /* fabric: frames lost on purpose */
};

/* Create a transport by name ("tcp", "rdma", "loop", "fabric"). Starts listening and dialling at once;
 * connections come up as ic_poll() runs. -ENOENT for an unknown name, -ENOTSUP when the transport was not built
 * (rdma without libibverbs), -EINVAL for a bad configuration (each logged with the reason). */
int ic_create(const char *name, const struct ic_config *cfg, struct ic_transport **out);
void ic_destroy(struct ic_transport *t);

/* Send one frame to peer dst: header built by the transport, payload gathered from iov (never copied into an
 * intermediate buffer by tcp). type >= IC_TYPE_USER_MIN. 0 when queued for transmission; -ENOTCONN when the peer
 * is not up; -EMSGSIZE over max_frame; -ENOBUFS when the peer's send queue is full; -EINVAL for a bad type/peer. */
int ic_send(struct ic_transport *t, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov, int iovcnt);

/* Run the I/O loop once: wait up to timeout_ms (-1 = forever, 0 = don't wait) for something to do, do it
 * (callbacks included), return. Returns the number of frames delivered, or a negative errno on a fatal error. */
int ic_poll(struct ic_transport *t, int timeout_ms);

/* Make a blocked ic_poll() return early. */
void ic_wake(struct ic_transport *t);

void ic_set_epoch(struct ic_transport *t, uint32_t epoch);
bool ic_peer_is_up(struct ic_transport *t, uint32_t peer);
void ic_get_stats(struct ic_transport *t, struct ic_stats *out);
const char *ic_name(const struct ic_transport *t);

/* Fabric controls, switchable at run time from any thread. peer = IC_ANY_PEER for every link of this node.
 * -EOPNOTSUPP on a transport that is not the fabric. */
int ic_fabric_set_link(struct ic_transport *t, uint32_t peer, const struct ic_link_params *p);
int ic_fabric_partition(struct ic_transport *t, uint32_t peer, bool partitioned);

/* "host:port" -> sockaddr helpers shared by tcp and rdma live in interconnect/addr.h. */

#endif
