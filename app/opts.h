/* SPDX-License-Identifier: MIT */
/* Command-line value parsing shared by rackvm run, node and sim. Each returns 0 or -EINVAL. */
#ifndef RACKVM_APP_OPTS_H
#define RACKVM_APP_OPTS_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>

/* "128M", "2G", "4096", "64K" (binary units) -> bytes. */
int opts_parse_size(const char *s, uint64_t *out);
/* Decimal integer in [min, max]. */
int opts_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* Probability in [0, 1]. */
int opts_parse_prob(const char *s, double *out);

/* Append one --module argument ("FILE[ ARGS]") to list (*n entries, room for max): 0, or -EINVAL after one line
 * "<prog>: at most <max> --module options" on stderr. */
int opts_add_module(const char *prog, const char **list, size_t *n, size_t max, const char *arg);

/* The long name of the option whose getopt_long value is val ("?" if none), for error messages. */
const char *opts_name(const struct option *lo, int val);

#endif
