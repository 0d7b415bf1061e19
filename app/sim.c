/* SPDX-License-Identifier: MIT */
/*
 * rackvm sim: a whole cluster of node hypervisors on this host, running one guest.
 *
 * It writes a random cluster key (0600, in a private temp dir, unlinked at once: the nodes read it through an
 * inherited descriptor), picks free loopback ports (or, with --netns, puts
 * each node in a network namespace of its own, joined by veth pairs to a bridge in one more namespace, addresses
 * 10.213.S.K+1), and spawns one `rackvm node` per node (fork + exec of /proc/self/exe; each in its own process
 * group so a terminal's Ctrl-C reaches only the sim; PR_SET_PDEATHSIG so none outlives the sim). Latency,
 * bandwidth and loss switch the nodes to the fabric transport over tcp.
 *
 * Output: the io node's stdout (the guest console) goes to our stdout unchanged; every node's stderr (logs and
 * the summary line) goes to our stderr, each line prefixed "[node K] ". At the end the nodes' summary lines are
 * repeated as one table.
 *
 * Ending: when a node exits on its own, the others get a grace period to follow (they learn the guest's exit
 * from the EXIT broadcast); the sim then returns the io node's exit status (the guest's exit code). A node that
 * dies by a signal, a timeout (--timeout), SIGINT, SIGTERM or SIGHUP make the sim kill every node's process group
 * (SIGTERM, then SIGKILL after 2 s), reap them all, say which node died and why, and exit non-zero. The temp dir
 * and every namespace are removed on every path.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "app/commands.h"
#include "app/opts.h"
#include "hypervisor/fw.h"
#include "cluster/placement.h"
#include "util/clock.h"
#include "util/log.h"

#define SIM_MAX_NODES 16
#define GRACE_NS (15 * NSEC_PER_SEC)      /* after one node exited, the others must follow within this */
#define KILL_GRACE_NS (2 * NSEC_PER_SEC)  /* SIGTERM -> SIGKILL */
#define NETNS_PORT 7100

struct sim_opts {
	unsigned nodes, vcpus;
	const char *mem, *kernel, *cmdline, *accel, *placement, *transport, *node_exe;
	const char *latency, *bandwidth, *loss, *seed;
	unsigned io_node;
	bool netns, quiet, console_input, strict_io;
	uint64_t timeout_s;
	const char *initrd;
	const char *modules[FW_MAX_MODULES];
	size_t n_modules;
};

struct sim_node {
	unsigned id;
	pid_t pid;
	int out_fd, err_fd;
	char line[1024];            /* partial stderr line */
	size_t line_len;
	bool reaped, signalled_by_us;
	int status;
	char addr[64];
	char netns[32];
	char summary[512];
	char hot[512];                 /* the node's summary-hot line: its most-faulted pages */
};

struct sim {
	struct sim_opts o;
	char dir[64];
	char key_path[96];              /* /proc/self/fd/N: the key file, already unlinked */
	int key_fd;
	char exe[PATH_MAX];
	char ns_br[32];
	bool ns_br_made;
	unsigned subnet;
	struct sim_node node[SIM_MAX_NODES];
};

/* ---- helpers -------------------------------------------------------------------------------------------- */

