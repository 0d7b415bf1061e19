/* SPDX-License-Identifier: MIT */
/*
 * Execution backends ("accelerators") for a node's vCPUs. Two implement this interface:
 *   kvm — Linux KVM (/dev/kvm), the production backend;
 *   emu — rackvm's own x86-64 interpreter (hypervisor/emu/), for hosts without KVM (CI, laptops, nested clouds
 *         without VT-x). Same guest-visible machine, much slower ring-0 and compute.
 * Everything above this interface (devices, local APIC, loaders, the vCPU state machine, the cluster) is shared.
 *
 * Architectural register state uses KVM's own structs (struct kvm_regs / kvm_sregs from <linux/kvm.h>) so the kvm
 * backend copies nothing and the emu backend keeps the same meaning of every field.
 *
 * The interrupt controller is in user space for both backends (the VMM's lapic.c): the backend only injects an
 * external interrupt or NMI when asked, and tells whether the vCPU can take one now. This is what lets an IPI
 * from a vCPU on another node be delivered by the destination node alone (DESIGN.md: no node on every path).
 *
 * Threads: an accel_vcpu is used only by its own vCPU thread, except accel_vcpu_kick(), which any thread or a
 * signal handler may call.
 */
#ifndef RACKVM_HYPERVISOR_ACCEL_H
#define RACKVM_HYPERVISOR_ACCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

struct accel_vm;
struct accel_vcpu;

/* One CPUID leaf/subleaf as the guest must see it (the VMM computes the table, see fw.h). The table holds the
 * values for APIC id 0; each backend patches the per-vCPU fields for the vCPU's own APIC id: leaf 1 EBX[31:24],
 * leaf 0xB and 0x1F EDX (x2APIC id). */
struct accel_cpuid_entry {
	uint32_t function, index; /* leaf, subleaf */
	bool has_index;           /* leaf depends on ECX */
	uint32_t eax, ebx, ecx, edx;
};

struct accel_vm_config {
	void *ram;                /* host mapping of guest RAM, guest-physical 0 .. ram_size */
	uint64_t ram_size;        /* bytes, multiple of 4 KiB */
	/* Guest-physical hole: [hole_start, 4 GiB) is not RAM even if ram_size is larger; RAM above hole_start is
	 * shown at 4 GiB upward (host offset hole_start..ram_size -> guest 4 GiB..). 0 = no hole (ram_size must then
	 * stay below the MMIO window at 0xfec00000). */
	uint64_t hole_start;
	const struct accel_cpuid_entry *cpuid;
	size_t n_cpuid;
	uint64_t tsc_hz;          /* guest TSC frequency (emu: also the rate of its RDTSC) */
};

enum accel_exit_reason {
	ACCEL_EXIT_IO = 1,        /* port I/O: io */
	ACCEL_EXIT_MMIO,          /* access to guest-physical memory that is not RAM: mmio */
	ACCEL_EXIT_MSR_READ,      /* RDMSR of an MSR the backend does not own: msr (fill msr.value, or msr.error) */
	ACCEL_EXIT_MSR_WRITE,     /* WRMSR likewise: msr */
	ACCEL_EXIT_HLT,           /* HLT executed (RIP already past it) */
	ACCEL_EXIT_IRQ_WINDOW,    /* the vCPU became able to take an interrupt (requested in accel_entry) */
	ACCEL_EXIT_KICK,          /* accel_vcpu_kick() or a signal: nothing to emulate */
	ACCEL_EXIT_SHUTDOWN,      /* triple fault */
	ACCEL_EXIT_ERROR,         /* the backend cannot continue this vCPU: error.msg says why */
};

