/* SPDX-License-Identifier: MIT */
/*
 * DSM region: a range of memory kept coherent across the nodes of a membership. Each node creates the region with
 * the same size, membership and home map; every node's base pointer then shows the same bytes (sequentially
 * consistent), page by page on demand. This is what the hypervisor hands to KVM as guest RAM; without KVM ("host
 * thread mode") ordinary threads of the node process use the pointer directly.
 *
 * The network: the region is one subscriber of the node's endpoint (interconnect/endpoint.h), owning frame types
 * DSM_REGION_TYPE_MIN..MAX; the program's composition root creates the endpoint (and so picks the transport),
 * subscribes the region and whatever else shares the node's connections, then starts it. The region knows nothing
 * of the other subscribers. A one-node region needs no endpoint.
 *
 * Threads (see docs/dsm-backend.md): a fault thread (reads userfaultfd, feeds the engine), a timer thread (the
 * engine's timer), and the endpoint's I/O thread, which feeds received DSM frames and peer events. The engine runs
 * under one lock; the actions it emits are executed in order by whichever thread called it, under that lock.
 *
 * Failure: when a peer the region needs dies, the region enters the failed state: it records which node and why,
 * calls on_fatal (once, from one of its threads, outside the engine lock), then makes the whole mapping
 * inaccessible and wakes every waiter, so a thread blocked in a fault or touching the region afterwards takes
 * SIGSEGV — never a hang, never stale or zero data. Programs that want a clean message and exit code report from
 * on_fatal (or poll dsm_region_failed()) and exit.
 */
#ifndef RACKVM_DSM_REGION_H
#define RACKVM_DSM_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "interconnect/endpoint.h"
#include "util/hist.h"

struct dsm_region;

typedef void (*dsm_fatal_fn)(void *opaque, uint32_t node, const char *reason);

/* The endpoint frame types the region owns (DSM messages 0x20-0x2f, its LEAVE and PAIR frames, the rest
 * reserved). Whoever else subscribes to the node's endpoint uses other types. */
#define DSM_REGION_TYPE_MIN 0x20u
#define DSM_REGION_TYPE_MAX 0x3fu

struct dsm_region_config {
	uint32_t self;                       /* this node's id, < n_nodes */
	uint32_t n_nodes;                    /* nodes 0..n_nodes-1 share the region */
	/* The node's endpoint, created and not yet started (the region subscribes to it); required when n_nodes > 1,
	 * and its self must be `self` and its peers the other nodes. Its max_frame must be at least
	 * dsm_region_max_frame() (or 0, the default). The region never starts, stops or destroys it; destroy the
	 * region before the endpoint. */
	struct ic_endpoint *ep;
	size_t size;                         /* bytes, a multiple of 4 KiB */
	const uint32_t *home_map;            /* page -> node id (size/4096 entries); NULL = contiguous blocks */
	uint64_t lease_ns;                   /* 0 = engine default */
	uint64_t streak_gap_ns;              /* a fault this soon after the previous remote page was mapped makes a
	                                      * streak, during which GRANT_ACKs ride with the next request; 0 = 100 us */
	uint64_t ack_defer_ns;               /* a held-back GRANT_ACK goes out alone after this; 0 = 200 us */
	uint64_t retry_ns;                   /* 0 = engine default */
	uint32_t epoch;                      /* engine membership epoch; 0 = 1 */
	dsm_fatal_fn on_fatal;               /* may be NULL */
	void *opaque;
};

struct dsm_region_stats {
	uint64_t faults_read;         /* MISSING faults on a read */
	uint64_t faults_write;        /* MISSING faults on a write */
	uint64_t faults_wp;           /* writes to a Shared page */
	uint64_t faults_local;        /* resolved inside the fault's own engine step (no message waited for) */
	uint64_t faults_remote;       /* resolved later by a received message */
	uint64_t msgs_out, msgs_in;   /* DSM messages */
	uint64_t bytes_out, bytes_in; /* page payload bytes */
	uint64_t maps, unmaps, write_protects, stores, wakes, timers;
	uint64_t send_errors;         /* ic_send refused (peer down, queue full): the engine retransmits */
	uint64_t acks_paired;         /* GRANT_ACKs that went in one frame with the next message to that home */
	uint64_t copy_eexist;         /* MAP of a page the kernel already had (engine/backend disagreement) */
	uint64_t lock_contended;      /* engine lock found taken by another thread (fault vs I/O vs timer) */
	/* from the engine and the transport, at the time of the call */
	uint64_t coalesced;           /* faults on a page whose request was already outstanding */
	uint64_t retransmissions;     /* messages the engine sent again after retry_ns */
	uint64_t engine_drops;        /* received messages the engine dropped (stale, duplicate, bad...) */
	uint64_t frames_lost;         /* fabric only: frames the fabric dropped on purpose */
	struct hist remote_fault_ns;  /* fault reported -> page mapped, for faults resolved remotely */
};

int dsm_region_create(const struct dsm_region_config *cfg, struct dsm_region **out);
/* Leave — tell every peer this node no longer touches the region and serve until each said the same or is down
 * (docs/dsm-backend.md) — then unsubscribe from the endpoint, stop the threads, unregister and unmap. Safe in the failed state. */
void dsm_region_destroy(struct dsm_region *r);

void *dsm_region_base(const struct dsm_region *r);
size_t dsm_region_size(const struct dsm_region *r);
uint32_t dsm_region_home_of(const struct dsm_region *r, uint64_t page);

/* Wait until every other member's connection is up. 0, -ETIMEDOUT, or -EIO when the region failed. */
int dsm_region_wait_peers(struct dsm_region *r, uint64_t timeout_ns);
/* True once the region failed; node/reason (if not NULL) say why. */
bool dsm_region_failed(struct dsm_region *r, uint32_t *node, char *reason, size_t reason_len);
void dsm_region_get_stats(struct dsm_region *r, struct dsm_region_stats *out);

/* Where the remote faults went: the pages (index in the region) with the most faults resolved by a peer so far,
 * most first, at most max; returns how many. For the operator's "which guest memory do the nodes fight over"
 * (rackvm node's summary prints the top ones). */
struct dsm_page_count {
	uint64_t page;
	uint32_t faults;
};
size_t dsm_region_hot_pages(struct dsm_region *r, struct dsm_page_count *out, size_t max);

/* The largest frame payload the region sends: the endpoint's max_frame must allow it. */
size_t dsm_region_max_frame(void);

#endif
