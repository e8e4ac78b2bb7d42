/*
 * pipe.c - ipcctl with no verb and stdin not a terminal: every non-blank
 * line of stdin is sent as it is (protocol syntax; the server parses it),
 * pipelined, and every answer is printed as `send` prints it, in order.
 *
 * One conn_pump() loop over stdin and the non-blocking socket: stdin is read
 * only while less than PIPE_HIGH_WATER bytes wait to be written, and
 * answers are read all the time, so neither a large input nor a server
 * that stops reading (backpressure) can deadlock the two sides.
 *
 * Blank lines are skipped exactly as the server skips them
 * (proto_line_is_blank()), because it sends no answer for them and the
 * count of answers owed must match. After a `quit` line the server closes
 * the connection, so reading stops there; an `exit` line is ipcctl's own,
 * as at the terminal: it is not sent, and ends the input like its end of
 * file. -t bounds the whole run.
 *
 * Exit status: 1 if any answer was ERR, 3 if the connection broke before
 * every answer arrived, 4 on timeout, 0 otherwise.
 *
 * The Pipe is run_pipe()'s, on its stack, in ipcctl's one thread.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ipcctl.h"
#include "output.h"

#define PIPE_HIGH_WATER (1024 * 1024)
#define PIPE_READ_SIZE  65536

typedef struct Pipe {
        Conn *conn;
        Output out;
        ProtoRequest req;
        Buffer in;       /* stdin bytes not yet split into lines */
        size_t sent;     /* requests queued */
        size_t answered; /* final frames received */
        KindFifo kinds;  /* what each answer owed is, for --json */
        bool stdin_done; /* end of stdin, or a quit was sent */
        bool failed;     /* some answer was ERR */
} Pipe;

/* The command name of a line: "" if it does not parse (the server will
 * say why). */
static const char *line_command(Pipe *p, const char *line, size_t len)
{
        const char *error;

        if (proto_request_parse(&p->req, line, len, &error) < 0 || p->req.n_args == 0)
                return "";
        return p->req.args[0].data;
}

static int queue_line(Pipe *p, const char *line, size_t len)
{
        const char *name;
        int r;

        if (p->stdin_done || proto_line_is_blank(line, len))
                return 0;
        name = line_command(p, line, len);
        if (strcmp(name, "exit") == 0 && p->req.n_args == 1) {
                p->stdin_done = true;
                return 0;
        }
        r = kind_fifo_push(&p->kinds, answer_kind(name, p->req.n_args ? p->req.n_args - 1 : 0));
        if (r >= 0)
                r = conn_queue(p->conn, line, len);
        if (r >= 0)
                r = conn_queue(p->conn, "\n", 1);
        if (r < 0)
                return r;
        p->sent++;
        if (strcmp(name, "quit") == 0)
                p->stdin_done = true;
        return 0;
}

/* Read once from stdin and queue every complete line. */
static int read_stdin(Pipe *p)
{
        size_t start = 0;
        ssize_t n;
        int r;

        r = buffer_reserve(&p->in, PIPE_READ_SIZE);
        if (r < 0)
                return r;
        n = read(STDIN_FILENO, p->in.data + p->in.len, PIPE_READ_SIZE);
        if (n < 0)
                return errno == EINTR || errno == EAGAIN ? 0 : -errno;
        if (n == 0) {
                /* A last line without its LF is still a line. */
                r = queue_line(p, p->in.data, p->in.len);
                buffer_clear(&p->in);
                p->stdin_done = true;
                return r;
        }

        /* Only the new bytes can hold new line ends. */
        for (char *s = p->in.data + p->in.len, *end = s + n, *lf;
             (lf = memchr(s, '\n', (size_t)(end - s))); s = lf + 1) {
                r = queue_line(p, p->in.data + start, (size_t)(lf - p->in.data) - start);
                if (r < 0)
                        return r;
                start = (size_t)(lf - p->in.data) + 1;
        }
        p->in.len += (size_t)n;
        buffer_consume(&p->in, start);
        if (p->stdin_done)
                buffer_clear(&p->in);
        return 0;
}

/* Print every answer buffered. Returns 0, or an exit status after a fatal
 * problem. */
static int handle_answers(Pipe *p)
{
        ProtoFrame f;
        int r;

        while ((r = conn_next_frame(p->conn, &f)) > 0) {
                if (f.type == PROTO_FRAME_EVENT)
                        continue;
                output_expect(&p->out, kind_fifo_peek(&p->kinds));
                r = output_answer(&p->out, &f);
                if (r < 0)
                        return log_output_error(r);
                if (f.type == PROTO_FRAME_ERR)
                        p->failed = true;
                if (f.type == PROTO_FRAME_OK || f.type == PROTO_FRAME_ERR) {
                        p->answered++;
                        kind_fifo_pop(&p->kinds);
                }
        }
        if (r < 0)
                return session_error(r);
        return 0;
}

static int pipe_run(Pipe *p, usec_t deadline)
{
        Conn *c = p->conn;
        int r;

        for (;;) {
                struct pollfd in = {.fd = -1, .events = POLLIN};

                if (p->stdin_done && c->out.len == 0 && p->answered >= p->sent && !c->write_error)
                        return 0;
                r = output_flush(&p->out);
                if (r < 0)
                        return log_output_error(r);

                /* After a write error stdin rests, and the answers that came,
                 * or the server's reason, are still read and printed. */
                if (!p->stdin_done && !c->write_error && c->out.len < PIPE_HIGH_WATER)
                        in.fd = STDIN_FILENO;
                r = conn_pump(c, &in, 1, deadline);
                if (r < 0)
                        return session_error(r);

                if (in.revents) {
                        r = read_stdin(p);
                        if (r == -ENOMEM)
                                return session_error(r);
                        if (r < 0) {
                                log_error_errno(r, "cannot read standard input: %m");
                                return EXIT_STATUS_FAILED;
                        }
                }
                r = handle_answers(p);
                if (r != 0)
                        return r;
                if (c->eof) {
                        if (p->stdin_done && p->answered >= p->sent)
                                return 0;
                        (void)output_flush(&p->out);
                        return session_error(c->write_error && c->write_error != -EPIPE
                                                 ? c->write_error
                                                 : -ECONNRESET);
                }
        }
}

int run_pipe(void)
{
        _cleanup_conn_ Conn *c = NULL;
        usec_t deadline = deadline_after(arg_timeout);
        Pipe p = {.req = PROTO_REQUEST_INIT, .in = BUFFER_INIT, .kinds = KIND_FIFO_INIT};
        int r;

        r = session_open(deadline, &c);
        if (r != 0)
                return r;

        p.conn = c;
        output_init(&p.out, arg_json, arg_quiet);
        r = pipe_run(&p, deadline);
        if (r == 0) {
                r = output_flush(&p.out);
                r = r < 0 ? log_output_error(r) : (p.failed ? EXIT_STATUS_FAILED : EXIT_STATUS_OK);
        }
        proto_request_done(&p.req);
        buffer_done(&p.in);
        kind_fifo_done(&p.kinds);
        return r;
}
