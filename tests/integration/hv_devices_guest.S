# A tiny multiboot v1 guest that drives rackvm's platform devices the way firmware and Linux do, for
# tests/integration/test_hv_devices.sh. It switches to long mode at once (identity-mapped 4 GiB, 2 MiB pages) and
# runs in ring 0 of 64-bit mode: the nested-KVM hosts rackvm targets cannot emulate a 32-bit protected-mode IRET,
# while IRETQ works. It prints one line per check
# on COM1 (including up to 3 bytes it receives on COM1 within 5 s of its prompt) and exits through isa-debug-exit with 0x20 on success (status 0x41), or:
#   0x11 PIT channel 2 OUT was high right after programming a mode 0 count
#   0x12 PIT channel 2 OUT never went high (port 0x61 bit 5)
#   0x13 an unexpected interrupt or exception (anything but vector 0x30)
# The same image runs under qemu (-M q35) so the printed values can be compared line by line.
# Built by make as $(BUILD)/guest/hv-devices.elf (tests/module.mk): assembled and linked as ELF64, then
# repackaged as ELF32 for multiboot loaders, like the SDK's images.
# Registers: %r14 holds the IOAPIC base and %r15 the local APIC base throughout (a 32-bit absolute address above
# 2 GiB cannot be encoded in 64-bit code: displacements are sign-extended).

	.set MB_MAGIC, 0x1badb002
	.set MB_FLAGS, 0
	.set COM1, 0x3f8
	.set IOAPIC, 0xfec00000
	.set LAPIC, 0xfee00000
	.set TIMER_VECTOR, 0x30
	.set UART_VECTOR, 0x31
	.set RTC_VECTOR, 0x32
	.set PIT_10MS, 11932

	.section .text.boot, "ax"     # 32-bit code: tests/guest/insn-scan.sh disassembles only .text as 64-bit
	.globl _start
	.align 4
mb_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.code32
_start:
	cli
	lgdt gdt_desc
	ljmp $0x08, $1f
1:	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov %ax, %fs
	mov %ax, %gs
	mov $pml4, %eax
	mov %eax, %cr3
	mov %cr4, %eax
	or $0x20, %eax                  # PAE
	mov %eax, %cr4
	mov $0xc0000080, %ecx           # EFER.LME
	rdmsr
	or $0x100, %eax
	wrmsr
	mov %cr0, %eax
	or $0x80000000, %eax            # PG
	mov %eax, %cr0
	ljmp $0x18, $long64

	.text
	.code64
long64:
	mov $stack_top, %esp
	mov $IOAPIC, %r14d
	mov $LAPIC, %r15d
	call uart_init
	mov $s_start, %esi
	call puts

	# fw_cfg: signature (4 bytes), number of CPUs (le16)
	mov $s_fwcfg, %esi
	call puts
	mov $0x510, %dx
	xor %ax, %ax
	outw %ax, %dx
	mov $4, %ecx
2:	mov $0x511, %dx
	inb %dx, %al
	call putc
	loop 2b
	call newline
	mov $s_cpus, %esi
	call puts
	mov $0x510, %dx
	mov $5, %ax
	outw %ax, %dx
	mov $0x511, %dx
	inb %dx, %al
	movzbl %al, %ebx
	inb %dx, %al
	movzbl %al, %eax
	shl $8, %eax
	or %ebx, %eax
	call print_hex_nl

	# CMOS: memory between 16 MiB and 4 GiB (0x34/0x35), RTC registers B and D
	mov $s_cmos34, %esi
	call puts
	mov $0x35, %al
	call cmos_read
	movzbl %al, %ebx
	shl $8, %ebx
	mov $0x34, %al
	call cmos_read
	movzbl %al, %eax
	or %ebx, %eax
	call print_hex_nl
	mov $s_rtcb, %esi
	call puts
	mov $0x0b, %al
	call cmos_read
	movzbl %al, %eax
	call print_hex_nl
	mov $s_rtcd, %esi
	call puts
	mov $0x0d, %al
	call cmos_read
	movzbl %al, %eax
	call print_hex_nl

	# IOAPIC version register
	mov $s_ioapic, %esi
	call puts
	movl $1, (%r14)
	mov 0x10(%r14), %eax
	call print_hex_nl

	# PIT channel 2, mode 0, 10 ms, gate through port 0x61, poll OUT2 (Linux's pit_calibrate_tsc)
	inb $0x61, %al
	and $0xfd, %al
	or $0x01, %al
	outb %al, $0x61
	mov $0xb0, %al
	outb %al, $0x43
	mov $(PIT_10MS & 0xff), %al
	outb %al, $0x42
	mov $(PIT_10MS >> 8), %al
	outb %al, $0x42
	inb $0x61, %al
	test $0x20, %al
	mov $0x11, %al
	jnz exit
	mov $200000000, %ecx
