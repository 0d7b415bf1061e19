/* GDT (ring-0/ring-3 segments + one TSS per CPU), IDT, trap dispatch and the exception report. */
#include "kern.h"

struct tss {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));

struct idt_gate {
	uint16_t off_lo, sel;
	uint8_t ist, attr;
	uint16_t off_mid;
	uint32_t off_hi, reserved;
} __attribute__((packed));

struct dtr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

#define GDT_FIXED 5
static uint64_t gdt[GDT_FIXED + 2 * GUEST_MAX_CPUS] __attribute__((aligned(16)));
static struct tss tss[GUEST_MAX_CPUS] __attribute__((aligned(16)));
static struct idt_gate idt[256] __attribute__((aligned(16)));
extern char isr_stubs[];

static const char *const exc_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MF?", "#TS", "#NP", "#SS", "#GP",
	"#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

static void idt_set(unsigned vec, unsigned dpl)
{
	uint64_t off = (uint64_t)(uintptr_t)(isr_stubs + 16 * vec);
	idt[vec] = (struct idt_gate){
		.off_lo = (uint16_t)off,
		.sel = KERNEL_CS,
		.ist = 0,
		.attr = (uint8_t)(0x8e | (dpl << 5)),   /* present 64-bit interrupt gate: IF cleared on entry */
		.off_mid = (uint16_t)(off >> 16),
		.off_hi = (uint32_t)(off >> 32),
	};
}

