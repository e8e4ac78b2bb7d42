/*
 * conf.c - loading ipcd.conf(5) with libinih; see conf.h.
 *
 * libinih's parse settings are process globals: they are set once, and
 * loads only happen on the main thread, so nothing here races.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "builtins.h"
#include "conf.h"
#include "secret.h"
#include "config.h"
#include "log.h"
#include "macro.h"
#include "proto.h"

#define CONFIG_MAIN       SYSCONFDIR "/ipcd/ipcd.conf"
#define CONFIG_DROPIN_DIR SYSCONFDIR "/ipcd/ipcd.conf.d"

int parse_uint(const char *s, unsigned long max, unsigned long *ret)
{
        unsigned long v;
        char *end;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || *end)
                return -EINVAL;
        if (v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_size(const char *s, size_t *ret)
{
        unsigned long long v, mult = 1;
        char *end;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno)
                return -EINVAL;
        switch (*end) {
        case '\0':
                break;
        case 'K':
        case 'k':
                mult = 1ULL << 10;
                end++;
                break;
        case 'M':
                mult = 1ULL << 20;
                end++;
                break;
        case 'G':
                mult = 1ULL << 30;
                end++;
                break;
        default:
                return -EINVAL;
        }
        if (*end == 'B' || *end == 'i') /* tolerate 1MB / 1MiB */
                end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
        if (*end)
                return -EINVAL;
        if (v > SIZE_MAX / mult)
                return -ERANGE;
        *ret = (size_t)(v * mult);
        return 0;
}

const char *role_to_string(Role r)
{
        switch (r) {
        case ROLE_GUEST:
                return "guest";
        case ROLE_USER:
                return "user";
        case ROLE_ADMIN:
                return "admin";
        }
        return "unknown";
}

static int role_from_string(const char *s)
{
        if (strcmp(s, "guest") == 0)
                return ROLE_GUEST;
        if (strcmp(s, "user") == 0)
                return ROLE_USER;
        if (strcmp(s, "admin") == 0)
                return ROLE_ADMIN;
        return -EINVAL;
}

/* State of one load: the config being built and where the parser is. */
typedef struct Loader {
        Config *config;
        Buffer *errors;
        const char *path;
        FILE *f;
        unsigned line;          /* line the parser is on, counted by our reader */
        unsigned reported_line; /* last line we reported an error for */
        unsigned n_errors;
} Loader;

_printf_(2, 3) static void loader_error(Loader *l, const char *fmt, ...)
{
        va_list ap;

        (void)buffer_printf(l->errors, "%s:%u: ", l->path, l->line);
        va_start(ap, fmt);
        (void)buffer_vprintf(l->errors, fmt, ap);
        va_end(ap);
        (void)buffer_append(l->errors, "\n", 1);
        l->reported_line = l->line;
        l->n_errors++;
}

/* fgets() that counts lines, so errors can name them (Debian's libinih
 * does not pass line numbers to the handler). */
static char *loader_read(char *str, int num, void *stream)
{
        Loader *l = stream;
        char *s = fgets(str, num, l->f);

        if (s && strchr(s, '\n'))
                l->line++;
        else if (s && feof(l->f))
                l->line++;
        return s;
}

static int set_uint(Loader *l, const char *key, const char *value, unsigned long min,
                    unsigned long max, unsigned *ret)
{
        unsigned long v;

        if (parse_uint(value, max, &v) < 0 || v < min) {
                loader_error(l, "%s= must be a whole number from %lu to %lu, not '%s'", key, min,
                             max, value);
                return 1;
        }
        *ret = (unsigned)v;
        return 1;
}

static int set_size(Loader *l, const char *key, const char *value, size_t min, size_t max,
                    size_t *ret)
{
        size_t v;

        if (parse_size(value, &v) < 0 || v < min || v > max) {
                loader_error(l,
                             "%s= must be a size from %zu to %zu bytes (K, M, G allowed), "
                             "not '%s'",
                             key, min, max, value);
                return 1;
        }
        *ret = v;
        return 1;
}

/* "wheel 27 adm": group names or numbers, resolved now. */
static int set_groups(Loader *l, const char *key, const char *value, gid_t **gids, size_t *n)
{
        _cleanup_free_ char *copy = strdup(value);
        char *save = NULL;

        if (!copy)
                return 0;
        free(*gids);
        *gids = NULL;
        *n = 0;
        for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
                unsigned long v;
                gid_t gid;
                gid_t *g;

                if (parse_uint(w, (gid_t)-2, &v) == 0)
                        gid = (gid_t)v;
                else {
                        struct group *gr = getgrnam(w);
                        if (!gr) {
                                loader_error(l, "%s=: unknown group '%s'", key, w);
                                continue;
                        }
                        gid = gr->gr_gid;
                }
                g = realloc(*gids, (*n + 1) * sizeof(*g));
                if (!g)
                        return 0;
                *gids = g;
                (*gids)[(*n)++] = gid;
        }
        return 1;
}

