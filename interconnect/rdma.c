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
#include "interconnect/conn.h"
#include "interconnect/frame_codec.h"
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

struct rdma_tr;

/* A connection: the shared life cycle (c, first) and its queue pair, buffers and credits. SETUP covers address
 * and route resolution and rdma_connect/rdma_accept. */
struct rconn {
	struct ic_conn c;
	enum ep_kind kind;               /* EP_CQ: the epoll data of the completion channel points here */
	struct rdma_cm_id *id;

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
	uint64_t recv_consumed, data_consumed;
	uint32_t next_data_slot;

	/* send side: owned as c's send side (conn.h); the I/O thread's completion and credit bookkeeping too */
	uint64_t sent_msgs, sent_data;   /* messages / data frames posted (against the peer's credits) */
	uint32_t tx_head, tx_tail;       /* send slots posted / completed */
	uint64_t reported_recv, reported_data;
	bool credit_busy;                /* a credit write is in flight */
};

struct rdma_tr {
	struct ic_conn_set cs;           /* first: the transport base and the connection life cycle */
	int epfd, evfd;
	enum ep_kind cm_tag, wake_tag;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *listen_id;
	uint64_t timer_due_ns;
};

static struct ic_transport_ops rdma_ops;
static const struct ic_conn_ops rdma_conn_ops;

static inline struct rdma_tr *to_rdma(struct ic_transport *t)
{
	return (struct rdma_tr *)t;
}

static inline struct rconn *to_rconn(struct ic_conn *c)
{
	return (struct rconn *)c;
}

static inline struct rdma_tr *rconn_tr(struct rconn *rc)
{
	return (struct rdma_tr *)rc->c.set;
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

static uint8_t *rx_recv_slot(struct rconn *rc, uint32_t i)
{
	return rc->rx + (size_t)i * RDMA_RECV_SLOT;
}

static uint8_t *rx_data_slot(struct rconn *rc, uint32_t i)
{
	return rc->rx + (size_t)RDMA_N_RECV * RDMA_RECV_SLOT + (size_t)i * rc->slot_size;
}

static volatile struct rdma_credit *rx_credit(struct rconn *rc)
{
	return (volatile struct rdma_credit *)(rc->rx + rc->rx_len - sizeof(struct rdma_credit));
}

static uint8_t *tx_slot(struct rconn *rc, uint32_t i)
{
	return rc->tx + (size_t)i * rc->slot_size;
}

static struct rdma_credit *tx_credit(struct rconn *rc)
{
	return (struct rdma_credit *)(rc->tx + rc->tx_len - sizeof(struct rdma_credit));
}

/* ---- connection objects ---- */

static struct rconn *conn_new(struct rdma_tr *t, struct rdma_cm_id *id, bool dialler, struct ic_conn_peer *peer)
{
	struct rconn *rc = calloc(1, sizeof(*rc));

	if (!rc)
		return NULL;
	ic_conn_init(&rc->c, &t->cs, dialler, peer);
	rc->kind = EP_CQ;
	rc->id = id;
	rc->slot_size = (uint32_t)((IC_HDR_LEN + t->cs.base.cfg.max_frame + IC_TAG_LEN + 63) & ~63u);
	if (id)
		id->context = rc;
	return rc;
}

/* Release verbs resources and the cm id (conn.h's free). The id's events must all have been acked. */
static void rconn_free(struct ic_conn *c)
{
	struct rconn *rc = to_rconn(c);

	if (rc->qp_created)
		rdma_destroy_qp(rc->id);
	if (rc->rx_mr)
		ibv_dereg_mr(rc->rx_mr);
	if (rc->tx_mr)
		ibv_dereg_mr(rc->tx_mr);
	if (rc->cq)
		ibv_destroy_cq(rc->cq);
	if (rc->cc)
		ibv_destroy_comp_channel(rc->cc);
	if (rc->pd)
		ibv_dealloc_pd(rc->pd);
	if (rc->id)
		rdma_destroy_id(rc->id);
	free(rc->rx);
	free(rc->tx);
	ic_conn_release(c);
	free(rc);
}

/* conn.h's detach: no more completion events; disconnect the queue pair (its peer sees DISCONNECTED). */
static void rconn_detach(struct ic_conn *c)
{
	struct rconn *rc = to_rconn(c);

	if (rc->cc && rconn_tr(rc)->epfd >= 0)
		epoll_ctl(rconn_tr(rc)->epfd, EPOLL_CTL_DEL, rc->cc->fd, NULL);
	if (rc->id && rc->qp_created)
		rdma_disconnect(rc->id);
}

/* ---- verbs resources ---- */

static int post_recv(struct rconn *rc, uint32_t i)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)rx_recv_slot(rc, i),
		.length = RDMA_RECV_SLOT,
		.lkey = rc->rx_mr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = WR_RECV | i, .sg_list = &sge, .num_sge = 1 }, *bad;

	return -ibv_post_recv(rc->id->qp, &wr, &bad);
}

