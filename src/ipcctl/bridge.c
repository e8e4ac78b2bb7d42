/*
 * bridge.c - ipcctl --stdio-bridge: the far side of `ipcctl -H ssh:HOST`.
 * Connects to the daemon's Unix socket on this host (-s, $IPCD_SOCKET or
 * the default, as any verb would) and copies standard input to it and what
 * it sends to standard output, until both directions have ended. The
 * daemon sees this process's uid: the SSH login's.
 *
 * Bytes only: the bridge knows nothing of the protocol. A failure to
 * connect is reported on stderr (which ssh carries back) with exit 3.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "address.h"
#include "ipcctl.h"

/* Move what one read() gives from `from` to `to`; 0 at end of file. */
static int copy_once(int from, int to)
{
        char buf[65536];
        ssize_t n, done = 0;

        do
                n = read(from, buf, sizeof(buf));
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EAGAIN ? 1 : -errno;
        while (done < n) {
                ssize_t w = write(to, buf + done, (size_t)(n - done));
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno == EAGAIN) {
                        struct pollfd p = {.fd = to, .events = POLLOUT};
                        (void)poll(&p, 1, -1);
                        continue;
                }
                if (w < 0)
                        return -errno;
                done += w;
        }
        return n > 0;
}

int run_stdio_bridge(void)
{
        char buf[ADDRESS_STRING_MAX];
        const char *path = arg_socket, *e;
        bool in_open = true, sock_open = true;
        _cleanup_conn_ Conn *c = NULL;
        int r;

        if (!path && (e = getenv("IPCD_SOCKET")) && *e)
                path = e;
        if (!path) {
                r = address_client_socket_path(buf, sizeof(buf));
                if (r < 0) {
                        log_error_errno(r, "cannot find the daemon's socket: %m");
                        return EXIT_STATUS_CONNECTION;
                }
                path = buf;
        }
        r = conn_connect_unix(path, deadline_after(arg_timeout), &c);
        if (r < 0) {
                log_error_errno(r, "cannot connect to unix:%s: %m", path);
                return EXIT_STATUS_CONNECTION;
        }

        while (sock_open) {
                struct pollfd p[2] = {
                    {.fd = in_open ? STDIN_FILENO : -1, .events = POLLIN},
                    {.fd = c->fd, .events = POLLIN},
                };

                r = poll_deadline(p, ELEMENTSOF(p), USEC_INFINITY);
                if (r < 0)
                        return EXIT_STATUS_CONNECTION;
                if (p[0].revents) {
                        r = copy_once(STDIN_FILENO, c->fd);
                        if (r <= 0) {
                                /* The client is done sending: so are we. */
                                in_open = false;
                                (void)shutdown(c->fd, SHUT_WR);
                        }
                }
                if (p[1].revents) {
                        r = copy_once(c->fd, STDOUT_FILENO);
                        if (r <= 0)
                                sock_open = false;
                }
        }
        return EXIT_STATUS_OK;
}
