/* SPDX-License-Identifier: MIT */
/*
 * tcp transport: one epoll fd, one TCP connection per node pair, authenticated frames (interconnect/auth.h). The
 * connection life cycle — who dials, the handshake, replacing a stale connection (newest wins), heartbeats, dead
 * and handshake timeouts, CLOSE, redial backoff — is interconnect/conn.c's, shared with rdma; this file is the
 * medium: sockets, the send queue, the receive buffer and busy polling.
 *
 * Threads: ic_poll() runs on the I/O thread, which alone accepts, dials, reads, parses, runs timers and closes
 * connections. ic_send() may run on any thread, with the connection's send side owned as conn.h says (the peer
 * lock); a send that fails marks the connection broken and wakes the I/O thread, which closes it.
 *
 * Send path: one sendmsg of header + the caller's iov + tag, with MSG_NOSIGNAL (a peer that closed is an error,
 * never SIGPIPE); only an unsent remainder is copied, into the connection's out queue, flushed on EPOLLOUT. While
 * the queue is non-empty (or the socket is still connecting) later frames are appended to it (order), up to
 * TCP_OUTQ_LIMIT bytes (-ENOBUFS beyond).
 *
 * Receive path: reads into a per-connection buffer; frames are checked by the codec (length against max_frame
 * before the buffer grows) and the MAC, then handed to conn.c, which passes user frames to on_frame as a pointer
 * into the buffer.
 */
#include <errno.h>
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
#include "interconnect/conn.h"
#include "interconnect/frame_codec.h"
#include "interconnect/ic_internal.h"
#include "util/clock.h"
#include "util/log.h"

#define TCP_OUTQ_LIMIT (8u * 1024u * 1024u)   /* queued bytes per connection before -ENOBUFS */
#define TCP_RBUF_HS 1024u                     /* receive buffer before authentication */
#define TCP_RBUF_UP (64u * 1024u)             /* receive buffer once up (grows to one max frame) */
#define TCP_MAX_IOV 64                        /* caller iov entries per frame */
#define TCP_TIMER_NS (5 * NSEC_PER_MSEC)      /* timer pass granularity */
#define TCP_MAX_EVENTS 64
#define TCP_BUSY_POLL_MAX_US 1000u
#define TCP_SPIN_EPOLL_EVERY 4                /* busy poll: one epoll pass per this many reads of the hot conn */

enum ep_kind { EP_LISTEN, EP_WAKE, EP_CONN };

struct tcp_transport;
static struct ic_transport_ops tcp_ops;
static const struct ic_conn_ops tcp_conn_ops;

/* A connection: the shared life cycle (c, first) and the socket with its buffers. In SETUP it is connecting. */
struct tcp_conn {
	struct ic_conn c;
	enum ep_kind kind;               /* EP_CONN; epoll data points here */
	int fd;

	/* receive side: I/O thread only */
	uint8_t *rbuf;
	size_t rcap, rlen;

	/* send side: owned as c's send side (conn.h) */
	uint8_t *obuf;
	size_t ocap, ohead, otail;
	bool want_out;
};

struct tcp_transport {
	struct ic_conn_set cs;           /* first: the transport base and the connection life cycle */
	int epfd, evfd, lfd;
	enum ep_kind listen_tag, wake_tag;
	uint64_t timer_due_ns;

	/* busy poll (cfg.busy_poll_us): I/O thread only, except tx_recent */
	uint64_t busy_ns;                /* 0: off */
	uint64_t last_rx_frame_ns;       /* cs.now_ns of the last poll that delivered a user frame */
	unsigned int spin_served;        /* consecutive polls served by reading the hot connection without epoll */
	_Atomic bool tx_recent;          /* a user frame was sent since the last poll (any thread) */
};

static inline struct tcp_transport *to_tcp(struct ic_transport *t)
{
	return (struct tcp_transport *)t;
}

static inline struct tcp_conn *to_tconn(struct ic_conn *c)
{
	return (struct tcp_conn *)c;
}

static inline struct tcp_transport *tconn_tr(struct tcp_conn *tc)
{
	return (struct tcp_transport *)tc->c.set;
}