static int set_role(Loader *l, const char *key, const char *value, Role *ret)
{
        int r = role_from_string(value);

        if (r < 0)
                loader_error(l, "%s= must be guest, user or admin, not '%s'", key, value);
        else
                *ret = r;
        return 1;
}

/* Read a secret: the whole file, one trailing newline dropped. */
static void token_read_secret(Loader *l, Token *t, const char *path)
{
        char *secret = NULL;
        size_t n = 0;
        int r;

        /* The same rule as ipcctl --token-file (secret.h). */
        r = secret_read_file(path, true, &secret, &n);
        switch (r) {
        case 0:
                break;
        case -EBADFD:
                loader_error(l, "[Token %s]: %s is not a regular file", t->name, path);
                return;
        case -EPERM:
                loader_error(l, "[Token %s]: %s is readable by everyone; chmod o-r it", t->name,
                             path);
                return;
        case -EFBIG:
                loader_error(l, "[Token %s]: %s is longer than %d bytes", t->name, path,
                             SECRET_FILE_MAX);
                return;
        case -ENODATA:
                loader_error(l, "[Token %s]: %s is empty", t->name, path);
                return;
        case -EINVAL:
                loader_error(l, "[Token %s]: %s holds more than one line (or a NUL byte)",
                             t->name, path);
                return;
        default:
                loader_error(l, "[Token %s]: cannot read %s: %s", t->name, path, strerror(-r));
                return;
        }
        if (n < TOKEN_SECRET_MIN) {
                loader_error(l,
                             "[Token %s]: the secret in %s is %zu bytes; at least %d are needed "
                             "(e.g. head -c 24 /dev/urandom | base64)",
                             t->name, path, n, TOKEN_SECRET_MIN);
                explicit_bzero(secret, n);
                free(secret);
                return;
        }
        if (t->secret) {
                explicit_bzero(t->secret, t->secret_len);
                free(t->secret);
        }
        t->secret = secret;
        t->secret_len = n;
}

static Token *loader_token(Loader *l, const char *name)
{
        Config *c = l->config;
        Token *t;

        for (size_t i = 0; i < c->n_tokens; i++)
                if (strcmp(c->tokens[i].name, name) == 0)
                        return &c->tokens[i];
        t = realloc(c->tokens, (c->n_tokens + 1) * sizeof(*t));
        if (!t)
                return NULL;
        c->tokens = t;
        t = &c->tokens[c->n_tokens];
        *t = (Token){.name = strdup(name), .role = ROLE_USER};
        if (!t->name || asprintf(&t->where, "%s:%u", l->path, l->line) < 0) {
                free(t->name);
                return NULL;
        }
        c->n_tokens++;
        return t;
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
        ProtoRequest req = PROTO_REQUEST_INIT;
        const char *error = NULL;
        char **argv;
        int r;

        r = proto_request_parse(&req, value, strlen(value), &error);
        if (r < 0 || req.n_args == 0) {
                loader_error(l, "[Command %s]: Exec= %s", cmd->name,
                             r == -EINVAL ? error : "is empty");
                goto out;
        }
        if (req.args[0].data[0] != '/') {
                loader_error(l, "[Command %s]: Exec= must start with an absolute path, not '%s'",
                             cmd->name, req.args[0].data);
                goto out;
        }
        for (size_t i = 0; i < req.n_args; i++)
                if (memchr(req.args[i].data, '\0', req.args[i].len)) {
                        loader_error(l, "[Command %s]: Exec= has a NUL byte", cmd->name);
                        goto out;
                }
        if (access(req.args[0].data, X_OK) < 0) {
                loader_error(l, "[Command %s]: Exec= %s: %s", cmd->name, req.args[0].data,
                             strerror(errno));
                goto out;
        }
        argv = calloc(req.n_args + 1, sizeof(char *));
        if (!argv)
                goto out;
        for (size_t i = 0; i < req.n_args; i++)
                if (!(argv[i] = strdup(req.args[i].data))) {
                        for (size_t j = 0; j < i; j++)
                                free(argv[j]);
                        free(argv);
                        goto out;
                }
        if (cmd->argv)
                for (char **a = cmd->argv; *a; a++)
                        free(*a);
        free(cmd->argv);
        cmd->argv = argv;
        cmd->has_exec = true;
out:
        proto_request_done(&req);
}

