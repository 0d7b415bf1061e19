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
cache="$BUILD/cache/linux-image"

skip() {
	echo "SKIP: $*"
	exit 77
}

[ -x "$bin" ] || skip "$bin is not built"
vmlinuz=$(ls "$cache"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
if [ -z "$vmlinuz" ]; then
	command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || skip "apt-get/dpkg-deb not available"
	meta=linux-image-cloud-amd64
	pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	[ -n "$pkg" ] || skip "apt-cache does not know $meta (no Debian package lists: apt-get update?)"
	rm -rf "$cache"
	mkdir -p "$cache/dl" "$cache/root"
	if ! (cd "$cache/dl" && timeout 600 apt-get download -q "$pkg") >"$cache/download.log" 2>&1; then
		why=$(grep -v '^W:' "$cache/download.log" | tail -n 1)
		rm -rf "$cache"
		skip "apt-get download $pkg failed: ${why:-no output}"
	fi
	deb=$(ls "$cache"/dl/*.deb | head -n 1)
	if ! dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache/root" --wildcards './boot/vmlinuz-*'; then
		rm -rf "$cache"
		echo "test_linux_image: cannot extract ./boot/vmlinuz-* from $deb" >&2
		exit 1
	fi
	rm -rf "$cache/dl"
	vmlinuz=$(ls "$cache"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
	[ -n "$vmlinuz" ] || { echo "test_linux_image: $pkg has no /boot/vmlinuz-*" >&2; exit 1; }
fi
echo "kernel image: $vmlinuz"
exec "$bin" --linux-image "$vmlinuz"
