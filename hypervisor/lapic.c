/* SPDX-License-Identifier: MIT */
/*
 * Local APIC of one vCPU (Intel SDM vol. 3A ch. 10/11, xAPIC and x2APIC). Design note: docs/apic.md.
 *
 * Threads. The vCPU thread owns the lapic: register access, lapic_pending_vector/_ack, the timer, reset. Any
 * thread may call lapic_match and lapic_accept (another vCPU's ICR write, the IOAPIC, the cluster receive thread).
 * So what those two touch is atomic, and nothing on the interrupt path takes a lock:
 *   - written by foreign threads: IRR and TMR (8 x 32-bit words, atomic OR/AND), the pending events (INIT, SIPI,
 *     NMI) and the SIPI vector, the error accumulator behind ESR;
 *   - read by foreign threads (written by the owner with atomic stores): IA32_APIC_BASE (mode), the APIC id, LDR,
 *     DFR, SVR (software enable) and the LVT error entry (an illegal received vector raises it).
 * Everything else (TPR, ISR, the EOI-level snapshot, ICR, timer) is the owner's alone.
 * An accepted interrupt is visible to the owner's next lapic_pending_vector(); env->kick wakes it.
 *
 * Choices where the SDM leaves room or we leave things out (each also in docs/apic.md):
 *   - Version 0x14, max LVT entry 6 (seven LVTs: CMCI, timer, thermal, PMC, LINT0, LINT1, error). No directed EOI
 *     (version bit 24 = 0, SVR bit 12 reserved): every EOI of a level-triggered vector calls env->eoi_level.
 *   - The xAPIC ID register is read-only (writes ignored): the APIC bus routes by the id given at create.
 *   - Delivery is immediate, so the ICR delivery-status bit always reads idle.
 *   - Fixed and lowest-priority interrupts to a software-disabled APIC are discarded (as KVM does); NMI, INIT and
 *     SIPI are accepted (SDM 10.4.7.2). Interrupts already in IRR stay deliverable.
 *   - SMI and ExtINT messages are dropped (no SMM, the 8259 is not wired through the APIC); LINT0/LINT1 pins are
 *     not modelled (their LVTs are plain registers). Focus-processor checking and lowest-priority arbitration by
 *     priority are not modelled (the APIC bus picks the lowest APIC id among matches).
 *   - A fixed vector below 16 is refused by the sender (ESR send-illegal-vector, nothing sent) and by a receiver
 *     (ESR receive-illegal-vector, nothing accepted); an unmasked LVT error entry then raises its vector.
 *   - INIT: lapic_accept only records the event; the vCPU thread calls lapic_reset when it takes it. The INIT
 *     level de-assert message (level-triggered, level 0) is ignored, as on every processor since the Pentium 4.
 *   - Timer: the input clock is LAPIC_TIMER_HZ (25 MHz), one tick = tsc_hz / LAPIC_TIMER_HZ guest TSC ticks
 *     (fractional: conversions use 128-bit arithmetic, expiries round up). A late tick in periodic mode fires once
 *     and re-arms at the next period boundary after `now` (missed periods are dropped, as a coalescing IRR bit
 *     would drop them anyway). A divide-configuration write takes effect at the next initial-count write or
 *     periodic reload.
 */
#include "hypervisor/lapic.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/bitmap.h"
#include "util/log.h"

/* xAPIC register offsets (x2APIC MSR = 0x800 + offset / 16). */
enum {
	REG_ID = 0x20, REG_VERSION = 0x30, REG_TPR = 0x80, REG_APR = 0x90, REG_PPR = 0xa0, REG_EOI = 0xb0,
	REG_RRD = 0xc0, REG_LDR = 0xd0, REG_DFR = 0xe0, REG_SVR = 0xf0, REG_ISR = 0x100, REG_TMR = 0x180,
	REG_IRR = 0x200, REG_ESR = 0x280, REG_LVT_CMCI = 0x2f0, REG_ICR_LO = 0x300, REG_ICR_HI = 0x310,
	REG_LVT_TIMER = 0x320, REG_LVT_THERMAL = 0x330, REG_LVT_PMC = 0x340, REG_LVT_LINT0 = 0x350,
	REG_LVT_LINT1 = 0x360, REG_LVT_ERROR = 0x370, REG_TIMER_INIT = 0x380, REG_TIMER_CUR = 0x390,
	REG_TIMER_DIV = 0x3e0, REG_SELF_IPI = 0x3f0,
};

/* LVT slots, in the order of their registers from 0x320 (CMCI kept apart at 0x2f0). */
enum { LVT_TIMER, LVT_THERMAL, LVT_PMC, LVT_LINT0, LVT_LINT1, LVT_ERROR, LVT_CMCI, LVT_N };

#define LAPIC_VERSION (0x14u | (6u << 16))