struct accel_exit {
	enum accel_exit_reason reason;
	bool irq_ready;           /* at exit: IF=1 and no interrupt shadow, so an injection now is taken at once */
	union {
		struct {
			uint16_t port;
			uint8_t size;     /* 1, 2 or 4 */
			bool in;
			uint32_t count;   /* >1 for string I/O the backend batched; data holds count*size bytes */
			uint8_t *data;    /* backend-owned buffer: OUT data to read, IN data to fill before the next run */
		} io;
		struct {
			uint64_t gpa;
			uint8_t size;     /* 1, 2, 4 or 8 */
			bool write;
			uint8_t data[8];  /* write: the value; read: fill before the next run (little endian) */
		} mmio;
		struct {
			uint32_t index;
			uint64_t value;   /* write: the value; read: fill before the next run */
			bool error;       /* set by the VMM to make the instruction raise #GP instead */
		} msr;
		struct {
			char msg[160];
		} error;
	};
};

/* What the VMM asks for before a run. */
struct accel_entry {
	bool request_irq_window;  /* exit with ACCEL_EXIT_IRQ_WINDOW as soon as an interrupt can be taken */
};

struct accel_ops {
	const char *name;
	/* 0 if the backend can run on this host; otherwise -errno and a one-line reason in why. */
	int (*probe)(char *why, size_t why_len);
	int (*vm_create)(const struct accel_vm_config *cfg, struct accel_vm **out);
	void (*vm_destroy)(struct accel_vm *vm);
	/* index: dense 0.. per VM; apic_id: the guest-visible id (CPUID leaf 1/0xB must match what the VMM built). */
	int (*vcpu_create)(struct accel_vm *vm, unsigned index, uint32_t apic_id, struct accel_vcpu **out);
	void (*vcpu_destroy)(struct accel_vcpu *vcpu);
	int (*get_regs)(struct accel_vcpu *vcpu, struct kvm_regs *regs);
	int (*set_regs)(struct accel_vcpu *vcpu, const struct kvm_regs *regs);
	int (*get_sregs)(struct accel_vcpu *vcpu, struct kvm_sregs *sregs);
	int (*set_sregs)(struct accel_vcpu *vcpu, const struct kvm_sregs *sregs);
	/* Run until the next exit. IN/MMIO-read/MSR-read results written into the previous exit are consumed by
	 * this call before the guest continues. Returns 0 with *exit filled, or -errno (host failure). */
	int (*run)(struct accel_vcpu *vcpu, const struct accel_entry *entry, struct accel_exit *exit);
	/* Async: make a running or about-to-run run() return ACCEL_EXIT_KICK soon. Async-signal-safe. */
	void (*kick)(struct accel_vcpu *vcpu);
	/* Queue an external interrupt (vector 16..255) for delivery on the next run; only valid right after an exit
	 * with irq_ready. */
	int (*inject_irq)(struct accel_vcpu *vcpu, uint8_t vector);
	int (*inject_nmi)(struct accel_vcpu *vcpu);
	/* Guest TSC now, as RDTSC in this vCPU would read it. */
	uint64_t (*read_tsc)(struct accel_vcpu *vcpu);

	/* Optional (NULL = not offered), added by the VM's author; fields at the end so existing initializers hold. */
	/* The CPUID the backend can give a guest (kvm: KVM_GET_SUPPORTED_CPUID), the base of fw_cpuid_build. */
	int (*supported_cpuid)(struct accel_cpuid_entry *out, size_t max, size_t *n_out);
	/* Instructions this vCPU retired (emu: for vm_get_stats; kvm cannot count them). */
	uint64_t (*insn_count)(struct accel_vcpu *vcpu);
	/* The rate a new VM's guest TSC will really run at when `want` Hz is asked for (kvm without TSC scaling: the
	 * host's rate), so that CPUID 0x15/0x16 and the APIC timer state the truth; 0 if it cannot tell. */
	uint64_t (*tsc_hz)(uint64_t want);
};

/* Backends by name: "kvm", "emu". NULL if unknown. */
const struct accel_ops *accel_find(const char *name);
/* "auto": kvm when its probe passes, else emu (the reason kvm was passed over is written to why). */
const struct accel_ops *accel_choose(const char *name, char *why, size_t why_len);

extern const struct accel_ops accel_kvm_ops;
extern const struct accel_ops accel_emu_ops;

#endif
