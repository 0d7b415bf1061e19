#!/usr/bin/env bash
# Static checks of the guest images, for the nested-KVM hosts rackvm targets:
#  - no instruction that fails in emulated ring 0 there (cmpxchg16b, movbe, invpcid, xgetbv, clwb, clac,
#    rdpru), no xsave family, no SSE/AVX register; no rep string instructions either (emulated iteration by
#    iteration; the SDK is built with -mstringop-strategy=loop);
#  - nothing kvm_pvm mishandles on the way between rings: "int $n" (arrives as #UD from ring 3), SYSCALL (reaches
#    LSTAR but stays at CPL 3), SYSRET (#GP), a 32-bit IRET (emulation failure); INT3 only in the ring-3 system
#    call stub (ulib.c), which is how the SDK enters ring 0;
#    every object in $BUILD/guest/obj is checked, the devices test guest (hv-devices.o) included. The real-/
#    protected-mode boot code (.text.boot) is not 64-bit code and is not disassembled.
#  - each image is an ELF32 i386 file with a valid multiboot v1 header in its first 8 KiB.
# Exit 0 pass, 1 fail.
set -u
BUILD=${BUILD:-build}
G=$BUILD/guest
fail=0
if ! command -v objdump >/dev/null; then
	echo "SKIP: objdump (binutils) not installed"
	exit 77
fi
shopt -s nullglob
objs=("$G"/obj/*.o)
if [ ${#objs[@]} -eq 0 ]; then
	echo "insn-scan: no objects in $G/obj (run make BUILD=$BUILD first)"
	exit 1
fi
bad_re='\s(cmpxchg16b|movbe|invpcid|xgetbv|xsetbv|clwb|clac|stac|rdpru|xsave[a-z]*|xrstor[a-z]*)\b|%[xyz]mm[0-9]|\srep[a-z]* +(movs|stos|cmps|scas|lods)'
# between rings (objdump spells them "int $0x..", "syscall", "sysret[lq]", "sysexit", "iret"/"iretl"/"iretw")
ring_re='\s(int\s+\$|syscall\b|sysret|sysexit|iret[lw]?\s*$)'
# The scan's own check: each instruction kvm_pvm mishandles between rings is caught, IRETQ is not.
selftest=$(mktemp -d)
printf '.text\n int $0x80\n syscall\n sysretq\n iretl\n iretw\n sysexitl\n' >"$selftest/bad.S"
printf '.text\n iretq\n int3\n' >"$selftest/ok.S"
if as --64 -o "$selftest/bad.o" "$selftest/bad.S" && as --64 -o "$selftest/ok.o" "$selftest/ok.S"; then
	n_bad=$(objdump -d -j .text "$selftest/bad.o" | grep -cE "$ring_re")
	n_ok=$(objdump -d -j .text "$selftest/ok.o" | grep -cE "$ring_re")
	if [ "$n_bad" != 6 ] || [ "$n_ok" != 0 ]; then
		echo "insn-scan: self-test: the ring-crossing pattern caught $n_bad of 6 bad and $n_ok of 0 good instructions"
		fail=1
	fi
else
	echo "insn-scan: self-test: cannot assemble (as --64)"
	fail=1
fi
rm -rf "$selftest"
for o in "${objs[@]}"; do
	dis=$(objdump -d -j .text "$o" 2>/dev/null)
	hits=$(grep -E "$bad_re" <<<"$dis")
	ring=$(grep -E "$ring_re" <<<"$dis")
	if [ -n "$hits$ring" ]; then
		echo "insn-scan: forbidden instructions in $o:"
		printf '%s\n%s\n' "$hits" "$ring" | sed '/^$/d; s/^/    /'
		fail=1
	fi
	if grep -qE '\sint3\b' <<<"$dis" && [ "$(basename "$o")" != ulib.c.o ]; then
		echo "insn-scan: int3 outside the ring-3 system call stub (ulib.c) in $o"
		fail=1
	fi
done
# qemu -accel kvm with "-cpu host" aborts on kvm_pvm (MSR 0x10a): every script must drop arch-capabilities.
cpu_host=$(grep -rnE -- '-cpu host([^,]|$)' tests sim 2>/dev/null | grep -v '^tests/guest/insn-scan.sh:')
if [ -n "$cpu_host" ]; then
	echo "insn-scan: '-cpu host' without ',-arch-capabilities' (qemu aborts on kvm_pvm hosts):"
	sed 's/^/    /' <<<"$cpu_host"
	fail=1
fi
for elf in "$G"/*.elf; do
	# ELF magic, EI_CLASS 1 (32-bit), EI_DATA 1 (LSB); e_type 2 (EXEC), e_machine 3 (EM_386)
	hdr=$(od -An -v -tu1 -N20 "$elf" | tr -s ' \n' ' ')
	read -r -a b <<<"$hdr"
	if [ "${b[0]:-}" != 127 ] || [ "${b[1]:-}" != 69 ] || [ "${b[4]:-}" != 1 ] || [ "${b[5]:-}" != 1 ] ||
		[ "${b[16]:-}" != 2 ] || [ "${b[18]:-}" != 3 ]; then
		echo "insn-scan: $elf is not an ELF32 i386 executable (header bytes: $hdr)"
		fail=1
	fi
	# multiboot v1: magic 0x1BADB002, flags, checksum summing to 0, 4-byte aligned, in the first 8192 bytes
	if ! od -An -v -tu4 -w4 -N8192 "$elf" | awk '
		{ w[NR] = $1 }
		END { for (i = 1; i + 2 <= NR; i++) if (w[i] == 464367618 && (w[i] + w[i+1] + w[i+2]) % 4294967296 == 0) exit 0; exit 1 }'; then
		echo "insn-scan: $elf has no valid multiboot v1 header in its first 8 KiB"
		fail=1
	fi
done
[ $fail -eq 0 ] && echo "insn-scan: ${#objs[@]} objects and $(ls "$G"/*.elf | wc -l) images clean"
exit $fail
