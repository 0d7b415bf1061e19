/* SPDX-License-Identifier: MIT */
/*
 * cluster/: the message codec (every malformed payload is dropped with its reason), placement and home ranges,
 * and the link (IPIs, LDR replication, forwarded I/O, exit, READY barrier, clock offset) between in-process
 * nodes joined by a queue that can lose frames.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/link.h"
#include "cluster/msg.h"
#include "cluster/placement.h"
#include "hypervisor/vm.h"
#include "util/clock.h"
#include "util/log.h"

/* ---- codec ---- */

static size_t enc(const struct cmsg *m, uint8_t *buf)
{
	size_t n = cmsg_encode(m, buf, CMSG_MAX_LEN);

	assert_true(n >= CMSG_HDR_LEN);
	return n;
}

static void test_codec_round_trip_every_type(void **state)
{
	uint8_t buf[CMSG_MAX_LEN];
	struct cmsg m, d;
	size_t n;

	m = (struct cmsg){ .type = CMSG_IRQ, .seq = 7,
			   .irq = { .vector = 0x40, .delivery = IRQ_FIXED, .shorthand = IRQ_SH_NONE, .logical = true,
				    .level = true, .trigger_level = false, .x2apic = true, .dest = 0x10002,
				    .source = 3 } };
	n = enc(&m, buf);
	assert_int_equal(n, CMSG_HDR_LEN + 16);
	assert_int_equal(cmsg_decode(CMSG_IRQ, buf, n, &d), 0);
	assert_int_equal(d.seq, 7);
	assert_int_equal(d.irq.vector, 0x40);
	assert_true(d.irq.logical && d.irq.level && !d.irq.trigger_level && d.irq.x2apic);
	assert_int_equal(d.irq.dest, 0x10002);
	assert_int_equal(d.irq.source, 3);

	m = (struct cmsg){ .type = CMSG_LOGICAL, .seq = 1, .logical = { 5, 0x20000000, 0xffffffff } };
	n = enc(&m, buf);
	assert_int_equal(n, CMSG_HDR_LEN + 12);
	assert_int_equal(cmsg_decode(CMSG_LOGICAL, buf, n, &d), 0);
	assert_int_equal(d.logical.apic_id, 5);
	assert_int_equal(d.logical.ldr, 0x20000000);
	assert_int_equal(d.logical.dfr, 0xffffffff);

	m = (struct cmsg){ .type = CMSG_IO_REQ, .seq = 2,
			   .io_req = { .id = 99, .space = BUS_MMIO, .size = 8, .write = true, .vcpu = 3,
				       .addr = 0xfec00010, .data = 0x1122334455667788ull } };
	n = enc(&m, buf);
	assert_int_equal(n, CMSG_HDR_LEN + 32);
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, buf, n, &d), 0);
	assert_int_equal(d.io_req.id, 99);
	assert_int_equal(d.io_req.space, BUS_MMIO);
	assert_int_equal(d.io_req.size, 8);
	assert_true(d.io_req.write);
	assert_int_equal(d.io_req.vcpu, 3);
	assert_int_equal(d.io_req.addr, 0xfec00010);
	assert_int_equal(d.io_req.data, 0x1122334455667788ull);

	m = (struct cmsg){ .type = CMSG_IO_RESP, .seq = 3, .io_resp = { .id = 99, .err = -ENOENT, .data = 0 } };
	n = enc(&m, buf);
	assert_int_equal(n, CMSG_HDR_LEN + 24);
	assert_int_equal(cmsg_decode(CMSG_IO_RESP, buf, n, &d), 0);
	assert_int_equal(d.io_resp.err, -ENOENT);

	m = (struct cmsg){ .type = CMSG_EXIT, .seq = 4, .exit = { .code = 3, .fatal = true } };
	strcpy(m.exit.why, "guest wrote 3 to isa-debug-exit");
	n = enc(&m, buf);
	assert_int_equal(n, CMSG_HDR_LEN + 8 + strlen(m.exit.why));
	assert_int_equal(cmsg_decode(CMSG_EXIT, buf, n, &d), 0);
	assert_int_equal(d.exit.code, 3);
	assert_true(d.exit.fatal);
	assert_string_equal(d.exit.why, m.exit.why);

	m = (struct cmsg){ .type = CMSG_READY, .seq = 5 };
	n = enc(&m, buf);
	assert_int_equal(n, CMSG_HDR_LEN);
	assert_int_equal(cmsg_decode(CMSG_READY, buf, n, &d), 0);

	m = (struct cmsg){ .type = CMSG_ACK, .ack = { 12345 } };
	n = enc(&m, buf);
	assert_int_equal(cmsg_decode(CMSG_ACK, buf, n, &d), 0);
	assert_int_equal(d.ack.ack, 12345);

	m = (struct cmsg){ .type = CMSG_PONG, .ping = { 1, 2, 3 } };
	n = enc(&m, buf);
	assert_int_equal(n, CMSG_HDR_LEN + 24);
	assert_int_equal(cmsg_decode(CMSG_PONG, buf, n, &d), 0);
	assert_int_equal(d.ping.t1, 3);

	m = (struct cmsg){ .type = CMSG_EOI, .seq = 9, .eoi = { 0x31 } };
	n = enc(&m, buf);
	assert_int_equal(n, CMSG_HDR_LEN + 8);
	assert_int_equal(cmsg_decode(CMSG_EOI, buf, n, &d), 0);
	assert_int_equal(d.seq, 9);
	assert_int_equal(d.eoi.vector, 0x31);
	assert_true(cmsg_type_is_sequenced(CMSG_EOI));
	assert_string_equal(cmsg_type_name(CMSG_EOI), "EOI");
}

