/* SPDX-License-Identifier: MIT */
#include "util/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_tag[32] = "rackvm";
static atomic_int log_level = -1;
static atomic_bool log_quiet;
static atomic_ulong log_errors;

void log_set_tag(const char *tag)
{
	snprintf(log_tag, sizeof(log_tag), "%s", tag);
}

void log_set_level(enum log_level level)
{
	atomic_store(&log_level, (int)level);
}

enum log_level log_get_level(void)
{
	int lvl = atomic_load_explicit(&log_level, memory_order_relaxed);

	if (lvl < 0) {
		const char *env = getenv("RACKVM_LOG");

		lvl = LOG_INFO;
		if (env) {
			if (!strcasecmp(env, "err") || !strcasecmp(env, "error"))
				lvl = LOG_ERR;
			else if (!strcasecmp(env, "warn"))
				lvl = LOG_WARN;
			else if (!strcasecmp(env, "debug"))
				lvl = LOG_DEBUG;
		}
		atomic_store(&log_level, lvl);
	}
	return (enum log_level)lvl;
}

void log_set_quiet(bool quiet)
{
	atomic_store(&log_quiet, quiet);
}

unsigned long log_error_count(void)
{
	return atomic_load(&log_errors);
}

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_printf(enum log_level level, const char *file, int line, const char *func, const char *fmt, ...)
{
	char buf[1024];
	struct timespec ts;
	va_list ap;
	int n;

	if (level <= LOG_ERR)
		atomic_fetch_add(&log_errors, 1);
	if (level > log_get_level() || atomic_load_explicit(&log_quiet, memory_order_relaxed))
		return;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	n = snprintf(buf, sizeof(buf), "[%5ld.%06ld] %s %s: ", (long)ts.tv_sec, ts.tv_nsec / 1000, log_tag,
		     level_names[level]);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 80)
		n = (int)sizeof(buf) - 80;
	if (level <= LOG_WARN || log_get_level() >= LOG_DEBUG)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, " (%s:%d %s)", file, line, func);
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}

void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", log_tag);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}
