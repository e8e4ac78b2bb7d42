/*
 * client.c - a connected client: its identity, its reader thread (read,
 * split, parse, run, queue the answers of one read() as one batch) and
 * its sender thread (take everything queued, writev()). See client.h for
 * ownership and locking.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "commands.h"
#include "log.h"
#include "server.h"

/* How much the reader asks read() for at least. */
#define READ_CHUNK 16384
/* Queue a batch early when it grows past this, so one read() of many
 * large answers cannot overshoot the queue limit by much. */
#define OUT_FLUSH_BYTES 65536
/* iovecs per writev() in the sender (kept small: the stack is small). */
#define SENDER_IOV 64
/* After quit or too-long, how long and how much unread input we discard
 * before closing, so the close does not turn into a reset that could
 * destroy the answer in flight. */
#define LINGER_USEC  (2 * 1000000)
#define LINGER_BYTES (16 * 1024 * 1024)

const char *transport_to_string(Transport t)
{
        return t == TRANSPORT_UNIX ? "unix" : "tcp";
}

static int peer_groups(int fd, gid_t **ret, size_t *n);

int client_new(Server *s, int fd, const struct sockaddr *sa, socklen_t salen, Client **ret)
{
        Client *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return -ENOMEM;
        }
        c->server = s;
        c->fd = fd;
        atomic_init(&c->n_ref, 1);
        c->since_usec = now_usec(CLOCK_REALTIME);

        /* Only the main thread creates clients, and it owns s->config. */
        c->config = config_ref(s->config);
        c->config_generation = atomic_load(&s->config_generation);
        r = queue_init(&c->queue, c->config->queue_limit_bytes);
        if (r < 0) {
                config_unref(c->config);
                close(fd);
                free(c);
                return r;
        }
        if (c->config->client_idle_timeout_sec > 0) {
                struct timeval tv = {.tv_sec = c->config->client_idle_timeout_sec};
                (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }

        if (sa->sa_family == AF_UNIX) {
                socklen_t len = sizeof(c->cred);

                c->transport = TRANSPORT_UNIX;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) < 0) {
                        r = -errno;
                        client_unref(c);
                        return r;
                }
                snprintf(c->peer, sizeof(c->peer), "pid=%d uid=%u gid=%u", (int)c->cred.pid,
                         (unsigned)c->cred.uid, (unsigned)c->cred.gid);
                r = peer_groups(fd, &c->groups, &c->n_groups);
                if (r < 0) {
                        client_unref(c);
                        return r;
                }
                atomic_init(&c->role, client_identity_role(c, c->config));
        } else {
                c->transport = TRANSPORT_TCP;
                c->cred = (struct ucred){.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
                if (address_peer_to_string(sa, salen, c->peer, sizeof(c->peer)) < 0)
                        snprintf(c->peer, sizeof(c->peer), "unknown");
                atomic_init(&c->role, ROLE_GUEST);
        }

        *ret = c;
        return 0;
}

Client *client_ref(Client *c)
{
        atomic_fetch_add_explicit(&c->n_ref, 1, memory_order_relaxed);
        return c;
}

void client_unref(Client *c)
{
        if (!c)
                return;
        if (atomic_fetch_sub_explicit(&c->n_ref, 1, memory_order_acq_rel) != 1)
                return;
        safe_close(c->fd);
        queue_done(&c->queue);
        buffer_done(&c->in);
        buffer_done(&c->out);
        buffer_done(&c->scratch);
        proto_request_done(&c->req);
        config_unref(c->config);
        free(c->groups);
        for (unsigned i = 0; i < c->n_commands_used; i++)
                free(c->commands_used[i]);
        for (size_t i = 0; i < c->n_topics; i++)
                free(c->topics[i]);
        free(c->topics);
        free(c);
}

bool client_in_groups(const Client *c, const gid_t *gids, size_t n)
{
        if (c->transport != TRANSPORT_UNIX)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (gids[i] == c->cred.gid)
                        return true;
                for (size_t j = 0; j < c->n_groups; j++)
                        if (gids[i] == c->groups[j])
                                return true;
        }
        return false;
}

Role client_identity_role(const Client *c, const Config *config)
{
        if (c->transport != TRANSPORT_UNIX)
                return ROLE_GUEST;
        if (c->cred.uid == 0 || client_in_groups(c, config->admin_gids, config->n_admin_gids))
                return ROLE_ADMIN;
        return ROLE_USER;
}

