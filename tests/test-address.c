/*
 * test-address.c - unit tests for src/shared/address.c: host:port
 * splitting, --listen specifications, printing, the daemon's embedded
 * default socket path and the client's default, with their environment
 * precedence (the unprivileged cases in a child running as nobody when we
 * are root). Plain C; a failed check
 * prints file:line, and the exit status is non-zero if any check failed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* setresuid() */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "address.h"
#include "macro.h"
#include "proto.h"

static unsigned n_failed, n_checks;

#define CHECK_AT(line, cond)                                                                       \
        ({                                                                                         \
                bool _ok = (cond);                                                                 \
                n_checks++;                                                                        \
                if (!_ok) {                                                                        \
                        n_failed++;                                                                \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, (line), #cond);     \
                }                                                                                  \
                _ok;                                                                               \
        })
#define CHECK(cond) CHECK_AT(__LINE__, cond)

static bool streq_null(const char *a, const char *b)
{
        return a == b || (a && b && strcmp(a, b) == 0);
}

static void split_ok_at(int line, const char *s, const char *want_host, const char *want_port)
{
        char *host = (char *)1, *port = (char *)1;
        int r = address_split_host_port(s, &host, &port);

        if (!CHECK_AT(line, r == 0)) {
                fprintf(stderr, "  \"%s\": r=%d\n", s, r);
                return;
        }
        if (!CHECK_AT(line, streq_null(host, want_host) && streq_null(port, want_port)))
                fprintf(stderr, "  \"%s\": host=%s port=%s, wanted %s %s\n", s, host,
                        port ? port : "(null)", want_host, want_port ? want_port : "(null)");
        free(host);
        free(port);
}

static void split_bad_at(int line, const char *s)
{
        char *host = NULL, *port = NULL;
        int r = address_split_host_port(s, &host, &port);

        if (!CHECK_AT(line, r == -EINVAL))
                fprintf(stderr, "  \"%s\": r=%d, wanted -EINVAL\n", s ? s : "(null)", r);
        if (r == 0) {
                free(host);
                free(port);
        }
}

#define SPLIT_OK(s, h, p) split_ok_at(__LINE__, s, h, p)
#define SPLIT_BAD(s) split_bad_at(__LINE__, s)

static void test_split(void)
{
        SPLIT_OK("localhost", "localhost", NULL);
        SPLIT_OK("localhost:80", "localhost", "80");
        SPLIT_OK("127.0.0.1:9966", "127.0.0.1", "9966");
        SPLIT_OK("example.org:1", "example.org", "1");
        SPLIT_OK("h:65535", "h", "65535");
        SPLIT_OK("[::1]:1234", "::1", "1234");
        SPLIT_OK("[::1]", "::1", NULL);
        SPLIT_OK("[fe80::1%lo]:22", "fe80::1%lo", "22");
        /* A bare IPv6 literal: all of it is the host. */
        SPLIT_OK("::1", "::1", NULL);
        SPLIT_OK("fe80::1:2", "fe80::1:2", NULL);
        SPLIT_OK("2001:db8::1", "2001:db8::1", NULL);

        SPLIT_BAD(NULL);
        SPLIT_BAD("");
        SPLIT_BAD("h:0");
        SPLIT_BAD("h:65536");
        SPLIT_BAD("h:99999999999999999999");
        SPLIT_BAD("h:abc");
        SPLIT_BAD("h:80x");
        SPLIT_BAD("h:-1");
        SPLIT_BAD("h:+80");
        SPLIT_BAD("h: 80");
        SPLIT_BAD("h:");
        SPLIT_BAD(":80");
        SPLIT_BAD(":");
        SPLIT_BAD("[");
        SPLIT_BAD("[]");
        SPLIT_BAD("[]:80");
        SPLIT_BAD("[::1");
        SPLIT_BAD("[::1]:");
        SPLIT_BAD("[::1]:0");
        SPLIT_BAD("[::1]:65536");
        SPLIT_BAD("[::1]:abc");
        SPLIT_BAD("[::1]x");
        SPLIT_BAD("[::1]80");
}

static void to_string_at(int line, const Address *a, const char *want)
{
        char buf[ADDRESS_STRING_MAX];
        int r = address_to_string(a, buf, sizeof(buf));

        if (CHECK_AT(line, r == 0) && !CHECK_AT(line, strcmp(buf, want) == 0))
                fprintf(stderr, "  got \"%s\", wanted \"%s\"\n", buf, want);
}