#define APICBASE_BSP (1ull << 8)
#define APICBASE_EXTD (1ull << 10)
#define APICBASE_EN (1ull << 11)
/* 52-bit physical addresses: base bits 51:12. */
#define APICBASE_ADDR 0x000ffffffffff000ull
#define APICBASE_VALID (APICBASE_BSP | APICBASE_EXTD | APICBASE_EN | APICBASE_ADDR)

#define SVR_VECTOR 0xffu
#define SVR_ENABLE (1u << 8)
#define SVR_FOCUS_OFF (1u << 9)
#define SVR_VALID (SVR_VECTOR | SVR_ENABLE | SVR_FOCUS_OFF)

#define LVT_MASKED (1u << 16)
#define LVT_VECTOR 0xffu
#define LVT_TIMER_MODE_SHIFT 17
#define LVT_TIMER_MODE (3u << LVT_TIMER_MODE_SHIFT)
enum { TIMER_ONESHOT = 0, TIMER_PERIODIC = 1, TIMER_DEADLINE = 2 };

#define ICR_VECTOR 0xffu
#define ICR_DM_SHIFT 8
#define ICR_LOGICAL (1u << 11)
#define ICR_LEVEL (1u << 14)
#define ICR_TRIGGER (1u << 15)
#define ICR_SH_SHIFT 18
#define ICR_LO_VALID 0x000ccfffu

#define DFR_MODEL_FLAT 0xfu
#define DFR_VALID 0xf0000000u

#define ESR_SEND_ILLEGAL (1u << 5)
#define ESR_RECV_ILLEGAL (1u << 6)
#define ESR_ILLEGAL_REG (1u << 7)

/* Writable bits of each LVT (everything else reserved; delivery status and remote IRR read as 0). */
static const uint32_t lvt_valid[LVT_N] = {
	[LVT_TIMER] = LVT_VECTOR | LVT_MASKED | (1u << LVT_TIMER_MODE_SHIFT) | (2u << LVT_TIMER_MODE_SHIFT),
	[LVT_THERMAL] = 0x107ff, [LVT_PMC] = 0x107ff,
	[LVT_LINT0] = 0x1a7ff, [LVT_LINT1] = 0x1a7ff,   /* + polarity (13), trigger mode (15) */
	[LVT_ERROR] = LVT_VECTOR | LVT_MASKED,
	[LVT_CMCI] = 0x107ff,
};

enum { EV_ALL = LAPIC_EV_INIT | LAPIC_EV_SIPI | LAPIC_EV_NMI };

struct lapic {
	struct lapic_env env;
	uint64_t tsc_hz;

	/* Foreign threads write these (atomic RMW). */
	_Atomic uint32_t irr[8];
	_Atomic uint32_t tmr[8];
	_Atomic unsigned events;
	_Atomic uint8_t sipi_vector;
	_Atomic uint32_t esr_pending;      /* errors since the last ESR write */

	/* Owner writes, foreign threads read (match, accept). */
	_Atomic uint64_t apicbase;
	_Atomic uint32_t id;
	_Atomic uint32_t ldr;
	_Atomic uint32_t dfr;
	_Atomic uint32_t svr;
	_Atomic uint32_t lvt[LVT_N];

	/* Owner only. */
	uint32_t tpr;
	uint32_t isr[8];
	uint32_t isr_level[8];             /* TMR bit of each in-service vector, taken at ack: EOI needs it */
	uint32_t esr;                      /* value latched by the last ESR write */
	uint32_t icr_lo, icr_hi;
	uint32_t timer_init, timer_div;    /* initial count; divide configuration register */
	uint64_t timer_period;             /* TSC ticks of one count-down from timer_init (periodic/one-shot) */
	uint64_t timer_begin;              /* TSC at which the current count-down started */
	uint64_t timer_expiry;             /* TSC of the next expiry; UINT64_MAX = not counting */
	uint64_t tsc_deadline;             /* IA32_TSC_DEADLINE; 0 = disarmed */
};

/* ---- helpers ---- */

static int irr_highest(struct lapic *l)
{
	for (int i = 7; i >= 0; i--) {
		uint32_t w = atomic_load_explicit(&l->irr[i], memory_order_acquire);

		if (w)
			return i * 32 + 31 - __builtin_clz(w);
	}
	return -1;
}

static uint64_t base_get(const struct lapic *l)
{
	return atomic_load_explicit(&((struct lapic *)l)->apicbase, memory_order_acquire);
}

static bool hw_enabled(const struct lapic *l)
{
	return base_get(l) & APICBASE_EN;
}

static bool sw_enabled(const struct lapic *l)
{
	return atomic_load_explicit(&((struct lapic *)l)->svr, memory_order_relaxed) & SVR_ENABLE;
}

static uint32_t x2apic_ldr_of(uint32_t id)
{
	return ((id >> 4) << 16) | (1u << (id & 0xf));
}

