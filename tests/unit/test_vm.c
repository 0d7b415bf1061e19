/* SPDX-License-Identifier: MIT */
/*
 * vm/vcpu: the node VM driven by a scripted fake accelerator (accel_choose and the firmware loader are wrapped
 * with -Wl,--wrap), so the state machine, exit dispatch, INIT/SIPI, interrupt injection, MSR policy and the stop
 * paths are tested without KVM and without the interpreter. The devices, bus, IOAPIC, local APIC and APIC bus
 * are the real ones.
 *
 * A fake vCPU runs a script: each run() returns the next step's exit; the result of a read (IN, MMIO read,
 * RDMSR) is recorded at the following run(), as a real backend consumes it. Past its end a script "spins": run()
 * waits for a kick and returns ACCEL_EXIT_KICK.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "hypervisor/accel.h"
#include "hypervisor/fw.h"
#include "hypervisor/vm.h"
#include "util/clock.h"
#include "util/log.h"

enum step_kind { S_END = 0, S_OUT, S_IN, S_MMIO_W, S_MMIO_R, S_RDMSR, S_WRMSR, S_HLT, S_SHUTDOWN, S_ERROR,
		 S_WAIT_IRQ };

struct step {
	enum step_kind kind;
	uint64_t addr;       /* port, gpa, msr */
	uint8_t size;
	uint64_t val;
};

#define MAX_STEPS 32
#define MAX_FAKE 4

struct fake_script {
	struct step steps[MAX_STEPS];
	/* recorded */
	uint64_t result[MAX_STEPS];
	bool msr_error[MAX_STEPS];
	uint64_t first_run_cs_base;
	bool ran;
	int injected[8];
	_Atomic unsigned n_injected;
};

static struct fake_script scripts[MAX_FAKE];

struct accel_vcpu {
	unsigned index;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	unsigned pc;
	struct accel_exit *last;
	int last_step;
	atomic_bool kicked;
	int pending_irq;
};

static int fake_probe(char *why, size_t len)
{
	return 0;
}

static int fake_vm_create(const struct accel_vm_config *cfg, struct accel_vm **out)
{
	*out = (struct accel_vm *)calloc(1, 16);
	return *out ? 0 : -ENOMEM;
}

static void fake_vm_destroy(struct accel_vm *vm)
{
	free(vm);
}

