/*
 * events.c - topics and fan-out; see events.h.
 *
 * A client's topic list is changed only by its own reader thread, and only
 * under the registry lock; publishers read it under the same lock while
 * they walk the registry. A publisher never waits for a subscriber: an
 * event that would take a subscriber's queue past its limit disconnects
 * that subscriber instead (a slow consumer), and the publisher carries on.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "events.h"
#include "log.h"
#include "server.h"

static bool client_has_topic(const Client *c, const char *topic, size_t len)
{
        for (size_t i = 0; i < c->n_topics; i++)
                if (strlen(c->topics[i]) == len && memcmp(c->topics[i], topic, len) == 0)
                        return true;
        return false;
}

/* Subscribers must not be dropped for being quiet: no idle timeout for them. */
static void client_set_idle_timeout(Client *c, unsigned sec)
{
        struct timeval tv = {.tv_sec = sec};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int reply_count(Client *c, size_t n)
{
        char buf[32];
        int len = snprintf(buf, sizeof(buf), "%zu", n);
        return proto_append_ok(&c->out, buf, (size_t)len) < 0 ? -ENOMEM : 0;
}

/*
 * Answer a subscription change while still holding the registry lock, so
 * the answer is queued before any event that a publisher can send once
 * the lock is released: the client sees OK first, then the events.
 */
static int reply_count_locked(Client *c, size_t n)
{
        int r = reply_count(c, n);

        if (r == 0)
                (void)client_flush(c); /* on failure the reader notices the dead queue */
        return r;
}

int events_subscribe(Client *c, const ProtoRequest *req)
{
        Server *s = c->server;
        size_t n_new = 0;
        int r = 0;

        for (size_t i = 1; i < req->n_args; i++)
                if (!proto_topic_is_valid(req->args[i].data, req->args[i].len))
                        return proto_append_err(&c->out, "bad-request",
                                                "invalid topic: 1-%d of A-Z a-z 0-9 . _ : / @ "
                                                "+ -",
                                                PROTO_WORD_MAX) < 0
                                   ? -ENOMEM
                                   : 1;

        /* Events will come: they need the sender thread. */
        if (client_start_sender(c) < 0)
                return proto_append_err(&c->out, "failed", "cannot start a sender thread") < 0
                           ? -ENOMEM
                           : 1;

        pthread_mutex_lock(&s->lock);
        /* All or nothing: count what is new (duplicates in the request too). */
        for (size_t i = 1; i < req->n_args; i++) {
                bool dup = client_has_topic(c, req->args[i].data, req->args[i].len);
                for (size_t j = 1; j < i && !dup; j++)
                        dup = req->args[j].len == req->args[i].len &&
                              memcmp(req->args[j].data, req->args[i].data, req->args[i].len) == 0;
                n_new += !dup;
        }
        if (c->n_topics + n_new > EVENTS_MAX_TOPICS) {
                pthread_mutex_unlock(&s->lock);
                return proto_append_err(&c->out, "bad-request", "at most %d topics per client",
                                        EVENTS_MAX_TOPICS) < 0
                           ? -ENOMEM
                           : 1;
        }
        for (size_t i = 1; i < req->n_args && r == 0; i++) {
                char **t, *dup;

                if (client_has_topic(c, req->args[i].data, req->args[i].len))
                        continue;
                dup = strdup(req->args[i].data);
                t = dup ? realloc(c->topics, (c->n_topics + 1) * sizeof(*t)) : NULL;
                if (!t) {
                        free(dup);
                        r = -ENOMEM;
                        break;
                }
                c->topics = t;
                c->topics[c->n_topics++] = dup;
        }
        if (r == 0) {
                client_set_idle_timeout(c, 0);
                r = reply_count_locked(c, c->n_topics);
        }
        pthread_mutex_unlock(&s->lock);

        if (r == -ENOMEM)
                return proto_append_err(&c->out, "failed", "out of memory") < 0 ? -ENOMEM : 1;
        return r;
}

int events_unsubscribe(Client *c, const ProtoRequest *req)
{
        Server *s = c->server;
        size_t n;

        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < c->n_topics;) {
                bool drop = req->n_args == 1;

                for (size_t j = 1; j < req->n_args && !drop; j++)
                        drop = strlen(c->topics[i]) == req->args[j].len &&
                               memcmp(c->topics[i], req->args[j].data, req->args[j].len) == 0;
                if (drop) {
                        free(c->topics[i]);
                        c->topics[i] = c->topics[--c->n_topics];
                } else
                        i++;
        }
        n = c->n_topics;
        pthread_mutex_unlock(&s->lock);
        /* No event can follow this answer, so it need not be queued under
         * the lock (and must not: a flush may start the sender, which takes
         * the lock). */
        if (n == 0)
                client_set_idle_timeout(c, c->config->client_idle_timeout_sec);
        return reply_count(c, n);
}

