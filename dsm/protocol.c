/* SPDX-License-Identifier: MIT */
/*
 * dsm protocol engine: creation, input validation, self-delivery, timers, introspection.
 * The cache role is in protocol_cache.c, the home role in protocol_home.c; the story is in docs/dsm.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsm/protocol_internal.h"
#include "util/log.h"

#define LOG_INTERVAL_NS 1000000000ULL

void dsm_config_init(struct dsm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->epoch = 1;
	cfg->lease_ns = DSM_LEASE_NS_DEFAULT;
	cfg->retry_ns = DSM_RETRY_NS_DEFAULT;
}

static void engine_free(struct dsm_engine *e)
{
	free(e->home);
	free(e->slot);
	free(e->slot_page);
	free(e->homed_count);
	free(e->cache);
	free(e->dir);
	free(e->reqs);
	free(e->bits);
	free(e->dead);
	free(e);
}

int dsm_engine_create(const struct dsm_config *cfg, struct dsm_engine **out)
{
	struct dsm_engine *e;

	if (cfg->n_nodes == 0 || cfg->n_nodes > DSM_MAX_NODES || cfg->self >= cfg->n_nodes) {
		pr_err("dsm: bad node configuration (self %u, n_nodes %u, max %u)", cfg->self, cfg->n_nodes,
		       DSM_MAX_NODES);
		return -EINVAL;
	}
	if (cfg->n_pages == 0 || cfg->n_pages >= NONE32) {
		pr_err("dsm: bad region size %" PRIu64 " pages", cfg->n_pages);
		return -EINVAL;
	}
	if (cfg->retry_ns == 0) {
		pr_err("dsm: retry_ns must be > 0");
		return -EINVAL;
	}
	if (cfg->home) {
		for (uint64_t p = 0; p < cfg->n_pages; p++) {
			if (cfg->home[p] >= cfg->n_nodes) {
				pr_err("dsm: home of page %" PRIu64 " is node %u, not a member", p, cfg->home[p]);
				return -EINVAL;
			}
		}
	}

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->self = cfg->self;
	e->n_nodes = cfg->n_nodes;
	e->epoch = cfg->epoch;
	e->n_pages = cfg->n_pages;
	e->lease_ns = cfg->lease_ns;
	e->retry_ns = cfg->retry_ns;
	e->words = (cfg->n_nodes + 63) / 64;
	e->ctimers = NONE32;
	e->htimers = NONE32;
	e->fatal_peer = NONE32;

	e->home = calloc(cfg->n_pages, sizeof(*e->home));
	e->slot = calloc(cfg->n_pages, sizeof(*e->slot));
	e->homed_count = calloc(cfg->n_nodes, sizeof(*e->homed_count));
	e->cache = calloc(cfg->n_pages, sizeof(*e->cache));
	e->dead = calloc(e->words, sizeof(*e->dead));
	if (!e->home || !e->slot || !e->homed_count || !e->cache || !e->dead)
		goto out_free_engine;

	for (uint64_t p = 0; p < cfg->n_pages; p++) {
		uint32_t h = cfg->home ? cfg->home[p]
				       : (uint32_t)(((unsigned __int128)p * cfg->n_nodes) / cfg->n_pages);

		e->home[p] = h;
		e->homed_count[h]++;
		e->slot[p] = h == e->self ? (uint32_t)e->n_homed++ : NONE32;
		e->cache[p].tprev = e->cache[p].tnext = NONE32;
	}

	/* at least one entry each so the tables are never NULL */
	e->slot_page = calloc(e->n_homed + 1, sizeof(*e->slot_page));
	e->dir = calloc(e->n_homed + 1, sizeof(*e->dir));
	e->reqs = calloc((e->n_homed + 1) * e->n_nodes, sizeof(*e->reqs));
	e->bits = calloc((e->n_homed + 1) * 3 * e->words, sizeof(*e->bits));
	if (!e->slot_page || !e->dir || !e->reqs || !e->bits)
		goto out_free_engine;
	for (uint64_t p = 0; p < cfg->n_pages; p++)
		if (e->slot[p] != NONE32)
			e->slot_page[e->slot[p]] = p;
	for (uint64_t s = 0; s < e->n_homed; s++) {
		struct home_page *h = &e->dir[s];

		h->stable = DSM_H_UNCACHED;
		h->never_written = 1;
		h->owner = h->serving = NONE32;
		h->qhead = h->qtail = NONE32;
		h->tprev = h->tnext = NONE32;
	}
	for (uint64_t i = 0; i < e->n_homed * e->n_nodes; i++)
		e->reqs[i].next = NONE16;

	*out = e;
	return 0;

