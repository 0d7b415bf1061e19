/* SPDX-License-Identifier: MIT */
/*
 * tcp transport: one epoll fd, one connection per node pair, authenticated frames (interconnect/auth.h).
 *
 * Connection rule: the node with the smaller id dials; a listener refuses a HELLO from a node with a larger id
 * than its own (or not in its peer list), so two nodes never hold two live connections by accident. When a
 * dialler reconnects (it restarted, or its old connection died on its side first) the listener replaces the
 * old connection by the newly authenticated one: newest wins, the peer is reported DOWN then UP.
 *
 * Threads: ic_poll() runs on the I/O thread, which alone accepts, dials, reads, parses, runs timers and closes
 * connections. ic_send() may run on any thread: it takes the peer's lock, which guards peer->conn and the send
 * side of that connection (seq, tx MAC, out queue, EPOLLOUT arming). The receive side of a connection (buffer,
 * rx MAC, expected seq) belongs to the I/O thread and needs no lock; callbacks run with no lock held. A send
 * that fails marks the connection broken and wakes the I/O thread, which closes it.
 *
 * Send path: one sendmsg of header + the caller's iov + tag, with MSG_NOSIGNAL (a peer that closed is an
 * error, never SIGPIPE); only an unsent remainder is copied, into the connection's out queue, flushed on
 * EPOLLOUT. While the queue is non-empty later frames are appended to it (order), up to TCP_OUTQ_LIMIT bytes
 * (-ENOBUFS beyond).
 *
 * Receive path: reads into a per-connection buffer; frames are checked by the codec (length against max_frame
 * before the buffer grows) and the MAC, then handed to on_frame as a pointer into the buffer.
 *
 * Failure detection: every heartbeat_ms without a frame sent, a HEARTBEAT goes out; a peer silent for dead_ms
 * is declared down and its connection closed; a connection not authenticated within dead_ms is closed. A
 * dialler redials after a failed dial or a lost connection, with backoff 10 ms doubling to 1 s.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "interconnect/addr.h"
#include "interconnect/auth.h"
#include "interconnect/frame_codec.h"
#include "interconnect/ic.pb-c.h"
#include "interconnect/ic_internal.h"
#include "util/clock.h"
#include "util/log.h"

#define TCP_OUTQ_LIMIT (8u * 1024u * 1024u)   /* queued bytes per connection before -ENOBUFS */
#define TCP_RBUF_HS 1024u                     /* receive buffer before authentication */
#define TCP_RBUF_UP (64u * 1024u)             /* receive buffer once up (grows to one max frame) */
#define TCP_MAX_PENDING 64u                   /* unauthenticated inbound connections */
#define TCP_MAX_IOV 64                        /* caller iov entries per frame */
#define TCP_BACKOFF_MIN_MS 10u
#define TCP_BACKOFF_MAX_MS 1000u
#define TCP_TIMER_NS (5 * NSEC_PER_MSEC)      /* timer pass granularity */
#define TCP_MAX_EVENTS 64
#define TCP_BUSY_POLL_MAX_US 1000u
#define TCP_SPIN_EPOLL_EVERY 4                /* busy poll: one epoll pass per this many reads of the hot conn */

enum ep_kind { EP_LISTEN, EP_WAKE, EP_CONN };

enum conn_state { C_CONNECTING, C_HANDSHAKE, C_UP, C_DEAD };

struct tcp_transport;
struct tcp_peer;
static struct ic_transport_ops tcp_ops;

struct tcp_conn {
	enum ep_kind kind;               /* EP_CONN; epoll data points here */
	int fd;
	struct tcp_transport *t;
	struct tcp_peer *peer;           /* dialled: from the start; accepted: once authenticated */
	bool dialler;
	enum conn_state state;
	struct ic_hs *hs;
	char name[IC_ADDR_MAX + 32];
	uint64_t start_ns;

	/* receive side: I/O thread only */
	struct ic_frame_rules rules;
	struct ic_mac *rx_mac;
	uint8_t *rbuf;
	size_t rcap, rlen;
	uint64_t last_rx_ns;

	/* send side: under peer->lock once published in peer->conn (before that the I/O thread alone) */
	uint64_t tx_seq;
	struct ic_mac *tx_mac;
	uint8_t *obuf;
	size_t ocap, ohead, otail;
	bool want_out;
	bool tx_broken;
	bool tx_active;                  /* sent since the last timer pass (saves a clock read per send) */
	uint64_t last_tx_ns;             /* timer pass that saw tx_active last */

	struct tcp_conn *next;           /* pending list / graveyard */
};

struct tcp_peer {
	uint32_t id;
	bool we_dial;
	struct ic_sockaddr sa;
	pthread_mutex_t lock;
	struct tcp_conn *conn;           /* the authenticated connection (written under lock by the I/O thread) */
	_Atomic bool up;
	/* dialling: I/O thread only */
	struct tcp_conn *dialing;
	uint64_t next_dial_ns;
	uint32_t backoff_ms;
	bool dial_warned;
};

