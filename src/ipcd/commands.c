/*
 * commands.c - the built-in command table and its handlers (SPEC §5).
 *
 * Handlers run on the calling client's reader thread and append exactly
 * one final frame to c->out; c->scratch is theirs for building payloads.
 * What they read of other clients (`clients`) they read under the
 * registry lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "config.h"
#include "log.h"
#include "server.h"

typedef struct Command {
        const char *name;
        Role role;
        int min_args, max_args; /* not counting the name; -1 = unbounded */
        const char *usage;
        const char *description;
        int (*run)(Client *c, const ProtoRequest *req);
} Command;

static int reply_ok(Client *c, const void *payload, size_t len)
{
        return proto_append_ok(&c->out, payload, len) < 0 ? -ENOMEM : 0;
}

static int reply_scratch(Client *c, int r)
{
        if (r < 0)
                return -ENOMEM;
        return reply_ok(c, c->scratch.data, c->scratch.len);
}

#define reply_err(c, code, ...) (proto_append_err(&(c)->out, (code), __VA_ARGS__) < 0 ? -ENOMEM : 1)

static int cmd_ping(Client *c, const ProtoRequest *req)
{
        if (req->n_args == 2)
                return reply_ok(c, req->args[1].data, req->args[1].len);
        return reply_ok(c, "pong", 4);
}

static int cmd_echo(Client *c, const ProtoRequest *req)
{
        int r = 0;

        buffer_clear(&c->scratch);
        for (size_t i = 1; i < req->n_args && r >= 0; i++) {
                if (i > 1)
                        r = buffer_append(&c->scratch, " ", 1);
                if (r >= 0)
                        r = buffer_append(&c->scratch, req->args[i].data, req->args[i].len);
        }
        return reply_scratch(c, r);
}

static int cmd_hello(Client *c, const ProtoRequest *req)
{
        buffer_clear(&c->scratch);
        return reply_scratch(c, buffer_printf(&c->scratch,
                                              "server: ipcd\n"
                                              "version: %s\n"
                                              "protocol: %d\n"
                                              "client: %" PRIu64 "\n"
                                              "transport: %s\n"
                                              "peer: %s\n"
                                              "role: %s\n",
                                              PACKAGE_VERSION, PROTO_VERSION, c->id,
                                              transport_to_string(c->transport), c->peer,
                                              role_to_string(atomic_load(&c->role))));
}

static int cmd_quit(Client *c, const ProtoRequest *req)
{
        c->closing = true;
        return reply_ok(c, NULL, 0);
}

static int cmd_stats(Client *c, const ProtoRequest *req)
{
        Server *s = c->server;
        Stats *st = &s->stats;
        unsigned n_clients;
        int r;

        Config *config;

        pthread_mutex_lock(&s->lock);
        n_clients = s->n_clients;
        config = config_ref(s->config);
        pthread_mutex_unlock(&s->lock);

#define LOAD(x) ((uint64_t)atomic_load_explicit(&st->x, memory_order_relaxed))
        buffer_clear(&c->scratch);
        r = buffer_printf(&c->scratch,
                          "uptime_sec: %" PRIu64 "\n"
                          "clients: %u\n"
                          "clients_total: %" PRIu64 "\n"
                          "clients_refused: %" PRIu64 "\n"
                          "max_clients: %u\n"
                          "commands_ok: %" PRIu64 "\n"
                          "commands_failed: %" PRIu64 "\n"
                          "bytes_in: %" PRIu64 "\n"
                          "bytes_out: %" PRIu64 "\n"
                          "events_published: %" PRIu64 "\n"
                          "events_delivered: %" PRIu64 "\n"
                          "events_dropped: %" PRIu64 "\n"
                          "slow_consumer_disconnects: %" PRIu64 "\n"
                          "activation: %s\n",
                          (now_usec(CLOCK_MONOTONIC) - s->start_usec) / 1000000, n_clients,
                          LOAD(clients_total), LOAD(clients_refused), config->max_clients,
                          LOAD(commands_ok), LOAD(commands_failed), LOAD(bytes_in), LOAD(bytes_out),
                          LOAD(events_published), LOAD(events_delivered), LOAD(events_dropped),
                          LOAD(slow_consumer_disconnects),
                          s->socket_activated ? "socket" : "standalone");
#undef LOAD
        config_unref(config);
        for (size_t i = 0; r >= 0 && i < s->n_listeners; i++)
                r = buffer_printf(&c->scratch, "listener: %s\n", s->listeners[i].name);
        return reply_scratch(c, r);
}

