/* SPDX-License-Identifier: MIT */
/*
 * MC146818 RTC and CMOS memory (ports 0x70 index, 0x71 data; 128 bytes).
 *
 * Port 0x70: bits 6:0 select the register, bit 7 is the NMI disable gate (stored, without effect: we have no
 * NMI sources); reading 0x70 returns 0xff as on QEMU. The clock is UTC, anchored at creation to the host's wall
 * clock and advanced by svc->now_ns (so a test's fake clock drives it). Time registers (0,2,4,6,7,8,9 and the
 * century at 0x32) are computed at each read in BCD or binary (register B bit 2) and 12/24-hour (bit 1, PM =
 * bit 7 of the hour) format. Writing a time register, or clearing B.SET after writing them, moves the clock to
 * the written time; while B.SET is set the registers read back what was written (the clock is frozen for the
 * guest). Register A: divider bits stored (the clock always runs), rate bits select the periodic flag's period;
 * UIP (bit 7) reads 1 during the last 244 us of each second, the window in which hardware forbids reading the
 * time. Register D reads 0x80 (valid RAM and time).
 *
 * Flags and interrupts (ISA IRQ 8 = GSI 8): register C's UF (a second boundary passed, not while SET), AF (the
 * time matched the alarm registers 1/3/5, 0xc0-0xff = don't care) and PF (a period of register A's rate passed;
 * set whatever PIE says, as the datasheet has it) accumulate until C is read, which returns and clears them;
 * IRQF = a flag whose enable (B bits 6:4) is set, and the IRQ 8 line follows IRQF (set when it rises, cleared by
 * the C read: a new edge for each interrupt). Flags are brought up to date at every access; while an enable bit
 * is set a timer thread (started the first time, parked otherwise) does it at each second/period boundary, at
 * most every 200 us (faster periodic rates coalesce).
 *
 * CMOS memory as QEMU's pc_cmos_init and SeaBIOS define it: 0x15/0x16 base memory 640 KiB; 0x17/0x18 and
 * 0x30/0x31 KiB of memory above 1 MiB (capped at 0xffff); 0x34/0x35 64 KiB units between 16 MiB and the
 * below-4G limit; 0x5b-0x5d 64 KiB units above 4 GiB; 0x5f vCPU count - 1; 0x14 equipment (FPU, PS/2 mouse).
 *
 * Not implemented: divider control stopping or resetting the clock, daylight saving, square-wave output.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hypervisor/bus.h"
#include "util/clock.h"
#include "util/log.h"

#define RTC_REG_A 0x0a
#define RTC_REG_B 0x0b
#define RTC_REG_C 0x0c
#define RTC_REG_D 0x0d
#define RTC_CENTURY 0x32
#define REG_B_SET 0x80
#define REG_B_PIE 0x40
#define REG_B_AIE 0x20
#define REG_B_UIE 0x10
#define REG_B_IRQ_EN (REG_B_PIE | REG_B_AIE | REG_B_UIE)
#define REG_C_IRQF 0x80
#define REG_C_PF 0x40
#define REG_C_AF 0x20
#define REG_B_DM 0x04
#define REG_B_24H 0x02
#define REG_A_UIP 0x80
#define REG_C_UF 0x10
#define UIP_NS 244000ull
#define NS_PER_S 1000000000ull
#define RTC_GSI 8
#define RTC_MIN_WAIT_NS 200000ull
#define RTC_MAX_WAIT_NS 100000000ull

struct rtc {
	pthread_mutex_t lock;
	const struct vm_services *svc;
	uint8_t cmos[128];
	uint8_t index;
	bool nmi_disabled;
	int64_t base_sec;           /* UTC seconds at base_ns ... */
	uint64_t base_ns;           /* ... on the device clock */
	uint8_t flags;              /* PF, AF, UF not yet read from register C */
	int64_t flags_upto;         /* RTC time (ns) up to which flags are accounted */
	int irq_level;
	pthread_cond_t cond;
	pthread_t thread;
	bool thread_started, stopping;
};

static bool is_time_reg(unsigned r)
{
	return r <= 9 || r == RTC_CENTURY;
}

static uint64_t rtc_now(struct rtc *r)
{
	return r->svc->now_ns(r->svc->opaque);
}

/* Current UTC time in ns since the epoch (device view). */
static int64_t rtc_time_ns(struct rtc *r, uint64_t now)
{
	return r->base_sec * (int64_t)NS_PER_S + (int64_t)(now - r->base_ns);
}

static uint8_t to_reg(const struct rtc *r, unsigned v)
{
	return (r->cmos[RTC_REG_B] & REG_B_DM) ? (uint8_t)v : (uint8_t)(((v / 10) << 4) | (v % 10));
}