struct tcp_transport {
	struct ic_transport base;
	int epfd, evfd, lfd;
	enum ep_kind listen_tag, wake_tag;
	struct tcp_peer *peers;
	size_t n_peers;
	struct tcp_conn *pending;        /* inbound, not yet authenticated */
	unsigned int n_pending;
	struct tcp_conn *graveyard;      /* closed during this poll; freed at its end (stale epoll events) */
	uint64_t timer_due_ns;
	uint64_t now_ns;                 /* taken when epoll_wait returned: receive time of this poll's frames */
	_Atomic bool check_broken;
	int delivered;

	/* busy poll (cfg.busy_poll_us): I/O thread only, except tx_recent */
	uint64_t busy_ns;                /* 0: off */
	uint64_t last_rx_frame_ns;       /* now_ns of the last user frame delivered */
	struct tcp_conn *hot;            /* connection that delivered it (cleared when it closes) */
	unsigned int spin_served;        /* consecutive polls served by reading `hot` without epoll */
	_Atomic bool tx_recent;          /* a user frame was sent since the last poll (any thread) */

	struct ic_counters ctr;
};

static inline struct tcp_transport *to_tcp(struct ic_transport *t)
{
	return (struct tcp_transport *)t;
}

static void tcp_wake(struct ic_transport *it)
{
	uint64_t one = 1;
	ssize_t n = write(to_tcp(it)->evfd, &one, sizeof(one));

	(void)n;   /* EAGAIN: counter saturated, a wake is pending anyway */
}

/* ---- connection objects ------------------------------------------------------------------------------- */

static struct tcp_conn *conn_new(struct tcp_transport *t, int fd, bool dialler, struct tcp_peer *peer)
{
	struct tcp_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->rbuf = malloc(TCP_RBUF_HS);
	if (!c->rbuf) {
		free(c);
		return NULL;
	}
	c->rcap = TCP_RBUF_HS;
	c->kind = EP_CONN;
	c->fd = fd;
	c->t = t;
	c->peer = peer;
	c->dialler = dialler;
	c->start_ns = c->last_rx_ns = c->last_tx_ns = clock_now_ns();
	/* handshake frames are small: a garbage length is refused before anything is allocated for it */
	ic_frame_rules_init(&c->rules, IC_HS_MSG_MAX, t->base.cfg.accept_types);
	if (peer)
		snprintf(c->name, sizeof(c->name), "peer %u", peer->id);
	return c;
}

static void conn_free(struct tcp_conn *c)
{
	ic_hs_destroy(c->hs);
	ic_mac_destroy(c->rx_mac);
	ic_mac_destroy(c->tx_mac);
	free(c->rbuf);
	free(c->obuf);
	free(c);
}

static void conn_lock(struct tcp_conn *c)
{
	if (c->peer)
		pthread_mutex_lock(&c->peer->lock);
}

static void conn_unlock(struct tcp_conn *c)
{
	if (c->peer)
		pthread_mutex_unlock(&c->peer->lock);
}

static void pending_remove(struct tcp_transport *t, struct tcp_conn *c)
{
	for (struct tcp_conn **pp = &t->pending; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			c->next = NULL;
			t->n_pending--;
			return;
		}
	}
}

static void peer_schedule_dial(struct tcp_peer *p, uint64_t now, bool failed)
{
	p->dialing = NULL;
	p->next_dial_ns = now + (uint64_t)p->backoff_ms * NSEC_PER_MSEC;
	if (failed) {
		p->backoff_ms *= 2;
		if (p->backoff_ms > TCP_BACKOFF_MAX_MS)
			p->backoff_ms = TCP_BACKOFF_MAX_MS;
	}
}

/*
 * Close a connection (I/O thread). An authenticated one is unpublished under the peer lock, then the peer is
 * reported down with `why`, with no lock held. The object itself is freed at the end of the poll.
 */
static void conn_close(struct tcp_conn *c, const char *why)
{
	struct tcp_transport *t = c->t;
	struct tcp_peer *p = c->peer;
	bool was_up = c->state == C_UP;
	bool published = false;

	if (c->state == C_DEAD)
		return;
	if (t->hot == c)
		t->hot = NULL;
	epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (p) {
		pthread_mutex_lock(&p->lock);
		if (p->conn == c) {
			p->conn = NULL;
			atomic_store(&p->up, false);
			published = true;
		}
		c->state = C_DEAD;
		pthread_mutex_unlock(&p->lock);
	}
	c->state = C_DEAD;
	if (!c->dialler && !was_up)
		pending_remove(t, c);
	if (c->dialler && p && p->dialing == c)
		peer_schedule_dial(p, clock_now_ns(), !was_up);
	else if (c->dialler && p && was_up)
		peer_schedule_dial(p, clock_now_ns(), false);
	close(c->fd);
	c->fd = -1;
	c->next = t->graveyard;
	t->graveyard = c;
	if (published) {
		ic_count(&t->ctr.disconnects, 1);
		pr_info("peer %u down: %s", p->id, why);
		if (t->base.cfg.on_peer)
			t->base.cfg.on_peer(t->base.cfg.opaque, p->id, IC_PEER_DOWN, why);
	}
}

static void conn_auth_failure(struct tcp_conn *c, const char *what)
{
	ic_count(&c->t->ctr.auth_failures, 1);
	pr_err("%s: authentication failed: %s; closing", c->name, what);
	conn_close(c, what);
}

