#!/usr/bin/env bash
# rackvm run end to end (issue 4): every guest SDK workload with 1, 2 and 4 vCPUs on the emu accelerator (and on
# kvm when /dev/kvm is usable, else one SKIP line), with the assertions of tests/guest/run-qemu.sh; bad inputs
# (one-line error, non-zero exit, no core dump); misbehaving guests (tiny multiboot images assembled here:
# triple fault, unknown port, unknown MMIO, unknown MSR, IPI to a missing APIC id) reported with registers and a
# clean exit; SIGINT/SIGTERM.
#
# The emu is an interpreter, so workloads run with smaller sizes than under qemu (memtest max=8M, compute n=100000
# rounds=16, litmus iters=100, ipi iters=50). Measured: 45-60 s idle, 100-155 s under load on the 2-core dev machine
# (ASan: 3-6 min).
# Exit 0 pass, 1 on any failure. Logs: $BUILD/test-logs/hv-run/.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RACKVM=$BUILD/rackvm
GUEST_DIR=$BUILD/guest
LOG_DIR=$BUILD/test-logs/hv-run
HV_TIMEOUT=${HV_TIMEOUT:-120}
mkdir -p "$LOG_DIR"

. tests/guest/verdict.sh
t_start=$SECONDS

if [ ! -x "$RACKVM" ]; then
	echo "test_hv_run: $RACKVM missing (make BUILD=$BUILD)"
	exit 1
fi
for w in topology litmus memtest compute ipi; do
	if [ ! -f "$GUEST_DIR/$w.elf" ]; then
		echo "test_hv_run: $GUEST_DIR/$w.elf missing (make BUILD=$BUILD guest)"
		exit 1
	fi
done

# hv_run <log-name> <accel> <kernel> <vcpus> <cmdline> [extra rackvm args]
# Sets GUEST_LOG (console, CR removed), GUEST_ERR (stderr), RC (exit status) and GUEST_CODE: the guest's
# isa-debug-exit code ((RC - 1) / 2 for odd RC), "timeout", "signal" (killed: a crash) or "noexit".
hv_run() {
	local name=$1 accel=$2 kernel=$3 vcpus=$4 append=$5
	shift 5
	GUEST_LOG=$LOG_DIR/$name.log
	GUEST_ERR=$LOG_DIR/$name.err
	local t0=${EPOCHREALTIME/./}
	timeout -k 5 "$HV_TIMEOUT" "$RACKVM" run --accel "$accel" --kernel "$kernel" --vcpus "$vcpus" --mem 128M \
		--cmdline "$append" "$@" </dev/null >"$GUEST_LOG.raw" 2>"$GUEST_ERR"
	RC=$?
	tr -d '\r' <"$GUEST_LOG.raw" >"$GUEST_LOG"
	rm -f "$GUEST_LOG.raw"
	local us=$((${EPOCHREALTIME/./} - t0))
	GUEST_SECS=$(printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000)))
	if [ $RC -eq 124 ] || [ $RC -eq 137 ]; then
		GUEST_CODE=timeout
	elif [ $RC -gt 128 ]; then
		GUEST_CODE=signal
	elif [ $((RC % 2)) -eq 1 ]; then
		GUEST_CODE=$(((RC - 1) / 2))
	else
		GUEST_CODE=noexit
	fi
}

# the workload checks shared with run-qemu.sh and test_sim.sh
. tests/guest/checks.sh

# ---- the workloads (run-qemu.sh's assertions, sizes for an interpreter) --------------------------------------

check_topology_4g() {
	check_topology 2 &&
		expect_line "^topology: mmap 0x0000000000100000-0x00000000c0000000 type 1\$" &&
		expect_line "^topology: mmap 0x0000000100000000-0x0000000140000000 type 1\$"
}

LIT_ITERS=100
MT_MAX=8M
CN=100000 CR=16
CEXP=$("$GUEST_DIR/compute-ref" $CN $CR)
IPI_ITERS=50

