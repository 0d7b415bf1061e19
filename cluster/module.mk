# cluster: placement, the cluster link (cross-node interrupts and I/O forwarding, exit, start barrier, clock offset)
# and its messages. `rackvm node` and `rackvm sim`, which compose it, live in app/.
LIBS_ALL += cluster
cluster_SRCS := $(sort $(wildcard cluster/*.c))

# ---- tests ----
# cluster/msg.c, link.c, placement.c: codec, link (fake in-process network), placement. Sources named directly so
# the test does not need libhv (node.c in libcluster calls the VM).
TESTS += test_cluster
test_cluster_PATH := tests/test_cluster
test_cluster_SRCS := tests/unit/test_cluster.c cluster/msg.c cluster/link.c cluster/placement.c
test_cluster_DEPLIBS := util
test_cluster_LDLIBS := $(CMOCKA_LIBS)
# `rackvm sim` end to end: every SDK workload over 2-4 nodes, fabric, netns, a killed node (docs/cluster.md).
CHECK_SCRIPTS += tests/integration/test_sim.sh
BENCH_SCRIPTS += tests/bench/bench_cluster.sh
SOAK_SCRIPTS += tests/integration/sim_soak.sh
FUZZERS += fuzz_cluster_msg
fuzz_cluster_msg_FUZZ_SRCS := tests/fuzz/fuzz_cluster_msg.c cluster/msg.c
