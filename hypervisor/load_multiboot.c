// SPDX-License-Identifier: MIT
/*
 * Multiboot v1 loader (Multiboot Specification 0.6.96).
 *
 * Image: the header (magic 0x1BADB002, flags, checksum; 4-byte aligned) within the first 8192 bytes. Flags: bit 0
 * (page-aligned modules) is always honoured — we align every module to 4 KiB; bit 1 (memory information) is
 * always provided; bit 2 (video mode) is accepted but no video information is given (mbi flags 11/12 clear);
 * any other bit in 0-15 is a requirement we do not know: refused. Bit 16 (a.out kludge): the header's addresses
 * are used instead of ELF program headers (as GRUB and QEMU do). Without bit 16 the image must be ELF32 or
 * ELF64; PT_LOAD segments are loaded at their physical addresses.
 *
 * Boot information (in the boot info area, 0x10000-0x7ffff): mbi with mem_lower/mem_upper, cmdline ("<kernel
 * path> <command line>", as GRUB and QEMU pass it), modules (each page aligned after the kernel's end, string = the whole
 * "path args" as configured), the memory map (the e820 list), and boot_loader_name "rackvm".
 *
 * Entry state: 32-bit protected mode, paging off, CS = 0x08 flat code, DS/ES/FS/GS/SS = 0x18 flat data (a valid
 * GDT at 0x1000, although the spec leaves GDTR undefined), CR0 = PE|ET, EFLAGS = 0x2, EAX = 0x2BADB002,
 * EBX = mbi, ESP = 0xa000 (a free page; the spec leaves ESP undefined). A20 is always on in rackvm.
 */
#include "hypervisor/fw_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MB_MAGIC 0x1BADB002u
#define MB_BOOT_MAGIC 0x2BADB002u
#define MB_SEARCH 8192
#define MB_FLAG_PAGE_ALIGN (1u << 0)
#define MB_FLAG_MEMINFO (1u << 1)
#define MB_FLAG_VIDEO (1u << 2)
#define MB_FLAG_AOUT (1u << 16)

#define MBI_MEM (1u << 0)
#define MBI_CMDLINE (1u << 2)
#define MBI_MODS (1u << 3)
#define MBI_MMAP (1u << 6)
#define MBI_LOADER_NAME (1u << 9)
#define MBI_SIZE 116

bool fw_multiboot_find(const uint8_t *img, size_t size, size_t *hdr_off)
{
	size_t lim = size < MB_SEARCH ? size : MB_SEARCH;
	for (size_t off = 0; off + 12 <= lim; off += 4) {
		uint32_t magic = fw_rd32(img + off), flags = fw_rd32(img + off + 4), sum = fw_rd32(img + off + 8);
		if (magic == MB_MAGIC && (uint32_t)(magic + flags + sum) == 0) {
			*hdr_off = off;
			return true;
		}
	}
	return false;
}

