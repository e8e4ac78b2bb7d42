/*
 * exec.c - configured commands; see exec.h.
 *
 * Ownership: the reader thread that calls exec_run() owns the child from
 * spawn to reaping, its pidfd and the read end of its output pipe; all
 * are closed and the child reaped before exec_run() returns, whatever
 * happens. Nobody else waits for children (there is no SIGCHLD handler).
 * The only shared state is the server's n_running counter (an atomic).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"
#include "log.h"
#include "server.h"

/* Output is read and sent in pieces of at most this size. */
#define EXEC_READ_CHUNK 65536
/* After SIGTERM (timeout), how long the command has before SIGKILL. */
#define EXEC_KILL_GRACE_USEC (3 * 1000000)
/* How often a half-closed TCP client is probed for being gone. */
#define EXEC_PROBE_USEC (1000 * 1000)
#define EXEC_PATH       "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

typedef enum ExecEnd {
        EXEC_EXITED,
        EXEC_TIMEOUT,
        EXEC_TOO_MUCH_OUTPUT,
        EXEC_CLIENT_GONE,
} ExecEnd;

static void argv_free(char **v)
{
        if (v)
                for (char **p = v; *p; p++)
                        free(*p);
        free(v);
}

static char **build_env(const Client *c, const CommandConfig *cmd)
{
        char **env = calloc(10, sizeof(char *));
        size_t n = 0;
        int ok = 1;

        if (!env)
                return NULL;
#define ENV(...) (ok &= asprintf(&env[n++], __VA_ARGS__) >= 0)
        ENV("PATH=%s", EXEC_PATH);
        ENV("IPCD_CLIENT_ID=%" PRIu64, c->id);
        ENV("IPCD_COMMAND=%s", cmd->name);
        ENV("IPCD_TRANSPORT=%s", transport_to_string(c->transport));
        ENV("IPCD_ROLE=%s", role_to_string(atomic_load(&c->role)));
        if (c->transport == TRANSPORT_UNIX) {
                ENV("IPCD_PEER_UID=%u", (unsigned)c->cred.uid);
                ENV("IPCD_PEER_GID=%u", (unsigned)c->cred.gid);
                ENV("IPCD_PEER_PID=%d", (int)c->cred.pid);
        } else
                ENV("IPCD_PEER_ADDR=%s", c->peer);
#undef ENV
        if (!ok) {
                argv_free(env);
                return NULL;
        }
        return env;
}

/* A short, printable rendering of the arguments for the journal. */
static void describe_args(const ProtoRequest *req, char *buf, size_t size)
{
        size_t o = 0;

        buf[0] = '\0';
        for (size_t i = 1; i < req->n_args && o + 8 < size; i++) {
                buf[o++] = ' ';
                for (size_t j = 0; j < req->args[i].len && o + 8 < size; j++) {
                        unsigned char ch = req->args[i].data[j];
                        if (ch > ' ' && ch < 0x7f && ch != '\\')
                                buf[o++] = ch;
                        else
                                o += snprintf(buf + o, size - o, "\\x%02x", ch);
                }
        }
        if (o + 8 >= size)
                o += snprintf(buf + o, size - o, "...");
        buf[o] = '\0';
}

static int spawn(const Client *c, const CommandConfig *cmd, const ProtoRequest *req, int out_fd,
                 pid_t *ret)
{
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        size_t n_exec = 0, n_args = req->n_args - 1;
        char **argv = NULL, **env = NULL;
        sigset_t none, all;
        int r;

        while (cmd->argv[n_exec])
                n_exec++;
        argv = calloc(n_exec + n_args + 1, sizeof(char *));
        env = build_env(c, cmd);
        if (!argv || !env) {
                free(argv);
                argv_free(env);
                return ENOMEM;
        }
        /* The arguments point into the request: passed through, never parsed. */
        memcpy(argv, cmd->argv, n_exec * sizeof(char *));
        for (size_t i = 0; i < n_args; i++)
                argv[n_exec + i] = (char *)req->args[i + 1].data;

        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
        posix_spawn_file_actions_adddup2(&fa, out_fd, STDERR_FILENO);
        posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);

        /* Its own process group (so timeouts reach its children too), an
         * empty signal mask and default dispositions (we ignore SIGPIPE). */
        posix_spawnattr_init(&attr);
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF);

        r = posix_spawn(ret, argv[0], &fa, &attr, argv, env);

        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&fa);
        free(argv);
        argv_free(env);
        return r;
}

