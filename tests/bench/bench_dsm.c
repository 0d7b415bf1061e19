/* SPDX-License-Identifier: MIT */
/*
 * bench_dsm: the DSM region over tcp on loopback, each number next to a raw floor measured in the same run.
 *
 * Floor = the least any userfaultfd DSM can do per remote fault, with the same processes and threads as ours:
 * a worker thread faults, a fault thread reads the userfaultfd and writes a 16-byte request on a TCP socket, the
 * other process's I/O thread answers with a 16-byte header + 4 KiB, our I/O thread UFFDIO_COPYs it (waking the
 * worker). No protocol, no MAC, no engine, no locks.
 *
 * Ours = dsm_node-like child processes (one per node, forked) driven through pipes by this process:
 *   read      remote read fault: page current in the home store (the floor's work), page Modified at its home
 *             (the home write-protects its own copy first), never-written page (granted without data)
 *   scan      sequential read of remote pages, pages/s
 *   upgrade   write to a Shared page with k other sharers (k = 0, 1, 3; 5 nodes, home not a sharer)
 *   pingpong  two nodes alternately increment a word on one page (read then write), handoffs/s, per lease
 *   counter   2 nodes x 2 threads lock-add one word for 300 ms, increments/s and page moves/s, per lease
 *
 *   bench_dsm [--pages N] [--rounds R] [--busy] [--only primitives|read|upgrade|lease]
 * --busy runs a spinning process for the whole benchmark (the "other core busy" case).
 */
#include <errno.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsm/region.h"
#include "../unit/region_net.h"
#include "dsm/uffd.h"
#include "util/clock.h"
#include "util/hist.h"
#include "util/log.h"

#define PG 4096u
#define MAXN 5
#define SMP_MAX 4096u   /* raw per-fault samples kept for exact medians (the histogram's buckets are ~6% wide) */

static unsigned n_pages_bench = 1000;
static unsigned rounds = 2;
static unsigned port_next;

/* ---- helpers ---- */
struct samples {
	uint32_t n;
	uint32_t ns[SMP_MAX];
};

static void samples_add(struct samples *s, uint64_t ns)
{
	if (s->n < SMP_MAX)
		s->ns[s->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int dbl_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Exact median of the raw samples (sorted in place), ns. */
static double samples_median(struct samples *s)
{
	if (!s->n)
		return 0;
	qsort(s->ns, s->n, sizeof(s->ns[0]), u32_cmp);
	return s->n % 2 ? s->ns[s->n / 2] : 0.5 * ((double)s->ns[s->n / 2 - 1] + (double)s->ns[s->n / 2]);
}

static double dbl_median(double *v, unsigned n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(v[0]), dbl_cmp);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int full_read(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int full_write(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static uint64_t rusage_ns(const struct rusage *ru)
{
	return (uint64_t)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * NSEC_PER_SEC +
	       (uint64_t)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) * NSEC_PER_USEC;
}

static uint64_t cpu_self_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return rusage_ns(&ru);
}

static double us(uint64_t ns)
{
	return (double)ns / 1e3;
}

/* ---- floor ---- */
struct floor_hdr {
	uint64_t page;
	uint64_t len;
};

struct floor_client {
	struct dsm_uffd *u;
	int sock;
	int stop_efd[2];
	atomic_bool stop;
};

static void *floor_fault_main(void *arg)
{
	struct floor_client *c = arg;
	struct dsm_uffd_fault f[16];
	struct pollfd p[2] = { { .fd = dsm_uffd_fd(c->u), .events = POLLIN }, { .fd = c->stop_efd[0], .events = POLLIN } };

	for (;;) {
		int n;

		poll(p, 2, -1);
		if (p[1].revents)
			return NULL;
		n = dsm_uffd_read_faults(c->u, f, 16);
		for (int i = 0; i < n; i++) {
			struct floor_hdr req = { f[i].page, 0 };

			if (full_write(c->sock, &req, sizeof(req)))
				return NULL;
		}
	}
}

static void *floor_io_main(void *arg)
{
	struct floor_client *c = arg;
	static uint8_t buf[PG];

	for (;;) {
		struct floor_hdr h;

		if (full_read(c->sock, &h, sizeof(h)) || h.page == UINT64_MAX)
			return NULL;
		if (h.len && full_read(c->sock, buf, h.len))
			return NULL;
		if (h.len)
			dsm_uffd_copy(c->u, h.page, buf, true);
		else
			dsm_uffd_zero(c->u, h.page, true);
	}
}

static void floor_server(int sock, uint64_t reply_len)
{
	static uint8_t page[PG];
	struct floor_hdr req;

	memset(page, 0x5a, sizeof(page));
	while (!full_read(sock, &req, sizeof(req))) {
		struct floor_hdr h = { req.page, reply_len };
		struct iovec iov[2] = { { &h, sizeof(h) }, { page, reply_len } };

		if (req.page == UINT64_MAX) {
			(void)!write(sock, &req, sizeof(req));
			break;
		}
		if (writev(sock, iov, reply_len ? 2 : 1) < 0)
			break;
	}
	_exit(0);
}

static int tcp_pair(int *client, pid_t *server_pid, uint64_t reply_len)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0), s;
	pid_t pid;

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &alen))
		return -1;
	pid = fork();
	if (pid == 0) {
		s = accept(l, NULL, NULL);
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		floor_server(s, reply_len);
	}
	close(l);
	s = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*client = s;
	*server_pid = pid;
	return 0;
}

