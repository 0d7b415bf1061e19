/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd primitives (see uffd.h for the contract).
 *
 * Why these ioctls and not others:
 *  - Shared pages are installed with UFFDIO_COPY + COPY_MODE_WP, so the page appears already write-protected: there
 *    is no instant at which another thread could write a page this node only holds Shared.
 *  - Invalidation is write-protect, copy out, zap (the region sequences it). UFFDIO_WRITEPROTECT returns only after
 *    the TLB flush, so once it returns every later write faults; the copy therefore sees the final bytes and the
 *    zap loses nothing.
 *  - UFFD_FEATURE_WP_UNPOPULATED is deliberately not requested: with it a zapped page would keep a uffd-wp marker
 *    and fault as WP instead of MISSING; the protocol wants "zapped = missing".
 */
#include "dsm/uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/log.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

struct dsm_uffd {
	int fd;
	uint8_t *base;
	size_t len;
	size_t n_pages;
};

/* Source of read-only zero pages (COPY of zeros with MODE_WP). */
static const uint8_t uffd_zeros[DSM_UFFD_PAGE_SIZE] __attribute__((aligned(DSM_UFFD_PAGE_SIZE)));

static int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int dev, err;

	if (fd >= 0)
		return fd;
	err = errno;
	/* The syscall may be restricted (vm.unprivileged_userfaultfd); the device node is the sanctioned fallback. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		pr_err("userfaultfd unavailable: syscall: %s; /dev/userfaultfd: %s", strerror(err), strerror(errno));
		return -err;
	}
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	err = errno;
	close(dev);
	if (fd < 0) {
		pr_err("USERFAULTFD_IOC_NEW: %s", strerror(err));
		return -err;
	}
	return fd;
}

int dsm_uffd_create(size_t len, struct dsm_uffd **out)
{
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID };
	struct uffdio_register reg;
	const uint64_t need_ioctls = (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE) |
				     (1ULL << _UFFDIO_WRITEPROTECT) | (1ULL << _UFFDIO_WAKE);
	struct dsm_uffd *u;
	int err;

	if (len == 0 || len % DSM_UFFD_PAGE_SIZE) {
		pr_err("region length %zu is not a positive multiple of %u", len, DSM_UFFD_PAGE_SIZE);
		return -EINVAL;
	}
	if (sysconf(_SC_PAGESIZE) != DSM_UFFD_PAGE_SIZE) {
		pr_err("host page size %ld is not %u", sysconf(_SC_PAGESIZE), DSM_UFFD_PAGE_SIZE);
		return -EOPNOTSUPP;
	}
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->len = len;
	u->n_pages = len / DSM_UFFD_PAGE_SIZE;

	u->fd = uffd_open();
	if (u->fd < 0) {
		err = u->fd;
		goto out_free;
	}
	if (ioctl(u->fd, UFFDIO_API, &api) < 0) {
		err = -errno;
		pr_err("UFFDIO_API (features WP|THREAD_ID): %s", strerror(errno));
		goto out_close;
	}
	if (!(api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
		pr_err("userfaultfd lacks write-protect support (features 0x%llx)", (unsigned long long)api.features);
		err = -EOPNOTSUPP;
		goto out_close;
	}

	/* MAP_NORESERVE: guest RAM is sparse until touched; the kernel only backs pages we install. */
	u->base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (u->base == MAP_FAILED) {
		err = -errno;
		pr_err("mmap %zu bytes: %s", len, strerror(errno));
		goto out_close;
	}
	/* Transparent huge pages would make the kernel fill 2 MiB at once behind our back on a COPY neighbour. */
	(void)madvise(u->base, len, MADV_NOHUGEPAGE);

	memset(&reg, 0, sizeof(reg));
	reg.range.start = (uintptr_t)u->base;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
	if (ioctl(u->fd, UFFDIO_REGISTER, &reg) < 0) {
		err = -errno;
		pr_err("UFFDIO_REGISTER MISSING|WP: %s", strerror(errno));
		goto out_unmap;
	}
	if ((reg.ioctls & need_ioctls) != need_ioctls) {
		pr_err("registered range lacks ioctls (have 0x%llx, need 0x%llx)", (unsigned long long)reg.ioctls,
		       (unsigned long long)need_ioctls);
		err = -EOPNOTSUPP;
		goto out_unmap;
	}
	*out = u;
	return 0;

out_unmap:
	munmap(u->base, len);
out_close:
	close(u->fd);
out_free:
	free(u);
	return err;
}

void dsm_uffd_destroy(struct dsm_uffd *u)
{
	struct uffdio_range range;

	if (!u)
		return;
	range.start = (uintptr_t)u->base;
	range.len = u->len;
	(void)ioctl(u->fd, UFFDIO_UNREGISTER, &range);
	close(u->fd);
	munmap(u->base, u->len);
	free(u);
}

void *dsm_uffd_base(const struct dsm_uffd *u)
{
	return u->base;
}

size_t dsm_uffd_len(const struct dsm_uffd *u)
{
	return u->len;
}

size_t dsm_uffd_n_pages(const struct dsm_uffd *u)
{
	return u->n_pages;
}

