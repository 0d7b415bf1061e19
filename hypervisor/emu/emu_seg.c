/* SPDX-License-Identifier: MIT */
/*
 * emu: descriptor loads, stacks, far JMP/CALL/RET (direct and through call gates) and IRET (SDM vol. 3 ch. 5-6;
 * the file map is at the top of emu_sys.c). Checks come before any state changes, as everywhere in emu.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hypervisor/emu/emu.h"
#include "hypervisor/emu/emu_sys_internal.h"

/* ---- descriptors ---- */

void sys_seg_from_desc(struct kvm_segment *s, uint16_t sel, uint64_t d)
{
	uint32_t lim = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000));

	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->base = ((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000);
	s->g = (d >> 55) & 1;
	s->limit = s->g ? (lim << 12) | 0xfff : lim;
	s->type = (d >> 40) & 0xf;
	s->s = (d >> 44) & 1;
	s->dpl = (d >> 45) & 3;
	s->present = (d >> 47) & 1;
	s->avl = (d >> 52) & 1;
	s->l = (d >> 53) & 1;
	s->db = (d >> 54) & 1;
}

void sys_seg_null(struct kvm_segment *s, uint16_t sel)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->unusable = 1;
}

void sys_seg_real(struct kvm_segment *s, uint16_t sel)
{
	s->selector = sel;
	s->base = (uint64_t)sel << 4;
}

/* Read the 8-byte descriptor of `sel` from the GDT or LDT; #GP(sel) beyond the table's limit. *addr: its linear
 * address. `hi`: also read the upper 8 bytes (system descriptors in long mode). */
uint64_t sys_desc_read(struct emu_cpu *cpu, uint16_t sel, int vec, uint64_t *addr, uint64_t *hi)
{
	uint64_t base, limit;
	uint64_t off = sel & 0xfff8;

	if (sel & 4) {
		if (cpu->ldt.unusable || !cpu->ldt.present)
			sys_raise_sel(cpu, vec, sel);
		base = cpu->ldt.base;
		limit = cpu->ldt.limit;
	} else {
		base = cpu->gdt.base;
		limit = cpu->gdt.limit;
	}
	if (off + (hi ? 15 : 7) > limit)
		sys_raise_sel(cpu, vec, sel);
	if (!(cpu->efer & EFER_LMA))
		base &= 0xffffffffull;
	*addr = base + off;
	if (hi)
		*hi = emu_read_linear(cpu, base + off + 8, 8, true);
	return emu_read_linear(cpu, base + off, 8, true);
}

void sys_desc_set_accessed(struct emu_cpu *cpu, uint64_t addr, uint64_t d)
{
	if (!(d & (1ull << 40)))
		emu_write_linear(cpu, addr + 5, 1, ((d >> 40) | 1) & 0xff, true);
}

bool sys_seg_is_code(const struct kvm_segment *s)
{
	return s->s && (s->type & 8);
}

void emu_load_seg(struct emu_cpu *cpu, int segno, uint16_t sel)
{
	struct kvm_segment *s = &cpu->seg[segno];
	struct kvm_segment ns;
	uint64_t addr, d;
	unsigned rpl = sel & 3;

	if (segno == SEG_CS || segno > SEG_GS)
		emu_raise(cpu, EXC_UD, -1);
	if (cpu->mode == EMU_REAL) {
		sys_seg_real(s, sel);
		if (cpu->rflags & EFL_VM) {
			s->limit = 0xffff;
			s->type = segno == SEG_CS ? 0xb : 3;
			s->s = 1;
			s->present = 1;
			s->dpl = 3;
			s->unusable = 0;
		}
		goto out;
	}
	if (!(sel & 0xfffc)) {
		if (segno == SEG_SS && !(cpu->mode == EMU_LONG64 && cpu->cpl != 3 && rpl == cpu->cpl))
			emu_raise(cpu, EXC_GP, 0);
		sys_seg_null(s, sel);
		if (segno == SEG_SS) {
			s->dpl = (uint8_t)cpu->cpl;
			s->db = 1;
		}
		goto out;
	}
	d = sys_desc_read(cpu, sel, EXC_GP, &addr, NULL);
	sys_seg_from_desc(&ns, sel, d);
	if (!ns.s)
		sys_raise_sel(cpu, EXC_GP, sel);
	if (segno == SEG_SS) {
		if (rpl != cpu->cpl || ns.dpl != cpu->cpl || (ns.type & 8) || !(ns.type & 2))
			sys_raise_sel(cpu, EXC_GP, sel);
		if (!ns.present)
			sys_raise_sel(cpu, EXC_SS, sel);
	} else {
		if ((ns.type & 0xa) == 8)
			sys_raise_sel(cpu, EXC_GP, sel);    /* execute-only code */
		if ((!(ns.type & 8) || !(ns.type & 4)) && (rpl > ns.dpl || cpu->cpl > ns.dpl))
			sys_raise_sel(cpu, EXC_GP, sel);
		if (!ns.present)
			sys_raise_sel(cpu, EXC_NP, sel);
	}
	sys_desc_set_accessed(cpu, addr, d);
	ns.type |= 1;
	*s = ns;
out:
	if (segno == SEG_SS)
		cpu->irq_shadow = true;
}

