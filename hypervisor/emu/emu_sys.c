/* SPDX-License-Identifier: MIT */
/*
 * emu: system architecture (Intel SDM vol. 3): modes and CPL, descriptor loads, far transfers (direct and through
 * call gates), exception and interrupt delivery (real-mode IVT, 16/32-bit IDT gates with the TSS stack switch,
 * 64-bit IDT with RSP0..2 and IST), IRET, SYSCALL/SYSRET, SYSENTER/SYSEXIT, control registers, MSRs, CPUID, TSC,
 * port I/O and HLT exits, stack helpers.
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

#define CR0_PE  (1ull << 0)
#define CR0_MP  (1ull << 1)
#define CR0_EM  (1ull << 2)
#define CR0_TS  (1ull << 3)
#define CR0_ET  (1ull << 4)
#define CR0_NE  (1ull << 5)
#define CR0_WP  (1ull << 16)
#define CR0_AM  (1ull << 18)
#define CR0_NW  (1ull << 29)
#define CR0_CD  (1ull << 30)
#define CR0_PG  (1ull << 31)
#define CR4_TSD (1ull << 2)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define CR4_PGE (1ull << 7)
#define CR4_VALID 0x7ffull       /* VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR OSXMMEXCPT */
#define EFER_SCE (1ull << 0)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)

#define MSR_TSC            0x10
#define MSR_MTRRCAP        0xfe
#define MSR_SYSENTER_CS    0x174
#define MSR_SYSENTER_ESP   0x175
#define MSR_SYSENTER_EIP   0x176
#define MSR_MISC_ENABLE    0x1a0
#define MSR_MTRR_PHYS0     0x200
#define MSR_MTRR_FIX64K    0x250
#define MSR_MTRR_FIX16K0   0x258
#define MSR_MTRR_FIX16K1   0x259
#define MSR_MTRR_FIX4K0    0x268
#define MSR_PAT            0x277
#define MSR_MTRR_DEF_TYPE  0x2ff
#define MSR_EFER           0xc0000080
#define MSR_STAR           0xc0000081
#define MSR_LSTAR          0xc0000082
#define MSR_CSTAR          0xc0000083
#define MSR_SFMASK         0xc0000084
#define MSR_FS_BASE        0xc0000100
#define MSR_GS_BASE        0xc0000101
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_TSC_AUX        0xc0000103

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

static _Noreturn void raise_sel(struct emu_cpu *cpu, int vector, uint16_t sel)
{
	emu_raise(cpu, vector, sel_err(cpu, sel));
}

static void require_cpl0(struct emu_cpu *cpu)
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

/* ---- descriptors ---- */

static void seg_from_desc(struct kvm_segment *s, uint16_t sel, uint64_t d)
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

static void seg_null(struct kvm_segment *s, uint16_t sel)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->unusable = 1;
}

static void seg_real(struct kvm_segment *s, uint16_t sel)
{
	s->selector = sel;
	s->base = (uint64_t)sel << 4;
}

/* Read the 8-byte descriptor of `sel` from the GDT or LDT; #GP(sel) beyond the table's limit. *addr: its linear
 * address. `hi`: also read the upper 8 bytes (system descriptors in long mode). */
static uint64_t desc_read(struct emu_cpu *cpu, uint16_t sel, int vec, uint64_t *addr, uint64_t *hi)
{
	uint64_t base, limit;
	uint64_t off = sel & 0xfff8;

	if (sel & 4) {
		if (cpu->ldt.unusable || !cpu->ldt.present)
			raise_sel(cpu, vec, sel);
		base = cpu->ldt.base;
		limit = cpu->ldt.limit;
	} else {
		base = cpu->gdt.base;
		limit = cpu->gdt.limit;
	}
	if (off + (hi ? 15 : 7) > limit)
		raise_sel(cpu, vec, sel);
	if (!(cpu->efer & EFER_LMA))
		base &= 0xffffffffull;
	*addr = base + off;
	if (hi)
		*hi = emu_read_linear(cpu, base + off + 8, 8, true);
	return emu_read_linear(cpu, base + off, 8, true);
}

