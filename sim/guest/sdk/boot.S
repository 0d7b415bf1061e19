/*
 * rackvm guest SDK: boot code.
 *
 * Boot story (BSP): a multiboot v1 loader enters entry32 in 32-bit protected mode, paging off, with
 * EAX = 0x2BADB002 and EBX = multiboot info. entry32 loads the static identity page tables (built by the
 * assembler below, nothing to fill at run time), enables PAE + EFER.LME + paging, and far-jumps through a
 * tiny boot GDT into entry64, which calls kmain(magic, mbi) on the boot stack.
 *
 * APs: kernel copies [ap_tramp_start, ap_tramp_end) to AP_TRAMP_BASE (below 1 MiB) and fills the mailbox
 * (CR3, stack, entry). SIPI starts the AP in real mode at AP_TRAMP_BASE; it takes the same path
 * real -> 32-bit protected -> long mode and jumps to ap_entry64 (in C: smp_ap_main) on its own stack.
 *
 * Traps: 256 stubs of 16 bytes each (isr_stubs + 16 * vector) push a zero error code when the CPU does not,
 * then the vector, and join trap_common, which saves all general registers as struct trap_frame and calls
 * trap_dispatch(frame). Only general registers are used in ring 0 (no SSE state to save).
 */
#include "boot_defs.h"

	.section .multiboot, "a"
	.balign 4
mb_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .text.boot, "ax"
	.code32
	.globl entry32
entry32:
	cli
	cld
	movl $boot_stack_top, %esp
	movl %eax, %esi                 /* multiboot magic */
	movl %ebx, %edi                 /* multiboot info */
	lgdt boot_gdtr
	movl %cr4, %eax
	orl $CR4_PAE, %eax
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr
	movl %cr0, %eax
	orl $(CR0_PG | CR0_PE), %eax
	movl %eax, %cr0
	ljmp $BOOT_CS64, $entry64

	.code64
entry64:
	movw $BOOT_DS, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	xorw %ax, %ax
	movw %ax, %fs
	movw %ax, %gs
	movq $boot_stack_top, %rsp
	xorq %rbp, %rbp
	/* kmain(mbi = edi, magic = esi); upper halves are undefined after the mode switch */
	movl %edi, %edi
	movl %esi, %esi
	call kmain
1:	cli
	hlt
	jmp 1b

/* ---- AP trampoline: position-independent copy run at AP_TRAMP_BASE ---- */
#define T(x) (AP_TRAMP_BASE + ((x) - ap_tramp_start))
	.globl ap_tramp_start, ap_tramp_end, ap_mailbox
	.code16
ap_tramp_start:
	cli
	cld
	movw %cs, %ax
	movw %ax, %ds
	lgdtl (tramp_gdtr - ap_tramp_start)
	movl %cr0, %eax
	orl $CR0_PE, %eax
	movl %eax, %cr0
	ljmpl $BOOT_CS32, $T(tramp32)

	.code32
tramp32:
	movw $BOOT_DS, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movl %cr4, %eax
	orl $CR4_PAE, %eax
	movl %eax, %cr4
	movl T(ap_mailbox + MBOX_CR3), %eax
	movl %eax, %cr3
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr
	movl %cr0, %eax
	orl $CR0_PG, %eax
	movl %eax, %cr0
	ljmp $BOOT_CS64, $T(tramp64)

	.code64
tramp64:
	movq T(ap_mailbox + MBOX_STACK), %rsp
	movq T(ap_mailbox + MBOX_ARG), %rdi
	movq T(ap_mailbox + MBOX_ENTRY), %rax
	xorq %rbp, %rbp
	jmpq *%rax

	.balign 8
tramp_gdt:
	.quad 0
	.quad 0x00cf9a000000ffff        /* 0x08: 32-bit code */
	.quad 0x00cf92000000ffff        /* 0x10: data */
	.quad 0x00af9a000000ffff        /* 0x18: 64-bit code */
tramp_gdt_end:
tramp_gdtr:
	.word tramp_gdt_end - tramp_gdt - 1
	.long T(tramp_gdt)
	.balign 8
ap_mailbox:
	.quad 0                         /* MBOX_CR3 */
	.quad 0                         /* MBOX_STACK */
	.quad 0                         /* MBOX_ENTRY */
	.quad 0                         /* MBOX_ARG */
ap_tramp_end:

/* ---- trap entry ---- */
	.text
	.code64
	.balign 16
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	.if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp trap_common
	.set vec, vec + 1
	.endr

trap_common:
	pushq %r15
	pushq %r14
	pushq %r13
	pushq %r12
	pushq %r11
	pushq %r10
	pushq %r9
	pushq %r8
	pushq %rbp
	pushq %rdi
	pushq %rsi
	pushq %rdx
	pushq %rcx
	pushq %rbx
	pushq %rax
	movq %rsp, %rdi
	call trap_dispatch
	popq %rax
	popq %rbx
	popq %rcx
	popq %rdx
	popq %rsi
	popq %rdi
	popq %rbp
	popq %r8
	popq %r9
	popq %r10
	popq %r11
	popq %r12
	popq %r13
	popq %r14
	popq %r15
	addq $16, %rsp
	iretq

/* enter_user(rip, rsp, arg): drop to ring 3 with IF=1; never returns. */
	.globl enter_user
enter_user:
	pushq $USER_DS
	pushq %rsi
	pushq $0x202
	pushq $USER_CS
	pushq %rdi
	movq %rdx, %rdi
	xorl %eax, %eax
	xorl %ebx, %ebx
	xorl %ecx, %ecx
	xorl %edx, %edx
	xorl %esi, %esi
	xorl %ebp, %ebp
	xorl %r8d, %r8d
	xorl %r9d, %r9d
	xorl %r10d, %r10d
	xorl %r11d, %r11d
	iretq

/* ---- boot data: GDT and identity page tables, complete at link time ---- */
	.section .data.boot, "aw"
	.balign 8
boot_gdt:
	.quad 0
	.quad 0x00cf9a000000ffff        /* 0x08: 32-bit code */
	.quad 0x00cf92000000ffff        /* 0x10: data */
	.quad 0x00af9a000000ffff        /* 0x18: 64-bit code */
boot_gdt_end:
boot_gdtr:
	.word boot_gdt_end - boot_gdt - 1
	.long boot_gdt

/*
 * Identity map of the low 4 GiB with 2 MiB pages, user-accessible (ring-3 workloads read kernel data and
 * the xAPIC page directly). The top GiB (MMIO: IOAPIC, local APIC) is uncached. Above 4 GiB nothing is
 * mapped, which is what crash=pf relies on.
 */
	.balign 4096
	.globl pml4
pml4:
	.quad pdpt + PTE_P + PTE_W + PTE_U
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x0000 + PTE_P + PTE_W + PTE_U
	.quad pd + 0x1000 + PTE_P + PTE_W + PTE_U
	.quad pd + 0x2000 + PTE_P + PTE_W + PTE_U
	.quad pd + 0x3000 + PTE_P + PTE_W + PTE_U
	.fill 508, 8, 0
pd:
	.set i, 0
	.rept 1536
	.quad (i << 21) + PTE_P + PTE_W + PTE_U + PTE_PS
	.set i, i + 1
	.endr
	.rept 512
	.quad (i << 21) + PTE_P + PTE_W + PTE_U + PTE_PS + PTE_PWT + PTE_PCD
	.set i, i + 1
	.endr

	.section .bss.boot, "aw", @nobits
	.balign 16
boot_stack:
	.skip BOOT_STACK_SIZE
boot_stack_top:
