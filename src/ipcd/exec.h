/*
 * exec.h - running a configured command ([Command] in ipcd.conf(5)) for a
 * client, on that client's reader thread.
 */
#pragma once

#include "client.h"
#include "conf.h"

/*
 * Run `cmd` with the client's arguments (req->args[1..]): posix_spawn()
 * without a shell, a cleared environment with the IPCD_* variables, stdin
 * /dev/null, stdout and stderr streamed to the client as MORE frames as
 * they come. Appends the final frame (OK, ERR exit-N, signal-N, timeout,
 * output-too-large, busy, failed) to c->out. The child and its process
 * group are killed on timeout, on too much output and when the client
 * goes away; nothing is left behind. Returns 0 for OK, 1 for ERR,
 * -ENOMEM when even the answer could not be built.
 */
int exec_run(Client *c, const CommandConfig *cmd, const ProtoRequest *req);
