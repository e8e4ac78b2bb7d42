/*
 * commands.c - dispatch of every request, and the built-in commands'
 * handlers (SPEC §5); their table comes from builtins.h, configured
 * commands go to exec.c, subscribe/unsubscribe/publish to events.c.
 *
 * Threads and locks: everything here runs on the calling client's reader
 * thread, called with no lock held. Handlers append exactly one final
 * frame to c->out; c->scratch is theirs for building payloads; c->config
 * is the reader's own reference. They take, each for memory work only:
 * the registry lock (Server.lock) to read other clients (`clients`,
 * `stats`), the events lock inside it through events_append_topics(),
 * auth_lock for the failed-auth bookkeeping (`auth`); `reload` takes
 * reload_lock through server_reload().
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "builtins.h"
#include "commands.h"
#include "events.h"
#include "exec.h"
#include "config.h"
#include "log.h"
#include "time-util.h"
#include "metrics.h"
#include "server.h"

typedef struct Command {
        const char *name;
        Role role;
        int min_args, max_args; /* not counting the name; -1 = unbounded */
        const char *usage;
        const char *description;
        int (*run)(Client *c, const ProtoRequest *req);
} Command;

int reply_ok(Client *c, const void *payload, size_t len)
{
        return proto_append_ok(&c->out, payload, len) < 0 ? -ENOMEM : 0;
}

/* An ERR whose message holds lines, longer than reply_err() keeps: reload's. */
static int reply_err_lines(Client *c, const char *code, const Buffer *message)
{
        if (proto_append_frame(&c->out, PROTO_FRAME_ERR, code, message->data, message->len) < 0)
                return -ENOMEM;
        return 1;
}

static int reply_scratch(Client *c, int r)
{
        if (r < 0)
                return -ENOMEM;
        return reply_ok(c, c->scratch.data, c->scratch.len);
}


static int cmd_ping(Client *c, const ProtoRequest *req)
{
        if (req->n_args == 2)
                return reply_ok(c, req->args[1].data, req->args[1].len);
        return reply_ok(c, "pong", 4);
}

int request_join_args(const ProtoRequest *req, size_t first, Buffer *b)
{
        int r = 0;

        for (size_t i = first; i < req->n_args && r >= 0; i++) {
                if (i > first)
                        r = buffer_append(b, " ", 1);
                if (r >= 0)
                        r = buffer_append(b, req->args[i].data, req->args[i].len);
        }
        return r;
}

static int cmd_echo(Client *c, const ProtoRequest *req)
{
        buffer_clear(&c->scratch);
        return reply_scratch(c, request_join_args(req, 1, &c->scratch));
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

        Config *config = registry_config(&s->registry, NULL);
        ClientCounters k;

        registry_counters(&s->registry, &k);
        n_clients = registry_n_clients(&s->registry);

#define LOAD(x) ((uint64_t)atomic_load_explicit(&st->x, memory_order_relaxed))
        buffer_clear(&c->scratch);
        r = buffer_printf(&c->scratch,
                          "uptime_sec: %" PRIu64 "\n"
                          "clients: %u\n"
                          "clients_total: %" PRIu64 "\n"
                          "clients_refused: %" PRIu64 "\n"
                          "clients_refused_max_clients: %" PRIu64 "\n"
                          "clients_refused_per_uid: %" PRIu64 "\n"
                          "clients_refused_per_address: %" PRIu64 "\n"
                          "clients_refused_threads: %" PRIu64 "\n"
                          "max_clients: %u\n"
                          "max_clients_per_uid: %u\n"
                          "max_clients_per_address: %u\n"
                          "admin_reserve: %u\n"
                          "request_timeouts: %" PRIu64 "\n"
                          "send_timeouts: %" PRIu64 "\n"
                          "refusals_not_logged: %" PRIu64 "\n"
                          "commands_ok: %" PRIu64 "\n"
                          "commands_failed: %" PRIu64 "\n"
                          "bytes_in: %" PRIu64 "\n"
                          "bytes_out: %" PRIu64 "\n"
                          "events_published: %" PRIu64 "\n"
                          "events_delivered: %" PRIu64 "\n"
                          "events_dropped: %" PRIu64 "\n"
                          "slow_consumer_disconnects: %" PRIu64 "\n"
                          "activation: %s\n",
                          (now_usec(CLOCK_MONOTONIC) - s->start_usec) / USEC_PER_SEC, n_clients,
                          LOAD(clients_total), LOAD(clients_refused), LOAD(refused_max_clients),
                          LOAD(refused_per_uid), LOAD(refused_per_address), LOAD(refused_threads),
                          config->max_clients, config_max_per_uid(config),
                          config_max_per_address(config), config->admin_reserve,
                          LOAD(request_timeouts), LOAD(send_timeouts), LOAD(refusals_not_logged),
                          k.commands_ok, k.commands_failed, k.bytes_in, k.bytes_out,
                          LOAD(events_published), LOAD(events_delivered), LOAD(events_dropped),
                          LOAD(slow_consumer_disconnects),
                          s->socket_activated ? "socket" : "standalone");
#undef LOAD
        config_unref(config);
        for (size_t i = 0; r >= 0 && i < s->n_listeners; i++)
                r = buffer_printf(&c->scratch, "listener: %s\n", s->listeners[i].name);
        return reply_scratch(c, r);
}

