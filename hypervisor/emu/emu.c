/* SPDX-License-Identifier: MIT */
/*
 * emu accelerator: struct accel_ops over the interpreter (hypervisor/accel.h, hypervisor/emu/emu.h).
 *
 * run() loop, at every instruction boundary, in this order:
 *   1. an exit recorded by the last instruction (OUT, MMIO write, WRMSR to the VMM, HLT) is returned — except a
 *      HLT when an NMI or an injected interrupt is deliverable now (HLT in an STI shadow): it wakes at once;
 *   2. a kick (atomic flag, set by accel kick from any thread or a signal handler) returns ACCEL_EXIT_KICK — it is
 *      tested before every instruction, so a kick is seen within one instruction's time;
 *   3. an instruction waiting for a value the VMM just supplied (IN, MMIO read, RDMSR) is re-executed first, before
 *      any interrupt, so the device access is not repeated;
 *   4. unless an interrupt shadow (STI, MOV SS) covers this boundary: a pending NMI (unless blocked until IRET),
 *      else an injected interrupt if RFLAGS.IF, is delivered through the IDT; else, if the VMM asked for an
 *      interrupt window and IF=1, ACCEL_EXIT_IRQ_WINDOW is returned;
 *   5. one instruction is executed (emu_step).
 * Faults longjmp back here (EMU_JMP_FAULT) and are delivered with the double-fault rules of SDM vol. 3 table 6-5;
 * a fault while delivering #DF is a triple fault: ACCEL_EXIT_SHUTDOWN.
 *
 * After a read exit (IN, MMIO read, RDMSR of a VMM MSR) the instruction has not executed: get_regs shows RIP on it,
 * and the next run() executes it again with the value from the exit. A set_regs that moves RIP abandons the read.
 *
 * exit->irq_ready: IF=1, no interrupt shadow and no injected vector still queued (a kick can end a run before a
 * vector injected for it is delivered; the VMM must then wait for the window instead of injecting again).
 *
 * The guest TSC is CLOCK_MONOTONIC scaled to tsc_hz (plus the VM's offset): identical on every vCPU and in every
 * process on one host, which keeps guest time consistent across the node processes of a simulated cluster.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hypervisor/emu/emu.h"
#include "util/log.h"

struct accel_vm {
	struct emu_vm vm;
};

struct accel_vcpu {
	struct emu_cpu cpu;
};

/* emu_exec.c provides the real one; this keeps libhv linkable while it is not in the tree. */
__attribute__((weak)) void emu_step(struct emu_cpu *cpu)
{
	cpu->insn_rip = cpu->rip;
	emu_exit_error(cpu, "emu: no instruction decoder linked (emu_exec.c missing)");
}

static int emu_probe(char *why, size_t why_len)
{
	if (why && why_len)
		why[0] = '\0';
	return 0;
}

static int emu_vm_create(const struct accel_vm_config *cfg, struct accel_vm **out)
{
	struct accel_vm *v;

	/* a hole at or above the end of RAM just means no RAM is relocated to 4 GiB */
	if (!cfg->ram || (cfg->ram_size & 0xfff) || cfg->hole_start > (1ull << 32))
		return -EINVAL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->vm.ram = cfg->ram;
	v->vm.ram_size = cfg->ram_size;
	v->vm.hole_start = cfg->hole_start;
	v->vm.tsc_hz = cfg->tsc_hz ? cfg->tsc_hz : 1000000000u;
	v->vm.tsc_offset = 0;
	if (cfg->n_cpuid) {
		v->vm.cpuid = calloc(cfg->n_cpuid, sizeof(*cfg->cpuid));
		if (!v->vm.cpuid) {
			free(v);
			return -ENOMEM;
		}
		memcpy(v->vm.cpuid, cfg->cpuid, cfg->n_cpuid * sizeof(*cfg->cpuid));
		v->vm.n_cpuid = cfg->n_cpuid;
	}
	*out = v;
	return 0;
}

static void emu_vm_destroy(struct accel_vm *v)
{
	if (!v)
		return;
	free(v->vm.cpuid);
	free(v);
}

static void seg_reset(struct kvm_segment *s, uint16_t sel, uint64_t base, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->base = base;
	s->limit = 0xffff;
	s->type = type;
	s->present = 1;
	s->s = 1;
}

