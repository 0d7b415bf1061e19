/*
 * dsm.pml — spin model of the DSM coherence protocol engine (dsm/protocol.h, protocol.c, protocol_cache.c,
 * protocol_home.c). It mirrors the ENGINE's code by hand (states, messages, actions, the order of actions),
 * not only docs/dsm.md; keep the two in step. What is modelled and what is abstracted, the properties and the
 * measured state spaces are in docs/dsm-model.md; the mapping of every inline below to its C function is in
 * dsm/model/README.md.
 *
 * One engine per node, each playing the cache role for every page and the home role for the pages it homes
 * (default home map: node k homes [k*P/N, (k+1)*P/N) — HOME(p) below). An engine input (fault, message,
 * timer) and the backend's execution of its actions happen atomically (region.c runs both under r->lock),
 * so every input is one d_step here; guest threads run between inputs.
 *
 * Configuration (cpp macros, set by check.sh): N nodes (3 or 4), ACC accesses per node, RETRIES early timer
 * firings (duplicates without loss), LOSS frames lost, REORDER in-link overtakings, TICK (retransmission
 * timers fire when the system is otherwise quiescent; needed with LOSS), CAP link capacity.
 * Deliberately broken variants: BUG_SKIP_INV, BUG_NO_STORE, BUG_NO_KICK (see check.sh and the doc).
 */

#ifndef N
#define N 3
#endif
#define P 2
#ifndef ACC
#define ACC 2
#endif
#ifndef ACC0
#define ACC0 ACC
#endif
#ifndef ACC1
#define ACC1 ACC
#endif
#ifndef ACC2
#define ACC2 ACC
#endif
#ifndef RETRIES
#define RETRIES 0
#endif
#ifndef LOSS
#define LOSS 0
#endif
#ifndef REORDER
#define REORDER 0
#endif
#ifndef CAP
#define CAP 6
#endif
#define LQ 4            /* engine localq (LOCALQ_LEN is 16; chains here are <= 3 long) */
#define NONE 255

#define HOME(p) ((p) * N / P)   /* dsm_engine_create(): contiguous blocks */
#define CI(n, p) ((n) * P + (p))
#define QI(p, n) ((p) * N + (n))
#define LI(s, d) ((s) * N + (d))
#define BIT(n) (1 << (n))

/* enum dsm_cache_state */
#define C_I 0
#define C_S 1
#define C_M 2
#define C_IS 3
#define C_IM 4
#define C_SM 5
/* enum dsm_home_state (stable part) */
#define H_UNCACHED 0
#define H_SHARED 1
#define H_MODIFIED 2
/* enum home_phase */
#define P_IDLE 0
#define P_LEASE 1
#define P_INV 2
#define P_FETCH 3
#define P_GRANT 4
/* enum req_kind */
#define K_READ 1
#define K_WRITE 2
/* DSM_MF_* */
#define F_DATA 1
#define F_ZERO 2
#define F_RW 4
#define F_UPGRADE 8
/* enum dsm_data */
#define D_NONE 0
#define D_MSG 1
#define D_LOCAL 2
#define D_HOME 3
#define D_ZERO 4
#define D_KEEP 5
#define D_STASH 6
/* the backend's mapping of a page (what a guest thread can do without faulting) */
#define MAP_NONE 0
#define MAP_RO 1
#define MAP_RW 2
/* guest thread of a node */
#define T_IDLE 0        /* no access in progress */
#define T_WANT 1        /* woken (MAP/WAKE): retries its access */
#define T_WAIT 2        /* faulted: blocked until MAP or WAKE of its page */

mtype = { READ_REQ, WRITE_REQ, GRANT, GRANT_ACK, INV, INV_ACK, FETCH, FETCH_ACK, DATA_ACK };

/* ---- cache role: struct cache_page per (node, page), plus the backend's mapping, bytes and stash ---------- */
byte cst[N * P];        /* state */
byte cur[N * P];        /* req_id of the outstanding or last request */
byte cver[N * P];       /* version of the held copy */
bool has_stash[N * P];
byte stash_ver[N * P];
byte map[N * P];        /* MAP_*: set by MAP, WRITE_PROTECT, UNMAP */
byte mem[N * P];        /* the page's bytes at this node (a write counter); 0 when unmapped */
byte stash_val[N * P];  /* the bytes saved by STASH */

/* ---- home role: struct home_page per page (at its home), struct req_rec per (page, node), home store ---- */
byte hstable[P], hphase[P], hkind[P], gflags[P], hver[P];
bool hnw[P];            /* never_written */
byte howner[P], hserv[P], hsreq[P];
byte hsh[P], hpend[P];  /* sharer and pending bitmaps */
byte hrg[P];            /* unacknowledged read grants (rgrants bitmap) */
bool lease[P];          /* now < lease_until: the lease timer has not fired yet */
byte qlen[P];
byte q[P * N];          /* FIFO of queued requesters (qhead/qtail list in C) */
byte seen[P * N], rkind[P * N];
bool queued[P * N];
byte store[P];          /* the home store bytes */