static int run_cmd(char *const argv[], bool quiet)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (quiet) {
			int fd = open("/dev/null", O_WRONLY);

			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* `ip ARGS...` (NULL-terminated), with its error output unless quiet. */
static int ip_cmd(bool quiet, ...)
{
	char *argv[24] = { "ip" };
	va_list ap;
	int n = 1;

	va_start(ap, quiet);
	while (n < 23 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	return run_cmd(argv, quiet);
}

/*
 * The cluster key: written (0600) into the private temp dir, opened for reading without O_CLOEXEC, then unlinked
 * with its dir at once. Every node inherits that descriptor and reads the key through /proc/self/fd/N, so no key
 * is left on disk whatever happens to the sim (even SIGKILL).
 */
static int write_key(struct sim *s)
{
	uint8_t key[32];
	char hex[sizeof(key) * 2 + 2];
	char path[96];
	int fd, err = 0;

	if (getrandom(key, sizeof(key), 0) != sizeof(key))
		return -errno;
	for (size_t i = 0; i < sizeof(key); i++)
		snprintf(hex + 2 * i, 3, "%02x", key[i]);
	strcat(hex, "\n");
	snprintf(path, sizeof(path), "%s/cluster.key", s->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, hex, strlen(hex)) != (ssize_t)strlen(hex))
		err = -EIO;
	close(fd);
	memset(key, 0, sizeof(key));
	memset(hex, 0, sizeof(hex));
	s->key_fd = err ? -1 : open(path, O_RDONLY);
	if (!err && s->key_fd < 0)
		err = -errno;
	unlink(path);
	if (!err)
		snprintf(s->key_path, sizeof(s->key_path), "/proc/self/fd/%d", s->key_fd);
	return err;
}

/* A loopback port nobody uses right now (the node binds it a moment later; a collision shows as a bind error of
 * that node). Picked at random below the kernel's ephemeral range (32768+ by default), where the ports other
 * programs get from bind(0)/connect() come from, so a concurrent test cannot take it in between. */
static int free_port(void)
{
	for (int tries = 0; tries < 200; tries++) {
		uint16_t r;
		int fd, port, one = 1;
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = (uint16_t)(getpid() + tries);
		port = 20000 + r % 12000;
		a.sin_port = htons((uint16_t)port);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
			close(fd);
			return port;
		}
		close(fd);
	}
	return -EADDRINUSE;
}

/* ---- network namespaces --------------------------------------------------------------------------------- */

static void netns_cleanup(struct sim *s)
{
	for (unsigned k = 0; k < s->o.nodes; k++) {
		if (s->node[k].netns[0]) {
			ip_cmd(true, "netns", "del", s->node[k].netns, NULL);
			s->node[k].netns[0] = 0;
		}
	}
	if (s->ns_br_made) {
		ip_cmd(true, "netns", "del", s->ns_br, NULL);
		s->ns_br_made = false;
	}
}

static int netns_setup(struct sim *s)
{
	int pid = (int)getpid();

	s->subnet = (unsigned)pid % 250 + 1;
	snprintf(s->ns_br, sizeof(s->ns_br), "rkvm%d-br", pid);
	if (ip_cmd(false, "netns", "add", s->ns_br, NULL))
		return -EPERM;
	s->ns_br_made = true;
	if (ip_cmd(false, "-n", s->ns_br, "link", "add", "br0", "type", "bridge", NULL) ||
	    ip_cmd(false, "-n", s->ns_br, "link", "set", "br0", "up", NULL))
		goto fail;
	for (unsigned k = 0; k < s->o.nodes; k++) {
		struct sim_node *n = &s->node[k];
		char veth[16], cidr[32];

		snprintf(n->netns, sizeof(n->netns), "rkvm%d-%u", pid, k);
		if (ip_cmd(false, "netns", "add", n->netns, NULL)) {
			n->netns[0] = 0;
			goto fail;
		}
		snprintf(veth, sizeof(veth), "v%u", k);
		snprintf(cidr, sizeof(cidr), "10.213.%u.%u/24", s->subnet, k + 1);
		snprintf(n->addr, sizeof(n->addr), "10.213.%u.%u:%d", s->subnet, k + 1, NETNS_PORT);
		if (ip_cmd(false, "-n", n->netns, "link", "set", "lo", "up", NULL) ||
		    ip_cmd(false, "-n", n->netns, "link", "add", "eth0", "type", "veth", "peer", "name", veth, "netns",
			   s->ns_br, NULL) ||
		    ip_cmd(false, "-n", s->ns_br, "link", "set", veth, "master", "br0", "up", NULL) ||
		    ip_cmd(false, "-n", n->netns, "addr", "add", cidr, "dev", "eth0", NULL) ||
		    ip_cmd(false, "-n", n->netns, "link", "set", "eth0", "up", NULL))
			goto fail;
	}
	return 0;
fail:
	netns_cleanup(s);
	return -EIO;
}

