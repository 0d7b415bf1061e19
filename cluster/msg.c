/* SPDX-License-Identifier: MIT */
/*
 * Cluster message codec (format and rules: cluster/msg.h). Fields are written byte by byte in little-endian
 * order, so the wire layout does not depend on the compiler's struct layout; the body lengths below are the
 * layout's only description besides msg.h, and the unit test pins every one of them.
 */
#include "cluster/msg.h"

#include <errno.h>
#include <string.h>

/* Body lengths after the 16-byte header. EXIT is 8 bytes + why (0..CMSG_WHY_MAX). */
#define BODY_IRQ 16u
#define BODY_LOGICAL 12u
#define BODY_IO_REQ 32u
#define BODY_IO_RESP 24u
#define BODY_EXIT_MIN 8u
#define BODY_READY 0u
#define BODY_ACK 8u
#define BODY_PING 24u
#define BODY_EOI 8u

#define IRQF_LOGICAL 0x01u
#define IRQF_LEVEL 0x02u
#define IRQF_TRIGGER_LEVEL 0x04u
#define IRQF_X2APIC 0x08u
#define IRQF_ALL 0x0fu

static void put8(uint8_t **p, uint8_t v)
{
	*(*p)++ = v;
}

static void put32(uint8_t **p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		*(*p)++ = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t **p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		*(*p)++ = (uint8_t)(v >> (8 * i));
}

static uint8_t get8(const uint8_t **p)
{
	return *(*p)++;
}

static uint32_t get32(const uint8_t **p)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v |= (uint32_t)*(*p)++ << (8 * i);
	return v;
}

static uint64_t get64(const uint8_t **p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)*(*p)++ << (8 * i);
	return v;
}

bool cmsg_type_is_sequenced(uint8_t type)
{
	switch (type) {
	case CMSG_IRQ:
	case CMSG_LOGICAL:
	case CMSG_IO_REQ:
	case CMSG_IO_RESP:
	case CMSG_EXIT:
	case CMSG_READY:
	case CMSG_EOI:
		return true;
	default:
		return false;
	}
}

const char *cmsg_type_name(uint8_t type)
{
	static const char *const names[] = { "IRQ", "LOGICAL", "IO_REQ", "IO_RESP", "EXIT", "READY", "ACK", "PING",
					     "PONG", "EOI" };

	if (type < CMSG_TYPE_FIRST || type > CMSG_TYPE_LAST)
		return "?";
	return names[type - CMSG_TYPE_FIRST];
}

const char *cmsg_drop_name(enum cmsg_drop why)
{
	static const char *const names[] = { "bad length", "bad version", "unknown type", "field out of range",
					     "bad sequence number" };

	return (unsigned)why < CMSG_DROP_NREASONS ? names[why] : "?";
}

static bool delivery_valid(uint8_t d)
{
	return d == IRQ_FIXED || d == IRQ_LOWEST || d == IRQ_SMI || d == IRQ_NMI || d == IRQ_INIT ||
	       d == IRQ_SIPI || d == IRQ_EXTINT;
}

/* Shared by encoder and decoder: an access the receiver's bus can take. */
static bool io_valid(uint8_t space, uint8_t size, uint64_t addr, uint64_t data, bool write)
{
	if (space == BUS_PIO) {
		if (size != 1 && size != 2 && size != 4)
			return false;
		if (addr > 0xffff)
			return false;
	} else if (space == BUS_MMIO) {
		if (size != 1 && size != 2 && size != 4 && size != 8)
			return false;
	} else {
		return false;
	}
	/* a written value has no bits above its size */
	return !write || size == 8 || (data >> (8 * size)) == 0;
}

