/* SPDX-License-Identifier: MIT */
/*
 * rdma transport: librdmacm connection setup, one RC queue pair per node pair, the frame format and handshake of
 * every transport (interconnect/frame_codec.h, interconnect/auth.h). Design, credits and what was tested where:
 * docs/rdma.md.
 *
 * Connection story (the node with the smaller id dials, as in tcp):
 *   dialler: rdma_resolve_addr -> ADDR_RESOLVED -> rdma_resolve_route -> ROUTE_RESOLVED -> create PD, CQ with a
 *            completion channel, RC QP, register buffers, post every receive -> rdma_connect(private data: our
 *            ring) -> ESTABLISHED(private data: the listener's ring) -> HELLO ... (auth.h) -> up
 *   listener: CONNECT_REQUEST(private data: the dialler's ring) -> same resources, receives posted ->
 *            rdma_accept(private data: our ring) -> ESTABLISHED; the HELLO may complete before that event.
 * rdma_cm events are read from the event channel fd, completions from each connection's completion channel fd;
 * both are in the transport's epoll set, so ic_poll drives everything on the I/O thread.
 *
 * Buffers of one connection (each connection has its own, so an unauthenticated connector can only scribble on
 * its own connection's memory, and every frame is MAC-checked before use anyway):
 *   rx region (registered LOCAL_WRITE | REMOTE_WRITE, rkey given to the peer):
 *     RDMA_N_RECV receive slots of RDMA_RECV_SLOT bytes, always posted (one per inbound message);
 *     RDMA_N_DATA data slots of slot_size bytes (a whole frame of max_frame payload), written by the peer;
 *     the credit word {recv_consumed, data_consumed} the peer writes back to us.
 *   tx region (LOCAL_WRITE only): RDMA_N_TX send slots of slot_size bytes, and our outgoing credit word.
 *
 * Data path: a frame is header + payload + tag exactly as on tcp, copied into a send slot (the caller's memory is
 * not registered). Payloads up to RDMA_SEND_MAX go as one SEND into a posted receive. Larger ones (pages) go as
 * an RDMA WRITE WITH IMMEDIATE into the peer's next data slot, in ring order; the immediate (the slot index)
 * consumes a posted receive and is the completion notice. RC delivers both kinds in order.
 *
 * Credits: a sender may have at most RDMA_N_RECV messages and RDMA_N_DATA data frames not yet consumed by the
 * receiver. The receiver reposts each receive (and frees each data slot) after the frame was handled, counts
 * them, and every RDMA_CREDIT_BATCH (or at the end of a poll) RDMA-WRITEs its cumulative counters into the
 * sender's credit word: a one-sided write, so returning credits never needs a credit. A sender out of credits
 * gets -ENOBUFS, as when a tcp send queue is full.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "interconnect/addr.h"
#include "interconnect/auth.h"
#include "interconnect/frame_codec.h"
#include "interconnect/ic.pb-c.h"
#include "interconnect/ic_internal.h"
#include "util/clock.h"
#include "util/log.h"

#define RDMA_N_RECV 64u
#define RDMA_N_DATA 16u
#define RDMA_N_TX 32u
#define RDMA_SEND_MAX 1024u                  /* payloads up to this go by SEND */
#define RDMA_RECV_SLOT 1088u                 /* >= header + RDMA_SEND_MAX + tag, and >= a handshake frame */
#define RDMA_CREDIT_BATCH (RDMA_N_RECV / 4)
#define RDMA_RESOLVE_MS 2000
#define RDMA_BACKOFF_MIN_MS 10u
#define RDMA_BACKOFF_MAX_MS 1000u
#define RDMA_TIMER_NS (5 * NSEC_PER_MSEC)
#define RDMA_MAX_EVENTS 64
#define RDMA_PRIV_MAGIC 0x414d4452u          /* "RDMA" */
#define RDMA_PRIV_VERSION 1u

static_assert(RDMA_RECV_SLOT >= IC_HDR_LEN + RDMA_SEND_MAX + IC_TAG_LEN, "a SEND frame fits a receive slot");
static_assert(RDMA_RECV_SLOT >= IC_HDR_LEN + IC_HS_MSG_MAX + IC_TAG_LEN, "a handshake frame fits a receive slot");

/* wr_id: kind in the top bits, slot index below */
#define WR_RECV (1ULL << 32)
#define WR_TX (2ULL << 32)
#define WR_CREDIT (3ULL << 32)
#define WR_KIND(id) ((id) & ~0xffffffffULL)
#define WR_INDEX(id) ((uint32_t)(id))

/* rdma_cm private data of connect and accept: where the peer may write. Little-endian. <= 56 bytes (IB REQ). */
struct rdma_priv {
	uint32_t magic;
	uint16_t version;
	uint16_t n_data;
	uint32_t node_id;
	uint32_t slot_size;
	uint64_t data_addr;
	uint64_t credit_addr;
	uint32_t data_rkey;
	uint32_t credit_rkey;
	uint32_t n_recv;
} __attribute__((packed));
static_assert(sizeof(struct rdma_priv) <= 56, "fits the private data of an IB connect request");

/* Cumulative counts the receiver RDMA-writes into the sender's credit word. */
struct rdma_credit {
	uint64_t recv_consumed;
	uint64_t data_consumed;
};

enum ep_kind { EP_CM, EP_WAKE, EP_CQ };

enum conn_state { C_RESOLVING, C_CONNECTING, C_HANDSHAKE, C_UP, C_DEAD };

struct rdma_tr;
struct rpeer;

struct rconn {
	enum ep_kind kind;               /* EP_CQ: the epoll data of the completion channel points here */
	struct rdma_tr *t;
	struct rpeer *peer;              /* dialled: from the start; accepted: once authenticated */
	struct rdma_cm_id *id;
	bool dialler;
	enum conn_state state;
	char name[48];
	uint64_t start_ns;

