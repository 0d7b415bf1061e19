// SPDX-License-Identifier: MIT
/*
 * The kvm accelerator: Linux KVM (/dev/kvm), written to the KVM API document (Documentation/virt/kvm/api.rst).
 *
 * Shape of a VM: KVM_CREATE_VM, KVM_SET_TSS_ADDR / KVM_SET_IDENTITY_MAP_ADDR (Intel needs both below 4 GiB and
 * outside RAM), one memory slot for RAM below the hole and one at 4 GiB for the rest, and NO in-kernel irqchip:
 * the local APIC is rackvm's (lapic.c), so an IPI can be routed to a vCPU on another node. Consequences:
 *   - HLT exits to user space (KVM_EXIT_HLT), the VMM waits for the APIC itself;
 *   - interrupts are injected with KVM_INTERRUPT when kvm_run says ready_for_interrupt_injection and if_flag, or
 *     after asking for an interrupt window (request_interrupt_window -> KVM_EXIT_IRQ_WINDOW_OPEN);
 *   - the APIC's MSRs must reach user space: KVM_CAP_X86_USER_SPACE_MSR (reasons INVAL|UNKNOWN|FILTER) plus an
 *     MSR filter denying IA32_APIC_BASE, IA32_TSC_DEADLINE and the x2APIC range to the kernel. Newer kernels ignore
 *     filters over the x2APIC range; without an in-kernel APIC those accesses are "invalid" for KVM and reach us
 *     through the INVAL reason instead.
 *
 * Kick: kvm_run->immediate_exit = 1 (seen if KVM_RUN has not started yet), then SIGUSR1 to the vCPU thread with
 * tgkill. The vCPU thread keeps SIGUSR1 blocked and hands KVM a mask without it (KVM_SET_SIGNAL_MASK), so the signal
 * interrupts only guest execution: a KVM_RUN in progress returns -EINTR, and the signal, blocked again in user space,
 * stays pending until the run path takes it with a zero-timeout sigtimedwait. No handler ever runs: on kvm_pvm a
 * delivered handler cost ~20 us per kick (signal frame, XSAVE, rt_sigreturn), the wait ~1 us. A signal that arrives
 * while the thread is in user space stays pending and makes the next KVM_RUN return at once. Both kick steps are
 * async-signal-safe. The run path clears immediate_exit right after KVM_RUN returns, before the VMM looks at its APIC
 * again, so a kick is never lost: it lands either before that look or makes the next KVM_RUN return at once.
 *
 * TSC: the VMM asks tsc_hz() what rate a guest TSC will have: with KVM_CAP_TSC_CONTROL the one it wants (each vCPU
 * gets KVM_SET_TSC_KHZ), otherwise the host's (KVM_GET_TSC_KHZ of a scratch vCPU), which the VMM then states in
 * CPUID 0x15/0x16 and uses for the APIC timer. read_tsc reads IA32_TSC with KVM_GET_MSRS (the vCPU's own thread
 * calls it, between runs).
 */
#include "hypervisor/accel.h"
#include "hypervisor/fw.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/log.h"

#define KVM_DEV "/dev/kvm"
#define KVM_TSS_ADDR 0xfffbd000ull          /* 3 pages below the BIOS, above the APIC/IOAPIC pages */
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ull /* one page */
#define KVM_KICK_SIGNAL SIGUSR1
#define KVM_MAX_CPUID_ENTRIES 256
#define MSR_IA32_TSC 0x10

struct accel_vm {
	int kvm_fd, vm_fd;
	size_t run_size;
	uint64_t tsc_hz;
	bool tsc_control;
	struct kvm_cpuid2 *cpuid;     /* table for APIC id 0, patched per vCPU */
};

struct accel_vcpu {
	struct accel_vm *vm;
	int fd;
	struct kvm_run *run;
	uint32_t apic_id;
	_Atomic bool thread_known;
	pid_t pid, tid;               /* the thread that calls run() */
	struct accel_exit *last;      /* the previous exit (IN/MMIO-read/MSR-read results are read from it) */
	bool pending_mmio_read, pending_msr;
};

