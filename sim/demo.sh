#!/usr/bin/env bash
# make demo: one guest across 4 simulated nodes x 2 vCPUs (`rackvm sim`), booting the topology workload and then
# compute, then an unmodified Debian Linux across the same topology (sim/demo-linux.sh; DEMO_LINUX=0 leaves it out);
# each run ends with the sim's per-node summary (vCPUs, DSM faults and bytes, guest result).
# The emu accelerator is used when /dev/kvm is absent (auto). Sizes keep it under 2 minutes on a 2-core machine.
set -u
BUILD=${BUILD:-build}
RACKVM=$BUILD/rackvm
G=$BUILD/guest
NODES=${DEMO_NODES:-4}
VCPUS=${DEMO_VCPUS:-8}
MEM=${DEMO_MEM:-256M}
CN=${DEMO_COMPUTE_N:-400000}
CR=${DEMO_COMPUTE_ROUNDS:-32}

# node logs: errors only (the summaries are printed regardless); RACKVM_LOG=info shows everything
export RACKVM_LOG=${RACKVM_LOG:-err}

banner() { printf '\n==== %s\n' "$*"; }

banner "rackvm sim: $NODES nodes x $((VCPUS / NODES)) vCPUs, $MEM guest RAM — workload topology"
"$RACKVM" sim --nodes "$NODES" --vcpus "$VCPUS" --mem "$MEM" --kernel "$G/topology.elf" --timeout 120 --quiet
rc=$?
if [ $rc -ne 1 ]; then
	echo "demo: topology: guest exit status $rc (1 = success)"
	exit 1
fi

expect=$("$G/compute-ref" "$CN" "$CR")
banner "rackvm sim: $NODES nodes x $((VCPUS / NODES)) vCPUs — workload compute (n=$CN rounds=$CR, expect $expect)"
"$RACKVM" sim --nodes "$NODES" --vcpus "$VCPUS" --mem "$MEM" --kernel "$G/compute.elf" \
	--cmdline "n=$CN rounds=$CR expect=$expect" --timeout 120 --quiet
rc=$?
if [ $rc -ne 1 ]; then
	echo "demo: compute: guest exit status $rc (1 = success)"
	exit 1
fi
banner "demo: both guests exited 0 (sim status 1 = isa-debug-exit code 0)"

# Then Linux across the same topology (sim/demo-linux.sh, about 1.5 minutes here), unless DEMO_LINUX=0 or what it
# needs cannot be had (busybox-static, the Debian kernel): then it says why and the demo ends here.
if [ "${DEMO_LINUX:-1}" = 0 ]; then
	echo "demo: Linux part skipped (DEMO_LINUX=0)"
	exit 0
fi
. "$(dirname "$0")/../tests/guest/linux_kernel.sh"
if [ ! -f "$G/linux/initramfs.cpio.gz" ]; then
	echo "demo: Linux part skipped: $G/linux/initramfs.cpio.gz missing (busybox-static not installed?)"
	exit 0
fi
if ! linux_kernel; then
	echo "demo: Linux part skipped: ${LINUX_SKIP:-no Debian kernel}"
	exit 0
fi
BUILD=$BUILD bash "$(dirname "$0")/demo-linux.sh"
