#!/usr/bin/env bash
# One guest across 2, 3 and 4 node processes (`rackvm sim`, emu accelerator): every SDK workload checked by what
# the guest prints (docs/guest.md) — topology with one NUMA node per node, litmus with zero forbidden outcomes,
# memtest byte-exact, compute with the host reference checksum, ipi with every IPI delivered — also over the
# fabric with latency and loss, in one network namespace per node, and a node SIGKILLed mid-run (the sim must
# name it and exit non-zero within seconds). Sizes are small: the emu is an interpreter (bigger runs: make soak).
# Budget: see docs/cluster.md ("Tests"). Exit 0 pass, 77 skip, 1 fail. Logs: $BUILD/test-logs/sim/.
set -u
cd "$(dirname "$0")/../.."
. tests/integration/sim_lib.sh
sim_preflight
T0=$SECONDS
check_true() { return 0; }

# ---- refusals before anything runs: a key file others can read, a bad placement, a missing option
check_refusals() {
	local d ok=0 out
	d=$(mktemp -d)
	printf '%064x\n' 7 >"$d/key"
	chmod 644 "$d/key"
	out=$("$RACKVM" node --id 0 --listen 127.0.0.1:1 --key-file "$d/key" --vcpus 1 --mem 16M \
		--kernel "$GUEST_DIR/ipi.elf" 2>&1)
	[ $? -eq 1 ] && grep -q "accessible by group or others (mode 0644): chmod 600" <<<"$out" ||
		{ echo "    world-readable key accepted: $out"; ok=1; }
	chmod 600 "$d/key"
	printf 'xyz\n' >"$d/key"
	out=$("$RACKVM" node --id 0 --listen 127.0.0.1:1 --key-file "$d/key" --vcpus 1 --mem 16M \
		--kernel "$GUEST_DIR/ipi.elf" 2>&1)
	[ $? -eq 1 ] && grep -q "must hold 32-128 hex digits" <<<"$out" || { echo "    bad key accepted: $out"; ok=1; }
	rm -rf "$d"
	out=$("$RACKVM" sim --nodes 2 --vcpus 2 --mem 64M --kernel "$GUEST_DIR/ipi.elf" --placement 0,0 2>&1)
	[ $? -eq 2 ] && grep -q "node 1 runs no vCPU" <<<"$out" || { echo "    bad placement accepted: $out"; ok=1; }
	out=$("$RACKVM" sim --nodes 2 --vcpus 2 --kernel "$GUEST_DIR/ipi.elf" 2>&1)
	[ $? -eq 2 ] || { echo "    missing --mem accepted"; ok=1; }
	# a bad value names its option
	out=$("$RACKVM" sim --nodes 2 --vcpus 2 --mem 64M --kernel "$GUEST_DIR/ipi.elf" --loss 2 2>&1)
	[ $? -eq 2 ] && grep -q "^rackvm sim: --loss 2: bad value" <<<"$out" || { echo "    --loss 2 accepted: $out"; ok=1; }
	out=$("$RACKVM" node --id x --listen 127.0.0.1:1 --key-file /dev/null --vcpus 1 --mem 16M \
		--kernel "$GUEST_DIR/ipi.elf" 2>&1)
	[ $? -eq 2 ] && grep -q "^rackvm node: --id x: bad value" <<<"$out" || { echo "    --id x accepted: $out"; ok=1; }
	return $ok
}
GUEST_CODE=0 GUEST_SECS=0 GUEST_LOG=/dev/null GUEST_ERR=/dev/null
verdict "refusals (key mode, key text, placement, options)" 0 check_refusals