/* The rx and tx regions of the layout at the top of this file (zeroed, page-aligned, not yet registered). */
static int conn_alloc_buffers(struct rconn *rc)
{
	rc->rx_len = (size_t)RDMA_N_RECV * RDMA_RECV_SLOT + (size_t)RDMA_N_DATA * rc->slot_size +
		     sizeof(struct rdma_credit);
	rc->tx_len = (size_t)RDMA_N_TX * rc->slot_size + sizeof(struct rdma_credit);
	if (posix_memalign((void **)&rc->rx, 4096, rc->rx_len) || posix_memalign((void **)&rc->tx, 4096, rc->tx_len))
		return -ENOMEM;
	memset(rc->rx, 0, rc->rx_len);
	memset(rc->tx, 0, rc->tx_len);
	return 0;
}

static int conn_post_recvs(struct rconn *rc)
{
	for (uint32_t i = 0; i < RDMA_N_RECV; i++) {
		int ret = post_recv(rc, i);

		if (ret)
			return ret;
	}
	return 0;
}

static int conn_setup_verbs(struct rconn *rc)
{
	struct rdma_tr *t = rconn_tr(rc);
	struct ibv_qp_init_attr qa = { 0 };
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &rc->kind };
	int cq_size = (int)(RDMA_N_RECV + RDMA_N_TX + 4);
	int ret;

	rc->pd = ibv_alloc_pd(rc->id->verbs);
	if (!rc->pd)
		return -ENOMEM;
	rc->cc = ibv_create_comp_channel(rc->id->verbs);
	if (!rc->cc)
		return -errno ? -errno : -ENOMEM;
	ret = set_nonblock(rc->cc->fd);
	if (ret)
		return ret;
	rc->cq = ibv_create_cq(rc->id->verbs, cq_size, rc, rc->cc, 0);
	if (!rc->cq)
		return -errno ? -errno : -ENOMEM;
	if (ibv_req_notify_cq(rc->cq, 0))
		return -EIO;

	qa.send_cq = rc->cq;
	qa.recv_cq = rc->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = RDMA_N_TX + 2;    /* + the credit write */
	qa.cap.max_recv_wr = RDMA_N_RECV;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(rc->id, rc->pd, &qa))
		return -errno ? -errno : -EIO;
	rc->qp_created = true;

	ret = conn_alloc_buffers(rc);
	if (ret)
		return ret;
	rc->rx_mr = ibv_reg_mr(rc->pd, rc->rx, rc->rx_len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	if (!rc->rx_mr)
		return -errno ? -errno : -EIO;
	rc->tx_mr = ibv_reg_mr(rc->pd, rc->tx, rc->tx_len, IBV_ACCESS_LOCAL_WRITE);
	if (!rc->tx_mr)
		return -errno ? -errno : -EIO;
	ret = conn_post_recvs(rc);
	if (ret)
		return ret;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, rc->cc->fd, &ev))
		return -errno;
	return 0;
}

