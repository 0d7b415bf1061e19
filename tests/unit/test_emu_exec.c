/* SPDX-License-Identifier: MIT */
/*
 * emu_exec: the interpreter's decoder/executor, linked alone with a flat-memory fake of the emu.h services it
 * calls (memory = one RAM array, linear = segment base + offset, no paging; system helpers record their calls).
 *
 * The main test is differential: every instruction form of the integer ALU (ALU ops, shifts and rotates,
 * MUL/IMUL/DIV/IDIV, BT*, BSF/BSR, SHLD/SHRD, CMPXCHG, XADD, SETcc, CMOVcc, MOVZX/MOVSX, BSWAP, ...) with random
 * prefixes, registers and operand values (edge values mixed in) runs natively on the host CPU — the same bytes,
 * placed in an executable buffer between a register-loading prologue and a storing epilogue — and in the
 * interpreter in 64-bit mode; results, memory and all six arithmetic flags must be equal, and a host #DE (SIGFPE)
 * must be an interpreter #DE. Targeted tests cover what the host cannot run in 64-bit mode (real mode, 16-bit
 * addressing, BCD), branches and the stack, string instructions with REP, resumability, LOCK from two threads,
 * #UD/#DE/#GP, and I/O exits. The ALU-loop throughput is printed (not asserted).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "hypervisor/emu/emu.h"

/* ---------------------------------------------------------------- the fake emu.h services */

#define RAM_SIZE (4u << 20)
static uint8_t *ram;

static __thread struct {
	uint64_t fault_lo, fault_hi;  /* accesses touching [lo, hi) raise #PF */
	bool no_fast_fetch;
	unsigned hlt, syscalls, far_jmps, ints, iret, sysenters, sysexit_opsize;
	int last_int;
	uint64_t int_next;
	uint16_t far_sel;
	uint64_t far_off;
	/* port I/O */
	uint32_t in_value;
	uint16_t io_port;
	unsigned io_size, io_outs;
	uint32_t io_out_val;
	bool io_in_exit;
} fk;

static uint64_t fake_linear(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size)
{
	uint64_t lin;

	if (cpu->mode == EMU_LONG64)
		lin = (seg == SEG_FS || seg == SEG_GS) ? cpu->seg[seg].base + off : off;
	else
		lin = (uint32_t)(cpu->seg[seg].base + off);
	if (lin + size > RAM_SIZE || lin + size < lin || (lin < fk.fault_hi && lin + size > fk.fault_lo)) {
		cpu->cr2 = lin;
		emu_raise(cpu, EXC_PF, 0);
	}
	return lin;
}

/* Fake RAM accesses are atomic when aligned, like emu_mmu.c's (the LOCK tests run several threads on it). */
static uint64_t ld(const uint8_t *p, unsigned size)
{
	uint64_t v = 0;

	if (((uintptr_t)p & (size - 1)) == 0) {
		switch (size) {
		case 1: return __atomic_load_n(p, __ATOMIC_ACQUIRE);
		case 2: return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_ACQUIRE);
		case 4: return __atomic_load_n((const uint32_t *)(const void *)p, __ATOMIC_ACQUIRE);
		case 8: return __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_ACQUIRE);
		}
	}
	memcpy(&v, p, size);
	return v;
}

static void st(uint8_t *p, unsigned size, uint64_t v)
{
	if (((uintptr_t)p & (size - 1)) == 0) {
		switch (size) {
		case 1: __atomic_store_n(p, (uint8_t)v, __ATOMIC_RELEASE); return;
		case 2: __atomic_store_n((uint16_t *)(void *)p, (uint16_t)v, __ATOMIC_RELEASE); return;
		case 4: __atomic_store_n((uint32_t *)(void *)p, (uint32_t)v, __ATOMIC_RELEASE); return;
		case 8: __atomic_store_n((uint64_t *)(void *)p, v, __ATOMIC_RELEASE); return;
		}
	}
	memcpy(p, &v, size);
}

uint64_t emu_read(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size)
{
	return ld(ram + fake_linear(cpu, seg, off, size), size);
}

void emu_write(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, uint64_t val)
{
	st(ram + fake_linear(cpu, seg, off, size), size, val);
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

	if (fk.no_fast_fetch) {
		*avail = 0;
		return NULL;
	}
	*avail = 4096 - (unsigned)(lin & 0xfff);
	if (fk.fault_hi > lin && fk.fault_lo >= lin && fk.fault_lo - lin < *avail)
		*avail = (unsigned)(fk.fault_lo - lin);
	return ram + lin;
}

void *emu_atomic_ptr(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size)
{
	return ram + fake_linear(cpu, seg, off, size);
}

uint64_t emu_read_linear(struct emu_cpu *cpu, uint64_t lin, unsigned size, bool supervisor)
{
	(void)supervisor;
	if (lin + size > RAM_SIZE)
		emu_raise(cpu, EXC_PF, 0);
	return ld(ram + lin, size);
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
	fk.io_port = port;
	fk.io_size = size;
	if (!cpu->io_done) {
		fk.io_in_exit = true;
		longjmp(cpu->jmp, EMU_JMP_EXIT);
	}
	cpu->io_done = false;
	return fk.in_value;
}

void emu_io_out(struct emu_cpu *cpu, uint16_t port, unsigned size, uint32_t val)
{
	(void)cpu;
	fk.io_port = port;
	fk.io_size = size;
	fk.io_out_val = val;
	fk.io_outs++;
}

void emu_load_seg(struct emu_cpu *cpu, int seg, uint16_t sel)
{
	/* real-mode semantics are enough here; emu_sys.c does descriptors */
	cpu->seg[seg].selector = sel;
	cpu->seg[seg].base = (uint64_t)sel << 4;
}

void emu_far_jmp(struct emu_cpu *cpu, uint16_t sel, uint64_t off)
{
	fk.far_jmps++;
	fk.far_sel = sel;
	fk.far_off = off;
	emu_load_seg(cpu, SEG_CS, sel);
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
	fk.iret++;
}

void emu_int(struct emu_cpu *cpu, uint8_t vector, bool software, uint64_t next_rip)
{
	(void)cpu; (void)software;
	fk.ints++;
	fk.last_int = vector;
	fk.int_next = next_rip;
}

void emu_syscall(struct emu_cpu *cpu)
{
	(void)cpu;
	fk.syscalls++;
}

void emu_sysret(struct emu_cpu *cpu, unsigned opsize)
{
	(void)cpu; (void)opsize;
}

void emu_sysenter(struct emu_cpu *cpu)
{
	fk.sysenters++;
	cpu->rip = 0x5000;
}

void emu_sysexit(struct emu_cpu *cpu, unsigned opsize)
{
	fk.sysexit_opsize = opsize;
	cpu->rip = 0x6000;
}

void emu_hlt(struct emu_cpu *cpu)
{
	fk.hlt++;
	longjmp(cpu->jmp, EMU_JMP_EXIT);
}

uint64_t emu_read_cr(struct emu_cpu *cpu, int n)
{
	return n == 0 ? cpu->cr0 : n == 2 ? cpu->cr2 : n == 3 ? cpu->cr3 : n == 4 ? cpu->cr4 : cpu->cr8;
}

void emu_write_cr(struct emu_cpu *cpu, int n, uint64_t val)
{
	if (n == 0)
		cpu->cr0 = val;
	else if (n == 3)
		cpu->cr3 = val;
	else if (n == 4)
		cpu->cr4 = val;
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
	return 0x1122334455667788ull ^ index;
}

void emu_wrmsr(struct emu_cpu *cpu, uint32_t index, uint64_t val)
{
	if (index == 0xc0000101)
		cpu->seg[SEG_GS].base = val;
}

void emu_cpuid(struct emu_cpu *cpu)
{
	cpu->gpr[R_BX] = 0x756e6547;
}

uint64_t emu_rdtsc(struct emu_cpu *cpu)
{
	(void)cpu;
	return 0x0000000500000007ull;
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
	cpu->cr2 = lin;    /* recorded for the test */
}

/* ---------------------------------------------------------------- helpers */

#define CODE 0x1000u
#define DATA 0x8000u

static void cpu_init(struct emu_cpu *cpu, enum emu_mode mode)
{
	memset(cpu, 0, sizeof(*cpu));
	cpu->mode = mode;
	cpu->rflags = 2;
	cpu->rip = CODE;
	cpu->gpr[R_SP] = 0x7000;
	cpu->cr0 = mode == EMU_REAL ? 0x10 : 0x80000011;
	for (int s = 0; s < 6; s++) {
		cpu->seg[s].limit = 0xffffffff;
		cpu->seg[s].db = mode == EMU_PROT32 || mode == EMU_COMPAT32;
	}
	cpu->seg[SEG_CS].l = mode == EMU_LONG64;
	cpu->pending_irq = -1;
}

/* Executes one instruction; returns 0 when it completed, else the longjmp value (fault vector in exc_vector). */
static int step(struct emu_cpu *cpu)
{
	int r = setjmp(cpu->jmp);

	if (r)
		return r;
	emu_step(cpu);
	return 0;
}

static void put_code(struct emu_cpu *cpu, const void *code, size_t n)
{
	memcpy(ram + cpu->seg[SEG_CS].base + CODE, code, n);
	cpu->rip = CODE;
}

/* Puts `code` at CODE and executes one instruction; asserts it completed. */
static void run1(struct emu_cpu *cpu, const void *code, size_t n)
{
	int rc;

	put_code(cpu, code, n);
	rc = step(cpu);
	if (rc)
		fprintf(stderr, "step: rc %d vector %d at %02x %02x %02x\n", rc, cpu->exc_vector,
			((const uint8_t *)code)[0], n > 1 ? ((const uint8_t *)code)[1] : 0,
			n > 2 ? ((const uint8_t *)code)[2] : 0);
	assert_int_equal(rc, 0);
}

static int run1_rc(struct emu_cpu *cpu, const void *code, size_t n)
{
	put_code(cpu, code, n);
	return step(cpu);
}

#define RUN(cpu, ...) do { const uint8_t c_[] = { __VA_ARGS__ }; run1(cpu, c_, sizeof(c_)); } while (0)
#define RUN_RC(cpu, ...) ({ const uint8_t c_[] = { __VA_ARGS__ }; run1_rc(cpu, c_, sizeof(c_)); })

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	rng_state = x;
	return x;
}

static uint64_t rnd_value(void)
{
	static const uint64_t edge[] = {
		0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff,
		0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull, 0x7fffffffffffffffull,
		0x8000000000000000ull, ~0ull, ~0ull - 1, 0x8000000000000001ull, 0xff00, 0xffffff80ull,
	};
	uint64_t r = rnd();

	switch (r & 7) {
	case 0: case 1: case 2:
		return edge[(r >> 8) % (sizeof(edge) / sizeof(edge[0]))];
	case 3:
		return (r >> 8) & 0xff;
	default:
		return rnd();
	}
}

/* ---------------------------------------------------------------- differential against the host CPU */

struct ctx {
	uint64_t r[16];
	uint64_t fl;
};

static uint8_t *jit;
static sigjmp_buf fpe_jmp;

static void on_sigfpe(int sig)
{
	(void)sig;
	siglongjmp(fpe_jmp, 1);
}

static size_t jit_regs(uint8_t *p, uint8_t opc)
{
	size_t n = 0;

	for (unsigned i = 0; i < 16; i++) {
		if (i == R_SP || i == R_DI)
			continue;
		p[n++] = (uint8_t)(0x48 | (i >= 8 ? 4 : 0));
		p[n++] = opc;
		p[n++] = (uint8_t)(0x47 | ((i & 7) << 3));
		p[n++] = (uint8_t)(8 * i);
	}
	return n;
}

/* Runs `insn` natively with the registers and flags of c (updated); false if it raised SIGFPE. */
static bool host_run(struct ctx *c, const uint8_t *insn, size_t len)
{
	static const uint8_t pro[] = { 0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57, 0x57,
				       0xff, 0xb7, 0x80, 0, 0, 0, 0x9d };
	static const uint8_t epi1[] = { 0x9c, 0x57, 0x48, 0x8b, 0x7c, 0x24, 0x10 };
	static const uint8_t epi2[] = { 0x58, 0x48, 0x89, 0x47, 0x38, 0x58, 0x48, 0x89, 0x87, 0x80, 0, 0, 0, 0x5f,
					0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xc3 };
	uint8_t *p = jit;
	volatile bool ok = true;

	memcpy(p, pro, sizeof(pro));
	p += sizeof(pro);
	p += jit_regs(p, 0x8b);
	memcpy(p, (const uint8_t[]){ 0x48, 0x8b, 0x7f, 0x38 }, 4);
	p += 4;
	memcpy(p, insn, len);
	p += len;
	memcpy(p, epi1, sizeof(epi1));
	p += sizeof(epi1);
	p += jit_regs(p, 0x89);
	memcpy(p, epi2, sizeof(epi2));
	if (sigsetjmp(fpe_jmp, 1) == 0)
		((void (*)(struct ctx *))(void *)jit)(c);
	else
		ok = false;
	return ok;
}

enum { K_FULL, K_BYTE, K_NONE };
enum { MR_NONE, MR_ANY, MR_MEM, MR_OREG };

struct form {
	uint8_t op[3];
	uint8_t oplen;
	uint8_t modrm;       /* MR_* */
	int8_t ext_lo, ext_hi; /* reg field range for opcode-extension forms, -1 none */
	char imm;            /* 0, 'b' imm8, 'z' imm16/32, 'v' imm16/32/64 */
	uint8_t reg_kind, rm_kind;
	bool bitmem, no66, fixed_pre;
};

#define F1(o, m, rk, mk, im) { { o }, 1, m, -1, -1, im, rk, mk, false, false, false }
#define FX(o, lo, hi, mk, im) { { o }, 1, MR_ANY, lo, hi, im, K_NONE, mk, false, false, false }
#define F2(o, m, rk, mk, im) { { 0x0f, o }, 2, m, -1, -1, im, rk, mk, false, false, false }

