/*
 * interactive.c - ipcctl with no verb on a terminal: a `> ` prompt with
 * libedit line editing and history. Each non-blank line is sent as typed
 * (protocol syntax, parsed by the server); `exit` and Ctrl-D leave locally,
 * `quit` is sent; either way the session ends once every answer owed has
 * been printed.
 *
 * One poll() loop over the terminal, the socket and a signalfd. libedit is
 * driven through its callback interface (rl_callback_read_char()), so the
 * prompt stays live while answers and EVENT frames arrive: anything printed
 * while the prompt is shown erases the prompt line, prints whole lines, and
 * has libedit redraw the prompt with what was typed so far. Streamed (MORE)
 * output is therefore printed a line at a time; --json prints every frame.
 *
 * SIGINT at the prompt discards the line being typed; SIGINT while answers
 * are outstanding, SIGTERM and SIGHUP close the session (exit 0), which also
 * stops a configured command that is still running on the server.
 *
 * History: $XDG_STATE_HOME/ipcctl_history, else ~/.ipcctl_history, read at
 * start and written (mode 0600) at the end; any failure is ignored. `auth`
 * lines are never recorded. -t bounds connecting and authenticating only.
 *
 * The state is one static Session, because libedit's line callback takes no
 * user data.
 */
#include <errno.h>
#include <locale.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include <editline/readline.h>

#include "ipcctl.h"
#include "output.h"

#define PROMPT "> "

typedef struct Session {
        Conn *conn;
        Output out;
        ProtoRequest req;
        Buffer partial; /* MORE output not ended by a LF yet */
        char *line;     /* handed over by the libedit callback */
        bool have_line; /* the callback ran (line NULL: end of input) */
        bool prompt;    /* libedit's handler is installed */
        bool erase_ok;  /* the terminal understands "\r\033[K" */
        bool leaving;   /* exit, quit or Ctrl-D: leave once all is answered */
        bool done;
        size_t outstanding; /* requests sent, not answered yet */
        KindFifo kinds;     /* what each of them is, for --json */
        char *history;
} Session;

static Session session;

static void on_line(char *line)
{
        session.line = line;
        session.have_line = true;
}

static void prompt_show(Session *s)
{
        /* This libedit leaves its "unbuffered" mode after each line, so the
         * handler is installed again for every prompt; newer versions stay
         * in it, and installing again is then harmless. */
        rl_callback_handler_install(PROMPT, on_line);
        s->prompt = true;
}

static void prompt_hide(Session *s)
{
        if (s->prompt)
                rl_callback_handler_remove();
        s->prompt = false;
}

/* Before printing while the prompt is shown: wipe the prompt line. */
static void print_begin(Session *s)
{
        if (s->prompt) {
                fputs(s->erase_ok ? "\r\033[K" : "\n", stdout);
        }
}

/* After printing: let libedit redraw the prompt and the typed text. */
static int print_end(Session *s)
{
        int r = output_flush(&s->out);

        if (s->prompt)
                rl_forced_update_display();
        return r;
}

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

/* Print every buffered frame. Returns 0, or an exit status. */
static int handle_frames(Session *s)
{
        ProtoFrame f;
        int r;

        while ((r = conn_next_frame(s->conn, &f)) > 0) {
                print_begin(s);
                output_expect(&s->out, kind_fifo_peek(&s->kinds));
                if (f.type == PROTO_FRAME_EVENT)
                        r = output_event(&s->out, &f, true);
                else
                        r = print_answer(s, &f);
                if (r >= 0)
                        r = print_end(s);
                if (r < 0) {
                        prompt_hide(s);
                        return log_output_error(r);
                }
                if ((f.type == PROTO_FRAME_OK || f.type == PROTO_FRAME_ERR) && s->outstanding > 0) {
                        s->outstanding--;
                        kind_fifo_pop(&s->kinds);
                        if (s->outstanding == 0 && s->leaving)
                                s->done = true;
                }
        }
        if (r < 0) {
                prompt_hide(s);
                return session_error(r);
        }
        return 0;
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
                add_history(line);
        if (line_is(s, line, "exit")) {
                s->leaving = true;
                s->done = s->outstanding == 0;
                return 0;
        }
        if (line_is(s, line, "quit"))
                s->leaving = true;

        r = kind_fifo_push(&s->kinds, line_kind(s, line));
        if (r >= 0)
                r = conn_queue(s->conn, line, strlen(line));
        if (r >= 0)
                r = conn_queue(s->conn, "\n", 1);
        if (r < 0)
                return r;
        s->outstanding++;
        return 0;
}

