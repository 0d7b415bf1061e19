// SPDX-License-Identifier: MIT
/*
 * Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 64-bit entry only.
 *
 * bzImage: setup header at 0x1f1 ("HdrS" at 0x202), protocol 2.12 or later with XLF_KERNEL_64 and LOADED_HIGH.
 * The protected-mode part (file offset (setup_sects + 1) * 512, setup_sects 0 meaning 4) is loaded at pref_address
 * when init_size bytes fit there, else (relocatable kernels) at 1 MiB rounded up to kernel_alignment; the entry is
 * load address + 0x200 (startup_64). We never decompress: the bzImage decompresses itself inside init_size.
 *
 * vmlinux: an x86-64 ELF64 without a multiboot header. PT_LOAD segments go to their physical addresses; the entry
 * is e_entry translated to physical. The setup header is constructed (version 2.15, loader 0xff, LOADED_HIGH |
 * CAN_USE_HEAP, XLF_KERNEL_64, cmdline_size 2047, initrd_addr_max 0x7fffffff).
 *
 * Both: the zero page (struct boot_params) in the boot info area, the header copied or constructed, our loader
 * fields set (type_of_loader 0xff, heap_end_ptr, code32_start, cmd_line_ptr, ramdisk_*, ext_*), e820_table,
 * acpi_rsdp_addr. The command line follows the zero page. The initrd goes as high as allowed: page aligned, below
 * min(initrd_addr_max + 1, end of low RAM), above the kernel's init_size area.
 *
 * Entry state (boot.rst "64-bit Boot Protocol"): long mode, identity map of 0-4 GiB with 2 MiB pages (PML4 0x2000,
 * PDPT 0x3000, PDs 0x4000-0x7fff), GDT at 0x1000 with __BOOT_CS = 0x10 (64-bit code) and __BOOT_DS = 0x18,
 * CS = 0x10, DS/ES/SS (and FS/GS) = 0x18, interrupts off (RFLAGS = 0x2), CR0 = PE|ET|PG, CR4 = PAE,
 * EFER = LME|LMA, CR3 = 0x2000, RSI = zero page, RSP = 0xa000.
 */
#include "hypervisor/fw_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* struct boot_params offsets (arch/x86/include/uapi/asm/bootparam.h). */
#define BP_ACPI_RSDP 0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_HDR 0x1f1
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128
/* struct setup_header, at the same offsets in the image and in boot_params. */
#define HDR_SETUP_SECTS 0x1f1
#define HDR_SYSSIZE 0x1f4
#define HDR_BOOT_FLAG 0x1fe
#define HDR_JUMP 0x200
#define HDR_HEADER 0x202
#define HDR_VERSION 0x206
#define HDR_TYPE_OF_LOADER 0x210
#define HDR_LOADFLAGS 0x211
#define HDR_CODE32_START 0x214
#define HDR_RAMDISK_IMAGE 0x218
#define HDR_RAMDISK_SIZE 0x21c
#define HDR_HEAP_END_PTR 0x224
#define HDR_CMD_LINE_PTR 0x228
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE 0x234
#define HDR_XLOADFLAGS 0x236
#define HDR_CMDLINE_SIZE 0x238
#define HDR_PREF_ADDRESS 0x258
#define HDR_INIT_SIZE 0x260
#define HDR_END_MAX 0x290              /* boot_params has room for the header up to here */

#define LOADED_HIGH 0x01
#define CAN_USE_HEAP 0x80
#define XLF_KERNEL_64 0x01

struct linux_image {
	uint64_t load, init_size, entry;
};

bool fw_linux_is_bzimage(const uint8_t *img, size_t size)
{
	return size >= HDR_HEADER + 4 && memcmp(img + HDR_HEADER, "HdrS", 4) == 0;
}

bool fw_linux_is_vmlinux(const uint8_t *img, size_t size)
{
	return size >= 64 && memcmp(img, "\177ELF", 4) == 0 && img[4] == 2 && img[5] == 1 && fw_rd16(img + 18) == 62;
}

