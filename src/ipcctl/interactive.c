/*
 * interactive.c - ipcctl with no verb on a terminal: a `> ` prompt with
 * libedit line editing and history. Each non-blank line is sent as typed
 * (protocol syntax, parsed by the server); `exit` and Ctrl-D leave locally,
 * `quit` is sent; either way the session ends once every answer owed has
 * been printed.
 *
 * One conn_pump() loop over the terminal, the socket and a signalfd. libedit is
 * driven through its callback interface (rl_callback_read_char()), so the
 * prompt stays live while answers and EVENT frames arrive: anything printed
 * while the prompt is shown erases the prompt line, prints whole lines, and
 * has libedit redraw the prompt with what was typed so far. Streamed (MORE)
 * output is therefore printed a line at a time; --json prints every frame.
 *
 * SIGINT at the prompt discards the line being typed. SIGINT while answers
 * are outstanding cancels them: the connection is closed (which stops a
 * configured command still running on the server, ipcd kills it) and a new
 * one opened, with the token, a successful `auth` typed here and the
 * topics subscribed here given again, silently. SIGTERM and SIGHUP close
 * the session (exit 0).
 *
 * The names for Tab (prompt.c) are asked of the daemon with a `help` of our
 * own at the start and again after a `reload` or `auth` (the answer is not
 * shown). `auth` lines never go into the history. -t bounds connecting and
 * authenticating only.
 *
 * The Session belongs to run_interactive(), on its stack; the terminal's
 * state is prompt.c's. ipcctl has one thread.
 */
#include <errno.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>

#include "ipcctl.h"
#include "output.h"
#include "prompt.h"

typedef struct Session {
        Conn *conn;
        Output out;
        ProtoRequest req;
        Buffer partial; /* MORE output not ended by a LF yet */
        bool leaving;   /* exit, quit or Ctrl-D: leave once all is answered */
        bool done;
        size_t outstanding; /* requests sent, not answered yet */
        KindFifo kinds;     /* what each of them is, for --json */
        KindFifo tags;      /* and whose: a RequestTag each */
        char **topics;      /* subscribed from this prompt, given again after Ctrl-C */
        size_t n_topics;
        char *auth_line;    /* the last auth typed that succeeded */
        char *auth_pending; /* an auth typed, not answered yet */
} Session;

/* Who asked: the user (printed) or this session itself (not printed). */
typedef enum RequestTag {
        TAG_USER,
        TAG_USER_HELP,   /* help: add our own lines after the daemon's */
        TAG_USER_AUTH,   /* remember it if it succeeds; refresh the names */
        TAG_USER_RELOAD, /* refresh the names when it succeeds */
        TAG_NAMES,       /* our help: the names for Tab */
        TAG_SILENT,      /* re-subscribing or re-authenticating after Ctrl-C */
} RequestTag;

static int print_answer(Session *s, const ProtoFrame *f)
{
        ProtoFrame g = *f;
        const char *lf;
        int r;

        if (s->out.json || s->out.quiet)
                return output_answer(&s->out, f);

        switch (f->type) {
        case PROTO_FRAME_MORE:
                /* Print whole lines only; keep the rest for later. */
                r = buffer_append(&s->partial, f->payload, f->len);
                if (r < 0)
                        return r;
                lf = NULL;
                for (size_t i = s->partial.len; i > 0 && !lf; i--)
                        if (s->partial.data[i - 1] == '\n')
                                lf = s->partial.data + i - 1;
                if (!lf)
                        return 0;
                g.payload = s->partial.data;
                g.len = (size_t)(lf - s->partial.data) + 1;
                r = output_answer(&s->out, &g);
                buffer_consume(&s->partial, g.len);
                return r;
        case PROTO_FRAME_OK:
                r = buffer_append(&s->partial, f->payload, f->len);
                if (r < 0)
                        return r;
                g.payload = s->partial.data;
                g.len = s->partial.len;
                r = output_answer(&s->out, &g);
                buffer_clear(&s->partial);
                return r;
        case PROTO_FRAME_ERR:
                if (s->partial.len > 0) {
                        g.type = PROTO_FRAME_MORE;
                        g.payload = s->partial.data;
                        g.len = s->partial.len;
                        r = output_answer(&s->out, &g);
                        buffer_clear(&s->partial);
                        if (r < 0)
                                return r;
                }
                return output_answer(&s->out, f);
        case PROTO_FRAME_EVENT:
                break;
        }
        return 0;
}

/* A request was queued: an answer of this kind is owed, to this tag. */
static int expect_answer(Session *s, RequestTag tag, AnswerKind kind)
{
        unsigned char t = (unsigned char)tag;
        int r;

        r = kind_fifo_push(&s->kinds, kind);
        if (r >= 0)
                r = buffer_append(&s->tags.b, &t, 1);
        if (r >= 0)
                s->outstanding++;
        return r;
}

