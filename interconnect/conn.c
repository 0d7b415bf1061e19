/* SPDX-License-Identifier: MIT */
/*
 * The connection life cycle shared by tcp and rdma: see interconnect/conn.h for the states, the rules and the
 * threads.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interconnect/auth.h"
#include "interconnect/conn.h"
#include "interconnect/ic.pb-c.h"
#include "util/clock.h"
#include "util/log.h"

static void wake(struct ic_conn_set *s)
{
	s->base.ops->wake(&s->base);
}

/* ---- set up and tear down ----------------------------------------------------------------------------- */

int ic_conn_set_init(struct ic_conn_set *s, const struct ic_transport_ops *tops, const struct ic_conn_ops *ops,
		     const struct ic_config *cfg)
{
	int ret = ic_base_init(&s->base, tops, cfg);

	if (ret)
		return ret;
	s->ops = ops;
	s->peers = calloc(cfg->n_peers ? cfg->n_peers : 1, sizeof(*s->peers));
	if (!s->peers) {
		ic_base_fini(&s->base);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->n_peers; i++) {
		struct ic_conn_peer *p = &s->peers[i];

		p->id = cfg->peers[i].id;
		p->we_dial = cfg->self < p->id;
		p->backoff_ms = IC_CONN_BACKOFF_MIN_MS;
		pthread_mutex_init(&p->lock, NULL);
		s->n_peers = i + 1;
		if (p->we_dial && ic_addr_parse(cfg->peers[i].addr, &p->sa)) {
			pr_err("peer %u: bad address '%s'", p->id, cfg->peers[i].addr);
			ic_conn_set_fini(s, NULL);
			return -EINVAL;
		}
	}
	return 0;
}

static void conn_discard(struct ic_conn *c)
{
	struct ic_conn_set *s = c->set;

	c->state = IC_CONN_DEAD;
	s->ops->detach(c);
	s->ops->free(c);
}

void ic_conn_set_fini(struct ic_conn_set *s, const char *reason)
{
	struct ic_conn *c;

	for (size_t i = 0; i < s->n_peers; i++) {
		struct ic_conn_peer *p = &s->peers[i];

		c = p->conn;
		if (c) {
			if (reason)
				ic_conn_send_close(c, reason);   /* best effort: tell the peer why, without waiting */
			pthread_mutex_lock(&p->lock);
			p->conn = NULL;
			atomic_store(&p->up, false);
			pthread_mutex_unlock(&p->lock);
			conn_discard(c);
		}
		if (p->dialing) {
			conn_discard(p->dialing);
			p->dialing = NULL;
		}
	}
	while ((c = s->pending)) {
		s->pending = c->next;
		conn_discard(c);
	}
	s->n_pending = 0;
	ic_conn_bury(s);
	for (size_t i = 0; i < s->n_peers; i++)
		pthread_mutex_destroy(&s->peers[i].lock);
	free(s->peers);
	s->peers = NULL;
	s->n_peers = 0;
	ic_base_fini(&s->base);
}

void ic_conn_init(struct ic_conn *c, struct ic_conn_set *s, bool dialler, struct ic_conn_peer *peer)
{
	c->set = s;
	c->peer = peer;
	c->dialler = dialler;
	c->state = IC_CONN_SETUP;
	c->start_ns = c->last_rx_ns = c->last_tx_ns = clock_now_ns();
	/* handshake frames are small: a garbage length is refused before anything is allocated for it */
	ic_frame_rules_init(&c->rules, IC_HS_MSG_MAX, s->base.cfg.accept_types);
	if (peer)
		snprintf(c->name, sizeof(c->name), "peer %u", peer->id);
	else
		snprintf(c->name, sizeof(c->name), "inbound connection");
}

void ic_conn_release(struct ic_conn *c)
{
	ic_hs_destroy(c->hs);
	ic_mac_destroy(c->rx_mac);
	ic_mac_destroy(c->tx_mac);
	c->hs = NULL;
	c->rx_mac = c->tx_mac = NULL;
}

/* ---- the pending list and dialling -------------------------------------------------------------------- */

bool ic_conn_may_accept(struct ic_conn_set *s, const char *from)
{
	if (s->n_pending < IC_CONN_MAX_PENDING)
		return true;
	pr_warn("%s: too many unauthenticated connections; refusing %s", s->ops->medium, from);
	return false;
}

void ic_conn_pending_add(struct ic_conn_set *s, struct ic_conn *c)
{
	c->next = s->pending;
	s->pending = c;
	s->n_pending++;
}

static void pending_remove(struct ic_conn_set *s, struct ic_conn *c)
{
	for (struct ic_conn **pp = &s->pending; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			c->next = NULL;
			s->n_pending--;
			return;
		}
	}
}

