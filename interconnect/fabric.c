/* SPDX-License-Identifier: MIT */
/*
 * fabric — a transport that wraps another ("tcp", "loop", ...) and makes its links behave like a network:
 * latency with jitter, a bandwidth cap, loss, reordering and partitions, switchable at run time from any thread
 * and reproducible from a seed. It is the single-host simulator's network. See docs/fabric.md.
 *
 * Sending side (any thread), per link under link->lock: draw three numbers from the link's own PRNG stream
 * (loss, jitter, reorder — always three, so the drop pattern of a seed does not depend on the other settings),
 * drop the frame if the link is partitioned or the loss draw says so, else compute its release time:
 *     start = max(now, busy_until); busy_until = start + serialization(len); release = busy_until + latency + jitter
 * An in-order frame is never released before the previous in-order frame of its link (jitter does not reorder);
 * a held-back frame (reorder draw) gets release + reorder_us and is overtaken by the frames sent after it.
 * A frame due now on a link with nothing queued goes straight to the inner transport; any other is copied into a
 * time-ordered heap.
 *
 * I/O side (the ic_poll thread): hand due frames to the inner transport in release order, bound the inner poll's
 * timeout by the next release, and run partition bookkeeping. Poll timeouts are whole milliseconds, so a timer
 * thread sleeps until the earliest release and calls ic_wake() on the inner transport; senders that queue a new
 * earliest frame wake both the timer and the inner transport.
 *
 * Loss, reordering and partitions act on upper-layer frames only: the inner transport's heartbeats still flow,
 * so the inner link stays up through a partition. The fabric therefore keeps its own view of each link: it
 * reports IC_PEER_DOWN itself when a partition has lasted dead_ms, and IC_PEER_UP when the partition heals while
 * the inner link is up. Frames queued before a link went down are discarded (link generation), as nothing may
 * cross a reconnect. A partition is per node: it drops both directions at this node; the simulator cuts a link by
 * partitioning both of its ends.
 *
 * Lock order: link->lock, then q_lock. Callbacks run with neither held.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "interconnect/ic_internal.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/rand.h"

#define FAB_WIRE_OVERHEAD 40u        /* header + tag bytes counted by the bandwidth cap */
#define FAB_NO_DEADLINE UINT64_MAX

struct fab_item {
	uint64_t release_ns;
	uint64_t order;                  /* insertion order: ties release in send order */
	uint64_t gen;                    /* link generation when sent */
	uint32_t link;
	bool in_order;                   /* counted in link->pending */
	uint8_t type;
	uint16_t flags;
	uint32_t len;
	unsigned char payload[];
};

struct fab_link {
	pthread_mutex_t lock;            /* guards the fields up to pending */
	struct ic_link_params p;
	struct rng rng;
	uint64_t busy_until_ns;
	uint64_t last_release_ns;        /* latest release of an in-order frame */
	uint64_t partition_since_ns;
	uint32_t pending;                /* in-order frames queued, not yet handed to the inner transport */
	_Atomic bool partitioned;        /* mirror of p.partitioned for the receive path */
	_Atomic uint64_t gen;            /* bumped when the link goes down: queued frames of older gens are discarded */
	_Atomic bool up;                 /* what the layer above was told (written by the poll thread) */
	bool inner_up;                   /* poll thread only */
};

struct fabric {
	struct ic_transport base;
	struct ic_transport *inner;
	struct fab_link *links;          /* indexed like base.peers */

	pthread_mutex_t q_lock;          /* guards the heap, next_order, stop */
	pthread_cond_t q_cond;           /* heap top changed, or stop */
	struct fab_item **heap;
	size_t heap_len, heap_cap;
	uint64_t next_order;
	bool stop;
	pthread_t timer;

	int delivered;                   /* frames delivered during the current ic_poll (poll thread only) */
	_Atomic uint64_t dropped;
};

static struct ic_transport_ops fabric_ops;

/* ---- time-ordered heap (q_lock held) ---- */

static bool fab_before(const struct fab_item *a, const struct fab_item *b)
{
	return a->release_ns < b->release_ns || (a->release_ns == b->release_ns && a->order < b->order);
}

