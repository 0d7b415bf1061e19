# dsm: coherence protocol engine, userfaultfd backend, region API.
LIBS_ALL += dsm
dsm_SRCS :=