/* ---- ghost and environment -------------------------------------------------------------------------------- */
byte last[P];           /* value of the last write performed on the page (sequential order) */
byte th_st[N], th_p[N], th_w[N], budget[N];
byte retries = RETRIES, losses = LOSS, reorders = REORDER;

chan link[N * N] = [CAP] of { mtype, byte, byte, byte, byte, byte, byte };  /* type flags page ver req rqstr data */
chan lq = [LQ] of { mtype, byte, byte, byte, byte, byte, byte };            /* localq: self-addressed messages */

/* Temporaries: live only inside one d_step, so hidden (not part of the state vector). */
hidden mtype m_t;
hidden byte m_f, m_pg, m_v, m_rq, m_rqr, m_d;   /* the message being handled */
hidden byte self, src;                          /* the engine running the input; sender of the message */
hidden byte have_msg;
hidden byte t_cp, t_ci, t_hp, t_qi, t_r, t_o, t_gf, t_others, t_kind, t_sfl, t_sd, t_dnext, t_ddata, t_i, t_j, t_k, t_x, t_nrw, t_nro;
hidden byte t_ok;
hidden mtype t_t1, t_t2;
hidden byte t_a1, t_a2, t_a3, t_a4, t_a5, t_a6, t_b1, t_b2, t_b3, t_b4, t_b5, t_b6;

/* ---- backend actions (executed at once: the engine's state never depends on the bytes) -------------------- */

inline wake(pg) {       /* MAP and WAKE wake every thread waiting on the page */
	if
	:: th_st[self] == T_WAIT && th_p[self] == pg -> th_st[self] = T_WANT
	:: else -> skip
	fi
}

inline act_map(pg, mode, dsrc) {
	t_ci = CI(self, pg);
	if
	:: dsrc == D_MSG -> mem[t_ci] = m_d
	:: dsrc == D_HOME -> mem[t_ci] = store[pg]
	:: dsrc == D_ZERO -> mem[t_ci] = 0
	:: dsrc == D_KEEP -> assert(map[t_ci] != MAP_NONE)       /* KEEP needs bytes present */
	:: else -> assert(false)
	fi;
	map[t_ci] = mode;
	printf("MSC: node %d MAP page %d mode %d data-src %d -> value %d\n", self, pg, mode, dsrc, mem[t_ci]);
	wake(pg)
}

inline act_write_protect(pg) {
	if
	:: map[CI(self, pg)] == MAP_RW -> map[CI(self, pg)] = MAP_RO
	:: else -> skip
	fi
}

inline act_unmap(pg) {
	printf("MSC: node %d UNMAP page %d\n", self, pg);
	map[CI(self, pg)] = MAP_NONE;
	mem[CI(self, pg)] = 0
}

inline act_stash(pg) {
	assert(map[CI(self, pg)] != MAP_NONE);
	stash_val[CI(self, pg)] = mem[CI(self, pg)]
}

inline act_drop_stash(pg) {
	stash_val[CI(self, pg)] = 0
}

/* eng_send(): SEND to a peer (bytes taken now, in action order), or self-delivery through localq, where a
 * LOCAL data source becomes STORE LOCAL at once and the message carries no bytes. */
inline eng_send(dst, t, fl, pg, v, rid, rq, dsrc) {
	t_sfl = fl;
	t_sd = 0;
	if
	:: dsrc != D_NONE -> t_sfl = t_sfl | F_DATA
	:: else -> skip
	fi;
	if
	:: dsrc == D_LOCAL -> assert(map[CI(self, pg)] != MAP_NONE); t_sd = mem[CI(self, pg)]
	:: dsrc == D_HOME -> assert(HOME(pg) == self); t_sd = store[pg]
	:: dsrc == D_STASH -> assert(has_stash[CI(self, pg)]); t_sd = stash_val[CI(self, pg)]
	:: else -> skip
	fi;
	if
	:: dst == self ->
		if
		:: dsrc == D_LOCAL -> store[pg] = t_sd; printf("MSC: node %d STORE LOCAL page %d value %d\n", self, pg, t_sd)
		:: else -> skip
		fi;
		assert(len(lq) < LQ);
		lq!t, t_sfl, pg, v, rid, rq, 0
	:: else ->
		assert(len(link[LI(self, dst)]) < CAP);         /* model bound, not a protocol property */
		link[LI(self, dst)]!t, t_sfl, pg, v, rid, rq, t_sd;
		printf("MSC: node %d -> %d: %e page %d ver %d req %d flags %d data %d\n", self, dst, t, pg, v, rid, t_sfl, t_sd)
	fi
}

/* A drop the engine counts as DSM_DROP_BAD_STATE ("impossible in this state: peer bug"). Between correct
 * engines it must never happen. */
#define BAD_STATE() assert(false)

/* ---- cache role (protocol_cache.c) ---------------------------------------------------------------------- */

