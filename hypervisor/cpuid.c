// SPDX-License-Identifier: MIT
/*
 * The guest's CPUID table (fw.h: fw_cpuid_build, fw_cpuid_set_tsc).
 *
 * Topology: one package, one thread per core, every vCPU a core. The core level's shift is the number of bits
 * that covers every APIC id (at least ceil(log2(n_vcpus))), so leaf 0xB/0x1F, leaf 1 EBX[23:16] and leaf 4
 * EAX[31:26] all describe the same package and every vCPU's APIC id >> shift is 0. The table holds vCPU 0's
 * values; backends patch the per-vCPU fields (accel.h).
 *
 * emu model (base == NULL): "GenuineIntel" family 15 model 6 stepping 1 (the kvm64 signature, a generic CPU to
 * Linux). Advertised: FPU, PSE, TSC, MSR, PAE, CX8, APIC, SEP, PGE, CMOV, PAT, HTT (n > 1), FXSR, SSE, SSE2,
 * CMPXCHG16B, POPCNT, x2APIC, TSC-deadline, hypervisor; SYSCALL, NX, RDTSCP, LM, LAHF/SAHF in 64-bit mode, LZCNT
 * (ABM); FCS/FDS deprecated (leaf 7 EBX[13]); invariant TSC; ARAT; 0x15/0x16 for a 1 GHz TSC until
 * fw_cpuid_set_tsc says other. Each of these is executed by the interpreter (x87/SSE/SSE2: emu_exec_fpu.c) and
 * tested in tests/unit/test_emu.c (test_cpuid_emu_model_features) and test_emu_exec.c. Never: MMX, SSE3 and later,
 * AVX, XSAVE, BMI1 (TZCNT runs as BSF), MOVBE, MONITOR, RDRAND, FSGSBASE, SMAP — the interpreter raises #UD for
 * them, so glibc's ifuncs pick their SSE2 code.
 *
 * KVM (base != NULL): the supported table, with leaf 1 (APIC id, logical count, HTT, x2APIC, TSC-deadline,
 * hypervisor), leaf 4's sharing fields and leaves 0xB/0x1F rewritten; everything else as KVM reports it, less what
 * the kvm backend hides on a host that cannot run it (fw_cpuid_hide; on kvm_pvm, fw_cpuid_kvm_pvm_hidden).
 */
#include <errno.h>
#include <string.h>

#include "hypervisor/fw.h"
#include "hypervisor/lapic.h"

#define EMU_TSC_HZ 1000000000ull

struct cpuid_table {
	struct accel_cpuid_entry *e;
	size_t n, max;
};

static struct accel_cpuid_entry *table_find(struct cpuid_table *t, uint32_t fn, uint32_t idx)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].function == fn && (!t->e[i].has_index || t->e[i].index == idx))
			return &t->e[i];
	return NULL;
}

/* The entry for (fn, idx), added zeroed if absent; NULL when the table is full. */
static struct accel_cpuid_entry *table_get(struct cpuid_table *t, uint32_t fn, uint32_t idx, bool has_index)
{
	struct accel_cpuid_entry *e = table_find(t, fn, idx);
	if (e)
		return e;
	if (t->n >= t->max)
		return NULL;
	e = &t->e[t->n++];
	*e = (struct accel_cpuid_entry){ .function = fn, .index = idx, .has_index = has_index };
	return e;
}

static void table_del(struct cpuid_table *t, uint32_t fn)
{
	size_t j = 0;
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].function != fn)
			t->e[j++] = t->e[i];
	t->n = j;
}

/* Bits, and for leaf 0xD the whole leaf, a kvm_pvm host offers but cannot run in ring 0 (measured there; see
 * docs/hypervisor.md). XSAVE goes with everything that needs XSAVE-managed state, as a guest kernel cannot enable it
 * without XSETBV/XRSTOR (Linux would otherwise stop at its first XRSTOR). */
