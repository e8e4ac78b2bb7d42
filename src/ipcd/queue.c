/*
 * queue.c - a client's bounded output queue; see queue.h for the rules.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "macro.h"
#include "queue.h"
#include "time-util.h"

int queue_init(Queue *q, size_t limit)
{
        int r;

        *q = (Queue){.limit = limit};
        r = pthread_mutex_init(&q->lock, NULL);
        if (r)
                return -r;
        r = pthread_cond_init(&q->can_send, NULL);
        if (r) {
                pthread_mutex_destroy(&q->lock);
                return -r;
        }
        {
                pthread_condattr_t ca;

                /* Timed waits count on CLOCK_MONOTONIC, like the rest of ipcd. */
                pthread_condattr_init(&ca);
                pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
                r = pthread_cond_init(&q->can_queue, &ca);
                pthread_condattr_destroy(&ca);
        }
        if (r) {
                pthread_cond_destroy(&q->can_send);
                pthread_mutex_destroy(&q->lock);
                return -r;
        }
        return 0;
}

SharedFrame *shared_frame_new(const void *data, size_t len)
{
        SharedFrame *f = malloc(sizeof(*f) + len);

        if (!f)
                return NULL;
        atomic_init(&f->n_ref, 1);
        f->len = len;
        memcpy(f->data, data, len);
        return f;
}

SharedFrame *shared_frame_ref(SharedFrame *f)
{
        atomic_fetch_add_explicit(&f->n_ref, 1, memory_order_relaxed);
        return f;
}

void shared_frame_unref(SharedFrame *f)
{
        if (f && atomic_fetch_sub_explicit(&f->n_ref, 1, memory_order_acq_rel) == 1)
                free(f);
}

void chunk_free_list(Chunk *c)
{
        while (c) {
                Chunk *next = c->next;
                if (c->shared)
                        shared_frame_unref(c->shared);
                else
                        free(c->data);
                free(c);
                c = next;
        }
}

/* Events up to this size are copied into a run of them (one buffer, one
 * iovec); larger ones are queued by reference. */
#define EVENT_COPY_MAX 512
#define EVENT_RUN_SIZE 16384

int queue_push_shared(Queue *q, SharedFrame *f)
{
        Chunk *c = NULL;

        pthread_mutex_lock(&q->lock);
        if (q->dead || q->closed || q->bytes + f->len > q->limit) {
                int r = q->dead || q->closed ? -EPIPE : -ENOBUFS;

                pthread_mutex_unlock(&q->lock);
                return r;
        }
        if (f->len <= EVENT_COPY_MAX && q->tail && q->tail->cap >= q->tail->len + f->len) {
                /* Appended to the run at the tail: no allocation at all. */
                memcpy(q->tail->data + q->tail->len, f->data, f->len);
                q->tail->len += f->len;
                q->bytes += f->len;
                pthread_mutex_unlock(&q->lock);
                return 0;
        }
        pthread_mutex_unlock(&q->lock);

        c = malloc(sizeof(*c));
        if (!c)
                return -ENOMEM;
        if (f->len <= EVENT_COPY_MAX) {
                char *run = malloc(EVENT_RUN_SIZE);

                if (!run) {
                        free(c);
                        return -ENOMEM;
                }
                memcpy(run, f->data, f->len);
                *c = (Chunk){.data = run, .len = f->len, .cap = EVENT_RUN_SIZE};
        } else
                *c = (Chunk){.data = f->data, .len = f->len, .shared = shared_frame_ref(f)};

        pthread_mutex_lock(&q->lock);
        if (q->dead || q->closed || q->bytes + f->len > q->limit) {
                int r = q->dead || q->closed ? -EPIPE : -ENOBUFS;

                pthread_mutex_unlock(&q->lock);
                chunk_free_list(c);
                return r;
        }
        if (q->tail)
                q->tail->next = c;
        else
                q->head = c;
        q->tail = c;
        q->bytes += f->len;
        pthread_mutex_unlock(&q->lock);
        return 0;
}

