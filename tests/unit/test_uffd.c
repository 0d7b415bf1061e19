/* SPDX-License-Identifier: MIT */
/*
 * dsm/uffd primitives alone: threads of this process play the guest, the test body plays the backend.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include <cmocka.h>

#include "dsm/uffd.h"
#include "util/clock.h"
#include "util/log.h"

#define PG DSM_UFFD_PAGE_SIZE
#define DEADLINE_NS (5 * NSEC_PER_SEC)

static struct dsm_uffd *u;

static int setup(void **state)
{
	int err = dsm_uffd_create(8 * PG, &u);

	if (err == -ENOSYS || err == -EPERM || err == -EOPNOTSUPP) {
		printf("SKIP: userfaultfd with write-protect unavailable (%s)\n", strerror(-err));
		u = NULL;
		return 0;
	}
	return err;
}

static int teardown(void **state)
{
	dsm_uffd_destroy(u);
	u = NULL;
	return 0;
}

#define NEED_UFFD() \
	do { \
		if (!u) \
			skip(); \
	} while (0)

static volatile uint8_t *page_ptr(uint64_t page)
{
	return (volatile uint8_t *)dsm_uffd_base(u) + page * PG;
}

/* Wait (with deadline) for at least one fault; returns how many were read into f. */
static int wait_faults(struct dsm_uffd_fault *f, size_t max)
{
	uint64_t end = clock_now_ns() + DEADLINE_NS;

	while (clock_now_ns() < end) {
		struct pollfd p = { .fd = dsm_uffd_fd(u), .events = POLLIN };
		int n;

		if (poll(&p, 1, 50) < 0 && errno != EINTR)
			return -errno;
		n = dsm_uffd_read_faults(u, f, max);
		if (n != 0)
			return n;
	}
	return 0;
}

/* True when no fault arrives within ms. */
static bool no_fault_within(int ms)
{
	struct pollfd p = { .fd = dsm_uffd_fd(u), .events = POLLIN };

	return poll(&p, 1, ms) == 0;
}

struct access {
	pthread_t th;
	uint64_t page;
	bool write;
	uint8_t value;          /* written, or read back */
	atomic_bool done;
};

static void *access_fn(void *arg)
{
	struct access *a = arg;

	if (a->write)
		page_ptr(a->page)[7] = a->value;
	else
		a->value = page_ptr(a->page)[7];
	atomic_store(&a->done, true);
	return NULL;
}

static void access_start(struct access *a, uint64_t page, bool write, uint8_t value)
{
	memset(a, 0, sizeof(*a));
	a->page = page;
	a->write = write;
	a->value = value;
	assert_int_equal(pthread_create(&a->th, NULL, access_fn, a), 0);
}

static bool wait_done(atomic_bool *flag)
{
	uint64_t end = clock_now_ns() + DEADLINE_NS;

	while (!atomic_load(flag)) {
		if (clock_now_ns() > end)
			return false;
		usleep(200);
	}
	return true;
}

static void test_read_fault_then_install(void **state)
{
	struct dsm_uffd_fault f[4];
	uint8_t src[PG];
	struct access a;

	NEED_UFFD();
	access_start(&a, 1, false, 0);
	assert_int_equal(wait_faults(f, 4), 1);
	assert_int_equal(f[0].page, 1);
	assert_false(f[0].write);
	assert_false(f[0].wp);
	assert_false(atomic_load(&a.done));
	memset(src, 0x5a, sizeof(src));
	assert_int_equal(dsm_uffd_copy(u, 1, src, true), 0);
	assert_true(wait_done(&a.done));
	pthread_join(a.th, NULL);
	assert_int_equal(a.value, 0x5a);
	/* Installing a present page again is refused and changes nothing. */
	memset(src, 0x11, sizeof(src));
	assert_int_equal(dsm_uffd_copy(u, 1, src, true), -EEXIST);
	assert_int_equal(page_ptr(1)[0], 0x5a);
	assert_int_equal(dsm_uffd_copy(u, 999, src, true), -EINVAL);
}

