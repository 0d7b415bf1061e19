/* SPDX-License-Identifier: MIT */
/*
 * Intel 8254 PIT (ports 0x40-0x43) and system control port B (0x61: channel 2 gate and speaker enable in, OUT2
 * and the refresh toggle out) — what Linux and firmware use to calibrate the TSC.
 *
 * Counters are not ticked: each channel remembers when counting started (svc->now_ns) and derives its value and
 * OUT at 1.193182 MHz on every access. Modes 0-5, latch command, read-back (count and status), LSB/MSB/word
 * access with separate read and write flip-flops. Gates: channels 0 and 1 are tied high; channel 2 follows 0x61
 * bit 0 (low pauses modes 0/4 and holds OUT high in modes 2/3; a rising edge (re)starts modes 1/2/3/5). Not
 * modelled: BCD counting (the bit is stored and reported in the status byte, counting stays binary); a new count
 * in modes 2/3 takes effect at once instead of at the end of the current period.
 *
 * Channel 0 interrupts: ISA IRQ 0, raised as GSI 2 (the MADT's interrupt source override IRQ0 -> GSI2, as QEMU
 * and real PCs have it) with an edge pulse irq_set(2, 1), irq_set(2, 0) at every rising edge of OUT0 (each period
 * in modes 2/3, once in modes 0/4). A timer thread delivers them: it is started the first time channel 0 is
 * armed and parks on a condition variable (no CPU, no timeout) whenever channel 0 has nothing to signal. Missed
 * periods (host stalls) are coalesced into one pulse, like a real interrupt line that is still pending, and pulses
 * are at least 200 us apart whatever the count (KVM's default min_timer_period_us).
 *
 * Locking: one mutex for all state; irq_set is called without it (the interrupt path takes other locks).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hypervisor/bus.h"
#include "util/clock.h"
#include "util/log.h"

#define PIT_HZ 1193182ull
#define PIT_GSI 2
#define NSEC_PER_SEC_ 1000000000ull
#define PIT_MIN_PERIOD_NS 200000ull
#define REFRESH_NS 15085ull     /* port 0x61 bit 4 toggles every DRAM refresh cycle (~15 us) */

enum { RW_LATCH = 0, RW_LSB = 1, RW_MSB = 2, RW_WORD = 3 };

struct pit_channel {
	uint32_t count;             /* reload value, 1..65536 */
	uint8_t mode, rw, bcd;
	bool armed;                 /* a count was written since the control word */
	bool gate;
	bool running;               /* counting (armed, and gate allows / was triggered) */
	bool null_count;
	uint64_t base_ticks;        /* ticks counted before load_ns (gate pauses) */
	uint64_t load_ns;
	bool write_hi;              /* word access: next write is the MSB */
	uint8_t write_lo;
	bool read_hi;               /* word access: next live read is the MSB */
	bool count_latched;
	uint16_t latch;
	bool latch_hi;
	bool status_latched;
	uint8_t status;
};

struct pit {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	const struct vm_services *svc;
	struct pit_channel ch[3];
	uint8_t port61;             /* bits 0-3 as written */
	/* channel 0 interrupt timer */
	bool thread_started, stopping;
	pthread_t thread;
	uint64_t irq_next_tick;     /* tick of channel 0's next rising edge; 0 = none pending */
	uint64_t irq_pulses;
};

static uint64_t pit_now(struct pit *p)
{
	return p->svc->now_ns(p->svc->opaque);
}

static uint64_t ns_to_ticks(uint64_t ns)
{
	return (uint64_t)((unsigned __int128)ns * PIT_HZ / NSEC_PER_SEC_);
}

/* First ns offset at which `ticks` ticks have elapsed. */
static uint64_t ticks_to_ns(uint64_t ticks)
{
	return (uint64_t)(((unsigned __int128)ticks * NSEC_PER_SEC_ + PIT_HZ - 1) / PIT_HZ);
}

static uint64_t chan_ticks(const struct pit_channel *c, uint64_t now)
{
	if (!c->running)
		return c->base_ticks;
	return c->base_ticks + (now > c->load_ns ? ns_to_ticks(now - c->load_ns) : 0);
}

static uint16_t chan_count(const struct pit_channel *c, uint64_t now)
{
	uint64_t d = chan_ticks(c, now), n = c->count;

	if (!c->armed)
		return (uint16_t)n;
	switch (c->mode) {
	case 2:
		return (uint16_t)(n - d % n);
	case 3:
		return (uint16_t)(n - (2 * d) % n);
	default:
		return (uint16_t)(n - d);
	}
}

static bool chan_out(const struct pit_channel *c, uint64_t now)
{
	uint64_t d = chan_ticks(c, now), n = c->count;

	if (!c->armed)
		return c->mode != 0;
	switch (c->mode) {
	case 0:
		return d >= n;
	case 1:
		return !c->running || d >= n;
	case 2:
		return !c->gate || n < 2 || d % n != n - 1;
	case 3:
		return !c->gate || d % n < (n + 1) / 2;
	case 4:
		return d != n;
	default: /* 5 */
		return !c->running || d != n;
	}
}

