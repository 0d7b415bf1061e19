/* SPDX-License-Identifier: MIT */
/*
 * emu: the TSC (CLOCK_MONOTONIC at the VM's rate, per-vCPU IA32_TSC adjustment), the MSRs emu owns (the list is at
 * the top of emu_sys.c; every other one exits to the VMM) and CPUID from the VM's table.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hypervisor/emu/emu.h"
#include "hypervisor/emu/emu_sys_internal.h"

/* ---- TSC ---- */

static uint64_t host_ticks(const struct emu_vm *vm)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	unsigned __int128 ns = (unsigned __int128)ts.tv_sec * 1000000000u + (unsigned)ts.tv_nsec;
	if (vm->tsc_hz == 1000000000u || !vm->tsc_hz)
		return (uint64_t)ns;
	return (uint64_t)(ns * vm->tsc_hz / 1000000000u);
}

/* Guest TSC without the per-vCPU IA32_TSC adjustment (the same on every vCPU and host process). */
static uint64_t tsc_base(const struct emu_cpu *cpu)
{
	return host_ticks(cpu->vm) + cpu->vm->tsc_offset;
}

uint64_t emu_tsc_now(const struct emu_cpu *cpu)
{
	return tsc_base(cpu) + cpu->tsc_adjust;
}

uint64_t emu_rdtsc(struct emu_cpu *cpu)
{
	if ((cpu->cr4 & CR4_TSD) && cpu->cpl != 0 && cpu->mode != EMU_REAL)
		emu_raise(cpu, EXC_GP, 0);
	return tsc_base(cpu) + cpu->tsc_adjust;
}

/* ---- MSRs ---- */

/* Emu-owned MSR read; false if the VMM owns it. */
static bool msr_get(struct emu_cpu *cpu, uint32_t idx, uint64_t *v)
{
	switch (idx) {
	case MSR_TSC: *v = tsc_base(cpu) + cpu->tsc_adjust; return true;
	case MSR_MTRRCAP: *v = 0; return true;
	case MSR_SYSENTER_CS: *v = cpu->msr_sysenter_cs; return true;
	case MSR_SYSENTER_ESP: *v = cpu->msr_sysenter_esp; return true;
	case MSR_SYSENTER_EIP: *v = cpu->msr_sysenter_eip; return true;
	case MSR_MISC_ENABLE: *v = cpu->msr_misc_enable; return true;
	case MSR_PAT: *v = cpu->msr_pat; return true;
	case MSR_MTRR_DEF_TYPE: *v = cpu->msr_mtrr_def_type; return true;
	case MSR_MTRR_FIX64K: *v = cpu->msr_mtrr_fixed[0]; return true;
	case MSR_MTRR_FIX16K0: *v = cpu->msr_mtrr_fixed[1]; return true;
	case MSR_MTRR_FIX16K1: *v = cpu->msr_mtrr_fixed[2]; return true;
	case MSR_EFER: *v = cpu->efer; return true;
	case MSR_STAR: *v = cpu->msr_star; return true;
	case MSR_LSTAR: *v = cpu->msr_lstar; return true;
	case MSR_CSTAR: *v = cpu->msr_cstar; return true;
	case MSR_SFMASK: *v = cpu->msr_sfmask; return true;
	case MSR_FS_BASE: *v = cpu->seg[SEG_FS].base; return true;
	case MSR_GS_BASE: *v = cpu->seg[SEG_GS].base; return true;
	case MSR_KERNEL_GS_BASE: *v = cpu->msr_kernel_gs_base; return true;
	case MSR_TSC_AUX: *v = cpu->msr_tsc_aux; return true;
	}
	if (idx >= MSR_MTRR_FIX4K0 && idx < MSR_MTRR_FIX4K0 + 8) {
		*v = cpu->msr_mtrr_fixed[3 + idx - MSR_MTRR_FIX4K0];
		return true;
	}
	if (idx >= MSR_MTRR_PHYS0 && idx < MSR_MTRR_PHYS0 + 16) {
		*v = cpu->msr_mtrr_var[idx - MSR_MTRR_PHYS0];
		return true;
	}
	return false;
}

