/* SPDX-License-Identifier: MIT */
/*
 * Built instead of rdma.c when pkg-config does not find libibverbs and librdmacm: "rdma" stays a known transport
 * name, and creating it fails at run time with a clear message — callers need no #ifdef.
 */
#include <errno.h>

#include "interconnect/ic_internal.h"
#include "util/log.h"

static int rdma_stub_create(const struct ic_config *cfg, struct ic_transport **out)
{
	*out = NULL;
	pr_err("rackvm was built without RDMA support (libibverbs/librdmacm not found at build time)");
	return -ENOTSUP;
}

static struct ic_transport_ops rdma_stub_ops = {
	.name = "rdma",
	.create = rdma_stub_create,
};
IC_TRANSPORT_REGISTER(rdma_stub_ops)
