/* SPDX-License-Identifier: MIT */
/*
 * emu accelerator (system half): guest programs run through accel_emu_ops — mode switches, paging and #PF,
 * rings and IDT/TSS stack switches, exits (I/O, MMIO, MSR, HLT, shutdown, kick, interrupt window), CPUID, and the
 * SDK guest's multiboot entry up to its first missing device.
 *
 * Guest code is written in assembler text and assembled at run time with the system binutils (as + ld, linked at
 * the address it runs from, flat binary): readable programs instead of byte arrays. Without binutils every test
 * prints SKIP.
 */
#include <elf.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "hypervisor/accel.h"
#include "hypervisor/emu/emu.h"
#include "hypervisor/fw.h"

#define RAM_SIZE (8u << 20)
#define CODE     0x100000u   /* guest code (1 MiB) */
#define GDT      0x1000u
#define IDT      0x2000u
#define TSS      0x3000u
#define PML4     0x10000u
#define PDPT     0x11000u
#define PD       0x12000u
#define PT       0x13000u
#define KSTACK   0x80000u    /* ring-0 stack top */
#define RSP0     0x70000u    /* TSS.RSP0 */
#define IST1     0x60000u
#define USTACK   0x50000u
#define PORT_REPORT 0xe0
#define PORT_DONE   0xf4

/* GDT selectors of the long-mode setup */
#define SEL_CODE64 0x08
#define SEL_DATA   0x10
#define SEL_UDATA  0x1b
#define SEL_UCODE  0x23
#define SEL_TSS    0x28

struct vmh {
	struct accel_vm *vm;
	struct accel_vcpu *cpu;
	uint8_t *ram;
	struct accel_exit exit;
	uint64_t reports[64];
	unsigned n_reports;
	int done;            /* value written to PORT_DONE, -1 none */
};

static const struct accel_ops *ops = &accel_emu_ops;
static bool have_binutils;

static int setup_binutils(void **state)
{
	(void)state;
	have_binutils = system("as --version >/dev/null 2>&1 && ld --version >/dev/null 2>&1") == 0;
	return 0;
}

#define NEED_BINUTILS() \
	do { \
		if (!have_binutils) { \
			printf("SKIP: GNU as/ld not found: guest programs cannot be assembled\n"); \
			skip(); \
		} \
	} while (0)

static void vmh_init_hole(struct vmh *h, const struct accel_cpuid_entry *cpuid, size_t n_cpuid, uint32_t apic_id,
			  uint64_t hole_start)
{
	memset(h, 0, sizeof(*h));
	h->ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(h->ram != MAP_FAILED);
	struct accel_vm_config cfg = { .ram = h->ram, .ram_size = RAM_SIZE, .cpuid = cpuid, .n_cpuid = n_cpuid,
				       .tsc_hz = 1000000000u, .hole_start = hole_start };
	assert_int_equal(ops->vm_create(&cfg, &h->vm), 0);
	assert_int_equal(ops->vcpu_create(h->vm, 0, apic_id, &h->cpu), 0);
	h->done = -1;
}

static void vmh_init(struct vmh *h, const struct accel_cpuid_entry *cpuid, size_t n_cpuid, uint32_t apic_id)
{
	vmh_init_hole(h, cpuid, n_cpuid, apic_id, 0);
}

static void vmh_fini(struct vmh *h)
{
	ops->vcpu_destroy(h->cpu);
	ops->vm_destroy(h->vm);
	munmap(h->ram, RAM_SIZE);
}

/* Assemble `src` (AT&T syntax), link it at `addr` and copy it into guest RAM there. Returns its size. */
static size_t asm_at(struct vmh *h, uint64_t addr, const char *src)
{
	char dir[] = "/tmp/test_emu.XXXXXX";
	char cmd[512], path[128];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/g.S", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(".globl _start\n_start:\n", f);
	fputs(src, f);
	fputs("\n", f);
	fclose(f);
	snprintf(cmd, sizeof(cmd),
		 "cd %s && as --64 -o g.o g.S && ld -m elf_x86_64 -Ttext=0x%llx --oformat=binary -o g.bin g.o",
		 dir, (unsigned long long)addr);
	int rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "assembler failed for:\n%s\n", src);
	assert_int_equal(rc, 0);
	snprintf(path, sizeof(path), "%s/g.bin", dir);
	f = fopen(path, "rb");
	assert_non_null(f);
	size_t n = fread(h->ram + addr, 1, RAM_SIZE - addr, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", dir);
	assert_true(n > 0);
	return n;
}

static void put64(struct vmh *h, uint64_t gpa, uint64_t v)
{
	memcpy(h->ram + gpa, &v, 8);
}

static uint64_t get64(struct vmh *h, uint64_t gpa)
{
	uint64_t v;
	memcpy(&v, h->ram + gpa, 8);
	return v;
}

static void idt_set(struct vmh *h, unsigned vec, uint64_t handler, unsigned dpl, unsigned ist)
{
	uint64_t lo = (handler & 0xffff) | ((uint64_t)SEL_CODE64 << 16) | ((uint64_t)ist << 32) |
		      (0xeull << 40) | ((uint64_t)dpl << 45) | (1ull << 47) | ((handler >> 16) & 0xffff) << 48;
	put64(h, IDT + vec * 16, lo);
	put64(h, IDT + vec * 16 + 8, handler >> 32);
}

static struct kvm_segment seg(uint16_t sel, uint8_t type, uint8_t dpl, bool l, bool db)
{
	struct kvm_segment s = { .base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
				 .dpl = dpl, .db = db, .s = 1, .l = l, .g = 1 };
	return s;
}

/* 64-bit ring 0 at `rip`: GDT, empty IDT (limit covers 256 gates), TSS (RSP0, IST1), identity map of the first
 * GiB with 2 MiB user pages, plus a 4 KiB page table at PD[4] (linear 8 MiB: page 0 -> phys 3 MiB, rest absent). */
static void lm_setup(struct vmh *h, uint64_t rip)
{
	uint64_t gdt[] = {
		0,
		0x00af9a000000ffffull,  /* 0x08 code64 dpl0 */
		0x00cf92000000ffffull,  /* 0x10 data dpl0 */
		0x00cff2000000ffffull,  /* 0x18 data dpl3 */
		0x00affa000000ffffull,  /* 0x20 code64 dpl3 */
		0, 0,                   /* 0x28 TSS (16 bytes) */
		0x00cf9a000000ffffull,  /* 0x38 code32 dpl0 (compatibility mode) */
	};
	uint64_t tss_lim = 0x67;
	gdt[5] = (tss_lim & 0xffff) | ((uint64_t)(TSS & 0xffffff) << 16) | (0x89ull << 40) |
		 ((uint64_t)(TSS >> 24) << 56);
	memcpy(h->ram + GDT, gdt, sizeof(gdt));
	put64(h, TSS + 4, RSP0);
	put64(h, TSS + 0x24, IST1);
	put64(h, PML4, PDPT | 7);
	put64(h, PDPT, PD | 7);
	for (uint64_t i = 0; i < 512; i++)
		put64(h, PD + 8 * i, (i << 21) | 0x87);
	put64(h, PD + 8 * 4, PT | 7);
	put64(h, PT, 0x300000 | 7);

	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h->cpu, &s), 0);
	s.cs = seg(SEL_CODE64, 0xb, 0, true, false);
	s.ds = s.es = s.ss = seg(SEL_DATA, 3, 0, false, true);
	s.fs = s.gs = seg(0, 3, 0, false, false);
	s.fs.unusable = s.gs.unusable = 1;
	s.tr = (struct kvm_segment){ .base = TSS, .limit = 0x67, .selector = SEL_TSS, .type = 0xb, .present = 1 };
	s.ldt = (struct kvm_segment){ .unusable = 1 };
	s.gdt = (struct kvm_dtable){ .base = GDT, .limit = sizeof(gdt) - 1 };
	s.idt = (struct kvm_dtable){ .base = IDT, .limit = 256 * 16 - 1 };
	s.cr0 = 0x80050033;   /* PG WP NE ET MP PE */
	s.cr3 = PML4;
	s.cr4 = 0x20;         /* PAE */
	s.efer = 0xd00;       /* NXE LMA LME */
	assert_int_equal(ops->set_sregs(h->cpu, &s), 0);
	struct kvm_regs r = { .rip = rip, .rsp = KSTACK, .rflags = 2 };
	assert_int_equal(ops->set_regs(h->cpu, &r), 0);
}

/* Run until an exit other than a report (OUT to PORT_REPORT: value recorded) or PORT_DONE (value in h->done,
 * returned as ACCEL_EXIT_IO). */
static enum accel_exit_reason run_until(struct vmh *h, const struct accel_entry *entry)
{
	for (int i = 0; i < 100000; i++) {
		assert_int_equal(ops->run(h->cpu, entry, &h->exit), 0);
		struct accel_exit *x = &h->exit;
		if (x->reason == ACCEL_EXIT_IO && !x->io.in && x->io.port == PORT_REPORT) {
			uint32_t v = 0;
			memcpy(&v, x->io.data, x->io.size);
			assert_true(h->n_reports < 64);
			h->reports[h->n_reports++] = v;
			continue;
		}
		if (x->reason == ACCEL_EXIT_IO && !x->io.in && x->io.port == PORT_DONE) {
			h->done = x->io.data[0];
			return ACCEL_EXIT_IO;
		}
		if (x->reason == ACCEL_EXIT_ERROR)
			fprintf(stderr, "emu error: %s\n", x->error.msg);
		return x->reason;
	}
	fail_msg("guest did not stop");
	return ACCEL_EXIT_ERROR;
}

/* ---- tests ---- */

static void test_reset_state(void **state)
{
	(void)state;
	struct accel_cpuid_entry c[] = { { .function = 1, .eax = 0x000806c1 } };
	struct vmh h;
	struct kvm_regs r;
	struct kvm_sregs s;
	vmh_init(&h, c, 1, 0);
	assert_int_equal(ops->get_regs(h.cpu, &r), 0);
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	assert_int_equal(r.rip, 0xfff0);
	assert_int_equal(r.rflags, 2);
	assert_int_equal(r.rdx, 0x806c1);
	assert_int_equal(s.cs.selector, 0xf000);
	assert_int_equal(s.cs.base, 0xffff0000ull);
	assert_int_equal(s.cr0, 0x60000010);
	assert_int_equal(s.efer, 0);
	char why[64];
	assert_int_equal(ops->probe(why, sizeof(why)), 0);
	assert_string_equal(ops->name, "emu");
	vmh_fini(&h);
}

