/*
 * outbox.c - a client's bounded output queue and the only code that writes
 * to its socket; see outbox.h for the rules.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>

#include "macro.h"
#include "outbox.h"
#include "time-util.h"

/* iovecs per writev() of the sender (kept small: the stack is small). */
#define SEND_IOV 64

int outbox_init(Outbox *q, int fd, size_t limit)
{
        int r;

        *q = (Outbox){.fd = fd, .limit = limit};
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

int outbox_push_shared(Outbox *q, SharedFrame *f)
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

void outbox_deliver_wake(Outbox *q)
{
        bool wake;

        pthread_mutex_lock(&q->lock);
        wake = q->head && q->sender_waiting && !q->writing;
        pthread_mutex_unlock(&q->lock);
        if (wake)
                pthread_cond_signal(&q->can_send);
}

/* iovecs per write in outbox_deliver (on the publisher's stack). */
#define DELIVER_IOV 64

/*
 * Write whole chunks of `list` while the socket takes them, without
 * blocking. Frees what went out and returns the rest (a chunk cut in two is
 * replaced by a copy of its rest); the bytes written go to *total, a hard
 * error to *err.
 */
static Chunk *send_some(int fd, Chunk *list, size_t *total, int *err)
{
        struct iovec iov[DELIVER_IOV];
        Chunk *c = list, *rest = NULL;
        int n;

        while (c && !*err) {
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
                                *err = errno;
                        c = first;
                        break;
                }
                *total += (size_t)k;
                if ((size_t)k == want)
                        continue;
                /* Skip what went out. */
                for (c = first; (size_t)k >= c->len; c = c->next)
                        k -= c->len;
                if (k > 0) {
                        Chunk *part = malloc(sizeof(*part));
                        char *d = part ? malloc(c->len - (size_t)k) : NULL;

                        if (!d) {
                                free(part);
                                *err = ENOMEM;
                                break;
                        }
                        memcpy(d, c->data + k, c->len - (size_t)k);
                        *part = (Chunk){.data = d, .len = c->len - (size_t)k, .next = c->next};
                        c->next = NULL; /* the loop below frees the cut chunk too */
                        rest = part;
                        goto done;
                }
                break;
        }
        rest = c;
done:
        /* Free what was written: everything before `rest` (a cut chunk's head too). */
        for (Chunk *i = list; i && i != rest;) {
                Chunk *next = i->next;
                i->next = NULL;
                chunk_free_list(i);
                i = next;
        }
        return rest;
}