static unsigned from_reg(const struct rtc *r, uint8_t v)
{
	return (r->cmos[RTC_REG_B] & REG_B_DM) ? v : (unsigned)((v >> 4) * 10 + (v & 0x0f));
}

static uint8_t hour_reg(const struct rtc *r, unsigned hour)
{
	unsigned h12 = hour % 12 ? hour % 12 : 12;

	if (r->cmos[RTC_REG_B] & REG_B_24H)
		return to_reg(r, hour);
	return (uint8_t)(to_reg(r, h12) | (hour >= 12 ? 0x80 : 0));
}

/* Write the time registers of `sec` (UTC) into cmos[] in the current format. */
static void rtc_fill_time(struct rtc *r, int64_t sec)
{
	time_t t = (time_t)sec;
	struct tm tm;

	gmtime_r(&t, &tm);
	r->cmos[0] = to_reg(r, (unsigned)tm.tm_sec);
	r->cmos[2] = to_reg(r, (unsigned)tm.tm_min);
	r->cmos[4] = hour_reg(r, (unsigned)tm.tm_hour);
	r->cmos[6] = to_reg(r, (unsigned)tm.tm_wday + 1);
	r->cmos[7] = to_reg(r, (unsigned)tm.tm_mday);
	r->cmos[8] = to_reg(r, (unsigned)tm.tm_mon + 1);
	r->cmos[9] = to_reg(r, (unsigned)(tm.tm_year % 100));
	r->cmos[RTC_CENTURY] = to_reg(r, (unsigned)((tm.tm_year + 1900) / 100));
}

/* Move the clock to the time held in cmos[] (keeping the sub-second phase). */
static void rtc_set_from_regs(struct rtc *r, uint64_t now)
{
	struct tm tm = { 0 };
	unsigned hour;
	int64_t phase = rtc_time_ns(r, now) % (int64_t)NS_PER_S;
	time_t t;

	tm.tm_sec = (int)from_reg(r, r->cmos[0]);
	tm.tm_min = (int)from_reg(r, r->cmos[2]);
	if (r->cmos[RTC_REG_B] & REG_B_24H) {
		hour = from_reg(r, r->cmos[4]);
	} else {
		hour = from_reg(r, r->cmos[4] & 0x7f) % 12;
		if (r->cmos[4] & 0x80)
			hour += 12;
	}
	tm.tm_hour = (int)hour;
	tm.tm_mday = (int)from_reg(r, r->cmos[7]);
	tm.tm_mon = (int)from_reg(r, r->cmos[8]) - 1;
	tm.tm_year = (int)(from_reg(r, r->cmos[RTC_CENTURY]) * 100 + from_reg(r, r->cmos[9])) - 1900;
	/* A nonsense date keeps the old time: the fields must be in range (timegm would normalise month 99) and the
	 * year in what the ns arithmetic holds. */
	if (tm.tm_sec > 59 || tm.tm_min > 59 || hour > 23 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_mon < 0 ||
	    tm.tm_mon > 11 || tm.tm_year < 70 || tm.tm_year > 2199 - 1900)
		return;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return;
	r->base_sec = (int64_t)t;
	r->base_ns = now - (uint64_t)(phase < 0 ? 0 : phase);
	r->flags_upto = rtc_time_ns(r, now); /* a moved clock makes no flags by itself */
}

/* Period of the periodic flag selected by register A's rate, 0 if off (rates 1 and 2 alias 8 and 9). */
static uint64_t rtc_period_ns(const struct rtc *r)
{
	unsigned rate = r->cmos[RTC_REG_A] & 0x0f;

	if (!rate)
		return 0;
	if (rate < 3)
		rate += 7;
	return (NS_PER_S << (rate - 1)) / 32768;
}

static bool alarm_field(uint8_t alarm, uint8_t now)
{
	return (alarm & 0xc0) == 0xc0 || alarm == now;
}

static bool rtc_alarm_matches(const struct rtc *r, int64_t sec)
{
	time_t t = (time_t)sec;
	struct tm tm;

	gmtime_r(&t, &tm);
	return alarm_field(r->cmos[1], to_reg(r, (unsigned)tm.tm_sec)) &&
	       alarm_field(r->cmos[3], to_reg(r, (unsigned)tm.tm_min)) &&
	       alarm_field(r->cmos[5], hour_reg(r, (unsigned)tm.tm_hour));
}

/* IRQ 8 follows IRQF. Lock held. */
static void rtc_update_irq(struct rtc *r)
{
	int level = (r->flags & r->cmos[RTC_REG_B] & REG_B_IRQ_EN) != 0;

	if (level != r->irq_level) {
		r->irq_level = level;
		r->svc->irq_set(r->svc->opaque, RTC_GSI, level);
	}
}

