# hypervisor: the per-node VMM — accelerators (kvm, emu), buses and devices, local APIC and APIC bus, firmware
# tables (e820, ACPI, CPUID), loaders (multiboot, Linux), VM and vCPU state machines (`rackvm run` is app/run.c).
# Every .c under hypervisor/ goes into libhv; programs link it whole (devices and accelerators register
# themselves through constructors).
LIBS_ALL += hv
hv_SRCS := $(sort $(wildcard hypervisor/*.c hypervisor/emu/*.c))
HV_LDLIBS = $(IC_LDLIBS) -lrt
HV_DEPLIBS := hv dsmrt dsm ic util

# ---- tests: one program per area; each section is owned by the area's author ----

# --- apic tests
ifneq ($(wildcard tests/unit/test_lapic.c),)
TESTS += test_lapic
test_lapic_PATH := tests/test_lapic
test_lapic_SRCS := tests/unit/test_lapic.c hypervisor/lapic.c hypervisor/apicbus.c
test_lapic_DEPLIBS := util
test_lapic_LDLIBS := $(CMOCKA_LIBS)
endif

# --- device tests (bus, device table, UART, debug-exit, fw_cfg, PIT, RTC, PIC, legacy ports, IOAPIC)
ifneq ($(wildcard tests/unit/test_devices.c),)
TESTS += test_devices
test_devices_PATH := tests/test_devices
# linked with libhv whole, so the device table holds exactly what the VMM registers
test_devices_SRCS := tests/unit/test_devices.c
test_devices_DEPLIBS := $(HV_DEPLIBS)
test_devices_LDLIBS = $(CMOCKA_LIBS) $(HV_LDLIBS)
endif
# the devices end to end: a tiny guest under rackvm (emu) and qemu -M q35 must print the same lines (~10 s)
CHECK_SCRIPTS += tests/integration/test_hv_devices.sh
ifneq ($(wildcard tests/fuzz/fuzz_devices.c),)
FUZZERS += fuzz_devices
fuzz_devices_FUZZ_SRCS := tests/fuzz/fuzz_devices.c hypervisor/bus.c hypervisor/ioapic.c $(wildcard hypervisor/dev_*.c) \
	util/log.c
fuzz_devices_FUZZ_LDLIBS :=
endif

# --- firmware tests (owner: firmware — e820, ACPI, CPUID, multiboot and Linux loaders)
# The firmware sources are listed explicitly (not through libhv) so the test builds whatever state other files are in.
FW_SRCS := hypervisor/fw.c hypervisor/acpi.c hypervisor/cpuid.c hypervisor/load_multiboot.c hypervisor/load_linux.c
ifneq ($(wildcard tests/unit/test_fw.c),)
TESTS += test_fw
test_fw_PATH := tests/test_fw
test_fw_SRCS := tests/unit/test_fw.c $(FW_SRCS)
test_fw_DEPLIBS := util
test_fw_LDLIBS := $(CMOCKA_LIBS)
endif
ifneq ($(wildcard tests/fuzz/fuzz_fw.c),)
FUZZERS += fuzz_fw
fuzz_fw_FUZZ_SRCS := tests/fuzz/fuzz_fw.c $(FW_SRCS) util/log.c
fuzz_fw_FUZZ_LDLIBS :=
endif
# Debian kernel image check: fetches linux-image-cloud-amd64 once into $(BUILD)/cache, runs test_fw --linux-image.
ifneq ($(wildcard tests/unit/test_linux_image.sh),)
CHECK_SCRIPTS += tests/unit/test_linux_image.sh
endif

# --- vm tests
# test_vm: the VM and vCPU state machine driven by a scripted fake accelerator (accel_choose and fw_setup wrapped).
TESTS += test_vm
test_vm_PATH := tests/test_vm
test_vm_SRCS := tests/unit/test_vm.c
test_vm_DEPLIBS := $(HV_DEPLIBS)
test_vm_LDLIBS = $(CMOCKA_LIBS) $(HV_LDLIBS)
test_vm_LDFLAGS := -Wl,--wrap=accel_choose -Wl,--wrap=fw_setup -Wl,--wrap=fw_boot_release
# test_kvm: the kvm backend on tiny real-mode/long-mode guests; every case SKIPs without /dev/kvm.
TESTS += test_kvm
test_kvm_PATH := tests/test_kvm
test_kvm_SRCS := tests/unit/test_kvm.c
test_kvm_DEPLIBS := $(HV_DEPLIBS)
test_kvm_LDLIBS = $(CMOCKA_LIBS) $(HV_LDLIBS)
# rackvm run end to end: every guest workload on emu (and kvm when present), bad inputs, misbehaving guests.
CHECK_SCRIPTS += tests/integration/test_hv_run.sh

# --- emu system tests (owner: emu-sys) ---
# guest programs are assembled at run time with the system as/ld; the multiboot-entry case runs
# $(BUILD)/guest/topology.elf when built (SKIP otherwise). 2-12 s on this machine (mostly as/ld runs), plus the
# litmus tests on two vCPU threads: 0.2-3 s (up to 4 runs x 3 kinds x 50000 iterations; ~10 s with ASan/TSan).
TESTS += test_emu
test_emu_PATH := tests/test_emu
test_emu_SRCS := tests/unit/test_emu.c
test_emu_DEPLIBS := $(HV_DEPLIBS)
test_emu_LDLIBS = $(CMOCKA_LIBS) $(HV_LDLIBS)

# --- emu exec tests: the interpreter's decoder/executor alone, against a flat-memory fake of emu.h (in the test);
# differential against the host CPU, targeted decode/mode/REP/LOCK tests, random bytes. About 1 s (3 s with ASan).
TESTS += test_emu_exec
test_emu_exec_PATH := tests/test_emu_exec
test_emu_exec_SRCS := tests/unit/test_emu_exec.c $(wildcard hypervisor/emu/emu_exec*.c)
test_emu_exec_DEPLIBS := util
test_emu_exec_LDLIBS := $(CMOCKA_LIBS) -lpthread
# decoder fuzzer (make fuzz): random code in every mode against a flat fake; seeds in tests/fuzz/corpus/fuzz_emu_exec/
FUZZERS += fuzz_emu_exec
fuzz_emu_exec_FUZZ_SRCS := tests/fuzz/fuzz_emu_exec.c $(wildcard hypervisor/emu/emu_exec*.c)
fuzz_emu_exec_FUZZ_LDLIBS :=
# start-to-first-byte and the guest's compute phase, rackvm vs qemu in the same run (make bench); tsc-hz turns a
# qemu guest's TSC ticks into time
BENCHES += tsc_hz
tsc_hz_PATH := bench/tsc-hz
tsc_hz_SRCS := tests/bench/tsc_hz.c
tsc_hz_DEPLIBS :=
tsc_hz_LDLIBS :=
BENCH_SCRIPTS += tests/bench/bench_hv.sh