static bool msg_valid(const struct cmsg *m)
{
	switch (m->type) {
	case CMSG_IRQ:
		return delivery_valid(m->irq.delivery) && m->irq.shorthand <= IRQ_SH_OTHERS &&
		       (m->irq.x2apic || m->irq.dest <= 0xff);
	case CMSG_LOGICAL:
		return m->logical.apic_id != UINT32_MAX;
	case CMSG_IO_REQ:
		return io_valid(m->io_req.space, m->io_req.size, m->io_req.addr, m->io_req.data, m->io_req.write) &&
		       m->io_req.vcpu < 4096;
	case CMSG_IO_RESP:
		return m->io_resp.err <= 0 && m->io_resp.err > -4096;
	case CMSG_EXIT:
		return m->exit.code >= 0 && m->exit.code <= 255;
	case CMSG_READY:
	case CMSG_ACK:
	case CMSG_PING:
	case CMSG_PONG:
		return true;
	case CMSG_EOI:
		/* vectors 0-15 are reserved: no IOAPIC entry delivers them */
		return m->eoi.vector >= 16;
	default:
		return false;
	}
}

size_t cmsg_encode(const struct cmsg *m, void *buf, size_t cap)
{
	uint8_t *p = buf;
	size_t why_len = 0;

	if (cap < CMSG_MAX_LEN || !msg_valid(m))
		return 0;
	if (cmsg_type_is_sequenced(m->type) != (m->seq != 0))
		return 0;
	put8(&p, CMSG_VERSION);
	for (int i = 0; i < 7; i++)
		put8(&p, 0);
	put64(&p, m->seq);
	switch (m->type) {
	case CMSG_IRQ:
		put8(&p, m->irq.vector);
		put8(&p, m->irq.delivery);
		put8(&p, m->irq.shorthand);
		put8(&p, (m->irq.logical ? IRQF_LOGICAL : 0) | (m->irq.level ? IRQF_LEVEL : 0) |
			     (m->irq.trigger_level ? IRQF_TRIGGER_LEVEL : 0) | (m->irq.x2apic ? IRQF_X2APIC : 0));
		put32(&p, 0);
		put32(&p, m->irq.dest);
		put32(&p, m->irq.source);
		break;
	case CMSG_LOGICAL:
		put32(&p, m->logical.apic_id);
		put32(&p, m->logical.ldr);
		put32(&p, m->logical.dfr);
		break;
	case CMSG_IO_REQ:
		put64(&p, m->io_req.id);
		put8(&p, m->io_req.space);
		put8(&p, m->io_req.size);
		put8(&p, m->io_req.write);
		put8(&p, 0);
		put32(&p, m->io_req.vcpu);
		put64(&p, m->io_req.addr);
		put64(&p, m->io_req.data);
		break;
	case CMSG_IO_RESP:
		put64(&p, m->io_resp.id);
		put32(&p, (uint32_t)m->io_resp.err);
		put32(&p, 0);
		put64(&p, m->io_resp.data);
		break;
	case CMSG_EXIT:
		why_len = strnlen(m->exit.why, CMSG_WHY_MAX);
		put32(&p, (uint32_t)m->exit.code);
		put8(&p, m->exit.fatal);
		put8(&p, 0);
		put8(&p, (uint8_t)why_len);
		put8(&p, 0);
		memcpy(p, m->exit.why, why_len);
		p += why_len;
		break;
	case CMSG_READY:
		break;
	case CMSG_ACK:
		put64(&p, m->ack.ack);
		break;
	case CMSG_PING:
	case CMSG_PONG:
		put64(&p, m->ping.id);
		put64(&p, m->ping.t0);
		put64(&p, m->ping.t1);
		break;
	case CMSG_EOI:
		put8(&p, m->eoi.vector);
		for (int i = 0; i < 7; i++)
			put8(&p, 0);
		break;
	}
	return (size_t)(p - (uint8_t *)buf);
}

static int drop(enum cmsg_drop why)
{
	return -(1 + (int)why);
}