/* ---- send side ---------------------------------------------------------------------------------------- */

static int conn_set_events(struct tcp_conn *c, bool want_out)
{
	struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = &c->kind };

	c->want_out = want_out;
	return epoll_ctl(c->t->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static int outq_reserve(struct tcp_conn *c, size_t n)
{
	size_t used = c->otail - c->ohead;
	size_t need = used + n;

	if (c->ohead && c->ohead == c->otail)
		c->ohead = c->otail = 0;
	if (c->otail + n <= c->ocap)
		return 0;
	if (c->ohead) {
		memmove(c->obuf, c->obuf + c->ohead, used);
		c->ohead = 0;
		c->otail = used;
		if (c->otail + n <= c->ocap)
			return 0;
	}
	size_t cap = c->ocap ? c->ocap : 16384;
	while (cap < need)
		cap *= 2;
	uint8_t *nb = realloc(c->obuf, cap);
	if (!nb)
		return -ENOBUFS;
	c->obuf = nb;
	c->ocap = cap;
	return 0;
}

/* Append v[] to the out queue, skipping the first `skip` bytes (already written). */
static int outq_append(struct tcp_conn *c, const struct iovec *v, int cnt, size_t skip, size_t total)
{
	int ret = outq_reserve(c, total - skip);

	if (ret)
		return ret;
	for (int i = 0; i < cnt; i++) {
		size_t len = v[i].iov_len;
		const uint8_t *base = v[i].iov_base;

		if (skip >= len) {
			skip -= len;
			continue;
		}
		memcpy(c->obuf + c->otail, base + skip, len - skip);
		c->otail += len - skip;
		skip = 0;
	}
	return 0;
}

static void conn_mark_broken(struct tcp_conn *c)
{
	c->tx_broken = true;
	atomic_store(&c->t->check_broken, true);
	tcp_wake(&c->t->base);
}

/*
 * Frame and send (called with the connection's send side owned: peer lock held, or I/O thread before
 * publication). `flags` already has the transport bits set. The payload is never copied unless the socket
 * refuses part of it.
 */
static int conn_send_locked(struct tcp_conn *c, uint8_t type, uint16_t flags, const struct iovec *iov, int iovcnt,
			    size_t len)
{
	struct iovec v[TCP_MAX_IOV + 2];
	uint8_t hdr[IC_HDR_LEN], tag[IC_TAG_LEN];
	size_t wire = IC_HDR_LEN + len + (c->tx_mac ? IC_TAG_LEN : 0);
	ssize_t n = 0;
	int cnt = 0, ret;

	if (c->tx_broken || c->state == C_DEAD)
		return -ENOTCONN;
	if (c->otail != c->ohead && c->otail - c->ohead + wire > TCP_OUTQ_LIMIT)
		return -ENOBUFS;
	ic_frame_hdr_encode(hdr, type, flags, (uint32_t)len, ic_base_epoch(&c->t->base), c->tx_seq);
	if (c->tx_mac) {
		ret = ic_mac_tag(c->tx_mac, hdr, iov, iovcnt, tag);
		if (ret)
			return ret;
	}
	v[cnt++] = (struct iovec){ .iov_base = hdr, .iov_len = IC_HDR_LEN };
	for (int i = 0; i < iovcnt; i++)
		if (iov[i].iov_len)
			v[cnt++] = iov[i];
	if (c->tx_mac)
		v[cnt++] = (struct iovec){ .iov_base = tag, .iov_len = IC_TAG_LEN };

	if (c->otail == c->ohead && c->state != C_CONNECTING) {
		/* sendmsg, not writev: MSG_NOSIGNAL, so a peer that just closed is an error here, not SIGPIPE */
		struct msghdr mh = { .msg_iov = v, .msg_iovlen = (size_t)cnt };

		do
			n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				/* CLOSE is best effort: at an orderly end the peer has often closed first (and a
				 * socket closed with frames unread answers with a reset). So is anything else sent
				 * to a peer that just closed (EPIPE, ECONNRESET): its closing is reported by the
				 * liveness path (peer down), not here, and the caller sees -ENOTCONN. */
				if (type == IC_T_CLOSE)
					pr_debug("%s: CLOSE not sent: %s", c->name, strerror(errno));
				else if (errno == EPIPE || errno == ECONNRESET)
					pr_debug("%s: send failed, the peer closed: %s", c->name, strerror(errno));
				else
					pr_warn("%s: send failed: %s", c->name, strerror(errno));
				conn_mark_broken(c);
				return -ENOTCONN;
			}
			n = 0;
		}
	}
	if ((size_t)n < wire) {
		/* the caller's buffers are reused as soon as we return: keep the unsent part */
		ret = outq_append(c, v, cnt, (size_t)n, wire);
		if (ret) {
			/* part of the frame may be on the wire: the stream is unusable now */
			conn_mark_broken(c);
			return ret;
		}
		if (!c->want_out && c->state != C_CONNECTING)
			conn_set_events(c, true);
	}
	c->tx_seq++;
	c->tx_active = true;
	return 0;
}

