#!/usr/bin/env bash
# make soak: the multi-process DSM proof with 10x the iterations of make check (litmus 3000 per test,
# 30000 counter increments per thread, 10x memtest pages), over 2, 3 and 4 tcp nodes, plus the kill test.
set -eu
BUILD=${BUILD:-build}
DSM_CLUSTER_SCALE=${DSM_CLUSTER_SCALE:-10} BUILD="$BUILD" "$BUILD/tests/test_dsm_cluster"