static int fake_vcpu_create(struct accel_vm *vm, unsigned index, uint32_t apic_id, struct accel_vcpu **out)
{
	struct accel_vcpu *v = calloc(1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	v->index = index;
	v->last_step = -1;
	v->pending_irq = -1;
	*out = v;
	return 0;
}

static void fake_vcpu_destroy(struct accel_vcpu *v)
{
	free(v);
}

static int fake_get_regs(struct accel_vcpu *v, struct kvm_regs *r)
{
	*r = v->regs;
	return 0;
}

static int fake_set_regs(struct accel_vcpu *v, const struct kvm_regs *r)
{
	v->regs = *r;
	return 0;
}

static int fake_get_sregs(struct accel_vcpu *v, struct kvm_sregs *s)
{
	*s = v->sregs;
	return 0;
}

static int fake_set_sregs(struct accel_vcpu *v, const struct kvm_sregs *s)
{
	v->sregs = *s;
	return 0;
}

static int fake_run(struct accel_vcpu *v, const struct accel_entry *entry, struct accel_exit *x)
{
	struct fake_script *s = &scripts[v->index];
	const struct step *st;

	if (!s->ran) {
		s->ran = true;
		s->first_run_cs_base = v->sregs.cs.base;
	}
	/* consume the previous read */
	if (v->last_step >= 0 && v->last) {
		const struct step *p = &s->steps[v->last_step];

		if (p->kind == S_IN)
			memcpy(&s->result[v->last_step], v->last->io.data, p->size);
		else if (p->kind == S_MMIO_R)
			memcpy(&s->result[v->last_step], v->last->mmio.data, p->size);
		else if (p->kind == S_RDMSR || p->kind == S_WRMSR) {
			s->result[v->last_step] = v->last->msr.value;
			s->msr_error[v->last_step] = v->last->msr.error;
		}
	}
	v->last_step = -1;
	if (v->pending_irq >= 0) {
		unsigned n = atomic_fetch_add(&s->n_injected, 1);

		if (n < 8)
			s->injected[n] = v->pending_irq;
		v->pending_irq = -1;
	}
	memset(x, 0, sizeof(*x));
	v->last = x;
	x->irq_ready = true;
	if (atomic_exchange(&v->kicked, false)) {
		x->reason = ACCEL_EXIT_KICK;
		return 0;
	}
	st = &s->steps[v->pc];
	if (st->kind == S_WAIT_IRQ && atomic_load(&s->n_injected) > 0)
		st = &s->steps[++v->pc];
	if (st->kind == S_END || st->kind == S_WAIT_IRQ) {
		while (!atomic_exchange(&v->kicked, false))
			usleep(200);
		x->reason = entry && entry->request_irq_window ? ACCEL_EXIT_IRQ_WINDOW : ACCEL_EXIT_KICK;
		return 0;
	}
	v->last_step = (int)v->pc++;
	v->regs.rip += 2;
	switch (st->kind) {
	case S_OUT:
	case S_IN: {
		static _Thread_local uint8_t buf[8];

		x->reason = ACCEL_EXIT_IO;
		x->io.port = (uint16_t)st->addr;
		x->io.size = st->size;
		x->io.in = st->kind == S_IN;
		x->io.count = 1;
		x->io.data = buf;
		memcpy(buf, &st->val, sizeof(buf));
		break;
	}
	case S_MMIO_W:
	case S_MMIO_R:
		x->reason = ACCEL_EXIT_MMIO;
		x->mmio.gpa = st->addr;
		x->mmio.size = st->size;
		x->mmio.write = st->kind == S_MMIO_W;
		memcpy(x->mmio.data, &st->val, 8);
		break;
	case S_RDMSR:
	case S_WRMSR:
		x->reason = st->kind == S_RDMSR ? ACCEL_EXIT_MSR_READ : ACCEL_EXIT_MSR_WRITE;
		x->msr.index = (uint32_t)st->addr;
		x->msr.value = st->val;
		break;
	case S_HLT:
		x->reason = ACCEL_EXIT_HLT;
		break;
	case S_SHUTDOWN:
		x->reason = ACCEL_EXIT_SHUTDOWN;
		break;
	case S_ERROR:
		x->reason = ACCEL_EXIT_ERROR;
		snprintf(x->error.msg, sizeof(x->error.msg), "scripted failure");
		break;
	default:
		x->reason = ACCEL_EXIT_KICK;
		break;
	}
	return 0;
}

static atomic_uint fake_kicks;     /* accelerator kicks, every vCPU */

static void fake_kick(struct accel_vcpu *v)
{
	atomic_fetch_add(&fake_kicks, 1);
	atomic_store(&v->kicked, true);
}

static int fake_inject_irq(struct accel_vcpu *v, uint8_t vector)
{
	v->pending_irq = vector;
	return 0;
}

static int fake_inject_nmi(struct accel_vcpu *v)
{
	return 0;
}

static uint64_t fake_read_tsc(struct accel_vcpu *v)
{
	return clock_now_ns() * 2;   /* VM_TSC_HZ = 2 GHz */
}

static const struct accel_ops fake_ops = {
	.name = "fake", .probe = fake_probe, .vm_create = fake_vm_create, .vm_destroy = fake_vm_destroy,
	.vcpu_create = fake_vcpu_create, .vcpu_destroy = fake_vcpu_destroy, .get_regs = fake_get_regs,
	.set_regs = fake_set_regs, .get_sregs = fake_get_sregs, .set_sregs = fake_set_sregs, .run = fake_run,
	.kick = fake_kick, .inject_irq = fake_inject_irq, .inject_nmi = fake_inject_nmi, .read_tsc = fake_read_tsc,
};

/* ---- wrapped symbols ---- */
const struct accel_ops *__wrap_accel_choose(const char *name, char *why, size_t why_len);
const struct accel_ops *__wrap_accel_choose(const char *name, char *why, size_t why_len)
{
	snprintf(why, why_len, "test");
	return &fake_ops;
}

int __wrap_fw_setup(const struct fw_config *cfg, void *ram, struct fw_boot *out, char *err, size_t err_len);
int __wrap_fw_setup(const struct fw_config *cfg, void *ram, struct fw_boot *out, char *err, size_t err_len)
{
	memset(out, 0, sizeof(*out));
	out->kind = FW_MULTIBOOT;
	out->regs.rip = 0x100000;
	out->regs.rflags = 2;
	out->sregs.cs.base = 0;
	out->sregs.cs.selector = 0x10;
	return 0;
}

void __wrap_fw_boot_release(struct fw_boot *b);
void __wrap_fw_boot_release(struct fw_boot *b)
{
}

/* ---- helpers ---- */

static bool make_strict_io;      /* vm_make's strict_io (vm.h) */

static struct vm *vm_make(unsigned n)
{
	struct vm_config cfg = {
		.accel = "fake", .n_vcpus = n, .ram_size = 64ull << 20, .n_nodes = 1, .kernel = "fake.elf",
		.console_fd = STDOUT_FILENO, .strict_io = make_strict_io,
	};
	struct vm *vm = NULL;

	assert_int_equal(vm_create(&cfg, &vm), 0);
	return vm;
}

static void scripts_reset(void)
{
	memset(scripts, 0, sizeof(scripts));
}

#define DEBUG_EXIT 0xf4
#define APIC 0xfee00000ull

/* ---- tests ---- */

static void test_debug_exit_code(void **state)
{
	struct vm *vm;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_OUT, DEBUG_EXIT, 1, 3 };
	vm = vm_make(1);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), (3 << 1) | 1);
	assert_int_equal(vm_vcpu_state(vm, 0), VM_VCPU_STOPPED);
	vm_destroy(vm);
}