static void kick(struct lapic *l)
{
	if (l->env.kick)
		l->env.kick(l->env.opaque);
}

static uint64_t tsc_now(struct lapic *l)
{
	return l->env.tsc ? l->env.tsc(l->env.opaque) : 0;
}

/* Set IRR (and TMR) for vector; any thread. False if the vector is illegal (the caller raises the error). */
static bool irr_set(struct lapic *l, uint8_t vector, bool level)
{
	uint32_t bit = 1u << (vector % 32);

	if (vector < 16)
		return false;
	/* TMR before IRR: the owner reads TMR when it acks the vector it found in IRR. */
	if (level)
		atomic_fetch_or_explicit(&l->tmr[vector / 32], bit, memory_order_relaxed);
	else
		atomic_fetch_and_explicit(&l->tmr[vector / 32], ~bit, memory_order_relaxed);
	atomic_fetch_or_explicit(&l->irr[vector / 32], bit, memory_order_release);
	return true;
}

/* Record an error for ESR and raise the LVT error interrupt if unmasked; any thread. */
static void error_raise(struct lapic *l, uint32_t esr_bits)
{
	uint32_t lvt = atomic_load_explicit(&l->lvt[LVT_ERROR], memory_order_relaxed);

	atomic_fetch_or_explicit(&l->esr_pending, esr_bits, memory_order_relaxed);
	if (lvt & LVT_MASKED)
		return;
	if (!irr_set(l, lvt & LVT_VECTOR, false)) {
		/* The error vector itself is illegal: record it, raise nothing more (no recursion). */
		atomic_fetch_or_explicit(&l->esr_pending, ESR_RECV_ILLEGAL, memory_order_relaxed);
		return;
	}
	kick(l);
}

/* An LVT fired (timer): its vector, unless masked; owner. */
static void lvt_fire(struct lapic *l, unsigned lvt_idx)
{
	uint32_t lvt = atomic_load_explicit(&l->lvt[lvt_idx], memory_order_relaxed);

	if ((lvt & LVT_MASKED) || !hw_enabled(l))
		return;
	if (!irr_set(l, lvt & LVT_VECTOR, false)) {
		error_raise(l, ESR_RECV_ILLEGAL);
		return;
	}
	kick(l);
}

/* ---- priorities ---- */

static uint32_t ppr_get(struct lapic *l)
{
	int isrv = bitmap32_highest(l->isr, 8);
	uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;

	return (l->tpr & 0xf0) >= isr_class ? l->tpr : isr_class;
}

/* SDM 10.8.3.1: APR from TPR, the highest ISR and the highest IRR vector. */
static uint32_t apr_get(struct lapic *l)
{
	int isrv = bitmap32_highest(l->isr, 8), irrv = irr_highest(l);
	uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;
	uint32_t irr_class = irrv < 0 ? 0 : (uint32_t)irrv & 0xf0;
	uint32_t tpr_class = l->tpr & 0xf0, apr;

	if (tpr_class >= irr_class && tpr_class > isr_class)
		return l->tpr;
	apr = tpr_class;
	if (isr_class > apr)
		apr = isr_class;
	if (irr_class > apr)
		apr = irr_class;
	return apr;
}

static void eoi(struct lapic *l)
{
	int v = bitmap32_highest(l->isr, 8);

	if (v < 0)
		return;
	bitmap32_clear(l->isr, (unsigned)v);
	if (bitmap32_test(l->isr_level, (unsigned)v)) {
		bitmap32_clear(l->isr_level, (unsigned)v);
		if (l->env.eoi_level)
			l->env.eoi_level(l->env.opaque, (uint8_t)v);
	}
}

/* ---- timer ---- */

static unsigned timer_divisor(uint32_t div)
{
	unsigned code = (div & 3) | ((div >> 1) & 4);

	return code == 7 ? 1 : 2u << code;
}

static unsigned timer_mode(const struct lapic *l)
{
	return (atomic_load_explicit(&((struct lapic *)l)->lvt[LVT_TIMER], memory_order_relaxed) & LVT_TIMER_MODE) >>
	       LVT_TIMER_MODE_SHIFT;
}

/* Timer-clock ticks -> TSC ticks, rounded up (at least 1 for a non-zero count). */
static uint64_t ticks_to_tsc(struct lapic *l, uint64_t ticks)
{
	unsigned __int128 t = (unsigned __int128)ticks * l->tsc_hz;
	unsigned __int128 r = (t + LAPIC_TIMER_HZ - 1) / LAPIC_TIMER_HZ;

	if (r > UINT64_MAX / 2)
		r = UINT64_MAX / 2;
	return r ? (uint64_t)r : (ticks ? 1 : 0);
}

