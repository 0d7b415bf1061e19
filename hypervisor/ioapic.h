/* SPDX-License-Identifier: MIT */
/*
 * I/O APIC (82093AA-style register interface, version 0x20: 24 pins, directed-EOI register).
 *
 * MMIO at 0xfec00000 (one 4 KiB page): IOREGSEL at +0x00, IOWIN at +0x10, EOI at +0x40. Registers through
 * IOWIN: 0x00 ID (bits 27:24), 0x01 version (0x00170020: max redirection entry 23, version 0x20), 0x02
 * arbitration id, 0x10 + 2n / 0x11 + 2n the low / high dword of redirection entry n.
 *
 * Created explicitly by vm.c (not from the device table) because the VM routes irq_set() into it. Output: every
 * interrupt becomes one struct irq_msg passed to svc->deliver, called WITHOUT the IOAPIC's lock held (so a
 * LAPIC's EOI path may call ioapic_eoi from inside lapic code that holds its own lock, and deliver may take
 * LAPIC locks). ioapic_set_irq and ioapic_eoi may be called from any thread.
 *
 * Line levels are logical (1 = asserted), as in KVM and QEMU: the polarity bit is stored, not applied (ISA
 * lines are active-high; nothing in this machine drives an active-low pin).
 */
#ifndef RACKVM_HYPERVISOR_IOAPIC_H
#define RACKVM_HYPERVISOR_IOAPIC_H

#include <stdint.h>

#include "hypervisor/bus.h"

#define IOAPIC_BASE 0xfec00000ull
#define IOAPIC_SIZE 0x1000ull
#define IOAPIC_NUM_PINS 24
/* The IOAPIC's id at reset (what the MADT's IO APIC entry must announce; QEMU uses 0 as well). */
#define IOAPIC_DEFAULT_ID 0

struct ioapic;

int ioapic_create(struct bus *b, const struct vm_services *svc, struct ioapic **out);
void ioapic_destroy(struct ioapic *io);
/* Set the level of input pin gsi (0..23; others are ignored): edge pins deliver on 0->1 if unmasked (an edge on a
 * masked pin is lost, as the 82093AA datasheet says); level pins deliver while asserted, unmasked and remote IRR
 * is clear, and then set remote IRR. */
void ioapic_set_irq(struct ioapic *io, unsigned gsi, int level);
/* A local APIC EOI'd a level-triggered `vector` (or the guest wrote the EOI register): clear remote IRR of every
 * level pin with that vector and deliver again those still asserted. */
void ioapic_eoi(struct ioapic *io, uint8_t vector);

#endif