run_workloads() {
	local accel=$1 n mode
	for n in 1 2 4; do
		hv_run "$accel-topology-smp$n" "$accel" "$GUEST_DIR/topology.elf" $n ""
		verdict "$accel topology vcpus=$n" 0 check_topology $n
	done
	# more than 3 GiB: RAM past 0xc0000000 is shown from 4 GiB on
	hv_run "$accel-topology-4g" "$accel" "$GUEST_DIR/topology.elf" 2 "" --mem 4G
	verdict "$accel topology vcpus=2 mem=4G (hole)" 0 check_topology_4g
	for n in 1 2 4; do
		hv_run "$accel-litmus-smp$n" "$accel" "$GUEST_DIR/litmus.elf" $n "iters=$LIT_ITERS"
		verdict "$accel litmus vcpus=$n" 0 check_litmus $n $LIT_ITERS
	done
	hv_run "$accel-litmus-inject" "$accel" "$GUEST_DIR/litmus.elf" 2 "iters=32 inject=MP"
	verdict "$accel litmus inject=MP (negative)" 1 check_litmus_injected
	for n in 1 2 4; do
		hv_run "$accel-memtest-smp$n" "$accel" "$GUEST_DIR/memtest.elf" $n "max=$MT_MAX"
		verdict "$accel memtest vcpus=$n max=$MT_MAX" 0 check_memtest $n =8388608
	done
	hv_run "$accel-memtest-corrupt" "$accel" "$GUEST_DIR/memtest.elf" 2 "max=8M corrupt=4096"
	verdict "$accel memtest corrupt=4096 (negative)" 1 check_memtest_corrupt
	for n in 1 2 4; do
		hv_run "$accel-compute-smp$n" "$accel" "$GUEST_DIR/compute.elf" $n "n=$CN rounds=$CR expect=$CEXP"
		verdict "$accel compute vcpus=$n" 0 check_compute $n
	done
	hv_run "$accel-compute-wrong" "$accel" "$GUEST_DIR/compute.elf" 2 "n=1000 rounds=4 expect=1"
	verdict "$accel compute wrong expect (negative)" 1 check_compute_wrong
	for mode in xapic x2apic; do
		for n in 1 2 4; do
			hv_run "$accel-ipi-$mode-smp$n" "$accel" "$GUEST_DIR/ipi.elf" $n "apic=$mode iters=$IPI_ITERS"
			verdict "$accel ipi apic=$mode vcpus=$n" 0 check_ipi $n $mode
		done
	done
	hv_run "$accel-crash-gp" "$accel" "$GUEST_DIR/topology.elf" 2 "crash=1"
	verdict "$accel crash=1 -> #GP report (negative)" 2 check_gp
	hv_run "$accel-crash-pf" "$accel" "$GUEST_DIR/compute.elf" 1 "crash=pf n=1000 rounds=1"
	verdict "$accel crash=pf -> #PF report (negative)" 2 check_pf
	hv_run "$accel-crash-ud-ap" "$accel" "$GUEST_DIR/litmus.elf" 4 "crash=ud crash_cpu=2 iters=10"
	verdict "$accel crash=ud on vcpu 2 (negative)" 2 check_ud_ap
	hv_run "$accel-bad-option" "$accel" "$GUEST_DIR/litmus.elf" 1 "iters=12x"
	verdict "$accel iters=12x -> usage exit (negative)" 4 check_usage
}

run_workloads emu
if [ -w /dev/kvm ]; then
	run_workloads kvm
else
	skip_case "kvm workloads" "/dev/kvm: $( [ -e /dev/kvm ] && echo 'not writable' || echo 'No such file or directory')"
fi

# ---- bad inputs: one line on stderr, non-zero exit, no crash --------------------------------------------------
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# bad_input <case-name> <stderr-regex> <rackvm run args...>
bad_input() {
	local name=$1 re=$2
	shift 2
	GUEST_LOG=$LOG_DIR/bad-$name.log
	GUEST_ERR=$LOG_DIR/bad-$name.err
	GUEST_SECS=0
	timeout -k 5 30 "$RACKVM" run "$@" </dev/null >"$GUEST_LOG" 2>"$GUEST_ERR"
	RC=$?
	local ok=1 lines
	lines=$(grep -vc '^\[ *[0-9.]*\] rackvm info: ' "$GUEST_ERR")
	if [ $RC -eq 0 ] || [ $RC -ge 124 ]; then echo "    exit status $RC, want an error status"; ok=0; fi
	if [ "$lines" -ne 1 ]; then echo "    $lines lines on stderr, want 1"; ok=0; fi
	grep -Eq -- "$re" "$GUEST_ERR" || { echo "    stderr does not match /$re/"; ok=0; }
	if [ $ok -eq 1 ]; then pass "bad input: $name"; else fail "bad input: $name"; fi
}

