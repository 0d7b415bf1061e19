/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the kernel loaders: the input is the kernel file (through a memfd, as fw_setup reads a
 * path), loaded into 16 MiB of guest RAM with 2 vCPUs, a command line and no modules. Format detection, the
 * multiboot header and a.out fields, ELF32/ELF64 program headers, the bzImage setup header, vmlinux: every offset
 * comes from the input. Invariant: fw_setup returns 0, or < 0 with a one-line message; nothing crashes or leaks.
 * Seeds (tests/fuzz/corpus/fuzz_fw/): a multiboot ELF32, an a.out-kludge image, a bzImage and a vmlinux.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hypervisor/fw.h"
#include "util/log.h"

#define FUZZ_RAM (16u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *ram;
	static int fd = -1;
	static char path[64];
	static const uint32_t ids[2] = { 0, 1 };

	if (!ram) {
		ram = mmap(NULL, FUZZ_RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		fd = memfd_create("fuzz-kernel", 0);
		if (ram == MAP_FAILED || fd < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		log_set_quiet(true);
	}
	if (ftruncate(fd, 0) < 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
		abort();
	struct fw_config cfg = { .n_vcpus = 2, .apic_ids = ids, .n_nodes = 1, .ram_size = FUZZ_RAM,
				 .hole_start = 0xc0000000, .kernel = path, .cmdline = "console=ttyS0" };
	struct fw_boot b;
	char err[256] = "";
	int r = fw_setup(&cfg, ram, &b, err, sizeof(err));
	if (r == 0)
		fw_boot_release(&b);
	else if (!err[0] || strchr(err, '\n'))
		abort();
	return 0;
}
