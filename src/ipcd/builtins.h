/*
 * builtins.h - the built-in commands (SPEC §5): the one list of their
 * names, roles, argument counts and help lines.
 *
 * commands.c builds its dispatch table from BUILTIN_COMMANDS (the handler
 * of NAME is cmd_NAME); conf.c refuses a [Command] section that takes one
 * of these names. Header-only, so that conf.c (and the config fuzz harness
 * built from it) need not link the handlers. Constant: any thread, no lock.
 */
#pragma once

#include <stdbool.h>
#include <string.h>

#include "macro.h"

/* X(NAME, minimum role, min args, max args (-1: any), usage, description),
 * in the order `help` lists them. */
#define BUILTIN_COMMANDS(X)                                                                        \
        X(ping, ROLE_GUEST, 0, 1, "ping [TEXT]", "answer pong, or TEXT")                           \
        X(echo, ROLE_GUEST, 0, -1, "echo TEXT...", "answer the arguments joined by spaces")        \
        X(hello, ROLE_GUEST, 0, 0, "hello", "describe the server and this connection")             \
        X(help, ROLE_GUEST, 0, 1, "help [COMMAND]",                                                \
          "list the commands you may run, or show one command's usage")                            \
        X(auth, ROLE_GUEST, 1, 1, "auth TOKEN", "raise this connection's role with a token")       \
        X(quit, ROLE_GUEST, 0, 0, "quit", "answer OK, then close the connection")                  \
        X(subscribe, ROLE_USER, 1, -1, "subscribe TOPIC...",                                       \
          "receive the events published on these topics")                                          \
        X(unsubscribe, ROLE_USER, 0, -1, "unsubscribe [TOPIC...]",                                 \
          "stop receiving these topics (all without arguments)")                                   \
        X(publish, ROLE_USER, 2, -1, "publish TOPIC MESSAGE...",                                   \
          "send an event to the topic's subscribers; answers how many got it")                     \
        X(stats, ROLE_USER, 0, 0, "stats", "show server statistics")                               \
        X(clients, ROLE_ADMIN, 0, 0, "clients", "list the connected clients")                      \
        X(reload, ROLE_ADMIN, 0, 0, "reload", "re-read the configuration and answer the result")   \
        X(metrics, ROLE_USER, 0, 0, "metrics", "show the counters in Prometheus text format")

static inline bool builtin_command_exists(const char *name)
{
#define BUILTIN_NAME(n, ...) #n,
        static const char *const names[] = {BUILTIN_COMMANDS(BUILTIN_NAME)};
#undef BUILTIN_NAME

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(names[i], name) == 0)
                        return true;
        return false;
}
