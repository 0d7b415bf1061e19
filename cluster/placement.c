/* SPDX-License-Identifier: MIT */
/* vCPU placement and home ranges (cluster/placement.h). */
#include "cluster/placement.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define PAGE 4096ull

int placement_parse(const char *spec, unsigned n_vcpus, unsigned n_nodes, uint32_t *node_of)
{
	unsigned count[1024] = { 0 };
	const char *p = spec;
	unsigned i = 0;

	if (n_nodes == 0 || n_nodes > 1024 || n_vcpus == 0) {
		pr_err("placement: need at least one node (at most 1024) and one vCPU");
		return -EINVAL;
	}
	if (!spec || !*spec) {
		if (n_vcpus < n_nodes) {
			pr_err("placement: %u vCPUs cannot cover %u nodes (each node runs at least one)", n_vcpus,
			       n_nodes);
			return -EINVAL;
		}
		for (unsigned v = 0; v < n_vcpus; v++)
			node_of[v] = (uint32_t)((uint64_t)v * n_nodes / n_vcpus);
		return 0;
	}
	while (*p) {
		char *end;
		unsigned long n;

		if (*p < '0' || *p > '9') {
			pr_err("placement '%s': expected a node id at '%s'", spec, p);
			return -EINVAL;
		}
		n = strtoul(p, &end, 10);
		if (n >= n_nodes) {
			pr_err("placement '%s': node %lu does not exist (%u nodes)", spec, n, n_nodes);
			return -EINVAL;
		}
		if (i == n_vcpus) {
			pr_err("placement '%s': more entries than the %u vCPUs", spec, n_vcpus);
			return -EINVAL;
		}
		node_of[i++] = (uint32_t)n;
		count[n]++;
		p = end;
		if (*p == ',' && p[1])
			p++;
		else if (*p)
		{
			pr_err("placement '%s': expected ',' at '%s'", spec, p);
			return -EINVAL;
		}
	}
	if (i != n_vcpus) {
		pr_err("placement '%s': %u entries for %u vCPUs", spec, i, n_vcpus);
		return -EINVAL;
	}
	for (unsigned k = 0; k < n_nodes; k++) {
		if (!count[k]) {
			pr_err("placement '%s': node %u runs no vCPU", spec, k);
			return -EINVAL;
		}
	}
	return 0;
}

int placement_mem_ranges(const uint32_t *node_of, unsigned n_vcpus, unsigned n_nodes, uint64_t ram_size,
			 uint64_t *base, uint64_t *size)
{
	uint64_t cum = 0, prev = 0;

	if (n_nodes == 0 || n_vcpus == 0 || ram_size % PAGE || ram_size < n_nodes * PLACEMENT_ALIGN) {
		pr_err("placement: %llu bytes of RAM cannot be split over %u nodes (at least 2 MiB each)",
		       (unsigned long long)ram_size, n_nodes);
		return -EINVAL;
	}
	for (unsigned k = 0; k < n_nodes; k++) {
		uint64_t end;

		for (unsigned v = 0; v < n_vcpus; v++)
			cum += node_of[v] == k;
		if (k == n_nodes - 1) {
			end = ram_size;
		} else {
			end = (ram_size / n_vcpus * cum + ram_size % n_vcpus * cum / n_vcpus) / PLACEMENT_ALIGN *
			      PLACEMENT_ALIGN;
			/* at least 2 MiB each, leaving 2 MiB for every later node */
			if (end < prev + PLACEMENT_ALIGN)
				end = prev + PLACEMENT_ALIGN;
			if (end > ram_size - (uint64_t)(n_nodes - 1 - k) * PLACEMENT_ALIGN)
				end = (ram_size - (uint64_t)(n_nodes - 1 - k) * PLACEMENT_ALIGN) / PLACEMENT_ALIGN *
				      PLACEMENT_ALIGN;
		}
		base[k] = prev;
		size[k] = end - prev;
		prev = end;
	}
	return 0;
}

void placement_home_map(const uint64_t *base, const uint64_t *size, unsigned n_nodes, uint32_t *home)
{
	for (unsigned k = 0; k < n_nodes; k++)
		for (uint64_t pg = base[k] / PAGE; pg < (base[k] + size[k]) / PAGE; pg++)
			home[pg] = k;
}
