/* SPDX-License-Identifier: MIT */
/*
 * Bitmaps in arrays of words: 64-bit words for sets of nodes and frame types (dsm sharer sets, a transport's
 * accepted types), 32-bit words for the 256-bit registers of the local APIC (IRR/ISR/TMR, as the SDM lays them out).
 * The caller sizes the array; nothing is bounds-checked.
 */
#ifndef RACKVM_UTIL_BITMAP_H
#define RACKVM_UTIL_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

static inline bool bitmap_test(const uint64_t *b, uint32_t i)
{
	return (b[i / 64] >> (i % 64)) & 1;
}

static inline void bitmap_set(uint64_t *b, uint32_t i)
{
	b[i / 64] |= 1ULL << (i % 64);
}

static inline void bitmap_clear(uint64_t *b, uint32_t i)
{
	b[i / 64] &= ~(1ULL << (i % 64));
}

static inline bool bitmap32_test(const uint32_t *b, unsigned i)
{
	return (b[i / 32] >> (i % 32)) & 1;
}

static inline void bitmap32_set(uint32_t *b, unsigned i)
{
	b[i / 32] |= 1u << (i % 32);
}

static inline void bitmap32_clear(uint32_t *b, unsigned i)
{
	b[i / 32] &= ~(1u << (i % 32));
}

/* The highest set bit of `words` 32-bit words, or -1 when none is set. */
static inline int bitmap32_highest(const uint32_t *b, unsigned words)
{
	for (int i = (int)words - 1; i >= 0; i--)
		if (b[i])
			return i * 32 + 31 - __builtin_clz(b[i]);
	return -1;
}

#endif
