/*
 * client.h - one connected client, its reader thread and, once needed, its
 * sender thread.
 *
 * Ownership: a Client is reference counted. Each of its running threads
 * holds one reference, and so does anyone who works on it outside the
 * registry lock; the last client_unref() closes the fd and frees it. The
 * registry (registry.h) lists a Client while at least one of its threads
 * runs (n_threads > 0, under the registry lock), so a Client found in the
 * registry under that lock always has an open fd.
 *
 * Threads: the reader thread alone reads the socket, parses, runs commands,
 * owns `in`, `out`, `req`, `scratch`, `config`, `sender_started` and the
 * other "reader thread only" fields, and starts the sender
 * (client_start_sender) the first time something must wait for the socket
 * or the client subscribes. Whoever writes to the socket does it through
 * the outbox (outbox.h), which hands the write side to one thread at a
 * time. Other threads (the main loop, `clients`, `stats` and publishers
 * from other readers) touch only the immutable identity fields, the
 * atomics, `subs` under the events lock (events.h), `prev`/`next`,
 * `n_threads`, `reader` and `reader_running` under the registry lock, and
 * the outbox.
 *
 * Waking the reader: a reader blocked in read() is woken by
 * CLIENT_WAKE_SIGNAL (client_kick), sent only while the registry lock shows
 * it running. The signal may come just before read() starts; so whoever
 * needs the reader to notice a flag kicks again until it has
 * (registry_drain); nothing else relies on one kick.
 */
#pragma once

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buffer.h"
#include "conf.h"
#include "peers.h"
#include "proto.h"
#include "outbox.h"
#include "time-util.h"

struct Server;

/* How long a dropped client's sender may take to finish its last frames. */
#define CLIENT_DROP_GRACE_USEC (5 * USEC_PER_SEC)

/* How many distinct command names a client's disconnect entry carries. */
#define CLIENT_COMMANDS_LOGGED 16

/* Refused requests (denied, bad, unknown, busy) a connection may log; the
 * rest are counted and summarised in its disconnect entry. */
#define CLIENT_REFUSALS_LOGGED 5

/* Interrupts a reader blocked in read() (see client_kick). */
#define CLIENT_WAKE_SIGNAL (SIGRTMIN + 2)

/* Append an ERR frame to c->out: 1 (the request failed), or -ENOMEM. */
#define reply_err(c, code, ...) (proto_append_err(&(c)->out, (code), __VA_ARGS__) < 0 ? -ENOMEM : 1)

struct Topic;

/* Per-command counters of one client (metrics.c); entries made on first
 * use, at most CLIENT_METRICS_SLOTS (~170 bytes each). */
#define CLIENT_METRICS_SLOTS 8
#define CLIENT_UNTIMED_SLOTS 4
typedef struct ClientMetrics {
        atomic_uint n; /* entries in use; each is complete before n counts it */
        struct MetricsEntry *e[CLIENT_METRICS_SLOTS];
} ClientMetrics;

/* What every request bumps: per client, so that clients share no cache
 * line; `stats` sums them (registry_counters). */
typedef struct ClientCounters {
        uint64_t commands_ok, commands_failed, bytes_in, bytes_out;
} ClientCounters;

typedef enum Transport {
        TRANSPORT_UNIX,
        TRANSPORT_TCP,
} Transport;

const char *transport_to_string(Transport t);

