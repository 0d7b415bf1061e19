#!/usr/bin/env bash
# Static checks of the guest images, for the nested-KVM hosts rackvm targets:
#  - no instruction that fails in emulated ring 0 there (cmpxchg16b, movbe, invpcid, xgetbv, clwb, clac,
#    int3, rdpru), no xsave family, no SSE/AVX register, and no "int $n" except the ring-3 "int $0x80"
#    in the syscall stub (ulib.c); no rep string instructions either (emulated iteration by iteration;
#    the SDK is built with -mstringop-strategy=loop). The real-/protected-mode boot code (.text.boot) is
#    not 64-bit code and is not disassembled.
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
bad_re='\s(cmpxchg16b|movbe|invpcid|xgetbv|xsetbv|clwb|clac|stac|int3|rdpru|xsave[a-z]*|xrstor[a-z]*)\b|%[xyz]mm[0-9]|\srep[a-z]* +(movs|stos|cmps|scas|lods)'
for o in "${objs[@]}"; do
	hits=$(objdump -d -j .text "$o" 2>/dev/null | grep -E "$bad_re")
	ints=$(objdump -d -j .text "$o" 2>/dev/null | grep -E '\sint\s+\$' | grep -v 'int\s\+\$0x80')
	if [ -n "$hits$ints" ]; then
		echo "insn-scan: forbidden instructions in $o:"
		printf '%s\n%s\n' "$hits" "$ints" | sed '/^$/d; s/^/    /'
		fail=1
	fi
	if objdump -d -j .text "$o" 2>/dev/null | grep -qE '\sint\s+\$0x80' && [ "$(basename "$o")" != ulib.c.o ]; then
		echo "insn-scan: int \$0x80 outside the ring-3 syscall stub in $o"
		fail=1
	fi
done
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
