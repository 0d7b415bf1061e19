/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the bus, the device table and the platform devices (UART, isa-debug-exit, fw_cfg, PIT, RTC/CMOS,
 * PIC, legacy ports) and the IOAPIC. Every access goes through bus_access with a fake vm_services that records
 * IRQ line levels, console bytes, exit requests and interrupt messages, and a fake clock.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "hypervisor/bus.h"
#include "hypervisor/ioapic.h"
#include "util/clock.h"
#include "util/log.h"

/* ---- fake VM services ---- */

#define MAX_EVENTS 4096
#define MAX_MSGS 64

struct irq_event {
	unsigned gsi;
	int level;
};

struct fake {
	pthread_mutex_t lock;
	struct irq_event ev[MAX_EVENTS];
	unsigned n_ev;
	int level[32];
	char console[4096];
	size_t n_console;
	int exit_code;
	unsigned n_exits;
	struct irq_msg msgs[MAX_MSGS];
	unsigned n_msgs;
	uint64_t now;
	atomic_bool pit_parked;       /* the PIT's timer thread has nothing scheduled (vm_services.timer_parked) */
};

static void fake_irq_set(void *opaque, unsigned gsi, int level)
{
	struct fake *f = opaque;

	pthread_mutex_lock(&f->lock);
	if (f->n_ev < MAX_EVENTS)
		f->ev[f->n_ev++] = (struct irq_event){ gsi, level };
	if (gsi < 32)
		f->level[gsi] = level;
	pthread_mutex_unlock(&f->lock);
}

static void fake_console_write(void *opaque, const void *buf, size_t len)
{
	struct fake *f = opaque;

	pthread_mutex_lock(&f->lock);
	for (size_t i = 0; i < len && f->n_console < sizeof(f->console); i++)
		f->console[f->n_console++] = ((const char *)buf)[i];
	pthread_mutex_unlock(&f->lock);
}

static void fake_request_exit(void *opaque, int code, const char *why)
{
	struct fake *f = opaque;

	pthread_mutex_lock(&f->lock);
	f->exit_code = code;
	f->n_exits++;
	pthread_mutex_unlock(&f->lock);
}

static uint64_t fake_now(void *opaque)
{
	struct fake *f = opaque;

	return __atomic_load_n(&f->now, __ATOMIC_SEQ_CST);
}

static void fake_timer_parked(void *opaque, const char *device, bool parked)
{
	struct fake *f = opaque;

	if (!strcmp(device, "pit"))
		atomic_store(&f->pit_parked, parked);
}

static void fake_advance(struct fake *f, uint64_t ns)
{
	__atomic_add_fetch(&f->now, ns, __ATOMIC_SEQ_CST);
}

static int fake_deliver(void *opaque, const struct irq_msg *m)
{
	struct fake *f = opaque;

	pthread_mutex_lock(&f->lock);
	if (f->n_msgs < MAX_MSGS)
		f->msgs[f->n_msgs++] = *m;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

/* Number of 1->0 pulses (edges) recorded on gsi. */
static unsigned fake_pulses(struct fake *f, unsigned gsi)
{
	unsigned n = 0;

	pthread_mutex_lock(&f->lock);
	for (unsigned i = 0; i + 1 < f->n_ev; i++)
		if (f->ev[i].gsi == gsi && f->ev[i].level == 1 && f->ev[i + 1].gsi == gsi && f->ev[i + 1].level == 0)
			n++;
	pthread_mutex_unlock(&f->lock);
	return n;
}

static int fake_level(struct fake *f, unsigned gsi)
{
	int l;

	pthread_mutex_lock(&f->lock);
	l = f->level[gsi];
	pthread_mutex_unlock(&f->lock);
	return l;
}

/* ---- test environment: a bus with some devices from the table ---- */

#define MAX_DEVS 16

struct env {
	struct fake f;
	struct vm_services svc;
	struct machine_desc m;
	uint32_t apic_ids[4];
	struct bus *bus;
	const struct device_type *types[MAX_DEVS];
	void *states[MAX_DEVS];
	size_t n;
	struct ioapic *ioapic;
};

static struct env *env_new(void)
{
	struct env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	pthread_mutex_init(&e->f.lock, NULL);
	e->f.now = 1000 * NSEC_PER_SEC;
	e->svc = (struct vm_services){ .opaque = &e->f, .irq_set = fake_irq_set, .console_write = fake_console_write,
				       .request_exit = fake_request_exit, .now_ns = fake_now,
				       .timer_parked = fake_timer_parked,
				       .deliver = fake_deliver };
	for (unsigned i = 0; i < 4; i++)
		e->apic_ids[i] = i;
	e->m = (struct machine_desc){ .n_vcpus = 3, .apic_ids = e->apic_ids, .ram_size = 128ull << 20,
				      .cmdline = "console=ttyS0 quiet" };
	assert_int_equal(bus_create(&e->bus), 0);
	return e;
}

static void env_add(struct env *e, const char *name)
{
	const struct device_type *t = device_type_find(name);

	assert_non_null(t);
	assert_true(e->n < MAX_DEVS);
	assert_int_equal(t->create(e->bus, &e->m, &e->svc, &e->states[e->n]), 0);
	e->types[e->n++] = t;
}

static void env_free(struct env *e)
{
	while (e->n > 0) {
		e->n--;
		e->types[e->n]->destroy(e->states[e->n]);
	}
	ioapic_destroy(e->ioapic);
	bus_destroy(e->bus);
	pthread_mutex_destroy(&e->f.lock);
	free(e);
}

static int pio(struct env *e, uint16_t port, uint8_t size, bool write, uint64_t *data)
{
	struct io_access a = { .addr = port, .size = size, .write = write, .data = write ? *data : 0 };
	int r = bus_access(e->bus, BUS_PIO, &a);

	if (!write)
		*data = a.data;
	return r;
}

static void outb(struct env *e, uint16_t port, uint64_t v)
{
	assert_int_equal(pio(e, port, 1, true, &v), 0);
}

static void outw(struct env *e, uint16_t port, uint64_t v)
{
	assert_int_equal(pio(e, port, 2, true, &v), 0);
}

static void outl(struct env *e, uint16_t port, uint64_t v)
{
	assert_int_equal(pio(e, port, 4, true, &v), 0);
}

static uint64_t in_sz(struct env *e, uint16_t port, uint8_t size)
{
	uint64_t v = 0xdeadbeef;

	assert_int_equal(pio(e, port, size, false, &v), 0);
	return v;
}

static uint8_t inb(struct env *e, uint16_t port)
{
	return (uint8_t)in_sz(e, port, 1);
}

/* ---- bus ---- */

static int record_handler(void *opaque, struct io_access *a)
{
	struct io_access *last = opaque;

	*last = *a;
	if (!a->write)
		a->data = 0x1234;
	return a->addr == 0x17 ? -EOPNOTSUPP : 0;
}

static void test_bus_claim_overlap(void **state)
{
	struct bus *b;
	struct io_access last;

	assert_int_equal(bus_create(&b), 0);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x10, 8, "a", record_handler, &last), 0);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x17, 4, "b", record_handler, &last), -EBUSY);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x08, 9, "b", record_handler, &last), -EBUSY);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x00, 0x100, "b", record_handler, &last), -EBUSY);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x12, 1, "b", record_handler, &last), -EBUSY);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x18, 8, "c", record_handler, &last), 0);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x08, 8, "d", record_handler, &last), 0);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x30, 0, "e", record_handler, &last), -EINVAL);
	assert_int_equal(bus_claim(b, BUS_PIO, ~0ull - 3, 8, "wrap", record_handler, &last), -EINVAL);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x40, 1, "nofn", NULL, NULL), -EINVAL);
	/* the spaces are independent */
	assert_int_equal(bus_claim(b, BUS_MMIO, 0x10, 8, "m", record_handler, &last), 0);
	assert_int_equal(bus_claim(b, BUS_MMIO, 0xfec00000, 0x1000, "big", record_handler, &last), 0);
	assert_int_equal(bus_claim(b, BUS_MMIO, 0xfec00fff, 1, "in", record_handler, &last), -EBUSY);
	assert_int_equal(bus_claim(b, (enum bus_space)7, 0x0, 1, "bad", record_handler, &last), -EINVAL);
	bus_destroy(b);
}

static void test_bus_dispatch_and_owner(void **state)
{
	struct bus *b;
	struct io_access last, a = { .addr = 0x13, .size = 2, .write = true, .data = 0xabcd, .vcpu = 2 };

	assert_int_equal(bus_create(&b), 0);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x10, 8, "uart-like", record_handler, &last), 0);
	assert_int_equal(bus_claim(b, BUS_PIO, 0x20, 2, "pic-like", record_handler, &last), 0);
	assert_int_equal(bus_access(b, BUS_PIO, &a), 0);
	assert_int_equal(last.offset, 3);
	assert_int_equal(last.data, 0xabcd);
	assert_int_equal(last.vcpu, 2);
	assert_true(last.write);
	a = (struct io_access){ .addr = 0x21, .size = 1 };
	assert_int_equal(bus_access(b, BUS_PIO, &a), 0);
	assert_int_equal(a.data, 0x1234);
	assert_int_equal(last.offset, 1);
	a = (struct io_access){ .addr = 0x17, .size = 1 };
	assert_int_equal(bus_access(b, BUS_PIO, &a), -EOPNOTSUPP);
	uint64_t unclaimed[] = { 0x0f, 0x18, 0x1f, 0x22, 0xffff };

	for (size_t i = 0; i < sizeof(unclaimed) / sizeof(unclaimed[0]); i++) {
		a = (struct io_access){ .addr = unclaimed[i], .size = 1 };
		assert_int_equal(bus_access(b, BUS_PIO, &a), -ENOENT);
		assert_null(bus_owner(b, BUS_PIO, unclaimed[i]));
	}
	a = (struct io_access){ .addr = 0x10, .size = 1 };
	assert_int_equal(bus_access(b, BUS_MMIO, &a), -ENOENT);
	assert_string_equal(bus_owner(b, BUS_PIO, 0x10), "uart-like");
	assert_string_equal(bus_owner(b, BUS_PIO, 0x17), "uart-like");
	assert_string_equal(bus_owner(b, BUS_PIO, 0x21), "pic-like");
	assert_null(bus_owner(b, BUS_MMIO, 0x10));
	bus_destroy(b);
}

