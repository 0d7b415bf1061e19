// SPDX-License-Identifier: MIT
/*
 * fw_setup: validate the configuration, build the memory map, detect the kernel's format, build the ACPI tables,
 * run the loader, publish fw_cfg files. The layout is described in fw_internal.h and docs/firmware.md.
 *
 * Everything read from the kernel file is untrusted: every offset is checked against the file size before use,
 * and every write into guest RAM goes through fw_gpa(), which refuses ranges that are not RAM.
 */
#include "hypervisor/fw_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

/* Owned storage behind fw_boot.files (names and contents). */
struct fw_storage {
	void *blob[FW_MAX_FILES];
	size_t n;
};

int fw_fail(struct fw_ctx *c, int e, const char *fmt, ...)
{
	if (c->err && c->err_len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err, c->err_len, fmt, ap);
		va_end(ap);
	}
	return -e;
}

void *fw_gpa(const struct fw_ctx *c, uint64_t gpa, uint64_t len)
{
	if (gpa + len < gpa)
		return NULL;
	if (gpa + len <= c->low_end)
		return c->ram + gpa;
	if (gpa >= FW_4G && gpa - FW_4G <= c->high_size && len <= c->high_size - (gpa - FW_4G))
		return c->ram + c->low_end + (gpa - FW_4G);
	return NULL;
}

bool fw_loadable(const struct fw_ctx *c, uint64_t gpa, uint64_t len)
{
	return gpa >= FW_HIGH_BASE && fw_gpa(c, gpa, len) != NULL;
}

void fw_zero(const struct fw_ctx *c, void *p, size_t len)
{
	if (!c->cfg->ram_zeroed)
		memset(p, 0, len);
}

uint64_t fw_info_alloc(struct fw_ctx *c, uint64_t size, uint64_t align)
{
	uint64_t a = (c->info_next + align - 1) & ~(align - 1);
	if (size > FW_BOOTINFO_END || a > FW_BOOTINFO_END - size)
		return 0;
	c->info_next = a + size;
	fw_zero(c, c->ram + a, size);
	return a;
}

int fw_read_file(struct fw_ctx *c, const char *what, const char *path, uint8_t **data, size_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fw_fail(c, errno, "%s %s: %s", what, path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return fw_fail(c, e, "%s %s: %s", what, path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fw_fail(c, EINVAL, "%s %s: not a regular file", what, path);
	}
	/* Nothing we load can exceed guest RAM; refuse early so a huge file is not read for nothing. */
	if ((uint64_t)st.st_size > c->cfg->ram_size) {
		close(fd);
		return fw_fail(c, EFBIG, "%s %s (%lld bytes) is larger than guest RAM (%llu MiB)", what, path,
			       (long long)st.st_size, (unsigned long long)(c->cfg->ram_size >> 20));
	}
	uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		close(fd);
		return fw_fail(c, ENOMEM, "%s %s: out of memory", what, path);
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;
			free(buf);
			close(fd);
			return fw_fail(c, e, "%s %s: read failed: %s", what, path, r < 0 ? strerror(e) : "short file");
		}
		got += (size_t)r;
	}
	close(fd);
	*data = buf;
	*size = got;
	return 0;
}

void fw_seg_flat(struct kvm_segment *s, uint16_t sel, bool code, bool l64)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = code ? 0xb : 0x3; /* execute/read accessed; read/write accessed */
	s->present = 1;
	s->dpl = 0;
	s->db = l64 ? 0 : 1;
	s->s = 1;
	s->l = l64 ? 1 : 0;
	s->g = 1;
}

void fw_gdt_write(struct fw_ctx *c)
{
	uint8_t *g = fw_gpa(c, FW_GDT, 32);
	fw_wr64(g + 0, 0);
	fw_wr64(g + FW_SEL_CODE32, 0x00cf9b000000ffffull); /* base 0, limit 4G, code exec/read, D=1 G=1 */
	fw_wr64(g + FW_SEL_CODE64, 0x00af9b000000ffffull); /* L=1 */
	fw_wr64(g + FW_SEL_DATA, 0x00cf93000000ffffull);   /* data read/write, B=1 G=1 */
}

