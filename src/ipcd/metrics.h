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
/* Count one run that took `usec` in the client's own counters, without a
 * locked instruction (in the server-wide table when it has used
 * CLIENT_METRICS_SLOTS commands already). The client's reader thread only. */
void metrics_record(ClientMetrics *m, int slot, bool ok, uint64_t usec);
/* n_ok + n_failed runs that took `usec` each, at once. */
void metrics_record_n(ClientMetrics *m, int slot, unsigned n_ok, unsigned n_failed, uint64_t usec);
/* The client is being removed, under the registry lock: its counters join
 * the table, in the same step that takes it off the list `metrics` adds up. */
void metrics_fold(ClientMetrics *m);
/* Free a client's entries (after metrics_fold, or unlisted). */
void metrics_free(ClientMetrics *m);

/* Append the whole exposition; -ENOMEM or 0. Any thread. */
int metrics_format(Server *s, Buffer *b);