static void test_write_missing_is_reported_as_write(void **state)
{
	struct dsm_uffd_fault f[4];
	uint8_t src[PG] = { 0 };
	struct access a;

	NEED_UFFD();
	access_start(&a, 2, true, 0x77);
	assert_int_equal(wait_faults(f, 4), 1);
	assert_int_equal(f[0].page, 2);
	assert_true(f[0].write);
	assert_false(f[0].wp);
	assert_int_equal(dsm_uffd_copy(u, 2, src, false), 0);
	assert_true(wait_done(&a.done));
	pthread_join(a.th, NULL);
	assert_int_equal(page_ptr(2)[7], 0x77);
}

static void test_write_protected_page_faults_wp_until_cleared(void **state)
{
	struct dsm_uffd_fault f[4];
	uint8_t src[PG];
	struct access a;

	NEED_UFFD();
	memset(src, 3, sizeof(src));
	assert_int_equal(dsm_uffd_copy(u, 3, src, true), 0);
	assert_int_equal(page_ptr(3)[7], 3);          /* reads of a Shared page do not fault */
	assert_true(no_fault_within(20));
	access_start(&a, 3, true, 0x99);
	assert_int_equal(wait_faults(f, 4), 1);
	assert_int_equal(f[0].page, 3);
	assert_true(f[0].wp);
	assert_true(f[0].write);
	assert_false(atomic_load(&a.done));
	assert_int_equal(dsm_uffd_protect(u, 3, false), 0);   /* upgrade S->M wakes the writer */
	assert_true(wait_done(&a.done));
	pthread_join(a.th, NULL);
	assert_int_equal(page_ptr(3)[7], 0x99);
	/* Downgrade M->S: the next write faults WP again. */
	assert_int_equal(dsm_uffd_protect(u, 3, true), 0);
	access_start(&a, 3, true, 0x42);
	assert_int_equal(wait_faults(f, 4), 1);
	assert_true(f[0].wp);
	assert_int_equal(page_ptr(3)[7], 0x99);
	assert_int_equal(dsm_uffd_protect(u, 3, false), 0);
	assert_true(wait_done(&a.done));
	pthread_join(a.th, NULL);
	assert_int_equal(page_ptr(3)[7], 0x42);
}

static void test_zap_makes_next_access_fault_missing(void **state)
{
	struct dsm_uffd_fault f[4];
	uint8_t src[PG];
	struct access a;

	NEED_UFFD();
	memset(src, 9, sizeof(src));
	assert_int_equal(dsm_uffd_copy(u, 4, src, true), 0);
	/* Zap a write-protected page: the next access is MISSING (no uffd-wp marker survives), even a write. */
	assert_int_equal(dsm_uffd_zap(u, 4), 0);
	access_start(&a, 4, true, 0x10);
	assert_int_equal(wait_faults(f, 4), 1);
	assert_int_equal(f[0].page, 4);
	assert_false(f[0].wp);
	assert_true(f[0].write);
	memset(src, 0x20, sizeof(src));
	assert_int_equal(dsm_uffd_copy(u, 4, src, false), 0);
	assert_true(wait_done(&a.done));
	pthread_join(a.th, NULL);
	assert_int_equal(page_ptr(4)[7], 0x10);
	assert_int_equal(page_ptr(4)[8], 0x20);
	/* And a writable page zapped faults on a read. */
	assert_int_equal(dsm_uffd_zap(u, 4), 0);
	access_start(&a, 4, false, 0);
	assert_int_equal(wait_faults(f, 4), 1);
	assert_false(f[0].write);
	assert_int_equal(dsm_uffd_zero(u, 4, false), 0);
	assert_true(wait_done(&a.done));
	pthread_join(a.th, NULL);
	assert_int_equal(a.value, 0);
}

