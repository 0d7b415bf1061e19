/* SPDX-License-Identifier: MIT */
/*
 * 16550A UART, COM1 (ports 0x3f8-0x3ff, ISA IRQ 4 = GSI 4).
 *
 * Registers: RBR/THR, IER, IIR (FIFO bits 7:6 when enabled) / FCR, LCR (DLAB), MCR (loopback), LSR, MSR, SCR,
 * DLL/DLM. Transmission is immediate: a THR write goes straight to the console (svc->console_write, or the file
 * machine_desc.console_path if set), so LSR.THRE and LSR.TEMT are always set. In loopback (MCR bit 4) the byte
 * goes to the receiver instead and MSR reflects MCR's outputs.
 *
 * Receive: with machine_desc.console_input a reader thread polls fd 0 and fills the RX FIFO (16 bytes, 1 with the
 * FIFO disabled). When the FIFO is full the thread stops reading (back-pressure, nothing is dropped) until the
 * guest drains a byte; destroy wakes it through an eventfd and joins it. EOF on fd 0 ends the thread.
 *
 * Interrupts (IIR priority): line status (overrun, IER bit 2) > received data (IER bit 0; IIR 0x4 at or above
 * the FCR trigger level, 0xc "character timeout" below it — reported at once, we keep no timeout timer) > THR
 * empty (IER bit 1; set by a THR write or by enabling the interrupt while THR is empty, cleared by reading IIR
 * while it reports THRE or by the next THR write) > modem status (IER bit 3, MSR delta bits). The INTR output is
 * a level: svc->irq_set(4, level) is called on every change (the ISA pin is edge-triggered at the IOAPIC, so a
 * THR write while THRE was already pending makes a fresh 0->1 edge, which drivers rely on). Like QEMU, OUT2 does
 * not gate the line. Not modelled: baud timing, parity/framing errors, break.
 *
 * Locking: the device lock covers all state; irq_set and console writes are called with it held, so level
 * changes reach the interrupt controller in the order they happened.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "hypervisor/bus.h"
#include "util/log.h"

#define UART_COM1 0x3f8
#define UART_IRQ 4
#define UART_FIFO_SIZE 16

#define LCR_DLAB 0x80
#define MCR_LOOP 0x10
#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define IER_RDI 0x01
#define IER_THRI 0x02
#define IER_RLSI 0x04
#define IER_MSI 0x08
#define IIR_NONE 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_RLSI 0x06
#define IIR_TIMEOUT 0x0c
#define IIR_FIFO 0xc0
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02

struct uart {
	pthread_mutex_t lock;
	const struct vm_services *svc;
	uint8_t ier, lcr, mcr, lsr_oe, msr, scr, dll, dlm, fcr;
	bool thr_ipending;
	int irq_level;
	uint8_t rx[UART_FIFO_SIZE];
	unsigned rx_head, rx_count;
	int out_fd;                 /* console_path, or -1 for svc->console_write */
	/* reader thread (console_input) */
	bool reader_running, reader_blocked, stopping;
	int wake_fd;
	pthread_t reader;
};

static unsigned uart_rx_cap(const struct uart *u)
{
	return (u->fcr & FCR_ENABLE) ? UART_FIFO_SIZE : 1;
}

static unsigned uart_rx_trigger(const struct uart *u)
{
	static const unsigned levels[4] = { 1, 4, 8, 14 };

	return (u->fcr & FCR_ENABLE) ? levels[u->fcr >> 6] : 1;
}

static uint8_t uart_msr_lines(const struct uart *u)
{
	if (u->mcr & MCR_LOOP) {
		/* CTS <- RTS, DSR <- DTR, RI <- OUT1, DCD <- OUT2 */
		return (uint8_t)(((u->mcr & 0x02) << 3) | ((u->mcr & 0x01) << 5) | ((u->mcr & 0x04) << 4) |
				 ((u->mcr & 0x08) << 4));
	}
	return 0xb0; /* DCD, DSR, CTS: a modem that is always there */
}

/* Recompute MSR's upper nibble, setting delta bits for the lines that changed (TERI: RI trailing edge only). */
static void uart_msr_update(struct uart *u)
{
	uint8_t lines = uart_msr_lines(u), old = u->msr & 0xf0, changed = lines ^ old, delta = 0;

	delta |= (changed & 0x10) ? 0x01 : 0;
	delta |= (changed & 0x20) ? 0x02 : 0;
	delta |= ((old & 0x40) && !(lines & 0x40)) ? 0x04 : 0;
	delta |= (changed & 0x80) ? 0x08 : 0;
	u->msr = (uint8_t)(lines | (u->msr & 0x0f) | delta);
}

