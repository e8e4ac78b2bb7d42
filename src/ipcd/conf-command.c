/*
 * conf-command.c - [Command NAME] sections of ipcd.conf(5): a program ipcd
 * runs for clients (exec.c). The rules a command must follow are here: a
 * name of 1-64 of A-Z a-z 0-9 . _ -, never a built-in's (builtins.h); an
 * Exec= split like a request, with an absolute, executable program.
 *
 * Part of one configuration load: called by config_load() on its thread,
 * one load at a time (see conf-loader.h); it takes no lock, and the
 * CommandConfigs belong to the Config being built. config_find_command()
 * reads a loaded, immutable Config: any thread that holds a reference.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builtins.h"
#include "conf-loader.h"
#include "proto.h"

/* Free a NULL-terminated array of strings. */
static void strv_free(char **v)
{
        if (v)
                for (char **a = v; *a; a++)
                        free(*a);
        free(v);
}

static bool command_name_is_valid(const char *name)
{
        if (!*name || strlen(name) > 64)
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
                        return false;
        return true;
}

static CommandConfig *loader_command(Loader *l, const char *name)
{
        Config *c = l->config;
        CommandConfig *cmd;

        for (size_t i = 0; i < c->n_commands; i++)
                if (strcmp(c->commands[i].name, name) == 0)
                        return &c->commands[i];
        cmd = realloc(c->commands, (c->n_commands + 1) * sizeof(*cmd));
        if (!cmd)
                return NULL;
        c->commands = cmd;
        cmd = &c->commands[c->n_commands];
        *cmd = (CommandConfig){
            .name = strdup(name),
            .max_args = 0,
            .role = ROLE_ADMIN,
            .timeout_sec = 300,
            .max_output_bytes = 1024 * 1024,
        };
        if (!cmd->name || asprintf(&cmd->where, "%s:%u", l->path, l->line) < 0) {
                free(cmd->name);
                return NULL;
        }
        c->n_commands++;
        return cmd;
}

/* Exec=: split like a protocol request (quotes and escapes alike). */
static void command_set_exec(Loader *l, CommandConfig *cmd, const char *value)
{
        _cleanup_(proto_request_done) ProtoRequest req = PROTO_REQUEST_INIT;
        const char *error = NULL;
        char **argv;
        int r;

        r = proto_request_parse(&req, value, strlen(value), &error);
        if (r < 0 || req.n_args == 0) {
                loader_error(l, "[Command %s]: Exec= %s", cmd->name,
                             r == -EINVAL ? error : "is empty");
                return;
        }
        if (req.args[0].data[0] != '/') {
                loader_error(l, "[Command %s]: Exec= must start with an absolute path, not '%s'",
                             cmd->name, req.args[0].data);
                return;
        }
        for (size_t i = 0; i < req.n_args; i++)
                if (memchr(req.args[i].data, '\0', req.args[i].len)) {
                        loader_error(l, "[Command %s]: Exec= has a NUL byte", cmd->name);
                        return;
                }
        if (access(req.args[0].data, X_OK) < 0) {
                loader_error(l, "[Command %s]: Exec= %s: %s", cmd->name, req.args[0].data,
                             strerror(errno));
                return;
        }
        argv = calloc(req.n_args + 1, sizeof(char *));
        if (!argv)
                return;
        for (size_t i = 0; i < req.n_args; i++)
                if (!(argv[i] = strdup(req.args[i].data))) {
                        strv_free(argv);
                        return;
                }
        strv_free(cmd->argv);
        cmd->argv = argv;
        cmd->has_exec = true;
}

int loader_handle_command(Loader *l, const char *section, const char *name, const char *value)
{
        CommandConfig *cmd;

        if (!command_name_is_valid(section)) {
                loader_error(l, "[Command %s]: a command name is 1-64 of A-Z a-z 0-9 . _ -",
                             section);
                return 1;
        }
        if (builtin_command_exists(section)) {
                loader_error(l, "[Command %s]: that is a built-in command", section);
                return 1;
        }
        cmd = loader_command(l, section);
        if (!cmd)
                return 0;
        if (strcmp(name, "Exec") == 0)
                command_set_exec(l, cmd, value);
        else if (strcmp(name, "Arguments") == 0) {
                unsigned long v;

                if (strcmp(value, "none") == 0)
                        cmd->max_args = 0;
                else if (strcmp(value, "any") == 0)
                        cmd->max_args = -1;
                else if (parse_uint(value, 65536, &v) == 0)
                        cmd->max_args = (int)v;
                else
                        loader_error(l, "Arguments= must be none, any or a number, not '%s'",
                                     value);
        } else if (strcmp(name, "Role") == 0) {
                loader_set_role(l, name, value, &cmd->role);
                cmd->has_role = true;
        } else if (strcmp(name, "AllowGroups") == 0)
                return loader_set_groups(l, name, value, &cmd->allow_gids, &cmd->n_allow_gids);
        else if (strcmp(name, "TimeoutSec") == 0)
                return loader_set_uint(l, name, value, 0, 86400 * 7, &cmd->timeout_sec);
        else if (strcmp(name, "MaxOutputBytes") == 0)
                return loader_set_size(l, name, value, 0, SIZE_MAX / 4, &cmd->max_output_bytes);
        else if (strcmp(name, "Description") == 0) {
                free(cmd->description);
                cmd->description = strdup(value);
                return cmd->description ? 1 : 0;
        } else
                loader_error(l, "unknown key %s= in [Command %s]", name, section);
        return 1;
}

void loader_check_commands(Loader *l)
{
        const Config *c = l->config;

        for (size_t i = 0; i < c->n_commands; i++)
                if (!c->commands[i].has_exec) {
                        (void)buffer_printf(l->errors, "%s: [Command %s] needs a valid Exec=\n",
                                            c->commands[i].where, c->commands[i].name);
                        l->n_errors++;
                }
}

void command_config_done(CommandConfig *cmd)
{
        strv_free(cmd->argv);
        free(cmd->description);
        free(cmd->allow_gids);
        free(cmd->name);
        free(cmd->where);
}

const CommandConfig *config_find_command(const Config *c, const char *name, size_t len)
{
        for (size_t i = 0; i < c->n_commands; i++)
                if (strlen(c->commands[i].name) == len &&
                    memcmp(c->commands[i].name, name, len) == 0)
                        return &c->commands[i];
        return NULL;
}
