# Shared helpers for the guest workload tests: boot a workload ELF under qemu and translate its exit.
#
# Exit convention (docs/guest.md): the guest writes code c to isa-debug-exit (port 0xf4) and qemu exits with
# (c << 1) | 1. guest_run sets GUEST_CODE to c, or to "timeout" (the guest hung), or to "noexit" (qemu exited
# 0 or with an even status: triple fault with -no-reboot, or the guest never wrote the port).

BUILD=${BUILD:-build}
GUEST_DIR=$BUILD/guest
QEMU=${QEMU:-qemu-system-x86_64}
GUEST_TIMEOUT=${GUEST_TIMEOUT:-120}
LOG_DIR=${LOG_DIR:-$BUILD/test-logs/guest}
mkdir -p "$LOG_DIR"

if [ -w /dev/kvm ]; then
	# kvm_pvm hosts: the bare host CPU model aborts in kvm_buf_set_msrs (MSR 0x10a, IA32_ARCH_CAPABILITIES)
	GUEST_ACCEL=(-accel kvm -cpu host,-arch-capabilities)
	GUEST_ACCEL_NAME=kvm
	# the host CPU model offers x2APIC when the host has it, and the SDK then takes it (no apic= option)
	GUEST_DEFAULT_APIC=xapic
	grep -qw x2apic /proc/cpuinfo && GUEST_DEFAULT_APIC=x2apic
else
	GUEST_ACCEL=(-accel tcg,thread=multi)
	GUEST_ACCEL_NAME=tcg
	GUEST_DEFAULT_APIC=xapic    # qemu 7.2 TCG has no x2APIC
fi

. tests/guest/verdict.sh

# guest_run <log-name> <workload> <smp> <append> [extra qemu args...]
guest_run() {
	local name=$1 wl=$2 smp=$3 append=$4
	shift 4
	GUEST_LOG=$LOG_DIR/$name.log
	local t0 rc
	t0=${EPOCHREALTIME/./}
	timeout "$GUEST_TIMEOUT" "$QEMU" -M "${GUEST_MACHINE:-q35}" -m "${GUEST_MEM:-128M}" "${GUEST_ACCEL[@]}" \
		-smp "$smp" -device isa-debug-exit,iobase=0xf4,iosize=0x04 -serial stdio -display none \
		-monitor none -no-reboot -kernel "$GUEST_DIR/$wl.elf" -append "$append" "$@" \
		</dev/null >"$GUEST_LOG.raw" 2>&1
	rc=$?
	tr -d '\r' <"$GUEST_LOG.raw" >"$GUEST_LOG"     # the UART driver sends CR LF
	rm -f "$GUEST_LOG.raw"
	local us=$((${EPOCHREALTIME/./} - t0))
	GUEST_SECS=$(printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000)))
	if [ $rc -eq 124 ]; then
		GUEST_CODE=timeout
	elif [ $((rc % 2)) -eq 1 ]; then
		GUEST_CODE=$(((rc - 1) / 2))
	else
		GUEST_CODE=noexit
	fi
}

guest_summary() {
	echo "guest: $npass passed, $nfail failed, $nskip skipped ($GUEST_ACCEL_NAME)"
	[ "$nfail" -eq 0 ]
}

guest_preflight() {
	if ! command -v "$QEMU" >/dev/null 2>&1; then
		echo "SKIP: $QEMU not installed (scripts/deps.sh installs qemu-system-x86)"
		exit 77
	fi
	local w
	for w in topology litmus memtest compute ipi; do
		if [ ! -f "$GUEST_DIR/$w.elf" ]; then
			echo "guest: $GUEST_DIR/$w.elf missing (run make BUILD=$BUILD first)"
			exit 1
		fi
	done
}
