/* SPDX-License-Identifier: MIT */
/*
 * The endpoint (endpoint.h): a transport, its I/O thread, and a table from frame type to subscriber.
 *
 * Locks: ep->lock guards peer_up/n_up, io_failed and io_running (the condition variable serves
 * ic_endpoint_wait_peers and ic_endpoint_unsubscribe). `rounds` is atomic: the I/O thread only takes the lock to
 * signal the end of a round when an unsubscribe waits for one, so a round costs no lock on the frame path. The type table and the subscriber array are written only
 * before start; a subscriber's `gone` flag is the one field that changes later, read by the I/O thread before every
 * callback. Unsubscribe sets it, then waits until the poll round that may have been running when it was set has
 * ended (rounds advanced), waking the thread so that this takes no longer than the callbacks in flight.
 */
#include "interconnect/endpoint.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"
#include "util/log.h"

#define EP_IDLE_POLL_MS 1000

struct ep_sub {
	struct ic_subscriber s;
	atomic_bool gone;
};

struct ic_endpoint {
	char *transport_name;
	struct ic_config ic;
	struct ic_peer_addr *peers;
	char *listen, *inner;
	uint8_t key[IC_KEY_MAX];        /* wiped once the transport has its own copy */
	struct ep_sub subs[IC_ENDPOINT_MAX_SUBS];
	unsigned n_subs;
	int8_t owner[256];              /* frame type -> index in subs, -1 none */
	/* Published with a release store once created (ic_endpoint_start): subscribers' threads may already send, and
	 * must see the whole transport or none (-ENOTCONN). */
	struct ic_transport *_Atomic t;

	pthread_t th;
	bool started;
	atomic_bool stop;
	atomic_uint_fast64_t orphans;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool peer_up[IC_MAX_NODES];
	uint32_t n_up;
	atomic_uint_fast64_t rounds;    /* poll rounds completed */
	atomic_uint waiters;            /* unsubscribes waiting for a round to end */
	bool io_running, io_failed;
};

static char *ep_strdup(const char *s, bool *oom)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

