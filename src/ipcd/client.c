/*
 * client.c - a connected client: its identity, its reader thread (read,
 * split, parse, run, queue the answers of one read() as one batch) and
 * its sender thread (take everything queued, writev()). See client.h for
 * ownership and locking.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "commands.h"
#include "events.h"
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
/* While lingering, how often to look whether the peer has taken everything. */
#define LINGER_POLL_MSEC 20
/* Once everything is taken, how long a peer that still sends may take to
 * see our EOF and close. */
#define LINGER_GRACE_USEC (500 * 1000)

const char *transport_to_string(Transport t)
{
        return t == TRANSPORT_UNIX ? "unix" : "tcp";
}

static int peer_groups(int fd, gid_t **ret, size_t *n);

static void set_send_timeout(Client *c, unsigned sec)
{
        struct timeval tv = {.tv_sec = sec};

        if (atomic_load_explicit(&c->send_timeout_sec, memory_order_relaxed) == sec)
                return;
        (void)setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        atomic_store_explicit(&c->send_timeout_sec, sec, memory_order_relaxed);
}

int client_new(Server *s, int fd, const struct sockaddr *sa, socklen_t salen, Transport transport,
               Client **ret)
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

        c->config = server_config(s);
        c->config_generation = atomic_load(&s->config_generation);
        r = queue_init(&c->queue, c->config->queue_limit_bytes);
        if (r < 0) {
                config_unref(c->config);
                close(fd);
                free(c);
                return r;
        }
        set_send_timeout(c, c->config->client_send_timeout_sec);

        /* The listener's kind decides, not the peer address family. */
        c->transport = transport;
        if (transport == TRANSPORT_UNIX) {
                socklen_t len = sizeof(c->cred);

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
        free(c->subs); /* empty: events_client_gone() ran */
        free(c->fanout); /* empty: the reader delivered before it ended */
        free(c);
}

