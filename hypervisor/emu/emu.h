/* SPDX-License-Identifier: MIT */
/*
 * Internals of the emu accelerator: an x86-64 interpreter implementing struct accel_ops (hypervisor/accel.h).
 *
 * Split between two files sets (two owners, this header is the contract between them):
 *   emu_exec.c            — instruction decode and execution: every integer instruction of the 16/32/64-bit ISA
 *                           that compilers and boot code emit (no x87/SSE/AVX: those raise #UD, and CPUID says so),
 *                           flags, string instructions with REP, LOCK (atomic on host memory), IN/OUT, and calls
 *                           into emu_sys for every system instruction.
 *   emu_mmu.c, emu_sys.c (+ emu_seg.c, emu_event.c, emu_msr.c: the file map is at the top of emu_sys.c), emu.c
 *                         — guest memory (paging 2/4-level... see below), segmentation and modes, exceptions and
 *                           interrupt delivery (IDT, TSS stack switch, IRET), system instructions, MSRs, CPUID, and
 *                           the accel_ops glue (run loop, exits, kick, inject).
 *
 * Execution model: emu_step() executes one instruction. Faults are raised with emu_raise(), which longjmps back to
 * the instruction boundary in emu_run_loop(); the loop then delivers the exception through the IDT (double fault,
 * triple fault -> ACCEL_EXIT_SHUTDOWN). RIP and all registers are committed only when an instruction completes, so
 * a faulting instruction restarts cleanly (instructions with several register writes write them at the end, or
 * keep them restartable).
 *
 * Exits in the middle of an instruction (port IN, MMIO read): emu_io_in()/emu_mmio_read() return a completed value
 * if the VMM already supplied it for exactly this access (cpu->io_done), otherwise they record the access in
 * cpu->exit and longjmp with EMU_JMP_EXIT: the instruction is not retired and is executed again on the next run,
 * when the value is there. Writes (OUT, MMIO write) complete the instruction first and then exit. Hence every
 * instruction performs at most one exiting read, before any of its writes.
 *
 * Memory ordering: host loads/stores to guest RAM are done with __atomic acquire loads / release stores (plain MOVs
 * on x86, but the compiler cannot reorder them), LOCKed instructions and XCHG with seq_cst host atomics, MFENCE
 * with a full fence. That gives the guest x86-TSO on an x86 host — litmus tests across vCPU threads rely on it.
 */
#ifndef RACKVM_HYPERVISOR_EMU_H
#define RACKVM_HYPERVISOR_EMU_H

#include <setjmp.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "hypervisor/accel.h"

/* Segment register numbers, in encoding order. */
enum { SEG_ES = 0, SEG_CS = 1, SEG_SS = 2, SEG_DS = 3, SEG_FS = 4, SEG_GS = 5, SEG_NONE = 7 };
enum { R_AX = 0, R_CX, R_DX, R_BX, R_SP, R_BP, R_SI, R_DI, R_R8, R_R9, R_R10, R_R11, R_R12, R_R13, R_R14, R_R15 };

/* Exception vectors. */
enum { EXC_DE = 0, EXC_DB = 1, EXC_NMI = 2, EXC_BP = 3, EXC_OF = 4, EXC_BR = 5, EXC_UD = 6, EXC_NM = 7, EXC_DF = 8,
       EXC_TS = 10, EXC_NP = 11, EXC_SS = 12, EXC_GP = 13, EXC_PF = 14, EXC_MF = 16, EXC_AC = 17 };

/* RFLAGS bits. */
#define EFL_CF (1u << 0)
#define EFL_PF (1u << 2)
#define EFL_AF (1u << 4)
#define EFL_ZF (1u << 6)
#define EFL_SF (1u << 7)
#define EFL_TF (1u << 8)
#define EFL_IF (1u << 9)
#define EFL_DF (1u << 10)
#define EFL_OF (1u << 11)
#define EFL_IOPL (3u << 12)
#define EFL_NT (1u << 14)
#define EFL_RF (1u << 16)
#define EFL_VM (1u << 17)
#define EFL_AC (1u << 18)
#define EFL_ID (1u << 21)

