/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the interpreter's decoder/executor (hypervisor/emu/emu_exec*.c), linked alone with a small
 * flat-memory fake of the emu.h services it calls (as tests/unit/test_emu_exec.c does). Input: byte 0 picks the
 * mode (real, 16/32-bit protected, compatibility, 64-bit) and CPL/flags, bytes 1..64 seed eight registers, the
 * rest is guest code at CODE; up to 64 instructions run. Invariants: nothing crashes (ASan/UBSan clean), a faulting
 * instruction leaves RIP on itself, and RIP only moves when an instruction completes or transfers control.
 * Seeds (tests/fuzz/corpus/fuzz_emu_exec/): a 64-bit loop with REP and LOCK forms.
 */
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hypervisor/emu/emu.h"

#define RAM_SIZE (1u << 20)
#define CODE 0x1000u

static uint8_t ram[RAM_SIZE];

static uint64_t fake_linear(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size)
{
	uint64_t lin = cpu->mode == EMU_LONG64 ? ((seg == SEG_FS || seg == SEG_GS) ? cpu->seg[seg].base + off : off)
					       : (uint32_t)(cpu->seg[seg].base + off);

	if (lin >= RAM_SIZE || size > RAM_SIZE - lin)
		emu_raise(cpu, EXC_PF, 0);
	return lin;
}

uint64_t emu_read(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size)
{
	uint64_t v = 0;

	memcpy(&v, ram + fake_linear(cpu, seg, off, size), size);
	return v;
}

void emu_write(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, uint64_t val)
{
	memcpy(ram + fake_linear(cpu, seg, off, size), &val, size);
}

uint64_t emu_linear(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, bool write)
{
	(void)write;
	return fake_linear(cpu, seg, off, size);
}

uint8_t emu_fetch8(struct emu_cpu *cpu, uint64_t rip)
{
	return ram[fake_linear(cpu, SEG_CS, rip, 1)];
}

const uint8_t *emu_fetch_ptr(struct emu_cpu *cpu, uint64_t rip, unsigned *avail)
{
	uint64_t lin = fake_linear(cpu, SEG_CS, rip, 1);

	*avail = 4096 - (unsigned)(lin & 0xfff);
	return ram + lin;
}

void *emu_atomic_ptr(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size)
{
	uint64_t lin = fake_linear(cpu, seg, off, size);

	if (lin & (size - 1))
		emu_raise(cpu, EXC_GP, 0);    /* as emu_mmu.c: misaligned LOCK is refused */
	return ram + lin;
}

uint64_t emu_read_linear(struct emu_cpu *cpu, uint64_t lin, unsigned size, bool supervisor)
{
	uint64_t v = 0;

	(void)supervisor;
	if (lin >= RAM_SIZE || size > RAM_SIZE - lin)
		emu_raise(cpu, EXC_PF, 0);
	memcpy(&v, ram + lin, size);
	return v;
}

_Noreturn void emu_raise(struct emu_cpu *cpu, int vector, int error)
{
	cpu->exc_vector = vector;
	cpu->exc_error = error;
	longjmp(cpu->jmp, EMU_JMP_FAULT);
}

_Noreturn void emu_exit_now(struct emu_cpu *cpu)
{
	longjmp(cpu->jmp, EMU_JMP_EXIT);
}

uint32_t emu_io_in(struct emu_cpu *cpu, uint16_t port, unsigned size)
{
	(void)size;
	if (!cpu->io_done)
		longjmp(cpu->jmp, EMU_JMP_EXIT);
	cpu->io_done = false;
	return port * 0x01010101u;
}

void emu_io_out(struct emu_cpu *cpu, uint16_t port, unsigned size, uint32_t val)
{
	(void)cpu; (void)port; (void)size; (void)val;
}

void emu_load_seg(struct emu_cpu *cpu, int seg, uint16_t sel)
{
	if (seg == SEG_CS || seg > SEG_GS)
		emu_raise(cpu, EXC_UD, -1);
	cpu->seg[seg].selector = sel;
	cpu->seg[seg].base = (uint64_t)sel << 4;
}

void emu_far_jmp(struct emu_cpu *cpu, uint16_t sel, uint64_t off)
{
	cpu->seg[SEG_CS].selector = sel;
	cpu->seg[SEG_CS].base = (uint64_t)sel << 4;
	cpu->rip = off;
}

void emu_far_call(struct emu_cpu *cpu, uint16_t sel, uint64_t off, unsigned opsize)
{
	(void)opsize;
	emu_far_jmp(cpu, sel, off);
}

void emu_far_ret(struct emu_cpu *cpu, unsigned opsize, uint16_t imm)
{
	(void)cpu; (void)opsize; (void)imm;
}

void emu_iret(struct emu_cpu *cpu, unsigned opsize)
{
	(void)cpu; (void)opsize;
}

