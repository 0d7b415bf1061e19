/* SPDX-License-Identifier: MIT */
/*
 * interconnect/endpoint: subscribers on one transport. Two (or three) endpoints in one process over the "loop"
 * transport: frames reach the subscriber owning their type and no other, every subscriber sees peer events, a
 * subscriber that left gets nothing (its frames are counted as orphans), a type nobody subscribed is a protocol
 * error for the transport, ticks bound the poll, subscription rules, wait_peers, and the copied configuration.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "interconnect/endpoint.h"
#include "util/clock.h"
#include "util/log.h"

static unsigned hub_seq;

struct rx {
	atomic_uint frames, ups, downs, ticks;
	atomic_uint last_type;
	uint32_t from;
	struct ic_endpoint *ep;     /* for the one that unsubscribes itself */
	int self_handle;
};

static void rx_frame(void *opaque, uint32_t src, const struct ic_frame *f)
{
	struct rx *r = opaque;

	r->from = src;
	atomic_store(&r->last_type, f->type);
	atomic_fetch_add(&r->frames, 1);
}

static void rx_frame_and_leave(void *opaque, uint32_t src, const struct ic_frame *f)
{
	struct rx *r = opaque;

	rx_frame(opaque, src, f);
	ic_endpoint_unsubscribe(r->ep, r->self_handle);   /* from its own callback: must not wait for itself */
}

static void rx_peer(void *opaque, uint32_t peer, enum ic_peer_event ev, const char *why)
{
	struct rx *r = opaque;

	(void)peer;
	(void)why;
	atomic_fetch_add(ev == IC_PEER_UP ? &r->ups : &r->downs, 1);
}

static int rx_tick(void *opaque)
{
	struct rx *r = opaque;

	atomic_fetch_add(&r->ticks, 1);
	return 1;
}

static const uint8_t key[32] = "test_endpoint cluster key 012345";

/* Endpoint `self` of n nodes over loop hub `hub`; key from a buffer wiped right after create. */
static struct ic_endpoint *ep_make(const char *hub, uint32_t self, unsigned n)
{
	struct ic_peer_addr peers[4];
	char listen[IC_ADDR_MAX];
	uint8_t k[sizeof(key)];
	struct ic_endpoint_config ec = { .transport = "loop" };
	struct ic_endpoint *ep;
	size_t np = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (i == self)
			continue;
		peers[np].id = i;
		snprintf(peers[np].addr, sizeof(peers[np].addr), "%s/%u", hub, i);
		np++;
	}
	snprintf(listen, sizeof(listen), "%s/%u", hub, self);
	memcpy(k, key, sizeof(k));
	ec.ic.self = self;
	ec.ic.listen = listen;
	ec.ic.peers = peers;
	ec.ic.n_peers = np;
	ec.ic.key = k;
	ec.ic.key_len = sizeof(k);
	assert_int_equal(ic_endpoint_create(&ec, &ep), 0);
	memset(k, 0, sizeof(k));              /* the endpoint holds its own copy */
	memset(peers, 0, sizeof(peers));
	memset(listen, 0, sizeof(listen));
	return ep;
}

static void hub_name(char *buf, size_t len)
{
	snprintf(buf, len, "ep%u-%d", hub_seq++, (int)getpid());
}

/* Two endpoints of one loop hub, not started. */
static void pair_make(struct ic_endpoint **ep)
{
	char hub[32];

	hub_name(hub, sizeof(hub));
	ep[0] = ep_make(hub, 0, 2);
	ep[1] = ep_make(hub, 1, 2);
}

/* Start both and wait until each sees the other. */
static void pair_start(struct ic_endpoint **ep)
{
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(ic_endpoint_start(ep[i]), 0);
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(ic_endpoint_wait_peers(ep[i], 5 * NSEC_PER_SEC), 0);
}

static bool wait_for(atomic_uint *v, unsigned want)
{
	uint64_t deadline = clock_now_ns() + 5 * NSEC_PER_SEC;

	while (atomic_load(v) < want && clock_now_ns() < deadline)
		usleep(1000);
	return atomic_load(v) >= want;
}

