// SPDX-License-Identifier: MIT
/*
 * emu_step(): prefix and ModRM decode and the one-byte opcode map of the x86 interpreter.
 * The 0F map is in emu_exec_0f.c, string and port I/O instructions in emu_exec_str.c, shifts/mul/div/bit ops in
 * emu_exec_ops.c; emu_exec_internal.h has the decode context and the commit rule every handler follows.
 */
#include "hypervisor/emu/emu_exec_internal.h"

#include <sched.h>

_Noreturn void emu_ud(struct emu_insn *d)
{
	emu_raise(d->cpu, EXC_UD, -1);
}

_Noreturn void emu_gp0(struct emu_insn *d)
{
	emu_raise(d->cpu, EXC_GP, 0);
}

uint8_t emu_fetch_slow(struct emu_insn *d)
{
	uint64_t rip = d->start + d->len;

	if (d->len >= 15)
		emu_gp0(d);    /* longer than the architectural 15 bytes */
	if (!d->mode64)
		rip = (uint32_t)rip;
	d->len++;
	return emu_fetch8(d->cpu, rip);
}

/* ---- ModRM / SIB ---- */

static void modrm16(struct emu_insn *d)
{
	static const uint8_t base[8] = { R_BX, R_BX, R_BP, R_BP, R_SI, R_DI, R_BP, R_BX };
	static const int8_t index[8] = { R_SI, R_DI, R_SI, R_DI, -1, -1, -1, -1 };
	const uint64_t *g = d->cpu->gpr;
	unsigned rm = d->rm & 7;
	uint64_t off;
	int defseg = SEG_DS;

	if (d->mod == 0 && rm == 6) {
		off = emu_imm_n(d, 2);
	} else {
		off = g[base[rm]];
		if (rm < 4)
			off += g[index[rm]];
		if (base[rm] == R_BP && rm >= 2)
			defseg = SEG_SS;
		if (d->mod == 1)
			off += emu_sext(emu_imm8(d), 1);
		else if (d->mod == 2)
			off += emu_imm_n(d, 2);
	}
	d->moff = off & 0xffff;
	d->mseg = d->seg != SEG_NONE ? d->seg : defseg;
}

static void modrm32(struct emu_insn *d)
{
	const uint64_t *g = d->cpu->gpr;
	unsigned rm = d->rm & 7, base;
	uint64_t off = 0;
	int defseg = SEG_DS;

	if (rm == 4) {
		uint8_t sib = emu_imm8(d);
		unsigned idx = ((sib >> 3) & 7) | ((d->rex & 2) << 2);

		base = (sib & 7) | ((d->rex & 1) << 3);
		if (idx != R_SP)
			off = g[idx] << (sib >> 6);
		if ((base & 7) == R_BP && d->mod == 0) {
			off += emu_sext(emu_imm_n(d, 4), 4);
		} else {
			off += g[base];
			if (base == R_SP || base == R_BP)
				defseg = SEG_SS;
			d->sp_base = base == R_SP;
		}
	} else if (rm == 5 && d->mod == 0) {
		off = emu_sext(emu_imm_n(d, 4), 4);
		d->riprel = d->mode64;
	} else {
		off = g[d->rm];
		if (rm == R_BP)
			defseg = SEG_SS;    /* rBP, and r13 too: the default segment is irrelevant in 64-bit mode */
	}
	if (d->mod == 1)
		off += emu_sext(emu_imm8(d), 1);
	else if (d->mod == 2)
		off += emu_sext(emu_imm_n(d, 4), 4);
	d->moff = off;
	d->mseg = d->seg != SEG_NONE ? d->seg : defseg;
}

void emu_modrm_mem(struct emu_insn *d)
{
	if (d->adsize == 2)
		modrm16(d);
	else
		modrm32(d);
}

/* ---- stack ---- */

uint64_t emu_sp_mask(const struct emu_insn *d)
{
	return d->mode64 ? ~0ull : d->cpu->seg[SEG_SS].db ? 0xffffffffull : 0xffffull;
}

static void sp_set(struct emu_insn *d, uint64_t sp)
{
	uint64_t m = emu_sp_mask(d);

	d->cpu->gpr[R_SP] = (d->cpu->gpr[R_SP] & ~m) | (sp & m);
}

void emu_exec_push(struct emu_insn *d, uint64_t v, unsigned size)
{
	uint64_t sp = (d->cpu->gpr[R_SP] - size) & emu_sp_mask(d);

	emu_mem_write(d, SEG_SS, sp, size, v);
	sp_set(d, sp);
}

uint64_t emu_exec_pop(struct emu_insn *d, unsigned size)
{
	uint64_t sp = d->cpu->gpr[R_SP] & emu_sp_mask(d);
	uint64_t v = emu_mem_read(d, SEG_SS, sp, size);

	sp_set(d, sp + size);
	return v;
}

/* Operand size of PUSH/POP/near branches: 64-bit mode has 8 (or 2 with 66), no 4. */
static inline unsigned stack_opsize(const struct emu_insn *d)
{
	return d->mode64 ? (d->p66 ? 2 : 8) : d->opsize;
}

static bool canonical(uint64_t a)
{
	return (uint64_t)((int64_t)(a << 16) >> 16) == a;
}

void emu_branch(struct emu_insn *d, uint64_t target, unsigned opsize)
{
	if (opsize == 2)
		target &= 0xffff;
	else if (opsize == 4)
		target = (uint32_t)target;
	else if (!canonical(target))
		emu_gp0(d);
	if (!d->mode64 && target > d->cpu->seg[SEG_CS].limit)
		emu_gp0(d);    /* at the branch, not at the fetch of the target */
	d->cpu->rip = target;
	d->cpu->insns++;
}

/* ---- LOCKed read-modify-write on host memory ---- */

static uint64_t rmw_apply(struct emu_cpu *cpu, int kind, unsigned size, uint64_t old, uint64_t src)
{
	switch (kind) {
	case RMW_NOT: return ~old;
	case RMW_NEG: return emu_neg(cpu, size, old);
	case RMW_INC: return emu_incdec(cpu, false, size, old);
	case RMW_DEC: return emu_incdec(cpu, true, size, old);
	case RMW_BTS: return emu_bitop(cpu, 1, size, old, (unsigned)src);
	case RMW_BTR: return emu_bitop(cpu, 2, size, old, (unsigned)src);
	case RMW_BTC: return emu_bitop(cpu, 3, size, old, (unsigned)src);
	case RMW_XADD: return emu_alu(cpu, ALU_ADD, size, old, src);
	default: return emu_alu(cpu, (unsigned)kind, size, old, src);
	}
}

