/*
 * commands.h - the built-in commands (SPEC §5), run by a client's reader
 * thread. Each appends exactly one final frame (OK or ERR) to the output.
 */
#pragma once

#include "client.h"

/*
 * Run the request in c->req, appending its answer to c->out. Returns 0
 * when the answer was OK, 1 when it was ERR, -ENOMEM if even the error
 * could not be appended.
 */
int command_dispatch(Client *c);