static void send_type(struct ic_endpoint *ep, uint32_t dst, uint8_t type)
{
	struct iovec iov = { "x", 1 };

	assert_int_equal(ic_endpoint_send(ep, dst, type, 0, &iov, 1), 0);
}

static void test_subscribe_rules(void **state)
{
	char hub[32];
	struct rx r;
	struct ic_subscriber s = { .name = "a", .type_min = 0x40, .type_max = 0x47, .on_frame = rx_frame, .opaque = &r };
	struct ic_endpoint *ep;

	(void)state;
	hub_name(hub, sizeof(hub));
	ep = ep_make(hub, 0, 2);
	log_set_quiet(true);
	assert_int_equal(ic_endpoint_subscribe(ep, &s), 0);
	s.type_min = 0x47;                                  /* overlaps 0x40-0x47 by one type */
	s.type_max = 0x50;
	assert_int_equal(ic_endpoint_subscribe(ep, &s), -EEXIST);
	s.type_min = 0x08;                                  /* below IC_TYPE_USER_MIN: the transport's own */
	s.type_max = 0x12;
	assert_int_equal(ic_endpoint_subscribe(ep, &s), -EINVAL);
	s.type_min = 0x60;
	s.type_max = 0x5f;
	assert_int_equal(ic_endpoint_subscribe(ep, &s), -EINVAL);
	s.type_max = 0x60;
	s.on_frame = NULL;
	assert_int_equal(ic_endpoint_subscribe(ep, &s), -EINVAL);
	s.on_frame = rx_frame;
	for (unsigned i = 1; i < IC_ENDPOINT_MAX_SUBS; i++) {
		s.type_min = s.type_max = (uint8_t)(0x60 + i);
		assert_int_equal(ic_endpoint_subscribe(ep, &s), (int)i);
	}
	s.type_min = s.type_max = 0x90;
	assert_int_equal(ic_endpoint_subscribe(ep, &s), -ENOSPC);
	log_set_quiet(false);
	assert_int_equal(ic_endpoint_send(ep, 1, 0x40, 0, NULL, 0), -ENOTCONN);       /* not started */
	assert_int_equal(ic_endpoint_wait_peers(ep, NSEC_PER_MSEC), -ENOTCONN);
	assert_null(ic_endpoint_transport(ep));
	assert_int_equal(ic_endpoint_start(ep), 0);
	assert_int_equal(ic_endpoint_start(ep), -EBUSY);
	s.type_min = s.type_max = 0x91;
	assert_int_equal(ic_endpoint_subscribe(ep, &s), -EBUSY);
	assert_non_null(ic_endpoint_transport(ep));
	/* the peer never comes up */
	assert_int_equal(ic_endpoint_wait_peers(ep, 50 * NSEC_PER_MSEC), -ETIMEDOUT);
	assert_false(ic_endpoint_peer_is_up(ep, 1));
	ic_endpoint_destroy(ep);
}

static void test_bad_config_refused(void **state)
{
	struct ic_peer_addr self_as_peer = { 0, "x/0" };
	struct ic_endpoint_config ec = { .transport = "loop" };
	struct ic_endpoint *ep;

	(void)state;
	log_set_quiet(true);
	ec.ic.self = 0;
	ec.ic.peers = &self_as_peer;
	ec.ic.n_peers = 1;
	assert_int_equal(ic_endpoint_create(&ec, &ep), -EINVAL);      /* self among the peers */
	ec.ic.n_peers = 0;
	ec.ic.self = IC_MAX_NODES;
	assert_int_equal(ic_endpoint_create(&ec, &ep), -EINVAL);
	ec.ic.self = 0;
	ec.transport = NULL;
	assert_int_equal(ic_endpoint_create(&ec, &ep), -EINVAL);
	ec.transport = "no-such-transport";
	assert_int_equal(ic_endpoint_create(&ec, &ep), 0);             /* the name is checked at start */
	assert_int_equal(ic_endpoint_start(ep), -ENOENT);
	ic_endpoint_destroy(ep);
	log_set_quiet(false);
}