const struct fw_cpuid_hide fw_cpuid_kvm_pvm_hidden[] = {
	{ 1, 0, 2, (1u << 13) | (1u << 22), "cmpxchg16b movbe" },
	{ 1, 0, 2, (1u << 12) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 29), "fma xsave osxsave avx f16c" },
	{ 7, 0, 1, (1u << 10) | (1u << 20) | (1u << 24), "invpcid smap clwb" },
	{ 7, 0, 1, (1u << 5) | (1u << 14) | (1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) |
			   (1u << 28) | (1u << 30) | (1u << 31),
	  "avx2 mpx avx512f/dq/ifma/pf/er/cd/bw/vl" },
	{ 7, 0, 2, (1u << 1) | (1u << 3) | (1u << 4) | (1u << 6) | (1u << 7) | (1u << 9) | (1u << 10) | (1u << 11) |
			   (1u << 12) | (1u << 14),
	  "avx512vbmi pku ospke avx512vbmi2 cet-ss vaes vpclmulqdq avx512vnni/bitalg/vpopcntdq" },
	{ 7, 0, 3, (1u << 2) | (1u << 3) | (1u << 8) | (1u << 20) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25),
	  "avx512-4vnniw/4fmaps/vp2intersect cet-ibt amx-bf16 avx512fp16 amx-tile amx-int8" },
	{ 7, 1, 0, (1u << 4) | (1u << 5) | (1u << 21) | (1u << 23), "avx-vnni avx512bf16 amx-fp16 avx-ifma" },
	{ 0xd, 0, 0, 0, "leaf 0xd (xsave state)" },
	{ 0x80000001, 0, 2, (1u << 11) | (1u << 16), "xop fma4" },
	{ 0x80000008, 0, 1, 1u << 4, "rdpru" },
};
const size_t fw_cpuid_kvm_pvm_hidden_n = sizeof(fw_cpuid_kvm_pvm_hidden) / sizeof(fw_cpuid_kvm_pvm_hidden[0]);

static uint32_t *reg_of(struct accel_cpuid_entry *e, uint8_t reg)
{
	return reg == 0 ? &e->eax : reg == 1 ? &e->ebx : reg == 2 ? &e->ecx : &e->edx;
}

unsigned fw_cpuid_hide(struct accel_cpuid_entry *table, size_t *n, const struct fw_cpuid_hide *hide, size_t n_hide)
{
	struct cpuid_table t = { table, *n, *n };
	unsigned changed = 0;

	for (size_t i = 0; i < n_hide; i++) {
		const struct fw_cpuid_hide *h = &hide[i];

		if (!h->mask) {
			size_t before = t.n;

			table_del(&t, h->function);
			changed += t.n != before;
			continue;
		}
		/* a leaf may come with and without a significant index: clear it wherever (function, index) matches */
		bool hit = false;
		for (size_t j = 0; j < t.n; j++) {
			struct accel_cpuid_entry *e = &t.e[j];
			uint32_t *r = reg_of(e, h->reg);

			if (e->function != h->function || (e->has_index && e->index != h->index) ||
			    (!e->has_index && h->index != 0))
				continue;
			if (*r & h->mask)
				hit = true;
			*r &= ~h->mask;
		}
		changed += hit;
	}
	*n = t.n;
	return changed;
}

static unsigned ceil_log2(uint32_t v)
{
	unsigned s = 0;
	while (s < 32 && (1ull << s) < v)
		s++;
	return s;
}

static uint32_t pack4(const char *s)
{
	return (uint8_t)s[0] | ((uint32_t)(uint8_t)s[1] << 8) | ((uint32_t)(uint8_t)s[2] << 16) |
	       ((uint32_t)(uint8_t)s[3] << 24);
}

