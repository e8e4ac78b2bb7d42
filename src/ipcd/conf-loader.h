/*
 * conf-loader.h - the inside of one configuration load, shared by conf.c
 * (the files, [Daemon], the overrides) and the section parsers
 * conf-token.c ([Token NAME]) and conf-command.c ([Command NAME]). Nothing
 * else includes it: the rest of the daemon sees conf.h.
 *
 * A Loader lives on the stack of config_load(), on the main thread (start,
 * SIGHUP) or on the reader thread of an admin's `reload`, one load at a
 * time (after start, under the server's reload_lock); the Config it builds
 * is private to it until config_load() returns it. No lock is taken here.
 *
 * The key handlers follow libinih's convention: 1 to go on (a bad value is
 * reported with loader_error() and the load goes on to find every
 * problem), 0 only when out of memory.
 */
#pragma once

#include <stdio.h>

#include "conf.h"
#include "macro.h"

typedef struct Loader {
        Config *config; /* being built; owned by config_load() */
        Buffer *errors;
        const char *path;
        FILE *f;
        unsigned line;          /* line the parser is on, counted by our reader */
        unsigned reported_line; /* last line we reported an error for */
        unsigned n_errors;
} Loader;

/* Append "path:line: message\n" to the errors, and count it. */
_printf_(2, 3) void loader_error(Loader *l, const char *fmt, ...);

/* Values shared by the sections; each reports a bad one and returns 1. */
int loader_set_uint(Loader *l, const char *key, const char *value, unsigned long min,
                    unsigned long max, unsigned *ret);
int loader_set_size(Loader *l, const char *key, const char *value, size_t min, size_t max,
                    size_t *ret);
int loader_set_groups(Loader *l, const char *key, const char *value, gid_t **gids, size_t *n);
int loader_set_role(Loader *l, const char *key, const char *value, Role *ret);

/* [Token NAME] (conf-token.c). */
int loader_handle_token(Loader *l, const char *section, const char *name, const char *value);
/* After every file: a token without a secret is an error. */
void loader_check_tokens(Loader *l);
void token_done(Token *t);

/* [Command NAME] (conf-command.c). */
int loader_handle_command(Loader *l, const char *section, const char *name, const char *value);
/* After every file: a command without a valid Exec= is an error. */
void loader_check_commands(Loader *l);
void command_config_done(CommandConfig *cmd);
