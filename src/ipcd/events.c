/*
 * events.c - the topic index and fan-out; see events.h for the locking.
 *
 * Called on a client's reader thread (its own subscribe, unsubscribe and
 * publish, the monitor after each command, leaving every topic as it
 * ends); the events lock (EventIndex.lock) is taken here and nowhere else,
 * with a subscriber's Queue.lock inside it (queue_push_shared()).
 *
 * A publisher never waits for a subscriber: an event that would take a
 * subscriber's queue past its limit disconnects that subscriber instead (a
 * slow consumer), and the publisher carries on.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "events.h"
#include "log.h"
#include "server.h"

struct Topic {
        Topic *next; /* hash chain */
        uint64_t hash;
        Client **subs; /* not referenced: see events.h */
        size_t n_subs, cap;
        size_t len;
        char name[]; /* NUL-terminated */
};

/* Slow consumers kicked by one publish (the rest are cut off by the tick). */
#define EVENTS_KICK_MAX 16

static uint64_t topic_hash(const char *s, size_t len)
{
        uint64_t h = 14695981039346656037ULL; /* FNV-1a */

        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
        return h;
}

int events_init(EventIndex *x)
{
        int r;

        *x = (EventIndex){.n_buckets = 64};
        x->buckets = calloc(x->n_buckets, sizeof(*x->buckets));
        if (!x->buckets)
                return -ENOMEM;
        r = pthread_mutex_init(&x->lock, NULL);
        if (r) {
                free(x->buckets);
                x->buckets = NULL;
                return -r;
        }
        return 0;
}

void events_done(EventIndex *x)
{
        for (size_t i = 0; i < x->n_buckets; i++)
                for (Topic *t = x->buckets[i], *n; t; t = n) {
                        n = t->next;
                        free(t->subs);
                        free(t);
                }
        free(x->buckets);
        x->buckets = NULL;
        pthread_mutex_destroy(&x->lock);
}

static Topic *topic_find_locked(EventIndex *x, const char *name, size_t len, uint64_t h)
{
        for (Topic *t = x->buckets[h & (x->n_buckets - 1)]; t; t = t->next)
                if (t->hash == h && t->len == len && memcmp(t->name, name, len) == 0)
                        return t;
        return NULL;
}

static void index_grow_locked(EventIndex *x)
{
        size_t n = x->n_buckets * 2;
        Topic **b = calloc(n, sizeof(*b));

        if (!b)
                return; /* longer chains, still correct */
        for (size_t i = 0; i < x->n_buckets; i++)
                for (Topic *t = x->buckets[i], *next; t; t = next) {
                        next = t->next;
                        t->next = b[t->hash & (n - 1)];
                        b[t->hash & (n - 1)] = t;
                }
        free(x->buckets);
        x->buckets = b;
        x->n_buckets = n;
}

static Topic *topic_get_locked(EventIndex *x, const char *name, size_t len, uint64_t h)
{
        Topic *t = topic_find_locked(x, name, len, h);

        if (t)
                return t;
        t = calloc(1, sizeof(*t) + len + 1);
        if (!t)
                return NULL;
        t->hash = h;
        t->len = len;
        memcpy(t->name, name, len);
        if (x->n_topics >= x->n_buckets * 2)
                index_grow_locked(x);
        t->next = x->buckets[h & (x->n_buckets - 1)];
        x->buckets[h & (x->n_buckets - 1)] = t;
        x->n_topics++;
        return t;
}

static void topic_free_locked(EventIndex *x, Topic *t)
{
        Topic **p = &x->buckets[t->hash & (x->n_buckets - 1)];

        while (*p != t)
                p = &(*p)->next;
        *p = t->next;
        x->n_topics--;
        free(t->subs);
        free(t);
}

