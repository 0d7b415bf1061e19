/* SPDX-License-Identifier: MIT */
/*
 * DSM region: wires the protocol engine (dsm/protocol.h), the userfaultfd mapping (dsm/uffd.h) and the node's network
 * endpoint (interconnect/endpoint.h), of which it is one subscriber (frame types DSM_REGION_TYPE_MIN..MAX). The
 * design, ordering argument and failure behaviour are in docs/dsm-backend.md.
 *
 * Threads
 *  - fault thread: poll(uffd, stop eventfd) -> read up to 16 faults -> engine_fault for each.
 *  - the endpoint's I/O thread (not the region's): on_frame -> engine_recv, on_peer -> engine_peer_down; LEAVE
 *                  frames; on_tick releases held-back GRANT_ACKs.
 *  - timer thread: sleeps on a condition variable until the engine's timer (ns resolution: the lease is 100 us,
 *                  ic_poll only has ms timeouts) -> engine_timer.
 * Every engine call and the execution of its actions happen under r->lock, in emission order, except the send
 * syscalls: a SEND copies its header and bytes into the peer's outbox there, and the queue is sent after the lock
 * is dropped, in order, by whichever thread finds it idle (region_flush). A GRANT_ACK may be held back in the
 * outbox while the node faults back to back and then goes in one frame (PAIR) with the next request to that home.
 * The fault thread allocates nothing and blocks on nothing but that lock; all tables are sized at create.
 *
 * Ordering: the engine emits WRITE_PROTECT before any SEND/STORE/STASH of LOCAL data and UNMAP after it; we
 * execute in that order and UFFDIO_WRITEPROTECT returns only once no CPU can still write the page, so the bytes
 * we copy out are final and the zap loses nothing. A SEND of LOCAL bytes copies them into the outbox when the
 * action executes (before the UNMAP), so what is sent does not depend on when the send syscall runs.
 *
 * Leaving: a node that destroys its region while others still use it would take its homed pages and Modified
 * copies with it. dsm_region_destroy() therefore first sends LEAVE (frame type DSM_REGION_T_LEAVE) to every peer
 * and keeps serving until every peer's LEAVE arrived (or it went down): only then has everyone stopped touching
 * the region. Once this node is leaving, no peer's death is a failure any more (nothing here needs anyone).
 */
#include "dsm/region.h"

#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dsm/protocol.h"
#include "dsm/uffd.h"
#include "util/clock.h"
#include "util/log.h"

#define DSM_REGION_T_LEAVE 0x30u    /* region control: "I no longer touch the region" (empty payload) */
#define DSM_REGION_T_PAIR 0x31u     /* a GRANT_ACK header followed by the next engine message to the same peer */
#define FAULT_BATCH 16
#define STASH_POOL 64               /* preallocated stash buffers; more are malloc'ed (counted) */
#define LEAVE_TIMEOUT_NS (10 * NSEC_PER_SEC)
#define OUTBOX_LEN 16               /* queued sends per peer; an enqueuer finding it full waits (or sends itself) */
#ifndef ACK_DEFER_NS
#define ACK_DEFER_NS (200 * 1000)   /* a deferred GRANT_ACK goes out after this at the latest (+ up to ~1 ms: the
				     * I/O thread's poll has millisecond timeouts); 0 = never defer */
#endif
#define STREAK_GAP_NS (100 * 1000)   /* default: a fault this soon after the previous remote fault was mapped
				     * continues a streak of back-to-back faults (dsm_region_config.streak_gap_ns) */
#define STREAK_MIN 2                /* streak length from which the next fault is expected to follow */

/*
 * One queued send. The engine's bytes are copied in when the SEND action executes (under r->lock, in action
 * order), so what goes out is what the page/slot held at that point of the action list, whatever runs later.
 */
struct region_out {
	uint8_t type;                   /* frame type: a DSM message type or DSM_REGION_T_LEAVE */
	bool has_data;
	struct dsm_msg msg;
	uint8_t *data;                  /* DSM_PAGE_SIZE, allocated on the slot's first data send, kept */
};

/*
 * Per-peer FIFO of sends (see "Executing actions" in docs/dsm-backend.md). Entries are appended in engine emission
 * order under r->lock; whoever finds the box not busy after dropping r->lock sends every entry in order, others
 * leave theirs to it. So sends leave in emission order per peer (what the tcp connection's order relies on), no
 * send syscall runs under r->lock, and a thread that enqueues behind a send in progress returns at once instead of
 * sleeping until it ends.
 */
struct region_outbox {
	pthread_mutex_t lock;
	pthread_cond_t space;
	uint32_t head, n;
	bool busy;                      /* a thread is sending from this box (it empties it before clearing this) */
	bool dirty;                     /* r->lock: in r->dirty, to be flushed after r->lock is dropped */
	bool deferred;                  /* r->lock: in r->deferred */
	bool held;                      /* ob->lock: the last entry is a GRANT_ACK held back (deferred): a flusher that
	                                 * finds it alone leaves it for the next message or the tick */
	struct region_out slot[OUTBOX_LEN];
};

static_assert(DSM_PAGE_SIZE == DSM_UFFD_PAGE_SIZE, "one page size");
static_assert(DSM_MSG_TYPE_MIN >= DSM_REGION_TYPE_MIN && DSM_MSG_TYPE_MAX <= DSM_REGION_TYPE_MAX &&
		      DSM_REGION_T_LEAVE <= DSM_REGION_TYPE_MAX && DSM_REGION_T_PAIR <= DSM_REGION_TYPE_MAX,
	      "every frame type of the region is in its endpoint range");

struct dsm_region {
	struct dsm_uffd *uffd;
	struct dsm_engine *eng;
	struct ic_endpoint *ep;         /* NULL for a one-node region */
	int ep_sub;                     /* our subscription, -1 none */
	uint8_t *base;
	size_t size;
	uint64_t n_pages;
	uint32_t self, n_nodes;
	dsm_fatal_fn on_fatal;
	void *opaque;

