/* SPDX-License-Identifier: MIT */
/* Monotonic time in nanoseconds. Pure code (dsm/protocol.c) never calls these: time is passed in. */
#ifndef RACKVM_UTIL_CLOCK_H
#define RACKVM_UTIL_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define NSEC_PER_USEC 1000ULL
#define NSEC_PER_MSEC 1000000ULL
#define NSEC_PER_SEC 1000000000ULL

static inline uint64_t clock_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines (clock_timespec): immune to wall-clock
 * steps. */
static inline void clock_cond_init(pthread_cond_t *cond)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cond, &ca);
	pthread_condattr_destroy(&ca);
}

/* An absolute CLOCK_MONOTONIC time in ns as a timespec, for pthread_cond_timedwait on a condition variable whose
 * clock is CLOCK_MONOTONIC (pthread_condattr_setclock). */
static inline struct timespec clock_timespec(uint64_t ns)
{
	return (struct timespec){ .tv_sec = (time_t)(ns / NSEC_PER_SEC), .tv_nsec = (long)(ns % NSEC_PER_SEC) };
}

/* CLOCK_REALTIME now + delta_ns, for condition variables on the default clock. */
static inline struct timespec clock_realtime_after(uint64_t delta_ns)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t ns = (uint64_t)ts.tv_nsec + delta_ns;
	ts.tv_sec += (time_t)(ns / NSEC_PER_SEC);
	ts.tv_nsec = (long)(ns % NSEC_PER_SEC);
	return ts;
}

#endif