static const struct form forms[] = {
	F1(0x69, MR_ANY, K_FULL, K_FULL, 'z'), F1(0x6b, MR_ANY, K_FULL, K_FULL, 'b'),
	FX(0x80, 0, 7, K_BYTE, 'b'), FX(0x81, 0, 7, K_FULL, 'z'), FX(0x83, 0, 7, K_FULL, 'b'),
	F1(0x84, MR_ANY, K_BYTE, K_BYTE, 0), F1(0x85, MR_ANY, K_FULL, K_FULL, 0),
	F1(0x86, MR_ANY, K_BYTE, K_BYTE, 0), F1(0x87, MR_ANY, K_FULL, K_FULL, 0),
	F1(0x88, MR_ANY, K_BYTE, K_BYTE, 0), F1(0x89, MR_ANY, K_FULL, K_FULL, 0),
	F1(0x8a, MR_ANY, K_BYTE, K_BYTE, 0), F1(0x8b, MR_ANY, K_FULL, K_FULL, 0),
	F1(0x8d, MR_MEM, K_FULL, K_FULL, 0), F1(0x63, MR_ANY, K_FULL, K_FULL, 0),
	F1(0x90, MR_OREG, K_NONE, K_FULL, 0), F1(0x98, MR_NONE, K_NONE, K_NONE, 0),
	F1(0x99, MR_NONE, K_NONE, K_NONE, 0), F1(0x9e, MR_NONE, K_NONE, K_NONE, 0),
	F1(0x9f, MR_NONE, K_NONE, K_NONE, 0), F1(0xa8, MR_NONE, K_NONE, K_NONE, 'b'),
	F1(0xa9, MR_NONE, K_NONE, K_NONE, 'z'), F1(0xb0, MR_OREG, K_NONE, K_BYTE, 'b'),
	F1(0xb8, MR_OREG, K_NONE, K_FULL, 'v'),
	FX(0xc0, 0, 7, K_BYTE, 'b'), FX(0xc1, 0, 7, K_FULL, 'b'), FX(0xd0, 0, 7, K_BYTE, 0),
	FX(0xd1, 0, 7, K_FULL, 0), FX(0xd2, 0, 7, K_BYTE, 0), FX(0xd3, 0, 7, K_FULL, 0),
	FX(0xc6, 0, 0, K_BYTE, 'b'), FX(0xc7, 0, 0, K_FULL, 'z'),
	F1(0xf5, MR_NONE, K_NONE, K_NONE, 0), F1(0xf8, MR_NONE, K_NONE, K_NONE, 0),
	F1(0xf9, MR_NONE, K_NONE, K_NONE, 0),
	FX(0xf6, 0, 1, K_BYTE, 'b'), FX(0xf6, 2, 7, K_BYTE, 0), FX(0xf7, 0, 1, K_FULL, 'z'),
	FX(0xf7, 2, 7, K_FULL, 0), FX(0xfe, 0, 1, K_BYTE, 0), FX(0xff, 0, 1, K_FULL, 0),
	F2(0x40, MR_ANY, K_FULL, K_FULL, 0), F2(0x90, MR_ANY, K_NONE, K_BYTE, 0),
	{ { 0x0f, 0xa3 }, 2, MR_ANY, -1, -1, 0, K_FULL, K_FULL, true, false, false },
	{ { 0x0f, 0xab }, 2, MR_ANY, -1, -1, 0, K_FULL, K_FULL, true, false, false },
	{ { 0x0f, 0xb3 }, 2, MR_ANY, -1, -1, 0, K_FULL, K_FULL, true, false, false },
	{ { 0x0f, 0xbb }, 2, MR_ANY, -1, -1, 0, K_FULL, K_FULL, true, false, false },
	{ { 0x0f, 0xba }, 2, MR_ANY, 4, 7, 'b', K_NONE, K_FULL, false, false, false },
	F2(0xa4, MR_ANY, K_FULL, K_FULL, 'b'), F2(0xa5, MR_ANY, K_FULL, K_FULL, 0),
	F2(0xac, MR_ANY, K_FULL, K_FULL, 'b'), F2(0xad, MR_ANY, K_FULL, K_FULL, 0),
	F2(0xaf, MR_ANY, K_FULL, K_FULL, 0), F2(0xb0, MR_ANY, K_BYTE, K_BYTE, 0),
	F2(0xb1, MR_ANY, K_FULL, K_FULL, 0), F2(0xb6, MR_ANY, K_FULL, K_BYTE, 0),
	F2(0xb7, MR_ANY, K_FULL, K_FULL, 0), F2(0xbe, MR_ANY, K_FULL, K_BYTE, 0),
	F2(0xbf, MR_ANY, K_FULL, K_FULL, 0), F2(0xbc, MR_ANY, K_FULL, K_FULL, 0),
	F2(0xbd, MR_ANY, K_FULL, K_FULL, 0), F2(0xc0, MR_ANY, K_BYTE, K_BYTE, 0),
	F2(0xc1, MR_ANY, K_FULL, K_FULL, 0),
	{ { 0x0f, 0xc8 }, 2, MR_OREG, -1, -1, 0, K_NONE, K_FULL, false, true, false },
	{ { 0xf3, 0x0f, 0xb8 }, 3, MR_ANY, -1, -1, 0, K_FULL, K_FULL, false, false, true },
	{ { 0xf3, 0x0f, 0xbd }, 3, MR_ANY, -1, -1, 0, K_FULL, K_FULL, false, false, true },
};

/* A register number usable for an operand of this kind: never RSP (nor SPL); AH..BH only without REX. */
static unsigned pick_reg(unsigned kind, unsigned rex, bool mem_form)
{
	for (;;) {
		unsigned r = (unsigned)(rnd() & 15);

		if ((r & 7) == 4 && !(kind == K_BYTE && !rex && r == 4))
			continue;
		if (mem_form && (r == R_SI || (kind == K_BYTE && !rex && r == 6)))
			continue;
		if (!rex && r >= 8)
			continue;
		return r;
	}
}

struct diff_stats {
	unsigned cases, faults, mismatches;
};

static uint8_t host_mem[256];

/*
 * Flags the SDM leaves undefined for this instruction, which differ between processor generations and so are not
 * compared: OF of a rotate or shift whose masked count is not 1 (SDM vol. 2B, RCL/RCR/ROL/ROR: "the OF flag is
 * defined only for the 1-bit rotates"; SAL/SAR/SHL/SHR likewise), and OF/SF/AF/PF of LZCNT and TZCNT.
 */
static unsigned diff_undefined_flags(const struct form *f, unsigned opsize, uint8_t imm, uint64_t rcx)
{
	uint8_t op = f->op[0];

	if (f->oplen == 1 && (op == 0xc0 || op == 0xc1 || op == 0xd2 || op == 0xd3)) {
		unsigned count = (op == 0xc0 || op == 0xc1) ? imm : (unsigned)(rcx & 0xff);

		count &= opsize == 8 && op != 0xc0 && op != 0xd2 ? 0x3f : 0x1f;
		return count != 1 ? EFL_OF : 0;
	}
	if (f->fixed_pre && f->op[0] == 0xf3 && f->op[1] == 0x0f && (f->op[2] == 0xbd || f->op[2] == 0xbc))
		return EFL_OF | EFL_SF | EFL_AF | EFL_PF;
	return 0;
}

static void diff_one(const struct form *f, unsigned cc, struct diff_stats *st)
{
	uint8_t insn[20];
	size_t n = 0;
	unsigned pre = (unsigned)(rnd() % 6), rex = 0, reg = 0, rm = 0, opsize;
	bool p66 = false, mem = false;
	struct emu_cpu *cpu = calloc(1, sizeof(*cpu));
	struct ctx c, h;
	int rc;
	bool hok;

	assert_non_null(cpu);
	if (f->fixed_pre)
		pre = pre % 3 == 1 ? 2 : 0;    /* F3 forms: no 66 (F3 must stay next to 0F), REX.W or none */
	if ((pre == 1 || pre == 4) && !f->no66) {
		insn[n++] = 0x66;
		p66 = true;
	}
	if (f->fixed_pre)
		insn[n++] = f->op[0];
	if (pre == 2)
		rex = 0x48;
	else if (pre >= 3)
		rex = 0x40 | (unsigned)(rnd() & 15);
	if (f->modrm == MR_MEM || (f->modrm == MR_ANY && (rnd() & 1)))
		mem = true;
	reg = f->ext_lo >= 0 ? (unsigned)(f->ext_lo + (int)(rnd() % (unsigned)(f->ext_hi - f->ext_lo + 1)))
			     : f->reg_kind == K_NONE ? (unsigned)(rnd() & 7) : pick_reg(f->reg_kind, rex, mem);
	if (f->modrm == MR_OREG || f->modrm == MR_ANY || f->modrm == MR_MEM)
		rm = mem ? R_SI : pick_reg(f->rm_kind, rex, false);
	if (rex) {    /* W and X as drawn; R and B name the chosen registers */
		rex = 0x40 | (rex & 0xa);
		if (f->ext_lo < 0 && f->reg_kind != K_NONE)
			rex |= (reg >> 3) << 2;
		rex |= rm >> 3;
	}
	if (rex)
		insn[n++] = (uint8_t)rex;
	opsize = (rex & 8) ? 8 : p66 ? 2 : 4;
	for (unsigned i = f->fixed_pre ? 1 : 0; i < f->oplen; i++)
		insn[n++] = f->op[i];
	if (f->modrm == MR_OREG) {
		insn[n - 1] = (uint8_t)(insn[n - 1] + (rm & 7));
		if (f->op[f->oplen - 1] == 0x90 && (rm & 7) == 0)
			insn[n - 1] = 0x91;    /* 90 is NOP: use xchg with rcx instead */
	} else if (f->modrm != MR_NONE) {
		insn[n++] = (uint8_t)((mem ? 0 : 0xc0) | ((reg & 7) << 3) | (rm & 7));
	}
	if (f->op[0] == 0x0f && f->op[1] == 0x40 && f->oplen == 2)
		insn[n - 2] = (uint8_t)(0x40 + cc);    /* CMOVcc: cc chosen by the caller */
	if (f->op[1] == 0x90 && f->oplen == 2)
		insn[n - 2] = (uint8_t)(0x90 + cc);
	switch (f->imm) {
	case 'b': insn[n++] = (uint8_t)rnd_value(); break;
	case 'z': {
		uint64_t v = rnd_value();

		memcpy(insn + n, &v, opsize == 2 ? 2 : 4);
		n += opsize == 2 ? 2 : 4;
		break;
	}
	case 'v': {
		uint64_t v = rnd_value();

		memcpy(insn + n, &v, opsize);
		n += opsize;
		break;
	}
	default: break;
	}

	for (unsigned i = 0; i < 16; i++)
		c.r[i] = rnd_value();
	if (rnd() & 1)
		c.r[R_CX] = rnd() & 0xff;    /* shift counts */
	if (f->bitmem && mem)
		c.r[reg] = (uint64_t)((int64_t)(rnd() % 1800) - 900);
	c.fl = (rnd() & (EFL_CF | EFL_PF | EFL_AF | EFL_ZF | EFL_SF | EFL_OF)) | 2;
	for (unsigned i = 0; i < sizeof(host_mem); i++)
		host_mem[i] = (uint8_t)rnd();

	cpu_init(cpu, EMU_LONG64);
	memcpy(cpu->gpr, c.r, sizeof(c.r));
	cpu->gpr[R_SP] = 0x7000;
	if (mem)
		cpu->gpr[R_SI] = DATA + 128;
	cpu->rflags = c.fl;
	memcpy(ram + DATA, host_mem, sizeof(host_mem));
	memcpy(ram + CODE, insn, n);
	rc = step(cpu);

	h = c;
	if (mem)
		h.r[R_SI] = (uint64_t)(uintptr_t)(host_mem + 128);
	hok = host_run(&h, insn, n);
	st->cases++;

	bool bad = false;
	if (!hok) {
		st->faults++;
		bad = rc != EMU_JMP_FAULT || cpu->exc_vector != EXC_DE;
	} else if (rc != 0) {
		bad = true;
	} else {
		if (mem && f->op[0] == 0x8d) {    /* LEA: the address itself, relative to each buffer */
			uint64_t m = opsize == 8 ? ~0ull : (1ull << (8 * opsize)) - 1;
			uint64_t low = (h.r[reg] - ((uint64_t)(uintptr_t)host_mem - DATA)) & m;

			h.r[reg] = opsize == 2 ? (h.r[reg] & ~m) | low : low;
		}
		if (mem) {
			h.r[R_SI] -= (uint64_t)(uintptr_t)host_mem;
			cpu->gpr[R_SI] -= DATA;
		}
		for (unsigned i = 0; i < 16; i++)
			if (i != R_SP && h.r[i] != cpu->gpr[i])
				bad = true;
		unsigned cmp = 0x8d5 & ~diff_undefined_flags(f, opsize, insn[n - 1], c.r[R_CX]);

		if ((h.fl & cmp) != (cpu->rflags & cmp) || cpu->rip != CODE + n)
			bad = true;
		if (memcmp(ram + DATA, host_mem, sizeof(host_mem)) != 0)
			bad = true;
	}
	if (bad) {
		if (st->mismatches++ < 10) {
			fprintf(stderr, "mismatch:");
			for (size_t i = 0; i < n; i++)
				fprintf(stderr, " %02x", insn[i]);
			fprintf(stderr, " (rc %d vec %d host %s) flags in %#llx host %#llx emu %#llx rip +%llu\n", rc,
				cpu->exc_vector, hok ? "ok" : "#DE", (unsigned long long)c.fl,
				(unsigned long long)h.fl, (unsigned long long)cpu->rflags,
				(unsigned long long)(cpu->rip - CODE));
			for (unsigned i = 0; i < 16; i++)
				if (hok && i != R_SP && h.r[i] != cpu->gpr[i])
					fprintf(stderr, "  r%u in %#llx host %#llx emu %#llx\n", i,
						(unsigned long long)c.r[i], (unsigned long long)h.r[i],
						(unsigned long long)cpu->gpr[i]);
		}
	}
	free(cpu);
}

static bool host_has(unsigned leaf, unsigned reg, unsigned bit)
{
	unsigned a, b, c, d;

	__asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(0));
	return ((reg == 2 ? c : d) >> bit) & 1;
}

static void test_differential(void **state)
{
	struct diff_stats st = { 0 };
	struct form alu;
	unsigned iters = 300;

	struct sigaction sa, old;

	(void)state;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigfpe;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGFPE, &sa, &old);    /* cmocka installs its own handler around each test */
	/* ALU 00-3D in all six forms */
	for (unsigned op = 0; op < 0x40; op += 8) {
		for (unsigned k = 0; k < 6; k++) {
			memset(&alu, 0, sizeof(alu));
			alu.op[0] = (uint8_t)(op + k);
			alu.oplen = 1;
			alu.ext_lo = alu.ext_hi = -1;
			alu.modrm = k < 4 ? MR_ANY : MR_NONE;
			alu.reg_kind = alu.rm_kind = (k & 1) ? K_FULL : K_BYTE;
			alu.imm = k == 4 ? 'b' : k == 5 ? 'z' : 0;
			for (unsigned i = 0; i < iters; i++)
				diff_one(&alu, 0, &st);
		}
	}
	for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
		if (forms[f].fixed_pre && forms[f].op[2] == 0xb8 && !host_has(1, 2, 23))
			continue;
		if (forms[f].fixed_pre && forms[f].op[2] == 0xbd && !host_has(0x80000001, 2, 5))
			continue;
		unsigned reps = forms[f].ext_lo >= 0 ? iters * (unsigned)(forms[f].ext_hi - forms[f].ext_lo + 1) : iters;

		for (unsigned i = 0; i < reps; i++)
			diff_one(&forms[f], i & 15, &st);
	}
	sigaction(SIGFPE, &old, NULL);
	printf("differential: %u cases (%u host #DE), %u mismatches\n", st.cases, st.faults, st.mismatches);
	assert_int_equal(st.mismatches, 0);
	assert_true(st.cases > 20000);
}

/* ---------------------------------------------------------------- SSE/SSE2 and x87 against the host
 *
 * The same instruction bytes run natively (xmm0-15, MXCSR, RAX/RCX/RDX loaded from a context, a memory operand at
 * (%rsi) = a 16-byte aligned buffer) and in the interpreter (the same values in cpu->fx, RSI = DATA holding the same
 * bytes); xmm0-15, MXCSR, the three GPRs, the arithmetic flags and the memory must be equal, and a host SIGFPE (an
 * unmasked SIMD exception) must be an interpreter #XM. x87: the host runs FXRSTOR64 of a random image, the
 * instruction, FXSAVE64; the images must be equal except FIP/FDP/FOP (where the host's own addresses are).
 */
