/*
 * Ring-3 runtime: entry on every CPU (u_entry), syscall wrappers, printf, the ring-3 barrier and command
 * line options. These functions are also safe to call from ring 0 (the options parser is used by kmain).
 */
#include "kern.h"

static long syscall3(long nr, long a0, long a1, long a2)
{
	long ret;
	__asm__ volatile("int3" : "=a"(ret) : "a"(nr), "D"(a0), "S"(a1), "d"(a2) : "memory");   /* kern.h */
	return ret;
}

void sys_write(const char *s, size_t len)
{
	while (len) {
		size_t n = len > 4096 ? 4096 : len;
		syscall3(SYS_WRITE, (long)s, (long)n, 0);
		s += n;
		len -= n;
	}
}

void sys_exit(int code)
{
	syscall3(SYS_EXIT, code, 0, 0);
	for (;;)
		u_pause();
}

void sys_barrier(void)
{
	syscall3(SYS_BARRIER, 0, 0, 0);
}

unsigned sys_cpu(void)
{
	return (unsigned)syscall3(SYS_CPU, 0, 0, 0);
}

int sys_ipi(unsigned cpu, unsigned vector)
{
	return (int)syscall3(SYS_IPI, cpu, vector, 0);
}

void sys_halt(const volatile uint32_t *stop)
{
	syscall3(SYS_HALT, (uint64_t)(uintptr_t)stop, 0, 0);
}

static __attribute__((noreturn)) void sys_idle(void)
{
	syscall3(SYS_IDLE, 0, 0, 0);
	for (;;)
		u_pause();
}

int u_printf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = u_vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	sys_write(buf, n < (int)sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
	return n;
}

/* Sense-reversing barrier; each CPU keeps its own sense, the counter and the shared sense sit on their own
 * cache lines. */
static struct {
	volatile uint32_t count __attribute__((aligned(64)));
	volatile uint32_t sense __attribute__((aligned(64)));
} ubar;
static uint32_t ubar_local_sense[GUEST_MAX_CPUS * 16];

void u_barrier(void)
{
	unsigned me = u_cpu_self();
	uint32_t sense = ubar_local_sense[me * 16] ^= 1;
	if (__atomic_add_fetch(&ubar.count, 1, __ATOMIC_ACQ_REL) == g_info.ncpus) {
		ubar.count = 0;
		__atomic_store_n(&ubar.sense, sense, __ATOMIC_RELEASE);
		return;
	}
	while (__atomic_load_n(&ubar.sense, __ATOMIC_ACQUIRE) != sense)
		u_pause();
}

/* ---- command line ---- */
static const char *opt_find(const char *key)
{
	const char *s = g_info.cmdline;
	size_t klen = strlen(key);
	if (!s)
		return NULL;
	while (*s) {
		while (*s == ' ')
			s++;
		const char *w = s;
		while (*s && *s != ' ')
			s++;
		if ((size_t)(s - w) > klen && !strncmp(w, key, klen) && w[klen] == '=')
			return w + klen + 1;
	}
	return NULL;
}

bool u_opt_str(const char *key, char *buf, size_t size)
{
	const char *v = opt_find(key);
	if (!v || !size)
		return false;
	size_t i = 0;
	for (; v[i] && v[i] != ' ' && i + 1 < size; i++)
		buf[i] = v[i];
	buf[i] = '\0';
	return true;
}

/* Decimal or 0x-hex, optional K/M/G suffix (powers of 1024). A malformed value stops the guest. */
uint64_t u_opt_u64(const char *key, uint64_t dflt)
{
	const char *v = opt_find(key);
	if (!v)
		return dflt;
	uint64_t x = 0;
	unsigned base = 10, digits = 0;
	if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
		base = 16;
		v += 2;
	}
	for (;; v++, digits++) {
		unsigned d;
		if (*v >= '0' && *v <= '9')
			d = (unsigned)(*v - '0');
		else if (base == 16 && *v >= 'a' && *v <= 'f')
			d = (unsigned)(*v - 'a' + 10);
		else if (base == 16 && *v >= 'A' && *v <= 'F')
			d = (unsigned)(*v - 'A' + 10);
		else
			break;
		x = x * base + d;
	}
	switch (*v) {
	case 'k': case 'K': x <<= 10; v++; break;
	case 'm': case 'M': x <<= 20; v++; break;
	case 'g': case 'G': x <<= 30; v++; break;
	default: break;
	}
	if (!digits || (*v && *v != ' ')) {
		u_printf("rackvm-guest: bad number in option %s\n", key);
		sys_exit(GUEST_EXIT_USAGE);
	}
	return x;
}

/* ---- per-CPU entry in ring 3 ---- */
static volatile int u_rc[GUEST_MAX_CPUS];

/* CPU index from the user stack pointer: each CPU runs on its own g_ustacks slot. */
unsigned u_cpu_self(void)
{
	uint64_t sp = (uint64_t)(uintptr_t)__builtin_frame_address(0);
	return (unsigned)((sp - (uint64_t)(uintptr_t)g_ustacks) / USTACK_SIZE);
}

static void crash_if_asked(void)
{
	char what[8];
	if (!u_opt_str("crash", what, sizeof(what)))
		return;
	u_printf("rackvm-guest: crash=%s requested on cpu %u\n", what, u_cpu_self());
	if (!strncmp(what, "pf", 3))
		(void)*(volatile uint64_t *)0x0000123456789000ull;   /* above the 4 GiB identity map: #PF */
	else if (!strncmp(what, "ud", 3))
		__asm__ volatile("ud2");
	else
		__asm__ volatile("hlt");    /* privileged in ring 3: #GP(0) */
	u_printf("rackvm-guest: crash=%s did not fault\n", what);
	sys_exit(GUEST_EXIT_FAIL);
}

void u_entry(unsigned cpu)
{
	while (!__atomic_load_n(&g_release, __ATOMIC_ACQUIRE))
		u_pause();
	if (cpu == u_opt_u64("crash_cpu", 0))
		crash_if_asked();
	u_barrier();
	u_rc[cpu] = workload_main(cpu);
	u_barrier();
	if (cpu != 0)
		sys_idle();
	int rc = 0;
	for (unsigned i = 0; i < g_info.ncpus; i++)
		if (u_rc[i] > rc)
			rc = u_rc[i];
	sys_exit(rc);
}