static int queue_own(Session *s, RequestTag tag, char *const *argv, size_t n)
{
        int r = conn_queue_request(s->conn, argv, n);

        return r < 0 ? r : expect_answer(s, tag, ANSWER_STREAM);
}

static int ask_names(Session *s)
{
        char *argv[] = {(char *)"help"};

        return queue_own(s, TAG_NAMES, argv, 1);
}

/* A final frame came for a request of ours or a tagged one of the user's. */
static void answered(Session *s, RequestTag tag, const ProtoFrame *f)
{
        bool ok = f->type == PROTO_FRAME_OK;

        switch (tag) {
        case TAG_NAMES:
                if (ok)
                        prompt_set_names(f->payload, f->len);
                break;
        case TAG_USER_AUTH:
                if (ok) {
                        free(s->auth_line);
                        s->auth_line = TAKE_PTR(s->auth_pending);
                        (void)ask_names(s);
                }
                break;
        case TAG_USER_RELOAD:
                if (ok)
                        (void)ask_names(s);
                break;
        case TAG_USER_HELP:
                /* ipcctl's own words, after the daemon's list. */
                if (ok && !s->out.json && !s->out.quiet)
                        fputs("exit - leave ipcctl (also Ctrl-D; quit asks the daemon to close)\n"
                              "Ctrl-C - cancel the answers still due (a running command is "
                              "stopped)\n",
                              stdout);
                break;
        case TAG_USER:
        case TAG_SILENT:
                break;
        }
}

/* Print every buffered frame. Returns 0, or an exit status. */
static int handle_frames(Session *s)
{
        ProtoFrame f;
        int r;

        while ((r = conn_next_frame(s->conn, &f)) > 0) {
                RequestTag tag = (RequestTag)kind_fifo_peek(&s->tags);
                bool final = f.type == PROTO_FRAME_OK || f.type == PROTO_FRAME_ERR;
                bool own = f.type != PROTO_FRAME_EVENT && s->outstanding > 0 &&
                           (tag == TAG_NAMES || tag == TAG_SILENT);

                if (!own) {
                        prompt_print_begin();
                        output_expect(&s->out, kind_fifo_peek(&s->kinds));
                        if (f.type == PROTO_FRAME_EVENT)
                                r = output_event(&s->out, &f, true, true);
                        else
                                r = print_answer(s, &f);
                        if (r >= 0 && final && s->outstanding > 0)
                                answered(s, tag, &f);
                        if (r >= 0)
                                r = prompt_print_end();
                        if (r < 0) {
                                prompt_hide();
                                return log_output_error(r);
                        }
                } else if (final)
                        answered(s, tag, &f);
                if (final && s->outstanding > 0) {
                        s->outstanding--;
                        kind_fifo_pop(&s->kinds);
                        kind_fifo_pop(&s->tags);
                        if (s->outstanding == 0 && s->leaving)
                                s->done = true;
                }
        }
        if (r < 0) {
                prompt_hide();
                return session_error(r);
        }
        return 0;
}

/* Remember what the user subscribes to, to subscribe again after Ctrl-C. */
static void topics_track(Session *s, const ProtoRequest *req)
{
        bool sub = strcmp(req->args[0].data, "subscribe") == 0;

        if (!sub && strcmp(req->args[0].data, "unsubscribe") != 0)
                return;
        if (!sub && req->n_args == 1) {
                for (size_t i = 0; i < s->n_topics; i++)
                        free(s->topics[i]);
                s->topics = mfree(s->topics);
                s->n_topics = 0;
                return;
        }
        for (size_t a = 1; a < req->n_args; a++) {
                const char *t = req->args[a].data;
                size_t i;

                for (i = 0; i < s->n_topics && strcmp(s->topics[i], t) != 0; i++)
                        ;
                if (sub && i == s->n_topics && proto_topic_is_valid(t, req->args[a].len)) {
                        char **m = realloc(s->topics, (s->n_topics + 1) * sizeof(char *));
                        char *d = strdup(t);
                        if (m)
                                s->topics = m;
                        if (!m || !d) {
                                free(d);
                                return;
                        }
                        s->topics[s->n_topics++] = d;
                } else if (!sub && i < s->n_topics) {
                        free(s->topics[i]);
                        s->topics[i] = s->topics[--s->n_topics];
                }
        }
}

/* Answers due to what the user typed (not our own requests). */
static size_t user_outstanding(const Session *s)
{
        size_t n = 0;

        for (size_t i = s->tags.head; i < s->tags.b.len; i++)
                n += s->tags.b.data[i] != TAG_NAMES && s->tags.b.data[i] != TAG_SILENT;
        return n;
}