static int load_bzimage(struct fw_ctx *c, uint8_t *bp, struct linux_image *li)
{
	const uint8_t *img = c->image;
	size_t size = c->image_size;
	const char *k = c->cfg->kernel;
	if (size < 0x264)
		return fw_fail(c, ENOEXEC, "bzImage %s: truncated setup header (%zu bytes)", k, size);
	uint16_t version = fw_rd16(img + HDR_VERSION);
	if (version < 0x020c)
		return fw_fail(c, ENOEXEC, "bzImage %s: Linux boot protocol %u.%02u is too old (2.12 with a 64-bit entry needed)",
			       k, version >> 8, version & 0xff);
	size_t hdr_end = 0x202 + img[HDR_JUMP + 1];
	if (hdr_end > HDR_END_MAX)
		hdr_end = HDR_END_MAX;
	if (hdr_end < HDR_CMDLINE_SIZE + 4 || hdr_end > size)
		return fw_fail(c, ENOEXEC, "bzImage %s: setup header end 0x%zx is out of range", k, hdr_end);
	if (!(img[HDR_LOADFLAGS] & LOADED_HIGH))
		return fw_fail(c, ENOEXEC, "bzImage %s: a zImage (loaded low) is not supported", k);
	if (!(fw_rd16(img + HDR_XLOADFLAGS) & XLF_KERNEL_64))
		return fw_fail(c, ENOEXEC, "bzImage %s: kernel has no 64-bit entry point (xloadflags 0x%x)", k,
			       fw_rd16(img + HDR_XLOADFLAGS));
	unsigned setup_sects = img[HDR_SETUP_SECTS] ? img[HDR_SETUP_SECTS] : 4;
	size_t pm_off = (size_t)(setup_sects + 1) * 512;
	uint64_t syssize = (uint64_t)fw_rd32(img + HDR_SYSSIZE) * 16;
	if (pm_off >= size || syssize > size - pm_off)
		return fw_fail(c, ENOEXEC, "bzImage %s: truncated (%zu bytes; setup %zu + kernel %llu expected)", k, size,
			       pm_off, (unsigned long long)syssize);
	uint64_t pm_size = size - pm_off;
	uint64_t init_size = hdr_end >= HDR_INIT_SIZE + 4 ? fw_rd32(img + HDR_INIT_SIZE) : 0;
	if (init_size < pm_size)
		init_size = pm_size;
	uint64_t pref = hdr_end >= HDR_PREF_ADDRESS + 8 ? fw_rd64(img + HDR_PREF_ADDRESS) : 0;
	uint64_t align = fw_rd32(img + HDR_KERNEL_ALIGNMENT);
	bool reloc = img[HDR_RELOCATABLE] != 0;
	if (!align || (align & (align - 1)) || align > (1ull << 30))
		align = 2ull << 20;

	uint64_t load = 0;
	if (pref >= FW_HIGH_BASE && pref + init_size <= FW_4G && fw_loadable(c, pref, init_size))
		load = pref;
	else if (reloc) {
		uint64_t a = (FW_HIGH_BASE + align - 1) & ~(align - 1);
		if (fw_loadable(c, a, init_size))
			load = a;
	} else if (!pref && fw_loadable(c, FW_HIGH_BASE, init_size)) {
		load = FW_HIGH_BASE;
	}
	if (!load)
		return fw_fail(c, ENOSPC, "--mem too small: bzImage %s needs %llu MiB at 0x%llx (init_size), RAM below "
			       "the hole ends at 0x%llx", k, (unsigned long long)((init_size + (1 << 20) - 1) >> 20),
			       (unsigned long long)(pref >= FW_HIGH_BASE ? pref : FW_HIGH_BASE),
			       (unsigned long long)c->low_end);
	memcpy(fw_gpa(c, load, pm_size), img + pm_off, pm_size);
	memcpy(bp + BP_HDR, img + BP_HDR, hdr_end - BP_HDR);
	li->load = load;
	li->init_size = init_size;
	li->entry = load + 0x200;
	return 0;
}