static bool cas_n(void *p, unsigned size, uint64_t *expected, uint64_t desired)
{
	switch (size) {
	case 1: {
		uint8_t e = (uint8_t)*expected;
		bool ok = __atomic_compare_exchange_n((uint8_t *)p, &e, (uint8_t)desired, false, __ATOMIC_SEQ_CST,
						      __ATOMIC_SEQ_CST);
		*expected = e;
		return ok;
	}
	case 2: {
		uint16_t e = (uint16_t)*expected;
		bool ok = __atomic_compare_exchange_n((uint16_t *)p, &e, (uint16_t)desired, false, __ATOMIC_SEQ_CST,
						      __ATOMIC_SEQ_CST);
		*expected = e;
		return ok;
	}
	case 4: {
		uint32_t e = (uint32_t)*expected;
		bool ok = __atomic_compare_exchange_n((uint32_t *)p, &e, (uint32_t)desired, false, __ATOMIC_SEQ_CST,
						      __ATOMIC_SEQ_CST);
		*expected = e;
		return ok;
	}
	default:
		return __atomic_compare_exchange_n((uint64_t *)p, expected, desired, false, __ATOMIC_SEQ_CST,
						   __ATOMIC_SEQ_CST);
	}
}

static uint64_t load_n(const void *p, unsigned size)
{
	switch (size) {
	case 1: return __atomic_load_n((const uint8_t *)p, __ATOMIC_SEQ_CST);
	case 2: return __atomic_load_n((const uint16_t *)p, __ATOMIC_SEQ_CST);
	case 4: return __atomic_load_n((const uint32_t *)p, __ATOMIC_SEQ_CST);
	default: return __atomic_load_n((const uint64_t *)p, __ATOMIC_SEQ_CST);
	}
}

/*
 * LOCK-prefixed RMW on the memory operand, as a compare-exchange loop on the host word: the flags are those of the
 * operation that won. XADD also writes the old value to the source register (after the memory write).
 */
void emu_locked_rmw(struct emu_insn *d, unsigned size, int kind, uint64_t src)
{
	struct emu_cpu *cpu = d->cpu;
	void *p = emu_atomic_ptr(cpu, d->mseg, emu_ea(d), size);
	uint64_t fl = cpu->rflags, old = load_n(p, size), val;

	for (;;) {
		cpu->rflags = fl;
		val = rmw_apply(cpu, kind, size, old, src);
		if (kind == ALU_CMP || cas_n(p, size, &old, val & emu_mask(size)))
			break;
	}
	if (kind == RMW_XADD)
		emu_reg_set(d, d->reg, size, old);
}

static uint64_t xchg_n(void *p, unsigned size, uint64_t v)
{
	switch (size) {
	case 1: return __atomic_exchange_n((uint8_t *)p, (uint8_t)v, __ATOMIC_SEQ_CST);
	case 2: return __atomic_exchange_n((uint16_t *)p, (uint16_t)v, __ATOMIC_SEQ_CST);
	case 4: return __atomic_exchange_n((uint32_t *)p, (uint32_t)v, __ATOMIC_SEQ_CST);
	default: return __atomic_exchange_n((uint64_t *)p, v, __ATOMIC_SEQ_CST);
	}
}

/* ---- helpers of the one-byte map ---- */

static inline unsigned opsize_b(const struct emu_insn *d, uint8_t op)
{
	return (op & 1) ? d->opsize : 1;
}

static void exec_alu(struct emu_insn *d, uint8_t op)
{
	unsigned aop = (op >> 3) & 7, size = opsize_b(d, op);
	uint64_t a, b, r;

	switch (op & 7) {
	case 0: case 1:    /* Ev, Gv */
		emu_modrm(d);
		emu_lock_check(d, aop != ALU_CMP);
		b = emu_reg_get(d, d->reg, size);
		if (d->lock) {
			emu_locked_rmw(d, size, (int)aop, b);
			break;
		}
		a = emu_rm_read(d, size);
		r = emu_alu(d->cpu, aop, size, a, b);
		if (aop != ALU_CMP)
			emu_rm_write(d, size, r);
		break;
	case 2: case 3:    /* Gv, Ev */
		emu_modrm(d);
		emu_lock_check(d, false);
		b = emu_rm_read(d, size);
		r = emu_alu(d->cpu, aop, size, emu_reg_get(d, d->reg, size), b);
		if (aop != ALU_CMP)
			emu_reg_set(d, d->reg, size, r);
		break;
	default:           /* AL/rAX, imm */
		if (d->lock)
			emu_ud(d);
		b = emu_immz(d, size);
		r = emu_alu(d->cpu, aop, size, emu_reg_get(d, R_AX, size), b);
		if (aop != ALU_CMP)
			emu_reg_set(d, R_AX, size, r);
		break;
	}
	emu_insn_retire(d);
}

/* Group 1: 80, 81, 82 (80 outside 64-bit mode), 83. */
static void exec_grp1(struct emu_insn *d, uint8_t op)
{
	unsigned size = opsize_b(d, op), aop;
	uint64_t a, b, r;

	if (op == 0x82 && d->mode64)
		emu_ud(d);
	emu_modrm(d);
	aop = d->reg & 7;
	emu_lock_check(d, aop != ALU_CMP);
	b = op == 0x83 ? emu_sext(emu_imm8(d), 1) : emu_immz(d, size);
	if (d->lock) {
		emu_locked_rmw(d, size, (int)aop, b);
	} else {
		a = emu_rm_read(d, size);
		r = emu_alu(d->cpu, aop, size, a, b);
		if (aop != ALU_CMP)
			emu_rm_write(d, size, r);
	}
	emu_insn_retire(d);
}

static void exec_shift_grp(struct emu_insn *d, uint8_t op)
{
	unsigned size = (op & 1) ? d->opsize : 1;
	uint8_t count;
	uint64_t a, r;

	emu_modrm(d);
	emu_lock_check(d, false);
	if (op <= 0xc1)
		count = emu_imm8(d);
	else if (op <= 0xd1)
		count = 1;
	else
		count = (uint8_t)d->cpu->gpr[R_CX];
	a = emu_rm_read(d, size);
	r = emu_shift(d->cpu, d->reg & 7, size, a, count);
	/* a zero count changes nothing, but a 32-bit register destination is still zero-extended */
	if ((count & (size == 8 ? 0x3f : 0x1f)) != 0 || (!d->mem && size == 4))
		emu_rm_write(d, size, r);
	emu_insn_retire(d);
}