/* ---- nodes ---------------------------------------------------------------------------------------------- */

static void child_exec(struct sim *s, struct sim_node *n, char **argv, int out_w, int err_w, pid_t parent)
{
	sigset_t all;
	int fd;

	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	if (n->netns[0]) {
		char path[64];

		snprintf(path, sizeof(path), "/run/netns/%s", n->netns);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
			dprintf(err_w, "cannot enter network namespace %s: %s\n", n->netns, strerror(errno));
			_exit(1);
		}
		close(fd);
	}
	/* with --console-input the io node reads the sim's stdin (the guest's COM1); no other node reads it */
	if (!s->o.console_input || n->id != s->o.io_node) {
		fd = open("/dev/null", O_RDONLY);
		if (fd >= 0)
			dup2(fd, 0);
	}
	dup2(out_w, 1);
	dup2(err_w, 2);
	execv(s->exe, argv);
	dprintf(2, "exec %s: %s\n", s->exe, strerror(errno));
	_exit(127);
}

/* Append "name value" to a node's argv when value is set. */
static void arg_opt(char **argv, int *a, const char *name, const char *value)
{
	if (!value)
		return;
	argv[(*a)++] = (char *)name;
	argv[(*a)++] = (char *)value;
}

static int node_spawn(struct sim *s, unsigned k)
{
	struct sim_node *n = &s->node[k];
	char *argv[64 + 2 * FW_MAX_MODULES];
	char id[16], vcpus[16], io[16];
	char peers[SIM_MAX_NODES][96];
	int out[2], err[2], a = 0;
	pid_t parent = getpid();

	snprintf(id, sizeof(id), "%u", k);
	snprintf(vcpus, sizeof(vcpus), "%u", s->o.vcpus);
	snprintf(io, sizeof(io), "%u", s->o.io_node);
	argv[a++] = "rackvm";
	argv[a++] = "node";
	argv[a++] = "--id";
	argv[a++] = id;
	argv[a++] = "--listen";
	argv[a++] = n->addr;
	for (unsigned j = 0; j < s->o.nodes; j++) {
		if (j == k)
			continue;
		snprintf(peers[j], sizeof(peers[j]), "%u=%s", j, s->node[j].addr);
		argv[a++] = "--peer";
		argv[a++] = peers[j];
	}
	argv[a++] = "--key-file";
	argv[a++] = s->key_path;
	argv[a++] = "--vcpus";
	argv[a++] = vcpus;
	argv[a++] = "--mem";
	argv[a++] = (char *)s->o.mem;
	argv[a++] = "--kernel";
	argv[a++] = (char *)s->o.kernel;
	argv[a++] = "--io-node";
	argv[a++] = io;
	if (s->o.console_input)
		argv[a++] = "--console-input";
	if (s->o.strict_io)
		argv[a++] = "--strict-io";
	arg_opt(argv, &a, "--initrd", s->o.initrd);
	for (size_t m = 0; m < s->o.n_modules; m++)
		arg_opt(argv, &a, "--module", s->o.modules[m]);
	arg_opt(argv, &a, "--cmdline", s->o.cmdline);
	arg_opt(argv, &a, "--placement", s->o.placement);
	arg_opt(argv, &a, "--accel", s->o.accel);
	arg_opt(argv, &a, "--transport", s->o.transport);
	arg_opt(argv, &a, "--latency", s->o.latency);
	arg_opt(argv, &a, "--bandwidth", s->o.bandwidth);
	arg_opt(argv, &a, "--loss", s->o.loss);
	arg_opt(argv, &a, "--seed", s->o.seed);
	argv[a] = NULL;

	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(err, O_CLOEXEC) < 0) {
		close(out[0]);
		close(out[1]);
		return -errno;
	}
	n->pid = fork();
	if (n->pid < 0) {
		int e = -errno;

		close(out[0]);
		close(out[1]);
		close(err[0]);
		close(err[1]);
		return e;
	}
	if (n->pid == 0)
		child_exec(s, n, argv, out[1], err[1], parent);
	/* also here: no window in which a signal to the group misses the child */
	setpgid(n->pid, n->pid);
	close(out[1]);
	close(err[1]);
	n->out_fd = out[0];
	n->err_fd = err[0];
	fcntl(n->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(n->err_fd, F_SETFL, O_NONBLOCK);
	return 0;
}