void queue_deliver_wake(Queue *q)
{
        bool wake;

        pthread_mutex_lock(&q->lock);
        wake = q->head && q->sender_waiting && !q->busy;
        pthread_mutex_unlock(&q->lock);
        if (wake)
                pthread_cond_signal(&q->can_send);
}

/* iovecs per write in queue_deliver (on the publisher's stack). */
#define DELIVER_IOV 64

ssize_t queue_deliver(Queue *q, int fd)
{
        struct iovec iov[DELIVER_IOV];
        Chunk *list, *c, *rest;
        size_t total = 0;
        bool wake;
        int err = 0, n = 0;

        pthread_mutex_lock(&q->lock);
        if (q->busy || q->dead || !q->head) {
                /* Someone writes, or nothing to: the writer takes it along.
                 * A sleeping sender with something queued is woken. */
                wake = q->head && q->sender_waiting && !q->busy && !q->dead;
                pthread_mutex_unlock(&q->lock);
                if (wake)
                        pthread_cond_signal(&q->can_send);
                return 0;
        }
        list = q->head;
        q->head = q->tail = NULL;
        q->busy = true;
        pthread_mutex_unlock(&q->lock);

        /* Whole chunks while the socket takes them, without blocking. */
        c = list;
        while (c && !err) {
                Chunk *first = c;
                size_t want = 0;
                ssize_t k;

                for (n = 0; c && n < DELIVER_IOV; c = c->next, n++) {
                        iov[n] = (struct iovec){c->data, c->len};
                        want += c->len;
                }
                k = sendmsg(fd, &(struct msghdr){.msg_iov = iov, .msg_iovlen = n},
                            MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                                err = errno;
                        c = first;
                        break;
                }
                total += (size_t)k;
                if ((size_t)k < want) {
                        /* Skip what went out; the chunk cut in two is
                         * replaced by a copy of its rest. */
                        c = first;
                        while ((size_t)k >= c->len) {
                                k -= c->len;
                                c = c->next;
                        }
                        if (k > 0) {
                                Chunk *part = malloc(sizeof(*part));
                                char *d = part ? malloc(c->len - (size_t)k) : NULL;

                                if (!d) {
                                        free(part);
                                        err = ENOMEM;
                                        break;
                                }
                                memcpy(d, c->data + k, c->len - (size_t)k);
                                *part = (Chunk){.data = d, .len = c->len - (size_t)k,
                                                .next = c->next};
                                c->next = NULL;
                                /* c is freed with what was written */
                                rest = part;
                                goto partial;
                        }
                        break;
                }
        }
        rest = c;
partial:
        /* Free what was written: everything before `rest` (a cut chunk's head too). */
        for (Chunk *i = list; i && i != rest;) {
                Chunk *next = i->next;
                i->next = NULL;
                chunk_free_list(i);
                i = next;
        }

        pthread_mutex_lock(&q->lock);
        q->busy = false;
        q->bytes -= MIN(total, q->bytes);
        if (q->bytes <= q->limit)
                pthread_cond_broadcast(&q->can_queue);
        if (rest && !q->dead) {
                Chunk *last = rest;

                while (last->next)
                        last = last->next;
                last->next = q->head; /* before what was queued meanwhile */
                if (!q->head)
                        q->tail = last;
                q->head = rest;
                rest = NULL;
        }
        wake = q->head && q->sender_waiting;
        pthread_mutex_unlock(&q->lock);
        chunk_free_list(rest); /* dead meanwhile: dropped */
        if (wake)
                pthread_cond_signal(&q->can_send);
        return err ? -err : (ssize_t)total;
}

void queue_done(Queue *q)
{
        chunk_free_list(q->head);
        q->head = q->tail = NULL;
        pthread_cond_destroy(&q->can_queue);
        pthread_cond_destroy(&q->can_send);
        pthread_mutex_destroy(&q->lock);
}

