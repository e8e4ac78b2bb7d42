/*
 * bconf.c - loading bridge.conf(5) with libinih; see bconf.h.
 *
 * Loads happen on the main thread only, before the MQTT thread exists.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "address.h"
#include "bconf.h"
#include "blog.h"
#include "macro.h"
#include "proto.h"

#define RULES_MAX 256 /* ipcd's limit of topics per connection */

typedef struct Loader {
        BridgeConfig *c;
        Buffer *errors;
        const char *path;
        FILE *f;
        unsigned line, reported_line, n_errors;
        char *password_file;
        unsigned password_line;
} Loader;

_printf_(2, 3) static void loader_error(Loader *l, const char *fmt, ...)
{
        va_list ap;

        /* line 0: a problem of the whole file (a key missing, keys that
         * do not go together), found after reading it */
        if (l->line > 0)
                (void)buffer_printf(l->errors, "%s:%u: ", l->path, l->line);
        else
                (void)buffer_printf(l->errors, "%s: ", l->path);
        va_start(ap, fmt);
        (void)buffer_vprintf(l->errors, fmt, ap);
        va_end(ap);
        (void)buffer_append(l->errors, "\n", 1);
        l->reported_line = l->line;
        l->n_errors++;
}

static OutRule *find_out(Loader *l, const char *name);
static InRule *find_in(Loader *l, const char *name);

/* A section header seen by the reader: libinih tells the handler nothing
 * about a section without keys, and "[Out deploy]" alone is a whole rule. */
static void loader_section(Loader *l, const char *s)
{
        char name[256];
        size_t n;

        s += strspn(s, " \t");
        if (*s != '[')
                return;
        n = strcspn(s, "]");
        if (s[n] != ']' || n >= sizeof(name))
                return;
        snprintf(name, sizeof(name), "%.*s", (int)n - 1, s + 1);
        if (!strncmp(name, "Out ", 4) && name[4])
                (void)find_out(l, name + 4);
        else if (!strncmp(name, "In ", 3) && name[3])
                (void)find_in(l, name + 3);
}

/* fgets() that counts lines (Debian's libinih passes no line numbers). */
static char *loader_read(char *str, int num, void *stream)
{
        Loader *l = stream;
        char *s = fgets(str, num, l->f);

        if (s && (strchr(s, '\n') || feof(l->f)))
                l->line++;
        if (s)
                loader_section(l, s);
        return s;
}

static char *where(Loader *l)
{
        char *w = NULL;

        if (asprintf(&w, "%s:%u", l->path, l->line) < 0)
                return NULL;
        return w;
}

bool mqtt_topic_name_is_valid(const char *s)
{
        size_t n = strlen(s);

        return n > 0 && n <= 65535 && !strpbrk(s, "+#");
}

bool mqtt_topic_filter_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 65535)
                return false;
        /* '+' is a whole level; '#' a whole level and the last one. */
        for (size_t i = 0; i < n; i++) {
                bool starts = i == 0 || s[i - 1] == '/';
                bool ends = i + 1 == n || s[i + 1] == '/';
                if (s[i] == '+' && !(starts && ends))
                        return false;
                if (s[i] == '#' && !(starts && i + 1 == n))
                        return false;
        }
        return true;
}

/* Replace each %H by the host name, %% by %. */
static char *expand(const char *s, const char *host)
{
        Buffer b = BUFFER_INIT;
        int r = 0;

        for (const char *p = s; *p && r >= 0; p++) {
                if (p[0] == '%' && p[1] == 'H') {
                        r = buffer_append_str(&b, host);
                        p++;
                } else if (p[0] == '%' && p[1] == '%') {
                        r = buffer_append(&b, "%", 1);
                        p++;
                } else
                        r = buffer_append(&b, p, 1);
        }
        if (r >= 0)
                r = buffer_append(&b, "", 1);
        if (r < 0) {
                buffer_done(&b);
                return NULL;
        }
        return b.data;
}

static int set_str(Loader *l, char **field, const char *value)
{
        char *v = strdup(value);

        if (!v)
                return 0;
        free(*field);
        *field = v;
        (void)l;
        return 1;
}

