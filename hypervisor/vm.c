// SPDX-License-Identifier: MIT
/*
 * The node VM: composition of guest RAM, accelerator, firmware, buses, devices, IOAPIC, APIC bus and the local
 * vCPUs (vcpu.c), plus the VM-wide pieces: stop/wait, the console, the APIC timer thread, the cluster entry points.
 *
 * Stop story: vm_stop() may run in a signal handler, so it only records the code (first one wins), raises
 * vm->stopping, kicks every local vCPU out of guest code and writes one byte to a pipe. vm_wait() sleeps on that
 * pipe; when it wakes it tells the other nodes (exit_broadcast, unless the stop came from one of them), posts STOP
 * to every vCPU (which also wakes halted ones), joins them and the timer thread, flushes the console and returns
 * the code.
 *
 * Timers: a running vCPU publishes its APIC timer deadline as host-monotonic ns (v->timer_ns) before entering the
 * guest; one timer thread per VM sleeps until the earliest and kicks that vCPU out (the vCPU then ticks its APIC).
 * A halted vCPU needs no help: it sleeps on its condvar with the deadline. One thread for the VM rather than a
 * timerfd per vCPU: guests arm the timer on few vCPUs at a time, and a sleeping thread costs nothing (see
 * docs/hypervisor.md).
 */
#include "hypervisor/vm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dsm/region.h"
#include "hypervisor/ioapic.h"
#include "util/clock.h"
#include "util/log.h"

/* ---- reports ---------------------------------------------------------------------------------------------- */

void vm_report(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "rackvm: ");
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}

/* The first reason the VM stops is kept (for exit_broadcast); later ones are dropped. True if this one was first. */
static bool vm_set_why(struct vm *vm, const char *why)
{
	bool first;

	pthread_mutex_lock(&vm->why_lock);
	first = !vm->stop_why[0] && !atomic_load(&vm->stopping);
	if (first)
		snprintf(vm->stop_why, sizeof(vm->stop_why), "%s", why);
	pthread_mutex_unlock(&vm->why_lock);
	return first;
}

bool vm_fail(struct vm *vm, const char *fmt, ...)
{
	char why[sizeof(vm->stop_why)];
	va_list ap;
	bool first;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	first = vm_set_why(vm, why);
	if (first)
		vm_report("%s", why);
	vm_stop(vm, 1);
	return first;
}

uint64_t vm_tsc_to_ns(const struct vm *vm, uint64_t ticks)
{
	return (uint64_t)((unsigned __int128)ticks * NSEC_PER_SEC / vm->tsc_hz);
}

/* ---- services for devices -------------------------------------------------------------------------------- */

static void svc_irq_set(void *opaque, unsigned gsi, int level)
{
	struct vm *vm = opaque;

	if (vm->ioapic)
		ioapic_set_irq(vm->ioapic, gsi, level);
}

