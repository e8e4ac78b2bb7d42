/*
 * reader.c - a client's reader thread: read, split into lines, parse, run,
 * and flush the answers of one read() as one batch; the request and idle
 * timeouts (SO_RCVTIMEO), the drain at shutdown, and the linger before the
 * close. Everything here runs on the reader thread and touches the
 * "reader thread only" fields of client.h; see there for the rest.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "commands.h"
#include "events.h"
#include "log.h"
#include "server.h"
#include "time-util.h"

/* How much the reader asks read() for at least. */
#define READ_CHUNK 16384
/* Queue a batch early when it grows past this, so one read() of many
 * large answers cannot overshoot the queue limit by much. */
#define OUT_FLUSH_BYTES 65536
/* After quit or too-long, how long and how much unread input we discard
 * before closing, so the close does not turn into a reset that could
 * destroy the answer in flight. */
#define LINGER_USEC  (2 * USEC_PER_SEC)
#define LINGER_BYTES (16 * 1024 * 1024)
/* How many more reads, and bytes in all, a batch that published may take
 * along (see reader_read_more). */
#define READ_MORE_MAX   64
#define READ_MORE_BYTES 16384
/* While lingering, how often to look whether the peer has taken everything. */
#define LINGER_POLL_MSEC 20
/* Once everything is taken, how long a peer that still sends may take to
 * see our EOF and close. */
