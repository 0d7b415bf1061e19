/* SPDX-License-Identifier: MIT */
/*
 * I/O APIC (contract in ioapic.h). Redirection entry bits: 7:0 vector, 10:8 delivery mode, 11 destination mode
 * (1 logical), 12 delivery status (RO, always 0: delivery is synchronous), 13 polarity, 14 remote IRR (RO), 15
 * trigger mode (1 level), 16 mask, 63:56 destination (8-bit xAPIC id or logical set). Entries reset masked.
 *
 * IOREGSEL takes any access size (QEMU); IOWIN and EOI only 32-bit accesses (others are ignored, reads give 0),
 * as do other offsets of the page.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "hypervisor/ioapic.h"
#include "util/log.h"

#define IOAPIC_REG_SEL 0x00
#define IOAPIC_REG_WIN 0x10
#define IOAPIC_REG_EOI 0x40
#define IOAPIC_VERSION 0x20

#define RTE_VECTOR 0xffull
#define RTE_DELIVERY_SHIFT 8
#define RTE_LOGICAL (1ull << 11)
#define RTE_DELIVERY_STATUS (1ull << 12)
#define RTE_POLARITY (1ull << 13)
#define RTE_REMOTE_IRR (1ull << 14)
#define RTE_LEVEL (1ull << 15)
#define RTE_MASK (1ull << 16)
#define RTE_DEST_SHIFT 56
#define RTE_RO_BITS (RTE_DELIVERY_STATUS | RTE_REMOTE_IRR)
/* writable bits: low dword except RO bits, high dword's destination byte */
#define RTE_WRITABLE (0x1ffffull & ~RTE_RO_BITS)

struct ioapic {
	pthread_mutex_t lock;
	const struct vm_services *svc;
	uint32_t regsel;
	uint32_t id;                /* bits 27:24 of the ID register */
	uint64_t rte[IOAPIC_NUM_PINS];
	uint32_t lines;             /* current input levels */
};

struct ioapic_out {
	struct irq_msg m[IOAPIC_NUM_PINS];
	unsigned n;
};

static void rte_to_msg(uint64_t rte, struct irq_msg *m)
{
	*m = (struct irq_msg){
		.vector = (uint8_t)(rte & RTE_VECTOR),
		.delivery = (uint8_t)((rte >> RTE_DELIVERY_SHIFT) & 7),
		.shorthand = IRQ_SH_NONE,
		.logical = rte & RTE_LOGICAL,
		.level = true,
		.trigger_level = rte & RTE_LEVEL,
		.x2apic = false,
		.dest = (uint32_t)(rte >> RTE_DEST_SHIFT),
		.source = ~0u,
	};
}

/* Pin `pin` should fire now if level-triggered, asserted, unmasked and not awaiting EOI. Lock held. */
static void ioapic_service_level(struct ioapic *io, unsigned pin, struct ioapic_out *out)
{
	uint64_t *rte = &io->rte[pin];

	if (!(*rte & RTE_LEVEL) || (*rte & (RTE_MASK | RTE_REMOTE_IRR)) || !(io->lines & (1u << pin)))
		return;
	*rte |= RTE_REMOTE_IRR;
	rte_to_msg(*rte, &out->m[out->n++]);
}

static void ioapic_flush(struct ioapic *io, const struct ioapic_out *out)
{
	for (unsigned i = 0; i < out->n; i++) {
		int r;

		pr_debug("ioapic: vector 0x%02x dest 0x%x%s mode %u %s", out->m[i].vector, out->m[i].dest,
			 out->m[i].logical ? " logical" : "", out->m[i].delivery,
			 out->m[i].trigger_level ? "level" : "edge");
		r = io->svc->deliver(io->svc->opaque, &out->m[i]);

		if (r)
			pr_warn("ioapic: delivery of vector %u failed: %d", out->m[i].vector, r);
	}
}

void ioapic_set_irq(struct ioapic *io, unsigned gsi, int level)
{
	struct ioapic_out out = { .n = 0 };
	uint32_t bit;
	bool rising;

	if (!io || gsi >= IOAPIC_NUM_PINS)
		return;
	bit = 1u << gsi;
	pthread_mutex_lock(&io->lock);
	rising = level && !(io->lines & bit);
	if (level)
		io->lines |= bit;
	else
		io->lines &= ~bit;
	if (io->rte[gsi] & RTE_LEVEL) {
		ioapic_service_level(io, gsi, &out);
	} else if (rising && !(io->rte[gsi] & RTE_MASK)) {
		rte_to_msg(io->rte[gsi], &out.m[out.n++]);
	}
	pthread_mutex_unlock(&io->lock);
	ioapic_flush(io, &out);
}

