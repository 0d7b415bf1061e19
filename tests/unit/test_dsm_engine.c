/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the dsm protocol engine: 2-4 engines driven by hand, messages delivered one by one in a chosen
 * order, asserting the exact actions produced (type, page, mode, data source, destination) and the states.
 * Every row of the state tables in docs/dsm.md and every race listed there has a test here.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dsm/protocol.h"
#include "util/log.h"

#define MAXN 4
#define NET_MAX 256

struct tnode {
	struct dsm_engine *e;
	struct dsm_action v[512];
	struct dsm_actions out;
	uint64_t timer;             /* when of the last TIMER action */
};

struct wire {
	uint32_t src, dst;
	size_t len;
	uint8_t buf[sizeof(struct dsm_msg) + DSM_PAGE_SIZE];
};

static struct tnode nodes[MAXN];
static uint32_t n_nodes;
static struct wire net[NET_MAX];
static uint32_t net_n;

static void setup_cluster(uint32_t n, uint64_t n_pages, const uint32_t *home, uint64_t lease_ns, uint64_t retry_ns)
{
	n_nodes = n;
	net_n = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct dsm_config cfg;

		dsm_config_init(&cfg);
		cfg.self = i;
		cfg.n_nodes = n;
		cfg.n_pages = n_pages;
		cfg.home = home;
		cfg.lease_ns = lease_ns;
		cfg.retry_ns = retry_ns;
		memset(&nodes[i], 0, sizeof(nodes[i]));
		assert_int_equal(dsm_engine_create(&cfg, &nodes[i].e), 0);
		assert_true(dsm_engine_max_actions(nodes[i].e) <= 512);
	}
}

static int teardown(void **state)
{
	for (uint32_t i = 0; i < n_nodes; i++)
		dsm_engine_destroy(nodes[i].e);
	n_nodes = 0;
	return 0;
}

/* Remove TIMER actions (remembering the last) so tests can assert the exact list of the others. */
static struct dsm_actions *strip(uint32_t n)
{
	struct dsm_actions *o = &nodes[n].out;
	uint32_t k = 0;

	assert_int_equal(o->overflow, 0);
	for (uint32_t i = 0; i < o->n; i++) {
		if (o->v[i].type == DSM_ACT_TIMER)
			nodes[n].timer = o->v[i].when;
		else
			o->v[k++] = o->v[i];
	}
	o->n = k;
	return o;
}

static struct dsm_actions *fault(uint32_t n, uint64_t page, bool write, uint64_t now)
{
	dsm_actions_init(&nodes[n].out, nodes[n].v, 512);
	assert_int_equal(dsm_engine_fault(nodes[n].e, page, write, now, &nodes[n].out), 0);
	return strip(n);
}

static int recv_ret;
static uint32_t recv_raw_n;     /* actions appended by the last recv, TIMER included */

static struct dsm_actions *recv_raw(uint32_t dst, uint32_t src, const void *buf, size_t len, uint64_t now)
{
	dsm_actions_init(&nodes[dst].out, nodes[dst].v, 512);
	recv_ret = dsm_engine_recv(nodes[dst].e, src, buf, len, now, &nodes[dst].out);
	recv_raw_n = nodes[dst].out.n;
	if (recv_ret)
		assert_int_equal(recv_raw_n, 0);        /* a silent drop appends nothing, not even a TIMER */
	return strip(dst);
}

static struct dsm_actions *recv_msg(uint32_t dst, uint32_t src, const struct dsm_msg *m, uint64_t now)
{
	static uint8_t buf[sizeof(struct dsm_msg) + DSM_PAGE_SIZE];

	memcpy(buf, m, sizeof(*m));
	memset(buf + sizeof(*m), 0xab, DSM_PAGE_SIZE);
	return recv_raw(dst, src, buf, dsm_msg_len(m->flags), now);
}

static struct dsm_actions *timer(uint32_t n, uint64_t now)
{
	dsm_actions_init(&nodes[n].out, nodes[n].v, 512);
	assert_int_equal(dsm_engine_timer(nodes[n].e, now, &nodes[n].out), 0);
	return strip(n);
}

static struct dsm_actions *peer_down(uint32_t n, uint32_t peer, uint64_t now)
{
	dsm_actions_init(&nodes[n].out, nodes[n].v, 512);
	assert_int_equal(dsm_engine_peer_down(nodes[n].e, peer, now, &nodes[n].out), 0);
	return strip(n);
}

/* Deliver the message of SEND action a (emitted by node src) to its destination. */
static struct dsm_actions *deliver(uint32_t src, const struct dsm_action *a, uint64_t now)
{
	struct dsm_msg m = a->msg;

	assert_int_equal(a->type, DSM_ACT_SEND);
	return recv_msg(a->peer, src, &m, now);
}

/* Copy the SEND actions of o (from node src) onto the in-flight list. */
static void net_push(uint32_t src, const struct dsm_actions *o)
{
	for (uint32_t i = 0; i < o->n; i++) {
		if (o->v[i].type != DSM_ACT_SEND)
			continue;
		assert_true(net_n < NET_MAX);
		struct wire *w = &net[net_n++];

		w->src = src;
		w->dst = o->v[i].peer;
		w->len = dsm_msg_len(o->v[i].msg.flags);
		memcpy(w->buf, &o->v[i].msg, sizeof(struct dsm_msg));
		memset(w->buf + sizeof(struct dsm_msg), 0xcd, DSM_PAGE_SIZE);
	}
}

/* Deliver everything in flight, FIFO, until the network is quiet. */
static void settle(uint64_t now)
{
	while (net_n > 0) {
		struct wire w = net[0];

		memmove(&net[0], &net[1], (net_n - 1) * sizeof(net[0]));
		net_n--;
		struct dsm_actions *o = recv_raw(w.dst, w.src, w.buf, w.len, now);

		assert_int_equal(recv_ret, 0);
		net_push(w.dst, o);
	}
}

static void fault_settle(uint32_t n, uint64_t page, bool write, uint64_t now)
{
	net_push(n, fault(n, page, write, now));
	settle(now);
}

static void expect_send(const struct dsm_action *a, uint32_t dst, uint8_t type, uint64_t page, enum dsm_data data)
{
	assert_int_equal(a->type, DSM_ACT_SEND);
	assert_int_equal(a->peer, dst);
	assert_string_equal(dsm_msg_type_name(a->msg.type), dsm_msg_type_name(type));
	assert_int_equal(a->msg.page, page);
	assert_int_equal(a->page, page);
	assert_int_equal(a->data, data);
	assert_int_equal(!!(a->msg.flags & DSM_MF_DATA), data != DSM_DATA_NONE);
	assert_int_equal(a->msg.version, DSM_WIRE_VERSION);
}

static void expect_map(const struct dsm_action *a, uint64_t page, enum dsm_mode mode, enum dsm_data data)
{
	assert_int_equal(a->type, DSM_ACT_MAP);
	assert_int_equal(a->page, page);
	assert_int_equal(a->mode, mode);
	assert_string_equal(dsm_data_name(a->data), dsm_data_name(data));
	if (data == DSM_DATA_MSG)
		assert_non_null(a->payload);
}

static void expect_act(const struct dsm_action *a, enum dsm_action_type type, uint64_t page)
{
	assert_string_equal(dsm_action_type_name(a->type), dsm_action_type_name(type));
	assert_int_equal(a->page, page);
}