/* Frames go to the subscriber that owns their type, and only there; peer events go to every subscriber. */
static void test_frames_reach_their_owner_only(void **state)
{
	char hub[32];
	struct rx a[2], b[2];
	struct ic_endpoint *ep[2];

	(void)state;
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	hub_name(hub, sizeof(hub));
	for (unsigned i = 0; i < 2; i++) {
		const struct ic_subscriber sa = { "a", 0x40, 0x4f, rx_frame, rx_peer, NULL, NULL, &a[i] };
		const struct ic_subscriber sb = { "b", 0x20, 0x3f, rx_frame, rx_peer, NULL, NULL, &b[i] };

		ep[i] = ep_make(hub, i, 2);
		assert_int_equal(ic_endpoint_subscribe(ep[i], &sa), 0);
		assert_int_equal(ic_endpoint_subscribe(ep[i], &sb), 1);
		assert_int_equal(ic_endpoint_start(ep[i]), 0);
	}
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(ic_endpoint_wait_peers(ep[i], 5 * NSEC_PER_SEC), 0);
	assert_true(ic_endpoint_peer_is_up(ep[0], 1));
	for (unsigned i = 0; i < 2; i++) {
		assert_true(wait_for(&a[i].ups, 1));
		assert_true(wait_for(&b[i].ups, 1));
	}
	send_type(ep[0], 1, 0x41);
	send_type(ep[0], 1, 0x4f);
	send_type(ep[0], 1, 0x20);
	send_type(ep[1], 0, 0x3f);
	assert_true(wait_for(&a[1].frames, 2));
	assert_true(wait_for(&b[1].frames, 1));
	assert_true(wait_for(&b[0].frames, 1));
	assert_int_equal(atomic_load(&a[1].frames), 2);
	assert_int_equal(atomic_load(&b[1].frames), 1);
	assert_int_equal(atomic_load(&b[1].last_type), 0x20);
	assert_int_equal(atomic_load(&b[0].last_type), 0x3f);
	assert_int_equal(b[0].from, 1);
	assert_int_equal(atomic_load(&a[0].frames), 0);
	assert_int_equal(ic_endpoint_orphan_frames(ep[1]), 0);
	/* node 1 goes away: both of node 0's subscribers hear it */
	ic_endpoint_destroy(ep[1]);
	assert_true(wait_for(&a[0].downs, 1));
	assert_true(wait_for(&b[0].downs, 1));
	ic_endpoint_destroy(ep[0]);
}

/* After unsubscribe no callback of that subscriber runs: its types are orphans, the other subscriber carries on;
 * a subscriber may leave from its own callback. */
static void test_unsubscribed_gets_nothing(void **state)
{
	struct rx a, b, c, dummy;
	struct ic_endpoint *ep[2];
	int ha, hc;

	(void)state;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	memset(&dummy, 0, sizeof(dummy));
	pair_make(ep);
	{
		const struct ic_subscriber sa = { "a", 0x40, 0x4f, rx_frame, NULL, NULL, NULL, &a };
		const struct ic_subscriber sb = { "b", 0x50, 0x5f, rx_frame, NULL, NULL, NULL, &b };
		const struct ic_subscriber sc = { "c", 0x60, 0x6f, rx_frame_and_leave, NULL, NULL, NULL, &c };
		const struct ic_subscriber s0 = { "sink", 0x40, 0x6f, rx_frame, NULL, NULL, NULL, &dummy };

		ha = ic_endpoint_subscribe(ep[1], &sa);
		assert_true(ha >= 0);
		assert_true(ic_endpoint_subscribe(ep[1], &sb) >= 0);
		hc = ic_endpoint_subscribe(ep[1], &sc);
		assert_true(hc >= 0);
		c.ep = ep[1];
		c.self_handle = hc;
		assert_int_equal(ic_endpoint_subscribe(ep[0], &s0), 0);
	}
	pair_start(ep);
	send_type(ep[0], 1, 0x40);
	assert_true(wait_for(&a.frames, 1));
	ic_endpoint_unsubscribe(ep[1], ha);
	send_type(ep[0], 1, 0x41);
	send_type(ep[0], 1, 0x50);
	assert_true(wait_for(&b.frames, 1));      /* in order after 0x41 on the same connection */
	assert_int_equal(atomic_load(&a.frames), 1);
	assert_int_equal(ic_endpoint_orphan_frames(ep[1]), 1);
	/* c leaves inside its first callback: the second frame is an orphan */
	send_type(ep[0], 1, 0x60);
	send_type(ep[0], 1, 0x61);
	send_type(ep[0], 1, 0x51);
	assert_true(wait_for(&b.frames, 2));
	assert_int_equal(atomic_load(&c.frames), 1);
	assert_int_equal(ic_endpoint_orphan_frames(ep[1]), 2);
	ic_endpoint_unsubscribe(ep[1], ha);      /* twice is harmless */
	for (unsigned i = 0; i < 2; i++)
		ic_endpoint_destroy(ep[i]);
}