static int handle_command(Loader *l, const char *section, const char *name, const char *value)
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
                set_role(l, name, value, &cmd->role);
                cmd->has_role = true;
        } else if (strcmp(name, "AllowGroups") == 0)
                return set_groups(l, name, value, &cmd->allow_gids, &cmd->n_allow_gids);
        else if (strcmp(name, "TimeoutSec") == 0)
                return set_uint(l, name, value, 0, 86400 * 7, &cmd->timeout_sec);
        else if (strcmp(name, "MaxOutputBytes") == 0)
                return set_size(l, name, value, 0, SIZE_MAX / 4, &cmd->max_output_bytes);
        else if (strcmp(name, "Description") == 0) {
                free(cmd->description);
                cmd->description = strdup(value);
                return cmd->description ? 1 : 0;
        } else
                loader_error(l, "unknown key %s= in [Command %s]", name, section);
        return 1;
}

static int handle_token(Loader *l, const char *section, const char *name, const char *value)
{
        Token *t;

        if (!*section) {
                loader_error(l, "[Token] needs a name: [Token NAME]");
                return 1;
        }
        t = loader_token(l, section);
        if (!t)
                return 0;
        if (strcmp(name, "SecretFile") == 0) {
                if (value[0] != '/')
                        loader_error(l, "SecretFile= must be an absolute path");
                else
                        token_read_secret(l, t, value);
        } else if (strcmp(name, "Credential") == 0) {
                const char *dir = getenv("CREDENTIALS_DIRECTORY");
                char path[4096];

                if (!*value || strchr(value, '/'))
                        loader_error(l, "Credential= takes a credential name, not '%s'", value);
                else if (!dir || !*dir)
                        loader_error(l,
                                     "Credential=%s: no $CREDENTIALS_DIRECTORY (give the unit "
                                     "LoadCredential=%s:PATH)",
                                     value, value);
                else {
                        snprintf(path, sizeof(path), "%s/%s", dir, value);
                        token_read_secret(l, t, path);
                }
        } else if (strcmp(name, "Role") == 0)
                set_role(l, name, value, &t->role);
        else
                loader_error(l, "unknown key %s= in [Token %s]", name, section);
        return 1;
}

int parse_socket_mode(const char *s, int *ret)
{
        char *e;
        long v;

        if (!*s || strspn(s, "01234567") != strlen(s))
                return -EINVAL;
        errno = 0;
        v = strtol(s, &e, 8);
        if (errno || *e || v > 0777)
                return -EINVAL;
        *ret = (int)v;
        return 0;
}

int parse_group(const char *s, gid_t *ret)
{
        unsigned long v;
        struct group *gr;

        if (parse_uint(s, (gid_t)-2, &v) == 0) {
                *ret = (gid_t)v;
                return 0;
        }
        gr = getgrnam(s);
        if (!gr)
                return -ENOENT;
        *ret = gr->gr_gid;
        return 0;
}

