/*
 * session.c - opening a session with the daemon for any verb: choosing the
 * target (SPEC §3: -s, -H, $IPCD_SOCKET, then the embedded default from
 * address.h), connecting under the -t deadline, and authenticating with
 * --token-file/$IPCD_TOKEN_FILE before the verb runs.
 *
 * Owns the target's display string (static, set by session_open(); ipcctl
 * has one thread). Prints its own diagnostics with log_error(), like the
 * verbs, and returns exit statuses.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "address.h"
#include "ipcctl.h"
#include "secret.h"

static char target[ADDRESS_STRING_MAX + 300] = "the server";

const char *session_target(void)
{
        return target;
}

int session_error(int r)
{
        switch (r) {
        case -ETIME:
                log_error("timed out");
                return EXIT_STATUS_TIMEOUT;
        case -ECONNRESET:
                log_error("connection closed by %s", target);
                return EXIT_STATUS_CONNECTION;
        case -EBADMSG:
        case -EMSGSIZE:
                log_error_errno(r, "malformed frame from %s: %m", target);
                return EXIT_STATUS_CONNECTION;
        case -ENOMEM:
                log_error("out of memory");
                return EXIT_STATUS_FAILED;
        default:
                log_error_errno(r, "connection to %s failed: %m", target);
                return EXIT_STATUS_CONNECTION;
        }
}

/*
 * The token of --token-file or $IPCD_TOKEN_FILE: the whole file less one
 * line end, as ipcd reads it (secret.h). Returns 0, with *ret NULL if there
 * is no token file, or an exit status after saying what is wrong with it.
 */
static int read_token(char **ret)
{
        const char *path = arg_token_file, *e;
        size_t n;
        int r;

        if (!path && (e = getenv("IPCD_TOKEN_FILE")) && *e)
                path = e;
        if (!path)
                return 0;
        r = secret_read_file(path, false, ret, &n);
        if (r == -ENODATA)
                log_error("token file %s is empty", path);
        else if (r == -EINVAL)
                log_error("token file %s holds more than one line (or a NUL byte)", path);
        else if (r == -EBADFD || r == -EFBIG)
                log_error("cannot read token file %s: %s", path,
                          r == -EBADFD ? "not a regular file" : "longer than 4096 bytes");
        else if (r < 0)
                log_error_errno(r, "cannot read token file %s: %m", path);
        return r < 0 ? EXIT_STATUS_USAGE : 0;
}

static int authenticate(Conn *c, const char *token, usec_t deadline)
{
        char *argv[] = {(char *)"auth", (char *)token};
        ProtoFrame f;
        int r;

        r = conn_queue_request(c, argv, ELEMENTSOF(argv));
        if (r < 0)
                return session_error(r);
        r = conn_flush_wait(c, deadline);
        /* On a write error, the server may still have said why (ERR busy). */
        for (;;) {
                int q = conn_read_frame_wait(c, &f, deadline);
                if (q < 0)
                        return session_error(r < 0 && q == -ECONNRESET ? r : q);
                if (f.type == PROTO_FRAME_OK)
                        return 0;
                if (f.type == PROTO_FRAME_ERR) {
                        size_t len = f.len;
                        if (len > 0 && f.payload[len - 1] == '\n')
                                len--;
                        /* ERR busy and the like are not about the token. */
                        log_error("%s%s: %.*s",
                                  strcmp(f.word, "denied") == 0 ? "authentication failed: " : "",
                                  f.word, (int)len, f.payload);
                        return EXIT_STATUS_FAILED;
                }
                /* MORE would be a server bug, EVENT cannot be for us yet. */
        }
}

/* Append s to b quoted for a POSIX shell: '...' with ' as '\''. */
static int append_shell_quoted(Buffer *b, const char *s)
{
        int r = buffer_append(b, "'", 1);

        for (; r >= 0 && *s; s++)
                r = *s == '\'' ? buffer_append_str(b, "'\\''") : buffer_append(b, s, 1);
        if (r >= 0)
                r = buffer_append(b, "'", 1);
        return r;
}

/*
 * -H ssh:[USER@]HOST[:PORT]: ssh to HOST and run the bridge there, which
 * connects to the daemon's Unix socket on that host (its default one, or
 * -s PATH of that host), so that the daemon sees the SSH login's uid. Only
 * the bridge's own command line passes through the far shell; requests go
 * over the protocol. $IPCCTL_SSH names ssh, $IPCCTL_SSH_REMOTE the far
 * side's ipcctl.
 */