struct sse_ctx {
	uint8_t xmm[16][16];
	uint32_t mxcsr, pad;
	uint64_t rax, rcx, rdx, rsi, fl;
};

static size_t jit_put(uint8_t *p, const uint8_t *b, size_t n)
{
	memcpy(p, b, n);
	return n;
}

static size_t jit_disp32(uint8_t *p, uint32_t d)
{
	memcpy(p, &d, 4);
	return 4;
}

/* movdqu between xmmN and disp(%rdi): opc 6f load, 7f store */
static size_t jit_xmm(uint8_t *p, unsigned n, uint8_t opc, uint32_t disp)
{
	size_t k = 0;

	p[k++] = 0xf3;
	if (n >= 8)
		p[k++] = 0x44;
	p[k++] = 0x0f;
	p[k++] = opc;
	p[k++] = (uint8_t)(0x87 | ((n & 7) << 3));
	return k + jit_disp32(p + k, disp);
}

static size_t jit_gpr(uint8_t *p, unsigned r, uint8_t opc, uint32_t disp)   /* mov disp(%rdi) <-> r64 */
{
	size_t k = 0;

	p[k++] = 0x48;
	p[k++] = opc;
	p[k++] = (uint8_t)(0x87 | (r << 3));
	return k + jit_disp32(p + k, disp);
}

static uint32_t host_csr_get(void)
{
	uint32_t v;

	__asm__ volatile("stmxcsr %0" : "=m"(v));
	return v;
}

static void host_csr_set(uint32_t v)
{
	__asm__ volatile("ldmxcsr %0" : : "m"(v));
}

/* Runs insn natively on c; false on SIGFPE. */
static bool host_run_sse(struct sse_ctx *c, const uint8_t *insn, size_t len)
{
	uint8_t *p = jit;
	size_t k = 0;
	uint32_t saved = host_csr_get();
	volatile bool ok = true;

	k += jit_put(p + k, (const uint8_t[]){ 0x0f, 0xae, 0x97 }, 3);          /* ldmxcsr mxcsr(%rdi) */
	k += jit_disp32(p + k, offsetof(struct sse_ctx, mxcsr));
	for (unsigned n = 0; n < 16; n++)
		k += jit_xmm(p + k, n, 0x6f, (uint32_t)(16 * n));
	k += jit_gpr(p + k, 0, 0x8b, offsetof(struct sse_ctx, rax));
	k += jit_gpr(p + k, 1, 0x8b, offsetof(struct sse_ctx, rcx));
	k += jit_gpr(p + k, 2, 0x8b, offsetof(struct sse_ctx, rdx));
	k += jit_gpr(p + k, 6, 0x8b, offsetof(struct sse_ctx, rsi));
	p[k++] = 0x57;                                                          /* push %rdi */
	k += jit_put(p + k, (const uint8_t[]){ 0x31, 0xff, 0x57, 0x9d }, 4);    /* xor %edi,%edi; push; popf: flags 0 */
	k += jit_put(p + k, (const uint8_t[]){ 0x48, 0x8b, 0x3c, 0x24 }, 4);    /* mov (%rsp),%rdi */
	k += jit_put(p + k, insn, len);
	p[k++] = 0x9c;                                                          /* pushf */
	k += jit_put(p + k, (const uint8_t[]){ 0x48, 0x8b, 0x7c, 0x24, 0x08 }, 5); /* mov 8(%rsp),%rdi */
	k += jit_put(p + k, (const uint8_t[]){ 0x8f, 0x87 }, 2);                /* pop fl(%rdi) */
	k += jit_disp32(p + k, offsetof(struct sse_ctx, fl));
	p[k++] = 0x5f;                                                          /* pop %rdi */
	for (unsigned n = 0; n < 16; n++)
		k += jit_xmm(p + k, n, 0x7f, (uint32_t)(16 * n));
	k += jit_gpr(p + k, 0, 0x89, offsetof(struct sse_ctx, rax));
	k += jit_gpr(p + k, 1, 0x89, offsetof(struct sse_ctx, rcx));
	k += jit_gpr(p + k, 2, 0x89, offsetof(struct sse_ctx, rdx));
	k += jit_put(p + k, (const uint8_t[]){ 0x0f, 0xae, 0x9f }, 3);          /* stmxcsr mxcsr(%rdi) */
	k += jit_disp32(p + k, offsetof(struct sse_ctx, mxcsr));
	p[k++] = 0xc3;
	if (sigsetjmp(fpe_jmp, 1) == 0)
		((void (*)(struct sse_ctx *))(void *)jit)(c);
	else
		ok = false;
	host_csr_set(saved);
	return ok;
}

static uint32_t host_mxcsr_mask_for_test(void)
{
	alignas(16) static uint8_t img[512];
	uint32_t m;

	__asm__ volatile("fxsave64 %0" : "=m"(img));
	memcpy(&m, img + 28, 4);
	return m ? m : 0xffbfu;
}

static uint64_t rnd_fp_bits(void)
{
	static const uint64_t edge[] = {
		0, 0x8000000000000000ull, 0x3ff0000000000000ull, 0xbff0000000000000ull, 0x7ff0000000000000ull,
		0xfff0000000000000ull, 0x7ff8000000000000ull, 0x7ff4000000000000ull, 0x0000000000000001ull,
		0x000fffffffffffffull, 0x7fefffffffffffffull, 0x41dfffffffc00000ull, 0x43e0000000000000ull,
		0x3f8000003f800000ull, 0x7f8000007fc00000ull, 0x0000000180000001ull, 0x4f0000004effffffull,
	};
	uint64_t r = rnd();

	if ((r & 3) == 0)
		return edge[(r >> 8) % (sizeof(edge) / sizeof(edge[0]))];
	if ((r & 3) == 1)
		return rnd_value();
	return rnd();
}

/* The forms: [pfx] 0F op [imm8]; kind: 'x' xmm,xmm/m; 'g' GPR source (r/m, 2A/6E/C4); 'G' GPR dest (reg, 2C/2D/
 * 50/C5/D7); 's' store forms (xmm/m as destination). msize: bytes of the memory form (0: register only). */
struct sse_form {
	uint8_t pfx, op;
	char kind;
	uint8_t msize;
	bool imm, wide;   /* imm8; REX.W variant too */
};

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const struct sse_form sse_forms[] = {
	{ 0, 0x10, 'x', 16 }, { 0x66, 0x10, 'x', 16 }, { 0xf3, 0x10, 'x', 4 }, { 0xf2, 0x10, 'x', 8 },
	{ 0, 0x11, 's', 16 }, { 0xf3, 0x11, 's', 4 }, { 0xf2, 0x11, 's', 8 },
	{ 0, 0x12, 'x', 8 }, { 0x66, 0x12, 'x', 8 }, { 0, 0x13, 's', 8 }, { 0, 0x14, 'x', 16 },
	{ 0x66, 0x15, 'x', 16 }, { 0, 0x16, 'x', 8 }, { 0x66, 0x17, 's', 8 }, { 0, 0x28, 'x', 16 },
	{ 0x66, 0x29, 's', 16 }, { 0xf3, 0x2a, 'g', 4, false, true }, { 0xf2, 0x2a, 'g', 4, false, true },
	{ 0, 0x2b, 's', 16 }, { 0xf3, 0x2c, 'G', 4, false, true }, { 0xf2, 0x2c, 'G', 8, false, true },
	{ 0xf3, 0x2d, 'G', 4, false, true }, { 0xf2, 0x2d, 'G', 8, false, true }, { 0, 0x2e, 'x', 4 },
	{ 0x66, 0x2e, 'x', 8 }, { 0, 0x2f, 'x', 4 }, { 0x66, 0x2f, 'x', 8 }, { 0, 0x50, 'G', 0 }, { 0x66, 0x50, 'G', 0 },
	{ 0, 0x51, 'x', 16 }, { 0x66, 0x51, 'x', 16 }, { 0xf3, 0x51, 'x', 4 }, { 0xf2, 0x51, 'x', 8 },
	{ 0, 0x52, 'x', 16 }, { 0xf3, 0x53, 'x', 4 }, { 0, 0x54, 'x', 16 }, { 0x66, 0x55, 'x', 16 },
	{ 0, 0x56, 'x', 16 }, { 0x66, 0x57, 'x', 16 }, { 0, 0x58, 'x', 16 }, { 0x66, 0x58, 'x', 16 },
	{ 0xf3, 0x58, 'x', 4 }, { 0xf2, 0x58, 'x', 8 }, { 0, 0x59, 'x', 16 }, { 0xf2, 0x59, 'x', 8 },
	{ 0, 0x5a, 'x', 8 }, { 0x66, 0x5a, 'x', 16 }, { 0xf3, 0x5a, 'x', 4 }, { 0xf2, 0x5a, 'x', 8 },
	{ 0, 0x5b, 'x', 16 }, { 0x66, 0x5b, 'x', 16 }, { 0xf3, 0x5b, 'x', 16 }, { 0x66, 0x5c, 'x', 16 },
	{ 0xf2, 0x5c, 'x', 8 }, { 0, 0x5d, 'x', 16 }, { 0xf2, 0x5d, 'x', 8 }, { 0x66, 0x5e, 'x', 16 },
	{ 0xf3, 0x5e, 'x', 4 }, { 0xf2, 0x5e, 'x', 8 }, { 0, 0x5f, 'x', 16 }, { 0xf2, 0x5f, 'x', 8 },
	{ 0x66, 0x60, 'x', 16 }, { 0x66, 0x61, 'x', 16 }, { 0x66, 0x62, 'x', 16 }, { 0x66, 0x63, 'x', 16 },
	{ 0x66, 0x64, 'x', 16 }, { 0x66, 0x65, 'x', 16 }, { 0x66, 0x66, 'x', 16 }, { 0x66, 0x67, 'x', 16 },
	{ 0x66, 0x68, 'x', 16 }, { 0x66, 0x69, 'x', 16 }, { 0x66, 0x6a, 'x', 16 }, { 0x66, 0x6b, 'x', 16 },
	{ 0x66, 0x6c, 'x', 16 }, { 0x66, 0x6d, 'x', 16 }, { 0x66, 0x6e, 'g', 4, false, true },
	{ 0x66, 0x6f, 'x', 16 }, { 0xf3, 0x6f, 'x', 16 }, { 0x66, 0x70, 'x', 16, true }, { 0xf3, 0x70, 'x', 16, true },
	{ 0xf2, 0x70, 'x', 16, true }, { 0x66, 0x74, 'x', 16 }, { 0x66, 0x75, 'x', 16 }, { 0x66, 0x76, 'x', 16 },
	{ 0x66, 0x7e, 's', 4, false, true }, { 0xf3, 0x7e, 'x', 8 }, { 0x66, 0x7f, 's', 16 }, { 0xf3, 0x7f, 's', 16 },
	{ 0, 0xc2, 'x', 16, true }, { 0x66, 0xc2, 'x', 16, true }, { 0xf3, 0xc2, 'x', 4, true },
	{ 0xf2, 0xc2, 'x', 8, true }, { 0x66, 0xc4, 'g', 2, true }, { 0x66, 0xc5, 'G', 0, true },
	{ 0, 0xc6, 'x', 16, true }, { 0x66, 0xc6, 'x', 16, true }, { 0x66, 0xd1, 'x', 16 }, { 0x66, 0xd2, 'x', 16 },
	{ 0x66, 0xd3, 'x', 16 }, { 0x66, 0xd4, 'x', 16 }, { 0x66, 0xd5, 'x', 16 }, { 0x66, 0xd6, 's', 8 },
	{ 0x66, 0xd7, 'G', 0 }, { 0x66, 0xd8, 'x', 16 }, { 0x66, 0xda, 'x', 16 }, { 0x66, 0xdb, 'x', 16 },
	{ 0x66, 0xdc, 'x', 16 }, { 0x66, 0xde, 'x', 16 }, { 0x66, 0xdf, 'x', 16 }, { 0x66, 0xe0, 'x', 16 },
	{ 0x66, 0xe1, 'x', 16 }, { 0x66, 0xe2, 'x', 16 }, { 0x66, 0xe4, 'x', 16 }, { 0x66, 0xe5, 'x', 16 },
	{ 0x66, 0xe6, 'x', 16 }, { 0xf3, 0xe6, 'x', 8 }, { 0xf2, 0xe6, 'x', 16 }, { 0x66, 0xe7, 's', 16 },
	{ 0x66, 0xe8, 'x', 16 }, { 0x66, 0xea, 'x', 16 }, { 0x66, 0xeb, 'x', 16 }, { 0x66, 0xec, 'x', 16 },
	{ 0x66, 0xee, 'x', 16 }, { 0x66, 0xef, 'x', 16 }, { 0x66, 0xf1, 'x', 16 }, { 0x66, 0xf2, 'x', 16 },
	{ 0x66, 0xf3, 'x', 16 }, { 0x66, 0xf4, 'x', 16 }, { 0x66, 0xf5, 'x', 16 }, { 0x66, 0xf6, 'x', 16 },
	{ 0x66, 0xf8, 'x', 16 }, { 0x66, 0xfb, 'x', 16 }, { 0x66, 0xfc, 'x', 16 }, { 0x66, 0xfe, 'x', 16 },
};
#pragma GCC diagnostic pop

struct sse_stats {
	unsigned cases, xm, mismatches;
};

