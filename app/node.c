/* SPDX-License-Identifier: MIT */
/*
 * rackvm node: one node hypervisor of a guest that spans several nodes (the composition root of DESIGN.md).
 *
 * Start-up: membership (self + --peer), the cluster key (a file only its owner may read), placement (which node
 * runs each vCPU) and the home ranges that follow from it (node k homes the RAM range of its proximity domain; the
 * same ranges go into SRAT), the node's endpoint (interconnect/endpoint.h: the transport this node uses and its I/O
 * thread; only this file knows which transport that is), its two subscribers — the dsm region (guest RAM, frame
 * types 0x20-0x3f) and the cluster link (0x40-0x4f) — then the endpoint's start, wait for every peer's connection,
 * measure the clock
 * offset to node 0, create the VM with the link's hooks, the READY barrier (no node starts a vCPU before every
 * node's VM exists: the boot node writes the kernel into guest RAM while creating its VM, and an INIT/SIPI must
 * find its target), start, wait.
 *
 * End: the guest's exit reaches every node (EXIT broadcast by the node where it happened); each node waits until
 * its own EXIT was acknowledged, prints one summary line on stderr and leaves the region (which waits for every
 * peer to leave too), then the link unsubscribes and the endpoint closes. Exit status: the VM's (the guest's
 * isa-debug-exit status).
 *
 * A peer's death: the region calls on_fatal once. The guest cannot continue (pages homed there are gone, and the
 * region makes every access to guest RAM fault from then on), so the node prints which node died and why, its
 * summary, and exits 1 at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/commands.h"
#include "cluster/link.h"
#include "cluster/msg.h"
#include "app/opts.h"
#include "cluster/placement.h"
#include "dsm/protocol.h"
#include "dsm/region.h"
#include "hypervisor/accel.h"
#include "hypervisor/fw.h"
#include "hypervisor/vm.h"
#include "util/clock.h"
#include "util/hist.h"
#include "util/log.h"

#define NODE_MAX 64
#define PEER_WAIT_NS (60 * NSEC_PER_SEC)
#define READY_WAIT_NS (120 * NSEC_PER_SEC)
#define MAX_RAM (3ull << 30)   /* guest RAM stays below the PCI hole: region offsets = guest-physical */

struct node_opts {
	uint32_t id, io_node;
	const char *listen;
	struct ic_peer_addr members[NODE_MAX];
	bool have[NODE_MAX];
	unsigned n_members;
	const char *key_file, *kernel, *cmdline, *placement, *accel, *transport;
	unsigned vcpus;
	uint64_t mem;
	struct ic_link_params link;
	bool fabric;
	uint64_t seed;
	uint32_t dead_ms;
	bool verbose;
	bool console_input;
	bool strict_io;
	const char *initrd;
	const char *modules[FW_MAX_MODULES];   /* "FILE[ ARGS]" */
	size_t n_modules;
};

struct node {
	struct node_opts o;
	struct ic_endpoint *ep;
	int link_sub;                 /* the link's endpoint subscription, -1 none */
	struct dsm_region *region;
	struct clink *link;
	_Atomic(struct vm *) vm;
	uint32_t node_of[VM_MAX_VCPUS];
	uint64_t mem_base[NODE_MAX], mem_size[NODE_MAX];
	atomic_bool guest_done;
	atomic_bool exit_from_peer;
	int64_t clock_off;
	uint64_t clock_bound;
	bool clock_measured;
};

static struct node *the_node;   /* for the signal handler */

/* ---- summary ---------------------------------------------------------------------------------------------- */

#define NODE_HOT_PAGES 8   /* pages with the most remote faults, in the summary */