static void console_flush_locked(struct vm *vm, size_t n)
{
	int fd = vm->cfg.console_fd > 0 ? vm->cfg.console_fd : STDOUT_FILENO;
	size_t off = 0;

	while (off < n) {
		ssize_t w = write(fd, vm->console_buf + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;   /* console gone: drop the output, the guest keeps running */
		off += (size_t)w;
	}
	memmove(vm->console_buf, vm->console_buf + n, vm->console_len - n);
	vm->console_len -= n;
}

/* Line-buffered: whole lines go out in one write(2), so the output of several vCPUs does not interleave inside
 * a line and a test reading the pipe sees complete lines. */
static void svc_console_write(void *opaque, const void *buf, size_t len)
{
	struct vm *vm = opaque;
	const char *p = buf;

	pthread_mutex_lock(&vm->console_lock);
	while (len) {
		size_t room = sizeof(vm->console_buf) - vm->console_len;
		size_t n = len < room ? len : room;
		char *nl;

		memcpy(vm->console_buf + vm->console_len, p, n);
		vm->console_len += n;
		p += n;
		len -= n;
		nl = memrchr(vm->console_buf, '\n', vm->console_len);
		if (nl)
			console_flush_locked(vm, (size_t)(nl - vm->console_buf) + 1);
		else if (vm->console_len == sizeof(vm->console_buf))
			console_flush_locked(vm, vm->console_len);
	}
	pthread_mutex_unlock(&vm->console_lock);
}

static void console_flush(struct vm *vm)
{
	pthread_mutex_lock(&vm->console_lock);
	console_flush_locked(vm, vm->console_len);
	pthread_mutex_unlock(&vm->console_lock);
}

static void svc_request_exit(void *opaque, int code, const char *why)
{
	struct vm *vm = opaque;

	if (vm->cfg.verbose)
		pr_info("guest exit: %s (status %d)", why ? why : "?", code);
	vm_set_why(vm, why ? why : "guest exit");
	vm_stop(vm, code);
}

static uint64_t svc_now_ns(void *opaque)
{
	return clock_now_ns();
}

static int svc_deliver(void *opaque, const struct irq_msg *m)
{
	struct vm *vm = opaque;

	return apicbus_deliver(vm->apicbus, m);
}

/* ---- I/O routing ----------------------------------------------------------------------------------------- */

int vm_io(struct vm *vm, enum bus_space space, struct io_access *a)
{
	const struct vm_cluster_hooks *h = vm->cfg.hooks;
	unsigned vcpu = a->vcpu;
	int err;

	if (vm->io_local)
		return bus_access(vm->bus, space, a);
	if (bus_local_read(space, a, clock_now_ns()))
		return 0;
	if (!h || !h->forward_io)
		return -ENOENT;
	if (vcpu < VM_MAX_VCPUS && vm->vcpus[vcpu])
		atomic_fetch_add_explicit(&vm->vcpus[vcpu]->ctr.io_forwarded, 1, memory_order_relaxed);
	err = h->forward_io(h->opaque, vm->cfg.io_node, space, a);
	if (err == -EHOSTDOWN)
		vm_fail(vm, "node %u (devices) is down: %s access to 0x%llx cannot complete", vm->cfg.io_node,
			space == BUS_PIO ? "port" : "MMIO", (unsigned long long)a->addr);
	return err;
}

void vm_eoi_level(struct vm *vm, uint8_t vector)
{
	if (vm->io_local) {
		if (vm->ioapic)
			ioapic_eoi(vm->ioapic, vector);
		return;
	}
	/* The io node's IOAPIC clears remote-IRR (and redelivers a line still asserted). Without the hook,
	 * level-triggered lines only work for vCPUs placed on the io node. */
	if (vm->cfg.hooks && vm->cfg.hooks->forward_eoi) {
		vm->cfg.hooks->forward_eoi(vm->cfg.hooks->opaque, vm->cfg.io_node, vector);
		return;
	}
	if (!atomic_exchange(&vm->eoi_forward_warned, true))
		pr_warn("EOI of level-triggered vector %u on node %u: forwarding to the io node is not implemented",
			vector, vm->cfg.self);
}

/* ---- timer thread ---------------------------------------------------------------------------------------- */

void vm_timer_update(struct vm *vm)
{
	pthread_mutex_lock(&vm->timer_lock);
	pthread_cond_signal(&vm->timer_cond);
	pthread_mutex_unlock(&vm->timer_lock);
}

/* Kick every vCPU whose published deadline passed (once per published value: the vCPU republishes after it
 * ticked); returns the earliest deadline still ahead. */
static uint64_t vm_timer_scan(struct vm *vm, bool kick)
{
	uint64_t now = clock_now_ns(), next = UINT64_MAX;

	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		struct vcpu *v = vm->vcpus[i];
		uint64_t t;

		if (!v)
			continue;
		t = atomic_load(&v->timer_ns);
		if (t <= now && kick) {
			if (atomic_compare_exchange_strong(&v->timer_ns, &t, UINT64_MAX))
				vm->accel->kick(v->av);
		} else if (t < next) {
			next = t;
		}
	}
	return next;
}

/* Lost-wake-up argument: a vCPU stores its deadline, then signals (under timer_lock) only if it is earlier than
 * timer_next. This thread publishes timer_next and then scans again while holding timer_lock until it sleeps, so
 * a deadline stored after that second scan sees the new timer_next and its signal waits for the sleep (the lock).
 * The common entry (deadline not earlier than what this thread already waits for) costs two atomics, no lock. */