static int set_uint(Loader *l, const char *key, const char *value, unsigned long min,
                    unsigned long max, unsigned *ret)
{
        unsigned long v;
        char *end;

        errno = 0;
        v = strtoul(value, &end, 10);
        if (value[0] < '0' || value[0] > '9' || errno || *end || v < min || v > max) {
                loader_error(l, "invalid %s=%s (an integer from %lu to %lu)", key, value, min, max);
                return 1;
        }
        *ret = (unsigned)v;
        return 1;
}

static int set_size(Loader *l, const char *key, const char *value, size_t min, size_t *ret)
{
        unsigned long long v, mult = 1;
        char *end;

        errno = 0;
        v = strtoull(value, &end, 10);
        if (*end == 'K' || *end == 'k')
                mult = 1ULL << 10, end++;
        else if (*end == 'M')
                mult = 1ULL << 20, end++;
        else if (*end == 'G')
                mult = 1ULL << 30, end++;
        if (value[0] < '0' || value[0] > '9' || errno || *end || v > SIZE_MAX / mult ||
            v * mult < min) {
                loader_error(l, "invalid %s=%s (a size of at least %zu, K/M/G suffixes)", key,
                             value, min);
                return 1;
        }
        *ret = (size_t)(v * mult);
        return 1;
}

static int set_bool(Loader *l, const char *key, const char *value, bool *ret)
{
        if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1") ||
            !strcmp(value, "on"))
                *ret = true;
        else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0") ||
                 !strcmp(value, "off"))
                *ret = false;
        else
                loader_error(l, "invalid %s=%s (yes or no)", key, value);
        return 1;
}

static int set_qos(Loader *l, const char *value, int *ret)
{
        if (!strcmp(value, "0") || !strcmp(value, "1"))
                *ret = value[0] - '0';
        else
                loader_error(l, "invalid QoS=%s (0 or 1)", value);
        return 1;
}

static int parse_broker(Loader *l, const char *value)
{
        BridgeConfig *c = l->c;
        const char *rest;
        char *host = NULL, *port = NULL;
        unsigned long p;
        char *end;
        bool tls;
        int r;

        if (!strncmp(value, "mqtt://", 7))
                tls = false, rest = value + 7;
        else if (!strncmp(value, "mqtts://", 8))
                tls = true, rest = value + 8;
        else {
                loader_error(l, "invalid Broker=%s (mqtt://HOST[:PORT] or mqtts://HOST[:PORT])",
                             value);
                return 1;
        }
        r = address_split_host_port(rest, &host, &port);
        if (r < 0 || !host || !*host) {
                loader_error(l, "invalid Broker=%s: no host", value);
                goto out;
        }
        p = tls ? 8883 : 1883;
        if (port) {
                errno = 0;
                p = strtoul(port, &end, 10);
                if (errno || *end || p == 0 || p > 65535) {
                        loader_error(l, "invalid Broker=%s: bad port", value);
                        goto out;
                }
        }
        free(c->broker_host);
        c->broker_host = TAKE_PTR(host);
        c->broker_port = (int)p;
        c->tls = tls;
        (void)set_str(l, &c->broker, value);
out:
        free(host);
        free(port);
        return 1;
}