/* Take c off t's list, and t off c's; frees t when it has no subscriber left. */
static void unsubscribe_locked(EventIndex *x, Client *c, size_t k)
{
        Topic *t = c->subs[k];

        for (size_t i = 0; i < t->n_subs; i++)
                if (t->subs[i] == c) {
                        t->subs[i] = t->subs[--t->n_subs];
                        break;
                }
        if (t->len == strlen(EVENTS_MONITOR) && memcmp(t->name, EVENTS_MONITOR, t->len) == 0)
                atomic_fetch_sub_explicit(&x->n_monitors, 1, memory_order_relaxed);
        /* c->subs keeps its order (at most EVENTS_MAX_TOPICS): `clients` lists it */
        memmove(&c->subs[k], &c->subs[k + 1], (c->n_subs - k - 1) * sizeof(*c->subs));
        c->n_subs--;
        if (t->n_subs == 0)
                topic_free_locked(x, t);
}

static int subscribe_locked(EventIndex *x, Client *c, const ProtoArg *a, uint64_t h)
{
        Topic *t = topic_get_locked(x, a->data, a->len, h);

        if (!t)
                return -ENOMEM;
        if (t->n_subs == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 4;
                Client **n = realloc(t->subs, cap * sizeof(*n));
                if (!n) {
                        if (t->n_subs == 0)
                                topic_free_locked(x, t);
                        return -ENOMEM;
                }
                t->subs = n;
                t->cap = cap;
        }
        t->subs[t->n_subs++] = c;
        c->subs[c->n_subs++] = t; /* room for EVENTS_MAX_TOPICS was made before */
        if (t->len == strlen(EVENTS_MONITOR) && memcmp(t->name, EVENTS_MONITOR, t->len) == 0)
                atomic_fetch_add_explicit(&x->n_monitors, 1, memory_order_relaxed);
        return 0;
}

static bool client_has_topic_locked(const Client *c, const Topic *t)
{
        for (size_t i = 0; i < c->n_subs; i++)
                if (c->subs[i] == t)
                        return true;
        return false;
}

static int arg_compare(const void *a, const void *b)
{
        const ProtoArg *x = *(const ProtoArg *const *)a, *y = *(const ProtoArg *const *)b;

        if (x->len != y->len)
                return x->len < y->len ? -1 : 1;
        return memcmp(x->data, y->data, x->len);
}

/* The same, and equal ones in request order (the args are one array). */
static int arg_compare_stable(const void *a, const void *b)
{
        const ProtoArg *x = *(const ProtoArg *const *)a, *y = *(const ProtoArg *const *)b;
        int r = arg_compare(a, b);

        return r ? r : (x < y ? -1 : x > y);
}

static int arg_compare_position(const void *a, const void *b)
{
        const ProtoArg *x = *(const ProtoArg *const *)a, *y = *(const ProtoArg *const *)b;

        return x < y ? -1 : x > y;
}

/*
 * The distinct topics of a request, checked, sorted and de-duplicated:
 * all the work that needs no lock. Returns how many, or -EINVAL (a bad
 * topic), -E2BIG (more than a client may hold), -ENOMEM.
 */
static ssize_t request_topics(const ProtoRequest *req, const ProtoArg ***ret, uint64_t **ret_hashes)
{
        size_t n = req->n_args - 1, k = 0;
        _cleanup_free_ const ProtoArg **v = NULL;
        _cleanup_free_ uint64_t *hashes = NULL;

        for (size_t i = 1; i < req->n_args; i++)
                if (!proto_topic_is_valid(req->args[i].data, req->args[i].len))
                        return -EINVAL;
        v = malloc(n * sizeof(*v));
        hashes = malloc(n * sizeof(*hashes));
        if (!v || !hashes)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                v[i] = &req->args[i + 1];
        /* Sorted to find duplicates (the first of each kept), then back in
         * the request's order: subscriptions are listed as they were made. */
        qsort(v, n, sizeof(*v), arg_compare_stable);
        for (size_t i = 0; i < n; i++)
                if (k == 0 || arg_compare(&v[k - 1], &v[i]) != 0)
                        v[k++] = v[i];
        qsort(v, k, sizeof(*v), arg_compare_position);
        if (k > EVENTS_MAX_TOPICS)
                return -E2BIG;
        for (size_t i = 0; i < k; i++)
                hashes[i] = topic_hash(v[i]->data, v[i]->len);
        *ret = TAKE_PTR(v);
        *ret_hashes = TAKE_PTR(hashes);
        return (ssize_t)k;
}

