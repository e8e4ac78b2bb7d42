/*
 * conn.c - ipcctl's connection to the daemon; see conn.h.
 *
 * Each Conn belongs to one thread (ipcctl's only one, the bridge's main
 * thread); no lock. Deadlines are absolute CLOCK_MONOTONIC times, so one -t
 * budget can be spent across connecting, authenticating and waiting for the
 * answer.
 */
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/socket.h>

#include "address.h"
#include "conn.h"
#include "fd-util.h"

extern char **environ;

int poll_deadline(struct pollfd *fds, nfds_t n, usec_t deadline)
{
        for (;;) {
                int t = poll_timeout_ms(deadline, now_usec(CLOCK_MONOTONIC)), r;

                r = poll(fds, n, t);
                if (r > 0)
                        return r;
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r == 0 && t >= 0 && now_usec(CLOCK_MONOTONIC) >= deadline)
                        return -ETIME;
        }
}

static int fd_wait(int fd, short events, usec_t deadline)
{
        struct pollfd p = {.fd = fd, .events = events};

        return poll_deadline(&p, 1, deadline);
}

static Conn *conn_new(int fd)
{
        Conn *c = calloc(1, sizeof(*c));

        if (!c)
                return NULL;
        c->fd = fd;
        proto_decoder_init(&c->decoder, CONN_MAX_PAYLOAD);
        c->out = BUFFER_INIT;
        return c;
}

Conn *conn_free(Conn *c)
{
        if (!c)
                return NULL;
        safe_close(c->fd);
        if (c->ssh_pid > 0) {
                /* ssh sees the end of its input and leaves; make sure. */
                (void)kill(c->ssh_pid, SIGTERM);
                while (waitpid(c->ssh_pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        }
        proto_decoder_done(&c->decoder);
        buffer_done(&c->out);
        free(c);
        return NULL;
}

int conn_connect_unix(const char *path, usec_t deadline, Conn **ret)
{
        _cleanup_close_ int fd = -1;
        Address a;
        Conn *c;
        int r;

        r = address_from_unix_path(path, &a);
        if (r < 0)
                return r;

        /* A non-blocking connect() to a Unix socket whose backlog is full
         * fails at once with EAGAIN instead of waiting. So connect blocking,
         * bounded by SO_SNDTIMEO (which AF_UNIX connect() honours, and which
         * then fails with EAGAIN), and switch to non-blocking afterwards. */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (deadline != USEC_INFINITY) {
                usec_t n = now_usec(CLOCK_MONOTONIC), left = deadline > n ? deadline - n : 1;
                struct timeval tv = usec_to_timeval(left);
                if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
                        return -errno;
        }
        for (;;) {
                if (connect(fd, &a.sa, a.len) >= 0)
                        break;
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN && deadline != USEC_INFINITY)
                        return -ETIME;
                return -errno;
        }
        if (deadline != USEC_INFINITY) {
                struct timeval zero = {0};
                (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof(zero));
        }
        r = fd_nonblock(fd, true);
        if (r < 0)
                return r;

        c = conn_new(fd);
        if (!c)
                return -ENOMEM;
        TAKE_FD(fd);
        *ret = c;
        return 0;
}

/* Connect one resolved address without blocking past the deadline. */
static int connect_one(const struct addrinfo *ai, usec_t deadline, int *ret)
{
        _cleanup_close_ int fd = -1;
        socklen_t len = sizeof(int);
        int err = 0, r;

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0)
                return -errno;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                if (errno != EINPROGRESS && errno != EINTR)
                        return -errno;
                r = fd_wait(fd, POLLOUT, deadline);
                if (r < 0)
                        return r;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        return -errno;
                if (err != 0)
                        return -err;
        }
        *ret = TAKE_FD(fd);
        return 0;
}

int conn_connect_tcp(const char *host, const char *port, usec_t deadline, Conn **ret)
{
        struct addrinfo hints = {
            .ai_family = AF_UNSPEC,
            .ai_socktype = SOCK_STREAM,
        };
        struct addrinfo *res = NULL;
        _cleanup_close_ int fd = -1;
        Conn *c;
        int r;

        r = getaddrinfo(host, port, &hints, &res);
        if (r == EAI_MEMORY)
                return -ENOMEM;
        if (r == EAI_SYSTEM)
                return -errno;
        if (r != 0)
                return -EADDRNOTAVAIL;

        /* Try every address ("localhost" is ::1 and 127.0.0.1, and the
         * daemon may listen on only one). Report the first failure, which is
         * usually the telling one, unless the deadline ran out: that ends
         * the attempt at once and is reported as such. */
        r = -EADDRNOTAVAIL;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                int q = connect_one(ai, deadline, &fd);
                if (q >= 0) {
                        r = 0;
                        break;
                }
                if (r == -EADDRNOTAVAIL || q == -ETIME)
                        r = q;
                if (q == -ETIME)
                        break;
        }
        freeaddrinfo(res);
        if (r < 0)
                return r;

        c = conn_new(fd);
        if (!c)
                return -ENOMEM;
        TAKE_FD(fd);
        *ret = c;
        return 0;
}

