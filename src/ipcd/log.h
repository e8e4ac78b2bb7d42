/*
 * log.h - the daemon's logging: structured journal entries when stderr is
 * connected to the journal ($JOURNAL_STREAM matches), plain lines on stderr
 * otherwise. Callable from any thread; the level is set once at start (and
 * on reload, as an atomic).
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

#include "macro.h"

struct Client;

extern atomic_int log_max_level;

void log_open(void);
int log_level_from_string(const char *s);

/*
 * Log a message at `level`; when `error` is non-zero errno is set to it
 * for %m. When `client` is given its identity goes into the structured
 * fields; so do `commands` (one IPCD_COMMAND= field each: journalctl
 * matches any of them), `result` and `duration_usec` (UINT64_MAX = none).
 * Returns -abs(error), so that callers can `return log_error_errno(r, ...)`.
 */
int log_full(int level, int error, const struct Client *client, const char *const *commands,
             size_t n_commands, const char *result, uint64_t duration_usec, const char *fmt, ...)
    _printf_(8, 9);

#define log_full_errno(level, error, ...)                                                          \
        ({                                                                                         \
                int _l = (level);                                                                  \
                atomic_load_explicit(&log_max_level, memory_order_relaxed) >= _l                   \
                    ? log_full(_l, (error), NULL, NULL, 0, NULL, UINT64_MAX, __VA_ARGS__)          \
                    : -abs(error);                                                                 \
        })

#define log_debug(...)            log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)             log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...)           log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...)          log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...)            log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...)   log_full_errno(LOG_ERR, (e), __VA_ARGS__)

/* Per-client messages carry the client's identity as journal fields. */
#define log_client(level, client, ...)                                                             \
        ({                                                                                         \
                int _l = (level);                                                                  \
                if (atomic_load_explicit(&log_max_level, memory_order_relaxed) >= _l)              \
                        log_full(_l, 0, (client), NULL, 0, NULL, UINT64_MAX, __VA_ARGS__);         \
        })

/*
 * A rate limit for repeated messages (EMFILE on accept and the like):
 * at most `burst` messages per `interval_usec`; the rest are counted and
 * reported as suppressed with the next one that passes. Each RateLimit is
 * owned by one thread.
 */
typedef struct RateLimit {
        uint64_t interval_usec;
        unsigned burst;
        uint64_t begin;
        unsigned n;
        unsigned suppressed;
} RateLimit;

#define RATELIMIT_INIT(interval, b) ((RateLimit){.interval_usec = (interval), .burst = (b)})

/* True if a message may be logged now. */
bool ratelimit_below(RateLimit *rl);

uint64_t now_usec(int clock);