	/* r->lock: the engine, everything it names, and the fields below down to `stats`. */
	pthread_mutex_t lock;
	struct dsm_action *acts;
	uint32_t acts_cap;
	uint8_t *home_store;            /* n_homed slots of DSM_PAGE_SIZE */
	uint8_t **stash;                /* per page: stashed bytes or NULL */
	uint8_t *stash_pool;            /* STASH_POOL buffers */
	uint8_t *stash_free[STASH_POOL];
	uint32_t n_stash_free;
	uint64_t *fault_t0;             /* per page: when the first still-unanswered fault was reported, 0 = none */
	uint32_t *remote_count;         /* per page: faults resolved remotely (saturating), for dsm_region_hot_pages */
	uint64_t cur_fault_page;        /* page of the fault input being executed, UINT64_MAX otherwise */
	bool fatal_pending;
	struct dsm_region_stats stats;
	uint64_t stash_mallocs, local_not_present;
	uint32_t *dirty;                /* peers with queued sends nobody has been told to flush yet */
	uint32_t n_dirty;
	uint32_t *deferred;             /* peers whose queue ends with a GRANT_ACK held back (not in r->dirty) */
	uint32_t n_deferred;
	uint64_t deferred_since;        /* when the oldest of them was held back */
	bool in_io;                     /* the input being executed is a frame, on the I/O thread */
	uint64_t last_remote_map;       /* when the last remote fault was mapped */
	uint32_t fault_streak;          /* faults in a row that came within streak_gap_ns of the previous mapping */
	uint64_t streak_gap_ns;
	uint64_t ack_defer_ns;          /* held-back GRANT_ACKs go out alone after this (dsm_region_config.ack_defer_ns) */

	/* Sends (r->outbox[p].lock each, never held while taking r->lock). */
	struct region_outbox *outbox;   /* n_nodes (self's unused) */
	atomic_uint_fast64_t msgs_sent, send_errors, acks_paired;

	/* Timer: r->lock too; the timer thread sleeps on timer_cond. */
	pthread_cond_t timer_cond;
	uint64_t timer_when;
	uint64_t timer_sleep_until;     /* deadline the timer thread sleeps to; UINT64_MAX = indefinitely */

	/* Peers and failure: r->st_lock (never held while taking r->lock). */
	pthread_mutex_t st_lock;
	pthread_cond_t st_cond;
	bool *peer_up, *peer_ever_up, *peer_left;
	uint32_t n_up, n_left;
	bool leaving;
	atomic_bool failed;
	uint32_t dead_node;
	char reason[DSM_REASON_MAX];
	atomic_bool fatal_reported;

	atomic_bool stop;
	int stop_efd;
	pthread_t fault_th, timer_th;
	bool fault_started, subscribed, timer_started;
};

/* Take the engine lock, counting how often another thread had it (the case for sharding it). */
static void region_lock(struct dsm_region *r)
{
	if (pthread_mutex_trylock(&r->lock) == 0)
		return;
	pthread_mutex_lock(&r->lock);
	r->stats.lock_contended++;
}

static uint8_t *region_page(struct dsm_region *r, uint64_t page)
{
	return r->base + page * DSM_PAGE_SIZE;
}

static uint8_t *region_home_slot(struct dsm_region *r, uint64_t page)
{
	int64_t slot = dsm_engine_home_slot(r->eng, page);

	return slot < 0 ? NULL : r->home_store + (uint64_t)slot * DSM_PAGE_SIZE;
}

/* Bytes of this node's mapping about to be read by one of our own threads. A missing page would fault into our
 * own fault thread while we hold the lock — a deadlock — so check first (one mincore, far below a network hop). */
static const uint8_t *region_local_bytes(struct dsm_region *r, uint64_t page)
{
	unsigned char vec = 0;

	if (mincore(region_page(r, page), DSM_PAGE_SIZE, &vec) < 0 || !(vec & 1)) {
		r->local_not_present++;
		pr_err("page %llu is not present but the engine asked for its local bytes",
		       (unsigned long long)page);
		return NULL;
	}
	return region_page(r, page);
}

/* ---- failure -------------------------------------------------------------------------------------------- */

static void region_record_failure(struct dsm_region *r, uint32_t node, const char *reason)
{
	pthread_mutex_lock(&r->st_lock);
	if (!atomic_load(&r->failed)) {
		r->dead_node = node;
		snprintf(r->reason, sizeof(r->reason), "%s", reason);
		atomic_store(&r->failed, true);
	}
	pthread_cond_broadcast(&r->st_cond);
	pthread_mutex_unlock(&r->st_lock);
}

/* Called by the thread that executed a FATAL, after dropping r->lock. */
static void region_report_failure(struct dsm_region *r)
{
	if (atomic_exchange(&r->fatal_reported, true))
		return;
	pr_err("region failed: node %u: %s", r->dead_node, r->reason);
	if (r->on_fatal)
		r->on_fatal(r->opaque, r->dead_node, r->reason);
	/* Waiters must not hang and must not see wrong bytes: every access to the region now raises SIGSEGV. */
	dsm_uffd_fail_all(r->uffd);
}

/* ---- action execution (r->lock held) ---------------------------------------------------------------------- */

static void region_fault_answered(struct dsm_region *r, uint64_t page, uint64_t now)
{
	uint64_t t0 = r->fault_t0[page];

	if (!t0)
		return;
	r->fault_t0[page] = 0;
	if (page == r->cur_fault_page) {
		r->stats.faults_local++;
	} else {
		r->stats.faults_remote++;
		if (r->remote_count[page] != UINT32_MAX)
			r->remote_count[page]++;
		hist_record(&r->stats.remote_fault_ns, now > t0 ? now - t0 : 0);
		r->last_remote_map = now;
	}
}

