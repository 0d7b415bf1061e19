/* SPDX-License-Identifier: MIT */
/*
 * Tests of the rdma transport.
 *
 * Without hardware (always): creating it on a machine with no RDMA device fails cleanly (-ENODEV, an error line,
 * nothing leaked — run under ASan), bad configurations are refused, and the parts that judge what a peer sends
 * are driven directly (this file includes rdma.c to reach them): the rdma_cm private data parser, the credit
 * arithmetic (a lying peer cannot inflate credits), garbage messages, writes into the wrong data slot and failed
 * work completions close the connection and are counted; and the whole data path (handshake, SEND and RDMA WRITE
 * WITH IMMEDIATE, data-slot ring, credit returns, MAC) runs over a software model of an RC queue pair.
 * With a device: two endpoints over RACKVM_RDMA_ADDR (default 127.0.0.1) exchange 64 B (SEND) and 4 KiB (RDMA
 * WRITE WITH IMMEDIATE) frames in order, and a node with the wrong key is refused. Without one these print
 * "SKIP: ..." and skip.
 * In a build without libibverbs/librdmacm, the stub's clear error is checked instead.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "interconnect/ic.h"
#include "util/clock.h"
#include "util/log.h"

#include "config.h"     /* $(BUILD)/gen: RACKVM_HAVE_RDMA, probed by the Makefile */

static const uint8_t key_a[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t key_b[32] = "fedcba9876543210fedcba9876543210";

static void on_frame_ignore(void *opaque, uint32_t src, const struct ic_frame *f)
{
}

#if RACKVM_HAVE_RDMA

#include "interconnect/rdma.c"

#define T_DATA 0x20
#define SKIP_NO_DEVICE "SKIP: no RDMA device (ibv_get_device_list found none; soft-RoCE is not available in this kernel)"

static int device_count(void)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);

	if (!list)
		return 0;
	ibv_free_device_list(list);
	return n;
}

static void test_create_without_device(void **state)
{
	struct ic_peer_addr peer = { .id = 1, .addr = "127.0.0.1:18515" };
	struct ic_config cfg = { .self = 0, .listen = "127.0.0.1:18514", .peers = &peer, .n_peers = 1,
				 .key = key_a, .key_len = 32, .on_frame = on_frame_ignore };
	struct ic_transport *t = (void *)1;
	unsigned long errs;

	if (device_count() > 0) {
		print_message("SKIP: an RDMA device exists, so the no-device path cannot be exercised here\n");
		skip();
	}
	log_set_quiet(true);
	errs = log_error_count();
	assert_int_equal(ic_create("rdma", &cfg, &t), -ENODEV);
	assert_null(t);
	assert_true(log_error_count() > errs);   /* and the line says why */
	log_set_quiet(false);
}

static void test_bad_config(void **state)
{
	struct ic_peer_addr peer = { .id = 1, .addr = "127.0.0.1:18515" };
	struct ic_config cfg = { .self = 0, .listen = "not an address", .peers = &peer, .n_peers = 1,
				 .key = key_a, .key_len = 32, .on_frame = on_frame_ignore };
	struct ic_transport *t;

	log_set_quiet(true);
	assert_int_equal(ic_create("rdma", &cfg, &t), -EINVAL);
	cfg.listen = NULL;
	snprintf(peer.addr, sizeof(peer.addr), "nohost-port");
	assert_int_equal(ic_create("rdma", &cfg, &t), -EINVAL);
	log_set_quiet(false);
}

/* A transport and a connection with no verbs resources: enough to drive the receive-side checks. */
static struct rdma_tr *fake_transport(void)
{
	struct rdma_tr *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->cs.base.ops = &rdma_ops;
	t->cs.ops = &rdma_conn_ops;
	t->cs.base.cfg.max_frame = 4096;
	t->cs.base.cfg.self = 1;
	ic_accept_type(&t->cs.base.cfg, T_DATA);
	t->epfd = t->evfd = -1;
	return t;
}

