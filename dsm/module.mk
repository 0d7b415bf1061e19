# dsm: coherence protocol engine (pure), userfaultfd backend, region API.
LIBS_ALL += dsm

# --- protocol engine (pure: no I/O, threads or clock)
dsm_SRCS := $(wildcard dsm/protocol.c)

# --- userfaultfd backend and region API
dsm_SRCS += $(wildcard dsm/uffd.c dsm/region.c)

DSM_LDLIBS := $(IC_LDLIBS)

# --- tests, benchmarks, model: see interconnect/module.mk for the template variables.