/* Start counting from zero now. */
static void chan_start(struct pit_channel *c, uint64_t now)
{
	c->base_ticks = 0;
	c->load_ns = now;
	c->running = true;
}

/* Channel 0's next interrupt edge after the current tick, or 0 if none will come. Lock held. */
static uint64_t pit_ch0_next_edge(struct pit *p, uint64_t now)
{
	struct pit_channel *c = &p->ch[0];
	uint64_t d = chan_ticks(c, now);

	if (!c->armed || !c->running)
		return 0;
	switch (c->mode) {
	case 0:
	case 4:
		return d < c->count ? c->count : 0;
	case 2:
	case 3:
		return (d / c->count + 1) * c->count;
	default:
		return 0;
	}
}

/* Channel 0 was (re)armed: recompute its next edge and wake the timer thread, starting it the first time. */
static void pit_ch0_rearm(struct pit *p, uint64_t now);

static void chan_load(struct pit *p, int i, uint32_t v, uint64_t now)
{
	struct pit_channel *c = &p->ch[i];

	c->count = v ? v : 0x10000;
	c->armed = true;
	c->null_count = false;
	c->running = false;
	c->base_ticks = 0;
	c->load_ns = now;
	/* modes 1/5 wait for a gate rising edge; the others count while the gate is high */
	if (c->mode != 1 && c->mode != 5 && c->gate)
		chan_start(c, now);
	if (i == 0)
		pit_ch0_rearm(p, now);
}

static void chan_set_gate(struct pit *p, int i, bool gate, uint64_t now)
{
	struct pit_channel *c = &p->ch[i];
	bool rising = gate && !c->gate;

	if (gate == c->gate)
		return;
	c->gate = gate;
	if (!c->armed)
		return;
	switch (c->mode) {
	case 0:
	case 4:
		if (gate) {
			c->load_ns = now;
			c->running = true;
		} else {
			c->base_ticks = chan_ticks(c, now);
			c->running = false;
		}
		break;
	default: /* 1, 2, 3, 5: a rising edge (re)starts; low stops 2/3 */
		if (rising) {
			chan_start(c, now);
		} else if (c->mode == 2 || c->mode == 3) {
			c->base_ticks = 0;
			c->running = false;
		}
		break;
	}
}

static void chan_control(struct pit *p, int i, uint8_t v)
{
	struct pit_channel *c = &p->ch[i];
	uint8_t rw = (v >> 4) & 3, mode = (v >> 1) & 7;

	if (rw == RW_LATCH) {
		if (!c->count_latched) {
			c->latch = chan_count(c, pit_now(p));
			c->count_latched = true;
			c->latch_hi = false;
		}
		return;
	}
	c->rw = rw;
	c->mode = mode > 5 ? mode - 4 : mode;
	c->bcd = v & 1;
	c->armed = false;
	c->running = false;
	c->null_count = true;
	c->write_hi = false;
	c->read_hi = false;
	c->count_latched = false;
	c->status_latched = false;
	if (i == 0)
		pit_ch0_rearm(p, pit_now(p));
}

static void pit_readback(struct pit *p, uint8_t v)
{
	uint64_t now = pit_now(p);

	for (int i = 0; i < 3; i++) {
		struct pit_channel *c = &p->ch[i];

		if (!(v & (2 << i)))
			continue;
		if (!(v & 0x20) && !c->count_latched) {
			c->latch = chan_count(c, now);
			c->count_latched = true;
			c->latch_hi = false;
		}
		if (!(v & 0x10) && !c->status_latched) {
			c->status = (uint8_t)((chan_out(c, now) << 7) | (c->null_count << 6) | (c->rw << 4) |
					      (c->mode << 1) | c->bcd);
			c->status_latched = true;
		}
	}
}

static uint8_t chan_read(struct pit *p, int i)
{
	struct pit_channel *c = &p->ch[i];
	uint16_t v;

	if (c->status_latched) {
		c->status_latched = false;
		return c->status;
	}
	if (c->count_latched) {
		switch (c->rw) {
		case RW_MSB:
			c->count_latched = false;
			return (uint8_t)(c->latch >> 8);
		case RW_WORD:
			if (c->latch_hi) {
				c->count_latched = false;
				return (uint8_t)(c->latch >> 8);
			}
			c->latch_hi = true;
			return (uint8_t)c->latch;
		default:
			c->count_latched = false;
			return (uint8_t)c->latch;
		}
	}
	v = chan_count(c, pit_now(p));
	switch (c->rw) {
	case RW_MSB:
		return (uint8_t)(v >> 8);
	case RW_WORD:
		c->read_hi = !c->read_hi;
		return c->read_hi ? (uint8_t)v : (uint8_t)(v >> 8);
	default:
		return (uint8_t)v;
	}
}