static uint8_t uart_iir_id(const struct uart *u)
{
	if ((u->ier & IER_RLSI) && u->lsr_oe)
		return IIR_RLSI;
	if ((u->ier & IER_RDI) && u->rx_count)
		return u->rx_count >= uart_rx_trigger(u) ? IIR_RDI : IIR_TIMEOUT;
	if ((u->ier & IER_THRI) && u->thr_ipending)
		return IIR_THRI;
	if ((u->ier & IER_MSI) && (u->msr & 0x0f))
		return IIR_MSI;
	return IIR_NONE;
}

/* Call with the lock held after any state change. */
static void uart_update_irq(struct uart *u)
{
	int level = uart_iir_id(u) != IIR_NONE;

	if (level != u->irq_level) {
		u->irq_level = level;
		u->svc->irq_set(u->svc->opaque, UART_IRQ, level);
	}
}

/* Returns false (and sets overrun) when the receiver is full. */
static bool uart_rx_push(struct uart *u, uint8_t c)
{
	if (u->rx_count >= uart_rx_cap(u)) {
		u->lsr_oe = 1;
		return false;
	}
	u->rx[(u->rx_head + u->rx_count) % UART_FIFO_SIZE] = c;
	u->rx_count++;
	return true;
}

static void uart_rx_clear(struct uart *u)
{
	u->rx_head = 0;
	u->rx_count = 0;
}

static void uart_wake_reader(struct uart *u)
{
	uint64_t one = 1;

	if (u->reader_running && u->reader_blocked && u->rx_count < uart_rx_cap(u)) {
		u->reader_blocked = false;
		if (write(u->wake_fd, &one, sizeof(one)) < 0)
			pr_warn("uart: waking the reader: %m");
	}
}

static void uart_transmit(struct uart *u, uint8_t c)
{
	if (u->mcr & MCR_LOOP) {
		uart_rx_push(u, c);
		return;
	}
	if (u->out_fd >= 0) {
		if (write(u->out_fd, &c, 1) < 0)
			pr_warn("uart: console write: %m");
	} else {
		u->svc->console_write(u->svc->opaque, &c, 1);
	}
}

static uint8_t uart_read(struct uart *u, unsigned reg)
{
	uint8_t v = 0;

	switch (reg) {
	case 0:
		if (u->lcr & LCR_DLAB)
			return u->dll;
		if (u->rx_count) {
			v = u->rx[u->rx_head];
			u->rx_head = (u->rx_head + 1) % UART_FIFO_SIZE;
			u->rx_count--;
			uart_wake_reader(u);
		}
		return v;
	case 1:
		return (u->lcr & LCR_DLAB) ? u->dlm : u->ier;
	case 2:
		v = uart_iir_id(u);
		if (v == IIR_THRI)
			u->thr_ipending = false;
		return (u->fcr & FCR_ENABLE) ? (uint8_t)(v | IIR_FIFO) : v;
	case 3:
		return u->lcr;
	case 4:
		return u->mcr;
	case 5:
		v = LSR_THRE | LSR_TEMT | (u->rx_count ? LSR_DR : 0) | (u->lsr_oe ? LSR_OE : 0);
		u->lsr_oe = 0;
		return v;
	case 6:
		v = u->msr;
		u->msr &= 0xf0;
		return v;
	default:
		return u->scr;
	}
}

static void uart_write(struct uart *u, unsigned reg, uint8_t v)
{
	switch (reg) {
	case 0:
		if (u->lcr & LCR_DLAB) {
			u->dll = v;
			break;
		}
		/* THR empties at once: the pending THRE interrupt drops and rises again (a fresh edge) */
		u->thr_ipending = false;
		uart_update_irq(u);
		uart_transmit(u, v);
		u->thr_ipending = true;
		break;
	case 1:
		if (u->lcr & LCR_DLAB) {
			u->dlm = v;
			break;
		}
		if ((v & IER_THRI) && !(u->ier & IER_THRI))
			u->thr_ipending = true;
		u->ier = v & 0x0f;
		break;
	case 2: {
		bool was_enabled = u->fcr & FCR_ENABLE;

		/* Changing the FIFO enable resets both FIFOs (16550A datasheet). */
		if ((v & FCR_CLEAR_RX) || (bool)(v & FCR_ENABLE) != was_enabled)
			uart_rx_clear(u);
		u->fcr = v & 0xc9;
		uart_wake_reader(u);
		break;
	}
	case 3:
		u->lcr = v;
		break;
	case 4:
		u->mcr = v & 0x1f;
		uart_msr_update(u);
		break;
	case 5:
		break; /* LSR is read-only (factory test writes ignored) */
	case 6:
		break; /* MSR is read-only */
	default:
		u->scr = v;
		break;
	}
}