void client_refresh_config(Client *c)
{
        Server *s = c->server;
        Config *old;
        Role role;

        if (_likely_(atomic_load_explicit(&s->config_generation, memory_order_acquire) ==
                     c->config_generation))
                return;

        old = c->config;
        pthread_mutex_lock(&s->lock);
        c->config = config_ref(s->config);
        c->config_generation = atomic_load(&s->config_generation);
        pthread_mutex_unlock(&s->lock);
        config_unref(old);

        /* New limits and AdminGroups= apply from the next request on; a role
         * won with auth stays for the life of the connection. */
        queue_set_limit(&c->queue, c->config->queue_limit_bytes);
        role = client_identity_role(c, c->config);
        atomic_store(&c->role, MAX(role, c->auth_role));
        if (c->n_topics == 0) {
                struct timeval tv = {.tv_sec = c->config->client_idle_timeout_sec};
                (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }
}

/* The peer's supplementary groups, as the kernel recorded them at connect(). */
static int peer_groups(int fd, gid_t **ret, size_t *n)
{
        socklen_t len = 16 * sizeof(gid_t);
        gid_t *g = NULL;

        for (;;) {
                gid_t *ng = realloc(g, len ? len : sizeof(gid_t));
                if (!ng) {
                        free(g);
                        return -ENOMEM;
                }
                g = ng;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0)
                        break;
                if (errno != ERANGE) {
                        free(g);
                        return -errno;
                }
        }
        *ret = g;
        *n = len / sizeof(gid_t);
        return 0;
}

void client_stop_reading(Client *c)
{
        /* A blocked read() returns what is already received, then 0. */
        (void)shutdown(c->fd, SHUT_RD);
}

void client_drop(Client *c, const char *code, const char *message)
{
        Buffer b = BUFFER_INIT;

        if (proto_append_frame(&b, PROTO_FRAME_ERR, code, message, strlen(message)) < 0) {
                buffer_done(&b);
                client_abort(c);
                return;
        }
        if (queue_drop_and_close(&c->queue, b.data, b.len) < 0) { /* b.data taken over */
                client_abort(c);
                return;
        }
        atomic_store(&c->drop_deadline, now_usec(CLOCK_MONOTONIC) + CLIENT_DROP_GRACE_USEC);
        (void)shutdown(c->fd, SHUT_RD); /* the reader ends; the sender flushes, then EOF */
}

void client_abort(Client *c)
{
        queue_kill(&c->queue);
        (void)shutdown(c->fd, SHUT_RDWR);
}

/* Hand the batch built in c->out to the sender: one push, one wake-up. */
int client_flush(Client *c)
{
        char *data;
        size_t len;
        ssize_t n;

        if (c->out.len == 0)
                return 0;
        data = c->out.data;
        len = c->out.len;
        c->out = BUFFER_INIT;
        n = queue_write_or_push(&c->queue, c->fd, data, len);
        if (n >= 0 && (size_t)n < len && client_start_sender(c) < 0)
                return -EPIPE; /* what is left has to wait: it needs the sender */
        if (n > 0)
                atomic_fetch_add_explicit(&c->server->stats.bytes_out, (uint64_t)n,
                                          memory_order_relaxed);
        else if (n < 0 && n != -EPIPE) {
                if (n != -ECONNRESET)
                        log_client(LOG_DEBUG, c, "write failed: %s", strerror((int)-n));
                client_abort(c);
                return -EPIPE;
        }
        return n < 0 ? (int)n : 0;
}

int client_start_sender(Client *c)
{
        Server *s = c->server;
        sigset_t all, old;
        pthread_t t;
        int r;

        if (c->sender_started)
                return 0;
        pthread_mutex_lock(&s->lock);
        c->n_threads++; /* the reader still runs: the client stays registered */
        pthread_mutex_unlock(&s->lock);

        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&t, &s->thread_attr, client_sender_thread, client_ref(c));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r) {
                client_unref(c);
                pthread_mutex_lock(&s->lock);
                c->n_threads--;
                pthread_mutex_unlock(&s->lock);
                log_client(LOG_WARNING, c, "cannot start a sender thread (%s), closing connection",
                           strerror(r));
                client_abort(c);
                return -r;
        }
        c->sender_started = true;
        return 0;
}

static void reader_too_long(Client *c)
{
        Server *s = c->server;

        (void)proto_append_err(&c->out, "too-long", "request line longer than %zu bytes",
                               c->config->max_line_bytes);
        atomic_fetch_add_explicit(&s->stats.commands_failed, 1, memory_order_relaxed);
        log_client(LOG_NOTICE, c, "request line longer than %zu bytes, closing connection",
                   c->config->max_line_bytes);
        c->closing = true;
}

static void reader_line(Client *c, const char *line, size_t len)
{
        Server *s = c->server;
        const char *error;
        size_t content = len;
        int r;

        if (content > 0 && line[content - 1] == '\r')
                content--;
        if (content > c->config->max_line_bytes) {
                reader_too_long(c);
                return;
        }

        r = proto_request_parse(&c->req, line, len, &error);
        if (r == 0 && c->req.n_args == 0)
                return; /* blank line */

        atomic_fetch_add_explicit(&c->n_commands, 1, memory_order_relaxed);
        if (r == 0)
                r = command_dispatch(c);
        else if (r == -EINVAL)
                r = proto_append_err(&c->out, "bad-request", "%s", error) < 0 ? -ENOMEM : 1;

        if (r == -ENOMEM) {
                /* Could not even build the answer: give up on this client
                 * rather than answer out of order. */
                log_client(LOG_WARNING, c, "out of memory, closing connection");
                c->closing = true;
                client_abort(c);
                return;
        }
        atomic_fetch_add_explicit(r == 0 ? &s->stats.commands_ok : &s->stats.commands_failed, 1,
                                  memory_order_relaxed);
}

