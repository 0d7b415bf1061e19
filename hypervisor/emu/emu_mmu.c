/* SPDX-License-Identifier: MIT */
/*
 * emu: guest memory. Segmentation (real, protected, 64-bit canonical form with FS/GS bases), paging (off, 32-bit
 * with PSE 4 MiB pages, PAE, 4-level with 2 MiB/1 GiB pages), U/S, R/W with CR0.WP, NX with EFER.NXE, accessed
 * and dirty bits set with a host cmpxchg on the guest's entry (as the hardware's locked update: an entry changed
 * under us restarts the walk), #PF with error code and CR2 (Intel SDM vol. 3 ch. 3-4).
 *
 * Guest-physical RAM is [0, hole_start) plus, when the VM has a hole, [4 GiB, 4 GiB + ram_size - hole_start);
 * everything else is MMIO and goes to the VMM as an exit (reads restart the instruction, writes exit after it).
 *
 * Software TLB: three direct-mapped arrays (read, write, fetch) of linear page -> host page. An entry is filled
 * only after a walk that allowed that kind of access at that privilege (EMU_TLB_USER: allowed at CPL 3, which
 * implies supervisor too since SMEP/SMAP are not offered), and a write entry only once the dirty bit is set, so a
 * hit needs no further check. Non-RAM pages are never cached. Flushed whole on CR0/CR3/CR4/EFER writes, per page
 * on INVLPG; like the hardware, a guest that edits a live entry must INVLPG.
 *
 * One instruction may make one MMIO read exit and one MMIO (or port) write exit; a second write exit, or a read
 * split across a page boundary with a half in MMIO, ends the run with ACCEL_EXIT_ERROR (stacks and split
 * accesses on device memory are not something guests do). Instruction fetch from MMIO is likewise an error.
 *
 * Not modelled: PAT/MTRR memory types, SMEP/SMAP/PKU, protection keys, reserved-bit checks other than NX without
 * EFER.NXE and PS in a PML4E, PAE PDPTE caching at CR3 load (entries are read on each walk), A20 masking.
 * Paging structures must be in RAM: an entry address outside RAM reads as not present.
 */
#include <string.h>

#include "hypervisor/emu/emu.h"

#define PTE_P   (1ull << 0)
#define PTE_W   (1ull << 1)
#define PTE_U   (1ull << 2)
#define PTE_A   (1ull << 5)
#define PTE_D   (1ull << 6)
#define PTE_PS  (1ull << 7)
#define PTE_NX  (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull

#define PF_P    1u
#define PF_W    2u
#define PF_U    4u
#define PF_RSVD 8u
#define PF_I    16u

#define CR0_PE  (1ull << 0)
#define CR0_WP  (1ull << 16)
#define CR0_PG  (1ull << 31)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)

enum acc { ACC_R = 0, ACC_W = 1, ACC_X = 2 };

uint8_t *emu_gpa_host(const struct emu_vm *vm, uint64_t gpa, uint64_t *room)
{
	bool split = vm->hole_start && vm->hole_start < vm->ram_size;
	uint64_t low_end = split ? vm->hole_start : vm->ram_size;
	uint64_t off;

	if (gpa < low_end) {
		off = gpa;
		if (room)
			*room = low_end - gpa;
	} else if (split && gpa >= (1ull << 32) && gpa - (1ull << 32) < vm->ram_size - vm->hole_start) {
		off = gpa - (1ull << 32) + vm->hole_start;
		if (room)
			*room = vm->ram_size - off;
	} else {
		return NULL;
	}
	return vm->ram + off;
}

void emu_tlb_flush(struct emu_cpu *cpu)
{
	for (unsigned i = 0; i < EMU_TLB_SIZE; i++) {
		cpu->tlb_r[i].lpage = ~0ull;
		cpu->tlb_w[i].lpage = ~0ull;
		cpu->tlb_x[i].lpage = ~0ull;
	}
}

void emu_tlb_flush_page(struct emu_cpu *cpu, uint64_t lin)
{
	/* INVLPG of any address in a large page must drop every 4 KiB piece of it the TLB holds; entries do not
	 * record their page size, so flush everything (INVLPG is rare next to accesses, refills are cheap). */
	(void)lin;
	emu_tlb_flush(cpu);
}

/* ---- segmentation ---- */

static _Noreturn void seg_fault(struct emu_cpu *cpu, int seg)
{
	emu_raise(cpu, seg == SEG_SS ? EXC_SS : EXC_GP, 0);
}

static inline bool canonical(uint64_t a)
{
	return (uint64_t)((int64_t)(a << 16) >> 16) == a;
}

uint64_t emu_linear(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, bool write)
{
	const struct kvm_segment *s = &cpu->seg[seg];

	if (cpu->mode == EMU_LONG64) {
		uint64_t lin = off;
		if (seg == SEG_FS || seg == SEG_GS)
			lin += s->base;
		if (!canonical(lin) || !canonical(lin + size - 1))
			seg_fault(cpu, seg);
		return lin;
	}
	if (cpu->mode != EMU_REAL && !(cpu->rflags & EFL_VM)) {
		if (s->unusable || !s->present)
			seg_fault(cpu, seg);
		if (s->s) {
			bool code = s->type & 8;
			if (write && (code || !(s->type & 2)))
				seg_fault(cpu, seg);
			if (!write && code && !(s->type & 2) && seg != SEG_CS)
				seg_fault(cpu, seg);
		}
	}
	uint64_t last = off + size - 1;
	if (s->s && !(s->type & 8) && (s->type & 4)) {
		/* expand-down data: valid offsets are limit+1 .. 0xffff or 0xffffffff */
		uint64_t top = s->db ? 0xffffffffull : 0xffffull;
		if (off <= s->limit || last > top)
			seg_fault(cpu, seg);
	} else if (last > s->limit) {
		seg_fault(cpu, seg);
	}
	return (s->base + off) & 0xffffffffull;
}

/* ---- paging ---- */

/* Load a paging-structure entry; NULL host when the table is not in RAM. */
static uint64_t *pte_ptr(struct emu_cpu *cpu, uint64_t gpa, unsigned size)
{
	uint64_t room;
	uint8_t *h = emu_gpa_host(cpu->vm, gpa, &room);

	if (!h || room < size)
		return NULL;
	return (uint64_t *)(void *)h;
}

static uint64_t pte_load(uint64_t *p, unsigned size)
{
	if (size == 4)
		return __atomic_load_n((uint32_t *)(void *)p, __ATOMIC_ACQUIRE);
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* Set `bits` in the entry if it still equals `old`; false when it changed (the walk restarts). */
static bool pte_set(uint64_t *p, unsigned size, uint64_t old, uint64_t bits)
{
	if ((old & bits) == bits)
		return true;
	if (size == 4) {
		uint32_t o = (uint32_t)old;
		return __atomic_compare_exchange_n((uint32_t *)(void *)p, &o, o | (uint32_t)bits, false,
						   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	}
	return __atomic_compare_exchange_n(p, &old, old | bits, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static _Noreturn void page_fault(struct emu_cpu *cpu, uint64_t lin, unsigned err)
{
	cpu->cr2 = lin;
	emu_raise(cpu, EXC_PF, (int)err);
}

/* Translate a linear address for one access; raises #PF. `user`: the access is made at CPL 3 (not an implicit
 * supervisor access). Returns the guest-physical address. */
static uint64_t translate(struct emu_cpu *cpu, uint64_t lin, enum acc acc, bool user)
{
	if (!(cpu->cr0 & CR0_PG))
		return cpu->mode == EMU_LONG64 ? lin : (lin & 0xffffffffull);

	bool nxe = cpu->efer & EFER_NXE;
	unsigned err_base = (acc == ACC_W ? PF_W : 0) | (user ? PF_U : 0) | (acc == ACC_X && nxe ? PF_I : 0);

restart:;
	uint64_t *ptr[4];
	uint64_t ent[4];
	unsigned n = 0, esize;
	uint64_t gpa, table;
	bool w_ok = true, u_ok = true, nx = false;
	int levels, shift;

	if (cpu->efer & EFER_LMA) {
		levels = 4;
		shift = 39;
		esize = 8;
		table = cpu->cr3 & PTE_ADDR;
	} else if (cpu->cr4 & CR4_PAE) {
		/* PDPTE: no R/W, U/S, NX (those bits are reserved there) */
		uint64_t *p = pte_ptr(cpu, (cpu->cr3 & 0xffffffe0ull) + ((lin >> 30) & 3) * 8, 8);
		uint64_t e = p ? pte_load(p, 8) : 0;
		if (!(e & PTE_P))
			page_fault(cpu, lin, err_base);
		levels = 2;
		shift = 21;
		esize = 8;
		table = e & PTE_ADDR;
	} else {
		levels = 2;
		shift = 22;
		esize = 4;
		table = cpu->cr3 & 0xfffff000ull;
	}

	for (int l = 0; l < levels; l++, shift -= (esize == 8 ? 9 : 10)) {
		unsigned bits = esize == 8 ? 9 : 10;
		uint64_t idx = (lin >> shift) & ((1u << bits) - 1);
		uint64_t *p = pte_ptr(cpu, table + idx * esize, esize);
		uint64_t e = p ? pte_load(p, esize) : 0;

		if (!(e & PTE_P))
			page_fault(cpu, lin, err_base);
		if (esize == 8 && (e & PTE_NX) && !nxe)
			page_fault(cpu, lin, err_base | PF_P | PF_RSVD);
		if (levels == 4 && l == 0 && (e & PTE_PS))
			page_fault(cpu, lin, err_base | PF_P | PF_RSVD);
		ptr[n] = p;
		ent[n++] = e;
		w_ok = w_ok && (e & PTE_W);
		u_ok = u_ok && (e & PTE_U);
		nx = nx || (esize == 8 && nxe && (e & PTE_NX));

		bool last = l == levels - 1;
		bool large = !last && (e & PTE_PS) &&
			     (esize == 8 ? (levels - l <= 3) : (cpu->cr4 & CR4_PSE) != 0);
		if (large) {
			uint64_t psize = 1ull << shift;
			if (esize == 8) {
				gpa = (e & PTE_ADDR & ~(psize - 1)) | (lin & (psize - 1));
			} else {
				/* PSE-36: bits 13..20 of the PDE are physical address bits 32..39 */
				gpa = (e & 0xffc00000ull) | (((e >> 13) & 0xff) << 32) | (lin & (psize - 1));
			}
			goto leaf;
		}
		if (last) {
			gpa = (e & (esize == 8 ? PTE_ADDR : 0xfffff000ull)) | (lin & 0xfff);
			goto leaf;
		}
		table = e & (esize == 8 ? PTE_ADDR : 0xfffff000ull);
	}
	__builtin_unreachable();

leaf:
	if (user && !u_ok)
		page_fault(cpu, lin, err_base | PF_P);
	if (acc == ACC_W && !w_ok && (user || (cpu->cr0 & CR0_WP)))
		page_fault(cpu, lin, err_base | PF_P);
	if (acc == ACC_X && nx)
		page_fault(cpu, lin, err_base | PF_P);
	for (unsigned i = 0; i < n; i++) {
		uint64_t bits = PTE_A | (i == n - 1 && acc == ACC_W ? PTE_D : 0);
		if (!pte_set(ptr[i], esize, ent[i], bits))
			goto restart;
	}
	return gpa;
}

static inline bool is_user(const struct emu_cpu *cpu)
{
	return cpu->cpl == 3;
}

/* TLB miss: walk, fill the entry when the page is RAM. */
static __attribute__((noinline)) uint8_t *page_fill(struct emu_cpu *cpu, struct emu_tlb_entry *e, uint64_t lin,
						     enum acc acc, bool user, uint64_t *gpa)
{
	uint64_t lp = lin >> 12;
	uint64_t pa = translate(cpu, lin, acc, user);
	uint64_t pg = pa & ~0xfffull;
	uint64_t room;
	uint8_t *h = emu_gpa_host(cpu->vm, pg, &room);
	if (!h || room < 4096) {
		*gpa = pa;
		return NULL;
	}
	e->lpage = lp;
	e->host = h;
	e->flags = (uint8_t)((user ? EMU_TLB_USER : 0) | (acc == ACC_W ? EMU_TLB_WRITE : 0));
	return h;
}

/* Host pointer of the page holding `lin` for this access, via the TLB; NULL with *gpa set when not RAM. */
static inline uint8_t *page_host(struct emu_cpu *cpu, uint64_t lin, enum acc acc, bool user, uint64_t *gpa)
{
	struct emu_tlb_entry *tlb = acc == ACC_R ? cpu->tlb_r : acc == ACC_W ? cpu->tlb_w : cpu->tlb_x;
	uint64_t lp = lin >> 12;
	struct emu_tlb_entry *e = &tlb[emu_tlb_index(lp)];

	if (__builtin_expect(e->lpage == lp && (!user || (e->flags & EMU_TLB_USER)), 1))
		return e->host;
	return page_fill(cpu, e, lin, acc, user, gpa);
}

static inline uint64_t host_load(const uint8_t *p, unsigned size)
{
	uintptr_t a = (uintptr_t)p;

	switch (size) {
	case 1:
		return __atomic_load_n(p, __ATOMIC_ACQUIRE);
	case 2:
		if (!(a & 1))
			return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_ACQUIRE);
		break;
	case 4:
		if (!(a & 3))
			return __atomic_load_n((const uint32_t *)(const void *)p, __ATOMIC_ACQUIRE);
		break;
	case 8:
		if (!(a & 7))
			return __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_ACQUIRE);
		break;
	}
	uint64_t v = 0;
	emu_fence_acquire();
	memcpy(&v, p, size);
	__atomic_signal_fence(__ATOMIC_ACQUIRE);
	return v;
}

static inline void host_store(uint8_t *p, unsigned size, uint64_t v)
{
	uintptr_t a = (uintptr_t)p;

	switch (size) {
	case 1:
		__atomic_store_n(p, (uint8_t)v, __ATOMIC_RELEASE);
		return;
	case 2:
		if (!(a & 1)) {
			__atomic_store_n((uint16_t *)(void *)p, (uint16_t)v, __ATOMIC_RELEASE);
			return;
		}
		break;
	case 4:
		if (!(a & 3)) {
			__atomic_store_n((uint32_t *)(void *)p, (uint32_t)v, __ATOMIC_RELEASE);
			return;
		}
		break;
	case 8:
		if (!(a & 7)) {
			__atomic_store_n((uint64_t *)(void *)p, v, __ATOMIC_RELEASE);
			return;
		}
		break;
	}
	__atomic_signal_fence(__ATOMIC_RELEASE);
	emu_fence_release();
	memcpy(p, &v, size);
}

/* ---- MMIO ---- */

static uint64_t mmio_read(struct emu_cpu *cpu, uint64_t gpa, unsigned size)
{
	if (cpu->pend.kind == ACCEL_EXIT_MMIO && cpu->io_done && cpu->pend.addr == gpa && cpu->pend.size == size) {
		cpu->io_done = false;
		cpu->pend.kind = 0;
		return size == 8 ? cpu->pend.value : cpu->pend.value & ((1ull << (size * 8)) - 1);
	}
	if (cpu->exit_pending)
		emu_exit_error(cpu, "MMIO read at gpa 0x%llx after an MMIO write in one instruction",
			       (unsigned long long)gpa);
	struct accel_exit *x = cpu->exit;
	memset(x, 0, sizeof(*x));
	x->reason = ACCEL_EXIT_MMIO;
	x->mmio.gpa = gpa;
	x->mmio.size = (uint8_t)size;
	x->mmio.write = false;
	cpu->pend.kind = ACCEL_EXIT_MMIO;
	cpu->pend.addr = gpa;
	cpu->pend.size = size;
	cpu->io_done = false;
	cpu->exit_restart = true;
	longjmp(cpu->jmp, EMU_JMP_EXIT);
}

static void mmio_write(struct emu_cpu *cpu, uint64_t gpa, unsigned size, uint64_t val)
{
	if (cpu->exit_pending)
		emu_exit_error(cpu, "two MMIO writes in one instruction (gpa 0x%llx)", (unsigned long long)gpa);
	struct accel_exit *x = cpu->exit;
	memset(x, 0, sizeof(*x));
	x->reason = ACCEL_EXIT_MMIO;
	x->mmio.gpa = gpa;
	x->mmio.size = (uint8_t)size;
	x->mmio.write = true;
	for (unsigned i = 0; i < size; i++)
		x->mmio.data[i] = (uint8_t)(val >> (8 * i));
	cpu->exit_pending = true;
}

/* ---- accesses ---- */

static uint64_t read_lin(struct emu_cpu *cpu, uint64_t lin, unsigned size, bool user)
{
	unsigned in_page = 4096 - (unsigned)(lin & 0xfff);

	if (size > in_page) {
		/* split: both halves translate (and may fault) before either is used, as one access. A half in MMIO
		 * would need two restarting exits for one instruction: refused. */
		uint64_t g1, g2;
		uint8_t *h1 = page_host(cpu, lin, ACC_R, user, &g1);
		uint8_t *h2 = page_host(cpu, lin + in_page, ACC_R, user, &g2);
		if (!h1 || !h2)
			emu_exit_error(cpu, "emu: read across a page boundary into MMIO at gpa 0x%llx",
				       (unsigned long long)(h1 ? g2 : g1));
		uint64_t lo = read_lin(cpu, lin, in_page, user);
		uint64_t hi = read_lin(cpu, lin + in_page, size - in_page, user);
		return lo | (hi << (8 * in_page));
	}
	uint64_t gpa;
	uint8_t *h = page_host(cpu, lin, ACC_R, user, &gpa);
	if (!h)
		return mmio_read(cpu, gpa, size);
	return host_load(h + (lin & 0xfff), size);
}

static void write_lin(struct emu_cpu *cpu, uint64_t lin, unsigned size, uint64_t val, bool user)
{
	unsigned in_page = 4096 - (unsigned)(lin & 0xfff);

	if (size > in_page) {
		uint64_t g1, g2;
		/* check both pages before writing either so a #PF on the second leaves memory untouched */
		uint8_t *h1 = page_host(cpu, lin, ACC_W, user, &g1);
		uint8_t *h2 = page_host(cpu, lin + in_page, ACC_W, user, &g2);
		if (h1 && h2) {
			host_store(h1 + (lin & 0xfff), in_page, val);
			host_store(h2, size - in_page, val >> (8 * in_page));
			return;
		}
		write_lin(cpu, lin, in_page, val, user);
		write_lin(cpu, lin + in_page, size - in_page, val >> (8 * in_page), user);
		return;
	}
	uint64_t gpa;
	uint8_t *h = page_host(cpu, lin, ACC_W, user, &gpa);
	if (!h) {
		mmio_write(cpu, gpa, size, val);
		return;
	}
	host_store(h + (lin & 0xfff), size, val);
}

static void size_check(struct emu_cpu *cpu, unsigned size)
{
	if (__builtin_expect(size - 1 >= 8, 0))
		emu_exit_error(cpu, "emu: memory access of %u bytes (1..8 supported)", size);
}

/* Linear address, with a fast path for 64-bit mode outside FS/GS (the common case). */
static inline uint64_t linear_fast(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, bool write)
{
	if (cpu->mode == EMU_LONG64 && seg != SEG_FS && seg != SEG_GS && canonical(off) && canonical(off + size - 1))
		return off;
	return emu_linear(cpu, seg, off, size, write);
}

uint64_t emu_read(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size)
{
	size_check(cpu, size);
	uint64_t lin = linear_fast(cpu, seg, off, size, false);
	if ((lin & 0xfff) + size <= 4096) {
		uint64_t gpa;
		uint8_t *h = page_host(cpu, lin, ACC_R, is_user(cpu), &gpa);
		if (h)
			return host_load(h + (lin & 0xfff), size);
	}
	return read_lin(cpu, lin, size, is_user(cpu));
}

void emu_write(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, uint64_t val)
{
	size_check(cpu, size);
	uint64_t lin = linear_fast(cpu, seg, off, size, true);
	if ((lin & 0xfff) + size <= 4096) {
		uint64_t gpa;
		uint8_t *h = page_host(cpu, lin, ACC_W, is_user(cpu), &gpa);
		if (h) {
			host_store(h + (lin & 0xfff), size, val);
			return;
		}
	}
	write_lin(cpu, lin, size, val, is_user(cpu));
}

uint64_t emu_read_linear(struct emu_cpu *cpu, uint64_t lin, unsigned size, bool supervisor)
{
	size_check(cpu, size);
	return read_lin(cpu, lin, size, !supervisor && is_user(cpu));
}

void emu_write_linear(struct emu_cpu *cpu, uint64_t lin, unsigned size, uint64_t val, bool supervisor)
{
	size_check(cpu, size);
	write_lin(cpu, lin, size, val, !supervisor && is_user(cpu));
}

static uint64_t fetch_linear(struct emu_cpu *cpu, uint64_t rip, uint64_t *limit_room)
{
	const struct kvm_segment *cs = &cpu->seg[SEG_CS];

	if (cpu->mode == EMU_LONG64) {
		if (!canonical(rip))
			emu_raise(cpu, EXC_GP, 0);
		*limit_room = ~0ull;
		return rip;
	}
	if (rip > cs->limit)
		emu_raise(cpu, EXC_GP, 0);
	*limit_room = cs->limit - rip + 1;
	return (cs->base + rip) & 0xffffffffull;
}

const uint8_t *emu_fetch_ptr(struct emu_cpu *cpu, uint64_t rip, unsigned *avail)
{
	uint64_t room, gpa;
	uint64_t lin = fetch_linear(cpu, rip, &room);
	uint8_t *h = page_host(cpu, lin, ACC_X, is_user(cpu), &gpa);

	if (!h) {
		*avail = 0;
		return NULL;
	}
	uint64_t n = 4096 - (lin & 0xfff);
	if (n > room)
		n = room;
	*avail = (unsigned)n;
	return h + (lin & 0xfff);
}

uint8_t emu_fetch8(struct emu_cpu *cpu, uint64_t rip)
{
	unsigned avail;
	const uint8_t *p = emu_fetch_ptr(cpu, rip, &avail);

	if (!p)
		emu_exit_error(cpu, "instruction fetch from non-RAM at rip 0x%llx", (unsigned long long)rip);
	return *p;
}

void *emu_atomic_ptr(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size)
{
	uint64_t lin = emu_linear(cpu, seg, off, size, true);
	uint64_t gpa;

	if (size - 1 >= 16)
		emu_exit_error(cpu, "emu: atomic access of %u bytes (1..16 supported)", size);
	if ((lin & 0xfff) + size > 4096) {
		/* a locked access across pages: fault like the hardware if either page faults, then refuse */
		page_host(cpu, lin, ACC_W, is_user(cpu), &gpa);
		page_host(cpu, lin + size - 1, ACC_W, is_user(cpu), &gpa);
		emu_raise(cpu, EXC_GP, 0);
	}
	uint8_t *h = page_host(cpu, lin, ACC_W, is_user(cpu), &gpa);
	if (!h)
		emu_raise(cpu, EXC_GP, 0);
	return h + (lin & 0xfff);
}