/* Processor state after reset (SDM vol. 3 table 9-1). */
static void cpu_reset(struct emu_cpu *cpu)
{
	memset(cpu->gpr, 0, sizeof(cpu->gpr));
	cpu->rip = 0xfff0;
	cpu->rflags = 2;
	seg_reset(&cpu->seg[SEG_CS], 0xf000, 0xffff0000ull, 0xb);
	for (int i = 0; i < 6; i++)
		if (i != SEG_CS)
			seg_reset(&cpu->seg[i], 0, 0, 3);
	seg_reset(&cpu->ldt, 0, 0, 2);
	cpu->ldt.s = 0;
	seg_reset(&cpu->tr, 0, 0, 0xb);
	cpu->tr.s = 0;
	cpu->gdt = (struct kvm_dtable){ .base = 0, .limit = 0xffff };
	cpu->idt = (struct kvm_dtable){ .base = 0, .limit = 0xffff };
	cpu->cr0 = 0x60000010ull;
	cpu->cr2 = cpu->cr3 = cpu->cr4 = cpu->cr8 = 0;
	cpu->efer = 0;
	cpu->msr_pat = 0x0007040600070406ull;
	cpu->msr_misc_enable = 1;   /* fast strings */
	cpu->dr[6] = 0xffff0ff0ull;
	cpu->dr[7] = 0x400;
	emu_fpu_reset(cpu);
	uint32_t sig = 0x600;
	for (size_t i = 0; i < cpu->vm->n_cpuid; i++)
		if (cpu->vm->cpuid[i].function == 1)
			sig = cpu->vm->cpuid[i].eax;
	cpu->gpr[R_DX] = sig;
	cpu->pending_irq = -1;
	cpu->pending_nmi = cpu->nmi_blocked = cpu->irq_shadow = false;
	cpu->dlv_class = -1;
	emu_update_mode(cpu);
	emu_tlb_flush(cpu);
}

