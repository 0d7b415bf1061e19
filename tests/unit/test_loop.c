/* SPDX-License-Identifier: MIT */
/* Unit tests of the loop (in-process) transport: delivery order, meshes, peer up/down, refused frames, keys. */
#include <errno.h>
#include <setjmp.h>
#include <time.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "interconnect/ic.h"
#include "util/clock.h"
#include "util/log.h"

#define T_DATA 0x20
#define T_OTHER 0x21
#define MAX_NODES 8
#define MAX_REC 50000

static const uint8_t key_a[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t key_b[32] = "fedcba9876543210fedcba9876543210";

struct rec {
	uint32_t src;
	uint8_t type;
	uint64_t seq;
	uint32_t len;
	uint32_t tag;        /* first 4 payload bytes */
};

struct node {
	uint32_t id;
	struct ic_transport *t;
	struct rec *recs;
	size_t n_recs;
	int ups[MAX_NODES];
	int downs[MAX_NODES];
	bool bad_payload;
};

static void on_frame(void *opaque, uint32_t src, const struct ic_frame *f)
{
	struct node *n = opaque;
	struct rec *r;
	const uint8_t *p = f->payload;

	if (n->n_recs >= MAX_REC)
		return;
	r = &n->recs[n->n_recs++];
	r->src = src;
	r->type = f->type;
	r->seq = f->seq;
	r->len = f->len;
	r->tag = 0;
	if (f->len >= 4)
		memcpy(&r->tag, p, 4);
	/* payload bytes after the tag are (tag + i) & 0xff */
	for (uint32_t i = 4; i < f->len; i++)
		if (p[i] != (uint8_t)(r->tag + i))
			n->bad_payload = true;
}

static void on_peer(void *opaque, uint32_t peer, enum ic_peer_event ev, const char *why)
{
	struct node *n = opaque;

	if (peer >= MAX_NODES)
		return;
	if (ev == IC_PEER_UP)
		n->ups[peer]++;
	else
		n->downs[peer]++;
}

/* Node id of a mesh of `count` nodes in hub `hub`; key and max_frame as given. */
static int node_start(struct node *n, const char *hub, uint32_t id, uint32_t count, const uint8_t *key,
		      uint32_t max_frame, bool accept_data)
{
	struct ic_peer_addr peers[MAX_NODES];
	char listen[IC_ADDR_MAX];
	struct ic_config cfg = { 0 };
	size_t np = 0;

	memset(n->ups, 0, sizeof(n->ups));
	memset(n->downs, 0, sizeof(n->downs));
	n->id = id;
	if (!n->recs)
		n->recs = calloc(MAX_REC, sizeof(*n->recs));
	n->n_recs = 0;
	n->bad_payload = false;
	for (uint32_t i = 0; i < count; i++) {
		if (i == id)
			continue;
		peers[np].id = i;
		snprintf(peers[np].addr, sizeof(peers[np].addr), "%s/%u", hub, i);
		np++;
	}
	snprintf(listen, sizeof(listen), "%s/%u", hub, id);
	cfg.self = id;
	cfg.listen = listen;
	cfg.peers = peers;
	cfg.n_peers = np;
	cfg.key = key;
	cfg.key_len = 32;
	cfg.max_frame = max_frame;
	if (accept_data)
		ic_accept_type(&cfg, T_DATA);
	ic_accept_type(&cfg, T_OTHER);
	cfg.on_frame = on_frame;
	cfg.on_peer = on_peer;
	cfg.opaque = n;
	return ic_create("loop", &cfg, &n->t);
}

static void node_stop(struct node *n)
{
	ic_destroy(n->t);
	n->t = NULL;
}

static void node_free(struct node *n)
{
	if (n->t)
		node_stop(n);
	free(n->recs);
	n->recs = NULL;
}

typedef bool (*cond_fn)(struct node *nodes, size_t count, void *arg);

/* Poll every node until cond holds or deadline_ms passes. */
static bool pump_until(struct node *nodes, size_t count, cond_fn cond, void *arg, int deadline_ms)
{
	uint64_t end = clock_now_ns() + (uint64_t)deadline_ms * NSEC_PER_MSEC;

	for (;;) {
		if (cond(nodes, count, arg))
			return true;
		if (clock_now_ns() > end)
			return false;
		for (size_t i = 0; i < count; i++)
			if (nodes[i].t)
				ic_poll(nodes[i].t, count == 1 ? 1 : 0);
		if (count > 1)
			ic_poll(nodes[0].t, 1);
	}
}

static bool all_up(struct node *nodes, size_t count, void *arg)
{
	for (size_t i = 0; i < count; i++)
		for (size_t j = 0; j < count; j++)
			if (i != j && !(nodes[i].ups[nodes[j].id] > nodes[i].downs[nodes[j].id]))
				return false;
	return true;
}

static bool got_frames(struct node *nodes, size_t count, void *arg)
{
	size_t want = *(size_t *)arg;

	for (size_t i = 0; i < count; i++)
		if (nodes[i].n_recs < want)
			return false;
	return true;
}

static int send_tagged(struct ic_transport *t, uint32_t dst, uint8_t type, uint32_t tag, uint32_t len)
{
	uint8_t buf[70000];
	struct iovec iov[2];

	assert_true(len <= sizeof(buf) && len >= 4);
	memcpy(buf, &tag, 4);
	for (uint32_t i = 4; i < len; i++)
		buf[i] = (uint8_t)(tag + i);
	/* two iovecs to exercise gathering */
	iov[0].iov_base = buf;
	iov[0].iov_len = 2;
	iov[1].iov_base = buf + 2;
	iov[1].iov_len = len - 2;
	return ic_send(t, dst, type, 0x0100, iov, 2);
}

static void test_ordered_delivery(void **state)
{
	struct node n[2] = { 0 };
	size_t want = 2000;

	assert_int_equal(node_start(&n[0], "order", 0, 2, key_a, 0, true), 0);
	assert_false(ic_peer_is_up(n[0].t, 1));
	assert_int_equal(ic_send(n[0].t, 1, T_DATA, 0, NULL, 0), -ENOTCONN);
	assert_int_equal(node_start(&n[1], "order", 1, 2, key_a, 0, true), 0);
	assert_true(pump_until(n, 2, all_up, NULL, 2000));
	assert_true(ic_peer_is_up(n[0].t, 1));
	assert_true(ic_peer_is_up(n[1].t, 0));
	for (uint32_t i = 0; i < want; i++) {
		assert_int_equal(send_tagged(n[0].t, 1, T_DATA, i, 4 + (i * 37) % 4096), 0);
		assert_int_equal(send_tagged(n[1].t, 0, T_DATA, i, 4 + (i * 53) % 4096), 0);
	}
	assert_true(pump_until(n, 2, got_frames, &want, 5000));
	for (int k = 0; k < 2; k++) {
		assert_int_equal(n[k].n_recs, want);
		assert_false(n[k].bad_payload);
		for (uint32_t i = 0; i < want; i++) {
			assert_int_equal(n[k].recs[i].tag, i);
			assert_int_equal(n[k].recs[i].seq, i + 1);
			assert_int_equal(n[k].recs[i].src, (uint32_t)!k);
		}
	}
	struct ic_stats st;
	ic_get_stats(n[0].t, &st);
	assert_int_equal(st.frames_tx, want);
	assert_int_equal(st.frames_rx, want);
	assert_int_equal(st.proto_errors, 0);
	node_free(&n[0]);
	node_free(&n[1]);
}

static void test_mesh(void **state)
{
	struct node n[5] = { 0 };
	const uint32_t count = 5, per = 100;
	size_t want = (count - 1) * per;

	for (uint32_t i = 0; i < count; i++)
		assert_int_equal(node_start(&n[i], "mesh", i, count, key_a, 0, true), 0);
	assert_true(pump_until(n, count, all_up, NULL, 2000));
	for (uint32_t k = 0; k < per; k++)
		for (uint32_t i = 0; i < count; i++)
			for (uint32_t j = 0; j < count; j++)
				if (i != j)
					assert_int_equal(send_tagged(n[i].t, j, T_DATA, i * 1000000 + k, 64), 0);
	assert_true(pump_until(n, count, got_frames, &want, 5000));
	for (uint32_t i = 0; i < count; i++) {
		uint32_t next[MAX_NODES] = { 0 };

		assert_int_equal(n[i].n_recs, want);
		for (size_t r = 0; r < n[i].n_recs; r++) {
			uint32_t src = n[i].recs[r].src;

			assert_true(src < count && src != i);
			assert_int_equal(n[i].recs[r].tag, src * 1000000 + next[src]);
			next[src]++;
		}
	}
	for (uint32_t i = 0; i < count; i++)
		node_free(&n[i]);
}

static bool saw_down_of_0(struct node *nodes, size_t count, void *arg)
{
	return nodes[0].downs[0] > 0;   /* called with the surviving node only */
}

static void test_peer_down_and_back(void **state)
{
	struct node n[2] = { 0 };
	size_t want = 1;

	assert_int_equal(node_start(&n[0], "updown", 0, 2, key_a, 0, true), 0);
	assert_int_equal(node_start(&n[1], "updown", 1, 2, key_a, 0, true), 0);
	assert_true(pump_until(n, 2, all_up, NULL, 2000));
	/* a frame still in flight when its sender goes away is discarded with the connection */
	assert_int_equal(send_tagged(n[0].t, 1, T_DATA, 7, 8), 0);
	node_stop(&n[0]);
	assert_false(ic_peer_is_up(n[1].t, 0));
	assert_true(pump_until(&n[1], 1, saw_down_of_0, NULL, 2000));
	assert_int_equal(n[1].n_recs, 0);
	assert_int_equal(send_tagged(n[1].t, 0, T_DATA, 1, 8), -ENOTCONN);
	/* the node comes back (a restart): up again, sequence numbers start over */
	assert_int_equal(node_start(&n[0], "updown", 0, 2, key_a, 0, true), 0);
	assert_true(pump_until(n, 2, all_up, NULL, 2000));
	assert_int_equal(send_tagged(n[1].t, 0, T_DATA, 9, 8), 0);
	assert_true(pump_until(n, 1, got_frames, &want, 2000));
	assert_int_equal(n[0].recs[0].tag, 9);
	assert_int_equal(n[0].recs[0].seq, 1);
	node_free(&n[0]);
	node_free(&n[1]);
}

static void test_refused_frames(void **state)
{
	struct node n[2] = { 0 };
	struct ic_stats st;
	size_t want = 1;

	log_set_quiet(true);
	/* node 1 accepts only T_OTHER and at most 1024 bytes */
	assert_int_equal(node_start(&n[0], "refuse", 0, 2, key_a, 0, true), 0);
	assert_int_equal(node_start(&n[1], "refuse", 1, 2, key_a, 1024, false), 0);
	assert_true(pump_until(n, 2, all_up, NULL, 2000));

	/* over the sender's own limit: refused at once */
	assert_int_equal(send_tagged(n[1].t, 0, T_DATA, 1, 2000), -EMSGSIZE);
	assert_int_equal(ic_send(n[0].t, 1, 0x05, 0, NULL, 0), -EINVAL);   /* transport-owned type */
	assert_int_equal(ic_send(n[0].t, 9, T_DATA, 0, NULL, 0), -EINVAL);  /* not a peer */

	/* a type the receiver does not accept: counted, not delivered, the connection is reset */
	assert_int_equal(send_tagged(n[0].t, 1, T_DATA, 1, 16), 0);
	assert_true(pump_until(n, 2, all_up, NULL, 2000));
	for (int i = 0; i < 50; i++)
		ic_poll(n[1].t, 1), ic_poll(n[0].t, 0);
	ic_get_stats(n[1].t, &st);
	assert_int_equal(st.proto_errors, 1);
	assert_int_equal(n[1].n_recs, 0);
	assert_int_equal(n[1].downs[0], 1);
	assert_int_equal(n[0].downs[1], 1);
	assert_true(ic_peer_is_up(n[0].t, 1));

	/* larger than the receiver's max_frame (but within the sender's) */
	assert_int_equal(send_tagged(n[0].t, 1, T_OTHER, 2, 2000), 0);
	for (int i = 0; i < 50; i++)
		ic_poll(n[1].t, 1), ic_poll(n[0].t, 0);
	ic_get_stats(n[1].t, &st);
	assert_int_equal(st.proto_errors, 2);
	assert_int_equal(n[1].n_recs, 0);
	assert_int_equal(n[1].downs[0], 2);

	/* after the reset, good frames flow again */
	assert_int_equal(send_tagged(n[0].t, 1, T_OTHER, 3, 100), 0);
	assert_true(pump_until(&n[1], 1, got_frames, &want, 2000));
	assert_int_equal(n[1].recs[0].tag, 3);
	assert_int_equal(n[1].recs[0].seq, 1);
	assert_int_equal(n[1].recs[0].type, T_OTHER);
	log_set_quiet(false);
	node_free(&n[0]);
	node_free(&n[1]);
}

static void test_wrong_key(void **state)
{
	struct node n[3] = { 0 };
	struct ic_stats st;
	uint64_t end;

	log_set_quiet(true);
	assert_int_equal(node_start(&n[0], "keys", 0, 3, key_a, 0, true), 0);
	assert_int_equal(node_start(&n[1], "keys", 1, 3, key_b, 0, true), 0);
	assert_int_equal(node_start(&n[2], "keys", 2, 3, key_a, 0, true), 0);
	end = clock_now_ns() + 200 * NSEC_PER_MSEC;
	while (clock_now_ns() < end)
		for (int i = 0; i < 3; i++)
			ic_poll(n[i].t, 1);
	/* 0 and 2 share a key, 1 is a stranger */
	assert_int_equal(n[0].ups[2], 1);
	assert_int_equal(n[2].ups[0], 1);
	assert_int_equal(n[0].ups[1] + n[1].ups[0] + n[1].ups[2] + n[2].ups[1], 0);
	assert_false(ic_peer_is_up(n[1].t, 0));
	assert_false(ic_peer_is_up(n[0].t, 1));
	assert_int_equal(send_tagged(n[1].t, 0, T_DATA, 1, 8), -ENOTCONN);
	ic_get_stats(n[1].t, &st);
	assert_int_equal(st.auth_failures, 2);
	ic_get_stats(n[0].t, &st);
	assert_int_equal(st.auth_failures, 1);
	log_set_quiet(false);
	for (int i = 0; i < 3; i++)
		node_free(&n[i]);
}

static void test_bad_config(void **state)
{
	struct ic_peer_addr peer = { .id = 1 };
	struct ic_config cfg = { 0 };
	struct ic_transport *t = (void *)1, *t2;
	struct node n = { 0 };

	log_set_quiet(true);
	cfg.self = 0;
	cfg.key = key_a;
	cfg.key_len = 32;
	cfg.on_frame = on_frame;
	cfg.peers = &peer;
	cfg.n_peers = 1;
	snprintf(peer.addr, sizeof(peer.addr), "hub/2");     /* id does not match */
	assert_int_equal(ic_create("loop", &cfg, &t), -EINVAL);
	assert_null(t);
	snprintf(peer.addr, sizeof(peer.addr), "nohub");
	assert_int_equal(ic_create("loop", &cfg, &t), -EINVAL);
	snprintf(peer.addr, sizeof(peer.addr), "hub/1");
	cfg.listen = "other/0";                              /* different hub from the peer's */
	assert_int_equal(ic_create("loop", &cfg, &t), -EINVAL);
	cfg.listen = "hub/0";
	assert_int_equal(ic_create("loop", &cfg, &t), 0);
	assert_int_equal(ic_create("loop", &cfg, &t2), -EADDRINUSE);   /* same id twice in one hub */
	assert_string_equal(ic_name(t), "loop");
	assert_int_equal(ic_fabric_partition(t, 1, true), -EOPNOTSUPP);
	ic_destroy(t);
	assert_int_equal(ic_create("nosuch", &cfg, &t), -ENOENT);
	log_set_quiet(false);
	(void)n;
}

struct sender_arg {
	struct ic_transport *t;
	uint32_t thread;
	uint32_t count;
};

static void *sender_main(void *p)
{
	struct sender_arg *a = p;

	for (uint32_t i = 0; i < a->count; i++) {
		uint32_t tag = a->thread << 24 | i;
		struct iovec iov = { &tag, 4 };

		while (ic_send(a->t, 1, T_DATA, 0, &iov, 1) == -ENOBUFS)
			;
	}
	return NULL;
}

/* Several threads send at once while the receiver polls: per-thread order is kept, nothing lost. */
static void test_concurrent_senders(void **state)
{
	struct node n[2] = { 0 };
	struct sender_arg args[3];
	pthread_t th[3];
	size_t want = 3 * 5000;
	uint32_t next[3] = { 0 };

	assert_int_equal(node_start(&n[0], "threads", 0, 2, key_a, 0, true), 0);
	assert_int_equal(node_start(&n[1], "threads", 1, 2, key_a, 0, true), 0);
	assert_true(pump_until(n, 2, all_up, NULL, 2000));
	for (uint32_t i = 0; i < 3; i++) {
		args[i] = (struct sender_arg){ n[0].t, i, 5000 };
		assert_int_equal(pthread_create(&th[i], NULL, sender_main, &args[i]), 0);
	}
	/* the receiver blocks in poll(-1 would hang on a bug; use a bounded wait) */
	uint64_t end = clock_now_ns() + 10 * NSEC_PER_SEC;
	while (n[1].n_recs < want && clock_now_ns() < end)
		ic_poll(n[1].t, 100);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(n[1].n_recs, want);
	for (size_t r = 0; r < want; r++) {
		uint32_t tag = n[1].recs[r].tag, thr = tag >> 24;

		assert_true(thr < 3);
		assert_int_equal(tag & 0xffffff, next[thr]);
		next[thr]++;
		assert_int_equal(n[1].recs[r].seq, r + 1);
	}
	node_free(&n[0]);
	node_free(&n[1]);
}

static void *waker_main(void *p)
{
	struct timespec ts = { 0, 50 * 1000 * 1000 };

	nanosleep(&ts, NULL);
	ic_wake(p);
	return NULL;
}

static void test_poll_blocks_and_wakes(void **state)
{
	struct node n = { 0 };
	pthread_t th;
	uint64_t t0;

	assert_int_equal(node_start(&n, "wake", 0, 1, key_a, 0, true), 0);
	t0 = clock_now_ns();
	assert_int_equal(ic_poll(n.t, 60), 0);
	assert_true(clock_now_ns() - t0 >= 55 * NSEC_PER_MSEC);
	assert_int_equal(pthread_create(&th, NULL, waker_main, n.t), 0);
	t0 = clock_now_ns();
	assert_int_equal(ic_poll(n.t, 10000), 0);    /* returns on the wake, long before 10 s */
	assert_true(clock_now_ns() - t0 < 5 * NSEC_PER_SEC);
	pthread_join(th, NULL);
	node_free(&n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ordered_delivery),
		cmocka_unit_test(test_mesh),
		cmocka_unit_test(test_peer_down_and_back),
		cmocka_unit_test(test_refused_frames),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_concurrent_senders),
		cmocka_unit_test(test_poll_blocks_and_wakes),
	};

	log_set_tag("test_loop");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
