/* SPDX-License-Identifier: MIT */
/*
 * emu: exception and interrupt delivery — real-mode IVT, 16/32-bit IDT gates with the TSS stack switch, 64-bit
 * IDT with RSP0..2 and IST — and INT n/INT3/INTO (SDM vol. 3 ch. 6; the file map is at the top of emu_sys.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hypervisor/emu/emu.h"
#include "hypervisor/emu/emu_sys_internal.h"

/* ---- exception and interrupt delivery ---- */

static bool vector_has_error(int v)
{
	return v == EXC_DF || (v >= EXC_TS && v <= EXC_PF) || v == EXC_AC || v == 21 || v == 29 || v == 30;
}

uint64_t sys_tss_read(struct emu_cpu *cpu, unsigned off, unsigned size)
{
	if (cpu->tr.unusable || !cpu->tr.present || off + size - 1 > cpu->tr.limit)
		sys_raise_sel(cpu, EXC_TS, cpu->tr.selector);
	return emu_read_linear(cpu, cpu->tr.base + off, size, true);
}

/* Fault-class exceptions (SDM vol. 3, table 6-1); #DB counts as a trap here (emu has no instruction breakpoints). */
static bool vector_is_fault(int v)
{
	switch (v) {
	case EXC_DE: case EXC_BR: case EXC_UD: case EXC_NM: case EXC_TS: case EXC_NP: case EXC_SS: case EXC_GP:
	case EXC_PF: case EXC_MF: case EXC_AC: case 19: case 20: case 21:   /* #XM, #VE, #CP */
		return true;
	default:
		return false;
	}
}

static void deliver_real(struct emu_cpu *cpu, int vector, uint64_t ret_rip)
{
	uint64_t ent = (uint64_t)vector * 4;

	if (ent + 3 > cpu->idt.limit)
		emu_raise(cpu, EXC_GP, 0);
	uint32_t v = (uint32_t)emu_read_linear(cpu, (cpu->idt.base + ent) & 0xffffffffull, 4, true);
	uint64_t sp = cpu->gpr[R_SP];
	sys_stk_push(cpu, &sp, 2, cpu->rflags);
	sys_stk_push(cpu, &sp, 2, cpu->seg[SEG_CS].selector);
	sys_stk_push(cpu, &sp, 2, ret_rip);
	cpu->gpr[R_SP] = sys_sp_commit(cpu->gpr[R_SP], sp, emu_stack_size(cpu));
	cpu->rflags &= ~(uint64_t)(EFL_IF | EFL_TF | EFL_AC | EFL_RF);
	sys_seg_real(&cpu->seg[SEG_CS], (uint16_t)(v >> 16));
	cpu->rip = v & 0xffff;
}

/* Write `val` on a stack being built in segment `ss` (not yet loaded) at privilege `cpl`. */
void sys_new_stack_push(struct emu_cpu *cpu, const struct kvm_segment *ss, uint64_t *sp, unsigned ssz,
			   unsigned size, uint64_t val, unsigned cpl)
{
	*sp = (*sp - size) & sys_stack_mask(ssz);
	uint64_t lin = ssz == 8 ? *sp : (ss->base + *sp) & 0xffffffffull;
	if (ssz == 8 && !sys_canonical(lin))
		emu_raise(cpu, EXC_SS, 0);
	emu_write_linear(cpu, lin, size, val, cpl != 3);
}

