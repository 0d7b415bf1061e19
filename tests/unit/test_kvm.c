/* SPDX-License-Identifier: MIT */
/*
 * kvm accelerator: tiny real-mode and long-mode guests run through accel_kvm_ops (no VMM around it) — port I/O
 * out and in, MMIO outside RAM, a filtered MSR (IA32_APIC_BASE) reaching user space, HLT, interrupt window and
 * injection through the real-mode IVT, kick of a spinning guest, TSC reads. Without a usable /dev/kvm every case
 * prints "SKIP: <reason>" and is skipped (this development machine has none).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "hypervisor/accel.h"
#include "util/clock.h"

#define RAM_SIZE (2u << 20)
#define CODE 0x1000u

static const struct accel_ops *kvm = &accel_kvm_ops;

struct guest {
	uint8_t *ram;
	struct accel_vm *vm;
	struct accel_vcpu *cpu;
	struct accel_exit x;
};

static bool kvm_usable(void)
{
	char why[160] = "";

	if (kvm->probe(why, sizeof(why)) == 0)
		return true;
	printf("SKIP: %s\n", why[0] ? why : "/dev/kvm unusable");
	return false;
}

#define REQUIRE_KVM() \
	do { \
		if (!kvm_usable()) { \
			skip(); \
			return; \
		} \
	} while (0)

static void guest_create(struct guest *g)
{
	/* The host's supported CPUID as is: KVM checks CR4/EFER bits against the guest's CPUID (PAE, LM, NX). */
	static struct accel_cpuid_entry cpuid[256];
	struct accel_vm_config cfg = { .ram_size = RAM_SIZE, .cpuid = cpuid, .tsc_hz = 0 };

	assert_non_null(kvm->supported_cpuid);
	assert_int_equal(kvm->supported_cpuid(cpuid, 256, &cfg.n_cpuid), 0);
	assert_true(cfg.n_cpuid > 0);
	memset(g, 0, sizeof(*g));
	g->ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g->ram != MAP_FAILED);
	cfg.ram = g->ram;
	assert_int_equal(kvm->vm_create(&cfg, &g->vm), 0);
	assert_int_equal(kvm->vcpu_create(g->vm, 0, 0, &g->cpu), 0);
}

static void guest_destroy(struct guest *g)
{
	kvm->vcpu_destroy(g->cpu);
	kvm->vm_destroy(g->vm);
	munmap(g->ram, RAM_SIZE);
}

/* Real mode, CS = DS = 0, IP = CODE, code copied there. */
static void guest_real(struct guest *g, const uint8_t *code, size_t len)
{
	struct kvm_sregs s;
	struct kvm_regs r;

	memcpy(g->ram + CODE, code, len);
	assert_int_equal(kvm->get_sregs(g->cpu, &s), 0);
	s.cs.base = 0;
	s.cs.selector = 0;
	s.ds = s.es = s.ss = s.cs;
	s.ds.type = s.es.type = s.ss.type = 3;
	assert_int_equal(kvm->set_sregs(g->cpu, &s), 0);
	memset(&r, 0, sizeof(r));
	r.rip = CODE;
	r.rflags = 2;
	r.rsp = 0x8000;
	assert_int_equal(kvm->set_regs(g->cpu, &r), 0);
}

static void guest_run(struct guest *g, bool window)
{
	struct accel_entry e = { .request_irq_window = window };

	assert_int_equal(kvm->run(g->cpu, &e, &g->x), 0);
	if (g->x.reason == ACCEL_EXIT_ERROR)
		printf("kvm error: %s\n", g->x.error.msg);
}

static void test_probe(void **state)
{
	REQUIRE_KVM();
	assert_non_null(accel_find("kvm"));
}

static void test_real_mode_out_hlt(void **state)
{
	static const uint8_t code[] = { 0xb0, 0x42, 0xe6, 0x10, 0xf4 };   /* mov al,0x42; out 0x10,al; hlt */
	struct guest g;
	struct kvm_regs r;

	REQUIRE_KVM();
	guest_create(&g);
	guest_real(&g, code, sizeof(code));
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
	assert_int_equal(g.x.io.port, 0x10);
	assert_false(g.x.io.in);
	assert_int_equal(g.x.io.size, 1);
	assert_int_equal(g.x.io.data[0], 0x42);
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_HLT);
	assert_int_equal(kvm->get_regs(g.cpu, &r), 0);
	assert_int_equal(r.rip, CODE + sizeof(code));
	guest_destroy(&g);
}