static enum dsm_cache_state cstate(uint32_t n, uint64_t page)
{
	return dsm_engine_cache_state(nodes[n].e, page);
}

static struct dsm_home_info hinfo(uint64_t page)
{
	struct dsm_home_info hi;
	uint32_t h = dsm_engine_home_of(nodes[0].e, page);

	assert_int_equal(dsm_engine_home_info(nodes[h].e, page, &hi), 0);
	return hi;
}

static struct dsm_stats stats(uint32_t n)
{
	struct dsm_stats s;

	dsm_engine_get_stats(nodes[n].e, &s);
	return s;
}

static struct dsm_msg mk(uint8_t type, uint16_t flags, uint64_t page, uint64_t ver, uint32_t req, uint32_t requester)
{
	struct dsm_msg m = {
		.version = DSM_WIRE_VERSION, .type = type, .flags = flags, .epoch = 1, .page = page,
		.page_version = ver, .req_id = req, .requester = (uint16_t)requester,
	};
	return m;
}

/* ---- basic transitions ---------------------------------------------------------------------------------- */

/* 3 nodes, 6 pages: node 0 homes 0-1, node 1 homes 2-3, node 2 homes 4-5. */
static void test_zero_page_grant(void **state)
{
	struct dsm_actions *o;
	struct dsm_action req, grant;

	setup_cluster(3, 6, NULL, 0, 1000000);
	assert_int_equal(dsm_engine_home_of(nodes[0].e, 0), 0);
	assert_int_equal(dsm_engine_home_of(nodes[0].e, 5), 2);
	assert_int_equal(dsm_engine_n_homed(nodes[1].e), 2);
	assert_int_equal(dsm_engine_home_slot(nodes[1].e, 3), 1);
	assert_int_equal(dsm_engine_home_slot(nodes[1].e, 0), -1);

	o = fault(1, 0, false, 10);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 0, DSM_MSG_READ_REQ, 0, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.requester, 1);
	assert_int_equal(o->v[0].msg.req_id, 1);
	assert_int_equal(cstate(1, 0), DSM_C_IS);
	assert_int_equal(nodes[1].timer, 10 + 1000000);     /* retransmission armed */
	req = o->v[0];

	o = deliver(1, &req, 20);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.flags, DSM_MF_ZERO);           /* read-only, zeros, no bytes */
	assert_int_equal(hinfo(0).state, DSM_H_GRANT_WAIT);
	grant = o->v[0];

	o = deliver(0, &grant, 30);
	assert_int_equal(o->n, 2);
	expect_map(&o->v[0], 0, DSM_MODE_RO, DSM_DATA_ZERO);
	expect_send(&o->v[1], 0, DSM_MSG_GRANT_ACK, 0, DSM_DATA_NONE);
	assert_int_equal(cstate(1, 0), DSM_C_SHARED);
	assert_int_equal(nodes[1].timer, 0);                        /* nothing outstanding: disarmed */

	o = deliver(1, &o->v[1], 40);
	assert_int_equal(o->n, 0);
	struct dsm_home_info hi = hinfo(0);

	assert_int_equal(hi.state, DSM_H_SHARED);
	assert_true(hi.never_written);
	assert_int_equal(hi.n_sharers, 1);
	assert_true(dsm_engine_home_is_sharer(nodes[0].e, 0, 1));
	assert_int_equal(stats(0).grants_zero, 1);
	assert_int_equal(stats(1).faults_read_miss, 1);
	assert_int_equal(stats(1).msgs_tx[DSM_MSG_READ_REQ - DSM_MSG_TYPE_MIN], 1);
	assert_int_equal(stats(0).msgs_rx[DSM_MSG_READ_REQ - DSM_MSG_TYPE_MIN], 1);

	/* a write miss on a never-written page: RW + zeros */
	o = fault(2, 1, true, 50);
	expect_send(&o->v[0], 0, DSM_MSG_WRITE_REQ, 1, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.flags, 0);
	o = deliver(2, &o->v[0], 60);
	expect_send(&o->v[0], 2, DSM_MSG_GRANT, 1, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.flags, DSM_MF_ZERO | DSM_MF_RW);
	assert_int_equal(o->v[0].msg.page_version, 1);
	o = deliver(0, &o->v[0], 70);
	expect_map(&o->v[0], 1, DSM_MODE_RW, DSM_DATA_ZERO);
	assert_int_equal(cstate(2, 1), DSM_C_MODIFIED);
	assert_false(hinfo(1).never_written);
	assert_int_equal(hinfo(1).owner, 2);
}

/* The home's own accesses go through the same logic, without any SEND. */
static void test_local_home_access(void **state)
{
	struct dsm_actions *o;

	setup_cluster(2, 4, NULL, 0, 1000000);
	o = fault(0, 0, false, 1);
	assert_int_equal(o->n, 1);
	expect_map(&o->v[0], 0, DSM_MODE_RO, DSM_DATA_ZERO);
	assert_int_equal(cstate(0, 0), DSM_C_SHARED);
	assert_int_equal(hinfo(0).state, DSM_H_SHARED);

	o = fault(0, 0, true, 2);                  /* upgrade, no other sharer: KEEP */
	assert_int_equal(o->n, 1);
	expect_map(&o->v[0], 0, DSM_MODE_RW, DSM_DATA_KEEP);
	assert_int_equal(cstate(0, 0), DSM_C_MODIFIED);
	assert_int_equal(hinfo(0).owner, 0);
	assert_int_equal(stats(0).msgs_local, 6);  /* REQ, GRANT, GRANT_ACK, twice */
	for (int t = 0; t < (int)DSM_MSG_NTYPES; t++)
		assert_int_equal(stats(0).msgs_tx[t], 0);

	/* a remote reader: FETCH to self = write-protect, store our bytes, grant from the home store */
	o = fault(1, 0, false, 3);
	o = deliver(1, &o->v[0], 4);
	assert_int_equal(o->n, 3);
	expect_act(&o->v[0], DSM_ACT_WRITE_PROTECT, 0);
	expect_act(&o->v[1], DSM_ACT_STORE, 0);
	assert_int_equal(o->v[1].data, DSM_DATA_LOCAL);
	expect_send(&o->v[2], 1, DSM_MSG_GRANT, 0, DSM_DATA_HOME);
	assert_int_equal(cstate(0, 0), DSM_C_SHARED);
	o = deliver(0, &o->v[2], 5);
	expect_map(&o->v[0], 0, DSM_MODE_RO, DSM_DATA_MSG);
	deliver(1, &o->v[1], 6);

	/* remote writer: the home's own S copy is invalidated inside the engine, before the grant */
	o = fault(1, 0, true, 7);
	expect_send(&o->v[0], 0, DSM_MSG_WRITE_REQ, 0, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.flags, DSM_MF_UPGRADE);
	o = deliver(1, &o->v[0], 8);
	assert_int_equal(o->n, 2);
	expect_act(&o->v[0], DSM_ACT_UNMAP, 0);
	expect_send(&o->v[1], 1, DSM_MSG_GRANT, 0, DSM_DATA_NONE);  /* KEEP: node 1 is a sharer */
	assert_int_equal(o->v[1].msg.flags, DSM_MF_RW);
	assert_int_equal(cstate(0, 0), DSM_C_INVALID);
	o = deliver(0, &o->v[1], 9);
	expect_map(&o->v[0], 0, DSM_MODE_RW, DSM_DATA_KEEP);
	deliver(1, &o->v[1], 10);

	/* the home writes again: INV to the remote owner, its data stored, local grant from the home store */
	o = fault(0, 0, true, 11);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_INV, 0, DSM_DATA_NONE);
	o = deliver(0, &o->v[0], 12);
	assert_int_equal(o->n, 4);
	expect_act(&o->v[0], DSM_ACT_WRITE_PROTECT, 0);
	expect_act(&o->v[1], DSM_ACT_STASH, 0);
	expect_send(&o->v[2], 0, DSM_MSG_INV_ACK, 0, DSM_DATA_STASH);
	expect_act(&o->v[3], DSM_ACT_UNMAP, 0);
	o = deliver(1, &o->v[2], 13);
	assert_int_equal(o->n, 3);
	expect_act(&o->v[0], DSM_ACT_STORE, 0);
	assert_int_equal(o->v[0].data, DSM_DATA_MSG);
	assert_non_null(o->v[0].payload);
	expect_send(&o->v[1], 1, DSM_MSG_DATA_ACK, 0, DSM_DATA_NONE);
	expect_map(&o->v[2], 0, DSM_MODE_RW, DSM_DATA_HOME);
	assert_int_equal(cstate(0, 0), DSM_C_MODIFIED);
	o = deliver(0, &o->v[1], 14);
	assert_int_equal(o->n, 1);
	expect_act(&o->v[0], DSM_ACT_DROP_STASH, 0);
}