/* TSC ticks -> timer-clock ticks, rounded down (the count has not dropped before a whole tick passed). */
static uint64_t tsc_to_ticks(struct lapic *l, uint64_t tsc)
{
	return (uint64_t)((unsigned __int128)tsc * LAPIC_TIMER_HZ / l->tsc_hz);
}

static void timer_stop(struct lapic *l)
{
	l->timer_expiry = UINT64_MAX;
	l->timer_period = 0;
}

static void timer_start(struct lapic *l, uint64_t now)
{
	if (!l->timer_init || timer_mode(l) == TIMER_DEADLINE) {
		timer_stop(l);
		return;
	}
	l->timer_period = ticks_to_tsc(l, (uint64_t)l->timer_init * timer_divisor(l->timer_div));
	l->timer_begin = now;
	l->timer_expiry = now + l->timer_period;
}

static uint32_t timer_current(struct lapic *l)
{
	uint64_t now, elapsed, counted;

	if (l->timer_expiry == UINT64_MAX || timer_mode(l) == TIMER_DEADLINE)
		return 0;
	now = tsc_now(l);
	if (now < l->timer_begin)
		return l->timer_init;
	elapsed = now - l->timer_begin;
	if (now >= l->timer_expiry) {
		if (timer_mode(l) != TIMER_PERIODIC)
			return 0;
		/* A reload is due but not yet processed: count within the current period. */
		elapsed = (now - l->timer_expiry) % l->timer_period;
	}
	counted = tsc_to_ticks(l, elapsed) / timer_divisor(l->timer_div);
	return counted >= l->timer_init ? 0 : l->timer_init - (uint32_t)counted;
}

uint64_t lapic_timer_deadline(struct lapic *l)
{
	if (!hw_enabled(l))
		return UINT64_MAX;
	if (timer_mode(l) == TIMER_DEADLINE)
		return l->tsc_deadline ? l->tsc_deadline : UINT64_MAX;
	return l->timer_expiry;
}

void lapic_timer_tick(struct lapic *l, uint64_t now_tsc)
{
	if (!hw_enabled(l))
		return;
	if (timer_mode(l) == TIMER_DEADLINE) {
		if (!l->tsc_deadline || now_tsc < l->tsc_deadline)
			return;
		l->tsc_deadline = 0;
		lvt_fire(l, LVT_TIMER);
		return;
	}
	if (l->timer_expiry == UINT64_MAX || now_tsc < l->timer_expiry)
		return;
	if (timer_mode(l) == TIMER_PERIODIC) {
		/* Next boundary after now; the period is recomputed so a new divide value applies at reload. */
		uint64_t missed = (now_tsc - l->timer_expiry) / l->timer_period;
		uint64_t base = l->timer_expiry + missed * l->timer_period;

		l->timer_period = ticks_to_tsc(l, (uint64_t)l->timer_init * timer_divisor(l->timer_div));
		l->timer_begin = base;
		l->timer_expiry = base + l->timer_period;
	} else {
		timer_stop(l);
	}
	lvt_fire(l, LVT_TIMER);
}

/* ---- state ---- */

static void regs_reset(struct lapic *l)
{
	for (unsigned i = 0; i < 8; i++) {
		atomic_store(&l->irr[i], 0);
		atomic_store(&l->tmr[i], 0);
		l->isr[i] = 0;
		l->isr_level[i] = 0;
	}
	for (unsigned i = 0; i < LVT_N; i++)
		atomic_store(&l->lvt[i], LVT_MASKED);
	atomic_store(&l->esr_pending, 0);
	atomic_store(&l->svr, 0xff);
	atomic_store(&l->dfr, 0xffffffffu);
	atomic_store(&l->ldr, (base_get(l) & APICBASE_EXTD) ? x2apic_ldr_of(atomic_load(&l->id)) : 0);
	l->tpr = 0;
	l->esr = 0;
	l->icr_lo = l->icr_hi = 0;
	l->timer_init = 0;
	l->timer_div = 0;
	l->tsc_deadline = 0;
	timer_stop(l);
}

static void logical_publish(struct lapic *l)
{
	if (l->env.logical_changed)
		l->env.logical_changed(l->env.opaque, atomic_load(&l->id), atomic_load(&l->ldr),
				       atomic_load(&l->dfr));
}

int lapic_create(uint32_t apic_id, bool bsp, uint64_t tsc_hz, const struct lapic_env *env, struct lapic **out)
{
	struct lapic *l;

	if (!tsc_hz || !env)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->env = *env;
	l->tsc_hz = tsc_hz;
	atomic_store(&l->id, apic_id);
	atomic_store(&l->apicbase, LAPIC_DEFAULT_BASE | APICBASE_EN | (bsp ? APICBASE_BSP : 0));
	regs_reset(l);
	*out = l;
	return 0;
}

void lapic_destroy(struct lapic *l)
{
	free(l);
}

