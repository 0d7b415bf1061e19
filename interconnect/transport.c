/* SPDX-License-Identifier: MIT */
/* Transport registry and the generic half of the ic_* API: validation, dispatch through the ops table. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "interconnect/ic_internal.h"
#include "util/log.h"

static struct ic_transport_ops *registry;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

void ic_transport_register(struct ic_transport_ops *ops)
{
	pthread_mutex_lock(&registry_lock);
	ops->next = registry;
	registry = ops;
	pthread_mutex_unlock(&registry_lock);
}

const struct ic_transport_ops *ic_transport_lookup(const char *name)
{
	const struct ic_transport_ops *ops;

	pthread_mutex_lock(&registry_lock);
	for (ops = registry; ops; ops = ops->next)
		if (!strcmp(ops->name, name))
			break;
	pthread_mutex_unlock(&registry_lock);
	return ops;
}

int ic_config_validate(const struct ic_config *cfg)
{
	if (cfg->self >= IC_MAX_NODES) {
		pr_err("node id %u is out of range (max %u)", cfg->self, IC_MAX_NODES - 1);
		return -EINVAL;
	}
	if (!cfg->key || cfg->key_len < IC_KEY_MIN || cfg->key_len > IC_KEY_MAX) {
		pr_err("cluster key must be %u..%u bytes (got %zu)", IC_KEY_MIN, IC_KEY_MAX, cfg->key ? cfg->key_len : 0);
		return -EINVAL;
	}
	if (cfg->n_peers >= IC_MAX_NODES || (cfg->n_peers && !cfg->peers)) {
		pr_err("bad peer list (%zu peers)", cfg->n_peers);
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->n_peers; i++) {
		const struct ic_peer_addr *p = &cfg->peers[i];

		if (p->id >= IC_MAX_NODES || p->id == cfg->self) {
			pr_err("bad peer id %u (self is %u)", p->id, cfg->self);
			return -EINVAL;
		}
		if (!memchr(p->addr, '\0', sizeof(p->addr))) {
			pr_err("address of peer %u is not terminated", p->id);
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++) {
			if (cfg->peers[j].id == p->id) {
				pr_err("peer %u listed twice", p->id);
				return -EINVAL;
			}
		}
	}
	if (cfg->max_frame > IC_ABS_MAX_FRAME) {
		pr_err("max_frame %u exceeds the limit %u", cfg->max_frame, IC_ABS_MAX_FRAME);
		return -EINVAL;
	}
	if (!cfg->on_frame) {
		pr_err("no frame callback");
		return -EINVAL;
	}
	for (unsigned int type = 0; type < IC_TYPE_USER_MIN; type++) {
		if (ic_type_accepted(cfg->accept_types, (uint8_t)type)) {
			pr_err("frame type %#x is reserved for the transport", type);
			return -EINVAL;
		}
	}
	return 0;
}

int ic_base_init(struct ic_transport *base, const struct ic_transport_ops *ops, const struct ic_config *cfg)
{
	memset(base, 0, sizeof(*base));
	base->ops = ops;
	base->cfg = *cfg;
	if (cfg->n_peers) {
		base->peers = calloc(cfg->n_peers, sizeof(*base->peers));
		if (!base->peers)
			return -ENOMEM;
		memcpy(base->peers, cfg->peers, cfg->n_peers * sizeof(*base->peers));
	}
	base->cfg.peers = base->peers;
	memcpy(base->key, cfg->key, cfg->key_len);
	base->cfg.key = base->key;
	base->cfg.listen = NULL;   /* the implementation keeps its own copy if it needs one */
	base->cfg.inner = NULL;
	if (!base->cfg.max_frame)
		base->cfg.max_frame = IC_DEFAULT_MAX_FRAME;
	if (!base->cfg.heartbeat_ms)
		base->cfg.heartbeat_ms = 100;
	if (!base->cfg.dead_ms)
		base->cfg.dead_ms = 1000;
	atomic_store(&base->epoch, cfg->epoch);
	return 0;
}

void ic_base_fini(struct ic_transport *base)
{
	free(base->peers);
	base->peers = NULL;
	memset(base->key, 0, sizeof(base->key));
}

int ic_base_peer_index(const struct ic_transport *t, uint32_t id)
{
	for (size_t i = 0; i < t->cfg.n_peers; i++)
		if (t->peers[i].id == id)
			return (int)i;
	return -1;
}

void ic_counters_read(struct ic_counters *c, struct ic_stats *out)
{
	out->frames_tx = atomic_load(&c->frames_tx);
	out->frames_rx = atomic_load(&c->frames_rx);
	out->bytes_tx = atomic_load(&c->bytes_tx);
	out->bytes_rx = atomic_load(&c->bytes_rx);
	out->proto_errors = atomic_load(&c->proto_errors);
	out->auth_failures = atomic_load(&c->auth_failures);
	out->connects = atomic_load(&c->connects);
	out->disconnects = atomic_load(&c->disconnects);
}

int ic_create(const char *name, const struct ic_config *cfg, struct ic_transport **out)
{
	const struct ic_transport_ops *ops = ic_transport_lookup(name);
	int ret;

	*out = NULL;
	if (!ops) {
		pr_err("unknown transport '%s'", name);
		return -ENOENT;
	}
	ret = ic_config_validate(cfg);
	if (ret)
		return ret;
	return ops->create(cfg, out);
}

void ic_destroy(struct ic_transport *t)
{
	if (t)
		t->ops->destroy(t);
}

int ic_send(struct ic_transport *t, uint32_t dst, uint8_t type, uint16_t flags, const struct iovec *iov, int iovcnt)
{
	if (type < IC_TYPE_USER_MIN || (iovcnt && !iov) || iovcnt < 0)
		return -EINVAL;
	return t->ops->send(t, dst, type, flags, iov, iovcnt);
}

int ic_poll(struct ic_transport *t, int timeout_ms)
{
	return t->ops->poll(t, timeout_ms);
}

void ic_wake(struct ic_transport *t)
{
	t->ops->wake(t);
}

void ic_set_epoch(struct ic_transport *t, uint32_t epoch)
{
	atomic_store(&t->epoch, epoch);
}

bool ic_peer_is_up(struct ic_transport *t, uint32_t peer)
{
	return t->ops->peer_is_up(t, peer);
}

void ic_get_stats(struct ic_transport *t, struct ic_stats *out)
{
	memset(out, 0, sizeof(*out));
	t->ops->get_stats(t, out);
}

const char *ic_name(const struct ic_transport *t)
{
	return t->ops->name;
}

int ic_fabric_set_link(struct ic_transport *t, uint32_t peer, const struct ic_link_params *p)
{
	if (!t->ops->set_link)
		return -EOPNOTSUPP;
	return t->ops->set_link(t, peer, p);
}

int ic_fabric_partition(struct ic_transport *t, uint32_t peer, bool partitioned)
{
	if (!t->ops->partition)
		return -EOPNOTSUPP;
	return t->ops->partition(t, peer, partitioned);
}