static void priv_fill(struct rconn *rc, struct rdma_priv *pd)
{
	memset(pd, 0, sizeof(*pd));
	pd->magic = htole32(RDMA_PRIV_MAGIC);
	pd->version = htole16(RDMA_PRIV_VERSION);
	pd->n_data = htole16(RDMA_N_DATA);
	pd->node_id = htole32(rc->c.set->base.cfg.self);
	pd->slot_size = htole32(rc->slot_size);
	pd->data_addr = htole64((uintptr_t)rx_data_slot(rc, 0));
	pd->credit_addr = htole64((uintptr_t)rx_credit(rc));
	pd->data_rkey = htole32(rc->rx_mr->rkey);
	pd->credit_rkey = htole32(rc->rx_mr->rkey);
	pd->n_recv = htole32(RDMA_N_RECV);
}

/* Take the peer's ring from its private data; -EPROTO when it is not ours or not sane. */
static int priv_parse(struct rconn *rc, const void *data, size_t len, uint32_t *node_id)
{
	struct rdma_priv pd;

	if (!data || len < sizeof(pd))
		return -EPROTO;
	memcpy(&pd, data, sizeof(pd));
	if (le32toh(pd.magic) != RDMA_PRIV_MAGIC || le16toh(pd.version) != RDMA_PRIV_VERSION)
		return -EPROTO;
	rc->r_n_data = le16toh(pd.n_data);
	rc->r_n_recv = le32toh(pd.n_recv);
	rc->r_slot_size = le32toh(pd.slot_size);
	rc->r_data_addr = le64toh(pd.data_addr);
	rc->r_credit_addr = le64toh(pd.credit_addr);
	rc->r_data_rkey = le32toh(pd.data_rkey);
	rc->r_credit_rkey = le32toh(pd.credit_rkey);
	if (!rc->r_n_data || rc->r_n_data > 4096 || !rc->r_n_recv || rc->r_n_recv > 4096 ||
	    rc->r_slot_size < IC_HDR_LEN + IC_TAG_LEN ||
	    rc->r_slot_size > IC_HDR_LEN + IC_ABS_MAX_FRAME + IC_TAG_LEN + 64)
		return -EPROTO;
	*node_id = le32toh(pd.node_id);
	rc->have_remote = true;
	return 0;
}

/* ---- send side ---- */

/* Reclaim what the peer reported consumed; called with the send side owned. */
static void credits(struct rconn *rc, uint32_t *recv_free, uint32_t *data_free)
{
	volatile struct rdma_credit *in = rx_credit(rc);
	uint64_t rcv = in->recv_consumed, dc = in->data_consumed;

	/* a lying peer cannot give us more than we sent */
	if (rcv > rc->sent_msgs)
		rcv = rc->sent_msgs;
	if (dc > rc->sent_data)
		dc = rc->sent_data;
	*recv_free = rc->r_n_recv - (uint32_t)(rc->sent_msgs - rcv);
	*data_free = rc->r_n_data - (uint32_t)(rc->sent_data - dc);
}

