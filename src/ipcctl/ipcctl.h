/*
 * ipcctl.h - what the parts of ipcctl share: the options parsed by main.c
 * (read-only once parse_argv() is done), the exit statuses, opening a
 * session with the daemon (session.c) and the verbs.
 *
 * Verbs and session_open() are the top level: they print their own
 * diagnostics and return an exit status. Everything below them (conn.c,
 * output.c) returns -errno and prints nothing but payloads.
 */
#pragma once

#include <stdbool.h>

#include "conn.h"
#include "json.h"

typedef enum ExitStatus {
        EXIT_STATUS_OK = 0,
        EXIT_STATUS_FAILED = 1,     /* the server answered ERR, or a local failure */
        EXIT_STATUS_USAGE = 2,      /* bad command line */
        EXIT_STATUS_CONNECTION = 3, /* could not connect, or the connection broke */
        EXIT_STATUS_TIMEOUT = 4,    /* -t ran out */
} ExitStatus;

extern const char *arg_socket;
extern const char *arg_host;
extern const char *arg_token_file;
extern usec_t arg_timeout; /* 0: none */
extern JsonMode arg_json;
extern bool arg_quiet;

/*
 * Print "ipcctl: MESSAGE" on stderr, after flushing stdout so that the two
 * stay in order. As in the daemon's log.h: errno is set to `error` for %m,
 * and -abs(error) is returned, so that `return log_error_errno(r, ...)`
 * works; log_error() is the same without an error.
 */
int log_internal(int error, const char *fmt, ...) _printf_(2, 3);
#define log_error(...)            log_internal(0, __VA_ARGS__)
#define log_error_errno(e, ...)   log_internal((e), __VA_ARGS__)
/* A usage error: the message, a hint to --help; returns EXIT_STATUS_USAGE. */
int usage_error(const char *fmt, ...) _printf_(1, 2);

/*
 * Find the daemon (-s, -H, $IPCD_SOCKET, the default path), connect before
 * the deadline and authenticate with the token file if one is configured.
 * Returns 0 with *ret set, or an exit status after printing why.
 */
int session_open(usec_t deadline, Conn **ret);
/* How the session's target is shown in messages: "unix:PATH" or "tcp:HOST:PORT". */
const char *session_target(void);
/* Report that stdout could not be written (quietly for EPIPE); returns the
 * exit status. */
int log_output_error(int r);
/* Report a broken connection or a spent deadline; returns the exit status. */
int session_error(int r);

int verb_send(int argc, char *argv[]);
int verb_hello(int argc, char *argv[]);
int verb_stats(int argc, char *argv[]);
int verb_publish(int argc, char *argv[]);
int verb_listen(int argc, char *argv[]);
int verb_monitor(int argc, char *argv[]);
int run_interactive(void);
int run_pipe(void);
int run_stdio_bridge(void);
