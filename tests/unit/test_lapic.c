/* SPDX-License-Identifier: MIT */
/*
 * Local APIC and APIC bus: every register in xAPIC and x2APIC mode (reserved bits, read-only registers, ESR,
 * SVR), IA32_APIC_BASE transitions, IPIs of every delivery mode and destination kind between lapics on one bus,
 * priorities (TPR/PPR/APR, nested ISR, EOI order, level EOI), the timer in its three modes against a fake TSC, two
 * nodes whose buses call each other directly, and concurrent senders against an acking owner.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hypervisor/irq.h"
#include "hypervisor/lapic.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/rand.h"

#define MAX_CPUS 8

/* 2.5 GHz guest TSC: one APIC timer tick (25 MHz) = 100 TSC ticks. */
#define TSC_HZ 2500000000ull

static uint64_t fake_tsc;

struct tcpu {
	struct lapic *l;
	struct apicbus *bus;
	_Atomic unsigned kicks;
	unsigned eoi_count;
	uint8_t last_eoi;
	unsigned logical_calls;
	uint32_t last_ldr, last_dfr;
	unsigned sends;
};

struct machine {
	unsigned n;
	struct apicbus *bus;
	struct tcpu cpu[MAX_CPUS];
};

static int env_send(void *opaque, const struct irq_msg *m)
{
	struct tcpu *c = opaque;

	c->sends++;
	return c->bus ? apicbus_deliver(c->bus, m) : 0;
}

static void env_eoi_level(void *opaque, uint8_t vector)
{
	struct tcpu *c = opaque;

	c->eoi_count++;
	c->last_eoi = vector;
}

static void env_kick(void *opaque)
{
	struct tcpu *c = opaque;

	atomic_fetch_add(&c->kicks, 1);
}

static uint64_t env_tsc(void *opaque)
{
	return fake_tsc;
}

static void env_logical_changed(void *opaque, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	struct tcpu *c = opaque;

	c->logical_calls++;
	c->last_ldr = ldr;
	c->last_dfr = dfr;
	if (c->bus)
		apicbus_set_logical(c->bus, apic_id, ldr, dfr);
}

static void cpu_init(struct tcpu *c, uint32_t id, bool bsp, struct apicbus *bus)
{
	struct lapic_env env = {
		.opaque = c, .send = env_send, .eoi_level = env_eoi_level, .kick = env_kick, .tsc = env_tsc,
		.logical_changed = env_logical_changed,
	};

	memset(c, 0, sizeof(*c));
	c->bus = bus;
	assert_int_equal(lapic_create(id, bsp, TSC_HZ, &env, &c->l), 0);
}

static uint32_t rd(struct lapic *l, uint64_t off)
{
	uint64_t v = 0xdeadbeef;

	assert_int_equal(lapic_mmio_read(l, off, 4, &v), 0);
	return (uint32_t)v;
}

static void wr(struct lapic *l, uint64_t off, uint32_t val)
{
	assert_int_equal(lapic_mmio_write(l, off, 4, val), 0);
}

static uint64_t msr_rd(struct lapic *l, uint32_t msr)
{
	uint64_t v = 0xdeadbeef;

	assert_int_equal(lapic_msr_read(l, msr, &v), 0);
	return v;
}

static void msr_wr(struct lapic *l, uint32_t msr, uint64_t val)
{
	assert_int_equal(lapic_msr_write(l, msr, val), 0);
}

static void sw_enable(struct lapic *l)
{
	if (lapic_x2apic(l))
		msr_wr(l, 0x80f, 0x1ff);
	else
		wr(l, 0xf0, 0x1ff);
}

static void to_x2apic(struct lapic *l)
{
	msr_wr(l, MSR_IA32_APICBASE, (msr_rd(l, MSR_IA32_APICBASE) & ~0x100ull) | 0xc00);
	assert_true(lapic_x2apic(l));
}

/* n lapics with the given ids, all on one node and one bus, software-enabled. */
static void machine_init(struct machine *mc, unsigned n, const uint32_t *ids)
{
	memset(mc, 0, sizeof(*mc));
	mc->n = n;
	assert_int_equal(apicbus_create(n, ids, NULL, 0, NULL, &mc->bus), 0);
	for (unsigned i = 0; i < n; i++) {
		cpu_init(&mc->cpu[i], ids[i], i == 0, mc->bus);
		apicbus_attach(mc->bus, i, mc->cpu[i].l);
		sw_enable(mc->cpu[i].l);
	}
}

static void machine_fini(struct machine *mc)
{
	for (unsigned i = 0; i < mc->n; i++)
		lapic_destroy(mc->cpu[i].l);
	apicbus_destroy(mc->bus);
}

/* xAPIC ICR write: destination then command. */
static void ipi(struct lapic *l, uint8_t dest, uint32_t lo)
{
	wr(l, 0x310, (uint32_t)dest << 24);
	wr(l, 0x300, lo);
}

/* Which cpus have `vector` pending (bit i = cpu i); consumes it (ack + EOI). */
static unsigned took(struct machine *mc, int vector)
{
	unsigned mask = 0;

	for (unsigned i = 0; i < mc->n; i++) {
		int v = lapic_pending_vector(mc->cpu[i].l);

		if (v < 0)
			continue;
		assert_int_equal(v, vector);
		lapic_ack(mc->cpu[i].l, (uint8_t)v);
		assert_int_equal(lapic_pending_vector(mc->cpu[i].l), -1);
		if (lapic_x2apic(mc->cpu[i].l))
			msr_wr(mc->cpu[i].l, 0x80b, 0);
		else
			wr(mc->cpu[i].l, 0xb0, 0);
		mask |= 1u << i;
	}
	return mask;
}

static unsigned events_mask(struct machine *mc, unsigned ev, uint8_t *sipi)
{
	unsigned mask = 0;

	for (unsigned i = 0; i < mc->n; i++) {
		unsigned e = lapic_take_events(mc->cpu[i].l, sipi);

		assert_int_equal(e & ~ev, 0);
		if (e == ev)
			mask |= 1u << i;
	}
	return mask;
}

static int setup(void **state)
{
	log_set_quiet(true);
	fake_tsc = 1000000;
	return 0;
}

/* ---- registers ---- */

static void test_reset_state(void **state)
{
	struct tcpu bsp, ap;

	cpu_init(&bsp, 0, true, NULL);
	cpu_init(&ap, 5, false, NULL);
	assert_int_equal(msr_rd(bsp.l, MSR_IA32_APICBASE), 0xfee00900);
	assert_int_equal(msr_rd(ap.l, MSR_IA32_APICBASE), 0xfee00800);
	assert_int_equal(lapic_base(ap.l), LAPIC_DEFAULT_BASE);
	assert_true(lapic_mmio_enabled(ap.l));
	assert_false(lapic_x2apic(ap.l));
	assert_int_equal(rd(ap.l, 0x20), 5u << 24);
	assert_int_equal(rd(ap.l, 0x30), 0x00060014);
	assert_int_equal(rd(ap.l, 0x80), 0);
	assert_int_equal(rd(ap.l, 0xa0), 0);
	assert_int_equal(rd(ap.l, 0xd0), 0);
	assert_int_equal(rd(ap.l, 0xe0), 0xffffffff);
	assert_int_equal(rd(ap.l, 0xf0), 0xff);
	for (uint64_t off = 0x320; off <= 0x370; off += 0x10)
		assert_int_equal(rd(ap.l, off), 0x10000);
	assert_int_equal(rd(ap.l, 0x2f0), 0x10000);
	for (uint64_t off = 0x100; off < 0x280; off += 0x10)
		assert_int_equal(rd(ap.l, off), 0);
	assert_int_equal(rd(ap.l, 0x280), 0);
	assert_int_equal(rd(ap.l, 0x380), 0);
	assert_int_equal(rd(ap.l, 0x390), 0);
	assert_int_equal(rd(ap.l, 0x3e0), 0);
	assert_int_equal(lapic_timer_deadline(ap.l), UINT64_MAX);
	assert_false(lapic_has_work(ap.l));
	lapic_destroy(bsp.l);
	lapic_destroy(ap.l);
}

