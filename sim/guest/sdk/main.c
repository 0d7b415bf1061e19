/*
 * rackvm guest SDK: boot CPU main. Order: serial, multiboot info (copied into the kernel image so the
 * loader's buffers become free RAM), CPU tables, ACPI, local APIC, APs, then ring 3 on every CPU.
 */
#include "kern.h"

struct mb_info {
	uint32_t flags;
	uint32_t mem_lower, mem_upper;
	uint32_t boot_device;
	uint32_t cmdline;
	uint32_t mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr;
} __attribute__((packed));

struct mb_mmap_entry {
	uint32_t size;
	uint64_t addr, len;
	uint32_t type;
} __attribute__((packed));

#define MB_INFO_CMDLINE (1u << 2)
#define MB_INFO_MMAP    (1u << 6)

struct guest_info g_info;
struct percpu g_percpu[GUEST_MAX_CPUS];
uint8_t g_kstacks[GUEST_MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(4096)));
uint8_t g_ustacks[GUEST_MAX_CPUS][USTACK_SIZE] __attribute__((aligned(4096)));
static char cmdline_buf[1024];
extern char _kernel_start[], _kernel_end[];

const struct guest_info *guest_info(void)
{
	return &g_info;
}

static void multiboot_copy(const struct mb_info *mbi)
{
	if (mbi->flags & MB_INFO_CMDLINE) {
		const char *s = (const char *)(uintptr_t)mbi->cmdline;
		size_t i = 0;
		for (; s[i] && i < sizeof(cmdline_buf) - 1; i++)
			cmdline_buf[i] = s[i];
		cmdline_buf[i] = '\0';
	}
	g_info.cmdline = cmdline_buf;
	if (!(mbi->flags & MB_INFO_MMAP))
		return;
	uint64_t p = mbi->mmap_addr, end = (uint64_t)mbi->mmap_addr + mbi->mmap_length;
	while (p + sizeof(struct mb_mmap_entry) <= end && g_info.nmmap < GUEST_MAX_MMAP) {
		const struct mb_mmap_entry *e = (const struct mb_mmap_entry *)(uintptr_t)p;
		g_info.mmap[g_info.nmmap++] = (struct guest_mem_range){ e->addr, e->len, e->type };
		p += e->size + 4;
	}
}

static void tsc_probe(void)
{
	uint32_t r[4];
	cpuid(0, 0, r);
	uint32_t max = r[0];
	if (max >= 0x15) {
		cpuid(0x15, 0, r);
		if (r[0] && r[1] && r[2]) {
			g_info.tsc_khz = (uint64_t)r[2] * r[1] / r[0] / 1000;
			return;
		}
	}
	if (max >= 0x16) {
		cpuid(0x16, 0, r);
		g_info.tsc_khz = (uint64_t)(r[0] & 0xffff) * 1000;
	}
}

/* Put the boot CPU at index 0 so workloads can treat cpu 0 as the coordinator. */
static int cpus_order_bsp_first(uint32_t bsp_id)
{
	for (unsigned i = 0; i < g_info.madt_cpus; i++) {
		if (g_info.cpu[i].apic_id != bsp_id)
			continue;
		struct guest_cpu t = g_info.cpu[0];
		g_info.cpu[0] = g_info.cpu[i];
		g_info.cpu[i] = t;
		return 0;
	}
	return -1;
}

void kmain(const struct mb_info *mbi, uint32_t magic);
void kmain(const struct mb_info *mbi, uint32_t magic)
{
	serial_init();
	if (magic != MB_BOOT_MAGIC) {
		k_printf("rackvm-guest: not booted by a multiboot v1 loader (magic 0x%x)\n", magic);
		guest_exit(GUEST_EXIT_BOOT);
	}
	multiboot_copy(mbi);
	g_info.kernel_start = (uint64_t)(uintptr_t)_kernel_start;
	g_info.kernel_end = (uint64_t)(uintptr_t)_kernel_end;
	cpu_tables_init();
	cpu_load_tables(0, (uint64_t)(uintptr_t)(g_kstacks[0] + KSTACK_SIZE));
	tsc_probe();

	char apic_mode[16] = "";
	u_opt_str("apic", apic_mode, sizeof(apic_mode));
	if (apic_mode[0] && strncmp(apic_mode, "xapic", 6) && strncmp(apic_mode, "x2apic", 7)) {
		k_printf("rackvm-guest: apic=%s: expected xapic or x2apic\n", apic_mode);
		guest_exit(GUEST_EXIT_USAGE);
	}

	uint64_t lapic = 0xfee00000;
	bool pcat = false;
	if (acpi_parse(&g_info, &lapic, &pcat) < 0)
		guest_exit(GUEST_EXIT_BOOT);
	apic_mmio_base = lapic;
	if (pcat) {
		outb(0x21, 0xff);   /* mask both 8259s: their vectors would alias exceptions */
		outb(0xa1, 0xff);
	}
	if (apic_init_bsp(strncmp(apic_mode, "xapic", 6) != 0) < 0) {
		k_printf("rackvm-guest: CPU has no local APIC\n");
		guest_exit(GUEST_EXIT_BOOT);
	}
	if (!strncmp(apic_mode, "x2apic", 7) && !g_info.x2apic) {
		k_printf("rackvm-guest: apic=x2apic but CPUID.1:ECX.x2APIC is clear\n");
		guest_exit(GUEST_EXIT_USAGE);
	}
	uint32_t bsp = apic_id();
	if (cpus_order_bsp_first(bsp) < 0) {
		k_printf("rackvm-guest: boot CPU apic id %u is not in the MADT\n", bsp);
		guest_exit(GUEST_EXIT_BOOT);
	}
	g_percpu[0].apic_id = bsp;
	k_printf("rackvm-guest: workload %s, apic %s, %u cpus in MADT, tsc %lu kHz, cmdline \"%s\"\n",
		 workload_name, g_info.x2apic ? "x2apic" : "xapic", g_info.madt_cpus, g_info.tsc_khz,
		 g_info.cmdline);
	if (smp_boot_aps() < 0)
		guest_exit(GUEST_EXIT_BOOT);
	user_start(0);
}