/* Read miss served from the home store, and read miss while another node holds M (fetch + downgrade). */
static void test_read_miss_paths(void **state)
{
	struct dsm_actions *o;
	struct dsm_action fetch, ack, grant;

	setup_cluster(3, 6, NULL, 0, 1000000);
	fault_settle(1, 0, true, 1);                    /* node 1 owns page 0 (home 0) */
	assert_int_equal(cstate(1, 0), DSM_C_MODIFIED);

	o = fault(2, 0, false, 2);
	o = deliver(2, &o->v[0], 3);
	assert_int_equal(o->n, 1);
	fetch = o->v[0];
	expect_send(&fetch, 1, DSM_MSG_FETCH, 0, DSM_DATA_NONE);
	assert_int_equal(fetch.msg.page_version, 1);
	assert_int_equal(fetch.msg.requester, 2);
	assert_int_equal(hinfo(0).state, DSM_H_FETCH_WAIT);

	o = deliver(0, &fetch, 4);
	assert_int_equal(o->n, 2);
	expect_act(&o->v[0], DSM_ACT_WRITE_PROTECT, 0);
	expect_send(&o->v[1], 0, DSM_MSG_FETCH_ACK, 0, DSM_DATA_LOCAL);
	assert_int_equal(cstate(1, 0), DSM_C_SHARED);
	assert_int_equal(stats(1).downgrades, 1);
	ack = o->v[1];

	o = deliver(1, &ack, 5);
	assert_int_equal(o->n, 2);
	expect_act(&o->v[0], DSM_ACT_STORE, 0);
	assert_int_equal(o->v[0].data, DSM_DATA_MSG);
	expect_send(&o->v[1], 2, DSM_MSG_GRANT, 0, DSM_DATA_HOME);     /* data flows owner -> home -> requester */
	assert_int_equal(o->v[1].msg.flags, DSM_MF_DATA);
	grant = o->v[1];
	o = deliver(0, &grant, 6);
	expect_map(&o->v[0], 0, DSM_MODE_RO, DSM_DATA_MSG);
	deliver(2, &o->v[1], 7);
	assert_int_equal(hinfo(0).state, DSM_H_SHARED);
	assert_int_equal(hinfo(0).n_sharers, 2);
	assert_true(dsm_engine_home_is_sharer(nodes[0].e, 0, 1));
	assert_true(dsm_engine_home_is_sharer(nodes[0].e, 0, 2));

	/* duplicate FETCH (our FETCH_ACK lost): the S copy answers again, nothing else changes */
	o = deliver(0, &fetch, 8);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 0, DSM_MSG_FETCH_ACK, 0, DSM_DATA_LOCAL);
	assert_int_equal(recv_ret, 0);                   /* answered: an effect, though counted a duplicate */
	assert_int_equal(stats(1).drops[DSM_DROP_DUPLICATE], 1);
	/* ...and the home drops that late ack */
	deliver(1, &o->v[0], 9);
	assert_int_equal(recv_ret, -EPROTO);
	assert_int_equal(nodes[0].out.n, 0);
	assert_int_equal(stats(0).drops[DSM_DROP_DUPLICATE], 1);

	/* a read miss now comes straight from the home store (valid: nobody holds M) */
	fault_settle(1, 1, false, 10);
	o = fault(2, 2, false, 11);                      /* page 2, home node 1 */
	expect_send(&o->v[0], 1, DSM_MSG_READ_REQ, 2, DSM_DATA_NONE);
	/* node 0 reads page 0, which it homes: local grant from the home store */
	o = fault(0, 0, false, 12);
	assert_int_equal(o->n, 1);
	expect_map(&o->v[0], 0, DSM_MODE_RO, DSM_DATA_HOME);
	assert_int_equal(hinfo(0).n_sharers, 3);
}

/* Write miss with 3 sharers (one of them the home itself): granted only after every ack. */
static void test_write_miss_sharers(void **state)
{
	static const uint32_t home[2] = { 3, 3 };
	struct dsm_actions *o;
	struct dsm_action inv0, inv1, ack0, ack1;

	setup_cluster(4, 2, home, 0, 1000000);
	fault_settle(0, 0, true, 1);
	fault_settle(1, 0, false, 2);
	fault_settle(3, 0, false, 3);
	assert_int_equal(hinfo(0).n_sharers, 3);

	o = fault(2, 0, true, 4);
	o = deliver(2, &o->v[0], 5);
	/* INV to 0 and 1 on the wire; the home's own copy is dropped inside the engine */
	assert_int_equal(o->n, 3);
	expect_send(&o->v[0], 0, DSM_MSG_INV, 0, DSM_DATA_NONE);
	expect_send(&o->v[1], 1, DSM_MSG_INV, 0, DSM_DATA_NONE);
	expect_act(&o->v[2], DSM_ACT_UNMAP, 0);
	assert_int_equal(cstate(3, 0), DSM_C_INVALID);
	inv0 = o->v[0];
	inv1 = o->v[1];
	assert_int_equal(hinfo(0).state, DSM_H_INV_WAIT);
	assert_int_equal(hinfo(0).acks_pending, 2);

	o = deliver(3, &inv1, 6);
	assert_int_equal(o->n, 2);
	expect_act(&o->v[0], DSM_ACT_UNMAP, 0);
	expect_send(&o->v[1], 3, DSM_MSG_INV_ACK, 0, DSM_DATA_NONE);
	ack1 = o->v[1];
	assert_int_equal(stats(1).invalidations, 1);
	o = deliver(3, &inv0, 6);
	ack0 = o->v[1];

	o = deliver(1, &ack1, 7);
	assert_int_equal(o->n, 0);                      /* N-1 acks: nothing granted */
	assert_int_equal(hinfo(0).acks_pending, 1);
	assert_int_equal(cstate(2, 0), DSM_C_IM);
	o = deliver(1, &ack1, 7);                       /* a duplicate ack does not count twice */
	assert_int_equal(o->n, 0);
	assert_int_equal(recv_ret, -EPROTO);
	assert_int_equal(hinfo(0).acks_pending, 1);

	o = deliver(0, &ack0, 8);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 2, DSM_MSG_GRANT, 0, DSM_DATA_HOME);
	assert_int_equal(o->v[0].msg.flags, DSM_MF_RW | DSM_MF_DATA);
	assert_int_equal(o->v[0].msg.page_version, 2);
	o = deliver(3, &o->v[0], 9);
	expect_map(&o->v[0], 0, DSM_MODE_RW, DSM_DATA_MSG);
	assert_int_equal(hinfo(0).owner, 2);
	assert_int_equal(hinfo(0).n_sharers, 0);
}

