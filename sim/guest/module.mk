# sim/guest: freestanding guest SDK and workloads (multiboot v1 ELF32 images holding 64-bit code).
#
#   $(BUILD)/guest/<workload>.elf   one kernel per workload, bootable by qemu -kernel and by rackvm
#   $(BUILD)/guest/compute-ref      host program printing the expected compute checksum
#
# Guest objects use their own flags (never $(CFLAGS): no sanitizers, no -pthread, no SSE in ring 0).
GUEST_DIR := sim/guest
GUEST_OUT := $(BUILD)/guest
GUEST_WORKLOADS := topology litmus memtest compute ipi
GUEST_CFLAGS := -std=gnu11 -O2 -g -ffreestanding -fno-pic -fno-pie -fno-stack-protector -fno-builtin \
	-fno-asynchronous-unwind-tables -fno-omit-frame-pointer -mno-red-zone -mno-sse -mno-mmx \
	-mgeneral-regs-only -mstringop-strategy=loop -mcmodel=small $(WARNINGS) -I$(GUEST_DIR)/include -I$(GUEST_DIR)/sdk -MMD -MP
GUEST_LDFLAGS := -nostdlib -static -no-pie -Wl,--build-id=none -Wl,-z,max-page-size=0x1000 \
	-Wl,-z,noexecstack -Wl,--no-warn-rwx-segments -T $(GUEST_DIR)/link.ld