/* Build and post one frame (conn.h's send_locked). */
static int rconn_send_locked(struct ic_conn *c, uint8_t type, uint16_t flags, const struct iovec *iov, int iovcnt,
			     size_t len)
{
	struct rconn *rc = to_rconn(c);
	struct ibv_send_wr wr = { 0 }, *bad;
	struct ibv_sge sge;
	uint32_t recv_free, data_free, slot, dslot = 0;
	bool by_write = len > RDMA_SEND_MAX;
	size_t wire = IC_HDR_LEN + len + ((flags & IC_FLAG_TAGGED) ? IC_TAG_LEN : 0), off = IC_HDR_LEN;
	uint8_t *buf;
	int ret;

	if (!rc->have_remote)
		return -ENOTCONN;
	if (by_write && wire > rc->r_slot_size)
		return -EMSGSIZE;
	if (rc->tx_head - rc->tx_tail >= RDMA_N_TX)
		return -ENOBUFS;
	credits(rc, &recv_free, &data_free);
	if (!recv_free || (by_write && !data_free))
		return -ENOBUFS;
	slot = rc->tx_head % RDMA_N_TX;
	buf = tx_slot(rc, slot);
	ic_frame_hdr_encode(buf, type, flags, (uint32_t)len, ic_base_epoch(&c->set->base), c->tx_seq);
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
	sge.lkey = rc->tx_mr->lkey;
	wr.wr_id = WR_TX | slot;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.send_flags = IBV_SEND_SIGNALED;
	if (by_write) {
		dslot = (uint32_t)(rc->sent_data % rc->r_n_data);
		wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
		wr.imm_data = htonl(dslot);
		wr.wr.rdma.remote_addr = rc->r_data_addr + (uint64_t)dslot * rc->r_slot_size;
		wr.wr.rdma.rkey = rc->r_data_rkey;
	} else {
		wr.opcode = IBV_WR_SEND;
	}
	ret = ibv_post_send(rc->id->qp, &wr, &bad);
	if (ret) {
		pr_err("%s: ibv_post_send: %s", c->name, strerror(ret));
		ic_conn_mark_broken(c);
		return -ENOTCONN;
	}
	rc->tx_head++;
	c->tx_seq++;
	rc->sent_msgs++;
	if (by_write)
		rc->sent_data++;
	c->tx_active = true;
	return 0;
}

/* Tell the peer what we consumed, by writing our counters into its credit word (I/O thread). */
static void conn_return_credits(struct rconn *rc, bool force)
{
	struct ic_conn *c = &rc->c;
	struct ibv_send_wr wr = { 0 }, *bad;
	struct ibv_sge sge;
	struct rdma_credit *out = tx_credit(rc);
	int ret;

	if (c->state == IC_CONN_DEAD || !rc->have_remote)
		return;
	ic_conn_lock(c);
	if (rc->credit_busy || c->tx_broken ||
	    (rc->recv_consumed == rc->reported_recv && rc->data_consumed == rc->reported_data) ||
	    (!force && rc->recv_consumed - rc->reported_recv < RDMA_CREDIT_BATCH &&
	     rc->data_consumed - rc->reported_data < RDMA_N_DATA / 2)) {
		ic_conn_unlock(c);
		return;
	}
	out->recv_consumed = rc->recv_consumed;
	out->data_consumed = rc->data_consumed;
	sge.addr = (uintptr_t)out;
	sge.length = sizeof(*out);
	sge.lkey = rc->tx_mr->lkey;
	wr.wr_id = WR_CREDIT;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.opcode = IBV_WR_RDMA_WRITE;
	wr.send_flags = IBV_SEND_SIGNALED;
	wr.wr.rdma.remote_addr = rc->r_credit_addr;
	wr.wr.rdma.rkey = rc->r_credit_rkey;
	ret = ibv_post_send(rc->id->qp, &wr, &bad);
	if (ret) {
		pr_err("%s: credit write: %s", c->name, strerror(ret));
		ic_conn_mark_broken(c);
	} else {
		rc->credit_busy = true;
		rc->reported_recv = rc->recv_consumed;
		rc->reported_data = rc->data_consumed;
	}
	ic_conn_unlock(c);
}

/* ---- receive ---- */

/* Check one received frame (whole, in registered memory) and hand it on. */
static void conn_on_message(struct rconn *rc, const uint8_t *buf, size_t len, bool from_write)
{
	struct ic_conn *c = &rc->c;
	struct ic_frame_hdr hdr;
	enum ic_frame_status st;
	size_t total;

	/* a SEND is exactly one frame; a data slot holds one frame and whatever the slot held before after it */
	st = ic_frame_receive(c->name, buf, len, !from_write, &c->rules, c->rx_mac, &hdr, &total);
	if (st == IC_FRAME_NEED_MORE) {
		ic_conn_proto_error(c, "a frame longer than its data slot");
		return;
	}
	if (st != IC_FRAME_OK) {
		ic_conn_frame_error(c, st);
		return;
	}
	if (from_write && (c->state != IC_CONN_UP || hdr.type < IC_TYPE_USER_MIN)) {
		ic_conn_proto_error(c, "an RDMA write carried a transport frame");
		return;
	}
	ic_conn_on_frame(c, &hdr, buf + IC_HDR_LEN);
}

