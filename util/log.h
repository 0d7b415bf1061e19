/* SPDX-License-Identifier: MIT */
/*
 * Logging: printf-checked macros that add the level, file, line and function.
 *
 * Messages go to stderr, one line each, prefixed with a tag set once per process (for example "node1"), so
 * the interleaved output of a simulated cluster can be told apart. Thread-safe: each line is written with a
 * single write(2).
 *
 * pr_err() is for conditions the process survives (a bad frame, a dead peer); die() is for startup errors only
 * — nothing a guest or a peer sends may reach it.
 */
#ifndef RACKVM_UTIL_LOG_H
#define RACKVM_UTIL_LOG_H

#include <stdbool.h>
#include <stdnoreturn.h>

enum log_level {
	LOG_ERR = 0,
	LOG_WARN = 1,
	LOG_INFO = 2,
	LOG_DEBUG = 3,
};

/* Set the process tag and the most verbose level printed (default LOG_INFO, or $RACKVM_LOG=err|warn|info|debug). */
void log_set_tag(const char *tag);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Tests that provoke errors on purpose may silence them: LOG_ERR and below still count in log_error_count(). */
void log_set_quiet(bool quiet);
unsigned long log_error_count(void);

__attribute__((format(printf, 5, 6)))
void log_printf(enum log_level level, const char *file, int line, const char *func, const char *fmt, ...);

#define pr_err(...)   log_printf(LOG_ERR, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define pr_warn(...)  log_printf(LOG_WARN, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define pr_info(...)  log_printf(LOG_INFO, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define pr_debug(...) \
	do { \
		if (log_get_level() >= LOG_DEBUG) \
			log_printf(LOG_DEBUG, __FILE__, __LINE__, __func__, __VA_ARGS__); \
	} while (0)

/* Print and exit(1). Startup and command-line errors only. */
__attribute__((format(printf, 1, 2)))
noreturn void die(const char *fmt, ...);

#endif