void lapic_reset(struct lapic *l, bool bsp)
{
	uint64_t base = base_get(l);
	uint32_t ldr = atomic_load(&l->ldr), dfr = atomic_load(&l->dfr);

	/* INIT keeps the id, the base and the mode (SDM 10.12.5.1); pending events stay (a SIPI may follow). */
	base = (base & ~APICBASE_BSP) | (bsp ? APICBASE_BSP : 0);
	atomic_store(&l->apicbase, base);
	regs_reset(l);
	if (ldr != atomic_load(&l->ldr) || dfr != atomic_load(&l->dfr))
		logical_publish(l);                      /* other nodes must stop matching the old logical id */
}

uint64_t lapic_base(const struct lapic *l)
{
	return base_get(l) & APICBASE_ADDR;
}

bool lapic_mmio_enabled(const struct lapic *l)
{
	return (base_get(l) & (APICBASE_EN | APICBASE_EXTD)) == APICBASE_EN;
}

bool lapic_x2apic(const struct lapic *l)
{
	return (base_get(l) & (APICBASE_EN | APICBASE_EXTD)) == (APICBASE_EN | APICBASE_EXTD);
}

/* ---- IA32_APIC_BASE ---- */

static int apicbase_write(struct lapic *l, uint64_t val)
{
	uint64_t old = base_get(l);
	bool old_en = old & APICBASE_EN, old_x2 = old & APICBASE_EXTD;
	bool en = val & APICBASE_EN, x2 = val & APICBASE_EXTD;

	if (val & ~APICBASE_VALID)
		return -EINVAL;
	if (x2 && !en)
		return -EINVAL;                         /* the invalid state */
	if (old_x2 && en && !x2)
		return -EINVAL;                         /* x2APIC -> xAPIC must pass through disabled */
	if (!old_en && x2)
		return -EINVAL;                         /* disabled -> x2APIC must pass through xAPIC */
	/* The BSP flag is set by hardware (lapic_create/_reset); software writes do not change it. */
	val = (val & ~APICBASE_BSP) | (old & APICBASE_BSP);
	atomic_store(&l->apicbase, val);
	if (old_en && !en) {
		/* Disabled: registers are not preserved (SDM 10.12.5.1); nothing is accepted any more. */
		regs_reset(l);
		atomic_store(&l->ldr, 0);
		logical_publish(l);
	} else if (!old_x2 && x2) {
		/* Entering x2APIC: the logical id is set from the x2APIC id. */
		atomic_store(&l->ldr, x2apic_ldr_of(atomic_load(&l->id)));
		logical_publish(l);
	}
	return 0;
}

/* ---- register file (shared by MMIO and MSR access; reg = xAPIC offset) ---- */

static int lvt_index(uint32_t reg)
{
	if (reg == REG_LVT_CMCI)
		return LVT_CMCI;
	if (reg >= REG_LVT_TIMER && reg <= REG_LVT_ERROR)
		return (int)((reg - REG_LVT_TIMER) >> 4);
	return -1;
}

/* Read a 32-bit register (not ICR in x2APIC). -EINVAL: no such (readable) register. */
static int reg_read(struct lapic *l, uint32_t reg, uint32_t *val)
{
	bool x2 = lapic_x2apic(l);
	int lvt = lvt_index(reg);

	if (lvt >= 0) {
		*val = atomic_load(&l->lvt[lvt]);
		return 0;
	}
	if (reg >= REG_ISR && reg < REG_ISR + 0x80) {
		*val = l->isr[(reg - REG_ISR) >> 4];
		return 0;
	}
	if (reg >= REG_TMR && reg < REG_TMR + 0x80) {
		*val = atomic_load(&l->tmr[(reg - REG_TMR) >> 4]);
		return 0;
	}
	if (reg >= REG_IRR && reg < REG_IRR + 0x80) {
		*val = atomic_load(&l->irr[(reg - REG_IRR) >> 4]);
		return 0;
	}
	switch (reg) {
	case REG_ID:
		*val = x2 ? atomic_load(&l->id) : atomic_load(&l->id) << 24;
		return 0;
	case REG_VERSION:
		*val = LAPIC_VERSION;
		return 0;
	case REG_TPR:
		*val = l->tpr;
		return 0;
	case REG_APR:
		if (x2)
			return -EINVAL;
		*val = apr_get(l);
		return 0;
	case REG_PPR:
		*val = ppr_get(l);
		return 0;
	case REG_EOI:
		if (x2)
			return -EINVAL;                 /* write-only */
		*val = 0;
		return 0;
	case REG_LDR:
		*val = atomic_load(&l->ldr);
		return 0;
	case REG_DFR:
		if (x2)
			return -EINVAL;
		*val = atomic_load(&l->dfr);
		return 0;
	case REG_SVR:
		*val = atomic_load(&l->svr);
		return 0;
	case REG_ESR:
		*val = l->esr;
		return 0;
	case REG_ICR_LO:
		*val = l->icr_lo;                        /* delivery status (bit 12) always idle */
		return 0;
	case REG_ICR_HI:
		if (x2)
			return -EINVAL;
		*val = l->icr_hi;
		return 0;
	case REG_TIMER_INIT:
		*val = l->timer_init;
		return 0;
	case REG_TIMER_CUR:
		*val = timer_current(l);
		return 0;
	case REG_TIMER_DIV:
		*val = l->timer_div;
		return 0;
	default:
		return -EINVAL;                          /* reserved; SELF IPI is write-only */
	}
}