static int region_map(struct dsm_region *r, const struct dsm_action *a)
{
	bool wp = a->mode == DSM_MODE_RO;
	const void *src = NULL;
	int err = 0;

	switch (a->data) {
	case DSM_DATA_KEEP:
		return dsm_uffd_protect(r->uffd, a->page, wp) ?: (wp ? dsm_uffd_wake(r->uffd, a->page) : 0);
	case DSM_DATA_ZERO:
		err = dsm_uffd_zero(r->uffd, a->page, wp);
		break;
	case DSM_DATA_MSG:
		src = a->payload;
		break;
	case DSM_DATA_HOME:
		src = region_home_slot(r, a->page);
		break;
	default:
		return -EINVAL;
	}
	if (a->data != DSM_DATA_ZERO) {
		if (!src)
			return -EINVAL;
		err = dsm_uffd_copy(r->uffd, a->page, src, wp);
	}
	if (err == -EEXIST) {
		/* The engine thinks the page is absent; its bytes are what the engine just chose, so replace. */
		r->stats.copy_eexist++;
		pr_warn("page %llu already present at MAP; replacing", (unsigned long long)a->page);
		dsm_uffd_zap(r->uffd, a->page);
		err = src ? dsm_uffd_copy(r->uffd, a->page, src, wp) : dsm_uffd_zero(r->uffd, a->page, wp);
	}
	return err;
}

static uint8_t *region_stash_get(struct dsm_region *r)
{
	uint8_t *buf;

	if (r->n_stash_free)
		return r->stash_free[--r->n_stash_free];
	buf = aligned_alloc(64, DSM_PAGE_SIZE);
	if (buf)
		r->stash_mallocs++;
	return buf;
}

static void region_stash_put(struct dsm_region *r, uint8_t *buf)
{
	if (buf >= r->stash_pool && buf < r->stash_pool + (size_t)STASH_POOL * DSM_PAGE_SIZE)
		r->stash_free[r->n_stash_free++] = buf;
	else
		free(buf);
}

/* Send the queued entries of peer p unless another thread is already doing it (it will send ours too: it only
 * stops once it finds the box empty under the box lock). Called without r->lock. */
static void region_flush(struct dsm_region *r, uint32_t p)
{
	struct region_outbox *ob = &r->outbox[p];

	pthread_mutex_lock(&ob->lock);
	if (ob->busy) {
		pthread_mutex_unlock(&ob->lock);
		return;
	}
	ob->busy = true;
	/* A held GRANT_ACK alone in the box stays: a flush still running for the previous request (the reply came
	 * back meanwhile) must not send it on its own, or the next request could not take it along (PAIR). */
	while (ob->n && !(ob->n == 1 && ob->held)) {
		struct region_out *o = &ob->slot[ob->head];
		struct region_out *o2 = &ob->slot[(ob->head + 1) % OUTBOX_LEN];
		/* A GRANT_ACK followed by another engine message goes in one frame with it (PAIR): one send, one MAC,
		 * one wakeup at the home instead of two. The receiver hands them to its engine in this order. */
		bool pair = ob->n >= 2 && o->type == DSM_MSG_GRANT_ACK && !o->has_data &&
			    o2->type != DSM_REGION_T_LEAVE;
		struct iovec iov[3] = { { &o->msg, sizeof(o->msg) }, { o->data, DSM_PAGE_SIZE } };
		uint32_t used = pair ? 2 : 1;
		int err;

		/* The slots stay ours until head moves: enqueuers only write behind head + n. */
		pthread_mutex_unlock(&ob->lock);
		if (pair) {
			iov[1] = (struct iovec){ &o2->msg, sizeof(o2->msg) };
			iov[2] = (struct iovec){ o2->data, DSM_PAGE_SIZE };
			err = ic_endpoint_send(r->ep, p, DSM_REGION_T_PAIR, 0, iov, o2->has_data ? 3 : 2);
		} else if (o->type == DSM_REGION_T_LEAVE) {
			err = ic_endpoint_send(r->ep, p, o->type, 0, iov, 0);
		} else {
			err = ic_endpoint_send(r->ep, p, o->type, 0, iov, o->has_data ? 2 : 1);
		}
		if (err) {
			/* Not fatal: the engine retransmits after retry_ns; a peer that is really gone comes as
			 * PEER_DOWN. */
			atomic_fetch_add(&r->send_errors, 1);
			pr_debug("send type 0x%x to node %u: %s", o->type, p, strerror(-err));
		} else if (o->type != DSM_REGION_T_LEAVE) {
			atomic_fetch_add(&r->msgs_sent, used);
			if (pair)
				atomic_fetch_add(&r->acks_paired, 1);
		}
		pthread_mutex_lock(&ob->lock);
		ob->head = (ob->head + used) % OUTBOX_LEN;
		ob->n -= used;
		pthread_cond_broadcast(&ob->space);
	}
	ob->busy = false;
	pthread_mutex_unlock(&ob->lock);
}

/* Append a send for peer p; returns the slot with ob->lock held (the caller fills it and calls
 * region_out_commit). A full box is emptied by this thread if nobody is sending from it (an engine input can emit
 * more sends to one peer than the box holds, e.g. the retransmissions of a timer), else waited on. */
static struct region_out *region_out_begin(struct dsm_region *r, uint32_t p)
{
	struct region_outbox *ob = &r->outbox[p];

	pthread_mutex_lock(&ob->lock);
	while (ob->n == OUTBOX_LEN) {
		if (!ob->busy) {
			pthread_mutex_unlock(&ob->lock);
			region_flush(r, p);
			pthread_mutex_lock(&ob->lock);
		} else {
			pthread_cond_wait(&ob->space, &ob->lock);
		}
	}
	return &ob->slot[(ob->head + ob->n) % OUTBOX_LEN];
}

static void region_out_commit(struct dsm_region *r, uint32_t p, bool held)
{
	struct region_outbox *ob = &r->outbox[p];

	ob->n++;
	ob->held = held;
	pthread_mutex_unlock(&ob->lock);
}

