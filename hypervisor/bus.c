/* SPDX-License-Identifier: MIT */
/*
 * PIO/MMIO buses and the device table (contract in bus.h).
 *
 * Claims are made while the VM is built (single-threaded) and never removed until bus_destroy, so lookups take
 * no lock: vCPU threads only read the sorted claim arrays. Lookup is a binary search over non-overlapping ranges.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hypervisor/bus.h"
#include "util/log.h"

struct bus_claim {
	uint64_t base, len;
	char *name;
	io_handler_fn fn;
	void *opaque;
};

struct bus_space_claims {
	struct bus_claim *v;
	size_t n, cap;
};

struct bus {
	struct bus_space_claims space[2];
};

int bus_create(struct bus **out)
{
	struct bus *b = calloc(1, sizeof(*b));

	if (!b)
		return -ENOMEM;
	*out = b;
	return 0;
}

void bus_destroy(struct bus *b)
{
	if (!b)
		return;
	for (int s = 0; s < 2; s++) {
		for (size_t i = 0; i < b->space[s].n; i++)
			free(b->space[s].v[i].name);
		free(b->space[s].v);
	}
	free(b);
}

static struct bus_space_claims *bus_space_get(struct bus *b, enum bus_space space)
{
	if (!b || (space != BUS_PIO && space != BUS_MMIO))
		return NULL;
	return &b->space[space];
}

/* Index of the first claim whose end is above addr (the only candidate to contain it). */
static size_t claims_lower_bound(const struct bus_space_claims *c, uint64_t addr)
{
	size_t lo = 0, hi = c->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct bus_claim *m = &c->v[mid];

		if (m->base + m->len <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static const struct bus_claim *claims_find(const struct bus_space_claims *c, uint64_t addr)
{
	size_t i = claims_lower_bound(c, addr);

	if (i < c->n && c->v[i].base <= addr && addr - c->v[i].base < c->v[i].len)
		return &c->v[i];
	return NULL;
}

int bus_claim(struct bus *b, enum bus_space space, uint64_t base, uint64_t len, const char *name,
	      io_handler_fn fn, void *opaque)
{
	struct bus_space_claims *c = bus_space_get(b, space);
	size_t i;

	if (!c || !fn || len == 0 || base + len - 1 < base)
		return -EINVAL;
	i = claims_lower_bound(c, base);
	if (i < c->n && c->v[i].base < base + len)
		return -EBUSY;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		struct bus_claim *v = realloc(c->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->v = v;
		c->cap = cap;
	}
	char *dup = strdup(name ? name : "?");

	if (!dup)
		return -ENOMEM;
	memmove(&c->v[i + 1], &c->v[i], (c->n - i) * sizeof(*c->v));
	c->v[i] = (struct bus_claim){ .base = base, .len = len, .name = dup, .fn = fn, .opaque = opaque };
	c->n++;
	return 0;
}

int bus_access(struct bus *b, enum bus_space space, struct io_access *a)
{
	struct bus_space_claims *c = bus_space_get(b, space);
	const struct bus_claim *cl;

	if (!c || !a)
		return -EINVAL;
	cl = claims_find(c, a->addr);
	if (!cl)
		return -ENOENT;
	a->offset = a->addr - cl->base;
	if (!a->write)
		a->data = 0;
	return cl->fn(cl->opaque, a);
}

const char *bus_owner(struct bus *b, enum bus_space space, uint64_t addr)
{
	struct bus_space_claims *c = bus_space_get(b, space);
	const struct bus_claim *cl = c ? claims_find(c, addr) : NULL;

	return cl ? cl->name : NULL;
}

/* ---- device table: filled by constructors (DEVICE_REGISTER) before main, read-only afterwards ---- */

#define DEVICE_TYPES_MAX 32

static const struct device_type *device_types[DEVICE_TYPES_MAX];
static size_t n_device_types;

void device_type_register(const struct device_type *t)
{
	if (n_device_types == DEVICE_TYPES_MAX)
		die("device table full (%d): cannot register %s", DEVICE_TYPES_MAX, t->name);
	device_types[n_device_types++] = t;
}

size_t device_type_count(void)
{
	return n_device_types;
}

const struct device_type *device_type_at(size_t i)
{
	return i < n_device_types ? device_types[i] : NULL;
}

const struct device_type *device_type_find(const char *name)
{
	for (size_t i = 0; name && i < n_device_types; i++)
		if (strcmp(device_types[i]->name, name) == 0)
			return device_types[i];
	return NULL;
}
