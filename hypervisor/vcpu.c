// SPDX-License-Identifier: MIT
/*
 * vCPU threads: an explicit state machine driven by messages, and the run loop.
 *
 * States (vm.h): CREATED -> PAUSED <-> RUNNING -> STOPPED. The thread is started by vm_create and moves itself
 * CREATED -> PAUSED; vm_start posts RESUME. Messages (PAUSE, RESUME, STOP) wait in a small FIFO mailbox under
 * v->lock and are applied in order at the top of each loop iteration; an illegal transition is reported as a bug
 * (one error line) and ignored. The VM stopping (vm->stopping) is STOP for everyone.
 *
 * Inside RUNNING there are three sub-states that are not states of the machine (a migration may happen in any):
 * executing guest code, halted (HLT; woken by an interrupt when IF=1, by NMI/INIT/SIPI always) and waiting for
 * SIPI (every AP at start, any vCPU after INIT).
 *
 * One iteration while RUNNING:
 *   1. mailbox; record the kick sequence number (any kick after this point wakes the waits below);
 *   2. local APIC events: INIT (reset to the SDM's state after INIT + lapic_reset, then wait for SIPI), SIPI (real
 *      mode at vector << 12), NMI (injected);
 *   3. APIC timer: if its deadline passed, lapic_timer_tick;
 *   4. halted / waiting for SIPI: sleep on v->cond until a kick, a message, or the timer deadline;
 *   5. interrupt: the highest deliverable vector is injected if the last exit said irq_ready (then lapic_ack),
 *      otherwise an interrupt window is requested;
 *   6. publish the timer deadline (the VM's timer thread kicks us out of guest code when it passes), run;
 *   7. dispatch the exit: port I/O -> bus (or the io node), MMIO -> this vCPU's APIC page or bus, MSR -> lapic or
 *      the harmless list or #GP, HLT, shutdown/errors -> report + stop.
 */
#include "hypervisor/vm_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "util/log.h"

static _Thread_local struct vcpu *vcpu_current;

static const char *const vcpu_state_names[] = { "CREATED", "PAUSED", "RUNNING", "STOPPED" };
static const char *const vcpu_msg_names[] = { "?", "PAUSE", "RESUME", "STOP" };

/* ---- wake-up and mailbox --------------------------------------------------------------------------------- */

/* Wake v: a condvar broadcast for a vCPU that waits (halted, paused, waiting for SIPI), and the accelerator's kick
 * (KVM: immediate_exit + a signal) only for one on its way into guest code or in it. The two sides order their
 * flags as in Dekker's algorithm: here kick_seq, then in_guest; there in_guest, then kick_seq (vcpu_running), all
 * sequentially consistent: either the vCPU sees the new kick_seq and goes round again, or we see in_guest and
 * kick it out. A halted vCPU on kvm is thereby not left a pending signal that would end its next KVM_RUN at once
 * for nothing (~10 us of ioctl on kvm_pvm), and its waker saves the tgkill. */
void vcpu_kick(struct vcpu *v)
{
	pthread_mutex_lock(&v->lock);
	atomic_fetch_add(&v->kick_seq, 1);
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	if (vcpu_current != v && atomic_load(&v->in_guest))
		v->vm->accel->kick(v->av);
}

int vcpu_post(struct vcpu *v, enum vm_vcpu_msg msg)
{
	int err = 0;

	pthread_mutex_lock(&v->lock);
	if (atomic_load(&v->state) == VM_VCPU_STOPPED)
		err = -ESRCH;
	else if (v->mbox_len == VM_MAILBOX_LEN)
		err = -EAGAIN;
	else
		v->mbox[(v->mbox_head + v->mbox_len++) % VM_MAILBOX_LEN] = msg;
	atomic_fetch_add(&v->kick_seq, 1);
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	if (!err)
		v->vm->accel->kick(v->av);
	return err;
}

static void vcpu_set_state(struct vcpu *v, enum vm_vcpu_state st)
{
	pthread_mutex_lock(&v->lock);
	atomic_store(&v->state, (int)st);
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	pr_debug("vcpu %u: %s", v->index, vcpu_state_names[st]);
}

