#!/usr/bin/env bash
# A real Debian kernel through the Linux loader, up to its first instruction: fetch linux-image-cloud-amd64's kernel
# package once into $BUILD/cache (apt-get download + dpkg-deb, only ./boot/vmlinuz-* kept), then run
#   $BUILD/tests/test_fw --linux-image <vmlinuz>
# which fw_setup()s it into 512 MiB with a command line and a fake initrd and checks protocol version, load address
# and entry (+0x200), the kernel bytes in RAM, boot_params.hdr against the image's header, e820, page tables, GDT
# and registers. Exit 77 with "SKIP: <why>" when the package cannot be had (no network, no Debian sources).
set -u
BUILD=${BUILD:-build}
bin="$BUILD/tests/test_fw"

skip() {
	echo "SKIP: $*"
	exit 77
}

[ -x "$bin" ] || skip "$bin is not built"
. "$(dirname "$0")/../guest/linux_kernel.sh"
linux_kernel
case $? in
0) vmlinuz=$VMLINUZ ;;
77) skip "$LINUX_SKIP" ;;
*) exit 1 ;;
esac
echo "kernel image: $vmlinuz"
exec "$bin" --linux-image "$vmlinuz"