void client_counters(Client *c, ClientCounters *add)
{
        add->commands_ok += atomic_load_explicit(&c->n_ok, memory_order_relaxed);
        add->commands_failed += atomic_load_explicit(&c->n_failed, memory_order_relaxed);
        add->bytes_in += atomic_load_explicit(&c->n_bytes_in, memory_order_relaxed);
        add->bytes_out += atomic_load_explicit(&c->n_bytes_out, memory_order_relaxed);
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
        c->config_generation = atomic_load(&s->config_generation);
        c->config = server_config(s);
        config_unref(old);

        /* New limits and AdminGroups= apply from the next request on; a role
         * won with auth stays for the life of the connection. */
        queue_set_limit(&c->queue, c->config->queue_limit_bytes);
        role = client_identity_role(c, c->config);
        atomic_store(&c->role, MAX(role, c->auth_role));
        set_send_timeout(c, c->config->client_send_timeout_sec);
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

void client_kick_locked(Client *c)
{
        if (c->reader_running)
                (void)pthread_kill(c->reader, CLIENT_WAKE_SIGNAL);
}

void client_kick(Client *c)
{
        pthread_mutex_lock(&c->server->lock);
        client_kick_locked(c);
        pthread_mutex_unlock(&c->server->lock);
}

void client_stop_reading_locked(Client *c)
{
        atomic_store(&c->stop_requested, true);
        client_kick_locked(c);
}

int client_drop_queue(Client *c, const char *code, const char *message)
{
        Buffer b = BUFFER_INIT;

        if (proto_append_frame(&b, PROTO_FRAME_ERR, code, message, strlen(message)) < 0) {
                buffer_done(&b);
                queue_kill(&c->queue);
        } else if (queue_drop_and_close(&c->queue, b.data, b.len) < 0) /* b.data taken over */
                return -EPIPE;
        atomic_store(&c->dropped, true);
        atomic_store(&c->drop_deadline, now_usec(CLOCK_MONOTONIC) + CLIENT_DROP_GRACE_USEC);
        return 0;
}

void client_abort(Client *c)
{
        queue_kill(&c->queue);
        (void)shutdown(c->fd, SHUT_RDWR);
}

void client_log_refusal(Client *c, const char *command, const char *result, const char *fmt, ...)
{
        Server *s = c->server;
        char msg[512];
        va_list ap;
        bool ok = false;

        if (c->n_refusals_logged < CLIENT_REFUSALS_LOGGED &&
            atomic_load_explicit(&log_max_level, memory_order_relaxed) >= LOG_NOTICE) {
                pthread_mutex_lock(&s->refusal_lock);
                ok = ratelimit_below(&s->refusal_rl);
                pthread_mutex_unlock(&s->refusal_lock);
        }
        if (!ok) {
                c->n_refusals_suppressed++;
                atomic_fetch_add_explicit(&s->stats.refusals_not_logged, 1, memory_order_relaxed);
                return;
        }
        c->n_refusals_logged++;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_full(LOG_NOTICE, 0, c, command ? &command : NULL, command ? 1 : 0, result, UINT64_MAX,
                 "%s%s", msg,
                 c->n_refusals_logged == CLIENT_REFUSALS_LOGGED
                     ? " (further refusals on this connection are only counted)"
                     : "");
}

/* Write n iovecs completely; returns the bytes written or -errno (-EAGAIN:
 * ClientSendTimeoutSec= passed without the socket taking a byte). */
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

/* Write what was taken from the queue; 0 or -errno of the failed write. */
static int write_chunks(Client *c, Chunk *list)
{
        struct iovec iov[SENDER_IOV];

        for (Chunk *ch = list; ch;) {
                ssize_t k;
                int n = 0;

                for (; ch && n < SENDER_IOV; ch = ch->next)
                        iov[n++] = (struct iovec){ch->data, ch->len};
                k = write_all(c->fd, iov, n);
                if (k < 0)
                        return (int)k;
                client_count_out(c, (uint64_t)k);
                queue_sent(&c->queue, (size_t)k);
        }
        return 0;
}

/* A write failed for good: say why if it is worth saying, and break the connection. */
static void write_failed(Client *c, int error)
{
        if (error == EAGAIN || error == EWOULDBLOCK) {
                atomic_fetch_add_explicit(&c->server->stats.send_timeouts, 1,
                                          memory_order_relaxed);
                log_client(LOG_NOTICE, c,
                           "its socket took no data for ClientSendTimeoutSec=%u, closing "
                           "connection",
                           atomic_load_explicit(&c->send_timeout_sec, memory_order_relaxed));
        } else if (error != EPIPE && error != ECONNRESET)
                log_client(LOG_DEBUG, c, "write failed: %s", strerror(error));
        client_abort(c); /* wakes the reader, drops what is queued */
}

/*
 * Reader thread, when no sender thread can be started (out of threads):
 * write what waits in the queue itself, blocking for at most
 * ClientSendTimeoutSec= per write. Nothing already answered is lost.
 */
static int reader_write_queued(Client *c)
{
        Chunk *list;
        int r = 0;

        while (r == 0 && queue_bytes(&c->queue) > 0 && (list = queue_take_all_now(&c->queue))) {
                r = write_chunks(c, list);
                chunk_free_list(list);
                queue_sender_done(&c->queue);
        }
        if (r < 0) {
                write_failed(c, -r);
                return -EPIPE;
        }
        return 0;
}

/* Hand the batch built in c->out to the sender: one push, one wake-up. */
int client_flush(Client *c)
{
        char *data;
        size_t len;
        ssize_t n;

        if (c->n_fanout > 0)
                events_deliver(c); /* the events of this batch, one write per subscriber */
        if (c->out.len == 0)
                return 0;
        data = c->out.data;
        len = c->out.len;
        c->out = BUFFER_INIT;
        n = queue_write_or_push(&c->queue, c->fd, data, len);
        if (n >= 0 && (size_t)n < len && client_start_sender(c) < 0 && reader_write_queued(c) < 0)
                return -EPIPE; /* what is left has to wait: the sender, or we, write it */
        if (n > 0)
                client_count_out(c, (uint64_t)n);
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
                log_client(LOG_WARNING, c,
                           "cannot start a sender thread (%s); the reader writes itself",
                           strerror(r));
                return -r;
        }
        c->sender_started = true;
        return 0;
}

static void reader_too_long(Client *c)
{
        (void)proto_append_err(&c->out, "too-long", "request line longer than %zu bytes",
                               c->config->max_line_bytes);
        client_count(&c->n_failed, 1);
        log_client(LOG_NOTICE, c, "request line longer than %zu bytes, closing connection",
                   c->config->max_line_bytes);
        c->closing = true;
}

static void reader_line(Client *c, const char *line, size_t len)
{
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
        else if (r == -EINVAL) {
                client_log_refusal(c, NULL, "bad-request", "bad request: %s", error);
                r = reply_err(c, "bad-request", "%s", error);
        }

        if (r == -ENOMEM) {
                /* Could not even build the answer: give up on this client
                 * rather than answer out of order. */
                log_client(LOG_WARNING, c, "out of memory, closing connection");
                c->closing = true;
                client_abort(c);
                return;
        }
        client_count(r == 0 ? &c->n_ok : &c->n_failed, 1);
}

