// SPDX-License-Identifier: MIT
/*
 * String instructions (MOVS, CMPS, STOS, LODS, SCAS, INS, OUTS) with REP/REPE/REPNE, and IN/OUT.
 *
 * REP is resumable: after every element RSI/RDI/RCX are written back, so a fault or an exit in the middle leaves
 * the registers showing the progress and RIP on the instruction, which the next step continues. One emu_step runs
 * at most EMU_REP_BATCH elements and then returns with RIP unchanged (the run loop sees kicks and interrupts).
 */
#include "hypervisor/emu/emu_exec_internal.h"

/* I/O permission: CPL <= IOPL (not in VM86), else the TSS I/O bitmap must allow every port of the access. */
void emu_io_check(struct emu_insn *d, uint16_t port, unsigned size)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned iopl = (unsigned)(cpu->rflags >> 12) & 3;
	uint64_t base, limit, bmoff, bits;

	if (emu_real_mode(cpu))
		return;
	if (!(cpu->rflags & EFL_VM) && emu_cpl(cpu) <= iopl)
		return;
	base = cpu->tr.base;
	limit = cpu->tr.limit;
	if (limit < 0x67)
		emu_gp0(d);
	bmoff = emu_read_linear(cpu, base + 0x66, 2, true) + port / 8;
	if (bmoff + 1 > limit)
		emu_gp0(d);
	bits = emu_read_linear(cpu, base + bmoff, 2, true);
	if ((bits >> (port & 7)) & ((1u << size) - 1))
		emu_gp0(d);
}

void emu_exec_io(struct emu_insn *d, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size = (op & 1) ? (d->opsize == 2 ? 2 : 4) : 1;
	uint16_t port = op < 0xe8 ? emu_imm8(d) : (uint16_t)cpu->gpr[R_DX];
	bool out = op & 2;

	if (d->lock)
		emu_ud(d);
	emu_io_check(d, port, size);
	if (!out) {
		uint32_t v = emu_io_in(cpu, port, size);    /* may exit; the instruction then runs again */

		emu_reg_set(d, R_AX, size, v);
		emu_insn_retire(d);
		return;
	}
	emu_io_out(cpu, port, size, (uint32_t)emu_reg_get(d, R_AX, size));
	emu_insn_retire(d);
	emu_exit_now(cpu);
}

void emu_exec_string(struct emu_insn *d, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned size, ad = d->adsize, n = 0;
	uint64_t m = emu_mask(ad), si, di, cx, a, b;
	int seg = d->seg != SEG_NONE ? d->seg : SEG_DS;
	bool rep = d->rep != 0, ins = op < 0x70;
	int64_t step;

	if (d->lock)
		emu_ud(d);
	size = (op & 1) ? d->opsize : 1;
	if (ins && size == 8)
		size = 4;
	step = (cpu->rflags & EFL_DF) ? -(int64_t)size : (int64_t)size;
	if (ins)
		emu_io_check(d, (uint16_t)cpu->gpr[R_DX], size);
	cx = cpu->gpr[R_CX] & m;
	if (rep && cx == 0) {
		emu_insn_retire(d);
		return;
	}
	for (;;) {
		si = cpu->gpr[R_SI] & m;
		di = cpu->gpr[R_DI] & m;
		switch (op) {
		case 0x6c: case 0x6d:    /* INS */
			a = emu_io_in(cpu, (uint16_t)cpu->gpr[R_DX], size);
			emu_write(cpu, SEG_ES, di, size, a);
			emu_reg_set_ad(cpu, R_DI, ad, di + (uint64_t)step);
			break;
		case 0x6e: case 0x6f:    /* OUTS: one element per exit */
			a = emu_read(cpu, seg, si, size);
			emu_io_out(cpu, (uint16_t)cpu->gpr[R_DX], size, (uint32_t)a);
			emu_reg_set_ad(cpu, R_SI, ad, si + (uint64_t)step);
			break;
		case 0xa4: case 0xa5:    /* MOVS */
			a = emu_read(cpu, seg, si, size);
			emu_write(cpu, SEG_ES, di, size, a);
			emu_reg_set_ad(cpu, R_SI, ad, si + (uint64_t)step);
			emu_reg_set_ad(cpu, R_DI, ad, di + (uint64_t)step);
			break;
		case 0xa6: case 0xa7:    /* CMPS */
			a = emu_read(cpu, seg, si, size);
			b = emu_read(cpu, SEG_ES, di, size);
			emu_alu(cpu, ALU_CMP, size, a, b);
			emu_reg_set_ad(cpu, R_SI, ad, si + (uint64_t)step);
			emu_reg_set_ad(cpu, R_DI, ad, di + (uint64_t)step);
			break;
		case 0xaa: case 0xab:    /* STOS */
			emu_write(cpu, SEG_ES, di, size, cpu->gpr[R_AX]);
			emu_reg_set_ad(cpu, R_DI, ad, di + (uint64_t)step);
			break;
		case 0xac: case 0xad:    /* LODS */
			a = emu_read(cpu, seg, si, size);
			emu_reg_set(d, R_AX, size, a);
			emu_reg_set_ad(cpu, R_SI, ad, si + (uint64_t)step);
			break;
		default:                 /* AE/AF SCAS */
			b = emu_read(cpu, SEG_ES, di, size);
			emu_alu(cpu, ALU_CMP, size, emu_reg_get(d, R_AX, size), b);
			emu_reg_set_ad(cpu, R_DI, ad, di + (uint64_t)step);
			break;
		}
		if (!rep)
			break;
		cx = (cx - 1) & m;
		emu_reg_set_ad(cpu, R_CX, ad, cx);
		if (cx == 0)
			break;
		if ((op == 0xa6 || op == 0xa7 || op == 0xae || op == 0xaf) &&
		    ((d->rep == 0xf3) != !!(cpu->rflags & EFL_ZF)))
			break;    /* REPE stops on ZF=0, REPNE on ZF=1 */
		if (op == 0x6e || op == 0x6f)
			emu_exit_now(cpu);    /* the rest after the VMM handled this element; RIP stays */
		if (cpu->exit_pending)
			return;               /* an MMIO write exit: one per iteration, RIP stays */
		if (++n >= EMU_REP_BATCH)
			return;               /* continue on the next step; RIP stays */
	}
	emu_insn_retire(d);
	if (op == 0x6e || op == 0x6f)
		emu_exit_now(cpu);
}