static void *vm_timer_thread(void *arg)
{
	struct vm *vm = arg;

	pthread_setname_np(pthread_self(), "vm-timer");
	pthread_mutex_lock(&vm->timer_lock);
	while (!vm->timer_quit) {
		uint64_t next = vm_timer_scan(vm, true);

		atomic_store(&vm->timer_next, next);
		if (vm_timer_scan(vm, false) < next)
			continue;
		if (next == UINT64_MAX) {
			pthread_cond_wait(&vm->timer_cond, &vm->timer_lock);
		} else {
			struct timespec ts = clock_timespec(next);

			pthread_cond_timedwait(&vm->timer_cond, &vm->timer_lock, &ts);
		}
	}
	pthread_mutex_unlock(&vm->timer_lock);
	return NULL;
}

/* ---- create ---------------------------------------------------------------------------------------------- */

static int vm_ram_setup(struct vm *vm, const struct vm_config *cfg)
{
	vm->ram_size = cfg->ram_size;
	vm->hole_start = cfg->ram_size > VM_HOLE_START ? VM_HOLE_START : 0;
	if (cfg->region) {
		if (dsm_region_size(cfg->region) < cfg->ram_size) {
			vm_report("guest RAM: the dsm region holds %zu bytes, --mem asks for %llu",
				  dsm_region_size(cfg->region), (unsigned long long)cfg->ram_size);
			return -EINVAL;
		}
		vm->ram = dsm_region_base(cfg->region);
		return 0;
	}
	vm->ram = mmap(NULL, cfg->ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (vm->ram == MAP_FAILED) {
		int err = errno;

		vm->ram = NULL;
		vm_report("guest RAM: cannot map %llu bytes: %s", (unsigned long long)cfg->ram_size, strerror(err));
		return -err;
	}
	vm->ram_owned = true;
	return 0;
}

static int vm_cpuid_setup(struct vm *vm)
{
	struct accel_cpuid_entry *base = NULL;
	size_t n_base = 0;
	int err;

	if (vm->accel->supported_cpuid) {
		base = calloc(512, sizeof(*base));
		if (!base)
			return -ENOMEM;
		err = vm->accel->supported_cpuid(base, 512, &n_base);
		if (err) {
			vm_report("%s: cannot read the supported CPUID: %s", vm->accel->name, strerror(-err));
			free(base);
			return err;
		}
	}
	err = fw_cpuid_build(vm->n_vcpus, vm->apic_ids, base, n_base, vm->cpuid, VM_MAX_CPUID, &vm->n_cpuid);
	free(base);
	if (err) {
		vm_report("CPUID table: %s", strerror(-err));
		return err;
	}
	/* CPUID 0x15/0x16: the guest's TSC rate against the APIC timer's crystal (lapic.h) */
	err = fw_cpuid_set_tsc(vm->cpuid, VM_MAX_CPUID, &vm->n_cpuid, vm->tsc_hz);
	if (err) {
		vm_report("CPUID table (TSC leaves): %s", strerror(-err));
		return err;
	}
	return 0;
}

static bool vm_boot_here(const struct vm *vm)
{
	return vm->node_of[0] == vm->cfg.self;
}

static int vm_firmware(struct vm *vm)
{
	const struct vm_config *c = &vm->cfg;
	struct fw_config fc = {
		.n_vcpus = vm->n_vcpus, .apic_ids = vm->apic_ids, .node_of = c->node_of ? vm->node_of : NULL,
		.n_nodes = c->n_nodes ? c->n_nodes : 1, .node_mem_base = c->node_mem_base,
		.node_mem_size = c->node_mem_size, .slit = NULL, .ram_size = vm->ram_size,
		.hole_start = vm->hole_start, .kernel = c->kernel, .cmdline = c->cmdline ? c->cmdline : "",
		.initrd = c->initrd, .modules = c->modules, .n_modules = c->n_modules,
		/* vm_create just made the RAM (a fresh region or mapping): nothing needs zeroing, and every page
		 * the loader does not write stays unfaulted. */
		.ram_zeroed = true,
	};
	uint64_t *gpa_base = NULL, *gpa_size = NULL;
	char err[256] = "";
	int r;

	/* The cluster's home ranges are offsets into guest RAM (the dsm region); fw wants guest-physical ranges:
	 * past hole_start RAM appears 4 GiB - hole_start higher (a range across the hole also covers the hole). */
	if (c->node_mem_base && c->node_mem_size && fc.n_nodes) {
		gpa_base = calloc(fc.n_nodes, sizeof(*gpa_base));
		gpa_size = calloc(fc.n_nodes, sizeof(*gpa_size));
		if (!gpa_base || !gpa_size) {
			free(gpa_base);
			free(gpa_size);
			return -ENOMEM;
		}
		for (unsigned i = 0; i < fc.n_nodes; i++) {
			uint64_t start = c->node_mem_base[i], end = start + c->node_mem_size[i];
			uint64_t shift = vm->hole_start ? (1ull << 32) - vm->hole_start : 0;

			if (vm->hole_start && start >= vm->hole_start)
				start += shift;
			if (vm->hole_start && end > vm->hole_start)
				end += shift;
			gpa_base[i] = start;
			gpa_size[i] = end - start;
		}
		fc.node_mem_base = gpa_base;
		fc.node_mem_size = gpa_size;
	}

	/* Only the node that runs vCPU 0 writes the image: with DSM every node sees those bytes. A node that owns
	 * the devices but not vCPU 0 still needs the fw_cfg files; other nodes need nothing. */
	if (vm_boot_here(vm))
		r = fw_setup(&fc, vm->ram, &vm->boot, err, sizeof(err));
	else if (vm->io_local)
		r = fw_files_only(&fc, &vm->boot, err, sizeof(err));
	else
		r = 1;
	free(gpa_base);
	free(gpa_size);
	if (r == 1)
		return 0;
	if (r) {
		vm_report("%s", err[0] ? err : strerror(-r));
		return r;
	}
	vm->boot_loaded = true;
	return 0;
}

static int vm_devices(struct vm *vm)
{
	struct machine_desc md = {
		.n_vcpus = vm->n_vcpus, .apic_ids = vm->apic_ids, .ram_size = vm->ram_size,
		.hole_start = vm->hole_start, .cmdline = vm->cfg.cmdline ? vm->cfg.cmdline : "",
		.files = vm->boot_loaded ? vm->boot.files : NULL, .n_files = vm->boot_loaded ? vm->boot.n_files : 0,
		.console_path = NULL, .console_input = vm->cfg.console_input,
	};
	int err;

	err = bus_create(&vm->bus);
	if (err) {
		vm_report("bus: %s", strerror(-err));
		return err;
	}
	vm->n_dev = device_type_count();
	vm->dev_state = calloc(vm->n_dev ? vm->n_dev : 1, sizeof(*vm->dev_state));
	if (!vm->dev_state)
		return -ENOMEM;
	for (size_t i = 0; i < vm->n_dev; i++) {
		const struct device_type *t = device_type_at(i);

		err = t->create(vm->bus, &md, &vm->svc, &vm->dev_state[i]);
		if (err) {
			vm_report("device %s: %s", t->name, strerror(-err));
			vm->n_dev = i;   /* destroy only those created */
			return err;
		}
	}
	err = ioapic_create(vm->bus, &vm->svc, &vm->ioapic);
	if (err) {
		vm_report("ioapic: %s", strerror(-err));
		return err;
	}
	return 0;
}

static void vm_devices_destroy(struct vm *vm)
{
	if (vm->ioapic)
		ioapic_destroy(vm->ioapic);
	vm->ioapic = NULL;
	for (size_t i = vm->n_dev; i-- > 0;) {
		const struct device_type *t = device_type_at(i);

		if (t->destroy)
			t->destroy(vm->dev_state[i]);
	}
	free(vm->dev_state);
	vm->dev_state = NULL;
	vm->n_dev = 0;
	if (vm->bus)
		bus_destroy(vm->bus);
	vm->bus = NULL;
}

static int vm_check_config(const struct vm_config *cfg)
{
	if (cfg->n_vcpus == 0 || cfg->n_vcpus > VM_MAX_VCPUS) {
		vm_report("--vcpus %u: must be 1..%u", cfg->n_vcpus, VM_MAX_VCPUS);
		return -EINVAL;
	}
	if (cfg->ram_size < fw_min_ram()) {
		vm_report("--mem %lluK is too small: this guest needs at least %lluK",
			  (unsigned long long)(cfg->ram_size >> 10), (unsigned long long)(fw_min_ram() >> 10));
		return -EINVAL;
	}
	if (cfg->ram_size % 4096) {
		vm_report("--mem must be a multiple of 4 KiB");
		return -EINVAL;
	}
	if (!cfg->kernel) {
		vm_report("no kernel to boot");
		return -EINVAL;
	}
	if (cfg->node_of) {
		for (unsigned i = 0; i < cfg->n_vcpus; i++) {
			if (cfg->n_nodes && cfg->node_of[i] >= cfg->n_nodes) {
				vm_report("vCPU %u placed on node %u of %u", i, cfg->node_of[i], cfg->n_nodes);
				return -EINVAL;
			}
		}
	}
	return 0;
}

int vm_create(const struct vm_config *cfg, struct vm **out)
{
	char why[256];
	struct vm *vm;
	int err;

	err = vm_check_config(cfg);
	if (err)
		return err;
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->cfg = *cfg;
	vm->n_vcpus = cfg->n_vcpus;
	vm->tsc_hz = VM_TSC_HZ;
	vm->stop_pipe[0] = vm->stop_pipe[1] = -1;
	atomic_store(&vm->timer_next, 0);   /* until the timer thread published its own: signal */
	atomic_store(&vm->stop_code, INT_MIN);
	pthread_mutex_init(&vm->console_lock, NULL);
	pthread_mutex_init(&vm->why_lock, NULL);
	pthread_mutex_init(&vm->timer_lock, NULL);
	clock_cond_init(&vm->timer_cond);
	vm->svc = (struct vm_services){ .opaque = vm, .irq_set = svc_irq_set, .console_write = svc_console_write,
					.request_exit = svc_request_exit, .now_ns = svc_now_ns,
					.deliver = svc_deliver };
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		vm->apic_ids[i] = i;
		vm->node_of[i] = cfg->node_of ? cfg->node_of[i] : cfg->self;
	}
	vm->io_local = cfg->io_node == cfg->self || !cfg->hooks;

	if (pipe2(vm->stop_pipe, O_CLOEXEC)) {
		err = -errno;
		goto out_destroy;
	}
	vm->accel = accel_choose(cfg->accel ? cfg->accel : "auto", why, sizeof(why));
	if (!vm->accel) {
		vm_report("--accel %s: %s", cfg->accel ? cfg->accel : "auto", why);
		err = -ENODEV;
		goto out_destroy;
	}
	if (vm->accel->tsc_hz) {
		uint64_t real = vm->accel->tsc_hz(vm->tsc_hz);

		if (real && real != vm->tsc_hz) {
			pr_info("%s: the guest TSC runs at %llu kHz (no TSC scaling): CPUID and the APIC timer use that rate",
				vm->accel->name, (unsigned long long)(real / 1000));
			vm->tsc_hz = real;
		}
	}
	err = vm_ram_setup(vm, cfg);
	if (err)
		goto out_destroy;
	err = vm_cpuid_setup(vm);
	if (err)
		goto out_destroy;
	struct accel_vm_config ac = { .ram = vm->ram, .ram_size = vm->ram_size, .hole_start = vm->hole_start,
				      .cpuid = vm->cpuid, .n_cpuid = vm->n_cpuid, .tsc_hz = vm->tsc_hz };
	err = vm->accel->vm_create(&ac, &vm->avm);
	if (err) {
		vm_report("%s: cannot create the VM: %s", vm->accel->name, strerror(-err));
		goto out_destroy;
	}
	err = vm_firmware(vm);
	if (err)
		goto out_destroy;
	err = apicbus_create(vm->n_vcpus, vm->apic_ids, vm->node_of, cfg->self, cfg->hooks ? &cfg->hooks->apic : NULL,
			     &vm->apicbus);
	if (err) {
		vm_report("APIC bus: %s", strerror(-err));
		goto out_destroy;
	}
	if (vm->io_local) {
		err = vm_devices(vm);
		if (err)
			goto out_destroy;
	}
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		if (vm->node_of[i] != cfg->self)
			continue;
		err = vcpu_create(vm, i, &vm->vcpus[i]);
		if (err)
			goto out_destroy;
		apicbus_attach(vm->apicbus, i, vm->vcpus[i]->lapic);
		vm->n_local++;
	}
	if (vm->vcpus[0] && vm->boot_loaded && vm_boot_here(vm)) {
		err = vcpu_load_boot(vm->vcpus[0], &vm->boot);
		if (err) {
			vm_report("cannot load the boot CPU's entry state: %s", strerror(-err));
			goto out_destroy;
		}
	}
	err = pthread_create(&vm->timer_thread, NULL, vm_timer_thread, vm);
	if (err) {
		err = -err;
		goto out_destroy;
	}
	vm->timer_started = true;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		if (!vm->vcpus[i])
			continue;
		err = vcpu_thread_start(vm->vcpus[i]);
		if (err) {
			vm_report("vcpu %u: cannot start its thread: %s", i, strerror(-err));
			goto out_destroy;
		}
	}
	*out = vm;
	return 0;

