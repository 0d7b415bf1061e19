/*
 * memtest: write and verify patterns over all available RAM (multiboot memory map, type 1) above the kernel
 * image, inside the 4 GiB identity map. The tested bytes are split in equal contiguous slices across CPUs;
 * each pattern is written by one CPU and verified by the next one (cpu + 1 mod n), so every check also
 * crosses CPUs (and, under rackvm, nodes). Patterns, 64-bit stores unless noted:
 *   zeros, ones, 0xaa.., 0x55.., address (each qword holds its own address ^ seed), bytes (byte stores
 *   of a per-address value, verified byte by byte).
 * Option max=<bytes> (K/M/G suffixes) bounds the amount tested; corrupt=<offset> flips one bit at that
 * offset of the first range after the address pattern is written (negative test). Output:
 *   memtest: range 0x<base>-0x<end>
 *   memtest: pattern <name> errors <e> ticks <t>
 *   memtest: error cpu <c> addr 0x<a> expect 0x<x> got 0x<y>      (first few only)
 *   memtest: tested <bytes> bytes (<MiB> MiB) in <r> ranges, <p> patterns, <c> cpus, errors <e>
 */
#include "guest.h"

const char workload_name[] = "memtest";

#define MAX_RANGES GUEST_MAX_MMAP
#define MAX_REPORTED 8

struct range {
	uint64_t base, len;
};

static struct range ranges[MAX_RANGES];
static unsigned nranges;
static uint64_t total;
static uint64_t errors[GUEST_MAX_CPUS * 8];
static volatile uint32_t reported;

enum pattern { P_ZERO, P_ONES, P_AA, P_55, P_ADDR, P_BYTES, P_COUNT };
static const char *const pattern_names[P_COUNT] = { "zeros", "ones", "0xaa", "0x55", "address", "bytes" };

static uint64_t qword_value(enum pattern p, uint64_t addr)
{
	switch (p) {
	case P_ZERO: return 0;
	case P_ONES: return ~0ull;
	case P_AA: return 0xaaaaaaaaaaaaaaaaull;
	case P_55: return 0x5555555555555555ull;
	default: return addr ^ 0x5a5a0000a5a50000ull;
	}
}

static uint8_t byte_value(uint64_t addr)
{
	return (uint8_t)((addr * 31) ^ (addr >> 9) ^ (addr >> 17));
}

static void ranges_build(void)
{
	const struct guest_info *gi = guest_info();
	uint64_t floor = (gi->kernel_end + 4095) & ~4095ull;
	uint64_t max = u_opt_u64("max", ~0ull);
	for (unsigned i = 0; i < gi->nmmap && nranges < MAX_RANGES; i++) {
		const struct guest_mem_range *m = &gi->mmap[i];
		if (m->type != 1)
			continue;
		uint64_t b = m->base > floor ? m->base : floor, e = m->base + m->len;
		b = (b + 4095) & ~4095ull;
		e &= ~4095ull;
		if (e > 0x100000000ull)
			e = 0x100000000ull;
		if (b >= e)
			continue;
		if (e - b > max - total)
			e = b + (max - total);
		if (b >= e)
			break;
		ranges[nranges++] = (struct range){ b, e - b };
		total += e - b;
	}
}

/* Calls fn on the pieces of the concatenated ranges that fall in [off, off + len). */
static void slice_apply(uint64_t off, uint64_t len, void (*fn)(uint64_t addr, uint64_t len, enum pattern p,
							      unsigned cpu), enum pattern p, unsigned cpu)
{
	uint64_t pos = 0;
	for (unsigned i = 0; i < nranges && len; i++) {
		uint64_t rb = pos, re = pos + ranges[i].len;
		pos = re;
		if (off >= re || off + len <= rb)
			continue;
		uint64_t b = off > rb ? off : rb, e = off + len < re ? off + len : re;
		fn(ranges[i].base + (b - rb), e - b, p, cpu);
	}
}