static void test_xapic_registers(void **state)
{
	struct tcpu c;
	uint64_t v;

	cpu_init(&c, 3, false, NULL);
	wr(c.l, 0xf0, 0xffffffff);                     /* SVR: vector, enable, focus; the rest reserved */
	assert_int_equal(rd(c.l, 0xf0), 0x3ff);
	wr(c.l, 0x80, 0x1ff);                          /* TPR: 8 bits */
	assert_int_equal(rd(c.l, 0x80), 0xff);
	assert_int_equal(rd(c.l, 0xa0), 0xff);         /* PPR follows TPR with nothing in service */
	wr(c.l, 0x80, 0);
	wr(c.l, 0x20, 0x7f000000);                     /* ID: read-only here */
	assert_int_equal(rd(c.l, 0x20), 3u << 24);
	wr(c.l, 0x30, 0);                              /* version, PPR, APR, current count: ignored */
	assert_int_equal(rd(c.l, 0x30), 0x00060014);
	wr(c.l, 0xa0, 0x55);
	assert_int_equal(rd(c.l, 0xa0), 0);
	wr(c.l, 0x390, 1234);
	assert_int_equal(rd(c.l, 0x390), 0);
	wr(c.l, 0x200, 0xffffffff);                    /* IRR/ISR/TMR: read-only */
	wr(c.l, 0x100, 0xffffffff);
	assert_int_equal(rd(c.l, 0x200), 0);
	assert_int_equal(rd(c.l, 0x100), 0);
	assert_false(lapic_has_work(c.l));
	wr(c.l, 0xd0, 0xffffffff);                     /* LDR: bits 31:24 */
	assert_int_equal(rd(c.l, 0xd0), 0xff000000);
	assert_int_equal(c.logical_calls, 1);
	assert_int_equal(c.last_ldr, 0xff000000);
	wr(c.l, 0xe0, 0);                              /* DFR: model bits; the rest reads as ones */
	assert_int_equal(rd(c.l, 0xe0), 0x0fffffff);
	assert_int_equal(c.logical_calls, 2);
	assert_int_equal(c.last_dfr, 0x0fffffff);
	wr(c.l, 0x320, 0xffffffff);                    /* LVT timer: vector, mask, mode (3 reserved -> 0) */
	assert_int_equal(rd(c.l, 0x320), 0x100ff);
	wr(c.l, 0x320, 0x400ee);
	assert_int_equal(rd(c.l, 0x320), 0x400ee);
	wr(c.l, 0x350, 0xffffffff);                    /* LINT0: remote IRR (14) and delivery status read 0 */
	assert_int_equal(rd(c.l, 0x350), 0x1a7ff);
	wr(c.l, 0x360, 0x1a7ff);
	assert_int_equal(rd(c.l, 0x360), 0x1a7ff);
	wr(c.l, 0x370, 0xffffffff);                    /* error: vector and mask only */
	assert_int_equal(rd(c.l, 0x370), 0x100ff);
	wr(c.l, 0x330, 0xffffffff);
	assert_int_equal(rd(c.l, 0x330), 0x107ff);
	wr(c.l, 0x340, 0xffffffff);
	assert_int_equal(rd(c.l, 0x340), 0x107ff);
	wr(c.l, 0x2f0, 0xffffffff);
	assert_int_equal(rd(c.l, 0x2f0), 0x107ff);
	wr(c.l, 0x3e0, 0xffffffff);                    /* divide: bits 0, 1, 3 */
	assert_int_equal(rd(c.l, 0x3e0), 0xb);
	wr(c.l, 0x310, 0xffffffff);                    /* ICR high: destination field only */
	assert_int_equal(rd(c.l, 0x310), 0xff000000);
	/* Narrow reads inside a register are fine; other sizes, misaligned or narrow writes are not. */
	assert_int_equal(lapic_mmio_read(c.l, 0x23, 1, &v), 0);
	assert_int_equal(v, 3);
	assert_int_equal(lapic_mmio_read(c.l, 0x32, 2, &v), 0);
	assert_int_equal(v, 6);
	assert_int_equal(lapic_mmio_read(c.l, 0x24, 4, &v), -EINVAL);
	assert_int_equal(lapic_mmio_read(c.l, 0x20, 8, &v), -EINVAL);
	assert_int_equal(lapic_mmio_write(c.l, 0x80, 2, 0x10), -EINVAL);
	assert_int_equal(lapic_mmio_write(c.l, 0x84, 4, 0x10), -EINVAL);
	assert_int_equal(rd(c.l, 0x80), 0);
	assert_int_equal(lapic_mmio_read(c.l, 0x1000, 4, &v), -EINVAL);
	/* Reserved offsets, and SELF IPI (x2APIC only). */
	assert_int_equal(lapic_mmio_read(c.l, 0x40, 4, &v), -EINVAL);
	assert_int_equal(lapic_mmio_read(c.l, 0x3f0, 4, &v), -EINVAL);
	assert_int_equal(lapic_mmio_write(c.l, 0x3f0, 4, 0x40), -EINVAL);
	assert_int_equal(lapic_mmio_write(c.l, 0x2a0, 4, 0), -EINVAL);
	assert_false(lapic_has_work(c.l));
	/* x2APIC MSRs are #GP in xAPIC mode; other MSRs are not ours. */
	assert_int_equal(lapic_msr_read(c.l, 0x802, &v), -EINVAL);
	assert_int_equal(lapic_msr_write(c.l, 0x808, 0), -EINVAL);
	assert_int_equal(lapic_msr_read(c.l, 0x10, &v), -ENOENT);
	assert_int_equal(lapic_msr_write(c.l, 0x900, 0), -ENOENT);
	lapic_destroy(c.l);
}

/* ESR: reads return what the last write latched; a write latches the errors since the previous write. */
static void test_esr(void **state)
{
	struct tcpu c;

	cpu_init(&c, 1, false, NULL);
	sw_enable(c.l);
	ipi(c.l, 2, 0x4005);                           /* fixed, vector 5: send illegal vector */
	assert_int_equal(c.sends, 0);                  /* not sent */
	assert_int_equal(rd(c.l, 0x280), 0);           /* not latched yet */
	wr(c.l, 0x280, 0);
	assert_int_equal(rd(c.l, 0x280), 0x20);
	assert_int_equal(rd(c.l, 0x280), 0x20);        /* reads do not clear */
	wr(c.l, 0x280, 0);
	assert_int_equal(rd(c.l, 0x280), 0);
	/* Received illegal vector (bit 6) and illegal register address (bit 7) accumulate. */
	lapic_accept(c.l, &(struct irq_msg){ .vector = 3, .delivery = IRQ_FIXED });
	assert_int_equal(lapic_pending_vector(c.l), -1);
	assert_int_equal(lapic_mmio_write(c.l, 0x40, 4, 0), -EINVAL);
	wr(c.l, 0x280, 0);
	assert_int_equal(rd(c.l, 0x280), 0xc0);
	/* With the LVT error entry unmasked, an error raises its vector. */
	wr(c.l, 0x370, 0xe3);
	lapic_accept(c.l, &(struct irq_msg){ .vector = 7, .delivery = IRQ_FIXED });
	assert_int_equal(lapic_pending_vector(c.l), 0xe3);
	lapic_destroy(c.l);
}

/* SVR software disable: LVTs masked and stay masked; fixed interrupts discarded; NMI/INIT/SIPI still taken. */
static void test_svr_disable(void **state)
{
	struct tcpu c;
	uint8_t sipi = 0;

	cpu_init(&c, 1, false, NULL);
	/* Reset: software-disabled. */
	lapic_accept(c.l, &(struct irq_msg){ .vector = 0x40, .delivery = IRQ_FIXED });
	assert_int_equal(lapic_pending_vector(c.l), -1);
	wr(c.l, 0x320, 0x40);                          /* unmasking is ignored while disabled */
	assert_int_equal(rd(c.l, 0x320), 0x10040);
	sw_enable(c.l);
	wr(c.l, 0x320, 0x40);
	wr(c.l, 0x350, 0x700);
	assert_int_equal(rd(c.l, 0x320), 0x40);
	lapic_accept(c.l, &(struct irq_msg){ .vector = 0x41, .delivery = IRQ_FIXED });
	wr(c.l, 0xf0, 0xff);                           /* disable: every LVT masked */
	assert_int_equal(rd(c.l, 0x320), 0x10040);
	assert_int_equal(rd(c.l, 0x350), 0x10700);
	assert_int_equal(rd(c.l, 0xf0), 0xff);
	assert_int_equal(lapic_pending_vector(c.l), 0x41);   /* pending IRR is held */
	lapic_accept(c.l, &(struct irq_msg){ .vector = 0x80, .delivery = IRQ_FIXED });
	lapic_accept(c.l, &(struct irq_msg){ .vector = 0x81, .delivery = IRQ_LOWEST });
	assert_int_equal(lapic_pending_vector(c.l), 0x41);
	lapic_accept(c.l, &(struct irq_msg){ .delivery = IRQ_NMI });
	lapic_accept(c.l, &(struct irq_msg){ .delivery = IRQ_INIT, .level = true, .trigger_level = true });
	lapic_accept(c.l, &(struct irq_msg){ .vector = 0x12, .delivery = IRQ_SIPI });
	assert_int_equal(lapic_take_events(c.l, &sipi), LAPIC_EV_NMI | LAPIC_EV_INIT | LAPIC_EV_SIPI);
	assert_int_equal(sipi, 0x12);
	/* Re-enabled: masks stay until software clears them. */
	sw_enable(c.l);
	assert_int_equal(rd(c.l, 0x320), 0x10040);
	wr(c.l, 0x320, 0x40);
	assert_int_equal(rd(c.l, 0x320), 0x40);
	lapic_destroy(c.l);
}

