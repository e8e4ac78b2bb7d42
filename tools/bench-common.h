/*
 * bench-common.h - what the two reference servers of tools/bench share:
 * option parsing, listening sockets (or one from systemd-socket-activate
 * via LISTEN_FDS) and the answer to a buffer of pipelined lines.
 *
 * They speak the ipcd framing for one request only: every complete line
 * gets `OK 4\npong\n`, whatever it says. No threads beyond the model under
 * test, no logging, no limits: the floor that ipcd is measured against.
 */
#pragma once

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PONG     "OK 4\npong\n"
#define PONG_LEN (sizeof(PONG) - 1)
#define MAX_LISTENERS 4

_Noreturn static inline void bench_die(const char *what)
{
        fprintf(stderr, "bench server: %s: %s\n", what, strerror(errno));
        exit(1);
}

/* --unix PATH and --tcp PORT (127.0.0.1), or LISTEN_FDS from the
 * environment. Returns the number of listening fds put in fds[]. */
static inline int bench_listen(int argc, char **argv, int *fds, int flags)
{
        const char *e = getenv("LISTEN_FDS");
        int n = 0;

        if (e && atoi(e) > 0) {
                int k = atoi(e);
                for (int i = 0; i < k && n < MAX_LISTENERS; i++)
                        fds[n++] = 3 + i;
                return n;
        }
        for (int i = 1; i + 1 < argc && n < MAX_LISTENERS; i += 2) {
                int fd, one = 1;

                if (strcmp(argv[i], "--unix") == 0) {
                        struct sockaddr_un sa = {.sun_family = AF_UNIX};

                        if (strlen(argv[i + 1]) >= sizeof(sa.sun_path)) {
                                fprintf(stderr, "bench server: socket path too long\n");
                                exit(2);
                        }
                        strcpy(sa.sun_path, argv[i + 1]);
                        (void)unlink(sa.sun_path);
                        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
                        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                                bench_die("bind unix");
                } else if (strcmp(argv[i], "--tcp") == 0) {
                        struct sockaddr_in sa = {.sin_family = AF_INET,
                                                 .sin_port = htons((uint16_t)atoi(argv[i + 1])),
                                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

                        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
                        if (fd < 0)
                                bench_die("socket");
                        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                                bench_die("bind tcp");
                } else {
                        fprintf(stderr, "usage: %s [--unix PATH] [--tcp PORT]\n", argv[0]);
                        exit(2);
                }
                if (listen(fd, SOMAXCONN) < 0)
                        bench_die("listen");
                fds[n++] = fd;
        }
        if (n == 0) {
                fprintf(stderr, "usage: %s [--unix PATH] [--tcp PORT] (or LISTEN_FDS)\n", argv[0]);
                exit(2);
        }
        return n;
}

/*
 * `buf` holds `*len` bytes of input. Count the complete lines, keep the
 * partial one at the start of buf, and return how many answers are due.
 */
static inline size_t bench_lines(char *buf, size_t *len)
{
        size_t lines = 0, last = 0;

        for (char *p = buf, *end = buf + *len; (p = memchr(p, '\n', end - p)); p++) {
                lines++;
                last = (size_t)(p - buf) + 1;
        }
        if (last > 0) {
                memmove(buf, buf + last, *len - last);
                *len -= last;
        }
        return lines;
}
