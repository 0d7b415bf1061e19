/* SPDX-License-Identifier: MIT */
/*
 * Randomized test of the dsm protocol engine: 3-8 engines, an in-process network that delivers in random order
 * (and in some runs loses and duplicates messages), random read/write accesses by random nodes on a few pages.
 * The harness plays the backend faithfully: each node has a mapping mode and a value per page (one u64 stands
 * for the page's bytes, carried in the first 8 payload bytes), the home store and the stashes are values too,
 * and every action is executed in order (MAP MSG copies the payload, STORE copies into the home store, SEND LOCAL
 * reads the node's copy, UNMAP clears it...). Every write stores a fresh value.
 *
 * Checked after EVERY step: per page at most one read-write mapping and then no read-only one; every present
 * copy holds the last value written anywhere (so every read returns it); an idle home store holds it too; no
 * FATAL, no overflow, no drop reason that only a bug produces. At the end the network and timers are drained
 * and every waiting access must have completed and every home entry be idle (no request pending forever).
 *
 * Replay: a failure prints the seed and the run's parameters; DSM_RANDOM_SEED=<seed> reruns exactly that run
 * (odd seeds are the lossy runs; DSM_RANDOM_STEPS=<n> sets the steps per run, DSM_RANDOM_RUNS=<n> the number of
 * runs, DSM_RANDOM_BASE=<n> the first seed; make soak uses them).
 */
#include <errno.h>
#include <inttypes.h>
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
#include "util/rand.h"

#define MAXN 8
#define MAXP 8
#define NET_CAP 16384

enum { M_NONE = 0, M_RO = 1, M_RW = 2 };
enum { W_NONE = 0, W_READ = 1, W_WRITE = 2 };

struct snode {
	struct dsm_engine *e;
	struct dsm_action *acts;
	uint32_t cap;
	uint8_t mode[MAXP];
	uint64_t copy[MAXP];
	uint64_t stash[MAXP];
	bool has_stash[MAXP];
	uint8_t want[MAXP];
	bool woken[MAXP];
	uint64_t timer_at;
	uint32_t epoch;
	bool dead;
};

struct smsg {
	uint32_t src, dst;
	struct dsm_msg m;
	uint64_t value;
};

struct sim {
	uint64_t seed;
	uint32_t n, pages;
	bool lossy;
	double loss, dup;
	uint64_t lease_ns, retry_ns;
	uint64_t now, step;
	struct rng rng;
	struct snode node[MAXN];
	uint64_t home_store[MAXP];
	uint64_t last[MAXP];
	uint64_t next_value;
	struct smsg *net;
	uint32_t net_n;
	uint32_t epoch;                 /* membership epoch the nodes are moving to (lossy runs bump it) */
	uint64_t accesses, faults, delivered, lost, duplicated, epochs, deaths;
};

static struct sim S;

static void sim_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2))) __attribute__((__noreturn__));

static void sim_fail(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	print_error("REPLAY: DSM_RANDOM_SEED=%" PRIu64 " (nodes %u, pages %u, lossy %d, lease %" PRIu64
		    ", step %" PRIu64 ")\n", S.seed, S.n, S.pages, S.lossy, S.lease_ns, S.step);
	fail_msg("%s", buf);
	abort();        /* not reached */
}

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) \
			sim_fail(__VA_ARGS__); \
	} while (0)

static void net_put(uint32_t src, uint32_t dst, const struct dsm_msg *m, uint64_t value)
{
	if (S.net_n == NET_CAP) {
		CHECK(S.lossy, "network overflow without loss enabled");
		S.lost++;
		return;
	}
	S.net[S.net_n++] = (struct smsg){ .src = src, .dst = dst, .m = *m, .value = value };
}

static void wake(struct snode *nd, uint64_t p)
{
	nd->woken[p] = true;
}

static uint64_t payload_value(const struct dsm_action *a)
{
	uint64_t v;

	CHECK(a->payload != NULL, "data MSG without payload");
	memcpy(&v, a->payload, sizeof(v));
	return v;
}

static bool is_home(uint32_t n, uint64_t p)
{
	return dsm_engine_home_of(S.node[n].e, p) == n;
}

