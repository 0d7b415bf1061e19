/* SPDX-License-Identifier: MIT */
/* util: histogram quantiles, deterministic PRNG, error accounting of the logger. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/bitmap.h"
#include "util/hist.h"
#include "util/log.h"
#include "util/rand.h"

static void test_hist_empty(void **state)
{
	struct hist h;

	hist_init(&h);
	assert_int_equal(hist_quantile(&h, 0.5), 0);
	assert_int_equal(h.count, 0);
}

static void test_hist_exact_small_values(void **state)
{
	struct hist h;

	hist_init(&h);
	for (uint64_t v = 1; v <= 10; v++)
		hist_record(&h, v);
	/* values below HIST_SUB have exact buckets */
	assert_int_equal(hist_quantile(&h, 0.0), 1);
	assert_int_equal(hist_quantile(&h, 0.5), 5);
	assert_int_equal(hist_quantile(&h, 1.0), 10);
	assert_int_equal(h.min_ns, 1);
	assert_int_equal(h.max_ns, 10);
	assert_int_equal(h.sum_ns, 55);
}

static void test_hist_resolution(void **state)
{
	struct hist h;

	hist_init(&h);
	/* 1000 samples uniform over 10us..20us: p50 ~15us, p99 ~19.9us, within the ~6% bucket resolution */
	for (uint64_t i = 0; i < 1000; i++)
		hist_record(&h, 10000 + i * 10);
	uint64_t p50 = hist_quantile(&h, 0.5), p99 = hist_quantile(&h, 0.99);

	assert_true(p50 >= 15000 * 94 / 100 && p50 <= 15000 * 107 / 100);
	assert_true(p99 >= 19900 * 94 / 100 && p99 <= 19990);
	assert_true(hist_quantile(&h, 1.0) == 19990);
}

static void test_hist_merge(void **state)
{
	struct hist a, b;

	hist_init(&a);
	hist_init(&b);
	hist_record(&a, 100);
	hist_record(&b, 1000000);
	hist_merge(&a, &b);
	assert_int_equal(a.count, 2);
	assert_int_equal(a.min_ns, 100);
	assert_int_equal(a.max_ns, 1000000);
	assert_int_equal(hist_quantile(&a, 1.0), 1000000);
}

static void test_hist_huge_value_clamped(void **state)
{
	struct hist h;

	hist_init(&h);
	hist_record(&h, UINT64_MAX);
	assert_int_equal(hist_quantile(&h, 0.5), UINT64_MAX);
}

static void test_rng_deterministic(void **state)
{
	struct rng a, b, c;

	rng_seed(&a, 42);
	rng_seed(&b, 42);
	rng_seed(&c, 43);
	int differ = 0;

	for (int i = 0; i < 1000; i++) {
		uint64_t x = rng_next(&a);

		assert_int_equal(x, rng_next(&b));
		differ += x != rng_next(&c);
	}
	assert_true(differ > 990);
}

static void test_rng_ranges(void **state)
{
	struct rng r;
	unsigned int counts[10] = { 0 };

	rng_seed(&r, 7);
	for (int i = 0; i < 100000; i++) {
		uint64_t v = rng_below(&r, 10);
		double d = rng_double(&r);

		assert_true(v < 10);
		assert_true(d >= 0.0 && d < 1.0);
		counts[v]++;
	}
	for (int i = 0; i < 10; i++)
		assert_true(counts[i] > 9000 && counts[i] < 11000);
}

static void test_log_counts_errors_when_quiet(void **state)
{
	unsigned long before = log_error_count();

	log_set_quiet(true);
	pr_err("provoked error %d", 1);
	pr_warn("a warning does not count");
	log_set_quiet(false);
	assert_int_equal(log_error_count(), before + 1);
}

/* 64-bit words: bits either side of a word boundary are independent; clear leaves the neighbours. */
static void test_bitmap64(void **state)
{
	uint64_t b[3] = { 0, 0, 0 };

	(void)state;
	bitmap_set(b, 0);
	bitmap_set(b, 63);
	bitmap_set(b, 64);
	bitmap_set(b, 191);
	assert_int_equal(b[0], 0x8000000000000001ull);
	assert_int_equal(b[1], 1);
	assert_int_equal(b[2], 0x8000000000000000ull);
	assert_true(bitmap_test(b, 63) && bitmap_test(b, 64) && bitmap_test(b, 191));
	assert_false(bitmap_test(b, 1) || bitmap_test(b, 62) || bitmap_test(b, 65) || bitmap_test(b, 190));
	bitmap_clear(b, 63);
	assert_false(bitmap_test(b, 63));
	assert_true(bitmap_test(b, 0) && bitmap_test(b, 64));
	bitmap_clear(b, 63);                          /* clearing a clear bit changes nothing */
	assert_int_equal(b[0], 1);
}

/* 32-bit words (APIC registers): the highest set bit of 256, none, bit 0, across words. */
static void test_bitmap32_highest(void **state)
{
	uint32_t r[8] = { 0 };

	(void)state;
	assert_int_equal(bitmap32_highest(r, 8), -1);
	bitmap32_set(r, 0);
	assert_int_equal(bitmap32_highest(r, 8), 0);
	bitmap32_set(r, 31);
	bitmap32_set(r, 32);
	assert_int_equal(bitmap32_highest(r, 8), 32);
	bitmap32_set(r, 255);
	assert_int_equal(bitmap32_highest(r, 8), 255);
	assert_int_equal(bitmap32_highest(r, 7), 32);  /* only the words asked for */
	bitmap32_clear(r, 255);
	bitmap32_clear(r, 32);
	assert_int_equal(bitmap32_highest(r, 8), 31);
	assert_true(bitmap32_test(r, 31) && bitmap32_test(r, 0) && !bitmap32_test(r, 32));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hist_empty),
		cmocka_unit_test(test_hist_exact_small_values),
		cmocka_unit_test(test_hist_resolution),
		cmocka_unit_test(test_hist_merge),
		cmocka_unit_test(test_hist_huge_value_clamped),
		cmocka_unit_test(test_rng_deterministic),
		cmocka_unit_test(test_rng_ranges),
		cmocka_unit_test(test_log_counts_errors_when_quiet),
		cmocka_unit_test(test_bitmap64),
		cmocka_unit_test(test_bitmap32_highest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