# ---- topology: N cpus up, one proximity domain per node, each cpu in its node's domain
check_topology_nodes() {
	local v=$1 n=$2 i ok=0
	check_topology "$v" "$n" || ok=1
	for ((i = 0; i < v; i++)); do
		expect_line "^topology: cpu $i apic $i node $((i * n / v)) cpuid_apic $i\$" || ok=1
	done
	for ((i = 0; i < n; i++)); do
		expect_line "^topology: numa node $i mem 0x[0-9a-f]{16}-0x[0-9a-f]{16}\$" || ok=1
	done
	return $ok
}
for nv in 2:4 3:3 4:4; do
	n=${nv%:*} v=${nv#*:}
	sim_run topology-n$n topology "" --nodes $n --vcpus $v --mem 64M
	verdict "topology nodes=$n vcpus=$v" 0 check_topology_nodes $v $n
done

# ---- time: every node's measured clock offset to node 0 is within its own error bound (one host, one clock)
check_clock() {
	local lines
	lines=$(grep -E '^sim:   node [1-9]+: .* clock [-+][0-9.]+us\+-[0-9.]+us ' "$GUEST_ERR")
	[ "$(wc -l <<<"$lines")" -eq 3 ] || { echo "    expected 3 clock measurements"; return 1; }
	sed -E 's/.* clock ([-+][0-9.]+)us\+-([0-9.]+)us .*/\1 \2/' <<<"$lines" |
		awk '{ o = $1 < 0 ? -$1 : $1; if (o > $2) { print "    offset " $1 " us outside +-" $2 " us"; bad = 1 } }
		     END { exit bad }'
}
verdict "clock offsets within their bounds (4 nodes)" 0 check_clock

# ---- litmus: no outcome x86-TSO forbids, with every test the CPU count allows
LIT=400
for n in 2 3 4; do
	sim_run litmus-n$n litmus "iters=$LIT" --nodes $n --vcpus $n --mem 64M
	verdict "litmus nodes=$n vcpus=$n" 0 check_litmus $n $LIT
done

# ---- memtest: every byte of a window written on one node and verified on the next
MT=4M
for n in 2 3 4; do
	sim_run memtest-n$n memtest "max=$MT" --nodes $n --vcpus $n --mem 64M
	verdict "memtest nodes=$n vcpus=$n" 0 check_memtest $n =4194304
done

# ---- compute: the host reference checksum
CN=20000 CR=8
CEXP=$("$GUEST_DIR/compute-ref" $CN $CR)
for nv in 2:4 3:3 4:4; do
	n=${nv%:*} v=${nv#*:}
	sim_run compute-n$n compute "n=$CN rounds=$CR expect=$CEXP" --nodes $n --vcpus $v --mem 64M
	verdict "compute nodes=$n vcpus=$v" 0 check_compute $v
done

# ---- ipi: every IPI delivered, across nodes (CPU 0 pings every other CPU)
IPI=100
IPI_ITERS=$IPI
for n in 2 3 4; do
	sim_run ipi-n$n ipi "iters=$IPI" --nodes $n --vcpus $n --mem 64M
	verdict "ipi nodes=$n vcpus=$n" 0 check_ipi $n "x?2?apic"
done
sim_run ipi-xapic-n2 ipi "iters=$IPI apic=xapic" --nodes 2 --vcpus 4 --mem 64M --placement 0,1,0,1
verdict "ipi xapic nodes=2 placement=0,1,0,1" 0 check_ipi 4 xapic

# ---- the kvm accelerator across node processes (with a usable /dev/kvm; else one SKIP line): each node's vCPUs
# run under KVM, guest RAM is the DSM region under KVM's memory slots, IPIs cross the cluster link. One vCPU per
# node: on a 2-core host more spinning vCPUs than cores turns every round trip into a scheduler time slice.
if [ -w /dev/kvm ]; then
	SIM_ACCEL=kvm
	sim_run kvm-compute-n2 compute "n=$CN rounds=$CR expect=$CEXP" --nodes 2 --vcpus 2 --mem 64M
	verdict "kvm compute nodes=2 vcpus=2" 0 check_compute 2
	sim_run kvm-litmus-n2 litmus "iters=$LIT" --nodes 2 --vcpus 2 --mem 64M
	verdict "kvm litmus nodes=2 vcpus=2" 0 check_litmus 2 $LIT
	sim_run kvm-ipi-n2 ipi "iters=$IPI" --nodes 2 --vcpus 2 --mem 64M
	# both nodes really ran kvm (auto-selection plays no part: --accel kvm is explicit, this checks it reached them)
	check_kvm_ipi() {
		check_ipi 2 "x?2?apic" && expect_err "node0 info: node 0 of 2: 1 vCPU\(s\) here, .*, kvm accelerator," &&
			expect_err "node1 info: node 1 of 2: 1 vCPU\(s\) here, .*, kvm accelerator,"
	}
	verdict "kvm ipi nodes=2 vcpus=2" 0 check_kvm_ipi
	SIM_ACCEL=emu
else
	skip_case "kvm across nodes" "/dev/kvm: $([ -e /dev/kvm ] && echo 'not writable' || echo 'No such file or directory')"
fi

# ---- a port nothing claims, forwarded: node 0's vCPU reads and writes port 0x1234, which the io node (1) does not
# decode. By default the reads give all-ones and the write is dropped (guest exit 0x11); with --strict-io the node
# stops the guest with one line naming the port. Also: --initrd reaches the boot node's loader (a multiboot kernel
# refuses it with its own message), as it does in rackvm run.
UNC_DIR=$(mktemp -d)
if as --32 --defsym CASE=8 -o "$UNC_DIR/bad8.o" tests/integration/hv_bad_guest.S 2>/dev/null &&
	ld -N -m elf_i386 --no-warn-rwx-segments -Ttext=0x100000 -e _start -o "$UNC_DIR/bad8.elf" "$UNC_DIR/bad8.o" \
		2>/dev/null; then
	GD=$GUEST_DIR
	GUEST_DIR=$UNC_DIR                 # sim_run boots $GUEST_DIR/<workload>.elf
	sim_run unclaimed-port-n2 bad8 "" --nodes 2 --vcpus 2 --mem 64M --io-node 1
	check_unclaimed() { expect_err "^sim:   node 0: .* io fwd/served [1-9][0-9]*/0 " && ! grep -q "RIP=" "$GUEST_ERR"; }
	verdict "unclaimed port forwarded to the io node: all-ones, dropped" 17 check_unclaimed
	sim_run unclaimed-port-strict-n2 bad8 "" --nodes 2 --vcpus 2 --mem 64M --io-node 1 --strict-io
	check_strict() { expect_err "guest accessed unknown port 0x1234 \(in, size 1\)"; }
	[ "$GUEST_CODE" != 17 ] && GUEST_CODE=stopped
	verdict "unclaimed port with --strict-io stops the guest" stopped check_strict
	GUEST_DIR=$GD
	printf 'x' >"$UNC_DIR/initrd"
	# the boot node refuses and says why; the other node hears of it at the start barrier and ends too, at once
	# (not after the region's 10 s leave timeout); the sim's status is 1, which reads as guest code 0
	sim_run initrd-multiboot topology "" --nodes 2 --vcpus 2 --mem 64M --initrd "$UNC_DIR/initrd"
	check_initrd() {
		expect_err "an initrd is for Linux kernels; .*topology.elf is multiboot" &&
			expect_err "node 0 ended before the guest started: node 0 could not create its VM" &&
			! grep -q "rackvm-guest:" "$GUEST_LOG" &&
			awk -v s="$GUEST_SECS" 'BEGIN { exit !(s < 8) }' || { echo "    took ${GUEST_SECS}s"; return 1; }
	}
	verdict "--initrd reaches the boot node's loader" 0 check_initrd
else
	skip_case "unclaimed port across nodes" "cannot assemble the tiny guest (as/ld --32)"
fi
rm -rf "$UNC_DIR"

# ---- devices and console on node 1 (every port access of node 0's vCPU is forwarded)
sim_run compute-io1 compute "n=$CN rounds=$CR expect=$CEXP" --nodes 2 --vcpus 2 --mem 64M --io-node 1
check_io1() { check_compute 2 && expect_err "^sim:   node 0: .* io fwd/served [1-9][0-9]*/0 "; }
verdict "compute nodes=2 --io-node 1" 0 check_io1

# ---- level-triggered interrupts with the devices on the node without vCPU 0: the platform-devices guest
# (tests/integration/hv_devices_guest.S; its UART THR-empty interrupts sit on a level-triggered IOAPIC pin and are
# re-delivered at EOI) must print on 2 nodes exactly what it prints on one. Node 0's APIC EOIs reach node 1's
# IOAPIC as EOI messages; without them remote IRR stays set and the guest never sees its second THRE interrupt.
# dev_run <log-name> <command...>: stdin is a FIFO fed "xyz" once the guest's prompt shows (as test_hv_devices.sh).
dev_run() {
	local name=$1 pid i t0 us
	shift
	GUEST_LOG=$SIM_LOG_DIR/$name.log
	GUEST_ERR=$SIM_LOG_DIR/$name.err
	rm -f "$DEV_DIR/in" "$GUEST_LOG.raw"
	mkfifo "$DEV_DIR/in"
	t0=${EPOCHREALTIME/./}
	timeout "$SIM_TIMEOUT" "$@" <"$DEV_DIR/in" >"$GUEST_LOG.raw" 2>"$GUEST_ERR" &
	pid=$!
	exec 3>"$DEV_DIR/in"
	for ((i = 0; i < SIM_TIMEOUT * 20; i++)); do
		if grep -q '^uart: send 3 bytes now' "$GUEST_LOG.raw" 2>/dev/null; then
			printf xyz >&3
			break
		fi
		kill -0 $pid 2>/dev/null || break
		sleep 0.05
	done
	wait $pid
	local rc=$?
	[ $rc -ne 124 ] && SIM_ORDERLY+=("$GUEST_ERR")
	exec 3>&-
	tr -d '\r' <"$GUEST_LOG.raw" | grep -v '^\[' >"$GUEST_LOG"
	rm -f "$GUEST_LOG.raw"
	us=$((${EPOCHREALTIME/./} - t0))
	GUEST_SECS=$(printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000)))
	if [ $rc -eq 124 ]; then GUEST_CODE=timeout; elif [ $((rc % 2)) -eq 1 ]; then GUEST_CODE=$(((rc - 1) / 2)); else
		GUEST_CODE=status:$rc; fi
}
check_devices_io1() {
	local ok=0
	expect_line '^uart thre interrupts \(level-triggered pin\): ##$' || ok=1
	expect_line '^ioapic remote irr set in the handler, times: 00000003$' || ok=1
	expect_line '^devices: done$' || ok=1
	if ! diff "$DEV_ONE" "$GUEST_LOG" >"$DEV_DIR/diff"; then
		echo "    output differs from one node (< rackvm run, > rackvm sim)"
		sed 's/^/    /' "$DEV_DIR/diff"
		ok=1
	fi
	# the EOIs crossed: node 0 (vCPU 0) sent them, node 1 (the IOAPIC) received them
	expect_err '^sim:   node 0: .* eoi sent/recv [1-9][0-9]*/0 ' || ok=1
	expect_err '^sim:   node 1: .* eoi sent/recv 0/[1-9][0-9]* ' || ok=1
	return $ok
}
DEV_DIR=$(mktemp -d)
DEV_GUEST=$BUILD/guest/hv-devices.elf     # built by make (sim/guest/module.mk)
if [ -f "$DEV_GUEST" ]; then
	dev_run devices-one "$RACKVM" run --accel emu --vcpus 2 --mem 128M --console-input --kernel "$DEV_GUEST"
	DEV_ONE=$DEV_DIR/one.log
	cp "$GUEST_LOG" "$DEV_ONE"
	if [ "$GUEST_CODE" = 32 ]; then
		dev_run devices-io1 "$RACKVM" sim --accel emu --nodes 2 --vcpus 2 --mem 128M --io-node 1 \
			--console-input --timeout "$SIM_TIMEOUT" --kernel "$DEV_GUEST"
		verdict "devices guest nodes=2 --io-node 1 (level irq EOIs)" 32 check_devices_io1
	else
		GUEST_ERR=$SIM_LOG_DIR/devices-one.err
		verdict "devices guest on one node (reference run)" 32 check_true
	fi