static void sse_diff_one(const struct sse_form *f, bool mem, bool wide, struct sse_stats *st, uint8_t imm,
			 int fixed_reg)
{
	alignas(16) static uint8_t hmem[32];
	struct emu_cpu *cpu = calloc(1, sizeof(*cpu));
	struct sse_ctx h;
	uint8_t insn[16];
	size_t n = 0;
	unsigned reg = (unsigned)(rnd() & 15), rm = (unsigned)(rnd() & 15);
	unsigned rex = 0x40;
	int rc;
	bool ok;

	assert_non_null(cpu);
	if (f->kind == 'g' && !mem)
		rm = (unsigned[]){ 0, 1, 2 }[rnd() % 3];   /* a GPR we load: rax rcx rdx rbx r8-r11 */
	if (f->kind == 'G')
		reg = (unsigned[]){ 0, 1, 2 }[rnd() % 3];
	if (fixed_reg >= 0)
		reg = (unsigned)fixed_reg;
	if (f->kind == 'g' || f->kind == 'G' || (f->kind == 's' && f->op == 0x7e)) {
		/* GPR operands: only RAX/RCX/RDX, which both sides load and compare */
		if (f->kind == 'g' || (f->kind == 's' && !mem))
			rm = (unsigned[]){ 0, 1, 2 }[rnd() % 3];
	}
	memset(&h, 0, sizeof(h));
	for (unsigned i = 0; i < 16; i++) {
		uint64_t a = rnd_fp_bits(), b = rnd_fp_bits();

		memcpy(h.xmm[i], &a, 8);
		memcpy(h.xmm[i] + 8, &b, 8);
	}
	/* rounding, DAZ, FZ random; exceptions masked but one in 8 cases with a random mask set */
	h.mxcsr = 0x1f80u | ((uint32_t)(rnd() & 3) << 13) | ((rnd() & 1) << 15) | ((rnd() & 1) << 6);
	h.mxcsr &= host_mxcsr_mask_for_test();   /* DAZ only where the host has it */
	/* one case in 8 unmasks a random set of exceptions, never underflow: unmasked, a tiny exact result is
	 * signalled too, which the interpreter (computing masked) does not see (docs/emu.md) */
	if ((rnd() & 7) == 0)
		h.mxcsr &= ~((uint32_t)(rnd() & 0x2f) << 7);
	h.rax = rnd_value();
	h.rcx = rnd_value();
	h.rdx = rnd_value();
	for (unsigned i = 0; i < 32; i += 8) {
		uint64_t v = rnd_fp_bits();

		memcpy(hmem + i, &v, 8);
	}
	h.rsi = (uint64_t)(uintptr_t)hmem;

	if (f->pfx)
		insn[n++] = f->pfx;
	if (wide)
		rex |= 8;
	if (reg >= 8)
		rex |= 4;
	if (!mem && rm >= 8)
		rex |= 1;
	if (rex != 0x40 || (rnd() & 3) == 0)
		insn[n++] = (uint8_t)rex;
	insn[n++] = 0x0f;
	insn[n++] = f->op;
	insn[n++] = mem ? (uint8_t)(((reg & 7) << 3) | 6) : (uint8_t)(0xc0 | ((reg & 7) << 3) | (rm & 7));
	if (f->imm)
		insn[n++] = imm;

	/* the interpreter first (the host run changes h) */
	cpu_init(cpu, EMU_LONG64);
	cpu->cr4 = 0x620;       /* PAE, OSFXSR, OSXMMEXCPT */
	emu_fpu_reset(cpu);
	for (unsigned i = 0; i < 16; i++)
		memcpy(cpu->fx + 160 + 16 * i, h.xmm[i], 16);
	memcpy(cpu->fx + 24, &h.mxcsr, 4);
	cpu->gpr[R_AX] = h.rax;
	cpu->gpr[R_CX] = h.rcx;
	cpu->gpr[R_DX] = h.rdx;
	cpu->gpr[R_SI] = DATA;
	memcpy(ram + DATA, hmem, 32);
	put_code(cpu, insn, n);
	rc = step(cpu);

	ok = host_run_sse(&h, insn, n);
	st->cases++;
	bool bad = false;

	if (!ok) {
		st->xm++;
		bad = rc != EMU_JMP_FAULT || cpu->exc_vector != 19;
	} else if (rc) {
		bad = true;
	} else {
		for (unsigned i = 0; i < 16; i++)
			bad |= memcmp(cpu->fx + 160 + 16 * i, h.xmm[i], 16) != 0;
		uint32_t m;

		memcpy(&m, cpu->fx + 24, 4);
		bad |= m != h.mxcsr;
		bad |= cpu->gpr[R_AX] != h.rax || cpu->gpr[R_CX] != h.rcx || cpu->gpr[R_DX] != h.rdx;
		bad |= (cpu->rflags & 0x8d5) != (h.fl & 0x8d5);
		bad |= memcmp(ram + DATA, hmem, 32) != 0;
	}
	if (bad) {
		if (st->mismatches < 10) {
			fprintf(stderr, "sse mismatch:");
			for (size_t i = 0; i < n; i++)
				fprintf(stderr, " %02x", insn[i]);
			fprintf(stderr, " (host %s, emu rc %d vector %d)\n", ok ? "ok" : "SIGFPE", rc, cpu->exc_vector);
		}
		st->mismatches++;
	}
	free(cpu);
}

static void test_sse_differential(void **state)
{
	struct sse_stats st = { 0 };
	struct sigaction sa, old;

	(void)state;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigfpe;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGFPE, &sa, &old);
	for (size_t f = 0; f < sizeof(sse_forms) / sizeof(sse_forms[0]); f++) {
		const struct sse_form *sf = &sse_forms[f];

		for (unsigned i = 0; i < 200; i++) {
			bool mem = sf->msize && (i & 1);
			bool wide = sf->wide && (i & 2);

			if ((sf->op == 0x12 || sf->op == 0x16) && sf->pfx == 0x66 && !mem)
				mem = true;                     /* MOVLPD/MOVHPD: memory only */
			if ((sf->op == 0x13 || sf->op == 0x17 || sf->op == 0x2b || sf->op == 0xe7) && !mem)
				mem = true;
			if ((sf->op == 0x50 || sf->op == 0xc5 || sf->op == 0xd7) && mem)
				mem = false;
			sse_diff_one(sf, mem, wide, &st, sf->op == 0xc2 ? (uint8_t)(rnd() & 7) : (uint8_t)rnd(), -1);
		}
	}
	/* shifts by immediate: 66 0F 71/72/73 /2 /4 /6 (and 73 /3 /7) */
	static const struct sse_form shifts = { 0x66, 0x71, 'x', 0, true, false };
	for (uint8_t op = 0x71; op <= 0x73; op++) {
		for (unsigned sub = 2; sub <= 7; sub++) {
			if ((sub == 4 && op == 0x73) || ((sub == 3 || sub == 7) && op != 0x73) || sub == 5)
				continue;
			struct sse_form sf = shifts;

			sf.op = op;
			for (unsigned i = 0; i < 100; i++)   /* the reg field selects the operation */
				sse_diff_one(&sf, false, false, &st, (uint8_t)(i < 50 ? rnd() & 31 : rnd()), (int)sub);
		}
	}
	sigaction(SIGFPE, &old, NULL);
	printf("sse differential: %u cases (%u host SIMD exceptions), %u mismatches\n", st.cases, st.xm,
	       st.mismatches);
	assert_int_equal(st.mismatches, 0);
	assert_true(st.cases > 20000);
	assert_true(st.xm > 0);
}

static struct emu_cpu *new_cpu(enum emu_mode mode);

/* x87: fxrstor64 (%rdi); insn (memory at (%rsi)); fxsave64 (%rdi); the flags after. */
static void host_run_x87(uint8_t *img, void *mem, uint64_t *fl, const uint8_t *insn, size_t len)
{
	uint8_t *p = jit;
	size_t k = 0;
	uint32_t fin = (uint32_t)(*fl & 0x45);

	k += jit_put(p + k, (const uint8_t[]){ 0x68 }, 1);                     /* push $fin; popf: CF/PF/ZF in */
	k += jit_disp32(p + k, fin);
	k += jit_put(p + k, (const uint8_t[]){ 0x9d }, 1);
	k += jit_put(p + k, (const uint8_t[]){ 0x48, 0x0f, 0xae, 0x0f }, 4);   /* fxrstor64 (%rdi) */
	k += jit_put(p + k, (const uint8_t[]){ 0x52 }, 1);                     /* push %rdx (flags out) */
	k += jit_put(p + k, insn, len);
	k += jit_put(p + k, (const uint8_t[]){ 0x48, 0x0f, 0xae, 0x07 }, 4);   /* fxsave64 (%rdi) */
	k += jit_put(p + k, (const uint8_t[]){ 0x9c, 0x58, 0x5a, 0x48, 0x89, 0x02, 0xc3 }, 7); /* pushf; pop %rax;
	                                                                         pop %rdx; mov %rax,(%rdx); ret */
	((void (*)(uint8_t *, void *, uint64_t *))(void *)jit)(img, mem, fl);
}

static void rnd_x87_image(uint8_t *img)
{
	memset(img, 0, 512);
	uint16_t fcw = (uint16_t)(0x037f | ((rnd() & 0xf) << 8)), fsw = (uint16_t)((rnd() & 0x4700) | (rnd() & 0x3800));

	memcpy(img, &fcw, 2);
	memcpy(img + 2, &fsw, 2);
	img[4] = (uint8_t)((rnd() & 3) ? 0xff : rnd());
	uint32_t csr = 0x1f80;
	memcpy(img + 24, &csr, 4);
	for (unsigned i = 0; i < 8; i++) {
		uint64_t mant = rnd_value();
		uint16_t se = (uint16_t)rnd();

		switch (rnd() & 7) {
		case 0: se = 0x3fff | (se & 0x8000); mant = 0x8000000000000000ull; break;   /* +-1 */
		case 1: se &= 0x8000; mant = 0; break;                                      /* +-0 */
		case 2: se |= 0x7fff; mant = rnd() & 1 ? 0x8000000000000000ull : 0xc000000000000000ull; break;
		case 3: se = (uint16_t)(0x3fff + (rnd() % 64) - 32) | (se & 0x8000); mant |= 1ull << 63; break;
		default: mant |= (rnd() & 7) ? 1ull << 63 : 0; break;
		}
		memcpy(img + 32 + 16 * i, &mant, 8);
		memcpy(img + 40 + 16 * i, &se, 2);
	}
}

static bool x87_mem_store_form(uint8_t op, unsigned reg, unsigned *size)
{
	static const uint8_t st[8][8] = {
		/* bytes stored per /reg, 0 = load or not an instruction */
		[1] = { 0, 0, 4, 4, 0, 0, 28, 2 }, [3] = { 0, 0, 4, 4, 0, 0, 0, 10 },
		[5] = { 0, 0, 8, 8, 0, 0, 108, 2 }, [7] = { 0, 0, 2, 2, 0, 0, 10, 8 },
	};

	*size = st[op - 0xd8][reg];
	return *size != 0;
}

static void test_x87_differential(void **state)
{
	alignas(16) static uint8_t himg[512], hmem[128];
	struct emu_cpu *cpu = calloc(1, sizeof(*cpu));
	unsigned cases = 0, mismatches = 0;

	(void)state;
	assert_non_null(cpu);
	for (unsigned op = 0xd8; op <= 0xdf; op++) {
		for (unsigned m = 0; m < 256; m++) {
			bool mem = m < 0xc0;
			unsigned reg = (m >> 3) & 7, ssize = 0;

			if (mem && (m & 0xc7) != 0x06)
				continue;                                        /* one memory form per /reg: (%rsi) */
			if (op == 0xdf && m == 0xe0)
				continue;                                        /* FNSTSW AX: targeted test */
			for (unsigned it = 0; it < 20; it++) {
				uint8_t insn[2] = { (uint8_t)op, (uint8_t)m };
				uint64_t hfl = rnd() & 0x45;
				int rc;

				cpu_init(cpu, EMU_LONG64);
				cpu->cr0 |= 1u << 5;                             /* NE */
				cpu->cr4 = 0x620;
				rnd_x87_image(himg);
				memcpy(cpu->fx, himg, 512);
				emu_fpu_reset(cpu);                              /* MXCSR_MASK */
				memcpy(cpu->fx, himg, 24);
				memcpy(cpu->fx + 32, himg + 32, 512 - 32);
				for (unsigned i = 0; i < sizeof(hmem); i += 8) {
					uint64_t v = rnd_fp_bits();

					memcpy(hmem + i, &v, 8);
				}
				if (mem && ((op == 0xd9 && reg == 4) || (op == 0xdd && reg == 4))) {
					/* FLDENV/FRSTOR: a control word with every exception masked */
					hmem[0] |= 0x3f;
				}
				cpu->gpr[R_SI] = DATA;
				cpu->rflags = 2 | hfl;
				memcpy(ram + DATA, hmem, sizeof(hmem));
				put_code(cpu, insn, 2);
				rc = step(cpu);
				if (rc && cpu->exc_vector == EXC_UD)
					break;                                           /* not an instruction: fine if never run */
				host_run_x87(himg, hmem, &hfl, insn, 2);
				cases++;
				bool bad = rc != 0;

				bad |= memcmp(cpu->fx, himg, 6) != 0;
				bad |= memcmp(cpu->fx + 24, himg + 24, 4) != 0;
				for (unsigned i = 0; i < 8; i++)
					bad |= memcmp(cpu->fx + 32 + 16 * i, himg + 32 + 16 * i, 10) != 0;
				if (!mem && (op == 0xdb || op == 0xdf) && m >= 0xe8 && m < 0xf8)
					bad |= (cpu->rflags & 0x45) != (hfl & 0x45);
				if (mem && x87_mem_store_form((uint8_t)op, reg, &ssize)) {
					if (ssize == 28 || ssize == 108) {
						/* FNSTENV/FNSAVE: control, status and tag words; FNSAVE's registers */
						bad |= memcmp(ram + DATA, hmem, 12) != 0;
						if (ssize == 108)
							bad |= memcmp(ram + DATA + 28, hmem + 28, 80) != 0;
					} else {
						bad |= memcmp(ram + DATA, hmem, ssize) != 0;
					}
				}
				if (bad) {
					if (mismatches < 10) {
						fprintf(stderr, "x87 mismatch: %02x %02x (emu rc %d vector %d) fl %llx/%llx\n", op, m,
							rc, cpu->exc_vector, (unsigned long long)cpu->rflags,
							(unsigned long long)hfl);
						for (unsigned b = 0; b < 160; b++)
							if (cpu->fx[b] != himg[b])
								fprintf(stderr, "  byte %u: emu %02x host %02x\n", b, cpu->fx[b],
									himg[b]);
					}
					mismatches++;
				}
			}
		}
	}
	printf("x87 differential: %u cases, %u mismatches\n", cases, mismatches);
	assert_int_equal(mismatches, 0);
	assert_true(cases > 5000);
	free(cpu);
}