static void test_real_to_long(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, 0x8000,
	       ".code16\n"
	       "start: ljmpw $0, $real\n"             /* from CS base 0x8000 to CS base 0, as AP trampolines do */
	       "real: cli\n"
	       " xor %ax, %ax\n mov %ax, %ds\n mov %ax, %ss\n mov $0x7000, %sp\n"
	       " pushw $0x1234\n popw %bx\n mov %bx, %ax\n out %ax, $0xe0\n"
	       " lgdtl gdtr\n"
	       " mov %cr0, %eax\n or $1, %eax\n mov %eax, %cr0\n"
	       " ljmpl $0x08, $pm32\n"
	       ".code32\n"
	       "pm32: mov $0x10, %ax\n mov %ax, %ds\n mov %ax, %es\n mov %ax, %ss\n mov $0x9000, %esp\n"
	       " mov $1, %eax\n out %eax, $0xe0\n"
	       " mov %cr4, %eax\n or $0x20, %eax\n mov %eax, %cr4\n"
	       " mov $pml4, %eax\n mov %eax, %cr3\n"
	       " mov $0xc0000080, %ecx\n rdmsr\n or $0x100, %eax\n wrmsr\n"
	       " mov %cr0, %eax\n or $0x80000000, %eax\n mov %eax, %cr0\n"
	       " ljmp $0x18, $lm64\n"
	       ".code64\n"
	       "lm64: mov $2, %eax\n out %eax, $0xe0\n"
	       " movabs $0x1122334455667788, %rax\n shr $32, %rax\n out %eax, $0xe0\n"
	       " mov $0xc0000080, %ecx\n rdmsr\n out %eax, $0xe0\n"
	       " mov $7, %al\n out %al, $0xf4\n"
	       " hlt\n"
	       ".balign 8\n"
	       "gdt: .quad 0, 0x00cf9a000000ffff, 0x00cf92000000ffff, 0x00af9a000000ffff\n"
	       "gdtr: .word 31\n .long gdt\n"
	       ".balign 4096\n"
	       "pml4: .quad pdpt + 3\n .fill 511, 8, 0\n"
	       "pdpt: .quad pd + 3\n .fill 511, 8, 0\n"
	       "pd: .quad 0x83\n .fill 511, 8, 0\n");
	/* SIPI-style start state: CS.sel = vector << 8, base = vector << 12, RIP 0 (vector 8) */
	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	s.cs.selector = 0x800;
	s.cs.base = 0x8000;
	assert_int_equal(ops->set_sregs(h.cpu, &s), 0);
	struct kvm_regs r = { .rip = 0, .rflags = 2 };
	assert_int_equal(ops->set_regs(h.cpu, &r), 0);

	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 7);
	assert_int_equal(h.n_reports, 5);
	assert_int_equal(h.reports[0], 0x1234);
	assert_int_equal(h.reports[1], 1);
	assert_int_equal(h.reports[2], 2);
	assert_int_equal(h.reports[3], 0x11223344);
	assert_int_equal(h.reports[4], 0x500);   /* EFER: LME | LMA */
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	assert_true(s.cs.l);
	assert_int_equal(s.efer & 0x500, 0x500);
	/* accessed bits were set in the page tables by the walk */
	assert_true(get64(&h, 0x9000) & 0x20);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	vmh_fini(&h);
}

static void test_paging_pf(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       "start: mov $0x800000, %rbx\n"
	       " movq $0x1234, 8(%rbx)\n"            /* 4 KiB page -> phys 3 MiB + 8 */
	       " mov 0x300008, %rax\n out %eax, $0xe0\n"
	       " mov 0x200010, %rax\n out %eax, $0xe0\n" /* 2 MiB page: reads what the test put there */
	       " lea fault(%rip), %rax\n out %eax, $0xe0\n"
	       "fault: movq $5, 0x1008(%rbx)\n"     /* page 1 of the table is absent: #PF */
	       " mov $0xdead, %eax\n out %eax, $0xe0\n"
	       ".org 0x200\n"
	       "pf: pop %rax\n out %eax, $0xe0\n"    /* error code */
	       " mov %cr2, %rax\n out %eax, $0xe0\n"
	       " pop %rax\n out %eax, $0xe0\n"       /* saved RIP: the faulting instruction */
	       " mov $0, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	idt_set(&h, 14, CODE + 0x200, 0, 0);
	put64(&h, 0x200010, 0xabcdef);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0);
	assert_int_equal(h.n_reports, 6);
	assert_int_equal(h.reports[0], 0x1234);
	assert_int_equal(h.reports[1], 0xabcdef);
	assert_int_equal(h.reports[3], 2);          /* not present, write, supervisor */
	assert_int_equal(h.reports[4], 0x801008);
	assert_int_equal(h.reports[5], h.reports[2]); /* saved RIP: the faulting movq */
	/* the leaf PTE got A and D, the 2 MiB page A only (read) */
	assert_int_equal(get64(&h, PT) & 0x60, 0x60);
	assert_int_equal(get64(&h, PD + 8) & 0x60, 0x20);
	vmh_fini(&h);
}

static void test_ring3_iretq_and_back(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       "start: pushq $0x1b\n pushq $0x50000\n pushq $0x202\n pushq $0x23\n pushq $user\n iretq\n"
	       "user: mov $0x55, %ebx\n int $0x80\n"
	       " mov %ebx, %ecx\n"
	       " hlt\n"                                   /* privileged at CPL 3: #GP(0) */
	       ".org 0x300\n"
	       "h80: mov 8(%rsp), %rax\n out %eax, $0xe0\n" /* CS */
	       " mov 32(%rsp), %rax\n out %eax, $0xe0\n"    /* SS */
	       " mov 24(%rsp), %rax\n out %eax, $0xe0\n"    /* RSP */
	       " mov %rsp, %rax\n out %eax, $0xe0\n"
	       " mov %ss, %eax\n out %eax, $0xe0\n"
	       " mov 16(%rsp), %rax\n out %eax, $0xe0\n"    /* RFLAGS */
	       " add $1, %ebx\n"
	       " iretq\n"
	       ".org 0x400\n"
	       "gp: pop %rax\n out %eax, $0xe0\n"           /* error code */
	       " mov 8(%rsp), %rax\n out %eax, $0xe0\n"     /* CS */
	       " mov %ecx, %eax\n out %eax, $0xe0\n"
	       " mov $3, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	idt_set(&h, 0x80, CODE + 0x300, 3, 0);
	idt_set(&h, 13, CODE + 0x400, 0, 1);          /* on IST1 */
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 3);
	assert_int_equal(h.n_reports, 9);
	assert_int_equal(h.reports[0], 0x23);
	assert_int_equal(h.reports[1], 0x1b);
	assert_int_equal(h.reports[2], 0x50000);
	assert_int_equal(h.reports[3], RSP0 - 40);
	assert_int_equal(h.reports[4], 0);            /* SS = NULL after a privilege change */
	assert_int_equal(h.reports[5] & 0x200, 0x200);
	assert_int_equal(h.reports[6], 0);            /* #GP(0) */
	assert_int_equal(h.reports[7], 0x23);
	assert_int_equal(h.reports[8], 0x56);         /* the handler's EBX change survived IRETQ */
	struct kvm_regs r;
	assert_int_equal(ops->get_regs(h.cpu, &r), 0);
	/* still in the #GP handler on IST1 */
	assert_true(r.rsp <= IST1 && r.rsp > IST1 - 64);
	vmh_fini(&h);
}

static void test_io_exits(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " mov $0x55, %al\n out %al, $0x80\n"
	       " in $0x81, %al\n"
	       " movzbl %al, %eax\n out %eax, $0xe0\n"
	       " mov $0x3fd, %dx\n in %dx, %eax\n out %eax, $0xe0\n"
	       " hlt\n");
	lm_setup(&h, CODE);
	struct kvm_regs r;
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_IO);
	assert_false(h.exit.io.in);
	assert_int_equal(h.exit.io.port, 0x80);
	assert_int_equal(h.exit.io.size, 1);
	assert_int_equal(h.exit.io.data[0], 0x55);
	assert_int_equal(ops->get_regs(h.cpu, &r), 0);
	assert_int_equal(r.rip, CODE + 4);            /* OUT retired before the exit */
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_IO);
	assert_true(h.exit.io.in);
	assert_int_equal(h.exit.io.port, 0x81);
	assert_int_equal(ops->get_regs(h.cpu, &r), 0);
	assert_int_equal(r.rip, CODE + 4);            /* IN not retired: it runs again with the value */
	h.exit.io.data[0] = 0x99;
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_IO);
	assert_int_equal(h.exit.io.port, PORT_REPORT);
	assert_int_equal(h.exit.io.data[0], 0x99);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_true(h.exit.io.in);
	assert_int_equal(h.exit.io.port, 0x3fd);
	assert_int_equal(h.exit.io.size, 4);
	memcpy(h.exit.io.data, "\x01\x02\x03\x04", 4);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	assert_int_equal(h.n_reports, 1);
	assert_int_equal(h.reports[0], 0x04030201);
	assert_true(h.exit.irq_ready == false);       /* IF=0 */
	vmh_fini(&h);
}

static void test_mmio_exits(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " mov $5, %ebx\n"
	       " mov 0x1000010, %eax\n"       /* 16 MiB: beyond RAM */
	       " add %ebx, %eax\n out %eax, $0xe0\n"
	       " movl $0xabcd, 0x1000020\n"
	       " movw $0x77, 0xfff\n"         /* RAM again */
	       " hlt\n");
	lm_setup(&h, CODE);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_MMIO);
	assert_false(h.exit.mmio.write);
	assert_int_equal(h.exit.mmio.gpa, 0x1000010);
	assert_int_equal(h.exit.mmio.size, 4);
	memcpy(h.exit.mmio.data, "\x10\x00\x00\x00", 4);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_IO);
	assert_int_equal(h.exit.io.data[0], 0x15);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_MMIO);
	assert_true(h.exit.mmio.write);
	assert_int_equal(h.exit.mmio.gpa, 0x1000020);
	assert_int_equal(h.exit.mmio.size, 4);
	assert_memory_equal(h.exit.mmio.data, "\xcd\xab\x00\x00", 4);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_HLT);
	assert_int_equal(h.ram[0xfff], 0x77);
	vmh_fini(&h);
}

/* A read split across the end of RAM into MMIO cannot restart twice: an error exit, not a livelock. */
static void test_mmio_split_read_refused(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE, " mov 0x9ffffe, %eax\n hlt\n");
	lm_setup(&h, CODE);
	put64(&h, PT + 511 * 8, 0x7ff000 | 3);      /* last RAM page, followed by the 2 MiB page at 10 MiB (MMIO) */
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_ERROR);
	assert_non_null(strstr(h.exit.error.msg, "page boundary"));
	struct kvm_regs r;
	assert_int_equal(ops->get_regs(h.cpu, &r), 0);
	assert_int_equal(r.rip, CODE);                /* not retired */
	vmh_fini(&h);
}

static void test_msr_exits(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " mov $0x1b, %ecx\n rdmsr\n out %eax, $0xe0\n mov %edx, %eax\n out %eax, $0xe0\n"
	       " mov $0x8b, %ecx\n mov $3, %eax\n xor %edx, %edx\n wrmsr\n"
	       " mov $0xc0000081, %ecx\n mov $0x11, %eax\n mov $0x22, %edx\n wrmsr\n rdmsr\n out %eax, $0xe0\n"
	       " mov $0x4b564d00, %ecx\n rdmsr\n"           /* the VMM refuses: #GP */
	       " hlt\n"
	       ".org 0x400\n"
	       "gp: pop %rax\n out %eax, $0xe0\n mov $1, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	idt_set(&h, 13, CODE + 0x400, 0, 0);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_MSR_READ);
	assert_int_equal(h.exit.msr.index, 0x1b);
	h.exit.msr.value = 0x12345fee00900ull;
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_MSR_WRITE);
	assert_int_equal(h.exit.msr.index, 0x8b);
	assert_int_equal(h.exit.msr.value, 3);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_MSR_READ);
	assert_int_equal(h.exit.msr.index, 0x4b564d00);
	h.exit.msr.error = true;
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 1);
	assert_int_equal(h.n_reports, 4);
	assert_int_equal(h.reports[0], 0xfee00900u);
	assert_int_equal(h.reports[1], 0x12345);
	assert_int_equal(h.reports[2], 0x11);        /* STAR is the emu's own */
	assert_int_equal(h.reports[3], 0);
	vmh_fini(&h);
}

static void test_triple_fault(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE, " ud2\n");
	lm_setup(&h, CODE);
	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	s.idt.limit = 0;
	assert_int_equal(ops->set_sregs(h.cpu, &s), 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_SHUTDOWN);
	vmh_fini(&h);
}

static void test_double_fault(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	/* #GP whose gate is not present (#NP, contributory after contributory): #DF with error 0 */
	asm_at(&h, CODE, " mov $0x800000, %rax\n mov (%rax), %rax\n mov $1, %rax\n"
	       " mov $0x1000000000000, %rbx\n mov (%rbx), %rax\n"  /* non-canonical: #GP */
	       ".org 0x100\n df: pop %rax\n out %eax, $0xe0\n mov $8, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	idt_set(&h, 8, CODE + 0x100, 0, 1);
	put64(&h, IDT + 13 * 16, get64(&h, IDT + 8 * 16) & ~(1ull << 47));
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 8);
	assert_int_equal(h.n_reports, 1);
	assert_int_equal(h.reports[0], 0);
	vmh_fini(&h);
}

struct kicker {
	struct accel_vcpu *cpu;
	int delay_ms;
};

