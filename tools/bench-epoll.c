/*
 * bench-epoll.c - reference server for tools/bench: one thread, epoll
 * (level-triggered), non-blocking sockets; every complete line of one
 * read() is answered with one write(), and what the socket does not take
 * waits for EPOLLOUT (input is not read meanwhile: backpressure). See
 * bench-common.h.
 *
 *   bench-epoll [--unix PATH] [--tcp PORT]    (or LISTEN_FDS)
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "bench-common.h"

#define IN_SIZE 4096

typedef struct Conn {
        int fd;
        size_t in_len;
        char *out; /* pending answers, NULL when none */
        size_t out_len, out_pos;
        char in[IN_SIZE];
} Conn;

static int ep;

static void conn_close(Conn *c)
{
        close(c->fd);
        free(c->out);
        free(c);
}

/* Write what is pending; 1 when done, 0 when the socket is full, -1 on error. */
static int conn_flush(Conn *c)
{
        while (c->out_pos < c->out_len) {
                ssize_t w = write(c->fd, c->out + c->out_pos, c->out_len - c->out_pos);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : -1;
                }
                c->out_pos += (size_t)w;
        }
        free(c->out);
        c->out = NULL;
        c->out_len = c->out_pos = 0;
        return 1;
}

static void conn_set_events(Conn *c, uint32_t events)
{
        struct epoll_event e = {.events = events, .data.ptr = c};
        (void)epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void conn_event(Conn *c, uint32_t events)
{
        ssize_t n;
        size_t lines;
        int r;

        if (c->out) {
                r = conn_flush(c);
                if (r < 0)
                        goto fail;
                if (r == 1)
                        conn_set_events(c, EPOLLIN);
                return;
        }
        if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                return;
        n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0)
                goto fail;
        c->in_len += (size_t)n;
        lines = bench_lines(c->in, &c->in_len);
        if (c->in_len == sizeof(c->in))
                goto fail;
        if (lines == 0)
                return;
        c->out_len = lines * PONG_LEN;
        c->out = malloc(c->out_len);
        if (!c->out)
                goto fail;
        for (size_t i = 0; i < lines; i++)
                memcpy(c->out + i * PONG_LEN, PONG, PONG_LEN);
        r = conn_flush(c);
        if (r < 0)
                goto fail;
        if (r == 0)
                conn_set_events(c, EPOLLOUT);
        return;
fail:
        conn_close(c);
}

int main(int argc, char **argv)
{
        struct epoll_event ev[256];
        int fds[MAX_LISTENERS];
        int n = bench_listen(argc, argv, fds, SOCK_NONBLOCK);

        signal(SIGPIPE, SIG_IGN);
        ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0)
                bench_die("epoll_create1");
        for (int i = 0; i < n; i++) {
                struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};

                /* Listeners from systemd are blocking: make them not. */
                (void)fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
                e.data.u64 = (uint64_t)i | (1ULL << 63);
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e) < 0)
                        bench_die("epoll_ctl");
        }

        for (;;) {
                int k = epoll_wait(ep, ev, 256, -1);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        bench_die("epoll_wait");
                }
                for (int j = 0; j < k; j++) {
                        if (ev[j].data.u64 & (1ULL << 63)) {
                                int lfd = fds[ev[j].data.u64 & 0xff];

                                for (int a = 0; a < 64; a++) {
                                        struct epoll_event e = {.events = EPOLLIN};
                                        Conn *c;
                                        int fd = accept4(lfd, NULL, NULL,
                                                         SOCK_CLOEXEC | SOCK_NONBLOCK);
                                        if (fd < 0)
                                                break;
                                        c = malloc(sizeof(*c));
                                        if (!c) {
                                                close(fd);
                                                continue;
                                        }
                                        c->fd = fd;
                                        c->in_len = 0;
                                        c->out = NULL;
                                        c->out_len = c->out_pos = 0;
                                        e.data.ptr = c;
                                        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
                                                conn_close(c);
                                }
                                continue;
                        }
                        conn_event(ev[j].data.ptr, ev[j].events);
                }
        }
}