static void region_add_dirty(struct dsm_region *r, uint32_t p)
{
	if (!r->outbox[p].dirty) {
		r->outbox[p].dirty = true;
		r->dirty[r->n_dirty++] = p;
	}
}

/* r->lock held: release every held-back GRANT_ACK to be flushed once r->lock is dropped. */
static void region_release_deferred(struct dsm_region *r)
{
	while (r->n_deferred) {
		uint32_t p = r->deferred[r->n_deferred - 1];

		__atomic_store_n(&r->n_deferred, r->n_deferred - 1, __ATOMIC_RELAXED);
		r->outbox[p].deferred = false;
		pthread_mutex_lock(&r->outbox[p].lock);
		r->outbox[p].held = false;
		pthread_mutex_unlock(&r->outbox[p].lock);
		region_add_dirty(r, p);
	}
}

/* r->lock held: p has entries to flush once r->lock is dropped. Any held-back acks go with them: a send is
 * about to be made anyway, and they should not wait for their deadline behind it. */
static void region_mark_dirty(struct dsm_region *r, uint32_t p)
{
	region_release_deferred(r);
	region_add_dirty(r, p);
}

/*
 * Whether to hold back a GRANT_ACK this frame's input queued for p (r->lock held). The ack follows the MAP that
 * woke the faulting thread; when that thread has been faulting back to back (a scan, the read benchmark), its
 * next request comes within microseconds and carries the ack out with it, one send after the other from the
 * fault thread: the home then usually wakes once for both, and the I/O thread does not compete with the woken
 * thread for a CPU with a send. Without such a streak the ack goes at once (someone may be waiting for the
 * page at the home). Either way it is only later on the wire, in order: what any network may do.
 */
static bool region_defer_ack(struct dsm_region *r, const struct dsm_action *a)
{
	return r->ack_defer_ns && r->in_io && a->msg.type == DSM_MSG_GRANT_ACK && !r->outbox[a->peer].dirty &&
	       r->fault_streak >= STREAK_MIN;
}

static int region_send(struct dsm_region *r, const struct dsm_action *a)
{
	const void *data = NULL;
	struct region_out *o;

	if (a->peer >= r->n_nodes || a->peer == r->self)
		return -EINVAL;
	switch (a->data) {
	case DSM_DATA_NONE:
		break;
	case DSM_DATA_LOCAL:
		data = region_local_bytes(r, a->page);
		break;
	case DSM_DATA_HOME:
		data = region_home_slot(r, a->page);
		break;
	case DSM_DATA_STASH:
		data = r->stash[a->page];
		break;
	default:
		return -EINVAL;
	}
	if (a->data != DSM_DATA_NONE && !data)
		return -EINVAL;
	o = region_out_begin(r, a->peer);
	if (data && !o->data) {
		o->data = aligned_alloc(64, DSM_PAGE_SIZE);
		if (!o->data) {
			pthread_mutex_unlock(&r->outbox[a->peer].lock);
			return -ENOMEM;
		}
	}
	o->type = a->msg.type;
	o->msg = a->msg;
	o->has_data = data != NULL;
	if (data) {
		/* The copy-out of LOCAL bytes happens here, between the WRITE_PROTECT and the UNMAP the engine
		 * put around this SEND (see "Ordering argument"). */
		memcpy(o->data, data, DSM_PAGE_SIZE);
		r->stats.bytes_out += DSM_PAGE_SIZE;
	}
	bool defer = region_defer_ack(r, a);

	region_out_commit(r, a->peer, defer);
	if (defer) {
		if (!r->outbox[a->peer].deferred) {
			if (!r->n_deferred)
				r->deferred_since = clock_now_ns();
			r->outbox[a->peer].deferred = true;
			r->deferred[r->n_deferred] = a->peer;
			__atomic_store_n(&r->n_deferred, r->n_deferred + 1, __ATOMIC_RELAXED);
		}
	} else {
		region_mark_dirty(r, a->peer);
	}
	return 0;
}

static int region_exec_one(struct dsm_region *r, const struct dsm_action *a, uint64_t now)
{
	uint8_t *slot;
	const void *src;

	switch (a->type) {
	case DSM_ACT_SEND:
		return region_send(r, a);
	case DSM_ACT_MAP:
		r->stats.maps++;
		region_fault_answered(r, a->page, now);
		return region_map(r, a);
	case DSM_ACT_WRITE_PROTECT:
		r->stats.write_protects++;
		return dsm_uffd_protect(r->uffd, a->page, true);
	case DSM_ACT_UNMAP:
		r->stats.unmaps++;
		return dsm_uffd_zap(r->uffd, a->page);
	case DSM_ACT_STORE:
		r->stats.stores++;
		slot = region_home_slot(r, a->page);
		src = a->data == DSM_DATA_MSG ? a->payload
		      : a->data == DSM_DATA_LOCAL ? (const void *)region_local_bytes(r, a->page) : NULL;
		if (!slot || !src)
			return -EINVAL;
		memcpy(slot, src, DSM_PAGE_SIZE);
		return 0;
	case DSM_ACT_WAKE:
		r->stats.wakes++;
		region_fault_answered(r, a->page, now);
		return dsm_uffd_wake(r->uffd, a->page);
	case DSM_ACT_STASH:
		src = region_local_bytes(r, a->page);
		if (!src)
			return -EINVAL;
		if (!r->stash[a->page])
			r->stash[a->page] = region_stash_get(r);
		if (!r->stash[a->page])
			return -ENOMEM;
		memcpy(r->stash[a->page], src, DSM_PAGE_SIZE);
		return 0;
	case DSM_ACT_DROP_STASH:
		if (r->stash[a->page]) {
			region_stash_put(r, r->stash[a->page]);
			r->stash[a->page] = NULL;
		}
		return 0;
	case DSM_ACT_TIMER:
		r->stats.timers++;
		r->timer_when = a->when;
		/* Wake the timer thread only when it would sleep past the new time: the engine re-arms on most
		 * requests, and a futex wake + context switch per fault is a measurable cost on a small machine.
		 * A later or cancelled time is noticed when the thread wakes at its old deadline. */
		if (a->when && a->when < r->timer_sleep_until)
			pthread_cond_signal(&r->timer_cond);
		return 0;
	case DSM_ACT_FATAL:
		region_record_failure(r, a->peer, a->reason);
		r->fatal_pending = true;
		return 0;
	}
	return -EINVAL;
}