/* Read grants do not wait for each other's GRANT_ACK; a write waits until every read grant is acknowledged. */
static void test_concurrent_read_grants(void **state)
{
	static const uint32_t home[1] = { 3 };
	struct dsm_actions *o;
	struct dsm_action r0, r1, w2, g0, g1, ack0, ack1;

	setup_cluster(4, 1, home, 0, 1000);
	r0 = fault(0, 0, false, 1)->v[0];
	r1 = fault(1, 0, false, 1)->v[0];
	w2 = fault(2, 0, true, 1)->v[0];
	g0 = deliver(0, &r0, 2)->v[0];
	expect_send(&g0, 0, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	o = deliver(1, &r1, 3);                          /* granted at once, node 0 has not acked yet */
	assert_int_equal(o->n, 1);
	g1 = o->v[0];
	expect_send(&g1, 1, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	assert_int_equal(g1.msg.flags, DSM_MF_ZERO);
	assert_int_equal(hinfo(0).state, DSM_H_GRANT_WAIT);
	assert_int_equal(hinfo(0).grants_unacked, 2);

	o = deliver(2, &w2, 4);                          /* a write waits for both acks */
	assert_int_equal(o->n, 0);
	assert_int_equal(hinfo(0).queued, 1);

	/* node 1's grant is lost: the home resends it (same req_id) */
	o = timer(3, 2 + 1000);
	assert_int_equal(o->n, 2);
	expect_send(&o->v[0], 0, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	expect_send(&o->v[1], 1, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	assert_int_equal(o->v[1].msg.req_id, g1.msg.req_id);
	g1 = o->v[1];

	ack0 = deliver(3, &g0, 1003)->v[1];
	ack1 = deliver(3, &g1, 1003)->v[1];
	o = deliver(0, &ack0, 1004);
	assert_int_equal(o->n, 0);                       /* node 1's grant still unacknowledged */
	o = deliver(1, &ack1, 1005);
	assert_int_equal(o->n, 2);
	expect_send(&o->v[0], 0, DSM_MSG_INV, 0, DSM_DATA_NONE);
	expect_send(&o->v[1], 1, DSM_MSG_INV, 0, DSM_DATA_NONE);
	assert_int_equal(hinfo(0).grants_unacked, 0);
	assert_int_equal(hinfo(0).state, DSM_H_INV_WAIT);
}

static void test_upgrade(void **state)
{
	struct dsm_actions *o;

	setup_cluster(3, 6, NULL, 0, 1000000);
	fault_settle(1, 0, false, 1);
	fault_settle(2, 0, false, 2);

	o = fault(1, 0, true, 3);
	assert_int_equal(stats(1).faults_upgrade, 1);
	assert_int_equal(cstate(1, 0), DSM_C_SM);
	expect_send(&o->v[0], 0, DSM_MSG_WRITE_REQ, 0, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.flags, DSM_MF_UPGRADE);
	o = deliver(1, &o->v[0], 4);
	expect_send(&o->v[0], 2, DSM_MSG_INV, 0, DSM_DATA_NONE);      /* the other sharer only */
	assert_int_equal(o->n, 1);
	o = deliver(0, &o->v[0], 5);
	o = deliver(2, &o->v[1], 6);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_GRANT, 0, DSM_DATA_NONE);     /* KEEP */
	assert_int_equal(o->v[0].msg.flags, DSM_MF_RW);
	o = deliver(0, &o->v[0], 7);
	assert_int_equal(o->n, 2);
	expect_map(&o->v[0], 0, DSM_MODE_RW, DSM_DATA_KEEP);
	expect_send(&o->v[1], 0, DSM_MSG_GRANT_ACK, 0, DSM_DATA_NONE);
	assert_int_equal(cstate(1, 0), DSM_C_MODIFIED);
}

/* ---- races ---------------------------------------------------------------------------------------------- */

/* Node 1 in S sends an upgrade; the home meanwhile invalidates it for node 2's upgrade. The home must notice
 * node 1 no longer holds a copy and send data (not KEEP). */
static void test_upgrade_racing_invalidation(void **state)
{
	struct dsm_actions *o;
	struct dsm_action up1, up2, inv, gack2;

	setup_cluster(3, 6, NULL, 0, 1000000);
	fault_settle(1, 0, true, 1);                    /* make the page written, so data is not ZERO */
	fault_settle(2, 0, false, 2);                   /* FETCH: 1 and 2 share it */
	assert_int_equal(cstate(1, 0), DSM_C_SHARED);

	up1 = fault(1, 0, true, 3)->v[0];
	up2 = fault(2, 0, true, 3)->v[0];
	o = deliver(2, &up2, 4);                        /* node 2's upgrade wins */
	inv = o->v[0];
	expect_send(&inv, 1, DSM_MSG_INV, 0, DSM_DATA_NONE);

	o = deliver(0, &inv, 5);                        /* node 1 in SM loses its copy, keeps its request */
	assert_int_equal(o->n, 2);
	expect_act(&o->v[0], DSM_ACT_UNMAP, 0);
	expect_send(&o->v[1], 0, DSM_MSG_INV_ACK, 0, DSM_DATA_NONE);
	assert_int_equal(cstate(1, 0), DSM_C_IM);
	o = deliver(1, &o->v[1], 6);
	expect_send(&o->v[0], 2, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	o = deliver(0, &o->v[0], 7);
	expect_map(&o->v[0], 0, DSM_MODE_RW, DSM_DATA_KEEP);
	gack2 = o->v[1];

	o = deliver(1, &up1, 8);                        /* arrives while node 2's grant is unacknowledged */
	assert_int_equal(o->n, 0);
	assert_int_equal(hinfo(0).queued, 1);
	assert_int_equal(stats(0).queued, 1);
	o = deliver(2, &gack2, 9);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 2, DSM_MSG_INV, 0, DSM_DATA_NONE);       /* take it from the new owner */
	o = deliver(0, &o->v[0], 10);
	o = deliver(2, &o->v[2], 11);
	assert_int_equal(o->n, 3);
	expect_act(&o->v[0], DSM_ACT_STORE, 0);
	expect_send(&o->v[1], 2, DSM_MSG_DATA_ACK, 0, DSM_DATA_NONE);
	expect_send(&o->v[2], 1, DSM_MSG_GRANT, 0, DSM_DATA_HOME);     /* data, not KEEP */
	assert_int_equal(o->v[2].msg.flags, DSM_MF_RW | DSM_MF_DATA);
	o = deliver(0, &o->v[2], 12);
	expect_map(&o->v[0], 0, DSM_MODE_RW, DSM_DATA_MSG);
	assert_int_equal(cstate(1, 0), DSM_C_MODIFIED);

	/* a KEEP grant to a node without a copy is refused, never installed */
	struct dsm_msg bad = mk(DSM_MSG_GRANT, DSM_MF_RW, 2, 5, 1, 0);

	fault(0, 2, true, 13);                         /* node 0: IM on page 2 (home 1), req 1 */
	o = recv_msg(0, 1, &bad, 14);
	assert_int_equal(recv_ret, -EPROTO);
	assert_int_equal(o->n, 0);
	assert_int_equal(cstate(0, 2), DSM_C_IM);
	assert_int_equal(stats(0).drops[DSM_DROP_BAD_STATE], 1);
}

/* A holds S; the home INVs it for writer B; A's ack is lost; A faults again (IS) and its READ_REQ crosses the
 * retransmitted INV. */
static void test_request_crossing_invalidation(void **state)
{
	struct dsm_actions *o;
	struct dsm_action inv, rreq;

	setup_cluster(3, 6, NULL, 0, 1000);
	fault_settle(1, 0, false, 1);
	o = fault(2, 0, true, 2);
	o = deliver(2, &o->v[0], 3);
	inv = o->v[0];
	o = deliver(0, &inv, 4);                        /* A drops its copy; the ack is lost */
	assert_int_equal(cstate(1, 0), DSM_C_INVALID);

	o = fault(1, 0, false, 5);
	rreq = o->v[0];
	assert_int_equal(cstate(1, 0), DSM_C_IS);
	o = deliver(1, &rreq, 6);                       /* queued behind B's write */
	assert_int_equal(o->n, 0);
	assert_int_equal(hinfo(0).queued, 1);

	o = timer(0, 3 + 1000);                         /* home resends the INV */
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_INV, 0, DSM_DATA_NONE);
	assert_int_equal(stats(0).retransmissions, 1);
	o = deliver(0, &o->v[0], 1004);                 /* A, in IS, acks again without touching anything */
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 0, DSM_MSG_INV_ACK, 0, DSM_DATA_NONE);
	assert_int_equal(cstate(1, 0), DSM_C_IS);
	o = deliver(1, &o->v[0], 1005);
	expect_send(&o->v[0], 2, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	o = deliver(0, &o->v[0], 1006);
	o = deliver(2, &o->v[1], 1007);                 /* B's ack: A's read is served: FETCH from B */
	expect_send(&o->v[0], 2, DSM_MSG_FETCH, 0, DSM_DATA_NONE);
	net_push(0, o);
	settle(1008);
	assert_int_equal(cstate(1, 0), DSM_C_SHARED);
	assert_int_equal(cstate(2, 0), DSM_C_SHARED);
}

static void test_lease_deferral(void **state)
{
	const uint64_t lease = 50000;
	struct dsm_actions *o;

	setup_cluster(3, 6, NULL, lease, 1000000);
	o = fault(1, 0, true, 100);
	o = deliver(1, &o->v[0], 200);                  /* RW granted at t=200: lease until 200 + lease */
	o = deliver(0, &o->v[0], 210);
	deliver(1, &o->v[1], 220);

	o = fault(2, 0, false, 300);
	o = deliver(2, &o->v[0], 400);                  /* inside the lease: nothing happens */
	assert_int_equal(o->n, 0);
	assert_int_equal(hinfo(0).state, DSM_H_LEASE_WAIT);
	assert_int_equal(nodes[0].timer, 200 + lease);
	assert_int_equal(stats(0).lease_deferrals, 1);

	o = timer(0, 200 + lease - 1);                   /* early: still nothing */
	assert_int_equal(o->n, 0);
	assert_int_equal(hinfo(0).state, DSM_H_LEASE_WAIT);
	o = timer(0, 200 + lease);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_FETCH, 0, DSM_DATA_NONE);
	assert_int_equal(hinfo(0).state, DSM_H_FETCH_WAIT);
	assert_int_equal(stats(0).lease_deferrals, 1);

	/* a queued write after the lease ran out proceeds at once */
	net_push(0, o);
	settle(200 + lease + 10);
	assert_int_equal(cstate(2, 0), DSM_C_SHARED);
}

/* ---- duplicates, stale and garbage messages ------------------------------------------------------------- */

static void test_duplicate_request_and_grant(void **state)
{
	struct dsm_actions *o;
	struct dsm_action req, grant, gack;

	setup_cluster(2, 4, NULL, 0, 1000000);
	req = fault(1, 0, true, 1)->v[0];
	grant = deliver(1, &req, 2)->v[0];

	o = deliver(1, &req, 3);                        /* duplicate while the grant is unacknowledged: resend */
	assert_int_equal(recv_ret, 0);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.req_id, grant.msg.req_id);
	assert_int_equal(o->v[0].msg.flags, grant.msg.flags);

	o = deliver(0, &grant, 4);
	assert_int_equal(o->n, 2);
	gack = o->v[1];
	o = deliver(0, &grant, 5);                      /* duplicate grant: re-ack, no MAP */
	assert_int_equal(recv_ret, 0);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 0, DSM_MSG_GRANT_ACK, 0, DSM_DATA_NONE);
	assert_int_equal(stats(1).drops[DSM_DROP_DUPLICATE], 1);

	deliver(1, &gack, 6);
	assert_int_equal(hinfo(0).state, DSM_H_MODIFIED);
	o = deliver(1, &gack, 7);                       /* duplicate GRANT_ACK */
	assert_int_equal(recv_ret, -EPROTO);
	assert_int_equal(o->n, 0);
	o = deliver(1, &req, 8);                        /* duplicate request after completion */
	assert_int_equal(recv_ret, -EPROTO);
	assert_int_equal(o->n, 0);
	assert_int_equal(stats(0).drops[DSM_DROP_DUPLICATE], 3);
	assert_int_equal(hinfo(0).state, DSM_H_MODIFIED);

	/* an older request (req 0 < seen) is stale */
	struct dsm_msg old = req.msg;

	old.req_id = 0;
	recv_msg(0, 1, &old, 9);
	assert_int_equal(stats(0).drops[DSM_DROP_BAD_SENDER], 1);   /* req_id 0 is never valid */
}

