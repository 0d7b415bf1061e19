/* SPDX-License-Identifier: MIT */
/*
 * The APIC bus of one node (contract in irq.h; design note docs/apic.md).
 *
 * Resolution happens on the sender's node, against all n_cpus vCPUs of the guest:
 *   - a vCPU attached here is matched by lapic_match (its live id, mode, LDR, DFR);
 *   - a vCPU on another node is matched from what this node knows about it: its APIC id (physical destinations,
 *     shorthands, and x2APIC logical destinations, whose logical id derives from the APIC id) and its xAPIC
 *     LDR/DFR, replicated by apicbus_set_logical/_remote. Each entry is one 64-bit atomic (LDR high, DFR low),
 *     so readers on any thread see a consistent pair without a lock; writes are rare (boot, mode changes).
 * Then one remote->send_irq per destination node with any match, and lapic_accept for each local match. The
 * receiving node re-matches against its own lapics (apicbus_deliver_local), so a stale replica can only cost an
 * extra message, never a misdelivery.
 *
 * Lowest priority: exactly one destination, the matching vCPU with the lowest APIC id. The sender's node sends
 * only to the node holding it; that node, re-matching, again picks its lowest-id match — the same vCPU, since
 * the global minimum is also the minimum of its own node's matches.
 *
 * Thread safety: deliver and deliver_local may run concurrently on any threads (vCPU threads, the IOAPIC, the
 * cluster receive thread). attach publishes the lapic pointer with a release store; the vCPU table is otherwise
 * immutable after create. Counters are relaxed atomics.
 */
#include "hypervisor/irq.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "hypervisor/lapic.h"
#include "util/log.h"

/* Bounds the per-call node bitmap on the stack. */
#define APICBUS_MAX_CPUS 4096

struct apicbus_cpu {
	uint32_t apic_id;
	uint32_t node;
	unsigned node_idx;                  /* index into apicbus.nodes */
	_Atomic(struct lapic *) lapic;      /* attached (local vCPUs only) */
	_Atomic uint64_t logical;           /* LDR << 32 | DFR, replicated */
};

struct apicbus {
	unsigned n_cpus;
	uint32_t self;
	struct apicbus_remote remote;
	bool has_remote;
	unsigned n_nodes;
	uint32_t *nodes;                    /* distinct node ids that hold vCPUs */
	struct apicbus_cpu *cpus;
	_Atomic uint64_t delivered_local, sent_remote, received_remote, dropped_no_dest;
};

#define LOGICAL_RESET ((uint64_t)0xffffffffu)   /* LDR 0, DFR all ones (flat model) */

int apicbus_create(unsigned n_cpus, const uint32_t *apic_ids, const uint32_t *node_of, uint32_t self,
		   const struct apicbus_remote *remote, struct apicbus **out)
{
	struct apicbus *b;
	int err = -ENOMEM;

	if (!n_cpus || n_cpus > APICBUS_MAX_CPUS || !apic_ids)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->cpus = calloc(n_cpus, sizeof(*b->cpus));
	if (!b->cpus)
		goto out_free_bus;
	b->nodes = calloc(n_cpus, sizeof(*b->nodes));
	if (!b->nodes)
		goto out_free_cpus;
	b->n_cpus = n_cpus;
	b->self = self;
	if (remote) {
		b->remote = *remote;
		b->has_remote = true;
	}
	for (unsigned i = 0; i < n_cpus; i++) {
		struct apicbus_cpu *c = &b->cpus[i];
		unsigned k;

		c->apic_id = apic_ids[i];
		c->node = node_of ? node_of[i] : self;
		for (k = 0; k < b->n_nodes && b->nodes[k] != c->node; k++)
			;
		if (k == b->n_nodes)
			b->nodes[b->n_nodes++] = c->node;
		c->node_idx = k;
		atomic_init(&c->lapic, NULL);
		atomic_init(&c->logical, LOGICAL_RESET);
		for (unsigned j = 0; j < i; j++)
			if (b->cpus[j].apic_id == c->apic_id) {
				pr_err("apicbus: vCPUs %u and %u share APIC id %u", j, i, c->apic_id);
				err = -EINVAL;
				goto out_free_nodes;
			}
	}
	*out = b;
	return 0;

out_free_nodes:
	free(b->nodes);
out_free_cpus:
	free(b->cpus);
out_free_bus:
	free(b);
	return err;
}