static int fab_heap_push(struct fabric *f, struct fab_item *it)
{
	size_t i;

	if (f->heap_len == f->heap_cap) {
		size_t cap = f->heap_cap ? 2 * f->heap_cap : 64;
		struct fab_item **h = realloc(f->heap, cap * sizeof(*h));

		if (!h)
			return -ENOBUFS;
		f->heap = h;
		f->heap_cap = cap;
	}
	it->order = f->next_order++;
	for (i = f->heap_len++; i > 0; i = (i - 1) / 2) {
		struct fab_item *parent = f->heap[(i - 1) / 2];

		if (!fab_before(it, parent))
			break;
		f->heap[i] = parent;
	}
	f->heap[i] = it;
	return 0;
}

static struct fab_item *fab_heap_pop(struct fabric *f)
{
	struct fab_item *top = f->heap[0], *last = f->heap[--f->heap_len];
	size_t i = 0, n = f->heap_len;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && fab_before(f->heap[c + 1], f->heap[c]))
			c++;
		if (!fab_before(f->heap[c], last))
			break;
		f->heap[i] = f->heap[c];
		i = c;
	}
	if (n)
		f->heap[i] = last;
	return top;
}

/* ---- timer thread: makes sub-millisecond release times precise ---- */

static void *fab_timer_main(void *arg)
{
	struct fabric *f = arg;
	uint64_t woken_for = UINT64_MAX;   /* order of the item we already woke the poll thread for */

	/* the default 50 us timer slack would be added to every sub-millisecond delay */
	prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	pthread_mutex_lock(&f->q_lock);
	while (!f->stop) {
		struct fab_item *top = f->heap_len ? f->heap[0] : NULL;
		struct timespec ts;

		if (!top) {
			pthread_cond_wait(&f->q_cond, &f->q_lock);
			continue;
		}
		if (clock_now_ns() >= top->release_ns) {
			if (woken_for != top->order) {
				woken_for = top->order;
				pthread_mutex_unlock(&f->q_lock);
				ic_wake(f->inner);
				pthread_mutex_lock(&f->q_lock);
			} else {
				pthread_cond_wait(&f->q_cond, &f->q_lock);
			}
			continue;
		}
		ts = clock_timespec(top->release_ns);
		pthread_cond_timedwait(&f->q_cond, &f->q_lock, &ts);
	}
	pthread_mutex_unlock(&f->q_lock);
	return NULL;
}

/* ---- sending ---- */

static int fab_inner_send(struct fabric *f, uint32_t link, uint8_t type, uint16_t flags, const struct iovec *iov,
			  int iovcnt)
{
	return ic_send(f->inner, f->base.peers[link].id, type, flags, iov, iovcnt);
}

static int fab_send(struct ic_transport *t, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		    int iovcnt)
{
	struct fabric *f = (struct fabric *)t;
	int idx = ic_base_peer_index(t, dst);
	struct fab_link *l;
	struct fab_item *it;
	uint64_t now, release, tx_ns = 0, jitter_ns = 0, hold_ns;
	double u_loss, u_jitter, u_reorder;
	size_t len = 0, off = 0;
	bool held, new_top;
	int ret;

	if (idx < 0)
		return -EINVAL;
	l = &f->links[idx];
	if (!atomic_load(&l->up))
		return -ENOTCONN;
	for (int i = 0; i < iovcnt; i++) {
		len += iov[i].iov_len;
		if (len > t->cfg.max_frame)
			return -EMSGSIZE;
	}

	pthread_mutex_lock(&l->lock);
	u_loss = rng_double(&l->rng);
	u_jitter = rng_double(&l->rng);
	u_reorder = rng_double(&l->rng);
	if (l->p.partitioned || u_loss < l->p.loss) {
		pthread_mutex_unlock(&l->lock);
		atomic_fetch_add(&f->dropped, 1);
		return 0;
	}
	now = clock_now_ns();
	if (l->p.bandwidth_mbps)
		tx_ns = (uint64_t)(len + FAB_WIRE_OVERHEAD) * 8 * 1000 / l->p.bandwidth_mbps;
	if (l->p.jitter_us)
		jitter_ns = (uint64_t)(u_jitter * (double)l->p.jitter_us * 1000.0);
	l->busy_until_ns = (l->busy_until_ns > now ? l->busy_until_ns : now) + tx_ns;
	release = l->busy_until_ns + (uint64_t)l->p.latency_us * NSEC_PER_USEC + jitter_ns;
	held = u_reorder < l->p.reorder;
	if (held) {
		hold_ns = (l->p.reorder_us ? l->p.reorder_us : 2ULL * l->p.latency_us + 50) * NSEC_PER_USEC;
		release += hold_ns;
	} else {
		if (release < l->last_release_ns)
			release = l->last_release_ns;
		l->last_release_ns = release;
	}
	if (!held && !l->pending && release <= now) {
		ret = fab_inner_send(f, (uint32_t)idx, type, flags, iov, iovcnt);
		pthread_mutex_unlock(&l->lock);
		return ret;
	}

	it = malloc(sizeof(*it) + len);
	if (!it) {
		pthread_mutex_unlock(&l->lock);
		return -ENOBUFS;
	}
	it->release_ns = release;
	it->gen = atomic_load(&l->gen);
	it->link = (uint32_t)idx;
	it->in_order = !held;
	it->type = type;
	it->flags = flags;
	it->len = (uint32_t)len;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len)
			memcpy(it->payload + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	pthread_mutex_lock(&f->q_lock);
	ret = fab_heap_push(f, it);
	new_top = !ret && f->heap[0] == it;
	if (new_top)
		pthread_cond_signal(&f->q_cond);
	pthread_mutex_unlock(&f->q_lock);
	if (ret) {
		pthread_mutex_unlock(&l->lock);
		free(it);
		return ret;
	}
	if (it->in_order)
		l->pending++;
	pthread_mutex_unlock(&l->lock);
	if (new_top)
		ic_wake(f->inner);
	return 0;
}

