/* SPDX-License-Identifier: MIT */
/*
 * A node's VM: guest RAM (a dsm region, or plain memory for tests), the accelerator VM, the vCPUs placed on this
 * node (each a thread running an explicit state machine), the buses and devices, the APIC bus.
 *
 * vCPU states: CREATED -> PAUSED <-> RUNNING -> STOPPED, driven by messages posted to the vCPU
 * (vm_vcpu_post: PAUSE, RESUME, STOP) and by the guest (INIT puts an AP in wait-for-SIPI, which is RUNNING from
 * the state machine's view but not executing). A paused vCPU's registers can be read and written (migration, issue
 * 5+). The VM stops when the guest exits (isa-debug-exit, reset, triple fault: reported with registers), on
 * vm_stop() (SIGINT, a peer's death) or on an internal error; vm_wait() returns the exit status.
 *
 * One node or many: with one node (rackvm run) every vCPU and device is local. With several (rackvm node), the
 * caller passes placement (node_of[vcpu]) and a struct vm_cluster_hooks: vm.c then runs only its own vCPUs,
 * forwards port/MMIO accesses for devices placed on another node through forward_io, and sends interrupts for
 * remote vCPUs through the APIC bus's remote hook. Incoming requests from peers enter through vm_remote_io(),
 * vm_remote_irq() and vm_remote_logical().
 */
#ifndef RACKVM_HYPERVISOR_VM_H
#define RACKVM_HYPERVISOR_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypervisor/bus.h"
#include "hypervisor/irq.h"

struct vm;
struct dsm_region;

#define VM_MAX_VCPUS 64

struct vm_cluster_hooks {
	void *opaque;
	/* Interrupt and LDR replication to another node (see irq.h). */
	struct apicbus_remote apic;
	/* Perform a port/MMIO access on the node that owns the device; blocks until done (a read fills a->data).
	 * 0 or -errno (-EHOSTDOWN: the owner died; the VM then stops with an error). */
	int (*forward_io)(void *opaque, uint32_t node, enum bus_space space, struct io_access *a);
	/* The guest's exit (or a fatal error) happened on this node: tell every other node. */
	void (*exit_broadcast)(void *opaque, int code, const char *why);
	/* Added by the VM's author (may be NULL): a local APIC EOI'd a level-triggered vector; the io node's IOAPIC
	 * must see it (there: vm_remote_eoi). Called on a vCPU thread; must not block for long. */
	void (*forward_eoi)(void *opaque, uint32_t node, uint8_t vector);
};

struct vm_config {
	const char *accel;            /* "auto", "kvm" or "emu" */
	unsigned n_vcpus;             /* vCPUs of the whole guest */
	uint64_t ram_size;            /* bytes */
	/* Guest RAM: a dsm region of ram_size bytes (NULL = private anonymous memory, for tests). */
	struct dsm_region *region;
	/* Placement; NULL = everything on node `self`. */
	const uint32_t *node_of;      /* n_vcpus entries */
	uint32_t self;
	uint32_t io_node;             /* node owning the devices (UART, debug-exit, fw_cfg, PIT, RTC, IOAPIC) */
	unsigned n_nodes;             /* proximity domains for SRAT/SLIT (1 for rackvm run) */
	/* RAM range each node is home for (n_nodes entries), as offsets into guest RAM (the dsm region); vm.c maps
	 * them to guest-physical for the SRAT (RAM past hole_start sits above 4 GiB). */
	const uint64_t *node_mem_base, *node_mem_size;
	const struct vm_cluster_hooks *hooks;         /* NULL for one node */

	/* What to boot (loaders). */
	const char *kernel;
	const char *cmdline;
	const char *initrd;
	const char *const *modules;   /* multiboot modules, "path[ args]" */
	size_t n_modules;

	/* Console: the UART's output goes to console_fd (default 1); stdin feeds its input if console_input. */
	int console_fd;
	bool console_input;
	bool verbose;
	/* A port access nothing claims: false (the default) as on a PC bus — a read gives all-ones, a write is
	 * dropped, both counted (io_unclaimed) and logged at debug level, because a real OS probes ports nothing
	 * decodes; true: a guest error that stops the VM (our own tests, which must not touch unknown ports). */
	bool strict_io;
};

/* Build everything and load the kernel; vCPUs are CREATED. One-line errors are printed; returns -errno. */
int vm_create(const struct vm_config *cfg, struct vm **out);
/* Start every local vCPU (BSP runs, APs wait for INIT/SIPI). */
int vm_start(struct vm *vm);
/* Ask the VM to stop (any thread, async-signal-safe): vCPUs leave their loop, vm_wait returns `code`. */
void vm_stop(struct vm *vm, int code);
/* Wait until the VM stopped; returns the process exit status (guest exit code, or 1 after an error). */
int vm_wait(struct vm *vm);
void vm_destroy(struct vm *vm);

/* Requests from other nodes (cluster receive thread). */
int vm_remote_io(struct vm *vm, enum bus_space space, struct io_access *a);
void vm_remote_irq(struct vm *vm, const struct irq_msg *m);
void vm_remote_logical(struct vm *vm, uint32_t apic_id, uint32_t ldr, uint32_t dfr);
/* An EOI of a level-triggered vector on another node (forward_eoi there); io node only. */
void vm_remote_eoi(struct vm *vm, uint8_t vector);
/* Another node reported the guest's exit or a fatal error. */
void vm_remote_exit(struct vm *vm, int code, const char *why);

struct vm_stats {
	unsigned n_local_vcpus;
	uint64_t exits_io, exits_mmio, exits_msr, exits_hlt, irqs_injected, io_forwarded;
	uint64_t io_unclaimed;        /* port accesses nothing claimed (all-ones / dropped) */
	uint64_t guest_insns;         /* emu only */
};
void vm_get_stats(struct vm *vm, struct vm_stats *out);

/* vCPU control (added by the VM's author): messages to one local vCPU's mailbox, handled in order by its thread
 * at its next loop iteration (a running vCPU is kicked out of the guest). Legal transitions:
 * PAUSED -RESUME-> RUNNING, RUNNING -PAUSE-> PAUSED, PAUSED|RUNNING -STOP-> STOPPED; any other is reported as a
 * bug (one error line) and ignored. vm_start() posts RESUME to every local vCPU. */
enum vm_vcpu_state { VM_VCPU_CREATED = 0, VM_VCPU_PAUSED, VM_VCPU_RUNNING, VM_VCPU_STOPPED };
enum vm_vcpu_msg { VM_VCPU_PAUSE = 1, VM_VCPU_RESUME, VM_VCPU_STOP };
/* 0, -ENOENT (not a vCPU of this node), -ESRCH (already stopped), -EAGAIN (mailbox full). */
int vm_vcpu_post(struct vm *vm, unsigned vcpu, enum vm_vcpu_msg msg);
enum vm_vcpu_state vm_vcpu_state(struct vm *vm, unsigned vcpu);
/* Wait until the vCPU reached `state` (0) or timeout_ns passed (-ETIMEDOUT). */
int vm_vcpu_wait_state(struct vm *vm, unsigned vcpu, enum vm_vcpu_state state, uint64_t timeout_ns);

#endif