/* IN fills AL; an MMIO read just above the 2 MiB of RAM (0x200000, through an address-size override and a
 * big-real DS limit) returns what the VMM supplied; both values come back out through OUT. */
static void test_in_and_mmio_read(void **state)
{
	static const uint8_t code[] = {
		0xe4, 0x11,                               /* in al, 0x11 */
		0xe6, 0x12,                               /* out 0x12, al */
		0x67, 0x8a, 0x1d, 0x00, 0x00, 0x20, 0x00, /* mov bl, [0x200000] (addr32, DS base 0) */
		0x88, 0xd8,                               /* mov al, bl */
		0xe6, 0x13,                               /* out 0x13, al */
		0xf4,
	};
	struct guest g;

	REQUIRE_KVM();
	guest_create(&g);
	guest_real(&g, code, sizeof(code));
	/* big-real DS limit so the 32-bit address passes the segment check */
	struct kvm_sregs s;
	assert_int_equal(kvm->get_sregs(g.cpu, &s), 0);
	s.ds.limit = 0xffffffff;
	s.ds.g = 1;
	assert_int_equal(kvm->set_sregs(g.cpu, &s), 0);

	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
	assert_true(g.x.io.in);
	assert_int_equal(g.x.io.port, 0x11);
	g.x.io.data[0] = 0x5a;
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
	assert_int_equal(g.x.io.port, 0x12);
	assert_int_equal(g.x.io.data[0], 0x5a);
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_MMIO);
	assert_int_equal(g.x.mmio.gpa, 0x200000);
	assert_false(g.x.mmio.write);
	assert_int_equal(g.x.mmio.size, 1);
	g.x.mmio.data[0] = 0xa7;
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
	assert_int_equal(g.x.io.port, 0x13);
	assert_int_equal(g.x.io.data[0], 0xa7);
	guest_destroy(&g);
}

/* RDMSR IA32_APIC_BASE goes to user space (MSR filter); the value we give lands in EDX:EAX. An unknown MSR with
 * error set raises #GP: with an IVT entry for vector 13 the guest reports it through port 0x15. */
static void test_msr_exits(void **state)
{
	static const uint8_t code[] = {
		0x66, 0xb9, 0x1b, 0x00, 0x00, 0x00,       /* mov ecx, 0x1b */
		0x0f, 0x32,                               /* rdmsr */
		0xe6, 0x14,                               /* out 0x14, al */
		0x66, 0xb9, 0x78, 0x56, 0x34, 0x12,       /* mov ecx, 0x12345678 */
		0x0f, 0x32,                               /* rdmsr -> #GP */
		0xf4,
	};
	static const uint8_t gp_handler[] = { 0xe6, 0x15, 0xf4 };  /* out 0x15, al; hlt */
	struct guest g;

	REQUIRE_KVM();
	guest_create(&g);
	guest_real(&g, code, sizeof(code));
	memcpy(g.ram + 0x1100, gp_handler, sizeof(gp_handler));
	g.ram[13 * 4 + 0] = 0x00;
	g.ram[13 * 4 + 1] = 0x11;   /* offset 0x1100, segment 0 */
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_MSR_READ);
	assert_int_equal(g.x.msr.index, 0x1b);
	g.x.msr.value = 0xfee0095aull;
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
	assert_int_equal(g.x.io.port, 0x14);
	assert_int_equal(g.x.io.data[0], 0x5a);
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_MSR_READ);
	assert_int_equal(g.x.msr.index, 0x12345678);
	g.x.msr.error = true;
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
	assert_int_equal(g.x.io.port, 0x15);
	guest_destroy(&g);
}

/* Interrupt window: STI then spin; the window exit says irq_ready, KVM_INTERRUPT of vector 0x20 runs the IVT
 * handler, which reports through port 0x16. */
