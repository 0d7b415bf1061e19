// SPDX-License-Identifier: MIT
/*
 * The flag-setting operations beyond the eight ALU ops: shifts and rotates, SHLD/SHRD, INC/DEC/NEG, MUL/IMUL,
 * DIV/IDIV, BT*, BSF/BSR. Each runs the same host instruction on the guest values (see emu_exec_internal.h), so
 * the flags are the host CPU's, defined and undefined alike, except where noted.
 */
#include "hypervisor/emu/emu_exec_internal.h"

/*
 * Flags an instruction leaves undefined are, on real CPUs, often the previous values: so the guest's flags are
 * loaded into the host's first (AH = SF:ZF:AF:PF:CF for SAHF, AL = 0x7f iff OF so that adding 1 sets OF), and the
 * result matches the host for undefined flags too. LOAD_FL needs the value in EAX; XLOAD_FL swaps it in from %[p]
 * for the instructions that use RAX themselves (XCHG does not touch the flags).
 */
static inline uint64_t fl_pre(uint64_t rflags)
{
	return ((rflags & 0xd5) << 8) | ((rflags & EFL_OF) ? 0x7f : 0);
}

#define LOAD_FL "addb $1,%%al\n\tsahf\n\t"
#define XLOAD_FL "xchg %%rax,%[p]\n\taddb $1,%%al\n\tsahf\n\txchg %%rax,%[p]\n\t"

/* One-operand op `insn` on x (in/out) with count in CL and carry-in bit 0 of cf. */
#define ASM_SHIFT(insn)                                                                                        \
	do {                                                                                                   \
		switch (size) {                                                                                \
		case 1: { uint8_t x_ = (uint8_t)a;                                                             \
			__asm__(LOAD_FL insn "b %%cl,%[x]\n\tlahf\n\tseto %%al"                      \
				: [x] "+q"(x_), "+a"(ax) : "c"(count) : "cc");                   \
			res = x_; break; }                                                                     \
		case 2: { uint16_t x_ = (uint16_t)a;                                                           \
			__asm__(LOAD_FL insn "w %%cl,%[x]\n\tlahf\n\tseto %%al"                      \
				: [x] "+r"(x_), "+a"(ax) : "c"(count) : "cc");                   \
			res = x_; break; }                                                                     \
		case 4: { uint32_t x_ = (uint32_t)a;                                                           \
			__asm__(LOAD_FL insn "l %%cl,%[x]\n\tlahf\n\tseto %%al"                      \
				: [x] "+r"(x_), "+a"(ax) : "c"(count) : "cc");                   \
			res = x_; break; }                                                                     \
		default: { uint64_t x_ = a;                                                                    \
			__asm__(LOAD_FL insn "q %%cl,%[x]\n\tlahf\n\tseto %%al"                      \
				: [x] "+r"(x_), "+a"(ax) : "c"(count) : "cc");                   \
			res = x_; break; }                                                                     \
		}                                                                                              \
	} while (0)

uint64_t emu_shift(struct emu_cpu *cpu, unsigned op, unsigned size, uint64_t a, uint8_t count)
{
	uint64_t res = a, ax = fl_pre(cpu->rflags);
	uint32_t mask;

	count &= size == 8 ? 0x3f : 0x1f;
	if (!count)
		return a;    /* no flag changes */
	switch (op) {
	case SH_ROL: ASM_SHIFT("rol"); break;
	case SH_ROR: ASM_SHIFT("ror"); break;
	case SH_RCL: ASM_SHIFT("rcl"); break;
	case SH_RCR: ASM_SHIFT("rcr"); break;
	case SH_SHR: ASM_SHIFT("shr"); break;
	case SH_SAR: ASM_SHIFT("sar"); break;
	default: ASM_SHIFT("shl"); break;
	}
	mask = op <= SH_RCR ? (EFL_CF | EFL_OF) : EFL_ARITH;
	emu_flags_set(cpu, mask, emu_lahf_flags(ax));
	return res;
}

