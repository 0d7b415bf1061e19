// SPDX-License-Identifier: MIT
/*
 * ACPI tables (ACPI 6.x) in the BIOS area: RSDP (rev 2) at 0xe0000, then RSDT, XSDT, FADT (rev 6), FACS, DSDT,
 * MADT, SRAT, SLIT, each 16-byte aligned (FACS 64). Guests find the RSDP by the standard scan of 0xe0000-0xfffff
 * (Linux also gets it in boot_params.acpi_rsdp_addr).
 *
 * Choices (docs/firmware.md has the reasons):
 *   - full (not hardware-reduced) ACPI: PM1a event block at port 0x600 (4 bytes), PM1a control at 0x604 (2),
 *     PM timer at 0x608 (4, 32-bit), SCI on IRQ 9, SMI_CMD 0 (always in ACPI mode); reset register: port 0xcf9,
 *     value 0x06. The DSDT has \_SB and \_S5 (SLP_TYP 0) so a write of SLP_EN|SLP_TYP=0 to PM1a_CNT powers off.
 *   - MADT: Processor Local APIC entries for APIC ids < 255, Processor Local x2APIC entries otherwise; one IOAPIC
 *     (id 0, 0xfec00000, GSI base 0); ISA IRQ0 -> GSI 2 and IRQ9 level/active-high overrides; LINT1 NMI for all.
 *   - SRAT: one processor affinity per vCPU (domain node_of[i]), one memory affinity per node range clipped to
 *     RAM (a range crossing the hole becomes two entries).
 */
#include "hypervisor/fw_internal.h"

#include <errno.h>
#include <string.h>

#include "util/log.h"

#define ACPI_OEM_ID "RACKVM"
#define ACPI_PM_BASE 0x600
#define ACPI_PM1_EVT (ACPI_PM_BASE + 0)
#define ACPI_PM1_CNT (ACPI_PM_BASE + 4)
#define ACPI_PM_TMR (ACPI_PM_BASE + 8)
#define ACPI_RESET_PORT 0xcf9
#define ACPI_RESET_VALUE 0x06
#define ACPI_SCI_IRQ 9

struct acpi_builder {
	struct fw_ctx *c;
	uint64_t next;                 /* guest-physical cursor in [FW_ACPI_BASE, FW_ACPI_END) */
};

static uint8_t acpi_sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;
	for (size_t i = 0; i < len; i++)
		s += p[i];
	return s;
}

static uint8_t *acpi_alloc(struct acpi_builder *b, size_t len, uint64_t align, uint64_t *gpa)
{
	uint64_t a = (b->next + align - 1) & ~(align - 1);
	if (len > FW_ACPI_END || a > FW_ACPI_END - len)
		return NULL;
	b->next = a + len;
	*gpa = a;
	uint8_t *p = fw_gpa(b->c, a, len);
	memset(p, 0, len);
	return p;
}

static void sdt_header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	fw_wr32(t + 4, len);
	t[8] = rev;
	memcpy(t + 10, ACPI_OEM_ID, 6);
	memcpy(t + 16, "RVM", 3);
	memcpy(t + 19, sig, 4);
	memset(t + 23, ' ', 1);
	fw_wr32(t + 24, 1);                /* OEM revision */
	memcpy(t + 28, "RVMC", 4);         /* creator id */
	fw_wr32(t + 32, 1);
}

static void sdt_finish(uint8_t *t)
{
	t[9] = 0;
	t[9] = (uint8_t)(0 - acpi_sum(t, fw_rd32(t + 4)));
}

/* Generic Address Structure: system I/O space. */
static void gas_io(uint8_t *g, uint16_t port, uint8_t bits)
{
	g[0] = 1;
	g[1] = bits;
	g[2] = 0;
	g[3] = bits == 8 ? 1 : bits == 16 ? 2 : 3;
	fw_wr64(g + 4, port);
}

static uint32_t vcpu_node(const struct fw_config *cfg, unsigned i)
{
	return cfg->node_of ? cfg->node_of[i] : 0;
}

