/* SPDX-License-Identifier: MIT */
/*
 * loop — the in-process transport, for unit tests and the scale model.
 *
 * Endpoints of one process meet in a named hub: an endpoint's address is "hub/ID" (its listen address, or the
 * hub named by its peers' addresses). A hub is created on first use and freed with its last endpoint.
 *
 * Connection story: when an endpoint joins a hub it looks at every peer in its configuration; a peer that is
 * present and lists it back is connected if the two share the cluster key. Keys are never compared: each
 * endpoint publishes a random nonce and proof = HMAC-SHA256(key, "rackvm-loop-v1" || nonce), and the joiner
 * checks the other's proof with its own key. A connection gets a fresh generation number; both sides receive
 * IC_PEER_UP through their inboxes. Destroying an endpoint sends IC_PEER_DOWN to every connected peer. A frame the
 * receiver refuses (type not accepted, larger than its max_frame) is counted and resets the connection like tcp
 * closing it: IC_PEER_DOWN then IC_PEER_UP on both sides, under a new generation.
 *
 * Data path: ic_send copies the payload into a message and enqueues it on the receiver's inbox, a liburcu
 * wait-free concurrent queue (any number of sender threads, one consumer: the receiver's ic_poll thread), and
 * signals the receiver's eventfd when the inbox was empty. Messages carry the connection generation; those of
 * a connection that was reset or closed since are discarded on receipt, so nothing crosses a reconnect.
 *
 * Locking: hub->lock (rwlock) guards hub->eps and every link's conn. ic_send holds it for reading, which keeps
 * the receiver alive while it enqueues; create, destroy and connection resets hold it for writing. Callbacks run
 * without any lock held.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <urcu/wfcqueue.h>

#include "interconnect/frame.h"
#include "interconnect/ic_internal.h"
#include "util/log.h"

/* liburcu's queue is not instrumented for ThreadSanitizer: tell it that enqueue publishes the message. */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define loop_tsan_release(p) __tsan_release(p)
#define loop_tsan_acquire(p) __tsan_acquire(p)
#else
#define loop_tsan_release(p) ((void)(p))
#define loop_tsan_acquire(p) ((void)(p))
#endif

#define LOOP_NONCE_LEN 32
#define LOOP_PROOF_LEN 32
#define LOOP_POLL_BATCH 256   /* messages handled per ic_poll, so one busy peer cannot starve the caller */

enum loop_msg_kind {
	LOOP_MSG_FRAME,
	LOOP_MSG_UP,
	LOOP_MSG_DOWN,
};

struct loop_msg {
	struct cds_wfcq_node node;
	enum loop_msg_kind kind;
	uint32_t src;
	uint64_t conn;          /* connection generation this message belongs to */
	uint8_t type;
	uint16_t flags;
	uint32_t epoch;
	uint64_t seq;
	uint32_t len;
	char why[40];
	unsigned char payload[];
};

/* One endpoint's side of the connection to one configured peer. */
struct loop_link {
	_Atomic uint64_t conn;      /* 0: down; else the connection generation (written under hub->lock held for write) */
	pthread_mutex_t tx_lock;    /* makes seq assignment and enqueue one step, so seqs arrive in order */
	uint64_t tx_seq;
};

struct loop_hub;

struct loop_ep {
	struct ic_transport base;
	struct loop_hub *hub;
	struct cds_wfcq_head inbox_head;
	struct cds_wfcq_tail inbox_tail;
	int efd;
	uint8_t nonce[LOOP_NONCE_LEN];
	uint8_t proof[LOOP_PROOF_LEN];
	struct loop_link *links;    /* indexed like base.peers */
	struct ic_counters stats;
};

struct loop_hub {
	struct loop_hub *next;      /* hubs list, under hubs_lock */
	unsigned int refs;          /* under hubs_lock */
	char name[IC_ADDR_MAX];
	pthread_rwlock_t lock;
	uint64_t next_conn;         /* under lock (write) */
	struct loop_ep *eps[IC_MAX_NODES];
};

static pthread_mutex_t hubs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct loop_hub *hubs;

static struct ic_transport_ops loop_ops;

/* "hub/ID" -> hub name and id. */
static int loop_addr_parse(const char *addr, char *hub, size_t hub_size, uint32_t *id)
{
	const char *slash = strrchr(addr, '/');
	unsigned long v;
	char *end;

	if (!slash || slash == addr || (size_t)(slash - addr) >= hub_size || !slash[1])
		return -EINVAL;
	errno = 0;
	v = strtoul(slash + 1, &end, 10);
	if (errno || *end || v >= IC_MAX_NODES)
		return -EINVAL;
	memcpy(hub, addr, (size_t)(slash - addr));
	hub[slash - addr] = '\0';
	*id = (uint32_t)v;
	return 0;
}

