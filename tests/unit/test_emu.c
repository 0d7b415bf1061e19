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

static void vmh_init(struct vmh *h, const struct accel_cpuid_entry *cpuid, size_t n_cpuid, uint32_t apic_id)
{
	memset(h, 0, sizeof(*h));
	h->ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(h->ram != MAP_FAILED);
	struct accel_vm_config cfg = { .ram = h->ram, .ram_size = RAM_SIZE, .cpuid = cpuid, .n_cpuid = n_cpuid,
				       .tsc_hz = 1000000000u };
	assert_int_equal(ops->vm_create(&cfg, &h->vm), 0);
	assert_int_equal(ops->vcpu_create(h->vm, 0, apic_id, &h->cpu), 0);
	h->done = -1;
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reset_state),
		cmocka_unit_test(test_real_to_long),
		cmocka_unit_test(test_paging_pf),
		cmocka_unit_test(test_ring3_iretq_and_back),
		cmocka_unit_test(test_io_exits),
		cmocka_unit_test(test_mmio_exits),
		cmocka_unit_test(test_msr_exits),
		cmocka_unit_test(test_triple_fault),
		cmocka_unit_test(test_double_fault),
		cmocka_unit_test(test_kick),
		cmocka_unit_test(test_irq_window_inject),
		cmocka_unit_test(test_cpuid_apic_id),
		cmocka_unit_test(test_tsc),
		cmocka_unit_test(test_perf_ring3_loop),
		cmocka_unit_test(test_guest_multiboot_entry),
	};
	return cmocka_run_group_tests(tests, setup_binutils, NULL);
}
