/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the fabric wrapper, over the loop transport (and over tcp when it is built): latency, loss,
 * determinism of a seed, reordering, partitions (short and longer than dead_ms), bandwidth cap, run-time
 * switching. Timing checks use generous bounds and poll with a deadline.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "interconnect/ic.h"
#include "util/clock.h"
#include "util/log.h"

#define T_DATA 0x20
#define MAX_REC 5000

static const uint8_t key[32] = "0123456789abcdef0123456789abcdef";

struct payload {
	uint32_t tag;
	uint64_t sent_ns;
} __attribute__((packed));

struct rec {
	uint32_t tag;
	uint64_t sent_ns;
	uint64_t arrived_ns;
};

struct node {
	uint32_t id;
	struct ic_transport *t;
	struct rec recs[MAX_REC];
	size_t n_recs;
	int ups, downs;
	uint64_t down_ns, up_ns;
};

static void on_frame(void *opaque, uint32_t src, const struct ic_frame *f)
{
	struct node *n = opaque;
	struct payload p;

	if (n->n_recs >= MAX_REC || f->len < sizeof(p))
		return;
	memcpy(&p, f->payload, sizeof(p));
	n->recs[n->n_recs++] = (struct rec){ p.tag, p.sent_ns, clock_now_ns() };
}

static void on_peer(void *opaque, uint32_t peer, enum ic_peer_event ev, const char *why)
{
	struct node *n = opaque;

	if (ev == IC_PEER_UP) {
		n->ups++;
		n->up_ns = clock_now_ns();
	} else {
		n->downs++;
		n->down_ns = clock_now_ns();
	}
}

struct setup {
	const char *inner;
	struct ic_link_params link;
	uint64_t seed;
	uint32_t dead_ms;
	uint16_t port[2];  /* tcp only: listen ports of nodes 0 and 1 */
};

/* A port nobody listens on right now (the kernel's choice), for tcp tests that run in parallel. */
static uint16_t free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static int hub_counter;

/* Two fabric nodes, 0 and 1, over s->inner. */
static void pair_start(struct node n[2], const struct setup *s)
{
	char hub[32];

	snprintf(hub, sizeof(hub), "fab%d", hub_counter++);
	for (uint32_t id = 0; id < 2; id++) {
		struct ic_peer_addr peer = { .id = !id };
		char listen[IC_ADDR_MAX];
		struct ic_config cfg = { 0 };

		memset(&n[id], 0, sizeof(n[id]));
		n[id].id = id;
		if (!strcmp(s->inner, "tcp")) {
			snprintf(listen, sizeof(listen), "127.0.0.1:%u", s->port[id]);
			snprintf(peer.addr, sizeof(peer.addr), "127.0.0.1:%u", s->port[!id]);
		} else {
			snprintf(listen, sizeof(listen), "%s/%u", hub, id);
			snprintf(peer.addr, sizeof(peer.addr), "%s/%u", hub, !id);
		}
		cfg.self = id;
		cfg.listen = listen;
		cfg.peers = &peer;
		cfg.n_peers = 1;
		cfg.key = key;
		cfg.key_len = sizeof(key);
		cfg.dead_ms = s->dead_ms;
		ic_accept_type(&cfg, T_DATA);
		cfg.on_frame = on_frame;
		cfg.on_peer = on_peer;
		cfg.opaque = &n[id];
		cfg.inner = s->inner;
		cfg.link = s->link;
		cfg.seed = s->seed;
		assert_int_equal(ic_create("fabric", &cfg, &n[id].t), 0);
	}
}

static void pair_stop(struct node n[2])
{
	ic_destroy(n[0].t);
	ic_destroy(n[1].t);
}

typedef bool (*cond_fn)(struct node n[2], void *arg);

static bool pump_until(struct node n[2], cond_fn cond, void *arg, int deadline_ms)
{
	uint64_t end = clock_now_ns() + (uint64_t)deadline_ms * NSEC_PER_MSEC;

	for (;;) {
		if (cond(n, arg))
			return true;
		if (clock_now_ns() > end)
			return false;
		ic_poll(n[1].t, 0);
		ic_poll(n[0].t, 1);
	}
}