static void desc_set_accessed(struct emu_cpu *cpu, uint64_t addr, uint64_t d)
{
	if (!(d & (1ull << 40)))
		emu_write_linear(cpu, addr + 5, 1, ((d >> 40) | 1) & 0xff, true);
}

static bool seg_is_code(const struct kvm_segment *s)
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
		seg_real(s, sel);
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
		seg_null(s, sel);
		if (segno == SEG_SS) {
			s->dpl = (uint8_t)cpu->cpl;
			s->db = 1;
		}
		goto out;
	}
	d = desc_read(cpu, sel, EXC_GP, &addr, NULL);
	seg_from_desc(&ns, sel, d);
	if (!ns.s)
		raise_sel(cpu, EXC_GP, sel);
	if (segno == SEG_SS) {
		if (rpl != cpu->cpl || ns.dpl != cpu->cpl || (ns.type & 8) || !(ns.type & 2))
			raise_sel(cpu, EXC_GP, sel);
		if (!ns.present)
			raise_sel(cpu, EXC_SS, sel);
	} else {
		if ((ns.type & 0xa) == 8)
			raise_sel(cpu, EXC_GP, sel);    /* execute-only code */
		if ((!(ns.type & 8) || !(ns.type & 4)) && (rpl > ns.dpl || cpu->cpl > ns.dpl))
			raise_sel(cpu, EXC_GP, sel);
		if (!ns.present)
			raise_sel(cpu, EXC_NP, sel);
	}
	desc_set_accessed(cpu, addr, d);
	ns.type |= 1;
	*s = ns;
out:
	if (segno == SEG_SS)
		cpu->irq_shadow = true;
}

/* Check a code segment as the target of a far JMP/CALL (no gates); raises. */
static void code_check_direct(struct emu_cpu *cpu, uint16_t sel, const struct kvm_segment *ns)
{
	if (!seg_is_code(ns))
		raise_sel(cpu, EXC_GP, sel);
	if (ns->type & 4) {
		if (ns->dpl > cpu->cpl)
			raise_sel(cpu, EXC_GP, sel);
	} else if ((sel & 3) > cpu->cpl || ns->dpl != cpu->cpl) {
		raise_sel(cpu, EXC_GP, sel);
	}
	if (!ns->present)
		raise_sel(cpu, EXC_NP, sel);
	if ((cpu->efer & EFER_LMA) && ns->l && ns->db)
		raise_sel(cpu, EXC_GP, sel);
}

static bool canonical(uint64_t a)
{
	return (uint64_t)((int64_t)(a << 16) >> 16) == a;
}

/* #GP(0) unless `rip` is valid in code segment `cs` (canonical for a 64-bit segment, else within its limit). */
static void rip_check(struct emu_cpu *cpu, const struct kvm_segment *cs, uint64_t rip)
{
	if ((cpu->efer & EFER_LMA) && cs->l) {
		if (!canonical(rip))
			emu_raise(cpu, EXC_GP, 0);
	} else if (rip > cs->limit) {
		emu_raise(cpu, EXC_GP, 0);
	}
}

static void cs_commit(struct emu_cpu *cpu, const struct kvm_segment *ns, unsigned cpl)
{
	cpu->seg[SEG_CS] = *ns;
	cpu->seg[SEG_CS].selector = (uint16_t)((ns->selector & ~3u) | cpl);
	cpu->seg[SEG_CS].type |= 1;
	cpu->cpl = cpl;
	emu_update_mode(cpu);
}

