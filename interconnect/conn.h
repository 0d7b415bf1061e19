/* SPDX-License-Identifier: MIT */
/*
 * The connection life cycle every connection-oriented transport shares (tcp, rdma): one connection per node pair,
 * set up by the node with the smaller id, authenticated by the handshake of interconnect/auth.h, kept alive by
 * heartbeats, ended by CLOSE, a send failure, silence or a newer connection from the same peer.
 *
 *   dialler:  SETUP (the medium connects) -> HANDSHAKE (HELLO ...) -> UP -> DEAD
 *   listener: SETUP (the medium accepts)  -> HANDSHAKE (pending list, no peer yet) -> UP (peer known) -> DEAD
 *
 * What lives here: the peer table (who dials whom, dial backoff 10 ms doubling to 1 s, the published connection),
 * the list of accepted connections not yet authenticated (at most IC_CONN_MAX_PENDING), the handshake, what a
 * transport frame (HELLO, CHALLENGE, AUTH, HEARTBEAT, CLOSE) does, how a failure is judged and counted, the
 * heartbeat and dead timers, and closing (unpublish, report the peer down, free at the end of the poll: the
 * graveyard). What a medium keeps: its sockets or queue pairs, how a frame is put on the wire and read off it,
 * and its part of connecting. It embeds struct ic_conn_set first in its transport and struct ic_conn in its
 * connections, and gives the ops below.
 *
 * Judging what a peer sends (the same on every medium):
 *   - a frame the codec refuses, a bad MAC, a data frame before authentication: protocol error (counted), closed;
 *   - a handshake that fails (garbled, wrong key, an id that may not dial us) or a CLOSE before authentication:
 *     authentication failure (counted), closed; a peer that speaks the protocol is first told why by a CLOSE
 *     (the reasons name no secret), so both logs say what happened.
 *
 * Threads: everything here runs on the transport's I/O thread except ic_conn_send() (any thread). The send side
 * of a connection (seq, tx MAC, the medium's send state) is guarded by its peer's lock once the connection has a
 * peer (a dialled one from the start, an accepted one once authenticated); before that the I/O thread alone
 * touches it. The peer lock also guards peer->conn, so a sender never sees a connection being freed. Callbacks
 * (on_frame, on_peer) run with no lock held.
 */
#ifndef RACKVM_INTERCONNECT_CONN_H
#define RACKVM_INTERCONNECT_CONN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "interconnect/addr.h"
#include "interconnect/frame_codec.h"
#include "interconnect/ic_internal.h"

#define IC_CONN_MAX_PENDING 64u          /* accepted connections not yet authenticated */
#define IC_CONN_BACKOFF_MIN_MS 10u
#define IC_CONN_BACKOFF_MAX_MS 1000u
#define IC_CONN_NAME_MAX (IC_ADDR_MAX + 32)

enum ic_conn_state { IC_CONN_SETUP, IC_CONN_HANDSHAKE, IC_CONN_UP, IC_CONN_DEAD };

struct ic_conn_set;
struct ic_conn_peer;
struct ic_hs;
struct ic_mac;

struct ic_conn {
	struct ic_conn_set *set;
	struct ic_conn_peer *peer;       /* dialled: from the start; accepted: once authenticated */
	bool dialler;
	enum ic_conn_state state;        /* written under the peer lock once there is a peer */
	char name[IC_CONN_NAME_MAX];
	uint64_t start_ns;

	/* receive side: I/O thread only */
	struct ic_hs *hs;                /* during the handshake */
	struct ic_frame_rules rules;
	struct ic_mac *rx_mac;
	uint64_t last_rx_ns;

	/* send side: under the peer lock (see the top) */
	uint64_t tx_seq;
	struct ic_mac *tx_mac;
	bool tx_broken;                  /* a send failed: the I/O thread closes the connection */
	bool tx_active;                  /* sent since the last timer pass (saves a clock read per send) */
	uint64_t last_tx_ns;             /* timer pass that saw tx_active last */

	struct ic_conn *next;            /* pending list / graveyard */
};

struct ic_conn_peer {
	uint32_t id;
	bool we_dial;
	struct ic_sockaddr sa;           /* where to dial (we_dial only) */
	pthread_mutex_t lock;
	struct ic_conn *conn;            /* the authenticated connection (written under lock by the I/O thread) */
	_Atomic bool up;
	/* dialling: I/O thread only */
	struct ic_conn *dialing;
	uint64_t next_dial_ns;
	uint32_t backoff_ms;
	bool dial_warned;                /* the first failed dial is a warning, the rest are quiet */
};

struct ic_conn_ops {
	const char *medium;              /* "tcp", "rdma": for log lines */
	int max_iov;                     /* caller iov entries per frame; 0: no limit */
	uint64_t setup_extra_ns;         /* SETUP + HANDSHAKE may take dead_ms + this */
	/* Frame and send with the send side owned (see the top); c is neither DEAD nor broken. `flags` has the
	 * transport bits set. 0 or -errno (-ENOBUFS: try later; a broken stream: call ic_conn_mark_broken). */
	int (*send_locked)(struct ic_conn *c, uint8_t type, uint16_t flags, const struct iovec *iov, int iovcnt,
			   size_t len);
	/* Optional: authenticated, about to be published (I/O thread). A failure closes the connection. */
	int (*established)(struct ic_conn *c);
	/* Take c off the medium (I/O thread; c is DEAD and unpublished): stop its events, disconnect. */
	void (*detach)(struct ic_conn *c);
	/* Free the medium's object around c (detached, or never attached). */
	void (*free)(struct ic_conn *c);
	/* Start dialling p (timers, I/O thread): set p->dialing to the new connection, or call
	 * ic_conn_dial_failed(). */
	void (*dial)(struct ic_conn_set *s, struct ic_conn_peer *p, uint64_t now);
};