static int reply_count(Client *c, size_t n)
{
        char buf[32];
        int len = snprintf(buf, sizeof(buf), "%zu", n);

        return reply_ok(c, buf, (size_t)len);
}

#define TOPIC_RULE "1-255 of A-Z a-z 0-9 . _ : / @ + -"

static bool is_reserved(const char *topic, size_t len)
{
        size_t n = strlen(EVENTS_RESERVED_PREFIX);

        return len >= n && memcmp(topic, EVENTS_RESERVED_PREFIX, n) == 0;
}

/*
 * What a subscription needs before the lock: the right to the topics, the
 * sender thread (events will come) and room to list them. 0, or the
 * answer's result when the request fails here.
 */
static int subscribe_prepare(Client *c, const ProtoArg **topics, ssize_t n)
{
        for (ssize_t i = 0; i < n; i++)
                if (is_reserved(topics[i]->data, topics[i]->len) &&
                    (Role)atomic_load(&c->role) < ROLE_ADMIN)
                        return reply_err(c, "denied",
                                         "topics under " EVENTS_RESERVED_PREFIX
                                         " require role admin");
        if (client_start_sender(c) < 0)
                return reply_err(c, "busy", "the server is out of threads; cannot deliver events");
        if (!c->subs) {
                c->subs = malloc(EVENTS_MAX_TOPICS * sizeof(*c->subs));
                if (!c->subs)
                        return reply_err(c, "failed", "out of memory");
        }
        return 0;
}

int events_subscribe(Client *c, const ProtoRequest *req)
{
        EventIndex *x = &c->server->events;
        _cleanup_free_ const ProtoArg **topics = NULL;
        _cleanup_free_ uint64_t *hashes = NULL;
        size_t n_new = 0, added = 0;
        ssize_t n;
        int r = 0;

        n = request_topics(req, &topics, &hashes);
        if (n == -EINVAL)
                return reply_err(c, "bad-request", "invalid topic: " TOPIC_RULE);
        if (n == -E2BIG)
                return reply_err(c, "bad-request",
                                 "at most %d topics per client; none of these were added",
                                 EVENTS_MAX_TOPICS);
        if (n < 0)
                return reply_err(c, "failed", "out of memory");

        r = subscribe_prepare(c, topics, n);
        if (r != 0)
                return r;

        pthread_mutex_lock(&x->lock);
        for (ssize_t i = 0; i < n; i++) {
                Topic *t = topic_find_locked(x, topics[i]->data, topics[i]->len, hashes[i]);
                if (!t || !client_has_topic_locked(c, t)) {
                        topics[n_new] = topics[i];
                        hashes[n_new++] = hashes[i];
                }
        }
        if (c->n_subs + n_new > EVENTS_MAX_TOPICS) {
                pthread_mutex_unlock(&x->lock);
                return reply_err(c, "bad-request",
                                 "at most %d topics per client (%zu now); none of these were added",
                                 EVENTS_MAX_TOPICS, c->n_subs);
        }
        for (; added < n_new; added++)
                if ((r = subscribe_locked(x, c, topics[added], hashes[added])) < 0)
                        break;
        if (r < 0) {
                /* All or nothing: take back what this request added (each
                 * went to the end of c->subs). */
                while (added-- > 0)
                        unsubscribe_locked(x, c, c->n_subs - 1);
        } else {
                /* The answer goes into the queue before the lock is released,
                 * so no event on these topics can overtake it. Memory work
                 * only: the sender (started above) writes it. */
                r = reply_count(c, c->n_subs);
                if (r == 0) {
                        Buffer b = c->out;

                        c->out = BUFFER_INIT;
                        (void)outbox_push(&c->outbox, b.data, b.len); /* dead: the reader sees it */
                }
        }
        pthread_mutex_unlock(&x->lock);
        if (r < 0)
                r = reply_err(c, "failed", "out of memory");
        return r;
}