/* Check `sel` as the stack segment for privilege level `cpl`; fills *out. Null is allowed when `null_ok`. */
static void ss_check(struct emu_cpu *cpu, uint16_t sel, unsigned cpl, bool null_ok, int vec_bad,
		     struct kvm_segment *out, uint64_t *addr, uint64_t *d)
{
	*d = 0;
	if (!(sel & 0xfffc)) {
		if (!null_ok)
			raise_sel(cpu, vec_bad, vec_bad == EXC_TS ? 0 : sel);
		seg_null(out, sel);
		out->dpl = (uint8_t)cpl;
		out->db = 1;
		return;
	}
	*d = desc_read(cpu, sel, vec_bad, addr, NULL);
	seg_from_desc(out, sel, *d);
	if ((sel & 3) != cpl || out->dpl != cpl || !out->s || (out->type & 8) || !(out->type & 2))
		raise_sel(cpu, vec_bad, sel);
	if (!out->present)
		raise_sel(cpu, EXC_SS, sel);
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
			seg_null(s, 0);
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

static uint64_t stack_mask(unsigned ssize)
{
	return ssize == 8 ? ~0ull : ssize == 4 ? 0xffffffffull : 0xffffull;
}

static uint64_t sp_commit(uint64_t old, uint64_t new, unsigned ssize)
{
	uint64_t m = stack_mask(ssize);
	return (old & ~m) | (new & m);
}

void emu_push(struct emu_cpu *cpu, uint64_t val, unsigned size)
{
	unsigned ss = emu_stack_size(cpu);
	uint64_t sp = (cpu->gpr[R_SP] - size) & stack_mask(ss);

	emu_write(cpu, SEG_SS, sp, size, val);
	cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], sp, ss);
}

uint64_t emu_pop(struct emu_cpu *cpu, unsigned size)
{
	unsigned ss = emu_stack_size(cpu);
	uint64_t sp = cpu->gpr[R_SP] & stack_mask(ss);
	uint64_t v = emu_read(cpu, SEG_SS, sp, size);

	cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], sp + size, ss);
	return v;
}

/* Stack accesses at an explicit stack pointer, committed by the caller. */
static uint64_t stk_read(struct emu_cpu *cpu, uint64_t sp, unsigned size)
{
	return emu_read(cpu, SEG_SS, sp & stack_mask(emu_stack_size(cpu)), size);
}

static void stk_push(struct emu_cpu *cpu, uint64_t *sp, unsigned size, uint64_t val)
{
	*sp = (*sp - size) & stack_mask(emu_stack_size(cpu));
	emu_write(cpu, SEG_SS, *sp, size, val);
}

/* ---- far transfers ---- */