static void node_emit_line(struct sim *s, struct sim_node *n, const char *line, size_t len)
{
	char buf[1200];
	int m = snprintf(buf, sizeof(buf), "[node %u] %.*s\n", n->id, (int)len, line);

	if (m > (int)sizeof(buf) - 1)
		m = (int)sizeof(buf) - 1;
	if (len >= 12 && !strncmp(line, "summary-hot:", 12)) {
		snprintf(n->hot, sizeof(n->hot), "%.*s", (int)len, line);
		if (s->o.quiet)
			return;
	} else if (len >= 8 && !strncmp(line, "summary:", 8)) {
		snprintf(n->summary, sizeof(n->summary), "%.*s", (int)len, line);
		if (s->o.quiet)
			return;   /* --quiet: only in the table at the end */
	}
	(void)!write(2, buf, (size_t)m);
}

/* Read what a node wrote; returns false at EOF. */
static bool node_read(struct sim *s, struct sim_node *n, int fd)
{
	char buf[4096];
	ssize_t r = read(fd, buf, sizeof(buf));

	if (r < 0)
		return errno == EAGAIN || errno == EINTR;
	if (r == 0) {
		if (fd == n->err_fd && n->line_len) {
			node_emit_line(s, n, n->line, n->line_len);
			n->line_len = 0;
		}
		return false;
	}
	if (fd == n->out_fd) {
		/* the guest console: the io node's verbatim; another node's (should be none) as log lines */
		if (n->id == s->o.io_node) {
			(void)!write(1, buf, (size_t)r);
			return true;
		}
	}
	for (ssize_t i = 0; i < r; i++) {
		if (buf[i] == '\n' || n->line_len == sizeof(n->line)) {
			node_emit_line(s, n, n->line, n->line_len);
			n->line_len = 0;
			if (buf[i] == '\n')
				continue;
		}
		n->line[n->line_len++] = buf[i];
	}
	return true;
}

static void nodes_signal(struct sim *s, int sig)
{
	for (unsigned k = 0; k < s->o.nodes; k++) {
		struct sim_node *n = &s->node[k];

		if (n->pid > 0 && !n->reaped) {
			n->signalled_by_us = true;
			kill(-n->pid, sig);
			kill(n->pid, sig);
		}
	}
}

