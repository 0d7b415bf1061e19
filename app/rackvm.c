// SPDX-License-Identifier: MIT
/*
 * rackvm: the node process and its tools in one program (the composition root of DESIGN.md: it is the only place
 * that knows every layer). Subcommands:
 *   rackvm run   one guest on this host, one node (app/run.c)
 *   rackvm node  one node hypervisor of a guest that spans several nodes (app/node.c)
 *   rackvm sim   a whole simulated cluster on this host (app/sim.c)
 */
#include <stdio.h>
#include <string.h>

#include "app/commands.h"

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static const struct command commands[] = {
	{ "run", rackvm_cmd_run, "boot a guest on this host (one node)" },
	{ "node", rackvm_cmd_node, "run one node hypervisor of a guest spanning several nodes" },
	{ "sim", rackvm_cmd_sim, "run a simulated cluster of node processes on this host" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: rackvm COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-6s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n'rackvm COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "rackvm: unknown command '%s' (try 'rackvm --help')\n", argv[1]);
	return 2;
}
