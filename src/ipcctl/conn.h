/*
 * conn.h - ipcctl's connection to the daemon: connecting to a Unix or TCP
 * address under a deadline, an output buffer written without blocking, and
 * a ProtoDecoder that turns whatever arrives into frames.
 *
 * A Conn owns its socket, its output buffer and its decoder; conn_free()
 * releases all three. It belongs to one thread (ipcctl has one; the bridge's
 * main thread), so there is no lock. The socket is always non-blocking: the
 * *_wait() functions and conn_pump() wait with poll() and a deadline, the
 * others never block; conn_pump() is the one loop of the pipe, listen and
 * interactive modes, polling the socket beside their other fds.
 *
 * Nothing here prints. Errors are -errno; running out of a deadline is
 * -ETIME (not -ETIMEDOUT, which stays the kernel's "connection timed out").
 */
#pragma once

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buffer.h"
#include "macro.h"
#include "proto.h"
#include "time-util.h"

/* poll() restarted on EINTR until the (CLOCK_MONOTONIC) deadline: > 0, or
 * -ETIME. */
int poll_deadline(struct pollfd *fds, nfds_t n, usec_t deadline);

/* Largest payload accepted from the server (a protection, not a limit of
 * the protocol). */
#define CONN_MAX_PAYLOAD ((size_t)1 << 30)

typedef struct Conn {
        int fd;
        pid_t ssh_pid; /* the ssh carrying this connection, or 0 */
        ProtoDecoder decoder;
        Buffer out;      /* queued, not yet written */
        bool eof;        /* the server closed its side */
        int write_error; /* the first failure to write; queued output is dropped since */
} Conn;

int conn_connect_unix(const char *path, usec_t deadline, Conn **ret);
/* Tries each getaddrinfo() result in turn; -EADDRNOTAVAIL if HOST does not
 * resolve. */
int conn_connect_tcp(const char *host, const char *port, usec_t deadline, Conn **ret);
/*
 * Run `argv` (ssh and its arguments: the far side's bridge to the daemon's
 * Unix socket) with its stdin and stdout on a socketpair whose other end is
 * the connection. ssh's stderr is ours, so that its own errors show. The
 * child is ended and reaped by conn_free().
 */
int conn_connect_command(char *const *argv, Conn **ret);
Conn *conn_free(Conn *c);

static inline void conn_freep(Conn **c)
{
        *c = conn_free(*c);
}
#define _cleanup_conn_ _cleanup_(conn_freep)

/* Queue raw bytes. */
int conn_queue(Conn *c, const void *data, size_t len);
/* Queue one request: each argument quoted with proto_append_arg(), then LF. */
int conn_queue_request(Conn *c, char *const *argv, size_t n);
/* Write what the socket takes now: 0 when all is written, -EAGAIN if some
 * is left, -EPIPE/-ECONNRESET/... on failure. A failure drops what is
 * queued (it can never go) and is kept in c->write_error: what the server
 * said before, its answers or its reason to close, is still to be read. */
int conn_flush(Conn *c);
/* Write everything queued, waiting up to the deadline. */
int conn_flush_wait(Conn *c, usec_t deadline);

/* One read() into the decoder: > 0 bytes, 0 at end of file or on a reset
 * (c->eof is then set), -EAGAIN if nothing is there. */
int conn_receive(Conn *c);
/* The next buffered frame: 1 with *f filled (valid until the next call on
 * this Conn), 0 if more input is needed, -EBADMSG/-EMSGSIZE. */
int conn_next_frame(Conn *c, ProtoFrame *f);
/* Wait for the next frame: 1, -ECONNRESET if the server closed first, -ETIME
 * past the deadline, -EBADMSG/-EMSGSIZE on a malformed frame. */
int conn_read_frame_wait(Conn *c, ProtoFrame *f, usec_t deadline);

#define CONN_PUMP_EXTRA_MAX 2
/*
 * One round of a loop that talks to the server while it also waits for
 * something else: write what is queued (without blocking); poll() the socket
 * (POLLIN, and POLLOUT while output is left) beside up to CONN_PUMP_EXTRA_MAX
 * `extra` fds of the caller (their revents are set) until something is
 * ready or the deadline; read what the socket has into the decoder. Then
 * the caller takes the frames with conn_next_frame() and looks at c->eof.
 *
 * A failure to write is not fatal here (see conn_flush()): the round ends at
 * once with 0, c->write_error set and no revents. Returns 0, -ETIME, or a
 * failure of poll() or of reading (a reset sets c->eof instead).
 */
int conn_pump(Conn *c, struct pollfd *extra, size_t n_extra, usec_t deadline);
