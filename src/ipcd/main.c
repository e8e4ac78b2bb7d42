/*
 * main.c - ipcd: help(), parse_argv(), run().
 *
 * Main thread only. The option globals (arg_*) are written here before
 * any other thread starts and only read afterwards; run() loads the first
 * Config and hands it to the Server (server_init()), which owns it from
 * then on.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "conf.h"
#include "listener.h"
#include "log.h"
#include "server.h"

#define TRIM_THRESHOLD (8 << 20)
#define TOP_PAD (256 << 10)

/* Exit statuses (ipcd(8)): 1 for any failure, 2 for a bad command line. */
#define EXIT_USAGE 2

static ConfigOverrides arg_overrides;
static bool arg_check_config;
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
               "  -c, --config FILE          read FILE instead of " SYSCONFDIR "/ipcd/ipcd.conf\n"
               "      --check-config         check the configuration, print each problem as\n"
               "                             file:line: message, and exit (1 on errors)\n"
               "  -l, --listen ADDR          listen on unix:PATH or tcp:HOST:PORT (repeatable;\n"
               "                             ignored when socket-activated)\n"
               "The following override the configuration file (see ipcd.conf(5)):\n"
               "      --max-clients N        refuse clients beyond N with ERR busy (default 1024)\n"
               "      --max-line-bytes N     longest request line (default 65536)\n"
               "      --queue-limit BYTES    per-client output queue limit, K/M/G suffixes\n"
               "                             (default 1M)\n"
               "      --drain-timeout SEC    at shutdown, how long clients may take their\n"
               "                             answers (default 5)\n"
               "      --send-timeout SEC     drop a client whose socket takes no byte for SEC\n"
               "                             (ClientSendTimeoutSec=, default 60; 0 never)\n"
               "      --request-timeout SEC  drop a client that does not finish a request line\n"
               "                             within SEC (RequestTimeoutSec=, default 30; 0 never)\n"
               "      --log-level LEVEL      err, warning, notice, info or debug (default info)\n"
               "      --socket-mode MODE     mode of the Unix sockets bound with --listen or by\n"
               "                             default, e.g. 0660 (default: from the umask)\n"
               "      --socket-group GROUP   group of those sockets (default: ipcd's own)\n"
               "  -h, --help                 show this help\n"
               "      --version              show the version\n"
               "\n"
               "Without --listen and without socket activation the socket is\n"
               "$RUNTIME_DIRECTORY/ipcd.sock, else /run/ipcd/ipcd.sock for root, else\n"
               "$XDG_RUNTIME_DIR/ipcd.sock. SIGHUP re-reads the configuration. See ipcd(8).\n");
}

