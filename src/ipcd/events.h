/*
 * events.h - subscribe, unsubscribe and publish (SPEC §5): a topic index
 * (topic -> subscribers), and the fan-out of events from the publisher's
 * reader thread onto each subscriber's queue.
 *
 * Ownership and locking: the EventIndex belongs to the Server. Its `lock`
 * (the events lock) guards the hash table, every Topic in it, and every
 * client's list of subscriptions (Client.subs, n_subs). It is held for
 * memory work only: lookups, list edits and queue pushes (a Outbox's lock
 * may be taken inside it, never the other way round); requests are parsed,
 * validated and de-duplicated before it is taken, and nothing that logs or
 * calls into a socket runs under it. The registry lock may be held around
 * it (`clients` lists topics), never taken inside it.
 *
 * A Topic lists its subscribers without holding references: a client
 * leaves every topic (events_client_gone()) before its reader thread ends,
 * and so before its last reference can go.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>

#include "client.h"

/* Most topics one client may subscribe to. */
#define EVENTS_MAX_TOPICS 256

/* Topics under this prefix are the daemon's own: only admins may subscribe,
 * nobody may publish. EVENTS_MONITOR carries every command as it runs
 * (`ipcctl monitor`). */
#define EVENTS_RESERVED_PREFIX "ipcd."
#define EVENTS_MONITOR         "ipcd.monitor"

typedef struct Topic Topic;

typedef struct EventIndex {
        pthread_mutex_t lock;
        Topic **buckets; /* hash chains */
        size_t n_buckets;
        size_t n_topics;
        atomic_uint n_monitors; /* subscribers of EVENTS_MONITOR: 0 costs one load */
} EventIndex;

int events_init(EventIndex *x);
void events_done(EventIndex *x);

/* Each appends the final frame to c->out; 0 = OK, 1 = ERR, -ENOMEM. */
int events_subscribe(Client *c, const ProtoRequest *req);
int events_unsubscribe(Client *c, const ProtoRequest *req);
int events_publish(Client *c, const ProtoRequest *req);

/*
 * The publisher's batch is done: each subscriber that got events from it
 * gets them written now (inline, when its socket is free) or its sender
 * woken, once for the whole batch. Reader thread; no lock held.
 */
void events_deliver(Client *c);

/*
 * A command has run on c: tell the subscribers of EVENTS_MONITOR who ran
 * what, with which result and how long it took. One atomic load while
 * nobody watches. Reader thread.
 */
void events_monitor(Client *c, const ProtoRequest *req, const char *result,
                    uint64_t duration_usec);

/* The client's reader is ending: leave every topic. */
void events_client_gone(Client *c);

/* Append the client's topics to b, comma-separated. Takes the events lock. */
int events_append_topics(Client *c, Buffer *b);

/*
 * A client restored after a restart (handover.c) subscribes again to
 * `list`, the topics events_append_topics() wrote ("a,b,c"), before its
 * threads start. -EINVAL for a topic that is not one.
 */
int events_restore(Client *c, const char *list);
