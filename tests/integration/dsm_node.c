/* SPDX-License-Identifier: MIT */
/*
 * dsm_node: one node process of a multi-process DSM test (host-thread mode). N of these, started by
 * tests/integration/test_dsm_cluster.c (or by hand), share one region over a transport and run, in order:
 *
 *   litmus   SB, MP, LB, IRIW, 2+2W, WRC with thread t of each test on node t % N (so on different nodes whenever
 *            N allows); per-iteration synchronization is a barrier built from atomics in the region itself.
 *            Node 0 prints the tallies; an outcome x86-TSO forbids fails the run; SB's r0=r1=0 (allowed by TSO,
 *            forbidden by SC) is counted separately and also fails (the protocol claims SC).
 *   counter  every thread of every node does __atomic_fetch_add on one shared word; exact total checked by all.
 *   memtest  each node writes tagged patterns into pages homed on other nodes; every node verifies every byte.
 *   spin     increment the shared counter until --spin-ms elapse (used by the kill test: it prints RUNNING).
 *
 * Exit status: 0 pass, 1 a check failed, 2 the region failed (a peer died: "FATAL: node N died" is printed),
 * 3 setup error.
 *
 *   dsm_node --id I --nodes N --port P --key-file F [--transport tcp] [--tests litmus,counter,memtest]
 *            [--iters K] [--counter-incs K] [--threads T] [--memtest-pages M] [--lease-us U] [--spin-ms MS]
 *            [--homes rr|blocks] [--no-fatal-handler]
 * --no-fatal-handler: no on_fatal callback, so a failed region ends the process by SIGSEGV (threads blocked in
 * faults, and any later access) — the backend's last-resort policy.
 * Node i listens on 127.0.0.1:(P+i).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dsm/region.h"
#include "../unit/region_net.h"
#include "util/clock.h"
#include "util/log.h"

#define PG 4096u
#define MAX_NODES 16
#define MAX_LT 4                   /* threads per litmus test */
#define MAX_REGS 4
#define RES_PAGES 4                /* result pages per litmus thread */
#define MAX_ITERS (RES_PAGES * PG / MAX_REGS)

/* Region layout, in pages. Every variable on its own page so tests are not serialized by false sharing. */
enum {
	P_BAR_ALL = 0,                 /* barrier of every node's main thread */
	P_BAR_LT = 1,                  /* barrier of the current litmus test's threads */
	P_BAR_CTR = 2,                 /* barrier of every counter thread */
	P_VARS = 4,                    /* litmus variables x, y, (final 2+2W) : P_VARS + k */
	P_COUNTER = 12,
	P_RES = 16,                    /* MAX_LT * RES_PAGES pages */
	P_MEM = P_RES + MAX_LT * RES_PAGES,
};

struct opts {
	uint32_t id, nodes;
	unsigned port;
	const char *key_file;
	const char *transport;
	char tests[128];
	unsigned iters, counter_incs, threads, memtest_pages, spin_ms;
	unsigned start_delay_us, jitter_us;
	bool no_fatal_handler;      /* --no-fatal-handler: let the region's SIGSEGV policy end the process */
	uint64_t lease_ns;
	bool homes_rr;
};

static struct opts o = {
	.transport = "tcp",
	.tests = "litmus,counter,memtest",
	.iters = 200,
	.counter_incs = 2000,
	.threads = 2,
	.memtest_pages = 48,
	.spin_ms = 30000,
	.start_delay_us = 1500,
	.jitter_us = 60,
	.homes_rr = true,
};

static struct dsm_region *region;
static uint8_t *base;

static volatile void *pg(unsigned page)
{
	return base + (size_t)page * PG;
}

/* ---- barrier in the region: {count, generation} on one page ---- */
struct sbar {
	uint32_t count;
	uint32_t gen;
	uint64_t start_ns;     /* set by the last arriver of a timed barrier */
};

static void sbar_wait(unsigned page, uint32_t n)
{
	struct sbar *b = (struct sbar *)pg(page);
	uint32_t g = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);

	if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n) {
		__atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&b->gen, g + 1, __ATOMIC_RELEASE);
		return;
	}
	while (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == g)
		sched_yield();   /* 2 cores, several nodes: give the fault and I/O threads the CPU */
}