/* Execute node n's actions in order, as the uffd backend would. */
static void execute(uint32_t n, const struct dsm_actions *out)
{
	struct snode *nd = &S.node[n];

	CHECK(out->overflow == 0, "node %u: action list overflow", n);
	for (uint32_t i = 0; i < out->n; i++) {
		const struct dsm_action *a = &out->v[i];
		uint64_t p = a->page, v = 0;

		CHECK(a->type == DSM_ACT_TIMER || p < S.pages, "node %u: action on page %" PRIu64, n, p);
		switch (a->type) {
		case DSM_ACT_SEND:
			CHECK(a->peer < S.n && a->peer != n && !S.node[a->peer].dead, "node %u: SEND to %u%s", n, a->peer,
			      a->peer < S.n && S.node[a->peer].dead ? " (dead)" : "");
			switch (a->data) {
			case DSM_DATA_NONE:
				break;
			case DSM_DATA_LOCAL:
				CHECK(nd->mode[p] == M_RO, "node %u: SEND LOCAL of page %" PRIu64 " not write-protected", n,
				      p);
				v = nd->copy[p];
				break;
			case DSM_DATA_HOME:
				CHECK(is_home(n, p), "node %u: SEND HOME of page %" PRIu64 " it does not home", n, p);
				v = S.home_store[p];
				break;
			case DSM_DATA_STASH:
				CHECK(nd->has_stash[p], "node %u: SEND STASH of page %" PRIu64 " without stash", n, p);
				v = nd->stash[p];
				break;
			default:
				sim_fail("node %u: SEND with data %s", n, dsm_data_name(a->data));
			}
			CHECK(!!(a->msg.flags & DSM_MF_DATA) == (a->data != DSM_DATA_NONE), "DATA flag mismatch");
			if (S.lossy && rng_double(&S.rng) < S.loss) {
				S.lost++;
				break;
			}
			net_put(n, a->peer, &a->msg, v);
			if (S.lossy && rng_double(&S.rng) < S.dup) {
				S.duplicated++;
				net_put(n, a->peer, &a->msg, v);
			}
			break;
		case DSM_ACT_MAP:
			switch (a->data) {
			case DSM_DATA_MSG:
				nd->copy[p] = payload_value(a);
				break;
			case DSM_DATA_HOME:
				CHECK(is_home(n, p), "node %u: MAP HOME of page %" PRIu64 " it does not home", n, p);
				nd->copy[p] = S.home_store[p];
				break;
			case DSM_DATA_ZERO:
				nd->copy[p] = 0;
				break;
			case DSM_DATA_KEEP:
				CHECK(nd->mode[p] == M_RO && a->mode == DSM_MODE_RW,
				      "node %u: MAP KEEP of page %" PRIu64 " in mode %u", n, p, nd->mode[p]);
				break;
			default:
				sim_fail("node %u: MAP with data %s", n, dsm_data_name(a->data));
			}
			nd->mode[p] = a->mode == DSM_MODE_RW ? M_RW : M_RO;
			wake(nd, p);
			break;
		case DSM_ACT_WRITE_PROTECT:
			CHECK(nd->mode[p] != M_NONE, "node %u: WRITE_PROTECT of absent page %" PRIu64, n, p);
			nd->mode[p] = M_RO;
			break;
		case DSM_ACT_UNMAP:
			nd->mode[p] = M_NONE;
			nd->copy[p] = 0xdeadbeefULL;
			break;
		case DSM_ACT_STORE:
			CHECK(is_home(n, p), "node %u: STORE of page %" PRIu64 " it does not home", n, p);
			if (a->data == DSM_DATA_MSG) {
				S.home_store[p] = payload_value(a);
			} else {
				CHECK(a->data == DSM_DATA_LOCAL && nd->mode[p] == M_RO,
				      "node %u: STORE %s of page %" PRIu64 " in mode %u", n, dsm_data_name(a->data), p,
				      nd->mode[p]);
				S.home_store[p] = nd->copy[p];
			}
			break;
		case DSM_ACT_WAKE:
			wake(nd, p);
			break;
		case DSM_ACT_STASH:
			CHECK(nd->mode[p] == M_RO, "node %u: STASH of page %" PRIu64 " not write-protected", n, p);
			nd->stash[p] = nd->copy[p];
			nd->has_stash[p] = true;
			break;
		case DSM_ACT_DROP_STASH:
			CHECK(nd->has_stash[p], "node %u: DROP_STASH without stash", n);
			nd->has_stash[p] = false;
			break;
		case DSM_ACT_TIMER:
			nd->timer_at = a->when;
			break;
		case DSM_ACT_FATAL:
			sim_fail("node %u: FATAL: %s", n, a->reason);
		}
	}
}