static int emu_model(struct cpuid_table *t)
{
	static const char brand[48] = "rackvm";
	struct accel_cpuid_entry *e;

	if (!(e = table_get(t, 0, 0, false)))
		return -ENOSPC;
	e->eax = 0x1f;
	e->ebx = pack4("Genu");
	e->edx = pack4("ineI");
	e->ecx = pack4("ntel");
	if (!(e = table_get(t, 1, 0, false)))
		return -ENOSPC;
	e->eax = 0x00000f61;               /* family 15, model 6, stepping 1 */
	e->ebx = 8u << 8;                  /* CLFLUSH line 64 bytes; count and APIC id set by topology */
	/* CMPXCHG16B, x2APIC, POPCNT, TSC-deadline, hypervisor */
	e->ecx = (1u << 13) | (1u << 21) | (1u << 23) | (1u << 24) | (1u << 31);
	e->edx = (1u << 0) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 9) | (1u << 11) |
		 (1u << 13) | (1u << 15) | (1u << 16) | (1u << 24) | (1u << 25) | (1u << 26);   /* FPU, ..., FXSR, SSE, SSE2 */
	/* Deterministic cache parameters: L1d, L1i, L2 per core; L3 shared by the package. */
	static const struct { uint32_t type, level, ways, sets; } caches[] = {
		{ 1, 1, 8, 64 }, { 2, 1, 8, 64 }, { 3, 2, 16, 1024 }, { 3, 3, 16, 16384 },
	};
	for (uint32_t i = 0; i <= 4; i++) {
		if (!(e = table_get(t, 4, i, true)))
			return -ENOSPC;
		if (i == 4)
			break;                     /* type 0: no more caches */
		e->eax = caches[i].type | (caches[i].level << 5) | (1u << 8);
		e->ebx = 63 | ((caches[i].ways - 1) << 22);
		e->ecx = caches[i].sets - 1;
	}
	if (!(e = table_get(t, 6, 0, false)))
		return -ENOSPC;
	e->eax = 1u << 2;                  /* ARAT: the APIC timer runs in every C-state */
	if (!(e = table_get(t, 7, 0, true)))
		return -ENOSPC;
	e->ebx = 1u << 13;                 /* FCS/FDS deprecated: FXSAVE stores them as 0 */
	if (!(e = table_get(t, 0x40000000, 0, false)))
		return -ENOSPC;
	e->eax = 0x40000000;
	e->ebx = pack4("rack");
	e->ecx = pack4("vmra");
	e->edx = pack4("ckvm");
	if (!(e = table_get(t, 0x80000000, 0, false)))
		return -ENOSPC;
	e->eax = 0x80000008;
	if (!(e = table_get(t, 0x80000001, 0, false)))
		return -ENOSPC;
	e->ecx = (1u << 0) | (1u << 5);                 /* LAHF/SAHF in 64-bit mode, LZCNT (ABM) */
	e->edx = (1u << 11) | (1u << 20) | (1u << 27) | (1u << 29); /* SYSCALL, NX, RDTSCP, LM */
	for (uint32_t i = 0; i < 3; i++) {
		if (!(e = table_get(t, 0x80000002 + i, 0, false)))
			return -ENOSPC;
		e->eax = pack4(brand + 16 * i);
		e->ebx = pack4(brand + 16 * i + 4);
		e->ecx = pack4(brand + 16 * i + 8);
		e->edx = pack4(brand + 16 * i + 12);
	}
	if (!(e = table_get(t, 0x80000007, 0, false)))
		return -ENOSPC;
	e->edx = 1u << 8;                  /* invariant TSC */
	if (!(e = table_get(t, 0x80000008, 0, false)))
		return -ENOSPC;
	e->eax = 40 | (48 << 8);           /* physical and linear address bits */
	return 0;
}

static int topology_leaf(struct cpuid_table *t, uint32_t fn, unsigned shift, unsigned n_vcpus, uint32_t id0)
{
	struct accel_cpuid_entry *e;
	table_del(t, fn);
	for (uint32_t i = 0; i < 3; i++) {
		if (!(e = table_get(t, fn, i, true)))
			return -ENOSPC;
		e->edx = id0;
		if (i == 0) {                  /* SMT: one thread per core */
			e->eax = 0;
			e->ebx = 1;
			e->ecx = i | (1u << 8);
		} else if (i == 1) {           /* core: every vCPU */
			e->eax = shift;
			e->ebx = n_vcpus;
			e->ecx = i | (2u << 8);
		} else {                       /* invalid level ends the list */
			e->eax = 0;
			e->ebx = 0;
			e->ecx = i;
		}
	}
	return 0;
}