/*
 * Barrier whose threads then leave together: the last arriver publishes a start time a little in the future and
 * everyone spins until it (plus a small per-thread jitter). Without this the threads of a litmus test leave the
 * barrier ~100 us apart (the time to refetch the barrier page) and the test bodies never overlap. It relies on
 * CLOCK_MONOTONIC being one clock for all node processes, which holds because they share this host.
 */
static void sbar_wait_timed(unsigned page, uint32_t n, uint64_t delay_ns, uint64_t jitter_ns)
{
	struct sbar *b = (struct sbar *)pg(page);
	uint32_t g = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
	uint64_t start;

	if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n) {
		__atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&b->start_ns, clock_now_ns() + delay_ns, __ATOMIC_RELAXED);
		__atomic_store_n(&b->gen, g + 1, __ATOMIC_RELEASE);
	} else {
		while (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == g)
			sched_yield();
	}
	start = __atomic_load_n(&b->start_ns, __ATOMIC_RELAXED) + jitter_ns;
	while (clock_now_ns() < start)
		__builtin_ia32_pause();
}

/* ---- litmus tests ---- */
#define X (*(volatile uint64_t *)pg(P_VARS + 0))
#define Y (*(volatile uint64_t *)pg(P_VARS + 1))
#define CBAR() __asm__ __volatile__("" ::: "memory")

struct litmus {
	const char *name;
	unsigned nthreads, nregs;
	uint8_t reg_owner[MAX_REGS];         /* which thread produces register r */
	void (*body)(unsigned t, uint8_t *r);
	void (*after)(uint8_t *r);           /* thread 0, after the closing barrier (final values); may be NULL */
	bool (*tso_forbidden)(const uint8_t *r);
	bool (*sc_only)(const uint8_t *r);   /* allowed by TSO, forbidden by SC; may be NULL */
};

static void sb_body(unsigned t, uint8_t *r)
{
	if (t == 0) {
		X = 1;
		CBAR();
		r[0] = (uint8_t)Y;
	} else {
		Y = 1;
		CBAR();
		r[1] = (uint8_t)X;
	}
}
static bool sb_tso(const uint8_t *r) { (void)r; return false; }
static bool sb_sc(const uint8_t *r) { return r[0] == 0 && r[1] == 0; }

static void mp_body(unsigned t, uint8_t *r)
{
	if (t == 0) {
		X = 1;
		CBAR();
		Y = 1;
	} else {
		r[0] = (uint8_t)Y;
		CBAR();
		r[1] = (uint8_t)X;
	}
}
static bool mp_tso(const uint8_t *r) { return r[0] == 1 && r[1] == 0; }

static void lb_body(unsigned t, uint8_t *r)
{
	if (t == 0) {
		r[0] = (uint8_t)X;
		CBAR();
		Y = 1;
	} else {
		r[1] = (uint8_t)Y;
		CBAR();
		X = 1;
	}
}
static bool lb_tso(const uint8_t *r) { return r[0] == 1 && r[1] == 1; }

static void iriw_body(unsigned t, uint8_t *r)
{
	switch (t) {
	case 0: X = 1; break;
	case 1: Y = 1; break;
	case 2: r[0] = (uint8_t)X; CBAR(); r[1] = (uint8_t)Y; break;
	default: r[2] = (uint8_t)Y; CBAR(); r[3] = (uint8_t)X; break;
	}
}
static bool iriw_tso(const uint8_t *r) { return r[0] == 1 && r[1] == 0 && r[2] == 1 && r[3] == 0; }

static void w22_body(unsigned t, uint8_t *r)
{
	if (t == 0) {
		X = 1;
		CBAR();
		Y = 2;
	} else {
		Y = 1;
		CBAR();
		X = 2;
	}
}
static void w22_after(uint8_t *r)
{
	r[0] = (uint8_t)X;
	r[1] = (uint8_t)Y;
}
static bool w22_tso(const uint8_t *r) { return r[0] == 1 && r[1] == 1; }

static void wrc_body(unsigned t, uint8_t *r)
{
	switch (t) {
	case 0: X = 1; break;
	case 1: r[0] = (uint8_t)X; CBAR(); Y = 1; break;
	default: r[1] = (uint8_t)Y; CBAR(); r[2] = (uint8_t)X; break;
	}
}
static bool wrc_tso(const uint8_t *r) { return r[0] == 1 && r[1] == 1 && r[2] == 0; }