/* Kill the command's whole process group; `pid` is its leader. */
static void kill_group(pid_t pid, int sig)
{
        if (kill(-pid, sig) < 0 && errno == ESRCH)
                (void)kill(pid, sig);
}

/* Reap the child; after `deadline` escalate to SIGKILL. Returns its status. */
static int reap(pid_t pid, int pidfd, uint64_t deadline)
{
        siginfo_t si = {0};

        for (;;) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                struct pollfd p = {.fd = pidfd, .events = POLLIN};
                int timeout = deadline == UINT64_MAX ? -1
                              : now >= deadline
                                  ? 0
                                  : (int)MIN((deadline - now + 999) / 1000, (uint64_t)INT32_MAX);

                if (poll(&p, 1, timeout) == 0 && now_usec(CLOCK_MONOTONIC) >= deadline) {
                        kill_group(pid, SIGKILL);
                        deadline = UINT64_MAX;
                        continue;
                }
                if (waitid(P_PID, (id_t)pid, &si, WEXITED) == 0)
                        break;
                if (errno != EINTR)
                        return -1;
        }
        return si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status, 0) : si.si_status & 0x7f;
}

static int append_more(Client *c, const char *data, size_t len)
{
        if (len == 0)
                return 0;
        if (proto_append_frame(&c->out, PROTO_FRAME_MORE, NULL, data, len) < 0)
                return -ENOMEM;
        return client_flush(c); /* line by line, as the command writes */
}

