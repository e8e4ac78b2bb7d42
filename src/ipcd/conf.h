/*
 * conf.h - the daemon's configuration: ipcd.conf(5) ([Daemon], [Token],
 * [Command]), with the command-line options laid over it.
 *
 * A Config is immutable once loaded and reference counted: the server
 * holds the current one (swapped under the registry lock on reload, which
 * bumps a generation counter) and each client's reader holds its own
 * reference, which it exchanges for the current one between two read()
 * batches. So a reload applies to every connection from its next request,
 * and never changes a value under a thread's feet mid-request.
 *
 * Implemented by conf.c (the Config, its files, [Daemon] and the
 * overrides), conf-token.c ([Token]) and conf-command.c ([Command]), which
 * share conf-loader.h; the rest of the daemon includes only this header.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

#include <sys/types.h>

#include "buffer.h"

typedef enum Role {
        ROLE_GUEST,
        ROLE_USER,
        ROLE_ADMIN,
} Role;

const char *role_to_string(Role r);

/* [Token NAME]: a secret that raises a connection to `role` (auth). */
typedef struct Token {
        char *name;
        char *secret; /* never logged, never sent */
        size_t secret_len;
        Role role;
        char *where; /* "file:line" of the section, for messages */
} Token;

/* [Command NAME]: a program ipcd runs for clients. */
typedef struct CommandConfig {
        char *name;
        char **argv; /* from Exec=, NULL-terminated; argv[0] is absolute */
        char *description;
        int max_args;      /* Arguments=: -1 any, 0 none, N at most N */
        Role role;         /* minimum role (Role=) */
        gid_t *allow_gids; /* AllowGroups=: Unix peers in these may run it too */
        size_t n_allow_gids;
        unsigned timeout_sec; /* 0 = none */
        size_t max_output_bytes;
        bool has_exec, has_role;
        char *where; /* "file:line" of the section, for messages */
} CommandConfig;

typedef struct Config {
        atomic_uint n_ref;
        unsigned max_clients;
        size_t max_line_bytes;
        size_t queue_limit_bytes;
        unsigned max_clients_per_uid;     /* Unix peers that are not admin; 0: max_clients/4 */
        unsigned max_clients_per_address; /* TCP peers; 0: max_clients/4 */
        unsigned admin_reserve;           /* slots beyond max_clients for admin peers */
        unsigned client_idle_timeout_sec; /* 0 = never */
        unsigned client_send_timeout_sec; /* a socket that takes no byte that long; 0 = never */
        unsigned request_timeout_sec;     /* a started line must end within; 0 = never */
        unsigned exit_idle_sec;           /* 0 = never; socket-activated only */
        unsigned drain_timeout_sec;
        unsigned max_running;
        int log_level;
        gid_t *admin_gids; /* AdminGroups= */
        size_t n_admin_gids;
        Token *tokens;
        size_t n_tokens;
        CommandConfig *commands;
        size_t n_commands;
        int socket_mode; /* SocketMode=: standalone Unix listeners; -1: the umask's */
        bool has_socket_group;
        gid_t socket_gid; /* SocketGroup= */
        char **files;     /* the files read, in order */
        size_t n_files;
        char *missing_main; /* the default main file, when it does not exist */
} Config;

const CommandConfig *config_find_command(const Config *c, const char *name, size_t len);

/* The effective per-peer caps (their defaults follow MaxClients=). */
unsigned config_max_per_uid(const Config *c);
unsigned config_max_per_address(const Config *c);

/* Shortest secret a [Token] may have: long enough that guessing is hopeless. */
#define TOKEN_SECRET_MIN 16

/*
 * Values given on the command line; they win over the file, on every
 * reload too. A field is set when its `has_` flag is.
 */
typedef struct ConfigOverrides {
        const char *config_path; /* NULL: SYSCONFDIR/ipcd/ipcd.conf */
        bool has_max_clients, has_max_line_bytes, has_queue_limit, has_drain_timeout, has_log_level;
        bool has_send_timeout, has_request_timeout;
        unsigned send_timeout_sec;
        unsigned request_timeout_sec;
        unsigned max_clients;
        size_t max_line_bytes;
        size_t queue_limit_bytes;
        unsigned drain_timeout_sec;
        int log_level;
        bool has_socket_mode, has_socket_group;
        int socket_mode;
        gid_t socket_gid;
} ConfigOverrides;

/* "0660" (octal, at most 0777) for SocketMode=/--socket-mode. */
int parse_socket_mode(const char *s, int *ret);
/* A group name or number for SocketGroup=/--socket-group; -ENOENT if unknown. */
int parse_group(const char *s, gid_t *ret);

/*
 * Read the main file (a missing one is fine: defaults) and every
 * ipcd.conf.d/\*.conf beside the default one, in lexical order, then
 * apply the overrides. Secrets are read here too (SecretFile=, or
 * Credential= from $CREDENTIALS_DIRECTORY), so a reload picks up new ones. Every problem is
 * appended to `errors` as a "file:line: message\n" line; any problem fails the load with -EINVAL
 * and *ret untouched.
 */
int config_load(const ConfigOverrides *o, Config **ret, Buffer *errors);

Config *config_ref(Config *c);
void config_unref(Config *c);
void config_unrefp(Config **c); /* for _cleanup_() */

/* "1M", "64K", "65536": a size with an optional binary suffix (K, M, G). */
int parse_size(const char *s, size_t *ret);
/* A non-negative decimal integer no larger than max. */
int parse_uint(const char *s, unsigned long max, unsigned long *ret);