/* Poll thread: hand every due frame to the inner transport. */
static void fab_release_due(struct fabric *f, uint64_t now)
{
	bool any = false;

	for (;;) {
		struct fab_item *it = NULL;
		struct fab_link *l;

		pthread_mutex_lock(&f->q_lock);
		if (f->heap_len && f->heap[0]->release_ns <= now)
			it = fab_heap_pop(f);
		pthread_mutex_unlock(&f->q_lock);
		if (!it)
			break;
		any = true;
		l = &f->links[it->link];
		pthread_mutex_lock(&l->lock);
		if (it->gen == atomic_load(&l->gen)) {
			struct iovec iov = { it->payload, it->len };
			int ret = fab_inner_send(f, it->link, it->type, it->flags, &iov, 1);

			if (ret) {
				atomic_fetch_add(&f->dropped, 1);
				pr_debug("fabric: frame to node %u lost at release: %s", f->base.peers[it->link].id,
					 strerror(-ret));
			}
		}
		if (it->in_order)
			l->pending--;
		pthread_mutex_unlock(&l->lock);
		free(it);
	}
	if (any) {
		pthread_mutex_lock(&f->q_lock);
		pthread_cond_signal(&f->q_cond);
		pthread_mutex_unlock(&f->q_lock);
	}
}

/* ---- the fabric's own view of each link ---- */

static void fab_peer_event(struct fabric *f, uint32_t idx, enum ic_peer_event ev, const char *why)
{
	struct ic_config *cfg = &f->base.cfg;

	atomic_store(&f->links[idx].up, ev == IC_PEER_UP);
	if (ev == IC_PEER_DOWN)
		atomic_fetch_add(&f->links[idx].gen, 1);
	if (cfg->on_peer)
		cfg->on_peer(cfg->opaque, f->base.peers[idx].id, ev, why);
}

/* True when link l has been partitioned for dead_ms or longer. Called with l->lock held. */
static bool fab_partition_is_long(const struct fabric *f, const struct fab_link *l, uint64_t now)
{
	return l->p.partitioned && now - l->partition_since_ns >= (uint64_t)f->base.cfg.dead_ms * NSEC_PER_MSEC;
}

/* Poll thread: report links whose partition outlived dead_ms, and links that healed. Returns the next time
 * this must run again (a partition reaching dead_ms), or FAB_NO_DEADLINE. */
static uint64_t fab_check_links(struct fabric *f, uint64_t now)
{
	uint64_t next = FAB_NO_DEADLINE;

	for (size_t i = 0; i < f->base.cfg.n_peers; i++) {
		struct fab_link *l = &f->links[i];
		bool part, is_long, up = atomic_load(&l->up);
		uint64_t due;

		pthread_mutex_lock(&l->lock);
		part = l->p.partitioned;
		is_long = fab_partition_is_long(f, l, now);
		due = l->partition_since_ns + (uint64_t)f->base.cfg.dead_ms * NSEC_PER_MSEC;
		pthread_mutex_unlock(&l->lock);
		if (up && is_long)
			fab_peer_event(f, (uint32_t)i, IC_PEER_DOWN, "partitioned (fabric) for longer than dead_ms");
		else if (!up && l->inner_up && !part)
			fab_peer_event(f, (uint32_t)i, IC_PEER_UP, "partition healed (fabric)");
		else if (up && part && due < next)
			next = due;
	}
	return next;
}