	struct ibv_pd *pd;
	struct ibv_comp_channel *cc;
	struct ibv_cq *cq;
	bool qp_created;
	uint8_t *rx;                     /* recv slots | data slots | credit word */
	size_t rx_len;
	struct ibv_mr *rx_mr;
	uint8_t *tx;                     /* tx slots | outgoing credit word */
	size_t tx_len;
	struct ibv_mr *tx_mr;
	uint32_t slot_size;

	/* the peer's ring, from its private data */
	bool have_remote;
	uint64_t r_data_addr, r_credit_addr;
	uint32_t r_data_rkey, r_credit_rkey, r_slot_size, r_n_data, r_n_recv;

	/* receive side: I/O thread only */
	struct ic_hs *hs;
	struct ic_frame_rules rules;
	struct ic_mac *rx_mac;
	uint64_t recv_consumed, data_consumed;
	uint32_t next_data_slot;
	uint64_t last_rx_ns;

	/* send side: under tx_lock */
	pthread_mutex_t tx_lock;
	uint64_t tx_seq;
	struct ic_mac *tx_mac;
	uint64_t sent_msgs, sent_data;   /* messages / data frames posted (against the peer's credits) */
	uint32_t tx_head, tx_tail;       /* send slots posted / completed */
	uint64_t reported_recv, reported_data;
	bool credit_busy;                /* a credit write is in flight */
	bool broken;
	uint64_t last_tx_ns;

	struct rconn *next;              /* pending list / graveyard */
};

struct rpeer {
	uint32_t id;
	bool we_dial;
	struct ic_sockaddr sa;
	pthread_mutex_t lock;            /* guards conn (written by the I/O thread) and keeps it alive for senders */
	struct rconn *conn;              /* the authenticated connection */
	_Atomic bool up;
	struct rconn *dialing;           /* I/O thread only */
	uint64_t next_dial_ns;
	uint32_t backoff_ms;
};

struct rdma_tr {
	struct ic_transport base;
	int epfd, evfd;
	enum ep_kind cm_tag, wake_tag;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *listen_id;
	struct rpeer *peers;
	size_t n_peers;
	struct rconn *pending;           /* accepted, not yet authenticated */
	struct rconn *graveyard;         /* closed during this poll, freed at its end */
	uint64_t timer_due_ns;
	_Atomic bool check_broken;
	int delivered;

	struct ic_counters ctr;
};

static struct ic_transport_ops rdma_ops;

static inline struct rdma_tr *to_rdma(struct ic_transport *t)
{
	return (struct rdma_tr *)t;
}

static void rtr_wake(struct ic_transport *it)
{
	uint64_t one = 1;
	ssize_t n = write(to_rdma(it)->evfd, &one, sizeof(one));

	(void)n;   /* EAGAIN: a wake is pending anyway */
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static uint8_t *rx_recv_slot(struct rconn *c, uint32_t i)
{
	return c->rx + (size_t)i * RDMA_RECV_SLOT;
}

static uint8_t *rx_data_slot(struct rconn *c, uint32_t i)
{
	return c->rx + (size_t)RDMA_N_RECV * RDMA_RECV_SLOT + (size_t)i * c->slot_size;
}

static volatile struct rdma_credit *rx_credit(struct rconn *c)
{
	return (volatile struct rdma_credit *)(c->rx + c->rx_len - sizeof(struct rdma_credit));
}

static uint8_t *tx_slot(struct rconn *c, uint32_t i)
{
	return c->tx + (size_t)i * c->slot_size;
}

static struct rdma_credit *tx_credit(struct rconn *c)
{
	return (struct rdma_credit *)(c->tx + c->tx_len - sizeof(struct rdma_credit));
}

/* ---- connection objects ---- */

static struct rconn *conn_new(struct rdma_tr *t, struct rdma_cm_id *id, bool dialler, struct rpeer *peer)
{
	struct rconn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->kind = EP_CQ;
	c->t = t;
	c->id = id;
	c->peer = peer;
	c->dialler = dialler;
	c->start_ns = c->last_rx_ns = c->last_tx_ns = clock_now_ns();
	pthread_mutex_init(&c->tx_lock, NULL);
	ic_frame_rules_init(&c->rules, IC_HS_MSG_MAX, t->base.cfg.accept_types);
	c->slot_size = (uint32_t)((IC_HDR_LEN + t->base.cfg.max_frame + IC_TAG_LEN + 63) & ~63u);
	if (peer)
		snprintf(c->name, sizeof(c->name), "peer %u", peer->id);
	else
		snprintf(c->name, sizeof(c->name), "inbound connection");
	if (id)
		id->context = c;
	return c;
}

/* Release verbs resources and the cm id. The id's events must all have been acked. */
static void conn_free(struct rconn *c)
{
	if (c->qp_created)
		rdma_destroy_qp(c->id);
	if (c->rx_mr)
		ibv_dereg_mr(c->rx_mr);
	if (c->tx_mr)
		ibv_dereg_mr(c->tx_mr);
	if (c->cq)
		ibv_destroy_cq(c->cq);
	if (c->cc)
		ibv_destroy_comp_channel(c->cc);
	if (c->pd)
		ibv_dealloc_pd(c->pd);
	if (c->id)
		rdma_destroy_id(c->id);
	free(c->rx);
	free(c->tx);
	ic_hs_destroy(c->hs);
	ic_mac_destroy(c->rx_mac);
	ic_mac_destroy(c->tx_mac);
	pthread_mutex_destroy(&c->tx_lock);
	free(c);
}

static void pending_remove(struct rdma_tr *t, struct rconn *c)
{
	for (struct rconn **pp = &t->pending; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			c->next = NULL;
			return;
		}
	}
}

static void peer_schedule_dial(struct rpeer *p, uint64_t now, bool failed)
{
	p->dialing = NULL;
	p->next_dial_ns = now + (uint64_t)p->backoff_ms * NSEC_PER_MSEC;
	if (failed) {
		p->backoff_ms *= 2;
		if (p->backoff_ms > RDMA_BACKOFF_MAX_MS)
			p->backoff_ms = RDMA_BACKOFF_MAX_MS;
	}
}

