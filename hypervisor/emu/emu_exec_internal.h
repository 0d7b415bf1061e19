/* SPDX-License-Identifier: MIT */
/*
 * Private to emu_exec*.c: the decode context of one instruction, operand access, and the flag-computing ALU.
 *
 * Flags are computed eagerly by executing the same operation on the host CPU (this interpreter only runs on
 * x86-64 hosts, like the kvm backend): the host instruction runs on the guest operand values and LAHF/SETO
 * capture CF/PF/AF/ZF/SF/OF. That is exact for every defined flag by construction and gives the host's (Intel
 * or AMD) values for the undefined ones, and it costs two or three host instructions. Inputs that the host
 * would fault on (DIV by 0 or with a quotient overflow) are checked first; operations the host cannot execute
 * in 64-bit mode (DAA, AAA, ...) are computed in C. LAHF (not PUSHF) is used so the asm never touches the stack
 * (the red zone of leaf functions).
 *
 * Commit rule (emu.h execution model): handlers read every operand and do every memory write before they write a
 * register, and cpu->rip moves only in emu_insn_retire() (or in an emu_sys helper called after it).
 */
#ifndef RACKVM_HYPERVISOR_EMU_EXEC_INTERNAL_H
#define RACKVM_HYPERVISOR_EMU_EXEC_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "hypervisor/emu/emu.h"

/* Small helpers on every instruction's path: inlined even into the big dispatch functions. */
#define EMU_INLINE static inline __attribute__((always_inline))

#define EFL_ARITH (EFL_CF | EFL_PF | EFL_AF | EFL_ZF | EFL_SF | EFL_OF)
#define CR0_MP (1ull << 1)
#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)
#define CR4_TSD (1ull << 2)

/* Longest REP run executed by one emu_step(); the rest runs on the next steps (RIP stays on the instruction), so
 * kicks and interrupts are seen during long string operations. */
#define EMU_REP_BATCH 4096u

struct emu_insn {
	struct emu_cpu *cpu;
	uint64_t start;          /* CS offset of the first byte (= cpu->rip at entry) */
	const uint8_t *hp;       /* host copy of the instruction bytes from start, or NULL */
	unsigned havail;         /* bytes readable at hp (at most 15) */
	unsigned len;            /* bytes consumed so far */
	unsigned opsize, adsize; /* 2, 4 or 8 */
	unsigned rex;            /* REX byte, 0 if none */
	unsigned rep;            /* 0, 0xf2 or 0xf3 (last one seen) */
	bool lock, p66, mode64;
	int seg;                 /* segment override, SEG_NONE if none */
	/* ModRM operand, valid after emu_modrm() */
	unsigned mod, reg, rm;   /* reg and rm with REX.R / REX.B applied */
	bool mem, riprel;
	bool sp_base;            /* the address uses RSP as base (POP Ev adjusts it) */
	int mseg;                /* segment of the memory operand (override or default) */
	uint64_t moff;           /* offset, without the RIP part of a RIP-relative operand */
};

/* ---- fetch ---- */
uint8_t emu_fetch_slow(struct emu_insn *d);

EMU_INLINE uint8_t emu_imm8(struct emu_insn *d)
{
	if (__builtin_expect(d->len < d->havail, 1))
		return d->hp[d->len++];
	return emu_fetch_slow(d);
}

EMU_INLINE uint64_t emu_imm_n(struct emu_insn *d, unsigned n)
{
	uint64_t v = 0;

	if (__builtin_expect(d->len + n <= d->havail, 1)) {
		memcpy(&v, d->hp + d->len, n);
		d->len += n;
		return v;
	}
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)emu_fetch_slow(d) << (8 * i);
	return v;
}

EMU_INLINE uint64_t emu_sext(uint64_t v, unsigned size)
{
	switch (size) {
	case 1: return (uint64_t)(int64_t)(int8_t)v;
	case 2: return (uint64_t)(int64_t)(int16_t)v;
	case 4: return (uint64_t)(int64_t)(int32_t)v;
	default: return v;
	}
}