/* Faults of the x87/SSE unit: #NM, #UD, #GP for misaligned m128 and reserved MXCSR bits, #XM, #MF pending. */
static void test_fpu_faults(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	cpu->cr4 = 0x620;
	emu_fpu_reset(cpu);
	cpu->gpr[R_SI] = DATA + 8;                                   /* misaligned for m128 */
	assert_int_equal(RUN_RC(cpu, 0x66, 0x0f, 0x6f, 0x06), EMU_JMP_FAULT);   /* movdqa (%rsi) */
	assert_int_equal(cpu->exc_vector, EXC_GP);
	run1(cpu, (const uint8_t[]){ 0xf3, 0x0f, 0x6f, 0x06 }, 4);             /* movdqu is fine */
	assert_int_equal(RUN_RC(cpu, 0x66, 0x0f, 0xfe, 0x06), EMU_JMP_FAULT);   /* paddd (%rsi): aligned too */
	assert_int_equal(cpu->exc_vector, EXC_GP);
	/* LDMXCSR with a reserved bit: #GP, MXCSR unchanged */
	uint32_t bad = 0x1f80u | (1u << 20), csr;
	memcpy(ram + DATA + 8, &bad, 4);
	assert_int_equal(RUN_RC(cpu, 0x0f, 0xae, 0x16), EMU_JMP_FAULT);
	assert_int_equal(cpu->exc_vector, EXC_GP);
	memcpy(&csr, cpu->fx + 24, 4);
	assert_int_equal(csr, 0x1f80);
	/* an unmasked zero divide: #XM, destination unchanged, ZE set */
	csr = 0x1f80u & ~(1u << 9);
	memcpy(cpu->fx + 24, &csr, 4);
	memset(cpu->fx + 160, 0, 32);
	cpu->fx[160 + 7] = 0x3f; cpu->fx[160 + 6] = 0xf0;           /* xmm0 = 1.0 */
	assert_int_equal(RUN_RC(cpu, 0xf2, 0x0f, 0x5e, 0xc1), EMU_JMP_FAULT);  /* divsd %xmm1, %xmm0 */
	assert_int_equal(cpu->exc_vector, 19);
	assert_int_equal(cpu->fx[160 + 7], 0x3f);
	memcpy(&csr, cpu->fx + 24, 4);
	assert_true(csr & (1u << 2));
	cpu->cr4 = 0x220;                                            /* OSXMMEXCPT clear: #UD instead */
	assert_int_equal(RUN_RC(cpu, 0xf2, 0x0f, 0x5e, 0xc1), EMU_JMP_FAULT);
	assert_int_equal(cpu->exc_vector, EXC_UD);
	cpu->cr4 = 0x620;
	cpu->cr0 |= 1u << 3;                                         /* TS: #NM */
	assert_int_equal(RUN_RC(cpu, 0x66, 0x0f, 0xef, 0xc0), EMU_JMP_FAULT);
	assert_int_equal(cpu->exc_vector, EXC_NM);
	assert_int_equal(RUN_RC(cpu, 0x0f, 0xae, 0x06), EMU_JMP_FAULT);           /* fxsave: #NM too */
	assert_int_equal(cpu->exc_vector, EXC_NM);
	cpu->cr0 &= ~(1ull << 3);
	/* x87: an unmasked zero divide is pending: the next waiting instruction takes #MF, FNSTSW does not */
	cpu->cr0 |= 1u << 5;
	emu_fpu_reset(cpu);
	uint16_t fcw = 0x037b;                                       /* ZM clear */
	memcpy(ram + DATA, &fcw, 2);
	cpu->gpr[R_SI] = DATA;
	run1(cpu, (const uint8_t[]){ 0xdb, 0xe3 }, 2);               /* fninit */
	run1(cpu, (const uint8_t[]){ 0xd9, 0x2e }, 2);               /* fldcw (%rsi) */
	run1(cpu, (const uint8_t[]){ 0xd9, 0xe8 }, 2);               /* fld1 */
	run1(cpu, (const uint8_t[]){ 0xd9, 0xee }, 2);               /* fldz */
	run1(cpu, (const uint8_t[]){ 0xde, 0xf9 }, 2);               /* fdivrp: 1 / 0 */
	run1(cpu, (const uint8_t[]){ 0xdf, 0xe0 }, 2);               /* fnstsw %ax */
	assert_true(cpu->gpr[R_AX] & 0x84);                          /* ES and ZE */
	assert_int_equal(RUN_RC(cpu, 0xd9, 0xe8), EMU_JMP_FAULT);    /* fld1 */
	assert_int_equal(cpu->exc_vector, EXC_MF);
	assert_int_equal(RUN_RC(cpu, 0x9b), EMU_JMP_FAULT);          /* fwait */
	assert_int_equal(cpu->exc_vector, EXC_MF);
	run1(cpu, (const uint8_t[]){ 0xdb, 0xe2 }, 2);               /* fnclex */
	run1(cpu, (const uint8_t[]){ 0x9b }, 1);                     /* nothing pending now */
	free(cpu);
}

/* ---------------------------------------------------------------- targeted tests */

static struct emu_cpu *new_cpu(enum emu_mode mode)
{
	struct emu_cpu *cpu = calloc(1, sizeof(*cpu));

	assert_non_null(cpu);
	cpu_init(cpu, mode);
	memset(&fk, 0, sizeof(fk));
	return cpu;
}

static void test_rex_byte_regs(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	cpu->gpr[R_AX] = 0x1234;
	RUN(cpu, 0x88, 0xe0);                        /* mov %ah,%al */
	assert_int_equal(cpu->gpr[R_AX], 0x1212);
	cpu->gpr[R_SP] = 0x7055;
	RUN(cpu, 0x40, 0x88, 0xe0);                  /* mov %spl,%al */
	assert_int_equal(cpu->gpr[R_AX], 0x1255);
	cpu->gpr[R_SI] = 0xabcd;
	RUN(cpu, 0x40, 0x88, 0xf0);                  /* mov %sil,%al */
	assert_int_equal(cpu->gpr[R_AX], 0x12cd);
	RUN(cpu, 0x88, 0xc4);                        /* mov %al,%ah */
	assert_int_equal(cpu->gpr[R_AX], 0xcdcd);
	RUN(cpu, 0x41, 0x88, 0xc7);                  /* mov %al,%r15b */
	assert_int_equal(cpu->gpr[R_R15] & 0xff, 0xcd);
	cpu->gpr[R_BX] = 0xffffffffffffffffull;
	RUN(cpu, 0x89, 0xc3);                        /* mov %eax,%ebx zero-extends */
	assert_int_equal(cpu->gpr[R_BX], 0xcdcd);
	RUN(cpu, 0x66, 0xb8, 0x11, 0x22);            /* mov $0x2211,%ax merges */
	assert_int_equal(cpu->gpr[R_AX], 0x2211);
	RUN(cpu, 0x48, 0xb9, 1, 2, 3, 4, 5, 6, 7, 8); /* movabs */
	assert_int_equal(cpu->gpr[R_CX], 0x0807060504030201ull);
	free(cpu);
}

static void test_prefixes(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	memcpy(ram + DATA + 0x100, (uint64_t[]){ 0x1122334455667788ull }, 8);
	cpu->seg[SEG_GS].base = DATA;
	RUN(cpu, 0x65, 0x48, 0x8b, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00);    /* mov %gs:0x100,%rax */
	assert_int_equal(cpu->gpr[R_AX], 0x1122334455667788ull);
	cpu->seg[SEG_FS].base = DATA + 0x100;
	cpu->gpr[R_AX] = 0;
	RUN(cpu, 0x64, 0x8b, 0x04, 0x25, 0x04, 0x00, 0x00, 0x00);          /* mov %fs:4,%eax */
	assert_int_equal(cpu->gpr[R_AX], 0x11223344);
	cpu->seg[SEG_DS].base = 0x5000;    /* ignored in 64-bit mode */
	cpu->gpr[R_SI] = DATA + 0x100;
	RUN(cpu, 0x3e, 0x8b, 0x06);
	assert_int_equal(cpu->gpr[R_AX], 0x55667788);
	cpu->gpr[R_SI] = 0xffffffff00000000ull + DATA + 0x100;
	RUN(cpu, 0x67, 0x8b, 0x06);                  /* addr32: (%esi) */
	assert_int_equal(cpu->gpr[R_AX], 0x55667788);
	cpu->gpr[R_AX] = 0x1111111111111111ull;
	cpu->gpr[R_BX] = 0;
	RUN(cpu, 0x66, 0x48, 0x89, 0xc3);            /* REX.W wins over 66 */
	assert_int_equal(cpu->gpr[R_BX], 0x1111111111111111ull);
	cpu->gpr[R_BX] = 0;
	RUN(cpu, 0x48, 0x66, 0x89, 0xc3);            /* REX not last: ignored, 16-bit */
	assert_int_equal(cpu->gpr[R_BX], 0x1111);
	RUN(cpu, 0xf3, 0x90);                        /* PAUSE */
	assert_int_equal(cpu->rip, CODE + 2);
	RUN(cpu, 0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00); /* nopw 0(%rax,%rax) */
	assert_int_equal(cpu->rip, CODE + 6);
	RUN(cpu, 0x2e, 0x66, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0);
	assert_int_equal(cpu->rip, CODE + 10);
	free(cpu);
}

static void test_riprel(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);
	uint32_t disp;

	(void)state;
	memcpy(ram + DATA, (uint32_t[]){ 0xdeadbeef }, 4);
	disp = DATA - (CODE + 6);
	RUN(cpu, 0x8b, 0x05, disp & 0xff, (disp >> 8) & 0xff, 0, 0);      /* mov disp(%rip),%eax */
	assert_int_equal(cpu->gpr[R_AX], 0xdeadbeef);
	disp = DATA - (CODE + 7);                                          /* the imm8 counts in the length */
	RUN(cpu, 0x80, 0x3d, disp & 0xff, (disp >> 8) & 0xff, 0, 0, 0xef); /* cmpb $0xef,disp(%rip) */
	assert_true(cpu->rflags & EFL_ZF);
	disp = DATA - (CODE + 10);
	RUN(cpu, 0xc7, 0x05, disp & 0xff, (disp >> 8) & 0xff, 0, 0, 0x78, 0x56, 0x34, 0x12);
	assert_int_equal(*(uint32_t *)(ram + DATA), 0x12345678);
	disp = DATA - (CODE + 7);
	RUN(cpu, 0x48, 0x8d, 0x0d, disp & 0xff, (disp >> 8) & 0xff, 0, 0); /* lea disp(%rip),%rcx */
	assert_int_equal(cpu->gpr[R_CX], DATA);
	free(cpu);
}

static void test_real_mode_16bit(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_REAL);

	(void)state;
	for (int s = 0; s < 6; s++)
		cpu->seg[s].limit = 0xffff;
	cpu->seg[SEG_DS].base = 0x20000;
	cpu->seg[SEG_SS].base = 0x30000;
	memcpy(ram + 0x20000 + 0x0005, (uint16_t[]){ 0xa1a2 }, 2);
	memcpy(ram + 0x30000 + 0x0110, (uint16_t[]){ 0xb1b2 }, 2);
	memcpy(ram + 0x20000 + 0x1234, (uint16_t[]){ 0xc1c2 }, 2);
	cpu->gpr[R_BX] = 0xffff;
	cpu->gpr[R_SI] = 2;
	RUN(cpu, 0x8b, 0x40, 0x04);                  /* mov 4(%bx,%si),%ax: wraps to 0x0005 */
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0xa1a2);
	cpu->gpr[R_BP] = 0x100;
	cpu->gpr[R_DI] = 0x10;
	RUN(cpu, 0x8b, 0x03);                        /* mov (%bp,%di),%ax: SS */
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0xb1b2);
	RUN(cpu, 0x8b, 0x4e, 0x10);                  /* mov 0x10(%bp),%cx: SS */
	assert_int_equal(cpu->gpr[R_CX] & 0xffff, 0xb1b2);
	RUN(cpu, 0xa1, 0x34, 0x12);                  /* mov 0x1234,%ax */
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0xc1c2);
	RUN(cpu, 0x3e, 0x8b, 0x46, 0x10);            /* ds override on a bp form */
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0);
	cpu->gpr[R_BX] = 0x1230;
	RUN(cpu, 0x67, 0x8b, 0x43, 0x04);            /* addr32: 4(%ebx) */
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0xc1c2);
	RUN(cpu, 0x66, 0xb8, 0x78, 0x56, 0x34, 0x12); /* mov $imm32,%eax */
	assert_int_equal(cpu->gpr[R_AX], 0x12345678);
	RUN(cpu, 0x40);                              /* inc %ax (not REX outside 64-bit mode) */
	assert_int_equal(cpu->gpr[R_AX], 0x12345679);
	/* push/pop with a 16-bit stack, sp wraps */
	cpu->gpr[R_SP] = 0x0000;
	RUN(cpu, 0x50);                              /* push %ax */
	assert_int_equal(cpu->gpr[R_SP], 0xfffe);
	assert_int_equal(*(uint16_t *)(ram + 0x30000 + 0xfffe), 0x5679);
	RUN(cpu, 0x5b);                              /* pop %bx */
	assert_int_equal(cpu->gpr[R_SP], 0);
	assert_int_equal(cpu->gpr[R_BX] & 0xffff, 0x5679);
	/* near jump wraps IP; far jump goes through emu_far_jmp */
	RUN(cpu, 0xe9, 0x00, 0xf0);                  /* jmp .+3-0x1000 */
	assert_int_equal(cpu->rip, (CODE + 3 - 0x1000) & 0xffff);
	cpu->seg[SEG_CS].limit = 0x1050;
	assert_int_equal(RUN_RC(cpu, 0xeb, 0x7f), EMU_JMP_FAULT);    /* beyond the CS limit: #GP at the jump */
	assert_int_equal(cpu->exc_vector, EXC_GP);
	assert_int_equal(cpu->rip, CODE);
	cpu->seg[SEG_CS].limit = 0xffff;
	RUN(cpu, 0xea, 0x00, 0x7c, 0x00, 0x00);      /* ljmp $0,$0x7c00 */
	assert_int_equal(fk.far_jmps, 1);
	assert_int_equal(cpu->rip, 0x7c00);
	cpu->seg[SEG_CS].base = 0;
	/* mov to segment registers */
	cpu->gpr[R_AX] = 0x1000;
	RUN(cpu, 0x8e, 0xd8);                        /* mov %ax,%ds */
	assert_int_equal(cpu->seg[SEG_DS].base, 0x10000);
	RUN(cpu, 0x8e, 0xd0);                        /* mov %ax,%ss: interrupt shadow */
	assert_true(cpu->irq_shadow);
	free(cpu);
}

static void test_prot32_and_bcd(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_PROT32);

	(void)state;
	cpu->gpr[R_SP] = 0x7000;
	for (unsigned r = 0; r < 8; r++)
		if (r != R_SP)
			cpu->gpr[r] = 0x100 + r;
	RUN(cpu, 0x60);                              /* pusha */
	assert_int_equal(cpu->gpr[R_SP], 0x7000 - 32);
	assert_int_equal(*(uint32_t *)(ram + 0x7000 - 32), 0x107);     /* EDI last */
	assert_int_equal(*(uint32_t *)(ram + 0x7000 - 20), 0x7000);    /* original ESP */
	for (unsigned r = 0; r < 8; r++)
		if (r != R_SP)
			cpu->gpr[r] = 0;
	RUN(cpu, 0x61);                              /* popa */
	assert_int_equal(cpu->gpr[R_SP], 0x7000);
	assert_int_equal(cpu->gpr[R_BX], 0x103);
	RUN(cpu, 0x66, 0x50);                        /* push %ax: 2 bytes */
	assert_int_equal(cpu->gpr[R_SP], 0x7000 - 2);
	RUN(cpu, 0xe8, 0x10, 0, 0, 0);               /* call .+0x15 */
	assert_int_equal(cpu->rip, CODE + 5 + 0x10);
	assert_int_equal(ld(ram + 0x7000 - 6, 4), CODE + 5);
	RUN(cpu, 0xc3);
	assert_int_equal(cpu->rip, CODE + 5);
	/* BCD (invalid in 64-bit mode) */
	cpu->gpr[R_AX] = 0xae;
	cpu->rflags = 2;
	RUN(cpu, 0x27);                              /* daa: 0x79+0x35 */
	assert_int_equal(cpu->gpr[R_AX] & 0xff, 0x14);
	assert_true(cpu->rflags & EFL_CF);
	assert_true(cpu->rflags & EFL_AF);
	cpu->gpr[R_AX] = 0x4f;
	RUN(cpu, 0xd4, 0x0a);                        /* aam */
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0x0709);
	RUN(cpu, 0xd5, 0x0a);                        /* aad */
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0x004f);
	cpu->gpr[R_AX] = 0x0b;
	cpu->rflags = 2;
	RUN(cpu, 0x37);                              /* aaa */
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0x0101);
	cpu->gpr[R_AX] = 0x0105;
	cpu->rflags = 2 | EFL_AF;
	RUN(cpu, 0x3f);                              /* aas */
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0xff0f);    /* SDM: AX -= 6, AH -= 1 */
	cpu->gpr[R_AX] = 0x20;    /* 0x15 - 0x06: das of 0x0f gives 0x09 */
	cpu->gpr[R_AX] = 0x0f;
	cpu->rflags = 2;
	RUN(cpu, 0x2f);
	assert_int_equal(cpu->gpr[R_AX] & 0xff, 0x09);
	assert_int_equal(RUN_RC(cpu, 0xd4, 0x00), EMU_JMP_FAULT);   /* aam 0: #DE */
	assert_int_equal(cpu->exc_vector, EXC_DE);
	free(cpu);
}

