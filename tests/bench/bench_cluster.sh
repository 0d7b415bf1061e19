#!/usr/bin/env bash
# make bench (cluster part): one guest across node processes (`rackvm sim`; kvm where /dev/kvm is usable, else emu;
# BENCH_ACCEL=emu|kvm chooses).
#  1. compute with 2 vCPUs on 1 node vs on 2 nodes (each vCPU's data is its own: node-local after first touch);
#     runs alternate, the guest's own compute ticks are compared; ratio = 1-node time / 2-node time (goal >= 0.95).
#  2. IPI round trip same-node (1 node x 2 vCPUs) vs cross-node (2 nodes x 1 vCPU) vs qemu on the same guest
#     (-accel kvm with kvm, TCG with emu), $BENCH_REPS runs each, medians; the cluster link's round trip beside it.
#  3. DSM faults and bytes per workload on 2 nodes (the nodes' summary lines).
# Sizes: BENCH_CN / BENCH_CR / BENCH_REPS / BENCH_IPI. Prints numbers only; asserts nothing.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/sim_lib.sh
SIM_LOG_DIR=$BUILD/test-logs/bench-cluster
mkdir -p "$SIM_LOG_DIR"
sim_preflight
# the accelerator: kvm where /dev/kvm is usable (BENCH_ACCEL=emu|kvm overrides), else emu
ACCEL=${BENCH_ACCEL:-auto}
[ "$ACCEL" = auto ] && { [ -w /dev/kvm ] && ACCEL=kvm || ACCEL=emu; }
SIM_ACCEL=$ACCEL
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_OK=$(command -v "$QEMU" 2>/dev/null)
if [ "$ACCEL" = kvm ]; then
	QACCEL=(-accel kvm -cpu host,-arch-capabilities) QNAME=kvm QGOAL="goal <= 1.5x"   # kvm_pvm: see tests/guest/lib.sh
else
	QACCEL=(-accel tcg,thread=multi) QNAME=tcg QGOAL="TCG, no goal"
fi
echo "bench_cluster: accelerator $ACCEL"
# compute size: kvm runs ring 3 natively, ~100x emu's speed; both sizes take ~0.2 s of guest time per run
if [ "$ACCEL" = kvm ]; then CN=${BENCH_CN:-2000000} CR=${BENCH_CR:-64}; else CN=${BENCH_CN:-200000} CR=${BENCH_CR:-16}; fi
REPS=${BENCH_REPS:-5} IPI=${BENCH_IPI:-200}
CEXP=$("$GUEST_DIR/compute-ref" "$CN" "$CR")

ticks_of() { sed -n 's/^compute: n .* ok ticks \([0-9]*\)$/\1/p' "$GUEST_LOG"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : 0)}'; }
minimum() { sort -n | head -1; }

echo "-- compute n=$CN rounds=$CR, 2 vCPUs: 1 node vs 2 nodes ($REPS runs each, alternating)"
one=() two=()
for ((i = 0; i < REPS; i++)); do
	sim_run bench-compute-1n compute "n=$CN rounds=$CR expect=$CEXP" --nodes 1 --vcpus 2 --mem 64M --quiet
	t=$(ticks_of); [ "$GUEST_CODE" = 0 ] && [ -n "$t" ] || { echo "compute on 1 node failed ($GUEST_LOG)"; exit 1; }
	one+=("$t")
	sim_run bench-compute-2n compute "n=$CN rounds=$CR expect=$CEXP" --nodes 2 --vcpus 2 --mem 64M --quiet
	t=$(ticks_of); [ "$GUEST_CODE" = 0 ] && [ -n "$t" ] || { echo "compute on 2 nodes failed ($GUEST_LOG)"; exit 1; }
	two+=("$t")
done
m1=$(printf '%s\n' "${one[@]}" | median)
m2=$(printf '%s\n' "${two[@]}" | median)
l1=$(printf '%s\n' "${one[@]}" | minimum)
l2=$(printf '%s\n' "${two[@]}" | minimum)
echo "compute ticks 1 node: ${one[*]} (median $m1, min $l1)"
echo "compute ticks 2 nodes: ${two[*]} (median $m2, min $l2)"
# On a shared 2-core host, other load stretches single runs by 2-3x: the minimum is the least disturbed.
awk -v a="$m1" -v b="$m2" -v c="$l1" -v d="$l2" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
	printf "compute ratio (1-node time / 2-node time): median %.3f, min %.3f (goal >= 0.95; load avg %s)\n",
		a / b, c / d, load }'
