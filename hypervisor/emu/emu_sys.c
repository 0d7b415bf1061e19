/* SPDX-License-Identifier: MIT */
/*
 * emu: system architecture (Intel SDM vol. 3), in four files by subject: this one — modes and CPL, raising,
 * SYSCALL/SYSRET, SYSENTER/SYSEXIT, HLT and port I/O exits, control and debug registers, descriptor-table loads
 * (LGDT/LIDT/LTR/LLDT), INVLPG; emu_seg.c — descriptor loads, stacks, far transfers (direct and through call
 * gates), IRET; emu_event.c — exception and interrupt delivery (real-mode IVT, 16/32-bit IDT gates with the TSS
 * stack switch, 64-bit IDT with RSP0..2 and IST); emu_msr.c — TSC, MSRs, CPUID. Shared bits and helpers:
 * emu_sys_internal.h.
 *
 * Every function either completes or raises before changing architectural state (checks first, memory writes to
 * the new stack next, registers last), so the run loop can restart a faulting instruction at cpu->insn_rip.
 *
 * MSRs: the emu owns EFER, STAR, LSTAR, CSTAR, SFMASK, FS/GS/KERNEL_GS base, TSC (a write sets a per-vCPU
 * adjustment), TSC_AUX, PAT, SYSENTER_*, MISC_ENABLE, MTRRcap (reads 0: no MTRRs) and the MTRR registers (plain
 * storage). Every other MSR goes to the VMM: RDMSR exits and restarts with the value (msr.error -> #GP(0));
 * WRMSR retires, then exits; msr.error on it makes the next run() deliver #GP(0) at the WRMSR (no register changed).
 *
 * Not supported (each gives #GP or ACCEL_EXIT_ERROR as noted): hardware task switching (task gates, TSS in far
 * JMP/CALL: #GP(sel); IRET with NT: #GP(0)); virtual-8086 mode (IRET to VM=1 and interrupts in VM86:
 * ACCEL_EXIT_ERROR); debug registers (stored, never trigger); TF single-step traps; segment limit checks on stack
 * pushes made by event delivery and call gates (the new stack's limit is not checked).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hypervisor/emu/emu.h"
#include "hypervisor/emu/emu_sys_internal.h"

/* ---- raising and exits ---- */

_Noreturn void emu_raise(struct emu_cpu *cpu, int vector, int error)
{
	cpu->exc_vector = vector;
	cpu->exc_error = error;
	longjmp(cpu->jmp, EMU_JMP_FAULT);
}

_Noreturn void emu_exit_now(struct emu_cpu *cpu)
{
	cpu->exit_restart = false;
	longjmp(cpu->jmp, EMU_JMP_EXIT);
}

_Noreturn void emu_exit_error(struct emu_cpu *cpu, const char *fmt, ...)
{
	va_list ap;

	memset(cpu->exit, 0, sizeof(*cpu->exit));
	cpu->exit->reason = ACCEL_EXIT_ERROR;
	va_start(ap, fmt);
	vsnprintf(cpu->exit->error.msg, sizeof(cpu->exit->error.msg), fmt, ap);
	va_end(ap);
	cpu->exit_pending = false;
	cpu->exit_restart = true;
	longjmp(cpu->jmp, EMU_JMP_EXIT);
}

/* Error code naming a selector; EXT set while delivering an event that is not INT n. */
static int sel_err(const struct emu_cpu *cpu, uint16_t sel)
{
	return (sel & 0xfffc) | (cpu->dlv_class >= 0 && cpu->dlv_ext ? 1 : 0);
}

_Noreturn void sys_raise_sel(struct emu_cpu *cpu, int vector, uint16_t sel)
{
	emu_raise(cpu, vector, sel_err(cpu, sel));
}

void sys_require_cpl0(struct emu_cpu *cpu)
{
	if (cpu->mode != EMU_REAL && cpu->cpl != 0)
		emu_raise(cpu, EXC_GP, 0);
}