static struct loop_hub *loop_hub_get(const char *name)
{
	struct loop_hub *h;

	pthread_mutex_lock(&hubs_lock);
	for (h = hubs; h; h = h->next)
		if (!strcmp(h->name, name))
			break;
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (h) {
			snprintf(h->name, sizeof(h->name), "%s", name);
			pthread_rwlock_init(&h->lock, NULL);
			h->next = hubs;
			hubs = h;
		}
	}
	if (h)
		h->refs++;
	pthread_mutex_unlock(&hubs_lock);
	return h;
}

static void loop_hub_put(struct loop_hub *h)
{
	struct loop_hub **pp;

	pthread_mutex_lock(&hubs_lock);
	if (--h->refs) {
		pthread_mutex_unlock(&hubs_lock);
		return;
	}
	for (pp = &hubs; *pp != h; pp = &(*pp)->next)
		;
	*pp = h->next;
	pthread_mutex_unlock(&hubs_lock);
	pthread_rwlock_destroy(&h->lock);
	free(h);
}

static int loop_proof(const uint8_t *key, size_t key_len, const uint8_t nonce[LOOP_NONCE_LEN],
		      uint8_t out[LOOP_PROOF_LEN])
{
	static const char domain[] = "rackvm-loop-v1";
	uint8_t msg[sizeof(domain) + LOOP_NONCE_LEN];
	unsigned int out_len = LOOP_PROOF_LEN;

	memcpy(msg, domain, sizeof(domain));
	memcpy(msg + sizeof(domain), nonce, LOOP_NONCE_LEN);
	if (!HMAC(EVP_sha256(), key, (int)key_len, msg, sizeof(msg), out, &out_len) || out_len != LOOP_PROOF_LEN)
		return -EIO;
	return 0;
}