static int handle_bridge(Loader *l, const char *name, const char *value)
{
        BridgeConfig *c = l->c;

        if (!strcmp(name, "Broker"))
                return parse_broker(l, value);
        if (!strcmp(name, "ClientId")) {
                if (!*value || strlen(value) > 200)
                        loader_error(l, "invalid ClientId= (1 to 200 bytes)");
                return set_str(l, &c->client_id, value);
        }
        if (!strcmp(name, "Host")) {
                if (!*value || !proto_topic_is_valid(value, strlen(value)) || strchr(value, '/') ||
                    strpbrk(value, "+#")) {
                        loader_error(l, "invalid Host=%s (letters, digits and ._:@-)", value);
                        return 1;
                }
                return set_str(l, &c->host, value);
        }
        if (!strcmp(name, "KeepaliveSec"))
                return set_uint(l, name, value, 5, 65535, &c->keepalive_sec);
        if (!strcmp(name, "Username"))
                return set_str(l, &c->username, value);
        if (!strcmp(name, "PasswordFile")) {
                l->password_line = l->line;
                return set_str(l, &l->password_file, value);
        }
        if (!strcmp(name, "CAFile"))
                return set_str(l, &c->ca_file, value);
        if (!strcmp(name, "CAPath"))
                return set_str(l, &c->ca_path, value);
        if (!strcmp(name, "CertFile"))
                return set_str(l, &c->cert_file, value);
        if (!strcmp(name, "KeyFile"))
                return set_str(l, &c->key_file, value);
        if (!strcmp(name, "Socket")) {
                if (value[0] != '/')
                        loader_error(l, "invalid Socket=%s (an absolute path)", value);
                return set_str(l, &c->socket_path, value);
        }
        if (!strcmp(name, "StatusTopic"))
                return set_str(l, &c->status_topic, value);
        if (!strcmp(name, "QueueMaxEvents")) {
                unsigned v = 0;
                set_uint(l, name, value, 1, 10000000, &v);
                if (v)
                        c->queue_max_events = v;
                return 1;
        }
        if (!strcmp(name, "QueueMaxBytes"))
                return set_size(l, name, value, 1024, &c->queue_max_bytes);
        if (!strcmp(name, "CleanSession"))
                return set_bool(l, name, value, &c->clean_session);
        if (!strcmp(name, "SessionExpirySec"))
                return set_uint(l, name, value, 0, 4294967295UL, &c->session_expiry_sec);
        if (!strcmp(name, "ReconnectMaxSec"))
                return set_uint(l, name, value, 1, 3600, &c->reconnect_max_sec);
        if (!strcmp(name, "LogLevel")) {
                int v = log_level_from_string(value);
                if (v < 0)
                        loader_error(l, "invalid LogLevel=%s", value);
                else
                        c->log_level = v;
                return 1;
        }
        loader_error(l, "unknown key %s= in [Bridge]", name);
        return 1;
}

static OutRule *find_out(Loader *l, const char *name)
{
        BridgeConfig *c = l->c;
        OutRule *n;

        for (size_t i = 0; i < c->n_out; i++)
                if (!strcmp(c->out[i].name, name))
                        return &c->out[i];
        if (c->n_out >= RULES_MAX) {
                loader_error(l, "too many [Out] sections (at most %d)", RULES_MAX);
                return NULL;
        }
        n = realloc(c->out, (c->n_out + 1) * sizeof(*n));
        if (!n)
                return NULL;
        c->out = n;
        n = &c->out[c->n_out];
        *n = (OutRule){.name = strdup(name), .qos = 1, .where = where(l)};
        if (!n->name || !n->where) {
                free(n->name);
                free(n->where);
                return NULL;
        }
        c->n_out++;
        return n;
}

static InRule *find_in(Loader *l, const char *name)
{
        BridgeConfig *c = l->c;
        InRule *n;

        for (size_t i = 0; i < c->n_in; i++)
                if (!strcmp(c->in[i].name, name))
                        return &c->in[i];
        if (c->n_in >= RULES_MAX) {
                loader_error(l, "too many [In] sections (at most %d)", RULES_MAX);
                return NULL;
        }
        n = realloc(c->in, (c->n_in + 1) * sizeof(*n));
        if (!n)
                return NULL;
        c->in = n;
        n = &c->in[c->n_in];
        *n = (InRule){.name = strdup(name), .qos = 1, .retained = true, .where = where(l)};
        if (!n->name || !n->where) {
                free(n->name);
                free(n->where);
                return NULL;
        }
        c->n_in++;
        return n;
}

static bool local_topic_ok(Loader *l, const char *value)
{
        if (!proto_topic_is_valid(value, strlen(value))) {
                loader_error(l, "invalid LocalTopic=%s (1-255 of A-Za-z0-9._:/@+-)", value);
                return false;
        }
        return true;
}

static int handle_out(Loader *l, const char *section, const char *name, const char *value)
{
        OutRule *o = find_out(l, section);

        if (!o)
                return 1;
        if (!strcmp(name, "LocalTopic"))
                return local_topic_ok(l, value) ? set_str(l, &o->local_topic, value) : 1;
        if (!strcmp(name, "MqttTopic"))
                return set_str(l, &o->mqtt_topic, value);
        if (!strcmp(name, "QoS"))
                return set_qos(l, value, &o->qos);
        if (!strcmp(name, "Retain"))
                return set_bool(l, name, value, &o->retain);
        loader_error(l, "unknown key %s= in [Out %s]", name, section);
        return 1;
}

