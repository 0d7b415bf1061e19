/* SPDX-License-Identifier: MIT */
/*
 * For tests and benchmarks whose only network user is one DSM region per node: what a composition root does for
 * them — create node `self`'s endpoint over `members` (every node, self included; self's address is where it
 * listens), subscribe the region, start the endpoint. Used by tests/unit/test_region.c,
 * tests/integration/dsm_node.c and tests/bench/bench_dsm.c.
 */
#ifndef RACKVM_TESTS_REGION_NET_H
#define RACKVM_TESTS_REGION_NET_H

#include <errno.h>
#include <string.h>

#include "dsm/region.h"
#include "interconnect/endpoint.h"

struct region_net_opts {
	const char *transport;          /* "loop", "tcp", "fabric" ... */
	const char *inner;              /* fabric only: wrapped transport */
	struct ic_link_params link;     /* fabric only */
	uint64_t seed;                  /* fabric only */
	uint32_t heartbeat_ms, dead_ms; /* 0 = transport defaults */
};

/* cfg->self is the node; cfg->n_nodes and cfg->ep are filled in here. On failure nothing is left behind. */
static inline int region_net_create(const struct ic_peer_addr *members, size_t n_members,
				    const struct region_net_opts *no, const uint8_t *key, size_t key_len,
				    struct dsm_region_config *cfg, struct ic_endpoint **ep_out, struct dsm_region **r_out)
{
	struct ic_peer_addr peers[64];
	struct ic_endpoint_config ec;
	struct ic_endpoint *ep = NULL;
	size_t np = 0;
	int err;

	*ep_out = NULL;
	if (n_members > 64)
		return -EINVAL;
	memset(&ec, 0, sizeof(ec));
	for (size_t i = 0; i < n_members; i++) {
		if (members[i].id == cfg->self)
			ec.ic.listen = members[i].addr;
		else
			peers[np++] = members[i];
	}
	ec.transport = no->transport;
	ec.ic.self = cfg->self;
	ec.ic.peers = peers;
	ec.ic.n_peers = np;
	ec.ic.key = key;
	ec.ic.key_len = key_len;
	ec.ic.epoch = cfg->epoch ? cfg->epoch : 1;
	ec.ic.max_frame = (uint32_t)dsm_region_max_frame();
	ec.ic.heartbeat_ms = no->heartbeat_ms;
	ec.ic.dead_ms = no->dead_ms;
	ec.ic.inner = no->inner;
	ec.ic.link = no->link;
	ec.ic.seed = no->seed;
	err = ic_endpoint_create(&ec, &ep);
	if (err)
		return err;
	cfg->n_nodes = (uint32_t)n_members;
	cfg->ep = n_members > 1 ? ep : NULL;
	err = dsm_region_create(cfg, r_out);
	if (err) {
		ic_endpoint_destroy(ep);
		return err;
	}
	err = ic_endpoint_start(ep);
	if (err) {
		dsm_region_destroy(*r_out);
		ic_endpoint_destroy(ep);
		return err;
	}
	*ep_out = ep;
	return 0;
}

/* The region first (its leave needs the endpoint), then the endpoint. */
static inline void region_net_destroy(struct ic_endpoint *ep, struct dsm_region *r)
{
	dsm_region_destroy(r);
	ic_endpoint_destroy(ep);
}

#endif