static void test_x2apic_registers(void **state)
{
	struct tcpu c;
	uint64_t v;

	cpu_init(&c, 0x23, false, NULL);
	to_x2apic(c.l);
	assert_false(lapic_mmio_enabled(c.l));
	assert_int_equal(lapic_mmio_read(c.l, 0x20, 4, &v), -EINVAL);
	assert_int_equal(lapic_mmio_write(c.l, 0x80, 4, 0), -EINVAL);
	/* LDR derives from the id: cluster 2, bit 3; published. */
	assert_int_equal(msr_rd(c.l, 0x802), 0x23);
	assert_int_equal(msr_rd(c.l, 0x80d), 0x00020008);
	assert_int_equal(c.logical_calls, 1);
	assert_int_equal(c.last_ldr, 0x00020008);
	assert_int_equal(msr_rd(c.l, 0x803), 0x00060014);
	assert_int_equal(msr_rd(c.l, 0x80f), 0xff);
	/* Read-only registers: #GP on write. */
	for (uint32_t msr = 0x810; msr < 0x828; msr++) {
		assert_int_equal(msr_rd(c.l, msr), 0);
		assert_int_equal(lapic_msr_write(c.l, msr, 0), -EINVAL);
	}
	assert_int_equal(lapic_msr_write(c.l, 0x802, 0x23), -EINVAL);
	assert_int_equal(lapic_msr_write(c.l, 0x803, 0), -EINVAL);
	assert_int_equal(lapic_msr_write(c.l, 0x80a, 0), -EINVAL);
	assert_int_equal(lapic_msr_write(c.l, 0x80d, 0x00020008), -EINVAL);
	assert_int_equal(lapic_msr_write(c.l, 0x839, 0), -EINVAL);
	/* Write-only registers: #GP on read. */
	assert_int_equal(lapic_msr_read(c.l, 0x80b, &v), -EINVAL);
	assert_int_equal(lapic_msr_read(c.l, 0x83f, &v), -EINVAL);
	/* Not in x2APIC: APR, RRD, DFR, ICR high, and the holes. */
	for (uint32_t msr = 0x800; msr <= 0x8ff; msr++) {
		bool exists = msr == 0x802 || msr == 0x803 || msr == 0x808 || msr == 0x80a || msr == 0x80b ||
			      msr == 0x80d || msr == 0x80f || (msr >= 0x810 && msr <= 0x828) || msr == 0x82f ||
			      msr == 0x830 || (msr >= 0x832 && msr <= 0x839) || msr == 0x83e || msr == 0x83f;

		if (exists)
			continue;
		assert_int_equal(lapic_msr_read(c.l, msr, &v), -EINVAL);
		assert_int_equal(lapic_msr_write(c.l, msr, 0), -EINVAL);
	}
	/* Reserved bits: #GP, nothing written. */
	assert_int_equal(lapic_msr_write(c.l, 0x808, 0x100), -EINVAL);
	assert_int_equal(lapic_msr_write(c.l, 0x808, 1ull << 32), -EINVAL);
	assert_int_equal(msr_rd(c.l, 0x808), 0);
	msr_wr(c.l, 0x808, 0x20);
	assert_int_equal(msr_rd(c.l, 0x808), 0x20);
	assert_int_equal(lapic_msr_write(c.l, 0x80f, 0x11ff), -EINVAL); /* no directed EOI */
	msr_wr(c.l, 0x80f, 0x3ff);
	assert_int_equal(lapic_msr_write(c.l, 0x80b, 1), -EINVAL);
	msr_wr(c.l, 0x80b, 0);
	assert_int_equal(lapic_msr_write(c.l, 0x828, 1), -EINVAL);
	msr_wr(c.l, 0x828, 0);
	assert_int_equal(lapic_msr_write(c.l, 0x832, 0x60040), -EINVAL); /* timer mode 3 */
	assert_int_equal(lapic_msr_write(c.l, 0x832, 0x1040), -EINVAL);
	msr_wr(c.l, 0x832, 0x20040);
	assert_int_equal(msr_rd(c.l, 0x832), 0x20040);
	assert_int_equal(lapic_msr_write(c.l, 0x835, 0x4000), -EINVAL); /* remote IRR is read-only */
	msr_wr(c.l, 0x835, 0x1a7ff);
	assert_int_equal(lapic_msr_write(c.l, 0x837, 0x700), -EINVAL);
	assert_int_equal(lapic_msr_write(c.l, 0x83e, 0x4), -EINVAL);
	msr_wr(c.l, 0x83e, 0xb);
	assert_int_equal(msr_rd(c.l, 0x83e), 0xb);
	assert_int_equal(lapic_msr_write(c.l, 0x83f, 0x100), -EINVAL);
	/* ICR: 64 bits, no delivery-status bit; reserved low bits #GP. */
	assert_int_equal(lapic_msr_write(c.l, 0x830, 0x1000), -EINVAL);
	assert_int_equal(lapic_msr_write(c.l, 0x830, 0x100000), -EINVAL);
	msr_wr(c.l, 0x830, 0x0000012300004050ull);
	assert_int_equal(msr_rd(c.l, 0x830), 0x0000012300004050ull);
	assert_int_equal(c.sends, 1);
	lapic_destroy(c.l);
}

static void test_apicbase_transitions(void **state)
{
	struct tcpu c;
	uint64_t v;

	cpu_init(&c, 4, true, NULL);
	/* Reserved bits and the invalid state (EN=0, EXTD=1). */
	assert_int_equal(lapic_msr_write(c.l, MSR_IA32_APICBASE, 0xfee00a00), -EINVAL);       /* bit 9 */
	assert_int_equal(lapic_msr_write(c.l, MSR_IA32_APICBASE, 0xfee00800 | 1ull << 63), -EINVAL);
	assert_int_equal(lapic_msr_write(c.l, MSR_IA32_APICBASE, 0xfee00400), -EINVAL);
	/* Relocation; the BSP bit is not software's. */
	msr_wr(c.l, MSR_IA32_APICBASE, 0xfec00800);
	assert_int_equal(lapic_base(c.l), 0xfec00000);
	assert_int_equal(msr_rd(c.l, MSR_IA32_APICBASE), 0xfec00900);
	msr_wr(c.l, MSR_IA32_APICBASE, 0xfee00800);
	wr(c.l, 0x80, 0x30);
	/* xAPIC -> x2APIC keeps the registers and sets the LDR. */
	to_x2apic(c.l);
	assert_int_equal(msr_rd(c.l, 0x808), 0x30);
	assert_int_equal(msr_rd(c.l, 0x80d), 0x10);
	/* x2APIC -> xAPIC directly is illegal. */
	assert_int_equal(lapic_msr_write(c.l, MSR_IA32_APICBASE, 0xfee00800), -EINVAL);
	assert_true(lapic_x2apic(c.l));
	/* INIT keeps x2APIC mode and the id, resets the rest. */
	lapic_reset(c.l, true);
	assert_true(lapic_x2apic(c.l));
	assert_int_equal(msr_rd(c.l, 0x808), 0);
	assert_int_equal(msr_rd(c.l, 0x802), 4);
	assert_int_equal(msr_rd(c.l, 0x80d), 0x10);
	msr_wr(c.l, 0x808, 0x30);
	/* x2APIC -> disabled: nothing decodes, nothing matches, nothing is pending. */
	msr_wr(c.l, MSR_IA32_APICBASE, 0xfee00000);
	assert_false(lapic_x2apic(c.l));
	assert_false(lapic_mmio_enabled(c.l));
	assert_int_equal(lapic_msr_read(c.l, 0x808, &v), -EINVAL);
	assert_int_equal(lapic_mmio_read(c.l, 0x80, 4, &v), -EINVAL);
	assert_false(lapic_match(c.l, &(struct irq_msg){ .shorthand = IRQ_SH_ALL }));
	lapic_accept(c.l, &(struct irq_msg){ .vector = 0x40, .delivery = IRQ_FIXED });
	assert_int_equal(lapic_pending_vector(c.l), -1);
	/* disabled -> x2APIC is illegal; disabled -> xAPIC gives the reset state. */
	assert_int_equal(lapic_msr_write(c.l, MSR_IA32_APICBASE, 0xfee00c00), -EINVAL);
	msr_wr(c.l, MSR_IA32_APICBASE, 0xfee00800);
	assert_true(lapic_mmio_enabled(c.l));
	assert_int_equal(rd(c.l, 0x80), 0);
	assert_int_equal(rd(c.l, 0xf0), 0xff);
	assert_int_equal(rd(c.l, 0xe0), 0xffffffff);
	assert_int_equal(rd(c.l, 0xd0), 0);
	assert_int_equal(rd(c.l, 0x20), 4u << 24);
	/* xAPIC -> disabled -> xAPIC also legal. */
	msr_wr(c.l, MSR_IA32_APICBASE, 0xfee00000);
	msr_wr(c.l, MSR_IA32_APICBASE, 0xfee00800);
	lapic_destroy(c.l);
}

/* ---- IPIs on one bus ---- */

static void test_ipi_physical(void **state)
{
	static const uint32_t ids[] = { 0, 1, 2, 3 };
	struct machine mc;
	struct apicbus_stats st;

	machine_init(&mc, 4, ids);
	ipi(mc.cpu[0].l, 2, 0x4041);
	assert_int_equal(atomic_load(&mc.cpu[2].kicks), 1);
	assert_int_equal(took(&mc, 0x41), 1u << 2);
	ipi(mc.cpu[1].l, 0xff, 0x4042);                /* physical broadcast: everyone, sender included */
	assert_int_equal(took(&mc, 0x42), 0xf);
	ipi(mc.cpu[1].l, 9, 0x4043);                   /* nobody: dropped and counted */
	assert_int_equal(took(&mc, 0x43), 0);
	apicbus_get_stats(mc.bus, &st);
	assert_int_equal(st.delivered_local, 5);
	assert_int_equal(st.dropped_no_dest, 1);
	assert_int_equal(st.sent_remote, 0);
	/* ICR reads back as written, delivery status idle. */
	assert_int_equal(rd(mc.cpu[1].l, 0x300), 0x4043);
	machine_fini(&mc);
}