static int build_madt(struct acpi_builder *b, uint64_t *gpa)
{
	const struct fw_config *cfg = b->c->cfg;
	size_t len = 44;
	bool any_x2 = false;
	for (unsigned i = 0; i < cfg->n_vcpus; i++) {
		bool x2 = cfg->apic_ids[i] >= 255;
		any_x2 |= x2;
		len += x2 ? 16 : 8;
	}
	len += 12 + 2 * 10 + 6 + (any_x2 ? 12 : 0);
	uint8_t *t = acpi_alloc(b, len, 16, gpa);
	if (!t)
		return -ENOSPC;
	sdt_header(t, "APIC", (uint32_t)len, 5);
	fw_wr32(t + 36, (uint32_t)FW_LAPIC_ADDR);
	fw_wr32(t + 40, 1);                /* PCAT_COMPAT: the 8259s exist (and guests mask them) */
	uint8_t *e = t + 44;
	for (unsigned i = 0; i < cfg->n_vcpus; i++) {
		uint32_t id = cfg->apic_ids[i];
		if (id < 255) {
			e[0] = 0;
			e[1] = 8;
			e[2] = (uint8_t)i;         /* ACPI processor UID = vCPU index */
			e[3] = (uint8_t)id;
			fw_wr32(e + 4, 1);         /* enabled */
			e += 8;
		} else {
			e[0] = 9;
			e[1] = 16;
			fw_wr32(e + 4, id);
			fw_wr32(e + 8, 1);
			fw_wr32(e + 12, i);
			e += 16;
		}
	}
	e[0] = 1;                          /* I/O APIC */
	e[1] = 12;
	e[2] = 0;                          /* id */
	fw_wr32(e + 4, (uint32_t)FW_IOAPIC_ADDR);
	fw_wr32(e + 8, 0);
	e += 12;
	e[0] = 2;                          /* ISA IRQ0 (PIT) -> GSI 2, bus defaults */
	e[1] = 10;
	e[3] = 0;
	fw_wr32(e + 4, 2);
	fw_wr16(e + 8, 0);
	e += 10;
	e[0] = 2;                          /* IRQ9 (SCI): level, active high */
	e[1] = 10;
	e[3] = ACPI_SCI_IRQ;
	fw_wr32(e + 4, ACPI_SCI_IRQ);
	fw_wr16(e + 8, 0x000d);
	e += 10;
	e[0] = 4;                          /* local APIC NMI: all processors, LINT1 */
	e[1] = 6;
	e[2] = 0xff;
	fw_wr16(e + 3, 0);
	e[5] = 1;
	e += 6;
	if (any_x2) {
		e[0] = 0xa;                    /* local x2APIC NMI: all processors, LINT1 */
		e[1] = 12;
		fw_wr16(e + 2, 0);
		fw_wr32(e + 4, 0xffffffff);
		e[8] = 1;
		e += 12;
	}
	sdt_finish(t);
	return 0;
}

struct mem_range {
	uint64_t base, len;
};

/* A guest-physical range clipped to RAM: up to two pieces (below the hole, at 4 GiB and above). */
static size_t ram_pieces(const struct fw_ctx *c, uint64_t base, uint64_t len, struct mem_range out[2])
{
	size_t n = 0;
	uint64_t end = base + len < base ? UINT64_MAX : base + len;
	uint64_t lo_b = base, lo_e = end < c->low_end ? end : c->low_end;
	if (lo_b < lo_e)
		out[n++] = (struct mem_range){ lo_b, lo_e - lo_b };
	uint64_t hi_b = base > FW_4G ? base : FW_4G, hi_e = end < FW_4G + c->high_size ? end : FW_4G + c->high_size;
	if (hi_b < hi_e)
		out[n++] = (struct mem_range){ hi_b, hi_e - hi_b };
	return n;
}