static void test_stack64(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	cpu->gpr[R_BX] = 0x1122334455667788ull;
	RUN(cpu, 0x53);                              /* push %rbx */
	assert_int_equal(cpu->gpr[R_SP], 0x7000 - 8);
	RUN(cpu, 0x41, 0x5c);                        /* pop %r12 */
	assert_int_equal(cpu->gpr[R_R12], 0x1122334455667788ull);
	RUN(cpu, 0x6a, 0xff);                        /* push $-1 */
	assert_int_equal(*(uint64_t *)(ram + 0x7000 - 8), ~0ull);
	RUN(cpu, 0x8f, 0x44, 0x24, 0xf8);            /* pop -8(%rsp): address after the increment */
	assert_int_equal(cpu->gpr[R_SP], 0x7000);
	assert_int_equal(*(uint64_t *)(ram + 0x7000 - 8), ~0ull);
	cpu->gpr[R_BP] = 0xbbbb;
	RUN(cpu, 0xc8, 0x20, 0x00, 0x00);            /* enter $0x20,$0 */
	assert_int_equal(cpu->gpr[R_BP], 0x7000 - 8);
	assert_int_equal(cpu->gpr[R_SP], 0x7000 - 8 - 0x20);
	RUN(cpu, 0xc9);                              /* leave */
	assert_int_equal(cpu->gpr[R_SP], 0x7000);
	assert_int_equal(cpu->gpr[R_BP], 0xbbbb);
	RUN(cpu, 0xe8, 0x00, 0x01, 0x00, 0x00);      /* call .+0x105 */
	assert_int_equal(cpu->rip, CODE + 5 + 0x100);
	assert_int_equal(*(uint64_t *)(ram + 0x7000 - 8), CODE + 5);
	RUN(cpu, 0xc2, 0x08, 0x00);                  /* ret $8 */
	assert_int_equal(cpu->rip, CODE + 5);
	assert_int_equal(cpu->gpr[R_SP], 0x7000 + 8);
	cpu->gpr[R_AX] = DATA;
	RUN(cpu, 0xff, 0xd0);                        /* call *%rax */
	assert_int_equal(cpu->rip, DATA);
	RUN(cpu, 0x9c);                              /* pushf */
	RUN(cpu, 0x66, 0x6a, 0x05);                  /* pushw $5 */
	assert_int_equal(cpu->gpr[R_SP], 0x7000 - 2 - 8);
	cpu->gpr[R_AX] = 0x8000000000000000ull;
	assert_int_equal(RUN_RC(cpu, 0xff, 0xe0), EMU_JMP_FAULT);    /* jmp *%rax: non-canonical */
	assert_int_equal(cpu->exc_vector, EXC_GP);
	assert_int_equal(cpu->rip, CODE);
	free(cpu);
}

/* Compatibility mode and 16-bit protected mode: operand/address defaults, INC/DEC 40-4F, ENTER with nesting. */
static void test_compat_and_prot16(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_COMPAT32);

	(void)state;
	cpu->gpr[R_AX] = 0xffffffffull;
	RUN(cpu, 0x40);                              /* inc %eax (no REX outside 64-bit mode) */
	assert_int_equal(cpu->gpr[R_AX], 0);
	assert_true(cpu->rflags & EFL_ZF);
	RUN(cpu, 0x48);                              /* dec %eax */
	assert_int_equal(cpu->gpr[R_AX], 0xffffffffull);
	RUN(cpu, 0x50);                              /* push %eax: 4 bytes */
	assert_int_equal(cpu->gpr[R_SP], 0x7000 - 4);
	cpu->gpr[R_BP] = 0x6800;
	*(uint32_t *)(ram + 0x6800 - 4) = 0xaaaa;
	RUN(cpu, 0xc8, 0x10, 0x00, 0x02);            /* enter $0x10,$2: copies one outer frame pointer */
	assert_int_equal(cpu->gpr[R_BP], 0x7000 - 8);
	assert_int_equal(*(uint32_t *)(ram + 0x7000 - 8), 0x6800);     /* old EBP */
	assert_int_equal(*(uint32_t *)(ram + 0x7000 - 12), 0xaaaa);    /* [EBP-4] of the outer frame */
	assert_int_equal(*(uint32_t *)(ram + 0x7000 - 16), 0x7000 - 8); /* the new frame pointer */
	assert_int_equal(cpu->gpr[R_SP], 0x7000 - 16 - 0x10);
	free(cpu);

	cpu = new_cpu(EMU_PROT16);
	cpu->gpr[R_AX] = 0x12345678;
	RUN(cpu, 0xb8, 0x34, 0x12);                  /* mov $0x1234,%ax: 16-bit default */
	assert_int_equal(cpu->gpr[R_AX], 0x12341234);
	cpu->gpr[R_BX] = 0x10;
	cpu->gpr[R_SI] = 0x20;
	*(uint16_t *)(ram + 0x38) = 0x5555;
	RUN(cpu, 0x8b, 0x48, 0x08);                  /* mov 8(%bx,%si),%cx: 16-bit addressing */
	assert_int_equal(cpu->gpr[R_CX] & 0xffff, 0x5555);
	RUN(cpu, 0x66, 0x50);                        /* push %eax: 4 bytes with 66 */
	assert_int_equal(cpu->gpr[R_SP], 0x7000 - 4);
	free(cpu);
}

static void test_branches(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	cpu->rflags = 2 | EFL_ZF;
	RUN(cpu, 0x74, 0x10);                        /* je: taken */
	assert_int_equal(cpu->rip, CODE + 0x12);
	RUN(cpu, 0x75, 0x10);                        /* jne: not taken */
	assert_int_equal(cpu->rip, CODE + 2);
	RUN(cpu, 0x0f, 0x84, 0x00, 0xf0, 0xff, 0xff); /* je rel32 backwards */
	assert_int_equal(cpu->rip, CODE + 6 - 0x1000);
	cpu->rflags = 2 | EFL_SF;
	RUN(cpu, 0x7c, 0x02);                        /* jl: SF != OF */
	assert_int_equal(cpu->rip, CODE + 4);
	cpu->gpr[R_CX] = 2;
	RUN(cpu, 0xe2, 0xfe);                        /* loop: rcx 1, taken */
	assert_int_equal(cpu->rip, CODE);
	assert_int_equal(cpu->gpr[R_CX], 1);
	RUN(cpu, 0xe2, 0xfe);                        /* rcx 0, not taken */
	assert_int_equal(cpu->rip, CODE + 2);
	RUN(cpu, 0xe3, 0x05);                        /* jrcxz: taken */
	assert_int_equal(cpu->rip, CODE + 7);
	cpu->gpr[R_CX] = 0x100000000ull;
	RUN(cpu, 0x67, 0xe3, 0x05);                  /* jecxz looks at ECX only */
	assert_int_equal(cpu->rip, CODE + 8);
	RUN(cpu, 0xeb, 0x80);                        /* jmp -128 */
	assert_int_equal(cpu->rip, CODE + 2 - 128);
	cpu->rflags = 2;
	cpu->gpr[R_AX] = 5;
	cpu->gpr[R_BX] = 7;
	RUN(cpu, 0x48, 0x0f, 0x44, 0xc3);            /* cmove: not moved */
	assert_int_equal(cpu->gpr[R_AX], 5);
	cpu->gpr[R_AX] = 0xffffffff00000005ull;
	RUN(cpu, 0x0f, 0x44, 0xc3);                  /* cmove r32: upper half cleared even if not moved */
	assert_int_equal(cpu->gpr[R_AX], 5);
	free(cpu);
}

static void test_string_ops(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	for (unsigned i = 0; i < 64; i++)
		ram[DATA + i] = (uint8_t)i;
	memset(ram + DATA + 0x100, 0, 0x100);
	cpu->gpr[R_SI] = DATA;
	cpu->gpr[R_DI] = DATA + 0x100;
	cpu->gpr[R_CX] = 10;
	RUN(cpu, 0xf3, 0xa4);                        /* rep movsb */
	assert_int_equal(cpu->rip, CODE + 2);
	assert_int_equal(cpu->gpr[R_CX], 0);
	assert_int_equal(cpu->gpr[R_SI], DATA + 10);
	assert_int_equal(cpu->gpr[R_DI], DATA + 0x10a);
	assert_memory_equal(ram + DATA + 0x100, ram + DATA, 10);
	assert_int_equal(ram[DATA + 0x10a], 0);
	/* backwards with DF, 8-byte elements */
	cpu->rflags |= EFL_DF;
	cpu->gpr[R_SI] = DATA + 24;
	cpu->gpr[R_DI] = DATA + 0x124;
	cpu->gpr[R_CX] = 4;
	RUN(cpu, 0xf3, 0x48, 0xa5);                  /* rep movsq, down */
	assert_int_equal(cpu->gpr[R_SI], DATA - 8);
	assert_memory_equal(ram + DATA + 0x10c, ram + DATA, 32);
	cpu->rflags &= ~(uint64_t)EFL_DF;
	/* rep stosl */
	cpu->gpr[R_AX] = 0xa5a5a5a5;
	cpu->gpr[R_DI] = DATA + 0x200;
	cpu->gpr[R_CX] = 3;
	RUN(cpu, 0xf3, 0xab);
	assert_int_equal(*(uint32_t *)(ram + DATA + 0x208), 0xa5a5a5a5);
	assert_int_equal(cpu->gpr[R_DI], DATA + 0x20c);
	/* repe cmpsb stops after the first difference */
	memcpy(ram + DATA + 0x300, "abcdef", 6);
	memcpy(ram + DATA + 0x400, "abcxef", 6);
	cpu->gpr[R_SI] = DATA + 0x300;
	cpu->gpr[R_DI] = DATA + 0x400;
	cpu->gpr[R_CX] = 6;
	RUN(cpu, 0xf3, 0xa6);
	assert_int_equal(cpu->gpr[R_CX], 2);
	assert_false(cpu->rflags & EFL_ZF);
	assert_int_equal(cpu->gpr[R_SI], DATA + 0x304);
	/* repne scasb finds the byte */
	cpu->gpr[R_AX] = 'e';
	cpu->gpr[R_DI] = DATA + 0x300;
	cpu->gpr[R_CX] = 100;
	RUN(cpu, 0xf2, 0xae);
	assert_true(cpu->rflags & EFL_ZF);
	assert_int_equal(cpu->gpr[R_DI], DATA + 0x305);
	assert_int_equal(cpu->gpr[R_CX], 95);
	/* lodsw, and REP with rcx = 0 does nothing */
	cpu->gpr[R_SI] = DATA + 0x300;
	RUN(cpu, 0x66, 0xad);
	assert_int_equal(cpu->gpr[R_AX] & 0xffff, 0x6261);
	cpu->gpr[R_CX] = 0;
	RUN(cpu, 0xf3, 0xa4);
	assert_int_equal(cpu->gpr[R_SI], DATA + 0x302);
	/* addr32: ESI/EDI/ECX, upper halves cleared */
	cpu->gpr[R_SI] = 0x500000000ull + DATA;
	cpu->gpr[R_DI] = 0x600000000ull + DATA + 0x500;
	cpu->gpr[R_CX] = 0x700000002ull;
	RUN(cpu, 0x67, 0xf3, 0xa4);
	assert_int_equal(cpu->gpr[R_CX], 0);
	assert_int_equal(cpu->gpr[R_SI], DATA + 2);
	free(cpu);

	/* 16-bit: SI wraps inside the segment */
	cpu = new_cpu(EMU_REAL);
	cpu->seg[SEG_DS].base = 0x20000;
	cpu->seg[SEG_ES].base = 0x30000;
	ram[0x2ffff] = 0x11;
	ram[0x20000] = 0x22;
	cpu->gpr[R_SI] = 0xffff;
	cpu->gpr[R_DI] = 0x10;
	cpu->gpr[R_CX] = 0x10002;    /* CX = 2 */
	RUN(cpu, 0xf3, 0xa4);
	assert_int_equal(ram[0x30010], 0x11);
	assert_int_equal(ram[0x30011], 0x22);
	assert_int_equal(cpu->gpr[R_SI], 1);
	assert_int_equal(cpu->gpr[R_CX], 0x10000);
	free(cpu);
}

static void test_rep_resumable(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	memset(ram + DATA, 0x5a, 0x100);
	cpu->gpr[R_SI] = DATA;
	cpu->gpr[R_DI] = DATA + 0x1000;
	cpu->gpr[R_CX] = 0x100;
	fk.fault_lo = DATA + 0x1000 + 0x40;
	fk.fault_hi = DATA + 0x1000 + 0x41;
	assert_int_equal(RUN_RC(cpu, 0xf3, 0xa4), EMU_JMP_FAULT);
	assert_int_equal(cpu->exc_vector, EXC_PF);
	assert_int_equal(cpu->rip, CODE);                 /* not retired */
	assert_int_equal(cpu->gpr[R_CX], 0x100 - 0x40);    /* progress visible */
	assert_int_equal(cpu->gpr[R_DI], DATA + 0x1040);
	fk.fault_lo = fk.fault_hi = 0;
	assert_int_equal(step(cpu), 0);                   /* resumes */
	assert_int_equal(cpu->gpr[R_CX], 0);
	assert_int_equal(cpu->rip, CODE + 2);
	assert_int_equal(ram[DATA + 0x10ff], 0x5a);
	/* a long run is cut in batches: RIP stays until the last one */
	cpu->gpr[R_DI] = DATA + 0x10000;
	cpu->gpr[R_CX] = 10000;
	put_code(cpu, (const uint8_t[]){ 0xf3, 0xaa }, 2);
	assert_int_equal(step(cpu), 0);
	assert_int_equal(cpu->rip, CODE);
	assert_true(cpu->gpr[R_CX] > 0 && cpu->gpr[R_CX] < 10000);
	for (int i = 0; i < 10 && cpu->rip == CODE; i++)
		assert_int_equal(step(cpu), 0);
	assert_int_equal(cpu->rip, CODE + 2);
	assert_int_equal(cpu->gpr[R_DI], DATA + 0x10000 + 10000);
	free(cpu);
}

static void test_commit_on_fault(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);
	static const uint8_t fforms[][3] = {
		{ 0x01, 0x06 },       /* add %eax,(%rsi) */
		{ 0x0f, 0xc1, 0x06 }, /* xadd %eax,(%rsi) */
		{ 0x87, 0x06 },       /* xchg %eax,(%rsi) */
		{ 0xff, 0x16 },       /* call *(%rsi) */
		{ 0x8f, 0x06 },       /* pop (%rsi) */
		{ 0x0f, 0xb1, 0x1e }, /* cmpxchg %ebx,(%rsi) */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(fforms) / sizeof(fforms[0]); i++) {
		uint64_t before[16];

		cpu_init(cpu, EMU_LONG64);
		for (unsigned r = 0; r < 16; r++)
			cpu->gpr[r] = r == R_SP ? 0x7000 : r == R_SI ? DATA : 0x1000 + r;
		cpu->rflags = 2 | EFL_CF;
		memcpy(before, cpu->gpr, sizeof(before));
		fk.fault_lo = DATA;
		fk.fault_hi = DATA + 8;
		assert_int_equal(run1_rc(cpu, fforms[i], fforms[i][0] == 0x0f ? 3 : 2), EMU_JMP_FAULT);
		assert_int_equal(cpu->exc_vector, EXC_PF);
		assert_memory_equal(before, cpu->gpr, sizeof(before));
		assert_int_equal(cpu->rip, CODE);
		assert_int_equal(cpu->rflags, 2 | EFL_CF);
	}
	fk.fault_lo = fk.fault_hi = 0;
	free(cpu);
}