static const int kvm_needed_caps[] = {
	KVM_CAP_USER_MEMORY, KVM_CAP_SET_TSS_ADDR, KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_EXT_CPUID,
	KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_X86_USER_SPACE_MSR, KVM_CAP_X86_MSR_FILTER,
};
static const char *const kvm_needed_cap_names[] = {
	"KVM_CAP_USER_MEMORY", "KVM_CAP_SET_TSS_ADDR", "KVM_CAP_SET_IDENTITY_MAP_ADDR", "KVM_CAP_EXT_CPUID",
	"KVM_CAP_IMMEDIATE_EXIT", "KVM_CAP_X86_USER_SPACE_MSR", "KVM_CAP_X86_MSR_FILTER",
};

static int kvm_open(char *why, size_t why_len)
{
	int fd = open(KVM_DEV, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		int err = errno;

		snprintf(why, why_len, "%s: %s", KVM_DEV, strerror(err));
		return -err;
	}
	return fd;
}

/* Open /dev/kvm and check the API version and every capability we use; the open fd or -errno with a reason. */
static int kvm_open_checked(char *why, size_t why_len)
{
	int fd = kvm_open(why, why_len);
	int v;

	if (fd < 0)
		return fd;
	v = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		snprintf(why, why_len, "%s: KVM API version %d, need %d", KVM_DEV, v, KVM_API_VERSION);
		close(fd);
		return -ENOTSUP;
	}
	for (size_t i = 0; i < sizeof(kvm_needed_caps) / sizeof(kvm_needed_caps[0]); i++) {
		if (ioctl(fd, KVM_CHECK_EXTENSION, kvm_needed_caps[i]) <= 0) {
			snprintf(why, why_len, "%s: kernel lacks %s", KVM_DEV, kvm_needed_cap_names[i]);
			close(fd);
			return -ENOTSUP;
		}
	}
	return fd;
}

static int kvm_probe(char *why, size_t why_len)
{
	int fd = kvm_open_checked(why, why_len);

	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

static void kvm_kick_handler(int sig)
{
	(void)sig;
}

static pthread_once_t kvm_signal_once = PTHREAD_ONCE_INIT;

static void kvm_signal_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kvm_kick_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(KVM_KICK_SIGNAL, &sa, NULL))
		pr_err("sigaction(SIGUSR1): %s", strerror(errno));
}

/* Fetch the host's supported CPUID with the fd of /dev/kvm (grows the buffer on E2BIG). */
static struct kvm_cpuid2 *kvm_supported_cpuid_get(int kvm_fd)
{
	for (unsigned n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

		if (!c)
			return NULL;
		c->nent = n;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		free(c);
		if (errno != E2BIG)
			return NULL;
	}
	return NULL;
}

/* kvm_pvm (nested paravirtual KVM) emulates guest ring 0 and cannot run some of what it reports: see fw.h. Its
 * module is present when it provides /dev/kvm; a host with it loaded is treated as one, whatever else it has. */
static bool kvm_host_is_pvm(void)
{
	return access("/sys/module/kvm_pvm", F_OK) == 0;
}

/* Remove from the supported table what this host cannot run (said once per process). */
static void kvm_cpuid_host_hide(struct accel_cpuid_entry *t, size_t *n)
{
	static atomic_bool said;
	char names[512] = "";
	size_t len = 0;

	if (!kvm_host_is_pvm())
		return;
	for (size_t i = 0; i < fw_cpuid_kvm_pvm_hidden_n; i++) {
		const struct fw_cpuid_hide *h = &fw_cpuid_kvm_pvm_hidden[i];

		if (fw_cpuid_hide(t, n, h, 1) && len < sizeof(names))
			len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", len ? ", " : "", h->names);
	}
	if (len && !atomic_exchange(&said, true))
		pr_info("kvm: kvm_pvm host: CPUID hides what its ring-0 emulation cannot run: %s", names);
}