static void conn_on_wc(struct rconn *rc, const struct ibv_wc *wc)
{
	struct ic_conn *c = &rc->c;
	uint64_t kind = WR_KIND(wc->wr_id);
	uint32_t i = WR_INDEX(wc->wr_id);

	if (wc->status != IBV_WC_SUCCESS) {
		if (c->state != IC_CONN_DEAD && wc->status != IBV_WC_WR_FLUSH_ERR)
			pr_warn("%s: work completion failed: %s", c->name, ibv_wc_status_str(wc->status));
		ic_conn_close(c, "RDMA work request failed");
		return;
	}
	if (kind == WR_TX) {
		ic_conn_lock(c);
		rc->tx_tail++;
		ic_conn_unlock(c);
		return;
	}
	if (kind == WR_CREDIT) {
		ic_conn_lock(c);
		rc->credit_busy = false;
		ic_conn_unlock(c);
		return;
	}
	if (kind != WR_RECV || i >= RDMA_N_RECV || c->state == IC_CONN_DEAD)
		return;
	if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
		uint32_t slot = ntohl(wc->imm_data);

		if (slot != rc->next_data_slot) {
			ic_conn_proto_error(c, "RDMA write into an unexpected data slot");
			return;
		}
		rc->next_data_slot = (rc->next_data_slot + 1) % RDMA_N_DATA;
		conn_on_message(rc, rx_data_slot(rc, slot), rc->slot_size, true);
		rc->data_consumed++;
	} else if (wc->opcode == IBV_WC_RECV) {
		conn_on_message(rc, rx_recv_slot(rc, i), wc->byte_len, false);
	} else {
		return;
	}
	if (c->state == IC_CONN_DEAD)
		return;
	if (post_recv(rc, i)) {
		ic_conn_close(c, "cannot repost a receive");
		return;
	}
	rc->recv_consumed++;
	conn_return_credits(rc, false);
}

/* Handle a batch of completions (their frames are stamped with one clock read: cs.now_ns), then return whatever
 * credits are unreported. */
static void conn_on_wcs(struct rconn *rc, const struct ibv_wc *wc, int n)
{
	rc->c.set->now_ns = clock_now_ns();
	for (int k = 0; k < n && rc->c.state != IC_CONN_DEAD; k++)
		conn_on_wc(rc, &wc[k]);
	if (n > 0 && rc->c.state != IC_CONN_DEAD)
		conn_return_credits(rc, true);
}

static void conn_on_cq(struct rconn *rc)
{
	struct ibv_cq *cq;
	void *ctx;
	struct ibv_wc wc[16];
	int n;

	if (ibv_get_cq_event(rc->cc, &cq, &ctx))
		return;   /* EAGAIN: nothing yet */
	ibv_ack_cq_events(cq, 1);
	if (ibv_req_notify_cq(cq, 0)) {
		ic_conn_close(&rc->c, "cannot re-arm the completion queue");
		return;
	}
	do {
		n = ibv_poll_cq(cq, 16, wc);
		conn_on_wcs(rc, wc, n);
	} while (n > 0 && rc->c.state != IC_CONN_DEAD);
}

/* ---- rdma_cm events ---- */

static int conn_connect(struct rconn *rc)
{
	struct rdma_conn_param cp = { 0 };
	struct rdma_priv pd;

	priv_fill(rc, &pd);
	cp.private_data = &pd;
	cp.private_data_len = sizeof(pd);
	cp.retry_count = 7;
	cp.rnr_retry_count = 7;
	return rdma_connect(rc->id, &cp) ? -errno : 0;
}