static void check_invariants(void)
{
	for (uint32_t p = 0; p < S.pages; p++) {
		uint32_t rw = 0, ro = 0;

		for (uint32_t n = 0; n < S.n; n++) {
			struct snode *nd = &S.node[n];

			if (nd->dead)
				continue;
			if (nd->mode[p] == M_RW)
				rw++;
			if (nd->mode[p] == M_RO)
				ro++;
			if (nd->mode[p] != M_NONE)
				CHECK(nd->copy[p] == S.last[p], "page %u: node %u holds %" PRIx64 ", last written %" PRIx64,
				      p, n, nd->copy[p], S.last[p]);
		}
		CHECK(rw <= 1 && !(rw == 1 && ro > 0), "page %u: %u read-write and %u read-only mappings", p, rw, ro);

		struct dsm_home_info hi;
		uint32_t h = dsm_engine_home_of(S.node[0].e, p);

		CHECK(dsm_engine_home_info(S.node[h].e, p, &hi) == 0, "home info");
		if ((hi.state == DSM_H_SHARED || hi.state == DSM_H_UNCACHED) && !hi.never_written)
			CHECK(S.home_store[p] == S.last[p], "page %u: idle home store %" PRIx64 ", last %" PRIx64, p,
			      S.home_store[p], S.last[p]);
	}
	for (uint32_t n = 0; n < S.n; n++) {
		struct dsm_stats st;

		dsm_engine_get_stats(S.node[n].e, &st);
		CHECK(!dsm_engine_failed(S.node[n].e), "node %u failed", n);
		CHECK(st.drops[DSM_DROP_BAD_STATE] == 0 && st.drops[DSM_DROP_BAD_SENDER] == 0 &&
		      st.drops[DSM_DROP_BAD_FLAGS] == 0 && st.drops[DSM_DROP_BAD_LEN] == 0 &&
		      st.drops[DSM_DROP_UNSOLICITED] == 0,
		      "node %u: drops a correct peer never causes (state %" PRIu64 ", sender %" PRIu64 ", flags %" PRIu64
		      ", unsolicited %" PRIu64 ")", n, st.drops[DSM_DROP_BAD_STATE], st.drops[DSM_DROP_BAD_SENDER],
		      st.drops[DSM_DROP_BAD_FLAGS], st.drops[DSM_DROP_UNSOLICITED]);
	}
}

static void do_fault(uint32_t n, uint32_t p, bool write)
{
	struct dsm_actions out;

	dsm_actions_init(&out, S.node[n].acts, S.node[n].cap);
	CHECK(dsm_engine_fault(S.node[n].e, p, write, S.now, &out) == 0, "fault");
	S.faults++;
	execute(n, &out);
}

/* A thread's access: performed if the mapping allows it, else the thread faults and waits. */
static void try_access(uint32_t n, uint32_t p, uint8_t want)
{
	struct snode *nd = &S.node[n];

	if (want == W_WRITE ? nd->mode[p] == M_RW : nd->mode[p] != M_NONE) {
		if (want == W_WRITE) {
			nd->copy[p] = S.last[p] = ++S.next_value;
		} else {
			CHECK(nd->copy[p] == S.last[p], "read of page %u at node %u returned %" PRIx64 ", last %" PRIx64,
			      p, n, nd->copy[p], S.last[p]);
		}
		nd->want[p] = W_NONE;
		S.accesses++;
		return;
	}
	nd->want[p] = want;
	do_fault(n, p, want == W_WRITE);
}

/* Membership changes: the target epoch moves on and the nodes learn it one by one, so messages of the old epoch
 * (and of the new one, at nodes still behind) are dropped and recovered by retransmission. */
static void epochs_advance(bool all)
{
	if (S.lossy && rng_double(&S.rng) < 0.0003) {
		S.epoch++;
		S.epochs++;
	}
	for (uint32_t n = 0; n < S.n; n++) {
		if (S.node[n].epoch != S.epoch && (all || rng_double(&S.rng) < 0.05)) {
			S.node[n].epoch = S.epoch;
			dsm_engine_set_epoch(S.node[n].e, S.epoch);
		}
	}
}