else
	echo "    $DEV_GUEST missing (make BUILD=$BUILD)"
	fail "devices guest"
fi
rm -rf "$DEV_DIR"

# ---- fabric: 200 us latency, 2% loss (the DSM and the cluster link both retransmit)
FAB=(--latency 200 --loss 0.02 --seed 7)
sim_run litmus-fabric litmus "iters=$LIT" --nodes 2 --vcpus 2 --mem 64M "${FAB[@]}"
verdict "litmus nodes=2 fabric latency+loss" 0 check_litmus 2 $LIT
sim_run ipi-fabric ipi "iters=$IPI" --nodes 3 --vcpus 3 --mem 64M "${FAB[@]}"
verdict "ipi nodes=3 fabric latency+loss" 0 check_ipi 3 "x?2?apic"
sim_run memtest-fabric memtest "max=$MT" --nodes 2 --vcpus 2 --mem 64M "${FAB[@]}"
verdict "memtest nodes=2 fabric latency+loss" 0 check_memtest 2 =4194304

# ---- one network namespace per node
if [ "$(id -u)" = 0 ] && ip netns add "rkvm-probe-$$" 2>/dev/null; then
	ip netns del "rkvm-probe-$$"
	sim_run compute-netns compute "n=$CN rounds=$CR expect=$CEXP" --nodes 2 --vcpus 2 --mem 64M --netns
	verdict "compute nodes=2 --netns" 0 check_compute 2
	check_netns_clean() {
		if ip netns list | grep -q "^rkvm$(sed -n 's/^sim: node 0 pid \([0-9]*\).*/\1/p' "$GUEST_ERR")-"; then
			echo "    a namespace of the run is left behind"
			return 1
		fi
		expect_err "^sim: node 1 pid [0-9]+ at 10\.213\.[0-9]+\.2:[0-9]+ in netns "
	}
	verdict "--netns addresses, namespaces removed" 0 check_netns_clean