static int load_vmlinux(struct fw_ctx *c, uint8_t *bp, struct linux_image *li)
{
	struct fw_elf_info info;
	int r = fw_elf_load(c, "vmlinux", &info);
	if (r < 0)
		return r;
	if (info.hi > FW_4G)
		return fw_fail(c, ERANGE, "vmlinux %s: loads above 4 GiB (outside the boot identity map)", c->cfg->kernel);
	fw_wr16(bp + HDR_BOOT_FLAG, 0xaa55);
	memcpy(bp + HDR_HEADER, "HdrS", 4);
	fw_wr16(bp + HDR_VERSION, 0x020f);
	bp[HDR_LOADFLAGS] = LOADED_HIGH;
	fw_wr32(bp + HDR_INITRD_ADDR_MAX, 0x7fffffff);
	fw_wr32(bp + HDR_KERNEL_ALIGNMENT, 2u << 20);
	fw_wr16(bp + HDR_XLOADFLAGS, XLF_KERNEL_64);
	fw_wr32(bp + HDR_CMDLINE_SIZE, 2047);
	fw_wr64(bp + HDR_PREF_ADDRESS, info.lo);
	fw_wr32(bp + HDR_INIT_SIZE, (uint32_t)(info.hi - info.lo));
	li->load = info.lo;
	li->init_size = info.hi - info.lo;
	li->entry = info.entry;
	return 0;
}

/*
 * Is this something Linux's initramfs unpacker takes? After any leading zero bytes (it skips them), a cpio header
 * ("070701", "070702", "070707", or the old binary one) or the magic of a decompressor the kernel may have (gzip,
 * bzip2, lzma, xz, lzo, lz4, zstd). A random or empty file is refused here with one line; a compressed archive
 * damaged further in is only seen by Linux ("Initramfs unpacking failed").
 */
static bool initrd_recognised(const uint8_t *d, size_t n)
{
	static const struct { uint8_t len; uint8_t b[6]; } magic[] = {
		{ 6, "070701" }, { 6, "070702" }, { 6, "070707" }, { 2, { 0xc7, 0x71 } }, { 2, { 0x71, 0xc7 } },
		{ 2, { 0x1f, 0x8b } }, { 2, { 0x1f, 0x9e } }, { 3, "BZh" }, { 3, { 0x5d, 0x00, 0x00 } },
		{ 6, { 0xfd, '7', 'z', 'X', 'Z', 0x00 } }, { 4, { 0x89, 'L', 'Z', 'O' } },
		{ 4, { 0x02, 0x21, 0x4c, 0x18 } }, { 4, { 0x28, 0xb5, 0x2f, 0xfd } },
	};
	size_t i = 0;

	while (i < n && !d[i])
		i++;
	for (size_t k = 0; k < sizeof(magic) / sizeof(magic[0]); k++)
		if (n - i >= magic[k].len && !memcmp(d + i, magic[k].b, magic[k].len))
			return true;
	return false;
}

static int place_initrd(struct fw_ctx *c, uint8_t *bp, const struct linux_image *li)
{
	uint8_t *data;
	size_t size;
	int r = fw_read_file(c, "initrd", c->cfg->initrd, &data, &size);
	if (r < 0)
		return r;
	if (!initrd_recognised(data, size)) {
		free(data);
		return fw_fail(c, EINVAL, "initrd %s: not an initramfs (no cpio header and no gzip, bzip2, lzma, xz, lzo, "
			       "lz4 or zstd magic)", c->cfg->initrd);
	}
	uint64_t max = fw_rd32(bp + HDR_INITRD_ADDR_MAX);
	uint64_t top = c->low_end;
	if (max && max + 1 < top)
		top = max + 1;
	uint64_t floor = li->load + li->init_size;
	uint64_t at = top > size ? (top - size) & ~0xfffull : 0;
	if (at < floor || !fw_loadable(c, at, size ? size : 1)) {
		free(data);
		return fw_fail(c, ENOSPC, "--mem too small: initrd %s (%zu bytes) does not fit between the kernel (ends "
			       "0x%llx) and 0x%llx", c->cfg->initrd, size, (unsigned long long)floor,
			       (unsigned long long)top);
	}
	memcpy(fw_gpa(c, at, size ? size : 1), data, size);
	free(data);
	fw_wr32(bp + HDR_RAMDISK_IMAGE, (uint32_t)at);
	fw_wr32(bp + HDR_RAMDISK_SIZE, (uint32_t)size);
	fw_wr32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(at >> 32));
	fw_wr32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)((uint64_t)size >> 32));
	return 0;
}

