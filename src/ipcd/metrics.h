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

/* Count one run of the command `name` (built-in or configured; NULL for
 * one that does not exist) that took `usec`. Any thread. */
void metrics_record(const char *name, bool ok, uint64_t usec);

/* Append the whole exposition; -ENOMEM or 0. Any thread. */
int metrics_format(Server *s, Buffer *b);