else
	skip_case "--netns" "ip netns is not permitted here (needs root and iproute2)"
fi

# ---- every run above that ended normally: no node warned while leaving (after its summary line)
GUEST_CODE=0 GUEST_SECS=0 GUEST_LOG=/dev/null GUEST_ERR=/dev/null
verdict "orderly ends: no warnings at shutdown (${#SIM_ORDERLY[@]} runs)" 0 check_quiet_ends "${SIM_ORDERLY[@]}"

# ---- a node killed mid-run: the sim names it and stops everything within seconds
kill_case() {
	local err=$SIM_LOG_DIR/kill.err log=$SIM_LOG_DIR/kill.log pid rc t_kill t_end deadline
	"$RACKVM" sim --accel emu --kernel "$GUEST_DIR/ipi.elf" --cmdline "iters=100000000" --timeout 60 \
		--nodes 3 --vcpus 3 --mem 64M </dev/null >"$log" 2>"$err" &
	local sim=$!
	deadline=$((SECONDS + 30))
	until grep -q '^smp: 3 of 3 cpus up' "$log" 2>/dev/null || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
	pid=$(sed -n 's/^sim: node 1 pid \([0-9]*\) .*/\1/p' "$err")
	if [ -z "$pid" ] || ! grep -q '^smp: 3 of 3 cpus up' "$log"; then
		echo "    the guest did not come up (log $log)"
		kill "$sim" 2>/dev/null
		wait "$sim"
		return 1
	fi
	t_kill=${EPOCHREALTIME/./}
	kill -KILL "$pid"
	wait "$sim"
	rc=$?
	t_end=${EPOCHREALTIME/./}
	GUEST_LOG=$log GUEST_ERR=$err
	GUEST_SECS=$(printf '%d.%02d' $(((t_end - t_kill) / 1000000)) $(((t_end - t_kill) % 1000000 / 10000)))
	GUEST_CODE=0   # checked below
	local ok=0
	[ $rc -ne 0 ] || { echo "    sim exited 0"; ok=1; }
	[ $((t_end - t_kill)) -lt 10000000 ] || { echo "    sim took more than 10 s after the kill"; ok=1; }
	expect_err "^sim: FAILED: node 1 died \(killed by signal 9" || ok=1
	for p in $(sed -n 's/^sim: node [0-9] pid \([0-9]*\) .*/\1/p' "$err"); do
		if kill -0 "$p" 2>/dev/null; then
			echo "    node pid $p still alive"
			ok=1
		fi
	done
	return $ok
}

