/* SPDX-License-Identifier: MIT */
/*
 * Cluster messages: what node hypervisors of one guest tell each other besides the DSM (docs/cluster.md).
 *
 * Each message is one frame of the node's endpoint (interconnect/endpoint.h) with a type in CMSG_FRAME_TYPE_MIN..MAX
 * (0x40-0x4f; the dsm region owns 0x20-0x3f), so a node pair shares one authenticated connection for DSM and
 * cluster traffic. The payload starts with a 16-byte header
 * (version, reserved bytes, sequence number), then a fixed body per type, little-endian:
 *
 *   0x40 IRQ      interrupt message for the receiver's vCPUs (struct irq_msg): vector, delivery, shorthand, flags
 *                 (logical, level, trigger_level, x2apic), dest, source
 *   0x41 LOGICAL  an APIC's LDR/DFR was written: apic_id, ldr, dfr
 *   0x42 IO_REQ   a port/MMIO access for a device the receiver owns: id, space, size, write, vcpu, addr, data
 *   0x43 IO_RESP  its completion: id, err (0/-errno), data (read value)
 *   0x44 EXIT     the guest exited (or a node failed): code 0..255, fatal, why (<= CMSG_WHY_MAX bytes, no NUL)
 *   0x45 READY    the sender's VM is created (start barrier; empty body)
 *   0x46 ACK      cumulative acknowledgement of sequenced messages: ack (highest seq delivered in order)
 *   0x47 PING     clock offset measurement: id, t0 (sender's CLOCK_MONOTONIC)
 *   0x48 PONG     its answer: id, t0 echoed, t1 (the answerer's clock when it answered)
 *   0x49 EOI      a local APIC EOI'd level-triggered `vector` (16..255): for the io node's IOAPIC (remote IRR
 *                 cleared, a line still asserted delivered again); 1 byte vector + 7 zero bytes
 *
 * Sequencing: IRQ, LOGICAL, IO_REQ, IO_RESP, EXIT, READY and EOI carry seq >= 1, per sender and receiver, and are
 * delivered in order exactly once (the fabric may lose frames: the link retransmits, cluster/link.c); ACK, PING
 * and PONG carry seq 0 and are not retransmitted.
 *
 * Versioning rule: header.version is CMSG_VERSION (1). A receiver drops (and counts, with one log line) any other
 * version, an unknown type, a wrong length and any field outside its range: nothing a peer sends can crash the
 * node or reach the VM unvalidated. New types may be added within a version.
 */
#ifndef RACKVM_CLUSTER_MSG_H
#define RACKVM_CLUSTER_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hypervisor/bus.h"
#include "hypervisor/irq.h"

#define CMSG_VERSION 1u
#define CMSG_WHY_MAX 200u
#define CMSG_HDR_LEN 16u
#define CMSG_MAX_LEN (CMSG_HDR_LEN + 8u + CMSG_WHY_MAX)
#define CMSG_FRAME_TYPE_MIN 0x40u   /* the endpoint frame types the cluster link owns */
#define CMSG_FRAME_TYPE_MAX 0x4fu

enum cmsg_type {
	CMSG_IRQ = 0x40,
	CMSG_LOGICAL = 0x41,
	CMSG_IO_REQ = 0x42,
	CMSG_IO_RESP = 0x43,
	CMSG_EXIT = 0x44,
	CMSG_READY = 0x45,
	CMSG_ACK = 0x46,
	CMSG_PING = 0x47,
	CMSG_PONG = 0x48,
	CMSG_EOI = 0x49,
	CMSG_TYPE_FIRST = CMSG_IRQ,
	CMSG_TYPE_LAST = CMSG_EOI,
};

/* Why a received payload was dropped. */
enum cmsg_drop {
	CMSG_DROP_SHORT = 0,     /* shorter than header + body, or longer than the type allows */
	CMSG_DROP_VERSION,       /* header.version != CMSG_VERSION */
	CMSG_DROP_TYPE,          /* unknown frame type */
	CMSG_DROP_FIELD,         /* a field out of range (delivery, shorthand, flags, space, size, code, ...) */
	CMSG_DROP_SEQ,           /* seq 0 on a sequenced type or nonzero on an unsequenced one */
	CMSG_DROP_NREASONS,
};

/* A decoded message (host form). */
struct cmsg {
	uint8_t type;            /* enum cmsg_type */
	uint64_t seq;
	union {
		struct irq_msg irq;
		struct {
			uint32_t apic_id, ldr, dfr;
		} logical;
		struct {
			uint64_t id;
			uint8_t space;   /* enum bus_space */
			uint8_t size;
			bool write;
			uint32_t vcpu;
			uint64_t addr, data;
		} io_req;
		struct {
			uint64_t id;
			int32_t err;
			uint64_t data;
		} io_resp;
		struct {
			int32_t code;
			bool fatal;
			char why[CMSG_WHY_MAX + 1];
		} exit;
		struct {
			uint64_t ack;
		} ack;
		struct {
			uint64_t id, t0, t1;
		} ping;          /* PING and PONG */
		struct {
			uint8_t vector;
		} eoi;
	};
};

bool cmsg_type_is_sequenced(uint8_t type);
const char *cmsg_type_name(uint8_t type);
const char *cmsg_drop_name(enum cmsg_drop why);

/* Encode m into buf (at least CMSG_MAX_LEN bytes). Returns the payload length, or 0 if m itself is invalid
 * (the same checks the decoder makes: a node never sends what a peer would drop). */
size_t cmsg_encode(const struct cmsg *m, void *buf, size_t cap);

/* Decode and validate a received payload of frame type `type`. 0, or -(1 + enum cmsg_drop). */
int cmsg_decode(uint8_t type, const void *payload, size_t len, struct cmsg *out);

#endif