static void icr_send(struct lapic *l, uint32_t lo, uint32_t dest, bool x2)
{
	struct irq_msg m = {
		.vector = lo & ICR_VECTOR,
		.delivery = (lo >> ICR_DM_SHIFT) & 7,
		.shorthand = (lo >> ICR_SH_SHIFT) & 3,
		.logical = lo & ICR_LOGICAL,
		.level = lo & ICR_LEVEL,
		.trigger_level = lo & ICR_TRIGGER,
		.x2apic = x2,
		.dest = dest,
		.source = atomic_load(&l->id),
	};

	if ((m.delivery == IRQ_FIXED || m.delivery == IRQ_LOWEST) && m.vector < 16) {
		error_raise(l, ESR_SEND_ILLEGAL);
		return;
	}
	if (m.delivery == 3 || m.delivery == IRQ_EXTINT) {
		pr_debug("apic %u: ICR delivery mode %u ignored", m.source, m.delivery);
		return;
	}
	/* A failed remote send is the bus's to count and report; the guest's write itself succeeded. */
	if (l->env.send)
		(void)l->env.send(l->env.opaque, &m);
}

static void lvt_write(struct lapic *l, int idx, uint32_t val)
{
	uint32_t old = atomic_load(&l->lvt[idx]);

	if (!sw_enabled(l))
		val |= LVT_MASKED;                       /* SDM 10.4.7.2: masks cannot be cleared while disabled */
	if (idx == LVT_TIMER && (val & LVT_TIMER_MODE) == LVT_TIMER_MODE)
		val &= ~LVT_TIMER_MODE;                  /* mode 3 is reserved */
	atomic_store(&l->lvt[idx], val);
	if (idx == LVT_TIMER && (old & LVT_TIMER_MODE) != (val & LVT_TIMER_MODE) &&
	    (((old & LVT_TIMER_MODE) >> LVT_TIMER_MODE_SHIFT) == TIMER_DEADLINE ||
	     ((val & LVT_TIMER_MODE) >> LVT_TIMER_MODE_SHIFT) == TIMER_DEADLINE)) {
		/* SDM 10.5.4.1: moving into or out of TSC-deadline mode disarms the timer. */
		l->tsc_deadline = 0;
		l->timer_init = 0;
		timer_stop(l);
	}
}

/* Write a 32-bit register; `strict` (x2APIC) turns ignored writes into -EINVAL (#GP). The caller checked that
 * the register exists in the current mode for the MSR case. */
static int reg_write(struct lapic *l, uint32_t reg, uint32_t val, bool strict)
{
	int lvt = lvt_index(reg);

#define RESERVED(mask) \
	do { \
		if (strict && (val & ~(uint32_t)(mask))) \
			return -EINVAL; \
		val &= (mask); \
	} while (0)

	if (lvt >= 0) {
		RESERVED(lvt_valid[lvt]);
		if (strict && lvt == LVT_TIMER && (val & LVT_TIMER_MODE) == LVT_TIMER_MODE)
			return -EINVAL;
		lvt_write(l, lvt, val);
		return 0;
	}
	switch (reg) {
	case REG_TPR:
		RESERVED(0xffu);
		l->tpr = val;
		return 0;
	case REG_EOI:
		if (strict && val)
			return -EINVAL;
		eoi(l);
		return 0;
	case REG_LDR:
		if (strict)
			return -EINVAL;                  /* read-only in x2APIC */
		atomic_store(&l->ldr, val & 0xff000000u);
		logical_publish(l);
		return 0;
	case REG_DFR:
		atomic_store(&l->dfr, (val & DFR_VALID) | ~DFR_VALID);
		logical_publish(l);
		return 0;
	case REG_SVR:
		RESERVED(SVR_VALID);
		atomic_store(&l->svr, val);
		if (!(val & SVR_ENABLE))
			for (unsigned i = 0; i < LVT_N; i++)
				atomic_fetch_or(&l->lvt[i], LVT_MASKED);
		return 0;
	case REG_ESR:
		if (strict && val)
			return -EINVAL;
		l->esr = atomic_exchange(&l->esr_pending, 0);
		return 0;
	case REG_ICR_LO:
		l->icr_lo = val & ICR_LO_VALID;
		icr_send(l, l->icr_lo, l->icr_hi >> 24, false);
		return 0;
	case REG_ICR_HI:
		l->icr_hi = val & 0xff000000u;
		return 0;
	case REG_TIMER_INIT:
		if (timer_mode(l) == TIMER_DEADLINE)
			return 0;                        /* ignored in TSC-deadline mode */
		l->timer_init = val;
		timer_start(l, tsc_now(l));
		return 0;
	case REG_TIMER_DIV:
		RESERVED(0xbu);
		l->timer_div = val;
		return 0;
	case REG_ID: case REG_VERSION: case REG_APR: case REG_PPR: case REG_TIMER_CUR:
		return strict ? -EINVAL : 0;             /* read-only: ignored in xAPIC */
	default:
		if ((reg >= REG_ISR && reg < REG_IRR + 0x80))
			return strict ? -EINVAL : 0;
		return -EINVAL;
	}
#undef RESERVED
}