/* Group 3: F6/F7 test/not/neg/mul/imul/div/idiv. */
static void exec_grp3(struct emu_insn *d, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = opsize_b(d, op), sub;
	uint64_t a, b, lo, hi, q, r;

	emu_modrm(d);
	sub = d->reg & 7;
	emu_lock_check(d, sub == 2 || sub == 3);
	if (sub <= 1) {
		b = emu_immz(d, size);
		emu_alu(cpu, ALU_AND, size, emu_rm_read(d, size), b);
		emu_insn_retire(d);
		return;
	}
	if (d->lock) {
		emu_locked_rmw(d, size, sub == 2 ? RMW_NOT : RMW_NEG, 0);
		emu_insn_retire(d);
		return;
	}
	a = emu_rm_read(d, size);
	switch (sub) {
	case 2:
		emu_rm_write(d, size, ~a);
		break;
	case 3:
		emu_rm_write(d, size, emu_neg(cpu, size, a));
		break;
	case 4: case 5:
		emu_mul1(cpu, sub == 5, size, emu_reg_get(d, R_AX, size), a, &lo, &hi);
		if (size == 1) {
			emu_reg_set(d, R_AX, 2, lo);
		} else {
			emu_reg_set(d, R_AX, size, lo);
			emu_reg_set(d, R_DX, size, hi);
		}
		break;
	default:
		if (size == 1) {
			lo = cpu->gpr[R_AX] & 0xff;
			hi = (cpu->gpr[R_AX] >> 8) & 0xff;
		} else {
			lo = emu_reg_get(d, R_AX, size);
			hi = emu_reg_get(d, R_DX, size);
		}
		if (!emu_div(cpu, sub == 7, size, lo, hi, a, &q, &r))
			emu_raise(cpu, EXC_DE, -1);
		if (size == 1) {
			emu_reg_set(d, R_AX, 2, (q & 0xff) | ((r & 0xff) << 8));
		} else {
			emu_reg_set(d, R_AX, size, q);
			emu_reg_set(d, R_DX, size, r);
		}
		break;
	}
	emu_insn_retire(d);
}

/* Group 4/5: FE/FF inc/dec/call/callf/jmp/jmpf/push. */
static void exec_grp5(struct emu_insn *d, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = opsize_b(d, op), sub, bsize;
	uint64_t v, off;
	uint16_t sel;

	emu_modrm(d);
	sub = d->reg & 7;
	if ((op == 0xfe && sub > 1) || sub == 7)
		emu_ud(d);
	emu_lock_check(d, sub <= 1);
	switch (sub) {
	case 0: case 1:
		if (d->lock) {
			emu_locked_rmw(d, size, sub ? RMW_DEC : RMW_INC, 0);
		} else {
			v = emu_rm_read(d, size);
			emu_rm_write(d, size, emu_incdec(cpu, sub, size, v));
		}
		emu_insn_retire(d);
		return;
	case 2: case 4:    /* near call / jmp, absolute indirect */
		bsize = stack_opsize(d);
		v = emu_rm_read(d, bsize);
		if (sub == 2)
			emu_exec_push(d, emu_next_rip(d), bsize);
		emu_branch(d, v, bsize);
		return;
	case 3: case 5:    /* far call / jmp through m16:16/32/64 */
		if (!d->mem)
			emu_ud(d);
		bsize = d->opsize;
		off = emu_read(cpu, d->mseg, emu_ea(d), bsize);
		sel = (uint16_t)emu_read(cpu, d->mseg, (emu_ea(d) + bsize) & emu_mask(d->adsize), 2);
		cpu->rip = emu_next_rip(d);
		cpu->insns++;
		if (sub == 3)
			emu_far_call(cpu, sel, off, bsize);
		else
			emu_far_jmp(cpu, sel, off);
		return;
	default:           /* push */
		bsize = stack_opsize(d);
		emu_exec_push(d, emu_rm_read(d, bsize), bsize);
		emu_insn_retire(d);
		return;
	}
}

void emu_load_far_pointer(struct emu_insn *d, int seg)
{
	struct emu_cpu *cpu = d->cpu;
	uint64_t off;
	uint16_t sel;

	if (!d->mem)
		emu_ud(d);
	off = emu_read(cpu, d->mseg, emu_ea(d), d->opsize);
	sel = (uint16_t)emu_read(cpu, d->mseg, (emu_ea(d) + d->opsize) & emu_mask(d->adsize), 2);
	emu_load_seg(cpu, seg, sel);
	emu_reg_set(d, d->reg, d->opsize, off);
	if (seg == SEG_SS)
		cpu->irq_shadow = true;
	emu_insn_retire(d);
}

/* POPF with the privilege rules of the SDM (IOPL changes at CPL 0 only, IF at CPL <= IOPL, VM/VIF/VIP kept). */
static void exec_popf(struct emu_insn *d)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = stack_opsize(d), iopl = (unsigned)(cpu->rflags >> 12) & 3, cpl = emu_cpl(cpu);
	uint64_t mask = EFL_ARITH | EFL_TF | EFL_DF | EFL_NT | EFL_AC | EFL_ID;
	uint64_t v;

	if ((cpu->rflags & EFL_VM) && iopl < 3)
		emu_gp0(d);
	v = emu_exec_pop(d, size);
	if (cpu->rflags & EFL_VM) {
		mask |= EFL_IF;
	} else {
		if (cpl == 0)
			mask |= EFL_IOPL;
		if (cpl <= iopl)
			mask |= EFL_IF;
	}
	if (size == 2)
		mask &= 0xffff;
	cpu->rflags = ((cpu->rflags & ~mask) | (v & mask) | 2) & ~(uint64_t)(EFL_RF | (1u << 3) | (1u << 5) | (1u << 15));
	emu_insn_retire(d);
}

static void exec_cli_sti(struct emu_insn *d, bool sti)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned iopl = (unsigned)(cpu->rflags >> 12) & 3;

	if (!emu_real_mode(cpu) && emu_cpl(cpu) > iopl)
		emu_gp0(d);
	if (sti) {
		if (!(cpu->rflags & EFL_IF))
			cpu->irq_shadow = true;
		cpu->rflags |= EFL_IF;
	} else {
		cpu->rflags &= ~(uint64_t)EFL_IF;
	}
	emu_insn_retire(d);
}

