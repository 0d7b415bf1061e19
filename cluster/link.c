/* SPDX-License-Identifier: MIT */
/*
 * Cluster link (cluster/link.h; message formats in cluster/msg.h; design in docs/cluster.md).
 *
 * Per peer, a send side (next sequence number; a ring of sent, not yet acknowledged messages, encoded) and a
 * receive side (the next sequence number to deliver). Sending a sequenced message appends it to the ring and
 * sends it, both under the peer's tx lock, so messages leave in sequence order. A received sequenced message is
 * delivered iff it is the next expected one; earlier ones are duplicates, later ones follow a loss (the sender
 * will resend from the loss on: go-back-N); every one is answered with a cumulative ACK. The timer thread resends
 * a peer's whole ring when its oldest entry was last sent more than rto_ns ago.
 *
 * Threads: callers of the hooks (vCPU threads, device timers), the receive context (one thread: the
 * endpoint's I/O thread), the worker (runs forwarded accesses and EOIs for peers, in arrival order), the timer
 * (retransmissions).
 * Locks: peer[p].tx (send ring), l->lock (I/O waiters, READY, pings, failure, worker queue); never nested.
 */
#include "cluster/link.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/msg.h"
#include "hypervisor/vm.h"
#include "util/clock.h"
#include "util/log.h"

#define RING 256               /* unacknowledged messages per peer */
#define IO_SLOTS 128           /* forwarded accesses in flight (at most one per local vCPU) */
#define WORK_QUEUE 256         /* received IO_REQs waiting for the worker */
#define SEND_WAIT_NS (5 * NSEC_PER_SEC)   /* a full ring stalls the sender at most this long */

struct tx_entry {
	uint64_t seq;
	uint64_t sent_at;
	uint8_t type;
	uint16_t len;
	uint8_t buf[CMSG_MAX_LEN];
};

struct peer {
	pthread_mutex_t tx;
	pthread_cond_t tx_space;
	uint64_t next_seq;         /* tx: next sequence number to assign (from 1) */
	uint32_t head, n;          /* tx ring */
	struct tx_entry ring[RING];
	uint64_t rx_next;          /* rx (receive context only): next sequence number to deliver */
	bool ready;                /* l->lock: its READY arrived */
};

struct io_slot {
	bool busy, done;
	uint64_t id;
	uint32_t node;
	int err;
	uint64_t data;
};

struct work {
	uint32_t from;
	struct cmsg m;
};

struct ping_wait {
	uint64_t id;
	bool done;
	uint64_t t0, t1, t2;
};

struct clink {
	uint32_t self;
	unsigned n_nodes;
	clink_send_fn send;
	void *send_opaque;
	uint64_t rto_ns, io_timeout_ns;
	struct peer *peer;

	pthread_mutex_t lock;
	pthread_cond_t cond;        /* I/O completions, READY, pongs, failure */
	struct clink_ops ops;
	bool have_ops;
	unsigned ops_users;         /* callbacks running with a copy of ops (detaching waits for 0) */
	struct io_slot io[IO_SLOTS];
	uint64_t io_gen;
	bool failed;
	uint32_t failed_node;
	bool peer_exited;           /* an EXIT arrived before the VM's ops were attached (a peer gave up at start) */
	struct ping_wait ping;
	struct work work[WORK_QUEUE];
	uint32_t work_head, work_n;
	pthread_cond_t work_cond;

	atomic_bool eoi_refuse_warned;
	atomic_bool stop;
	pthread_t worker_th, timer_th;
	bool worker_started, timer_started;
	pthread_mutex_t timer_lock;
	pthread_cond_t timer_cond;

	struct {
		atomic_uint_fast64_t irq_sent, irq_received, logical_sent, logical_received;
		atomic_uint_fast64_t io_forwarded, io_served, io_failed;
		atomic_uint_fast64_t eoi_sent, eoi_received, eoi_refused;
		atomic_uint_fast64_t retransmits, duplicates, out_of_order;
		atomic_uint_fast64_t drops[CMSG_DROP_NREASONS];
	} st;
};

/* ---- sending -------------------------------------------------------------------------------------------- */