inline send_request(pg) {
	eng_send(HOME(pg), (cst[CI(self, pg)] == C_IS -> READ_REQ : WRITE_REQ),
		 (cst[CI(self, pg)] == C_SM -> F_UPGRADE : 0), pg, 0, cur[CI(self, pg)], self, D_NONE)
}

inline start_request(pg, next) {
	cur[CI(self, pg)]++;
	if
	:: cur[CI(self, pg)] == 0 -> cur[CI(self, pg)] = 1      /* req_id 0 means "none" on the wire */
	:: else -> skip
	fi;
	cst[CI(self, pg)] = next;
	/* eng_ctimer_set() iff HOME(pg) != self: the timer is derived from the state (see armed below) */
	send_request(pg)
}

inline cache_fault(pg, w) {
	t_cp = pg;
	if
	:: cst[CI(self, t_cp)] == C_I -> start_request(t_cp, (w -> C_IM : C_IS))
	:: cst[CI(self, t_cp)] == C_S && w -> start_request(t_cp, C_SM)
	:: (cst[CI(self, t_cp)] == C_S && !w) || cst[CI(self, t_cp)] == C_M -> wake(t_cp)   /* spurious: WAKE */
	:: else -> skip                                                          /* coalesced */
	fi
}

inline cache_retransmit(pg) {
	t_cp = pg;
	if
	:: cst[CI(self, t_cp)] == C_IS || cst[CI(self, t_cp)] == C_IM || cst[CI(self, t_cp)] == C_SM -> send_request(t_cp)
	:: else -> skip
	fi
}

inline send_grant_ack() {
	eng_send(HOME(m_pg), GRANT_ACK, 0, m_pg, m_v, m_rq, self, D_NONE)
}

inline cache_grant() {
	t_cp = m_pg;
	t_ci = CI(self, t_cp);
	if
	:: m_rq != cur[t_ci] -> skip                              /* STALE / UNSOLICITED */
	:: else ->
		if
		:: m_f & F_ZERO -> t_ddata = D_ZERO
		:: !(m_f & F_ZERO) && (m_f & F_DATA) -> t_ddata = (src == self -> D_HOME : D_MSG)
		:: else -> t_ddata = D_KEEP
		fi;
		t_ok = 1;
		if
		:: cst[t_ci] == C_IS ->
			if
			:: (m_f & F_RW) || t_ddata == D_KEEP -> BAD_STATE(); t_ok = 0
			:: else -> t_dnext = C_S
			fi
		:: cst[t_ci] == C_IM ->
			if
			:: !(m_f & F_RW) || t_ddata == D_KEEP -> BAD_STATE(); t_ok = 0
			:: else -> t_dnext = C_M
			fi
		:: cst[t_ci] == C_SM ->
			if
			:: !(m_f & F_RW) -> BAD_STATE(); t_ok = 0
			:: else -> t_dnext = C_M
			fi
		:: cst[t_ci] == C_S || cst[t_ci] == C_M ->
			t_ok = 0;
			if
			:: cver[t_ci] != m_v -> skip                  /* STALE */
			:: else -> send_grant_ack()                 /* DUPLICATE: re-ack, no MAP */
			fi
		:: else -> t_ok = 0                               /* I: STALE */
		fi;
		if
		:: t_ok ->
			act_map(t_cp, ((m_f & F_RW) != 0 -> MAP_RW : MAP_RO), t_ddata);
			t_ci = CI(self, t_cp);
			cst[t_ci] = t_dnext;
			cver[t_ci] = m_v;
			if
			:: has_stash[t_ci] && stash_ver[t_ci] < cver[t_ci] ->
				act_drop_stash(t_cp);
				has_stash[t_ci] = 0;
				stash_ver[t_ci] = 0
			:: else -> skip
			fi;
			send_grant_ack()
		:: else -> skip
		fi
	fi
}

inline send_inv_ack(dsrc) {
	eng_send(HOME(m_pg), INV_ACK, 0, m_pg, m_v, m_rq, m_rqr, dsrc)
}

inline cache_inv() {
	t_cp = m_pg;
	t_ci = CI(self, t_cp);
	if
	:: (cst[t_ci] == C_S || cst[t_ci] == C_SM || cst[t_ci] == C_M) && m_v < cver[t_ci] -> skip   /* STALE */
	:: cst[t_ci] == C_I || cst[t_ci] == C_IS || cst[t_ci] == C_IM ->
		if
		:: has_stash[t_ci] && stash_ver[t_ci] == m_v -> send_inv_ack(D_STASH)    /* DUPLICATE, answered */
		:: else -> send_inv_ack(D_NONE)
		fi
	:: cst[t_ci] == C_M && m_v >= cver[t_ci] ->
		act_write_protect(t_cp);
		if
		:: src == self -> send_inv_ack(D_LOCAL)             /* becomes STORE LOCAL, in order */
		:: else ->
			if
			:: has_stash[t_ci] -> act_drop_stash(t_cp)
			:: else -> skip
			fi;
			act_stash(t_cp);
			has_stash[t_ci] = 1;
			stash_ver[t_ci] = m_v;
			send_inv_ack(D_STASH)
		fi;
		act_unmap(t_cp);
		cst[t_ci] = C_I;
		cver[t_ci] = 0            /* canonical: ver of I is never read */
	:: (cst[t_ci] == C_S || cst[t_ci] == C_SM) && m_v >= cver[t_ci] ->
		act_unmap(t_cp);
		cst[t_ci] = (cst[t_ci] == C_SM -> C_IM : C_I);
		cver[t_ci] = 0;
		send_inv_ack(D_NONE)
	fi
}

