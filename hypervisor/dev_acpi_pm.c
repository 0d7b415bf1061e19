/* SPDX-License-Identifier: MIT */
/*
 * ACPI fixed-hardware power management block, at the ports the FADT announces (hypervisor/acpi.c): PM1a event
 * block 0x600 (PM1_STS at +0, PM1_EN at +2), PM1a control 0x604, PM timer 0x608 (32-bit: FADT TMR_VAL_EXT).
 *
 *   - PM timer: 3.579545 MHz, free-running, a pure function of svc->now_ns (the same clock as the PIT, so a guest
 *     that checks one against the other sees the right ratio; and, like the guest TSC, the same on every node
 *     process). Read-only. So a vCPU on a node without the devices reads it locally (bus_local_read), not through
 *     the io node: Linux reads it thousands of times while it boots.
 *   - PM1_STS: write 1 to clear; no event ever sets a bit (no power/sleep button, no RTC alarm, TMR_STS not
 *     modelled), so SCI (ISA IRQ 9 / GSI 9) is never raised. PM1_EN: stored.
 *   - PM1_CNT: SCI_EN reads 1 (the FADT has SMI_CMD 0: the machine is always in ACPI mode). SLP_EN with SLP_TYP 0
 *     — the DSDT's \_S5 — asks the VMM to stop with status 0 (power off, as QEMU exits 0); other sleep types are
 *     not supported (logged, ignored). SLP_EN reads 0.
 * Registers are byte-addressable (ACPI allows narrower accesses of the blocks); each byte behaves as part of its
 * 16/32-bit register.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "hypervisor/bus.h"
#include "util/log.h"

#define ACPI_PM_PORT 0x600
#define ACPI_PM_LEN 12
#define PM_TMR_HZ 3579545ull
#define CNT_SCI_EN 0x0001
#define CNT_SLP_TYP_SHIFT 10
#define CNT_SLP_EN 0x2000

struct acpi_pm {
	pthread_mutex_t lock;
	const struct vm_services *svc;
	uint16_t sts, en, cnt;
};

static uint32_t pm_timer_at(uint64_t ns)
{
	return (uint32_t)((unsigned __int128)ns * PM_TMR_HZ / 1000000000ull);
}

static uint32_t pm_timer(struct acpi_pm *p)
{
	return pm_timer_at(p->svc->now_ns(p->svc->opaque));
}

bool bus_local_read(enum bus_space space, struct io_access *a, uint64_t now_ns)
{
	uint32_t tmr;

	if (space != BUS_PIO || a->write || a->size > 4 || a->addr < ACPI_PM_PORT + 8 ||
	    a->addr + a->size > ACPI_PM_PORT + ACPI_PM_LEN)
		return false;
	tmr = pm_timer_at(now_ns);
	a->data = (tmr >> (8 * (a->addr - ACPI_PM_PORT - 8))) & (a->size == 4 ? 0xffffffffu : (1u << (8 * a->size)) - 1);
	return true;
}

static uint8_t pm_read_byte(struct acpi_pm *p, unsigned off, uint32_t tmr)
{
	switch (off) {
	case 0: case 1:
		return (uint8_t)(p->sts >> (8 * (off & 1)));
	case 2: case 3:
		return (uint8_t)(p->en >> (8 * (off & 1)));
	case 4: case 5:
		return (uint8_t)((p->cnt | CNT_SCI_EN) >> (8 * (off & 1)));
	case 8: case 9: case 10: case 11:
		return (uint8_t)(tmr >> (8 * (off - 8)));
	default:
		return 0xff; /* 6-7: outside the PM1a control block */
	}
}

/* Returns true when this byte set SLP_EN. */
static bool pm_write_byte(struct acpi_pm *p, unsigned off, uint8_t v)
{
	unsigned sh = 8 * (off & 1);

	switch (off) {
	case 0: case 1:
		p->sts &= (uint16_t)~(v << sh);
		return false;
	case 2: case 3:
		p->en = (uint16_t)((p->en & ~(0xff << sh)) | (v << sh));
		return false;
	case 4: case 5:
		p->cnt = (uint16_t)((p->cnt & ~(0xff << sh)) | (v << sh));
		if (p->cnt & CNT_SLP_EN) {
			p->cnt &= (uint16_t)~CNT_SLP_EN;
			return true;
		}
		return false;
	default:
		return false; /* the timer is read-only */
	}
}

static int acpi_pm_io(void *opaque, struct io_access *a)
{
	struct acpi_pm *p = opaque;
	unsigned size = a->size > 8 ? 8 : a->size;
	bool sleep = false;
	unsigned slp_typ = 0;

	pthread_mutex_lock(&p->lock);
	if (a->write) {
		for (unsigned i = 0; i < size && a->offset + i < ACPI_PM_LEN; i++) {
			if (pm_write_byte(p, (unsigned)a->offset + i, (uint8_t)(a->data >> (8 * i)))) {
				sleep = true;
				slp_typ = (p->cnt >> CNT_SLP_TYP_SHIFT) & 7;
			}
		}
	} else {
		uint32_t tmr = pm_timer(p);

		a->data = 0;
		for (unsigned i = 0; i < size; i++) {
			uint8_t b = a->offset + i < ACPI_PM_LEN ? pm_read_byte(p, (unsigned)a->offset + i, tmr) : 0xff;

			a->data |= (uint64_t)b << (8 * i);
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (sleep) {
		if (slp_typ == 0)
			p->svc->request_exit(p->svc->opaque, 0, "ACPI power off (S5)");
		else
			pr_warn("acpi: sleep type %u requested; only S5 (SLP_TYP 0) is supported, ignored", slp_typ);
	}
	return 0;
}

static int acpi_pm_create(struct bus *b, const struct machine_desc *m, const struct vm_services *svc, void **state)
{
	struct acpi_pm *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	p->svc = svc;
	p->cnt = CNT_SCI_EN;
	r = bus_claim(b, BUS_PIO, ACPI_PM_PORT, ACPI_PM_LEN, "acpi-pm", acpi_pm_io, p);
	if (r) {
		pthread_mutex_destroy(&p->lock);
		free(p);
		return r;
	}
	*state = p;
	return 0;
}

static void acpi_pm_destroy(void *state)
{
	struct acpi_pm *p = state;

	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static const struct device_type acpi_pm_type = {
	.name = "acpi-pm",
	.create = acpi_pm_create,
	.destroy = acpi_pm_destroy,
};
DEVICE_REGISTER(acpi_pm_type)
