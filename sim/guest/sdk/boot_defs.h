/* Constants shared by boot.S and the C side of the guest SDK. */
#ifndef GUEST_BOOT_DEFS_H
#define GUEST_BOOT_DEFS_H

#define MB_MAGIC        0x1BADB002
#define MB_FLAGS        0x00000003      /* page-align modules, want memory info */
#define MB_BOOT_MAGIC   0x2BADB002

#define CR0_PE          0x00000001
#define CR0_PG          0x80000000
#define CR4_PAE         0x00000020
#define MSR_EFER        0xC0000080
#define EFER_LME        0x00000100

#define PTE_P           0x001
#define PTE_W           0x002
#define PTE_U           0x004
#define PTE_PWT         0x008
#define PTE_PCD         0x010
#define PTE_PS          0x080

/* Boot/trampoline GDT (boot.S) */
#define BOOT_CS32       0x08
#define BOOT_DS         0x10
#define BOOT_CS64       0x18

/* Kernel GDT (cpu.c): ring-0 code/data, ring-3 data/code, then one 16-byte TSS descriptor per CPU. */
#define KERNEL_CS       0x08
#define KERNEL_DS       0x10
#define USER_DS         (0x18 | 3)
#define USER_CS         (0x20 | 3)
#define TSS_SEL0        0x28

/* AP trampoline: one page below 1 MiB; SIPI vector = AP_TRAMP_BASE >> 12. */
#define AP_TRAMP_BASE   0x8000
#define MBOX_CR3        0
#define MBOX_STACK      8
#define MBOX_ENTRY      16
#define MBOX_ARG        24

#define BOOT_STACK_SIZE 16384

#endif
