/* SPDX-License-Identifier: MIT */
/*
 * x87, SSE and SSE2 for the interpreter (what a 64-bit Linux and a glibc-static userland execute; CPUID advertises
 * FPU, FXSR, SSE and SSE2, nothing later: no SSE3+, AVX, XSAVE or MMX).
 *
 * State: cpu->fx is the guest's FXSAVE64 image (SDM vol. 1, table 10-2) and nothing else holds x87/SSE state.
 * FIP/FDP/FOP in it are the guest's (set by each non-control x87 instruction); FCS/FDS are stored as 0, as on CPUs
 * with CPUID.(7,0):EBX[13] (FCS/FDS deprecated), which the emu model advertises.
 *
 * Execution, as for the integer ALU (emu_exec_internal.h): the host CPU runs the same operation on the guest's
 * values, so results, MXCSR/x87 status flags and the approximations (RCPPS, RSQRTPS) are exact by construction.
 *   - SSE arithmetic, logic, compares, conversions, packs and unpacks: a host stub `op xmm0, xmm1` (the same
 *     opcode and mandatory prefix) runs between loads of the guest's destination and source into xmm0/xmm1, with
 *     the guest's MXCSR control bits and every exception masked; afterwards the new flags are merged into the guest's
 *     MXCSR, and a flag whose exception the guest left unmasked raises #XM (#UD when CR4.OSXMMEXCPT is clear) with
 *     the destination unchanged, as the SDM specifies for SIMD floating-point exceptions.
 *   - x87: the host loads the guest image (FXRSTOR64), runs a stub holding the guest's own opcode and ModRM (memory
 *     operands redirected to a host buffer at [rdi]) and saves the image back; its own state is saved around it.
 *     Arithmetic runs with every exception masked. A flag whose exception the guest unmasked sets FSW.ES/B and is
 *     delivered as #MF before the next waiting x87 instruction (CR0.NE; with NE clear nothing is signalled: there
 *     is no FERR# line). Known difference: the masked response is stored by the instruction that raised it, where
 *     a CPU would leave the destination alone (invalid operation, zero divide, denormal) or store a biased result
 *     (overflow, underflow) — guests that unmask x87 exceptions are rare (Linux and glibc run masked).
 *   - Data movement, shuffles, shifts by immediate, MOVMSK/PMOVMSKB, PINSRW/PEXTRW, FXSAVE/FXRSTOR, LDMXCSR/STMXCSR:
 *     in C.
 * Only opcodes in the tables below reach a host stub; anything else is #UD here, so no guest byte reaches the host
 * CPU unchecked. The stubs are assembled into this object (no code is generated at run time).
 *
 * Faults, in the SDM's order: SSE #UD (CR0.EM, CR4.OSFXSR clear, unknown opcode), then #NM (CR0.TS); x87 #NM
 * (CR0.EM or TS), then #MF (pending); a misaligned m128 of an aligned form is #GP(0); MXCSR reserved bits #GP(0).
 */
#include <stdalign.h>
#include <string.h>

#include "hypervisor/emu/emu_exec_internal.h"

#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define CR0_NE (1ull << 5)
#define EXC_XM 19

/* FXSAVE image offsets */
#define FX_FCW 0
#define FX_FSW 2
#define FX_FTW 4
#define FX_FOP 6
#define FX_FIP 8
#define FX_FDP 16
#define FX_MXCSR 24
#define FX_MXCSR_MASK 28
#define FX_ST 32
#define FX_XMM 160
#define FX_SAVED 464     /* bytes 464..511 are software's: FXSAVE never writes them */

#define MXCSR_FLAGS 0x3fu
#define MXCSR_MASKS 0x1f80u

/* ---- host stubs ---------------------------------------------------------------------------------------- */

/*
 * emu_sse_stubs[p][op]: `[66|F3|F2] 0F op C1; ret` = op xmm0, xmm1 (p: 0 none, 1 66, 2 F3, 3 F2), 8 bytes each.
 * emu_sse_cmp_stubs[p][imm]: `[pfx] 0F C2 C1 imm; ret` for imm 0..7.
 * emu_x87_reg_stubs[op - D8][modrm - C0]: `op modrm; ret`, 4 bytes each.
 * emu_x87_mem_stubs[op - D8][reg]: `op (reg << 3 | 7); ret` = the memory form on [rdi], 4 bytes each.
 * Most entries are not valid instructions; only the ones the tables below accept are ever called.
 */
__asm__(".pushsection .text.emu_fpu_stubs,\"ax\",@progbits\n"
	".balign 16\n"
	"emu_sse_stubs:\n"
	".set emu_i, 0\n"
	".rept 256\n .byte 0x0f, emu_i, 0xc1, 0xc3, 0x90, 0x90, 0x90, 0x90\n .set emu_i, emu_i + 1\n .endr\n"
	".irp pfx, 0x66, 0xf3, 0xf2\n"
	".set emu_i, 0\n"
	".rept 256\n .byte \\pfx, 0x0f, emu_i, 0xc1, 0xc3, 0x90, 0x90, 0x90\n .set emu_i, emu_i + 1\n .endr\n"
	".endr\n"
	"emu_sse_cmp_stubs:\n"
	".set emu_i, 0\n"
	".rept 8\n .byte 0x0f, 0xc2, 0xc1, emu_i, 0xc3, 0x90, 0x90, 0x90\n .set emu_i, emu_i + 1\n .endr\n"
	".irp pfx, 0x66, 0xf3, 0xf2\n"
	".set emu_i, 0\n"
	".rept 8\n .byte \\pfx, 0x0f, 0xc2, 0xc1, emu_i, 0xc3, 0x90, 0x90\n .set emu_i, emu_i + 1\n .endr\n"
	".endr\n"
	"emu_x87_reg_stubs:\n"
	".set emu_i, 0\n"
	".rept 512\n .byte 0xd8 + (emu_i >> 6), 0xc0 + (emu_i & 63), 0xc3, 0x90\n .set emu_i, emu_i + 1\n .endr\n"
	"emu_x87_mem_stubs:\n"
	".set emu_i, 0\n"
	".rept 64\n .byte 0xd8 + (emu_i >> 3), ((emu_i & 7) << 3) | 7, 0xc3, 0x90\n .set emu_i, emu_i + 1\n .endr\n"
	".popsection\n");