/* Emu-owned MSR write (raises #GP on bad values); false if the VMM owns it. */
static bool msr_set(struct emu_cpu *cpu, uint32_t idx, uint64_t v)
{
	switch (idx) {
	case MSR_TSC: cpu->tsc_adjust = v - tsc_base(cpu); return true;
	case MSR_MTRRCAP: emu_raise(cpu, EXC_GP, 0);
	case MSR_SYSENTER_CS: cpu->msr_sysenter_cs = v & 0xffff; return true;
	case MSR_SYSENTER_ESP: cpu->msr_sysenter_esp = v; return true;
	case MSR_SYSENTER_EIP: cpu->msr_sysenter_eip = v; return true;
	case MSR_MISC_ENABLE: cpu->msr_misc_enable = v; return true;
	case MSR_PAT:
		for (unsigned i = 0; i < 8; i++) {
			unsigned t = (v >> (8 * i)) & 0xff;
			if (t == 2 || t == 3 || t > 7)
				emu_raise(cpu, EXC_GP, 0);
		}
		cpu->msr_pat = v;
		return true;
	case MSR_MTRR_DEF_TYPE: cpu->msr_mtrr_def_type = v; return true;
	case MSR_MTRR_FIX64K: cpu->msr_mtrr_fixed[0] = v; return true;
	case MSR_MTRR_FIX16K0: cpu->msr_mtrr_fixed[1] = v; return true;
	case MSR_MTRR_FIX16K1: cpu->msr_mtrr_fixed[2] = v; return true;
	case MSR_EFER: {
		uint64_t allowed = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
		if (v & ~allowed)
			emu_raise(cpu, EXC_GP, 0);
		if ((cpu->cr0 & CR0_PG) && ((v ^ cpu->efer) & EFER_LME))
			emu_raise(cpu, EXC_GP, 0);
		/* LMA is read-only: it follows CR0.PG && LME */
		cpu->efer = (v & ~EFER_LMA) | (cpu->efer & EFER_LMA);
		emu_tlb_flush(cpu);
		emu_update_mode(cpu);
		return true;
	}
	case MSR_STAR: cpu->msr_star = v; return true;
	case MSR_LSTAR:
	case MSR_CSTAR:
	case MSR_FS_BASE:
	case MSR_GS_BASE:
	case MSR_KERNEL_GS_BASE:
		if (!sys_canonical(v))
			emu_raise(cpu, EXC_GP, 0);
		if (idx == MSR_LSTAR)
			cpu->msr_lstar = v;
		else if (idx == MSR_CSTAR)
			cpu->msr_cstar = v;
		else if (idx == MSR_FS_BASE)
			cpu->seg[SEG_FS].base = v;
		else if (idx == MSR_GS_BASE)
			cpu->seg[SEG_GS].base = v;
		else
			cpu->msr_kernel_gs_base = v;
		return true;
	case MSR_SFMASK: cpu->msr_sfmask = v & 0xffffffffull; return true;
	case MSR_TSC_AUX: cpu->msr_tsc_aux = v & 0xffffffffull; return true;
	}
	if (idx >= MSR_MTRR_FIX4K0 && idx < MSR_MTRR_FIX4K0 + 8) {
		cpu->msr_mtrr_fixed[3 + idx - MSR_MTRR_FIX4K0] = v;
		return true;
	}
	if (idx >= MSR_MTRR_PHYS0 && idx < MSR_MTRR_PHYS0 + 16) {
		cpu->msr_mtrr_var[idx - MSR_MTRR_PHYS0] = v;
		return true;
	}
	return false;
}

uint64_t emu_rdmsr(struct emu_cpu *cpu, uint32_t idx)
{
	uint64_t v;

	sys_require_cpl0(cpu);
	if (msr_get(cpu, idx, &v))
		return v;
	if (cpu->pend.kind == ACCEL_EXIT_MSR_READ && cpu->io_done && cpu->pend.addr == idx) {
		cpu->io_done = false;
		cpu->pend.kind = 0;
		if (cpu->pend.error)
			emu_raise(cpu, EXC_GP, 0);
		return cpu->pend.value;
	}
	struct accel_exit *x = cpu->exit;
	memset(x, 0, sizeof(*x));
	x->reason = ACCEL_EXIT_MSR_READ;
	x->msr.index = idx;
	cpu->pend.kind = ACCEL_EXIT_MSR_READ;
	cpu->pend.addr = idx;
	cpu->pend.size = 8;
	cpu->io_done = false;
	cpu->exit_restart = true;
	longjmp(cpu->jmp, EMU_JMP_EXIT);
}

void emu_wrmsr(struct emu_cpu *cpu, uint32_t idx, uint64_t val)
{
	sys_require_cpl0(cpu);
	if (msr_set(cpu, idx, val))
		return;
	struct accel_exit *x = cpu->exit;
	memset(x, 0, sizeof(*x));
	x->reason = ACCEL_EXIT_MSR_WRITE;
	x->msr.index = idx;
	x->msr.value = val;
	cpu->wrmsr_rip = cpu->insn_rip;
	cpu->pend.kind = ACCEL_EXIT_MSR_WRITE;   /* run() looks at the VMM's msr.error once, then forgets */
	cpu->exit_pending = true;
}

/* ---- CPUID ---- */

static const struct accel_cpuid_entry *cpuid_find(const struct emu_vm *vm, uint32_t fn, uint32_t idx)
{
	for (size_t i = 0; i < vm->n_cpuid; i++) {
		const struct accel_cpuid_entry *e = &vm->cpuid[i];
		if (e->function == fn && (!e->has_index || e->index == idx))
			return e;
	}
	return NULL;
}

void emu_cpuid(struct emu_cpu *cpu)
{
	uint32_t fn = (uint32_t)cpu->gpr[R_AX], idx = (uint32_t)cpu->gpr[R_CX];
	const struct accel_cpuid_entry *e = cpuid_find(cpu->vm, fn, idx);
	uint32_t r[4] = { 0, 0, 0, 0 };

	if (!e) {
		/* beyond the maximum leaf (basic or extended): Intel returns the highest basic leaf's data */
		const struct accel_cpuid_entry *b0 = cpuid_find(cpu->vm, 0, 0);
		const struct accel_cpuid_entry *x0 = cpuid_find(cpu->vm, 0x80000000u, 0);
		uint32_t maxb = b0 ? b0->eax : 0, maxx = x0 ? x0->eax : 0;
		bool beyond = fn >= 0x80000000u ? fn > maxx : fn > maxb;
		if (beyond && b0)
			e = cpuid_find(cpu->vm, maxb, idx);
	}
	if (e) {
		r[0] = e->eax;
		r[1] = e->ebx;
		r[2] = e->ecx;
		r[3] = e->edx;
		if (e->function == 1)
			r[1] = (r[1] & 0x00ffffffu) | (cpu->apic_id << 24);
		else if (e->function == 0xb || e->function == 0x1f)
			r[3] = cpu->apic_id;
	}
	cpu->gpr[R_AX] = r[0];
	cpu->gpr[R_BX] = r[1];
	cpu->gpr[R_CX] = r[2];
	cpu->gpr[R_DX] = r[3];
}