static int link_send_unsequenced(struct clink *l, uint32_t to, const struct cmsg *m)
{
	uint8_t buf[CMSG_MAX_LEN];
	size_t len = cmsg_encode(m, buf, sizeof(buf));

	if (!len)
		return -EINVAL;
	return l->send(l->send_opaque, to, m->type, buf, len);
}

/* Queue and send a sequenced message. 0 once it is in the ring (a failed send is retried by the timer); -EINVAL
 * for a message the codec refuses, -ENOBUFS if the ring stayed full (the peer acknowledges nothing). */
static int link_send(struct clink *l, uint32_t to, struct cmsg *m)
{
	struct peer *p;
	struct tx_entry *e;
	uint64_t deadline = 0;
	size_t len;

	if (to >= l->n_nodes || to == l->self)
		return -EINVAL;
	p = &l->peer[to];
	pthread_mutex_lock(&p->tx);
	while (p->n == RING) {
		struct timespec ts;
		uint64_t now = clock_now_ns();

		if (!deadline)
			deadline = now + SEND_WAIT_NS;
		if (now >= deadline || atomic_load(&l->stop)) {
			pthread_mutex_unlock(&p->tx);
			pr_warn("node %u acknowledges nothing: dropping a %s", to, cmsg_type_name(m->type));
			return -ENOBUFS;
		}
		ts = clock_timespec(now + 10 * NSEC_PER_MSEC);
		pthread_cond_timedwait(&p->tx_space, &p->tx, &ts);
	}
	m->seq = p->next_seq;
	e = &p->ring[(p->head + p->n) % RING];
	len = cmsg_encode(m, e->buf, sizeof(e->buf));
	if (!len) {
		pthread_mutex_unlock(&p->tx);
		return -EINVAL;
	}
	p->next_seq++;
	p->n++;
	e->seq = m->seq;
	e->type = m->type;
	e->len = (uint16_t)len;
	e->sent_at = clock_now_ns();
	/* under the tx lock: frames leave in sequence order */
	l->send(l->send_opaque, to, e->type, e->buf, e->len);
	pthread_mutex_unlock(&p->tx);
	return 0;
}

static void link_on_ack(struct clink *l, uint32_t from, uint64_t ack)
{
	struct peer *p = &l->peer[from];

	pthread_mutex_lock(&p->tx);
	while (p->n && p->ring[p->head].seq <= ack) {
		p->head = (p->head + 1) % RING;
		p->n--;
	}
	pthread_cond_broadcast(&p->tx_space);
	pthread_mutex_unlock(&p->tx);
}

static void *link_timer_main(void *arg)
{
	struct clink *l = arg;

	pthread_mutex_lock(&l->timer_lock);
	while (!atomic_load(&l->stop)) {
		struct timespec ts;
		uint64_t when = clock_now_ns() + l->rto_ns / 4;

		ts = clock_timespec(when);
		pthread_cond_timedwait(&l->timer_cond, &l->timer_lock, &ts);
		if (atomic_load(&l->stop))
			break;
		pthread_mutex_unlock(&l->timer_lock);
		for (uint32_t to = 0; to < l->n_nodes; to++) {
			struct peer *p = &l->peer[to];
			uint64_t now = clock_now_ns();

			if (to == l->self)
				continue;
			pthread_mutex_lock(&p->tx);
			if (p->n && now - p->ring[p->head].sent_at >= l->rto_ns) {
				for (uint32_t i = 0; i < p->n; i++) {
					struct tx_entry *e = &p->ring[(p->head + i) % RING];

					e->sent_at = now;
					atomic_fetch_add(&l->st.retransmits, 1);
					if (l->send(l->send_opaque, to, e->type, e->buf, e->len))
						break;
				}
			}
			pthread_mutex_unlock(&p->tx);
		}
		pthread_mutex_lock(&l->timer_lock);
	}
	pthread_mutex_unlock(&l->timer_lock);
	return NULL;
}

/* ---- hooks (vCPU threads, devices) ----------------------------------------------------------------------- */

static int hook_send_irq(void *opaque, uint32_t node, const struct irq_msg *irq)
{
	struct clink *l = opaque;
	struct cmsg m = { .type = CMSG_IRQ, .irq = *irq };
	int err = link_send(l, node, &m);

	if (!err)
		atomic_fetch_add(&l->st.irq_sent, 1);
	return err;
}