void fw_sregs_common(struct kvm_sregs *s)
{
	s->gdt.base = FW_GDT;
	s->gdt.limit = 31;
	s->idt.base = 0;
	s->idt.limit = 0;
	/* VMX needs a usable busy TSS and an LDT that is present or unusable; both are never loaded by the guest
	 * before it sets its own. */
	memset(&s->tr, 0, sizeof(s->tr));
	s->tr.limit = 0xffff;
	s->tr.type = 0xb;
	s->tr.present = 1;
	memset(&s->ldt, 0, sizeof(s->ldt));
	s->ldt.limit = 0xffff;
	s->ldt.type = 0x2;
	s->ldt.present = 1;
	s->apic_base = FW_LAPIC_ADDR | (1u << 11) | (1u << 8); /* enabled, BSP */
}

int fw_file_add(struct fw_boot *out, const char *name, const void *data, size_t size)
{
	struct fw_storage *st = out->file_storage;
	if (!st) {
		st = calloc(1, sizeof(*st));
		if (!st)
			return -ENOMEM;
		out->file_storage = st;
	}
	if (out->n_files >= FW_MAX_FILES || st->n >= FW_MAX_FILES || size > UINT32_MAX)
		return -ENOSPC;
	size_t nl = strlen(name) + 1;
	uint8_t *b = malloc(nl + size + 1);
	if (!b)
		return -ENOMEM;
	memcpy(b, name, nl);
	if (size)
		memcpy(b + nl, data, size);
	st->blob[st->n++] = b;
	out->files[out->n_files++] = (struct fw_file){ .name = (const char *)b, .data = b + nl, .size = (uint32_t)size };
	return 0;
}

void fw_boot_release(struct fw_boot *b)
{
	if (!b)
		return;
	struct fw_storage *st = b->file_storage;
	if (st) {
		for (size_t i = 0; i < st->n; i++)
			free(st->blob[i]);
		free(st);
	}
	b->file_storage = NULL;
	b->n_files = 0;
}

uint64_t fw_min_ram(void)
{
	/* The firmware area (first MiB) plus 1 MiB for a kernel; each loader reports a larger need precisely. */
	return 2ull << 20;
}

static void e820_add(struct fw_ctx *c, uint64_t addr, uint64_t size, uint32_t type)
{
	if (size && c->n_e820 < FW_E820_MAX)
		c->e820[c->n_e820++] = (struct fw_e820){ addr, size, type };
}

/* Usable low RAM, the EBDA/BIOS area (reserved: it holds the RSDP and ACPI tables, which must outlive boot),
 * RAM from 1 MiB to the hole, and RAM above 4 GiB. */
static void e820_build(struct fw_ctx *c)
{
	c->n_e820 = 0;
	e820_add(c, 0, FW_LOW_END, E820_RAM);
	e820_add(c, FW_LOW_END, FW_HIGH_BASE - FW_LOW_END, E820_RESERVED);
	e820_add(c, FW_HIGH_BASE, c->low_end - FW_HIGH_BASE, E820_RAM);
	e820_add(c, FW_4G, c->high_size, E820_RAM);
}