static void on_connect_request(struct rdma_tr *t, struct rdma_cm_id *id, const void *priv, size_t priv_len)
{
	struct rdma_conn_param cp = { 0 };
	struct rdma_priv pd;
	struct rconn *rc;
	uint32_t node;
	int ret;

	if (!ic_conn_may_accept(&t->cs, "an inbound connection request")) {
		rdma_reject(id, NULL, 0);
		rdma_destroy_id(id);
		return;
	}
	rc = conn_new(t, id, false, NULL);
	if (!rc) {
		rdma_reject(id, NULL, 0);
		rdma_destroy_id(id);
		return;
	}
	ret = priv_parse(rc, priv, priv_len, &node);
	if (ret || !ic_conn_peer_may_dial(&t->cs.base, node)) {
		ic_count(&t->cs.ctr.proto_errors, 1);
		pr_warn("rdma: refusing a connection request (%s)", ret ? "not a rackvm peer" : "node not allowed");
		rdma_reject(id, NULL, 0);
		rconn_free(&rc->c);
		return;
	}
	ret = conn_setup_verbs(rc);
	if (ret) {
		pr_err("rdma: cannot set up an inbound connection: %s", strerror(-ret));
		rdma_reject(id, NULL, 0);
		if (rc->cc)
			epoll_ctl(t->epfd, EPOLL_CTL_DEL, rc->cc->fd, NULL);
		rconn_free(&rc->c);
		return;
	}
	priv_fill(rc, &pd);
	cp.private_data = &pd;
	cp.private_data_len = sizeof(pd);
	cp.rnr_retry_count = 7;
	ic_conn_pending_add(&t->cs, &rc->c);
	if (rdma_accept(id, &cp)) {
		pr_err("rdma: rdma_accept: %s", strerror(errno));
		ic_conn_close(&rc->c, "accept failed");
		return;
	}
	/* the listener answers the HELLO, which may complete before our ESTABLISHED event: be ready for it now */
	if (ic_conn_start_handshake(&rc->c))
		ic_conn_close(&rc->c, "cannot start the handshake");
}

static void on_cm_event(struct rdma_tr *t, struct rdma_cm_event *ev)
{
	struct rdma_cm_id *id = ev->id;
	enum rdma_cm_event_type type = ev->event;
	int status = ev->status;
	uint8_t priv[256];
	size_t priv_len = 0;
	struct rconn *rc;
	uint32_t node;
	int ret;

	if (ev->param.conn.private_data && ev->param.conn.private_data_len) {
		priv_len = ev->param.conn.private_data_len;
		if (priv_len > sizeof(priv))
			priv_len = sizeof(priv);
		memcpy(priv, ev->param.conn.private_data, priv_len);
	}
	/* ack first: destroying an id waits for its events to be acked */
	rdma_ack_cm_event(ev);

	if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
		on_connect_request(t, id, priv, priv_len);
		return;
	}
	rc = id ? id->context : NULL;
	if (!rc || rc->c.state == IC_CONN_DEAD)
		return;
	switch (type) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		if (rdma_resolve_route(id, RDMA_RESOLVE_MS))
			ic_conn_close(&rc->c, "cannot resolve the route");
		return;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		ret = conn_setup_verbs(rc);
		if (!ret)
			ret = conn_connect(rc);
		if (ret) {
			pr_err("%s: cannot connect: %s", rc->c.name, strerror(-ret));
			ic_conn_close(&rc->c, "cannot connect");
		}
		return;
	case RDMA_CM_EVENT_ESTABLISHED:
		if (rc->c.dialler) {
			if (priv_parse(rc, priv, priv_len, &node) || node != rc->c.peer->id) {
				ic_conn_proto_error(&rc->c, "listener sent a bad ring description");
				return;
			}
			if (ic_conn_start_handshake(&rc->c))
				ic_conn_close(&rc->c, "cannot start the handshake");
		}
		return;
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
	case RDMA_CM_EVENT_CONNECT_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
	case RDMA_CM_EVENT_REJECTED:
		pr_debug("%s: %s (status %d)", rc->c.name, rdma_event_str(type), status);
		ic_conn_close(&rc->c, rdma_event_str(type));
		return;
	case RDMA_CM_EVENT_DISCONNECTED:
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		ic_conn_close(&rc->c, rdma_event_str(type));
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

