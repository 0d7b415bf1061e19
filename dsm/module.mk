# dsm: coherence protocol engine (pure), userfaultfd backend, region API.
LIBS_ALL += dsm

# --- protocol engine (pure: no I/O, threads or clock)
dsm_SRCS := $(wildcard dsm/protocol.c dsm/protocol_cache.c dsm/protocol_home.c)

# engine tests: exact actions of hand-driven engines; randomized multi-engine run with invariant checks
TESTS += $(if $(wildcard tests/unit/test_dsm_engine.c),test_dsm_engine)
test_dsm_engine_PATH := tests/test_dsm_engine
test_dsm_engine_SRCS := tests/unit/test_dsm_engine.c
test_dsm_engine_DEPLIBS := dsm util
test_dsm_engine_LDLIBS := $(CMOCKA_LIBS)
TESTS += $(if $(wildcard tests/unit/test_dsm_random.c),test_dsm_random)
test_dsm_random_PATH := tests/test_dsm_random
test_dsm_random_SRCS := tests/unit/test_dsm_random.c
test_dsm_random_DEPLIBS := dsm util
test_dsm_random_LDLIBS := $(CMOCKA_LIBS)
SOAK_SCRIPTS += $(wildcard tests/soak/dsm_random.sh)

# --- userfaultfd backend and region API
# A library of its own (libdsmrt: uffd + region, needs ic and threads) so the pure engine in libdsm links into
# the model, simulator and engine tests without any I/O. Programs using regions link: dsmrt dsm ic util.
LIBS_ALL += dsmrt
dsmrt_SRCS := $(wildcard dsm/uffd.c $(if $(wildcard dsm/protocol.c),dsm/region.c))

TESTS += $(if $(wildcard tests/unit/test_uffd.c),test_uffd)
test_uffd_PATH := tests/test_uffd
test_uffd_SRCS := tests/unit/test_uffd.c dsm/uffd.c
test_uffd_DEPLIBS := util
test_uffd_LDLIBS := $(CMOCKA_LIBS)

# Region programs exist once the engine does.
ifneq ($(wildcard dsm/protocol.c),)
TESTS += test_region
test_region_PATH := tests/test_region
test_region_SRCS := tests/unit/test_region.c
test_region_DEPLIBS := dsmrt dsm ic util
test_region_LDLIBS := $(CMOCKA_LIBS) $(IC_LDLIBS)

TESTS += $(if $(wildcard tests/integration/test_dsm_cluster.c),test_dsm_cluster)
test_dsm_cluster_PATH := tests/test_dsm_cluster
test_dsm_cluster_SRCS := tests/integration/test_dsm_cluster.c dsm/uffd.c
test_dsm_cluster_DEPLIBS := util
test_dsm_cluster_LDLIBS := $(CMOCKA_LIBS)
# The node process the cluster test launches: built with the tests, not installed (so not in PROGRAMS, and the
# generic template is not defined yet here: an explicit rule).
DSM_NODE_LIBS = $(patsubst %,$(BUILD)/lib%.a,dsmrt dsm ic util)
$(BUILD)/tests/dsm_node: $(BUILD)/tests/integration/dsm_node.o $(DSM_NODE_LIBS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< -Wl,--whole-archive $(DSM_NODE_LIBS) -Wl,--no-whole-archive $(IC_LDLIBS)
$(BUILD)/tests/test_dsm_cluster: $(BUILD)/tests/dsm_node
SOAK_SCRIPTS += tests/integration/dsm_soak.sh
-include $(BUILD)/tests/integration/dsm_node.d

BENCHES += $(if $(wildcard tests/bench/bench_dsm.c),bench_dsm)
bench_dsm_PATH := bench/bench_dsm
bench_dsm_SRCS := tests/bench/bench_dsm.c
bench_dsm_DEPLIBS := dsmrt dsm ic util
bench_dsm_LDLIBS := $(IC_LDLIBS)
endif

DSM_LDLIBS := $(IC_LDLIBS)

# --- tests, benchmarks, model: see interconnect/module.mk for the template variables.

# --- model: spin model of the protocol engine (dsm/model/dsm.pml; docs/dsm-model.md). `make model` runs the
# quick set (also a CHECK_SCRIPTS step of make check, ~2-3 min on 2 shared cores); `make model-full` the big one.
CHECK_SCRIPTS += dsm/model/check.sh
SOAK_SCRIPTS += dsm/model/soak.sh
.PHONY: model-full
model:
	$(Q)BUILD=$(BUILD) bash dsm/model/check.sh quick
model-full:
	$(Q)BUILD=$(BUILD) bash dsm/model/check.sh full
