# Case bookkeeping for the scripts that boot guests and judge what they print (tests/guest/run-qemu.sh through
# lib.sh, tests/integration/test_hv_run.sh, and test_sim.sh / sim_soak.sh through sim_lib.sh). Each script's runner
# sets, for its last run: GUEST_LOG (console), GUEST_ERR (stderr; may be unset), GUEST_CODE (the guest's
# isa-debug-exit code, or why there is none: timeout, signal, noexit, status:N) and GUEST_SECS.
# A script may redefine verdict_err_tail to show its stderr differently on a failure.

npass=0
nfail=0
nskip=0

# expect_line <regex>: the last console log has a line matching the extended regex.
expect_line() {
	if ! grep -Eq -- "$1" "$GUEST_LOG"; then
		echo "    missing console line /$1/"
		return 1
	fi
}

# expect_err <regex>: likewise for the last run's stderr.
expect_err() {
	if ! grep -Eq -- "$1" "$GUEST_ERR"; then
		echo "    missing stderr line /$1/"
		return 1
	fi
}

verdict_err_tail() {
	tail -n 5 "$GUEST_ERR" 2>/dev/null | sed 's/^/    ! /'
}

pass() {
	npass=$((npass + 1))
	printf 'PASS %-44s %6ss\n' "$1" "${GUEST_SECS:-0}"
}

fail() {
	nfail=$((nfail + 1))
	printf 'FAIL %-44s %6ss  (logs %s%s)\n' "$1" "${GUEST_SECS:-0}" "$GUEST_LOG" "${GUEST_ERR:+, $GUEST_ERR}"
	tail -n 15 "$GUEST_LOG" 2>/dev/null | sed 's/^/    | /'
	[ -n "${GUEST_ERR:-}" ] && verdict_err_tail
	return 0
}

# skip_case <case-name> <reason>
skip_case() {
	nskip=$((nskip + 1))
	echo "SKIP: $1: $2"
}

# verdict <case-name> <expected-guest-code> <check-function> [args...]: the run ended with that code and the check
# passes.
verdict() {
	local name=$1 want=$2 fn=$3
	shift 3
	local ok=1
	if [ "$GUEST_CODE" != "$want" ]; then
		echo "    guest exit $GUEST_CODE, expected $want"
		ok=0
	fi
	"$fn" "$@" || ok=0
	if [ $ok -eq 1 ]; then pass "$name"; else fail "$name"; fi
}
