/* SPDX-License-Identifier: MIT */
/*
 * Latency histogram: log-linear buckets (16 sub-buckets per power of two) over nanoseconds, ~6% resolution,
 * from 1 ns to ~2^40 ns. Fixed size, no allocation, so fast paths can record into it.
 * Not thread-safe: give each thread its own and merge, or hold the owner's lock.
 */
#ifndef RACKVM_UTIL_HIST_H
#define RACKVM_UTIL_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 4
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (41u * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t min_ns;
	uint64_t max_ns;
	uint64_t bucket[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t ns);
void hist_merge(struct hist *dst, const struct hist *src);
/* Value at quantile q in [0,1] (upper bound of its bucket, clamped to max); 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

#endif