/*
 * The connection ends while the peer may still be sending (quit, too-long,
 * a timeout, the drain, a slow consumer): read and discard what it sends
 * until our answers are written and taken (nothing left in the socket's
 * send queue), the peer closes, or `deadline`. Closing a socket with
 * unread input, or input arriving after close, makes the kernel reset the
 * connection, and a reset destroys the answers still in flight.
 */
static void reader_linger(Client *c, uint64_t deadline)
{
        uint64_t grace_until = 0;
        bool quiet = false;
        size_t total = 0;
        char buf[4096];

        while (total < LINGER_BYTES && !queue_is_dead(&c->queue)) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                struct pollfd p = {.fd = c->fd, .events = POLLIN};
                int outq = 1, r;
                ssize_t n;

                if (now >= deadline)
                        break;
                if (queue_is_drained(&c->queue) && ioctl(c->fd, SIOCOUTQ, &outq) == 0 &&
                    outq == 0) {
                        /* All taken. A peer that saw our EOF stops sending and
                         * closes: give it a moment, so that nothing unread
                         * is left when we close. */
                        if (quiet)
                                break;
                        if (grace_until == 0)
                                grace_until = now + LINGER_GRACE_USEC;
                        else if (now >= grace_until)
                                break;
                }
                r = poll(&p, 1, MIN(poll_timeout_ms(deadline, now), LINGER_POLL_MSEC));
                if (r == 0) {
                        quiet = true;
                        continue;
                }
                if (r < 0)
                        continue;
                n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
                        break; /* the peer closed: nothing more can come */
                if (n > 0) {
                        total += (size_t)n;
                        quiet = false;
                }
        }
}

/* SO_RCVTIMEO for the next read(): the request deadline of a started line,
 * or ClientIdleTimeoutSec= (not for subscribers), whichever comes first. */