/* One line of `clients`, under the registry lock (registry_foreach). */
static int append_client_line(Client *i, void *userdata)
{
        Buffer *out = userdata;
        time_t t = (time_t)(i->since_usec / USEC_PER_SEC);
        char since[32], peer[sizeof(i->peer)];
        struct tm tm;
        int r;

        strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        /* "pid=1 uid=0 gid=0" becomes one token: "pid=1,uid=0,gid=0" */
        snprintf(peer, sizeof(peer), "%s", i->peer);
        for (char *p = peer; *p; p++)
                if (*p == ' ')
                        *p = ',';
        r = buffer_printf(out,
                          "id=%" PRIu64 " transport=%s peer=%s since=%s role=%s "
                          "commands=%" PRIu64 " queued=%zu topics=",
                          i->id, transport_to_string(i->transport), peer, since,
                          role_to_string(atomic_load(&i->role)),
                          (uint64_t)atomic_load(&i->n_commands), outbox_bytes(&i->outbox));
        if (r >= 0)
                r = events_append_topics(i, out);
        if (r >= 0)
                r = buffer_append(out, "\n", 1);
        return r;
}

static int cmd_clients(Client *c, const ProtoRequest *req)
{
        buffer_clear(&c->scratch);
        return reply_scratch(c, registry_foreach(&c->server->registry, append_client_line,
                                                 &c->scratch));
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

/* Failed auth: a fixed delay, and the connection closed after this many. */
#define AUTH_FAIL_DELAY_USEC (1000 * 1000)
#define AUTH_MAX_FAILURES    5

/* Equal in time that depends on the secret's length only, not its bytes. */
static bool secret_equal(const char *secret, size_t slen, const char *given, size_t glen)
{
        volatile unsigned char d = slen != glen;

        for (size_t i = 0; i < slen; i++)
                d |= (unsigned char)secret[i] ^ (unsigned char)(glen ? given[i % glen] : 0);
        return d == 0;
}

/* Per source (a TCP address, a uid): past this many failures in a window,
 * every further failure also closes its connection. */
#define AUTH_SOURCE_WINDOW_USEC (60 * USEC_PER_SEC)
#define AUTH_SOURCE_FAILURES    20

/* Count a failure for c's source; true if the source is over its budget. */
static bool auth_source_failed(Server *s, const Client *c, bool *log, unsigned *suppressed)
{
        PeerKey key = c->peer_key.kind != PEER_NONE ? c->peer_key : peer_key_uid(c->cred.uid);
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        AuthSource *e = NULL, *oldest = &s->auth_sources[0];
        bool over;

        pthread_mutex_lock(&s->auth_lock);
        for (size_t i = 0; i < AUTH_SOURCES && !e; i++) {
                AuthSource *a = &s->auth_sources[i];
                if (a->failures > 0 && a->key.kind == key.kind &&
                    memcmp(a->key.bytes, key.bytes, sizeof(key.bytes)) == 0)
                        e = a;
                else if (a->since_usec < oldest->since_usec)
                        oldest = a;
        }
        if (!e) {
                e = oldest; /* the least recent source makes room */
                *e = (AuthSource){.key = key, .since_usec = now};
        }
        if (now - e->since_usec >= AUTH_SOURCE_WINDOW_USEC) {
                e->since_usec = now;
                e->failures = 0;
        }
        e->failures++;
        over = e->failures > AUTH_SOURCE_FAILURES;
        *log = ratelimit_below(&s->auth_log_rl);
        *suppressed = s->auth_log_rl.suppressed;
        if (*log)
                s->auth_log_rl.suppressed = 0;
        pthread_mutex_unlock(&s->auth_lock);
        return over;
}

static int cmd_auth(Client *c, const ProtoRequest *req)
{
        Server *s = c->server;
        const ProtoArg *given = &req->args[1];
        const Token *match = NULL;
        unsigned suppressed;
        bool over, log;
        Role role;

        /* Every token is compared, whatever matched before, and whatever
         * others guessed: a right token always works. */
        for (size_t i = 0; i < c->config->n_tokens; i++) {
                const Token *t = &c->config->tokens[i];
                if (secret_equal(t->secret, t->secret_len, given->data, given->len) && !match)
                        match = t;
        }

        if (match) {
                c->auth_role = MAX(c->auth_role, match->role);
                role = MAX(client_identity_role(c, c->config), c->auth_role);
                atomic_store(&c->role, role);
                c->auth_failures = 0;
                log_client(LOG_NOTICE, c, "authenticated with token %s, role %s", match->name,
                           role_to_string(role));
                buffer_clear(&c->scratch);
                return reply_scratch(
                    c, buffer_printf(&c->scratch, "role: %s\n", role_to_string(role)));
        }

        c->auth_failures++;
        over = auth_source_failed(s, c, &log, &suppressed);
        if (log)
                log_client(LOG_WARNING, c,
                           "authentication failed (%u attempt(s) on this connection%s)%s",
                           c->auth_failures, over ? "; its source is over its budget" : "",
                           suppressed ? "; similar entries were suppressed before" : "");

        /* The delay is the same for every failure: no timing to learn from,
         * and one guess a second per connection. */
        {
                struct timespec ts = usec_to_timespec(AUTH_FAIL_DELAY_USEC);
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
        }
        if (c->auth_failures >= AUTH_MAX_FAILURES || over) {
                c->closing = true;
                return reply_err(c, "denied", "authentication failed; too many attempts, closing");
        }
        return reply_err(c, "denied", "authentication failed");
}

static int cmd_reload(Client *c, const ProtoRequest *req)
{
        _cleanup_(buffer_done) Buffer errors = BUFFER_INIT;
        _cleanup_(config_unrefp) Config *config = NULL;
        int r;

        log_client(LOG_NOTICE, c, "asked for a configuration reload");
        r = server_reload(c->server, &errors);
        if (r < 0) {
                /* Every problem, one "file:line: message" per line. */
                while (errors.len > 0 && errors.data[errors.len - 1] == '\n')
                        errors.len--;
                if (errors.len == 0)
                        (void)buffer_printf(&errors, "reload failed: %s", strerror(-r));
                return reply_err_lines(c, "failed", &errors);
        }
        config = registry_config(&c->server->registry, NULL);
        buffer_clear(&c->scratch);
        return reply_scratch(c,
                             buffer_printf(&c->scratch, "reloaded: %zu command(s), %zu token(s)\n",
                                           config->n_commands, config->n_tokens));
}

static int cmd_subscribe(Client *c, const ProtoRequest *req)
{
        return events_subscribe(c, req);
}

static int cmd_unsubscribe(Client *c, const ProtoRequest *req)
{
        return events_unsubscribe(c, req);
}

static int cmd_publish(Client *c, const ProtoRequest *req)
{
        return events_publish(c, req);
}

static int cmd_metrics(Client *c, const ProtoRequest *req)
{
        buffer_clear(&c->scratch);
        return reply_scratch(c, metrics_format(c->server, &c->scratch));
}

static int cmd_help(Client *c, const ProtoRequest *req);

/* The table, from the one list in builtins.h. */
#define COMMAND_ROW(n, role, min_args, max_args, usage, description)                               \
        {#n, role, min_args, max_args, usage, description, cmd_##n},
static const Command commands[] = {BUILTIN_COMMANDS(COMMAND_ROW)};
#undef COMMAND_ROW

static const Command *command_find(const ProtoArg *name)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strlen(commands[i].name) == name->len &&
                    memcmp(commands[i].name, name->data, name->len) == 0)
                        return &commands[i];
        return NULL;
}

