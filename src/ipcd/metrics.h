/*
 * metrics.h - the `metrics` command (Prometheus text exposition format,
 * version 0.0.4): the counters of `stats`, a request count and a latency
 * histogram per command, and the clients connected by transport and role.
 *
 * Counters only grow: reading them changes nothing.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "buffer.h"
#include "server.h"

/* The slot of the command `name` (built-in or configured; NULL for one that
 * does not exist: "unknown"), made on first use; -1 if the table is full.
 * Any thread. */
int metrics_slot(const char *name);
/* Count one run that took `usec`: lock-free. Any thread. */
void metrics_record_slot(int slot, bool ok, uint64_t usec);

/* Append the whole exposition; -ENOMEM or 0. Any thread. */
int metrics_format(Server *s, Buffer *b);
