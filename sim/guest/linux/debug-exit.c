// SPDX-License-Identifier: MIT
/*
 * debug-exit CODE: the Linux guest's way to end the VM with a status (Debian's cloud kernel has no /dev/port):
 * ioperm(0xf4) and one OUT of CODE to isa-debug-exit, after which the VMM exits with (CODE << 1) | 1. If it returns
 * (no such device, or ioperm refused), it exits 1 with nothing printed. Freestanding: raw system calls, no libc, so
 * it runs from the busybox initramfs as is (built with -static -nostdlib).
 */
#define SYS_exit 60
#define SYS_ioperm 173

static long sys3(long n, long a, long b, long c)
{
	long r;

	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}

__attribute__((noreturn, used)) static void _start_c(const long *sp)
{
	const char *arg = sp[0] > 1 ? (const char *)sp[2] : "1";
	unsigned v = 0;

	while (*arg >= '0' && *arg <= '9')
		v = v * 10 + (unsigned)(*arg++ - '0');
	if (sys3(SYS_ioperm, 0xf4, 4, 1) == 0)
		__asm__ volatile("outb %b0, $0xf4" : : "a"(v));
	for (;;)
		sys3(SYS_exit, 1, 0, 0);
}

__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall _start_c\n");