/* Apply one message to the state machine; false for an illegal transition (reported, ignored). */
static bool vcpu_apply(struct vcpu *v, enum vm_vcpu_msg msg)
{
	enum vm_vcpu_state st = (enum vm_vcpu_state)atomic_load(&v->state), next;

	switch (msg) {
	case VM_VCPU_PAUSE:
		next = st == VM_VCPU_RUNNING ? VM_VCPU_PAUSED : st;
		if (st != VM_VCPU_RUNNING)
			goto illegal;
		break;
	case VM_VCPU_RESUME:
		next = VM_VCPU_RUNNING;
		if (st != VM_VCPU_PAUSED)
			goto illegal;
		break;
	case VM_VCPU_STOP:
		next = VM_VCPU_STOPPED;
		if (st != VM_VCPU_PAUSED && st != VM_VCPU_RUNNING)
			goto illegal;
		break;
	default:
		pr_err("bug: vcpu %u: unknown message %d", v->index, (int)msg);
		return false;
	}
	vcpu_set_state(v, next);
	return true;
illegal:
	pr_err("bug: vcpu %u: illegal transition %s --%s--> (ignored)", v->index, vcpu_state_names[st],
	       vcpu_msg_names[msg]);
	return false;
}

/* Take every queued message; returns the kick sequence number seen (under the same lock). */
static uint64_t vcpu_mailbox(struct vcpu *v)
{
	enum vm_vcpu_msg msgs[VM_MAILBOX_LEN];
	unsigned n;
	uint64_t seq;

	pthread_mutex_lock(&v->lock);
	n = v->mbox_len;
	for (unsigned i = 0; i < n; i++)
		msgs[i] = v->mbox[(v->mbox_head + i) % VM_MAILBOX_LEN];
	v->mbox_head = (v->mbox_head + n) % VM_MAILBOX_LEN;
	v->mbox_len = 0;
	seq = v->kick_seq;
	pthread_mutex_unlock(&v->lock);
	for (unsigned i = 0; i < n; i++)
		vcpu_apply(v, msgs[i]);
	return seq;
}

/* Sleep until a kick after `seq`, a message, the VM stopping, or deadline_ns (host monotonic; UINT64_MAX none). */
static void vcpu_wait(struct vcpu *v, uint64_t seq, uint64_t deadline_ns)
{
	pthread_mutex_lock(&v->lock);
	while (v->kick_seq == seq && v->mbox_len == 0 && !atomic_load(&v->vm->stopping)) {
		if (deadline_ns == UINT64_MAX) {
			pthread_cond_wait(&v->cond, &v->lock);
		} else {
			struct timespec ts = clock_timespec(deadline_ns);

			if (clock_now_ns() >= deadline_ns ||
			    pthread_cond_timedwait(&v->cond, &v->lock, &ts) == ETIMEDOUT)
				break;
		}
	}
	pthread_mutex_unlock(&v->lock);
}

/* ---- register state -------------------------------------------------------------------------------------- */

static void seg_real(struct kvm_segment *s, uint16_t sel, uint64_t base, uint8_t type)
{
	*s = (struct kvm_segment){ .base = base, .limit = 0xffff, .selector = sel, .type = type, .present = 1,
				   .s = 1 };
}