3:	inb $0x61, %al
	test $0x20, %al
	jnz 4f
	loop 3b
	mov $0x12, %al
	jmp exit
4:	mov $s_pit2, %esi
	call puts

	# UART receive: a prompt line, then up to 3 bytes within 5 s (timed by PIT channel 2: 500 x 10 ms),
	# echoed on one line
	mov $s_prompt, %esi
	call puts
	mov $s_rx, %esi
	call puts
	xor %ebx, %ebx                  # bytes received
	xor %edi, %edi                  # 10 ms periods elapsed
	call pit2_start
9:	mov $(COM1 + 5), %dx
	inb %dx, %al
	test $1, %al
	jz 10f
	mov $COM1, %dx
	inb %dx, %al
	call putc
	inc %ebx
	cmp $3, %ebx
	je 11f
10:	inb $0x61, %al
	test $0x20, %al
	jz 9b
	call pit2_start
	inc %edi
	cmp $500, %edi
	jb 9b
11:	call newline

	# Interrupts: IDT (vector 0x30 -> timer_isr, everything else -> bad_isr), 8259s masked, local APIC on,
	# IOAPIC pin 2 (ISA IRQ 0 after the MADT override) -> vector 0x30 edge to this CPU, PIT channel 0 at 100 Hz.
	xor %ecx, %ecx
5:	mov $bad_isr, %eax
	cmp $TIMER_VECTOR, %ecx
	jne 6f
	mov $timer_isr, %eax
6:	cmp $UART_VECTOR, %ecx
	jne 12f
	mov $uart_isr, %eax
12:	cmp $RTC_VECTOR, %ecx
	jne 16f
	mov $rtc_isr, %eax
16:	mov %ecx, %edx                  # 16-byte 64-bit interrupt gates, handlers below 4 GiB
	shl $4, %edx
	mov %ax, idt(%rdx)
	movw $0x18, idt + 2(%rdx)
	movw $0x8e00, idt + 4(%rdx)
	shr $16, %eax
	mov %ax, idt + 6(%rdx)
	movl $0, idt + 8(%rdx)
	movl $0, idt + 12(%rdx)
	inc %ecx
	cmp $256, %ecx
	jb 5b
	lidt idt_desc
	mov $0xff, %al
	outb %al, $0x21
	outb %al, $0xa1
	movl $0x1ff, 0xf0(%r15)
	movl $0, 0x80(%r15)
	mov 0x20(%r15), %eax
	and $0xff000000, %eax
	movl $0x15, (%r14)
	mov %eax, 0x10(%r14)
	movl $0x14, (%r14)
	movl $TIMER_VECTOR, 0x10(%r14)
	mov $0x34, %al
	outb %al, $0x43
	mov $(PIT_10MS & 0xff), %al
	outb %al, $0x40
	mov $(PIT_10MS >> 8), %al
	outb %al, $0x40
7:	cmpl $5, ticks
	jae 15f
	sti
	hlt
	cli
	jmp 7b