out_destroy:
	vm_destroy(vm);
	return err;
}

/* ---- run / stop ------------------------------------------------------------------------------------------ */

int vm_start(struct vm *vm)
{
	if (vm->started)
		return -EALREADY;
	vm->started = true;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		if (vm->vcpus[i]) {
			int err = vcpu_post(vm->vcpus[i], VM_VCPU_RESUME);

			if (err)
				return err;
		}
	}
	return 0;
}

void vm_stop(struct vm *vm, int code)
{
	int none = INT_MIN;
	char b = 's';

	atomic_compare_exchange_strong(&vm->stop_code, &none, code);
	atomic_store(&vm->stopping, true);
	for (unsigned i = 0; i < vm->n_vcpus; i++)
		if (vm->vcpus[i])
			vm->accel->kick(vm->vcpus[i]->av);
	if (write(vm->stop_pipe[1], &b, 1) < 0) {
		/* the pipe holds bytes already: vm_wait wakes anyway */
	}
}

static void vm_threads_stop(struct vm *vm)
{
	for (unsigned i = 0; i < vm->n_vcpus; i++)
		if (vm->vcpus[i])
			vcpu_thread_join(vm->vcpus[i]);
	if (vm->timer_started) {
		pthread_mutex_lock(&vm->timer_lock);
		vm->timer_quit = true;
		pthread_cond_signal(&vm->timer_cond);
		pthread_mutex_unlock(&vm->timer_lock);
		pthread_join(vm->timer_thread, NULL);
		vm->timer_started = false;
	}
}