/* Account the flags of the RTC time elapsed since the last call. Lock held. */
static void rtc_update_flags(struct rtc *r, uint64_t now)
{
	int64_t tns = rtc_time_ns(r, now), from = r->flags_upto;
	uint64_t period = rtc_period_ns(r);

	if (tns <= from)
		return;
	if (!(r->cmos[RTC_REG_B] & REG_B_SET)) {
		int64_t s0 = from / (int64_t)NS_PER_S, s1 = tns / (int64_t)NS_PER_S;

		if (s1 > s0) {
			r->flags |= REG_C_UF;
			/* a day holds every alarm time there is: look at most one day back */
			for (int64_t sec = s1 - s0 > 86400 ? s1 - 86400 : s0 + 1; sec <= s1; sec++) {
				if (rtc_alarm_matches(r, sec)) {
					r->flags |= REG_C_AF;
					break;
				}
			}
		}
	}
	if (period && (uint64_t)tns / period > (uint64_t)from / period)
		r->flags |= REG_C_PF;
	r->flags_upto = tns;
	rtc_update_irq(r);
}

static void *rtc_timer_main(void *arg)
{
	struct rtc *r = arg;

	pthread_mutex_lock(&r->lock);
	while (!r->stopping) {
		uint8_t en = r->cmos[RTC_REG_B] & REG_B_IRQ_EN;
		uint64_t period = rtc_period_ns(r), now, wait_ns;
		int64_t tns, next = INT64_MAX;
		struct timespec ts;

		now = rtc_now(r);
		rtc_update_flags(r, now);
		tns = rtc_time_ns(r, now);
		if (en & (REG_B_UIE | REG_B_AIE))
			next = (tns / (int64_t)NS_PER_S + 1) * (int64_t)NS_PER_S;
		if ((en & REG_B_PIE) && period) {
			int64_t p = (int64_t)(((uint64_t)tns / period + 1) * period);

			if (p < next)
				next = p;
		}
		if (next == INT64_MAX) {
			pthread_cond_wait(&r->cond, &r->lock);
			continue;
		}
		/* sleep on the host clock for the device-clock distance (same rate in the VMM; a test's fake clock is
		 * re-read at least every 100 ms) */
		wait_ns = (uint64_t)(next - tns);
		if (wait_ns < RTC_MIN_WAIT_NS)
			wait_ns = RTC_MIN_WAIT_NS;
		if (wait_ns > RTC_MAX_WAIT_NS)
			wait_ns = RTC_MAX_WAIT_NS;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		wait_ns += (uint64_t)ts.tv_nsec;
		ts.tv_sec += (time_t)(wait_ns / NS_PER_S);
		ts.tv_nsec = (long)(wait_ns % NS_PER_S);
		pthread_cond_timedwait(&r->cond, &r->lock, &ts);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* Register A or B changed: the timer thread recomputes its deadline (started the first time an enable is set). */
static void rtc_kick(struct rtc *r)
{
	int err;

	if ((r->cmos[RTC_REG_B] & REG_B_IRQ_EN) && !r->thread_started) {
		err = pthread_create(&r->thread, NULL, rtc_timer_main, r);
		if (err) {
			pr_err("rtc: timer thread: %s; interrupts come only with register accesses", strerror(err));
			return;
		}
		r->thread_started = true;
	}
	pthread_cond_signal(&r->cond);
}

static uint8_t rtc_read_reg(struct rtc *r, unsigned reg)
{
	uint64_t now = rtc_now(r);
	int64_t tns = rtc_time_ns(r, now);
	int64_t sec = tns / (int64_t)NS_PER_S;
	uint8_t v;

	if (is_time_reg(reg)) {
		if (!(r->cmos[RTC_REG_B] & REG_B_SET))
			rtc_fill_time(r, sec);
		return r->cmos[reg];
	}
	switch (reg) {
	case RTC_REG_A:
		v = r->cmos[RTC_REG_A] & 0x7f;
		if (!(r->cmos[RTC_REG_B] & REG_B_SET) && (uint64_t)(tns % (int64_t)NS_PER_S) >= NS_PER_S - UIP_NS)
			v |= REG_A_UIP;
		return v;
	case RTC_REG_C:
		v = r->flags;
		if (r->flags & r->cmos[RTC_REG_B] & REG_B_IRQ_EN)
			v |= REG_C_IRQF;
		r->flags = 0;
		rtc_update_irq(r);
		return v;
	case RTC_REG_D:
		return 0x80;
	default:
		return r->cmos[reg];
	}
}

static void rtc_write_reg(struct rtc *r, unsigned reg, uint8_t v)
{
	uint64_t now = rtc_now(r);
	bool set = r->cmos[RTC_REG_B] & REG_B_SET;

	if (is_time_reg(reg)) {
		if (!set)
			rtc_fill_time(r, rtc_time_ns(r, now) / (int64_t)NS_PER_S);
		r->cmos[reg] = v;
		if (!set && reg != 1 && reg != 3 && reg != 5)
			rtc_set_from_regs(r, now);
		return;
	}
	switch (reg) {
	case RTC_REG_A:
		r->cmos[RTC_REG_A] = v & 0x7f;
		rtc_kick(r);
		break;
	case RTC_REG_B:
		if ((v & REG_B_SET) && !set)
			rtc_fill_time(r, rtc_time_ns(r, now) / (int64_t)NS_PER_S); /* freeze what the guest sees */
		if (v & REG_B_SET)
			v &= (uint8_t)~REG_B_UIE; /* SET clears UIE (MC146818) */
		if (!(v & REG_B_SET) && set) {
			r->cmos[RTC_REG_B] = v;
			rtc_set_from_regs(r, now);
		}
		r->cmos[RTC_REG_B] = v;
		rtc_update_irq(r); /* enabling a flag that is already set interrupts at once */
		rtc_kick(r);
		break;
	case RTC_REG_C:
	case RTC_REG_D:
		break; /* read-only */
	default:
		r->cmos[reg] = v;
		break;
	}
}

static int rtc_io(void *opaque, struct io_access *a)
{
	struct rtc *r = opaque;

	pthread_mutex_lock(&r->lock);
	if (a->offset == 0) {
		if (a->write) {
			r->index = (uint8_t)a->data & 0x7f;
			r->nmi_disabled = a->data & 0x80;
		} else {
			a->data = 0xff;
		}
	} else {
		rtc_update_flags(r, rtc_now(r));
		if (a->write)
			rtc_write_reg(r, r->index, (uint8_t)a->data);
		else
			a->data = rtc_read_reg(r, r->index);
	}
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static void rtc_init_cmos(struct rtc *r, const struct machine_desc *m)
{
	uint64_t below = m->ram_size, above = 0, kib, v;

	if (m->hole_start && m->ram_size > m->hole_start) {
		below = m->hole_start;
		above = m->ram_size - m->hole_start;
	}
	r->cmos[RTC_REG_A] = 0x26;            /* 32.768 kHz time base, 1024 Hz rate */
	r->cmos[RTC_REG_B] = REG_B_24H;       /* BCD, 24-hour */
	r->cmos[0x14] = 0x06;                 /* equipment: FPU, PS/2 mouse; no floppy, EGA/VGA */
	kib = below / 1024;
	v = kib < 640 ? kib : 640;            /* base memory: 640 KiB */
	r->cmos[0x15] = (uint8_t)v;
	r->cmos[0x16] = (uint8_t)(v >> 8);
	v = kib > 1024 ? kib - 1024 : 0;
	if (v > 0xffff)
		v = 0xffff;
	r->cmos[0x17] = r->cmos[0x30] = (uint8_t)v;
	r->cmos[0x18] = r->cmos[0x31] = (uint8_t)(v >> 8);
	v = below > (16ull << 20) ? (below - (16ull << 20)) >> 16 : 0;
	if (v > 0xffff)
		v = 0xffff;
	r->cmos[0x34] = (uint8_t)v;
	r->cmos[0x35] = (uint8_t)(v >> 8);
	v = above >> 16;
	r->cmos[0x5b] = (uint8_t)v;
	r->cmos[0x5c] = (uint8_t)(v >> 8);
	r->cmos[0x5d] = (uint8_t)(v >> 16);
	r->cmos[0x5f] = (uint8_t)(m->n_vcpus ? m->n_vcpus - 1 : 0);
}

static int rtc_create(struct bus *b, const struct machine_desc *m, const struct vm_services *svc, void **state)
{
	struct rtc *r = calloc(1, sizeof(*r));
	struct timespec ts;
	int err;

	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->lock, NULL);
	clock_cond_init(&r->cond);
	r->svc = svc;
	rtc_init_cmos(r, m);
	clock_gettime(CLOCK_REALTIME, &ts);
	r->base_sec = (int64_t)ts.tv_sec;
	r->base_ns = svc->now_ns(svc->opaque) - (uint64_t)ts.tv_nsec;
	r->flags_upto = rtc_time_ns(r, r->svc->now_ns(svc->opaque));
	err = bus_claim(b, BUS_PIO, 0x70, 2, "rtc", rtc_io, r);
	if (err) {
		pthread_cond_destroy(&r->cond);
		pthread_mutex_destroy(&r->lock);
		free(r);
		return err;
	}
	*state = r;
	return 0;
}

static void rtc_destroy(void *state)
{
	struct rtc *r = state;

	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (r->thread_started)
		pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static const struct device_type rtc_type = {
	.name = "rtc",
	.create = rtc_create,
	.destroy = rtc_destroy,
};
DEVICE_REGISTER(rtc_type)
