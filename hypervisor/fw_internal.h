/* SPDX-License-Identifier: MIT */
/*
 * Internals shared by the firmware files (fw.c, acpi.c, load_multiboot.c, load_linux.c). See docs/firmware.md.
 *
 * Guest-physical layout (RAM from 0; host offset = gpa below the hole, hole_start + (gpa - 4 GiB) above 4 GiB):
 *
 *   0x00000-0x00fff  real-mode IVT/BDA (0x40e: EBDA segment = 0x9fc0)          e820 usable
 *   0x01000-0x01fff  boot GDT (FW_GDT): 0x08 code32, 0x10 code64, 0x18 data     e820 usable
 *   0x02000-0x07fff  boot page tables (Linux): PML4, PDPT, 4 PDs (2 MiB pages)  e820 usable
 *   0x08000-0x08fff  untouched: the guest SDK's AP trampoline page              e820 usable
 *   0x09000-0x09fff  boot stack page (RSP = 0xa000 at entry)                    e820 usable
 *   0x10000-0x7ffff  boot info (FW_BOOTINFO): zero page, command lines, mbi,    e820 usable
 *                    mmap, module strings — bump-allocated
 *   0x9fc00-0x9ffff  EBDA (zero)                                                e820 reserved
 *   0xe0000-0xfffff  RSDP at 0xe0000, then the ACPI tables                      e820 reserved
 *   1 MiB - min(ram_size, hole_start)  kernel, modules, initrd                  e820 usable
 *   4 GiB - 4 GiB + (ram_size - hole_start)                                     e820 usable
 */
#ifndef RACKVM_HYPERVISOR_FW_INTERNAL_H
#define RACKVM_HYPERVISOR_FW_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypervisor/fw.h"

#define FW_GDT 0x1000ull
#define FW_PML4 0x2000ull
#define FW_PDPT 0x3000ull
#define FW_PD 0x4000ull            /* 4 pages: identity map of 0-4 GiB with 2 MiB pages */
#define FW_STACK_TOP 0xa000ull
#define FW_BOOTINFO 0x10000ull
#define FW_BOOTINFO_END 0x80000ull
#define FW_LOW_END 0x9fc00ull      /* end of usable low RAM (639 KiB) */
#define FW_EBDA 0x9fc00ull
#define FW_ACPI_BASE 0xe0000ull    /* RSDP here, tables after it */
#define FW_ACPI_END 0x100000ull
#define FW_HIGH_BASE 0x100000ull   /* kernels, modules, initrd load at or above 1 MiB */
#define FW_4G 0x100000000ull
#define FW_IOAPIC_ADDR 0xfec00000ull
#define FW_LAPIC_ADDR 0xfee00000ull

/* GDT selectors (the same table serves both loaders; Linux wants __BOOT_CS = 0x10, __BOOT_DS = 0x18). */
#define FW_SEL_CODE32 0x08
#define FW_SEL_CODE64 0x10
#define FW_SEL_DATA 0x18

#define FW_E820_MAX 8
enum { E820_RAM = 1, E820_RESERVED = 2, E820_ACPI = 3 };

struct fw_e820 {
	uint64_t addr, size;
	uint32_t type;
};

struct fw_ctx {
	const struct fw_config *cfg;
	uint8_t *ram;
	uint64_t low_end;              /* end of RAM below the hole: min(ram_size, hole_start) */
	uint64_t high_size;            /* RAM shown at 4 GiB */
	struct fw_e820 e820[FW_E820_MAX];
	size_t n_e820;
	uint64_t info_next;            /* bump pointer in [FW_BOOTINFO, FW_BOOTINFO_END) */
	uint64_t rsdp_gpa;
	const uint8_t *image;          /* the kernel file */
	size_t image_size;
	char *err;
	size_t err_len;
};

/* Zero guest RAM that must read as zero, unless the whole buffer is known to be zero already (cfg->ram_zeroed). */
void fw_zero(const struct fw_ctx *c, void *p, size_t len);

/* Sets err (one line) and returns -e. */
__attribute__((format(printf, 3, 4)))
int fw_fail(struct fw_ctx *c, int e, const char *fmt, ...);

/* Host pointer to [gpa, gpa+len) if all of it is guest RAM (one side of the hole), else NULL. */
void *fw_gpa(const struct fw_ctx *c, uint64_t gpa, uint64_t len);
/* [gpa, gpa+len) is RAM a kernel may be loaded into: at or above 1 MiB, in RAM, not in the hole. */
bool fw_loadable(const struct fw_ctx *c, uint64_t gpa, uint64_t len);
/* Zeroed bytes in the boot info area (aligned); 0 when it is full. */
uint64_t fw_info_alloc(struct fw_ctx *c, uint64_t size, uint64_t align);
/* Whole file into a malloc'ed buffer; -errno with err filled ("what": "kernel", "initrd", "module"). */
int fw_read_file(struct fw_ctx *c, const char *what, const char *path, uint8_t **data, size_t *size);
/* Boot GDT at FW_GDT, and the flat segment descriptors matching it. */
void fw_gdt_write(struct fw_ctx *c);
void fw_seg_flat(struct kvm_segment *s, uint16_t sel, bool code, bool l64);
/* Common parts of the entry sregs (GDTR, IDTR, TR, LDT, APIC base). */
void fw_sregs_common(struct kvm_sregs *s);
/* Publish a fw_cfg file; the data is copied into out->file_storage-owned memory. */
int fw_file_add(struct fw_boot *out, const char *name, const void *data, size_t size);

/* The e820 list fw_setup builds for this configuration (tests, tools). */
int fw_e820_get(const struct fw_config *cfg, struct fw_e820 *out, size_t max, size_t *n, char *err, size_t err_len);

struct fw_elf_info {
	uint64_t entry;                /* physical */
	uint64_t lo, hi;               /* lowest and end of the highest loaded physical address */
	bool is64;
};
/* Load c->image's PT_LOAD segments at their physical addresses (what: prefix of error messages). */
int fw_elf_load(struct fw_ctx *c, const char *what, struct fw_elf_info *info);

int fw_acpi_build(struct fw_ctx *c);
bool fw_multiboot_find(const uint8_t *img, size_t size, size_t *hdr_off);
int fw_multiboot_load(struct fw_ctx *c, size_t hdr_off, struct fw_boot *out);
bool fw_linux_is_bzimage(const uint8_t *img, size_t size);
bool fw_linux_is_vmlinux(const uint8_t *img, size_t size);
int fw_linux_load(struct fw_ctx *c, enum fw_kind kind, struct fw_boot *out);

/* Little-endian accessors for unaligned, untrusted bytes. */
static inline uint16_t fw_rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t fw_rd32(const uint8_t *p)
{
	return p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t fw_rd64(const uint8_t *p)
{
	return fw_rd32(p) | ((uint64_t)fw_rd32(p + 4) << 32);
}
static inline void fw_wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void fw_wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void fw_wr64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

#endif