/* ---- callbacks of the inner transport (poll thread) ---- */

static void fab_on_frame(void *opaque, uint32_t src, const struct ic_frame *frame)
{
	struct fabric *f = opaque;
	int idx = ic_base_peer_index(&f->base, src);

	if (idx < 0)
		return;
	if (atomic_load(&f->links[idx].partitioned) || !atomic_load(&f->links[idx].up)) {
		atomic_fetch_add(&f->dropped, 1);
		return;
	}
	f->delivered++;
	f->base.cfg.on_frame(f->base.cfg.opaque, src, frame);
}

static void fab_on_peer(void *opaque, uint32_t peer, enum ic_peer_event ev, const char *why)
{
	struct fabric *f = opaque;
	int idx = ic_base_peer_index(&f->base, peer);
	struct fab_link *l;
	bool is_long;

	if (idx < 0)
		return;
	l = &f->links[idx];
	l->inner_up = ev == IC_PEER_UP;
	if (ev == IC_PEER_DOWN) {
		if (atomic_load(&l->up))
			fab_peer_event(f, (uint32_t)idx, IC_PEER_DOWN, why);
		else
			atomic_fetch_add(&l->gen, 1);
		return;
	}
	pthread_mutex_lock(&l->lock);
	is_long = fab_partition_is_long(f, l, clock_now_ns());
	pthread_mutex_unlock(&l->lock);
	if (!is_long && !atomic_load(&l->up))
		fab_peer_event(f, (uint32_t)idx, IC_PEER_UP, why);
}

/* ---- ops ---- */