static int uart_io(void *opaque, struct io_access *a)
{
	struct uart *u = opaque;

	/* Byte registers: wider accesses touch only the addressed register (ports past 0x3ff are not ours). */
	pthread_mutex_lock(&u->lock);
	if (a->write)
		uart_write(u, (unsigned)a->offset, (uint8_t)a->data);
	else
		a->data = uart_read(u, (unsigned)a->offset);
	uart_update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return 0;
}

static void *uart_reader_main(void *arg)
{
	struct uart *u = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = u->wake_fd, .events = POLLIN }, { .fd = 0, .events = POLLIN } };
		uint8_t buf[UART_FIFO_SIZE];
		bool blocked;
		ssize_t n;

		pthread_mutex_lock(&u->lock);
		if (u->stopping) {
			pthread_mutex_unlock(&u->lock);
			break;
		}
		blocked = u->rx_count >= uart_rx_cap(u);
		u->reader_blocked = blocked;
		pthread_mutex_unlock(&u->lock);

		if (poll(p, blocked ? 1 : 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("uart: poll: %m");
			break;
		}
		if (p[0].revents & POLLIN) {
			uint64_t cnt;

			if (read(u->wake_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
				pr_warn("uart: eventfd: %m");
			continue;
		}
		if (blocked || !(p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		pthread_mutex_lock(&u->lock);
		size_t room = uart_rx_cap(u) - u->rx_count;
		pthread_mutex_unlock(&u->lock);
		if (room == 0)
			continue;
		n = read(0, buf, room);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			if (n < 0)
				pr_warn("uart: console input: %m");
			break; /* EOF: the guest simply gets no more input */
		}
		pthread_mutex_lock(&u->lock);
		for (ssize_t i = 0; i < n; i++)
			uart_rx_push(u, buf[i]); /* room was reserved: only a concurrent FIFO shrink can overrun */
		uart_update_irq(u);
		pthread_mutex_unlock(&u->lock);
	}
	pthread_mutex_lock(&u->lock);
	u->reader_blocked = false;
	pthread_mutex_unlock(&u->lock);
	return NULL;
}

static void uart_free(struct uart *u)
{
	if (u->out_fd >= 0)
		close(u->out_fd);
	if (u->wake_fd >= 0)
		close(u->wake_fd);
	pthread_mutex_destroy(&u->lock);
	free(u);
}

static int uart_create(struct bus *b, const struct machine_desc *m, const struct vm_services *svc, void **state)
{
	struct uart *u = calloc(1, sizeof(*u));
	int r;

	if (!u)
		return -ENOMEM;
	pthread_mutex_init(&u->lock, NULL);
	u->svc = svc;
	u->out_fd = -1;
	u->wake_fd = -1;
	u->thr_ipending = false;
	u->dll = 0x0c; /* 9600 baud, QEMU's reset divisor */
	u->lcr = 0x03;
	uart_msr_update(u);
	u->msr &= 0xf0;
	if (m->console_path) {
		u->out_fd = open(m->console_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (u->out_fd < 0) {
			r = -errno;
			pr_err("uart: %s: %m", m->console_path);
			goto out_free;
		}
	}
	u->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (u->wake_fd < 0) {
		r = -errno;
		goto out_free;
	}
	r = bus_claim(b, BUS_PIO, UART_COM1, 8, "uart-com1", uart_io, u);
	if (r)
		goto out_free;
	if (m->console_input) {
		r = -pthread_create(&u->reader, NULL, uart_reader_main, u);
		if (r)
			goto out_free;
		u->reader_running = true;
	}
	*state = u;
	return 0;
out_free:
	uart_free(u);
	return r;
}

static void uart_destroy(void *state)
{
	struct uart *u = state;
	uint64_t one = 1;

	if (!u)
		return;
	if (u->reader_running) {
		pthread_mutex_lock(&u->lock);
		u->stopping = true;
		pthread_mutex_unlock(&u->lock);
		if (write(u->wake_fd, &one, sizeof(one)) < 0)
			pr_warn("uart: waking the reader: %m");
		pthread_join(u->reader, NULL);
	}
	uart_free(u);
}

static const struct device_type uart_type = {
	.name = "uart",
	.create = uart_create,
	.destroy = uart_destroy,
};
DEVICE_REGISTER(uart_type)