# ---- Ctrl-C: SIGINT to the sim stops every node within seconds, exit 130
int_case() {
	local err=$SIM_LOG_DIR/sigint.err log=$SIM_LOG_DIR/sigint.log rc t0 t1 deadline ok=0
	"$RACKVM" sim --accel emu --kernel "$GUEST_DIR/ipi.elf" --cmdline "iters=100000000" --timeout 60 \
		--nodes 2 --vcpus 2 --mem 64M </dev/null >"$log" 2>"$err" &
	local sim=$!
	deadline=$((SECONDS + 30))
	until grep -q '^smp: 2 of 2 cpus up' "$log" 2>/dev/null || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
	t0=${EPOCHREALTIME/./}
	kill -INT "$sim"
	wait "$sim"
	rc=$?
	t1=${EPOCHREALTIME/./}
	GUEST_LOG=$log GUEST_ERR=$err
	GUEST_SECS=$(printf '%d.%02d' $(((t1 - t0) / 1000000)) $(((t1 - t0) % 1000000 / 10000)))
	[ $rc -eq 130 ] || { echo "    sim exited $rc, expected 130"; ok=1; }
	[ $((t1 - t0)) -lt 10000000 ] || { echo "    sim took more than 10 s after SIGINT"; ok=1; }
	expect_err "^sim: stopped by Interrupt; every node stopped" || ok=1
	for p in $(sed -n 's/^sim: node [0-9] pid \([0-9]*\) .*/\1/p' "$err"); do
		if kill -0 "$p" 2>/dev/null; then
			echo "    node pid $p still alive"
			ok=1
		fi
	done
	return $ok
}
if int_case; then int_ok=check_true; else int_ok=false; fi
GUEST_CODE=0
verdict "SIGINT to the sim (2 nodes)" 0 $int_ok
if kill_case; then kill_ok=check_true; else kill_ok=false; fi
verdict "node 1 SIGKILLed mid-run (3 nodes)" 0 $kill_ok

echo "test_sim: $((SECONDS - T0)) s"
sim_summary