/* With strict_io, an access to a port nothing claims is a guest error: the VM stops with status 1. */
static void test_unknown_port_stops_with_1(void **state)
{
	struct vm *vm;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_OUT, 0x1234, 1, 7 };
	scripts[0].steps[1] = (struct step){ S_OUT, DEBUG_EXIT, 1, 5 };  /* must not be reached (status 11) */
	make_strict_io = true;
	vm = vm_make(1);
	make_strict_io = false;
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), 1);
	vm_destroy(vm);
}

/* By default a port nothing claims behaves as on a PC bus: reads give all-ones at every size, a write is dropped,
 * each is counted, and the guest carries on. */
static void test_unclaimed_port_all_ones_by_default(void **state)
{
	struct vm_stats st;
	struct vm *vm;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_IN, 0x1234, 1, 0 };
	scripts[0].steps[1] = (struct step){ S_IN, 0x1236, 2, 0 };
	scripts[0].steps[2] = (struct step){ S_IN, 0x1238, 4, 0 };
	scripts[0].steps[3] = (struct step){ S_OUT, 0x1234, 1, 7 };
	scripts[0].steps[4] = (struct step){ S_OUT, DEBUG_EXIT, 1, 3 };
	vm = vm_make(1);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), (3 << 1) | 1);
	assert_int_equal(scripts[0].result[0], 0xff);
	assert_int_equal(scripts[0].result[1], 0xffff);
	assert_int_equal(scripts[0].result[2], 0xffffffffull);
	vm_get_stats(vm, &st);
	assert_int_equal(st.io_unclaimed, 4);
	vm_destroy(vm);
}

static void test_unknown_mmio_and_shutdown_and_error(void **state)
{
	static const enum step_kind kinds[] = { S_MMIO_R, S_SHUTDOWN, S_ERROR };

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		struct vm *vm;

		scripts_reset();
		scripts[0].steps[0] = (struct step){ kinds[i], 0xd0000000ull, 4, 0 };
		scripts[0].steps[1] = (struct step){ S_OUT, DEBUG_EXIT, 1, 0 };
		vm = vm_make(1);
		assert_int_equal(vm_start(vm), 0);
		assert_int_equal(vm_wait(vm), 1);
		vm_destroy(vm);
	}
}