struct lock_arg {
	unsigned n;
	const uint8_t *code;
	size_t len;
	uint64_t code_at;
	int rc;
};

static void *lock_thread(void *p)
{
	struct lock_arg *a = p;
	struct emu_cpu *cpu = calloc(1, sizeof(*cpu));

	cpu_init(cpu, EMU_LONG64);
	cpu->rip = a->code_at;
	cpu->gpr[R_SI] = DATA;
	cpu->gpr[R_CX] = a->n;
	a->rc = -1;
	for (uint64_t i = 0; i < 100ull * a->n; i++) {
		int r = step(cpu);

		if (r == EMU_JMP_EXIT) {    /* HLT */
			a->rc = cpu->gpr[R_CX] == 0 ? 0 : -2;
			break;
		}
		if (r != 0) {
			fprintf(stderr, "lock thread: rc %d vector %d rip %#llx\n", r, cpu->exc_vector,
				(unsigned long long)cpu->rip);
			break;
		}
	}
	free(cpu);
	return NULL;
}

static void run_lock_program(const uint8_t *code, size_t len, unsigned n, unsigned threads_n)
{
	pthread_t th[4];
	struct lock_arg arg[4];

	memcpy(ram + 0x3000, code, len);
	memset(ram + DATA, 0, 16);
	for (unsigned t = 0; t < threads_n; t++) {
		arg[t] = (struct lock_arg){ .n = n, .code = code, .len = len, .code_at = 0x3000 };
		assert_int_equal(pthread_create(&th[t], NULL, lock_thread, &arg[t]), 0);
	}
	for (unsigned t = 0; t < threads_n; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(arg[t].rc, 0);
	}
}

static void test_lock_threads(void **state)
{
	/* lock incl (%rsi); dec %ecx; jnz; hlt */
	static const uint8_t inc[] = { 0xf0, 0xff, 0x06, 0xff, 0xc9, 0x75, 0xf9, 0xf4 };
	/* 1: mov (%rsi),%eax; lea 1(%rax),%edx; lock cmpxchg %edx,(%rsi); jne 1b; dec %ecx; jnz 1b; hlt */
	static const uint8_t cas[] = { 0x8b, 0x06, 0x8d, 0x50, 0x01, 0xf0, 0x0f, 0xb1, 0x16, 0x75, 0xf5,
				       0xff, 0xc9, 0x75, 0xf1, 0xf4 };
	/* mov $1,%eax; lock xadd %eax,4(%rsi) ... */
	static const uint8_t xadd[] = { 0xb8, 0x01, 0, 0, 0, 0xf0, 0x0f, 0xc1, 0x46, 0x04, 0xff, 0xc9, 0x75, 0xf2,
					0xf4 };
	/* mov $2,%eax; xchg %eax,8(%rsi) (always locked) + lock addq $1,8(%rsi) is not needed; lock btsq */
	static const unsigned n = 200000;

	(void)state;
	run_lock_program(inc, sizeof(inc), n, 2);
	assert_int_equal(*(uint32_t *)(ram + DATA), 2 * n);
	run_lock_program(cas, sizeof(cas), n, 2);
	assert_int_equal(*(uint32_t *)(ram + DATA), 2 * n);
	run_lock_program(xadd, sizeof(xadd), n, 2);
	assert_int_equal(*(uint32_t *)(ram + DATA + 4), 2 * n);
}

static void test_undefined_and_faults(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);
	static const struct { uint8_t b[4]; uint8_t n; int vec; } cases[] = {
		{ { 0x0f, 0x0b }, 2, EXC_UD },             /* ud2 */
		{ { 0x0f, 0xff, 0xc0 }, 3, EXC_UD },       /* ud0 */
		{ { 0x0f, 0x10, 0xc0 }, 3, EXC_UD },       /* movups with CR4.OSFXSR clear */
		{ { 0x0f, 0x77 }, 2, EXC_UD },             /* emms: no MMX */
		{ { 0x0f, 0x01, 0xd0 }, 3, EXC_UD },       /* xgetbv */
		{ { 0x0f, 0x01, 0xc8 }, 3, EXC_UD },       /* monitor */
		{ { 0x62, 0xc0 }, 2, EXC_UD },             /* bound / EVEX in 64-bit mode */
		{ { 0x06 }, 1, EXC_UD },                   /* push %es in 64-bit mode */
		{ { 0x27 }, 1, EXC_UD },                   /* daa in 64-bit mode */
		{ { 0x8e, 0xc8 }, 2, EXC_UD },             /* mov to %cs */
		{ { 0x8d, 0xc0 }, 2, EXC_UD },             /* lea with a register */
		{ { 0xf0, 0x89, 0x06 }, 3, EXC_UD },       /* lock mov */
		{ { 0xf0, 0x01, 0xc0 }, 3, EXC_UD },       /* lock add to a register */
		{ { 0xf0, 0x39, 0x06 }, 3, EXC_UD },       /* lock cmp */
		{ { 0xf0, 0x90 }, 2, EXC_UD },             /* lock nop */
		{ { 0xff, 0xff }, 2, EXC_UD },             /* ff /7 */
		{ { 0xfe, 0xd0 }, 2, EXC_UD },             /* fe /2 */
		{ { 0xc6, 0xc8, 0 }, 3, EXC_UD },          /* c6 /1 */
		{ { 0xd9, 0xd8 }, 2, EXC_UD },             /* a reserved x87 encoding */
		{ { 0xf7, 0xf3 }, 2, EXC_DE },             /* div %ebx, ebx = 0 */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cpu_init(cpu, EMU_LONG64);
		cpu->gpr[R_SI] = DATA;
		cpu->gpr[R_BX] = 0;
		if (run1_rc(cpu, cases[i].b, cases[i].n) != EMU_JMP_FAULT)
			fail_msg("case %zu (%02x %02x) did not fault", i, cases[i].b[0], cases[i].b[1]);
		assert_int_equal(cpu->exc_vector, cases[i].vec);
		assert_int_equal(cpu->rip, CODE);
	}
	cpu->cr0 |= 1u << 2;    /* EM */
	assert_int_equal(RUN_RC(cpu, 0xd9, 0xe8), EMU_JMP_FAULT);    /* fld1 */
	assert_int_equal(cpu->exc_vector, EXC_NM);
	/* privileged at CPL 3 */
	cpu->cpl = 3;
	assert_int_equal(RUN_RC(cpu, 0xf4), EMU_JMP_FAULT);
	assert_int_equal(cpu->exc_vector, EXC_GP);
	assert_int_equal(RUN_RC(cpu, 0x0f, 0x22, 0xd8), EMU_JMP_FAULT);    /* mov %rax,%cr3 */
	assert_int_equal(cpu->exc_vector, EXC_GP);
	assert_int_equal(RUN_RC(cpu, 0xfa), EMU_JMP_FAULT);                /* cli with IOPL 0 */
	assert_int_equal(cpu->exc_vector, EXC_GP);
	/* an instruction longer than 15 bytes */
	assert_int_equal(RUN_RC(cpu, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
				0x66, 0x66, 0x90), EMU_JMP_FAULT);
	assert_int_equal(cpu->exc_vector, EXC_GP);
	free(cpu);
}

static void test_flags_and_privilege(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	/* POPF at CPL 3, IOPL 0: IF and IOPL unchanged, arithmetic flags loaded */
	cpu->cpl = 3;
	cpu->rflags = 2 | EFL_IF;
	cpu->gpr[R_SP] = 0x7000;
	*(uint64_t *)(ram + 0x7000) = EFL_CF | EFL_ZF | EFL_IOPL | EFL_DF;
	RUN(cpu, 0x9d);
	assert_int_equal(cpu->rflags, 2 | EFL_IF | EFL_CF | EFL_ZF | EFL_DF);
	/* at CPL 0 everything but VM/RF */
	cpu->cpl = 0;
	cpu->gpr[R_SP] = 0x7000;
	*(uint64_t *)(ram + 0x7000) = EFL_IOPL | EFL_VM | EFL_RF | EFL_AC;
	RUN(cpu, 0x9d);
	assert_int_equal(cpu->rflags, 2 | EFL_IOPL | EFL_AC);
	/* STI sets the interrupt shadow only when IF was clear */
	RUN(cpu, 0xfb);
	assert_true(cpu->irq_shadow);
	assert_true(cpu->rflags & EFL_IF);
	cpu->irq_shadow = false;
	RUN(cpu, 0xfb);
	assert_false(cpu->irq_shadow);
	RUN(cpu, 0xfa);
	assert_false(cpu->rflags & EFL_IF);
	/* CLI at CPL 3 allowed with IOPL 3 */
	cpu->cpl = 3;
	RUN(cpu, 0xfb);
	assert_true(cpu->rflags & EFL_IF);
	/* virtual-8086 mode: CPL 3, so CLI needs IOPL 3 and port I/O the bitmap */
	cpu_init(cpu, EMU_REAL);
	cpu->rflags = 2 | EFL_VM | EFL_IF;
	assert_int_equal(RUN_RC(cpu, 0xfa), EMU_JMP_FAULT);
	assert_int_equal(cpu->exc_vector, EXC_GP);
	assert_int_equal(RUN_RC(cpu, 0xe4, 0x60), EMU_JMP_FAULT);    /* no TSS bitmap */
	cpu->rflags |= EFL_IOPL;
	RUN(cpu, 0xfa);
	assert_false(cpu->rflags & EFL_IF);
	cpu->rflags &= ~(uint64_t)EFL_VM;            /* real mode proper: no checks */
	cpu->rflags &= ~(uint64_t)EFL_IOPL;
	RUN(cpu, 0xfb);
	assert_true(cpu->rflags & EFL_IF);
	cpu_init(cpu, EMU_LONG64);
	/* SAHF/LAHF, CMC/STC/CLC, CLD/STD */
	cpu->gpr[R_AX] = 0xd500;
	RUN(cpu, 0x9e);
	assert_int_equal(cpu->rflags & 0xd5, 0xd5);
	RUN(cpu, 0xf5);
	assert_false(cpu->rflags & EFL_CF);
	RUN(cpu, 0xfd);
	assert_true(cpu->rflags & EFL_DF);
	RUN(cpu, 0xfc);
	assert_false(cpu->rflags & EFL_DF);
	free(cpu);
}

static void test_io(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	cpu->gpr[R_AX] = 0xffffffff;
	assert_int_equal(RUN_RC(cpu, 0xe4, 0x60), EMU_JMP_EXIT);    /* in $0x60,%al: exits, not retired */
	assert_int_equal(cpu->rip, CODE);
	assert_int_equal(fk.io_port, 0x60);
	cpu->io_done = true;
	fk.in_value = 0x42;
	assert_int_equal(step(cpu), 0);
	assert_int_equal(cpu->gpr[R_AX], 0xffffff42);
	assert_int_equal(cpu->rip, CODE + 2);
	cpu->gpr[R_DX] = 0x3f8;
	cpu->gpr[R_AX] = 0x12345678;
	assert_int_equal(RUN_RC(cpu, 0x66, 0xef), EMU_JMP_EXIT);    /* out %ax,(%dx): retired, then exit */
	assert_int_equal(cpu->rip, CODE + 2);
	assert_int_equal(fk.io_out_val, 0x5678);
	assert_int_equal(fk.io_size, 2);
	/* rep outsb: one element per exit, RIP stays until the last */
	memcpy(ram + DATA, "xyz", 3);
	cpu->gpr[R_SI] = DATA;
	cpu->gpr[R_CX] = 3;
	assert_int_equal(RUN_RC(cpu, 0xf3, 0x6e), EMU_JMP_EXIT);
	assert_int_equal(fk.io_out_val, 'x');
	assert_int_equal(cpu->rip, CODE);
	assert_int_equal(step(cpu), EMU_JMP_EXIT);
	assert_int_equal(step(cpu), EMU_JMP_EXIT);
	assert_int_equal(fk.io_out_val, 'z');
	assert_int_equal(cpu->rip, CODE + 2);
	assert_int_equal(cpu->gpr[R_CX], 0);
	/* insw: exit, then the value lands in memory */
	cpu->gpr[R_DI] = DATA + 0x10;
	assert_int_equal(RUN_RC(cpu, 0x66, 0x6d), EMU_JMP_EXIT);
	cpu->io_done = true;
	fk.in_value = 0xbeef;
	assert_int_equal(step(cpu), 0);
	assert_int_equal(*(uint16_t *)(ram + DATA + 0x10), 0xbeef);
	assert_int_equal(cpu->gpr[R_DI], DATA + 0x12);
	/* CPL 3 with IOPL 0 and an I/O bitmap that denies port 0x61 but allows 0x60 */
	cpu->cpl = 3;
	cpu->tr.base = 0x9000;
	cpu->tr.limit = 0x67 + 0x20;
	*(uint16_t *)(ram + 0x9000 + 0x66) = 0x68;
	memset(ram + 0x9000 + 0x68, 0, 0x20);
	ram[0x9000 + 0x68 + 0x60 / 8] = 0x02;
	cpu->io_done = true;
	assert_int_equal(RUN_RC(cpu, 0xe4, 0x60), 0);
	assert_int_equal(RUN_RC(cpu, 0xe4, 0x61), EMU_JMP_FAULT);
	assert_int_equal(cpu->exc_vector, EXC_GP);
	free(cpu);
}

