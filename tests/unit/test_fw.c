// SPDX-License-Identifier: MIT
/*
 * Firmware tests: e820 layouts, ACPI tables (checksums, lengths, MADT/SRAT/SLIT contents, iasl -d), CPUID topology,
 * the multiboot loader (synthetic images and the guest SDK's topology.elf), the Linux loader (synthetic bzImage and
 * vmlinux), every bad-input message, and a byte-flipping/truncating robustness loop.
 *
 *   test_fw                      all of the above
 *   test_fw --linux-image PATH   only the real-kernel check (tests/unit/test_linux_image.sh passes a Debian vmlinuz)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "hypervisor/fw_internal.h"
#include "util/log.h"
#include "util/rand.h"

#define MIB (1ull << 20)
#define GIB (1ull << 30)

static char tmpdir[64];
static const char *linux_image_path;

/* ---- helpers ---- */

static uint8_t *ram_new(uint64_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

static void ram_free(uint8_t *ram, uint64_t size)
{
	munmap(ram, size);
}

static const char *tmp_write(const char *name, const void *data, size_t len)
{
	static char paths[32][128];
	static unsigned next;
	char *p = paths[next++ % 32];
	snprintf(p, 128, "%s/%s", tmpdir, name);
	FILE *f = fopen(p, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
	return p;
}

static uint8_t sum8(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	while (n--)
		s += *p++;
	return s;
}

static const uint32_t ids4[] = { 0, 1, 2, 3 };

static struct fw_config cfg_basic(uint64_t ram_size, const char *kernel)
{
	return (struct fw_config){ .n_vcpus = 1, .apic_ids = ids4, .n_nodes = 1, .ram_size = ram_size,
				   .hole_start = 0xc0000000, .kernel = kernel };
}

/* A multiboot ELF32: header at file offset 0x1000 inside one PT_LOAD at 1 MiB (filesz 0x2000, memsz 0x3000). */
#define MB_ENTRY 0x100100
static size_t make_mb_elf(uint8_t *buf, uint32_t mb_flags, uint32_t paddr)
{
	size_t len = 0x3000;
	memset(buf, 0, len);
	memcpy(buf, "\177ELF", 4);
	buf[4] = 1;
	buf[5] = 1;
	buf[6] = 1;
	fw_wr16(buf + 16, 2);
	fw_wr16(buf + 18, 3);
	fw_wr32(buf + 20, 1);
	fw_wr32(buf + 24, paddr + 0x100);
	fw_wr32(buf + 28, 52);
	fw_wr16(buf + 40, 52);
	fw_wr16(buf + 42, 32);
	fw_wr16(buf + 44, 1);
	uint8_t *ph = buf + 52;
	fw_wr32(ph, 1);
	fw_wr32(ph + 4, 0x1000);
	fw_wr32(ph + 8, paddr);
	fw_wr32(ph + 12, paddr);
	fw_wr32(ph + 16, 0x2000);
	fw_wr32(ph + 20, 0x3000);
	fw_wr32(ph + 24, 5);
	uint8_t *h = buf + 0x1000;
	fw_wr32(h, 0x1BADB002);
	fw_wr32(h + 4, mb_flags);
	fw_wr32(h + 8, (uint32_t)-(0x1BADB002u + mb_flags));
	for (int i = 0x100; i < 0x2000; i++)
		buf[0x1000 + i] = (uint8_t)(i * 7);
	return len;
}

/* A bzImage: 4 setup sectors, protocol 2.15, 64-bit entry, relocatable, pref 16 MiB, init_size 4 MiB. */
#define BZ_PM_SIZE 0x4000
static size_t make_bzimage(uint8_t *buf, uint16_t version)
{
	size_t pm_off = 5 * 512, len = pm_off + BZ_PM_SIZE;
	memset(buf, 0, len);
	buf[0x1f1] = 4;
	fw_wr32(buf + 0x1f4, BZ_PM_SIZE / 16);
	fw_wr16(buf + 0x1fe, 0xaa55);
	buf[0x200] = 0xeb;
	buf[0x201] = 0x66;                 /* header ends at 0x268 */
	memcpy(buf + 0x202, "HdrS", 4);
	fw_wr16(buf + 0x206, version);
	fw_wr16(buf + 0x20e, 0x1234);      /* kernel_version: a value the loader must keep */
	buf[0x211] = 0x01;                 /* LOADED_HIGH */
	fw_wr32(buf + 0x214, 0x100000);
	fw_wr32(buf + 0x22c, 0x7fffffff);
	fw_wr32(buf + 0x230, 0x200000);
	buf[0x234] = 1;
	fw_wr16(buf + 0x236, 0x3);         /* XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G */
	fw_wr32(buf + 0x238, 2047);
	fw_wr64(buf + 0x258, 0x1000000);
	fw_wr32(buf + 0x260, 0x400000);
	for (size_t i = 0; i < BZ_PM_SIZE; i++)
		buf[pm_off + i] = (uint8_t)(i * 13 + 1);
	return len;
}

/* A vmlinux: ELF64 x86-64, one PT_LOAD vaddr 0xffffffff81000000 -> paddr 16 MiB, entry at +0x100 (virtual). */
static size_t make_vmlinux(uint8_t *buf)
{
	size_t len = 0x3000;
	memset(buf, 0, len);
	memcpy(buf, "\177ELF", 4);
	buf[4] = 2;
	buf[5] = 1;
	buf[6] = 1;
	fw_wr16(buf + 16, 2);
	fw_wr16(buf + 18, 62);
	fw_wr32(buf + 20, 1);
	fw_wr64(buf + 24, 0xffffffff81000100ull);
	fw_wr64(buf + 32, 64);
	fw_wr16(buf + 52, 64);
	fw_wr16(buf + 54, 56);
	fw_wr16(buf + 56, 1);
	uint8_t *ph = buf + 64;
	fw_wr32(ph, 1);
	fw_wr32(ph + 4, 5);
	fw_wr64(ph + 8, 0x1000);
	fw_wr64(ph + 16, 0xffffffff81000000ull);
	fw_wr64(ph + 24, 0x1000000);
	fw_wr64(ph + 32, 0x2000);
	fw_wr64(ph + 40, 0x5000);
	for (int i = 0; i < 0x2000; i++)
		buf[0x1000 + i] = (uint8_t)(i * 3 + 5);
	return len;
}

static int setup(struct fw_config *cfg, uint8_t *ram, struct fw_boot *b, char *err)
{
	return fw_setup(cfg, ram, b, err, 256);
}

/* Expect failure with a message containing `needle`. */
static void expect_fail(struct fw_config *cfg, uint8_t *ram, const char *needle)
{
	struct fw_boot b;
	char err[256] = "";
	int r = setup(cfg, ram, &b, err);
	if (r >= 0 || !strstr(err, needle))
		fail_msg("expected failure with \"%s\", got %d \"%s\"", needle, r, err);
	assert_null(strchr(err, '\n'));
	fw_boot_release(&b);
}

/* ---- e820 ---- */

static void check_e820(uint64_t ram_size, const struct fw_e820 *want, size_t n_want)
{
	struct fw_config cfg = cfg_basic(ram_size, "x");
	struct fw_e820 e[FW_E820_MAX];
	size_t n = 0;
	char err[128];
	assert_int_equal(fw_e820_get(&cfg, e, FW_E820_MAX, &n, err, sizeof(err)), 0);
	assert_int_equal(n, n_want);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(e[i].addr, want[i].addr);
		assert_int_equal(e[i].size, want[i].size);
		assert_int_equal(e[i].type, want[i].type);
	}
}

static void test_e820_64m(void **state)
{
	const struct fw_e820 w[] = { { 0, 0x9fc00, 1 }, { 0x9fc00, 0x60400, 2 }, { MIB, 63 * MIB, 1 } };
	check_e820(64 * MIB, w, 3);
}

static void test_e820_3g5(void **state)
{
	const struct fw_e820 w[] = { { 0, 0x9fc00, 1 }, { 0x9fc00, 0x60400, 2 }, { MIB, 3 * GIB - MIB, 1 },
				     { 4 * GIB, GIB / 2, 1 } };
	check_e820(3 * GIB + GIB / 2, w, 4);
}

static void test_e820_6g(void **state)
{
	const struct fw_e820 w[] = { { 0, 0x9fc00, 1 }, { 0x9fc00, 0x60400, 2 }, { MIB, 3 * GIB - MIB, 1 },
				     { 4 * GIB, 3 * GIB, 1 } };
	check_e820(6 * GIB, w, 4);
}

static void test_e820_no_hole(void **state)
{
	struct fw_config cfg = cfg_basic(64 * MIB, "x");
	cfg.hole_start = 0;
	struct fw_e820 e[FW_E820_MAX];
	size_t n;
	char err[128];
	assert_int_equal(fw_e820_get(&cfg, e, FW_E820_MAX, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_int_equal(e[2].size, 63 * MIB);
	cfg.ram_size = 5 * GIB;            /* no hole but RAM over the APIC window */
	assert_true(fw_e820_get(&cfg, e, FW_E820_MAX, &n, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "APIC"));
}

/* Guest-physical to host offset: identity below the hole, hole_start + (gpa - 4 GiB) above 4 GiB, NULL elsewhere. */
static void test_gpa_map(void **state)
{
	uint8_t *base = ram_new(64 * MIB);  /* mapped, never touched */
	struct fw_ctx c = { .ram = base, .low_end = 48 * MIB, .high_size = 16 * MIB };
	assert_ptr_equal(fw_gpa(&c, 0, 4096), base);
	assert_ptr_equal(fw_gpa(&c, 48 * MIB - 4096, 4096), base + 48 * MIB - 4096);
	assert_null(fw_gpa(&c, 48 * MIB - 4096, 4097));                /* runs into the hole */
	assert_null(fw_gpa(&c, 64 * MIB, 1));                          /* in the hole */
	assert_null(fw_gpa(&c, 4 * GIB - 1, 2));
	assert_ptr_equal(fw_gpa(&c, 4 * GIB, 16 * MIB), base + 48 * MIB);
	assert_ptr_equal(fw_gpa(&c, 4 * GIB + MIB, 4096), base + 49 * MIB);
	assert_null(fw_gpa(&c, 4 * GIB + 16 * MIB - 1, 2));            /* past the end of RAM */
	assert_null(fw_gpa(&c, UINT64_MAX - 10, 100));                 /* wraps */
	assert_false(fw_loadable(&c, 0x9000, 4096));                  /* below 1 MiB: firmware area */
	assert_true(fw_loadable(&c, MIB, 4096));
	ram_free(base, 64 * MIB);
}

/* ---- ACPI ---- */

struct acpi_view {
	const uint8_t *rsdp, *rsdt, *xsdt, *fadt, *facs, *dsdt, *madt, *srat, *slit;
};

static const uint8_t *table_at(const uint8_t *ram, uint64_t gpa)
{
	assert_true(gpa >= FW_ACPI_BASE && gpa < FW_ACPI_END);
	const uint8_t *t = ram + gpa;
	uint32_t len = fw_rd32(t + 4);
	assert_true(len >= 36 && gpa + len <= FW_ACPI_END);
	if (memcmp(t, "FACS", 4) != 0 && sum8(t, len) != 0)
		fail_msg("%.4s: bad checksum", (const char *)t);
	return t;
}

/* Finds the RSDP by the guest's scan and walks every table, checking checksums and lengths. */
static void acpi_walk(const uint8_t *ram, struct acpi_view *v)
{
	memset(v, 0, sizeof(*v));
	for (uint64_t a = 0xe0000; a < 0x100000; a += 16)
		if (memcmp(ram + a, "RSD PTR ", 8) == 0) {
			v->rsdp = ram + a;
			break;
		}
	assert_non_null(v->rsdp);
	assert_int_equal(sum8(v->rsdp, 20), 0);
	assert_int_equal(v->rsdp[15], 2);
	assert_int_equal(fw_rd32(v->rsdp + 20), 36);
	assert_int_equal(sum8(v->rsdp, 36), 0);
	v->rsdt = table_at(ram, fw_rd32(v->rsdp + 16));
	v->xsdt = table_at(ram, fw_rd64(v->rsdp + 24));
	assert_memory_equal(v->rsdt, "RSDT", 4);
	assert_memory_equal(v->xsdt, "XSDT", 4);
	size_t n = (fw_rd32(v->xsdt + 4) - 36) / 8;
	assert_int_equal((fw_rd32(v->rsdt + 4) - 36) / 4, n);
	for (size_t i = 0; i < n; i++) {
		uint64_t a = fw_rd64(v->xsdt + 36 + 8 * i);
		assert_int_equal(fw_rd32(v->rsdt + 36 + 4 * i), a);
		const uint8_t *t = table_at(ram, a);
		if (!memcmp(t, "FACP", 4))
			v->fadt = t;
		else if (!memcmp(t, "APIC", 4))
			v->madt = t;
		else if (!memcmp(t, "SRAT", 4))
			v->srat = t;
		else if (!memcmp(t, "SLIT", 4))
			v->slit = t;
	}
	assert_non_null(v->fadt);
	assert_non_null(v->madt);
	assert_non_null(v->srat);
	assert_non_null(v->slit);
	assert_int_equal(fw_rd32(v->fadt + 4), 276);
	assert_int_equal(v->fadt[8], 6);
	v->dsdt = table_at(ram, fw_rd64(v->fadt + 140));
	assert_int_equal(fw_rd32(v->fadt + 40), fw_rd64(v->fadt + 140));
	v->facs = ram + fw_rd64(v->fadt + 132);
	assert_int_equal(fw_rd32(v->fadt + 36), fw_rd64(v->fadt + 132));
	assert_memory_equal(v->facs, "FACS", 4);
	assert_int_equal(fw_rd32(v->facs + 4), 64);
	assert_int_equal((v->facs - ram) % 64, 0);
	assert_memory_equal(v->dsdt, "DSDT", 4);
}

static uint8_t mb_img[0x4000];

static const uint64_t nb2[] = { 0, 32 * MIB }, ns2[] = { 32 * MIB, 32 * MIB };
static const uint32_t node_of4[] = { 0, 0, 1, 1 };

static void test_acpi_4cpu_2node(void **state)
{
	uint64_t rs = 64 * MIB;
	uint8_t *ram = ram_new(rs);
	size_t len = make_mb_elf(mb_img, 0x3, 0x100000);
	struct fw_config cfg = cfg_basic(rs, tmp_write("mb.elf", mb_img, len));
	cfg.n_vcpus = 4;
	cfg.node_of = node_of4;
	cfg.n_nodes = 2;
	cfg.node_mem_base = nb2;
	cfg.node_mem_size = ns2;
	struct fw_boot b;
	char err[256];
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	struct acpi_view v;
	acpi_walk(ram, &v);
	assert_int_equal(b.rsdp_gpa, (uint64_t)(v.rsdp - ram));
	assert_int_equal(fw_rd16(ram + 0x40e), 0x9fc0);

	/* MADT: LAPIC address, PCAT_COMPAT, 4 local APICs, IOAPIC, 2 overrides, LINT1 NMI */
	const uint8_t *m = v.madt;
	assert_int_equal(fw_rd32(m + 36), 0xfee00000);
	assert_int_equal(fw_rd32(m + 40), 1);
	unsigned cpus = 0, ioapic = 0, iso = 0, nmi = 0;
	for (uint32_t off = 44; off < fw_rd32(m + 4); off += m[off + 1]) {
		const uint8_t *e = m + off;
		assert_true(e[1] >= 2);
		switch (e[0]) {
		case 0:
			assert_int_equal(e[1], 8);
			assert_int_equal(e[2], cpus);
			assert_int_equal(e[3], ids4[cpus]);
			assert_int_equal(fw_rd32(e + 4), 1);
			cpus++;
			break;
		case 1:
			assert_int_equal(e[2], 0);
			assert_int_equal(fw_rd32(e + 4), 0xfec00000);
			assert_int_equal(fw_rd32(e + 8), 0);
			ioapic++;
			break;
		case 2:
			if (e[3] == 0) {
				assert_int_equal(fw_rd32(e + 4), 2);
				assert_int_equal(fw_rd16(e + 8), 0);
			} else {
				assert_int_equal(e[3], 9);
				assert_int_equal(fw_rd32(e + 4), 9);
				assert_int_equal(fw_rd16(e + 8), 0xd);
			}
			iso++;
			break;
		case 4:
			assert_int_equal(e[2], 0xff);
			assert_int_equal(e[5], 1);
			nmi++;
			break;
		default:
			fail_msg("unexpected MADT entry type %u", e[0]);
		}
	}
	assert_int_equal(cpus, 4);
	assert_int_equal(ioapic, 1);
	assert_int_equal(iso, 2);
	assert_int_equal(nmi, 1);

	/* SRAT: vCPU domains from node_of, one memory range per node */
	const uint8_t *s = v.srat;
	unsigned pcpu = 0, mem = 0;
	for (uint32_t off = 48; off < fw_rd32(s + 4); off += s[off + 1]) {
		const uint8_t *e = s + off;
		if (e[0] == 0) {
			assert_int_equal(e[3], ids4[pcpu]);
			assert_int_equal(e[2], node_of4[pcpu]);
			assert_int_equal(fw_rd32(e + 4) & 1, 1);
			pcpu++;
		} else {
			assert_int_equal(e[0], 1);
			assert_int_equal(e[1], 40);
			assert_int_equal(fw_rd32(e + 2), mem);
			assert_int_equal(fw_rd64(e + 8), nb2[mem]);
			assert_int_equal(fw_rd64(e + 16), ns2[mem]);
			assert_int_equal(fw_rd32(e + 28), 1);
			mem++;
		}
	}
	assert_int_equal(pcpu, 4);
	assert_int_equal(mem, 2);

	/* SLIT: 2x2, 10 local, 20 remote (default) */
	assert_int_equal(fw_rd64(v.slit + 36), 2);
	assert_int_equal(fw_rd32(v.slit + 4), 44 + 4);
	const uint8_t want[] = { 10, 20, 20, 10 };
	assert_memory_equal(v.slit + 44, want, 4);

	/* FADT points at the ports the device side implements */
	assert_int_equal(fw_rd32(v.fadt + 56), 0x600);
	assert_int_equal(fw_rd32(v.fadt + 64), 0x604);
	assert_int_equal(fw_rd32(v.fadt + 76), 0x608);
	assert_int_equal(fw_rd64(v.fadt + 116 + 4), 0xcf9);
	assert_int_equal(v.fadt[128], 6);
	fw_boot_release(&b);
	ram_free(ram, rs);
}

/* x2APIC ids (>= 255) get x2APIC MADT/SRAT entries; a node range across the hole is split; custom SLIT. */
static void test_acpi_x2apic_hole_split(void **state)
{
	uint64_t rs = 64 * MIB;
	uint8_t *ram = ram_new(rs);
	size_t len = make_mb_elf(mb_img, 0x3, 0x100000);
	static const uint32_t ids[] = { 0, 300 }, nodes[] = { 0, 1 };
	static const uint64_t base[] = { 0, 40 * MIB }, size[] = { 40 * MIB, 4 * GIB - 24 * MIB };
	static const uint8_t slit[] = { 10, 17, 17, 10 };
	struct fw_config cfg = cfg_basic(rs, tmp_write("mb.elf", mb_img, len));
	cfg.n_vcpus = 2;
	cfg.apic_ids = ids;
	cfg.node_of = nodes;
	cfg.n_nodes = 2;
	cfg.node_mem_base = base;
	cfg.node_mem_size = size;
	cfg.slit = slit;
	cfg.hole_start = 48 * MIB;         /* 16 MiB of RAM appears at 4 GiB */
	struct fw_boot b;
	char err[256];
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	struct acpi_view v;
	acpi_walk(ram, &v);
	unsigned x2 = 0, x2nmi = 0;
	for (uint32_t off = 44; off < fw_rd32(v.madt + 4); off += v.madt[off + 1]) {
		const uint8_t *e = v.madt + off;
		if (e[0] == 9) {
			assert_int_equal(fw_rd32(e + 4), 300);
			assert_int_equal(fw_rd32(e + 12), 1);
			x2++;
		}
		x2nmi += e[0] == 0xa;
	}
	assert_int_equal(x2, 1);
	assert_int_equal(x2nmi, 1);
	struct { uint32_t dom; uint64_t base, len; } want[] = {
		{ 0, 0, 40 * MIB }, { 1, 40 * MIB, 8 * MIB }, { 1, 4 * GIB, 16 * MIB },
	};
	unsigned mem = 0, x2a = 0;
	for (uint32_t off = 48; off < fw_rd32(v.srat + 4); off += v.srat[off + 1]) {
		const uint8_t *e = v.srat + off;
		if (e[0] == 2) {
			assert_int_equal(fw_rd32(e + 4), 1);
			assert_int_equal(fw_rd32(e + 8), 300);
			x2a++;
		} else if (e[0] == 1) {
			assert_true(mem < 3);
			assert_int_equal(fw_rd32(e + 2), want[mem].dom);
			assert_int_equal(fw_rd64(e + 8), want[mem].base);
			assert_int_equal(fw_rd64(e + 16), want[mem].len);
			mem++;
		}
	}
	assert_int_equal(x2a, 1);
	assert_int_equal(mem, 3);
	assert_memory_equal(v.slit + 44, slit, 4);
	fw_boot_release(&b);
	ram_free(ram, rs);
}

/* iasl -d on every table: no errors, no warnings (checksums and lengths are what it checks first). */
static void test_acpi_iasl(void **state)
{
	if (system("command -v iasl >/dev/null 2>&1") != 0) {
		printf("SKIP: iasl not installed (Debian package acpica-tools, scripts/deps.sh)\n");
		skip();
	}
	uint64_t rs = 64 * MIB;
	uint8_t *ram = ram_new(rs);
	size_t len = make_mb_elf(mb_img, 0x3, 0x100000);
	struct fw_config cfg = cfg_basic(rs, tmp_write("mb.elf", mb_img, len));
	cfg.n_vcpus = 4;
	cfg.node_of = node_of4;
	cfg.n_nodes = 2;
	cfg.node_mem_base = nb2;
	cfg.node_mem_size = ns2;
	struct fw_boot b;
	char err[256];
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	struct acpi_view v;
	acpi_walk(ram, &v);
	/* (iasl 20200925 does not disassemble a lone RSDP; acpi_walk checked both of its checksums.) */
	const uint8_t *tabs[] = { v.rsdt, v.xsdt, v.fadt, v.facs, v.dsdt, v.madt, v.srat, v.slit };
	const char *names[] = { "rsdt", "xsdt", "facp", "facs", "dsdt", "apic", "srat", "slit" };
	for (size_t i = 0; i < sizeof(tabs) / sizeof(tabs[0]); i++) {
		size_t tl = fw_rd32(tabs[i] + 4);
		char file[64], cmd[512];
		snprintf(file, sizeof(file), "%s.dat", names[i]);
		const char *path = tmp_write(file, tabs[i], tl);
		snprintf(cmd, sizeof(cmd), "cd %s && iasl -d %s > %s.log 2>&1; echo rc=$? >> %s.log", tmpdir, path, names[i],
			 names[i]);
		assert_int_equal(system(cmd), 0);
		char log[128], line[512];
		snprintf(log, sizeof(log), "%s/%s.log", tmpdir, names[i]);
		FILE *f = fopen(log, "r");
		assert_non_null(f);
		bool ok = false, bad = false;
		while (fgets(line, sizeof(line), f)) {
			if (strstr(line, "rc=0"))
				ok = true;
			if (strcasestr(line, "error") || strcasestr(line, "warning") || strcasestr(line, "invalid") ||
			    strcasestr(line, "incorrect")) {
				if (strstr(line, "0 Errors") || strstr(line, "Compilation"))
					continue;
				printf("iasl on %s: %s", names[i], line);
				bad = true;
			}
		}
		fclose(f);
		/* The disassembly itself must say the checksum is fine and carry no warning remarks. */
		snprintf(log, sizeof(log), "%s/%s.dsl", tmpdir, names[i]);
		f = fopen(log, "r");
		if (!f)
			fail_msg("iasl -d %s produced no disassembly (see %s/%s.log)", names[i], tmpdir, names[i]);
		while (fgets(line, sizeof(line), f))
			if (strcasestr(line, "incorrect") || strcasestr(line, "invalid") || strcasestr(line, "warning") ||
			    strcasestr(line, "should be")) {
				printf("iasl %s.dsl: %s", names[i], line);
				bad = true;
			}
		fclose(f);
		if (!ok || bad)
			fail_msg("iasl -d %s: rc ok %d, problems %d (see %s)", names[i], ok, bad, tmpdir);
	}
	fw_boot_release(&b);
	ram_free(ram, rs);
}

/* ---- CPUID ---- */

static const struct accel_cpuid_entry *cpuid_get(const struct accel_cpuid_entry *t, size_t n, uint32_t fn,
						 uint32_t idx)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].function == fn && (!t[i].has_index || t[i].index == idx))
			return &t[i];
	return NULL;
}