static void *kick_thread(void *arg)
{
	struct kicker *k = arg;
	struct timespec ts = { 0, k->delay_ms * 1000000L };
	nanosleep(&ts, NULL);
	ops->kick(k->cpu);
	return NULL;
}

static void test_kick(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE, "1: jmp 1b\n");
	lm_setup(&h, CODE);
	struct kicker k = { h.cpu, 20 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, kick_thread, &k), 0);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_KICK);
	pthread_join(t, NULL);
	/* a kick before run() makes the next run return at once */
	ops->kick(h.cpu);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_KICK);
	vmh_fini(&h);
}

static void test_irq_window_inject(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " mov $1, %eax\n out %eax, $0xe0\n"
	       " sti\n"
	       " mov $2, %ecx\n"
	       "1: jmp 1b\n"
	       ".org 0x500\n"
	       "irq: mov (%rsp), %rax\n out %eax, $0xe0\n mov %ecx, %eax\n out %eax, $0xe0\n"
	       " mov $0x30, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	idt_set(&h, 0x30, CODE + 0x500, 0, 0);
	struct accel_entry e = { .request_irq_window = true };
	assert_int_equal(run_until(&h, &e), ACCEL_EXIT_IRQ_WINDOW);
	assert_true(h.exit.irq_ready);
	struct kvm_regs r;
	assert_int_equal(ops->get_regs(h.cpu, &r), 0);
	/* the STI shadow covered the MOV after it: the window opens after that instruction */
	assert_int_equal(r.rip, CODE + 0xd);
	assert_int_equal(ops->inject_irq(h.cpu, 0x30), 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0x30);
	assert_int_equal(h.n_reports, 3);
	assert_int_equal(h.reports[1], CODE + 0xd);
	assert_int_equal(h.reports[2], 2);
	assert_false(h.exit.irq_ready);               /* the interrupt gate cleared IF */
	vmh_fini(&h);
}

static void test_cpuid_apic_id(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct accel_cpuid_entry c[] = {
		{ .function = 0, .eax = 0xb, .ebx = 0x756e6547 },
		{ .function = 1, .eax = 0x806c1, .ebx = 0x00020800, .ecx = 0x80000000, .edx = 0x1234 },
		{ .function = 0xb, .index = 0, .has_index = true, .eax = 1, .ebx = 1, .ecx = 0x100, .edx = 0 },
		{ .function = 0xb, .index = 1, .has_index = true, .eax = 4, .ebx = 8, .ecx = 0x201, .edx = 0 },
	};
	struct vmh h;
	vmh_init(&h, c, 4, 5);
	asm_at(&h, CODE,
	       " mov $1, %eax\n cpuid\n mov %ebx, %eax\n out %eax, $0xe0\n mov %edx, %eax\n out %eax, $0xe0\n"
	       " mov $0xb, %eax\n mov $1, %ecx\n cpuid\n out %eax, $0xe0\n mov %ecx, %eax\n out %eax, $0xe0\n"
	       " mov %edx, %eax\n out %eax, $0xe0\n"
	       " mov $0x40, %eax\n xor %ecx, %ecx\n cpuid\n out %eax, $0xe0\n"   /* beyond max: highest basic leaf (0xb) */
	       " hlt\n");
	lm_setup(&h, CODE);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	assert_int_equal(h.n_reports, 6);
	assert_int_equal(h.reports[0], 0x05020800);
	assert_int_equal(h.reports[1], 0x1234);
	assert_int_equal(h.reports[2], 4);
	assert_int_equal(h.reports[3], 0x201);
	assert_int_equal(h.reports[4], 5);
	assert_int_equal(h.reports[5], 1);
	vmh_fini(&h);
}

static void test_tsc(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " rdtsc\n shl $32, %rdx\n or %rdx, %rax\n mov %rax, 0x4000\n hlt\n");
	lm_setup(&h, CODE);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t before = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	uint64_t after = ops->read_tsc(h.cpu);
	uint64_t g = get64(&h, 0x4000);
	/* tsc_hz = 1 GHz: the guest TSC is CLOCK_MONOTONIC in ns */
	assert_true(g >= before && g <= after);
	vmh_fini(&h);
}

/* Ring-3 loop speed (reported, not asserted). */
static void test_perf_ring3_loop(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	const unsigned n = 2000000;
	char src[1024];
	snprintf(src, sizeof(src),
		 "start: pushq $0x1b\n pushq $0x50000\n pushq $0x2\n pushq $0x23\n pushq $user\n iretq\n"
		 "user: mov $%u, %%ecx\n xor %%eax, %%eax\n"
		 "1: add %%rcx, %%rax\n mov %%rax, 0x40000\n dec %%ecx\n jnz 1b\n"
		 " int $0x80\n"
		 ".org 0x300\n"
		 "h: mov $0, %%al\n out %%al, $0xf4\n", n);
	asm_at(&h, CODE, src);
	lm_setup(&h, CODE);
	idt_set(&h, 0x80, CODE + 0x300, 3, 0);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	printf("emu: ring-3 loop %u instructions in %.3f s: %.1f M instructions/s\n", 4 * n, s, 4.0 * n / s / 1e6);
	vmh_fini(&h);
}

/* ---- 32-bit protected mode ---- */

#define PM_SEL_CODE  0x08
#define PM_SEL_DATA  0x10
#define PM_SEL_UCODE 0x1b
#define PM_SEL_UDATA 0x23
#define PM_SEL_TSS   0x28

static void idt32_set(struct vmh *h, unsigned vec, uint32_t handler, unsigned dpl)
{
	uint64_t lo = (handler & 0xffff) | ((uint64_t)PM_SEL_CODE << 16) | ((uint64_t)(0x8e | (dpl << 5)) << 40) |
		      ((uint64_t)(handler >> 16) << 48);
	put64(h, IDT + vec * 8, lo);
}

/* 32-bit ring 0 at `rip`, flat segments, a 32-bit TSS (ESP0 = RSP0, SS0 = data), paging from cr0/cr3/cr4/efer. */
static void pm32_setup(struct vmh *h, uint32_t rip, uint64_t cr0, uint64_t cr3, uint64_t cr4, uint64_t efer)
{
	uint64_t gdt[] = {
		0,
		0x00cf9a000000ffffull,  /* 0x08 code32 dpl0 */
		0x00cf92000000ffffull,  /* 0x10 data dpl0 */
		0x00cffa000000ffffull,  /* 0x18 code32 dpl3 */
		0x00cff2000000ffffull,  /* 0x20 data dpl3 */
		0,                      /* 0x28 TSS32 */
		0x00cf12000000ffffull,  /* 0x30 data, not present */
		0x00cf90000000ffffull,  /* 0x38 read-only data dpl0 */
	};
	gdt[5] = 0x67 | ((uint64_t)TSS << 16) | (0x89ull << 40);
	memcpy(h->ram + GDT, gdt, sizeof(gdt));
	uint32_t esp0 = RSP0, ss0 = PM_SEL_DATA;
	memcpy(h->ram + TSS + 4, &esp0, 4);
	memcpy(h->ram + TSS + 8, &ss0, 4);

	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h->cpu, &s), 0);
	s.cs = seg(PM_SEL_CODE, 0xb, 0, false, true);
	s.ds = s.es = s.ss = s.fs = s.gs = seg(PM_SEL_DATA, 3, 0, false, true);
	s.tr = (struct kvm_segment){ .base = TSS, .limit = 0x67, .selector = PM_SEL_TSS, .type = 0xb, .present = 1 };
	s.ldt = (struct kvm_segment){ .unusable = 1 };
	s.gdt = (struct kvm_dtable){ .base = GDT, .limit = sizeof(gdt) - 1 };
	s.idt = (struct kvm_dtable){ .base = IDT, .limit = 256 * 8 - 1 };
	s.cr0 = cr0 | 0x11;
	s.cr3 = cr3;
	s.cr4 = cr4;
	s.efer = efer;
	assert_int_equal(ops->set_sregs(h->cpu, &s), 0);
	struct kvm_regs r = { .rip = rip, .rsp = KSTACK, .rflags = 2 };
	assert_int_equal(ops->set_regs(h->cpu, &r), 0);
}

static void expect_reports(struct vmh *h, const uint64_t *want, unsigned n)
{
	for (unsigned i = 0; i < n && i < h->n_reports; i++)
		if (h->reports[i] != want[i])
			fail_msg("report %u: got 0x%llx, want 0x%llx", i, (unsigned long long)h->reports[i],
				 (unsigned long long)want[i]);
	assert_int_equal(h->n_reports, n);
}

/* Non-PAE paging: a 4 MiB PSE page and a 4 KiB table; ring 3 through IRET, INT to a DPL-3 gate switching to
 * ESP0/SS0 from the TSS, a user write to a supervisor page (#PF error 7). */
static void test_prot32_paging_rings(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       ".code32\n"
	       "start: movl $0x1234, 0x800008\n"
	       " mov 0x300008, %eax\n out %eax, $0xe0\n"
	       " mov $after, %eax\n out %eax, $0xe0\n"
	       " push $0x23\n push $0x50000\n push $0x202\n push $0x1b\n push $user\n iret\n"
	       "user: mov $0x23, %ax\n mov %ax, %ds\n"
	       " int $0x80\n"
	       "after: mov $resume, %edi\n"
	       " movl $1, 0x801000\n"
	       "resume: int $0x81\n"
	       ".org 0x300\n"
	       "h80: mov (%esp), %eax\n out %eax, $0xe0\n"
	       " mov 4(%esp), %eax\n out %eax, $0xe0\n"
	       " mov 12(%esp), %eax\n out %eax, $0xe0\n"
	       " mov 16(%esp), %eax\n out %eax, $0xe0\n"
	       " mov %esp, %eax\n out %eax, $0xe0\n"
	       " mov %ss, %eax\n out %eax, $0xe0\n"
	       " iret\n"
	       ".org 0x400\n"
	       "pf: pop %eax\n out %eax, $0xe0\n mov %cr2, %eax\n out %eax, $0xe0\n mov %edi, (%esp)\n iret\n"
	       ".org 0x500\n"
	       "h81: mov $0x32, %al\n out %al, $0xf4\n");
	/* PD at 0x10000: PDE 0 a 4 MiB user page, PDE 2 (8 MiB) a table: page 0 -> 3 MiB user, page 1 supervisor */
	uint32_t pde0 = 0x87, pde2 = 0x11000 | 7, pte0 = 0x300000 | 7, pte1 = 0x301000 | 3;
	memcpy(h.ram + 0x10000, &pde0, 4);
	memcpy(h.ram + 0x10000 + 8, &pde2, 4);
	memcpy(h.ram + 0x11000, &pte0, 4);
	memcpy(h.ram + 0x11004, &pte1, 4);
	pm32_setup(&h, CODE, 0x80010000, 0x10000, 0x10 /* PSE */, 0);
	idt32_set(&h, 0x80, CODE + 0x300, 3);
	idt32_set(&h, 0x81, CODE + 0x500, 3);
	idt32_set(&h, 14, CODE + 0x400, 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0x32);
	assert_true(h.n_reports >= 2);
	uint64_t want[] = { 0x1234, h.reports[1], h.reports[1], PM_SEL_UCODE, 0x50000, PM_SEL_UDATA, RSP0 - 20,
			    PM_SEL_DATA, 7, 0x801000 };
	expect_reports(&h, want, 10);
	uint32_t pte;
	memcpy(&pte, h.ram + 0x11000, 4);
	assert_int_equal(pte & 0x60, 0x60);        /* accessed + dirty on the 32-bit PTE */
	vmh_fini(&h);
}

/* PAE paging (32-bit): CR0.WP off lets ring 0 write a read-only page, WP on faults (error 3); EFER.NXE makes a fetch
 * from an NX page fault with I/D set (error 0x11). */