static void test_port80_ignored_and_in_reads(void **state)
{
	struct vm *vm;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_OUT, 0x80, 1, 0x55 };
	scripts[0].steps[1] = (struct step){ S_IN, 0x80, 1, 0 };
	scripts[0].steps[2] = (struct step){ S_OUT, DEBUG_EXIT, 1, 2 };
	vm = vm_make(1);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), 5);
	assert_int_equal(scripts[0].result[1] & 0xff, 0xff);
	vm_destroy(vm);
}

static void test_msr_policy(void **state)
{
	struct vm *vm;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_RDMSR, 0x1b, 8, 0 };           /* IA32_APIC_BASE: lapic */
	scripts[0].steps[1] = (struct step){ S_RDMSR, 0x8b, 8, 0x1234 };      /* harmless: 0 */
	scripts[0].steps[2] = (struct step){ S_RDMSR, 0xdeadbeef, 8, 0 };     /* unknown: #GP */
	scripts[0].steps[3] = (struct step){ S_WRMSR, 0x2ff, 8, 6 };          /* harmless write */
	scripts[0].steps[4] = (struct step){ S_OUT, DEBUG_EXIT, 1, 0 };
	vm = vm_make(1);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), 1);
	assert_int_equal(scripts[0].result[0] & ~0xfffull, APIC);
	assert_true(scripts[0].result[0] & 0x100);    /* BSP flag */
	assert_false(scripts[0].msr_error[0]);
	assert_int_equal(scripts[0].result[1], 0);
	assert_false(scripts[0].msr_error[1]);
	assert_true(scripts[0].msr_error[2]);
	assert_false(scripts[0].msr_error[3]);
	vm_destroy(vm);
}

/* BSP enables its APIC, sends INIT then SIPI (vector 0x08) to APIC 1; the AP must start with CS base 0x8000 and
 * then exit the machine. */
static void test_init_sipi_starts_ap(void **state)
{
	struct vm *vm;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_MMIO_W, APIC + 0xf0, 4, 0x1ff };
	scripts[0].steps[1] = (struct step){ S_MMIO_W, APIC + 0x310, 4, 1u << 24 };
	scripts[0].steps[2] = (struct step){ S_MMIO_W, APIC + 0x300, 4, 0x4500 };
	scripts[0].steps[3] = (struct step){ S_MMIO_W, APIC + 0x310, 4, 1u << 24 };
	scripts[0].steps[4] = (struct step){ S_MMIO_W, APIC + 0x300, 4, 0x4608 };
	scripts[0].steps[5] = (struct step){ S_HLT, 0, 0, 0 };
	scripts[1].steps[0] = (struct step){ S_OUT, DEBUG_EXIT, 1, 4 };
	vm = vm_make(2);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), 9);
	assert_true(scripts[1].ran);
	assert_int_equal(scripts[1].first_run_cs_base, 0x8000);
	vm_destroy(vm);
}

/* A fixed self-IPI (vector 0x40) is injected once the vCPU can take it. */
static void test_self_ipi_injected(void **state)
{
	struct vm *vm;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_MMIO_W, APIC + 0xf0, 4, 0x1ff };
	scripts[0].steps[1] = (struct step){ S_MMIO_W, APIC + 0x300, 4, 0x40040 };  /* shorthand self */
	scripts[0].steps[2] = (struct step){ S_WAIT_IRQ, 0, 0, 0 };
	scripts[0].steps[3] = (struct step){ S_OUT, DEBUG_EXIT, 1, 0 };
	vm = vm_make(1);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), 1);
	assert_true(atomic_load(&scripts[0].n_injected) >= 1);
	assert_int_equal(scripts[0].injected[0], 0x40);
	vm_destroy(vm);
}

