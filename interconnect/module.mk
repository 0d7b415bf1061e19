# interconnect: transports (tcp, rdma, loop, fabric), framing, connection authentication.
#
# Sources are listed by name but picked up only once they exist, so the tree builds while they are written.
LIBS_ALL += ic

# --- core and tcp: registry, frame codec, handshake/MAC, address parsing, tcp transport
ic_SRCS := $(wildcard interconnect/transport.c interconnect/frame.c interconnect/auth.c interconnect/addr.c \
	interconnect/conn.c interconnect/tcp.c)

# --- loop, fabric, rdma
ic_SRCS += $(wildcard interconnect/loop.c interconnect/fabric.c interconnect/endpoint.c)
ifeq ($(HAVE_RDMA),1)
ic_SRCS += $(wildcard interconnect/rdma.c)
else
ic_SRCS += $(wildcard interconnect/rdma_stub.c)
endif

# Control-plane messages (handshake, close) are protobuf-c.
IC_PROTO := interconnect/ic.proto
ifneq ($(wildcard $(IC_PROTO)),)
GEN_HDRS += $(BUILD)/gen/interconnect/ic.pb-c.h
ic_SRCS += $(BUILD)/gen/interconnect/ic.pb-c.c
$(BUILD)/gen/interconnect/ic.pb-c.c $(BUILD)/gen/interconnect/ic.pb-c.h: $(IC_PROTO) | $(DEPS_STAMP)
	@mkdir -p $(BUILD)/gen
	@$(if $(Q),echo "  PROTOC  $<")
	$(Q)protoc-c --c_out=$(BUILD)/gen $<
endif

IC_LDLIBS := $(PROTOBUF_LIBS) $(CRYPTO_LIBS) $(URCU_LIBS) $(RDMA_LIBS)

# --- tests and benchmarks (one cmocka program per module), each added once its source exists
# Example:
#   TESTS += test_frame
#   test_frame_PATH := tests/test_frame
#   test_frame_SRCS := tests/unit/test_frame.c
#   test_frame_DEPLIBS := ic util
#   test_frame_LDLIBS := $(CMOCKA_LIBS) $(IC_LDLIBS)

# --- the endpoint (subscribers on one transport)
TESTS += test_endpoint
test_endpoint_PATH := tests/test_endpoint
test_endpoint_SRCS := tests/unit/test_endpoint.c
test_endpoint_DEPLIBS := ic util
test_endpoint_LDLIBS := $(CMOCKA_LIBS) $(IC_LDLIBS)

# --- core and tcp: tests, MAC benchmark, frame fuzzer
TESTS += test_frame
test_frame_PATH := tests/test_frame
test_frame_SRCS := tests/unit/test_frame.c
test_frame_DEPLIBS := ic util
test_frame_LDLIBS := $(CMOCKA_LIBS) $(IC_LDLIBS)
ifneq ($(wildcard tests/unit/test_tcp.c),)
TESTS += test_tcp
test_tcp_PATH := tests/test_tcp
test_tcp_SRCS := tests/unit/test_tcp.c
test_tcp_DEPLIBS := ic util
test_tcp_LDLIBS := $(CMOCKA_LIBS) $(IC_LDLIBS)
endif
BENCHES += bench_mac
bench_mac_PATH := tests/bench_mac
bench_mac_SRCS := tests/bench/bench_mac.c
bench_mac_DEPLIBS := ic util
bench_mac_LDLIBS := $(IC_LDLIBS)
ifneq ($(wildcard tests/fuzz/fuzz_frame.c),)
FUZZERS += fuzz_frame
fuzz_frame_FUZZ_SRCS := tests/fuzz/fuzz_frame.c interconnect/frame.c interconnect/auth.c interconnect/transport.c util/log.c \
	$(BUILD)/gen/interconnect/ic.pb-c.c
fuzz_frame_FUZZ_LDLIBS := $(PROTOBUF_LIBS) $(CRYPTO_LIBS)
endif

# --- loop, fabric, rdma: tests and benchmark
ifneq ($(wildcard tests/unit/test_loop.c),)
TESTS += test_loop
test_loop_PATH := tests/test_loop
test_loop_SRCS := tests/unit/test_loop.c
test_loop_DEPLIBS := ic util
test_loop_LDLIBS := $(CMOCKA_LIBS) $(IC_LDLIBS)
endif
ifneq ($(wildcard tests/unit/test_fabric.c),)
TESTS += test_fabric
test_fabric_PATH := tests/test_fabric
test_fabric_SRCS := tests/unit/test_fabric.c
test_fabric_DEPLIBS := ic util
test_fabric_LDLIBS := $(CMOCKA_LIBS) $(IC_LDLIBS)
endif
ifneq ($(wildcard tests/unit/test_rdma.c),)
TESTS += test_rdma
test_rdma_PATH := tests/test_rdma
test_rdma_SRCS := tests/unit/test_rdma.c
test_rdma_DEPLIBS := ic util
test_rdma_LDLIBS := $(CMOCKA_LIBS) $(IC_LDLIBS)
# the test includes rdma.c (to drive its input checks) when RDMA is built, else checks the stub: it reads
# RACKVM_HAVE_RDMA from config.h, so a change of configuration rebuilds it (and libic, whose sources change)
$(BUILD)/tests/unit/test_rdma.o: $(CONFIG_H)
$(BUILD)/libic.a: $(CONFIG_H)
endif
ifneq ($(wildcard tests/bench/bench_ic.c),)
BENCHES += bench_ic
bench_ic_PATH := tests/bench_ic
bench_ic_SRCS := tests/bench/bench_ic.c
bench_ic_DEPLIBS := ic util
bench_ic_LDLIBS := $(IC_LDLIBS)
endif
