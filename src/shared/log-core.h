/*
 * log-core.h - what the daemon's and the bridge's logging (ipcd's log.h,
 * ipcd-bridge's blog.h) have in common: the maximum level, the syslog
 * levels by name, and whether stderr is the journal. Each adds its own
 * journal fields and line prefix on top.
 *
 * log_max_level is an atomic: set at start and on reload, read by every
 * thread. The rest is plain functions without state.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <syslog.h>

extern atomic_int log_max_level;

/* Whether stderr is connected to the journal ($JOURNAL_STREAM names its
 * device and inode). */
bool log_stderr_is_journal(void);
/* "err" (or "error"), "warning" (or "warn"), ...: the level, or -EINVAL. */
int log_level_from_string(const char *s);
/* The name of a level, NULL if there is none. */
const char *log_level_to_string(int level);