static void exec_enter(struct emu_insn *d)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = stack_opsize(d);
	uint64_t m = emu_sp_mask(d), frame = emu_imm_n(d, 2), level = emu_imm8(d) & 31;
	uint64_t sp = cpu->gpr[R_SP], bp = cpu->gpr[R_BP], frame_temp;

	sp = (sp - size) & m;
	emu_write(cpu, SEG_SS, sp, size, bp);
	frame_temp = sp;
	for (uint64_t i = 1; i < level; i++) {
		bp = (bp - size) & m;
		sp = (sp - size) & m;
		emu_write(cpu, SEG_SS, sp, size, emu_read(cpu, SEG_SS, bp & m, size));
	}
	if (level) {
		sp = (sp - size) & m;
		emu_write(cpu, SEG_SS, sp, size, frame_temp);
	}
	sp = (sp - frame) & m;
	emu_read(cpu, SEG_SS, sp, 1);    /* the new stack bottom must be accessible (#SS/#PF before commit) */
	emu_reg_set(d, R_BP, d->mode64 ? 8 : (m == 0xffff ? 2 : 4), frame_temp);    /* by stack size */
	sp_set(d, sp);
	emu_insn_retire(d);
}

static void exec_leave(struct emu_insn *d)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = stack_opsize(d);
	uint64_t m = emu_sp_mask(d), sp = cpu->gpr[R_BP] & m;
	uint64_t v = emu_read(cpu, SEG_SS, sp, size);

	sp_set(d, sp + size);
	emu_reg_set(d, R_BP, size, v);
	emu_insn_retire(d);
}

static void exec_pusha(struct emu_insn *d)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = d->opsize;
	uint64_t m = emu_sp_mask(d), sp = cpu->gpr[R_SP];

	for (unsigned r = 0; r < 8; r++) {
		sp = (sp - size) & m;
		emu_write(cpu, SEG_SS, sp, size, cpu->gpr[r]);
	}
	sp_set(d, sp);
	emu_insn_retire(d);
}

static void exec_popa(struct emu_insn *d)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = d->opsize;
	uint64_t m = emu_sp_mask(d), sp = cpu->gpr[R_SP] & m, v[8];

	for (int r = 7; r >= 0; r--) {
		v[r] = emu_read(cpu, SEG_SS, sp, size);
		sp = (sp + size) & m;
	}
	for (unsigned r = 0; r < 8; r++)
		if (r != R_SP)
			emu_reg_set(d, r, size, v[r]);
	sp_set(d, sp);
	emu_insn_retire(d);
}

/* BCD adjustments (not in 64-bit mode); computed in C since the host cannot execute them in 64-bit mode. */
static void exec_bcd(struct emu_insn *d, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	uint64_t fl = cpu->rflags;
	uint8_t al = (uint8_t)cpu->gpr[R_AX], ah = (uint8_t)(cpu->gpr[R_AX] >> 8), old = al, imm;
	bool cf = fl & EFL_CF, af = fl & EFL_AF;

	if (d->mode64)
		emu_ud(d);
	switch (op) {
	case 0x27: case 0x2f:    /* DAA / DAS */
		fl &= ~(uint64_t)(EFL_CF | EFL_AF | EFL_OF);
		if ((al & 0xf) > 9 || af) {
			if (op == 0x27) {
				fl |= (cf || al > 0xf9) ? EFL_CF : 0;
				al += 6;
			} else {
				fl |= (cf || al < 6) ? EFL_CF : 0;
				al -= 6;
			}
			fl |= EFL_AF;
		}
		if (old > 0x99 || cf) {
			al = op == 0x27 ? (uint8_t)(al + 0x60) : (uint8_t)(al - 0x60);
			fl |= EFL_CF;
		}
		cpu->rflags = fl;
		emu_flags_szp8(cpu, al);
		emu_reg_set(d, R_AX, 1, al);
		break;
	case 0x37: case 0x3f:    /* AAA / AAS */
		if ((al & 0xf) > 9 || af) {
			uint16_t ax = (uint16_t)(al | ah << 8);

			ax = op == 0x37 ? (uint16_t)(ax + 0x106) : (uint16_t)(ax - 6 - 0x100);
			al = (uint8_t)ax;
			ah = (uint8_t)(ax >> 8);
			fl |= EFL_AF | EFL_CF;
		} else {
			fl &= ~(uint64_t)(EFL_AF | EFL_CF);
		}
		cpu->rflags = fl;
		emu_flags_szp8(cpu, al);
		emu_flags_set(cpu, EFL_OF, 0);
		emu_reg_set(d, R_AX, 2, (al & 0xf) | (uint16_t)(ah << 8));
		break;
	case 0xd4:               /* AAM imm8 */
		imm = emu_imm8(d);
		if (!imm)
			emu_raise(cpu, EXC_DE, -1);
		ah = al / imm;
		al = al % imm;
		emu_flags_set(cpu, EFL_CF | EFL_AF | EFL_OF, 0);
		emu_flags_szp8(cpu, al);
		emu_reg_set(d, R_AX, 2, al | (uint16_t)(ah << 8));
		break;
	default:                 /* D5: AAD imm8 */
		imm = emu_imm8(d);
		al = (uint8_t)(al + ah * imm);
		emu_flags_set(cpu, EFL_CF | EFL_AF | EFL_OF, 0);
		emu_flags_szp8(cpu, al);
		emu_reg_set(d, R_AX, 2, al);
		break;
	}
	emu_insn_retire(d);
}

static void exec_mov_sreg(struct emu_insn *d, bool to_sreg)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned sr;

	emu_modrm(d);
	sr = d->reg & 7;
	if (sr > SEG_GS || (to_sreg && sr == SEG_CS))
		emu_ud(d);
	if (to_sreg) {
		emu_load_seg(cpu, (int)sr, (uint16_t)emu_rm_read(d, 2));
		if (sr == SEG_SS)
			cpu->irq_shadow = true;
	} else {
		emu_rm_write(d, d->mem ? 2 : d->opsize, cpu->seg[sr].selector);
	}
	emu_insn_retire(d);
}

static void exec_push_sreg(struct emu_insn *d, int sr)
{
	unsigned size = stack_opsize(d);

	emu_exec_push(d, d->cpu->seg[sr].selector, size);
	emu_insn_retire(d);
}

static void exec_pop_sreg(struct emu_insn *d, int sr)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = stack_opsize(d);
	uint64_t sp = cpu->gpr[R_SP] & emu_sp_mask(d);
	uint16_t sel = (uint16_t)emu_read(cpu, SEG_SS, sp, 2);

	emu_load_seg(cpu, sr, sel);
	sp_set(d, sp + size);
	if (sr == SEG_SS)
		cpu->irq_shadow = true;
	emu_insn_retire(d);
}

