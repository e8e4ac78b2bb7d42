/*
 * exec.c - configured commands; see exec.h. One run is four steps:
 * exec_spawn() (posix_spawn, pipe, pidfd), exec_stream() (output as MORE
 * frames until the end, the deadline, too much output or the client
 * gone), exec_reap() (the child and its process group) and exec_answer()
 * (the final frame and the journal entry).
 *
 * Thread and locks: exec_run() runs on the client's reader thread, called
 * by command_dispatch() with no lock held; it takes none itself (the
 * client's Queue.lock only inside queue_*()). That thread owns the child
 * from spawn to reaping, its pidfd and the read end of its output pipe
 * (an ExecRun); all are closed and the child reaped before exec_run()
 * returns, whatever happens. Nobody else waits for children (there is no
 * SIGCHLD handler). The only shared state is the server's n_running
 * counter (an atomic, MaxRunning=).
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

#include "commands.h"
#include "exec.h"
#include "fd-util.h"
#include "log.h"
#include "time-util.h"
#include "server.h"

/* Output is read and sent in pieces of at most this size. */
#define EXEC_READ_CHUNK 65536
/* After SIGTERM (timeout), how long the command has before SIGKILL. */
#define EXEC_KILL_GRACE_USEC (3 * USEC_PER_SEC)
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

static void argv_freep(char ***v)
{
        argv_free(*v);
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
        _cleanup_free_ char **argv = NULL; /* the strings are not ours */
        _cleanup_(argv_freep) char **env = NULL;
        sigset_t none, all;
        int r;

        while (cmd->argv[n_exec])
                n_exec++;
        argv = calloc(n_exec + n_args + 1, sizeof(char *));
        env = build_env(c, cmd);
        if (!argv || !env)
                return ENOMEM;
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
        return r;
}

/* Kill the command's whole process group; `pid` is its leader. */
static void kill_group(pid_t pid, int sig)
{
        if (kill(-pid, sig) < 0 && errno == ESRCH)
                (void)kill(pid, sig);
}

/* One run of a configured command: what exec_run's steps share. */
typedef struct ExecRun {
        Client *c;
        const CommandConfig *cmd;
        pid_t pid;
        int pidfd; /* owned */
        int out;   /* owned: the read end of the command's stdout and stderr */
        uint64_t start, deadline, total;
        ExecEnd end;
        bool exited; /* the leader exited (a zombie until reaped) */
        int status;
        char *buf;    /* owned: EXEC_READ_CHUNK bytes */
        bool running; /* holds one of the server's MaxRunning= slots */
} ExecRun;

/* Take one of the MaxRunning= slots; false when all are taken. */
static bool exec_reserve(ExecRun *x)
{
        Server *s = x->c->server;

        if (atomic_fetch_add(&s->n_running, 1) >= x->c->config->max_running) {
                atomic_fetch_sub(&s->n_running, 1);
                return false;
        }
        x->running = true;
        return true;
}

/* Close and free what the run holds, and give its slot back. */
static void exec_finish(ExecRun *x)
{
        x->pidfd = safe_close(x->pidfd);
        x->out = safe_close(x->out);
        free(x->buf);
        x->buf = NULL;
        if (x->running)
                atomic_fetch_sub(&x->c->server->n_running, 1);
        x->running = false;
}

static int append_more(Client *c, const char *data, size_t len)
{
        if (len == 0)
                return 0;
        if (proto_append_frame(&c->out, PROTO_FRAME_MORE, NULL, data, len) < 0)
                return -ENOMEM;
        return client_flush(c); /* line by line, as the command writes */
}

/* Arguments the command may take; 0, or the ERR frame's result. */
static int exec_check(Client *c, const CommandConfig *cmd, const ProtoRequest *req)
{
        size_t n_args = req->n_args - 1;

        if (cmd->max_args == 0 && n_args > 0)
                return reply_err(c, "bad-request", "%s takes no arguments", cmd->name);
        if (cmd->max_args > 0 && n_args > (size_t)cmd->max_args)
                return reply_err(c, "bad-request", "%s takes at most %d argument(s)", cmd->name,
                                 cmd->max_args);
        for (size_t i = 1; i < req->n_args; i++)
                if (memchr(req->args[i].data, '\0', req->args[i].len))
                        return reply_err(c, "bad-request",
                                         "arguments of %s cannot hold a NUL byte", cmd->name);
        return 0;
}