static int kvm_supported_cpuid(struct accel_cpuid_entry *out, size_t max, size_t *n_out)
{
	char why[160];
	struct kvm_cpuid2 *c;
	int fd = kvm_open_checked(why, sizeof(why));
	size_t n = 0;

	if (fd < 0)
		return fd;
	c = kvm_supported_cpuid_get(fd);
	if (!c) {
		int err = errno ? errno : ENOMEM;

		close(fd);
		return -err;
	}
	close(fd);
	for (uint32_t i = 0; i < c->nent && n < max; i++, n++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];

		out[n] = (struct accel_cpuid_entry){
			.function = e->function, .index = e->index,
			.has_index = (e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0,
			.eax = e->eax, .ebx = e->ebx, .ecx = e->ecx, .edx = e->edx,
		};
	}
	free(c);
	if (n >= max)
		return -E2BIG;
	kvm_cpuid_host_hide(out, &n);
	*n_out = n;
	return 0;
}

/* The guest TSC rate KVM gives a new vCPU when asked for `want` Hz: `want` with KVM_CAP_TSC_CONTROL, otherwise what
 * KVM_GET_TSC_KHZ reports for a scratch vCPU (the host's rate); 0 if /dev/kvm cannot tell. */
static uint64_t kvm_tsc_hz(uint64_t want)
{
	char why[160];
	int fd = kvm_open_checked(why, sizeof(why)), vm_fd, cpu_fd;
	uint64_t hz = 0;
	long khz;

	if (fd < 0)
		return 0;
	if (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0) {
		close(fd);
		return want;
	}
	vm_fd = ioctl(fd, KVM_CREATE_VM, 0);
	if (vm_fd >= 0) {
		cpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0ul);
		if (cpu_fd >= 0) {
			khz = ioctl(cpu_fd, KVM_GET_TSC_KHZ, 0);
			if (khz > 0)
				hz = (uint64_t)khz * 1000;
			close(cpu_fd);
		}
		close(vm_fd);
	}
	close(fd);
	return hz;
}

static int kvm_set_slot(struct accel_vm *vm, uint32_t slot, uint64_t gpa, uint64_t size, void *host)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .flags = 0, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)host,
	};

	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r)) {
		int err = errno;

		pr_err("KVM_SET_USER_MEMORY_REGION slot %u gpa 0x%llx size 0x%llx: %s", slot,
		       (unsigned long long)gpa, (unsigned long long)size, strerror(err));
		return -err;
	}
	return 0;
}

/* APIC MSRs go to user space: a 0 bit in a filter range denies the access to KVM, which then exits with
 * KVM_MSR_EXIT_REASON_FILTER. Everything else stays with KVM (default allow). */
static int kvm_set_msr_filter(struct accel_vm *vm)
{
	static uint8_t deny[256 / 8];   /* zero: every MSR of the range denied */
	struct kvm_msr_filter f;
	struct kvm_enable_cap cap;

	memset(&cap, 0, sizeof(cap));
	cap.cap = KVM_CAP_X86_USER_SPACE_MSR;
	cap.args[0] = KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER;
	if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap)) {
		int err = errno;

		pr_err("KVM_ENABLE_CAP(X86_USER_SPACE_MSR): %s", strerror(err));
		return -err;
	}
	memset(&f, 0, sizeof(f));
	f.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
	f.ranges[0] = (struct kvm_msr_filter_range){ .flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE,
						     .nmsrs = 1, .base = 0x1b, .bitmap = deny };
	f.ranges[1] = (struct kvm_msr_filter_range){ .flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE,
						     .nmsrs = 1, .base = 0x6e0, .bitmap = deny };
	f.ranges[2] = (struct kvm_msr_filter_range){ .flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE,
						     .nmsrs = 256, .base = 0x800, .bitmap = deny };
	if (ioctl(vm->vm_fd, KVM_X86_SET_MSR_FILTER, &f) == 0)
		return 0;
	/* Kernels that refuse filters over the x2APIC range: those MSRs still come out as INVAL (no in-kernel APIC). */
	memset(&f.ranges[2], 0, sizeof(f.ranges[2]));
	if (ioctl(vm->vm_fd, KVM_X86_SET_MSR_FILTER, &f)) {
		int err = errno;

		pr_err("KVM_X86_SET_MSR_FILTER: %s", strerror(err));
		return -err;
	}
	return 0;
}

