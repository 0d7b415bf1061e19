#!/usr/bin/env bash
# Boots every guest workload under qemu (TCG here, KVM when /dev/kvm is usable) with 1, 2 and 4 CPUs and
# checks both the exit status and what the guest printed. Negative cases: forced exceptions, an injected
# forbidden litmus outcome, a bad option. Budget: about 1 minute on the 2-core dev machine (TCG).
# Exit 0 pass, 77 when qemu is missing, 1 on any failure. Logs: $BUILD/test-logs/guest/.
set -u
cd "$(dirname "$0")/../.."
. tests/guest/lib.sh
guest_preflight

NUMA4=(-object memory-backend-ram,id=m0,size=64M -object memory-backend-ram,id=m1,size=64M
	-numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1)

# ---- topology
check_topology() {
	local n=$1 nodes=$2 mode=$3 i ok=0
	expect_line "^topology: $n cpus up \(madt $n\), $nodes numa nodes, [0-9]+ bytes usable RAM, apic $mode\$" || ok=1
	for ((i = 0; i < n; i++)); do
		expect_line "^topology: cpu $i apic $i node [0-9]+ cpuid_apic $i\$" || ok=1
	done
	expect_line "^topology: mmap 0x0000000000100000-0x[0-9a-f]+ type 1\$" || ok=1
	expect_line "^rackvm-guest: exit 0 \(ok\)" || ok=1
	return $ok
}
check_topology_numa() {
	check_topology 4 2 "$1" || return 1
	expect_line "^topology: cpu 1 apic 1 node 0 " && expect_line "^topology: cpu 2 apic 2 node 1 " &&
		expect_line "^topology: numa node 1 mem 0x0000000004000000-0x0000000008000000\$"
}
for n in 1 2; do
	guest_run topology-smp$n topology $n ""
	verdict "topology smp=$n" 0 check_topology $n 1 xapic
done
guest_run topology-smp4-numa topology 4 "" "${NUMA4[@]}"
verdict "topology smp=4 numa=2" 0 check_topology_numa xapic
GUEST_MACHINE=pc guest_run topology-pc-smp2 topology 2 "apic=xapic"
verdict "topology machine=pc smp=2" 0 check_topology 2 1 xapic
# MADT entries of absent (hot-pluggable) CPUs are disabled and must not be started
check_topology_maxcpus() {
	check_topology 2 1 xapic && expect_line "^acpi: MADT has 4 processor entries, 2 enabled, "
}
guest_run topology-smp2-max4 topology "2,maxcpus=4" ""
verdict "topology smp=2 maxcpus=4" 0 check_topology_maxcpus
# 2 sockets x 3 cores: APIC ids 0 1 2 4 5 6, so index and APIC id differ (IPIs go by APIC id)
SOCK_IDS=(0 1 2 4 5 6)
check_topology_sockets() {
	local i ok=0
	for i in 0 1 2 3 4 5; do
		expect_line "^topology: cpu $i apic ${SOCK_IDS[$i]} node 0 cpuid_apic ${SOCK_IDS[$i]}\$" || ok=1
	done
	expect_line "^topology: 6 cpus up \(madt 6\), " || ok=1
	return $ok
}
guest_run topology-sockets topology "6,sockets=2,cores=3,threads=1" ""
verdict "topology smp=6 sockets=2 cores=3" 0 check_topology_sockets

# ---- litmus
check_litmus() {
	local n=$1 iters=$2 t ok=0 run=0
	for t in SB MP LB 2+2W; do
		if [ "$n" -ge 2 ]; then
			expect_line "^litmus: ${t/+/\\+} iters $iters forbidden 0 relaxed [0-9]+\$" || ok=1
			run=$((run + 1))
		else
			expect_line "^litmus: ${t/+/\\+} skipped \(needs 2 cpus, have 1\)\$" || ok=1
		fi
	done
	if [ "$n" -ge 3 ]; then run=$((run + 1)); expect_line "^litmus: WRC iters $iters forbidden 0 " || ok=1; fi
	if [ "$n" -ge 4 ]; then run=$((run + 1)); expect_line "^litmus: IRIW iters $iters forbidden 0 " || ok=1; fi
	expect_line "^litmus: $run tests run, $((6 - run)) skipped, forbidden 0\$" || ok=1
	return $ok
}
for n in 1 2 4; do
	guest_run litmus-smp$n litmus $n "iters=320"
	verdict "litmus smp=$n" 0 check_litmus $n 320
