/*
 * rackvm guest SDK: the ring-3 API a workload sees.
 *
 * A workload is one C file that defines
 *     const char workload_name[];
 *     int workload_main(unsigned cpu);
 * The SDK boots, brings up every CPU of the MADT, and calls workload_main in ring 3 on every CPU at once
 * (cpu = 0 .. guest_info()->ncpus - 1, 0 is the boot CPU). When all have returned, the guest exits with
 * GUEST_EXIT_OK if every call returned 0, else with the largest value returned.
 *
 * Everything is identity-mapped and user-accessible: ring 3 may read guest_info() and kernel counters
 * directly. Privileged work (serial, IPIs, exit) goes through system calls (int3, see docs/guest.md).
 */
#ifndef GUEST_H
#define GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_MAX_CPUS  64
#define GUEST_MAX_MMAP  32
#define GUEST_MAX_NUMA_MEM 32

/* Value written to isa-debug-exit (port 0xf4); qemu exits with (value << 1) | 1. */
enum guest_exit {
	GUEST_EXIT_OK = 0,          /* qemu status 1 */
	GUEST_EXIT_FAIL = 1,        /* a workload check failed: qemu status 3 */
	GUEST_EXIT_EXCEPTION = 2,   /* unexpected CPU exception: qemu status 5 */
	GUEST_EXIT_BOOT = 3,        /* SDK could not boot (ACPI, APs, memory map): qemu status 7 */
	GUEST_EXIT_USAGE = 4,       /* bad command line: qemu status 9 */
};

/* Two pages per CPU: one read-mostly (written at boot, read by every CPU that sends this one an IPI), one for the
 * IPI counters its interrupt handler writes. On a machine whose memory is kept coherent page by page across nodes
 * (rackvm's DSM), a counter sharing a page with data other CPUs read, or with another CPU's counter, would move
 * that page between nodes on every interrupt (false sharing). */
struct __attribute__((aligned(4096))) guest_cpu {
	uint32_t apic_id;
	uint32_t acpi_uid;
	uint32_t node;              /* SRAT proximity domain, 0 without SRAT */
	volatile uint32_t up;       /* reached ring 3 */
	/* GUEST_IPI_PING / GUEST_IPI_PONG received */
	volatile uint64_t ipi_rx[2] __attribute__((aligned(4096)));
};

struct guest_mem_range {
	uint64_t base, len;
	uint32_t type;              /* multiboot/e820 type: 1 = available RAM */
};

struct guest_numa_mem {
	uint64_t base, len;
	uint32_t node;
};

struct guest_info {
	unsigned ncpus;             /* CPUs running the workload (MADT order, BSP first) */
	unsigned madt_cpus;         /* enabled CPUs listed in the MADT */
	bool x2apic;
	bool have_srat;
	struct guest_cpu cpu[GUEST_MAX_CPUS];
	unsigned nmmap;
	struct guest_mem_range mmap[GUEST_MAX_MMAP];
	unsigned nnuma_mem;
	struct guest_numa_mem numa_mem[GUEST_MAX_NUMA_MEM];
	const char *cmdline;
	uint64_t kernel_start, kernel_end;  /* [start, end): image, bss, stacks, boot data we keep */
	uint64_t tsc_khz;           /* 0 when unknown (CPUID 0x15/0x16 absent) */
};

const struct guest_info *guest_info(void);

/* Workload entry points, defined by each workload. */
extern const char workload_name[];
int workload_main(unsigned cpu);

/* ---- ring-3 calls ---- */
#define GUEST_IPI_PING 0x40         /* handler counts it and answers with PONG to the sender */
#define GUEST_IPI_PONG 0x41         /* handler counts it */

void sys_write(const char *s, size_t len);
__attribute__((noreturn)) void sys_exit(int code);
void sys_barrier(void);             /* all CPUs; spins in ring 0 (use u_barrier in hot loops) */
unsigned sys_cpu(void);
int sys_ipi(unsigned cpu, unsigned vector); /* GUEST_IPI_PING or GUEST_IPI_PONG; 0 or -1 */
void sys_halt(const volatile uint32_t *stop);  /* unless *stop, halt until the next interrupt was handled */

int u_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int u_snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int u_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
void u_barrier(void);               /* ring-3 sense-reversing barrier over all CPUs */

/* Command line "key=value" options; the first word (the kernel path) is ignored. */
uint64_t u_opt_u64(const char *key, uint64_t dflt);
bool u_opt_str(const char *key, char *buf, size_t size);

static inline uint64_t u_rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void u_pause(void)
{
	__asm__ volatile("pause" ::: "memory");
}

static inline void u_compiler_barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

/* Full fence via a locked instruction (no mfence: keep to general-purpose instructions). */
static inline void u_mb(void)
{
	__asm__ volatile("lock; orl $0, (%%rsp)" ::: "memory", "cc");
}

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);

#endif