/* HLT with IF=1 and the APIC timer armed one-shot: the vCPU wakes when the timer fires and the vector is injected. */
static void test_hlt_wakes_on_apic_timer(void **state)
{
	struct vm *vm;
	uint64_t t0 = clock_now_ns();

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_MMIO_W, APIC + 0xf0, 4, 0x1ff };
	scripts[0].steps[1] = (struct step){ S_MMIO_W, APIC + 0x3e0, 4, 0xb };      /* divide by 1 */
	scripts[0].steps[2] = (struct step){ S_MMIO_W, APIC + 0x320, 4, 0x41 };     /* one-shot, vector 0x41 */
	scripts[0].steps[3] = (struct step){ S_MMIO_W, APIC + 0x380, 4, 250000 };   /* 10 ms at 25 MHz */
	scripts[0].steps[4] = (struct step){ S_HLT, 0, 0, 0 };
	scripts[0].steps[5] = (struct step){ S_WAIT_IRQ, 0, 0, 0 };
	scripts[0].steps[6] = (struct step){ S_OUT, DEBUG_EXIT, 1, 0 };
	vm = vm_make(1);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), 1);
	assert_int_equal(scripts[0].injected[0], 0x41);
	assert_true(clock_now_ns() - t0 >= 9 * NSEC_PER_MSEC);
	vm_destroy(vm);
}

/* An interrupt for a halted vCPU wakes it through its condvar alone: no accelerator kick (on kvm that would leave
 * a signal pending that ends its next KVM_RUN at once, for nothing). The wake still injects the vector. */
static void test_halted_vcpu_woken_without_accel_kick(void **state)
{
	struct irq_msg m = { .vector = 0x42, .delivery = IRQ_FIXED, .shorthand = IRQ_SH_NONE, .dest = 0,
			     .source = ~0u };
	struct vm_stats st;
	struct vm *vm;
	unsigned kicks;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_MMIO_W, APIC + 0xf0, 4, 0x1ff };
	scripts[0].steps[1] = (struct step){ S_HLT, 0, 0, 0 };
	scripts[0].steps[2] = (struct step){ S_WAIT_IRQ, 0, 0, 0 };
	scripts[0].steps[3] = (struct step){ S_HLT, 0, 0, 0 };       /* and halted again until the test stops it */
	vm = vm_make(1);
	assert_int_equal(vm_start(vm), 0);
	for (int i = 0; i < 500; i++) {           /* until the vCPU has halted */
		vm_get_stats(vm, &st);
		if (st.exits_hlt)
			break;
		usleep(10000);
	}
	assert_int_equal(st.exits_hlt, 1);
	usleep(20000);                            /* and sleeps in its wait */
	kicks = atomic_load(&fake_kicks);
	vm_remote_irq(vm, &m);
	for (int i = 0; i < 500; i++) {           /* woken, injected, halted again */
		vm_get_stats(vm, &st);
		if (st.exits_hlt >= 2)
			break;
		usleep(10000);
	}
	assert_int_equal(st.exits_hlt, 2);
	assert_int_equal(atomic_load(&fake_kicks), kicks);
	vm_stop(vm, 0);
	assert_int_equal(vm_wait(vm), 0);
	assert_int_equal(scripts[0].injected[0], 0x42);     /* read once the vCPU thread is joined */
	vm_destroy(vm);
}

/* A vCPU spinning in guest code (no exits) is kicked out by the timer thread when its APIC timer expires. */
static void test_timer_kicks_running_vcpu(void **state)
{
	struct vm *vm;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_MMIO_W, APIC + 0xf0, 4, 0x1ff };
	scripts[0].steps[1] = (struct step){ S_MMIO_W, APIC + 0x3e0, 4, 0xb };
	scripts[0].steps[2] = (struct step){ S_MMIO_W, APIC + 0x320, 4, 0x42 };
	scripts[0].steps[3] = (struct step){ S_MMIO_W, APIC + 0x380, 4, 125000 };   /* 5 ms */
	scripts[0].steps[4] = (struct step){ S_WAIT_IRQ, 0, 0, 0 };                          /* spins until kicked */
	scripts[0].steps[5] = (struct step){ S_OUT, DEBUG_EXIT, 1, 0 };
	vm = vm_make(1);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), 1);
	assert_int_equal(scripts[0].injected[0], 0x42);
	vm_destroy(vm);
}

