/* SPDX-License-Identifier: MIT */
/*
 * What a transport implementation sees: the ops table, the common base it embeds, and self-registration.
 *
 * A transport file defines `static const struct ic_transport_ops foo_ops = {...}` and ends with
 * IC_TRANSPORT_REGISTER(foo_ops); nothing else in the tree lists transports. Programs link libic.a whole
 * (--whole-archive) so every registering object is kept.
 */
#ifndef RACKVM_INTERCONNECT_IC_INTERNAL_H
#define RACKVM_INTERCONNECT_IC_INTERNAL_H

#include <stdatomic.h>

#include "interconnect/ic.h"

struct ic_transport_ops {
	const char *name;
	/* Allocate the implementation's struct (struct ic_transport first), call ic_base_init(), start listening
	 * and dialling. cfg has already passed ic_config_validate(). */
	int (*create)(const struct ic_config *cfg, struct ic_transport **out);
	void (*destroy)(struct ic_transport *t);
	int (*send)(struct ic_transport *t, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov,
		    int iovcnt);
	int (*poll)(struct ic_transport *t, int timeout_ms);
	void (*wake)(struct ic_transport *t);
	bool (*peer_is_up)(struct ic_transport *t, uint32_t peer);
	void (*get_stats)(struct ic_transport *t, struct ic_stats *out);
	/* optional: the fabric's run-time controls (NULL elsewhere: -EOPNOTSUPP) */
	int (*set_link)(struct ic_transport *t, uint32_t peer, const struct ic_link_params *p);
	int (*partition)(struct ic_transport *t, uint32_t peer, bool partitioned);
	struct ic_transport_ops *next;   /* registry link, set by ic_transport_register() */
};

/* Common part of every transport. cfg is a deep copy: peers and key point into this struct. */
struct ic_transport {
	const struct ic_transport_ops *ops;
	struct ic_config cfg;
	struct ic_peer_addr *peers;
	uint8_t key[IC_KEY_MAX];
	_Atomic uint32_t epoch;
};

/* The counters every transport keeps, bumped from any thread (relaxed: they are statistics, not sync). */
struct ic_counters {
	_Atomic uint64_t frames_tx, frames_rx, bytes_tx, bytes_rx;
	_Atomic uint64_t proto_errors, auth_failures, connects, disconnects;
};

static inline void ic_count(_Atomic uint64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* Copy the counters into a transport's ic_get_stats answer (fields ic_counters lacks are left alone). */
void ic_counters_read(struct ic_counters *c, struct ic_stats *out);

void ic_transport_register(struct ic_transport_ops *ops);
const struct ic_transport_ops *ic_transport_lookup(const char *name);

#define IC_TRANSPORT_REGISTER(ops_var) \
	__attribute__((constructor)) static void ic_register_##ops_var(void) \
	{ \
		ic_transport_register(&(ops_var)); \
	}

/* Checks a configuration common to all transports; logs the reason and returns -EINVAL when it is bad. */
int ic_config_validate(const struct ic_config *cfg);
/* Deep-copies cfg into base (peers, key); fills defaults (max_frame, heartbeat_ms, dead_ms). */
int ic_base_init(struct ic_transport *base, const struct ic_transport_ops *ops, const struct ic_config *cfg);
void ic_base_fini(struct ic_transport *base);

static inline uint32_t ic_base_epoch(struct ic_transport *t)
{
	return atomic_load_explicit(&t->epoch, memory_order_relaxed);
}

/* Index of peer id in base->peers, or -1. */
int ic_base_peer_index(const struct ic_transport *t, uint32_t id);

#endif
