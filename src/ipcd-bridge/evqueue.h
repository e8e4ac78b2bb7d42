/*
 * evqueue.h - a bounded FIFO of events handed from one thread to the other:
 * ipcd's EVENTs on their way to the broker (main thread -> MQTT thread) and
 * the broker's messages on their way to ipcd (MQTT thread -> main thread).
 *
 * Bounded in count and bytes: a push past either bound drops the oldest
 * events (the newest state is what a fleet wants) and counts them. An
 * EventQueue owns the Events in it; pop hands one to the caller, who frees
 * it with event_free() or gives it back with evqueue_push_front().
 *
 * Locking: `lock` guards every field but the counters (atomics, read for
 * STATUS from the other thread) and `efd`, an eventfd written on each push
 * so that the consumer's poll() wakes up.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Event {
        struct Event *next;
        char *topic; /* MQTT topic (out) or local topic (in), NUL-terminated */
        char *payload;
        size_t len;
        int qos;
        bool retain;
} Event;

/* A new Event with copies of topic and payload; NULL on ENOMEM. */
Event *event_new(const char *topic, const void *payload, size_t len, int qos, bool retain);
void event_free(Event *e);

typedef struct EventQueue {
        pthread_mutex_t lock;
        Event *head, *tail;
        size_t n, bytes;
        size_t max_n, max_bytes;
        atomic_size_t n_now;        /* == n, for readers without the lock */
        atomic_uint_fast64_t dropped; /* events dropped at the bound */
        int efd;
} EventQueue;

int evqueue_init(EventQueue *q, size_t max_n, size_t max_bytes);
void evqueue_done(EventQueue *q);
/* Append (takes ownership). Returns how many old events were dropped for it. */
size_t evqueue_push(EventQueue *q, Event *e);
/* Put a popped event back at the head (not counted as a new push). */
void evqueue_push_front(EventQueue *q, Event *e);
Event *evqueue_pop(EventQueue *q);
/* Wake the consumer without pushing (e.g. to make it look at a stop flag). */
void evqueue_wakeup(EventQueue *q);
/* Read and reset the eventfd (the consumer, before draining). */
void evqueue_clear_wakeup(EventQueue *q);