/* Poll both for ms milliseconds whatever happens. */
static void pump_for(struct node n[2], int ms)
{
	uint64_t end = clock_now_ns() + (uint64_t)ms * NSEC_PER_MSEC;

	while (clock_now_ns() < end) {
		ic_poll(n[1].t, 0);
		ic_poll(n[0].t, 1);
	}
}

static bool both_up(struct node n[2], void *arg)
{
	return ic_peer_is_up(n[0].t, 1) && ic_peer_is_up(n[1].t, 0) && n[0].ups > n[0].downs && n[1].ups > n[1].downs;
}

static bool both_down(struct node n[2], void *arg)
{
	return n[0].downs > 0 && n[1].downs > 0;
}

static bool got(struct node n[2], void *arg)
{
	return n[1].n_recs >= *(size_t *)arg;
}

static int send_one(struct node *from, uint32_t tag)
{
	struct payload p = { tag, clock_now_ns() };
	uint8_t buf[1024] = { 0 };
	struct iovec iov[2] = { { &p, sizeof(p) }, { buf, 64 - sizeof(p) } };

	return ic_send(from->t, !from->id, T_DATA, 0, iov, 2);
}

static int send_sized(struct node *from, uint32_t tag, size_t len)
{
	static uint8_t buf[4096];
	struct payload p = { tag, clock_now_ns() };
	struct iovec iov[2] = { { &p, sizeof(p) }, { buf, len - sizeof(p) } };

	return ic_send(from->t, !from->id, T_DATA, 0, iov, 2);
}

static size_t inversions(const struct node *n)
{
	size_t inv = 0;

	for (size_t i = 1; i < n->n_recs; i++)
		if (n->recs[i].tag < n->recs[i - 1].tag)
			inv++;
	return inv;
}

/* Frames that arrived after a frame sent later than them: each held-back frame counts once. */
static size_t overtaken(const struct node *n)
{
	uint32_t max = 0;
	size_t count = 0;

	for (size_t i = 0; i < n->n_recs; i++) {
		if (i && n->recs[i].tag < max)
			count++;
		if (n->recs[i].tag > max)
			max = n->recs[i].tag;
	}
	return count;
}

static void test_latency(void **state)
{
	struct setup s = { .inner = "loop", .link = { .latency_us = 20000, .jitter_us = 5000 }, .seed = 1 };
	struct node *n = calloc(2, sizeof(*n));
	size_t want = 20;

	pair_start(n, &s);
	assert_true(pump_until(n, both_up, NULL, 2000));
	for (uint32_t i = 0; i < want; i++) {
		assert_int_equal(send_one(&n[0], i), 0);
		pump_for(n, 2);
	}
	assert_true(pump_until(n, got, &want, 5000));
	assert_int_equal(inversions(&n[1]), 0);   /* jitter alone never reorders */
	for (size_t i = 0; i < want; i++) {
		uint64_t d = n[1].recs[i].arrived_ns - n[1].recs[i].sent_ns;

		assert_true(d >= 20 * NSEC_PER_MSEC);
		assert_true(d < (20 + 5 + 200) * NSEC_PER_MSEC);
	}
	pair_stop(n);
	free(n);
}

/* every frame sent by node 0 was either delivered to node 1 or dropped by the fabric */
static bool all_accounted(struct node n[2], void *arg)
{
	struct ic_stats st;

	ic_get_stats(n[0].t, &st);
	return st.dropped + n[1].n_recs >= *(size_t *)arg;
}

static void run_loss(struct node *n, uint64_t seed, double loss, size_t count)
{
	struct setup s = { .inner = "loop", .link = { .loss = loss }, .seed = seed };
	struct ic_stats st;

	pair_start(n, &s);
	assert_true(pump_until(n, both_up, NULL, 2000));
	for (uint32_t i = 0; i < count; i++) {
		assert_int_equal(send_one(&n[0], i), 0);
		if (i % 64 == 0)
			pump_for(n, 0);
	}
	assert_true(pump_until(n, all_accounted, &count, 10000));
	ic_get_stats(n[0].t, &st);
	assert_int_equal(st.dropped + n[1].n_recs, count);
	assert_int_equal(inversions(&n[1]), 0);
	pair_stop(n);
}