static void test_ipi_logical_flat(void **state)
{
	static const uint32_t ids[] = { 0, 1, 2, 3 };
	struct machine mc;

	machine_init(&mc, 4, ids);
	for (unsigned i = 0; i < 4; i++)
		wr(mc.cpu[i].l, 0xd0, 1u << (24 + i));
	ipi(mc.cpu[0].l, 0x05, 0x4851);
	assert_int_equal(took(&mc, 0x51), 0x5);
	ipi(mc.cpu[3].l, 0x0e, 0x4852);
	assert_int_equal(took(&mc, 0x52), 0xe);
	ipi(mc.cpu[3].l, 0xf0, 0x4853);
	assert_int_equal(took(&mc, 0x53), 0);
	ipi(mc.cpu[3].l, 0xff, 0x4854);
	assert_int_equal(took(&mc, 0x54), 0xf);
	machine_fini(&mc);
}

static void test_ipi_logical_cluster(void **state)
{
	static const uint32_t ids[] = { 0, 1, 2, 3 };
	static const uint8_t ldr[] = { 0x11, 0x12, 0x21, 0x24 };
	struct machine mc;

	machine_init(&mc, 4, ids);
	for (unsigned i = 0; i < 4; i++) {
		wr(mc.cpu[i].l, 0xe0, 0x0fffffff);
		wr(mc.cpu[i].l, 0xd0, (uint32_t)ldr[i] << 24);
	}
	ipi(mc.cpu[0].l, 0x13, 0x4861);                /* cluster 1, both members */
	assert_int_equal(took(&mc, 0x61), 0x3);
	ipi(mc.cpu[0].l, 0x25, 0x4862);                /* cluster 2, bits 0 and 2 */
	assert_int_equal(took(&mc, 0x62), 0xc);
	ipi(mc.cpu[0].l, 0x31, 0x4863);                /* cluster 3: nobody */
	assert_int_equal(took(&mc, 0x63), 0);
	ipi(mc.cpu[0].l, 0x1c, 0x4864);                /* cluster 1, bits no one has */
	assert_int_equal(took(&mc, 0x64), 0);
	ipi(mc.cpu[0].l, 0xff, 0x4865);                /* broadcast */
	assert_int_equal(took(&mc, 0x65), 0xf);
	/* The same LDR under the flat model means something else: 0x11 & 0x01. */
	wr(mc.cpu[0].l, 0xe0, 0xffffffff);
	ipi(mc.cpu[1].l, 0x01, 0x4866);
	assert_int_equal(took(&mc, 0x66), 0x1);
	machine_fini(&mc);
}

static void test_ipi_x2apic_logical(void **state)
{
	static const uint32_t ids[] = { 0, 1, 16, 17 };
	struct machine mc;

	machine_init(&mc, 4, ids);
	for (unsigned i = 0; i < 4; i++)
		to_x2apic(mc.cpu[i].l);
	msr_wr(mc.cpu[0].l, 0x830, (0x00000003ull << 32) | 0x4871);
	assert_int_equal(took(&mc, 0x71), 0x3);
	msr_wr(mc.cpu[0].l, 0x830, (0x00010002ull << 32) | 0x4872);
	assert_int_equal(took(&mc, 0x72), 0x8);
	msr_wr(mc.cpu[0].l, 0x830, (0x00020003ull << 32) | 0x4873);
	assert_int_equal(took(&mc, 0x73), 0);
	msr_wr(mc.cpu[0].l, 0x830, (0xffffffffull << 32) | 0x4874);
	assert_int_equal(took(&mc, 0x74), 0xf);
	/* x2APIC physical: 32-bit ids and broadcast. */
	msr_wr(mc.cpu[0].l, 0x830, (16ull << 32) | 0x4075);
	assert_int_equal(took(&mc, 0x75), 0x4);
	msr_wr(mc.cpu[0].l, 0x830, (0xffffffffull << 32) | 0x4076);
	assert_int_equal(took(&mc, 0x76), 0xf);
	/* xAPIC-format logical messages (an IOAPIC's) mean nothing to x2APICs, except the 0xff broadcast. */
	assert_int_equal(apicbus_deliver(mc.bus, &(struct irq_msg){ .vector = 0x77, .logical = true, .dest = 0x01,
								    .source = ~0u }), 0);
	assert_int_equal(took(&mc, 0x77), 0);
	assert_int_equal(apicbus_deliver(mc.bus, &(struct irq_msg){ .vector = 0x77, .logical = true, .dest = 0xff,
								    .source = ~0u }), 0);
	assert_int_equal(took(&mc, 0x77), 0xf);
	/* SELF IPI register. */
	msr_wr(mc.cpu[3].l, 0x83f, 0x78);
	assert_int_equal(took(&mc, 0x78), 0x8);
	machine_fini(&mc);
}

static void test_ipi_shorthands(void **state)
{
	static const uint32_t ids[] = { 0, 1, 2, 3 };
	struct machine mc;

	machine_init(&mc, 4, ids);
	ipi(mc.cpu[2].l, 0, 0x44081);                  /* self */
	assert_int_equal(took(&mc, 0x81), 0x4);
	ipi(mc.cpu[2].l, 0, 0x84082);                  /* all including self */
	assert_int_equal(took(&mc, 0x82), 0xf);
	ipi(mc.cpu[2].l, 0, 0xc4083);                  /* all excluding self */
	assert_int_equal(took(&mc, 0x83), 0xb);
	/* Shorthands ignore the destination field. */
	ipi(mc.cpu[1].l, 3, 0x44084);
	assert_int_equal(took(&mc, 0x84), 0x2);
	to_x2apic(mc.cpu[0].l);
	msr_wr(mc.cpu[0].l, 0x830, 0xc4085);           /* x2APIC all-but-self */
	assert_int_equal(took(&mc, 0x85), 0xe);
	machine_fini(&mc);
}

static void test_ipi_lowest_priority(void **state)
{
	static const uint32_t ids[] = { 7, 3, 5, 4 };
	struct machine mc;

	machine_init(&mc, 4, ids);
	for (unsigned i = 0; i < 4; i++)
		wr(mc.cpu[i].l, 0xd0, 1u << (24 + i));
	for (int k = 0; k < 10; k++) {
		ipi(mc.cpu[0].l, 0x0f, 0x4991);        /* all four match: APIC 3 (cpu 1) */
		assert_int_equal(took(&mc, 0x91), 0x2);
	}
	ipi(mc.cpu[0].l, 0x0d, 0x4992);                /* cpus 0, 2, 3: APIC 4 (cpu 3) */
	assert_int_equal(took(&mc, 0x92), 0x8);
	ipi(mc.cpu[0].l, 0, 0xc0193);                  /* all but self (APIC 7): APIC 3 */
	assert_int_equal(took(&mc, 0x93), 0x2);
	ipi(mc.cpu[0].l, 0x10, 0x4994);                /* nobody */
	assert_int_equal(took(&mc, 0x94), 0);
	machine_fini(&mc);
}

static void test_ipi_nmi_init_sipi(void **state)
{
	static const uint32_t ids[] = { 0, 1, 2, 3 };
	struct machine mc;
	uint8_t sipi = 0;

	machine_init(&mc, 4, ids);
	ipi(mc.cpu[0].l, 1, 0x4400);                   /* NMI */
	assert_int_equal(events_mask(&mc, LAPIC_EV_NMI, NULL), 0x2);
	ipi(mc.cpu[0].l, 0, 0xcc500);                  /* INIT assert, level, all but self */
	assert_int_equal(events_mask(&mc, LAPIC_EV_INIT, NULL), 0xe);
	ipi(mc.cpu[0].l, 0, 0xc8500);                  /* INIT de-assert: ignored */
	assert_int_equal(events_mask(&mc, LAPIC_EV_INIT, NULL), 0);
	ipi(mc.cpu[0].l, 2, 0x0500);                   /* edge INIT (level bit clear) counts */
	assert_int_equal(events_mask(&mc, LAPIC_EV_INIT, NULL), 0x4);
	ipi(mc.cpu[0].l, 3, 0x469a);                   /* SIPI, start page 0x9a */
	assert_int_equal(lapic_take_events(mc.cpu[3].l, &sipi), LAPIC_EV_SIPI);
	assert_int_equal(sipi, 0x9a);
	/* INIT then SIPI before the vCPU looks: both pending; lapic_reset (the INIT's effect) keeps the SIPI. */
	ipi(mc.cpu[0].l, 3, 0xc500);
	ipi(mc.cpu[0].l, 3, 0x4610);
	assert_true(lapic_has_work(mc.cpu[3].l));
	lapic_reset(mc.cpu[3].l, false);
	assert_int_equal(lapic_take_events(mc.cpu[3].l, &sipi), LAPIC_EV_INIT | LAPIC_EV_SIPI);
	assert_int_equal(sipi, 0x10);
	assert_false(lapic_has_work(mc.cpu[3].l));
	/* INIT's reset of an xAPIC LDR is published (the bus replicates it). */
	sw_enable(mc.cpu[3].l);
	wr(mc.cpu[3].l, 0xd0, 0x08000000);
	assert_int_equal(mc.cpu[3].last_ldr, 0x08000000);
	ipi(mc.cpu[0].l, 0x08, 0x4855);
	assert_int_equal(took(&mc, 0x55), 0x8);
	lapic_reset(mc.cpu[3].l, false);
	assert_int_equal(mc.cpu[3].logical_calls, 2);
	assert_int_equal(mc.cpu[3].last_ldr, 0);
	assert_int_equal(mc.cpu[3].last_dfr, 0xffffffff);
	sw_enable(mc.cpu[3].l);
	ipi(mc.cpu[0].l, 0x08, 0x4856);
	assert_int_equal(took(&mc, 0x56), 0);
	/* SMI, ExtINT and the reserved mode are not sent. */
	ipi(mc.cpu[0].l, 1, 0x4200);
	ipi(mc.cpu[0].l, 1, 0x4300);
	ipi(mc.cpu[0].l, 1, 0x4700);
	assert_false(lapic_has_work(mc.cpu[1].l));
	machine_fini(&mc);
}

