/* SPDX-License-Identifier: MIT */
/*
 * Internals of the dsm protocol engine, shared by protocol.c (inputs, validation, timers, self-delivery),
 * protocol_cache.c (cache role) and protocol_home.c (home role). Not for other modules.
 *
 * Handlers return 0 when the message was acted on and -EPROTO when it was dropped (counted through
 * eng_drop()); a duplicate that is answered again counts as a DUPLICATE drop but still appends its answer.
 */
#ifndef RACKVM_DSM_PROTOCOL_INTERNAL_H
#define RACKVM_DSM_PROTOCOL_INTERNAL_H

#include "dsm/protocol.h"
#include "util/bitmap.h"

#define NONE32 UINT32_MAX
#define NONE16 UINT16_MAX
#define LOCALQ_LEN 16u          /* self-addressed messages in flight inside one input; chains are short */

enum req_kind { K_READ = 1, K_WRITE = 2 };

enum home_phase { P_IDLE = 0, P_LEASE, P_INV, P_FETCH, P_GRANT };

struct cache_page {
	uint8_t state;          /* enum dsm_cache_state */
	uint8_t has_stash;
	uint32_t cur;           /* req_id of the outstanding or last finished request */
	uint64_t ver;           /* version of the held copy (S, SM, M) */
	uint64_t stash_ver;
	uint64_t deadline;      /* retransmit the request (pending, remote home) */
	uint32_t tprev, tnext;  /* timer list */
};

struct home_page {
	uint8_t stable;         /* DSM_H_UNCACHED, DSM_H_SHARED, DSM_H_MODIFIED */
	uint8_t phase;          /* enum home_phase */
	uint8_t never_written;
	uint8_t kind;           /* in-service request kind */
	uint16_t grant_flags;   /* P_GRANT: flags of the GRANT sent (for retransmission) */
	uint32_t owner;         /* MODIFIED: owner, else NONE32 */
	uint32_t serving;       /* requester in service, NONE32 if idle */
	uint32_t serving_req;
	uint32_t n_sharers, n_pending;
	uint32_t n_rgrants;     /* read-only grants sent and not yet acknowledged (only while idle) */
	uint32_t qhead, qtail;  /* queued requesters (linked through struct req_rec.next) */
	uint32_t n_queued;
	uint64_t version;
	uint64_t lease_until;
	uint64_t deadline;      /* P_LEASE: lease end; P_INV/P_FETCH/P_GRANT: retransmission */
	uint32_t tprev, tnext;  /* timer list */
};

/* One per (homed page, node): duplicate detection and the queue link. */
struct req_rec {
	uint32_t seen;          /* highest req_id accepted from this node for this page */
	uint16_t next;          /* next queued node, NONE16 */
	uint8_t kind;           /* kind of the queued request */
	uint8_t queued;
};

struct local_msg {
	struct dsm_msg m;
};

struct dsm_engine {
	uint32_t self, n_nodes, epoch;
	uint64_t n_pages, n_homed;
	uint64_t lease_ns, retry_ns;
	uint32_t *home;         /* page -> node */
	uint32_t *slot;         /* page -> home slot, NONE32 if not ours */
	uint64_t *slot_page;    /* slot -> page */
	uint64_t *homed_count;  /* node -> pages it homes */
	struct cache_page *cache;
	struct home_page *dir;
	struct req_rec *reqs;   /* n_homed * n_nodes */
	uint64_t *bits;         /* per slot: sharers, pending acks, unacknowledged read grants; words each */
	uint64_t *dead;         /* nodes reported down */
	uint32_t words;

	uint32_t ctimers, htimers;      /* heads of the cache-page and home-slot timer lists */
	uint64_t armed;                 /* when of the last TIMER action, 0 = disarmed */
	bool kick_all;                  /* peer_down finished requests: serve queues from the timer */
	uint64_t kick_cursor;

	struct local_msg localq[LOCALQ_LEN];
	uint32_t lq_head, lq_n;
	const void *payload;            /* DSM_DATA_MSG bytes of the message being processed */

	bool failed;
	char fatal_reason[DSM_REASON_MAX];
	uint32_t fatal_peer;