/* ---- modes ---- */

void emu_update_mode(struct emu_cpu *cpu)
{
	const struct kvm_segment *cs = &cpu->seg[SEG_CS];

	if (!(cpu->cr0 & CR0_PE)) {
		cpu->mode = EMU_REAL;
		cpu->cpl = 0;
	} else if (cpu->rflags & EFL_VM) {
		cpu->mode = EMU_REAL;   /* virtual-8086: real-mode address arithmetic (only partly supported) */
		cpu->cpl = 3;
	} else if (cpu->efer & EFER_LMA) {
		cpu->mode = cs->l ? EMU_LONG64 : cs->db ? EMU_COMPAT32 : EMU_COMPAT16;
	} else {
		cpu->mode = cs->db ? EMU_PROT32 : EMU_PROT16;
	}
}

/* ---- SYSCALL / SYSRET ---- */

void emu_syscall(struct emu_cpu *cpu)
{
	if (!(cpu->efer & EFER_LMA) || !(cpu->efer & EFER_SCE))
		emu_raise(cpu, EXC_UD, -1);
	uint16_t sel = (uint16_t)(cpu->msr_star >> 32) & 0xfffc;
	struct kvm_segment *cs = &cpu->seg[SEG_CS], *ss = &cpu->seg[SEG_SS];

	cpu->gpr[R_CX] = cpu->rip;
	cpu->gpr[R_R11] = cpu->rflags & ~(uint64_t)EFL_RF;
	cpu->rip = cpu->mode == EMU_LONG64 ? cpu->msr_lstar : cpu->msr_cstar;
	cpu->rflags = (cpu->rflags & ~cpu->msr_sfmask & ~(uint64_t)EFL_RF) | 2;
	memset(cs, 0, sizeof(*cs));
	cs->selector = sel;
	cs->limit = 0xffffffff;
	cs->type = 0xb;
	cs->s = 1;
	cs->present = 1;
	cs->l = 1;
	cs->g = 1;
	memset(ss, 0, sizeof(*ss));
	ss->selector = (uint16_t)(sel + 8);
	ss->limit = 0xffffffff;
	ss->type = 3;
	ss->s = 1;
	ss->present = 1;
	ss->db = 1;
	ss->g = 1;
	cpu->cpl = 0;
	emu_update_mode(cpu);
}

void emu_sysret(struct emu_cpu *cpu, unsigned opsize)
{
	if (!(cpu->efer & EFER_LMA) || !(cpu->efer & EFER_SCE))
		emu_raise(cpu, EXC_UD, -1);
	if (cpu->cpl != 0 || cpu->mode != EMU_LONG64)
		emu_raise(cpu, EXC_GP, 0);
	uint16_t base = (uint16_t)(cpu->msr_star >> 48);
	uint64_t rip = opsize == 8 ? cpu->gpr[R_CX] : (uint32_t)cpu->gpr[R_CX];
	struct kvm_segment *cs = &cpu->seg[SEG_CS], *ss = &cpu->seg[SEG_SS];

	if (opsize == 8 && !sys_canonical(rip))
		emu_raise(cpu, EXC_GP, 0);
	memset(cs, 0, sizeof(*cs));
	cs->selector = (uint16_t)((opsize == 8 ? base + 16 : base) | 3);
	cs->limit = 0xffffffff;
	cs->type = 0xb;
	cs->s = 1;
	cs->present = 1;
	cs->dpl = 3;
	cs->g = 1;
	if (opsize == 8)
		cs->l = 1;
	else
		cs->db = 1;
	ss->selector = (uint16_t)((base + 8) | 3);
	ss->base = 0;
	ss->limit = 0xffffffff;
	ss->type = 3;
	ss->s = 1;
	ss->present = 1;
	ss->dpl = 3;
	ss->db = 1;
	ss->g = 1;
	ss->unusable = 0;
	cpu->rflags = (cpu->gpr[R_R11] & 0x3c7fd7ull) | 2;
	cpu->rip = rip;
	cpu->cpl = 3;
	emu_update_mode(cpu);
}

