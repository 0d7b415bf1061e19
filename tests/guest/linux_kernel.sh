# Sourced by the scripts that need a real Linux kernel (tests/unit/test_linux_image.sh, tests/integration/
# test_linux.sh, tests/bench/bench_linux.sh): linux_kernel sets VMLINUZ to Debian's linux-image-cloud-amd64 kernel,
# fetched once into $BUILD/cache/linux-image (apt-get download + dpkg-deb; only ./boot/vmlinuz-* is kept). When it
# cannot be had it sets LINUX_SKIP to the reason and returns 77; a broken package returns 1.
linux_kernel() {
	local cache="${BUILD:-build}/cache/linux-image" meta=linux-image-cloud-amd64 pkg deb why
	VMLINUZ=$(ls "$cache"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
	[ -n "$VMLINUZ" ] && return 0
	if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
		LINUX_SKIP="apt-get/dpkg-deb not available"
		return 77
	fi
	pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	if [ -z "$pkg" ]; then
		LINUX_SKIP="apt-cache does not know $meta (no Debian package lists: apt-get update?)"
		return 77
	fi
	rm -rf "$cache"
	mkdir -p "$cache/dl" "$cache/root"
	if ! (cd "$cache/dl" && timeout 600 apt-get download -q "$pkg") >"$cache/download.log" 2>&1; then
		why=$(grep -v '^W:' "$cache/download.log" | tail -n 1)
		rm -rf "$cache"
		LINUX_SKIP="apt-get download $pkg failed: ${why:-no output}"
		return 77
	fi
	deb=$(ls "$cache"/dl/*.deb | head -n 1)
	if ! dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache/root" --wildcards './boot/vmlinuz-*'; then
		rm -rf "$cache"
		echo "linux_kernel: cannot extract ./boot/vmlinuz-* from $deb" >&2
		return 1
	fi
	rm -rf "$cache/dl"
	VMLINUZ=$(ls "$cache"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
	[ -n "$VMLINUZ" ] || { echo "linux_kernel: $pkg has no /boot/vmlinuz-*" >&2; return 1; }
}