int vm_wait(struct vm *vm)
{
	const struct vm_cluster_hooks *h = vm->cfg.hooks;
	char b;
	int code;

	if (vm->waited)
		return vm->wait_result;
	while (!atomic_load(&vm->stopping) || atomic_load(&vm->stop_code) == INT_MIN) {
		ssize_t r = read(vm->stop_pipe[0], &b, 1);

		if (r < 0 && errno != EINTR)
			break;
	}
	code = atomic_load(&vm->stop_code);
	if (code == INT_MIN)
		code = 1;
	if (h && h->exit_broadcast && !atomic_load(&vm->stop_remote)) {
		char why[sizeof(vm->stop_why)];

		pthread_mutex_lock(&vm->why_lock);
		snprintf(why, sizeof(why), "%s", vm->stop_why[0] ? vm->stop_why : "exit");
		pthread_mutex_unlock(&vm->why_lock);
		h->exit_broadcast(h->opaque, code, why);
	}
	vm_threads_stop(vm);
	console_flush(vm);
	vm->waited = true;
	vm->wait_result = code;
	return code;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	if (!atomic_load(&vm->stopping)) {
		atomic_store(&vm->stop_code, vm->started ? 1 : 0);
		atomic_store(&vm->stopping, true);
	}
	vm_threads_stop(vm);
	if (vm->n_dev || vm->bus)
		console_flush(vm);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		vcpu_destroy(vm->vcpus[i]);
		vm->vcpus[i] = NULL;
	}
	vm_devices_destroy(vm);
	if (vm->apicbus)
		apicbus_destroy(vm->apicbus);
	if (vm->boot_loaded)
		fw_boot_release(&vm->boot);
	if (vm->avm)
		vm->accel->vm_destroy(vm->avm);
	if (vm->ram_owned)
		munmap(vm->ram, vm->ram_size);
	if (vm->stop_pipe[0] >= 0)
		close(vm->stop_pipe[0]);
	if (vm->stop_pipe[1] >= 0)
		close(vm->stop_pipe[1]);
	pthread_cond_destroy(&vm->timer_cond);
	pthread_mutex_destroy(&vm->timer_lock);
	pthread_mutex_destroy(&vm->console_lock);
	pthread_mutex_destroy(&vm->why_lock);
	free(vm);
}