static void listen_bad_at(int line, const char *spec, int want)
{
        Address a;
        int r = address_parse_listen(spec, &a);

        if (!CHECK_AT(line, r == want))
                fprintf(stderr, "  \"%.60s\": r=%d, wanted %d\n", spec, r, want);
}

#define LISTEN_BAD(spec, want) listen_bad_at(__LINE__, spec, want)

static void test_parse_listen(void)
{
        char spec[300], path[200];
        Address a;
        size_t max = sizeof(a.un.sun_path) - 1; /* longest path with its NUL */

        CHECK(address_parse_listen("unix:/run/ipcd/ipcd.sock", &a) == 0);
        CHECK(a.sa.sa_family == AF_UNIX);
        CHECK(strcmp(a.un.sun_path, "/run/ipcd/ipcd.sock") == 0);
        CHECK(a.len == offsetof(struct sockaddr_un, sun_path) + strlen("/run/ipcd/ipcd.sock") + 1);
        to_string_at(__LINE__, &a, "unix:/run/ipcd/ipcd.sock");

        CHECK(address_parse_listen("unix:relative.sock", &a) == 0);
        CHECK(a.sa.sa_family == AF_UNIX && strcmp(a.un.sun_path, "relative.sock") == 0);

        CHECK(address_parse_listen("tcp:127.0.0.1:9966", &a) == 0);
        CHECK(a.sa.sa_family == AF_INET);
        CHECK(a.len == sizeof(struct sockaddr_in));
        CHECK(ntohs(a.in.sin_port) == 9966);
        CHECK(a.in.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
        to_string_at(__LINE__, &a, "tcp:127.0.0.1:9966");

        CHECK(address_parse_listen("tcp:[::1]:1234", &a) == 0);
        CHECK(a.sa.sa_family == AF_INET6);
        CHECK(a.len == sizeof(struct sockaddr_in6));
        CHECK(ntohs(a.in6.sin6_port) == 1234);
        CHECK(memcmp(&a.in6.sin6_addr, &in6addr_loopback, sizeof(struct in6_addr)) == 0);
        to_string_at(__LINE__, &a, "tcp:[::1]:1234");

        CHECK(address_parse_listen("tcp:0.0.0.0:1", &a) == 0);
        to_string_at(__LINE__, &a, "tcp:0.0.0.0:1");
        CHECK(address_parse_listen("tcp:[::]:65535", &a) == 0);
        to_string_at(__LINE__, &a, "tcp:[::]:65535");

        /* No port: the default, 9966. */
        CHECK(address_parse_listen("tcp:127.0.0.1", &a) == 0);
        CHECK(a.sa.sa_family == AF_INET && ntohs(a.in.sin_port) == PROTO_DEFAULT_PORT);
        CHECK(address_parse_listen("tcp:[::1]", &a) == 0);
        CHECK(a.sa.sa_family == AF_INET6 && ntohs(a.in6.sin6_port) == PROTO_DEFAULT_PORT);
        if (CHECK(address_parse_listen("tcp:localhost", &a) == 0)) {
                if (a.sa.sa_family == AF_INET) {
                        CHECK(ntohs(a.in.sin_port) == 9966);
                        CHECK(a.in.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
                } else if (CHECK(a.sa.sa_family == AF_INET6)) {
                        CHECK(ntohs(a.in6.sin6_port) == 9966);
                        CHECK(memcmp(&a.in6.sin6_addr, &in6addr_loopback, sizeof(struct in6_addr)) == 0);
                }
        }
        CHECK(address_parse_listen("tcp:localhost:4242", &a) == 0);
        CHECK(a.sa.sa_family == AF_INET ? ntohs(a.in.sin_port) == 4242
                                         : ntohs(a.in6.sin6_port) == 4242);

        LISTEN_BAD("", -EINVAL);
        LISTEN_BAD("unix", -EINVAL);
        LISTEN_BAD("unix:", -EINVAL);
        LISTEN_BAD("UNIX:/x", -EINVAL);
        LISTEN_BAD("/run/ipcd/ipcd.sock", -EINVAL);
        LISTEN_BAD("udp:127.0.0.1:9966", -EINVAL);
        LISTEN_BAD("tcp", -EINVAL);
        LISTEN_BAD("tcp:", -EINVAL);
        LISTEN_BAD("tcp6:[::1]:1", -EINVAL);
        LISTEN_BAD("TCP:127.0.0.1:1", -EINVAL);
        LISTEN_BAD("tcp:127.0.0.1:0", -EINVAL);
        LISTEN_BAD("tcp:127.0.0.1:65536", -EINVAL);
        LISTEN_BAD("tcp:127.0.0.1:x", -EINVAL);
        LISTEN_BAD("tcp:127.0.0.1:", -EINVAL);
        LISTEN_BAD("tcp:[::1", -EINVAL);
        LISTEN_BAD("tcp:[]:1", -EINVAL);
        LISTEN_BAD("tcp:nonexistent.invalid:80", -EADDRNOTAVAIL);

        /* The longest Unix path that fits, and one byte more. */
        memset(path, 'p', max);
        path[0] = '/';
        path[max] = '\0';
        snprintf(spec, sizeof(spec), "unix:%s", path);
        CHECK(address_parse_listen(spec, &a) == 0);
        CHECK(a.sa.sa_family == AF_UNIX && strcmp(a.un.sun_path, path) == 0);
        {
                char buf[ADDRESS_STRING_MAX];
                CHECK(address_to_string(&a, buf, sizeof(buf)) == 0);
                CHECK(strcmp(buf, spec) == 0);
        }
        path[max] = 'p';
        path[max + 1] = '\0';
        snprintf(spec, sizeof(spec), "unix:%s", path);
        LISTEN_BAD(spec, -ENAMETOOLONG);
        CHECK(address_from_unix_path(path, &a) == -ENAMETOOLONG);
        CHECK(address_from_unix_path("", &a) == -EINVAL);
        CHECK(address_from_unix_path("/x", &a) == 0 && strcmp(a.un.sun_path, "/x") == 0);
}

static void test_to_string(void)
{
        Address a;
        char buf[ADDRESS_STRING_MAX], small[8];

        /* An abstract socket, as systemd passes them (no trailing NUL). */
        memset(&a, 0, sizeof(a));
        a.un.sun_family = AF_UNIX;
        memcpy(a.un.sun_path, "\0ipcd", 5);
        a.len = offsetof(struct sockaddr_un, sun_path) + 5;
        to_string_at(__LINE__, &a, "unix:@ipcd");

        /* A path filling sun_path completely, without a NUL, is not overread. */
        memset(&a, 0, sizeof(a));
        a.un.sun_family = AF_UNIX;
        memset(a.un.sun_path, 'q', sizeof(a.un.sun_path));
        a.un.sun_path[0] = '/';
        a.len = sizeof(struct sockaddr_un);
        if (CHECK(address_to_string(&a, buf, sizeof(buf)) == 0))
                CHECK(strlen(buf) == 5 + sizeof(a.un.sun_path));

        /* Too small a buffer is an error, not a truncated address. */
        CHECK(address_parse_listen("unix:/run/ipcd/ipcd.sock", &a) == 0);
        CHECK(address_to_string(&a, small, sizeof(small)) < 0);
        CHECK(address_parse_listen("tcp:127.0.0.1:9966", &a) == 0);
        CHECK(address_to_string(&a, small, sizeof(small)) < 0);
        CHECK(address_to_string(&a, buf, 5) < 0);
        CHECK(address_to_string(&a, buf, strlen("tcp:127.0.0.1:9966")) < 0);
        CHECK(address_to_string(&a, buf, strlen("tcp:127.0.0.1:9966") + 1) == 0);

        /* Peers. */
        {
                struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(4242) };
                struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(4243) };
                struct sockaddr_un un = { .sun_family = AF_UNIX };

                in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                in6.sin6_addr = in6addr_loopback;
                CHECK(address_peer_to_string((struct sockaddr *)&in, sizeof(in), buf, sizeof(buf)) == 0);
                CHECK(strcmp(buf, "127.0.0.1:4242") == 0);
                CHECK(address_peer_to_string((struct sockaddr *)&in6, sizeof(in6), buf, sizeof(buf)) == 0);
                CHECK(strcmp(buf, "[::1]:4243") == 0);
                CHECK(address_peer_to_string((struct sockaddr *)&un, sizeof(un), buf, sizeof(buf)) < 0);
                CHECK(address_peer_to_string((struct sockaddr *)&in, sizeof(in) - 1, buf, sizeof(buf)) < 0);
                CHECK(address_peer_to_string((struct sockaddr *)&in, sizeof(in), buf, 5) < 0);
        }
}