/* ---- dialling, polling ---- */

static void rtr_dial(struct ic_conn_set *s, struct ic_conn_peer *p, uint64_t now)
{
	struct rdma_tr *t = (struct rdma_tr *)s;
	struct rdma_cm_id *id;
	struct rconn *rc;

	if (rdma_create_id(t->ch, &id, NULL, RDMA_PS_TCP)) {
		pr_err("rdma_create_id: %s", strerror(errno));
		ic_conn_dial_failed(p, now);
		return;
	}
	rc = conn_new(t, id, true, p);
	if (!rc) {
		rdma_destroy_id(id);
		ic_conn_dial_failed(p, now);
		return;
	}
	p->dialing = &rc->c;
	if (rdma_resolve_addr(id, NULL, (struct sockaddr *)&p->sa.ss, RDMA_RESOLVE_MS)) {
		pr_debug("peer %u: rdma_resolve_addr: %s", p->id, strerror(errno));
		ic_conn_close(&rc->c, "cannot resolve the address");
	}
}

static int rtr_poll(struct ic_transport *it, int timeout_ms)
{
	struct rdma_tr *t = to_rdma(it);
	struct epoll_event evs[RDMA_MAX_EVENTS];
	uint64_t now = clock_now_ns();
	int wait = timeout_ms, n;

	t->cs.delivered = 0;
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
			struct rconn *rc = (struct rconn *)((char *)kind - offsetof(struct rconn, kind));

			if (rc->c.state != IC_CONN_DEAD)
				conn_on_cq(rc);
		}
	}
	ic_conn_check_broken(&t->cs);
	now = clock_now_ns();
	if (now >= t->timer_due_ns) {
		ic_conn_timers(&t->cs, now);
		t->timer_due_ns = now + RDMA_TIMER_NS;
	}
	ic_conn_bury(&t->cs);
	return t->cs.delivered;
}

/* ---- create / destroy ---- */

static void rtr_destroy(struct ic_transport *it)
{
	struct rdma_tr *t = to_rdma(it);

	/* every connection's id goes before the event channel */
	ic_conn_set_fini(&t->cs, "node shutting down");
	if (t->listen_id)
		rdma_destroy_id(t->listen_id);
	if (t->ch)
		rdma_destroy_event_channel(t->ch);
	if (t->evfd >= 0)
		close(t->evfd);
	if (t->epfd >= 0)
		close(t->epfd);
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
	ret = ic_conn_set_init(&t->cs, &rdma_ops, &rdma_conn_ops, cfg);
	if (ret) {
		free(t);
		return ret;
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
	*out = &t->cs.base;
	return 0;

out_destroy:
	rtr_destroy(&t->cs.base);
	return ret;
}

static const struct ic_conn_ops rdma_conn_ops = {
	.medium = "rdma",
	.setup_extra_ns = 2ULL * RDMA_RESOLVE_MS * NSEC_PER_MSEC,   /* address and route resolution */
	.send_locked = rconn_send_locked,
	.detach = rconn_detach,
	.free = rconn_free,
	.dial = rtr_dial,
};

static struct ic_transport_ops rdma_ops = {
	.name = "rdma",
	.create = rtr_create,
	.destroy = rtr_destroy,
	.send = ic_conn_send,
	.poll = rtr_poll,
	.wake = rtr_wake,
	.peer_is_up = ic_conn_peer_is_up,
	.get_stats = ic_conn_get_stats,
};
IC_TRANSPORT_REGISTER(rdma_ops)