static void check_topology(const struct accel_cpuid_entry *t, size_t n, unsigned n_vcpus, const uint32_t *ids)
{
	const struct accel_cpuid_entry *l1 = cpuid_get(t, n, 1, 0);
	assert_non_null(l1);
	assert_int_equal(l1->ebx >> 24, ids[0]);
	uint32_t addressable = (l1->ebx >> 16) & 0xff;
	assert_int_equal(!!(l1->edx & (1u << 28)), n_vcpus > 1);
	assert_true(l1->ecx & (1u << 21));
	assert_true(l1->ecx & (1u << 24));
	assert_true(l1->ecx & (1u << 31));
	const struct accel_cpuid_entry *smt = cpuid_get(t, n, 0xb, 0), *core = cpuid_get(t, n, 0xb, 1),
				       *end = cpuid_get(t, n, 0xb, 2);
	assert_non_null(smt);
	assert_non_null(core);
	assert_non_null(end);
	assert_int_equal(smt->eax & 0x1f, 0);
	assert_int_equal(smt->ebx & 0xffff, 1);
	assert_int_equal((smt->ecx >> 8) & 0xff, 1);
	assert_int_equal(core->ebx & 0xffff, n_vcpus);
	assert_int_equal((core->ecx >> 8) & 0xff, 2);
	assert_int_equal(core->ecx & 0xff, 1);
	assert_int_equal((end->ecx >> 8) & 0xff, 0);
	assert_int_equal(smt->edx, ids[0]);
	unsigned shift = core->eax & 0x1f;
	assert_int_equal(1u << shift, addressable);
	assert_true((1u << shift) >= n_vcpus);
	for (unsigned i = 0; i < n_vcpus; i++)
		assert_int_equal(ids[i] >> shift, 0);                 /* one package */
	if (cpuid_get(t, n, 0, 0)->eax >= 0x1f) {
		const struct accel_cpuid_entry *c1f = cpuid_get(t, n, 0x1f, 1);
		assert_non_null(c1f);
		assert_int_equal(c1f->eax, core->eax);
		assert_int_equal(c1f->ebx, core->ebx);
	}
	for (uint32_t i = 0;; i++) {
		const struct accel_cpuid_entry *c = cpuid_get(t, n, 4, i);
		assert_non_null(c);
		if (!(c->eax & 0x1f))
			break;
		assert_int_equal(c->eax >> 26, addressable - 1);
		unsigned level = (c->eax >> 5) & 7;
		assert_int_equal((c->eax >> 14) & 0xfff, level == 3 ? addressable - 1 : 0);
	}
}

