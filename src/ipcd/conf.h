/*
 * conf.h - the daemon's configuration: ipcd.conf(5) ([Daemon] for now),
 * with the command-line options laid over it.
 *
 * A Config is immutable once loaded and reference counted: the server
 * holds the current one (swapped under the registry lock on reload) and
 * each client holds the one it was accepted under, so a reload never
 * changes a value under a thread's feet.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

#include "buffer.h"

typedef struct Config {
        atomic_uint n_ref;
        unsigned max_clients;
        size_t max_line_bytes;
        size_t queue_limit_bytes;
        unsigned client_idle_timeout_sec; /* 0 = never */
        unsigned exit_idle_sec;           /* 0 = never; socket-activated only */
        unsigned drain_timeout_sec;
        unsigned max_running;
        int log_level;
} Config;

/*
 * Values given on the command line; they win over the file, on every
 * reload too. A field is set when its `has_` flag is.
 */
typedef struct ConfigOverrides {
        const char *config_path; /* NULL: SYSCONFDIR/ipcd/ipcd.conf */
        bool has_max_clients, has_max_line_bytes, has_queue_limit, has_drain_timeout, has_log_level;
        unsigned max_clients;
        size_t max_line_bytes;
        size_t queue_limit_bytes;
        unsigned drain_timeout_sec;
        int log_level;
} ConfigOverrides;

/*
 * Read the main file (a missing one is fine: defaults) and every
 * ipcd.conf.d/\*.conf beside the default one, in lexical order, then
 * apply the overrides. Every problem is appended to `errors` as a
 * "file:line: message\n" line; any problem fails the load with -EINVAL
 * and *ret untouched.
 */
int config_load(const ConfigOverrides *o, Config **ret, Buffer *errors);

Config *config_ref(Config *c);
void config_unref(Config *c);

/* "1M", "64K", "65536": a size with an optional binary suffix (K, M, G). */
int parse_size(const char *s, size_t *ret);
/* A non-negative decimal integer no larger than max. */
int parse_uint(const char *s, unsigned long max, unsigned long *ret);