/* ---- SYSENTER / SYSEXIT ---- */

static void flat_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, unsigned dpl, bool l)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->limit = 0xffffffff;
	s->type = type;
	s->s = 1;
	s->present = 1;
	s->dpl = (uint8_t)dpl;
	s->g = 1;
	s->l = l;
	s->db = !l;
}

void emu_sysenter(struct emu_cpu *cpu)
{
	uint16_t cs = (uint16_t)cpu->msr_sysenter_cs;
	bool lm = cpu->efer & EFER_LMA;

	if (cpu->mode == EMU_REAL || !(cs & 0xfffc))
		emu_raise(cpu, EXC_GP, 0);
	flat_seg(&cpu->seg[SEG_CS], cs & 0xfffc, 0xb, 0, lm);
	flat_seg(&cpu->seg[SEG_SS], (uint16_t)((cs & 0xfffc) + 8), 3, 0, false);
	cpu->rflags &= ~(uint64_t)(EFL_VM | EFL_IF | EFL_RF);
	cpu->gpr[R_SP] = lm ? cpu->msr_sysenter_esp : (uint32_t)cpu->msr_sysenter_esp;
	cpu->rip = lm ? cpu->msr_sysenter_eip : (uint32_t)cpu->msr_sysenter_eip;
	cpu->cpl = 0;
	emu_update_mode(cpu);
}

void emu_sysexit(struct emu_cpu *cpu, unsigned opsize)
{
	uint16_t cs = (uint16_t)cpu->msr_sysenter_cs;
	bool to64 = opsize == 8;

	if (cpu->mode == EMU_REAL || cpu->cpl != 0 || !(cs & 0xfffc))
		emu_raise(cpu, EXC_GP, 0);
	uint64_t rip = to64 ? cpu->gpr[R_DX] : (uint32_t)cpu->gpr[R_DX];
	uint64_t rsp = to64 ? cpu->gpr[R_CX] : (uint32_t)cpu->gpr[R_CX];
	if (to64 && (!sys_canonical(rip) || !sys_canonical(rsp)))
		emu_raise(cpu, EXC_GP, 0);
	flat_seg(&cpu->seg[SEG_CS], (uint16_t)((cs + (to64 ? 32 : 16)) | 3), 0xb, 3, to64);
	flat_seg(&cpu->seg[SEG_SS], (uint16_t)((cs + (to64 ? 40 : 24)) | 3), 3, 3, false);
	cpu->gpr[R_SP] = rsp;
	cpu->rip = rip;
	cpu->cpl = 3;
	emu_update_mode(cpu);
}

/* ---- HLT, port I/O ---- */

void emu_hlt(struct emu_cpu *cpu)
{
	sys_require_cpl0(cpu);
	memset(cpu->exit, 0, sizeof(*cpu->exit));
	cpu->exit->reason = ACCEL_EXIT_HLT;
	cpu->exit_pending = true;
}

uint32_t emu_io_in(struct emu_cpu *cpu, uint16_t port, unsigned size)
{
	if (cpu->pend.kind == ACCEL_EXIT_IO && cpu->io_done && cpu->pend.addr == port && cpu->pend.size == size) {
		cpu->io_done = false;
		cpu->pend.kind = 0;
		return (uint32_t)(cpu->pend.value & (size == 4 ? 0xffffffffull : (1ull << (8 * size)) - 1));
	}
	if (cpu->exit_pending)
		emu_exit_error(cpu, "IN from port 0x%x after an exiting write in one instruction", port);
	struct accel_exit *x = cpu->exit;
	memset(x, 0, sizeof(*x));
	x->reason = ACCEL_EXIT_IO;
	x->io.port = port;
	x->io.size = (uint8_t)size;
	x->io.in = true;
	x->io.count = 1;
	x->io.data = cpu->io_buf;
	memset(cpu->io_buf, 0xff, size);
	cpu->pend.kind = ACCEL_EXIT_IO;
	cpu->pend.addr = port;
	cpu->pend.size = size;
	cpu->io_done = false;
	cpu->exit_restart = true;
	longjmp(cpu->jmp, EMU_JMP_EXIT);
}

