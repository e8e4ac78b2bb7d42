/*
 * address.c - parsing and printing of socket addresses; see address.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "address.h"
#include "macro.h"
#include "proto.h"

int address_split_host_port(const char *s, char **host, char **port)
{
        _cleanup_free_ char *h = NULL, *p = NULL;
        const char *colon;

        if (!s || !*s)
                return -EINVAL;

        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end || end == s + 1)
                        return -EINVAL;
                h = strndup(s + 1, end - s - 1);
                if (!h)
                        return -ENOMEM;
                if (end[1] == ':') {
                        if (!end[2])
                                return -EINVAL;
                        p = strdup(end + 2);
                        if (!p)
                                return -ENOMEM;
                } else if (end[1])
                        return -EINVAL;
        } else {
                colon = strchr(s, ':');
                if (colon && strchr(colon + 1, ':'))
                        colon = NULL; /* a bare IPv6 literal */
                if (colon) {
                        if (colon == s || !colon[1])
                                return -EINVAL;
                        h = strndup(s, colon - s);
                        p = strdup(colon + 1);
                        if (!h || !p)
                                return -ENOMEM;
                } else {
                        h = strdup(s);
                        if (!h)
                                return -ENOMEM;
                }
        }

        if (p) {
                char *e;
                unsigned long v;

                errno = 0;
                v = strtoul(p, &e, 10);
                if (errno || *e || p[0] < '0' || p[0] > '9' || v == 0 || v > 65535)
                        return -EINVAL;
        }

        *host = TAKE_PTR(h);
        *port = TAKE_PTR(p);
        return 0;
}

int address_from_unix_path(const char *path, Address *a)
{
        size_t n = strlen(path);

        if (n == 0)
                return -EINVAL;
        if (n >= sizeof(a->un.sun_path))
                return -ENAMETOOLONG;
        memset(a, 0, sizeof(*a));
        a->un.sun_family = AF_UNIX;
        memcpy(a->un.sun_path, path, n + 1);
        a->len = offsetof(struct sockaddr_un, sun_path) + n + 1;
        return 0;
}

int address_parse_listen(const char *spec, Address *a)
{
        _cleanup_free_ char *host = NULL, *port = NULL;
        struct addrinfo hints = {0}, *res = NULL;
        char portbuf[8];
        int r;

        if (strncmp(spec, "unix:", 5) == 0)
                return address_from_unix_path(spec + 5, a);
        if (strncmp(spec, "tcp:", 4) != 0)
                return -EINVAL;

        r = address_split_host_port(spec + 4, &host, &port);
        if (r < 0)
                return r;
        if (!port)
                snprintf(portbuf, sizeof(portbuf), "%d", PROTO_DEFAULT_PORT);

        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        r = getaddrinfo(host, port ? port : portbuf, &hints, &res);
        if (r != 0)
                return r == EAI_MEMORY ? -ENOMEM : -EADDRNOTAVAIL;
        if (res->ai_addrlen > sizeof(a->storage)) {
                freeaddrinfo(res);
                return -EINVAL;
        }
        memset(a, 0, sizeof(*a));
        memcpy(&a->storage, res->ai_addr, res->ai_addrlen);
        a->len = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
}

int address_peer_to_string(const struct sockaddr *sa, socklen_t len, char *buf, size_t size)
{
        char ip[INET6_ADDRSTRLEN];
        int n;

        if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
                if (!inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip)))
                        return -errno;
                n = snprintf(buf, size, "%s:%u", ip, ntohs(in->sin_port));
        } else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
                if (!inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip)))
                        return -errno;
                n = snprintf(buf, size, "[%s]:%u", ip, ntohs(in6->sin6_port));
        } else
                return -EAFNOSUPPORT;

        return n < 0 || (size_t)n >= size ? -ENOBUFS : 0;
}

int address_to_string(const Address *a, char *buf, size_t size)
{
        int n, r;

        if (a->sa.sa_family == AF_UNIX) {
                size_t plen = a->len > offsetof(struct sockaddr_un, sun_path)
                                  ? a->len - offsetof(struct sockaddr_un, sun_path)
                                  : 0;
                if (plen > 0 && a->un.sun_path[0] == '\0') /* abstract namespace */
                        n = snprintf(buf, size, "unix:@%.*s", (int)plen - 1, a->un.sun_path + 1);
                else
                        n = snprintf(buf, size, "unix:%.*s", (int)strnlen(a->un.sun_path, plen),
                                     a->un.sun_path);
                return n < 0 || (size_t)n >= size ? -ENOBUFS : 0;
        }
        if (size < 5)
                return -ENOBUFS;
        memcpy(buf, "tcp:", 4);
        r = address_peer_to_string(&a->sa, a->len, buf + 4, size - 4);
        return r;
}

int address_default_socket_path(char *buf, size_t size)
{
        const char *dir;
        int n;

        dir = getenv("RUNTIME_DIRECTORY");
        if (dir && *dir) {
                /* systemd separates several RuntimeDirectory= entries by ':' */
                size_t dlen = strcspn(dir, ":");
                n = snprintf(buf, size, "%.*s/ipcd.sock", (int)dlen, dir);
        } else if (geteuid() == 0)
                n = snprintf(buf, size, "/run/ipcd/ipcd.sock");
        else {
                dir = getenv("XDG_RUNTIME_DIR");
                if (!dir || dir[0] != '/')
                        return -ENXIO;
                n = snprintf(buf, size, "%s/ipcd.sock", dir);
        }
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int address_client_socket_path(char *buf, size_t size)
{
        const char *dir = getenv("XDG_RUNTIME_DIR");
        struct stat st;
        int n;

        if (geteuid() != 0 && dir && dir[0] == '/') {
                n = snprintf(buf, size, "%s/ipcd.sock", dir);
                if (n < 0 || (size_t)n >= size)
                        return -ENAMETOOLONG;
                if (stat(buf, &st) == 0 && S_ISSOCK(st.st_mode))
                        return 0;
        }
        n = snprintf(buf, size, "/run/ipcd/ipcd.sock");
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