static void loop_signal(struct loop_ep *ep)
{
	uint64_t one = 1;

	if (write(ep->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn("eventfd write: %s", strerror(errno));
}

static void loop_post(struct loop_ep *to, struct loop_msg *m)
{
	cds_wfcq_node_init(&m->node);
	loop_tsan_release(m);
	if (!cds_wfcq_enqueue(&to->inbox_head, &to->inbox_tail, &m->node))
		loop_signal(to);
}

/* Peer event for `to` about `peer`. Called with hub->lock held for write. An allocation failure loses the
 * event; the generation check still keeps stale frames out. */
static void loop_post_event(struct loop_ep *to, uint32_t peer, enum loop_msg_kind kind, uint64_t conn,
			    const char *why)
{
	struct loop_msg *m = calloc(1, sizeof(*m));

	if (!m) {
		pr_err("out of memory: peer event for %u lost", peer);
		return;
	}
	m->kind = kind;
	m->src = peer;
	m->conn = conn;
	snprintf(m->why, sizeof(m->why), "%s", why);
	loop_post(to, m);
}

static struct loop_link *loop_link_of(struct loop_ep *ep, uint32_t peer)
{
	int i = ic_base_peer_index(&ep->base, peer);

	return i < 0 ? NULL : &ep->links[i];
}

/* Bring up the connection between a and b with a new generation. Hub lock held for write. */
static void loop_connect(struct loop_hub *h, struct loop_ep *a, struct loop_ep *b, const char *why)
{
	struct loop_link *la = loop_link_of(a, b->base.cfg.self), *lb = loop_link_of(b, a->base.cfg.self);
	uint64_t conn = ++h->next_conn;

	pthread_mutex_lock(&la->tx_lock);
	la->tx_seq = 0;
	pthread_mutex_unlock(&la->tx_lock);
	pthread_mutex_lock(&lb->tx_lock);
	lb->tx_seq = 0;
	pthread_mutex_unlock(&lb->tx_lock);
	atomic_store(&la->conn, conn);
	atomic_store(&lb->conn, conn);
	ic_count(&a->stats.connects, 1);
	ic_count(&b->stats.connects, 1);
	loop_post_event(a, b->base.cfg.self, LOOP_MSG_UP, conn, why);
	loop_post_event(b, a->base.cfg.self, LOOP_MSG_UP, conn, why);
}

/* Take down a's link to peer (and the peer's to a, if it still exists). Hub lock held for write. */
static void loop_disconnect(struct loop_hub *h, struct loop_ep *a, uint32_t peer, const char *why)
{
	struct loop_link *la = loop_link_of(a, peer);
	struct loop_ep *b = h->eps[peer];
	uint64_t conn = atomic_load(&la->conn);

	if (!conn)
		return;
	atomic_store(&la->conn, 0);
	ic_count(&a->stats.disconnects, 1);
	loop_post_event(a, peer, LOOP_MSG_DOWN, conn, why);
	if (b) {
		struct loop_link *lb = loop_link_of(b, a->base.cfg.self);

		atomic_store(&lb->conn, 0);
		ic_count(&b->stats.disconnects, 1);
		loop_post_event(b, a->base.cfg.self, LOOP_MSG_DOWN, conn, why);
	}
}

/* Joining endpoint meets the endpoints already in the hub. Hub lock held for write. */
static void loop_join(struct loop_hub *h, struct loop_ep *ep)
{
	for (size_t i = 0; i < ep->base.cfg.n_peers; i++) {
		struct loop_ep *other = h->eps[ep->base.peers[i].id];
		uint8_t expect[LOOP_PROOF_LEN];

		if (!other || ic_base_peer_index(&other->base, ep->base.cfg.self) < 0)
			continue;
		if (loop_proof(ep->base.key, ep->base.cfg.key_len, other->nonce, expect) ||
		    CRYPTO_memcmp(expect, other->proof, LOOP_PROOF_LEN)) {
			pr_warn("hub %s: node %u and node %u do not share the cluster key; not connecting", h->name,
				ep->base.cfg.self, other->base.cfg.self);
			ic_count(&ep->stats.auth_failures, 1);
			ic_count(&other->stats.auth_failures, 1);
			continue;
		}
		loop_connect(h, ep, other, "connected");
	}
}

static int loop_hub_name_of(const struct ic_config *cfg, char *hub, size_t hub_size)
{
	char other[IC_ADDR_MAX];
	uint32_t id;
	bool have = false;

	if (cfg->listen) {
		if (loop_addr_parse(cfg->listen, hub, hub_size, &id) || id != cfg->self) {
			pr_err("loop: listen address '%s' is not \"hub/%u\"", cfg->listen, cfg->self);
			return -EINVAL;
		}
		have = true;
	}
	for (size_t i = 0; i < cfg->n_peers; i++) {
		char *name = have ? other : hub;
		size_t size = have ? sizeof(other) : hub_size;

		if (loop_addr_parse(cfg->peers[i].addr, name, size, &id) || id != cfg->peers[i].id) {
			pr_err("loop: address '%s' of peer %u is not \"hub/%u\"", cfg->peers[i].addr, cfg->peers[i].id,
			       cfg->peers[i].id);
			return -EINVAL;
		}
		if (have && strcmp(hub, other)) {
			pr_err("loop: peer %u is in hub '%s', not '%s'", cfg->peers[i].id, other, hub);
			return -EINVAL;
		}
		have = true;
	}
	if (!have) {
		pr_err("loop: no listen address and no peers: no hub to join");
		return -EINVAL;
	}
	return 0;
}

static void loop_free_msgs(struct loop_ep *ep)
{
	struct cds_wfcq_node *n;

	while ((n = __cds_wfcq_dequeue_blocking(&ep->inbox_head, &ep->inbox_tail))) {
		loop_tsan_acquire(caa_container_of(n, struct loop_msg, node));
		free(caa_container_of(n, struct loop_msg, node));
	}
}

static int loop_create(const struct ic_config *cfg, struct ic_transport **out)
{
	char hub_name[IC_ADDR_MAX];
	struct loop_ep *ep;
	struct loop_hub *h;
	size_t i;
	int ret;

	ret = loop_hub_name_of(cfg, hub_name, sizeof(hub_name));
	if (ret)
		return ret;
	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return -ENOMEM;
	ret = ic_base_init(&ep->base, &loop_ops, cfg);
	if (ret)
		goto out_free_ep;
	ep->links = calloc(cfg->n_peers ? cfg->n_peers : 1, sizeof(*ep->links));
	if (!ep->links) {
		ret = -ENOMEM;
		goto out_fini_base;
	}
	for (i = 0; i < cfg->n_peers; i++)
		pthread_mutex_init(&ep->links[i].tx_lock, NULL);
	cds_wfcq_init(&ep->inbox_head, &ep->inbox_tail);
	ep->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ep->efd < 0) {
		ret = -errno;
		pr_err("eventfd: %s", strerror(errno));
		goto out_free_links;
	}
	if (getrandom(ep->nonce, sizeof(ep->nonce), 0) != (ssize_t)sizeof(ep->nonce) ||
	    loop_proof(ep->base.key, cfg->key_len, ep->nonce, ep->proof)) {
		ret = -EIO;
		pr_err("loop: cannot make the key proof");
		goto out_close_efd;
	}
	h = loop_hub_get(hub_name);
	if (!h) {
		ret = -ENOMEM;
		goto out_close_efd;
	}
	pthread_rwlock_wrlock(&h->lock);
	if (h->eps[cfg->self]) {
		pthread_rwlock_unlock(&h->lock);
		pr_err("loop: node %u already exists in hub '%s'", cfg->self, hub_name);
		ret = -EADDRINUSE;
		goto out_put_hub;
	}
	ep->hub = h;
	h->eps[cfg->self] = ep;
	loop_join(h, ep);
	pthread_rwlock_unlock(&h->lock);
	*out = &ep->base;
	return 0;

out_put_hub:
	loop_hub_put(h);
out_close_efd:
	close(ep->efd);
out_free_links:
	for (i = 0; i < cfg->n_peers; i++)
		pthread_mutex_destroy(&ep->links[i].tx_lock);
	free(ep->links);
out_fini_base:
	ic_base_fini(&ep->base);
out_free_ep:
	free(ep);
	return ret;
}

static void loop_destroy(struct ic_transport *t)
{
	struct loop_ep *ep = (struct loop_ep *)t;
	struct loop_hub *h = ep->hub;

	pthread_rwlock_wrlock(&h->lock);
	for (size_t i = 0; i < t->cfg.n_peers; i++)
		loop_disconnect(h, ep, t->peers[i].id, "peer closed");
	h->eps[t->cfg.self] = NULL;
	pthread_rwlock_unlock(&h->lock);
	loop_hub_put(h);

	loop_free_msgs(ep);
	cds_wfcq_destroy(&ep->inbox_head, &ep->inbox_tail);
	close(ep->efd);
	for (size_t i = 0; i < t->cfg.n_peers; i++)
		pthread_mutex_destroy(&ep->links[i].tx_lock);
	free(ep->links);
	ic_base_fini(&ep->base);
	free(ep);
}

static int loop_send(struct ic_transport *t, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		     int iovcnt)
{
	struct loop_ep *ep = (struct loop_ep *)t;
	int idx = ic_base_peer_index(t, dst);
	struct loop_link *link;
	struct loop_msg *m;
	struct loop_ep *to;
	size_t len = 0, off = 0;
	uint64_t conn;

	if (idx < 0)
		return -EINVAL;
	for (int i = 0; i < iovcnt; i++) {
		len += iov[i].iov_len;
		if (len > t->cfg.max_frame)
			return -EMSGSIZE;
	}
	link = &ep->links[idx];
	pthread_rwlock_rdlock(&ep->hub->lock);
	conn = atomic_load(&link->conn);
	to = ep->hub->eps[dst];
	if (!conn || !to) {
		pthread_rwlock_unlock(&ep->hub->lock);
		return -ENOTCONN;
	}
	m = malloc(sizeof(*m) + len);
	if (!m) {
		pthread_rwlock_unlock(&ep->hub->lock);
		return -ENOBUFS;
	}
	m->kind = LOOP_MSG_FRAME;
	m->src = t->cfg.self;
	m->conn = conn;
	m->type = type;
	m->flags = flags & (uint16_t)~IC_FLAG_TRANSPORT_MASK;
	m->epoch = ic_base_epoch(t);
	m->len = (uint32_t)len;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len)
			memcpy(m->payload + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	pthread_mutex_lock(&link->tx_lock);
	m->seq = ++link->tx_seq;
	loop_post(to, m);
	pthread_mutex_unlock(&link->tx_lock);
	pthread_rwlock_unlock(&ep->hub->lock);
	ic_count(&ep->stats.frames_tx, 1);
	ic_count(&ep->stats.bytes_tx, len);
	return 0;
}

/* The receiver refused a frame of connection conn from src: reset that connection, as tcp would close it. */
static void loop_reset(struct loop_ep *ep, uint32_t src, uint64_t conn, const char *why)
{
	struct loop_hub *h = ep->hub;
	struct loop_link *link = loop_link_of(ep, src);
	struct loop_ep *other;

	pthread_rwlock_wrlock(&h->lock);
	if (atomic_load(&link->conn) == conn) {
		other = h->eps[src];
		loop_disconnect(h, ep, src, why);
		if (other)
			loop_connect(h, ep, other, "reconnected");
	}
	pthread_rwlock_unlock(&h->lock);
}

/* Returns 1 when a frame was delivered. */
static int loop_handle(struct loop_ep *ep, struct loop_msg *m)
{
	struct ic_config *cfg = &ep->base.cfg;
	struct loop_link *link = loop_link_of(ep, m->src);
	struct ic_frame f;

	switch (m->kind) {
	case LOOP_MSG_UP:
	case LOOP_MSG_DOWN:
		if (cfg->on_peer)
			cfg->on_peer(cfg->opaque, m->src, m->kind == LOOP_MSG_UP ? IC_PEER_UP : IC_PEER_DOWN, m->why);
		return 0;
	case LOOP_MSG_FRAME:
		break;
	}
	if (!link || atomic_load(&link->conn) != m->conn)
		return 0;   /* sent on a connection that has been closed or reset since */
	if (!ic_type_accepted(cfg->accept_types, m->type) || m->len > cfg->max_frame) {
		ic_count(&ep->stats.proto_errors, 1);
		pr_err("loop: node %u sent %s (type %#x, %u bytes); resetting the connection", m->src,
		       m->len > cfg->max_frame ? "an oversized frame" : "a frame of a type not accepted", m->type,
		       m->len);
		loop_reset(ep, m->src, m->conn, "protocol error");
		return 0;
	}
	ic_count(&ep->stats.frames_rx, 1);
	ic_count(&ep->stats.bytes_rx, m->len);
	f = (struct ic_frame){
		.type = m->type,
		.flags = m->flags,
		.epoch = m->epoch,
		.seq = m->seq,
		.payload = m->payload,
		.len = m->len,
	};
	cfg->on_frame(cfg->opaque, m->src, &f);
	return 1;
}

static int loop_drain(struct loop_ep *ep)
{
	int delivered = 0;

	for (int i = 0; i < LOOP_POLL_BATCH; i++) {
		struct cds_wfcq_node *n = __cds_wfcq_dequeue_blocking(&ep->inbox_head, &ep->inbox_tail);
		struct loop_msg *m;

		if (!n)
			break;
		m = caa_container_of(n, struct loop_msg, node);
		loop_tsan_acquire(m);
		delivered += loop_handle(ep, m);
		free(m);
	}
	return delivered;
}

static void loop_clear_signal(struct loop_ep *ep)
{
	uint64_t v;

	if (read(ep->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		pr_warn("eventfd read: %s", strerror(errno));
}

static int loop_poll(struct ic_transport *t, int timeout_ms)
{
	struct loop_ep *ep = (struct loop_ep *)t;
	struct pollfd pfd = { .fd = ep->efd, .events = POLLIN };
	int delivered;

	/* Clear the signal before looking at the inbox: an enqueue onto an empty inbox after we looked signals
	 * again, so the poll below cannot sleep through it. */
	loop_clear_signal(ep);
	if (!cds_wfcq_empty(&ep->inbox_head, &ep->inbox_tail) || !timeout_ms)
		return loop_drain(ep);
	if (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR)
		return -errno;
	loop_clear_signal(ep);
	delivered = loop_drain(ep);
	/* More than a batch was waiting: leave the eventfd readable so a caller that blocks next returns at once. */
	if (!cds_wfcq_empty(&ep->inbox_head, &ep->inbox_tail))
		loop_signal(ep);
	return delivered;
}

static void loop_wake(struct ic_transport *t)
{
	loop_signal((struct loop_ep *)t);
}

static bool loop_peer_is_up(struct ic_transport *t, uint32_t peer)
{
	struct loop_link *link = loop_link_of((struct loop_ep *)t, peer);

	return link && atomic_load(&link->conn) != 0;
}

static void loop_get_stats(struct ic_transport *t, struct ic_stats *out)
{
	ic_counters_read(&((struct loop_ep *)t)->stats, out);
}

static struct ic_transport_ops loop_ops = {
	.name = "loop",
	.create = loop_create,
	.destroy = loop_destroy,
	.send = loop_send,
	.poll = loop_poll,
	.wake = loop_wake,
	.peer_is_up = loop_peer_is_up,
	.get_stats = loop_get_stats,
};
IC_TRANSPORT_REGISTER(loop_ops)