static void describe_status(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

/* ---- the run -------------------------------------------------------------------------------------------- */

enum sim_end { END_NONE, END_EXITED, END_DIED, END_SIGNAL, END_TIMEOUT };

static int sim_run(struct sim *s, int sfd)
{
	enum sim_end end = END_NONE;
	uint64_t start = clock_now_ns(), grace_until = 0, kill_at = 0;
	bool killed = false;
	int dead = -1, sig = 0, rc;
	char why[128] = "";

	for (;;) {
		struct pollfd p[1 + 2 * SIM_MAX_NODES];
		struct sim_node *who[1 + 2 * SIM_MAX_NODES];
		unsigned np = 0, live = 0, open_fds = 0;
		uint64_t now = clock_now_ns();
		int timeout = 200;

		for (unsigned k = 0; k < s->o.nodes; k++) {
			live += !s->node[k].reaped;
			open_fds += (s->node[k].out_fd >= 0) + (s->node[k].err_fd >= 0);
		}
		if (!live && !open_fds)
			break;
		if (!live && end != END_NONE && kill_at && now > kill_at + KILL_GRACE_NS)
			break;   /* a grandchild holds a pipe open: stop reading it */

		if (end == END_NONE && s->o.timeout_s && now - start > s->o.timeout_s * NSEC_PER_SEC) {
			end = END_TIMEOUT;
			fprintf(stderr, "sim: timeout after %llu s, stopping every node\n",
				(unsigned long long)s->o.timeout_s);
		}
		if (end == END_EXITED && live && now > grace_until) {
			fprintf(stderr, "sim: %u node(s) still running %llu s after the guest exited; killing them\n",
				live, (unsigned long long)(GRACE_NS / NSEC_PER_SEC));
			end = END_DIED;
			snprintf(why, sizeof(why), "did not exit after the guest did");
		}
		if ((end == END_DIED || end == END_SIGNAL || end == END_TIMEOUT) && live) {
			if (!killed) {
				nodes_signal(s, SIGTERM);
				killed = true;
				kill_at = now;
			} else if (now > kill_at + KILL_GRACE_NS) {
				nodes_signal(s, SIGKILL);
			}
		}

		p[np] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		who[np++] = NULL;
		for (unsigned k = 0; k < s->o.nodes; k++) {
			struct sim_node *n = &s->node[k];

			if (n->out_fd >= 0) {
				p[np] = (struct pollfd){ .fd = n->out_fd, .events = POLLIN };
				who[np++] = n;
			}
			if (n->err_fd >= 0) {
				p[np] = (struct pollfd){ .fd = n->err_fd, .events = POLLIN };
				who[np++] = n;
			}
		}
		if (poll(p, np, timeout) < 0 && errno != EINTR)
			return 1;
		for (unsigned i = 1; i < np; i++) {
			struct sim_node *n = who[i];

			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (!node_read(s, n, p[i].fd)) {
				close(p[i].fd);
				if (p[i].fd == n->out_fd)
					n->out_fd = -1;
				else
					n->err_fd = -1;
			}
		}
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGCHLD)
					continue;
				if (end == END_NONE || end == END_EXITED) {
					end = END_SIGNAL;
					sig = (int)si.ssi_signo;
					fprintf(stderr, "sim: %s, stopping every node\n", strsignal(sig));
				}
			}
		}
		for (;;) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);

			if (pid <= 0)
				break;
			for (unsigned k = 0; k < s->o.nodes; k++) {
				struct sim_node *n = &s->node[k];
				char d[96];

				if (n->pid != pid)
					continue;
				n->reaped = true;
				n->status = status;
				describe_status(status, d, sizeof(d));
				if (!s->o.quiet || WIFSIGNALED(status))
					fprintf(stderr, "sim: node %u (pid %d) %s\n", k, (int)pid, d);
				if (WIFSIGNALED(status) && !n->signalled_by_us && (end == END_NONE || end == END_EXITED)) {
					end = END_DIED;
					dead = (int)k;
					snprintf(why, sizeof(why), "%s", d);
				} else if (end == END_NONE) {
					end = END_EXITED;
					grace_until = clock_now_ns() + GRACE_NS;
				}
			}
		}
	}

	/* the table of summaries */
	fprintf(stderr, "sim: per-node summary\n");
	for (unsigned k = 0; k < s->o.nodes; k++) {
		const char *v = strstr(s->node[k].summary, "vcpus ");

		const char *h = strstr(s->node[k].hot, "pages ");

		fprintf(stderr, "sim:   node %u: %s\n", k, v ? v : "(no summary: the node did not finish)");
		if (h)
			fprintf(stderr, "sim:   node %u hot %s\n", k, h);
	}
	switch (end) {
	case END_EXITED: {
		struct sim_node *io = &s->node[s->o.io_node];

		if (WIFEXITED(io->status) && !io->summary[0]) {
			fprintf(stderr, "sim: FAILED: node %u exited with status %d before the guest ran to its end\n",
				io->id, WEXITSTATUS(io->status));
			return 1;
		}
		if (WIFEXITED(io->status)) {
			rc = WEXITSTATUS(io->status);
			fprintf(stderr, "sim: exit status %d (guest isa-debug-exit code %d)\n", rc, rc & 1 ? rc >> 1 : -1);
			return rc;
		}
		fprintf(stderr, "sim: the io node did not exit normally\n");
		return 1;
	}
	case END_DIED:
		if (dead >= 0)
			fprintf(stderr, "sim: FAILED: node %d died (%s); every node stopped\n", dead, why);
		else
			fprintf(stderr, "sim: FAILED: a node %s; every node stopped\n", why);
		return 1;
	case END_SIGNAL:
		fprintf(stderr, "sim: stopped by %s; every node stopped\n", strsignal(sig));
		return 128 + sig;
	case END_TIMEOUT:
		fprintf(stderr, "sim: FAILED: timeout; every node stopped\n");
		return 124;
	case END_NONE:
		break;
	}
	return 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rackvm sim --nodes N --vcpus V --mem SIZE --kernel FILE [options]\n"
		"  Runs N node processes on this host sharing one guest of V vCPUs and SIZE of RAM.\n"
		"  --cmdline S          guest command line\n"
		"  --initrd FILE        initial ramdisk (Linux)\n"
		"  --module 'FILE[ ARGS]'  multiboot module with its command line (repeatable)\n"
		"  --strict-io          stop the guest at an access to a port nothing claims (default: all-ones/dropped)\n"
		"  --placement LIST     node of each vCPU, e.g. 0,0,1,1 (default: contiguous blocks)\n"
		"  --io-node K          node owning the devices and the console (default 0)\n"
		"  --console-input      stdin feeds the guest's UART (COM1) on the io node\n"
		"  --accel auto|kvm|emu execution backend of every node (default auto)\n"
		"  --transport tcp|rdma|fabric   (default tcp; fabric over tcp with the link options)\n"
		"  --latency US --bandwidth MBPS --loss P --seed S   fabric link parameters\n"
		"  --netns              one network namespace per node (needs root and ip(8))\n"
		"  --timeout SEC        stop everything after SEC seconds (exit 124)\n"
		"  --quiet              fewer sim lines\n");
}

