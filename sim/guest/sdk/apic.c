/*
 * Local APIC: xAPIC through MMIO (base from the MADT / IA32_APIC_BASE) or x2APIC through MSRs 0x800+.
 * x2APIC is used when CPUID.1:ECX[21] says so and the command line does not say apic=xapic; every CPU
 * switches its own APIC to the mode the BSP chose.
 */
#include "kern.h"

#define MSR_APIC_BASE   0x1b
#define APIC_BASE_EN    (1ull << 11)
#define APIC_BASE_EXTD  (1ull << 10)

#define APIC_ID         0x020
#define APIC_TPR        0x080
#define APIC_EOI        0x0b0
#define APIC_SVR        0x0f0
#define APIC_ICR_LO     0x300
#define APIC_ICR_HI     0x310
#define APIC_LVT_LINT0  0x350

#define ICR_FIXED       0x000
#define ICR_INIT        0x500
#define ICR_STARTUP     0x600
#define ICR_BUSY        (1u << 12)
#define ICR_ASSERT      (1u << 14)
#define ICR_LEVEL       (1u << 15)
#define LVT_MASKED      (1u << 16)

uint64_t apic_mmio_base = 0xfee00000;
static bool use_x2apic;

static uint32_t apic_read(unsigned reg)
{
	if (use_x2apic)
		return (uint32_t)rdmsr(0x800 + (reg >> 4));
	return *(volatile uint32_t *)(uintptr_t)(apic_mmio_base + reg);
}

static void apic_write(unsigned reg, uint32_t v)
{
	if (use_x2apic)
		wrmsr(0x800 + (reg >> 4), v);
	else
		*(volatile uint32_t *)(uintptr_t)(apic_mmio_base + reg) = v;
}

static void apic_enable_this_cpu(void)
{
	uint64_t base = rdmsr(MSR_APIC_BASE) | APIC_BASE_EN;
	wrmsr(MSR_APIC_BASE, base);     /* xAPIC first: enabling EXTD from disabled is an invalid transition */
	if (use_x2apic)
		wrmsr(MSR_APIC_BASE, base | APIC_BASE_EXTD);
	apic_write(APIC_TPR, 0);
	apic_write(APIC_LVT_LINT0, LVT_MASKED);     /* no 8259 ExtINT through the local APIC */
	apic_write(APIC_SVR, 0x100 | SPURIOUS_VECTOR);
}

int apic_init_bsp(bool allow_x2apic)
{
	uint32_t r[4];
	cpuid(1, 0, r);
	if (!(r[3] & (1u << 9)))
		return -1;
	use_x2apic = allow_x2apic && (r[2] & (1u << 21));
	g_info.x2apic = use_x2apic;
	apic_enable_this_cpu();
	return 0;
}

void apic_init_ap(void)
{
	apic_enable_this_cpu();
}

uint32_t apic_id(void)
{
	uint32_t v = apic_read(APIC_ID);
	return use_x2apic ? v : v >> 24;
}

void apic_eoi(void)
{
	apic_write(APIC_EOI, 0);
}

static void apic_icr(uint32_t dest, uint32_t lo)
{
	if (use_x2apic) {
		wrmsr(0x830, ((uint64_t)dest << 32) | lo);
		return;
	}
	while (apic_read(APIC_ICR_LO) & ICR_BUSY)
		u_pause();
	apic_write(APIC_ICR_HI, dest << 24);
	apic_write(APIC_ICR_LO, lo);
}

void apic_send_fixed(uint32_t dest, uint8_t vector)
{
	apic_icr(dest, ICR_FIXED | ICR_ASSERT | vector);
}

void apic_send_init(uint32_t dest)
{
	apic_icr(dest, ICR_INIT | ICR_ASSERT | ICR_LEVEL);
}

void apic_send_sipi(uint32_t dest, uint8_t page)
{
	apic_icr(dest, ICR_STARTUP | ICR_ASSERT | page);
}
