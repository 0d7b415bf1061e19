/*
 * ipi: fixed-IPI delivery and latency. First CPU 0 sends itself <iters> self-IPIs (PONG vector). Then for
 * each other CPU k, <iters> ping-pongs: CPU 0 sends PING to k (int $0x80), k's IDT handler counts it, EOIs
 * and answers PONG to CPU 0, whose handler counts it; CPU 0 measures the round trip in TSC ticks while
 * spinning in ring 3. At the end every per-CPU counter must equal what was sent. Options: iters= (100);
 * wait=hlt: the pinged CPUs wait halted (HLT, woken by the ping) instead of spinning in ring 3, so a round trip
 * measures a halted vCPU's wake-up on one leg.
 * Output:
 *   ipi: self iters <n> received <m>
 *   ipi: cpu <k> apic <id> pings <p> pongs <q> rtt_min <a> rtt_avg <b> rtt_max <c> ticks
 *   ipi: mode <xapic|x2apic> cpus <n> delivered <d> expected <e> lost <l>
 */
#include "guest.h"

const char workload_name[] = "ipi";

static volatile uint32_t done;

static bool wait_count(volatile uint64_t *ctr, uint64_t want, uint64_t timeout_ticks)
{
	uint64_t t0 = u_rdtsc();
	while (*ctr < want) {
		if (u_rdtsc() - t0 > timeout_ticks)
			return false;
		u_pause();
	}
	return true;
}

int workload_main(unsigned cpu)
{
	const struct guest_info *gi = guest_info();
	struct guest_cpu *c0 = (struct guest_cpu *)&gi->cpu[0];
	uint64_t iters = u_opt_u64("iters", 100);
	uint64_t timeout = u_opt_u64("timeout_ticks", 20000000000ull);
	unsigned n = gi->ncpus;
	char wait[8] = "";
	bool wait_hlt;

	u_opt_str("wait", wait, sizeof(wait));
	wait_hlt = wait[0] == 'h';

	if (cpu != 0) {
		/* Interrupts arrive here, in ring 3, or in the HLT of sys_halt (the last one wakes it after `done`). */
		while (!done) {
			if (wait_hlt)
				sys_halt(&done);
			else
				u_pause();
		}
		return 0;
	}

	uint64_t expected = 0, lost = 0;
	uint64_t base = c0->ipi_rx[1];
	for (uint64_t i = 0; i < iters; i++) {
		sys_ipi(0, GUEST_IPI_PONG);
		if (!wait_count(&c0->ipi_rx[1], base + i + 1, timeout))
			break;
	}
	expected += iters;
	uint64_t self = c0->ipi_rx[1] - base;
	u_printf("ipi: self iters %lu received %lu\n", iters, self);

	for (unsigned k = 1; k < n; k++) {
		uint64_t mn = ~0ull, mx = 0, sum = 0, ok = 0;
		uint64_t pong0 = c0->ipi_rx[1], ping0 = gi->cpu[k].ipi_rx[0];
		for (uint64_t i = 0; i < iters; i++) {
			uint64_t t0 = u_rdtsc();
			sys_ipi(k, GUEST_IPI_PING);
			if (!wait_count(&c0->ipi_rx[1], pong0 + i + 1, timeout)) {
				u_printf("ipi: cpu %u: no pong for ping %lu within %lu ticks\n", k, i, timeout);
				break;
			}
			uint64_t dt = u_rdtsc() - t0;
			mn = dt < mn ? dt : mn;
			mx = dt > mx ? dt : mx;
			sum += dt;
			ok++;
		}
		uint64_t pings = gi->cpu[k].ipi_rx[0] - ping0, pongs = c0->ipi_rx[1] - pong0;
		u_printf("ipi: cpu %u apic %u pings %lu pongs %lu rtt_min %lu rtt_avg %lu rtt_max %lu ticks\n", k,
			 gi->cpu[k].apic_id, pings, pongs, ok ? mn : 0, ok ? sum / ok : 0, mx);
		expected += 2 * iters;
		lost += 2 * iters - (pings + pongs);
	}
	done = 1;
	if (wait_hlt) {
		/* halted CPUs see `done` only when woken: one more ping each (answered with a pong, as any ping) */
		for (unsigned k = 1; k < n; k++) {
			uint64_t p0 = c0->ipi_rx[1];

			sys_ipi(k, GUEST_IPI_PING);
			wait_count(&c0->ipi_rx[1], p0 + 1, timeout);
			expected += 2;
		}
	}
	uint64_t delivered = 0;
	for (unsigned i = 0; i < n; i++)
		delivered += gi->cpu[i].ipi_rx[0] + gi->cpu[i].ipi_rx[1];
	u_printf("ipi: mode %s cpus %u delivered %lu expected %lu lost %lu\n", gi->x2apic ? "x2apic" : "xapic", n,
		 delivered, expected, lost);
	return delivered == expected && !lost && self == iters ? GUEST_EXIT_OK : GUEST_EXIT_FAIL;
}
