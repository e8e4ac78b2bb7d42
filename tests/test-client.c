/*
 * test-client.c - a third-party client of ipcd, written from the protocol
 * description alone with nothing but libc sockets (no code of the project),
 * to prove that the wire protocol is what the documentation says.
 *
 *     test-client unix:PATH|tcp:HOST:PORT              one ping
 *     test-client unix:PATH|tcp:HOST:PORT pipeline N   N pings in one write
 *
 * Each ping must be answered by exactly "OK 4\npong\n". Exit status 0 on
 * success, 1 with a message on stderr otherwise, 2 for bad usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memrchr() */
#endif
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static const char ping_req[] = "ping\n";
static const char ping_resp[] = "OK 4\npong\n";

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "test-client: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(1);
}

static int connect_unix(const char *path)
{
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(path) >= sizeof(un.sun_path))
                die("socket path too long: %s", path);
        strcpy(un.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                die("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0)
                die("connect: %s", strerror(errno));
        return fd;
}

/* "HOST:PORT" or "[V6]:PORT". */
static int connect_tcp(const char *hostport)
{
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
        char host[256];
        const char *port;
        int fd = -1, r;

        if (hostport[0] == '[') {
                const char *end = strchr(hostport, ']');
                if (!end || end[1] != ':' || (size_t)(end - hostport) > sizeof(host))
                        die("bad address: %s", hostport);
                snprintf(host, sizeof(host), "%.*s", (int)(end - hostport - 1), hostport + 1);
                port = end + 2;
        } else {
                const char *colon = strrchr(hostport, ':');
                if (!colon || (size_t)(colon - hostport) >= sizeof(host))
                        die("bad address: %s", hostport);
                snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
                port = colon + 1;
        }
        r = getaddrinfo(host, port, &hints, &res);
        if (r != 0)
                die("cannot resolve: %s", gai_strerror(r));
        for (ai = res; ai; ai = ai->ai_next) {
                fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
                if (fd < 0)
                        continue;
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
                        break;
                close(fd);
                fd = -1;
        }
        freeaddrinfo(res);
        if (fd < 0)
                die("cannot connect to %s", hostport);
        return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        die("write: %s", strerror(errno));
                }
                p += k;
                n -= (size_t)k;
        }
}

/* Read exactly n bytes (the server does not close after answering). */
static void read_exact(int fd, char *p, size_t n, size_t *got)
{
        *got = 0;
        while (*got < n) {
                ssize_t k = recv(fd, p + *got, n - *got, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                die("read: %s", "timed out");
                        die("read: %s", strerror(errno));
                }
                if (k == 0)
                        return;
                *got += (size_t)k;
        }
}

/* Read one whole frame (header, payload, LF) into buf; returns its size. */
static size_t read_frame(int fd, char *buf, size_t size)
{
        size_t len = 0, got, n;
        char *lf, *sp;

        /* The header, one byte at a time so that nothing after it is eaten. */
        for (;;) {
                if (len + 1 >= size)
                        die("%s", "header too long");
                read_exact(fd, buf + len, 1, &got);
                if (got == 0)
                        die("%s", "connection closed before a whole frame arrived");
                len++;
                if (buf[len - 1] == '\n')
                        break;
        }
        buf[len] = '\0';
        lf = buf + len - 1;
        sp = memrchr(buf, ' ', len);
        if (!sp || sp + 1 == lf)
                die("bad frame header: %s", buf);
        n = strtoul(sp + 1, NULL, 10);
        if (len + n + 1 > size)
                die("frame too large: %s", buf);
        read_exact(fd, buf + len, n + 1, &got);
        if (got != n + 1)
                die("%s", "connection closed in the middle of a frame");
        return len + n + 1;
}

static void check_pong(const char *buf, size_t len, unsigned i)
{
        char msg[64];

        if (len == strlen(ping_resp) && memcmp(buf, ping_resp, len) == 0)
                return;
        snprintf(msg, sizeof(msg), "%u", i);
        fprintf(stderr, "test-client: answer %s is not \"OK 4\\npong\\n\": \"", msg);
        for (size_t k = 0; k < len && k < 200; k++)
                if (buf[k] >= 0x20 && buf[k] < 0x7f)
                        fputc(buf[k], stderr);
                else
                        fprintf(stderr, "\\x%02x", (unsigned char)buf[k]);
        fprintf(stderr, "\"\n");
        exit(1);
}

int main(int argc, char **argv)
{
        struct timeval tv = { .tv_sec = 30 };
        unsigned long n = 1;
        char buf[4096];
        int fd;

        if (argc == 4 && strcmp(argv[2], "pipeline") == 0) {
                char *end;
                n = strtoul(argv[3], &end, 10);
                if (*end || n == 0 || n > 10000000) {
                        fprintf(stderr, "test-client: bad count: %s\n", argv[3]);
                        return 2;
                }
        } else if (argc != 2) {
                fprintf(stderr, "usage: test-client unix:PATH|tcp:HOST:PORT [pipeline N]\n");
                return 2;
        }

        if (strncmp(argv[1], "unix:", 5) == 0)
                fd = connect_unix(argv[1] + 5);
        else if (strncmp(argv[1], "tcp:", 4) == 0)
                fd = connect_tcp(argv[1] + 4);
        else {
                fprintf(stderr, "test-client: bad address: %s\n", argv[1]);
                return 2;
        }
        /* Never hang a test run: a silent server is a failure. */
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
                die("setsockopt: %s", strerror(errno));

        if (n == 1) {
                write_all(fd, ping_req, strlen(ping_req));
                check_pong(buf, read_frame(fd, buf, sizeof(buf)), 0);
        } else {
                /* All requests in one write, then all answers, in order. */
                size_t rl = strlen(ping_req), total = rl * n;
                char *reqs = malloc(total);
                if (!reqs)
                        die("%s", "out of memory");
                for (unsigned long i = 0; i < n; i++)
                        memcpy(reqs + i * rl, ping_req, rl);
                /* We read only after writing everything: fine as long as the
                 * answers fit the server's queue limit (1 MiB by default,
                 * about 95,000 pings), as a pipelining client may expect. */
                write_all(fd, reqs, total);
                free(reqs);
                for (unsigned long i = 0; i < n; i++)
                        check_pong(buf, read_frame(fd, buf, sizeof(buf)), (unsigned)i);
        }
        close(fd);
        return 0;
}
