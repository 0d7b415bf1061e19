/* SPDX-License-Identifier: MIT */
/*
 * endpoint — one node's place on the cluster network: it owns the transport instance (whichever one the program's
 * composition root named, fabric included) and the I/O thread that runs its ic_poll loop, and hands received
 * frames to the subscriber that owns their type. A node has exactly one endpoint and, through it, one authenticated
 * connection per node pair; the DSM region and the cluster link are two subscribers of it, neither knowing of the
 * other nor which transport carries them.
 *
 * Life cycle: ic_endpoint_create (configuration only; nothing listens yet) -> ic_endpoint_subscribe for every
 * client -> ic_endpoint_start (the transport is created accepting exactly the subscribed types, then the I/O thread
 * starts) -> ... -> ic_endpoint_unsubscribe (a client going away; the endpoint keeps running) -> ic_endpoint_destroy.
 *
 * Subscribers own disjoint ranges of frame types (>= IC_TYPE_USER_MIN). A frame of a type nobody subscribed is a
 * protocol error for the transport (it closes that connection); one of a type whose subscriber has left is
 * dropped and counted. Every peer event goes to every subscriber with an on_peer.
 *
 * Threading: every callback runs on the I/O thread, one at a time, in the order the transport delivered (so frames
 * from one peer reach their subscribers in the order that peer sent them, whichever subscriber). Callbacks may
 * send and must not block for long: every other subscriber's frames wait behind them. ic_endpoint_send, _wake,
 * _peer_is_up, _wait_peers and _get_stats are safe from any thread once the endpoint started (send before start
 * returns -ENOTCONN). ic_endpoint_unsubscribe returns only when no callback of that subscriber runs or will run;
 * it may be called from one of that subscriber's own callbacks.
 */
#ifndef RACKVM_INTERCONNECT_ENDPOINT_H
#define RACKVM_INTERCONNECT_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "interconnect/ic.h"

#define IC_ENDPOINT_MAX_SUBS 8u

struct ic_endpoint;

struct ic_endpoint_config {
	const char *transport;       /* "tcp", "rdma", "loop", "fabric" */
	/* Everything a transport takes (self, listen, peers, key, epoch, max_frame, heartbeat, dead, busy poll,
	 * fabric inner/link/seed); accept_types, on_frame, on_peer and opaque are the endpoint's and ignored. The
	 * peer table, strings and key are copied (the key is wiped once the transport has its own). */
	struct ic_config ic;
};

struct ic_subscriber {
	const char *name;            /* for log lines */
	uint8_t type_min, type_max;  /* received frame types, inclusive */
	ic_frame_fn on_frame;        /* required */
	ic_peer_fn on_peer;          /* may be NULL */
	/* May be NULL: called on the I/O thread after every poll round; returns the longest the next round may wait
	 * (ms), or -1 for "no limit" (the endpoint then waits at most a second). */
	int (*on_tick)(void *opaque);
	/* May be NULL: the I/O loop failed (ic_poll returned a fatal error); called once, then the thread ends. */
	void (*on_io_failed)(void *opaque, const char *why);
	void *opaque;
};

/* Check and copy the configuration. -EINVAL (logged) for a bad one; the transport name is checked at start. */
int ic_endpoint_create(const struct ic_endpoint_config *cfg, struct ic_endpoint **out);
/* Stop the I/O thread (if started) and destroy the transport. Subscribers must not use the endpoint afterwards. */
void ic_endpoint_destroy(struct ic_endpoint *ep);

/* Add a subscriber, before start. Returns a handle for ic_endpoint_unsubscribe (>= 0), -EBUSY after start,
 * -EEXIST when its range overlaps another's, -EINVAL for a bad range or no on_frame, -ENOSPC past
 * IC_ENDPOINT_MAX_SUBS. */
int ic_endpoint_subscribe(struct ic_endpoint *ep, const struct ic_subscriber *sub);
/* No callback of subscriber `handle` runs after this returns; its frame types are dropped from then on. */
void ic_endpoint_unsubscribe(struct ic_endpoint *ep, int handle);

/* Create the transport (listening and dialling at once) and start the I/O thread. ic_create's errors. */
int ic_endpoint_start(struct ic_endpoint *ep);

/* ic_send through the endpoint's transport; -ENOTCONN before start. */
int ic_endpoint_send(struct ic_endpoint *ep, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		     int iovcnt);
void ic_endpoint_wake(struct ic_endpoint *ep);
bool ic_endpoint_peer_is_up(struct ic_endpoint *ep, uint32_t peer);
/* Wait until every configured peer is up. 0, -ETIMEDOUT, -EIO when the I/O loop failed, -ENOTCONN before start. */
int ic_endpoint_wait_peers(struct ic_endpoint *ep, uint64_t timeout_ns);
void ic_endpoint_get_stats(struct ic_endpoint *ep, struct ic_stats *out);
/* Frames dropped because their subscriber had left. */
uint64_t ic_endpoint_orphan_frames(struct ic_endpoint *ep);
uint32_t ic_endpoint_self(const struct ic_endpoint *ep);
/* The transport, for what only it offers (the fabric's link controls); NULL before start. */
struct ic_transport *ic_endpoint_transport(struct ic_endpoint *ep);

#endif