out_free_engine:
	engine_free(e);
	return -ENOMEM;
}

void dsm_engine_destroy(struct dsm_engine *e)
{
	if (e)
		engine_free(e);
}

uint32_t dsm_engine_max_actions(const struct dsm_engine *e)
{
	/* one input starts at most two requests at a home (this node's own, which completes inside the input, and
	 * one remote), each sending at most n_nodes messages plus a few local actions; see docs/dsm.md */
	return 2 * e->n_nodes + 32;
}

/* ---- actions and sends ---------------------------------------------------------------------------------- */

struct dsm_action *eng_emit(struct dsm_engine *e, struct dsm_actions *out, enum dsm_action_type type,
			    uint64_t page)
{
	struct dsm_action *a;

	if (out->n >= out->cap) {
		if (out->overflow++ == 0)
			pr_err("dsm: action list full (cap %u < %u needed): actions lost", out->cap,
			       dsm_engine_max_actions(e));
		a = &e->scratch;
	} else {
		a = &out->v[out->n++];
	}
	memset(a, 0, offsetof(struct dsm_action, reason));
	a->reason[0] = 0;
	a->type = type;
	a->page = page;
	a->peer = NONE32;
	return a;
}

static void localq_push(struct dsm_engine *e, const struct dsm_msg *m)
{
	if (e->lq_n == LOCALQ_LEN) {
		/* cannot happen: chains of self-addressed messages are at most a few long */
		pr_err("dsm: internal message queue full, %s for page %" PRIu64 " lost",
		       dsm_msg_type_name(m->type), m->page);
		return;
	}
	e->localq[(e->lq_head + e->lq_n++) % LOCALQ_LEN].m = *m;
	e->st.msgs_local++;
}

void eng_send(struct dsm_engine *e, struct dsm_actions *out, uint32_t dst, uint8_t type, uint16_t flags,
	      uint64_t page, uint64_t version, uint32_t req_id, uint32_t requester, enum dsm_data data)
{
	struct dsm_msg m = {
		.version = DSM_WIRE_VERSION,
		.type = type,
		.flags = flags,
		.epoch = e->epoch,
		.page = page,
		.page_version = version,
		.req_id = req_id,
		.requester = (uint16_t)requester,
	};

	if (data != DSM_DATA_NONE)
		m.flags |= DSM_MF_DATA;
	if (dst == e->self) {
		/* The home role handles it later in this input; bytes of our own mapping must be taken now, in
		 * action order (before a following UNMAP). HOME bytes stay put while the page is busy. */
		if (data == DSM_DATA_LOCAL)
			eng_emit(e, out, DSM_ACT_STORE, page)->data = DSM_DATA_LOCAL;
		localq_push(e, &m);
		return;
	}
	struct dsm_action *a = eng_emit(e, out, DSM_ACT_SEND, page);

	a->peer = dst;
	a->data = data;
	a->msg = m;
	e->st.msgs_tx[type - DSM_MSG_TYPE_MIN]++;
}

