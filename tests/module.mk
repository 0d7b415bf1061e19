# tests: programs for modules that have no fragment of their own (util), and shared test helpers.
TESTS += test_util
test_util_PATH := tests/test_util
test_util_SRCS := tests/unit/test_util.c
test_util_DEPLIBS := util
test_util_LDLIBS := $(CMOCKA_LIBS)
CHECK_SCRIPTS += tests/integration/test_build_config.sh