static void test_irq_window_and_inject(void **state)
{
	static const uint8_t code[] = { 0xfb, 0xeb, 0xfe };          /* sti; jmp $ */
	static const uint8_t handler[] = { 0xe6, 0x16, 0xf4 };        /* out 0x16, al; hlt */
	struct guest g;

	REQUIRE_KVM();
	guest_create(&g);
	guest_real(&g, code, sizeof(code));
	memcpy(g.ram + 0x1100, handler, sizeof(handler));
	g.ram[0x20 * 4 + 0] = 0x00;
	g.ram[0x20 * 4 + 1] = 0x11;
	guest_run(&g, true);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IRQ_WINDOW);
	assert_true(g.x.irq_ready);
	assert_int_equal(kvm->inject_irq(g.cpu, 0x20), 0);
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
	assert_int_equal(g.x.io.port, 0x16);
	guest_destroy(&g);
}

struct kicker {
	struct accel_vcpu *cpu;
};

static void *kick_later(void *arg)
{
	struct kicker *k = arg;

	usleep(50000);
	kvm->kick(k->cpu);
	return NULL;
}

/* A guest spinning in `jmp $` leaves KVM_RUN with ACCEL_EXIT_KICK when another thread kicks it; a kick before
 * the run makes it return at once. */
static void test_kick(void **state)
{
	static const uint8_t code[] = { 0xeb, 0xfe };
	struct kicker k;
	struct guest g;
	pthread_t t;

	REQUIRE_KVM();
	guest_create(&g);
	guest_real(&g, code, sizeof(code));
	k.cpu = g.cpu;
	kvm->kick(g.cpu);
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_KICK);
	assert_int_equal(pthread_create(&t, NULL, kick_later, &k), 0);
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_KICK);
	pthread_join(t, NULL);
	guest_destroy(&g);
}

/* A kick while the vCPU thread is between runs (the signal stays pending, blocked) ends the next run at once, and
 * only that one: the run path takes the signal, so the run after it reaches the guest's next exit. Without taking
 * it, every later KVM_RUN would return -EINTR at once and the guest would never run again. */
static void test_kick_between_runs_is_taken_once(void **state)
{
	static const uint8_t code[] = { 0xe6, 0x10, 0xeb, 0xfc };     /* 1: out %al, $0x10; jmp 1b */

	struct guest g;

	REQUIRE_KVM();
	guest_create(&g);
	guest_real(&g, code, sizeof(code));
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
	for (int i = 0; i < 3; i++) {
		kvm->kick(g.cpu);                 /* this thread is the vCPU's: the signal is now pending here */
		guest_run(&g, false);
		assert_int_equal(g.x.reason, ACCEL_EXIT_KICK);
		guest_run(&g, false);
		assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
		assert_int_equal(g.x.io.port, 0x10);
	}
	guest_destroy(&g);
}

/* Long mode straight from sregs: identity-mapped 2 MiB page, 64-bit CS; a 64-bit immediate goes out as 32 bits. */
static void test_long_mode_out(void **state)
{
	static const uint8_t code[] = {
		0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* mov rax, 0x1122334455667788 */
		0xe7, 0x17,                                                  /* out 0x17, eax */
		0xf4,
	};
	struct kvm_sregs s;
	struct kvm_regs r;
	struct guest g;
	uint64_t *pml4, *pdpt, *pd;
	uint64_t t1, t2;

	REQUIRE_KVM();
	guest_create(&g);
	memcpy(g.ram + CODE, code, sizeof(code));
	pml4 = (uint64_t *)(g.ram + 0x2000);
	pdpt = (uint64_t *)(g.ram + 0x3000);
	pd = (uint64_t *)(g.ram + 0x4000);
	pml4[0] = 0x3000 | 3;
	pdpt[0] = 0x4000 | 3;
	pd[0] = 0x0 | 0x83;     /* 2 MiB, present, writable */
	assert_int_equal(kvm->get_sregs(g.cpu, &s), 0);
	s.cr3 = 0x2000;
	s.cr4 = 1u << 5;                      /* PAE */
	s.cr0 = 0x80000011u;                  /* PG ET PE */
	s.efer = (1u << 8) | (1u << 10);      /* LME LMA */
	s.cs = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1,
				     .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1 };
	s.ds = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = 16, .type = 3, .present = 1,
				     .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1 };
	s.es = s.ss = s.fs = s.gs = s.ds;
	assert_int_equal(kvm->set_sregs(g.cpu, &s), 0);
	memset(&r, 0, sizeof(r));
	r.rip = CODE;
	r.rflags = 2;
	r.rsp = 0x8000;
	assert_int_equal(kvm->set_regs(g.cpu, &r), 0);
	t1 = kvm->read_tsc(g.cpu);
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
	assert_int_equal(g.x.io.port, 0x17);
	assert_int_equal(g.x.io.size, 4);
	assert_memory_equal(g.x.io.data, "\x88\x77\x66\x55", 4);
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_HLT);
	t2 = kvm->read_tsc(g.cpu);
	assert_true(t2 > t1);
	guest_destroy(&g);
}