EMU_INLINE uint64_t emu_mask(unsigned size)
{
	return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1;
}

/* Immediate of an operand of `size` bytes: imm8/16/32, sign-extended to 64 bits (imm32 for 64-bit operands). */
EMU_INLINE uint64_t emu_immz(struct emu_insn *d, unsigned size)
{
	unsigned n = size > 4 ? 4 : size;

	return emu_sext(emu_imm_n(d, n), n);
}

/* ---- registers ---- */
EMU_INLINE uint64_t emu_reg_get(const struct emu_insn *d, unsigned r, unsigned size)
{
	const struct emu_cpu *cpu = d->cpu;

	if (size == 1) {
		if (r >= 4 && r < 8 && !d->rex)
			return (cpu->gpr[r - 4] >> 8) & 0xff;
		return cpu->gpr[r] & 0xff;
	}
	return cpu->gpr[r] & emu_mask(size);
}

/* Architectural register write: 32-bit writes zero-extend, 8/16-bit writes merge. */
EMU_INLINE void emu_reg_set(struct emu_insn *d, unsigned r, unsigned size, uint64_t v)
{
	uint64_t *g = d->cpu->gpr;

	switch (size) {
	case 1:
		if (r >= 4 && r < 8 && !d->rex)
			g[r - 4] = (g[r - 4] & ~0xff00ull) | ((v & 0xff) << 8);
		else
			g[r] = (g[r] & ~0xffull) | (v & 0xff);
		break;
	case 2: g[r] = (g[r] & ~0xffffull) | (v & 0xffff); break;
	case 4: g[r] = (uint32_t)v; break;
	default: g[r] = v; break;
	}
}

/* Register updated with address-size semantics (string pointers, counters). */
EMU_INLINE void emu_reg_set_ad(struct emu_cpu *cpu, unsigned r, unsigned adsize, uint64_t v)
{
	if (adsize == 2)
		cpu->gpr[r] = (cpu->gpr[r] & ~0xffffull) | (v & 0xffff);
	else if (adsize == 4)
		cpu->gpr[r] = (uint32_t)v;
	else
		cpu->gpr[r] = v;
}

/* ---- guest memory ---- */
/*
 * emu_read/emu_write with the TLB hit path inline for the common case (64-bit mode, not FS/GS, naturally aligned:
 * canonical and inside one page), under the hit rule emu.h states next to emu_tlb_index(); same acquire loads and
 * release stores as emu_mmu.c. Anything else, or a miss, takes the call.
 */
EMU_INLINE const struct emu_tlb_entry *emu_tlb_hit(const struct emu_cpu *cpu, const struct emu_tlb_entry *tlb,
						   uint64_t lin)
{
	uint64_t lp = lin >> 12;
	const struct emu_tlb_entry *e = &tlb[emu_tlb_index(lp)];

	if (e->lpage == lp && e->host && (cpu->cpl != 3 || (e->flags & EMU_TLB_USER)))
		return e;
	return NULL;
}

EMU_INLINE bool emu_mem_fast(const struct emu_insn *d, int seg, uint64_t off, unsigned size)
{
	return d->mode64 && seg != SEG_FS && seg != SEG_GS && !(off & (size - 1)) &&
	       (uint64_t)((int64_t)(off << 16) >> 16) == off;
}

EMU_INLINE uint64_t emu_mem_read(struct emu_insn *d, int seg, uint64_t off, unsigned size)
{
	if (emu_mem_fast(d, seg, off, size)) {
		const struct emu_tlb_entry *e = emu_tlb_hit(d->cpu, d->cpu->tlb_r, off);

		if (e) {
			const uint8_t *p = e->host + (off & 0xfff);

			switch (size) {
			case 1: return __atomic_load_n(p, __ATOMIC_ACQUIRE);
			case 2: return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_ACQUIRE);
			case 4: return __atomic_load_n((const uint32_t *)(const void *)p, __ATOMIC_ACQUIRE);
			default: return __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_ACQUIRE);
			}
		}
	}
	return emu_read(d->cpu, seg, off, size);
}

