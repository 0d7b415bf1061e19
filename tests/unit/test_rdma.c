/* SPDX-License-Identifier: MIT */
/*
 * Tests of the rdma transport.
 *
 * Without hardware (always): creating it on a machine with no RDMA device fails cleanly (-ENODEV, an error line,
 * nothing leaked — run under ASan), bad configurations are refused, and the parts that judge what a peer sends
 * are driven directly (this file includes rdma.c to reach them): the rdma_cm private data parser, the credit
 * arithmetic (a lying peer cannot inflate credits), garbage messages, writes into the wrong data slot and failed
 * work completions close the connection and are counted.
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

#ifndef RACKVM_HAVE_RDMA
#define RACKVM_HAVE_RDMA 0
#endif

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
	t->base.ops = &rdma_ops;
	t->base.cfg.max_frame = 4096;
	t->base.cfg.self = 1;
	ic_accept_type(&t->base.cfg, T_DATA);
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
	conn_free(c);
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
	assert_int_equal(conn_send_locked(c, T_DATA, IC_FLAG_TAGGED, &iov, 1, sizeof(page)), -ENOBUFS);
	in->recv_consumed = 70;
	in->data_consumed = 16 - 16;   /* all data slots busy */
	assert_int_equal(conn_send_locked(c, T_DATA, IC_FLAG_TAGGED, &iov, 1, sizeof(page)), -ENOBUFS);
	/* a frame larger than the peer's data slot */
	c->r_slot_size = 1024 + 40;
	in->data_consumed = 16;
	assert_int_equal(conn_send_locked(c, T_DATA, IC_FLAG_TAGGED, &iov, 1, sizeof(page)), -EMSGSIZE);
	/* send ring full */
	c->r_slot_size = c->slot_size;
	c->tx_head = RDMA_N_TX;
	assert_int_equal(conn_send_locked(c, T_DATA, IC_FLAG_TAGGED, &iov, 1, sizeof(page)), -ENOBUFS);
	conn_free(c);
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
	t->pending = c;
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 7 + 1);
	conn_on_message(c, junk, sizeof(junk), false);
	assert_int_equal(c->state, C_DEAD);
	assert_null(t->pending);
	assert_int_equal(atomic_load(&t->proto_errors), 1);
	rtr_bury(t);

	/* a well-formed user frame before authentication */
	c = conn_new(t, NULL, false, NULL);
	ic_frame_hdr_encode(junk, T_DATA, 0, 8, 0, 0);
	conn_on_message(c, junk, IC_HDR_LEN + 8, false);
	assert_int_equal(c->state, C_DEAD);
	assert_int_equal(atomic_load(&t->proto_errors), 2);
	rtr_bury(t);

	/* a handshake frame that is not a valid HELLO */
	c = conn_new(t, NULL, false, NULL);
	c->state = C_HANDSHAKE;
	ic_frame_hdr_encode(junk, IC_T_HELLO, 0, 8, 0, 0);
	conn_on_message(c, junk, IC_HDR_LEN + 8, false);
	assert_int_equal(c->state, C_DEAD);
	rtr_bury(t);

	/* an RDMA write announced into the wrong data slot */
	c = conn_new(t, NULL, false, NULL);
	c->state = C_UP;
	wc.status = IBV_WC_SUCCESS;
	wc.opcode = IBV_WC_RECV_RDMA_WITH_IMM;
	wc.wr_id = WR_RECV | 3;
	wc.imm_data = htonl(5);
	conn_on_wc(c, &wc);
	assert_int_equal(c->state, C_DEAD);
	assert_int_equal(atomic_load(&t->proto_errors), 4);
	rtr_bury(t);

	/* a failed work completion */
	c = conn_new(t, NULL, false, NULL);
	c->state = C_UP;
	wc.status = IBV_WC_REM_ACCESS_ERR;
	wc.wr_id = WR_TX | 0;
	conn_on_wc(c, &wc);
	assert_int_equal(c->state, C_DEAD);
	rtr_bury(t);
	log_set_quiet(false);
	free(t);
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