int lapic_mmio_read(struct lapic *l, uint64_t offset, uint8_t size, uint64_t *val)
{
	uint32_t reg = offset & ~0xfull, v;
	unsigned sub = offset & 0xf;

	if (!lapic_mmio_enabled(l) || offset >= 0x1000)
		return -EINVAL;
	/* Registers are 32 bits at 16-byte strides; narrower reads within them are allowed. */
	if ((size != 1 && size != 2 && size != 4) || sub + size > 4 || (sub & (size - 1))) {
		*val = 0;
		return -EINVAL;
	}
	if (reg_read(l, reg, &v) < 0) {
		error_raise(l, ESR_ILLEGAL_REG);
		*val = 0;
		return -EINVAL;
	}
	v >>= sub * 8;
	*val = size == 4 ? v : v & ((1u << (size * 8)) - 1);
	return 0;
}

int lapic_mmio_write(struct lapic *l, uint64_t offset, uint8_t size, uint64_t val)
{
	uint32_t reg = offset & ~0xfull;
	int r;

	if (!lapic_mmio_enabled(l) || offset >= 0x1000)
		return -EINVAL;
	if (size != 4 || (offset & 0xf))
		return -EINVAL;                          /* 32-bit aligned stores only (SDM 10.4.1) */
	if (reg == REG_SELF_IPI)
		r = -EINVAL;                             /* x2APIC only */
	else
		r = reg_write(l, reg, (uint32_t)val, false);
	if (r == -EINVAL)
		error_raise(l, ESR_ILLEGAL_REG);
	return r;
}

int lapic_msr_read(struct lapic *l, uint32_t msr, uint64_t *val)
{
	uint32_t v;

	if (msr == MSR_IA32_APICBASE) {
		*val = base_get(l);
		return 0;
	}
	if (msr == MSR_IA32_TSC_DEADLINE) {
		*val = hw_enabled(l) && timer_mode(l) == TIMER_DEADLINE ? l->tsc_deadline : 0;
		return 0;
	}
	if (msr < MSR_X2APIC_FIRST || msr > MSR_X2APIC_LAST)
		return -ENOENT;
	if (!lapic_x2apic(l))
		return -EINVAL;
	if (msr == MSR_X2APIC_FIRST + (REG_ICR_LO >> 4)) {
		*val = (uint64_t)l->icr_hi << 32 | l->icr_lo;
		return 0;
	}
	if (reg_read(l, (msr - MSR_X2APIC_FIRST) << 4, &v) < 0)
		return -EINVAL;
	*val = v;
	return 0;
}

int lapic_msr_write(struct lapic *l, uint32_t msr, uint64_t val)
{
	uint32_t reg;

	if (msr == MSR_IA32_APICBASE)
		return apicbase_write(l, val);
	if (msr == MSR_IA32_TSC_DEADLINE) {
		/* Ignored outside TSC-deadline mode; a deadline already past fires at the next tick. */
		if (hw_enabled(l) && timer_mode(l) == TIMER_DEADLINE)
			l->tsc_deadline = val;
		return 0;
	}
	if (msr < MSR_X2APIC_FIRST || msr > MSR_X2APIC_LAST)
		return -ENOENT;
	if (!lapic_x2apic(l))
		return -EINVAL;
	reg = (msr - MSR_X2APIC_FIRST) << 4;
	if (reg == REG_ICR_LO) {
		if ((uint32_t)val & ~(ICR_LO_VALID))
			return -EINVAL;
		l->icr_lo = (uint32_t)val;
		l->icr_hi = (uint32_t)(val >> 32);
		icr_send(l, l->icr_lo, l->icr_hi, true);
		return 0;
	}
	if (val >> 32)
		return -EINVAL;
	switch (reg) {
	case REG_SELF_IPI: {
		uint8_t vector = val & 0xff;

		if (val & ~0xffull)
			return -EINVAL;
		/* Same as an ICR self IPI: fixed, edge. */
		if (vector < 16) {
			error_raise(l, ESR_SEND_ILLEGAL);
			return 0;
		}
		lapic_accept(l, &(struct irq_msg){ .vector = vector, .delivery = IRQ_FIXED,
						   .shorthand = IRQ_SH_SELF, .x2apic = true,
						   .source = atomic_load(&l->id) });
		return 0;
	}
	case REG_APR: case REG_DFR: case REG_ICR_HI: case REG_RRD:
		return -EINVAL;                          /* not in x2APIC */
	default:
		return reg_write(l, reg, (uint32_t)val, true);
	}
}

