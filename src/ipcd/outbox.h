/*
 * outbox.h - a client's outbox: its bounded output queue, and the write
 * side of its socket. Nothing else writes to a client's socket.
 *
 * Producers (the client's reader thread, publishers on other readers)
 * append whole batches of frames as Chunks. When nothing is queued and
 * nobody is writing, the reader writes its batch itself without blocking
 * (outbox_write_or_push), and so does a publisher for its subscribers
 * (outbox_deliver): no hand-off, no wake-up on the common path. What the
 * socket does not take at once goes to the head of the queue for the
 * client's sender thread, which takes everything queued at once and writes
 * it with writev(), blocking for at most the send timeout (SO_SNDTIMEO,
 * ClientSendTimeoutSec=) per write (outbox_send_all).
 *
 * `writing` is the take/release pair on the socket's write side: one
 * thread at a time holds it, so frames never interleave. `lock` guards
 * every field but the atomics; it is a leaf lock: nothing else is taken
 * while it is held (the registry lock and the events lock may be held
 * around it, never the other way round). `bytes` counts what is queued and
 * what a writer has taken but not written yet, so the limit bounds the
 * memory a client can pin.
 *
 * The Client owns the Outbox and the fd; the outbox only writes to it.
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

typedef struct Outbox {
        int fd; /* the client's socket; not owned */
        pthread_mutex_t lock;
        pthread_cond_t can_send;  /* sender waits: frames queued, closed or dead */
        pthread_cond_t can_queue; /* reader waits: under the limit, or dead */
        Chunk *head, *tail;
        size_t bytes;
        size_t limit;
        bool closed;         /* no more frames will come; the sender ends when empty */
        bool dead;           /* the connection is broken: everything is dropped */
        bool writing;        /* a thread holds the socket's write side */
        bool sender_waiting; /* the sender sleeps on can_send */
        atomic_uint send_timeout_sec;    /* SO_SNDTIMEO as set now */
        atomic_uint_fast64_t bytes_out; /* written to the socket, ever */
} Outbox;

int outbox_init(Outbox *q, int fd, size_t limit);
void outbox_done(Outbox *q);

/*
 * The reader's flush: write `data` at once if nothing is queued and nobody
 * is writing (never blocking), queueing what the socket did not take;
 * otherwise queue it all. Takes ownership of `data`. Returns the bytes
 * written directly (>= 0), -EPIPE if the outbox is dead, or -errno of a
 * failed write (the caller aborts the connection).
 */
ssize_t outbox_write_or_push(Outbox *q, char *data, size_t len);
/* Queue a batch whatever the limit (an answer); -EPIPE if dead or closed. */
int outbox_push(Outbox *q, char *data, size_t len);
/*
 * Fan-out: queue a reference to an event frame without waking the sender
 * (the publisher wakes each subscriber once per batch: outbox_deliver).
 * -ENOBUFS past the limit (a slow consumer), -EPIPE if dead or closed.
 * Memory work only: safe under the events lock.
 */
int outbox_push_shared(Outbox *q, SharedFrame *f);
/*
 * A publisher's batch is queued: write what waits now, without blocking,
 * if nobody else is writing; what the socket does not take stays at the
 * head of the queue, and the sender is woken for it (once). Returns the
 * bytes written, or -errno of a failed write (the caller aborts).
 */
ssize_t outbox_deliver(Outbox *q);
/* Only wake the sender if it sleeps while something is queued. */
void outbox_deliver_wake(Outbox *q);
/* Block while over the limit, until `deadline` (CLOCK_MONOTONIC µs;
 * USEC_INFINITY: no deadline): 0, -ETIMEDOUT, or -EPIPE if dead. */
int outbox_wait_space(Outbox *q, uint64_t deadline);
void outbox_set_limit(Outbox *q, size_t limit);
/*
 * The sender thread's loop: take everything queued (waiting for it),
 * write it, give the write side back, again. 0 once closed and drained
 * (or dead); -errno of a failed write (-EAGAIN: the send timeout passed).
 */
int outbox_send_all(Outbox *q);
/* The same without waiting, for a reader that has no sender thread. */
int outbox_send_now(Outbox *q);
/* The send deadline: SO_SNDTIMEO, set only when it changes. */
void outbox_set_send_timeout(Outbox *q, unsigned sec);
unsigned outbox_send_timeout(Outbox *q);
uint64_t outbox_bytes_out(Outbox *q);
/* Closed, and everything taken and written (or dead). */
bool outbox_is_drained(Outbox *q);
/* No more frames will be pushed; the sender drains and ends. */
void outbox_close(Outbox *q);
/*
 * The same for the handover (no reader runs any more, nothing more can come):
 * true if there is nothing left to write, in which case the sender, asleep,
 * is not woken (the process ends under it: a wake-up and a thread exit fewer
 * per subscriber); false if it was woken to write what is left.
 */
bool outbox_close_quietly(Outbox *q);
/* After outbox_close_quietly() returned false: wait until everything is
 * written (or the outbox is dead): 0, or -ETIMEDOUT at `until`
 * (CLOCK_MONOTONIC µs). */
int outbox_wait_drained(Outbox *q, uint64_t until);
/*
 * End the queue early: what is queued but not taken by a writer is
 * dropped, `last` (a whole frame, taken over) goes out after what is being
 * written now, and the outbox is closed. -EPIPE if already dead or closed
 * (last freed).
 */
int outbox_drop_and_close(Outbox *q, char *last, size_t len);
/* The connection is broken: drop what is queued, wake both threads. */
void outbox_kill(Outbox *q);
bool outbox_is_dead(Outbox *q);
size_t outbox_bytes(Outbox *q);

void chunk_free_list(Chunk *c);
