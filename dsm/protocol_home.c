/* SPDX-License-Identifier: MIT */
/*
 * dsm protocol engine, home role: the directory of every page this node homes and the serialization of the
 * requests for it. The state tables are in docs/dsm.md ("Home state machine").
 *
 * Invariants (the random test checks their consequences after every step):
 *  - at most one request per page is in service (serving != NONE32 iff phase != P_IDLE);
 *  - stable MODIFIED <=> owner != NONE32, and then the sharer set is empty;
 *  - pending is a subset of the nodes that hold a copy, and is empty outside P_INV/P_FETCH;
 *  - no INV or FETCH for a page leaves while a GRANT for it is unacknowledged: a read-only grant keeps the entry
 *    idle (further reads are granted at once; the request at the queue head waits if it is a write), a
 *    read-write grant keeps it busy (P_GRANT) until its acknowledgement.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "dsm/protocol_internal.h"

static uint64_t slot_page(const struct dsm_engine *e, uint32_t slot)
{
	return e->slot_page[slot];
}

static void queue_push(struct dsm_engine *e, uint32_t slot, uint32_t node, uint8_t kind)
{
	struct home_page *h = &e->dir[slot];
	struct req_rec *r = home_rec(e, slot, node);

	r->queued = 1;
	r->kind = kind;
	r->next = NONE16;
	if (h->qtail == NONE32)
		h->qhead = node;
	else
		home_rec(e, slot, h->qtail)->next = (uint16_t)node;
	h->qtail = node;
	h->n_queued++;
}

static uint32_t queue_pop(struct dsm_engine *e, uint32_t slot)
{
	struct home_page *h = &e->dir[slot];
	uint32_t node = h->qhead;
	struct req_rec *r = home_rec(e, slot, node);

	h->qhead = r->next == NONE16 ? NONE32 : r->next;
	if (h->qhead == NONE32)
		h->qtail = NONE32;
	r->queued = 0;
	r->next = NONE16;
	h->n_queued--;
	return node;
}

static void queue_remove(struct dsm_engine *e, uint32_t slot, uint32_t node)
{
	struct home_page *h = &e->dir[slot];
	uint32_t prev = NONE32;

	for (uint32_t n = h->qhead; n != NONE32; prev = n, n = home_rec(e, slot, n)->next == NONE16 ?
							   NONE32 : home_rec(e, slot, n)->next) {
		if (n != node)
			continue;
		struct req_rec *r = home_rec(e, slot, n);
		uint32_t next = r->next == NONE16 ? NONE32 : r->next;

		if (prev == NONE32)
			h->qhead = next;
		else
			home_rec(e, slot, prev)->next = r->next;
		if (h->qtail == n)
			h->qtail = prev;
		r->queued = 0;
		r->next = NONE16;
		h->n_queued--;
		return;
	}
}

static void pending_clear_all(struct dsm_engine *e, uint32_t slot)
{
	memset(home_pending(e, slot), 0, e->words * sizeof(uint64_t));
	e->dir[slot].n_pending = 0;
}

static void sharers_clear_all(struct dsm_engine *e, uint32_t slot)
{
	memset(home_sharers(e, slot), 0, e->words * sizeof(uint64_t));
	e->dir[slot].n_sharers = 0;
}

static void sharer_remove(struct dsm_engine *e, uint32_t slot, uint32_t node)
{
	struct home_page *h = &e->dir[slot];

	if (!bitmap_test(home_sharers(e, slot), node))
		return;
	bitmap_clear(home_sharers(e, slot), node);
	if (--h->n_sharers == 0 && h->stable == DSM_H_SHARED)
		h->stable = DSM_H_UNCACHED;
}

/* The request in service is over (its grant was installed, or it can no longer be served). */
static void finish(struct dsm_engine *e, uint32_t slot)
{
	struct home_page *h = &e->dir[slot];

	h->serving = NONE32;
	h->phase = P_IDLE;
	pending_clear_all(e, slot);
	if (h->n_rgrants == 0)
		eng_htimer_del(e, slot);
}

/* Unacknowledged read grants: set when sent, cleared by GRANT_ACK, a newer request or peer down. While any is
 * out the entry's timer resends them (the entry is idle then: nothing else of it needs a timer). */
static void rgrant_add(struct dsm_engine *e, uint32_t slot, uint32_t node, uint64_t now)
{
	struct home_page *h = &e->dir[slot];

	bitmap_set(home_rgrants(e, slot), node);
	if (h->n_rgrants++ == 0)
		eng_htimer_set(e, slot, now + e->retry_ns);
}

static void rgrant_clear(struct dsm_engine *e, uint32_t slot, uint32_t node)
{
	struct home_page *h = &e->dir[slot];

	bitmap_clear(home_rgrants(e, slot), node);
	if (--h->n_rgrants == 0 && h->phase == P_IDLE)
		eng_htimer_del(e, slot);
}

