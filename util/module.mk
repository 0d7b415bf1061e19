# util: logging, clocks, PRNG, histograms — used by every layer.
#
# Variables a module.mk fragment may set (see the top-level Makefile):
#   LIBS_ALL += name          and name_SRCS := ...           -> $(BUILD)/libname.a
#   PROGRAMS/TESTS/BENCHES += name, with name_PATH (relative to $(BUILD)), name_SRCS,
#                             name_DEPLIBS (our libs, higher layers first), name_LDLIBS (system libs)
#   FUZZERS += name, with name_FUZZ_SRCS and name_FUZZ_LDLIBS; seed corpus in tests/fuzz/corpus/name/
#   CHECK_SCRIPTS / SOAK_SCRIPTS += path/to/script.sh   (run with BUILD in the environment)
LIBS_ALL += util
util_SRCS := util/log.c util/hist.c