inline cache_fetch() {
	t_cp = m_pg;
	t_ci = CI(self, t_cp);
	if
	:: (cst[t_ci] == C_M || cst[t_ci] == C_S || cst[t_ci] == C_SM) && m_v == cver[t_ci] ->
		if
		:: cst[t_ci] == C_M ->
			act_write_protect(t_cp);
			cst[t_ci] = C_S
		:: else -> skip                                     /* DUPLICATE: copy still current */
		fi;
		eng_send(HOME(t_cp), FETCH_ACK, 0, t_cp, m_v, m_rq, m_rqr, D_LOCAL)
	:: else -> skip                                             /* STALE */
	fi
}

inline cache_data_ack() {
	t_cp = m_pg;
	t_ci = CI(self, t_cp);
	assert(src != self);    /* "DATA_ACK is never self-addressed" (dispatch_local) */
	if
	:: has_stash[t_ci] && stash_ver[t_ci] == m_v ->
		act_drop_stash(t_cp);
		has_stash[t_ci] = 0;
		stash_ver[t_ci] = 0
	:: else -> skip                                             /* DUPLICATE */
	fi
}

/* ---- home role (protocol_home.c); hp = the page ----------------------------------------------------------- */

inline finish() {
	hserv[t_hp] = NONE;
	hphase[t_hp] = P_IDLE;
	hpend[t_hp] = 0;
	hsreq[t_hp] = 0;          /* canonical: serving_req, kind and grant_flags are read only while busy */
	hkind[t_hp] = 0;
	gflags[t_hp] = 0
}

inline send_grant() {
	eng_send(hserv[t_hp], GRANT, gflags[t_hp] & ~F_DATA, t_hp, hver[t_hp], hsreq[t_hp], hserv[t_hp],
		 ((gflags[t_hp] & F_DATA) != 0 -> D_HOME : D_NONE))
}

/* never_written, version and the home store cannot change while a read grant is out (no write starts) */
inline send_rgrant(node) {
	eng_send(node, GRANT, (hnw[t_hp] -> F_ZERO : 0), t_hp, hver[t_hp], seen[QI(t_hp, node)], node,
		 (hnw[t_hp] -> D_NONE : D_HOME))
}

inline grant(rw) {
	t_r = hserv[t_hp];
	if
	:: rw ->
		if
		:: hstable[t_hp] == H_SHARED && (hsh[t_hp] & BIT(t_r)) -> t_gf = F_RW                       /* KEEP */
		:: else -> t_gf = F_RW | (hnw[t_hp] -> F_ZERO : F_DATA)
		fi;
		hver[t_hp]++;
		hsh[t_hp] = 0;
		hstable[t_hp] = H_MODIFIED;
		howner[t_hp] = t_r;
		hnw[t_hp] = 0;
#ifndef NOLEASE
		lease[t_hp] = 1;
#endif
		gflags[t_hp] = t_gf;
		hphase[t_hp] = P_GRANT;
		send_grant()
	:: else ->
		/* read-only: the entry stays idle so the next queued reads are granted at once */
		hsh[t_hp] = hsh[t_hp] | BIT(t_r);
		hstable[t_hp] = H_SHARED;
		finish();               /* serving = NONE, phase = IDLE, pending cleared (timer kept: rgrants) */
		hrg[t_hp] = hrg[t_hp] | BIT(t_r);                 /* rgrant_add() */
		send_rgrant(t_r)
	fi
}

inline send_take(node) {
	eng_send(node, (hphase[t_hp] == P_FETCH -> FETCH : INV), 0, t_hp, hver[t_hp], hsreq[t_hp], hserv[t_hp], D_NONE)
}

inline proceed() {
	t_r = hserv[t_hp];
	if
	:: hstable[t_hp] == H_MODIFIED ->
		t_o = howner[t_hp];
		if
		:: t_o == t_r -> BAD_STATE(); finish()
		:: t_o != t_r && lease[t_hp] -> hphase[t_hp] = P_LEASE
		:: t_o != t_r && !lease[t_hp] ->
			hpend[t_hp] = BIT(t_o);
			hphase[t_hp] = (hkind[t_hp] == K_READ -> P_FETCH : P_INV);
			send_take(t_o)
		fi
	:: hstable[t_hp] != H_MODIFIED && hkind[t_hp] == K_READ -> grant(0)
	:: hstable[t_hp] != H_MODIFIED && hkind[t_hp] != K_READ ->
		t_others = hsh[t_hp] & ~BIT(t_r);
#ifdef BUG_SKIP_INV
		t_others = t_others & (t_others - 1);         /* BROKEN: forget one sharer (the lowest) */
#endif
		if
		:: t_others == 0 -> grant(1)
		:: else ->
			hpend[t_hp] = t_others;
			hphase[t_hp] = P_INV;
			t_j = 0;
			do
			:: t_j < N ->
				if
				:: t_others & BIT(t_j) -> send_take(t_j)
				:: else -> skip
				fi;
				t_j++
			:: else -> break
			od
		fi
	fi
}