static void test_device_table(void **state)
{
	static const char *const names[] = { "uart", "isa-debug-exit", "fw_cfg", "pit", "rtc", "pic", "legacy",
					     "acpi-pm" };
	size_t n = device_type_count();
	struct env *e = env_new();

	assert_true(n >= sizeof(names) / sizeof(names[0]));
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct device_type *t = device_type_find(names[i]);
		bool listed = false;

		assert_non_null(t);
		assert_string_equal(t->name, names[i]);
		for (size_t j = 0; j < n; j++)
			listed |= device_type_at(j) == t;
		assert_true(listed);
	}
	assert_null(device_type_at(n));
	assert_null(device_type_find("nope"));
	assert_null(device_type_find(NULL));
	/* every registered device is created on one bus without overlapping claims, as vm.c does */
	for (size_t i = 0; i < n; i++)
		env_add(e, device_type_at(i)->name);
	assert_int_equal(ioapic_create(e->bus, &e->svc, &e->ioapic), 0);
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0x3fd), "uart-com1");
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0xf4), "isa-debug-exit");
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0x511), "fw_cfg");
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0x43), "pit");
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0x61), "port61");
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0x71), "rtc");
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0xa1), "pic-slave");
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0x4d1), "elcr");
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0xcfc), "pci-none");
	assert_string_equal(bus_owner(e->bus, BUS_PIO, 0x608), "acpi-pm");
	assert_string_equal(bus_owner(e->bus, BUS_MMIO, 0xfec00010), "ioapic");
	assert_null(bus_owner(e->bus, BUS_PIO, 0x64));
	env_free(e);
}

/* ---- UART ---- */

static void uart_sdk_init(struct env *e)
{
	outb(e, 0x3f9, 0x00);
	outb(e, 0x3fb, 0x80);
	outb(e, 0x3f8, 0x01);
	outb(e, 0x3f9, 0x00);
	outb(e, 0x3fb, 0x03);
	outb(e, 0x3fa, 0xc7);
	outb(e, 0x3fc, 0x03);
}

static void test_uart_init_and_transmit(void **state)
{
	struct env *e = env_new();

	env_add(e, "uart");
	assert_int_equal(inb(e, 0x3fa), 0x01);          /* IIR: no interrupt, FIFO off at reset */
	assert_int_equal(inb(e, 0x3fd), 0x60);          /* LSR: THRE | TEMT */
	uart_sdk_init(e);
	assert_int_equal(inb(e, 0x3fb), 0x03);
	outb(e, 0x3fb, 0x83);
	assert_int_equal(inb(e, 0x3f8), 0x01);          /* DLL */
	assert_int_equal(inb(e, 0x3f9), 0x00);          /* DLM */
	outb(e, 0x3f9, 0x12);
	assert_int_equal(inb(e, 0x3f9), 0x12);
	outb(e, 0x3fb, 0x03);
	assert_int_equal(inb(e, 0x3f9), 0x00);          /* IER again, not DLM */
	assert_int_equal(inb(e, 0x3fa), 0xc1);          /* FIFO enabled bits */
	assert_int_equal(inb(e, 0x3fc), 0x03);
	assert_int_equal(inb(e, 0x3fe), 0xb0);          /* DCD, DSR, CTS */
	outb(e, 0x3ff, 0x5a);
	assert_int_equal(inb(e, 0x3ff), 0x5a);
	outb(e, 0x3fd, 0x00);                           /* LSR writes ignored */
	assert_int_equal(inb(e, 0x3fd), 0x60);
	for (const char *p = "hello\n"; *p; p++)
		outb(e, 0x3f8, (uint8_t)*p);
	assert_int_equal(e->f.n_console, 6);
	assert_memory_equal(e->f.console, "hello\n", 6);
	assert_int_equal(inb(e, 0x3fd), 0x60);
	assert_int_equal(e->f.n_ev, 0);                 /* IER = 0: the line never moved */
	env_free(e);
}

static void test_uart_console_path(void **state)
{
	char path[] = "/tmp/test_devices_consoleXXXXXX";
	int fd = mkstemp(path);
	char buf[16] = { 0 };
	struct env *e = env_new();

	assert_true(fd >= 0);
	e->m.console_path = path;
	env_add(e, "uart");
	outb(e, 0x3f8, 'o');
	outb(e, 0x3f8, 'k');
	assert_int_equal(read(fd, buf, sizeof(buf)), 2);
	assert_string_equal(buf, "ok");
	assert_int_equal(e->f.n_console, 0);
	env_free(e);
	close(fd);
	unlink(path);
}

static void test_uart_loopback(void **state)
{
	struct env *e = env_new();

	env_add(e, "uart");
	outb(e, 0x3fc, 0x10);                           /* loopback, all outputs low */
	assert_int_equal(inb(e, 0x3fe) & 0xf0, 0x00);
	outb(e, 0x3fc, 0x1f);                           /* DTR RTS OUT1 OUT2 -> DSR CTS RI DCD */
	assert_int_equal(inb(e, 0x3fe), 0xf0 | 0x0b);   /* DCTS DDSR DDCD deltas; RI rose (TERI only on fall) */
	assert_int_equal(inb(e, 0x3fe), 0xf0);          /* deltas clear on read */
	outb(e, 0x3fc, 0x1b);                           /* OUT1 low: RI trailing edge */
	assert_int_equal(inb(e, 0x3fe), 0xb4);
	outb(e, 0x3f8, 'A');
	assert_int_equal(e->f.n_console, 0);            /* looped back, not sent */
	assert_int_equal(inb(e, 0x3fd), 0x61);          /* DR */
	assert_int_equal(inb(e, 0x3f8), 'A');
	assert_int_equal(inb(e, 0x3fd), 0x60);
	assert_int_equal(inb(e, 0x3f8), 0x00);          /* empty RBR */
	/* FIFO off: one holding byte, the second overruns */
	outb(e, 0x3f8, '1');
	outb(e, 0x3f8, '2');
	assert_int_equal(inb(e, 0x3fd), 0x63);          /* DR | OE */
	assert_int_equal(inb(e, 0x3fd), 0x61);          /* OE clears on read */
	assert_int_equal(inb(e, 0x3f8), '1');
	/* FIFO on: 16 bytes kept in order */
	outb(e, 0x3fa, 0x01);
	for (int i = 0; i < 16; i++)
		outb(e, 0x3f8, (uint64_t)('a' + i));
	assert_int_equal(inb(e, 0x3fd), 0x61);
	for (int i = 0; i < 16; i++)
		assert_int_equal(inb(e, 0x3f8), 'a' + i);
	assert_int_equal(inb(e, 0x3fd), 0x60);
	/* FCR clear RX */
	outb(e, 0x3f8, 'z');
	outb(e, 0x3fa, 0x03);
	assert_int_equal(inb(e, 0x3fd), 0x60);
	outb(e, 0x3fc, 0x00);
	outb(e, 0x3f8, 'x');
	assert_int_equal(e->f.n_console, 1);
	env_free(e);
}

static void test_uart_thre_interrupt(void **state)
{
	struct env *e = env_new();

	env_add(e, "uart");
	uart_sdk_init(e);
	outb(e, 0x3f8, 'a');
	assert_int_equal(e->f.n_ev, 0);
	outb(e, 0x3f9, 0x02);                           /* ETBEI with THR empty -> interrupt */
	assert_int_equal(e->f.n_ev, 1);
	assert_int_equal(e->f.ev[0].gsi, 4);
	assert_int_equal(e->f.ev[0].level, 1);
	assert_int_equal(inb(e, 0x3fa), 0xc2);          /* THRE; reading IIR clears it */
	assert_int_equal(fake_level(&e->f, 4), 0);
	assert_int_equal(inb(e, 0x3fa), 0xc1);
	outb(e, 0x3f8, 'b');                            /* THR empties at once: pending again */
	assert_int_equal(fake_level(&e->f, 4), 1);
	unsigned n = e->f.n_ev;
	outb(e, 0x3f8, 'c');                            /* still pending: a fresh edge 0 -> 1 */
	assert_int_equal(e->f.n_ev, n + 2);
	assert_int_equal(e->f.ev[n].level, 0);
	assert_int_equal(e->f.ev[n + 1].level, 1);
	outb(e, 0x3f9, 0x00);                           /* disabling the source drops the line */
	assert_int_equal(fake_level(&e->f, 4), 0);
	assert_int_equal(inb(e, 0x3fa), 0xc1);
	env_free(e);
}