int eng_drop(struct dsm_engine *e, enum dsm_drop_reason why, uint32_t src, const struct dsm_msg *m, uint64_t now)
{
	e->st.drops[why]++;
	if (why == DSM_DROP_DUPLICATE || why == DSM_DROP_STALE) {
		/* the normal echo of retransmission: counted, not worth a line */
		pr_debug("dsm node %u: dropped %s from node %u (page %" PRIu64 "): %s", e->self,
			 m ? dsm_msg_type_name(m->type) : "message", src, m ? m->page : 0, dsm_drop_reason_name(why));
		return -EPROTO;
	}
	if (e->last_log_ns == 0 || now - e->last_log_ns >= LOG_INTERVAL_NS || now < e->last_log_ns) {
		pr_warn("dsm node %u: dropped %s from node %u (page %" PRIu64 ", version %" PRIu64 ", req %u): %s"
			" (+%" PRIu64 " drops not logged)", e->self, m ? dsm_msg_type_name(m->type) : "message", src,
			m ? m->page : 0, m ? m->page_version : 0, m ? m->req_id : 0, dsm_drop_reason_name(why),
			e->unlogged_drops);
		e->last_log_ns = now ? now : 1;
		e->unlogged_drops = 0;
	} else {
		e->unlogged_drops++;
	}
	return -EPROTO;
}

void eng_fatal(struct dsm_engine *e, struct dsm_actions *out, uint32_t peer, const char *fmt, ...)
{
	struct dsm_action *a = eng_emit(e, out, DSM_ACT_FATAL, 0);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
	va_end(ap);
	a->peer = peer;
	if (!e->failed) {
		e->failed = true;
		e->fatal_peer = peer;
		memcpy(e->fatal_reason, a->reason, sizeof(e->fatal_reason));
		pr_err("dsm node %u: FATAL: %s", e->self, a->reason);
	}
}

/* ---- timer lists (intrusive, unordered: they hold only pages with a request in flight) ------------------ */

void eng_ctimer_set(struct dsm_engine *e, uint64_t page, uint64_t deadline)
{
	struct cache_page *c = &e->cache[page];

	if (c->deadline == 0) {
		c->tprev = NONE32;
		c->tnext = e->ctimers;
		if (e->ctimers != NONE32)
			e->cache[e->ctimers].tprev = (uint32_t)page;
		e->ctimers = (uint32_t)page;
	}
	c->deadline = deadline ? deadline : 1;
}

void eng_ctimer_del(struct dsm_engine *e, uint64_t page)
{
	struct cache_page *c = &e->cache[page];

	if (c->deadline == 0)
		return;
	if (c->tprev != NONE32)
		e->cache[c->tprev].tnext = c->tnext;
	else
		e->ctimers = c->tnext;
	if (c->tnext != NONE32)
		e->cache[c->tnext].tprev = c->tprev;
	c->tprev = c->tnext = NONE32;
	c->deadline = 0;
}

void eng_htimer_set(struct dsm_engine *e, uint32_t slot, uint64_t deadline)
{
	struct home_page *h = &e->dir[slot];

	if (h->deadline == 0) {
		h->tprev = NONE32;
		h->tnext = e->htimers;
		if (e->htimers != NONE32)
			e->dir[e->htimers].tprev = slot;
		e->htimers = slot;
	}
	h->deadline = deadline ? deadline : 1;
}

void eng_htimer_del(struct dsm_engine *e, uint32_t slot)
{
	struct home_page *h = &e->dir[slot];

	if (h->deadline == 0)
		return;
	if (h->tprev != NONE32)
		e->dir[h->tprev].tnext = h->tnext;
	else
		e->htimers = h->tnext;
	if (h->tnext != NONE32)
		e->dir[h->tnext].tprev = h->tprev;
	h->tprev = h->tnext = NONE32;
	h->deadline = 0;
}

static uint64_t next_deadline(const struct dsm_engine *e)
{
	uint64_t best = 0;

	for (uint32_t p = e->ctimers; p != NONE32; p = e->cache[p].tnext)
		if (best == 0 || e->cache[p].deadline < best)
			best = e->cache[p].deadline;
	for (uint32_t s = e->htimers; s != NONE32; s = e->dir[s].tnext)
		if (best == 0 || e->dir[s].deadline < best)
			best = e->dir[s].deadline;
	return best;
}

/* ---- input plumbing ------------------------------------------------------------------------------------- */

