/*
 * ACPI discovery: RSDP (EBDA first KiB, then 0xE0000-0xFFFFF), RSDT/XSDT, MADT (local APIC and x2APIC
 * entries) and SRAT (processor and memory affinity). Tables must lie in the identity-mapped low 4 GiB.
 * Every length is checked against its table before use; a malformed table is reported and ignored.
 */
#include "kern.h"

struct sdt_header {
	char sig[4];
	uint32_t length;
	uint8_t revision, checksum;
	char oem_id[6], oem_table_id[8];
	uint32_t oem_revision, creator_id, creator_revision;
} __attribute__((packed));

struct rsdp {
	char sig[8];
	uint8_t checksum;
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt;
	uint32_t length;
	uint64_t xsdt;
	uint8_t ext_checksum, reserved[3];
} __attribute__((packed));

/* Table fields are unaligned: read them bytewise. */
static uint32_t rd32(const uint8_t *p)
{
	return p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t rd64(const uint8_t *p)
{
	return rd32(p) | ((uint64_t)rd32(p + 4) << 32);
}

static bool checksum_ok(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum += b[i];
	return sum == 0;
}

static const struct rsdp *rsdp_scan(uint64_t start, uint64_t len)
{
	for (uint64_t a = start; a + 20 <= start + len; a += 16) {
		const struct rsdp *r = (const struct rsdp *)phys_ptr(a);
		if (memcmp(r->sig, "RSD PTR ", 8) == 0 && checksum_ok(r, 20))
			return r;
	}
	return NULL;
}

static const struct rsdp *rsdp_find(void)
{
	uint64_t ebda = (uint64_t)(*(volatile uint16_t *)phys_ptr(0x40e)) << 4;
	const struct rsdp *r = NULL;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		r = rsdp_scan(ebda, 1024);
	return r ? r : rsdp_scan(0xe0000, 0x20000);
}

static const struct sdt_header *sdt_map(uint64_t addr)
{
	if (!addr || addr >= 0x100000000ull - sizeof(struct sdt_header))
		return NULL;
	const struct sdt_header *h = (const struct sdt_header *)(uintptr_t)addr;
	if (h->length < sizeof(*h) || addr + h->length > 0x100000000ull)
		return NULL;
	if (!checksum_ok(h, h->length)) {
		k_printf("acpi: bad checksum in %.4s at 0x%lx\n", h->sig, addr);
		return NULL;
	}
	return h;
}

static void madt_add_cpu(struct guest_info *gi, uint32_t apic_id, uint32_t uid, uint32_t flags)
{
	if (!(flags & 1))
		return;     /* disabled (or only online-capable): not brought up */
	for (unsigned i = 0; i < gi->madt_cpus; i++)
		if (gi->cpu[i].apic_id == apic_id)
			return;
	if (gi->madt_cpus >= GUEST_MAX_CPUS) {
		k_printf("acpi: more than %d CPUs in MADT, ignoring apic id %u\n", GUEST_MAX_CPUS, apic_id);
		return;
	}
	gi->cpu[gi->madt_cpus].apic_id = apic_id;
	gi->cpu[gi->madt_cpus].acpi_uid = uid;
	gi->madt_cpus++;
}

static void madt_parse(struct guest_info *gi, const struct sdt_header *h, uint64_t *lapic, bool *pcat)
{
	const uint8_t *p = (const uint8_t *)h;
	unsigned entries = 0;
	if (h->length < 44)
		return;
	*lapic = rd32(p + 36);
	*pcat = rd32(p + 40) & 1;
	for (uint32_t off = 44; off + 2 <= h->length;) {
		uint8_t type = p[off], len = p[off + 1];
		if (len < 2 || off + len > h->length)
			break;
		const uint8_t *e = p + off;
		if (type == 0 && len >= 8) {
			madt_add_cpu(gi, e[3], e[2], rd32(e + 4));
			entries++;
		} else if (type == 9 && len >= 16) {
			madt_add_cpu(gi, rd32(e + 4), rd32(e + 12), rd32(e + 8));
			entries++;
		} else if (type == 5 && len >= 12) {
			*lapic = rd64(e + 4);
		}
		off += len;
	}
	k_printf("acpi: MADT has %u processor entries, %u enabled, local APIC at 0x%lx\n", entries,
		 gi->madt_cpus, *lapic);
}

static void srat_cpu_node(struct guest_info *gi, uint32_t apic_id, uint32_t node)
{
	for (unsigned i = 0; i < gi->madt_cpus; i++)
		if (gi->cpu[i].apic_id == apic_id)
			gi->cpu[i].node = node;
}

static void srat_parse(struct guest_info *gi, const struct sdt_header *h)
{
	const uint8_t *p = (const uint8_t *)h;
	gi->have_srat = true;
	for (uint32_t off = 48; off + 2 <= h->length;) {
		uint8_t type = p[off], len = p[off + 1];
		if (len < 2 || off + len > h->length)
			break;
		const uint8_t *e = p + off;
		if (type == 0 && len >= 16 && (rd32(e + 4) & 1)) {
			uint32_t node = e[2] | ((uint32_t)e[9] << 8) | ((uint32_t)e[10] << 16) |
				((uint32_t)e[11] << 24);
			srat_cpu_node(gi, e[3], node);
		} else if (type == 2 && len >= 24 && (rd32(e + 12) & 1)) {
			srat_cpu_node(gi, rd32(e + 8), rd32(e + 4));
		} else if (type == 1 && len >= 40 && (rd32(e + 28) & 1) &&
			   gi->nnuma_mem < GUEST_MAX_NUMA_MEM) {
			struct guest_numa_mem *m = &gi->numa_mem[gi->nnuma_mem++];
			m->node = rd32(e + 2);
			m->base = rd32(e + 8) | ((uint64_t)rd32(e + 12) << 32);
			m->len = rd32(e + 16) | ((uint64_t)rd32(e + 20) << 32);
		}
		off += len;
	}
}

static int acpi_parse_rsdp(struct guest_info *gi, const struct rsdp *r, uint64_t *lapic_addr, bool *pcat_compat)
{
	/* ACPI 2.0+: the extended checksum covers the 36-byte structure */
	bool xsdt = r->revision >= 2 && r->xsdt && checksum_ok(r, sizeof(*r));
	const struct sdt_header *root = sdt_map(xsdt ? r->xsdt : r->rsdt);
	if (!root) {
		k_printf("acpi: no valid %s\n", xsdt ? "XSDT" : "RSDT");
		return -1;
	}
	unsigned esz = xsdt ? 8 : 4;
	unsigned n = (root->length - sizeof(*root)) / esz;
	const uint8_t *ents = (const uint8_t *)(root + 1);
	bool have_madt = false;
	k_printf("acpi: RSDP at %p rev %u, %s with %u tables\n", (const void *)r, r->revision,
		 xsdt ? "XSDT" : "RSDT", n);
	for (unsigned i = 0; i < n; i++) {
		uint64_t a = esz == 8 ? rd64(ents + 8 * i) : rd32(ents + 4 * i);
		const struct sdt_header *h = sdt_map(a);
		if (!h)
			continue;
		if (memcmp(h->sig, "APIC", 4) == 0 && !have_madt) {
			madt_parse(gi, h, lapic_addr, pcat_compat);
			have_madt = true;
		}
	}
	/* SRAT after MADT: its processor entries refer to APIC ids the MADT listed. */
	for (unsigned i = 0; i < n; i++) {
		uint64_t a = esz == 8 ? rd64(ents + 8 * i) : rd32(ents + 4 * i);
		const struct sdt_header *h = sdt_map(a);
		if (h && memcmp(h->sig, "SRAT", 4) == 0 && h->length >= 48) {
			srat_parse(gi, h);
			break;
		}
	}
	if (!have_madt || !gi->madt_cpus) {
		k_printf("acpi: no MADT or no enabled CPU in it\n");
		return -1;
	}
	return 0;
}

int acpi_parse(struct guest_info *gi, uint64_t *lapic_addr, bool *pcat_compat)
{
	const struct rsdp *r = rsdp_find();
	if (!r) {
		k_printf("acpi: no RSDP found\n");
		return -1;
	}
	return acpi_parse_rsdp(gi, r, lapic_addr, pcat_compat);
}
