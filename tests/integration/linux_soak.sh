#!/usr/bin/env bash
# make soak, Linux part (issue 11): the Debian kernel + sim/guest/linux initramfs on emu
#   - across 4 node processes (one vCPU each),
#   - across 2 nodes over the fabric with 200 us one-way latency and 1 % loss,
#   - booted LINUX_SOAK_REPEAT times (default 3) on one node with 2 vCPUs,
# each judged by the init's verdict (every check ok, "rackvm-linux: PASS", exit 0). SKIP as test_linux.sh does.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RACKVM=$BUILD/rackvm
INITRD=$BUILD/guest/linux/initramfs.cpio.gz
LOG_DIR=$BUILD/test-logs/linux-soak
REPEAT=${LINUX_SOAK_REPEAT:-3}
mkdir -p "$LOG_DIR"
[ -x /bin/busybox ] || { echo "SKIP: busybox-static is not installed (scripts/deps.sh)"; exit 77; }
[ -f "$INITRD" ] || { echo "linux_soak: $INITRD missing (make BUILD=$BUILD linux-guest)"; exit 1; }
. tests/guest/linux_kernel.sh
linux_kernel
case $? in 0) ;; 77) echo "SKIP: $LINUX_SKIP"; exit 77 ;; *) exit 1 ;; esac
pass=0
fail=0
boot() {   # boot <name> <cpus> <nodes> <rackvm args...>
	local name=$1 cpus=$2 nodes=$3 log="$LOG_DIR/$1.log" rc t0=$SECONDS
	shift 3
	timeout 1500 "$RACKVM" "$@" --kernel "$VMLINUZ" --initrd "$INITRD" \
		--cmdline "console=ttyS0 cryptomgr.notests rackvm.cpus=$cpus rackvm.nodes=$nodes" >"$log" 2>&1 </dev/null
	rc=$?
	if [ "$rc" = 0 ] && grep -q '^rackvm-linux: PASS' "$log" && ! grep -q '^rackvm-linux: check .* FAIL' "$log"; then
		echo "  ok   $name ($((SECONDS - t0)) s)"
		pass=$((pass + 1))
	else
		echo "  FAIL $name: exit $rc (log $log)"
		grep '^rackvm-linux:' "$log" | sed 's/^/    /'
		fail=$((fail + 1))
	fi
	grep '^sim:   node' "$log" | sed 's/^/    /'
}
boot four-nodes 4 4 sim --nodes 4 --vcpus 4 --mem 512M --accel emu --timeout 1400
boot fabric-lossy 2 2 sim --nodes 2 --vcpus 2 --mem 512M --accel emu --transport fabric --latency 200 --loss 0.01 \
	--seed 7 --timeout 1400
for i in $(seq 1 "$REPEAT"); do
	boot "repeat-$i" 2 1 run --accel emu --vcpus 2 --mem 512M
done
echo "linux_soak: $pass passed, $fail failed"
[ "$fail" = 0 ]