static int topology(struct cpuid_table *t, unsigned n_vcpus, const uint32_t *apic_ids)
{
	uint32_t max_id = 0;
	for (unsigned i = 0; i < n_vcpus; i++)
		max_id = apic_ids[i] > max_id ? apic_ids[i] : max_id;
	unsigned shift = ceil_log2(max_id + 1);
	if (ceil_log2(n_vcpus) > shift)
		shift = ceil_log2(n_vcpus);
	uint32_t addressable = 1u << shift;
	struct accel_cpuid_entry *e;

	if (!(e = table_get(t, 1, 0, false)))
		return -ENOSPC;
	e->ebx = (e->ebx & 0xffffu) | ((addressable > 255 ? 255u : addressable) << 16) | ((apic_ids[0] & 0xff) << 24);
	if (n_vcpus > 1)
		e->edx |= 1u << 28;            /* HTT: EBX[23:16] is valid */
	else
		e->edx &= ~(1u << 28);
	e->ecx |= (1u << 21) | (1u << 24) | (1u << 31); /* x2APIC, TSC-deadline (our lapic.c), hypervisor */

	for (size_t i = 0; i < t->n; i++) {
		e = &t->e[i];
		if (e->function != 4 || !(e->eax & 0x1f))
			continue;
		uint32_t cores = addressable > 64 ? 63 : addressable - 1;
		uint32_t sharing = ((e->eax >> 5) & 7) >= 3 ? addressable - 1 : 0; /* L3 is the package's */
		e->eax = (e->eax & 0x3fff) | ((sharing & 0xfff) << 14) | (cores << 26);
	}
	int r = topology_leaf(t, 0xb, shift, n_vcpus, apic_ids[0]);
	if (r < 0)
		return r;
	struct accel_cpuid_entry *l0 = table_find(t, 0, 0);
	if (l0 && l0->eax >= 0x1f)
		r = topology_leaf(t, 0x1f, shift, n_vcpus, apic_ids[0]);
	else if (l0 && l0->eax < 0xb)
		l0->eax = 0xb;
	return r;
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t r = a % b;
		a = b;
		b = r;
	}
	return a;
}

int fw_cpuid_set_tsc(struct accel_cpuid_entry *table, size_t max, size_t *n, uint64_t tsc_hz)
{
	struct cpuid_table t = { table, *n, max };
	struct accel_cpuid_entry *e;
	if (!tsc_hz)
		return -EINVAL;
	if (!(e = table_get(&t, 0x15, 0, false)))
		return -ENOSPC;
	/* TSC/crystal = EBX/EAX, reduced to lowest terms; the crystal is the APIC timer's clock. */
	uint64_t g = gcd64(tsc_hz, LAPIC_TIMER_HZ), den = LAPIC_TIMER_HZ / g, num = tsc_hz / g;
	while (num > UINT32_MAX || den > UINT32_MAX) {
		num >>= 1;
		den = den > 1 ? den >> 1 : 1;
	}
	e->eax = (uint32_t)den;
	e->ebx = (uint32_t)num;
	e->ecx = (uint32_t)LAPIC_TIMER_HZ;
	e->edx = 0;
	if (!(e = table_get(&t, 0x16, 0, false)))
		return -ENOSPC;
	e->eax = (uint32_t)(tsc_hz / 1000000);
	e->ebx = e->eax;
	e->ecx = (uint32_t)(LAPIC_TIMER_HZ / 1000000);
	e->edx = 0;
	struct accel_cpuid_entry *l0 = table_find(&t, 0, 0);
	if (l0 && l0->eax < 0x16)
		l0->eax = 0x16;
	*n = t.n;
	return 0;
}

int fw_cpuid_build(unsigned n_vcpus, const uint32_t *apic_ids, const struct accel_cpuid_entry *base, size_t n_base,
		   struct accel_cpuid_entry *out, size_t max, size_t *n_out)
{
	struct cpuid_table t = { out, 0, max };
	int r;
	if (!n_vcpus || !apic_ids || !out || !n_out)
		return -EINVAL;
	if (base) {
		if (n_base > max)
			return -ENOSPC;
		memcpy(out, base, n_base * sizeof(*out));
		t.n = n_base;
	} else {
		r = emu_model(&t);
		if (r < 0)
			return r;
	}
	r = topology(&t, n_vcpus, apic_ids);
	if (r < 0)
		return r;
	if (!base) {
		*n_out = t.n;
		r = fw_cpuid_set_tsc(out, max, n_out, EMU_TSC_HZ);
		if (r < 0)
			return r;
		return 0;
	}
	*n_out = t.n;
	return 0;
}
