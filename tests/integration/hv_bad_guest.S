# Tiny misbehaving multiboot v1 guests for tests/integration/test_hv_run.sh, assembled at test time:
#   as --32 --defsym CASE=<n> -o x.o hv_bad_guest.S && ld -m elf_i386 -Ttext=<addr> -e _start -o x.elf x.o
# The loader enters _start in 32-bit protected mode with flat segments (multiboot spec). Each case does one bad
# thing; if the VMM let it continue, the guest exits through isa-debug-exit with code 7 (status 15), which the
# test treats as a failure. CASE:
#   1 triple fault: empty IDT, then UD2 (#UD -> #GP -> #DF -> shutdown)
#   2 OUT to a port nobody claims (0x1234)
#   3 MMIO write to an address nothing claims (0xd0000000)
#   4 RDMSR of an unknown MSR: #GP into an empty IDT -> triple fault
#   5 fixed IPI to APIC id 0x55, which does not exist: dropped, as hardware does; the guest then exits with 0x10
#   6 halt forever with interrupts off (for the SIGINT/SIGTERM cases)
#   7 exit with code 0x21 at once (for the segments-outside-RAM case: linked high)
#   8 IN (byte, word, dword) from a port nobody claims (0x1234) and OUT to it: without --strict-io the reads give
#     all-ones and the write is dropped, and the guest exits with 0x11; a wrong value exits with 0x12

	.set MB_MAGIC, 0x1badb002
	.set MB_FLAGS, 0
	.text
	.globl _start
	.align 4
mb_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

_start:
	cli
.if CASE == 1
	lidt empty_idt
	ud2
.endif
.if CASE == 2
	mov $0x1234, %dx
	mov $0x5a, %al
	outb %al, %dx
.endif
.if CASE == 3
	movl $0x12345678, 0xd0000000
.endif
.if CASE == 4
	lidt empty_idt
	mov $0xdeadbeef, %ecx
	rdmsr
.endif
.if CASE == 5
	movl $0x1ff, 0xfee000f0           # SVR: APIC software-enabled
	movl $0x55000000, 0xfee00310      # ICR high: destination APIC id 0x55
	movl $0x00004041, 0xfee00300      # ICR low: fixed, vector 0x41, assert
	mov $0x10, %al
	outb %al, $0xf4
.endif
.if CASE == 6
1:	hlt
	jmp 1b
.endif
.if CASE == 7
	mov $0x21, %al
	outb %al, $0xf4
.endif
.if CASE == 8
	mov $0x1234, %dx
	xor %eax, %eax
	inb %dx, %al
	cmp $0xff, %eax
	jne 8f
	xor %eax, %eax
	inw %dx, %ax
	cmp $0xffff, %eax
	jne 8f
	inl %dx, %eax
	cmp $0xffffffff, %eax
	jne 8f
	mov $0x5a, %al
	outb %al, %dx
	mov $0x11, %al
	outb %al, $0xf4
8:	mov $0x12, %al
	outb %al, $0xf4
.endif
	mov $7, %al
	outb %al, $0xf4
2:	hlt
	jmp 2b

	.align 8
empty_idt:
	.word 0
	.long 0