/* A configured command is open to its role and up, and to AllowGroups=. */
static bool configured_allowed(const Client *c, const CommandConfig *cmd)
{
        return (Role)atomic_load(&c->role) >= cmd->role ||
               client_in_groups(c, cmd->allow_gids, cmd->n_allow_gids);
}

static int help_configured(Client *c, const CommandConfig *cmd)
{
        const char *args = cmd->max_args == 0 ? "" : cmd->max_args == 1 ? " [ARG]" : " [ARG...]";

        if (cmd->description)
                return buffer_printf(&c->scratch, "%s%s - %s\n", cmd->name, args, cmd->description);
        return buffer_printf(&c->scratch, "%s%s - run %s\n", cmd->name, args, cmd->argv[0]);
}

static int cmd_help(Client *c, const ProtoRequest *req)
{
        Role role = atomic_load(&c->role);
        int r = 0;

        buffer_clear(&c->scratch);
        if (req->n_args == 2) {
                const Command *cmd = command_find(&req->args[1]);
                const CommandConfig *cc =
                    cmd ? NULL
                        : config_find_command(c->config, req->args[1].data, req->args[1].len);

                if (cmd && cmd->role <= role)
                        return reply_scratch(c, buffer_printf(&c->scratch, "%s - %s\n", cmd->usage,
                                                              cmd->description));
                if (cc && configured_allowed(c, cc))
                        return reply_scratch(c, help_configured(c, cc));
                {
                        char name[80];

                        sanitize(name, sizeof(name), req->args[1].data, req->args[1].len);
                        return reply_err(c, "unknown-command", "unknown command: %s", name);
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(commands) && r >= 0; i++)
                if (commands[i].role <= role)
                        r = buffer_printf(&c->scratch, "%s - %s\n", commands[i].usage,
                                          commands[i].description);
        for (size_t i = 0; i < c->config->n_commands && r >= 0; i++)
                if (configured_allowed(c, &c->config->commands[i]))
                        r = help_configured(c, &c->config->commands[i]);
        return reply_scratch(c, r);
}

/* Remember the command for the connection's closing journal entry. */
static void note_command_used(Client *c, const char *name)
{
        for (unsigned i = 0; i < c->n_commands_used; i++)
                if (strcmp(c->commands_used[i], name) == 0)
                        return;
        if (c->n_commands_used < CLIENT_COMMANDS_LOGGED) {
                char *d = strdup(name);
                if (d)
                        c->commands_used[c->n_commands_used++] = d;
        }
}

static int dispatch(Client *c, const Command *cmd)
{
        const ProtoRequest *req = &c->req;
        const CommandConfig *cc = NULL;
        size_t n = req->n_args - 1;
        const char *cname;
        char name[80];

        if (!cmd)
                cc = config_find_command(c->config, req->args[0].data, req->args[0].len);
        if (!cmd && !cc) {
                sanitize(name, sizeof(name), req->args[0].data, req->args[0].len);
                client_log_refusal(c, NULL, "unknown-command", "unknown command %s", name);
                return reply_err(c, "unknown-command", "unknown command: %s", name);
        }
        cname = cmd ? cmd->name : cc->name;
        if (cmd ? cmd->role > (Role)atomic_load(&c->role) : !configured_allowed(c, cc)) {
                Role need = cmd ? cmd->role : cc->role;

                client_log_refusal(c, cname, "denied", "denied %s: requires role %s, client has %s",
                                   cname, role_to_string(need),
                                   role_to_string(atomic_load(&c->role)));
                return reply_err(c, "denied", "%s requires role %s", cname, role_to_string(need));
        }
        note_command_used(c, cname);
        if (cc)
                return exec_run(c, cc, req);

        if ((int)n < cmd->min_args || (cmd->max_args >= 0 && n > (size_t)cmd->max_args))
                return reply_err(c, "bad-request", "usage: %s", cmd->usage);
        if (atomic_load_explicit(&log_max_level, memory_order_relaxed) >= LOG_DEBUG)
                log_full(LOG_DEBUG, 0, c, &cname, 1, NULL, UINT64_MAX, "%s", cname);
        return cmd->run(c, req);
}

/* The metrics slot of each built-in command, looked up once. */
static int builtin_slot[ELEMENTSOF(commands)];
static pthread_once_t builtin_slots_once = PTHREAD_ONCE_INIT;

static void builtin_slots_init(void)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                builtin_slot[i] = metrics_slot(commands[i].name);
}