static int handle_daemon(Loader *l, const char *name, const char *value)
{
        Config *c = l->config;

        if (strcmp(name, "MaxClients") == 0)
                return set_uint(l, name, value, 1, 10000000, &c->max_clients);
        if (strcmp(name, "MaxLineBytes") == 0)
                return set_size(l, name, value, 16, 64 << 20, &c->max_line_bytes);
        if (strcmp(name, "QueueLimitBytes") == 0)
                return set_size(l, name, value, 1024, SIZE_MAX / 4, &c->queue_limit_bytes);
        if (strcmp(name, "MaxClientsPerUID") == 0)
                return set_uint(l, name, value, 0, 10000000, &c->max_clients_per_uid);
        if (strcmp(name, "MaxClientsPerAddress") == 0)
                return set_uint(l, name, value, 0, 10000000, &c->max_clients_per_address);
        if (strcmp(name, "AdminReserve") == 0)
                return set_uint(l, name, value, 0, 1000, &c->admin_reserve);
        if (strcmp(name, "ClientSendTimeoutSec") == 0)
                return set_uint(l, name, value, 0, 86400 * 365, &c->client_send_timeout_sec);
        if (strcmp(name, "RequestTimeoutSec") == 0)
                return set_uint(l, name, value, 0, 86400 * 365, &c->request_timeout_sec);
        if (strcmp(name, "ClientIdleTimeoutSec") == 0)
                return set_uint(l, name, value, 0, 86400 * 365, &c->client_idle_timeout_sec);
        if (strcmp(name, "ExitIdleSec") == 0)
                return set_uint(l, name, value, 0, 86400 * 365, &c->exit_idle_sec);
        if (strcmp(name, "DrainTimeoutSec") == 0)
                return set_uint(l, name, value, 0, 3600, &c->drain_timeout_sec);
        if (strcmp(name, "MaxRunning") == 0)
                return set_uint(l, name, value, 1, 65536, &c->max_running);
        if (strcmp(name, "LogLevel") == 0) {
                int level = log_level_from_string(value);
                if (level < 0)
                        loader_error(l,
                                     "LogLevel= must be err, warning, notice, info or "
                                     "debug, not '%s'",
                                     value);
                else
                        c->log_level = level;
                return 1;
        }
        if (strcmp(name, "AdminGroups") == 0)
                return set_groups(l, name, value, &c->admin_gids, &c->n_admin_gids);
        if (strcmp(name, "SocketMode") == 0) {
                if (parse_socket_mode(value, &c->socket_mode) < 0)
                        loader_error(l, "SocketMode= must be an octal mode up to 0777, not '%s'",
                                     value);
                return 1;
        }
        if (strcmp(name, "SocketGroup") == 0) {
                if (parse_group(value, &c->socket_gid) < 0)
                        loader_error(l, "SocketGroup=: unknown group '%s'", value);
                else
                        c->has_socket_group = true;
                return 1;
        }
        loader_error(l, "unknown key %s= in [Daemon]", name);
        return 1;
}

static int loader_handler(void *user, const char *section, const char *name, const char *value)
{
        Loader *l = user;

        if (strcmp(section, "Daemon") == 0)
                return handle_daemon(l, name, value);
        if (strncmp(section, "Token ", 6) == 0 || strcmp(section, "Token") == 0)
                return handle_token(l, section[5] ? section + 6 : "", name, value);
        if (strncmp(section, "Command ", 8) == 0)
                return handle_command(l, section + 8, name, value);
        loader_error(l,
                     "unknown section [%s] (expected [Daemon], [Token NAME] or "
                     "[Command NAME])",
                     section);
        return 1;
}

static int loader_parse_file(Loader *l, const char *path, bool must_exist)
{
        int r;

        l->path = path;
        l->line = 0;
        l->reported_line = 0;
        l->f = fopen(path, "re");
        if (!l->f) {
                if (errno == ENOENT && !must_exist) {
                        free(l->config->missing_main);
                        l->config->missing_main = strdup(path);
                        return 0;
                }
                (void)buffer_printf(l->errors, "%s:0: cannot open: %s\n", path, strerror(errno));
                l->n_errors++;
                return 0;
        }
        {
                char **m = realloc(l->config->files, (l->config->n_files + 1) * sizeof(char *));
                char *d = strdup(path);
                if (m)
                        l->config->files = m;
                if (m && d)
                        l->config->files[l->config->n_files++] = d;
                else
                        free(d);
        }
        r = ini_parse_stream(loader_read, l, loader_handler, l);
        if (r > 0 && (unsigned)r != l->reported_line) {
                /* A line the parser itself rejected (the handler never saw it). */
                unsigned saved = l->line;
                l->line = (unsigned)r;
                loader_error(l, "syntax error (expected [Section] or Key=Value)");
                l->line = saved;
        } else if (r < 0) {
                (void)buffer_printf(l->errors, "%s:0: cannot read\n", path);
                l->n_errors++;
        }
        fclose(l->f);
        l->f = NULL;
        return 0;
}

static int dropin_filter(const struct dirent *d)
{
        size_t n = strlen(d->d_name);
        return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".conf") == 0;
}