/* ---- requests from other nodes --------------------------------------------------------------------------- */

int vm_remote_io(struct vm *vm, enum bus_space space, struct io_access *a)
{
	if (!vm->io_local || !vm->bus)
		return -ENOENT;
	return bus_access(vm->bus, space, a);
}

void vm_remote_eoi(struct vm *vm, uint8_t vector)
{
	if (vm->io_local && vm->ioapic)
		ioapic_eoi(vm->ioapic, vector);
}

void vm_remote_irq(struct vm *vm, const struct irq_msg *m)
{
	apicbus_deliver_local(vm->apicbus, m);
}

void vm_remote_logical(struct vm *vm, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	apicbus_set_logical_remote(vm->apicbus, apic_id, ldr, dfr);
}

void vm_remote_exit(struct vm *vm, int code, const char *why)
{
	vm_set_why(vm, why ? why : "remote exit");
	atomic_store(&vm->stop_remote, true);
	vm_stop(vm, code);
}

/* ---- stats and vCPU control ------------------------------------------------------------------------------ */

void vm_get_stats(struct vm *vm, struct vm_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->n_local_vcpus = vm->n_local;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		struct vcpu *v = vm->vcpus[i];

		if (!v)
			continue;
		out->exits_io += atomic_load(&v->ctr.exits_io);
		out->io_unclaimed += atomic_load(&v->ctr.io_unclaimed);
		out->exits_mmio += atomic_load(&v->ctr.exits_mmio);
		out->exits_msr += atomic_load(&v->ctr.exits_msr);
		out->exits_hlt += atomic_load(&v->ctr.exits_hlt);
		out->irqs_injected += atomic_load(&v->ctr.irqs_injected);
		out->io_forwarded += atomic_load(&v->ctr.io_forwarded);
		if (vm->accel->insn_count)
			out->guest_insns += vm->accel->insn_count(v->av);
	}
}