static void send_rgrant(struct dsm_engine *e, uint32_t slot, uint32_t node, struct dsm_actions *out)
{
	struct home_page *h = &e->dir[slot];

	/* never_written, version and the home store cannot change while a read grant is out (no write starts) */
	eng_send(e, out, node, DSM_MSG_GRANT, h->never_written ? DSM_MF_ZERO : 0, slot_page(e, slot), h->version,
		 home_rec(e, slot, node)->seen, node, h->never_written ? DSM_DATA_NONE : DSM_DATA_HOME);
}

static void send_grant(struct dsm_engine *e, uint32_t slot, struct dsm_actions *out)
{
	struct home_page *h = &e->dir[slot];

	eng_send(e, out, h->serving, DSM_MSG_GRANT, h->grant_flags & ~DSM_MF_DATA, slot_page(e, slot), h->version,
		 h->serving_req, h->serving, (h->grant_flags & DSM_MF_DATA) ? DSM_DATA_HOME : DSM_DATA_NONE);
}

static void grant(struct dsm_engine *e, uint32_t slot, bool rw, uint64_t now, struct dsm_actions *out)
{
	struct home_page *h = &e->dir[slot];
	uint32_t r = h->serving;
	uint16_t flags;

	if (bitmap_test(e->dead, r)) {     /* requester died while its request was in service */
		finish(e, slot);
		return;
	}
	if (rw) {
		bool keep = h->stable == DSM_H_SHARED && bitmap_test(home_sharers(e, slot), r);

		flags = DSM_MF_RW | (keep ? 0 : h->never_written ? DSM_MF_ZERO : DSM_MF_DATA);
		h->version++;
		sharers_clear_all(e, slot);
		h->stable = DSM_H_MODIFIED;
		h->owner = r;
		h->never_written = 0;
		h->lease_until = now + e->lease_ns;
	} else {
		/* read-only: the entry stays idle so the next queued reads are granted at once */
		if (!bitmap_test(home_sharers(e, slot), r)) {
			bitmap_set(home_sharers(e, slot), r);
			h->n_sharers++;
		}
		h->stable = DSM_H_SHARED;
		if (h->never_written)
			e->st.grants_zero++;
		h->serving = NONE32;
		h->phase = P_IDLE;
		pending_clear_all(e, slot);
		rgrant_add(e, slot, r, now);    /* the entry's timer now resends read grants */
		send_rgrant(e, slot, r, out);
		return;
	}
	if (flags & DSM_MF_ZERO)
		e->st.grants_zero++;
	h->grant_flags = flags;
	h->phase = P_GRANT;
	eng_htimer_set(e, slot, now + e->retry_ns);
	send_grant(e, slot, out);
}

static void send_take(struct dsm_engine *e, uint32_t slot, uint32_t node, struct dsm_actions *out)
{
	struct home_page *h = &e->dir[slot];

	eng_send(e, out, node, h->phase == P_FETCH ? DSM_MSG_FETCH : DSM_MSG_INV, 0, slot_page(e, slot), h->version,
		 h->serving_req, h->serving, DSM_DATA_NONE);
}

/* Move the request in service forward from an idle (or lease-deferred) directory entry. */
static void proceed(struct dsm_engine *e, uint32_t slot, uint64_t now, struct dsm_actions *out)
{
	struct home_page *h = &e->dir[slot];
	uint32_t r = h->serving;

	if (h->stable == DSM_H_MODIFIED) {
		uint32_t o = h->owner;

		if (o == r) {
			/* the owner asks again for what it holds: only a confused peer does that */
			eng_drop(e, DSM_DROP_BAD_STATE, r, NULL, now);
			finish(e, slot);
			return;
		}
		if (now < h->lease_until) {
			if (h->phase != P_LEASE)
				e->st.lease_deferrals++;
			h->phase = P_LEASE;
			eng_htimer_set(e, slot, h->lease_until);
			return;
		}
		pending_clear_all(e, slot);
		bitmap_set(home_pending(e, slot), o);
		h->n_pending = 1;
		h->phase = h->kind == K_READ ? P_FETCH : P_INV;
		eng_htimer_set(e, slot, now + e->retry_ns);
		send_take(e, slot, o, out);
		return;
	}
	if (h->kind == K_READ) {
		grant(e, slot, false, now, out);
		return;
	}

	uint64_t *sh = home_sharers(e, slot), *pend = home_pending(e, slot);
	uint32_t others = h->n_sharers - (bitmap_test(sh, r) ? 1 : 0);

	if (others == 0) {
		grant(e, slot, true, now, out);
		return;
	}
	memcpy(pend, sh, e->words * sizeof(uint64_t));
	bitmap_clear(pend, r);
	h->n_pending = others;
	h->phase = P_INV;
	eng_htimer_set(e, slot, now + e->retry_ns);
	for (uint32_t n = 0; n < e->n_nodes; n++)
		if (bitmap_test(pend, n))
			send_take(e, slot, n, out);
}

