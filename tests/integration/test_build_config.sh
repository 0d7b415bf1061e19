#!/usr/bin/env bash
# The build's probed configuration (Makefile: $(BUILD)/config.mk and $(BUILD)/gen/config.h) follows the machine:
# a make run where pkg-config cannot see libibverbs/librdmacm (as on a fresh machine before scripts/deps.sh has
# installed them; stood in for by PKG_CONFIG_LIBDIR=/nonexistent) builds the rdma stub and its test, and the next
# make, which sees the libraries, must treat test_rdma.o and libic.a as out of date, rebuild them against the real
# transport, and leave nothing stale. Uses a scratch BUILD directory. Exit 0 pass, 1 fail, 77 skip.
set -u
cd "$(dirname "$0")/../.."
if ! pkg-config --exists libibverbs librdmacm 2>/dev/null; then
	echo "SKIP: pkg-config finds no libibverbs/librdmacm here (scripts/deps.sh installs them)"
	exit 77
fi
B=$(mktemp -d)
trap 'rm -rf "$B"' EXIT
fail=0
check() {
	if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fail=1; fi
}
PKG_CONFIG_LIBDIR=/nonexistent make -s BUILD="$B" "$B/tests/test_rdma" >"$B/make1.log" 2>&1
check "without the libraries: HAVE_RDMA 0, stub built" \
	'grep -qx "HAVE_RDMA := 0" "$B/config.mk" && grep -q "RACKVM_HAVE_RDMA 0" "$B/gen/config.h" && [ -f "$B/interconnect/rdma_stub.o" ] && [ ! -f "$B/interconnect/rdma.o" ]'
check "without the libraries: test_rdma runs the stub's checks" '"$B/tests/test_rdma" >"$B/run1.log" 2>&1'
make -q BUILD="$B" "$B/tests/unit/test_rdma.o"
q=$?
check "with the libraries: test_rdma.o is out of date" '[ $q -eq 1 ]'
make -s BUILD="$B" "$B/tests/test_rdma" >"$B/make2.log" 2>&1
check "with the libraries: HAVE_RDMA 1, real transport in libic" \
	'grep -qx "HAVE_RDMA := 1" "$B/config.mk" && grep -q "RACKVM_HAVE_RDMA 1" "$B/gen/config.h" && ar t "$B/libic.a" | grep -qx rdma.o && ! ar t "$B/libic.a" | grep -qx rdma_stub.o'
check "with the libraries: test_rdma passes" '"$B/tests/test_rdma" >"$B/run2.log" 2>&1'
make -q BUILD="$B" "$B/tests/test_rdma"
q=$?
check "an unchanged configuration rebuilds nothing" '[ $q -eq 0 ]'
[ $fail -eq 0 ] || { tail -n 20 "$B"/make*.log "$B"/run*.log; exit 1; }
exit 0