/* Start the command with its output on a pipe, watched by a pidfd; 0 or an errno. */
static int exec_spawn(ExecRun *x, const ProtoRequest *req)
{
        int pipefd[2], r;

        x->buf = malloc(EXEC_READ_CHUNK);
        if (!x->buf)
                return ENOMEM;
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return errno;
        r = spawn(x->c, x->cmd, req, pipefd[1], &x->pid);
        safe_close(pipefd[1]);
        if (r != 0) {
                safe_close(pipefd[0]);
                x->pid = 0;
                return r;
        }
        x->out = pipefd[0];
        x->pidfd = pidfd_open(x->pid, 0);
        if (x->pidfd < 0) {
                /* Cannot watch it: do not let it run unsupervised. */
                r = errno;
                kill_group(x->pid, SIGKILL);
                (void)waitpid(x->pid, NULL, 0);
                x->pid = 0;
                return r;
        }
        return 0;
}

/* Output read from the command: MORE frames, with backpressure. */
static void exec_output(ExecRun *x)
{
        ssize_t k = read(x->out, x->buf, EXEC_READ_CHUNK);
        int r;

        if (k < 0 && errno == EINTR)
                return;
        if (k <= 0) { /* the end, or (after the exit) nothing more right now */
                x->out = safe_close(x->out);
                return;
        }
        if (x->total + (uint64_t)k > x->cmd->max_output_bytes) {
                k = (ssize_t)(x->cmd->max_output_bytes - x->total);
                x->end = EXEC_TOO_MUCH_OUTPUT;
        }
        x->total += (uint64_t)k;
        if (append_more(x->c, x->buf, (size_t)k) < 0) {
                x->end = EXEC_CLIENT_GONE;
                return;
        }
        /* A slow client slows the command down (its pipe fills), within the timeout. */
        r = outbox_wait_space(&x->c->outbox, x->deadline);
        if (r == -EPIPE)
                x->end = EXEC_CLIENT_GONE;
        else if (r == -ETIMEDOUT)
                x->end = EXEC_TIMEOUT;
}

/*
 * Stream the output until the command exits and its output ends, it runs
 * past its deadline (checked every round, however fast it writes), writes
 * too much, or the client goes away.
 */
static void exec_stream(ExecRun *x)
{
        Client *c = x->c;
        uint64_t next_probe = 0;

        while (x->end == EXEC_EXITED && (x->out >= 0 || !x->exited)) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                /* With no events the client socket still reports a hang-up
                 * (a Unix peer that closed). A TCP peer that closes sends
                 * only a FIN, just like one that merely stopped sending and
                 * waits for the output: on that, probe once a second. */
                bool watch_rdhup = c->transport == TRANSPORT_TCP && now >= next_probe;
                struct pollfd p[3] = {
                    {.fd = x->out, .events = POLLIN},
                    {.fd = x->exited ? -1 : x->pidfd, .events = POLLIN},
                    {.fd = c->fd, .events = watch_rdhup ? POLLRDHUP : 0},
                };
                uint64_t wake = MIN(x->deadline, watch_rdhup || next_probe == 0 ? UINT64_MAX
                                                                                 : next_probe);

                if (now >= x->deadline) {
                        x->end = EXEC_TIMEOUT;
                        break;
                }
                if (outbox_is_dead(&c->outbox)) {
                        x->end = EXEC_CLIENT_GONE;
                        break;
                }
                if (poll(p, 3, poll_timeout_ms(wake, now)) < 0) {
                        if (errno == EINTR)
                                continue;
                        x->end = EXEC_CLIENT_GONE;
                        break;
                }
                if (p[2].revents & (POLLHUP | POLLERR)) {
                        x->end = EXEC_CLIENT_GONE;
                        break;
                }
                if (p[2].revents & POLLRDHUP) {
                        /* An empty MORE frame is a valid no-op for a client
                         * that still listens; a closed one answers it with a
                         * reset, which the next poll() reports as POLLERR. */
                        if (proto_append_frame(&c->out, PROTO_FRAME_MORE, NULL, NULL, 0) < 0 ||
                            client_flush(c) < 0) {
                                x->end = EXEC_CLIENT_GONE;
                                break;
                        }
                        next_probe = now_usec(CLOCK_MONOTONIC) + EXEC_PROBE_USEC;
                }
                if (p[1].revents & POLLIN) {
                        /* The leader exited and is a zombie until reaped, so
                         * its group id is still ours: whatever it left in the
                         * group goes now. Then take what is in the pipe. */
                        x->exited = true;
                        kill_group(x->pid, SIGKILL);
                        (void)fd_nonblock(x->out, true);
                }
                if (x->out >= 0 && (p[0].revents & (POLLIN | POLLHUP) || x->exited))
                        exec_output(x);
        }
}

/*
 * Reap the leader, and kill what is left of its group while the leader is
 * still a zombie (its group id cannot be reused before). A timeout gets
 * SIGTERM first and EXEC_KILL_GRACE_USEC before SIGKILL.
 */