/* Long mode with ring-0 and ring-3 segments and a TSS: identity-mapped user-accessible 2 MiB page; GDT at 0x5000,
 * IDT descriptor at 0x5100 (IDT at 0x5200), TSS at 0x5800 with RSP0 = 0x9000 and no I/O bitmap. */
static void guest_long_rings(struct guest *g, uint64_t rip)
{
	static const uint64_t gdt[] = {
		0, 0x00af9a000000ffffull, 0x00cf92000000ffffull,  /* 0x08 ring-0 code64, 0x10 ring-0 data */
		0x00cff2000000ffffull, 0x00affa000000ffffull,     /* 0x18 ring-3 data, 0x20 ring-3 code64 */
		0x0000890058000067ull, 0,                          /* 0x28 TSS at 0x5800, limit 0x67 */
	};
	uint64_t *pml4 = (uint64_t *)(g->ram + 0x2000), *pdpt = (uint64_t *)(g->ram + 0x3000),
		 *pd = (uint64_t *)(g->ram + 0x4000);
	struct kvm_sregs s;
	struct kvm_regs r;

	pml4[0] = 0x3000 | 7;
	pdpt[0] = 0x4000 | 7;
	pd[0] = 0x0 | 0x87;     /* 2 MiB, present, writable, user */
	memcpy(g->ram + 0x5000, gdt, sizeof(gdt));
	/* guest structures are packed: unaligned stores through memcpy */
	uint16_t idt_limit = 256 * 16 - 1, iomap = 0x68;
	uint64_t idt_base = 0x5200, rsp0 = 0x9000;

	memcpy(g->ram + 0x5100, &idt_limit, sizeof(idt_limit));
	memcpy(g->ram + 0x5102, &idt_base, sizeof(idt_base));
	memcpy(g->ram + 0x5804, &rsp0, sizeof(rsp0));            /* RSP0 */
	memcpy(g->ram + 0x5866, &iomap, sizeof(iomap));          /* I/O map base past the limit: no bitmap */
	assert_int_equal(kvm->get_sregs(g->cpu, &s), 0);
	s.cr3 = 0x2000;
	s.cr4 = 1u << 5;                      /* PAE */
	s.cr0 = 0x80000011u;                  /* PG ET PE */
	s.efer = (1u << 8) | (1u << 10);      /* LME LMA */
	s.gdt = (struct kvm_dtable){ .base = 0x5000, .limit = sizeof(gdt) - 1 };
	s.cs = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1,
				     .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1 };
	s.ds = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = 16, .type = 3, .present = 1,
				     .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1 };
	s.es = s.ss = s.fs = s.gs = s.ds;
	assert_int_equal(kvm->set_sregs(g->cpu, &s), 0);
	memset(&r, 0, sizeof(r));
	r.rip = rip;
	r.rflags = 2;
	r.rsp = 0x8000;
	assert_int_equal(kvm->set_regs(g->cpu, &r), 0);
}

static uint32_t io_u32(const struct guest *g)
{
	uint32_t v;

	memcpy(&v, g->x.io.data, 4);
	return v;
}

/*
 * The guest SDK's system call: INT3 from ring 3 through a DPL-3 interrupt gate enters ring 0, and IRETQ returns to
 * ring 3 (kvm_pvm delivers a ring-3 "int $n" as #UD and lets SYSCALL reach LSTAR at CPL 3, so neither can be the
 * SDK's gate; docs/guest.md). Ring 0 loads IDT and TSS and IRETQs to ring 3 at 0x1400, which does INT3 twice;
 * the handler at 0x1800 does OUT (possible only in ring 0: the TSS has no I/O bitmap) with the caller's RAX, then
 * reports the CS the gate pushed, and returns.
 */