static uint64_t tss_read(struct emu_cpu *cpu, unsigned off, unsigned size);
static void new_stack_push(struct emu_cpu *cpu, const struct kvm_segment *ss, uint64_t *sp, unsigned ssz,
			   unsigned size, uint64_t val, unsigned cpl);

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
			raise_sel(cpu, EXC_GP, gsel);
		glo = desc_read(cpu, gsel, EXC_GP, &gaddr, &ghi);
		if ((ghi >> 40) & 0x1f)
			raise_sel(cpu, EXC_GP, gsel);
	} else if (gtype != 0xc && gtype != 0x4) {
		raise_sel(cpu, EXC_GP, gsel);   /* TSS, task gate, LDT, interrupt gates */
	}
	if (gdpl < cpu->cpl || gdpl < (gsel & 3u))
		raise_sel(cpu, EXC_GP, gsel);
	if (!((glo >> 47) & 1))
		raise_sel(cpu, EXC_NP, gsel);
	uint16_t csel = (uint16_t)(glo >> 16);
	uint64_t off = (glo & 0xffff) | ((glo >> 32) & 0xffff0000ull) | (ghi << 32);
	unsigned params = lm ? 0 : (glo >> 32) & 0x1f;
	unsigned psize = lm ? 8 : gtype == 0xc ? 4 : 2;
	if (gtype == 4)
		off &= 0xffff;
	if (!(csel & 0xfffc))
		emu_raise(cpu, EXC_GP, 0);
	struct kvm_segment ns;
	uint64_t caddr, cd = desc_read(cpu, csel, EXC_GP, &caddr, NULL);
	seg_from_desc(&ns, csel, cd);
	if (!seg_is_code(&ns) || ns.dpl > cpu->cpl || (lm && (!ns.l || ns.db)))
		raise_sel(cpu, EXC_GP, csel);
	if (!ns.present)
		raise_sel(cpu, EXC_NP, csel);
	bool conforming = ns.type & 4;
	rip_check(cpu, &ns, off);
	if (!call) {
		if (!conforming && ns.dpl != cpu->cpl)
			raise_sel(cpu, EXC_GP, csel);
		desc_set_accessed(cpu, caddr, cd);
		cs_commit(cpu, &ns, cpu->cpl);
		cpu->rip = off;
		return;
	}
	if (conforming || ns.dpl == cpu->cpl) {
		uint64_t sp = cpu->gpr[R_SP];
		unsigned ssz = emu_stack_size(cpu);
		stk_push(cpu, &sp, psize, cpu->seg[SEG_CS].selector);
		stk_push(cpu, &sp, psize, cpu->rip);
		desc_set_accessed(cpu, caddr, cd);
		cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], sp, ssz);
		cs_commit(cpu, &ns, cpu->cpl);
		cpu->rip = off;
		return;
	}
	/* more privilege: stack of level ns.dpl from the TSS */
	unsigned ncpl = ns.dpl, nssz;
	struct kvm_segment nss;
	uint64_t nsp, ssaddr = 0, ssd = 0;
	if (lm) {
		nsp = tss_read(cpu, 4 + 8 * ncpl, 8);
		seg_null(&nss, (uint16_t)ncpl);
		nss.dpl = (uint8_t)ncpl;
		nss.db = 1;
		nssz = 8;
	} else {
		uint16_t ssel;
		if (cpu->tr.type & 8) {
			nsp = tss_read(cpu, 4 + 8 * ncpl, 4);
			ssel = (uint16_t)tss_read(cpu, 8 + 8 * ncpl, 2);
		} else {
			nsp = tss_read(cpu, 2 + 4 * ncpl, 2);
			ssel = (uint16_t)tss_read(cpu, 4 + 4 * ncpl, 2);
		}
		ss_check(cpu, ssel, ncpl, false, EXC_TS, &nss, &ssaddr, &ssd);
		nssz = nss.db ? 4 : 2;
	}
	uint64_t osp = cpu->gpr[R_SP];
	new_stack_push(cpu, &nss, &nsp, nssz, psize, cpu->seg[SEG_SS].selector, ncpl);
	new_stack_push(cpu, &nss, &nsp, nssz, psize, osp, ncpl);
	for (unsigned i = params; i-- > 0;)
		new_stack_push(cpu, &nss, &nsp, nssz, psize, stk_read(cpu, osp + i * psize, psize), ncpl);
	new_stack_push(cpu, &nss, &nsp, nssz, psize, cpu->seg[SEG_CS].selector, ncpl);
	new_stack_push(cpu, &nss, &nsp, nssz, psize, cpu->rip, ncpl);
	desc_set_accessed(cpu, caddr, cd);
	if (ssd)
		desc_set_accessed(cpu, ssaddr, ssd);
	cs_commit(cpu, &ns, ncpl);
	cpu->seg[SEG_SS] = nss;
	cpu->gpr[R_SP] = nssz == 8 ? nsp : sp_commit(osp, nsp, nssz);
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
	*d = desc_read(cpu, sel, EXC_GP, addr, NULL);
	if (!((*d >> 44) & 1)) {
		via_call_gate(cpu, sel, *d, call);
		return false;
	}
	seg_from_desc(ns, sel, *d);
	code_check_direct(cpu, sel, ns);
	rip_check(cpu, ns, off);
	return true;
}

void emu_far_jmp(struct emu_cpu *cpu, uint16_t sel, uint64_t off)
{
	struct kvm_segment ns;
	uint64_t addr, d;

	if (cpu->mode == EMU_REAL) {
		seg_real(&cpu->seg[SEG_CS], sel);
		cpu->rip = off;
		return;
	}
	if (!far_direct_target(cpu, sel, off, false, &ns, &addr, &d))
		return;
	desc_set_accessed(cpu, addr, d);
	cs_commit(cpu, &ns, cpu->cpl);
	cpu->rip = off;
}

