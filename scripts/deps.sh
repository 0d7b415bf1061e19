#!/usr/bin/env bash
# Install the Debian packages rackvm needs to build and test, and only those missing.
# Idempotent: a machine that has everything returns at once without touching apt.
#   scripts/deps.sh          install what is missing
#   scripts/deps.sh --check  exit 1 (listing them) if anything is missing; install nothing
set -euo pipefail

PKGS=(
	make gcc pkg-config            # build
	clang llvm libclang-rt-14-dev  # libFuzzer target, sanitizer runtimes
	libcmocka-dev                  # unit tests
	liburcu-dev                    # RCU tables, lock-free queues
	libprotobuf-c-dev protobuf-c-compiler  # control-plane messages
	libssl-dev                     # HMAC-SHA256, AES-GMAC (libcrypto)
	libibverbs-dev librdmacm-dev   # RDMA transport
	spin                           # model checking of the DSM protocol
	qemu-system-x86                # reference VMM for guest cross-checks
	acpica-tools                   # iasl -d validates the ACPI tables (test_fw)
	busybox-static                 # the Linux guest's userland (sim/guest/linux)
	iproute2 procps psmisc         # network namespaces, process tools used by tests
)

missing=()
for p in "${PKGS[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ "${#missing[@]}" -eq 0 ]; then
	exit 0
fi
if [ "${1:-}" = "--check" ]; then
	echo "deps: missing packages: ${missing[*]}" >&2
	exit 1
fi

echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
