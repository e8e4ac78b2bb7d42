/*
 * builtins.h - the names of the built-in commands (SPEC §5), which a
 * [Command] section may not take. The table in commands.c implements
 * exactly these.
 */
#pragma once

#include <stdbool.h>
#include <string.h>

static const char *const builtin_command_names[] = {
    "ping",      "echo",        "hello",   "help",  "auth",    "quit",
    "subscribe", "unsubscribe", "publish", "stats", "clients", "reload",
    "metrics",
};

static inline bool builtin_command_exists(const char *name)
{
        for (size_t i = 0; i < sizeof(builtin_command_names) / sizeof(builtin_command_names[0]);
             i++)
                if (strcmp(builtin_command_names[i], name) == 0)
                        return true;
        return false;
}
