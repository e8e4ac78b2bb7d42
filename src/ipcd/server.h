/*
 * server.h - the daemon: its listeners, the select() accept loop on the main
 * thread, reload, and shutdown. The main thread owns the Server, from
 * server_init() to server_done(); client threads reach it through their
 * Client's `server` pointer (it outlives them).
 *
 * What may be touched from other threads, and how:
 *   registry: the clients and the configuration, under its own lock
 *     (registry.h; the registry lock);
 *   events: the topic index, under its own lock (events.h);
 *   reload_lock: one reload at a time (SIGHUP on the main thread, `reload`
 *     on an admin's reader); taken before the registry lock, never inside;
 *   auth_lock: auth_sources and auth_log_rl (commands.c);
 *   refusal_lock: refusal_rl, the server-wide limit on refusal entries;
 *   stats, n_running and handing_over: atomics;
 *   listeners, overrides, socket_activated, start_usec, thread_attr: set
 *     before the first client thread starts, immutable after (the
 *     listeners' fds are closed by the drain, their names stay).
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
#include "handover.h"
#include "log.h"
#include "peers.h"
#include "registry.h"

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
        Registry registry;                      /* the clients and the configuration */
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
        int wake_fd;                /* eventfd: signals wake the main loop */
        uint64_t start_usec;        /* CLOCK_MONOTONIC */
        pthread_attr_t thread_attr; /* small stacks, detached */
        Stats stats;
        HandoverFds handover;       /* sessions passed back by systemd, until restored */
        atomic_bool handing_over;   /* the drain keeps the sessions for the next process */
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
