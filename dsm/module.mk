# dsm: coherence protocol engine (pure), userfaultfd backend, region API.
LIBS_ALL += dsm

# --- protocol engine (pure: no I/O, threads or clock)
dsm_SRCS := $(wildcard dsm/protocol.c)

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

DSM_LDLIBS := $(IC_LDLIBS)

# --- tests, benchmarks, model: see interconnect/module.mk for the template variables.