/* Reliable runs: a node that homes nothing dies at a moment it holds nothing anyone needs (no Modified page,
 * no stash, no waiting access, nothing in flight to or from it). Every survivor is told; none may go FATAL, and
 * the rest of the run (and the drain) must go on without it: it is forgotten as a sharer and never sent to. */
static void maybe_kill(void)
{
	uint32_t k = (uint32_t)rng_below(&S.rng, S.n), alive = 0;
	struct snode *nd = &S.node[k];

	if (S.lossy || nd->dead || dsm_engine_n_homed(nd->e) > 0)
		return;
	for (uint32_t n = 0; n < S.n; n++)
		alive += !S.node[n].dead;
	if (alive <= 2)
		return;
	for (uint32_t p = 0; p < S.pages; p++)
		if (nd->mode[p] == M_RW || nd->has_stash[p] || nd->want[p] != W_NONE)
			return;
	for (uint32_t i = 0; i < S.net_n; i++)
		if (S.net[i].src == k || S.net[i].dst == k)
			return;
	nd->dead = true;
	memset(nd->mode, M_NONE, sizeof(nd->mode));
	S.deaths++;
	for (uint32_t n = 0; n < S.n; n++) {
		struct dsm_actions out;

		if (S.node[n].dead)
			continue;
		dsm_actions_init(&out, S.node[n].acts, S.node[n].cap);
		CHECK(dsm_engine_peer_down(S.node[n].e, k, S.now, &out) == 0, "peer_down");
		execute(n, &out);
	}
}

/* Threads woken by MAP or WAKE run again: they access, or fault again (a writer woken by a read-only MAP). */
static void run_woken(void)
{
	bool again = true;

	while (again) {
		again = false;
		for (uint32_t n = 0; n < S.n; n++) {
			for (uint32_t p = 0; p < S.pages; p++) {
				struct snode *nd = &S.node[n];

				if (!nd->woken[p])
					continue;
				nd->woken[p] = false;
				if (nd->want[p] != W_NONE) {
					try_access(n, p, nd->want[p]);
					again = true;
				}
			}
		}
	}
}

static void deliver_one(uint32_t idx, bool keep_copy)
{
	struct smsg msg = S.net[idx];
	static uint8_t buf[sizeof(struct dsm_msg) + DSM_PAGE_SIZE];
	struct dsm_actions out;
	struct snode *nd = &S.node[msg.dst];

	if (!keep_copy)
		S.net[idx] = S.net[--S.net_n];
	memcpy(buf, &msg.m, sizeof(msg.m));
	memcpy(buf + sizeof(msg.m), &msg.value, sizeof(msg.value));
	dsm_actions_init(&out, nd->acts, nd->cap);
	dsm_engine_recv(nd->e, msg.src, buf, dsm_msg_len(msg.m.flags), S.now, &out);
	S.delivered++;
	execute(msg.dst, &out);
}

static void fire_timers(void)
{
	for (uint32_t n = 0; n < S.n; n++) {
		struct snode *nd = &S.node[n];
		int rounds = 0;

		if (nd->dead)
			continue;
		while (nd->timer_at != 0 && nd->timer_at <= S.now) {
			struct dsm_actions out;

			dsm_actions_init(&out, nd->acts, nd->cap);
			nd->timer_at = 0;
			CHECK(dsm_engine_timer(nd->e, S.now, &out) == 0, "timer");
			execute(n, &out);
			CHECK(++rounds < 1000, "node %u: timer keeps asking to be called", n);
		}
	}
}