/* A lost GRANT_ACK: the home resends the grant; a newer request from the same node also proves it arrived. */
static void test_lost_grant_ack(void **state)
{
	struct dsm_actions *o;
	struct dsm_action grant;

	setup_cluster(2, 4, NULL, 0, 1000);
	o = fault(1, 0, false, 1);
	grant = deliver(1, &o->v[0], 2)->v[0];
	deliver(0, &grant, 3);                           /* ack lost */
	o = timer(0, 2 + 1000);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	o = deliver(0, &o->v[0], 1003);
	assert_int_equal(o->n, 1);                       /* re-ack only */
	expect_send(&o->v[0], 0, DSM_MSG_GRANT_ACK, 0, DSM_DATA_NONE);

	/* ack lost again, but node 1 now upgrades: the new request finishes the old one */
	o = fault(1, 0, true, 1004);
	o = deliver(1, &o->v[0], 1005);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_GRANT, 0, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.flags, DSM_MF_RW);  /* KEEP */
	assert_int_equal(o->v[0].msg.req_id, 2);
}

static void test_duplicate_inv(void **state)
{
	struct dsm_actions *o;
	struct dsm_action inv;

	setup_cluster(3, 6, NULL, 0, 1000000);
	fault_settle(1, 0, false, 1);
	o = fault(2, 0, true, 2);
	inv = deliver(2, &o->v[0], 3)->v[0];
	o = deliver(0, &inv, 4);
	assert_int_equal(o->n, 2);
	o = deliver(0, &inv, 5);                         /* duplicate INV in I: ack again, no UNMAP */
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 0, DSM_MSG_INV_ACK, 0, DSM_DATA_NONE);
	assert_int_equal(stats(1).invalidations, 1);

	/* an INV for an older version than the copy held is stale */
	o = deliver(1, &o->v[0], 6);                     /* the home gets the ack: grant to node 2 */
	net_push(0, o);
	settle(7);
	assert_int_equal(cstate(2, 0), DSM_C_MODIFIED);
	fault_settle(1, 0, false, 8);                    /* node 1 now holds S at version 1 (FETCH from 2) */
	struct dsm_msg old = inv.msg;                    /* version 0 */

	assert_int_equal(cstate(1, 0), DSM_C_SHARED);
	o = recv_msg(1, 0, &old, 8);
	assert_int_equal(recv_ret, -EPROTO);
	assert_int_equal(o->n, 0);
	assert_int_equal(cstate(1, 0), DSM_C_SHARED);
	assert_int_equal(stats(1).drops[DSM_DROP_STALE], 1);
}