/* I/O thread: write what the out queue holds. Returns -1 if the connection broke. */
static int conn_flush(struct tcp_conn *c)
{
	int ret = 0;

	conn_lock(c);
	while (c->otail > c->ohead) {
		ssize_t n = send(c->fd, c->obuf + c->ohead, c->otail - c->ohead, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				c->tx_broken = true;
				ret = -1;
			}
			break;
		}
		c->ohead += (size_t)n;
	}
	if (!ret && c->otail == c->ohead && c->want_out)
		conn_set_events(c, false);
	conn_unlock(c);
	return ret;
}

static int conn_send_ctl(struct tcp_conn *c, uint8_t type, const void *payload, size_t len)
{
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };
	uint16_t flags = c->tx_mac ? IC_FLAG_TAGGED : 0;
	int ret;

	conn_lock(c);
	ret = conn_send_locked(c, type, flags, &iov, len ? 1 : 0, len);
	conn_unlock(c);
	return ret;
}

static void conn_send_close(struct tcp_conn *c, const char *reason)
{
	IcClose msg = IC_CLOSE__INIT;
	uint8_t buf[IC_HS_MSG_MAX];
	char r[160];

	snprintf(r, sizeof(r), "%s", reason);
	msg.reason = r;
	if (ic_close__get_packed_size(&msg) > sizeof(buf))
		return;
	conn_send_ctl(c, IC_T_CLOSE, buf, ic_close__pack(&msg, buf));
}

static int tcp_send(struct ic_transport *it, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		    int iovcnt)
{
	struct tcp_transport *t = to_tcp(it);
	int idx = ic_base_peer_index(it, dst);
	struct tcp_peer *p;
	size_t len = 0;
	int ret;

	if (idx < 0 || iovcnt > TCP_MAX_IOV)
		return -EINVAL;
	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (len > it->cfg.max_frame)
		return -EMSGSIZE;
	p = &t->peers[idx];
	flags = (uint16_t)((flags & ~IC_FLAG_TRANSPORT_MASK) | IC_FLAG_TAGGED);
	pthread_mutex_lock(&p->lock);
	if (!p->conn) {
		pthread_mutex_unlock(&p->lock);
		return -ENOTCONN;
	}
	ret = conn_send_locked(p->conn, type, flags, iov, iovcnt, len);
	pthread_mutex_unlock(&p->lock);
	if (!ret) {
		ic_count(&t->ctr.frames_tx, 1);
		ic_count(&t->ctr.bytes_tx, len);
		if (t->busy_ns && !atomic_load_explicit(&t->tx_recent, memory_order_relaxed))
			atomic_store_explicit(&t->tx_recent, true, memory_order_relaxed);
	}
	return ret;
}

/* ---- handshake and receive ---------------------------------------------------------------------------- */

static int conn_start_handshake(struct tcp_conn *c)
{
	struct tcp_transport *t = c->t;
	struct ic_hs_msg msg;
	int ret;

	c->state = C_HANDSHAKE;
	ret = ic_conn_hs_create(&t->base, c->dialler, c->peer ? c->peer->id : 0, &c->hs);
	if (ret)
		return ret;
	ret = ic_hs_start(c->hs, &msg);
	if (!ret && msg.type)
		ret = conn_send_ctl(c, msg.type, msg.buf, msg.len);
	return ret;
}

/* Handshake completed: switch both directions to the session key, publish, report the peer up. */
static int conn_established(struct tcp_conn *c)
{
	struct tcp_transport *t = c->t;
	struct tcp_conn *old = NULL;
	struct ic_mac *rx = NULL, *tx = NULL;
	struct tcp_peer *p;
	uint8_t *nb;
	int idx, ret;

	idx = ic_base_peer_index(&t->base, ic_hs_peer(c->hs));
	if (idx < 0)
		return -EPERM;
	p = &t->peers[idx];
	ret = ic_conn_macs_create(c->hs, c->dialler, &rx, &tx);
	nb = ret ? NULL : realloc(c->rbuf, TCP_RBUF_UP);
	if (!nb) {
		ic_mac_destroy(rx);
		ic_mac_destroy(tx);
		return ret ? ret : -ENOMEM;
	}
	c->rbuf = nb;
	c->rcap = TCP_RBUF_UP;
	c->rx_mac = rx;
	c->rules.established = true;
	c->rules.max_frame = t->base.cfg.max_frame;
	ic_hs_destroy(c->hs);
	c->hs = NULL;
	if (!c->dialler) {
		pending_remove(t, c);
		c->peer = p;
		snprintf(c->name, sizeof(c->name), "peer %u", p->id);
	} else {
		p->dialing = NULL;
		p->backoff_ms = TCP_BACKOFF_MIN_MS;
		p->dial_warned = false;
	}

	old = p->conn;   /* only the I/O thread writes p->conn */
	if (old)
		conn_close(old, "replaced by a newer connection from the peer");
	pthread_mutex_lock(&p->lock);
	c->tx_mac = tx;
	c->state = C_UP;
	c->last_rx_ns = clock_now_ns();
	p->conn = c;
	atomic_store(&p->up, true);
	pthread_mutex_unlock(&p->lock);
	ic_count(&t->ctr.connects, 1);
	pr_info("peer %u up (%s)", p->id, c->dialler ? "dialled" : "accepted");
	if (t->base.cfg.on_peer)
		t->base.cfg.on_peer(t->base.cfg.opaque, p->id, IC_PEER_UP, "authenticated");
	return 0;
}