static int hook_send_logical(void *opaque, uint32_t node, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	struct clink *l = opaque;
	struct cmsg m = { .type = CMSG_LOGICAL, .logical = { apic_id, ldr, dfr } };
	int err = link_send(l, node, &m);

	if (!err)
		atomic_fetch_add(&l->st.logical_sent, 1);
	return err;
}

static int hook_forward_io(void *opaque, uint32_t node, enum bus_space space, struct io_access *a)
{
	struct clink *l = opaque;
	struct cmsg m = { .type = CMSG_IO_REQ };
	struct io_slot *s = NULL;
	uint64_t deadline = clock_now_ns() + l->io_timeout_ns;
	int err;

	pthread_mutex_lock(&l->lock);
	if (l->failed) {
		pthread_mutex_unlock(&l->lock);
		return -EHOSTDOWN;
	}
	for (unsigned i = 0; i < IO_SLOTS; i++) {
		if (!l->io[i].busy) {
			s = &l->io[i];
			break;
		}
	}
	if (!s) {
		pthread_mutex_unlock(&l->lock);
		return -EBUSY;
	}
	s->busy = true;
	s->done = false;
	s->node = node;
	s->id = ++l->io_gen * IO_SLOTS + (uint64_t)(s - l->io);
	pthread_mutex_unlock(&l->lock);

	m.io_req.id = s->id;
	m.io_req.space = (uint8_t)space;
	m.io_req.size = a->size;
	m.io_req.write = a->write;
	m.io_req.vcpu = a->vcpu;
	m.io_req.addr = a->addr;
	m.io_req.data = a->write ? a->data : 0;
	err = link_send(l, node, &m);
	atomic_fetch_add(&l->st.io_forwarded, 1);

	pthread_mutex_lock(&l->lock);
	while (!err && !s->done && !l->failed) {
		struct timespec ts;

		if (clock_now_ns() >= deadline) {
			pr_err("node %u did not answer a forwarded %s access to 0x%llx within %llu s", node,
			       space == BUS_PIO ? "port" : "MMIO", (unsigned long long)a->addr,
			       (unsigned long long)(l->io_timeout_ns / NSEC_PER_SEC));
			err = -EHOSTDOWN;
			break;
		}
		ts = clock_timespec(deadline);
		pthread_cond_timedwait(&l->cond, &l->lock, &ts);
	}
	if (!err && !s->done)
		err = -EHOSTDOWN;
	if (!err) {
		err = s->err;
		if (!err && !a->write)
			a->data = s->data;
	}
	s->busy = false;
	pthread_mutex_unlock(&l->lock);
	if (err)
		atomic_fetch_add(&l->st.io_failed, 1);
	return err;
}

/* Sequenced like an IRQ: a lost EOI would leave the pin's remote IRR set and the line dead for good. */
static void hook_forward_eoi(void *opaque, uint32_t node, uint8_t vector)
{
	struct clink *l = opaque;
	struct cmsg m = { .type = CMSG_EOI, .eoi = { vector } };

	if (!link_send(l, node, &m))
		atomic_fetch_add(&l->st.eoi_sent, 1);
}

void clink_exit_broadcast(struct clink *l, int code, bool fatal, const char *why)
{
	for (uint32_t to = 0; to < l->n_nodes; to++) {
		struct cmsg m = { .type = CMSG_EXIT };
		size_t n = 0;

		if (to == l->self)
			continue;
		m.exit.code = code < 0 || code > 255 ? 1 : code;
		m.exit.fatal = fatal;
		for (const char *c = why ? why : ""; *c && n < CMSG_WHY_MAX; c++)
			m.exit.why[n++] = *c >= 0x20 && *c <= 0x7e ? *c : '?';
		link_send(l, to, &m);
	}
}

static void hook_exit_broadcast(void *opaque, int code, const char *why)
{
	clink_exit_broadcast(opaque, code, false, why);
}

void clink_hooks(struct clink *l, struct vm_cluster_hooks *out)
{
	memset(out, 0, sizeof(*out));
	out->opaque = l;
	out->apic.opaque = l;
	out->apic.send_irq = hook_send_irq;
	out->apic.send_logical = hook_send_logical;
	out->forward_io = hook_forward_io;
	out->exit_broadcast = hook_exit_broadcast;
	out->forward_eoi = hook_forward_eoi;
}