static int kvm_vm_create(const struct accel_vm_config *cfg, struct accel_vm **out)
{
	struct accel_vm *vm;
	char why[160];
	uint64_t low;
	int err, sz;

	if (!cfg->ram || !cfg->ram_size || cfg->ram_size % 4096)
		return -EINVAL;
	if (cfg->hole_start && (cfg->hole_start > cfg->ram_size || cfg->hole_start > (1ull << 32)))
		return -EINVAL;
	if (!cfg->hole_start && cfg->ram_size > KVM_IDENTITY_MAP_ADDR)
		return -EINVAL;
	pthread_once(&kvm_signal_once, kvm_signal_install);
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->vm_fd = -1;
	vm->tsc_hz = cfg->tsc_hz;
	vm->kvm_fd = kvm_open_checked(why, sizeof(why));
	if (vm->kvm_fd < 0) {
		err = vm->kvm_fd;
		pr_err("%s", why);
		goto out_free;
	}
	sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz < (int)sizeof(struct kvm_run)) {
		err = sz < 0 ? -errno : -EINVAL;
		pr_err("KVM_GET_VCPU_MMAP_SIZE: %d", sz);
		goto out_close_kvm;
	}
	vm->run_size = (size_t)sz;
	vm->tsc_control = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0;
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		err = -errno;
		pr_err("KVM_CREATE_VM: %s", strerror(errno));
		goto out_close_kvm;
	}
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR)) {
		err = -errno;
		pr_err("KVM_SET_TSS_ADDR: %s", strerror(errno));
		goto out_close_vm;
	}
	uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap)) {
		err = -errno;
		pr_err("KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
		goto out_close_vm;
	}
	low = cfg->hole_start ? cfg->hole_start : cfg->ram_size;
	err = kvm_set_slot(vm, 0, 0, low, cfg->ram);
	if (err)
		goto out_close_vm;
	if (cfg->ram_size > low) {
		err = kvm_set_slot(vm, 1, 1ull << 32, cfg->ram_size - low, (uint8_t *)cfg->ram + low);
		if (err)
			goto out_close_vm;
	}
	err = kvm_set_msr_filter(vm);
	if (err)
		goto out_close_vm;

	vm->cpuid = calloc(1, sizeof(*vm->cpuid) + cfg->n_cpuid * sizeof(vm->cpuid->entries[0]));
	if (!vm->cpuid) {
		err = -ENOMEM;
		goto out_close_vm;
	}
	vm->cpuid->nent = (uint32_t)cfg->n_cpuid;
	for (size_t i = 0; i < cfg->n_cpuid; i++) {
		const struct accel_cpuid_entry *c = &cfg->cpuid[i];

		vm->cpuid->entries[i] = (struct kvm_cpuid_entry2){
			.function = c->function, .index = c->index,
			.flags = c->has_index ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0,
			.eax = c->eax, .ebx = c->ebx, .ecx = c->ecx, .edx = c->edx,
		};
	}
	*out = vm;
	return 0;

out_close_vm:
	close(vm->vm_fd);
out_close_kvm:
	close(vm->kvm_fd);
out_free:
	free(vm);
	return err;
}

static void kvm_vm_destroy(struct accel_vm *vm)
{
	if (!vm)
		return;
	free(vm->cpuid);
	close(vm->vm_fd);
	close(vm->kvm_fd);
	free(vm);
}