int config_load(const ConfigOverrides *o, Config **ret, Buffer *errors)
{
        static bool ini_set_up;
        Loader l = {.errors = errors};
        struct dirent **list = NULL;
        Config *c;
        int n;

        if (!ini_set_up) {
                /* Long Exec= lines must not be cut; '#' and ';' start
                 * comments, also after a value (following a blank). */
                ini_use_stack = false;
                ini_allow_realloc = true;
                ini_max_line = 65536;
                ini_inline_comment_prefixes = (char *)";#";
                ini_allow_multiline = false;
                ini_set_up = true;
        }

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        atomic_init(&c->n_ref, 1);
        c->max_clients = 1024;
        c->max_line_bytes = 65536;
        c->queue_limit_bytes = 1024 * 1024;
        c->drain_timeout_sec = 5;
        c->admin_reserve = 8;
        c->client_send_timeout_sec = 60;
        c->request_timeout_sec = 30;
        c->max_running = 16;
        c->log_level = LOG_INFO;
        c->socket_mode = -1;
        l.config = c;

        loader_parse_file(&l, o->config_path ? o->config_path : CONFIG_MAIN, !!o->config_path);

        n = scandir(CONFIG_DROPIN_DIR, &list, dropin_filter, alphasort);
        for (int i = 0; i < n; i++) {
                char path[4096];

                snprintf(path, sizeof(path), "%s/%s", CONFIG_DROPIN_DIR, list[i]->d_name);
                loader_parse_file(&l, path, true);
                free(list[i]);
        }
        free(list);
        if (n < 0 && errno != ENOENT) {
                (void)buffer_printf(errors, "%s:0: cannot read directory: %s\n", CONFIG_DROPIN_DIR,
                                    strerror(errno));
                l.n_errors++;
        }

        /* Sections are complete only once every file is read. */
        for (size_t i = 0; i < c->n_tokens; i++)
                if (!c->tokens[i].secret) {
                        (void)buffer_printf(errors,
                                            "%s: [Token %s] needs SecretFile= or Credential= "
                                            "with a readable, non-empty secret\n",
                                            c->tokens[i].where, c->tokens[i].name);
                        l.n_errors++;
                }
        for (size_t i = 0; i < c->n_commands; i++)
                if (!c->commands[i].has_exec) {
                        (void)buffer_printf(errors, "%s: [Command %s] needs a valid Exec=\n",
                                            c->commands[i].where, c->commands[i].name);
                        l.n_errors++;
                }

        if (o->has_max_clients)
                c->max_clients = o->max_clients;
        if (o->has_max_line_bytes)
                c->max_line_bytes = o->max_line_bytes;
        if (o->has_queue_limit)
                c->queue_limit_bytes = o->queue_limit_bytes;
        if (o->has_drain_timeout)
                c->drain_timeout_sec = o->drain_timeout_sec;
        if (o->has_log_level)
                c->log_level = o->log_level;
        if (o->has_send_timeout)
                c->client_send_timeout_sec = o->send_timeout_sec;
        if (o->has_request_timeout)
                c->request_timeout_sec = o->request_timeout_sec;
        if (o->has_socket_mode)
                c->socket_mode = o->socket_mode;
        if (o->has_socket_group) {
                c->socket_gid = o->socket_gid;
                c->has_socket_group = true;
        }

        if (l.n_errors > 0) {
                config_unref(c);
                return -EINVAL;
        }
        *ret = c;
        return 0;
}

unsigned config_max_per_uid(const Config *c)
{
        return c->max_clients_per_uid ? c->max_clients_per_uid : MAX(c->max_clients / 4, 1u);
}

unsigned config_max_per_address(const Config *c)
{
        return c->max_clients_per_address ? c->max_clients_per_address
                                          : MAX(c->max_clients / 4, 1u);
}

Config *config_ref(Config *c)
{
        atomic_fetch_add_explicit(&c->n_ref, 1, memory_order_relaxed);
        return c;
}

const CommandConfig *config_find_command(const Config *c, const char *name, size_t len)
{
        for (size_t i = 0; i < c->n_commands; i++)
                if (strlen(c->commands[i].name) == len &&
                    memcmp(c->commands[i].name, name, len) == 0)
                        return &c->commands[i];
        return NULL;
}

void config_unref(Config *c)
{
        if (!c || atomic_fetch_sub_explicit(&c->n_ref, 1, memory_order_acq_rel) != 1)
                return;
        for (size_t i = 0; i < c->n_tokens; i++) {
                free(c->tokens[i].name);
                if (c->tokens[i].secret)
                        explicit_bzero(c->tokens[i].secret, c->tokens[i].secret_len);
                free(c->tokens[i].secret);
                free(c->tokens[i].where);
        }
        free(c->tokens);
        for (size_t i = 0; i < c->n_files; i++)
                free(c->files[i]);
        free(c->files);
        free(c->missing_main);
        for (size_t i = 0; i < c->n_commands; i++) {
                CommandConfig *cmd = &c->commands[i];
                if (cmd->argv)
                        for (char **a = cmd->argv; *a; a++)
                                free(*a);
                free(cmd->argv);
                free(cmd->description);
                free(cmd->allow_gids);
                free(cmd->name);
                free(cmd->where);
        }
        free(c->commands);
        free(c->admin_gids);
        free(c);
}