void ioapic_eoi(struct ioapic *io, uint8_t vector)
{
	struct ioapic_out out = { .n = 0 };

	if (!io)
		return;
	pr_debug("ioapic: EOI vector 0x%02x", vector);
	pthread_mutex_lock(&io->lock);
	for (unsigned pin = 0; pin < IOAPIC_NUM_PINS; pin++) {
		uint64_t *rte = &io->rte[pin];

		if ((*rte & RTE_VECTOR) != vector || !(*rte & RTE_LEVEL) || !(*rte & RTE_REMOTE_IRR))
			continue;
		*rte &= ~RTE_REMOTE_IRR;
		ioapic_service_level(io, pin, &out);
	}
	pthread_mutex_unlock(&io->lock);
	ioapic_flush(io, &out);
}

static uint32_t ioapic_read_win(struct ioapic *io)
{
	unsigned sel = io->regsel & 0xff;

	switch (sel) {
	case 0x00:
		return io->id << 24;
	case 0x01:
		return ((IOAPIC_NUM_PINS - 1) << 16) | IOAPIC_VERSION;
	case 0x02:
		return io->id << 24; /* arbitration id: loaded from the ID */
	default:
		if (sel >= 0x10 && sel < 0x10 + 2 * IOAPIC_NUM_PINS) {
			uint64_t rte = io->rte[(sel - 0x10) / 2];

			return (sel & 1) ? (uint32_t)(rte >> 32) : (uint32_t)rte;
		}
		return 0;
	}
}

static void ioapic_write_win(struct ioapic *io, uint32_t v, struct ioapic_out *out)
{
	unsigned sel = io->regsel & 0xff, pin;
	uint64_t *rte;

	if (sel == 0x00) {
		io->id = (v >> 24) & 0x0f;
		return;
	}
	if (sel < 0x10 || sel >= 0x10 + 2 * IOAPIC_NUM_PINS)
		return; /* version, arbitration and reserved registers are read-only */
	pin = (sel - 0x10) / 2;
	rte = &io->rte[pin];
	if (sel & 1) {
		*rte = (*rte & 0x00ffffffffffffffull) | ((uint64_t)(v & 0xff000000u) << 32);
		return;
	}
	*rte = (*rte & ~RTE_WRITABLE) | (v & RTE_WRITABLE);
	if (!(*rte & RTE_LEVEL))
		*rte &= ~RTE_REMOTE_IRR; /* an edge pin has no EOI to wait for (QEMU does the same) */
	ioapic_service_level(io, pin, out);
}

static int ioapic_mmio(void *opaque, struct io_access *a)
{
	struct ioapic *io = opaque;
	struct ioapic_out out = { .n = 0 };
	uint8_t eoi_vector = 0;
	bool eoi = false;

	pthread_mutex_lock(&io->lock);
	if (a->offset == IOAPIC_REG_SEL) {
		if (a->write)
			io->regsel = (uint32_t)a->data & 0xff;
		else
			a->data = io->regsel;
	} else if (a->offset == IOAPIC_REG_WIN && a->size == 4) {
		if (a->write)
			ioapic_write_win(io, (uint32_t)a->data, &out);
		else
			a->data = ioapic_read_win(io);
	} else if (a->offset == IOAPIC_REG_EOI && a->size == 4 && a->write) {
		eoi = true;
		eoi_vector = (uint8_t)a->data;
	} else if (!a->write) {
		a->data = 0;
	}
	pthread_mutex_unlock(&io->lock);
	ioapic_flush(io, &out);
	if (eoi)
		ioapic_eoi(io, eoi_vector);
	return 0;
}

int ioapic_create(struct bus *b, const struct vm_services *svc, struct ioapic **out)
{
	struct ioapic *io = calloc(1, sizeof(*io));
	int r;

	if (!io)
		return -ENOMEM;
	pthread_mutex_init(&io->lock, NULL);
	io->svc = svc;
	io->id = IOAPIC_DEFAULT_ID;
	for (unsigned i = 0; i < IOAPIC_NUM_PINS; i++)
		io->rte[i] = RTE_MASK;
	r = bus_claim(b, BUS_MMIO, IOAPIC_BASE, IOAPIC_SIZE, "ioapic", ioapic_mmio, io);
	if (r) {
		pthread_mutex_destroy(&io->lock);
		free(io);
		return r;
	}
	*out = io;
	return 0;
}

void ioapic_destroy(struct ioapic *io)
{
	if (!io)
		return;
	pthread_mutex_destroy(&io->lock);
	free(io);
}