void apicbus_destroy(struct apicbus *b)
{
	if (!b)
		return;
	free(b->nodes);
	free(b->cpus);
	free(b);
}

void apicbus_attach(struct apicbus *b, unsigned vcpu, struct lapic *l)
{
	if (vcpu >= b->n_cpus || b->cpus[vcpu].node != b->self) {
		pr_err("apicbus: vCPU %u is not placed on node %u", vcpu, b->self);
		return;
	}
	atomic_store_explicit(&b->cpus[vcpu].lapic, l, memory_order_release);
}

/* Same rules as lapic_match for an xAPIC-format logical destination (see lapic.c). */
static bool logical_match_xapic(uint64_t logical, uint8_t dest)
{
	uint8_t id = (uint8_t)(logical >> 56);
	uint32_t dfr = (uint32_t)logical;

	if (dest == 0xff)
		return true;
	if ((dfr >> 28) == 0xf)
		return id & dest;
	return (id >> 4) == (dest >> 4) && (id & dest & 0xf);
}

/* Match a vCPU of another node from what this node knows of it. May say yes where the lapic would say no
 * (a stale replica, a disabled APIC): the receiving node re-matches. */
static bool remote_match(const struct apicbus_cpu *c, const struct irq_msg *m)
{
	switch (m->shorthand) {
	case IRQ_SH_SELF:
		return m->source == c->apic_id;
	case IRQ_SH_ALL:
		return true;
	case IRQ_SH_OTHERS:
		return m->source != c->apic_id;
	default:
		break;
	}
	if (!m->logical) {
		if (m->x2apic)
			return m->dest == 0xffffffffu || m->dest == c->apic_id;
		return m->dest == 0xff || m->dest == c->apic_id;
	}
	if (m->x2apic) {
		uint32_t ldr = ((c->apic_id >> 4) << 16) | (1u << (c->apic_id & 0xf));

		if (m->dest == 0xffffffffu)
			return true;
		return (m->dest >> 16) == (ldr >> 16) && (m->dest & ldr & 0xffff);
	}
	return logical_match_xapic(atomic_load_explicit(&((struct apicbus_cpu *)c)->logical, memory_order_relaxed),
				   (uint8_t)m->dest);
}

static bool cpu_match(struct apicbus *b, struct apicbus_cpu *c, const struct irq_msg *m, struct lapic **l)
{
	*l = NULL;
	if (c->node != b->self)
		return remote_match(c, m);
	*l = atomic_load_explicit(&c->lapic, memory_order_acquire);
	return *l && lapic_match(*l, m);
}

/* Index of the matching vCPU with the lowest APIC id; local_only: among attached vCPUs. -1 if none. */
static int lowest_match(struct apicbus *b, const struct irq_msg *m, bool local_only)
{
	int best = -1;

	for (unsigned i = 0; i < b->n_cpus; i++) {
		struct apicbus_cpu *c = &b->cpus[i];
		struct lapic *l;

		if (local_only && c->node != b->self)
			continue;
		if (!cpu_match(b, c, m, &l))
			continue;
		if (best < 0 || c->apic_id < b->cpus[best].apic_id)
			best = (int)i;
	}
	return best;
}

static void accept_local(struct apicbus *b, struct lapic *l, const struct irq_msg *m)
{
	lapic_accept(l, m);
	atomic_fetch_add_explicit(&b->delivered_local, 1, memory_order_relaxed);
}

static int send_remote(struct apicbus *b, uint32_t node, const struct irq_msg *m)
{
	int r;

	if (!b->has_remote || !b->remote.send_irq) {
		pr_warn("apicbus: interrupt for node %u, but no remote hook", node);
		return -EHOSTUNREACH;
	}
	r = b->remote.send_irq(b->remote.opaque, node, m);
	if (r < 0) {
		pr_warn("apicbus: send to node %u failed: %d", node, r);
		return r;
	}
	atomic_fetch_add_explicit(&b->sent_remote, 1, memory_order_relaxed);
	return 0;
}

