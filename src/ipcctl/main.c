/*
 * main.c - ipcctl, the command-line client of ipcd (SPEC §9): options,
 * help, the verb table and dispatch. With no verb it runs the interactive
 * mode on a terminal and the pipe mode otherwise.
 *
 * Owns the arg_* option globals: written by parse_argv() only, read by the
 * verbs afterwards. ipcctl is single-threaded.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "address.h"
#include "config.h"
#include "ipcctl.h"

const char *arg_socket = NULL;
const char *arg_host = NULL;
const char *arg_token_file = NULL;
usec_t arg_timeout = 0;
JsonMode arg_json = JSON_OFF;
bool arg_quiet = false;
static bool arg_stdio_bridge = false;

typedef struct Verb {
        const char *verb;
        int (*function)(int argc, char *argv[]);
        const char *args;
        const char *description;
} Verb;

static const Verb verbs[] = {
    {"send", verb_send, "COMMAND [ARG...]", "Send one command, print its answer"},
    {"hello", verb_hello, "", "Show the server and this connection"},
    {"stats", verb_stats, "", "Show the server's counters"},
    {"publish", verb_publish, "TOPIC MESSAGE...", "Publish an event (words joined by blanks)"},
    {"listen", verb_listen, "TOPIC... [--count N] [--reconnect]",
     "Print events until interrupted"},
    {"monitor", verb_monitor, "[--count N]",
     "Print every command as it runs: who, what, result, duration (admin)"},
};

static void log_prefixed(int error, const char *fmt, va_list ap) _printf_(2, 0);

static void log_prefixed(int error, const char *fmt, va_list ap)
{
        fflush(stdout);
        fputs("ipcctl: ", stderr);
        errno = error;
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
}

int log_internal(int error, const char *fmt, ...)
{
        va_list ap;

        error = abs(error);
        va_start(ap, fmt);
        log_prefixed(error, fmt, ap);
        va_end(ap);
        return -error;
}

int usage_error(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        log_prefixed(0, fmt, ap);
        va_end(ap);
        fputs("Try 'ipcctl --help' for more information.\n", stderr);
        return EXIT_STATUS_USAGE;
}

int log_output_error(int r)
{
        /* A reader that went away (ipcctl listen x | head -1) is no news. */
        if (r != -EPIPE)
                log_error_errno(r, "cannot write output: %m");
        return EXIT_STATUS_FAILED;
}

static void help(void)
{
        char path[ADDRESS_STRING_MAX];

        if (address_client_socket_path(path, sizeof(path)) < 0)
                snprintf(path, sizeof(path), "/run/ipcd/ipcd.sock");

        printf("Usage: ipcctl [OPTIONS] VERB [ARG...]\n"
               "       ipcctl [OPTIONS]   (commands from a terminal or a pipe)\n"
               "\n"
               "Send commands to ipcd and print the answers.\n"
               "\n"
               "Verbs:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                char buf[64];
                snprintf(buf, sizeof(buf), "%s %s", verbs[i].verb, verbs[i].args);
                /* a long usage gets a line of its own */
                if (strlen(buf) > 29)
                        printf("  %s\n  %-29s %s\n", buf, "", verbs[i].description);
                else
                        printf("  %-29s %s\n", buf, verbs[i].description);
        }
        printf(
            "\n"
            "Without a verb, ipcctl reads commands written in the protocol's syntax, one\n"
            "per line: with line editing and history on a terminal (exit or Ctrl-D to\n"
            "leave), pipelined from a pipe or file (exit status 1 if any command failed).\n"
            "\n"
            "Options:\n"
            "  -s, --socket PATH             Connect to the Unix socket PATH\n"
            "  -H, --host HOST[:PORT]        Connect over TCP (port %d by default)\n"
            "  -H, --host ssh:[USER@]HOST[:PORT]\n"
            "                                Connect over SSH to the daemon's Unix socket on\n"
            "                                HOST (its default one, or -s PATH there), as the\n"
            "                                SSH login's user ($IPCCTL_SSH: ssh to run)\n"
            "      --token-file FILE         Authenticate with the secret in FILE\n"
            "                                (default: $IPCD_TOKEN_FILE)\n"
            "  -t, --timeout SEC             Give up after SEC seconds (decimals allowed):\n"
            "                                connecting and the answer; for listen, until\n"
            "                                subscribed; without a verb, connecting (on a\n"
            "                                terminal) or the whole run (pipe)\n"
            "      --json[=typed|frames]     Print JSON, one value per line. typed (the\n"
            "                                default): answers as objects, arrays, numbers\n"
            "                                and strings (stats as {\"clients\":1,...}),\n"
            "                                errors as {\"error\":CODE,\"message\":...}, events\n"
            "                                as {\"topic\":...,\"payload\":...}, streamed output\n"
            "                                as {\"chunk\":...}; frames: each frame as received,\n"
            "                                {\"type\":\"OK\",\"payload\":\"...\"}; bytes that are\n"
            "                                not valid UTF-8 appear as \\u00XX of their value\n"
            "  -q, --quiet                   Print no payloads, only errors\n"
            "      --stdio-bridge            Copy stdin and stdout to the daemon's Unix socket\n"
            "                                (-s, or the default): the far side of -H ssh:\n"
            "  -h, --help                    Show this help\n"
            "      --version                 Show the version\n"
            "\n"
            "The daemon is found at -s, else -H, else $IPCD_SOCKET, else %s.\n"
            "\n"
            "Exit status: 0 success, 1 the server answered ERR, 2 usage error,\n"
            "3 could not connect or the connection broke, 4 timed out.\n"
            "See ipcctl(1).\n",
            PROTO_DEFAULT_PORT, path);
}