/* Close a connection (I/O thread): unpublish, disconnect, report the peer down; freed at the end of the poll. */
static void conn_close(struct rconn *c, const char *why)
{
	struct rdma_tr *t = c->t;
	struct rpeer *p = c->peer;
	bool was_up = c->state == C_UP, published = false;

	if (c->state == C_DEAD)
		return;
	if (p) {
		pthread_mutex_lock(&p->lock);
		if (p->conn == c) {
			p->conn = NULL;
			atomic_store(&p->up, false);
			published = true;
		}
		pthread_mutex_unlock(&p->lock);
	}
	c->state = C_DEAD;
	if (c->cc)
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->cc->fd, NULL);
	if (c->id && c->qp_created)
		rdma_disconnect(c->id);
	if (!c->dialler && !was_up)
		pending_remove(t, c);
	if (c->dialler && p && (p->dialing == c || was_up))
		peer_schedule_dial(p, clock_now_ns(), !was_up);
	c->next = t->graveyard;
	t->graveyard = c;
	if (published) {
		ic_count(&t->ctr.disconnects, 1);
		pr_info("peer %u down: %s", p->id, why);
		if (t->base.cfg.on_peer)
			t->base.cfg.on_peer(t->base.cfg.opaque, p->id, IC_PEER_DOWN, why);
	}
}

static void conn_proto_error(struct rconn *c, const char *what)
{
	ic_count(&c->t->ctr.proto_errors, 1);
	pr_err("%s: protocol error: %s; closing", c->name, what);
	conn_close(c, what);
}

static void conn_auth_failure(struct rconn *c, const char *what)
{
	ic_count(&c->t->ctr.auth_failures, 1);
	pr_err("%s: authentication failed: %s; closing", c->name, what);
	conn_close(c, what);
}

/* ---- verbs resources ---- */

static int post_recv(struct rconn *c, uint32_t i)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)rx_recv_slot(c, i),
		.length = RDMA_RECV_SLOT,
		.lkey = c->rx_mr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = WR_RECV | i, .sg_list = &sge, .num_sge = 1 }, *bad;

	return -ibv_post_recv(c->id->qp, &wr, &bad);
}

/* The rx and tx regions of the layout at the top of this file (zeroed, page-aligned, not yet registered). */
static int conn_alloc_buffers(struct rconn *c)
{
	c->rx_len = (size_t)RDMA_N_RECV * RDMA_RECV_SLOT + (size_t)RDMA_N_DATA * c->slot_size +
		    sizeof(struct rdma_credit);
	c->tx_len = (size_t)RDMA_N_TX * c->slot_size + sizeof(struct rdma_credit);
	if (posix_memalign((void **)&c->rx, 4096, c->rx_len) || posix_memalign((void **)&c->tx, 4096, c->tx_len))
		return -ENOMEM;
	memset(c->rx, 0, c->rx_len);
	memset(c->tx, 0, c->tx_len);
	return 0;
}

static int conn_post_recvs(struct rconn *c)
{
	for (uint32_t i = 0; i < RDMA_N_RECV; i++) {
		int ret = post_recv(c, i);

		if (ret)
			return ret;
	}
	return 0;
}

static int conn_setup_verbs(struct rconn *c)
{
	struct rdma_tr *t = c->t;
	struct ibv_qp_init_attr qa = { 0 };
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
	int cq_size = (int)(RDMA_N_RECV + RDMA_N_TX + 4);
	int ret;

	c->pd = ibv_alloc_pd(c->id->verbs);
	if (!c->pd)
		return -ENOMEM;
	c->cc = ibv_create_comp_channel(c->id->verbs);
	if (!c->cc)
		return -errno ? -errno : -ENOMEM;
	ret = set_nonblock(c->cc->fd);
	if (ret)
		return ret;
	c->cq = ibv_create_cq(c->id->verbs, cq_size, c, c->cc, 0);
	if (!c->cq)
		return -errno ? -errno : -ENOMEM;
	if (ibv_req_notify_cq(c->cq, 0))
		return -EIO;

	qa.send_cq = c->cq;
	qa.recv_cq = c->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = RDMA_N_TX + 2;    /* + the credit write */
	qa.cap.max_recv_wr = RDMA_N_RECV;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(c->id, c->pd, &qa))
		return -errno ? -errno : -EIO;
	c->qp_created = true;

	ret = conn_alloc_buffers(c);
	if (ret)
		return ret;
	c->rx_mr = ibv_reg_mr(c->pd, c->rx, c->rx_len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	if (!c->rx_mr)
		return -errno ? -errno : -EIO;
	c->tx_mr = ibv_reg_mr(c->pd, c->tx, c->tx_len, IBV_ACCESS_LOCAL_WRITE);
	if (!c->tx_mr)
		return -errno ? -errno : -EIO;
	ret = conn_post_recvs(c);
	if (ret)
		return ret;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, c->cc->fd, &ev))
		return -errno;
	return 0;
}

static void priv_fill(struct rconn *c, struct rdma_priv *pd)
{
	memset(pd, 0, sizeof(*pd));
	pd->magic = htole32(RDMA_PRIV_MAGIC);
	pd->version = htole16(RDMA_PRIV_VERSION);
	pd->n_data = htole16(RDMA_N_DATA);
	pd->node_id = htole32(c->t->base.cfg.self);
	pd->slot_size = htole32(c->slot_size);
	pd->data_addr = htole64((uintptr_t)rx_data_slot(c, 0));
	pd->credit_addr = htole64((uintptr_t)rx_credit(c));
	pd->data_rkey = htole32(c->rx_mr->rkey);
	pd->credit_rkey = htole32(c->rx_mr->rkey);
	pd->n_recv = htole32(RDMA_N_RECV);
}

