/*
 * blog.h - ipcd-bridge's logging: structured journal entries when stderr is
 * the journal ($JOURNAL_STREAM matches), "ipcd-bridge: <level> ..." lines on
 * stderr otherwise, as ipcd does. Callable from both threads: the journal
 * decision is taken in blog_open() before any thread starts, and the level
 * is an atomic (log_max_level, with the level names in log-core.h, shared
 * with ipcd).
 *
 * Journal fields besides MESSAGE, PRIORITY and ERRNO: IPCD_BRIDGE_DIRECTION
 * (in: broker to ipcd, out: ipcd to broker), IPCD_TOPIC (the local topic),
 * IPCD_MQTT_TOPIC and IPCD_BROKER, each only where it applies.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "log-core.h"
#include "macro.h"

void blog_open(void);

/* Structured fields of one entry; NULL members are left out. */
typedef struct LogFields {
        const char *direction;
        const char *topic;
        const char *mqtt_topic;
        const char *broker;
} LogFields;

/* A LogFields literal that survives being a macro argument. */
#define FIELDS(...) (&(LogFields){__VA_ARGS__})

/* Log at `level`; errno is set to `error` for %m. Returns -abs(error). */
int log_full(int level, int error, const LogFields *fields, const char *fmt, ...) _printf_(4, 5);

#define log_full_errno(level, error, fields, ...)                                                  \
        ({                                                                                         \
                int _l = (level);                                                                  \
                atomic_load_explicit(&log_max_level, memory_order_relaxed) >= _l                   \
                    ? log_full(_l, (error), (fields), __VA_ARGS__)                                 \
                    : -abs(error);                                                                 \
        })

#define log_debug(...)            log_full_errno(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...)             log_full_errno(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...)           log_full_errno(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...)          log_full_errno(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...)            log_full_errno(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, (e), NULL, __VA_ARGS__)
#define log_error_errno(e, ...)   log_full_errno(LOG_ERR, (e), NULL, __VA_ARGS__)
