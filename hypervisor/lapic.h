/* SPDX-License-Identifier: MIT */
/*
 * Local APIC of one vCPU, in user space: xAPIC (MMIO page at IA32_APIC_BASE, default 0xfee00000) and x2APIC (MSRs
 * 0x800-0x8ff), fixed/NMI/INIT/SIPI IPIs with physical and logical destinations and shorthands, and the timer in
 * one-shot, periodic and TSC-deadline modes.
 *
 * Ownership: the vCPU thread owns its lapic and is the only caller of the register, inject and timer functions.
 * lapic_accept() is called from any thread (another local vCPU's ICR write, the IOAPIC, the cluster receive
 * thread): it sets IRR/pending-event bits with atomics/under the lapic's small lock and calls env->kick so a
 * running or halted vCPU notices.
 */
#ifndef RACKVM_HYPERVISOR_LAPIC_H
#define RACKVM_HYPERVISOR_LAPIC_H

#include <stdbool.h>
#include <stdint.h>

#include "hypervisor/irq.h"

#define LAPIC_DEFAULT_BASE 0xfee00000ull
#define MSR_IA32_APICBASE 0x1b
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_X2APIC_FIRST 0x800
#define MSR_X2APIC_LAST 0x8ff
/* The APIC timer's input clock (the "core crystal"): CPUID 0x15 reports ECX = LAPIC_TIMER_HZ and
 * EBX/EAX = tsc_hz / LAPIC_TIMER_HZ, so guests can calibrate without a PIT. */
#define LAPIC_TIMER_HZ 25000000ull

struct lapic;

struct lapic_env {
	void *opaque;
	/* An ICR write: route the message (apicbus_deliver). */
	int (*send)(void *opaque, const struct irq_msg *m);
	/* EOI of a level-triggered vector: tell the IOAPIC (remote-IRR). */
	void (*eoi_level)(void *opaque, uint8_t vector);
	/* Something became pending for this vCPU (interrupt, NMI, INIT, SIPI): wake/kick its thread. Any thread. */
	void (*kick)(void *opaque);
	/* Guest TSC now (the timer counts in TSC ticks / bus clock derived from it). */
	uint64_t (*tsc)(void *opaque);
	/* LDR/DFR changed (apicbus_set_logical). */
	void (*logical_changed)(void *opaque, uint32_t apic_id, uint32_t ldr, uint32_t dfr);
};

/* tsc_hz: guest TSC frequency; the APIC timer's bus clock is derived from it (documented in lapic.c). */
int lapic_create(uint32_t apic_id, bool bsp, uint64_t tsc_hz, const struct lapic_env *env, struct lapic **out);
void lapic_destroy(struct lapic *l);
/* INIT/RESET state (what INIT does to the APIC, keeping the id and base). */
void lapic_reset(struct lapic *l, bool bsp);

uint64_t lapic_base(const struct lapic *l);          /* current MMIO base (IA32_APIC_BASE & ~0xfff) */
bool lapic_mmio_enabled(const struct lapic *l);      /* xAPIC mode: the MMIO page decodes */
bool lapic_x2apic(const struct lapic *l);

/* Register access. 0, or -EINVAL (-> #GP for MSRs; reported for MMIO) for a reserved/illegal access. */
int lapic_mmio_read(struct lapic *l, uint64_t offset, uint8_t size, uint64_t *val);
int lapic_mmio_write(struct lapic *l, uint64_t offset, uint8_t size, uint64_t val);
/* MSR_IA32_APICBASE, MSR_IA32_TSC_DEADLINE and 0x800-0x8ff. -ENOENT: not an APIC MSR. */
int lapic_msr_read(struct lapic *l, uint32_t msr, uint64_t *val);
int lapic_msr_write(struct lapic *l, uint32_t msr, uint64_t val);

/* Destination match for a message (physical/logical/shorthand, x2APIC or xAPIC). */
bool lapic_match(const struct lapic *l, const struct irq_msg *m);
/* Take an interrupt for this APIC (already matched). Any thread. */
void lapic_accept(struct lapic *l, const struct irq_msg *m);

/* Pending events, consumed by the vCPU thread. */
enum lapic_event { LAPIC_EV_NONE = 0, LAPIC_EV_INIT = 1, LAPIC_EV_SIPI = 2, LAPIC_EV_NMI = 4 };
/* Returns and clears pending INIT/SIPI/NMI bits; *sipi_vector gets the latest SIPI vector. */
unsigned lapic_take_events(struct lapic *l, uint8_t *sipi_vector);
/* Highest-priority fixed interrupt deliverable now (above PPR), or -1. */
int lapic_pending_vector(struct lapic *l);
/* The vCPU took `vector` (the accelerator injected it): IRR -> ISR. */
void lapic_ack(struct lapic *l, uint8_t vector);
bool lapic_has_work(struct lapic *l);                 /* pending vector or event: a halted vCPU must wake */

/* Timer. Next deadline in guest TSC ticks (UINT64_MAX = none); the vCPU thread arms a host timer for it and
 * calls lapic_timer_tick(now) when it passes (a late call is fine: periodic mode catches up by one period). */
uint64_t lapic_timer_deadline(struct lapic *l);
void lapic_timer_tick(struct lapic *l, uint64_t now_tsc);

#endif
