#!/usr/bin/env bash
# Spin model check of the DSM coherence protocol (dsm/model/dsm.pml; docs/dsm-model.md).
#
#   dsm/model/check.sh [quick|full]      (BUILD=dir: work files go to $BUILD/model; default build)
#
# quick (make check, make model): one exhaustive safety + liveness run for 3 nodes x 2 pages on FIFO links, and
#   the deliberately broken variants, which spin must FAIL.
# full (make model-full): bigger configurations (more accesses, 4 nodes, loss + retransmission, in-link
#   reordering, liveness under weak fairness). Minutes and GBs: not for make check.
#
# Exit 0 when every run gives the expected verdict; non-zero with the counterexample (message sequence of the
# trail) of the first unexpected verdict. 77 (skip) when spin or a C compiler is missing.
set -u
mode="${1:-quick}"
here="$(cd "$(dirname "$0")" && pwd)"
work="${BUILD:-build}/model"
cc="${CC:-gcc}"

if ! command -v spin >/dev/null 2>&1; then
	echo "SKIP: spin is not installed (scripts/deps.sh installs it)"
	exit 77
fi
if ! command -v "$cc" >/dev/null 2>&1; then
	echo "SKIP: no C compiler ($cc) to build spin's verifier"
	exit 77
fi
mkdir -p "$work" || exit 1
cp "$here/dsm.pml" "$work/dsm.pml" || exit 1
cd "$work" || exit 1

failures=0

# show_trail DEFINES: the message sequence of the last counterexample
show_trail() {
	echo "---- counterexample (spin -t $1): last 60 steps"
	# shellcheck disable=SC2086
	spin $1 -t dsm.pml 2>&1 | grep -E 'MSC:|START OF CYCLE|assertion|violated' | sed 's/^ *//; s/^MSC: //' | tail -n 60
	echo "----"
}

# run NAME EXPECT DEFINES CFLAGS PANFLAGS [PATTERN]
#   EXPECT pass: no error. EXPECT fail: spin must report an error, whose line matches PATTERN.
run() {
	local name="$1" expect="$2" defs="$3" cflags="$4" panflags="$5" pattern="${6:-}"
	local log="pan-$name.log" start=$SECONDS
	rm -f dsm.pml.trail
	# shellcheck disable=SC2086
	if ! spin $defs -a dsm.pml >"spin-$name.log" 2>&1; then
		echo "FAIL $name: spin could not generate the verifier"; cat "spin-$name.log"; failures=$((failures + 1))
		return
	fi
	# shellcheck disable=SC2086
	if ! "$cc" -O2 -w $cflags -o "pan-$name" pan.c >"cc-$name.log" 2>&1; then
		echo "FAIL $name: the verifier does not compile"; tail -n 20 "cc-$name.log"; failures=$((failures + 1))
		return
	fi
	# shellcheck disable=SC2086
	/usr/bin/env time -f '%e s, %M KB max RSS' "./pan-$name" $panflags >"$log" 2>&1
	local errors stored trans mem took
	errors=$(sed -n 's/.*errors: \([0-9]\+\).*/\1/p' "$log" | tail -n 1)
	stored=$(sed -n 's/^ *\([0-9.e+]\+\) states, stored.*/\1/p' "$log" | tail -n 1)
	trans=$(sed -n 's/^ *\([0-9.e+]\+\) transitions.*/\1/p' "$log" | tail -n 1)
	mem=$(sed -n 's/^ *\([0-9.]\+\).*total actual memory usage.*/\1/p' "$log" | tail -n 1)
	took=$(tail -n 1 "$log")
	local summary="${stored:-?} states, ${trans:-?} transitions, ${mem:-?} MB, $took"
	if grep -q 'max search depth too small\|Search not completed' "$log" && [ "$expect" = pass ]; then
		echo "FAIL $name: search incomplete ($summary)"; grep -E 'error|depth' "$log"; failures=$((failures + 1))
		return
	fi
	if [ "$expect" = pass ]; then
		if [ "${errors:-1}" = 0 ]; then
			echo "ok   $name: no violation ($summary)"
		else
			echo "FAIL $name: $(grep -m1 -E '^pan:[0-9]+:|^pan: ' "$log")"
			echo "     ($summary)"
			show_trail "$defs"
			failures=$((failures + 1))
		fi
	else
		local what
		what=$(grep -m1 -E '^pan:[0-9]+:' "$log")
		if [ "${errors:-0}" != 0 ] && echo "$what" | grep -qE "$pattern"; then
			echo "ok   $name: spin finds the planted bug: ${what#pan:1: } ($((SECONDS - start)) s)"
		else
			echo "FAIL $name: the broken variant was NOT caught as expected (wanted /$pattern/, got: ${what:-no error})"
			echo "     ($summary)"
			failures=$((failures + 1))
		fi
	fi
}

SAFE="-DSAFETY -DNOCLAIM -DCOLLAPSE"
LIVE="-DCOLLAPSE"
M="-m200000"
# 3 nodes x 2 pages (node 0 homes page 0, node 1 page 1: the engine's default map); nodes 0 and 1 make two
# accesses each, node 2 one (any page, read or write).
BASE="-DN=3 -DACC=1 -DACC0=2 -DACC1=2"

case "$mode" in
quick)
	# one -a run checks every assertion (SWMR, data value, deadlock, impossible drops) and the LTL property
	run fifo-safety-liveness pass "$BASE" "$LIVE -O0" "$M -a"
	# -O0: gcc -O2 on the ~4 MB generated verifier takes minutes on a loaded machine, more than the search
	run bug-skip-inv fail "$BASE -DBUG_SKIP_INV" "$SAFE -O0" "$M" 't_nrw<=1'
	run bug-no-store fail "$BASE -DBUG_NO_STORE" "$SAFE -O0" "$M" 'mem\[.*\]==last\['
	run bug-no-kick fail "$BASE -DBUG_NO_KICK" "$SAFE -O0" "$M" 'th_st\[0\]==0'
	;;
full)
	run full-safety-fifo-222 pass "-DN=3 -DACC=2" "$SAFE" "$M"
	run full-safety-dup-211 pass "-DN=3 -DACC=1 -DACC0=2 -DRETRIES=1" "$SAFE" "$M"
	run full-safety-dup-221 pass "$BASE -DRETRIES=2" "$SAFE" "$M"
	run full-safety-reorder-221 pass "$BASE -DREORDER=2" "$SAFE" "$M"
	run full-safety-loss-211 pass "-DN=3 -DACC=1 -DACC0=2 -DLOSS=1 -DTICK" "$SAFE" "$M"
	run full-liveness-loss-211 pass "-DN=3 -DACC=1 -DACC0=2 -DLOSS=1 -DTICK" "$LIVE -DNFAIR=4" "$M -a -f"
	run full-liveness-fair-221 pass "$BASE" "$LIVE -DNFAIR=4" "$M -a -f"
	run full-safety-4nodes pass "-DN=4 -DACC=1" "$SAFE" "$M"
	run full-bug-no-kick-ltl fail "$BASE -DBUG_NO_KICK" "$LIVE" "$M -a" 'acceptance cycle|assertion violated'
	run full-short-lease fail "$BASE -DSHORT_LEASE" "$LIVE" "$M -a" 'acceptance cycle'
	;;
*)
	echo "usage: $0 [quick|full]" >&2
	exit 2
	;;
esac

if [ $failures -ne 0 ]; then
	echo "model: $failures run(s) with an unexpected verdict (work files in $work)"
	exit 1
fi
echo "model: every run gave the expected verdict"
exit 0