static void test_priv_parse(void **state)
{
	struct rdma_tr *t = fake_transport();
	struct rconn *c = conn_new(t, NULL, false, NULL);
	struct rdma_priv pd = {
		.magic = htole32(RDMA_PRIV_MAGIC),
		.version = htole16(RDMA_PRIV_VERSION),
		.n_data = htole16(16),
		.node_id = htole32(3),
		.slot_size = htole32(4160),
		.data_addr = htole64(0x1000),
		.credit_addr = htole64(0x2000),
		.data_rkey = htole32(7),
		.credit_rkey = htole32(8),
		.n_recv = htole32(64),
	};
	struct rdma_priv bad;
	uint32_t node = 0;

	assert_non_null(c);
	assert_int_equal(priv_parse(c, &pd, sizeof(pd), &node), 0);
	assert_int_equal(node, 3);
	assert_int_equal(c->r_n_data, 16);
	assert_int_equal(c->r_slot_size, 4160);
	assert_int_equal(c->r_data_rkey, 7);
	assert_true(c->r_credit_addr == 0x2000);

	assert_int_equal(priv_parse(c, NULL, 0, &node), -EPROTO);
	assert_int_equal(priv_parse(c, &pd, sizeof(pd) - 1, &node), -EPROTO);
	bad = pd;
	bad.magic ^= 1;
	assert_int_equal(priv_parse(c, &bad, sizeof(bad), &node), -EPROTO);
	bad = pd;
	bad.version = htole16(2);
	assert_int_equal(priv_parse(c, &bad, sizeof(bad), &node), -EPROTO);
	bad = pd;
	bad.n_data = 0;
	assert_int_equal(priv_parse(c, &bad, sizeof(bad), &node), -EPROTO);
	bad = pd;
	bad.slot_size = htole32(0xffffffff);
	assert_int_equal(priv_parse(c, &bad, sizeof(bad), &node), -EPROTO);
	bad = pd;
	bad.n_recv = htole32(1u << 20);
	assert_int_equal(priv_parse(c, &bad, sizeof(bad), &node), -EPROTO);
	/* garbage of every length never crashes */
	for (size_t len = 0; len < 64; len++) {
		uint8_t junk[64];

		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)(i * 31 + len);
		priv_parse(c, junk, len, &node);
	}
	rconn_free(&c->c);
	free(t);
}

static void test_credits(void **state)
{
	struct rdma_tr *t = fake_transport();
	struct rconn *c = conn_new(t, NULL, true, NULL);
	volatile struct rdma_credit *in;
	uint32_t rf, df;
	uint8_t page[4096] = { 0 };
	struct iovec iov = { page, sizeof(page) };

	assert_non_null(c);
	c->rx_len = 4096;
	c->rx = calloc(1, c->rx_len);
	in = rx_credit(c);
	c->have_remote = true;
	c->r_n_recv = 64;
	c->r_n_data = 16;
	c->r_slot_size = c->slot_size;

	c->sent_msgs = 70;
	c->sent_data = 16;
	in->recv_consumed = 10;
	in->data_consumed = 4;
	credits(c, &rf, &df);
	assert_int_equal(rf, 4);
	assert_int_equal(df, 4);
	/* a peer claiming to have consumed more than we sent gains nothing */
	in->recv_consumed = 1000;
	in->data_consumed = 1000;
	credits(c, &rf, &df);
	assert_int_equal(rf, 64);
	assert_int_equal(df, 16);

	/* out of credits: the sender is told to back off before anything is posted */
	in->recv_consumed = 6;
	in->data_consumed = 4;
	assert_int_equal(rconn_send_locked(&c->c, T_DATA, IC_FLAG_TAGGED, &iov, 1, sizeof(page)), -ENOBUFS);
	in->recv_consumed = 70;
	in->data_consumed = 16 - 16;   /* all data slots busy */
	assert_int_equal(rconn_send_locked(&c->c, T_DATA, IC_FLAG_TAGGED, &iov, 1, sizeof(page)), -ENOBUFS);
	/* a frame larger than the peer's data slot */
	c->r_slot_size = 1024 + 40;
	in->data_consumed = 16;
	assert_int_equal(rconn_send_locked(&c->c, T_DATA, IC_FLAG_TAGGED, &iov, 1, sizeof(page)), -EMSGSIZE);
	/* send ring full */
	c->r_slot_size = c->slot_size;
	c->tx_head = RDMA_N_TX;
	assert_int_equal(rconn_send_locked(&c->c, T_DATA, IC_FLAG_TAGGED, &iov, 1, sizeof(page)), -ENOBUFS);
	rconn_free(&c->c);
	free(t);
}

static void test_peer_input_closes_connection(void **state)
{
	struct rdma_tr *t = fake_transport();
	struct rconn *c;
	uint8_t junk[256];
	struct ibv_wc wc = { 0 };

	log_set_quiet(true);
	/* garbage SEND */
	c = conn_new(t, NULL, false, NULL);
	ic_conn_pending_add(&t->cs, &c->c);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 7 + 1);
	conn_on_message(c, junk, sizeof(junk), false);
	assert_int_equal(c->c.state, IC_CONN_DEAD);
	assert_null(t->cs.pending);
	assert_int_equal(t->cs.n_pending, 0);
	assert_int_equal(atomic_load(&t->cs.ctr.proto_errors), 1);
	ic_conn_bury(&t->cs);

	/* a well-formed user frame before authentication */
	c = conn_new(t, NULL, false, NULL);
	ic_frame_hdr_encode(junk, T_DATA, 0, 8, 0, 0);
	conn_on_message(c, junk, IC_HDR_LEN + 8, false);
	assert_int_equal(c->c.state, IC_CONN_DEAD);
	assert_int_equal(atomic_load(&t->cs.ctr.proto_errors), 2);
	ic_conn_bury(&t->cs);

	/* a handshake frame that is not a valid HELLO */
	c = conn_new(t, NULL, false, NULL);
	c->c.state = IC_CONN_HANDSHAKE;
	ic_frame_hdr_encode(junk, IC_T_HELLO, 0, 8, 0, 0);
	conn_on_message(c, junk, IC_HDR_LEN + 8, false);
	assert_int_equal(c->c.state, IC_CONN_DEAD);
	ic_conn_bury(&t->cs);

	/* an RDMA write announced into the wrong data slot */
	c = conn_new(t, NULL, false, NULL);
	c->c.state = IC_CONN_UP;
	wc.status = IBV_WC_SUCCESS;
	wc.opcode = IBV_WC_RECV_RDMA_WITH_IMM;
	wc.wr_id = WR_RECV | 3;
	wc.imm_data = htonl(5);
	conn_on_wc(c, &wc);
	assert_int_equal(c->c.state, IC_CONN_DEAD);
	assert_int_equal(atomic_load(&t->cs.ctr.proto_errors), 4);
	ic_conn_bury(&t->cs);

	/* a failed work completion */
	c = conn_new(t, NULL, false, NULL);
	c->c.state = IC_CONN_UP;
	wc.status = IBV_WC_REM_ACCESS_ERR;
	wc.wr_id = WR_TX | 0;
	conn_on_wc(c, &wc);
	assert_int_equal(c->c.state, IC_CONN_DEAD);
	ic_conn_bury(&t->cs);
	log_set_quiet(false);
	free(t);
}