int cmsg_decode(uint8_t type, const void *payload, size_t len, struct cmsg *out)
{
	const uint8_t *p = payload;
	size_t body, why_len = 0;
	uint8_t version, flags;

	if (type < CMSG_TYPE_FIRST || type > CMSG_TYPE_LAST)
		return drop(CMSG_DROP_TYPE);
	if (len < CMSG_HDR_LEN || !payload)
		return drop(CMSG_DROP_SHORT);
	memset(out, 0, sizeof(*out));
	out->type = type;
	version = get8(&p);
	if (version != CMSG_VERSION)
		return drop(CMSG_DROP_VERSION);
	for (int i = 0; i < 7; i++)
		if (get8(&p) != 0)
			return drop(CMSG_DROP_FIELD);
	out->seq = get64(&p);
	body = len - CMSG_HDR_LEN;
	switch (type) {
	case CMSG_IRQ:
		if (body != BODY_IRQ)
			return drop(CMSG_DROP_SHORT);
		out->irq.vector = get8(&p);
		out->irq.delivery = get8(&p);
		out->irq.shorthand = get8(&p);
		flags = get8(&p);
		if ((flags & ~IRQF_ALL) || get32(&p) != 0)
			return drop(CMSG_DROP_FIELD);
		out->irq.logical = flags & IRQF_LOGICAL;
		out->irq.level = flags & IRQF_LEVEL;
		out->irq.trigger_level = flags & IRQF_TRIGGER_LEVEL;
		out->irq.x2apic = flags & IRQF_X2APIC;
		out->irq.dest = get32(&p);
		out->irq.source = get32(&p);
		break;
	case CMSG_LOGICAL:
		if (body != BODY_LOGICAL)
			return drop(CMSG_DROP_SHORT);
		out->logical.apic_id = get32(&p);
		out->logical.ldr = get32(&p);
		out->logical.dfr = get32(&p);
		break;
	case CMSG_IO_REQ:
		if (body != BODY_IO_REQ)
			return drop(CMSG_DROP_SHORT);
		out->io_req.id = get64(&p);
		out->io_req.space = get8(&p);
		out->io_req.size = get8(&p);
		flags = get8(&p);
		if (flags > 1 || get8(&p) != 0)
			return drop(CMSG_DROP_FIELD);
		out->io_req.write = flags;
		out->io_req.vcpu = get32(&p);
		out->io_req.addr = get64(&p);
		out->io_req.data = get64(&p);
		break;
	case CMSG_IO_RESP:
		if (body != BODY_IO_RESP)
			return drop(CMSG_DROP_SHORT);
		out->io_resp.id = get64(&p);
		out->io_resp.err = (int32_t)get32(&p);
		if (get32(&p) != 0)
			return drop(CMSG_DROP_FIELD);
		out->io_resp.data = get64(&p);
		break;
	case CMSG_EXIT:
		if (body < BODY_EXIT_MIN)
			return drop(CMSG_DROP_SHORT);
		out->exit.code = (int32_t)get32(&p);
		flags = get8(&p);
		if (flags > 1 || get8(&p) != 0)
			return drop(CMSG_DROP_FIELD);
		out->exit.fatal = flags;
		why_len = get8(&p);
		if (get8(&p) != 0 || why_len > CMSG_WHY_MAX)
			return drop(CMSG_DROP_FIELD);
		if (body != BODY_EXIT_MIN + why_len)
			return drop(CMSG_DROP_SHORT);
		memcpy(out->exit.why, p, why_len);
		out->exit.why[why_len] = 0;
		/* the reason is printed: only printable ASCII */
		for (size_t i = 0; i < why_len; i++)
			if (out->exit.why[i] < 0x20 || out->exit.why[i] > 0x7e)
				return drop(CMSG_DROP_FIELD);
		break;
	case CMSG_READY:
		if (body != BODY_READY)
			return drop(CMSG_DROP_SHORT);
		break;
	case CMSG_ACK:
		if (body != BODY_ACK)
			return drop(CMSG_DROP_SHORT);
		out->ack.ack = get64(&p);
		break;
	case CMSG_PING:
	case CMSG_PONG:
		if (body != BODY_PING)
			return drop(CMSG_DROP_SHORT);
		out->ping.id = get64(&p);
		out->ping.t0 = get64(&p);
		out->ping.t1 = get64(&p);
		break;
	case CMSG_EOI:
		if (body != BODY_EOI)
			return drop(CMSG_DROP_SHORT);
		out->eoi.vector = get8(&p);
		for (int i = 0; i < 7; i++)
			if (get8(&p) != 0)
				return drop(CMSG_DROP_FIELD);
		break;
	}
	if (cmsg_type_is_sequenced(type) != (out->seq != 0))
		return drop(CMSG_DROP_SEQ);
	if (!msg_valid(out))
		return drop(CMSG_DROP_FIELD);
	return 0;
}