static void node_summary(struct node *n, const char *result)
{
	struct dsm_region_stats d;
	struct clink_stats c;
	struct vm_stats v;
	struct vm *vm = atomic_load(&n->vm);
	unsigned local = 0;
	char clock[64] = "";

	memset(&d, 0, sizeof(d));
	memset(&v, 0, sizeof(v));
	memset(&c, 0, sizeof(c));
	if (n->region)
		dsm_region_get_stats(n->region, &d);
	if (n->link)
		clink_get_stats(n->link, &c);
	if (vm)
		vm_get_stats(vm, &v);
	for (unsigned i = 0; i < n->o.vcpus; i++)
		local += n->node_of[i] == n->o.id;
	if (n->clock_measured)
		snprintf(clock, sizeof(clock), " clock %+.1fus+-%.1fus", (double)n->clock_off / 1000.0,
			 (double)n->clock_bound / 1000.0);
	fprintf(stderr,
		"summary: node %u vcpus %u faults r/w/wp %" PRIu64 "/%" PRIu64 "/%" PRIu64 " remote %" PRIu64
		" p50 %.1fus bytes in/out %" PRIu64 "/%" PRIu64 " ipis sent/recv %" PRIu64 "/%" PRIu64
		" io fwd/served %" PRIu64 "/%" PRIu64 " eoi sent/recv %" PRIu64 "/%" PRIu64 " retx %" PRIu64
		" dsm retx %" PRIu64 "%s result %s\n",
		n->o.id, local, d.faults_read, d.faults_write, d.faults_wp, d.faults_remote,
		(double)hist_quantile(&d.remote_fault_ns, 0.5) / 1000.0, d.bytes_in, d.bytes_out, c.irq_sent,
		c.irq_received, c.io_forwarded, c.io_served, c.eoi_sent, c.eoi_received, c.retransmits,
		d.retransmissions, clock, result);
	if (n->region && d.faults_remote) {
		struct dsm_page_count hot[NODE_HOT_PAGES];
		size_t k = dsm_region_hot_pages(n->region, hot, NODE_HOT_PAGES);
		char line[NODE_HOT_PAGES * 32] = "";
		size_t len = 0;

		for (size_t i = 0; i < k && len < sizeof(line); i++)
			len += (size_t)snprintf(line + len, sizeof(line) - len, " 0x%llx:%u",
						(unsigned long long)(hot[i].page * DSM_PAGE_SIZE), hot[i].faults);
		fprintf(stderr, "summary-hot: node %u pages (guest-physical:remote faults)%s\n", n->o.id, line);
	}
}

/* ---- callbacks ------------------------------------------------------------------------------------------- */

static int node_send(void *opaque, uint32_t to, uint8_t type, const void *payload, size_t len)
{
	struct node *n = opaque;
	struct iovec iov = { (void *)payload, len };

	/* frames sent before the endpoint started are resent by the link */
	return ic_endpoint_send(n->ep, to, type, 0, &iov, len ? 1 : 0);
}

/* The cluster link's frames (types CMSG_FRAME_TYPE_MIN..MAX), on the endpoint's I/O thread. */
static void node_on_link_frame(void *opaque, uint32_t from, const struct ic_frame *f)
{
	struct node *n = opaque;

	clink_on_frame(n->link, from, f->type, f->payload, f->len);
}

static void node_on_fatal(void *opaque, uint32_t dead, const char *reason)
{
	struct node *n = opaque;
	struct vm *vm = atomic_load(&n->vm);
	char res[160];

	clink_fail(n->link, dead, reason);
	if (atomic_load(&n->guest_done)) {
		/* the guest already ended here; nothing needs that node any more */
		pr_warn("node %u went away after the guest's exit: %s", dead, reason);
		return;
	}
	if (dead == n->o.id)
		fprintf(stderr, "rackvm node %u: FAILED: this node's guest memory failed: %s\n", n->o.id, reason);
	else
		fprintf(stderr, "rackvm node %u: FAILED: node %u died (%s); the guest cannot continue\n", n->o.id,
			dead, reason);
	snprintf(res, sizeof(res), "failed (node %u died)", dead);
	if (vm)
		vm_stop(vm, 1);
	node_summary(n, res);
	/* Guest RAM is about to fault on every access (dsm/region.h): leave now rather than let a vCPU thread take
	 * SIGSEGV. stdout holds the console: flush what the guest printed. */
	fflush(stdout);
	_exit(1);
}

static int ops_io(void *opaque, enum bus_space space, struct io_access *a)
{
	return vm_remote_io(opaque, space, a);
}

static void ops_irq(void *opaque, const struct irq_msg *m)
{
	vm_remote_irq(opaque, m);
}

static void ops_logical(void *opaque, uint32_t apic_id, uint32_t ldr, uint32_t dfr)
{
	vm_remote_logical(opaque, apic_id, ldr, dfr);
}

static void ops_eoi(void *opaque, uint8_t vector)
{
	vm_remote_eoi(opaque, vector);
}