static int handle_in(Loader *l, const char *section, const char *name, const char *value)
{
        InRule *i = find_in(l, section);

        if (!i)
                return 1;
        if (!strcmp(name, "LocalTopic"))
                return local_topic_ok(l, value) ? set_str(l, &i->local_topic, value) : 1;
        if (!strcmp(name, "MqttTopic"))
                return set_str(l, &i->mqtt_filter, value);
        if (!strcmp(name, "QoS"))
                return set_qos(l, value, &i->qos);
        if (!strcmp(name, "Retained"))
                return set_bool(l, name, value, &i->retained);
        loader_error(l, "unknown key %s= in [In %s]", name, section);
        return 1;
}

static int loader_handler(void *user, const char *section, const char *name, const char *value)
{
        Loader *l = user;

        if (!strcmp(section, "Bridge"))
                return handle_bridge(l, name, value);
        if (!strncmp(section, "Out ", 4) && section[4])
                return handle_out(l, section + 4, name, value);
        if (!strncmp(section, "In ", 3) && section[3])
                return handle_in(l, section + 3, name, value);
        loader_error(l, "unknown section [%s] (expected [Bridge], [Out NAME] or [In NAME])",
                     section);
        return 1;
}

static int read_password(Loader *l)
{
        BridgeConfig *c = l->c;
        char buf[1024];
        FILE *f;
        size_t n;

        f = fopen(l->password_file, "re");
        if (!f) {
                l->line = l->password_line;
                loader_error(l, "cannot open PasswordFile=%s: %s", l->password_file,
                             strerror(errno));
                return 0;
        }
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
        free(c->password);
        c->password = strdup(buf);
        explicit_bzero(buf, sizeof(buf));
        return c->password ? 0 : -ENOMEM;
}

/* Defaults that depend on other keys, then the checks across keys. */
/* Replace *s by its expansion (%H: the host name). */
static int expand_in_place(char **s, const char *host)
{
        char *e = expand(*s, host);

        if (!e)
                return -ENOMEM;
        free(*s);
        *s = e;
        return 0;
}