/* PAUSE/RESUME/STOP messages; an illegal one (RESUME while RUNNING) is reported, not fatal. vm_stop while every
 * vCPU is halted or waiting for SIPI returns the given code. */
static void test_state_machine_and_stop(void **state)
{
	unsigned long errs;
	struct vm *vm;

	scripts_reset();
	scripts[0].steps[0] = (struct step){ S_HLT, 0, 0, 0 };
	vm = vm_make(2);
	assert_int_equal(vm_vcpu_wait_state(vm, 0, VM_VCPU_PAUSED, 5 * NSEC_PER_SEC), 0);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_vcpu_wait_state(vm, 0, VM_VCPU_RUNNING, 5 * NSEC_PER_SEC), 0);
	assert_int_equal(vm_vcpu_wait_state(vm, 1, VM_VCPU_RUNNING, 5 * NSEC_PER_SEC), 0);
	assert_int_equal(vm_vcpu_post(vm, 0, VM_VCPU_PAUSE), 0);
	assert_int_equal(vm_vcpu_wait_state(vm, 0, VM_VCPU_PAUSED, 5 * NSEC_PER_SEC), 0);
	assert_int_equal(vm_vcpu_post(vm, 0, VM_VCPU_RESUME), 0);
	assert_int_equal(vm_vcpu_wait_state(vm, 0, VM_VCPU_RUNNING, 5 * NSEC_PER_SEC), 0);
	errs = log_error_count();
	log_set_quiet(true);
	assert_int_equal(vm_vcpu_post(vm, 1, VM_VCPU_RESUME), 0);   /* illegal: already RUNNING */
	for (int i = 0; i < 500 && log_error_count() == errs; i++)
		usleep(10000);
	log_set_quiet(false);
	assert_true(log_error_count() > errs);
	assert_int_equal(vm_vcpu_state(vm, 1), VM_VCPU_RUNNING);
	assert_int_equal(vm_vcpu_post(vm, 7, VM_VCPU_PAUSE), -ENOENT);
	vm_stop(vm, 130);
	vm_stop(vm, 143);   /* the first code wins */
	assert_int_equal(vm_wait(vm), 130);
	assert_int_equal(vm_vcpu_state(vm, 0), VM_VCPU_STOPPED);
	assert_int_equal(vm_vcpu_state(vm, 1), VM_VCPU_STOPPED);
	assert_int_equal(vm_vcpu_post(vm, 0, VM_VCPU_RESUME), -ESRCH);
	vm_destroy(vm);
}

static void test_create_rejects_bad_config(void **state)
{
	struct vm_config cfg = { .accel = "fake", .n_vcpus = 0, .ram_size = 64ull << 20, .kernel = "k" };
	struct vm *vm = NULL;

	assert_int_equal(vm_create(&cfg, &vm), -EINVAL);
	cfg.n_vcpus = VM_MAX_VCPUS + 1;
	assert_int_equal(vm_create(&cfg, &vm), -EINVAL);
	cfg.n_vcpus = 1;
	cfg.ram_size = 4096;
	assert_int_equal(vm_create(&cfg, &vm), -EINVAL);
	assert_null(vm);
}

/* A destroyed-without-start VM joins its (paused) threads. */
static void test_destroy_without_start(void **state)
{
	struct vm *vm;

	scripts_reset();
	vm = vm_make(4);
	vm_destroy(vm);
}

/* ---- cluster hooks: the local half of a spanning VM ---- */

struct hook_log {
	_Atomic unsigned forwarded, irqs_sent, broadcasts, eois;
	_Atomic int eoi_vector;
	uint64_t fwd_addr, fwd_data;
	uint32_t fwd_node, irq_node, irq_dest;
	int bcast_code;
};
static struct hook_log hlog;