/* Take the peer's ring from its private data; -EPROTO when it is not ours or not sane. */
static int priv_parse(struct rconn *c, const void *data, size_t len, uint32_t *node_id)
{
	struct rdma_priv pd;

	if (!data || len < sizeof(pd))
		return -EPROTO;
	memcpy(&pd, data, sizeof(pd));
	if (le32toh(pd.magic) != RDMA_PRIV_MAGIC || le16toh(pd.version) != RDMA_PRIV_VERSION)
		return -EPROTO;
	c->r_n_data = le16toh(pd.n_data);
	c->r_n_recv = le32toh(pd.n_recv);
	c->r_slot_size = le32toh(pd.slot_size);
	c->r_data_addr = le64toh(pd.data_addr);
	c->r_credit_addr = le64toh(pd.credit_addr);
	c->r_data_rkey = le32toh(pd.data_rkey);
	c->r_credit_rkey = le32toh(pd.credit_rkey);
	if (!c->r_n_data || c->r_n_data > 4096 || !c->r_n_recv || c->r_n_recv > 4096 ||
	    c->r_slot_size < IC_HDR_LEN + IC_TAG_LEN || c->r_slot_size > IC_HDR_LEN + IC_ABS_MAX_FRAME + IC_TAG_LEN + 64)
		return -EPROTO;
	*node_id = le32toh(pd.node_id);
	c->have_remote = true;
	return 0;
}

/* ---- send side ---- */

/* Reclaim what the peer reported consumed; called under tx_lock. */
static void credits(struct rconn *c, uint32_t *recv_free, uint32_t *data_free)
{
	volatile struct rdma_credit *in = rx_credit(c);
	uint64_t rc = in->recv_consumed, dc = in->data_consumed;

	/* a lying peer cannot give us more than we sent */
	if (rc > c->sent_msgs)
		rc = c->sent_msgs;
	if (dc > c->sent_data)
		dc = c->sent_data;
	*recv_free = c->r_n_recv - (uint32_t)(c->sent_msgs - rc);
	*data_free = c->r_n_data - (uint32_t)(c->sent_data - dc);
}

static void conn_mark_broken(struct rconn *c)
{
	c->broken = true;
	atomic_store(&c->t->check_broken, true);
	rtr_wake(&c->t->base);
}

/* Build and post one frame. Called with tx_lock held (and the peer lock, for a published connection). */
static int conn_send_locked(struct rconn *c, uint8_t type, uint16_t flags, const struct iovec *iov, int iovcnt,
			    size_t len)
{
	struct ibv_send_wr wr = { 0 }, *bad;
	struct ibv_sge sge;
	uint32_t recv_free, data_free, slot, dslot = 0;
	bool by_write = len > RDMA_SEND_MAX;
	size_t wire = IC_HDR_LEN + len + ((flags & IC_FLAG_TAGGED) ? IC_TAG_LEN : 0), off = IC_HDR_LEN;
	uint8_t *buf;
	int ret;

	if (c->broken || !c->have_remote)
		return -ENOTCONN;
	if (by_write && wire > c->r_slot_size)
		return -EMSGSIZE;
	if (c->tx_head - c->tx_tail >= RDMA_N_TX)
		return -ENOBUFS;
	credits(c, &recv_free, &data_free);
	if (!recv_free || (by_write && !data_free))
		return -ENOBUFS;
	slot = c->tx_head % RDMA_N_TX;
	buf = tx_slot(c, slot);
	ic_frame_hdr_encode(buf, type, flags, (uint32_t)len, ic_base_epoch(&c->t->base), c->tx_seq);
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len)
			memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	if (flags & IC_FLAG_TAGGED) {
		struct iovec piov = { buf + IC_HDR_LEN, len };

		ret = ic_mac_tag(c->tx_mac, buf, &piov, 1, buf + off);
		if (ret)
			return ret;
	}
	sge.addr = (uintptr_t)buf;
	sge.length = (uint32_t)wire;
	sge.lkey = c->tx_mr->lkey;
	wr.wr_id = WR_TX | slot;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.send_flags = IBV_SEND_SIGNALED;
	if (by_write) {
		dslot = (uint32_t)(c->sent_data % c->r_n_data);
		wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
		wr.imm_data = htonl(dslot);
		wr.wr.rdma.remote_addr = c->r_data_addr + (uint64_t)dslot * c->r_slot_size;
		wr.wr.rdma.rkey = c->r_data_rkey;
	} else {
		wr.opcode = IBV_WR_SEND;
	}
	ret = ibv_post_send(c->id->qp, &wr, &bad);
	if (ret) {
		pr_err("%s: ibv_post_send: %s", c->name, strerror(ret));
		conn_mark_broken(c);
		return -ENOTCONN;
	}
	c->tx_head++;
	c->tx_seq++;
	c->sent_msgs++;
	if (by_write)
		c->sent_data++;
	c->last_tx_ns = clock_now_ns();
	return 0;
}

static int conn_send_ctl(struct rconn *c, uint8_t type, const void *payload, size_t len)
{
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };
	uint16_t flags = c->tx_mac ? IC_FLAG_TAGGED : 0;
	int ret;

	pthread_mutex_lock(&c->tx_lock);
	ret = conn_send_locked(c, type, flags, &iov, len ? 1 : 0, len);
	pthread_mutex_unlock(&c->tx_lock);
	return ret;
}

static void conn_send_close(struct rconn *c, const char *reason)
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

