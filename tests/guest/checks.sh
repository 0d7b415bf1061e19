# What a correct run of each guest workload prints: one set of checks for every host that runs our guests
# (tests/guest/run-qemu.sh under qemu, tests/integration/test_hv_run.sh under rackvm run, test_sim.sh under rackvm
# sim), so that the cross-check compares like with like. Sourced after lib.sh (expect_line, GUEST_LOG) or
# sim_lib.sh. Sizes are the caller's: CN/CR/CEXP (compute), IPI_ITERS (ipi).

# check_topology N [NODES] [MODE]: N CPUs up with their APIC ids, NODES NUMA nodes (default 1), APIC MODE
# (default either).
check_topology() {
	local n=$1 nodes=${2:-1} mode=${3:-"(xapic|x2apic)"} i ok=0
	expect_line "^topology: $n cpus up \(madt $n\), $nodes numa nodes, [0-9]+ bytes usable RAM, apic $mode\$" || ok=1
	for ((i = 0; i < n; i++)); do
		expect_line "^topology: cpu $i apic $i node [0-9]+ cpuid_apic $i\$" || ok=1
	done
	expect_line "^topology: mmap 0x0000000000100000-0x[0-9a-f]+ type 1\$" || ok=1
	expect_line "^rackvm-guest: exit 0 \(ok\)" || ok=1
	return $ok
}

# check_litmus N ITERS: every test N CPUs can run, ITERS instances each, no forbidden outcome.
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
# inject=MP on 2 CPUs: the planted forbidden outcome is seen and fails the run.
check_litmus_injected() {
	expect_line "^litmus: MP outcome r0=1,r1=0 count [0-9]+ FORBIDDEN\$" &&
		expect_line "^litmus: 4 tests run, 2 skipped, forbidden [1-9]"
}

# check_memtest N =BYTES|>=BYTES: 6 patterns, no error, exactly BYTES (a max= run) or at least BYTES tested.
check_memtest() {
	local n=$1 want=$2 bytes
	expect_line "^memtest: tested [0-9]+ bytes \([0-9]+ MiB\) in 1 ranges, 6 patterns, $n cpus, errors 0\$" ||
		return 1
	bytes=$(sed -n 's/^memtest: tested \([0-9]*\) bytes.*/\1/p' "$GUEST_LOG")
	case $want in
	">="*) [ "$bytes" -ge "${want#>=}" ] || { echo "    memtest covered $bytes bytes, want at least ${want#>=}"; return 1; } ;;
	*) [ "$bytes" -eq "${want#=}" ] || { echo "    memtest covered $bytes bytes, want ${want#=}"; return 1; } ;;
	esac
	[ "$(grep -c '^memtest: pattern .* errors 0 ' "$GUEST_LOG")" -eq 6 ]
}
# max=8M corrupt=4096 on 2 CPUs: one flipped bit in CPU 0's slice is found by CPU 1, with its address.
check_memtest_corrupt() {
	local base
	base=$(sed -n 's/^memtest: range 0x\([0-9a-f]*\)-.*/\1/p' "$GUEST_LOG" | head -1)
	[ -n "$base" ] || return 1
	expect_line "^memtest: error cpu 1 addr 0x$(printf '%x' $((0x$base + 4096))) expect 0x[0-9a-f]+ got 0x[0-9a-f]+\$" &&
		expect_line "^memtest: pattern address errors 1 " &&
		expect_line "^memtest: tested 8388608 bytes \(8 MiB\) in 1 ranges, 6 patterns, 2 cpus, errors 1\$"
}

# check_compute N: the host reference's checksum (CEXP for n=CN rounds=CR), every CPU did its share.
check_compute() {
	local n=$1
	expect_line "^compute: n $CN rounds $CR cpus $n checksum $CEXP expect $CEXP ok ticks [0-9]+\$" &&
		[ "$(grep -c '^compute: cpu [0-9]* items ' "$GUEST_LOG")" -eq "$n" ]
}
# n=1000 rounds=4 expect=1 on 2 CPUs: a wrong expectation fails the run.
check_compute_wrong() {
	expect_line "^compute: n 1000 rounds 4 cpus 2 checksum 0x[0-9a-f]{16} expect 0x0000000000000001 MISMATCH "
}

# check_ipi N MODE (a regex, e.g. x?2?apic): IPI_ITERS self-IPIs and ping-pongs with every other CPU, all delivered, none lost.
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

# Guest exceptions are reported with registers and exit code 2; bad options exit 4.
check_gp() {
	expect_line "^rackvm-guest: crash=1 requested on cpu 0\$" &&
		expect_line "^EXCEPTION: vector 13 \(#GP\) error 0x0 cpu 0 ring 3\$" &&
		expect_line "^  RIP=[0-9a-f]{16} CS=0023 RFLAGS=[0-9a-f]{16} RSP=[0-9a-f]{16} SS=001b\$" &&
		expect_line "^  RAX=[0-9a-f]{16} RBX=" && expect_line "^  R13=[0-9a-f]{16} R14=" &&
		expect_line "^rackvm-guest: exit 2 \(exception\)"
}
check_pf() {
	expect_line "^EXCEPTION: vector 14 \(#PF\) error 0x4 cpu 0 ring 3\$" && expect_line " CR2=0000123456789000\$"
}
check_ud_ap() {
	expect_line "^EXCEPTION: vector 6 \(#UD\) error 0x0 cpu 2 ring 3\$" && expect_line "^  RIP=[0-9a-f]{16} CS=0023 "
}
check_usage() {
	expect_line "^rackvm-guest: bad number in option iters\$"
}