static void chan_write(struct pit *p, int i, uint8_t v)
{
	struct pit_channel *c = &p->ch[i];
	uint64_t now = pit_now(p);

	switch (c->rw) {
	case RW_LSB:
		chan_load(p, i, v, now);
		break;
	case RW_MSB:
		chan_load(p, i, (uint32_t)v << 8, now);
		break;
	case RW_WORD:
		if (!c->write_hi) {
			c->write_lo = v;
			c->write_hi = true;
			if (c->mode == 0) {
				/* 8254: writing the first byte of a mode 0 count stops it and drops OUT */
				c->armed = false;
				c->running = false;
				if (i == 0)
					pit_ch0_rearm(p, now);
			}
		} else {
			c->write_hi = false;
			chan_load(p, i, c->write_lo | ((uint32_t)v << 8), now);
		}
		break;
	default:
		break; /* no control word yet: the counter ignores data */
	}
}

static int pit_io(void *opaque, struct io_access *a)
{
	struct pit *p = opaque;
	unsigned reg = (unsigned)a->offset;
	uint8_t v = (uint8_t)a->data;

	pthread_mutex_lock(&p->lock);
	if (reg == 3) {
		if (a->write) {
			if ((v >> 6) == 3)
				pit_readback(p, v);
			else
				chan_control(p, v >> 6, v);
		} else {
			a->data = 0xff; /* the control word register cannot be read (8254) */
		}
	} else if (a->write) {
		chan_write(p, (int)reg, v);
	} else {
		a->data = chan_read(p, (int)reg);
	}
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static int pit_port61_io(void *opaque, struct io_access *a)
{
	struct pit *p = opaque;
	uint64_t now;

	pthread_mutex_lock(&p->lock);
	now = pit_now(p);
	if (a->write) {
		p->port61 = (uint8_t)a->data & 0x0f;
		chan_set_gate(p, 2, p->port61 & 1, now);
	} else {
		a->data = p->port61 | (((now / REFRESH_NS) & 1) << 4) | ((uint64_t)chan_out(&p->ch[2], now) << 5);
	}
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static void *pit_timer_main(void *arg)
{
	struct pit *p = arg;

	pthread_mutex_lock(&p->lock);
	while (!p->stopping) {
		struct pit_channel *c = &p->ch[0];
		uint64_t now, d, wait_ns;
		struct timespec ts;

		if (!p->irq_next_tick) {
			if (p->svc->timer_parked)
				p->svc->timer_parked(p->svc->opaque, "pit", true);
			pthread_cond_wait(&p->cond, &p->lock);
			if (p->svc->timer_parked)
				p->svc->timer_parked(p->svc->opaque, "pit", false);
			continue;
		}
		now = pit_now(p);
		d = chan_ticks(c, now);
		if (d >= p->irq_next_tick) {
			/* at most one pulse per PIT_MIN_PERIOD_NS, like KVM's min_timer_period_us: a guest
			 * programming count 1 gets a 5 kHz interrupt, not a vCPU-starving storm */
			p->irq_next_tick = pit_ch0_next_edge(p, now + PIT_MIN_PERIOD_NS);
			p->irq_pulses++;
			pthread_mutex_unlock(&p->lock);
			p->svc->irq_set(p->svc->opaque, PIT_GSI, 1);
			p->svc->irq_set(p->svc->opaque, PIT_GSI, 0);
			pthread_mutex_lock(&p->lock);
			continue;
		}
		/* sleep on the host clock until the edge is due by the device clock (they run at the same rate in
		 * the VMM; a test's fake clock just gets re-read at least every 100 ms) */
		wait_ns = ticks_to_ns(p->irq_next_tick - c->base_ticks);
		wait_ns = wait_ns > now - c->load_ns ? wait_ns - (now - c->load_ns) : 0;
		if (wait_ns > 100000000ull)
			wait_ns = 100000000ull;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		wait_ns += (uint64_t)ts.tv_nsec;
		ts.tv_sec += (time_t)(wait_ns / NSEC_PER_SEC_);
		ts.tv_nsec = (long)(wait_ns % NSEC_PER_SEC_);
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void pit_ch0_rearm(struct pit *p, uint64_t now)
{
	int r;

	p->irq_next_tick = pit_ch0_next_edge(p, now);
	if (p->irq_next_tick && !p->thread_started) {
		r = pthread_create(&p->thread, NULL, pit_timer_main, p);
		if (r) {
			pr_err("pit: timer thread: %s; channel 0 will not interrupt", strerror(r));
			return;
		}
		p->thread_started = true;
	}
	pthread_cond_signal(&p->cond);
}

static int pit_create(struct bus *b, const struct machine_desc *m, const struct vm_services *svc, void **state)
{
	struct pit *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	clock_cond_init(&p->cond);
	p->svc = svc;
	for (int i = 0; i < 3; i++) {
		p->ch[i].count = 0x10000;
		p->ch[i].gate = i != 2;
	}
	r = bus_claim(b, BUS_PIO, 0x40, 4, "pit", pit_io, p);
	if (!r)
		r = bus_claim(b, BUS_PIO, 0x61, 1, "port61", pit_port61_io, p);
	if (r) {
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return r;
	}
	*state = p;
	return 0;
}

static void pit_destroy(void *state)
{
	struct pit *p = state;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (p->thread_started)
		pthread_join(p->thread, NULL);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static const struct device_type pit_type = {
	.name = "pit",
	.create = pit_create,
	.destroy = pit_destroy,
};
DEVICE_REGISTER(pit_type)