static void schedule_dial(struct ic_conn_peer *p, uint64_t now, bool failed)
{
	p->dialing = NULL;
	p->next_dial_ns = now + (uint64_t)p->backoff_ms * NSEC_PER_MSEC;
	if (failed) {
		p->backoff_ms *= 2;
		if (p->backoff_ms > IC_CONN_BACKOFF_MAX_MS)
			p->backoff_ms = IC_CONN_BACKOFF_MAX_MS;
	}
}

void ic_conn_dial_failed(struct ic_conn_peer *p, uint64_t now)
{
	schedule_dial(p, now, true);
}

/* ---- closing and failures ----------------------------------------------------------------------------- */

void ic_conn_close(struct ic_conn *c, const char *why)
{
	struct ic_conn_set *s = c->set;
	struct ic_conn_peer *p = c->peer;
	bool was_up = c->state == IC_CONN_UP;
	bool published = false;

	if (c->state == IC_CONN_DEAD)
		return;
	if (s->last_rx_conn == c)
		s->last_rx_conn = NULL;
	if (p) {
		/* senders check the state under this lock: none uses c after it is released */
		pthread_mutex_lock(&p->lock);
		if (p->conn == c) {
			p->conn = NULL;
			atomic_store(&p->up, false);
			published = true;
		}
		c->state = IC_CONN_DEAD;
		pthread_mutex_unlock(&p->lock);
	}
	c->state = IC_CONN_DEAD;
	s->ops->detach(c);
	if (!c->dialler && !was_up)
		pending_remove(s, c);
	if (c->dialler && p && (p->dialing == c || was_up))
		schedule_dial(p, clock_now_ns(), !was_up);
	c->next = s->graveyard;
	s->graveyard = c;
	if (published) {
		ic_count(&s->ctr.disconnects, 1);
		pr_info("peer %u down: %s", p->id, why);
		if (s->base.cfg.on_peer)
			s->base.cfg.on_peer(s->base.cfg.opaque, p->id, IC_PEER_DOWN, why);
	}
}

void ic_conn_proto_error(struct ic_conn *c, const char *what)
{
	ic_count(&c->set->ctr.proto_errors, 1);
	pr_err("%s: protocol error: %s; closing", c->name, what);
	ic_conn_close(c, what);
}

static void auth_failure(struct ic_conn *c, const char *what)
{
	ic_count(&c->set->ctr.auth_failures, 1);
	pr_err("%s: authentication failed: %s; closing", c->name, what);
	ic_conn_close(c, what);
}

void ic_conn_frame_error(struct ic_conn *c, enum ic_frame_status st)
{
	/* ic_frame_receive logged the details; a bad MAC on an established connection is a corrupt or forged frame,
	 * judged like any frame the codec refuses */
	ic_count(&c->set->ctr.proto_errors, 1);
	ic_conn_close(c, ic_frame_strerror(st));
}

void ic_conn_mark_broken(struct ic_conn *c)
{
	c->tx_broken = true;
	atomic_store(&c->set->check_broken, true);
	wake(c->set);
}

/* ---- sending ------------------------------------------------------------------------------------------ */

static int send_owned(struct ic_conn *c, uint8_t type, uint16_t flags, const struct iovec *iov, int iovcnt,
		      size_t len)
{
	if (c->tx_broken || c->state == IC_CONN_DEAD)
		return -ENOTCONN;
	return c->set->ops->send_locked(c, type, flags, iov, iovcnt, len);
}

int ic_conn_send_ctl(struct ic_conn *c, uint8_t type, const void *payload, size_t len)
{
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };
	uint16_t flags = c->tx_mac ? IC_FLAG_TAGGED : 0;
	int ret;

	ic_conn_lock(c);
	ret = send_owned(c, type, flags, &iov, len ? 1 : 0, len);
	ic_conn_unlock(c);
	return ret;
}

void ic_conn_send_close(struct ic_conn *c, const char *reason)
{
	IcClose msg = IC_CLOSE__INIT;
	uint8_t buf[IC_HS_MSG_MAX];
	char r[160];

	snprintf(r, sizeof(r), "%s", reason);
	msg.reason = r;
	if (ic_close__get_packed_size(&msg) > sizeof(buf))
		return;
	ic_conn_send_ctl(c, IC_T_CLOSE, buf, ic_close__pack(&msg, buf));
}