/* A floor client and its server process, kept open so its faults can be interleaved with the DSM's. */
struct floor {
	struct floor_client c;
	pthread_t fth, ioth;
	pid_t srv;
	uint64_t cpu0;
};

static void floor_open(struct floor *fl, unsigned n, uint64_t reply_len)
{
	memset(fl, 0, sizeof(*fl));
	fl->cpu0 = cpu_self_ns();
	if (dsm_uffd_create((size_t)n * PG, &fl->c.u) || tcp_pair(&fl->c.sock, &fl->srv, reply_len) ||
	    pipe(fl->c.stop_efd))
		die("floor setup failed");
	pthread_create(&fl->fth, NULL, floor_fault_main, &fl->c);
	pthread_create(&fl->ioth, NULL, floor_io_main, &fl->c);
}

/* Fault pages [a, b) one after the other: per-fault latency into h and s; elapsed time returned. */
static uint64_t floor_touch(struct floor *fl, unsigned a, unsigned b, struct hist *h, struct samples *s)
{
	uint64_t t_start = clock_now_ns();

	for (unsigned p = a; p < b; p++) {
		volatile uint8_t *pb = (volatile uint8_t *)dsm_uffd_base(fl->c.u) + (size_t)p * PG;
		uint64_t t0 = clock_now_ns();

		(void)*pb;
		t0 = clock_now_ns() - t0;
		hist_record(h, t0);
		if (s)
			samples_add(s, t0);
	}
	return clock_now_ns() - t_start;
}

/* Returns the CPU time of both processes since floor_open (includes the other threads of this process). */
static uint64_t floor_close(struct floor *fl)
{
	struct floor_hdr bye = { UINT64_MAX, 0 };
	struct rusage srv_ru;
	uint64_t cpu;

	(void)!write(fl->c.stop_efd[1], "x", 1);
	pthread_join(fl->fth, NULL);
	full_write(fl->c.sock, &bye, sizeof(bye));
	pthread_join(fl->ioth, NULL);
	close(fl->c.sock);
	wait4(fl->srv, NULL, 0, &srv_ru);
	cpu = cpu_self_ns() - fl->cpu0 + rusage_ns(&srv_ru);
	close(fl->c.stop_efd[0]);
	close(fl->c.stop_efd[1]);
	dsm_uffd_destroy(fl->c.u);
	return cpu;
}

/* Fault n pages one after the other; per-fault latency into h, total time returned. */
static uint64_t floor_cpu_ns;   /* CPU time (both processes) of the last floor_run */

static uint64_t floor_run(unsigned n, uint64_t reply_len, struct hist *h)
{
	struct floor fl;
	uint64_t total;

	hist_init(h);
	floor_open(&fl, n, reply_len);
	total = floor_touch(&fl, 0, n, h, NULL);
	floor_cpu_ns = floor_close(&fl);
	return total;
}

