# rackvm — top-level build.
#
#   make            build libraries, tools and tests            (BUILD=build)
#   make check      all fast tests (unit, model, multi-process)
#   make bench      benchmarks, each printing a ratio against a baseline measured in the same run
#   make fuzz       libFuzzer targets, bounded time (FUZZ_SECONDS, default 60 per target)
#   make soak       long randomized and multi-process runs
#   make model      spin model check of the DSM protocol
#   make install    PREFIX=/usr/local DESTDIR=
#   make clean
#   make demo       one guest across 4 simulated nodes x 2 vCPUs (rackvm sim; sim/demo.sh)
#
# Options: WERROR=0 (warnings are not errors), SANITIZER=address,undefined | thread,
#          BUILD=dir (object directory; defaults per sanitizer so builds do not mix), V=1 (echo commands).
#
# Each module adds itself through a module.mk fragment (see util/module.mk for the variables).

comma := ,
SANITIZER ?=
BUILD ?= build$(if $(SANITIZER),-$(subst $(comma),-,$(SANITIZER)))
PREFIX ?= /usr/local
DESTDIR ?=
WERROR ?= 1
CC ?= gcc
CLANG ?= clang
FUZZ_SECONDS ?= 60

ifeq ($(V),1)
Q :=
else
Q := @
endif

WARNINGS := -Wall -Wextra -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes -Wshadow -Wundef \
	-Wno-unused-parameter
ifeq ($(WERROR),1)
WARNINGS += -Werror
endif

CPPFLAGS += -D_GNU_SOURCE -I. -I$(BUILD)/gen
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -pthread -fno-strict-aliasing $(WARNINGS) -MMD -MP
LDFLAGS += -pthread

ifneq ($(SANITIZER),)
CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZER)
endif

# Optional RDMA: built when pkg-config finds both libraries, otherwise a stub that fails at run time.
HAVE_RDMA := $(shell pkg-config --exists libibverbs librdmacm 2>/dev/null && echo 1 || echo 0)
ifeq ($(HAVE_RDMA),1)
RDMA_LIBS := $(shell pkg-config --libs libibverbs librdmacm)
else
RDMA_LIBS :=
endif

# Libraries every program may need; tests pick what they link through *_LIBS.
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)
URCU_LIBS := -lurcu-cds -lurcu -lurcu-common
PROTOBUF_LIBS := $(shell pkg-config --libs libprotobuf-c 2>/dev/null || echo -lprotobuf-c)
CRYPTO_LIBS := $(shell pkg-config --libs libcrypto 2>/dev/null || echo -lcrypto)

# Filled in by module.mk fragments.
LIBS_ALL :=        # static libraries, in link order (higher layers first)
PROGRAMS :=        # installed binaries
TESTS :=           # unit/integration test programs run by make check (each prints cmocka results)
CHECK_SCRIPTS :=   # extra check steps (shell), run by make check after the test programs
BENCHES :=         # benchmark programs run by make bench
BENCH_SCRIPTS :=   # benchmark scripts (bash, BUILD set) run by make bench after the programs
FUZZERS :=         # libFuzzer targets (built with clang) run by make fuzz
SOAK_SCRIPTS :=    # long runs for make soak
GEN_HDRS :=        # generated headers that objects depend on

.DEFAULT_GOAL := all

include util/module.mk
include interconnect/module.mk
include dsm/module.mk
include hypervisor/module.mk
include cluster/module.mk
include tests/module.mk
-include sim/guest/module.mk

# ---- generic rules -------------------------------------------------------------------------

DEPS_STAMP := $(BUILD)/.deps-ok
$(DEPS_STAMP): scripts/deps.sh
	$(Q)mkdir -p $(@D)
	$(Q)scripts/deps.sh
	$(Q)touch $@

.PHONY: deps
deps:
	$(Q)scripts/deps.sh