/* The SDM's "state after INIT" (vol. 3, table 10-1), EFER and CR4 cleared; then CS:IP for a SIPI if wanted. */
static int vcpu_reset_regs(struct vcpu *v, bool sipi, uint8_t vector)
{
	const struct accel_ops *a = v->vm->accel;
	struct kvm_sregs s;
	struct kvm_regs r;
	int err;

	err = a->get_sregs(v->av, &s);
	if (err)
		return err;
	if (sipi)
		seg_real(&s.cs, (uint16_t)(vector << 8), (uint64_t)vector << 12, 0xb);
	else
		seg_real(&s.cs, 0xf000, 0xffff0000ull, 0xb);
	seg_real(&s.ds, 0, 0, 3);
	seg_real(&s.es, 0, 0, 3);
	seg_real(&s.fs, 0, 0, 3);
	seg_real(&s.gs, 0, 0, 3);
	seg_real(&s.ss, 0, 0, 3);
	s.tr = (struct kvm_segment){ .limit = 0xffff, .type = 0xb, .present = 1 };
	s.ldt = (struct kvm_segment){ .limit = 0xffff, .type = 2, .present = 1 };
	s.gdt = (struct kvm_dtable){ .base = 0, .limit = 0xffff };
	s.idt = (struct kvm_dtable){ .base = 0, .limit = 0xffff };
	s.cr0 = 0x60000010ull;  /* CD NW ET */
	s.cr2 = s.cr3 = s.cr4 = 0;
	s.cr8 = 0;
	s.efer = 0;
	memset(s.interrupt_bitmap, 0, sizeof(s.interrupt_bitmap));
	err = a->set_sregs(v->av, &s);
	if (err)
		return err;
	memset(&r, 0, sizeof(r));
	r.rflags = 0x2;
	r.rip = sipi ? 0 : 0xfff0;
	r.rdx = 0x600;          /* family 6 signature, as after INIT */
	err = a->set_regs(v->av, &r);
	v->can_inject = false;
	return err;
}

int vcpu_load_boot(struct vcpu *v, const struct fw_boot *b)
{
	const struct accel_ops *a = v->vm->accel;
	struct kvm_sregs s;
	int err;

	/* Keep the backend's apic_base and pending-interrupt bitmap; everything architectural comes from fw. */
	err = a->get_sregs(v->av, &s);
	if (err)
		return err;
	uint64_t apic_base = s.apic_base;

	s = b->sregs;
	s.apic_base = apic_base;
	memset(s.interrupt_bitmap, 0, sizeof(s.interrupt_bitmap));
	err = a->set_sregs(v->av, &s);
	if (!err)
		err = a->set_regs(v->av, &b->regs);
	v->can_inject = false;
	return err;
}

void vcpu_dump_regs(struct vcpu *v)
{
	const struct accel_ops *a = v->vm->accel;
	struct kvm_regs r;
	struct kvm_sregs s;

	if (a->get_regs(v->av, &r) || a->get_sregs(v->av, &s)) {
		vm_report("vcpu %u: registers unavailable", v->index);
		return;
	}
	vm_report("vcpu %u: RIP=%016llx RSP=%016llx RFLAGS=%08llx CR0=%08llx CR3=%016llx CR4=%08llx EFER=%llx "
		  "CS=%04x SS=%04x RAX=%016llx RCX=%016llx RDX=%016llx",
		  v->index, (unsigned long long)r.rip, (unsigned long long)r.rsp, (unsigned long long)r.rflags,
		  (unsigned long long)s.cr0, (unsigned long long)s.cr3, (unsigned long long)s.cr4,
		  (unsigned long long)s.efer, s.cs.selector, s.ss.selector, (unsigned long long)r.rax,
		  (unsigned long long)r.rcx, (unsigned long long)r.rdx);
}

/* A guest error or a host failure on this vCPU: one line saying what, one with the registers, VM stops. */
#define vcpu_fail(v, ...) \
	do { \
		if (vm_fail((v)->vm, __VA_ARGS__)) \
			vcpu_dump_regs(v); \
	} while (0)

/* ---- exits ----------------------------------------------------------------------------------------------- */