void emu_int(struct emu_cpu *cpu, uint8_t vector, bool software, uint64_t next_rip)
{
	(void)software;
	cpu->rip = next_rip + vector;
}

void emu_syscall(struct emu_cpu *cpu)
{
	(void)cpu;
}

void emu_sysret(struct emu_cpu *cpu, unsigned opsize)
{
	(void)cpu; (void)opsize;
}

void emu_sysenter(struct emu_cpu *cpu)
{
	(void)cpu;
}

void emu_sysexit(struct emu_cpu *cpu, unsigned opsize)
{
	(void)cpu; (void)opsize;
}

void emu_hlt(struct emu_cpu *cpu)
{
	longjmp(cpu->jmp, EMU_JMP_EXIT);
}

uint64_t emu_read_cr(struct emu_cpu *cpu, int n)
{
	return n == 0 ? cpu->cr0 : n == 3 ? cpu->cr3 : cpu->cr4;
}

void emu_write_cr(struct emu_cpu *cpu, int n, uint64_t val)
{
	if (n == 3)
		cpu->cr3 = val;
}

uint64_t emu_read_dr(struct emu_cpu *cpu, int n)
{
	(void)cpu;
	return (uint64_t)n;
}

void emu_write_dr(struct emu_cpu *cpu, int n, uint64_t val)
{
	(void)cpu; (void)n; (void)val;
}

uint64_t emu_rdmsr(struct emu_cpu *cpu, uint32_t index)
{
	(void)cpu;
	return index;
}

void emu_wrmsr(struct emu_cpu *cpu, uint32_t index, uint64_t val)
{
	(void)cpu; (void)index; (void)val;
}

void emu_cpuid(struct emu_cpu *cpu)
{
	cpu->gpr[R_BX] = 0;
}

uint64_t emu_rdtsc(struct emu_cpu *cpu)
{
	return cpu->insns;
}

void emu_lgdt_lidt(struct emu_cpu *cpu, bool idt, uint64_t base, uint16_t limit)
{
	struct kvm_dtable *t = idt ? &cpu->idt : &cpu->gdt;

	t->base = base;
	t->limit = limit;
}

void emu_ltr(struct emu_cpu *cpu, uint16_t sel)
{
	cpu->tr.selector = sel;
}

void emu_lldt(struct emu_cpu *cpu, uint16_t sel)
{
	cpu->ldt.selector = sel;
}

void emu_invlpg(struct emu_cpu *cpu, uint64_t lin)
{
	(void)cpu; (void)lin;
}

static int step(struct emu_cpu *cpu)
{
	int r = setjmp(cpu->jmp);

	if (r)
		return r;
	emu_step(cpu);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum emu_mode modes[] = { EMU_REAL, EMU_PROT16, EMU_PROT32, EMU_COMPAT32, EMU_LONG64,
					       EMU_LONG64, EMU_LONG64, EMU_LONG64 };
	static struct emu_cpu cpu;
	uint8_t cfg;

	if (size < 1 + 64)
		return 0;
	cfg = data[0];
	memset(&cpu, 0, sizeof(cpu));
	memset(ram, 0, 0x10000);
	cpu.mode = modes[cfg & 7];
	cpu.cpl = (cfg & 8) ? 3 : 0;
	cpu.rflags = 2 | ((cfg & 0x10) ? EFL_DF : 0) | ((cfg & 0x20) ? EFL_IOPL : 0);
	cpu.cr0 = 0x11 | ((cfg & 0x40) ? 4 : 0);
	for (int s = 0; s < 6; s++) {
		cpu.seg[s].limit = 0xfffff;
		cpu.seg[s].db = cpu.mode == EMU_PROT32 || cpu.mode == EMU_COMPAT32;
	}
	cpu.seg[SEG_CS].l = cpu.mode == EMU_LONG64;
	for (unsigned r = 0; r < 8; r++)
		memcpy(&cpu.gpr[r], data + 1 + 8 * r, 8);
	cpu.gpr[R_SP] = 0x8000 + (cpu.gpr[R_SP] & 0xfff);
	cpu.gpr[R_CX] &= 0x3ff;    /* bounded REP counts */
	data += 65;
	size -= 65;
	if (size > 0x4000)
		size = 0x4000;
	memcpy(ram + CODE, data, size);
	cpu.rip = CODE;
	for (unsigned i = 0; i < 64; i++) {
		uint64_t before = cpu.rip;
		int r = step(&cpu);

		if (r == EMU_JMP_FAULT) {
			if (cpu.rip != before)
				abort();    /* a fault must not move RIP */
			break;
		}
		if (r == EMU_JMP_EXIT) {
			cpu.io_done = true;    /* supply the value and let the instruction run again */
			continue;
		}
	}
	return 0;
}
