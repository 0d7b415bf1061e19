/* SPDX-License-Identifier: MIT */
/*
 * dsm protocol engine — the coherence state machine of one node, with no I/O, no threads and no clock.
 *
 * The story (message sequences, both state tables, every race and how it is handled, why the result is
 * sequentially consistent) is in docs/dsm.md; keep the two in step, and the spin model with them.
 *
 * Roles. Every node runs one engine, which plays two roles at once:
 *  - cache: for every page of the region, this node's copy — Invalid / Shared / Modified, plus the transient
 *    states IS, IM, SM (a request is outstanding);
 *  - home: for the pages the home map assigns to this node, the directory entry {stable state, owner, sharer
 *    set, version, never-written, request in service, queue} and the home store (the authoritative bytes of
 *    the page whenever no node holds it Modified). The backend owns the home store (dsm_engine_n_homed() slots
 *    of DSM_PAGE_SIZE bytes, indexed by dsm_engine_home_slot()); the engine only names pages.
 * A node's own faults on pages it homes go through the same two roles; the messages between them are delivered
 * inside the engine (never a SEND to self).
 *
 * Calling contract. Inputs are dsm_engine_fault/recv/timer/peer_down. Each appends actions to `out`, which the
 * backend executes IN ORDER after the call (the order is what makes write-protect, copy-out, zap safe). The
 * engine is not thread-safe: one caller at a time (the backend serializes with a lock or a single thread).
 * `now` is a monotonic time in nanoseconds supplied by the caller; it must never go backwards.
 * `out` must have room for dsm_engine_max_actions() actions, empty or not — fault/recv/peer_down never need
 * more; timer stops early when the list is nearly full and arms the timer for `now` so it is called again.
 *
 * Nothing received can crash the engine: a message that is malformed, stale, duplicated, from an old epoch,
 * or that makes no sense in the current state is dropped, counted in dsm_stats.drops[reason], and logged at
 * most once per second.
 */
#ifndef RACKVM_DSM_PROTOCOL_H
#define RACKVM_DSM_PROTOCOL_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DSM_PAGE_SHIFT 12
#define DSM_PAGE_SIZE (1u << DSM_PAGE_SHIFT)
#define DSM_MAX_NODES 1024u                        /* == IC_MAX_NODES; node ids fit in u16 */
#define DSM_WIRE_VERSION 1u

#define DSM_LEASE_NS_DEFAULT (100ULL * 1000)       /* 100 us: see docs/dsm.md "Lease" */
#define DSM_RETRY_NS_DEFAULT (10ULL * 1000 * 1000) /* 10 ms */

/* ---- wire ---------------------------------------------------------------------------------------------
 *
 * Every DSM message is one interconnect frame whose type is the message type (0x20..0x2f) and whose payload is
 * a struct dsm_msg, followed by exactly DSM_PAGE_SIZE bytes iff flags & DSM_MF_DATA. Little-endian (the only
 * byte order we build for). Versioning rule: a receiver accepts exactly the versions it knows (today: 1) and
 * drops any other (counted, DSM_DROP_BAD_VERSION); new message types or flags need a new version.
 * `reserved` is sent as 0 and ignored on receipt.
 */
enum dsm_msg_type {
	DSM_MSG_READ_REQ = 0x20,    /* cache -> home: want a read-only copy                                  */
	DSM_MSG_WRITE_REQ = 0x21,   /* cache -> home: want ownership (flags UPGRADE if the sender holds S)    */
	DSM_MSG_GRANT = 0x22,       /* home -> cache: here is your copy (RW flag; DATA | ZERO | neither=KEEP) */
	DSM_MSG_GRANT_ACK = 0x23,   /* cache -> home: grant installed; the home may serve the next request   */
	DSM_MSG_INV = 0x24,         /* home -> holder: drop your copy of page@page_version                   */
	DSM_MSG_INV_ACK = 0x25,     /* holder -> home: dropped (DATA if it was Modified)                     */
	DSM_MSG_FETCH = 0x26,       /* home -> owner: downgrade M -> S and send the bytes                     */
	DSM_MSG_FETCH_ACK = 0x27,   /* owner -> home: downgraded, DATA attached                              */
	DSM_MSG_DATA_ACK = 0x28,    /* home -> former owner: your INV_ACK data is stored; drop your stash    */
	DSM_MSG_TYPE_MIN = 0x20,
	DSM_MSG_TYPE_MAX = 0x2f,    /* 0x29..0x2f reserved: dropped as DSM_DROP_BAD_TYPE                     */
};
#define DSM_MSG_NTYPES 16u