static void tcp_wake(struct ic_transport *it)
{
	uint64_t one = 1;
	ssize_t n = write(to_tcp(it)->evfd, &one, sizeof(one));

	(void)n;   /* EAGAIN: counter saturated, a wake is pending anyway */
}

/* ---- connection objects ------------------------------------------------------------------------------- */

static struct tcp_conn *conn_new(struct tcp_transport *t, int fd, bool dialler, struct ic_conn_peer *peer)
{
	struct tcp_conn *tc = calloc(1, sizeof(*tc));

	if (!tc)
		return NULL;
	tc->rbuf = malloc(TCP_RBUF_HS);
	if (!tc->rbuf) {
		free(tc);
		return NULL;
	}
	tc->rcap = TCP_RBUF_HS;
	tc->kind = EP_CONN;
	tc->fd = fd;
	ic_conn_init(&tc->c, &t->cs, dialler, peer);
	return tc;
}

static void tconn_free(struct ic_conn *c)
{
	struct tcp_conn *tc = to_tconn(c);

	ic_conn_release(c);
	if (tc->fd >= 0)
		close(tc->fd);
	free(tc->rbuf);
	free(tc->obuf);
	free(tc);
}

static void tconn_detach(struct ic_conn *c)
{
	struct tcp_conn *tc = to_tconn(c);

	if (tc->fd < 0)
		return;
	epoll_ctl(tconn_tr(tc)->epfd, EPOLL_CTL_DEL, tc->fd, NULL);
	close(tc->fd);
	tc->fd = -1;
}

/* Authenticated: the receive buffer grows from handshake size to the data size. */
static int tconn_established(struct ic_conn *c)
{
	struct tcp_conn *tc = to_tconn(c);
	uint8_t *nb = realloc(tc->rbuf, TCP_RBUF_UP);

	if (!nb)
		return -ENOMEM;
	tc->rbuf = nb;
	tc->rcap = TCP_RBUF_UP;
	return 0;
}

/* ---- send side ---------------------------------------------------------------------------------------- */

static int conn_set_events(struct tcp_conn *tc, bool want_out)
{
	struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = &tc->kind };

	tc->want_out = want_out;
	return epoll_ctl(tconn_tr(tc)->epfd, EPOLL_CTL_MOD, tc->fd, &ev);
}

static int outq_reserve(struct tcp_conn *tc, size_t n)
{
	size_t used = tc->otail - tc->ohead;
	size_t need = used + n;

	if (tc->ohead && tc->ohead == tc->otail)
		tc->ohead = tc->otail = 0;
	if (tc->otail + n <= tc->ocap)
		return 0;
	if (tc->ohead) {
		memmove(tc->obuf, tc->obuf + tc->ohead, used);
		tc->ohead = 0;
		tc->otail = used;
		if (tc->otail + n <= tc->ocap)
			return 0;
	}
	size_t cap = tc->ocap ? tc->ocap : 16384;
	while (cap < need)
		cap *= 2;
	uint8_t *nb = realloc(tc->obuf, cap);
	if (!nb)
		return -ENOBUFS;
	tc->obuf = nb;
	tc->ocap = cap;
	return 0;
}

/* Append v[] to the out queue, skipping the first `skip` bytes (already written). */
static int outq_append(struct tcp_conn *tc, const struct iovec *v, int cnt, size_t skip, size_t total)
{
	int ret = outq_reserve(tc, total - skip);

	if (ret)
		return ret;
	for (int i = 0; i < cnt; i++) {
		size_t len = v[i].iov_len;
		const uint8_t *base = v[i].iov_base;

		if (skip >= len) {
			skip -= len;
			continue;
		}
		memcpy(tc->obuf + tc->otail, base + skip, len - skip);
		tc->otail += len - skip;
		skip = 0;
	}
	return 0;
}

/*
 * Frame and send (conn.h's send_locked). The payload is never copied unless the socket refuses part of it; while
 * connecting everything is queued.
 */