static void test_int3_from_ring3_enters_ring0(void **state)
{
	static const uint8_t ring0[] = {
		0x0f, 0x01, 0x1c, 0x25, 0x00, 0x51, 0x00, 0x00, 0xb8, 0x28, 0x00, 0x00,
		0x00, 0x0f, 0x00, 0xd8, 0x6a, 0x1b, 0x68, 0x00, 0x70, 0x00, 0x00, 0x68,
		0x02, 0x02, 0x00, 0x00, 0x6a, 0x23, 0x68, 0x00, 0x14, 0x00, 0x00, 0x48,
		0xcf,
	};
	static const uint8_t user[] = {
		0xb8, 0x34, 0x12, 0x00, 0x00, 0xcc, 0xb8, 0x78, 0x56, 0x00, 0x00, 0xcc,
		0xf4,
	};
	static const uint8_t handler[] = {
		0xe7, 0x18, 0x48, 0x8b, 0x44, 0x24, 0x08, 0xe7, 0x19, 0x48, 0xcf,
	};
	const uint64_t h = 0x1800;
	struct guest g;

	REQUIRE_KVM();
	guest_create(&g);
	memcpy(g.ram + 0x1000, ring0, sizeof(ring0));
	memcpy(g.ram + 0x1400, user, sizeof(user));
	memcpy(g.ram + h, handler, sizeof(handler));
	/* IDT vector 3: 64-bit interrupt gate, DPL 3, CS 0x08 */
	*(uint64_t *)(g.ram + 0x5200 + 3 * 16) = (h & 0xffff) | (0x08ull << 16) | (0xeeull << 40) |
						  ((h >> 16 & 0xffff) << 48);
	guest_long_rings(&g, 0x1000);
	for (unsigned i = 0; i < 2; i++) {
		guest_run(&g, false);
		assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
		assert_int_equal(g.x.io.port, 0x18);
		assert_int_equal(io_u32(&g), i == 0 ? 0x1234 : 0x5678);
		guest_run(&g, false);
		assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
		assert_int_equal(g.x.io.port, 0x19);
		assert_int_equal(io_u32(&g) & 3, 3);      /* called from ring 3 */
	}
	guest_run(&g, false);     /* HLT in ring 3: #GP into an IDT whose vector 13 is not present: shutdown */
	assert_int_equal(g.x.reason, ACCEL_EXIT_SHUTDOWN);
	guest_destroy(&g);
}

/* The rate tsc_hz() promises is the rate the guest TSC runs at (without TSC scaling KVM cannot give the 2 GHz the
 * VMM asks for: CPUID 0x15/0x16 and the APIC timer must then use the host's rate). Measured over 200 ms of host
 * time; the bound (10 %) is far wider than the scheduling noise of two reads. */
static void test_tsc_rate_is_what_tsc_hz_says(void **state)
{
	struct guest g;
	uint64_t hz, t1, t2, n1, n2;
	double rate;

	REQUIRE_KVM();
	assert_non_null(kvm->tsc_hz);
	hz = kvm->tsc_hz(2000000000ull);
	assert_true(hz > 0);
	guest_create(&g);
	n1 = clock_now_ns();
	t1 = kvm->read_tsc(g.cpu);
	usleep(200000);
	t2 = kvm->read_tsc(g.cpu);
	n2 = clock_now_ns();
	rate = (double)(t2 - t1) * 1e9 / (double)(n2 - n1);
	printf("tsc_hz() says %llu Hz, the guest TSC ran at %.0f Hz\n", (unsigned long long)hz, rate);
	assert_true(rate > 0.9 * (double)hz && rate < 1.1 * (double)hz);
	guest_destroy(&g);
}

/* CPUID on a kvm_pvm host. rackvm's table (supported_cpuid) leaves out everything that host cannot run in ring 0
 * (fw_cpuid_kvm_pvm_hidden). What the guest itself then reads (ring 0, real mode): kvm_pvm honours the table for some
 * bits — CMPXCHG16B is gone — but answers with the host's own bits for most of leaf 1 (SSE3..RDRAND, MOVBE, XSAVE,
 * AVX among them) and for all of leaves 7 and 0xD, whatever KVM_SET_CPUID2 says (measured: a table with leaf 1 ECX
 * and EDX zeroed still gives ECX 0x76d81203 and the host's EDX). The case asserts what rackvm controls and prints
 * what the host forces, so a change of kvm_pvm either way shows here. docs/hypervisor.md. */
