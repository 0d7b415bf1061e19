/* SPDX-License-Identifier: MIT */
/*
 * Multi-process DSM proof: 2, 3 and 4 dsm_node processes over tcp on loopback share one region and run the
 * litmus tests, the atomic counter and the memtest (see dsm_node.c); then one node of three is SIGKILLed mid-run
 * and the others must name it and exit non-zero within a few seconds.
 *
 * Each node's output goes to $BUILD/test-logs/dsm_cluster-<case>-node<i>.log; the litmus tallies, counters and
 * memtest verdicts are copied to this program's stdout.
 *
 * Environment: DSM_CLUSTER_SCALE=k multiplies iteration counts (make soak uses 10); DSM_CLUSTER_PORT=p fixes the
 * first port (default: a random block; a case whose port is taken retries on the next block).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dsm/uffd.h"
#include "util/clock.h"

#define MAXN 4

static char node_bin[PATH_MAX];
static char key_path[PATH_MAX];
static char log_dir[PATH_MAX];
static unsigned port_base;
static unsigned scale = 1;

struct node {
	pid_t pid;
	int status;
	bool exited;
	char log[PATH_MAX];
};

static int group_setup(void **state)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	uint8_t raw[24];
	const char *s = getenv("DSM_CLUSTER_SCALE");
	FILE *f;
	int fd;

	if (n < 0)
		return -1;
	self[n] = 0;
	*strrchr(self, '/') = 0;
	snprintf(node_bin, sizeof(node_bin), "%.3000s/dsm_node", self);
	snprintf(log_dir, sizeof(log_dir), "%.3000s/test-logs", getenv("BUILD") ? getenv("BUILD") : self);
	mkdir(log_dir, 0755);
	if (access(log_dir, W_OK))
		snprintf(log_dir, sizeof(log_dir), "/tmp");
	if (s && atoi(s) > 0)
		scale = (unsigned)atoi(s);

	snprintf(key_path, sizeof(key_path), "/tmp/dsm_cluster_key.XXXXXX");
	fd = mkstemp(key_path);
	if (fd < 0 || getrandom(raw, sizeof(raw), 0) != sizeof(raw))
		return -1;
	f = fdopen(fd, "w");
	for (size_t i = 0; i < sizeof(raw); i++)
		fprintf(f, "%02x", raw[i]);
	fclose(f);
	/* Ports: a random block so parallel runs (other engineers, other build dirs) rarely collide. */
	port_base = 20000 + (unsigned)(raw[0] | raw[1] << 8) % 30000;
	if (getenv("DSM_CLUSTER_PORT"))   /* reproduce a run, or provoke a collision */
		port_base = (unsigned)atoi(getenv("DSM_CLUSTER_PORT"));
	return 0;
}

static int group_teardown(void **state)
{
	unlink(key_path);
	return 0;
}