int ic_endpoint_create(const struct ic_endpoint_config *cfg, struct ic_endpoint **out)
{
	struct ic_endpoint *ep;
	bool oom = false;

	if (!cfg || !cfg->transport || !out || cfg->ic.self >= IC_MAX_NODES || (cfg->ic.n_peers && !cfg->ic.peers) ||
	    cfg->ic.n_peers >= IC_MAX_NODES) {
		pr_err("endpoint: bad configuration");
		return -EINVAL;
	}
	if (cfg->ic.key_len > IC_KEY_MAX || (cfg->ic.key_len && !cfg->ic.key)) {
		pr_err("endpoint: cluster key of %zu bytes (at most %u)", cfg->ic.key_len, IC_KEY_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->ic.n_peers; i++) {
		if (cfg->ic.peers[i].id >= IC_MAX_NODES || cfg->ic.peers[i].id == cfg->ic.self) {
			pr_err("endpoint: bad peer id %u", cfg->ic.peers[i].id);
			return -EINVAL;
		}
	}
	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return -ENOMEM;
	ep->ic = cfg->ic;
	ep->transport_name = ep_strdup(cfg->transport, &oom);
	ep->listen = ep_strdup(cfg->ic.listen, &oom);
	ep->inner = ep_strdup(cfg->ic.inner, &oom);
	if (cfg->ic.n_peers) {
		ep->peers = calloc(cfg->ic.n_peers, sizeof(*ep->peers));
		if (ep->peers)
			memcpy(ep->peers, cfg->ic.peers, cfg->ic.n_peers * sizeof(*ep->peers));
		else
			oom = true;
	}
	if (oom) {
		free(ep->transport_name);
		free(ep->listen);
		free(ep->inner);
		free(ep->peers);
		free(ep);
		return -ENOMEM;
	}
	ep->ic.listen = ep->listen;
	ep->ic.inner = ep->inner;
	ep->ic.peers = ep->peers;
	if (cfg->ic.key_len)
		memcpy(ep->key, cfg->ic.key, cfg->ic.key_len);
	ep->ic.key = cfg->ic.key_len ? ep->key : NULL;
	memset(ep->ic.accept_types, 0, sizeof(ep->ic.accept_types));
	memset(ep->owner, -1, sizeof(ep->owner));
	pthread_mutex_init(&ep->lock, NULL);
	clock_cond_init(&ep->cond);
	*out = ep;
	return 0;
}

int ic_endpoint_subscribe(struct ic_endpoint *ep, const struct ic_subscriber *sub)
{
	unsigned i;

	if (!sub || !sub->on_frame || sub->type_min < IC_TYPE_USER_MIN || sub->type_max < sub->type_min)
		return -EINVAL;
	if (ep->started)
		return -EBUSY;
	if (ep->n_subs >= IC_ENDPOINT_MAX_SUBS)
		return -ENOSPC;
	for (unsigned t = sub->type_min; t <= sub->type_max; t++)
		if (ep->owner[t] >= 0) {
			pr_err("endpoint: %s's frame type 0x%02x already belongs to %s", sub->name ? sub->name : "?", t,
			       ep->subs[ep->owner[t]].s.name ? ep->subs[ep->owner[t]].s.name : "?");
			return -EEXIST;
		}
	i = ep->n_subs++;
	ep->subs[i].s = *sub;
	atomic_init(&ep->subs[i].gone, false);
	for (unsigned t = sub->type_min; t <= sub->type_max; t++) {
		ep->owner[t] = (int8_t)i;
		ic_accept_type(&ep->ic, (uint8_t)t);
	}
	return (int)i;
}

static struct ic_transport *ep_transport(struct ic_endpoint *ep)
{
	return atomic_load_explicit(&ep->t, memory_order_acquire);
}

static bool ep_on_io_thread(const struct ic_endpoint *ep)
{
	return ep->started && pthread_equal(pthread_self(), ep->th);
}

void ic_endpoint_unsubscribe(struct ic_endpoint *ep, int handle)
{
	uint64_t r0;

	if (!ep || handle < 0 || (unsigned)handle >= ep->n_subs)
		return;
	atomic_store(&ep->subs[handle].gone, true);
	if (!ep->started || ep_on_io_thread(ep))
		return;
	atomic_fetch_add(&ep->waiters, 1);
	r0 = atomic_load(&ep->rounds);
	pthread_mutex_lock(&ep->lock);
	while (ep->io_running && atomic_load(&ep->rounds) <= r0) {
		pthread_mutex_unlock(&ep->lock);
		ic_wake(ep_transport(ep));
		pthread_mutex_lock(&ep->lock);
		if (ep->io_running && atomic_load(&ep->rounds) <= r0) {
			/* bounded: a round that ended between the check and the wait is seen at the next look */
			struct timespec ts = clock_timespec(clock_now_ns() + 10 * NSEC_PER_MSEC);

			pthread_cond_timedwait(&ep->cond, &ep->lock, &ts);
		}
	}
	pthread_mutex_unlock(&ep->lock);
	atomic_fetch_sub(&ep->waiters, 1);
}

static void ep_on_frame(void *opaque, uint32_t src, const struct ic_frame *f)
{
	struct ic_endpoint *ep = opaque;
	int i = ep->owner[f->type];

	if (i < 0 || atomic_load(&ep->subs[i].gone)) {
		atomic_fetch_add_explicit(&ep->orphans, 1, memory_order_relaxed);
		return;
	}
	ep->subs[i].s.on_frame(ep->subs[i].s.opaque, src, f);
}

static void ep_on_peer(void *opaque, uint32_t peer, enum ic_peer_event ev, const char *why)
{
	struct ic_endpoint *ep = opaque;

	if (peer >= IC_MAX_NODES)
		return;
	pthread_mutex_lock(&ep->lock);
	if (ev == IC_PEER_UP && !ep->peer_up[peer]) {
		ep->peer_up[peer] = true;
		ep->n_up++;
	} else if (ev == IC_PEER_DOWN && ep->peer_up[peer]) {
		ep->peer_up[peer] = false;
		ep->n_up--;
	}
	pthread_cond_broadcast(&ep->cond);
	pthread_mutex_unlock(&ep->lock);
	for (unsigned i = 0; i < ep->n_subs; i++)
		if (ep->subs[i].s.on_peer && !atomic_load(&ep->subs[i].gone))
			ep->subs[i].s.on_peer(ep->subs[i].s.opaque, peer, ev, why);
}

static void *ep_io_main(void *arg)
{
	struct ic_endpoint *ep = arg;

	while (!atomic_load(&ep->stop)) {
		int timeout = -1, n;

		for (unsigned i = 0; i < ep->n_subs; i++) {
			const struct ic_subscriber *s = &ep->subs[i].s;
			int ms;

			if (!s->on_tick || atomic_load(&ep->subs[i].gone))
				continue;
			ms = s->on_tick(s->opaque);
			if (ms >= 0 && (timeout < 0 || ms < timeout))
				timeout = ms;
		}
		n = ic_poll(ep_transport(ep), timeout < 0 ? EP_IDLE_POLL_MS : timeout);
		if (n < 0 && n != -EINTR) {
			char why[96];

			snprintf(why, sizeof(why), "transport I/O loop failed: %s", strerror(-n));
			pr_err("endpoint: ic_poll: %s", strerror(-n));
			pthread_mutex_lock(&ep->lock);
			ep->io_failed = true;
			pthread_mutex_unlock(&ep->lock);
			for (unsigned i = 0; i < ep->n_subs; i++)
				if (ep->subs[i].s.on_io_failed && !atomic_load(&ep->subs[i].gone))
					ep->subs[i].s.on_io_failed(ep->subs[i].s.opaque, why);
			break;
		}
		atomic_fetch_add(&ep->rounds, 1);
		if (atomic_load(&ep->waiters)) {
			pthread_mutex_lock(&ep->lock);
			pthread_cond_broadcast(&ep->cond);
			pthread_mutex_unlock(&ep->lock);
		}
	}
	pthread_mutex_lock(&ep->lock);
	ep->io_running = false;
	pthread_cond_broadcast(&ep->cond);
	pthread_mutex_unlock(&ep->lock);
	return NULL;
}

int ic_endpoint_start(struct ic_endpoint *ep)
{
	int err;

	if (ep->started)
		return -EBUSY;
	ep->ic.on_frame = ep_on_frame;
	ep->ic.on_peer = ep_on_peer;
	ep->ic.opaque = ep;
	struct ic_transport *t = NULL;

	err = ic_create(ep->transport_name, &ep->ic, &t);
	explicit_bzero(ep->key, sizeof(ep->key));
	ep->ic.key = NULL;
	if (err)
		return err;
	atomic_store_explicit(&ep->t, t, memory_order_release);
	ep->io_running = true;
	err = -pthread_create(&ep->th, NULL, ep_io_main, ep);
	if (err) {
		ep->io_running = false;
		atomic_store(&ep->t, NULL);
		ic_destroy(t);
		return err;
	}
	ep->started = true;
	return 0;
}

void ic_endpoint_destroy(struct ic_endpoint *ep)
{
	if (!ep)
		return;
	if (ep->started) {
		atomic_store(&ep->stop, true);
		ic_wake(ep_transport(ep));
		pthread_join(ep->th, NULL);
	}
	ic_destroy(ep_transport(ep));
	pthread_cond_destroy(&ep->cond);
	pthread_mutex_destroy(&ep->lock);
	explicit_bzero(ep->key, sizeof(ep->key));
	free(ep->transport_name);
	free(ep->listen);
	free(ep->inner);
	free(ep->peers);
	free(ep);
}

int ic_endpoint_send(struct ic_endpoint *ep, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		     int iovcnt)
{
	struct ic_transport *t = ep_transport(ep);

	if (!t)
		return -ENOTCONN;
	return ic_send(t, dst, type, flags, iov, iovcnt);
}

void ic_endpoint_wake(struct ic_endpoint *ep)
{
	struct ic_transport *t = ep_transport(ep);

	if (t)
		ic_wake(t);
}

bool ic_endpoint_peer_is_up(struct ic_endpoint *ep, uint32_t peer)
{
	bool up;

	if (peer >= IC_MAX_NODES)
		return false;
	pthread_mutex_lock(&ep->lock);
	up = ep->peer_up[peer];
	pthread_mutex_unlock(&ep->lock);
	return up;
}

int ic_endpoint_wait_peers(struct ic_endpoint *ep, uint64_t timeout_ns)
{
	uint64_t deadline = clock_now_ns() + timeout_ns;
	int err = 0;

	if (!ep->started)
		return -ENOTCONN;
	pthread_mutex_lock(&ep->lock);
	while (ep->n_up < ep->ic.n_peers) {
		struct timespec ts;

		if (ep->io_failed) {
			err = -EIO;
			break;
		}
		if (clock_now_ns() >= deadline) {
			err = -ETIMEDOUT;
			break;
		}
		ts = clock_timespec(clock_now_ns() + 20 * NSEC_PER_MSEC < deadline ? clock_now_ns() + 20 * NSEC_PER_MSEC
										    : deadline);
		pthread_cond_timedwait(&ep->cond, &ep->lock, &ts);
	}
	pthread_mutex_unlock(&ep->lock);
	return err;
}

void ic_endpoint_get_stats(struct ic_endpoint *ep, struct ic_stats *out)
{
	struct ic_transport *t = ep_transport(ep);

	if (t)
		ic_get_stats(t, out);
	else
		memset(out, 0, sizeof(*out));
}

uint64_t ic_endpoint_orphan_frames(struct ic_endpoint *ep)
{
	return atomic_load_explicit(&ep->orphans, memory_order_relaxed);
}

uint32_t ic_endpoint_self(const struct ic_endpoint *ep)
{
	return ep->ic.self;
}

struct ic_transport *ic_endpoint_transport(struct ic_endpoint *ep)
{
	return ep_transport(ep);
}