/*
 * Carry on over a new connection: authenticate and subscribe again as the
 * user did on the old one, silently. `tries` connection attempts, 100 ms
 * apart and twice as long each time. Returns 0, or an exit status when no
 * new connection can be made.
 */
static int session_reconnect(Session *s, unsigned tries, bool announce)
{
        usec_t pause = 100 * USEC_PER_MSEC;
        Conn *c = NULL;
        int r;

        s->conn = conn_free(s->conn);
        for (;;) {
                r = session_open(deadline_after(arg_timeout), &c);
                if (r != EXIT_STATUS_CONNECTION || --tries == 0)
                        break;
                (void)poll(NULL, 0, (int)(pause / USEC_PER_MSEC));
                pause *= 2;
        }
        if (r != 0)
                return r;
        s->conn = c;
        s->outstanding = 0;
        kind_fifo_done(&s->kinds);
        kind_fifo_done(&s->tags);
        buffer_clear(&s->partial);
        s->out.line_open = false;
        free(s->auth_pending);
        s->auth_pending = NULL;

        if (s->auth_line) {
                r = conn_queue(s->conn, s->auth_line, strlen(s->auth_line));
                if (r >= 0)
                        r = conn_queue(s->conn, "\n", 1);
                if (r >= 0)
                        r = expect_answer(s, TAG_SILENT, ANSWER_STREAM);
                if (r < 0)
                        return session_error(r);
        }
        if (s->n_topics > 0) {
                _cleanup_free_ char **argv = calloc(s->n_topics + 1, sizeof(char *));
                if (!argv)
                        return session_error(-ENOMEM);
                argv[0] = (char *)"subscribe";
                memcpy(argv + 1, s->topics, s->n_topics * sizeof(char *));
                r = queue_own(s, TAG_SILENT, argv, s->n_topics + 1);
                if (r < 0)
                        return session_error(r);
        }
        if (announce)
                fprintf(stderr, "ipcctl: reconnected to %s\n", session_target());
        if (!s->leaving)
                prompt_show();
        return 0;
}

/*
 * Ctrl-C with answers due: drop the connection, and with it whatever the
 * daemon is still doing for us, and carry on over a new one.
 */
static int cancel_pending(Session *s)
{
        prompt_hide();
        prompt_erase_line();
        fprintf(stdout, "^C cancelled %zu request(s)\n", user_outstanding(s));
        fflush(stdout);
        return session_reconnect(s, 1, false);
}

/* The daemon ended the connection (stopped, or started again by hand; a
 * systemd restart keeps it): say so, and carry on over a new one. */
static int connection_ended(Session *s)
{
        prompt_hide();
        prompt_erase_line();
        fflush(stdout);
        fprintf(stderr, "ipcctl: the connection to %s ended%s; reconnecting\n",
                session_target(),
                s->outstanding ? ", answers still due are lost" : "");
        return session_reconnect(s, 6, true);
}

/* The command name of a line, if it parses. */
static bool line_is(Session *s, const char *line, const char *name)
{
        const char *error;

        if (proto_request_parse(&s->req, line, strlen(line), &error) < 0 || s->req.n_args == 0)
                return false;
        return strcmp(s->req.args[0].data, name) == 0;
}

/* What --json makes of the answer to a line. */
static AnswerKind line_kind(Session *s, const char *line)
{
        const char *error;

        if (proto_request_parse(&s->req, line, strlen(line), &error) < 0 || s->req.n_args == 0)
                return ANSWER_STREAM;
        return answer_kind(s->req.args[0].data, s->req.n_args - 1);
}

static int handle_line(Session *s, char *line)
{
        RequestTag tag = TAG_USER;
        AnswerKind kind;
        int r;

        /* Leaving waits for the answers still owed, so that nothing typed
         * goes unanswered; Ctrl-C cuts that short. */
        if (!line) {
                /* Ctrl-D: leave the cursor on a fresh line for the shell. */
                fputc('\n', stdout);
                s->leaving = true;
                s->done = s->outstanding == 0;
                return 0;
        }
        if (proto_line_is_blank(line, strlen(line)))
                return 0;
        if (!line_is(s, line, "auth"))
                prompt_history_add(line);
        if (line_is(s, line, "exit")) {
                s->leaving = true;
                s->done = s->outstanding == 0;
                return 0;
        }
        if (line_is(s, line, "quit"))
                s->leaving = true;

        kind = line_kind(s, line);
        if (s->req.n_args > 0) {
                const char *name = s->req.args[0].data;

                topics_track(s, &s->req);
                if (strcmp(name, "help") == 0 && s->req.n_args == 1)
                        tag = TAG_USER_HELP;
                else if (strcmp(name, "reload") == 0)
                        tag = TAG_USER_RELOAD;
                else if (strcmp(name, "auth") == 0) {
                        tag = TAG_USER_AUTH;
                        free(s->auth_pending);
                        s->auth_pending = strdup(line);
                }
        }
        r = conn_queue(s->conn, line, strlen(line));
        if (r >= 0)
                r = conn_queue(s->conn, "\n", 1);
        return r < 0 ? r : expect_answer(s, tag, kind);
}