int events_unsubscribe(Client *c, const ProtoRequest *req)
{
        EventIndex *x = &c->server->events;
        _cleanup_free_ const ProtoArg **topics = NULL;
        _cleanup_free_ uint64_t *hashes = NULL;
        ssize_t n = 0;
        size_t left;

        if (req->n_args > 1) {
                n = request_topics(req, &topics, &hashes);
                if (n == -EINVAL || n == -E2BIG)
                        n = 0; /* topics it cannot hold: nothing to drop */
                else if (n < 0)
                        return reply_err(c, "failed", "out of memory");
        }

        pthread_mutex_lock(&x->lock);
        if (req->n_args == 1)
                while (c->n_subs > 0)
                        unsubscribe_locked(x, c, c->n_subs - 1);
        for (ssize_t i = 0; i < n; i++) {
                Topic *t = topic_find_locked(x, topics[i]->data, topics[i]->len, hashes[i]);
                for (size_t k = 0; t && k < c->n_subs; k++)
                        if (c->subs[k] == t) {
                                unsubscribe_locked(x, c, k);
                                break;
                        }
        }
        left = c->n_subs;
        pthread_mutex_unlock(&x->lock);
        /* No event on a dropped topic can follow this answer: none is pushed
         * for it once the lock is released. */
        return reply_count(c, left);
}

void events_client_gone(Client *c)
{
        EventIndex *x = &c->server->events;

        if (!c->subs)
                return;
        pthread_mutex_lock(&x->lock);
        while (c->n_subs > 0)
                unsubscribe_locked(x, c, c->n_subs - 1);
        pthread_mutex_unlock(&x->lock);
        free(c->subs);
        c->subs = NULL;
}

int events_append_topics(Client *c, Buffer *b)
{
        EventIndex *x = &c->server->events;
        int r = 0;

        pthread_mutex_lock(&x->lock);
        for (size_t k = 0; r >= 0 && k < c->n_subs; k++)
                r = buffer_printf(b, "%s%s", k ? "," : "", c->subs[k]->name);
        pthread_mutex_unlock(&x->lock);
        return r;
}

/* Remember, once per batch, a subscriber that got events (referenced). */
static void fanout_note_locked(Client *c, Client *sub, uint64_t token)
{
        if (atomic_exchange_explicit(&sub->fanout_mark, token, memory_order_relaxed) == token)
                return;
        if (c->n_fanout == c->fanout_cap) {
                size_t cap = c->fanout_cap ? c->fanout_cap * 2 : 16;
                Client **n = realloc(c->fanout, cap * sizeof(*n));
                if (!n) {
                        /* Cannot remember it: wake its sender now instead. */
                        outbox_deliver_wake(&sub->outbox);
                        return;
                }
                c->fanout = n;
                c->fanout_cap = cap;
        }
        c->fanout[c->n_fanout++] = client_ref(sub);
}

void events_deliver(Client *c)
{
        for (size_t i = 0; i < c->n_fanout; i++) {
                Client *sub = c->fanout[i];
                if (outbox_deliver(&sub->outbox) < 0)
                        client_abort(sub);
                client_unref(sub);
        }
        c->n_fanout = 0;
        c->fanout_seq++;
}

/* The EVENT frame of a publish, built once and shared by every subscriber's
 * queue; NULL when out of memory. */