inline home_kick() {
	do
	:: hphase[t_hp] == P_IDLE && qlen[t_hp] > 0 &&
	   /* a write takes copies away: not before every read grant is known installed */
	   !(rkind[QI(t_hp, q[QI(t_hp, 0)])] == K_WRITE && hrg[t_hp] != 0) ->
		/* queue_pop() */
		t_r = q[QI(t_hp, 0)];
		t_k = 0;
		do
		:: t_k + 1 < qlen[t_hp] -> q[QI(t_hp, t_k)] = q[QI(t_hp, t_k + 1)]; t_k++
		:: else -> break
		od;
		q[QI(t_hp, qlen[t_hp] - 1)] = 0;
		qlen[t_hp]--;
		queued[QI(t_hp, t_r)] = 0;
		hserv[t_hp] = t_r;
		hsreq[t_hp] = seen[QI(t_hp, t_r)];
		hkind[t_hp] = rkind[QI(t_hp, t_r)];
		rkind[QI(t_hp, t_r)] = 0;           /* canonical: read only while queued */
		proceed()
	:: else -> break
	od
}

inline home_request() {
	t_hp = m_pg;
	t_qi = QI(t_hp, src);
	t_kind = (m_t == READ_REQ -> K_READ : K_WRITE);
	if
	:: m_rq < seen[t_qi] -> skip                                  /* STALE */
	:: m_rq == seen[t_qi] ->                                      /* DUPLICATE: resend a lost GRANT */
		if
		:: hserv[t_hp] == src && hsreq[t_hp] == m_rq && hphase[t_hp] == P_GRANT -> send_grant()
		:: !(hserv[t_hp] == src && hsreq[t_hp] == m_rq && hphase[t_hp] == P_GRANT) && (hrg[t_hp] & BIT(src)) ->
			send_rgrant(src)
		:: else -> skip
		fi
	:: m_rq > seen[t_qi] && queued[t_qi] -> BAD_STATE()
	:: m_rq > seen[t_qi] && !queued[t_qi] && hserv[t_hp] == src && hphase[t_hp] != P_GRANT -> BAD_STATE()
	:: m_rq > seen[t_qi] && !queued[t_qi] && !(hserv[t_hp] == src && hphase[t_hp] != P_GRANT) ->
		if
		:: hrg[t_hp] & BIT(src) -> hrg[t_hp] = hrg[t_hp] & ~BIT(src)     /* proves the read grant arrived */
		:: else -> skip
		fi;
		if
		:: hserv[t_hp] == src -> finish()     /* a newer request proves the grant arrived */
		:: else -> skip
		fi;
		seen[t_qi] = m_rq;
		/* queue_push() */
		q[QI(t_hp, qlen[t_hp])] = src;
		qlen[t_hp]++;
		queued[t_qi] = 1;
		rkind[t_qi] = t_kind;
		home_kick()
	fi
}

inline home_grant_ack() {
	t_hp = m_pg;
	if
	:: (hrg[t_hp] & BIT(src)) && m_rq == seen[QI(t_hp, src)] ->
		hrg[t_hp] = hrg[t_hp] & ~BIT(src);                 /* rgrant_clear() */
#ifndef BUG_NO_KICK
		home_kick()
#else
		skip
#endif
	:: !((hrg[t_hp] & BIT(src)) && m_rq == seen[QI(t_hp, src)]) &&
	   hphase[t_hp] == P_GRANT && hserv[t_hp] == src && hsreq[t_hp] == m_rq ->
		finish();
#ifndef BUG_NO_KICK
		home_kick()
#else
		skip
#endif
	:: else -> skip                                             /* DUPLICATE / STALE */
	fi
}

#define AWAITED(ph) (hphase[t_hp] == (ph) && m_v == hver[t_hp] && m_rq == hsreq[t_hp] && (hpend[t_hp] & BIT(src)))