static void fill(uint64_t addr, uint64_t len, enum pattern p, unsigned cpu)
{
	if (p == P_BYTES) {
		volatile uint8_t *b = (volatile uint8_t *)(uintptr_t)addr;
		for (uint64_t i = 0; i < len; i++)
			b[i] = byte_value(addr + i);
		return;
	}
	volatile uint64_t *q = (volatile uint64_t *)(uintptr_t)addr;
	for (uint64_t i = 0; i < len / 8; i++)
		q[i] = qword_value(p, addr + 8 * i);
}

static void report(unsigned cpu, uint64_t addr, uint64_t expect, uint64_t got)
{
	if (__atomic_fetch_add(&reported, 1, __ATOMIC_RELAXED) < MAX_REPORTED)
		u_printf("memtest: error cpu %u addr 0x%lx expect 0x%lx got 0x%lx\n", cpu, addr, expect, got);
}

static void verify(uint64_t addr, uint64_t len, enum pattern p, unsigned cpu)
{
	if (p == P_BYTES) {
		volatile uint8_t *b = (volatile uint8_t *)(uintptr_t)addr;
		for (uint64_t i = 0; i < len; i++) {
			uint8_t v = b[i], x = byte_value(addr + i);
			if (v != x) {
				errors[cpu * 8]++;
				report(cpu, addr + i, x, v);
			}
		}
		return;
	}
	volatile uint64_t *q = (volatile uint64_t *)(uintptr_t)addr;
	for (uint64_t i = 0; i < len / 8; i++) {
		uint64_t v = q[i], x = qword_value(p, addr + 8 * i);
		if (v != x) {
			errors[cpu * 8]++;
			report(cpu, addr + 8 * i, x, v);
		}
	}
}

int workload_main(unsigned cpu)
{
	const struct guest_info *gi = guest_info();
	unsigned n = gi->ncpus;
	if (cpu == 0) {
		ranges_build();
		for (unsigned i = 0; i < nranges; i++)
			u_printf("memtest: range 0x%lx-0x%lx\n", ranges[i].base, ranges[i].base + ranges[i].len);
	}
	u_barrier();
	/* slices are multiples of 8 bytes (range bounds are page-aligned) */
	uint64_t unit = total / 8;
	uint64_t wb = unit * cpu / n * 8, we = unit * (cpu + 1) / n * 8;
	unsigned vc = (cpu + 1) % n;
	uint64_t vb = unit * vc / n * 8, ve = unit * (vc + 1) / n * 8;
	uint64_t sum_errors = 0;
	uint64_t corrupt = u_opt_u64("corrupt", ~0ull);
	for (int p = 0; p < P_COUNT; p++) {
		uint64_t t0 = u_rdtsc();
		slice_apply(wb, we - wb, fill, (enum pattern)p, cpu);
		u_barrier();
		if (p == P_ADDR && corrupt != ~0ull) {
			/* negative test: flip one bit between write and verify */
			if (cpu == 0 && nranges && corrupt < ranges[0].len)
				*(volatile uint8_t *)(uintptr_t)(ranges[0].base + corrupt) ^= 1;
			u_barrier();
		}
		slice_apply(vb, ve - vb, verify, (enum pattern)p, cpu);
		u_barrier();
		if (cpu == 0) {
			uint64_t e = 0;
			for (unsigned i = 0; i < n; i++)
				e += errors[i * 8];
			u_printf("memtest: pattern %s errors %lu ticks %lu\n", pattern_names[p], e - sum_errors,
				 u_rdtsc() - t0);
			sum_errors = e;
		}
		u_barrier();
	}
	if (cpu != 0)
		return 0;
	u_printf("memtest: tested %lu bytes (%lu MiB) in %u ranges, %d patterns, %u cpus, errors %lu\n", total,
		 total >> 20, nranges, P_COUNT, n, sum_errors);
	return sum_errors || !total ? GUEST_EXIT_FAIL : GUEST_EXIT_OK;
}