static void test_stale_epoch(void **state)
{
	struct dsm_actions *o;
	struct dsm_action req;

	setup_cluster(2, 4, NULL, 0, 1000000);
	req = fault(1, 0, false, 1)->v[0];
	assert_int_equal(req.msg.epoch, 1);
	dsm_engine_set_epoch(nodes[0].e, 2);
	o = deliver(1, &req, 2);
	assert_int_equal(recv_ret, -EPROTO);
	assert_int_equal(o->n, 0);
	assert_int_equal(stats(0).drops[DSM_DROP_OLD_EPOCH], 1);

	/* the requester learns the epoch; its retransmission carries it and is served */
	dsm_engine_set_epoch(nodes[1].e, 2);
	o = timer(1, 1 + 1000000);
	expect_send(&o->v[0], 0, DSM_MSG_READ_REQ, 0, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.epoch, 2);
	assert_int_equal(o->v[0].msg.req_id, req.msg.req_id);
	o = deliver(1, &o->v[0], 3);
	expect_send(&o->v[0], 1, DSM_MSG_GRANT, 0, DSM_DATA_NONE);

	struct dsm_msg future = o->v[0].msg;

	future.epoch = 3;
	recv_msg(1, 0, &future, 4);
	assert_int_equal(recv_ret, -EPROTO);
	assert_int_equal(stats(1).drops[DSM_DROP_NEW_EPOCH], 1);
	assert_int_equal(cstate(1, 0), DSM_C_IS);
}

static void test_garbage(void **state)
{
	struct dsm_msg m;
	struct dsm_actions *o;
	uint8_t shortbuf[8] = { 1, 0x20 };

	setup_cluster(3, 6, NULL, 0, 1000000);
	log_set_quiet(true);

#define EXPECT_DROP(dst, src, msg, reason) \
	do { \
		uint64_t before = stats(dst).drops[reason]; \
		o = recv_msg(dst, src, &(msg), 1); \
		assert_int_equal(recv_ret, -EPROTO); \
		assert_int_equal(o->n, 0); \
		assert_int_equal(stats(dst).drops[reason], before + 1); \
	} while (0)

	m = mk(DSM_MSG_READ_REQ, 0, 0, 0, 1, 1);
	m.version = 2;
	EXPECT_DROP(0, 1, m, DSM_DROP_BAD_VERSION);
	m = mk(0x29, 0, 0, 0, 1, 1);                              /* reserved type */
	EXPECT_DROP(0, 1, m, DSM_DROP_BAD_TYPE);
	m = mk(0x50, 0, 0, 0, 1, 1);                              /* not a DSM type */
	EXPECT_DROP(0, 1, m, DSM_DROP_BAD_TYPE);
	m = mk(DSM_MSG_READ_REQ, 0, 6, 0, 1, 1);                  /* page out of range */
	EXPECT_DROP(2, 1, m, DSM_DROP_BAD_PAGE);
	m = mk(DSM_MSG_READ_REQ, 0, ~0ULL, 0, 1, 1);
	EXPECT_DROP(2, 1, m, DSM_DROP_BAD_PAGE);
	m = mk(DSM_MSG_READ_REQ, 0x100, 0, 0, 1, 1);              /* unknown flag */
	EXPECT_DROP(0, 1, m, DSM_DROP_BAD_FLAGS);
	m = mk(DSM_MSG_READ_REQ, DSM_MF_RW, 0, 0, 1, 1);          /* flag of another type */
	EXPECT_DROP(0, 1, m, DSM_DROP_BAD_FLAGS);
	m = mk(DSM_MSG_READ_REQ, 0, 2, 0, 1, 2);                  /* request to a node that is not the home */
	EXPECT_DROP(0, 2, m, DSM_DROP_BAD_SENDER);
	m = mk(DSM_MSG_READ_REQ, 0, 0, 0, 1, 2);                  /* requester != sender */
	EXPECT_DROP(0, 1, m, DSM_DROP_BAD_SENDER);
	m = mk(DSM_MSG_READ_REQ, 0, 0, 0, 1, 0);                  /* claims to come from ourselves */
	EXPECT_DROP(0, 0, m, DSM_DROP_BAD_SENDER);
	m = mk(DSM_MSG_READ_REQ, 0, 0, 0, 1, 7);                  /* sender out of range */
	EXPECT_DROP(0, 7, m, DSM_DROP_BAD_SENDER);
	m = mk(DSM_MSG_INV, 0, 0, 0, 1, 2);                       /* INV not from the page's home */
	EXPECT_DROP(1, 2, m, DSM_DROP_BAD_SENDER);
	m = mk(DSM_MSG_GRANT, DSM_MF_ZERO, 0, 0, 7, 1);           /* unsolicited grant (node 1 asked nothing) */
	EXPECT_DROP(1, 0, m, DSM_DROP_UNSOLICITED);
	assert_int_equal(cstate(1, 0), DSM_C_INVALID);
	m = mk(DSM_MSG_GRANT, DSM_MF_ZERO, 0, 0, 1, 2);           /* grant addressed to another requester */
	EXPECT_DROP(1, 0, m, DSM_DROP_BAD_SENDER);
	m = mk(DSM_MSG_GRANT, 0, 0, 0, 1, 1);                     /* read-only grant without bytes */
	EXPECT_DROP(1, 0, m, DSM_DROP_BAD_FLAGS);
	m = mk(DSM_MSG_GRANT, DSM_MF_DATA | DSM_MF_ZERO, 0, 0, 1, 1);
	EXPECT_DROP(1, 0, m, DSM_DROP_BAD_FLAGS);
	m = mk(DSM_MSG_FETCH_ACK, 0, 0, 0, 1, 1);                 /* FETCH_ACK without its data */
	EXPECT_DROP(0, 1, m, DSM_DROP_BAD_FLAGS);
	m = mk(DSM_MSG_INV_ACK, 0, 0, 0, 1, 1);                   /* an ack nobody waits for */
	EXPECT_DROP(0, 1, m, DSM_DROP_DUPLICATE);
	m = mk(DSM_MSG_FETCH, 0, 0, 3, 1, 2);                     /* FETCH to a node without the page */
	EXPECT_DROP(1, 0, m, DSM_DROP_STALE);
	m = mk(DSM_MSG_DATA_ACK, 0, 0, 3, 1, 1);                  /* DATA_ACK without a stash */
	EXPECT_DROP(1, 0, m, DSM_DROP_DUPLICATE);
	m = mk(DSM_MSG_GRANT_ACK, 0, 0, 0, 1, 1);
	EXPECT_DROP(0, 1, m, DSM_DROP_STALE);

	/* length: short, and disagreeing with the DATA flag either way */
	o = recv_raw(0, 1, shortbuf, sizeof(shortbuf), 1);
	assert_int_equal(recv_ret, -EPROTO);
	m = mk(DSM_MSG_READ_REQ, 0, 0, 0, 1, 1);
	o = recv_raw(0, 1, &m, sizeof(m) - 1, 1);
	assert_int_equal(recv_ret, -EPROTO);
	m = mk(DSM_MSG_FETCH_ACK, DSM_MF_DATA, 0, 0, 1, 1);
	o = recv_raw(0, 1, &m, sizeof(m), 1);
	assert_int_equal(recv_ret, -EPROTO);
	assert_int_equal(stats(0).drops[DSM_DROP_BAD_LEN], 3);

	/* after all that the cluster still works */
	fault_settle(1, 0, true, 2);
	assert_int_equal(cstate(1, 0), DSM_C_MODIFIED);
	/* 1 000 random buffers: no crash, each dropped or handled */
	uint64_t x = 12345;
	for (int i = 0; i < 1000; i++) {
		uint8_t buf[sizeof(struct dsm_msg) + DSM_PAGE_SIZE];

		for (size_t j = 0; j < sizeof(struct dsm_msg); j++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			buf[j] = (uint8_t)(x >> 56);
		}
		buf[0] = (i & 1) ? DSM_WIRE_VERSION : buf[0];
		buf[1] = (uint8_t)(0x20 + (buf[1] % 10));
		((struct dsm_msg *)buf)->epoch = (i & 2) ? 1 : ((struct dsm_msg *)buf)->epoch;
		((struct dsm_msg *)buf)->page %= (i & 4) ? 6 : ~0ULL;
		recv_raw(i % 3, (uint32_t)(i / 3) % 4, buf, dsm_msg_len(((struct dsm_msg *)buf)->flags), 3);
	}
	log_set_quiet(false);
}