static int emu_vcpu_create(struct accel_vm *vm, unsigned index, uint32_t apic_id, struct accel_vcpu **out)
{
	struct accel_vcpu *v = calloc(1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	v->cpu.vm = &vm->vm;
	v->cpu.index = index;
	v->cpu.apic_id = apic_id;
	atomic_init(&v->cpu.kicked, false);
	cpu_reset(&v->cpu);
	*out = v;
	return 0;
}

static void emu_vcpu_destroy(struct accel_vcpu *v)
{
	free(v);
}

static int emu_get_regs(struct accel_vcpu *v, struct kvm_regs *r)
{
	const struct emu_cpu *c = &v->cpu;

	memset(r, 0, sizeof(*r));
	r->rax = c->gpr[R_AX];
	r->rbx = c->gpr[R_BX];
	r->rcx = c->gpr[R_CX];
	r->rdx = c->gpr[R_DX];
	r->rsi = c->gpr[R_SI];
	r->rdi = c->gpr[R_DI];
	r->rsp = c->gpr[R_SP];
	r->rbp = c->gpr[R_BP];
	r->r8 = c->gpr[R_R8];
	r->r9 = c->gpr[R_R9];
	r->r10 = c->gpr[R_R10];
	r->r11 = c->gpr[R_R11];
	r->r12 = c->gpr[R_R12];
	r->r13 = c->gpr[R_R13];
	r->r14 = c->gpr[R_R14];
	r->r15 = c->gpr[R_R15];
	r->rip = c->rip;
	r->rflags = c->rflags;
	return 0;
}

static int emu_set_regs(struct accel_vcpu *v, const struct kvm_regs *r)
{
	struct emu_cpu *c = &v->cpu;

	c->gpr[R_AX] = r->rax;
	c->gpr[R_BX] = r->rbx;
	c->gpr[R_CX] = r->rcx;
	c->gpr[R_DX] = r->rdx;
	c->gpr[R_SI] = r->rsi;
	c->gpr[R_DI] = r->rdi;
	c->gpr[R_SP] = r->rsp;
	c->gpr[R_BP] = r->rbp;
	c->gpr[R_R8] = r->r8;
	c->gpr[R_R9] = r->r9;
	c->gpr[R_R10] = r->r10;
	c->gpr[R_R11] = r->r11;
	c->gpr[R_R12] = r->r12;
	c->gpr[R_R13] = r->r13;
	c->gpr[R_R14] = r->r14;
	c->gpr[R_R15] = r->r15;
	if (r->rip != c->rip) {
		/* the VMM moved the vCPU: an instruction waiting for a read result is abandoned */
		c->pend.kind = 0;
		c->io_done = false;
	}
	c->rip = r->rip;
	c->rflags = r->rflags | 2;
	emu_update_mode(c);
	return 0;
}

static int emu_get_sregs(struct accel_vcpu *v, struct kvm_sregs *s)
{
	const struct emu_cpu *c = &v->cpu;

	memset(s, 0, sizeof(*s));
	s->es = c->seg[SEG_ES];
	s->cs = c->seg[SEG_CS];
	s->ss = c->seg[SEG_SS];
	s->ds = c->seg[SEG_DS];
	s->fs = c->seg[SEG_FS];
	s->gs = c->seg[SEG_GS];
	s->tr = c->tr;
	s->ldt = c->ldt;
	s->gdt = c->gdt;
	s->idt = c->idt;
	s->cr0 = c->cr0;
	s->cr2 = c->cr2;
	s->cr3 = c->cr3;
	s->cr4 = c->cr4;
	s->cr8 = c->cr8;
	s->efer = c->efer;
	s->apic_base = 0;   /* the local APIC is the VMM's */
	if (c->pending_irq >= 0)
		s->interrupt_bitmap[c->pending_irq / 64] |= 1ull << (c->pending_irq % 64);
	return 0;
}

static int emu_set_sregs(struct accel_vcpu *v, const struct kvm_sregs *s)
{
	struct emu_cpu *c = &v->cpu;

	c->seg[SEG_ES] = s->es;
	c->seg[SEG_CS] = s->cs;
	c->seg[SEG_SS] = s->ss;
	c->seg[SEG_DS] = s->ds;
	c->seg[SEG_FS] = s->fs;
	c->seg[SEG_GS] = s->gs;
	c->tr = s->tr;
	c->ldt = s->ldt;
	c->gdt = s->gdt;
	c->idt = s->idt;
	c->cr0 = s->cr0 | 0x10;
	c->cr2 = s->cr2;
	c->cr3 = s->cr3;
	c->cr4 = s->cr4;
	c->cr8 = s->cr8;
	c->efer = s->efer;
	c->pending_irq = -1;
	for (int i = 0; i < 256; i++)
		if (s->interrupt_bitmap[i / 64] & (1ull << (i % 64))) {
			c->pending_irq = i;
			break;
		}
	/* CPL is SS.DPL (as KVM on VMX) outside real mode */
	emu_update_mode(c);
	if (c->mode != EMU_REAL)
		c->cpl = c->seg[SEG_SS].dpl;
	emu_tlb_flush(c);
	return 0;
}

static int exc_class(int v)
{
	if (v == EXC_PF)
		return EMU_DLV_PF;
	if (v == EXC_DF)
		return EMU_DLV_DF;
	if (v == EXC_DE || (v >= EXC_TS && v <= EXC_GP))
		return EMU_DLV_CONTRIB;
	return EMU_DLV_BENIGN;
}

/* Deliver the fault in cpu->exc_vector/exc_error (raised by an instruction or by a delivery). false: triple
 * fault. May longjmp (a fault in this delivery comes back here with dlv_class set). */
static bool fault_deliver(struct emu_cpu *cpu)
{
	int v = cpu->exc_vector, e = cpu->exc_error;
	uint64_t rip;

	cpu->io_done = false;
	cpu->pend.kind = 0;
	cpu->exit_pending = false;
	if (cpu->dlv_class >= 0) {
		int first = cpu->dlv_class, second = exc_class(v);
		rip = cpu->dlv_rip;
		if (first == EMU_DLV_DF)
			return false;
		if ((first == EMU_DLV_CONTRIB && second == EMU_DLV_CONTRIB) ||
		    (first == EMU_DLV_PF && second != EMU_DLV_BENIGN)) {
			v = EXC_DF;
			e = 0;
		}
	} else {
		rip = cpu->insn_rip;
	}
	cpu->rip = rip;
	cpu->dlv_class = exc_class(v);
	cpu->dlv_rip = rip;
	cpu->dlv_fault = true;
	emu_deliver(cpu, v, e, rip, false);
	cpu->dlv_fault = false;
	cpu->dlv_class = -1;
	return true;
}

static void irq_deliver(struct emu_cpu *cpu, int vector)
{
	cpu->insn_rip = cpu->rip;
	cpu->dlv_class = EMU_DLV_BENIGN;
	cpu->dlv_rip = cpu->rip;
	emu_deliver(cpu, vector, -1, cpu->rip, false);
	cpu->dlv_class = -1;
}

static void exit_set(struct emu_cpu *cpu, enum accel_exit_reason r)
{
	memset(cpu->exit, 0, sizeof(*cpu->exit));
	cpu->exit->reason = r;
}

/* An NMI or injected interrupt the next boundary would deliver (shadow not considered: HLT ends it). */
static bool hlt_wakes(const struct emu_cpu *cpu)
{
	return (cpu->pending_nmi && !cpu->nmi_blocked) || (cpu->pending_irq >= 0 && (cpu->rflags & EFL_IF));
}

/* Runs until an exit is recorded in *cpu->exit. All state lives in *cpu (setjmp: no locals survive longjmp). */
static void run_loop(struct emu_cpu *cpu, bool wrmsr_fault)
{
	switch (setjmp(cpu->jmp)) {
	case 0:
		if (wrmsr_fault) {
			/* the VMM refused a WRMSR that already retired: make it fault at its own RIP */
			cpu->insn_rip = cpu->wrmsr_rip;
			cpu->exc_vector = EXC_GP;
			cpu->exc_error = 0;
			cpu->dlv_class = -1;
			if (!fault_deliver(cpu))
				goto shutdown;
		}
		break;
	case EMU_JMP_FAULT:
		if (!fault_deliver(cpu))
			goto shutdown;
		break;
	case EMU_JMP_EXIT:
		if (cpu->dlv_class >= 0) {
			/* an exit in the middle of delivering an event (IDT/stack not in RAM) */
			cpu->rip = cpu->dlv_rip;
			cpu->dlv_class = -1;
			if (cpu->exit->reason != ACCEL_EXIT_ERROR) {
				exit_set(cpu, ACCEL_EXIT_ERROR);
				strcpy(cpu->exit->error.msg, "emu: event delivery touched non-RAM memory");
			}
		} else if (cpu->exit_restart) {
			cpu->rip = cpu->insn_rip;
		}
		cpu->exit_restart = false;
		cpu->exit_pending = false;
		return;
	}
	for (;;) {
		if (cpu->exit_pending) {
			cpu->exit_pending = false;
			if (!(cpu->exit->reason == ACCEL_EXIT_HLT && hlt_wakes(cpu)))
				return;
			/* HLT with an event already deliverable (its STI/MOV SS shadow ended with it): the event wakes
			 * it at once, as on hardware, instead of a HLT exit the VMM could not wake (the event is no
			 * longer in its APIC) */
			memset(cpu->exit, 0, sizeof(*cpu->exit));
		}
		if (atomic_load_explicit(&cpu->kicked, memory_order_relaxed) &&
		    atomic_exchange(&cpu->kicked, false)) {
			exit_set(cpu, ACCEL_EXIT_KICK);
			return;
		}
		if (!cpu->io_done && !cpu->irq_shadow) {
			if (cpu->pending_nmi && !cpu->nmi_blocked) {
				cpu->pending_nmi = false;
				cpu->nmi_blocked = true;
				irq_deliver(cpu, EXC_NMI);
				continue;
			}
			if (cpu->pending_irq >= 0 && (cpu->rflags & EFL_IF)) {
				int vec = cpu->pending_irq;
				cpu->pending_irq = -1;
				irq_deliver(cpu, vec);
				continue;
			}
			if (cpu->want_irq_window && (cpu->rflags & EFL_IF)) {
				cpu->want_irq_window = false;
				exit_set(cpu, ACCEL_EXIT_IRQ_WINDOW);
				return;
			}
		}
		cpu->irq_shadow = false;
		emu_step(cpu);   /* counts cpu->insns when it retires */
		/* RF lasts until the end of the instruction after the IRET that set it (SDM vol. 3, 17.3.1.1) */
		if (cpu->rf_loaded)
			cpu->rf_loaded = false;
		else
			cpu->rflags &= ~(uint64_t)EFL_RF;
	}
shutdown:
	cpu->dlv_class = -1;
	exit_set(cpu, ACCEL_EXIT_SHUTDOWN);
}

static uint64_t le_value(const uint8_t *p, unsigned size)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < size && i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static int emu_run(struct accel_vcpu *v, const struct accel_entry *entry, struct accel_exit *exit)
{
	struct emu_cpu *cpu = &v->cpu;
	struct accel_exit *last = cpu->last_exit;
	bool wrmsr_fault = false;

	/* the VMM's answer to the previous exit (the previous exit struct is read only when it holds one) */
	if (last && cpu->pend.kind == ACCEL_EXIT_MSR_WRITE) {
		wrmsr_fault = last->reason == ACCEL_EXIT_MSR_WRITE && last->msr.error;
		cpu->pend.kind = 0;
	} else if (last && cpu->pend.kind && !cpu->io_done &&
		   last->reason == (enum accel_exit_reason)cpu->pend.kind) {
		switch (cpu->pend.kind) {
		case ACCEL_EXIT_IO:
			cpu->pend.value = le_value(cpu->io_buf, cpu->pend.size);
			break;
		case ACCEL_EXIT_MMIO:
			cpu->pend.value = le_value(last->mmio.data, cpu->pend.size);
			break;
		case ACCEL_EXIT_MSR_READ:
			cpu->pend.value = last->msr.value;
			cpu->pend.error = last->msr.error;
			break;
		}
		cpu->io_done = true;
	}
	cpu->last_exit = exit;
	cpu->exit = exit;
	memset(exit, 0, sizeof(*exit));
	cpu->want_irq_window = entry && entry->request_irq_window;
	cpu->exit_pending = false;
	cpu->exit_restart = false;
	run_loop(cpu, wrmsr_fault);
	/* Ready only if an injection now would be taken at once and the backend holds none: a kick or an exit can
	 * come before a queued vector is delivered (the kick is tested first at every boundary), and inject_irq would
	 * then refuse (-EBUSY). KVM's ready_for_interrupt_injection is false while an injection is pending too. */
	exit->irq_ready = (cpu->rflags & EFL_IF) && !cpu->irq_shadow && cpu->pending_irq < 0;
	__atomic_store_n(&cpu->insns_pub, cpu->insns, __ATOMIC_RELAXED);
	return 0;
}

static void emu_kick(struct accel_vcpu *v)
{
	atomic_store(&v->cpu.kicked, true);
}

static int emu_inject_irq(struct accel_vcpu *v, uint8_t vector)
{
	if (vector < 16)
		return -EINVAL;
	if (v->cpu.pending_irq >= 0)
		return -EBUSY;
	v->cpu.pending_irq = vector;
	return 0;
}

static int emu_inject_nmi(struct accel_vcpu *v)
{
	v->cpu.pending_nmi = true;
	return 0;
}

static uint64_t emu_read_tsc(struct accel_vcpu *v)
{
	return emu_tsc_now(&v->cpu);
}

/* Retired instructions as of the end of this vCPU's last run() (any thread; a run in progress is not counted
 * until it exits — the VMM kicks vCPUs for timers and events, so the value lags by at most one run). */
static uint64_t emu_insn_count(struct accel_vcpu *v)
{
	return __atomic_load_n(&v->cpu.insns_pub, __ATOMIC_RELAXED);
}

const struct accel_ops accel_emu_ops = {
	.name = "emu",
	.probe = emu_probe,
	.vm_create = emu_vm_create,
	.vm_destroy = emu_vm_destroy,
	.vcpu_create = emu_vcpu_create,
	.vcpu_destroy = emu_vcpu_destroy,
	.get_regs = emu_get_regs,
	.set_regs = emu_set_regs,
	.get_sregs = emu_get_sregs,
	.set_sregs = emu_set_sregs,
	.run = emu_run,
	.kick = emu_kick,
	.inject_irq = emu_inject_irq,
	.inject_nmi = emu_inject_nmi,
	.read_tsc = emu_read_tsc,
	.insn_count = emu_insn_count,
};