/* dsm_msg.flags */
#define DSM_MF_DATA 0x0001u     /* DSM_PAGE_SIZE bytes of page data follow the header                   */
#define DSM_MF_ZERO 0x0002u     /* GRANT of a never-written page: map zeros (no data follows)            */
#define DSM_MF_RW 0x0004u       /* GRANT: read-write (else read-only)                                     */
#define DSM_MF_UPGRADE 0x0008u  /* WRITE_REQ: sender holds S (informative: the home trusts its sharer set) */
#define DSM_MF_ALL 0x000fu      /* any other bit set: dropped as DSM_DROP_BAD_FLAGS                      */

struct dsm_msg {
	uint8_t version;        /* DSM_WIRE_VERSION */
	uint8_t type;           /* enum dsm_msg_type */
	uint16_t flags;         /* DSM_MF_* */
	uint32_t epoch;         /* sender's membership epoch; must equal the receiver's */
	uint64_t page;          /* page index in the region, < n_pages */
	uint64_t page_version;  /* GRANT: version of the granted copy; INV/FETCH and their acks: version of the
	                         * copy being taken away; DATA_ACK: version stored; requests: 0 */
	uint32_t req_id;        /* per (requester, page) request number; echoed by GRANT/GRANT_ACK/INV/FETCH/acks */
	uint16_t requester;     /* the node whose request this message serves */
	uint16_t reserved;
};

static_assert(sizeof(struct dsm_msg) == 32, "dsm_msg is 32 bytes on the wire");
static_assert(offsetof(struct dsm_msg, version) == 0, "wire layout");
static_assert(offsetof(struct dsm_msg, type) == 1, "wire layout");
static_assert(offsetof(struct dsm_msg, flags) == 2, "wire layout");
static_assert(offsetof(struct dsm_msg, epoch) == 4, "wire layout");
static_assert(offsetof(struct dsm_msg, page) == 8, "wire layout");
static_assert(offsetof(struct dsm_msg, page_version) == 16, "wire layout");
static_assert(offsetof(struct dsm_msg, req_id) == 24, "wire layout");
static_assert(offsetof(struct dsm_msg, requester) == 28, "wire layout");
static_assert(offsetof(struct dsm_msg, reserved) == 30, "wire layout");
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire is little-endian; add byte swapping");

/* Bytes on the wire for a message with these flags. */
static inline size_t dsm_msg_len(uint16_t flags)
{
	return sizeof(struct dsm_msg) + ((flags & DSM_MF_DATA) ? DSM_PAGE_SIZE : 0);
}

/* ---- states --------------------------------------------------------------------------------------------- */

enum dsm_cache_state {
	DSM_C_INVALID = 0,  /* no copy: access faults MISSING */
	DSM_C_SHARED,       /* read-only copy */
	DSM_C_MODIFIED,     /* the only copy, read-write */
	DSM_C_IS,           /* no copy, READ_REQ outstanding */
	DSM_C_IM,           /* no copy, WRITE_REQ outstanding */
	DSM_C_SM,           /* read-only copy, WRITE_REQ (upgrade) outstanding */
	DSM_C_NSTATES,
};

/* Directory state of a homed page as seen from outside: the stable state when idle, else the phase of the
 * request in service (the stable fields in struct dsm_home_info say what the directory already records). */