ssize_t outbox_deliver(Outbox *q)
{
        Chunk *list, *rest;
        size_t total = 0;
        bool wake;
        int err = 0;

        pthread_mutex_lock(&q->lock);
        if (q->writing || q->dead || !q->head) {
                /* Someone writes, or nothing to: the writer takes it along.
                 * A sleeping sender with something queued is woken. */
                wake = q->head && q->sender_waiting && !q->writing && !q->dead;
                pthread_mutex_unlock(&q->lock);
                if (wake)
                        pthread_cond_signal(&q->can_send);
                return 0;
        }
        list = q->head;
        q->head = q->tail = NULL;
        q->writing = true;
        pthread_mutex_unlock(&q->lock);

        rest = send_some(q->fd, list, &total, &err);

        atomic_fetch_add_explicit(&q->bytes_out, total, memory_order_relaxed);
        pthread_mutex_lock(&q->lock);
        q->writing = false;
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

void outbox_done(Outbox *q)
{
        chunk_free_list(q->head);
        q->head = q->tail = NULL;
        pthread_cond_destroy(&q->can_queue);
        pthread_cond_destroy(&q->can_send);
        pthread_mutex_destroy(&q->lock);
}

/* A chunk owning `data`; NULL (data freed) without memory. */
static Chunk *chunk_new(char *data, size_t len)
{
        Chunk *c = malloc(sizeof(*c));

        if (!c) {
                free(data);
                return NULL;
        }
        *c = (Chunk){.data = data, .len = len};
        return c;
}

int outbox_push(Outbox *q, char *data, size_t len)
{
        Chunk *c = chunk_new(data, len);
        bool wake;

        if (!c)
                return -ENOMEM;

        pthread_mutex_lock(&q->lock);
        if (q->dead || q->closed) {
                pthread_mutex_unlock(&q->lock);
                chunk_free_list(c);
                return -EPIPE;
        }
        if (q->tail)
                q->tail->next = c;
        else
                q->head = c;
        q->tail = c;
        q->bytes += len;
        wake = q->sender_waiting && !q->writing;
        pthread_mutex_unlock(&q->lock);
        /* Signalled after unlocking, so that the woken sender does not
         * run only to block on the lock we still hold. */
        if (wake)
                pthread_cond_signal(&q->can_send);
        return 0;
}

ssize_t outbox_write_or_push(Outbox *q, char *data, size_t len)
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
        if (q->head || q->writing || q->closed) {
                pthread_mutex_unlock(&q->lock);
                return outbox_push(q, data, len);
        }
        q->writing = true;
        pthread_mutex_unlock(&q->lock);

        n = send(q->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        err = n < 0 ? errno : 0;
        if (n > 0)
                atomic_fetch_add_explicit(&q->bytes_out, (uint64_t)n, memory_order_relaxed);

        pthread_mutex_lock(&q->lock);
        q->writing = false;
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
        memmove(data, data + n, len - (size_t)n);
        c = chunk_new(data, len - (size_t)n);
        if (!c) {
                pthread_mutex_unlock(&q->lock);
                return -ENOMEM;
        }
        c->next = q->head;
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

void outbox_set_limit(Outbox *q, size_t limit)
{
        pthread_mutex_lock(&q->lock);
        q->limit = limit;
        pthread_cond_broadcast(&q->can_queue);
        pthread_mutex_unlock(&q->lock);
}

int outbox_wait_space(Outbox *q, uint64_t deadline)
{
        struct timespec ts = usec_to_timespec(deadline);
        int r = 0;

        pthread_mutex_lock(&q->lock);
        while (q->bytes > q->limit && !q->dead && r == 0)
                r = deadline == USEC_INFINITY ? pthread_cond_wait(&q->can_queue, &q->lock)
                                           : pthread_cond_timedwait(&q->can_queue, &q->lock, &ts);
        r = q->dead ? -EPIPE : (q->bytes > q->limit ? -ETIMEDOUT : 0);
        pthread_mutex_unlock(&q->lock);
        return r;
}

/* Take the socket's write side and everything queued, waiting for it; NULL
 * when the sender is done: closed and drained, or dead. */
static Chunk *take_all(Outbox *q)
{
        Chunk *c;

        pthread_mutex_lock(&q->lock);
        while (!q->dead && (q->writing || (!q->head && !q->closed))) {
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
        q->writing = true;
        pthread_mutex_unlock(&q->lock);
        return c;
}

/* The same without waiting: NULL if nothing is queued or someone writes. */
static Chunk *take_all_now(Outbox *q)
{
        Chunk *c = NULL;

        pthread_mutex_lock(&q->lock);
        if (!q->dead && !q->writing && q->head) {
                c = q->head;
                q->head = q->tail = NULL;
                q->writing = true;
        }
        pthread_mutex_unlock(&q->lock);
        return c;
}

bool outbox_is_drained(Outbox *q)
{
        bool d;

        pthread_mutex_lock(&q->lock);
        d = q->dead || (q->closed && !q->head && !q->writing);
        pthread_mutex_unlock(&q->lock);
        return d;
}

/* Give the socket's write side back. */
static void release(Outbox *q)
{
        pthread_mutex_lock(&q->lock);
        q->writing = false;
        if (q->closed && !q->head)
                pthread_cond_broadcast(&q->can_queue); /* outbox_wait_drained() */
        pthread_mutex_unlock(&q->lock);
}

/* n bytes of what was taken went out. */
static void sent(Outbox *q, size_t n)
{
        pthread_mutex_lock(&q->lock);
        q->bytes -= n <= q->bytes ? n : q->bytes;
        if (q->bytes <= q->limit)
                pthread_cond_signal(&q->can_queue);
        pthread_mutex_unlock(&q->lock);
}

/* Write n iovecs completely; returns the bytes written or -errno (-EAGAIN:
 * the send timeout passed without the socket taking a byte). */
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

/* Write what was taken, then give the write side back; 0 or -errno. */
static int write_taken(Outbox *q, Chunk *list)
{
        struct iovec iov[SEND_IOV];
        int r = 0;

        for (Chunk *ch = list; ch && r == 0;) {
                ssize_t k;
                int n = 0;

                for (; ch && n < SEND_IOV; ch = ch->next)
                        iov[n++] = (struct iovec){ch->data, ch->len};
                k = write_all(q->fd, iov, n);
                if (k < 0)
                        r = (int)k;
                else {
                        atomic_fetch_add_explicit(&q->bytes_out, (uint64_t)k,
                                                  memory_order_relaxed);
                        sent(q, (size_t)k);
                }
        }
        chunk_free_list(list);
        release(q);
        return r;
}

int outbox_send_all(Outbox *q)
{
        Chunk *list;
        int r = 0;

        while (r == 0 && (list = take_all(q)))
                r = write_taken(q, list);
        return r;
}

int outbox_send_now(Outbox *q)
{
        Chunk *list;
        int r = 0;

        while (r == 0 && outbox_bytes(q) > 0 && (list = take_all_now(q)))
                r = write_taken(q, list);
        return r;
}

void outbox_set_send_timeout(Outbox *q, unsigned sec)
{
        struct timeval tv = {.tv_sec = sec};

        if (atomic_load_explicit(&q->send_timeout_sec, memory_order_relaxed) == sec)
                return;
        (void)setsockopt(q->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        atomic_store_explicit(&q->send_timeout_sec, sec, memory_order_relaxed);
}

unsigned outbox_send_timeout(Outbox *q)
{
        return atomic_load_explicit(&q->send_timeout_sec, memory_order_relaxed);
}

uint64_t outbox_bytes_out(Outbox *q)
{
        return atomic_load_explicit(&q->bytes_out, memory_order_relaxed);
}

int outbox_drop_and_close(Outbox *q, char *last, size_t len)
{
        Chunk *c = chunk_new(last, len), *dropped;

        if (!c)
                return -ENOMEM;

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

void outbox_close(Outbox *q)
{
        pthread_mutex_lock(&q->lock);
        q->closed = true;
        pthread_cond_signal(&q->can_send);
        pthread_mutex_unlock(&q->lock);
}

bool outbox_close_quietly(Outbox *q)
{
        bool idle;

        pthread_mutex_lock(&q->lock);
        q->closed = true;
        idle = q->dead || (!q->head && !q->writing);
        if (!idle)
                pthread_cond_signal(&q->can_send);
        pthread_mutex_unlock(&q->lock);
        return idle;
}

/* How long outbox_wait_drained() sleeps at most before it looks again. */
#define DRAINED_POLL_USEC (10 * 1000)

int outbox_wait_drained(Outbox *q, uint64_t until)
{
        int r;

        pthread_mutex_lock(&q->lock);
        for (;;) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                struct timespec ts;

                if (q->dead || (!q->head && !q->writing)) {
                        r = 0;
                        break;
                }
                if (now >= until) {
                        r = -ETIMEDOUT;
                        break;
                }
                ts = usec_to_timespec(MIN(until, now + DRAINED_POLL_USEC));
                (void)pthread_cond_timedwait(&q->can_queue, &q->lock, &ts);
        }
        pthread_mutex_unlock(&q->lock);
        return r;
}

void outbox_kill(Outbox *q)
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

bool outbox_is_dead(Outbox *q)
{
        bool d;

        pthread_mutex_lock(&q->lock);
        d = q->dead;
        pthread_mutex_unlock(&q->lock);
        return d;
}

size_t outbox_bytes(Outbox *q)
{
        size_t b;

        pthread_mutex_lock(&q->lock);
        b = q->bytes;
        pthread_mutex_unlock(&q->lock);
        return b;
}