static int tconn_send_locked(struct ic_conn *c, uint8_t type, uint16_t flags, const struct iovec *iov, int iovcnt,
			     size_t len)
{
	struct tcp_conn *tc = to_tconn(c);
	struct iovec v[TCP_MAX_IOV + 2];
	uint8_t hdr[IC_HDR_LEN], tag[IC_TAG_LEN];
	size_t wire = IC_HDR_LEN + len + (c->tx_mac ? IC_TAG_LEN : 0);
	ssize_t n = 0;
	int cnt = 0, ret;

	if (tc->otail != tc->ohead && tc->otail - tc->ohead + wire > TCP_OUTQ_LIMIT)
		return -ENOBUFS;
	ic_frame_hdr_encode(hdr, type, flags, (uint32_t)len, ic_base_epoch(&c->set->base), c->tx_seq);
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

	if (tc->otail == tc->ohead && c->state != IC_CONN_SETUP) {
		/* sendmsg, not writev: MSG_NOSIGNAL, so a peer that just closed is an error here, not SIGPIPE */
		struct msghdr mh = { .msg_iov = v, .msg_iovlen = (size_t)cnt };

		do
			n = sendmsg(tc->fd, &mh, MSG_NOSIGNAL);
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
				ic_conn_mark_broken(c);
				return -ENOTCONN;
			}
			n = 0;
		}
	}
	if ((size_t)n < wire) {
		/* the caller's buffers are reused as soon as we return: keep the unsent part */
		ret = outq_append(tc, v, cnt, (size_t)n, wire);
		if (ret) {
			/* part of the frame may be on the wire: the stream is unusable now */
			ic_conn_mark_broken(c);
			return ret;
		}
		if (!tc->want_out && c->state != IC_CONN_SETUP)
			conn_set_events(tc, true);
	}
	c->tx_seq++;
	c->tx_active = true;
	return 0;
}

/* I/O thread: write what the out queue holds. Returns -1 if the connection broke. */
static int conn_flush(struct tcp_conn *tc)
{
	int ret = 0;

	ic_conn_lock(&tc->c);
	while (tc->otail > tc->ohead) {
		ssize_t n = send(tc->fd, tc->obuf + tc->ohead, tc->otail - tc->ohead, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				tc->c.tx_broken = true;
				ret = -1;
			}
			break;
		}
		tc->ohead += (size_t)n;
	}
	if (!ret && tc->otail == tc->ohead && tc->want_out)
		conn_set_events(tc, false);
	ic_conn_unlock(&tc->c);
	return ret;
}

static int tcp_send(struct ic_transport *it, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		    int iovcnt)
{
	struct tcp_transport *t = to_tcp(it);
	int ret = ic_conn_send(it, dst, type, flags, iov, iovcnt);

	if (!ret && t->busy_ns && !atomic_load_explicit(&t->tx_recent, memory_order_relaxed))
		atomic_store_explicit(&t->tx_recent, true, memory_order_relaxed);
	return ret;
}

/* ---- receive ------------------------------------------------------------------------------------------ */

/* Parse every whole frame in the receive buffer, then keep the partial rest at its start. */
static void conn_parse(struct tcp_conn *tc)
{
	struct ic_conn *c = &tc->c;
	size_t off = 0;

	while (c->state != IC_CONN_DEAD) {
		const uint8_t *p = tc->rbuf + off;
		struct ic_frame_hdr hdr;
		enum ic_frame_status st;
		size_t total = 0;

		st = ic_frame_receive(c->name, p, tc->rlen - off, false, &c->rules, c->rx_mac, &hdr, &total);
		if (st == IC_FRAME_NEED_MORE) {
			if (total > tc->rcap) {
				/* length already checked against max_frame: safe to grow to one frame */
				memmove(tc->rbuf, p, tc->rlen - off);
				tc->rlen -= off;
				off = 0;
				uint8_t *nb = realloc(tc->rbuf, total);

				if (!nb) {
					ic_conn_close(c, "out of memory");
					return;
				}
				tc->rbuf = nb;
				tc->rcap = total;
			}
			break;
		}
		if (st != IC_FRAME_OK) {
			ic_conn_frame_error(c, st);
			return;
		}
		off += total;
		ic_conn_on_frame(c, &hdr, p + IC_HDR_LEN);
	}
	if (c->state == IC_CONN_DEAD)
		return;
	if (off) {
		memmove(tc->rbuf, tc->rbuf + off, tc->rlen - off);
		tc->rlen -= off;
	}
}