/* Tell the peer what we consumed, by writing our counters into its credit word (I/O thread). */
static void conn_return_credits(struct rconn *c, bool force)
{
	struct ibv_send_wr wr = { 0 }, *bad;
	struct ibv_sge sge;
	struct rdma_credit *out = tx_credit(c);
	int ret;

	if (c->state == C_DEAD || !c->have_remote)
		return;
	pthread_mutex_lock(&c->tx_lock);
	if (c->credit_busy || c->broken ||
	    (c->recv_consumed == c->reported_recv && c->data_consumed == c->reported_data) ||
	    (!force && c->recv_consumed - c->reported_recv < RDMA_CREDIT_BATCH &&
	     c->data_consumed - c->reported_data < RDMA_N_DATA / 2)) {
		pthread_mutex_unlock(&c->tx_lock);
		return;
	}
	out->recv_consumed = c->recv_consumed;
	out->data_consumed = c->data_consumed;
	sge.addr = (uintptr_t)out;
	sge.length = sizeof(*out);
	sge.lkey = c->tx_mr->lkey;
	wr.wr_id = WR_CREDIT;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.opcode = IBV_WR_RDMA_WRITE;
	wr.send_flags = IBV_SEND_SIGNALED;
	wr.wr.rdma.remote_addr = c->r_credit_addr;
	wr.wr.rdma.rkey = c->r_credit_rkey;
	ret = ibv_post_send(c->id->qp, &wr, &bad);
	if (ret) {
		pr_err("%s: credit write: %s", c->name, strerror(ret));
		conn_mark_broken(c);
	} else {
		c->credit_busy = true;
		c->reported_recv = c->recv_consumed;
		c->reported_data = c->data_consumed;
	}
	pthread_mutex_unlock(&c->tx_lock);
}

static int rtr_send(struct ic_transport *it, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		     int iovcnt)
{
	struct rdma_tr *t = to_rdma(it);
	int idx = ic_base_peer_index(it, dst);
	struct rpeer *p;
	size_t len = 0;
	int ret;

	if (idx < 0)
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
	pthread_mutex_lock(&p->conn->tx_lock);
	ret = conn_send_locked(p->conn, type, flags, iov, iovcnt, len);
	pthread_mutex_unlock(&p->conn->tx_lock);
	pthread_mutex_unlock(&p->lock);
	if (!ret) {
		ic_count(&t->ctr.frames_tx, 1);
		ic_count(&t->ctr.bytes_tx, len);
	}
	return ret;
}

/* ---- handshake and receive ---- */

static int conn_start_handshake(struct rconn *c)
{
	struct rdma_tr *t = c->t;
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

static int conn_established(struct rconn *c)
{
	struct rdma_tr *t = c->t;
	struct ic_mac *rx = NULL, *tx = NULL;
	struct rpeer *p;
	int idx, ret;

	idx = ic_base_peer_index(&t->base, ic_hs_peer(c->hs));
	if (idx < 0)
		return -EPERM;
	p = &t->peers[idx];
	ret = ic_conn_macs_create(c->hs, c->dialler, &rx, &tx);
	if (ret)
		return ret;
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
		p->backoff_ms = RDMA_BACKOFF_MIN_MS;
	}
	if (p->conn)
		conn_close(p->conn, "replaced by a newer connection from the peer");
	pthread_mutex_lock(&p->lock);
	pthread_mutex_lock(&c->tx_lock);
	c->tx_mac = tx;
	pthread_mutex_unlock(&c->tx_lock);
	c->state = C_UP;
	c->last_rx_ns = clock_now_ns();
	p->conn = c;
	atomic_store(&p->up, true);
	pthread_mutex_unlock(&p->lock);
	ic_count(&t->ctr.connects, 1);
	pr_info("peer %u up over rdma (%s)", p->id, c->dialler ? "dialled" : "accepted");
	if (t->base.cfg.on_peer)
		t->base.cfg.on_peer(t->base.cfg.opaque, p->id, IC_PEER_UP, "authenticated");
	return 0;
}

static void conn_on_handshake(struct rconn *c, uint8_t type, const uint8_t *payload, size_t len)
{
	struct ic_hs_msg out;
	const char *why = NULL;
	int ret;

	if (!c->hs) {
		conn_proto_error(c, "handshake message before the connection was established");
		return;
	}
	ret = ic_hs_input(c->hs, type, payload, len, &out, &why);
	if (ret < 0) {
		if (ret == -EPROTO) {
			conn_proto_error(c, why ? why : "bad handshake");
		} else {
			if (c->dialler)
				conn_send_close(c, "authentication failed");
			conn_auth_failure(c, why ? why : "handshake refused");
		}
		return;
	}
	if (out.type && conn_send_ctl(c, out.type, out.buf, out.len)) {
		conn_close(c, "send failed during the handshake");
		return;
	}
	if (ret == 1 && conn_established(c))
		conn_close(c, "cannot set up the session");
}

static void conn_on_frame(struct rconn *c, const struct ic_frame_hdr *hdr, const uint8_t *payload)
{
	struct rdma_tr *t = c->t;

	switch (hdr->type) {
	case IC_T_HELLO:
	case IC_T_CHALLENGE:
	case IC_T_AUTH:
		conn_on_handshake(c, hdr->type, payload, hdr->length);
		return;
	case IC_T_HEARTBEAT:
		return;
	case IC_T_CLOSE: {
		IcClose *msg = ic_close__unpack(NULL, hdr->length, payload);
		char why[200];

		snprintf(why, sizeof(why), "peer closed the connection: %s",
			 msg && msg->reason && *msg->reason ? msg->reason : "(no reason)");
		if (msg)
			ic_close__free_unpacked(msg, NULL);
		if (c->state != C_UP)
			conn_auth_failure(c, why);
		else
			conn_close(c, why);
		return;
	}
	default: {
		struct ic_frame f = {
			.type = hdr->type,
			.flags = (uint16_t)(hdr->flags & ~IC_FLAG_TRANSPORT_MASK),
			.epoch = hdr->epoch,
			.seq = hdr->seq,
			.payload = payload,
			.len = hdr->length,
		};

		if (c->state != C_UP || !c->peer) {
			conn_proto_error(c, "data frame before authentication");
			return;
		}
		ic_count(&t->ctr.frames_rx, 1);
		ic_count(&t->ctr.bytes_rx, hdr->length);
		t->delivered++;
		t->base.cfg.on_frame(t->base.cfg.opaque, c->peer->id, &f);
		return;
	}
	}
}