/* ---- the whole data path over a software model of an RC queue pair ----
 *
 * No device here, but ibv_post_send/ibv_post_recv dispatch through qp->context->ops, so two connections can be
 * wired to an in-memory model of one RC queue pair: SEND lands in the peer's oldest posted receive, RDMA WRITE
 * (with immediate) copies into the peer's registered rx region after checking rkey and bounds, completions are
 * queued on both sides and handed to the transport's own completion handler (conn_on_wcs). This runs the
 * handshake, MACs, both data paths, ring slots and credit returns of rdma.c; only librdmacm and the hardware are
 * left out. A send into a queue pair with no posted receive (what credits must prevent) fails the test.
 */

struct emu_recv {
	uint64_t wr_id;
	uint8_t *addr;
	uint32_t len;
};

struct emu_side {
	struct ibv_context ctx;
	struct ibv_qp qp;
	struct rdma_cm_id id;
	struct ibv_mr rx_mr, tx_mr;
	struct emu_recv recvs[2 * RDMA_N_RECV];
	size_t rhead, rtail;              /* FIFO of posted receives */
	struct ibv_wc wcs[4096];
	size_t nwc;                       /* completions not yet handed over */
	struct emu_side *other;
	struct rconn *c;
	unsigned int overruns, bad_access;
};

static void emu_complete(struct emu_side *s, const struct ibv_wc *wc)
{
	assert_true(s->nwc < sizeof(s->wcs) / sizeof(s->wcs[0]));
	s->wcs[s->nwc++] = *wc;
}

static bool emu_remote_ok(struct emu_side *o, uint64_t addr, uint32_t len, uint32_t rkey)
{
	uintptr_t lo = (uintptr_t)o->c->rx, hi = lo + o->c->rx_len;

	return rkey == o->rx_mr.rkey && addr >= lo && addr + len <= hi;
}

static int emu_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	struct emu_side *s = qp->qp_context, *o = s->other;

	for (; wr; wr = wr->next) {
		const uint8_t *data = (const uint8_t *)(uintptr_t)wr->sg_list[0].addr;
		uint32_t len = wr->sg_list[0].length;
		struct ibv_wc wc = { .wr_id = wr->wr_id, .status = IBV_WC_SUCCESS };
		struct emu_recv r;

		if (wr->sg_list[0].lkey != s->tx_mr.lkey || data < s->c->tx || data + len > s->c->tx + s->c->tx_len) {
			s->bad_access++;
			*bad = wr;
			return EINVAL;
		}
		if (wr->opcode == IBV_WR_RDMA_WRITE || wr->opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
			if (!emu_remote_ok(o, wr->wr.rdma.remote_addr, len, wr->wr.rdma.rkey)) {
				s->bad_access++;
				wc.status = IBV_WC_REM_ACCESS_ERR;
				emu_complete(s, &wc);
				continue;
			}
			memcpy((void *)(uintptr_t)wr->wr.rdma.remote_addr, data, len);
		}
		if (wr->opcode == IBV_WR_SEND || wr->opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
			struct ibv_wc rwc = { .status = IBV_WC_SUCCESS };

			if (o->rhead == o->rtail) {
				o->overruns++;   /* receiver not ready: credits should have prevented this */
				*bad = wr;
				return ENOMEM;
			}
			r = o->recvs[o->rhead++ % (2 * RDMA_N_RECV)];
			rwc.wr_id = r.wr_id;
			if (wr->opcode == IBV_WR_SEND) {
				assert_true(len <= r.len);
				memcpy(r.addr, data, len);
				rwc.opcode = IBV_WC_RECV;
				rwc.byte_len = len;
			} else {
				rwc.opcode = IBV_WC_RECV_RDMA_WITH_IMM;
				rwc.imm_data = wr->imm_data;
				rwc.wc_flags = IBV_WC_WITH_IMM;
				rwc.byte_len = len;
			}
			emu_complete(o, &rwc);
		}
		if (wr->send_flags & IBV_SEND_SIGNALED) {
			wc.opcode = wr->opcode == IBV_WR_SEND ? IBV_WC_SEND : IBV_WC_RDMA_WRITE;
			emu_complete(s, &wc);
		}
	}
	return 0;
}