#define EMU_STUBS extern const __attribute__((visibility("hidden"))) uint8_t
EMU_STUBS emu_sse_stubs[4][256][8];
EMU_STUBS emu_sse_cmp_stubs[4][8][8];
EMU_STUBS emu_x87_reg_stubs[8][64][4];
EMU_STUBS emu_x87_mem_stubs[8][8][4];

/* dst = op(dst, src) on the host; *csr: in, the MXCSR to run with; out, as the host left it. */
static void run_sse_stub(const void *stub, uint8_t dst[16], const uint8_t src[16], uint32_t *csr)
{
	uint32_t host_csr;

	__asm__ volatile("stmxcsr %[h]\n\t"
			 "ldmxcsr %[g]\n\t"
			 "movdqu %[d], %%xmm0\n\t"
			 "movdqu %[s], %%xmm1\n\t"
			 "sub $128, %%rsp\n\t"     /* the call's return address must not land in our red zone */
			 "call *%[stub]\n\t"
			 "add $128, %%rsp\n\t"
			 "movdqu %%xmm0, %[d]\n\t"
			 "stmxcsr %[g]\n\t"
			 "ldmxcsr %[h]"
			 : [d] "+m"(*(uint8_t (*)[16])dst), [g] "+m"(*csr), [h] "=&m"(host_csr)
			 : [s] "m"(*(const uint8_t (*)[16])src), [stub] "r"(stub)
			 : "xmm0", "xmm1", "memory", "cc");
}

/* The guest image img (already prepared: FCW as the host must run it, FSW without ES/B) is loaded, the stub runs
 * with rdi = mem and the guest's CF/PF/ZF in the host flags (FCMOVcc), and the image is saved back. Returns the
 * host's arithmetic flags after (FCOMI and friends), in LAHF layout. */
static uint8_t run_x87_stub(const void *stub, uint8_t *img, void *mem, uint8_t flags_in)
{
	alignas(16) uint8_t host[512];
	uint16_t ax = (uint16_t)(flags_in << 8);

	__asm__ volatile("fxsave64 %[host]\n\t"
			 "fxrstor64 %[img]\n\t"
			 "lea -128(%%rsp), %%rsp\n\t"   /* not SUB/ADD: the flags are live around the call */
			 "sahf\n\t"
			 "call *%[stub]\n\t"
			 "lahf\n\t"
			 "lea 128(%%rsp), %%rsp\n\t"
			 "fxsave64 %[img]\n\t"
			 "fxrstor64 %[host]"
			 : [img] "+m"(*(uint8_t (*)[512])img), [host] "=&m"(host), "+a"(ax)
			 : [stub] "r"(stub), "D"(mem)
			 : "memory", "cc");
	return (uint8_t)(ax >> 8);
}

/* The MXCSR_MASK of the host, which the guest sees: the host runs every MXCSR the guest may load. */
static uint32_t host_mxcsr_mask(void)
{
	static uint32_t mask;

	if (!__atomic_load_n(&mask, __ATOMIC_RELAXED)) {
		alignas(16) uint8_t img[512];
		uint32_t m;

		memset(img, 0, sizeof(img));
		__asm__ volatile("fxsave64 %0" : "=m"(img));
		memcpy(&m, img + FX_MXCSR_MASK, 4);
		__atomic_store_n(&mask, m ? m : 0xffbfu, __ATOMIC_RELAXED);
	}
	return __atomic_load_n(&mask, __ATOMIC_RELAXED);
}

/* ---- state ---------------------------------------------------------------------------------------------- */

static uint16_t fx16(const struct emu_cpu *cpu, unsigned off)
{
	uint16_t v;

	memcpy(&v, cpu->fx + off, 2);
	return v;
}

static void fx16_set(struct emu_cpu *cpu, unsigned off, uint16_t v)
{
	memcpy(cpu->fx + off, &v, 2);
}

static uint32_t mxcsr(const struct emu_cpu *cpu)
{
	uint32_t v;

	memcpy(&v, cpu->fx + FX_MXCSR, 4);
	return v;
}

static void mxcsr_set(struct emu_cpu *cpu, uint32_t v)
{
	memcpy(cpu->fx + FX_MXCSR, &v, 4);
}

static uint8_t *xmm(struct emu_cpu *cpu, unsigned r)
{
	return cpu->fx + FX_XMM + 16 * (r & 15);
}

void emu_fpu_reset(struct emu_cpu *cpu)
{
	uint32_t mask = host_mxcsr_mask();

	memset(cpu->fx, 0, sizeof(cpu->fx));
	fx16_set(cpu, FX_FCW, 0x0040);    /* SDM vol. 3 table 9-1: FCW 0040H, FTW 5555H (all valid zero), MXCSR 1F80H */
	cpu->fx[FX_FTW] = 0xff;
	mxcsr_set(cpu, 0x1f80);
	memcpy(cpu->fx + FX_MXCSR_MASK, &mask, 4);
}

/* FSW.ES and B follow the sticky exception flags that FCW leaves unmasked. */
static void fsw_update_es(struct emu_cpu *cpu)
{
	uint16_t fsw = fx16(cpu, FX_FSW) & 0x7f7f;

	if (fsw & ~fx16(cpu, FX_FCW) & 0x3f)
		fsw |= 0x8080;
	fx16_set(cpu, FX_FSW, fsw);
}

/* ---- guest memory --------------------------------------------------------------------------------------- */

static void mem_read_n(struct emu_insn *d, uint64_t off, uint8_t *buf, unsigned n)
{
	unsigned i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t v = emu_read(d->cpu, d->mseg, (off + i) & emu_mask(d->adsize), 8);

		memcpy(buf + i, &v, 8);
	}
	for (; i < n; i++)
		buf[i] = (uint8_t)emu_read(d->cpu, d->mseg, (off + i) & emu_mask(d->adsize), 1);
}

