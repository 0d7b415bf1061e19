# cluster: placement, cross-node interrupts and I/O forwarding, time, `rackvm node`; sim launcher (`rackvm sim`).
LIBS_ALL += cluster
cluster_SRCS := $(sort $(filter-out cluster/rackvm.c,$(wildcard cluster/*.c)) $(wildcard sim/*.c))

# The rackvm program: composition root (DESIGN.md), subcommands run / node / sim.
PROGRAMS += $(if $(wildcard hypervisor/cmd_run.c),rackvm)
rackvm_PATH := rackvm
rackvm_SRCS := cluster/rackvm.c
rackvm_DEPLIBS := cluster $(HV_DEPLIBS)
rackvm_LDLIBS = $(HV_LDLIBS)

# ---- tests ----