static int emu_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	struct emu_side *s = qp->qp_context;

	for (; wr; wr = wr->next) {
		assert_true(s->rtail - s->rhead < 2 * RDMA_N_RECV);
		s->recvs[s->rtail++ % (2 * RDMA_N_RECV)] = (struct emu_recv){
			wr->wr_id, (uint8_t *)(uintptr_t)wr->sg_list[0].addr, wr->sg_list[0].length };
	}
	return 0;
}

static bool emu_small_only;   /* every frame 64 B (else 1 in 3 is 4 KiB) */

static bool emu_is_large(uint32_t tag)
{
	return !emu_small_only && tag % 3 == 2;
}

struct emu_node {
	uint32_t n, bad, ups;
	uint32_t sizes_seen[2];
};

static void emu_on_frame(void *opaque, uint32_t src, const struct ic_frame *f)
{
	struct emu_node *n = opaque;
	uint32_t tag;

	memcpy(&tag, f->payload, 4);
	if (tag != n->n || f->len != (emu_is_large(tag) ? 4096u : 64u))
		n->bad++;
	for (uint32_t i = 4; i < f->len; i++)
		if (((const uint8_t *)f->payload)[i] != (uint8_t)(tag + i))
			n->bad++;
	n->sizes_seen[f->len == 4096]++;
	n->n++;
}

static void emu_on_peer(void *opaque, uint32_t peer, enum ic_peer_event ev, const char *why)
{
	if (ev == IC_PEER_UP)
		((struct emu_node *)opaque)->ups++;
}

static struct rdma_tr *emu_transport_peer(uint32_t self, uint32_t peer_id, const uint8_t *key, struct emu_node *node)
{
	struct rdma_tr *t = calloc(1, sizeof(*t));
	struct ic_peer_addr peer = { .id = peer_id, .addr = "127.0.0.1:1" };
	struct ic_config cfg = { .self = self, .peers = &peer, .n_peers = 1, .key = key, .key_len = 32,
				 .max_frame = 4096, .on_frame = emu_on_frame, .on_peer = emu_on_peer, .opaque = node };

	assert_non_null(t);
	ic_accept_type(&cfg, T_DATA);
	t->epfd = t->evfd = -1;
	assert_int_equal(ic_conn_set_init(&t->cs, &rdma_ops, &rdma_conn_ops, &cfg), 0);
	assert_int_equal(t->cs.n_peers, 1);
	assert_int_equal(t->cs.peers[0].we_dial, self < peer_id);
	return t;
}

static struct rdma_tr *emu_transport(uint32_t self, const uint8_t *key, struct emu_node *node)
{
	return emu_transport_peer(self, !self, key, node);
}

static void emu_side_init(struct emu_side *s, struct emu_side *other, uint32_t key_base)
{
	memset(s, 0, sizeof(*s));
	s->ctx.ops.post_send = emu_post_send;
	s->ctx.ops.post_recv = emu_post_recv;
	s->qp.context = &s->ctx;
	s->qp.qp_context = s;
	s->id.qp = &s->qp;
	s->rx_mr.lkey = key_base + 1;
	s->rx_mr.rkey = key_base + 2;
	s->tx_mr.lkey = key_base + 3;
	s->other = other;
}

static struct rconn *emu_conn(struct emu_side *s, struct rdma_tr *t, bool dialler)
{
	struct rconn *c = conn_new(t, &s->id, dialler, dialler ? &t->cs.peers[0] : NULL);

	assert_non_null(c);
	s->c = c;
	assert_int_equal(conn_alloc_buffers(c), 0);
	c->rx_mr = &s->rx_mr;
	c->tx_mr = &s->tx_mr;
	assert_int_equal(conn_post_recvs(c), 0);
	if (dialler)
		t->cs.peers[0].dialing = &c->c;
	else
		ic_conn_pending_add(&t->cs, &c->c);
	return c;
}

/* Hand every queued completion of side s to its connection, as conn_on_cq does; returns how many. */
static size_t emu_pump(struct emu_side *s)
{
	struct ibv_wc batch[16];
	size_t done = 0;

	while (s->nwc && s->c->c.state != IC_CONN_DEAD) {
		size_t n = s->nwc < 16 ? s->nwc : 16;

		memcpy(batch, s->wcs, n * sizeof(batch[0]));
		memmove(s->wcs, s->wcs + n, (s->nwc - n) * sizeof(s->wcs[0]));
		s->nwc -= n;
		conn_on_wcs(s->c, batch, (int)n);
		done += n;
	}
	return done;
}