int exec_run(Client *c, const CommandConfig *cmd, const ProtoRequest *req)
{
        Server *s = c->server;
        uint64_t start = now_usec(CLOCK_MONOTONIC), deadline, total = 0;
        size_t n_args = req->n_args - 1;
        int pipefd[2] = {-1, -1}, pidfd = -1, status = -1, r;
        char args[256], result[64], *buf = NULL;
        ExecEnd end = EXEC_EXITED;
        bool out_open = true, exited = false;
        uint64_t next_probe = 0;
        pid_t pid = 0;
        unsigned running;

        if (cmd->max_args == 0 && n_args > 0)
                return proto_append_err(&c->out, "bad-request", "%s takes no arguments",
                                        cmd->name) < 0
                           ? -ENOMEM
                           : 1;
        if (cmd->max_args > 0 && n_args > (size_t)cmd->max_args)
                return proto_append_err(&c->out, "bad-request", "%s takes at most %d argument(s)",
                                        cmd->name, cmd->max_args) < 0
                           ? -ENOMEM
                           : 1;
        for (size_t i = 1; i < req->n_args; i++)
                if (memchr(req->args[i].data, '\0', req->args[i].len))
                        return proto_append_err(&c->out, "bad-request",
                                                "arguments of %s cannot hold a NUL byte",
                                                cmd->name) < 0
                                   ? -ENOMEM
                                   : 1;

        running = atomic_fetch_add(&s->n_running, 1);
        if (running >= c->config->max_running) {
                atomic_fetch_sub(&s->n_running, 1);
                log_client(LOG_NOTICE, c, "refused %s: MaxRunning=%u commands already running",
                           cmd->name, c->config->max_running);
                return proto_append_err(&c->out, "busy",
                                        "MaxRunning=%u commands are running; try again later",
                                        c->config->max_running) < 0
                           ? -ENOMEM
                           : 1;
        }

        describe_args(req, args, sizeof(args));
        /* What this batch answered before goes out before the command's output. */
        if (client_flush(c) < 0)
                end = EXEC_CLIENT_GONE;

        buf = malloc(EXEC_READ_CHUNK);
        if (!buf || pipe2(pipefd, O_CLOEXEC) < 0) {
                r = errno ? errno : ENOMEM;
                goto spawn_failed;
        }
        r = spawn(c, cmd, req, pipefd[1], &pid);
        pipefd[1] = safe_close(pipefd[1]);
        if (r != 0)
                goto spawn_failed;
        pidfd = pidfd_open(pid, 0);
        if (pidfd < 0) {
                /* Cannot watch it: do not let it run unsupervised. */
                r = errno;
                kill_group(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
                pid = 0;
                goto spawn_failed;
        }

        deadline = cmd->timeout_sec ? start + (uint64_t)cmd->timeout_sec * 1000000 : UINT64_MAX;
        while (end == EXEC_EXITED && (out_open || !exited)) {
                /* The client socket with no events still reports a hang-up:
                 * a client that closed its connection. */
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                /* With no events the client socket still reports a hang-up
                 * (a Unix peer that closed). A TCP peer that closes sends
                 * only a FIN, just like one that merely stopped sending and
                 * waits for the output: on that, probe once a second. */
                bool watch_rdhup = c->transport == TRANSPORT_TCP && now >= next_probe;
                struct pollfd p[3] = {
                    {.fd = out_open ? pipefd[0] : -1, .events = POLLIN},
                    {.fd = exited ? -1 : pidfd, .events = POLLIN},
                    {.fd = c->fd, .events = watch_rdhup ? POLLRDHUP : 0},
                };
                uint64_t wake =
                    MIN(deadline, watch_rdhup || next_probe == 0 ? UINT64_MAX : next_probe);
                int timeout = wake == UINT64_MAX ? -1
                              : now >= wake
                                  ? 0
                                  : (int)MIN((wake - now + 999) / 1000, (uint64_t)INT32_MAX);

                if (queue_is_dead(&c->queue)) {
                        end = EXEC_CLIENT_GONE;
                        break;
                }
                r = poll(p, 3, timeout);
                if (r < 0 && errno != EINTR)
                        break;
                if (r == 0 && now_usec(CLOCK_MONOTONIC) >= deadline) {
                        end = EXEC_TIMEOUT;
                        break;
                }
                if (p[2].revents & (POLLHUP | POLLERR)) {
                        end = EXEC_CLIENT_GONE;
                        break;
                }
                if (p[2].revents & POLLRDHUP) {
                        /* An empty MORE frame is a valid no-op for a client
                         * that still listens; a closed one answers it with a
                         * reset, which the next poll() reports as POLLERR. */
                        if (proto_append_frame(&c->out, PROTO_FRAME_MORE, NULL, NULL, 0) < 0 ||
                            client_flush(c) < 0) {
                                end = EXEC_CLIENT_GONE;
                                break;
                        }
                        next_probe = now_usec(CLOCK_MONOTONIC) + EXEC_PROBE_USEC;
                }
                if (p[1].revents & POLLIN) {
                        exited = true;
                        /* A grandchild may hold the pipe: take what is there,
                         * then stop reading. */
                        (void)fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
                }
                if (out_open && (p[0].revents & (POLLIN | POLLHUP) || exited)) {
                        ssize_t k = read(pipefd[0], buf, EXEC_READ_CHUNK);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k <= 0) {
                                out_open = false;
                                continue;
                        }
                        if (total + (uint64_t)k > cmd->max_output_bytes) {
                                k = (ssize_t)(cmd->max_output_bytes - total);
                                end = EXEC_TOO_MUCH_OUTPUT;
                        }
                        total += (uint64_t)k;
                        if (append_more(c, buf, (size_t)k) < 0) {
                                end = EXEC_CLIENT_GONE;
                                break;
                        }
                        /* Backpressure: a slow client slows the command down
                         * (its pipe fills), within the timeout. */
                        r = queue_wait_space_until(&c->queue, deadline);
                        if (r == -EPIPE)
                                end = EXEC_CLIENT_GONE;
                        else if (r == -ETIMEDOUT)
                                end = EXEC_TIMEOUT;
                }
        }

        switch (end) {
        case EXEC_EXITED:
                status = reap(pid, pidfd, UINT64_MAX);
                break;
        case EXEC_TIMEOUT:
                kill_group(pid, SIGTERM);
                status = reap(pid, pidfd, now_usec(CLOCK_MONOTONIC) + EXEC_KILL_GRACE_USEC);
                break;
        case EXEC_TOO_MUCH_OUTPUT:
        case EXEC_CLIENT_GONE:
                kill_group(pid, SIGKILL);
                status = reap(pid, pidfd, UINT64_MAX);
                break;
        }
        /* Whatever it started in its group goes with it, unless it exited
         * cleanly on its own. */
        if (end != EXEC_EXITED)
                kill_group(pid, SIGKILL);

        safe_close(pidfd);
        safe_close(pipefd[0]);
        free(buf);
        atomic_fetch_sub(&s->n_running, 1);

        switch (end) {
        case EXEC_EXITED:
                if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                        snprintf(result, sizeof(result), "ok");
                        r = proto_append_ok(&c->out, NULL, 0) < 0 ? -ENOMEM : 0;
                } else if (status >= 0 && WIFEXITED(status)) {
                        snprintf(result, sizeof(result), "exit-%d", WEXITSTATUS(status));
                        r = proto_append_err(&c->out, result, "%s exited with status %d", cmd->name,
                                             WEXITSTATUS(status)) < 0
                                ? -ENOMEM
                                : 1;
                } else {
                        int sig = status >= 0 ? status & 0x7f : 0;
                        snprintf(result, sizeof(result), "signal-%d", sig);
                        r = proto_append_err(&c->out, result, "%s was killed by signal %d (%s)",
                                             cmd->name, sig, strsignal(sig)) < 0
                                ? -ENOMEM
                                : 1;
                }
                break;
        case EXEC_TIMEOUT:
                snprintf(result, sizeof(result), "timeout");
                r = proto_append_err(&c->out, "timeout",
                                     "%s ran longer than TimeoutSec=%u and was killed", cmd->name,
                                     cmd->timeout_sec) < 0
                        ? -ENOMEM
                        : 1;
                break;
        case EXEC_TOO_MUCH_OUTPUT:
                snprintf(result, sizeof(result), "output-too-large");
                r = proto_append_err(&c->out, "output-too-large",
                                     "%s wrote more than MaxOutputBytes=%zu and was killed",
                                     cmd->name, cmd->max_output_bytes) < 0
                        ? -ENOMEM
                        : 1;
                break;
        case EXEC_CLIENT_GONE:
        default:
                snprintf(result, sizeof(result), "disconnected");
                r = 1; /* nobody to answer */
                break;
        }

        {
                uint64_t dur = now_usec(CLOCK_MONOTONIC) - start;
                const char *name = cmd->name;

                log_full(end == EXEC_EXITED ? LOG_INFO : LOG_WARNING, 0, c, &name, 1, result, dur,
                         "ran %s%s as %s: %s after %" PRIu64 " ms, %" PRIu64 " bytes of output",
                         name, args, role_to_string(atomic_load(&c->role)), result, dur / 1000,
                         total);
        }
        return r;

spawn_failed:
        safe_close(pipefd[0]);
        safe_close(pipefd[1]);
        free(buf);
        atomic_fetch_sub(&s->n_running, 1);
        {
                const char *name = cmd->name;
                log_full(LOG_ERR, r, c, &name, 1, "failed", now_usec(CLOCK_MONOTONIC) - start,
                         "cannot run %s (%s): %m", name, cmd->argv[0]);
        }
        return proto_append_err(&c->out, "failed", "cannot run %s: %s", cmd->name, strerror(r)) < 0
                   ? -ENOMEM
                   : 1;
}
