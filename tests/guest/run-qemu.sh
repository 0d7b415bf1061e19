#!/usr/bin/env bash
# Boots every guest workload under qemu (TCG here, KVM when /dev/kvm is usable) with 1, 2 and 4 CPUs and
# checks both the exit status and what the guest printed. Negative cases: forced exceptions, an injected
# forbidden litmus outcome, a bad option. Budget: about 1 minute on the 2-core dev machine (TCG).
# Exit 0 pass, 77 when qemu is missing, 1 on any failure. Logs: $BUILD/test-logs/guest/.
set -u
cd "$(dirname "$0")/../.."
. tests/guest/lib.sh
. tests/guest/checks.sh
guest_preflight

NUMA4=(-object memory-backend-ram,id=m0,size=64M -object memory-backend-ram,id=m1,size=64M
	-numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1)

# ---- topology
check_topology_numa() {
	check_topology 4 2 "$1" || return 1
	expect_line "^topology: cpu 1 apic 1 node 0 " && expect_line "^topology: cpu 2 apic 2 node 1 " &&
		expect_line "^topology: numa node 1 mem 0x0000000004000000-0x0000000008000000\$"
}
for n in 1 2; do
	guest_run topology-smp$n topology $n ""
	verdict "topology smp=$n" 0 check_topology $n 1 "$GUEST_DEFAULT_APIC"
done
guest_run topology-smp4-numa topology 4 "" "${NUMA4[@]}"
verdict "topology smp=4 numa=2" 0 check_topology_numa "$GUEST_DEFAULT_APIC"
GUEST_MACHINE=pc guest_run topology-pc-smp2 topology 2 "apic=xapic"
verdict "topology machine=pc smp=2" 0 check_topology 2 1 xapic
# MADT entries of absent (hot-pluggable) CPUs are disabled and must not be started
check_topology_maxcpus() {
	check_topology 2 1 "$GUEST_DEFAULT_APIC" && expect_line "^acpi: MADT has 4 processor entries, 2 enabled, "
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
for n in 1 2 4; do
	guest_run litmus-smp$n litmus $n "iters=320"
	verdict "litmus smp=$n" 0 check_litmus $n 320
done
guest_run litmus-inject litmus 2 "iters=64 inject=MP"
verdict "litmus inject=MP (negative)" 1 check_litmus_injected

# ---- memtest: every available byte above the kernel in 128 MiB, which is at least 120 MiB
for n in 1 2 4; do
	guest_run memtest-smp$n memtest $n ""
	verdict "memtest smp=$n" 0 check_memtest $n ">=$((120 << 20))"
done
# one flipped bit in CPU 0's slice is found by CPU 1, reported with its address, and fails the run
guest_run memtest-corrupt memtest 2 "max=8M corrupt=4096"
verdict "memtest corrupt=4096 (negative)" 1 check_memtest_corrupt

# ---- compute: checksum from the host reference, identical for every CPU count
CN=300000 CR=48
CEXP=$("$GUEST_DIR/compute-ref" $CN $CR)
for n in 1 2 4; do
	guest_run compute-smp$n compute $n "n=$CN rounds=$CR expect=$CEXP"
	verdict "compute smp=$n" 0 check_compute $n
done
check_compute_default() {
	expect_line "^compute: n 100000 rounds 64 cpus 2 checksum $("$GUEST_DIR/compute-ref") expect [0-9a-fx]+ ok "
}
guest_run compute-default compute 2 ""
verdict "compute defaults smp=2" 0 check_compute_default
guest_run compute-wrong compute 2 "n=1000 rounds=4 expect=1"
verdict "compute wrong expect (negative)" 1 check_compute_wrong

# ---- ipi, both APIC modes
IPI_ITERS=200
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
guest_run crash-gp topology 2 "crash=1"
verdict "crash=1 -> #GP report (negative)" 2 check_gp
guest_run crash-pf compute 1 "crash=pf"
verdict "crash=pf -> #PF report (negative)" 2 check_pf
guest_run crash-ud-ap litmus 4 "crash=ud crash_cpu=2"
verdict "crash=ud on cpu 2 -> #UD report (negative)" 2 check_ud_ap
guest_run bad-option litmus 1 "iters=12x"
verdict "iters=12x -> usage exit (negative)" 4 check_usage

guest_summary