/* ---- priorities ---- */

static void fixed(struct lapic *l, uint8_t v, bool level)
{
	lapic_accept(l, &(struct irq_msg){ .vector = v, .delivery = IRQ_FIXED, .trigger_level = level,
					   .level = true });
}

static void test_priority_and_eoi_order(void **state)
{
	struct tcpu c;

	cpu_init(&c, 0, true, NULL);
	sw_enable(c.l);
	fixed(c.l, 0x45, false);
	assert_int_equal(rd(c.l, 0x200 + 0x20), 1u << 5);   /* IRR word 2 */
	wr(c.l, 0x80, 0x50);
	assert_int_equal(lapic_pending_vector(c.l), -1);   /* class 4 below TPR class 5 */
	assert_true(!lapic_has_work(c.l));
	wr(c.l, 0x80, 0x4f);
	assert_int_equal(lapic_pending_vector(c.l), -1);   /* same class is not enough */
	assert_int_equal(rd(c.l, 0x90), 0x4f);             /* APR = TPR when TPR class >= IRR's and > ISR's */
	wr(c.l, 0x80, 0x30);
	assert_int_equal(rd(c.l, 0x90), 0x40);             /* else the highest of the three classes */
	assert_int_equal(lapic_pending_vector(c.l), 0x45);
	lapic_ack(c.l, 0x45);
	assert_int_equal(rd(c.l, 0x100 + 0x20), 1u << 5);   /* ISR */
	assert_int_equal(rd(c.l, 0x200 + 0x20), 0);
	assert_int_equal(rd(c.l, 0xa0), 0x40);             /* PPR = ISR class above TPR */
	fixed(c.l, 0x41, false);
	assert_int_equal(lapic_pending_vector(c.l), -1);   /* same class as in service */
	fixed(c.l, 0x61, false);
	assert_int_equal(lapic_pending_vector(c.l), 0x61); /* nests */
	lapic_ack(c.l, 0x61);
	assert_int_equal(rd(c.l, 0xa0), 0x60);
	fixed(c.l, 0x92, false);
	fixed(c.l, 0x93, false);
	assert_int_equal(lapic_pending_vector(c.l), 0x93);
	lapic_ack(c.l, 0x93);
	assert_int_equal(lapic_pending_vector(c.l), -1);   /* 0x92 same class as 0x93 */
	/* EOI retires the highest in service first. */
	wr(c.l, 0xb0, 0);
	assert_int_equal(rd(c.l, 0x100 + 0x40), 0);
	assert_int_equal(lapic_pending_vector(c.l), 0x92);
	lapic_ack(c.l, 0x92);
	wr(c.l, 0xb0, 0);                              /* 0x92 */
	wr(c.l, 0xb0, 0);                              /* 0x61 */
	assert_int_equal(rd(c.l, 0x100 + 0x30), 0);
	assert_int_equal(rd(c.l, 0x100 + 0x20), 1u << 5);
	assert_int_equal(rd(c.l, 0xa0), 0x40);
	assert_int_equal(lapic_pending_vector(c.l), -1);
	wr(c.l, 0xb0, 0);                              /* 0x45 */
	assert_int_equal(rd(c.l, 0xa0), 0x30);
	assert_int_equal(lapic_pending_vector(c.l), 0x41);
	/* A stray ack (vector not requested) changes nothing; an EOI with nothing in service neither. */
	lapic_ack(c.l, 0x77);
	assert_int_equal(rd(c.l, 0x100 + 0x30), 0);
	lapic_ack(c.l, 0x41);
	wr(c.l, 0xb0, 0);
	wr(c.l, 0xb0, 0);
	assert_int_equal(c.eoi_count, 0);
	lapic_destroy(c.l);
}

static void test_level_eoi(void **state)
{
	struct tcpu c;

	cpu_init(&c, 0, true, NULL);
	sw_enable(c.l);
	fixed(c.l, 0x50, true);
	assert_int_equal(rd(c.l, 0x180 + 0x20), 1u << 16);  /* TMR */
	fixed(c.l, 0x70, false);
	assert_int_equal(lapic_pending_vector(c.l), 0x70);
	lapic_ack(c.l, 0x70);
	assert_int_equal(lapic_pending_vector(c.l), -1);
	wr(c.l, 0xb0, 0);
	assert_int_equal(c.eoi_count, 0);                   /* edge: no broadcast */
	assert_int_equal(lapic_pending_vector(c.l), 0x50);
	lapic_ack(c.l, 0x50);
	wr(c.l, 0xb0, 0);
	assert_int_equal(c.eoi_count, 1);
	assert_int_equal(c.last_eoi, 0x50);
	wr(c.l, 0xb0, 0);
	assert_int_equal(c.eoi_count, 1);
	/* The EOI broadcast follows the trigger mode the vector had when it went in service, even if an edge
	 * request of the same vector arrived meanwhile. */
	fixed(c.l, 0x50, true);
	lapic_ack(c.l, 0x50);
	fixed(c.l, 0x50, false);
	assert_int_equal(rd(c.l, 0x180 + 0x20), 0);
	wr(c.l, 0xb0, 0);
	assert_int_equal(c.eoi_count, 2);
	/* Same through the x2APIC EOI MSR. */
	lapic_ack(c.l, 0x50);
	wr(c.l, 0xb0, 0);
	assert_int_equal(c.eoi_count, 2);
	to_x2apic(c.l);
	fixed(c.l, 0x51, true);
	lapic_ack(c.l, 0x51);
	msr_wr(c.l, 0x80b, 0);
	assert_int_equal(c.eoi_count, 3);
	assert_int_equal(c.last_eoi, 0x51);
	lapic_destroy(c.l);
}

/* ---- timer ---- */

static void test_timer_oneshot_divide(void **state)
{
	static const struct { uint32_t dcr; unsigned div; } divs[] = {
		{ 0x0, 2 }, { 0x1, 4 }, { 0x2, 8 }, { 0x3, 16 }, { 0x8, 32 }, { 0x9, 64 }, { 0xa, 128 }, { 0xb, 1 },
	};
	struct tcpu c;

	cpu_init(&c, 0, true, NULL);
	sw_enable(c.l);
	wr(c.l, 0x320, 0x30);                          /* one-shot, vector 0x30 */
	for (unsigned i = 0; i < sizeof(divs) / sizeof(divs[0]); i++) {
		uint64_t start = fake_tsc, period = 1000ull * divs[i].div * 100;

		wr(c.l, 0x3e0, divs[i].dcr);
		wr(c.l, 0x380, 1000);
		assert_int_equal(rd(c.l, 0x380), 1000);
		assert_int_equal(lapic_timer_deadline(c.l), start + period);
		assert_int_equal(rd(c.l, 0x390), 1000);
		fake_tsc = start + period / 4;
		assert_int_equal(rd(c.l, 0x390), 750);
		fake_tsc = start + period - 1;
		assert_int_equal(rd(c.l, 0x390), 1);
		lapic_timer_tick(c.l, fake_tsc);            /* early: nothing */
		assert_int_equal(lapic_pending_vector(c.l), -1);
		fake_tsc = start + period + 12345;         /* late is fine */
		lapic_timer_tick(c.l, fake_tsc);
		assert_int_equal(lapic_pending_vector(c.l), 0x30);
		assert_int_equal(rd(c.l, 0x390), 0);
		assert_int_equal(lapic_timer_deadline(c.l), UINT64_MAX);
		lapic_ack(c.l, 0x30);
		wr(c.l, 0xb0, 0);
		lapic_timer_tick(c.l, fake_tsc + period);   /* one-shot: once */
		assert_int_equal(lapic_pending_vector(c.l), -1);
	}
	/* Initial count 0 stops a running timer. */
	wr(c.l, 0x380, 500);
	assert_true(lapic_timer_deadline(c.l) != UINT64_MAX);
	wr(c.l, 0x380, 0);
	assert_int_equal(lapic_timer_deadline(c.l), UINT64_MAX);
	assert_int_equal(rd(c.l, 0x390), 0);
	/* Masked: counts and expires, raises nothing. */
	wr(c.l, 0x320, 0x10030);
	wr(c.l, 0x380, 10);
	fake_tsc += 10 * 100;
	lapic_timer_tick(c.l, fake_tsc);
	assert_int_equal(lapic_pending_vector(c.l), -1);
	assert_int_equal(lapic_timer_deadline(c.l), UINT64_MAX);
	lapic_destroy(c.l);
}

