/* COM1 16550 UART, polled transmit only. */
#include "kern.h"

#define COM1 0x3f8
#define UART_THR 0
#define UART_IER 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_THRE 0x20

static volatile int console_lock;
static volatile int console_panicking;

void serial_init(void)
{
	outb(COM1 + UART_IER, 0x00);
	outb(COM1 + UART_LCR, 0x80);    /* DLAB: divisor 1 = 115200 baud */
	outb(COM1 + 0, 0x01);
	outb(COM1 + 1, 0x00);
	outb(COM1 + UART_LCR, 0x03);    /* 8n1 */
	outb(COM1 + UART_FCR, 0xc7);
	outb(COM1 + UART_MCR, 0x03);
}

static void serial_putc(char c)
{
	/* Bounded wait: a UART that never drains must not hang the guest. */
	for (unsigned i = 0; i < 100000 && !(inb(COM1 + UART_LSR) & LSR_THRE); i++)
		u_pause();
	outb(COM1 + UART_THR, (uint8_t)c);
}

void serial_write(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\n')
			serial_putc('\r');
		serial_putc(s[i]);
	}
}

/* After console_panic(), a lock holder that faulted (or a stuck CPU) delays the report only boundedly. */
static bool console_lock_acquire(void)
{
	for (unsigned long i = 0;; i++) {
		if (!__atomic_exchange_n(&console_lock, 1, __ATOMIC_ACQUIRE))
			return true;
		if (console_panicking && i > 1000000)
			return false;
		u_pause();
	}
}

void console_panic(void)
{
	console_panicking = 1;
}

/* Whole writes are atomic with respect to other CPUs, so lines from different CPUs never interleave. */
void console_write(const char *s, size_t len)
{
	bool locked = console_lock_acquire();
	serial_write(s, len);
	if (locked)
		spin_unlock(&console_lock);
}

int k_printf(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = u_vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	console_write(buf, (size_t)n);
	return n;
}