enum emu_mode { EMU_REAL, EMU_PROT16, EMU_PROT32, EMU_COMPAT16, EMU_COMPAT32, EMU_LONG64 };

/* Why emu_step() left through longjmp (value passed to longjmp). */
enum { EMU_JMP_FAULT = 1, EMU_JMP_EXIT = 2 };

/* Software TLB entry: linear page -> host pointer, for one access kind. */
struct emu_tlb_entry {
	uint64_t lpage;      /* linear address >> 12, or ~0 when empty */
	uint8_t *host;       /* host address of the page */
	uint8_t flags;       /* EMU_TLB_* */
};
#define EMU_TLB_WRITE 1u /* writable at the CPL it was filled for */
#define EMU_TLB_USER 2u  /* filled for a CPL 3 access */
#define EMU_TLB_SIZE 256

struct emu_vm {
	uint8_t *ram;
	uint64_t ram_size, hole_start;
	struct accel_cpuid_entry *cpuid;
	size_t n_cpuid;
	uint64_t tsc_hz;
	uint64_t tsc_offset;     /* guest TSC = host-derived ticks + offset, same for every vCPU of the VM */
};

struct emu_cpu {
	struct emu_vm *vm;
	unsigned index;
	uint32_t apic_id;

	/* architectural state */
	uint64_t gpr[16];
	uint64_t rip;
	uint64_t rflags;             /* kept materialized (all flags valid) between instructions */
	struct kvm_segment seg[6];   /* by SEG_* number */
	struct kvm_segment tr, ldt;
	struct kvm_dtable gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer;
	uint64_t msr_star, msr_lstar, msr_cstar, msr_sfmask, msr_kernel_gs_base, msr_tsc_aux, msr_pat;
	uint64_t msr_sysenter_cs, msr_sysenter_esp, msr_sysenter_eip, msr_misc_enable;
	enum emu_mode mode;          /* recomputed by emu_update_mode() after CR0/EFER/CS changes */
	unsigned cpl;

	/* per-instruction decode context, set by emu_exec.c, read by emu_sys.c for error reports */
	uint64_t insn_rip;           /* RIP of the instruction being executed */

	/* interrupts */
	bool irq_shadow;             /* STI / MOV SS / POP SS just executed: no interrupt before the next insn */
	int pending_irq;             /* vector queued by inject_irq, -1 none */
	bool pending_nmi, nmi_blocked;
	bool want_irq_window;

	/* exits */
	struct accel_exit *exit;     /* where run() writes the current exit */
	bool io_done;                /* the VMM filled the read result of the access that caused the last exit */
	uint8_t io_buf[4096];        /* accel_exit.io.data points here */
	atomic_bool kicked;

	/* exceptions */
	jmp_buf jmp;
	int exc_vector, exc_error;   /* error -1 = none */
	bool exc_double;             /* delivering a fault raised while delivering another */

	struct emu_tlb_entry tlb_r[EMU_TLB_SIZE], tlb_w[EMU_TLB_SIZE];
	uint64_t insns;              /* retired instructions (stats) */