static void test_timer_periodic(void **state)
{
	struct tcpu c;
	uint64_t start, period = 200 * 4 * 100;       /* count 200, divide by 4 */

	cpu_init(&c, 0, true, NULL);
	sw_enable(c.l);
	wr(c.l, 0x320, 0x20031);                       /* periodic, vector 0x31 */
	wr(c.l, 0x3e0, 0x1);
	start = fake_tsc;
	wr(c.l, 0x380, 200);
	for (unsigned k = 1; k <= 3; k++) {
		assert_int_equal(lapic_timer_deadline(c.l), start + k * period);
		fake_tsc = start + (k - 1) * period + period / 2;
		assert_int_equal(rd(c.l, 0x390), 100);
		fake_tsc = start + k * period;
		lapic_timer_tick(c.l, fake_tsc);
		assert_int_equal(lapic_pending_vector(c.l), 0x31);
		lapic_ack(c.l, 0x31);
		wr(c.l, 0xb0, 0);
		assert_int_equal(rd(c.l, 0x390), 200);      /* reloaded */
	}
	/* Late by 2.5 periods: one interrupt, the next expiry on the original grid after now. */
	fake_tsc = start + 3 * period + 2 * period + period / 2;
	lapic_timer_tick(c.l, fake_tsc);
	assert_int_equal(lapic_pending_vector(c.l), 0x31);
	assert_int_equal(lapic_timer_deadline(c.l), start + 6 * period);
	assert_int_equal(rd(c.l, 0x390), 100);
	lapic_ack(c.l, 0x31);
	wr(c.l, 0xb0, 0);
	/* A new divide value applies at the reload. */
	wr(c.l, 0x3e0, 0xb);
	fake_tsc = start + 6 * period;
	lapic_timer_tick(c.l, fake_tsc);
	assert_int_equal(lapic_timer_deadline(c.l), fake_tsc + 200 * 100);
	/* Periodic <-> one-shot keeps counting. */
	wr(c.l, 0x320, 0x31);
	assert_int_equal(lapic_timer_deadline(c.l), fake_tsc + 200 * 100);
	lapic_destroy(c.l);
}

