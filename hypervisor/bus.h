/* SPDX-License-Identifier: MIT */
/*
 * Port I/O and MMIO buses, and the device table.
 *
 * A device is one file (hypervisor/dev_*.c) that defines a `struct device_type` and adds it to the table with
 * DEVICE_REGISTER(). At VM creation, vm.c calls every type's create() with the machine description; create()
 * claims its ports / MMIO ranges on the buses and keeps a pointer to the VM services it needs (raising an IRQ
 * line, writing the console, requesting shutdown). Devices never see vCPU threads or the accelerator.
 *
 * Handlers run on the vCPU thread that made the access, under the device's own lock if it has state shared with
 * other threads (timer threads, other vCPUs): the bus takes no lock. A handler returns 0, or -errno when the access
 * is not something the device implements (the VMM then reports the guest's access with its registers and stops
 * the VM cleanly — a guest can never crash the process).
 *
 * Issue 5: a device lives on one node (`node` in its claim); a vCPU on another node that touches it is forwarded
 * by vm.c through the cluster hook — the bus lookup tells which node owns a port or address.
 */
#ifndef RACKVM_HYPERVISOR_BUS_H
#define RACKVM_HYPERVISOR_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypervisor/irq.h"

struct io_access {
	uint64_t addr;      /* port number, or guest-physical address */
	uint64_t offset;    /* addr - base of the claimed range */
	uint8_t size;       /* 1, 2, 4 (8 for MMIO) */
	bool write;
	uint64_t data;      /* write: value (low `size` bytes); read: handler stores the value here */
	unsigned vcpu;      /* global vCPU index that made the access */
};

typedef int (*io_handler_fn)(void *opaque, struct io_access *a);

enum bus_space { BUS_PIO = 0, BUS_MMIO = 1 };

struct bus;

int bus_create(struct bus **out);
void bus_destroy(struct bus *b);
/* Claim [base, base+len) in a space. -EBUSY if it overlaps an existing claim. name is kept (for reports). */
int bus_claim(struct bus *b, enum bus_space space, uint64_t base, uint64_t len, const char *name,
	      io_handler_fn fn, void *opaque);
/* Dispatch one access: 0, the handler's -errno, or -ENOENT when nothing claims the address. */
int bus_access(struct bus *b, enum bus_space space, struct io_access *a);
/* Name of the claim covering addr, or NULL. */
const char *bus_owner(struct bus *b, enum bus_space space, uint64_t addr);

/* What a device may ask of the VM. Implemented by vm.c; tests provide their own. */
struct vm_services {
	void *opaque;
	/* Set an interrupt line (ISA IRQ / IOAPIC GSI) level: 1 asserted, 0 deasserted. Edge devices pulse 1 then 0. */
	void (*irq_set)(void *opaque, unsigned gsi, int level);
	/* Guest console bytes (the UART's transmit side). */
	void (*console_write)(void *opaque, const void *buf, size_t len);
	/* The guest asked the machine to stop with this process exit code (isa-debug-exit, ACPI/keyboard reset). */
	void (*request_exit)(void *opaque, int code, const char *why);
	/* Monotonic host time in ns (devices use it for PIT/RTC; tests make it a fake clock). */
	uint64_t (*now_ns)(void *opaque);
	/* Route an interrupt message (the IOAPIC's output; apicbus_deliver). */
	int (*deliver)(void *opaque, const struct irq_msg *m);
	/* May be NULL (the VMM leaves it so): a device's timer thread has nothing scheduled and sleeps until the guest
	 * programs it again (parked true), or was woken (false). Called with the device's lock held; must not block.
	 * Lets a test see "no further interrupt is coming" as an event instead of waiting for one not to come. */
	void (*timer_parked)(void *opaque, const char *device, bool parked);
};

/* The machine a device is created for. */
struct machine_desc {
	unsigned n_vcpus;
	const uint32_t *apic_ids;     /* n_vcpus entries, global vCPU order */
	uint64_t ram_size;            /* bytes of guest RAM in total */
	uint64_t hole_start;          /* see accel.h */
	const char *cmdline;          /* kernel command line (fw_cfg exposes it) */
	/* fw_cfg files the loaders/ACPI builder produced (name -> bytes); devices copy what they keep. */
	const struct fw_file *files;
	size_t n_files;
	const char *console_path;     /* NULL = stdout via console_write */
	bool console_input;           /* forward stdin to the UART receiver */
};

struct fw_file {
	const char *name;             /* at most 55 chars, e.g. "etc/acpi/tables" */
	const void *data;
	uint32_t size;
};

struct device_type {
	const char *name;
	/* Claim ranges and build state. *state is passed back to destroy. */
	int (*create)(struct bus *b, const struct machine_desc *m, const struct vm_services *svc, void **state);
	void (*destroy)(void *state);
};

/* Table iteration (order of registration = order of creation). */
size_t device_type_count(void);
const struct device_type *device_type_at(size_t i);
const struct device_type *device_type_find(const char *name);
void device_type_register(const struct device_type *t);

#define DEVICE_REGISTER(t) \
	static void __attribute__((constructor)) device_register_##t(void) { device_type_register(&(t)); }

/* Registers every node answers itself instead of forwarding to the io node: reads of the ACPI PM timer, a pure
 * function of the clock every node shares (dev_acpi_pm.c). True when `a` was a read of them (a->data filled). */
bool bus_local_read(enum bus_space space, struct io_access *a, uint64_t now_ns);

#endif
