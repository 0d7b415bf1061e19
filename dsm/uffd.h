/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd primitives for the DSM backend: one anonymous mapping per node, registered MISSING|WP, and the
 * page operations the protocol's actions translate to. No policy here: dsm/region.c decides what to call when.
 *
 * Page states as the kernel sees them:
 *   Invalid  = not present              -> any access faults MISSING (reported with write = access kind)
 *   Shared   = present, write-protected -> reads run, a write faults WP
 *   Modified = present, writable        -> nothing faults
 *
 * Faulting threads sleep in the kernel until a COPY/ZEROPAGE/WRITEPROTECT-clear/WAKE covers their page; every
 * waiter on the page is woken by the one call that makes it accessible (concurrent faults coalesce there).
 *
 * Threading: every call is safe from any thread (they are ioctls on one fd); callers serialize the operations on
 * one page themselves (the region does it under the engine lock).
 */
#ifndef RACKVM_DSM_UFFD_H
#define RACKVM_DSM_UFFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DSM_UFFD_PAGE_SIZE 4096u

struct dsm_uffd;

/* One fault as read from the userfaultfd. */
struct dsm_uffd_fault {
	uint64_t page;      /* page index in the mapping */
	uint64_t offset;    /* byte offset of the faulting address (page-aligned by the kernel unless EXACT_ADDRESS) */
	bool write;         /* the access was a write */
	bool wp;            /* write to a present, write-protected page (else: page missing) */
	uint32_t tid;       /* faulting thread (UFFD_FEATURE_THREAD_ID), 0 when unknown */
};

/* Map len bytes (a multiple of DSM_UFFD_PAGE_SIZE) of anonymous memory and register it MISSING|WP on a new
 * non-blocking userfaultfd. -ENOSYS/-EPERM/-EOPNOTSUPP when userfaultfd or its WP mode is unavailable (logged). */
int dsm_uffd_create(size_t len, struct dsm_uffd **out);
/* Unregister, close and unmap. Threads still blocked in faults are woken by the close and then see ordinary
 * zero-fill memory: callers must stop their threads first (the region does, or fails the mapping first). */
void dsm_uffd_destroy(struct dsm_uffd *u);

void *dsm_uffd_base(const struct dsm_uffd *u);
size_t dsm_uffd_len(const struct dsm_uffd *u);
size_t dsm_uffd_n_pages(const struct dsm_uffd *u);
/* The descriptor to poll for POLLIN (faults pending). */
int dsm_uffd_fd(const struct dsm_uffd *u);

/* Read up to max pending faults without blocking. Returns how many (0: none pending), or -errno. Events other
 * than page faults are ignored (none are requested). */
int dsm_uffd_read_faults(struct dsm_uffd *u, struct dsm_uffd_fault *out, size_t max);

/* Install a page from src: write-protected (Shared) when wp, writable (Modified) otherwise; wakes its waiters.
 * -EEXIST when the page is already present (nothing changed), -ENOENT when the mapping is gone, -EINVAL for a
 * page out of range. A transient -EAGAIN (mapping layout changing) is retried inside. */
int dsm_uffd_copy(struct dsm_uffd *u, uint64_t page, const void *src, bool wp);
/* Install a zero page. Writable (wp = false): UFFDIO_ZEROPAGE, which maps the kernel's shared zero page; the
 * first write is a kernel copy-on-write that userfaultfd does not report, which is right for a Modified page.
 * Read-only (wp = true): a ZEROPAGE'd page carries no uffd-wp bit, so a later write would silently succeed —
 * so this is a UFFDIO_COPY of zeros with COPY_MODE_WP instead, atomic with the protection. Errors as copy. */
int dsm_uffd_zero(struct dsm_uffd *u, uint64_t page, bool wp);
/* Write-protect a present page (Modified -> Shared: writers fault WP from now on; when this returns no write
 * can still land), or clear the protection (Shared -> Modified upgrade) and wake the page's waiters. */
int dsm_uffd_protect(struct dsm_uffd *u, uint64_t page, bool wp);
/* Drop the page (MADV_DONTNEED): the next access faults MISSING. Does not wake waiters. */
int dsm_uffd_zap(struct dsm_uffd *u, uint64_t page);
/* Wake the page's waiters without changing it (they retry the access and fault again if still not allowed). */
int dsm_uffd_wake(struct dsm_uffd *u, uint64_t page);
/* Give up on the mapping: make it PROT_NONE and wake every waiter, so every blocked or future access raises
 * SIGSEGV at once instead of hanging or reading wrong data. Irreversible. */
int dsm_uffd_fail_all(struct dsm_uffd *u);

#endif