int ic_conn_send(struct ic_transport *t, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		 int iovcnt)
{
	struct ic_conn_set *s = ic_conn_set_of(t);
	int idx = ic_base_peer_index(t, dst);
	struct ic_conn_peer *p;
	size_t len = 0;
	int ret;

	if (idx < 0 || iovcnt < 0 || (s->ops->max_iov && iovcnt > s->ops->max_iov))
		return -EINVAL;
	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (len > t->cfg.max_frame)
		return -EMSGSIZE;
	p = &s->peers[idx];
	flags = (uint16_t)((flags & ~IC_FLAG_TRANSPORT_MASK) | IC_FLAG_TAGGED);
	pthread_mutex_lock(&p->lock);
	ret = p->conn ? send_owned(p->conn, type, flags, iov, iovcnt, len) : -ENOTCONN;
	pthread_mutex_unlock(&p->lock);
	if (!ret) {
		ic_count(&s->ctr.frames_tx, 1);
		ic_count(&s->ctr.bytes_tx, len);
	}
	return ret;
}

/* ---- handshake and receive ---------------------------------------------------------------------------- */

int ic_conn_start_handshake(struct ic_conn *c)
{
	struct ic_hs_msg msg;
	int ret;

	c->state = IC_CONN_HANDSHAKE;
	ret = ic_conn_hs_create(&c->set->base, c->dialler, c->peer ? c->peer->id : 0, &c->hs);
	if (ret)
		return ret;
	ret = ic_hs_start(c->hs, &msg);
	if (!ret && msg.type)
		ret = ic_conn_send_ctl(c, msg.type, msg.buf, msg.len);
	return ret;
}

/* Handshake completed: switch both directions to the session key, publish, report the peer up. */
static int conn_established(struct ic_conn *c)
{
	struct ic_conn_set *s = c->set;
	struct ic_mac *rx = NULL, *tx = NULL;
	struct ic_conn_peer *p;
	int idx, ret;

	idx = ic_base_peer_index(&s->base, ic_hs_peer(c->hs));
	if (idx < 0)
		return -EPERM;
	p = &s->peers[idx];
	ret = ic_conn_macs_create(c->hs, c->dialler, &rx, &tx);
	if (!ret && s->ops->established)
		ret = s->ops->established(c);
	if (ret) {
		ic_mac_destroy(rx);
		ic_mac_destroy(tx);
		return ret;
	}
	c->rx_mac = rx;
	c->rules.established = true;
	c->rules.max_frame = s->base.cfg.max_frame;
	ic_hs_destroy(c->hs);
	c->hs = NULL;
	if (!c->dialler) {
		pending_remove(s, c);
		c->peer = p;
		snprintf(c->name, sizeof(c->name), "peer %u", p->id);
	} else {
		p->dialing = NULL;
		p->backoff_ms = IC_CONN_BACKOFF_MIN_MS;
		p->dial_warned = false;
	}
	if (p->conn)   /* only the I/O thread writes p->conn */
		ic_conn_close(p->conn, "replaced by a newer connection from the peer");
	pthread_mutex_lock(&p->lock);
	c->tx_mac = tx;
	c->state = IC_CONN_UP;
	c->last_rx_ns = clock_now_ns();
	p->conn = c;
	atomic_store(&p->up, true);
	pthread_mutex_unlock(&p->lock);
	ic_count(&s->ctr.connects, 1);
	pr_info("peer %u up over %s (%s)", p->id, s->ops->medium, c->dialler ? "dialled" : "accepted");
	if (s->base.cfg.on_peer)
		s->base.cfg.on_peer(s->base.cfg.opaque, p->id, IC_PEER_UP, "authenticated");
	return 0;
}

static void on_handshake(struct ic_conn *c, uint8_t type, const uint8_t *payload, size_t len)
{
	struct ic_hs_msg out;
	const char *why = NULL;
	int ret;

	if (!c->hs) {
		/* rdma: a dialler's HELLO exchange starts at ESTABLISHED; nothing may come before */
		ic_conn_proto_error(c, "handshake message before the connection was set up");
		return;
	}
	ret = ic_hs_input(c->hs, type, payload, len, &out, &why);
	if (ret < 0) {
		/* a garbled handshake counts as a failed authentication, like a wrong key or a refused id; a peer that
		 * proved it speaks the protocol is told why (the reasons name no secret), so both logs say what
		 * happened */
		if (ret != -EPROTO)
			ic_conn_send_close(c, why ? why : "authentication failed");
		auth_failure(c, why ? why : "handshake refused");
		return;
	}
	if (out.type && ic_conn_send_ctl(c, out.type, out.buf, out.len)) {
		ic_conn_close(c, "send failed during the handshake");
		return;
	}
	if (ret == 1 && conn_established(c))
		ic_conn_close(c, "cannot set up the session");
}

static void on_close_frame(struct ic_conn *c, const uint8_t *payload, size_t len)
{
	IcClose *msg = ic_close__unpack(NULL, len, payload);
	char why[200];

	snprintf(why, sizeof(why), "peer closed the connection: %s",
		 msg && msg->reason && *msg->reason ? msg->reason : "(no reason)");
	if (msg)
		ic_close__free_unpacked(msg, NULL);
	if (c->state != IC_CONN_UP) {
		auth_failure(c, why);
		return;
	}
	pr_info("%s: %s", c->name, why);
	ic_conn_close(c, why);
}