static void test_pae_wp_nx(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       ".code32\n"
	       "start: movl $0x11, 0x800000\n"
	       " mov 0x300000, %eax\n out %eax, $0xe0\n"
	       " mov %cr0, %eax\n or $0x10000, %eax\n mov %eax, %cr0\n"
	       " mov $r1, %edi\n"
	       " movl $0x22, 0x800000\n"
	       "r1: mov $r2, %edi\n"
	       " movb $0xc3, 0x801000\n"
	       " mov $0x801000, %ebx\n call *%ebx\n"
	       "r2: mov 0x300000, %eax\n out %eax, $0xe0\n"
	       " mov $0, %al\n out %al, $0xf4\n"
	       ".org 0x400\n"
	       "pf: pop %eax\n out %eax, $0xe0\n mov %cr2, %eax\n out %eax, $0xe0\n mov %edi, (%esp)\n iret\n");
	put64(&h, 0x10000, 0x11000 | 1);                 /* PDPTE 0 */
	put64(&h, 0x11000, 0x83);                        /* 2 MiB pages 0 and 1, supervisor */
	put64(&h, 0x11008, 0x200000 | 0x83);
	put64(&h, 0x11000 + 4 * 8, 0x12000 | 3);
	put64(&h, 0x12000, 0x300000 | 1);                /* read-only */
	put64(&h, 0x12008, 0x301000 | 3 | (1ull << 63)); /* NX */
	pm32_setup(&h, CODE, 0x80000000, 0x10000, 0x20 /* PAE */, 0x800 /* NXE */);
	idt32_set(&h, 14, CODE + 0x400, 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0);
	uint64_t want[] = { 0x11, 3, 0x800000, 0x11, 0x801000, 0x11 };
	expect_reports(&h, want, 6);
	assert_int_equal(h.ram[0x301000], 0xc3);
	vmh_fini(&h);
}

/* Real mode: INT n through the IVT (FLAGS, CS, IP pushed; IF cleared), IRET, and #DE from DIV. */
static void test_real_mode_ivt(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, 0x8000,
	       ".code16\n"
	       "start: xor %ax, %ax\n mov %ax, %ds\n mov %ax, %ss\n mov $0x7000, %sp\n"
	       " movw $h10, 0x40\n movw $0, 0x42\n movw $h0, 0\n movw $0, 2\n"
	       " mov $0x1234, %bx\n sti\n"
	       " int $0x10\n"
	       " mov %bx, %ax\n out %ax, $0xe0\n"
	       " pushf\n pop %ax\n out %ax, $0xe0\n"
	       " mov $d0, %ax\n out %ax, $0xe0\n"
	       " xor %cx, %cx\n mov $5, %ax\n"
	       "d0: div %cl\n"
	       "h0: pop %ax\n out %ax, $0xe0\n pop %ax\n out %ax, $0xe0\n mov $0x16, %al\n out %al, $0xf4\n"
	       "h10: inc %bx\n pushf\n pop %ax\n out %ax, $0xe0\n iret\n");
	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	s.cs.selector = 0;
	s.cs.base = 0;
	s.idt.base = 0;
	s.idt.limit = 0x3ff;
	assert_int_equal(ops->set_sregs(h.cpu, &s), 0);
	struct kvm_regs r = { .rip = 0x8000, .rflags = 2 };
	assert_int_equal(ops->set_regs(h.cpu, &r), 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0x16);
	assert_int_equal(h.n_reports, 6);
	assert_int_equal(h.reports[0] & 0x200, 0);       /* IF clear in the handler */
	assert_int_equal(h.reports[1], 0x1235);
	assert_int_equal(h.reports[2] & 0x200, 0x200);   /* IRET restored IF */
	assert_int_equal(h.reports[4], h.reports[3]);    /* #DE: saved IP is the DIV */
	assert_int_equal(h.reports[5], 0);               /* saved CS */
	vmh_fini(&h);
}

/* SYSCALL/SYSRET with STAR/LSTAR/SFMASK written by the guest. */
static void test_syscall_sysret(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       "start: lea after(%rip), %rax\n out %eax, $0xe0\n"
	       " mov $0xc0000080, %ecx\n rdmsr\n or $1, %eax\n wrmsr\n"
	       " mov $0xc0000081, %ecx\n xor %eax, %eax\n mov $0x00100008, %edx\n wrmsr\n"
	       " mov $0xc0000082, %ecx\n lea kentry(%rip), %rax\n xor %edx, %edx\n wrmsr\n"
	       " mov $0xc0000084, %ecx\n mov $0x200, %eax\n xor %edx, %edx\n wrmsr\n"
	       " lea user(%rip), %rcx\n mov $0x202, %r11\n mov $0x50000, %rsp\n sysretq\n"
	       "user: mov $7, %eax\n syscall\n"
	       "after: int $0x80\n"
	       "kentry: mov %cs, %eax\n out %eax, $0xe0\n mov %ss, %eax\n out %eax, $0xe0\n"
	       " mov %rcx, %rax\n out %eax, $0xe0\n mov %r11, %rax\n out %eax, $0xe0\n"
	       " pushf\n pop %rax\n out %eax, $0xe0\n"
	       " sysretq\n"
	       ".org 0x300\n"
	       "h80: mov 8(%rsp), %rax\n out %eax, $0xe0\n mov $0x5c, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	idt_set(&h, 0x80, CODE + 0x300, 3, 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0x5c);
	assert_int_equal(h.n_reports, 7);
	assert_int_equal(h.reports[1], SEL_CODE64);
	assert_int_equal(h.reports[2], SEL_DATA);
	assert_int_equal(h.reports[3], h.reports[0]);    /* RCX = the instruction after SYSCALL */
	assert_int_equal(h.reports[4] & 0x200, 0x200);   /* R11 = user RFLAGS */
	assert_int_equal(h.reports[5] & 0x200, 0);       /* SFMASK cleared IF */
	assert_int_equal(h.reports[6], SEL_UCODE);       /* back in ring 3 after SYSRET */
	vmh_fini(&h);
}

/* Far JMP into a compatibility-mode segment, far JMP back to 64-bit, LRETQ. */
static void test_compat_mode_far(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       "start: ljmpl *farptr(%rip)\n"
	       "farptr: .long compat\n .word 0x38\n"
	       ".code32\n"
	       "compat: mov $5, %eax\n out %eax, $0xe0\n mov %cs, %eax\n out %eax, $0xe0\n"
	       " ljmp $0x08, $back\n"
	       ".code64\n"
	       "back: mov $6, %eax\n out %eax, $0xe0\n"
	       " pushq $0x08\n lea t2(%rip), %rax\n push %rax\n lretq\n"
	       "t2: mov %cs, %eax\n out %eax, $0xe0\n hlt\n");
	lm_setup(&h, CODE);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	uint64_t want[] = { 5, 0x38, 6, 0x08 };
	expect_reports(&h, want, 4);
	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	assert_true(s.cs.l);
	vmh_fini(&h);
}

/* Segment register loads: beyond the GDT limit #GP(sel), not present #NP(sel), read-only SS #GP(sel). */
static void test_segment_load_checks(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       ".code32\n"
	       "start: mov $r1, %edi\n mov $0x80, %ax\n mov %ax, %ds\n"
	       "r1: mov $r2, %edi\n mov $0x30, %ax\n mov %ax, %ds\n"
	       "r2: mov $r3, %edi\n mov $0x38, %ax\n mov %ax, %ss\n"
	       "r3: mov $0x23, %ax\n mov %ax, %es\n mov %es, %eax\n out %eax, $0xe0\n"
	       " mov $0, %al\n out %al, $0xf4\n"
	       ".org 0x400\n"
	       "f: pop %eax\n out %eax, $0xe0\n mov %edi, (%esp)\n iret\n");
	pm32_setup(&h, CODE, 0, 0, 0, 0);
	idt32_set(&h, 13, CODE + 0x400, 0);
	idt32_set(&h, 11, CODE + 0x400, 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	uint64_t want[] = { 0x80, 0x30, 0x38, 0x23 };
	expect_reports(&h, want, 4);
	vmh_fini(&h);
}

/* RAM above the hole appears at 4 GiB (a 1 GiB page maps it); the hole itself is MMIO. */
static void test_hole_and_1g_page(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init_hole(&h, NULL, 0, 0, 4u << 20);
	asm_at(&h, CODE,
	       " movabs $0x100000010, %rax\n movq $0x99, (%rax)\n"
	       " mov 0x400000, %eax\n"
	       " hlt\n");
	lm_setup(&h, CODE);
	put64(&h, PDPT + 4 * 8, 0x100000000ull | 0x83);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_MMIO);
	assert_int_equal(h.exit.mmio.gpa, 0x400000);
	assert_int_equal(get64(&h, (4u << 20) + 0x10), 0x99);
	assert_int_equal(get64(&h, PDPT + 4 * 8) & 0x60, 0x60);
	vmh_fini(&h);

	/* a hole at or above the end of RAM: plain RAM from 0, nothing at 4 GiB */
	vmh_init_hole(&h, NULL, 0, 0, 0xc0000000u);
	asm_at(&h, CODE, " movabs $0x100000010, %rax\n mov (%rax), %eax\n hlt\n");
	lm_setup(&h, CODE);
	put64(&h, PDPT + 4 * 8, 0x100000000ull | 0x83);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_MMIO);
	assert_int_equal(h.exit.mmio.gpa, 0x100000010ull);
	vmh_fini(&h);
}

/* NMI: taken with IF=0, blocked until IRET, then the next one is taken. */
static void test_nmi(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " mov $1, %eax\n out %eax, $0xe0\n"
	       "1: jmp 1b\n"
	       ".org 0x200\n"
	       "nmi: mov $2, %eax\n out %eax, $0xe0\n mov $3, %eax\n out %eax, $0xe0\n iretq\n");
	lm_setup(&h, CODE);
	idt_set(&h, 2, CODE + 0x200, 0, 0);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.io.data[0], 1);
	assert_int_equal(ops->inject_nmi(h.cpu), 0);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.io.data[0], 2);
	assert_int_equal(ops->inject_nmi(h.cpu), 0);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.io.data[0], 3);          /* blocked: the handler was not re-entered */
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.io.data[0], 2);          /* taken right after IRETQ */
	vmh_fini(&h);
}

/* HLT executed in an STI shadow while an NMI is already pending (injected at an exit inside the shadow): the NMI
 * wakes the HLT at once, no HLT exit (the VMM would sleep: the NMI is no longer in its APIC). */
static void test_hlt_in_shadow_woken_by_pending_nmi(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " hlt\n mov $1, %eax\n out %eax, $0xe0\n hlt\n"
	       ".org 0x200\n"
	       "nmi: mov (%rsp), %rax\n out %eax, $0xe0\n iretq\n");
	lm_setup(&h, CODE);
	idt_set(&h, 2, CODE + 0x200, 0, 0);
	struct emu_cpu *cpu = (struct emu_cpu *)(void *)h.cpu;
	cpu->rflags |= EFL_IF;
	cpu->irq_shadow = true;      /* as right after STI, where a kick may end a run */
	assert_int_equal(ops->inject_nmi(h.cpu), 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	assert_int_equal(h.n_reports, 2);
	assert_int_equal(h.reports[0], CODE + 1);    /* the NMI interrupted right after the first HLT */
	assert_int_equal(h.reports[1], 1);
	vmh_fini(&h);
}

/* A WRMSR the VMM refuses becomes #GP(0) at the WRMSR. */
static void test_wrmsr_refused(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " lea w(%rip), %rax\n out %eax, $0xe0\n"
	       " mov $0x8b, %ecx\n xor %eax, %eax\n xor %edx, %edx\n"
	       "w: wrmsr\n"
	       " hlt\n"
	       ".org 0x400\n"
	       "gp: pop %rax\n out %eax, $0xe0\n pop %rax\n out %eax, $0xe0\n mov $0, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	idt_set(&h, 13, CODE + 0x400, 0, 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_MSR_WRITE);
	h.exit.msr.error = true;
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.n_reports, 3);
	assert_int_equal(h.reports[1], 0);
	assert_int_equal(h.reports[2], h.reports[0]);
	vmh_fini(&h);
}

