/* SPDX-License-Identifier: MIT */
/*
 * emu's system-architecture files (emu_sys.c, emu_seg.c, emu_event.c, emu_msr.c): their register bits, MSR numbers
 * and the helpers they share. Private to those files; the rest of emu sees emu.h only.
 */
#ifndef RACKVM_HYPERVISOR_EMU_SYS_INTERNAL_H
#define RACKVM_HYPERVISOR_EMU_SYS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "hypervisor/emu/emu.h"

#define CR0_PE  (1ull << 0)
#define CR0_MP  (1ull << 1)
#define CR0_EM  (1ull << 2)
#define CR0_TS  (1ull << 3)
#define CR0_ET  (1ull << 4)
#define CR0_NE  (1ull << 5)
#define CR0_WP  (1ull << 16)
#define CR0_AM  (1ull << 18)
#define CR0_NW  (1ull << 29)
#define CR0_CD  (1ull << 30)
#define CR0_PG  (1ull << 31)
#define CR4_TSD (1ull << 2)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define CR4_PGE (1ull << 7)
#define CR4_VALID 0x7ffull       /* VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR OSXMMEXCPT */
#define EFER_SCE (1ull << 0)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)

#define MSR_TSC            0x10
#define MSR_MTRRCAP        0xfe
#define MSR_SYSENTER_CS    0x174
#define MSR_SYSENTER_ESP   0x175
#define MSR_SYSENTER_EIP   0x176
#define MSR_MISC_ENABLE    0x1a0
#define MSR_MTRR_PHYS0     0x200
#define MSR_MTRR_FIX64K    0x250
#define MSR_MTRR_FIX16K0   0x258
#define MSR_MTRR_FIX16K1   0x259
#define MSR_MTRR_FIX4K0    0x268
#define MSR_PAT            0x277
#define MSR_MTRR_DEF_TYPE  0x2ff
#define MSR_EFER           0xc0000080
#define MSR_STAR           0xc0000081
#define MSR_LSTAR          0xc0000082
#define MSR_CSTAR          0xc0000083
#define MSR_SFMASK         0xc0000084
#define MSR_FS_BASE        0xc0000100
#define MSR_GS_BASE        0xc0000101
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_TSC_AUX        0xc0000103

/* raising (emu_sys.c) */
_Noreturn void sys_raise_sel(struct emu_cpu *cpu, int vector, uint16_t sel);
void sys_require_cpl0(struct emu_cpu *cpu);

/* descriptors and stacks (emu_seg.c) */
bool sys_canonical(uint64_t a);
void sys_cs_commit(struct emu_cpu *cpu, const struct kvm_segment *ns, unsigned cpl);
uint64_t sys_desc_read(struct emu_cpu *cpu, uint16_t sel, int vec, uint64_t *addr, uint64_t *hi);
void sys_desc_set_accessed(struct emu_cpu *cpu, uint64_t addr, uint64_t d);
void sys_rip_check(struct emu_cpu *cpu, const struct kvm_segment *cs, uint64_t rip);
void sys_seg_from_desc(struct kvm_segment *s, uint16_t sel, uint64_t d);
bool sys_seg_is_code(const struct kvm_segment *s);
void sys_seg_null(struct kvm_segment *s, uint16_t sel);
void sys_seg_real(struct kvm_segment *s, uint16_t sel);
uint64_t sys_sp_commit(uint64_t old, uint64_t new, unsigned ssize);
void sys_ss_check(struct emu_cpu *cpu, uint16_t sel, unsigned cpl, bool null_ok, int vec_bad,
		     struct kvm_segment *out, uint64_t *addr, uint64_t *d);
uint64_t sys_stack_mask(unsigned ssize);
void sys_stk_push(struct emu_cpu *cpu, uint64_t *sp, unsigned size, uint64_t val);

/* event delivery (emu_event.c): the TSS's stack pointers, and pushes onto a new stack */
uint64_t sys_tss_read(struct emu_cpu *cpu, unsigned off, unsigned size);
void sys_new_stack_push(struct emu_cpu *cpu, const struct kvm_segment *ss, uint64_t *sp, unsigned ssz,
			   unsigned size, uint64_t val, unsigned cpl);

#endif