int dsm_uffd_fd(const struct dsm_uffd *u)
{
	return u->fd;
}

int dsm_uffd_read_faults(struct dsm_uffd *u, struct dsm_uffd_fault *out, size_t max)
{
	struct uffd_msg msgs[16];
	size_t want = max < 16 ? max : 16;
	ssize_t n;
	int got = 0;

	if (want == 0)
		return 0;
	n = read(u->fd, msgs, want * sizeof(msgs[0]));
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		return -errno;
	}
	for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
		const struct uffd_msg *m = &msgs[i];
		uint64_t off;

		if (m->event != UFFD_EVENT_PAGEFAULT)
			continue;
		off = m->arg.pagefault.address - (uintptr_t)u->base;
		if (m->arg.pagefault.address < (uintptr_t)u->base || off >= u->len)
			continue;
		out[got].page = off / DSM_UFFD_PAGE_SIZE;
		out[got].offset = off;
		out[got].wp = m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP;
		/* A WP fault is always a write; the WRITE flag is set for it too, but do not rely on that. */
		out[got].write = (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) || out[got].wp;
		out[got].tid = m->arg.pagefault.feat.ptid;
		got++;
	}
	return got;
}

static bool uffd_page_ok(const struct dsm_uffd *u, uint64_t page)
{
	return page < u->n_pages;
}

static int uffd_copy_from(struct dsm_uffd *u, uint64_t page, const void *src, bool wp)
{
	struct uffdio_copy copy;

	if (!uffd_page_ok(u, page))
		return -EINVAL;
	for (;;) {
		memset(&copy, 0, sizeof(copy));
		copy.dst = (uintptr_t)u->base + page * DSM_UFFD_PAGE_SIZE;
		copy.src = (uintptr_t)src;
		copy.len = DSM_UFFD_PAGE_SIZE;
		copy.mode = wp ? UFFDIO_COPY_MODE_WP : 0;
		if (ioctl(u->fd, UFFDIO_COPY, &copy) == 0)
			return 0;
		/* EAGAIN: the mm is changing (a concurrent mapping change); nothing was installed for one page. */
		if (errno == EAGAIN && copy.copy <= 0)
			continue;
		return -errno;
	}
}

int dsm_uffd_copy(struct dsm_uffd *u, uint64_t page, const void *src, bool wp)
{
	return uffd_copy_from(u, page, src, wp);
}

int dsm_uffd_zero(struct dsm_uffd *u, uint64_t page, bool wp)
{
	struct uffdio_zeropage zp;

	if (wp)
		return uffd_copy_from(u, page, uffd_zeros, true);
	if (!uffd_page_ok(u, page))
		return -EINVAL;
	for (;;) {
		memset(&zp, 0, sizeof(zp));
		zp.range.start = (uintptr_t)u->base + page * DSM_UFFD_PAGE_SIZE;
		zp.range.len = DSM_UFFD_PAGE_SIZE;
		if (ioctl(u->fd, UFFDIO_ZEROPAGE, &zp) == 0)
			return 0;
		if (errno == EAGAIN && zp.zeropage <= 0)
			continue;
		return -errno;
	}
}

int dsm_uffd_protect(struct dsm_uffd *u, uint64_t page, bool wp)
{
	struct uffdio_writeprotect w;

	if (!uffd_page_ok(u, page))
		return -EINVAL;
	memset(&w, 0, sizeof(w));
	w.range.start = (uintptr_t)u->base + page * DSM_UFFD_PAGE_SIZE;
	w.range.len = DSM_UFFD_PAGE_SIZE;
	w.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0;   /* clearing wakes the page's waiters */
	for (;;) {
		if (ioctl(u->fd, UFFDIO_WRITEPROTECT, &w) == 0)
			return 0;
		if (errno != EAGAIN)
			return -errno;
	}
}

int dsm_uffd_zap(struct dsm_uffd *u, uint64_t page)
{
	if (!uffd_page_ok(u, page))
		return -EINVAL;
	if (madvise(u->base + page * DSM_UFFD_PAGE_SIZE, DSM_UFFD_PAGE_SIZE, MADV_DONTNEED) < 0)
		return -errno;
	return 0;
}

int dsm_uffd_wake(struct dsm_uffd *u, uint64_t page)
{
	struct uffdio_range range;

	if (!uffd_page_ok(u, page))
		return -EINVAL;
	range.start = (uintptr_t)u->base + page * DSM_UFFD_PAGE_SIZE;
	range.len = DSM_UFFD_PAGE_SIZE;
	if (ioctl(u->fd, UFFDIO_WAKE, &range) < 0)
		return -errno;
	return 0;
}

int dsm_uffd_fail_all(struct dsm_uffd *u)
{
	struct uffdio_range range;
	int err = 0;

	if (mprotect(u->base, u->len, PROT_NONE) < 0)
		err = -errno;
	range.start = (uintptr_t)u->base;
	range.len = u->len;
	if (ioctl(u->fd, UFFDIO_WAKE, &range) < 0 && !err)
		err = -errno;
	return err;
}
