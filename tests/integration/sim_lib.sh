# Helpers for tests that boot a guest across simulated nodes with `rackvm sim` (tests/integration/test_sim.sh,
# tests/bench/bench_cluster.sh). Exit convention as qemu and rackvm run: the guest's isa-debug-exit code c makes
# the sim exit (c << 1) | 1; sim_run sets GUEST_CODE to c, or "timeout", or "status:<n>" for anything else.

BUILD=${BUILD:-build}
RACKVM=${RACKVM:-$BUILD/rackvm}
GUEST_DIR=$BUILD/guest
SIM_TIMEOUT=${SIM_TIMEOUT:-120}
SIM_ACCEL=${SIM_ACCEL:-emu}   # tests run the emu accelerator; bench_cluster picks kvm where it is usable
SIM_LOG_DIR=${SIM_LOG_DIR:-$BUILD/test-logs/sim}
mkdir -p "$SIM_LOG_DIR"

. tests/guest/verdict.sh
SIM_ORDERLY=()   # stderr logs of runs that ended normally (check_quiet_ends)

# sim_run <log-name> <workload> <cmdline> <sim args...>: console in $GUEST_LOG, sim/node stderr in $GUEST_ERR.
sim_run() {
	local name=$1 wl=$2 cmdline=$3
	shift 3
	GUEST_LOG=$SIM_LOG_DIR/$name.log
	GUEST_ERR=$SIM_LOG_DIR/$name.err
	local t0 rc
	t0=${EPOCHREALTIME/./}
	"$RACKVM" sim --accel "$SIM_ACCEL" --kernel "$GUEST_DIR/$wl.elf" --cmdline "$cmdline" --timeout "$SIM_TIMEOUT" "$@" \
		</dev/null >"$GUEST_LOG.raw" 2>"$GUEST_ERR"
	rc=$?
	[ $rc -ne 124 ] && SIM_ORDERLY+=("$GUEST_ERR")
	tr -d '\r' <"$GUEST_LOG.raw" >"$GUEST_LOG"
	rm -f "$GUEST_LOG.raw"
	local us=$((${EPOCHREALTIME/./} - t0))
	GUEST_SECS=$(printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000)))
	if [ $rc -eq 124 ]; then
		GUEST_CODE=timeout
	elif [ $((rc % 2)) -eq 1 ]; then
		GUEST_CODE=$(((rc - 1) / 2))
	else
		GUEST_CODE=status:$rc
	fi
}

# on a failure, the sim's and nodes' stderr without the nodes' info lines
verdict_err_tail() {
	grep -v '^\[node [0-9]*\] \[ *[0-9.]*\] node[0-9]* info:' "$GUEST_ERR" | tail -n 25 | sed 's/^/    ! /'
}

# A node's warnings and errors after its summary line, i.e. while it leaves the region and closes its connections,
# in the given stderr logs. An orderly end says nothing there (a peer that does not leave in time still shows).
check_quiet_ends() {
	local f bad=0
	for f in "$@"; do
		awk -v f="$f" '/^\[node [0-9]+\] summary:/ { done[$2] = 1; next }
			/^\[node [0-9]+\] .* (warn|error): / { if (done[$2]) { print "    " f ": " $0; n++ } }
			END { exit n > 0 }' "$f" || bad=1
	done
	return $bad
}

sim_preflight() {
	if [ ! -x "$RACKVM" ]; then
		echo "sim: $RACKVM missing (run make BUILD=$BUILD first)"
		exit 1
	fi
	local w
	for w in topology litmus memtest compute ipi; do
		if [ ! -f "$GUEST_DIR/$w.elf" ]; then
			echo "sim: $GUEST_DIR/$w.elf missing (run make BUILD=$BUILD first)"
			exit 1
		fi
	done
	if [ ! -e /dev/userfaultfd ] && [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" != 1 ] &&
		[ "$(id -u)" != 0 ]; then
		echo "SKIP: userfaultfd is not available to this user (the DSM needs it)"
		exit 77
	fi
}

sim_summary() {
	echo "sim: $npass passed, $nfail failed, $nskip skipped"
	[ "$nfail" -eq 0 ]
}

# the workload checks shared with run-qemu.sh and test_hv_run.sh
. tests/guest/checks.sh