inline home_inv_ack() {
	t_hp = m_pg;
	if
	:: !AWAITED(P_INV) ->
		if
		:: m_f & F_DATA ->      /* resent from a stash after we stored the first copy */
			eng_send(src, DATA_ACK, 0, t_hp, m_v, m_rq, m_rqr, D_NONE)
		:: else -> skip
		fi
	:: else ->
		t_ok = 1;
		if
		:: hstable[t_hp] == H_MODIFIED ->
			if
			:: !(m_f & F_DATA) -> BAD_STATE(); t_ok = 0
			:: else ->
				if
				:: src != self ->
					store[t_hp] = m_d;                /* STORE MSG */
					printf("MSC: node %d STORE MSG page %d value %d\n", self, t_hp, m_d);
					eng_send(src, DATA_ACK, 0, t_hp, m_v, m_rq, m_rqr, D_NONE)
				:: else -> skip
				fi;
				howner[t_hp] = NONE;
				hstable[t_hp] = H_UNCACHED
			fi
		:: else ->
			/* sharer_remove() */
			if
			:: hsh[t_hp] & BIT(src) ->
				hsh[t_hp] = hsh[t_hp] & ~BIT(src);
				if
				:: hsh[t_hp] == 0 && hstable[t_hp] == H_SHARED -> hstable[t_hp] = H_UNCACHED
				:: else -> skip
				fi
			:: else -> skip
			fi
		fi;
		if
		:: t_ok ->
			hpend[t_hp] = hpend[t_hp] & ~BIT(src);
			if
			:: hpend[t_hp] == 0 -> grant(1)
			:: else -> skip
			fi;
			home_kick()
		:: else -> skip
		fi
	fi
}

inline home_fetch_ack() {
	t_hp = m_pg;
	if
	:: AWAITED(P_FETCH) ->
#ifndef BUG_NO_STORE
		if
		:: src != self -> store[t_hp] = m_d; printf("MSC: node %d STORE MSG page %d value %d\n", self, t_hp, m_d)
		:: else -> skip
		fi;
#endif
		howner[t_hp] = NONE;
		hstable[t_hp] = H_SHARED;
		hsh[t_hp] = BIT(src);
		hpend[t_hp] = 0;
		grant(0);
		home_kick()
	:: else -> skip                                             /* STALE / DUPLICATE */
	fi
}

inline home_timeout(pg) {
	t_hp = pg;
	if
	:: hphase[t_hp] == P_LEASE -> proceed()
	:: hphase[t_hp] == P_INV || hphase[t_hp] == P_FETCH ->
		t_i = 0;
		do
		:: t_i < N ->
			if
			:: t_i != self && (hpend[t_hp] & BIT(t_i)) -> send_take(t_i)
			:: else -> skip
			fi;
			t_i++
		:: else -> break
		od
	:: hphase[t_hp] == P_GRANT ->
		if
		:: hserv[t_hp] != self -> send_grant()
		:: else -> skip
		fi
	:: hphase[t_hp] == P_IDLE ->            /* resend each unacknowledged read grant */
		t_i = 0;
		do
		:: t_i < N ->
			if
			:: t_i != self && (hrg[t_hp] & BIT(t_i)) -> send_rgrant(t_i)
			:: else -> skip
			fi;
			t_i++
		:: else -> break
		od
	fi;
	home_kick()
}

/* ---- input plumbing (protocol.c) ------------------------------------------------------------------------- */

inline dispatch() {
	printf("MSC: node %d <- %d: %e page %d ver %d req %d rq %d flags %d data %d\n", self, src, m_t, m_pg, m_v, m_rq,
	       m_rqr, m_f, m_d);
	if
	:: m_t == READ_REQ || m_t == WRITE_REQ -> home_request()
	:: m_t == GRANT_ACK -> home_grant_ack()
	:: m_t == INV_ACK -> home_inv_ack()
	:: m_t == FETCH_ACK -> home_fetch_ack()
	:: m_t == GRANT -> cache_grant()
	:: m_t == INV -> cache_inv()
	:: m_t == FETCH -> cache_fetch()
	:: m_t == DATA_ACK -> cache_data_ack()
	fi
}

/* The message in m_* (if have_msg), then every self-addressed message, in order: finish_input(). */
inline run_engine() {
	do
	:: have_msg -> dispatch(); have_msg = 0
	:: !have_msg && len(lq) > 0 -> lq?m_t, m_f, m_pg, m_v, m_rq, m_rqr, m_d; src = self; have_msg = 1
	:: !have_msg && len(lq) == 0 -> break
	od
}

/* Single writer / multiple readers on what guest threads can touch, and every copy holds the last write. */
inline check_invariant() {
	t_k = 0;
	do
	:: t_k < P ->
		t_nrw = 0;
		t_nro = 0;
		t_x = 0;
		do
		:: t_x < N ->
			if
			:: map[CI(t_x, t_k)] == MAP_RW -> t_nrw++
			:: map[CI(t_x, t_k)] == MAP_RO -> t_nro++
			:: else -> skip
			fi;
			if
			:: map[CI(t_x, t_k)] != MAP_NONE -> assert(mem[CI(t_x, t_k)] == last[t_k])     /* data value */
			:: else -> skip
			fi;
			t_x++
		:: else -> break
		od;
		assert(t_nrw <= 1 && (t_nrw == 0 || t_nro == 0));                           /* SWMR */
		/* docs/dsm.md: rgrants is non-empty only while the entry is idle and SHARED */
		assert(hrg[t_k] == 0 || (hphase[t_k] == P_IDLE && hstable[t_k] == H_SHARED));
		t_k++
	:: else -> break
	od
}

/* A guest thread of node n accesses (in_p, in_w): performs it if the mapping allows, else faults into the
 * engine (MISSING, or WP for a write on a read-only page) and blocks until MAP/WAKE of the page. */