static int config_check(struct fw_ctx *c, const struct fw_config *cfg)
{
	if (!cfg->n_vcpus || !cfg->apic_ids)
		return fw_fail(c, EINVAL, "firmware: no vCPUs");
	if (!cfg->n_nodes)
		return fw_fail(c, EINVAL, "firmware: n_nodes must be at least 1");
	if (cfg->n_nodes > 1 && (!cfg->node_mem_base || !cfg->node_mem_size))
		return fw_fail(c, EINVAL, "firmware: %u nodes but no per-node memory ranges", cfg->n_nodes);
	if (cfg->node_of)
		for (unsigned i = 0; i < cfg->n_vcpus; i++)
			if (cfg->node_of[i] >= cfg->n_nodes)
				return fw_fail(c, EINVAL, "firmware: vCPU %u is on node %u of %u", i, cfg->node_of[i],
					       cfg->n_nodes);
	if (cfg->ram_size & 0xfff)
		return fw_fail(c, EINVAL, "firmware: RAM size 0x%llx is not a multiple of 4 KiB",
			       (unsigned long long)cfg->ram_size);
	if (cfg->ram_size < fw_min_ram())
		return fw_fail(c, EINVAL, "--mem too small: %llu KiB, the firmware area alone needs %llu KiB",
			       (unsigned long long)(cfg->ram_size >> 10), (unsigned long long)(fw_min_ram() >> 10));
	uint64_t hole = cfg->hole_start;
	if (!hole) {
		if (cfg->ram_size > FW_IOAPIC_ADDR)
			return fw_fail(c, EINVAL, "firmware: %llu MiB of RAM without a hole would cover the APIC MMIO",
				       (unsigned long long)(cfg->ram_size >> 20));
		hole = cfg->ram_size;
	}
	if (hole > FW_IOAPIC_ADDR || hole < FW_HIGH_BASE + (1ull << 20) || (hole & 0xfff))
		return fw_fail(c, EINVAL, "firmware: hole start 0x%llx must be 4 KiB aligned in [2 MiB, 0x%llx]",
			       (unsigned long long)hole, (unsigned long long)FW_IOAPIC_ADDR);
	c->low_end = cfg->ram_size < hole ? cfg->ram_size : hole;
	c->high_size = cfg->ram_size - c->low_end;
	return 0;
}

static bool is_elf(const uint8_t *img, size_t size)
{
	return size >= 52 && memcmp(img, "\177ELF", 4) == 0;
}

static int files_publish(struct fw_ctx *c, struct fw_boot *out)
{
	/* etc/e820 in QEMU's fw_cfg format: packed {u64 address, u64 length, u32 type} entries. */
	uint8_t e820[FW_E820_MAX * 20];
	for (size_t i = 0; i < c->n_e820; i++) {
		fw_wr64(e820 + 20 * i, c->e820[i].addr);
		fw_wr64(e820 + 20 * i + 8, c->e820[i].size);
		fw_wr32(e820 + 20 * i + 16, c->e820[i].type);
	}
	uint8_t rsdp[8];
	fw_wr64(rsdp, c->rsdp_gpa);
	if (fw_file_add(out, "etc/e820", e820, 20 * c->n_e820) < 0 || fw_file_add(out, "opt/rackvm/rsdp", rsdp, 8) < 0)
		return fw_fail(c, ENOMEM, "firmware: cannot publish fw_cfg files");
	return 0;
}