static int queue_push_internal(Queue *q, char *data, size_t len, bool bounded)
{
        Chunk *c = malloc(sizeof(*c));
        bool wake;

        if (!c) {
                free(data);
                return -ENOMEM;
        }
        *c = (Chunk){.data = data, .len = len};

        pthread_mutex_lock(&q->lock);
        if (q->dead || q->closed) {
                pthread_mutex_unlock(&q->lock);
                chunk_free_list(c);
                return -EPIPE;
        }
        if (bounded && q->bytes + len > q->limit) {
                pthread_mutex_unlock(&q->lock);
                chunk_free_list(c);
                return -ENOBUFS;
        }
        if (q->tail)
                q->tail->next = c;
        else
                q->head = c;
        q->tail = c;
        q->bytes += len;
        wake = q->sender_waiting && !q->busy;
        pthread_mutex_unlock(&q->lock);
        /* Signalled after unlocking, so that the woken sender does not
         * run only to block on the lock we still hold. */
        if (wake)
                pthread_cond_signal(&q->can_send);
        return 0;
}

ssize_t queue_write_or_push(Queue *q, int fd, char *data, size_t len)
{
        Chunk *c;
        ssize_t n;
        bool wake;
        int err;

        pthread_mutex_lock(&q->lock);
        if (q->dead) {
                pthread_mutex_unlock(&q->lock);
                free(data);
                return -EPIPE;
        }
        if (q->head || q->busy || q->closed) {
                pthread_mutex_unlock(&q->lock);
                return queue_push_internal(q, data, len, false);
        }
        q->busy = true;
        pthread_mutex_unlock(&q->lock);

        n = send(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        err = n < 0 ? errno : 0;

        pthread_mutex_lock(&q->lock);
        q->busy = false;
        if (n == (ssize_t)len || q->dead) {
                bool dead = q->dead;

                wake = q->head && q->sender_waiting; /* events queued meanwhile */
                pthread_mutex_unlock(&q->lock);
                free(data);
                if (wake)
                        pthread_cond_signal(&q->can_send);
                return dead && n != (ssize_t)len ? -EPIPE : n;
        }
        if (n < 0 && err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
                pthread_mutex_unlock(&q->lock);
                free(data);
                return -err;
        }
        if (n < 0)
                n = 0;

        /* The rest of a frame the socket took in part goes first, before
         * anything queued meanwhile (even after a close): never a torn frame. */
        c = malloc(sizeof(*c));
        if (!c) {
                pthread_mutex_unlock(&q->lock);
                free(data);
                return -ENOMEM;
        }
        memmove(data, data + n, len - (size_t)n);
        *c = (Chunk){.data = data, .len = len - (size_t)n, .next = q->head};
        q->head = c;
        if (!q->tail)
                q->tail = c;
        q->bytes += c->len;
        wake = q->sender_waiting;
        pthread_mutex_unlock(&q->lock);
        if (wake)
                pthread_cond_signal(&q->can_send);
        return n;
}

int queue_push_bounded(Queue *q, char *data, size_t len)
{
        return queue_push_internal(q, data, len, true);
}

int queue_push(Queue *q, char *data, size_t len)
{
        return queue_push_internal(q, data, len, false);
}

void queue_set_limit(Queue *q, size_t limit)
{
        pthread_mutex_lock(&q->lock);
        q->limit = limit;
        pthread_cond_broadcast(&q->can_queue);
        pthread_mutex_unlock(&q->lock);
}

int queue_wait_space_until(Queue *q, uint64_t deadline)
{
        struct timespec ts = usec_to_timespec(deadline);
        int r = 0;

        pthread_mutex_lock(&q->lock);
        while (q->bytes > q->limit && !q->dead && r == 0)
                r = pthread_cond_timedwait(&q->can_queue, &q->lock, &ts);
        r = q->dead ? -EPIPE : (q->bytes > q->limit ? -ETIMEDOUT : 0);
        pthread_mutex_unlock(&q->lock);
        return r;
}

int queue_wait_space(Queue *q)
{
        int r = 0;

        pthread_mutex_lock(&q->lock);
        while (q->bytes > q->limit && !q->dead)
                pthread_cond_wait(&q->can_queue, &q->lock);
        if (q->dead)
                r = -EPIPE;
        pthread_mutex_unlock(&q->lock);
        return r;
}

Chunk *queue_take_all(Queue *q)
{
        Chunk *c;

        pthread_mutex_lock(&q->lock);
        while (!q->dead && (q->busy || (!q->head && !q->closed))) {
                q->sender_waiting = true;
                pthread_cond_wait(&q->can_send, &q->lock);
                q->sender_waiting = false;
        }
        if (q->dead || !q->head) {
                pthread_mutex_unlock(&q->lock);
                return NULL;
        }
        c = q->head;
        q->head = q->tail = NULL;
        q->busy = true;
        pthread_mutex_unlock(&q->lock);
        return c;
}

Chunk *queue_take_all_now(Queue *q)
{
        Chunk *c = NULL;

        pthread_mutex_lock(&q->lock);
        if (!q->dead && !q->busy && q->head) {
                c = q->head;
                q->head = q->tail = NULL;
                q->busy = true;
        }
        pthread_mutex_unlock(&q->lock);
        return c;
}

bool queue_is_drained(Queue *q)
{
        bool d;

        pthread_mutex_lock(&q->lock);
        d = q->dead || (q->closed && !q->head && !q->busy);
        pthread_mutex_unlock(&q->lock);
        return d;
}

void queue_sender_done(Queue *q)
{
        pthread_mutex_lock(&q->lock);
        q->busy = false;
        pthread_mutex_unlock(&q->lock);
}

void queue_sent(Queue *q, size_t n)
{
        pthread_mutex_lock(&q->lock);
        q->bytes -= n <= q->bytes ? n : q->bytes;
        if (q->bytes <= q->limit)
                pthread_cond_signal(&q->can_queue);
        pthread_mutex_unlock(&q->lock);
}

int queue_drop_and_close(Queue *q, char *last, size_t len)
{
        Chunk *c = malloc(sizeof(*c)), *dropped;

        if (!c) {
                free(last);
                return -ENOMEM;
        }
        *c = (Chunk){.data = last, .len = len};

        pthread_mutex_lock(&q->lock);
        if (q->dead || q->closed) {
                pthread_mutex_unlock(&q->lock);
                chunk_free_list(c);
                return -EPIPE;
        }
        dropped = q->head;
        for (Chunk *i = dropped; i; i = i->next)
                q->bytes -= i->len;
        q->head = q->tail = c;
        q->bytes += len;
        q->closed = true;
        pthread_cond_signal(&q->can_send);
        pthread_cond_broadcast(&q->can_queue);
        pthread_mutex_unlock(&q->lock);
        chunk_free_list(dropped);
        return 0;
}

void queue_close(Queue *q)
{
        pthread_mutex_lock(&q->lock);
        q->closed = true;
        pthread_cond_signal(&q->can_send);
        pthread_mutex_unlock(&q->lock);
}

void queue_kill(Queue *q)
{
        Chunk *c;

        pthread_mutex_lock(&q->lock);
        q->dead = true;
        c = q->head;
        q->head = q->tail = NULL;
        q->bytes = 0;
        pthread_cond_broadcast(&q->can_send);
        pthread_cond_broadcast(&q->can_queue);
        pthread_mutex_unlock(&q->lock);
        chunk_free_list(c);
}

bool queue_is_dead(Queue *q)
{
        bool d;

        pthread_mutex_lock(&q->lock);
        d = q->dead;
        pthread_mutex_unlock(&q->lock);
        return d;
}

size_t queue_bytes(Queue *q)
{
        size_t b;

        pthread_mutex_lock(&q->lock);
        b = q->bytes;
        pthread_mutex_unlock(&q->lock);
        return b;
}