/* Execute r->acts in order. An action that fails means the backend cannot do what the engine decided: continuing
 * could expose wrong bytes, so the region fails (FATAL blaming this node). */
static void region_exec(struct dsm_region *r, const struct dsm_actions *out, uint64_t now)
{
	if (out->overflow) {
		region_record_failure(r, r->self, "engine action list overflow (backend bug)");
		r->fatal_pending = true;
		return;
	}
	for (uint32_t i = 0; i < out->n; i++) {
		const struct dsm_action *a = &out->v[i];
		int err;

		pr_debug("%s page %llu data %s peer %u msg %s", dsm_action_type_name(a->type),
			 (unsigned long long)a->page, dsm_data_name(a->data), a->peer,
			 a->type == DSM_ACT_SEND ? dsm_msg_type_name(a->msg.type) : "-");
		err = region_exec_one(r, a, now);

		if (err) {
			char why[DSM_REASON_MAX];

			snprintf(why, sizeof(why), "backend could not execute %s on page %llu: %s",
				 dsm_action_type_name(a->type), (unsigned long long)a->page, strerror(-err));
			pr_err("%s", why);
			region_record_failure(r, r->self, why);
			r->fatal_pending = true;
			return;
		}
	}
}

/* ---- inputs ------------------------------------------------------------------------------------------------ */

/* Drop r->lock, then send what the input queued and report a failure it caused. */
static void region_after_input(struct dsm_region *r)
{
	uint32_t todo[64];
	bool fatal = r->fatal_pending;

	r->fatal_pending = false;
	for (;;) {
		uint32_t n = 0;

		while (r->n_dirty && n < 64) {
			uint32_t p = r->dirty[--r->n_dirty];

			r->outbox[p].dirty = false;
			todo[n++] = p;
		}
		pthread_mutex_unlock(&r->lock);
		for (uint32_t i = 0; i < n; i++)
			region_flush(r, todo[i]);
		if (n < 64)
			break;
		pthread_mutex_lock(&r->lock);
	}
	if (fatal)
		region_report_failure(r);
}

static void region_on_msg(struct dsm_region *r, uint32_t src, const void *buf, size_t len);

static void region_on_frame(void *opaque, uint32_t src, const struct ic_frame *f)
{
	struct dsm_region *r = opaque;

	if (f->type == DSM_REGION_T_LEAVE) {
		pthread_mutex_lock(&r->st_lock);
		if (src < r->n_nodes && !r->peer_left[src]) {
			r->peer_left[src] = true;
			r->n_left++;
			pthread_cond_broadcast(&r->st_cond);
		}
		pthread_mutex_unlock(&r->st_lock);
		return;
	}
	if (f->type == DSM_REGION_T_PAIR) {
		/* header-only GRANT_ACK, then one whole message; the engine validates each (a short frame is
		 * dropped there as a short message) */
		size_t first = f->len < sizeof(struct dsm_msg) ? f->len : sizeof(struct dsm_msg);

		region_on_msg(r, src, f->payload, first);
		region_on_msg(r, src, (const uint8_t *)f->payload + first, f->len - first);
		return;
	}
	if (f->type < DSM_MSG_TYPE_MIN || f->type > DSM_MSG_TYPE_MAX)
		return;
	region_on_msg(r, src, f->payload, f->len);
}

static void region_on_msg(struct dsm_region *r, uint32_t src, const void *buf, size_t len)
{
	struct dsm_actions out;
	uint64_t now;

	if (atomic_load(&r->failed))
		return;
	region_lock(r);
	now = clock_now_ns();
	dsm_actions_init(&out, r->acts, r->acts_cap);
	r->stats.msgs_in++;
	if (len == dsm_msg_len(DSM_MF_DATA))
		r->stats.bytes_in += DSM_PAGE_SIZE;
	r->in_io = true;
	if (dsm_engine_recv(r->eng, src, buf, len, now, &out) == 0)
		region_exec(r, &out, now);
	r->in_io = false;
	region_after_input(r);
}

static void region_on_peer(void *opaque, uint32_t peer, enum ic_peer_event ev, const char *why)
{
	struct dsm_region *r = opaque;
	struct dsm_actions out;
	bool tell_engine = false;
	uint64_t now;

	if (peer >= r->n_nodes)
		return;
	pthread_mutex_lock(&r->st_lock);
	if (ev == IC_PEER_UP) {
		if (!r->peer_up[peer]) {
			r->peer_up[peer] = true;
			r->n_up++;
		}
		if (r->peer_ever_up[peer] && !r->peer_left[peer])
			pr_warn("node %u reconnected: it may have lost its state", peer);
		r->peer_ever_up[peer] = true;
	} else {
		if (r->peer_up[peer]) {
			r->peer_up[peer] = false;
			r->n_up--;
		}
		/* A peer that never came up holds nothing yet. One that sent LEAVE no longer touches the region but
		 * may still home pages we need, so deaths only go unreported once we are leaving ourselves: from
		 * then on nothing here needs anyone (and the last LEAVE exchanged is never known to have arrived). */
		tell_engine = r->peer_ever_up[peer] && !r->leaving;
		if (tell_engine)
			pr_warn("node %u is down: %s", peer, why ? why : "?");
	}
	pthread_cond_broadcast(&r->st_cond);
	pthread_mutex_unlock(&r->st_lock);
	if (!tell_engine || atomic_load(&r->failed))
		return;
	region_lock(r);
	now = clock_now_ns();
	dsm_actions_init(&out, r->acts, r->acts_cap);
	dsm_engine_peer_down(r->eng, peer, now, &out);
	region_exec(r, &out, now);
	region_after_input(r);
}

