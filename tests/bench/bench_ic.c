/* SPDX-License-Identifier: MIT */
/*
 * bench_ic — round-trip latency of the interconnect against a raw socket baseline measured in the same run.
 *
 * For 64 B and 4 KiB payloads, p50 and p99 round trips of:
 *   raw   a TCP_NODELAY socket ping-pong of the same payload size between two processes (the baseline);
 *   raw+ep the same, but each end waits in epoll_wait before every read, as any event loop does: the share of
 *          the gap that comes from having an event loop at all, rather than from the transport's own work;
 *   tcp   the tcp transport between the same two processes (echo by the child's I/O thread), default config:
 *          each side's I/O thread blocks in ic_poll as soon as nothing is readable;
 *   tcp+bp the same with busy_poll_us = BENCH_IC_BUSY_US (default 50) on both sides: after traffic each side
 *          polls without sleeping for up to that long before it blocks (a second pair of transports);
 *   loop  the loop transport between two threads of this process (in-process, for reference);
 *   fab/lp the fabric wrapping loop with a perfect link: what the wrapper itself costs;
 *   fab100 the same with 100 us one-way latency: how precisely sub-millisecond delays are applied.
 * raw, tcp, tcp+bp and raw+ep run in alternating blocks, back to back, so all see the same machine load; the ratios
 * to raw and to raw+ep are printed per size (target tcp/raw <= 1.15). The raw baselines always block in read or
 * epoll_wait. Run time is bounded by BENCH_IC_ROUNDS (default 8000 round trips per block, 5 blocks per size and
 * kind).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "interconnect/ic.h"
#include "util/clock.h"
#include "util/hist.h"
#include "util/log.h"

#define T_PING 0x20
#define BLOCKS 5
#define WARMUP 500

static const uint8_t key[32] = "bench-key-0123456789abcdefghijkl";
static const size_t sizes[] = { 64, 4096 };

static void die_errno(const char *what)
{
	die("%s: %s", what, strerror(errno));
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || getsockname(fd, (struct sockaddr *)&a, &len))
		die_errno("free port");
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int read_full(int fd, void *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = read(fd, (char *)buf + off, len - off);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return -1;
		}
		off += (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = write(fd, (const char *)buf + off, len - off);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return -1;
		}
		off += (size_t)n;
	}
	return 0;
}

#define RAW_EPOLL 0x80000000u   /* in the block prefix: wait in epoll_wait before every read */

/* Block in epoll_wait until fd is readable, as an event loop does before each read. */
static void epoll_wait_readable(int epfd)
{
	struct epoll_event ev;

	while (epoll_wait(epfd, &ev, 1, -1) < 0 && errno == EINTR)
		;
}

static int epoll_for(int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
	int epfd = epoll_create1(0);

	if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev))
		die_errno("epoll");
	return epfd;
}

/* ---- an endpoint that echoes every frame back (child process for tcp, thread for loop) ---- */

struct echo {
	struct ic_transport *t;
	_Atomic bool stop;
};

static void echo_on_frame(void *opaque, uint32_t src, const struct ic_frame *f)
{
	struct echo *e = opaque;
	struct iovec iov = { (void *)f->payload, f->len };

	while (ic_send(e->t, src, f->type, 0, &iov, 1) == -ENOBUFS)
		;
}

static uint32_t busy_us = 50;

static struct ic_config node_cfg(uint32_t self, const char *listen, struct ic_peer_addr *peer, ic_frame_fn fn,
				 void *opaque)
{
	struct ic_config cfg = { 0 };

	cfg.self = self;
	cfg.listen = listen;
	cfg.peers = peer;
	cfg.n_peers = 1;
	cfg.key = key;
	cfg.key_len = sizeof(key);
	cfg.dead_ms = 5000;
	ic_accept_type(&cfg, T_PING);
	cfg.on_frame = fn;
	cfg.opaque = opaque;
	return cfg;
}

static void *echo_thread(void *arg)
{
	struct echo *e = arg;

	while (!atomic_load(&e->stop))
		ic_poll(e->t, 50);
	return NULL;
}

