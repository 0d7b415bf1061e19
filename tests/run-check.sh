#!/usr/bin/env bash
# Runs every test program given (cmocka), then every check script after "--", and prints one summary line:
#   check: N passed, N failed, N skipped
# counting cmocka test cases (and each script as one case). Exit status is non-zero if anything failed.
set -u
passed=0 failed=0 skipped=0
failed_names=()
log_dir="${BUILD:-build}/test-logs"
mkdir -p "$log_dir"

run_one() {
	local name="$1"; shift
	local log="$log_dir/$(basename "$name").log"
	local start=$SECONDS rc
	"$@" >"$log" 2>&1
	rc=$?
	local p f s
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]\+\) test(s)\./\1/p' "$log" | awk '{s+=$1} END {print s+0}')
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]\+\) test(s), listed below:/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
	s=$(sed -n 's/^\[  SKIPPED \] \([0-9]\+\) test(s), listed below:/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
	if ! grep -q '^\[==========\]' "$log"; then
		# not a cmocka program: the exit status is the verdict (77 = skipped, as automake)
		p=0 f=0 s=0
		case $rc in
			0) p=1 ;;
			77) s=1 ;;
			*) f=1 ;;
		esac
	elif [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1   # crashed or exited non-zero without reporting a failed case
	fi
	passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
	local verdict=ok
	[ "$f" -gt 0 ] && verdict=FAIL && failed_names+=("$name")
	printf '%-40s %4s  (%d passed, %d failed, %d skipped, %ds)\n' "$(basename "$name")" "$verdict" "$p" "$f" "$s" \
		$((SECONDS - start))
	grep -h '^SKIP:' "$log" | sed 's/^/    /' | sort -u
	if [ "$f" -gt 0 ]; then
		echo "---- last lines of $log"
		tail -n 40 "$log"
		echo "----"
	fi
}

scripts=0
for arg in "$@"; do
	if [ "$arg" = "--" ]; then scripts=1; continue; fi
	if [ $scripts -eq 0 ]; then
		run_one "$arg" "$arg"
	else
		run_one "$arg" bash "$arg"
	fi
done

if [ ${#failed_names[@]} -gt 0 ]; then
	echo "failed: ${failed_names[*]}"
fi
echo "check: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
