/*
 * Host unit test of the guest SDK's local APIC driver (sim/guest/sdk/apic.c) against a fake MSR file, a fake
 * CPUID and a fake xAPIC page. qemu 7.2 TCG offers no x2APIC, so this is where the x2APIC path (MSR numbers,
 * 64-bit ICR, EN then EN|EXTD) is checked on this machine; the xAPIC path is checked here and by booting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "sim/guest/sdk/apic.c"

struct guest_info g_info;

/* ---- fakes ---- */
#define MAX_LOG 64
static struct {
	uint32_t msr;
	uint64_t v;
} wr_log[MAX_LOG];
static unsigned nwr;
static uint64_t msr_apic_base, msr_x2apic_id;
static uint32_t cpuid1_ecx, cpuid1_edx;
static uint32_t xapic_page[1024] __attribute__((aligned(4096)));

uint64_t rdmsr(uint32_t msr)
{
	if (msr == MSR_APIC_BASE)
		return msr_apic_base;
	if (msr == 0x802)
		return msr_x2apic_id;
	fail_msg("unexpected rdmsr 0x%x", msr);
	return 0;
}

void wrmsr(uint32_t msr, uint64_t v)
{
	assert_true(nwr < MAX_LOG);
	wr_log[nwr].msr = msr;
	wr_log[nwr].v = v;
	nwr++;
	if (msr == MSR_APIC_BASE) {
		/* Hardware rule: EXTD may only be set while EN is (or becomes) set from the enabled state. */
		if ((v & APIC_BASE_EXTD) && !(msr_apic_base & APIC_BASE_EN))
			fail_msg("x2APIC enabled from the disabled state (invalid transition, #GP)");
		msr_apic_base = v;
	}
}

void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	(void)sub;
	memset(r, 0, 4 * sizeof(r[0]));
	if (leaf == 1) {
		r[2] = cpuid1_ecx;
		r[3] = cpuid1_edx;
	}
}

static uint64_t last_wr(uint32_t msr)
{
	for (unsigned i = nwr; i-- > 0;)
		if (wr_log[i].msr == msr)
			return wr_log[i].v;
	fail_msg("no wrmsr 0x%x", msr);
	return 0;
}

static uint32_t mmio(unsigned reg)
{
	return xapic_page[reg / 4];
}

static int setup(void **state)
{
	(void)state;
	nwr = 0;
	memset(&g_info, 0, sizeof(g_info));
	memset(xapic_page, 0, sizeof(xapic_page));
	msr_apic_base = 0xfee00000 | (1u << 8);     /* BSP, disabled */
	msr_x2apic_id = 0;
	cpuid1_ecx = 1u << 21;
	cpuid1_edx = 1u << 9;
	apic_mmio_base = (uint64_t)(uintptr_t)xapic_page;
	return 0;
}

static void test_x2apic_enable_and_registers(void **state)
{
	(void)state;
	assert_int_equal(apic_init_bsp(true), 0);
	assert_true(g_info.x2apic);
	assert_true(msr_apic_base & APIC_BASE_EN);
	assert_true(msr_apic_base & APIC_BASE_EXTD);
	assert_int_equal(last_wr(0x80f), 0x100 | SPURIOUS_VECTOR);  /* SVR */
	assert_int_equal(last_wr(0x835), 1u << 16);                 /* LINT0 masked */
	assert_int_equal(last_wr(0x808), 0);                        /* TPR */
	for (unsigned i = 0; i < 1024; i++)
		assert_int_equal(xapic_page[i], 0);                  /* no MMIO in x2APIC mode */
	msr_x2apic_id = 0x12345;
	assert_int_equal(apic_id(), 0x12345);                       /* full 32 bits, no shift */
}

static void test_x2apic_icr_and_eoi(void **state)
{
	(void)state;
	assert_int_equal(apic_init_bsp(true), 0);
	apic_send_fixed(300, GUEST_IPI_PING);
	assert_int_equal(last_wr(0x830), (300ull << 32) | (1u << 14) | GUEST_IPI_PING);
	apic_send_init(7);
	assert_int_equal(last_wr(0x830), (7ull << 32) | 0xc500);
	apic_send_sipi(7, 0x08);
	assert_int_equal(last_wr(0x830), (7ull << 32) | 0x4608);
	apic_eoi();
	assert_int_equal(last_wr(0x80b), 0);
}

static void test_xapic_when_forbidden_or_absent(void **state)
{
	(void)state;
	assert_int_equal(apic_init_bsp(false), 0);          /* apic=xapic */
	assert_false(g_info.x2apic);
	assert_false(msr_apic_base & APIC_BASE_EXTD);
	assert_int_equal(mmio(0xf0), 0x100 | SPURIOUS_VECTOR);
	assert_int_equal(mmio(0x350), 1u << 16);

	setup(NULL);
	cpuid1_ecx = 0;                                     /* CPU without x2APIC */
	assert_int_equal(apic_init_bsp(true), 0);
	assert_false(g_info.x2apic);
	assert_false(msr_apic_base & APIC_BASE_EXTD);
}

static void test_xapic_icr_id_eoi(void **state)
{
	(void)state;
	assert_int_equal(apic_init_bsp(false), 0);
	apic_send_fixed(3, GUEST_IPI_PONG);
	assert_int_equal(mmio(0x310), 3u << 24);
	assert_int_equal(mmio(0x300), (1u << 14) | GUEST_IPI_PONG);
	apic_send_init(2);
	assert_int_equal(mmio(0x310), 2u << 24);
	assert_int_equal(mmio(0x300), 0xc500);
	apic_send_sipi(2, 0x08);
	assert_int_equal(mmio(0x300), 0x4608);
	xapic_page[0x20 / 4] = 5u << 24;
	assert_int_equal(apic_id(), 5);
	xapic_page[0xb0 / 4] = 0xdead;
	apic_eoi();
	assert_int_equal(mmio(0xb0), 0);
}

static void test_no_apic(void **state)
{
	(void)state;
	cpuid1_edx = 0;
	assert_int_equal(apic_init_bsp(true), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_x2apic_enable_and_registers, setup),
		cmocka_unit_test_setup(test_x2apic_icr_and_eoi, setup),
		cmocka_unit_test_setup(test_xapic_when_forbidden_or_absent, setup),
		cmocka_unit_test_setup(test_xapic_icr_id_eoi, setup),
		cmocka_unit_test_setup(test_no_apic, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