/* [Bridge]: defaults, expansions and the checks that need every key. */
static int finish_bridge(Loader *l)
{
        BridgeConfig *c = l->c;
        char hn[256];

        if (!c->host) {
                if (gethostname(hn, sizeof(hn)) < 0)
                        snprintf(hn, sizeof(hn), "localhost");
                hn[sizeof(hn) - 1] = 0;
                hn[strcspn(hn, ".")] = 0; /* the short name, as topics want */
                c->host = strdup(hn);
        }
        if (!c->broker_host)
                loader_error(l, "[Bridge] Broker= is missing");
        if (!c->client_id)
                c->client_id = strdup("ipcd-bridge-%H");
        if (!c->status_topic)
                c->status_topic = strdup("ipcd/%H/status");
        if (!c->socket_path)
                c->socket_path = strdup("/run/ipcd/ipcd.sock");
        if (!c->host || !c->client_id || !c->status_topic || !c->socket_path)
                return -ENOMEM;
        if (expand_in_place(&c->client_id, c->host) < 0 ||
            expand_in_place(&c->status_topic, c->host) < 0)
                return -ENOMEM;
        if (!mqtt_topic_name_is_valid(c->status_topic))
                loader_error(l, "invalid StatusTopic=%s (no + or #)", c->status_topic);
        if ((c->cert_file == NULL) != (c->key_file == NULL))
                loader_error(l, "CertFile= and KeyFile= go together");
        if ((c->cert_file || c->ca_file || c->ca_path) && !c->tls)
                loader_error(l, "CAFile=, CAPath=, CertFile= and KeyFile= need an mqtts:// Broker=");
        if (l->password_file) {
                if (!c->username)
                        loader_error(l, "PasswordFile= needs Username=");
                else if (read_password(l) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* A rule's problem, "FILE:LINE: [Out NAME]: ..." */
#define rule_error(l, where, kind, name, fmt, ...)                                                 \
        ((void)buffer_printf((l)->errors, "%s: [%s %s]: " fmt "\n", (where), (kind), (name),       \
                             __VA_ARGS__),                                                         \
         (l)->n_errors++)

static int finish_out(Loader *l, OutRule *o)
{
        if (!o->local_topic && !(o->local_topic = strdup(o->name)))
                return -ENOMEM;
        if (!o->mqtt_topic && asprintf(&o->mqtt_topic, "ipcd/%%H/%s", o->local_topic) < 0)
                return -ENOMEM;
        if (expand_in_place(&o->mqtt_topic, l->c->host) < 0)
                return -ENOMEM;
        if (!proto_topic_is_valid(o->local_topic, strlen(o->local_topic)))
                rule_error(l, o->where, "Out", o->name, "invalid local topic '%s'", o->local_topic);
        if (!mqtt_topic_name_is_valid(o->mqtt_topic))
                rule_error(l, o->where, "Out", o->name, "invalid MqttTopic=%s (no + or #)",
                           o->mqtt_topic);
        return 0;
}

static int finish_in(Loader *l, InRule *in)
{
        if (!in->local_topic && !(in->local_topic = strdup(in->name)))
                return -ENOMEM;
        if (!in->mqtt_filter) {
                rule_error(l, in->where, "In", in->name, "%s", "MqttTopic= is missing");
                return 0;
        }
        if (expand_in_place(&in->mqtt_filter, l->c->host) < 0)
                return -ENOMEM;
        if (!proto_topic_is_valid(in->local_topic, strlen(in->local_topic)))
                rule_error(l, in->where, "In", in->name, "invalid local topic '%s'", in->local_topic);
        if (!mqtt_topic_filter_is_valid(in->mqtt_filter))
                rule_error(l, in->where, "In", in->name,
                           "invalid MqttTopic=%s (a topic filter: + and # only as whole levels, "
                           "# last)",
                           in->mqtt_filter);
        return 0;
}

static int finish(Loader *l)
{
        BridgeConfig *c = l->c;
        int r;

        l->line = 0;
        r = finish_bridge(l);
        for (size_t i = 0; r >= 0 && i < c->n_out; i++)
                r = finish_out(l, &c->out[i]);
        for (size_t i = 0; r >= 0 && i < c->n_in; i++)
                r = finish_in(l, &c->in[i]);
        if (r < 0)
                return r;
        if (c->n_out == 0 && c->n_in == 0)
                loader_error(l, "no [Out NAME] or [In NAME] section: nothing to bridge");
        return 0;
}

int bridge_config_load(const char *path, const char *socket_override, BridgeConfig **ret,
                       Buffer *errors)
{
        BridgeConfig *c;
        Loader l = {.errors = errors, .path = path};
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (BridgeConfig){
            .keepalive_sec = 30,
            .queue_max_events = 10000,
            .queue_max_bytes = 16u << 20,
            .clean_session = false,
            .session_expiry_sec = 86400,
            .reconnect_max_sec = 30,
            .log_level = LOG_INFO,
        };
        l.c = c;
        l.f = fopen(path, "re");
        if (!l.f) {
                (void)buffer_printf(errors, "%s:0: cannot open: %s\n", path, strerror(errno));
                bridge_config_free(c);
                return -EINVAL;
        }
        r = ini_parse_stream(loader_read, &l, loader_handler, &l);
        fclose(l.f);
        if (r > 0 && (unsigned)r != l.reported_line) {
                l.line = (unsigned)r;
                loader_error(&l, "syntax error (expected [Section] or Key=Value)");
        } else if (r < 0) {
                (void)buffer_printf(errors, "%s:0: cannot read\n", path);
                l.n_errors++;
        }
        if (socket_override && set_str(&l, &c->socket_path, socket_override) == 0)
                r = -ENOMEM;
        else
                r = finish(&l);
        free(l.password_file);
        if (r < 0 || l.n_errors > 0) {
                bridge_config_free(c);
                return r < 0 ? r : -EINVAL;
        }
        *ret = c;
        return 0;
}

BridgeConfig *bridge_config_free(BridgeConfig *c)
{
        if (!c)
                return NULL;
        free(c->broker);
        free(c->broker_host);
        free(c->host);
        free(c->client_id);
        free(c->username);
        if (c->password) {
                explicit_bzero(c->password, strlen(c->password));
                free(c->password);
        }
        free(c->ca_file);
        free(c->ca_path);
        free(c->cert_file);
        free(c->key_file);
        free(c->socket_path);
        free(c->status_topic);
        for (size_t i = 0; i < c->n_out; i++) {
                free(c->out[i].name);
                free(c->out[i].local_topic);
                free(c->out[i].mqtt_topic);
                free(c->out[i].where);
        }
        free(c->out);
        for (size_t i = 0; i < c->n_in; i++) {
                free(c->in[i].name);
                free(c->in[i].local_topic);
                free(c->in[i].mqtt_filter);
                free(c->in[i].where);
        }
        free(c->in);
        free(c);
        return NULL;
}