#define DROP(why) (-(1 + (int)(why)))

static void test_codec_drops_malformed(void **state)
{
	uint8_t buf[CMSG_MAX_LEN], bad[CMSG_MAX_LEN + 8];
	struct cmsg m, d;
	size_t n;

	m = (struct cmsg){ .type = CMSG_IO_REQ, .seq = 1,
			   .io_req = { .id = 1, .space = BUS_PIO, .size = 1, .write = true, .addr = 0x3f8, .data = 'x' } };
	n = enc(&m, buf);
	/* every truncation, and one byte too many */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(cmsg_decode(CMSG_IO_REQ, buf, k, &d), DROP(CMSG_DROP_SHORT));
	memcpy(bad, buf, n);
	bad[n] = 0;
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n + 1, &d), DROP(CMSG_DROP_SHORT));
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, NULL, 0, &d), DROP(CMSG_DROP_SHORT));
	/* wrong version */
	memcpy(bad, buf, n);
	bad[0] = 2;
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n, &d), DROP(CMSG_DROP_VERSION));
	/* nonzero reserved header byte */
	memcpy(bad, buf, n);
	bad[3] = 1;
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	/* unknown types, inside and outside the cluster range */
	assert_int_equal(cmsg_decode(0x4a, buf, n, &d), DROP(CMSG_DROP_TYPE));
	assert_int_equal(cmsg_decode(0x4f, buf, n, &d), DROP(CMSG_DROP_TYPE));
	assert_int_equal(cmsg_decode(0x20, buf, n, &d), DROP(CMSG_DROP_TYPE));
	/* bad space (offset 16+8), bad size (+9), write flag 2 (+10), PIO port above 0xffff, data above size */
	memcpy(bad, buf, n);
	bad[24] = 2;
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[25] = 3;
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[25] = 8;   /* 8-byte port I/O */
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[26] = 2;
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[16 + 16 + 2] = 1;   /* addr byte 2: port 0x103f8 */
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[16 + 24 + 1] = 1;   /* data 0x178 for a 1-byte write */
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	/* sequence number 0 on a sequenced type, nonzero on ACK */
	memcpy(bad, buf, n);
	memset(bad + 8, 0, 8);
	assert_int_equal(cmsg_decode(CMSG_IO_REQ, bad, n, &d), DROP(CMSG_DROP_SEQ));
	m = (struct cmsg){ .type = CMSG_ACK, .ack = { 1 } };
	n = enc(&m, buf);
	buf[8] = 1;
	assert_int_equal(cmsg_decode(CMSG_ACK, buf, n, &d), DROP(CMSG_DROP_SEQ));

	/* IRQ: bad delivery mode (3), shorthand 4, unknown flag bit, 8-bit dest above 0xff */
	m = (struct cmsg){ .type = CMSG_IRQ, .seq = 1, .irq = { .vector = 0x41, .dest = 1 } };
	n = enc(&m, buf);
	memcpy(bad, buf, n);
	bad[17] = 3;
	assert_int_equal(cmsg_decode(CMSG_IRQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[18] = 4;
	assert_int_equal(cmsg_decode(CMSG_IRQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[19] = 0x10;
	assert_int_equal(cmsg_decode(CMSG_IRQ, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[25] = 1;    /* dest 0x101 without x2apic */
	assert_int_equal(cmsg_decode(CMSG_IRQ, bad, n, &d), DROP(CMSG_DROP_FIELD));

	/* EXIT: why length disagreeing with the payload, a control character, code above 255 */
	m = (struct cmsg){ .type = CMSG_EXIT, .seq = 1, .exit = { .code = 0 } };
	strcpy(m.exit.why, "bye");
	n = enc(&m, buf);
	assert_int_equal(cmsg_decode(CMSG_EXIT, buf, n - 1, &d), DROP(CMSG_DROP_SHORT));
	memcpy(bad, buf, n);
	bad[n - 1] = '\n';
	assert_int_equal(cmsg_decode(CMSG_EXIT, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[17] = 1;    /* code 256 */
	assert_int_equal(cmsg_decode(CMSG_EXIT, bad, n, &d), DROP(CMSG_DROP_FIELD));
	memcpy(bad, buf, n);
	bad[22] = 255;  /* why_len above CMSG_WHY_MAX */
	assert_int_equal(cmsg_decode(CMSG_EXIT, bad, n, &d), DROP(CMSG_DROP_FIELD));

	/* EOI: a reserved vector (0-15), a nonzero padding byte, a wrong length, seq 0 */
	m = (struct cmsg){ .type = CMSG_EOI, .seq = 1, .eoi = { 0x31 } };
	n = enc(&m, buf);
	memcpy(bad, buf, n);
	bad[16] = 15;
	assert_int_equal(cmsg_decode(CMSG_EOI, bad, n, &d), DROP(CMSG_DROP_FIELD));
	for (size_t k = 17; k < n; k++) {
		memcpy(bad, buf, n);
		bad[k] = 1;
		assert_int_equal(cmsg_decode(CMSG_EOI, bad, n, &d), DROP(CMSG_DROP_FIELD));
	}
	assert_int_equal(cmsg_decode(CMSG_EOI, buf, n - 1, &d), DROP(CMSG_DROP_SHORT));
	memcpy(bad, buf, n);
	bad[n] = 0;
	assert_int_equal(cmsg_decode(CMSG_EOI, bad, n + 1, &d), DROP(CMSG_DROP_SHORT));
	memcpy(bad, buf, n);
	memset(bad + 8, 0, 8);
	assert_int_equal(cmsg_decode(CMSG_EOI, bad, n, &d), DROP(CMSG_DROP_SEQ));
	m = (struct cmsg){ .type = CMSG_EOI, .seq = 1, .eoi = { 2 } };
	assert_int_equal(cmsg_encode(&m, buf, sizeof(buf)), 0);

	/* IO_RESP with a positive error */
	m = (struct cmsg){ .type = CMSG_IO_RESP, .seq = 1, .io_resp = { .id = 1 } };
	n = enc(&m, buf);
	buf[24] = 5;
	assert_int_equal(cmsg_decode(CMSG_IO_RESP, buf, n, &d), DROP(CMSG_DROP_FIELD));

	/* the encoder refuses what the decoder would drop */
	m = (struct cmsg){ .type = CMSG_IO_REQ, .seq = 1, .io_req = { .space = BUS_PIO, .size = 8 } };
	assert_int_equal(cmsg_encode(&m, buf, sizeof(buf)), 0);
	m = (struct cmsg){ .type = CMSG_IRQ, .irq = { .vector = 1 } };   /* seq 0 */
	assert_int_equal(cmsg_encode(&m, buf, sizeof(buf)), 0);
}

/* random bytes never crash the decoder, and what it accepts re-encodes to the same bytes */
static void test_codec_random_payloads(void **state)
{
	uint8_t buf[CMSG_MAX_LEN + 16], re[CMSG_MAX_LEN];
	uint64_t x = 88172645463325252ull;
	unsigned accepted = 0;

	for (unsigned i = 0; i < 200000; i++) {
		static const size_t body[] = { 16, 12, 32, 24, 8, 0, 8, 24, 24, 8 };
		uint8_t type = (uint8_t)(0x3e + i % 14);
		size_t len = i % (CMSG_MAX_LEN + 16);
		struct cmsg d;

		/* half the time the exact length of the type */
		if ((i & 2) && type >= CMSG_TYPE_FIRST && type <= CMSG_TYPE_LAST)
			len = CMSG_HDR_LEN + body[type - CMSG_TYPE_FIRST];

		for (size_t k = 0; k < len; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[k] = (uint8_t)x;
		}
		/* bias toward valid headers so bodies get exercised */
		if (len >= CMSG_HDR_LEN && (i & 1)) {
			buf[0] = CMSG_VERSION;
			memset(buf + 1, 0, 7);
		}
		if (cmsg_decode(type, buf, len, &d) == 0) {
			accepted++;
			assert_int_equal(cmsg_encode(&d, re, sizeof(re)), len);
			assert_memory_equal(re, buf, len);
		}
	}
	printf("random payloads: %u accepted\n", accepted);
}

/* ---- placement ---- */

static void test_placement_default_and_parse(void **state)
{
	uint32_t node_of[8];

	assert_int_equal(placement_parse(NULL, 8, 4, node_of), 0);
	for (unsigned v = 0; v < 8; v++)
		assert_int_equal(node_of[v], v / 2);
	assert_int_equal(placement_parse("", 5, 2, node_of), 0);
	assert_int_equal(node_of[0] + node_of[1] + node_of[2], 0);   /* 0 0 0 1 1 */
	assert_int_equal(node_of[3] + node_of[4], 2);
	assert_int_equal(placement_parse("1,0,1,0", 4, 2, node_of), 0);
	assert_int_equal(node_of[0], 1);
	assert_int_equal(node_of[1], 0);
	log_set_quiet(true);
	assert_int_equal(placement_parse("0,1,2", 3, 2, node_of), -EINVAL);     /* no node 2 */
	assert_int_equal(placement_parse("0,0", 3, 2, node_of), -EINVAL);       /* too few entries */
	assert_int_equal(placement_parse("0,1,1,0", 3, 2, node_of), -EINVAL);   /* too many */
	assert_int_equal(placement_parse("0,0,0", 3, 2, node_of), -EINVAL);     /* node 1 runs nothing */
	assert_int_equal(placement_parse("0,,1", 3, 2, node_of), -EINVAL);
	assert_int_equal(placement_parse("0,1,", 2, 2, node_of), -EINVAL);
	assert_int_equal(placement_parse("0;1", 2, 2, node_of), -EINVAL);
	assert_int_equal(placement_parse("-1,0", 2, 2, node_of), -EINVAL);
	assert_int_equal(placement_parse(NULL, 2, 3, node_of), -EINVAL);        /* fewer vCPUs than nodes */
	log_set_quiet(false);
}

static void test_placement_mem_ranges_proportional_aligned(void **state)
{
	uint32_t node_of[8];
	uint64_t base[4], size[4];
	uint32_t *home;
	const uint64_t mib = 1 << 20;

	/* 4 nodes x 2 vCPUs, 256 MiB: 64 MiB each */
	assert_int_equal(placement_parse(NULL, 8, 4, node_of), 0);
	assert_int_equal(placement_mem_ranges(node_of, 8, 4, 256 * mib, base, size), 0);
	for (unsigned k = 0; k < 4; k++) {
		assert_int_equal(base[k], k * 64 * mib);
		assert_int_equal(size[k], 64 * mib);
	}
	/* 3 vCPUs on node 0, 1 on node 1, 100 MiB: node 0 gets 75 MiB rounded down to 74 */
	assert_int_equal(placement_parse("0,0,1,0", 4, 2, node_of), 0);
	assert_int_equal(placement_mem_ranges(node_of, 4, 2, 100 * mib, base, size), 0);
	assert_int_equal(base[0], 0);
	assert_int_equal(size[0], 74 * mib);
	assert_int_equal(base[1], 74 * mib);
	assert_int_equal(size[1], 26 * mib);
	/* 3 nodes, 130 MiB + 4 KiB: boundaries on 2 MiB, the last takes the odd remainder */
	assert_int_equal(placement_parse(NULL, 3, 3, node_of), 0);
	assert_int_equal(placement_mem_ranges(node_of, 3, 3, 130 * mib + 4096, base, size), 0);
	assert_int_equal(size[0] % PLACEMENT_ALIGN, 0);
	assert_int_equal(base[1] % PLACEMENT_ALIGN, 0);
	assert_int_equal(base[2] % PLACEMENT_ALIGN, 0);
	assert_int_equal(base[2] + size[2], 130 * mib + 4096);
	assert_int_equal(base[1], base[0] + size[0]);
	assert_int_equal(base[2], base[1] + size[1]);
	/* the smallest RAM: 2 MiB each, never an empty range */
	assert_int_equal(placement_parse("0,0,0,0,0,0,0,1", 8, 2, node_of), 0);
	assert_int_equal(placement_mem_ranges(node_of, 8, 2, 4 * mib, base, size), 0);
	assert_int_equal(size[0], 2 * mib);
	assert_int_equal(size[1], 2 * mib);
	assert_int_equal(placement_parse("0,1,1,1,1,1,1,1", 8, 2, node_of), 0);
	assert_int_equal(placement_mem_ranges(node_of, 8, 2, 4 * mib, base, size), 0);
	assert_int_equal(size[0], 2 * mib);
	log_set_quiet(true);
	assert_int_equal(placement_mem_ranges(node_of, 8, 2, 3 * mib, base, size), -EINVAL);
	assert_int_equal(placement_mem_ranges(node_of, 8, 2, 8 * mib + 1, base, size), -EINVAL);
	log_set_quiet(false);

	/* home map = the ranges, page by page */
	assert_int_equal(placement_parse("0,0,1,0", 4, 2, node_of), 0);
	assert_int_equal(placement_mem_ranges(node_of, 4, 2, 100 * mib, base, size), 0);
	home = calloc(100 * mib / 4096, sizeof(*home));
	assert_non_null(home);
	memset(home, 0xff, 100 * mib / 4096 * sizeof(*home));
	placement_home_map(base, size, 2, home);
	assert_int_equal(home[0], 0);
	assert_int_equal(home[74 * mib / 4096 - 1], 0);
	assert_int_equal(home[74 * mib / 4096], 1);
	assert_int_equal(home[100 * mib / 4096 - 1], 1);
	free(home);
}

/* ---- link: in-process nodes joined by queues ---- */

#define NN 3

struct qframe {
	struct qframe *next;
	uint32_t from, to;
	uint8_t type;
	size_t len;
	uint8_t buf[];
};

struct net {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct qframe *head, **tail;
	struct clink *link[NN];
	unsigned loss_permille;   /* of sequenced and unsequenced frames alike */
	uint64_t rnd;
	atomic_bool stop;
	atomic_uint lost;
	pthread_t th;
};

static struct net net;

static int net_send(void *opaque, uint32_t to, uint8_t type, const void *payload, size_t len)
{
	uint32_t from = (uint32_t)(uintptr_t)opaque;
	struct qframe *f = malloc(sizeof(*f) + len);

	assert_non_null(f);
	f->next = NULL;
	f->from = from;
	f->to = to;
	f->type = type;
	f->len = len;
	memcpy(f->buf, payload, len);
	pthread_mutex_lock(&net.lock);
	net.rnd = net.rnd * 6364136223846793005ull + 1442695040888963407ull;
	if ((net.rnd >> 33) % 1000 < net.loss_permille) {
		atomic_fetch_add(&net.lost, 1);
		free(f);
	} else {
		*net.tail = f;
		net.tail = &f->next;
		pthread_cond_signal(&net.cond);
	}
	pthread_mutex_unlock(&net.lock);
	return 0;
}

/* One receive thread for every node: like each region's I/O thread, it runs receive callbacks one at a time. */
static void *net_main(void *arg)
{
	pthread_mutex_lock(&net.lock);
	while (!atomic_load(&net.stop)) {
		struct qframe *f = net.head;

		if (!f) {
			pthread_cond_wait(&net.cond, &net.lock);
			continue;
		}
		net.head = f->next;
		if (!net.head)
			net.tail = &net.head;
		pthread_mutex_unlock(&net.lock);
		clink_on_frame(net.link[f->to], f->from, f->type, f->buf, f->len);
		free(f);
		pthread_mutex_lock(&net.lock);
	}
	pthread_mutex_unlock(&net.lock);
	return NULL;
}

/* What each fake VM saw. */
struct fake_vm {
	uint32_t id;
	atomic_uint irqs;
	struct irq_msg last_irq;
	atomic_uint logicals;
	uint32_t ldr;
	atomic_uint exits;
	int exit_code;
	uint32_t exit_from;
	uint8_t port_val;          /* a device register: port 0x3f8 */
	atomic_uint io_calls;
	atomic_uint irq_seq_errors;
	uint32_t next_vector;
	atomic_uint eois;
	uint8_t last_eoi;
};

static struct fake_vm fvm[NN];

static int fake_io(void *opaque, enum bus_space space, struct io_access *a)
{
	struct fake_vm *v = opaque;

	atomic_fetch_add(&v->io_calls, 1);
	if (space != BUS_PIO || a->addr != 0x3f8)
		return -ENOENT;
	if (a->write)
		v->port_val = (uint8_t)a->data;
	else
		a->data = 0xabcdef00u | v->port_val;   /* garbage above the size is cut */
	return 0;
}

static void fake_irq(void *opaque, const struct irq_msg *m)
{
	struct fake_vm *v = opaque;

	/* in-order delivery: vectors arrive as sent */
	if (m->vector != (uint8_t)v->next_vector)
		atomic_fetch_add(&v->irq_seq_errors, 1);
	v->next_vector = m->vector + 1u;
	v->last_irq = *m;
	atomic_fetch_add(&v->irqs, 1);
}

static void fake_logical(void *opaque, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	struct fake_vm *v = opaque;

	v->ldr = ldr;
	atomic_fetch_add(&v->logicals, 1);
}

static void fake_exit(void *opaque, uint32_t from, int code, bool fatal, const char *why)
{
	struct fake_vm *v = opaque;

	v->exit_code = code;
	v->exit_from = from;
	atomic_fetch_add(&v->exits, 1);
}

static void fake_eoi(void *opaque, uint8_t vector)
{
	struct fake_vm *v = opaque;

	v->last_eoi = vector;
	atomic_fetch_add(&v->eois, 1);
}

static void net_start(unsigned loss_permille, uint64_t rto_ns)
{
	memset(&net, 0, sizeof(net));
	pthread_mutex_init(&net.lock, NULL);
	pthread_cond_init(&net.cond, NULL);
	net.tail = &net.head;
	net.loss_permille = loss_permille;
	net.rnd = 42;
	memset(fvm, 0, sizeof(fvm));
	for (uint32_t i = 0; i < NN; i++) {
		struct clink_config cfg = { .self = i, .n_nodes = NN, .send = net_send,
					    .send_opaque = (void *)(uintptr_t)i, .rto_ns = rto_ns,
					    .io_timeout_ns = 3 * NSEC_PER_SEC };
		struct clink_ops ops = { &fvm[i], fake_io, fake_irq, fake_logical, fake_exit, fake_eoi };

		fvm[i].id = i;
		assert_int_equal(clink_create(&cfg, &net.link[i]), 0);
		clink_set_ops(net.link[i], &ops);
	}
	assert_int_equal(pthread_create(&net.th, NULL, net_main, NULL), 0);
}

static void net_stop(void)
{
	pthread_mutex_lock(&net.lock);
	atomic_store(&net.stop, true);
	pthread_cond_broadcast(&net.cond);
	pthread_mutex_unlock(&net.lock);
	pthread_join(net.th, NULL);
	for (unsigned i = 0; i < NN; i++)
		clink_destroy(net.link[i]);
	while (net.head) {
		struct qframe *f = net.head;

		net.head = f->next;
		free(f);
	}
}

static bool wait_count(atomic_uint *c, unsigned want)
{
	uint64_t deadline = clock_now_ns() + 10 * NSEC_PER_SEC;

	while (atomic_load(c) < want && clock_now_ns() < deadline)
		usleep(1000);
	return atomic_load(c) >= want;
}

static void *clink_ready_wait_thunk(void *arg)
{
	return (void *)(intptr_t)clink_ready_wait(net.link[(uintptr_t)arg], 10 * NSEC_PER_SEC);
}

static void *killer_thunk(void *arg)
{
	usleep(200 * 1000);
	clink_fail(net.link[2], 0, "test: node 0 died");
	return NULL;
}

static void run_link_scenario(unsigned loss_permille)
{
	struct vm_cluster_hooks h[NN];
	struct io_access a;
	struct clink_stats st;
	const unsigned n_irq = 300;

	net_start(loss_permille, 5 * NSEC_PER_MSEC);
	for (unsigned i = 0; i < NN; i++)
		clink_hooks(net.link[i], &h[i]);
	/* start barrier: every node's READY reaches every other */
	{
		pthread_t th[NN];

		for (uintptr_t i = 0; i < NN; i++)
			assert_int_equal(pthread_create(&th[i], NULL,
							clink_ready_wait_thunk, (void *)i),
					 0);
		for (unsigned i = 0; i < NN; i++) {
			void *ret;

			pthread_join(th[i], &ret);
			assert_int_equal((intptr_t)ret, 0);
		}
	}
	/* IPIs 0 -> 1, in order, exactly once each */
	for (unsigned k = 0; k < n_irq; k++) {
		struct irq_msg m = { .vector = (uint8_t)k, .delivery = IRQ_FIXED, .dest = 1, .source = 0 };

		assert_int_equal(h[0].apic.send_irq(h[0].apic.opaque, 1, &m), 0);
	}
	assert_true(wait_count(&fvm[1].irqs, n_irq));
	assert_int_equal(atomic_load(&fvm[1].irq_seq_errors), 0);
	/* LDR replication 2 -> 0 */
	assert_int_equal(h[2].apic.send_logical(h[2].apic.opaque, 0, 2, 0x04000000, 0xffffffff), 0);
	assert_true(wait_count(&fvm[0].logicals, 1));
	assert_int_equal(fvm[0].ldr, 0x04000000);
	/* forwarded I/O 2 -> 0: a write, then a read of what it wrote, cut to one byte */
	for (unsigned k = 0; k < 50; k++) {
		a = (struct io_access){ .addr = 0x3f8, .size = 1, .write = true, .data = 'a' + k % 26, .vcpu = 5 };
		assert_int_equal(h[2].forward_io(h[2].opaque, 0, BUS_PIO, &a), 0);
		a = (struct io_access){ .addr = 0x3f8, .size = 1, .write = false, .vcpu = 5 };
		assert_int_equal(h[2].forward_io(h[2].opaque, 0, BUS_PIO, &a), 0);
		assert_int_equal(a.data, 'a' + k % 26);
	}
	/* EOIs of level-triggered vectors 2 -> 0 (the io node), each exactly once */
	assert_non_null(h[2].forward_eoi);
	for (unsigned k = 0; k < 20; k++)
		h[2].forward_eoi(h[2].opaque, 0, (uint8_t)(0x30 + k));
	assert_true(wait_count(&fvm[0].eois, 20));
	assert_int_equal(fvm[0].last_eoi, 0x30 + 19);
	/* an access the owner's device refuses comes back as its error */
	a = (struct io_access){ .addr = 0x60, .size = 1, .write = false };
	assert_int_equal(h[1].forward_io(h[1].opaque, 0, BUS_PIO, &a), -ENOENT);
	/* exit broadcast from node 1 reaches 0 and 2 once */
	h[1].exit_broadcast(h[1].opaque, 7, "guest wrote 7");
	assert_true(wait_count(&fvm[0].exits, 1));
	assert_true(wait_count(&fvm[2].exits, 1));
	assert_int_equal(fvm[0].exit_code, 7);
	assert_int_equal(fvm[2].exit_from, 1);
	for (unsigned i = 0; i < NN; i++)
		assert_int_equal(clink_flush(net.link[i], 10 * NSEC_PER_SEC), 0);
	assert_int_equal(atomic_load(&fvm[0].exits), 1);
	clink_get_stats(net.link[0], &st);
	assert_int_equal(st.irq_sent, n_irq);
	assert_int_equal(st.io_served, 101);
	assert_int_equal(st.eoi_received, 20);
	assert_int_equal(atomic_load(&fvm[0].eois), 20);
	clink_get_stats(net.link[2], &st);
	assert_int_equal(st.eoi_sent, 20);
	clink_get_stats(net.link[1], &st);
	assert_int_equal(st.irq_received, n_irq);
	{
		uint64_t retx = 0, out_of_order = 0, dups = 0;

		for (unsigned i = 0; i < NN; i++) {
			clink_get_stats(net.link[i], &st);
			retx += st.retransmits;
			out_of_order += st.out_of_order;
			dups += st.duplicates;
		}
		if (loss_permille) {
			/* frames were lost, and the link itself repaired it: senders resent, and receivers saw the
			 * gaps (a frame after a lost one) or the copies (go-back-N resends what already arrived) */
			assert_true(atomic_load(&net.lost) > 0);
			assert_true(retx > 0);
			assert_true(out_of_order + dups > 0);
		} else {
			/* a FIFO network that loses nothing never delivers a frame after a gap (a resend of an
			 * unacknowledged frame on a slow machine may still show as a duplicate) */
			assert_int_equal(atomic_load(&net.lost), 0);
			assert_int_equal(out_of_order, 0);
		}
		printf("loss %u/1000: %u frames lost, %llu resent, %llu out of order, %llu duplicates\n", loss_permille,
		       atomic_load(&net.lost), (unsigned long long)retx, (unsigned long long)out_of_order,
		       (unsigned long long)dups);
	}
	net_stop();
}

static void test_link_ipi_io_exit(void **state)
{
	run_link_scenario(0);
}

static void test_link_lossy(void **state)
{
	run_link_scenario(100);
}

static void test_link_peer_death_fails_io(void **state)
{
	struct vm_cluster_hooks h;
	struct io_access a = { .addr = 0x3f8, .size = 1 };
	uint64_t t0;

	/* node 0's frames are all lost: a forwarded access waits until the node is declared dead */
	net_start(1000, 5 * NSEC_PER_MSEC);
	clink_hooks(net.link[2], &h);
	{
		pthread_t th;

		t0 = clock_now_ns();
		assert_int_equal(pthread_create(&th, NULL, killer_thunk, NULL), 0);
		assert_int_equal(h.forward_io(h.opaque, 0, BUS_PIO, &a), -EHOSTDOWN);
		pthread_join(th, NULL);
	}
	assert_true(clock_now_ns() - t0 < 2 * NSEC_PER_SEC);
	/* and every later one fails at once */
	assert_int_equal(h.forward_io(h.opaque, 0, BUS_PIO, &a), -EHOSTDOWN);
	net_stop();

	/* without a death, the I/O timeout */
	net_start(1000, 5 * NSEC_PER_MSEC);
	clink_hooks(net.link[1], &h);
	log_set_quiet(true);
	t0 = clock_now_ns();
	assert_int_equal(h.forward_io(h.opaque, 0, BUS_PIO, &a), -EHOSTDOWN);
	assert_true(clock_now_ns() - t0 >= 3 * NSEC_PER_SEC);
	log_set_quiet(false);
	net_stop();
}

static void test_link_garbage_counted_not_delivered(void **state)
{
	struct clink_stats st;
	uint8_t junk[64];

	net_start(0, 5 * NSEC_PER_MSEC);
	memset(junk, 0, sizeof(junk));
	junk[0] = CMSG_VERSION;
	log_set_quiet(true);
	clink_on_frame(net.link[1], 0, CMSG_IRQ, junk, 10);              /* short */
	clink_on_frame(net.link[1], 0, CMSG_IRQ, junk, 32);              /* seq 0 */
	junk[0] = 9;
	clink_on_frame(net.link[1], 0, CMSG_IRQ, junk, 32);              /* version */
	clink_on_frame(net.link[1], 0, 0x4e, junk, 32);                  /* type */
	clink_on_frame(net.link[1], 7, CMSG_IRQ, junk, 32);              /* no such node */
	clink_on_frame(net.link[1], 1, CMSG_IRQ, junk, 32);              /* from itself */
	log_set_quiet(false);
	clink_get_stats(net.link[1], &st);
	assert_int_equal(st.dropped, 6);
	assert_int_equal(st.drops[CMSG_DROP_SHORT], 1);
	assert_int_equal(st.drops[CMSG_DROP_SEQ], 1);
	assert_int_equal(st.drops[CMSG_DROP_VERSION], 1);
	assert_int_equal(st.drops[CMSG_DROP_TYPE], 1);
	assert_int_equal(atomic_load(&fvm[1].irqs), 0);
	net_stop();
}

static void test_link_clock_offset(void **state)
{
	int64_t off;
	uint64_t bound;

	net_start(0, 5 * NSEC_PER_MSEC);
	assert_int_equal(clink_clock_offset(net.link[1], 0, 8, &off, &bound), 0);
	/* one process, one clock: the true offset is 0 */
	assert_true((uint64_t)(off < 0 ? -off : off) <= bound);
	printf("offset %lld ns +- %llu ns\n", (long long)off, (unsigned long long)bound);
	net_stop();
	net_start(1000, 5 * NSEC_PER_MSEC);
	assert_int_equal(clink_clock_offset(net.link[1], 0, 2, &off, &bound), -ETIMEDOUT);
	net_stop();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec_round_trip_every_type),
		cmocka_unit_test(test_codec_drops_malformed),
		cmocka_unit_test(test_codec_random_payloads),
		cmocka_unit_test(test_placement_default_and_parse),
		cmocka_unit_test(test_placement_mem_ranges_proportional_aligned),
		cmocka_unit_test(test_link_ipi_io_exit),
		cmocka_unit_test(test_link_lossy),
		cmocka_unit_test(test_link_peer_death_fails_io),
		cmocka_unit_test(test_link_garbage_counted_not_delivered),
		cmocka_unit_test(test_link_clock_offset),
	};

	log_set_tag("test_cluster");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