int conn_connect_command(char *const *argv, Conn **ret)
{
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t mask;
        int sv[2], r;
        pid_t pid;
        Conn *c;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, sv[1], STDIN_FILENO);
        posix_spawn_file_actions_adddup2(&fa, sv[1], STDOUT_FILENO);
        posix_spawnattr_init(&attr);
        /* Ctrl-C is ours (the interactive mode cancels with it), not ssh's:
         * ssh starts with SIGINT blocked, and SIGPIPE back to its default. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        posix_spawnattr_setsigmask(&attr, &mask);
        sigemptyset(&mask);
        sigaddset(&mask, SIGPIPE);
        posix_spawnattr_setsigdefault(&attr, &mask);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        r = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        safe_close(sv[1]);
        if (r != 0) {
                safe_close(sv[0]);
                return -r;
        }
        r = fd_nonblock(sv[0], true);
        c = r < 0 ? NULL : conn_new(sv[0]);
        if (!c) {
                safe_close(sv[0]);
                (void)kill(pid, SIGTERM);
                (void)waitpid(pid, NULL, 0);
                return r < 0 ? r : -ENOMEM;
        }
        c->ssh_pid = pid;
        *ret = c;
        return 0;
}

int conn_queue(Conn *c, const void *data, size_t len)
{
        return buffer_append(&c->out, data, len);
}

int conn_queue_request(Conn *c, char *const *argv, size_t n)
{
        Buffer line = BUFFER_INIT;
        int r = 0;

        for (size_t i = 0; i < n && r >= 0; i++)
                r = proto_append_arg(&line, argv[i], strlen(argv[i]));
        if (r >= 0)
                r = buffer_append(&line, "\n", 1);
        if (r >= 0)
                r = conn_queue(c, line.data, line.len);
        buffer_done(&line);
        return r;
}

int conn_flush(Conn *c)
{
        size_t done = 0;
        int r = 0;

        while (done < c->out.len) {
                ssize_t n = send(c->fd, c->out.data + done, c->out.len - done, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = errno == EWOULDBLOCK ? -EAGAIN : -errno;
                        break;
                }
                done += (size_t)n;
        }
        buffer_consume(&c->out, done);
        if (r < 0 && r != -EAGAIN) {
                buffer_clear(&c->out);
                if (c->write_error == 0)
                        c->write_error = r;
        }
        return r;
}

int conn_flush_wait(Conn *c, usec_t deadline)
{
        for (;;) {
                int r = conn_flush(c);
                if (r != -EAGAIN)
                        return r;
                r = fd_wait(c->fd, POLLOUT, deadline);
                if (r < 0)
                        return r;
        }
}

int conn_receive(Conn *c)
{
        char buf[65536];
        ssize_t n;
        int r;

        do
                n = read(c->fd, buf, sizeof(buf));
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno == EWOULDBLOCK)
                return -EAGAIN;
        /* A reset (the server closed with our data unread) ends the stream
         * like a close: what it sent before is in the decoder already. */
        if (n < 0 && errno != ECONNRESET)
                return -errno;
        if (n <= 0) {
                c->eof = true;
                return 0;
        }
        r = proto_decoder_feed(&c->decoder, buf, (size_t)n);
        if (r < 0)
                return r;
        return (int)n;
}

int conn_next_frame(Conn *c, ProtoFrame *f)
{
        return proto_decoder_next(&c->decoder, f);
}

int conn_read_frame_wait(Conn *c, ProtoFrame *f, usec_t deadline)
{
        for (;;) {
                int r = conn_next_frame(c, f);
                if (r != 0)
                        return r;
                if (c->eof)
                        return -ECONNRESET;
                r = conn_pump(c, NULL, 0, deadline);
                if (r < 0)
                        return r;
        }
}

int conn_pump(Conn *c, struct pollfd *extra, size_t n_extra, usec_t deadline)
{
        struct pollfd p[1 + CONN_PUMP_EXTRA_MAX];
        int r;

        assert(n_extra <= CONN_PUMP_EXTRA_MAX);
        for (size_t i = 0; i < n_extra; i++)
                extra[i].revents = 0;
        if (c->out.len > 0) {
                r = conn_flush(c);
                if (r < 0 && r != -EAGAIN)
                        return 0; /* in c->write_error; the read side will tell the rest */
        }

        p[0] = (struct pollfd){.fd = c->fd, .events = POLLIN};
        if (c->out.len > 0)
                p[0].events |= POLLOUT;
        for (size_t i = 0; i < n_extra; i++)
                p[1 + i] = extra[i];
        r = poll_deadline(p, 1 + n_extra, deadline);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_extra; i++)
                extra[i].revents = p[1 + i].revents;

        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                r = conn_receive(c);
                if (r < 0 && r != -EAGAIN)
                        return r;
        }
        return 0;
}
