/*
 * listener.c - listening sockets from systemd or bound standalone; see
 * listener.h.
 *
 * Main thread only, before the first client thread starts (binding,
 * listener_set_unix_access() from main.c) and after the last one is gone
 * (listener_close() at exit); no lock. The Unix socket mode and group are
 * file statics, written once at start.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <systemd/sd-daemon.h>

#include "fd-util.h"
#include "listener.h"

/* SocketMode=/SocketGroup= (or --socket-mode/--socket-group) for the Unix
 * sockets bound here; set once by main.c before the listeners are opened,
 * read by the main thread only. */
static int unix_mode = -1;
static bool unix_has_gid;
static gid_t unix_gid;

void listener_set_unix_access(int mode, bool has_gid, gid_t gid)
{
        unix_mode = mode;
        unix_has_gid = has_gid;
        unix_gid = gid;
}

static void listener_name(int fd, Listener *l)
{
        Address a = {.len = sizeof(a.storage)};

        if (getsockname(fd, &a.sa, &a.len) < 0 ||
            address_to_string(&a, l->name, sizeof(l->name)) < 0)
                snprintf(l->name, sizeof(l->name), "fd:%d", fd);
}

int listener_from_fd(int fd, Listener *l)
{
        int r;

        if (fd >= FD_SETSIZE)
                return -EMFILE;
        r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOTSOCK; /* not a listening stream socket */
        if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0)
                l->transport = TRANSPORT_UNIX;
        else if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0)
                l->transport = TRANSPORT_TCP;
        else
                return -EAFNOSUPPORT;
        r = fd_nonblock(fd, true);
        if (r < 0)
                return r;
        l->fd = fd;
        l->unlink_path = NULL;
        listener_name(fd, l);
        return 0;
}

/* A leftover socket file from an ipcd that died is removed; a live one is
 * somebody else's, and not ours to take. */
static int unix_path_prepare(const char *path)
{
        _cleanup_close_ int fd = -1;
        Address a;
        struct stat st;
        int r;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST;
        r = address_from_unix_path(path, &a);
        if (r < 0)
                return r;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, &a.sa, a.len) == 0)
                return -EADDRINUSE;
        if (errno != ECONNREFUSED)
                return -errno;
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

int listener_bind(const char *spec, Listener *l)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *path = NULL;
        Address a;
        int r, one = 1;

        r = address_parse_listen(spec, &a);
        if (r < 0)
                return r;

        fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (fd >= FD_SETSIZE)
                return -EMFILE;

        if (a.sa.sa_family == AF_UNIX) {
                path = strdup(a.un.sun_path);
                if (!path)
                        return -ENOMEM;
                r = unix_path_prepare(path);
                if (r < 0)
                        return r;
        } else {
                if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                        return -errno;
                if (a.sa.sa_family == AF_INET6 &&
                    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
                        return -errno;
        }

        if (bind(fd, &a.sa, a.len) < 0)
                return -errno;
        /* Before listen(): nobody connects while the mode is the umask's. */
        if (path && ((unix_has_gid && chown(path, (uid_t)-1, unix_gid) < 0) ||
                     (unix_mode >= 0 && chmod(path, (mode_t)unix_mode) < 0))) {
                r = -errno;
                unlink(path);
                return r;
        }
        if (listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                if (path)
                        unlink(path);
                return r;
        }

        l->transport = a.sa.sa_family == AF_UNIX ? TRANSPORT_UNIX : TRANSPORT_TCP;
        l->unlink_path = TAKE_PTR(path);
        l->fd = TAKE_FD(fd);
        listener_name(l->fd, l);
        return 0;
}

void listener_close(Listener *l)
{
        l->fd = safe_close(l->fd);
        if (l->unlink_path) {
                (void)unlink(l->unlink_path);
                free(l->unlink_path);
                l->unlink_path = NULL;
        }
}