static void default_path_at(int line, const char *want)
{
        char buf[ADDRESS_STRING_MAX];
        int r = address_default_socket_path(buf, sizeof(buf));

        if (!want) {
                if (!CHECK_AT(line, r == -ENXIO))
                        fprintf(stderr, "  r=%d \"%s\", wanted -ENXIO\n", r, r == 0 ? buf : "");
                return;
        }
        if (!CHECK_AT(line, r == 0 && strcmp(buf, want) == 0))
                fprintf(stderr, "  r=%d \"%s\", wanted \"%s\"\n", r, r == 0 ? buf : "", want);
}

#define DEFAULT_PATH(want) default_path_at(__LINE__, want)

/* Directories for address_client_socket_path(): one holding a socket named
 * ipcd.sock, one holding a regular file of that name. Made by main(). */
static char client_sock_dir[64], client_file_dir[64];

static void client_path_at(int line, const char *want)
{
        char buf[ADDRESS_STRING_MAX];
        int r = address_client_socket_path(buf, sizeof(buf));

        if (!CHECK_AT(line, r == 0 && strcmp(buf, want) == 0))
                fprintf(stderr, "  r=%d \"%s\", wanted \"%s\"\n", r, r == 0 ? buf : "", want);
}

#define CLIENT_PATH(want) client_path_at(__LINE__, want)