static pid_t node_spawn(struct node *nd, const char *name, unsigned id, unsigned n, unsigned port, char *const extra[])
{
	char ids[16], ns[16], ps[16];
	char *argv[48];
	int argc = 0;
	pid_t pid;

	snprintf(nd->log, sizeof(nd->log), "%.3500s/dsm_cluster-%.32s-node%u.log", log_dir, name, id);
	snprintf(ids, sizeof(ids), "%u", id);
	snprintf(ns, sizeof(ns), "%u", n);
	snprintf(ps, sizeof(ps), "%u", port);
	argv[argc++] = node_bin;
	argv[argc++] = "--id";
	argv[argc++] = ids;
	argv[argc++] = "--nodes";
	argv[argc++] = ns;
	argv[argc++] = "--port";
	argv[argc++] = ps;
	argv[argc++] = "--key-file";
	argv[argc++] = key_path;
	for (int i = 0; extra[i] && argc < 46; i++)
		argv[argc++] = extra[i];
	argv[argc] = NULL;
	pid = fork();
	if (pid == 0) {
		int fd = open(nd->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execv(node_bin, argv);
		_exit(127);
	}
	nd->pid = pid;
	nd->exited = false;
	return pid;
}

/* Reap whatever exited; true when every node in mask has. */
static bool nodes_reap(struct node *nd, unsigned n, unsigned mask)
{
	bool all = true;

	for (unsigned i = 0; i < n; i++) {
		if (!nd[i].exited && waitpid(nd[i].pid, &nd[i].status, WNOHANG) == nd[i].pid)
			nd[i].exited = true;
		if ((mask >> i & 1) && !nd[i].exited)
			all = false;
	}
	return all;
}

static void nodes_kill_all(struct node *nd, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (!nd[i].exited) {
			kill(nd[i].pid, SIGKILL);
			waitpid(nd[i].pid, &nd[i].status, 0);
			nd[i].exited = true;
		}
}

static bool log_has(const struct node *nd, const char *needle)
{
	char line[2048];
	bool found = false;
	FILE *f = fopen(nd->log, "r");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

/* Copy lines starting with one of the prefixes from a node's log to stdout. */
static void log_echo(const struct node *nd, const char *const prefixes[])
{
	char line[2048];
	FILE *f = fopen(nd->log, "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		for (int i = 0; prefixes[i]; i++)
			if (!strncmp(line, prefixes[i], strlen(prefixes[i]))) {
				fputs(line, stdout);
				break;
			}
	fclose(f);
}

static void log_tail(const struct node *nd)
{
	char cmd[PATH_MAX + 32];

	snprintf(cmd, sizeof(cmd), "tail -n 15 '%s'", nd->log);
	printf("---- %s\n", nd->log);
	fflush(stdout);
	(void)!system(cmd);
}

static const char *status_str(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "status 0x%x", status);
	return buf;
}

static void run_cluster(unsigned n, const char *name, unsigned deadline_s)
{
	static const char *const echo[] = { "LITMUS", "FAIL", "COUNTER", "MEMTEST", "STATS", "FATAL", NULL };
	char iters[16], incs[16], pages[16];
	char *extra[] = { "--tests", "litmus,counter,memtest", "--iters", iters, "--counter-incs", incs,
			  "--memtest-pages", pages, "--threads", "2", NULL };
	struct node nd[MAXN];
	uint64_t t0 = clock_now_ns(), end = t0 + (uint64_t)deadline_s * scale * NSEC_PER_SEC;
	bool ok = true, retry = true;

	snprintf(iters, sizeof(iters), "%u", 300 * scale > 4096 ? 4096 : 300 * scale);
	snprintf(incs, sizeof(incs), "%u", 3000 * scale);
	snprintf(pages, sizeof(pages), "%u", 12 * n * scale);
	for (unsigned attempt = 0; retry && attempt < 3; attempt++) {
		retry = false;
		for (unsigned i = 0; i < n; i++)
			node_spawn(&nd[i], name, i, n, port_base, extra);
		port_base += 16;
		while (!nodes_reap(nd, n, (1u << n) - 1)) {
			/* Someone else took one of our random ports: start over on another block. */
			for (unsigned i = 0; i < n && !retry; i++)
				retry = nd[i].exited && WIFEXITED(nd[i].status) && WEXITSTATUS(nd[i].status) == 3 &&
					log_has(&nd[i], "in use");
			if (retry) {
				printf("ports taken; retrying on another block\n");
				nodes_kill_all(nd, n);
				break;
			}
			if (clock_now_ns() > end) {
				printf("FAIL: %s: nodes still running after %u s; killing them\n", name,
				       deadline_s * scale);
				for (unsigned i = 0; i < n; i++)
					log_tail(&nd[i]);
				nodes_kill_all(nd, n);
				fail();
			}
			usleep(20000);
		}
	}
	printf("== %s: %u nodes over tcp, %.1f s\n", name, n, (double)(clock_now_ns() - t0) / 1e9);
	log_echo(&nd[0], echo);
	for (unsigned i = 1; i < n; i++) {
		static const char *const others[] = { "COUNTER", "MEMTEST", "STATS", "FAIL", "FATAL", NULL };

		log_echo(&nd[i], others);
	}
	for (unsigned i = 0; i < n; i++) {
		char buf[32];

		if (!WIFEXITED(nd[i].status) || WEXITSTATUS(nd[i].status) != 0) {
			printf("FAIL: %s node %u: %s\n", name, i, status_str(nd[i].status, buf, sizeof(buf)));
			log_tail(&nd[i]);
			ok = false;
		}
	}
	fflush(stdout);
	assert_true(ok);
}

static void test_cluster_2_nodes(void **state)
{
	run_cluster(2, "n2", 90);
}

static void test_cluster_3_nodes(void **state)
{
	run_cluster(3, "n3", 90);
}

static void test_cluster_4_nodes(void **state)
{
	run_cluster(4, "n4", 120);
}

/* SIGKILL node 2 of 3 while all nodes hammer a shared counter. With the fatal handler, nodes 0 and 1 must say
 * "node 2 died" and exit 2 within a few seconds; without it (segv), the region's last resort must end them by
 * SIGSEGV — never a hang, never a silent continuation. */
static void run_kill(bool segv)
{
	char *extra[] = { "--tests", "spin", "--threads", "2", "--spin-ms", "60000",
			  segv ? "--no-fatal-handler" : NULL, NULL };
	struct node nd[3];
	uint64_t end = clock_now_ns() + 30 * NSEC_PER_SEC, t_kill;
	bool ok = true, running = false;

	for (unsigned attempt = 0; !running && attempt < 3; attempt++) {
		for (unsigned i = 0; i < 3; i++)
			node_spawn(&nd[i], segv ? "kill-segv" : "kill", i, 3, port_base, extra);
		port_base += 16;
		/* Wait until every node runs the spin phase (and so depends on every other's pages). */
		for (;;) {
			bool all = true, taken = false;

			for (unsigned i = 0; i < 3; i++)
				all &= log_has(&nd[i], "RUNNING");
			if (all) {
				running = true;
				break;
			}
			nodes_reap(nd, 3, 0);
			for (unsigned i = 0; i < 3; i++)
				taken |= nd[i].exited && WIFEXITED(nd[i].status) && WEXITSTATUS(nd[i].status) == 3 &&
					 log_has(&nd[i], "in use");
			if (taken) {
				printf("ports taken; retrying on another block\n");
				nodes_kill_all(nd, 3);
				break;
			}
			if (clock_now_ns() > end || nd[0].exited || nd[1].exited || nd[2].exited) {
				printf("FAIL: nodes did not all reach the spin phase\n");
				for (unsigned i = 0; i < 3; i++)
					log_tail(&nd[i]);
				nodes_kill_all(nd, 3);
				fail();
			}
			usleep(20000);
		}
	}
	assert_true(running);
	usleep(300000);   /* let the counter page move around for a while: "mid-run" */
	kill(nd[2].pid, SIGKILL);
	t_kill = clock_now_ns();
	end = t_kill + 15 * NSEC_PER_SEC;
	while (!nodes_reap(nd, 3, 0x7)) {
		if (clock_now_ns() > end) {
			printf("FAIL: survivors still running 15 s after node 2 was killed\n");
			for (unsigned i = 0; i < 2; i++)
				log_tail(&nd[i]);
			nodes_kill_all(nd, 3);
			fail();
		}
		usleep(10000);
	}
	printf("== kill%s: node 2 SIGKILLed; survivors exited %.2f s later\n", segv ? " (no handler)" : "",
	       (double)(clock_now_ns() - t_kill) / 1e9);
	for (unsigned i = 0; i < 2; i++) {
		static const char *const echo[] = { "FATAL", NULL };
		char buf[32];

		log_echo(&nd[i], echo);
		if (segv) {
			/* Either survivor may see the other's death first; each must name a dead node and die. */
			/* (Under ASan its SEGV handler reports and exits non-zero instead of the signal.) */
			bool segv_seen = (WIFSIGNALED(nd[i].status) && WTERMSIG(nd[i].status) == SIGSEGV) ||
					 (WIFEXITED(nd[i].status) && WEXITSTATUS(nd[i].status) != 0 &&
					  log_has(&nd[i], "SEGV"));

			if (!segv_seen || !log_has(&nd[i], "region failed: node")) {
				printf("FAIL: node %u: %s, expected SIGSEGV after \"region failed\"\n", i,
				       status_str(nd[i].status, buf, sizeof(buf)));
				log_tail(&nd[i]);
				ok = false;
			} else {
				printf("node %u: %s after \"region failed\"\n", i,
				       status_str(nd[i].status, buf, sizeof(buf)));
			}
			continue;
		}
		if (!WIFEXITED(nd[i].status) || WEXITSTATUS(nd[i].status) != 2 || !log_has(&nd[i], "FATAL: node 2 died")) {
			printf("FAIL: node %u: %s, expected exit 2 after \"FATAL: node 2 died\"\n", i,
			       status_str(nd[i].status, buf, sizeof(buf)));
			log_tail(&nd[i]);
			ok = false;
		}
	}
	fflush(stdout);
	assert_true(ok);
}

static void test_killed_node_is_reported_by_the_others(void **state)
{
	run_kill(false);
}

static void test_killed_node_without_handler_ends_survivors_by_sigsegv(void **state)
{
	run_kill(true);
}

static void test_skip_no_uffd(void **state)
{
	skip();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cluster_2_nodes),
		cmocka_unit_test(test_cluster_3_nodes),
		cmocka_unit_test(test_cluster_4_nodes),
		cmocka_unit_test(test_killed_node_is_reported_by_the_others),
		cmocka_unit_test(test_killed_node_without_handler_ends_survivors_by_sigsegv),
	};

	struct dsm_uffd *probe;
	int err;

	setvbuf(stdout, NULL, _IOLBF, 0);
	err = dsm_uffd_create(DSM_UFFD_PAGE_SIZE, &probe);
	if (err) {
		const struct CMUnitTest none[] = { cmocka_unit_test(test_skip_no_uffd) };

		printf("SKIP: userfaultfd with write-protect unavailable (%s)\n", strerror(-err));
		return cmocka_run_group_tests(none, NULL, NULL);
	}
	dsm_uffd_destroy(probe);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
