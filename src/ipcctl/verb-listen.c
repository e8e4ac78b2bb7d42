/*
 * verb-listen.c - listen TOPIC... [--count N] [--reconnect]: subscribe and print each
 * EVENT payload on a line of its own (or as JSON), until N events have
 * been printed, SIGINT/SIGTERM (exit 0), or the connection breaks (exit 3).
 * monitor [--count N]: the same on the daemon's ipcd.monitor topic (admin
 * only), each entry on one line (key=value) or as one JSON object.
 *
 * -t bounds connecting and the answer to `subscribe` only; events may take
 * as long as they like. With --reconnect a connection that ends after the
 * subscription is opened again (100 ms, then twice as long each time, up
 * to 5 s) and subscribed again, each step said on stderr. The signals are taken through a signalfd polled
 * beside the socket (conn_pump()), so that an interrupted listen still
 * flushes stdout. One thread; the connection and the Output are
 * verb_listen()'s.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>

#include "ipcctl.h"
#include "output.h"

static bool monitor_mode;  /* verb_monitor: set before anything else runs */
static bool arg_reconnect; /* listen --reconnect */

static int parse_count(const char *s, unsigned long long *ret)
{
        unsigned long long v;
        char *e;

        if (s[0] < '0' || s[0] > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &e, 10);
        if (errno || *e || v == 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* A monitor entry's "key: value" lines as one line of key=value words. */
static int output_monitor_line(Output *o, const ProtoFrame *f)
{
        _cleanup_free_ char *line = malloc(f->len + 1);
        const char *p = f->payload, *end = f->payload + f->len;
        ProtoFrame g = *f;
        size_t n = 0;

        if (!line)
                return -ENOMEM;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *e = nl ? nl : end;
                const char *colon = memchr(p, ':', (size_t)(e - p));

                if (n > 0)
                        line[n++] = ' ';
                if (colon && colon + 1 < e && colon[1] == ' ') {
                        memcpy(line + n, p, (size_t)(colon - p));
                        n += (size_t)(colon - p);
                        line[n++] = '=';
                        memcpy(line + n, colon + 2, (size_t)(e - colon - 2));
                        n += (size_t)(e - colon - 2);
                } else {
                        memcpy(line + n, p, (size_t)(e - p));
                        n += (size_t)(e - p);
                }
                p = nl ? nl + 1 : end;
        }
        g.payload = line;
        g.len = n;
        return output_event(o, &g, false, false);
}

/* Handle every frame buffered. Returns true when listen is over, with the
 * exit status in *status: --count reached, subscription refused, stdout or
 * the stream broken. */
static bool handle_frames(Conn *c, Output *o, bool with_topic, bool *subscribed,
                          unsigned long long count, unsigned long long *seen, int *status)
{
        ProtoFrame f;
        int r;

        while ((r = conn_next_frame(c, &f)) > 0) {
                if (!*subscribed) {
                        if (f.type == PROTO_FRAME_OK)
                                *subscribed = true;
                        else if (f.type == PROTO_FRAME_ERR) {
                                r = output_answer(o, &f);
                                *status = r < 0 ? log_output_error(r) : EXIT_STATUS_FAILED;
                                return true;
                        }
                        continue;
                }
                if (f.type == PROTO_FRAME_EVENT) {
                        r = monitor_mode && o->json == JSON_OFF ? output_monitor_line(o, &f)
                                                                : output_event(o, &f, with_topic,
                                                                               false);
                        if (r < 0) {
                                *status = log_output_error(r);
                                return true;
                        }
                        if (count > 0 && ++*seen >= count) {
                                r = output_flush(o);
                                *status = r < 0 ? log_output_error(r) : EXIT_STATUS_OK;
                                return true;
                        }
                } else if (f.type == PROTO_FRAME_ERR) {
                        /* Not an answer to anything we asked: the server
                         * says why it is about to close (e.g. a slow
                         * consumer). Show it, then see the close. */
                        r = output_answer(o, &f);
                        if (r < 0) {
                                *status = log_output_error(r);
                                return true;
                        }
                }
        }
        if (r < 0) {
                *status = session_error(r);
                return true;
        }
        return false;
}

/* Block SIGINT and SIGTERM and take them from a signalfd instead. */
static int signalfd_open(void)
{
        sigset_t mask;
        int fd;

        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        return fd < 0 ? -errno : fd;
}

/* --reconnect: the first pause, and the longest. */
#define RECONNECT_FIRST_USEC (100 * USEC_PER_MSEC)
#define RECONNECT_MAX_USEC   (5 * USEC_PER_SEC)

/* Wait `usec` before trying again; true if SIGINT/SIGTERM came meanwhile. */
static bool reconnect_wait(int sfd, usec_t usec)
{
        struct pollfd p = {.fd = sfd, .events = POLLIN};
        struct signalfd_siginfo si;

        if (poll(&p, 1, (int)((usec + USEC_PER_MSEC - 1) / USEC_PER_MSEC)) > 0 &&
            read(sfd, &si, sizeof(si)) == sizeof(si))
                return true;
        return false;
}

/* Queue `subscribe TOPIC...`. */
static int queue_subscribe(Conn *c, char **topics, size_t n)
{
        _cleanup_free_ char **req = calloc(n + 1, sizeof(char *));

        if (!req)
                return -ENOMEM;
        req[0] = (char *)"subscribe";
        memcpy(req + 1, topics, n * sizeof(char *));
        return conn_queue_request(c, req, n + 1);
}

/* Print events until the count, a signal, or the end of the stream (then
 * *broken: the connection ended or broke after the subscription). */
static int listen_run(Conn *c, int sfd, bool with_topic, unsigned long long count,
                      unsigned long long *seen, usec_t deadline, bool *broken)
{
        bool subscribed = false;
        Output o;
        int r, status;

        output_init(&o, arg_json, arg_quiet);
        if (monitor_mode)
                output_expect(&o, ANSWER_MONITOR);
        for (;;) {
                struct pollfd sig = {.fd = sfd, .events = POLLIN};

                r = output_flush(&o);
                if (r < 0)
                        return log_output_error(r);
                r = conn_pump(c, &sig, 1, subscribed ? USEC_INFINITY : deadline);
                if (r < 0) {
                        *broken = subscribed && r != -ETIMEDOUT;
                        (void)output_flush(&o);
                        return *broken && arg_reconnect ? EXIT_STATUS_CONNECTION
                                                        : session_error(r);
                }

                if (sig.revents) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                                r = output_flush(&o);
                                return r < 0 ? log_output_error(r) : EXIT_STATUS_OK;
                        }
                }
                if (handle_frames(c, &o, with_topic, &subscribed, count, seen, &status)) {
                        *broken = subscribed && status == EXIT_STATUS_CONNECTION;
                        return status;
                }
                if (c->eof) {
                        (void)output_flush(&o);
                        *broken = subscribed;
                        return *broken && arg_reconnect ? EXIT_STATUS_CONNECTION
                                                        : session_error(-ECONNRESET);
                }
        }
}