/* Check one received frame (whole, in registered memory) and hand it on. */
static void conn_on_message(struct rconn *c, const uint8_t *buf, size_t len, bool from_write)
{
	struct ic_frame_hdr hdr;
	enum ic_frame_status st;
	size_t total;

	if (from_write) {
		st = ic_frame_decode(buf, len, &c->rules, &hdr, &total);
		if (st == IC_FRAME_NEED_MORE)
			st = IC_FRAME_ERR_TRUNCATED;
	} else {
		st = ic_frame_decode_msg(buf, len, &c->rules, &hdr);
	}
	if (st != IC_FRAME_OK) {
		conn_proto_error(c, ic_frame_strerror(st));
		return;
	}
	if ((hdr.flags & IC_FLAG_TAGGED) &&
	    ic_mac_verify(c->rx_mac, buf, buf + IC_HDR_LEN, hdr.length, buf + IC_HDR_LEN + hdr.length)) {
		conn_auth_failure(c, ic_frame_strerror(IC_FRAME_ERR_MAC));
		return;
	}
	if (from_write && (c->state != C_UP || hdr.type < IC_TYPE_USER_MIN)) {
		conn_proto_error(c, "an RDMA write carried a transport frame");
		return;
	}
	ic_frame_rules_advance(&c->rules);
	c->last_rx_ns = clock_now_ns();
	conn_on_frame(c, &hdr, buf + IC_HDR_LEN);
}

static void conn_on_wc(struct rconn *c, const struct ibv_wc *wc)
{
	uint64_t kind = WR_KIND(wc->wr_id);
	uint32_t i = WR_INDEX(wc->wr_id);

	if (wc->status != IBV_WC_SUCCESS) {
		if (c->state != C_DEAD && wc->status != IBV_WC_WR_FLUSH_ERR)
			pr_warn("%s: work completion failed: %s", c->name, ibv_wc_status_str(wc->status));
		conn_close(c, "RDMA work request failed");
		return;
	}
	if (kind == WR_TX) {
		pthread_mutex_lock(&c->tx_lock);
		c->tx_tail++;
		pthread_mutex_unlock(&c->tx_lock);
		return;
	}
	if (kind == WR_CREDIT) {
		pthread_mutex_lock(&c->tx_lock);
		c->credit_busy = false;
		pthread_mutex_unlock(&c->tx_lock);
		return;
	}
	if (kind != WR_RECV || i >= RDMA_N_RECV || c->state == C_DEAD)
		return;
	if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
		uint32_t slot = ntohl(wc->imm_data);

		if (slot != c->next_data_slot) {
			conn_proto_error(c, "RDMA write into an unexpected data slot");
			return;
		}
		c->next_data_slot = (c->next_data_slot + 1) % RDMA_N_DATA;
		conn_on_message(c, rx_data_slot(c, slot), c->slot_size, true);
		c->data_consumed++;
	} else if (wc->opcode == IBV_WC_RECV) {
		conn_on_message(c, rx_recv_slot(c, i), wc->byte_len, false);
	} else {
		return;
	}
	if (c->state == C_DEAD)
		return;
	if (post_recv(c, i)) {
		conn_close(c, "cannot repost a receive");
		return;
	}
	c->recv_consumed++;
	conn_return_credits(c, false);
}

/* Handle a batch of completions, then return whatever credits are unreported. */
static void conn_on_wcs(struct rconn *c, const struct ibv_wc *wc, int n)
{
	for (int k = 0; k < n && c->state != C_DEAD; k++)
		conn_on_wc(c, &wc[k]);
	if (n > 0 && c->state != C_DEAD)
		conn_return_credits(c, true);
}

static void conn_on_cq(struct rconn *c)
{
	struct ibv_cq *cq;
	void *ctx;
	struct ibv_wc wc[16];
	int n;

	if (ibv_get_cq_event(c->cc, &cq, &ctx))
		return;   /* EAGAIN: nothing yet */
	ibv_ack_cq_events(cq, 1);
	if (ibv_req_notify_cq(cq, 0)) {
		conn_close(c, "cannot re-arm the completion queue");
		return;
	}
	do {
		n = ibv_poll_cq(cq, 16, wc);
		conn_on_wcs(c, wc, n);
	} while (n > 0 && c->state != C_DEAD);
}

/* ---- rdma_cm events ---- */

static int conn_connect(struct rconn *c)
{
	struct rdma_conn_param cp = { 0 };
	struct rdma_priv pd;

	priv_fill(c, &pd);
	cp.private_data = &pd;
	cp.private_data_len = sizeof(pd);
	cp.retry_count = 7;
	cp.rnr_retry_count = 7;
	c->state = C_CONNECTING;
	return rdma_connect(c->id, &cp) ? -errno : 0;
}

static void on_connect_request(struct rdma_tr *t, struct rdma_cm_id *id, const void *priv, size_t priv_len)
{
	struct rdma_conn_param cp = { 0 };
	struct rdma_priv pd;
	struct rconn *c;
	uint32_t node;
	int ret;

	c = conn_new(t, id, false, NULL);
	if (!c) {
		rdma_reject(id, NULL, 0);
		rdma_destroy_id(id);
		return;
	}
	ret = priv_parse(c, priv, priv_len, &node);
	if (ret || !ic_conn_peer_may_dial(&t->base, node)) {
		ic_count(&t->ctr.proto_errors, 1);
		pr_warn("rdma: refusing a connection request (%s)", ret ? "not a rackvm peer" : "node not allowed");
		rdma_reject(id, NULL, 0);
		conn_free(c);
		return;
	}
	ret = conn_setup_verbs(c);
	if (ret) {
		pr_err("rdma: cannot set up an inbound connection: %s", strerror(-ret));
		rdma_reject(id, NULL, 0);
		if (c->cc)
			epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->cc->fd, NULL);
		conn_free(c);
		return;
	}
	priv_fill(c, &pd);
	cp.private_data = &pd;
	cp.private_data_len = sizeof(pd);
	cp.rnr_retry_count = 7;
	c->state = C_CONNECTING;
	c->next = t->pending;
	t->pending = c;
	if (rdma_accept(id, &cp)) {
		pr_err("rdma: rdma_accept: %s", strerror(errno));
		conn_close(c, "accept failed");
		return;
	}
	/* the listener answers the HELLO, which may complete before our ESTABLISHED event: be ready for it now */
	ret = conn_start_handshake(c);
	if (ret)
		conn_close(c, "cannot start the handshake");
}

