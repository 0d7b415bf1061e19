#!/usr/bin/env bash
# bench_hv: rackvm run against qemu on the same guest images, measured in the same run, ratios printed.
#   start:   process start -> first console byte (topology workload, 1 vCPU), median of $BENCH_HV_REPS runs
#   compute: the guest's own compute phase (2 vCPUs, barrier to barrier: the workload's "ok ticks" in guest TSC
#            ticks, turned into time with the rate the guest states in its banner, or the host's TSC rate from
#            tsc-hz where it states none: qemu offers no CPUID 0x15, and without TSC scaling its guest TSC runs at
#            the host's rate), median of $BENCH_HV_REPS runs; the whole process's wall time is printed beside it
#            (under kvm_pvm qemu's SeaBIOS alone takes ~9 s, so wall time says nothing about vCPU speed there)
# With a usable /dev/kvm: rackvm --accel kvm vs qemu -accel kvm (the issue's goals: start <= 0.5x, compute <=
# 1.02x). Without: rackvm --accel emu vs qemu TCG — an interpreter against a JIT, printed as such (no goal).
# Run by `make bench` (BENCH_SCRIPTS). Options (environment): BENCH_HV_REPS (default 5), BENCH_HV_N/ROUNDS
# (compute size; defaults depend on the accelerator), BENCH_HV_ACCEL=emu (emu vs TCG on a kvm host).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
RACKVM=$BUILD/rackvm
GUEST_DIR=$BUILD/guest
QEMU=${QEMU:-qemu-system-x86_64}
REPS=${BENCH_HV_REPS:-5}

for f in "$RACKVM" "$GUEST_DIR/topology.elf" "$GUEST_DIR/compute.elf" "$GUEST_DIR/compute-ref" "$BUILD/bench/tsc-hz"; do
	if [ ! -e "$f" ]; then
		echo "bench_hv: $f missing (make BUILD=$BUILD all guest)"
		exit 1
	fi
done
if ! command -v "$QEMU" >/dev/null 2>&1; then
	echo "SKIP: bench_hv: $QEMU not installed (no baseline)"
	exit 0
fi

# BENCH_HV_ACCEL=emu forces the no-kvm comparison on a kvm host
if [ -w /dev/kvm ] && [ "${BENCH_HV_ACCEL:-auto}" != emu ]; then
	MODE=kvm
	RACCEL=(--accel kvm)
	QACCEL=(-accel kvm -cpu host,-arch-capabilities)   # kvm_pvm, see tests/guest/lib.sh
	N=${BENCH_HV_N:-2000000} ROUNDS=${BENCH_HV_ROUNDS:-64}
	echo "bench_hv: rackvm --accel kvm vs qemu -accel kvm (goals: start <= 0.50x, compute <= 1.02x)"
else
	MODE=emu
	RACCEL=(--accel emu)
	QACCEL=(-accel tcg,thread=multi)
	N=${BENCH_HV_N:-100000} ROUNDS=${BENCH_HV_ROUNDS:-16}
	echo "bench_hv: no /dev/kvm: rackvm --accel emu (interpreter) vs qemu TCG (JIT); the issue's goals are for KVM"
fi

now_us() { echo "${EPOCHREALTIME/./}"; }

# cmd_rackvm <workload> <vcpus> <cmdline>
cmd_rackvm() {
	CMD=("$RACKVM" run "${RACCEL[@]}" --kernel "$GUEST_DIR/$1.elf" --vcpus "$2" --mem 128M --cmdline "$3")
}
cmd_qemu() {
	CMD=("$QEMU" -M q35 -m 128M "${QACCEL[@]}" -smp "$2" -device isa-debug-exit,iobase=0xf4,iosize=0x04
		-serial stdio -display none -monitor none -no-reboot -kernel "$GUEST_DIR/$1.elf" -append "$3")
}

# first_byte_us: run CMD, microseconds until its first stdout byte; the process is then killed.
first_byte_us() {
	local t0 t1 c pid
	t0=$(now_us)
	exec 3< <(exec "${CMD[@]}" 2>/dev/null </dev/null)
	pid=$!
	IFS= read -r -n1 -u3 c
	t1=$(now_us)
	kill "$pid" 2>/dev/null
	exec 3<&-
	wait "$pid" 2>/dev/null
	echo $((t1 - t0))
}

HOST_TSC_HZ=$("$BUILD/bench/tsc-hz" | sed -n 's/^tsc_hz //p')

# compute_us: run CMD to its end; prints "<wall us> <compute phase us>" (-1 -1 if the guest did not report ok).
compute_us() {
	local t0 t1 out ticks khz
	t0=$(now_us)
	out=$("${CMD[@]}" 2>/dev/null </dev/null | tr -d '\r')
	t1=$(now_us)
	ticks=$(sed -n 's/^compute: n .* ok ticks \([0-9]*\)$/\1/p' <<<"$out")
	khz=$(sed -n 's/^rackvm-guest: .* tsc \([0-9]*\) kHz.*/\1/p' <<<"$out" | head -1)
	if [ -z "$ticks" ]; then
		echo "bench_hv: compute did not report ok:" >&2
		tail -n 5 <<<"$out" >&2
		echo "-1 -1"
		return
	fi
	awk -v w=$((t1 - t0)) -v t="$ticks" -v k="${khz:-0}" -v h="$HOST_TSC_HZ" 'BEGIN {
		hz = k > 0 ? k * 1000 : h
		printf "%d %d\n", w, t * 1e6 / hz }'
}

median() { tr ' ' '\n' <<<"$*" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.1f ms", u / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0 && a > 0) printf "%.2fx", a / b; else print "n/a"}'; }

# interleave the two sides so drift in machine load hits both
rs=() qs=()
for ((i = 0; i < REPS; i++)); do
	cmd_rackvm topology 1 ""
	rs+=("$(first_byte_us)")
	cmd_qemu topology 1 ""
	qs+=("$(first_byte_us)")
done
r=$(median "${rs[@]}") q=$(median "${qs[@]}")
printf 'start to first console byte: rackvm %s  qemu %s  ratio %s\n' "$(ms "$r")" "$(ms "$q")" "$(ratio "$r" "$q")"

CEXP=$("$GUEST_DIR/compute-ref" "$N" "$ROUNDS")
rw=() rc=() qw=() qc=()
for ((i = 0; i < REPS; i++)); do
	cmd_rackvm compute 2 "n=$N rounds=$ROUNDS expect=$CEXP"
	read -r w c < <(compute_us)
	rw+=("$w") rc+=("$c")
	cmd_qemu compute 2 "n=$N rounds=$ROUNDS expect=$CEXP"
	read -r w c < <(compute_us)
	qw+=("$w") qc+=("$c")
done
r=$(median "${rc[@]}") q=$(median "${qc[@]}")
printf 'compute phase n=%s rounds=%s 2 vcpus (guest TSC): rackvm %s  qemu %s  ratio %s (%s; runs: rackvm %s, qemu %s us)\n' \
	"$N" "$ROUNDS" "$(ms "$r")" "$(ms "$q")" "$(ratio "$r" "$q")" "$MODE" "${rc[*]}" "${qc[*]}"
r=$(median "${rw[@]}") q=$(median "${qw[@]}")
printf 'compute process wall time (start included): rackvm %s  qemu %s  ratio %s\n' "$(ms "$r")" "$(ms "$q")" \
	"$(ratio "$r" "$q")"
echo "host TSC $HOST_TSC_HZ Hz; load average $(cut -d' ' -f1-3 /proc/loadavg)"
