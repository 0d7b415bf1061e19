/*
 * compute: the kernel shared by the guest workload and the host reference (compute-ref), so the expected
 * checksum comes from the same code compiled for the host. checksum(n, rounds) = sum over i < n of
 * item(i, rounds) mod 2^64: a sum, so any split of [0, n) across CPUs gives the same value.
 */
#ifndef COMPUTE_KERNEL_H
#define COMPUTE_KERNEL_H

#include <stdint.h>

#define COMPUTE_DEFAULT_N      100000
#define COMPUTE_DEFAULT_ROUNDS 64

static inline uint64_t compute_item(uint64_t i, unsigned rounds)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ull + 1;
	for (unsigned r = 0; r < rounds; r++) {
		x ^= x >> 30;
		x *= 0xbf58476d1ce4e5b9ull;
		x ^= x >> 27;
		x *= 0x94d049bb133111ebull;
		x ^= x >> 31;
		x += r;
	}
	return x;
}

static inline uint64_t compute_range(uint64_t begin, uint64_t end, unsigned rounds)
{
	uint64_t sum = 0;
	for (uint64_t i = begin; i < end; i++)
		sum += compute_item(i, rounds);
	return sum;
}

#endif