/* ---- DSM nodes driven through pipes ---- */
enum op { OP_QUIT, OP_WRITE, OP_READ, OP_READ_TIMED, OP_WRITE_TIMED, OP_SCAN, OP_PINGPONG, OP_COUNTER, OP_NOP };

struct cmd {
	enum op op;
	uint64_t a, b, arg;
};

struct reply {
	int err;
	uint64_t ns, count;
	uint64_t cpu_ns;        /* this node process's CPU time (user + system, all threads) so far */
	struct hist h;
	struct samples smp;     /* raw latencies of a timed op */
	struct dsm_region_stats st;
};

struct node_proc {
	pid_t pid;
	int cmd_w, rep_r;
};

struct cluster {
	unsigned n;
	struct node_proc nd[MAXN];
};

static const uint8_t bench_key[32] = "bench_dsm loopback cluster key!";
static uint8_t *nbase;

/* Counter threads of all nodes start at one CLOCK_MONOTONIC instant (one host) and stop after a fixed time. */
struct ctr_arg {
	uint64_t *w;
	uint64_t start, end;
	uint64_t done;
};

static void *ctr_main(void *arg)
{
	struct ctr_arg *a = arg;
	uint64_t n = 0;

	while (clock_now_ns() < a->start)
		sched_yield();
	while (clock_now_ns() < a->end) {
		for (int i = 0; i < 64; i++)
			__atomic_fetch_add(a->w, 1, __ATOMIC_SEQ_CST);
		n += 64;
	}
	__atomic_fetch_add(&a->done, n, __ATOMIC_RELAXED);
	return NULL;
}

static void node_exec(struct dsm_region *r, const struct cmd *c, struct reply *rep)
{
	uint64_t t0 = clock_now_ns();

	hist_init(&rep->h);
	rep->smp.n = 0;
	rep->count = 0;
	switch (c->op) {
	case OP_WRITE:
		for (uint64_t p = c->a; p < c->b; p++)
			memset(nbase + p * PG, (int)(p | 1), PG);
		break;
	case OP_READ:
	case OP_SCAN:
		for (uint64_t p = c->a; p < c->b; p++)
			(void)*(volatile uint8_t *)(nbase + p * PG);
		break;
	case OP_READ_TIMED:
	case OP_WRITE_TIMED:
		for (uint64_t p = c->a; p < c->b; p++) {
			volatile uint8_t *b = nbase + p * PG;
			uint64_t t = clock_now_ns();

			if (c->op == OP_READ_TIMED)
				(void)*b;
			else
				*b = 7;
			t = clock_now_ns() - t;
			hist_record(&rep->h, t);
			samples_add(&rep->smp, t);
		}
		break;
	case OP_PINGPONG: {
		uint64_t *w = (uint64_t *)(nbase + c->a * PG);
		uint64_t parity = c->arg & 1, end = 2 * c->b;

		for (;;) {
			uint64_t v = __atomic_load_n(w, __ATOMIC_ACQUIRE);

			if (v >= end)
				break;
			if ((v & 1) == parity) {
				__atomic_store_n(w, v + 1, __ATOMIC_RELEASE);
				rep->count++;
			} else {
				sched_yield();   /* 2 cores: leave the CPU to the fault and I/O threads */
			}
		}
		break;
	}
	case OP_COUNTER: {   /* a: page, b: start time, arg: duration ns; 2 threads */
		pthread_t th[2];
		struct ctr_arg a = { (uint64_t *)(nbase + c->a * PG), c->b, c->b + c->arg, 0 };

		for (unsigned i = 0; i < 2; i++)
			pthread_create(&th[i], NULL, ctr_main, &a);
		for (unsigned i = 0; i < 2; i++)
			pthread_join(th[i], NULL);
		rep->count = a.done;
		break;
	}
	case OP_QUIT:
	case OP_NOP:
		break;
	}
	rep->ns = clock_now_ns() - t0;
	rep->cpu_ns = cpu_self_ns();
	dsm_region_get_stats(r, &rep->st);
}