/* The client's default for an unprivileged user: the per-user socket when
 * it exists, else the system one; $RUNTIME_DIRECTORY never matters. */
static void test_client_path_user(void)
{
        char want[128];

        snprintf(want, sizeof(want), "%s/ipcd.sock", client_sock_dir);
        setenv("XDG_RUNTIME_DIR", client_sock_dir, 1);
        unsetenv("RUNTIME_DIRECTORY");
        CLIENT_PATH(want);
        setenv("RUNTIME_DIRECTORY", "/run/other-service", 1);
        CLIENT_PATH(want);
        setenv("XDG_RUNTIME_DIR", client_file_dir, 1); /* ipcd.sock is not a socket */
        CLIENT_PATH("/run/ipcd/ipcd.sock");
        setenv("XDG_RUNTIME_DIR", "/nonexistent", 1);
        CLIENT_PATH("/run/ipcd/ipcd.sock");
        setenv("XDG_RUNTIME_DIR", "relative", 1);
        CLIENT_PATH("/run/ipcd/ipcd.sock");
        unsetenv("XDG_RUNTIME_DIR");
        CLIENT_PATH("/run/ipcd/ipcd.sock");
}

/* The cases for an unprivileged user; run in a child that dropped root. */
static void test_default_path_user(void)
{
        unsetenv("RUNTIME_DIRECTORY");
        setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
        DEFAULT_PATH("/run/user/1000/ipcd.sock");
        setenv("RUNTIME_DIRECTORY", "/run/user/1000/ipcd", 1);
        DEFAULT_PATH("/run/user/1000/ipcd/ipcd.sock");
        setenv("RUNTIME_DIRECTORY", "", 1);
        DEFAULT_PATH("/run/user/1000/ipcd.sock");
        unsetenv("RUNTIME_DIRECTORY");
        unsetenv("XDG_RUNTIME_DIR");
        DEFAULT_PATH(NULL);
        setenv("XDG_RUNTIME_DIR", "", 1);
        DEFAULT_PATH(NULL);
        setenv("XDG_RUNTIME_DIR", "relative/dir", 1); /* not absolute: ignored */
        DEFAULT_PATH(NULL);
}