/* The common part of a connection-oriented transport: first in the medium's transport struct. */
struct ic_conn_set {
	struct ic_transport base;
	const struct ic_conn_ops *ops;
	struct ic_conn_peer *peers;      /* one per configured peer, in cfg order */
	size_t n_peers;
	struct ic_conn *pending;         /* accepted, not yet authenticated */
	unsigned int n_pending;
	struct ic_conn *graveyard;       /* closed during this poll; freed at its end (stale events) */
	_Atomic bool check_broken;       /* a send failed somewhere (any thread) */
	uint64_t now_ns;                 /* the medium's receive time of this poll's frames */
	int delivered;                   /* user frames handed to on_frame in this poll */
	struct ic_conn *last_rx_conn;    /* the connection that delivered last (cleared when it closes) */
	struct ic_counters ctr;
};

static inline struct ic_conn_set *ic_conn_set_of(struct ic_transport *t)
{
	return (struct ic_conn_set *)t;
}

/* ic_base_init() plus the peer table (addresses of the peers we dial parsed); 0 or -errno (logged). */
int ic_conn_set_init(struct ic_conn_set *s, const struct ic_transport_ops *tops, const struct ic_conn_ops *ops,
		     const struct ic_config *cfg);
/* Close every connection without reporting (a CLOSE with `reason` to each authenticated peer first, best
 * effort), free them, then the peer table and the base. */
void ic_conn_set_fini(struct ic_conn_set *s, const char *reason);

/* Common fields of a new connection (its medium object is zeroed). */
void ic_conn_init(struct ic_conn *c, struct ic_conn_set *s, bool dialler, struct ic_conn_peer *peer);
/* What ic_conn_init and the handshake allocated; the medium's free op calls it. */
void ic_conn_release(struct ic_conn *c);

static inline void ic_conn_lock(struct ic_conn *c)
{
	if (c->peer)
		pthread_mutex_lock(&c->peer->lock);
}

static inline void ic_conn_unlock(struct ic_conn *c)
{
	if (c->peer)
		pthread_mutex_unlock(&c->peer->lock);
}

/* Listener: may one more unauthenticated connection be kept? (false: refuse it, with a log line) */
bool ic_conn_may_accept(struct ic_conn_set *s, const char *from);
void ic_conn_pending_add(struct ic_conn_set *s, struct ic_conn *c);
/* A dial attempt failed (or could not start): the peer is dialled again after its backoff, which doubles. */
void ic_conn_dial_failed(struct ic_conn_peer *p, uint64_t now);

/* SETUP done: HANDSHAKE; the dialler sends HELLO. 0 or -errno (the caller closes). */
int ic_conn_start_handshake(struct ic_conn *c);
/* One whole frame, decoded and MAC-checked by the medium: transport frames are handled here, user frames are
 * counted and handed to on_frame. Stamps c->last_rx_ns with s->now_ns. */
void ic_conn_on_frame(struct ic_conn *c, const struct ic_frame_hdr *hdr, const uint8_t *payload);
/* The medium's decoder refused a frame (st != IC_FRAME_OK): judged as at the top, and closed. */
void ic_conn_frame_error(struct ic_conn *c, enum ic_frame_status st);
void ic_conn_proto_error(struct ic_conn *c, const char *what);

/* Close (I/O thread): unpublish, detach, report the peer down with `why`; freed at the end of the poll. */
void ic_conn_close(struct ic_conn *c, const char *why);
/* A send failed (any thread, send side owned): the I/O thread closes c at the end of its poll. */
void ic_conn_mark_broken(struct ic_conn *c);

/* A transport frame (handshake, heartbeat, CLOSE) on c. */
int ic_conn_send_ctl(struct ic_conn *c, uint8_t type, const void *payload, size_t len);
/* CLOSE with a reason, best effort. */
void ic_conn_send_close(struct ic_conn *c, const char *reason);

/* I/O thread, once per poll: close the connections a send broke (cheap when none did). */
void ic_conn_check_broken(struct ic_conn_set *s);
/* I/O thread, every few ms: heartbeats, dead and setup timeouts, dialling. */
void ic_conn_timers(struct ic_conn_set *s, uint64_t now);
/* I/O thread, at the end of a poll: free what was closed during it. */
void ic_conn_bury(struct ic_conn_set *s);

/* ic_transport_ops entries every connection-oriented transport can point at. */
int ic_conn_send(struct ic_transport *t, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		 int iovcnt);
bool ic_conn_peer_is_up(struct ic_transport *t, uint32_t peer);
void ic_conn_get_stats(struct ic_transport *t, struct ic_stats *out);

#endif