int fw_setup(const struct fw_config *cfg, void *ram, struct fw_boot *out, char *err, size_t err_len)
{
	struct fw_ctx c = { .cfg = cfg, .ram = ram, .err = err, .err_len = err_len, .info_next = FW_BOOTINFO };
	uint8_t *img = NULL;
	size_t img_size = 0;
	int r;

	if (err && err_len)
		err[0] = '\0';
	memset(out, 0, sizeof(*out));
	r = config_check(&c, cfg);
	if (r < 0)
		return r;
	if (!cfg->kernel)
		return fw_fail(&c, EINVAL, "firmware: no kernel given");
	/* The firmware area starts from zero whatever the buffer held. */
	fw_zero(&c, c.ram, FW_HIGH_BASE);
	e820_build(&c);
	fw_wr16(c.ram + 0x40e, (uint16_t)(FW_EBDA >> 4));
	fw_gdt_write(&c);

	r = fw_read_file(&c, "kernel", cfg->kernel, &img, &img_size);
	if (r < 0)
		return r;
	c.image = img;
	c.image_size = img_size;

	size_t mb_off;
	enum fw_kind kind;
	if (fw_multiboot_find(img, img_size, &mb_off)) {
		kind = FW_MULTIBOOT;
	} else if (fw_linux_is_bzimage(img, img_size)) {
		kind = FW_LINUX_BZIMAGE;
	} else if (fw_linux_is_vmlinux(img, img_size)) {
		kind = FW_LINUX_ELF;
	} else if (is_elf(img, img_size)) {
		r = fw_fail(&c, ENOEXEC, "kernel %s: ELF image without a multiboot header, and not an x86-64 Linux vmlinux",
			    cfg->kernel);
		goto out_free_img;
	} else {
		r = fw_fail(&c, ENOEXEC, "kernel %s is neither a multiboot ELF nor a Linux bzImage/vmlinux", cfg->kernel);
		goto out_free_img;
	}

	if (kind == FW_MULTIBOOT && cfg->initrd) {
		r = fw_fail(&c, EINVAL, "an initrd is for Linux kernels; %s is multiboot (pass it as a module)", cfg->kernel);
		goto out_free_img;
	}
	if (kind != FW_MULTIBOOT && cfg->n_modules) {
		r = fw_fail(&c, EINVAL, "modules are for multiboot kernels; %s is Linux (use an initrd)", cfg->kernel);
		goto out_free_img;
	}
	r = fw_acpi_build(&c);
	if (r < 0)
		goto out_free_img;
	out->kind = kind;
	out->rsdp_gpa = c.rsdp_gpa;
	r = kind == FW_MULTIBOOT ? fw_multiboot_load(&c, mb_off, out) : fw_linux_load(&c, kind, out);
	if (r < 0)
		goto out_release;
	r = files_publish(&c, out);
	if (r < 0)
		goto out_release;
	free(img);
	return 0;

out_release:
	fw_boot_release(out);
out_free_img:
	free(img);
	return r;
}

int fw_files_only(const struct fw_config *cfg, struct fw_boot *out, char *err, size_t err_len)
{
	struct fw_ctx c = { .cfg = cfg, .err = err, .err_len = err_len };
	if (err && err_len)
		err[0] = '\0';
	memset(out, 0, sizeof(*out));
	int r = config_check(&c, cfg);
	if (r < 0)
		return r;
	e820_build(&c);
	c.rsdp_gpa = FW_ACPI_BASE;         /* acpi.c puts the RSDP first */
	out->rsdp_gpa = c.rsdp_gpa;
	r = files_publish(&c, out);
	if (r < 0)
		fw_boot_release(out);
	return r;
}

int fw_e820_get(const struct fw_config *cfg, struct fw_e820 *out, size_t max, size_t *n, char *err, size_t err_len)
{
	struct fw_ctx c = { .cfg = cfg, .err = err, .err_len = err_len };
	int r = config_check(&c, cfg);
	if (r < 0)
		return r;
	e820_build(&c);
	*n = c.n_e820 < max ? c.n_e820 : max;
	memcpy(out, c.e820, *n * sizeof(*out));
	return 0;
}

/* ELF32 or ELF64 (little endian, i386 or x86-64): copy every PT_LOAD segment to its physical address and zero
 * its bss. The entry is translated from virtual to physical when it lies in a segment's virtual range. */