/* The per-vCPU CPUID: the VM's table with this vCPU's APIC id in leaf 1 EBX[31:24] and leaves 0xB/0x1F EDX. */
static int kvm_vcpu_set_cpuid(struct accel_vcpu *v)
{
	const struct kvm_cpuid2 *t = v->vm->cpuid;
	size_t sz = sizeof(*t) + t->nent * sizeof(t->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz);
	int err = 0;

	if (!c)
		return -ENOMEM;
	memcpy(c, t, sz);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffffu) | (v->apic_id << 24);
		else if (e->function == 0xb || e->function == 0x1f)
			e->edx = v->apic_id;
	}
	if (ioctl(v->fd, KVM_SET_CPUID2, c)) {
		err = -errno;
		pr_err("KVM_SET_CPUID2: %s", strerror(errno));
	}
	free(c);
	return err;
}

static int kvm_vcpu_create(struct accel_vm *vm, unsigned index, uint32_t apic_id, struct accel_vcpu **out)
{
	struct accel_vcpu *v;
	int err;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->vm = vm;
	v->apic_id = apic_id;
	/* The KVM vcpu id is the APIC id (what an in-kernel APIC would use; harmless without one). */
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)apic_id);
	if (v->fd < 0) {
		err = -errno;
		pr_err("KVM_CREATE_VCPU %u (apic %u): %s", index, apic_id, strerror(errno));
		goto out_free;
	}
	v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		err = -errno;
		pr_err("mmap kvm_run: %s", strerror(errno));
		goto out_close;
	}
	err = kvm_vcpu_set_cpuid(v);
	if (err)
		goto out_unmap;
	if (vm->tsc_hz && vm->tsc_control) {
		if (ioctl(v->fd, KVM_SET_TSC_KHZ, (unsigned long)(vm->tsc_hz / 1000)) < 0) {
			static atomic_bool warned;

			if (!atomic_exchange(&warned, true))
				pr_warn("KVM cannot scale the guest TSC to %llu kHz: it runs at the host's rate",
					(unsigned long long)(vm->tsc_hz / 1000));
		}
	}
	*out = v;
	return 0;

out_unmap:
	munmap(v->run, vm->run_size);
out_close:
	close(v->fd);
out_free:
	free(v);
	return err;
}

static void kvm_vcpu_destroy(struct accel_vcpu *v)
{
	if (!v)
		return;
	munmap(v->run, v->vm->run_size);
	close(v->fd);
	free(v);
}

static int kvm_ioctl_err(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) ? -errno : 0;
}

static int kvm_get_regs(struct accel_vcpu *v, struct kvm_regs *r)
{
	return kvm_ioctl_err(v->fd, KVM_GET_REGS, r);
}

static int kvm_set_regs(struct accel_vcpu *v, const struct kvm_regs *r)
{
	return kvm_ioctl_err(v->fd, KVM_SET_REGS, (void *)r);
}

static int kvm_get_sregs(struct accel_vcpu *v, struct kvm_sregs *s)
{
	return kvm_ioctl_err(v->fd, KVM_GET_SREGS, s);
}

static int kvm_set_sregs(struct accel_vcpu *v, const struct kvm_sregs *s)
{
	return kvm_ioctl_err(v->fd, KVM_SET_SREGS, (void *)s);
}

/* Copy the VMM's answers to the previous exit into kvm_run before re-entering. IN data was filled in place
 * (io.data points into kvm_run). */
static void kvm_complete_previous(struct accel_vcpu *v)
{
	struct kvm_run *run = v->run;

	if (v->pending_mmio_read && v->last)
		memcpy(run->mmio.data, v->last->mmio.data, sizeof(run->mmio.data));
	if (v->pending_msr && v->last) {
		run->msr.error = v->last->msr.error ? 1 : 0;
		if (v->last->reason == ACCEL_EXIT_MSR_READ)
			run->msr.data = v->last->msr.value;
	}
	v->pending_mmio_read = false;
	v->pending_msr = false;
}