/* Accesses across a page boundary are split over two frames; a fault on the second page writes nothing. */
static void test_page_split(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " mov $0x800ffc, %rbx\n movabs $0x1122334455667788, %rax\n mov %rax, (%rbx)\n"
	       " mov (%rbx), %rcx\n cmp %rax, %rcx\n sete %al\n movzbl %al, %eax\n out %eax, $0xe0\n"
	       " movabs $0xaabbccddeeff0011, %rax\n mov %rax, 0x1000(%rbx)\n"
	       " hlt\n"
	       ".org 0x200\n"
	       "pf: pop %rax\n out %eax, $0xe0\n mov %cr2, %rax\n out %eax, $0xe0\n mov $0, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	put64(&h, PT + 8, 0x305000 | 3);
	idt_set(&h, 14, CODE + 0x200, 0, 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	uint64_t want[] = { 1, 2, 0x802000 };
	expect_reports(&h, want, 3);
	assert_memory_equal(h.ram + 0x300ffc, "\x88\x77\x66\x55", 4);
	assert_memory_equal(h.ram + 0x305000, "\x44\x33\x22\x11", 4);
	assert_memory_equal(h.ram + 0x305ffc, "\0\0\0\0", 4);   /* the faulting split write left no half */
	vmh_fini(&h);
}

/* The software TLB follows INVLPG and CR3 writes: a remapped page is seen after either. */
static void test_tlb_invlpg_cr3(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " mov 0x800000, %eax\n out %eax, $0xe0\n"               /* phys 3 MiB */
	       " movq $0x305007, %rax\n mov %rax, 0x13000\n"           /* PT[0] -> 0x305000 */
	       " invlpg 0x800000\n"
	       " mov 0x800000, %eax\n out %eax, $0xe0\n"
	       " movq $0x306007, %rax\n mov %rax, 0x13000\n"
	       " mov %cr3, %rax\n mov %rax, %cr3\n"
	       " mov 0x800000, %eax\n out %eax, $0xe0\n"
	       " sti\n hlt\n");
	lm_setup(&h, CODE);
	h.ram[0x300000] = 0xa;
	h.ram[0x305000] = 0xb;
	h.ram[0x306000] = 0xc;
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	uint64_t want[] = { 0xa, 0xb, 0xc };
	expect_reports(&h, want, 3);
	assert_true(h.exit.irq_ready);                /* STI; HLT: the HLT ended the shadow */
	vmh_fini(&h);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct kick_latency {
	struct accel_vcpu *cpu;
	double kicked_at;
};

static void *kick_late(void *arg)
{
	struct kick_latency *k = arg;
	struct timespec ts = { 0, 50 * 1000000L };
	nanosleep(&ts, NULL);
	k->kicked_at = now_s();
	ops->kick(k->cpu);
	return NULL;
}

/* Kick latency out of a guest loop that touches memory (reported; bounded generously). */
static void test_kick_latency(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE, "1: incq 0x4000\n jmp 1b\n");
	lm_setup(&h, CODE);
	struct kick_latency k = { h.cpu, 0 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, kick_late, &k), 0);
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	double back = now_s();
	pthread_join(t, NULL);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_KICK);
	printf("emu: kick to ACCEL_EXIT_KICK: %.1f us (guest did %llu loop iterations)\n",
	       (back - k.kicked_at) * 1e6, (unsigned long long)get64(&h, 0x4000));
	assert_true(back - k.kicked_at < 0.5);
	vmh_fini(&h);
}

/* SYSENTER/SYSEXIT helpers called directly (emu_exec.c decodes 0F 34/35 into them). struct accel_vcpu of the emu
 * backend starts with its struct emu_cpu (emu.c). */
static void test_sysenter_sysexit_direct(void **state)
{
	(void)state;
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	s.cs = seg(SEL_CODE64, 0xb, 0, true, false);
	s.ss = seg(SEL_DATA, 3, 0, false, true);
	s.cr0 = 0x80000011;
	s.cr4 = 0x20;
	s.efer = 0x500;
	assert_int_equal(ops->set_sregs(h.cpu, &s), 0);
	struct emu_cpu *cpu = (struct emu_cpu *)(void *)h.cpu;
	struct accel_exit x;
	cpu->exit = &x;
	if (setjmp(cpu->jmp))
		fail_msg("SYSEXIT/SYSENTER faulted: vector %d", cpu->exc_vector);
	cpu->msr_sysenter_cs = 0x10;
	cpu->msr_sysenter_esp = 0x7000;
	cpu->msr_sysenter_eip = 0x123456;
	cpu->gpr[R_CX] = 0x5000;
	cpu->gpr[R_DX] = 0x401000;
	emu_sysexit(cpu, 8);
	assert_int_equal(cpu->cpl, 3);
	assert_int_equal(cpu->mode, EMU_LONG64);
	assert_int_equal(cpu->seg[SEG_CS].selector, 0x33);
	assert_int_equal(cpu->seg[SEG_SS].selector, 0x3b);
	assert_int_equal(cpu->rip, 0x401000);
	assert_int_equal(cpu->gpr[R_SP], 0x5000);
	cpu->rflags = 0x202;
	emu_sysenter(cpu);
	assert_int_equal(cpu->cpl, 0);
	assert_int_equal(cpu->mode, EMU_LONG64);
	assert_int_equal(cpu->seg[SEG_CS].selector, 0x10);
	assert_int_equal(cpu->seg[SEG_SS].selector, 0x18);
	assert_int_equal(cpu->rip, 0x123456);
	assert_int_equal(cpu->gpr[R_SP], 0x7000);
	assert_int_equal(cpu->rflags & EFL_IF, 0);
	vmh_fini(&h);
}

/* Ring-3 faults in long mode: read of a supervisor page (#PF 5), fetch from an NX page (#PF 0x15), INT n through a
 * DPL-0 gate (#GP with the IDT error code vector*8+2). */
static void test_long_mode_user_faults(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       "start: pushq $0x1b\n pushq $0x50000\n pushq $0x2\n pushq $0x23\n pushq $user\n iretq\n"
	       "user: lea r1(%rip), %rdi\n mov 0x801000, %eax\n"
	       "r1: lea r2(%rip), %rdi\n mov $0x802000, %eax\n call *%rax\n"
	       "r2: lea r3(%rip), %rdi\n int $0x81\n"
	       "r3: int $0x80\n"
	       ".org 0x200\n"
	       "f: pop %rax\n out %eax, $0xe0\n mov %cr2, %rax\n out %eax, $0xe0\n mov %rdi, (%rsp)\n iretq\n"
	       ".org 0x300\n"
	       "h80: mov $0x64, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	put64(&h, PT + 8, 0x301000 | 3);                    /* supervisor */
	put64(&h, PT + 16, 0x302000 | 7 | (1ull << 63));    /* user, NX */
	h.ram[0x302000] = 0xc3;
	idt_set(&h, 14, CODE + 0x200, 0, 0);
	idt_set(&h, 13, CODE + 0x200, 0, 0);
	idt_set(&h, 0x80, CODE + 0x300, 3, 0);
	idt_set(&h, 0x81, CODE + 0x300, 0, 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0x64);
	assert_int_equal(h.n_reports, 6);
	assert_int_equal(h.reports[0], 5);
	assert_int_equal(h.reports[1], 0x801000);
	assert_int_equal(h.reports[2], 0x15);
	assert_int_equal(h.reports[3], 0x802000);
	assert_int_equal(h.reports[4], 0x81 * 8 + 2);
	vmh_fini(&h);
}

/* Far CALL through a 64-bit call gate from ring 3 to ring 0 (RSP0, SS = NULL), LRETQ back to ring 3. */
static void test_call_gate_long(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       "start: pushq $0x1b\n pushq $0x50000\n pushq $0x2\n pushq $0x23\n pushq $user\n iretq\n"
	       "user: lcall *gp(%rip)\n"
	       "back: int $0x80\n"
	       "gp: .long 0\n .word 0x43\n"
	       ".org 0x200\n"
	       "kern: lea back(%rip), %rax\n out %eax, $0xe0\n"
	       " mov %cs, %eax\n out %eax, $0xe0\n mov %ss, %eax\n out %eax, $0xe0\n"
	       " mov (%rsp), %rax\n out %eax, $0xe0\n mov 8(%rsp), %rax\n out %eax, $0xe0\n"
	       " mov 16(%rsp), %rax\n out %eax, $0xe0\n mov 24(%rsp), %rax\n out %eax, $0xe0\n"
	       " mov %rsp, %rax\n out %eax, $0xe0\n"
	       " lretq\n"
	       ".org 0x300\n"
	       "h80: mov 8(%rsp), %rax\n out %eax, $0xe0\n mov 24(%rsp), %rax\n out %eax, $0xe0\n"
	       " mov $0x6a, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	uint64_t t = CODE + 0x200;
	put64(&h, GDT + 0x40, (t & 0xffff) | ((uint64_t)SEL_CODE64 << 16) | (0xcull << 40) | (3ull << 45) |
			      (1ull << 47) | (((t >> 16) & 0xffff) << 48));
	put64(&h, GDT + 0x48, t >> 32);
	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	s.gdt.limit = 0x4f;
	assert_int_equal(ops->set_sregs(h.cpu, &s), 0);
	idt_set(&h, 0x80, CODE + 0x300, 3, 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0x6a);
	assert_true(h.n_reports >= 1);
	uint64_t want[] = { h.reports[0], SEL_CODE64, 0, h.reports[0], SEL_UCODE, 0x50000, SEL_UDATA, RSP0 - 32,
			    SEL_UCODE, 0x50000 };
	expect_reports(&h, want, 10);
	vmh_fini(&h);
}

/* Far CALL through a 32-bit call gate with two parameters copied to the ring-0 stack (ESP0/SS0), LRET $8. */
static void test_call_gate_prot32_params(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       ".code32\n"
	       "start: push $0x23\n push $0x50000\n push $0x202\n push $0x1b\n push $user\n iret\n"
	       "user: push $0x1111\n push $0x2222\n lcall $0x43, $0\n"
	       "back: int $0x80\n"
	       ".org 0x200\n"
	       "kern: mov $back, %eax\n out %eax, $0xe0\n"
	       " mov (%esp), %eax\n out %eax, $0xe0\n mov 4(%esp), %eax\n out %eax, $0xe0\n"
	       " mov 8(%esp), %eax\n out %eax, $0xe0\n mov 12(%esp), %eax\n out %eax, $0xe0\n"
	       " mov 16(%esp), %eax\n out %eax, $0xe0\n mov 20(%esp), %eax\n out %eax, $0xe0\n"
	       " mov %ss, %eax\n out %eax, $0xe0\n"
	       " lret $8\n"
	       ".org 0x300\n"
	       "h80: mov 12(%esp), %eax\n out %eax, $0xe0\n mov $0x6b, %al\n out %al, $0xf4\n");
	pm32_setup(&h, CODE, 0, 0, 0, 0);
	uint32_t t = CODE + 0x200;
	put64(&h, GDT + 0x40, (t & 0xffff) | ((uint64_t)PM_SEL_CODE << 16) | (2ull << 32) | (0xcull << 40) |
			      (3ull << 45) | (1ull << 47) | ((uint64_t)(t >> 16) << 48));
	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	s.gdt.limit = 0x47;
	assert_int_equal(ops->set_sregs(h.cpu, &s), 0);
	idt32_set(&h, 0x80, CODE + 0x300, 3);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0x6b);
	assert_true(h.n_reports >= 1);
	uint64_t want[] = { h.reports[0], h.reports[0], PM_SEL_UCODE, 0x2222, 0x1111, 0x50000 - 8, PM_SEL_UDATA,
			    PM_SEL_DATA, 0x50000 };
	expect_reports(&h, want, 9);
	vmh_fini(&h);
}