done
check_litmus_injected() {
	expect_line "^litmus: MP outcome r0=1,r1=0 count [0-9]+ FORBIDDEN\$" &&
		expect_line "^litmus: 4 tests run, 2 skipped, forbidden [1-9]"
}
guest_run litmus-inject litmus 2 "iters=64 inject=MP"
verdict "litmus inject=MP (negative)" 1 check_litmus_injected

# ---- memtest: every available byte above the kernel in 128 MiB, which is at least 120 MiB
check_memtest() {
	local n=$1 bytes
	expect_line "^memtest: tested [0-9]+ bytes \([0-9]+ MiB\) in 1 ranges, 6 patterns, $n cpus, errors 0\$" ||
		return 1
	bytes=$(sed -n 's/^memtest: tested \([0-9]*\) bytes.*/\1/p' "$GUEST_LOG")
	if [ "$bytes" -lt $((120 << 20)) ]; then
		echo "    memtest covered only $bytes bytes"
		return 1
	fi
	[ "$(grep -c '^memtest: pattern .* errors 0 ' "$GUEST_LOG")" -eq 6 ]
}
for n in 1 2 4; do
	guest_run memtest-smp$n memtest $n ""
	verdict "memtest smp=$n" 0 check_memtest $n
done
# one flipped bit in CPU 0's slice is found by CPU 1, reported with its address, and fails the run
check_memtest_corrupt() {
	local base
	base=$(sed -n 's/^memtest: range 0x\([0-9a-f]*\)-.*/\1/p' "$GUEST_LOG" | head -1)
	[ -n "$base" ] || return 1
	expect_line "^memtest: error cpu 1 addr 0x$(printf '%x' $((0x$base + 4096))) expect 0x[0-9a-f]+ got 0x[0-9a-f]+\$" &&
		expect_line "^memtest: pattern address errors 1 " &&
		expect_line "^memtest: tested 8388608 bytes \(8 MiB\) in 1 ranges, 6 patterns, 2 cpus, errors 1\$"
}
guest_run memtest-corrupt memtest 2 "max=8M corrupt=4096"
verdict "memtest corrupt=4096 (negative)" 1 check_memtest_corrupt

# ---- compute: checksum from the host reference, identical for every CPU count
CN=300000 CR=48
CEXP=$("$GUEST_DIR/compute-ref" $CN $CR)
check_compute() {
	local n=$1
	expect_line "^compute: n $CN rounds $CR cpus $n checksum $CEXP expect $CEXP ok ticks [0-9]+\$" &&
		[ "$(grep -c '^compute: cpu [0-9]* items ' "$GUEST_LOG")" -eq "$n" ]
}
for n in 1 2 4; do
	guest_run compute-smp$n compute $n "n=$CN rounds=$CR expect=$CEXP"
	verdict "compute smp=$n" 0 check_compute $n
done
check_compute_default() {
	expect_line "^compute: n 100000 rounds 64 cpus 2 checksum $("$GUEST_DIR/compute-ref") expect [0-9a-fx]+ ok "
}
guest_run compute-default compute 2 ""
verdict "compute defaults smp=2" 0 check_compute_default
check_compute_wrong() {
	expect_line "^compute: n 1000 rounds 4 cpus 2 checksum 0x[0-9a-f]{16} expect 0x0000000000000001 MISMATCH "
}
guest_run compute-wrong compute 2 "n=1000 rounds=4 expect=1"
verdict "compute wrong expect (negative)" 1 check_compute_wrong