static void conn_on_handshake(struct tcp_conn *c, uint8_t type, const uint8_t *payload, size_t len)
{
	struct ic_hs_msg out;
	const char *why = NULL;
	int ret;

	ret = ic_hs_input(c->hs, type, payload, len, &out, &why);
	if (ret < 0) {
		/* a garbled handshake counts as a failed authentication, like a wrong key or a refused id; a peer that
		 * speaks the protocol is told why (the reasons name no secret), so both logs say what happened */
		if (ret != -EPROTO)
			conn_send_close(c, why ? why : "authentication failed");
		conn_auth_failure(c, why ? why : "handshake refused");
		return;
	}
	if (out.type && conn_send_ctl(c, out.type, out.buf, out.len)) {
		conn_close(c, "send failed during the handshake");
		return;
	}
	if (ret == 1) {
		ret = conn_established(c);
		if (ret)
			conn_close(c, "cannot set up the session");
	}
}

static void conn_on_close_frame(struct tcp_conn *c, const uint8_t *payload, size_t len)
{
	IcClose *msg = ic_close__unpack(NULL, len, payload);
	char why[200];

	snprintf(why, sizeof(why), "peer closed the connection: %s",
		 msg && msg->reason && *msg->reason ? msg->reason : "(no reason)");
	if (msg)
		ic_close__free_unpacked(msg, NULL);
	if (c->state != C_UP) {
		conn_auth_failure(c, why);
		return;
	}
	pr_info("%s: %s", c->name, why);
	conn_close(c, why);
}

/* One whole, checked frame. */
static void conn_on_frame(struct tcp_conn *c, const struct ic_frame_hdr *hdr, const uint8_t *payload)
{
	struct tcp_transport *t = c->t;

	switch (hdr->type) {
	case IC_T_HELLO:
	case IC_T_CHALLENGE:
	case IC_T_AUTH:
		conn_on_handshake(c, hdr->type, payload, hdr->length);
		return;
	case IC_T_HEARTBEAT:
		return;
	case IC_T_CLOSE:
		conn_on_close_frame(c, payload, hdr->length);
		return;
	default: {
		struct ic_frame f = {
			.type = hdr->type,
			.flags = (uint16_t)(hdr->flags & ~IC_FLAG_TRANSPORT_MASK),
			.epoch = hdr->epoch,
			.seq = hdr->seq,
			.payload = payload,
			.len = hdr->length,
		};

		ic_count(&t->ctr.frames_rx, 1);
		ic_count(&t->ctr.bytes_rx, hdr->length);
		t->delivered++;
		t->hot = c;
		t->last_rx_frame_ns = t->now_ns;
		t->base.cfg.on_frame(t->base.cfg.opaque, c->peer->id, &f);
		return;
	}
	}
}

/* Parse every whole frame in the receive buffer, then keep the partial rest at its start. */
static void conn_parse(struct tcp_conn *c)
{
	size_t off = 0;

	while (c->state != C_DEAD) {
		const uint8_t *p = c->rbuf + off;
		struct ic_frame_hdr hdr;
		enum ic_frame_status st;
		size_t total = 0;

		st = ic_frame_receive(c->name, p, c->rlen - off, false, &c->rules, c->rx_mac, &hdr, &total);
		if (st == IC_FRAME_NEED_MORE) {
			if (total > c->rcap) {
				/* length already checked against max_frame: safe to grow to one frame */
				memmove(c->rbuf, p, c->rlen - off);
				c->rlen -= off;
				off = 0;
				uint8_t *nb = realloc(c->rbuf, total);

				if (!nb) {
					conn_close(c, "out of memory");
					return;
				}
				c->rbuf = nb;
				c->rcap = total;
			}
			break;
		}
		if (st != IC_FRAME_OK) {
			/* ic_frame_receive logged the details */
			ic_count(&c->t->ctr.proto_errors, 1);
			conn_close(c, ic_frame_strerror(st));
			return;
		}
		c->last_rx_ns = c->t->now_ns;
		off += total;
		conn_on_frame(c, &hdr, p + IC_HDR_LEN);
	}
	if (c->state == C_DEAD)
		return;
	if (off) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
}

static void conn_on_readable(struct tcp_conn *c)
{
	for (;;) {
		size_t space = c->rcap - c->rlen;
		ssize_t n = read(c->fd, c->rbuf + c->rlen, space);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			conn_close(c, strerror(errno));
			return;
		}
		if (n == 0) {
			if (c->state == C_HANDSHAKE)
				pr_warn("%s: closed during the handshake", c->name);
			conn_close(c, "connection closed by the peer");
			return;
		}
		c->rlen += (size_t)n;
		conn_parse(c);
		if (c->state == C_DEAD || (size_t)n < space)
			return;
	}
}

static void conn_on_connected(struct tcp_conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		if (!c->peer->dial_warned)
			pr_warn("%s: connect failed: %s (retrying with backoff)", c->name, strerror(err));
		c->peer->dial_warned = true;
		conn_close(c, "connect failed");
		return;
	}
	conn_set_events(c, false);
	if (conn_start_handshake(c))
		conn_close(c, "cannot start the handshake");
}