/* Check a code segment as the target of a far JMP/CALL (no gates); raises. */
static void code_check_direct(struct emu_cpu *cpu, uint16_t sel, const struct kvm_segment *ns)
{
	if (!sys_seg_is_code(ns))
		sys_raise_sel(cpu, EXC_GP, sel);
	if (ns->type & 4) {
		if (ns->dpl > cpu->cpl)
			sys_raise_sel(cpu, EXC_GP, sel);
	} else if ((sel & 3) > cpu->cpl || ns->dpl != cpu->cpl) {
		sys_raise_sel(cpu, EXC_GP, sel);
	}
	if (!ns->present)
		sys_raise_sel(cpu, EXC_NP, sel);
	if ((cpu->efer & EFER_LMA) && ns->l && ns->db)
		sys_raise_sel(cpu, EXC_GP, sel);
}

bool sys_canonical(uint64_t a)
{
	return (uint64_t)((int64_t)(a << 16) >> 16) == a;
}

/* #GP(0) unless `rip` is valid in code segment `cs` (canonical for a 64-bit segment, else within its limit). */
void sys_rip_check(struct emu_cpu *cpu, const struct kvm_segment *cs, uint64_t rip)
{
	if ((cpu->efer & EFER_LMA) && cs->l) {
		if (!sys_canonical(rip))
			emu_raise(cpu, EXC_GP, 0);
	} else if (rip > cs->limit) {
		emu_raise(cpu, EXC_GP, 0);
	}
}

void sys_cs_commit(struct emu_cpu *cpu, const struct kvm_segment *ns, unsigned cpl)
{
	cpu->seg[SEG_CS] = *ns;
	cpu->seg[SEG_CS].selector = (uint16_t)((ns->selector & ~3u) | cpl);
	cpu->seg[SEG_CS].type |= 1;
	cpu->cpl = cpl;
	emu_update_mode(cpu);
}

/* Check `sel` as the stack segment for privilege level `cpl`; fills *out. Null is allowed when `null_ok`. */
void sys_ss_check(struct emu_cpu *cpu, uint16_t sel, unsigned cpl, bool null_ok, int vec_bad,
		     struct kvm_segment *out, uint64_t *addr, uint64_t *d)
{
	*d = 0;
	if (!(sel & 0xfffc)) {
		if (!null_ok)
			sys_raise_sel(cpu, vec_bad, vec_bad == EXC_TS ? 0 : sel);
		sys_seg_null(out, sel);
		out->dpl = (uint8_t)cpl;
		out->db = 1;
		return;
	}
	*d = sys_desc_read(cpu, sel, vec_bad, addr, NULL);
	sys_seg_from_desc(out, sel, *d);
	if ((sel & 3) != cpl || out->dpl != cpl || !out->s || (out->type & 8) || !(out->type & 2))
		sys_raise_sel(cpu, vec_bad, sel);
	if (!out->present)
		sys_raise_sel(cpu, EXC_SS, sel);
	out->type |= 1;
}

/* Data segment registers whose DPL is below the new CPL become null (return to an outer level). */
static void segs_drop_privileged(struct emu_cpu *cpu, unsigned cpl)
{
	static const int regs[] = { SEG_ES, SEG_DS, SEG_FS, SEG_GS };

	for (unsigned i = 0; i < 4; i++) {
		struct kvm_segment *s = &cpu->seg[regs[i]];
		bool conforming_code = s->s && (s->type & 0xc) == 0xc;
		if (!s->unusable && !conforming_code && s->dpl < cpl) {
			uint64_t base = s->base;
			sys_seg_null(s, 0);
			if (regs[i] == SEG_FS || regs[i] == SEG_GS)
				s->base = base;
		}
	}
}