# ---- ipi, both APIC modes
IPI_ITERS=200
check_ipi() {
	local n=$1 mode=$2 k ok=0
	expect_line "^ipi: self iters $IPI_ITERS received $IPI_ITERS\$" || ok=1
	for ((k = 1; k < n; k++)); do
		expect_line "^ipi: cpu $k apic $k pings $IPI_ITERS pongs $IPI_ITERS rtt_min [0-9]+ rtt_avg [0-9]+ rtt_max [0-9]+ ticks\$" ||
			ok=1
	done
	local total=$((IPI_ITERS + 2 * IPI_ITERS * (n - 1)))
	expect_line "^ipi: mode $mode cpus $n delivered $total expected $total lost 0\$" || ok=1
	expect_line "^rackvm-guest: ring-0 entries: [0-9]+ syscalls, $total interrupts\$" || ok=1
	return $ok
}
for mode in xapic x2apic; do
	for n in 1 2 4; do
		guest_run ipi-$mode-smp$n ipi $n "apic=$mode iters=$IPI_ITERS"
		if [ "$mode" = x2apic ] && [ "$GUEST_CODE" = 4 ] &&
			grep -q 'apic=x2apic but CPUID.1:ECX.x2APIC is clear' "$GUEST_LOG"; then
			skip_case "ipi x2apic smp=$n" "$($QEMU --version | head -1) ($GUEST_ACCEL_NAME) offers no x2APIC"
			continue
		fi
		verdict "ipi apic=$mode smp=$n" 0 check_ipi $n $mode
	done
done

check_ipi_sockets() {
	local k ok=0
	for k in 1 2 3 4 5; do
		expect_line "^ipi: cpu $k apic ${SOCK_IDS[$k]} pings 50 pongs 50 " || ok=1
	done
	expect_line "^ipi: mode xapic cpus 6 delivered 550 expected 550 lost 0\$" || ok=1
	return $ok
}
guest_run ipi-sockets ipi "6,sockets=2,cores=3,threads=1" "apic=xapic iters=50"
verdict "ipi apic=xapic smp=6 sockets=2" 0 check_ipi_sockets

# ---- exceptions: report with registers, exit code 2
check_gp() {
	expect_line "^rackvm-guest: crash=1 requested on cpu 0\$" &&
		expect_line "^EXCEPTION: vector 13 \(#GP\) error 0x0 cpu 0 ring 3\$" &&
		expect_line "^  RIP=[0-9a-f]{16} CS=0023 RFLAGS=[0-9a-f]{16} RSP=[0-9a-f]{16} SS=001b\$" &&
		expect_line "^  RAX=[0-9a-f]{16} RBX=" && expect_line "^  R13=[0-9a-f]{16} R14=" &&
		expect_line "^rackvm-guest: exit 2 \(exception\)"
}
guest_run crash-gp topology 2 "crash=1"
verdict "crash=1 -> #GP report (negative)" 2 check_gp
check_pf() {
	expect_line "^EXCEPTION: vector 14 \(#PF\) error 0x4 cpu 0 ring 3\$" &&
		expect_line " CR2=0000123456789000\$"
}
guest_run crash-pf compute 1 "crash=pf"
verdict "crash=pf -> #PF report (negative)" 2 check_pf
check_ud_ap() {
	expect_line "^EXCEPTION: vector 6 \(#UD\) error 0x0 cpu 2 ring 3\$" && expect_line "^  RIP=[0-9a-f]{16} CS=0023 "
}
guest_run crash-ud-ap litmus 4 "crash=ud crash_cpu=2"
verdict "crash=ud on cpu 2 -> #UD report (negative)" 2 check_ud_ap
check_usage() {
	expect_line "^rackvm-guest: bad number in option iters\$"
}
guest_run bad-option litmus 1 "iters=12x"
verdict "iters=12x -> usage exit (negative)" 4 check_usage

guest_summary