typedef struct Client {
        struct Server *server; /* not owned; outlives every client */
        atomic_uint n_ref;
        int fd; /* owned */

        /* Identity: set before the threads start, immutable after. */
        uint64_t id;
        Transport transport;
        struct ucred cred; /* Unix peers */
        gid_t *groups;     /* Unix peers: supplementary groups (SO_PEERGROUPS) */
        size_t n_groups;
        char peer[64];       /* "pid=P uid=U gid=G" or "ADDR:PORT" */
        uint64_t since_usec; /* CLOCK_REALTIME at accept */

        atomic_int role;                    /* effective: max(identity's role, auth_role) */
        atomic_uint_fast64_t drop_deadline; /* client_drop(): abort after (monotonic) */
        atomic_uint_fast64_t n_commands;
        atomic_bool stop_requested; /* drain: answer what was received, then end */
        atomic_bool stop_seen;      /* the reader noticed stop_requested */
        atomic_bool dropped;        /* client_drop_queue(): stop reading now */
        atomic_bool handed_over;    /* its reader stopped for a restart (handover.c) */
        atomic_uint_fast64_t fanout_mark; /* the last publisher batch that noted it */
        /* Counters (ClientCounters): the reader alone writes these; the
         * outbox counts the bytes out. Anyone may read them. */
        atomic_uint_fast64_t n_ok, n_failed, n_bytes_in;
        /* Its requests per command for `metrics` (metrics.c): the reader
         * alone writes them, so that no request bumps a cache line that
         * other clients bump too; `metrics` adds them up under the registry
         * lock, and they join the server-wide table when it is removed. */
        ClientMetrics metrics;
        PeerKey peer_key;           /* what MaxClientsPerUID=/PerAddress= count */
        bool admin_slot;            /* admitted into the admin reserve */

        Outbox outbox; /* the write side of fd */

        /* Reader thread only. */
        Buffer in;
        Buffer out;
        Buffer scratch;
        ProtoRequest req;
        bool closing;        /* quit or too-long: answer, then stop reading */
        bool sender_started; /* the reader starts the sender on first need */
        Config *config;      /* referenced; refreshed between batches after a reload */
        uint64_t config_generation;
        Role auth_role; /* raised by auth */
        unsigned auth_failures;
        uint64_t line_since_usec; /* a partial request line waits since (monotonic), or 0 */
        uint64_t request_start_usec; /* the end of the last timed request of this batch (monotonic) */
        /* Built-ins that answer at once, run since request_start_usec and
         * not timed one by one (commands_settle_timing()). */
        struct {
                int slot;
                unsigned ok, failed;
        } untimed[CLIENT_UNTIMED_SLOTS];
        unsigned n_untimed_slots, n_untimed;
        uint64_t rcvtimeo_usec;   /* SO_RCVTIMEO as set now */
        size_t stop_budget;       /* after stop_requested: bytes still to read */
        unsigned n_refusals_logged;
        struct Client **fanout; /* subscribers its publishes reached this batch (referenced) */
        size_t n_fanout, fanout_cap;
        uint64_t fanout_seq;
        uint64_t n_refusals_suppressed;
        /* The distinct commands it ran (copies), for the disconnect entry
         * in the journal; read by whichever thread ends last. */
        char *commands_used[CLIENT_COMMANDS_LOGGED];
        unsigned n_commands_used;

        /* Registry, under the server's registry lock. */
        struct Client *prev, *next;
        unsigned n_threads;
        pthread_t reader;    /* valid while reader_running */
        bool reader_running; /* the reader thread has not ended */

        /* Subscriptions, under the events lock (events.h); changed by the reader. */
        struct Topic **subs; /* room for EVENTS_MAX_TOPICS once it subscribes */
        size_t n_subs;
} Client;

/* A new client for an accepted fd (taken over, also on failure). */
int client_new(struct Server *s, int fd, const struct sockaddr *sa, socklen_t salen,
               Transport transport, Client **ret);
Client *client_ref(Client *c);
void client_unref(Client *c);
static inline void client_unrefp(Client **c)
{
        client_unref(*c);
}

/* Thread entry points; each owns one reference. */
/* The threads, each started with a reference of c that it drops at its
 * end: the reader (reader.c, started by registry_add()) and the sender. */
void *client_reader_thread(void *userdata);
void *client_sender_thread(void *userdata);
/* One of c's threads ends: the last logs the connection's end and takes c
 * out of the registry. */
void client_thread_done(Client *c);
/* The reader, without a sender thread: write what waits in the outbox
 * itself, blocking for at most the send timeout per write; -EPIPE if the
 * connection broke (it is aborted). */
int client_send_now(Client *c);

/* The reader's own counters: one writer, so a plain load and store. */
static inline void client_count(atomic_uint_fast64_t *v, uint64_t n)
{
        atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n,
                              memory_order_relaxed);
}

void client_counters(Client *c, ClientCounters *add);

/* Reader thread: queue what c->out holds now, as one batch. */
int client_flush(Client *c);
/*
 * Reader thread: make sure the sender thread runs. It is started only when
 * something has to wait for the socket (an answer it did not take at
 * once) or events may come (subscribe): a client that only ever gets
 * answers its socket takes at once costs one thread, not two. Takes the
 * registry lock: never call it with that lock held.
 */
int client_start_sender(Client *c);
/* Reader thread: use the server's current configuration if it changed. */
void client_refresh_config(Client *c);
/* The role a client's identity gives it under `config` (without auth). */
Role client_identity_role(const Client *c, const Config *config);
/* True if the Unix peer's primary or supplementary groups include one of gids. */
bool client_in_groups(const Client *c, const gid_t *gids, size_t n);

/*
 * Drain: ask the reader to answer what is already received, then end.
 * Under the registry lock; kicks the reader (see above).
 */
void client_stop_reading_locked(Client *c);
/* Interrupt the reader's read() if it runs. client_kick takes the registry lock. */
void client_kick(Client *c);
void client_kick_locked(Client *c);
/* Break the connection now (drain timeout). */
void client_abort(Client *c);
/*
 * Close the connection cleanly but soon (a slow consumer): drop what is
 * queued, send a final `ERR code message` after the frame in flight, and
 * mark the client dropped. Memory work only, safe under the events lock;
 * 0 if it dropped the client now, -EPIPE if it was closed already. Then
 * client_kick() it (outside the lock) so that the reader stops. If the
 * sender cannot finish within CLIENT_DROP_GRACE_USEC, the main loop's tick
 * aborts the connection.
 */
int client_drop_queue(Client *c, const char *code, const char *message);
/*
 * Log a refused request (denied, bad, unknown, busy): the first
 * CLIENT_REFUSALS_LOGGED of a connection, within a server-wide rate limit;
 * the rest are counted for the disconnect entry. Reader thread only.
 */
void client_log_refusal(Client *c, const char *command, const char *result, const char *fmt,
                        ...) _printf_(4, 5);