static int build_srat(struct acpi_builder *b, uint64_t *gpa)
{
	struct fw_ctx *c = b->c;
	const struct fw_config *cfg = c->cfg;
	struct mem_range mem[2 * 64];
	uint32_t dom[2 * 64];
	size_t n_mem = 0;
	uint64_t covered = 0;

	if (cfg->n_nodes > 64)
		return -E2BIG;
	for (unsigned k = 0; k < cfg->n_nodes; k++) {
		uint64_t base = 0, size = UINT64_MAX;
		if (cfg->node_mem_base && cfg->node_mem_size) {
			base = cfg->node_mem_base[k];
			size = cfg->node_mem_size[k];
		} else if (k > 0) {
			break;
		}
		size_t np = ram_pieces(c, base, size, &mem[n_mem]);
		for (size_t j = 0; j < np; j++) {
			dom[n_mem + j] = k;
			covered += mem[n_mem + j].len;
		}
		n_mem += np;
	}
	if (covered != cfg->ram_size)
		pr_warn("SRAT: node ranges cover %llu of %llu bytes of RAM (Linux ignores a SRAT that leaves RAM out)",
			(unsigned long long)covered, (unsigned long long)cfg->ram_size);

	size_t len = 48 + n_mem * 40;
	for (unsigned i = 0; i < cfg->n_vcpus; i++)
		len += cfg->apic_ids[i] >= 255 ? 24 : 16;
	uint8_t *t = acpi_alloc(b, len, 16, gpa);
	if (!t)
		return -ENOSPC;
	sdt_header(t, "SRAT", (uint32_t)len, 3);
	fw_wr32(t + 36, 1);                /* reserved, 1 for compatibility */
	uint8_t *e = t + 48;
	for (unsigned i = 0; i < cfg->n_vcpus; i++) {
		uint32_t id = cfg->apic_ids[i], d = vcpu_node(cfg, i);
		if (id < 255) {
			e[0] = 0;
			e[1] = 16;
			e[2] = (uint8_t)d;
			e[3] = (uint8_t)id;
			fw_wr32(e + 4, 1);
			e[8] = 0;
			e[9] = (uint8_t)(d >> 8);
			e[10] = (uint8_t)(d >> 16);
			e[11] = (uint8_t)(d >> 24);
			fw_wr32(e + 12, 0);
			e += 16;
		} else {
			e[0] = 2;
			e[1] = 24;
			fw_wr32(e + 4, d);
			fw_wr32(e + 8, id);
			fw_wr32(e + 12, 1);
			e += 24;
		}
	}
	for (size_t j = 0; j < n_mem; j++) {
		e[0] = 1;
		e[1] = 40;
		fw_wr32(e + 2, dom[j]);
		fw_wr32(e + 8, (uint32_t)mem[j].base);
		fw_wr32(e + 12, (uint32_t)(mem[j].base >> 32));
		fw_wr32(e + 16, (uint32_t)mem[j].len);
		fw_wr32(e + 20, (uint32_t)(mem[j].len >> 32));
		fw_wr32(e + 28, 1);            /* enabled */
		e += 40;
	}
	sdt_finish(t);
	return 0;
}

static int build_slit(struct acpi_builder *b, uint64_t *gpa)
{
	const struct fw_config *cfg = b->c->cfg;
	unsigned n = cfg->n_nodes;
	size_t len = 44 + (size_t)n * n;
	uint8_t *t = acpi_alloc(b, len, 16, gpa);
	if (!t)
		return -ENOSPC;
	sdt_header(t, "SLIT", (uint32_t)len, 1);
	fw_wr64(t + 36, n);
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = 0; j < n; j++) {
			uint8_t d = cfg->slit ? cfg->slit[i * n + j] : (i == j ? 10 : 20);
			if (i == j)
				d = 10;                /* the spec requires 10 on the diagonal */
			else if (d <= 10)
				d = 20;                /* 0-9 reserved, 10 only for the local node */
			t[44 + i * n + j] = d;
		}
	sdt_finish(t);
	return 0;
}

/* DefinitionBlock with Scope (\_SB) {} and Name (_S5, Package (4) {0, 0, 0, 0}). */
static const uint8_t dsdt_aml[] = {
	0x10, 0x06, '\\', '_', 'S', 'B', '_',
	0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
};

static int build_dsdt(struct acpi_builder *b, uint64_t *gpa)
{
	size_t len = 36 + sizeof(dsdt_aml);
	uint8_t *t = acpi_alloc(b, len, 16, gpa);
	if (!t)
		return -ENOSPC;
	sdt_header(t, "DSDT", (uint32_t)len, 2);
	memcpy(t + 36, dsdt_aml, sizeof(dsdt_aml));
	sdt_finish(t);
	return 0;
}

static int build_facs(struct acpi_builder *b, uint64_t *gpa)
{
	uint8_t *t = acpi_alloc(b, 64, 64, gpa);
	if (!t)
		return -ENOSPC;
	memcpy(t, "FACS", 4);
	fw_wr32(t + 4, 64);
	t[32] = 2;                         /* version */
	return 0;
}

#define FADT_LEN 276

