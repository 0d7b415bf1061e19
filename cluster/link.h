/* SPDX-License-Identifier: MIT */
/*
 * Cluster link: the node hypervisor's messages to and from its peers (cluster/msg.h), on top of a frame send
 * function (the node's endpoint in rackvm node, frame types CMSG_FRAME_TYPE_MIN..MAX; a direct call in unit tests).
 *
 * It implements the VM's cluster hooks (hypervisor/vm.h): interrupts and LDR/DFR replication are sent and
 * return at once; forwarded I/O blocks the calling vCPU thread until the owner answered (or died: -EHOSTDOWN);
 * the guest's exit is broadcast; an EOI of a level-triggered vector on a node other than the io node is sent to
 * the io node (forward_eoi) and returns at once. Received messages reach the VM through struct clink_ops: IRQ,
 * LOGICAL and EXIT in the receive context (the endpoint's I/O thread — they only queue work and kick vCPUs),
 * IO_REQ and EOI on the link's worker thread, in arrival order (device handlers may block, e.g. on the console,
 * and an EOI may re-deliver a still-asserted line to a vCPU on another node, which sends: neither may stall DSM
 * traffic or the acknowledgements that sending waits for).
 *
 * Reliability: sequenced messages are kept until the peer acknowledged them and resent (go-back-N) after rto_ns,
 * so a lossy fabric loses no IPI, I/O or exit; the receiver delivers each in order exactly once.
 */
#ifndef RACKVM_CLUSTER_LINK_H
#define RACKVM_CLUSTER_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypervisor/bus.h"
#include "hypervisor/irq.h"

struct clink;
struct vm_cluster_hooks;

/* What received messages do on this node (the VM's vm_remote_* entry points in rackvm node). */
struct clink_ops {
	void *opaque;
	int (*io)(void *opaque, enum bus_space space, struct io_access *a);
	void (*irq)(void *opaque, const struct irq_msg *m);
	void (*logical)(void *opaque, uint32_t apic_id, uint32_t ldr, uint32_t dfr);
	void (*exit)(void *opaque, uint32_t from, int code, bool fatal, const char *why);
	/* A peer's local APIC EOI'd level-triggered `vector` (vm_remote_eoi); may be NULL. Worker thread. */
	void (*eoi)(void *opaque, uint8_t vector);
};

/* Send one frame to node `to`: 0 or -errno (the link retransmits sequenced messages whose send failed). */
typedef int (*clink_send_fn)(void *opaque, uint32_t to, uint8_t type, const void *payload, size_t len);

struct clink_config {
	uint32_t self;
	unsigned n_nodes;
	clink_send_fn send;
	void *send_opaque;
	uint64_t rto_ns;              /* resend unacknowledged messages after this; 0 = 20 ms */
	uint64_t io_timeout_ns;       /* a forwarded access unanswered this long fails with -EHOSTDOWN; 0 = 30 s */
};

struct clink_stats {
	uint64_t irq_sent, irq_received, logical_sent, logical_received;
	uint64_t io_forwarded, io_served, io_failed;
	uint64_t eoi_sent, eoi_received, eoi_refused;   /* refused: the worker queue was full (one warning) */
	uint64_t retransmits, duplicates, out_of_order;
	uint64_t drops[5];            /* per enum cmsg_drop */
	uint64_t dropped;             /* sum of drops[] */
};

int clink_create(const struct clink_config *cfg, struct clink **out);
/* Stops the threads; pending forwarded accesses fail with -EHOSTDOWN. */
void clink_destroy(struct clink *l);

/* Attach what received messages act on (NULL to detach: they are then counted and ignored, I/O answered with
 * -ENODEV; detaching returns once every callback already running returned). Call before clink_ready_wait. */
void clink_set_ops(struct clink *l, const struct clink_ops *ops);
/* Fill the VM's cluster hooks; they stay valid until clink_destroy. */
void clink_hooks(struct clink *l, struct vm_cluster_hooks *out);

/* A received frame (any type; non-cluster and malformed ones are dropped and counted). Receive context. */
void clink_on_frame(struct clink *l, uint32_t from, uint8_t type, const void *payload, size_t len);
/* Node `node` died (the region's on_fatal): every pending and later forwarded access fails with -EHOSTDOWN. */
void clink_fail(struct clink *l, uint32_t node, const char *why);

/* Start barrier: send READY to every peer and wait until every peer's READY arrived. 0, -ETIMEDOUT, -EHOSTDOWN (a
 * peer died), -ECANCELED (a peer sent EXIT before its VM came up: it gave up at start). */
int clink_ready_wait(struct clink *l, uint64_t timeout_ns);
/* Wait until every sequenced message sent so far was acknowledged (the last EXIT before leaving). 0/-ETIMEDOUT. */
int clink_flush(struct clink *l, uint64_t timeout_ns);
/* Clock offset to `peer` (peer's CLOCK_MONOTONIC minus ours) from n ping-pongs: the sample with the smallest round
 * trip; |true offset - *offset_ns| <= *bound_ns (half that round trip). 0, or -ETIMEDOUT if no answer came. */
int clink_clock_offset(struct clink *l, uint32_t peer, unsigned n, int64_t *offset_ns, uint64_t *bound_ns);

/* Send an EXIT to every peer (the exit hook does this too). */
void clink_exit_broadcast(struct clink *l, int code, bool fatal, const char *why);

void clink_get_stats(struct clink *l, struct clink_stats *out);

#endif
