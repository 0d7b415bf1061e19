/*
 * litmus: classic memory-model litmus tests, each thread on its own CPU in ring 3, with a barrier before and
 * after every round of instances. x86-TSO allows only SB's relaxed outcome (store buffering): it is counted, never a
 * failure. Any outcome TSO forbids fails the run. Tests needing more CPUs than present are skipped.
 *   SB   (2)  T0: x=1; r0=y        T1: y=1; r1=x          relaxed r0=0 r1=0 (allowed)
 *   MP   (2)  T0: x=1; y=1         T1: r0=y; r1=x         forbidden r0=1 r1=0
 *   LB   (2)  T0: r0=x; y=1        T1: r1=y; x=1          forbidden r0=1 r1=1
 *   2+2W (2)  T0: x=1; y=2         T1: y=1; x=2           forbidden final x=1 y=1
 *   WRC  (3)  T0: x=1   T1: r0=x; y=1   T2: r1=y; r2=x    forbidden r0=1 r1=1 r2=0
 *   IRIW (4)  T0: x=1   T1: y=1   T2: r0=x; r1=y   T3: r2=y; r3=x   forbidden r0=1 r1=0 r2=1 r3=0
 * Options: iters=<n> instances per test (default 1000, run in rounds of 32 between barriers); skew=<ticks>
 * (default 200000): every round starts at a common TSC deadline this far after CPU 0 set it; inject=<test>
 * adds one synthetic forbidden outcome to that test's tally (negative test of the checker). Output:
 *   litmus: <test> outcome <name>=<v>,... count <c>[ relaxed| FORBIDDEN]
 *   litmus: <test> iters <n> forbidden <f> relaxed <r>
 *   litmus: <test> skipped (needs <k> cpus, have <n>)
 *   litmus: <t> tests run, <s> skipped, forbidden <f>
 */
#include "guest.h"

const char workload_name[] = "litmus";

/*
 * Instances are batched as in litmus7: each barrier-delimited round runs BATCH independent instances, each
 * on its own cache lines, so threads race through the batch at the same time and outcomes can overlap.
 */
#define BATCH 32

struct instance {
	volatile uint64_t x __attribute__((aligned(64)));
	volatile uint64_t y __attribute__((aligned(64)));
	volatile uint64_t r[4] __attribute__((aligned(64)));
};

static struct instance inst[BATCH];
static volatile uint64_t go_tsc;

struct litmus_test {
	const char *name;
	unsigned threads, nregs;
	const char *regs[4];
	void (*run)(struct instance *s, unsigned t);
	/* outcome: bit i = register i (0/1; for 2+2W the final x==1, y==1) */
	bool (*forbidden)(unsigned outcome);
	bool (*relaxed)(unsigned outcome);
};

#define CB() u_compiler_barrier()

static void sb_run(struct instance *s, unsigned t)
{
	if (t == 0) { s->x = 1; CB(); s->r[0] = s->y; }
	else { s->y = 1; CB(); s->r[1] = s->x; }
}
static bool sb_relaxed(unsigned o) { return o == 0; }
static bool never(unsigned o) { (void)o; return false; }

static void mp_run(struct instance *s, unsigned t)
{
	if (t == 0) { s->x = 1; CB(); s->y = 1; }
	else { uint64_t a = s->y; CB(); uint64_t b = s->x; s->r[0] = a; s->r[1] = b; }
}
static bool mp_forbidden(unsigned o) { return o == 1; }    /* r0=1 r1=0 */

static void lb_run(struct instance *s, unsigned t)
{
	if (t == 0) { uint64_t a = s->x; CB(); s->y = 1; s->r[0] = a; }
	else { uint64_t b = s->y; CB(); s->x = 1; s->r[1] = b; }
}
static bool lb_forbidden(unsigned o) { return o == 3; }

static void w22_run(struct instance *s, unsigned t)
{
	if (t == 0) { s->x = 1; CB(); s->y = 2; }
	else { s->y = 1; CB(); s->x = 2; }
}
static bool w22_forbidden(unsigned o) { return o == 3; }

static void wrc_run(struct instance *s, unsigned t)
{
	if (t == 0) { s->x = 1; }
	else if (t == 1) { uint64_t a = s->x; CB(); s->y = 1; s->r[0] = a; }
	else { uint64_t b = s->y; CB(); uint64_t c = s->x; s->r[1] = b; s->r[2] = c; }
}
static bool wrc_forbidden(unsigned o) { return o == 3; }   /* r0=1 r1=1 r2=0 */

static void iriw_run(struct instance *s, unsigned t)
{
	if (t == 0) { s->x = 1; }
	else if (t == 1) { s->y = 1; }
	else if (t == 2) { uint64_t a = s->x; CB(); uint64_t b = s->y; s->r[0] = a; s->r[1] = b; }
	else { uint64_t c = s->y; CB(); uint64_t d = s->x; s->r[2] = c; s->r[3] = d; }
}
static bool iriw_forbidden(unsigned o) { return o == 5; }  /* r0=1 r1=0 r2=1 r3=0 */

