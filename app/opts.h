/* SPDX-License-Identifier: MIT */
/* Command-line value parsing shared by rackvm node and rackvm sim. Each returns 0 or -EINVAL. */
#ifndef RACKVM_APP_OPTS_H
#define RACKVM_APP_OPTS_H

#include <getopt.h>
#include <stdint.h>

/* "128M", "2G", "4096", "64K" (binary units) -> bytes. */
int opts_parse_size(const char *s, uint64_t *out);
/* Decimal integer in [min, max]. */
int opts_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* Probability in [0, 1]. */
int opts_parse_prob(const char *s, double *out);

/* The long name of the option whose getopt_long value is val ("?" if none), for error messages. */
const char *opts_name(const struct option *lo, int val);

#endif