void ic_conn_on_frame(struct ic_conn *c, const struct ic_frame_hdr *hdr, const uint8_t *payload)
{
	struct ic_conn_set *s = c->set;

	c->last_rx_ns = s->now_ns;
	switch (hdr->type) {
	case IC_T_HELLO:
	case IC_T_CHALLENGE:
	case IC_T_AUTH:
		on_handshake(c, hdr->type, payload, hdr->length);
		return;
	case IC_T_HEARTBEAT:
		return;
	case IC_T_CLOSE:
		on_close_frame(c, payload, hdr->length);
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

		/* the frame rules refuse these already; this keeps a medium's mistake from reaching on_frame */
		if (c->state != IC_CONN_UP || !c->peer) {
			ic_conn_proto_error(c, "data frame before authentication");
			return;
		}
		ic_count(&s->ctr.frames_rx, 1);
		ic_count(&s->ctr.bytes_rx, hdr->length);
		s->delivered++;
		s->last_rx_conn = c;
		s->base.cfg.on_frame(s->base.cfg.opaque, c->peer->id, &f);
		return;
	}
	}
}

/* ---- timers ------------------------------------------------------------------------------------------- */

static void conn_check_timers(struct ic_conn_set *s, struct ic_conn *c, uint64_t now)
{
	const struct ic_config *cfg = &s->base.cfg;
	uint64_t dead = (uint64_t)cfg->dead_ms * NSEC_PER_MSEC;
	uint64_t hb = (uint64_t)cfg->heartbeat_ms * NSEC_PER_MSEC;
	bool idle, broken;

	if (c->state == IC_CONN_DEAD)
		return;
	if (c->state != IC_CONN_UP) {
		if (now - c->start_ns > dead + s->ops->setup_extra_ns) {
			if (c->state == IC_CONN_HANDSHAKE) {
				pr_warn("%s: no handshake within %u ms; closing", c->name, cfg->dead_ms);
				ic_conn_close(c, "handshake timeout");
			} else {
				ic_conn_close(c, "connection setup timed out");
			}
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
		ic_conn_close(c, "send failed");
		return;
	}
	if (now - c->last_rx_ns > dead) {
		char why[64];

		snprintf(why, sizeof(why), "silent for %llu ms",
			 (unsigned long long)((now - c->last_rx_ns) / NSEC_PER_MSEC));
		ic_conn_close(c, why);
		return;
	}
	if (idle)
		ic_conn_send_ctl(c, IC_T_HEARTBEAT, NULL, 0);   /* -ENOBUFS: the peer is behind; dead_ms decides */
}

void ic_conn_timers(struct ic_conn_set *s, uint64_t now)
{
	struct ic_conn *c, *next;

	for (size_t i = 0; i < s->n_peers; i++) {
		struct ic_conn_peer *p = &s->peers[i];

		if (p->conn)
			conn_check_timers(s, p->conn, now);
		if (p->dialing)
			conn_check_timers(s, p->dialing, now);
		if (p->we_dial && !p->conn && !p->dialing && now >= p->next_dial_ns)
			s->ops->dial(s, p, now);
	}
	for (c = s->pending; c; c = next) {
		next = c->next;
		conn_check_timers(s, c, now);
	}
}

void ic_conn_check_broken(struct ic_conn_set *s)
{
	if (!atomic_exchange(&s->check_broken, false))
		return;
	for (size_t i = 0; i < s->n_peers; i++) {
		struct ic_conn *c = s->peers[i].conn;
		bool broken;

		if (!c)
			continue;
		pthread_mutex_lock(&s->peers[i].lock);
		broken = c->tx_broken;
		pthread_mutex_unlock(&s->peers[i].lock);
		if (broken)
			ic_conn_close(c, "send failed");
	}
}

void ic_conn_bury(struct ic_conn_set *s)
{
	while (s->graveyard) {
		struct ic_conn *c = s->graveyard;

		s->graveyard = c->next;
		s->ops->free(c);
	}
}

/* ---- queries ------------------------------------------------------------------------------------------ */

bool ic_conn_peer_is_up(struct ic_transport *t, uint32_t peer)
{
	int idx = ic_base_peer_index(t, peer);

	return idx >= 0 && atomic_load(&ic_conn_set_of(t)->peers[idx].up);
}

void ic_conn_get_stats(struct ic_transport *t, struct ic_stats *out)
{
	ic_counters_read(&ic_conn_set_of(t)->ctr, out);
}
