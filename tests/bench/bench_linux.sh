#!/usr/bin/env bash
# bench_linux (issue 11): time from start to the Linux init's first line ("rackvm-linux: cpus online"), for the
# Debian cloud kernel and the initramfs of sim/guest/linux, in the same run:
#   - rackvm emu, 1 node x 2 vCPUs, against qemu -M pc -accel tcg -smp 2 on the same kernel and initramfs
#     (goal: emu <= 2x qemu TCG);
#   - rackvm emu across 2 and 4 node processes (one vCPU per node) against one node with the same vCPU count (goal:
#     2-node boot <= 1.5x 1-node boot), with the DSM faults and bytes per node of each spanning boot (the sim's
#     per-node summary, which covers the whole run, init included), and the 2-node ratio again with `quiet` (the
#     console of a non-io node is forwarded I/O);
#   - kvm vs qemu-kvm only where /dev/kvm is usable and not kvm_pvm (there Linux's ring 0 runs emulated: a boot
#     takes minutes; it prints the reason instead).
# Ratios only, each against a baseline measured here; the load average is printed. BENCH_LINUX_ROUNDS (default 1).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RACKVM=$BUILD/rackvm
INITRD=$BUILD/guest/linux/initramfs.cpio.gz
ROUNDS=${BENCH_LINUX_ROUNDS:-1}
LOG_DIR=$BUILD/test-logs/bench-linux
mkdir -p "$LOG_DIR"
. tests/guest/linux_kernel.sh
if ! linux_kernel; then
	echo "bench_linux: SKIP: ${LINUX_SKIP:-no kernel}"
	exit 0
fi
if [ ! -f "$INITRD" ]; then
	echo "bench_linux: SKIP: $INITRD missing (busybox-static not installed? make linux-guest)"
	exit 0
fi

# first_line <log> <cmd...>: runs cmd, prints the seconds (3 decimals) until its output's first init line, or "-"
first_line() {
	local log=$1 t0 line t=-
	shift
	t0=$EPOCHREALTIME
	while IFS= read -r line; do
		printf '%s\n' "$line" >>"$log"
		if [ "$t" = - ] && [[ $line == *"rackvm-linux: cpus online"* ]]; then
			t=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
		fi
	done < <(timeout 600 "$@" 2>&1 </dev/null)
	echo "$t"
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'
}

CMD="console=ttyS0 cryptomgr.notests rackvm.memkb=1024"   # the crypto self-tests: 10 s of integer code on emu
echo "bench_linux: kernel $VMLINUZ; load $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
for r in $(seq 1 "$ROUNDS"); do
	: >"$LOG_DIR/qemu.log" ; : >"$LOG_DIR/emu1.log"; : >"$LOG_DIR/sim2.log"; : >"$LOG_DIR/one2.log"
	: >"$LOG_DIR/sim4.log"; : >"$LOG_DIR/one4.log"
	q=$(first_line "$LOG_DIR/qemu.log" qemu-system-x86_64 -M pc -accel tcg -smp 2 -m 512M -nographic -no-reboot \
		-kernel "$VMLINUZ" -initrd "$INITRD" -append "$CMD")
	e=$(first_line "$LOG_DIR/emu1.log" "$RACKVM" run --accel emu --vcpus 2 --mem 512M --kernel "$VMLINUZ" \
		--initrd "$INITRD" --cmdline "$CMD")
	echo "round $r: to the init's first line: qemu TCG ${q} s, rackvm emu ${e} s: emu/qemu $(ratio "$e" "$q") (goal <= 2)"
	s2=$(first_line "$LOG_DIR/sim2.log" "$RACKVM" sim --nodes 2 --vcpus 2 --mem 512M --accel emu \
		--kernel "$VMLINUZ" --initrd "$INITRD" --cmdline "$CMD")
	echo "round $r: 2 nodes x 1 vCPU ${s2} s vs 1 node x 2 vCPUs ${e} s: $(ratio "$s2" "$e") (goal <= 1.5)"
	grep '^sim:   node' "$LOG_DIR/sim2.log" | sed 's/^/    /'
	# the same with `quiet`: the console of a non-io node is forwarded I/O, two round trips per character
	: >"$LOG_DIR/sim2q.log"; : >"$LOG_DIR/emu1q.log"
	eq=$(first_line "$LOG_DIR/emu1q.log" "$RACKVM" run --accel emu --vcpus 2 --mem 512M --kernel "$VMLINUZ" \
		--initrd "$INITRD" --cmdline "$CMD quiet")
	s2q=$(first_line "$LOG_DIR/sim2q.log" "$RACKVM" sim --nodes 2 --vcpus 2 --mem 512M --accel emu \
		--kernel "$VMLINUZ" --initrd "$INITRD" --cmdline "$CMD quiet")
	echo "round $r: with quiet: 2 nodes ${s2q} s vs 1 node ${eq} s: $(ratio "$s2q" "$eq") (goal <= 1.5)"
	s4=$(first_line "$LOG_DIR/sim4.log" "$RACKVM" sim --nodes 4 --vcpus 4 --mem 512M --accel emu \
		--kernel "$VMLINUZ" --initrd "$INITRD" --cmdline "$CMD")
	o4=$(first_line "$LOG_DIR/one4.log" "$RACKVM" run --accel emu --vcpus 4 --mem 512M --kernel "$VMLINUZ" \
		--initrd "$INITRD" --cmdline "$CMD")
	echo "round $r: 4 nodes x 1 vCPU ${s4} s vs 1 node x 4 vCPUs ${o4} s: $(ratio "$s4" "$o4")"
	grep '^sim:   node' "$LOG_DIR/sim4.log" | sed 's/^/    /'
done
if [ -r /sys/module/kvm_pvm/parameters ] || [ -d /sys/module/kvm_pvm ]; then
	echo "kvm: not measured: this host's KVM is kvm_pvm (Linux's ring 0 emulated, minutes per boot; docs/linux-guest.md)"
elif [ -w /dev/kvm ]; then
	k=$(first_line "$LOG_DIR/kvm.log" "$RACKVM" run --accel kvm --vcpus 2 --mem 512M --kernel "$VMLINUZ" \
		--initrd "$INITRD" --cmdline "$CMD")
	qk=$(first_line "$LOG_DIR/qemu-kvm.log" qemu-system-x86_64 -M pc -accel kvm -cpu host,-arch-capabilities -smp 2 -m 512M \
		-nographic -no-reboot -kernel "$VMLINUZ" -initrd "$INITRD" -append "$CMD")
	echo "kvm: rackvm ${k} s, qemu-kvm ${qk} s: $(ratio "$k" "$qk")"
else
	echo "kvm: not measured: no usable /dev/kvm"
fi
echo "bench_linux: load after $(cut -d' ' -f1-3 /proc/loadavg)"