	/* Added by emu-sys (owner of emu_mmu/emu_sys/emu.c); emu_exec.c may read these, only emu_sys writes them. */
	struct emu_tlb_entry tlb_x[EMU_TLB_SIZE]; /* instruction fetch (execute permission, NX) */
	bool exit_pending;           /* an exit (OUT, MMIO write, WRMSR, HLT) is recorded in *exit and is taken as
	                              * soon as the current instruction retires. REP string instructions must stop
	                              * iterating (leave RIP on the instruction, registers updated for the iterations
	                              * done) when they see it set, so one iteration = at most one MMIO write exit. */
	bool exit_restart;           /* the EMU_JMP_EXIT in flight restarts the instruction (read exits) */
	struct {                     /* the read exit waiting for (or holding) the VMM's value */
		int kind;            /* 0 none, else ACCEL_EXIT_IO / ACCEL_EXIT_MMIO / ACCEL_EXIT_MSR_READ, or
		                      * ACCEL_EXIT_MSR_WRITE: the VMM may refuse that write (msr.error) */
		uint64_t addr;       /* port, gpa or MSR index */
		unsigned size;
		uint64_t value;
		bool error;          /* MSR read: the VMM asked for #GP */
	} pend;
	struct accel_exit *last_exit; /* exit of the previous run(): read results are taken from here */
	uint64_t tsc_adjust;         /* per-vCPU offset added by WRMSR IA32_TSC (0x10) */
	uint64_t msr_mtrr_def_type, msr_mtrr_fixed[11], msr_mtrr_var[16];
	uint64_t dr[8];              /* debug registers: stored, no breakpoints */
	/* x87/SSE state: the guest's FXSAVE64 image (emu_exec_fpu.c), reset by emu_fpu_reset() */
	alignas(16) uint8_t fx[512];
	int dlv_class;               /* event being delivered: -1 none, else EMU_DLV_* (double-fault rules) */
	uint64_t dlv_rip;            /* its saved RIP (a fault during delivery reports this one) */
	uint64_t wrmsr_rip;          /* WRMSR that exited: the VMM's error on it becomes #GP at this RIP */
	bool dlv_ext;                /* the event being delivered is not INT n: error codes get EXT (bit 0) */
	bool dlv_fault;              /* ... and is an exception an instruction raised (fault_deliver), not an interrupt:
	                              * a fault-class vector then pushes RFLAGS with RF set (SDM vol. 3, 17.3.1.1) */
	bool rf_loaded;              /* the instruction that just retired loaded RF (IRET): it survives that one
	                              * instruction; every other retirement clears it */
	/* Added by emu owner (2nd round). */
	uint64_t insns_pub;          /* cpu->insns as of the end of the last run(), __atomic relaxed: what accel
	                              * insn_count returns to other threads (insns itself is the vCPU thread's) */
	uint64_t pauses, pause_yields; /* PAUSE executed / host sched_yield() done for them (stats, vCPU thread) */
	unsigned pause_streak;       /* PAUSEs since the last yield: every EMU_PAUSE_YIELD_EVERY-th yields */
};
/* PAUSE (F3 90) yields the host thread every this many PAUSEs: a spinning vCPU thread lets the node's other
 * threads (the vCPU it waits for, the interconnect) run on a host with fewer cores than threads. docs/emu.md has
 * the measurement behind the value. */
#define EMU_PAUSE_YIELD_EVERY 64u
enum { EMU_DLV_BENIGN = 0, EMU_DLV_CONTRIB, EMU_DLV_PF, EMU_DLV_DF };

/*
 * Added by emu owner (2nd round): host fences for guest memory ordering (MFENCE/LFENCE/SFENCE, misaligned RAM
 * accesses done with memcpy). Guest RAM accesses are acquire loads / release stores already, so on an x86 host only
 * the full fence (MFENCE: store->load order) needs a hardware barrier; acquire/release fences only stop the compiler.
 * ThreadSanitizer does not model atomic_thread_fence and GCC makes that a -Werror=tsan error, so a TSan build uses
 * a seq_cst RMW on a per-thread dummy for the full fence (on x86 a LOCKed instruction is a full barrier: the guest
 * sees the same ordering) and compiler barriers for the others (x86 needs no more; TSan builds race-check the VMM,
 * the litmus tests check guest TSO in the normal and ASan builds).
 */
#ifdef __SANITIZE_THREAD__
static inline void emu_fence_full(void)
{
	static _Thread_local unsigned long dummy;
	__atomic_fetch_add(&dummy, 0, __ATOMIC_SEQ_CST);
}

static inline void emu_fence_acquire(void)
{
	__asm__ volatile("" ::: "memory");
}

static inline void emu_fence_release(void)
{
	__asm__ volatile("" ::: "memory");
}
#else
static inline void emu_fence_full(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static inline void emu_fence_acquire(void)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
}

static inline void emu_fence_release(void)
{
	__atomic_thread_fence(__ATOMIC_RELEASE);
}
#endif

/* ---- emu_exec.c ---- */
/* Execute one instruction at cpu->rip (may longjmp to cpu->jmp). */
void emu_step(struct emu_cpu *cpu);