static void emu_connect(struct emu_side *s0, struct emu_side *s1)
{
	struct rdma_priv pd;
	uint32_t node;

	/* what rdma_connect / CONNECT_REQUEST / rdma_accept / ESTABLISHED carry */
	priv_fill(s0->c, &pd);
	assert_int_equal(priv_parse(s1->c, &pd, sizeof(pd), &node), 0);
	assert_int_equal(node, 0);
	priv_fill(s1->c, &pd);
	assert_int_equal(priv_parse(s0->c, &pd, sizeof(pd), &node), 0);
	assert_int_equal(node, 1);
	assert_int_equal(ic_conn_start_handshake(&s1->c->c), 0);
	assert_int_equal(ic_conn_start_handshake(&s0->c->c), 0);
	for (int i = 0; i < 20 && (s0->nwc || s1->nwc); i++) {
		emu_pump(s1);
		emu_pump(s0);
	}
}

/* Close whatever is left and free it (the fake verbs objects are not the library's to destroy). */
static void emu_teardown(struct rdma_tr *t)
{
	struct ic_conn_peer *p = &t->cs.peers[0];

	if (p->conn)
		ic_conn_close(p->conn, "test over");
	if (p->dialing)
		ic_conn_close(p->dialing, "test over");
	while (t->cs.pending)
		ic_conn_close(t->cs.pending, "test over");
	for (struct ic_conn *c = t->cs.graveyard; c; c = c->next) {
		to_rconn(c)->id = NULL;
		to_rconn(c)->rx_mr = to_rconn(c)->tx_mr = NULL;
	}
	ic_conn_set_fini(&t->cs, NULL);
	free(t);
}

static int emu_send(struct rdma_tr *t, uint32_t tag)
{
	static uint8_t buf[4096];
	uint32_t len = emu_is_large(tag) ? 4096 : 64;
	struct iovec iov[2] = { { &tag, 4 }, { buf + 4, len - 4 } };

	for (uint32_t i = 4; i < len; i++)
		buf[i] = (uint8_t)(tag + i);
	return ic_conn_send(&t->cs.base, !t->cs.base.cfg.self, T_DATA, 0, iov, 2);
}

static void test_software_rc_data_path(void **state)
{
	struct emu_node n0 = { 0 }, n1 = { 0 };
	struct rdma_tr *t0 = emu_transport(0, key_a, &n0), *t1 = emu_transport(1, key_a, &n1);
	struct emu_side *s0 = calloc(1, sizeof(*s0)), *s1 = calloc(1, sizeof(*s1));
	uint32_t sent = 0, back = 0, enobufs = 0;
	struct ic_stats st;

	emu_side_init(s0, s1, 100);
	emu_side_init(s1, s0, 200);
	emu_conn(s0, t0, true);
	emu_conn(s1, t1, false);
	emu_connect(s0, s1);
	assert_int_equal(n0.ups, 1);
	assert_int_equal(n1.ups, 1);
	assert_true(ic_conn_peer_is_up(&t0->cs.base, 1));
	assert_true(ic_conn_peer_is_up(&t1->cs.base, 0));

	/* 3000 frames one way (2 of 3 by SEND, 1 of 3 by RDMA WRITE WITH IMM), 300 the other way, with bursts
	 * that run out of credits or send slots: -ENOBUFS, then progress after the peer returns credits */
	while (n1.n < 3000 || n0.n < 300) {
		int burst = 0;

		while (sent < 3000 && burst++ < 100) {
			int ret = emu_send(t0, sent);

			if (ret == -ENOBUFS) {
				enobufs++;
				break;
			}
			assert_int_equal(ret, 0);
			sent++;
		}
		if (back < 300 && emu_send(t1, back) == 0)
			back++;
		if (!emu_pump(s1) + !emu_pump(s0) == 2 && sent == 3000 && back == 300)
			break;
	}
	assert_int_equal(n1.n, 3000);
	assert_int_equal(n1.bad, 0);
	assert_int_equal(n1.sizes_seen[1], 1000);   /* the WRITE path carried the 4 KiB frames */
	assert_int_equal(n0.n, 300);
	assert_int_equal(n0.bad, 0);
	assert_true(enobufs > 0);                  /* back-pressure was exercised */
	assert_int_equal(s0->overruns + s1->overruns, 0);
	assert_int_equal(s0->bad_access + s1->bad_access, 0);
	ic_conn_get_stats(&t1->cs.base, &st);
	assert_int_equal(st.frames_rx, 3000);
	assert_int_equal(st.proto_errors + st.auth_failures, 0);
	print_message("software RC: 3000 + 300 frames, %u -ENOBUFS back-offs, no receiver overrun\n", enobufs);

	/* credits, not send slots, stop a sender whose receiver does not keep up: the sender's completions are
	 * handled (its send slots come back) but the receiver's are not (no receive reposted, no credit back).
	 * Mixed sizes run out of data slots (16 RDMA writes in flight); small frames only, of receives (64). */
	for (int phase = 0; phase < 2; phase++) {
		uint32_t burst = 0, data = 0, before = n1.n;
		int ret;

		emu_small_only = phase == 1;
		for (;;) {
			ret = emu_send(t0, before + burst);
			if (ret)
				break;
			data += emu_is_large(before + burst);
			burst++;
			emu_pump(s0);
			assert_true(burst <= RDMA_N_RECV);
		}
		assert_int_equal(ret, -ENOBUFS);
		if (phase == 0)
			assert_int_equal(data, RDMA_N_DATA);
		else
			assert_int_equal(burst, RDMA_N_RECV);
		assert_int_equal(s1->overruns, 0);
		assert_int_equal(n1.n, before);
		print_message("software RC: receiver stalled: sender stopped after %u frames (%u by RDMA write)\n",
			      burst, data);
		emu_pump(s1);   /* the receiver catches up and writes the credits back */
		emu_pump(s0);
		assert_int_equal(n1.n, before + burst);
		assert_int_equal(n1.bad, 0);
		assert_int_equal(emu_send(t0, n1.n), 0);
		emu_pump(s1);
		emu_pump(s0);
		assert_int_equal(n1.n, before + burst + 1);
	}
	emu_small_only = false;

	/* a frame whose tag was tampered with on the wire is refused and closes the connection */
	sent = n1.n;
	emu_small_only = true;   /* a SEND-sized frame: its bytes sit in a receive slot */
	assert_int_equal(emu_send(t0, sent), 0);
	assert_true(s1->nwc > 0);
	rx_recv_slot(s1->c, WR_INDEX(s1->wcs[s1->nwc - 1].wr_id))[IC_HDR_LEN + 10] ^= 1;
	log_set_quiet(true);
	emu_pump(s1);
	log_set_quiet(false);
	ic_conn_get_stats(&t1->cs.base, &st);
	assert_int_equal(st.proto_errors, 1);   /* a bad MAC is judged as on tcp: a corrupt or forged frame */
	assert_int_equal(st.auth_failures, 0);
	assert_false(ic_conn_peer_is_up(&t1->cs.base, 0));
	assert_int_equal(n1.n, sent);   /* not delivered */
	emu_small_only = false;

	emu_teardown(t0);
	emu_teardown(t1);
	free(s0);
	free(s1);
}

static void test_software_rc_wrong_key(void **state)
{
	struct emu_node n0 = { 0 }, n1 = { 0 };
	struct rdma_tr *t0 = emu_transport(0, key_a, &n0), *t1 = emu_transport(1, key_b, &n1);
	struct emu_side *s0 = calloc(1, sizeof(*s0)), *s1 = calloc(1, sizeof(*s1));
	struct ic_stats st0, st1;

	emu_side_init(s0, s1, 100);
	emu_side_init(s1, s0, 200);
	emu_conn(s0, t0, true);
	emu_conn(s1, t1, false);
	log_set_quiet(true);
	emu_connect(s0, s1);
	log_set_quiet(false);
	assert_int_equal(n0.ups + n1.ups, 0);
	assert_false(ic_conn_peer_is_up(&t0->cs.base, 1));
	ic_conn_get_stats(&t0->cs.base, &st0);
	ic_conn_get_stats(&t1->cs.base, &st1);
	assert_true(st0.auth_failures >= 1);
	assert_int_equal(emu_send(t0, 0), -ENOTCONN);
	(void)st1;
	emu_teardown(t0);
	emu_teardown(t1);
	free(s0);
	free(s1);
}

/* A listener that refuses a dialler's id tells it why with a CLOSE (the handshake of conn.c, the same as tcp's), so
 * the dialler counts an authentication failure at once instead of waiting for its setup timeout. Node 2 dials
 * node 1, which only knows node 0 (and a node with a larger id may not dial anyway). */
static void test_software_rc_refused_id_told_why(void **state)
{
	struct emu_node n1 = { 0 }, n2 = { 0 };
	struct rdma_tr *t1 = emu_transport_peer(1, 0, key_a, &n1), *t2 = emu_transport_peer(2, 1, key_a, &n2);
	struct emu_side *s1 = calloc(1, sizeof(*s1)), *s2 = calloc(1, sizeof(*s2));
	struct ic_stats st1, st2;
	struct rdma_priv pd;
	uint32_t node;

	emu_side_init(s2, s1, 100);
	emu_side_init(s1, s2, 200);
	emu_conn(s2, t2, true);
	emu_conn(s1, t1, false);
	priv_fill(s2->c, &pd);
	assert_int_equal(priv_parse(s1->c, &pd, sizeof(pd), &node), 0);
	priv_fill(s1->c, &pd);
	assert_int_equal(priv_parse(s2->c, &pd, sizeof(pd), &node), 0);
	log_set_quiet(true);
	assert_int_equal(ic_conn_start_handshake(&s1->c->c), 0);
	assert_int_equal(ic_conn_start_handshake(&s2->c->c), 0);   /* HELLO from node 2 */
	emu_pump(s1);                                              /* refused: CLOSE with the reason */
	assert_int_equal(s1->c->c.state, IC_CONN_DEAD);
	emu_pump(s2);                                              /* the dialler reads it */
	log_set_quiet(false);
	assert_int_equal(s2->c->c.state, IC_CONN_DEAD);
	ic_conn_get_stats(&t1->cs.base, &st1);
	ic_conn_get_stats(&t2->cs.base, &st2);
	assert_int_equal(st1.auth_failures, 1);
	assert_int_equal(st2.auth_failures, 1);
	assert_int_equal(n1.ups + n2.ups, 0);
	/* the dialler backs off and dials again later: its dial slot is free and its backoff doubled */
	assert_null(t2->cs.peers[0].dialing);
	assert_int_equal(t2->cs.peers[0].backoff_ms, 2 * IC_CONN_BACKOFF_MIN_MS);
	emu_teardown(t1);
	emu_teardown(t2);
	free(s1);
	free(s2);
}

