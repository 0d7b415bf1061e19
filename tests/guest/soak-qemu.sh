#!/usr/bin/env bash
# Longer guest runs for make soak: more CPUs, more memory, more iterations. A few minutes under TCG.
set -u
cd "$(dirname "$0")/../.."
GUEST_TIMEOUT=${GUEST_TIMEOUT:-900}
. tests/guest/lib.sh
guest_preflight

NUMA8=()
for i in 0 1 2 3; do
	NUMA8+=(-object "memory-backend-ram,id=m$i,size=128M"
		-numa "node,nodeid=$i,cpus=$((2 * i))-$((2 * i + 1)),memdev=m$i")
done
check_topo8() {
	expect_line "^topology: 8 cpus up \(madt 8\), 4 numa nodes, " &&
		expect_line "^topology: cpu 7 apic 7 node 3 cpuid_apic 7\$"
}
GUEST_MEM=512M guest_run soak-topology-smp8 topology 8 "" "${NUMA8[@]}"
verdict "soak topology smp=8 numa=4" 0 check_topo8

check_litmus() {
	expect_line "^litmus: $1 tests run, $((6 - $1)) skipped, forbidden 0\$"
}
guest_run soak-litmus-smp2 litmus 2 "iters=100000"
verdict "soak litmus smp=2 iters=100000" 0 check_litmus 4
grep -E '^litmus: [A-Z0-9+]+ iters ' "$GUEST_LOG" | sed 's/^/    /'
guest_run soak-litmus-smp4 litmus 4 "iters=20000"
verdict "soak litmus smp=4 iters=20000" 0 check_litmus 6
grep -E '^litmus: [A-Z0-9+]+ iters ' "$GUEST_LOG" | sed 's/^/    /'

check_memtest() {
	expect_line "^memtest: tested [0-9]+ bytes \(([5-9][0-9][0-9]|1[0-9]{3}) MiB\) in 1 ranges, 6 patterns, 4 cpus, errors 0\$"
}
GUEST_MEM=1G guest_run soak-memtest-1g memtest 4 ""
verdict "soak memtest 1 GiB smp=4" 0 check_memtest

CEXP=$("$GUEST_DIR/compute-ref" 5000000 64)
check_compute() {
	expect_line "^compute: n 5000000 rounds 64 cpus 4 checksum $CEXP expect $CEXP ok "
}
guest_run soak-compute compute 4 "n=5000000 rounds=64 expect=$CEXP"
verdict "soak compute n=5M smp=4" 0 check_compute

check_ipi() {
	expect_line "^ipi: mode $1 cpus 4 delivered 35000 expected 35000 lost 0\$"
}
for mode in xapic x2apic; do
	guest_run soak-ipi-$mode ipi 4 "apic=$mode iters=5000"
	if [ "$mode" = x2apic ] && [ "$GUEST_CODE" = 4 ]; then
		skip_case "soak ipi x2apic" "no x2APIC offered by $QEMU ($GUEST_ACCEL_NAME)"
		continue
	fi
	verdict "soak ipi apic=$mode iters=5000" 0 check_ipi $mode
done
guest_summary