static void ops_exit(void *opaque, uint32_t from, int code, bool fatal, const char *why)
{
	struct node *n = the_node;

	if (n)
		atomic_store(&n->exit_from_peer, true);
	pr_debug("node %u reports the guest's exit %d: %s", from, code, why);
	vm_remote_exit(opaque, code, why);
}

static void node_on_signal(int sig)
{
	struct node *n = the_node;
	struct vm *vm = n ? atomic_load(&n->vm) : NULL;

	if (vm)
		vm_stop(vm, 128 + sig);
	else
		_exit(128 + sig);
}

/* ---- options --------------------------------------------------------------------------------------------- */

static void node_usage(FILE *f)
{
	fprintf(f,
		"usage: rackvm node --id N --listen ADDR:PORT --peer ID=ADDR:PORT ... --key-file F --vcpus V --mem SIZE\n"
		"                   --kernel FILE [options]\n"
		"Run one node hypervisor of a guest spanning several nodes (docs/operator-guide.md).\n"
		"  --id N               this node's id; ids are 0..nodes-1\n"
		"  --listen ADDR:PORT   where this node accepts its peers\n"
		"  --peer ID=ADDR:PORT  every other node (repeat)\n"
		"  --key-file F         cluster key: 32-128 hex digits (16-64 bytes); mode 0600 or stricter\n"
		"  --vcpus V --mem SIZE the whole guest's vCPUs and RAM (same on every node)\n"
		"  --kernel FILE        multiboot/Linux image (read by the node of vCPU 0)\n"
		"  --cmdline S          guest command line\n"
		"  --initrd FILE        initial ramdisk (Linux; read by the node of vCPU 0)\n"
		"  --module 'FILE[ ARGS]'  multiboot module with its command line (repeatable)\n"
		"  --strict-io          stop the guest at an access to a port nothing claims (default: all-ones/dropped)\n"
		"  --placement LIST     node of each vCPU, e.g. 0,0,1,1 (default: contiguous blocks)\n"
		"  --io-node ID         node owning the devices and the console (default 0)\n"
		"  --console-input      the io node's stdin feeds the guest's UART (COM1)\n"
		"  --transport tcp|rdma|fabric   (default tcp; fabric = tcp through the fabric shim)\n"
		"  --latency US --bandwidth MBPS --loss P --seed S   fabric link parameters (imply fabric)\n"
		"  --dead-ms MS         a silent peer is dead after this (default 1000)\n"
		"  --accel auto|kvm|emu execution backend (default auto)\n"
		"  -v, --verbose        debug log\n");
}

static int parse_peer(struct node_opts *o, const char *arg)
{
	const char *eq = strchr(arg, '=');
	uint64_t id;
	char idbuf[16];

	if (!eq || (size_t)(eq - arg) >= sizeof(idbuf) || strlen(eq + 1) >= IC_ADDR_MAX || !eq[1])
		return -EINVAL;
	memcpy(idbuf, arg, (size_t)(eq - arg));
	idbuf[eq - arg] = 0;
	if (opts_parse_u64(idbuf, 0, NODE_MAX - 1, &id) || o->have[id])
		return -EINVAL;
	o->have[id] = true;
	o->members[id].id = (uint32_t)id;
	snprintf(o->members[id].addr, sizeof(o->members[id].addr), "%s", eq + 1);
	return 0;
}