void home_kick(struct dsm_engine *e, uint32_t slot, uint64_t now, struct dsm_actions *out)
{
	struct home_page *h = &e->dir[slot];

	while (h->phase == P_IDLE && h->qhead != NONE32) {
		/* a write takes copies away: not before every read grant is known installed */
		if (home_rec(e, slot, h->qhead)->kind == K_WRITE && h->n_rgrants > 0)
			break;
		uint32_t r = queue_pop(e, slot);

		h->serving = r;
		h->serving_req = home_rec(e, slot, r)->seen;
		h->kind = home_rec(e, slot, r)->kind;
		proceed(e, slot, now, out);
	}
}

int home_request(struct dsm_engine *e, uint32_t src, const struct dsm_msg *m, uint64_t now,
		 struct dsm_actions *out)
{
	uint32_t slot = e->slot[m->page];
	struct home_page *h = &e->dir[slot];
	struct req_rec *r = home_rec(e, slot, src);
	uint8_t kind = m->type == DSM_MSG_READ_REQ ? K_READ : K_WRITE;

	if (seq_before(m->req_id, r->seen))
		return eng_drop(e, DSM_DROP_STALE, src, m, now);
	if (m->req_id == r->seen) {
		/* a retransmission: if its GRANT was lost, send it again; otherwise it is in hand already */
		if (h->serving == src && h->serving_req == m->req_id && h->phase == P_GRANT)
			send_grant(e, slot, out);
		else if (bitmap_test(home_rgrants(e, slot), src))
			send_rgrant(e, slot, src, out);
		return eng_drop(e, DSM_DROP_DUPLICATE, src, m, now);
	}
	if (r->queued)          /* one outstanding request per (node, page): a second one is a peer bug */
		return eng_drop(e, DSM_DROP_BAD_STATE, src, m, now);
	if (bitmap_test(home_rgrants(e, slot), src))
		rgrant_clear(e, slot, src);     /* a newer request proves the read grant arrived */
	if (h->serving == src) {
		if (h->phase != P_GRANT)
			return eng_drop(e, DSM_DROP_BAD_STATE, src, m, now);
		finish(e, slot);        /* a newer request proves the grant arrived (its GRANT_ACK was lost) */
	}
	r->seen = m->req_id;
	if (h->phase != P_IDLE)
		e->st.queued++;
	queue_push(e, slot, src, kind);
	home_kick(e, slot, now, out);
	return 0;
}

int home_grant_ack(struct dsm_engine *e, uint32_t src, const struct dsm_msg *m, uint64_t now,
		   struct dsm_actions *out)
{
	uint32_t slot = e->slot[m->page];
	struct home_page *h = &e->dir[slot];

	if (bitmap_test(home_rgrants(e, slot), src) && m->req_id == home_rec(e, slot, src)->seen) {
		rgrant_clear(e, slot, src);
		home_kick(e, slot, now, out);
		return 0;
	}
	if (h->phase != P_GRANT || h->serving != src || h->serving_req != m->req_id)
		return eng_drop(e, m->req_id == home_rec(e, slot, src)->seen ? DSM_DROP_DUPLICATE : DSM_DROP_STALE,
				src, m, now);
	finish(e, slot);
	home_kick(e, slot, now, out);
	return 0;
}

static bool awaited(struct dsm_engine *e, uint32_t slot, uint8_t phase, uint32_t src, const struct dsm_msg *m)
{
	const struct home_page *h = &e->dir[slot];

	return h->phase == phase && m->page_version == h->version && m->req_id == h->serving_req &&
	       bitmap_test(home_pending(e, slot), src);
}

int home_inv_ack(struct dsm_engine *e, uint32_t src, const struct dsm_msg *m, uint64_t now,
		 struct dsm_actions *out)
{
	uint32_t slot = e->slot[m->page];
	struct home_page *h = &e->dir[slot];