/* LLDT and a data segment from the LDT; LTR marks the TSS descriptor busy (and refuses a busy one). */
static void test_lldt_ltr(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       ".code32\n"
	       "start: mov $0x40, %ax\n lldt %ax\n"
	       " mov $0x0c, %ax\n mov %ax, %ds\n mov 0x10, %eax\n out %eax, $0xe0\n"
	       " mov $0x10, %ax\n mov %ax, %ds\n"
	       " mov $0x48, %ax\n ltr %ax\n"
	       " mov $r1, %edi\n mov $0x48, %ax\n ltr %ax\n"   /* busy now: #GP(0x48) */
	       "r1: mov $0, %al\n out %al, $0xf4\n"
	       ".org 0x400\n"
	       "f: pop %eax\n out %eax, $0xe0\n mov %edi, (%esp)\n iret\n");
	pm32_setup(&h, CODE, 0, 0, 0, 0);
	idt32_set(&h, 13, CODE + 0x400, 0);
	/* GDT 0x40: LDT at 0x5000 (2 entries); 0x48: available 32-bit TSS at 0x6000 */
	put64(&h, GDT + 0x40, 0xf | (0x5000ull << 16) | (0x82ull << 40));
	put64(&h, GDT + 0x48, 0x67 | (0x6000ull << 16) | (0x89ull << 40));
	put64(&h, 0x5008, 0x0000ffffull | (0x200000ull << 16) | (0x92ull << 40) | (0xcfull << 48)); /* base 2 MiB */
	put64(&h, 0x200010, 0xfeedf00d);
	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	s.gdt.limit = 0x4f;
	assert_int_equal(ops->set_sregs(h.cpu, &s), 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	uint64_t want[] = { 0xfeedf00d, 0x48 };
	expect_reports(&h, want, 2);
	assert_int_equal((get64(&h, GDT + 0x48) >> 40) & 0xf, 0xb);   /* busy */
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	assert_int_equal(s.tr.selector, 0x48);
	assert_int_equal(s.tr.base, 0x6000);
	assert_int_equal(s.ldt.selector, 0x40);
	assert_int_equal(s.ldt.base, 0x5000);
	vmh_fini(&h);
}

/* IA-32e LTR/LLDT of a 16-byte descriptor whose 64-bit base is not canonical: #GP(selector) and nothing loaded
 * (the TSS descriptor is not marked busy); a canonical base loads. */
static void test_long_ltr_lldt_noncanonical_base(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       "start: lea r1(%rip), %rdi\n mov $0x40, %ax\n ltr %ax\n"
	       "r1: lea r2(%rip), %rdi\n mov $0x50, %ax\n lldt %ax\n"
	       "r2: mov $0x60, %ax\n ltr %ax\n mov $0x70, %ax\n lldt %ax\n mov $0, %al\n out %al, $0xf4\n"
	       ".org 0x200\n"
	       "f: pop %rax\n out %eax, $0xe0\n mov %rdi, (%rsp)\n iretq\n");
	lm_setup(&h, CODE);
	idt_set(&h, 13, CODE + 0x200, 0, 0);
	const uint64_t bad = 0x0000800000006000ull, good = 0xffff800000006000ull;
	struct { unsigned sel, type; uint64_t base; } d[] = {
		{ 0x40, 0x9, bad }, { 0x50, 0x2, bad }, { 0x60, 0x9, good }, { 0x70, 0x2, good },
	};
	for (unsigned i = 0; i < 4; i++) {
		put64(&h, GDT + d[i].sel, 0x67 | ((d[i].base & 0xffffff) << 16) | ((0x80ull | d[i].type) << 40) |
						  (((d[i].base >> 24) & 0xff) << 56));
		put64(&h, GDT + d[i].sel + 8, d[i].base >> 32);
	}
	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	s.gdt.limit = 0x7f;
	assert_int_equal(ops->set_sregs(h.cpu, &s), 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0);
	uint64_t want[] = { 0x40, 0x50 };
	expect_reports(&h, want, 2);
	assert_int_equal((get64(&h, GDT + 0x40) >> 40) & 0xf, 0x9);   /* refused: not marked busy */
	assert_int_equal((get64(&h, GDT + 0x60) >> 40) & 0xf, 0xb);   /* loaded: busy */
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	assert_int_equal(s.tr.selector, 0x60);
	assert_int_equal(s.tr.base, good);
	assert_int_equal(s.ldt.selector, 0x70);
	assert_int_equal(s.ldt.base, good);
	vmh_fini(&h);
}

/* The RFLAGS image of an exception frame: a fault (#UD, #GP with its error code) pushes RF set, so the handler's
 * IRETQ resumes the faulting instruction without re-breaking (SDM vol. 3, 17.3.1.1); RF then lasts one
 * instruction: the INT3 after a NOP pushes it clear, as does a trap (#BP) in general. */
static void test_fault_frame_has_rf(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       "start: lea r1(%rip), %rdi\n ud2\n"
	       "r1: nop\n int3\n"
	       " lea r2(%rip), %rdi\n mov $0x1234, %ax\n mov %ax, %ds\n"
	       "r2: mov $0, %al\n out %al, $0xf4\n"
	       ".org 0x200\n"                                             /* #UD, #BP: no error code */
	       "f: mov 16(%rsp), %rax\n out %eax, $0xe0\n cmpq $0, %rdi\n je 1f\n mov %rdi, (%rsp)\n"
	       " xor %edi, %edi\n 1: iretq\n"
	       ".org 0x300\n"                                             /* #GP: error code first */
	       "g: pop %rax\n out %eax, $0xe0\n mov 16(%rsp), %rax\n out %eax, $0xe0\n mov %rdi, (%rsp)\n iretq\n");
	lm_setup(&h, CODE);
	idt_set(&h, 6, CODE + 0x200, 0, 0);
	idt_set(&h, 3, CODE + 0x200, 0, 0);
	idt_set(&h, 13, CODE + 0x300, 0, 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0);
	uint64_t want[] = { 0x10002, 0x2, 0x1234, 0x10002 };
	expect_reports(&h, want, 4);
	vmh_fini(&h);
}

/* Robustness: random bytes as ring-0 code (handlers skip a byte and IRETQ) must only ever produce well-formed
 * exits — no crash, no hang (a kicker thread bounds every run), whatever they do to the IDT, page tables or stack. */
struct chaos_kicker {
	struct accel_vcpu *_Atomic cpu;
	atomic_bool stop;
};

static void *chaos_kick(void *arg)
{
	struct chaos_kicker *k = arg;
	while (!atomic_load(&k->stop)) {
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
		struct accel_vcpu *c = atomic_load(&k->cpu);
		if (c)
			ops->kick(c);
	}
	return NULL;
}

static void test_random_code_robust(void **state)
{
	(void)state;
	unsigned seed = 12345, counts[ACCEL_EXIT_ERROR + 1] = { 0 };
	struct chaos_kicker k;
	pthread_t t;
	atomic_init(&k.cpu, NULL);
	atomic_init(&k.stop, false);
	assert_int_equal(pthread_create(&t, NULL, chaos_kick, &k), 0);
	for (int it = 0; it < 150; it++) {
		struct vmh h;
		vmh_init(&h, NULL, 0, 0);
		lm_setup(&h, CODE);
		for (unsigned i = 0; i < 0x8000; i++)
			h.ram[CODE + i] = (uint8_t)(rand_r(&seed) >> 7);
		for (unsigned i = 0; i < 256; i++) {
			bool err = i == 8 || (i >= 10 && i <= 14) || i == 17;
			idt_set(&h, i, CODE + 0x8000 + (err ? 0x10 : 0), 0, i & 1);
		}
		/* addq $1, (%rsp); iretq   and   add $8, %rsp; addq $1, (%rsp); iretq */
		memcpy(h.ram + CODE + 0x8000, "\x48\x83\x04\x24\x01\x48\xcf", 7);
		memcpy(h.ram + CODE + 0x8010, "\x48\x83\xc4\x08\x48\x83\x04\x24\x01\x48\xcf", 11);
		atomic_store(&k.cpu, h.cpu);
		int kicks = 0;
		for (int n = 0; n < 1000; n++) {
			assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
			struct accel_exit *x = &h.exit;
			assert_true(x->reason >= ACCEL_EXIT_IO && x->reason <= ACCEL_EXIT_ERROR);
			counts[x->reason]++;
			if (x->reason == ACCEL_EXIT_SHUTDOWN || x->reason == ACCEL_EXIT_ERROR ||
			    (x->reason == ACCEL_EXIT_KICK && ++kicks > 2))
				break;
			if (x->reason == ACCEL_EXIT_IO && x->io.in)
				memset(x->io.data, 0x5a, (size_t)x->io.size * x->io.count);
			if (x->reason == ACCEL_EXIT_MMIO && !x->mmio.write)
				memset(x->mmio.data, 0x5a, 8);
		}
		atomic_store(&k.cpu, NULL);
		vmh_fini(&h);
	}
	atomic_store(&k.stop, true);
	pthread_join(t, NULL);
	printf("emu: random code exits: io %u mmio %u msr r/w %u/%u hlt %u kick %u shutdown %u error %u\n",
	       counts[ACCEL_EXIT_IO], counts[ACCEL_EXIT_MMIO], counts[ACCEL_EXIT_MSR_READ],
	       counts[ACCEL_EXIT_MSR_WRITE], counts[ACCEL_EXIT_HLT], counts[ACCEL_EXIT_KICK],
	       counts[ACCEL_EXIT_SHUTDOWN], counts[ACCEL_EXIT_ERROR]);
	assert_true(counts[ACCEL_EXIT_IO] > 0 && counts[ACCEL_EXIT_MMIO] > 0);
}

/* ---- the SDK guest's multiboot entry ---- */

static const char *guest_elf_path(char *buf, size_t len)
{
	const char *b = getenv("BUILD");
	snprintf(buf, len, "%s/guest/topology.elf", b ? b : "build");
	struct stat st;
	return stat(buf, &st) == 0 ? buf : NULL;
}

/* Load an ELF32 multiboot kernel's PT_LOAD segments; returns the entry point or 0. */
static uint32_t elf32_load(struct vmh *h, const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return 0;
	static uint8_t img[4 << 20];
	size_t n = fread(img, 1, sizeof(img), f);
	fclose(f);
	if (n < sizeof(Elf32_Ehdr))
		return 0;
	const Elf32_Ehdr *eh = (const Elf32_Ehdr *)img;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS32)
		return 0;
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		const Elf32_Phdr *ph = (const Elf32_Phdr *)(img + eh->e_phoff + i * eh->e_phentsize);
		if (ph->p_type != PT_LOAD)
			continue;
		if (ph->p_paddr + ph->p_memsz > RAM_SIZE || ph->p_offset + ph->p_filesz > n)
			return 0;
		memcpy(h->ram + ph->p_paddr, img + ph->p_offset, ph->p_filesz);
		memset(h->ram + ph->p_paddr + ph->p_filesz, 0, ph->p_memsz - ph->p_filesz);
	}
	return eh->e_entry;
}