int fw_elf_load(struct fw_ctx *c, const char *what, struct fw_elf_info *info)
{
	const uint8_t *img = c->image;
	size_t size = c->image_size;
	if (size < 52 || memcmp(img, "\177ELF", 4) || img[5] != 1)
		return fw_fail(c, ENOEXEC, "%s: not a little-endian ELF file", what);
	bool is64 = img[4] == 2;
	if (img[4] != 1 && !is64)
		return fw_fail(c, ENOEXEC, "%s: unknown ELF class %u", what, img[4]);
	if (is64 && size < 64)
		return fw_fail(c, ENOEXEC, "%s: truncated ELF header", what);
	uint16_t machine = fw_rd16(img + 18);
	if (machine != 3 && machine != 62)
		return fw_fail(c, ENOEXEC, "%s: ELF machine %u is not i386 or x86-64", what, machine);
	uint64_t entry = is64 ? fw_rd64(img + 24) : fw_rd32(img + 24);
	uint64_t phoff = is64 ? fw_rd64(img + 32) : fw_rd32(img + 28);
	uint16_t phentsize = fw_rd16(img + (is64 ? 54 : 42)), phnum = fw_rd16(img + (is64 ? 56 : 44));
	size_t min_ent = is64 ? 56 : 32;
	if (phentsize < min_ent || phnum == 0 || phoff > size || (uint64_t)phnum * phentsize > size - phoff)
		return fw_fail(c, ENOEXEC, "%s: ELF program headers out of the file (offset 0x%llx, %u x %u bytes)", what,
			       (unsigned long long)phoff, phnum, phentsize);
	info->lo = UINT64_MAX;
	info->hi = 0;
	info->entry = entry;
	info->is64 = is64;
	bool entry_mapped = false;
	unsigned loaded = 0;
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = img + phoff + (size_t)i * phentsize;
		if (fw_rd32(ph) != 1)          /* PT_LOAD */
			continue;
		uint64_t off = is64 ? fw_rd64(ph + 8) : fw_rd32(ph + 4);
		uint64_t vaddr = is64 ? fw_rd64(ph + 16) : fw_rd32(ph + 8);
		uint64_t paddr = is64 ? fw_rd64(ph + 24) : fw_rd32(ph + 12);
		uint64_t filesz = is64 ? fw_rd64(ph + 32) : fw_rd32(ph + 16);
		uint64_t memsz = is64 ? fw_rd64(ph + 40) : fw_rd32(ph + 20);
		if (!memsz)
			continue;
		if (filesz > memsz || off > size || filesz > size - off)
			return fw_fail(c, ENOEXEC, "%s: segment %u (file offset 0x%llx, 0x%llx bytes) is out of the file",
				       what, i, (unsigned long long)off, (unsigned long long)filesz);
		if (paddr + memsz < paddr)
			return fw_fail(c, ENOEXEC, "%s: segment %u wraps around the address space", what, i);
		if (paddr < FW_HIGH_BASE)
			return fw_fail(c, ERANGE, "%s: segment 0x%llx - 0x%llx overlaps the firmware area below 1 MiB",
				       what, (unsigned long long)paddr, (unsigned long long)(paddr + memsz));
		uint8_t *dst = fw_gpa(c, paddr, memsz);
		if (!dst)
			return fw_fail(c, ERANGE, "%s: segment 0x%llx - 0x%llx outside guest RAM (%llu MiB)", what,
				       (unsigned long long)paddr, (unsigned long long)(paddr + memsz),
				       (unsigned long long)(c->cfg->ram_size >> 20));
		memcpy(dst, img + off, filesz);
		fw_zero(c, dst + filesz, memsz - filesz);
		info->lo = paddr < info->lo ? paddr : info->lo;
		info->hi = paddr + memsz > info->hi ? paddr + memsz : info->hi;
		if (!entry_mapped && entry >= vaddr && entry - vaddr < memsz) {
			info->entry = entry - vaddr + paddr;
			entry_mapped = true;
		}
		loaded++;
	}
	if (!loaded)
		return fw_fail(c, ENOEXEC, "%s: ELF file has no loadable segment", what);
	if (!fw_gpa(c, info->entry, 1) || info->entry < info->lo || info->entry >= info->hi)
		return fw_fail(c, ENOEXEC, "%s: entry point 0x%llx is not in a loaded segment", what,
			       (unsigned long long)info->entry);
	return 0;
}