static void mem_write_n(struct emu_insn *d, uint64_t off, const uint8_t *buf, unsigned n)
{
	unsigned i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t v;

		memcpy(&v, buf + i, 8);
		emu_write(d->cpu, d->mseg, (off + i) & emu_mask(d->adsize), 8, v);
	}
	for (; i < n; i++)
		emu_write(d->cpu, d->mseg, (off + i) & emu_mask(d->adsize), 1, buf[i]);
}

static void need_aligned(struct emu_insn *d, uint64_t off, unsigned align)
{
	if (off & (align - 1))
		emu_gp0(d);
}

/* ---- SSE ------------------------------------------------------------------------------------------------ */

enum { P_NONE, P_66, P_F3, P_F2 };

/* How a stub opcode reads its source: bytes from memory (16 = m128, always aligned), and whether it is floating
 * point (MXCSR flags). */
struct sse_op {
	uint8_t msize;
	bool fp;
};

/* The stub opcodes: op xmm, xmm/m — everything whose destination is the ModRM reg operand, computed by the host. */
static struct sse_op sse_stub_op(unsigned p, uint8_t op)
{
	static const uint8_t fp_ps[16] = {
		/* 0x50..0x5f: 1 = FP op of this map row, 2 = logic (not FP), 0 = not a stub */
		0, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1,
	};
	struct sse_op none = { 0, false };

	switch (p) {
	case P_NONE:
		if (op == 0x14 || op == 0x15)
			return (struct sse_op){ 16, false };
		if (op >= 0x51 && op <= 0x5f && fp_ps[op - 0x50])
			return (struct sse_op){ op == 0x5a ? 8 : 16, fp_ps[op - 0x50] == 1 };
		return none;
	case P_66:
		if (op == 0x14 || op == 0x15)
			return (struct sse_op){ 16, false };
		if ((op == 0x51 || op >= 0x54) && op <= 0x5f)
			return (struct sse_op){ 16, op < 0x54 || op > 0x57 };
		if ((op >= 0x60 && op <= 0x6d) || (op >= 0x74 && op <= 0x76))
			return (struct sse_op){ 16, false };
		if ((op >= 0xd1 && op <= 0xd5) || (op >= 0xd8 && op <= 0xdf) || (op >= 0xe0 && op <= 0xe5) ||
		    (op >= 0xe8 && op <= 0xef) || (op >= 0xf1 && op <= 0xf6) || (op >= 0xf8 && op <= 0xfe))
			return (struct sse_op){ 16, false };
		if (op == 0xe6)
			return (struct sse_op){ 16, true };          /* CVTTPD2DQ */
		return none;
	case P_F3:
		if (op == 0x51 || op == 0x52 || op == 0x53 || op == 0x58 || op == 0x59 || (op >= 0x5c && op <= 0x5f))
			return (struct sse_op){ 4, true };
		if (op == 0x5a)
			return (struct sse_op){ 4, true };           /* CVTSS2SD */
		if (op == 0x5b)
			return (struct sse_op){ 16, true };          /* CVTTPS2DQ */
		if (op == 0xe6)
			return (struct sse_op){ 8, true };           /* CVTDQ2PD */
		return none;
	default:
		if (op == 0x51 || op == 0x58 || op == 0x59 || op == 0x5a || (op >= 0x5c && op <= 0x5f))
			return (struct sse_op){ 8, true };
		if (op == 0xe6)
			return (struct sse_op){ 16, true };          /* CVTPD2DQ */
		return none;
	}
}

/* The source operand of an xmm, xmm/m form: a register, or msize bytes of memory (zero-extended to 16). */
static void sse_src(struct emu_insn *d, unsigned msize, bool aligned, uint8_t out[16])
{
	if (!d->mem) {
		memcpy(out, xmm(d->cpu, d->rm), 16);
		return;
	}
	uint64_t off = emu_ea(d);

	memset(out, 0, 16);
	if (msize == 16 && aligned)
		need_aligned(d, off, 16);
	mem_read_n(d, off, out, msize);
}

static void sse_store_m(struct emu_insn *d, const uint8_t *v, unsigned n, bool aligned)
{
	uint64_t off = emu_ea(d);

	if (aligned)
		need_aligned(d, off, 16);
	mem_write_n(d, off, v, n);
}

/* The MXCSR the host computes with: the guest's rounding, DAZ and FZ, every exception masked, no flags. */
static uint32_t sse_host_csr(uint32_t guest)
{
	return (guest & ~MXCSR_FLAGS) | MXCSR_MASKS;
}

/* After the host ran with sse_host_csr(guest) and left `csr`: its flags join the guest's MXCSR, and one the guest
 * left unmasked raises #XM (#UD with CR4.OSXMMEXCPT clear) before the caller commits anything. */
static void sse_flags_commit(struct emu_cpu *cpu, uint32_t guest, uint32_t csr)
{
	uint32_t raised = csr & MXCSR_FLAGS;

	mxcsr_set(cpu, guest | raised);
	if (raised & ~(guest >> 7) & MXCSR_FLAGS)
		emu_raise(cpu, (cpu->cr4 & CR4_OSXMMEXCPT) ? EXC_XM : EXC_UD, -1);
}

/* Run a stub on the guest's values (an FP one with its flags committed as above). */
static void sse_compute(struct emu_insn *d, const void *stub, uint8_t dst[16], const uint8_t src[16], bool fp)
{
	uint32_t g = mxcsr(d->cpu), csr = sse_host_csr(g);

	run_sse_stub(stub, dst, src, &csr);
	if (fp)
		sse_flags_commit(d->cpu, g, csr);
}