static void dispatch_local(struct dsm_engine *e, const struct dsm_msg *m, uint64_t now, struct dsm_actions *out)
{
	switch (m->type) {
	case DSM_MSG_READ_REQ:
	case DSM_MSG_WRITE_REQ:
		home_request(e, e->self, m, now, out);
		break;
	case DSM_MSG_GRANT_ACK:
		home_grant_ack(e, e->self, m, now, out);
		break;
	case DSM_MSG_INV_ACK:
		home_inv_ack(e, e->self, m, now, out);
		break;
	case DSM_MSG_FETCH_ACK:
		home_fetch_ack(e, e->self, m, now, out);
		break;
	case DSM_MSG_GRANT:
		cache_grant(e, m, true, now, out);
		break;
	case DSM_MSG_INV:
		cache_inv(e, m, true, now, out);
		break;
	case DSM_MSG_FETCH:
		cache_fetch(e, m, true, now, out);
		break;
	default:
		/* DATA_ACK is never self-addressed (no stash for pages we home) */
		pr_err("dsm: unexpected internal %s", dsm_msg_type_name(m->type));
		break;
	}
}

/* Every input ends here: deliver self-addressed messages, then re-arm the timer if its deadline moved. */
static void finish_input(struct dsm_engine *e, uint64_t now, struct dsm_actions *out)
{
	while (e->lq_n > 0) {
		struct dsm_msg m = e->localq[e->lq_head].m;

		e->lq_head = (e->lq_head + 1) % LOCALQ_LEN;
		e->lq_n--;
		dispatch_local(e, &m, now, out);
	}
	e->payload = NULL;

	uint64_t when = e->kick_all ? now : next_deadline(e);

	if (e->failed)
		when = 0;
	if (when != e->armed) {
		e->armed = when;
		eng_emit(e, out, DSM_ACT_TIMER, 0)->when = when;
	}
}

int dsm_engine_fault(struct dsm_engine *e, uint64_t page, bool write, uint64_t now, struct dsm_actions *out)
{
	if (page >= e->n_pages) {
		pr_err("dsm: fault on page %" PRIu64 " outside the region (%" PRIu64 " pages)", page, e->n_pages);
		return -EINVAL;
	}
	if (e->failed) {
		struct dsm_action *a = eng_emit(e, out, DSM_ACT_FATAL, page);

		a->peer = e->fatal_peer;
		memcpy(a->reason, e->fatal_reason, sizeof(a->reason));
		return 0;
	}
	cache_fault(e, page, write, now, out);
	finish_input(e, now, out);
	return 0;
}

static bool is_dead(const struct dsm_engine *e, uint32_t node)
{
	return bitmap_test(e->dead, node);
}