enum dsm_home_state {
	DSM_H_UNCACHED = 0, /* no copies; home store authoritative (or never written: zeros) */
	DSM_H_SHARED,       /* read-only copies at the sharers; home store authoritative */
	DSM_H_MODIFIED,     /* one read-write copy at the owner; home store stale */
	DSM_H_LEASE_WAIT,   /* request in service must take the page from an owner whose lease runs */
	DSM_H_INV_WAIT,     /* INVs sent, waiting for every ack (write request) */
	DSM_H_FETCH_WAIT,   /* FETCH sent to the owner, waiting for its data (read request) */
	DSM_H_GRANT_WAIT,   /* GRANT(s) sent, waiting for GRANT_ACK (or a newer request from the requester);
	                     * read grants do not block further read grants, only a write (INV/FETCH) */
	DSM_H_NSTATES,
};

struct dsm_home_info {
	enum dsm_home_state state;
	enum dsm_home_state stable;     /* UNCACHED, SHARED or MODIFIED: what the directory records */
	uint32_t owner;                 /* MODIFIED: the owner; else UINT32_MAX */
	uint32_t n_sharers;
	uint64_t version;
	bool never_written;
	uint32_t serving;               /* requester in service, UINT32_MAX if idle */
	uint32_t queued;                /* requests waiting behind it */
	uint32_t acks_pending;          /* INV_WAIT/FETCH_WAIT: acks still missing */
	uint32_t grants_unacked;        /* GRANTs sent and not yet acknowledged (read grants may be several) */
};

/* ---- actions -------------------------------------------------------------------------------------------- */

enum dsm_action_type {
	DSM_ACT_SEND = 1,       /* send msg to peer; data: NONE, LOCAL, HOME or STASH (then DSM_MF_DATA is set) */
	DSM_ACT_MAP,            /* install page with mode; data: MSG, HOME, ZERO or KEEP. Wakes every waiter.   */
	DSM_ACT_WRITE_PROTECT,  /* present page becomes read-only (writers fault WP)                            */
	DSM_ACT_UNMAP,          /* zap the page: the next access faults MISSING                                  */
	DSM_ACT_STORE,          /* write bytes into the home store slot of page; data: MSG or LOCAL             */
	DSM_ACT_WAKE,           /* wake the page's waiters without changing anything (spurious fault)           */
	DSM_ACT_STASH,          /* copy this node's (write-protected) bytes of page aside, keyed by page        */
	DSM_ACT_DROP_STASH,     /* free the stash of page                                                       */
	DSM_ACT_TIMER,          /* (re)arm the engine's single timer at `when` (absolute ns); 0 = disarm        */
	DSM_ACT_FATAL,          /* the region cannot continue: report `reason`, fail every waiter, never hang   */
};

/* Where the bytes of a SEND, MAP or STORE come from. */
enum dsm_data {
	DSM_DATA_NONE = 0,
	DSM_DATA_MSG,           /* the DSM_PAGE_SIZE payload of the message being processed (action.payload)    */
	DSM_DATA_LOCAL,         /* this node's mapping of the page (write-protected by an earlier action)        */
	DSM_DATA_HOME,          /* the home store slot of the page (this node is its home)                       */
	DSM_DATA_ZERO,          /* zeros (never-written page)                                                     */
	DSM_DATA_KEEP,          /* MAP only: the bytes are already present; change protection only               */
	DSM_DATA_STASH,         /* SEND only: the bytes saved by an earlier STASH of the page                    */
};

enum dsm_mode {
	DSM_MODE_RO = 1,
	DSM_MODE_RW = 2,
};

#define DSM_REASON_MAX 96u

struct dsm_action {
	enum dsm_action_type type;
	enum dsm_data data;
	enum dsm_mode mode;         /* MAP */
	uint32_t peer;              /* SEND: destination; FATAL: the node blamed (UINT32_MAX: none) */
	uint64_t page;              /* MAP, WRITE_PROTECT, UNMAP, STORE, WAKE, STASH, DROP_STASH, SEND (== msg.page) */
	uint64_t when;              /* TIMER */
	const void *payload;        /* data == MSG: the received bytes; valid while the caller holds the buffer
	                             * it passed to dsm_engine_recv() */
	struct dsm_msg msg;         /* SEND: the header to send (the backend appends the data bytes if any) */
	char reason[DSM_REASON_MAX];/* FATAL: NUL-terminated, names the node */
};