static void sse_exec_stub(struct emu_insn *d, struct sse_op k, const void *stub)
{
	alignas(16) uint8_t dst[16], src[16];

	sse_src(d, k.msize, true, src);
	memcpy(dst, xmm(d->cpu, d->reg), 16);
	sse_compute(d, stub, dst, src, k.fp);
	memcpy(xmm(d->cpu, d->reg), dst, 16);
	emu_insn_retire(d);
}

/* CVTSI2SS/SD xmm, r/m32/64; CVT(T)SS/SD2SI r32/64, xmm/m: with the guest's rounding, flags as above. */
static void sse_cvt_gpr(struct emu_insn *d, unsigned p, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	bool w = d->rex & 8, sd = p == P_F2;
	uint32_t g = mxcsr(cpu), csr = sse_host_csr(g), host_csr;
	alignas(16) uint8_t v[16];
	uint64_t r = 0;

	if (op == 0x2a) {
		uint64_t s = emu_rm_read(d, w ? 8 : 4);

		memcpy(v, xmm(cpu, d->reg), 16);
#define CVT_TO(insn, sfx)                                                                                      \
	__asm__ volatile("stmxcsr %[h]\n\tldmxcsr %[g]\n\tmovdqu %[v], %%xmm0\n\t" insn " %[s], %%xmm0\n\t"          \
			 "movdqu %%xmm0, %[v]\n\tstmxcsr %[g]\n\tldmxcsr %[h]"                                      \
			 : [v] "+m"(v), [g] "+m"(csr), [h] "=&m"(host_csr) : [s] "r"(sfx) : "xmm0", "cc")
		if (sd && w)
			CVT_TO("cvtsi2sdq", s);
		else if (sd)
			CVT_TO("cvtsi2sdl", (uint32_t)s);
		else if (w)
			CVT_TO("cvtsi2ssq", s);
		else
			CVT_TO("cvtsi2ssl", (uint32_t)s);
#undef CVT_TO
	} else {
		uint8_t s[16];

		sse_src(d, sd ? 8 : 4, false, s);
#define CVT_FROM(insn, T)                                                                                      \
	do {                                                                                                   \
		T out_;                                                                                        \
		__asm__ volatile("stmxcsr %[h]\n\tldmxcsr %[g]\n\tmovdqu %[s], %%xmm0\n\t" insn " %%xmm0, %[o]\n\t"  \
				 "stmxcsr %[g]\n\tldmxcsr %[h]"                                                     \
				 : [o] "=&r"(out_), [g] "+m"(csr), [h] "=&m"(host_csr) : [s] "m"(s) : "xmm0", "cc");  \
		r = (uint64_t)out_;                                                                            \
	} while (0)
		bool trunc = op == 0x2c;

		if (sd && w && trunc)
			CVT_FROM("cvttsd2si", uint64_t);
		else if (sd && w)
			CVT_FROM("cvtsd2si", uint64_t);
		else if (sd && trunc)
			CVT_FROM("cvttsd2si", uint32_t);
		else if (sd)
			CVT_FROM("cvtsd2si", uint32_t);
		else if (w && trunc)
			CVT_FROM("cvttss2si", uint64_t);
		else if (w)
			CVT_FROM("cvtss2si", uint64_t);
		else if (trunc)
			CVT_FROM("cvttss2si", uint32_t);
		else
			CVT_FROM("cvtss2si", uint32_t);
#undef CVT_FROM
	}
	sse_flags_commit(cpu, g, csr);
	if (op == 0x2a)
		memcpy(xmm(cpu, d->reg), v, 16);
	else
		emu_reg_set(d, d->reg, w ? 8 : 4, r);
	emu_insn_retire(d);
}

/* (U)COMISS/SD: ZF, PF, CF from the compare, OF/SF/AF cleared. */
static void sse_comis(struct emu_insn *d, unsigned p, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	uint32_t g = mxcsr(cpu), csr = sse_host_csr(g), host_csr;
	alignas(16) uint8_t a[16], b[16];
	uint16_t ax = 0;

	sse_src(d, p == P_66 ? 8 : 4, false, b);
	memcpy(a, xmm(cpu, d->reg), 16);
#define COMI(insn)                                                                                             \
	__asm__ volatile("stmxcsr %[h]\n\tldmxcsr %[g]\n\tmovdqu %[a], %%xmm0\n\tmovdqu %[b], %%xmm1\n\t" insn     \
			 " %%xmm1, %%xmm0\n\tlahf\n\tstmxcsr %[g]\n\tldmxcsr %[h]"                                  \
			 : "=&a"(ax), [g] "+m"(csr), [h] "=&m"(host_csr) : [a] "m"(a), [b] "m"(b) : "xmm0", "xmm1", "cc")
	if (p == P_66 && op == 0x2e)
		COMI("ucomisd");
	else if (p == P_66)
		COMI("comisd");
	else if (op == 0x2e)
		COMI("ucomiss");
	else
		COMI("comiss");
#undef COMI
	sse_flags_commit(cpu, g, csr);
	emu_flags_set(cpu, EFL_ARITH, emu_lahf_flags((uint64_t)ax & 0xff00) & (EFL_ZF | EFL_PF | EFL_CF));
	emu_insn_retire(d);
}

static void shuffle_pd_ps(uint8_t dst[16], const uint8_t src[16], uint8_t imm, bool pd)
{
	uint8_t out[16];

	if (pd) {
		memcpy(out, dst + 8 * (imm & 1), 8);
		memcpy(out + 8, src + 8 * ((imm >> 1) & 1), 8);
	} else {
		for (unsigned i = 0; i < 4; i++)
			memcpy(out + 4 * i, (i < 2 ? dst : src) + 4 * ((imm >> (2 * i)) & 3), 4);
	}
	memcpy(dst, out, 16);
}