static void test_guest_multiboot_entry(void **state)
{
	(void)state;
	char path[512];
	if (!guest_elf_path(path, sizeof(path))) {
		printf("SKIP: %s not built (make BUILD=... guest)\n", path);
		skip();
	}
	struct accel_cpuid_entry c[] = {
		{ .function = 0, .eax = 1, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
		{ .function = 1, .eax = 0x806c1, .ebx = 0x00010800, .ecx = 0, .edx = 0x00000201 },
	};
	struct vmh h;
	vmh_init(&h, c, 2, 0);
	uint32_t entry = elf32_load(&h, path);
	assert_true(entry != 0);
	/* multiboot info at 0x9000: memory map (lower 640 KiB, RAM from 1 MiB) */
	uint32_t mbi[32] = { 0 };
	mbi[0] = 1u | (1u << 6);
	mbi[1] = 640;
	mbi[2] = (RAM_SIZE >> 10) - 1024;
	struct __attribute__((packed)) { uint32_t size; uint64_t addr, len; uint32_t type; } mm[2] = {
		{ 20, 0, 0x9f000, 1 }, { 20, 0x100000, RAM_SIZE - 0x100000, 1 } };
	memcpy(h.ram + 0x9100, mm, sizeof(mm));
	mbi[11] = sizeof(mm);
	mbi[12] = 0x9100;
	memcpy(h.ram + 0x9000, mbi, sizeof(mbi));

	struct kvm_sregs s;
	assert_int_equal(ops->get_sregs(h.cpu, &s), 0);
	s.cs = seg(0x08, 0xb, 0, false, true);
	s.ds = s.es = s.ss = s.fs = s.gs = seg(0x10, 3, 0, false, true);
	s.cr0 = 0x11;
	assert_int_equal(ops->set_sregs(h.cpu, &s), 0);
	struct kvm_regs r = { .rip = entry, .rax = 0x2badb002, .rbx = 0x9000, .rflags = 2 };
	assert_int_equal(ops->set_regs(h.cpu, &r), 0);

	char out[4096];
	size_t n_out = 0;
	int code = -1;
	for (int i = 0; i < 2000000 && code < 0; i++) {
		assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
		struct accel_exit *x = &h.exit;
		if (x->reason == ACCEL_EXIT_IO) {
			if (!x->io.in && x->io.port == 0x3f8 && n_out < sizeof(out) - 1)
				out[n_out++] = (char)x->io.data[0];
			else if (!x->io.in && x->io.port == 0xf4)
				code = x->io.data[0];
			else if (x->io.in)
				memset(x->io.data, x->io.port == 0x3fd ? 0x60 : 0xff, x->io.size);
			continue;
		}
		if (x->reason == ACCEL_EXIT_MMIO) {
			if (!x->mmio.write)
				memset(x->mmio.data, 0, 8);
			continue;
		}
		if (x->reason == ACCEL_EXIT_MSR_READ) {
			x->msr.value = 0;
			continue;
		}
		if (x->reason == ACCEL_EXIT_MSR_WRITE)
			continue;
		struct kvm_regs rr;
		ops->get_regs(h.cpu, &rr);
		out[n_out] = '\0';
		fail_msg("unexpected exit %d at rip 0x%llx (%s); console so far:\n%s", x->reason,
			 (unsigned long long)rr.rip, x->reason == ACCEL_EXIT_ERROR ? x->error.msg : "", out);
	}
	out[n_out] = '\0';
	printf("guest console:\n%s", out);
	/* No firmware tables in this harness: the guest boots to long mode, sets up its GDT/IDT/TSS, reads CPUID,
	 * then stops at ACPI (the first device-side piece it needs) and exits through isa-debug-exit. */
	assert_int_equal(code, 3);   /* GUEST_EXIT_BOOT */
	assert_non_null(strstr(out, "acpi: no RSDP found"));
	assert_non_null(strstr(out, "rackvm-guest: ring-0 entries"));
	vmh_fini(&h);
}

/* ---- second round: irq_ready, insn_count, PAUSE, SYSENTER/SYSEXIT, CPUID model, memory ordering ---- */

/* A kick that ends a run before the injected vector is delivered: irq_ready must be false (the backend still holds
 * the vector; KVM's ready_for_interrupt_injection is false then too), and true again once it is delivered. */
static void test_irq_ready_false_while_injection_queued(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " sti\n nop\n"
	       "1: jmp 1b\n"
	       ".org 0x500\n"
	       "irq: mov $0x31, %al\n out %al, $0xf4\n");
	lm_setup(&h, CODE);
	idt_set(&h, 0x31, CODE + 0x500, 0, 0);
	struct accel_entry e = { .request_irq_window = true };
	assert_int_equal(run_until(&h, &e), ACCEL_EXIT_IRQ_WINDOW);
	assert_true(h.exit.irq_ready);
	assert_int_equal(ops->inject_irq(h.cpu, 0x31), 0);
	ops->kick(h.cpu);            /* the kick is seen at the first boundary, before the delivery */
	assert_int_equal(ops->run(h.cpu, NULL, &h.exit), 0);
	assert_int_equal(h.exit.reason, ACCEL_EXIT_KICK);
	assert_false(h.exit.irq_ready);
	assert_int_equal(ops->inject_irq(h.cpu, 0x32), -EBUSY);   /* what a VMM trusting irq_ready would get */
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_IO);
	assert_int_equal(h.done, 0x31);
	vmh_fini(&h);
}

/* accel insn_count: instructions retired by the vCPU (published at every exit). */
static void test_insn_count(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE, " mov $100, %ecx\n1: dec %ecx\n jnz 1b\n hlt\n mov $7, %eax\n hlt\n");
	lm_setup(&h, CODE);
	assert_non_null(ops->insn_count);
	assert_int_equal(ops->insn_count(h.cpu), 0);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	assert_int_equal(ops->insn_count(h.cpu), 1 + 2 * 100 + 1);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	assert_int_equal(ops->insn_count(h.cpu), 1 + 2 * 100 + 1 + 2);
	vmh_fini(&h);
}

/* PAUSE yields the host thread every EMU_PAUSE_YIELD_EVERY-th time (counted); a plain NOP does not count. */
static void test_pause_yields(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE, " mov $1000, %ecx\n1: pause\n nop\n dec %ecx\n jnz 1b\n hlt\n");
	lm_setup(&h, CODE);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	const struct emu_cpu *cpu = (const struct emu_cpu *)(const void *)h.cpu;
	assert_int_equal(cpu->pauses, 1000);
	assert_int_equal(cpu->pause_yields, 1000 / EMU_PAUSE_YIELD_EVERY);
	printf("emu: 1000 PAUSE -> %llu host yields (every %u)\n", (unsigned long long)cpu->pause_yields,
	       EMU_PAUSE_YIELD_EVERY);
	vmh_fini(&h);
}

/* SYSEXIT (REX.W) from ring 0 to 64-bit ring 3 and SYSENTER back, decoded from guest code (0F 35 / 0F 34). */
static void test_sysenter_sysexit_opcodes(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct vmh h;
	vmh_init(&h, NULL, 0, 0);
	asm_at(&h, CODE,
	       " mov $0x174, %ecx\n mov $0x08, %eax\n xor %edx, %edx\n wrmsr\n"          /* SYSENTER_CS */
	       " mov $0x175, %ecx\n mov $0x70000, %eax\n wrmsr\n"                           /* SYSENTER_ESP */
	       " mov $0x176, %ecx\n mov $kentry, %eax\n wrmsr\n"                            /* SYSENTER_EIP */
	       " mov $user, %edx\n mov $0x50000, %ecx\n sysexitq\n"
	       "user: mov %cs, %eax\n mov %eax, %ebx\n mov %ss, %eax\n shl $16, %eax\n or %ebx, %eax\n"
	       " mov %eax, %esi\n sysenter\n"
	       "kentry: mov %esi, %eax\n out %eax, $0xe0\n"          /* ring-3 CS | SS << 16 */
	       " mov %cs, %eax\n out %eax, $0xe0\n mov %ss, %eax\n out %eax, $0xe0\n"
	       " mov %rsp, %rax\n out %eax, $0xe0\n"
	       " hlt\n");
	lm_setup(&h, CODE);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	assert_int_equal(h.n_reports, 4);
	assert_int_equal(h.reports[0], 0x2b | (0x33 << 16));   /* SYSENTER_CS + 32 | 3, + 40 | 3 */
	assert_int_equal(h.reports[1], 0x08);
	assert_int_equal(h.reports[2], 0x10);
	assert_int_equal(h.reports[3], 0x70000);
	vmh_fini(&h);
}

/* The emu CPUID model advertises exactly what the interpreter executes: each advertised extension runs here. */
static void test_cpuid_emu_model_features(void **state)
{
	(void)state;
	NEED_BINUTILS();
	struct accel_cpuid_entry t[64];
	size_t n = 0;
	const uint32_t ids[1] = { 0 };
	assert_int_equal(fw_cpuid_build(1, ids, NULL, 0, t, 64, &n), 0);
	const struct accel_cpuid_entry *l1 = NULL, *l7 = NULL, *x1 = NULL;
	for (size_t i = 0; i < n; i++) {
		if (t[i].function == 1)
			l1 = &t[i];
		if (t[i].function == 7 && t[i].index == 0)
			l7 = &t[i];
		if (t[i].function == 0x80000001)
			x1 = &t[i];
	}
	assert_non_null(l1);
	assert_non_null(x1);
	uint32_t want1c = (1u << 13) | (1u << 23);                  /* CMPXCHG16B, POPCNT */
	assert_int_equal(l1->ecx & want1c, want1c);
	assert_int_equal(x1->ecx & ((1u << 0) | (1u << 5)), (1u << 0) | (1u << 5));   /* LAHF-SAHF, LZCNT */
	assert_int_equal(x1->edx & (1u << 27), 1u << 27);           /* RDTSCP */
	/* never: SSE3/SSSE3/SSE4.1/4.2, MONITOR, MOVBE, XSAVE, AVX, RDRAND; MMX. Advertised: FPU, FXSR, SSE, SSE2 */
	assert_int_equal(l1->ecx & ((1u << 0) | (1u << 3) | (1u << 9) | (1u << 19) | (1u << 20) | (1u << 22) |
				    (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30)), 0);
	assert_int_equal(l1->edx & (1u << 23), 0);
	assert_int_equal(l1->edx & ((1u << 0) | (1u << 24) | (1u << 25) | (1u << 26)),
			 (1u << 0) | (1u << 24) | (1u << 25) | (1u << 26));
	if (l7)   /* FSGSBASE, BMI1, BMI2, SMAP */
		assert_int_equal(l7->ebx & ((1u << 0) | (1u << 3) | (1u << 8) | (1u << 20)), 0);

	struct vmh h;
	vmh_init(&h, t, n, 0);
	asm_at(&h, CODE,
	       " mov $0xf0f0, %rax\n popcnt %rax, %rbx\n mov %ebx, %eax\n out %eax, $0xe0\n"
	       " mov $0x100, %eax\n lzcnt %eax, %ebx\n mov %ebx, %eax\n out %eax, $0xe0\n"
	       " xor %eax, %eax\n lzcnt %eax, %ebx\n setc %al\n shl $8, %ebx\n or %ebx, %eax\n out %eax, $0xe0\n"
	       " mov $0x4000, %edi\n mov $1, %eax\n mov $2, %edx\n mov $3, %ebx\n mov $4, %ecx\n"
	       " lock cmpxchg16b (%rdi)\n setz %al\n movzbl %al, %eax\n out %eax, $0xe0\n"
	       " mov $0xc0000103, %ecx\n mov $7, %eax\n xor %edx, %edx\n wrmsr\n"
	       " rdtscp\n mov %ecx, %eax\n out %eax, $0xe0\n"
	       " mov $0xd700, %eax\n sahf\n mov $0, %eax\n lahf\n shr $8, %eax\n out %eax, $0xe0\n"
	       /* x87 and SSE2 as Linux enables them: CR4.OSFXSR|OSXMMEXCPT, CR0.MP|NE, EM/TS clear */
	       " mov %cr4, %rax\n or $0x600, %rax\n mov %rax, %cr4\n"
	       " mov %cr0, %rax\n and $~0xc, %rax\n or $0x22, %rax\n mov %rax, %cr0\n"
	       " fninit\n fld1\n fld1\n faddp\n fistpl 0x4010\n mov 0x4010, %eax\n out %eax, $0xe0\n"
	       " mov $7, %eax\n cvtsi2sd %eax, %xmm0\n mulsd %xmm0, %xmm0\n cvttsd2si %xmm0, %eax\n out %eax, $0xe0\n"
	       " fxsave 0x4100\n mov 0x4118, %eax\n out %eax, $0xe0\n"
	       " hlt\n");
	lm_setup(&h, CODE);
	put64(&h, 0x4000, 1);
	put64(&h, 0x4008, 2);
	assert_int_equal(run_until(&h, NULL), ACCEL_EXIT_HLT);
	assert_int_equal(h.n_reports, 9);
	assert_int_equal(h.reports[0], 8);               /* POPCNT */
	assert_int_equal(h.reports[1], 23);              /* LZCNT */
	assert_int_equal(h.reports[2], (32 << 8) | 1);   /* LZCNT of 0: 32, CF */
	assert_int_equal(h.reports[3], 1);               /* CMPXCHG16B matched */
	assert_int_equal(get64(&h, 0x4000), 3);
	assert_int_equal(get64(&h, 0x4008), 4);
	assert_int_equal(h.reports[4], 7);               /* RDTSCP: ECX = TSC_AUX */
	assert_int_equal(h.reports[5], 0xd7);            /* SAHF/LAHF in 64-bit mode */
	assert_int_equal(h.reports[6], 2);               /* x87: 1 + 1 */
	assert_int_equal(h.reports[7], 49);              /* SSE2: 7.0 * 7.0 */
	assert_int_equal(h.reports[8], 0x1f80);          /* FXSAVE's MXCSR: the reset value */
	vmh_fini(&h);
}