K=$GUEST_DIR/topology.elf
bad_input missing-kernel '^rackvm: --kernel /nonexistent/k\.elf: No such file or directory$' --kernel /nonexistent/k.elf
bad_input missing-initrd '^rackvm: --initrd /nonexistent/i: No such file or directory$' --kernel "$K" --initrd /nonexistent/i
bad_input missing-module '^rackvm: --module /nonexistent/m: No such file or directory$' --kernel "$K" --module "/nonexistent/m arg"
printf 'this is not a kernel\n' >"$T/text"
bad_input not-bootable '^rackvm: .+' --accel emu --kernel "$T/text"
head -c 300 "$K" >"$T/truncated.elf"
bad_input corrupt-image '^rackvm: .+' --accel emu --kernel "$T/truncated.elf"
bad_input mem-too-small '^rackvm: --mem 1024K is too small' --kernel "$K" --mem 1M
# Linux images that cannot boot: a truncated bzImage, an initrd larger than guest RAM, a corrupt or empty initrd, a
# command line over the kernel's cmdline_size — each one line and exit 1, nothing run. The Debian kernel is the one test_linux_image.sh
# fetched into $BUILD/cache (it runs before this script in make check); without it, one SKIP line.
VMLINUZ=$(ls "$BUILD"/cache/linux-image/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
if [ -n "$VMLINUZ" ]; then
	head -c 300000 "$VMLINUZ" >"$T/truncated.bz"
	bad_input linux-truncated '^rackvm: bzImage .*truncated.bz: truncated \(300000 bytes; ' --accel emu \
		--kernel "$T/truncated.bz"
	truncate -s 300M "$T/big.initrd"
	bad_input initrd-larger-than-ram '^rackvm: initrd .*big.initrd \(314572800 bytes\) is larger than guest RAM \(128 MiB\)$' \
		--accel emu --kernel "$VMLINUZ" --initrd "$T/big.initrd" --mem 128M
	rm -f "$T/big.initrd"
	head -c 4096 /dev/urandom | tr '\0' x >"$T/junk.initrd"
	bad_input initrd-corrupt '^rackvm: initrd .*junk.initrd: not an initramfs \(no cpio header' \
		--accel emu --kernel "$VMLINUZ" --initrd "$T/junk.initrd" --mem 128M
	: >"$T/empty.initrd"
	bad_input initrd-empty '^rackvm: initrd .*empty.initrd: not an initramfs' \
		--accel emu --kernel "$VMLINUZ" --initrd "$T/empty.initrd" --mem 128M
	bad_input linux-cmdline-too-long '^rackvm: linux: command line is 3000 bytes, the kernel accepts at most 2047$' \
		--accel emu --kernel "$VMLINUZ" --mem 128M --cmdline "$(head -c 3000 /dev/zero | tr '\0' x)"
else
	skip_case "bad Linux inputs" "no Debian kernel in $BUILD/cache/linux-image (tests/unit/test_linux_image.sh fetches it)"
fi
bad_input mem-junk '^rackvm: --mem 12Q: not a size' --kernel "$K" --mem 12Q
bad_input vcpus-zero '^rackvm: --vcpus 0: must be a number from 1 to 64$' --kernel "$K" --vcpus 0
bad_input vcpus-too-many '^rackvm: --vcpus 65: must be a number from 1 to 64$' --kernel "$K" --vcpus 65
bad_input unknown-option "^rackvm: run: unknown option '--frobnicate'" --kernel "$K" --frobnicate
bad_input unknown-accel '^rackvm: --accel xen: unknown accelerator' --kernel "$K" --accel xen
bad_input no-kernel '^rackvm: run: --kernel FILE is required' --vcpus 2
if [ ! -e /dev/kvm ]; then
	bad_input accel-kvm-absent '^rackvm: --accel kvm: /dev/kvm: No such file or directory$' --kernel "$K" --accel kvm
fi

# ---- misbehaving guests ------------------------------------------------------------------------------------
build_bad() {
	local c=$1 addr=${2:-0x100000}
	as --32 --defsym CASE="$c" -o "$T/bad$c.o" tests/integration/hv_bad_guest.S &&
		ld -N -m elf_i386 --no-warn-rwx-segments -Ttext="$addr" -e _start -o "$T/bad$c.elf" "$T/bad$c.o"
}
have_as=1
for c in 1 2 3 4 5 6 8; do build_bad $c || have_as=0; done
build_bad 7 0x40000000 || have_as=0
if [ $have_as -eq 0 ]; then
	nfail=$((nfail + 1))
	echo "FAIL could not assemble the tiny guests (as/ld --32)"
else
	bad_input segments-outside-ram '^rackvm: .*outside guest RAM' --accel emu --kernel "$T/bad7.elf" --mem 128M

	REGS='^rackvm: vcpu 0: RIP=[0-9a-f]{16} RSP=[0-9a-f]{16} RFLAGS=[0-9a-f]+ CR0=[0-9a-f]+ CR3=[0-9a-f]{16} CR4=[0-9a-f]+ EFER=[0-9a-f]+ CS=[0-9a-f]{4} SS=[0-9a-f]{4} '
	# misbehaving <case> <name> <first-line-regex> [second regex]; every case runs with --strict-io (an unclaimed
	# port is an error only then: case 8 below checks the default)
	misbehaving() {
		local c=$1 name=$2 re=$3 re2=${4:-}
		for accel in emu kvm; do
			if [ $accel = kvm ] && [ ! -w /dev/kvm ]; then continue; fi
			hv_run "bad-guest-$name-$accel" $accel "$T/bad$c.elf" 1 "" --strict-io
			local ok=1
			[ "$RC" -eq 1 ] || { echo "    exit status $RC, want 1"; ok=0; }
			expect_err "$re" || ok=0
			expect_err "$REGS" || ok=0
			[ -z "$re2" ] || expect_err "$re2" || ok=0
			[ "$(grep -c '^rackvm: vcpu 0: RIP=' "$GUEST_ERR")" -eq 1 ] || { echo "    want exactly one register dump"; ok=0; }
			if [ $ok -eq 1 ]; then pass "$accel misbehaving guest: $name"; else fail "$accel misbehaving guest: $name"; fi
		done
	}
	misbehaving 1 triple-fault '^rackvm: vcpu 0: triple fault \(shutdown\)'
	misbehaving 2 unknown-port '^rackvm: vcpu 0: guest accessed unknown port 0x1234 \(out, size 1, value 0x5a\)$'
	misbehaving 3 unknown-mmio '^rackvm: vcpu 0: guest accessed unknown MMIO address 0xd0000000 \(write, 4 bytes\)$'
	misbehaving 4 unknown-msr '^rackvm: vcpu 0: triple fault' 'rdmsr of unhandled MSR 0xdeadbeef at RIP 0x[0-9a-f]+: #GP'

	# a port nothing claims, by default: reads give all-ones (byte, word, dword), the write is dropped, each is
	# counted (-v: the stats line), nothing is reported as an error; the guest exits with 0x11
	for accel in emu kvm; do
		if [ $accel = kvm ] && [ ! -w /dev/kvm ]; then continue; fi
		hv_run "unclaimed-port-$accel" $accel "$T/bad8.elf" 1 "" -v
		ok=1
		[ "$GUEST_CODE" = 17 ] || { echo "    guest exit $GUEST_CODE (status $RC), want 17 (0x11)"; ok=0; }
		! grep -q 'RIP=' "$GUEST_ERR" || { echo "    an error was reported"; ok=0; }
		expect_err 'stats: 1 vcpus, exits io [0-9]+ \(unclaimed ports 4\)' || ok=0
		if [ $ok -eq 1 ]; then pass "$accel unclaimed port: all-ones, write dropped"; else fail "$accel unclaimed port: all-ones, write dropped"; fi
	done

	# an IPI to an APIC id nobody has is dropped (as hardware): the guest goes on and exits with 0x10
	hv_run bad-guest-wild-ipi emu "$T/bad5.elf" 2 ""
	if [ "$GUEST_CODE" = 16 ] && ! grep -q 'RIP=' "$GUEST_ERR"; then
		pass "emu misbehaving guest: IPI to missing APIC id"
	else
		echo "    guest exit $GUEST_CODE (status $RC), expected 16 and no error"
		fail "emu misbehaving guest: IPI to missing APIC id"
	fi

	# SIGINT / SIGTERM: clean teardown with 130 / 143 while 4 vCPUs halt (BSP) or wait for SIPI (APs), and while
	# 4 vCPUs execute guest code (compute, long run: the signal must kick them out)
	for sig in INT TERM TERM-busy; do
		want=$([ $sig = INT ] && echo 130 || echo 143)
		GUEST_LOG=$LOG_DIR/sig-$sig.log GUEST_ERR=$LOG_DIR/sig-$sig.err GUEST_SECS=0
		if [ $sig = TERM-busy ]; then
			"$RACKVM" run --accel emu --kernel "$GUEST_DIR/compute.elf" --vcpus 4 --cmdline "n=100000000" \
				</dev/null >"$GUEST_LOG" 2>"$GUEST_ERR" &
			pid=$!
			for _ in $(seq 600); do grep -q '^smp: 4 of 4 cpus up' "$GUEST_LOG" && break; sleep 0.05; done
		else
			"$RACKVM" run --accel emu --kernel "$T/bad6.elf" --vcpus 4 </dev/null >"$GUEST_LOG" 2>"$GUEST_ERR" &
			pid=$!
			for _ in $(seq 100); do grep -q 'accelerator emu' "$GUEST_ERR" && break; sleep 0.05; done
		fi
		sleep 0.2
		kill -${sig%-busy} $pid
		rc=0
		for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
		if kill -0 $pid 2>/dev/null; then kill -9 $pid; fi
		wait $pid
		rc=$?
		if [ $rc -eq "$want" ]; then
			pass "SIG$sig -> exit $want"
		else
			echo "    exit status $rc, want $want"
			fail "SIG$sig -> exit $want"
		fi
	done
fi

echo "test_hv_run: $npass passed, $nfail failed, $nskip skipped in $((SECONDS - t_start))s"
[ $nfail -eq 0 ]