inline thread_access(n, pg, w) {
	self = n;
	t_ci = CI(n, pg);
	if
	:: (w && map[t_ci] == MAP_RW) || (!w && map[t_ci] != MAP_NONE) ->
		printf("MSC: thread %d performs page %d write %d: value %d (last written %d)\n", n, pg, w, mem[t_ci],
		       last[pg]);
		assert(mem[t_ci] == last[pg]);                    /* a read returns the last value written */
		if
		:: w -> mem[t_ci] = last[pg] + 1; last[pg] = mem[t_ci]
		:: else -> skip
		fi;
		th_st[n] = T_IDLE;
		th_p[n] = 0;
		th_w[n] = 0;
		budget[n]--
	:: else ->
		th_st[n] = T_WAIT;
		th_p[n] = pg;
		th_w[n] = w;
		printf("MSC: thread %d faults page %d write %d (cache state %d)\n", n, pg, w, cst[t_ci]);
		cache_fault(pg, w)
	fi;
	have_msg = 0;
	run_engine();
	check_invariant()
}

/* ---- processes -------------------------------------------------------------------------------------------- */

/* Guest threads: one per node, ACC accesses each, to any page, read or write. */
proctype thread(byte n)
{
	byte pg, w;
end:
	do
	:: atomic { th_st[n] == T_IDLE && budget[n] > 0 -> select(pg : 0 .. P - 1); select(w : 0 .. 1);
		atomic { thread_access(n, pg, w); pg = 0; w = 0 } }
	:: atomic { th_st[n] == T_WANT -> thread_access(n, th_p[n], th_w[n]) }
	od
}

/* The transport: one receiver per (sender, receiver) link, FIFO (tcp, rdma). */
proctype receiver(byte s; byte d)
{
end:
	do
	:: atomic {
		link[LI(s, d)]?m_t, m_f, m_pg, m_v, m_rq, m_rqr, m_d;
		self = d;
		src = s;
		have_msg = 1;
		run_engine();
		check_invariant()
	}
	od
}

/* The owner's thread is waiting for (or woken with) the page it was just granted. */
#ifdef SHORT_LEASE
#define OWNER_WANTS(p) (howner[p] != NONE && th_st[howner[p]] == T_WANT && th_p[howner[p]] == (p))
#else
#define OWNER_WANTS(p) (howner[p] != NONE && th_st[howner[p]] != T_IDLE && th_p[howner[p]] == (p))
#endif

/* Time. The lease runs out (at any moment, but only after the new owner's woken thread has done its access:
 * lease_ns is long enough for that); then a deferred request is served by the timer. RETRIES early timer
 * firings (a slow peer: the answer is still coming) give duplicates without loss. */
#define CT(n, p) (HOME(p) != (n) && cst[CI(n, p)] >= C_IS)
#if N == 3
#define CTIMERS (CT(0, 0) || CT(0, 1) || CT(1, 0) || CT(1, 1) || CT(2, 0) || CT(2, 1))
#else
#define CTIMERS (CT(0, 0) || CT(0, 1) || CT(1, 0) || CT(1, 1) || CT(2, 0) || CT(2, 1) || CT(3, 0) || CT(3, 1))
#endif
/* a timer item is armed: eng_ctimer_set()/eng_htimer_set() without a matching _del() */
#define ARMED (CTIMERS || hphase[0] != P_IDLE || hphase[1] != P_IDLE || hrg[0] != 0 || hrg[1] != 0)

/* Early firing of one armed retransmission item: a slow peer, the answer is still coming (a cache request to a
 * remote home cannot cause a self-addressed message; the home's timeout runs the engine loop like any input). */
#define CRETRY(n, p) :: atomic { retries > 0 && CT(n, p) -> retries--; self = n; printf("MSC: node %d timer: retransmit request page %d\n", n, p); cache_retransmit(p); \
	assert(len(lq) == 0); check_invariant() }
#define HRETRY(p) :: atomic { retries > 0 && (hphase[p] >= P_INV || hrg[p] != 0) -> retries--; self = HOME(p); printf("MSC: node %d timer: home page %d\n", self, p); home_timeout(p); \
	have_msg = 0; run_engine(); check_invariant() }

proctype timers()
{
end:
	do
	:: atomic { lease[0] && !OWNER_WANTS(0) -> lease[0] = 0; self = HOME(0); printf("MSC: lease of page 0 over\n");
		if :: hphase[0] == P_LEASE -> home_timeout(0) :: else -> skip fi;
		have_msg = 0; run_engine(); check_invariant() }
	:: atomic { lease[1] && !OWNER_WANTS(1) -> lease[1] = 0; self = HOME(1); printf("MSC: lease of page 1 over\n");
		if :: hphase[1] == P_LEASE -> home_timeout(1) :: else -> skip fi;
		have_msg = 0; run_engine(); check_invariant() }
#if RETRIES > 0
	CRETRY(0, 1)
	CRETRY(1, 0)
	CRETRY(2, 0)
	CRETRY(2, 1)
#if N > 3
	CRETRY(1, 1)
	CRETRY(3, 0)
	CRETRY(3, 1)
#endif
	HRETRY(0)
	HRETRY(1)
#endif
	od
}