static int parse_timeout(const char *s, usec_t *ret)
{
        char *e;
        double v, us;
        usec_t t;

        if (!((s[0] >= '0' && s[0] <= '9') || s[0] == '.'))
                return -EINVAL;
        errno = 0;
        v = strtod(s, &e);
        /* NaN fails every comparison, so "v > 0" also rejects it. */
        if (errno || *e || !(v > 0) || v > 1e9)
                return -EINVAL;
        us = v * 1e6;
        t = (usec_t)us;
        *ret = (double)t < us ? t + 1 : t;
        return 0;
}

/* Returns 1 to go on, 0 to exit successfully (help, version), or -EINVAL
 * after printing a usage error. */
static int parse_argv(int argc, char *argv[])
{
        enum {
                ARG_VERSION = 0x100,
                ARG_TOKEN_FILE,
                ARG_JSON,
                ARG_STDIO_BRIDGE,
        };
        static const struct option options[] = {
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, ARG_VERSION},
            {"socket", required_argument, NULL, 's'},
            {"host", required_argument, NULL, 'H'},
            {"token-file", required_argument, NULL, ARG_TOKEN_FILE},
            {"timeout", required_argument, NULL, 't'},
            {"json", optional_argument, NULL, ARG_JSON},
            {"quiet", no_argument, NULL, 'q'},
            {"stdio-bridge", no_argument, NULL, ARG_STDIO_BRIDGE},
            {},
        };
        _cleanup_free_ char *host = NULL, *port = NULL;
        int c;

        /* "+": options end at the verb, whose arguments may look like
         * options (ipcctl send echo -n). ":": report errors ourselves. */
        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:hs:H:t:q", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("ipcctl %s\n", PACKAGE_VERSION);
                        return 0;
                case 's':
                        if (!*optarg) {
                                usage_error("empty socket path");
                                return -EINVAL;
                        }
                        arg_socket = optarg;
                        break;
                case 'H': {
                        /* ssh:[USER@]HOST[:PORT] has the HOST[:PORT] of TCP. */
                        const char *hp = optarg, *at;

                        if (strncmp(hp, "ssh:", 4) == 0) {
                                hp += 4;
                                at = strrchr(hp, '@');
                                if (at)
                                        hp = at + 1;
                        }
                        if (address_split_host_port(hp, &host, &port) < 0) {
                                usage_error("invalid host '%s' (HOST, HOST:PORT, [IPV6], "
                                            "[IPV6]:PORT or ssh:[USER@]HOST[:PORT])",
                                            optarg);
                                return -EINVAL;
                        }
                        free(TAKE_PTR(host));
                        free(TAKE_PTR(port));
                        arg_host = optarg;
                        break;
                }
                case ARG_TOKEN_FILE:
                        arg_token_file = optarg;
                        break;
                case 't':
                        if (parse_timeout(optarg, &arg_timeout) < 0) {
                                usage_error("invalid timeout '%s' (seconds, > 0)", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_JSON:
                        if (!optarg || strcmp(optarg, "typed") == 0)
                                arg_json = JSON_TYPED;
                        else if (strcmp(optarg, "frames") == 0)
                                arg_json = JSON_FRAMES;
                        else {
                                usage_error("invalid --json '%s' (typed or frames)", optarg);
                                return -EINVAL;
                        }
                        break;
                case 'q':
                        arg_quiet = true;
                        break;
                case ARG_STDIO_BRIDGE:
                        arg_stdio_bridge = true;
                        break;
                case ':':
                        usage_error("option '%s' needs an argument", argv[optind - 1]);
                        return -EINVAL;
                default:
                        if (optopt > 0 && optopt < 0x100)
                                usage_error("unknown option '-%c'", optopt);
                        else
                                usage_error("unknown option '%s'", argv[optind - 1]);
                        return -EINVAL;
                }
        }

        /* With ssh:, -s names the socket on the far side. */
        if (arg_socket && arg_host && strncmp(arg_host, "ssh:", 4) != 0) {
                usage_error("-s and -H cannot be used together (except with -H ssh:)");
                return -EINVAL;
        }
        return 1;
}

static int run(int argc, char *argv[])
{
        const char *name;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_STATUS_USAGE : EXIT_STATUS_OK;

        if (arg_stdio_bridge) {
                if (optind < argc || arg_host)
                        return usage_error("--stdio-bridge takes no verb and no -H");
                return run_stdio_bridge();
        }
        if (optind >= argc)
                return isatty(STDIN_FILENO) ? run_interactive() : run_pipe();

        name = argv[optind];
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(verbs[i].verb, name) == 0)
                        return verbs[i].function(argc - optind, argv + optind);
        /* A command of the daemon typed as a verb: say how to send it. */
        if (answer_kind(name, 0) != ANSWER_STREAM || strcmp(name, "monitor") == 0)
                return usage_error("unknown verb '%s' (did you mean: ipcctl send %s%s?)", name,
                                   name, argc - optind > 1 ? " ..." : "");
        return usage_error("unknown verb '%s' (the daemon's commands go after send: ipcctl "
                           "send %s)",
                           name, name);
}

int main(int argc, char *argv[])
{
        int r;

        /* A server that closes on us must be an error return, not a death. */
        signal(SIGPIPE, SIG_IGN);

        r = run(argc, argv);
        if (fflush(stdout) == EOF && r == EXIT_STATUS_OK)
                r = log_output_error(errno ? -errno : -EIO);
        return r;
}
