/* SPDX-License-Identifier: MIT */
/*
 * 8259A PIC pair: master 0x20/0x21, slave 0xa0/0xa1, edge/level control registers (ELCR) 0x4d0/0x4d1.
 *
 * This machine routes every interrupt through the IOAPIC; the PICs are register models only and never deliver
 * (no input line is connected, so IRR and ISR stay 0 and there is no INTR output). Guests find the MADT's
 * PCAT_COMPAT flag and mask them (Linux does, as does our SDK with 0xff to 0x21 and 0xa1). What is modelled is
 * everything such guests write and read back: the ICW1-ICW4 initialisation sequence (ICW3 only in cascade mode,
 * ICW4 only if ICW1 asks for it), OCW1 (IMR, read back on the odd port), OCW2 (EOIs, rotation, priority — they
 * clear ISR bits and move the lowest priority), OCW3 (read IRR/ISR on the even port, poll, special mask mode),
 * and the ELCR with QEMU's masks of pins that cannot be level-triggered (master 0xf8, slave 0xde).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "hypervisor/bus.h"

struct pic_chip {
	uint8_t irr, isr, imr;
	uint8_t vector_base;        /* ICW2 & 0xf8 */
	uint8_t icw3, icw4;
	uint8_t init_state;         /* 0 ready; 2, 3, 4: expecting ICW2, ICW3, ICW4 */
	bool single, need_icw4;
	bool read_isr, poll, special_mask, rotate_on_aeoi;
	uint8_t priority_add;       /* the lowest-priority IRQ is priority_add - 1 (mod 8) */
	uint8_t elcr, elcr_mask;
};

struct pic {
	pthread_mutex_t lock;
	struct pic_chip chip[2];
};

static void chip_reset(struct pic_chip *c)
{
	uint8_t elcr = c->elcr, mask = c->elcr_mask;

	*c = (struct pic_chip){ .elcr = elcr, .elcr_mask = mask };
}

/* Highest-priority bit set in `bits`, as an IRQ number, or -1. */
static int chip_highest(const struct pic_chip *c, uint8_t bits)
{
	for (int p = 0; p < 8; p++) {
		int irq = (p + c->priority_add) & 7;

		if (bits & (1u << irq))
			return irq;
	}
	return -1;
}

static void chip_write_cmd(struct pic_chip *c, uint8_t v)
{
	if (v & 0x10) { /* ICW1 */
		chip_reset(c);
		c->need_icw4 = v & 0x01;
		c->single = v & 0x02;
		c->init_state = 2;
		return;
	}
	if (v & 0x08) { /* OCW3 */
		if (v & 0x02)
			c->read_isr = v & 0x01;
		c->poll = v & 0x04;
		if (v & 0x40)
			c->special_mask = v & 0x20;
		return;
	}
	/* OCW2: bits 7:5 = R, SL, EOI; bits 2:0 = level */
	int irq;

	switch (v >> 5) {
	case 0: /* rotate in AEOI mode: clear */
	case 4: /* rotate in AEOI mode: set */
		c->rotate_on_aeoi = v >> 7;
		break;
	case 1: /* non-specific EOI */
	case 5: /* rotate on non-specific EOI */
		irq = chip_highest(c, c->isr);
		if (irq >= 0) {
			c->isr &= (uint8_t)~(1u << irq);
			if (v & 0x80)
				c->priority_add = (uint8_t)((irq + 1) & 7);
		}
		break;
	case 3: /* specific EOI */
	case 7: /* rotate on specific EOI */
		c->isr &= (uint8_t)~(1u << (v & 7));
		if (v & 0x80)
			c->priority_add = (uint8_t)(((v & 7) + 1) & 7);
		break;
	case 6: /* set priority */
		c->priority_add = (uint8_t)(((v & 7) + 1) & 7);
		break;
	default: /* 2: no operation */
		break;
	}
}

static void chip_write_data(struct pic_chip *c, uint8_t v)
{
	switch (c->init_state) {
	case 2:
		c->vector_base = v & 0xf8;
		c->init_state = c->single ? (c->need_icw4 ? 4 : 0) : 3;
		break;
	case 3:
		c->icw3 = v;
		c->init_state = c->need_icw4 ? 4 : 0;
		break;
	case 4:
		c->icw4 = v;
		c->init_state = 0;
		break;
	default:
		c->imr = v;
		break;
	}
}

static uint8_t chip_read(struct pic_chip *c, unsigned port)
{
	if (c->poll) {
		int irq = chip_highest(c, c->irr & (uint8_t)~c->imr);

		c->poll = false;
		return irq < 0 ? 0 : (uint8_t)(0x80 | irq);
	}
	if (port & 1)
		return c->imr;
	return c->read_isr ? c->isr : c->irr;
}

static int pic_io(void *opaque, struct io_access *a)
{
	struct pic *p = opaque;
	struct pic_chip *c = &p->chip[a->addr >= 0xa0];

	pthread_mutex_lock(&p->lock);
	if (!a->write)
		a->data = chip_read(c, (unsigned)a->offset);
	else if (a->offset == 0)
		chip_write_cmd(c, (uint8_t)a->data);
	else
		chip_write_data(c, (uint8_t)a->data);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static int pic_elcr_io(void *opaque, struct io_access *a)
{
	struct pic *p = opaque;
	struct pic_chip *c = &p->chip[a->offset != 0];

	pthread_mutex_lock(&p->lock);
	if (a->write)
		c->elcr = (uint8_t)a->data & c->elcr_mask;
	else
		a->data = c->elcr;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static int pic_create(struct bus *b, const struct machine_desc *m, const struct vm_services *svc, void **state)
{
	struct pic *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	p->chip[0].elcr_mask = 0xf8;
	p->chip[1].elcr_mask = 0xde;
	r = bus_claim(b, BUS_PIO, 0x20, 2, "pic-master", pic_io, p);
	if (!r)
		r = bus_claim(b, BUS_PIO, 0xa0, 2, "pic-slave", pic_io, p);
	if (!r)
		r = bus_claim(b, BUS_PIO, 0x4d0, 2, "elcr", pic_elcr_io, p);
	if (r) {
		pthread_mutex_destroy(&p->lock);
		free(p);
		return r;
	}
	*state = p;
	return 0;
}

static void pic_destroy(void *state)
{
	struct pic *p = state;

	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static const struct device_type pic_type = {
	.name = "pic",
	.create = pic_create,
	.destroy = pic_destroy,
};
DEVICE_REGISTER(pic_type)