EMU_INLINE void emu_mem_write(struct emu_insn *d, int seg, uint64_t off, unsigned size, uint64_t v)
{
	if (emu_mem_fast(d, seg, off, size)) {
		const struct emu_tlb_entry *e = emu_tlb_hit(d->cpu, d->cpu->tlb_w, off);

		if (e) {
			uint8_t *p = e->host + (off & 0xfff);

			switch (size) {
			case 1: __atomic_store_n(p, (uint8_t)v, __ATOMIC_RELEASE); return;
			case 2: __atomic_store_n((uint16_t *)(void *)p, (uint16_t)v, __ATOMIC_RELEASE); return;
			case 4: __atomic_store_n((uint32_t *)(void *)p, (uint32_t)v, __ATOMIC_RELEASE); return;
			default: __atomic_store_n((uint64_t *)(void *)p, v, __ATOMIC_RELEASE); return;
			}
		}
	}
	emu_write(d->cpu, seg, off, size, v);
}

/* ---- ModRM operands ---- */
void emu_modrm_mem(struct emu_insn *d);

/* Decodes ModRM (and SIB/displacement of a memory operand). */
EMU_INLINE void emu_modrm(struct emu_insn *d)
{
	uint8_t m = emu_imm8(d);

	d->mod = m >> 6;
	d->reg = ((m >> 3) & 7) | ((d->rex & 4) << 1);
	d->rm = (m & 7) | ((d->rex & 1) << 3);
	d->mem = d->mod != 3;
	if (d->mem)
		emu_modrm_mem(d);
}

/* Offset of the memory operand (RIP-relative resolved: call only after every immediate is fetched). */
EMU_INLINE uint64_t emu_ea(const struct emu_insn *d)
{
	uint64_t off = d->moff;

	if (d->riprel)
		off += d->start + d->len;
	return off & emu_mask(d->adsize);
}

EMU_INLINE uint64_t emu_rm_read(struct emu_insn *d, unsigned size)
{
	if (!d->mem)
		return emu_reg_get(d, d->rm, size);
	return emu_mem_read(d, d->mseg, emu_ea(d), size);
}

EMU_INLINE void emu_rm_write(struct emu_insn *d, unsigned size, uint64_t v)
{
	if (!d->mem)
		emu_reg_set(d, d->rm, size, v);
	else
		emu_mem_write(d, d->mseg, emu_ea(d), size, v);
}

/* ---- instruction end ---- */
EMU_INLINE uint64_t emu_next_rip(const struct emu_insn *d)
{
	uint64_t r = d->start + d->len;

	return d->mode64 ? r : (uint32_t)r;
}

EMU_INLINE void emu_insn_retire(struct emu_insn *d)
{
	d->cpu->rip = emu_next_rip(d);
	d->cpu->insns++;
}

_Noreturn void emu_ud(struct emu_insn *d);
_Noreturn void emu_gp0(struct emu_insn *d);

/* LOCK is legal only on a memory destination of a lockable instruction: call before touching memory. */
EMU_INLINE void emu_lock_check(struct emu_insn *d, bool lockable)
{
	if (d->lock && (!lockable || !d->mem))
		emu_ud(d);
}

static inline unsigned emu_cpl(const struct emu_cpu *cpu)
{
	return (cpu->rflags & EFL_VM) ? 3 : cpu->mode == EMU_REAL ? 0 : cpu->cpl;    /* VM86 runs at CPL 3 */
}

/* Real mode proper (not virtual-8086): no privilege checks at all. */
static inline bool emu_real_mode(const struct emu_cpu *cpu)
{
	return cpu->mode == EMU_REAL && !(cpu->rflags & EFL_VM);
}

