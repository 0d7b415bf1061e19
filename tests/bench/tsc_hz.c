/* SPDX-License-Identifier: MIT */
/*
 * tsc-hz: the host's TSC rate, measured against CLOCK_MONOTONIC (median of 5 windows of 100 ms), printed as
 * "tsc_hz <Hz>". bench_hv uses it to turn a guest's TSC ticks into time when the guest does not state its TSC
 * rate (qemu offers no CPUID 0x15): without TSC scaling, a qemu guest's TSC runs at the host's rate.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int main(void)
{
	uint64_t hz[5];

	for (int i = 0; i < 5; i++) {
		uint64_t n0 = mono_ns(), t0 = __rdtsc(), n1, t1;
		struct timespec nap = { 0, 100 * 1000 * 1000 };

		nanosleep(&nap, NULL);
		n1 = mono_ns();
		t1 = __rdtsc();
		hz[i] = (uint64_t)((double)(t1 - t0) * 1e9 / (double)(n1 - n0));
	}
	qsort(hz, 5, sizeof(hz[0]), cmp_u64);
	printf("tsc_hz %llu\n", (unsigned long long)hz[2]);
	return 0;
}