$(BUILD)/%.o: %.c $(GEN_HDRS) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# lib_template(name): lib<name>.a from $(name_SRCS)
define lib_template
$(1)_OBJS := $$(patsubst %.c,$(BUILD)/%.o,$$($(1)_SRCS))
$(BUILD)/lib$(1).a: $$($(1)_OBJS)
	@mkdir -p $$(@D)
	@$$(if $$(Q),echo "  AR      $$@")
	$$(Q)rm -f $$@ && ar rcs $$@ $$^
ALL_OBJS += $$($(1)_OBJS)
endef

# prog_template(name): $(BUILD)/<path> from $(name_SRCS), linked with $(name_DEPLIBS) (our libs) and $(name_LDLIBS)
define prog_template
$(1)_OBJS := $$(patsubst %.c,$(BUILD)/%.o,$$($(1)_SRCS))
$(1)_BIN := $(BUILD)/$$($(1)_PATH)
$$($(1)_BIN): $$($(1)_OBJS) $$(patsubst %,$(BUILD)/lib%.a,$$($(1)_DEPLIBS))
	@mkdir -p $$(@D)
	@$$(if $$(Q),echo "  LD      $$@")
	$$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$($(1)_OBJS) -Wl,--whole-archive $$(patsubst %,$(BUILD)/lib%.a,$$($(1)_DEPLIBS)) -Wl,--no-whole-archive $$($(1)_LDLIBS) $$($(1)_LDFLAGS)
ALL_OBJS += $$($(1)_OBJS)
ALL_BINS += $$($(1)_BIN)
endef

ALL_OBJS :=
ALL_BINS :=
$(foreach l,$(LIBS_ALL),$(eval $(call lib_template,$(l))))
$(foreach p,$(PROGRAMS) $(TESTS) $(BENCHES),$(eval $(call prog_template,$(p))))

.PHONY: all check bench fuzz soak model install clean demo
demo: $(DEPS_STAMP) all
	$(Q)BUILD=$(BUILD) bash sim/demo.sh

all: $(patsubst %,$(BUILD)/lib%.a,$(LIBS_ALL)) $(ALL_BINS)

check: all
	$(Q)BUILD=$(BUILD) tests/run-check.sh $(foreach t,$(TESTS),$($(t)_BIN)) -- $(CHECK_SCRIPTS)

bench: all
	$(Q)set -e; for b in $(foreach t,$(BENCHES),$($(t)_BIN)); do echo "== $$b"; $$b; done; \
	for s in $(BENCH_SCRIPTS); do echo "== $$s"; BUILD=$(BUILD) bash $$s; done

soak: all
	$(Q)set -e; for s in $(SOAK_SCRIPTS); do echo "== $$s"; BUILD=$(BUILD) bash $$s; done

# fuzz_template(name): $(BUILD)/fuzz/<name> built by clang with libFuzzer from $(name_FUZZ_SRCS)
define fuzz_template
$(BUILD)/fuzz/$(1): $$($(1)_FUZZ_SRCS) $(GEN_HDRS) | $(DEPS_STAMP)
	@mkdir -p $$(@D)
	@$$(if $$(Q),echo "  FUZZ    $$@")
	$$(Q)$(CLANG) $(CPPFLAGS) -std=gnu11 -g -O1 -pthread -fsanitize=fuzzer,address,undefined \
		-o $$@ $$($(1)_FUZZ_SRCS) $$($(1)_FUZZ_LDLIBS)
endef
$(foreach f,$(FUZZERS),$(eval $(call fuzz_template,$(f))))

fuzz: $(patsubst %,$(BUILD)/fuzz/%,$(FUZZERS))
	$(Q)set -e; for f in $(FUZZERS); do \
		mkdir -p $(BUILD)/fuzz/corpus-$$f; \
		echo "== fuzz $$f for $(FUZZ_SECONDS)s"; \
		$(BUILD)/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			$(BUILD)/fuzz/corpus-$$f tests/fuzz/corpus/$$f; \
	done

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	$(Q)for p in $(foreach p,$(PROGRAMS),$($(p)_BIN)); do install -m 0755 $$p $(DESTDIR)$(PREFIX)/bin/; done

clean:
	rm -rf build build-*

-include $(ALL_OBJS:.o=.d)
