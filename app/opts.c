/* SPDX-License-Identifier: MIT */
/* Command-line value parsing (app/opts.h). */
#include "app/opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int opts_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int opts_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if ((*end == 'i' || *end == 'B') && shift)
		end += *end == 'i' ? (end[1] == 'B' ? 2 : 1) : 1;
	if (*end || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int opts_parse_prob(const char *s, double *out)
{
	char *end;
	double v;

	if (!s || !*s)
		return -EINVAL;
	v = strtod(s, &end);
	if (*end || !(v >= 0.0 && v <= 1.0))
		return -EINVAL;
	*out = v;
	return 0;
}

const char *opts_name(const struct option *lo, int val)
{
	for (; lo->name; lo++)
		if (lo->val == val)
			return lo->name;
	return "?";
}

int opts_add_module(const char *prog, const char **list, size_t *n, size_t max, const char *arg)
{
	if (*n == max) {
		fprintf(stderr, "%s: at most %zu --module options\n", prog, max);
		return -EINVAL;
	}
	list[(*n)++] = arg;
	return 0;
}