/* a.out kludge: the header says which file bytes go where. */
static int load_aout(struct fw_ctx *c, size_t hdr, struct fw_elf_info *info)
{
	const uint8_t *h = c->image + hdr;
	if (hdr + 32 > c->image_size)
		return fw_fail(c, ENOEXEC, "multiboot: header with the address fields (flag 16) is cut off by the end of the file");
	uint32_t header_addr = fw_rd32(h + 12), load_addr = fw_rd32(h + 16), load_end = fw_rd32(h + 20);
	uint32_t bss_end = fw_rd32(h + 24), entry = fw_rd32(h + 28);
	if (header_addr < load_addr || header_addr - load_addr > hdr)
		return fw_fail(c, ENOEXEC, "multiboot: header_addr 0x%x and load_addr 0x%x do not match the header's "
			       "file offset 0x%zx", header_addr, load_addr, hdr);
	size_t file_off = hdr - (header_addr - load_addr);
	uint64_t len = load_end ? (uint64_t)load_end - load_addr : c->image_size - file_off;
	if (load_end && load_end < load_addr)
		return fw_fail(c, ENOEXEC, "multiboot: load_end_addr 0x%x below load_addr 0x%x", load_end, load_addr);
	if (len > c->image_size - file_off)
		return fw_fail(c, ENOEXEC, "multiboot: load range 0x%x - 0x%llx is beyond the end of the file", load_addr,
			       (unsigned long long)(load_addr + len));
	uint64_t end = (uint64_t)load_addr + len, mem_end = bss_end > end ? bss_end : end;
	if (load_addr < FW_HIGH_BASE)
		return fw_fail(c, ERANGE, "multiboot: segment 0x%x - 0x%llx overlaps the firmware area below 1 MiB",
			       load_addr, (unsigned long long)mem_end);
	uint8_t *dst = fw_gpa(c, load_addr, mem_end - load_addr);
	if (!dst)
		return fw_fail(c, ERANGE, "multiboot: segment 0x%x - 0x%llx outside guest RAM (%llu MiB)", load_addr,
			       (unsigned long long)mem_end, (unsigned long long)(c->cfg->ram_size >> 20));
	memcpy(dst, c->image + file_off, len);
	fw_zero(c, dst + len, mem_end - end);
	if (entry < load_addr || entry >= mem_end)
		return fw_fail(c, ENOEXEC, "multiboot: entry_addr 0x%x is outside the loaded image 0x%x - 0x%llx", entry,
			       load_addr, (unsigned long long)mem_end);
	*info = (struct fw_elf_info){ .entry = entry, .lo = load_addr, .hi = mem_end };
	return 0;
}

static uint64_t info_string(struct fw_ctx *c, const char *s)
{
	size_t n = strlen(s) + 1;
	uint64_t a = fw_info_alloc(c, n, 1);
	if (a)
		memcpy(c->ram + a, s, n);
	return a;
}

static int load_modules(struct fw_ctx *c, uint64_t *next, uint8_t *mbi)
{
	const struct fw_config *cfg = c->cfg;
	if (!cfg->n_modules)
		return 0;
	if (cfg->n_modules > FW_MAX_MODULES)
		return fw_fail(c, E2BIG, "multiboot: %zu modules, at most %d", cfg->n_modules, FW_MAX_MODULES);
	uint64_t list = fw_info_alloc(c, 16 * cfg->n_modules, 16);
	if (!list)
		return fw_fail(c, ENOSPC, "multiboot: boot information area full (module list)");
	for (size_t i = 0; i < cfg->n_modules; i++) {
		const char *spec = cfg->modules[i];
		size_t plen = strcspn(spec, " ");
		char *path = strndup(spec, plen);
		uint8_t *data;
		size_t size;
		if (!path)
			return fw_fail(c, ENOMEM, "multiboot: out of memory");
		int r = fw_read_file(c, "module", path, &data, &size);
		if (r < 0) {
			free(path);
			return r;
		}
		uint64_t at = (*next + 0xfff) & ~0xfffull;
		if (!fw_loadable(c, at, size ? size : 1) || at + size > FW_4G) {
			fw_fail(c, ENOSPC, "--mem too small: module %s (%zu bytes) does not fit at 0x%llx below 0x%llx",
				path, size, (unsigned long long)at, (unsigned long long)c->low_end);
			free(data);
			free(path);
			return -ENOSPC;
		}
		memcpy(fw_gpa(c, at, size ? size : 1), data, size);
		free(data);
		free(path);
		uint64_t str = info_string(c, spec);
		if (!str)
			return fw_fail(c, ENOSPC, "multiboot: boot information area full (module strings)");
		uint8_t *m = c->ram + list + 16 * i;
		fw_wr32(m + 0, (uint32_t)at);
		fw_wr32(m + 4, (uint32_t)(at + size));
		fw_wr32(m + 8, (uint32_t)str);
		fw_wr32(m + 12, 0);
		*next = at + size;
	}
	fw_wr32(mbi + 0, fw_rd32(mbi) | MBI_MODS);
	fw_wr32(mbi + 20, (uint32_t)cfg->n_modules);
	fw_wr32(mbi + 24, (uint32_t)list);
	return 0;
}