int apicbus_deliver(struct apicbus *b, const struct irq_msg *m)
{
	uint64_t want[(APICBUS_MAX_CPUS + 63) / 64];
	unsigned words = (b->n_nodes + 63) / 64;
	bool any = false;
	int err = 0;

	if (m->delivery == IRQ_LOWEST) {
		int i = lowest_match(b, m, false);
		struct apicbus_cpu *c;
		struct lapic *l;

		if (i < 0)
			goto out_dropped;
		c = &b->cpus[i];
		if (c->node != b->self)
			return send_remote(b, c->node, m);
		l = atomic_load_explicit(&c->lapic, memory_order_acquire);
		accept_local(b, l, m);
		return 0;
	}

	memset(want, 0, words * sizeof(want[0]));
	for (unsigned i = 0; i < b->n_cpus; i++) {
		struct apicbus_cpu *c = &b->cpus[i];
		struct lapic *l;

		if (!cpu_match(b, c, m, &l))
			continue;
		any = true;
		if (l)
			accept_local(b, l, m);
		else
			want[c->node_idx / 64] |= 1ull << (c->node_idx % 64);
	}
	if (!any)
		goto out_dropped;
	for (unsigned k = 0; k < b->n_nodes; k++) {
		int r;

		if (!(want[k / 64] & (1ull << (k % 64))))
			continue;
		r = send_remote(b, b->nodes[k], m);
		if (r < 0 && !err)
			err = r;
	}
	return err;

out_dropped:
	atomic_fetch_add_explicit(&b->dropped_no_dest, 1, memory_order_relaxed);
	return 0;
}

void apicbus_deliver_local(struct apicbus *b, const struct irq_msg *m)
{
	bool any = false;

	atomic_fetch_add_explicit(&b->received_remote, 1, memory_order_relaxed);
	if (m->delivery == IRQ_LOWEST) {
		int i = lowest_match(b, m, true);

		if (i >= 0) {
			accept_local(b, atomic_load_explicit(&b->cpus[i].lapic, memory_order_acquire), m);
			return;
		}
	} else {
		for (unsigned i = 0; i < b->n_cpus; i++) {
			struct apicbus_cpu *c = &b->cpus[i];
			struct lapic *l;

			if (c->node != b->self)
				continue;
			if (!cpu_match(b, c, m, &l))
				continue;
			accept_local(b, l, m);
			any = true;
		}
		if (any)
			return;
	}
	atomic_fetch_add_explicit(&b->dropped_no_dest, 1, memory_order_relaxed);
}

static struct apicbus_cpu *cpu_by_apic_id(struct apicbus *b, uint32_t apic_id)
{
	for (unsigned i = 0; i < b->n_cpus; i++)
		if (b->cpus[i].apic_id == apic_id)
			return &b->cpus[i];
	return NULL;
}

void apicbus_set_logical_remote(struct apicbus *b, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	struct apicbus_cpu *c = cpu_by_apic_id(b, apic_id);

	if (!c) {
		pr_warn("apicbus: logical id for unknown APIC %u", apic_id);
		return;
	}
	atomic_store_explicit(&c->logical, (uint64_t)ldr << 32 | dfr, memory_order_relaxed);
}

void apicbus_set_logical(struct apicbus *b, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	apicbus_set_logical_remote(b, apic_id, ldr, dfr);
	if (!b->has_remote || !b->remote.send_logical)
		return;
	for (unsigned k = 0; k < b->n_nodes; k++) {
		int r;

		if (b->nodes[k] == b->self)
			continue;
		r = b->remote.send_logical(b->remote.opaque, b->nodes[k], apic_id, ldr, dfr);
		if (r < 0)
			pr_warn("apicbus: LDR of APIC %u not replicated to node %u: %d", apic_id, b->nodes[k], r);
	}
}

void apicbus_get_stats(struct apicbus *b, struct apicbus_stats *out)
{
	out->delivered_local = atomic_load(&b->delivered_local);
	out->sent_remote = atomic_load(&b->sent_remote);
	out->received_remote = atomic_load(&b->received_remote);
	out->dropped_no_dest = atomic_load(&b->dropped_no_dest);
}