void emu_far_call(struct emu_cpu *cpu, uint16_t sel, uint64_t off, unsigned opsize)
{
	struct kvm_segment ns;
	uint64_t addr, d, sp = cpu->gpr[R_SP];

	if (cpu->mode == EMU_REAL) {
		stk_push(cpu, &sp, opsize, cpu->seg[SEG_CS].selector);
		stk_push(cpu, &sp, opsize, cpu->rip);
		cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], sp, emu_stack_size(cpu));
		seg_real(&cpu->seg[SEG_CS], sel);
		cpu->rip = off;
		return;
	}
	if (!far_direct_target(cpu, sel, off, true, &ns, &addr, &d))
		return;
	unsigned ssz = emu_stack_size(cpu);
	stk_push(cpu, &sp, opsize, cpu->seg[SEG_CS].selector);
	stk_push(cpu, &sp, opsize, cpu->rip);
	desc_set_accessed(cpu, addr, d);
	cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], sp, ssz);
	cs_commit(cpu, &ns, cpu->cpl);
	cpu->rip = off;
}

/* Shared tail of far RET and IRET in protected/long mode: validate the return CS. */
static void ret_cs_check(struct emu_cpu *cpu, uint16_t sel, struct kvm_segment *ns, uint64_t *addr, uint64_t *d)
{
	if (!(sel & 0xfffc))
		emu_raise(cpu, EXC_GP, 0);
	*d = desc_read(cpu, sel, EXC_GP, addr, NULL);
	seg_from_desc(ns, sel, *d);
	unsigned rpl = sel & 3;
	if (!seg_is_code(ns) || rpl < cpu->cpl)
		raise_sel(cpu, EXC_GP, sel);
	if ((ns->type & 4) ? ns->dpl > rpl : ns->dpl != rpl)
		raise_sel(cpu, EXC_GP, sel);
	if (!ns->present)
		raise_sel(cpu, EXC_NP, sel);
	if ((cpu->efer & EFER_LMA) && ns->l && ns->db)
		raise_sel(cpu, EXC_GP, sel);
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
		cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], sp + 2 * opsize + imm, ssz);
		seg_real(&cpu->seg[SEG_CS], sel);
		cpu->rip = rip;
		return;
	}
	ret_cs_check(cpu, sel, &ns, &addr, &d);
	unsigned rpl = sel & 3;
	rip_check(cpu, &ns, rip);
	if (rpl == cpu->cpl) {
		desc_set_accessed(cpu, addr, d);
		cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], sp + 2 * opsize + imm, ssz);
		cs_commit(cpu, &ns, rpl);
		cpu->rip = rip;
		return;
	}
	uint64_t nsp = stk_read(cpu, sp + 2 * opsize + imm, opsize);
	uint16_t ssel = (uint16_t)stk_read(cpu, sp + 3 * opsize + imm, opsize);
	bool null_ok = (cpu->efer & EFER_LMA) && ns.l && rpl != 3;
	ss_check(cpu, ssel, rpl, null_ok, EXC_GP, &nss, &ssaddr, &ssd);
	desc_set_accessed(cpu, addr, d);
	if (ssd)
		desc_set_accessed(cpu, ssaddr, ssd);
	cs_commit(cpu, &ns, rpl);
	cpu->seg[SEG_SS] = nss;
	ssz = emu_stack_size(cpu);
	cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], nsp + imm, ssz);
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
		cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], sp + 3 * opsize, ssz);
		seg_real(&cpu->seg[SEG_CS], sel);
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
	rip_check(cpu, &ns, rip);
	if (pop_ss) {
		nsp = stk_read(cpu, sp + 3 * opsize, opsize);
		uint16_t ssel = (uint16_t)stk_read(cpu, sp + 4 * opsize, opsize);
		bool null_ok = (cpu->efer & EFER_LMA) && ns.l && rpl != 3;
		ss_check(cpu, ssel, rpl, null_ok, EXC_GP, &nss, &ssaddr, &ssd);
	}
	uint64_t nfl = flags_merge(cpu, cpu->rflags, fl, opsize);
	desc_set_accessed(cpu, addr, d);
	if (ssd)
		desc_set_accessed(cpu, ssaddr, ssd);
	unsigned old_cpl = cpu->cpl;
	cpu->rflags = nfl;
	cs_commit(cpu, &ns, rpl);
	if (pop_ss) {
		cpu->seg[SEG_SS] = nss;
		ssz = emu_stack_size(cpu);
		cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], nsp, ssz);
	} else {
		cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], nsp, ssz);
	}
	if (rpl > old_cpl)
		segs_drop_privileged(cpu, rpl);
	emu_update_mode(cpu);
	cpu->rip = rip;
	cpu->nmi_blocked = false;
}