/* Discard input for a while after the last answer, then let the close come. */
static void reader_linger(Client *c)
{
        struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + LINGER_USEC;
        size_t total = 0;
        char buf[1024];

        (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        while (total < LINGER_BYTES && now_usec(CLOCK_MONOTONIC) < deadline &&
               !queue_is_dead(&c->queue)) {
                ssize_t n = read(c->fd, buf, sizeof(buf));
                if (n == 0)
                        break;
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                                continue;
                        break;
                }
                total += n;
        }
}

void *client_reader_thread(void *userdata)
{
        Client *c = userdata;
        Server *s = c->server;
        size_t scan = 0; /* c->in up to here holds no LF */

        for (;;) {
                size_t start = 0;
                ssize_t n;

                if (queue_wait_space(&c->queue) < 0)
                        break;
                if (buffer_reserve(&c->in, READ_CHUNK) < 0) {
                        log_client(LOG_WARNING, c, "out of memory, closing connection");
                        client_abort(c);
                        break;
                }
                n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK) {
                                log_client(LOG_INFO, c,
                                           "idle for ClientIdleTimeoutSec=%u, closing connection",
                                           c->config->client_idle_timeout_sec);
                                break;
                        }
                        if (errno != ECONNRESET && errno != EPIPE)
                                log_client(LOG_DEBUG, c, "read failed: %s", strerror(errno));
                        break;
                }
                if (n == 0)
                        break;
                atomic_fetch_add_explicit(&s->stats.bytes_in, (uint64_t)n, memory_order_relaxed);
                c->in.len += n;
                client_refresh_config(c); /* once per batch: one atomic load */

                for (;;) {
                        char *lf = memchr(c->in.data + scan, '\n', c->in.len - scan);
                        if (!lf)
                                break;
                        reader_line(c, c->in.data + start, lf - (c->in.data + start));
                        start = scan = lf - c->in.data + 1;
                        if (c->closing)
                                break;
                        if (c->out.len >= OUT_FLUSH_BYTES &&
                            (client_flush(c) < 0 || queue_wait_space(&c->queue) < 0)) {
                                c->closing = true;
                                break;
                        }
                }
                /* A partial line that can no longer fit (allowing for a CR). */
                if (!c->closing && c->in.len - start > c->config->max_line_bytes + 1)
                        reader_too_long(c);

                buffer_consume(&c->in, start);
                scan = c->in.len;
                if (client_flush(c) < 0 || c->closing)
                        break;
        }

        (void)client_flush(c);
        queue_close(&c->queue);
        buffer_done(&c->in);
        if (!c->sender_started) {
                /* Everything went out inline: the end of the answers is ours
                 * to signal, as the sender would have. */
                if (queue_bytes(&c->queue) > 0)
                        (void)client_start_sender(c);
                else
                        (void)shutdown(c->fd, queue_is_dead(&c->queue) ? SHUT_RDWR : SHUT_WR);
        }
        if (c->closing)
                reader_linger(c);

        server_client_thread_done(s, c);
        client_unref(c);
        return NULL;
}

/* Write n iovecs completely; returns the bytes written or -errno. */
static ssize_t write_all(int fd, struct iovec *iov, int n)
{
        size_t total = 0;

        while (n > 0) {
                ssize_t k = writev(fd, iov, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                total += k;
                while (n > 0 && (size_t)k >= iov->iov_len) {
                        k -= iov->iov_len;
                        iov++;
                        n--;
                }
                if (n > 0) {
                        iov->iov_base = (char *)iov->iov_base + k;
                        iov->iov_len -= k;
                }
        }
        return total;
}

void *client_sender_thread(void *userdata)
{
        Client *c = userdata;
        Server *s = c->server;
        struct iovec iov[SENDER_IOV];
        Chunk *list;
        int error = 0;

        while (!error && (list = queue_take_all(&c->queue))) {
                for (Chunk *ch = list; ch;) {
                        ssize_t k;
                        int n = 0;

                        for (; ch && n < SENDER_IOV; ch = ch->next)
                                iov[n++] = (struct iovec){ch->data, ch->len};
                        k = write_all(c->fd, iov, n);
                        if (k < 0) {
                                error = (int)-k;
                                break;
                        }
                        atomic_fetch_add_explicit(&s->stats.bytes_out, (uint64_t)k,
                                                  memory_order_relaxed);
                        queue_sent(&c->queue, (size_t)k);
                }
                chunk_free_list(list);
                queue_sender_done(&c->queue);
        }

        if (error) {
                if (error != EPIPE && error != ECONNRESET)
                        log_client(LOG_DEBUG, c, "write failed: %s", strerror(error));
                client_abort(c); /* wakes the reader, drops what is queued */
        } else if (!queue_is_dead(&c->queue))
                (void)shutdown(c->fd, SHUT_WR); /* everything answered: EOF */
        else
                (void)shutdown(c->fd, SHUT_RDWR);

        server_client_thread_done(s, c);
        client_unref(c);
        return NULL;
}