/* Checks everything that does not depend on the page's state: who may send what, flags that fit the type. */
static int msg_validate(struct dsm_engine *e, uint32_t src, const struct dsm_msg *m, size_t len, uint64_t now)
{
	if (m->version != DSM_WIRE_VERSION)
		return eng_drop(e, DSM_DROP_BAD_VERSION, src, m, now);
	if (m->type < DSM_MSG_READ_REQ || m->type > DSM_MSG_DATA_ACK)
		return eng_drop(e, DSM_DROP_BAD_TYPE, src, m, now);
	if (m->flags & ~DSM_MF_ALL)
		return eng_drop(e, DSM_DROP_BAD_FLAGS, src, m, now);
	if (len != dsm_msg_len(m->flags))
		return eng_drop(e, DSM_DROP_BAD_LEN, src, m, now);
	if (src >= e->n_nodes || src == e->self || is_dead(e, src))
		return eng_drop(e, DSM_DROP_BAD_SENDER, src, m, now);
	if (m->epoch != e->epoch)
		return eng_drop(e, m->epoch < e->epoch ? DSM_DROP_OLD_EPOCH : DSM_DROP_NEW_EPOCH, src, m, now);
	if (m->page >= e->n_pages)
		return eng_drop(e, DSM_DROP_BAD_PAGE, src, m, now);

	uint32_t home = e->home[m->page];
	uint16_t allowed = 0;
	uint16_t data = m->flags & (DSM_MF_DATA | DSM_MF_ZERO);
	bool to_home;

	switch (m->type) {
	case DSM_MSG_READ_REQ:
	case DSM_MSG_WRITE_REQ:
		to_home = true;
		allowed = m->type == DSM_MSG_WRITE_REQ ? DSM_MF_UPGRADE : 0;
		if (m->requester != src || m->req_id == 0)
			return eng_drop(e, DSM_DROP_BAD_SENDER, src, m, now);
		break;
	case DSM_MSG_GRANT_ACK:
		to_home = true;
		break;
	case DSM_MSG_INV_ACK:
		to_home = true;
		allowed = DSM_MF_DATA;
		break;
	case DSM_MSG_FETCH_ACK:
		to_home = true;
		allowed = DSM_MF_DATA;
		if (!(m->flags & DSM_MF_DATA))
			return eng_drop(e, DSM_DROP_BAD_FLAGS, src, m, now);
		break;
	case DSM_MSG_GRANT:
		to_home = false;
		allowed = DSM_MF_DATA | DSM_MF_ZERO | DSM_MF_RW;
		if (m->requester != e->self)
			return eng_drop(e, DSM_DROP_BAD_SENDER, src, m, now);
		/* DATA and ZERO exclusive; a read-only grant must bring bytes */
		if (data == (DSM_MF_DATA | DSM_MF_ZERO) || (!(m->flags & DSM_MF_RW) && !data))
			return eng_drop(e, DSM_DROP_BAD_FLAGS, src, m, now);
		break;
	default:        /* INV, FETCH, DATA_ACK */
		to_home = false;
		break;
	}
	if (m->flags & ~allowed)
		return eng_drop(e, DSM_DROP_BAD_FLAGS, src, m, now);
	/* requests and acks go to the page's home; grants, INV, FETCH, DATA_ACK come from it */
	if (to_home ? home != e->self : home != src)
		return eng_drop(e, DSM_DROP_BAD_SENDER, src, m, now);
	return 0;
}

int dsm_engine_recv(struct dsm_engine *e, uint32_t src, const void *buf, size_t len, uint64_t now,
		    struct dsm_actions *out)
{
	uint32_t n_before = out->n;
	struct dsm_msg m;
	int ret;

	if (len < sizeof(m)) {
		ret = eng_drop(e, DSM_DROP_BAD_LEN, src, NULL, now);
		goto out_finish;
	}
	memcpy(&m, buf, sizeof(m));
	if (e->failed) {
		ret = eng_drop(e, DSM_DROP_FAILED, src, &m, now);
		goto out_finish;
	}
	ret = msg_validate(e, src, &m, len, now);
	if (ret)
		goto out_finish;
	e->st.msgs_rx[m.type - DSM_MSG_TYPE_MIN]++;
	e->payload = (m.flags & DSM_MF_DATA) ? (const uint8_t *)buf + sizeof(m) : NULL;

	switch (m.type) {
	case DSM_MSG_READ_REQ:
	case DSM_MSG_WRITE_REQ:
		ret = home_request(e, src, &m, now, out);
		break;
	case DSM_MSG_GRANT_ACK:
		ret = home_grant_ack(e, src, &m, now, out);
		break;
	case DSM_MSG_INV_ACK:
		ret = home_inv_ack(e, src, &m, now, out);
		break;
	case DSM_MSG_FETCH_ACK:
		ret = home_fetch_ack(e, src, &m, now, out);
		break;
	case DSM_MSG_GRANT:
		ret = cache_grant(e, &m, false, now, out);
		break;
	case DSM_MSG_INV:
		ret = cache_inv(e, &m, false, now, out);
		break;
	case DSM_MSG_FETCH:
		ret = cache_fetch(e, &m, false, now, out);
		break;
	case DSM_MSG_DATA_ACK:
		ret = cache_data_ack(e, &m, now, out);
		break;
	}
out_finish:
	/* A silent drop changes nothing, so it leaves `out` untouched (no timer re-arm either); a duplicate that was
	 * answered again had an effect and returns 0. */
	if (ret && out->n == n_before && e->lq_n == 0) {
		e->payload = NULL;
		return ret;
	}
	if (!e->failed)
		finish_input(e, now, out);
	return 0;
}