#define LINGER_GRACE_USEC (500 * 1000)

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

        while (total < LINGER_BYTES && !outbox_is_dead(&c->outbox)) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                struct pollfd p = {.fd = c->fd, .events = POLLIN};
                int outq = 1, r;
                ssize_t n;

                if (now >= deadline)
                        break;
                if (outbox_is_drained(&c->outbox) && ioctl(c->fd, SIOCOUTQ, &outq) == 0 &&
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
                uint64_t end = c->line_since_usec + (uint64_t)cf->request_timeout_sec * USEC_PER_SEC;
                want = end > now ? end - now : 1;
        }
        if (c->n_subs == 0 && cf->client_idle_timeout_sec > 0)
                want = want ? MIN(want, (uint64_t)cf->client_idle_timeout_sec * USEC_PER_SEC)
                            : (uint64_t)cf->client_idle_timeout_sec * USEC_PER_SEC;
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
            now + 10000 >= c->line_since_usec + (uint64_t)cf->request_timeout_sec * USEC_PER_SEC) {
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

/*
 * The reader of a subscriber, or of a client that pipelines, waits in
 * poll() for POLLIN rather than in read(): a thread blocked in read() on a
 * Unix stream socket is woken each time the peer takes data we sent
 * (unix_write_space() wakes every sleeper on the socket), which for a
 * subscriber is every event it reads and for a pipelining client every
 * batch of answers, and goes back to sleep: a context switch pair each
 * time, on our CPU and an interrupt on the client's. poll() waits only for
 * what it asked. A client that sends one request at a time is waited for
 * in read(): one system call per request instead of two, which costs more
 * than the wake-up saves. 1 when readable (or closed, or broken), 0 at the
 * SO_RCVTIMEO deadline, -1 with errno (EINTR: kicked).
 */
static int reader_wait_readable(Client *c)
{
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int timeout = c->rcvtimeo_usec == 0
                              ? -1
                              : (int)MIN((c->rcvtimeo_usec + 999) / 1000, (uint64_t)INT_MAX);

        return poll(&p, 1, timeout);
}

/* One read() into c->in: the bytes read (> 0), or how reading ends. */
static ssize_t reader_read(Client *c, bool pipelining, bool *stopping, ReadEnd *end)
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
                int k = 1;

                reader_arm_timeout(c, now_usec(CLOCK_MONOTONIC));
                if (c->n_subs > 0 || pipelining)
                        k = reader_wait_readable(c);
                if (k == 0)
                        errno = EAGAIN, n = -1; /* as read() at SO_RCVTIMEO */
                else if (k < 0)
                        n = -1;
                else
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

/* The events of one batch wait in each subscriber's queue until the batch
 * ends: the batch stays well under QueueLimitBytes=, so that a small limit
 * cannot count a subscriber that reads at once as slow. */
static size_t reader_more_bytes(const Client *c)
{
        return MIN((size_t)READ_MORE_BYTES, c->config->queue_limit_bytes / 4);
}

/*
 * A batch that published events takes along what its publisher has sent
 * meanwhile, without waiting: more of its publishes, fanned out by the same
 * write per subscriber (and answered by the same write), at most `budget`
 * bytes. The bytes read (> 0), or 0 when nothing more is there or reading
 * must go the long way (a stop, a drop, the end, an error: the next
 * reader_read() sees them).
 */
static ssize_t reader_read_more(Client *c, bool stopping, size_t budget)
{
        ssize_t n;

        if (stopping || atomic_load(&c->stop_requested) || atomic_load(&c->dropped) || c->closing)
                return 0;
        if (buffer_reserve(&c->in, MIN(budget, (size_t)READ_CHUNK)) < 0)
                return 0;
        n = recv(c->fd, c->in.data + c->in.len, MIN(c->in.cap - c->in.len, budget), MSG_DONTWAIT);
        return n > 0 ? n : 0;
}

/* Split, parse and run the complete lines in c->in; keep the partial one. */
static size_t reader_batch(Client *c, size_t *scan, uint64_t now)
{
        size_t start = 0, lines = 0;
        bool completed = false;

        c->request_start_usec = now; /* command_dispatch() times from here */
        for (;;) {
                char *lf = memchr(c->in.data + *scan, '\n', c->in.len - *scan);
                if (!lf)
                        break;
                reader_line(c, c->in.data + start, lf - (c->in.data + start));
                start = *scan = lf - c->in.data + 1;
                completed = true;
                lines++;
                if (c->closing)
                        break;
                if (c->out.len >= OUT_FLUSH_BYTES) {
                        commands_settle_timing(c, now_usec(CLOCK_MONOTONIC));
                        if (client_flush(c) < 0 ||
                            outbox_wait_space(&c->outbox, USEC_INFINITY) < 0) {
                                c->closing = true;
                                break;
                        }
                        /* it may have waited: not the next request's time */
                        c->request_start_usec = now_usec(CLOCK_MONOTONIC);
                }
        }
        if (c->n_untimed > 0)
                commands_settle_timing(c, now_usec(CLOCK_MONOTONIC));
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
        return lines;
}

/*
 * The drain of a restart (handover.c): everything received before the stop
 * is answered, the rest stays in the socket for the next process, and so
 * does the partial line in c->in. The subscriptions stay, and the outbox
 * open, so that what other readers still publish reaches this client; the
 * main thread closes the outbox once every reader has stopped.
 */
static void reader_hand_over(Client *c)
{
        (void)client_flush(c);
        if (!c->sender_started && outbox_bytes(&c->outbox) > 0 && client_start_sender(c) < 0)
                (void)client_send_now(c);
        if (!outbox_is_dead(&c->outbox))
                atomic_store(&c->handed_over, true);
        client_thread_done(c);
        client_unref(c);
        /* The process ends in a moment; a thread that exits first costs the
         * return of its stack (madvise, a TLB flush on every CPU), 1,000
         * times over while every reader stops at once. Wait for the end. */
        for (;;)
                pause();
}

void *client_reader_thread(void *userdata)
{
        Client *c = userdata;
        size_t scan = 0; /* c->in up to here holds no LF */
        bool stopping = false;
        bool pipelining = false; /* the last batch held more than one request */
        ReadEnd end = READ_ON;
        sigset_t wake;

        (void)pthread_setname_np(pthread_self(), "ipcd-reader"); /* ps -L, top -H */
        sigemptyset(&wake);
        sigaddset(&wake, CLIENT_WAKE_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
        /* Restored after a restart with its subscriptions: events will come. */
        if (c->n_subs > 0 && client_start_sender(c) < 0) {
                log_client(LOG_WARNING, c, "cannot start a sender thread for its events, closing");
                client_abort(c);
        }

        while (end == READ_ON) {
                size_t lines;
                ssize_t n;

                if (outbox_wait_space(&c->outbox, USEC_INFINITY) < 0) {
                        end = READ_EOF;
                        break;
                }
                n = reader_read(c, pipelining, &stopping, &end);
                if (n <= 0)
                        continue;
                client_count(&c->n_bytes_in, (uint64_t)n);
                c->in.len += n;
                client_refresh_config(c); /* once per batch: one atomic load */
                lines = reader_batch(c, &scan, now_usec(CLOCK_MONOTONIC));
                for (size_t more = 0, got = (size_t)n;
                     c->n_fanout > 0 && more < READ_MORE_MAX && got < reader_more_bytes(c);
                     more++, got += (size_t)n) {
                        n = reader_read_more(c, stopping, reader_more_bytes(c) - got);
                        if (n <= 0)
                                break;
                        client_count(&c->n_bytes_in, (uint64_t)n);
                        c->in.len += n;
                        lines += reader_batch(c, &scan, now_usec(CLOCK_MONOTONIC));
                }
                pipelining = lines > 1;
                if (client_flush(c) < 0)
                        end = READ_EOF;
                else if (c->closing)
                        end = READ_STOPPED;
        }

        if (end == READ_STOPPED && stopping && !c->closing && !atomic_load(&c->dropped) &&
            atomic_load(&c->server->handing_over)) {
                reader_hand_over(c);
                return NULL;
        }
        (void)client_flush(c);
        outbox_close(&c->outbox);
        events_client_gone(c); /* no more events */
        buffer_done(&c->in);
        if (!c->sender_started) {
                /* Everything went out inline: the end of the answers is ours
                 * to signal, as the sender would have. */
                if (outbox_bytes(&c->outbox) > 0 && client_start_sender(c) < 0)
                        (void)client_send_now(c);
                if (!c->sender_started)
                        (void)shutdown(c->fd, outbox_is_dead(&c->outbox) ? SHUT_RDWR : SHUT_WR);
        }
        if (end == READ_STOPPED)
                reader_linger(c, now_usec(CLOCK_MONOTONIC) +
                                     (stopping ? (uint64_t)c->config->drain_timeout_sec * USEC_PER_SEC +
                                                     LINGER_USEC
                                               : LINGER_USEC));

        client_thread_done(c);
        client_unref(c);
        return NULL;
}

