#!/usr/bin/env bash
# Soak of the dsm protocol engine: the randomized multi-engine test with far more steps and fresh seeds.
#   DSM_SOAK_STEPS   total steps (default 20M, split over reliable and lossy runs of 100k steps each)
#   DSM_RANDOM_BASE  first seed (default: from the clock; printed so a failure replays with DSM_RANDOM_SEED)
set -eu
bin="${BUILD:-build}/tests/test_dsm_random"
[ -x "$bin" ] || { echo "SKIP: $bin not built (make BUILD=${BUILD:-build})"; exit 77; }
total="${DSM_SOAK_STEPS:-20000000}"
steps=100000
runs=$(( total / steps / 2 ))
[ "$runs" -ge 1 ] || runs=1
base="${DSM_RANDOM_BASE:-$(date +%s)}"
echo "dsm_random soak: base seed $base, $runs reliable + $runs lossy runs of $steps steps"
DSM_RANDOM_BASE="$base" DSM_RANDOM_RUNS="$runs" DSM_RANDOM_STEPS="$steps" "$bin"