static void test_cpuid_topology(void **state)
{
	static const uint32_t ids[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	const unsigned counts[] = { 1, 2, 3, 4, 8 };
	for (size_t k = 0; k < 5; k++) {
		struct accel_cpuid_entry t[64];
		size_t n = 0;
		assert_int_equal(fw_cpuid_build(counts[k], ids, NULL, 0, t, 64, &n), 0);
		check_topology(t, n, counts[k], ids);
		const struct accel_cpuid_entry *core = cpuid_get(t, n, 0xb, 1);
		const unsigned want_shift[] = { 0, 1, 2, 2, 3 };  /* dense ids: the smallest shift */
		assert_int_equal(core->eax, want_shift[k]);
	}
}

static void test_cpuid_emu_model(void **state)
{
	struct accel_cpuid_entry t[64];
	size_t n = 0;
	assert_int_equal(fw_cpuid_build(2, ids4, NULL, 0, t, 64, &n), 0);
	const struct accel_cpuid_entry *l0 = cpuid_get(t, n, 0, 0), *l1 = cpuid_get(t, n, 1, 0);
	char vendor[13] = { 0 };
	memcpy(vendor, &l0->ebx, 4);
	memcpy(vendor + 4, &l0->edx, 4);
	memcpy(vendor + 8, &l0->ecx, 4);
	assert_string_equal(vendor, "GenuineIntel");
	assert_true(l0->eax >= 0x1f);
	/* x87, FXSR, SSE, SSE2 (emu_exec_fpu.c); never MMX */
	assert_int_equal(l1->edx & ((1u << 0) | (1u << 24) | (1u << 25) | (1u << 26)),
			 (1u << 0) | (1u << 24) | (1u << 25) | (1u << 26));
	assert_int_equal(l1->edx & (1u << 23), 0);
	assert_int_equal(l1->ecx & ((1u << 0) | (1u << 9) | (1u << 19) | (1u << 20) | (1u << 26) | (1u << 28)), 0);
	uint32_t need = (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 9) | (1u << 13) | (1u << 15);
	assert_int_equal(l1->edx & need, need);
	assert_null(cpuid_get(t, n, 0xd, 0));
	const struct accel_cpuid_entry *x1 = cpuid_get(t, n, 0x80000001, 0), *x8 = cpuid_get(t, n, 0x80000008, 0);
	assert_int_equal(x1->edx & ((1u << 11) | (1u << 20) | (1u << 29)), (1u << 11) | (1u << 20) | (1u << 29));
	assert_int_equal(x8->eax & 0xffff, 40 | (48 << 8));
	char brand[49] = { 0 };
	for (int i = 0; i < 3; i++) {
		const struct accel_cpuid_entry *b = cpuid_get(t, n, 0x80000002 + i, 0);
		memcpy(brand + 16 * i, &b->eax, 4);
		memcpy(brand + 16 * i + 4, &b->ebx, 4);
		memcpy(brand + 16 * i + 8, &b->ecx, 4);
		memcpy(brand + 16 * i + 12, &b->edx, 4);
	}
	assert_string_equal(brand, "rackvm");
	/* 1 GHz TSC on a 25 MHz crystal; what the guest SDK computes: ECX * EBX / EAX */
	const struct accel_cpuid_entry *l15 = cpuid_get(t, n, 0x15, 0), *l16 = cpuid_get(t, n, 0x16, 0);
	assert_int_equal(l15->eax, 1);
	assert_int_equal(l15->ebx, 40);
	assert_int_equal(l15->ecx, 25000000);
	assert_int_equal(l16->eax, 1000);
	assert_int_equal(fw_cpuid_set_tsc(t, 64, &n, 2100000000ull), 0);
	l15 = cpuid_get(t, n, 0x15, 0);
	assert_int_equal((uint64_t)l15->ecx * l15->ebx / l15->eax, 2100000000ull);
	assert_int_equal(cpuid_get(t, n, 0x16, 0)->eax, 2100);
	size_t small = 0;
	assert_int_equal(fw_cpuid_build(2, ids4, NULL, 0, t, 5, &small), -ENOSPC);
}

/* The kvm_pvm hide list on a table that offers everything: exactly the listed bits go, leaf 0xD goes with every
 * subleaf, every other bit and leaf stays; a second pass (or a table without them) changes nothing. */
static void test_cpuid_hide_kvm_pvm(void **state)
{
	struct accel_cpuid_entry t[] = {
		{ .function = 0, .eax = 0x1f },
		{ .function = 1, .eax = 0x906ea, .ecx = 0xffffffff, .edx = 0xffffffff },
		{ .function = 7, .index = 0, .has_index = true, .ebx = 0xffffffff, .ecx = 0xffffffff, .edx = 0xffffffff },
		{ .function = 7, .index = 1, .has_index = true, .eax = 0xffffffff },
		{ .function = 0xd, .index = 0, .has_index = true, .eax = 7 },
		{ .function = 0xd, .index = 1, .has_index = true, .eax = 0xf },
		{ .function = 0xd, .index = 2, .has_index = true, .eax = 0x100 },
		{ .function = 0x80000001, .ecx = 0xffffffff, .edx = 0xffffffff },
		{ .function = 0x80000008, .eax = 0x3030, .ebx = 0xffffffff },
	};
	size_t n = sizeof(t) / sizeof(t[0]);

	(void)state;
	assert_int_equal(fw_cpuid_hide(t, &n, fw_cpuid_kvm_pvm_hidden, fw_cpuid_kvm_pvm_hidden_n),
			 fw_cpuid_kvm_pvm_hidden_n);
	assert_int_equal(n, 6);
	assert_null(cpuid_get(t, n, 0xd, 0));
	assert_null(cpuid_get(t, n, 0xd, 1));
	const struct accel_cpuid_entry *l1 = cpuid_get(t, n, 1, 0), *l7 = cpuid_get(t, n, 7, 0),
				       *l71 = cpuid_get(t, n, 7, 1), *x1 = cpuid_get(t, n, 0x80000001, 0),
				       *x8 = cpuid_get(t, n, 0x80000008, 0);
	/* leaf 1 ECX: FMA 12, CX16 13, MOVBE 22, XSAVE 26, OSXSAVE 27, AVX 28, F16C 29; the rest stays (SSE3 0, ...) */
	assert_int_equal(l1->ecx, ~((1u << 12) | (1u << 13) | (1u << 22) | (1u << 26) | (1u << 27) | (1u << 28) |
				    (1u << 29)));
	assert_int_equal(l1->edx, 0xffffffff);
	assert_int_equal(l1->eax, 0x906ea);
	/* leaf 7: INVPCID 10, SMAP 20, CLWB 24 and the AVX2/AVX-512/MPX bits; FSGSBASE 0, BMI1 3, ERMS 9 stay */
	assert_int_equal(l7->ebx & ((1u << 10) | (1u << 20) | (1u << 24) | (1u << 5) | (1u << 16) | (1u << 31)), 0);
	assert_int_equal(l7->ebx & ((1u << 0) | (1u << 3) | (1u << 9)), (1u << 0) | (1u << 3) | (1u << 9));
	assert_int_equal(l7->ecx & ((1u << 3) | (1u << 4) | (1u << 9)), 0);          /* PKU, OSPKE, VAES */
	assert_int_equal(l7->edx & ((1u << 22) | (1u << 24) | (1u << 25)), 0);       /* AMX */
	assert_int_equal(l71->eax & ((1u << 4) | (1u << 5)), 0);                     /* AVX-VNNI, AVX512-BF16 */
	assert_int_equal(x1->ecx & ((1u << 11) | (1u << 16)), 0);                    /* XOP, FMA4 */
	assert_int_equal(x1->ecx | (1u << 11) | (1u << 16), 0xffffffff);
	assert_int_equal(x8->ebx, ~(1u << 4));                                       /* RDPRU */
	assert_int_equal(x8->eax, 0x3030);
	/* nothing left to hide */
	assert_int_equal(fw_cpuid_hide(t, &n, fw_cpuid_kvm_pvm_hidden, fw_cpuid_kvm_pvm_hidden_n), 0);
	assert_int_equal(n, 6);
}

/* KVM path: the supported table is kept except for the topology leaves. */
static void test_cpuid_kvm_base(void **state)
{
	struct accel_cpuid_entry base[] = {
		{ .function = 0, .eax = 0xd, .ebx = 1, .ecx = 2, .edx = 3 },
		{ .function = 1, .eax = 0x906ea, .ebx = 0xff0000ff, .ecx = 0x1, .edx = 0x1 },
		{ .function = 4, .index = 0, .has_index = true, .eax = 0x121 | (7u << 26) | (5u << 14) },
		{ .function = 4, .index = 1, .has_index = true, .eax = 0x163 | (7u << 26) | (5u << 14) },
		{ .function = 4, .index = 2, .has_index = true, .eax = 0 },
		{ .function = 7, .index = 0, .has_index = true, .ebx = 0xabcd },
		{ .function = 0xb, .index = 0, .has_index = true, .eax = 1, .ebx = 2, .ecx = 0x100 },
		{ .function = 0x40000000, .ebx = 0x4b4d564b },
	};
	static const uint32_t ids[3] = { 4, 5, 6 };
	struct accel_cpuid_entry t[64];
	size_t n = 0;
	assert_int_equal(fw_cpuid_build(3, ids, base, 8, t, 64, &n), 0);
	check_topology(t, n, 3, ids);
	assert_int_equal(cpuid_get(t, n, 0xb, 1)->eax, 3);        /* id 6 needs 3 bits */
	assert_int_equal(cpuid_get(t, n, 1, 0)->eax, 0x906ea);
	assert_int_equal(cpuid_get(t, n, 1, 0)->ebx & 0xffff, 0xff);
	assert_int_equal(cpuid_get(t, n, 7, 0)->ebx, 0xabcd);
	assert_int_equal(cpuid_get(t, n, 0x40000000, 0)->ebx, 0x4b4d564b);
	assert_int_equal(cpuid_get(t, n, 0, 0)->eax, 0xd);          /* no 0x1f added below the max leaf */
	assert_null(cpuid_get(t, n, 0x1f, 1));
}

/* ---- multiboot ---- */

struct mbi_view {
	uint32_t flags, mem_lower, mem_upper, cmdline, mods_count, mods_addr, mmap_length, mmap_addr, name;
};

static void mbi_read(const uint8_t *ram, uint64_t mbi, struct mbi_view *v)
{
	const uint8_t *p = ram + mbi;
	*v = (struct mbi_view){ fw_rd32(p), fw_rd32(p + 4), fw_rd32(p + 8), fw_rd32(p + 16), fw_rd32(p + 20),
				fw_rd32(p + 24), fw_rd32(p + 44), fw_rd32(p + 48), fw_rd32(p + 64) };
}

static void check_mb_entry(const struct fw_boot *b, uint64_t entry)
{
	assert_int_equal(b->kind, FW_MULTIBOOT);
	assert_int_equal(b->regs.rax, 0x2BADB002);
	assert_int_equal(b->regs.rip, entry);
	assert_int_equal(b->regs.rflags, 2);
	assert_int_equal(b->sregs.cr0, 0x11);
	assert_int_equal(b->sregs.cr4, 0);
	assert_int_equal(b->sregs.efer, 0);
	const struct kvm_segment *cs = &b->sregs.cs;
	assert_int_equal(cs->base, 0);
	assert_int_equal(cs->limit, 0xffffffff);
	assert_int_equal(cs->type, 0xb);
	assert_int_equal(cs->s, 1);
	assert_int_equal(cs->db, 1);
	assert_int_equal(cs->l, 0);
	assert_int_equal(cs->g, 1);
	assert_int_equal(cs->present, 1);
	assert_int_equal(cs->selector, 0x08);
	const struct kvm_segment *segs[] = { &b->sregs.ds, &b->sregs.es, &b->sregs.ss, &b->sregs.fs, &b->sregs.gs };
	for (int i = 0; i < 5; i++) {
		assert_int_equal(segs[i]->selector, 0x18);
		assert_int_equal(segs[i]->type, 0x3);
		assert_int_equal(segs[i]->limit, 0xffffffff);
		assert_int_equal(segs[i]->db, 1);
		assert_int_equal(segs[i]->present, 1);
	}
	assert_int_equal(b->sregs.gdt.base, 0x1000);
	assert_int_equal(b->sregs.gdt.limit, 31);
}

static void check_mb_info(const uint8_t *ram, const struct fw_boot *b, uint64_t rs, const char *cmdline)
{
	struct mbi_view v;
	assert_true(b->regs.rbx >= FW_BOOTINFO && b->regs.rbx < FW_BOOTINFO_END);
	mbi_read(ram, b->regs.rbx, &v);
	assert_int_equal(v.flags & ((1u << 0) | (1u << 2) | (1u << 6) | (1u << 9)), (1u << 0) | (1u << 2) | (1u << 6) | (1u << 9));
	assert_int_equal(v.mem_lower, 639);
	assert_int_equal(v.mem_upper, (rs - MIB) >> 10);
	assert_string_equal((const char *)ram + v.cmdline, cmdline);
	assert_string_equal((const char *)ram + v.name, "rackvm");
	/* mmap = the e820 list, and the same bytes as the etc/e820 fw_cfg file */
	const struct fw_file *fe = NULL;
	for (size_t i = 0; i < b->n_files; i++)
		if (!strcmp(b->files[i].name, "etc/e820"))
			fe = &b->files[i];
	assert_non_null(fe);
	assert_int_equal(v.mmap_length, 24 * (fe->size / 20));
	assert_int_equal(fe->size / 20, 3);
	bool tramp = false;
	for (uint32_t i = 0; i < fe->size / 20; i++) {
		const uint8_t *e = ram + v.mmap_addr + 24 * i, *f = (const uint8_t *)fe->data + 20 * i;
		assert_int_equal(fw_rd32(e), 20);
		assert_memory_equal(e + 4, f, 20);
		if (fw_rd32(e + 20) == 1 && fw_rd64(e + 4) <= 0x8000 && fw_rd64(e + 4) + fw_rd64(e + 12) >= 0x9000)
			tramp = true;
	}
	assert_true(tramp);                /* the guest SDK's AP trampoline page is usable RAM */
}

static void test_multiboot_synthetic(void **state)
{
	uint64_t rs = 64 * MIB;
	uint8_t *ram = ram_new(rs);
	size_t len = make_mb_elf(mb_img, 0x3, 0x100000);
	const char *k = tmp_write("mb.elf", mb_img, len);
	uint8_t m1[5000], m2[100];
	memset(m1, 0xa1, sizeof(m1));
	memset(m2, 0xb2, sizeof(m2));
	char s1[200], s2[200];
	snprintf(s1, sizeof(s1), "%s arg1 arg2", tmp_write("mod1", m1, sizeof(m1)));
	snprintf(s2, sizeof(s2), "%s", tmp_write("mod2", m2, sizeof(m2)));
	const char *mods[] = { s1, s2 };
	struct fw_config cfg = cfg_basic(rs, k);
	cfg.cmdline = "apic=xapic hello";
	cfg.modules = mods;
	cfg.n_modules = 2;
	struct fw_boot b;
	char err[256];
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	check_mb_entry(&b, MB_ENTRY);
	char want[300];
	snprintf(want, sizeof(want), "%s apic=xapic hello", k);
	check_mb_info(ram, &b, rs, want);
	assert_int_equal(b.regs.rsp, FW_STACK_TOP);
	/* the segment: file bytes then zeroed bss */
	assert_memory_equal(ram + 0x100000, mb_img + 0x1000, 0x2000);
	for (int i = 0x2000; i < 0x3000; i++)
		assert_int_equal(ram[0x100000 + i], 0);
	struct mbi_view v;
	mbi_read(ram, b.regs.rbx, &v);
	assert_true(v.flags & (1u << 3));
	assert_int_equal(v.mods_count, 2);
	const uint8_t *ml = ram + v.mods_addr;
	uint32_t s0 = fw_rd32(ml), e0 = fw_rd32(ml + 4), st1 = fw_rd32(ml + 16), e1 = fw_rd32(ml + 20);
	assert_int_equal(s0 % 4096, 0);
	assert_int_equal(st1 % 4096, 0);
	assert_true(s0 >= 0x103000);       /* after the kernel's bss */
	assert_int_equal(e0 - s0, sizeof(m1));
	assert_true(st1 >= e0);
	assert_int_equal(e1 - st1, sizeof(m2));
	assert_memory_equal(ram + s0, m1, sizeof(m1));
	assert_memory_equal(ram + st1, m2, sizeof(m2));
	assert_string_equal((const char *)ram + fw_rd32(ml + 8), s1);
	assert_string_equal((const char *)ram + fw_rd32(ml + 24), s2);
	assert_int_equal(b.n_files, 2);
	assert_string_equal(b.files[1].name, "opt/rackvm/rsdp");
	assert_int_equal(fw_rd64(b.files[1].data), b.rsdp_gpa);
	fw_boot_release(&b);
	assert_int_equal(b.n_files, 0);
	ram_free(ram, rs);
}

/* bss and the firmware area are zeroed in RAM that held something, and left alone (never touched, so never
 * faulted on a DSM-backed guest) when the caller says the RAM is fresh. */
static void test_ram_zeroed(void **state)
{
	uint64_t rs = 64 * MIB;
	size_t len = make_mb_elf(mb_img, 0x3, 0x100000);
	const char *k = tmp_write("mbz.elf", mb_img, len);
	for (int fresh = 0; fresh < 2; fresh++) {
		uint8_t *ram = ram_new(rs);
		memset(ram, 0xee, 4 * MIB);
		struct fw_config cfg = cfg_basic(rs, k);
		cfg.ram_zeroed = fresh;
		struct fw_boot b;
		char err[256];
		assert_int_equal(setup(&cfg, ram, &b, err), 0);
		check_mb_entry(&b, MB_ENTRY);
		assert_memory_equal(ram + 0x100000, mb_img + 0x1000, 0x2000);
		uint8_t want = fresh ? 0xee : 0;
		for (int i = 0x2000; i < 0x3000; i++)
			assert_int_equal(ram[0x100000 + i], want);   /* the segment's bss */
		assert_int_equal(ram[0x500], want);                  /* firmware area nobody writes */
		fw_boot_release(&b);
		ram_free(ram, rs);
	}
}

/* A raw image with the multiboot a.out fields: file offset 0 at 2 MiB, 0x1800 bytes loaded, bss to +0x4000. */
static size_t make_aout(uint8_t *img)
{
	size_t len = 0x2000;
	for (size_t i = 0; i < len; i++)
		img[i] = (uint8_t)(i ^ 0x5a);
	uint32_t flags = 0x10003;
	uint8_t *h = img + 0x40;
	fw_wr32(h, 0x1BADB002);
	fw_wr32(h + 4, flags);
	fw_wr32(h + 8, (uint32_t)-(0x1BADB002u + flags));
	fw_wr32(h + 12, 0x200040);         /* header_addr */
	fw_wr32(h + 16, 0x200000);         /* load_addr: file offset 0 */
	fw_wr32(h + 20, 0x201800);         /* load_end_addr */
	fw_wr32(h + 24, 0x204000);         /* bss_end_addr */
	fw_wr32(h + 28, 0x200100);         /* entry */
	return len;
}

/* a.out kludge: the header's addresses place a raw image. */
static void test_multiboot_aout(void **state)
{
	uint64_t rs = 16 * MIB;
	uint8_t *ram = ram_new(rs);
	uint8_t img[0x2000];
	size_t len = make_aout(img);
	struct fw_config cfg = cfg_basic(rs, tmp_write("aout.bin", img, len));
	struct fw_boot b;
	char err[256];
	memset(ram + 0x201800, 0xee, 0x2800);
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	check_mb_entry(&b, 0x200100);
	struct mbi_view v;
	mbi_read(ram, b.regs.rbx, &v);
	assert_string_equal((const char *)ram + v.cmdline, cfg.kernel); /* no command line: the path alone */
	assert_memory_equal(ram + 0x200000, img, 0x1800);
	for (int i = 0x1800; i < 0x4000; i++)
		assert_int_equal(ram[0x200000 + i], 0);
	fw_boot_release(&b);
	ram_free(ram, rs);
}

/* The guest SDK's real image. */
static void test_multiboot_sdk(void **state)
{
	const char *build = getenv("BUILD");
	char path[256];
	snprintf(path, sizeof(path), "%s/guest/topology.elf", build ? build : "build");
	FILE *f = fopen(path, "rb");
	if (!f) {
		printf("SKIP: %s not built (make BUILD=%s guest)\n", path, build ? build : "build");
		skip();
	}
	uint8_t hdr[52];
	assert_int_equal(fread(hdr, 1, sizeof(hdr), f), sizeof(hdr));
	fclose(f);
	uint64_t rs = 128 * MIB;
	uint8_t *ram = ram_new(rs);
	uint8_t mod[3000];
	memset(mod, 0x3c, sizeof(mod));
	char s1[200];
	snprintf(s1, sizeof(s1), "%s x=1", tmp_write("sdkmod", mod, sizeof(mod)));
	const char *mods[] = { s1 };
	struct fw_config cfg = cfg_basic(rs, path);
	cfg.n_vcpus = 4;
	cfg.cmdline = "apic=x2apic";
	cfg.modules = mods;
	cfg.n_modules = 1;
	struct fw_boot b;
	char err[256];
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	check_mb_entry(&b, fw_rd32(hdr + 24));
	char want[300];
	snprintf(want, sizeof(want), "%s apic=x2apic", path);
	check_mb_info(ram, &b, rs, want);
	struct mbi_view v;
	mbi_read(ram, b.regs.rbx, &v);
	assert_int_equal(v.mods_count, 1);
	uint32_t ms = fw_rd32(ram + v.mods_addr);
	assert_int_equal(ms % 4096, 0);
	assert_memory_equal(ram + ms, mod, sizeof(mod));
	/* the multiboot header of the image is where the ELF put it (first bytes of .text at 1 MiB) */
	assert_int_equal(fw_rd32(ram + 0x100000), 0x1BADB002);
	fw_boot_release(&b);
	/* the ELF64 link of the same image (kept next to it) loads the same way */
	char path64[260];
	snprintf(path64, sizeof(path64), "%s.64", path);
	uint8_t *copy = malloc(16 * MIB);
	assert_non_null(copy);
	memcpy(copy, ram + MIB, 16 * MIB);
	if (access(path64, R_OK) == 0) {
		cfg.kernel = path64;
		cfg.n_modules = 0;
		assert_int_equal(setup(&cfg, ram, &b, err), 0);
		check_mb_entry(&b, fw_rd32(hdr + 24));
		struct mbi_view v64;
		mbi_read(ram, b.regs.rbx, &v64);
		assert_memory_equal(ram + MIB, copy, v.mods_addr ? ms - MIB : 16 * MIB); /* same bytes up to the module */
		fw_boot_release(&b);
	}
	free(copy);
	ram_free(ram, rs);
}

/* ---- Linux ---- */

static uint64_t walk(const uint8_t *ram, uint64_t cr3, uint64_t va)
{
	uint64_t e = fw_rd64(ram + (cr3 & ~0xfffull) + 8 * ((va >> 39) & 511));
	if (!(e & 1))
		return UINT64_MAX;
	e = fw_rd64(ram + (e & 0xffffffffff000ull) + 8 * ((va >> 30) & 511));
	if (!(e & 1))
		return UINT64_MAX;
	if (e & 0x80)
		return (e & 0xfffffc0000000ull) + (va & (GIB - 1));
	e = fw_rd64(ram + (e & 0xffffffffff000ull) + 8 * ((va >> 21) & 511));
	if (!(e & 1) || !(e & 0x80) || !(e & 2))
		return UINT64_MAX;
	return (e & 0xfffffffe00000ull) + (va & (2 * MIB - 1));
}

/* Entry state, GDT, page tables, e820 and RSDP in boot_params: shared by every Linux test. */
static const uint8_t *check_linux_common(const uint8_t *ram, const struct fw_boot *b, uint64_t rs)
{
	assert_int_equal(b->regs.rflags, 2);
	assert_int_equal(b->sregs.cr0, 0x80000011);
	assert_int_equal(b->sregs.cr4 & 0x20, 0x20);
	assert_int_equal(b->sregs.efer, 0x500);
	assert_int_equal(b->sregs.cs.selector, 0x10);
	assert_int_equal(b->sregs.cs.l, 1);
	assert_int_equal(b->sregs.cs.db, 0);
	assert_int_equal(b->sregs.cs.type, 0xb);
	assert_int_equal(b->sregs.cs.present, 1);
	assert_int_equal(b->sregs.ds.selector, 0x18);
	assert_int_equal(b->sregs.es.selector, 0x18);
	assert_int_equal(b->sregs.ss.selector, 0x18);
	assert_int_equal(b->sregs.ds.type, 0x3);
	/* GDT: the selectors' descriptors in guest memory match the cached segments */
	const uint8_t *gdt = ram + b->sregs.gdt.base;
	assert_true(b->sregs.gdt.limit >= 0x1f);
	assert_int_equal(fw_rd64(gdt + 0x10), 0x00af9b000000ffffull);
	assert_int_equal(fw_rd64(gdt + 0x18), 0x00cf93000000ffffull);
	/* page tables: identity map of every RAM address below 4 GiB, writable */
	for (uint64_t a = 0; a < (rs < 4 * GIB ? rs : 4 * GIB); a += 2 * MIB)
		assert_int_equal(walk(ram, b->sregs.cr3, a + 0x1234), a + 0x1234);
	assert_int_equal(walk(ram, b->sregs.cr3, 0xfee00000), 0xfee00000);
	const uint8_t *bp = ram + b->regs.rsi;
	assert_true(b->regs.rsi >= FW_BOOTINFO && b->regs.rsi + 4096 <= FW_BOOTINFO_END);
	assert_int_equal(b->regs.rsi % 4096, 0);
	assert_int_equal(bp[0x210], 0xff);
	assert_int_equal(bp[0x1e8], 3);
	const uint64_t want[3][3] = { { 0, 0x9fc00, 1 }, { 0x9fc00, 0x60400, 2 }, { MIB, rs - MIB, 1 } };
	for (int i = 0; i < 3; i++) {
		assert_int_equal(fw_rd64(bp + 0x2d0 + 20 * i), want[i][0]);
		assert_int_equal(fw_rd64(bp + 0x2d0 + 20 * i + 8), want[i][1]);
		assert_int_equal(fw_rd32(bp + 0x2d0 + 20 * i + 16), want[i][2]);
	}
	assert_int_equal(fw_rd64(bp + 0x70), b->rsdp_gpa);
	assert_memory_equal(ram + b->rsdp_gpa, "RSD PTR ", 8);
	return bp;
}

static void test_linux_bzimage(void **state)
{
	uint64_t rs = 64 * MIB;
	uint8_t *ram = ram_new(rs);
	static uint8_t img[0x8000], rd[100 * 1024 + 7];
	size_t len = make_bzimage(img, 0x020f);
	memset(rd, 0x77, sizeof(rd));
	memcpy(rd, "070701", 6);   /* what a newc cpio archive starts with: the loader checks for an initramfs */
	struct fw_config cfg = cfg_basic(rs, tmp_write("bzImage", img, len));
	cfg.cmdline = "console=ttyS0 root=/dev/vda";
	cfg.initrd = tmp_write("initrd", rd, sizeof(rd));
	struct fw_boot b;
	char err[256];
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	assert_int_equal(b.kind, FW_LINUX_BZIMAGE);
	const uint8_t *bp = check_linux_common(ram, &b, rs);
	assert_int_equal(b.regs.rip, 0x1000000 + 0x200);
	assert_memory_equal(ram + 0x1000000, img + 0xa00, BZ_PM_SIZE);
	/* header copied, loader fields set */
	assert_memory_equal(bp + 0x1f1, img + 0x1f1, 0x210 - 0x1f1);
	assert_int_equal(fw_rd16(bp + 0x20e), 0x1234);
	assert_int_equal(bp[0x211], 0x81);
	assert_int_equal(fw_rd16(bp + 0x224), 0xfe00);
	assert_int_equal(fw_rd32(bp + 0x214), 0x1000000);
	assert_memory_equal(bp + 0x22c, img + 0x22c, 0x268 - 0x22c);
	assert_string_equal((const char *)ram + fw_rd32(bp + 0x228), "console=ttyS0 root=/dev/vda");
	uint32_t ri = fw_rd32(bp + 0x218);
	assert_int_equal(ri % 4096, 0);
	assert_int_equal(fw_rd32(bp + 0x21c), sizeof(rd));
	assert_true(ri + sizeof(rd) <= rs);
	assert_true(ri + sizeof(rd) > rs - 4096);         /* as high as possible */
	assert_true(ri >= 0x1000000 + 0x400000);          /* above init_size */
	assert_memory_equal(ram + ri, rd, sizeof(rd));
	assert_int_equal(fw_rd32(bp + 0xc0), 0);
	assert_int_equal(bp[0x1ef], 0);                   /* sentinel stays 0 */
	fw_boot_release(&b);

	/* initrd_addr_max below RAM end caps the placement */
	fw_wr32(img + 0x22c, 0x2ffffff);
	cfg.kernel = tmp_write("bzImage2", img, len);
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	bp = ram + b.regs.rsi;
	assert_true(fw_rd32(bp + 0x218) + sizeof(rd) <= 0x3000000);
	fw_boot_release(&b);

	/* pref_address not in RAM: relocatable kernel goes to 1 MiB rounded to its alignment */
	fw_wr32(img + 0x22c, 0x7fffffff);
	fw_wr64(img + 0x258, 0x8000000);
	cfg.kernel = tmp_write("bzImage3", img, len);
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	assert_int_equal(b.regs.rip, 0x200000 + 0x200);
	fw_boot_release(&b);
	ram_free(ram, rs);
}

static void test_linux_vmlinux(void **state)
{
	uint64_t rs = 64 * MIB;
	uint8_t *ram = ram_new(rs);
	static uint8_t img[0x3000];
	size_t len = make_vmlinux(img);
	struct fw_config cfg = cfg_basic(rs, tmp_write("vmlinux", img, len));
	cfg.cmdline = "quiet";
	struct fw_boot b;
	char err[256];
	assert_int_equal(setup(&cfg, ram, &b, err), 0);
	assert_int_equal(b.kind, FW_LINUX_ELF);
	const uint8_t *bp = check_linux_common(ram, &b, rs);
	assert_int_equal(b.regs.rip, 0x1000100);
	assert_memory_equal(ram + 0x1000000, img + 0x1000, 0x2000);
	for (int i = 0x2000; i < 0x5000; i++)
		assert_int_equal(ram[0x1000000 + i], 0);
	assert_int_equal(fw_rd16(bp + 0x1fe), 0xaa55);
	assert_memory_equal(bp + 0x202, "HdrS", 4);
	assert_true(fw_rd16(bp + 0x206) >= 0x020c);
	assert_int_equal(bp[0x211], 0x81);
	assert_int_equal(fw_rd16(bp + 0x236) & 1, 1);
	assert_string_equal((const char *)ram + fw_rd32(bp + 0x228), "quiet");
	assert_int_equal(fw_rd32(bp + 0x218), 0);
	fw_boot_release(&b);
	ram_free(ram, rs);
}

/* ---- bad input: every case has its one-line message ---- */

static void test_bad_inputs(void **state)
{
	uint64_t rs = 64 * MIB;
	uint8_t *ram = ram_new(rs);
	static uint8_t img[0x8000];
	struct fw_config cfg = cfg_basic(rs, "/nonexistent/kernel");
	log_set_quiet(true);
	expect_fail(&cfg, ram, "/nonexistent/kernel: No such file");
	cfg.kernel = tmpdir;
	expect_fail(&cfg, ram, ": not a regular file");
	memset(img, 'x', 4096);
	cfg.kernel = tmp_write("garbage", img, 4096);
	expect_fail(&cfg, ram, "is neither a multiboot ELF nor a Linux bzImage/vmlinux");
	cfg.kernel = tmp_write("empty", img, 0);
	expect_fail(&cfg, ram, "is neither");
	/* ELF32 without a multiboot header */
	size_t len = make_mb_elf(img, 0x3, 0x100000);
	memset(img + 0x1000, 0, 12);
	cfg.kernel = tmp_write("nomb.elf", img, len);
	expect_fail(&cfg, ram, "without a multiboot header, and not an x86-64 Linux vmlinux");
	/* segments outside RAM, in the hole, below 1 MiB */
	len = make_mb_elf(img, 0x3, 0x8000000);
	cfg.kernel = tmp_write("high.elf", img, len);
	expect_fail(&cfg, ram, "segment 0x8000000 - 0x8003000 outside guest RAM (64 MiB)");
	len = make_mb_elf(img, 0x3, 0xd0000000);
	cfg.kernel = tmp_write("hole.elf", img, len);
	expect_fail(&cfg, ram, "outside guest RAM");
	len = make_mb_elf(img, 0x3, 0xe0000);
	cfg.kernel = tmp_write("low.elf", img, len);
	expect_fail(&cfg, ram, "overlaps the firmware area below 1 MiB");
	/* unknown multiboot requirement; not ELF without the a.out fields */
	len = make_mb_elf(img, 0x13, 0x100000);
	cfg.kernel = tmp_write("flags.elf", img, len);
	expect_fail(&cfg, ram, "requires features we do not provide (header flags 0x10)");
	len = make_mb_elf(img, 0x3, 0x100000);
	img[0] = 0;
	cfg.kernel = tmp_write("raw.bin", img, len);
	expect_fail(&cfg, ram, "is not ELF and its header has no address fields");
	/* missing module */
	len = make_mb_elf(img, 0x3, 0x100000);
	cfg.kernel = tmp_write("ok.elf", img, len);
	const char *mods[] = { "/nonexistent/mod args" };
	cfg.modules = mods;
	cfg.n_modules = 1;
	expect_fail(&cfg, ram, "module /nonexistent/mod: No such file");
	cfg.n_modules = 0;
	/* bzImage: old protocol, truncated, no 64-bit entry, zImage, RAM too small, cmdline too long, initrd */
	len = make_bzimage(img, 0x020b);
	cfg.kernel = tmp_write("old.bz", img, len);
	expect_fail(&cfg, ram, "boot protocol 2.11 is too old");
	len = make_bzimage(img, 0x020f);
	cfg.kernel = tmp_write("trunc.bz", img, len - 0x100);
	expect_fail(&cfg, ram, "truncated");
	cfg.kernel = tmp_write("trunc2.bz", img, 0x210);
	expect_fail(&cfg, ram, "truncated setup header");
	fw_wr16(img + 0x236, 0);
	cfg.kernel = tmp_write("no64.bz", img, len);
	expect_fail(&cfg, ram, "no 64-bit entry point");
	len = make_bzimage(img, 0x020f);
	img[0x211] = 0;
	cfg.kernel = tmp_write("zimage.bz", img, len);
	expect_fail(&cfg, ram, "zImage");
	len = make_bzimage(img, 0x020f);
	fw_wr32(img + 0x260, 0x8000000);
	cfg.kernel = tmp_write("big.bz", img, len);
	expect_fail(&cfg, ram, "--mem too small");
	len = make_bzimage(img, 0x020f);
	fw_wr32(img + 0x238, 10);
	cfg.kernel = tmp_write("cmd.bz", img, len);
	cfg.cmdline = "this command line is too long";
	expect_fail(&cfg, ram, "command line is 29 bytes, the kernel accepts at most 10");
	cfg.cmdline = NULL;
	len = make_bzimage(img, 0x020f);
	cfg.kernel = tmp_write("ok.bz", img, len);
	cfg.initrd = "/nonexistent/initrd";
	expect_fail(&cfg, ram, "initrd /nonexistent/initrd: No such file");
	static uint8_t big[45 * MIB];
	memcpy(big + 4096, "070701", 6);   /* leading zeros are allowed, as Linux skips them */
	cfg.initrd = tmp_write("bigrd", big, sizeof(big));
	expect_fail(&cfg, ram, "does not fit");
	static const uint8_t junk[64] = { 0, 0, 0, 0, 0x77, 0x77 };   /* zeros, then no cpio or compressor magic */
	cfg.initrd = tmp_write("junkrd", junk, sizeof(junk));
	expect_fail(&cfg, ram, "not an initramfs");
	cfg.initrd = NULL;
	/* vmlinux whose segment is outside RAM */
	len = make_vmlinux(img);
	fw_wr64(img + 64 + 24, 0x10000000);
	cfg.kernel = tmp_write("far.vmlinux", img, len);
	expect_fail(&cfg, ram, "outside guest RAM (64 MiB)");
	/* initrd for multiboot, modules for Linux */
	len = make_mb_elf(img, 0x3, 0x100000);
	cfg.kernel = tmp_write("ok3.elf", img, len);
	cfg.initrd = cfg.kernel;
	expect_fail(&cfg, ram, "an initrd is for Linux kernels");
	cfg.initrd = NULL;
	len = make_bzimage(img, 0x020f);
	cfg.kernel = tmp_write("ok2.bz", img, len);
	cfg.modules = mods;
	cfg.n_modules = 1;
	expect_fail(&cfg, ram, "modules are for multiboot kernels");
	cfg.n_modules = 0;
	/* configuration errors */
	len = make_mb_elf(img, 0x3, 0x100000);
	cfg.kernel = tmp_write("ok2.elf", img, len);
	cfg.ram_size = MIB;
	expect_fail(&cfg, ram, "--mem too small");
	cfg.ram_size = rs;
	cfg.n_nodes = 2;
	expect_fail(&cfg, ram, "no per-node memory ranges");
	log_set_quiet(false);
	ram_free(ram, rs);
}

/* fw_files_only publishes what fw_setup publishes, without touching RAM. */
static void test_files_only(void **state)
{
	uint64_t rs = 64 * MIB;
	uint8_t *ram = ram_new(rs);
	size_t len = make_mb_elf(mb_img, 0x3, 0x100000);
	struct fw_config cfg = cfg_basic(rs, tmp_write("mb.elf", mb_img, len));
	struct fw_boot a, b;
	char err[256];
	assert_int_equal(setup(&cfg, ram, &a, err), 0);
	cfg.kernel = NULL;
	assert_int_equal(fw_files_only(&cfg, &b, err, sizeof(err)), 0);
	assert_int_equal(a.rsdp_gpa, b.rsdp_gpa);
	assert_int_equal(a.n_files, b.n_files);
	for (size_t i = 0; i < a.n_files; i++) {
		assert_string_equal(a.files[i].name, b.files[i].name);
		assert_int_equal(a.files[i].size, b.files[i].size);
		assert_memory_equal(a.files[i].data, b.files[i].data, a.files[i].size);
	}
	fw_boot_release(&a);
	fw_boot_release(&b);
	ram_free(ram, rs);
}

/* Flip and truncate bytes of every image kind: fw_setup must fail cleanly or succeed, never crash (ASan build
 * turns any out-of-bounds read into a failure). */
static void test_corrupt_images(void **state)
{
	uint64_t rs = 32 * MIB;
	uint8_t *ram = ram_new(rs);
	static uint8_t orig[4][0x8000], img[0x8000];
	size_t lens[4] = { make_mb_elf(orig[0], 0x3, 0x100000), make_bzimage(orig[1], 0x020f), make_vmlinux(orig[2]),
			   make_aout(orig[3]) };
	/* header regions the loaders parse */
	const size_t hot[4][2] = { { 0, 0x1040 }, { 0x1f0, 0x270 }, { 0, 0x80 }, { 0x40, 0x60 } };
	struct rng r;
	rng_seed(&r, 42);
	unsigned ok = 0, failed = 0;
	log_set_quiet(true);
	for (int it = 0; it < 4000; it++) {
		int k = it % 4;
		size_t len = lens[k];
		memcpy(img, orig[k], len);
		int flips = 1 + (int)(rng_next(&r) % 4);
		for (int f = 0; f < flips; f++) {
			size_t at = hot[k][0] + rng_next(&r) % (hot[k][1] - hot[k][0]);
			img[at] = (rng_next(&r) & 1) ? (uint8_t)rng_next(&r) : (uint8_t)(img[at] ^ 0x80);
		}
		if (rng_next(&r) % 4 == 0)
			len = rng_next(&r) % len;
		struct fw_config cfg = cfg_basic(rs, tmp_write("fuzz.img", img, len));
		struct fw_boot b;
		char err[256] = "";
		int ret = setup(&cfg, ram, &b, err);
		if (ret == 0) {
			ok++;
			fw_boot_release(&b);
		} else {
			failed++;
			assert_true(err[0] != '\0');
			assert_null(strchr(err, '\n'));
		}
	}
	log_set_quiet(false);
	printf("corrupt images: %u loaded, %u refused\n", ok, failed);
	assert_true(failed > 0);
	ram_free(ram, rs);
}

/* ---- real Linux kernel (tests/unit/test_linux_image.sh) ---- */

static void test_linux_real_image(void **state)
{
	const char *path = linux_image_path;
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	static uint8_t hdr[0x290];
	size_t got = fread(hdr, 1, sizeof(hdr), f);
	fseek(f, 0, SEEK_END);
	long fsize = ftell(f);
	assert_int_equal(got, sizeof(hdr));
	uint16_t version = fw_rd16(hdr + 0x206);
	printf("kernel %s: %ld bytes, boot protocol %u.%02u, setup_sects %u, pref_address 0x%llx, init_size 0x%x\n",
	       path, fsize, version >> 8, version & 0xff, hdr[0x1f1], (unsigned long long)fw_rd64(hdr + 0x258),
	       fw_rd32(hdr + 0x260));
	assert_memory_equal(hdr + 0x202, "HdrS", 4);
	assert_true(version >= 0x020c);
	size_t pm_off = (size_t)((hdr[0x1f1] ? hdr[0x1f1] : 4) + 1) * 512;
	uint8_t *file = malloc((size_t)fsize);
	assert_non_null(file);
	fseek(f, 0, SEEK_SET);
	assert_int_equal(fread(file, 1, (size_t)fsize, f), (size_t)fsize);
	fclose(f);

	uint64_t rs = 512 * MIB;
	uint8_t *ram = ram_new(rs);
	static uint8_t rd[256 * 1024];
	for (size_t i = 0; i < sizeof(rd); i++)
		rd[i] = (uint8_t)(i * 31);
	memcpy(rd, "070701", 6);   /* a cpio header's magic: the loader only takes an initramfs */
	static const uint32_t ids[2] = { 0, 1 };
	struct fw_config cfg = cfg_basic(rs, path);
	cfg.n_vcpus = 2;
	cfg.apic_ids = ids;
	cfg.cmdline = "console=ttyS0 earlyprintk=serial panic=-1";
	cfg.initrd = tmp_write("fake-initrd", rd, sizeof(rd));
	struct fw_boot b;
	char err[256];
	int r = setup(&cfg, ram, &b, err);
	if (r < 0)
		fail_msg("fw_setup: %s", err);
	assert_int_equal(b.kind, FW_LINUX_BZIMAGE);
	const uint8_t *bp = check_linux_common(ram, &b, rs);
	uint64_t load = fw_rd32(bp + 0x214);
	assert_int_equal(load, fw_rd64(hdr + 0x258) ? fw_rd64(hdr + 0x258) : 0x100000);
	assert_int_equal(b.regs.rip, load + 0x200);
	assert_memory_equal(ram + load, file + pm_off, (size_t)fsize - pm_off);
	assert_memory_equal(ram + b.regs.rip, file + pm_off + 0x200, 64); /* the first instructions */
	size_t hdr_end = 0x202 + hdr[0x201];
	for (size_t o = 0x1f1; o < hdr_end && o < 0x290; o++) {
		bool ours = (o == 0x210) || (o == 0x211) || (o >= 0x214 && o < 0x220) || (o >= 0x224 && o < 0x226) ||
			    (o >= 0x228 && o < 0x22c);
		if (!ours && bp[o] != hdr[o])
			fail_msg("boot_params.hdr byte 0x%zx: 0x%02x, image has 0x%02x", o, bp[o], hdr[o]);
	}
	assert_int_equal(bp[0x211], hdr[0x211] | 0x80);
	assert_string_equal((const char *)ram + fw_rd32(bp + 0x228), cfg.cmdline);
	uint32_t ri = fw_rd32(bp + 0x218);
	assert_int_equal(fw_rd32(bp + 0x21c), sizeof(rd));
	assert_true(ri >= load + fw_rd32(hdr + 0x260));
	assert_true((uint64_t)ri + sizeof(rd) <= fw_rd32(hdr + 0x22c) + 1ull);
	assert_memory_equal(ram + ri, rd, sizeof(rd));
	printf("loaded at 0x%llx, entry 0x%llx, boot_params 0x%llx, initrd 0x%x, rsdp 0x%llx\n",
	       (unsigned long long)load, (unsigned long long)b.regs.rip, (unsigned long long)b.regs.rsi, ri,
	       (unsigned long long)b.rsdp_gpa);
	fw_boot_release(&b);
	free(file);
	ram_free(ram, rs);
}

static int tmp_setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_fw.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int tmp_teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--linux-image")) {
		linux_image_path = argv[2];
		const struct CMUnitTest real[] = { cmocka_unit_test(test_linux_real_image) };
		return cmocka_run_group_tests_name("linux_image", real, tmp_setup, tmp_teardown);
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_e820_64m),
		cmocka_unit_test(test_e820_3g5),
		cmocka_unit_test(test_e820_6g),
		cmocka_unit_test(test_e820_no_hole),
		cmocka_unit_test(test_gpa_map),
		cmocka_unit_test(test_acpi_4cpu_2node),
		cmocka_unit_test(test_acpi_x2apic_hole_split),
		cmocka_unit_test(test_acpi_iasl),
		cmocka_unit_test(test_cpuid_topology),
		cmocka_unit_test(test_cpuid_emu_model),
		cmocka_unit_test(test_cpuid_kvm_base),
		cmocka_unit_test(test_cpuid_hide_kvm_pvm),
		cmocka_unit_test(test_multiboot_synthetic),
		cmocka_unit_test(test_multiboot_aout),
		cmocka_unit_test(test_ram_zeroed),
		cmocka_unit_test(test_multiboot_sdk),
		cmocka_unit_test(test_linux_bzimage),
		cmocka_unit_test(test_linux_vmlinux),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_files_only),
		cmocka_unit_test(test_corrupt_images),
	};
	return cmocka_run_group_tests_name("fw", tests, tmp_setup, tmp_teardown);
}
