/*
 * conf.c - the Config object and its load: ipcd.conf(5) and its drop-ins
 * read with libinih, the [Daemon] section, the defaults and the command
 * line's overrides laid over them; see conf.h. The [Token] and [Command]
 * sections are parsed by conf-token.c and conf-command.c (conf-loader.h).
 *
 * Threads and locks: config_load() runs at start (main.c, before any
 * other thread), then on SIGHUP (main thread) and for `reload` (an
 * admin's reader thread), those two under the server's reload_lock
 * (server_reload()): one load at a time. libinih's parse settings are
 * process globals, set by the first load. A loaded Config is immutable; its
 * reference count is atomic, so config_ref()/config_unref() and the
 * accessors are for any thread, without a lock.
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "conf-loader.h"
#include "config.h"
#include "log.h"

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

void loader_error(Loader *l, const char *fmt, ...)
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

int loader_set_uint(Loader *l, const char *key, const char *value, unsigned long min,
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

int loader_set_size(Loader *l, const char *key, const char *value, size_t min, size_t max,
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
int loader_set_groups(Loader *l, const char *key, const char *value, gid_t **gids, size_t *n)
{
        _cleanup_free_ char *copy = strdup(value);
        char *save = NULL;

        if (!copy)
                return 0;
        free(*gids);
        *gids = NULL;
        *n = 0;
        for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
                gid_t gid;
                gid_t *g;

                if (parse_group(w, &gid) < 0) {
                        loader_error(l, "%s=: unknown group '%s'", key, w);
                        continue;
                }
                g = realloc(*gids, (*n + 1) * sizeof(*g));
                if (!g)
                        return 0;
                *gids = g;
                (*gids)[(*n)++] = gid;
        }
        return 1;
}

int loader_set_role(Loader *l, const char *key, const char *value, Role *ret)
{
        int r = role_from_string(value);

        if (r < 0)
                loader_error(l, "%s= must be guest, user or admin, not '%s'", key, value);
        else
                *ret = r;
        return 1;
}

static int handle_daemon(Loader *l, const char *name, const char *value)
{
        Config *c = l->config;

        if (strcmp(name, "MaxClients") == 0)
                return loader_set_uint(l, name, value, 1, 10000000, &c->max_clients);
        if (strcmp(name, "MaxLineBytes") == 0)
                return loader_set_size(l, name, value, 16, 64 << 20, &c->max_line_bytes);
        if (strcmp(name, "QueueLimitBytes") == 0)
                return loader_set_size(l, name, value, 1024, SIZE_MAX / 4, &c->queue_limit_bytes);
        if (strcmp(name, "MaxClientsPerUID") == 0)
                return loader_set_uint(l, name, value, 0, 10000000, &c->max_clients_per_uid);
        if (strcmp(name, "MaxClientsPerAddress") == 0)
                return loader_set_uint(l, name, value, 0, 10000000, &c->max_clients_per_address);
        if (strcmp(name, "AdminReserve") == 0)
                return loader_set_uint(l, name, value, 0, 1000, &c->admin_reserve);
        if (strcmp(name, "ClientSendTimeoutSec") == 0)
                return loader_set_uint(l, name, value, 0, 86400 * 365, &c->client_send_timeout_sec);
        if (strcmp(name, "RequestTimeoutSec") == 0)
                return loader_set_uint(l, name, value, 0, 86400 * 365, &c->request_timeout_sec);
        if (strcmp(name, "ClientIdleTimeoutSec") == 0)
                return loader_set_uint(l, name, value, 0, 86400 * 365, &c->client_idle_timeout_sec);
        if (strcmp(name, "ExitIdleSec") == 0)
                return loader_set_uint(l, name, value, 0, 86400 * 365, &c->exit_idle_sec);
        if (strcmp(name, "DrainTimeoutSec") == 0)
                return loader_set_uint(l, name, value, 0, 3600, &c->drain_timeout_sec);
        if (strcmp(name, "MaxRunning") == 0)
                return loader_set_uint(l, name, value, 1, 65536, &c->max_running);
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
                return loader_set_groups(l, name, value, &c->admin_gids, &c->n_admin_gids);
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
                return loader_handle_token(l, section[5] ? section + 6 : "", name, value);
        if (strncmp(section, "Command ", 8) == 0)
                return loader_handle_command(l, section + 8, name, value);
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

/* libinih's settings (process globals): set by the first load, before
 * any thread starts. */
static void ini_set_up(void)
{
        static bool done;

        if (done)
                return;
        /* Long Exec= lines must not be cut; '#' and ';' start comments,
         * also after a value (following a blank). */
        ini_use_stack = false;
        ini_allow_realloc = true;
        ini_max_line = 65536;
        ini_inline_comment_prefixes = (char *)";#";
        ini_allow_multiline = false;
        done = true;
}

static Config *config_new(void)
{
        Config *c = calloc(1, sizeof(*c));

        if (!c)
                return NULL;
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
        return c;
}

/* The main file, then every drop-in in lexical order. */
static void loader_parse_files(Loader *l, const ConfigOverrides *o)
{
        struct dirent **list = NULL;
        int n;

        loader_parse_file(l, o->config_path ? o->config_path : CONFIG_MAIN, !!o->config_path);

        n = scandir(CONFIG_DROPIN_DIR, &list, dropin_filter, alphasort);
        for (int i = 0; i < n; i++) {
                char path[4096];

                snprintf(path, sizeof(path), "%s/%s", CONFIG_DROPIN_DIR, list[i]->d_name);
                loader_parse_file(l, path, true);
                free(list[i]);
        }
        free(list);
        if (n < 0 && errno != ENOENT) {
                (void)buffer_printf(l->errors, "%s:0: cannot read directory: %s\n",
                                    CONFIG_DROPIN_DIR, strerror(errno));
                l->n_errors++;
        }
}

static void config_apply_overrides(Config *c, const ConfigOverrides *o)
{
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
}

int config_load(const ConfigOverrides *o, Config **ret, Buffer *errors)
{
        _cleanup_(config_unrefp) Config *c = NULL;
        Loader l = {.errors = errors};

        ini_set_up();
        c = config_new();
        if (!c)
                return -ENOMEM;
        l.config = c;

        loader_parse_files(&l, o);
        /* Sections are complete only once every file is read. */
        loader_check_tokens(&l);
        loader_check_commands(&l);
        config_apply_overrides(c, o);

        if (l.n_errors > 0)
                return -EINVAL;
        *ret = TAKE_PTR(c);
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

void config_unref(Config *c)
{
        if (!c || atomic_fetch_sub_explicit(&c->n_ref, 1, memory_order_acq_rel) != 1)
                return;
        for (size_t i = 0; i < c->n_tokens; i++)
                token_done(&c->tokens[i]);
        free(c->tokens);
        for (size_t i = 0; i < c->n_commands; i++)
                command_config_done(&c->commands[i]);
        free(c->commands);
        for (size_t i = 0; i < c->n_files; i++)
                free(c->files[i]);
        free(c->files);
        free(c->missing_main);
        free(c->admin_gids);
        free(c);
}

void config_unrefp(Config **c)
{
        config_unref(*c);
}