/* The listener keeps at most IC_CONN_MAX_PENDING unauthenticated connections (shared with tcp, where
 * test_tcp checks it end to end); a connection request beyond that is refused before any verbs resources. */
static void test_pending_bounded(void **state)
{
	struct rdma_tr *t = fake_transport();

	for (unsigned int i = 0; i < IC_CONN_MAX_PENDING; i++) {
		struct rconn *c = conn_new(t, NULL, false, NULL);

		assert_non_null(c);
		assert_true(ic_conn_may_accept(&t->cs, "test"));
		ic_conn_pending_add(&t->cs, &c->c);
	}
	log_set_quiet(true);
	assert_false(ic_conn_may_accept(&t->cs, "test"));
	ic_conn_close(t->cs.pending, "test");
	log_set_quiet(false);
	assert_true(ic_conn_may_accept(&t->cs, "test"));
	while (t->cs.pending)
		ic_conn_close(t->cs.pending, "test over");
	assert_int_equal(t->cs.n_pending, 0);
	ic_conn_bury(&t->cs);
	free(t);
}

static void test_software_rc_heartbeat_and_dead(void **state)
{
	struct emu_node n0 = { 0 }, n1 = { 0 };
	struct rdma_tr *t0 = emu_transport(0, key_a, &n0), *t1 = emu_transport(1, key_a, &n1);
	struct emu_side *s0 = calloc(1, sizeof(*s0)), *s1 = calloc(1, sizeof(*s1));
	struct rconn *c0, *c1;
	uint64_t now, hb = (uint64_t)t0->cs.base.cfg.heartbeat_ms * NSEC_PER_MSEC;
	uint64_t seq_before;

	emu_side_init(s0, s1, 100);
	emu_side_init(s1, s0, 200);
	c0 = emu_conn(s0, t0, true);
	c1 = emu_conn(s1, t1, false);
	emu_connect(s0, s1);
	assert_true(ic_conn_peer_is_up(&t1->cs.base, 0));

	/* quiet for heartbeat_ms: a heartbeat goes out, is accepted (seq advances), and is not delivered */
	now = clock_now_ns();
	c0->c.tx_active = false;
	c0->c.last_tx_ns = now - hb;
	seq_before = c1->c.rules.expect_seq;
	ic_conn_timers(&t0->cs, now);
	assert_true(c0->c.tx_active);   /* something was sent: the heartbeat */
	emu_pump(s1);
	emu_pump(s0);
	assert_int_equal(c1->c.rules.expect_seq, seq_before + 1);
	assert_int_equal(n1.n, 0);
	assert_true(ic_conn_peer_is_up(&t1->cs.base, 0));

	/* silent for longer than dead_ms: down */
	now = clock_now_ns() + (uint64_t)(t1->cs.base.cfg.dead_ms + 1) * NSEC_PER_MSEC;
	ic_conn_timers(&t1->cs, now);
	assert_false(ic_conn_peer_is_up(&t1->cs.base, 0));
	emu_teardown(t0);
	emu_teardown(t1);
	free(s0);
	free(s1);
}

/* ---- with a device ---- */

struct node {
	struct ic_transport *t;
	uint32_t n;
	uint32_t bad;
	uint32_t ups;
};

static void on_frame(void *opaque, uint32_t src, const struct ic_frame *f)
{
	struct node *n = opaque;
	uint32_t tag;

	if (f->len < 4) {
		n->bad++;
		return;
	}
	memcpy(&tag, f->payload, 4);
	if (tag != n->n || f->len != (tag % 2 ? 4096u : 64u))
		n->bad++;
	n->n++;
}

static void on_peer(void *opaque, uint32_t peer, enum ic_peer_event ev, const char *why)
{
	if (ev == IC_PEER_UP)
		((struct node *)opaque)->ups++;
}

static int start(struct node *n, uint32_t id, const char *host, unsigned int port, const uint8_t *key)
{
	struct ic_peer_addr peer = { .id = !id };
	char listen[IC_ADDR_MAX];
	struct ic_config cfg = { 0 };

	snprintf(listen, sizeof(listen), "%s:%u", host, port + id);
	snprintf(peer.addr, sizeof(peer.addr), "%s:%u", host, port + !id);
	cfg.self = id;
	cfg.listen = listen;
	cfg.peers = &peer;
	cfg.n_peers = 1;
	cfg.key = key;
	cfg.key_len = 32;
	ic_accept_type(&cfg, T_DATA);
	cfg.on_frame = on_frame;
	cfg.on_peer = on_peer;
	cfg.opaque = n;
	return ic_create("rdma", &cfg, &n->t);
}

