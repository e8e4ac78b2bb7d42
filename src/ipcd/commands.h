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
/* Time the instant built-ins run since the last timed point (the batch's
 * start, a timed request) as of `now`, and start the next from there. The
 * reader calls it at the end of each batch and before it flushes early. */
void commands_settle_timing(Client *c, uint64_t now);

/*
 * Append an OK frame with `payload` to c->out: 0, or -ENOMEM. Its ERR
 * counterpart is reply_err() (client.h), which returns 1. For the built-in
 * commands, events.c and exec.c alike.
 */
int reply_ok(Client *c, const void *payload, size_t len);

/* Append req's arguments from `first` on, joined by one space (echo,
 * publish): 0 or -ENOMEM. */
int request_join_args(const ProtoRequest *req, size_t first, Buffer *b);