static inline void emu_need_cpl0(struct emu_insn *d)
{
	if (emu_cpl(d->cpu) != 0)
		emu_gp0(d);
}

/* ---- flags and ALU (host-executed, see the top of the file) ---- */
EMU_INLINE uint32_t emu_lahf_flags(uint64_t ax)
{
	return (uint32_t)(((ax >> 8) & 0xd5) | ((ax & 1) << 11));
}

EMU_INLINE void emu_flags_set(struct emu_cpu *cpu, uint32_t mask, uint32_t f)
{
	cpu->rflags = (cpu->rflags & ~(uint64_t)mask) | (f & mask);
}

EMU_INLINE bool emu_cond(uint64_t fl, unsigned cc)
{
	bool r;

	switch (cc >> 1) {
	case 0: r = fl & EFL_OF; break;
	case 1: r = fl & EFL_CF; break;
	case 2: r = fl & EFL_ZF; break;
	case 3: r = fl & (EFL_CF | EFL_ZF); break;
	case 4: r = fl & EFL_SF; break;
	case 5: r = fl & EFL_PF; break;
	case 6: r = !(fl & EFL_SF) != !(fl & EFL_OF); break;
	default: r = (fl & EFL_ZF) || (!(fl & EFL_SF) != !(fl & EFL_OF)); break;
	}
	return r ^ (cc & 1);
}

enum { ALU_ADD, ALU_OR, ALU_ADC, ALU_SBB, ALU_AND, ALU_SUB, ALU_XOR, ALU_CMP };

/* Two-operand op of one width with carry-in bit 0 of `cf` (ADC/SBB only); sets res and ax (LAHF/SETO). */
#define EMU_ASM2(pre, insn, sfx, T, cons)                                                                      \
	do {                                                                                                   \
		T x_ = (T)a;                                                                                   \
		__asm__(pre insn sfx " %[b],%[x]\n\tlahf\n\tseto %%al"                                        \
			: [x] "+" cons(x_), "=&a"(ax) : [b] cons((T)b), [c] "r"(cf) : "cc");                   \
		res = x_;                                                                                      \
	} while (0)

#define EMU_BT_CF "bt $0,%k[c]\n\t"

#define EMU_ALU_CASES(opv, pre, insn)                                                                          \
	case (opv) * 4 + 0: EMU_ASM2(pre, insn, "b", uint8_t, "q"); break;                                     \
	case (opv) * 4 + 1: EMU_ASM2(pre, insn, "w", uint16_t, "r"); break;                                    \
	case (opv) * 4 + 2: EMU_ASM2(pre, insn, "l", uint32_t, "r"); break;                                    \
	case (opv) * 4 + 3: EMU_ASM2(pre, insn, "q", uint64_t, "r"); break

/* ADD/OR/ADC/SBB/AND/SUB/XOR/CMP of `size` bytes; updates the six arithmetic flags, returns the result.
 * One jump table on (op, width). */
EMU_INLINE uint64_t emu_alu(struct emu_cpu *cpu, unsigned op, unsigned size, uint64_t a, uint64_t b)
{
	uint64_t res = 0, ax = 0, cf = cpu->rflags & EFL_CF;

	switch (op * 4 + (unsigned)__builtin_ctz(size)) {
	EMU_ALU_CASES(ALU_ADD, "", "add");
	EMU_ALU_CASES(ALU_OR, "", "or");
	EMU_ALU_CASES(ALU_ADC, EMU_BT_CF, "adc");
	EMU_ALU_CASES(ALU_SBB, EMU_BT_CF, "sbb");
	EMU_ALU_CASES(ALU_AND, "", "and");
	EMU_ALU_CASES(ALU_SUB, "", "sub");
	EMU_ALU_CASES(ALU_XOR, "", "xor");
	EMU_ALU_CASES(ALU_CMP, "", "sub");
	default: __builtin_unreachable();
	}
	emu_flags_set(cpu, EFL_ARITH, emu_lahf_flags(ax));
	return res;
}