static void test_loss_rate(void **state)
{
	struct node *n = calloc(2, sizeof(*n));
	const size_t count = 2000;

	run_loss(n, 42, 0.1, count);
	/* expected 1800 received, sd = sqrt(2000 * 0.1 * 0.9) = 13.4: accept +- 6 sd */
	print_message("loss 0.1 over %zu frames: %zu received\n", count, n[1].n_recs);
	assert_in_range(n[1].n_recs, 1800 - 80, 1800 + 80);
	free(n);
}

static void test_seed_replays(void **state)
{
	struct node *a = calloc(2, sizeof(*a)), *b = calloc(2, sizeof(*b)), *c = calloc(2, sizeof(*c));
	const size_t count = 2000;

	run_loss(a, 7, 0.3, count);
	run_loss(b, 7, 0.3, count);
	run_loss(c, 8, 0.3, count);
	assert_int_equal(a[1].n_recs, b[1].n_recs);
	for (size_t i = 0; i < a[1].n_recs; i++)
		assert_int_equal(a[1].recs[i].tag, b[1].recs[i].tag);
	bool differs = a[1].n_recs != c[1].n_recs;
	for (size_t i = 0; !differs && i < a[1].n_recs; i++)
		differs = a[1].recs[i].tag != c[1].recs[i].tag;
	assert_true(differs);   /* another seed, another pattern */
	free(a);
	free(b);
	free(c);
}

static void test_reorder(void **state)
{
	struct setup s = { .inner = "loop", .link = { .reorder = 0.1, .reorder_us = 3000 }, .seed = 3 };
	struct node *n = calloc(2, sizeof(*n));
	size_t want = 500;
	bool seen[500] = { false };

	pair_start(n, &s);
	assert_true(pump_until(n, both_up, NULL, 2000));
	for (uint32_t i = 0; i < want; i++)
		assert_int_equal(send_one(&n[0], i), 0);
	assert_true(pump_until(n, got, &want, 5000));
	pump_for(n, 10);
	assert_int_equal(n[1].n_recs, want);
	for (size_t i = 0; i < want; i++) {
		assert_true(n[1].recs[i].tag < want);
		assert_false(seen[n[1].recs[i].tag]);
		seen[n[1].recs[i].tag] = true;
	}
	/* expected 50 held back (sd 6.7) */
	print_message("reorder 0.1: %zu of %zu frames overtaken\n", overtaken(&n[1]), want);
	assert_in_range(overtaken(&n[1]), 15, 100);
	pair_stop(n);
	free(n);
}

static bool receiver_dropped(struct node n[2], void *arg)
{
	struct ic_stats st;

	ic_get_stats(n[1].t, &st);
	return st.dropped >= 1;
}

static void test_partition_and_heal(void **state)
{
	struct setup s = { .inner = "loop", .seed = 4 };
	struct node *n = calloc(2, sizeof(*n));
	struct ic_stats st;
	size_t want = 100;

	pair_start(n, &s);
	assert_true(pump_until(n, both_up, NULL, 2000));
	assert_int_equal(ic_fabric_partition(n[0].t, IC_ANY_PEER, true), 0);
	assert_int_equal(ic_fabric_partition(n[1].t, 0, true), 0);
	for (uint32_t i = 0; i < 100; i++)
		assert_int_equal(send_one(&n[0], i), 0);   /* accepted, then lost: the link looks alive */
	pump_for(n, 100);
	assert_int_equal(n[1].n_recs, 0);
	ic_get_stats(n[0].t, &st);
	assert_int_equal(st.dropped, 100);
	assert_int_equal(n[0].downs + n[1].downs, 0);   /* shorter than dead_ms: nobody reported down */
	assert_int_equal(ic_fabric_partition(n[0].t, IC_ANY_PEER, false), 0);
	assert_int_equal(ic_fabric_partition(n[1].t, IC_ANY_PEER, false), 0);
	for (uint32_t i = 0; i < 100; i++)
		assert_int_equal(send_one(&n[0], 100 + i), 0);
	assert_true(pump_until(n, got, &want, 5000));
	assert_int_equal(n[1].recs[0].tag, 100);
	/* a partition at the receiver alone drops incoming frames too */
	assert_int_equal(ic_fabric_partition(n[1].t, 0, true), 0);
	assert_int_equal(send_one(&n[0], 999), 0);
	assert_true(pump_until(n, receiver_dropped, NULL, 5000));
	assert_int_equal(n[1].n_recs, want);
	assert_int_equal(ic_fabric_partition(n[1].t, 7, true), -EINVAL);   /* not a peer */
	pair_stop(n);
	free(n);
}