/* PSRLW/D/Q, PSRAW/D, PSLLW/D/Q by imm8 (71/72/73 /2 /4 /6), PSRLDQ/PSLLDQ (73 /3 /7), on a 16-byte register. */
static bool shift_imm(uint8_t v[16], uint8_t op, unsigned sub, uint8_t n)
{
	if (op == 0x73 && (sub == 3 || sub == 7)) {
		uint8_t out[16] = { 0 };

		for (int i = 0; i < 16; i++) {
			int from = sub == 3 ? i + n : i - n;

			if (n < 16 && from >= 0 && from < 16)
				out[i] = v[from];
		}
		memcpy(v, out, 16);
		return true;
	}
	unsigned esize = op == 0x71 ? 2 : op == 0x72 ? 4 : 8;

	if ((sub != 2 && sub != 4 && sub != 6) || (sub == 4 && esize == 8))
		return false;
	for (unsigned i = 0; i < 16; i += esize) {
		uint64_t e = 0;

		memcpy(&e, v + i, esize);
		unsigned bits = esize * 8;
		if (sub == 2)
			e = n >= bits ? 0 : e >> n;
		else if (sub == 6)
			e = n >= bits ? 0 : e << n;
		else {
			int64_t s = (int64_t)(e << (64 - bits)) >> (64 - bits);

			e = (uint64_t)(s >> (n >= bits ? bits - 1 : n));
		}
		memcpy(v + i, &e, esize);
	}
	return true;
}

static void sse_checks(struct emu_insn *d)
{
	struct emu_cpu *cpu = d->cpu;

	if ((cpu->cr0 & CR0_EM) || !(cpu->cr4 & CR4_OSFXSR))
		emu_ud(d);
	if (cpu->cr0 & CR0_TS)
		emu_raise(cpu, EXC_NM, -1);
}