static void test_uart_rda_interrupt(void **state)
{
	struct env *e = env_new();

	env_add(e, "uart");
	outb(e, 0x3fc, 0x10);                           /* loopback feeds the receiver */
	outb(e, 0x3fa, 0x01);                           /* FIFO, trigger 1 */
	outb(e, 0x3f9, 0x01);                           /* ERBFI */
	assert_int_equal(fake_level(&e->f, 4), 0);
	outb(e, 0x3f8, 'q');
	assert_int_equal(fake_level(&e->f, 4), 1);
	assert_int_equal(inb(e, 0x3fa), 0xc4);
	assert_int_equal(inb(e, 0x3f8), 'q');
	assert_int_equal(fake_level(&e->f, 4), 0);
	assert_int_equal(inb(e, 0x3fa), 0xc1);
	outb(e, 0x3fa, 0x41);                           /* trigger 4: fewer bytes report a timeout */
	outb(e, 0x3f8, '1');
	assert_int_equal(inb(e, 0x3fa), 0xcc);
	outb(e, 0x3f8, '2');
	outb(e, 0x3f8, '3');
	outb(e, 0x3f8, '4');
	assert_int_equal(inb(e, 0x3fa), 0xc4);
	/* RDA has priority over THRE */
	outb(e, 0x3f9, 0x03);
	assert_int_equal(inb(e, 0x3fa), 0xc4);
	for (int i = 0; i < 4; i++)
		inb(e, 0x3f8);
	assert_int_equal(inb(e, 0x3fa), 0xc2);
	/* line status: overrun with ELSI */
	outb(e, 0x3fa, 0x00);
	outb(e, 0x3f9, 0x04);
	outb(e, 0x3f8, 'x');
	outb(e, 0x3f8, 'y');
	assert_int_equal(inb(e, 0x3fa), 0x06);
	assert_int_equal(fake_level(&e->f, 4), 1);
	inb(e, 0x3fd);
	assert_int_equal(fake_level(&e->f, 4), 0);
	/* modem status interrupt */
	outb(e, 0x3f9, 0x08);
	outb(e, 0x3fc, 0x11);
	assert_int_equal(inb(e, 0x3fa), 0x00);
	assert_int_equal(fake_level(&e->f, 4), 1);
	inb(e, 0x3fe);
	assert_int_equal(fake_level(&e->f, 4), 0);
	env_free(e);
}

static bool wait_lsr_dr(struct env *e, uint64_t timeout_ns)
{
	uint64_t deadline = clock_now_ns() + timeout_ns;

	while (clock_now_ns() < deadline) {
		if (inb(e, 0x3fd) & 1)
			return true;
		usleep(1000);
	}
	return false;
}

