/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the platform devices and the IOAPIC: every input builds a fresh bus with every device of
 * the table plus the IOAPIC (fake services, fake clock), then replays 8-byte records as guest accesses:
 *   byte 0: op (low 2 bits) 0 PIO to a claimed port, 1 IOAPIC MMIO, 2 ioapic_set_irq, 3 ioapic_eoi
 *   byte 1: port index / MMIO dword offset / GSI / vector;  byte 2: size (1,2,4,8,3 by low 3 bits), bit 7 write
 *   bytes 3-6: data (le32);  byte 7: fake-clock advance in microseconds
 * Claimed accesses must succeed (every device answers what it claims); nothing may crash, leak or hang.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hypervisor/bus.h"
#include "hypervisor/ioapic.h"
#include "util/log.h"

static uint64_t fake_ns;
static unsigned n_exits;
static uint16_t ports[512];
static size_t n_ports;

static void f_irq_set(void *o, unsigned gsi, int level) { (void)o; (void)gsi; (void)level; }
static void f_console(void *o, const void *b, size_t n) { (void)o; (void)b; (void)n; }
static void f_exit(void *o, int code, const char *why) { (void)o; (void)code; (void)why; n_exits++; }
static uint64_t f_now(void *o) { (void)o; return __atomic_load_n(&fake_ns, __ATOMIC_RELAXED); }
static int f_deliver(void *o, const struct irq_msg *m) { (void)o; (void)m; return 0; }

static const struct vm_services svc = {
	.irq_set = f_irq_set, .console_write = f_console, .request_exit = f_exit, .now_ns = f_now,
	.deliver = f_deliver,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t sizes[8] = { 1, 2, 4, 8, 3, 1, 2, 4 };
	static const uint32_t apic_ids[2] = { 0, 1 };
	static const struct fw_file files[2] = {
		{ .name = "etc/b", .data = "bbbb", .size = 4 },
		{ .name = "etc/a", .data = "a", .size = 1 },
	};
	struct machine_desc m = { .n_vcpus = 2, .apic_ids = apic_ids, .ram_size = 6ull << 30,
				  .hole_start = 0xc0000000ull, .cmdline = "console=ttyS0", .files = files,
				  .n_files = 2 };
	void *state[32];
	size_t n = device_type_count();
	struct ioapic *io;
	struct bus *b;

	log_set_quiet(true);
	if (n > 32 || bus_create(&b))
		abort();
	fake_ns = 1000000000ull;
	for (size_t i = 0; i < n; i++)
		if (device_type_at(i)->create(b, &m, &svc, &state[i]))
			abort();
	if (ioapic_create(b, &svc, &io))
		abort();
	if (!n_ports) {
		for (uint32_t p = 0; p < 0x10000 && n_ports < sizeof(ports) / sizeof(ports[0]); p++)
			if (bus_owner(b, BUS_PIO, p))
				ports[n_ports++] = (uint16_t)p;
	}
	for (size_t off = 0; off + 8 <= size; off += 8) {
		const uint8_t *r = data + off;
		struct io_access a = { .size = sizes[r[2] & 7], .write = r[2] & 0x80,
				       .data = (uint64_t)r[3] | (uint64_t)r[4] << 8 | (uint64_t)r[5] << 16 |
					       (uint64_t)r[6] << 24 };

		switch (r[0] & 3) {
		case 0:
			a.addr = ports[r[1] % n_ports];
			if (bus_access(b, BUS_PIO, &a))
				abort();
			break;
		case 1:
			a.addr = IOAPIC_BASE + 4u * r[1];
			if (bus_access(b, BUS_MMIO, &a))
				abort();
			break;
		case 2:
			ioapic_set_irq(io, r[1] % 26, r[3] & 1);
			break;
		default:
			ioapic_eoi(io, r[1]);
			break;
		}
		__atomic_add_fetch(&fake_ns, (uint64_t)r[7] * 1000, __ATOMIC_RELAXED);
	}
	ioapic_destroy(io);
	for (size_t i = n; i-- > 0;)
		device_type_at(i)->destroy(state[i]);
	bus_destroy(b);
	return 0;
}