static uint64_t le_get(const uint8_t *p, unsigned size)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < size; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void le_put(uint8_t *p, unsigned size, uint64_t v)
{
	for (unsigned i = 0; i < size; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Port 0x80 (POST codes; Linux's io_delay writes it): ignored unless a device claims it, as on PCs. */
#define PORT_POST 0x80

static int vcpu_exit_io(struct vcpu *v)
{
	struct accel_exit *x = &v->exit;

	atomic_fetch_add_explicit(&v->ctr.exits_io, 1, memory_order_relaxed);
	for (uint32_t i = 0; i < (x->io.count ? x->io.count : 1); i++) {
		uint8_t *p = x->io.data + (size_t)i * x->io.size;
		struct io_access acc = { .addr = x->io.port, .size = x->io.size, .write = !x->io.in,
					 .vcpu = v->index };
		int err;

		if (acc.write)
			acc.data = le_get(p, x->io.size);
		err = vm_io(v->vm, BUS_PIO, &acc);
		if (err == -ENOENT && x->io.port == PORT_POST) {
			acc.data = ~0ull;
			err = 0;
		} else if (err == -ENOENT && !v->vm->cfg.strict_io) {
			/* nothing decodes it: a PC bus floats high on a read and drops a write (vm.h: strict_io) */
			atomic_fetch_add_explicit(&v->ctr.io_unclaimed, 1, memory_order_relaxed);
			pr_debug("vcpu %u: unclaimed port 0x%x (%s, size %u): %s", v->index, x->io.port,
				 x->io.in ? "in" : "out", x->io.size, x->io.in ? "all-ones" : "dropped");
			acc.data = ~0ull;
			err = 0;
		}
		if (err) {
			if (err == -ENOENT && x->io.in)
				vcpu_fail(v, "vcpu %u: guest accessed unknown port 0x%x (in, size %u)", v->index,
					  x->io.port, x->io.size);
			else if (err == -ENOENT)
				vcpu_fail(v, "vcpu %u: guest accessed unknown port 0x%x (out, size %u, value 0x%llx)",
					  v->index, x->io.port, x->io.size, (unsigned long long)acc.data);
			else
				vcpu_fail(v, "vcpu %u: port 0x%x (%s, size %u) failed in %s: %s", v->index, x->io.port,
					  x->io.in ? "in" : "out", x->io.size,
					  v->vm->io_local ? (bus_owner(v->vm->bus, BUS_PIO, x->io.port) ?: "?") :
							    "forwarding", strerror(-err));
			return err;
		}
		if (!acc.write)
			le_put(p, x->io.size, acc.data);
	}
	return 0;
}

static int vcpu_exit_mmio(struct vcpu *v)
{
	struct accel_exit *x = &v->exit;
	uint64_t base = lapic_base(v->lapic);
	int err;

	atomic_fetch_add_explicit(&v->ctr.exits_mmio, 1, memory_order_relaxed);
	if (lapic_mmio_enabled(v->lapic) && x->mmio.gpa >= base && x->mmio.gpa < base + 0x1000) {
		uint64_t val = x->mmio.write ? le_get(x->mmio.data, x->mmio.size) : 0;

		if (x->mmio.write)
			err = lapic_mmio_write(v->lapic, x->mmio.gpa - base, x->mmio.size, val);
		else
			err = lapic_mmio_read(v->lapic, x->mmio.gpa - base, x->mmio.size, &val);
		if (err) {
			vcpu_fail(v, "vcpu %u: illegal local APIC access at offset 0x%llx (%s, %u bytes): %s", v->index,
				  (unsigned long long)(x->mmio.gpa - base), x->mmio.write ? "write" : "read",
				  x->mmio.size, strerror(-err));
			return err;
		}
		if (!x->mmio.write)
			le_put(x->mmio.data, x->mmio.size, val);
		return 0;
	}
	struct io_access acc = { .addr = x->mmio.gpa, .size = x->mmio.size, .write = x->mmio.write,
				 .vcpu = v->index };

	if (acc.write)
		acc.data = le_get(x->mmio.data, x->mmio.size);
	err = vm_io(v->vm, BUS_MMIO, &acc);
	if (err) {
		if (err == -ENOENT)
			vcpu_fail(v, "vcpu %u: guest accessed unknown MMIO address 0x%llx (%s, %u bytes)", v->index,
				  (unsigned long long)x->mmio.gpa, x->mmio.write ? "write" : "read", x->mmio.size);
		else
			vcpu_fail(v, "vcpu %u: MMIO 0x%llx (%s, %u bytes) failed: %s", v->index,
				  (unsigned long long)x->mmio.gpa, x->mmio.write ? "write" : "read", x->mmio.size,
				  strerror(-err));
		return err;
	}
	if (!acc.write)
		le_put(x->mmio.data, x->mmio.size, acc.data);
	return 0;
}

/* MSRs a booting OS touches that this machine does not model: reads give 0, writes are dropped (as QEMU/KVM
 * without the feature do for most of them). Everything else not handled by the backend or the APIC gets #GP. */
static bool msr_harmless(uint32_t msr)
{
	switch (msr) {
	case 0x17:        /* IA32_PLATFORM_ID */
	case 0x34:        /* MSR_SMI_COUNT */
	case 0x3a:        /* IA32_FEATURE_CONTROL: 0 = unlocked, no VMX */
	case 0x8b:        /* IA32_BIOS_SIGN_ID (microcode revision) */
	case 0xce:        /* MSR_PLATFORM_INFO */
	case 0x140:       /* MSR_MISC_FEATURES_ENABLES */
	case 0x179:       /* IA32_MCG_CAP: no banks */
	case 0x17a:       /* IA32_MCG_STATUS */
	case 0x1d9:       /* IA32_DEBUGCTL */
	case 0x2ff:       /* IA32_MTRR_DEF_TYPE */
	case 0xfe:        /* IA32_MTRRCAP: no MTRRs */
	case 0xc0010015:  /* AMD HWCR */
		return true;
	}
	return (msr >= 0x200 && msr <= 0x20f) || (msr >= 0x250 && msr <= 0x26f); /* MTRR ranges */
}

static void vcpu_exit_msr(struct vcpu *v)
{
	struct accel_exit *x = &v->exit;
	bool rd = x->reason == ACCEL_EXIT_MSR_READ;
	int err;

	atomic_fetch_add_explicit(&v->ctr.exits_msr, 1, memory_order_relaxed);
	x->msr.error = false;
	if (rd)
		err = lapic_msr_read(v->lapic, x->msr.index, &x->msr.value);
	else
		err = lapic_msr_write(v->lapic, x->msr.index, x->msr.value);
	if (err == 0)
		return;
	if (err == -ENOENT && msr_harmless(x->msr.index)) {
		if (rd)
			x->msr.value = 0;
		return;
	}
	/* What hardware does: #GP. Reported once per vCPU (a guest probing MSRs with a fixup is normal). */
	x->msr.error = true;
	if (!v->guest_error_once[0]) {
		struct kvm_regs r;

		v->guest_error_once[0] = 1;
		if (v->vm->accel->get_regs(v->av, &r))
			r.rip = 0;
		pr_warn("vcpu %u: %s of unhandled MSR 0x%x at RIP 0x%llx: #GP to the guest (reported once)", v->index,
			rd ? "rdmsr" : "wrmsr", x->msr.index, (unsigned long long)r.rip);
	}
}

/* ---- the loop -------------------------------------------------------------------------------------------- */

static void vcpu_events(struct vcpu *v)
{
	uint8_t sipi = 0;
	unsigned ev = lapic_take_events(v->lapic, &sipi);

	if (ev & LAPIC_EV_INIT) {
		if (vcpu_reset_regs(v, false, 0))
			vcpu_fail(v, "vcpu %u: INIT: cannot reset registers", v->index);
		lapic_reset(v->lapic, v->bsp);
		v->wait_sipi = true;
		v->halted = false;
	}
	if ((ev & LAPIC_EV_SIPI) && v->wait_sipi) {
		if (vcpu_reset_regs(v, true, sipi))
			vcpu_fail(v, "vcpu %u: SIPI: cannot set registers", v->index);
		v->wait_sipi = false;
		v->halted = false;
		pr_debug("vcpu %u: SIPI vector 0x%02x", v->index, sipi);
	}
	if ((ev & LAPIC_EV_NMI) && !v->wait_sipi) {
		if (v->vm->accel->inject_nmi(v->av))
			vcpu_fail(v, "vcpu %u: cannot inject NMI", v->index);
		v->halted = false;
	}
}

/* APIC timer: tick if due; returns the next deadline as host monotonic ns (UINT64_MAX: none). */
static uint64_t vcpu_timer(struct vcpu *v)
{
	uint64_t dl = lapic_timer_deadline(v->lapic), now;

	if (dl == UINT64_MAX)
		return UINT64_MAX;
	now = v->vm->accel->read_tsc(v->av);
	if (now >= dl) {
		lapic_timer_tick(v->lapic, now);
		dl = lapic_timer_deadline(v->lapic);
		if (dl == UINT64_MAX)
			return UINT64_MAX;
		now = v->vm->accel->read_tsc(v->av);
		if (now >= dl)
			return clock_now_ns();
	}
	return clock_now_ns() + vm_tsc_to_ns(v->vm, dl - now);
}

static void vcpu_publish_timer(struct vcpu *v, uint64_t ns)
{
	atomic_store(&v->timer_ns, ns);
	if (ns != UINT64_MAX && ns < atomic_load(&v->vm->timer_next))
		vm_timer_update(v->vm);
}

/* One pass of the RUNNING state (see the story at the top). */
static void vcpu_running(struct vcpu *v, uint64_t seq)
{
	const struct accel_ops *a = v->vm->accel;
	struct accel_entry entry = { .request_irq_window = false };
	uint64_t timer_ns;
	int vec, err;

	vcpu_events(v);
	if (atomic_load(&v->vm->stopping))
		return;
	timer_ns = vcpu_timer(v);
	if (v->halted && v->halt_if && lapic_pending_vector(v->lapic) >= 0)
		v->halted = false;
	if (v->wait_sipi || v->halted) {
		vcpu_wait(v, seq, timer_ns);
		return;
	}
	/* from here a kick must reach us in guest code (vcpu_kick); one that came since the mailbox look: go round */
	atomic_store(&v->in_guest, true);
	if (atomic_load(&v->kick_seq) != seq) {
		atomic_store(&v->in_guest, false);
		return;
	}
	vec = lapic_pending_vector(v->lapic);
	if (vec >= 0) {
		err = v->can_inject ? a->inject_irq(v->av, (uint8_t)vec) : -EAGAIN;
		if (err == 0) {
			lapic_ack(v->lapic, (uint8_t)vec);
			atomic_fetch_add_explicit(&v->ctr.irqs_injected, 1, memory_order_relaxed);
			/* one injection per entry; ask for the window again if more are pending */
			if (lapic_pending_vector(v->lapic) >= 0)
				entry.request_irq_window = true;
		} else if (err != -EAGAIN && err != -EBUSY && err != -EEXIST) {
			atomic_store(&v->in_guest, false);
			vcpu_fail(v, "vcpu %u: cannot inject vector %d: %s", v->index, vec, strerror(-err));
			return;
		} else {
			/* not now, or the backend still holds the previous injection (an exit came before the guest took
			 * it): the vector stays in IRR, the window brings us back */
			entry.request_irq_window = true;
		}
	}
	vcpu_publish_timer(v, timer_ns);
	err = a->run(v->av, &entry, &v->exit);
	atomic_store(&v->in_guest, false);
	atomic_store(&v->timer_ns, UINT64_MAX);
	if (err) {
		vcpu_fail(v, "vcpu %u: %s run failed: %s", v->index, a->name, strerror(-err));
		return;
	}
	v->can_inject = v->exit.irq_ready;
	switch (v->exit.reason) {
	case ACCEL_EXIT_IO:
		vcpu_exit_io(v);
		break;
	case ACCEL_EXIT_MMIO:
		vcpu_exit_mmio(v);
		break;
	case ACCEL_EXIT_MSR_READ:
	case ACCEL_EXIT_MSR_WRITE:
		vcpu_exit_msr(v);
		break;
	case ACCEL_EXIT_HLT:
		atomic_fetch_add_explicit(&v->ctr.exits_hlt, 1, memory_order_relaxed);
		v->halted = true;
		v->halt_if = v->exit.irq_ready;
		break;
	case ACCEL_EXIT_IRQ_WINDOW:
	case ACCEL_EXIT_KICK:
		break;
	case ACCEL_EXIT_SHUTDOWN:
		vcpu_fail(v, "vcpu %u: triple fault (shutdown): the guest reset the machine", v->index);
		break;
	case ACCEL_EXIT_ERROR:
		v->exit.error.msg[sizeof(v->exit.error.msg) - 1] = '\0';
		vcpu_fail(v, "vcpu %u: %s cannot continue: %s", v->index, a->name, v->exit.error.msg);
		break;
	default:
		vcpu_fail(v, "vcpu %u: unknown exit reason %d from %s", v->index, (int)v->exit.reason, a->name);
		break;
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	char name[16];

	vcpu_current = v;
	snprintf(name, sizeof(name), "vcpu%u", v->index);
	pthread_setname_np(pthread_self(), name);
	vcpu_set_state(v, VM_VCPU_PAUSED);
	for (;;) {
		uint64_t seq = vcpu_mailbox(v);
		enum vm_vcpu_state st = (enum vm_vcpu_state)atomic_load(&v->state);

		if (st == VM_VCPU_STOPPED)
			break;
		if (atomic_load(&v->vm->stopping)) {
			/* the STOP message follows from vm_wait; keep still until then */
			vcpu_wait(v, seq, clock_now_ns() + 100 * NSEC_PER_MSEC);
			continue;
		}
		if (st == VM_VCPU_PAUSED) {
			vcpu_wait(v, seq, UINT64_MAX);
			continue;
		}
		vcpu_running(v, seq);
	}
	atomic_store(&v->timer_ns, UINT64_MAX);
	return NULL;
}

/* ---- create / destroy ------------------------------------------------------------------------------------ */

static int lapic_env_send(void *opaque, const struct irq_msg *m)
{
	struct vcpu *v = opaque;

	return apicbus_deliver(v->vm->apicbus, m);
}

static void lapic_env_eoi_level(void *opaque, uint8_t vector)
{
	struct vcpu *v = opaque;

	vm_eoi_level(v->vm, vector);
}

static void lapic_env_kick(void *opaque)
{
	vcpu_kick(opaque);
}

static uint64_t lapic_env_tsc(void *opaque)
{
	struct vcpu *v = opaque;

	return v->vm->accel->read_tsc(v->av);
}

static void lapic_env_logical(void *opaque, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	struct vcpu *v = opaque;

	apicbus_set_logical(v->vm->apicbus, apic_id, ldr, dfr);
}

int vcpu_create(struct vm *vm, unsigned index, struct vcpu **out)
{
	struct lapic_env env;
	struct vcpu *v;
	int err;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->vm = vm;
	v->index = index;
	v->apic_id = vm->apic_ids[index];
	v->bsp = index == 0;
	v->wait_sipi = !v->bsp;
	atomic_store(&v->state, VM_VCPU_CREATED);
	atomic_store(&v->timer_ns, UINT64_MAX);
	pthread_mutex_init(&v->lock, NULL);
	clock_cond_init(&v->cond);

	err = vm->accel->vcpu_create(vm->avm, index, v->apic_id, &v->av);
	if (err) {
		vm_report("vcpu %u: %s vcpu_create: %s", index, vm->accel->name, strerror(-err));
		goto out_free;
	}
	env = (struct lapic_env){ .opaque = v, .send = lapic_env_send, .eoi_level = lapic_env_eoi_level,
				  .kick = lapic_env_kick, .tsc = lapic_env_tsc, .logical_changed = lapic_env_logical };
	err = lapic_create(v->apic_id, v->bsp, vm->tsc_hz, &env, &v->lapic);
	if (err) {
		vm_report("vcpu %u: lapic_create: %s", index, strerror(-err));
		goto out_accel;
	}
	*out = v;
	return 0;

out_accel:
	vm->accel->vcpu_destroy(v->av);
out_free:
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->lock);
	free(v);
	return err;
}

int vcpu_thread_start(struct vcpu *v)
{
	int err = pthread_create(&v->thread, NULL, vcpu_thread, v);

	if (err)
		return -err;
	v->thread_started = true;
	return 0;
}

void vcpu_thread_join(struct vcpu *v)
{
	if (!v->thread_started)
		return;
	if (atomic_load(&v->state) != VM_VCPU_STOPPED)
		vcpu_post(v, VM_VCPU_STOP);
	pthread_join(v->thread, NULL);
	v->thread_started = false;
}

void vcpu_destroy(struct vcpu *v)
{
	if (!v)
		return;
	vcpu_thread_join(v);
	lapic_destroy(v->lapic);
	v->vm->accel->vcpu_destroy(v->av);
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->lock);
	free(v);
}
