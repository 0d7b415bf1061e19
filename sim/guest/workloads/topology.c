/*
 * topology: CPUs, APIC ids, NUMA nodes (SRAT) and the multiboot memory map, as the guest sees them.
 * Every CPU checks in ring 3 that CPUID reports the APIC id the MADT gave it and that the cpu-id syscall
 * returns its index; all meet once in the ring-0 barrier syscall. Output (one line each):
 *   topology: cpu <i> apic <id> node <n> cpuid_apic <id> [MISMATCH]
 *   topology: mmap <base>-<end> type <t>
 *   topology: numa node <n> mem <base>-<end>        (or: topology: no SRAT, 1 node)
 *   topology: <n> cpus up (madt <m>), <k> numa nodes, <bytes> bytes usable RAM
 * Exit 0 when every MADT CPU came up and every CPUID APIC id matches.
 */
#include "guest.h"

const char workload_name[] = "topology";

static uint32_t seen_apic[GUEST_MAX_CPUS];
static unsigned seen_cpu[GUEST_MAX_CPUS];

static uint32_t cpuid_apic_id(void)
{
	uint32_t a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
	if (a >= 0xb) {
		__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0xb), "c"(0));
		if (b)
			return d;   /* x2APIC id */
	}
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
	return b >> 24;
}

int workload_main(unsigned cpu)
{
	const struct guest_info *gi = guest_info();
	seen_apic[cpu] = cpuid_apic_id();
	seen_cpu[cpu] = sys_cpu();
	sys_barrier();      /* the ring-0 barrier, once, so that it is exercised */
	if (cpu != 0)
		return 0;

	int bad = 0;
	for (unsigned i = 0; i < gi->ncpus; i++) {
		bool mismatch = seen_apic[i] != gi->cpu[i].apic_id || seen_cpu[i] != i;
		u_printf("topology: cpu %u apic %u node %u cpuid_apic %u%s\n", i, gi->cpu[i].apic_id,
			 gi->cpu[i].node, seen_apic[i], mismatch ? " MISMATCH" : "");
		bad |= mismatch || !gi->cpu[i].up;
	}
	uint64_t usable = 0;
	for (unsigned i = 0; i < gi->nmmap; i++) {
		const struct guest_mem_range *m = &gi->mmap[i];
		u_printf("topology: mmap 0x%016lx-0x%016lx type %u\n", m->base, m->base + m->len, m->type);
		if (m->type == 1)
			usable += m->len;
	}
	unsigned nodes = 1;
	if (gi->have_srat) {
		uint32_t max = 0;
		for (unsigned i = 0; i < gi->nnuma_mem; i++) {
			const struct guest_numa_mem *m = &gi->numa_mem[i];
			u_printf("topology: numa node %u mem 0x%016lx-0x%016lx\n", m->node, m->base, m->base + m->len);
			if (m->node > max)
				max = m->node;
		}
		for (unsigned i = 0; i < gi->ncpus; i++)
			if (gi->cpu[i].node > max)
				max = gi->cpu[i].node;
		nodes = max + 1;
	} else {
		u_printf("topology: no SRAT, 1 node\n");
	}
	u_printf("topology: %u cpus up (madt %u), %u numa nodes, %lu bytes usable RAM, apic %s\n", gi->ncpus,
		 gi->madt_cpus, nodes, usable, gi->x2apic ? "x2apic" : "xapic");
	if (gi->ncpus != gi->madt_cpus)
		bad = 1;
	return bad ? GUEST_EXIT_FAIL : GUEST_EXIT_OK;
}