/* ---- delivery ---- */

static bool match_xapic_logical(uint32_t ldr, uint32_t dfr, uint8_t dest)
{
	uint8_t id = ldr >> 24;

	if (dest == 0xff)
		return true;
	if ((dfr >> 28) == DFR_MODEL_FLAT)
		return id & dest;
	/* Cluster model: high nibble cluster, low nibble one bit per APIC. */
	return (id >> 4) == (dest >> 4) && (id & dest & 0xf);
}

bool lapic_match(const struct lapic *l, const struct irq_msg *m)
{
	struct lapic *ml = (struct lapic *)l;
	uint32_t id = atomic_load_explicit(&ml->id, memory_order_relaxed);
	uint64_t base = base_get(l);

	if (!(base & APICBASE_EN))
		return false;
	switch (m->shorthand) {
	case IRQ_SH_SELF:
		return m->source == id;
	case IRQ_SH_ALL:
		return true;
	case IRQ_SH_OTHERS:
		return m->source != id;
	default:
		break;
	}
	if (!m->logical) {
		if (m->x2apic)
			return m->dest == 0xffffffffu || m->dest == id;
		return m->dest == 0xff || m->dest == id;
	}
	if (m->x2apic) {
		uint32_t ldr = x2apic_ldr_of(id);

		if (m->dest == 0xffffffffu)
			return true;
		return (m->dest >> 16) == (ldr >> 16) && (m->dest & ldr & 0xffff);
	}
	if (base & APICBASE_EXTD)
		return m->dest == 0xff;                  /* xAPIC-format logical ids mean nothing to an x2APIC */
	return match_xapic_logical(atomic_load_explicit(&ml->ldr, memory_order_relaxed),
				   atomic_load_explicit(&ml->dfr, memory_order_relaxed), (uint8_t)m->dest);
}

void lapic_accept(struct lapic *l, const struct irq_msg *m)
{
	switch (m->delivery) {
	case IRQ_FIXED:
	case IRQ_LOWEST:
		if (!hw_enabled(l) || !sw_enabled(l))
			return;                          /* discarded (see the file comment) */
		if (!irr_set(l, m->vector, m->trigger_level)) {
			error_raise(l, ESR_RECV_ILLEGAL);
			return;
		}
		break;
	case IRQ_NMI:
		atomic_fetch_or(&l->events, LAPIC_EV_NMI);
		break;
	case IRQ_INIT:
		if (m->trigger_level && !m->level)
			return;                          /* INIT level de-assert */
		atomic_fetch_or(&l->events, LAPIC_EV_INIT);
		break;
	case IRQ_SIPI:
		atomic_store(&l->sipi_vector, m->vector);
		atomic_fetch_or(&l->events, LAPIC_EV_SIPI);
		break;
	default:
		pr_debug("apic %u: delivery mode %u dropped", atomic_load(&l->id), m->delivery);
		return;
	}
	kick(l);
}

unsigned lapic_take_events(struct lapic *l, uint8_t *sipi_vector)
{
	unsigned ev = atomic_exchange(&l->events, 0);

	if (sipi_vector)
		*sipi_vector = atomic_load(&l->sipi_vector);
	return ev & EV_ALL;
}

int lapic_pending_vector(struct lapic *l)
{
	int v;

	if (!hw_enabled(l))
		return -1;
	v = irr_highest(l);
	if (v < 0 || ((uint32_t)v & 0xf0) <= (ppr_get(l) & 0xf0))
		return -1;
	return v;
}

void lapic_ack(struct lapic *l, uint8_t vector)
{
	uint32_t bit = 1u << (vector % 32);
	uint32_t old = atomic_fetch_and_explicit(&l->irr[vector / 32], ~bit, memory_order_acquire);

	if (!(old & bit))
		return;                                  /* not requested: nothing goes in service */
	l->isr[vector / 32] |= bit;
	if (atomic_load_explicit(&l->tmr[vector / 32], memory_order_relaxed) & bit)
		l->isr_level[vector / 32] |= bit;
	else
		l->isr_level[vector / 32] &= ~bit;
}

bool lapic_has_work(struct lapic *l)
{
	return atomic_load(&l->events) || lapic_pending_vector(l) >= 0;
}
