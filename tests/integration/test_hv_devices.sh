#!/usr/bin/env bash
# Platform devices end to end: a tiny multiboot guest (tests/integration/hv_devices_guest.S, built by make)
# reads fw_cfg, CMOS/RTC and the IOAPIC version, calibrates against PIT channel 2 through port 0x61, echoes 3
# bytes it receives on COM1 (rackvm --console-input), takes 5 PIT channel-0 interrupts routed IOAPIC pin 2 ->
# local APIC -> IDT, and 3 UART THR-empty interrupts on pin 4 programmed level-triggered (remote IRR, EOI
# broadcast from the local APIC, re-delivery at EOI while the line is still high), and one RTC update-ended
# interrupt on pin 8. It runs under rackvm (emu, 1 and 2 vCPUs; kvm too when /dev/kvm is usable) and, when
# qemu-system-x86_64 exists, under qemu -M q35: the printed lines must be identical, so our devices answer as
# QEMU's do. Budget: about 10 s. Exit 0 pass, 1 fail (qemu or kvm missing only skips their part, with a line).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RACKVM=$BUILD/rackvm
QEMU=${QEMU:-qemu-system-x86_64}
LOG_DIR=$BUILD/test-logs/hv-devices
TIMEOUT=${HV_TIMEOUT:-60}
mkdir -p "$LOG_DIR"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
nfail=0

if [ ! -x "$RACKVM" ]; then
	echo "test_hv_devices: $RACKVM missing (make BUILD=$BUILD)"
	exit 1
fi
GUEST=$BUILD/guest/hv-devices.elf     # built by make (sim/guest/module.mk), long mode
if [ ! -f "$GUEST" ]; then
	echo "FAIL $GUEST missing (make BUILD=$BUILD)"
	exit 1
fi

# run_guest <name> <command...>: the command's stdin is a FIFO; "xyz" is written to it once the guest's prompt
# line shows in the log. Sets RC and LOG (CRs removed).
run_guest() {
	local name=$1 pid i
	shift
	LOG=$LOG_DIR/$name.log
	rm -f "$T/in" "$LOG.raw"
	mkfifo "$T/in"
	timeout "$TIMEOUT" "$@" <"$T/in" >"$LOG.raw" 2>"$LOG.err" &
	pid=$!
	exec 3>"$T/in"
	for ((i = 0; i < TIMEOUT * 20; i++)); do
		if grep -q '^uart: send 3 bytes now' "$LOG.raw" 2>/dev/null; then
			printf xyz >&3
			break
		fi
		kill -0 $pid 2>/dev/null || break
		sleep 0.05
	done
	wait $pid
	RC=$?
	exec 3>&-
	tr -d '\r' <"$LOG.raw" >"$LOG"
	rm -f "$LOG.raw"
}

EXPECTED='devices: start
fwcfg signature QEMU
fwcfg cpus 0000000N
cmos 0x34 00000700
rtc B 00000002
rtc D 00000080
ioapic version 00170020
pit channel 2 out high after 10 ms
uart: send 3 bytes now
uart received: xyz
pit channel 0 ticks through the ioapic: 5
uart thre interrupts (level-triggered pin): ##
ioapic remote irr set in the handler, times: 00000003
rtc update interrupt, register C & 0xb0: 00000090
devices: done'

# check <name> <ncpus>: exit status 0x41 (code 0x20) and exactly the expected lines
check() {
	local name=$1 n=$2
	local want=${EXPECTED/0000000N/0000000$n}
	if [ "$RC" -ne 65 ]; then
		echo "FAIL $name: exit status $RC, want 65 (guest code 0x20); log $LOG"
		sed 's/^/    /' "$LOG" "$LOG.err" | tail -20
		nfail=$((nfail + 1))
		return
	fi
	if ! diff <(echo "$want") <(grep -v '^\[' "$LOG" | grep -v '^rackvm') >"$T/diff"; then
		echo "FAIL $name: output differs (< expected, > guest); log $LOG"
		sed 's/^/    /' "$T/diff"
		nfail=$((nfail + 1))
		return
	fi
	echo "PASS $name"
}

for n in 1 2; do
	run_guest "emu-$n" "$RACKVM" run --accel emu --vcpus $n --mem 128M --console-input --kernel "$GUEST"
	check "emu-$n" $n
done
if [ -w /dev/kvm ]; then
	run_guest kvm-1 "$RACKVM" run --accel kvm --vcpus 1 --mem 128M --console-input --kernel "$GUEST"
	check kvm-1 1
else
	echo "SKIP: kvm part: /dev/kvm is not usable here"
fi
if command -v "$QEMU" >/dev/null; then
	machine=q35 accel=(-accel tcg)
	# under KVM: qemu's own IOAPIC (version 0x20, as rackvm's), not the in-kernel one (0x11); -arch-capabilities:
	# kvm_pvm, see tests/guest/lib.sh
	[ -w /dev/kvm ] && machine=q35,kernel-irqchip=split accel=(-accel kvm -cpu host,-arch-capabilities)
	run_guest qemu-1 "$QEMU" -M "$machine" -m 128M "${accel[@]}" -smp 1 -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
		-serial stdio -display none -monitor none -no-reboot -kernel "$GUEST"
	check qemu-1 1
else
	echo "SKIP: qemu part: $QEMU not found (the cross-check against QEMU's devices did not run)"
fi
[ $nfail -eq 0 ] || exit 1
exit 0
