/*
 * local.c - the ipcd side of the bridge and the main loop; see local.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>

#include <systemd/sd-daemon.h>

#include "blog.h"
#include "local.h"

#define CONNECT_TIMEOUT_USEC (2 * USEC_PER_SEC)
#define BACKOFF_MAX_MS       5000
#define ECHO_MAX             (16 * LOCAL_WINDOW)

int local_init(Local *l, const BridgeConfig *c, Stats *stats, EventQueue *out, EventQueue *in)
{
        *l = (Local){.config = c, .stats = stats, .out = out, .in = in};
        l->topics = calloc(c->n_out ? c->n_out : 1, sizeof(char *));
        if (!l->topics)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_out; i++) {
                bool seen = false;
                for (size_t j = 0; j < l->n_topics && !seen; j++)
                        seen = !strcmp(l->topics[j], c->out[i].local_topic);
                if (!seen)
                        l->topics[l->n_topics++] = c->out[i].local_topic;
        }
        return 0;
}

static bool subscribed_to(const Local *l, const char *topic)
{
        for (size_t i = 0; i < l->n_topics; i++)
                if (!strcmp(l->topics[i], topic))
                        return true;
        return false;
}

static void echo_clear(Local *l)
{
        while (l->echo_head) {
                Echo *e = l->echo_head;
                l->echo_head = e->next;
                event_free(e->event);
                free(e);
        }
        l->echo_tail = NULL;
        l->n_echo = 0;
}

/* Drop the connection; unanswered publishes go back to the head of `in`. */
static void disconnect(Local *l, const char *why)
{
        size_t requeued = 0;

        if (!l->conn)
                return;
        for (size_t k = l->p_n; k > 0; k--) {
                Pending *p = &l->pending[(l->p_head + k - 1) % ELEMENTSOF(l->pending)];
                if (p->event) {
                        evqueue_push_front(l->in, p->event);
                        p->event = NULL;
                        requeued++;
                }
        }
        l->p_head = l->p_n = 0;
        echo_clear(l);
        l->conn = conn_free(l->conn);
        if (atomic_load(&l->stats->ipcd_up))
                log_warning("Lost ipcd at %s: %s; %zu unanswered publish(es) will be sent again",
                            l->config->socket_path, why, requeued);
        atomic_store(&l->stats->ipcd_up, false);
        l->backoff_ms = l->backoff_ms == 0 ? 100 : MIN(l->backoff_ms * 2, BACKOFF_MAX_MS);
        l->next_attempt = now_usec(CLOCK_MONOTONIC) + USEC_PER_MSEC * l->backoff_ms;
}

static int expect(Local *l, AnswerKind kind, Event *e)
{
        Pending *p;

        if (l->p_n >= ELEMENTSOF(l->pending))
                return -ENOBUFS;
        p = &l->pending[(l->p_head + l->p_n) % ELEMENTSOF(l->pending)];
        *p = (Pending){.kind = kind, .event = e};
        l->p_n++;
        return 0;
}

static int try_connect(Local *l)
{
        char *argv[1 + 256];
        size_t n = 0;
        int r;

        r = conn_connect_unix(l->config->socket_path, deadline_after(CONNECT_TIMEOUT_USEC),
                              &l->conn);
        if (r < 0) {
                l->backoff_ms = l->backoff_ms == 0 ? 100 : MIN(l->backoff_ms * 2, BACKOFF_MAX_MS);
                l->next_attempt = now_usec(CLOCK_MONOTONIC) + USEC_PER_MSEC * l->backoff_ms;
                log_full_errno(l->failing ? LOG_DEBUG : LOG_WARNING, r, NULL,
                               "Cannot connect to ipcd at %s: %m; retrying", l->config->socket_path);
                l->failing = true;
                return 0;
        }
        l->failing = false;
        argv[n++] = (char *)"hello";
        r = conn_queue_request(l->conn, argv, n);
        if (r >= 0)
                r = expect(l, ANSWER_HELLO, NULL);
        if (r >= 0 && l->n_topics > 0) {
                n = 0;
                argv[n++] = (char *)"subscribe";
                for (size_t i = 0; i < l->n_topics; i++)
                        argv[n++] = (char *)l->topics[i];
                r = conn_queue_request(l->conn, argv, n);
                if (r >= 0)
                        r = expect(l, ANSWER_SUBSCRIBE, NULL);
        }
        if (r < 0)
                disconnect(l, strerror(-r));
        return 0;
}

static void handle_hello(Local *l, const ProtoFrame *f)
{
        const char *role = "unknown";
        char buf[32];
        const char *p;

        if (f->type != PROTO_FRAME_OK) {
                log_warning("ipcd answered hello with ERR %s", f->word);
                return;
        }
        p = memmem(f->payload, f->len, "\nrole: ", 7);
        if (p) {
                size_t n = strcspn(p + 7, "\n");
                snprintf(buf, sizeof(buf), "%.*s", (int)MIN(n, sizeof(buf) - 1), p + 7);
                role = buf;
        }
        log_info("Connected to ipcd at %s with role %s", l->config->socket_path, role);
        if (!strcmp(role, "admin"))
                log_warning("The bridge has role admin on ipcd; it only ever subscribes and "
                            "publishes, but should run as its own user (ipcd-bridge) with role "
                            "user");
        if (l->n_topics == 0) {
                atomic_store(&l->stats->ipcd_up, true);
                l->backoff_ms = 0;
        }
}