/* ---- stack ---- */

unsigned emu_stack_size(const struct emu_cpu *cpu)
{
	if (cpu->mode == EMU_LONG64)
		return 8;
	return cpu->seg[SEG_SS].db ? 4 : 2;
}

uint64_t sys_stack_mask(unsigned ssize)
{
	return ssize == 8 ? ~0ull : ssize == 4 ? 0xffffffffull : 0xffffull;
}

uint64_t sys_sp_commit(uint64_t old, uint64_t new, unsigned ssize)
{
	uint64_t m = sys_stack_mask(ssize);
	return (old & ~m) | (new & m);
}

void emu_push(struct emu_cpu *cpu, uint64_t val, unsigned size)
{
	unsigned ss = emu_stack_size(cpu);
	uint64_t sp = (cpu->gpr[R_SP] - size) & sys_stack_mask(ss);

	emu_write(cpu, SEG_SS, sp, size, val);
	cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], sp, ss);
}

uint64_t emu_pop(struct emu_cpu *cpu, unsigned size)
{
	unsigned ss = emu_stack_size(cpu);
	uint64_t sp = cpu->gpr[R_SP] & sys_stack_mask(ss);
	uint64_t v = emu_read(cpu, SEG_SS, sp, size);

	cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], sp + size, ss);
	return v;
}

/* Stack accesses at an explicit stack pointer, committed by the caller. */
static uint64_t stk_read(struct emu_cpu *cpu, uint64_t sp, unsigned size)
{
	return emu_read(cpu, SEG_SS, sp & sys_stack_mask(emu_stack_size(cpu)), size);
}

void sys_stk_push(struct emu_cpu *cpu, uint64_t *sp, unsigned size, uint64_t val)
{
	*sp = (*sp - size) & sys_stack_mask(emu_stack_size(cpu));
	emu_write(cpu, SEG_SS, *sp, size, val);
}

/* ---- far transfers ---- */


/* Far JMP/CALL through a call gate (16/32-bit gates outside long mode, 64-bit gates in it): CALL to a more
 * privileged non-conforming segment switches to the TSS stack of that level (copying the 32/16-bit gate's
 * parameters); JMP never changes privilege. */