static void kvm_exit_error(struct accel_exit *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void kvm_exit_error(struct accel_exit *x, const char *fmt, ...)
{
	va_list ap;

	x->reason = ACCEL_EXIT_ERROR;
	va_start(ap, fmt);
	vsnprintf(x->error.msg, sizeof(x->error.msg), fmt, ap);
	va_end(ap);
}

/* First run on this thread: block the kick signal here and let KVM_RUN unblock it (see the kick story at the top). */
static int kvm_thread_adopt(struct accel_vcpu *v)
{
	struct {
		struct kvm_signal_mask hdr;
		uint8_t set[8];         /* the kernel's sigset_t: 64 signals */
	} m;
	sigset_t block, old;

	sigemptyset(&block);
	sigaddset(&block, KVM_KICK_SIGNAL);
	if (pthread_sigmask(SIG_BLOCK, &block, &old))
		return -EINVAL;
	sigdelset(&old, KVM_KICK_SIGNAL);
	memset(&m, 0, sizeof(m));
	m.hdr.len = sizeof(m.set);
	memcpy(m.set, &old, sizeof(m.set));      /* glibc's sigset_t starts with the kernel's 64 bits */
	if (ioctl(v->fd, KVM_SET_SIGNAL_MASK, &m)) {
		int err = errno;

		pthread_sigmask(SIG_UNBLOCK, &block, NULL);
		pr_err("KVM_SET_SIGNAL_MASK: %s", strerror(err));
		return -err;
	}
	v->pid = getpid();
	v->tid = gettid();
	atomic_store_explicit(&v->thread_known, true, memory_order_release);
	return 0;
}

/* Take a pending kick signal (blocked on this thread) so that the next KVM_RUN does not return at once for it. One
 * call is enough: SIGUSR1 is a standard signal, and kicks sent while one is pending merge into it. */
static void kvm_take_kick(void)
{
	static const struct timespec zero = { 0, 0 };
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, KVM_KICK_SIGNAL);
	(void)sigtimedwait(&set, NULL, &zero);
}

