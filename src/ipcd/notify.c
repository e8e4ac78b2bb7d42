/*
 * notify.c - the daemon's messages to systemd. See notify.h.
 */
#include <inttypes.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "notify.h"

void notify_ready(size_t n_listeners)
{
        (void)sd_notifyf(false, "READY=1\nSTATUS=Serving on %zu socket(s)", n_listeners);
}

bool notify_watchdog_enabled(uint64_t *ret_usec)
{
        return sd_watchdog_enabled(false, ret_usec) > 0;
}

void notify_watchdog(void)
{
        (void)sd_notify(false, "WATCHDOG=1");
}

void notify_serving(unsigned n_clients, uint64_t n_commands)
{
        /* main thread only: the last STATUS= sent */
        static uint64_t last_clients = UINT64_MAX, last_commands;

        if (n_clients == last_clients && n_commands == last_commands)
                return;
        last_clients = n_clients;
        last_commands = n_commands;
        (void)sd_notifyf(false, "STATUS=%u client(s), %" PRIu64 " command(s) served", n_clients,
                         n_commands);
}

void notify_reloading(void)
{
        (void)sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64 "\nSTATUS=Reloading",
                         now_usec(CLOCK_MONOTONIC));
}

void notify_reloaded(bool ok)
{
        (void)sd_notify(false, ok ? "READY=1\nSTATUS=Configuration reloaded"
                                  : "READY=1\nSTATUS=Reload failed, running configuration kept; "
                                    "see the journal");
}

void notify_stopping(void)
{
        (void)sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
}