static void via_call_gate(struct emu_cpu *cpu, uint16_t gsel, uint64_t glo, bool call)
{
	bool lm = cpu->efer & EFER_LMA;
	unsigned gtype = (glo >> 40) & 0xf, gdpl = (glo >> 45) & 3;
	uint64_t ghi = 0, gaddr;

	if (lm) {
		if (gtype != 0xc)
			sys_raise_sel(cpu, EXC_GP, gsel);
		glo = sys_desc_read(cpu, gsel, EXC_GP, &gaddr, &ghi);
		if ((ghi >> 40) & 0x1f)
			sys_raise_sel(cpu, EXC_GP, gsel);
	} else if (gtype != 0xc && gtype != 0x4) {
		sys_raise_sel(cpu, EXC_GP, gsel);   /* TSS, task gate, LDT, interrupt gates */
	}
	if (gdpl < cpu->cpl || gdpl < (gsel & 3u))
		sys_raise_sel(cpu, EXC_GP, gsel);
	if (!((glo >> 47) & 1))
		sys_raise_sel(cpu, EXC_NP, gsel);
	uint16_t csel = (uint16_t)(glo >> 16);
	uint64_t off = (glo & 0xffff) | ((glo >> 32) & 0xffff0000ull) | (ghi << 32);
	unsigned params = lm ? 0 : (glo >> 32) & 0x1f;
	unsigned psize = lm ? 8 : gtype == 0xc ? 4 : 2;
	if (gtype == 4)
		off &= 0xffff;
	if (!(csel & 0xfffc))
		emu_raise(cpu, EXC_GP, 0);
	struct kvm_segment ns;
	uint64_t caddr, cd = sys_desc_read(cpu, csel, EXC_GP, &caddr, NULL);
	sys_seg_from_desc(&ns, csel, cd);
	if (!sys_seg_is_code(&ns) || ns.dpl > cpu->cpl || (lm && (!ns.l || ns.db)))
		sys_raise_sel(cpu, EXC_GP, csel);
	if (!ns.present)
		sys_raise_sel(cpu, EXC_NP, csel);
	bool conforming = ns.type & 4;
	sys_rip_check(cpu, &ns, off);
	if (!call) {
		if (!conforming && ns.dpl != cpu->cpl)
			sys_raise_sel(cpu, EXC_GP, csel);
		sys_desc_set_accessed(cpu, caddr, cd);
		sys_cs_commit(cpu, &ns, cpu->cpl);
		cpu->rip = off;
		return;
	}
	if (conforming || ns.dpl == cpu->cpl) {
		uint64_t sp = cpu->gpr[R_SP];
		unsigned ssz = emu_stack_size(cpu);
		sys_stk_push(cpu, &sp, psize, cpu->seg[SEG_CS].selector);
		sys_stk_push(cpu, &sp, psize, cpu->rip);
		sys_desc_set_accessed(cpu, caddr, cd);
		cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], sp, ssz);
		sys_cs_commit(cpu, &ns, cpu->cpl);
		cpu->rip = off;
		return;
	}
	/* more privilege: stack of level ns.dpl from the TSS */
	unsigned ncpl = ns.dpl, nssz;
	struct kvm_segment nss;
	uint64_t nsp, ssaddr = 0, ssd = 0;
	if (lm) {
		nsp = sys_tss_read(cpu, 4 + 8 * ncpl, 8);
		sys_seg_null(&nss, (uint16_t)ncpl);
		nss.dpl = (uint8_t)ncpl;
		nss.db = 1;
		nssz = 8;
	} else {
		uint16_t ssel;
		if (cpu->tr.type & 8) {
			nsp = sys_tss_read(cpu, 4 + 8 * ncpl, 4);
			ssel = (uint16_t)sys_tss_read(cpu, 8 + 8 * ncpl, 2);
		} else {
			nsp = sys_tss_read(cpu, 2 + 4 * ncpl, 2);
			ssel = (uint16_t)sys_tss_read(cpu, 4 + 4 * ncpl, 2);
		}
		sys_ss_check(cpu, ssel, ncpl, false, EXC_TS, &nss, &ssaddr, &ssd);
		nssz = nss.db ? 4 : 2;
	}
	uint64_t osp = cpu->gpr[R_SP];
	sys_new_stack_push(cpu, &nss, &nsp, nssz, psize, cpu->seg[SEG_SS].selector, ncpl);
	sys_new_stack_push(cpu, &nss, &nsp, nssz, psize, osp, ncpl);
	for (unsigned i = params; i-- > 0;)
		sys_new_stack_push(cpu, &nss, &nsp, nssz, psize, stk_read(cpu, osp + i * psize, psize), ncpl);
	sys_new_stack_push(cpu, &nss, &nsp, nssz, psize, cpu->seg[SEG_CS].selector, ncpl);
	sys_new_stack_push(cpu, &nss, &nsp, nssz, psize, cpu->rip, ncpl);
	sys_desc_set_accessed(cpu, caddr, cd);
	if (ssd)
		sys_desc_set_accessed(cpu, ssaddr, ssd);
	sys_cs_commit(cpu, &ns, ncpl);
	cpu->seg[SEG_SS] = nss;
	cpu->gpr[R_SP] = nssz == 8 ? nsp : sys_sp_commit(osp, nsp, nssz);
	emu_update_mode(cpu);
	cpu->rip = off;
}

/* Protected/long-mode far JMP or CALL to sel:off. Through a call gate the transfer is done here (false); to a code
 * segment, *ns and its descriptor (*addr, *d) are returned checked for the caller to commit (true). */
static bool far_direct_target(struct emu_cpu *cpu, uint16_t sel, uint64_t off, bool call, struct kvm_segment *ns,
			      uint64_t *addr, uint64_t *d)
{
	if (!(sel & 0xfffc))
		emu_raise(cpu, EXC_GP, 0);
	*d = sys_desc_read(cpu, sel, EXC_GP, addr, NULL);
	if (!((*d >> 44) & 1)) {
		via_call_gate(cpu, sel, *d, call);
		return false;
	}
	sys_seg_from_desc(ns, sel, *d);
	code_check_direct(cpu, sel, ns);
	sys_rip_check(cpu, ns, off);
	return true;
}