void emu_io_out(struct emu_cpu *cpu, uint16_t port, unsigned size, uint32_t val)
{
	struct accel_exit *x = cpu->exit;

	if (cpu->exit_pending)
		emu_exit_error(cpu, "two exiting writes in one instruction (OUT to port 0x%x)", port);
	memset(x, 0, sizeof(*x));
	x->reason = ACCEL_EXIT_IO;
	x->io.port = port;
	x->io.size = (uint8_t)size;
	x->io.in = false;
	x->io.count = 1;
	x->io.data = cpu->io_buf;
	for (unsigned i = 0; i < size; i++)
		cpu->io_buf[i] = (uint8_t)(val >> (8 * i));
	cpu->exit_pending = true;
}

/* ---- control and debug registers ---- */

uint64_t emu_read_cr(struct emu_cpu *cpu, int n)
{
	sys_require_cpl0(cpu);
	switch (n) {
	case 0: return cpu->cr0;
	case 2: return cpu->cr2;
	case 3: return cpu->cr3;
	case 4: return cpu->cr4;
	case 8: return cpu->cr8;
	}
	emu_raise(cpu, EXC_UD, -1);
}

void emu_write_cr(struct emu_cpu *cpu, int n, uint64_t val)
{
	sys_require_cpl0(cpu);
	bool lm = cpu->efer & EFER_LMA;

	switch (n) {
	case 0: {
		if (val >> 32)
			emu_raise(cpu, EXC_GP, 0);
		val |= CR0_ET;
		if ((val & CR0_PG) && !(val & CR0_PE))
			emu_raise(cpu, EXC_GP, 0);
		if ((val & CR0_NW) && !(val & CR0_CD))
			emu_raise(cpu, EXC_GP, 0);
		uint64_t efer = cpu->efer;
		if ((val & CR0_PG) && !(cpu->cr0 & CR0_PG) && (efer & EFER_LME)) {
			if (!(cpu->cr4 & CR4_PAE) || cpu->seg[SEG_CS].l)
				emu_raise(cpu, EXC_GP, 0);
			efer |= EFER_LMA;
		} else if (!(val & CR0_PG) && (cpu->cr0 & CR0_PG) && lm) {
			if (cpu->mode == EMU_LONG64)
				emu_raise(cpu, EXC_GP, 0);
			efer &= ~EFER_LMA;
		}
		cpu->cr0 = val;
		cpu->efer = efer;
		emu_tlb_flush(cpu);
		emu_update_mode(cpu);
		return;
	}
	case 2:
		cpu->cr2 = val;
		return;
	case 3:
		if (!lm)
			val &= 0xffffffffull;
		cpu->cr3 = val;
		emu_tlb_flush(cpu);
		return;
	case 4:
		if (val & ~CR4_VALID)
			emu_raise(cpu, EXC_GP, 0);
		if (lm && !(val & CR4_PAE))
			emu_raise(cpu, EXC_GP, 0);
		cpu->cr4 = val;
		emu_tlb_flush(cpu);
		return;
	case 8:
		if (val & ~0xfull)
			emu_raise(cpu, EXC_GP, 0);
		cpu->cr8 = val;
		return;
	}
	emu_raise(cpu, EXC_UD, -1);
}

uint64_t emu_read_dr(struct emu_cpu *cpu, int n)
{
	sys_require_cpl0(cpu);
	if (n == 4 || n == 5)
		n += 2;
	if (n < 0 || n > 7)
		emu_raise(cpu, EXC_UD, -1);
	if (n == 6)
		return cpu->dr[6] | 0xffff0ff0ull;
	if (n == 7)
		return cpu->dr[7] | 0x400;
	return cpu->dr[n];
}