void cpu_tables_init(void)
{
	gdt[0] = 0;
	gdt[1] = 0x00af9a000000ffffull;     /* ring-0 64-bit code */
	gdt[2] = 0x00cf92000000ffffull;     /* ring-0 data */
	gdt[3] = 0x00cff2000000ffffull;     /* ring-3 data */
	gdt[4] = 0x00affa000000ffffull;     /* ring-3 64-bit code */
	for (unsigned i = 0; i < GUEST_MAX_CPUS; i++) {
		uint64_t base = (uint64_t)(uintptr_t)&tss[i];
		uint64_t limit = sizeof(struct tss) - 1;
		tss[i].iomap_base = sizeof(struct tss);     /* no I/O bitmap: ring 3 has no port access */
		gdt[GDT_FIXED + 2 * i] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
			(((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
		gdt[GDT_FIXED + 2 * i + 1] = base >> 32;
	}
	for (unsigned v = 0; v < 256; v++)
		idt_set(v, v == SYSCALL_VECTOR ? 3 : 0);
}

/* Per CPU: load GDT/IDT, reload segments, TSS with the ring-0 stack for traps from ring 3, %gs base. */
void cpu_load_tables(unsigned index, uint64_t kstack_top)
{
	struct dtr gdtr = { sizeof(gdt) - 1, (uint64_t)(uintptr_t)gdt };
	struct dtr idtr = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	tss[index].rsp[0] = kstack_top;
	__asm__ volatile("lgdt %0" : : "m"(gdtr));
	__asm__ volatile("lidt %0" : : "m"(idtr));
	__asm__ volatile(
		"movw %w0, %%ds\n\t"
		"movw %w0, %%es\n\t"
		"movw %w0, %%ss\n\t"
		"pushq %q1\n\t"
		"leaq 1f(%%rip), %%rax\n\t"
		"pushq %%rax\n\t"
		"lretq\n"
		"1:"
		: : "r"(KERNEL_DS), "r"((uint64_t)KERNEL_CS) : "rax", "memory");
	__asm__ volatile("ltr %w0" : : "r"(TSS_SEL0 + 16 * index));
	g_percpu[index].self = &g_percpu[index];
	g_percpu[index].index = index;
	wrmsr(MSR_GS_BASE, (uint64_t)(uintptr_t)&g_percpu[index]);
}

__attribute__((noreturn)) void guest_exit(int code)
{
	static const char *const names[] = { "ok", "fail", "exception", "boot", "usage" };
	uint64_t sc = 0, irq = 0;
	for (unsigned i = 0; i < GUEST_MAX_CPUS; i++) {
		sc += g_percpu[i].n_syscalls;
		irq += g_percpu[i].n_irqs;
	}
	k_printf("rackvm-guest: ring-0 entries: %lu syscalls, %lu interrupts\n", sc, irq);
	k_printf("rackvm-guest: exit %d (%s)\n", code,
		 code >= 0 && code <= GUEST_EXIT_USAGE ? names[code] : "?");
	outb(0xf4, (uint8_t)code);
	k_printf("rackvm-guest: no isa-debug-exit device at 0xf4, halting\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

__attribute__((noreturn)) void cpu_idle(void)
{
	for (;;)
		__asm__ volatile("sti; hlt; cli" ::: "memory");
}

static unsigned cpu_index_safe(void)
{
	/* %gs is 0 before cpu_load_tables on this CPU. */
	uint64_t gs = rdmsr(MSR_GS_BASE);
	return gs ? ((struct percpu *)(uintptr_t)gs)->index : 0;
}

static void exception_report(struct trap_frame *f)
{
	unsigned v = (unsigned)f->vector;
	k_printf("EXCEPTION: vector %u (%s) error 0x%lx cpu %u ring %u\n", v,
		 v < 32 && exc_names[v] ? exc_names[v] : "?", f->error, cpu_index_safe(), (unsigned)(f->cs & 3));
	k_printf("  RIP=%016lx CS=%04lx RFLAGS=%016lx RSP=%016lx SS=%04lx\n", f->rip, f->cs, f->rflags, f->rsp,
		 f->ss);
	k_printf("  RAX=%016lx RBX=%016lx RCX=%016lx RDX=%016lx\n", f->rax, f->rbx, f->rcx, f->rdx);
	k_printf("  RSI=%016lx RDI=%016lx RBP=%016lx R8 =%016lx\n", f->rsi, f->rdi, f->rbp, f->r8);
	k_printf("  R9 =%016lx R10=%016lx R11=%016lx R12=%016lx\n", f->r9, f->r10, f->r11, f->r12);
	k_printf("  R13=%016lx R14=%016lx R15=%016lx", f->r13, f->r14, f->r15);
	if (v == 14)
		k_printf(" CR2=%016lx", read_cr2());
	k_printf("\n");
}

static void ipi_handle(unsigned which)
{
	struct percpu *pc = this_cpu();
	g_info.cpu[pc->index].ipi_rx[which]++;
	apic_eoi();
	if (which == 0) {
		apic_send_fixed(g_info.cpu[g_ipi_source[pc->index]].apic_id, GUEST_IPI_PONG);
	}
}

void trap_dispatch(struct trap_frame *f)
{
	switch (f->vector) {
	case SYSCALL_VECTOR:
		this_cpu()->n_syscalls++;
		sys_dispatch(f);
		return;
	case GUEST_IPI_PING:
		this_cpu()->n_irqs++;
		ipi_handle(0);
		return;
	case GUEST_IPI_PONG:
		this_cpu()->n_irqs++;
		ipi_handle(1);
		return;
	case SPURIOUS_VECTOR:
		this_cpu()->n_irqs++;
		return;     /* spurious interrupts take no EOI */
	default:
		break;
	}
	/* A fault while reporting a fault: exit without touching anything else. */
	static volatile int reporting[GUEST_MAX_CPUS];
	unsigned me = cpu_index_safe();
	if (me < GUEST_MAX_CPUS && reporting[me]++) {
		outb(0xf4, GUEST_EXIT_EXCEPTION);
		for (;;)
			__asm__ volatile("cli; hlt");
	}
	console_panic();
	if (f->vector >= 32)
		k_printf("UNEXPECTED INTERRUPT: vector %lu cpu %u\n", f->vector, me);
	exception_report(f);
	guest_exit(GUEST_EXIT_EXCEPTION);
}