static const struct litmus litmus_tests[] = {
	{ "SB", 2, 2, { 0, 1 }, sb_body, NULL, sb_tso, sb_sc },
	{ "MP", 2, 2, { 1, 1 }, mp_body, NULL, mp_tso, NULL },
	{ "LB", 2, 2, { 0, 1 }, lb_body, NULL, lb_tso, NULL },
	{ "IRIW", 4, 4, { 2, 2, 3, 3 }, iriw_body, NULL, iriw_tso, NULL },
	{ "2+2W", 2, 2, { 0, 0 }, w22_body, w22_after, w22_tso, NULL },
	{ "WRC", 3, 3, { 1, 2, 2 }, wrc_body, NULL, wrc_tso, NULL },
};

struct lt_arg {
	const struct litmus *lt;
	unsigned t;
	pthread_t th;
};

static void *litmus_thread(void *arg)
{
	struct lt_arg *a = arg;
	const struct litmus *lt = a->lt;
	uint8_t *res = (uint8_t *)pg(P_RES + a->t * RES_PAGES);
	uint64_t jitter = 0x9e3779b97f4a7c15ULL * (a->t + 1) + o.id;

	for (unsigned i = 0; i < o.iters; i++) {
		uint8_t r[MAX_REGS] = { 0 };

		/* Who resets (and so holds Modified at the start) rotates, so each thread sometimes starts with
		 * the variables local and sometimes has to fetch them: different interleavings each iteration. */
		if ((i + 0) % lt->nthreads == a->t)
			X = 0;
		if ((i + 1 + i / lt->nthreads) % lt->nthreads == a->t)
			Y = 0;
		jitter = jitter * 6364136223846793005ULL + 1442695040888963407ULL;
		sbar_wait_timed(P_BAR_LT, lt->nthreads, o.start_delay_us * NSEC_PER_USEC,
				(jitter >> 33) % (o.jitter_us * NSEC_PER_USEC + 1));
		lt->body(a->t, r);
		sbar_wait(P_BAR_LT, lt->nthreads);
		if (lt->after) {
			/* Final values: read before anyone starts the next iteration's reset. */
			if (a->t == 0)
				lt->after(r);
			sbar_wait(P_BAR_LT, lt->nthreads);
		}
		/* Results go to this thread's own result pages (one remote-homed write per page, later). */
		memcpy(res + (size_t)i * MAX_REGS, r, MAX_REGS);
	}
	return NULL;
}