int dsm_engine_timer(struct dsm_engine *e, uint64_t now, struct dsm_actions *out)
{
	/* leave room for one more item's worst case plus the final TIMER */
	uint32_t need = e->n_nodes + 24;
	bool more = false;

	if (e->failed)
		return 0;
	for (uint32_t p = e->ctimers, next; p != NONE32; p = next) {
		next = e->cache[p].tnext;
		if (e->cache[p].deadline > now)
			continue;
		if (out->cap - out->n < need) {
			more = true;
			break;
		}
		cache_retransmit(e, p, now, out);
	}
	for (uint32_t s = e->htimers, next; s != NONE32 && !more; s = next) {
		next = e->dir[s].tnext;
		if (e->dir[s].deadline > now)
			continue;
		if (out->cap - out->n < need) {
			more = true;
			break;
		}
		home_timeout(e, s, now, out);
		/* self-addressed messages of this item are delivered before the next item's */
		while (e->lq_n > 0) {
			struct dsm_msg m = e->localq[e->lq_head].m;

			e->lq_head = (e->lq_head + 1) % LOCALQ_LEN;
			e->lq_n--;
			dispatch_local(e, &m, now, out);
		}
		/* the list may have changed under us: restart from the head (expired items are few) */
		next = e->htimers;
	}
	while (e->kick_all && !more) {
		if (e->kick_cursor >= e->n_homed) {
			e->kick_all = false;
			e->kick_cursor = 0;
			break;
		}
		if (out->cap - out->n < need) {
			more = true;
			break;
		}
		home_kick(e, (uint32_t)e->kick_cursor++, now, out);
	}
	finish_input(e, now, out);
	if (more && !e->failed) {
		/* expired work left over: "call again now", whatever was armed before */
		e->armed = now;
		eng_emit(e, out, DSM_ACT_TIMER, 0)->when = now;
	}
	return 0;
}

int dsm_engine_peer_down(struct dsm_engine *e, uint32_t peer, uint64_t now, struct dsm_actions *out)
{
	if (peer >= e->n_nodes || peer == e->self)
		return -EINVAL;
	if (e->failed || is_dead(e, peer))
		return 0;
	bitmap_set(e->dead, peer);
	if (e->homed_count[peer] > 0) {
		eng_fatal(e, out, peer, "node %u is down and it is the home of %" PRIu64 " pages of the region", peer,
			  e->homed_count[peer]);
		return 0;
	}
	if (home_peer_down(e, peer, now, out) == 0)
		finish_input(e, now, out);
	return 0;
}

void dsm_engine_set_epoch(struct dsm_engine *e, uint32_t epoch)
{
	e->epoch = epoch;
}

/* ---- introspection -------------------------------------------------------------------------------------- */

void dsm_engine_get_stats(const struct dsm_engine *e, struct dsm_stats *out)
{
	*out = e->st;
}

bool dsm_engine_failed(const struct dsm_engine *e)
{
	return e->failed;
}

uint32_t dsm_engine_self(const struct dsm_engine *e)
{
	return e->self;
}

uint64_t dsm_engine_n_pages(const struct dsm_engine *e)
{
	return e->n_pages;
}

uint32_t dsm_engine_home_of(const struct dsm_engine *e, uint64_t page)
{
	return page < e->n_pages ? e->home[page] : NONE32;
}

uint64_t dsm_engine_n_homed(const struct dsm_engine *e)
{
	return e->n_homed;
}

int64_t dsm_engine_home_slot(const struct dsm_engine *e, uint64_t page)
{
	if (page >= e->n_pages || e->slot[page] == NONE32)
		return -1;
	return e->slot[page];
}

