/* SPDX-License-Identifier: MIT */
/*
 * dsm protocol engine, cache role: this node's copy of every page (I, S, M and the transient IS, IM, SM).
 * The state table is in docs/dsm.md ("Cache state machine"); each case below is one row of it.
 */
#include <errno.h>

#include "dsm/protocol_internal.h"

static bool home_is_self(const struct dsm_engine *e, uint64_t page)
{
	return e->home[page] == e->self;
}

static void send_request(struct dsm_engine *e, uint64_t page, struct dsm_actions *out)
{
	const struct cache_page *c = &e->cache[page];
	uint8_t type = c->state == DSM_C_IS ? DSM_MSG_READ_REQ : DSM_MSG_WRITE_REQ;
	uint16_t flags = c->state == DSM_C_SM ? DSM_MF_UPGRADE : 0;

	eng_send(e, out, e->home[page], type, flags, page, 0, c->cur, e->self, DSM_DATA_NONE);
}

static void start_request(struct dsm_engine *e, uint64_t page, enum dsm_cache_state next, uint64_t now,
			  struct dsm_actions *out)
{
	struct cache_page *c = &e->cache[page];

	c->cur++;
	if (c->cur == 0)        /* req_id 0 means "none" on the wire */
		c->cur = 1;
	c->state = next;
	/* self-addressed messages cannot be lost: no retransmission */
	if (!home_is_self(e, page))
		eng_ctimer_set(e, page, now + e->retry_ns);
	send_request(e, page, out);
}

int cache_fault(struct dsm_engine *e, uint64_t page, bool write, uint64_t now, struct dsm_actions *out)
{
	struct cache_page *c = &e->cache[page];

	switch (c->state) {
	case DSM_C_INVALID:
		if (write)
			e->st.faults_write_miss++;
		else
			e->st.faults_read_miss++;
		start_request(e, page, write ? DSM_C_IM : DSM_C_IS, now, out);
		return 0;
	case DSM_C_SHARED:
		if (!write)
			break;
		e->st.faults_upgrade++;
		start_request(e, page, DSM_C_SM, now, out);
		return 0;
	case DSM_C_MODIFIED:
		break;
	default:
		/* a request is out: the MAP that ends it wakes this thread too (a writer woken by a read-only MAP
		 * faults again, WP, and then upgrades) */
		e->st.faults_coalesced++;
		return 0;
	}
	e->st.faults_spurious++;
	eng_emit(e, out, DSM_ACT_WAKE, page);
	return 0;
}

void cache_retransmit(struct dsm_engine *e, uint64_t page, uint64_t now, struct dsm_actions *out)
{
	struct cache_page *c = &e->cache[page];

	if (c->state != DSM_C_IS && c->state != DSM_C_IM && c->state != DSM_C_SM) {
		eng_ctimer_del(e, page);
		return;
	}
	e->st.retransmissions++;
	eng_ctimer_set(e, page, now + e->retry_ns);
	send_request(e, page, out);
}

static void send_grant_ack(struct dsm_engine *e, const struct dsm_msg *m, struct dsm_actions *out)
{
	eng_send(e, out, e->home[m->page], DSM_MSG_GRANT_ACK, 0, m->page, m->page_version, m->req_id, e->self,
		 DSM_DATA_NONE);
}

int cache_grant(struct dsm_engine *e, const struct dsm_msg *m, bool local, uint64_t now, struct dsm_actions *out)
{
	struct cache_page *c = &e->cache[m->page];
	bool rw = m->flags & DSM_MF_RW;
	enum dsm_data data;
	enum dsm_cache_state next;

	if (m->req_id != c->cur)
		return eng_drop(e, seq_before(m->req_id, c->cur) ? DSM_DROP_STALE : DSM_DROP_UNSOLICITED,
				e->home[m->page], m, now);

	if (m->flags & DSM_MF_ZERO)
		data = DSM_DATA_ZERO;
	else if (m->flags & DSM_MF_DATA)
		data = local ? DSM_DATA_HOME : DSM_DATA_MSG;
	else
		data = DSM_DATA_KEEP;

	switch (c->state) {
	case DSM_C_IS:
		if (rw || data == DSM_DATA_KEEP)
			return eng_drop(e, DSM_DROP_BAD_STATE, e->home[m->page], m, now);
		next = DSM_C_SHARED;
		break;
	case DSM_C_IM:
		if (!rw || data == DSM_DATA_KEEP)        /* nothing to keep: see "upgrade racing an INV" */
			return eng_drop(e, DSM_DROP_BAD_STATE, e->home[m->page], m, now);
		next = DSM_C_MODIFIED;
		break;
	case DSM_C_SM:
		if (!rw)
			return eng_drop(e, DSM_DROP_BAD_STATE, e->home[m->page], m, now);
		next = DSM_C_MODIFIED;
		break;
	case DSM_C_SHARED:
	case DSM_C_MODIFIED:
		/* the grant of our last request again (its GRANT_ACK was lost): acknowledge, map nothing */
		if (c->ver != m->page_version)
			return eng_drop(e, DSM_DROP_STALE, e->home[m->page], m, now);
		send_grant_ack(e, m, out);
		return eng_drop(e, DSM_DROP_DUPLICATE, e->home[m->page], m, now);
	default:        /* I: the grant was installed, then invalidated: the home has long had our ack */
		return eng_drop(e, DSM_DROP_STALE, e->home[m->page], m, now);
	}

	struct dsm_action *a = eng_emit(e, out, DSM_ACT_MAP, m->page);

	a->mode = rw ? DSM_MODE_RW : DSM_MODE_RO;
	a->data = data;
	if (data == DSM_DATA_MSG)
		a->payload = e->payload;
	c->state = next;
	c->ver = m->page_version;
	eng_ctimer_del(e, m->page);
	if (c->has_stash && c->stash_ver < c->ver) {
		/* the home finished the transaction that stored the stash before serving us (lost DATA_ACK) */
		eng_emit(e, out, DSM_ACT_DROP_STASH, m->page);
		c->has_stash = 0;
	}
	send_grant_ack(e, m, out);
	return 0;
}