static int hook_forward_io(void *opaque, uint32_t node, enum bus_space space, struct io_access *a)
{
	hlog.fwd_node = node;
	hlog.fwd_addr = a->addr;
	hlog.fwd_data = a->data;
	if (!a->write)
		a->data = 0x77;
	atomic_fetch_add(&hlog.forwarded, 1);
	return 0;
}

static int hook_send_irq(void *opaque, uint32_t node, const struct irq_msg *m)
{
	hlog.irq_node = node;
	hlog.irq_dest = m->dest;
	atomic_fetch_add(&hlog.irqs_sent, 1);
	return 0;
}

static int hook_send_logical(void *opaque, uint32_t node, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	return 0;
}

static void hook_exit_broadcast(void *opaque, int code, const char *why)
{
	hlog.bcast_code = code;
	atomic_fetch_add(&hlog.broadcasts, 1);
}

static void hook_forward_eoi(void *opaque, uint32_t node, uint8_t vector)
{
	atomic_store(&hlog.eoi_vector, vector);
	atomic_fetch_add(&hlog.eois, 1);
}

static const struct vm_cluster_hooks hooks = {
	.apic = { .send_irq = hook_send_irq, .send_logical = hook_send_logical },
	.forward_io = hook_forward_io,
	.exit_broadcast = hook_exit_broadcast,
	.forward_eoi = hook_forward_eoi,
};

static struct vm *vm_make_cluster(unsigned n, const uint32_t *node_of, uint32_t self, uint32_t io_node)
{
	struct vm_config cfg = {
		.accel = "fake", .n_vcpus = n, .ram_size = 64ull << 20, .n_nodes = 2, .kernel = "fake.elf",
		.console_fd = STDOUT_FILENO, .node_of = node_of, .self = self, .io_node = io_node, .hooks = &hooks,
	};
	struct vm *vm = NULL;

	assert_int_equal(vm_create(&cfg, &vm), 0);
	return vm;
}

/* Node 0 owns the devices and vCPU 0; vCPU 1 is on node 1: not created here, an IPI to it goes through the
 * remote hook, the guest's exit is broadcast. */
static void test_cluster_io_node(void **state)
{
	static const uint32_t node_of[2] = { 0, 1 };
	struct vm_stats st;
	struct vm *vm;

	scripts_reset();
	memset(&hlog, 0, sizeof(hlog));
	scripts[0].steps[0] = (struct step){ S_MMIO_W, APIC + 0xf0, 4, 0x1ff };
	scripts[0].steps[1] = (struct step){ S_MMIO_W, APIC + 0x310, 4, 1u << 24 };
	scripts[0].steps[2] = (struct step){ S_MMIO_W, APIC + 0x300, 4, 0x4050 };     /* fixed 0x50 to APIC 1 */
	scripts[0].steps[3] = (struct step){ S_OUT, DEBUG_EXIT, 1, 1 };
	vm = vm_make_cluster(2, node_of, 0, 0);
	assert_int_equal(vm_vcpu_post(vm, 1, VM_VCPU_PAUSE), -ENOENT);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), 3);
	assert_int_equal(atomic_load(&hlog.irqs_sent), 1);
	assert_int_equal(hlog.irq_node, 1);
	assert_int_equal(hlog.irq_dest, 1);
	assert_int_equal(atomic_load(&hlog.broadcasts), 1);
	assert_int_equal(hlog.bcast_code, 3);
	assert_int_equal(atomic_load(&hlog.forwarded), 0);
	vm_get_stats(vm, &st);
	assert_int_equal(st.n_local_vcpus, 1);
	vm_destroy(vm);
}

/* Node 1 runs vCPU 0 but not the devices: port accesses are forwarded to node 0 (an IN gets the hook's value);
 * the exit comes from a peer (vm_remote_exit) and is not broadcast back. */