static int connect_ssh(const char *spec, Conn **ret)
{
        _cleanup_free_ char *user = NULL, *host = NULL, *port = NULL;
        const char *ssh = getenv("IPCCTL_SSH"), *remote = getenv("IPCCTL_SSH_REMOTE");
        const char *hp = spec, *at = strrchr(spec, '@');
        char *argv[16];
        _cleanup_(buffer_done) Buffer cmd = BUFFER_INIT;
        size_t n = 0;
        int r;

        if (at) {
                user = strndup(spec, (size_t)(at - spec));
                if (!user)
                        return -ENOMEM;
                hp = at + 1;
        }
        r = address_split_host_port(hp, &host, &port);
        if (r < 0)
                return r;
        if (!ssh || !*ssh)
                ssh = "ssh";
        if (!remote || !*remote)
                remote = "ipcctl";

        r = buffer_printf(&cmd, "exec %s --stdio-bridge", remote);
        if (r >= 0 && arg_socket) {
                r = buffer_append_str(&cmd, " -s ");
                if (r >= 0)
                        r = append_shell_quoted(&cmd, arg_socket);
        }
        if (r >= 0)
                r = buffer_append(&cmd, "", 1);
        if (r < 0)
                return r;

        argv[n++] = (char *)ssh;
        argv[n++] = (char *)"-T"; /* no terminal: the protocol is 8-bit clean */
        argv[n++] = (char *)"-x";
        if (port) {
                argv[n++] = (char *)"-p";
                argv[n++] = port;
        }
        if (user) {
                argv[n++] = (char *)"-l";
                argv[n++] = user;
        }
        argv[n++] = (char *)"--";
        argv[n++] = host;
        argv[n++] = cmd.data;
        argv[n] = NULL;
        return conn_connect_command(argv, ret);
}

int session_open(usec_t deadline, Conn **ret)
{
        _cleanup_free_ char *token = NULL, *host = NULL, *port = NULL;
        _cleanup_conn_ Conn *c = NULL;
        const char *path = NULL, *e;
        char buf[ADDRESS_STRING_MAX], portbuf[8];
        int r;

        r = read_token(&token);
        if (r != 0)
                return r;

        if (arg_host && strncmp(arg_host, "ssh:", 4) == 0) {
                snprintf(target, sizeof(target), "%s", arg_host);
                r = connect_ssh(arg_host + 4, &c);
                if (r < 0) {
                        log_error_errno(r, "cannot run ssh for %s: %m", target);
                        return EXIT_STATUS_CONNECTION;
                }
        } else if (arg_socket)
                path = arg_socket;
        else if (arg_host) {
                r = address_split_host_port(arg_host, &host, &port);
                if (r < 0)
                        return usage_error("invalid host: %s", arg_host);
                snprintf(portbuf, sizeof(portbuf), "%d", PROTO_DEFAULT_PORT);
        } else if ((e = getenv("IPCD_SOCKET")) && *e)
                path = e;
        else {
                r = address_client_socket_path(buf, sizeof(buf));
                if (r == -ENXIO) {
                        log_error("cannot find the daemon's socket: $XDG_RUNTIME_DIR is not set "
                                  "(use -s, -H or $IPCD_SOCKET)");
                        return EXIT_STATUS_CONNECTION;
                }
                if (r < 0) {
                        log_error_errno(r, "cannot find the daemon's socket: %m (use -s, -H or "
                                           "$IPCD_SOCKET)");
                        return EXIT_STATUS_CONNECTION;
                }
                path = buf;
        }

        if (c)
                r = 0;
        else if (path) {
                snprintf(target, sizeof(target), "unix:%s", path);
                r = conn_connect_unix(path, deadline, &c);
        } else {
                const char *p = port ? port : portbuf;
                snprintf(target, sizeof(target), strchr(host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s",
                         host, p);
                r = conn_connect_tcp(host, p, deadline, &c);
        }
        if (r == -ETIME)
                return session_error(r);
        if (r == -EADDRNOTAVAIL && !path) {
                log_error("cannot connect to %s: host not found", target);
                return EXIT_STATUS_CONNECTION;
        }
        if (r < 0) {
                log_error_errno(r, "cannot connect to %s: %m", target);
                return EXIT_STATUS_CONNECTION;
        }

        if (token) {
                r = authenticate(c, token, deadline);
                explicit_bzero(token, strlen(token));
                if (r != 0)
                        return r;
        }

        *ret = TAKE_PTR(c);
        return 0;
}