/* An EVENT from ipcd: our own echo, or one Event per [Out] rule. */
static void handle_event(Local *l, const ProtoFrame *f)
{
        const BridgeConfig *c = l->config;

        for (Echo **pp = &l->echo_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
                Echo *e = *pp;
                if (e->event->len == f->len && !strcmp(e->event->topic, f->word) &&
                    memcmp(e->event->payload, f->payload, f->len) == 0) {
                        *pp = e->next;
                        if (l->echo_tail == e)
                                l->echo_tail = prev;
                        l->n_echo--;
                        event_free(e->event);
                        free(e);
                        return;
                }
        }
        for (size_t i = 0; i < c->n_out; i++) {
                const OutRule *o = &c->out[i];
                size_t dropped;
                Event *e;

                if (strcmp(o->local_topic, f->word) != 0)
                        continue;
                e = event_new(o->mqtt_topic, f->payload, f->len, o->qos, o->retain);
                if (!e) {
                        atomic_fetch_add_explicit(&l->stats->lost, 1, memory_order_relaxed);
                        continue;
                }
                dropped = evqueue_push(l->out, e);
                if (dropped)
                        log_full_errno(LOG_WARNING, 0,
                                       FIELDS(.direction = "out", .topic = o->local_topic,
                                                    .mqtt_topic = o->mqtt_topic,
                                                    .broker = c->broker),
                                       "Queue to the broker full (%zu events, %zu bytes at most): "
                                       "dropped %zu event(s), %" PRIuFAST64 " in all",
                                       l->out->max_n, l->out->max_bytes, dropped,
                                       atomic_load(&l->out->dropped));
        }
}

static void handle_frames(Local *l)
{
        ProtoFrame f;
        int r = 0;

        while (l->conn && (r = conn_next_frame(l->conn, &f)) > 0) {
                Pending *p;

                if (f.type == PROTO_FRAME_EVENT) {
                        handle_event(l, &f);
                        continue;
                }
                if (f.type == PROTO_FRAME_MORE)
                        continue;
                if (l->p_n == 0) {
                        /* Not an answer: ipcd says why it is about to close. */
                        log_warning("ipcd: ERR %s: %.*s", f.word, (int)MIN(f.len, 200),
                                    f.payload);
                        continue;
                }
                p = &l->pending[l->p_head];
                l->p_head = (l->p_head + 1) % ELEMENTSOF(l->pending);
                l->p_n--;
                switch (p->kind) {
                case ANSWER_HELLO:
                        handle_hello(l, &f);
                        break;
                case ANSWER_SUBSCRIBE:
                        if (f.type != PROTO_FRAME_OK) {
                                log_error("ipcd refused to subscribe: ERR %s: %.*s", f.word,
                                          (int)MIN(f.len, 200), f.payload);
                                disconnect(l, "subscribe refused");
                                return;
                        }
                        atomic_store(&l->stats->ipcd_up, true);
                        l->backoff_ms = 0;
                        break;
                case ANSWER_PUBLISH:
                        if (f.type == PROTO_FRAME_OK)
                                atomic_fetch_add_explicit(&l->stats->in, 1, memory_order_relaxed);
                        else {
                                atomic_fetch_add_explicit(&l->stats->lost, 1, memory_order_relaxed);
                                log_full_errno(LOG_WARNING, 0,
                                               FIELDS(.direction = "in",
                                                            .topic = p->event->topic),
                                               "ipcd refused an event on %s: ERR %s",
                                               p->event->topic, f.word);
                        }
                        event_free(p->event);
                        p->event = NULL;
                        break;
                }
        }
        if (l->conn && r < 0)
                disconnect(l, strerror(-r));
}