void emu_far_jmp(struct emu_cpu *cpu, uint16_t sel, uint64_t off)
{
	struct kvm_segment ns;
	uint64_t addr, d;

	if (cpu->mode == EMU_REAL) {
		sys_seg_real(&cpu->seg[SEG_CS], sel);
		cpu->rip = off;
		return;
	}
	if (!far_direct_target(cpu, sel, off, false, &ns, &addr, &d))
		return;
	sys_desc_set_accessed(cpu, addr, d);
	sys_cs_commit(cpu, &ns, cpu->cpl);
	cpu->rip = off;
}

void emu_far_call(struct emu_cpu *cpu, uint16_t sel, uint64_t off, unsigned opsize)
{
	struct kvm_segment ns;
	uint64_t addr, d, sp = cpu->gpr[R_SP];

	if (cpu->mode == EMU_REAL) {
		sys_stk_push(cpu, &sp, opsize, cpu->seg[SEG_CS].selector);
		sys_stk_push(cpu, &sp, opsize, cpu->rip);
		cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], sp, emu_stack_size(cpu));
		sys_seg_real(&cpu->seg[SEG_CS], sel);
		cpu->rip = off;
		return;
	}
	if (!far_direct_target(cpu, sel, off, true, &ns, &addr, &d))
		return;
	unsigned ssz = emu_stack_size(cpu);
	sys_stk_push(cpu, &sp, opsize, cpu->seg[SEG_CS].selector);
	sys_stk_push(cpu, &sp, opsize, cpu->rip);
	sys_desc_set_accessed(cpu, addr, d);
	cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], sp, ssz);
	sys_cs_commit(cpu, &ns, cpu->cpl);
	cpu->rip = off;
}

/* Shared tail of far RET and IRET in protected/long mode: validate the return CS. */
static void ret_cs_check(struct emu_cpu *cpu, uint16_t sel, struct kvm_segment *ns, uint64_t *addr, uint64_t *d)
{
	if (!(sel & 0xfffc))
		emu_raise(cpu, EXC_GP, 0);
	*d = sys_desc_read(cpu, sel, EXC_GP, addr, NULL);
	sys_seg_from_desc(ns, sel, *d);
	unsigned rpl = sel & 3;
	if (!sys_seg_is_code(ns) || rpl < cpu->cpl)
		sys_raise_sel(cpu, EXC_GP, sel);
	if ((ns->type & 4) ? ns->dpl > rpl : ns->dpl != rpl)
		sys_raise_sel(cpu, EXC_GP, sel);
	if (!ns->present)
		sys_raise_sel(cpu, EXC_NP, sel);
	if ((cpu->efer & EFER_LMA) && ns->l && ns->db)
		sys_raise_sel(cpu, EXC_GP, sel);
}

void emu_far_ret(struct emu_cpu *cpu, unsigned opsize, uint16_t imm)
{
	unsigned ssz = emu_stack_size(cpu);
	uint64_t sp = cpu->gpr[R_SP];
	uint64_t rip = stk_read(cpu, sp, opsize);
	uint16_t sel = (uint16_t)stk_read(cpu, sp + opsize, opsize);
	struct kvm_segment ns, nss;
	uint64_t addr, d, ssaddr = 0, ssd = 0;

	if (cpu->mode == EMU_REAL) {
		cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], sp + 2 * opsize + imm, ssz);
		sys_seg_real(&cpu->seg[SEG_CS], sel);
		cpu->rip = rip;
		return;
	}
	ret_cs_check(cpu, sel, &ns, &addr, &d);
	unsigned rpl = sel & 3;
	sys_rip_check(cpu, &ns, rip);
	if (rpl == cpu->cpl) {
		sys_desc_set_accessed(cpu, addr, d);
		cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], sp + 2 * opsize + imm, ssz);
		sys_cs_commit(cpu, &ns, rpl);
		cpu->rip = rip;
		return;
	}
	uint64_t nsp = stk_read(cpu, sp + 2 * opsize + imm, opsize);
	uint16_t ssel = (uint16_t)stk_read(cpu, sp + 3 * opsize + imm, opsize);
	bool null_ok = (cpu->efer & EFER_LMA) && ns.l && rpl != 3;
	sys_ss_check(cpu, ssel, rpl, null_ok, EXC_GP, &nss, &ssaddr, &ssd);
	sys_desc_set_accessed(cpu, addr, d);
	if (ssd)
		sys_desc_set_accessed(cpu, ssaddr, ssd);
	sys_cs_commit(cpu, &ns, rpl);
	cpu->seg[SEG_SS] = nss;
	ssz = emu_stack_size(cpu);
	cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], nsp + imm, ssz);
	segs_drop_privileged(cpu, rpl);
	emu_update_mode(cpu);
	cpu->rip = rip;
}