static void node_child(unsigned id, unsigned n, unsigned port, uint64_t lease_ns, int cmd_r, int rep_w)
{
	struct ic_peer_addr m[MAXN];
	size_t np = (size_t)n_pages_bench * 4 + 16;
	uint32_t *homes = calloc(np, sizeof(*homes));   /* every page homed on node 0 */
	struct dsm_region_config cfg = { .self = id, .size = np * PG, .home_map = homes, .lease_ns = lease_ns };
	static const struct region_net_opts tcp = { .transport = "tcp" };
	struct ic_endpoint *ep = NULL;
	struct dsm_region *r;
	static struct reply rep;
	struct cmd c;
	char tag[16];

	snprintf(tag, sizeof(tag), "bench%u", id);
	log_set_tag(tag);
	for (unsigned i = 0; i < n; i++) {
		m[i].id = i;
		snprintf(m[i].addr, sizeof(m[i].addr), "127.0.0.1:%u", port + i);
	}
	memset(&rep, 0, sizeof(rep));
	rep.err = homes ? region_net_create(m, n, &tcp, bench_key, sizeof(bench_key), &cfg, &ep, &r) : -ENOMEM;
	if (!rep.err)
		rep.err = dsm_region_wait_peers(r, 20 * NSEC_PER_SEC);
	full_write(rep_w, &rep, sizeof(rep));
	if (rep.err)
		_exit(3);
	nbase = dsm_region_base(r);
	while (!full_read(cmd_r, &c, sizeof(c))) {
		node_exec(r, &c, &rep);
		if (c.op == OP_QUIT)
			break;
		full_write(rep_w, &rep, sizeof(rep));
	}
	region_net_destroy(ep, r);
	full_write(rep_w, &rep, sizeof(rep));
	free(homes);
	_exit(0);
}

static void cluster_start(struct cluster *cl, unsigned n, uint64_t lease_ns)
{
	unsigned port = port_next;

	port_next += 8;
	cl->n = n;
	for (unsigned i = 0; i < n; i++) {
		int cp[2], rp[2];
		pid_t pid;

		if (pipe(cp) || pipe(rp))
			die("pipe");
		pid = fork();
		if (pid == 0) {
			close(cp[1]);
			close(rp[0]);
			node_child(i, n, port, lease_ns, cp[0], rp[1]);
		}
		close(cp[0]);
		close(rp[1]);
		cl->nd[i] = (struct node_proc){ pid, cp[1], rp[0] };
	}
	for (unsigned i = 0; i < n; i++) {
		static struct reply rep;

		if (full_read(cl->nd[i].rep_r, &rep, sizeof(rep)) || rep.err)
			die("bench node %u did not start (%s)", i, strerror(-rep.err));
	}
}

static void node_send(struct cluster *cl, unsigned i, enum op op, uint64_t a, uint64_t b, uint64_t arg)
{
	struct cmd c = { op, a, b, arg };

	if (full_write(cl->nd[i].cmd_w, &c, sizeof(c)))
		die("node %u gone", i);
}

static void node_wait(struct cluster *cl, unsigned i, struct reply *rep)
{
	if (full_read(cl->nd[i].rep_r, rep, sizeof(*rep)))
		die("node %u gone", i);
}

static void node_do(struct cluster *cl, unsigned i, enum op op, uint64_t a, uint64_t b, uint64_t arg,
		    struct reply *rep)
{
	node_send(cl, i, op, a, b, arg);
	node_wait(cl, i, rep);
}

static void cluster_stop(struct cluster *cl)
{
	static struct reply rep;

	for (unsigned i = 0; i < cl->n; i++)
		node_send(cl, i, OP_QUIT, 0, 0, 0);
	for (unsigned i = 0; i < cl->n; i++) {
		node_wait(cl, i, &rep);
		waitpid(cl->nd[i].pid, NULL, 0);
		close(cl->nd[i].cmd_w);
		close(cl->nd[i].rep_r);
	}
}

/* ---- machine load ---- */
static void cpu_sample(uint64_t *busy, uint64_t *total)
{
	unsigned long long v[10] = { 0 };
	FILE *f = fopen("/proc/stat", "r");

	*busy = *total = 0;
	if (!f)
		return;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
		   &v[7]) == 8) {
		for (int i = 0; i < 8; i++)
			*total += v[i];
		*busy = *total - v[3] - v[4];
	}
	fclose(f);
}