grep '^sim:   node' "$GUEST_ERR" | sed 's/^sim:   /  2-node run: /'

# One spinning vCPU per host core at most: the ipi workload's CPUs spin in ring 3, and under kvm a spinning vCPU
# keeps its core until the host scheduler's time slice ends (emu yields at PAUSE), so with more vCPUs than cores
# every round trip would measure the scheduler. Same node: 1 node x 2 vCPUs; cross node: 2 nodes x 1 vCPU; baseline:
# qemu with 2 vCPUs on the same guest (-accel kvm where /dev/kvm is usable, else TCG, which has no goal).
echo "-- IPI round trip, CPU 0 <-> CPU 1 ($ACCEL): same node (1 node x 2 vCPUs), cross node (2 nodes x 1 vCPU), qemu $QNAME 2 vCPUs; $REPS runs of $IPI each"
rtt_of() { sed -n "s/^ipi: cpu 1 apic [0-9]* pings [0-9]* pongs [0-9]* rtt_min \([0-9]*\) rtt_avg \([0-9]*\) .*/\1 \2/p" "$GUEST_LOG"; }
khz_of() { sed -n 's/^rackvm-guest: .* tsc \([0-9]*\) kHz.*/\1/p' "$GUEST_LOG" | head -1; }
# qemu_ipi <cmdline>: the ipi guest under qemu with 2 vCPUs, console in $GUEST_LOG
qemu_ipi() {
	timeout 120 "$QEMU" -M q35 -m 64M "${QACCEL[@]}" -smp 2 -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
		-serial stdio -display none -monitor none -no-reboot -kernel "$GUEST_DIR/ipi.elf" \
		-append "$1" </dev/null 2>&1 | tr -d '\r' >"$GUEST_LOG"
}
same_avg=() same_min=() cross_avg=() cross_min=() q_avg=() q_min=() links=() hlt_avg=() qhlt_avg=()
for ((i = 0; i < REPS; i++)); do
	sim_run bench-ipi-same ipi "iters=$IPI" --nodes 1 --vcpus 2 --mem 64M --quiet
	read -r mn av < <(rtt_of)
	[ "$GUEST_CODE" = 0 ] && [ -n "${av:-}" ] || { echo "ipi on 1 node failed ($GUEST_LOG)"; exit 1; }
	khz=$(khz_of)
	same_avg+=("$av") same_min+=("$mn")
	# the pinged CPU waits halted (wait=hlt): one leg of each round trip is a halted vCPU's wake-up
	sim_run bench-ipi-hlt ipi "iters=$IPI wait=hlt" --nodes 1 --vcpus 2 --mem 64M --quiet
	read -r mn av < <(rtt_of)
	[ "$GUEST_CODE" = 0 ] && [ -n "${av:-}" ] || { echo "ipi wait=hlt on 1 node failed ($GUEST_LOG)"; exit 1; }
	hlt_avg+=("$av")
	sim_run bench-ipi-cross ipi "iters=$IPI" --nodes 2 --vcpus 2 --mem 64M
	read -r mn av < <(rtt_of)
	[ "$GUEST_CODE" = 0 ] && [ -n "${av:-}" ] || { echo "ipi on 2 nodes failed ($GUEST_LOG)"; exit 1; }
	cross_avg+=("$av") cross_min+=("$mn")
	# the cluster link's own round trip (node 1's clock-offset ping-pong: bound = half the best round trip)
	b=$(sed -n 's/^sim:   node 1: .* clock [-+0-9.]*us+-\([0-9.]*\)us .*/\1/p' "$GUEST_ERR")
	[ -n "$b" ] && links+=("$b")
	if [ -n "$QEMU_OK" ]; then
		GUEST_LOG=$SIM_LOG_DIR/bench-ipi-qemu.log
		qemu_ipi "iters=$IPI"
		read -r mn av < <(rtt_of)
		[ -n "${av:-}" ] && q_avg+=("$av") q_min+=("$mn")
		qemu_ipi "iters=$IPI wait=hlt"
		read -r mn av < <(rtt_of)
		[ -n "${av:-}" ] && qhlt_avg+=("$av")
	fi