static int parse_argv(int argc, char *argv[])
{
        enum {
                ARG_MAX_CLIENTS = 0x100,
                ARG_MAX_LINE_BYTES,
                ARG_QUEUE_LIMIT,
                ARG_DRAIN_TIMEOUT,
                ARG_LOG_LEVEL,
                ARG_SEND_TIMEOUT,
                ARG_REQUEST_TIMEOUT,
                ARG_VERSION,
                ARG_CHECK_CONFIG,
                ARG_SOCKET_MODE,
                ARG_SOCKET_GROUP,
        };
        static const struct option options[] = {
            {"config", required_argument, NULL, 'c'},
            {"check-config", no_argument, NULL, ARG_CHECK_CONFIG},
            {"listen", required_argument, NULL, 'l'},
            {"max-clients", required_argument, NULL, ARG_MAX_CLIENTS},
            {"max-line-bytes", required_argument, NULL, ARG_MAX_LINE_BYTES},
            {"queue-limit", required_argument, NULL, ARG_QUEUE_LIMIT},
            {"drain-timeout", required_argument, NULL, ARG_DRAIN_TIMEOUT},
            {"log-level", required_argument, NULL, ARG_LOG_LEVEL},
            {"send-timeout", required_argument, NULL, ARG_SEND_TIMEOUT},
            {"request-timeout", required_argument, NULL, ARG_REQUEST_TIMEOUT},
            {"socket-mode", required_argument, NULL, ARG_SOCKET_MODE},
            {"socket-group", required_argument, NULL, ARG_SOCKET_GROUP},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, ARG_VERSION},
            {},
        };
        unsigned long v;
        size_t sz;
        int c, r;

        while ((c = getopt_long(argc, argv, "c:l:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        arg_overrides.config_path = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        arg_check_config = true;
                        break;
                case 'l': {
                        char **n;
                        Address a;

                        r = address_parse_listen(optarg, &a);
                        if (r < 0) {
                                fprintf(stderr, "ipcd: invalid --listen '%s': %s\n", optarg,
                                        r == -EINVAL ? "expected unix:PATH or tcp:HOST:PORT"
                                                     : strerror(-r));
                                return -EINVAL;
                        }
                        n = realloc(arg_listen, (arg_n_listen + 1) * sizeof(*n));
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
                        arg_overrides.max_clients = v;
                        arg_overrides.has_max_clients = true;
                        break;
                case ARG_MAX_LINE_BYTES:
                        r = parse_size(optarg, &sz);
                        if (r < 0 || sz < 16 || sz > 64 * 1024 * 1024) {
                                fprintf(stderr, "ipcd: invalid --max-line-bytes '%s' (16 to 64M)\n",
                                        optarg);
                                return -EINVAL;
                        }
                        arg_overrides.max_line_bytes = sz;
                        arg_overrides.has_max_line_bytes = true;
                        break;
                case ARG_QUEUE_LIMIT:
                        r = parse_size(optarg, &sz);
                        if (r < 0 || sz < 1024) {
                                fprintf(stderr, "ipcd: invalid --queue-limit '%s' (at least 1K)\n",
                                        optarg);
                                return -EINVAL;
                        }
                        arg_overrides.queue_limit_bytes = sz;
                        arg_overrides.has_queue_limit = true;
                        break;
                case ARG_DRAIN_TIMEOUT:
                        r = parse_uint(optarg, 3600, &v);
                        if (r < 0) {
                                fprintf(stderr, "ipcd: invalid --drain-timeout '%s'\n", optarg);
                                return -EINVAL;
                        }
                        arg_overrides.drain_timeout_sec = v;
                        arg_overrides.has_drain_timeout = true;
                        break;
                case ARG_SEND_TIMEOUT:
                case ARG_REQUEST_TIMEOUT:
                        r = parse_uint(optarg, 86400 * 365, &v);
                        if (r < 0) {
                                fprintf(stderr, "ipcd: invalid --%s '%s'\n",
                                        c == ARG_SEND_TIMEOUT ? "send-timeout" : "request-timeout",
                                        optarg);
                                return -EINVAL;
                        }
                        if (c == ARG_SEND_TIMEOUT) {
                                arg_overrides.send_timeout_sec = v;
                                arg_overrides.has_send_timeout = true;
                        } else {
                                arg_overrides.request_timeout_sec = v;
                                arg_overrides.has_request_timeout = true;
                        }
                        break;
                case ARG_LOG_LEVEL:
                        r = log_level_from_string(optarg);
                        if (r < 0) {
                                fprintf(stderr, "ipcd: invalid --log-level '%s'\n", optarg);
                                return -EINVAL;
                        }
                        arg_overrides.log_level = r;
                        arg_overrides.has_log_level = true;
                        break;
                case ARG_SOCKET_MODE:
                        if (parse_socket_mode(optarg, &arg_overrides.socket_mode) < 0) {
                                fprintf(stderr, "ipcd: invalid --socket-mode '%s' (octal, up to "
                                                "0777)\n",
                                        optarg);
                                return -EINVAL;
                        }
                        arg_overrides.has_socket_mode = true;
                        break;
                case ARG_SOCKET_GROUP:
                        if (parse_group(optarg, &arg_overrides.socket_gid) < 0) {
                                fprintf(stderr, "ipcd: unknown --socket-group '%s'\n", optarg);
                                return -EINVAL;
                        }
                        arg_overrides.has_socket_group = true;
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

/* "a, b" of the files read, or a word on their absence. */
static void files_read(const Config *c, char *buf, size_t size)
{
        size_t o = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < c->n_files && o < size; i++)
                o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? ", " : "", c->files[i]);
        if (c->missing_main && o < size)
                snprintf(buf + o, size - o, "%s%s does not exist (defaults)", o ? ", " : "",
                         c->missing_main);
}

/* --check-config: which files made the configuration, and what it holds. */
static void check_config_report(const Config *c)
{
        if (c->missing_main)
                fprintf(stderr, "ipcd: warning: %s does not exist, using the defaults\n",
                        c->missing_main);
        for (size_t i = 0; i < c->n_files; i++)
                printf("read %s\n", c->files[i]);
        printf("configuration ok: %zu command(s), %zu token(s)\n", c->n_commands, c->n_tokens);
}

/* The start-up entry: what runs, and from which configuration. */
static void log_start(const Config *c)
{
        char files[2048];

        files_read(c, files, sizeof(files));
        log_info("Starting ipcd %s (protocol %d); configuration: %s; %zu command(s), %zu token(s)",
                 PACKAGE_VERSION, PROTO_VERSION, files, c->n_commands, c->n_tokens);
}

static int run(int argc, char *argv[])
{
        static Server server; /* threads may outlive run() by a hair at exit */
        _cleanup_(buffer_done) Buffer errors = BUFFER_INIT;
        _cleanup_(config_unrefp) Config *config = NULL;
        int r;

        log_open();
        r = parse_argv(argc, argv);
        if (r < 0)
                return EXIT_USAGE;
        if (r == 0)
                return 0;

        r = config_load(&arg_overrides, &config, &errors);
        if (arg_check_config) {
                if (errors.len > 0)
                        fwrite(errors.data, 1, errors.len, stderr);
                if (r >= 0)
                        check_config_report(config);
                return r < 0 ? 1 : 0;
        }
        if (r < 0) {
                if (errors.len > 0)
                        log_error("Invalid configuration:\n%.*s", (int)errors.len - 1, errors.data);
                return log_error_errno(r, "Failed to load the configuration: %m");
        }
        atomic_store(&log_max_level, config->log_level);
        log_start(config);
        listener_set_unix_access(config->socket_mode, config->has_socket_group,
                                 config->socket_gid);

        /* A client that goes away must cost an EPIPE, not the process. */
        signal(SIGPIPE, SIG_IGN);

        /* Fan-out allocates and frees a run of events per subscriber per
         * publishing batch (outbox.c). Once 1,000 subscribers had come and
         * gone, glibc's default trim threshold (128 KiB) made every batch's
         * frees shrink a heap and the next batch fault it back in: 45,000
         * page faults a second, and 100 subscribers served at 2.1M
         * deliveries/s instead of 5.2M. Free memory at the top of a heap is
         * kept up to TRIM_THRESHOLD; the tick gives back what is left over
         * every few seconds (server.c). Before any thread starts. */
        (void)mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        (void)mallopt(M_TOP_PAD, TOP_PAD);

        /* The server owns the Config from here on, even if it fails. */
        r = server_init(&server, TAKE_PTR(config), &arg_overrides);
        if (r < 0)
                return log_error_errno(r, "Failed to initialize: %m");
        r = server_open_listeners(&server, arg_listen, arg_n_listen);
        if (r >= 0)
                r = server_run(&server);
        server_done(&server);
        return r;
}

int main(int argc, char *argv[])
{
        int r = run(argc, argv);

        free(arg_listen);
        if (r > 0) /* an exit status, the reason already printed */
                return r;
        if (r < 0) {
                (void)sd_notifyf(false, "STATUS=Failed to start: %s\nERRNO=%d", strerror(-r), -r);
                return 1;
        }
        return 0;
}