/* ---- benchmarks ---- */
static void print_vs(unsigned r, const char *name, const struct hist *h, const struct hist *floor_h,
		     const char *floor_name)
{
	printf("%-6u %-34s %9.1f %9.1f %12s   %.2fx (%.2fx) vs %s\n", r, name, us(hist_quantile(h, 0.5)),
	       us(hist_quantile(h, 0.99)), "", (double)hist_quantile(h, 0.5) / (double)hist_quantile(floor_h, 0.5),
	       (double)hist_quantile(h, 0.99) / (double)hist_quantile(floor_h, 0.99), floor_name);
}

#define READ_CHUNK 25u    /* faults per alternation between the floor and the DSM */

/* Node 1 reads pages [a, b) timed, in chunks alternating with the same number of floor faults (so both see the
 * same load); samples and histograms accumulate. */
static void read_interleaved(struct cluster *cl, struct floor *fl, uint64_t a, uint64_t b, struct hist *dh,
			     struct samples *ds, struct hist *fh, struct samples *fs, struct reply *last)
{
	hist_init(dh);
	hist_init(fh);
	ds->n = fs->n = 0;
	for (uint64_t c = a; c < b; c += READ_CHUNK) {
		uint64_t e = c + READ_CHUNK < b ? c + READ_CHUNK : b;

		floor_touch(fl, (unsigned)(c - a), (unsigned)(e - a), fh, fs);
		node_do(cl, 1, OP_READ_TIMED, c, e, 0, last);
		hist_merge(dh, &last->h);
		for (uint32_t i = 0; i < last->smp.n; i++)
			samples_add(ds, last->smp.ns[i]);
	}
}

/*
 * 3 nodes, all pages homed on node 0, node 1 measures. Page sets (n pages each):
 *   A [0,n)    written by node 0, then read by node 2: Shared at 0 and 2, home store current. Node 1's read is
 *              one round trip with 4 KiB from the home store — the same work as the floor.
 *   B [n,2n)   written by node 0 and still Modified there: the home must downgrade its own copy first
 *              (UFFDIO_WRITEPROTECT + copy to the home store) — extra page-table work on the home.
 *   C [2n,3n)  never written: granted without data (compare with the no-data floor).
 *   D [3n,4n)  like A, scanned by node 1 (pages/s).
 * A and C alternate with their floor every READ_CHUNK faults (floor and DSM both set up for the whole round), so
 * each ratio compares latencies taken under the same load; the ratio is of exact medians.
 */