/* ---- exception and interrupt delivery ---- */

static bool vector_has_error(int v)
{
	return v == EXC_DF || (v >= EXC_TS && v <= EXC_PF) || v == EXC_AC || v == 21 || v == 29 || v == 30;
}

static uint64_t tss_read(struct emu_cpu *cpu, unsigned off, unsigned size)
{
	if (cpu->tr.unusable || !cpu->tr.present || off + size - 1 > cpu->tr.limit)
		raise_sel(cpu, EXC_TS, cpu->tr.selector);
	return emu_read_linear(cpu, cpu->tr.base + off, size, true);
}

static void deliver_real(struct emu_cpu *cpu, int vector, uint64_t ret_rip)
{
	uint64_t ent = (uint64_t)vector * 4;

	if (ent + 3 > cpu->idt.limit)
		emu_raise(cpu, EXC_GP, 0);
	uint32_t v = (uint32_t)emu_read_linear(cpu, (cpu->idt.base + ent) & 0xffffffffull, 4, true);
	uint64_t sp = cpu->gpr[R_SP];
	stk_push(cpu, &sp, 2, cpu->rflags);
	stk_push(cpu, &sp, 2, cpu->seg[SEG_CS].selector);
	stk_push(cpu, &sp, 2, ret_rip);
	cpu->gpr[R_SP] = sp_commit(cpu->gpr[R_SP], sp, emu_stack_size(cpu));
	cpu->rflags &= ~(uint64_t)(EFL_IF | EFL_TF | EFL_AC | EFL_RF);
	seg_real(&cpu->seg[SEG_CS], (uint16_t)(v >> 16));
	cpu->rip = v & 0xffff;
}