15:
	movl $0x14, (%r14)
	movl $(0x10000 | TIMER_VECTOR), 0x10(%r14)
	mov $0x30, %al
	outb %al, $0x43
	mov $s_timer, %esi
	call puts

	# UART THRE interrupt on IOAPIC pin 4 programmed level-triggered (vector 0x31): the handler reads IIR
	# (dropping the line), then until the third interrupt transmits a '#' (raising it again while remote IRR
	# still holds the pin) and EOIs: the IOAPIC must deliver again at that EOI.
	mov $s_thre, %esi
	call puts
	mov 0x20(%r15), %eax
	and $0xff000000, %eax
	movl $0x19, (%r14)
	mov %eax, 0x10(%r14)
	movl $0x18, (%r14)
	movl $(0x8000 | UART_VECTOR), 0x10(%r14)
	mov $(COM1 + 1), %dx
	mov $0x02, %al                  # IER: THR empty (the interrupt stays pending until sti)
	outb %al, %dx
13:	cmpl $3, uart_irqs              # check with interrupts off; sti's one-instruction shadow makes
	jae 14f                         # "sti; hlt" wake on an interrupt that is already pending
	sti
	hlt
	cli
	jmp 13b
14:
	mov $(COM1 + 1), %dx
	xor %al, %al
	outb %al, %dx
	movl $0x18, (%r14)
	movl $(0x10000 | 0x8000 | UART_VECTOR), 0x10(%r14)
	call newline
	mov $s_rirr, %esi
	call puts
	mov remote_irr_seen, %eax
	call print_hex_nl

	# RTC update-ended interrupt: IRQ 8 on IOAPIC pin 8 (edge) -> vector 0x32; the handler reads register C
	mov $0x0c, %al
	call cmos_read
	mov 0x20(%r15), %eax
	and $0xff000000, %eax
	movl $0x21, (%r14)
	mov %eax, 0x10(%r14)
	movl $0x20, (%r14)
	movl $RTC_VECTOR, 0x10(%r14)
	mov $0x0b, %al
	outb %al, $0x70
	mov $0x12, %al                  # UIE, 24 h, BCD
	outb %al, $0x71
17:	cmpl $0, rtc_irqs
	jne 18f
	sti
	hlt
	cli
	jmp 17b
18:	mov $0x0b, %al
	outb %al, $0x70
	mov $0x02, %al
	outb %al, $0x71
	movl $0x20, (%r14)
	movl $(0x10000 | RTC_VECTOR), 0x10(%r14)
	mov $s_rtc, %esi
	call puts
	mov rtc_c, %eax
	and $0xb0, %eax
	call print_hex_nl
	mov $s_done, %esi
	call puts
	mov $0x20, %al
exit:
	outb %al, $0xf4
8:	cli
	hlt
	jmp 8b

timer_isr:
	push %rax
	incl ticks
	movl $0, 0xb0(%r15)
	pop %rax
	iretq

uart_isr:
	push %rax
	push %rdx
	incl uart_irqs
	movl $0x18, (%r14)              # remote IRR (bit 14) of pin 4 while the interrupt is in service
	mov 0x10(%r14), %eax
	shr $14, %eax
	and $1, %eax
	add %eax, remote_irr_seen
	mov $(COM1 + 2), %dx
	inb %dx, %al                    # IIR reports THRE: reading it clears the source
	cmpl $3, uart_irqs
	jae 1f
	mov $COM1, %dx
	mov $'#', %al
	outb %al, %dx
1:	movl $0, 0xb0(%r15)
	pop %rdx
	pop %rax
	iretq

rtc_isr:
	push %rax
	mov $0x0c, %al
	call cmos_read
	cmpl $0, rtc_irqs
	jne 1f
	movzbl %al, %eax
	mov %eax, rtc_c
1:	incl rtc_irqs
	movl $0, 0xb0(%r15)
	pop %rax
	iretq

bad_isr:
	mov $s_bad, %esi
	call puts
	mov $0x13, %al
	jmp exit

# PIT channel 2: a new 10 ms mode 0 count (OUT2 goes high when it ends)
pit2_start:
	push %rax
	mov $0xb0, %al
	outb %al, $0x43
	mov $(PIT_10MS & 0xff), %al
	outb %al, $0x42
	mov $(PIT_10MS >> 8), %al
	outb %al, $0x42
	pop %rax
	ret