static void bench_read(void)
{
	static struct reply ra, rb, rd, tmp;
	static struct samples sa, sc, sf4, sf0;
	static double ratio_a[256], ratio_c[256];
	struct cluster cl;
	struct hist fh, fh0, ha, hc, hcpu;
	struct floor f4, f0;
	uint64_t n = n_pages_bench;
	unsigned nr = 0;

	printf("\n-- remote read fault (3 nodes; pages homed on node 0; node 1 faults one page at a time;\n"
	       "   floor and dsm alternate every %u faults)\n", READ_CHUNK);
	printf("%-6s %-34s %9s %9s %12s   %s\n", "round", "case", "p50 us", "p99 us", "pages/s",
	       "ratio p50 (p99)");
	for (unsigned r = 0; r < rounds; r++) {
		uint64_t fns, home_cpu0, req_cpu0, dsm_cpu, floor_cpu;
		double mf4, mf0, ma, mc, la[3] = { 0, 0, 0 };

		getloadavg(la, 3);
		fns = floor_run((unsigned)n, PG, &hcpu);     /* alone: pages/s and CPU per fault */
		floor_cpu = floor_cpu_ns;
		cluster_start(&cl, 3, 0);
		node_do(&cl, 0, OP_WRITE, 0, 2 * n, 0, &tmp);
		node_do(&cl, 0, OP_WRITE, 3 * n, 4 * n, 0, &tmp);
		node_do(&cl, 2, OP_READ, 0, n, 0, &tmp);
		node_do(&cl, 2, OP_READ, 3 * n, 4 * n, 0, &tmp);
		floor_open(&f4, (unsigned)n, PG);
		floor_open(&f0, (unsigned)n, 0);
		node_do(&cl, 0, OP_NOP, 0, 0, 0, &tmp);
		home_cpu0 = tmp.cpu_ns;
		node_do(&cl, 1, OP_NOP, 0, 0, 0, &tmp);
		req_cpu0 = tmp.cpu_ns;
		read_interleaved(&cl, &f4, 0, n, &ha, &sa, &fh, &sf4, &ra);
		node_do(&cl, 0, OP_NOP, 0, 0, 0, &tmp);
		/* both node processes' CPU over the interleaved phase (the floor ran in another process) */
		dsm_cpu = tmp.cpu_ns - home_cpu0 + ra.cpu_ns - req_cpu0;
		node_do(&cl, 1, OP_SCAN, 3 * n, 4 * n, 0, &rd);
		node_do(&cl, 1, OP_READ_TIMED, n, 2 * n, 0, &rb);
		read_interleaved(&cl, &f0, 2 * n, 3 * n, &hc, &sc, &fh0, &sf0, &tmp);
		cluster_stop(&cl);
		(void)floor_close(&f4);
		(void)floor_close(&f0);
		mf4 = samples_median(&sf4);
		mf0 = samples_median(&sf0);
		ma = samples_median(&sa);
		mc = samples_median(&sc);
		if (nr < 256) {
			ratio_a[nr] = ma / mf4;
			ratio_c[nr] = mc / mf0;
			nr++;
		}

		printf("%-6u %-34s %9.1f %9.1f\n", r, "floor: 4 KiB reply", us(hist_quantile(&fh, 0.5)),
		       us(hist_quantile(&fh, 0.99)));
		print_vs(r, "dsm read, home store current", &ha, &fh, "floor");
		printf("%-6u %-34s %9.1f %9s %12s   %.2fx  (CPU us per fault, both sides)\n", r,
		       "  CPU per fault: dsm / floor", (double)dsm_cpu / 1e3 / (double)n, "",
		       "", (double)dsm_cpu / (double)floor_cpu);
		printf("%-6u %-34s %9.1f %9s %12s   (floor run alone)\n", r, "  CPU per fault: floor",
		       (double)floor_cpu / 1e3 / (double)n, "", "");
		printf("%-6u %-34s %9llu   (requester: engine lock found taken, whole run so far)\n", r,
		       "  lock contended", (unsigned long long)ra.st.lock_contended);
		printf("%-6u %-34s %9llu   (requester: GRANT_ACKs sent in one frame with the next request, so far)\n", r,
		       "  acks paired", (unsigned long long)ra.st.acks_paired);
		printf("%-6u %-34s %9s %9s %12.0f   %.2fx of floor pages/s (floor run alone)\n", r,
		       "dsm scan, home store current", "", "", (double)n / ((double)rd.ns / 1e9),
		       (double)fns / (double)rd.ns);
		print_vs(r, "dsm read, home held it M", &rb.h, &fh, "floor");
		printf("%-6u %-34s %9.1f %9.1f\n", r, "floor: no-data reply", us(hist_quantile(&fh0, 0.5)),
		       us(hist_quantile(&fh0, 0.99)));
		print_vs(r, "dsm read, never written", &hc, &fh0, "no-data floor");
		printf("%-6u exact medians: floor 4 KiB %.1f us, dsm read (home store current) %.1f us = %.2fx; no-data "
		       "floor %.1f us, never written %.1f us = %.2fx; loadavg %.2f\n", r, mf4 / 1e3, ma / 1e3,
		       ma / mf4, mf0 / 1e3, mc / 1e3, mc / mf0, la[0]);
	}
	if (nr) {
		double ma = dbl_median(ratio_a, nr), mc = dbl_median(ratio_c, nr);

		printf("read summary over %u rounds (exact medians): home store current %.2fx floor (median; range "
		       "%.2f-%.2f), never written %.2fx no-data floor (range %.2f-%.2f)\n", nr, ma, ratio_a[0],
		       ratio_a[nr - 1], mc, ratio_c[0], ratio_c[nr - 1]);
	}
}