/* ---- emu_exec_ops.c: the rest of the ALU ---- */
enum { SH_ROL, SH_ROR, SH_RCL, SH_RCR, SH_SHL, SH_SHR, SH_SAL, SH_SAR };
uint64_t emu_shift(struct emu_cpu *cpu, unsigned op, unsigned size, uint64_t a, uint8_t count);
uint64_t emu_shxd(struct emu_cpu *cpu, bool right, unsigned size, uint64_t dst, uint64_t src, uint8_t count);
uint64_t emu_incdec(struct emu_cpu *cpu, bool dec, unsigned size, uint64_t a);
uint64_t emu_neg(struct emu_cpu *cpu, unsigned size, uint64_t a);
/* One-operand MUL/IMUL: *lo, *hi = a * b. */
void emu_mul1(struct emu_cpu *cpu, bool sign, unsigned size, uint64_t a, uint64_t b, uint64_t *lo, uint64_t *hi);
/* Two/three-operand IMUL (size 2/4/8). */
uint64_t emu_imul2(struct emu_cpu *cpu, unsigned size, uint64_t a, uint64_t b);
/* DIV/IDIV of hi:lo by b; false when the host would raise #DE (caller raises it). */
bool emu_div(struct emu_cpu *cpu, bool sign, unsigned size, uint64_t lo, uint64_t hi, uint64_t b, uint64_t *q,
	     uint64_t *r);
/* BT/BTS/BTR/BTC (op 0..3) of bit (already masked to the operand) in a; returns the new value. */
uint64_t emu_bitop(struct emu_cpu *cpu, unsigned op, unsigned size, uint64_t a, unsigned bit);
/* BSF/BSR: returns the new destination (old dst when src is 0). */
uint64_t emu_bsfr(struct emu_cpu *cpu, bool rev, unsigned size, uint64_t dst, uint64_t src);
void emu_flags_szp8(struct emu_cpu *cpu, uint8_t v); /* SF/ZF/PF of a byte result (BCD ops) */

/* ---- handlers by file ---- */
void emu_exec_0f(struct emu_insn *d);                  /* emu_exec_0f.c */
void emu_exec_sse(struct emu_insn *d, uint8_t op);     /* emu_exec_fpu.c: SSE/SSE2 of the 0F map */
void emu_exec_x87(struct emu_insn *d, uint8_t op);     /* emu_exec_fpu.c: D8-DF */
void emu_exec_fxsave_group(struct emu_insn *d, unsigned sub); /* emu_exec_fpu.c: 0F AE /0-/3 (memory) */
void emu_x87_wait(struct emu_insn *d);                 /* emu_exec_fpu.c: WAIT/FWAIT's pending-exception check */
void emu_exec_string(struct emu_insn *d, uint8_t op);  /* emu_exec_str.c: A4-A7, AA-AF, 6C-6F */
void emu_exec_io(struct emu_insn *d, uint8_t op);      /* emu_exec_str.c: E4-E7, EC-EF */
void emu_io_check(struct emu_insn *d, uint16_t port, unsigned size);
void emu_exec_push(struct emu_insn *d, uint64_t v, unsigned size);
uint64_t emu_exec_pop(struct emu_insn *d, unsigned size);
/* Stack pointer arithmetic in the stack's address size. */
uint64_t emu_sp_mask(const struct emu_insn *d);
void emu_branch(struct emu_insn *d, uint64_t target, unsigned opsize); /* near jump: checks, then retires */
/* LOCKed RMW of the memory operand: kind is an ALU_* op or one of RMW_*; src the other operand or the bit. */
enum { RMW_NOT = 8, RMW_NEG, RMW_INC, RMW_DEC, RMW_BTS, RMW_BTR, RMW_BTC, RMW_XADD };
void emu_locked_rmw(struct emu_insn *d, unsigned size, int kind, uint64_t src);
void emu_load_far_pointer(struct emu_insn *d, int seg); /* LDS/LES/LSS/LFS/LGS */

#endif