/* A type no subscriber owns is not accepted by the transport: the receiving side counts a protocol error. */
static void test_unsubscribed_type_is_a_protocol_error(void **state)
{
	struct rx a, s;
	struct ic_endpoint *ep[2];
	struct ic_stats st;

	(void)state;
	memset(&a, 0, sizeof(a));
	memset(&s, 0, sizeof(s));
	pair_make(ep);
	{
		const struct ic_subscriber sa = { "a", 0x40, 0x4f, rx_frame, NULL, NULL, NULL, &a };
		const struct ic_subscriber ss = { "sender", 0x40, 0x7f, rx_frame, NULL, NULL, NULL, &s };

		assert_int_equal(ic_endpoint_subscribe(ep[1], &sa), 0);
		assert_int_equal(ic_endpoint_subscribe(ep[0], &ss), 0);
	}
	pair_start(ep);
	log_set_quiet(true);
	send_type(ep[0], 1, 0x70);
	uint64_t deadline = clock_now_ns() + 5 * NSEC_PER_SEC;

	do {
		ic_endpoint_get_stats(ep[1], &st);
		if (st.proto_errors)
			break;
		usleep(1000);
	} while (clock_now_ns() < deadline);
	log_set_quiet(false);
	assert_true(st.proto_errors >= 1);
	assert_int_equal(atomic_load(&a.frames), 0);
	for (unsigned i = 0; i < 2; i++)
		ic_endpoint_destroy(ep[i]);
}

/* A subscriber's tick runs every round and its answer bounds the wait: asking for 1 ms gives many rounds in
 * 200 ms of an idle endpoint (without it one round would wait up to a second). */
static void test_tick_bounds_the_poll(void **state)
{
	char hub[32];
	struct rx t;
	struct ic_endpoint *ep;

	(void)state;
	memset(&t, 0, sizeof(t));
	hub_name(hub, sizeof(hub));
	ep = ep_make(hub, 0, 1);
	{
		const struct ic_subscriber st = { "ticker", 0x40, 0x40, rx_frame, NULL, rx_tick, NULL, &t };

		assert_int_equal(ic_endpoint_subscribe(ep, &st), 0);
	}
	assert_int_equal(ic_endpoint_start(ep), 0);
	assert_int_equal(ic_endpoint_wait_peers(ep, NSEC_PER_SEC), 0);    /* no peers: at once */
	usleep(200 * 1000);
	assert_true(atomic_load(&t.ticks) >= 10);
	ic_endpoint_destroy(ep);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_subscribe_rules),
		cmocka_unit_test(test_bad_config_refused),
		cmocka_unit_test(test_frames_reach_their_owner_only),
		cmocka_unit_test(test_unsubscribed_gets_nothing),
		cmocka_unit_test(test_unsubscribed_type_is_a_protocol_error),
		cmocka_unit_test(test_tick_bounds_the_poll),
	};

	log_set_tag("test_endpoint");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