/* ---- emu_mmu.c ---- */
/* Linear address of seg:off for an access of `size` bytes (limit/canonical checks; raises #GP/#SS). */
uint64_t emu_linear(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, bool write);
/* Guest memory through segmentation + paging, current CPL. Accesses that cross a page are split. Non-RAM physical
 * addresses become MMIO exits (reads restart, see above). Raise #PF/#GP as the hardware would. */
uint64_t emu_read(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size);
void emu_write(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, uint64_t val);
/* Instruction fetch (CS, execute permission). */
uint8_t emu_fetch8(struct emu_cpu *cpu, uint64_t rip);
/* Host pointer for an aligned atomic RMW of `size` bytes in RAM (write permission checked); raises on fault;
 * LOCKed access to MMIO raises #GP (documented limitation). */
void *emu_atomic_ptr(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size);
/* Same with a linear address and explicit privilege (descriptor tables, TSS, IDT: implicit supervisor). */
uint64_t emu_read_linear(struct emu_cpu *cpu, uint64_t lin, unsigned size, bool supervisor);
void emu_write_linear(struct emu_cpu *cpu, uint64_t lin, unsigned size, uint64_t val, bool supervisor);
void emu_tlb_flush(struct emu_cpu *cpu);
void emu_tlb_flush_page(struct emu_cpu *cpu, uint64_t lin);
/* Added by emu-sys: the TLB set of a linear page (lin >> 12), for inline hit paths outside emu_mmu.c. A hit is
 * tlb[i].lpage == page && (CPL != 3 || (tlb[i].flags & EMU_TLB_USER)); the entry's host is then the page's RAM. */
static inline unsigned emu_tlb_index(uint64_t lpage)
{
	return (unsigned)(lpage ^ (lpage >> 8)) & (EMU_TLB_SIZE - 1);
}
/* Added by emu-sys: host address of guest-physical `gpa` if it is RAM (NULL otherwise); *room = bytes of RAM
 * contiguous from there (room may be NULL). */
uint8_t *emu_gpa_host(const struct emu_vm *vm, uint64_t gpa, uint64_t *room);

/* ---- emu_sys.c, emu_seg.c, emu_event.c, emu_msr.c ----
 * RIP contract (added by emu-sys): emu_exec.c sets cpu->insn_rip to the instruction's first byte before executing
 * it, and cpu->rip to the NEXT instruction's address before calling any function of this section (far CALL pushes
 * cpu->rip as the return address; SYSCALL saves it in RCX; HLT/OUT/WRMSR exits leave it there). On a fault
 * (emu_raise) or a restarting read exit the run loop sets cpu->rip = cpu->insn_rip itself, so a faulting
 * instruction needs no undo of RIP. Functions that transfer control (far JMP/CALL/RET, IRET, INT, SYSCALL, SYSRET)
 * set cpu->rip to the target themselves: emu_exec.c must not overwrite it afterwards.
 * HLT, OUT, WRMSR (of an MSR the VMM owns) and MMIO writes only record the exit (cpu->exit_pending): the run loop
 * leaves after the instruction retires. Calling emu_exit_now() after retiring (as for OUT) is also fine. */
_Noreturn void emu_raise(struct emu_cpu *cpu, int vector, int error);   /* error -1: none */
_Noreturn void emu_exit_now(struct emu_cpu *cpu);                       /* longjmp EMU_JMP_EXIT */
void emu_update_mode(struct emu_cpu *cpu);
/* Port I/O (privilege/IOPL checked by the caller). In: returns the value (may exit and restart). Out: records the
 * exit; the caller retires the instruction and then calls emu_exit_now(). */