	if (!awaited(e, slot, P_INV, src, m)) {
		if (m->flags & DSM_MF_DATA) {
			/* resent from a stash after we stored the first copy: let the sender free it */
			eng_send(e, out, src, DSM_MSG_DATA_ACK, 0, m->page, m->page_version, m->req_id, m->requester,
				 DSM_DATA_NONE);
			return eng_drop(e, DSM_DROP_DUPLICATE, src, m, now);
		}
		return eng_drop(e, m->page_version < h->version ? DSM_DROP_STALE : DSM_DROP_DUPLICATE, src, m, now);
	}
	if (h->stable == DSM_H_MODIFIED) {
		/* src is the owner (the only pending node): its bytes are the page */
		if (!(m->flags & DSM_MF_DATA))
			return eng_drop(e, DSM_DROP_BAD_STATE, src, m, now);
		if (src != e->self) {
			struct dsm_action *a = eng_emit(e, out, DSM_ACT_STORE, m->page);

			a->data = DSM_DATA_MSG;
			a->payload = e->payload;
			eng_send(e, out, src, DSM_MSG_DATA_ACK, 0, m->page, m->page_version, m->req_id, m->requester,
				 DSM_DATA_NONE);
		}
		h->owner = NONE32;
		h->stable = DSM_H_UNCACHED;
	} else {
		sharer_remove(e, slot, src);
	}
	bitmap_clear(home_pending(e, slot), src);
	if (--h->n_pending == 0)
		grant(e, slot, true, now, out);
	home_kick(e, slot, now, out);
	return 0;
}

int home_fetch_ack(struct dsm_engine *e, uint32_t src, const struct dsm_msg *m, uint64_t now,
		   struct dsm_actions *out)
{
	uint32_t slot = e->slot[m->page];
	struct home_page *h = &e->dir[slot];

	if (!awaited(e, slot, P_FETCH, src, m))
		return eng_drop(e, m->page_version < h->version ? DSM_DROP_STALE : DSM_DROP_DUPLICATE, src, m, now);
	if (src != e->self) {
		struct dsm_action *a = eng_emit(e, out, DSM_ACT_STORE, m->page);

		a->data = DSM_DATA_MSG;
		a->payload = e->payload;
	}
	h->owner = NONE32;
	h->stable = DSM_H_SHARED;
	sharers_clear_all(e, slot);
	bitmap_set(home_sharers(e, slot), src);
	h->n_sharers = 1;
	pending_clear_all(e, slot);
	grant(e, slot, false, now, out);
	home_kick(e, slot, now, out);
	return 0;
}

void home_timeout(struct dsm_engine *e, uint32_t slot, uint64_t now, struct dsm_actions *out)
{
	struct home_page *h = &e->dir[slot];

	switch (h->phase) {
	case P_LEASE:
		proceed(e, slot, now, out);
		break;
	case P_INV:
	case P_FETCH:
		eng_htimer_set(e, slot, now + e->retry_ns);
		for (uint32_t n = 0; n < e->n_nodes; n++) {
			if (n == e->self || !bitmap_test(home_pending(e, slot), n))
				continue;
			e->st.retransmissions++;
			send_take(e, slot, n, out);
		}
		break;
	case P_GRANT:
		eng_htimer_set(e, slot, now + e->retry_ns);
		if (h->serving != e->self) {
			e->st.retransmissions++;
			send_grant(e, slot, out);
		}
		break;
	default:
		if (h->n_rgrants == 0) {
			eng_htimer_del(e, slot);
			break;
		}
		eng_htimer_set(e, slot, now + e->retry_ns);
		for (uint32_t n = 0; n < e->n_nodes; n++) {
			if (n == e->self || !bitmap_test(home_rgrants(e, slot), n))
				continue;
			e->st.retransmissions++;
			send_rgrant(e, slot, n, out);
		}
		break;
	}
	home_kick(e, slot, now, out);
}

int home_peer_down(struct dsm_engine *e, uint32_t peer, uint64_t now, struct dsm_actions *out)
{
	for (uint32_t s = 0; s < e->n_homed; s++) {
		struct home_page *h = &e->dir[s];

		if (h->stable == DSM_H_MODIFIED && h->owner == peer) {
			eng_fatal(e, out, peer, "node %u is down holding page %" PRIu64 " Modified (its writes are lost)",
				  peer, slot_page(e, s));
			return -EPIPE;
		}
		if ((h->phase == P_INV || h->phase == P_FETCH) && bitmap_test(home_pending(e, s), peer)) {
			eng_fatal(e, out, peer, "node %u is down and owes an acknowledgement for page %" PRIu64, peer,
				  slot_page(e, s));
			return -EPIPE;
		}
	}
	/* it held nothing we need: forget it */
	for (uint32_t s = 0; s < e->n_homed; s++) {
		struct home_page *h = &e->dir[s];

		sharer_remove(e, s, peer);
		if (bitmap_test(home_rgrants(e, s), peer))
			rgrant_clear(e, s, peer);
		if (home_rec(e, s, peer)->queued)
			queue_remove(e, s, peer);
		if (h->serving == peer && (h->phase == P_GRANT || h->phase == P_LEASE))
			finish(e, s);
		/* a request of peer still collecting acks is dropped at grant time */
	}
	e->kick_all = true;     /* the timer serves the queues of the entries finished above */
	return 0;
}