static void test_cpuid_hides_what_kvm_pvm_cannot_run(void **state)
{
	static const uint8_t code[] = {
		0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, /* mov eax, 1 */
		0x66, 0x31, 0xc9,                   /* xor ecx, ecx */
		0x0f, 0xa2,                         /* cpuid */
		0x66, 0x89, 0xc8,                   /* mov eax, ecx */
		0x66, 0xe7, 0x10,                   /* out 0x10, eax: leaf 1 ECX */
		0x66, 0xb8, 0x07, 0x00, 0x00, 0x00, /* mov eax, 7 */
		0x66, 0x31, 0xc9,                   /* xor ecx, ecx */
		0x0f, 0xa2,                         /* cpuid */
		0x66, 0x89, 0xd8,                   /* mov eax, ebx */
		0x66, 0xe7, 0x11,                   /* out 0x11, eax: leaf 7 EBX */
		0x66, 0xb8, 0x0d, 0x00, 0x00, 0x00, /* mov eax, 0xd */
		0x66, 0x31, 0xc9,                   /* xor ecx, ecx */
		0x0f, 0xa2,                         /* cpuid */
		0x66, 0xe7, 0x12,                   /* out 0x12, eax: leaf 0xD EAX (XCR0 bits) */
		0xf4,                               /* hlt */
	};
	static struct accel_cpuid_entry t[256];
	const uint32_t l1_hidden = (1u << 13) | (1u << 22) | (1u << 26) | (1u << 28), l7_hidden = (1u << 10) |
				   (1u << 20) | (1u << 24);
	uint32_t got[3];
	size_t n = 0;
	struct guest g;

	REQUIRE_KVM();
	if (access("/sys/module/kvm_pvm", F_OK) != 0) {
		printf("SKIP: not a kvm_pvm host: its CPUID is KVM's, nothing hidden\n");
		skip();
		return;
	}
	/* the table rackvm gives KVM */
	assert_int_equal(kvm->supported_cpuid(t, 256, &n), 0);
	for (size_t i = 0; i < n; i++) {
		assert_int_not_equal(t[i].function, 0xd);
		if (t[i].function == 1)
			assert_int_equal(t[i].ecx & l1_hidden, 0);
		if (t[i].function == 7 && t[i].index == 0)
			assert_int_equal(t[i].ebx & l7_hidden, 0);
	}
	/* what the guest reads */
	guest_create(&g);
	guest_real(&g, code, sizeof(code));
	for (int i = 0; i < 3; i++) {
		guest_run(&g, false);
		assert_int_equal(g.x.reason, ACCEL_EXIT_IO);
		assert_int_equal(g.x.io.port, 0x10 + i);
		assert_int_equal(g.x.io.size, 4);
		memcpy(&got[i], g.x.io.data, 4);
	}
	guest_run(&g, false);
	assert_int_equal(g.x.reason, ACCEL_EXIT_HLT);
	printf("guest CPUID: leaf 1 ECX 0x%08x, leaf 7 EBX 0x%08x, leaf 0xD EAX 0x%08x\n", got[0], got[1], got[2]);
	assert_int_equal(got[0] & (1u << 13), 0);         /* CMPXCHG16B: the table decides, and hides it */
	assert_true(got[0] & (1u << 21));                 /* x2APIC: the table's (rackvm's APIC), not the host's */
	printf("kvm_pvm forces the host's bits despite the table: leaf 1 ECX%s%s%s, leaf 7 EBX%s%s%s, leaf 0xD EAX 0x%x\n",
	       got[0] & (1u << 22) ? " movbe" : "", got[0] & (1u << 26) ? " xsave" : "", got[0] & (1u << 28) ? " avx" : "",
	       got[1] & (1u << 10) ? " invpcid" : "", got[1] & (1u << 20) ? " smap" : "", got[1] & (1u << 24) ? " clwb" : "",
	       got[2]);
	guest_destroy(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_probe),
		cmocka_unit_test(test_real_mode_out_hlt),
		cmocka_unit_test(test_in_and_mmio_read),
		cmocka_unit_test(test_msr_exits),
		cmocka_unit_test(test_irq_window_and_inject),
		cmocka_unit_test(test_kick),
		cmocka_unit_test(test_kick_between_runs_is_taken_once),
		cmocka_unit_test(test_long_mode_out),
		cmocka_unit_test(test_int3_from_ring3_enters_ring0),
		cmocka_unit_test(test_tsc_rate_is_what_tsc_hz_says),
		cmocka_unit_test(test_cpuid_hides_what_kvm_pvm_cannot_run),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