void emu_exec_sse(struct emu_insn *d, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	unsigned p = d->rep == 0xf3 ? P_F3 : d->rep == 0xf2 ? P_F2 : d->p66 ? P_66 : P_NONE;
	alignas(16) uint8_t v[16], s[16];
	struct sse_op k;
	uint8_t imm;
	uint64_t r;

	if (d->lock)
		emu_ud(d);
	emu_modrm(d);
	k = sse_stub_op(p, op);
	if (k.msize) {
		sse_checks(d);
		sse_exec_stub(d, k, emu_sse_stubs[p][op]);
		return;
	}
	switch (op) {
	case 0x10: case 0x11:                              /* MOVUPS/MOVUPD/MOVSS/MOVSD */
	case 0x28: case 0x29:                              /* MOVAPS/MOVAPD */
		if ((op >= 0x28 && p >= P_F3))
			emu_ud(d);
		sse_checks(d);
		if (p >= P_F3) {
			unsigned n = p == P_F3 ? 4 : 8;

			if (op == 0x10) {
				if (d->mem) {
					sse_src(d, n, false, v);        /* a load zeroes the rest */
				} else {
					memcpy(v, xmm(cpu, d->reg), 16);
					memcpy(v, xmm(cpu, d->rm), n);
				}
				memcpy(xmm(cpu, d->reg), v, 16);
			} else if (d->mem) {
				sse_store_m(d, xmm(cpu, d->reg), n, false);
			} else {
				memcpy(xmm(cpu, d->rm), xmm(cpu, d->reg), n);
			}
		} else if (op == 0x10 || op == 0x28) {
			sse_src(d, 16, op == 0x28, v);
			memcpy(xmm(cpu, d->reg), v, 16);
		} else if (d->mem) {
			sse_store_m(d, xmm(cpu, d->reg), 16, op == 0x29);
		} else {
			memcpy(xmm(cpu, d->rm), xmm(cpu, d->reg), 16);
		}
		break;
	case 0x12: case 0x16:                              /* MOVLPS/MOVHLPS/MOVLPD, MOVHPS/MOVLHPS/MOVHPD */
		if (p >= P_F3 || (p == P_66 && !d->mem))
			emu_ud(d);
		sse_checks(d);
		memcpy(v, xmm(cpu, d->reg), 16);
		if (d->mem)
			mem_read_n(d, emu_ea(d), v + (op == 0x16 ? 8 : 0), 8);
		else if (op == 0x12)
			memcpy(v, xmm(cpu, d->rm) + 8, 8);           /* MOVHLPS */
		else
			memcpy(v + 8, xmm(cpu, d->rm), 8);           /* MOVLHPS */
		memcpy(xmm(cpu, d->reg), v, 16);
		break;
	case 0x13: case 0x17:                              /* MOVLPS/MOVLPD, MOVHPS/MOVHPD m64, xmm */
		if (p >= P_F3 || !d->mem)
			emu_ud(d);
		sse_checks(d);
		sse_store_m(d, xmm(cpu, d->reg) + (op == 0x17 ? 8 : 0), 8, false);
		break;
	case 0x2a: case 0x2c: case 0x2d:                   /* CVTSI2SS/SD, CVTTSS/SD2SI, CVTSS/SD2SI */
		if (p < P_F3)
			emu_ud(d);                                   /* the MMX forms */
		sse_checks(d);
		sse_cvt_gpr(d, p, op);
		return;
	case 0x2b:                                         /* MOVNTPS/MOVNTPD */
	case 0xe7:                                         /* MOVNTDQ */
		if (p >= P_F3 || !d->mem || (op == 0xe7 && p != P_66))
			emu_ud(d);
		sse_checks(d);
		sse_store_m(d, xmm(cpu, d->reg), 16, true);
		break;
	case 0x2e: case 0x2f:
		if (p >= P_F3)
			emu_ud(d);
		sse_checks(d);
		sse_comis(d, p, op);
		return;
	case 0x50: {                                       /* MOVMSKPS/MOVMSKPD */
		if (p >= P_F3 || d->mem)
			emu_ud(d);
		sse_checks(d);
		const uint8_t *x = xmm(cpu, d->rm);
		unsigned n = p == P_66 ? 2 : 4, es = 16 / n;

		r = 0;
		for (unsigned i = 0; i < n; i++)
			r |= (uint64_t)(x[es * i + es - 1] >> 7) << i;
		emu_reg_set(d, d->reg, (d->rex & 8) ? 8 : 4, r);
		break;
	}
	case 0x6e:                                         /* MOVD/MOVQ xmm, r/m32/64 */
		if (p != P_66)
			emu_ud(d);
		sse_checks(d);
		r = emu_rm_read(d, (d->rex & 8) ? 8 : 4);
		memset(v, 0, 16);
		memcpy(v, &r, 8);
		memcpy(xmm(cpu, d->reg), v, 16);
		break;
	case 0x7e:                                         /* 66: MOVD/MOVQ r/m, xmm; F3: MOVQ xmm, xmm/m64 */
		if (p == P_66) {
			sse_checks(d);
			memcpy(&r, xmm(cpu, d->reg), 8);
			emu_rm_write(d, (d->rex & 8) ? 8 : 4, r);
		} else if (p == P_F3) {
			sse_checks(d);
			sse_src(d, 8, false, v);
			memset(v + 8, 0, 8);
			memcpy(xmm(cpu, d->reg), v, 16);
		} else {
			emu_ud(d);
		}
		break;
	case 0x6f: case 0x7f:                              /* MOVDQA (66) / MOVDQU (F3) */
		if (p != P_66 && p != P_F3)
			emu_ud(d);
		sse_checks(d);
		if (op == 0x6f) {
			sse_src(d, 16, p == P_66, v);
			memcpy(xmm(cpu, d->reg), v, 16);
		} else if (d->mem) {
			sse_store_m(d, xmm(cpu, d->reg), 16, p == P_66);
		} else {
			memcpy(xmm(cpu, d->rm), xmm(cpu, d->reg), 16);
		}
		break;
	case 0x70:                                         /* PSHUFD (66), PSHUFHW (F3), PSHUFLW (F2) */
		if (p == P_NONE)
			emu_ud(d);
		sse_checks(d);
		sse_src(d, 16, true, s);
		imm = emu_imm8(d);
		memcpy(v, s, 16);
		for (unsigned i = 0; i < 4; i++) {
			unsigned sel = (imm >> (2 * i)) & 3;

			if (p == P_66)
				memcpy(v + 4 * i, s + 4 * sel, 4);
			else
				memcpy(v + (p == P_F3 ? 8 : 0) + 2 * i, s + (p == P_F3 ? 8 : 0) + 2 * sel, 2);
		}
		memcpy(xmm(cpu, d->reg), v, 16);
		break;
	case 0x71: case 0x72: case 0x73:                   /* shifts by imm8 */
		if (p != P_66 || d->mem)
			emu_ud(d);
		imm = emu_imm8(d);
		memcpy(v, xmm(cpu, d->rm), 16);
		if (!shift_imm(v, op, d->reg & 7, imm))
			emu_ud(d);
		sse_checks(d);
		memcpy(xmm(cpu, d->rm), v, 16);
		break;
	case 0xc2:                                         /* CMPPS/CMPPD/CMPSS/CMPSD imm8 */
		sse_checks(d);
		sse_src(d, p == P_F3 ? 4 : p == P_F2 ? 8 : 16, true, s);
		imm = emu_imm8(d);
		memcpy(v, xmm(cpu, d->reg), 16);
		sse_compute(d, emu_sse_cmp_stubs[p][imm & 7], v, s, true);
		memcpy(xmm(cpu, d->reg), v, 16);
		break;
	case 0xc3:                                         /* MOVNTI m32/64, r32/64 */
		if (p != P_NONE || !d->mem)
			emu_ud(d);
		emu_rm_write(d, (d->rex & 8) ? 8 : 4, emu_reg_get(d, d->reg, (d->rex & 8) ? 8 : 4));
		break;
	case 0xc4: {                                       /* PINSRW xmm, r32/m16, imm8 */
		if (p != P_66)
			emu_ud(d);
		sse_checks(d);
		uint16_t w = (uint16_t)emu_rm_read(d, 2);

		imm = emu_imm8(d);
		memcpy(xmm(cpu, d->reg) + 2 * (imm & 7), &w, 2);
		break;
	}
	case 0xc5: {                                       /* PEXTRW r32, xmm, imm8 */
		if (p != P_66 || d->mem)
			emu_ud(d);
		sse_checks(d);
		uint16_t w;

		imm = emu_imm8(d);
		memcpy(&w, xmm(cpu, d->rm) + 2 * (imm & 7), 2);
		emu_reg_set(d, d->reg, (d->rex & 8) ? 8 : 4, w);
		break;
	}
	case 0xc6:                                         /* SHUFPS / SHUFPD */
		if (p >= P_F3)
			emu_ud(d);
		sse_checks(d);
		sse_src(d, 16, true, s);
		imm = emu_imm8(d);
		memcpy(v, xmm(cpu, d->reg), 16);
		shuffle_pd_ps(v, s, imm, p == P_66);
		memcpy(xmm(cpu, d->reg), v, 16);
		break;
	case 0xd6:                                         /* MOVQ xmm/m64, xmm */
		if (p != P_66)
			emu_ud(d);
		sse_checks(d);
		if (d->mem) {
			sse_store_m(d, xmm(cpu, d->reg), 8, false);
		} else {
			memset(v, 0, 16);
			memcpy(v, xmm(cpu, d->reg), 8);
			memcpy(xmm(cpu, d->rm), v, 16);
		}
		break;
	case 0xd7: {                                       /* PMOVMSKB r32, xmm */
		if (p != P_66 || d->mem)
			emu_ud(d);
		sse_checks(d);
		const uint8_t *x = xmm(cpu, d->rm);

		r = 0;
		for (unsigned i = 0; i < 16; i++)
			r |= (uint64_t)(x[i] >> 7) << i;
		emu_reg_set(d, d->reg, (d->rex & 8) ? 8 : 4, r);
		break;
	}
	default:
		emu_ud(d);
	}
	emu_insn_retire(d);
}

/* ---- FXSAVE, FXRSTOR, LDMXCSR, STMXCSR (0F AE /0../3) ------------------------------------------------ */

