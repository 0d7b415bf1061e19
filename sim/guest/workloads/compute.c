/*
 * compute: parallel CPU-bound kernel in ring 3 (compute_kernel.h), [0, n) split in contiguous blocks
 * across CPUs. Options: n=, rounds=, expect=0x... (default: the built-in value for the default n/rounds).
 * Output:
 *   compute: cpu <i> items <count> ticks <tsc ticks>
 *   compute: n <n> rounds <r> cpus <c> checksum 0x<hex> expect 0x<hex>|none ok|MISMATCH ticks <wall>
 */
#include "guest.h"
#include "compute_kernel.h"

const char workload_name[] = "compute";

/* checksum(COMPUTE_DEFAULT_N, COMPUTE_DEFAULT_ROUNDS), from compute-ref */
#define COMPUTE_DEFAULT_EXPECT 0x043d5162c24f96b6ull

static uint64_t partial[GUEST_MAX_CPUS * 8];
static uint64_t start_tsc, end_tsc;

int workload_main(unsigned cpu)
{
	const struct guest_info *gi = guest_info();
	uint64_t n = u_opt_u64("n", COMPUTE_DEFAULT_N);
	unsigned rounds = (unsigned)u_opt_u64("rounds", COMPUTE_DEFAULT_ROUNDS);
	uint64_t begin = n * cpu / gi->ncpus, end = n * (cpu + 1) / gi->ncpus;

	u_barrier();
	if (cpu == 0)
		start_tsc = u_rdtsc();
	uint64_t t0 = u_rdtsc();
	partial[cpu * 8] = compute_range(begin, end, rounds);
	uint64_t t1 = u_rdtsc();
	u_barrier();
	if (cpu == 0)
		end_tsc = u_rdtsc();
	u_printf("compute: cpu %u items %lu ticks %lu\n", cpu, end - begin, t1 - t0);
	u_barrier();
	if (cpu != 0)
		return 0;

	uint64_t sum = 0;
	for (unsigned i = 0; i < gi->ncpus; i++)
		sum += partial[i * 8];
	bool have_expect = true;
	uint64_t expect = u_opt_u64("expect", 0);
	char tmp[2];
	if (!u_opt_str("expect", tmp, sizeof(tmp))) {
		have_expect = n == COMPUTE_DEFAULT_N && rounds == COMPUTE_DEFAULT_ROUNDS;
		expect = COMPUTE_DEFAULT_EXPECT;
	}
	bool ok = !have_expect || sum == expect;
	char ebuf[24] = "none";
	if (have_expect)
		u_snprintf(ebuf, sizeof(ebuf), "0x%016lx", expect);
	u_printf("compute: n %lu rounds %u cpus %u checksum 0x%016lx expect %s %s ticks %lu\n", n, rounds,
		 gi->ncpus, sum, ebuf, ok ? "ok" : "MISMATCH", end_tsc - start_tsc);
	return ok ? GUEST_EXIT_OK : GUEST_EXIT_FAIL;
}
