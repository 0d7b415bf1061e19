/* SPDX-License-Identifier: MIT */
/*
 * Placement of a guest over nodes: which node runs each vCPU, and which guest RAM range each node is home for.
 *
 * Node k is one proximity domain: SRAT shows its vCPUs and one RAM range, and the DSM makes node k the home of
 * every page of that range, so a NUMA-aware guest mostly touches pages homed where it runs. Ranges are contiguous,
 * in node order, proportional to each node's vCPU count, with boundaries on 2 MiB (huge-page) multiples; the last
 * node takes the remainder. Ranges are offsets into guest RAM (= guest-physical addresses below the PCI hole;
 * rackvm node keeps guest RAM below it).
 */
#ifndef RACKVM_CLUSTER_PLACEMENT_H
#define RACKVM_CLUSTER_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#define PLACEMENT_ALIGN (2ull << 20)

/* "0,0,1,1": one node id per vCPU; or NULL/"" for the default, contiguous blocks (node k runs vCPUs
 * [k*V/N, (k+1)*V/N)). Every node must run at least one vCPU. 0, or -EINVAL with one pr_err line. */
int placement_parse(const char *spec, unsigned n_vcpus, unsigned n_nodes, uint32_t *node_of);

/* Home ranges (base[k], size[k]) for ram_size bytes (a multiple of 4 KiB, at least n_nodes * 2 MiB). 0/-EINVAL. */
int placement_mem_ranges(const uint32_t *node_of, unsigned n_vcpus, unsigned n_nodes, uint64_t ram_size,
			 uint64_t *base, uint64_t *size);

/* Page -> home node map for the dsm region (ram_size / 4096 entries) from the ranges above. */
void placement_home_map(const uint64_t *base, const uint64_t *size, unsigned n_nodes, uint32_t *home);

#endif