struct raw_echo_arg {
	int lfd;
};

static void *raw_echo_thread(void *arg)
{
	struct raw_echo_arg *a = arg;
	static uint8_t buf[65536];
	uint32_t len;
	int fd = accept(a->lfd, NULL, NULL), epfd;
	bool ep;

	if (fd < 0)
		return NULL;
	set_nodelay(fd);
	epfd = epoll_for(fd);
	/* each block: a 4-byte prefix (payload length, RAW_EPOLL flag) from the parent, then payloads of that length */
	while (!read_full(fd, &len, 4)) {
		ep = len & RAW_EPOLL;
		len &= ~RAW_EPOLL;
		if (len > sizeof(buf))
			break;
		for (;;) {
			if (ep)
				epoll_wait_readable(epfd);
			if (read_full(fd, buf, len))
				goto out;
			if (write_full(fd, buf, len))
				goto out;
			if (len >= 4 && !memcmp(buf, "STOP", 4))
				break;
		}
	}
out:
	close(epfd);
	close(fd);
	return NULL;
}

static noreturn void child_main(int raw_lfd, const int ports_child[2], const int ports_parent[2])
{
	struct ic_peer_addr peer = { .id = 0 }, peer_bp = { .id = 0 };
	char listen[64], listen_bp[64];
	static struct echo e, e_bp;
	struct raw_echo_arg ra = { raw_lfd };
	pthread_t th, th_bp;
	struct ic_config cfg;

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	log_set_tag("bench_ic-echo");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", ports_child[0]);
	snprintf(peer.addr, sizeof(peer.addr), "127.0.0.1:%d", ports_parent[0]);
	cfg = node_cfg(1, listen, &peer, echo_on_frame, &e);
	if (ic_create("tcp", &cfg, &e.t))
		_exit(2);
	snprintf(listen_bp, sizeof(listen_bp), "127.0.0.1:%d", ports_child[1]);
	snprintf(peer_bp.addr, sizeof(peer_bp.addr), "127.0.0.1:%d", ports_parent[1]);
	cfg = node_cfg(1, listen_bp, &peer_bp, echo_on_frame, &e_bp);
	cfg.busy_poll_us = busy_us;
	if (ic_create("tcp", &cfg, &e_bp.t))
		_exit(2);
	pthread_create(&th, NULL, raw_echo_thread, &ra);
	pthread_create(&th_bp, NULL, echo_thread, &e_bp);
	for (;;)
		ic_poll(e.t, -1);
}

/* ---- the measuring side ---- */

struct pinger {
	struct ic_transport *t;
	bool got;
};

static void ping_on_frame(void *opaque, uint32_t src, const struct ic_frame *f)
{
	((struct pinger *)opaque)->got = true;
}

static void wait_up(struct ic_transport *t, uint32_t peer)
{
	uint64_t end = clock_now_ns() + 10 * NSEC_PER_SEC;

	while (!ic_peer_is_up(t, peer)) {
		if (clock_now_ns() > end)
			die("peer %u did not come up", peer);
		ic_poll(t, 10);
	}
}

static void ic_rounds(struct pinger *p, uint32_t dst, size_t size, int rounds, struct hist *h)
{
	static uint8_t buf[4096];
	struct iovec iov = { buf, size };

	for (int i = 0; i < rounds; i++) {
		uint64_t t0 = clock_now_ns();

		p->got = false;
		while (ic_send(p->t, dst, T_PING, 0, &iov, 1) == -ENOBUFS)
			ic_poll(p->t, 0);
		while (!p->got) {
			if (ic_poll(p->t, 100) < 0)
				die("ic_poll failed");
			if (!p->got && clock_now_ns() - t0 > 2 * NSEC_PER_SEC)
				break;
		}
		if (!p->got) {
			/* lost with its connection (nothing is buffered across a reconnect): say so, send it again */
			struct ic_stats st;

			ic_get_stats(p->t, &st);
			fprintf(stderr, "bench_ic: no reply within 2 s (connects %llu, disconnects %llu); resending\n",
				(unsigned long long)st.connects, (unsigned long long)st.disconnects);
			wait_up(p->t, dst);
			i--;
			continue;
		}
		if (h)
			hist_record(h, clock_now_ns() - t0);
	}
}