static void test_uart_receive_pipe(void **state)
{
	int p[2], saved = dup(0);
	char big[40], got[40];
	size_t n = 0;
	struct env *e;

	assert_true(saved >= 0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(dup2(p[0], 0), 0);
	close(p[0]);
	e = env_new();
	e->m.console_input = true;
	env_add(e, "uart");
	uart_sdk_init(e);                               /* FIFO enabled, trigger 14 */
	outb(e, 0x3f9, 0x01);
	assert_int_equal(write(p[1], "xyz", 3), 3);
	assert_true(wait_lsr_dr(e, 5 * NSEC_PER_SEC));
	/* the reader may have delivered part of it: collect until the 3 bytes are in */
	while (n < 3 && wait_lsr_dr(e, 5 * NSEC_PER_SEC)) {
		assert_int_equal(fake_level(&e->f, 4), 1);
		got[n++] = (char)inb(e, 0x3f8);
	}
	assert_int_equal(n, 3);
	assert_memory_equal(got, "xyz", 3);
	assert_int_equal(fake_level(&e->f, 4), 0);
	/* more than the FIFO holds: nothing is lost, order kept (back-pressure) */
	for (int i = 0; i < 40; i++)
		big[i] = (char)('A' + i);
	assert_int_equal(write(p[1], big, sizeof(big)), (ssize_t)sizeof(big));
	n = 0;
	while (n < sizeof(big) && wait_lsr_dr(e, 5 * NSEC_PER_SEC))
		got[n++] = (char)inb(e, 0x3f8);
	assert_int_equal(n, sizeof(big));
	assert_memory_equal(got, big, sizeof(big));
	assert_int_equal(inb(e, 0x3fd) & 0x02, 0);      /* no overrun */
	env_free(e);                                    /* joins the reader thread */
	close(p[1]);
	assert_int_equal(dup2(saved, 0), 0);
	close(saved);
}

static void test_uart_reader_eof(void **state)
{
	int p[2], saved = dup(0);
	struct env *e;

	assert_true(saved >= 0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(dup2(p[0], 0), 0);
	close(p[0]);
	e = env_new();
	e->m.console_input = true;
	env_add(e, "uart");
	assert_int_equal(write(p[1], "a", 1), 1);
	close(p[1]);                                    /* EOF: the reader thread ends by itself */
	assert_true(wait_lsr_dr(e, 5 * NSEC_PER_SEC));
	assert_int_equal(inb(e, 0x3f8), 'a');
	assert_int_equal(inb(e, 0x3fd) & 1, 0);
	env_free(e);                                    /* joins a thread that already returned */
	assert_int_equal(dup2(saved, 0), 0);
	close(saved);
}

/* ---- isa-debug-exit ---- */

static void test_debugexit_codes(void **state)
{
	struct env *e = env_new();

	env_add(e, "isa-debug-exit");
	outb(e, 0xf4, 0);
	assert_int_equal(e->f.exit_code, 1);
	outb(e, 0xf4, 1);
	assert_int_equal(e->f.exit_code, 3);
	outb(e, 0xf4, 0x7f);
	assert_int_equal(e->f.exit_code, 0xff);
	outl(e, 0xf4, 0x100);
	assert_int_equal(e->f.exit_code, 0x201);
	outw(e, 0xf4, 0x12345);                         /* only the access width counts */
	assert_int_equal(e->f.exit_code, 0x468b);
	assert_int_equal(e->f.n_exits, 5);
	assert_int_equal(in_sz(e, 0xf4, 1), 0);         /* QEMU reads 0 */
	assert_int_equal(in_sz(e, 0xf4, 4), 0);
	assert_int_equal(e->f.n_exits, 5);
	env_free(e);
}

/* ---- fw_cfg ---- */

static void fw_select(struct env *e, uint16_t key)
{
	outw(e, 0x510, key);
}

static void fw_read(struct env *e, void *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((uint8_t *)buf)[i] = inb(e, 0x511);
}

static uint64_t fw_read_le(struct env *e, uint16_t key, unsigned n)
{
	uint8_t b[8];
	uint64_t v = 0;

	fw_select(e, key);
	fw_read(e, b, n);
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

static void test_fwcfg_items(void **state)
{
	struct env *e = env_new();
	char sig[5] = { 0 }, cmd[64] = { 0 };
	uint8_t uuid[16], zero[16] = { 0 };

	e->m.ram_size = 0x200000000ull;
	env_add(e, "fw_cfg");
	fw_select(e, 0x0000);
	fw_read(e, sig, 4);
	assert_string_equal(sig, "QEMU");
	assert_int_equal(inb(e, 0x511), 0);             /* past the end */
	fw_select(e, 0x0000);                           /* selecting again rewinds */
	assert_int_equal(inb(e, 0x511), 'Q');
	assert_int_equal(fw_read_le(e, 0x0001, 4), 1);  /* traditional interface only */
	assert_int_equal(fw_read_le(e, 0x0003, 8), 0x200000000ull);
	assert_int_equal(fw_read_le(e, 0x0004, 2), 1);
	assert_int_equal(fw_read_le(e, 0x0005, 2), 3);
	assert_int_equal(fw_read_le(e, 0x000f, 2), 3);
	fw_select(e, 0x0002);
	fw_read(e, uuid, 16);
	assert_memory_equal(uuid, zero, 16);
	assert_int_equal(fw_read_le(e, 0x0014, 4), strlen("console=ttyS0 quiet") + 1);
	fw_select(e, 0x0015);
	fw_read(e, cmd, strlen("console=ttyS0 quiet") + 1);
	assert_string_equal(cmd, "console=ttyS0 quiet");
	assert_int_equal(inb(e, 0x511), 0);
	assert_int_equal(fw_read_le(e, 0x0007, 4), 0);  /* unknown keys read 0 */
	assert_int_equal(fw_read_le(e, 0x3fff, 4), 0);
	assert_int_equal(fw_read_le(e, 0xffff, 4), 0);
	assert_int_equal(fw_read_le(e, 0x8000, 4), 0x554d4551); /* arch-local bit masked: signature */
	assert_int_equal(fw_read_le(e, 0x0019, 4), 0);  /* no files: empty directory */
	/* data-port writes ignored; other widths/ports are not fw_cfg accesses */
	fw_select(e, 0x0000);
	outb(e, 0x511, 0x55);
	assert_int_equal(inb(e, 0x511), 'Q');
	outb(e, 0x510, 0x05);                           /* 8-bit selector write: ignored */
	assert_int_equal(inb(e, 0x511), 'E');
	assert_int_equal(in_sz(e, 0x510, 2), 0xffff);
	assert_int_equal(in_sz(e, 0x511, 2), 0xffff);
	assert_int_equal(inb(e, 0x511), 'M');
	env_free(e);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void test_fwcfg_files(void **state)
{
	static const char z[] = "zeta-bytes", a[] = "ACPI", o[] = "12345678";
	struct fw_file files[3] = {
		{ .name = "etc/zeta", .data = z, .size = sizeof(z) - 1 },
		{ .name = "etc/acpi/tables", .data = a, .size = sizeof(a) - 1 },
		{ .name = "opt/rackvm/cmdline", .data = o, .size = sizeof(o) - 1 },
	};
	static const char *const sorted[3] = { "etc/acpi/tables", "etc/zeta", "opt/rackvm/cmdline" };
	static const uint32_t sizes[3] = { 4, 10, 8 };
	uint8_t dir[4 + 3 * 64], buf[16];
	struct env *e = env_new();

	e->m.files = files;
	e->m.n_files = 3;
	env_add(e, "fw_cfg");
	fw_select(e, 0x0019);
	fw_read(e, dir, sizeof(dir));
	assert_int_equal(be32(dir), 3);
	for (int i = 0; i < 3; i++) {
		const uint8_t *ent = dir + 4 + 64 * i;

		assert_int_equal(be32(ent), sizes[i]);
		assert_int_equal(ent[4] << 8 | ent[5], 0x20 + i);
		assert_int_equal(ent[6] << 8 | ent[7], 0);
		assert_string_equal((const char *)ent + 8, sorted[i]);
	}
	assert_int_equal(inb(e, 0x511), 0);             /* past the directory */
	fw_select(e, 0x0021);
	fw_read(e, buf, 10);
	assert_memory_equal(buf, "zeta-bytes", 10);
	assert_int_equal(inb(e, 0x511), 0);
	assert_int_equal(inb(e, 0x511), 0);
	fw_select(e, 0x0020);
	fw_read(e, buf, 4);
	assert_memory_equal(buf, "ACPI", 4);
	fw_select(e, 0x0022);
	fw_read(e, buf, 8);
	assert_memory_equal(buf, "12345678", 8);
	assert_int_equal(fw_read_le(e, 0x0023, 4), 0);  /* no fourth file */
	env_free(e);
}

static void test_fwcfg_bad_files(void **state)
{
	char longname[80];
	struct fw_file f = { .name = longname, .data = "x", .size = 1 };
	struct env *e = env_new();
	void *st;

	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	e->m.files = &f;
	e->m.n_files = 1;
	log_set_quiet(true);
	assert_int_equal(device_type_find("fw_cfg")->create(e->bus, &e->m, &e->svc, &st), -EINVAL);
	f.name = NULL;
	assert_int_equal(device_type_find("fw_cfg")->create(e->bus, &e->m, &e->svc, &st), -EINVAL);
	log_set_quiet(false);
	assert_null(bus_owner(e->bus, BUS_PIO, 0x510));
	env_free(e);
}

/* ---- PIT ---- */

#define PIT_NS(ticks) ((uint64_t)(ticks) * 1000000000ull / 1193182ull + 1)

static uint16_t pit_read_word(struct env *e, uint16_t port)
{
	uint8_t lo = inb(e, port);

	return (uint16_t)(lo | inb(e, port) << 8);
}

static bool wait_pulses(struct fake *f, unsigned gsi, unsigned n, uint64_t timeout_ns)
{
	uint64_t deadline = clock_now_ns() + timeout_ns;

	while (clock_now_ns() < deadline) {
		if (fake_pulses(f, gsi) >= n)
			return true;
		usleep(1000);
	}
	return false;
}

static void test_pit_mode2_counting_and_irq(void **state)
{
	struct env *e = env_new();

	env_add(e, "pit");
	uint64_t t0 = fake_now(&e->f);

	outb(e, 0x43, 0x34);                            /* ch0, lo/hi, mode 2 */
	outb(e, 0x40, 0xa9);
	outb(e, 0x40, 0x04);                            /* 1193 = ~1 ms */
	assert_int_equal(pit_read_word(e, 0x40), 1193);
	fake_advance(&e->f, PIT_NS(596));
	assert_int_equal(pit_read_word(e, 0x40), 1193 - 596);
	fake_advance(&e->f, t0 + PIT_NS(1193 + 10) - fake_now(&e->f));
	assert_int_equal(pit_read_word(e, 0x40), 1193 - 10); /* reloaded after one period */
	/* the timer thread pulses GSI 2 for the periods that passed */
	assert_true(wait_pulses(&e->f, 2, 1, 5 * NSEC_PER_SEC));
	unsigned before = fake_pulses(&e->f, 2);
	fake_advance(&e->f, 5 * PIT_NS(1193));
	assert_true(wait_pulses(&e->f, 2, before + 1, 5 * NSEC_PER_SEC));
	for (unsigned i = 0; i < e->f.n_ev; i++)
		assert_int_equal(e->f.ev[i].gsi, 2);
	env_free(e);                                    /* stops and joins the timer thread */
}

static void test_pit_mode0_oneshot_irq(void **state)
{
	struct env *e = env_new();

	env_add(e, "pit");
	outb(e, 0x43, 0x30);                            /* ch0, lo/hi, mode 0 */
	outb(e, 0x40, 100);
	assert_int_equal(inb(e, 0x61) & 0x20, 0);       /* (OUT2 untouched) */
	outb(e, 0x40, 0);
	fake_advance(&e->f, PIT_NS(50));
	assert_int_equal(fake_pulses(&e->f, 2), 0);
	assert_int_equal(pit_read_word(e, 0x40), 50);
	fake_advance(&e->f, PIT_NS(100));
	assert_true(wait_pulses(&e->f, 2, 1, 5 * NSEC_PER_SEC));
	fake_advance(&e->f, 10 * PIT_NS(65536));
	/* no second pulse: after its one pulse a mode-0 channel has nothing scheduled, and its timer thread says so
	 * (a thread that still had an edge due would not park, and would pulse within its 100 ms re-read) */
	uint64_t deadline = clock_now_ns() + 5 * NSEC_PER_SEC;

	while (!atomic_load(&e->f.pit_parked) && clock_now_ns() < deadline)
		usleep(1000);
	assert_true(atomic_load(&e->f.pit_parked));
	assert_int_equal(fake_pulses(&e->f, 2), 1);
	/* a new control word stops it; a shutdown (mode 0, count 0 as Linux writes) fires once after 65536 ticks */
	outb(e, 0x43, 0x30);
	outb(e, 0x40, 0);
	outb(e, 0x40, 0);
	fake_advance(&e->f, PIT_NS(65535));
	assert_int_equal(pit_read_word(e, 0x40), 1);
	fake_advance(&e->f, PIT_NS(2));
	assert_true(wait_pulses(&e->f, 2, 2, 5 * NSEC_PER_SEC));
	env_free(e);
}

static void test_pit_min_period(void **state)
{
	struct env *e = env_new();

	env_add(e, "pit");
	outb(e, 0x43, 0x34);                            /* ch0, mode 2, count 2: a 600 kHz rate */
	outb(e, 0x40, 2);
	outb(e, 0x40, 0);
	for (int i = 0; i < 1000; i++) {                /* 10 ms of device time in 10 us steps */
		fake_advance(&e->f, 10 * NSEC_PER_USEC);
		usleep(20);
	}
	assert_true(wait_pulses(&e->f, 2, 1, 5 * NSEC_PER_SEC));
	/* at most one pulse per 200 us of device time (+1 for the first) */
	assert_true(fake_pulses(&e->f, 2) <= 10 * NSEC_PER_MSEC / (200 * NSEC_PER_USEC) + 1);
	env_free(e);
}

static void test_pit_mode3_and_out2(void **state)
{
	struct env *e = env_new();

	env_add(e, "pit");
	outb(e, 0x61, 0x01);                            /* gate 2 high, speaker off */
	outb(e, 0x43, 0xb6);                            /* ch2, lo/hi, mode 3 */
	outb(e, 0x42, 1000 & 0xff);
	outb(e, 0x42, 1000 >> 8);
	assert_int_equal(inb(e, 0x61) & 0x21, 0x21);    /* OUT2 high in the first half */
	fake_advance(&e->f, PIT_NS(100));
	assert_int_equal(pit_read_word(e, 0x42), 800);  /* mode 3 counts down by two */
	fake_advance(&e->f, PIT_NS(500));
	assert_int_equal(inb(e, 0x61) & 0x20, 0);       /* second half: low */
	fake_advance(&e->f, PIT_NS(400));
	assert_int_equal(inb(e, 0x61) & 0x20, 0x20);
	/* gate low holds OUT high and stops; a rising edge restarts from the full count */
	outb(e, 0x61, 0x00);
	fake_advance(&e->f, PIT_NS(600));
	assert_int_equal(inb(e, 0x61) & 0x21, 0x20);
	outb(e, 0x61, 0x01);
	assert_int_equal(pit_read_word(e, 0x42), 1000);
	assert_int_equal(e->f.n_ev, 0);                 /* only channel 0 interrupts */
	env_free(e);
}

static void test_pit_port61_calibration(void **state)
{
	struct env *e = env_new();
	uint8_t v;

	env_add(e, "pit");
	/* Linux's pit_calibrate_tsc: gate high, speaker off, ch2 mode 0, 10 ms count, poll OUT2 */
	v = inb(e, 0x61);
	outb(e, 0x61, (v & ~0x02) | 0x01);
	outb(e, 0x43, 0xb0);
	outb(e, 0x42, 11932 & 0xff);
	outb(e, 0x42, 11932 >> 8);
	assert_int_equal(inb(e, 0x61) & 0x20, 0);
	fake_advance(&e->f, PIT_NS(11931));
	assert_int_equal(inb(e, 0x61) & 0x20, 0);
	assert_int_equal(pit_read_word(e, 0x42), 1);
	fake_advance(&e->f, PIT_NS(1));
	assert_int_equal(inb(e, 0x61) & 0x20, 0x20);
	assert_int_equal(pit_read_word(e, 0x42), 0);
	/* gate low pauses mode 0 */
	outb(e, 0x43, 0xb0);
	outb(e, 0x42, 0);
	outb(e, 0x42, 0x10);                            /* 4096 */
	fake_advance(&e->f, PIT_NS(96));
	outb(e, 0x61, 0x00);
	fake_advance(&e->f, PIT_NS(5000));
	assert_int_equal(pit_read_word(e, 0x42), 4000);
	outb(e, 0x61, 0x01);
	fake_advance(&e->f, PIT_NS(1000));
	assert_int_equal(pit_read_word(e, 0x42), 3000);
	/* bits 0-3 read back; bit 4 refresh toggles */
	outb(e, 0x61, 0x0f);
	assert_int_equal(inb(e, 0x61) & 0x0f, 0x0f);
	v = inb(e, 0x61) & 0x10;
	fake_advance(&e->f, 15085);
	assert_int_equal(inb(e, 0x61) & 0x10, v ^ 0x10);
	env_free(e);
}

static void test_pit_latch_and_readback(void **state)
{
	struct env *e = env_new();

	env_add(e, "pit");
	outb(e, 0x43, 0x74);                            /* ch1, lo/hi, mode 2 */
	outb(e, 0x41, 0x00);
	outb(e, 0x41, 0x10);                            /* 4096 */
	fake_advance(&e->f, PIT_NS(96));
	outb(e, 0x43, 0x40);                            /* latch ch1 */
	fake_advance(&e->f, PIT_NS(1000));
	outb(e, 0x43, 0x40);                            /* second latch ignored until read */
	assert_int_equal(pit_read_word(e, 0x41), 4000);
	assert_int_equal(pit_read_word(e, 0x41), 3000); /* live again */
	/* read-back: latch status and count of ch1 */
	outb(e, 0x43, 0xc4);
	fake_advance(&e->f, PIT_NS(500));
	assert_int_equal(inb(e, 0x41), 0x80 | 0x30 | (2 << 1)); /* OUT high, lo/hi, mode 2 */
	assert_int_equal(pit_read_word(e, 0x41), 3000);
	/* read-back status only: null count after a control word without count */
	outb(e, 0x43, 0x7b);                            /* ch1, lo/hi, mode 5, BCD */
	outb(e, 0x43, 0xe4);
	assert_int_equal(inb(e, 0x41), 0x80 | 0x40 | 0x30 | (5 << 1) | 1);
	/* LSB-only and MSB-only access */
	outb(e, 0x43, 0x10);                            /* ch0, LSB, mode 0 */
	outb(e, 0x40, 0x80);
	assert_int_equal(inb(e, 0x40), 0x80);
	assert_int_equal(inb(e, 0x40), 0x80);
	fake_advance(&e->f, PIT_NS(0x10));
	assert_int_equal(inb(e, 0x40), 0x70);
	outb(e, 0x43, 0x20);                            /* ch0, MSB, mode 0 */
	outb(e, 0x40, 0x12);
	assert_int_equal(inb(e, 0x40), 0x12);
	fake_advance(&e->f, PIT_NS(0x101));
	assert_int_equal(inb(e, 0x40), 0x10);
	outb(e, 0x43, 0x00);                            /* latch in MSB mode: one read */
	assert_int_equal(inb(e, 0x40), 0x10);
	/* the control register cannot be read; mode 6/7 alias 2/3 */
	assert_int_equal(inb(e, 0x43), 0xff);
	outb(e, 0x43, 0x7c);                            /* ch1, mode 6 -> 2 */
	outb(e, 0x43, 0xe4);
	assert_int_equal(inb(e, 0x41) & 0x0e, 2 << 1);
	env_free(e);
}

/* ---- RTC / CMOS ---- */

static uint8_t cmos_read(struct env *e, uint8_t idx)
{
	outb(e, 0x70, idx);
	return inb(e, 0x71);
}

static void cmos_write(struct env *e, uint8_t idx, uint8_t v)
{
	outb(e, 0x70, idx);
	outb(e, 0x71, v);
}

static void test_rtc_time_bcd_binary(void **state)
{
	struct env *e = env_new();

	env_add(e, "rtc");
	assert_int_equal(cmos_read(e, 0x0b), 0x02);     /* BCD, 24 h */
	cmos_write(e, 0x0b, 0x82);                      /* SET: freeze and write 1999-12-31 23:59:59 */
	cmos_write(e, 0x00, 0x59);
	cmos_write(e, 0x02, 0x59);
	cmos_write(e, 0x04, 0x23);
	cmos_write(e, 0x07, 0x31);
	cmos_write(e, 0x08, 0x12);
	cmos_write(e, 0x09, 0x99);
	cmos_write(e, 0x32, 0x19);
	fake_advance(&e->f, 5 * NSEC_PER_SEC);          /* frozen while SET */
	assert_int_equal(cmos_read(e, 0x00), 0x59);
	cmos_write(e, 0x0b, 0x02);
	assert_int_equal(cmos_read(e, 0x00), 0x59);
	assert_int_equal(cmos_read(e, 0x06), 0x06);     /* a Friday */
	fake_advance(&e->f, NSEC_PER_SEC);
	assert_int_equal(cmos_read(e, 0x00), 0x00);
	assert_int_equal(cmos_read(e, 0x02), 0x00);
	assert_int_equal(cmos_read(e, 0x04), 0x00);
	assert_int_equal(cmos_read(e, 0x06), 0x07);     /* 2000-01-01, Saturday */
	assert_int_equal(cmos_read(e, 0x07), 0x01);
	assert_int_equal(cmos_read(e, 0x08), 0x01);
	assert_int_equal(cmos_read(e, 0x09), 0x00);
	assert_int_equal(cmos_read(e, 0x32), 0x20);
	fake_advance(&e->f, 42 * NSEC_PER_SEC);
	assert_int_equal(cmos_read(e, 0x00), 0x42);     /* BCD 42 */
	cmos_write(e, 0x0b, 0x06);                      /* binary */
	assert_int_equal(cmos_read(e, 0x00), 42);
	assert_int_equal(cmos_read(e, 0x32), 20);
	/* a write while running moves the clock: hour 13 */
	cmos_write(e, 0x04, 13);
	assert_int_equal(cmos_read(e, 0x04), 13);
	assert_int_equal(cmos_read(e, 0x00), 42);
	cmos_write(e, 0x0b, 0x04);                      /* binary, 12 h: 1 PM */
	assert_int_equal(cmos_read(e, 0x04), 0x81);
	cmos_write(e, 0x0b, 0x00);                      /* BCD, 12 h */
	assert_int_equal(cmos_read(e, 0x04), 0x81);
	cmos_write(e, 0x04, 0x12);                      /* 12 AM = midnight */
	cmos_write(e, 0x0b, 0x02);
	assert_int_equal(cmos_read(e, 0x04), 0x00);
	/* alarm registers are plain storage */
	cmos_write(e, 0x01, 0x33);
	assert_int_equal(cmos_read(e, 0x01), 0x33);
	assert_int_equal(cmos_read(e, 0x00), 0x42);
	/* nonsense date is ignored, the clock keeps going */
	cmos_write(e, 0x08, 0x99);
	assert_int_equal(cmos_read(e, 0x00), 0x42);
	env_free(e);
}

static void test_rtc_status_registers(void **state)
{
	struct env *e = env_new();
	uint64_t phase;

	env_add(e, "rtc");
	assert_int_equal(cmos_read(e, 0x0a), 0x26);
	assert_int_equal(cmos_read(e, 0x0d), 0x80);
	/* find the end of a second from UIP */
	cmos_read(e, 0x0c);
	for (phase = 0; phase < 6000; phase++) {        /* step 200 us until UIP shows: the last 244 us */
		if (cmos_read(e, 0x0a) & 0x80)
			break;
		fake_advance(&e->f, 200 * NSEC_PER_USEC);
	}
	assert_true(phase < 6000);
	assert_int_equal(cmos_read(e, 0x0a), 0xa6);
	fake_advance(&e->f, 250 * NSEC_PER_USEC);       /* the update happened */
	assert_int_equal(cmos_read(e, 0x0a), 0x26);
	assert_int_equal(cmos_read(e, 0x0c), 0x50);     /* UF: a second passed; PF: periods of rate 6 too */
	assert_int_equal(cmos_read(e, 0x0c), 0x00);     /* read clears */
	cmos_write(e, 0x0a, 0xff);                      /* UIP is read-only */
	assert_int_equal(cmos_read(e, 0x0a) & 0x7f, 0x7f);
	cmos_write(e, 0x0c, 0xff);
	cmos_write(e, 0x0d, 0x00);
	assert_int_equal(cmos_read(e, 0x0d), 0x80);
	cmos_write(e, 0x0b, 0x92);                      /* SET clears UIE */
	assert_int_equal(cmos_read(e, 0x0b), 0x82);
	/* index port: bit 7 is NMI disable, reads 0xff */
	outb(e, 0x70, 0x80 | 0x40);
	outb(e, 0x71, 0x5a);
	assert_int_equal(cmos_read(e, 0x40), 0x5a);
	assert_int_equal(inb(e, 0x70), 0xff);
	env_free(e);
}

static bool wait_level(struct fake *f, unsigned gsi, int level, uint64_t timeout_ns)
{
	uint64_t deadline = clock_now_ns() + timeout_ns;

	while (clock_now_ns() < deadline) {
		if (fake_level(f, gsi) == level)
			return true;
		usleep(1000);
	}
	return false;
}

static void test_rtc_interrupts(void **state)
{
	struct env *e = env_new();
	unsigned n;

	env_add(e, "rtc");
	cmos_read(e, 0x0c);
	/* update-ended: the timer thread raises IRQ 8 (GSI 8) at the next second, reading C lowers it */
	cmos_write(e, 0x0b, 0x12);
	fake_advance(&e->f, NSEC_PER_SEC + NSEC_PER_MSEC);
	assert_true(wait_level(&e->f, 8, 1, 5 * NSEC_PER_SEC));
	assert_int_equal(cmos_read(e, 0x0c) & 0xb0, 0x90);
	assert_int_equal(fake_level(&e->f, 8), 0);
	/* flags without enables: no interrupt */
	cmos_write(e, 0x0b, 0x02);
	n = e->f.n_ev;
	fake_advance(&e->f, NSEC_PER_SEC);
	assert_int_equal(cmos_read(e, 0x0c) & 0xb0, 0x10);
	assert_int_equal(e->f.n_ev, n);
	/* periodic: rate 15 = 500 ms */
	cmos_write(e, 0x0a, 0x2f);
	cmos_read(e, 0x0c);
	cmos_write(e, 0x0b, 0x42);
	fake_advance(&e->f, 500 * NSEC_PER_MSEC);
	assert_true(wait_level(&e->f, 8, 1, 5 * NSEC_PER_SEC));
	assert_int_equal(cmos_read(e, 0x0c) & 0xc0, 0xc0);
	assert_int_equal(fake_level(&e->f, 8), 0);
	/* alarm at 12:00:05 with the clock set to 12:00:00 */
	cmos_write(e, 0x0b, 0x82);
	cmos_write(e, 0x00, 0x00);
	cmos_write(e, 0x02, 0x00);
	cmos_write(e, 0x04, 0x12);
	cmos_write(e, 0x01, 0x05);
	cmos_write(e, 0x03, 0x00);
	cmos_write(e, 0x05, 0x12);
	cmos_write(e, 0x0b, 0x22);
	cmos_read(e, 0x0c);
	fake_advance(&e->f, 4 * NSEC_PER_SEC);
	assert_int_equal(cmos_read(e, 0x0c) & 0xb0, 0x10); /* 12:00:04: no alarm yet */
	assert_int_equal(fake_level(&e->f, 8), 0);
	fake_advance(&e->f, NSEC_PER_SEC);
	assert_true(wait_level(&e->f, 8, 1, 5 * NSEC_PER_SEC));
	assert_int_equal(cmos_read(e, 0x0c) & 0xb0, 0xb0);
	/* don't-care alarm fields: every second; a day-long gap still reports it */
	cmos_write(e, 0x01, 0xc0);
	cmos_write(e, 0x03, 0xff);
	cmos_write(e, 0x05, 0xc0);
	fake_advance(&e->f, 86400 * 3 * NSEC_PER_SEC);
	assert_int_equal(cmos_read(e, 0x0c) & 0xb0, 0xb0);
	/* a flag already pending when its enable is set interrupts at once */
	cmos_write(e, 0x0b, 0x02);
	fake_advance(&e->f, NSEC_PER_SEC);
	cmos_write(e, 0x0b, 0x12);
	assert_int_equal(fake_level(&e->f, 8), 1);
	env_free(e);                                    /* joins the timer thread */
}

static void test_rtc_cmos_memory_128m(void **state)
{
	struct env *e = env_new();

	e->m.ram_size = 128ull << 20;
	e->m.hole_start = 0xc0000000ull;
	env_add(e, "rtc");
	assert_int_equal(cmos_read(e, 0x15), 0x80);
	assert_int_equal(cmos_read(e, 0x16), 0x02);
	assert_int_equal(cmos_read(e, 0x17), 0xff);     /* 127 MiB in KiB > 0xffff: capped */
	assert_int_equal(cmos_read(e, 0x18), 0xff);
	assert_int_equal(cmos_read(e, 0x30), 0xff);
	assert_int_equal(cmos_read(e, 0x31), 0xff);
	assert_int_equal(cmos_read(e, 0x34), 0x00);     /* 112 MiB / 64 KiB = 0x0700 */
	assert_int_equal(cmos_read(e, 0x35), 0x07);
	assert_int_equal(cmos_read(e, 0x5b), 0);
	assert_int_equal(cmos_read(e, 0x5c), 0);
	assert_int_equal(cmos_read(e, 0x5d), 0);
	assert_int_equal(cmos_read(e, 0x5f), 2);        /* 3 vCPUs */
	env_free(e);

	e = env_new();
	e->m.ram_size = 32ull << 20;                    /* small enough for the 0x17/0x18 field */
	env_add(e, "rtc");
	assert_int_equal(cmos_read(e, 0x17) | cmos_read(e, 0x18) << 8, 31 * 1024);
	assert_int_equal(cmos_read(e, 0x34) | cmos_read(e, 0x35) << 8, 256);
	env_free(e);
}

static void test_rtc_cmos_memory_8g(void **state)
{
	struct env *e = env_new();

	e->m.ram_size = 8ull << 30;
	e->m.hole_start = 0xc0000000ull;                /* 3 GiB below 4 GiB, 5 GiB above */
	env_add(e, "rtc");
	assert_int_equal(cmos_read(e, 0x17), 0xff);
	assert_int_equal(cmos_read(e, 0x18), 0xff);
	assert_int_equal(cmos_read(e, 0x34), 0x00);     /* (3 GiB - 16 MiB) / 64 KiB = 0xbf00 */
	assert_int_equal(cmos_read(e, 0x35), 0xbf);
	assert_int_equal(cmos_read(e, 0x5b), 0x00);     /* 5 GiB / 64 KiB = 0x014000 */
	assert_int_equal(cmos_read(e, 0x5c), 0x40);
	assert_int_equal(cmos_read(e, 0x5d), 0x01);
	env_free(e);
}

/* ---- PIC ---- */

static void test_pic_init_and_masks(void **state)
{
	struct env *e = env_new();

	env_add(e, "pic");
	/* Linux's init_8259A */
	outb(e, 0x21, 0xff);
	outb(e, 0xa1, 0xff);
	assert_int_equal(inb(e, 0x21), 0xff);
	outb(e, 0x20, 0x11);                            /* ICW1: edge, cascade, ICW4 */
	assert_int_equal(inb(e, 0x21), 0x00);           /* ICW1 clears IMR */
	outb(e, 0x21, 0x30);                            /* ICW2: vectors 0x30-0x37 */
	outb(e, 0x21, 0x04);                            /* ICW3: slave on IR2 */
	outb(e, 0x21, 0x01);                            /* ICW4: 8086 mode */
	outb(e, 0xa0, 0x11);
	outb(e, 0xa1, 0x38);
	outb(e, 0xa1, 0x02);
	outb(e, 0xa1, 0x01);
	outb(e, 0x21, 0xfb);                            /* OCW1: all but the cascade */
	outb(e, 0xa1, 0xff);
	assert_int_equal(inb(e, 0x21), 0xfb);
	assert_int_equal(inb(e, 0xa1), 0xff);
	/* OCW3 read ISR / IRR, OCW2 EOIs */
	outb(e, 0x20, 0x0b);
	assert_int_equal(inb(e, 0x20), 0x00);
	outb(e, 0x20, 0x0a);
	assert_int_equal(inb(e, 0x20), 0x00);
	outb(e, 0x20, 0x20);
	outb(e, 0x20, 0x62);
	outb(e, 0xa0, 0x20);
	outb(e, 0x20, 0xc7);                            /* set priority */
	outb(e, 0x20, 0x0c);                            /* poll: nothing pending */
	assert_int_equal(inb(e, 0x20), 0x00);
	assert_int_equal(inb(e, 0x21), 0xfb);           /* the EOIs did not touch the masks */
	/* our SDK: mask everything */
	outb(e, 0x21, 0xff);
	outb(e, 0xa1, 0xff);
	assert_int_equal(inb(e, 0x21), 0xff);
	/* single mode, no ICW4: ICW2 only, then the data port is OCW1 again */
	outb(e, 0xa0, 0x12);
	outb(e, 0xa1, 0x70);
	outb(e, 0xa1, 0x5a);
	assert_int_equal(inb(e, 0xa1), 0x5a);
	/* single mode with ICW4 */
	outb(e, 0x20, 0x13);
	outb(e, 0x21, 0x08);
	outb(e, 0x21, 0x01);
	outb(e, 0x21, 0xa5);
	assert_int_equal(inb(e, 0x21), 0xa5);
	/* ELCR: pins 0-2 (master) and 8, 13 (slave) cannot be level-triggered */
	outb(e, 0x4d0, 0xff);
	outb(e, 0x4d1, 0xff);
	assert_int_equal(inb(e, 0x4d0), 0xf8);
	assert_int_equal(inb(e, 0x4d1), 0xde);
	assert_int_equal(e->f.n_ev, 0);
	env_free(e);
}

/* ---- legacy ports ---- */

static void test_legacy_ports(void **state)
{
	struct env *e = env_new();
	uint64_t v = 0;

	env_add(e, "legacy");
	outb(e, 0x80, 0x42);
	assert_int_equal(inb(e, 0x80), 0xff);
	assert_int_equal(inb(e, 0x92), 0x02);           /* A20 on */
	outb(e, 0x92, 0x00);
	assert_int_equal(inb(e, 0x92), 0x00);
	outb(e, 0x92, 0x02);
	assert_int_equal(e->f.n_exits, 0);
	outb(e, 0x92, 0x03);                            /* fast reset */
	assert_int_equal(e->f.n_exits, 1);
	assert_int_equal(e->f.exit_code, 0);
	outb(e, 0x92, 0x03);                            /* no new 0->1 edge */
	assert_int_equal(e->f.n_exits, 1);
	/* no PCI: Linux's type 1 and type 2 probes */
	outb(e, 0xcfb, 0x01);
	outl(e, 0xcf8, 0x80000000);
	assert_int_equal(in_sz(e, 0xcf8, 4), 0xffffffffull);
	outb(e, 0xcfb, 0x00);
	outb(e, 0xcf8, 0x00);
	outb(e, 0xcfa, 0x00);
	assert_int_equal(inb(e, 0xcf8), 0xff);
	assert_int_equal(inb(e, 0xcfa), 0xff);
	assert_int_equal(in_sz(e, 0xcfc, 2), 0xffff);
	assert_int_equal(in_sz(e, 0xcfe, 1), 0xff);
	/* 0xcf9: only a byte write with bit 2 is the reset control register */
	outl(e, 0xcf8, 0x80000400);
	outw(e, 0xcf8, 0x0400);
	outb(e, 0xcf9, 0x02);
	assert_int_equal(e->f.n_exits, 1);
	outb(e, 0xcf9, 0x06);                           /* the FADT's reset register and value */
	assert_int_equal(e->f.n_exits, 2);
	assert_int_equal(e->f.exit_code, 0);
	/* COM2-COM4: Linux's 8250 IER scratch probe sees no UART */
	for (size_t i = 0; i < 3; i++) {
		static const uint16_t com[] = { 0x2f8, 0x3e8, 0x2e8 };

		outb(e, com[i] + 1, 0x00);
		assert_int_equal(inb(e, com[i] + 1) & 0x0f, 0x0f); /* scratch2 != 0: nothing there */
		assert_int_equal(inb(e, com[i] + 5), 0xff);
	}
	/* everything else stays unknown */
	assert_int_equal(pio(e, 0x64, 1, false, &v), -ENOENT);
	assert_int_equal(pio(e, 0xcf7, 1, false, &v), -ENOENT);
	assert_int_equal(pio(e, 0xd00, 1, false, &v), -ENOENT);
	env_free(e);
}

/* ---- ACPI PM block ---- */

static void test_acpi_pm(void **state)
{
	struct env *e = env_new();
	uint64_t v = 0;

	env_add(e, "acpi-pm");
	/* a pure function of the clock: 3.579545 MHz from the clock's zero (the fake starts at 1000 s) */
	uint32_t base = (uint32_t)(1000ull * 3579545);
	assert_int_equal(in_sz(e, 0x608, 4), base);
	fake_advance(&e->f, NSEC_PER_SEC);
	assert_int_equal(in_sz(e, 0x608, 4), (uint32_t)(base + 3579545));
	assert_int_equal(in_sz(e, 0x608, 2), (base + 3579545) & 0xffff);
	assert_int_equal(in_sz(e, 0x60a, 1), ((base + 3579545) >> 16) & 0xff);
	/* what a node without the devices answers itself for the same instant: the same bytes, every width */
	for (unsigned off = 0; off < 4; off++) {
		for (unsigned sz = 1; off + sz <= 4; sz *= 2) {
			struct io_access la = { .addr = 0x608 + off, .size = (uint8_t)sz };

			assert_true(bus_local_read(BUS_PIO, &la, fake_now(&e->f)));
			assert_int_equal(la.data, in_sz(e, 0x608 + off, sz));
		}
	}
	struct io_access other = { .addr = 0x604, .size = 2 }, wr = { .addr = 0x608, .size = 4, .write = true };
	assert_false(bus_local_read(BUS_PIO, &other, fake_now(&e->f)));   /* PM1_CNT: the io node's */
	assert_false(bus_local_read(BUS_PIO, &wr, fake_now(&e->f)));
	fake_advance(&e->f, 1200 * NSEC_PER_SEC);       /* 32-bit wrap after ~1200 s */
	assert_int_equal(in_sz(e, 0x608, 4), (uint32_t)(2201ull * 3579545));
	outl(e, 0x608, 0);                              /* read-only */
	assert_int_equal(in_sz(e, 0x608, 4), (uint32_t)(2201ull * 3579545));
	/* PM1_STS (write 1 to clear, never set), PM1_EN stored */
	assert_int_equal(in_sz(e, 0x600, 2), 0);
	outw(e, 0x602, 0x0121);
	assert_int_equal(in_sz(e, 0x602, 2), 0x0121);
	assert_int_equal(in_sz(e, 0x600, 4), 0x01210000);
	outw(e, 0x600, 0xffff);
	assert_int_equal(in_sz(e, 0x600, 2), 0);
	/* PM1_CNT: SCI_EN always set; SLP_EN with SLP_TYP 0 (the DSDT's S5) powers off */
	assert_int_equal(in_sz(e, 0x604, 2), 0x0001);
	outw(e, 0x604, 0x0000);
	assert_int_equal(in_sz(e, 0x604, 2), 0x0001);
	log_set_quiet(true);
	outw(e, 0x604, (5 << 10) | 0x2000);             /* S-state other than S5: ignored */
	log_set_quiet(false);
	assert_int_equal(e->f.n_exits, 0);
	assert_int_equal(in_sz(e, 0x604, 2), (5 << 10) | 0x0001);
	outw(e, 0x604, 0x2000);
	assert_int_equal(e->f.n_exits, 1);
	assert_int_equal(e->f.exit_code, 0);
	assert_int_equal(in_sz(e, 0x604, 2) & 0x2000, 0);
	outb(e, 0x605, 0x20);                           /* byte write of the high half works as well */
	assert_int_equal(e->f.n_exits, 2);
	assert_int_equal(in_sz(e, 0x606, 2), 0xffff);   /* hole between the blocks */
	assert_int_equal(pio(e, 0x60c, 1, false, &v), -ENOENT);
	env_free(e);
}

/* ---- IOAPIC ---- */

static uint32_t ioapic_rd(struct env *e, uint32_t reg)
{
	struct io_access a = { .addr = IOAPIC_BASE, .size = 4, .write = true, .data = reg };

	assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
	a = (struct io_access){ .addr = IOAPIC_BASE + 0x10, .size = 4 };
	assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
	return (uint32_t)a.data;
}

static void ioapic_wr(struct env *e, uint32_t reg, uint32_t v)
{
	struct io_access a = { .addr = IOAPIC_BASE, .size = 4, .write = true, .data = reg };

	assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
	a = (struct io_access){ .addr = IOAPIC_BASE + 0x10, .size = 4, .write = true, .data = v };
	assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
}

static void ioapic_set_rte(struct env *e, unsigned pin, uint64_t rte)
{
	ioapic_wr(e, 0x11 + 2 * pin, (uint32_t)(rte >> 32));
	ioapic_wr(e, 0x10 + 2 * pin, (uint32_t)rte);
}

static struct env *ioapic_env(void)
{
	struct env *e = env_new();

	assert_int_equal(ioapic_create(e->bus, &e->svc, &e->ioapic), 0);
	return e;
}

static void test_ioapic_id_version(void **state)
{
	struct env *e = ioapic_env();
	struct ioapic *second;

	assert_int_equal(ioapic_rd(e, 0x00), IOAPIC_DEFAULT_ID << 24);
	assert_int_equal(ioapic_rd(e, 0x01), 0x00170020);
	ioapic_wr(e, 0x00, 0x05000000);
	assert_int_equal(ioapic_rd(e, 0x00), 0x05000000);
	assert_int_equal(ioapic_rd(e, 0x02), 0x05000000);
	ioapic_wr(e, 0x01, 0xffffffff);                 /* read-only */
	assert_int_equal(ioapic_rd(e, 0x01), 0x00170020);
	for (unsigned pin = 0; pin < IOAPIC_NUM_PINS; pin++) {
		assert_int_equal(ioapic_rd(e, 0x10 + 2 * pin), 0x00010000); /* masked at reset */
		assert_int_equal(ioapic_rd(e, 0x11 + 2 * pin), 0);
	}
	assert_int_equal(ioapic_rd(e, 0x10 + 2 * IOAPIC_NUM_PINS), 0);
	/* delivery status and remote IRR cannot be written; reserved high bits neither */
	ioapic_wr(e, 0x10, 0x0001ffff);
	assert_int_equal(ioapic_rd(e, 0x10), 0x0001afff);
	ioapic_wr(e, 0x11, 0xffffffff);
	assert_int_equal(ioapic_rd(e, 0x11), 0xff000000);
	/* IOREGSEL reads back */
	struct io_access a = { .addr = IOAPIC_BASE, .size = 4 };

	assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
	assert_int_equal(a.data, 0x11);
	assert_int_equal(ioapic_create(e->bus, &e->svc, &second), -EBUSY);
	assert_int_equal(e->f.n_msgs, 0);
	env_free(e);
}

static void test_ioapic_edge_delivery(void **state)
{
	struct env *e = ioapic_env();
	struct irq_msg m;

	ioapic_set_rte(e, 4, 0x31 | (3ull << 56));      /* fixed, physical, edge, dest 3 */
	ioapic_set_irq(e->ioapic, 4, 1);
	assert_int_equal(e->f.n_msgs, 1);
	m = e->f.msgs[0];
	assert_int_equal(m.vector, 0x31);
	assert_int_equal(m.delivery, IRQ_FIXED);
	assert_int_equal(m.shorthand, IRQ_SH_NONE);
	assert_false(m.logical);
	assert_false(m.trigger_level);
	assert_true(m.level);
	assert_false(m.x2apic);
	assert_int_equal(m.dest, 3);
	assert_int_equal(m.source, ~0u);
	ioapic_set_irq(e->ioapic, 4, 1);                /* no edge */
	assert_int_equal(e->f.n_msgs, 1);
	ioapic_set_irq(e->ioapic, 4, 0);
	ioapic_set_irq(e->ioapic, 4, 1);
	assert_int_equal(e->f.n_msgs, 2);
	/* logical, lowest priority */
	ioapic_set_rte(e, 5, 0x40 | (1 << 8) | (1 << 11) | (0x0full << 56));
	ioapic_set_irq(e->ioapic, 5, 1);
	assert_int_equal(e->f.n_msgs, 3);
	m = e->f.msgs[2];
	assert_int_equal(m.vector, 0x40);
	assert_int_equal(m.delivery, IRQ_LOWEST);
	assert_true(m.logical);
	assert_int_equal(m.dest, 0x0f);
	/* NMI delivery mode */
	ioapic_set_rte(e, 6, (4 << 8) | (1ull << 56));
	ioapic_set_irq(e->ioapic, 6, 1);
	assert_int_equal(e->f.msgs[3].delivery, IRQ_NMI);
	/* pins out of range are ignored */
	ioapic_set_irq(e->ioapic, 24, 1);
	ioapic_set_irq(e->ioapic, 1000, 1);
	assert_int_equal(e->f.n_msgs, 4);
	env_free(e);
}

static void test_ioapic_masked(void **state)
{
	struct env *e = ioapic_env();

	ioapic_set_irq(e->ioapic, 2, 1);                /* reset state: masked */
	assert_int_equal(e->f.n_msgs, 0);
	ioapic_set_rte(e, 2, 0x30 | (1 << 16));
	ioapic_set_irq(e->ioapic, 2, 0);
	ioapic_set_irq(e->ioapic, 2, 1);
	assert_int_equal(e->f.n_msgs, 0);
	ioapic_set_rte(e, 2, 0x30);                     /* unmask: the edge was lost */
	assert_int_equal(e->f.n_msgs, 0);
	/* level pin asserted while masked fires when unmasked */
	ioapic_set_rte(e, 9, 0x50 | (1 << 15) | (1 << 16));
	ioapic_set_irq(e->ioapic, 9, 1);
	assert_int_equal(e->f.n_msgs, 0);
	ioapic_set_rte(e, 9, 0x50 | (1 << 15));
	assert_int_equal(e->f.n_msgs, 1);
	assert_true(e->f.msgs[0].trigger_level);
	env_free(e);
}

static void test_ioapic_level_remote_irr(void **state)
{
	struct env *e = ioapic_env();
	struct io_access a;

	ioapic_set_rte(e, 9, 0x50 | (1 << 15) | (2ull << 56));
	ioapic_set_irq(e->ioapic, 9, 1);
	assert_int_equal(e->f.n_msgs, 1);
	assert_int_equal(e->f.msgs[0].vector, 0x50);
	assert_true(e->f.msgs[0].trigger_level);
	assert_int_equal(e->f.msgs[0].dest, 2);
	assert_true(ioapic_rd(e, 0x10 + 18) & (1 << 14)); /* remote IRR */
	ioapic_set_irq(e->ioapic, 9, 0);
	ioapic_set_irq(e->ioapic, 9, 1);
	assert_int_equal(e->f.n_msgs, 1);               /* blocked until EOI */
	ioapic_eoi(e->ioapic, 0x51);                    /* other vector: nothing */
	assert_int_equal(e->f.n_msgs, 1);
	ioapic_eoi(e->ioapic, 0x50);                    /* still asserted: delivered again */
	assert_int_equal(e->f.n_msgs, 2);
	assert_true(ioapic_rd(e, 0x10 + 18) & (1 << 14));
	ioapic_set_irq(e->ioapic, 9, 0);
	ioapic_eoi(e->ioapic, 0x50);
	assert_int_equal(e->f.n_msgs, 2);
	assert_false(ioapic_rd(e, 0x10 + 18) & (1 << 14));
	/* the EOI register (version 0x20) does the same */
	ioapic_set_irq(e->ioapic, 9, 1);
	assert_int_equal(e->f.n_msgs, 3);
	a = (struct io_access){ .addr = IOAPIC_BASE + 0x40, .size = 4, .write = true, .data = 0x50 };
	assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
	assert_int_equal(e->f.n_msgs, 4);
	/* switching the pin to edge drops remote IRR */
	ioapic_set_rte(e, 9, 0x50 | (2ull << 56));
	assert_false(ioapic_rd(e, 0x10 + 18) & (1 << 14));
	env_free(e);
}

static void test_ioapic_bad_accesses(void **state)
{
	struct env *e = ioapic_env();
	static const uint8_t sizes[] = { 1, 2, 8 };
	struct io_access a;

	ioapic_wr(e, 0x00, 0x03000000);
	for (size_t i = 0; i < sizeof(sizes); i++) {
		a = (struct io_access){ .addr = IOAPIC_BASE + 0x10, .size = sizes[i], .write = true, .data = ~0ull };
		assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
		a = (struct io_access){ .addr = IOAPIC_BASE + 0x10, .size = sizes[i] };
		assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
		assert_int_equal(a.data, 0);
	}
	assert_int_equal(ioapic_rd(e, 0x00), 0x03000000);
	for (uint64_t off = 0; off < 0x1000; off += 4) {
		a = (struct io_access){ .addr = IOAPIC_BASE + off, .size = 4, .write = true, .data = 0x12 };
		if (off == 0 || off == 0x10 || off == 0x40)
			continue;
		assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
		a.write = false;
		assert_int_equal(bus_access(e->bus, BUS_MMIO, &a), 0);
		assert_int_equal(a.data, 0);
	}
	ioapic_wr(e, 0xff, 0x1234);                     /* reserved register */
	assert_int_equal(ioapic_rd(e, 0xff), 0);
	assert_int_equal(e->f.n_msgs, 0);
	env_free(e);
}

/* ---- every port, every width: nothing crashes, every claimed access is handled ---- */

static void test_all_ports_odd_accesses(void **state)
{
	static const uint8_t sizes[] = { 1, 2, 4, 8, 3 };
	static const uint64_t values[] = { 0, 0xff, 0xa5, 0x80, 0x11, 0xc2, 0xffffffffffffffffull, 0x1234567 };
	struct env *e = env_new();
	uint64_t seed = 12345;

	e->m.n_vcpus = 1;
	log_set_quiet(true);                            /* random PM1_CNT writes ask for sleep states */
	for (size_t i = 0; i < device_type_count(); i++)
		env_add(e, device_type_at(i)->name);
	assert_int_equal(ioapic_create(e->bus, &e->svc, &e->ioapic), 0);
	for (uint32_t port = 0; port < 0x10000; port++) {
		if (!bus_owner(e->bus, BUS_PIO, port))
			continue;
		for (size_t s = 0; s < sizeof(sizes); s++) {
			for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
				uint64_t d = values[v];

				assert_int_equal(pio(e, (uint16_t)port, sizes[s], true, &d), 0);
				assert_int_equal(pio(e, (uint16_t)port, sizes[s], false, &d), 0);
			}
		}
	}
	/* random sequences, with time moving */
	for (int i = 0; i < 200000; i++) {
		static const uint16_t ports[] = { 0x20, 0x21, 0xa0, 0xa1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x70, 0x71,
						  0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x510,
						  0x511, 0x4d0, 0x4d1, 0x92, 0xcf8 };
		uint64_t d;

		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		d = seed >> 24;
		fake_advance(&e->f, (seed >> 60) * 1000);
		assert_int_equal(pio(e, ports[(seed >> 33) % (sizeof(ports) / sizeof(ports[0]))],
				     sizes[(seed >> 40) % 3], (seed >> 45) & 1, &d), 0);
	}
	log_set_quiet(false);
	env_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bus_claim_overlap),
		cmocka_unit_test(test_bus_dispatch_and_owner),
		cmocka_unit_test(test_device_table),
		cmocka_unit_test(test_uart_init_and_transmit),
		cmocka_unit_test(test_uart_console_path),
		cmocka_unit_test(test_uart_loopback),
		cmocka_unit_test(test_uart_thre_interrupt),
		cmocka_unit_test(test_uart_rda_interrupt),
		cmocka_unit_test(test_uart_receive_pipe),
		cmocka_unit_test(test_uart_reader_eof),
		cmocka_unit_test(test_debugexit_codes),
		cmocka_unit_test(test_fwcfg_items),
		cmocka_unit_test(test_fwcfg_files),
		cmocka_unit_test(test_fwcfg_bad_files),
		cmocka_unit_test(test_pit_mode2_counting_and_irq),
		cmocka_unit_test(test_pit_mode0_oneshot_irq),
		cmocka_unit_test(test_pit_min_period),
		cmocka_unit_test(test_pit_mode3_and_out2),
		cmocka_unit_test(test_pit_port61_calibration),
		cmocka_unit_test(test_pit_latch_and_readback),
		cmocka_unit_test(test_rtc_time_bcd_binary),
		cmocka_unit_test(test_rtc_status_registers),
		cmocka_unit_test(test_rtc_interrupts),
		cmocka_unit_test(test_rtc_cmos_memory_128m),
		cmocka_unit_test(test_rtc_cmos_memory_8g),
		cmocka_unit_test(test_pic_init_and_masks),
		cmocka_unit_test(test_legacy_ports),
		cmocka_unit_test(test_acpi_pm),
		cmocka_unit_test(test_ioapic_id_version),
		cmocka_unit_test(test_ioapic_edge_delivery),
		cmocka_unit_test(test_ioapic_masked),
		cmocka_unit_test(test_ioapic_level_remote_irr),
		cmocka_unit_test(test_ioapic_bad_accesses),
		cmocka_unit_test(test_all_ports_odd_accesses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