int events_publish(Client *c, const ProtoRequest *req)
{
        Server *s = c->server;
        const ProtoArg *topic = &req->args[1];
        size_t delivered = 0, dropped = 0;
        uint64_t slow[8];
        size_t n_slow = 0;
        int r = 0;

        if (!proto_topic_is_valid(topic->data, topic->len))
                return proto_append_err(&c->out, "bad-request", "invalid topic") < 0 ? -ENOMEM : 1;

        /* One frame, built once; each subscriber gets its own copy. */
        buffer_clear(&c->scratch);
        for (size_t i = 2; i < req->n_args && r >= 0; i++) {
                if (i > 2)
                        r = buffer_append(&c->scratch, " ", 1);
                if (r >= 0)
                        r = buffer_append(&c->scratch, req->args[i].data, req->args[i].len);
        }
        if (r >= 0) {
                Buffer msg = c->scratch;

                c->scratch = BUFFER_INIT;
                r = proto_append_frame(&c->scratch, PROTO_FRAME_EVENT, topic->data, msg.data,
                                       msg.len);
                buffer_done(&msg);
        }
        if (r < 0)
                return proto_append_err(&c->out, "failed", "out of memory") < 0 ? -ENOMEM : 1;

        pthread_mutex_lock(&s->lock);
        for (Client *sub = s->clients; sub; sub = sub->next) {
                char *copy;

                if (!client_has_topic(sub, topic->data, topic->len))
                        continue;
                copy = malloc(c->scratch.len);
                if (!copy) {
                        dropped++;
                        continue;
                }
                memcpy(copy, c->scratch.data, c->scratch.len);
                r = queue_push_bounded(&sub->queue, copy, c->scratch.len);
                if (r == 0)
                        delivered++;
                else if (r == -ENOBUFS) {
                        /* Too slow to keep up: disconnect it rather than wait. */
                        dropped++;
                        if (n_slow < ELEMENTSOF(slow))
                                slow[n_slow] = sub->id;
                        n_slow++;
                        client_drop(sub, "slow-consumer",
                                    "disconnected: too slow to take the events it subscribed to");
                }
        }
        pthread_mutex_unlock(&s->lock);

        atomic_fetch_add_explicit(&s->stats.events_published, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->stats.events_delivered, delivered, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->stats.events_dropped, dropped, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->stats.slow_consumer_disconnects, n_slow,
                                  memory_order_relaxed);
        for (size_t i = 0; i < MIN(n_slow, ELEMENTSOF(slow)); i++)
                log_warning("client %" PRIu64 ": disconnected as a slow consumer: its queue "
                            "was over QueueLimitBytes=%zu when an event on '%s' came",
                            slow[i], c->config->queue_limit_bytes, topic->data);
        if (n_slow > ELEMENTSOF(slow))
                log_warning("%zu more slow consumers disconnected", n_slow - ELEMENTSOF(slow));

        return reply_count(c, delivered);
}