/* ---- loss and retransmission ---------------------------------------------------------------------------- */

static void test_retransmission_after_loss(void **state)
{
	struct dsm_actions *o;
	struct dsm_action req, inv, stash_ack;

	setup_cluster(3, 6, NULL, 0, 1000);
	req = fault(1, 0, true, 0)->v[0];                /* lost */
	o = timer(1, 999);
	assert_int_equal(o->n, 0);
	o = timer(1, 1000);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 0, DSM_MSG_WRITE_REQ, 0, DSM_DATA_NONE);
	assert_int_equal(o->v[0].msg.req_id, req.msg.req_id);
	assert_int_equal(stats(1).retransmissions, 1);
	assert_int_equal(nodes[1].timer, 2000);
	net_push(1, o);
	settle(1001);
	assert_int_equal(cstate(1, 0), DSM_C_MODIFIED);

	/* the owner's INV_ACK with the only copy of the data is lost: the resent INV is answered from the stash */
	o = fault(2, 0, true, 1100);
	inv = deliver(2, &o->v[0], 1101)->v[0];
	expect_send(&inv, 1, DSM_MSG_INV, 0, DSM_DATA_NONE);
	o = deliver(0, &inv, 1102);                      /* WP, STASH, INV_ACK(STASH), UNMAP; the ack is lost */
	assert_int_equal(o->n, 4);
	assert_int_equal(stats(1).stashes, 1);
	o = timer(0, 1101 + 1000);
	expect_send(&o->v[0], 1, DSM_MSG_INV, 0, DSM_DATA_NONE);
	o = deliver(0, &o->v[0], 2102);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 0, DSM_MSG_INV_ACK, 0, DSM_DATA_STASH);
	stash_ack = o->v[0];
	o = deliver(1, &stash_ack, 2103);
	assert_int_equal(o->n, 3);
	expect_act(&o->v[0], DSM_ACT_STORE, 0);
	expect_send(&o->v[1], 1, DSM_MSG_DATA_ACK, 0, DSM_DATA_NONE);
	expect_send(&o->v[2], 2, DSM_MSG_GRANT, 0, DSM_DATA_HOME);
	/* DATA_ACK lost; a late duplicate of the data ack gets another DATA_ACK and no STORE */
	o = deliver(1, &stash_ack, 2104);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_DATA_ACK, 0, DSM_DATA_NONE);
	struct dsm_action data_ack = o->v[0];

	o = deliver(0, &data_ack, 2105);
	assert_int_equal(o->n, 1);
	expect_act(&o->v[0], DSM_ACT_DROP_STASH, 0);
	o = deliver(0, &data_ack, 2106);                  /* DATA_ACK again: nothing to drop */
	assert_int_equal(o->n, 0);
	assert_int_equal(recv_ret, -EPROTO);
}

/* A lost DATA_ACK: the stash is dropped when the node next installs a newer copy of the page. */
static void test_stash_dropped_by_newer_grant(void **state)
{
	struct dsm_actions *o;

	setup_cluster(3, 6, NULL, 0, 1000);
	fault_settle(1, 0, true, 0);
	o = fault(2, 0, true, 1);
	o = deliver(2, &o->v[0], 2);
	o = deliver(0, &o->v[0], 3);
	o = deliver(1, &o->v[2], 4);                     /* STORE, DATA_ACK (lost), GRANT */
	o = deliver(0, &o->v[2], 5);
	deliver(2, &o->v[1], 6);
	o = fault(1, 0, false, 7);
	net_push(1, o);
	/* deliver everything; find node 1's MAP and the DROP_STASH right after it */
	bool dropped = false;

	while (net_n > 0) {
		struct wire w = net[0];

		memmove(&net[0], &net[1], (net_n - 1) * sizeof(net[0]));
		net_n--;
		o = recv_raw(w.dst, w.src, w.buf, w.len, 8);
		for (uint32_t i = 0; w.dst == 1 && i < o->n; i++)
			if (o->v[i].type == DSM_ACT_DROP_STASH) {
				assert_true(i > 0);
				expect_map(&o->v[i - 1], 0, DSM_MODE_RO, DSM_DATA_MSG);
				dropped = true;
			}
		net_push(w.dst, o);
	}
	assert_true(dropped);
}

/* ---- peer down ------------------------------------------------------------------------------------------ */

