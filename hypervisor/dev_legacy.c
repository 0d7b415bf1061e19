/* SPDX-License-Identifier: MIT */
/*
 * Small legacy ports that firmware and Linux touch unconditionally, answered the way QEMU's PC answers them:
 *   - 0x80 POST code / I/O delay port: writes ignored, reads 0xff;
 *   - 0x92 "fast A20" (system control port A): bit 1 A20 gate (stored and read back; A20 is always enabled in
 *     this machine), bit 0 fast reset: a 0->1 write asks the VMM to stop with code 0 (we do not reboot; like
 *     QEMU with -no-reboot);
 *   - 0xcf8-0xcff PCI configuration mechanism #1: there is no PCI host bridge, so every read returns all ones and
 *     writes are ignored. Linux's pci_check_type1() reads back 0x80000000 from 0xcf8 and sees ~0, its type-2
 *     probe reads 0 from 0xcf8/0xcfa and sees 0xff: both conclude "no PCI". One exception: a byte write to
 *     0xcf9 is the PIIX/ICH reset control register, which the FADT names as the ACPI reset register (value
 *     0x06): bit 2 set asks the VMM to stop with code 0, like the fast reset of port 0x92. (Wider writes at
 *     0xcf8 are CONFIG_ADDRESS writes and never reset.)
 *   - COM2-COM4 (0x2f8, 0x3e8, 0x2e8, 8 ports each): no UART there, the floating ISA bus reads all ones and
 *     ignores writes, so Linux's 8250 probe of the legacy ports (IER scratch test) finds nothing instead of the
 *     VMM stopping on an unknown port.
 * Any other port stays unclaimed, so the VMM reports it as an unknown access.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "hypervisor/bus.h"

struct legacy {
	const struct vm_services *svc;
	_Atomic uint8_t port92;     /* vCPUs may write it concurrently: the reset edge is taken once */
};

static uint64_t size_ones(uint8_t size)
{
	return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1;
}

static int legacy_post_io(void *opaque, struct io_access *a)
{
	if (!a->write)
		a->data = size_ones(a->size);
	return 0;
}

static int legacy_port92_io(void *opaque, struct io_access *a)
{
	struct legacy *l = opaque;
	uint8_t v = (uint8_t)a->data;

	if (!a->write) {
		a->data = atomic_load(&l->port92);
		return 0;
	}
	if ((v & 1) && !(atomic_exchange(&l->port92, v & 0x03) & 1))
		l->svc->request_exit(l->svc->opaque, 0, "reset through port 0x92");
	else
		atomic_store(&l->port92, v & 0x03);
	return 0;
}

/* Nothing behind these ports: reads float high, writes vanish. */
static int legacy_absent_io(void *opaque, struct io_access *a)
{
	if (!a->write)
		a->data = size_ones(a->size);
	return 0;
}

static int legacy_pci_io(void *opaque, struct io_access *a)
{
	struct legacy *l = opaque;

	if (!a->write)
		a->data = size_ones(a->size);
	else if (a->offset == 1 && a->size == 1 && (a->data & 0x04))
		l->svc->request_exit(l->svc->opaque, 0, "reset through port 0xcf9");
	return 0;
}

static int legacy_create(struct bus *b, const struct machine_desc *m, const struct vm_services *svc,
			 void **state)
{
	struct legacy *l = calloc(1, sizeof(*l));
	int r;

	if (!l)
		return -ENOMEM;
	l->svc = svc;
	l->port92 = 0x02;  /* A20 enabled at reset, as QEMU's port92 */
	r = bus_claim(b, BUS_PIO, 0x80, 1, "post", legacy_post_io, l);
	if (!r)
		r = bus_claim(b, BUS_PIO, 0x92, 1, "port92", legacy_port92_io, l);
	if (!r)
		r = bus_claim(b, BUS_PIO, 0xcf8, 8, "pci-none", legacy_pci_io, l);
	if (!r)
		r = bus_claim(b, BUS_PIO, 0x2f8, 8, "com2-absent", legacy_absent_io, l);
	if (!r)
		r = bus_claim(b, BUS_PIO, 0x3e8, 8, "com3-absent", legacy_absent_io, l);
	if (!r)
		r = bus_claim(b, BUS_PIO, 0x2e8, 8, "com4-absent", legacy_absent_io, l);
	if (r) {
		/* claims cannot be withdrawn; the caller destroys the bus after a failed create */
		free(l);
		return r;
	}
	*state = l;
	return 0;
}

static void legacy_destroy(void *state)
{
	free(state);
}

static const struct device_type legacy_type = {
	.name = "legacy",
	.create = legacy_create,
	.destroy = legacy_destroy,
};
DEVICE_REGISTER(legacy_type)