static int sim_parse(int argc, char **argv, struct sim_opts *o)
{
	static const struct option lo[] = {
		{ "nodes", required_argument, NULL, 'n' },   { "vcpus", required_argument, NULL, 'v' },
		{ "mem", required_argument, NULL, 'm' },     { "kernel", required_argument, NULL, 'k' },
		{ "cmdline", required_argument, NULL, 'c' }, { "placement", required_argument, NULL, 'p' },
		{ "io-node", required_argument, NULL, 'i' }, { "accel", required_argument, NULL, 'a' },
		{ "transport", required_argument, NULL, 't' }, { "latency", required_argument, NULL, 'L' },
		{ "bandwidth", required_argument, NULL, 'B' }, { "loss", required_argument, NULL, 'P' },
		{ "seed", required_argument, NULL, 'S' },    { "netns", no_argument, NULL, 'N' },
		{ "timeout", required_argument, NULL, 'T' }, { "node-exe", required_argument, NULL, 'X' },
		{ "quiet", no_argument, NULL, 'q' },         { "help", no_argument, NULL, 'h' },
		{ "console-input", no_argument, NULL, 'C' }, { "strict-io", no_argument, NULL, 'Z' },
		{ "initrd", required_argument, NULL, 'R' },  { "module", required_argument, NULL, 'M' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	double d;
	int c;

	memset(o, 0, sizeof(*o));
	o->cmdline = NULL;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (opts_parse_u64(optarg, 1, SIM_MAX_NODES, &v))
				goto bad;
			o->nodes = (unsigned)v;
			break;
		case 'v':
			if (opts_parse_u64(optarg, 1, 64, &v))
				goto bad;
			o->vcpus = (unsigned)v;
			break;
		case 'm':
			if (opts_parse_size(optarg, &v))
				goto bad;
			o->mem = optarg;
			break;
		case 'k': o->kernel = optarg; break;
		case 'c': o->cmdline = optarg; break;
		case 'p': o->placement = optarg; break;
		case 'i':
			if (opts_parse_u64(optarg, 0, SIM_MAX_NODES - 1, &v))
				goto bad;
			o->io_node = (unsigned)v;
			break;
		case 'a': o->accel = optarg; break;
		case 't': o->transport = optarg; break;
		case 'L':
			if (opts_parse_u64(optarg, 0, 10 * 1000 * 1000, &v))
				goto bad;
			o->latency = optarg;
			break;
		case 'B':
			if (opts_parse_u64(optarg, 0, 1000 * 1000, &v))
				goto bad;
			o->bandwidth = optarg;
			break;
		case 'P':
			if (opts_parse_prob(optarg, &d))
				goto bad;
			o->loss = optarg;
			break;
		case 'S':
			if (opts_parse_u64(optarg, 0, UINT64_MAX, &v))
				goto bad;
			o->seed = optarg;
			break;
		case 'N': o->netns = true; break;
		case 'T':
			if (opts_parse_u64(optarg, 1, 100000, &v))
				goto bad;
			o->timeout_s = v;
			break;
		case 'X': o->node_exe = optarg; break;
		case 'q': o->quiet = true; break;
		case 'C': o->console_input = true; break;
		case 'Z': o->strict_io = true; break;
		case 'R': o->initrd = optarg; break;
		case 'M':
			if (opts_add_module("rackvm sim", o->modules, &o->n_modules, FW_MAX_MODULES, optarg))
				return -EINVAL;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc || !o->nodes || !o->vcpus || !o->mem || !o->kernel) {
		fprintf(stderr, "rackvm sim: --nodes, --vcpus, --mem and --kernel are required\n");
		usage(stderr);
		return -EINVAL;
	}
	if (o->vcpus < o->nodes && !o->placement) {
		fprintf(stderr, "rackvm sim: %u vCPUs cannot cover %u nodes (each node runs at least one)\n", o->vcpus,
			o->nodes);
		return -EINVAL;
	}
	if (o->placement) {
		uint32_t node_of[64];

		if (placement_parse(o->placement, o->vcpus, o->nodes, node_of))
			return -EINVAL;
	}
	if (o->io_node >= o->nodes) {
		fprintf(stderr, "rackvm sim: --io-node %u is not one of the %u nodes\n", o->io_node, o->nodes);
		return -EINVAL;
	}
	/* the io node runs in a process group of its own: reading a terminal would stop it (SIGTTIN) */
	if (o->console_input && isatty(0)) {
		fprintf(stderr, "rackvm sim: --console-input needs stdin to be a pipe or a file, not a terminal\n");
		return -EINVAL;
	}
	return 0;
bad:
	fprintf(stderr, "rackvm sim: --%s %s: bad value (try 'rackvm sim --help')\n", opts_name(lo, c), optarg);
	return -EINVAL;
}

int rackvm_cmd_sim(int argc, char **argv)
{
	struct sim *s;
	sigset_t mask, old;
	ssize_t len;
	int sfd, rc = 1, err;

	s = calloc(1, sizeof(*s));
	if (!s) {
		fprintf(stderr, "rackvm sim: out of memory\n");
		return 1;
	}
	s->key_fd = -1;
	err = sim_parse(argc, argv, &s->o);
	if (err) {
		free(s);
		return err > 0 ? 0 : 2;
	}
	log_set_tag("sim");
	if (access(s->o.kernel, R_OK) < 0) {
		fprintf(stderr, "rackvm sim: cannot read kernel %s: %s\n", s->o.kernel, strerror(errno));
		free(s);
		return 1;
	}
	if (s->o.node_exe) {
		snprintf(s->exe, sizeof(s->exe), "%s", s->o.node_exe);
	} else {
		len = readlink("/proc/self/exe", s->exe, sizeof(s->exe) - 1);
		if (len < 0) {
			fprintf(stderr, "rackvm sim: /proc/self/exe: %s\n", strerror(errno));
			free(s);
			return 1;
		}
		s->exe[len] = 0;
	}
	for (unsigned k = 0; k < s->o.nodes; k++) {
		s->node[k].id = k;
		s->node[k].out_fd = s->node[k].err_fd = -1;
	}

	/* Signals arrive through the signalfd from here on (blocked before any child exists). */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, &old);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fprintf(stderr, "rackvm sim: signalfd: %s\n", strerror(errno));
		goto out_mask;
	}

	snprintf(s->dir, sizeof(s->dir), "/tmp/rackvm-sim.XXXXXX");
	if (!mkdtemp(s->dir)) {
		fprintf(stderr, "rackvm sim: mkdtemp: %s\n", strerror(errno));
		goto out_sfd;
	}
	err = write_key(s);
	rmdir(s->dir);   /* empty now: nothing of the run stays on disk */
	if (err) {
		fprintf(stderr, "rackvm sim: writing the key file: %s\n", strerror(-err));
		goto out_dir;
	}
	if (s->o.netns) {
		if (netns_setup(s)) {
			fprintf(stderr, "rackvm sim: cannot set up network namespaces (needs root and ip netns)\n");
			goto out_dir;
		}
	} else {
		for (unsigned k = 0; k < s->o.nodes; k++) {
			int port = free_port();

			for (unsigned j = 0; j < k && port > 0; j++)
				if (atoi(strchr(s->node[j].addr, ':') + 1) == port) {
					port = free_port();   /* taken by an earlier node of this run: pick again */
					j = (unsigned)-1;
				}
			if (port < 0) {
				fprintf(stderr, "rackvm sim: no free loopback port: %s\n", strerror(-port));
				goto out_dir;
			}
			snprintf(s->node[k].addr, sizeof(s->node[k].addr), "127.0.0.1:%d", port);
		}
	}
	if (!s->o.quiet)
		fprintf(stderr, "sim: %u nodes, %u vCPUs, %s RAM, kernel %s%s%s\n", s->o.nodes, s->o.vcpus, s->o.mem,
			s->o.kernel, s->o.netns ? ", one network namespace per node" : "",
			s->o.latency || s->o.loss || s->o.bandwidth ? ", fabric links" : "");
	for (unsigned k = 0; k < s->o.nodes; k++) {
		err = node_spawn(s, k);
		if (err) {
			fprintf(stderr, "rackvm sim: starting node %u: %s\n", k, strerror(-err));
			nodes_signal(s, SIGKILL);
			break;
		}
		if (!s->o.quiet)
			fprintf(stderr, "sim: node %u pid %d at %s%s%s\n", k, (int)s->node[k].pid, s->node[k].addr,
				s->node[k].netns[0] ? " in netns " : "", s->node[k].netns);
	}
	rc = sim_run(s, sfd);
	if (err)
		rc = 1;
	netns_cleanup(s);
out_dir:
	netns_cleanup(s);
	if (s->key_fd >= 0)
		close(s->key_fd);
	rmdir(s->dir);
out_sfd:
	close(sfd);
out_mask:
	sigprocmask(SIG_SETMASK, &old, NULL);
	free(s);
	return rc;
}