static void sim_setup(uint64_t seed, uint32_t n, uint32_t pages, bool lossy)
{
	memset(&S, 0, sizeof(S));
	S.seed = seed;
	rng_seed(&S.rng, seed);
	S.n = n;
	S.pages = pages;
	S.lossy = lossy;
	S.loss = lossy ? 0.02 + rng_double(&S.rng) * 0.08 : 0;
	S.dup = lossy ? 0.02 + rng_double(&S.rng) * 0.08 : 0;
	S.lease_ns = rng_below(&S.rng, 2) ? 0 : 2000 + rng_below(&S.rng, 20000);
	S.retry_ns = 20000 + rng_below(&S.rng, 60000);
	S.now = 1000;
	S.epoch = 1;
	S.net = calloc(NET_CAP, sizeof(*S.net));
	assert_non_null(S.net);

	uint32_t home[MAXP];
	bool custom = rng_below(&S.rng, 2);

	for (uint32_t p = 0; p < pages; p++)
		home[p] = (uint32_t)rng_below(&S.rng, n);
	for (uint32_t i = 0; i < n; i++) {
		struct dsm_config cfg;

		dsm_config_init(&cfg);
		cfg.self = i;
		cfg.n_nodes = n;
		cfg.n_pages = pages;
		cfg.home = custom ? home : NULL;
		cfg.lease_ns = S.lease_ns;
		cfg.retry_ns = S.retry_ns;
		S.node[i].epoch = cfg.epoch;
		assert_int_equal(dsm_engine_create(&cfg, &S.node[i].e), 0);
		S.node[i].cap = dsm_engine_max_actions(S.node[i].e);
		S.node[i].acts = calloc(S.node[i].cap, sizeof(struct dsm_action));
		assert_non_null(S.node[i].acts);
	}
}

static void sim_teardown(void)
{
	for (uint32_t i = 0; i < S.n; i++) {
		dsm_engine_destroy(S.node[i].e);
		free(S.node[i].acts);
	}
	free(S.net);
	S.net = NULL;
}

static void sim_run(uint64_t steps)
{
	for (S.step = 0; S.step < steps; S.step++) {
		uint64_t r = rng_below(&S.rng, 100);

		S.now += 1 + rng_below(&S.rng, 200);
		if (r < 35) {
			uint32_t n = (uint32_t)rng_below(&S.rng, S.n);
			uint32_t p = (uint32_t)rng_below(&S.rng, S.pages);

			if (S.node[n].want[p] == W_NONE && !S.node[n].dead)
				try_access(n, p, rng_below(&S.rng, 3) == 0 ? W_WRITE : W_READ);
		} else if (r < 97) {
			if (S.net_n > 0) {
				bool dup = S.lossy && rng_double(&S.rng) < S.dup;

				deliver_one((uint32_t)rng_below(&S.rng, S.net_n), dup);
			}
		} else if (r < 98) {
			if (rng_below(&S.rng, 4) == 0)
				maybe_kill();
		} else if (S.net_n < 4 * S.n) {
			/* let retransmissions and leases fire (not while much is in flight: a real network delivers
			 * far faster than retry_ns, and resends would pile up without bound) */
			S.now += rng_below(&S.rng, S.retry_ns);
		}
		epochs_advance(false);
		fire_timers();
		run_woken();
		check_invariants();
	}

	/* drain: the fabric heals, no new accesses; every waiting access must complete */
	S.lossy = false;
	epochs_advance(true);
	for (uint64_t i = 0;; i++) {
		bool waiting = false;

		for (uint32_t n = 0; n < S.n; n++)
			for (uint32_t p = 0; p < S.pages; p++)
				waiting |= S.node[n].want[p] != W_NONE;
		CHECK(i < 10000000, "drain does not converge (waiting %d, in flight %u)", waiting, S.net_n);
		if (S.net_n > 0) {
			deliver_one((uint32_t)rng_below(&S.rng, S.net_n), false);
		} else {
			uint64_t next = 0;

			for (uint32_t n = 0; n < S.n; n++)
				if (S.node[n].timer_at && (next == 0 || S.node[n].timer_at < next))
					next = S.node[n].timer_at;
			if (next == 0) {
				CHECK(!waiting, "liveness: an access waits forever with nothing in flight and no timer");
				break;
			}
			if (next > S.now)
				S.now = next;
		}
		fire_timers();
		run_woken();
		check_invariants();
	}
	for (uint32_t p = 0; p < S.pages; p++) {
		struct dsm_home_info hi;
		uint32_t h = dsm_engine_home_of(S.node[0].e, p);

		dsm_engine_home_info(S.node[h].e, p, &hi);
		CHECK(hi.serving == UINT32_MAX && hi.queued == 0 && hi.grants_unacked == 0,
		      "page %u: home still busy (%s) after the drain", p,
		      dsm_home_state_name(hi.state));
		for (uint32_t n = 0; n < S.n; n++) {
			enum dsm_cache_state cs = dsm_engine_cache_state(S.node[n].e, p);

			CHECK(cs == DSM_C_INVALID || cs == DSM_C_SHARED || cs == DSM_C_MODIFIED,
			      "page %u: node %u left in %s", p, n, dsm_cache_state_name(cs));
		}
	}
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);

	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