static void test_zero_page_read_only_faults_on_write(void **state)
{
	struct dsm_uffd_fault f[4];
	struct access a;

	NEED_UFFD();
	/* Read-only zero page: a write must fault WP (this is why it is a COPY of zeros with MODE_WP). */
	assert_int_equal(dsm_uffd_zero(u, 5, true), 0);
	assert_int_equal(page_ptr(5)[100], 0);
	access_start(&a, 5, true, 0xee);
	assert_int_equal(wait_faults(f, 4), 1);
	assert_int_equal(f[0].page, 5);
	assert_true(f[0].wp);
	assert_int_equal(dsm_uffd_protect(u, 5, false), 0);
	assert_true(wait_done(&a.done));
	pthread_join(a.th, NULL);
	/* Writable zero page: writes run without any fault. */
	assert_int_equal(dsm_uffd_zero(u, 6, false), 0);
	page_ptr(6)[1] = 1;
	assert_true(no_fault_within(20));
	assert_int_equal(dsm_uffd_zero(u, 6, false), -EEXIST);
}

#define N_WAITERS 4

static void test_concurrent_faults_one_install_wakes_all(void **state)
{
	struct dsm_uffd_fault f[16];
	struct access a[N_WAITERS];
	uint8_t src[PG];
	int n = 0, got;

	NEED_UFFD();
	for (int i = 0; i < N_WAITERS; i++)
		access_start(&a[i], 0, false, 0);
	/* Let them all block (each reports a fault; the kernel does not merge messages). */
	got = wait_faults(f, 16);
	assert_true(got >= 1);
	n += got;
	for (int i = 0; i < got; i++)
		assert_int_equal(f[i].page, 0);
	memset(src, 0x33, sizeof(src));
	assert_int_equal(dsm_uffd_copy(u, 0, src, true), 0);
	for (int i = 0; i < N_WAITERS; i++) {
		assert_true(wait_done(&a[i].done));
		pthread_join(a[i].th, NULL);
		assert_int_equal(a[i].value, 0x33);
	}
	/* Late reports for the same page may still be queued: they are for a present page now. */
	while ((got = dsm_uffd_read_faults(u, f, 16)) > 0) {
		for (int i = 0; i < got; i++)
			assert_int_equal(f[i].page, 0);
		n += got;
	}
	assert_true(n >= 1 && n <= N_WAITERS);
	printf("concurrent faults: %d threads, %d fault reports, 1 install\n", N_WAITERS, n);
}

/*
 * The invalidation ordering: write-protect, copy out, zap. A writer thread increments a counter in the page as fast
 * as it can, checking each time that it reads back its own previous value. Every round the "backend" invalidates
 * the page and later reinstalls the bytes it copied out. A write landing between the copy and the zap would be lost:
 * the writer would read back an older value, and the copy would disagree with the writer's own count.
 */
struct writer {
	pthread_t th;
	uint64_t rounds_limit;
	atomic_uint_fast64_t done;   /* last value whose store completed */
	atomic_bool stop;
	uint64_t lost;
};

static void *writer_fn(void *arg)
{
	struct writer *w = arg;
	volatile uint64_t *ctr = (volatile uint64_t *)page_ptr(7);

	for (uint64_t i = 1; !atomic_load_explicit(&w->stop, memory_order_relaxed); i++) {
		uint64_t v = *ctr;

		if (v != i - 1) {
			w->lost++;
			i = v + 1;
		}
		*ctr = i;
		atomic_store_explicit(&w->done, i, memory_order_release);
	}
	return NULL;
}