static void exec_reap(ExecRun *x)
{
        uint64_t deadline = UINT64_MAX;
        siginfo_t si = {0};

        if (x->end == EXEC_TIMEOUT && !x->exited) {
                kill_group(x->pid, SIGTERM);
                deadline = now_usec(CLOCK_MONOTONIC) + EXEC_KILL_GRACE_USEC;
        } else if (x->end != EXEC_EXITED)
                kill_group(x->pid, SIGKILL);

        for (;;) {
                struct pollfd p = {.fd = x->pidfd, .events = POLLIN};

                if (poll(&p, 1, poll_timeout_ms(deadline, now_usec(CLOCK_MONOTONIC))) == 0) {
                        kill_group(x->pid, SIGKILL);
                        deadline = UINT64_MAX;
                        continue;
                }
                /* Exited: WNOWAIT leaves it a zombie while its group goes. */
                if (waitid(P_PID, (id_t)x->pid, &si, WEXITED | WNOWAIT) == 0)
                        break;
                if (errno != EINTR) {
                        x->status = -1;
                        return;
                }
        }
        kill_group(x->pid, SIGKILL);
        while (waitid(P_PID, (id_t)x->pid, &si, WEXITED) < 0 && errno == EINTR)
                ;
        x->status = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status, 0) : si.si_status & 0x7f;
}

/* The final frame and the journal entry. */
static int exec_answer(ExecRun *x, const char *args)
{
        Client *c = x->c;
        const char *name = x->cmd->name;
        uint64_t dur = now_usec(CLOCK_MONOTONIC) - x->start;
        char result[64];
        int status = x->status, r;

        switch (x->end) {
        case EXEC_EXITED:
                if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                        snprintf(result, sizeof(result), "ok");
                        r = reply_ok(c, NULL, 0);
                } else if (status >= 0 && WIFEXITED(status)) {
                        snprintf(result, sizeof(result), "exit-%d", WEXITSTATUS(status));
                        r = reply_err(c, result, "%s exited with status %d", name,
                                      WEXITSTATUS(status));
                } else {
                        int sig = status >= 0 ? status & 0x7f : 0;
                        snprintf(result, sizeof(result), "signal-%d", sig);
                        r = reply_err(c, result, "%s was killed by signal %d (%s)", name, sig,
                                      strsignal(sig));
                }
                break;
        case EXEC_TIMEOUT:
                snprintf(result, sizeof(result), "timeout");
                r = reply_err(c, "timeout", "%s ran longer than TimeoutSec=%u and was killed", name,
                              x->cmd->timeout_sec);
                break;
        case EXEC_TOO_MUCH_OUTPUT:
                snprintf(result, sizeof(result), "output-too-large");
                r = reply_err(c, "output-too-large",
                              "%s wrote more than MaxOutputBytes=%zu and was killed", name,
                              x->cmd->max_output_bytes);
                break;
        case EXEC_CLIENT_GONE:
        default:
                snprintf(result, sizeof(result), "disconnected");
                r = 1; /* nobody to answer */
                break;
        }
        log_full(x->end == EXEC_EXITED ? LOG_INFO : LOG_WARNING, 0, c, &name, 1, result, dur,
                 "ran %s%s as %s: %s after %" PRIu64 " ms, %" PRIu64 " bytes of output", name,
                 args, role_to_string(atomic_load(&c->role)), result, dur / 1000, x->total);
        return r;
}

int exec_run(Client *c, const CommandConfig *cmd, const ProtoRequest *req)
{
        ExecRun x = {.c = c, .cmd = cmd, .pidfd = -1, .out = -1, .status = -1};
        char args[256];
        int r;

        r = exec_check(c, cmd, req);
        if (r != 0)
                return r;
        if (!exec_reserve(&x)) {
                client_log_refusal(c, cmd->name, "busy",
                                   "refused %s: MaxRunning=%u commands already running",
                                   cmd->name, c->config->max_running);
                return reply_err(c, "busy", "MaxRunning=%u commands are running; try again later",
                                 c->config->max_running);
        }

        describe_args(req, args, sizeof(args));
        x.start = now_usec(CLOCK_MONOTONIC);
        x.deadline = cmd->timeout_sec ? x.start + (uint64_t)cmd->timeout_sec * USEC_PER_SEC : UINT64_MAX;
        /* What this batch answered before goes out before the command's output. */
        if (client_flush(c) < 0)
                x.end = EXEC_CLIENT_GONE;

        r = exec_spawn(&x, req);
        if (r != 0) {
                const char *name = cmd->name;

                exec_finish(&x);
                log_full(LOG_ERR, r, c, &name, 1, "failed", now_usec(CLOCK_MONOTONIC) - x.start,
                         "cannot run %s (%s): %m", name, cmd->argv[0]);
                return reply_err(c, "failed", "cannot run %s: %s", cmd->name, strerror(r));
        }

        exec_stream(&x);
        exec_reap(&x);
        exec_finish(&x);
        return exec_answer(&x, args);
}
