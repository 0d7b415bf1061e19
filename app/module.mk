# app: the programs' entry points, above every library — the rackvm program (command table in rackvm.c; run,
# node and sim in run.c, node.c, sim.c; their option parsing in opts.c), later the controller, agent and rackctl.
# Nothing outside app/ includes anything from it: each program here is a composition root (DESIGN.md).
PROGRAMS += rackvm
rackvm_PATH := rackvm
rackvm_SRCS := $(sort $(wildcard app/*.c))
rackvm_DEPLIBS := cluster $(HV_DEPLIBS)
rackvm_LDLIBS = $(HV_LDLIBS)
