#!/usr/bin/env bash
# make demo-linux: an unmodified Debian kernel with the busybox initramfs of sim/guest/linux booted as one machine
# across 4 simulated nodes x 2 vCPUs (`rackvm sim`, emu unless DEMO_ACCEL says other), ending with Linux's own view
# of the machine (CPUs, NUMA nodes with their CPUs and memory, the init's checks) and the sim's per-node summary
# (DSM faults and bytes per node). `make demo` runs it after the SDK guests; about 1.5 minutes on this 2-core
# machine with `quiet` (the console of non-io nodes is forwarded I/O).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RACKVM=$BUILD/rackvm
INITRD=$BUILD/guest/linux/initramfs.cpio.gz
NODES=${DEMO_NODES:-4}
VCPUS=${DEMO_VCPUS:-8}
MEM=${DEMO_MEM:-1G}
ACCEL=${DEMO_ACCEL:-emu}
export RACKVM_LOG=${RACKVM_LOG:-err}

. tests/guest/linux_kernel.sh
linux_kernel || { echo "demo-linux: no kernel: ${LINUX_SKIP:-see above}"; exit 1; }
[ -f "$INITRD" ] || { echo "demo-linux: $INITRD missing (scripts/deps.sh installs busybox-static; make linux-guest)"; exit 1; }
printf '\n==== rackvm sim: %s nodes x %s vCPUs, %s guest RAM, %s — Linux %s\n' "$NODES" "$((VCPUS / NODES))" "$MEM" \
	"$ACCEL" "$(basename "$VMLINUZ")"
log=$BUILD/test-logs/demo-linux.log
mkdir -p "$(dirname "$log")"
"$RACKVM" sim --nodes "$NODES" --vcpus "$VCPUS" --mem "$MEM" --accel "$ACCEL" --kernel "$VMLINUZ" \
	--initrd "$INITRD" --cmdline "console=ttyS0 quiet cryptomgr.notests rackvm.cpus=$VCPUS rackvm.nodes=$NODES" \
	--timeout 1200 2>&1 | tee "$log" | grep -E '^rackvm-linux:|^sim:'
rc=${PIPESTATUS[0]}
printf '\n==== demo-linux: %s (sim exit status %s; full console in %s)\n' \
	"$([ "$rc" = 0 ] && echo "Linux passed every check and powered off" || echo FAILED)" "$rc" "$log"
[ "$rc" = 0 ]
