# hypervisor: the per-node VMM — accelerators (kvm, emu), buses and devices, local APIC and APIC bus, firmware
# tables (e820, ACPI, CPUID), loaders (multiboot, Linux), VM and vCPU state machines, `rackvm run`.
# Every .c under hypervisor/ goes into libhv; programs link it whole (devices and accelerators register
# themselves through constructors).
LIBS_ALL += hv
hv_SRCS := $(sort $(wildcard hypervisor/*.c hypervisor/emu/*.c))
HV_LDLIBS = $(IC_LDLIBS) -lrt
HV_DEPLIBS := hv dsmrt dsm ic util

# ---- tests: one program per area; each section is owned by the area's author ----