/* RFLAGS written by IRET/POPF-like returns at the current CPL and IOPL. */
static uint64_t flags_merge(const struct emu_cpu *cpu, uint64_t old, uint64_t new, unsigned opsize)
{
	uint64_t mask = EFL_CF | EFL_PF | EFL_AF | EFL_ZF | EFL_SF | EFL_TF | EFL_DF | EFL_OF | EFL_NT;
	unsigned iopl = (old & EFL_IOPL) >> 12;

	if (opsize >= 4)
		mask |= EFL_RF | EFL_AC | EFL_ID | (3u << 19); /* VIF, VIP */
	if (cpu->mode == EMU_REAL || cpu->cpl <= iopl)
		mask |= EFL_IF;
	if (cpu->mode == EMU_REAL || cpu->cpl == 0)
		mask |= EFL_IOPL;
	if (opsize == 2)
		mask &= 0xffff;
	return ((old & ~mask) | (new & mask) | 2) & ~(uint64_t)EFL_VM;
}

void emu_iret(struct emu_cpu *cpu, unsigned opsize)
{
	unsigned ssz = emu_stack_size(cpu);
	uint64_t sp = cpu->gpr[R_SP];
	struct kvm_segment ns, nss;
	uint64_t addr, d, ssaddr = 0, ssd = 0;

	if (cpu->rflags & EFL_VM)
		emu_exit_error(cpu, "IRET in virtual-8086 mode is not supported");
	uint64_t rip = stk_read(cpu, sp, opsize);
	uint16_t sel = (uint16_t)stk_read(cpu, sp + opsize, opsize);
	uint64_t fl = stk_read(cpu, sp + 2 * opsize, opsize);

	if (cpu->mode == EMU_REAL) {
		cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], sp + 3 * opsize, ssz);
		sys_seg_real(&cpu->seg[SEG_CS], sel);
		cpu->rip = rip;
		cpu->rflags = flags_merge(cpu, cpu->rflags, fl, opsize);
		cpu->nmi_blocked = false;
		return;
	}
	if (cpu->rflags & EFL_NT)
		emu_raise(cpu, EXC_GP, 0);  /* task return: no hardware task switching */
	if (!(cpu->efer & EFER_LMA) && (fl & EFL_VM) && cpu->cpl == 0)
		emu_exit_error(cpu, "IRET to virtual-8086 mode is not supported");
	ret_cs_check(cpu, sel, &ns, &addr, &d);
	unsigned rpl = sel & 3;
	bool pop_ss = rpl > cpu->cpl || cpu->mode == EMU_LONG64;
	uint64_t nsp = sp + 3 * opsize;
	sys_rip_check(cpu, &ns, rip);
	if (pop_ss) {
		nsp = stk_read(cpu, sp + 3 * opsize, opsize);
		uint16_t ssel = (uint16_t)stk_read(cpu, sp + 4 * opsize, opsize);
		bool null_ok = (cpu->efer & EFER_LMA) && ns.l && rpl != 3;
		sys_ss_check(cpu, ssel, rpl, null_ok, EXC_GP, &nss, &ssaddr, &ssd);
	}
	uint64_t nfl = flags_merge(cpu, cpu->rflags, fl, opsize);
	sys_desc_set_accessed(cpu, addr, d);
	if (ssd)
		sys_desc_set_accessed(cpu, ssaddr, ssd);
	unsigned old_cpl = cpu->cpl;
	cpu->rflags = nfl;
	cpu->rf_loaded = (nfl & EFL_RF) != 0;
	sys_cs_commit(cpu, &ns, rpl);
	if (pop_ss) {
		cpu->seg[SEG_SS] = nss;
		ssz = emu_stack_size(cpu);
		cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], nsp, ssz);
	} else {
		cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], nsp, ssz);
	}
	if (rpl > old_cpl)
		segs_drop_privileged(cpu, rpl);
	emu_update_mode(cpu);
	cpu->rip = rip;
	cpu->nmi_blocked = false;
}