done
us() { awk -v t="$1" -v k="$2" 'BEGIN { printf "%.1f", t * 1000 / k }'; }
sa=$(printf '%s\n' "${same_avg[@]}" | median) sm=$(printf '%s\n' "${same_min[@]}" | minimum)
ca=$(printf '%s\n' "${cross_avg[@]}" | median) cm=$(printf '%s\n' "${cross_min[@]}" | minimum)
link=$(printf '%s\n' "${links[@]:-0}" | minimum)
link=$(awk -v b="$link" 'BEGIN { printf "%.1f", 2 * b }')
echo "ipi rtt same node: median of rtt_avg $(us "$sa" "$khz") us (runs ${same_avg[*]} ticks), best rtt_min $(us "$sm" "$khz") us"
echo "ipi rtt cross node: median of rtt_avg $(us "$ca" "$khz") us (runs ${cross_avg[*]} ticks), best rtt_min $(us "$cm" "$khz") us"
echo "cluster link round trip (best clock ping-pong of the cross-node runs): $link us"
awk -v s="$(us "$sa" "$khz")" -v c="$(us "$ca" "$khz")" -v sm="$(us "$sm" "$khz")" -v cm="$(us "$cm" "$khz")" \
	-v l="$link" 'BEGIN {
	printf "cross - same: median %.1f us, best %.1f us; 2 link round trips %.1f us (goal: cross <= same + 2 RTT)\n",
		c - s, cm - sm, 2 * l }'
if [ ${#q_avg[@]} -gt 0 ]; then
	qa=$(printf '%s\n' "${q_avg[@]}" | median) qm=$(printf '%s\n' "${q_min[@]}" | minimum)
	# qemu's guest states no TSC rate; without TSC scaling its TSC is the host's, as rackvm's kvm guest's is
	qhz=$("$BUILD/bench/tsc-hz" | sed -n 's/^tsc_hz //p')
	qk=$((qhz / 1000))
	echo "ipi rtt qemu $QNAME, 2 vCPUs: median of rtt_avg $(us "$qa" "$qk") us (runs ${q_avg[*]} ticks at the host TSC), best rtt_min $(us "$qm" "$qk") us"
	awk -v s="$(us "$sa" "$khz")" -v q="$(us "$qa" "$qk")" -v sm="$(us "$sm" "$khz")" -v qm="$(us "$qm" "$qk")" \
		-v goal="$QGOAL" 'BEGIN { printf "same node / qemu: median %.2fx, best %.2fx (%s)\n", s / q, sm / qm, goal }'
	if [ ${#qhlt_avg[@]} -gt 0 ]; then
		ha=$(printf '%s\n' "${hlt_avg[@]}" | median) qha=$(printf '%s\n' "${qhlt_avg[@]}" | median)
		echo "ipi rtt same node, pinged CPU halted (wait=hlt): rackvm median $(us "$ha" "$khz") us, qemu $QNAME $(us "$qha" "$qk") us"
		awk -v a="$(us "$ha" "$khz")" -v b="$(us "$qha" "$qk")" 'BEGIN { printf "halted wake-up / qemu: median %.2fx\n", a / b }'
	fi
fi
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
grep '^sim:   node' "$GUEST_ERR" | sed 's/^sim:   /  cross-node run: /'

echo "-- DSM faults and bytes per workload, 2 nodes x 1 vCPU"
for wl in topology litmus memtest compute ipi; do
	case $wl in
		litmus) cl="iters=64" ;;
		memtest) cl="max=4M" ;;
		compute) cl="n=$CN rounds=$CR expect=$CEXP" ;;
		ipi) cl="iters=$IPI" ;;
		*) cl="" ;;
	esac
	sim_run bench-dsm-$wl $wl "$cl" --nodes 2 --vcpus 2 --mem 64M --quiet
	echo "$wl ($cl): guest exit $GUEST_CODE, ${GUEST_SECS}s"
	grep '^sim:   node' "$GUEST_ERR" | sed 's/^sim:   /  /'
done