/* Write `val` on a stack being built in segment `ss` (not yet loaded) at privilege `cpl`. */
static void new_stack_push(struct emu_cpu *cpu, const struct kvm_segment *ss, uint64_t *sp, unsigned ssz,
			   unsigned size, uint64_t val, unsigned cpl)
{
	*sp = (*sp - size) & stack_mask(ssz);
	uint64_t lin = ssz == 8 ? *sp : (ss->base + *sp) & 0xffffffffull;
	if (ssz == 8 && !canonical(lin))
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
	uint64_t addr, d = desc_read(cpu, sel, EXC_GP, &addr, NULL);
	seg_from_desc(&ns, sel, d);
	if (!seg_is_code(&ns) || ns.dpl > cpu->cpl)
		raise_sel(cpu, EXC_GP, sel);
	if (!ns.present)
		raise_sel(cpu, EXC_NP, sel);
	if (lm && (!ns.l || ns.db))
		raise_sel(cpu, EXC_GP, sel);
	unsigned ncpl = (ns.type & 4) ? cpu->cpl : ns.dpl;
	bool push_err = vector_has_error(vector) && !software;
	uint32_t err = error < 0 ? 0 : (uint32_t)error;
	uint64_t fl = cpu->rflags;
	uint64_t sp;
	unsigned ssz;

	if (lm) {
		sp = cpu->gpr[R_SP];
		if (ncpl < cpu->cpl)
			sp = tss_read(cpu, 4 + 8 * ncpl, 8);
		if (ist)
			sp = tss_read(cpu, 0x24 + 8 * (ist - 1), 8);
		sp &= ~15ull;
		ssz = 8;
		if (ncpl < cpu->cpl) {
			seg_null(&nss, (uint16_t)ncpl);
			nss.dpl = (uint8_t)ncpl;
			nss.db = 1;
		} else {
			nss = cpu->seg[SEG_SS];
		}
		new_stack_push(cpu, &nss, &sp, 8, 8, cpu->seg[SEG_SS].selector, ncpl);
		new_stack_push(cpu, &nss, &sp, 8, 8, cpu->gpr[R_SP], ncpl);
	} else if (ncpl < cpu->cpl) {
		uint16_t ssel;
		if (cpu->tr.type & 8) {         /* 32-bit TSS */
			sp = tss_read(cpu, 4 + 8 * ncpl, 4);
			ssel = (uint16_t)tss_read(cpu, 8 + 8 * ncpl, 2);
		} else {
			sp = tss_read(cpu, 2 + 4 * ncpl, 2);
			ssel = (uint16_t)tss_read(cpu, 4 + 4 * ncpl, 2);
		}
		uint64_t ssaddr, ssd;
		ss_check(cpu, ssel, ncpl, false, EXC_TS, &nss, &ssaddr, &ssd);
		ssz = nss.db ? 4 : 2;
		new_stack_push(cpu, &nss, &sp, ssz, psize, cpu->seg[SEG_SS].selector, ncpl);
		new_stack_push(cpu, &nss, &sp, ssz, psize, cpu->gpr[R_SP], ncpl);
	} else {
		nss = cpu->seg[SEG_SS];
		ssz = emu_stack_size(cpu);
		sp = cpu->gpr[R_SP];
	}
	new_stack_push(cpu, &nss, &sp, ssz, psize, fl, ncpl);
	new_stack_push(cpu, &nss, &sp, ssz, psize, cpu->seg[SEG_CS].selector, ncpl);
	new_stack_push(cpu, &nss, &sp, ssz, psize, ret_rip, ncpl);
	if (push_err)
		new_stack_push(cpu, &nss, &sp, ssz, psize, err, ncpl);
	if (!lm)
		rip_check(cpu, &ns, off & (psize == 2 ? 0xffff : 0xffffffff));
	else if (!canonical(off))
		emu_raise(cpu, EXC_GP, 0);

	/* commit */
	desc_set_accessed(cpu, addr, d);
	bool stack_switch = ncpl < cpu->cpl;
	uint64_t old_sp = cpu->gpr[R_SP];
	cs_commit(cpu, &ns, ncpl);
	if (stack_switch) {
		cpu->seg[SEG_SS] = nss;
		cpu->gpr[R_SP] = sp_commit(old_sp, sp, ssz == 8 ? 8 : ssz);
	} else {
		cpu->gpr[R_SP] = lm ? sp : sp_commit(old_sp, sp, ssz);
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

	if (opsize == 8 && !canonical(rip))
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
	if (to64 && (!canonical(rip) || !canonical(rsp)))
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
	require_cpl0(cpu);
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
	require_cpl0(cpu);
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
	require_cpl0(cpu);
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
	require_cpl0(cpu);
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
	require_cpl0(cpu);
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
	require_cpl0(cpu);
	if (cpu->mode == EMU_LONG64) {
		if (!canonical(base))
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
		raise_sel(cpu, EXC_GP, sel);
	*d = desc_read(cpu, sel, EXC_GP, addr, lm ? &hi : NULL);
	seg_from_desc(out, sel, *d);
	if (out->s || !((types >> out->type) & 1))
		raise_sel(cpu, EXC_GP, sel);
	if (!out->present)
		raise_sel(cpu, EXC_NP, sel);
	if (lm)
		out->base |= (hi & 0xffffffffull) << 32;
}

void emu_ltr(struct emu_cpu *cpu, uint16_t sel)
{
	struct kvm_segment ns;
	uint64_t addr, d;

	if (cpu->mode == EMU_REAL)
		emu_raise(cpu, EXC_UD, -1);
	require_cpl0(cpu);
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
	require_cpl0(cpu);
	if (!(sel & 0xfffc)) {
		seg_null(&cpu->ldt, sel);
		return;
	}
	sysdesc_load(cpu, sel, 1u << 2, &ns, &addr, &d);
	cpu->ldt = ns;
}

void emu_invlpg(struct emu_cpu *cpu, uint64_t lin)
{
	require_cpl0(cpu);
	emu_tlb_flush_page(cpu, lin);
}

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
		if (!canonical(v))
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

	require_cpl0(cpu);
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
	require_cpl0(cpu);
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