static void bench_upgrade(void)
{
	static struct reply rep;
	struct cluster cl;
	struct hist fh0;
	uint64_t n = n_pages_bench / 2;
	/* k other sharers: nodes 2.. (node 0 is the home and never touches the pages; node 1 writes) */
	const unsigned ks[] = { 0, 1, 3 };

	printf("\n-- write upgrade S->M (5 nodes; home node 0 holds no copy; node 1 + k sharers read, node 1 writes)\n");
	floor_run((unsigned)n, 0, &fh0);
	printf("floor no-data round trip: p50 %.1f us p99 %.1f us\n", us(hist_quantile(&fh0, 0.5)),
	       us(hist_quantile(&fh0, 0.99)));
	cluster_start(&cl, 5, 0);
	for (unsigned i = 0; i < 3; i++) {
		uint64_t a = i * n, b = a + n;
		unsigned k = ks[i];
		double hops = k ? 2.0 : 1.0;

		node_do(&cl, 1, OP_READ, a, b, 0, &rep);
		for (unsigned s = 0; s < k; s++)
			node_do(&cl, 2 + s, OP_READ, a, b, 0, &rep);
		node_do(&cl, 1, OP_WRITE_TIMED, a, b, 0, &rep);
		printf("upgrade k=%u sharers: p50 %.1f us p99 %.1f us   = %.2fx (%.2fx) of %.0f floor round trip(s)\n", k,
		       us(hist_quantile(&rep.h, 0.5)), us(hist_quantile(&rep.h, 0.99)),
		       (double)hist_quantile(&rep.h, 0.5) / (hops * (double)hist_quantile(&fh0, 0.5)),
		       (double)hist_quantile(&rep.h, 0.99) / (hops * (double)hist_quantile(&fh0, 0.99)), hops);
	}
	cluster_stop(&cl);
}

static void bench_lease(void)
{
	static struct reply ra, rb;
	const uint64_t leases[] = { 1, 20 * NSEC_PER_USEC, 100 * NSEC_PER_USEC, 500 * NSEC_PER_USEC };
	const uint64_t handoffs = 1000, ctr_ns = 300 * NSEC_PER_MSEC;
	struct hist fh;
	struct cluster cl;

	floor_run(n_pages_bench / 2, PG, &fh);
	printf("\n-- lease: two-node write ping-pong (read then write one word; page homed on node 0) and a contended\n"
	       "   counter (2 nodes x 2 threads lock-adding one word for %.0f ms). Floor 4 KiB round trip p50 %.1f us\n"
	       "   = %.0f transfers/s.\n",
	       (double)ctr_ns / 1e6, us(hist_quantile(&fh, 0.5)), 1e9 / (double)hist_quantile(&fh, 0.5));
	printf("%-10s %12s %10s %16s %16s\n", "lease", "handoffs/s", "vs floor", "counter incs/s", "page maps/s");
	for (unsigned i = 0; i < sizeof(leases) / sizeof(leases[0]); i++) {
		double hps, cps, xfer;
		uint64_t start, maps0;

		cluster_start(&cl, 2, leases[i]);
		node_send(&cl, 0, OP_PINGPONG, 1, handoffs, 0);
		node_send(&cl, 1, OP_PINGPONG, 1, handoffs, 1);
		node_wait(&cl, 0, &ra);
		node_wait(&cl, 1, &rb);
		hps = (double)(ra.count + rb.count) / ((double)(ra.ns > rb.ns ? ra.ns : rb.ns) / 1e9);
		maps0 = ra.st.maps + rb.st.maps;
		start = clock_now_ns() + 20 * NSEC_PER_MSEC;
		node_send(&cl, 0, OP_COUNTER, 2, start, ctr_ns);
		node_send(&cl, 1, OP_COUNTER, 2, start, ctr_ns);
		node_wait(&cl, 0, &ra);
		node_wait(&cl, 1, &rb);
		cps = (double)(ra.count + rb.count) / ((double)ctr_ns / 1e9);
		xfer = (double)(ra.st.maps + rb.st.maps - maps0) / ((double)ctr_ns / 1e9);
		cluster_stop(&cl);
		printf("%-7.0f us %12.0f %9.2fx %16.0f %16.0f\n", (double)leases[i] / 1e3, hps,
		       hps / (1e9 / (double)hist_quantile(&fh, 0.5)), cps, xfer);
	}
}