/* Built-ins that answer at once, without waiting for anything: timed per
 * batch, not one by one (a clock read costs as much as a ping). */
static bool command_is_instant(const Command *cmd)
{
        return cmd->run == cmd_ping || cmd->run == cmd_echo || cmd->run == cmd_hello ||
               cmd->run == cmd_publish;
}

void commands_settle_timing(Client *c, uint64_t now)
{
        uint64_t each;

        if (c->n_untimed > 0) {
                each = (now - MIN(c->request_start_usec, now)) / c->n_untimed;
                for (unsigned i = 0; i < c->n_untimed_slots; i++)
                        metrics_record_n(&c->metrics, c->untimed[i].slot, c->untimed[i].ok,
                                         c->untimed[i].failed, each);
                c->n_untimed_slots = c->n_untimed = 0;
        }
        c->request_start_usec = now;
}

/* Count an instant built-in's run, to be timed with the others of the
 * batch. */
static void note_untimed(Client *c, int slot, bool ok)
{
        unsigned i = 0;

        while (i < c->n_untimed_slots && c->untimed[i].slot != slot)
                i++;
        if (i == CLIENT_UNTIMED_SLOTS) {
                commands_settle_timing(c, now_usec(CLOCK_MONOTONIC));
                i = 0;
        }
        if (i == c->n_untimed_slots)
                c->untimed[c->n_untimed_slots++] = (typeof(c->untimed[0])){.slot = slot};
        if (ok)
                c->untimed[i].ok++;
        else
                c->untimed[i].failed++;
        c->n_untimed++;
}

