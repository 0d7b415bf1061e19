/*
 * AP bring-up: INIT, SIPI, SIPI (the second only if the AP has not answered) to each enabled MADT CPU in
 * turn, one at a time, through the real-mode trampoline copied to AP_TRAMP_BASE. An AP answers by setting
 * ap_alive once its tables and APIC are set up, then goes to ring 3 and waits there for the release.
 */
#include "kern.h"

extern char ap_tramp_start[], ap_tramp_end[], ap_mailbox[], pml4[];
static volatile uint32_t ap_alive;
volatile uint32_t g_release;

static uint64_t tsc_per_us(void)
{
	/* Unknown frequency: assume 3 GHz, so delays and timeouts are at least as long as asked on slower TSCs. */
	return g_info.tsc_khz ? (g_info.tsc_khz + 999) / 1000 : 3000;
}

static void delay_us(uint64_t us)
{
	uint64_t end = rdtsc() + us * tsc_per_us();
	while ((int64_t)(rdtsc() - end) < 0)
		u_pause();
}

static bool wait_alive(uint32_t index, uint64_t us)
{
	uint64_t end = rdtsc() + us * tsc_per_us();
	while ((int64_t)(rdtsc() - end) < 0) {
		if (ap_alive == index)
			return true;
		u_pause();
	}
	return ap_alive == index;
}

void smp_ap_main(uint64_t index);
void smp_ap_main(uint64_t index)
{
	cpu_load_tables((unsigned)index, (uint64_t)(uintptr_t)(g_kstacks[index] + KSTACK_SIZE));
	apic_init_ap();
	uint32_t id = apic_id();
	g_percpu[index].apic_id = id;
	if (id != g_info.cpu[index].apic_id) {
		k_printf("smp: cpu %lu reports apic id %u, MADT says %u\n", index, id, g_info.cpu[index].apic_id);
		guest_exit(GUEST_EXIT_BOOT);
	}
	__atomic_store_n(&ap_alive, (uint32_t)index, __ATOMIC_RELEASE);
	user_start((unsigned)index);
}

static bool tramp_page_is_ram(void)
{
	for (unsigned i = 0; i < g_info.nmmap; i++) {
		const struct guest_mem_range *m = &g_info.mmap[i];
		if (m->type == 1 && m->base <= AP_TRAMP_BASE && m->base + m->len >= AP_TRAMP_BASE + 0x1000)
			return true;
	}
	return g_info.nmmap == 0;   /* no map at all: trust the conventional layout */
}

int smp_boot_aps(void)
{
	unsigned n = g_info.madt_cpus, up = 1;
	if (n > 1 && !tramp_page_is_ram()) {
		k_printf("smp: trampoline page 0x%x is not available RAM in the memory map\n", AP_TRAMP_BASE);
		return -1;
	}
	if (n > 1) {
		size_t sz = (size_t)(ap_tramp_end - ap_tramp_start);
		memcpy(phys_ptr(AP_TRAMP_BASE), ap_tramp_start, sz);
	}
	volatile uint64_t *mbox = (volatile uint64_t *)phys_ptr(AP_TRAMP_BASE + (uint64_t)(ap_mailbox - ap_tramp_start));
	for (unsigned i = 1; i < n; i++) {
		uint32_t id = g_info.cpu[i].apic_id;
		uint64_t t0 = rdtsc();
		mbox[MBOX_CR3 / 8] = (uint64_t)(uintptr_t)pml4;
		mbox[MBOX_STACK / 8] = (uint64_t)(uintptr_t)(g_kstacks[i] + KSTACK_SIZE);
		mbox[MBOX_ENTRY / 8] = (uint64_t)(uintptr_t)smp_ap_main;
		mbox[MBOX_ARG / 8] = i;
		u_mb();
		apic_send_init(id);
		delay_us(10000);
		apic_send_sipi(id, AP_TRAMP_BASE >> 12);
		if (!wait_alive(i, 10000)) {
			apic_send_sipi(id, AP_TRAMP_BASE >> 12);
			if (!wait_alive(i, 5000000)) {
				k_printf("smp: cpu %u (apic id %u) did not come up\n", i, id);
				continue;
			}
		}
		up++;
		k_printf("smp: cpu %u apic id %u up in %lu tsc ticks\n", i, id, rdtsc() - t0);
	}
	k_printf("smp: %u of %u cpus up\n", up, n);
	if (up != n)
		return -1;
	g_info.ncpus = n;
	__atomic_store_n(&g_release, 1, __ATOMIC_RELEASE);
	return 0;
}

void user_start(unsigned cpu)
{
	g_info.cpu[cpu].up = 1;
	/* -8: the workload entry sees the stack as if it had been called */
	enter_user((uint64_t)(uintptr_t)u_entry, (uint64_t)(uintptr_t)(g_ustacks[cpu] + USTACK_SIZE) - 8, cpu);
}