static void test_system_decode(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);

	(void)state;
	cpu->gpr[R_AX] = 0x5000;
	RUN(cpu, 0x0f, 0x22, 0xd8);                  /* mov %rax,%cr3 */
	assert_int_equal(cpu->cr3, 0x5000);
	RUN(cpu, 0x0f, 0x20, 0xc1);                  /* mov %cr0,%rcx */
	assert_int_equal(cpu->gpr[R_CX], cpu->cr0);
	cpu->gpr[R_CX] = 0x10;
	RUN(cpu, 0x0f, 0x32);                        /* rdmsr */
	assert_int_equal(cpu->gpr[R_AX], 0x55667798);
	assert_int_equal(cpu->gpr[R_DX], 0x11223344);
	cpu->gpr[R_CX] = 0xc0000101;
	cpu->gpr[R_AX] = 0x1000;
	cpu->gpr[R_DX] = 1;
	RUN(cpu, 0x0f, 0x30);                        /* wrmsr GS base */
	assert_int_equal(cpu->seg[SEG_GS].base, 0x100001000ull);
	cpu->msr_kernel_gs_base = 0x77;
	RUN(cpu, 0x0f, 0x01, 0xf8);                  /* swapgs */
	assert_int_equal(cpu->seg[SEG_GS].base, 0x77);
	assert_int_equal(cpu->msr_kernel_gs_base, 0x100001000ull);
	RUN(cpu, 0x0f, 0x31);                        /* rdtsc */
	assert_int_equal(cpu->gpr[R_AX], 7);
	assert_int_equal(cpu->gpr[R_DX], 5);
	RUN(cpu, 0x0f, 0xa2);                        /* cpuid */
	assert_int_equal(cpu->gpr[R_BX], 0x756e6547);
	cpu->gpr[R_SI] = DATA;
	*(uint16_t *)(ram + DATA) = 0x27;
	memcpy(ram + DATA + 2, (uint64_t[]){ 0xffff800000001000ull }, 8);
	RUN(cpu, 0x0f, 0x01, 0x16);                  /* lgdt (%rsi) */
	assert_int_equal(cpu->gdt.base, 0xffff800000001000ull);
	assert_int_equal(cpu->gdt.limit, 0x27);
	RUN(cpu, 0x0f, 0x01, 0x46, 0x10);            /* sgdt 0x10(%rsi) */
	assert_int_equal(*(uint16_t *)(ram + DATA + 0x10), 0x27);
	assert_int_equal(ld(ram + DATA + 0x12, 8), 0xffff800000001000ull);
	RUN(cpu, 0x0f, 0x01, 0x7e, 0x08);            /* invlpg 8(%rsi) */
	assert_int_equal(cpu->cr2, DATA + 8);
	cpu->gpr[R_AX] = 0x28;
	RUN(cpu, 0x0f, 0x00, 0xd8);                  /* ltr %ax */
	assert_int_equal(cpu->tr.selector, 0x28);
	RUN(cpu, 0x0f, 0x05);                        /* syscall */
	assert_int_equal(fk.syscalls, 1);
	assert_int_equal(cpu->rip, CODE + 2);        /* RIP of the next instruction for emu_syscall */
	RUN(cpu, 0x0f, 0x34);                        /* sysenter: emu_sysenter sets RIP */
	assert_int_equal(fk.sysenters, 1);
	assert_int_equal(cpu->rip, 0x5000);
	cpu->rip = CODE;
	RUN(cpu, 0x48, 0x0f, 0x35);                  /* sysexitq: REX.W selects the 64-bit form */
	assert_int_equal(fk.sysexit_opsize, 8);
	assert_int_equal(cpu->rip, 0x6000);
	cpu->rip = CODE;
	RUN(cpu, 0x0f, 0x35);                        /* sysexit (to 32-bit) */
	assert_int_equal(fk.sysexit_opsize, 4);
	cpu->rip = CODE;
	RUN(cpu, 0xcd, 0x80);                        /* int $0x80 */
	assert_int_equal(fk.last_int, 0x80);
	assert_int_equal(fk.int_next, CODE + 2);
	assert_int_equal(RUN_RC(cpu, 0xf4), EMU_JMP_EXIT);    /* hlt: retired, then exits */
	assert_int_equal(fk.hlt, 1);
	assert_int_equal(cpu->rip, CODE + 1);
	RUN(cpu, 0x0f, 0xae, 0xf0);                  /* mfence */
	RUN(cpu, 0x0f, 0x18, 0x0e);                  /* prefetcht0 (%rsi) */
	RUN(cpu, 0x0f, 0x0d, 0x0e);                  /* prefetchw (%rsi) */
	assert_int_equal(cpu->rip, CODE + 3);
	/* cmpxchg16b */
	*(uint64_t *)(ram + DATA + 0x20) = 1;
	*(uint64_t *)(ram + DATA + 0x28) = 2;
	cpu->gpr[R_AX] = 1;
	cpu->gpr[R_DX] = 2;
	cpu->gpr[R_BX] = 3;
	cpu->gpr[R_CX] = 4;
	RUN(cpu, 0xf0, 0x48, 0x0f, 0xc7, 0x4e, 0x20);
	assert_true(cpu->rflags & EFL_ZF);
	assert_int_equal(*(uint64_t *)(ram + DATA + 0x28), 4);
	RUN(cpu, 0x48, 0x0f, 0xc7, 0x4e, 0x20);      /* fails now: RDX:RAX loaded */
	assert_false(cpu->rflags & EFL_ZF);
	assert_int_equal(cpu->gpr[R_AX], 3);
	assert_int_equal(cpu->gpr[R_DX], 4);
	/* cmpxchg8b */
	cpu->gpr[R_AX] = 3;
	cpu->gpr[R_DX] = 0;
	cpu->gpr[R_BX] = 9;
	cpu->gpr[R_CX] = 8;
	RUN(cpu, 0x0f, 0xc7, 0x4e, 0x20);
	assert_true(cpu->rflags & EFL_ZF);
	assert_int_equal(*(uint64_t *)(ram + DATA + 0x20), 0x800000009ull);
	free(cpu);
}

static void test_fetch_paths(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);
	/* mov $0x11223344,%ebx straddling a page boundary, then the same with the slow path only */
	static const uint8_t insn[] = { 0x48, 0xc7, 0xc3, 0x44, 0x33, 0x22, 0x11 };

	(void)state;
	for (int slow = 0; slow < 2; slow++) {
		fk.no_fast_fetch = slow;
		memcpy(ram + 0x4ffd, insn, sizeof(insn));
		cpu->rip = 0x4ffd;
		cpu->gpr[R_BX] = 0;
		assert_int_equal(step(cpu), 0);
		assert_int_equal(cpu->gpr[R_BX], 0x11223344);
		assert_int_equal(cpu->rip, 0x4ffd + sizeof(insn));
	}
	/* a fetch fault in the second page leaves nothing changed */
	fk.no_fast_fetch = false;
	fk.fault_lo = 0x5000;
	fk.fault_hi = 0x6000;
	cpu->rip = 0x4ffd;
	cpu->gpr[R_BX] = 0;
	assert_int_equal(step(cpu), EMU_JMP_FAULT);
	assert_int_equal(cpu->exc_vector, EXC_PF);
	assert_int_equal(cpu->gpr[R_BX], 0);
	assert_int_equal(cpu->rip, 0x4ffd);
	fk.fault_lo = fk.fault_hi = 0;
	free(cpu);
}

/*
 * Robustness: random byte strings (biased to real opcodes and prefixes) in every mode must never crash the
 * process, and an instruction that faults must leave RIP on itself (emu.h commit rule).
 */
static void test_random_bytes(void **state)
{
	static const enum emu_mode modes[] = { EMU_REAL, EMU_PROT16, EMU_PROT32, EMU_COMPAT32, EMU_LONG64 };
	static const uint8_t pref[] = { 0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x2e, 0x3e, 0x26, 0x36, 0x64, 0x65, 0x48, 0x41,
					0x0f, 0x0f, 0x0f };
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);
	unsigned done = 0, faults = 0, exits = 0;

	(void)state;
	for (unsigned i = 0; i < 150000; i++) {
		uint8_t b[16];

		cpu_init(cpu, modes[i % 5]);
		for (unsigned r = 0; r < 16; r++)
			cpu->gpr[r] = (rnd() & 1) ? DATA + (rnd() & 0xfff) : rnd_value();
		cpu->gpr[R_SP] = 0x7000;
		cpu->gpr[R_CX] &= 0xffff;
		cpu->rflags = 2 | (rnd() & (0x8d5 | EFL_DF));
		cpu->cpl = (rnd() & 3) == 0 ? 3 : 0;
		cpu->cr0 |= rnd() & (1u << 2);
		for (unsigned k = 0; k < 16; k++)
			b[k] = (uint8_t)rnd();
		for (unsigned k = 0; k < 3; k++)
			if (rnd() & 1)
				b[k] = pref[rnd() % sizeof(pref)];
		put_code(cpu, b, sizeof(b));
		memset(&fk, 0, sizeof(fk));
		cpu->io_done = rnd() & 1;
		switch (step(cpu)) {
		case 0: done++; break;
		case EMU_JMP_FAULT:
			faults++;
			assert_int_equal(cpu->rip, CODE);
			break;
		default: exits++; break;
		}
	}
	printf("random bytes: %u completed, %u faulted, %u exited\n", done, faults, exits);
	assert_true(done > 10000 && faults > 1000);
	free(cpu);
}

/*
 * The inline TLB hit paths (64-bit fetch through tlb_x, aligned data through tlb_r/tlb_w): an entry pointing at a
 * different host buffer than the fake's RAM shows which path served the access. A CPL 3 access through a
 * supervisor entry, a misaligned one and an FS-relative one must take the emu.h calls.
 */
static void test_tlb_fast_paths(void **state)
{
	static uint8_t alias_code[4096] __attribute__((aligned(4096)));
	static uint8_t alias_data[4096] __attribute__((aligned(4096)));
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);
	struct emu_tlb_entry *x = &cpu->tlb_x[emu_tlb_index(CODE >> 12)];
	struct emu_tlb_entry *r = &cpu->tlb_r[emu_tlb_index(DATA >> 12)];
	struct emu_tlb_entry *w = &cpu->tlb_w[emu_tlb_index(DATA >> 12)];

	(void)state;
	for (unsigned i = 0; i < EMU_TLB_SIZE; i++)
		cpu->tlb_x[i].lpage = cpu->tlb_r[i].lpage = cpu->tlb_w[i].lpage = ~0ull;
	*x = (struct emu_tlb_entry){ .lpage = CODE >> 12, .host = alias_code };
	*r = (struct emu_tlb_entry){ .lpage = DATA >> 12, .host = alias_data };
	*w = (struct emu_tlb_entry){ .lpage = DATA >> 12, .host = alias_data, .flags = EMU_TLB_WRITE };
	memset(ram + DATA, 0, 0x100);
	memcpy(ram + DATA + 8, (uint64_t[]){ 0x1111 }, 8);
	memcpy(alias_data + 8, (uint64_t[]){ 0x2222 }, 8);
	/* the fetch comes from the alias page: mov 8(%rsi),%rax there, a different instruction in RAM */
	memcpy(alias_code + (CODE & 0xfff), (const uint8_t[]){ 0x48, 0x8b, 0x46, 0x08 }, 4);
	memcpy(ram + CODE, (const uint8_t[]){ 0x90, 0x90, 0x90, 0x90 }, 4);
	cpu->rip = CODE;
	cpu->gpr[R_SI] = DATA;
	assert_int_equal(step(cpu), 0);
	assert_int_equal(cpu->rip, CODE + 4);
	assert_int_equal(cpu->gpr[R_AX], 0x2222);        /* fetch and read both through the TLB */
	/* an aligned write hits tlb_w; a misaligned one goes to emu_write */
	memcpy(alias_code + (CODE & 0xfff), (const uint8_t[]){ 0x48, 0x89, 0x46, 0x10, 0x48, 0x89, 0x46, 0x21 }, 8);
	cpu->rip = CODE;
	assert_int_equal(step(cpu), 0);
	assert_int_equal(ld(alias_data + 0x10, 8), 0x2222);
	assert_int_equal(ld(ram + DATA + 0x10, 8), 0);
	assert_int_equal(step(cpu), 0);
	assert_int_equal(ld(ram + DATA + 0x21, 8), 0x2222);
	/* FS-relative: the call */
	cpu->seg[SEG_FS].base = 0;
	memcpy(alias_code + (CODE & 0xfff), (const uint8_t[]){ 0x64, 0x48, 0x8b, 0x46, 0x08 }, 5);
	cpu->rip = CODE;
	assert_int_equal(step(cpu), 0);
	assert_int_equal(cpu->gpr[R_AX], 0x1111);
	/* CPL 3 through supervisor entries: both the fetch and the read take the calls */
	cpu->cpl = 3;
	memcpy(ram + CODE, (const uint8_t[]){ 0x48, 0x8b, 0x46, 0x08 }, 4);
	cpu->rip = CODE;
	cpu->gpr[R_AX] = 0;
	assert_int_equal(step(cpu), 0);
	assert_int_equal(cpu->gpr[R_AX], 0x1111);
	/* with USER entries the hit path serves CPL 3 too */
	x->flags |= EMU_TLB_USER;
	r->flags |= EMU_TLB_USER;
	memcpy(alias_code + (CODE & 0xfff), (const uint8_t[]){ 0x48, 0x8b, 0x46, 0x08 }, 4);
	cpu->rip = CODE;
	assert_int_equal(step(cpu), 0);
	assert_int_equal(cpu->gpr[R_AX], 0x2222);
	free(cpu);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Throughput of a simple ALU loop (printed, not asserted): add, xor, sub $1, jnz. */
static void test_alu_loop_speed(void **state)
{
	struct emu_cpu *cpu = new_cpu(EMU_LONG64);
	static const uint8_t loop[] = { 0x48, 0x01, 0xd8, 0x48, 0x31, 0xc2, 0x48, 0x83, 0xe9, 0x01, 0x75, 0xf4, 0xf4 };
	/* memory-operand loop: add (%rsi),%rax; mov %rax,8(%rsi); dec %ecx; jnz */
	static const uint8_t mloop[] = { 0x48, 0x03, 0x06, 0x48, 0x89, 0x46, 0x08, 0xff, 0xc9, 0x75, 0xf5, 0xf4 };
	const uint64_t iters = 2500000;
	double t0, t1;

	(void)state;
	memcpy(ram + 0x3000, loop, sizeof(loop));
	cpu->rip = 0x3000;
	cpu->gpr[R_CX] = iters;
	cpu->gpr[R_BX] = 3;
	t0 = now_s();
	while (step(cpu) == 0)
		;
	t1 = now_s();
	assert_int_equal(fk.hlt, 1);
	assert_int_equal(cpu->gpr[R_AX], 3 * iters);
	printf("emu ALU loop: %.1f M instructions/s (%llu instructions in %.3f s)\n",
	       (double)cpu->insns / (t1 - t0) / 1e6, (unsigned long long)cpu->insns, t1 - t0);

	memcpy(ram + 0x3100, mloop, sizeof(mloop));
	cpu->rip = 0x3100;
	cpu->gpr[R_CX] = iters;
	cpu->gpr[R_SI] = DATA;
	cpu->insns = 0;
	t0 = now_s();
	while (step(cpu) == 0)
		;
	t1 = now_s();
	assert_int_equal(fk.hlt, 2);
	assert_int_equal(cpu->insns, 4 * iters + 1);
	printf("emu memory-operand loop: %.1f M instructions/s\n", (double)cpu->insns / (t1 - t0) / 1e6);
	free(cpu);
}

static int group_setup(void **state)
{
	(void)state;
	ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	jit = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED || jit == MAP_FAILED)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	munmap(ram, RAM_SIZE);
	munmap(jit, 4096);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_differential),
		cmocka_unit_test(test_sse_differential),
		cmocka_unit_test(test_x87_differential),
		cmocka_unit_test(test_fpu_faults),
		cmocka_unit_test(test_rex_byte_regs),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_riprel),
		cmocka_unit_test(test_real_mode_16bit),
		cmocka_unit_test(test_prot32_and_bcd),
		cmocka_unit_test(test_stack64),
		cmocka_unit_test(test_compat_and_prot16),
		cmocka_unit_test(test_branches),
		cmocka_unit_test(test_string_ops),
		cmocka_unit_test(test_rep_resumable),
		cmocka_unit_test(test_commit_on_fault),
		cmocka_unit_test(test_lock_threads),
		cmocka_unit_test(test_undefined_and_faults),
		cmocka_unit_test(test_flags_and_privilege),
		cmocka_unit_test(test_io),
		cmocka_unit_test(test_system_decode),
		cmocka_unit_test(test_fetch_paths),
		cmocka_unit_test(test_random_bytes),
		cmocka_unit_test(test_tlb_fast_paths),
		cmocka_unit_test(test_alu_loop_speed),
	};

	if (getenv("EMU_EXEC_TEST"))    /* e.g. EMU_EXEC_TEST=test_alu_loop_speed to profile one case */
		cmocka_set_test_filter(getenv("EMU_EXEC_TEST"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