/* Every request through the table, timed for `metrics`: no lock taken for
 * a built-in. */
int command_dispatch(Client *c)
{
        const ProtoArg *name = &c->req.args[0];
        const Command *cmd = command_find(name);
        /* a monitor wants each request's own duration */
        bool instant = cmd && command_is_instant(cmd) &&
                       atomic_load_explicit(&c->server->events.n_monitors, memory_order_relaxed) == 0;
        uint64_t end, dur;
        int slot, r;

        if (cmd) {
                pthread_once(&builtin_slots_once, builtin_slots_init);
                slot = builtin_slot[cmd - commands];
        } else {
                const CommandConfig *cc = config_find_command(c->config, name->data, name->len);
                slot = metrics_slot(cc ? cc->name : NULL);
        }
        if (!instant && c->n_untimed > 0) /* this one's time starts now */
                commands_settle_timing(c, now_usec(CLOCK_MONOTONIC));
        r = dispatch(c, cmd);
        if (instant) {
                note_untimed(c, slot, r == 0);
                return r;
        }
        /* One clock read per timed request: the next request of the batch
         * starts where this one ended. */
        end = now_usec(CLOCK_MONOTONIC);
        dur = end - MIN(c->request_start_usec, end);
        c->request_start_usec = end;
        metrics_record(&c->metrics, slot, r == 0, dur);
        events_monitor(c, &c->req, r == 0 ? "ok" : r < 0 ? "failed" : "error", dur);
        return r;
}