void emu_write_dr(struct emu_cpu *cpu, int n, uint64_t val)
{
	sys_require_cpl0(cpu);
	if (n == 4 || n == 5)
		n += 2;
	if (n < 0 || n > 7)
		emu_raise(cpu, EXC_UD, -1);
	if ((n == 6 || n == 7) && (val >> 32))
		emu_raise(cpu, EXC_GP, 0);
	cpu->dr[n] = val;
}

/* ---- descriptor tables ---- */

void emu_lgdt_lidt(struct emu_cpu *cpu, bool idt, uint64_t base, uint16_t limit)
{
	sys_require_cpl0(cpu);
	if (cpu->mode == EMU_LONG64) {
		if (!sys_canonical(base))
			emu_raise(cpu, EXC_GP, 0);
	} else {
		base &= 0xffffffffull;
	}
	struct kvm_dtable *t = idt ? &cpu->idt : &cpu->gdt;
	t->base = base;
	t->limit = limit;
}

/* Load a system segment descriptor (TSS or LDT) from the GDT; `types` is a bitmask of acceptable types. */
static void sysdesc_load(struct emu_cpu *cpu, uint16_t sel, unsigned types, struct kvm_segment *out,
			 uint64_t *addr, uint64_t *d)
{
	uint64_t hi = 0;
	bool lm = cpu->efer & EFER_LMA;

	if (sel & 4)
		sys_raise_sel(cpu, EXC_GP, sel);
	*d = sys_desc_read(cpu, sel, EXC_GP, addr, lm ? &hi : NULL);
	sys_seg_from_desc(out, sel, *d);
	if (out->s || !((types >> out->type) & 1))
		sys_raise_sel(cpu, EXC_GP, sel);
	if (!out->present)
		sys_raise_sel(cpu, EXC_NP, sel);
	if (lm) {
		out->base |= (hi & 0xffffffffull) << 32;
		/* LTR/LLDT in IA-32e mode: a non-canonical 64-bit base is #GP(selector), nothing loaded */
		if (!sys_canonical(out->base))
			sys_raise_sel(cpu, EXC_GP, sel);
	}
}

void emu_ltr(struct emu_cpu *cpu, uint16_t sel)
{
	struct kvm_segment ns;
	uint64_t addr, d;

	if (cpu->mode == EMU_REAL)
		emu_raise(cpu, EXC_UD, -1);
	sys_require_cpl0(cpu);
	if (!(sel & 0xfffc))
		emu_raise(cpu, EXC_GP, 0);
	/* available TSS: 32/64-bit type 9; 16-bit type 1 outside long mode */
	sysdesc_load(cpu, sel, (cpu->efer & EFER_LMA) ? (1u << 9) : (1u << 9) | (1u << 1), &ns, &addr, &d);
	emu_write_linear(cpu, addr + 5, 1, ((d >> 40) | 2) & 0xff, true);   /* busy */
	ns.type |= 2;
	cpu->tr = ns;
}

void emu_lldt(struct emu_cpu *cpu, uint16_t sel)
{
	struct kvm_segment ns;
	uint64_t addr, d;

	if (cpu->mode == EMU_REAL)
		emu_raise(cpu, EXC_UD, -1);
	sys_require_cpl0(cpu);
	if (!(sel & 0xfffc)) {
		sys_seg_null(&cpu->ldt, sel);
		return;
	}
	sysdesc_load(cpu, sel, 1u << 2, &ns, &addr, &d);
	cpu->ldt = ns;
}

void emu_invlpg(struct emu_cpu *cpu, uint64_t lin)
{
	sys_require_cpl0(cpu);
	emu_tlb_flush_page(cpu, lin);
}