static void test_peer_down(void **state)
{
	static const uint32_t home[4] = { 0, 0, 0, 1 };       /* node 2 homes nothing */
	struct dsm_actions *o;

	setup_cluster(3, 4, home, 0, 1000000);
	/* node 2 holds page 0 Modified: its death is fatal at the home, naming it */
	fault_settle(2, 0, true, 1);
	o = peer_down(0, 2, 2);
	assert_int_equal(o->n, 1);
	assert_int_equal(o->v[0].type, DSM_ACT_FATAL);
	assert_int_equal(o->v[0].peer, 2);
	assert_non_null(strstr(o->v[0].reason, "node 2"));
	assert_true(dsm_engine_failed(nodes[0].e));
	o = fault(0, 1, false, 3);                       /* every later fault fails too: never hang */
	assert_int_equal(o->n, 1);
	assert_int_equal(o->v[0].type, DSM_ACT_FATAL);
	/* a node that homes pages: fatal everywhere */
	o = peer_down(2, 0, 4);
	assert_int_equal(o->v[0].type, DSM_ACT_FATAL);
	assert_int_equal(o->v[0].peer, 0);
	assert_non_null(strstr(o->v[0].reason, "node 0"));
	teardown(state);

	/* node 2 only shares page 1 and has a request queued: forgotten, the others go on */
	setup_cluster(3, 4, home, 0, 1000000);
	fault_settle(2, 1, false, 1);
	fault_settle(1, 1, false, 1);
	o = fault(1, 2, true, 2);
	struct dsm_action w1 = o->v[0];
	o = deliver(1, &w1, 3);                           /* node 1 owns page 2 (grant unacked) */
	struct dsm_action g = o->v[0];
	o = fault(2, 2, false, 4);
	deliver(2, &o->v[0], 5);                          /* node 2's read is queued behind it */
	assert_int_equal(hinfo(2).queued, 1);

	o = peer_down(0, 2, 6);
	assert_int_equal(o->n, 0);
	assert_false(dsm_engine_failed(nodes[0].e));
	assert_false(dsm_engine_home_is_sharer(nodes[0].e, 1, 2));
	assert_int_equal(hinfo(2).queued, 0);
	o = deliver(0, &g, 7);
	deliver(1, &o->v[1], 8);
	assert_int_equal(hinfo(2).state, DSM_H_MODIFIED);
	/* a write on page 1 now only needs node 1's ack */
	o = fault(0, 1, true, 9);
	assert_int_equal(o->n, 1);
	expect_send(&o->v[0], 1, DSM_MSG_INV, 1, DSM_DATA_NONE);
	/* messages from the dead node are refused */
	struct dsm_msg m = mk(DSM_MSG_READ_REQ, 0, 0, 0, 9, 2);

	recv_msg(0, 2, &m, 10);
	assert_int_equal(recv_ret, -EPROTO);

	/* node 1 owes node 0 an ack (and homes page 3): fatal */
	o = peer_down(0, 1, 11);
	assert_int_equal(o->v[0].type, DSM_ACT_FATAL);
	assert_int_equal(o->v[0].peer, 1);
}

/* ---- faults --------------------------------------------------------------------------------------------- */

static void test_coalesced_and_spurious_faults(void **state)
{
	struct dsm_actions *o;
	struct dsm_action req;

	setup_cluster(2, 4, NULL, 0, 1000000);
	req = fault(1, 0, false, 1)->v[0];
	o = fault(1, 0, false, 2);                       /* a second reader: no second request */
	assert_int_equal(o->n, 0);
	o = fault(1, 0, true, 3);                        /* a writer too: it refaults after the RO map */
	assert_int_equal(o->n, 0);
	assert_int_equal(stats(1).faults_coalesced, 2);
	assert_int_equal(stats(1).msgs_tx[DSM_MSG_READ_REQ - DSM_MSG_TYPE_MIN], 1);
	o = deliver(1, &req, 4);
	o = deliver(0, &o->v[0], 5);
	expect_map(&o->v[0], 0, DSM_MODE_RO, DSM_DATA_ZERO);
	deliver(1, &o->v[1], 6);

	o = fault(1, 0, false, 7);                       /* spurious: already readable */
	assert_int_equal(o->n, 1);
	expect_act(&o->v[0], DSM_ACT_WAKE, 0);
	o = fault(1, 0, true, 8);                        /* the writer's WP fault: upgrade */
	expect_send(&o->v[0], 0, DSM_MSG_WRITE_REQ, 0, DSM_DATA_NONE);
	o = fault(1, 0, true, 9);
	assert_int_equal(o->n, 0);                       /* coalesced with the upgrade */
	assert_int_equal(dsm_engine_fault(nodes[1].e, 4, false, 10, &nodes[1].out), -EINVAL);
	assert_int_equal(stats(1).faults_spurious, 1);
	assert_int_equal(stats(1).faults_upgrade, 1);
}

/* The timer processes many expired items within the caller's capacity and asks to be called again. */
static void test_timer_capacity(void **state)
{
	struct dsm_action small[40];
	struct dsm_actions out;
	uint32_t sends = 0, rounds = 0;

	setup_cluster(2, 64, NULL, 0, 1000);
	for (uint64_t p = 0; p < 32; p++)
		fault(1, p, false, 0);                    /* 32 lost requests to node 0 */
	for (;;) {
		dsm_actions_init(&out, small, 40);
		assert_int_equal(dsm_engine_timer(nodes[1].e, 1000, &out), 0);
		assert_int_equal(out.overflow, 0);
		bool again = false;

		for (uint32_t i = 0; i < out.n; i++) {
			if (out.v[i].type == DSM_ACT_SEND)
				sends++;
			if (out.v[i].type == DSM_ACT_TIMER && out.v[i].when == 1000)
				again = true;
		}
		rounds++;
		assert_true(rounds < 100);
		if (!again)
			break;
	}
	assert_int_equal(sends, 32);
	assert_true(rounds > 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_zero_page_grant, teardown),
		cmocka_unit_test_teardown(test_local_home_access, teardown),
		cmocka_unit_test_teardown(test_read_miss_paths, teardown),
		cmocka_unit_test_teardown(test_write_miss_sharers, teardown),
		cmocka_unit_test_teardown(test_concurrent_read_grants, teardown),
		cmocka_unit_test_teardown(test_upgrade, teardown),
		cmocka_unit_test_teardown(test_upgrade_racing_invalidation, teardown),
		cmocka_unit_test_teardown(test_request_crossing_invalidation, teardown),
		cmocka_unit_test_teardown(test_lease_deferral, teardown),
		cmocka_unit_test_teardown(test_duplicate_request_and_grant, teardown),
		cmocka_unit_test_teardown(test_lost_grant_ack, teardown),
		cmocka_unit_test_teardown(test_duplicate_inv, teardown),
		cmocka_unit_test_teardown(test_stale_epoch, teardown),
		cmocka_unit_test_teardown(test_garbage, teardown),
		cmocka_unit_test_teardown(test_retransmission_after_loss, teardown),
		cmocka_unit_test_teardown(test_stash_dropped_by_newer_grant, teardown),
		cmocka_unit_test_teardown(test_peer_down, teardown),
		cmocka_unit_test_teardown(test_coalesced_and_spurious_faults, teardown),
		cmocka_unit_test_teardown(test_timer_capacity, teardown),
	};

	log_set_tag("test_dsm_engine");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