/* Send queued broker messages while the window allows. */
static void pump(Local *l)
{
        while (l->conn && l->p_n < LOCAL_WINDOW) {
                Event *e = evqueue_pop(l->in);
                int r;

                if (!e)
                        return;
                /* conn_queue_request() takes C strings: the payload must not
                 * hold NULs for it, so quote it ourselves. */
                r = proto_append_arg(&l->conn->out, "publish", 7);
                if (r >= 0)
                        r = proto_append_arg(&l->conn->out, e->topic, strlen(e->topic));
                if (r >= 0)
                        r = proto_append_arg(&l->conn->out, e->payload, e->len);
                if (r >= 0)
                        r = buffer_append(&l->conn->out, "\n", 1);
                if (r >= 0 && subscribed_to(l, e->topic)) {
                        Echo *echo = calloc(1, sizeof(*echo));
                        echo->event = echo ? event_new(e->topic, e->payload, e->len, 0, false) : NULL;
                        if (!echo || !echo->event) {
                                free(echo);
                                r = -ENOMEM;
                        } else {
                                if (l->n_echo >= ECHO_MAX) {
                                        /* Never seen come back: forget the oldest. */
                                        Echo *old = l->echo_head;
                                        l->echo_head = old->next;
                                        event_free(old->event);
                                        free(old);
                                        l->n_echo--;
                                        if (!l->echo_head)
                                                l->echo_tail = NULL;
                                }
                                if (l->echo_tail)
                                        l->echo_tail->next = echo;
                                else
                                        l->echo_head = echo;
                                l->echo_tail = echo;
                                l->n_echo++;
                        }
                }
                if (r >= 0)
                        r = expect(l, ANSWER_PUBLISH, e);
                if (r < 0) {
                        evqueue_push_front(l->in, e);
                        disconnect(l, strerror(-r));
                        return;
                }
        }
}

static void notify_status(Local *l, char *last, size_t size)
{
        Stats *s = l->stats;
        char buf[512];

        snprintf(buf, sizeof(buf),
                 "STATUS=broker %s, ipcd %s; out %" PRIuFAST64 ", in %" PRIuFAST64
                 ", queued %zu/%zu, dropped %" PRIuFAST64 "/%" PRIuFAST64 ", looped %" PRIuFAST64
                 ", lost %" PRIuFAST64,
                 atomic_load(&s->broker_up) ? "connected" : "disconnected",
                 atomic_load(&s->ipcd_up) ? "connected" : "disconnected", atomic_load(&s->out),
                 atomic_load(&s->in), atomic_load(&l->out->n_now), atomic_load(&l->in->n_now),
                 atomic_load(&l->out->dropped), atomic_load(&l->in->dropped),
                 atomic_load(&s->looped), atomic_load(&s->lost));
        if (strcmp(buf, last) != 0) {
                (void)sd_notify(false, buf);
                snprintf(last, size, "%s", buf);
        }
}

int local_run(Local *l, int sfd)
{
        uint64_t watchdog_usec = 0, next_watchdog = 0, next_status = 0;
        char last_status[512] = "";
        bool watchdog = sd_watchdog_enabled(false, &watchdog_usec) > 0;

        for (;;) {
                struct pollfd p[3] = {
                    {.fd = sfd, .events = POLLIN},
                    {.fd = l->in->efd, .events = POLLIN},
                    {.fd = -1},
                };
                usec_t now = now_usec(CLOCK_MONOTONIC), wake = now + USEC_PER_SEC;
                int r, timeout;

                if (!l->conn && now >= l->next_attempt)
                        (void)try_connect(l);
                if (l->conn) {
                        pump(l);
                        r = l->conn ? conn_flush(l->conn) : 0;
                        if (r < 0 && r != -EAGAIN)
                                disconnect(l, strerror(-r));
                }
                if (l->conn) {
                        p[2] = (struct pollfd){.fd = l->conn->fd, .events = POLLIN};
                        if (l->conn->out.len > 0)
                                p[2].events |= POLLOUT;
                } else
                        wake = MIN(wake, l->next_attempt);

                now = now_usec(CLOCK_MONOTONIC);
                if (now >= next_status) {
                        notify_status(l, last_status, sizeof(last_status));
                        next_status = now + USEC_PER_SEC;
                }
                if (watchdog && now >= next_watchdog) {
                        /* Both threads must be alive; the MQTT thread may spend up to
                         * a TCP connect timeout (~130 s) in connect(). */
                        uint64_t hb = atomic_load(&l->stats->mqtt_heartbeat_usec);
                        if (now - hb < MAX(watchdog_usec, 150 * USEC_PER_SEC))
                                (void)sd_notify(false, "WATCHDOG=1");
                        next_watchdog = now + watchdog_usec / 2;
                }
                if (watchdog)
                        wake = MIN(wake, next_watchdog);
                wake = MIN(wake, next_status);
                timeout = poll_timeout_ms(wake, now);

                r = poll(p, ELEMENTSOF(p), timeout);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(errno, "poll() failed: %m");
                }
                if (p[0].revents) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                                if (si.ssi_signo == SIGHUP) {
                                        log_notice("SIGHUP: ipcd-bridge does not reload; "
                                                   "restart it to apply bridge.conf");
                                        continue;
                                }
                                log_info("Signal %u: stopping", si.ssi_signo);
                                return 0;
                        }
                }
                if (p[1].revents)
                        evqueue_clear_wakeup(l->in);
                if (l->conn && p[2].revents) {
                        r = conn_receive(l->conn);
                        if (r < 0 && r != -EAGAIN)
                                disconnect(l, strerror(-r));
                        else {
                                handle_frames(l);
                                if (l->conn && l->conn->eof)
                                        disconnect(l, "connection closed");
                        }
                }
        }
}

void local_done(Local *l)
{
        disconnect(l, "stopping");
        free(l->topics);
        l->topics = NULL;
}