static int cmd_clients(Client *c, const ProtoRequest *req)
{
        Server *s = c->server;
        int r = 0;

        buffer_clear(&c->scratch);
        pthread_mutex_lock(&s->lock);
        for (Client *i = s->clients; i && r >= 0; i = i->next) {
                time_t t = (time_t)(i->since_usec / 1000000);
                char since[32], peer[sizeof(i->peer)];
                struct tm tm;

                strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
                /* "pid=1 uid=0 gid=0" becomes one token: "pid=1,uid=0,gid=0" */
                snprintf(peer, sizeof(peer), "%s", i->peer);
                for (char *p = peer; *p; p++)
                        if (*p == ' ')
                                *p = ',';
                r = buffer_printf(&c->scratch,
                                  "id=%" PRIu64 " transport=%s peer=%s since=%s commands=%" PRIu64
                                  " queued=%zu topics=\n",
                                  i->id, transport_to_string(i->transport), peer, since,
                                  (uint64_t)atomic_load(&i->n_commands), queue_bytes(&i->queue));
        }
        pthread_mutex_unlock(&s->lock);
        return reply_scratch(c, r);
}

/* Print a client-supplied name safely in a one-line message. */
static void sanitize(char *dst, size_t size, const char *src, size_t len)
{
        size_t o = 0, i;

        for (i = 0; i < len && o + 8 <= size; i++) {
                unsigned char ch = src[i];
                if (ch >= 0x20 && ch < 0x7f)
                        dst[o++] = ch;
                else
                        o += snprintf(dst + o, size - o, "\\x%02x", ch);
        }
        if (i < len) {
                memcpy(dst + o, "...", 3);
                o += 3;
        }
        dst[o] = '\0';
}

static int cmd_help(Client *c, const ProtoRequest *req);

static const Command commands[] = {
    {"ping", ROLE_GUEST, 0, 1, "ping [TEXT]", "answer pong, or TEXT", cmd_ping},
    {"echo", ROLE_GUEST, 0, -1, "echo TEXT...", "answer the arguments joined by spaces", cmd_echo},
    {"hello", ROLE_GUEST, 0, 0, "hello", "describe the server and this connection", cmd_hello},
    {"help", ROLE_GUEST, 0, 1, "help [COMMAND]",
     "list the commands you may run, or show one command's usage", cmd_help},
    {"quit", ROLE_GUEST, 0, 0, "quit", "answer OK, then close the connection", cmd_quit},
    {"stats", ROLE_USER, 0, 0, "stats", "show server statistics", cmd_stats},
    {"clients", ROLE_ADMIN, 0, 0, "clients", "list the connected clients", cmd_clients},
};

static const Command *command_find(const ProtoArg *name)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strlen(commands[i].name) == name->len &&
                    memcmp(commands[i].name, name->data, name->len) == 0)
                        return &commands[i];
        return NULL;
}

static int cmd_help(Client *c, const ProtoRequest *req)
{
        Role role = atomic_load(&c->role);
        int r = 0;

        buffer_clear(&c->scratch);
        if (req->n_args == 2) {
                const Command *cmd = command_find(&req->args[1]);
                if (!cmd || cmd->role > role) {
                        char name[80];

                        sanitize(name, sizeof(name), req->args[1].data, req->args[1].len);
                        return reply_err(c, "unknown-command", "unknown command: %s", name);
                }
                return reply_scratch(
                    c, buffer_printf(&c->scratch, "%s - %s\n", cmd->usage, cmd->description));
        }
        for (size_t i = 0; i < ELEMENTSOF(commands) && r >= 0; i++)
                if (commands[i].role <= role)
                        r = buffer_printf(&c->scratch, "%s - %s\n", commands[i].usage,
                                          commands[i].description);
        return reply_scratch(c, r);
}

int command_dispatch(Client *c)
{
        const ProtoRequest *req = &c->req;
        const Command *cmd = command_find(&req->args[0]);
        size_t n = req->n_args - 1;
        char name[80];

        if (!cmd) {
                sanitize(name, sizeof(name), req->args[0].data, req->args[0].len);
                return reply_err(c, "unknown-command", "unknown command: %s", name);
        }
        if (cmd->role > (Role)atomic_load(&c->role)) {
                log_client(LOG_NOTICE, c, "denied %s: requires role %s", cmd->name,
                           role_to_string(cmd->role));
                return reply_err(c, "denied", "%s requires role %s", cmd->name,
                                 role_to_string(cmd->role));
        }
        if ((int)n < cmd->min_args || (cmd->max_args >= 0 && n > (size_t)cmd->max_args))
                return reply_err(c, "bad-request", "usage: %s", cmd->usage);

        {
                unsigned i = 0;

                while (i < c->n_commands_used && c->commands_used[i] != cmd->name)
                        i++;
                if (i == c->n_commands_used && i < CLIENT_COMMANDS_LOGGED)
                        c->commands_used[c->n_commands_used++] = cmd->name;
        }
        if (atomic_load_explicit(&log_max_level, memory_order_relaxed) >= LOG_DEBUG)
                log_full(LOG_DEBUG, 0, c, &cmd->name, 1, NULL, UINT64_MAX, "%s", cmd->name);
        return cmd->run(c, req);
}
