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
 * guest). Register A: divider/rate bits stored; UIP (bit 7) reads 1 during the last 244 us of each second, the
 * window in which hardware forbids reading the time. Register C reads (and clears) UF when a second boundary
 * passed since the previous read; register D reads 0x80 (valid RAM and time).
 *
 * CMOS memory as QEMU's pc_cmos_init and SeaBIOS define it: 0x15/0x16 base memory 640 KiB; 0x17/0x18 and
 * 0x30/0x31 KiB of memory above 1 MiB (capped at 0xffff); 0x34/0x35 64 KiB units between 16 MiB and the
 * below-4G limit; 0x5b-0x5d 64 KiB units above 4 GiB; 0x5f vCPU count - 1; 0x14 equipment (FPU, PS/2 mouse).
 *
 * Not implemented: interrupts (periodic, alarm, update-ended: IRQ 8 is never raised, flags other than UF stay
 * 0), divider control stopping the clock, daylight saving.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hypervisor/bus.h"

#define RTC_REG_A 0x0a
#define RTC_REG_B 0x0b
#define RTC_REG_C 0x0c
#define RTC_REG_D 0x0d
#define RTC_CENTURY 0x32
#define REG_B_SET 0x80
#define REG_B_UIE 0x10
#define REG_B_DM 0x04
#define REG_B_24H 0x02
#define REG_A_UIP 0x80
#define REG_C_UF 0x10
#define UIP_NS 244000ull
#define NS_PER_S 1000000000ull

struct rtc {
	pthread_mutex_t lock;
	const struct vm_services *svc;
	uint8_t cmos[128];
	uint8_t index;
	bool nmi_disabled;
	int64_t base_sec;           /* UTC seconds at base_ns ... */
	uint64_t base_ns;           /* ... on the device clock */
	int64_t last_c_sec;         /* second at the previous register C read */
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

/* Write the time registers of `sec` (UTC) into cmos[] in the current format. */
static void rtc_fill_time(struct rtc *r, int64_t sec)
{
	time_t t = (time_t)sec;
	struct tm tm;
	unsigned hour;

	gmtime_r(&t, &tm);
	r->cmos[0] = to_reg(r, (unsigned)tm.tm_sec);
	r->cmos[2] = to_reg(r, (unsigned)tm.tm_min);
	hour = (unsigned)tm.tm_hour;
	if (r->cmos[RTC_REG_B] & REG_B_24H) {
		r->cmos[4] = to_reg(r, hour);
	} else {
		unsigned h12 = hour % 12 ? hour % 12 : 12;

		r->cmos[4] = (uint8_t)(to_reg(r, h12) | (hour >= 12 ? 0x80 : 0));
	}
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
		v = 0;
		if (sec != r->last_c_sec && !(r->cmos[RTC_REG_B] & REG_B_SET))
			v |= REG_C_UF;
		r->last_c_sec = sec;
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
	} else if (a->write) {
		rtc_write_reg(r, r->index, (uint8_t)a->data);
	} else {
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
	r->svc = svc;
	rtc_init_cmos(r, m);
	clock_gettime(CLOCK_REALTIME, &ts);
	r->base_sec = (int64_t)ts.tv_sec;
	r->base_ns = svc->now_ns(svc->opaque) - (uint64_t)ts.tv_nsec;
	r->last_c_sec = r->base_sec;
	err = bus_claim(b, BUS_PIO, 0x70, 2, "rtc", rtc_io, r);
	if (err) {
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
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static const struct device_type rtc_type = {
	.name = "rtc",
	.create = rtc_create,
	.destroy = rtc_destroy,
};
DEVICE_REGISTER(rtc_type)
