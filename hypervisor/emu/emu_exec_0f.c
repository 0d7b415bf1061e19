// SPDX-License-Identifier: MIT
/*
 * The two-byte (0F) opcode map: system instructions (decoded here, executed by emu_sys.c), CMOVcc/SETcc/Jcc,
 * bit instructions, SHLD/SHRD, CMPXCHG/XADD/CMPXCHG8B/16B, MOVZX/MOVSX, BSWAP, fences and hint NOPs.
 * SYSENTER/SYSEXIT are decoded here and executed by emu_sys.c (IA32_SYSENTER_* MSRs).
 * Not implemented (#UD): SSE/AVX/x87 state, MONITOR/MWAIT, XGETBV, RDRAND/RDSEED, VMX/SVM,
 * TZCNT (F3 0F BC executes as BSF, as on CPUs without BMI1).
 */
#include "hypervisor/emu/emu_exec_internal.h"

static void exec_grp6(struct emu_insn *d)    /* 0F 00 */
{
	struct emu_cpu *cpu = d->cpu;
	unsigned sub;

	emu_modrm(d);
	sub = d->reg & 7;
	if (cpu->mode == EMU_REAL || (cpu->rflags & EFL_VM))
		emu_ud(d);
	switch (sub) {
	case 0: case 1:    /* SLDT / STR */
		emu_rm_write(d, d->mem ? 2 : d->opsize, sub ? cpu->tr.selector : cpu->ldt.selector);
		break;
	case 2: case 3: {  /* LLDT / LTR */
		uint16_t sel;

		emu_need_cpl0(d);
		sel = (uint16_t)emu_rm_read(d, 2);
		if (sub == 2)
			emu_lldt(cpu, sel);
		else
			emu_ltr(cpu, sel);
		break;
	}
	case 4: case 5: {  /* VERR / VERW */
		uint16_t sel = (uint16_t)emu_rm_read(d, 2);
		bool ok = false;
		const struct kvm_dtable *gdt = &cpu->gdt;
		uint64_t base = (sel & 4) ? cpu->ldt.base : gdt->base;
		uint64_t limit = (sel & 4) ? cpu->ldt.limit : gdt->limit;

		if ((sel & ~3u) && (uint64_t)(sel | 7) <= limit && !((sel & 4) && cpu->ldt.unusable)) {
			uint64_t desc = emu_read_linear(cpu, base + (sel & ~7u), 8, true);
			unsigned type = (desc >> 40) & 15, dpl = (desc >> 45) & 3;
			bool s = (desc >> 44) & 1, code = type & 8, conforming = code && (type & 4);
			unsigned cpl = emu_cpl(cpu), rpl = sel & 3;

			if (s && (conforming || dpl >= (cpl > rpl ? cpl : rpl)))
				ok = sub == 4 ? (!code || (type & 2)) : (!code && (type & 2));
		}
		emu_flags_set(cpu, EFL_ZF, ok ? EFL_ZF : 0);
		break;
	}
	default:
		emu_ud(d);
	}
	emu_insn_retire(d);
}