static struct vcpu *vm_vcpu(struct vm *vm, unsigned vcpu)
{
	return vcpu < vm->n_vcpus ? vm->vcpus[vcpu] : NULL;
}

int vm_vcpu_post(struct vm *vm, unsigned vcpu, enum vm_vcpu_msg msg)
{
	struct vcpu *v = vm_vcpu(vm, vcpu);

	return v ? vcpu_post(v, msg) : -ENOENT;
}

enum vm_vcpu_state vm_vcpu_state(struct vm *vm, unsigned vcpu)
{
	struct vcpu *v = vm_vcpu(vm, vcpu);

	return v ? (enum vm_vcpu_state)atomic_load(&v->state) : VM_VCPU_STOPPED;
}

int vm_vcpu_wait_state(struct vm *vm, unsigned vcpu, enum vm_vcpu_state state, uint64_t timeout_ns)
{
	struct vcpu *v = vm_vcpu(vm, vcpu);
	uint64_t deadline = clock_now_ns() + timeout_ns;
	int err = 0;

	if (!v)
		return -ENOENT;
	pthread_mutex_lock(&v->lock);
	while (atomic_load(&v->state) != (int)state) {
		struct timespec ts = clock_timespec(deadline);

		if (pthread_cond_timedwait(&v->cond, &v->lock, &ts) == ETIMEDOUT &&
		    atomic_load(&v->state) != (int)state) {
			err = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&v->lock);
	return err;
}