/* What the kernel charges for each primitive on this machine: these bound every protocol path that uses them. */
static void bench_primitives(void)
{
	const unsigned n = n_pages_bench;
	static uint8_t src[PG];
	struct dsm_uffd *u;
	uint64_t t[5];

	if (dsm_uffd_create((size_t)n * PG, &u))
		die("uffd");
	t[0] = clock_now_ns();
	for (unsigned i = 0; i < n; i++)
		dsm_uffd_copy(u, i, src, true);
	t[1] = clock_now_ns();
	for (unsigned i = 0; i < n; i++)
		dsm_uffd_protect(u, i, false);
	for (unsigned i = 0; i < n; i++)      /* written and in the TLB, like a page this node really uses */
		((volatile uint8_t *)dsm_uffd_base(u))[(size_t)i * PG] = 1;
	t[2] = clock_now_ns();
	for (unsigned i = 0; i < n; i++)
		dsm_uffd_protect(u, i, true);
	t[3] = clock_now_ns();
	for (unsigned i = 0; i < n; i++)
		dsm_uffd_zap(u, i);
	t[4] = clock_now_ns();
	dsm_uffd_destroy(u);
	printf("\n-- userfaultfd primitives, per 4 KiB page (single thread, %u pages)\n", n);
	printf("COPY+WP %.1f us   WP clear %.1f us   WP set (page written) %.1f us   zap %.1f us\n", us((t[1] - t[0]) / n),
	       us((t[2] - t[1]) / n), us((t[3] - t[2]) / n), us((t[4] - t[3]) / n));
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "pages", required_argument, NULL, 'p' },
					    { "rounds", required_argument, NULL, 'r' },
					    { "busy", no_argument, NULL, 'b' },
					    { "only", required_argument, NULL, 'o' },
					    { NULL, 0, NULL, 0 } };
	uint64_t b0, t0, b1, t1;
	pid_t spinner = 0;
	bool busy = false;
	const char *only = NULL;
	uint16_t rnd;
	double la[3] = { 0 };
	int c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'p': n_pages_bench = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'r': rounds = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'b': busy = true; break;
		case 'o': only = optarg; break;
		default: die("usage: bench_dsm [--pages N] [--rounds R] [--busy] [--only primitives|read|upgrade|lease]");
		}
	}
	signal(SIGPIPE, SIG_IGN);
	log_set_tag("bench_dsm");
	if (log_get_level() > LOG_WARN && !getenv("RACKVM_LOG"))
		log_set_level(LOG_WARN);
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint16_t)getpid();
	port_next = 20000 + rnd % 30000;
	{
		struct dsm_uffd *probe;

		if (dsm_uffd_create(PG, &probe)) {
			printf("SKIP: userfaultfd with write-protect unavailable\n");
			return 0;
		}
		dsm_uffd_destroy(probe);
	}
	if (busy) {
		spinner = fork();
		if (spinner == 0) {
			/* dies with the benchmark, also when that exits through die() */
			if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() == 1)
				_exit(0);
			for (;;)
				__asm__ __volatile__("" ::: "memory");
		}
	}
	getloadavg(la, 3);
	cpu_sample(&b0, &t0);
	printf("bench_dsm: %u pages per case, %u rounds, %ld CPUs, loadavg %.2f %.2f %.2f, other core: %s\n",
	       n_pages_bench, rounds, sysconf(_SC_NPROCESSORS_ONLN), la[0], la[1], la[2],
	       busy ? "BUSY (spinner running)" : "not loaded by us (see machine busy % below)");
	if (!only || !strcmp(only, "primitives"))
		bench_primitives();
	if (!only || !strcmp(only, "read"))
		bench_read();
	if (!only || !strcmp(only, "upgrade"))
		bench_upgrade();
	if (!only || !strcmp(only, "lease"))
		bench_lease();
	cpu_sample(&b1, &t1);
	if (spinner) {
		kill(spinner, SIGKILL);
		waitpid(spinner, NULL, 0);
	}
	printf("\nmachine CPU busy during the run: %.0f%% of all cores (ours included)\n",
	       t1 > t0 ? 100.0 * (double)(b1 - b0) / (double)(t1 - t0) : 0.0);
	return 0;
}
