/*
 * conf.h - the daemon's settings ([Daemon] of ipcd.conf(5), and the
 * options that override it). Filled in before any thread starts and read
 * only afterwards.
 */
#pragma once

#include <stddef.h>
#include <syslog.h>

typedef struct Config {
        unsigned max_clients;
        size_t max_line_bytes;
        size_t queue_limit_bytes;
        unsigned drain_timeout_sec;
        int log_level;
} Config;

#define CONFIG_DEFAULTS                                                                            \
        ((Config){                                                                                 \
                .max_clients = 1024,                                                               \
                .max_line_bytes = 65536,                                                           \
                .queue_limit_bytes = 1024 * 1024,                                                  \
                .drain_timeout_sec = 5,                                                            \
                .log_level = LOG_INFO,                                                             \
        })

/* "1M", "64K", "65536": a size with an optional binary suffix (K, M, G). */
int parse_size(const char *s, size_t *ret);
/* A non-negative decimal integer no larger than max. */
int parse_uint(const char *s, unsigned long max, unsigned long *ret);