/* ---- receiving ------------------------------------------------------------------------------------------- */

/* A copy of ops to call outside l->lock; true (and pinned until link_put_ops) if ops are attached. */
static bool link_get_ops(struct clink *l, struct clink_ops *ops)
{
	bool have;

	pthread_mutex_lock(&l->lock);
	have = l->have_ops;
	*ops = l->ops;
	if (have)
		l->ops_users++;
	pthread_mutex_unlock(&l->lock);
	return have;
}

static void link_put_ops(struct clink *l)
{
	pthread_mutex_lock(&l->lock);
	if (--l->ops_users == 0)
		pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

static void *link_worker_main(void *arg)
{
	struct clink *l = arg;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		struct work w;
		struct cmsg resp = { .type = CMSG_IO_RESP };
		struct io_access a;
		int err;

		while (!l->work_n && !atomic_load(&l->stop))
			pthread_cond_wait(&l->work_cond, &l->lock);
		if (atomic_load(&l->stop))
			break;
		w = l->work[l->work_head];
		l->work_head = (l->work_head + 1) % WORK_QUEUE;
		l->work_n--;
		pthread_mutex_unlock(&l->lock);

		if (w.m.type == CMSG_EOI) {
			struct clink_ops ops;

			if (link_get_ops(l, &ops)) {
				if (ops.eoi)
					ops.eoi(ops.opaque, w.m.eoi.vector);
				link_put_ops(l);
			}
			pthread_mutex_lock(&l->lock);
			continue;
		}
		memset(&a, 0, sizeof(a));
		a.addr = w.m.io_req.addr;
		a.size = w.m.io_req.size;
		a.write = w.m.io_req.write;
		a.data = w.m.io_req.data;
		a.vcpu = w.m.io_req.vcpu;
		{
			struct clink_ops ops;

			err = -ENODEV;
			if (link_get_ops(l, &ops)) {
				if (ops.io)
					err = ops.io(ops.opaque, (enum bus_space)w.m.io_req.space, &a);
				link_put_ops(l);
			}
		}
		resp.io_resp.id = w.m.io_req.id;
		resp.io_resp.err = err <= 0 && err > -4096 ? err : -EIO;
		/* a read's value, cut to the access size (the handler may leave garbage above it) */
		resp.io_resp.data = !a.write && !err ? (a.size == 8 ? a.data : a.data & ((1ull << (8 * a.size)) - 1))
						     : 0;
		atomic_fetch_add(&l->st.io_served, 1);
		link_send(l, w.from, &resp);
		pthread_mutex_lock(&l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

static void link_deliver(struct clink *l, uint32_t from, const struct cmsg *m)
{
	struct clink_ops ops;
	bool have = link_get_ops(l, &ops);

	switch (m->type) {
	case CMSG_IRQ:
		atomic_fetch_add(&l->st.irq_received, 1);
		if (have && ops.irq)
			ops.irq(ops.opaque, &m->irq);
		break;
	case CMSG_LOGICAL:
		atomic_fetch_add(&l->st.logical_received, 1);
		if (have && ops.logical)
			ops.logical(ops.opaque, m->logical.apic_id, m->logical.ldr, m->logical.dfr);
		break;
	case CMSG_IO_REQ:
		pthread_mutex_lock(&l->lock);
		if (l->work_n == WORK_QUEUE) {
			pthread_mutex_unlock(&l->lock);
			struct cmsg resp = { .type = CMSG_IO_RESP, .io_resp = { .id = m->io_req.id, .err = -EBUSY } };

			pr_warn("node %u: too many forwarded accesses queued, refusing one", from);
			link_send(l, from, &resp);
			break;
		}
		l->work[(l->work_head + l->work_n) % WORK_QUEUE] = (struct work){ from, *m };
		l->work_n++;
		pthread_cond_signal(&l->work_cond);
		pthread_mutex_unlock(&l->lock);
		break;
	case CMSG_IO_RESP: {
		uint64_t slot = m->io_resp.id % IO_SLOTS;

		pthread_mutex_lock(&l->lock);
		/* only an answer to the access in flight in that slot, from the node it was sent to */
		if (l->io[slot].busy && !l->io[slot].done && l->io[slot].id == m->io_resp.id &&
		    l->io[slot].node == from) {
			l->io[slot].done = true;
			l->io[slot].err = m->io_resp.err;
			l->io[slot].data = m->io_resp.data;
			pthread_cond_broadcast(&l->cond);
		} else {
			pr_warn("node %u answered an I/O request nobody waits for (id %llu)", from,
				(unsigned long long)m->io_resp.id);
		}
		pthread_mutex_unlock(&l->lock);
		break;
	}
	case CMSG_EOI:
		atomic_fetch_add(&l->st.eoi_received, 1);
		pthread_mutex_lock(&l->lock);
		if (l->work_n == WORK_QUEUE) {
			/* Cannot happen with an honest peer: each pin has at most one EOI outstanding (24 pins). */
			pthread_mutex_unlock(&l->lock);
			atomic_fetch_add(&l->st.eoi_refused, 1);
			if (!atomic_exchange(&l->eoi_refuse_warned, true))
				pr_warn("node %u: too much queued work, dropping an EOI of vector %u", from,
					m->eoi.vector);
			break;
		}
		l->work[(l->work_head + l->work_n) % WORK_QUEUE] = (struct work){ from, *m };
		l->work_n++;
		pthread_cond_signal(&l->work_cond);
		pthread_mutex_unlock(&l->lock);
		break;
	case CMSG_EXIT:
		if (have && ops.exit) {
			ops.exit(ops.opaque, from, m->exit.code, m->exit.fatal, m->exit.why);
		} else {
			/* no VM here yet: a peer ended before the start barrier; clink_ready_wait gives up */
			pthread_mutex_lock(&l->lock);
			if (!l->peer_exited) {
				l->peer_exited = true;
				pr_warn("node %u ended before the guest started: %.*s", from, (int)CMSG_WHY_MAX,
					m->exit.why);
			}
			pthread_cond_broadcast(&l->cond);
			pthread_mutex_unlock(&l->lock);
		}
		break;
	case CMSG_READY:
		pthread_mutex_lock(&l->lock);
		l->peer[from].ready = true;
		pthread_cond_broadcast(&l->cond);
		pthread_mutex_unlock(&l->lock);
		break;
	}
	if (have)
		link_put_ops(l);
}

void clink_on_frame(struct clink *l, uint32_t from, uint8_t type, const void *payload, size_t len)
{
	struct cmsg m;
	int err;

	if (from >= l->n_nodes || from == l->self) {
		pr_warn("frame type 0x%x from unknown node %u dropped", type, from);
		atomic_fetch_add(&l->st.drops[CMSG_DROP_FIELD], 1);
		return;
	}
	err = cmsg_decode(type, payload, len, &m);
	if (err) {
		enum cmsg_drop why = (enum cmsg_drop)(-err - 1);

		atomic_fetch_add(&l->st.drops[why], 1);
		pr_warn("node %u: %s frame (type 0x%x, %zu bytes) dropped: %s", from, cmsg_type_name(type), type, len,
			cmsg_drop_name(why));
		return;
	}
	if (cmsg_type_is_sequenced(type)) {
		struct peer *p = &l->peer[from];
		struct cmsg ack = { .type = CMSG_ACK };
		bool deliver = m.seq == p->rx_next;

		if (deliver)
			p->rx_next++;
		else if (m.seq < p->rx_next)
			atomic_fetch_add(&l->st.duplicates, 1);
		else
			atomic_fetch_add(&l->st.out_of_order, 1);
		ack.ack.ack = p->rx_next - 1;
		link_send_unsequenced(l, from, &ack);
		if (deliver)
			link_deliver(l, from, &m);
		return;
	}
	switch (type) {
	case CMSG_ACK:
		link_on_ack(l, from, m.ack.ack);
		break;
	case CMSG_PING: {
		struct cmsg pong = { .type = CMSG_PONG, .ping = { m.ping.id, m.ping.t0, clock_now_ns() } };

		link_send_unsequenced(l, from, &pong);
		break;
	}
	case CMSG_PONG:
		pthread_mutex_lock(&l->lock);
		if (!l->ping.done && l->ping.id == m.ping.id && l->ping.t0 == m.ping.t0) {
			l->ping.t1 = m.ping.t1;
			l->ping.t2 = clock_now_ns();
			l->ping.done = true;
			pthread_cond_broadcast(&l->cond);
		}
		pthread_mutex_unlock(&l->lock);
		break;
	}
}

void clink_fail(struct clink *l, uint32_t node, const char *why)
{
	pthread_mutex_lock(&l->lock);
	if (!l->failed) {
		l->failed = true;
		l->failed_node = node;
		pr_debug("link failed: node %u: %s", node, why ? why : "?");
	}
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

/* ---- start-up and shutdown ------------------------------------------------------------------------------ */

static bool wait_until(struct clink *l, uint64_t deadline)
{
	struct timespec ts;

	if (clock_now_ns() >= deadline)
		return false;
	ts = clock_timespec(deadline);
	pthread_cond_timedwait(&l->cond, &l->lock, &ts);
	return true;
}

int clink_ready_wait(struct clink *l, uint64_t timeout_ns)
{
	uint64_t deadline = clock_now_ns() + timeout_ns;
	int err = 0;

	for (uint32_t to = 0; to < l->n_nodes; to++) {
		struct cmsg m = { .type = CMSG_READY };

		if (to != l->self && (err = link_send(l, to, &m)))
			return err;
	}
	pthread_mutex_lock(&l->lock);
	for (;;) {
		unsigned waiting = 0;

		for (uint32_t p = 0; p < l->n_nodes; p++)
			waiting += p != l->self && !l->peer[p].ready;
		if (!waiting)
			break;
		if (l->failed) {
			err = -EHOSTDOWN;
			break;
		}
		if (l->peer_exited) {
			err = -ECANCELED;
			break;
		}
		if (!wait_until(l, deadline)) {
			err = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&l->lock);
	return err;
}

int clink_flush(struct clink *l, uint64_t timeout_ns)
{
	uint64_t deadline = clock_now_ns() + timeout_ns;

	for (uint32_t to = 0; to < l->n_nodes; to++) {
		struct peer *p = &l->peer[to];

		if (to == l->self)
			continue;
		pthread_mutex_lock(&p->tx);
		while (p->n) {
			struct timespec ts;

			if (clock_now_ns() >= deadline) {
				pthread_mutex_unlock(&p->tx);
				return -ETIMEDOUT;
			}
			ts = clock_timespec(clock_now_ns() + 5 * NSEC_PER_MSEC);
			pthread_cond_timedwait(&p->tx_space, &p->tx, &ts);
		}
		pthread_mutex_unlock(&p->tx);
	}
	return 0;
}

int clink_clock_offset(struct clink *l, uint32_t peer, unsigned n, int64_t *offset_ns, uint64_t *bound_ns)
{
	uint64_t best_rtt = UINT64_MAX;
	int64_t best_off = 0;

	if (peer >= l->n_nodes || peer == l->self)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		struct cmsg m = { .type = CMSG_PING };
		uint64_t deadline;

		pthread_mutex_lock(&l->lock);
		l->ping.id++;
		l->ping.done = false;
		l->ping.t0 = clock_now_ns();
		m.ping.id = l->ping.id;
		m.ping.t0 = l->ping.t0;
		pthread_mutex_unlock(&l->lock);
		link_send_unsequenced(l, peer, &m);
		deadline = clock_now_ns() + 200 * NSEC_PER_MSEC;
		pthread_mutex_lock(&l->lock);
		while (!l->ping.done && !l->failed && wait_until(l, deadline))
			;
		if (l->ping.done) {
			uint64_t rtt = l->ping.t2 - l->ping.t0;

			if (rtt < best_rtt) {
				best_rtt = rtt;
				/* the answer was taken somewhere in [t0, t2]: assume the middle */
				best_off = (int64_t)(l->ping.t1 - (l->ping.t0 + rtt / 2));
			}
		}
		pthread_mutex_unlock(&l->lock);
	}
	if (best_rtt == UINT64_MAX)
		return -ETIMEDOUT;
	*offset_ns = best_off;
	*bound_ns = best_rtt / 2 + 1;
	return 0;
}

void clink_set_ops(struct clink *l, const struct clink_ops *ops)
{
	pthread_mutex_lock(&l->lock);
	l->have_ops = ops != NULL;
	if (ops)
		l->ops = *ops;
	else
		memset(&l->ops, 0, sizeof(l->ops));
	/* detaching: callbacks already running finish before the caller frees what they act on */
	while (!ops && l->ops_users)
		pthread_cond_wait(&l->cond, &l->lock);
	pthread_mutex_unlock(&l->lock);
}

void clink_get_stats(struct clink *l, struct clink_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->irq_sent = atomic_load(&l->st.irq_sent);
	out->irq_received = atomic_load(&l->st.irq_received);
	out->logical_sent = atomic_load(&l->st.logical_sent);
	out->logical_received = atomic_load(&l->st.logical_received);
	out->io_forwarded = atomic_load(&l->st.io_forwarded);
	out->io_served = atomic_load(&l->st.io_served);
	out->io_failed = atomic_load(&l->st.io_failed);
	out->eoi_sent = atomic_load(&l->st.eoi_sent);
	out->eoi_received = atomic_load(&l->st.eoi_received);
	out->eoi_refused = atomic_load(&l->st.eoi_refused);
	out->retransmits = atomic_load(&l->st.retransmits);
	out->duplicates = atomic_load(&l->st.duplicates);
	out->out_of_order = atomic_load(&l->st.out_of_order);
	static_assert(CMSG_DROP_NREASONS == 5, "clink_stats.drops size");
	for (unsigned i = 0; i < CMSG_DROP_NREASONS; i++) {
		out->drops[i] = atomic_load(&l->st.drops[i]);
		out->dropped += out->drops[i];
	}
}

int clink_create(const struct clink_config *cfg, struct clink **out)
{
	pthread_condattr_t ca;
	struct clink *l;
	int err;

	if (!cfg->send || cfg->n_nodes < 1 || cfg->self >= cfg->n_nodes)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->peer = calloc(cfg->n_nodes, sizeof(*l->peer));
	if (!l->peer) {
		free(l);
		return -ENOMEM;
	}
	l->self = cfg->self;
	l->n_nodes = cfg->n_nodes;
	l->send = cfg->send;
	l->send_opaque = cfg->send_opaque;
	l->rto_ns = cfg->rto_ns ? cfg->rto_ns : 20 * NSEC_PER_MSEC;
	l->io_timeout_ns = cfg->io_timeout_ns ? cfg->io_timeout_ns : 30 * NSEC_PER_SEC;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	for (unsigned p = 0; p < l->n_nodes; p++) {
		pthread_mutex_init(&l->peer[p].tx, NULL);
		pthread_cond_init(&l->peer[p].tx_space, &ca);
		l->peer[p].next_seq = 1;
		l->peer[p].rx_next = 1;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, &ca);
	pthread_cond_init(&l->work_cond, &ca);
	pthread_mutex_init(&l->timer_lock, NULL);
	pthread_cond_init(&l->timer_cond, &ca);
	pthread_condattr_destroy(&ca);
	err = -pthread_create(&l->worker_th, NULL, link_worker_main, l);
	if (err)
		goto out_destroy;
	l->worker_started = true;
	err = -pthread_create(&l->timer_th, NULL, link_timer_main, l);
	if (err)
		goto out_destroy;
	l->timer_started = true;
	*out = l;
	return 0;

out_destroy:
	clink_destroy(l);
	return err;
}

void clink_destroy(struct clink *l)
{
	if (!l)
		return;
	atomic_store(&l->stop, true);
	clink_fail(l, l->self, "link destroyed");
	pthread_mutex_lock(&l->lock);
	pthread_cond_broadcast(&l->work_cond);
	pthread_mutex_unlock(&l->lock);
	if (l->worker_started)
		pthread_join(l->worker_th, NULL);
	pthread_mutex_lock(&l->timer_lock);
	pthread_cond_broadcast(&l->timer_cond);
	pthread_mutex_unlock(&l->timer_lock);
	if (l->timer_started)
		pthread_join(l->timer_th, NULL);
	for (unsigned p = 0; p < l->n_nodes; p++) {
		pthread_cond_destroy(&l->peer[p].tx_space);
		pthread_mutex_destroy(&l->peer[p].tx);
	}
	pthread_cond_destroy(&l->cond);
	pthread_cond_destroy(&l->work_cond);
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->timer_cond);
	pthread_mutex_destroy(&l->timer_lock);
	free(l->peer);
	free(l);
}
