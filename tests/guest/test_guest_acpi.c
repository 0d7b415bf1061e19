/*
 * Host unit test of the guest SDK's ACPI parser (sim/guest/sdk/acpi.c, included to reach its statics).
 * Tables are built in a MAP_32BIT arena because the parser, like the guest's identity map, only accepts
 * tables below 4 GiB. Covers what qemu 7.2 never produces (XSDT, MADT x2APIC entries, SRAT x2APIC affinity)
 * and malformed input from a VMM: bad checksums, zero/overlong entry lengths, too many CPUs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "sim/guest/sdk/acpi.c"

int k_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vprintf(fmt, ap);
	va_end(ap);
	return n;
}

/* ---- table builder ---- */
static uint8_t *arena;
static size_t arena_used;
#define ARENA_SIZE (1 << 20)

static uint8_t *arena_alloc(size_t n)
{
	uint8_t *p = arena + arena_used;
	arena_used += (n + 15) & ~(size_t)15;
	assert_true(arena_used <= ARENA_SIZE);
	memset(p, 0, n);
	return p;
}

static uint64_t addr_of(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

static void fix_checksum(uint8_t *p, size_t len, size_t at)
{
	uint8_t sum = 0;
	p[at] = 0;
	for (size_t i = 0; i < len; i++)
		sum += p[i];
	p[at] = (uint8_t)-sum;
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

struct table {
	uint8_t *p;
	size_t len, cap;
};

static struct table table_begin(const char *sig, size_t header, size_t cap)
{
	struct table t = { arena_alloc(cap), header, cap };
	memcpy(t.p, sig, 4);
	return t;
}

static uint8_t *table_add(struct table *t, uint8_t type, uint8_t len)
{
	assert_true(t->len + len <= t->cap);
	uint8_t *e = t->p + t->len;
	e[0] = type;
	e[1] = len;
	t->len += len;
	return e;
}

static uint8_t *table_end(struct table *t)
{
	put32(t->p + 4, (uint32_t)t->len);
	fix_checksum(t->p, t->len, 9);
	return t->p;
}

static uint8_t *madt_begin(struct table *t, uint32_t lapic, uint32_t flags)
{
	*t = table_begin("APIC", 44, 4096);
	put32(t->p + 36, lapic);
	put32(t->p + 40, flags);
	return t->p;
}

static void madt_lapic(struct table *t, uint8_t uid, uint8_t id, uint32_t flags)
{
	uint8_t *e = table_add(t, 0, 8);
	e[2] = uid;
	e[3] = id;
	put32(e + 4, flags);
}

static void madt_x2apic(struct table *t, uint32_t id, uint32_t uid, uint32_t flags)
{
	uint8_t *e = table_add(t, 9, 16);
	put32(e + 4, id);
	put32(e + 8, flags);
	put32(e + 12, uid);
}

static const struct rsdp *make_rsdp(int rev, uint8_t **tables, unsigned n)
{
	struct rsdp *r = (struct rsdp *)arena_alloc(sizeof(*r));
	memcpy(r->sig, "RSD PTR ", 8);
	r->revision = (uint8_t)rev;
	bool x = rev >= 2;
	struct table root = table_begin(x ? "XSDT" : "RSDT", 36, 36 + 8 * n);
	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = root.p + root.len;
		if (x)
			put64(e, addr_of(tables[i]));
		else
			put32(e, (uint32_t)addr_of(tables[i]));
		root.len += x ? 8 : 4;
	}
	table_end(&root);
	if (x) {
		r->xsdt = addr_of(root.p);
		r->length = sizeof(*r);
	} else {
		r->rsdt = (uint32_t)addr_of(root.p);
	}
	fix_checksum((uint8_t *)r, 20, offsetof(struct rsdp, checksum));
	if (x)
		fix_checksum((uint8_t *)r, sizeof(*r), offsetof(struct rsdp, ext_checksum));
	return r;
}

static struct guest_info gi;

static int setup(void **state)
{
	(void)state;
	arena_used = 0;
	memset(&gi, 0, sizeof(gi));
	return 0;
}

static int parse(const struct rsdp *r, uint64_t *lapic, bool *pcat)
{
	return acpi_parse_rsdp(&gi, r, lapic, pcat);
}

/* ---- tests ---- */
static void test_rsdt_madt_enabled_only(void **state)
{
	(void)state;
	struct table m;
	madt_begin(&m, 0xfee00000, 1);
	madt_lapic(&m, 0, 0, 1);
	madt_lapic(&m, 1, 1, 0);        /* disabled */
	madt_lapic(&m, 2, 2, 2);        /* online-capable only: not brought up */
	madt_lapic(&m, 3, 5, 1);
	uint8_t *t[] = { table_end(&m) };
	uint64_t lapic = 0;
	bool pcat = false;
	assert_int_equal(parse(make_rsdp(0, t, 1), &lapic, &pcat), 0);
	assert_int_equal(lapic, 0xfee00000);
	assert_true(pcat);
	assert_int_equal(gi.madt_cpus, 2);
	assert_int_equal(gi.cpu[0].apic_id, 0);
	assert_int_equal(gi.cpu[1].apic_id, 5);
	assert_int_equal(gi.cpu[1].acpi_uid, 3);
	assert_false(gi.have_srat);
}

static void test_xsdt_x2apic_override_and_srat(void **state)
{
	(void)state;
	struct table m;
	madt_begin(&m, 0xfee00000, 0);
	madt_lapic(&m, 0, 0, 1);
	madt_x2apic(&m, 0, 0, 1);       /* same CPU listed twice: counted once */
	madt_x2apic(&m, 300, 7, 1);
	uint8_t *ovr = table_add(&m, 5, 12);
	put64(ovr + 4, 0xfed00000);
	struct table s = table_begin("SRAT", 48, 4096);
	uint8_t *e = table_add(&s, 0, 16);      /* APIC id 0 -> domain 0x030201 */
	e[2] = 0x01;
	e[3] = 0;
	put32(e + 4, 1);
	e[9] = 0x02;
	e[10] = 0x03;
	e = table_add(&s, 2, 24);               /* x2APIC 300 -> domain 4 */
	put32(e + 4, 4);
	put32(e + 8, 300);
	put32(e + 12, 1);
	e = table_add(&s, 1, 40);               /* memory 16 MiB @ 4 GiB, domain 4 */
	put32(e + 2, 4);
	put32(e + 8, 0);
	put32(e + 12, 1);
	put32(e + 16, 16 << 20);
	put32(e + 28, 1);
	e = table_add(&s, 1, 40);               /* disabled memory range: ignored */
	put32(e + 2, 9);
	uint8_t *t[] = { table_end(&m), table_end(&s) };
	uint64_t lapic = 0;
	bool pcat = true;
	assert_int_equal(parse(make_rsdp(2, t, 2), &lapic, &pcat), 0);
	assert_int_equal(lapic, 0xfed00000);
	assert_false(pcat);
	assert_int_equal(gi.madt_cpus, 2);
	assert_int_equal(gi.cpu[1].apic_id, 300);
	assert_int_equal(gi.cpu[1].acpi_uid, 7);
	assert_true(gi.have_srat);
	assert_int_equal(gi.cpu[0].node, 0x030201);
	assert_int_equal(gi.cpu[1].node, 4);
	assert_int_equal(gi.nnuma_mem, 1);
	assert_int_equal(gi.numa_mem[0].node, 4);
	assert_int_equal(gi.numa_mem[0].base, 1ull << 32);
	assert_int_equal(gi.numa_mem[0].len, 16 << 20);
}

static void test_bad_checksum_table_ignored(void **state)
{
	(void)state;
	struct table m;
	madt_begin(&m, 0xfee00000, 0);
	madt_lapic(&m, 0, 0, 1);
	uint8_t *t[] = { table_end(&m) };
	t[0][20] ^= 0x55;                       /* corrupt after the checksum was set */
	uint64_t lapic;
	bool pcat;
	assert_int_equal(parse(make_rsdp(0, t, 1), &lapic, &pcat), -1);
	assert_int_equal(gi.madt_cpus, 0);
}

static void test_malformed_entries_stop_parsing(void **state)
{
	(void)state;
	struct table m;
	madt_begin(&m, 0xfee00000, 0);
	madt_lapic(&m, 0, 0, 1);
	uint8_t *e = table_add(&m, 0, 8);
	e[1] = 0;                               /* zero length would loop forever */
	madt_lapic(&m, 1, 1, 1);
	uint8_t *t[] = { table_end(&m) };
	uint64_t lapic;
	bool pcat;
	assert_int_equal(parse(make_rsdp(0, t, 1), &lapic, &pcat), 0);
	assert_int_equal(gi.madt_cpus, 1);

	setup(NULL);
	madt_begin(&m, 0xfee00000, 0);
	madt_lapic(&m, 0, 0, 1);
	e = table_add(&m, 9, 16);
	e[1] = 200;                             /* runs past the table */
	uint8_t *t2[] = { table_end(&m) };
	assert_int_equal(parse(make_rsdp(0, t2, 1), &lapic, &pcat), 0);
	assert_int_equal(gi.madt_cpus, 1);

	setup(NULL);
	madt_begin(&m, 0xfee00000, 0);
	uint8_t *t3[] = { table_end(&m) };      /* MADT without CPUs */
	assert_int_equal(parse(make_rsdp(0, t3, 1), &lapic, &pcat), -1);
}

static void test_too_many_cpus_capped(void **state)
{
	(void)state;
	struct table m;
	madt_begin(&m, 0xfee00000, 0);
	for (unsigned i = 0; i < GUEST_MAX_CPUS + 6; i++)
		madt_x2apic(&m, i, i, 1);
	uint8_t *t[] = { table_end(&m) };
	uint64_t lapic;
	bool pcat;
	assert_int_equal(parse(make_rsdp(2, t, 1), &lapic, &pcat), 0);
	assert_int_equal(gi.madt_cpus, GUEST_MAX_CPUS);
}

static void test_table_length_out_of_range(void **state)
{
	(void)state;
	struct table m;
	madt_begin(&m, 0xfee00000, 0);
	madt_lapic(&m, 0, 0, 1);
	uint8_t *t[] = { table_end(&m) };
	put32(t[0] + 4, 0xfffffff0);            /* claims to run past 4 GiB */
	uint64_t lapic;
	bool pcat;
	assert_int_equal(parse(make_rsdp(0, t, 1), &lapic, &pcat), -1);
	assert_int_equal(gi.madt_cpus, 0);
}

static void test_rsdp_scan(void **state)
{
	(void)state;
	uint8_t *area = arena_alloc(4096);
	uint8_t *t[] = { NULL };
	struct table m;
	madt_begin(&m, 0xfee00000, 0);
	madt_lapic(&m, 0, 0, 1);
	t[0] = table_end(&m);
	const struct rsdp *r = make_rsdp(0, t, 1);
	memcpy(area + 0x40, r, 20);             /* good copy, 16-byte aligned */
	memcpy(area + 0x20, r, 20);
	area[0x20 + 8] ^= 1;                    /* earlier copy with a bad checksum: skipped */
	assert_ptr_equal(rsdp_scan(addr_of(area), 4096), area + 0x40);
	assert_null(rsdp_scan(addr_of(area), 0x40));
}

int main(void)
{
	arena = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	if (arena == MAP_FAILED) {
		printf("SKIP: mmap(MAP_32BIT) failed: the parser needs tables below 4 GiB\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_rsdt_madt_enabled_only, setup),
		cmocka_unit_test_setup(test_xsdt_x2apic_override_and_srat, setup),
		cmocka_unit_test_setup(test_bad_checksum_table_ignored, setup),
		cmocka_unit_test_setup(test_malformed_entries_stop_parsing, setup),
		cmocka_unit_test_setup(test_too_many_cpus_capped, setup),
		cmocka_unit_test_setup(test_table_length_out_of_range, setup),
		cmocka_unit_test_setup(test_rsdp_scan, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
