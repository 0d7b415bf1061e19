/* SPDX-License-Identifier: MIT */
/*
 * Interrupt messages and their routing ("APIC bus").
 *
 * Every interrupt in the machine — an IPI written to a local APIC's ICR, an IOAPIC redirection, an MSI — becomes
 * one struct irq_msg handed to apicbus_deliver(). The APIC bus resolves the destination against every vCPU of the
 * guest: local vCPUs get lapic_accept() at once; for vCPUs placed on other nodes the bus calls the remote hook once
 * per destination node with the same message (issue 5: the cluster layer sends it there, the receiving node calls
 * apicbus_deliver_local()). No node relays for another: the sender's node resolves and sends directly.
 *
 * Logical destinations need each APIC's LDR (and DFR in xAPIC). x2APIC LDRs derive from the APIC id; xAPIC LDR/DFR
 * are written by software, so every LDR/DFR write is published to the bus (apicbus_set_logical), which replicates
 * it to the other nodes through the same hook (rare: once per CPU at boot). Resolution is then purely local.
 */
#ifndef RACKVM_HYPERVISOR_IRQ_H
#define RACKVM_HYPERVISOR_IRQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum irq_delivery {
	IRQ_FIXED = 0, IRQ_LOWEST = 1, IRQ_SMI = 2, IRQ_NMI = 4, IRQ_INIT = 5, IRQ_SIPI = 6, IRQ_EXTINT = 7,
};

enum irq_shorthand { IRQ_SH_NONE = 0, IRQ_SH_SELF = 1, IRQ_SH_ALL = 2, IRQ_SH_OTHERS = 3 };

struct irq_msg {
	uint8_t vector;
	uint8_t delivery;     /* enum irq_delivery */
	uint8_t shorthand;    /* enum irq_shorthand */
	bool logical;         /* destination mode */
	bool level;           /* ICR level bit (INIT level de-assert has level=0) */
	bool trigger_level;   /* level-triggered (needs EOI broadcast to the IOAPIC) */
	bool x2apic;          /* dest is a 32-bit x2APIC id / logical id; else 8-bit xAPIC */
	uint32_t dest;
	uint32_t source;      /* sender's APIC id (for SELF/OTHERS shorthands); ~0u for IOAPIC/MSI */
};

struct lapic;
struct apicbus;

/* Called by the bus for every destination node other than this one (issue 5); NULL = single node. */
struct apicbus_remote {
	void *opaque;
	int (*send_irq)(void *opaque, uint32_t node, const struct irq_msg *m);
	int (*send_logical)(void *opaque, uint32_t node, uint32_t apic_id, uint32_t ldr, uint32_t dfr);
};

/* n_cpus: guest vCPUs; apic_ids/node_of: per global vCPU index; self: this node's id. */
int apicbus_create(unsigned n_cpus, const uint32_t *apic_ids, const uint32_t *node_of, uint32_t self,
		   const struct apicbus_remote *remote, struct apicbus **out);
void apicbus_destroy(struct apicbus *b);
/* Attach the local APIC of a vCPU placed on this node. */
void apicbus_attach(struct apicbus *b, unsigned vcpu, struct lapic *l);
/* Route a message from any source on this node. 0, or -errno if a remote send failed (the message may have
 * reached some destinations). Messages that match nobody are dropped and counted (as hardware does). */
int apicbus_deliver(struct apicbus *b, const struct irq_msg *m);
/* A message that arrived from another node: deliver to matching local vCPUs only. */
void apicbus_deliver_local(struct apicbus *b, const struct irq_msg *m);
/* A local APIC's LDR/DFR changed (called by lapic.c); replicated to other nodes. */
void apicbus_set_logical(struct apicbus *b, uint32_t apic_id, uint32_t ldr, uint32_t dfr);
/* Replicated LDR/DFR from another node. */
void apicbus_set_logical_remote(struct apicbus *b, uint32_t apic_id, uint32_t ldr, uint32_t dfr);

struct apicbus_stats {
	uint64_t delivered_local, sent_remote, received_remote, dropped_no_dest;
};
void apicbus_get_stats(struct apicbus *b, struct apicbus_stats *out);

#endif