static SharedFrame *event_frame_new(Client *c, const ProtoRequest *req)
{
        const ProtoArg *topic = &req->args[1];
        int r;

        buffer_clear(&c->scratch);
        r = request_join_args(req, 2, &c->scratch);
        if (r >= 0) {
                Buffer msg = c->scratch;

                c->scratch = BUFFER_INIT;
                r = proto_append_frame(&c->scratch, PROTO_FRAME_EVENT, topic->data, msg.data,
                                       msg.len);
                buffer_done(&msg);
        }
        return r >= 0 ? shared_frame_new(c->scratch.data, c->scratch.len) : NULL;
}

int events_publish(Client *c, const ProtoRequest *req)
{
        Server *s = c->server;
        EventIndex *x = &s->events;
        const ProtoArg *topic = &req->args[1];
        size_t delivered = 0, dropped = 0, n_slow = 0;
        Client *kick[EVENTS_KICK_MAX];
        uint64_t slow_ids[8], token;
        SharedFrame *frame;
        uint64_t h;
        Topic *t;
        int r = 0;

        if (!proto_topic_is_valid(topic->data, topic->len))
                return reply_err(c, "bad-request", "invalid topic: " TOPIC_RULE);
        if (is_reserved(topic->data, topic->len))
                return reply_err(c, "denied", "topics under " EVENTS_RESERVED_PREFIX
                                              " are the daemon's own");

        /* Built before the lock. */
        frame = event_frame_new(c, req);
        if (!frame)
                return reply_err(c, "failed", "out of memory");
        h = topic_hash(topic->data, topic->len);
        token = (c->id << 24) ^ (c->fanout_seq & 0xffffff);

        pthread_mutex_lock(&x->lock);
        t = topic_find_locked(x, topic->data, topic->len, h);
        for (size_t i = 0; t && i < t->n_subs; i++) {
                Client *sub = t->subs[i];

                r = outbox_push_shared(&sub->outbox, frame);
                if (r == 0) {
                        delivered++;
                        fanout_note_locked(c, sub, token);
                } else if (r == -ENOBUFS) {
                        /* Too slow to keep up: disconnect it rather than wait. */
                        dropped++;
                        if (client_drop_queue(sub, "slow-consumer",
                                              "disconnected: too slow to take the events it "
                                              "subscribed to") == 0) {
                                if (n_slow < ELEMENTSOF(slow_ids))
                                        slow_ids[n_slow] = sub->id;
                                if (n_slow < ELEMENTSOF(kick))
                                        kick[n_slow] = client_ref(sub);
                                n_slow++;
                        }
                } else if (r == -ENOMEM)
                        dropped++;
        }
        pthread_mutex_unlock(&x->lock);
        shared_frame_unref(frame);

        for (size_t i = 0; i < MIN(n_slow, ELEMENTSOF(kick)); i++) {
                client_kick(kick[i]);
                client_unref(kick[i]);
        }
        atomic_fetch_add_explicit(&s->stats.events_published, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->stats.events_delivered, delivered, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->stats.events_dropped, dropped, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->stats.slow_consumer_disconnects, n_slow,
                                  memory_order_relaxed);
        for (size_t i = 0; i < MIN(n_slow, ELEMENTSOF(slow_ids)); i++)
                log_warning("client %" PRIu64 ": disconnected as a slow consumer: its queue "
                            "was over QueueLimitBytes=%zu when an event on '%s' came",
                            slow_ids[i], c->config->queue_limit_bytes, topic->data);
        if (n_slow > ELEMENTSOF(slow_ids))
                log_warning("%zu more slow consumers disconnected",
                            n_slow - ELEMENTSOF(slow_ids));

        return reply_count(c, delivered);
}

/* Append `a` to b as one printable word (escapes for the rest). */
static int append_printable(Buffer *b, const char *a, size_t len)
{
        int r = 0;

        for (size_t i = 0; i < len && r >= 0; i++) {
                unsigned char ch = a[i];
                if (ch > ' ' && ch < 0x7f && ch != '\\')
                        r = buffer_append(b, (const char *)&ch, 1);
                else
                        r = buffer_printf(b, "\\x%02x", ch);
        }
        return r;
}