	uint64_t last_log_ns;
	uint64_t unlogged_drops;
	struct dsm_stats st;
	struct dsm_action scratch;      /* target of appends past cap */
};

/* protocol.c */
struct dsm_action *eng_emit(struct dsm_engine *e, struct dsm_actions *out, enum dsm_action_type type,
			    uint64_t page);
/* Send (or deliver inside the engine when dst == self; a LOCAL data source then becomes a STORE now). */
void eng_send(struct dsm_engine *e, struct dsm_actions *out, uint32_t dst, uint8_t type, uint16_t flags,
	      uint64_t page, uint64_t version, uint32_t req_id, uint32_t requester, enum dsm_data data);
int eng_drop(struct dsm_engine *e, enum dsm_drop_reason why, uint32_t src, const struct dsm_msg *m, uint64_t now);
void eng_fatal(struct dsm_engine *e, struct dsm_actions *out, uint32_t peer, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void eng_ctimer_set(struct dsm_engine *e, uint64_t page, uint64_t deadline);
void eng_ctimer_del(struct dsm_engine *e, uint64_t page);
void eng_htimer_set(struct dsm_engine *e, uint32_t slot, uint64_t deadline);
void eng_htimer_del(struct dsm_engine *e, uint32_t slot);

static inline bool seq_before(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}

static inline uint64_t *home_sharers(const struct dsm_engine *e, uint32_t slot)
{
	return e->bits + (uint64_t)slot * 3 * e->words;
}

static inline uint64_t *home_pending(const struct dsm_engine *e, uint32_t slot)
{
	return e->bits + ((uint64_t)slot * 3 + 1) * e->words;
}

static inline uint64_t *home_rgrants(const struct dsm_engine *e, uint32_t slot)
{
	return e->bits + ((uint64_t)slot * 3 + 2) * e->words;
}


static inline struct req_rec *home_rec(struct dsm_engine *e, uint32_t slot, uint32_t node)
{
	return &e->reqs[(uint64_t)slot * e->n_nodes + node];
}

/* protocol_cache.c: `local` = delivered inside the engine from this node's home role (data then means the home
 * store); otherwise the data bytes are e->payload. */
int cache_fault(struct dsm_engine *e, uint64_t page, bool write, uint64_t now, struct dsm_actions *out);
int cache_grant(struct dsm_engine *e, const struct dsm_msg *m, bool local, uint64_t now, struct dsm_actions *out);
int cache_inv(struct dsm_engine *e, const struct dsm_msg *m, bool local, uint64_t now, struct dsm_actions *out);
int cache_fetch(struct dsm_engine *e, const struct dsm_msg *m, bool local, uint64_t now, struct dsm_actions *out);
int cache_data_ack(struct dsm_engine *e, const struct dsm_msg *m, uint64_t now, struct dsm_actions *out);
void cache_retransmit(struct dsm_engine *e, uint64_t page, uint64_t now, struct dsm_actions *out);

/* protocol_home.c: src == e->self for messages from this node's own cache role (data already stored). */
int home_request(struct dsm_engine *e, uint32_t src, const struct dsm_msg *m, uint64_t now,
		 struct dsm_actions *out);
int home_grant_ack(struct dsm_engine *e, uint32_t src, const struct dsm_msg *m, uint64_t now,
		   struct dsm_actions *out);
int home_inv_ack(struct dsm_engine *e, uint32_t src, const struct dsm_msg *m, uint64_t now,
		 struct dsm_actions *out);
int home_fetch_ack(struct dsm_engine *e, uint32_t src, const struct dsm_msg *m, uint64_t now,
		   struct dsm_actions *out);
void home_timeout(struct dsm_engine *e, uint32_t slot, uint64_t now, struct dsm_actions *out);
void home_kick(struct dsm_engine *e, uint32_t slot, uint64_t now, struct dsm_actions *out);
/* peer_down for the home role: 0, or -EPIPE after emitting FATAL. */
int home_peer_down(struct dsm_engine *e, uint32_t peer, uint64_t now, struct dsm_actions *out);

#endif