GUEST_SDK_SRCS := $(wildcard $(GUEST_DIR)/sdk/*.c) $(GUEST_DIR)/sdk/boot.S
GUEST_SDK_OBJS := $(patsubst %,$(GUEST_OUT)/obj/%.o,$(notdir $(GUEST_SDK_SRCS)))
GUEST_ELFS := $(patsubst %,$(GUEST_OUT)/%.elf,$(GUEST_WORKLOADS))

$(GUEST_OUT)/obj/%.c.o: $(GUEST_DIR)/sdk/%.c $(GUEST_DIR)/module.mk
	@mkdir -p $(@D)
	@$(if $(Q),echo "  GCC     $<")
	$(Q)$(CC) $(GUEST_CFLAGS) -c -o $@ $<

$(GUEST_OUT)/obj/%.S.o: $(GUEST_DIR)/sdk/%.S $(GUEST_DIR)/module.mk
	@mkdir -p $(@D)
	@$(if $(Q),echo "  GAS     $<")
	$(Q)$(CC) $(GUEST_CFLAGS) -D__ASSEMBLER__ -c -o $@ $<

$(GUEST_OUT)/obj/wl-%.o: $(GUEST_DIR)/workloads/%.c $(GUEST_DIR)/module.mk
	@mkdir -p $(@D)
	@$(if $(Q),echo "  GCC     $<")
	$(Q)$(CC) $(GUEST_CFLAGS) -c -o $@ $<

# Link as ELF64, then repackage as ELF32: multiboot v1 loaders (qemu -kernel) only take ELF32 images.
$(GUEST_OUT)/%.elf: $(GUEST_OUT)/obj/wl-%.o $(GUEST_SDK_OBJS) $(GUEST_DIR)/link.ld
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(GUEST_LDFLAGS) -o $@.64 $(GUEST_OUT)/obj/wl-$*.o $(GUEST_SDK_OBJS) -lgcc
	$(Q)objcopy -O elf32-i386 $@.64 $@

$(GUEST_OUT)/compute-ref: $(GUEST_DIR)/workloads/compute_ref.c $(GUEST_DIR)/workloads/compute_kernel.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) -std=gnu11 -O2 $(WARNINGS) -o $@ $<

.SECONDARY: $(GUEST_SDK_OBJS) $(patsubst %,$(GUEST_OUT)/obj/wl-%.o,$(GUEST_WORKLOADS))
.PHONY: guest
guest: $(GUEST_ELFS) $(GUEST_OUT)/compute-ref
all: guest

CHECK_SCRIPTS += tests/guest/insn-scan.sh tests/guest/run-qemu.sh
SOAK_SCRIPTS += tests/guest/soak-qemu.sh

-include $(GUEST_SDK_OBJS:.o=.d) $(patsubst %,$(GUEST_OUT)/obj/wl-%.d,$(GUEST_WORKLOADS))

# Host unit tests of SDK parts qemu 7.2 TCG cannot exercise (XSDT, x2APIC): the .c is included by the test.
TESTS += test_guest_acpi test_guest_apic
test_guest_acpi_PATH := tests/test_guest_acpi
test_guest_acpi_SRCS := tests/guest/test_guest_acpi.c
test_guest_acpi_LDLIBS := $(CMOCKA_LIBS)
test_guest_apic_PATH := tests/test_guest_apic
test_guest_apic_SRCS := tests/guest/test_guest_apic.c
test_guest_apic_LDLIBS := $(CMOCKA_LIBS)
$(BUILD)/tests/guest/test_guest_acpi.o $(BUILD)/tests/guest/test_guest_apic.o: \
	CPPFLAGS += -Isim/guest/include -DGUEST_HOST_TEST

# The platform-devices guest of tests/integration/test_hv_devices.sh and test_sim.sh (one assembler file, long
# mode; its object sits with the SDK's so tests/guest/insn-scan.sh checks it too).
GUEST_DEVICES_SRC := tests/integration/hv_devices_guest.S
$(GUEST_OUT)/obj/hv-devices.o: $(GUEST_DEVICES_SRC) $(GUEST_DIR)/module.mk
	@mkdir -p $(@D)
	@$(if $(Q),echo "  GAS     $<")
	$(Q)as --64 -o $@ $<
$(GUEST_OUT)/hv-devices.elf: $(GUEST_OUT)/obj/hv-devices.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)ld -N -m elf_x86_64 --no-warn-rwx-segments -Ttext=0x100000 -e _start -o $@.64 $<
	$(Q)objcopy -O elf32-i386 $@.64 $@
guest: $(GUEST_OUT)/hv-devices.elf

# The Linux guest (docs/linux-guest.md): an initramfs of Debian's busybox-static (installed by scripts/deps.sh) and
# sim/guest/linux/init and debug-exit (our freestanding isa-debug-exit writer), written by our mkinitramfs (owners 0:0, mtimes 0, gzip -n: the same inputs give the same
# bytes). /etc/rackvm-expected is the checksum the init's per-CPU jobs must compute, made here on the host.
LINUX_DIR := $(GUEST_DIR)/linux
LINUX_OUT := $(GUEST_OUT)/linux
LINUX_INITRAMFS := $(LINUX_OUT)/initramfs.cpio.gz
BUSYBOX ?= /bin/busybox
$(LINUX_OUT)/mkinitramfs: $(LINUX_DIR)/mkinitramfs.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) -std=gnu11 -O2 $(WARNINGS) -o $@ $<
$(LINUX_OUT)/debug-exit: $(LINUX_DIR)/debug-exit.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) -std=gnu11 -O2 -static -nostdlib -fno-pie -no-pie -fno-stack-protector $(WARNINGS) \
		-Wl,--build-id=none -o $@ $<
$(LINUX_OUT)/rackvm-expected: $(GUEST_DIR)/module.mk
	@mkdir -p $(@D)
	$(Q)seq 1 3000 | md5sum | cut -d' ' -f1 >$@
$(LINUX_INITRAMFS): $(LINUX_OUT)/mkinitramfs $(LINUX_DIR)/init $(LINUX_OUT)/rackvm-expected $(LINUX_OUT)/debug-exit \
		$(BUSYBOX)
	@$(if $(Q),echo "  CPIO    $@")
	$(Q)$(LINUX_OUT)/mkinitramfs dir:bin:755 dir:dev:755 dir:etc:755 dir:proc:555 dir:sys:555 dir:tmp:1777 \
		nod:dev/console:600:c:5:1 nod:dev/null:666:c:1:3 file:bin/busybox:755:$(BUSYBOX) \
		file:init:755:$(LINUX_DIR)/init file:etc/rackvm-expected:644:$(LINUX_OUT)/rackvm-expected \
		file:bin/debug-exit:755:$(LINUX_OUT)/debug-exit \
		| gzip -n -9 >$@.tmp && mv $@.tmp $@
.PHONY: linux-guest
linux-guest: $(LINUX_INITRAMFS)
ifneq ($(wildcard $(BUSYBOX)),)
guest: $(LINUX_INITRAMFS)
endif
CHECK_SCRIPTS += tests/integration/test_linux.sh
BENCH_SCRIPTS += tests/bench/bench_linux.sh
SOAK_SCRIPTS += tests/integration/linux_soak.sh