void events_monitor(Client *c, const ProtoRequest *req, const char *result,
                    uint64_t duration_usec)
{
        EventIndex *x = &c->server->events;
        uint64_t h;
        Buffer payload = BUFFER_INIT, frame = BUFFER_INIT;
        SharedFrame *f = NULL;
        Topic *t;
        int r;

        if (atomic_load_explicit(&x->n_monitors, memory_order_relaxed) == 0)
                return; /* the cost of every request while nobody watches */
        h = topic_hash(EVENTS_MONITOR, strlen(EVENTS_MONITOR));
        for (size_t i = 0; i < c->n_subs; i++)
                if (c->subs[i]->len == strlen(EVENTS_MONITOR) &&
                    memcmp(c->subs[i]->name, EVENTS_MONITOR, c->subs[i]->len) == 0)
                        return; /* a monitor does not watch itself */

        r = buffer_printf(&payload, "client: %" PRIu64 "\ntransport: %s\npeer: %s\nrole: %s\n"
                                    "command: ",
                          c->id, transport_to_string(c->transport), c->peer,
                          role_to_string(atomic_load(&c->role)));
        if (r >= 0)
                r = append_printable(&payload, req->args[0].data, MIN(req->args[0].len, 64));
        if (r >= 0)
                r = buffer_append(&payload, "\nargs: ", 7);
        for (size_t i = 1; r >= 0 && i < req->n_args && payload.len < 512; i++) {
                if (i > 1)
                        r = buffer_append(&payload, " ", 1);
                if (r >= 0)
                        r = append_printable(&payload, req->args[i].data,
                                             MIN(req->args[i].len, 128));
        }
        if (r >= 0)
                r = buffer_printf(&payload, "\nresult: %s\nduration_usec: %" PRIu64 "\n",
                                  result, duration_usec);
        if (r >= 0)
                r = proto_append_frame(&frame, PROTO_FRAME_EVENT, EVENTS_MONITOR, payload.data,
                                       payload.len);
        if (r >= 0)
                f = shared_frame_new(frame.data, frame.len);
        buffer_done(&payload);
        buffer_done(&frame);
        if (!f)
                return;

        pthread_mutex_lock(&x->lock);
        t = topic_find_locked(x, EVENTS_MONITOR, strlen(EVENTS_MONITOR), h);
        for (size_t i = 0; t && i < t->n_subs; i++)
                /* A monitor too slow for the traffic misses entries, it is not dropped. */
                if (outbox_push_shared(&t->subs[i]->outbox, f) == 0)
                        fanout_note_locked(c, t->subs[i],
                                           (c->id << 24) ^ (c->fanout_seq & 0xffffff));
        pthread_mutex_unlock(&x->lock);
        shared_frame_unref(f);
}

int events_restore(Client *c, const char *list)
{
        EventIndex *x = &c->server->events;
        const char *p = list;
        int r = 0;

        if (!*list)
                return 0;
        if (!c->subs) {
                c->subs = malloc(EVENTS_MAX_TOPICS * sizeof(*c->subs));
                if (!c->subs)
                        return -ENOMEM;
        }
        pthread_mutex_lock(&x->lock);
        while (r >= 0 && *p) {
                const char *end = strchrnul(p, ',');
                ProtoArg a = {.data = p, .len = (size_t)(end - p)};

                uint64_t h = topic_hash(a.data, a.len);
                Topic *t;

                if (!proto_topic_is_valid(a.data, a.len) || c->n_subs >= EVENTS_MAX_TOPICS)
                        r = -EINVAL;
                else if (!(t = topic_find_locked(x, a.data, a.len, h)) ||
                         !client_has_topic_locked(c, t))
                        r = subscribe_locked(x, c, &a, h);
                p = *end ? end + 1 : end;
        }
        pthread_mutex_unlock(&x->lock);
        return r;
}