static int handle_signal(Session *s, int sfd)
{
        struct signalfd_siginfo si;

        if (read(sfd, &si, sizeof(si)) != sizeof(si))
                return 0;
        if (si.ssi_signo == SIGINT && !s->leaving && user_outstanding(s) > 0)
                return cancel_pending(s);
        if (si.ssi_signo == SIGINT && !s->leaving && prompt_shown()) {
                /* Like a shell: drop the line, show a fresh prompt. */
                prompt_hide();
                fputs("^C\n", stdout);
                fflush(stdout);
                prompt_show();
                return 0;
        }
        s->done = true;
        return 0;
}

/* The terminal has input: feed libedit, and act on a line when it is complete. */
static int handle_terminal(Session *s)
{
        _cleanup_free_ char *line = NULL;
        int r;

        if (prompt_read_char(&line) == 0)
                return 0;
        r = handle_line(s, line);
        if (r < 0)
                return session_error(r);
        if (!s->leaving)
                prompt_show();
        return 0;
}

static int session_run(Session *s, int sfd)
{
        int r;

        prompt_show();
        while (!s->done) {
                struct pollfd p[2] = {
                    {.fd = prompt_shown() ? STDIN_FILENO : -1, .events = POLLIN},
                    {.fd = sfd, .events = POLLIN},
                };

                r = output_flush(&s->out);
                if (r < 0) {
                        prompt_hide();
                        return log_output_error(r);
                }
                r = conn_pump(s->conn, p, ELEMENTSOF(p), USEC_INFINITY);
                if (r == 0 && s->conn->write_error)
                        r = s->conn->write_error;
                if (r < 0) {
                        prompt_hide();
                        return session_error(r);
                }

                if (p[1].revents) {
                        r = handle_signal(s, sfd);
                        if (r != 0) {
                                prompt_hide();
                                return r;
                        }
                        if (s->done)
                                break;
                        /* After a Ctrl-C that cancelled, s->conn is a new
                         * connection with nothing read yet. */
                }
                r = handle_frames(s);
                if (r != 0)
                        return r;
                if (s->done)
                        break;
                if (s->conn->eof) {
                        r = connection_ended(s);
                        if (r != 0)
                                return r;
                        continue;
                }
                if (p[0].revents && prompt_shown()) {
                        r = handle_terminal(s);
                        if (r != 0)
                                return r;
                }
        }
        prompt_hide();
        return EXIT_STATUS_OK;
}

static void session_done(Session *s)
{
        proto_request_done(&s->req);
        buffer_done(&s->partial);
        kind_fifo_done(&s->kinds);
        kind_fifo_done(&s->tags);
        for (size_t i = 0; i < s->n_topics; i++)
                free(s->topics[i]);
        free(s->topics);
        if (s->auth_line)
                explicit_bzero(s->auth_line, strlen(s->auth_line));
        if (s->auth_pending)
                explicit_bzero(s->auth_pending, strlen(s->auth_pending));
        free(s->auth_line);
        free(s->auth_pending);
        s->conn = conn_free(s->conn);
}

int run_interactive(void)
{
        _cleanup_(session_done) Session s = {
            .req = PROTO_REQUEST_INIT,
            .partial = BUFFER_INIT,
            .kinds = KIND_FIFO_INIT,
            .tags = KIND_FIFO_INIT,
        };
        _cleanup_close_ int sfd = -1;
        sigset_t mask;
        int r;

        r = session_open(deadline_after(arg_timeout), &s.conn);
        if (r != 0)
                return r;

        /* Blocked signals are left to the signalfd; libedit still handles
         * SIGTSTP/SIGCONT/SIGWINCH itself while it edits. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
            (sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
                log_error_errno(errno, "cannot set up signal handling: %m");
                return EXIT_STATUS_FAILED;
        }

        /* Multibyte line editing needs the user's character set. */
        (void)setlocale(LC_CTYPE, "");
        output_init(&s.out, arg_json, arg_quiet);
        prompt_init();

        printf("Connected to %s. Type help for the commands, exit or Ctrl-D to leave.\n",
               session_target());
        r = ask_names(&s);
        if (r < 0)
                r = session_error(r);
        else
                r = session_run(&s, sfd);
        prompt_done();
        return r;
}
