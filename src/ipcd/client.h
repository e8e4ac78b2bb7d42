/*
 * client.h - one connected client, its reader thread and, once needed, its
 * sender thread.
 *
 * Ownership: a Client is reference counted. Each of its running threads
 * holds one reference, and so does anyone who works on it outside the
 * registry lock; the last client_unref() closes the fd and frees it. The
 * server's registry lists a Client while at least one of its threads runs
 * (n_threads > 0, under the registry lock), so a Client found in the
 * registry under that lock always has an open fd.
 *
 * Threads: the reader thread alone reads the socket, parses, runs commands,
 * owns `in`, `out`, `req`, `scratch`, `config` and `sender_started`, and
 * starts the sender (client_start_sender) the first time something must
 * wait for the socket or the client subscribes. Both write to the socket,
 * but never at once: the queue's `busy` flag, under its lock, gives the
 * socket to one writer at a time (queue.h). Other threads (the main loop,
 * `clients`, `stats` and publishers from other readers) touch only the
 * immutable identity fields, the atomics, `topics` under the registry lock,
 * and the queue.
 */
#pragma once

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buffer.h"
#include "conf.h"
#include "proto.h"
#include "queue.h"

struct Server;

/* How long a dropped client's sender may take to finish its last frames. */
#define CLIENT_DROP_GRACE_USEC (5 * 1000000ULL)

/* How many distinct command names a client's disconnect entry carries. */
#define CLIENT_COMMANDS_LOGGED 16

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

        Queue queue;

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
        /* The distinct commands it ran (copies), for the disconnect entry
         * in the journal; read by whichever thread ends last. */
        char *commands_used[CLIENT_COMMANDS_LOGGED];
        unsigned n_commands_used;

        /* Registry, under the server's registry lock. */
        struct Client *prev, *next;
        unsigned n_threads;
        char **topics; /* subscriptions; changed by the reader under the lock */
        size_t n_topics;
} Client;

/* A new client for an accepted fd (taken over, also on failure). */
int client_new(struct Server *s, int fd, const struct sockaddr *sa, socklen_t salen, Client **ret);
Client *client_ref(Client *c);
void client_unref(Client *c);

/* Thread entry points; each owns one reference. */
void *client_reader_thread(void *userdata);
void *client_sender_thread(void *userdata);

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

/* Ask the reader to stop once it has read what is already received. */
void client_stop_reading(Client *c);
/* Break the connection now (drain timeout). */
void client_abort(Client *c);
/*
 * Close the connection cleanly but soon (a slow consumer): drop what is
 * queued, send a final `ERR code message` after the frame in flight, stop
 * reading. If the sender cannot finish within CLIENT_DROP_GRACE_USEC, the
 * main loop's tick aborts the connection. Safe under the registry lock.
 */
void client_drop(Client *c, const char *code, const char *message);