static void page_tables_write(struct fw_ctx *c)
{
	uint8_t *pml4 = fw_gpa(c, FW_PML4, 0x1000), *pdpt = fw_gpa(c, FW_PDPT, 0x1000);
	fw_zero(c, pml4, 0x1000);
	fw_zero(c, pdpt, 0x1000);
	fw_wr64(pml4, FW_PDPT | 0x3);      /* present, writable */
	for (uint64_t i = 0; i < 4; i++) {
		uint8_t *pd = fw_gpa(c, FW_PD + 0x1000 * i, 0x1000);
		fw_wr64(pdpt + 8 * i, (FW_PD + 0x1000 * i) | 0x3);
		for (uint64_t j = 0; j < 512; j++)
			fw_wr64(pd + 8 * j, ((i << 30) + (j << 21)) | 0x83); /* present, writable, 2 MiB page */
	}
}

int fw_linux_load(struct fw_ctx *c, enum fw_kind kind, struct fw_boot *out)
{
	struct linux_image li = { 0 };
	uint64_t bp_gpa = fw_info_alloc(c, 0x1000, 0x1000);
	if (!bp_gpa)
		return fw_fail(c, ENOSPC, "linux: boot information area full");
	uint8_t *bp = c->ram + bp_gpa;
	int r = kind == FW_LINUX_BZIMAGE ? load_bzimage(c, bp, &li) : load_vmlinux(c, bp, &li);
	if (r < 0)
		return r;

	bp[HDR_TYPE_OF_LOADER] = 0xff;
	bp[HDR_LOADFLAGS] |= CAN_USE_HEAP;
	fw_wr16(bp + HDR_HEAP_END_PTR, 0xfe00);
	fw_wr32(bp + HDR_CODE32_START, (uint32_t)li.load);
	const char *cmdline = c->cfg->cmdline ? c->cfg->cmdline : "";
	size_t len = strlen(cmdline);
	uint32_t max = fw_rd32(bp + HDR_CMDLINE_SIZE);
	if (len > max)
		return fw_fail(c, E2BIG, "linux: command line is %zu bytes, the kernel accepts at most %u", len, max);
	uint64_t cmd = fw_info_alloc(c, len + 1, 16);
	if (!cmd)
		return fw_fail(c, ENOSPC, "linux: boot information area full (command line of %zu bytes)", len);
	memcpy(c->ram + cmd, cmdline, len + 1);
	fw_wr32(bp + HDR_CMD_LINE_PTR, (uint32_t)cmd);
	fw_wr32(bp + BP_EXT_CMD_LINE_PTR, (uint32_t)(cmd >> 32));
	if (c->cfg->initrd) {
		r = place_initrd(c, bp, &li);
		if (r < 0)
			return r;
	}
	size_t n = c->n_e820 < BP_E820_MAX ? c->n_e820 : BP_E820_MAX;
	for (size_t i = 0; i < n; i++) {
		uint8_t *e = bp + BP_E820_TABLE + 20 * i;
		fw_wr64(e, c->e820[i].addr);
		fw_wr64(e + 8, c->e820[i].size);
		fw_wr32(e + 16, c->e820[i].type);
	}
	bp[BP_E820_ENTRIES] = (uint8_t)n;
	fw_wr64(bp + BP_ACPI_RSDP, c->rsdp_gpa);
	page_tables_write(c);

	memset(&out->regs, 0, sizeof(out->regs));
	memset(&out->sregs, 0, sizeof(out->sregs));
	out->regs.rsi = bp_gpa;
	out->regs.rip = li.entry;
	out->regs.rsp = FW_STACK_TOP;
	out->regs.rflags = 0x2;
	struct kvm_sregs *s = &out->sregs;
	fw_seg_flat(&s->cs, FW_SEL_CODE64, true, true);
	fw_seg_flat(&s->ds, FW_SEL_DATA, false, false);
	s->es = s->fs = s->gs = s->ss = s->ds;
	fw_sregs_common(s);
	s->cr0 = 0x80000011;               /* PG | ET | PE */
	s->cr3 = FW_PML4;
	s->cr4 = 0x20;                     /* PAE */
	s->efer = 0x500;                   /* LME | LMA */
	return 0;
}