#define ASM_SHXD(insn)                                                                                         \
	do {                                                                                                   \
		switch (size) {                                                                                \
		case 2: { uint16_t x_ = (uint16_t)dst;                                                         \
			__asm__(LOAD_FL insn "w %%cl,%[s],%[x]\n\tlahf\n\tseto %%al"                                   \
				: [x] "+r"(x_), "+a"(ax) : "c"(count), [s] "r"((uint16_t)src) : "cc");        \
			res = x_; break; }                                                                     \
		case 4: { uint32_t x_ = (uint32_t)dst;                                                         \
			__asm__(LOAD_FL insn "l %%cl,%[s],%[x]\n\tlahf\n\tseto %%al"                                   \
				: [x] "+r"(x_), "+a"(ax) : "c"(count), [s] "r"((uint32_t)src) : "cc");        \
			res = x_; break; }                                                                     \
		default: { uint64_t x_ = dst;                                                                  \
			__asm__(LOAD_FL insn "q %%cl,%[s],%[x]\n\tlahf\n\tseto %%al"                                   \
				: [x] "+r"(x_), "+a"(ax) : "c"(count), [s] "r"(src) : "cc");                  \
			res = x_; break; }                                                                     \
		}                                                                                              \
	} while (0)

uint64_t emu_shxd(struct emu_cpu *cpu, bool right, unsigned size, uint64_t dst, uint64_t src, uint8_t count)
{
	uint64_t res = dst, ax = fl_pre(cpu->rflags);

	count &= size == 8 ? 0x3f : 0x1f;
	if (!count)
		return dst;
	if (right)
		ASM_SHXD("shrd");
	else
		ASM_SHXD("shld");
	emu_flags_set(cpu, EFL_ARITH, emu_lahf_flags(ax));
	return res;
}

