/* System calls (INT3 from ring 3, see kern.h): rax = number, rdi/rsi/rdx = arguments, rax = result. Arguments are
 * checked. */
#include "kern.h"

volatile uint32_t g_ipi_source[GUEST_MAX_CPUS];

static volatile uint32_t kbar_count, kbar_sense;

/* Ring-0 barrier over all CPUs; interrupts stay off while waiting. */
void smp_kernel_barrier(void)
{
	uint32_t sense = !kbar_sense;
	if (__atomic_add_fetch(&kbar_count, 1, __ATOMIC_ACQ_REL) == g_info.ncpus) {
		kbar_count = 0;
		__atomic_store_n(&kbar_sense, sense, __ATOMIC_RELEASE);
		return;
	}
	while (__atomic_load_n(&kbar_sense, __ATOMIC_ACQUIRE) != sense)
		u_pause();
}

static bool user_range_ok(uint64_t p, uint64_t len)
{
	return len <= 4096 && p < 0x100000000ull && p + len <= 0x100000000ull;
}

void sys_dispatch(struct trap_frame *f)
{
	struct percpu *pc = this_cpu();
	switch (f->rax) {
	case SYS_WRITE:
		if (!user_range_ok(f->rdi, f->rsi)) {
			f->rax = (uint64_t)-1;
			return;
		}
		console_write((const char *)(uintptr_t)f->rdi, f->rsi);
		f->rax = 0;
		return;
	case SYS_EXIT:
		guest_exit((int)f->rdi);
	case SYS_BARRIER:
		smp_kernel_barrier();
		f->rax = 0;
		return;
	case SYS_CPU:
		f->rax = pc->index;
		return;
	case SYS_IPI:
		if (f->rdi >= g_info.ncpus || (f->rsi != GUEST_IPI_PING && f->rsi != GUEST_IPI_PONG)) {
			f->rax = (uint64_t)-1;
			return;
		}
		/* written only when it changes: repeated pings to one CPU then leave the page shared (read-only) on
		 * every node instead of moving it to the sender and back on each ping */
		if (g_ipi_source[f->rdi] != pc->index)
			g_ipi_source[f->rdi] = pc->index;
		apic_send_fixed(g_info.cpu[f->rdi].apic_id, (uint8_t)f->rsi);
		f->rax = 0;
		return;
	case SYS_HALT:
		/* Wait for one interrupt unless *rdi says stop. The check runs with interrupts off (the INT3 gate
		 * cleared IF) and STI's shadow covers the HLT: an interrupt that comes after the check wakes the HLT
		 * at once instead of being taken before it (no lost wake-up). */
		if (!user_range_ok(f->rdi, 4)) {
			f->rax = (uint64_t)-1;
			return;
		}
		if (!*(volatile uint32_t *)(uintptr_t)f->rdi)
			__asm__ volatile("sti; hlt; cli" ::: "memory");
		f->rax = 0;
		return;
	case SYS_IDLE:      /* this CPU is done: halt with interrupts on */
		cpu_idle();
	default:
		f->rax = (uint64_t)-1;
		return;
	}
}