static void test_copy_out_then_zap_loses_no_write(void **state)
{
	struct dsm_uffd_fault f[16];
	static uint8_t saved[PG];
	struct writer w;
	const int rounds = 300;
	int wp_faults = 0, missing_faults = 0;

	NEED_UFFD();
	memset(&w, 0, sizeof(w));
	assert_int_equal(dsm_uffd_zero(u, 7, false), 0);
	assert_int_equal(pthread_create(&w.th, NULL, writer_fn, &w), 0);
	for (int r = 0; r < rounds; r++) {
		uint64_t before = atomic_load(&w.done), copied, done;
		int got;

		/* Let the writer make progress on a writable page. */
		while (atomic_load(&w.done) == before)
			sched_yield();
		assert_int_equal(dsm_uffd_protect(u, 7, true), 0);
		memcpy(saved, (const void *)page_ptr(7), PG);
		assert_int_equal(dsm_uffd_zap(u, 7), 0);
		/* The writer is now blocked (WP fault on the old page or MISSING on the zapped one). Once its fault is
		 * reported, it has finished every store it will ever finish before the reinstall. */
		got = wait_faults(f, 16);
		assert_true(got >= 1);
		for (int i = 0; i < got; i++) {
			assert_int_equal(f[i].page, 7);
			if (f[i].wp)
				wp_faults++;
			else
				missing_faults++;
		}
		copied = *(uint64_t *)saved;
		done = atomic_load_explicit(&w.done, memory_order_acquire);
		assert_int_equal(copied, done);
		/* Reinstall: alternately Shared (the writer then faults WP and is upgraded) and Modified. */
		if (r & 1) {
			assert_int_equal(dsm_uffd_copy(u, 7, saved, true), 0);
			got = wait_faults(f, 16);
			assert_true(got >= 1);
			assert_true(f[0].wp);
			assert_int_equal(dsm_uffd_protect(u, 7, false), 0);
		} else {
			assert_int_equal(dsm_uffd_copy(u, 7, saved, false), 0);
		}
	}
	atomic_store(&w.stop, true);
	pthread_join(w.th, NULL);
	assert_int_equal(w.lost, 0);
	assert_int_equal(*(volatile uint64_t *)page_ptr(7), atomic_load(&w.done));
	printf("copy-out-then-zap: %d rounds, writer reached %llu, %d WP + %d MISSING faults, 0 lost\n", rounds,
	       (unsigned long long)atomic_load(&w.done), wp_faults, missing_faults);
}

/* fail_all: a thread blocked in a fault gets SIGSEGV instead of hanging or reading wrong data. */
static void segv_exit(int sig)
{
	_exit(42);
}

static void *blocked_reader(void *arg)
{
	return (void *)(uintptr_t)page_ptr(1)[0];
}

static void test_fail_all_turns_blocked_faults_into_sigsegv(void **state)
{
	pid_t pid;
	int status;

	NEED_UFFD();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct dsm_uffd_fault f[4];
		struct sigaction sa = { .sa_handler = segv_exit };
		pthread_t th;

		sigaction(SIGSEGV, &sa, NULL);
		dsm_uffd_destroy(u);    /* the parent's; make a fresh one with no pages */
		if (dsm_uffd_create(4 * PG, &u) < 0)
			_exit(2);
		pthread_create(&th, NULL, blocked_reader, NULL);
		if (wait_faults(f, 4) != 1)
			_exit(3);
		dsm_uffd_fail_all(u);
		pthread_join(th, NULL);
		_exit(4);               /* the reader came back with data: wrong */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 42);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_fault_then_install),
		cmocka_unit_test(test_write_missing_is_reported_as_write),
		cmocka_unit_test(test_write_protected_page_faults_wp_until_cleared),
		cmocka_unit_test(test_zap_makes_next_access_fault_missing),
		cmocka_unit_test(test_zero_page_read_only_faults_on_write),
		cmocka_unit_test(test_concurrent_faults_one_install_wakes_all),
		cmocka_unit_test(test_copy_out_then_zap_loses_no_write),
		cmocka_unit_test(test_fail_all_turns_blocked_faults_into_sigsegv),
	};

	log_set_tag("test_uffd");
	return cmocka_run_group_tests(tests, setup, teardown);
}
