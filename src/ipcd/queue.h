/*
 * queue.h - a client's bounded output queue: frames waiting for the
 * sender thread.
 *
 * Producers (the client's reader thread, publishers) append whole batches
 * of frames as Chunks; the client's sender thread takes everything queued
 * at once and writes it with writev(). When nothing is queued and nobody
 * is writing, the reader writes its batch itself without blocking
 * (queue_write_or_push): no hand-off, no wake-up, no second context
 * switch on the common path; what the socket does not take at once goes
 * to the head of the queue for the sender. `busy` makes sure only one
 * thread writes to the socket at a time, so frames never interleave.
 * `lock` guards every field;
 * it is a leaf lock: nothing else is taken while it is held (the registry
 * lock may be held around it, never the other way round).
 *
 * `bytes` counts both what is queued and what the sender has taken but not
 * written yet, so the limit bounds the memory a client can pin.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* An event frame built once and shared by every subscriber's queue. */
typedef struct SharedFrame {
        atomic_uint n_ref;
        size_t len;
        char data[];
} SharedFrame;

SharedFrame *shared_frame_new(const void *data, size_t len);
SharedFrame *shared_frame_ref(SharedFrame *f);
void shared_frame_unref(SharedFrame *f);

typedef struct Chunk {
        struct Chunk *next;
        char *data; /* owned, or inside `shared` */
        size_t len;
        size_t cap;          /* owned data with room to append events (fan-out), or 0 */
        SharedFrame *shared; /* referenced, or NULL */
} Chunk;

typedef struct Queue {
        pthread_mutex_t lock;
        pthread_cond_t can_send;  /* sender waits: frames queued, closed or dead */
        pthread_cond_t can_queue; /* reader waits: under the limit, or dead */
        Chunk *head, *tail;
        size_t bytes;
        size_t limit;
        bool closed;         /* no more frames will come; the sender ends when empty */
        bool dead;           /* the connection is broken: everything is dropped */
        bool busy;           /* a thread is writing to the socket (sender or reader) */
        bool sender_waiting; /* the sender sleeps on can_send */
} Queue;

int queue_init(Queue *q, size_t limit);
void queue_done(Queue *q);

/*
 * The reader's flush: write `data` to `fd` at once if nothing is queued
 * and nobody is writing (never blocking), queueing what the socket did not
 * take; otherwise queue it all. Takes ownership of `data`. Returns the
 * bytes written directly (>= 0), -EPIPE if the queue is dead, or -errno
 * of a failed write (the caller aborts the connection).
 */
ssize_t queue_write_or_push(Queue *q, int fd, char *data, size_t len);
/*
 * Queue an event: never blocks, and fails with -ENOBUFS (data freed) when
 * it would take the queue past its limit: the subscriber is too slow.
 */
int queue_push_bounded(Queue *q, char *data, size_t len);
/* Queue a batch whatever the limit (an answer); -EPIPE if dead or closed. */
int queue_push(Queue *q, char *data, size_t len);
/*
 * Fan-out: queue a reference to an event frame without waking the sender
 * (the publisher wakes each subscriber once per batch: queue_deliver).
 * -ENOBUFS past the limit (a slow consumer), -EPIPE if dead or closed.
 * Memory work only: safe under the events lock.
 */
int queue_push_shared(Queue *q, SharedFrame *f);
/*
 * A publisher's batch is queued: write what waits to `fd` now, without
 * blocking, if nobody else is writing; what the socket does not take stays
 * at the head of the queue, and the sender is woken for it (once). Returns
 * the bytes written, or -errno of a failed write (the caller aborts).
 */
ssize_t queue_deliver(Queue *q, int fd);
/* Only wake the sender if it sleeps while something is queued. */
void queue_deliver_wake(Queue *q);
/* Block while over the limit; -EPIPE if the queue is dead. */
int queue_wait_space(Queue *q);
/* The same, giving up with -ETIMEDOUT at `deadline` (CLOCK_MONOTONIC usec). */
int queue_wait_space_until(Queue *q, uint64_t deadline);
void queue_set_limit(Queue *q, size_t limit);
/*
 * Block until something is queued; return the whole list (the caller
 * frees it with chunk_free_list() after writing). NULL means the sender is
 * done: closed and drained, or dead.
 */
Chunk *queue_take_all(Queue *q);
/* The same without waiting: NULL if nothing is queued or someone writes. */
Chunk *queue_take_all_now(Queue *q);
/* Closed, and everything taken and written (or dead). */
bool queue_is_drained(Queue *q);
/* The sender has written n bytes that it took. */
void queue_sent(Queue *q, size_t n);
/* The sender has written (or dropped) everything it took. */
void queue_sender_done(Queue *q);
/* No more frames will be pushed; the sender drains and ends. */
void queue_close(Queue *q);
/*
 * End the queue early: what is queued but not taken by the sender is
 * dropped, `last` (a whole frame, taken over) goes out after what the
 * sender is writing now, and the queue is closed. -EPIPE if already dead
 * or closed (last freed).
 */
int queue_drop_and_close(Queue *q, char *last, size_t len);
/* The connection is broken: drop what is queued, wake both threads. */
void queue_kill(Queue *q);
bool queue_is_dead(Queue *q);
size_t queue_bytes(Queue *q);

void chunk_free_list(Chunk *c);