static int litmus_run(const struct litmus *lt)
{
	struct lt_arg args[MAX_LT];
	unsigned n = 0;
	int bad = 0;

	for (unsigned t = 0; t < lt->nthreads; t++) {
		if (t % o.nodes != o.id)
			continue;
		args[n].lt = lt;
		args[n].t = t;
		if (pthread_create(&args[n].th, NULL, litmus_thread, &args[n]))
			die("pthread_create");
		n++;
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join(args[i].th, NULL);
	sbar_wait(P_BAR_ALL, o.nodes);

	if (o.id == 0) {
		unsigned tally[81] = { 0 };
		unsigned forbidden = 0, sc_only = 0;
		char line[1024];
		int len;

		for (unsigned i = 0; i < o.iters; i++) {
			uint8_t r[MAX_REGS] = { 0 };
			unsigned key = 0;

			for (unsigned k = 0; k < lt->nregs; k++) {
				const uint8_t *res = (const uint8_t *)pg(P_RES + lt->reg_owner[k] * RES_PAGES);

				r[k] = res[(size_t)i * MAX_REGS + k];
				key = key * 3 + (r[k] > 2 ? 2 : r[k]);
			}
			tally[key]++;
			if (lt->tso_forbidden(r))
				forbidden++;
			if (lt->sc_only && lt->sc_only(r))
				sc_only++;
		}
		len = snprintf(line, sizeof(line), "LITMUS %-5s nodes=%u iters=%u outcomes", lt->name, o.nodes, o.iters);
		for (unsigned key = 0; key < 81; key++) {
			char digits[MAX_REGS + 1];
			unsigned k = key;

			if (!tally[key] || (lt->nregs < 4 && key >= 27) || (lt->nregs < 3 && key >= 9))
				continue;
			for (int d = (int)lt->nregs - 1; d >= 0; d--) {
				digits[d] = (char)('0' + k % 3);
				k /= 3;
			}
			digits[lt->nregs] = 0;
			len += snprintf(line + len, sizeof(line) - (size_t)len, " %s:%u", digits, tally[key]);
		}
		snprintf(line + len, sizeof(line) - (size_t)len, " | tso_forbidden=%u%s", forbidden,
			 lt->sc_only ? "" : "");
		if (lt->sc_only)
			printf("%s sc_forbidden_tso_allowed=%u\n", line, sc_only);
		else
			printf("%s\n", line);
		fflush(stdout);
		bad = forbidden || sc_only;
		if (bad)
			printf("FAIL: %s observed an outcome the memory model forbids\n", lt->name);
	}
	sbar_wait(P_BAR_ALL, o.nodes);
	return bad;
}

/* ---- counter ---- */
static atomic_bool spin_stop;

static void *counter_thread(void *arg)
{
	uint64_t *ctr = (uint64_t *)pg(P_COUNTER);
	unsigned n = (unsigned)(uintptr_t)arg;

	if (n == 0) {
		while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
			__atomic_fetch_add(ctr, 1, __ATOMIC_SEQ_CST);
		return NULL;
	}
	for (unsigned i = 0; i < n; i++)
		__atomic_fetch_add(ctr, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static int counter_run(void)
{
	pthread_t th[16];
	uint64_t expect = (uint64_t)o.nodes * o.threads * o.counter_incs, got, t0 = clock_now_ns();
	unsigned nt = o.threads > 16 ? 16 : o.threads;

	sbar_wait(P_BAR_ALL, o.nodes);
	for (unsigned i = 0; i < nt; i++)
		pthread_create(&th[i], NULL, counter_thread, (void *)(uintptr_t)o.counter_incs);
	for (unsigned i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	sbar_wait(P_BAR_ALL, o.nodes);
	got = __atomic_load_n((uint64_t *)pg(P_COUNTER), __ATOMIC_SEQ_CST);
	printf("COUNTER node=%u nodes=%u threads/node=%u expected=%llu got=%llu %s (%.0f incs/s cluster-wide)\n", o.id,
	       o.nodes, nt, (unsigned long long)expect, (unsigned long long)got, got == expect ? "ok" : "FAIL",
	       (double)expect / ((double)(clock_now_ns() - t0) / 1e9));
	fflush(stdout);
	sbar_wait(P_BAR_ALL, o.nodes);
	return got != expect;
}

static int spin_run(void)
{
	pthread_t th[16];
	unsigned nt = o.threads > 16 ? 16 : o.threads;
	uint64_t end;

	sbar_wait(P_BAR_ALL, o.nodes);
	for (unsigned i = 0; i < nt; i++)
		pthread_create(&th[i], NULL, counter_thread, (void *)(uintptr_t)0);
	printf("RUNNING node=%u\n", o.id);
	fflush(stdout);
	end = clock_now_ns() + (uint64_t)o.spin_ms * NSEC_PER_MSEC;
	while (clock_now_ns() < end && !dsm_region_failed(region, NULL, NULL, 0))
		usleep(10000);
	atomic_store(&spin_stop, true);
	for (unsigned i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	printf("SPIN node=%u finished without a failure\n", o.id);
	return 0;
}

/* ---- memtest ---- */
static uint64_t mem_pattern(unsigned page, unsigned word, unsigned writer)
{
	uint64_t x = ((uint64_t)page << 32) ^ ((uint64_t)word << 8) ^ writer ^ 0x9e3779b97f4a7c15ULL;

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 29;
	return (x & ~0xffULL) | writer;   /* the low byte is the writer's tag */
}

static unsigned mem_writer(unsigned page)
{
	return (dsm_region_home_of(region, page) + 1) % o.nodes;
}

static int memtest_run(void)
{
	unsigned mine = 0, bad = 0;
	uint64_t verified = 0;

	sbar_wait(P_BAR_ALL, o.nodes);
	for (unsigned p = P_MEM; p < P_MEM + o.memtest_pages; p++) {
		uint64_t *w = (uint64_t *)pg(p);

		if (mem_writer(p) != o.id)
			continue;
		for (unsigned k = 0; k < PG / 8; k++)
			w[k] = mem_pattern(p, k, o.id);
		mine++;
	}
	sbar_wait(P_BAR_ALL, o.nodes);
	for (unsigned p = P_MEM; p < P_MEM + o.memtest_pages; p++) {
		const uint64_t *w = (const uint64_t *)pg(p);

		for (unsigned k = 0; k < PG / 8; k++) {
			if (w[k] != mem_pattern(p, k, mem_writer(p))) {
				if (bad < 5)
					printf("MEMTEST mismatch page %u word %u: 0x%016llx, want 0x%016llx\n", p, k,
					       (unsigned long long)w[k],
					       (unsigned long long)mem_pattern(p, k, mem_writer(p)));
				bad++;
			}
			verified += 8;
		}
	}
	printf("MEMTEST node=%u wrote %u pages homed elsewhere, verified %llu bytes of %u pages: %s (%u bad words)\n",
	       o.id, mine, (unsigned long long)verified, o.memtest_pages, bad ? "FAIL" : "ok", bad);
	fflush(stdout);
	sbar_wait(P_BAR_ALL, o.nodes);
	return bad != 0;
}

/* ---- setup ---- */
static void on_fatal(void *opaque, uint32_t node, const char *reason)
{
	printf("FATAL: node %u died (%s); node %u exits\n", node, reason, o.id);
	fflush(stdout);
	/* Linger a moment: our own exit is a node death to the other survivors, and they should get to see and
	 * name the original one first (their transports may notice our reset before the dead node's close). */
	usleep(1000 * 1000);
	_exit(2);
}

static size_t key_read(const char *path, uint8_t *key, size_t max)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		die("key file %s: %s", path, strerror(errno));
	n = fread(key, 1, max, f);
	fclose(f);
	while (n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r'))
		n--;
	if (n < IC_KEY_MIN)
		die("key file %s: %zu bytes, need at least %u", path, n, IC_KEY_MIN);
	return n;
}

static void usage(void)
{
	die("usage: dsm_node --id I --nodes N --port P --key-file F [--transport tcp] [--tests list] [--iters K] "
	    "[--counter-incs K] [--threads T] [--memtest-pages M] [--lease-us U] [--spin-ms MS] [--homes rr|blocks] "
	    "[--no-fatal-handler]");
}

static void opts_parse(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "id", required_argument, NULL, 'i' },     { "nodes", required_argument, NULL, 'n' },
		{ "port", required_argument, NULL, 'p' },   { "key-file", required_argument, NULL, 'k' },
		{ "transport", required_argument, NULL, 'T' }, { "tests", required_argument, NULL, 't' },
		{ "iters", required_argument, NULL, 'I' },  { "counter-incs", required_argument, NULL, 'c' },
		{ "threads", required_argument, NULL, 'h' }, { "memtest-pages", required_argument, NULL, 'm' },
		{ "lease-us", required_argument, NULL, 'l' }, { "spin-ms", required_argument, NULL, 's' },
		{ "homes", required_argument, NULL, 'H' },
		{ "no-fatal-handler", no_argument, NULL, 'F' }, { NULL, 0, NULL, 0 },
	};
	bool have_id = false;
	int c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'i': o.id = (uint32_t)strtoul(optarg, NULL, 0); have_id = true; break;
		case 'n': o.nodes = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'p': o.port = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'k': o.key_file = optarg; break;
		case 'T': o.transport = optarg; break;
		case 't': snprintf(o.tests, sizeof(o.tests), "%s", optarg); break;
		case 'I': o.iters = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'c': o.counter_incs = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'h': o.threads = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'm': o.memtest_pages = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'l': o.lease_ns = strtoull(optarg, NULL, 0) * NSEC_PER_USEC; break;
		case 's': o.spin_ms = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'H': o.homes_rr = !strcmp(optarg, "rr"); break;
		case 'F': o.no_fatal_handler = true; break;
		default: usage();
		}
	}
	if (!have_id || o.nodes < 1 || o.nodes > MAX_NODES || o.id >= o.nodes || !o.port || !o.key_file)
		usage();
	if (o.iters > MAX_ITERS)
		die("--iters at most %u", (unsigned)MAX_ITERS);
}

static bool test_selected(const char *name)
{
	char buf[sizeof(o.tests)], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", o.tests);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (!strcmp(tok, name))
			return true;
	return false;
}

int main(int argc, char **argv)
{
	struct ic_peer_addr members[MAX_NODES];
	struct dsm_region_config cfg;
	struct dsm_region_stats st;
	struct region_net_opts net = { .transport = NULL };
	struct ic_endpoint *ep;
	uint8_t key[IC_KEY_MAX];
	size_t key_len;
	uint32_t *homes = NULL;
	size_t n_pages;
	char tag[16];
	int rc = 0, err;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);   /* a peer closing first must not kill us through a socket write */
	opts_parse(argc, argv);
	snprintf(tag, sizeof(tag), "node%u", o.id);
	log_set_tag(tag);

	n_pages = P_MEM + o.memtest_pages;
	n_pages = (n_pages + 15) & ~(size_t)15;
	if (o.homes_rr) {
		homes = calloc(n_pages, sizeof(*homes));
		if (!homes)
			die("out of memory");
		for (size_t p = 0; p < n_pages; p++)
			homes[p] = (uint32_t)(p % o.nodes);
	}
	for (uint32_t i = 0; i < o.nodes; i++) {
		members[i].id = i;
		snprintf(members[i].addr, sizeof(members[i].addr), "127.0.0.1:%u", o.port + i);
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.self = o.id;
	net.transport = o.transport;
	key_len = key_read(o.key_file, key, sizeof(key));
	cfg.size = n_pages * PG;
	cfg.home_map = homes;
	cfg.lease_ns = o.lease_ns;
	cfg.on_fatal = o.no_fatal_handler ? NULL : on_fatal;
	if (o.no_fatal_handler) {
		struct rlimit no_core = { 0, 0 };

		setrlimit(RLIMIT_CORE, &no_core);   /* the expected SIGSEGV should not leave core files around */
	}

	err = region_net_create(members, o.nodes, &net, key, key_len, &cfg, &ep, &region);
	if (err) {
		fprintf(stderr, "node %u: region create: %s\n", o.id, strerror(-err));
		return 3;
	}
	base = dsm_region_base(region);
	err = dsm_region_wait_peers(region, 20 * NSEC_PER_SEC);
	if (err) {
		printf("node %u: peers not up: %s\n", o.id, strerror(-err));
		region_net_destroy(ep, region);
		return err == -EIO ? 2 : 3;
	}
	printf("UP node=%u nodes=%u pages=%zu transport=%s\n", o.id, o.nodes, n_pages, o.transport);
	sbar_wait(P_BAR_ALL, o.nodes);

	if (test_selected("litmus"))
		for (size_t i = 0; i < sizeof(litmus_tests) / sizeof(litmus_tests[0]); i++)
			rc |= litmus_run(&litmus_tests[i]);
	if (test_selected("counter"))
		rc |= counter_run();
	if (test_selected("memtest"))
		rc |= memtest_run();
	if (test_selected("spin"))
		rc |= spin_run();

	dsm_region_get_stats(region, &st);
	printf("STATS node=%u faults read=%llu write=%llu wp=%llu local=%llu remote=%llu msgs out=%llu in=%llu "
	       "bytes out=%llu in=%llu lock-contended=%llu remote-fault p50=%.1fus p99=%.1fus\n",
	       o.id, (unsigned long long)st.faults_read, (unsigned long long)st.faults_write,
	       (unsigned long long)st.faults_wp, (unsigned long long)st.faults_local,
	       (unsigned long long)st.faults_remote, (unsigned long long)st.msgs_out, (unsigned long long)st.msgs_in,
	       (unsigned long long)st.bytes_out, (unsigned long long)st.bytes_in,
	       (unsigned long long)st.lock_contended, (double)hist_quantile(&st.remote_fault_ns, 0.5) / 1e3,
	       (double)hist_quantile(&st.remote_fault_ns, 0.99) / 1e3);
	/* Everyone finished reading before anyone tears down (a departing node is a dead peer to the others). */
	sbar_wait(P_BAR_ALL, o.nodes);
	region_net_destroy(ep, region);
	free(homes);
	printf("DONE node=%u %s\n", o.id, rc ? "FAIL" : "ok");
	return rc ? 1 : 0;
}