/* epfd >= 0: both ends wait in epoll_wait before each read (the "raw+ep" baseline) */
static void raw_rounds(int fd, int epfd, size_t size, int rounds, struct hist *h)
{
	static uint8_t buf[4096];
	uint32_t len = (uint32_t)size | (epfd >= 0 ? RAW_EPOLL : 0);

	memset(buf, 0xab, sizeof(buf));
	if (write_full(fd, &len, 4))
		die_errno("raw write");
	for (int i = 0; i < rounds; i++) {
		uint64_t t0 = clock_now_ns();

		if (write_full(fd, buf, size))
			die_errno("raw ping");
		if (epfd >= 0)
			epoll_wait_readable(epfd);
		if (read_full(fd, buf, size))
			die_errno("raw ping");
		if (h)
			hist_record(h, clock_now_ns() - t0);
	}
	memcpy(buf, "STOP", 4);
	if (write_full(fd, buf, size))
		die_errno("raw stop");
	if (epfd >= 0)
		epoll_wait_readable(epfd);
	if (read_full(fd, buf, size))
		die_errno("raw stop");
}

static void print_row(size_t size, const char *kind, const struct hist *h)
{
	printf("  %5zu B  %-6s  p50 %7.1f us  p99 %7.1f us  (%llu round trips)\n", size, kind,
	       (double)hist_quantile(h, 0.5) / 1e3, (double)hist_quantile(h, 0.99) / 1e3,
	       (unsigned long long)h->count);
}

static void print_ratio(size_t size, const char *what, const struct hist *a, const struct hist *b, const char *note)
{
	printf("  %5zu B  ratio %s: p50 %.2f  p99 %.2f  %s\n", size, what,
	       (double)hist_quantile(a, 0.5) / (double)hist_quantile(b, 0.5),
	       (double)hist_quantile(a, 0.99) / (double)hist_quantile(b, 0.99), note);
}

