/*
 * bench-raw.c - reference server for tools/bench: one thread per
 * connection (64 KiB stack, like ipcd's client threads), a blocking
 * read()/write() loop that answers every complete line of one read() with
 * one write(). See bench-common.h.
 *
 *   bench-raw [--unix PATH] [--tcp PORT]      (or LISTEN_FDS)
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "bench-common.h"

#define BUF_SIZE 16384

static void *client_thread(void *userdata)
{
        int fd = (int)(intptr_t)userdata;
        char in[BUF_SIZE], out[BUF_SIZE];
        size_t len = 0;

        for (;;) {
                ssize_t n = read(fd, in + len, sizeof(in) - len);
                size_t lines;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t)n;
                lines = bench_lines(in, &len);
                if (len == sizeof(in))
                        break; /* a line longer than the buffer */
                while (lines > 0) {
                        size_t k = lines < sizeof(out) / PONG_LEN ? lines : sizeof(out) / PONG_LEN;
                        char *p = out;

                        for (size_t i = 0; i < k; i++, p += PONG_LEN)
                                memcpy(p, PONG, PONG_LEN);
                        for (char *q = out; q < p;) {
                                ssize_t w = write(fd, q, (size_t)(p - q));
                                if (w < 0 && errno == EINTR)
                                        continue;
                                if (w < 0)
                                        goto out;
                                q += w;
                        }
                        lines -= k;
                }
        }
out:
        close(fd);
        return NULL;
}

int main(int argc, char **argv)
{
        struct pollfd pfd[MAX_LISTENERS];
        pthread_attr_t attr;
        int fds[MAX_LISTENERS];
        int n = bench_listen(argc, argv, fds, 0);

        signal(SIGPIPE, SIG_IGN);
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        for (int i = 0; i < n; i++)
                pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};

        for (;;) {
                if (poll(pfd, (nfds_t)n, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        bench_die("poll");
                }
                for (int i = 0; i < n; i++) {
                        pthread_t t;
                        int fd;

                        if (!(pfd[i].revents & POLLIN))
                                continue;
                        fd = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC);
                        if (fd < 0)
                                continue;
                        if (pthread_create(&t, &attr, client_thread, (void *)(intptr_t)fd) != 0)
                                close(fd);
                }
        }
}