static void reader_arm_timeout(Client *c, uint64_t now)
{
        const Config *cf = c->config;
        uint64_t want = 0;

        if (c->line_since_usec != 0 && cf->request_timeout_sec > 0) {
                uint64_t end = c->line_since_usec + (uint64_t)cf->request_timeout_sec * 1000000;
                want = end > now ? end - now : 1;
        }
        if (c->n_subs == 0 && cf->client_idle_timeout_sec > 0)
                want = want ? MIN(want, (uint64_t)cf->client_idle_timeout_sec * 1000000)
                            : (uint64_t)cf->client_idle_timeout_sec * 1000000;
        if (want != c->rcvtimeo_usec) {
                struct timeval tv = usec_to_timeval(want);
                (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                c->rcvtimeo_usec = want;
        }
}

typedef enum ReadEnd {
        READ_ON,      /* keep reading */
        READ_EOF,     /* the peer closed (or the socket broke) */
        READ_STOPPED, /* we stop: quit, too-long, timeout, drain, drop */
} ReadEnd;

/* read() timed out: the request deadline or the idle timeout. */
static ReadEnd reader_timed_out(Client *c)
{
        const Config *cf = c->config;
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (c->line_since_usec != 0 && cf->request_timeout_sec > 0 &&
            now + 10000 >= c->line_since_usec + (uint64_t)cf->request_timeout_sec * 1000000) {
                atomic_fetch_add_explicit(&c->server->stats.request_timeouts, 1,
                                          memory_order_relaxed);
                client_count(&c->n_failed, 1);
                (void)proto_append_err(&c->out, "timeout",
                                       "request line not completed within RequestTimeoutSec=%u",
                                       cf->request_timeout_sec);
                log_client(LOG_NOTICE, c,
                           "did not complete a request line within RequestTimeoutSec=%u, "
                           "closing connection",
                           cf->request_timeout_sec);
                c->closing = true;
                return READ_STOPPED;
        }
        if (c->n_subs == 0 && cf->client_idle_timeout_sec > 0 &&
            (c->line_since_usec == 0 || cf->request_timeout_sec == 0 ||
             (uint64_t)cf->client_idle_timeout_sec < cf->request_timeout_sec)) {
                log_client(LOG_INFO, c, "idle for ClientIdleTimeoutSec=%u, closing connection",
                           cf->client_idle_timeout_sec);
                return READ_STOPPED;
        }
        return READ_ON; /* the deadline moved (a reload): arm again */
}

/* One read() into c->in: the bytes read (> 0), or how reading ends. */
static ssize_t reader_read(Client *c, bool *stopping, ReadEnd *end)
{
        ssize_t n;

        if (atomic_load(&c->dropped)) {
                *end = READ_STOPPED;
                return 0;
        }
        if (!*stopping && atomic_load(&c->stop_requested)) {
                int avail = 0;

                /* The drain: answer what was received before it, no more. */
                (void)ioctl(c->fd, FIONREAD, &avail);
                c->stop_budget = avail > 0 ? (size_t)avail : 0;
                *stopping = true;
                atomic_store(&c->stop_seen, true);
        }
        if (*stopping && c->stop_budget == 0) {
                *end = READ_STOPPED;
                return 0;
        }
        if (buffer_reserve(&c->in, READ_CHUNK) < 0) {
                log_client(LOG_WARNING, c, "out of memory, closing connection");
                client_abort(c);
                *end = READ_EOF;
                return 0;
        }
        if (*stopping)
                n = recv(c->fd, c->in.data + c->in.len,
                         MIN(c->in.cap - c->in.len, c->stop_budget), MSG_DONTWAIT);
        else {
                reader_arm_timeout(c, now_usec(CLOCK_MONOTONIC));
                n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
        }
        if (n > 0) {
                if (*stopping)
                        c->stop_budget -= MIN((size_t)n, c->stop_budget);
                *end = READ_ON;
                return n;
        }
        if (n == 0) {
                *end = READ_EOF;
                return 0;
        }
        if (errno == EINTR) {
                *end = READ_ON; /* kicked: look at the flags again */
                return 0;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *end = *stopping ? READ_STOPPED : reader_timed_out(c);
                return 0;
        }
        if (errno != ECONNRESET && errno != EPIPE)
                log_client(LOG_DEBUG, c, "read failed: %s", strerror(errno));
        *end = READ_EOF;
        return 0;
}

/* Split, parse and run the complete lines in c->in; keep the partial one. */
static void reader_batch(Client *c, size_t *scan, uint64_t now)
{
        size_t start = 0;
        bool completed = false;

        for (;;) {
                char *lf = memchr(c->in.data + *scan, '\n', c->in.len - *scan);
                if (!lf)
                        break;
                reader_line(c, c->in.data + start, lf - (c->in.data + start));
                start = *scan = lf - c->in.data + 1;
                completed = true;
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
        *scan = c->in.len;
        /* A started line has RequestTimeoutSec= from its first byte: more
         * bytes of the same line do not move the deadline. */
        if (c->in.len == 0)
                c->line_since_usec = 0;
        else if (completed || c->line_since_usec == 0)
                c->line_since_usec = now;
}

void *client_reader_thread(void *userdata)
{
        Client *c = userdata;
        Server *s = c->server;
        size_t scan = 0; /* c->in up to here holds no LF */
        bool stopping = false;
        ReadEnd end = READ_ON;
        sigset_t wake;

        sigemptyset(&wake);
        sigaddset(&wake, CLIENT_WAKE_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &wake, NULL);

        while (end == READ_ON) {
                ssize_t n;

                if (queue_wait_space(&c->queue) < 0) {
                        end = READ_EOF;
                        break;
                }
                n = reader_read(c, &stopping, &end);
                if (n <= 0)
                        continue;
                client_count(&c->n_bytes_in, (uint64_t)n);
                c->in.len += n;
                client_refresh_config(c); /* once per batch: one atomic load */
                reader_batch(c, &scan, now_usec(CLOCK_MONOTONIC));
                if (client_flush(c) < 0)
                        end = READ_EOF;
                else if (c->closing)
                        end = READ_STOPPED;
        }

        (void)client_flush(c);
        queue_close(&c->queue);
        events_client_gone(c); /* no more events */
        buffer_done(&c->in);
        if (!c->sender_started) {
                /* Everything went out inline: the end of the answers is ours
                 * to signal, as the sender would have. */
                if (queue_bytes(&c->queue) > 0 && client_start_sender(c) < 0)
                        (void)reader_write_queued(c);
                if (!c->sender_started)
                        (void)shutdown(c->fd, queue_is_dead(&c->queue) ? SHUT_RDWR : SHUT_WR);
        }
        if (end == READ_STOPPED)
                reader_linger(c, now_usec(CLOCK_MONOTONIC) +
                                     (stopping ? (uint64_t)c->config->drain_timeout_sec * 1000000 +
                                                     LINGER_USEC
                                               : LINGER_USEC));

        server_client_thread_done(s, c);
        client_unref(c);
        return NULL;
}

void *client_sender_thread(void *userdata)
{
        Client *c = userdata;
        Server *s = c->server;
        Chunk *list;
        int r = 0;

        while (r == 0 && (list = queue_take_all(&c->queue))) {
                r = write_chunks(c, list);
                chunk_free_list(list);
                queue_sender_done(&c->queue);
        }

        if (r < 0)
                write_failed(c, -r);
        else if (!queue_is_dead(&c->queue))
                (void)shutdown(c->fd, SHUT_WR); /* everything answered: EOF */
        else
                (void)shutdown(c->fd, SHUT_RDWR);

        server_client_thread_done(s, c);
        client_unref(c);
        return NULL;
}