static int kvm_run(struct accel_vcpu *v, const struct accel_entry *entry, struct accel_exit *x)
{
	struct kvm_run *run = v->run;
	int r, err;

	if (!atomic_load_explicit(&v->thread_known, memory_order_acquire)) {
		err = kvm_thread_adopt(v);
		if (err)
			return err;
	}
	kvm_complete_previous(v);
	run->request_interrupt_window = entry && entry->request_irq_window;
	r = ioctl(v->fd, KVM_RUN, 0);
	err = errno;
	/* Before the VMM looks at its APIC again (see the kick story at the top). */
	__atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	memset(x, 0, sizeof(*x));
	v->last = x;
	x->irq_ready = run->ready_for_interrupt_injection && run->if_flag;
	if (r < 0) {
		if (err == EINTR || err == EAGAIN) {
			kvm_take_kick();
			x->reason = ACCEL_EXIT_KICK;
			return 0;
		}
		if (err == EFAULT) {
			/* A guest access to RAM the host could not fault in (e.g. the DSM region failed). */
			kvm_exit_error(x, "KVM_RUN: %s", strerror(err));
			return 0;
		}
		return -err;
	}
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		x->reason = ACCEL_EXIT_IO;
		x->io.port = run->io.port;
		x->io.size = run->io.size;
		x->io.in = run->io.direction == KVM_EXIT_IO_IN;
		x->io.count = run->io.count;
		x->io.data = (uint8_t *)run + run->io.data_offset;
		break;
	case KVM_EXIT_MMIO:
		x->reason = ACCEL_EXIT_MMIO;
		x->mmio.gpa = run->mmio.phys_addr;
		x->mmio.size = (uint8_t)run->mmio.len;
		x->mmio.write = run->mmio.is_write;
		memcpy(x->mmio.data, run->mmio.data, sizeof(x->mmio.data));
		v->pending_mmio_read = !run->mmio.is_write;
		break;
	case KVM_EXIT_X86_RDMSR:
	case KVM_EXIT_X86_WRMSR:
		x->reason = run->exit_reason == KVM_EXIT_X86_RDMSR ? ACCEL_EXIT_MSR_READ : ACCEL_EXIT_MSR_WRITE;
		x->msr.index = run->msr.index;
		x->msr.value = run->exit_reason == KVM_EXIT_X86_WRMSR ? run->msr.data : 0;
		x->msr.error = false;
		v->pending_msr = true;
		break;
	case KVM_EXIT_HLT:
		x->reason = ACCEL_EXIT_HLT;
		break;
	case KVM_EXIT_IRQ_WINDOW_OPEN:
		x->reason = ACCEL_EXIT_IRQ_WINDOW;
		break;
	case KVM_EXIT_INTR:
		x->reason = ACCEL_EXIT_KICK;
		break;
	case KVM_EXIT_SHUTDOWN:
		x->reason = ACCEL_EXIT_SHUTDOWN;
		break;
	case KVM_EXIT_FAIL_ENTRY:
		kvm_exit_error(x, "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason 0x%llx on cpu %u",
			       (unsigned long long)run->fail_entry.hardware_entry_failure_reason,
			       run->fail_entry.cpu);
		break;
	case KVM_EXIT_INTERNAL_ERROR: {
		char data[96] = "";
		size_t n = 0;

		for (uint32_t i = 0; i < run->internal.ndata && i < 4; i++)
			n += (size_t)snprintf(data + n, sizeof(data) - n, " 0x%llx",
					      (unsigned long long)run->internal.data[i]);
		kvm_exit_error(x, "KVM_EXIT_INTERNAL_ERROR: suberror %u (%s), data%s", run->internal.suberror,
			       run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? "emulation failure" :
			       run->internal.suberror == KVM_INTERNAL_ERROR_SIMUL_EX ? "exception while delivering" :
			       run->internal.suberror == KVM_INTERNAL_ERROR_DELIVERY_EV ? "event delivery" : "other",
			       data[0] ? data : " none");
		break;
	}
	default:
		kvm_exit_error(x, "unexpected KVM exit reason %u", run->exit_reason);
		break;
	}
	return 0;
}

static void kvm_kick(struct accel_vcpu *v)
{
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (atomic_load_explicit(&v->thread_known, memory_order_acquire))
		syscall(SYS_tgkill, v->pid, v->tid, KVM_KICK_SIGNAL);
}

static int kvm_inject_irq(struct accel_vcpu *v, uint8_t vector)
{
	struct kvm_interrupt irq = { .irq = vector };

	return kvm_ioctl_err(v->fd, KVM_INTERRUPT, &irq);
}

static int kvm_inject_nmi(struct accel_vcpu *v)
{
	return ioctl(v->fd, KVM_NMI, 0) ? -errno : 0;
}

static uint64_t kvm_read_tsc(struct accel_vcpu *v)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m;

	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = 1;
	m.e.index = MSR_IA32_TSC;
	if (ioctl(v->fd, KVM_GET_MSRS, &m) != 1)
		return 0;
	return m.e.data;
}

const struct accel_ops accel_kvm_ops = {
	.name = "kvm",
	.probe = kvm_probe,
	.vm_create = kvm_vm_create,
	.vm_destroy = kvm_vm_destroy,
	.vcpu_create = kvm_vcpu_create,
	.vcpu_destroy = kvm_vcpu_destroy,
	.get_regs = kvm_get_regs,
	.set_regs = kvm_set_regs,
	.get_sregs = kvm_get_sregs,
	.set_sregs = kvm_set_sregs,
	.run = kvm_run,
	.kick = kvm_kick,
	.inject_irq = kvm_inject_irq,
	.inject_nmi = kvm_inject_nmi,
	.read_tsc = kvm_read_tsc,
	.supported_cpuid = kvm_supported_cpuid,
	.insn_count = NULL,
	.tsc_hz = kvm_tsc_hz,
};