#define ASM_UNARY(insn)                                                                                        \
	do {                                                                                                   \
		switch (size) {                                                                                \
		case 1: { uint8_t x_ = (uint8_t)a;                                                             \
			__asm__(insn "b %[x]\n\tlahf\n\tseto %%al" : [x] "+q"(x_), "=&a"(ax) : : "cc");        \
			res = x_; break; }                                                                     \
		case 2: { uint16_t x_ = (uint16_t)a;                                                           \
			__asm__(insn "w %[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x_), "=&a"(ax) : : "cc");        \
			res = x_; break; }                                                                     \
		case 4: { uint32_t x_ = (uint32_t)a;                                                           \
			__asm__(insn "l %[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x_), "=&a"(ax) : : "cc");        \
			res = x_; break; }                                                                     \
		default: { uint64_t x_ = a;                                                                    \
			__asm__(insn "q %[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x_), "=&a"(ax) : : "cc");        \
			res = x_; break; }                                                                     \
		}                                                                                              \
	} while (0)

uint64_t emu_incdec(struct emu_cpu *cpu, bool dec, unsigned size, uint64_t a)
{
	uint64_t res, ax;

	if (dec)
		ASM_UNARY("dec");
	else
		ASM_UNARY("inc");
	emu_flags_set(cpu, EFL_ARITH & ~EFL_CF, emu_lahf_flags(ax));
	return res;
}

uint64_t emu_neg(struct emu_cpu *cpu, unsigned size, uint64_t a)
{
	uint64_t res, ax;

	ASM_UNARY("neg");
	emu_flags_set(cpu, EFL_ARITH, emu_lahf_flags(ax));
	return res;
}

#define MUL_ASM(insn, mod, cons)                                                                               \
	__asm__(XLOAD_FL insn " %" mod "[b]\n\tmov %%rax,%[l]\n\tmov %%rdx,%[h]\n\tlahf\n\tseto %%al"                \
		: "+a"(rax), [l] "=&r"(l), [h] "=&r"(h), [p] "+r"(pre) : [b] "r"(cons) : "rdx", "cc")

void emu_mul1(struct emu_cpu *cpu, bool sign, unsigned size, uint64_t a, uint64_t b, uint64_t *lo, uint64_t *hi)
{
	uint64_t rax = a, l, h, pre = fl_pre(cpu->rflags);

	switch (size) {
	case 1:
		if (sign)
			__asm__(XLOAD_FL "imulb %[b]\n\tmov %%rax,%[l]\n\tlahf\n\tseto %%al"
				: "+a"(rax), [l] "=&r"(l), [p] "+r"(pre) : [b] "q"((uint8_t)b) : "cc");
		else
			__asm__(XLOAD_FL "mulb %[b]\n\tmov %%rax,%[l]\n\tlahf\n\tseto %%al"
				: "+a"(rax), [l] "=&r"(l), [p] "+r"(pre) : [b] "q"((uint8_t)b) : "cc");
		h = 0;
		l &= 0xffff;
		break;
	case 2:
		if (sign)
			MUL_ASM("imulw", "w", (uint16_t)b);
		else
			MUL_ASM("mulw", "w", (uint16_t)b);
		break;
	case 4:
		if (sign)
			MUL_ASM("imull", "k", (uint32_t)b);
		else
			MUL_ASM("mull", "k", (uint32_t)b);
		break;
	default:
		if (sign)
			MUL_ASM("imulq", "q", b);
		else
			MUL_ASM("mulq", "q", b);
		break;
	}
	*lo = size == 1 ? l : l & emu_mask(size);
	*hi = h & emu_mask(size);
	emu_flags_set(cpu, EFL_ARITH, emu_lahf_flags(rax));
}

uint64_t emu_imul2(struct emu_cpu *cpu, unsigned size, uint64_t a, uint64_t b)
{
	uint64_t res, ax = fl_pre(cpu->rflags);

	switch (size) {
	case 2: { uint16_t x = (uint16_t)a;
		__asm__(LOAD_FL "imulw %[b],%[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x), "+a"(ax) : [b] "r"((uint16_t)b) : "cc");
		res = x; break; }
	case 4: { uint32_t x = (uint32_t)a;
		__asm__(LOAD_FL "imull %[b],%[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x), "+a"(ax) : [b] "r"((uint32_t)b) : "cc");
		res = x; break; }
	default: { uint64_t x = a;
		__asm__(LOAD_FL "imulq %[b],%[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x), "+a"(ax) : [b] "r"(b) : "cc");
		res = x; break; }
	}
	emu_flags_set(cpu, EFL_ARITH, emu_lahf_flags(ax));
	return res;
}

bool emu_div(struct emu_cpu *cpu, bool sign, unsigned size, uint64_t lo, uint64_t hi, uint64_t b, uint64_t *q,
	     uint64_t *r)
{
	unsigned bits = size * 8;
	uint64_t m = emu_mask(size), fl, pre = fl_pre(cpu->rflags);

	b &= m;
	if (b == 0)
		return false;
	if (!sign) {
		if ((hi & m) >= b)
			return false;
	} else {
		/* host IDIV raises #DE iff the quotient does not fit: check in 128-bit arithmetic */
		__int128 n, d, qq;

		if (size == 8)
			n = (__int128)(((unsigned __int128)hi << 64) | lo);
		else
			n = (__int128)(int64_t)emu_sext(((hi & m) << bits) | (lo & m), size * 2);
		d = (__int128)(int64_t)emu_sext(b, size);
		if (size == 8 && d == -1) {
			if (n == -n && n != 0)
				return false;    /* n is INT128_MIN */
			qq = -n;
		} else {
			qq = n / d;
		}
		if (qq > (__int128)((int64_t)(m >> 1)) || qq < -(__int128)((int64_t)(m >> 1)) - 1)
			return false;
	}
	switch (size) {
	case 1: {
		uint64_t x = (lo & 0xff) | (hi & 0xff) << 8;

		if (sign)
			__asm__(XLOAD_FL "idivb %[b]\n\tmov %%rax,%[f]\n\tlahf\n\tseto %%al\n\txchg %%rax,%[f]"
				: "+a"(x), [f] "=&r"(fl), [p] "+r"(pre) : [b] "q"((uint8_t)b) : "cc");
		else
			__asm__(XLOAD_FL "divb %[b]\n\tmov %%rax,%[f]\n\tlahf\n\tseto %%al\n\txchg %%rax,%[f]"
				: "+a"(x), [f] "=&r"(fl), [p] "+r"(pre) : [b] "q"((uint8_t)b) : "cc");
		*q = x & 0xff;
		*r = (x >> 8) & 0xff;
		break;
	}
	default: {
		uint64_t x = lo, y = hi;

#define DIV_ASM(insn, sfx, cons)                                                                               \
	__asm__(XLOAD_FL insn " %" sfx "[b]\n\tmov %%rax,%[f]\n\tlahf\n\tseto %%al\n\txchg %%rax,%[f]"                   \
		: "+a"(x), "+d"(y), [f] "=&r"(fl), [p] "+r"(pre) : [b] "r"(cons) : "cc")
		if (size == 2) {
			if (sign)
				DIV_ASM("idivw", "w", (uint16_t)b);
			else
				DIV_ASM("divw", "w", (uint16_t)b);
		} else if (size == 4) {
			if (sign)
				DIV_ASM("idivl", "k", (uint32_t)b);
			else
				DIV_ASM("divl", "k", (uint32_t)b);
		} else {
			if (sign)
				DIV_ASM("idivq", "q", b);
			else
				DIV_ASM("divq", "q", b);
		}
#undef DIV_ASM
		*q = x & m;
		*r = y & m;
		break;
	}
	}
	emu_flags_set(cpu, EFL_ARITH, emu_lahf_flags(fl));
	return true;
}

#define ASM_BIT(insn)                                                                                          \
	do {                                                                                                   \
		switch (size) {                                                                                \
		case 2: { uint16_t x_ = (uint16_t)a;                                                           \
			__asm__(LOAD_FL insn "w %[i],%[x]\n\tlahf\n\tseto %%al"                                        \
				: [x] "+r"(x_), "+a"(ax) : [i] "r"((uint16_t)bit) : "cc");                    \
			res = x_; break; }                                                                     \
		case 4: { uint32_t x_ = (uint32_t)a;                                                           \
			__asm__(LOAD_FL insn "l %[i],%[x]\n\tlahf\n\tseto %%al"                                        \
				: [x] "+r"(x_), "+a"(ax) : [i] "r"((uint32_t)bit) : "cc");                    \
			res = x_; break; }                                                                     \
		default: { uint64_t x_ = a;                                                                    \
			__asm__(LOAD_FL insn "q %[i],%[x]\n\tlahf\n\tseto %%al"                                        \
				: [x] "+r"(x_), "+a"(ax) : [i] "r"((uint64_t)bit) : "cc");                    \
			res = x_; break; }                                                                     \
		}                                                                                              \
	} while (0)

uint64_t emu_bitop(struct emu_cpu *cpu, unsigned op, unsigned size, uint64_t a, unsigned bit)
{
	uint64_t res, ax = fl_pre(cpu->rflags);

	switch (op) {
	case 0: ASM_BIT("bt"); break;
	case 1: ASM_BIT("bts"); break;
	case 2: ASM_BIT("btr"); break;
	default: ASM_BIT("btc"); break;
	}
	/* ZF unchanged; CF defined; OF/SF/AF/PF undefined (host values) */
	emu_flags_set(cpu, EFL_ARITH & ~EFL_ZF, emu_lahf_flags(ax));
	return res;
}

uint64_t emu_bsfr(struct emu_cpu *cpu, bool rev, unsigned size, uint64_t dst, uint64_t src)
{
	uint64_t res, ax = fl_pre(cpu->rflags);

	/* the destination is an input: BSF/BSR leave it unchanged for a zero source (as Intel and AMD do) */
	switch (size) {
	case 2: { uint16_t x = (uint16_t)dst;
		if (rev)
			__asm__(LOAD_FL "bsrw %[s],%[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x), "+a"(ax) : [s] "r"((uint16_t)src) : "cc");
		else
			__asm__(LOAD_FL "bsfw %[s],%[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x), "+a"(ax) : [s] "r"((uint16_t)src) : "cc");
		res = x; break; }
	case 4: { uint32_t x = (uint32_t)dst;
		if (rev)
			__asm__(LOAD_FL "bsrl %[s],%[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x), "+a"(ax) : [s] "r"((uint32_t)src) : "cc");
		else
			__asm__(LOAD_FL "bsfl %[s],%[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x), "+a"(ax) : [s] "r"((uint32_t)src) : "cc");
		res = x; break; }
	default: { uint64_t x = dst;
		if (rev)
			__asm__(LOAD_FL "bsrq %[s],%[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x), "+a"(ax) : [s] "r"(src) : "cc");
		else
			__asm__(LOAD_FL "bsfq %[s],%[x]\n\tlahf\n\tseto %%al" : [x] "+r"(x), "+a"(ax) : [s] "r"(src) : "cc");
		res = x; break; }
	}
	emu_flags_set(cpu, EFL_ARITH, emu_lahf_flags(ax));
	return res;
}

void emu_flags_szp8(struct emu_cpu *cpu, uint8_t v)
{
	uint32_t f = 0;

	if (!v)
		f |= EFL_ZF;
	if (v & 0x80)
		f |= EFL_SF;
	if (!__builtin_parity(v))
		f |= EFL_PF;
	emu_flags_set(cpu, EFL_ZF | EFL_SF | EFL_PF, f);
}