enum dsm_cache_state dsm_engine_cache_state(const struct dsm_engine *e, uint64_t page)
{
	return page < e->n_pages ? (enum dsm_cache_state)e->cache[page].state : DSM_C_INVALID;
}

int dsm_engine_home_info(const struct dsm_engine *e, uint64_t page, struct dsm_home_info *out)
{
	static const enum dsm_home_state phase_state[] = {
		[P_LEASE] = DSM_H_LEASE_WAIT,
		[P_INV] = DSM_H_INV_WAIT,
		[P_FETCH] = DSM_H_FETCH_WAIT,
		[P_GRANT] = DSM_H_GRANT_WAIT,
	};
	const struct home_page *h;

	if (page >= e->n_pages || e->slot[page] == NONE32)
		return -ENOENT;
	h = &e->dir[e->slot[page]];
	out->stable = (enum dsm_home_state)h->stable;
	out->state = h->phase != P_IDLE ? phase_state[h->phase] : h->n_rgrants ? DSM_H_GRANT_WAIT : out->stable;
	out->owner = h->owner;
	out->n_sharers = h->n_sharers;
	out->version = h->version;
	out->never_written = h->never_written;
	out->serving = h->serving;
	out->queued = h->n_queued;
	out->acks_pending = h->n_pending;
	out->grants_unacked = h->phase == P_GRANT ? 1 : h->n_rgrants;
	return 0;
}

bool dsm_engine_home_is_sharer(const struct dsm_engine *e, uint64_t page, uint32_t node)
{
	if (page >= e->n_pages || e->slot[page] == NONE32 || node >= e->n_nodes)
		return false;
	return bitmap_test(home_sharers(e, e->slot[page]), node);
}

uint64_t dsm_engine_next_timer(const struct dsm_engine *e)
{
	return e->armed;
}

/* ---- names ---------------------------------------------------------------------------------------------- */

const char *dsm_msg_type_name(uint8_t type)
{
	static const char *const names[] = {
		"READ_REQ", "WRITE_REQ", "GRANT", "GRANT_ACK", "INV", "INV_ACK", "FETCH", "FETCH_ACK", "DATA_ACK",
	};

	if (type >= DSM_MSG_TYPE_MIN && type - DSM_MSG_TYPE_MIN < (int)(sizeof(names) / sizeof(names[0])))
		return names[type - DSM_MSG_TYPE_MIN];
	return "UNKNOWN";
}

const char *dsm_cache_state_name(enum dsm_cache_state s)
{
	static const char *const names[] = { "I", "S", "M", "IS", "IM", "SM" };

	return (unsigned)s < DSM_C_NSTATES ? names[s] : "?";
}

const char *dsm_home_state_name(enum dsm_home_state s)
{
	static const char *const names[] = {
		"UNCACHED", "SHARED", "MODIFIED", "LEASE_WAIT", "INV_WAIT", "FETCH_WAIT", "GRANT_WAIT",
	};

	return (unsigned)s < DSM_H_NSTATES ? names[s] : "?";
}

const char *dsm_drop_reason_name(enum dsm_drop_reason r)
{
	static const char *const names[] = {
		"bad length", "bad version", "bad type", "bad flags", "page out of range", "bad sender",
		"old epoch", "new epoch", "duplicate", "stale", "unsolicited", "impossible in this state",
		"engine failed",
	};

	return (unsigned)r < DSM_DROP_NREASONS ? names[r] : "?";
}

const char *dsm_action_type_name(enum dsm_action_type t)
{
	static const char *const names[] = {
		"?", "SEND", "MAP", "WRITE_PROTECT", "UNMAP", "STORE", "WAKE", "STASH", "DROP_STASH", "TIMER", "FATAL",
	};

	return (unsigned)t <= DSM_ACT_FATAL ? names[t] : "?";
}

const char *dsm_data_name(enum dsm_data d)
{
	static const char *const names[] = { "NONE", "MSG", "LOCAL", "HOME", "ZERO", "KEEP", "STASH" };

	return (unsigned)d <= DSM_DATA_STASH ? names[d] : "?";
}