static char *history_path(void)
{
        const char *dir = getenv("XDG_STATE_HOME"), *file = "ipcctl_history";
        char *path;

        if (!dir || dir[0] != '/') {
                dir = getenv("HOME");
                if (!dir || dir[0] != '/') {
                        struct passwd *pw = getpwuid(getuid());
                        dir = pw ? pw->pw_dir : NULL;
                }
                if (!dir || dir[0] != '/')
                        return NULL;
                file = ".ipcctl_history";
        }
        path = malloc(strlen(dir) + strlen(file) + 2);
        if (path)
                sprintf(path, "%s/%s", dir, file);
        return path;
}

static void history_save(Session *s)
{
        if (!s->history)
                return;
        /* The history may hold arguments the user would rather keep to
         * themselves; failure to save it is not worth a word. */
        if (write_history(s->history) == 0)
                (void)chmod(s->history, 0600);
}

static int handle_signal(Session *s, int sfd)
{
        struct signalfd_siginfo si;

        if (read(sfd, &si, sizeof(si)) != sizeof(si))
                return 0;
        if (si.ssi_signo == SIGINT && s->outstanding == 0 && s->prompt) {
                /* Like a shell: drop the line, show a fresh prompt. */
                prompt_hide(s);
                fputs("^C\n", stdout);
                fflush(stdout);
                prompt_show(s);
                return 0;
        }
        s->done = true;
        return 0;
}

static int session_run(Session *s, int sfd)
{
        int r;

        prompt_show(s);
        while (!s->done) {
                struct pollfd p[3] = {
                    {.fd = -1, .events = POLLIN},
                    {.fd = s->conn->fd, .events = POLLIN},
                    {.fd = sfd, .events = POLLIN},
                };

                if (s->conn->out.len > 0) {
                        r = conn_flush(s->conn);
                        if (r == -EAGAIN)
                                p[1].events |= POLLOUT;
                        else if (r < 0) {
                                prompt_hide(s);
                                return session_error(r);
                        }
                }
                r = output_flush(&s->out);
                if (r < 0) {
                        prompt_hide(s);
                        return log_output_error(r);
                }

                if (s->prompt)
                        p[0].fd = STDIN_FILENO;
                r = poll_deadline(p, ELEMENTSOF(p), USEC_INFINITY);
                if (r < 0) {
                        prompt_hide(s);
                        return session_error(r);
                }

                if (p[2].revents)
                        handle_signal(s, sfd);
                if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
                        r = conn_receive(s->conn);
                        if (r < 0 && r != -EAGAIN) {
                                prompt_hide(s);
                                return session_error(r);
                        }
                        r = handle_frames(s);
                        if (r != 0)
                                return r;
                        if (s->done)
                                break;
                        if (s->conn->eof) {
                                prompt_hide(s);
                                fputc('\n', stdout);
                                fflush(stdout);
                                return session_error(-ECONNRESET);
                        }
                }
                if (p[0].revents && s->prompt && !s->done) {
                        s->have_line = false;
                        rl_callback_read_char();
                        if (s->have_line) {
                                char *line = TAKE_PTR(s->line);
                                s->prompt = false; /* libedit left its mode */
                                r = handle_line(s, line);
                                free(line);
                                if (r < 0)
                                        return session_error(r);
                                if (!s->leaving)
                                        prompt_show(s);
                        }
                }
        }
        prompt_hide(s);
        return EXIT_STATUS_OK;
}

int run_interactive(void)
{
        _cleanup_conn_ Conn *c = NULL;
        _cleanup_close_ int sfd = -1;
        Session *s = &session;
        const char *term;
        sigset_t mask;
        int r;

        r = session_open(deadline_after(arg_timeout), &c);
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
                log_error("cannot set up signal handling: %s", strerror(errno));
                return EXIT_STATUS_FAILED;
        }

        /* Multibyte line editing needs the user's character set. */
        (void)setlocale(LC_CTYPE, "");

        *s = (Session){.conn = c,
                      .req = PROTO_REQUEST_INIT,
                      .partial = BUFFER_INIT,
                      .kinds = KIND_FIFO_INIT};
        output_init(&s->out, arg_json, arg_quiet);
        term = getenv("TERM");
        s->erase_ok = term && *term && strcmp(term, "dumb") != 0;

        rl_readline_name = "ipcctl";
        using_history();
        stifle_history(1000);
        s->history = history_path();
        if (s->history)
                (void)read_history(s->history);

        printf("Connected to %s. Type help for the commands, exit or Ctrl-D to leave.\n",
               session_target());

        r = session_run(s, sfd);

        history_save(s);
        free(s->history);
        free(s->line);
        proto_request_done(&s->req);
        buffer_done(&s->partial);
        kind_fifo_done(&s->kinds);
        return r;
}