int verb_listen(int argc, char *argv[])
{
        static const struct option options[] = {
            {"count", required_argument, NULL, 'c'},
            {"reconnect", no_argument, NULL, 'r'},
            {},
        };
        _cleanup_conn_ Conn *c = NULL;
        _cleanup_close_ int sfd = -1;
        unsigned long long count = 0, seen = 0;
        usec_t deadline;
        int opt, r;

        /* Options after the verb: reset getopt (optind = 0 makes glibc start
         * over) and let it permute, so that --count may come anywhere. */
        optind = 0;
        opterr = 0;
        while ((opt = getopt_long(argc, argv, ":", options, NULL)) >= 0) {
                switch (opt) {
                case 'c':
                        if (parse_count(optarg, &count) < 0)
                                return usage_error("invalid --count '%s' (a positive integer)",
                                                   optarg);
                        break;
                case 'r':
                        arg_reconnect = true;
                        break;
                case ':':
                        return usage_error("listen: option '%s' needs an argument",
                                           argv[optind - 1]);
                default:
                        return usage_error("listen: unknown option '%s'", argv[optind - 1]);
                }
        }
        if (optind >= argc)
                return usage_error("listen: missing TOPIC");
        for (int i = optind; i < argc; i++)
                if (!proto_topic_is_valid(argv[i], strlen(argv[i])))
                        return usage_error(
                            "invalid topic '%s' (allowed: letters, digits and ._:/@+-)", argv[i]);

        sfd = signalfd_open();
        if (sfd < 0) {
                log_error_errno(sfd, "cannot set up signal handling: %m");
                return EXIT_STATUS_FAILED;
        }
        for (usec_t backoff = 0;;) {
                bool broken = false;

                deadline = deadline_after(arg_timeout);
                r = session_open(deadline, &c);
                if (r == EXIT_STATUS_CONNECTION && backoff > 0) {
                        /* still away: try again, a little later each time */
                        backoff = MIN(backoff * 2, RECONNECT_MAX_USEC);
                        if (reconnect_wait(sfd, backoff))
                                return EXIT_STATUS_OK;
                        continue;
                }
                if (r != 0)
                        return r;
                if (backoff > 0)
                        fprintf(stderr, "ipcctl: reconnected to %s, subscribing again\n",
                                session_target());
                r = queue_subscribe(c, argv + optind, (size_t)(argc - optind));
                if (r < 0)
                        return session_error(r);
                r = listen_run(c, sfd, argc - optind > 1, count, &seen, deadline, &broken);
                if (!broken || !arg_reconnect)
                        return r;
                c = conn_free(c);
                fprintf(stderr, "ipcctl: the connection to %s ended; reconnecting\n",
                        session_target());
                backoff = RECONNECT_FIRST_USEC;
                if (reconnect_wait(sfd, backoff))
                        return EXIT_STATUS_OK;
        }
}

int verb_monitor(int argc, char *argv[])
{
        _cleanup_free_ char **v = calloc((size_t)argc + 2, sizeof(char *));

        if (!v)
                return session_error(-ENOMEM);
        /* listen [OPTIONS] ipcd.monitor */
        v[0] = argv[0];
        for (int i = 1; i < argc; i++) {
                if (argv[i][0] != '-' && (i == 1 || strcmp(argv[i - 1], "--count") != 0))
                        return usage_error("monitor takes no topic (it watches every command)");
                v[i] = argv[i];
        }
        v[argc] = (char *)"ipcd.monitor";
        monitor_mode = true;
        return verb_listen(argc + 1, v);
}