static void on_cm_event(struct rdma_tr *t, struct rdma_cm_event *ev)
{
	struct rdma_cm_id *id = ev->id;
	enum rdma_cm_event_type type = ev->event;
	int status = ev->status;
	uint8_t priv[256];
	size_t priv_len = 0;
	struct rconn *c;
	uint32_t node;
	int ret;

	if (ev->param.conn.private_data && ev->param.conn.private_data_len) {
		priv_len = ev->param.conn.private_data_len;
		memcpy(priv, ev->param.conn.private_data, priv_len);
	}
	/* ack first: destroying an id waits for its events to be acked */
	rdma_ack_cm_event(ev);

	if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
		on_connect_request(t, id, priv, priv_len);
		return;
	}
	c = id ? id->context : NULL;
	if (!c || c->state == C_DEAD)
		return;
	switch (type) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		if (rdma_resolve_route(id, RDMA_RESOLVE_MS))
			conn_close(c, "cannot resolve the route");
		return;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		ret = conn_setup_verbs(c);
		if (!ret)
			ret = conn_connect(c);
		if (ret) {
			pr_err("%s: cannot connect: %s", c->name, strerror(-ret));
			conn_close(c, "cannot connect");
		}
		return;
	case RDMA_CM_EVENT_ESTABLISHED:
		if (c->dialler) {
			if (priv_parse(c, priv, priv_len, &node) || node != c->peer->id) {
				conn_proto_error(c, "listener sent a bad ring description");
				return;
			}
			if (conn_start_handshake(c))
				conn_close(c, "cannot start the handshake");
		}
		return;
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_CONNECT_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
	case RDMA_CM_EVENT_REJECTED:
		pr_debug("%s: %s (status %d)", c->name, rdma_event_str(type), status);
		conn_close(c, rdma_event_str(type));
		return;
	case RDMA_CM_EVENT_DISCONNECTED:
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		conn_close(c, rdma_event_str(type));
		return;
	default:
		return;
	}
}

static void rtr_on_cm(struct rdma_tr *t)
{
	struct rdma_cm_event *ev;

	while (!rdma_get_cm_event(t->ch, &ev))
		on_cm_event(t, ev);
}

/* ---- dialling, timers ---- */

static void peer_dial(struct rdma_tr *t, struct rpeer *p, uint64_t now)
{
	struct rdma_cm_id *id;
	struct rconn *c;

	if (rdma_create_id(t->ch, &id, NULL, RDMA_PS_TCP)) {
		pr_err("rdma_create_id: %s", strerror(errno));
		peer_schedule_dial(p, now, true);
		return;
	}
	c = conn_new(t, id, true, p);
	if (!c) {
		rdma_destroy_id(id);
		peer_schedule_dial(p, now, true);
		return;
	}
	c->state = C_RESOLVING;
	p->dialing = c;
	if (rdma_resolve_addr(id, NULL, (struct sockaddr *)&p->sa.ss, RDMA_RESOLVE_MS)) {
		pr_debug("peer %u: rdma_resolve_addr: %s", p->id, strerror(errno));
		conn_close(c, "cannot resolve the address");
	}
}

static void conn_check_timers(struct rdma_tr *t, struct rconn *c, uint64_t now)
{
	const struct ic_config *cfg = &t->base.cfg;

	if (c->state == C_UP) {
		if (now - c->last_rx_ns > (uint64_t)cfg->dead_ms * NSEC_PER_MSEC) {
			conn_close(c, "silent for longer than dead_ms");
			return;
		}
		if (now - c->last_tx_ns >= (uint64_t)cfg->heartbeat_ms * NSEC_PER_MSEC)
			conn_send_ctl(c, IC_T_HEARTBEAT, NULL, 0);   /* -ENOBUFS: the peer is behind; dead_ms decides */
	} else if (c->state != C_DEAD && now - c->start_ns > (uint64_t)cfg->dead_ms * NSEC_PER_MSEC +
		   2ULL * RDMA_RESOLVE_MS * NSEC_PER_MSEC) {
		conn_close(c, "connection setup timed out");
	}
}