#if LOSS > 0 || REORDER > 0
/* The fabric: LOSS frames lost (the oldest frame of a link: losing a later one is the same as losing it when it
 * reaches the head), REORDER times a frame overtakes the one ahead of it in its link. */
#define LOSE(l) :: atomic { losses > 0 && len(link[l]) > 0 -> losses--; link[l]?t_t1, t_a1, t_a2, t_a3, t_a4, t_a5, t_a6 }
#define REORD(l) :: atomic { reorders > 0 && len(link[l]) > 1 -> reorders--; \
	link[l]?t_t1, t_a1, t_a2, t_a3, t_a4, t_a5, t_a6; link[l]?t_t2, t_b1, t_b2, t_b3, t_b4, t_b5, t_b6; t_k = len(link[l]); \
	link[l]!t_t2, t_b1, t_b2, t_b3, t_b4, t_b5, t_b6; link[l]!t_t1, t_a1, t_a2, t_a3, t_a4, t_a5, t_a6; \
	do :: t_k > 0 -> link[l]?t_t1, t_a1, t_a2, t_a3, t_a4, t_a5, t_a6; link[l]!t_t1, t_a1, t_a2, t_a3, t_a4, t_a5, t_a6; t_k-- :: else -> break od }
#if LOSS > 0
#define NET(l) LOSE(l) REORD(l)
#else
#define NET(l) REORD(l)
#endif

proctype fabric()
{
end:
	do
#if N == 3
	NET(1) NET(2) NET(3) NET(5) NET(6) NET(7)
#else
	NET(1) NET(2) NET(3) NET(4) NET(6) NET(7) NET(8) NET(9) NET(11) NET(12) NET(13) NET(14)
#endif
	od
}
#endif

#ifdef TICK
/* Retransmission timers: they fire when nothing else can happen (retry_ns is far longer than a message's
 * flight and a thread's reaction), every expired item of every engine, as dsm_engine_timer() does. */
proctype clock()
{
	byte n, pg;
end:
	do
	:: atomic { timeout && ARMED -> atomic {
		n = 0;
		do
		:: n < N ->
			self = n;
			pg = 0;
			do
			:: pg < P ->
				if
				:: CT(n, pg) -> cache_retransmit(pg)
				:: else -> skip
				fi;
				pg++
			:: else -> break
			od;
			pg = 0;
			do
			:: pg < P ->
				if
				:: HOME(pg) == n && (hphase[pg] != P_IDLE || hrg[pg] != 0) ->
					home_timeout(pg);
					have_msg = 0;
					run_engine()
				:: else -> skip
				fi;
				pg++
			:: else -> break
			od;
			n++
		:: else -> break
		od;
		n = 0;
		pg = 0;
		check_invariant() } }
	od
}
#endif

#define QUIET (th_st[0] == T_IDLE && th_st[1] == T_IDLE && th_st[2] == T_IDLE && (N < 4 || th_st[N - 1] == T_IDLE))

init
{
	byte a, b;

	atomic {
		a = 0;
		do
		:: a < P -> hnw[a] = 1; howner[a] = NONE; hserv[a] = NONE; a++
		:: else -> break
		od;
		a = 0;
		do
		:: a < N -> budget[a] = ACC; a++
		:: else -> break
		od;
		budget[0] = ACC0;
		budget[1] = ACC1;
		budget[2] = ACC2;
		a = 0;
		do
		:: a < N ->
			run thread(a);
			b = 0;
			do
			:: b < N ->
				if
				:: b != a -> run receiver(a, b)
				:: else -> skip
				fi;
				b++
			:: else -> break
			od;
			a++
		:: else -> break
		od;
		run timers();
#if LOSS > 0 || REORDER > 0
		run fabric();
#endif
#ifdef TICK
		run clock();
#endif
		a = 0;
		b = 0
	}
	/* Deadlock check: when nothing can move and no timer is armed, every access must be done and the
	 * directory idle. (Timeouts with armed timers are the clock's, under TICK.) */
	timeout && !ARMED;
	assert(QUIET && qlen[0] == 0 && qlen[1] == 0 && hphase[0] == P_IDLE && hphase[1] == P_IDLE &&
	       hrg[0] == 0 && hrg[1] == 0)
}

/* Liveness: every access a thread starts is eventually performed (hence every request is served). */
ltl live {
	[] ((th_st[0] != T_IDLE) -> <> (th_st[0] == T_IDLE)) &&
	[] ((th_st[1] != T_IDLE) -> <> (th_st[1] == T_IDLE)) &&
	[] ((th_st[2] != T_IDLE) -> <> (th_st[2] == T_IDLE))
#if N > 3
	&& [] ((th_st[3] != T_IDLE) -> <> (th_st[3] == T_IDLE))
#endif
}
