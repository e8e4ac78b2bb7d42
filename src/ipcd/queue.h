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
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct Chunk {
        struct Chunk *next;
        char *data; /* owned */
        size_t len;
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