static void test_timer_tsc_deadline(void **state)
{
	struct tcpu c;
	uint64_t v;

	cpu_init(&c, 0, true, NULL);
	sw_enable(c.l);
	/* Outside TSC-deadline mode the MSR reads 0 and ignores writes. */
	msr_wr(c.l, MSR_IA32_TSC_DEADLINE, fake_tsc + 500);
	assert_int_equal(msr_rd(c.l, MSR_IA32_TSC_DEADLINE), 0);
	assert_int_equal(lapic_timer_deadline(c.l), UINT64_MAX);
	wr(c.l, 0x320, 0x40032);
	msr_wr(c.l, MSR_IA32_TSC_DEADLINE, fake_tsc + 500);
	assert_int_equal(msr_rd(c.l, MSR_IA32_TSC_DEADLINE), fake_tsc + 500);
	assert_int_equal(lapic_timer_deadline(c.l), fake_tsc + 500);
	wr(c.l, 0x380, 1000);                          /* initial count ignored */
	assert_int_equal(rd(c.l, 0x380), 0);
	assert_int_equal(rd(c.l, 0x390), 0);
	lapic_timer_tick(c.l, fake_tsc + 499);
	assert_int_equal(lapic_pending_vector(c.l), -1);
	lapic_timer_tick(c.l, fake_tsc + 500);
	assert_int_equal(lapic_pending_vector(c.l), 0x32);
	assert_int_equal(msr_rd(c.l, MSR_IA32_TSC_DEADLINE), 0);   /* fired: disarmed */
	assert_int_equal(lapic_timer_deadline(c.l), UINT64_MAX);
	lapic_ack(c.l, 0x32);
	wr(c.l, 0xb0, 0);
	/* Writing 0 disarms. */
	msr_wr(c.l, MSR_IA32_TSC_DEADLINE, fake_tsc + 100);
	msr_wr(c.l, MSR_IA32_TSC_DEADLINE, 0);
	assert_int_equal(lapic_timer_deadline(c.l), UINT64_MAX);
	lapic_timer_tick(c.l, fake_tsc + 1000);
	assert_int_equal(lapic_pending_vector(c.l), -1);
	/* A deadline in the past is due at once. */
	msr_wr(c.l, MSR_IA32_TSC_DEADLINE, 1);
	assert_int_equal(lapic_timer_deadline(c.l), 1);
	lapic_timer_tick(c.l, fake_tsc);
	assert_int_equal(lapic_pending_vector(c.l), 0x32);
	lapic_ack(c.l, 0x32);
	wr(c.l, 0xb0, 0);
	/* Leaving TSC-deadline mode disarms; so does entering it from a counting one-shot. */
	msr_wr(c.l, MSR_IA32_TSC_DEADLINE, fake_tsc + 100);
	wr(c.l, 0x320, 0x32);
	assert_int_equal(lapic_msr_read(c.l, MSR_IA32_TSC_DEADLINE, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(lapic_timer_deadline(c.l), UINT64_MAX);
	wr(c.l, 0x380, 1000);
	assert_true(lapic_timer_deadline(c.l) != UINT64_MAX);
	wr(c.l, 0x320, 0x40032);
	assert_int_equal(lapic_timer_deadline(c.l), UINT64_MAX);
	msr_wr(c.l, MSR_IA32_TSC_DEADLINE, fake_tsc + 100);
	wr(c.l, 0x320, 0x50032);                       /* masked: disarms on expiry, raises nothing */
	lapic_timer_tick(c.l, fake_tsc + 100);
	assert_int_equal(lapic_pending_vector(c.l), -1);
	assert_int_equal(msr_rd(c.l, MSR_IA32_TSC_DEADLINE), 0);
	/* x2APIC mode too; and after a hardware disable nothing is armed. */
	to_x2apic(c.l);
	msr_wr(c.l, 0x832, 0x40033);
	msr_wr(c.l, MSR_IA32_TSC_DEADLINE, fake_tsc + 7);
	assert_int_equal(lapic_timer_deadline(c.l), fake_tsc + 7);
	msr_wr(c.l, MSR_IA32_APICBASE, 0xfee00000);
	assert_int_equal(lapic_timer_deadline(c.l), UINT64_MAX);
	lapic_destroy(c.l);
}

/* A TSC that is not a multiple of the timer clock (1 tick = 40.96 TSC ticks): expiries round up, never early. */
static void test_timer_fractional_clock(void **state)
{
	struct lapic_env env = { .tsc = env_tsc };
	struct lapic *l;

	assert_int_equal(lapic_create(0, true, 1024000000ull, &env, &l), 0);
	wr(l, 0xf0, 0x1ff);
	wr(l, 0x320, 0x34);
	wr(l, 0x3e0, 0xb);
	wr(l, 0x380, 3);
	assert_int_equal(lapic_timer_deadline(l), fake_tsc + 123);       /* ceil(3 * 40.96) */
	assert_int_equal(rd(l, 0x390), 3);
	fake_tsc += 41;
	assert_int_equal(rd(l, 0x390), 2);
	lapic_destroy(l);
	assert_int_equal(lapic_create(0, true, 0, &env, &l), -EINVAL);
}

/* ---- two nodes ---- */

struct node {
	struct apicbus *bus;
	struct node *peer;
	unsigned sends_irq[2], sends_logical[2];
};

static int node_send_irq(void *opaque, uint32_t node, const struct irq_msg *m)
{
	struct node *n = opaque;

	assert_true(node < 2);
	n->sends_irq[node]++;
	apicbus_deliver_local(n->peer->bus, m);
	return 0;
}

static int node_send_logical(void *opaque, uint32_t node, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	struct node *n = opaque;

	n->sends_logical[node]++;
	apicbus_set_logical_remote(n->peer->bus, apic_id, ldr, dfr);
	return 0;
}

static void test_two_nodes(void **state)
{
	/* vCPUs 0,1 on node 0; 2,3 on node 1 (apic ids 0, 1, 8, 9). */
	static const uint32_t ids[] = { 0, 1, 8, 9 }, node_of[] = { 0, 0, 1, 1 };
	struct node nd[2];
	struct machine mc;                             /* cpu[] holds all four; each attached to its node's bus */
	struct apicbus_stats st0, st1;
	uint8_t sipi = 0;

	memset(nd, 0, sizeof(nd));
	memset(&mc, 0, sizeof(mc));
	mc.n = 4;
	for (unsigned k = 0; k < 2; k++) {
		struct apicbus_remote r = { .opaque = &nd[k], .send_irq = node_send_irq,
					    .send_logical = node_send_logical };

		nd[k].peer = &nd[1 - k];
		assert_int_equal(apicbus_create(4, ids, node_of, k, &r, &nd[k].bus), 0);
	}
	for (unsigned i = 0; i < 4; i++) {
		struct apicbus *b = nd[node_of[i]].bus;

		cpu_init(&mc.cpu[i], ids[i], i == 0, b);
		apicbus_attach(b, i, mc.cpu[i].l);
		sw_enable(mc.cpu[i].l);
	}
	mc.bus = NULL;

	/* Fixed IPI node 0 -> APIC 8 on node 1: one send. */
	ipi(mc.cpu[0].l, 8, 0x4041);
	assert_int_equal(nd[0].sends_irq[1], 1);
	assert_int_equal(took(&mc, 0x41), 0x4);
	/* NMI node 1 -> APIC 1 on node 0. */
	ipi(mc.cpu[3].l, 1, 0x4400);
	assert_int_equal(nd[1].sends_irq[0], 1);
	assert_int_equal(events_mask(&mc, LAPIC_EV_NMI, NULL), 0x2);
	/* INIT + SIPI to APIC 9. */
	ipi(mc.cpu[0].l, 9, 0xc500);
	ipi(mc.cpu[0].l, 9, 0x4620);
	assert_int_equal(nd[0].sends_irq[1], 3);
	assert_int_equal(lapic_take_events(mc.cpu[3].l, &sipi), LAPIC_EV_INIT | LAPIC_EV_SIPI);
	assert_int_equal(sipi, 0x20);
	assert_int_equal(events_mask(&mc, LAPIC_EV_INIT, NULL), 0);
	/* LDRs replicate (once per other node); a logical-flat IPI to both vCPUs of node 1 is one send. */
	for (unsigned i = 0; i < 4; i++)
		wr(mc.cpu[i].l, 0xd0, 1u << (24 + i));
	assert_int_equal(nd[0].sends_logical[1], 2);
	assert_int_equal(nd[1].sends_logical[0], 2);
	assert_int_equal(nd[0].sends_logical[0] + nd[1].sends_logical[1], 0);
	ipi(mc.cpu[1].l, 0x0c, 0x4842);
	assert_int_equal(nd[0].sends_irq[1], 4);
	assert_int_equal(took(&mc, 0x42), 0xc);
	/* Logical to one local and one remote vCPU. */
	ipi(mc.cpu[1].l, 0x09, 0x4843);
	assert_int_equal(nd[0].sends_irq[1], 5);
	assert_int_equal(took(&mc, 0x43), 0x9);
	/* Logical to local vCPUs only: no send. */
	ipi(mc.cpu[2].l, 0x0c, 0x4844);
	assert_int_equal(nd[1].sends_irq[0], 1);
	assert_int_equal(took(&mc, 0x44), 0xc);
	/* Broadcasts: physical 0xff and all-but-self, one send each. */
	ipi(mc.cpu[0].l, 0xff, 0x4045);
	assert_int_equal(nd[0].sends_irq[1], 6);
	assert_int_equal(took(&mc, 0x45), 0xf);
	ipi(mc.cpu[3].l, 0, 0xc4046);
	assert_int_equal(nd[1].sends_irq[0], 2);
	assert_int_equal(took(&mc, 0x46), 0x7);
	/* Lowest priority: one vCPU overall (APIC 1 on node 0), chosen the same on both nodes. */
	ipi(mc.cpu[3].l, 0x0e, 0x4947);
	assert_int_equal(nd[1].sends_irq[0], 3);
	assert_int_equal(took(&mc, 0x47), 0x2);
	ipi(mc.cpu[0].l, 0x0c, 0x4948);                /* APICs 8 and 9 on node 1: APIC 8 only */
	assert_int_equal(nd[0].sends_irq[1], 7);
	assert_int_equal(took(&mc, 0x48), 0x4);
	/* An LDR change on node 1 redirects node 0's next logical IPI. */
	wr(mc.cpu[2].l, 0xd0, 0x80000000);
	ipi(mc.cpu[0].l, 0x80, 0x4849);
	assert_int_equal(took(&mc, 0x49), 0x4);
	ipi(mc.cpu[0].l, 0x04, 0x484a);                /* the old LDR: nobody, nothing sent */
	assert_int_equal(nd[0].sends_irq[1], 8);
	assert_int_equal(took(&mc, 0x4a), 0);
	/* x2APIC logical across nodes needs no replication: cluster 0, bits for APICs 1 and 9. */
	to_x2apic(mc.cpu[0].l);
	to_x2apic(mc.cpu[3].l);
	msr_wr(mc.cpu[0].l, 0x830, (0x0202ull << 32) | 0x484b);
	assert_int_equal(nd[0].sends_irq[1], 9);
	assert_int_equal(took(&mc, 0x4b), 0xa);
	/* Nobody anywhere: dropped, nothing sent. */
	ipi(mc.cpu[1].l, 0x33, 0x404c);
	assert_int_equal(nd[0].sends_irq[1], 9);
	apicbus_get_stats(nd[0].bus, &st0);
	apicbus_get_stats(nd[1].bus, &st1);
	assert_int_equal(st0.sent_remote, 9);
	assert_int_equal(st1.sent_remote, 3);
	assert_int_equal(st0.received_remote, 3);
	assert_int_equal(st1.received_remote, 9);
	assert_int_equal(st0.dropped_no_dest, 2);      /* 0x4a and 0x4c */

	for (unsigned i = 0; i < 4; i++)
		lapic_destroy(mc.cpu[i].l);
	apicbus_destroy(nd[0].bus);
	apicbus_destroy(nd[1].bus);
}

static int fail_send_irq(void *opaque, uint32_t node, const struct irq_msg *m)
{
	return -EPIPE;
}

static void test_bus_errors(void **state)
{
	static const uint32_t dup[] = { 0, 1, 1 }, ids[] = { 0, 1 }, node_of[] = { 0, 1 };
	struct apicbus_remote r = { .send_irq = fail_send_irq };
	struct apicbus *b;
	struct apicbus_stats st;
	struct tcpu c;

	assert_int_equal(apicbus_create(3, dup, NULL, 0, NULL, &b), -EINVAL);
	assert_int_equal(apicbus_create(0, ids, NULL, 0, NULL, &b), -EINVAL);
	assert_int_equal(apicbus_create(2, ids, node_of, 0, &r, &b), 0);
	cpu_init(&c, 0, true, b);
	apicbus_attach(b, 0, c.l);
	apicbus_attach(b, 1, c.l);                     /* placed elsewhere: refused */
	sw_enable(c.l);
	/* A failed remote send is reported, the local part still happens. */
	assert_int_equal(apicbus_deliver(b, &(struct irq_msg){ .vector = 0x40, .dest = 0xff }), -EPIPE);
	assert_int_equal(lapic_pending_vector(c.l), 0x40);
	apicbus_get_stats(b, &st);
	assert_int_equal(st.sent_remote, 0);
	assert_int_equal(st.delivered_local, 1);
	lapic_destroy(c.l);
	apicbus_destroy(b);
}

/* ---- randomized register and message traffic ---- */

static uint32_t reg_get(struct lapic *l, uint32_t off, bool *ok)
{
	uint64_t v = 0;

	*ok = lapic_x2apic(l) ? lapic_msr_read(l, 0x800 + (off >> 4), &v) == 0
			      : lapic_mmio_enabled(l) && lapic_mmio_read(l, off, 4, &v) == 0;
	return (uint32_t)v;
}

/* Invariants that must hold whatever the guest and the bus did. */
static void check_invariants(struct lapic *l, uint32_t id)
{
	static const uint32_t lvt_off[] = { 0x2f0, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370 };
	static const uint32_t lvt_ok[] = { 0x107ff, 0x700ff, 0x107ff, 0x107ff, 0x1a7ff, 0x1a7ff, 0x100ff };
	bool ok;
	int v = lapic_pending_vector(l);
	uint32_t ppr = reg_get(l, 0xa0, &ok);

	assert_false(lapic_x2apic(l) && lapic_mmio_enabled(l));
	if (!ok) {
		/* hardware-disabled */
		assert_false(lapic_x2apic(l) || lapic_mmio_enabled(l));
		assert_int_equal(v, -1);
		assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
		return;
	}
	if (v >= 0) {
		assert_true(v >= 16);
		assert_true(((uint32_t)v & 0xf0) > (ppr & 0xf0));
	}
	assert_int_equal(reg_get(l, 0xf0, &ok) & ~0x3ffu, 0);
	for (unsigned i = 0; i < sizeof(lvt_off) / sizeof(lvt_off[0]); i++) {
		uint32_t lvt = reg_get(l, lvt_off[i], &ok);

		assert_true(ok);
		assert_int_equal(lvt & ~lvt_ok[i], 0);
		if (i == 1)
			assert_true((lvt & 0x60000) != 0x60000);
		if (!(reg_get(l, 0xf0, &ok) & 0x100))
			assert_true(lvt & 0x10000);
	}
	assert_int_equal(reg_get(l, 0x100, &ok) & 0xffff, 0);          /* vectors 0-15 never in ISR/IRR */
	assert_int_equal(reg_get(l, 0x200, &ok) & 0xffff, 0);
	assert_int_equal(reg_get(l, 0x3e0, &ok) & ~0xbu, 0);
	if (lapic_x2apic(l)) {
		assert_int_equal(reg_get(l, 0xd0, &ok), ((id >> 4) << 16) | (1u << (id & 0xf)));
		assert_int_equal(reg_get(l, 0x20, &ok), id);
	} else {
		assert_int_equal(reg_get(l, 0x20, &ok), id << 24);
		assert_int_equal(reg_get(l, 0xd0, &ok) & 0x00ffffffu, 0);
		assert_int_equal(reg_get(l, 0xe0, &ok) & 0x0fffffffu, 0x0fffffffu);
	}
}

static uint64_t rand_value(struct rng *r)
{
	switch (rng_next(r) % 4) {
	case 0:
		return rng_next(r);
	case 1:
		return rng_next(r) & 0xffffffffu;
	case 2:
		return rng_next(r) & 0x1ffff;
	default:
		return rng_next(r) & 0xff;
	}
}

static void test_random_traffic(void **state)
{
	static const uint32_t ids[] = { 0, 1, 17 };
	static const uint64_t bases[] = { 0xfee00800, 0xfee00c00, 0xfee00000, 0xfec00800, 0xfee00400 };
	struct machine mc;
	struct rng r;
	unsigned ops = 200000;

	rng_seed(&r, 0x1a91c);
	machine_init(&mc, 3, ids);
	for (unsigned n = 0; n < ops; n++) {
		unsigned who = (unsigned)(rng_next(&r) % 3);
		struct lapic *l = mc.cpu[who].l;
		uint64_t v = 0;
		int pv;

		switch (rng_next(&r) % 12) {
		case 0:
		case 1: {
			uint64_t off = rng_next(&r) % 0x400, size = 1u << (rng_next(&r) % 4);

			if (rng_next(&r) % 2)
				off &= ~0xfull;
			(void)lapic_mmio_read(l, off, (uint8_t)size, &v);
			break;
		}
		case 2:
		case 3: {
			uint64_t off = (rng_next(&r) % 0x40) << 4;

			if (off == 0x300 && rng_next(&r) % 4)
				break;                        /* keep IPIs from flooding everything */
			(void)lapic_mmio_write(l, off, 4, rand_value(&r));
			break;
		}
		case 4:
			(void)lapic_msr_read(l, 0x800 + (uint32_t)(rng_next(&r) % 0x100), &v);
			break;
		case 5:
			(void)lapic_msr_write(l, 0x800 + (uint32_t)(rng_next(&r) % 0x40), rand_value(&r));
			break;
		case 6:
			if (rng_next(&r) % 8 == 0)
				(void)lapic_msr_write(l, MSR_IA32_APICBASE, bases[rng_next(&r) % 5]);
			else
				(void)lapic_msr_write(l, MSR_IA32_TSC_DEADLINE, fake_tsc + rng_next(&r) % 100000);
			break;
		case 7: {
			struct irq_msg m = {
				.vector = (uint8_t)rng_next(&r), .delivery = (uint8_t)(rng_next(&r) % 8),
				.shorthand = (uint8_t)(rng_next(&r) % 4), .logical = rng_next(&r) % 2,
				.level = rng_next(&r) % 2, .trigger_level = rng_next(&r) % 2,
				.x2apic = rng_next(&r) % 2, .dest = (uint32_t)rand_value(&r), .source = ids[who],
			};

			(void)apicbus_deliver(mc.bus, &m);
			break;
		}
		case 8:
		case 9:
			pv = lapic_pending_vector(l);
			if (pv >= 0)
				lapic_ack(l, (uint8_t)pv);
			break;
		case 10:
			if (lapic_x2apic(l))
				(void)lapic_msr_write(l, 0x80b, 0);
			else if (lapic_mmio_enabled(l))
				(void)lapic_mmio_write(l, 0xb0, 4, 0);
			break;
		default:
			fake_tsc += rng_next(&r) % 50000;
			lapic_timer_tick(l, fake_tsc);
			if (rng_next(&r) % 64 == 0)
				lapic_reset(l, who == 0);
			(void)lapic_take_events(l, NULL);
			break;
		}
		check_invariants(l, ids[who]);
	}
	machine_fini(&mc);
}

/* ---- concurrency ---- */

#define CONC_PER_SENDER 100000
#define CONC_VECTORS 16                            /* per sender: together all 32 bits of IRR word 2 */

struct conc {
	struct machine mc;
	_Atomic bool outstanding[256];
	_Atomic bool stop;
	uint64_t deadline_ns;
	unsigned sent[2];
};

struct conc_sender {
	struct conc *cc;
	unsigned idx;
};

static void *conc_send(void *arg)
{
	struct conc_sender *s = arg;
	struct conc *cc = s->cc;
	struct lapic *l = cc->mc.cpu[s->idx].l;
	unsigned k = 0;

	while (cc->sent[s->idx] < CONC_PER_SENDER && !atomic_load(&cc->stop)) {
		uint8_t v = (uint8_t)(0x40 + 2 * (k % CONC_VECTORS) + s->idx);

		k++;
		if (atomic_load(&cc->outstanding[v])) {
			if (k % CONC_VECTORS == 0)
				sched_yield();
			continue;
		}
		atomic_store(&cc->outstanding[v], true);
		/* The ICR is this thread's lapic's; the bus delivers into the target from this thread. */
		if (lapic_mmio_write(l, 0x300, 4, 0x4000 | v) != 0)
			break;
		cc->sent[s->idx]++;
	}
	return NULL;
}

static void test_concurrent_ipis(void **state)
{
	static const uint32_t ids[] = { 0, 1, 2 };
	struct conc *cc = calloc(1, sizeof(*cc));
	struct conc_sender snd[2];
	pthread_t th[2];
	unsigned got[256] = { 0 }, total = 0, per_sender[2] = { 0 };
	struct lapic *t;
	uint64_t start = clock_now_ns();

	assert_non_null(cc);
	machine_init(&cc->mc, 3, ids);
	t = cc->mc.cpu[2].l;
	cc->deadline_ns = start + 120 * NSEC_PER_SEC;
	wr(cc->mc.cpu[0].l, 0x310, 2u << 24);
	wr(cc->mc.cpu[1].l, 0x310, 2u << 24);
	for (unsigned i = 0; i < 2; i++) {
		snd[i] = (struct conc_sender){ .cc = cc, .idx = i };
		assert_int_equal(pthread_create(&th[i], NULL, conc_send, &snd[i]), 0);
	}
	/* The owner: take, count, release the vector to its sender, EOI. Stop at the exact total or the deadline. */
	while (total < 2 * CONC_PER_SENDER && clock_now_ns() < cc->deadline_ns) {
		int v = lapic_pending_vector(t);

		if (v < 0) {
			sched_yield();
			continue;
		}
		lapic_ack(t, (uint8_t)v);
		got[v]++;
		total++;
		atomic_store(&cc->outstanding[v], false);
		wr(t, 0xb0, 0);
	}
	atomic_store(&cc->stop, true);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	print_message("concurrent IPIs: %u taken in %.2f s\n", total, (clock_now_ns() - start) / 1e9);
	for (unsigned v = 0; v < 256; v++)
		if (got[v])
			per_sender[v & 1] += got[v];
	assert_int_equal(cc->sent[0], CONC_PER_SENDER);
	assert_int_equal(cc->sent[1], CONC_PER_SENDER);
	assert_int_equal(per_sender[0], CONC_PER_SENDER);
	assert_int_equal(per_sender[1], CONC_PER_SENDER);
	assert_int_equal(total, 2 * CONC_PER_SENDER);
	assert_int_equal(lapic_pending_vector(t), -1);
	assert_int_equal(rd(t, 0x100 + 0x20), 0);
	machine_fini(&cc->mc);
	free(cc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_reset_state, setup),
		cmocka_unit_test_setup(test_xapic_registers, setup),
		cmocka_unit_test_setup(test_esr, setup),
		cmocka_unit_test_setup(test_svr_disable, setup),
		cmocka_unit_test_setup(test_x2apic_registers, setup),
		cmocka_unit_test_setup(test_apicbase_transitions, setup),
		cmocka_unit_test_setup(test_ipi_physical, setup),
		cmocka_unit_test_setup(test_ipi_logical_flat, setup),
		cmocka_unit_test_setup(test_ipi_logical_cluster, setup),
		cmocka_unit_test_setup(test_ipi_x2apic_logical, setup),
		cmocka_unit_test_setup(test_ipi_shorthands, setup),
		cmocka_unit_test_setup(test_ipi_lowest_priority, setup),
		cmocka_unit_test_setup(test_ipi_nmi_init_sipi, setup),
		cmocka_unit_test_setup(test_priority_and_eoi_order, setup),
		cmocka_unit_test_setup(test_level_eoi, setup),
		cmocka_unit_test_setup(test_timer_oneshot_divide, setup),
		cmocka_unit_test_setup(test_timer_periodic, setup),
		cmocka_unit_test_setup(test_timer_tsc_deadline, setup),
		cmocka_unit_test_setup(test_timer_fractional_clock, setup),
		cmocka_unit_test_setup(test_two_nodes, setup),
		cmocka_unit_test_setup(test_bus_errors, setup),
		cmocka_unit_test_setup(test_random_traffic, setup),
		cmocka_unit_test_setup(test_concurrent_ipis, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