/* Caller-owned output list. The engine appends at v[n], never beyond cap; `overflow` counts actions it had to
 * discard (a bug: cap < dsm_engine_max_actions()). */
struct dsm_actions {
	struct dsm_action *v;
	uint32_t n, cap;
	uint32_t overflow;
};

static inline void dsm_actions_init(struct dsm_actions *out, struct dsm_action *buf, uint32_t cap)
{
	out->v = buf;
	out->n = 0;
	out->cap = cap;
	out->overflow = 0;
}

/* ---- statistics ----------------------------------------------------------------------------------------- */

enum dsm_drop_reason {
	DSM_DROP_BAD_LEN = 0,       /* shorter than the header, or length disagrees with DSM_MF_DATA */
	DSM_DROP_BAD_VERSION,
	DSM_DROP_BAD_TYPE,          /* not a DSM message type (reserved 0x29..0x2f included) */
	DSM_DROP_BAD_FLAGS,         /* unknown flag bits, or flags that do not fit the type */
	DSM_DROP_BAD_PAGE,          /* page >= n_pages */
	DSM_DROP_BAD_SENDER,        /* src out of range or self, or a type this node must not get from src */
	DSM_DROP_OLD_EPOCH,
	DSM_DROP_NEW_EPOCH,         /* sender is ahead of us: dropped, it retransmits once we catch up */
	DSM_DROP_DUPLICATE,         /* a copy of a message already acted on (answered again if needed) */
	DSM_DROP_STALE,             /* refers to a request or version that is over */
	DSM_DROP_UNSOLICITED,       /* a grant or ack nobody is waiting for */
	DSM_DROP_BAD_STATE,         /* well-formed but impossible in the current state (peer bug) */
	DSM_DROP_FAILED,            /* engine already FATAL */
	DSM_DROP_NREASONS,
};

struct dsm_stats {
	uint64_t faults_read_miss;      /* read fault, no copy */
	uint64_t faults_write_miss;     /* write fault, no copy */
	uint64_t faults_upgrade;        /* write fault on a read-only copy */
	uint64_t faults_coalesced;      /* fault on a page with a request already outstanding */
	uint64_t faults_spurious;       /* fault on a page already accessible (answered by WAKE) */
	uint64_t msgs_tx[DSM_MSG_NTYPES];   /* by type - DSM_MSG_TYPE_MIN; remote sends only */
	uint64_t msgs_rx[DSM_MSG_NTYPES];   /* remote messages that passed validation (duplicates and stale ones
	                                     * among them are counted in drops as well) */
	uint64_t msgs_local;            /* messages delivered inside the engine (node to its own home) */
	uint64_t drops[DSM_DROP_NREASONS];
	uint64_t invalidations;         /* copies this node dropped on INV */
	uint64_t downgrades;            /* M -> S on FETCH */
	uint64_t grants_zero;           /* grants of never-written pages (home role) */
	uint64_t lease_deferrals;       /* requests that had to wait for an owner's lease (home role) */
	uint64_t retransmissions;       /* requests, INV/FETCH and GRANTs sent again after retry_ns */
	uint64_t queued;                /* requests that found their page busy at the home */
	uint64_t stashes;               /* M copies stashed while their data was in flight */
};

/* ---- engine --------------------------------------------------------------------------------------------- */

struct dsm_engine;

struct dsm_config {
	uint32_t self;              /* this node, < n_nodes */
	uint32_t n_nodes;           /* 1..DSM_MAX_NODES */
	uint64_t n_pages;           /* region size in pages, > 0 */
	const uint32_t *home;       /* page -> home node (n_pages entries, copied); NULL: contiguous blocks,
	                             * node k homes [k*n_pages/n_nodes, (k+1)*n_pages/n_nodes) */
	uint32_t epoch;             /* membership epoch stamped on and required of every message */
	uint64_t lease_ns;          /* minimum time a new owner keeps a page before the home takes it back;
	                             * 0 = no lease */
	uint64_t retry_ns;          /* resend an unanswered request/INV/FETCH/GRANT after this long; > 0 */
};