void emu_deliver(struct emu_cpu *cpu, int vector, int error, uint64_t ret_rip, bool software)
{
	cpu->dlv_ext = !software;
	if (cpu->mode == EMU_REAL) {
		if (cpu->rflags & EFL_VM)
			emu_exit_error(cpu, "interrupt %d in virtual-8086 mode is not supported", vector);
		deliver_real(cpu, vector, ret_rip);
		return;
	}
	bool lm = cpu->efer & EFER_LMA;
	unsigned gsz = lm ? 16 : 8;
	int gate_err = vector * 8 + 2 + (software ? 0 : 1);
	uint64_t idt_base = lm ? cpu->idt.base : cpu->idt.base & 0xffffffffull;

	if ((uint64_t)vector * gsz + gsz - 1 > cpu->idt.limit)
		emu_raise(cpu, EXC_GP, gate_err);
	uint64_t lo = emu_read_linear(cpu, idt_base + (uint64_t)vector * gsz, 8, true);
	uint64_t hi = lm ? emu_read_linear(cpu, idt_base + (uint64_t)vector * gsz + 8, 8, true) : 0;
	unsigned type = (lo >> 40) & 0x1f, gdpl = (lo >> 45) & 3;
	bool ok = lm ? (type == 0xe || type == 0xf) : (type == 6 || type == 7 || type == 0xe || type == 0xf || type == 5);
	if (!ok)
		emu_raise(cpu, EXC_GP, gate_err);
	if (software && gdpl < cpu->cpl)
		emu_raise(cpu, EXC_GP, vector * 8 + 2);
	if (!((lo >> 47) & 1))
		emu_raise(cpu, EXC_NP, gate_err);
	if (type == 5)
		emu_exit_error(cpu, "task gate in IDT vector %d: hardware task switching is not supported", vector);
	bool trap = type & 1;
	unsigned psize = lm ? 8 : (type & 8) ? 4 : 2;
	uint16_t sel = (uint16_t)(lo >> 16);
	uint64_t off = (lo & 0xffff) | ((lo >> 32) & 0xffff0000ull) | (hi << 32);
	unsigned ist = lm ? (lo >> 32) & 7 : 0;

	if (!(sel & 0xfffc))
		emu_raise(cpu, EXC_GP, software ? 0 : 1);
	struct kvm_segment ns, nss;
	uint64_t addr, d = sys_desc_read(cpu, sel, EXC_GP, &addr, NULL);
	sys_seg_from_desc(&ns, sel, d);
	if (!sys_seg_is_code(&ns) || ns.dpl > cpu->cpl)
		sys_raise_sel(cpu, EXC_GP, sel);
	if (!ns.present)
		sys_raise_sel(cpu, EXC_NP, sel);
	if (lm && (!ns.l || ns.db))
		sys_raise_sel(cpu, EXC_GP, sel);
	unsigned ncpl = (ns.type & 4) ? cpu->cpl : ns.dpl;
	bool push_err = vector_has_error(vector) && !software;
	uint32_t err = error < 0 ? 0 : (uint32_t)error;
	uint64_t fl = cpu->rflags;
	uint64_t sp;
	unsigned ssz;

	if (cpu->dlv_fault && vector_is_fault(vector))
		fl |= EFL_RF;           /* the handler's IRET resumes the faulting instruction without re-breaking */

	if (lm) {
		sp = cpu->gpr[R_SP];
		if (ncpl < cpu->cpl)
			sp = sys_tss_read(cpu, 4 + 8 * ncpl, 8);
		if (ist)
			sp = sys_tss_read(cpu, 0x24 + 8 * (ist - 1), 8);
		sp &= ~15ull;
		ssz = 8;
		if (ncpl < cpu->cpl) {
			sys_seg_null(&nss, (uint16_t)ncpl);
			nss.dpl = (uint8_t)ncpl;
			nss.db = 1;
		} else {
			nss = cpu->seg[SEG_SS];
		}
		sys_new_stack_push(cpu, &nss, &sp, 8, 8, cpu->seg[SEG_SS].selector, ncpl);
		sys_new_stack_push(cpu, &nss, &sp, 8, 8, cpu->gpr[R_SP], ncpl);
	} else if (ncpl < cpu->cpl) {
		uint16_t ssel;
		if (cpu->tr.type & 8) {         /* 32-bit TSS */
			sp = sys_tss_read(cpu, 4 + 8 * ncpl, 4);
			ssel = (uint16_t)sys_tss_read(cpu, 8 + 8 * ncpl, 2);
		} else {
			sp = sys_tss_read(cpu, 2 + 4 * ncpl, 2);
			ssel = (uint16_t)sys_tss_read(cpu, 4 + 4 * ncpl, 2);
		}
		uint64_t ssaddr, ssd;
		sys_ss_check(cpu, ssel, ncpl, false, EXC_TS, &nss, &ssaddr, &ssd);
		ssz = nss.db ? 4 : 2;
		sys_new_stack_push(cpu, &nss, &sp, ssz, psize, cpu->seg[SEG_SS].selector, ncpl);
		sys_new_stack_push(cpu, &nss, &sp, ssz, psize, cpu->gpr[R_SP], ncpl);
	} else {
		nss = cpu->seg[SEG_SS];
		ssz = emu_stack_size(cpu);
		sp = cpu->gpr[R_SP];
	}
	sys_new_stack_push(cpu, &nss, &sp, ssz, psize, fl, ncpl);
	sys_new_stack_push(cpu, &nss, &sp, ssz, psize, cpu->seg[SEG_CS].selector, ncpl);
	sys_new_stack_push(cpu, &nss, &sp, ssz, psize, ret_rip, ncpl);
	if (push_err)
		sys_new_stack_push(cpu, &nss, &sp, ssz, psize, err, ncpl);
	if (!lm)
		sys_rip_check(cpu, &ns, off & (psize == 2 ? 0xffff : 0xffffffff));
	else if (!sys_canonical(off))
		emu_raise(cpu, EXC_GP, 0);

	/* commit */
	sys_desc_set_accessed(cpu, addr, d);
	bool stack_switch = ncpl < cpu->cpl;
	uint64_t old_sp = cpu->gpr[R_SP];
	sys_cs_commit(cpu, &ns, ncpl);
	if (stack_switch) {
		cpu->seg[SEG_SS] = nss;
		cpu->gpr[R_SP] = sys_sp_commit(old_sp, sp, ssz == 8 ? 8 : ssz);
	} else {
		cpu->gpr[R_SP] = lm ? sp : sys_sp_commit(old_sp, sp, ssz);
	}
	cpu->rflags &= ~(uint64_t)(EFL_TF | EFL_NT | EFL_RF | EFL_VM);
	if (!trap)
		cpu->rflags &= ~(uint64_t)EFL_IF;
	emu_update_mode(cpu);
	cpu->rip = lm ? off : off & (psize == 2 ? 0xffff : 0xffffffff);
}

void emu_int(struct emu_cpu *cpu, uint8_t vector, bool software, uint64_t next_rip)
{
	cpu->dlv_class = EMU_DLV_BENIGN;
	cpu->dlv_rip = cpu->insn_rip;
	emu_deliver(cpu, vector, -1, next_rip, software);
	cpu->dlv_class = -1;
}