uint32_t emu_io_in(struct emu_cpu *cpu, uint16_t port, unsigned size);
void emu_io_out(struct emu_cpu *cpu, uint16_t port, unsigned size, uint32_t val);
/* System instructions, called by emu_exec.c after decoding (operands already fetched). */
void emu_load_seg(struct emu_cpu *cpu, int seg, uint16_t sel);          /* MOV/POP Sreg, LDS... */
void emu_far_jmp(struct emu_cpu *cpu, uint16_t sel, uint64_t off);
void emu_far_call(struct emu_cpu *cpu, uint16_t sel, uint64_t off, unsigned opsize);
void emu_far_ret(struct emu_cpu *cpu, unsigned opsize, uint16_t imm);
void emu_iret(struct emu_cpu *cpu, unsigned opsize);
void emu_int(struct emu_cpu *cpu, uint8_t vector, bool software, uint64_t next_rip); /* INT n / INT3 / INTO */
void emu_syscall(struct emu_cpu *cpu);
void emu_sysret(struct emu_cpu *cpu, unsigned opsize);
void emu_hlt(struct emu_cpu *cpu);                    /* retires, then exits ACCEL_EXIT_HLT */
uint64_t emu_read_cr(struct emu_cpu *cpu, int n);
void emu_write_cr(struct emu_cpu *cpu, int n, uint64_t val);
uint64_t emu_read_dr(struct emu_cpu *cpu, int n);
void emu_write_dr(struct emu_cpu *cpu, int n, uint64_t val);
uint64_t emu_rdmsr(struct emu_cpu *cpu, uint32_t index);   /* may exit (MSR read) and restart */
void emu_wrmsr(struct emu_cpu *cpu, uint32_t index, uint64_t val); /* emu-owned MSRs, else exit after retiring */
void emu_cpuid(struct emu_cpu *cpu);                       /* reads EAX/ECX, writes EAX..EDX from the table */
uint64_t emu_rdtsc(struct emu_cpu *cpu);
void emu_lgdt_lidt(struct emu_cpu *cpu, bool idt, uint64_t base, uint16_t limit);
void emu_ltr(struct emu_cpu *cpu, uint16_t sel);
void emu_lldt(struct emu_cpu *cpu, uint16_t sel);
void emu_invlpg(struct emu_cpu *cpu, uint64_t lin);
/* Stack helpers for the current mode (SS, operand size). */
void emu_push(struct emu_cpu *cpu, uint64_t val, unsigned size);
uint64_t emu_pop(struct emu_cpu *cpu, unsigned size);
/* Stack address size in bytes: 8 in 64-bit mode, else SS.B ? 4 : 2. */
unsigned emu_stack_size(const struct emu_cpu *cpu);
/* Added by emu-sys. */
/* End the run with ACCEL_EXIT_ERROR (message in exit->error.msg); the instruction does not retire. */
_Noreturn __attribute__((format(printf, 2, 3))) void emu_exit_error(struct emu_cpu *cpu, const char *fmt, ...);
/* Deliver exception/interrupt `vector` now (used by the run loop; emu_exec.c uses emu_raise/emu_int). ret_rip is
 * the RIP saved in the frame; error -1 = none; software: INT n/INT3/INTO (gate DPL is checked, EXT clear). */
void emu_deliver(struct emu_cpu *cpu, int vector, int error, uint64_t ret_rip, bool software);
/* SYSENTER (0F 34) and SYSEXIT (0F 35; opsize 8 with REX.W) from the IA32_SYSENTER_* MSRs; they set cpu->rip. */
void emu_sysenter(struct emu_cpu *cpu);
void emu_sysexit(struct emu_cpu *cpu, unsigned opsize);
/* x87/SSE state at power-up (SDM vol. 3 table 9-1), emu_exec_fpu.c. */
void emu_fpu_reset(struct emu_cpu *cpu);
/* Guest TSC of this vCPU now, without RDTSC's CR4.TSD check (accel read_tsc). */
uint64_t emu_tsc_now(const struct emu_cpu *cpu);

/* ---- emu_mmu.c: fast instruction fetch (added for emu_exec.c) ---- */
/* Host pointer to the instruction bytes at CS:rip and in *avail (>= 1) how many are readable there (up to the end
 * of the page and of the CS limit), with the checks emu_fetch8() does; NULL when those bytes are not plain RAM (the
 * caller then uses emu_fetch8). May raise what emu_fetch8 raises. (emu-sys: implemented; emu_fetch8 on code
 * outside RAM ends the run with ACCEL_EXIT_ERROR — no execution from MMIO.) In 64-bit mode emu_step() looks up
 * tlb_x itself first (the hit path of this function, through emu_tlb_index()) and calls it on a miss. */
const uint8_t *emu_fetch_ptr(struct emu_cpu *cpu, uint64_t rip, unsigned *avail);

#endif