void emu_exec_fxsave_group(struct emu_insn *d, unsigned sub)
{
	struct emu_cpu *cpu = d->cpu;
	uint64_t off = emu_ea(d);
	alignas(16) uint8_t img[512];
	uint32_t v;

	if (cpu->cr0 & CR0_EM)
		sub <= 1 ? emu_raise(cpu, EXC_NM, -1) : emu_ud(d);
	if (sub >= 2 && !(cpu->cr4 & CR4_OSFXSR))
		emu_ud(d);
	if (cpu->cr0 & CR0_TS)
		emu_raise(cpu, EXC_NM, -1);
	switch (sub) {
	case 0:                                            /* FXSAVE / FXSAVE64 */
		need_aligned(d, off, 16);
		memcpy(img, cpu->fx, FX_SAVED);
		if (!(d->rex & 8)) {
			/* the 32-bit format: FIP/FDP offsets with their selectors (stored as 0: deprecated) */
			memset(img + FX_FIP + 4, 0, 4);
			memset(img + FX_FDP + 4, 0, 4);
		}
		mem_write_n(d, off, img, d->mode64 ? FX_SAVED : 288);
		break;
	case 1:                                            /* FXRSTOR / FXRSTOR64 */
		need_aligned(d, off, 16);
		mem_read_n(d, off, img, d->mode64 ? FX_SAVED : 288);
		memcpy(&v, img + FX_MXCSR, 4);
		if (v & ~host_mxcsr_mask())
			emu_gp0(d);
		if (!(d->rex & 8)) {
			memset(img + FX_FIP + 4, 0, 4);
			memset(img + FX_FDP + 4, 0, 4);
		}
		memcpy(img + FX_MXCSR_MASK, cpu->fx + FX_MXCSR_MASK, 4);
		memcpy(cpu->fx, img, d->mode64 ? FX_SAVED : 288);
		fsw_update_es(cpu);
		break;
	case 2:                                            /* LDMXCSR */
		v = (uint32_t)emu_read(cpu, d->mseg, off, 4);
		if (v & ~host_mxcsr_mask())
			emu_gp0(d);
		mxcsr_set(cpu, v);
		break;
	default:                                           /* STMXCSR */
		emu_write(cpu, d->mseg, off, 4, mxcsr(cpu));
		break;
	}
	emu_insn_retire(d);
}

/* ---- x87 ------------------------------------------------------------------------------------------------ */

enum { X_BAD, X_ARITH, X_CTRL };   /* control instructions leave FIP/FDP/FOP alone and run with the real FCW */

/* Register forms (mod 3): which are instructions, and of what class. */
static int x87_reg_kind(uint8_t op, uint8_t m)
{
	switch (op) {
	case 0xd8:
		return X_ARITH;
	case 0xd9:
		if (m < 0xd0 || m == 0xd0 || m == 0xe0 || m == 0xe1 || m == 0xe4 || m == 0xe5 ||
		    (m >= 0xe8 && m <= 0xee) || m >= 0xf0)
			return X_ARITH;
		return X_BAD;
	case 0xda:
		return m < 0xe0 || m == 0xe9 ? X_ARITH : X_BAD;
	case 0xdb:
		if (m < 0xe0 || (m >= 0xe8 && m < 0xf8))
			return X_ARITH;
		return m == 0xe2 || m == 0xe3 ? X_CTRL : X_BAD;   /* FNCLEX, FNINIT */
	case 0xdc:
		return m < 0xd0 || m >= 0xe0 ? X_ARITH : X_BAD;
	case 0xdd:
		return m < 0xc8 || (m >= 0xd0 && m < 0xf0) ? X_ARITH : X_BAD;
	case 0xde:
		return m < 0xd0 || m == 0xd9 || m >= 0xe0 ? X_ARITH : X_BAD;
	default:   /* 0xdf */
		if (m == 0xe0)
			return X_CTRL;                                  /* FNSTSW AX: in C */
		return m >= 0xe8 && m < 0xf8 ? X_ARITH : X_BAD;
	}
}

/* Memory forms: operand size in bytes (0: not an instruction), whether it writes memory, its class. */
struct x87_mem {
	uint8_t size;
	bool store;
	int kind;
};

static struct x87_mem x87_mem_kind(uint8_t op, unsigned reg)
{
	static const struct x87_mem none = { 0, false, X_BAD };

	switch (op) {
	case 0xd8: return (struct x87_mem){ 4, false, X_ARITH };
	case 0xda: return (struct x87_mem){ 4, false, X_ARITH };
	case 0xdc: return (struct x87_mem){ 8, false, X_ARITH };
	case 0xde: return (struct x87_mem){ 2, false, X_ARITH };
	case 0xd9:
		switch (reg) {
		case 0: return (struct x87_mem){ 4, false, X_ARITH };
		case 2: case 3: return (struct x87_mem){ 4, true, X_ARITH };
		case 4: return (struct x87_mem){ 28, false, X_CTRL };    /* FLDENV */
		case 5: return (struct x87_mem){ 2, false, X_CTRL };     /* FLDCW */
		case 6: return (struct x87_mem){ 28, true, X_CTRL };     /* FNSTENV */
		case 7: return (struct x87_mem){ 2, true, X_CTRL };      /* FNSTCW */
		default: return none;
		}
	case 0xdb:
		switch (reg) {
		case 0: return (struct x87_mem){ 4, false, X_ARITH };
		case 2: case 3: return (struct x87_mem){ 4, true, X_ARITH };
		case 5: return (struct x87_mem){ 10, false, X_ARITH };
		case 7: return (struct x87_mem){ 10, true, X_ARITH };
		default: return none;                                    /* 1: FISTTP is SSE3 */
		}
	case 0xdd:
		switch (reg) {
		case 0: return (struct x87_mem){ 8, false, X_ARITH };
		case 2: case 3: return (struct x87_mem){ 8, true, X_ARITH };
		case 4: return (struct x87_mem){ 108, false, X_CTRL };   /* FRSTOR */
		case 6: return (struct x87_mem){ 108, true, X_CTRL };    /* FNSAVE */
		case 7: return (struct x87_mem){ 2, true, X_CTRL };      /* FNSTSW m16 */
		default: return none;
		}
	default:   /* 0xdf */
		switch (reg) {
		case 0: return (struct x87_mem){ 2, false, X_ARITH };
		case 2: case 3: return (struct x87_mem){ 2, true, X_ARITH };
		case 4: return (struct x87_mem){ 10, false, X_ARITH };   /* FBLD */
		case 5: return (struct x87_mem){ 8, false, X_ARITH };
		case 6: return (struct x87_mem){ 10, true, X_ARITH };    /* FBSTP */
		case 7: return (struct x87_mem){ 8, true, X_ARITH };
		default: return none;
		}
	}
}

