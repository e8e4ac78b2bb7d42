/*
 * main.c - ipcd: help(), parse_argv(), run().
 *
 * The option globals (arg_*) are written here before any thread starts and
 * only read afterwards.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "conf.h"
#include "log.h"
#include "server.h"

static Config arg_config;
static char **arg_listen;
static size_t arg_n_listen;

static void help(void)
{
        printf("Usage: ipcd [OPTIONS]\n"
               "\n"
               "Socket-activated command daemon: serves protocol 1 (ipcd-protocol(7)) on the\n"
               "sockets systemd passes in, or on those given with --listen, or on the default\n"
               "Unix socket.\n"
               "\n"
               "Options:\n"
               "  -l, --listen ADDR          listen on unix:PATH or tcp:HOST:PORT (repeatable;\n"
               "                             ignored when socket-activated)\n"
               "      --max-clients N        refuse clients beyond N with ERR busy (default %u)\n"
               "      --max-line-bytes N     longest request line (default %zu)\n"
               "      --queue-limit BYTES    per-client output queue limit, K/M/G suffixes\n"
               "                             (default 1M)\n"
               "      --drain-timeout SEC    at shutdown, how long clients may take their\n"
               "                             answers (default %u)\n"
               "      --log-level LEVEL      err, warning, notice, info or debug (default info)\n"
               "  -h, --help                 show this help\n"
               "      --version              show the version\n"
               "\n"
               "Without --listen and without socket activation the socket is\n"
               "$RUNTIME_DIRECTORY/ipcd.sock, else /run/ipcd/ipcd.sock for root, else\n"
               "$XDG_RUNTIME_DIR/ipcd.sock. See ipcd(8).\n",
               CONFIG_DEFAULTS.max_clients, CONFIG_DEFAULTS.max_line_bytes,
               CONFIG_DEFAULTS.drain_timeout_sec);
}

static int parse_argv(int argc, char *argv[])
{
        enum {
                ARG_MAX_CLIENTS = 0x100,
                ARG_MAX_LINE_BYTES,
                ARG_QUEUE_LIMIT,
                ARG_DRAIN_TIMEOUT,
                ARG_LOG_LEVEL,
                ARG_VERSION,
        };
        static const struct option options[] = {
                { "listen", required_argument, NULL, 'l' },
                { "max-clients", required_argument, NULL, ARG_MAX_CLIENTS },
                { "max-line-bytes", required_argument, NULL, ARG_MAX_LINE_BYTES },
                { "queue-limit", required_argument, NULL, ARG_QUEUE_LIMIT },
                { "drain-timeout", required_argument, NULL, ARG_DRAIN_TIMEOUT },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        unsigned long v;
        size_t sz;
        int c, r;

        while ((c = getopt_long(argc, argv, "l:h", options, NULL)) >= 0) {
                switch (c) {
                case 'l': {
                        char **n = realloc(arg_listen, (arg_n_listen + 1) * sizeof(*n));
                        if (!n)
                                return -ENOMEM;
                        arg_listen = n;
                        arg_listen[arg_n_listen++] = optarg;
                        break;
                }
                case ARG_MAX_CLIENTS:
                        r = parse_uint(optarg, 10000000, &v);
                        if (r < 0 || v == 0) {
                                fprintf(stderr, "ipcd: invalid --max-clients '%s'\n", optarg);
                                return -EINVAL;
                        }
                        arg_config.max_clients = v;
                        break;
                case ARG_MAX_LINE_BYTES:
                        r = parse_size(optarg, &sz);
                        if (r < 0 || sz < 16 || sz > 64 * 1024 * 1024) {
                                fprintf(stderr,
                                        "ipcd: invalid --max-line-bytes '%s' (16 to 64M)\n",
                                        optarg);
                                return -EINVAL;
                        }
                        arg_config.max_line_bytes = sz;
                        break;
                case ARG_QUEUE_LIMIT:
                        r = parse_size(optarg, &sz);
                        if (r < 0 || sz < 1024) {
                                fprintf(stderr, "ipcd: invalid --queue-limit '%s' (at least 1K)\n",
                                        optarg);
                                return -EINVAL;
                        }
                        arg_config.queue_limit_bytes = sz;
                        break;
                case ARG_DRAIN_TIMEOUT:
                        r = parse_uint(optarg, 3600, &v);
                        if (r < 0) {
                                fprintf(stderr, "ipcd: invalid --drain-timeout '%s'\n", optarg);
                                return -EINVAL;
                        }
                        arg_config.drain_timeout_sec = v;
                        break;
                case ARG_LOG_LEVEL:
                        r = log_level_from_string(optarg);
                        if (r < 0) {
                                fprintf(stderr, "ipcd: invalid --log-level '%s'\n", optarg);
                                return -EINVAL;
                        }
                        arg_config.log_level = r;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("ipcd %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "Try 'ipcd --help'.\n");
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "ipcd: unexpected argument '%s'\nTry 'ipcd --help'.\n",
                        argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static int run(int argc, char *argv[])
{
        static Server server; /* threads may outlive run() by a hair at exit */
        int r;

        arg_config = CONFIG_DEFAULTS;
        log_open();
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        atomic_store(&log_max_level, arg_config.log_level);

        /* A client that goes away must cost an EPIPE, not the process. */
        signal(SIGPIPE, SIG_IGN);

        r = server_init(&server, &arg_config);
        if (r < 0)
                return log_error_errno(r, "Failed to initialize: %m");
        r = server_open_listeners(&server, arg_listen, arg_n_listen);
        if (r < 0)
                goto finish;
        r = server_run(&server);
finish:
        server_done(&server);
        return r;
}

int main(int argc, char *argv[])
{
        int r = run(argc, argv);

        free(arg_listen);
        if (r < 0) {
                (void)sd_notifyf(false, "STATUS=Failed to start: %s\nERRNO=%d", strerror(-r),
                                 -r);
                return r == -EINVAL ? 2 : 1;
        }
        return 0;
}