static void exec_xchg(struct emu_insn *d, uint8_t op)
{
	unsigned size = opsize_b(d, op);
	uint64_t a, b;

	emu_modrm(d);
	emu_lock_check(d, true);
	b = emu_reg_get(d, d->reg, size);
	if (d->mem) {    /* always locked */
		a = xchg_n(emu_atomic_ptr(d->cpu, d->mseg, emu_ea(d), size), size, b);
	} else {
		a = emu_reg_get(d, d->rm, size);
		emu_reg_set(d, d->rm, size, b);
	}
	emu_reg_set(d, d->reg, size, a);
	emu_insn_retire(d);
}

static void exec_iret(struct emu_insn *d)
{
	d->cpu->rip = emu_next_rip(d);
	d->cpu->insns++;
	emu_iret(d->cpu, d->opsize);
}

static void exec_int(struct emu_insn *d, uint8_t vec, bool software)
{
	struct emu_cpu *cpu = d->cpu;
	uint64_t next = emu_next_rip(d);

	cpu->rip = next;    /* emu_sys RIP contract: the next instruction's address */
	cpu->insns++;
	emu_int(cpu, vec, software, next);
}

/* ---- the frequent one-byte opcodes: small functions, dispatched from emu_step without exec_one's frame ---- */

static __attribute__((noinline)) void exec_push_pop_reg(struct emu_insn *d, uint8_t op)    /* 50-5F */
{
	unsigned size = stack_opsize(d), r = (op & 7) | ((d->rex & 1) << 3);

	if (op < 0x58) {
		emu_exec_push(d, emu_reg_get(d, r, size), size);
	} else {
		uint64_t v = emu_exec_pop(d, size);

		emu_reg_set(d, r, size, v);
	}
	emu_insn_retire(d);
}

static __attribute__((noinline)) void exec_jcc8(struct emu_insn *d, uint8_t op)    /* 70-7F */
{
	int8_t rel = (int8_t)emu_imm8(d);

	if (emu_cond(d->cpu->rflags, op & 15))
		emu_branch(d, emu_next_rip(d) + (uint64_t)(int64_t)rel, stack_opsize(d));
	else
		emu_insn_retire(d);
}

static __attribute__((noinline)) void exec_mov_imm(struct emu_insn *d, uint8_t op)    /* B0-BF, incl. MOVABS */
{
	unsigned r = (op & 7) | ((d->rex & 1) << 3), size = op < 0xb8 ? 1 : d->opsize;

	emu_reg_set(d, r, size, emu_imm_n(d, size));
	emu_insn_retire(d);
}

static __attribute__((noinline)) void exec_test_rm(struct emu_insn *d, uint8_t op)    /* 84/85 */
{
	unsigned size = opsize_b(d, op);

	emu_modrm(d);
	emu_lock_check(d, false);
	emu_alu(d->cpu, ALU_AND, size, emu_rm_read(d, size), emu_reg_get(d, d->reg, size));
	emu_insn_retire(d);
}

static __attribute__((noinline)) void exec_mov_rm(struct emu_insn *d, uint8_t op)    /* 88-8B */
{
	unsigned size = opsize_b(d, op);

	emu_modrm(d);
	emu_lock_check(d, false);
	if (op < 0x8a)
		emu_rm_write(d, size, emu_reg_get(d, d->reg, size));
	else
		emu_reg_set(d, d->reg, size, emu_rm_read(d, size));
	emu_insn_retire(d);
}

static __attribute__((noinline)) void exec_lea(struct emu_insn *d, uint8_t op)    /* 8D */
{
	(void)op;
	emu_modrm(d);
	if (!d->mem || d->lock)
		emu_ud(d);
	emu_reg_set(d, d->reg, d->opsize, emu_ea(d));
	emu_insn_retire(d);
}

static __attribute__((noinline)) void exec_ret_near(struct emu_insn *d, uint8_t op)    /* C2/C3 */
{
	struct emu_cpu *cpu = d->cpu;
	uint16_t imm = op == 0xc2 ? (uint16_t)emu_imm_n(d, 2) : 0;
	unsigned size = stack_opsize(d);
	uint64_t sp = cpu->gpr[R_SP] & emu_sp_mask(d);
	uint64_t v = emu_mem_read(d, SEG_SS, sp, size);

	if (size == 8 && !canonical(v))
		emu_gp0(d);
	sp_set(d, sp + size + imm);
	emu_branch(d, v, size);
}

static __attribute__((noinline)) void exec_call_jmp_rel(struct emu_insn *d, uint8_t op)    /* E8/E9/EB */
{
	unsigned size = stack_opsize(d);
	uint64_t rel = op == 0xeb ? emu_sext(emu_imm8(d), 1) : emu_immz(d, size == 2 ? 2 : 4);
	uint64_t target = emu_next_rip(d) + rel;

	if (op == 0xe8) {
		if (size == 8 && !canonical(target))
			emu_gp0(d);
		emu_exec_push(d, emu_next_rip(d), size);
	}
	emu_branch(d, target, size);
}