static int fab_poll(struct ic_transport *t, int timeout_ms)
{
	struct fabric *f = (struct fabric *)t;
	uint64_t now = clock_now_ns(), next;
	int wait = timeout_ms, ret;

	f->delivered = 0;
	fab_release_due(f, now);
	next = fab_check_links(f, now);
	pthread_mutex_lock(&f->q_lock);
	if (f->heap_len && f->heap[0]->release_ns < next)
		next = f->heap[0]->release_ns;
	pthread_mutex_unlock(&f->q_lock);
	if (next != FAB_NO_DEADLINE) {
		uint64_t ms = next <= now ? 0 : (next - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC;

		if (timeout_ms < 0 || ms < (uint64_t)timeout_ms)
			wait = (int)ms;
	}
	ret = ic_poll(f->inner, wait);
	if (ret < 0)
		return ret;
	now = clock_now_ns();
	fab_release_due(f, now);
	fab_check_links(f, now);
	return f->delivered;
}

static void fab_wake(struct ic_transport *t)
{
	ic_wake(((struct fabric *)t)->inner);
}

static bool fab_peer_is_up(struct ic_transport *t, uint32_t peer)
{
	int idx = ic_base_peer_index(t, peer);

	return idx >= 0 && atomic_load(&((struct fabric *)t)->links[idx].up);
}

static void fab_get_stats(struct ic_transport *t, struct ic_stats *out)
{
	struct fabric *f = (struct fabric *)t;

	ic_get_stats(f->inner, out);
	out->dropped += atomic_load(&f->dropped);
}

/* Apply fn to the link of peer, or to every link for IC_ANY_PEER. */
static int fab_update(struct fabric *f, uint32_t peer, const struct ic_link_params *p, int partition)
{
	uint64_t now = clock_now_ns();
	bool found = false;

	if (p && (p->loss < 0 || p->loss > 1 || p->reorder < 0 || p->reorder > 1)) {
		pr_err("fabric: loss and reorder are probabilities (got %g, %g)", p->loss, p->reorder);
		return -EINVAL;
	}
	for (size_t i = 0; i < f->base.cfg.n_peers; i++) {
		struct fab_link *l = &f->links[i];
		bool was;

		if (peer != IC_ANY_PEER && f->base.peers[i].id != peer)
			continue;
		found = true;
		pthread_mutex_lock(&l->lock);
		was = l->p.partitioned;
		if (p)
			l->p = *p;
		else
			l->p.partitioned = partition;
		if (!was && l->p.partitioned)
			l->partition_since_ns = now;
		atomic_store(&l->partitioned, l->p.partitioned);
		pthread_mutex_unlock(&l->lock);
	}
	if (!found)
		return -EINVAL;
	ic_wake(f->inner);   /* the poll thread recomputes partition deadlines */
	return 0;
}

static int fab_set_link(struct ic_transport *t, uint32_t peer, const struct ic_link_params *p)
{
	return fab_update((struct fabric *)t, peer, p, 0);
}

static int fab_partition(struct ic_transport *t, uint32_t peer, bool partitioned)
{
	return fab_update((struct fabric *)t, peer, NULL, partitioned);
}

static void fab_free_links(struct fabric *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pthread_mutex_destroy(&f->links[i].lock);
	free(f->links);
}

static int fab_create(const struct ic_config *cfg, struct ic_transport **out)
{
	struct ic_config inner_cfg = *cfg;
	struct fabric *f;
	int ret;

	if (!cfg->inner || !strcmp(cfg->inner, "fabric")) {
		pr_err("fabric: cfg.inner must name the transport to wrap (got %s)", cfg->inner ? cfg->inner : "none");
		return -EINVAL;
	}
	if (cfg->link.loss < 0 || cfg->link.loss > 1 || cfg->link.reorder < 0 || cfg->link.reorder > 1) {
		pr_err("fabric: loss and reorder are probabilities (got %g, %g)", cfg->link.loss, cfg->link.reorder);
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	ret = ic_base_init(&f->base, &fabric_ops, cfg);
	if (ret)
		goto out_free_f;
	f->links = calloc(cfg->n_peers ? cfg->n_peers : 1, sizeof(*f->links));
	if (!f->links) {
		ret = -ENOMEM;
		goto out_fini_base;
	}
	for (size_t i = 0; i < cfg->n_peers; i++) {
		struct fab_link *l = &f->links[i];
		uint64_t x = cfg->seed;

		pthread_mutex_init(&l->lock, NULL);
		l->p = cfg->link;
		l->partition_since_ns = clock_now_ns();
		atomic_store(&l->partitioned, cfg->link.partitioned);
		/* per-link stream from (seed, self, peer): the same seed replays each link whatever the others do */
		rng_seed(&l->rng, rng_splitmix64(&x) ^ ((uint64_t)cfg->self << 32 | cfg->peers[i].id));
	}
	pthread_mutex_init(&f->q_lock, NULL);
	clock_cond_init(&f->q_cond);

	inner_cfg.inner = NULL;
	inner_cfg.on_frame = fab_on_frame;
	inner_cfg.on_peer = fab_on_peer;
	inner_cfg.opaque = f;
	memset(&inner_cfg.link, 0, sizeof(inner_cfg.link));
	ret = ic_create(cfg->inner, &inner_cfg, &f->inner);
	if (ret)
		goto out_destroy_q;
	/* the inner base copy has the defaults filled in (dead_ms...); the fabric uses the same values */
	ret = pthread_create(&f->timer, NULL, fab_timer_main, f);
	if (ret) {
		ret = -ret;
		goto out_destroy_inner;
	}
	*out = &f->base;
	return 0;

out_destroy_inner:
	ic_destroy(f->inner);
out_destroy_q:
	pthread_cond_destroy(&f->q_cond);
	pthread_mutex_destroy(&f->q_lock);
	fab_free_links(f, cfg->n_peers);
out_fini_base:
	ic_base_fini(&f->base);
out_free_f:
	free(f);
	return ret;
}

static void fab_destroy(struct ic_transport *t)
{
	struct fabric *f = (struct fabric *)t;

	pthread_mutex_lock(&f->q_lock);
	f->stop = true;
	pthread_cond_signal(&f->q_cond);
	pthread_mutex_unlock(&f->q_lock);
	pthread_join(f->timer, NULL);
	ic_destroy(f->inner);
	while (f->heap_len)
		free(fab_heap_pop(f));
	free(f->heap);
	pthread_cond_destroy(&f->q_cond);
	pthread_mutex_destroy(&f->q_lock);
	fab_free_links(f, t->cfg.n_peers);
	ic_base_fini(&f->base);
	free(f);
}

static struct ic_transport_ops fabric_ops = {
	.name = "fabric",
	.create = fab_create,
	.destroy = fab_destroy,
	.send = fab_send,
	.poll = fab_poll,
	.wake = fab_wake,
	.peer_is_up = fab_peer_is_up,
	.get_stats = fab_get_stats,
	.set_link = fab_set_link,
	.partition = fab_partition,
};
IC_TRANSPORT_REGISTER(fabric_ops)