static void *region_fault_main(void *arg)
{
	struct dsm_region *r = arg;
	struct dsm_uffd_fault f[FAULT_BATCH];
	struct pollfd p[2] = { { .fd = dsm_uffd_fd(r->uffd), .events = POLLIN },
			       { .fd = r->stop_efd, .events = POLLIN } };

	while (!atomic_load(&r->stop)) {
		int n;

		if (poll(p, 2, -1) < 0 && errno != EINTR) {
			pr_err("poll: %s", strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		n = dsm_uffd_read_faults(r->uffd, f, FAULT_BATCH);
		if (n < 0) {
			pr_err("reading userfaultfd: %s", strerror(-n));
			break;
		}
		if (n == 0 || atomic_load(&r->failed))
			continue;
		region_lock(r);
		for (int i = 0; i < n && !r->fatal_pending; i++) {
			struct dsm_actions out;
			uint64_t now = clock_now_ns();

			if (f[i].wp)
				r->stats.faults_wp++;
			else if (f[i].write)
				r->stats.faults_write++;
			else
				r->stats.faults_read++;
			if (!r->fault_t0[f[i].page])
				r->fault_t0[f[i].page] = now;
			if (now - r->last_remote_map < r->streak_gap_ns)
				r->fault_streak++;
			else
				r->fault_streak = 0;
			r->cur_fault_page = f[i].page;
			dsm_actions_init(&out, r->acts, r->acts_cap);
			dsm_engine_fault(r->eng, f[i].page, f[i].write, now, &out);
			region_exec(r, &out, now);
			r->cur_fault_page = UINT64_MAX;
		}
		region_after_input(r);
	}
	return NULL;
}

/* Endpoint tick (its I/O thread, before each poll round): send GRANT_ACKs held back longer than ack_defer_ns, and ask
 * for a short poll while any is held (the poll has millisecond timeouts). deferred_since is written by this thread
 * only; n_deferred is read without r->lock (stored atomically under it). */
static int region_on_tick(void *opaque)
{
	struct dsm_region *r = opaque;

	if (__atomic_load_n(&r->n_deferred, __ATOMIC_RELAXED) == 0)
		return -1;
	if (clock_now_ns() - r->deferred_since >= r->ack_defer_ns) {
		region_lock(r);
		region_release_deferred(r);
		region_after_input(r);
	}
	return 1;
}

static void region_on_io_failed(void *opaque, const char *why)
{
	struct dsm_region *r = opaque;

	region_record_failure(r, r->self, why);
	region_report_failure(r);
}

static void *region_timer_main(void *arg)
{
	struct dsm_region *r = arg;

	pthread_mutex_lock(&r->lock);
	while (!atomic_load(&r->stop)) {
		uint64_t now = clock_now_ns();
		struct dsm_actions out;

		if (!r->timer_when) {
			r->timer_sleep_until = UINT64_MAX;
			pthread_cond_wait(&r->timer_cond, &r->lock);
			continue;
		}
		if (now < r->timer_when) {
			struct timespec ts = clock_timespec(r->timer_when);

			r->timer_sleep_until = r->timer_when;
			pthread_cond_timedwait(&r->timer_cond, &r->lock, &ts);
			continue;
		}
		r->timer_sleep_until = 0;   /* running: a TIMER action now needs no signal */
		if (atomic_load(&r->failed)) {
			r->timer_when = 0;
			continue;
		}
		r->timer_when = 0;
		dsm_actions_init(&out, r->acts, r->acts_cap);
		dsm_engine_timer(r->eng, now, &out);
		region_exec(r, &out, now);
		if (r->fatal_pending || r->n_dirty) {
			region_after_input(r);
			pthread_mutex_lock(&r->lock);
		}
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* ---- create / destroy ----------------------------------------------------------------------------------- */

static void region_outboxes_free(struct dsm_region *r)
{
	if (r->outbox) {
		for (uint32_t p = 0; p < r->n_nodes; p++) {
			for (uint32_t i = 0; i < OUTBOX_LEN; i++)
				free(r->outbox[p].slot[i].data);
			pthread_cond_destroy(&r->outbox[p].space);
			pthread_mutex_destroy(&r->outbox[p].lock);
		}
	}
	free(r->outbox);
	free(r->dirty);
	free(r->deferred);
}

/* The tables dsm_region_create() allocates, whichever of them exist (unwind and destroy alike). */
static void region_tables_free(struct dsm_region *r, size_t n_homed)
{
	if (r->home_store)
		munmap(r->home_store, n_homed * DSM_PAGE_SIZE);
	free(r->acts);
	free(r->stash);
	free(r->fault_t0);
	free(r->remote_count);
	free(r->stash_pool);
	free(r->peer_up);
	free(r->peer_ever_up);
	free(r->peer_left);
	region_outboxes_free(r);
	dsm_engine_destroy(r->eng);
}

int dsm_region_create(const struct dsm_region_config *cfg, struct dsm_region **out)
{
	struct dsm_config ec;
	struct dsm_region *r;
	uint64_t n_homed;
	int err;

	if (cfg->size == 0 || cfg->size % DSM_PAGE_SIZE || cfg->n_nodes < 1 || cfg->n_nodes > DSM_MAX_NODES ||
	    cfg->self >= cfg->n_nodes || (cfg->n_nodes > 1 && !cfg->ep)) {
		pr_err("dsm region: bad configuration (self %u of %u nodes, %zu bytes%s)", cfg->self, cfg->n_nodes,
		       cfg->size, cfg->n_nodes > 1 && !cfg->ep ? ", no endpoint" : "");
		return -EINVAL;
	}
	if (cfg->ep && ic_endpoint_self(cfg->ep) != cfg->self) {
		pr_err("dsm region: node %u on the endpoint of node %u", cfg->self, ic_endpoint_self(cfg->ep));
		return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->self = cfg->self;
	r->n_nodes = cfg->n_nodes;
	r->ep = cfg->ep;
	r->ep_sub = -1;
	r->size = cfg->size;
	r->n_pages = cfg->size / DSM_PAGE_SIZE;
	r->streak_gap_ns = cfg->streak_gap_ns ? cfg->streak_gap_ns : STREAK_GAP_NS;
	r->ack_defer_ns = cfg->ack_defer_ns ? cfg->ack_defer_ns : ACK_DEFER_NS;
	r->on_fatal = cfg->on_fatal;
	r->opaque = cfg->opaque;
	r->cur_fault_page = UINT64_MAX;
	r->stop_efd = -1;
	hist_init(&r->stats.remote_fault_ns);
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->st_lock, NULL);
	pthread_cond_init(&r->st_cond, NULL);
	clock_cond_init(&r->timer_cond);

	dsm_config_init(&ec);
	ec.self = cfg->self;
	ec.n_nodes = r->n_nodes;
	ec.n_pages = r->n_pages;
	ec.home = cfg->home_map;
	if (cfg->epoch)
		ec.epoch = cfg->epoch;
	if (cfg->lease_ns)
		ec.lease_ns = cfg->lease_ns;
	if (cfg->retry_ns)
		ec.retry_ns = cfg->retry_ns;
	err = dsm_engine_create(&ec, &r->eng);
	if (err)
		goto out_free;

	err = -ENOMEM;
	r->acts_cap = dsm_engine_max_actions(r->eng);
	r->acts = calloc(r->acts_cap, sizeof(*r->acts));
	n_homed = dsm_engine_n_homed(r->eng);
	r->home_store = n_homed ? mmap(NULL, n_homed * DSM_PAGE_SIZE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) : NULL;
	if (r->home_store == MAP_FAILED)
		r->home_store = NULL;
	r->stash = calloc(r->n_pages, sizeof(*r->stash));
	r->fault_t0 = calloc(r->n_pages, sizeof(*r->fault_t0));
	r->remote_count = calloc(r->n_pages, sizeof(*r->remote_count));
	r->stash_pool = aligned_alloc(DSM_PAGE_SIZE, (size_t)STASH_POOL * DSM_PAGE_SIZE);
	r->peer_up = calloc(r->n_nodes, sizeof(bool));
	r->peer_ever_up = calloc(r->n_nodes, sizeof(bool));
	r->peer_left = calloc(r->n_nodes, sizeof(bool));
	r->dirty = calloc(r->n_nodes, sizeof(*r->dirty));
	r->deferred = calloc(r->n_nodes, sizeof(*r->deferred));
	r->outbox = calloc(r->n_nodes, sizeof(*r->outbox));
	if (!r->acts || (n_homed && !r->home_store) || !r->stash || !r->fault_t0 || !r->remote_count || !r->stash_pool || !r->peer_up ||
	    !r->peer_ever_up || !r->peer_left || !r->dirty || !r->outbox)
		goto out_tables;
	for (uint32_t p = 0; p < r->n_nodes; p++) {
		pthread_mutex_init(&r->outbox[p].lock, NULL);
		pthread_cond_init(&r->outbox[p].space, NULL);
	}
	for (uint32_t i = 0; i < STASH_POOL; i++)
		r->stash_free[i] = r->stash_pool + (size_t)i * DSM_PAGE_SIZE;
	r->n_stash_free = STASH_POOL;

	err = dsm_uffd_create(cfg->size, &r->uffd);
	if (err)
		goto out_tables;
	r->base = dsm_uffd_base(r->uffd);
	r->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->stop_efd < 0) {
		err = -errno;
		goto out_uffd;
	}
	if (r->ep) {
		const struct ic_subscriber sub = {
			.name = "dsm", .type_min = DSM_REGION_TYPE_MIN, .type_max = DSM_REGION_TYPE_MAX,
			.on_frame = region_on_frame, .on_peer = region_on_peer, .on_tick = region_on_tick,
			.on_io_failed = region_on_io_failed, .opaque = r,
		};

		err = ic_endpoint_subscribe(r->ep, &sub);
		if (err < 0) {
			pr_err("dsm region: cannot subscribe to the endpoint: %s", strerror(-err));
			goto out_efd;
		}
		r->ep_sub = err;
	}
	err = -pthread_create(&r->timer_th, NULL, region_timer_main, r);
	if (err)
		goto out_threads;
	r->timer_started = true;
	err = -pthread_create(&r->fault_th, NULL, region_fault_main, r);
	if (err)
		goto out_threads;
	r->fault_started = true;
	r->subscribed = r->ep_sub >= 0;
	*out = r;
	return 0;

out_threads:
	/* Undoes the threads, the subscription and everything above through destroy's own path. */
	r->subscribed = r->ep_sub >= 0;
	dsm_region_destroy(r);
	return err;
out_efd:
	close(r->stop_efd);
out_uffd:
	dsm_uffd_destroy(r->uffd);
out_tables:
	region_tables_free(r, n_homed);
out_free:
	pthread_cond_destroy(&r->timer_cond);
	pthread_cond_destroy(&r->st_cond);
	pthread_mutex_destroy(&r->st_lock);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return err;
}

/* Tell every peer we no longer touch the region, then keep serving until each of them said the same (or is
 * down), so nobody loses the pages this node homes or owns. */
static void region_leave(struct dsm_region *r)
{
	uint64_t deadline = clock_now_ns() + LEAVE_TIMEOUT_NS;

	pthread_mutex_lock(&r->st_lock);
	r->leaving = true;
	for (;;) {
		uint32_t waiting = 0;
		struct timespec ts;

		/* (Re)send LEAVE every round: a lossy fabric may drop it, and duplicates are harmless. Through the
		 * outbox, so it goes after everything the engine queued for that peer. */
		pthread_mutex_unlock(&r->st_lock);
		for (uint32_t p = 0; p < r->n_nodes; p++) {
			if (p == r->self)
				continue;
			region_out_begin(r, p)->type = DSM_REGION_T_LEAVE;
			region_out_commit(r, p, false);
			region_flush(r, p);
		}
		pthread_mutex_lock(&r->st_lock);
		for (uint32_t p = 0; p < r->n_nodes; p++)
			if (p != r->self && !r->peer_left[p] && r->peer_up[p])
				waiting++;
		if (!waiting || atomic_load(&r->failed))
			break;
		if (clock_now_ns() >= deadline) {
			pr_warn("leaving: %u peer(s) did not leave within %llu s", waiting,
				(unsigned long long)(LEAVE_TIMEOUT_NS / NSEC_PER_SEC));
			break;
		}
		ts = clock_realtime_after(50 * NSEC_PER_MSEC);
		pthread_cond_timedwait(&r->st_cond, &r->st_lock, &ts);
	}
	pthread_mutex_unlock(&r->st_lock);
}

void dsm_region_destroy(struct dsm_region *r)
{
	uint64_t one = 1;

	if (!r)
		return;
	if (r->subscribed && r->fault_started && !atomic_load(&r->failed))
		region_leave(r);
	/* no frame, peer event or tick of ours runs after this */
	if (r->subscribed)
		ic_endpoint_unsubscribe(r->ep, r->ep_sub);
	atomic_store(&r->stop, true);
	if (r->fault_started) {
		(void)!write(r->stop_efd, &one, sizeof(one));
		pthread_join(r->fault_th, NULL);
	}
	if (r->timer_started) {
		pthread_mutex_lock(&r->lock);
		pthread_cond_signal(&r->timer_cond);
		pthread_mutex_unlock(&r->lock);
		pthread_join(r->timer_th, NULL);
	}
	close(r->stop_efd);
	dsm_uffd_destroy(r->uffd);
	for (uint64_t p = 0; p < r->n_pages; p++)
		if (r->stash[p])
			region_stash_put(r, r->stash[p]);
	region_tables_free(r, dsm_engine_n_homed(r->eng));
	pthread_cond_destroy(&r->timer_cond);
	pthread_cond_destroy(&r->st_cond);
	pthread_mutex_destroy(&r->st_lock);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

void *dsm_region_base(const struct dsm_region *r)
{
	return r->base;
}

size_t dsm_region_size(const struct dsm_region *r)
{
	return r->size;
}

size_t dsm_region_max_frame(void)
{
	return sizeof(struct dsm_msg) + dsm_msg_len(DSM_MF_DATA);   /* PAIR: a GRANT_ACK header + a DATA message */
}

uint32_t dsm_region_home_of(const struct dsm_region *r, uint64_t page)
{
	return dsm_engine_home_of(r->eng, page);
}

int dsm_region_wait_peers(struct dsm_region *r, uint64_t timeout_ns)
{
	uint64_t deadline = clock_now_ns() + timeout_ns;
	int err = 0;

	pthread_mutex_lock(&r->st_lock);
	while (r->n_up < r->n_nodes - 1) {
		struct timespec ts;

		if (atomic_load(&r->failed)) {
			err = -EIO;
			break;
		}
		if (clock_now_ns() >= deadline) {
			err = -ETIMEDOUT;
			break;
		}
		ts = clock_realtime_after(20 * NSEC_PER_MSEC);
		pthread_cond_timedwait(&r->st_cond, &r->st_lock, &ts);
	}
	if (!err && atomic_load(&r->failed))
		err = -EIO;
	pthread_mutex_unlock(&r->st_lock);
	return err;
}

bool dsm_region_failed(struct dsm_region *r, uint32_t *node, char *reason, size_t reason_len)
{
	if (!atomic_load(&r->failed))
		return false;
	pthread_mutex_lock(&r->st_lock);
	if (node)
		*node = r->dead_node;
	if (reason && reason_len)
		snprintf(reason, reason_len, "%s", r->reason);
	pthread_mutex_unlock(&r->st_lock);
	return true;
}

size_t dsm_region_hot_pages(struct dsm_region *r, struct dsm_page_count *out, size_t max)
{
	size_t n = 0;

	pthread_mutex_lock(&r->lock);
	for (uint64_t p = 0; p < r->n_pages && max; p++) {
		uint32_t c = r->remote_count[p];
		size_t i;

		if (!c || (n == max && c <= out[n - 1].faults))
			continue;
		/* insert into the sorted top list (most first; equal counts keep the lower page first) */
		i = n < max ? n++ : max - 1;
		while (i > 0 && out[i - 1].faults < c) {
			out[i] = out[i - 1];
			i--;
		}
		out[i] = (struct dsm_page_count){ .page = p, .faults = c };
	}
	pthread_mutex_unlock(&r->lock);
	return n;
}

void dsm_region_get_stats(struct dsm_region *r, struct dsm_region_stats *out)
{
	struct dsm_stats es;
	struct ic_stats is;

	pthread_mutex_lock(&r->lock);
	*out = r->stats;
	dsm_engine_get_stats(r->eng, &es);
	pthread_mutex_unlock(&r->lock);
	out->msgs_out = atomic_load(&r->msgs_sent);
	out->send_errors = atomic_load(&r->send_errors);
	out->acks_paired = atomic_load(&r->acks_paired);
	out->coalesced = es.faults_coalesced;
	out->retransmissions = es.retransmissions;
	out->engine_drops = 0;
	for (unsigned i = 0; i < DSM_DROP_NREASONS; i++)
		out->engine_drops += es.drops[i];
	if (r->ep) {
		ic_endpoint_get_stats(r->ep, &is);
		out->frames_lost = is.dropped;
	}
}