/* Fill cfg with the defaults (lease DSM_LEASE_NS_DEFAULT, retry DSM_RETRY_NS_DEFAULT, epoch 1, contiguous
 * homes); the caller then sets self, n_nodes and n_pages. */
void dsm_config_init(struct dsm_config *cfg);

/* Allocates every table (sized by n_pages and n_nodes); nothing is allocated afterwards. Every page starts
 * Invalid at every cache and UNCACHED + never-written at its home. -EINVAL (logged) for a bad config. */
int dsm_engine_create(const struct dsm_config *cfg, struct dsm_engine **out);
void dsm_engine_destroy(struct dsm_engine *e);

/* Room every input needs in `out`. */
uint32_t dsm_engine_max_actions(const struct dsm_engine *e);

/* A local thread faulted on page: write = a write access (MISSING with write, or WP), else a read.
 * Returns 0, or -EINVAL for a page out of range (a backend bug, logged). */
int dsm_engine_fault(struct dsm_engine *e, uint64_t page, bool write, uint64_t now, struct dsm_actions *out);

/* A DSM frame of len bytes arrived from node src (transport framing and MAC already checked). The engine
 * validates everything else. Returns 0 if the message had an effect (actions appended: a duplicate answered
 * again counts), -EPROTO if it was dropped without any (already counted and logged; nothing was appended to
 * `out`, so executing it or not is the same). */
int dsm_engine_recv(struct dsm_engine *e, uint32_t src, const void *buf, size_t len, uint64_t now,
		    struct dsm_actions *out);

/* The timer armed by the last DSM_ACT_TIMER fired (calling it early or spuriously is harmless). */
int dsm_engine_timer(struct dsm_engine *e, uint64_t now, struct dsm_actions *out);

/* The transport lost peer for good. Emits FATAL naming it if it could hold state this node needs (it homes
 * pages, owns one of our pages, or owes us an ack); otherwise forgets it (sharer sets, queues) and goes on. */
int dsm_engine_peer_down(struct dsm_engine *e, uint32_t peer, uint64_t now, struct dsm_actions *out);

/* New membership epoch (from the cluster layer). Messages are stamped with it from now on; messages carrying
 * another epoch are dropped. Outstanding requests are resent on their next retry with the new epoch. */
void dsm_engine_set_epoch(struct dsm_engine *e, uint32_t epoch);

/* ---- introspection (backend, tests, simulator) ---------------------------------------------------------- */

void dsm_engine_get_stats(const struct dsm_engine *e, struct dsm_stats *out);
bool dsm_engine_failed(const struct dsm_engine *e);
uint32_t dsm_engine_self(const struct dsm_engine *e);
uint64_t dsm_engine_n_pages(const struct dsm_engine *e);
uint32_t dsm_engine_home_of(const struct dsm_engine *e, uint64_t page);    /* UINT32_MAX if out of range */
/* Home store layout: this node homes n_homed pages; page's bytes live in slot dsm_engine_home_slot(page)
 * (0 .. n_homed-1), or -1 if this node is not its home. Slots follow page order. */
uint64_t dsm_engine_n_homed(const struct dsm_engine *e);
int64_t dsm_engine_home_slot(const struct dsm_engine *e, uint64_t page);
enum dsm_cache_state dsm_engine_cache_state(const struct dsm_engine *e, uint64_t page);
/* -ENOENT if this node is not the page's home. */
int dsm_engine_home_info(const struct dsm_engine *e, uint64_t page, struct dsm_home_info *out);
bool dsm_engine_home_is_sharer(const struct dsm_engine *e, uint64_t page, uint32_t node);
/* Absolute time the engine wants its timer, 0 if none (the value of the last TIMER action). */
uint64_t dsm_engine_next_timer(const struct dsm_engine *e);

const char *dsm_msg_type_name(uint8_t type);
const char *dsm_cache_state_name(enum dsm_cache_state s);
const char *dsm_home_state_name(enum dsm_home_state s);
const char *dsm_drop_reason_name(enum dsm_drop_reason r);
const char *dsm_action_type_name(enum dsm_action_type t);
const char *dsm_data_name(enum dsm_data d);

#endif
