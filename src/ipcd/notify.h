/*
 * notify.h - what ipcd tells systemd (sd_notify): READY, STATUS, RELOADING,
 * STOPPING and WATCHDOG. Without $NOTIFY_SOCKET every call does nothing.
 *
 * Any thread may call these (sd_notify() opens its own socket each time);
 * the status line of notify_serving() is remembered for the main thread
 * only, which alone calls it (from the tick).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Start-up done: READY=1 and the first STATUS=. */
void notify_ready(size_t n_listeners);

/* Whether systemd wants watchdog pings, and how often it expects them. */
bool notify_watchdog_enabled(uint64_t *ret_usec);
void notify_watchdog(void);

/* STATUS= with the clients and commands now; sent only when it changed. */
void notify_serving(unsigned n_clients, uint64_t n_commands);

/* A reload begins (RELOADING=1, MONOTONIC_USEC=), and how it ended
 * (READY=1 either way: a failed reload keeps the running configuration). */
void notify_reloading(void);
void notify_reloaded(bool ok);

void notify_stopping(void);
