/* SPDX-License-Identifier: MIT */
/*
 * Internals of the node VM (vm.c) and its vCPU threads (vcpu.c). Private to those two files and their tests.
 *
 * Threads of a VM (docs/hypervisor.md, "What runs where"):
 *   - the caller of vm_create/vm_start/vm_wait (rackvm run's main thread): builds everything, then sleeps in
 *     vm_wait() on the stop pipe; when the VM stops it posts STOP to every vCPU and joins them;
 *   - one thread per local vCPU: the state machine and run loop (vcpu.c); the only user of its accel_vcpu and
 *     lapic (lapic_accept and the kick excepted);
 *   - one timer thread per VM: sleeps until the earliest APIC timer deadline a *running* vCPU published and kicks
 *     that vCPU out of guest code (a halted vCPU waits on its own condvar with that deadline instead).
 * Locks: vcpu->lock (mailbox, kick sequence, condvar) and vm->timer_lock are leaves; vm->console_lock is a leaf.
 * No lock is held while guest code runs or while a device handler runs.
 */
#ifndef RACKVM_HYPERVISOR_VM_INTERNAL_H
#define RACKVM_HYPERVISOR_VM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "hypervisor/accel.h"
#include "hypervisor/bus.h"
#include "hypervisor/fw.h"
#include "hypervisor/irq.h"
#include "hypervisor/lapic.h"
#include "hypervisor/vm.h"

struct ioapic;

#define VM_MAX_CPUID 128
#define VM_MAILBOX_LEN 16
/* Guest TSC rate both backends are asked for (kvm: KVM_SET_TSC_KHZ when the host can scale; see kvm.c). */
#define VM_TSC_HZ 2000000000ull
/* Start of the 32-bit PCI/MMIO hole when RAM is above 3 GiB (RAM past it is shown from 4 GiB on). */
#define VM_HOLE_START 0xc0000000ull

struct vcpu_counters {
	_Atomic uint64_t exits_io, exits_mmio, exits_msr, exits_hlt, irqs_injected, io_forwarded, io_unclaimed;
};

struct vcpu {
	struct vm *vm;
	unsigned index;                 /* global vCPU index */
	uint32_t apic_id;
	bool bsp;
	struct accel_vcpu *av;
	struct lapic *lapic;

	pthread_t thread;
	bool thread_started;
	_Atomic int state;              /* enum vm_vcpu_state; written by the vCPU thread only */

	/* mailbox + wake-up, under lock */
	pthread_mutex_t lock;
	pthread_cond_t cond;            /* CLOCK_MONOTONIC: messages, kicks, state changes */
	enum vm_vcpu_msg mbox[VM_MAILBOX_LEN];
	unsigned mbox_head, mbox_len;
	_Atomic uint64_t kick_seq;      /* bumped by every kick: a waiter that saw seq s sleeps until it changes */
	_Atomic bool in_guest;          /* set before the last look at kick_seq on the way into the accelerator's run,
	                                 * cleared after it: only then does a kick need the accelerator's kick */

	/* vCPU thread only */
	bool wait_sipi;                 /* after INIT (and every AP at start): not executing until a SIPI */
	bool halted, halt_if;           /* HLT executed; IF at that time (IF=0: only NMI/INIT/SIPI wake it) */
	bool can_inject;                /* the last exit said irq_ready and no register write happened since */
	struct accel_exit exit;
	char guest_error_once[4];       /* reported-once flags (unknown MSR) */

	/* host-ns deadline of the APIC timer while running guest code (UINT64_MAX: none); read by the timer thread */
	_Atomic uint64_t timer_ns;

	struct vcpu_counters ctr;
};

struct vm {
	struct vm_config cfg;           /* caller's pointers are borrowed for the VM's life */
	const struct accel_ops *accel;
	struct accel_vm *avm;

	void *ram;
	bool ram_owned;                 /* anonymous mapping made by vm_create (cfg.region == NULL) */
	uint64_t ram_size, hole_start;
	uint64_t tsc_hz;

	unsigned n_vcpus;
	uint32_t apic_ids[VM_MAX_VCPUS];
	uint32_t node_of[VM_MAX_VCPUS];
	struct accel_cpuid_entry cpuid[VM_MAX_CPUID];
	size_t n_cpuid;

	bool io_local;                  /* this node owns the devices */
	struct bus *bus;
	void **dev_state;               /* per device type, NULL where not created */
	size_t n_dev;
	struct ioapic *ioapic;
	struct apicbus *apicbus;
	struct vm_services svc;
	struct fw_boot boot;
	bool boot_loaded;

	struct vcpu *vcpus[VM_MAX_VCPUS];  /* local vCPUs only, NULL elsewhere */
	unsigned n_local;

	/* stop: vm_stop() is async-signal-safe: an atomic code and a byte in a pipe; vm_wait() does the rest */
	_Atomic int stop_code;          /* INT_MIN: running */
	_Atomic bool stopping;
	_Atomic bool stop_remote;       /* the stop came from another node (no broadcast back) */
	int stop_pipe[2];
	pthread_mutex_t why_lock;       /* stop_why (not taken by vm_stop, which stays async-signal-safe) */
	char stop_why[160];             /* first reason the VM stopped */
	bool started, waited;
	int wait_result;

	/* timer thread */
	pthread_t timer_thread;
	bool timer_started;
	pthread_mutex_t timer_lock;
	pthread_cond_t timer_cond;
	bool timer_quit;
	_Atomic uint64_t timer_next;    /* the deadline the timer thread sleeps until (UINT64_MAX: none) */

	/* console: line-buffered */
	pthread_mutex_t console_lock;
	char console_buf[4096];
	size_t console_len;

	_Atomic bool eoi_forward_warned;
};

/* vcpu.c */
int vcpu_create(struct vm *vm, unsigned index, struct vcpu **out);
void vcpu_destroy(struct vcpu *v);
int vcpu_thread_start(struct vcpu *v);
void vcpu_thread_join(struct vcpu *v);
int vcpu_post(struct vcpu *v, enum vm_vcpu_msg msg);
/* Wake the vCPU: out of guest code (accel kick) and out of a condvar wait. Any thread, not a signal handler. */
void vcpu_kick(struct vcpu *v);
/* Load the firmware's BSP entry state. */
int vcpu_load_boot(struct vcpu *v, const struct fw_boot *b);
/* Print "<prefix> RIP=... RSP=... ..." (one line) for this vCPU, from its own thread or while it is not running. */
void vcpu_dump_regs(struct vcpu *v);

/* vm.c, for vcpu.c */
/* A guest error or host failure: print the line (the caller then prints registers), stop the VM with status 1.
 * True for the first failure of the VM (later ones, or any after a stop began, are not printed). */
bool vm_fail(struct vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* EOI of a level-triggered vector from a local APIC: the IOAPIC here, or (issue 5) the io node. */
void vm_eoi_level(struct vm *vm, uint8_t vector);
/* One "rackvm: ..." line on stderr with one write(2). */
void vm_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A port/MMIO access: local bus, or forwarded to the io node. 0 or -errno (-ENOENT: nothing there). */
int vm_io(struct vm *vm, enum bus_space space, struct io_access *a);
/* Timer thread: v's published host deadline changed to an earlier value. */
void vm_timer_update(struct vm *vm);
/* Host ns -> guest TSC conversions at the VM's tsc_hz. */
uint64_t vm_tsc_to_ns(const struct vm *vm, uint64_t ticks);

#endif
