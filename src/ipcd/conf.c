/*
 * conf.c - loading ipcd.conf(5) with libinih; see conf.h.
 *
 * libinih's parse settings are process globals: they are set once, and
 * loads only happen on the main thread, so nothing here races.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "conf.h"
#include "config.h"
#include "log.h"
#include "macro.h"

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

static int loader_handler(void *user, const char *section, const char *name, const char *value)
{
        Loader *l = user;
        Config *c = l->config;

        if (strcmp(section, "Daemon") != 0) {
                loader_error(l, "unknown section [%s]", section);
                return 1;
        }
        if (strcmp(name, "MaxClients") == 0)
                return set_uint(l, name, value, 1, 10000000, &c->max_clients);
        if (strcmp(name, "MaxLineBytes") == 0)
                return set_size(l, name, value, 16, 64 << 20, &c->max_line_bytes);
        if (strcmp(name, "QueueLimitBytes") == 0)
                return set_size(l, name, value, 1024, SIZE_MAX / 4, &c->queue_limit_bytes);
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
                return 1; /* taken by the access control */
        loader_error(l, "unknown key %s= in [%s]", name, section);
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
                if (errno == ENOENT && !must_exist)
                        return 0;
                (void)buffer_printf(l->errors, "%s:0: cannot open: %s\n", path, strerror(errno));
                l->n_errors++;
                return 0;
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
        c->max_running = 16;
        c->log_level = LOG_INFO;
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

        if (l.n_errors > 0) {
                config_unref(c);
                return -EINVAL;
        }
        *ret = c;
        return 0;
}

Config *config_ref(Config *c)
{
        atomic_fetch_add_explicit(&c->n_ref, 1, memory_order_relaxed);
        return c;
}

void config_unref(Config *c)
{
        if (c && atomic_fetch_sub_explicit(&c->n_ref, 1, memory_order_acq_rel) == 1)
                free(c);
}