static const struct litmus_test tests[] = {
	{ "SB", 2, 2, { "r0", "r1" }, sb_run, never, sb_relaxed },
	{ "MP", 2, 2, { "r0", "r1" }, mp_run, mp_forbidden, never },
	{ "LB", 2, 2, { "r0", "r1" }, lb_run, lb_forbidden, never },
	{ "2+2W", 2, 2, { "x", "y" }, w22_run, w22_forbidden, never },
	{ "WRC", 3, 3, { "r0", "r1", "r2" }, wrc_run, wrc_forbidden, never },
	{ "IRIW", 4, 4, { "r0", "r1", "r2", "r3" }, iriw_run, iriw_forbidden, never },
};
#define NTESTS (sizeof(tests) / sizeof(tests[0]))

static unsigned outcome_of(const struct litmus_test *t, const struct instance *s)
{
	unsigned o = 0;
	if (t->run == w22_run)
		return (s->x == 1 ? 1u : 0u) | (s->y == 1 ? 2u : 0u);
	for (unsigned i = 0; i < t->nregs; i++)
		o |= (s->r[i] ? 1u : 0u) << i;
	return o;
}

static uint64_t tally[16];

/* Returns the number of forbidden outcomes seen (cpu 0 only). */
static uint64_t litmus_one(const struct litmus_test *t, unsigned cpu, uint64_t iters, uint64_t start_skew)
{
	unsigned n = guest_info()->ncpus;
	if (cpu == 0)
		memset(tally, 0, sizeof(tally));
	uint64_t rounds = (iters + BATCH - 1) / BATCH;
	for (uint64_t round = 0; round < rounds; round++) {
		unsigned batch = (unsigned)(iters - round * BATCH < BATCH ? iters - round * BATCH : BATCH);
		if (cpu == 0) {
			go_tsc = u_rdtsc() + start_skew;
			for (unsigned b = 0; b < batch; b++) {
				inst[b].x = 0;
				inst[b].y = 0;
				for (unsigned i = 0; i < 4; i++)
					inst[b].r[i] = 0;
			}
		}
		u_barrier();
		/* Roles rotate over the CPUs from round to round when there are more CPUs than threads. */
		unsigned t_index = (cpu + n - (unsigned)(round % n)) % n;
		/* Leave the barrier at different times, start the round at the same TSC deadline. The wait is
		 * bounded locally so that vCPUs with unsynchronized TSCs only lose overlap, never hang. */
		uint64_t w0 = u_rdtsc();
		while ((int64_t)(u_rdtsc() - go_tsc) < 0 && u_rdtsc() - w0 < 2 * start_skew)
			u_pause();
		if (t_index < t->threads)
			for (unsigned b = 0; b < batch; b++)
				t->run(&inst[b], t_index);
		u_barrier();
		if (cpu == 0)
			for (unsigned b = 0; b < batch; b++)
				tally[outcome_of(t, &inst[b])]++;
	}
	if (cpu != 0)
		return 0;
	/* inject=<test>: count one synthetic forbidden outcome, to check that the run then fails */
	char inject[8];
	if (u_opt_str("inject", inject, sizeof(inject)) && !strncmp(inject, t->name, sizeof(inject))) {
		for (unsigned o = 0; o < (1u << t->nregs); o++) {
			if (t->forbidden(o)) {
				u_printf("litmus: %s injecting one forbidden outcome\n", t->name);
				tally[o]++;
				break;
			}
		}
	}
	uint64_t forbidden = 0, relaxed = 0;
	for (unsigned o = 0; o < (1u << t->nregs); o++) {
		if (!tally[o])
			continue;
		char buf[64];
		int len = 0;
		for (unsigned i = 0; i < t->nregs; i++)
			len += u_snprintf(buf + len, sizeof(buf) - (size_t)len, "%s%s=%u", i ? "," : "", t->regs[i],
					  (o >> i) & 1);
		bool f = t->forbidden(o), r = t->relaxed(o);
		if (f)
			forbidden += tally[o];
		if (r)
			relaxed += tally[o];
		u_printf("litmus: %s outcome %s count %lu%s\n", t->name, buf, tally[o],
			 f ? " FORBIDDEN" : r ? " relaxed" : "");
	}
	u_printf("litmus: %s iters %lu forbidden %lu relaxed %lu\n", t->name, iters, forbidden, relaxed);
	return forbidden;
}

int workload_main(unsigned cpu)
{
	unsigned n = guest_info()->ncpus;
	uint64_t iters = u_opt_u64("iters", 1000);
	uint64_t skew = u_opt_u64("skew", 200000);
	uint64_t forbidden = 0;
	unsigned run = 0, skipped = 0;
	for (unsigned i = 0; i < NTESTS; i++) {
		const struct litmus_test *t = &tests[i];
		if (t->threads > n) {
			if (cpu == 0)
				u_printf("litmus: %s skipped (needs %u cpus, have %u)\n", t->name, t->threads, n);
			skipped++;
			continue;
		}
		forbidden += litmus_one(t, cpu, iters, skew);
		run++;
	}
	if (cpu != 0)
		return 0;
	u_printf("litmus: %u tests run, %u skipped, forbidden %lu\n", run, skipped, forbidden);
	return forbidden ? GUEST_EXIT_FAIL : GUEST_EXIT_OK;
}
