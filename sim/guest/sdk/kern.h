/*
 * rackvm guest SDK: ring-0 internals. Ring-0 paths are kept short and plain (they are emulated instruction
 * by instruction on the nested-KVM hosts rackvm targets): no int $n, no SSE, no xsave, no cmpxchg16b.
 * Interrupts are always disabled in ring 0 (all gates are interrupt gates); they are only taken from ring 3
 * or from the idle loop.
 */
#ifndef GUEST_KERN_H
#define GUEST_KERN_H

#include "guest.h"
#include "boot_defs.h"

struct trap_frame {
	uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss;
};

/*
 * System calls: INT3 from ring 3 through the IDT's only DPL-3 gate (vector 3), the number in rax, arguments in
 * rdi, rsi, rdx, the result in rax; the kernel returns with IRETQ. Why INT3: on the nested paravirtual KVM hosts
 * rackvm targets (kvm_pvm) a ring-3 "int $n" arrives as #UD, SYSCALL jumps to LSTAR but leaves the CPU at CPL 3
 * (measured: the handler's OUT faults with no I/O bitmap), and SYSRETQ raises #GP, while exceptions (INT3 is #BP)
 * and interrupts from ring 3 enter ring 0 as on hardware. docs/guest.md has the measurements.
 */
enum {
	SYS_WRITE = 1,
	SYS_EXIT = 2,
	SYS_BARRIER = 3,
	SYS_CPU = 4,
	SYS_IPI = 5,
	SYS_IDLE = 6,
	SYS_HALT = 7,       /* unless the u32 at rdi is non-zero, halt until the next interrupt, then return */
};
#define SYSCALL_VECTOR   3      /* #BP: INT3 (0xcc) */
#define SPURIOUS_VECTOR  0xff

extern struct guest_info g_info;

/* ---- port and MSR access ---- */
static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

#ifdef GUEST_HOST_TEST
/* Host unit tests (tests/guest/test_guest_*.c) provide fakes for the privileged operations. */
uint64_t rdmsr(uint32_t msr);
void wrmsr(uint32_t msr, uint64_t v);
void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]);
#else
static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
#endif

static inline uint64_t read_cr2(void)
{
	uint64_t v;
	__asm__ volatile("mov %%cr2, %0" : "=r"(v));
	return v;
}

/* A pointer to a fixed physical address (identity map). The empty asm hides the constant from gcc's
 * array-bounds analysis, which otherwise rejects small literal addresses such as the BDA. */
static inline void *phys_ptr(uint64_t addr)
{
	uintptr_t a = (uintptr_t)addr;
	__asm__("" : "+r"(a));
	return (void *)a;
}

#define MSR_GS_BASE 0xC0000101

/* Per-CPU kernel state; %gs base points at it and its first field points at itself. A page each: the counters are
 * written on every ring-0 entry (see struct guest_cpu on false sharing). */
struct __attribute__((aligned(4096))) percpu {
	struct percpu *self;
	unsigned index;
	uint32_t apic_id;
	uint64_t kstack_top, ustack_top;
	uint64_t n_syscalls, n_irqs;    /* ring-0 entries, reported at exit (ring-0 cost on rackvm) */
};

static inline struct percpu *this_cpu(void)
{
	struct percpu *p;
	__asm__ volatile("movq %%gs:0, %0" : "=r"(p));
	return p;
}

/* serial.c: COM1 16550 */
void serial_init(void);
void serial_write(const char *s, size_t len);

/* console: kernel printf to serial under the console lock */
int k_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void console_write(const char *s, size_t len);
void console_panic(void);       /* from now on, console writes wait only boundedly for the lock */

/* cpu.c: GDT, TSS, IDT, traps */
void cpu_tables_init(void);
void cpu_load_tables(unsigned index, uint64_t kstack_top);
void trap_dispatch(struct trap_frame *f);
__attribute__((noreturn)) void guest_exit(int code);
__attribute__((noreturn)) void cpu_idle(void);

/* apic.c */
int apic_init_bsp(bool allow_x2apic);
void apic_init_ap(void);
uint32_t apic_id(void);
void apic_eoi(void);
void apic_send_fixed(uint32_t dest, uint8_t vector);
void apic_send_init(uint32_t dest);
void apic_send_sipi(uint32_t dest, uint8_t page);
extern uint64_t apic_mmio_base;

/* acpi.c */
int acpi_parse(struct guest_info *gi, uint64_t *lapic_addr, bool *pcat_compat);

/* smp.c */
int smp_boot_aps(void);
void smp_kernel_barrier(void);

/* ring 3 entry (boot.S, smp.c) and the ring-3 runtime (ulib.c) */
void enter_user(uint64_t rip, uint64_t rsp, uint64_t arg) __attribute__((noreturn));
void user_start(unsigned cpu) __attribute__((noreturn));
void u_entry(unsigned cpu) __attribute__((noreturn));
unsigned u_cpu_self(void);                      /* ring 3 only: index from the user stack */
extern volatile uint32_t g_release;             /* set once every CPU is up */

/* syscall.c */
void sys_dispatch(struct trap_frame *f);
extern volatile uint32_t g_ipi_source[GUEST_MAX_CPUS];  /* who last sent a PING to each CPU */

/* stacks */
#define KSTACK_SIZE 8192
#define USTACK_SIZE 32768
extern uint8_t g_kstacks[GUEST_MAX_CPUS][KSTACK_SIZE];
extern uint8_t g_ustacks[GUEST_MAX_CPUS][USTACK_SIZE];
extern struct percpu g_percpu[GUEST_MAX_CPUS];

static inline uint64_t rdtsc(void)
{
	return u_rdtsc();
}

/* Spinlock usable from ring 0 and ring 3 (xchg only). */
static inline void spin_lock(volatile int *l)
{
	while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
		while (*l)
			u_pause();
}

static inline void spin_unlock(volatile int *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

#endif
