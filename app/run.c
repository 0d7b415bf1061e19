// SPDX-License-Identifier: MIT
/*
 * rackvm run: boot one guest on this host, as a single node. Guest RAM is a one-member dsm region (loop
 * transport), so the memory path is the one a spanning guest uses; every vCPU and device is local.
 *
 * Exit status: the guest's (isa-debug-exit: (code << 1) | 1, as qemu), 1 after an error (one line on stderr),
 * 2 for a usage error, 130/143 after SIGINT/SIGTERM (the VM is torn down cleanly first).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "app/commands.h"
#include "app/opts.h"
#include "dsm/region.h"
#include "hypervisor/accel.h"
#include "hypervisor/fw.h"
#include "hypervisor/vm.h"
#include "util/log.h"

#define RUN_MAX_MODULES FW_MAX_MODULES
#define RUN_DEFAULT_MEM (128ull << 20)

static _Atomic(struct vm *) run_vm;

static void run_usage(FILE *f)
{
	fprintf(f,
		"usage: rackvm run --kernel FILE [OPTIONS]\n"
		"\n"
		"Boot one guest on this host (a single node).\n"
		"\n"
		"  --kernel FILE        multiboot v1 ELF, Linux bzImage or vmlinux ELF to boot (required)\n"
		"  --cmdline STRING     kernel command line\n"
		"  --initrd FILE        initial ramdisk (Linux)\n"
		"  --module 'FILE[ ARGS]'  multiboot module with its command line (repeatable, at most %d)\n"
		"  --vcpus N            virtual CPUs, 1..%d (default 1)\n"
		"  --mem SIZE           guest RAM; suffix K, M or G, a plain number is MiB (default 128M)\n"
		"  --accel auto|kvm|emu execution backend (default auto: kvm when /dev/kvm works, else emu)\n"
		"  --console-input      forward stdin to the guest's serial port\n"
		"  --strict-io          stop the guest at an access to a port nothing claims (default: reads give\n"
		"                       all-ones and writes are dropped, as on a PC bus)\n"
		"  -v, --verbose        how the guest exited and exit statistics (RACKVM_LOG=debug: everything)\n"
		"  -h, --help           this text\n"
		"\n"
		"Exit status: the guest's isa-debug-exit status ((code << 1) | 1), 1 on an error, 2 on a usage error,\n"
		"130/143 when interrupted by SIGINT/SIGTERM.\n",
		RUN_MAX_MODULES, VM_MAX_VCPUS);
}

/* "128M", "1G", "65536K", "256" (MiB). 0 with errno-like -EINVAL on junk. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 20;

	errno = 0;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (*end) {
	case '\0':
		shift = 20;
		break;
	case 'k': case 'K':
		shift = 10;
		end++;
		break;
	case 'm': case 'M':
		shift = 20;
		end++;
		break;
	case 'g': case 'G':
		shift = 30;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end || v == 0 || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 1000000)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* A file the loaders will read: readable now, so the error names the option. */
static int check_file(const char *opt, const char *path, size_t len)
{
	char p[4096];
	int fd;

	if (len >= sizeof(p)) {
		fprintf(stderr, "rackvm: %s: path too long\n", opt);
		return -ENAMETOOLONG;
	}
	memcpy(p, path, len);
	p[len] = '\0';
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;

		fprintf(stderr, "rackvm: %s %s: %s\n", opt, p, strerror(err));
		return -err;
	}
	close(fd);
	return 0;
}

static void run_on_signal(int sig)
{
	struct vm *vm = atomic_load(&run_vm);

	if (vm)
		vm_stop(vm, 128 + sig);
}

static void run_on_region_fatal(void *opaque, uint32_t node, const char *reason)
{
	struct vm *vm = atomic_load(&run_vm);

	fprintf(stderr, "rackvm: guest memory failed (node %u): %s\n", node, reason);
	if (vm)
		vm_stop(vm, 1);
}

/* Guest RAM as a one-node dsm region (no network); NULL (anonymous memory) with a warning if the host refuses. */
static struct dsm_region *run_region_create(uint64_t size)
{
	struct dsm_region_config rc;
	struct dsm_region *r;
	int err;

	memset(&rc, 0, sizeof(rc));
	rc.self = 0;
	rc.n_nodes = 1;
	rc.size = size;
	rc.on_fatal = run_on_region_fatal;
	err = dsm_region_create(&rc, &r);
	if (err) {
		pr_warn("guest RAM from a dsm region failed (%s): using private memory", strerror(-err));
		return NULL;
	}
	return r;
}

static void run_print_stats(struct vm *vm, struct dsm_region *region)
{
	struct vm_stats s;

	vm_get_stats(vm, &s);
	pr_info("stats: %u vcpus, exits io %" PRIu64 " (unclaimed ports %" PRIu64 ") mmio %" PRIu64 " msr %" PRIu64
		" hlt %" PRIu64 ", irqs injected %" PRIu64 ", guest instructions %" PRIu64,
		s.n_local_vcpus, s.exits_io, s.io_unclaimed, s.exits_mmio, s.exits_msr, s.exits_hlt, s.irqs_injected,
		s.guest_insns);
	if (region) {
		struct dsm_region_stats d;

		dsm_region_get_stats(region, &d);
		pr_info("stats: guest RAM faults read %" PRIu64 " write %" PRIu64 " wp %" PRIu64, d.faults_read,
			d.faults_write, d.faults_wp);
	}
}