static void test_partition_reports_down_then_up(void **state)
{
	struct setup s = { .inner = "loop", .seed = 5, .dead_ms = 200 };
	struct node *n = calloc(2, sizeof(*n));
	uint64_t t0;
	size_t want = 1;

	pair_start(n, &s);
	assert_true(pump_until(n, both_up, NULL, 2000));
	t0 = clock_now_ns();
	assert_int_equal(ic_fabric_partition(n[0].t, 1, true), 0);
	assert_int_equal(ic_fabric_partition(n[1].t, 0, true), 0);
	assert_true(pump_until(n, both_down, NULL, 3000));
	assert_true(n[0].down_ns - t0 >= 200 * NSEC_PER_MSEC);
	assert_true(n[1].down_ns - t0 >= 200 * NSEC_PER_MSEC);
	assert_false(ic_peer_is_up(n[0].t, 1));
	assert_int_equal(send_one(&n[0], 1), -ENOTCONN);
	assert_int_equal(ic_fabric_partition(n[0].t, 1, false), 0);
	assert_int_equal(ic_fabric_partition(n[1].t, 0, false), 0);
	assert_true(pump_until(n, both_up, NULL, 2000));
	assert_int_equal(n[0].ups, 2);
	assert_int_equal(send_one(&n[0], 2), 0);
	assert_true(pump_until(n, got, &want, 2000));
	assert_int_equal(n[1].recs[0].tag, 2);
	pair_stop(n);
	free(n);
}

static void test_bandwidth(void **state)
{
	/* 8 Mbit/s = 1 byte/us; 100 frames of 960 + 40 bytes on the wire: 100 ms */
	struct setup s = { .inner = "loop", .link = { .bandwidth_mbps = 8 }, .seed = 6 };
	struct node *n = calloc(2, sizeof(*n));
	size_t want = 100;
	uint64_t t0, took;

	pair_start(n, &s);
	assert_true(pump_until(n, both_up, NULL, 2000));
	t0 = clock_now_ns();
	for (uint32_t i = 0; i < want; i++)
		assert_int_equal(send_sized(&n[0], i, 960), 0);
	assert_true(pump_until(n, got, &want, 5000));
	took = n[1].recs[want - 1].arrived_ns - t0;
	print_message("100 x 1000 B at 8 Mbit/s: %.1f ms (configured 100 ms)\n", (double)took / 1e6);
	assert_true(took >= 95 * NSEC_PER_MSEC);
	assert_true(took < 1000 * NSEC_PER_MSEC);
	/* first frame: one serialization delay, not the whole burst */
	assert_true(n[1].recs[0].arrived_ns - t0 < 50 * NSEC_PER_MSEC);
	assert_int_equal(inversions(&n[1]), 0);
	pair_stop(n);
	free(n);
}

static void *lossy_main(void *arg)
{
	struct ic_link_params p = { .loss = 1.0 };

	return (void *)(intptr_t)ic_fabric_set_link(arg, IC_ANY_PEER, &p);
}

static void test_switch_at_run_time(void **state)
{
	struct setup s = { .inner = "loop", .seed = 9 };
	struct node *n = calloc(2, sizeof(*n));
	struct ic_link_params perfect = { 0 }, bad = { .loss = 1.5 };
	struct ic_stats st;
	pthread_t th;
	void *ret;
	size_t want = 10;

	pair_start(n, &s);
	assert_true(pump_until(n, both_up, NULL, 2000));
	assert_int_equal(pthread_create(&th, NULL, lossy_main, n[0].t), 0);
	pthread_join(th, &ret);
	assert_int_equal((intptr_t)ret, 0);
	for (uint32_t i = 0; i < 10; i++)
		assert_int_equal(send_one(&n[0], i), 0);
	pump_for(n, 20);
	assert_int_equal(n[1].n_recs, 0);
	ic_get_stats(n[0].t, &st);
	assert_int_equal(st.dropped, 10);
	log_set_quiet(true);
	assert_int_equal(ic_fabric_set_link(n[0].t, 1, &bad), -EINVAL);
	log_set_quiet(false);
	assert_int_equal(ic_fabric_set_link(n[0].t, 1, &perfect), 0);
	for (uint32_t i = 0; i < 10; i++)
		assert_int_equal(send_one(&n[0], i), 0);
	assert_true(pump_until(n, got, &want, 2000));
	pair_stop(n);
	free(n);
}