static void test_cluster_forwarding_node(void **state)
{
	static const uint32_t node_of[1] = { 1 };
	struct vm_stats st;
	struct vm *vm;

	scripts_reset();
	memset(&hlog, 0, sizeof(hlog));
	scripts[0].steps[0] = (struct step){ S_OUT, 0x3f8, 1, 0x41 };
	scripts[0].steps[1] = (struct step){ S_IN, 0x3fd, 1, 0 };
	scripts[0].steps[2] = (struct step){ S_IN, 0x608, 4, 0 };      /* the ACPI PM timer: read here, not forwarded */
	vm = vm_make_cluster(1, node_of, 1, 0);
	assert_int_equal(vm_start(vm), 0);
	for (int i = 0; i < 500 && atomic_load(&hlog.forwarded) < 2; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&hlog.forwarded), 2);
	assert_int_equal(hlog.fwd_node, 0);
	assert_int_equal(hlog.fwd_addr, 0x3fd);
	vm_remote_exit(vm, 9, "peer exit");
	assert_int_equal(vm_wait(vm), 9);
	assert_int_equal(atomic_load(&hlog.broadcasts), 0);
	assert_int_equal(scripts[0].result[1] & 0xff, 0x77);
	assert_true(scripts[0].result[2] != 0x77 && scripts[0].result[2] != 0);
	vm_get_stats(vm, &st);
	assert_int_equal(st.io_forwarded, 2);
	vm_destroy(vm);
}

/* A level-triggered interrupt arriving from another node (vm_remote_irq) is injected; its EOI on this node (no
 * IOAPIC here) goes to the io node through forward_eoi. */
static void test_cluster_level_eoi_forwarded(void **state)
{
	static const uint32_t node_of[1] = { 1 };
	struct irq_msg m = { .vector = 0x60, .delivery = IRQ_FIXED, .dest = 0, .level = true, .trigger_level = true,
			     .source = ~0u };
	struct vm *vm;

	scripts_reset();
	memset(&hlog, 0, sizeof(hlog));
	scripts[0].steps[0] = (struct step){ S_MMIO_W, APIC + 0xf0, 4, 0x1ff };
	scripts[0].steps[1] = (struct step){ S_WAIT_IRQ, 0, 0, 0 };
	scripts[0].steps[2] = (struct step){ S_MMIO_W, APIC + 0xb0, 4, 0 };     /* EOI */
	vm = vm_make_cluster(1, node_of, 1, 0);
	assert_int_equal(vm_start(vm), 0);
	for (int i = 0; i < 250 && atomic_load(&scripts[0].n_injected) == 0; i++) {
		vm_remote_irq(vm, &m);    /* until the APIC is software-enabled and takes it */
		usleep(20000);
	}
	for (int i = 0; i < 250 && atomic_load(&hlog.eois) == 0; i++)
		usleep(20000);
	assert_int_equal(scripts[0].injected[0], 0x60);
	assert_true(atomic_load(&hlog.eois) >= 1);
	assert_int_equal(atomic_load(&hlog.eoi_vector), 0x60);
	vm_stop(vm, 0);
	assert_int_equal(vm_wait(vm), 0);
	vm_destroy(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_debug_exit_code),
		cmocka_unit_test(test_unknown_port_stops_with_1),
		cmocka_unit_test(test_unclaimed_port_all_ones_by_default),
		cmocka_unit_test(test_unknown_mmio_and_shutdown_and_error),
		cmocka_unit_test(test_port80_ignored_and_in_reads),
		cmocka_unit_test(test_msr_policy),
		cmocka_unit_test(test_init_sipi_starts_ap),
		cmocka_unit_test(test_self_ipi_injected),
		cmocka_unit_test(test_hlt_wakes_on_apic_timer),
		cmocka_unit_test(test_timer_kicks_running_vcpu),
		cmocka_unit_test(test_halted_vcpu_woken_without_accel_kick),
		cmocka_unit_test(test_state_machine_and_stop),
		cmocka_unit_test(test_create_rejects_bad_config),
		cmocka_unit_test(test_destroy_without_start),
		cmocka_unit_test(test_cluster_io_node),
		cmocka_unit_test(test_cluster_forwarding_node),
		cmocka_unit_test(test_cluster_level_eoi_forwarded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