static int build_fadt(struct acpi_builder *b, uint64_t facs, uint64_t dsdt, uint64_t *gpa)
{
	uint8_t *t = acpi_alloc(b, FADT_LEN, 16, gpa);
	if (!t)
		return -ENOSPC;
	sdt_header(t, "FACP", FADT_LEN, 6);
	fw_wr32(t + 36, (uint32_t)facs);
	fw_wr32(t + 40, (uint32_t)dsdt);
	t[45] = 0;                         /* preferred PM profile: unspecified */
	fw_wr16(t + 46, ACPI_SCI_IRQ);
	fw_wr32(t + 48, 0);                /* SMI_CMD 0: no SMM, always in ACPI mode */
	fw_wr32(t + 56, ACPI_PM1_EVT);
	fw_wr32(t + 64, ACPI_PM1_CNT);
	fw_wr32(t + 76, ACPI_PM_TMR);
	t[88] = 4;                         /* PM1_EVT_LEN */
	t[89] = 2;                         /* PM1_CNT_LEN */
	t[91] = 4;                         /* PM_TMR_LEN */
	fw_wr16(t + 96, 101);              /* P_LVL2_LAT > 100: C2 not supported */
	fw_wr16(t + 98, 1001);             /* P_LVL3_LAT > 1000: C3 not supported */
	/* IA-PC boot arch: LEGACY_DEVICES (UART/PIT/RTC on ISA ports), no 8042, VGA not present, MSI not supported. */
	fw_wr16(t + 109, (1u << 0) | (1u << 2) | (1u << 3));
	/* WBINVD, PROC_C1, PWR_BUTTON and SLP_BUTTON as control methods (i.e. none), TMR_VAL_EXT, RESET_REG_SUP. */
	fw_wr32(t + 112, (1u << 0) | (1u << 2) | (1u << 4) | (1u << 5) | (1u << 8) | (1u << 10));
	gas_io(t + 116, ACPI_RESET_PORT, 8);
	t[128] = ACPI_RESET_VALUE;
	t[131] = 3;                        /* FADT minor version: ACPI 6.3 */
	fw_wr64(t + 132, facs);
	fw_wr64(t + 140, dsdt);
	gas_io(t + 148, ACPI_PM1_EVT, 32);
	gas_io(t + 172, ACPI_PM1_CNT, 16);
	gas_io(t + 208, ACPI_PM_TMR, 32);
	memcpy(t + 268, "rackvm\0\0", 8);  /* hypervisor vendor identity */
	sdt_finish(t);
	return 0;
}

int fw_acpi_build(struct fw_ctx *c)
{
	struct acpi_builder b = { .c = c, .next = FW_ACPI_BASE };
	uint64_t rsdp_gpa, facs, dsdt, tab[4];
	size_t n = 0;
	int r;

	uint8_t *rsdp = acpi_alloc(&b, 36, 16, &rsdp_gpa); /* first: FW_ACPI_BASE, as fw_files_only() states */
	r = build_facs(&b, &facs);
	if (!r)
		r = build_dsdt(&b, &dsdt);
	if (!r)
		r = build_fadt(&b, facs, dsdt, &tab[n++]);
	if (!r)
		r = build_madt(&b, &tab[n++]);
	if (!r)
		r = build_srat(&b, &tab[n++]);
	if (!r)
		r = build_slit(&b, &tab[n++]);
	if (r < 0)
		return fw_fail(c, -r, "ACPI tables for %u vCPUs and %u nodes do not fit in 0x%llx-0x%llx", c->cfg->n_vcpus,
			       c->cfg->n_nodes, (unsigned long long)FW_ACPI_BASE, (unsigned long long)FW_ACPI_END);

	uint64_t rsdt_gpa, xsdt_gpa;
	uint8_t *rsdt = acpi_alloc(&b, 36 + 4 * n, 16, &rsdt_gpa);
	uint8_t *xsdt = acpi_alloc(&b, 36 + 8 * n, 16, &xsdt_gpa);
	if (!rsdt || !xsdt)
		return fw_fail(c, ENOSPC, "ACPI tables do not fit in the BIOS area");
	sdt_header(rsdt, "RSDT", (uint32_t)(36 + 4 * n), 1);
	sdt_header(xsdt, "XSDT", (uint32_t)(36 + 8 * n), 1);
	for (size_t i = 0; i < n; i++) {
		fw_wr32(rsdt + 36 + 4 * i, (uint32_t)tab[i]);
		fw_wr64(xsdt + 36 + 8 * i, tab[i]);
	}
	sdt_finish(rsdt);
	sdt_finish(xsdt);

	memcpy(rsdp, "RSD PTR ", 8);
	memcpy(rsdp + 9, ACPI_OEM_ID, 6);
	rsdp[15] = 2;
	fw_wr32(rsdp + 16, (uint32_t)rsdt_gpa);
	fw_wr32(rsdp + 20, 36);
	fw_wr64(rsdp + 24, xsdt_gpa);
	rsdp[8] = (uint8_t)(0 - acpi_sum(rsdp, 20));
	rsdp[32] = (uint8_t)(0 - acpi_sum(rsdp, 36));
	c->rsdp_gpa = rsdp_gpa;
	return 0;
}