int main(void)
{
	int rounds = getenv("BENCH_IC_ROUNDS") ? atoi(getenv("BENCH_IC_ROUNDS")) : 8000;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int lfd, fd, epfd, ports_child[2], ports_parent[2], status;
	struct ic_peer_addr peer = { .id = 1 }, peer_bp = { .id = 1 };
	struct pinger p = { 0 }, pbp = { 0 };
	struct ic_config cfg;
	char listen_addr[64];
	uint64_t start = clock_now_ns();
	pid_t pid;

	log_set_tag("bench_ic");
	if (rounds < 100)
		rounds = 100;
	if (getenv("BENCH_IC_BUSY_US"))
		busy_us = (uint32_t)atoi(getenv("BENCH_IC_BUSY_US"));
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen))
		die_errno("raw listen");
	for (int i = 0; i < 2; i++) {
		ports_child[i] = free_port();
		ports_parent[i] = free_port();
	}
	pid = fork();
	if (pid < 0)
		die_errno("fork");
	if (pid == 0)
		child_main(lfd, ports_child, ports_parent);
	close(lfd);

	/* raw connection */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
		die_errno("raw connect");
	set_nodelay(fd);
	epfd = epoll_for(fd);

	/* tcp transport, node 0 dials node 1 (the child) */
	snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", ports_parent[0]);
	snprintf(peer.addr, sizeof(peer.addr), "127.0.0.1:%d", ports_child[0]);
	cfg = node_cfg(0, listen_addr, &peer, ping_on_frame, &p);
	if (ic_create("tcp", &cfg, &p.t))
		die("cannot create the tcp transport");
	snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", ports_parent[1]);
	snprintf(peer_bp.addr, sizeof(peer_bp.addr), "127.0.0.1:%d", ports_child[1]);
	cfg = node_cfg(0, listen_addr, &peer_bp, ping_on_frame, &pbp);
	cfg.busy_poll_us = busy_us;
	if (ic_create("tcp", &cfg, &pbp.t))
		die("cannot create the busy-polling tcp transport");
	wait_up(p.t, 1);
	wait_up(pbp.t, 1);

	printf("bench_ic: round trips; raw socket (blocking, and with epoll) and tcp transport (default, and busy poll "
	       "%u us) between 2 processes (alternating blocks of %d), loop and fabric(loop) between 2 threads\n",
	       busy_us, rounds);
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		struct hist raw, rawep, tcp, tcpbp;

		hist_init(&raw);
		hist_init(&rawep);
		hist_init(&tcp);
		hist_init(&tcpbp);
		raw_rounds(fd, -1, sizes[s], WARMUP, NULL);
		raw_rounds(fd, epfd, sizes[s], WARMUP, NULL);
		ic_rounds(&p, 1, sizes[s], WARMUP, NULL);
		ic_rounds(&pbp, 1, sizes[s], WARMUP, NULL);
		for (int b = 0; b < BLOCKS; b++) {
			raw_rounds(fd, -1, sizes[s], rounds, &raw);
			ic_rounds(&p, 1, sizes[s], rounds, &tcp);
			ic_rounds(&pbp, 1, sizes[s], rounds, &tcpbp);
			raw_rounds(fd, epfd, sizes[s], rounds, &rawep);
		}
		print_row(sizes[s], "raw", &raw);
		print_row(sizes[s], "raw+ep", &rawep);
		print_row(sizes[s], "tcp", &tcp);
		print_row(sizes[s], "tcp+bp", &tcpbp);
		print_ratio(sizes[s], "tcp/raw", &tcp, &raw, "(target <= 1.15)");
		print_ratio(sizes[s], "tcp/raw+ep", &tcp, &rawep, "(what the transport adds beyond an event loop)");
		print_ratio(sizes[s], "tcp+bp/raw", &tcpbp, &raw, "(busy poll; raw still blocks)");
		print_ratio(sizes[s], "tcp+bp/raw+ep", &tcpbp, &rawep, "");
	}
	ic_destroy(p.t);
	ic_destroy(pbp.t);
	close(epfd);
	close(fd);
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);

	/* loop transport, bare and wrapped by the fabric with a perfect link (the wrapper's own cost): two threads */
	for (int wrapped = 0; wrapped < 3; wrapped++) {
		struct ic_peer_addr lp0 = { .id = 1, .addr = "bench/1" }, lp1 = { .id = 0, .addr = "bench/0" };
		const char *name = wrapped ? "fabric" : "loop";
		struct echo e = { 0 };
		struct pinger lp = { 0 };
		struct ic_config c0 = node_cfg(0, "bench/0", &lp0, ping_on_frame, &lp);
		struct ic_config c1 = node_cfg(1, "bench/1", &lp1, echo_on_frame, &e);
		pthread_t th;

		c0.inner = c1.inner = "loop";
		if (wrapped == 2)   /* 100 us one way: the round trip should be ~200 us + loop (timer precision) */
			c0.link.latency_us = c1.link.latency_us = 100;
		if (ic_create(name, &c0, &lp.t) || ic_create(name, &c1, &e.t))
			die("cannot create the %s transport", name);
		pthread_create(&th, NULL, echo_thread, &e);
		wait_up(lp.t, 1);
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			struct hist h;

			hist_init(&h);
			ic_rounds(&lp, 1, sizes[s], WARMUP, NULL);
			ic_rounds(&lp, 1, sizes[s], wrapped == 2 ? rounds / 8 : rounds * BLOCKS, &h);
			print_row(sizes[s], wrapped == 2 ? "fab100" : wrapped ? "fab/lp" : "loop", &h);
		}
		atomic_store(&e.stop, true);
		ic_wake(e.t);
		pthread_join(th, NULL);
		ic_destroy(lp.t);
		ic_destroy(e.t);
	}
	printf("bench_ic: done in %.1f s\n", (double)(clock_now_ns() - start) / 1e9);
	return 0;
}
