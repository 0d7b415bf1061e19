/* SPDX-License-Identifier: MIT */
/* Subcommands of the rackvm program. Each parses its own options (argv[0] is the command name) and returns the
 * process exit status: the guest's exit code when a guest ran to its end, 1 for an error (already printed as one
 * line on stderr), 2 for a usage error. */
#ifndef RACKVM_APP_COMMANDS_H
#define RACKVM_APP_COMMANDS_H

int rackvm_cmd_run(int argc, char **argv);   /* app/run.c */
int rackvm_cmd_node(int argc, char **argv);  /* app/node.c */
int rackvm_cmd_sim(int argc, char **argv);   /* app/sim.c */

#endif
