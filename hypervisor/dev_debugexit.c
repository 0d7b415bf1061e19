/* SPDX-License-Identifier: MIT */
/*
 * isa-debug-exit at port 0xf4, as QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=4`: a write of value v (any
 * width, any offset of the 4 ports) stops the machine with exit code (v << 1) | 1, so a guest can never exit 0 by
 * accident; reads return 0 (QEMU's debug_exit_read; the only way a guest can probe for the device).
 */
#include <errno.h>
#include <stdlib.h>

#include "hypervisor/bus.h"

#define DEBUGEXIT_PORT 0xf4
#define DEBUGEXIT_LEN 4

struct debugexit {
	const struct vm_services *svc;
};

static int debugexit_io(void *opaque, struct io_access *a)
{
	struct debugexit *d = opaque;
	uint64_t v;

	if (!a->write) {
		a->data = 0;
		return 0;
	}
	v = a->size >= 8 ? a->data : a->data & ((1ull << (8 * a->size)) - 1);
	d->svc->request_exit(d->svc->opaque, (int)((v << 1) | 1), "isa-debug-exit");
	return 0;
}

static int debugexit_create(struct bus *b, const struct machine_desc *m, const struct vm_services *svc,
			    void **state)
{
	struct debugexit *d = calloc(1, sizeof(*d));
	int r;

	if (!d)
		return -ENOMEM;
	d->svc = svc;
	r = bus_claim(b, BUS_PIO, DEBUGEXIT_PORT, DEBUGEXIT_LEN, "isa-debug-exit", debugexit_io, d);
	if (r) {
		free(d);
		return r;
	}
	*state = d;
	return 0;
}

static void debugexit_destroy(void *state)
{
	free(state);
}

static const struct device_type debugexit_type = {
	.name = "isa-debug-exit",
	.create = debugexit_create,
	.destroy = debugexit_destroy,
};
DEVICE_REGISTER(debugexit_type)