static void send_inv_ack(struct dsm_engine *e, const struct dsm_msg *m, enum dsm_data data,
			 struct dsm_actions *out)
{
	eng_send(e, out, e->home[m->page], DSM_MSG_INV_ACK, 0, m->page, m->page_version, m->req_id, m->requester,
		 data);
}

int cache_inv(struct dsm_engine *e, const struct dsm_msg *m, bool local, uint64_t now, struct dsm_actions *out)
{
	struct cache_page *c = &e->cache[m->page];
	uint64_t v = m->page_version;

	switch (c->state) {
	case DSM_C_SHARED:
	case DSM_C_SM:
	case DSM_C_MODIFIED:
		if (v < c->ver)         /* meant for an older copy, which we no longer hold */
			return eng_drop(e, DSM_DROP_STALE, e->home[m->page], m, now);
		break;
	default:
		/* No copy. Either a duplicate, or our ack was lost (the request-crossing-INV race): answer again,
		 * from the stash if this INV took a Modified copy from us. */
		if (c->has_stash && c->stash_ver == v) {
			send_inv_ack(e, m, DSM_DATA_STASH, out);
			return eng_drop(e, DSM_DROP_DUPLICATE, e->home[m->page], m, now);
		}
		send_inv_ack(e, m, DSM_DATA_NONE, out);
		return 0;
	}

	e->st.invalidations++;
	if (c->state == DSM_C_MODIFIED) {
		eng_emit(e, out, DSM_ACT_WRITE_PROTECT, m->page);
		if (local) {
			send_inv_ack(e, m, DSM_DATA_LOCAL, out);        /* becomes STORE LOCAL, in order */
		} else {
			/* Until the home has the bytes they exist only in flight: keep them to answer a resent INV. */
			if (c->has_stash)
				eng_emit(e, out, DSM_ACT_DROP_STASH, m->page);
			eng_emit(e, out, DSM_ACT_STASH, m->page);
			c->has_stash = 1;
			c->stash_ver = v;
			e->st.stashes++;
			send_inv_ack(e, m, DSM_DATA_STASH, out);
		}
		eng_emit(e, out, DSM_ACT_UNMAP, m->page);
		c->state = DSM_C_INVALID;
		return 0;
	}
	eng_emit(e, out, DSM_ACT_UNMAP, m->page);
	/* upgrade racing an INV: the write request stays out; the home will see we are no longer a sharer */
	c->state = c->state == DSM_C_SM ? DSM_C_IM : DSM_C_INVALID;
	send_inv_ack(e, m, DSM_DATA_NONE, out);
	return 0;
}

int cache_fetch(struct dsm_engine *e, const struct dsm_msg *m, bool local, uint64_t now, struct dsm_actions *out)
{
	struct cache_page *c = &e->cache[m->page];
	bool dup;

	switch (c->state) {
	case DSM_C_MODIFIED:
		dup = false;
		break;
	case DSM_C_SHARED:
	case DSM_C_SM:
		dup = true;     /* downgraded already and our FETCH_ACK was lost: the copy is still current */
		break;
	default:
		return eng_drop(e, DSM_DROP_STALE, e->home[m->page], m, now);
	}
	if (m->page_version != c->ver)
		return eng_drop(e, DSM_DROP_STALE, e->home[m->page], m, now);
	if (!dup) {
		eng_emit(e, out, DSM_ACT_WRITE_PROTECT, m->page);
		c->state = DSM_C_SHARED;
		e->st.downgrades++;
	}
	eng_send(e, out, e->home[m->page], DSM_MSG_FETCH_ACK, 0, m->page, m->page_version, m->req_id, m->requester,
		 DSM_DATA_LOCAL);
	return dup ? eng_drop(e, DSM_DROP_DUPLICATE, e->home[m->page], m, now) : 0;
}

int cache_data_ack(struct dsm_engine *e, const struct dsm_msg *m, uint64_t now, struct dsm_actions *out)
{
	struct cache_page *c = &e->cache[m->page];

	if (!c->has_stash || c->stash_ver != m->page_version)
		return eng_drop(e, DSM_DROP_DUPLICATE, e->home[m->page], m, now);
	eng_emit(e, out, DSM_ACT_DROP_STASH, m->page);
	c->has_stash = 0;
	return 0;
}