static void rtr_timers(struct rdma_tr *t, uint64_t now)
{
	struct rconn *c, *next;

	for (size_t i = 0; i < t->n_peers; i++) {
		struct rpeer *p = &t->peers[i];

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

static void rtr_check_broken(struct rdma_tr *t)
{
	if (!atomic_exchange(&t->check_broken, false))
		return;
	for (size_t i = 0; i < t->n_peers; i++) {
		struct rconn *c = t->peers[i].conn;

		if (c && c->broken)
			conn_close(c, "send failed");
	}
}

static void rtr_bury(struct rdma_tr *t)
{
	while (t->graveyard) {
		struct rconn *c = t->graveyard;

		t->graveyard = c->next;
		conn_free(c);
	}
}

static int rtr_poll(struct ic_transport *it, int timeout_ms)
{
	struct rdma_tr *t = to_rdma(it);
	struct epoll_event evs[RDMA_MAX_EVENTS];
	uint64_t now = clock_now_ns();
	int wait = timeout_ms, n;

	t->delivered = 0;
	if (now >= t->timer_due_ns)
		wait = 0;
	else if (timeout_ms < 0 || (uint64_t)timeout_ms * NSEC_PER_MSEC > t->timer_due_ns - now)
		wait = (int)((t->timer_due_ns - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);
	n = epoll_wait(t->epfd, evs, RDMA_MAX_EVENTS, wait);
	if (n < 0 && errno != EINTR)
		return -errno;
	for (int i = 0; i < n; i++) {
		enum ep_kind *kind = evs[i].data.ptr;

		if (*kind == EP_WAKE) {
			uint64_t v;
			ssize_t r = read(t->evfd, &v, sizeof(v));

			(void)r;
		} else if (*kind == EP_CM) {
			rtr_on_cm(t);
		} else {
			struct rconn *c = (struct rconn *)kind;

			if (c->state != C_DEAD)
				conn_on_cq(c);
		}
	}
	rtr_check_broken(t);
	now = clock_now_ns();
	if (now >= t->timer_due_ns) {
		rtr_timers(t, now);
		t->timer_due_ns = now + RDMA_TIMER_NS;
	}
	rtr_bury(t);
	return t->delivered;
}

static bool rtr_peer_is_up(struct ic_transport *it, uint32_t peer)
{
	int idx = ic_base_peer_index(it, peer);

	return idx >= 0 && atomic_load(&to_rdma(it)->peers[idx].up);
}

static void rtr_get_stats(struct ic_transport *it, struct ic_stats *out)
{
	ic_counters_read(&to_rdma(it)->ctr, out);
}

static void rtr_destroy(struct ic_transport *it)
{
	struct rdma_tr *t = to_rdma(it);

	for (size_t i = 0; i < t->n_peers; i++) {
		struct rpeer *p = &t->peers[i];

		if (p->conn) {
			conn_send_close(p->conn, "node shutting down");
			conn_close(p->conn, "transport destroyed");
		}
		if (p->dialing)
			conn_close(p->dialing, "transport destroyed");
	}
	while (t->pending)
		conn_close(t->pending, "transport destroyed");
	rtr_bury(t);
	if (t->listen_id)
		rdma_destroy_id(t->listen_id);
	if (t->ch)
		rdma_destroy_event_channel(t->ch);
	for (size_t i = 0; i < t->n_peers; i++)
		pthread_mutex_destroy(&t->peers[i].lock);
	free(t->peers);
	if (t->evfd >= 0)
		close(t->evfd);
	if (t->epfd >= 0)
		close(t->epfd);
	ic_base_fini(&t->base);
	free(t);
}

/* Is there an RDMA device at all? Without one librdmacm can only fail later and less clearly. */
static int rtr_device_check(void)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);

	if (list)
		ibv_free_device_list(list);
	if (!list || n <= 0) {
		pr_err("rdma: no RDMA device (ibv_get_device_list found none); use the tcp transport, or load a "
		       "soft-RoCE device (rdma link add rxe0 type rxe netdev <if>) where the kernel has it");
		return -ENODEV;
	}
	return 0;
}

static int rtr_listen_on(struct rdma_tr *t, const char *addr)
{
	struct ic_sockaddr sa;
	int ret = ic_addr_parse(addr, &sa);

	if (ret)
		return ret;
	if (rdma_create_id(t->ch, &t->listen_id, NULL, RDMA_PS_TCP))
		return -errno;
	if (rdma_bind_addr(t->listen_id, (struct sockaddr *)&sa.ss) || rdma_listen(t->listen_id, 64)) {
		ret = -errno;
		pr_err("rdma: cannot listen on %s: %s", addr, strerror(errno));
		return ret;
	}
	return 0;
}

static int rtr_create(const struct ic_config *cfg, struct ic_transport **out)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct ic_sockaddr listen_sa;
	struct rdma_tr *t;
	int ret;

	/* configuration first, so a bad one is reported as such even where there is no device */
	if (cfg->listen && ic_addr_parse(cfg->listen, &listen_sa))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->epfd = t->evfd = -1;
	ret = ic_base_init(&t->base, &rdma_ops, cfg);
	if (ret)
		goto out_free;
	t->n_peers = cfg->n_peers;
	t->peers = calloc(cfg->n_peers ? cfg->n_peers : 1, sizeof(*t->peers));
	if (!t->peers) {
		ret = -ENOMEM;
		goto out_fini;
	}
	for (size_t i = 0; i < cfg->n_peers; i++)
		pthread_mutex_init(&t->peers[i].lock, NULL);
	for (size_t i = 0; i < cfg->n_peers; i++) {
		struct rpeer *p = &t->peers[i];

		p->id = cfg->peers[i].id;
		p->we_dial = cfg->self < p->id;
		p->backoff_ms = RDMA_BACKOFF_MIN_MS;
		if (ic_addr_parse(cfg->peers[i].addr, &p->sa)) {
			ret = -EINVAL;
			goto out_destroy;
		}
	}
	ret = rtr_device_check();
	if (ret)
		goto out_destroy;
	t->ch = rdma_create_event_channel();
	if (!t->ch) {
		ret = -errno;
		pr_err("rdma: rdma_create_event_channel: %s", strerror(errno));
		goto out_destroy;
	}
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (t->epfd < 0 || t->evfd < 0 || set_nonblock(t->ch->fd)) {
		ret = -errno;
		goto out_destroy;
	}
	t->cm_tag = EP_CM;
	t->wake_tag = EP_WAKE;
	ev.data.ptr = &t->cm_tag;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->ch->fd, &ev)) {
		ret = -errno;
		goto out_destroy;
	}
	ev.data.ptr = &t->wake_tag;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->evfd, &ev)) {
		ret = -errno;
		goto out_destroy;
	}
	if (cfg->listen) {
		ret = rtr_listen_on(t, cfg->listen);
		if (ret)
			goto out_destroy;
	}
	*out = &t->base;
	return 0;

out_destroy:
	rtr_destroy(&t->base);
	return ret;
out_fini:
	ic_base_fini(&t->base);
out_free:
	free(t);
	return ret;
}

static struct ic_transport_ops rdma_ops = {
	.name = "rdma",
	.create = rtr_create,
	.destroy = rtr_destroy,
	.send = rtr_send,
	.poll = rtr_poll,
	.wake = rtr_wake,
	.peer_is_up = rtr_peer_is_up,
	.get_stats = rtr_get_stats,
};
IC_TRANSPORT_REGISTER(rdma_ops)