struct totals {
	uint64_t steps, accesses, faults, delivered, lost, duplicated, retrans, lease, stashes, queued, epochs;
	uint64_t epoch_drops, deaths;
};

static void run_many(uint64_t base_seed, bool lossy, uint64_t runs, uint64_t steps)
{
	struct totals t = { 0 };
	uint64_t fixed = env_u64("DSM_RANDOM_SEED", 0);

	if (fixed)
		runs = 1;
	for (uint64_t i = 0; i < runs; i++) {
		/* odd seeds are lossy runs, so a seed alone replays a run */
		uint64_t seed = fixed ? fixed : (base_seed + i * 7919) * 2 + (lossy ? 1 : 0);
		struct rng pick;

		rng_seed(&pick, seed ^ 0x5eed);
		uint32_t n = 3 + (uint32_t)rng_below(&pick, MAXN - 2);
		uint32_t pages = 1 + (uint32_t)rng_below(&pick, MAXP);
		bool lossy_run = seed & 1;

		sim_setup(seed, n, pages, lossy_run);
		sim_run(steps);
		t.steps += steps;
		t.accesses += S.accesses;
		t.faults += S.faults;
		t.delivered += S.delivered;
		t.lost += S.lost;
		t.duplicated += S.duplicated;
		t.epochs += S.epochs;
		t.deaths += S.deaths;
		for (uint32_t k = 0; k < S.n; k++) {
			struct dsm_stats st;

			dsm_engine_get_stats(S.node[k].e, &st);
			t.retrans += st.retransmissions;
			t.lease += st.lease_deferrals;
			t.stashes += st.stashes;
			t.queued += st.queued;
			t.epoch_drops += st.drops[DSM_DROP_OLD_EPOCH] + st.drops[DSM_DROP_NEW_EPOCH];
		}
		sim_teardown();
	}
	printf("%s: %" PRIu64 " runs, %" PRIu64 " steps, %" PRIu64 " accesses, %" PRIu64 " faults, %" PRIu64
	       " messages delivered (%" PRIu64 " lost, %" PRIu64 " duplicated), %" PRIu64 " retransmissions, %" PRIu64
	       " lease deferrals, %" PRIu64 " stashes, %" PRIu64 " queued, %" PRIu64 " epoch changes (%" PRIu64
	       " messages dropped for their epoch), %" PRIu64 " nodes died\n", fixed ? "replay" : lossy ? "lossy" : "reliable", runs,
	       t.steps, t.accesses, t.faults, t.delivered, t.lost, t.duplicated, t.retrans, t.lease, t.stashes,
	       t.queued, t.epochs, t.epoch_drops, t.deaths);
	/* the run must have exercised the machinery, or it proves nothing */
	assert_true(t.accesses > t.steps / 20);
	assert_true(t.faults > t.steps / 100);
	if (lossy && !fixed)
		assert_true(t.lost > 0 && t.duplicated > 0 && t.retrans > 0 && t.stashes > 0 && t.epoch_drops > 0);
	if (!fixed)
		assert_true(t.queued > 0 && t.lease > 0);
	if (!lossy && !fixed)
		assert_true(t.deaths > 0);
}

static void test_random_reliable(void **state)
{
	run_many(env_u64("DSM_RANDOM_BASE", 1), false, env_u64("DSM_RANDOM_RUNS", 20),
		 env_u64("DSM_RANDOM_STEPS", 20000));
}

static void test_random_lossy(void **state)
{
	run_many(env_u64("DSM_RANDOM_BASE", 1), true, env_u64("DSM_RANDOM_RUNS", 20),
		 env_u64("DSM_RANDOM_STEPS", 20000));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_reliable),
		cmocka_unit_test(test_random_lossy),
	};

	log_set_tag("test_dsm_random");
	log_set_level(LOG_ERR);         /* stale and duplicate drops are expected by the thousand */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