static int node_parse(int argc, char **argv, struct node_opts *o)
{
	static const struct option lo[] = {
		{ "id", required_argument, NULL, 'I' },       { "listen", required_argument, NULL, 'l' },
		{ "peer", required_argument, NULL, 'p' },     { "key-file", required_argument, NULL, 'K' },
		{ "vcpus", required_argument, NULL, 'v' },    { "mem", required_argument, NULL, 'm' },
		{ "kernel", required_argument, NULL, 'k' },   { "cmdline", required_argument, NULL, 'c' },
		{ "placement", required_argument, NULL, 'P' }, { "io-node", required_argument, NULL, 'i' },
		{ "transport", required_argument, NULL, 't' }, { "latency", required_argument, NULL, 'L' },
		{ "bandwidth", required_argument, NULL, 'B' }, { "loss", required_argument, NULL, 'X' },
		{ "seed", required_argument, NULL, 'S' },     { "dead-ms", required_argument, NULL, 'D' },
		{ "accel", required_argument, NULL, 'a' },    { "verbose", no_argument, NULL, 'V' },
		{ "console-input", no_argument, NULL, 'C' },  { "strict-io", no_argument, NULL, 'Z' },
		{ "initrd", required_argument, NULL, 'R' },   { "module", required_argument, NULL, 'M' },
		{ "help", no_argument, NULL, 'h' },           { NULL, 0, NULL, 0 },
	};
	bool have_id = false;
	uint64_t v;
	int c;

	memset(o, 0, sizeof(*o));
	o->accel = "auto";
	o->transport = "tcp";
	optind = 1;
	while ((c = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
		switch (c) {
		case 'I':
			if (opts_parse_u64(optarg, 0, NODE_MAX - 1, &v))
				goto bad;
			o->id = (uint32_t)v;
			have_id = true;
			break;
		case 'l': o->listen = optarg; break;
		case 'p':
			if (parse_peer(o, optarg))
				goto bad;
			break;
		case 'K': o->key_file = optarg; break;
		case 'v':
			if (opts_parse_u64(optarg, 1, VM_MAX_VCPUS, &v))
				goto bad;
			o->vcpus = (unsigned)v;
			break;
		case 'm':
			if (opts_parse_size(optarg, &o->mem))
				goto bad;
			break;
		case 'k': o->kernel = optarg; break;
		case 'c': o->cmdline = optarg; break;
		case 'P': o->placement = optarg; break;
		case 'i':
			if (opts_parse_u64(optarg, 0, NODE_MAX - 1, &v))
				goto bad;
			o->io_node = (uint32_t)v;
			break;
		case 't':
			if (strcmp(optarg, "tcp") && strcmp(optarg, "rdma") && strcmp(optarg, "fabric"))
				goto bad;
			o->transport = optarg;
			o->fabric |= !strcmp(optarg, "fabric");
			break;
		case 'L':
			if (opts_parse_u64(optarg, 0, 10 * 1000 * 1000, &v))
				goto bad;
			o->link.latency_us = (uint32_t)v;
			o->fabric = true;
			break;
		case 'B':
			if (opts_parse_u64(optarg, 0, 1000 * 1000, &v))
				goto bad;
			o->link.bandwidth_mbps = (uint32_t)v;
			o->fabric = true;
			break;
		case 'X':
			if (opts_parse_prob(optarg, &o->link.loss))
				goto bad;
			o->fabric = true;
			break;
		case 'S':
			if (opts_parse_u64(optarg, 0, UINT64_MAX, &o->seed))
				goto bad;
			break;
		case 'D':
			if (opts_parse_u64(optarg, 10, 600000, &v))
				goto bad;
			o->dead_ms = (uint32_t)v;
			break;
		case 'a': o->accel = optarg; break;
		case 'V': o->verbose = true; break;
		case 'C': o->console_input = true; break;
		case 'Z': o->strict_io = true; break;
		case 'R': o->initrd = optarg; break;
		case 'M':
			if (opts_add_module("rackvm node", o->modules, &o->n_modules, FW_MAX_MODULES, optarg))
				return -EINVAL;
			break;
		case 'h':
			node_usage(stdout);
			return 1;
		default:
			node_usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc || !have_id || !o->listen || !o->key_file || !o->vcpus || !o->mem || !o->kernel) {
		fprintf(stderr, "rackvm node: --id, --listen, --key-file, --vcpus, --mem and --kernel are required "
				"(try 'rackvm node --help')\n");
		return -EINVAL;
	}
	if (o->have[o->id]) {
		fprintf(stderr, "rackvm node: --peer %u is this node's own id\n", o->id);
		return -EINVAL;
	}
	o->have[o->id] = true;
	o->members[o->id].id = o->id;
	snprintf(o->members[o->id].addr, sizeof(o->members[o->id].addr), "%s", o->listen);
	for (unsigned k = 0; k < NODE_MAX; k++)
		o->n_members += o->have[k];
	for (unsigned k = 0; k < o->n_members; k++) {
		if (!o->have[k]) {
			fprintf(stderr, "rackvm node: node ids must be 0..%u: node %u has no --peer\n", o->n_members - 1,
				k);
			return -EINVAL;
		}
	}
	if (o->io_node >= o->n_members) {
		fprintf(stderr, "rackvm node: --io-node %u is not one of the %u nodes\n", o->io_node, o->n_members);
		return -EINVAL;
	}
	if (o->mem % 4096 || o->mem > MAX_RAM) {
		fprintf(stderr, "rackvm node: --mem must be a multiple of 4 KiB and at most 3 GiB\n");
		return -EINVAL;
	}
	return 0;
bad:
	fprintf(stderr, "rackvm node: --%s %s: bad value (try 'rackvm node --help')\n", opts_name(lo, c), optarg);
	return -EINVAL;
}

/* The cluster key: hex text (32-128 digits, surrounding whitespace ignored), in a file no one else may read. */
static int read_key(const char *path, uint8_t *key, size_t *key_len)
{
	char buf[256];
	struct stat st;
	size_t len = 0, nd = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "rackvm node: key file %s: %s\n", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || (st.st_mode & 077)) {
		fprintf(stderr, "rackvm node: key file %s is accessible by group or others (mode %04o): chmod 600 it\n",
			path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -EPERM;
	}
	while (len < sizeof(buf) && (r = read(fd, buf + len, sizeof(buf) - len)) > 0)
		len += (size_t)r;
	close(fd);
	for (size_t i = 0; i < len; i++) {
		char ch = buf[i];
		int d;

		if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
			continue;
		if (ch >= '0' && ch <= '9')
			d = ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			d = ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			d = ch - 'A' + 10;
		else
			goto bad;
		if (nd / 2 >= IC_KEY_MAX)
			goto bad;
		if (nd % 2 == 0)
			key[nd / 2] = (uint8_t)(d << 4);
		else
			key[nd / 2] |= (uint8_t)d;
		nd++;
	}
	if (nd % 2 || nd / 2 < IC_KEY_MIN)
		goto bad;
	*key_len = nd / 2;
	return 0;
bad:
	fprintf(stderr, "rackvm node: key file %s must hold %u-%u hex digits\n", path, 2 * IC_KEY_MIN, 2 * IC_KEY_MAX);
	return -EINVAL;
}

/* ---- the node -------------------------------------------------------------------------------------------- */

/* The endpoint: which transport this node uses (the fabric around tcp or rdma when a link is shaped), its peers and
 * key. Not started: the region and the link subscribe first. */
static int node_endpoint_create(struct node *n, const uint8_t *key, size_t key_len)
{
	struct ic_peer_addr peers[NODE_MAX];
	struct ic_endpoint_config ec;
	size_t np = 0;
	int err;

	memset(&ec, 0, sizeof(ec));
	for (unsigned i = 0; i < n->o.n_members; i++)
		if (n->o.members[i].id != n->o.id)
			peers[np++] = n->o.members[i];
	if (n->o.fabric) {
		ec.transport = "fabric";
		ec.ic.inner = strcmp(n->o.transport, "rdma") ? "tcp" : "rdma";
		ec.ic.link = n->o.link;
		ec.ic.seed = n->o.seed + n->o.id;
	} else {
		ec.transport = n->o.transport;
	}
	ec.ic.self = n->o.id;
	ec.ic.listen = n->o.listen;
	ec.ic.peers = peers;
	ec.ic.n_peers = np;
	ec.ic.key = key;
	ec.ic.key_len = key_len;
	ec.ic.epoch = 1;
	ec.ic.max_frame = (uint32_t)(dsm_region_max_frame() > CMSG_MAX_LEN ? dsm_region_max_frame() : CMSG_MAX_LEN);
	ec.ic.dead_ms = n->o.dead_ms;
	err = ic_endpoint_create(&ec, &n->ep);
	if (err)
		fprintf(stderr, "rackvm node %u: network endpoint (%s): %s\n", n->o.id, ec.transport, strerror(-err));
	return err;
}

static int node_region_create(struct node *n, const uint32_t *home)
{
	struct dsm_region_config rc;
	int err;

	memset(&rc, 0, sizeof(rc));
	rc.self = n->o.id;
	rc.n_nodes = n->o.n_members;
	rc.ep = n->ep;
	rc.size = n->o.mem;
	rc.home_map = home;
	rc.on_fatal = node_on_fatal;
	rc.opaque = n;
	err = dsm_region_create(&rc, &n->region);
	if (err)
		fprintf(stderr, "rackvm node %u: guest RAM (dsm region): %s\n", n->o.id, strerror(-err));
	return err;
}

static int node_link_subscribe(struct node *n)
{
	const struct ic_subscriber sub = {
		.name = "cluster link", .type_min = CMSG_FRAME_TYPE_MIN, .type_max = CMSG_FRAME_TYPE_MAX,
		.on_frame = node_on_link_frame, .opaque = n,
	};
	int h = ic_endpoint_subscribe(n->ep, &sub);

	if (h < 0) {
		fprintf(stderr, "rackvm node %u: cluster link on the endpoint: %s\n", n->o.id, strerror(-h));
		return h;
	}
	n->link_sub = h;
	return 0;
}

static int node_run(struct node *n)
{
	struct vm_cluster_hooks hooks;
	struct clink_config lc;
	struct clink_ops ops;
	struct vm_config vc;
	struct sigaction sa;
	const struct accel_ops *accel;
	uint8_t key[IC_KEY_MAX];
	size_t key_len = 0;
	uint32_t *home = NULL;
	struct vm *vm = NULL;
	char why[256], res[64];
	unsigned local = 0;
	int err, code = 1;

	if (read_key(n->o.key_file, key, &key_len))
		return 1;
	if (access(n->o.kernel, R_OK) < 0) {
		fprintf(stderr, "rackvm node: --kernel %s: %s\n", n->o.kernel, strerror(errno));
		return 1;
	}
	if (n->o.initrd && access(n->o.initrd, R_OK) < 0) {
		fprintf(stderr, "rackvm node: --initrd %s: %s\n", n->o.initrd, strerror(errno));
		return 1;
	}
	if (placement_parse(n->o.placement, n->o.vcpus, n->o.n_members, n->node_of) ||
	    placement_mem_ranges(n->node_of, n->o.vcpus, n->o.n_members, n->o.mem, n->mem_base, n->mem_size))
		return 1;
	home = calloc(n->o.mem / 4096, sizeof(*home));
	if (!home)
		return 1;
	placement_home_map(n->mem_base, n->mem_size, n->o.n_members, home);
	accel = accel_choose(n->o.accel, why, sizeof(why));
	if (!accel) {
		fprintf(stderr, "rackvm node: --accel %s: %s\n", n->o.accel, why);
		goto out_home;
	}

	memset(&lc, 0, sizeof(lc));
	lc.self = n->o.id;
	lc.n_nodes = n->o.n_members;
	lc.send = node_send;
	lc.send_opaque = n;
	/* A lost frame is resent after a few round trips of the configured latency. Without a lossy fabric nothing
	 * is ever lost (a broken connection is a dead node), and a short timeout only resends for nothing when
	 * busy nodes are slow to acknowledge. */
	lc.rto_ns = n->o.link.loss > 0 || n->o.link.reorder > 0
			    ? (20 + 4 * (uint64_t)n->o.link.latency_us / 1000) * NSEC_PER_MSEC
			    : NSEC_PER_SEC;
	err = clink_create(&lc, &n->link);
	if (err) {
		fprintf(stderr, "rackvm node: cluster link: %s\n", strerror(-err));
		goto out_home;
	}
	n->link_sub = -1;
	err = node_endpoint_create(n, key, key_len);
	explicit_bzero(key, sizeof(key));
	if (err)
		goto out_link;
	if (node_region_create(n, home))
		goto out_ep;
	if (node_link_subscribe(n))
		goto out_region;
	err = ic_endpoint_start(n->ep);
	if (err) {
		fprintf(stderr, "rackvm node %u: transport %s: %s\n", n->o.id, n->o.fabric ? "fabric" : n->o.transport,
			strerror(-err));
		goto out_region;
	}
	for (unsigned i = 0; i < n->o.vcpus; i++)
		local += n->node_of[i] == n->o.id;
	pr_info("node %u of %u: %u vCPU(s) here, home of RAM 0x%llx-0x%llx, %s accelerator, listening on %s",
		n->o.id, n->o.n_members, local, (unsigned long long)n->mem_base[n->o.id],
		(unsigned long long)(n->mem_base[n->o.id] + n->mem_size[n->o.id]), accel->name, n->o.listen);
	err = ic_endpoint_wait_peers(n->ep, PEER_WAIT_NS);
	if (!err && dsm_region_failed(n->region, NULL, NULL, 0))
		err = -EIO;
	if (err) {
		fprintf(stderr, "rackvm node %u: peers not connected after %llu s: %s\n", n->o.id,
			(unsigned long long)(PEER_WAIT_NS / NSEC_PER_SEC), strerror(-err));
		goto out_region;
	}
	if (n->o.id != 0) {
		err = clink_clock_offset(n->link, 0, 16, &n->clock_off, &n->clock_bound);
		if (!err) {
			n->clock_measured = true;
			pr_info("clock offset to node 0: %+lld ns, +- %llu ns", (long long)n->clock_off,
				(unsigned long long)n->clock_bound);
		}
	}

	memset(&vc, 0, sizeof(vc));
	vc.accel = accel->name;
	vc.n_vcpus = n->o.vcpus;
	vc.ram_size = n->o.mem;
	vc.region = n->region;
	vc.node_of = n->node_of;
	vc.self = n->o.id;
	vc.io_node = n->o.io_node;
	vc.n_nodes = n->o.n_members;
	vc.node_mem_base = n->mem_base;
	vc.node_mem_size = n->mem_size;
	clink_hooks(n->link, &hooks);
	vc.hooks = &hooks;
	vc.kernel = n->o.kernel;
	vc.cmdline = n->o.cmdline;
	vc.initrd = n->o.initrd;
	vc.modules = n->o.modules;
	vc.n_modules = n->o.n_modules;
	vc.strict_io = n->o.strict_io;
	vc.console_fd = 1;
	/* the UART lives on the io node; elsewhere stdin is not read */
	vc.console_input = n->o.console_input && n->o.id == n->o.io_node;
	vc.verbose = n->o.verbose;
	err = vm_create(&vc, &vm);
	if (err) {
		/* tell the others at once (they wait at the start barrier), then leave with them */
		char gave_up[96];

		snprintf(gave_up, sizeof(gave_up), "node %u could not create its VM", n->o.id);
		clink_exit_broadcast(n->link, 1, true, gave_up);
		if (clink_flush(n->link, 5 * NSEC_PER_SEC))
			pr_warn("some peer did not acknowledge that this node gave up");
		goto out_region;
	}
	atomic_store(&n->vm, vm);
	ops = (struct clink_ops){ vm, ops_io, ops_irq, ops_logical, ops_exit, ops_eoi };
	clink_set_ops(n->link, &ops);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = node_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	err = clink_ready_wait(n->link, READY_WAIT_NS);
	if (err) {
		fprintf(stderr, "rackvm node %u: the other nodes' VMs did not come up: %s\n", n->o.id, strerror(-err));
		vm_stop(vm, 1);
	} else {
		err = vm_start(vm);
		if (err) {
			fprintf(stderr, "rackvm node %u: cannot start the vCPUs: %s\n", n->o.id, strerror(-err));
			vm_stop(vm, 1);
		}
	}
	code = vm_wait(vm);
	atomic_store(&n->guest_done, true);
	/* our EXIT (vm_wait sent it unless the exit came from a peer) must reach everyone before we leave */
	if (clink_flush(n->link, 5 * NSEC_PER_SEC))
		pr_warn("some peer did not acknowledge the guest's exit");
	snprintf(res, sizeof(res), "exit status %d", code);
	node_summary(n, res);
	clink_set_ops(n->link, NULL);
	atomic_store(&n->vm, NULL);
	vm_destroy(vm);
out_region:
	dsm_region_destroy(n->region);
	n->region = NULL;
	ic_endpoint_unsubscribe(n->ep, n->link_sub);
out_ep:
	ic_endpoint_destroy(n->ep);
	n->ep = NULL;
out_link:
	clink_destroy(n->link);
	n->link = NULL;
out_home:
	free(home);
	return code;
}

int rackvm_cmd_node(int argc, char **argv)
{
	struct node *n = calloc(1, sizeof(*n));
	char tag[32];
	int err, code;

	if (!n) {
		fprintf(stderr, "rackvm node: out of memory\n");
		return 1;
	}
	err = node_parse(argc, argv, &n->o);
	if (err) {
		free(n);
		return err > 0 ? 0 : 2;
	}
	snprintf(tag, sizeof(tag), "node%u", n->o.id);
	log_set_tag(tag);
	if (n->o.verbose)
		log_set_level(LOG_DEBUG);
	the_node = n;
	code = node_run(n);
	the_node = NULL;
	free(n);
	return code;
}