/* ---- memory ordering across vCPU threads (litmus) ----
 * Two vCPUs of one VM run in their own host threads, in ring 0 of the long-mode setup. Iteration i (1..LIT_N) uses
 * fresh locations X[i], Y[i] (zero at start) so nothing is reset between iterations; a per-iteration barrier (each
 * vCPU publishes i and spins, with PAUSE, until the other has too) starts both sides of an iteration together,
 * then each waits a few loop rounds (A: i & 15, B: (i >> 4) & 15) so the two bodies overlap at varied offsets.
 *   SB (store buffering): A: X=1; r0=Y   B: Y=1; r1=X. x86-TSO allows r0=r1=0 (a store waits in the store buffer
 *       while the later load is satisfied); with MFENCE between store and load it is forbidden.
 *   MP (message passing): A: X=1; Y=1   B: r0=Y; r1=X. Forbidden: r0=1, r1=0 (stores are not reordered with stores,
 *       loads not with loads).
 * The interpreter gets this from acquire loads / release stores on host memory and a host full fence for MFENCE
 * (emu.h); these tests check the whole path (decode, TLB fast paths, MMU) keeps it. */
#define LIT_N    50000u
#define LIT_X    0x400000u
#define LIT_Y    0x440000u
#define LIT_R0   0x480000u
#define LIT_R1   0x4c0000u
#define LIT_BAR0 0x500000u
#define LIT_BAR1 0x500040u
#define LIT_CODE1 (CODE + 0x1000u)

enum lit_kind { LIT_SB, LIT_SB_MFENCE, LIT_MP };

struct lit_vcpu {
	struct accel_vcpu *cpu;
	struct accel_exit exit;
	atomic_bool stop;
	atomic_int result;   /* -2 running, 0 done, -1 stopped by the watchdog, else the unexpected exit reason */
	pthread_t thread;
};

static void *lit_thread(void *arg)
{
	struct lit_vcpu *l = arg;

	for (;;) {
		if (ops->run(l->cpu, NULL, &l->exit) != 0) {
			atomic_store(&l->result, 1000);
			return NULL;
		}
		if (l->exit.reason == ACCEL_EXIT_IO && !l->exit.io.in && l->exit.io.port == PORT_DONE) {
			atomic_store(&l->result, 0);
			return NULL;
		}
		if (l->exit.reason == ACCEL_EXIT_KICK && atomic_load(&l->stop)) {
			atomic_store(&l->result, -1);
			return NULL;
		}
		if (l->exit.reason != ACCEL_EXIT_KICK) {
			atomic_store(&l->result, (int)l->exit.reason);
			return NULL;
		}
	}
}

static void lit_program(char *buf, size_t len, enum lit_kind kind, bool side_a)
{
	const char *body;

	if (kind == LIT_MP)
		body = side_a ? " movl $1, 0x400000(,%rbx,4)\n movl $1, 0x440000(,%rbx,4)\n"
			      : " movl 0x440000(,%rbx,4), %eax\n movl 0x400000(,%rbx,4), %ecx\n"
				" movl %eax, 0x480000(,%rbx,4)\n movl %ecx, 0x4c0000(,%rbx,4)\n";
	else if (kind == LIT_SB)
		body = side_a ? " movl $1, 0x400000(,%rbx,4)\n movl 0x440000(,%rbx,4), %eax\n"
				" movl %eax, 0x480000(,%rbx,4)\n"
			      : " movl $1, 0x440000(,%rbx,4)\n movl 0x400000(,%rbx,4), %eax\n"
				" movl %eax, 0x4c0000(,%rbx,4)\n";
	else
		body = side_a ? " movl $1, 0x400000(,%rbx,4)\n mfence\n movl 0x440000(,%rbx,4), %eax\n"
				" movl %eax, 0x480000(,%rbx,4)\n"
			      : " movl $1, 0x440000(,%rbx,4)\n mfence\n movl 0x400000(,%rbx,4), %eax\n"
				" movl %eax, 0x4c0000(,%rbx,4)\n";
	snprintf(buf, len,
		 " mov $1, %%ebx\n"
		 "loop: mov %%ebx, 0x%x\n"
		 "1: mov 0x%x, %%eax\n cmp %%ebx, %%eax\n jae 2f\n pause\n jmp 1b\n"
		 "2: mov %%ebx, %%ecx\n%s and $15, %%ecx\n"      /* skew: A waits i & 15, B (i >> 4) & 15 rounds */
		 "3: dec %%ecx\n jns 3b\n%s"
		 " inc %%ebx\n cmp $%u, %%ebx\n jbe loop\n"
		 " mov $0, %%al\n out %%al, $0xf4\n",
		 side_a ? LIT_BAR0 : LIT_BAR1, side_a ? LIT_BAR1 : LIT_BAR0, side_a ? "" : " shr $4, %ecx\n", body,
		 LIT_N);
}

/* Runs one litmus kind; tallies[r0 * 2 + r1] (SB: r0 on A, r1 on B; MP: r0 = flag, r1 = data, both on B). */
static void lit_run(enum lit_kind kind, unsigned tallies[4])
{
	struct vmh h, h1;
	char src[2048];
	struct lit_vcpu l[2];

	vmh_init(&h, NULL, 0, 0);
	h1 = h;
	assert_int_equal(ops->vcpu_create(h.vm, 1, 1, &h1.cpu), 0);
	lit_program(src, sizeof(src), kind, true);
	asm_at(&h, CODE, src);
	lit_program(src, sizeof(src), kind, false);
	asm_at(&h, LIT_CODE1, src);
	lm_setup(&h, CODE);
	lm_setup(&h1, LIT_CODE1);
	memset(l, 0, sizeof(l));
	l[0].cpu = h.cpu;
	l[1].cpu = h1.cpu;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 2; i++) {
		atomic_init(&l[i].stop, false);
		atomic_init(&l[i].result, -2);
		assert_int_equal(pthread_create(&l[i].thread, NULL, lit_thread, &l[i]), 0);
	}
	/* watchdog: both vCPU threads end by themselves (PORT_DONE); after 300 s they are kicked out and the test
	 * fails */
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &b);
		if (atomic_load(&l[0].result) != -2 && atomic_load(&l[1].result) != -2)
			break;
		if (b.tv_sec - a.tv_sec > 300) {
			for (int i = 0; i < 2; i++) {
				atomic_store(&l[i].stop, true);
				ops->kick(l[i].cpu);
			}
			break;
		}
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(l[i].thread, NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	assert_int_equal(atomic_load(&l[0].result), 0);
	assert_int_equal(atomic_load(&l[1].result), 0);
	memset(tallies, 0, 4 * sizeof(tallies[0]));
	for (uint32_t i = 1; i <= LIT_N; i++) {
		uint32_t r0, r1;
		memcpy(&r0, h.ram + LIT_R0 + 4 * i, 4);
		memcpy(&r1, h.ram + LIT_R1 + 4 * i, 4);
		assert_true(r0 <= 1 && r1 <= 1);
		tallies[r0 * 2 + r1]++;
	}
	static const char *const names[] = { "SB", "SB+MFENCE", "MP" };
	printf("emu litmus %-9s %u iterations on 2 vCPU threads in %.2f s: r0r1 00=%u 01=%u 10=%u 11=%u\n",
	       names[kind], LIT_N, s, tallies[0], tallies[1], tallies[2], tallies[3]);
	ops->vcpu_destroy(h1.cpu);
	vmh_fini(&h);
}

/* Runs `kind` until the two sides have overlapped in at least 100 iterations (outcome `overlap` seen: both stores
 * seen for SB, data without flag for MP) or 4 runs, adding up the tallies: when the host scheduler puts both vCPU
 * threads on one core a run has no overlap at all and proves nothing. */
static void lit_run_overlapping(enum lit_kind kind, unsigned overlap, unsigned total[4])
{
	memset(total, 0, 4 * sizeof(total[0]));
	for (int run = 0; run < 4 && total[overlap] < 100; run++) {
		unsigned t[4];
		lit_run(kind, t);
		for (int i = 0; i < 4; i++)
			total[i] += t[i];
	}
	printf("emu litmus total: 00=%u 01=%u 10=%u 11=%u%s\n", total[0], total[1], total[2], total[3],
	       total[overlap] < 100 ? " (little overlap: the host ran the two vCPU threads mostly in turn)" : "");
}

static void test_litmus_sb(void **state)
{
	(void)state;
	NEED_BINUTILS();
	unsigned t[4];
	lit_run_overlapping(LIT_SB, 3, t);
	/* every outcome is allowed by TSO, 00 included (a store still in the store buffer when the load reads) */
	assert_true(t[0] + t[1] + t[2] + t[3] >= LIT_N);
}

static void test_litmus_sb_mfence(void **state)
{
	(void)state;
	NEED_BINUTILS();
	unsigned t[4];
	lit_run_overlapping(LIT_SB_MFENCE, 3, t);
	assert_int_equal(t[0], 0);    /* forbidden with MFENCE */
}

static void test_litmus_mp(void **state)
{
	(void)state;
	NEED_BINUTILS();
	unsigned t[4];
	lit_run_overlapping(LIT_MP, 1, t);
	assert_int_equal(t[2], 0);    /* flag seen, data not: forbidden */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reset_state),
		cmocka_unit_test(test_real_to_long),
		cmocka_unit_test(test_paging_pf),
		cmocka_unit_test(test_ring3_iretq_and_back),
		cmocka_unit_test(test_io_exits),
		cmocka_unit_test(test_mmio_exits),
		cmocka_unit_test(test_mmio_split_read_refused),
		cmocka_unit_test(test_msr_exits),
		cmocka_unit_test(test_triple_fault),
		cmocka_unit_test(test_double_fault),
		cmocka_unit_test(test_kick),
		cmocka_unit_test(test_irq_window_inject),
		cmocka_unit_test(test_cpuid_apic_id),
		cmocka_unit_test(test_tsc),
		cmocka_unit_test(test_prot32_paging_rings),
		cmocka_unit_test(test_pae_wp_nx),
		cmocka_unit_test(test_real_mode_ivt),
		cmocka_unit_test(test_syscall_sysret),
		cmocka_unit_test(test_compat_mode_far),
		cmocka_unit_test(test_segment_load_checks),
		cmocka_unit_test(test_hole_and_1g_page),
		cmocka_unit_test(test_nmi),
		cmocka_unit_test(test_wrmsr_refused),
		cmocka_unit_test(test_page_split),
		cmocka_unit_test(test_tlb_invlpg_cr3),
		cmocka_unit_test(test_kick_latency),
		cmocka_unit_test(test_long_mode_user_faults),
		cmocka_unit_test(test_call_gate_long),
		cmocka_unit_test(test_call_gate_prot32_params),
		cmocka_unit_test(test_lldt_ltr),
		cmocka_unit_test(test_long_ltr_lldt_noncanonical_base),
		cmocka_unit_test(test_fault_frame_has_rf),
		cmocka_unit_test(test_random_code_robust),
		cmocka_unit_test(test_sysenter_sysexit_direct),
		cmocka_unit_test(test_irq_ready_false_while_injection_queued),
		cmocka_unit_test(test_hlt_in_shadow_woken_by_pending_nmi),
		cmocka_unit_test(test_insn_count),
		cmocka_unit_test(test_pause_yields),
		cmocka_unit_test(test_sysenter_sysexit_opcodes),
		cmocka_unit_test(test_cpuid_emu_model_features),
		cmocka_unit_test(test_litmus_sb),
		cmocka_unit_test(test_litmus_sb_mfence),
		cmocka_unit_test(test_litmus_mp),
		cmocka_unit_test(test_perf_ring3_loop),
		cmocka_unit_test(test_guest_multiboot_entry),
	};
	return cmocka_run_group_tests(tests, setup_binutils, NULL);
}