static void test_bad_config(void **state)
{
	struct ic_peer_addr peer = { .id = 1, .addr = "badcfg/1" };
	struct ic_config cfg = { .self = 0, .listen = "badcfg/0", .peers = &peer, .n_peers = 1, .key = key,
				 .key_len = sizeof(key), .on_frame = on_frame };
	struct ic_transport *t;

	log_set_quiet(true);
	assert_int_equal(ic_create("fabric", &cfg, &t), -EINVAL);    /* no inner */
	cfg.inner = "fabric";
	assert_int_equal(ic_create("fabric", &cfg, &t), -EINVAL);    /* itself */
	cfg.inner = "nosuch";
	assert_int_equal(ic_create("fabric", &cfg, &t), -ENOENT);
	cfg.inner = "loop";
	cfg.link.loss = -0.5;
	assert_int_equal(ic_create("fabric", &cfg, &t), -EINVAL);
	cfg.link.loss = 0;
	assert_int_equal(ic_create("fabric", &cfg, &t), 0);
	assert_string_equal(ic_name(t), "fabric");
	assert_int_equal(send_one(&(struct node){ .id = 0, .t = t }, 1), -ENOTCONN);
	ic_destroy(t);
	log_set_quiet(false);
}

/* One case over tcp: latency and a partition over real sockets (inner heartbeats keep the tcp link up). */
static void test_over_tcp(void **state)
{
	struct setup s = { .inner = "tcp", .link = { .latency_us = 5000 }, .seed = 10, .dead_ms = 300 };
	struct node *n = calloc(2, sizeof(*n));
	size_t want = 20;
	struct ic_transport *probe;
	int ret;
	struct ic_peer_addr peer = { .id = 1, .addr = "127.0.0.1:1" };
	struct ic_config cfg = { .self = 0, .peers = &peer, .n_peers = 1, .key = key, .key_len = sizeof(key),
				 .on_frame = on_frame };

	log_set_quiet(true);
	ret = ic_create("tcp", &cfg, &probe);
	log_set_quiet(false);
	if (ret == -ENOENT) {
		print_message("SKIP: the tcp transport is not in this build\n");
		free(n);
		skip();
	}
	ic_destroy(probe);
	s.port[0] = free_port();
	s.port[1] = free_port();
	pair_start(n, &s);
	assert_true(pump_until(n, both_up, NULL, 5000));
	for (uint32_t i = 0; i < want; i++)
		assert_int_equal(send_one(&n[0], i), 0);
	assert_true(pump_until(n, got, &want, 5000));
	assert_int_equal(inversions(&n[1]), 0);
	for (size_t i = 0; i < want; i++)
		assert_true(n[1].recs[i].arrived_ns - n[1].recs[i].sent_ns >= 5 * NSEC_PER_MSEC);
	/* partition longer than dead_ms: the fabric reports down although tcp heartbeats still flow */
	assert_int_equal(ic_fabric_partition(n[0].t, 1, true), 0);
	assert_int_equal(ic_fabric_partition(n[1].t, 0, true), 0);
	assert_true(pump_until(n, both_down, NULL, 5000));
	assert_int_equal(ic_fabric_partition(n[0].t, 1, false), 0);
	assert_int_equal(ic_fabric_partition(n[1].t, 0, false), 0);
	assert_true(pump_until(n, both_up, NULL, 5000));
	want++;
	assert_int_equal(send_one(&n[0], 100), 0);
	assert_true(pump_until(n, got, &want, 5000));
	assert_int_equal(n[1].recs[want - 1].tag, 100);
	pair_stop(n);
	free(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_latency),
		cmocka_unit_test(test_loss_rate),
		cmocka_unit_test(test_seed_replays),
		cmocka_unit_test(test_reorder),
		cmocka_unit_test(test_partition_and_heal),
		cmocka_unit_test(test_partition_reports_down_then_up),
		cmocka_unit_test(test_bandwidth),
		cmocka_unit_test(test_switch_at_run_time),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_over_tcp),
	};

	log_set_tag("test_fabric");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