static void conn_on_readable(struct tcp_conn *tc)
{
	for (;;) {
		size_t space = tc->rcap - tc->rlen;
		ssize_t n = read(tc->fd, tc->rbuf + tc->rlen, space);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			ic_conn_close(&tc->c, strerror(errno));
			return;
		}
		if (n == 0) {
			if (tc->c.state == IC_CONN_HANDSHAKE)
				pr_warn("%s: closed during the handshake", tc->c.name);
			ic_conn_close(&tc->c, "connection closed by the peer");
			return;
		}
		tc->rlen += (size_t)n;
		conn_parse(tc);
		if (tc->c.state == IC_CONN_DEAD || (size_t)n < space)
			return;
	}
}

static void conn_on_connected(struct tcp_conn *tc)
{
	struct ic_conn *c = &tc->c;
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(tc->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		if (!c->peer->dial_warned)
			pr_warn("%s: connect failed: %s (retrying with backoff)", c->name, strerror(err));
		c->peer->dial_warned = true;
		ic_conn_close(c, "connect failed");
		return;
	}
	conn_set_events(tc, false);
	if (ic_conn_start_handshake(c))
		ic_conn_close(c, "cannot start the handshake");
}

static void conn_on_event(struct tcp_conn *tc, uint32_t events)
{
	if (tc->c.state == IC_CONN_DEAD)
		return;
	if (tc->c.state == IC_CONN_SETUP) {
		conn_on_connected(tc);
		return;
	}
	if (events & EPOLLOUT) {
		if (conn_flush(tc)) {
			ic_conn_close(&tc->c, "send failed");
			return;
		}
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_on_readable(tc);
}

/* ---- accept, dial, timers ----------------------------------------------------------------------------- */

static int sock_setup(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int conn_register(struct tcp_conn *tc, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = &tc->kind };

	return epoll_ctl(tconn_tr(tc)->epfd, EPOLL_CTL_ADD, tc->fd, &ev);
}

static void tcp_accept(struct tcp_transport *t)
{
	for (;;) {
		struct ic_sockaddr sa = { .len = sizeof(sa.ss) };
		struct tcp_conn *tc;
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
		if (!ic_conn_may_accept(&t->cs, ic_addr_format(&sa, buf, sizeof(buf)))) {
			close(fd);
			continue;
		}
		sock_setup(fd);
		tc = conn_new(t, fd, false, NULL);
		if (!tc) {
			close(fd);
			continue;
		}
		snprintf(tc->c.name, sizeof(tc->c.name), "inbound %s", ic_addr_format(&sa, buf, sizeof(buf)));
		if (conn_register(tc, EPOLLIN) || ic_conn_start_handshake(&tc->c)) {
			tconn_free(&tc->c);
			continue;
		}
		ic_conn_pending_add(&t->cs, &tc->c);
	}
}

static void tcp_dial(struct ic_conn_set *s, struct ic_conn_peer *p, uint64_t now)
{
	struct tcp_transport *t = (struct tcp_transport *)s;
	struct tcp_conn *tc;
	int fd, ret;

	fd = socket(p->sa.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		pr_warn("peer %u: socket: %s", p->id, strerror(errno));
		ic_conn_dial_failed(p, now);
		return;
	}
	sock_setup(fd);
	tc = conn_new(t, fd, true, p);
	if (!tc) {
		close(fd);
		ic_conn_dial_failed(p, now);
		return;
	}
	ret = connect(fd, (struct sockaddr *)&p->sa.ss, p->sa.len);
	if (ret < 0 && errno != EINPROGRESS) {
		if (!p->dial_warned)
			pr_warn("peer %u: connect: %s (retrying with backoff)", p->id, strerror(errno));
		p->dial_warned = true;
		tconn_free(&tc->c);
		ic_conn_dial_failed(p, now);
		return;
	}
	if (conn_register(tc, EPOLLOUT | EPOLLIN)) {
		tconn_free(&tc->c);
		ic_conn_dial_failed(p, now);
		return;
	}
	p->dialing = &tc->c;
	tc->want_out = true;
	if (ret == 0)
		conn_on_connected(tc);
}

/* Timers run at most every TCP_TIMER_NS; each run reads the clock afresh. */
static void tcp_run_timers(struct tcp_transport *t)
{
	uint64_t now = clock_now_ns();

	t->cs.now_ns = now;
	ic_conn_timers(&t->cs, now);
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

	t->cs.now_ns = start;

	for (;; i++) {
		struct ic_conn *c = t->cs.last_rx_conn;

		if (c && c->state == IC_CONN_UP && i % TCP_SPIN_EPOLL_EVERY) {
			conn_on_readable(to_tconn(c));
			if (t->cs.delivered) {
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
		t->cs.now_ns = clock_now_ns();
		if (t->cs.now_ns - start >= t->busy_ns || t->cs.now_ns >= t->timer_due_ns)
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
	return t->cs.now_ns - t->last_rx_frame_ns < t->busy_ns;
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

	t->cs.delivered = 0;
	if (t->cs.now_ns >= t->timer_due_ns)
		tcp_run_timers(t);
	if (wait_ms != 0 && tcp_should_spin(t)) {
		n = tcp_spin(t, evs);
		if (n || t->cs.delivered || t->cs.now_ns >= t->timer_due_ns)
			wait_ms = 0;
	}
	if (wait_ms != 0) {
		int until_timer = (int)((t->timer_due_ns - t->cs.now_ns + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);

		if (wait_ms < 0 || wait_ms > until_timer)
			wait_ms = until_timer;
	}
	if (!n && !t->cs.delivered)
		n = epoll_wait(t->epfd, evs, TCP_MAX_EVENTS, wait_ms);
	if (n < 0 && errno != EINTR) {
		pr_err("epoll_wait: %s", strerror(errno));
		return -errno;
	}
	t->cs.now_ns = clock_now_ns();
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
	if (t->cs.delivered)
		t->last_rx_frame_ns = t->cs.now_ns;
	ic_conn_check_broken(&t->cs);
	if (t->cs.now_ns >= t->timer_due_ns)
		tcp_run_timers(t);
	ic_conn_bury(&t->cs);
	return t->cs.delivered;
}

/* ---- create / destroy --------------------------------------------------------------------------------- */

static void tcp_destroy(struct ic_transport *it)
{
	struct tcp_transport *t = to_tcp(it);

	ic_conn_set_fini(&t->cs, "shutdown");
	if (t->lfd >= 0)
		close(t->lfd);
	close(t->evfd);
	close(t->epfd);
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
	ret = ic_conn_set_init(&t->cs, &tcp_ops, &tcp_conn_ops, cfg);
	if (ret) {
		free(t);
		return ret;
	}
	t->listen_tag = EP_LISTEN;
	t->wake_tag = EP_WAKE;
	if (cfg->busy_poll_us > TCP_BUSY_POLL_MAX_US)
		pr_warn("busy_poll_us %u capped at %u", cfg->busy_poll_us, TCP_BUSY_POLL_MAX_US);
	t->busy_ns = (uint64_t)(cfg->busy_poll_us < TCP_BUSY_POLL_MAX_US ? cfg->busy_poll_us : TCP_BUSY_POLL_MAX_US) *
		     NSEC_PER_USEC;
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
	*out = &t->cs.base;
	return 0;

out_fds:
	if (t->lfd >= 0)
		close(t->lfd);
	if (t->evfd >= 0)
		close(t->evfd);
	if (t->epfd >= 0)
		close(t->epfd);
	ic_conn_set_fini(&t->cs, NULL);
	free(t);
	return ret;
}

static const struct ic_conn_ops tcp_conn_ops = {
	.medium = "tcp",
	.max_iov = TCP_MAX_IOV,
	.send_locked = tconn_send_locked,
	.established = tconn_established,
	.detach = tconn_detach,
	.free = tconn_free,
	.dial = tcp_dial,
};

static struct ic_transport_ops tcp_ops = {
	.name = "tcp",
	.create = tcp_create,
	.destroy = tcp_destroy,
	.send = tcp_send,
	.poll = tcp_poll,
	.wake = tcp_wake,
	.peer_is_up = ic_conn_peer_is_up,
	.get_stats = ic_conn_get_stats,
};

IC_TRANSPORT_REGISTER(tcp_ops)
