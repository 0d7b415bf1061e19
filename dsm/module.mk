# dsm: coherence protocol engine (pure), userfaultfd backend, region API.
LIBS_ALL += dsm

# --- protocol engine (pure: no I/O, threads or clock)
dsm_SRCS := $(wildcard dsm/protocol.c)

# --- userfaultfd backend and region API
dsm_SRCS += $(wildcard dsm/uffd.c dsm/region.c)

TESTS += $(if $(wildcard tests/unit/test_uffd.c),test_uffd)
test_uffd_PATH := tests/test_uffd
test_uffd_SRCS := tests/unit/test_uffd.c
test_uffd_DEPLIBS := dsm util
test_uffd_LDLIBS := $(CMOCKA_LIBS)

DSM_LDLIBS := $(IC_LDLIBS)

# --- tests, benchmarks, model: see interconnect/module.mk for the template variables.