static void exec_grp7(struct emu_insn *d)    /* 0F 01 */
{
	struct emu_cpu *cpu = d->cpu;
	unsigned sub;
	uint64_t ea;

	emu_modrm(d);
	sub = d->reg & 7;
	if (!d->mem) {
		unsigned code = (d->reg & 7) << 3 | (d->rm & 7);

		switch (code) {
		case 0x38:    /* F8 SWAPGS */
			if (!d->mode64)
				emu_ud(d);
			emu_need_cpl0(d);
			ea = cpu->seg[SEG_GS].base;
			cpu->seg[SEG_GS].base = cpu->msr_kernel_gs_base;
			cpu->msr_kernel_gs_base = ea;
			emu_insn_retire(d);
			return;
		case 0x39: {  /* F9 RDTSCP */
			uint64_t t;

			if ((cpu->cr4 & CR4_TSD) && emu_cpl(cpu) != 0)
				emu_gp0(d);
			t = emu_rdtsc(cpu);
			cpu->gpr[R_AX] = (uint32_t)t;
			cpu->gpr[R_DX] = t >> 32;
			cpu->gpr[R_CX] = (uint32_t)cpu->msr_tsc_aux;
			emu_insn_retire(d);
			return;
		}
		default:
			if (sub == 4 || sub == 6)
				break;    /* SMSW / LMSW register forms */
			emu_ud(d);    /* MONITOR/MWAIT, XGETBV, CLAC/STAC, VMX/SVM... */
		}
	}
	switch (sub) {
	case 0: case 1: {  /* SGDT / SIDT */
		const struct kvm_dtable *t = sub ? &cpu->idt : &cpu->gdt;

		ea = emu_ea(d);
		emu_write(cpu, d->mseg, ea, 2, t->limit);
		emu_write(cpu, d->mseg, (ea + 2) & emu_mask(d->adsize), d->mode64 ? 8 : 4,
			  d->opsize == 2 && !d->mode64 ? t->base & 0xffffff : t->base);
		break;
	}
	case 2: case 3: {  /* LGDT / LIDT */
		uint64_t base;
		uint16_t limit;

		emu_need_cpl0(d);
		ea = emu_ea(d);
		limit = (uint16_t)emu_read(cpu, d->mseg, ea, 2);
		base = emu_read(cpu, d->mseg, (ea + 2) & emu_mask(d->adsize), d->mode64 ? 8 : 4);
		if (!d->mode64 && d->opsize == 2)
			base &= 0xffffff;
		emu_lgdt_lidt(cpu, sub == 3, base, limit);
		break;
	}
	case 4:            /* SMSW */
		emu_rm_write(d, d->mem ? 2 : d->opsize, cpu->cr0);
		break;
	case 6: {          /* LMSW: PE can be set, not cleared */
		uint64_t v;

		emu_need_cpl0(d);
		v = emu_rm_read(d, 2);
		emu_write_cr(cpu, 0, (cpu->cr0 & ~0xeull) | (v & 0xf));
		break;
	}
	case 7:            /* INVLPG */
		emu_need_cpl0(d);
		emu_invlpg(cpu, emu_linear(cpu, d->mseg, emu_ea(d), 1, false));
		break;
	default:
		emu_ud(d);
	}
	emu_insn_retire(d);
}

/* BT/BTS/BTR/BTC with a register bit offset (0F A3/AB/B3/BB) or an immediate (0F BA /4-7). */
static void exec_bt(struct emu_insn *d, unsigned op, bool imm)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = d->opsize, bits = size * 8, bit;
	uint64_t a, r, off;
	int64_t boff;

	emu_lock_check(d, op != 0);
	if (imm) {
		boff = emu_imm8(d);
	} else {
		boff = (int64_t)emu_sext(emu_reg_get(d, d->reg, size), size);
	}
	bit = (unsigned)boff & (bits - 1);
	if (!d->mem) {
		a = emu_reg_get(d, d->rm, size);
		r = emu_bitop(cpu, op, size, a, bit);
		if (op)
			emu_reg_set(d, d->rm, size, r);
		emu_insn_retire(d);
		return;
	}
	if (!imm)    /* memory forms address the bit string beyond the operand (signed offset) */
		d->moff += (uint64_t)((boff >> (size == 2 ? 4 : size == 4 ? 5 : 6)) * (int64_t)size);
	if (d->lock) {
		emu_locked_rmw(d, size, RMW_BTS + (int)op - 1, bit);
		emu_insn_retire(d);
		return;
	}
	off = emu_ea(d);
	a = emu_read(cpu, d->mseg, off, size);
	r = emu_bitop(cpu, op, size, a, bit);
	if (op)
		emu_write(cpu, d->mseg, off, size, r);
	emu_insn_retire(d);
}