/* The one-byte map (prefixes already consumed; op is the opcode byte). */
static __attribute__((noinline)) void exec_one(struct emu_insn *d, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size;
	uint64_t v, off;

	if (d->lock) {
		/* lockable one-byte opcodes check their ModRM form themselves */
		bool maybe = (op < 0x40 && (op & 7) < 2 && (op & 0x38) != 0x38) || op == 0x0f || (op >= 0x80 && op <= 0x83) ||
			     op == 0x86 || op == 0x87 || op == 0xf6 || op == 0xf7 || op == 0xfe || op == 0xff;
		if (!maybe)
			emu_ud(d);
	}
	switch (op) {
	case 0x00 ... 0x05: case 0x08 ... 0x0d: case 0x10 ... 0x15: case 0x18 ... 0x1d:
	case 0x20 ... 0x25: case 0x28 ... 0x2d: case 0x30 ... 0x35: case 0x38 ... 0x3d:
		exec_alu(d, op);
		return;
	case 0x06: case 0x0e: case 0x16: case 0x1e:
		if (d->mode64)
			emu_ud(d);
		exec_push_sreg(d, op >> 3);
		return;
	case 0x07: case 0x17: case 0x1f:
		if (d->mode64)
			emu_ud(d);
		exec_pop_sreg(d, op >> 3);
		return;
	case 0x0f:
		emu_exec_0f(d);
		return;
	case 0x27: case 0x2f: case 0x37: case 0x3f:
		exec_bcd(d, op);
		return;
	case 0x40 ... 0x4f: {         /* INC/DEC r (in 64-bit mode these are REX, consumed as prefixes) */
		unsigned r = op & 7;

		emu_reg_set(d, r, d->opsize, emu_incdec(cpu, op >= 0x48, d->opsize, emu_reg_get(d, r, d->opsize)));
		emu_insn_retire(d);
		return;
	}
	case 0x50 ... 0x5f:
		exec_push_pop_reg(d, op);
		return;
	case 0x70 ... 0x7f:
		exec_jcc8(d, op);
		return;
	case 0xb0 ... 0xbf:
		exec_mov_imm(d, op);
		return;
	case 0x91 ... 0x97: {
		unsigned r = (op & 7) | ((d->rex & 1) << 3);

		v = emu_reg_get(d, r, d->opsize);
		emu_reg_set(d, r, d->opsize, emu_reg_get(d, R_AX, d->opsize));
		emu_reg_set(d, R_AX, d->opsize, v);
		emu_insn_retire(d);
		return;
	}
	case 0x60:
		if (d->mode64)
			emu_ud(d);
		exec_pusha(d);
		return;
	case 0x61:
		if (d->mode64)
			emu_ud(d);
		exec_popa(d);
		return;
	case 0x62: {                  /* BOUND */
		int64_t idx, lo, hi;

		if (d->mode64)
			emu_ud(d);
		emu_modrm(d);
		if (!d->mem)
			emu_ud(d);
		idx = (int64_t)emu_sext(emu_reg_get(d, d->reg, d->opsize), d->opsize);
		lo = (int64_t)emu_sext(emu_read(cpu, d->mseg, emu_ea(d), d->opsize), d->opsize);
		hi = (int64_t)emu_sext(emu_read(cpu, d->mseg, (emu_ea(d) + d->opsize) & emu_mask(d->adsize),
						d->opsize), d->opsize);
		if (idx < lo || idx > hi)
			emu_raise(cpu, EXC_BR, -1);
		emu_insn_retire(d);
		return;
	}
	case 0x63:
		emu_modrm(d);
		if (d->mode64) {      /* MOVSXD */
			v = emu_rm_read(d, d->opsize == 8 ? 4 : d->opsize);
			emu_reg_set(d, d->reg, d->opsize, emu_sext(v, 4));
		} else {              /* ARPL */
			uint64_t dst, src;

			if (cpu->mode == EMU_REAL || (cpu->rflags & EFL_VM))
				emu_ud(d);
			dst = emu_rm_read(d, 2);
			src = emu_reg_get(d, d->reg, 2);
			if ((dst & 3) < (src & 3)) {
				emu_rm_write(d, 2, (dst & ~3ull) | (src & 3));
				cpu->rflags |= EFL_ZF;
			} else {
				cpu->rflags &= ~(uint64_t)EFL_ZF;
			}
		}
		emu_insn_retire(d);
		return;
	case 0x68: case 0x6a:
		size = stack_opsize(d);
		v = op == 0x6a ? emu_sext(emu_imm8(d), 1) : emu_immz(d, size);
		emu_exec_push(d, v, size);
		emu_insn_retire(d);
		return;
	case 0x69: case 0x6b: {
		uint64_t imm;

		emu_modrm(d);
		imm = op == 0x6b ? emu_sext(emu_imm8(d), 1) : emu_immz(d, d->opsize);
		v = emu_rm_read(d, d->opsize);
		emu_reg_set(d, d->reg, d->opsize, emu_imul2(cpu, d->opsize, v, imm));
		emu_insn_retire(d);
		return;
	}
	case 0x6c: case 0x6d: case 0x6e: case 0x6f:
	case 0xa4: case 0xa5: case 0xa6: case 0xa7:
	case 0xaa: case 0xab: case 0xac: case 0xad: case 0xae: case 0xaf:
		emu_exec_string(d, op);
		return;
	case 0x80: case 0x81: case 0x82: case 0x83:
		exec_grp1(d, op);
		return;
	case 0x84: case 0x85:
		exec_test_rm(d, op);
		return;
	case 0x86: case 0x87:
		exec_xchg(d, op);
		return;
	case 0x88 ... 0x8b:
		exec_mov_rm(d, op);
		return;
	case 0x8c: case 0x8e:
		exec_mov_sreg(d, op == 0x8e);
		return;
	case 0x8d:
		exec_lea(d, op);
		return;
	case 0x8f: {
		uint64_t sp;

		emu_modrm(d);
		if ((d->reg & 7) != 0)
			emu_ud(d);
		size = stack_opsize(d);
		sp = cpu->gpr[R_SP] & emu_sp_mask(d);
		v = emu_read(cpu, SEG_SS, sp, size);
		if (d->mem) {
			/* the address is computed with RSP already incremented */
			if (d->sp_base)
				d->moff += size;
			emu_write(cpu, d->mseg, emu_ea(d), size, v);
			sp_set(d, sp + size);
		} else {
			sp_set(d, sp + size);
			emu_reg_set(d, d->rm, size, v);
		}
		emu_insn_retire(d);
		return;
	}
	case 0x90:
		if (d->rex & 1) {     /* xchg r8, rax */
			v = emu_reg_get(d, R_R8, d->opsize);
			emu_reg_set(d, R_R8, d->opsize, emu_reg_get(d, R_AX, d->opsize));
			emu_reg_set(d, R_AX, d->opsize, v);
		} else if (d->rep == 0xf3) {
			/* PAUSE: a spin-wait hint. Every EMU_PAUSE_YIELD_EVERY-th gives the host CPU away (emu.h). */
			cpu->pauses++;
			if (++cpu->pause_streak >= EMU_PAUSE_YIELD_EVERY) {
				cpu->pause_streak = 0;
				cpu->pause_yields++;
				sched_yield();
			}
		}
		emu_insn_retire(d);   /* NOP, F3 90 PAUSE */
		return;
	case 0x98:
		switch (d->opsize) {
		case 2: emu_reg_set(d, R_AX, 2, emu_sext(cpu->gpr[R_AX], 1)); break;
		case 4: emu_reg_set(d, R_AX, 4, emu_sext(cpu->gpr[R_AX], 2)); break;
		default: emu_reg_set(d, R_AX, 8, emu_sext(cpu->gpr[R_AX], 4)); break;
		}
		emu_insn_retire(d);
		return;
	case 0x99:
		v = emu_reg_get(d, R_AX, d->opsize) >> (d->opsize * 8 - 1);
		emu_reg_set(d, R_DX, d->opsize, v ? ~0ull : 0);
		emu_insn_retire(d);
		return;
	case 0x9a: {
		uint16_t sel;

		if (d->mode64)
			emu_ud(d);
		off = emu_imm_n(d, d->opsize);
		sel = (uint16_t)emu_imm_n(d, 2);
		cpu->rip = emu_next_rip(d);
		cpu->insns++;
		emu_far_call(cpu, sel, off, d->opsize);
		return;
	}
	case 0x9b:                    /* WAIT */
		if ((cpu->cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS))
			emu_raise(cpu, EXC_NM, -1);
		emu_x87_wait(d);
		emu_insn_retire(d);
		return;
	case 0x9c:
		if ((cpu->rflags & EFL_VM) && ((cpu->rflags >> 12) & 3) < 3)
			emu_gp0(d);
		size = stack_opsize(d);
		emu_exec_push(d, cpu->rflags & ~(uint64_t)(EFL_VM | EFL_RF), size);
		emu_insn_retire(d);
		return;
	case 0x9d:
		exec_popf(d);
		return;
	case 0x9e:                    /* SAHF */
		emu_flags_set(cpu, EFL_CF | EFL_PF | EFL_AF | EFL_ZF | EFL_SF, (uint32_t)(cpu->gpr[R_AX] >> 8));
		emu_insn_retire(d);
		return;
	case 0x9f:                    /* LAHF */
		cpu->gpr[R_AX] = (cpu->gpr[R_AX] & ~0xff00ull) | (((cpu->rflags & 0xd5) | 2) << 8);
		emu_insn_retire(d);
		return;
	case 0xa0: case 0xa1: case 0xa2: case 0xa3: {
		int seg = d->seg != SEG_NONE ? d->seg : SEG_DS;

		size = opsize_b(d, op);
		off = emu_imm_n(d, d->adsize);
		if (op < 0xa2) {
			emu_reg_set(d, R_AX, size, emu_read(cpu, seg, off, size));
		} else {
			emu_write(cpu, seg, off, size, emu_reg_get(d, R_AX, size));
		}
		emu_insn_retire(d);
		return;
	}
	case 0xa8: case 0xa9:
		size = opsize_b(d, op);
		emu_alu(cpu, ALU_AND, size, emu_reg_get(d, R_AX, size), emu_immz(d, size));
		emu_insn_retire(d);
		return;
	case 0xc0: case 0xc1: case 0xd0: case 0xd1: case 0xd2: case 0xd3:
		exec_shift_grp(d, op);
		return;
	case 0xc2: case 0xc3:
		exec_ret_near(d, op);
		return;
	case 0xc4: case 0xc5:
		if (d->mode64)
			emu_ud(d);    /* VEX */
		emu_modrm(d);
		if (!d->mem)
			emu_ud(d);    /* VEX in 32-bit mode too */
		emu_load_far_pointer(d, op == 0xc4 ? SEG_ES : SEG_DS);
		return;
	case 0xc6: case 0xc7:
		size = opsize_b(d, op);
		emu_modrm(d);
		if ((d->reg & 7) != 0)
			emu_ud(d);
		v = emu_immz(d, size);
		emu_rm_write(d, size, v);
		emu_insn_retire(d);
		return;
	case 0xc8:
		exec_enter(d);
		return;
	case 0xc9:
		exec_leave(d);
		return;
	case 0xca: case 0xcb: {
		uint16_t imm = op == 0xca ? (uint16_t)emu_imm_n(d, 2) : 0;

		cpu->rip = emu_next_rip(d);
		cpu->insns++;
		emu_far_ret(cpu, d->opsize, imm);
		return;
	}
	case 0xcc:
		exec_int(d, 3, true);
		return;
	case 0xcd:
		v = emu_imm8(d);
		exec_int(d, (uint8_t)v, true);
		return;
	case 0xce:
		if (d->mode64)
			emu_ud(d);
		if (cpu->rflags & EFL_OF)
			exec_int(d, 4, true);
		else
			emu_insn_retire(d);
		return;
	case 0xcf:
		exec_iret(d);
		return;
	case 0xd4: case 0xd5:
		exec_bcd(d, op);
		return;
	case 0xd6:                    /* SALC (undocumented) */
		if (d->mode64)
			emu_ud(d);
		emu_reg_set(d, R_AX, 1, (cpu->rflags & EFL_CF) ? 0xff : 0);
		emu_insn_retire(d);
		return;
	case 0xd7: {                  /* XLAT */
		int seg = d->seg != SEG_NONE ? d->seg : SEG_DS;

		off = (cpu->gpr[R_BX] + (cpu->gpr[R_AX] & 0xff)) & emu_mask(d->adsize);
		emu_reg_set(d, R_AX, 1, emu_read(cpu, seg, off, 1));
		emu_insn_retire(d);
		return;
	}
	case 0xd8: case 0xd9: case 0xda: case 0xdb: case 0xdc: case 0xdd: case 0xde: case 0xdf:
		emu_exec_x87(d, op);
		return;
	case 0xe0: case 0xe1: case 0xe2: case 0xe3: {
		int8_t rel = (int8_t)emu_imm8(d);
		uint64_t cx = cpu->gpr[R_CX] & emu_mask(d->adsize);
		bool take;

		if (op == 0xe3) {
			take = cx == 0;
		} else {
			cx = (cx - 1) & emu_mask(d->adsize);
			take = cx != 0;
			if (op == 0xe0)
				take = take && !(cpu->rflags & EFL_ZF);
			else if (op == 0xe1)
				take = take && (cpu->rflags & EFL_ZF);
		}
		if (take) {
			uint64_t save = cpu->gpr[R_CX];

			emu_reg_set_ad(cpu, R_CX, d->adsize, cx);
			if (op != 0xe3) {
				/* restore on a #GP from the target check, then commit */
				uint64_t nc = cpu->gpr[R_CX];

				cpu->gpr[R_CX] = save;
				emu_branch(d, emu_next_rip(d) + (uint64_t)(int64_t)rel, stack_opsize(d));
				cpu->gpr[R_CX] = nc;
			} else {
				emu_branch(d, emu_next_rip(d) + (uint64_t)(int64_t)rel, stack_opsize(d));
			}
		} else {
			if (op != 0xe3)
				emu_reg_set_ad(cpu, R_CX, d->adsize, cx);
			emu_insn_retire(d);
		}
		return;
	}
	case 0xe4: case 0xe5: case 0xe6: case 0xe7: case 0xec: case 0xed: case 0xee: case 0xef:
		emu_exec_io(d, op);
		return;
	case 0xe8: case 0xe9: case 0xeb:
		exec_call_jmp_rel(d, op);
		return;
	case 0xea: {
		uint16_t sel;

		if (d->mode64)
			emu_ud(d);
		off = emu_imm_n(d, d->opsize);
		sel = (uint16_t)emu_imm_n(d, 2);
		cpu->rip = emu_next_rip(d);
		cpu->insns++;
		emu_far_jmp(cpu, sel, off);
		return;
	}
	case 0xf1:                    /* INT1 / ICEBP */
		exec_int(d, 1, false);
		return;
	case 0xf4:
		emu_need_cpl0(d);
		emu_insn_retire(d);
		emu_hlt(cpu);
		return;
	case 0xf5:
		cpu->rflags ^= EFL_CF;
		emu_insn_retire(d);
		return;
	case 0xf6: case 0xf7:
		exec_grp3(d, op);
		return;
	case 0xf8: case 0xf9:
		cpu->rflags = (cpu->rflags & ~(uint64_t)EFL_CF) | (op & 1);
		emu_insn_retire(d);
		return;
	case 0xfa: case 0xfb:
		exec_cli_sti(d, op == 0xfb);
		return;
	case 0xfc: case 0xfd:
		cpu->rflags = (cpu->rflags & ~(uint64_t)EFL_DF) | ((op & 1) ? EFL_DF : 0);
		emu_insn_retire(d);
		return;
	case 0xfe: case 0xff:
		exec_grp5(d, op);
		return;
	default:
		emu_ud(d);
	}
}

