#!/usr/bin/env bash
# make soak (cluster part): bigger runs of the SDK workloads across simulated nodes than test_sim.sh affords —
# 4 nodes x 2 vCPUs, long litmus, 32 MiB memtest, bigger compute, many IPIs, and the same over a lossy fabric.
set -u
cd "$(dirname "$0")/../.."
SIM_TIMEOUT=${SIM_TIMEOUT:-1800}   # per run (sim_lib.sh keeps a value set before it is sourced)
. tests/integration/sim_lib.sh
SIM_LOG_DIR=$BUILD/test-logs/sim-soak
mkdir -p "$SIM_LOG_DIR"
sim_preflight
T0=$SECONDS
LIT=${SOAK_LITMUS:-1000} MT=${SOAK_MEMTEST:-32M} CN=${SOAK_CN:-200000} CR=${SOAK_CR:-32} IPI=${SOAK_IPI:-500}
CEXP=$("$GUEST_DIR/compute-ref" $CN $CR)

IPI_ITERS=$IPI
case $MT in *M) MT_BYTES=$((${MT%M} << 20)) ;; *G) MT_BYTES=$((${MT%G} << 30)) ;; *) MT_BYTES=$MT ;; esac

for fab in "" "--latency 100 --loss 0.05 --seed 3"; do
	tag=${fab:+-fabric}
	# shellcheck disable=SC2086
	sim_run soak-litmus$tag litmus "iters=$LIT" --nodes 4 --vcpus 8 --mem 256M $fab
	verdict "litmus 4x2 iters=$LIT${tag}" 0 check_litmus 8 $LIT
	# shellcheck disable=SC2086
	sim_run soak-memtest$tag memtest "max=$MT" --nodes 4 --vcpus 8 --mem 256M $fab
	verdict "memtest 4x2 max=$MT${tag}" 0 check_memtest 8 =$MT_BYTES
	# shellcheck disable=SC2086
	sim_run soak-compute$tag compute "n=$CN rounds=$CR expect=$CEXP" --nodes 4 --vcpus 8 --mem 256M $fab
	verdict "compute 4x2 n=$CN${tag}" 0 check_compute 8
	# shellcheck disable=SC2086
	sim_run soak-ipi$tag ipi "iters=$IPI" --nodes 4 --vcpus 8 --mem 256M $fab
	verdict "ipi 4x2 iters=$IPI${tag}" 0 check_ipi 8 "x?2?apic"
done
echo "sim_soak: $((SECONDS - T0)) s"
sim_summary
