/*
 * server.h - the daemon: listeners, the select() accept loop, the client
 * registry, statistics and shutdown.
 *
 * The main thread owns the Server. Its locks, and what each guards:
 *
 *   lock (the registry lock): the client list, n_clients, next_id, retired, the
 *     per-peer counts (`peers`), each client's n_threads, reader and
 *     reader_running, `config` (the pointer; read it with server_config())
 *     and `stopping`. Held only for memory work: no socket call, no
 *     logging, no allocation that can be avoided. The events lock and a
 *     Queue's lock may be taken inside it, never the other way round.
 *   events.lock: the topic index (events.h).
 *   reload_lock: one reload at a time; taken before `lock`, never inside it.
 *   auth_lock: the failed-auth bookkeeping per source (commands.c).
 *   refusal_lock: the server-wide limit on refusal log entries.
 *
 * Everything else is set before the first client thread starts and
 * immutable after (listeners, overrides, socket_activated), or atomic
 * (statistics, config_generation, n_running).
 */
#pragma once

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "address.h"
#include "client.h"
#include "conf.h"
#include "events.h"
#include "log.h"
#include "peers.h"

typedef struct Listener {
        int fd; /* owned */
        Transport transport;
        char name[ADDRESS_STRING_MAX]; /* "unix:/run/ipcd/ipcd.sock", "tcp:127.0.0.1:9966" */
        char *unlink_path;             /* standalone Unix socket we created; removed at exit */
} Listener;

typedef struct Stats {
        atomic_uint_fast64_t clients_total;
        atomic_uint_fast64_t clients_refused; /* all of the four below */
        atomic_uint_fast64_t refused_max_clients;
        atomic_uint_fast64_t refused_per_uid;
        atomic_uint_fast64_t refused_per_address;
        atomic_uint_fast64_t refused_threads;
        atomic_uint_fast64_t request_timeouts;
        atomic_uint_fast64_t send_timeouts;
        atomic_uint_fast64_t refusals_not_logged;
        atomic_uint_fast64_t events_published;
        atomic_uint_fast64_t events_delivered;
        atomic_uint_fast64_t events_dropped;
        atomic_uint_fast64_t slow_consumer_disconnects;
} Stats;

/* Failed auth attempts remembered per source address (commands.c). */
#define AUTH_SOURCES 256

typedef struct AuthSource {
        PeerKey key;
        uint64_t since_usec; /* start of its window (monotonic) */
        unsigned failures;   /* in that window */
} AuthSource;

typedef struct Server {
        Config *config;                         /* current; swapped under `lock` (server_reload) */
        atomic_uint_fast64_t config_generation; /* bumped after each swap */
        pthread_mutex_t reload_lock;            /* one reload at a time (SIGHUP, `reload`) */
        atomic_uint n_running;                  /* configured commands running now (MaxRunning=) */
        pthread_mutex_t auth_lock;              /* guards auth_sources and auth_log_rl */
        AuthSource auth_sources[AUTH_SOURCES];
        RateLimit auth_log_rl;                  /* journal entries about failures */
        pthread_mutex_t refusal_lock;           /* guards refusal_rl */
        RateLimit refusal_rl;                   /* refusal entries, server-wide */
        EventIndex events;
        ConfigOverrides overrides;              /* the command line, re-applied on reload */
        Listener *listeners;
        size_t n_listeners;
        bool socket_activated;
        int wake_fd;                /* eventfd: signals and threads wake the main loop */
        uint64_t start_usec;        /* CLOCK_MONOTONIC */
        pthread_attr_t thread_attr; /* small stacks, detached */
        Stats stats;

        pthread_mutex_t lock;
        pthread_cond_t drained; /* signalled when a client leaves the registry */
        Client *clients;
        unsigned n_clients;
        PeerTable peers;
        ClientCounters retired; /* the counters of clients that have gone */
        uint64_t next_id;
        bool stopping;
} Server;

/* Takes over the reference to `config`. */
int server_init(Server *s, Config *config, const ConfigOverrides *overrides);

void server_done(Server *s);

/* Listeners: from systemd when LISTEN_FDS is set, else bind `specs`. */
int server_open_listeners(Server *s, char **specs, size_t n_specs);

/* Serve until SIGTERM/SIGINT, then drain; returns 0 or -errno. */
int server_run(Server *s);

/*
 * Re-read the configuration and swap it in; a bad one leaves the running
 * one in place and its problems ("file:line: message" lines) in `errors`.
 * Any thread may call it.
 */
int server_reload(Server *s, Buffer *errors);

/* A client's thread has ended; the last one takes it out of the registry. */
void server_client_thread_done(Server *s, Client *c);

/* The per-request counters of every client, gone ones too. Any thread. */
void server_counters(Server *s, ClientCounters *ret);

/* The current configuration, referenced (config_unref() it). Any thread. */
Config *server_config(Server *s);