enum { PFX_NONE, PFX_66, PFX_67, PFX_LOCK, PFX_REP, PFX_SEG, PFX_REX };
static const uint8_t prefix_kind[256] = {
	[0x66] = PFX_66, [0x67] = PFX_67, [0xf0] = PFX_LOCK, [0xf2] = PFX_REP, [0xf3] = PFX_REP,
	[0x26] = PFX_SEG, [0x2e] = PFX_SEG, [0x36] = PFX_SEG, [0x3e] = PFX_SEG, [0x64] = PFX_SEG, [0x65] = PFX_SEG,
	[0x40 ... 0x4f] = PFX_REX,
};

void emu_step(struct emu_cpu *cpu)
{
	struct emu_insn d;
	bool code16;
	uint8_t op;

	d.cpu = cpu;
	d.start = cpu->rip;
	d.len = 0;
	d.rex = 0;
	d.rep = 0;
	d.lock = d.p66 = d.riprel = d.sp_base = false;
	d.seg = SEG_NONE;
	d.mode64 = cpu->mode == EMU_LONG64;
	cpu->insn_rip = cpu->rip;
	d.hp = NULL;
	if (d.mode64) {
		/* the hit path of emu_fetch_ptr() inline (emu_tlb_index() in emu.h); a miss takes the call */
		uint64_t lp = cpu->rip >> 12;
		const struct emu_tlb_entry *e = &cpu->tlb_x[emu_tlb_index(lp)];

		if (__builtin_expect(e->lpage == lp && e->host && (cpu->cpl != 3 || (e->flags & EMU_TLB_USER)) &&
				     (uint64_t)((int64_t)(cpu->rip << 16) >> 16) == cpu->rip, 1)) {
			d.hp = e->host + (cpu->rip & 0xfff);
			d.havail = 4096 - (unsigned)(cpu->rip & 0xfff);
		}
	}
	if (!d.hp)
		d.hp = emu_fetch_ptr(cpu, cpu->rip, &d.havail);
	if (!d.hp || d.havail > 15)
		d.havail = d.hp ? 15 : 0;
	code16 = cpu->mode == EMU_REAL || cpu->mode == EMU_PROT16 || cpu->mode == EMU_COMPAT16;

	bool p67 = false;
	for (;;) {
		op = emu_imm8(&d);
		if (__builtin_expect(!prefix_kind[op], 1))
			break;
		switch (prefix_kind[op]) {
		case PFX_66: d.p66 = true; break;
		case PFX_67: p67 = true; break;
		case PFX_LOCK: d.lock = true; break;
		case PFX_REP: d.rep = op; break;
		case PFX_SEG:
			/* ES/CS/SS/DS: no effect in 64-bit mode */
			d.seg = op >= 0x64 ? op - 0x64 + SEG_FS : d.mode64 ? SEG_NONE : (op >> 3) & 3;
			break;
		default:       /* REX: a prefix in 64-bit mode only, and only when last */
			if (!d.mode64)
				goto opcode;
			d.rex = op;
			continue;
		}
		d.rex = 0;     /* a legacy prefix after REX cancels it */
	}
opcode:
	if (d.mode64) {
		d.opsize = (d.rex & 8) ? 8 : d.p66 ? 2 : 4;
		d.adsize = p67 ? 4 : 8;
	} else {
		d.opsize = (code16 ^ d.p66) ? 2 : 4;
		d.adsize = (code16 ^ p67) ? 2 : 4;
	}
	if (__builtin_expect(!d.lock, 1)) {
		switch (op) {
		case 0x00 ... 0x05: case 0x08 ... 0x0d: case 0x10 ... 0x15: case 0x18 ... 0x1d:
		case 0x20 ... 0x25: case 0x28 ... 0x2d: case 0x30 ... 0x35: case 0x38 ... 0x3d:
			exec_alu(&d, op);
			return;
		case 0x0f: emu_exec_0f(&d); return;
		case 0x50 ... 0x5f: exec_push_pop_reg(&d, op); return;
		case 0x70 ... 0x7f: exec_jcc8(&d, op); return;
		case 0x80 ... 0x83: exec_grp1(&d, op); return;
		case 0x84: case 0x85: exec_test_rm(&d, op); return;
		case 0x88 ... 0x8b: exec_mov_rm(&d, op); return;
		case 0x8d: exec_lea(&d, op); return;
		case 0xb0 ... 0xbf: exec_mov_imm(&d, op); return;
		case 0xc0: case 0xc1: case 0xd0 ... 0xd3: exec_shift_grp(&d, op); return;
		case 0xc2: case 0xc3: exec_ret_near(&d, op); return;
		case 0xe8: case 0xe9: case 0xeb: exec_call_jmp_rel(&d, op); return;
		case 0xf6: case 0xf7: exec_grp3(&d, op); return;
		case 0xfe: case 0xff: exec_grp5(&d, op); return;
		default: break;
		}
	}
	exec_one(&d, op);
}