static void conn_on_event(struct tcp_conn *c, uint32_t events)
{
	if (c->state == C_DEAD)
		return;
	if (c->state == C_CONNECTING) {
		conn_on_connected(c);
		return;
	}
	if (events & EPOLLOUT) {
		if (conn_flush(c)) {
			conn_close(c, "send failed");
			return;
		}
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_on_readable(c);
}

/* ---- accept, dial, timers ----------------------------------------------------------------------------- */

static int sock_setup(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int conn_register(struct tcp_conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = &c->kind };

	return epoll_ctl(c->t->epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void tcp_accept(struct tcp_transport *t)
{
	for (;;) {
		struct ic_sockaddr sa = { .len = sizeof(sa.ss) };
		struct tcp_conn *c;
		char buf[IC_ADDR_MAX];
		int fd;

		fd = accept4(t->lfd, (struct sockaddr *)&sa.ss, &sa.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
				pr_warn("accept: %s", strerror(errno));
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		if (t->n_pending >= TCP_MAX_PENDING) {
			pr_warn("too many unauthenticated connections; refusing %s", ic_addr_format(&sa, buf, sizeof(buf)));
			close(fd);
			continue;
		}
		sock_setup(fd);
		c = conn_new(t, fd, false, NULL);
		if (!c) {
			close(fd);
			continue;
		}
		snprintf(c->name, sizeof(c->name), "inbound %s", ic_addr_format(&sa, buf, sizeof(buf)));
		if (conn_register(c, EPOLLIN) || conn_start_handshake(c)) {
			close(fd);
			conn_free(c);
			continue;
		}
		c->next = t->pending;
		t->pending = c;
		t->n_pending++;
	}
}

static void peer_dial(struct tcp_transport *t, struct tcp_peer *p, uint64_t now)
{
	struct tcp_conn *c;
	int fd, ret;

	fd = socket(p->sa.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		pr_warn("peer %u: socket: %s", p->id, strerror(errno));
		peer_schedule_dial(p, now, true);
		return;
	}
	sock_setup(fd);
	c = conn_new(t, fd, true, p);
	if (!c) {
		close(fd);
		peer_schedule_dial(p, now, true);
		return;
	}
	c->state = C_CONNECTING;
	ret = connect(fd, (struct sockaddr *)&p->sa.ss, p->sa.len);
	if (ret < 0 && errno != EINPROGRESS) {
		if (!p->dial_warned)
			pr_warn("peer %u: connect: %s (retrying with backoff)", p->id, strerror(errno));
		p->dial_warned = true;
		close(fd);
		conn_free(c);
		peer_schedule_dial(p, now, true);
		return;
	}
	if (conn_register(c, EPOLLOUT | EPOLLIN)) {
		close(fd);
		conn_free(c);
		peer_schedule_dial(p, now, true);
		return;
	}
	p->dialing = c;
	c->want_out = true;
	if (ret == 0)
		conn_on_connected(c);
}

static void conn_check_timers(struct tcp_transport *t, struct tcp_conn *c, uint64_t now)
{
	uint64_t dead = (uint64_t)t->base.cfg.dead_ms * NSEC_PER_MSEC;
	uint64_t hb = (uint64_t)t->base.cfg.heartbeat_ms * NSEC_PER_MSEC;
	bool idle, broken;

	if (c->state == C_DEAD)
		return;
	if (c->state != C_UP) {
		if (now - c->start_ns > dead) {
			if (c->state == C_HANDSHAKE)
				pr_warn("%s: no handshake within %u ms; closing", c->name, t->base.cfg.dead_ms);
			conn_close(c, "handshake timeout");
		}
		return;
	}
	pthread_mutex_lock(&c->peer->lock);
	broken = c->tx_broken;
	if (c->tx_active) {
		c->last_tx_ns = now;
		c->tx_active = false;
	}
	idle = now - c->last_tx_ns >= hb;
	pthread_mutex_unlock(&c->peer->lock);
	if (broken) {
		conn_close(c, "send failed");
		return;
	}
	if (now - c->last_rx_ns > dead) {
		char why[64];

		snprintf(why, sizeof(why), "silent for %llu ms",
			 (unsigned long long)((now - c->last_rx_ns) / NSEC_PER_MSEC));
		conn_close(c, why);
		return;
	}
	if (idle)
		conn_send_ctl(c, IC_T_HEARTBEAT, NULL, 0);
}

static void tcp_timers(struct tcp_transport *t, uint64_t now)
{
	struct tcp_conn *c, *next;

	for (size_t i = 0; i < t->n_peers; i++) {
		struct tcp_peer *p = &t->peers[i];

		if (p->conn)
			conn_check_timers(t, p->conn, now);
		if (p->dialing)
			conn_check_timers(t, p->dialing, now);
		if (p->we_dial && !p->conn && !p->dialing && now >= p->next_dial_ns)
			peer_dial(t, p, now);
	}
	for (c = t->pending; c; c = next) {
		next = c->next;
		conn_check_timers(t, c, now);
	}
}

static void tcp_check_broken(struct tcp_transport *t)
{
	for (size_t i = 0; i < t->n_peers; i++) {
		struct tcp_conn *c = t->peers[i].conn;
		bool broken;

		if (!c)
			continue;
		pthread_mutex_lock(&t->peers[i].lock);
		broken = c->tx_broken;
		pthread_mutex_unlock(&t->peers[i].lock);
		if (broken)
			conn_close(c, "send failed");
	}
}

/* Timers run at most every TCP_TIMER_NS; each run reads the clock afresh. */
static void tcp_run_timers(struct tcp_transport *t)
{
	uint64_t now = clock_now_ns();

	t->now_ns = now;
	tcp_timers(t, now);
	t->timer_due_ns = now + TCP_TIMER_NS;
}

/*
 * Busy poll: instead of sleeping in epoll_wait, poll without sleeping (but yielding the CPU between tries) until
 * something happens or busy_ns has passed. Polling is mostly a non-blocking read of the hot connection (the one that delivered the
 * last frame: in a request/response exchange the reply comes there), which delivers with one syscall instead of
 * epoll_wait + read; every TCP_SPIN_EPOLL_EVERY-th try is an epoll_wait(0) over every fd instead, and after a
 * poll served by the hot connection the next spin starts with epoll, so with the fds being level-triggered no
 * other connection, the listener or a wake waits more than a few polls behind a busy connection.
 * Returns the number of epoll events in evs (0 when the hot connection delivered or the time ran out).
 */
static int tcp_spin(struct tcp_transport *t, struct epoll_event *evs)
{
	uint64_t start = clock_now_ns();
	unsigned int i = t->spin_served ? 0 : 1;

	t->now_ns = start;

	for (;; i++) {
		struct tcp_conn *c = t->hot;

		if (c && c->state == C_UP && i % TCP_SPIN_EPOLL_EVERY) {
			conn_on_readable(c);
			if (t->delivered) {
				t->spin_served++;
				return 0;
			}
		} else {
			int n = epoll_wait(t->epfd, evs, TCP_MAX_EVENTS, 0);

			if (n) {
				t->spin_served = 0;
				return n;
			}
		}
		t->now_ns = clock_now_ns();
		if (t->now_ns - start >= t->busy_ns || t->now_ns >= t->timer_due_ns)
			return 0;
		/* let whatever else is runnable on this CPU go first — it may be the peer that is to answer (two
		 * spinners sharing a core otherwise take turns at busy_ns each: measured 5-9x slower than blocking) */
		sched_yield();
	}
}

/* Busy poll only right after traffic: a frame sent since the last poll or one received within busy_ns. */
static bool tcp_should_spin(struct tcp_transport *t)
{
	if (!t->busy_ns)
		return false;
	if (atomic_exchange_explicit(&t->tx_recent, false, memory_order_relaxed))
		return true;
	return t->now_ns - t->last_rx_frame_ns < t->busy_ns;
}

/*
 * One clock read per poll on the fast path (after epoll_wait): it stamps the frames received and decides whether
 * timers are due. The wait is computed from the previous poll's time, so timers may run up to one TCP_TIMER_NS
 * late, never early.
 */
static int tcp_poll(struct ic_transport *it, int timeout_ms)
{
	struct tcp_transport *t = to_tcp(it);
	struct epoll_event evs[TCP_MAX_EVENTS];
	int n = 0, wait_ms = timeout_ms;

	t->delivered = 0;
	if (t->now_ns >= t->timer_due_ns)
		tcp_run_timers(t);
	if (wait_ms != 0 && tcp_should_spin(t)) {
		n = tcp_spin(t, evs);
		if (n || t->delivered || t->now_ns >= t->timer_due_ns)
			wait_ms = 0;
	}
	if (wait_ms != 0) {
		int until_timer = (int)((t->timer_due_ns - t->now_ns + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);

		if (wait_ms < 0 || wait_ms > until_timer)
			wait_ms = until_timer;
	}
	if (!n && !t->delivered)
		n = epoll_wait(t->epfd, evs, TCP_MAX_EVENTS, wait_ms);
	if (n < 0 && errno != EINTR) {
		pr_err("epoll_wait: %s", strerror(errno));
		return -errno;
	}
	t->now_ns = clock_now_ns();
	for (int i = 0; i < n; i++) {
		enum ep_kind *kind = evs[i].data.ptr;

		if (*kind == EP_WAKE) {
			uint64_t v;
			ssize_t r = read(t->evfd, &v, sizeof(v));

			(void)r;
		} else if (*kind == EP_LISTEN) {
			tcp_accept(t);
		} else {
			conn_on_event((struct tcp_conn *)((char *)kind - offsetof(struct tcp_conn, kind)),
				      evs[i].events);
		}
	}
	if (atomic_exchange(&t->check_broken, false))
		tcp_check_broken(t);
	if (t->now_ns >= t->timer_due_ns)
		tcp_run_timers(t);
	while (t->graveyard) {
		struct tcp_conn *c = t->graveyard;

		t->graveyard = c->next;
		conn_free(c);
	}
	return t->delivered;
}

static bool tcp_peer_is_up(struct ic_transport *it, uint32_t peer)
{
	int idx = ic_base_peer_index(it, peer);

	return idx >= 0 && atomic_load(&to_tcp(it)->peers[idx].up);
}

static void tcp_get_stats(struct ic_transport *it, struct ic_stats *out)
{
	ic_counters_read(&to_tcp(it)->ctr, out);
}

/* ---- create / destroy --------------------------------------------------------------------------------- */

static void tcp_destroy(struct ic_transport *it)
{
	struct tcp_transport *t = to_tcp(it);
	struct tcp_conn *c;

	for (size_t i = 0; i < t->n_peers; i++) {
		struct tcp_peer *p = &t->peers[i];

		c = p->conn;
		if (c) {
			/* best effort: tell the peer why, without waiting */
			conn_send_close(c, "shutdown");
			pthread_mutex_lock(&p->lock);
			p->conn = NULL;
			atomic_store(&p->up, false);
			pthread_mutex_unlock(&p->lock);
			close(c->fd);
			conn_free(c);
		}
		if (p->dialing) {
			close(p->dialing->fd);
			conn_free(p->dialing);
		}
		pthread_mutex_destroy(&p->lock);
	}
	while ((c = t->pending)) {
		t->pending = c->next;
		close(c->fd);
		conn_free(c);
	}
	while ((c = t->graveyard)) {
		t->graveyard = c->next;
		conn_free(c);
	}
	if (t->lfd >= 0)
		close(t->lfd);
	close(t->evfd);
	close(t->epfd);
	free(t->peers);
	ic_base_fini(&t->base);
	free(t);
}

static int tcp_listen(struct tcp_transport *t, const char *addr)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &t->listen_tag };
	struct ic_sockaddr sa;
	int one = 1, ret;

	ret = ic_addr_parse(addr, &sa);
	if (ret)
		return ret;
	t->lfd = socket(sa.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->lfd < 0)
		return -errno;
	setsockopt(t->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(t->lfd, (struct sockaddr *)&sa.ss, sa.len) < 0 || listen(t->lfd, 128) < 0) {
		ret = -errno;
		pr_err("cannot listen on %s: %s", addr, strerror(errno));
		return ret;
	}
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->lfd, &ev) < 0)
		return -errno;
	return 0;
}

static int tcp_create(const struct ic_config *cfg, struct ic_transport **out)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct tcp_transport *t;
	int ret;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->lfd = t->evfd = t->epfd = -1;
	ret = ic_base_init(&t->base, &tcp_ops, cfg);
	if (ret)
		goto out_free;
	t->listen_tag = EP_LISTEN;
	t->wake_tag = EP_WAKE;
	if (cfg->busy_poll_us > TCP_BUSY_POLL_MAX_US)
		pr_warn("busy_poll_us %u capped at %u", cfg->busy_poll_us, TCP_BUSY_POLL_MAX_US);
	t->busy_ns = (uint64_t)(cfg->busy_poll_us < TCP_BUSY_POLL_MAX_US ? cfg->busy_poll_us : TCP_BUSY_POLL_MAX_US) *
		     NSEC_PER_USEC;
	t->n_peers = cfg->n_peers;
	t->peers = calloc(cfg->n_peers ? cfg->n_peers : 1, sizeof(*t->peers));
	if (!t->peers) {
		ret = -ENOMEM;
		goto out_fini;
	}
	for (size_t i = 0; i < cfg->n_peers; i++) {
		struct tcp_peer *p = &t->peers[i];

		p->id = cfg->peers[i].id;
		p->we_dial = cfg->self < p->id;
		p->backoff_ms = TCP_BACKOFF_MIN_MS;
		pthread_mutex_init(&p->lock, NULL);
		if (p->we_dial) {
			ret = ic_addr_parse(cfg->peers[i].addr, &p->sa);
			if (ret) {
				pr_err("peer %u: bad address '%s'", p->id, cfg->peers[i].addr);
				goto out_peers;
			}
		}
	}
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (t->epfd < 0 || t->evfd < 0) {
		ret = -errno;
		goto out_fds;
	}
	ev.data.ptr = &t->wake_tag;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->evfd, &ev) < 0) {
		ret = -errno;
		goto out_fds;
	}
	if (cfg->listen) {
		ret = tcp_listen(t, cfg->listen);
		if (ret)
			goto out_fds;
	}
	*out = &t->base;
	return 0;

out_fds:
	if (t->lfd >= 0)
		close(t->lfd);
	if (t->evfd >= 0)
		close(t->evfd);
	if (t->epfd >= 0)
		close(t->epfd);
out_peers:
	for (size_t i = 0; i < cfg->n_peers; i++)
		pthread_mutex_destroy(&t->peers[i].lock);
	free(t->peers);
out_fini:
	ic_base_fini(&t->base);
out_free:
	free(t);
	return ret;
}

static struct ic_transport_ops tcp_ops = {
	.name = "tcp",
	.create = tcp_create,
	.destroy = tcp_destroy,
	.send = tcp_send,
	.poll = tcp_poll,
	.wake = tcp_wake,
	.peer_is_up = tcp_peer_is_up,
	.get_stats = tcp_get_stats,
};

IC_TRANSPORT_REGISTER(tcp_ops)