static void test_default_path(void)
{
        char buf[16];

        /* $RUNTIME_DIRECTORY wins over everything, root or not. */
        setenv("RUNTIME_DIRECTORY", "/run/ipcd-test", 1);
        setenv("XDG_RUNTIME_DIR", "/run/user/0", 1);
        DEFAULT_PATH("/run/ipcd-test/ipcd.sock");
        /* systemd joins several RuntimeDirectory= entries with ':'. */
        setenv("RUNTIME_DIRECTORY", "/run/a:/run/b", 1);
        DEFAULT_PATH("/run/a/ipcd.sock");
        setenv("RUNTIME_DIRECTORY", "a:b", 1);
        DEFAULT_PATH("a/ipcd.sock");
        setenv("RUNTIME_DIRECTORY", "/tmp/x", 1);
        CHECK(address_default_socket_path(buf, sizeof(buf)) == -ENAMETOOLONG);
        CHECK(address_default_socket_path(buf, strlen("/tmp/x/ipcd.sock")) == -ENAMETOOLONG);

        if (geteuid() == 0) {
                /* Root: /run/ipcd, and $XDG_RUNTIME_DIR does not matter. */
                setenv("RUNTIME_DIRECTORY", "", 1);
                DEFAULT_PATH("/run/ipcd/ipcd.sock");
                unsetenv("RUNTIME_DIRECTORY");
                DEFAULT_PATH("/run/ipcd/ipcd.sock");
                unsetenv("XDG_RUNTIME_DIR");
                DEFAULT_PATH("/run/ipcd/ipcd.sock");

                /* And the unprivileged cases in a child running as nobody. */
                pid_t pid = fork();
                if (pid == 0) {
                        n_failed = 0;
                        if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
                            setresuid(65534, 65534, 65534) < 0) {
                                perror("dropping privileges");
                                _exit(77);
                        }
                        test_default_path_user();
                        test_client_path_user();
                        _exit(n_failed ? 1 : 0);
                }
                int status;
                if (CHECK(pid > 0 && waitpid(pid, &status, 0) == pid) && WIFEXITED(status) &&
                    WEXITSTATUS(status) == 77)
                        fprintf(stderr, "test-address: could not drop root, unprivileged cases skipped\n");
                else
                        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        } else {
                test_default_path_user();
                test_client_path_user();
        }
}

static void test_client_path(void)
{
        char buf[8];

        /* Root always uses the system socket. */
        if (geteuid() == 0) {
                setenv("RUNTIME_DIRECTORY", "/run/other-service", 1);
                setenv("XDG_RUNTIME_DIR", client_sock_dir, 1);
                CLIENT_PATH("/run/ipcd/ipcd.sock");
                unsetenv("RUNTIME_DIRECTORY");
                unsetenv("XDG_RUNTIME_DIR");
                CLIENT_PATH("/run/ipcd/ipcd.sock");
        }
        CHECK(address_client_socket_path(buf, sizeof(buf)) == -ENAMETOOLONG);
}

/* Make the directories for the client path tests, readable by nobody. */
static int make_client_dirs(void)
{
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        int fd;

        snprintf(client_sock_dir, sizeof(client_sock_dir), "/tmp/test-address-XXXXXX");
        snprintf(client_file_dir, sizeof(client_file_dir), "/tmp/test-address-XXXXXX");
        if (!mkdtemp(client_sock_dir) || !mkdtemp(client_file_dir))
                return -errno;
        if (chmod(client_sock_dir, 0755) < 0 || chmod(client_file_dir, 0755) < 0)
                return -errno;
        snprintf(un.sun_path, sizeof(un.sun_path), "%s/ipcd.sock", client_sock_dir);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0)
                return -errno;
        close(fd);
        snprintf(un.sun_path, sizeof(un.sun_path), "%s/ipcd.sock", client_file_dir);
        fd = open(un.sun_path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        close(fd);
        return 0;
}

static void remove_client_dirs(void)
{
        char p[128];

        snprintf(p, sizeof(p), "%s/ipcd.sock", client_sock_dir);
        (void)unlink(p);
        (void)rmdir(client_sock_dir);
        snprintf(p, sizeof(p), "%s/ipcd.sock", client_file_dir);
        (void)unlink(p);
        (void)rmdir(client_file_dir);
}

int main(void)
{
        test_split();
        test_parse_listen();
        test_to_string();
        if (!CHECK(make_client_dirs() == 0))
                perror("test-address: making the client path directories");
        test_default_path();
        test_client_path();
        remove_client_dirs();

        if (n_failed) {
                fprintf(stderr, "test-address: %u of %u checks failed\n", n_failed, n_checks);
                return EXIT_FAILURE;
        }
        printf("test-address: all %u checks passed\n", n_checks);
        return EXIT_SUCCESS;
}
