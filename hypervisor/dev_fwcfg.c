/* SPDX-License-Identifier: MIT */
/*
 * QEMU fw_cfg, traditional I/O interface (docs/specs/fw_cfg.rst): write a 16-bit key to the selector port 0x510,
 * then read the item's bytes one at a time from the data port 0x511; each selector write rewinds to offset 0,
 * reads past an item's end (or of an unknown key) return 0, writes to the data port are ignored (as QEMU since
 * 2.4). Other widths/offsets are not valid fw_cfg accesses: ignored, reads return all ones.
 *
 * Items: SIGNATURE "QEMU", ID (bit 0 only: no DMA interface — it would need guest-memory access, which
 * vm_services does not give devices), UUID (zero), RAM_SIZE (le64), NOGRAPHIC (le16 1), NB_CPUS and MAX_CPUS
 * (le16), CMDLINE_SIZE (le32, including the NUL) / CMDLINE_DATA, FILE_DIR (be32 count, then per file be32 size,
 * be16 select, be16 reserved, char name[56]) with the machine's files sorted by name and selected from 0x0020
 * upward in that order, as QEMU does. Items are built at creation and never change; the lock only keeps the
 * selector and offset consistent when several vCPUs use the ports at once (their interleaving is theirs).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hypervisor/bus.h"
#include "util/log.h"

#define FWCFG_PORT 0x510
#define FWCFG_LEN 2

#define FW_CFG_SIGNATURE 0x00
#define FW_CFG_ID 0x01
#define FW_CFG_UUID 0x02
#define FW_CFG_RAM_SIZE 0x03
#define FW_CFG_NOGRAPHIC 0x04
#define FW_CFG_NB_CPUS 0x05
#define FW_CFG_MAX_CPUS 0x0f
#define FW_CFG_CMDLINE_SIZE 0x14
#define FW_CFG_CMDLINE_DATA 0x15
#define FW_CFG_FILE_DIR 0x19
#define FW_CFG_FILE_FIRST 0x20
#define FW_CFG_FILE_SLOTS 0x40
#define FW_CFG_ENTRY_MASK 0x3fff
#define FW_CFG_N_ITEMS (FW_CFG_FILE_FIRST + FW_CFG_FILE_SLOTS)
#define FW_CFG_MAX_FILE_PATH 56
#define FW_CFG_FILE_ENTRY 64

struct fwcfg_item {
	uint8_t *data;
	uint32_t size;
};

struct fwcfg {
	pthread_mutex_t lock;
	uint16_t key;
	uint32_t offset;
	struct fwcfg_item items[FW_CFG_N_ITEMS];
};

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_be(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static int fwcfg_add(struct fwcfg *f, uint16_t key, const void *data, uint32_t size)
{
	uint8_t *copy = malloc(size ? size : 1);

	if (!copy)
		return -ENOMEM;
	if (size)
		memcpy(copy, data, size);
	free(f->items[key].data);
	f->items[key] = (struct fwcfg_item){ .data = copy, .size = size };
	return 0;
}

static int fwcfg_add_le(struct fwcfg *f, uint16_t key, uint64_t v, unsigned n)
{
	uint8_t b[8];

	put_le(b, v, n);
	return fwcfg_add(f, key, b, n);
}

static int file_cmp(const void *a, const void *b)
{
	const struct fw_file *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

static int fwcfg_add_files(struct fwcfg *f, const struct fw_file *files, size_t n)
{
	const struct fw_file **sorted;
	uint8_t *dir;
	uint32_t dir_size;
	int r = 0;

	if (n > FW_CFG_FILE_SLOTS) {
		pr_err("fw_cfg: %zu files, at most %d", n, FW_CFG_FILE_SLOTS);
		return -E2BIG;
	}
	sorted = calloc(n ? n : 1, sizeof(*sorted));
	dir_size = 4 + (uint32_t)n * FW_CFG_FILE_ENTRY;
	dir = calloc(1, dir_size);
	if (!sorted || !dir) {
		r = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < n; i++) {
		if (!files[i].name || strlen(files[i].name) >= FW_CFG_MAX_FILE_PATH ||
		    (files[i].size && !files[i].data)) {
			pr_err("fw_cfg: bad file #%zu (%s)", i, files[i].name ? files[i].name : "no name");
			r = -EINVAL;
			goto out_free;
		}
		sorted[i] = &files[i];
	}
	qsort(sorted, n, sizeof(*sorted), file_cmp);
	put_be(dir, n, 4);
	for (size_t i = 0; i < n; i++) {
		uint8_t *e = dir + 4 + i * FW_CFG_FILE_ENTRY;
		uint16_t key = (uint16_t)(FW_CFG_FILE_FIRST + i);

		put_be(e, sorted[i]->size, 4);
		put_be(e + 4, key, 2);
		strcpy((char *)e + 8, sorted[i]->name);
		r = fwcfg_add(f, key, sorted[i]->data, sorted[i]->size);
		if (r)
			goto out_free;
	}
	r = fwcfg_add(f, FW_CFG_FILE_DIR, dir, dir_size);
out_free:
	free(dir);
	free(sorted);
	return r;
}

static int fwcfg_io(void *opaque, struct io_access *a)
{
	struct fwcfg *f = opaque;

	pthread_mutex_lock(&f->lock);
	if (a->offset == 0 && a->size == 2 && a->write) {
		f->key = (uint16_t)a->data;
		f->offset = 0;
	} else if (a->offset == 1 && a->size == 1 && !a->write) {
		uint16_t k = f->key & FW_CFG_ENTRY_MASK;
		const struct fwcfg_item *it = k < FW_CFG_N_ITEMS ? &f->items[k] : NULL;

		a->data = 0;
		if (it && f->offset < it->size)
			a->data = it->data[f->offset++];
	} else if (!a->write) {
		a->data = a->size >= 8 ? ~0ull : (1ull << (8 * a->size)) - 1;
	}
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static void fwcfg_free(struct fwcfg *f)
{
	for (size_t i = 0; i < FW_CFG_N_ITEMS; i++)
		free(f->items[i].data);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static int fwcfg_create(struct bus *b, const struct machine_desc *m, const struct vm_services *svc, void **state)
{
	static const uint8_t uuid[16];
	struct fwcfg *f = calloc(1, sizeof(*f));
	const char *cmdline = m->cmdline ? m->cmdline : "";
	uint32_t cmdline_size = (uint32_t)strlen(cmdline) + 1;
	int r;

	if (!f)
		return -ENOMEM;
	pthread_mutex_init(&f->lock, NULL);
	r = fwcfg_add(f, FW_CFG_SIGNATURE, "QEMU", 4);
	if (!r)
		r = fwcfg_add_le(f, FW_CFG_ID, 1, 4);
	if (!r)
		r = fwcfg_add(f, FW_CFG_UUID, uuid, sizeof(uuid));
	if (!r)
		r = fwcfg_add_le(f, FW_CFG_RAM_SIZE, m->ram_size, 8);
	if (!r)
		r = fwcfg_add_le(f, FW_CFG_NOGRAPHIC, 1, 2);
	if (!r)
		r = fwcfg_add_le(f, FW_CFG_NB_CPUS, m->n_vcpus, 2);
	if (!r)
		r = fwcfg_add_le(f, FW_CFG_MAX_CPUS, m->n_vcpus, 2);
	if (!r)
		r = fwcfg_add_le(f, FW_CFG_CMDLINE_SIZE, cmdline_size, 4);
	if (!r)
		r = fwcfg_add(f, FW_CFG_CMDLINE_DATA, cmdline, cmdline_size);
	if (!r)
		r = fwcfg_add_files(f, m->files, m->files ? m->n_files : 0);
	if (!r)
		r = bus_claim(b, BUS_PIO, FWCFG_PORT, FWCFG_LEN, "fw_cfg", fwcfg_io, f);
	if (r) {
		fwcfg_free(f);
		return r;
	}
	*state = f;
	return 0;
}

static void fwcfg_destroy(void *state)
{
	if (state)
		fwcfg_free(state);
}

static const struct device_type fwcfg_type = {
	.name = "fw_cfg",
	.create = fwcfg_create,
	.destroy = fwcfg_destroy,
};
DEVICE_REGISTER(fwcfg_type)