int rackvm_cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "cmdline", required_argument, NULL, 'c' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "module", required_argument, NULL, 'M' },
		{ "vcpus", required_argument, NULL, 'n' },
		{ "mem", required_argument, NULL, 'm' },
		{ "accel", required_argument, NULL, 'a' },
		{ "console-input", no_argument, NULL, 'I' },
		{ "strict-io", no_argument, NULL, 'S' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *modules[RUN_MAX_MODULES];
	struct vm_config cfg = {
		.accel = "auto", .n_vcpus = 1, .ram_size = RUN_DEFAULT_MEM, .n_nodes = 1, .console_fd = STDOUT_FILENO,
	};
	struct dsm_region *region = NULL;
	struct sigaction sa, old_int, old_term, old_pipe;
	const struct accel_ops *accel;
	char why[256];
	struct vm *vm;
	int c, err, code;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			cfg.kernel = optarg;
			break;
		case 'c':
			cfg.cmdline = optarg;
			break;
		case 'i':
			cfg.initrd = optarg;
			break;
		case 'M':
			if (opts_add_module("rackvm", modules, &cfg.n_modules, RUN_MAX_MODULES, optarg))
				return 2;
			break;
		case 'n':
			if (parse_uint(optarg, &cfg.n_vcpus) || cfg.n_vcpus == 0 || cfg.n_vcpus > VM_MAX_VCPUS) {
				fprintf(stderr, "rackvm: --vcpus %s: must be a number from 1 to %d\n", optarg,
					VM_MAX_VCPUS);
				return 2;
			}
			break;
		case 'm':
			if (parse_size(optarg, &cfg.ram_size)) {
				fprintf(stderr, "rackvm: --mem %s: not a size (e.g. 128M, 1G, 65536K)\n", optarg);
				return 2;
			}
			break;
		case 'a':
			if (strcmp(optarg, "auto") && !accel_find(optarg)) {
				fprintf(stderr, "rackvm: --accel %s: unknown accelerator (auto, kvm, emu)\n", optarg);
				return 2;
			}
			cfg.accel = optarg;
			break;
		case 'I':
			cfg.console_input = true;
			break;
		case 'S':
			cfg.strict_io = true;
			break;
		case 'v':
			cfg.verbose = true;
			break;
		case 'h':
			run_usage(stdout);
			return 0;
		case ':':
			fprintf(stderr, "rackvm: run: option %s needs a value (try 'rackvm run --help')\n",
				argv[optind - 1]);
			return 2;
		default:
			fprintf(stderr, "rackvm: run: unknown option '%s' (try 'rackvm run --help')\n", argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "rackvm: run: unexpected argument '%s' (try 'rackvm run --help')\n", argv[optind]);
		return 2;
	}
	if (!cfg.kernel) {
		fprintf(stderr, "rackvm: run: --kernel FILE is required (try 'rackvm run --help')\n");
		return 2;
	}
	cfg.modules = modules;
	if (check_file("--kernel", cfg.kernel, strlen(cfg.kernel)) ||
	    (cfg.initrd && check_file("--initrd", cfg.initrd, strlen(cfg.initrd))))
		return 1;
	for (size_t i = 0; i < cfg.n_modules; i++)
		if (check_file("--module", modules[i], strcspn(modules[i], " ")))
			return 1;
	if (cfg.ram_size < fw_min_ram()) {
		fprintf(stderr, "rackvm: --mem %lluK is too small: at least %lluK is needed\n",
			(unsigned long long)(cfg.ram_size >> 10), (unsigned long long)(fw_min_ram() >> 10));
		return 1;
	}
	cfg.ram_size = (cfg.ram_size + 4095) & ~4095ull;

	accel = accel_choose(cfg.accel, why, sizeof(why));
	if (!accel) {
		fprintf(stderr, "rackvm: --accel %s: %s\n", cfg.accel, why);
		return 1;
	}
	cfg.accel = accel->name;

	region = run_region_create(cfg.ram_size);
	cfg.region = region;
	err = vm_create(&cfg, &vm);
	if (err) {
		if (region)
			dsm_region_destroy(region);
		return 1;
	}
	pr_info("accelerator %s (%s)", accel->name, why);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = run_on_signal;
	sigemptyset(&sa.sa_mask);
	atomic_store(&run_vm, vm);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, &old_pipe);   /* a closed console pipe drops output, it does not kill the VMM */

	err = vm_start(vm);
	if (err) {
		fprintf(stderr, "rackvm: cannot start the vCPUs: %s\n", strerror(-err));
		vm_stop(vm, 1);
	}
	code = vm_wait(vm);
	if (cfg.verbose)
		run_print_stats(vm, region);
	atomic_store(&run_vm, NULL);
	vm_destroy(vm);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGPIPE, &old_pipe, NULL);
	if (region)
		dsm_region_destroy(region);
	return code;
}