/* Non-waiting forms: FNINIT, FNCLEX, FNSTSW, FNSTCW, FNSTENV, FNSAVE. Every other x87 instruction first delivers a
 * pending unmasked exception. */
static bool x87_no_wait(uint8_t op, uint8_t modrm, bool mem)
{
	unsigned reg = (modrm >> 3) & 7;

	if (!mem)
		return (op == 0xdb && (modrm == 0xe2 || modrm == 0xe3)) || (op == 0xdf && modrm == 0xe0);
	return (op == 0xd9 && (reg == 6 || reg == 7)) || (op == 0xdd && (reg == 6 || reg == 7));
}

static void x87_pending(struct emu_insn *d)
{
	struct emu_cpu *cpu = d->cpu;

	if ((fx16(cpu, FX_FSW) & 0x80) && (cpu->cr0 & CR0_NE))
		emu_raise(cpu, EXC_MF, -1);
}

void emu_exec_x87(struct emu_insn *d, uint8_t op)
{
	struct emu_cpu *cpu = d->cpu;
	alignas(16) uint8_t img[512];
	uint8_t buf[112], modrm, hflags;
	uint16_t fcw = fx16(cpu, FX_FCW);
	struct x87_mem mk = { 0, false, X_BAD };
	const void *stub;
	uint64_t off = 0;
	int kind;

	emu_modrm(d);
	modrm = (uint8_t)((d->mod << 6) | ((d->reg & 7) << 3) | (d->rm & 7));
	if (cpu->cr0 & (CR0_EM | CR0_TS))
		emu_raise(cpu, EXC_NM, -1);
	if (d->mem) {
		mk = x87_mem_kind(op, d->reg & 7);
		kind = mk.kind;
	} else {
		kind = x87_reg_kind(op, modrm);
	}
	if (kind == X_BAD)
		emu_ud(d);
	if (!x87_no_wait(op, modrm, d->mem))
		x87_pending(d);
	if (!d->mem && op == 0xdf && modrm == 0xe0) {     /* FNSTSW AX */
		emu_reg_set(d, R_AX, 2, fx16(cpu, FX_FSW));
		emu_insn_retire(d);
		return;
	}
	memset(buf, 0, sizeof(buf));
	if (d->mem) {
		off = emu_ea(d);
		if (!mk.store)
			mem_read_n(d, off, buf, mk.size);
		stub = emu_x87_mem_stubs[op - 0xd8][d->reg & 7];
	} else {
		stub = emu_x87_reg_stubs[op - 0xd8][modrm - 0xc0];
	}
	/* the host runs the guest's image: ES/B cleared (nothing pending on the host), arithmetic fully masked */
	memcpy(img, cpu->fx, sizeof(img));
	{
		uint16_t fsw = fx16(cpu, FX_FSW) & 0x7f7f, hfcw = kind == X_ARITH ? (uint16_t)(fcw | 0x3f) : fcw;

		memcpy(img + FX_FSW, &fsw, 2);
		memcpy(img + FX_FCW, &hfcw, 2);
	}
	hflags = run_x87_stub(stub, img, buf, (uint8_t)(cpu->rflags & (EFL_CF | EFL_PF | EFL_ZF | EFL_SF | EFL_AF)));
	if (d->mem && mk.store)
		mem_write_n(d, off, buf, mk.size);
	/* commit: memory is written; now the FPU state */
	if (kind == X_ARITH) {
		uint16_t fop = (uint16_t)(((op & 7) << 8) | modrm);
		uint64_t fip = d->start, fdp = d->mem ? off : 0;

		memcpy(img + FX_FCW, &fcw, 2);
		memcpy(img + FX_FOP, &fop, 2);
		memcpy(img + FX_FIP, &fip, 8);
		if (d->mem)
			memcpy(img + FX_FDP, &fdp, 8);
		else
			memcpy(img + FX_FDP, cpu->fx + FX_FDP, 8);
	} else if (!(op == 0xd9 && (d->reg & 7) == 4) && !(op == 0xdd && (d->reg & 7) == 4) &&
		   !(op == 0xdb && modrm == 0xe3) && !(op == 0xdd && (d->reg & 7) == 6)) {
		/* FNCLEX, FLDCW, FNSTCW, FNSTSW, FNSTENV: the last-instruction pointers stay the guest's */
		memcpy(img + FX_FOP, cpu->fx + FX_FOP, 2);
		memcpy(img + FX_FIP, cpu->fx + FX_FIP, 16);
	}
	memcpy(img + FX_MXCSR_MASK, cpu->fx + FX_MXCSR_MASK, 4);
	memcpy(cpu->fx, img, FX_SAVED);
	fsw_update_es(cpu);
	if (!d->mem && ((op == 0xdb || op == 0xdf) && modrm >= 0xe8 && modrm < 0xf8)) {
		/* FCOMI, FCOMIP, FUCOMI, FUCOMIP: ZF, PF, CF; OF, SF, AF cleared */
		emu_flags_set(cpu, EFL_ARITH, (uint32_t)(hflags & (EFL_ZF | EFL_PF | EFL_CF)));
	}
	emu_insn_retire(d);
}

void emu_x87_wait(struct emu_insn *d)
{
	x87_pending(d);
}