static const char *rdma_host(void)
{
	const char *h = getenv("RACKVM_RDMA_ADDR");

	return h && *h ? h : "127.0.0.1";
}

static void test_two_endpoints(void **state)
{
	struct node n[2] = { 0 };
	unsigned int port = 19000 + (unsigned int)(getpid() % 1000) * 2;
	uint8_t buf[4096] = { 0 };
	uint64_t end;
	uint32_t sent = 0;

	if (device_count() == 0) {
		print_message(SKIP_NO_DEVICE "\n");
		skip();
	}
	assert_int_equal(start(&n[0], 0, rdma_host(), port, key_a), 0);
	assert_int_equal(start(&n[1], 1, rdma_host(), port, key_a), 0);
	end = clock_now_ns() + 5 * NSEC_PER_SEC;
	while (!(ic_peer_is_up(n[0].t, 1) && ic_peer_is_up(n[1].t, 0)) && clock_now_ns() < end) {
		ic_poll(n[0].t, 1);
		ic_poll(n[1].t, 1);
	}
	assert_true(ic_peer_is_up(n[0].t, 1));
	/* alternate 64 B (SEND) and 4 KiB (RDMA WRITE WITH IMM) frames; retry on -ENOBUFS (credits) */
	end = clock_now_ns() + 10 * NSEC_PER_SEC;
	while ((sent < 2000 || n[1].n < 2000) && clock_now_ns() < end) {
		if (sent < 2000) {
			struct iovec iov = { buf, sent % 2 ? 4096 : 64 };
			int ret;

			memcpy(buf, &sent, 4);
			ret = ic_send(n[0].t, 1, T_DATA, 0, &iov, 1);
			if (!ret)
				sent++;
			else
				assert_int_equal(ret, -ENOBUFS);
		}
		ic_poll(n[1].t, 0);
		ic_poll(n[0].t, 0);
	}
	assert_int_equal(n[1].n, 2000);
	assert_int_equal(n[1].bad, 0);
	ic_destroy(n[0].t);
	ic_destroy(n[1].t);
}

static void test_wrong_key_refused(void **state)
{
	struct node n[2] = { 0 };
	unsigned int port = 21000 + (unsigned int)(getpid() % 1000) * 2;
	struct ic_stats st0, st1;
	uint64_t end;

	if (device_count() == 0) {
		print_message(SKIP_NO_DEVICE "\n");
		skip();
	}
	log_set_quiet(true);
	assert_int_equal(start(&n[0], 0, rdma_host(), port, key_a), 0);
	assert_int_equal(start(&n[1], 1, rdma_host(), port, key_b), 0);
	end = clock_now_ns() + 1 * NSEC_PER_SEC;
	while (clock_now_ns() < end) {
		ic_poll(n[0].t, 1);
		ic_poll(n[1].t, 1);
	}
	assert_int_equal(n[0].ups + n[1].ups, 0);
	ic_get_stats(n[0].t, &st0);
	ic_get_stats(n[1].t, &st1);
	assert_true(st0.auth_failures + st1.auth_failures > 0);
	log_set_quiet(false);
	ic_destroy(n[0].t);
	ic_destroy(n[1].t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_without_device),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_priv_parse),
		cmocka_unit_test(test_credits),
		cmocka_unit_test(test_peer_input_closes_connection),
		cmocka_unit_test(test_software_rc_data_path),
		cmocka_unit_test(test_software_rc_wrong_key),
		cmocka_unit_test(test_software_rc_refused_id_told_why),
		cmocka_unit_test(test_pending_bounded),
		cmocka_unit_test(test_software_rc_heartbeat_and_dead),
		cmocka_unit_test(test_two_endpoints),
		cmocka_unit_test(test_wrong_key_refused),
	};

	log_set_tag("test_rdma");
	return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* built without libibverbs/librdmacm: the stub */

static void test_stub_fails_clearly(void **state)
{
	struct ic_config cfg = { .self = 0, .key = key_a, .key_len = 32, .on_frame = on_frame_ignore };
	struct ic_transport *t = (void *)1;
	unsigned long errs = log_error_count();

	log_set_quiet(true);
	assert_int_equal(ic_create("rdma", &cfg, &t), -ENOTSUP);
	assert_null(t);
	assert_true(log_error_count() > errs);
	log_set_quiet(false);
	(void)key_b;
}

static void test_rdma_not_built(void **state)
{
	print_message("SKIP: built without libibverbs/librdmacm: only the stub is checked, not the rdma transport\n");
	skip();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stub_fails_clearly),
		cmocka_unit_test(test_rdma_not_built),
	};

	log_set_tag("test_rdma");
	return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