# al = CMOS index -> al = value
cmos_read:
	outb %al, $0x70
	inb $0x71, %al
	ret

uart_init:
	mov $(COM1 + 1), %dx
	xor %al, %al
	outb %al, %dx
	mov $(COM1 + 3), %dx
	mov $0x80, %al
	outb %al, %dx
	mov $COM1, %dx
	mov $1, %al
	outb %al, %dx
	mov $(COM1 + 1), %dx
	xor %al, %al
	outb %al, %dx
	mov $(COM1 + 3), %dx
	mov $3, %al
	outb %al, %dx
	mov $(COM1 + 2), %dx
	mov $0xc7, %al
	outb %al, %dx
	mov $(COM1 + 4), %dx
	mov $3, %al
	outb %al, %dx
	ret

# al = byte; preserves everything
putc:
	push %rdx
	push %rax
	mov $(COM1 + 5), %dx
1:	inb %dx, %al
	test $0x20, %al
	jz 1b
	pop %rax
	mov $COM1, %dx
	outb %al, %dx
	pop %rdx
	ret

newline:
	push %rax
	mov $'\n', %al
	call putc
	pop %rax
	ret

# esi = NUL-terminated string
puts:
	push %rax
1:	lodsb
	test %al, %al
	jz 2f
	call putc
	jmp 1b
2:	pop %rax
	ret

# eax = value: 8 hex digits and a newline
print_hex_nl:
	push %rcx
	push %rbx
	mov %eax, %ebx
	mov $8, %ecx
1:	rol $4, %ebx
	mov %ebx, %eax
	and $0xf, %eax
	mov hexdigits(%rax), %al
	call putc
	loop 1b
	call newline
	pop %rbx
	pop %rcx
	ret

	.data
	.align 8
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff        # 0x08: flat 32-bit code
	.quad 0x00cf92000000ffff        # 0x10: flat data
	.quad 0x00af9a000000ffff        # 0x18: 64-bit code
gdt_desc:
	.word gdt_desc - gdt - 1
	.long gdt
	.align 8
idt_desc:
	.word 256 * 16 - 1
	.quad idt
# identity map of the low 4 GiB with 2 MiB pages (the top GiB holds the IOAPIC and local APIC)
	.align 4096
pml4:
	.quad pdpt + 3
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x0003
	.quad pd + 0x1003
	.quad pd + 0x2003
	.quad pd + 0x3003
	.fill 508, 8, 0
pd:
	.set i, 0
	.rept 2048
	.quad (i << 21) + 0x83
	.set i, i + 1
	.endr
hexdigits:
	.ascii "0123456789abcdef"
s_start:  .asciz "devices: start\n"
s_fwcfg:  .asciz "fwcfg signature "
s_cpus:   .asciz "fwcfg cpus "
s_cmos34: .asciz "cmos 0x34 "
s_rtcb:   .asciz "rtc B "
s_rtcd:   .asciz "rtc D "
s_ioapic: .asciz "ioapic version "
s_pit2:   .asciz "pit channel 2 out high after 10 ms\n"
s_prompt: .asciz "uart: send 3 bytes now\n"
s_rx:     .asciz "uart received: "
s_timer:  .asciz "pit channel 0 ticks through the ioapic: 5\n"
s_done:   .asciz "devices: done\n"
s_thre:   .asciz "uart thre interrupts (level-triggered pin): "
s_rirr:   .asciz "ioapic remote irr set in the handler, times: "
s_rtc:    .asciz "rtc update interrupt, register C & 0xb0: "
s_bad:    .asciz "devices: unexpected interrupt or exception\n"
	.align 4
ticks:
	.long 0
uart_irqs:
	.long 0
remote_irr_seen:
	.long 0
rtc_irqs:
	.long 0
rtc_c:
	.long 0

	.bss
	.align 4096
idt:
	.space 256 * 16
stack:
	.space 8192
stack_top:
