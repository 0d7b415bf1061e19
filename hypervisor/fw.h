/* SPDX-License-Identifier: MIT */
/*
 * Firmware-facing data and loaders: what the guest finds in memory and registers at its first instruction.
 *   - memory map: e820 (Linux boot_params) and the multiboot mmap built from the same list;
 *   - ACPI: RSDP (in the BIOS area 0xe0000-0xfffff, where guests scan for it), XSDT (+RSDT for old guests), MADT,
 *     FADT + minimal DSDT, SRAT (one proximity domain per node: its vCPUs and its home RAM range), SLIT;
 *   - CPUID table with topology leaves (1, 4, 0xB, 0x1F) consistent with the vCPU count;
 *   - loaders: multiboot v1 ELF (modules, command line, memory map), Linux boot protocol (bzImage, vmlinux ELF:
 *     64-bit entry, boot_params with e820, command line, initrd);
 *   - fw_cfg files the loaders want to publish (e.g. "etc/e820", "opt/rackvm/cmdline").
 * Pure: takes a RAM buffer, writes into it, fills the entry state. Errors are one line in err, return -errno.
 */
#ifndef RACKVM_HYPERVISOR_FW_H
#define RACKVM_HYPERVISOR_FW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

#include "hypervisor/accel.h"
#include "hypervisor/bus.h"

#define FW_MAX_FILES 8
#define FW_MAX_MODULES 16

struct fw_config {
	unsigned n_vcpus;
	const uint32_t *apic_ids;          /* per vCPU */
	const uint32_t *node_of;           /* per vCPU: proximity domain (NULL: all 0) */
	unsigned n_nodes;                  /* >= 1 */
	const uint64_t *node_mem_base;     /* per node, guest-physical (NULL with n_nodes==1: all RAM) */
	const uint64_t *node_mem_size;
	const uint8_t *slit;               /* n_nodes*n_nodes distances (NULL: 10 local, 20 remote) */
	uint64_t ram_size, hole_start;     /* as accel.h */
	const char *kernel, *cmdline, *initrd;
	const char *const *modules;        /* multiboot: "path[ args]" */
	size_t n_modules;
	/* The RAM buffer is known to hold only zeros (fresh anonymous memory or a fresh dsm region): the loaders
	 * then skip zeroing bss and the firmware area. Every page written costs a fault on a DSM-backed guest
	 * (a userfaultfd round trip), so this shortens start-up; false = zero whatever must be zero. */
	bool ram_zeroed;
};

enum fw_kind { FW_MULTIBOOT = 1, FW_LINUX_BZIMAGE, FW_LINUX_ELF };

struct fw_boot {
	enum fw_kind kind;
	struct kvm_regs regs;              /* BSP entry state */
	struct kvm_sregs sregs;
	uint64_t rsdp_gpa;
	struct fw_file files[FW_MAX_FILES];
	size_t n_files;
	void *file_storage;                /* owned, freed by fw_boot_release */
};

/* Detect the kernel's format, load it and everything else into ram, build tables, fill the entry state. */
int fw_setup(const struct fw_config *cfg, void *ram, struct fw_boot *out, char *err, size_t err_len);
void fw_boot_release(struct fw_boot *b);

/* CPUID table for the guest: base = what the accelerator supports (KVM_GET_SUPPORTED_CPUID; NULL for emu, which
 * gets a fixed integer-only model), with the topology leaves rewritten for n_vcpus and apic_ids. */
int fw_cpuid_build(unsigned n_vcpus, const uint32_t *apic_ids, const struct accel_cpuid_entry *base, size_t n_base,
		   struct accel_cpuid_entry *out, size_t max, size_t *n_out);

/* Addition to the contract (fw owner): set CPUID 0x15/0x16 for a guest TSC of tsc_hz (0x15: EAX/EBX the TSC to
 * crystal ratio in lowest terms, ECX = LAPIC_TIMER_HZ; 0x16: TSC MHz, bus MHz) and raise leaf 0's maximum to
 * 0x16. fw_cpuid_build() assumes 1 GHz for emu; a VM whose tsc_hz differs (and every KVM VM) calls this on the
 * built table. *n is updated; -ENOSPC when max is too small. */
int fw_cpuid_set_tsc(struct accel_cpuid_entry *table, size_t max, size_t *n, uint64_t tsc_hz);

/* CPUID features a host reports but cannot run for a guest: each entry clears `mask` in register `reg` (0 EAX, 1 EBX,
 * 2 ECX, 3 EDX) of leaf function/index, or, with mask 0, removes the whole leaf. */
struct fw_cpuid_hide {
	uint32_t function, index;
	uint8_t reg;
	uint32_t mask;
	const char *names;                 /* what the bits are, for the log and the docs */
};

/* What a kvm_pvm host (nested paravirtual KVM: ring 0 emulated) cannot run although KVM_GET_SUPPORTED_CPUID offers
 * it: CMPXCHG16B, MOVBE, INVPCID, CLWB, SMAP (CLAC/STAC), RDPRU, and XSAVE with everything whose state XSAVE
 * manages (XGETBV/XRSTOR fail: AVX, AVX2, AVX-512, FMA, F16C, AMX, PKU, MPX, CET, leaf 0xD). docs/hypervisor.md. */
extern const struct fw_cpuid_hide fw_cpuid_kvm_pvm_hidden[];
extern const size_t fw_cpuid_kvm_pvm_hidden_n;

/* Apply a hide list to a table of *n entries (a removed leaf shrinks *n). Returns how many entries of the list changed
 * something (0: the table offered none of it). */
unsigned fw_cpuid_hide(struct accel_cpuid_entry *table, size_t *n, const struct fw_cpuid_hide *hide, size_t n_hide);

/* Addition to the contract (fw owner): only the fw_cfg files and rsdp_gpa fw_setup would publish for cfg (no RAM
 * written, no kernel read; regs/sregs/kind left zero) — for a node that owns the devices but does not load the
 * image. Release with fw_boot_release. */
int fw_files_only(const struct fw_config *cfg, struct fw_boot *out, char *err, size_t err_len);

/* The smallest --mem a guest needs for our tables plus the kernel image (for a clear "--mem too small"). */
uint64_t fw_min_ram(void);

#endif