int fw_multiboot_load(struct fw_ctx *c, size_t hdr, struct fw_boot *out)
{
	uint32_t flags = fw_rd32(c->image + hdr + 4);
	uint32_t unknown = flags & 0xffffu & ~(MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMINFO | MB_FLAG_VIDEO);
	struct fw_elf_info info;
	int r;

	if (unknown)
		return fw_fail(c, ENOTSUP, "multiboot: kernel %s requires features we do not provide (header flags 0x%x)",
			       c->cfg->kernel, unknown);
	if (flags & MB_FLAG_AOUT)
		r = load_aout(c, hdr, &info);
	else if (c->image_size >= 52 && memcmp(c->image, "\177ELF", 4) == 0)
		r = fw_elf_load(c, "multiboot", &info);
	else
		return fw_fail(c, ENOEXEC, "multiboot: kernel %s is not ELF and its header has no address fields (flag 16)",
			       c->cfg->kernel);
	if (r < 0)
		return r;
	if (info.entry >= FW_4G || info.hi > FW_4G)
		return fw_fail(c, ERANGE, "multiboot: kernel loads or enters above 4 GiB (entry 0x%llx)",
			       (unsigned long long)info.entry);

	uint64_t mbi_gpa = fw_info_alloc(c, MBI_SIZE, 8);
	if (!mbi_gpa)
		return fw_fail(c, ENOSPC, "multiboot: boot information area full");
	uint8_t *mbi = c->ram + mbi_gpa;
	fw_wr32(mbi + 0, MBI_MEM | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME);
	fw_wr32(mbi + 4, (uint32_t)(FW_LOW_END >> 10));
	fw_wr32(mbi + 8, (uint32_t)((c->low_end - FW_HIGH_BASE) >> 10));
	/* "kernel-path args", as GRUB and QEMU pass it: kvm-unit-tests take the first word as argv[0]. */
	const char *args = c->cfg->cmdline ? c->cfg->cmdline : "";
	size_t cl = strlen(c->cfg->kernel) + 1 + strlen(args) + 1;
	char *full = malloc(cl);
	if (!full)
		return fw_fail(c, ENOMEM, "multiboot: out of memory");
	snprintf(full, cl, "%s%s%s", c->cfg->kernel, args[0] ? " " : "", args);
	uint64_t cmd = info_string(c, full);
	free(full);
	uint64_t name = info_string(c, "rackvm");
	uint64_t mmap = fw_info_alloc(c, 24 * c->n_e820, 8);
	if (!cmd || !name || !mmap)
		return fw_fail(c, ENOSPC, "multiboot: boot information area full (command line of %zu bytes?)", cl);
	fw_wr32(mbi + 16, (uint32_t)cmd);
	fw_wr32(mbi + 64, (uint32_t)name);
	for (size_t i = 0; i < c->n_e820; i++) {
		uint8_t *e = c->ram + mmap + 24 * i;
		fw_wr32(e, 20);
		fw_wr64(e + 4, c->e820[i].addr);
		fw_wr64(e + 12, c->e820[i].size);
		fw_wr32(e + 20, c->e820[i].type);
	}
	fw_wr32(mbi + 44, (uint32_t)(24 * c->n_e820));
	fw_wr32(mbi + 48, (uint32_t)mmap);
	uint64_t next = info.hi;
	r = load_modules(c, &next, mbi);
	if (r < 0)
		return r;

	memset(&out->regs, 0, sizeof(out->regs));
	memset(&out->sregs, 0, sizeof(out->sregs));
	out->regs.rax = MB_BOOT_MAGIC;
	out->regs.rbx = mbi_gpa;
	out->regs.rip = info.entry;
	out->regs.rsp = FW_STACK_TOP;
	out->regs.rflags = 0x2;
	struct kvm_sregs *s = &out->sregs;
	fw_seg_flat(&s->cs, FW_SEL_CODE32, true, false);
	fw_seg_flat(&s->ds, FW_SEL_DATA, false, false);
	s->es = s->fs = s->gs = s->ss = s->ds;
	fw_sregs_common(s);
	s->cr0 = 0x11;                     /* PE | ET */
	return 0;
}