static void exec_cmpxchg(struct emu_insn *d, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = (op & 1) ? d->opsize : 1;
	uint64_t acc = emu_reg_get(d, R_AX, size), src, cur;

	emu_modrm(d);
	emu_lock_check(d, true);
	src = emu_reg_get(d, d->reg, size);
	if (d->lock) {
		void *p = emu_atomic_ptr(cpu, d->mseg, emu_ea(d), size);

		cur = acc;
		switch (size) {
		case 1: { uint8_t e = (uint8_t)acc;
			__atomic_compare_exchange_n((uint8_t *)p, &e, (uint8_t)src, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
			cur = e; break; }
		case 2: { uint16_t e = (uint16_t)acc;
			__atomic_compare_exchange_n((uint16_t *)p, &e, (uint16_t)src, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
			cur = e; break; }
		case 4: { uint32_t e = (uint32_t)acc;
			__atomic_compare_exchange_n((uint32_t *)p, &e, (uint32_t)src, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
			cur = e; break; }
		default:
			__atomic_compare_exchange_n((uint64_t *)p, &cur, src, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
			break;
		}
		emu_alu(cpu, ALU_CMP, size, acc, cur);
	} else {
		cur = emu_rm_read(d, size);
		emu_alu(cpu, ALU_CMP, size, acc, cur);
		/* memory is written either way (the processor writes back the old value on failure); a register
		 * destination is left alone on failure (no zero-extension of a 32-bit one, as measured on an AMD EPYC host) */
		if (cur == acc || d->mem)
			emu_rm_write(d, size, cur == acc ? src : cur);
	}
	if (cur != acc)
		emu_reg_set(d, R_AX, size, cur);
	emu_insn_retire(d);
}

static void exec_cmpxchg8b(struct emu_insn *d)    /* 0F C7 /1 */
{
	struct emu_cpu *cpu = d->cpu;
	uint64_t off;
	bool eq;

	if (!d->mem)
		emu_ud(d);
	off = emu_ea(d);
	if (d->opsize == 8) {    /* CMPXCHG16B */
		uint64_t lo = cpu->gpr[R_AX], hi = cpu->gpr[R_DX];
		uint64_t *p = emu_atomic_ptr(cpu, d->mseg, off, 16);

		if ((uintptr_t)p & 15)
			emu_gp0(d);
		__asm__ volatile("lock cmpxchg16b %[m]\n\tsete %[eq]"
				 : [m] "+m"(*(unsigned __int128 *)p), "+a"(lo), "+d"(hi), [eq] "=q"(eq)
				 : "b"(cpu->gpr[R_BX]), "c"(cpu->gpr[R_CX]) : "cc", "memory");
		emu_flags_set(cpu, EFL_ZF, eq ? EFL_ZF : 0);
		if (!eq) {
			cpu->gpr[R_AX] = lo;
			cpu->gpr[R_DX] = hi;
		}
	} else {
		uint64_t acc = (uint32_t)cpu->gpr[R_AX] | (cpu->gpr[R_DX] << 32), cur = acc;
		uint64_t nv = (uint32_t)cpu->gpr[R_BX] | (cpu->gpr[R_CX] << 32);

		if (d->lock) {
			void *p = emu_atomic_ptr(cpu, d->mseg, off, 8);

			eq = __atomic_compare_exchange_n((uint64_t *)p, &cur, nv, false, __ATOMIC_SEQ_CST,
							 __ATOMIC_SEQ_CST);
		} else {
			cur = emu_read(cpu, d->mseg, off, 8);
			eq = cur == acc;
			emu_write(cpu, d->mseg, off, 8, eq ? nv : cur);
		}
		emu_flags_set(cpu, EFL_ZF, eq ? EFL_ZF : 0);
		if (!eq) {
			cpu->gpr[R_AX] = (uint32_t)cur;
			cpu->gpr[R_DX] = cur >> 32;
		}
	}
	emu_insn_retire(d);
}

static void exec_grp15(struct emu_insn *d)    /* 0F AE */
{
	unsigned sub;

	emu_modrm(d);
	sub = d->reg & 7;
	if (d->rep || d->p66)
		emu_ud(d);
	if (!d->mem) {
		switch (sub) {
		case 5: emu_fence_acquire(); break;    /* LFENCE */
		case 6: emu_fence_full(); break;       /* MFENCE: a full host fence */
		case 7: emu_fence_release(); break;    /* SFENCE */
		default: emu_ud(d);
		}
	} else if (sub == 7) {    /* CLFLUSH: coherent memory, only the access check */
		emu_read(d->cpu, d->mseg, emu_ea(d), 1);
	} else if (sub <= 3) {    /* FXSAVE, FXRSTOR, LDMXCSR, STMXCSR */
		emu_exec_fxsave_group(d, sub);
		return;
	} else {
		emu_ud(d);        /* XSAVE, XRSTOR, XSAVEOPT: no XSAVE */
	}
	emu_insn_retire(d);
}

static uint64_t bswap(uint64_t v, unsigned size)
{
	if (size == 8)
		return __builtin_bswap64(v);
	if (size == 4)
		return __builtin_bswap32((uint32_t)v);
	return 0;    /* BSWAP r16 is undefined: Intel and AMD clear the low word */
}

void emu_exec_0f(struct emu_insn *d)
{
	struct emu_cpu *cpu = d->cpu;
	uint8_t op = emu_imm8(d);
	unsigned size;
	uint64_t v;

	if (d->lock) {
		bool maybe = op == 0xab || op == 0xb3 || op == 0xbb || op == 0xba || op == 0xb0 || op == 0xb1 ||
			     op == 0xc0 || op == 0xc1 || op == 0xc7;
		if (!maybe)
			emu_ud(d);
	}
	if (op >= 0x40 && op < 0x50) {    /* CMOVcc */
		emu_modrm(d);
		v = emu_rm_read(d, d->opsize);    /* read (and fault) whatever the condition */
		if (emu_cond(cpu->rflags, op & 15))
			emu_reg_set(d, d->reg, d->opsize, v);
		else if (d->opsize == 4)
			emu_reg_set(d, d->reg, 4, emu_reg_get(d, d->reg, 4));    /* upper half cleared anyway */
		emu_insn_retire(d);
		return;
	}
	if (op >= 0x80 && op < 0x90) {    /* Jcc rel16/32 */
		unsigned bsize = d->mode64 ? 8 : d->opsize;
		uint64_t rel = emu_immz(d, bsize == 2 ? 2 : 4);

		if (emu_cond(cpu->rflags, op & 15))
			emu_branch(d, emu_next_rip(d) + rel, bsize);
		else
			emu_insn_retire(d);
		return;
	}
	if (op >= 0x90 && op < 0xa0) {    /* SETcc */
		emu_modrm(d);
		emu_rm_write(d, 1, emu_cond(cpu->rflags, op & 15));
		emu_insn_retire(d);
		return;
	}
	if (op >= 0xc8 && op <= 0xcf) {    /* BSWAP */
		unsigned r = (op & 7) | ((d->rex & 1) << 3);

		emu_reg_set(d, r, d->opsize, bswap(emu_reg_get(d, r, d->opsize), d->opsize));
		emu_insn_retire(d);
		return;
	}
	switch (op) {
	case 0x00:
		exec_grp6(d);
		return;
	case 0x01:
		exec_grp7(d);
		return;
	case 0x05:
		cpu->rip = emu_next_rip(d);
		cpu->insns++;
		emu_syscall(cpu);
		return;
	case 0x34:                         /* SYSENTER: emu_sysenter checks mode and MSR, sets RIP */
		if (d->lock)
			emu_ud(d);
		emu_sysenter(cpu);
		cpu->insns++;
		return;
	case 0x35:                         /* SYSEXIT (REX.W: to 64-bit): emu_sysexit checks CPL 0 */
		if (d->lock)
			emu_ud(d);
		emu_sysexit(cpu, (d->rex & 8) ? 8 : 4);
		cpu->insns++;
		return;
	case 0x06:
		emu_need_cpl0(d);
		emu_write_cr(cpu, 0, cpu->cr0 & ~CR0_TS);
		emu_insn_retire(d);
		return;
	case 0x07:                         /* SYSRET: emu_sysret checks EFER.SCE, mode and CPL */
		emu_insn_retire(d);
		emu_sysret(cpu, (d->rex & 8) ? 8 : 4);
		return;
	case 0x08: case 0x09:              /* INVD / WBINVD: coherent host memory */
		emu_need_cpl0(d);
		emu_insn_retire(d);
		return;
	case 0x0d: case 0x18: case 0x19: case 0x1a: case 0x1b: case 0x1c: case 0x1d: case 0x1e: case 0x1f:
		emu_modrm(d);              /* PREFETCH*, hint NOPs, NOPL (no memory access) */
		emu_insn_retire(d);
		return;
	case 0x20: case 0x21: case 0x22: case 0x23: {
		unsigned n;

		emu_modrm(d);              /* always a register operand, whatever mod says */
		d->rm = (d->rm & 7) | ((d->rex & 1) << 3);
		n = d->reg;
		emu_need_cpl0(d);
		size = d->mode64 ? 8 : 4;
		if (op == 0x20 || op == 0x22) {
			if (n != 0 && n != 2 && n != 3 && n != 4 && n != 8)
				emu_ud(d);
		} else if (n > 7) {
			emu_ud(d);
		}
		switch (op) {
		case 0x20: v = emu_read_cr(cpu, (int)n); emu_reg_set(d, d->rm, size, v); break;
		case 0x21: v = emu_read_dr(cpu, (int)n); emu_reg_set(d, d->rm, size, v); break;
		case 0x22: emu_write_cr(cpu, (int)n, emu_reg_get(d, d->rm, size)); break;
		default: emu_write_dr(cpu, (int)n, emu_reg_get(d, d->rm, size)); break;
		}
		emu_insn_retire(d);
		return;
	}
	case 0x30:                         /* WRMSR: retires, emu_wrmsr may exit after */
		emu_need_cpl0(d);
		emu_insn_retire(d);
		emu_wrmsr(cpu, (uint32_t)cpu->gpr[R_CX], (uint32_t)cpu->gpr[R_AX] | (cpu->gpr[R_DX] << 32));
		return;
	case 0x31:
		if ((cpu->cr4 & CR4_TSD) && emu_cpl(cpu) != 0)
			emu_gp0(d);
		v = emu_rdtsc(cpu);
		cpu->gpr[R_AX] = (uint32_t)v;
		cpu->gpr[R_DX] = v >> 32;
		emu_insn_retire(d);
		return;
	case 0x32:
		emu_need_cpl0(d);
		v = emu_rdmsr(cpu, (uint32_t)cpu->gpr[R_CX]);
		cpu->gpr[R_AX] = (uint32_t)v;
		cpu->gpr[R_DX] = v >> 32;
		emu_insn_retire(d);
		return;
	case 0xa0: case 0xa8:
		size = d->mode64 ? (d->p66 ? 2 : 8) : d->opsize;
		emu_exec_push(d, cpu->seg[op == 0xa0 ? SEG_FS : SEG_GS].selector, size);
		emu_insn_retire(d);
		return;
	case 0xa1: case 0xa9: {
		int sr = op == 0xa1 ? SEG_FS : SEG_GS;
		uint64_t sp = cpu->gpr[R_SP] & emu_sp_mask(d);
		uint64_t m = emu_sp_mask(d);

		size = d->mode64 ? (d->p66 ? 2 : 8) : d->opsize;
		emu_load_seg(cpu, sr, (uint16_t)emu_read(cpu, SEG_SS, sp, 2));
		cpu->gpr[R_SP] = (cpu->gpr[R_SP] & ~m) | ((sp + size) & m);
		emu_insn_retire(d);
		return;
	}
	case 0xa2:
		emu_cpuid(cpu);
		emu_insn_retire(d);
		return;
	case 0xa3: case 0xab: case 0xb3: case 0xbb:
		emu_modrm(d);
		exec_bt(d, op == 0xa3 ? 0 : op == 0xab ? 1 : op == 0xb3 ? 2 : 3, false);
		return;
	case 0xba:
		emu_modrm(d);
		if ((d->reg & 7) < 4)
			emu_ud(d);
		exec_bt(d, (d->reg & 7) - 4, true);
		return;
	case 0xa4: case 0xa5: case 0xac: case 0xad: {
		uint8_t count;

		emu_modrm(d);
		count = (op & 1) ? (uint8_t)cpu->gpr[R_CX] : emu_imm8(d);
		v = emu_rm_read(d, d->opsize);
		v = emu_shxd(cpu, op >= 0xac, d->opsize, v, emu_reg_get(d, d->reg, d->opsize), count);
		if ((count & (d->opsize == 8 ? 0x3f : 0x1f)) || (!d->mem && d->opsize == 4))
			emu_rm_write(d, d->opsize, v);
		emu_insn_retire(d);
		return;
	}
	case 0xae:
		exec_grp15(d);
		return;
	case 0xaf:
		emu_modrm(d);
		v = emu_rm_read(d, d->opsize);
		emu_reg_set(d, d->reg, d->opsize, emu_imul2(cpu, d->opsize, emu_reg_get(d, d->reg, d->opsize), v));
		emu_insn_retire(d);
		return;
	case 0xb0: case 0xb1:
		exec_cmpxchg(d, op);
		return;
	case 0xb2: case 0xb4: case 0xb5:
		emu_modrm(d);
		emu_load_far_pointer(d, op == 0xb2 ? SEG_SS : op == 0xb4 ? SEG_FS : SEG_GS);
		return;
	case 0xb6: case 0xb7: case 0xbe: case 0xbf:
		emu_modrm(d);
		size = (op & 1) ? 2 : 1;
		v = emu_rm_read(d, size);
		if (op >= 0xbe)
			v = emu_sext(v, size);
		emu_reg_set(d, d->reg, d->opsize, v);
		emu_insn_retire(d);
		return;
	case 0xb8:                         /* F3: POPCNT */
		if (d->rep != 0xf3)
			emu_ud(d);
		emu_modrm(d);
		v = emu_rm_read(d, d->opsize);
		emu_flags_set(cpu, EFL_ARITH, v ? 0 : EFL_ZF);
		emu_reg_set(d, d->reg, d->opsize, (uint64_t)__builtin_popcountll(v));
		emu_insn_retire(d);
		return;
	case 0xbc: case 0xbd:
		emu_modrm(d);
		v = emu_rm_read(d, d->opsize);
		if (op == 0xbd && d->rep == 0xf3) {    /* LZCNT */
			unsigned bits = d->opsize * 8, n = v ? (unsigned)__builtin_clzll(v) - (64 - bits) : bits;

			/* OF/SF/AF/PF are undefined: SF/AF/PF cleared and OF kept, as measured on an AMD EPYC host */
			emu_flags_set(cpu, EFL_ARITH & ~EFL_OF, (v ? 0 : EFL_CF) | (n ? 0 : EFL_ZF));
			emu_reg_set(d, d->reg, d->opsize, n);
		} else {
			emu_reg_set(d, d->reg, d->opsize,
				    emu_bsfr(cpu, op == 0xbd, d->opsize, emu_reg_get(d, d->reg, d->opsize), v));
		}
		emu_insn_retire(d);
		return;
	case 0xc0: case 0xc1: {            /* XADD */
		uint64_t a, src;

		size = (op & 1) ? d->opsize : 1;
		emu_modrm(d);
		emu_lock_check(d, true);
		src = emu_reg_get(d, d->reg, size);
		if (d->lock) {
			emu_locked_rmw(d, size, RMW_XADD, src);
		} else if (d->mem) {
			a = emu_rm_read(d, size);
			emu_rm_write(d, size, emu_alu(cpu, ALU_ADD, size, a, src));
			emu_reg_set(d, d->reg, size, a);
		} else {
			a = emu_reg_get(d, d->rm, size);
			v = emu_alu(cpu, ALU_ADD, size, a, src);
			emu_reg_set(d, d->reg, size, a);
			emu_reg_set(d, d->rm, size, v);
		}
		emu_insn_retire(d);
		return;
	}
	case 0xc7:
		emu_modrm(d);
		if ((d->reg & 7) != 1)
			emu_ud(d);    /* RDRAND/RDSEED/RDPID...: not advertised */
		exec_cmpxchg8b(d);
		return;
	case 0x10 ... 0x17: case 0x28 ... 0x2f: case 0x50 ... 0x76: case 0x7e: case 0x7f:
	case 0xc2 ... 0xc6: case 0xd1 ... 0xfe:
		emu_exec_sse(d, op);    /* SSE/SSE2 (emu_exec_fpu.c; what it does not know is #UD there) */
		return;
	default:
		emu_ud(d);    /* 0B UD2, B9 UD1, FF UD0, 77 EMMS (no MMX), SSE3+/AVX, 0F 38/3A maps, ... */
	}
}
